"""The request pipeline on a fake clock: retries, deadlines, first-byte shares, streams,
argument checks. Providers are ``routekit.testing.FakeProvider`` doubles, so every timed
behaviour is exact and takes no real time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from routekit import (
    AllCandidatesFailed, AsyncRouter, BadRequest, ConnectionFailed, RateLimited,
    RequestTimeout, Router, ServerError, StreamInterrupted,
)
from routekit.testing import FakeClock, FakeProvider, FakeReply

MSG = [{"role": "user", "content": "hi"}]
MODES = ["sync", "async"]


def config(n: int = 2, *, kind: str = "ollama", routing: dict[str, Any] | None = None,
           provider_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """m0 → m1 → ... each on its own provider p<i> of ``kind``."""
    names = [f"m{i}" for i in range(n)]
    providers = {f"p{i}": {"kind": kind, **(provider_extra or {})} for i in range(n)}
    if kind == "openai":
        for p in providers.values():
            p["api_key_env"] = "HOME"
    return {
        "providers": providers,
        "models": {m: {"provider": f"p{i}"} for i, m in enumerate(names)},
        "fallback_chains": {names[0]: {"chain": names[1:]}},
        "routing": routing or {},
    }


class Rig:
    """A router on a fake clock with one FakeProvider per provider name."""

    def __init__(self, cfg: dict[str, Any], *, mode: str = "sync", **replies: list[Any]) -> None:
        self.clock = FakeClock()
        self.fakes = {name: FakeProvider(name, cfg["providers"][name]["kind"],
                                         replies=replies.get(name, []), clock=self.clock)
                      for name in cfg["providers"]}
        self.mode = mode
        cls = Router if mode == "sync" else AsyncRouter
        self.router: Any = cls(cfg, clock=self.clock, providers=self.fakes, health_probes=False)

    def ask(self, model: str = "m0", **kw: Any) -> Any:
        if self.mode == "sync":
            return self.router.chat.completions.create(model=model, messages=MSG, **kw)

        async def go() -> Any:
            return await self.router.chat.completions.create(model=model, messages=MSG, **kw)

        return asyncio.run(go())

    def stream_text(self, model: str = "m0", **kw: Any) -> tuple[str, Any]:
        if self.mode == "sync":
            with self.router.chat.completions.create(model=model, messages=MSG, stream=True,
                                                     **kw) as s:
                return s.text(), s.route

        async def go() -> tuple[str, Any]:
            s = await self.router.chat.completions.create(model=model, messages=MSG,
                                                          stream=True, **kw)
            async with s:
                return await s.text(), s.route

        return asyncio.run(go())

    def calls(self, name: str) -> int:
        return len(self.fakes[name].calls)


def err503() -> ServerError:
    return ServerError("503", status_code=503, provider="p", model="m")


# ---------------------------------------------------------------- retry timing (defect 2)


@pytest.mark.parametrize("mode", MODES)
def test_backoff_waits_before_each_retry_not_one_attempt_late(mode: str) -> None:
    cfg = config(1, routing={"retry": {"last_candidate_attempts": 3, "backoff_initial": 0.5,
                                       "backoff_max": 10, "jitter": 0}})
    rig = Rig(cfg, mode=mode, p0=[err503(), err503(), "fine"])
    reply = rig.ask()
    assert reply.choices[0].message.content == "fine"
    assert rig.clock.sleeps == [0.5, 1.0]  # was [0.0, 0.5]
    assert reply.route.attempts[0].tries == 3


@pytest.mark.parametrize("mode", MODES)
def test_retry_after_is_waited_for(mode: str) -> None:
    cfg = config(1, routing={"retry": {"retry_after_cap": 2, "backoff_initial": 0.01}})
    limited = RateLimited("429", provider="p0", model="m0", retry_after=1.0)
    rig = Rig(cfg, mode=mode, p0=[limited, limited, "fine"])
    rig.ask()
    assert rig.clock.sleeps == [1.0, 1.0]  # was retried at once


@pytest.mark.parametrize("mode", MODES)
def test_retry_after_over_the_cap_moves_on_at_once(mode: str) -> None:
    cfg = config(2, routing={"retry": {"retry_after_cap": 2}})
    rig = Rig(cfg, mode=mode, p0=[RateLimited("429", retry_after=30.0)], p1=["fallback"])
    reply = rig.ask()
    assert reply.route.answered_by.model == "m1"
    assert rig.clock.sleeps == [] and rig.calls("p0") == 1


def test_jitter_stays_within_its_bound() -> None:
    cfg = config(1, routing={"retry": {"last_candidate_attempts": 6, "backoff_initial": 0.1,
                                       "backoff_max": 0.4, "jitter": 0.05}})
    rig = Rig(cfg, p0=[err503()] * 5 + ["fine"])
    rig.ask()
    bases = [0.1, 0.2, 0.4, 0.4, 0.4]
    assert len(rig.clock.sleeps) == 5
    for slept, base in zip(rig.clock.sleeps, bases):
        assert base <= slept <= base + 0.05


@pytest.mark.parametrize("mode", MODES)
def test_no_retry_sleeps_past_the_deadline(mode: str) -> None:
    cfg = config(1, routing={"retry": {"last_candidate_attempts": 10, "backoff_initial": 1.0,
                                       "backoff_max": 8, "jitter": 0}})
    rig = Rig(cfg, mode=mode, p0=[err503()] * 10)
    with pytest.raises(AllCandidatesFailed):
        rig.ask(timeout=5.0)
    # waits 1, 2 (t=3); the next (4) would end at t=7 > 5: stop instead of sleeping.
    assert rig.clock.sleeps == [1.0, 2.0]
    assert rig.calls("p0") == 3


@pytest.mark.parametrize("mode", MODES)
def test_refused_connection_is_not_retried(mode: str) -> None:
    cfg = config(2)
    rig = Rig(cfg, mode=mode, p0=[ConnectionFailed("refused", refused=True)], p1=["b"])
    assert rig.ask().route.answered_by.model == "m1"
    assert rig.calls("p0") == 1 and rig.clock.sleeps == []


# ---------------------------------------------------------------- deadlines (defect 1)


@pytest.mark.parametrize("mode", MODES)
def test_a_hung_first_candidate_leaves_time_for_the_fallback(mode: str) -> None:
    """create(timeout=2): m0 hangs; it may wait at most half the budget for its first byte,
    then m1 answers inside the budget (it used to fail after 2.0 s, m1 skipped)."""
    rig = Rig(config(2), mode=mode, p0=[FakeReply(delay=3600)], p1=["from m1"])
    t0 = rig.clock.now()
    reply = rig.ask(timeout=2)
    assert reply.choices[0].message.content == "from m1"
    first, second = reply.route.attempts
    assert first.error_type == "RequestTimeout" and "no first byte" in (first.error or "")
    assert rig.fakes["p0"].calls[0].deadline.first_byte == pytest.approx(1.0)
    assert rig.clock.now() - t0 == pytest.approx(1.0)
    assert rig.calls("p0") == 1  # a timeout is not retried while m1 remains
    assert second.outcome == "ok"


@pytest.mark.parametrize("mode", MODES)
def test_hung_first_candidate_with_default_settings(mode: str) -> None:
    """Defaults: m0 (ollama) is abandoned at its 10 s first-byte deadline, not after two 60 s
    read timeouts; m1 answers."""
    rig = Rig(config(2), mode=mode, p0=[FakeReply(delay=3600)], p1=["from m1"])
    t0 = rig.clock.now()
    reply = rig.ask()
    assert reply.route.answered_by.model == "m1"
    assert rig.clock.now() - t0 == pytest.approx(10.0)


def test_the_last_candidate_may_use_the_whole_remaining_budget() -> None:
    rig = Rig(config(2), p0=[ConnectionFailed("refused", refused=True)],
              p1=[FakeReply(delay=3.0, text="slow but fine")])
    reply = rig.ask(timeout=4)
    assert reply.choices[0].message.content == "slow but fine"
    deadline = rig.fakes["p1"].calls[0].deadline
    assert deadline.total == pytest.approx(4.0) and deadline.first_byte == pytest.approx(10.0)


def test_timeout_is_retried_on_the_last_candidate() -> None:
    cfg = config(1, routing={"retry": {"backoff_initial": 0.1, "jitter": 0}})
    rig = Rig(cfg, p0=[RequestTimeout("slow"), "ok now"])
    assert rig.ask().choices[0].message.content == "ok now"
    assert rig.calls("p0") == 2


def test_first_byte_share_is_configurable() -> None:
    cfg = config(2, routing={"first_byte_share": 0.25})
    rig = Rig(cfg, p0=[FakeReply(delay=3600)], p1=["b"])
    rig.ask(timeout=8)
    assert rig.fakes["p0"].calls[0].deadline.first_byte == pytest.approx(2.0)


def test_provider_first_byte_setting_and_false() -> None:
    cfg = config(2, provider_extra={"timeout": {"first_byte": 2.5}})
    rig = Rig(cfg, p0=[FakeReply(delay=3600)], p1=["b"])
    rig.ask()
    assert rig.fakes["p0"].calls[0].deadline.first_byte == pytest.approx(2.5)
    cfg = config(2, provider_extra={"timeout": {"first_byte": False}},
                 routing={"deadline": 30})
    rig = Rig(cfg, p0=["a"])
    rig.ask()
    # off: only the share of the budget bounds a non-last candidate's first byte
    assert rig.fakes["p0"].calls[0].deadline.first_byte == pytest.approx(15.0)


# ---------------------------------------------------------------- streams (defect 8)


@pytest.mark.parametrize("mode", MODES)
def test_a_role_only_first_chunk_does_not_commit_the_stream(mode: str) -> None:
    reset = ConnectionFailed("reset after the role chunk")
    broken = FakeReply(text="never", fail_after=0, error=reset)
    rig = Rig(config(2), mode=mode, p0=[broken, broken], p1=["the fallback speaks"])
    text, route = rig.stream_text()
    assert text == "the fallback speaks"
    assert [a.outcome for a in route.attempts] == ["error", "ok"]
    assert route.attempts[0].tries == 2  # a reset is worth one retry, then m1


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_that_breaks_after_text_raises_with_the_partial(mode: str) -> None:
    reset = ConnectionFailed("reset mid-answer")
    rig = Rig(config(2), mode=mode, p0=[FakeReply(text="one two three four", fail_after=2,
                                                  error=reset)])
    with pytest.raises(StreamInterrupted) as info:
        rig.stream_text()
    assert info.value.partial == "one two"
    assert info.value.route is not None
    assert [a.outcome for a in info.value.route.attempts] == ["error"]
    assert rig.calls("p1") == 0  # committed: no fallback splices another answer on


@pytest.mark.parametrize("mode", MODES)
def test_stream_first_byte_deadline_falls_back(mode: str) -> None:
    rig = Rig(config(2), mode=mode, p0=[FakeReply(delay=3600)], p1=["b"])
    text, route = rig.stream_text(timeout=6)
    assert text == "b" and route.attempts[0].error_type == "RequestTimeout"
    assert route.answered_by.ttfb_ms is not None


# ---------------------------------------------------------------- arguments (defect 5)


@pytest.mark.parametrize("kw,fragment", [
    ({"timeout": "abc"}, "timeout must be a number of seconds"),
    ({"timeout": -1}, "timeout must be a positive number"),
    ({"extra_body": "x"}, "extra_body must be a mapping"),
    ({"extra_headers": ["x"]}, "extra_headers must be a mapping"),
    ({"model": None}, "model must be the name of a model"),
    ({"model": 123}, "model must be the name of a model"),
    ({"model": ["m0"]}, "model must be the name of a model"),
    ({"messages": "hi"}, "messages must be a list"),
    ({"top_logprobs": 50}, "top_logprobs must be a whole number from 0 to 20"),
])
@pytest.mark.parametrize("mode", MODES)
def test_wrong_types_are_bad_requests_naming_the_argument(kw: dict[str, Any], fragment: str,
                                                          mode: str) -> None:
    rig = Rig(config(1), mode=mode)
    args: dict[str, Any] = {"model": "m0", "messages": MSG, **kw}
    with pytest.raises(BadRequest) as info:
        if mode == "sync":
            rig.router.chat.completions.create(**args)
        else:
            asyncio.run(rig.router.chat.completions.create(**args))
    assert fragment in str(info.value)
    assert rig.calls("p0") == 0


def test_httpx_timeout_sets_per_attempt_phases() -> None:
    from routekit.providers.http.transport import http_lib

    mod = http_lib()  # httpx under openai 1.x/2.x, httpx2 under 3.x
    rig = Rig(config(1, routing={"deadline": 30}))
    rig.ask(timeout=mod.Timeout(4.0, connect=1.5))
    deadline = rig.fakes["p0"].calls[0].deadline
    assert (deadline.connect, deadline.read, deadline.total) == (1.5, 4.0, 30.0)


def test_openai_not_given_and_omit_mean_not_given() -> None:
    import openai

    sentinels = [openai.NOT_GIVEN] + ([openai.omit] if hasattr(openai, "omit") else [])
    rig = Rig(config(1))
    for s in sentinels:
        rig.ask(temperature=s, max_tokens=s, top_p=s, n=s, timeout=s, extra_body=s)
    for call in rig.fakes["p0"].calls:
        assert call.request.params == {}
        assert call.request.extra_body is None


# ---------------------------------------------------------------- route and price


def test_route_carries_cost_at_the_configured_price() -> None:
    cfg = config(1)
    cfg["models"]["m0"]["price"] = {"input_per_1k": 1.0, "output_per_1k": 2.0}
    rig = Rig(cfg, p0=["four words right here"])
    reply = rig.ask()
    usage = reply.usage
    expected = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1000
    assert reply.route.cost_usd == pytest.approx(expected)
    assert reply.route.as_dict()["cost_usd"] == pytest.approx(expected)
    assert Rig(config(1)).ask().route.cost_usd is None  # no price, no cost
    # A free model (a local one) costs 0.0, not "unknown": sums across a chain need it.
    free = config(1)
    free["models"]["m0"]["price"] = {"input_per_1k": 0, "output_per_1k": 0}
    assert Rig(free).ask().route.cost_usd == 0.0


def test_model_defaults_reach_the_provider_under_the_callers_params() -> None:
    cfg = config(1)
    cfg["models"]["m0"]["defaults"] = {"temperature": 0.2, "max_tokens": 9}
    rig = Rig(cfg)
    rig.ask(temperature=0.7)
    assert rig.fakes["p0"].calls[0].request.params == {"temperature": 0.7, "max_tokens": 9}

