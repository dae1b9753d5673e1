"""Bulkheads: at most N calls in flight on one provider (or one router), M more waiting.

Owns ``Bulkhead``, a counting gate shared by threads and asyncio tasks alike: a slot is
taken at once when one is free; otherwise the caller may wait in a FIFO queue of at most
``max_waiting`` entries, for at most the time it is given; past that it is refused at once.
A released slot goes straight to the oldest waiter, so a newcomer never overtakes the queue.
This is the thundering-herd guard: when a chain's first server dies, its fallback receives
everything, and a bulkhead spills the excess to the next candidate instead of piling it up.

Must not know about providers, plans or errors: callers turn a refusal into ``ProviderBusy``
or ``Overloaded``.

Thread safety: one lock guards the counters and the queue; waiters are woken with a
``threading.Event`` (threads) or through their event loop (tasks).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = ["Bulkhead"]


class _Waiter:
    __slots__ = ("granted", "event", "loop", "future")

    def __init__(self) -> None:
        self.granted = False
        self.event: threading.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
        elif self.loop is not None and self.future is not None:
            fut = self.future
            try:
                self.loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # its loop is closed; nobody waits any more
                pass


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Bulkhead:
    """``max_concurrency`` slots and a queue of ``max_waiting`` (0: refuse at once)."""

    __slots__ = ("name", "max_concurrency", "max_waiting", "in_flight", "_waiters", "_lock",
                 "refused")

    def __init__(self, name: str, max_concurrency: int, max_waiting: int = 0) -> None:
        self.name = name
        self.max_concurrency = max_concurrency
        self.max_waiting = max_waiting
        self.in_flight = 0
        self.refused = 0  # how many callers were turned away, for health() and metrics
        self._waiters: deque[_Waiter] = deque()
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_enter(self) -> bool:
        """Take a free slot now, or return False (never waits, never queues)."""
        with self._lock:
            if self.in_flight < self.max_concurrency and not self._waiters:
                self.in_flight += 1
                return True
            return False

    def _join(self, timeout: float, waiter: _Waiter) -> bool | None:
        """Take a free slot (True), refuse (False), or queue ``waiter`` (None)."""
        with self._lock:
            if self.in_flight < self.max_concurrency and not self._waiters:
                self.in_flight += 1
                return True
            if len(self._waiters) >= self.max_waiting or timeout <= 0:
                self.refused += 1
                return False
            self._waiters.append(waiter)
            return None

    def enter(self, timeout: float) -> bool:
        """Take a slot, waiting in the queue up to ``timeout`` seconds. False: refused (the
        queue was full, or the wait ran out)."""
        if self.try_enter():  # the common case: no waiter to build
            return True
        waiter = _Waiter()
        waiter.event = threading.Event()
        joined = self._join(timeout, waiter)
        if joined is not None:
            return joined
        try:
            waiter.event.wait(timeout)
        except BaseException:  # interrupted (Ctrl-C, an alarm): give back what was granted
            if self._settle(waiter, refused=False):
                self.leave()
            raise
        return self._settle(waiter)

    async def aenter(self, timeout: float) -> bool:
        """``enter`` for asyncio tasks: waits without blocking the event loop."""
        if self.try_enter():
            return True
        import asyncio
        waiter = _Waiter()
        waiter.loop = asyncio.get_running_loop()
        waiter.future = waiter.loop.create_future()
        joined = self._join(timeout, waiter)
        if joined is not None:
            return joined
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), timeout)
        except asyncio.TimeoutError:
            pass
        except BaseException:  # cancelled: give back whatever we were granted, then go
            if not self._settle(waiter, refused=False):  # it gave up; it was not refused
                raise
            self.leave()
            raise
        return self._settle(waiter)

    def leave(self) -> None:
        """Give a slot back; the oldest waiter gets it."""
        with self._lock:
            if self._waiters:
                waiter = self._waiters.popleft()
                waiter.granted = True  # the slot passes on: in_flight stays the same
            else:
                self.in_flight -= 1
                return
        waiter.wake()

    def _settle(self, waiter: _Waiter, *, refused: bool = True) -> bool:
        """After a wait: granted, or leave the queue (counted as refused when its wait ran
        out, not when its caller gave up)."""
        with self._lock:
            if waiter.granted:
                return True
            try:
                self._waiters.remove(waiter)
            except ValueError:  # pragma: no cover - granted between wake and lock
                return True
            if refused:
                self.refused += 1
            return False

    def describe(self) -> str:
        return (f"{self.in_flight} of {self.max_concurrency} in flight, {self.waiting} of "
                f"{self.max_waiting} waiting")

    def as_dict(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "max_concurrency": self.max_concurrency,
                "waiting": self.waiting, "max_waiting": self.max_waiting,
                "refused": self.refused}

    def __repr__(self) -> str:
        return f"Bulkhead({self.name!r}: {self.describe()})"
