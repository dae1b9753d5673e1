"""Circuit breakers: the state machine against a reference model (hypothesis), the trip
rules, and what a router does with them (plans skip open candidates, half-open probes,
health probes), all on a fake clock."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from test_pipeline import MSG, Rig, config, err503

from routekit import AsyncRouter, ConnectionFailed, ModelNotFound, RequestTimeout, Router
from routekit._config.model import BreakerConfig
from routekit._policy.breakers import Breaker
from routekit.testing import FakeClock, FakeProvider, FakeReply

REFUSED = ConnectionFailed("refused", refused=True)


# ---------------------------------------------------------------- one breaker


def test_consecutive_failures_trip_and_a_success_resets_the_count() -> None:
    b = Breaker("p", "provider", BreakerConfig(failure_threshold=3), cloud=False)
    for _ in range(2):
        b.on_failure(0.0, "x")
    b.on_success(0.0)
    for _ in range(2):
        b.on_failure(0.0, "x")
    assert b.state == "closed"
    b.on_failure(0.0, "x")
    assert b.state == "open" and "3 consecutive failures" in b.reason


def test_a_failed_probe_opens_only_when_nothing_was_answered_while_it_was_out() -> None:
    b = Breaker("p", "provider", BreakerConfig(failure_threshold=3), cloud=False)
    before = b.successes
    b.on_success(0.0)  # a request through it was answered while the probe was out
    assert b.probe_failed(1.0, "health probe failed: refused", before) is False
    assert b.state == "closed" and b.trips == 0 and b.failures == 0
    # A timed-out probe counts as one failure: three in a row open it ...
    for k in range(2):
        assert b.probe_failed(2.0 + k, "health probe failed: read timeout", b.successes,
                              timed_out=True) is False
    assert b.state == "closed" and b.failures == 2
    assert b.probe_failed(4.0, "health probe failed: read timeout", b.successes,
                          timed_out=True) is True
    assert b.state == "open" and "3 consecutive failures" in b.reason
    # ... a wrong answer or a refused connection opens it at once.
    c = Breaker("p", "provider", BreakerConfig(failure_threshold=3), cloud=False)
    assert c.probe_failed(2.0, "health probe failed: HTTP 503", c.successes) is True
    assert c.state == "open" and "health probe failed" in c.reason
    # Open, nothing answered since: another failing probe, even a timeout, keeps it open
    # and only ever moves the reopen time later.
    reopen = c.reopen_at
    assert c.probe_failed(3.0, "health probe failed: read timeout", c.successes,
                          timed_out=True) is True
    assert c.state == "open" and c.reopen_at >= reopen


def test_refused_trips_local_kinds_at_once_but_not_cloud() -> None:
    local = Breaker("p", "provider", BreakerConfig(), cloud=False)
    local.on_failure(0.0, "refused", refused=True)
    assert local.state == "open" and "refused" in local.reason
    cloud = Breaker("c", "provider", BreakerConfig(), cloud=True)
    cloud.on_failure(0.0, "refused", refused=True)
    assert cloud.state == "closed"
    off = Breaker("p", "provider", BreakerConfig(trip_on_refused=False), cloud=False)
    off.on_failure(0.0, "refused", refused=True)
    assert off.state == "closed"


def test_cloud_rate_mode_needs_enough_calls_in_the_window() -> None:
    b = Breaker("c", "provider", BreakerConfig(), cloud=True)  # 50% of >= 20 in 10 s
    t = 100.0
    for i in range(19):  # 19 failures: not enough calls yet
        b.on_failure(t + i * 0.1, "x")
    assert b.state == "closed"
    b.on_failure(t + 2.0, "x")
    assert b.state == "open" and "20 of 20 calls failed in 10 s" in b.reason


def test_rate_mode_forgets_calls_outside_the_window_and_counts_successes() -> None:
    b = Breaker("c", "provider", BreakerConfig(), cloud=True)
    for i in range(15):
        b.on_failure(0.0 + i * 0.01, "old")
    t = 50.0  # long after: the old failures are out of the window
    for i in range(12):
        b.on_success(t + i * 0.01)
    for i in range(9):
        b.on_failure(t + 1 + i * 0.01, "x")
    assert b.state == "closed"  # 9 of 21 < 50%
    for i in range(3):
        b.on_failure(t + 2 + i * 0.01, "x")
    assert b.state == "open"  # 12 of 24


def test_open_time_doubles_from_5_to_60() -> None:
    b = Breaker("p", "provider", BreakerConfig(), cloud=False)
    now = 0.0
    opens = []
    for _ in range(6):
        b.on_failure(now, "refused", refused=True)
        opens.append(b.reopen_at - now)
        now = b.reopen_at
        assert b.tick(now) and b.state == "half_open"
        assert b.acquire()
        b.on_failure(now, "probe failed")  # half-open failure: open again, longer
        opens.append(b.reopen_at - now)
        now = b.reopen_at
        b.tick(now)
        assert b.acquire()
        b.on_success(now)
        assert b.state == "closed"
    assert opens[:6] == [5, 10, 20, 40, 60, 60]


def test_trips_start_over_after_staying_closed_for_open_max() -> None:
    b = Breaker("p", "provider", BreakerConfig(), cloud=False)
    b.on_failure(0.0, "r", refused=True)
    b.tick(5.0)
    b.acquire()
    b.on_success(5.0)
    b.on_failure(6.0, "r", refused=True)
    assert b.reopen_at - 6.0 == 10  # a flapping server stays out longer
    b.tick(16.0)
    b.acquire()
    b.on_success(16.0)
    b.on_failure(16.0 + 60.0, "r", refused=True)
    assert b.reopen_at - 76.0 == 5  # closed for open_max: back to open_initial


def test_a_second_trip_while_open_moves_reopen_later_never_earlier() -> None:
    """LiteLLM #40130: a failure recorded while open moved the reopen time earlier."""
    b = Breaker("p", "provider", BreakerConfig(open_initial=30, open_max=60), cloud=False)
    b.on_failure(0.0, "r", refused=True)
    first = b.reopen_at
    assert first == 30
    b.on_failure(1.0, "r", refused=True)  # e.g. the all-open fallback attempt failed
    assert b.reopen_at >= first and b.reopen_at == 61
    b.trip(2.0, "health probe failed")
    assert b.reopen_at == 62


def test_half_open_lets_exactly_the_configured_number_of_probes_through() -> None:
    b = Breaker("p", "provider", BreakerConfig(half_open_probes=1), cloud=False)
    b.on_failure(0.0, "r", refused=True)
    assert not b.acquire()  # open
    b.tick(5.0)
    assert b.acquire() and not b.acquire()
    b.release()
    assert b.acquire()
    two = Breaker("p", "provider", BreakerConfig(half_open_probes=2), cloud=False)
    two.on_failure(0.0, "r", refused=True)
    two.tick(5.0)
    assert two.acquire() and two.acquire() and not two.acquire()


def test_probe_passed_opens_the_way_early() -> None:
    b = Breaker("p", "provider", BreakerConfig(), cloud=False)
    b.on_failure(0.0, "r", refused=True)
    b.probe_passed(1.0)
    assert b.state == "half_open"  # the next request tries it, before the 5 s are up
    b.probe_passed(2.0)
    assert b.state == "closed"


# ---------------------------------------------------------------- against a reference model


class Reference:
    """The documented machine, written plainly (no buckets, no locks, no flags)."""

    def __init__(self, cfg: BreakerConfig) -> None:
        self.cfg = cfg
        self.state = "closed"
        self.failures = 0
        self.trips = 0
        self.reopen_at = 0.0
        self.permits = 0
        self.closed_since = float("-inf")

    def _trip(self, now: float) -> None:
        if self.state == "closed" and now - self.closed_since >= self.cfg.open_max:
            self.trips = 0
        self.trips += 1
        dur = min(self.cfg.open_max, self.cfg.open_initial * self.cfg.open_multiplier ** (self.trips - 1))
        self.reopen_at = max(self.reopen_at if self.state == "open" else 0.0, now + dur)
        self.state = "open"
        self.permits = 0

    def _close(self, now: float) -> None:
        self.state, self.failures, self.permits, self.closed_since = "closed", 0, 0, now

    def failure(self, now: float, refused: bool) -> None:
        self.failures += 1
        if self.state == "closed":
            if refused or self.failures >= self.cfg.failure_threshold:
                self._trip(now)
        else:
            self._trip(now)

    def success(self, now: float) -> None:
        self.failures = 0
        if self.state != "closed":
            self._close(now)

    def tick(self, now: float) -> None:
        if self.state == "open" and now >= self.reopen_at:
            self.state, self.permits = "half_open", 0

    def acquire(self) -> bool:
        if self.state == "closed":
            return True
        if self.state == "half_open" and self.permits < self.cfg.half_open_probes:
            self.permits += 1
            return True
        return False

    def release(self) -> None:
        if self.permits > 0:
            self.permits -= 1

    def probe_passed(self, now: float) -> None:
        if self.state == "open":
            self.state, self.permits = "half_open", 0
        elif self.state == "half_open" and self.permits == 0:
            self._close(now)


class BreakerMachine(RuleBasedStateMachine):
    @initialize(threshold=st.integers(1, 4), probes=st.integers(1, 2),
                initial=st.sampled_from([1.0, 5.0]), cap=st.sampled_from([5.0, 20.0, 60.0]))
    def setup(self, threshold: int, probes: int, initial: float, cap: float) -> None:
        cfg = BreakerConfig(failure_threshold=threshold, half_open_probes=probes,
                            open_initial=initial, open_max=max(cap, initial), mode="consecutive")
        self.real = Breaker("p", "provider", cfg, cloud=False)
        self.ref = Reference(cfg)
        self.now = 0.0

    @rule(dt=st.floats(0, 30, allow_nan=False))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(refused=st.booleans())
    def failure(self, refused: bool) -> None:
        self.real.on_failure(self.now, "x", refused=refused)
        self.ref.failure(self.now, refused)

    @rule()
    def success(self) -> None:
        self.real.on_success(self.now)
        self.ref.success(self.now)

    @rule()
    def tick(self) -> None:
        self.real.tick(self.now)
        self.ref.tick(self.now)

    @rule()
    def acquire(self) -> None:
        assert self.real.acquire() == self.ref.acquire()

    @rule()
    def release(self) -> None:
        self.real.release()
        self.ref.release()

    @rule()
    def probe_passed(self) -> None:
        self.real.probe_passed(self.now)
        self.ref.probe_passed(self.now)

    @rule()
    def trip(self) -> None:
        self.real.trip(self.now, "probe failed")
        self.ref._trip(self.now)

    @invariant()
    def same(self) -> None:
        if not hasattr(self, "real"):
            return
        assert self.real.state == self.ref.state
        assert self.real.trips == self.ref.trips
        if self.ref.state == "open":
            assert self.real.reopen_at == pytest.approx(self.ref.reopen_at)


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# ---------------------------------------------------------------- in a router


def breaker_cfg(n: int = 2, **breaker: Any) -> dict[str, Any]:
    return config(n, routing={"breaker": {"failure_threshold": 3, **breaker},
                              "retry": {"max_attempts": 1, "jitter": 0}})


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_open_breaker_takes_the_candidate_out_of_plans(mode: str) -> None:
    rig = Rig(breaker_cfg(), mode=mode, p0=[err503()] * 3)
    for _ in range(3):
        assert rig.ask().route.answered_by.model == "m1"
    assert rig.router.plan("m0") == ["m1"]
    assert not rig.router.graph.is_available("m0")
    reply = rig.ask()
    assert rig.calls("p0") == 3  # not tried any more
    skipped = reply.route.attempts[0]
    assert skipped.outcome == "skipped" and skipped.error_type == "CircuitOpen"
    assert "model breaker open (3 consecutive failures" in skipped.error
    assert "reopens in 5.0 s" in skipped.error


def test_half_open_probe_closes_on_success() -> None:
    rig = Rig(breaker_cfg(), p0=[err503()] * 3 + ["back"])
    for _ in range(3):
        rig.ask()
    # Only the model's breaker opened (a 503 is the model's failure): health says so too.
    health = rig.router.health(probe=False)["p0"]
    assert health.breaker.state == "closed" and health.models[0].state == "open"
    assert not health.ok and rig.router.plan("m0") == ["m1"]
    rig.clock.advance(5.0)
    assert rig.router.plan("m0") == ["m0", "m1"]  # half-open: planned again
    assert rig.ask().choices[0].message.content == "back"
    assert rig.router.health(probe=False)["p0"].models[0].state == "closed"


def test_connection_errors_count_as_failures() -> None:
    """LiteLLM #27362: connection errors did not count towards cooldown."""
    reset = ConnectionFailed("connection reset")
    rig = Rig(breaker_cfg(), p0=[reset] * 3)
    for _ in range(3):
        rig.ask()
    snap = rig.router.health(probe=False)["p0"]
    assert snap.breaker.state == "open"  # a connection error counts against the provider


def test_a_refused_local_provider_trips_at_once_and_takes_all_its_models() -> None:
    cfg = config(2)
    cfg["models"]["m0b"] = {"provider": "p0"}
    cfg["fallback_chains"] = {"m0": {"chain": ["m0b", "m1"]}}
    rig = Rig(cfg, p0=[ConnectionFailed("refused", refused=True)])
    reply = rig.ask()
    assert [a.outcome for a in reply.route.attempts] == ["error", "skipped", "ok"]
    assert "provider breaker open (refused connection" in reply.route.attempts[1].error
    assert rig.router.plan("m0") == ["m1"] and rig.calls("p0") == 1


def test_not_every_error_counts() -> None:
    rig = Rig(breaker_cfg(), p0=[ModelNotFound("404", status_code=404)] * 2 + ["fine"])
    rig.ask(), rig.ask()
    assert rig.router.health(probe=False)["p0"].breaker.state == "closed"
    busy_cfg = breaker_cfg()
    from routekit import ProviderBusy, UnsupportedRequest

    rig = Rig(busy_cfg, p0=[ProviderBusy("full"), UnsupportedRequest("n=2")] * 3)
    for _ in range(6):
        rig.ask()
    assert all(b.state == "closed" for b in rig.router.health(probe=False)["p0"].models)


def test_when_every_candidate_is_open_the_soonest_to_reopen_is_tried() -> None:
    rig = Rig(breaker_cfg(), p0=[ConnectionFailed("refused", refused=True)],
              p1=[ConnectionFailed("refused", refused=True)])
    from routekit import AllCandidatesFailed

    with pytest.raises(AllCandidatesFailed):
        rig.ask()
    rig.clock.advance(1.0)
    rig.fakes["p1"].push(ConnectionFailed("refused", refused=True))
    # p0 tripped at t, p1 at t too, but p1's reopen is later after a second trip now:
    rig.router._state.board.providers["p1"].trip(rig.clock.now(), "again")
    reply = rig.ask()  # nothing is planned, yet one attempt is made: m0 reopens soonest
    assert reply.route.answered_by.model == "m0"
    outcomes = [(a.model, a.outcome) for a in reply.route.attempts]
    assert outcomes == [("m0", "ok")]  # it answered: nothing after it was looked at
    assert rig.router.plan("m0") == ["m0"]  # the success closed m0's breakers


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_open_fallback_is_the_last_resort_once_the_rest_of_the_chain_failed(
        mode: str) -> None:
    # The soak's failure: the fallback's breaker was open (a probe had timed out), the
    # primary died under requests in flight, and they failed with the fallback skipped.
    rig = Rig(breaker_cfg(), mode=mode, p0=[err503()] * 2 + ["after two retries"])
    rig.router._state.board.providers["p1"].trip(rig.clock.now(), "health probe failed")
    assert rig.router.plan("m0") == ["m0"]
    # The primary keeps the last candidate's retries (the open fallback may be down) ...
    reply = rig.ask()
    assert reply.choices[0].message.content == "after two retries"
    assert rig.calls("p1") == 0
    # ... and once they are spent, the open fallback is tried rather than nothing.
    rig.fakes["p0"].push(*[err503()] * 3)
    reply = rig.ask()
    outcomes = [(a.model, a.outcome, a.tries) for a in reply.route.attempts]
    assert outcomes == [("m0", "error", 3), ("m1", "ok", 1)]
    # Its answer closed the fallback's breaker; the primary's three failures opened its own.
    assert rig.router.plan("m0") == ["m1"]
    rig.clock.advance(60.0)
    assert rig.ask().route.answered_by.model == "m0"  # half-open, then closed again
    # While the primary answers, the open fallback is never called.
    rig.router._state.board.providers["p1"].trip(rig.clock.now(), "health probe failed")
    calls = rig.calls("p1")
    assert rig.ask().route.answered_by.model == "m0"
    assert rig.calls("p1") == calls


def test_the_last_resort_takes_any_held_back_candidate_but_never_one_out_by_hand() -> None:
    from routekit import AllCandidatesFailed

    def outcomes(attempts: Any) -> list[tuple[str, str]]:
        return [(a.model, a.outcome) for a in attempts]

    # m1 open in the middle, m2 failing behind it: m1 is tried once m2 has failed; its
    # skipped row gives way to the attempt, in time order.
    rig = Rig(breaker_cfg(3), p0=[err503()], p2=[err503()] * 3)
    rig.router._state.board.providers["p1"].trip(rig.clock.now(), "x")
    assert outcomes(rig.ask().route.attempts) == [("m0", "error"), ("m2", "error"),
                                                  ("m1", "ok")]
    # Taken out by hand, with its breaker open too: never tried, not even as a last resort.
    rig = Rig(breaker_cfg(2), p0=[err503()] * 3)
    rig.router.graph.set_model_available("m1", False)
    rig.router._state.board.providers["p1"].trip(rig.clock.now(), "x")
    with pytest.raises(AllCandidatesFailed) as info:
        rig.ask()
    assert outcomes(info.value.attempts) == [("m0", "error"), ("m1", "skipped")]
    assert rig.calls("p1") == 0
    # Every candidate out (m0 by its breaker, m1 by hand): m0 in its place, m1 never.
    rig = Rig(breaker_cfg(2))
    rig.router.graph.set_model_available("m1", False)
    rig.router._state.board.providers["p0"].trip(rig.clock.now(), "x")
    assert outcomes(rig.ask().route.attempts) == [("m0", "ok")]
    assert rig.calls("p1") == 0


def test_with_every_candidate_open_the_route_still_lists_the_others() -> None:
    # The forced candidate's failure ended the walk before the others were listed.
    from routekit import AllCandidatesFailed

    rig = Rig(breaker_cfg(3), p0=[ConnectionFailed("reset")] * 5)
    board = rig.router._state.board
    for i in range(3):
        board.providers[f"p{i}"].trip(rig.clock.now(), "x")
    with pytest.raises(AllCandidatesFailed) as info:
        rig.ask()
    assert [(a.model, a.outcome) for a in info.value.attempts] == [
        ("m0", "error"), ("m1", "skipped"), ("m2", "skipped")]
    assert rig.calls("p1") == rig.calls("p2") == 0  # one attempt, as every open one gets


def test_a_hand_mark_outlives_the_breaker_of_what_it_marked() -> None:
    # A breaker that closed (or went half-open) used to raise a flag set down by hand.
    rig = Rig(breaker_cfg(2), p0=[err503()] * 3)
    board = rig.router._state.board
    rig.router.graph.set_provider_available("p1", False)
    board.providers["p1"].trip(rig.clock.now(), "probe failed")
    board.providers["p1"].probe_passed(rig.clock.now())  # half-open
    board.providers["p1"].probe_passed(rig.clock.now())  # closed
    assert board.providers["p1"].state == "closed"
    assert rig.router.plan("m0") == ["m0"]
    rig.router.graph.set_provider_available("p1", True)  # back by hand: back in plans
    assert rig.router.plan("m0") == ["m0", "m1"]


def test_a_last_resort_that_cannot_serve_passes_the_turn_on() -> None:
    # m1 reopens sooner but its window is too small for the prompt: m2 gets the turn.
    cfg = breaker_cfg(3)
    cfg["models"]["m1"]["context_window"] = 64
    rig = Rig(cfg, p0=[err503()] * 3)
    board = rig.router._state.board
    board.providers["p2"].trip(rig.clock.now(), "x")
    board.providers["p2"].trip(rig.clock.now(), "again")  # reopens later than p1
    board.providers["p1"].trip(rig.clock.now(), "x")
    reply = rig.router.chat.completions.create(
        model="m0", messages=[{"role": "user", "content": "word " * 400}])
    assert [(a.model, a.outcome) for a in reply.route.attempts] == [
        ("m0", "error"), ("m1", "skipped"), ("m2", "ok")]
    assert rig.calls("p1") == 0


def test_a_failed_last_resort_leaves_its_breaker_as_it_was() -> None:
    # Each request that fell through to the open fallback and failed there re-tripped it:
    # its reopen time went 5 s, 10, 20, ... 160 s in five requests.
    rig = Rig(breaker_cfg(2), p0=[err503()] * 30, p1=[ConnectionFailed("reset")] * 30)
    breaker = rig.router._state.board.providers["p1"]
    breaker.trip(rig.clock.now(), "x")
    reopen, trips = breaker.reopen_at, breaker.trips
    from routekit import AllCandidatesFailed

    for _ in range(5):
        with pytest.raises(AllCandidatesFailed) as info:
            rig.ask()
        assert info.value.attempts[-1].model == "m1"  # tried, as the last resort
    assert (breaker.state, breaker.reopen_at, breaker.trips) == ("open", reopen, trips)


def test_a_last_resort_with_no_time_left_is_not_called_and_stays_skipped() -> None:
    from routekit import AllCandidatesFailed, RequestTimeout

    cfg = breaker_cfg(2)
    cfg["routing"]["deadline"] = 2.0
    late = FakeReply(delay=5.0, error=RequestTimeout("slow", provider="p0", model="m0"))
    rig = Rig(cfg, p0=[late] * 3)
    rig.router._state.board.providers["p1"].trip(rig.clock.now(), "x")
    with pytest.raises(AllCandidatesFailed) as info:
        rig.ask()
    assert [(a.model, a.outcome, a.error_type) for a in info.value.attempts] == [
        ("m0", "error", "RequestTimeout"), ("m1", "skipped", "CircuitOpen")]
    assert rig.calls("p1") == 0


def test_a_half_open_candidate_with_its_probe_out_is_a_last_resort_too() -> None:
    # Half-open with its one permit held by a request in flight: the others used to fail
    # outright, where an open candidate would have been tried.
    rig = Rig(breaker_cfg(2), p0=[err503()] * 3)
    breaker = rig.router._state.board.providers["p1"]
    breaker.trip(rig.clock.now(), "x")
    breaker.probe_passed(rig.clock.now())
    assert breaker.state == "half_open" and breaker.acquire()  # someone's probe is out
    reply = rig.ask()
    assert [(a.model, a.outcome) for a in reply.route.attempts] == [("m0", "error"),
                                                                    ("m1", "ok")]


def test_half_open_under_100_concurrent_callers_lets_exactly_one_probe_through() -> None:
    cfg = breaker_cfg()
    clock = FakeClock()
    gate = threading.Event()
    entered = threading.Event()

    def slow_probe(request: Any) -> str:
        entered.set()
        gate.wait(10)
        return "probe answer"

    p0 = FakeProvider("p0", replies=[ConnectionFailed("refused", refused=True), slow_probe],
                      clock=clock)
    p1 = FakeProvider("p1", clock=clock)
    router = Router(cfg, clock=clock, providers={"p0": p0, "p1": p1}, health_probes=False)
    router.chat.completions.create(model="m0", messages=MSG)  # trips p0 at once
    clock.advance(5.0)  # half-open
    results: list[Any] = []

    def call() -> None:
        results.append(router.chat.completions.create(model="m0", messages=MSG))

    threads = [threading.Thread(target=call) for _ in range(100)]
    for t in threads:
        t.start()
    assert entered.wait(10)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(results) == 100
    assert len(p0.calls) == 2  # the trip, then exactly one probe
    answered = [r.route.answered_by.model for r in results]
    assert answered.count("m0") == 1 and answered.count("m1") == 99
    assert router.health(probe=False)["p0"].breaker.state == "closed"
    router.close()


def test_disabled_breakers_never_trip() -> None:
    rig = Rig(breaker_cfg(enabled=False), p0=[ConnectionFailed("refused", refused=True)] * 5)
    for _ in range(5):
        rig.ask()
    assert rig.calls("p0") == 5 and rig.router.plan("m0") == ["m0", "m1"]


def test_per_provider_breaker_settings_override_routing() -> None:
    cfg = breaker_cfg()
    cfg["providers"]["p0"]["breaker"] = {"failure_threshold": 1}
    rig = Rig(cfg, p0=[err503()])
    rig.ask()
    assert rig.router.plan("m0") == ["m1"]
    assert rig.router.health(probe=False)["p1"].breaker.state == "closed"


def test_a_hung_server_is_skipped_once_its_breaker_opens() -> None:
    rig = Rig(breaker_cfg(), p0=[FakeReply(delay=3600)] * 10, p1=["b"] * 10)
    spent = []
    for _ in range(5):
        t0 = rig.clock.now()
        rig.ask()
        spent.append(rig.clock.now() - t0)
    assert spent[:3] == [10.0, 10.0, 10.0]  # three first-byte deadlines, then it trips
    assert spent[3:] == [0.0, 0.0]  # skipped: no waiting for it any more
    assert rig.calls("p0") == 3


# ---------------------------------------------------------------- health probes feed breakers


def test_health_probes_open_and_close_breakers() -> None:
    cfg = config(2, routing={"health": {"interval": 10, "jitter": 0}})
    clock = FakeClock()
    p0 = FakeProvider("p0", clock=clock)
    p1 = FakeProvider("p1", clock=clock)
    router = Router(cfg, clock=clock, providers={"p0": p0, "p1": p1}, health_probes=False)
    monitor = router._state.monitor
    assert sorted(monitor.scheduled) == ["p0", "p1"]
    clock.advance(10.0)
    assert len(monitor.run_due()) == 2 and router.plan("m0") == ["m0", "m1"]
    p0.healthy = False
    clock.advance(10.0)
    monitor.run_due()
    assert router.plan("m0") == ["m1"]  # a failing probe opens the provider's breaker
    snap = router.health(probe=False)["p0"]
    assert snap.breaker.state == "open" and "health probe failed" in snap.breaker.reason
    assert snap.probe is not None and not snap.probe.ok
    p0.healthy = True
    clock.advance(10.0)
    monitor.run_due()
    assert router.plan("m0") == ["m0", "m1"]  # passing: half-open, traffic may return
    clock.advance(10.0)
    monitor.run_due()
    assert router.health(probe=False)["p0"].breaker.state == "closed"
    router.close()


@pytest.mark.parametrize("health", [{"timeout": 5}, {"timeout": 5, "interval": 30}])
def test_health_takes_the_configured_probe_timeout_with_or_without_background_probes(
    health: dict[str, Any]
) -> None:
    # Without an interval (probes are off by default) router.health() probed with 1 s
    # whatever routing.health.timeout said: a field accepted and ignored.
    cfg = config(1, routing={"health": health})
    provider = FakeProvider("p0")
    with Router(cfg, providers={"p0": provider}, health_probes=False) as router:
        router.health()
        router.health(timeout=0.25)  # the caller's own bound still wins
    assert provider.health_timeouts == [5.0, 0.25]


def test_health_reports_a_breaker_half_open_once_its_open_time_is_up() -> None:
    # health(probe=False) of an idle router said "open", ok False, forever after the open
    # time had passed, while plan() and requests treated the breaker as half-open.
    clock = FakeClock()
    provider = FakeProvider("p0", clock=clock)
    cfg = config(1, routing={"breaker": {"failure_threshold": 1}})
    with Router(cfg, clock=clock, providers={"p0": provider}, health_probes=False) as router:
        provider.healthy = False
        router.health()  # a failed probe opens the provider's breaker
        assert router.health(probe=False)["p0"].breaker.state == "open"
        clock.advance(60.0)
        snap = router.health(probe=False)["p0"]
    assert snap.breaker.state == "half_open" and snap.breaker.reopens_in is None


@pytest.mark.parametrize("bad,error", [("2", TypeError), (True, TypeError),
                                       (float("nan"), ValueError), (0, ValueError),
                                       (-1, ValueError), (float("inf"), ValueError)])
def test_a_bad_health_timeout_is_refused_before_any_probe(bad: Any,
                                                          error: type[Exception]) -> None:
    # health(timeout="2") or nan failed inside every probe, and each failed probe opened a
    # healthy provider's breaker: the router dropped every model from its plans.
    provider = FakeProvider("p0")
    with Router(config(1), providers={"p0": provider}, health_probes=False) as router:
        with pytest.raises(error, match="timeout"):
            router.health(timeout=bad)
        assert provider.health_timeouts == []
        assert router.plan("m0") == ["m0"]


def test_a_shared_async_router_runs_one_probe_task_whatever_the_loops() -> None:
    # An AsyncRouter shared by threads, each running its own loop: every switch of loop
    # started another probe task and left the others running (probe report: ~50 tasks a
    # loop, 384 probes where 8 were due).
    import asyncio
    import time

    provider = FakeProvider("p0")
    cfg = config(1, routing={"health": {"interval": 0.3, "jitter": 0}})
    router = AsyncRouter(cfg, providers={"p0": provider})
    stop = time.monotonic() + 1.5
    tasks: list[int] = []

    async def worker() -> None:
        while time.monotonic() < stop:
            await router.chat.completions.create(model="m0", messages=MSG)
            await asyncio.sleep(0.01)
        tasks.append(sum(1 for t in asyncio.all_tasks() if t.get_name() == "routekit-health"))

    threads = [threading.Thread(target=lambda: asyncio.run(worker())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sum(tasks) <= 1, tasks
    assert provider.health_checks <= 8, provider.health_checks  # 1.5 s / 0.3 s: about 5


def test_probe_intervals_are_per_provider_and_can_be_turned_off() -> None:
    cfg = config(2, routing={"health": {"interval": 10, "jitter": 0}})
    cfg["providers"]["p1"]["health"] = False
    cfg["providers"]["p0"]["health"] = {"interval": 3}
    clock = FakeClock()
    fakes = {n: FakeProvider(n, clock=clock) for n in ("p0", "p1")}
    router = Router(cfg, clock=clock, providers=fakes, health_probes=False)
    assert router._state.monitor.scheduled == ["p0"]
    for _ in range(4):
        clock.advance(3.0)
        router._state.monitor.run_due()
    assert fakes["p0"].health_checks == 4 and fakes["p1"].health_checks == 0
    router.close()


def test_the_probe_thread_runs_and_stops_with_the_router() -> None:
    cfg = config(1, routing={"health": {"interval": 0.05, "jitter": 0}})
    fake = FakeProvider("p0")
    router = Router(cfg, providers={"p0": fake})
    thread = router._state.monitor._thread
    assert thread is not None and thread.is_alive()
    deadline = 100
    while fake.health_checks < 2 and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    assert fake.health_checks >= 2
    router.close()
    assert not thread.is_alive()
    checks = fake.health_checks
    threading.Event().wait(0.2)
    assert fake.health_checks == checks  # closing stopped the probes


def test_a_router_dropped_without_close_stops_probing() -> None:
    # The probe thread held its monitor (and so the whole router state): a router dropped
    # without close() probed its servers for the life of the process (probe report: 96
    # probes a second from five routers nobody referenced).
    import gc

    cfg = config(1, routing={"health": {"interval": 0.05, "jitter": 0}})
    fake = FakeProvider("p0")
    router = Router(cfg, providers={"p0": fake})
    thread = router._state.monitor._thread
    assert thread is not None
    deadline = 100
    while fake.health_checks < 2 and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    assert fake.health_checks >= 2
    del router
    gc.collect()
    thread.join(5.0)  # it notices within one nap (at most 0.5 s)
    assert not thread.is_alive()
    checks = fake.health_checks
    threading.Event().wait(0.2)
    assert fake.health_checks == checks


def test_the_probe_task_runs_and_stops_with_the_async_router() -> None:
    import asyncio

    from routekit import AsyncRouter

    cfg = config(1, routing={"health": {"interval": 0.05, "jitter": 0}})
    fake = FakeProvider("p0")

    async def go() -> tuple[int, int]:
        async with AsyncRouter(cfg, providers={"p0": fake}):
            for _ in range(100):
                if fake.health_checks >= 2:
                    break
                await asyncio.sleep(0.05)
            seen = fake.health_checks
        await asyncio.sleep(0.2)
        return seen, fake.health_checks

    seen, after = asyncio.run(go())
    assert seen >= 2 and after == seen


def test_first_byte_timeouts_are_provider_failures() -> None:
    b = RequestTimeout("x")
    assert b.breaker_scope == "provider"


def test_a_cancelled_probe_gives_its_permit_back() -> None:
    import asyncio

    from routekit import AsyncRouter

    from routekit._clock import SYSTEM_CLOCK

    clock = FakeClock()
    # The probe's delay is real time (a FakeProvider without clock= would take the router's).
    p0 = FakeProvider("p0", replies=[ConnectionFailed("refused", refused=True),
                                     FakeReply(delay=0.5)], clock=SYSTEM_CLOCK)
    p1 = FakeProvider("p1")

    async def go() -> Any:
        router = AsyncRouter(breaker_cfg(), clock=clock, providers={"p0": p0, "p1": p1},
                             health_probes=False)
        await router.chat.completions.create(model="m0", messages=MSG)  # trips p0
        clock.advance(5.0)  # half-open
        task = asyncio.ensure_future(router.chat.completions.create(model="m0", messages=MSG))
        await asyncio.sleep(0.1)  # the probe is in flight (0.5 s of real time)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        board = router._state.board
        return board.providers["p0"].state, board.providers["p0"].probes

    state, probes = asyncio.run(go())
    assert state == "half_open" and probes == 0  # the next request may probe again


# ---------------------------------------------------------------- found under load


def test_a_server_down_for_thousands_of_trips_stays_at_open_max() -> None:
    # Every failed call while open trips again; the open time's power of the multiplier
    # overflowed a float after ~1025 trips (every request then raised OverflowError).
    b = Breaker("p", "provider", BreakerConfig(failure_threshold=1), cloud=False)
    for i in range(3000):
        b.on_failure(float(i), "down")
    assert b.state == "open" and b.trips == 3000
    assert b.reopen_at - 2999.0 == pytest.approx(b.config.open_max)


def test_callbacks_run_out_of_order_leave_flags_as_the_breakers_are() -> None:
    # A trip and a success racing run their board callbacks outside the breaker's lock, in
    # either order; the board must end as the breaker is, not as the last callback said.
    rig = Rig(breaker_cfg())
    board = rig.router._state.board
    graph = rig.router.graph
    b = board.models["m0"]
    board._on_change(b, "closed", "open")  # stale: the breaker is closed again already
    assert graph.is_available("m0") and board.all_closed
    b.trip(rig.clock.now(), "down")
    board._on_change(b, "open", "closed")  # stale the other way
    assert not graph.is_available("m0") and not board.all_closed
    assert rig.ask().route.answered_by.model == "m1"
    b.on_success(rig.clock.now())
    board._on_change(b, "closed", "open")
    assert graph.is_available("m0") and board.all_closed
    assert rig.ask().route.answered_by.model == "m0"


def _half_open_behind_a_full_bulkhead(router: Any, clock: Any) -> Any:
    board = router._state.board
    breaker = board.providers["p0"]
    breaker.trip(clock.now(), "test")
    breaker.probe_passed(clock.now())  # open → half-open, no probe in flight
    assert breaker.state == "half_open" and breaker.probes == 0
    return breaker


def _one_slot_config() -> dict[str, Any]:
    cfg = breaker_cfg(1)
    cfg["providers"]["p0"].update(max_concurrency=1, max_waiting=4)
    cfg["routing"]["retry"]["last_candidate_attempts"] = 1
    return cfg


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_cancelled_in_the_bulkhead_queue_gives_its_probe_permit_back(
        stream: bool) -> None:
    import asyncio

    from routekit import AsyncRouter
    from routekit._clock import SystemClock

    clock = SystemClock()
    p0 = FakeProvider("p0", replies=[FakeReply(text="holder", delay=0.6)])

    async def go() -> tuple[int, int, str]:
        router = AsyncRouter(_one_slot_config(), providers={"p0": p0}, health_probes=False)
        holder = asyncio.ensure_future(router.chat.completions.create(model="m0",
                                                                       messages=MSG))
        await asyncio.sleep(0.1)  # the holder has the only slot
        breaker = _half_open_behind_a_full_bulkhead(router, clock)
        waiter = asyncio.ensure_future(router.chat.completions.create(
            model="m0", messages=MSG, stream=stream))
        await asyncio.sleep(0.1)
        held = breaker.probes  # the waiter took the probe permit, then queued
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        after = breaker.probes
        await holder
        reply = await router.chat.completions.create(model="m0", messages=MSG)
        await router.close()
        return held, after, str(reply.route.answered_by.model)

    held, after, answered = asyncio.run(go())
    assert held == 1 and after == 0
    assert answered == "m0"  # the next request could probe, and closed the breaker


def test_a_deadline_passed_in_the_bulkhead_queue_gives_the_probe_permit_back() -> None:
    clock = FakeClock()
    p0 = FakeProvider("p0", replies=["holder"], clock=clock)
    router = Router(_one_slot_config(), clock=clock, providers={"p0": p0},
                    health_probes=False)
    holder = router.chat.completions.create(model="m0", messages=MSG, stream=True)
    breaker = _half_open_behind_a_full_bulkhead(router, clock)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            router.chat.completions.create(model="m0", messages=MSG, timeout=3)
        except Exception as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    for _ in range(200):
        if breaker.probes == 1:
            break
        threading.Event().wait(0.01)
    assert breaker.probes == 1
    clock.advance(3.5)  # its deadline passes while it waits
    holder.close()  # the slot goes to the waiter, with no time left
    t.join(10)
    assert errors and "deadline" in str(errors[0])
    assert breaker.probes == 0 and breaker.state == "half_open"
    assert router.chat.completions.create(model="m0", messages=MSG).route.answered_by.model \
        == "m0"
    router.close()


def test_an_async_router_probes_on_each_event_loop_it_is_used_from() -> None:
    import asyncio

    from routekit import AsyncRouter

    cfg = config(1, routing={"health": {"interval": 0.05, "jitter": 0}})
    fake = FakeProvider("p0")
    router = AsyncRouter(cfg, providers={"p0": fake})

    async def use() -> int:
        before = fake.health_checks
        await router.chat.completions.create(model="m0", messages=MSG)
        await asyncio.sleep(0.4)
        return fake.health_checks - before

    first, second = asyncio.run(use()), asyncio.run(use())
    asyncio.run(router.aclose())
    assert first >= 2 and second >= 2  # the second loop's probes used to never start


class _Malformed(FakeProvider):
    def health(self, timeout: float = 1.0) -> Any:
        super().health(timeout)
        return None  # a custom provider's bug: record() cannot read it


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_probe_round_that_raises_does_not_stop_the_probes(mode: str) -> None:
    import asyncio

    from routekit import AsyncRouter

    cfg = config(1, routing={"health": {"interval": 0.05, "jitter": 0}})
    fake = _Malformed("p0")
    if mode == "sync":
        router = Router(cfg, providers={"p0": fake})
        threading.Event().wait(0.5)
        router.close()
    else:
        async def go() -> None:
            async with AsyncRouter(cfg, providers={"p0": fake}):
                await asyncio.sleep(0.5)

        asyncio.run(go())
    assert fake.health_checks >= 4


def test_close_does_not_wait_for_a_hung_probe_and_ignores_what_it_finds() -> None:
    import time

    from conftest import http_provider
    from faultserver import FaultServer

    with FaultServer(hang_seconds=3) as server:
        cfg = {"providers": {"p": http_provider(server.url("hang"),
                                                health={"interval": 0.05, "jitter": 0,
                                                        "timeout": 2.0})},
               "models": {"m": {"provider": "p"}}}
        router = Router(cfg)
        for _ in range(100):
            if server.count("hang"):
                break
            threading.Event().wait(0.02)
        assert server.count("hang")  # a probe waits on the hung server
        start = time.monotonic()
        router.close()
        took = time.monotonic() - start
        breaker = router._state.board.providers["p"]
        threading.Event().wait(2.5)  # the probe times out after close
        assert took < 1.5  # not the probe's 2 s
        assert breaker.state == "closed"  # its failure did not move a closed router's breaker


@pytest.mark.parametrize("stream", [False, True])
def test_the_turn_that_opens_a_breaker_stops_retrying_and_opens_it_once(stream: bool) -> None:
    # A retry on a candidate whose breaker the same request had just opened used to call
    # the failing server again and, failing, trip it again: 10 s open instead of 5.
    cfg = config(2, routing={"breaker": {"failure_threshold": 1},
                             "retry": {"max_attempts": 3, "jitter": 0, "backoff_initial": 0.01}})
    rig = Rig(cfg, p0=[err503()] * 5)
    reply = rig.stream_text()[1] if stream else rig.ask().route
    assert [(a.model, a.outcome, a.tries) for a in reply.attempts] == \
        [("m0", "error", 1), ("m1", "ok", 1)]
    snap = rig.router._state.board.models["m0"].snapshot(rig.clock.now())
    assert snap.state == "open" and snap.trips == 1 and snap.reopens_in == 5.0


def test_the_last_candidate_keeps_its_tries_but_opens_its_breaker_once() -> None:
    cfg = config(1, routing={"breaker": {"failure_threshold": 1},
                             "retry": {"last_candidate_attempts": 3, "jitter": 0,
                                       "backoff_initial": 0.01}})
    rig = Rig(cfg, p0=[err503()] * 3)
    from routekit import AllCandidatesFailed

    with pytest.raises(AllCandidatesFailed):
        rig.ask()
    assert rig.calls("p0") == 3  # nothing follows it: its tries are worth making
    snap = rig.router._state.board.models["m0"].snapshot(rig.clock.now())
    assert snap.trips == 1 and snap.reopens_in is not None and snap.reopens_in <= 5.0


def test_a_permit_from_an_earlier_half_open_period_frees_nothing() -> None:
    # A took the one probe permit; a failed health probe reopened the breaker; it went
    # half-open again and C took the new permit. A, cancelled now, must not free C's: a
    # second request would probe at once (half_open_probes is 1).
    from routekit._policy.breakers import PERMIT, REFUSED

    b = Breaker("p", "provider", BreakerConfig(failure_threshold=1, open_initial=1.0,
                                               open_multiplier=1.0, half_open_probes=1),
                cloud=False)
    b.trip(0.0, "down")
    assert b.tick(1.0) and b.state == "half_open"
    got, a_period = b.take_permit()
    assert got == PERMIT
    b.on_failure(1.1, "health probe failed")  # reopens
    assert b.state == "open" and b.tick(2.2) and b.state == "half_open"
    got, c_period = b.take_permit()
    assert got == PERMIT and c_period != a_period
    b.release(a_period)  # A's, void
    assert b.take() == REFUSED  # C still holds the only permit
    b.release(c_period)
    assert b.take() == PERMIT
