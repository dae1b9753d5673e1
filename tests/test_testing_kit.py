"""``routekit.testing`` as an application's tests use it: a FakeProvider's stalls are cut by
the deadline it was handed, as a real server's are; it takes the router's FakeClock when
built without one; its streams honour include_usage; a script that cannot play is refused
when it is written; a scripted 5xx is retried as a server's is."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from routekit import AllCandidatesFailed, AsyncRouter, Router, StatusError, StreamInterrupted
from routekit.testing import FakeClock, FakeProvider, FakeReply

MSG = [{"role": "user", "content": "hi"}]


def _config(n: int = 2, **timeout: float) -> dict[str, Any]:
    names = [f"m{i}" for i in range(n)]
    return {"providers": {f"p{i}": {"kind": "ollama",
                                    "timeout": {"connect": 1, "read": 2, "total": 30,
                                                **timeout}} for i in range(n)},
            "models": {m: {"provider": f"p{i}"} for i, m in enumerate(names)},
            "fallback_chains": {"m0": {"chain": names[1:]}},
            "routing": {"retry": {"max_attempts": 1, "last_candidate_attempts": 1}}}


def _router(mode: str, config: dict[str, Any], clock: FakeClock, *fakes: FakeProvider) -> Any:
    """A Router or AsyncRouter on ``clock`` serving ``fakes`` (named p0, p1, ...)."""
    cls = Router if mode == "sync" else AsyncRouter
    return cls(config, clock=clock, health_probes=False,
               providers={f.name: f for f in fakes})


def _stream(mode: str, router: Any, **kw: Any) -> tuple[str, Any]:
    if mode == "sync":
        with router.chat.completions.create(model="m0", messages=MSG, stream=True, **kw) as s:
            return s.text(), s.route

    async def go() -> tuple[str, Any]:
        s = await router.chat.completions.create(model="m0", messages=MSG, stream=True, **kw)
        async with s:
            return await s.text(), s.route

    return asyncio.run(go())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stall_before_the_first_text_is_cut_at_read_and_falls_back(mode: str) -> None:
    clock = FakeClock()
    stalled = FakeProvider("p0", replies=[FakeReply(text="never said", chunk_delay=100)],
                           clock=clock)
    router = _router(mode, _config(), clock, stalled, FakeProvider("p1", clock=clock))
    start = time.monotonic()
    text, route = _stream(mode, router)
    assert text == "ok" and route.answered_by.model == "m1"
    first = route.attempts[0]
    assert first.error_type == "RequestTimeout" and "no chunk within 2 s" in first.error
    assert clock.now() - 1000.0 == pytest.approx(2.0)  # read, on the fake clock
    assert time.monotonic() - start < 5.0  # and no real time


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_stall_after_text_ends_the_stream_at_the_attempts_total(mode: str) -> None:
    clock = FakeClock()
    slow = FakeProvider("p0", replies=[FakeReply(text="one two three", chunk_delay=1.5)],
                        clock=clock)
    router = _router(mode, _config(1, total=4), clock, slow)
    with pytest.raises(StreamInterrupted) as info:
        _stream(mode, router)
    assert info.value.partial.startswith("one")
    assert "deadline (4 s) passed while streaming" in str(info.value)


def test_a_provider_without_a_clock_runs_on_the_routers() -> None:
    clock = FakeClock()
    hung = FakeProvider("p0", replies=[FakeReply(delay=20)])  # no clock= here
    router = Router(_config(), clock=clock, providers={"p0": hung, "p1": FakeProvider("p1")},
                    health_probes=False)
    start = time.monotonic()
    reply = router.chat.completions.create(model="m0", messages=MSG, timeout=4)
    assert reply.route.answered_by.model == "m1"
    assert time.monotonic() - start < 5.0 and clock.now() > 1000.0


def test_fake_streams_carry_usage_when_asked() -> None:
    router = Router(_config(1), providers={"p0": FakeProvider("p0", default="a b c")},
                    health_probes=False)
    chunks = list(router.chat.completions.create(
        model="m0", messages=MSG, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert not any(c.usage for c in chunks[:-1])
    text = list(router.completions.create(model="m0", prompt="x", stream=True,
                                          stream_options={"include_usage": True}))
    assert text[-1].usage is not None and text[-1].usage.completion_tokens == 3
    plain = list(router.chat.completions.create(model="m0", messages=MSG, stream=True))
    assert not any(c.usage for c in plain)


def test_fail_after_without_an_error_is_refused_when_written() -> None:
    with pytest.raises(ValueError, match="needs error="):
        FakeReply(text="one two", fail_after=1)


@pytest.mark.parametrize("status,tries", [(500, 2), (503, 2), (429, 2), (404, 1)])
def test_a_scripted_status_error_is_retried_as_its_status_says(status: int,
                                                               tries: int) -> None:
    cfg = _config(1)
    cfg["routing"]["retry"] = {"last_candidate_attempts": 2, "backoff_initial": 0.01,
                               "jitter": 0}
    clock = FakeClock()
    fake = FakeProvider("p0", default=StatusError(f"HTTP {status}", status_code=status),
                        clock=clock)
    router = Router(cfg, clock=clock, providers={"p0": fake}, health_probes=False)
    with pytest.raises(AllCandidatesFailed):
        router.chat.completions.create(model="m0", messages=MSG)
    assert len(fake.calls) == tries
