"""routekit._core.Relay: the bounded MPSC channel of text pieces (cpp/relay.hpp).

Real threads, real waits; every wait is bounded. Property tests (hypothesis) drive many
producers with random cancellations and closes and check the channel's promises: every piece
a producer was told was queued is delivered exactly once, in order per producer, and nothing
is delivered after close.
"""

from __future__ import annotations

import asyncio
import random
import select
import threading
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routekit import _core

R = _core


def _drain(relay: _core.Relay, *, batch: int = 16, wait: float = 5.0) -> tuple[int, list[Any]]:
    got: list[Any] = []
    while True:
        status, pieces = relay.pop(batch, wait)
        if status != R.POP_PIECES:
            return status, got
        got.extend(pieces)


# -- basics --------------------------------------------------------------------------------------


def test_one_producer_fifo_and_batches() -> None:
    relay = R.Relay(capacity=8)
    p = relay.attach()
    for i in range(5):
        assert relay.push(p, f"t{i}", 1)
    assert len(relay) == 5
    assert relay.finish(p, R.FINISH_LENGTH, "tail", 2)
    status, pieces = relay.pop(3, 0)
    assert status == R.POP_PIECES
    assert pieces == [("t0", 1, 0, p), ("t1", 1, 0, p), ("t2", 1, 0, p)]
    assert relay.pop_text(64, 0) == (R.POP_PIECES, "t3t4tail", 4, R.FINISH_LENGTH, p)
    assert relay.pop(8, 0) == (R.POP_END, [])


def test_bytes_and_unicode_pieces() -> None:
    relay = R.Relay()
    p = relay.attach()
    relay.push(p, "héllo ", 1)
    relay.push(p, "wörld 🌊".encode(), 1)
    relay.push(p, b"\xff bad byte", 1)  # invalid UTF-8 is dropped, like llama-cpp-python does
    relay.finish(p, R.FINISH_STOP)
    status, text, tokens, finish, _ = relay.pop_text(64, 0)
    assert (status, text, tokens, finish) == (R.POP_PIECES, "héllo wörld 🌊 bad byte", 3,
                                              R.FINISH_STOP)


def test_push_blocks_while_full_and_resumes() -> None:
    relay = R.Relay(capacity=2)
    p = relay.attach()
    pushed: list[int] = []

    def produce() -> None:
        for i in range(6):
            assert relay.push(p, str(i), 1)
            pushed.append(i)
        relay.finish(p, R.FINISH_STOP)

    t = threading.Thread(target=produce)
    t.start()
    deadline = time.monotonic() + 5
    while len(pushed) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    assert len(pushed) == 2 and len(relay) == 2  # the third push waits for room
    status, got = _drain(relay)
    t.join(5)
    assert status == R.POP_END
    assert [g[0] for g in got] == ["0", "1", "2", "3", "4", "5", ""]


def test_waiting_consumer_releases_the_gil() -> None:
    relay = R.Relay()
    relay.attach()
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        assert relay.pop(8, 0.2) == (R.POP_EMPTY, [])
    finally:
        stop.set()
        t.join(5)
    assert ticks > 10_000  # the spinning thread ran the whole time the consumer waited


def _in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def test_wait_consumer_back_waits_for_the_consumer_to_take_and_return() -> None:
    relay = R.Relay()
    p = relay.attach()
    relay.push(p, "first", 1)
    # Nobody is reading: the producer waits its bound, then gives up.
    t0 = time.monotonic()
    assert relay.wait_consumer_back(p, 0.05) is False
    assert time.monotonic() - t0 >= 0.04
    # A consumer that takes the piece and comes back (waits again) releases the producer.
    t, out = _in_thread(lambda: relay.wait_consumer_back(p, 5.0))
    time.sleep(0.02)
    assert t.is_alive()  # the piece is still queued: not back yet
    assert relay.pop_text(8, 0)[:2] == (R.POP_PIECES, "first")
    assert relay.pop(8, 0.3) == (R.POP_EMPTY, [])  # waiting for more: back
    t.join(5)
    assert out == [True]


def test_wait_consumer_back_sees_an_async_consumer_and_a_collecting_one() -> None:
    relay = R.Relay(notify=True)
    p = relay.attach()
    relay.push(p, "a", 1)
    assert relay.poll_text_async(8)[:2] == (R.POP_PIECES, "a")
    assert relay.wait_consumer_back(p, 0.01) is False  # took it but did not come back
    assert relay.poll_text_async(8)[0] == R.POP_EMPTY  # re-armed its fd: back
    assert relay.wait_consumer_back(p, 5.0) is True

    collect = R.Relay(capacity=64)
    q = collect.attach()
    # A consumer that sleeps until 32 pieces are queued is back as soon as it waits: the
    # producer must not wait for it to take a piece it does not want yet.
    t, out = _in_thread(lambda: collect.pop(64, 5.0, 32))
    time.sleep(0.02)
    collect.push(q, "x", 1)
    assert collect.wait_consumer_back(q, 5.0) is True
    collect.finish(q, R.FINISH_STOP)
    t.join(5)
    assert out and out[0][0] == R.POP_PIECES


def test_wait_consumer_back_ends_on_close_and_cancel() -> None:
    for end in ("close", "cancel"):
        relay = R.Relay()
        p = relay.attach()
        relay.push(p, "a", 1)
        t, out = _in_thread(lambda: relay.wait_consumer_back(p, 5.0))
        time.sleep(0.02)
        t0 = time.monotonic()
        relay.close() if end == "close" else relay.cancel(p)
        t.join(5)
        assert out == [False] and time.monotonic() - t0 < 2.0, end


def test_close_drops_everything_and_stops_producers() -> None:
    relay = R.Relay(capacity=1)
    p = relay.attach()
    assert relay.push(p, "a", 1)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(relay.push(p, "b", 1)))
    t.start()  # blocks: the relay is full
    time.sleep(0.05)
    relay.close()
    t.join(5)
    assert result == [False]  # the blocked producer was released and refused
    assert relay.cancelled(p) and relay.closed
    assert relay.pop(8, 0) == (R.POP_CLOSED, [])
    assert not relay.push(p, "c", 1)
    assert not relay.finish(p, R.FINISH_STOP)
    with pytest.raises(RuntimeError):
        relay.attach()


def test_producer_limits() -> None:
    relay = R.Relay()
    for _ in range(R.RELAY_MAX_PRODUCERS):
        relay.attach()
    with pytest.raises(ValueError):  # std::length_error
        relay.attach()
    with pytest.raises(IndexError):
        relay.push(R.RELAY_MAX_PRODUCERS, "x", 1)
    p = 0
    relay.finish(p, R.FINISH_STOP)
    with pytest.raises(RuntimeError):
        relay.push(p, "after finish", 1)


def test_min_pieces_lets_a_consumer_sleep_until_a_batch_or_the_end() -> None:
    relay = R.Relay(capacity=16)
    p = relay.attach()
    for _ in range(3):
        relay.push(p, "x", 1)
    assert relay.pop(16, 0.05, 4) == (R.POP_EMPTY, [])  # fewer than asked for: keeps waiting
    relay.push(p, "y", 1)
    status, pieces = relay.pop(16, 0.05, 4)
    assert status == R.POP_PIECES and [x[0] for x in pieces] == ["x", "x", "x", "y"]
    relay.push(p, "z", 1)
    relay.finish(p, R.FINISH_STOP)
    # A last piece is enough, however many were asked for.
    assert relay.pop_text(16, 1.0, 100) == (R.POP_PIECES, "z", 1, R.FINISH_STOP, p)
    # A full relay wakes its consumer too (its producer waits for room).
    full = R.Relay(capacity=2)
    q = full.attach()
    threading.Thread(target=lambda: [full.push(q, str(i), 1) for i in range(3)]).start()
    status, pieces = full.pop(16, 5.0, 1000)
    assert status == R.POP_PIECES and len(pieces) >= 2


def test_take_all_and_arm_end_after_giving_up() -> None:
    relay = R.Relay(capacity=8, notify=True)
    p = relay.attach()
    relay.set_deadlines(total=0.0)
    relay.push(p, "a", 1)
    relay.push(p, "b", 1)
    assert relay.pop_text(8, 0)[0] == R.POP_TIMEOUT_TOTAL  # the deadline wins over pieces
    assert relay.take_all_text()[1] == "ab"  # ... but what was produced can be salvaged
    assert not relay.arm_end()
    relay.finish(p, R.FINISH_CANCELLED)
    assert select.select([relay.fileno()], [], [], 1.0)[0] == [relay.fileno()]
    assert relay.arm_end()  # every producer finished


# -- deadlines -----------------------------------------------------------------------------------


def test_first_piece_deadline() -> None:
    relay = R.Relay()
    relay.attach()
    relay.set_deadlines(first_piece=0.05, total=5.0)
    t0 = time.monotonic()
    assert relay.pop(8, -1) == (R.POP_TIMEOUT_FIRST, [])
    assert 0.04 <= time.monotonic() - t0 < 2.0


def test_stall_deadline_counts_only_after_the_first_piece() -> None:
    relay = R.Relay()
    p = relay.attach()
    relay.set_deadlines(stall=0.05)
    assert relay.pop(8, 0.1) == (R.POP_EMPTY, [])  # no piece yet: no stall either
    relay.push(p, "a", 1)
    assert relay.pop(8, 0)[0] == R.POP_PIECES
    t0 = time.monotonic()
    assert relay.pop(8, -1) == (R.POP_TIMEOUT_STALL, [])
    assert 0.03 <= time.monotonic() - t0 < 2.0


def test_total_deadline_stops_a_consumer_that_never_runs_dry() -> None:
    relay = R.Relay(capacity=4)
    p = relay.attach()
    relay.set_deadlines(total=0.2)
    R.relay_test_producer(relay, p, 10**9, "x")  # endless, from a C++ thread
    t0 = time.monotonic()
    status = R.POP_PIECES
    while status == R.POP_PIECES:
        status, _ = relay.pop(4, -1)
    assert status == R.POP_TIMEOUT_TOTAL
    assert time.monotonic() - t0 < 3.0
    relay.close()  # the producer's next push fails; its thread ends


def test_full_relay_refuses_pushes_past_the_total_deadline() -> None:
    # A consumer that stopped reading must not hold its producer (the model) forever.
    relay = R.Relay(capacity=1)
    p = relay.attach()
    relay.set_deadlines(total=0.1)
    assert relay.push(p, "a", 1)
    t0 = time.monotonic()
    assert not relay.push(p, "b", 1)
    assert 0.05 <= time.monotonic() - t0 < 2.0


# -- first-piece race ----------------------------------------------------------------------------


def test_race_first_delivery_wins_and_cancels_the_rest() -> None:
    relay = R.Relay(race=True)
    a, b, c = relay.attach(), relay.attach(), relay.attach()
    assert relay.push(b, "b0", 1)
    assert relay.winner == b
    assert relay.cancelled(a) and relay.cancelled(c) and not relay.cancelled(b)
    assert not relay.push(a, "a0", 1)
    assert relay.push(b, "b1", 1)
    for x in (a, c):
        assert not relay.finish(x, R.FINISH_CANCELLED)
    relay.finish(b, R.FINISH_STOP)
    status, got = _drain(relay)
    assert status == R.POP_END
    assert [(t, prod) for t, _, _, prod in got] == [("b0", b), ("b1", b), ("", b)]


def test_race_failures_wait_for_the_others() -> None:
    relay = R.Relay(race=True)
    a, b = relay.attach(), relay.attach()
    relay.finish(a, R.FINISH_ERROR, "connection refused")
    assert relay.pop(8, 0) == (R.POP_EMPTY, [])  # b may still win
    relay.push(b, "hello", 1)
    relay.finish(b, R.FINISH_STOP)
    status, got = _drain(relay)
    assert [p[0] for p in got] == ["hello", ""] and relay.winner == b


def test_race_all_failed_delivers_every_failure() -> None:
    relay = R.Relay(race=True)
    a, b = relay.attach(), relay.attach()
    relay.finish(a, R.FINISH_ERROR, "refused")
    relay.finish(b, R.FINISH_CONTEXT_FULL, "900 512")
    status, got = _drain(relay)
    assert status == R.POP_END and relay.winner == -1
    assert got == [("refused", 0, R.FINISH_ERROR, a), ("900 512", 0, R.FINISH_CONTEXT_FULL, b)]


def test_race_between_threads_has_exactly_one_winner() -> None:
    for _ in range(20):
        relay = R.Relay(capacity=4, race=True)
        ids = [relay.attach() for _ in range(8)]
        barrier = threading.Barrier(len(ids))

        def produce(p: int) -> None:
            barrier.wait(5)
            for i in range(50):
                if not relay.push(p, f"{p}:{i}", 1):
                    break
            relay.finish(p, R.FINISH_STOP if not relay.cancelled(p) else R.FINISH_CANCELLED)

        threads = [threading.Thread(target=produce, args=(p,)) for p in ids]
        for t in threads:
            t.start()
        status, got = _drain(relay)
        for t in threads:
            t.join(5)
        assert status == R.POP_END
        assert {prod for *_, prod in got} == {relay.winner}
        assert [g[0] for g in got[:-1]] == [f"{relay.winner}:{i}" for i in range(50)]


# -- async wake-ups ------------------------------------------------------------------------------


def test_notify_fd_becomes_readable_only_when_armed() -> None:
    relay = R.Relay(notify=True)
    p = relay.attach()
    fd = relay.fileno()
    assert fd >= 0
    relay.push(p, "a", 1)  # not armed: no wake-up needed, the consumer will poll
    assert select.select([fd], [], [], 0)[0] == []
    assert relay.poll_text_async(8)[:2] == (R.POP_PIECES, "a")
    status, *_, wait_s = relay.poll_text_async(8)  # nothing: arms the fd
    assert status == R.POP_EMPTY and wait_s < 0
    relay.push(p, "b", 1)
    assert select.select([fd], [], [], 1.0)[0] == [fd]
    relay.drain_fd()
    assert select.select([fd], [], [], 0)[0] == []
    assert relay.poll_text_async(8)[:2] == (R.POP_PIECES, "b")


def test_async_consumer_never_blocks_the_event_loop() -> None:
    async def main() -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        relay = R.Relay(capacity=4, notify=True)
        p = relay.attach()
        relay.set_deadlines(total=10)
        wake: list[asyncio.Future[None]] = []

        def readable() -> None:
            relay.drain_fd()
            if wake and not wake[0].done():
                wake[0].set_result(None)

        loop.add_reader(relay.fileno(), readable)

        def produce() -> None:
            for i in range(20):
                time.sleep(0.005)
                relay.push(p, f"{i},", 1)
            relay.finish(p, R.FINISH_STOP)

        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.002)

        tick_task = asyncio.create_task(ticker())
        threading.Thread(target=produce).start()
        text = []
        try:
            while True:
                status, piece, _, finish, _, _ = relay.poll_text_async(64)
                if status == R.POP_EMPTY:
                    wake[:] = [loop.create_future()]
                    await asyncio.wait_for(wake[0], 5)
                    continue
                assert status == R.POP_PIECES
                text.append(piece)
                if finish:
                    break
        finally:
            loop.remove_reader(relay.fileno())
            tick_task.cancel()
        return "".join(text), ticks

    text, ticks = asyncio.run(main())
    assert text == "".join(f"{i}," for i in range(20))
    assert ticks >= 10  # the loop kept running while the consumer waited


# -- properties ----------------------------------------------------------------------------------


@st.composite
def _scenarios(draw: Any) -> dict[str, Any]:
    n = draw(st.integers(1, 8))
    return {
        "capacity": draw(st.integers(1, 8)),
        "counts": [draw(st.integers(0, 40)) for _ in range(n)],
        # producer -> cancel it once this many of its pieces were received (None: never)
        "cancel_after": [draw(st.none() | st.integers(0, 40)) for _ in range(n)],
        "close_after": draw(st.none() | st.integers(0, 100)),
        "batch": draw(st.integers(1, 16)),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenarios())
def test_every_piece_once_in_order_and_nothing_after_close(sc: dict[str, Any]) -> None:
    relay = R.Relay(capacity=sc["capacity"])
    ids = [relay.attach() for _ in sc["counts"]]
    accepted: dict[int, list[str]] = {p: [] for p in ids}
    rng = random.Random(sc["seed"])

    def produce(p: int, n: int, jitter: bool) -> None:
        for i in range(n):
            text = f"{p}:{i}"
            if not relay.push(p, text, 1):
                break
            accepted[p].append(text)
            if jitter and i % 7 == 0:
                time.sleep(0.0005)
        relay.finish(p, R.FINISH_STOP)

    threads = [threading.Thread(target=produce, args=(p, n, rng.random() < 0.5))
               for p, n in zip(ids, sc["counts"])]
    for t in threads:
        t.start()

    received: dict[int, list[str]] = {p: [] for p in ids}
    finished: set[int] = set()
    total = 0
    closed = False
    status = R.POP_PIECES
    while status == R.POP_PIECES:
        status, pieces = relay.pop(sc["batch"], 10.0)
        if closed:
            assert (status, pieces) == (R.POP_CLOSED, [])  # nothing after close, ever
            break
        for text, tokens, finish, p in pieces:
            assert p not in finished  # nothing from a producer after its last piece
            if finish:
                finished.add(p)
                continue
            received[p].append(text)
            total += 1
            limit = sc["cancel_after"][p]
            if limit is not None and len(received[p]) >= limit:
                relay.cancel(p)
        if sc["close_after"] is not None and total >= sc["close_after"]:
            relay.close()
            closed = True
            status = R.POP_PIECES  # read once more: it must say CLOSED
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    if closed:
        assert relay.pop(8, 0) == (R.POP_CLOSED, [])
        for p in ids:  # what arrived is an in-order prefix of what was accepted
            assert received[p] == accepted[p][: len(received[p])]
    else:
        assert status == R.POP_END
        for p in ids:  # exactly once, in order: what the producer was told was queued
            assert received[p] == accepted[p]
            expected_prefix = [f"{p}:{i}" for i in range(len(accepted[p]))]
            assert accepted[p] == expected_prefix


def test_spinner_burns_cpu_without_the_gil_and_stops() -> None:
    # bench_decode's control load: a C++ thread that spins while Python threads keep running.
    spinner = _core.Spinner()
    c0 = time.process_time()
    time.sleep(0.3)  # this thread uses no CPU: what the process burns is the spinner's
    burnt = time.process_time() - c0
    t0, ticks = time.monotonic(), 0
    while time.monotonic() - t0 < 0.1:
        ticks += 1  # Python runs meanwhile: the spinner never asks for the GIL
    spinner.stop()
    assert burnt > 0.1 and ticks > 1_000
    spinner.stop()  # idempotent
    c1 = time.process_time()
    time.sleep(0.2)
    assert time.process_time() - c1 < 0.1  # stopped: no more CPU
