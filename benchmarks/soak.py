"""Soak: many concurrent requests through a chain of two loopback servers while the first
one dies and comes back. Nothing may be lost, and nothing answered twice.

    PYTHONPATH=src .venv/bin/python benchmarks/soak.py [--requests 2000] [--concurrency 100]

Both servers are tests/faultserver.py in processes of their own. The first is killed
(SIGKILL) once a third of the requests have completed and restarted on the same port at two
thirds. The run is done twice, with ``Router`` on threads and with ``AsyncRouter`` on tasks.
Every request carries a unique ``user`` id; each server logs the ids it answered, so a
request answered by both (or twice by one) shows up. Reported: answered, failed by error
type, answered twice, p50/p99 latency, and which server answered how many. Target: 0 lost,
0 answered twice. tests/test_soak.py runs a short form.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import median, pct, report
from procserver import ProcServer

from routekit import AsyncRouter, RouteKitError, Router

MSG = [{"role": "user", "content": "soak"}]


def soak_config(url0: str, url1: str) -> dict[str, Any]:
    timeout = {"connect": 1.0, "read": 10.0, "total": 20.0}
    return {
        "providers": {"a": {"kind": "vllm", "base_url": url0, "timeout": timeout},
                      "b": {"kind": "vllm", "base_url": url1, "timeout": timeout}},
        "models": {"m0": {"provider": "a"}, "m1": {"provider": "b"}},
        "fallback_chains": {"m0": {"chain": ["m1"]}},
        "routing": {"health": {"interval": 0.25, "jitter": 0.2, "timeout": 0.5},
                    "deadline": 30},
    }


class _Chaos:
    """Kills the first server at 1/3 of the completed requests, restarts it at 2/3."""

    def __init__(self, server: ProcServer, total: int) -> None:
        self.server = server
        self.total = total
        self.done = 0
        self.lock = threading.Lock()
        self.events: list[str] = []

    def completed(self) -> None:
        with self.lock:
            self.done += 1
            done = self.done
        if done == self.total // 3:
            self.server.kill()
            self.events.append(f"killed at {done}")
        elif done == 2 * self.total // 3:
            self.server.start()
            self.events.append(f"restarted at {done}")


def _served(paths: list[Path]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for p in paths:
        if p.exists():
            counts.update(line.strip() for line in p.read_text().splitlines() if line.strip())
    return counts


def _servers(workdir: Path, prefix: str) -> tuple[list[Path], ProcServer, ProcServer]:
    logs = [workdir / f"{prefix}-a.log", workdir / f"{prefix}-b.log"]
    return (logs, ProcServer(served_log=str(logs[0])).start(),
            ProcServer(served_log=str(logs[1])).start())


def run_sync(requests: int, concurrency: int, workdir: Path) -> dict[str, Any]:
    logs, first, second = _servers(workdir, "sync")
    chaos = _Chaos(first, requests)
    latencies: list[float] = []
    outcomes: collections.Counter[str] = collections.Counter()
    by_model: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    ids = iter(range(requests))
    try:
        with Router(soak_config(first.url(), second.url())) as router:
            def worker() -> None:
                while True:
                    with lock:
                        i = next(ids, None)
                    if i is None:
                        return
                    t0 = time.perf_counter()
                    try:
                        reply = router.chat.completions.create(model="m0", messages=MSG,
                                                               user=f"sync-{i}")
                        outcome, model = "answered", str(reply.route.answered_by.model)
                    except RouteKitError as exc:
                        outcome, model = type(exc).__name__, "-"
                    elapsed = (time.perf_counter() - t0) * 1000
                    with lock:
                        latencies.append(elapsed)
                        outcomes[outcome] += 1
                        by_model[model] += 1
                    chaos.completed()

            threads = [threading.Thread(target=worker) for _ in range(concurrency)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(600)
    finally:
        first.kill()
        second.kill()
    return _summary("Router (threads)", requests, outcomes, by_model, latencies, logs,
                    chaos.events)


def run_async(requests: int, concurrency: int, workdir: Path) -> dict[str, Any]:
    logs, first, second = _servers(workdir, "async")
    chaos = _Chaos(first, requests)
    latencies: list[float] = []
    outcomes: collections.Counter[str] = collections.Counter()
    by_model: collections.Counter[str] = collections.Counter()

    async def main() -> None:
        async with AsyncRouter(soak_config(first.url(), second.url())) as router:
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in range(requests):
                queue.put_nowait(i)

            async def worker() -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    t0 = time.perf_counter()
                    try:
                        reply = await router.chat.completions.create(
                            model="m0", messages=MSG, user=f"async-{i}")
                        outcome, model = "answered", str(reply.route.answered_by.model)
                    except RouteKitError as exc:
                        outcome, model = type(exc).__name__, "-"
                    latencies.append((time.perf_counter() - t0) * 1000)
                    outcomes[outcome] += 1
                    by_model[model] += 1
                    # kill/restart block the loop for a few ms: acceptable in a soak
                    chaos.completed()

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    try:
        asyncio.run(main())
    finally:
        first.kill()
        second.kill()
    return _summary("AsyncRouter (tasks)", requests, outcomes, by_model, latencies, logs,
                    chaos.events)


def _summary(name: str, requests: int, outcomes: collections.Counter[str],
             by_model: collections.Counter[str], latencies: list[float], logs: list[Path],
             events: list[str]) -> dict[str, Any]:
    served = _served(logs)
    twice = sum(1 for _, n in served.items() if n > 1)
    answered = outcomes.get("answered", 0)
    failed = {k: v for k, v in outcomes.items() if k != "answered"}
    return {
        "router": name, "requests": requests, "answered": answered,
        "lost": requests - answered, "failed_by_type": dict(failed),
        "answered_twice": twice, "by_model": dict(by_model),
        "p50_ms": median(latencies) if latencies else 0.0,
        "p99_ms": pct(latencies, 0.99) if latencies else 0.0, "events": events,
    }


def run(requests: int, concurrency: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        return [run_sync(requests, concurrency, Path(tmp)),
                run_async(requests, concurrency, Path(tmp))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=100)
    args = ap.parse_args()
    results = run(args.requests, args.concurrency)
    rows = [{k: (str(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()}
            for r in results]
    checks = []
    for r in results:
        checks.append((f"{r['router']}: 0 lost", r["lost"] == 0,
                       f"{r['answered']}/{r['requests']} answered, failed {r['failed_by_type']}"))
        checks.append((f"{r['router']}: 0 answered twice", r["answered_twice"] == 0,
                       f"{r['answered_twice']}"))
    return report("soak", rows, checks, {"results": results})


if __name__ == "__main__":
    raise SystemExit(main())
