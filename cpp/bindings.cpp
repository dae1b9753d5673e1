// routekit._core: the Python face of the C++ core. The only file that includes pybind11.
//
// Plain data crosses the boundary (ints, strings, lists of ints or of the caller's own
// name strings). The GIL is released around whole-graph work, and around a single plan()
// only on large graphs: releasing and retaking it costs ~40 ns on the dev machine, a
// fifth of a whole plan() call on a config-sized graph.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "cxx_runtime.hpp"
#include "graph.hpp"
#include "llama_native.hpp"
#include "relay.hpp"

// simulate: forward declaration; the definition is at the end of this file
void bind_simulate(pybind11::module_& m);

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

// ---- relay and native decode loop ---------------------------------------------------------------
// Bound below the Graph, in bind_relay / bind_native. Every call that can wait releases the
// GIL; a call that can finish at once (try_push with room, pop with pieces queued) takes the
// uncontended path without releasing it: giving the GIL up and taking it back costs more
// than a relay operation, and is what lets busy Python threads delay the consumer.

using routekit::Piece;
using routekit::Relay;

std::string utf8_of(const py::handle& text) {
    if (PyBytes_Check(text.ptr())) return std::string(PyBytes_AS_STRING(text.ptr()),
                                                      PyBytes_GET_SIZE(text.ptr()));
    Py_ssize_t n = 0;
    const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &n);
    if (data == nullptr) throw py::error_already_set();
    return std::string(data, static_cast<std::size_t>(n));
}

// Pieces never end inside a UTF-8 character (the producers see to it); "ignore" drops any
// invalid bytes the model emitted, as llama-cpp-python does when it decodes its output.
PyObject* str_of(const std::string& s) {
    PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "ignore");
    if (o == nullptr) throw py::error_already_set();
    return o;
}

py::list pieces_to_list(const std::vector<Piece>& pieces) {
    py::list out(pieces.size());
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        const Piece& p = pieces[i];
        PyObject* text = str_of(p.text);
        PyObject* t = Py_BuildValue("(Niii)", text, p.tokens, p.finish, p.producer);
        if (t == nullptr) throw py::error_already_set();
        PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), t);
    }
    return out;
}

// (status, text, tokens, finish, producer): the pieces of one pop merged, for a consumer
// that reads one producer (the winner) and wants one chunk per wake-up. finish and producer
// come from the last piece (0 and -1 when none).
py::tuple merged(int status, const std::vector<Piece>& pieces) {
    std::string text;
    long tokens = 0;
    int finish = 0, producer = -1;
    if (pieces.size() == 1) {
        text = pieces[0].text;
    } else {
        for (const Piece& p : pieces) text += p.text;
    }
    for (const Piece& p : pieces) {
        tokens += p.tokens;
        finish = p.finish;
        producer = p.producer;
    }
    PyObject* t = Py_BuildValue("(iNlii)", status, str_of(text), tokens, finish, producer);
    if (t == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::tuple>(t);
}

double seconds_or_none(const py::object& v) { return v.is_none() ? -1.0 : v.cast<double>(); }

routekit::PopStatus pop_any(Relay& r, std::vector<Piece>& out, std::size_t max, double wait_s,
                            std::size_t min_pieces) {
    routekit::PopStatus st = r.try_pop(out, max, min_pieces);
    if (st != routekit::kPopEmpty || wait_s == 0.0) return st;
    py::gil_scoped_release release;
    return r.pop(out, max, wait_s, min_pieces);
}

void bind_relay(py::module_& m) {
    using namespace routekit;
    m.attr("FINISH_NONE") = static_cast<int>(kFinishNone);
    m.attr("FINISH_STOP") = static_cast<int>(kFinishStop);
    m.attr("FINISH_LENGTH") = static_cast<int>(kFinishLength);
    m.attr("FINISH_CANCELLED") = static_cast<int>(kFinishCancelled);
    m.attr("FINISH_ERROR") = static_cast<int>(kFinishError);
    m.attr("FINISH_CONTEXT_FULL") = static_cast<int>(kFinishContextFull);
    m.attr("POP_PIECES") = static_cast<int>(kPopPieces);
    m.attr("POP_END") = static_cast<int>(kPopEnd);
    m.attr("POP_TIMEOUT_FIRST") = static_cast<int>(kPopTimeoutFirst);
    m.attr("POP_TIMEOUT_STALL") = static_cast<int>(kPopTimeoutStall);
    m.attr("POP_TIMEOUT_TOTAL") = static_cast<int>(kPopTimeoutTotal);
    m.attr("POP_CLOSED") = static_cast<int>(kPopClosed);
    m.attr("POP_EMPTY") = static_cast<int>(kPopEmpty);
    m.attr("RELAY_MAX_PRODUCERS") = Relay::kMaxProducers;

    py::class_<Relay, std::shared_ptr<Relay>>(m, "Relay", R"doc(
A bounded multi-producer, single-consumer channel of text pieces (see cpp/relay.hpp).

Relay(capacity=64, race=False, notify=False). Pieces are (text, tokens, finish, producer)
tuples. race=True: the first producer to deliver wins, the others are cancelled.
notify=True: fileno() becomes readable when a consumer that found nothing (poll_async)
has something to take. Thread-safe; waits release the GIL.)doc")
        .def(py::init<std::size_t, bool, bool>(), py::arg("capacity") = 64,
             py::arg("race") = false, py::arg("notify") = false)
        .def("attach", &Relay::attach, "A new producer id.")
        .def(
            "push",
            [](Relay& r, int producer, const py::handle& text, std::int32_t tokens) {
                std::string s = utf8_of(text);
                const int rc = r.try_push(producer, s, tokens);
                if (rc >= 0 && rc == 1) return true;
                if (rc < 0) return false;
                py::gil_scoped_release release;
                return r.push(producer, std::move(s), tokens);
            },
            py::arg("producer"), py::arg("text"), py::arg("tokens") = 1,
            "Queue a piece (str or UTF-8 bytes); blocks while full. False: stop producing.")
        .def(
            "finish",
            [](Relay& r, int producer, std::int32_t reason, const py::handle& text,
               std::int32_t tokens) { return r.finish(producer, reason, utf8_of(text), tokens); },
            py::arg("producer"), py::arg("reason"), py::arg("text") = py::str(""),
            py::arg("tokens") = 0, "End a producer with a FINISH_* reason. Never blocks.")
        .def("cancelled", &Relay::cancelled, py::arg("producer"))
        .def("wait_consumer_back", &Relay::wait_consumer_back, py::arg("producer"),
             py::arg("max_s"), py::call_guard<py::gil_scoped_release>(),
             "Producer side: wait (at most max_s) until the consumer took what it wants and "
             "came back for more; True when it did.")
        .def("cancel", &Relay::cancel, py::arg("producer"))
        .def("close", &Relay::close)
        .def_property_readonly("closed", &Relay::closed)
        .def_property_readonly("winner", &Relay::winner)
        .def_property_readonly("received_any", &Relay::received_any)
        .def("__len__", &Relay::size)
        .def(
            "set_deadlines",
            [](Relay& r, const py::object& first, const py::object& stall,
               const py::object& total) {
                r.set_deadlines(seconds_or_none(first), seconds_or_none(stall),
                                seconds_or_none(total));
            },
            py::arg("first_piece") = py::none(), py::arg("stall") = py::none(),
            py::arg("total") = py::none(),
            "Seconds from now (None: no limit) for the first piece, between pieces, in all.")
        .def(
            "pop",
            [](Relay& r, std::size_t max, double wait_s, std::size_t min_pieces) {
                std::vector<Piece> out;
                const auto st = pop_any(r, out, max, wait_s, min_pieces);
                return py::make_tuple(static_cast<int>(st), pieces_to_list(out));
            },
            py::arg("max") = 64, py::arg("wait") = -1.0, py::arg("min") = 1,
            "(status, pieces): waits (GIL released) for `min` pieces (or a last piece), the "
            "end, a deadline, or `wait` seconds (negative: no bound of its own; 0: never "
            "waits).")
        .def(
            "pop_text",
            [](Relay& r, std::size_t max, double wait_s, std::size_t min_pieces) {
                std::vector<Piece> out;
                const auto st = pop_any(r, out, max, wait_s, min_pieces);
                return merged(static_cast<int>(st), out);
            },
            py::arg("max") = 64, py::arg("wait") = -1.0, py::arg("min") = 1,
            "pop() with the pieces merged: (status, text, tokens, finish, producer).")
        .def(
            "poll_text_async",
            [](Relay& r, std::size_t max, std::size_t min_pieces) {
                std::vector<Piece> out;
                double wait_s = -1.0;
                const auto st = r.poll_async(out, max, wait_s, min_pieces);
                py::tuple t = merged(static_cast<int>(st), out);
                return py::make_tuple(t[0], t[1], t[2], t[3], t[4], wait_s);
            },
            py::arg("max") = 64, py::arg("min") = 1,
            "Never blocks: pop_text(), and when nothing is there (POP_EMPTY) arms fileno(); "
            "the last item is the seconds until the nearest deadline (negative: none).")
        .def("arm_end", &Relay::arm_end,
             "Arm fileno() for the end of every producer; True when they already finished.")
        .def(
            "take_all_text",
            [](Relay& r) {
                std::vector<Piece> out;
                r.take_all(out);
                return merged(static_cast<int>(routekit::kPopPieces), out);
            },
            "Everything queued, whatever the deadlines: (status, text, tokens, finish, "
            "producer). For a consumer that gave up and wants what was produced.")
        .def("fileno", &Relay::fd)
        .def("drain_fd", &Relay::drain_fd, "Empty fileno() after a wake-up.");

    // A benchmark control: a CPU-bound thread in this process that runs no Python and
    // touches no memory (bench_decode's "busy C thread"), to tell CPU contention from the
    // GIL's share of a slowdown.
    struct Spinner {
        std::shared_ptr<std::atomic<bool>> stop = std::make_shared<std::atomic<bool>>(false);
        std::thread thread;
        Spinner() {
            auto flag = stop;
            thread = std::thread([flag] {
                volatile std::uint64_t n = 0;
                while (!flag->load(std::memory_order_relaxed)) n = n + 1;
            });
        }
        ~Spinner() { halt(); }
        void halt() {
            stop->store(true);
            if (thread.joinable()) thread.join();
        }
    };
    py::class_<Spinner>(m, "Spinner",
                        "A C++ thread spinning until stop() (benchmark control: CPU load "
                        "without Python or the GIL).")
        .def(py::init<>())
        .def("stop", &Spinner::halt, py::call_guard<py::gil_scoped_release>());

    m.def(
        "relay_test_producer",
        [](std::shared_ptr<Relay> relay, int producer, std::size_t n, const std::string& text,
           std::int32_t reason) {
            routekit::spawn_test_producer(std::move(relay), producer, n, text, reason);
        },
        py::arg("relay"), py::arg("producer"), py::arg("n"), py::arg("text"),
        py::arg("reason") = static_cast<int>(kFinishStop),
        "Push n pieces of text from a new C++ thread, then finish (tests, benchmarks).");
}

namespace native = routekit::llama;

void* handle_of(std::uintptr_t address) { return reinterpret_cast<void*>(address); }

// An abort callback for llama-cpp-python's own contexts (the llama_cpp kind): llama.cpp's
// CPU backend asks it between graph nodes whether to stop decoding. It stops past the
// armed deadline (steady_clock, which is CLOCK_MONOTONIC: Python's time.monotonic()), so
// a long prompt batch ends at the request's deadline without a timer. The cell is never
// freed: the context (llama-cpp-python's) may outlive the Python object that set it up.
struct DeadlineCell {
    std::atomic<std::int64_t> deadline_ns{INT64_MAX};
};

extern "C" bool routekit_abort_past_deadline(void* data) {
    const auto* cell = static_cast<const DeadlineCell*>(data);
    const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::steady_clock::now().time_since_epoch()).count();
    return now >= cell->deadline_ns.load(std::memory_order_relaxed);
}

class DeadlineAbort {
public:
    void arm(double monotonic_s) {
        cell_->deadline_ns.store(static_cast<std::int64_t>(monotonic_s * 1e9),
                                 std::memory_order_relaxed);
    }
    void disarm() { cell_->deadline_ns.store(INT64_MAX, std::memory_order_relaxed); }
    std::uintptr_t callback() const {
        return reinterpret_cast<std::uintptr_t>(&routekit_abort_past_deadline);
    }
    std::uintptr_t data() const { return reinterpret_cast<std::uintptr_t>(cell_); }

private:
    DeadlineCell* cell_ = new DeadlineCell();  // never freed: see DeadlineCell
};

void bind_native(py::module_& m) {
    py::register_exception<native::AbiError>(m, "AbiError", PyExc_RuntimeError);
    py::class_<DeadlineAbort>(m, "DeadlineAbort",
                              "llama.cpp abort callback stopping a decode past a deadline: "
                              "callback() and data() are the addresses to hand to "
                              "llama_set_abort_callback; arm(time.monotonic() instant), "
                              "disarm().")
        .def(py::init<>())
        .def("arm", &DeadlineAbort::arm, py::arg("monotonic_s"))
        .def("disarm", &DeadlineAbort::disarm)
        .def("callback", &DeadlineAbort::callback)
        .def("data", &DeadlineAbort::data);

    py::list functions, structs;
    for (const auto& s : native::Api::declared_signatures()) functions.append(s.name);
    for (const auto& s : native::Api::declared_layouts()) structs.append(s.name);
    m.attr("LLAMA_NATIVE_FUNCTIONS") = py::tuple(functions);
    m.attr("LLAMA_NATIVE_STRUCTS") = py::tuple(structs);
    py::list bindings, library;
    for (auto v = native::kVerifiedBindings; *v != nullptr; ++v) bindings.append(*v);
    for (auto v = native::kVerifiedLibrary; *v != nullptr; ++v) library.append(*v);
    m.attr("LLAMA_NATIVE_VERIFIED") = py::make_tuple(py::tuple(bindings), py::tuple(library));

    m.def("llama_native_declared", [] {
        py::dict layouts, signatures;
        for (const auto& s : native::Api::declared_layouts()) {
            py::list fields;
            for (const auto& f : s.fields) fields.append(py::make_tuple(f.name, f.offset, f.size));
            layouts[py::str(s.name)] = py::make_tuple(s.size, fields);
        }
        for (const auto& s : native::Api::declared_signatures())
            signatures[py::str(s.name)] = s.signature;
        return py::make_tuple(layouts, signatures);
    }, "(layouts, signatures) as the native loop declares them.");

    py::class_<native::Api, std::shared_ptr<native::Api>>(m, "LlamaApi", R"doc(
The libllama entry points the native decode loop calls, resolved in the copy that
llama-cpp-python loaded, after an ABI check. Immutable; thread-safe.)doc")
        .def_static(
            "open",
            [](const std::string& lib_path, const std::string& bindings_version,
               const std::vector<std::tuple<std::string, std::size_t,
                                            std::vector<std::tuple<std::string, std::size_t,
                                                                   std::size_t>>>>& layouts,
               const std::vector<std::pair<std::string, std::string>>& signatures,
               bool allow_untested) {
                std::vector<native::StructLayout> ls;
                for (const auto& [name, size, fields] : layouts) {
                    native::StructLayout l{name, size, {}};
                    for (const auto& [fname, off, fsize] : fields)
                        l.fields.push_back(native::FieldLayout{fname, off, fsize});
                    ls.push_back(std::move(l));
                }
                std::vector<native::Signature> ss;
                for (const auto& [name, sig] : signatures) ss.push_back({name, sig});
                return native::Api::open(lib_path, bindings_version, ls, ss, allow_untested);
            },
            py::arg("lib_path"), py::arg("bindings_version"), py::arg("layouts"),
            py::arg("signatures"), py::arg("allow_untested") = false,
            "Check and resolve; raises AbiError naming the versions on any mismatch.")
        .def_readonly("library_version", &native::Api::library_version)
        .def_readonly("bindings_version", &native::Api::bindings_version);

    py::class_<native::Job, std::shared_ptr<native::Job>>(m, "LlamaNativeJob", R"doc(
One request on a LlamaNativeContext. Thread-safe.)doc")
        .def("cancel", &native::Job::cancel, "Stop before the next token.")
        .def("wait", &native::Job::wait, py::arg("timeout") = -1.0,
             py::call_guard<py::gil_scoped_release>(),
             "Wait until the worker let go of the context; False on timeout.")
        .def_property_readonly("done", &native::Job::done)
        .def_property_readonly("prompt_tokens", &native::Job::prompt_tokens)
        .def_property_readonly("reused_tokens", &native::Job::reused_tokens)
        .def_property_readonly("completion_tokens", &native::Job::completion_tokens)
        .def_property_readonly("finish", &native::Job::finish)
        .def_property_readonly("seconds_to_first_token", &native::Job::seconds_to_first_token)
        .def_property_readonly("seconds_decoding", &native::Job::seconds_decoding)
        .def_property_readonly("error", &native::Job::error)
        .def_property_readonly("producer", &native::Job::producer);

    py::class_<native::NativeContext, std::shared_ptr<native::NativeContext>>(
        m, "LlamaNativeContext", R"doc(
The native decode loop over one llama context (llama-cpp-python's raw handles, as ints).
Owns one worker thread; jobs run one at a time. close() before freeing the Llama.)doc")
        .def(py::init([](std::shared_ptr<native::Api> api, std::uintptr_t model,
                         std::uintptr_t ctx) {
                 return std::make_shared<native::NativeContext>(std::move(api),
                                                                handle_of(model),
                                                                handle_of(ctx));
             }),
             py::arg("api"), py::arg("model"), py::arg("ctx"))
        .def(
            "submit",
            [](native::NativeContext& self, std::shared_ptr<Relay> relay, int producer,
               const py::bytes& prompt_text, std::vector<std::int32_t> prompt_tokens,
               bool add_special, bool parse_special, std::int32_t max_tokens,
               float temperature, float top_p, std::int32_t top_k, float min_p,
               float typical_p, float repeat_penalty, float frequency_penalty,
               float presence_penalty, std::int32_t penalty_last_n, std::uint32_t seed,
               const std::vector<py::bytes>& stops) {
                native::Request rq;
                rq.prompt_text = prompt_text;
                rq.prompt_tokens = std::move(prompt_tokens);
                rq.add_special = add_special;
                rq.parse_special = parse_special;
                rq.max_tokens = max_tokens;
                rq.sampling = native::Sampling{temperature, top_p, top_k, min_p, typical_p,
                                               repeat_penalty, frequency_penalty,
                                               presence_penalty, penalty_last_n, seed};
                for (const auto& s : stops) rq.stops.push_back(s);
                return self.submit(std::move(rq), std::move(relay), producer);
            },
            py::arg("relay"), py::arg("producer"), py::kw_only(),
            py::arg("prompt_text") = py::bytes(),
            py::arg("prompt_tokens") = std::vector<std::int32_t>(),
            py::arg("add_special") = true, py::arg("parse_special") = true,
            py::arg("max_tokens") = 0, py::arg("temperature") = 0.8f,
            py::arg("top_p") = 0.95f, py::arg("top_k") = 40, py::arg("min_p") = 0.05f,
            py::arg("typical_p") = 1.0f, py::arg("repeat_penalty") = 1.0f,
            py::arg("frequency_penalty") = 0.0f, py::arg("presence_penalty") = 0.0f,
            py::arg("penalty_last_n") = 64, py::arg("seed") = 0xFFFFFFFFu,
            py::arg("stops") = std::vector<py::bytes>(),
            "Queue a generation whose pieces go to relay as producer; returns its job.")
        .def("close", &native::NativeContext::close, py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("n_ctx", &native::NativeContext::n_ctx)
        .def_property_readonly("n_batch", &native::NativeContext::n_batch)
        .def("cached_tokens", &native::NativeContext::cached_tokens)
        .def("invalidate_cache", &native::NativeContext::invalidate_cache)
        .def("adopt_cache", &native::NativeContext::adopt_cache, py::arg("tokens"),
             "Take tokens as the KV cache's content (decoded by someone else).")
        .def(
            "tokenize",
            [](const native::NativeContext& self, const py::bytes& text, bool add_special,
               bool parse_special) {
                return self.tokenize(std::string(text), add_special, parse_special);
            },
            py::arg("text"), py::arg("add_special") = true, py::arg("parse_special") = true);

    py::class_<native::TextAssembler>(m, "TextAssembler", R"doc(
The decode loop's text assembly, alone: TextAssembler(stops: list[bytes]); add(piece) is
True when a stop sequence ends the text; take_safe() gives the bytes that may be sent now
(whole UTF-8 characters, no possible stop prefix); take_rest() the rest at the end.)doc")
        .def(py::init([](const std::vector<py::bytes>& stops) {
                 std::vector<std::string> v;
                 for (const auto& s : stops) v.push_back(s);
                 return native::TextAssembler(std::move(v));
             }),
             py::arg("stops"))
        .def("add", [](native::TextAssembler& a, const py::bytes& piece) {
            return a.add(std::string(piece));
        }, py::arg("piece"))
        .def("take_safe", [](native::TextAssembler& a) { return py::bytes(a.take_safe()); })
        .def("take_rest", [](native::TextAssembler& a) { return py::bytes(a.take_rest()); })
        .def_property_readonly("text", [](const native::TextAssembler& a) {
            return py::bytes(a.text());
        });

    m.def("llama_log_sink_install", &native::install_log_sink, py::arg("lib_path"),
          "Send llama.cpp's log lines to a C++ buffer (no Python on llama.cpp's threads).");
    m.def("llama_logs_pending", &native::logs_pending);
    m.def("llama_log_drain", [] {
        std::size_t dropped = 0;
        auto lines = native::drain_logs(dropped);
        py::list out(lines.size());
        for (std::size_t i = 0; i < lines.size(); ++i) {
            PyObject* t = Py_BuildValue("(iN)", lines[i].first, str_of(lines[i].second));
            if (t == nullptr) throw py::error_already_set();
            PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), t);
        }
        return py::make_tuple(out, dropped);
    }, "([(level, line), ...], dropped): llama.cpp's log lines since the last drain.");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "routekit's C++ core: fallback graphs compiled to integer ids, the token relay and the native llama.cpp decode loop.";
    m.attr("PLAN_RELEASE_GIL_AT") = kPlanReleaseGilAt;
    // Before anything else can load llama.cpp: see cxx_runtime.hpp.
    m.attr("CXX_RUNTIME_SHARED") = routekit::share_cxx_runtime();
    bind_simulate(m);

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

    bind_relay(m);
    bind_native(m);
}

// ======================================================================================
// ---- routekit._core.Simulation, the Monte Carlo core of routekit simulate ------------
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
