"""What a failed first candidate costs each request, with and without routing memory.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_failover.py [--n 300]

Chain [m0 → m1]; m1 is a fast loopback server (tests/faultserver.py in its own process).
Cost per request = median total time of ``create(model="m0")`` minus the median of
``create(model="m1")`` on the same router, interleaved call by call, when m0 is:

1. a closed port, breakers off (every request pays the refused connection);
2. a hung server before its breaker trips (every request waits m0's first-byte deadline,
   here ``first_byte: 0.5`` s; the default for local kinds is 10 s);
3. the same hung server after its breaker tripped (3 consecutive failures);
4. a closed port with its breaker open (tripped at once by the refusal).

The seed analysis measured ~2,100 ms per failed hop with no memory. Also: a plan over a
generated 1,000-model graph with 10% of providers' flags down (what every request does).
Two 1,000-model graphs: config-shaped (800 entries → 150 mid-tier → 50 terminals; plans of
3-7 candidates) and bench_plan.py's random stress graph (1-4 random fallbacks each, so a
plan lists ~500 candidates). Targets: an open breaker adds ≤ 50 µs median; a plan over the
config-shaped 1,000 models takes ≤ 5 µs median.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from _common import median, pct, report
from bench_overhead import server_process
from bench_plan import generated_graph
from faultserver import FaultServer, closed_port

from routekit import Router
from routekit._plan import CompiledGraph

MSG = [{"role": "user", "content": "hi"}]
SEED_MS_PER_HOP = 2100.0


def chain(url0: str, url1: str, **breaker: Any) -> dict[str, Any]:
    return {
        "providers": {
            "p0": {"kind": "vllm", "base_url": url0, "stream_upstream": False,
                   "timeout": {"connect": 1.0, "first_byte": 0.5, "read": 10, "total": 20}},
            "p1": {"kind": "vllm", "base_url": url1, "stream_upstream": False},
        },
        "models": {"m0": {"provider": "p0", "model_id": "bench"},
                   "m1": {"provider": "p1", "model_id": "bench"}},
        "fallback_chains": {"m0": {"chain": ["m1"]}},
        "routing": {"retry": {"max_attempts": 1}, "breaker": breaker},
    }


def paired(router: Router, n: int) -> tuple[list[float], list[float]]:
    """(ms via m0 → m1, ms calling m1 directly), interleaved."""
    create = router.chat.completions.create
    via, direct = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = create(model="m0", messages=MSG)
        t1 = time.perf_counter()
        create(model="m1", messages=MSG)
        t2 = time.perf_counter()
        assert reply.route.answered_by.model == "m1", reply.route
        via.append((t1 - t0) * 1000)
        direct.append((t2 - t1) * 1000)
    return via, direct


def row(case: str, via: list[float], direct: list[float]) -> dict[str, Any]:
    added = median(via) - median(direct)
    return {"case": case, "n": len(via), "via_m0_ms": median(via),
            "direct_m1_ms": median(direct), "added_ms": added,
            "added_p99_ms": pct(via, 0.99) - median(direct),
            "vs_seed_2100ms": f"{added / SEED_MS_PER_HOP:.2e}x"}


def tiered_graph(seed: int = 11) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """A config-shaped 1,000-model graph: 800 entry models each falling back to 2 of 150
    mid-tier models, each of which falls back to 1-2 of 50 terminals; 12 providers. Plans
    are 3-7 candidates long, as in real configs."""
    rng = random.Random(seed)
    providers = [f"provider-{k}" for k in range(12)]
    terminals = [f"terminal-{i:02d}" for i in range(50)]
    mids = [f"mid-{i:03d}" for i in range(150)]
    entries = [f"entry-{i:03d}" for i in range(800)]
    chains: dict[str, list[str]] = {t: [] for t in terminals}
    for m in mids:
        chains[m] = rng.sample(terminals, rng.randint(1, 2))
    for e in entries:
        chains[e] = rng.sample(mids, 2)
    models = entries + mids + terminals
    return models, [rng.choice(providers) for _ in models], chains


def plan_timing(shape: str, batches: int = 30, per_batch: int = 2000) -> tuple[float, float]:
    """(median µs per plan, mean plan length) with 10% of providers' flags down."""
    if shape == "tiered":
        models, providers, chains = tiered_graph()
    else:
        models, providers, chains = generated_graph(1000, seed=7)
    graph = CompiledGraph(models, providers, chains)
    rng = random.Random(3)
    down = rng.sample(graph.providers, max(1, len(graph.providers) // 10))
    for p in down:
        graph.set_provider_available(p, False)
    entries = [rng.choice(models) for _ in range(per_batch)]
    results = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for m in entries:
            graph.plan(m)
        results.append((time.perf_counter_ns() - t0) / per_batch / 1000)
    length = sum(len(graph.plan(m)) for m in entries) / len(entries)
    return median(results), length


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    args = ap.parse_args()
    n = args.n
    rows = []
    with server_process() as fast:
        dead = f"http://127.0.0.1:{closed_port()}/v1"
        with Router(chain(dead, fast, enabled=False)) as router:
            paired(router, 20)
            rows.append(row("closed port, no breaker", *paired(router, n)))
        with FaultServer(hang_seconds=5) as hung:
            with Router(chain(hung.url("hang"), fast, failure_threshold=1000)) as router:
                rows.append(row("hung server, breaker not yet tripped (first_byte 0.5 s)",
                                *paired(router, 8)))
            with Router(chain(hung.url("hang"), fast, failure_threshold=3)) as router:
                paired(router, 3)  # three first-byte timeouts trip it
                assert router.plan("m0") == ["m1"]
                paired(router, 20)
                rows.append(row("hung server, after its breaker tripped", *paired(router, n)))
        with Router(chain(dead, fast)) as router:
            paired(router, 20)  # the first refusal trips the provider at once
            via, direct = paired(router, n)
            rows.append(row("open breaker (closed port, tripped)", via, direct))
    open_added_us = rows[-1]["added_ms"] * 1000
    plan_us, plan_len = plan_timing("tiered")
    stress_us, stress_len = plan_timing("random")
    for label, us, length in (("config-shaped", plan_us, plan_len),
                              ("random stress graph", stress_us, stress_len)):
        rows.append({"case": f"plan, 1,000 models ({label}, {length:.0f} candidates), "
                             "10% of providers down",
                     "n": 30 * 2000, "via_m0_ms": us / 1000, "direct_m1_ms": 0.0,
                     "added_ms": 0.0, "added_p99_ms": 0.0, "vs_seed_2100ms": "-"})
    checks = [
        ("open breaker adds ≤ 50 µs median over calling the fallback directly",
         open_added_us <= 50.0, f"{open_added_us:.1f} µs"),
        ("plan over a 1,000-model config with 10% down ≤ 5 µs median", plan_us <= 5.0,
         f"{plan_us:.2f} µs ({plan_len:.1f} candidates per plan; the random stress graph's "
         f"{stress_len:.0f}-candidate plans take {stress_us:.1f} µs)"),
    ]
    return report("bench_failover", rows, checks,
                  {"open_breaker_added_us": open_added_us, "plan_1000_us": plan_us,
                   "plan_1000_stress_us": stress_us})


if __name__ == "__main__":
    raise SystemExit(main())
