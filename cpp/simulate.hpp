// routekit simulation core: Monte Carlo of provider outages over fallback plans.
//
// Plain C++17, no Python (bindings.cpp wraps it). The model — what fails, what each failed
// hop costs, how breakers open and close — is documented in src/routekit/_simulate.py,
// which builds a Spec from a config; tests/simulate_reference.py is a pure-Python twin of
// this file with the same random streams, and the tests require both to agree exactly.
//
// Thread safety: a Simulation is a single-threaded object; use one per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <functional>
#include <queue>
#include <utility>
#include <vector>

namespace routekit::sim {

// xoshiro256** seeded through splitmix64; one independent stream per (seed, stream id).
class Rng {
public:
    Rng(std::uint64_t seed, std::uint64_t stream);
    std::uint64_t next();
    double uniform();                  // [0, 1), 53 random bits
    double exponential(double mean);   // -mean * log(1 - u)

private:
    std::uint64_t s_[4];
};

struct BreakerSpec {
    bool enabled = true;
    bool rate_mode = false;         // false: consecutive failures
    int failure_threshold = 5;
    bool trip_on_refused = false;   // already resolved: true only for local HTTP kinds
    double window = 10.0;
    int window_min_calls = 20;
    double failure_rate = 0.5;
    double open_initial = 5.0;
    double open_multiplier = 2.0;
    double open_max = 60.0;
    int half_open_probes = 1;
};

// How a provider's down time shows to a request.
enum FailKind : int {
    kRefused = 0,    // local HTTP: nothing listening (or hung, in a hung outage)
    kError = 1,      // cloud: a fast error (or hung, in a hung outage)
    kInProcess = 2,  // in-process: fails fast, never hangs
};

struct Spec {
    // Outage units (a provider, or a correlation group).
    std::vector<double> unit_availability;
    std::vector<double> unit_mean_up;    // seconds, timeline mode
    std::vector<double> unit_mean_down;  // seconds, timeline mode
    // Providers.
    std::vector<int> provider_unit;
    std::vector<int> provider_fail_kind;
    std::vector<double> provider_hang_limit;  // seconds a hung hop may wait, before caps
    std::vector<BreakerSpec> provider_breaker;
    // Models.
    std::vector<int> model_provider;
    std::vector<double> model_cost;  // USD when this model answers
    // Entry models: plan (model ids) and traffic weight.
    std::vector<std::vector<int>> plans;
    std::vector<double> entry_weight;
    // Request.
    double budget = 120.0;         // routing.deadline, else timeout.total
    double first_byte_share = 0.5;
    double refused_cost = 0.00064;
    double skip_cost = 0.00002;
    double hang_share = 0.0;       // share of outages that hang instead of failing fast
};

struct EntryStats {
    std::int64_t requests = 0;
    std::int64_t answered = 0;
    std::vector<std::int64_t> answered_at;  // per plan position
    double cost = 0.0;
    std::int64_t refused_hops = 0;
    std::int64_t hung_hops = 0;
    std::int64_t skipped_hops = 0;
    std::int64_t forced = 0;               // an open candidate tried as the last resort
    std::int64_t zero_delay = 0;           // answered with nothing added
    std::vector<double> delays;            // added seconds of the other answered requests
    std::vector<double> failure_times;     // seconds until a failed request gave up
};

class Simulation {
public:
    // timeline=false: every request meets an independent draw of every unit (no time,
    // no breakers). timeline=true: Poisson arrivals at `rps`, alternating up/down periods
    // per unit, breakers when `breakers` is set.
    Simulation(Spec spec, std::uint64_t seed, bool timeline, bool breakers, double rps);

    void run_requests(std::int64_t n);  // independent mode
    void run_until(double t);           // timeline: arrivals before t, events up to t
    void finish();                      // timeline: let requests in flight complete
    double now() const { return now_; }
    std::int64_t in_flight() const { return static_cast<std::int64_t>(live_); }
    const std::vector<EntryStats>& stats() const { return stats_; }

private:
    struct Request {
        int entry = 0;
        double arrival = 0.0;
        std::size_t k = 0;  // plan position of the hop in progress
        int mode = 0;       // Mode of the hop in progress
        bool forced = false;
        std::uint64_t skipped = 0;  // plan positions (< 64) skipped by a breaker
    };
    struct Breaker {
        int state = 0;  // 0 closed, 1 open, 2 half-open
        double until = 0.0;
        double open_for = 0.0;
        int fails = 0;
        int trips = 0;
        int in_flight = 0;
        std::deque<std::pair<double, bool>> window;
        int window_fails = 0;
    };
    struct Unit {
        bool up = true;
        bool hung = false;
        double next_change = std::numeric_limits<double>::infinity();
    };
    struct Event {  // a hung hop that gives up at `t`; ties break on `seq` (FIFO)
        double t;
        std::uint64_t seq;
        std::size_t slot;
        bool operator>(const Event& o) const {
            return t > o.t || (t == o.t && seq > o.seq);
        }
    };
    enum Mode : int { kNormal = 0, kProbe = 1, kForced = 2 };

    int pick_entry(Rng& rng);
    void request_independent();
    // timeline
    void arrive(double t);
    void walk(std::size_t slot, double t);
    void resume(std::size_t slot, double t);
    void answer(std::size_t slot, std::size_t k, double t);
    void fail(std::size_t slot, double t);
    const Unit& unit_at(int u, double t);
    int admit(int p, double t);  // 0 no, 1 yes, 2 yes as a half-open probe
    bool would_admit(int p, double t) const;
    std::size_t last_resort(const std::vector<int>& plan, const Request& r, double t) const;
    double reopens_at(int p, double t) const;
    void on_success(int p, double t, int mode);
    void on_failure(int p, double t, bool refused, int mode);
    void prune(Breaker& b, const BreakerSpec& spec, double t);
    void trip(int p, double t);
    double hang_wait(int p, double elapsed, bool later) const;

    Spec spec_;
    bool timeline_;
    bool breakers_;
    double rps_;
    std::vector<double> cumulative_;
    std::vector<EntryStats> stats_;
    Rng requests_rng_;
    // independent mode scratch
    std::vector<std::uint64_t> unit_stamp_;
    std::vector<char> unit_down_;
    std::vector<char> unit_hung_;
    std::uint64_t generation_ = 0;
    // timeline state
    double now_ = 0.0;
    double next_arrival_ = 0.0;
    std::vector<Rng> unit_rng_;
    std::vector<Unit> units_;
    std::vector<Breaker> breaker_;
    std::vector<Request> pool_;
    std::vector<std::size_t> free_;
    std::size_t live_ = 0;
    std::priority_queue<Event, std::vector<Event>, std::greater<Event>> events_;
    std::uint64_t seq_ = 0;
};

}  // namespace routekit::sim
