"""The token relay (routekit._core.Relay) against queue.SimpleQueue between the same threads.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_relay.py [--pieces 200000] [--runs 5]

Python producer threads (1, 4, 16) push short text pieces; the main thread consumes them.
Measured per piece: process CPU time (all threads: what the channel costs the machine) and
wall time. Relay consumers pop in batches (pop(256)) or one at a time (pop(1)); SimpleQueue
is read with get() (one blocking wait per piece, the way a stream reads it). Then one C++
producer (the shape of the native decode loop: no Python on the producer side) into a
batching Python consumer: pieces per second. Medians over the runs.

Targets (issue #7): <= 5 us of CPU per piece through the relay; >= 1M pieces/s from one
producer with batching.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from typing import Callable

from _common import median, report

from routekit import _core

_TEXT = "tok"


def run_relay(producers: int, pieces: int, batch: int) -> tuple[float, float]:
    relay = _core.Relay(capacity=256)
    ids = [relay.attach() for _ in range(producers)]
    per = pieces // producers
    start = threading.Barrier(producers + 1)

    def produce(p: int) -> None:
        push = relay.push
        start.wait()
        for _ in range(per):
            push(p, _TEXT, 1)
        relay.finish(p, _core.FINISH_STOP)

    threads = [threading.Thread(target=produce, args=(p,)) for p in ids]
    for t in threads:
        t.start()
    start.wait()
    c0, t0 = time.process_time(), time.perf_counter()
    got = 0
    pop = relay.pop
    while True:
        status, items = pop(batch, -1.0)
        if status != _core.POP_PIECES:
            break
        got += len(items)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for t in threads:
        t.join()
    assert got == per * producers + producers, got
    return cpu / (per * producers) * 1e6, wall / (per * producers) * 1e6


def run_simplequeue(producers: int, pieces: int) -> tuple[float, float]:
    q: queue.SimpleQueue[tuple[str, int, int, int] | None] = queue.SimpleQueue()
    per = pieces // producers
    start = threading.Barrier(producers + 1)

    def produce(p: int) -> None:
        put = q.put
        start.wait()
        for _ in range(per):
            put((_TEXT, 1, 0, p))
        put(None)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in threads:
        t.start()
    start.wait()
    c0, t0 = time.process_time(), time.perf_counter()
    done = got = 0
    get = q.get
    while done < producers:
        item = get()
        if item is None:
            done += 1
        else:
            got += 1
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for t in threads:
        t.join()
    assert got == per * producers
    return cpu / got * 1e6, wall / got * 1e6


def run_native_producer(pieces: int) -> float:
    """Pieces per second from one C++ producer into a batching Python consumer."""
    relay = _core.Relay(capacity=4096)
    p = relay.attach()
    t0 = time.perf_counter()
    _core.relay_test_producer(relay, p, pieces, _TEXT)
    got = 0
    while True:
        status, _, tokens, finish, _ = relay.pop_text(4096, -1.0)
        if status != _core.POP_PIECES:
            break
        got += tokens
        if finish:
            break
    wall = time.perf_counter() - t0
    assert got == pieces, got
    return pieces / wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pieces", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    rows = []
    cases: list[tuple[str, int, Callable[[], tuple[float, float]]]] = []
    for producers in (1, 4, 16):
        cases += [
            ("relay, pop(256)", producers, lambda n=producers: run_relay(n, args.pieces, 256)),
            ("relay, pop(1)", producers, lambda n=producers: run_relay(n, args.pieces, 1)),
            ("SimpleQueue.get()", producers, lambda n=producers: run_simplequeue(n, args.pieces)),
        ]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(args.runs):  # interleaved, so machine noise hits every case alike
        for name, producers, fn in cases:
            results.setdefault((name, producers), []).append(fn())
    for (name, producers), xs in results.items():
        rows.append({"channel": name, "producers": producers,
                     "cpu_us_per_piece": median([x[0] for x in xs]),
                     "wall_us_per_piece": median([x[1] for x in xs])})
    native = [run_native_producer(args.pieces * 10) for _ in range(args.runs)]
    native_rate = median(native)
    rows.append({"channel": "relay, C++ producer, pop_text(4096)", "producers": 1,
                 "cpu_us_per_piece": float("nan"), "wall_us_per_piece": 1e6 / native_rate})

    def cpu(name: str, producers: int) -> float:
        return next(r["cpu_us_per_piece"] for r in rows
                    if r["channel"] == name and r["producers"] == producers)

    worst = max(cpu("relay, pop(256)", n) for n in (1, 4, 16))
    checks = [
        ("relay CPU per piece <= 5 us (batched consumer, 1/4/16 producers)", worst <= 5.0,
         f"worst {worst:.2f} us"),
        ("relay CPU per piece <= 5 us (one piece per pop, 1 producer)",
         cpu("relay, pop(1)", 1) <= 5.0, f"{cpu('relay, pop(1)', 1):.2f} us"),
        (">= 1M pieces/s from one producer with batching", native_rate >= 1e6,
         f"{native_rate / 1e6:.2f} M pieces/s"),
    ]
    return report("bench_relay", rows, checks, {
        "pieces": args.pieces, "runs": args.runs, "native_pieces_per_s": native_rate,
        "simplequeue_cpu_us": {n: cpu("SimpleQueue.get()", n) for n in (1, 4, 16)}})


if __name__ == "__main__":
    raise SystemExit(main())
