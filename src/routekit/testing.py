"""Test doubles for code built on routekit: a clock you move by hand and a scripted provider.

    from routekit import Router
    from routekit.testing import FakeClock, FakeProvider, FakeReply

    clock = FakeClock()
    router = Router(config, clock=clock, health_probes=False,
                    providers={"ollama": FakeProvider("ollama", replies=[FakeReply(delay=60)],
                                                      clock=clock)})

Deadlines, retry waits, breaker open times and probe schedules all run on the router's
clock, so tests of timed behaviour take no real time and never flake.
"""

from __future__ import annotations

from ._clock import Clock, FakeClock, SystemClock
from .providers.fake import FakeCall, FakeProvider, FakeReply

__all__ = ["Clock", "FakeCall", "FakeClock", "FakeProvider", "FakeReply", "SystemClock"]
