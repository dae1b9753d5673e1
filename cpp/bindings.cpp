// routekit._core: the Python face of the C++ core. The only file that includes pybind11.
//
// Plain data crosses the boundary (ints, strings, lists of ints or of the caller's own
// name strings). The GIL is released around whole-graph work, and around a single plan()
// only on large graphs: releasing and retaking it costs ~40 ns on the dev machine, a
// fifth of a whole plan() call on a config-sized graph.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <vector>

#include "graph.hpp"

// ---- simulate (branch see): forward declaration; definition at the end of this file ----
void bind_simulate(pybind11::module_& m);
// ---- end simulate ----

namespace py = pybind11;
using routekit::Graph;
using routekit::NodeId;

namespace {

// Graphs at least this big release the GIL inside plan(); below it the plan is cheaper
// than the release.
constexpr std::size_t kPlanReleaseGilAt = 2048;

py::list to_list(const std::vector<NodeId>& ids) {
    PyObject* list = PyList_New(static_cast<Py_ssize_t>(ids.size()));
    if (list == nullptr) throw py::error_already_set();
    for (std::size_t i = 0; i < ids.size(); ++i) {
        PyObject* item = PyLong_FromLong(ids[i]);
        if (item == nullptr) {
            Py_DECREF(list);
            throw py::error_already_set();
        }
        PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), item);
    }
    return py::reinterpret_steal<py::list>(list);
}

py::list to_lists(const std::vector<std::vector<NodeId>>& rows) {
    py::list out(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) out[i] = to_list(rows[i]);
    return out;
}

py::list plan_id(const Graph& g, NodeId entry, int max_depth, bool respect) {
    // Reused per thread: the list conversion copies it, so one buffer per thread suffices.
    thread_local std::vector<NodeId> out;
    if (g.size() >= kPlanReleaseGilAt) {
        py::gil_scoped_release release;
        g.plan_into(entry, max_depth, respect, out);
    } else {
        g.plan_into(entry, max_depth, respect, out);
    }
    return to_list(out);
}

// The same plan as model names: `names` is the caller's tuple of every model name, in id
// order (routekit._plan keeps one). Indexing it here costs a reference-count increment
// per candidate, where mapping a list of ints to names in Python costs ~15 ns each.
py::list plan_names(const Graph& g, NodeId entry, int max_depth, bool respect,
                    const py::tuple& names) {
    if (static_cast<std::size_t>(PyTuple_GET_SIZE(names.ptr())) != g.size())
        throw py::value_error("names must hold one entry per model");
    thread_local std::vector<NodeId> out;
    if (g.size() >= kPlanReleaseGilAt) {
        py::gil_scoped_release release;
        g.plan_into(entry, max_depth, respect, out);
    } else {
        g.plan_into(entry, max_depth, respect, out);
    }
    PyObject* list = PyList_New(static_cast<Py_ssize_t>(out.size()));
    if (list == nullptr) throw py::error_already_set();
    for (std::size_t i = 0; i < out.size(); ++i) {
        PyObject* name = PyTuple_GET_ITEM(names.ptr(), out[i]);
        Py_INCREF(name);
        PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), name);
    }
    return py::reinterpret_steal<py::list>(list);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "routekit's C++ core: fallback graphs compiled to integer ids.";
    m.attr("PLAN_RELEASE_GIL_AT") = kPlanReleaseGilAt;
    bind_simulate(m);  // ---- simulate (branch see) ----

    py::class_<Graph>(m, "Graph", R"doc(
A fallback graph compiled to integer ids. Immutable except for the availability flags,
which are atomics: every method is safe to call from any thread at any time.

Graph(names, provider_of, num_providers, chains): names[i] is model i, provider_of[i]
its provider id, chains[i] its fallback chain as model ids. Bad sizes, duplicate names
or out-of-range ids raise ValueError.)doc")
        .def(py::init<std::vector<std::string>, std::vector<NodeId>, NodeId,
                      const std::vector<std::vector<NodeId>>&>(),
             py::arg("names"), py::arg("provider_of"), py::arg("num_providers"),
             py::arg("chains"), py::call_guard<py::gil_scoped_release>())
        .def("__len__", &Graph::size)
        .def_property_readonly("num_providers", &Graph::num_providers)
        .def_property_readonly("names", &Graph::names)
        .def("find", &Graph::find, py::arg("name"),
             "Model id for a name, or -1 when unknown.")
        .def("provider_of", &Graph::provider_of, py::arg("model"))
        .def("chain", &Graph::chain, py::arg("model"))
        .def("plan", &plan_id, py::arg("entry"), py::arg("max_depth") = 16,
             py::arg("respect_availability") = true,
             "Candidate model ids for entry id, in order. See routekit._plan.")
        .def("plan_names", &plan_names, py::arg("entry"), py::arg("max_depth"),
             py::arg("respect_availability"), py::arg("names"),
             "plan() mapped through names (a tuple of every model name, in id order).")
        .def(
            "plan_name",
            [](const Graph& g, const std::string& name, int max_depth, bool respect) {
                const NodeId id = g.find(name);
                if (id < 0) throw py::key_error(name);
                return plan_id(g, id, max_depth, respect);
            },
            py::arg("name"), py::arg("max_depth") = 16, py::arg("respect_availability") = true,
            "plan() by model name; KeyError when unknown.")
        .def(
            "plans",
            [](const Graph& g, int max_depth, bool respect) {
                std::vector<std::vector<NodeId>> rows;
                {
                    py::gil_scoped_release release;
                    rows = g.plans(max_depth, respect);
                }
                return to_lists(rows);
            },
            py::arg("max_depth") = 16, py::arg("respect_availability") = false,
            "One plan per model id, in id order.")
        .def(
            "cycles",
            [](const Graph& g, long long limit) {
                if (limit < 0) throw py::value_error("limit must be >= 0");
                std::vector<std::vector<NodeId>> rows;
                {
                    py::gil_scoped_release release;
                    rows = g.cycles(static_cast<std::size_t>(limit));
                }
                return to_lists(rows);
            },
            py::arg("limit") = 1000,
            "Elementary cycles closed on their smallest id, sorted; at most limit.")
        .def("terminals", [](const Graph& g) { return to_list(g.terminals()); })
        .def("longest_path",
             [](const Graph& g) {
                 std::vector<NodeId> path;
                 {
                     py::gil_scoped_release release;
                     path = g.longest_path();
                 }
                 return to_list(path);
             })
        .def("set_model_available", &Graph::set_model_available, py::arg("model"),
             py::arg("available"))
        .def("set_provider_available", &Graph::set_provider_available, py::arg("provider"),
             py::arg("available"))
        .def("model_flag", &Graph::model_flag, py::arg("model"))
        .def("provider_flag", &Graph::provider_flag, py::arg("provider"))
        .def("is_available", &Graph::is_available, py::arg("model"));
}

// ======================================================================================
// ---- simulate (branch see): routekit._core.Simulation, the Monte Carlo core --------
// Plain data in (lists of numbers, one tuple per breaker), plain data out (one tuple per
// entry model). The GIL is released while requests run.
#include "simulate.hpp"

namespace {

using BreakerTuple = std::tuple<bool, bool, int, bool, double, int, double, double, double,
                                double, int>;

routekit::sim::BreakerSpec breaker_from(const BreakerTuple& t) {
    routekit::sim::BreakerSpec b;
    std::tie(b.enabled, b.rate_mode, b.failure_threshold, b.trip_on_refused, b.window,
             b.window_min_calls, b.failure_rate, b.open_initial, b.open_multiplier,
             b.open_max, b.half_open_probes) = t;
    return b;
}

py::list float_list(const std::vector<double>& values) {
    PyObject* list = PyList_New(static_cast<Py_ssize_t>(values.size()));
    if (list == nullptr) throw py::error_already_set();
    for (std::size_t i = 0; i < values.size(); ++i) {
        PyObject* item = PyFloat_FromDouble(values[i]);
        if (item == nullptr) {
            Py_DECREF(list);
            throw py::error_already_set();
        }
        PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), item);
    }
    return py::reinterpret_steal<py::list>(list);
}

}  // namespace

void bind_simulate(py::module_& m) {
    using routekit::sim::Simulation;
    using routekit::sim::Spec;
    py::class_<Simulation>(m, "Simulation", R"doc(
Monte Carlo of provider outages over fallback plans (see routekit._simulate for the model).
timeline=False: independent draws per request, run_requests(n). timeline=True: Poisson
arrivals at rps, up/down periods per unit, breakers when breakers=True; run_until(t) then
finish(). stats(): one tuple per entry model: (requests, answered, answered_at, cost,
refused_hops, hung_hops, skipped_hops, forced, zero_delay, delays, failure_times).
Not thread-safe: one Simulation per thread.)doc")
        .def(py::init([](std::vector<double> unit_availability, std::vector<double> unit_mean_up,
                         std::vector<double> unit_mean_down, std::vector<int> provider_unit,
                         std::vector<int> provider_fail_kind,
                         std::vector<double> provider_hang_limit,
                         const std::vector<BreakerTuple>& provider_breaker,
                         std::vector<int> model_provider, std::vector<double> model_cost,
                         std::vector<std::vector<int>> plans, std::vector<double> entry_weight,
                         double budget, double first_byte_share, double refused_cost,
                         double skip_cost, double hang_share, std::uint64_t seed,
                         bool timeline, bool breakers, double rps) {
                 Spec spec;
                 spec.unit_availability = std::move(unit_availability);
                 spec.unit_mean_up = std::move(unit_mean_up);
                 spec.unit_mean_down = std::move(unit_mean_down);
                 spec.provider_unit = std::move(provider_unit);
                 spec.provider_fail_kind = std::move(provider_fail_kind);
                 spec.provider_hang_limit = std::move(provider_hang_limit);
                 for (const auto& b : provider_breaker)
                     spec.provider_breaker.push_back(breaker_from(b));
                 spec.model_provider = std::move(model_provider);
                 spec.model_cost = std::move(model_cost);
                 spec.plans = std::move(plans);
                 spec.entry_weight = std::move(entry_weight);
                 spec.budget = budget;
                 spec.first_byte_share = first_byte_share;
                 spec.refused_cost = refused_cost;
                 spec.skip_cost = skip_cost;
                 spec.hang_share = hang_share;
                 return new Simulation(std::move(spec), seed, timeline, breakers, rps);
             }),
             py::kw_only(), py::arg("unit_availability"), py::arg("unit_mean_up"),
             py::arg("unit_mean_down"), py::arg("provider_unit"), py::arg("provider_fail_kind"),
             py::arg("provider_hang_limit"), py::arg("provider_breaker"),
             py::arg("model_provider"), py::arg("model_cost"), py::arg("plans"),
             py::arg("entry_weight"), py::arg("budget"), py::arg("first_byte_share"),
             py::arg("refused_cost"), py::arg("skip_cost"), py::arg("hang_share"),
             py::arg("seed"), py::arg("timeline"), py::arg("breakers"), py::arg("rps"))
        .def("run_requests", &Simulation::run_requests, py::arg("n"),
             py::call_guard<py::gil_scoped_release>())
        .def("run_until", &Simulation::run_until, py::arg("t"),
             py::call_guard<py::gil_scoped_release>())
        .def("finish", &Simulation::finish, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("now", &Simulation::now)
        .def_property_readonly("in_flight", &Simulation::in_flight)
        .def("stats", [](const Simulation& s) {
            py::list out;
            for (const auto& st : s.stats()) {
                py::list at;
                for (auto n : st.answered_at) at.append(n);
                out.append(py::make_tuple(st.requests, st.answered, at, st.cost,
                                          st.refused_hops, st.hung_hops, st.skipped_hops,
                                          st.forced, st.zero_delay, float_list(st.delays),
                                          float_list(st.failure_times)));
            }
            return out;
        });
}
// ---- end simulate ----------------------------------------------------------------------
