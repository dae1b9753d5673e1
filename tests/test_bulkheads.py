"""Bulkheads: provider max_concurrency/max_waiting and the router-wide limit, under 100
concurrent callers, sync and async (the thundering-herd guard)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from test_pipeline import MSG, config

from routekit import AsyncRouter, Overloaded, Router
from routekit._policy.bulkheads import Bulkhead
from routekit.testing import FakeProvider, FakeReply


def test_slots_queue_and_refusals() -> None:
    b = Bulkhead("p", 2, 1)
    assert b.try_enter() and b.try_enter() and not b.try_enter()
    got: list[bool] = []
    waiter = threading.Thread(target=lambda: got.append(b.enter(5.0)))
    waiter.start()
    while b.waiting == 0:
        time.sleep(0.001)
    assert not b.enter(5.0)  # the queue (1) is full: refused at once
    b.leave()  # the slot passes to the waiter
    waiter.join(5)
    assert got == [True] and b.in_flight == 2 and b.waiting == 0
    t0 = time.monotonic()
    assert not b.enter(0.05)  # waits its time, then gives up
    assert time.monotonic() - t0 >= 0.04
    assert b.refused == 2


def test_fifo_hand_off_between_threads_and_tasks() -> None:
    b = Bulkhead("p", 1, 4)
    assert b.try_enter()
    order: list[str] = []

    def thread_waiter(name: str) -> None:
        if b.enter(5.0):
            order.append(name)
            b.leave()

    async def task_waiter() -> None:
        if await b.aenter(5.0):
            order.append("task")
            b.leave()

    async def scenario() -> None:
        t1 = threading.Thread(target=thread_waiter, args=("t1",))
        t1.start()
        while b.waiting < 1:
            await asyncio.sleep(0.001)
        task = asyncio.ensure_future(task_waiter())
        while b.waiting < 2:
            await asyncio.sleep(0.001)
        t2 = threading.Thread(target=thread_waiter, args=("t2",))
        t2.start()
        while b.waiting < 3:
            await asyncio.sleep(0.001)
        b.leave()
        await task
        t1.join(5)
        t2.join(5)

    asyncio.run(scenario())
    assert order == ["t1", "task", "t2"] and b.in_flight == 0


def _spill_config(max_waiting: int | None = None) -> dict[str, Any]:
    cfg = config(2)
    cfg["providers"]["p0"]["max_concurrency"] = 3
    if max_waiting is not None:
        cfg["providers"]["p0"]["max_waiting"] = max_waiting
    return cfg


class Counting(FakeProvider):
    """Counts how many calls run at once (real time: threads really overlap)."""

    def __init__(self, name: str, hold: float) -> None:
        super().__init__(name, default=FakeReply(text="held", delay=hold))
        self.now = 0
        self.peak = 0
        self._count = threading.Lock()

    def complete(self, request: Any, deadline: Any) -> Any:
        with self._count:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            return super().complete(request, deadline)
        finally:
            with self._count:
                self.now -= 1

    async def acomplete(self, request: Any, deadline: Any) -> Any:
        with self._count:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            return await super().acomplete(request, deadline)
        finally:
            with self._count:
                self.now -= 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_bulkhead_spills_to_the_next_candidate_under_100_concurrent_requests(mode: str) -> None:
    p0 = Counting("p0", hold=0.2)
    p1 = FakeProvider("p1", default="spilled")
    providers = {"p0": p0, "p1": p1}
    results: list[Any] = []
    if mode == "sync":
        router = Router(_spill_config(), providers=providers, health_probes=False)
        threads = [threading.Thread(target=lambda: results.append(
            router.chat.completions.create(model="m0", messages=MSG))) for _ in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        router.close()
    else:
        async def go() -> None:
            async with AsyncRouter(_spill_config(), providers=providers,
                                   health_probes=False) as router:
                results.extend(await asyncio.gather(*(
                    router.chat.completions.create(model="m0", messages=MSG)
                    for _ in range(100))))
        asyncio.run(go())
    assert len(results) == 100
    assert p0.peak <= 3  # never more than max_concurrency on p0
    by_m0 = [r for r in results if r.route.answered_by.model == "m0"]
    spilled = [r for r in results if r.route.answered_by.model == "m1"]
    assert 3 <= len(by_m0) and len(by_m0) + len(spilled) == 100 and spilled
    hop = spilled[0].route.attempts[0]
    assert hop.outcome == "skipped" and hop.error_type == "ProviderBusy"
    assert "busy: 3 of 3 in flight" in hop.error
    assert spilled[0].route.attempts[0].duration_ms == 0.0


def test_max_waiting_queues_instead_of_spilling() -> None:
    p0 = Counting("p0", hold=0.05)
    p1 = FakeProvider("p1", default="spilled")
    router = Router(_spill_config(max_waiting=100), providers={"p0": p0, "p1": p1},
                    health_probes=False)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(
        router.chat.completions.create(model="m0", messages=MSG))) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    router.close()
    assert p0.peak <= 3 and all(r.route.answered_by.model == "m0" for r in results)
    assert len(p1.calls) == 0


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_router_limit_refuses_with_overloaded(mode: str) -> None:
    cfg = config(1, routing={"limits": {"max_concurrency": 2}})
    p0 = Counting("p0", hold=0.3)
    outcomes: list[str] = []
    if mode == "sync":
        router = Router(cfg, providers={"p0": p0}, health_probes=False)

        def call() -> None:
            try:
                router.chat.completions.create(model="m0", messages=MSG)
                outcomes.append("ok")
            except Overloaded as exc:
                assert "routing.limits" in str(exc)
                outcomes.append("overloaded")

        threads = [threading.Thread(target=call) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        router.close()
    else:
        async def go() -> None:
            async with AsyncRouter(cfg, providers={"p0": p0}, health_probes=False) as router:
                async def call() -> None:
                    try:
                        await router.chat.completions.create(model="m0", messages=MSG)
                        outcomes.append("ok")
                    except Overloaded:
                        outcomes.append("overloaded")
                await asyncio.gather(*(call() for _ in range(10)))
        asyncio.run(go())
    assert outcomes.count("ok") >= 2 and outcomes.count("overloaded") >= 1
    assert p0.peak <= 2


def test_a_stream_holds_its_router_slot_until_closed() -> None:
    cfg = config(1, routing={"limits": {"max_concurrency": 1}})
    router = Router(cfg, providers={"p0": FakeProvider("p0", default="a b c")},
                    health_probes=False)
    stream = router.chat.completions.create(model="m0", messages=MSG, stream=True)
    with pytest.raises(Overloaded):
        router.chat.completions.create(model="m0", messages=MSG)
    stream.close()
    assert router.chat.completions.create(model="m0", messages=MSG).choices
    router.close()


def test_a_caller_interrupted_while_queued_gives_its_place_back() -> None:
    # Ctrl-C, or an alarm-based timeout, raised in a sync caller waiting for a slot: the
    # slot must not pass to the caller that is gone (it leaked for good: every later
    # request was refused as Overloaded / ProviderBusy).
    import signal

    class Interrupt(Exception):
        pass

    def interrupt(*_: Any) -> None:
        raise Interrupt

    gate = Bulkhead("p", 1, 4)
    assert gate.try_enter()
    before = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.1)
        with pytest.raises(Interrupt):
            gate.enter(5.0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    assert gate.waiting == 0 and gate.refused == 0  # it gave up; it was not refused
    gate.leave()
    assert gate.in_flight == 0 and gate.try_enter()
