"""Time: the one monotonic source a router reads, injectable so tests can move it by hand.

Owns the ``Clock`` protocol and its two implementations: ``SystemClock`` (``time.monotonic``,
real sleeps) and ``FakeClock`` (time moves only when told to, or when something "sleeps" on
it; every sleep is recorded). Deadlines, retry waits, breaker windows and open times, and
health-probe schedules all read the router's clock. Relative timeouts handed to providers
(``Deadline``) are real seconds: sockets and llama.cpp cannot run on fake time.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock", "SYSTEM_CLOCK"]


@runtime_checkable
class Clock(Protocol):
    """A monotonic clock in seconds, and the two ways to wait on it."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    async def asleep(self, seconds: float) -> None: ...


class SystemClock:
    """``time.monotonic`` and real sleeps. Stateless: one instance serves every router."""

    __slots__ = ()

    now = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        import asyncio  # not at import time: a sync-only application never needs it

        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock that moves only when told to. ``sleep``/``asleep`` advance it at once and
    append the duration to ``sleeps``, so tests see every wait a policy asked for.

    Thread-safe: one lock guards the time and the record.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._t = float(start)
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never back); returns the new time."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds!r} s)")
        with self._lock:
            self._t += seconds
            return self._t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self._t += max(0.0, seconds)

    async def asleep(self, seconds: float) -> None:
        import asyncio

        self.sleep(seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now():.3f})"
