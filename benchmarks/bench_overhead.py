"""Router overhead over a direct provider call, and the cost of failing over a closed port.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_overhead.py [--n 400]

0. routekit's own work per request, with a provider that answers from memory, with the
   breakers and a bulkhead on (as in every router now) and with both off.
1. Non-streaming completions against a fast loopback server (tests/faultserver.py, "ok"
   mode): the routekit Router vs the same OpenAICompatProvider called directly, interleaved
   call by call so both see the same machine noise. Overhead = difference of medians.
   Breakers on, a bulkhead on the provider (max_concurrency 64). Measured with plain
   non-streaming upstream requests and with ``stream_upstream`` (the default for local
   kinds). Target: ≤ 50 µs median.
2. Failover: chain [closed port → server], breakers off (with them on, the first refusal
   trips the provider and later requests skip it: see bench_failover.py); the time the
   refused candidate costs before the next one starts. Target: ≤ 2 ms p99.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from _common import median, pct, report
from faultserver import closed_port

from routekit import Router
from routekit._config.model import ProviderConfig, TimeoutConfig
from routekit.providers._base import ChatRequest, Deadline
from routekit.providers.http.openai_compat import OpenAICompatProvider

MSG = [{"role": "user", "content": "hi"}]


def config(urls: list[str], *, upstream: bool = False, policies: bool = True
           ) -> dict[str, Any]:
    providers: dict[str, Any] = {f"p{i}": {"kind": "vllm", "base_url": u,
                                           "stream_upstream": upstream}
                                 for i, u in enumerate(urls)}
    if policies:
        for p in providers.values():
            p["max_concurrency"] = 64
    models = {f"m{i}": {"provider": f"p{i}", "model_id": "bench"} for i in range(len(urls))}
    return {"providers": providers, "models": models,
            "fallback_chains": {"m0": {"chain": [f"m{i}" for i in range(1, len(urls))]}},
            "routing": {"breaker": {"enabled": policies}}}


class _InstantProvider:
    """A Provider that answers from memory: isolates routekit's own per-request work (plan,
    request checks, attempt loop, route record, result wrapping) from HTTP and the server."""

    name, kind = "instant", "vllm"

    def __init__(self) -> None:
        from openai.types.chat import ChatCompletion

        self.reply = ChatCompletion.model_validate({
            "id": "x", "object": "chat.completion", "created": 0, "model": "bench",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi"}}]})

    def complete(self, request: Any, deadline: Any) -> Any:
        return self.reply

    def warm(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def routing_layer_alone(n: int, *, policies: bool) -> list[float]:
    with Router(config(["http://127.0.0.1:9/v1"], policies=policies), warm=False,
                providers={"p0": _InstantProvider()}) as router:  # type: ignore[dict-item]
        create = router.chat.completions.create
        for _ in range(200):
            create(model="m0", messages=MSG)
        out = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            create(model="m0", messages=MSG)
            out.append((time.perf_counter_ns() - t0) / 1e3)
        return out


@contextlib.contextmanager
def server_process() -> Iterator[str]:
    """The fault server in its own process: in this one it would compete for the GIL and
    distort both sides of the comparison."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    code = (f"import sys, time; sys.path.insert(0, {tests!r}); "
            "from faultserver import FaultServer; "
            "s = FaultServer().start(); print(s.port, flush=True); time.sleep(900)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}/mode/ok/v1"
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    n = args.n

    with server_process() as url:
        request = ChatRequest("m0", "bench", MSG, {})
        deadline = Deadline(connect=2.0, read=60.0, total=120.0)
        timings: dict[bool, tuple[list[float], list[float]]] = {}
        for upstream in (False, True):
            direct = OpenAICompatProvider(
                "direct", ProviderConfig(kind="vllm", base_url=url, stream_upstream=upstream),
                default_timeout=TimeoutConfig())
            with Router(config([url], upstream=upstream)) as router:
                create = router.chat.completions.create
                for _ in range(30):  # warm both clients and connections
                    direct.complete(request, deadline)
                    create(model="m0", messages=MSG)
                t_direct, t_router = [], []
                for _ in range(n):
                    t0 = time.perf_counter_ns()
                    direct.complete(request, deadline)
                    t1 = time.perf_counter_ns()
                    create(model="m0", messages=MSG)
                    t2 = time.perf_counter_ns()
                    t_direct.append((t1 - t0) / 1e3)
                    t_router.append((t2 - t1) / 1e3)
            direct.close()
            timings[upstream] = (t_direct, t_router)

        failover_ms, total_ms = [], []
        dead = f"http://127.0.0.1:{closed_port()}/v1"
        with Router(config([dead, url], policies=False)) as router:
            for _ in range(20):
                router.chat.completions.create(model="m0", messages=MSG)
            for _ in range(n // 2):
                reply = router.chat.completions.create(model="m0", messages=MSG)
                refused = reply.route.attempts[0]
                assert refused.error_type == "ConnectionFailed", refused
                failover_ms.append(refused.duration_ms)
                total_ms.append(reply.route.total_ms)

    own = routing_layer_alone(n * 5, policies=True)
    own_off = routing_layer_alone(n * 5, policies=False)
    rows = []
    overheads = {}
    for upstream, (t_direct, t_router) in timings.items():
        label = "stream_upstream" if upstream else "plain"
        overheads[label] = median(t_router) - median(t_direct)
        rows += [
            {"case": f"direct provider.complete ({label})", "median_us": median(t_direct),
             "p99_us": pct(t_direct, 0.99), "n": n},
            {"case": f"Router.create ({label})", "median_us": median(t_router),
             "p99_us": pct(t_router, 0.99), "n": n},
        ]
    rows += [
        {"case": "routing layer alone, breakers + bulkhead on", "median_us": median(own),
         "p99_us": pct(own, 0.99), "n": len(own)},
        {"case": "routing layer alone, breakers + bulkhead off", "median_us": median(own_off),
         "p99_us": pct(own_off, 0.99), "n": len(own_off)},
        {"case": "refused candidate (failover cost)", "median_us": median(failover_ms) * 1e3,
         "p99_us": pct(failover_ms, 0.99) * 1e3, "n": len(failover_ms)},
        {"case": "Router.create via closed port", "median_us": median(total_ms) * 1e3,
         "p99_us": pct(total_ms, 0.99) * 1e3, "n": len(total_ms)},
    ]
    checks = [
        ("router overhead ≤ 50 µs median (plain)", overheads["plain"] <= 50.0,
         f"{overheads['plain']:.1f} µs"),
        ("router overhead ≤ 50 µs median (stream_upstream)", overheads["stream_upstream"] <= 50.0,
         f"{overheads['stream_upstream']:.1f} µs"),
        ("failover past a closed port ≤ 2 ms p99", pct(failover_ms, 0.99) <= 2.0,
         f"p99 {pct(failover_ms, 0.99):.3f} ms, median {median(failover_ms):.3f} ms"),
    ]
    overhead = overheads["plain"]
    return report("bench_overhead", rows, checks, {"overhead_us": overhead,
                                                   "overheads_us": overheads})


if __name__ == "__main__":
    raise SystemExit(main())
