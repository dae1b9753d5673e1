"""Circuit breakers: a provider's and each model's memory of failing, and the plan flags they flip.

Owns ``Breaker`` (one state machine: closed → open → half-open → closed) and ``BreakerBoard``
(every breaker of one router; the only code that flips the availability flags in the C++
core, through ``CompiledGraph``). Must not call providers, sleep or decide retries: the
pipeline reports outcomes here and reads states back.

The machine, per ``BreakerConfig``:

* **closed** — calls flow. ``consecutive`` mode trips after ``failure_threshold`` failures
  in a row; ``rate`` mode trips when at least ``window_min_calls`` calls in the last
  ``window`` seconds failed at ``failure_rate`` or more (cloud kinds under ``auto``). A
  refused connection to a local provider trips at once (``trip_on_refused``).
* **open** — its flag is down, so plans skip it in C++. It stays open
  ``open_initial × open_multiplier^(trips − 1)`` seconds, at most ``open_max``. ``trips``
  counts trips since the breaker last stayed closed for ``open_max`` seconds, so a flapping
  server is kept out longer each time. A failure while open (a call made because every
  candidate was open, or a failing health probe) trips it again: the reopen time only ever
  moves later (LiteLLM #40130 moved it earlier).
* **half-open** — once the open time has passed (noticed lazily by ``tick``, at the next
  request or probe): the flag is up again but only ``half_open_probes`` calls at a time get
  a permit; the others skip it. A success closes it; a failure opens it again.

Thread safety: each ``Breaker`` has its own lock; ``BreakerBoard`` keeps counters under its
own lock. Reading ``state`` without a lock is a hint, good for skipping work on the hot path.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Iterable, Literal

if TYPE_CHECKING:
    from .._config.model import BreakerConfig
    from .._plan import CompiledGraph

__all__ = ["Breaker", "BreakerBoard", "BreakerSnapshot", "State"]

State = Literal["closed", "open", "half_open"]
CLOSED: State = "closed"
OPEN: State = "open"
HALF_OPEN: State = "half_open"

# What ``Breaker.take`` gave.
REFUSED, FREE, PERMIT = 0, 1, 2

# The rolling window of ``rate`` mode is kept as this many buckets (O(1) per call).
_BUCKETS = 10


class BreakerSnapshot:
    """A breaker's state at one moment, for ``router.health()`` and routes."""

    __slots__ = ("name", "level", "state", "reason", "reopens_in", "trips", "failures")

    def __init__(self, name: str, level: str, state: State, reason: str,
                 reopens_in: float | None, trips: int, failures: int) -> None:
        self.name = name
        self.level = level  # "provider" or "model"
        self.state = state
        self.reason = reason
        self.reopens_in = reopens_in
        self.trips = trips
        self.failures = failures

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "level": self.level, "state": self.state,
                "reason": self.reason, "reopens_in": self.reopens_in, "trips": self.trips,
                "consecutive_failures": self.failures}

    def __repr__(self) -> str:
        return f"BreakerSnapshot({self.level} {self.name!r}: {self.state})"


class Breaker:
    """One circuit breaker. ``on_change(breaker, old, new)`` runs after every state change,
    outside the breaker's lock (the board flips plan flags there)."""

    __slots__ = (
        "name", "level", "config", "rate_mode", "trip_on_refused", "state", "reason",
        "reopen_at", "trips", "failures", "probes", "period", "closed_since", "successes",
        "_lock", "_buckets", "_bucket_width", "_on_change",
    )

    def __init__(self, name: str, level: str, config: BreakerConfig, *, cloud: bool,
                 on_change: Callable[[Breaker, State, State], None] | None = None) -> None:
        self.name = name
        self.level = level
        self.config = config
        mode = config.mode
        self.rate_mode = mode == "rate" or (mode == "auto" and cloud)
        self.trip_on_refused = config.trip_on_refused and not cloud
        self.state: State = CLOSED
        self.reason = ""
        self.reopen_at = 0.0
        self.trips = 0
        self.failures = 0  # consecutive
        self.probes = 0  # permits held in half-open
        # Which stretch of state the permits belong to: a permit taken before the breaker
        # reopened (or closed) must not give back one taken after (two probes at once).
        self.period = 0
        self.closed_since = float("-inf")
        # Calls answered, ever: a health probe compares it before and after (``probe_failed``).
        # Bumped without a lock; a racing bump lost still leaves the count changed.
        self.successes = 0
        self._lock = threading.Lock()
        # rate mode: [bucket start, calls, failures] per bucket
        self._buckets: list[list[float]] = [[float("-inf"), 0.0, 0.0] for _ in range(_BUCKETS)]
        self._bucket_width = config.window / _BUCKETS
        self._on_change = on_change

    # -- outcomes ---------------------------------------------------------------------------

    def on_success(self, now: float) -> None:
        self.successes += 1
        if self.state is CLOSED and not self.rate_mode:
            self.failures = 0  # the hot path: one store, no lock (a racing failure may be lost)
            return
        with self._lock:
            old = self.state
            self.failures = 0
            if self.rate_mode:
                self._count(now, failed=False)
            if old is not CLOSED:
                self._close_locked(now)
        if old is not CLOSED:
            self._changed(old, CLOSED)

    def on_failure(self, now: float, reason: str, *, refused: bool = False) -> None:
        with self._lock:
            old = self.state
            self.failures += 1
            if old is CLOSED:
                trip = (refused and self.trip_on_refused) or self._closed_should_trip(now)
                if not trip:
                    return
                why = ("refused connection" if refused and self.trip_on_refused
                       else self._why(now))
            else:
                why = "failed while half-open" if old is HALF_OPEN else "failed again while open"
            self._trip_locked(now, f"{why}: {reason}")
        self._changed(old, OPEN)

    def trip(self, now: float, reason: str) -> None:
        """Open now, whatever the counts say (a failing health probe)."""
        with self._lock:
            old = self.state
            self._trip_locked(now, reason)
        self._changed(old, OPEN)

    def probe_failed(self, now: float, reason: str, successes_before: int, *,
                     timed_out: bool = False) -> bool:
        """A health probe failed; ``successes_before`` is ``successes`` as the probe began.
        Nothing happens if a call through this breaker was answered while the probe was out:
        live answers outweigh a probe that timed out because the server, or the caller's
        own event loop, was busy serving them. Otherwise a probe that got a wrong answer or
        a refused connection opens it at once (``trip``), and one that timed out counts as
        one failure (``on_failure``: ``failure_threshold`` of them in a row open a closed
        breaker; one is enough while open or half-open). Returns whether it is open now."""
        if self.successes != successes_before:
            return False
        if timed_out:
            self.on_failure(now, reason)
        else:
            self.trip(now, reason)
        return self.state is OPEN

    def probe_passed(self, now: float) -> None:
        """A health probe saw the provider answer: an open breaker may take a request now
        (half-open); a half-open one with no request in flight closes."""
        with self._lock:
            old = self.state
            if old is OPEN:
                self.state = HALF_OPEN
                self._new_period_locked()
                self.reason = "health probe passed"
            elif old is HALF_OPEN and self.probes == 0:
                self._close_locked(now)
            else:
                return
            new = self.state
        self._changed(old, new)

    # -- half-open permits --------------------------------------------------------------------

    def acquire(self) -> bool:
        """May a call go through now? Always for closed; for half-open, while permits last."""
        return self.take() != REFUSED

    def take(self) -> int:
        """``acquire`` that says what it gave: ``REFUSED``, ``FREE`` (closed: nothing to give
        back) or ``PERMIT`` (a half-open permit the caller holds until a verdict or
        ``release``)."""
        return self.take_permit()[0]

    def take_permit(self) -> tuple[int, int]:
        """``take``, with the period the permit belongs to (give it to ``release``)."""
        if self.state is CLOSED:
            return FREE, self.period
        with self._lock:
            if self.state is CLOSED:
                return FREE, self.period
            if self.state is HALF_OPEN and self.probes < self.config.half_open_probes:
                self.probes += 1
                return PERMIT, self.period
            return REFUSED, self.period

    def release(self, period: int | None = None) -> None:
        """Give back a half-open permit whose call ended without a verdict. A permit of an
        earlier ``period`` is void already: the breaker has reopened or closed since."""
        with self._lock:
            if period is not None and period != self.period:
                return
            if self.probes > 0:
                self.probes -= 1

    # -- time ---------------------------------------------------------------------------------

    def tick(self, now: float) -> bool:
        """Open past its reopen time → half-open. Returns whether it changed."""
        with self._lock:
            if self.state is not OPEN or now < self.reopen_at:
                return False
            self.state = HALF_OPEN
            self._new_period_locked()
        self._changed(OPEN, HALF_OPEN)
        return True

    def snapshot(self, now: float) -> BreakerSnapshot:
        with self._lock:
            reopens = max(0.0, self.reopen_at - now) if self.state is OPEN else None
            return BreakerSnapshot(self.name, self.level, self.state, self.reason, reopens,
                                   self.trips, self.failures)

    # -- internals (lock held) ------------------------------------------------------------------

    def _closed_should_trip(self, now: float) -> bool:
        if not self.rate_mode:
            return self.failures >= self.config.failure_threshold
        self._count(now, failed=True)
        calls, failed = self._window_totals(now)
        return calls >= self.config.window_min_calls and failed >= self.config.failure_rate * calls

    def _why(self, now: float) -> str:
        if not self.rate_mode:
            return f"{self.failures} consecutive failures"
        calls, failed = self._window_totals(now)
        return f"{failed:.0f} of {calls:.0f} calls failed in {self.config.window:g} s"

    def _count(self, now: float, *, failed: bool) -> None:
        width = self._bucket_width
        start = now - now % width
        bucket = self._buckets[int(now // width) % _BUCKETS]
        if bucket[0] != start:
            bucket[0], bucket[1], bucket[2] = start, 0.0, 0.0
        bucket[1] += 1
        if failed:
            bucket[2] += 1

    def _window_totals(self, now: float) -> tuple[float, float]:
        oldest = now - self.config.window
        calls = failed = 0.0
        for start, n, f in self._buckets:
            if start > oldest:
                calls += n
                failed += f
        return calls, failed

    def _trip_locked(self, now: float, reason: str) -> None:
        cfg = self.config
        if self.state is CLOSED and now - self.closed_since >= cfg.open_max:
            self.trips = 0  # it stayed closed a good while: start over at open_initial
        self.trips += 1
        try:
            open_for = min(cfg.open_max,
                           cfg.open_initial * cfg.open_multiplier ** (self.trips - 1))
        except OverflowError:  # a server down for ~1000 trips: long since at the cap
            open_for = cfg.open_max
        # Never earlier than an already promised reopen time.
        self.reopen_at = max(self.reopen_at if self.state is OPEN else 0.0, now + open_for)
        self.state = OPEN
        self._new_period_locked()
        self.reason = reason
        for b in self._buckets:
            b[0] = float("-inf")

    def _close_locked(self, now: float) -> None:
        self.state = CLOSED
        self.failures = 0
        self._new_period_locked()
        self.reason = ""
        self.closed_since = now

    def _new_period_locked(self) -> None:
        self.probes = 0
        self.period += 1

    def _changed(self, old: State, new: State) -> None:
        if old is not new and self._on_change is not None:
            self._on_change(self, old, new)

    def __repr__(self) -> str:
        return f"Breaker({self.level} {self.name!r}: {self.state})"


class BreakerBoard:
    """Every breaker of one router: one per provider, one per model. Flips the plan flags in
    the core as breakers open and close, and keeps what the hot path needs to skip its work
    when every breaker is closed (``all_closed``).
    """

    def __init__(self, graph: CompiledGraph, *, providers: dict[str, tuple[BreakerConfig, bool]],
                 models: dict[str, str],
                 listeners: Iterable[Callable[[Breaker, State, State], None]] = ()) -> None:
        """``providers``: name → (its effective BreakerConfig, is it a cloud kind);
        ``models``: model name → provider name."""
        self._graph = graph
        self._lock = threading.Lock()
        self._not_closed = 0
        self._counted: set[tuple[str, str]] = set()  # (level, name) of breakers not closed
        self._open_until = float("inf")  # earliest reopen among open breakers
        self.listeners = list(listeners)
        self.providers: dict[str, Breaker] = {}
        self.models: dict[str, Breaker] = {}
        self.model_provider = dict(models)
        self.enabled: dict[str, bool] = {}
        for name, (cfg, cloud) in providers.items():
            self.enabled[name] = cfg.enabled
            self.providers[name] = Breaker(name, "provider", cfg, cloud=cloud,
                                           on_change=self._on_change)
        for model, prov in models.items():
            cfg, cloud = providers[prov]
            self.models[model] = Breaker(model, "model", cfg, cloud=cloud,
                                         on_change=self._on_change)

    @property
    def all_closed(self) -> bool:
        return self._not_closed == 0

    @property
    def next_reopen(self) -> float:
        return self._open_until

    def tick(self, now: float) -> None:
        """Turn breakers whose open time has passed half-open. Cheap when none is due."""
        if now < self._open_until:
            return
        for b in (*self.providers.values(), *self.models.values()):
            if b.state is OPEN:
                b.tick(now)
        self._recompute_reopen()

    def record_failure(self, model: str, provider: str, scope: str | None, now: float,
                       reason: str, *, refused: bool = False) -> None:
        if scope is None or not self.enabled.get(provider, True):
            return
        if scope == "provider":
            self.providers[provider].on_failure(now, reason, refused=refused)
        self.models[model].on_failure(now, reason)

    def record_success(self, model: str, provider: str, now: float) -> None:
        self.providers[provider].on_success(now)
        self.models[model].on_success(now)

    def snapshots(self, now: float) -> tuple[list[BreakerSnapshot], list[BreakerSnapshot]]:
        return ([b.snapshot(now) for b in self.providers.values()],
                [b.snapshot(now) for b in self.models.values()])

    def reason_for(self, model: str, provider: str, now: float) -> tuple[str, float | None]:
        """Why a plan left ``model`` out, and when it reopens (seconds from now)."""
        for b in (self.providers[provider], self.models[model]):
            if b.state is OPEN:
                return (f"{b.level} breaker open ({b.reason})", max(0.0, b.reopen_at - now))
        for b in (self.providers[provider], self.models[model]):
            if b.state is HALF_OPEN:
                return (f"{b.level} breaker half-open, its probe is in flight", None)
        return ("marked unavailable", None)

    def reopen_at(self, model: str, provider: str) -> float:
        """When both of this candidate's breakers will let it be tried again."""
        times = [b.reopen_at for b in (self.providers[provider], self.models[model])
                 if b.state is OPEN]
        return max(times) if times else float("-inf")

    def _on_change(self, breaker: Breaker, old: State, new: State) -> None:
        # Callbacks run outside the breaker's lock, so two quick transitions' callbacks can
        # run in either order: apply the breaker's state now, not ``new``. The last callback
        # to take the board lock then leaves flag and count as the breaker is.
        with self._lock:
            state = breaker.state
            key = (breaker.level, breaker.name)
            counted = key in self._counted
            # The flag is down only while open: half-open candidates are planned, and the
            # pipeline hands out their probe permits. Order matters to lock-free readers of
            # ``all_closed``: the count reaches 0 only after the flag is up, and leaves 0
            # before it goes down.
            if state is CLOSED:
                self._set_flag(breaker, True)
                if counted:
                    self._counted.discard(key)
                    self._not_closed -= 1
            else:
                if not counted:
                    self._counted.add(key)
                    self._not_closed += 1
                self._set_flag(breaker, state is not OPEN)
            if state is OPEN:
                self._open_until = min(self._open_until, breaker.reopen_at)
        if state is not OPEN:
            self._recompute_reopen()
        for listener in self.listeners:
            listener(breaker, old, new)

    def _set_flag(self, breaker: Breaker, up: bool) -> None:
        if breaker.level == "provider":
            self._graph.set_provider_available(breaker.name, up, by="breaker")
        else:
            self._graph.set_model_available(breaker.name, up, by="breaker")

    def _recompute_reopen(self) -> None:
        with self._lock:
            times = [b.reopen_at for b in (*self.providers.values(), *self.models.values())
                     if b.state is OPEN]
            self._open_until = min(times) if times else float("inf")

