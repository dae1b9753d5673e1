"""Router overhead over a direct provider call, and the cost of failing over a closed port.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_overhead.py [--n 400]

0. routekit's own work per request, with a provider that answers from memory, with the
   breakers and a bulkhead on (as in every router now) and with both off.
1. Non-streaming completions against a fast loopback server (tests/faultserver.py, "ok"
   mode): the routekit Router vs the same OpenAICompatProvider called directly, interleaved
   call by call (alternating which goes first) so both see the same machine noise.
   Overhead = difference of medians.
   Breakers on, a bulkhead on the provider (max_concurrency 64). Measured with plain
   non-streaming upstream requests and with ``stream_upstream`` (the default for local
   kinds). Target: ≤ 50 µs median.
2. Failover: chain [closed port → server], breakers off (with them on, the first refusal
   trips the provider and later requests skip it: see bench_failover.py); the time the
   refused candidate costs before the next one starts. Target: ≤ 2 ms p99.
3. Metrics and traces: the routing layer alone (as in 0) with both off, Prometheus metrics
   on, traces on with only the OpenTelemetry API (no SDK: the no-op tracer), traces on with
   the SDK and an in-memory exporter, and metrics + SDK traces; interleaved in rounds.
   And "both off" against the same code before the telemetry package existed (``--baseline
   REV``, by default the parent of the commit that added ``src/routekit/_telemetry``), each
   run in its own process, alternated: target ≤ 2 µs (median of the per-round differences
   of the runs' medians).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_overhead.py --telemetry-only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def layer_router(*, policies: bool = True, **telemetry: Any) -> Router:
    """A router on one in-memory provider; ``telemetry``: metrics= / traces= (only passed
    when given, so this also runs against routekit from before they existed)."""
    return Router(config(["http://127.0.0.1:9/v1"], policies=policies), warm=False,
                  providers={"p0": _InstantProvider()},  # type: ignore[dict-item]
                  **telemetry)


def time_layer(router: Router, n: int, *, warmup: int = 200) -> list[float]:
    create = router.chat.completions.create
    for _ in range(warmup):
        create(model="m0", messages=MSG)
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        create(model="m0", messages=MSG)
        out.append((time.perf_counter_ns() - t0) / 1e3)
    return out


def routing_layer_alone(n: int, *, policies: bool) -> list[float]:
    with layer_router(policies=policies) as router:
        return time_layer(router, n)


# -- 3. metrics and traces -------------------------------------------------------------------


_EXPORTERS: list[Any] = []  # the in-memory span exporters, emptied between rounds


def telemetry_variants() -> dict[str, dict[str, Any]]:
    """Router arguments per case; cases whose packages are missing are left out."""
    cases: dict[str, dict[str, Any]] = {"both off": {}}
    try:
        from prometheus_client import CollectorRegistry
    except ImportError:
        CollectorRegistry = None  # noqa: N806
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )
    except ImportError:
        TracerProvider = None  # noqa: N806
    if CollectorRegistry is not None:
        cases["metrics on"] = {"metrics": CollectorRegistry()}
    with contextlib.suppress(ImportError):
        import opentelemetry.trace  # noqa: F401

        # traces=True with no SDK installed globally (this script never installs one): the
        # API's proxy hands out its no-op tracer.
        cases["traces on, API only (no SDK)"] = {"traces": True}
    if TracerProvider is not None:
        def sdk() -> Any:
            provider = TracerProvider()
            exporter = InMemorySpanExporter()
            _EXPORTERS.append(exporter)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            return provider

        cases["traces on, SDK + in-memory exporter"] = {"traces": sdk()}
        if CollectorRegistry is not None:
            cases["metrics + SDK traces"] = {"metrics": CollectorRegistry(), "traces": sdk()}
    return cases


def telemetry_in_process(n: int, rounds: int) -> dict[str, list[float]]:
    """Every case, interleaved: each round times n requests per case, so all cases share the
    machine's noise of that moment."""
    routers = {name: layer_router(**kw) for name, kw in telemetry_variants().items()}
    samples: dict[str, list[float]] = {name: [] for name in routers}
    try:
        for r in range(rounds):
            for name, router in routers.items():
                samples[name] += time_layer(router, n, warmup=200 if r == 0 else 20)
            for exporter in _EXPORTERS:
                exporter.clear()
    finally:
        for router in routers.values():
            router.close()
    return samples


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def default_baseline() -> str:
    """The parent of the commit that added the telemetry package (HEAD if not committed)."""
    added = _git("log", "--diff-filter=A", "--format=%H", "--",
                 "src/routekit/_telemetry/__init__.py").splitlines()
    return f"{added[-1]}^" if added else "HEAD"


_SNIPPET = (
    "import statistics, sys; sys.path.insert(0, {bench!r}); "
    "from bench_overhead import routing_layer_alone; "
    "print(statistics.median(routing_layer_alone({n}, policies=True)))"
)


def off_versus_baseline(rev: str, n: int, rounds: int) -> tuple[list[float], list[float]]:
    """Medians of "both off" runs, this tree vs ``rev``, each in a fresh process, alternated.
    The C++ core is the one built here (the telemetry work does not touch it)."""
    import routekit

    here_src = Path(routekit.__file__).resolve().parent.parent
    bench = str(Path(__file__).resolve().parent)
    with tempfile.TemporaryDirectory(prefix="routekit-baseline-") as tmp:
        archive = subprocess.run(["git", "-C", str(here_src.parent), "archive", rev, "src"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        base_src = Path(tmp) / "src"
        for so in (here_src / "routekit").glob("_core*.so"):
            shutil.copy(so, base_src / "routekit")
        rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if p and Path(p).resolve() != here_src]
        medians: dict[Path, list[float]] = {here_src: [], base_src: []}
        for r in range(rounds):
            for src in ((here_src, base_src) if r % 2 == 0 else (base_src, here_src)):
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), *rest])}
                out = subprocess.run([sys.executable, "-c", _SNIPPET.format(bench=bench, n=n)],
                                     capture_output=True, text=True, check=True, env=env)
                medians[src].append(float(out.stdout.strip().splitlines()[-1]))
    return medians[here_src], medians[base_src]


def telemetry_section(n: int, rounds: int, baseline: str | None
                      ) -> tuple[list[dict[str, Any]], list[tuple[str, bool, str]],
                                 dict[str, Any]]:
    samples = telemetry_in_process(n, rounds)
    off = median(samples["both off"])
    rows: list[dict[str, Any]] = [
        {"case": f"routing layer alone, {name}", "median_us": median(xs),
         "p99_us": pct(xs, 0.99), "n": len(xs), "vs_off_us": median(xs) - off}
        for name, xs in samples.items()
    ]
    extra: dict[str, Any] = {"telemetry_us": {name: median(xs) for name, xs in samples.items()}}
    checks: list[tuple[str, bool, str]] = []
    rev = baseline if baseline is not None else default_baseline()
    try:
        here, base = off_versus_baseline(rev, n * 2, max(6, rounds))
    except (subprocess.CalledProcessError, OSError) as exc:
        print(f"skipped the baseline comparison ({rev}): {exc}", file=sys.stderr)
    else:
        # Each round runs both back to back: the median of the per-round differences cancels
        # the drift of a shared machine better than a difference of overall medians.
        diff = statistics.median(h - b for h, b in zip(here, base))
        rows += [
            {"case": "both off, this tree (median of per-process medians)",
             "median_us": statistics.median(here), "p99_us": "-", "n": len(here),
             "vs_off_us": "-"},
            {"case": f"both off, before telemetry ({_git('rev-parse', '--short', rev)})",
             "median_us": statistics.median(base), "p99_us": "-", "n": len(base),
             "vs_off_us": "-"},
        ]
        # Only a slowdown fails: faster than the baseline is noise (or a win), not a cost.
        checks.append(("both off ≤ 2 µs slower than the code before telemetry", diff <= 2.0,
                       f"{diff:+.2f} µs (runs: here {[round(x, 2) for x in here]}, "
                       f"before {[round(x, 2) for x in base]})"))
        extra["off_vs_baseline_us"] = {"baseline": rev, "diff": diff, "here": here,
                                       "before": base}
    return rows, checks, extra


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
    ap.add_argument("--telemetry-only", action="store_true",
                    help="only section 3 (writes bench_overhead_telemetry.json)")
    ap.add_argument("--baseline", default=None,
                    help="git revision for the 'both off' comparison (default: the parent "
                         "of the commit that added src/routekit/_telemetry)")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.n
    if args.telemetry_only:
        rows, checks, extra = telemetry_section(n * 5, args.rounds, args.baseline)
        return report("bench_overhead_telemetry", rows, checks, extra)

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
                for i in range(n):
                    # Alternate which goes first: the second call of a pair meets a server
                    # that has just answered, and the order must not favour either side.
                    if i % 2:
                        t0 = time.perf_counter_ns()
                        direct.complete(request, deadline)
                        t1 = time.perf_counter_ns()
                        create(model="m0", messages=MSG)
                        t2 = time.perf_counter_ns()
                        t_direct.append((t1 - t0) / 1e3)
                        t_router.append((t2 - t1) / 1e3)
                    else:
                        t0 = time.perf_counter_ns()
                        create(model="m0", messages=MSG)
                        t1 = time.perf_counter_ns()
                        direct.complete(request, deadline)
                        t2 = time.perf_counter_ns()
                        t_router.append((t1 - t0) / 1e3)
                        t_direct.append((t2 - t1) / 1e3)
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
    tel_rows, tel_checks, tel_extra = telemetry_section(n * 5, args.rounds, args.baseline)
    rows += [{k: v for k, v in r.items() if k != "vs_off_us"} for r in tel_rows]
    checks += tel_checks
    overhead = overheads["plain"]
    return report("bench_overhead", rows, checks, {"overhead_us": overhead,
                                                   "overheads_us": overheads, **tel_extra})


if __name__ == "__main__":
    raise SystemExit(main())
