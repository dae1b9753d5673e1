// routekit simulation core: independent draws and the timeline's discrete-event loop.
//
// Every random draw happens in a fixed order so tests/simulate_reference.py (the Python
// twin) reproduces each run exactly; change the order in both or in neither.
#include "simulate.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace routekit::sim {

namespace {

std::uint64_t splitmix64(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

}  // namespace

Rng::Rng(std::uint64_t seed, std::uint64_t stream) {
    std::uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ULL);
    for (auto& s : s_) s = splitmix64(x);
}

std::uint64_t Rng::next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double Rng::exponential(double mean) { return -mean * std::log(1.0 - uniform()); }

Simulation::Simulation(Spec spec, std::uint64_t seed, bool timeline, bool breakers,
                       double rps)
    : spec_(std::move(spec)),
      timeline_(timeline),
      breakers_(breakers && timeline),
      rps_(rps),
      requests_rng_(seed, 0) {
    const std::size_t units = spec_.unit_availability.size();
    const std::size_t providers = spec_.provider_unit.size();
    const std::size_t models = spec_.model_provider.size();
    if (spec_.unit_mean_up.size() != units || spec_.unit_mean_down.size() != units)
        bad("unit_mean_up and unit_mean_down need one value per unit");
    if (spec_.provider_fail_kind.size() != providers ||
        spec_.provider_hang_limit.size() != providers ||
        spec_.provider_breaker.size() != providers)
        bad("every provider list needs one value per provider");
    for (int u : spec_.provider_unit)
        if (u < 0 || static_cast<std::size_t>(u) >= units) bad("provider_unit out of range");
    if (spec_.model_cost.size() != models) bad("model_cost needs one value per model");
    for (int p : spec_.model_provider)
        if (p < 0 || static_cast<std::size_t>(p) >= providers) bad("model_provider out of range");
    if (spec_.plans.empty()) bad("no entry models");
    if (spec_.entry_weight.size() != spec_.plans.size())
        bad("entry_weight needs one value per plan");
    for (const auto& plan : spec_.plans) {
        if (plan.empty()) bad("an entry model has an empty plan");
        for (int m : plan)
            if (m < 0 || static_cast<std::size_t>(m) >= models) bad("plan model out of range");
    }
    double total = 0.0;
    for (double w : spec_.entry_weight) {
        if (!(w >= 0.0)) bad("entry weights must be >= 0");
        total += w;
        cumulative_.push_back(total);
    }
    if (!(total > 0.0)) bad("entry weights sum to zero");
    if (timeline && !(rps > 0.0)) bad("rps must be > 0");
    stats_.resize(spec_.plans.size());
    for (std::size_t e = 0; e < stats_.size(); ++e)
        stats_[e].answered_at.assign(spec_.plans[e].size(), 0);
    unit_stamp_.assign(units, 0);
    unit_down_.assign(units, 0);
    unit_hung_.assign(units, 0);
    if (timeline_) {
        breaker_.resize(providers);
        units_.resize(units);
        unit_rng_.reserve(units);
        for (std::size_t u = 0; u < units; ++u) {
            unit_rng_.emplace_back(seed, 1 + u);
            Unit& s = units_[u];
            if (spec_.unit_availability[u] >= 1.0) continue;  // never down
            Rng& rng = unit_rng_[u];
            s.up = rng.uniform() < spec_.unit_availability[u];
            if (!s.up) s.hung = rng.uniform() < spec_.hang_share;
            s.next_change = rng.exponential(s.up ? spec_.unit_mean_up[u] : spec_.unit_mean_down[u]);
        }
        next_arrival_ = requests_rng_.exponential(1.0 / rps_);
    }
}

int Simulation::pick_entry(Rng& rng) {
    const double x = rng.uniform() * cumulative_.back();
    const auto it = std::upper_bound(cumulative_.begin(), cumulative_.end(), x);
    const auto i = static_cast<std::size_t>(it - cumulative_.begin());
    return static_cast<int>(std::min(i, cumulative_.size() - 1));
}

double Simulation::hang_wait(int p, double elapsed, bool later) const {
    const double remaining = spec_.budget - elapsed;
    const double cap = later ? spec_.first_byte_share * remaining : remaining;
    return std::min(spec_.provider_hang_limit[p], cap);
}

// ---------------------------------------------------------------- independent draws

void Simulation::run_requests(std::int64_t n) {
    if (timeline_) bad("run_requests() is for independent mode; use run_until()");
    for (std::int64_t i = 0; i < n; ++i) request_independent();
}

void Simulation::request_independent() {
    const int e = pick_entry(requests_rng_);
    EntryStats& st = stats_[e];
    ++st.requests;
    ++generation_;
    const auto& plan = spec_.plans[e];
    double t = 0.0;
    for (std::size_t k = 0; k < plan.size(); ++k) {
        if (t >= spec_.budget) break;
        const int m = plan[k];
        const int p = spec_.model_provider[m];
        const int u = spec_.provider_unit[p];
        if (unit_stamp_[u] != generation_) {
            unit_stamp_[u] = generation_;
            const bool down = !(requests_rng_.uniform() < spec_.unit_availability[u]);
            unit_down_[u] = down;
            unit_hung_[u] = down && requests_rng_.uniform() < spec_.hang_share;
        }
        if (!unit_down_[u]) {
            ++st.answered;
            ++st.answered_at[k];
            st.cost += spec_.model_cost[m];
            if (t == 0.0) {
                ++st.zero_delay;
            } else {
                st.delays.push_back(t);
            }
            return;
        }
        if (unit_hung_[u] && spec_.provider_fail_kind[p] != kInProcess) {
            t += hang_wait(p, t, k + 1 < plan.size());
            ++st.hung_hops;
        } else {
            t += spec_.refused_cost;
            ++st.refused_hops;
        }
    }
    st.failure_times.push_back(t);
}

// ---------------------------------------------------------------- timeline

void Simulation::run_until(double t_end) {
    if (!timeline_) bad("run_until() is for timeline mode; use run_requests()");
    for (;;) {
        const double te = events_.empty() ? std::numeric_limits<double>::infinity()
                                          : events_.top().t;
        if (te <= next_arrival_) {
            if (te >= t_end) break;
            const Event ev = events_.top();
            events_.pop();
            now_ = ev.t;
            resume(ev.slot, ev.t);
        } else {
            if (next_arrival_ >= t_end) break;
            now_ = next_arrival_;
            arrive(now_);
            next_arrival_ += requests_rng_.exponential(1.0 / rps_);
        }
    }
    now_ = std::max(now_, t_end);
}

void Simulation::finish() {
    if (!timeline_) return;
    while (!events_.empty()) {
        const Event ev = events_.top();
        events_.pop();
        now_ = std::max(now_, ev.t);
        resume(ev.slot, ev.t);
    }
}

const Simulation::Unit& Simulation::unit_at(int u, double t) {
    Unit& s = units_[u];
    Rng& rng = unit_rng_[u];
    while (s.next_change <= t) {
        if (s.up) {
            s.up = false;
            s.hung = rng.uniform() < spec_.hang_share;
            s.next_change += rng.exponential(spec_.unit_mean_down[u]);
        } else {
            s.up = true;
            s.next_change += rng.exponential(spec_.unit_mean_up[u]);
        }
    }
    return s;
}

void Simulation::arrive(double t) {
    const int e = pick_entry(requests_rng_);
    ++stats_[e].requests;
    std::size_t slot;
    if (!free_.empty()) {
        slot = free_.back();
        free_.pop_back();
    } else {
        slot = pool_.size();
        pool_.emplace_back();
    }
    ++live_;
    Request& r = pool_[slot];
    r = Request{};
    r.entry = e;
    r.arrival = t;
    if (breakers_) {
        const auto& plan = spec_.plans[e];
        bool any = false;
        for (int m : plan) {
            if (would_admit(spec_.model_provider[m], t)) {
                any = true;
                break;
            }
        }
        if (!any) {
            // Every candidate is open: the one that reopens soonest is tried anyway (the
            // last resort of walk(), decided at arrival as the router decides it).
            std::size_t best = 0;
            double soonest = std::numeric_limits<double>::infinity();
            for (std::size_t k = 0; k < plan.size(); ++k) {
                const double at = reopens_at(spec_.model_provider[plan[k]], t);
                if (at < soonest) {
                    soonest = at;
                    best = k;
                }
            }
            r.k = best;
            r.forced = true;
            ++stats_[e].forced;
        }
    }
    walk(slot, t);
}

void Simulation::walk(std::size_t slot, double t) {
    for (;;) {
        Request& r = pool_[slot];
        const auto& plan = spec_.plans[r.entry];
        EntryStats& st = stats_[r.entry];
        if (r.k >= plan.size() || t - r.arrival >= spec_.budget) {
            if (r.k >= plan.size() && !r.forced && r.skipped != 0 &&
                t - r.arrival < spec_.budget) {
                // Every hop the breakers let through failed: the last resort, as the
                // router's walk, is the skipped hop that reopens soonest.
                r.k = last_resort(plan, r, t);
                r.forced = true;
                ++st.forced;
                continue;
            }
            fail(slot, t);
            return;
        }
        const int m = plan[r.k];
        const int p = spec_.model_provider[m];
        int mode = r.forced ? kForced : kNormal;
        if (breakers_ && !r.forced) {
            const int a = admit(p, t);
            if (a == 0) {
                if (r.k < 64) r.skipped |= std::uint64_t{1} << r.k;
                ++st.skipped_hops;
                t += spec_.skip_cost;
                ++r.k;
                continue;
            }
            if (a == 2) mode = kProbe;
        }
        r.mode = mode;
        const Unit& s = unit_at(spec_.provider_unit[p], t);
        if (s.up) {
            on_success(p, t, mode);
            answer(slot, r.k, t);
            return;
        }
        if (s.hung && spec_.provider_fail_kind[p] != kInProcess) {
            const bool later = !r.forced && (r.k + 1 < plan.size() || r.skipped != 0);
            const double w = hang_wait(p, t - r.arrival, later);
            ++st.hung_hops;
            events_.push(Event{t + w, seq_++, slot});
            return;
        }
        t += spec_.refused_cost;
        ++st.refused_hops;
        on_failure(p, t, spec_.provider_fail_kind[p] == kRefused, mode);
        if (r.forced) {
            fail(slot, t);
            return;
        }
        ++r.k;
    }
}

void Simulation::resume(std::size_t slot, double t) {
    Request& r = pool_[slot];
    const int p = spec_.model_provider[spec_.plans[r.entry][r.k]];
    on_failure(p, t, false, r.mode);
    if (r.forced) {
        fail(slot, t);
        return;
    }
    ++r.k;
    walk(slot, t);
}

void Simulation::answer(std::size_t slot, std::size_t k, double t) {
    Request& r = pool_[slot];
    EntryStats& st = stats_[r.entry];
    ++st.answered;
    ++st.answered_at[k];
    st.cost += spec_.model_cost[spec_.plans[r.entry][k]];
    const double d = t - r.arrival;
    if (d == 0.0) {
        ++st.zero_delay;
    } else {
        st.delays.push_back(d);
    }
    free_.push_back(slot);
    --live_;
}

void Simulation::fail(std::size_t slot, double t) {
    Request& r = pool_[slot];
    stats_[r.entry].failure_times.push_back(t - r.arrival);
    free_.push_back(slot);
    --live_;
}

// ---------------------------------------------------------------- breakers

std::size_t Simulation::last_resort(const std::vector<int>& plan, const Request& r,
                                    double t) const {
    // The skipped hop (one of the first 64) that reopens soonest; half-open ones (their
    // probes were out) count as reopening now. Ties: the earliest in the plan.
    std::size_t best = plan.size();
    double soonest = std::numeric_limits<double>::infinity();
    for (std::size_t j = 0; j < plan.size() && j < 64; ++j) {
        if (!(r.skipped >> j & 1U)) continue;
        const double at = reopens_at(spec_.model_provider[plan[j]], t);
        if (at < soonest) {
            soonest = at;
            best = j;
        }
    }
    return best;
}

bool Simulation::would_admit(int p, double t) const {
    const BreakerSpec& spec = spec_.provider_breaker[p];
    const Breaker& b = breaker_[p];
    if (!spec.enabled || b.state == 0) return true;
    if (b.state == 1) return t >= b.until;
    return b.in_flight < spec.half_open_probes;
}

double Simulation::reopens_at(int p, double t) const {
    const Breaker& b = breaker_[p];
    return b.state == 1 ? b.until : t;
}

int Simulation::admit(int p, double t) {
    const BreakerSpec& spec = spec_.provider_breaker[p];
    Breaker& b = breaker_[p];
    if (!spec.enabled || b.state == 0) return 1;
    if (b.state == 1) {
        if (t < b.until) return 0;
        b.state = 2;
        b.in_flight = 0;
    }
    if (b.in_flight < spec.half_open_probes) {
        ++b.in_flight;
        return 2;
    }
    return 0;
}

void Simulation::prune(Breaker& b, const BreakerSpec& spec, double t) {
    while (!b.window.empty() && b.window.front().first <= t - spec.window) {
        if (b.window.front().second) --b.window_fails;
        b.window.pop_front();
    }
}

void Simulation::on_success(int p, double t, int mode) {
    if (!breakers_) return;
    const BreakerSpec& spec = spec_.provider_breaker[p];
    Breaker& b = breaker_[p];
    if (!spec.enabled) return;
    if (mode != kNormal) {  // a probe, or a forced try: the provider answers again
        b = Breaker{};
        return;
    }
    if (b.state != 0) return;
    if (spec.rate_mode) {
        b.window.emplace_back(t, false);
        prune(b, spec, t);
    } else {
        b.fails = 0;
    }
}

void Simulation::on_failure(int p, double t, bool refused, int mode) {
    if (!breakers_) return;
    const BreakerSpec& spec = spec_.provider_breaker[p];
    Breaker& b = breaker_[p];
    if (!spec.enabled || mode == kForced) return;
    if (mode == kProbe) {
        trip(p, t);
        return;
    }
    if (b.state != 0) return;  // admitted before the breaker opened: nothing new to learn
    if (refused && spec.trip_on_refused) {
        trip(p, t);
        return;
    }
    if (spec.rate_mode) {
        b.window.emplace_back(t, true);
        ++b.window_fails;
        prune(b, spec, t);
        const auto calls = static_cast<double>(b.window.size());
        if (b.window.size() >= static_cast<std::size_t>(spec.window_min_calls) &&
            static_cast<double>(b.window_fails) >= spec.failure_rate * calls)
            trip(p, t);
    } else if (++b.fails >= spec.failure_threshold) {
        trip(p, t);
    }
}

void Simulation::trip(int p, double t) {
    const BreakerSpec& spec = spec_.provider_breaker[p];
    Breaker& b = breaker_[p];
    ++b.trips;
    b.open_for = b.trips == 1 ? spec.open_initial
                              : std::min(b.open_for * spec.open_multiplier, spec.open_max);
    b.until = t + b.open_for;
    b.state = 1;
    b.fails = 0;
    b.in_flight = 0;
    b.window.clear();
    b.window_fails = 0;
}

}  // namespace routekit::sim
