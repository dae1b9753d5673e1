"""Router overhead over a direct provider call, and the cost of failing over a closed port.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_overhead.py [--n 400]

0. routekit's own work per request, with a provider that answers from memory.
1. Non-streaming completions against a fast loopback server (tests/faultserver.py, "ok"
   mode): the routekit Router vs the same OpenAICompatProvider called directly, interleaved
   call by call so both see the same machine noise. Overhead = difference of medians.
   Target: ≤ 50 µs median.
2. Failover: chain [closed port → server]; the time the refused candidate costs before the
   next one starts (its attempt's duration in the route). Target: ≤ 2 ms p99.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from typing import Any, Iterator

from _common import median, pct, report
from faultserver import closed_port

from routekit import Router
from routekit._config.model import ProviderConfig, TimeoutConfig
from routekit.providers._base import ChatRequest, Deadline
from routekit.providers.http.openai_compat import OpenAICompatProvider

MSG = [{"role": "user", "content": "hi"}]


def config(urls: list[str]) -> dict[str, Any]:
    providers = {f"p{i}": {"kind": "vllm", "base_url": u} for i, u in enumerate(urls)}
    models = {f"m{i}": {"provider": f"p{i}", "model_id": "bench"} for i in range(len(urls))}
    return {"providers": providers, "models": models,
            "fallback_chains": {"m0": {"chain": [f"m{i}" for i in range(1, len(urls))]}}}


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


def routing_layer_alone(n: int) -> list[float]:
    with Router(config(["http://127.0.0.1:9/v1"]), warm=False) as router:
        core = router._core
        core._model_cache["m0"] = core._model_cache["m0"]._replace(provider=_InstantProvider())
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
    code = ("import sys, time; sys.path.insert(0, 'tests'); from faultserver import FaultServer; "
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
        direct = OpenAICompatProvider("direct", ProviderConfig(kind="vllm", base_url=url),
                                      default_timeout=TimeoutConfig())
        request = ChatRequest("m0", "bench", MSG, {})
        deadline = Deadline(connect=2.0, read=60.0, total=120.0)
        with Router(config([url])) as router:
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

        failover_ms, total_ms = [], []
        dead = f"http://127.0.0.1:{closed_port()}/v1"
        with Router(config([dead, url])) as router:
            for _ in range(20):
                router.chat.completions.create(model="m0", messages=MSG)
            for _ in range(n // 2):
                reply = router.chat.completions.create(model="m0", messages=MSG)
                refused = reply.route.attempts[0]
                assert refused.error_type == "ConnectionFailed", refused
                failover_ms.append(refused.duration_ms)
                total_ms.append(reply.route.total_ms)

    own = routing_layer_alone(n * 5)
    overhead = median(t_router) - median(t_direct)
    rows = [
        {"case": "direct provider.complete", "median_us": median(t_direct),
         "p99_us": pct(t_direct, 0.99), "n": n},
        {"case": "Router.create", "median_us": median(t_router),
         "p99_us": pct(t_router, 0.99), "n": n},
        {"case": "routing layer alone (provider answers instantly)", "median_us": median(own),
         "p99_us": pct(own, 0.99), "n": len(own)},
        {"case": "refused candidate (failover cost)", "median_us": median(failover_ms) * 1e3,
         "p99_us": pct(failover_ms, 0.99) * 1e3, "n": len(failover_ms)},
        {"case": "Router.create via closed port", "median_us": median(total_ms) * 1e3,
         "p99_us": pct(total_ms, 0.99) * 1e3, "n": len(total_ms)},
    ]
    checks = [
        ("router overhead ≤ 50 µs median", overhead <= 50.0, f"{overhead:.1f} µs"),
        ("failover past a closed port ≤ 2 ms p99", pct(failover_ms, 0.99) <= 2.0,
         f"p99 {pct(failover_ms, 0.99):.3f} ms, median {median(failover_ms):.3f} ms"),
    ]
    return report("bench_overhead", rows, checks, {"overhead_us": overhead})


if __name__ == "__main__":
    raise SystemExit(main())
