"""Prometheus metrics of one router (``Router(..., metrics=True | registry)``).

Owns the ``routekit_*`` metric families and ``Metrics``, the ``Telemetry`` sink that fills
them from each finished request's route, usage and error, and the breaker listener that keeps
the breaker-state gauges current. The only module that imports ``prometheus_client``; it is
imported only when a router is built with metrics on.

Labels come from the config alone — entry model, model, provider, outcome, error type (the
class names of routekit's errors, plus the skip reasons ``CircuitOpen``) — never from a
request: an entry model the config does not have is counted as ``_other``. So the number of
series is bounded by the config however many requests pass.

Must not touch the pipeline, the breakers' state or the route; it only reads them.

Thread safety: prometheus_client's metrics are thread-safe; the label-child caches here are
plain dicts whose racing fills store the same child twice, which is harmless.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .. import _constants as C
from . import OTHER, bad_argument, error_label

if TYPE_CHECKING:
    from .._pipeline.request import RequestState
    from .._pipeline.route import Attempt
    from .._pipeline.router_state import RouterState
    from .._policy.breakers import Breaker, State

__all__ = ["BREAKER_STATE_VALUES", "Families", "Metrics"]

log = logging.getLogger("routekit")

# The breaker-state gauges' values: one gauge per breaker, its state as a number (rather than
# one gauge per state) so a graph of it reads as the state over time.
BREAKER_STATE_VALUES: dict[str, float] = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class Families:
    """The metric families registered on one registry (shared by every router that uses it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        try:
            self._register(registry)
        except ValueError:  # a name taken: leave the registry as it was
            for family in list(vars(self).values()):
                if isinstance(family, (Counter, Gauge, Histogram)):
                    registry.unregister(family)
            raise

    def _register(self, r: CollectorRegistry) -> None:
        self.requests = Counter(
            "routekit_requests", "Requests finished, by the model asked for and the outcome "
            "(ok, or the class name of the error raised).", ["entry_model", "outcome"],
            registry=r)
        self.attempts = Counter(
            "routekit_attempts", "Candidates of a route, by model, provider and outcome "
            "(ok, error, skipped) with the error type (empty when ok).",
            ["model", "provider", "outcome", "error_type"], registry=r)
        self.failovers = Counter(
            "routekit_failovers", "Failed hops: a candidate was called, failed, and a later "
            "candidate was called for the same request.",
            ["entry_model", "model", "error_type"], registry=r)
        self.provider_breaker = Gauge(
            "routekit_provider_breaker_state", "Provider circuit breaker: 0 closed, "
            "1 half-open, 2 open.", ["provider"], registry=r)
        self.model_breaker = Gauge(
            "routekit_model_breaker_state", "Model circuit breaker: 0 closed, 1 half-open, "
            "2 open.", ["model", "provider"], registry=r)
        self.ttfb = Histogram(
            "routekit_time_to_first_byte_seconds", "Streams: from create() to the first "
            "chunk of the answer, failed hops included.", ["entry_model"],
            buckets=C.TTFB_BUCKETS, registry=r)
        self.duration = Histogram(
            "routekit_request_duration_seconds", "From create() to the answer (for streams: "
            "to the end of the stream) or the error.", ["entry_model", "outcome"],
            buckets=C.LATENCY_BUCKETS, registry=r)
        self.tokens = Counter(
            "routekit_tokens", "Tokens the providers reported (usage), by the model that "
            "served them; type is input or output.", ["model", "provider", "type"],
            registry=r)
        self.cost = Counter(
            "routekit_cost_usd", "US dollars at the configured prices of the models that "
            "answered.", ["model", "provider"], registry=r)
        # The routers' sinks on this registry: the breaker gauges show the worst state among
        # the open routers that have that breaker (one series per name, however many share).
        self.sinks: weakref.WeakSet[Metrics] = weakref.WeakSet()
        self.sinks_lock = threading.Lock()


_families: weakref.WeakKeyDictionary[CollectorRegistry, Families] = weakref.WeakKeyDictionary()
_families_lock = threading.Lock()


def families_for(registry: CollectorRegistry) -> Families:
    """The routekit families on ``registry``, registered the first time (routers that share a
    registry share its families: registering twice would be refused as duplicates)."""
    with _families_lock:
        fam = _families.get(registry)
        if fam is None:
            try:
                fam = Families(registry)
            except ValueError as exc:  # a name is taken by someone else's collector
                raise bad_argument("metrics", f"cannot register routekit's metrics on this "
                                   f"registry: {exc}") from exc
            _families[registry] = fam
        return fam


class Metrics:
    """The ``Telemetry`` sink for Prometheus (see the module docstring)."""

    def __init__(self, state: RouterState, registry: CollectorRegistry | None) -> None:
        if registry is None:
            registry = CollectorRegistry()
        elif not isinstance(registry, CollectorRegistry):
            raise bad_argument("metrics", f"must be True, False, None or a prometheus_client."
                               f"CollectorRegistry, got {type(registry).__name__}")
        self.registry = registry
        self.families = fam = families_for(registry)
        self._models = frozenset(state.entries)
        # Children by label values: .labels() takes a lock and builds a key each call.
        self._requests: dict[tuple[str, str], Any] = {}
        self._attempts: dict[tuple[str, str, str, str], Any] = {}
        self._failovers: dict[tuple[str, str, str], Any] = {}
        self._ttfb: dict[str, Any] = {}
        self._duration: dict[tuple[str, str], Any] = {}
        self._tokens: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._cost: dict[tuple[str, str], Any] = {}
        self._state = state
        board = state.board
        self._provider_gauges = {name: fam.provider_breaker.labels(name)
                                 for name in board.providers}
        self._model_gauges = {name: fam.model_breaker.labels(name, board.model_provider[name])
                              for name in board.models}
        with fam.sinks_lock:
            fam.sinks.add(self)
        for level, breakers in (("provider", board.providers), ("model", board.models)):
            for breaker in breakers.values():
                self._show(level, breaker.name)

    def _show(self, level: str, name: str) -> None:
        """Set the gauge of breaker ``name`` to the worst state it has among the open routers
        on this registry (a router built later must not hide another's open breaker)."""
        gauges = self._provider_gauges if level == "provider" else self._model_gauges
        gauge = gauges.get(name)
        if gauge is None:
            return
        provider = self._state.board.model_provider.get(name) if level == "model" else None
        worst = 0.0
        with self.families.sinks_lock:
            sinks = list(self.families.sinks)
        for sink in sinks:
            if sink._state.closed:
                continue
            board = sink._state.board
            breaker = (board.providers if level == "provider" else board.models).get(name)
            if breaker is None or (level == "model" and board.model_provider.get(name)
                                   != provider):
                continue
            # The state now, not a transition's: two racing transitions' listeners may run
            # in either order (see BreakerBoard._on_change); the last one shows the truth.
            worst = max(worst, BREAKER_STATE_VALUES[breaker.state])
        gauge.set(worst)

    def router_closed(self) -> None:
        """This router's breakers no longer count: show the open routers' worst again (an
        alert on a closed router's open breaker would fire forever)."""
        board = self._state.board
        for level, breakers in (("provider", board.providers), ("model", board.models)):
            for name in breakers:
                self._show(level, name)

    # -- breakers ------------------------------------------------------------------------------

    def breaker_changed(self, breaker: Breaker, old: State, new: State) -> None:
        """A ``BreakerBoard`` listener: runs on whichever thread changed the breaker."""
        try:
            self._show(breaker.level, breaker.name)
        except Exception:  # observing must never break routing
            log.warning("metrics: could not record a breaker change", exc_info=True)

    # -- requests ------------------------------------------------------------------------------

    def request_finished(self, req: RequestState, error: BaseException | None, usage: Any,
                         stream: bool) -> None:
        try:
            self._record(req, error, usage)
        except Exception:  # observing must never fail the request
            log.warning("metrics: could not record a request", exc_info=True)

    def _record(self, req: RequestState, error: BaseException | None, usage: Any) -> None:
        fam = self.families
        # What req.route() would hold, read in place: building the Route costs ~1 µs.
        requested = req.requested
        entry = requested if requested in self._models else OTHER
        outcome = "ok" if error is None else error_label(error)

        key = (entry, outcome)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = fam.requests.labels(*key)
        child.inc()

        answered: Attempt | None = None
        last_called: Attempt | None = None
        called_later = False  # was a candidate after this one called?
        for a in reversed(req.attempts):
            error_type = a.error_type or ""
            akey = (a.model, a.provider, a.outcome, error_type)
            child = self._attempts.get(akey)
            if child is None:
                child = self._attempts[akey] = fam.attempts.labels(*akey)
            child.inc()
            if a.outcome == "skipped":
                continue
            if a.outcome == "ok":
                answered = a
            elif called_later:
                fkey = (entry, a.model, error_type)
                child = self._failovers.get(fkey)
                if child is None:
                    child = self._failovers[fkey] = fam.failovers.labels(*fkey)
                child.inc()
            if last_called is None:
                last_called = a
            called_later = True

        dkey = (entry, "ok" if error is None else "error")
        child = self._duration.get(dkey)
        if child is None:
            child = self._duration[dkey] = fam.duration.labels(*dkey)
        child.observe(req.clock.now() - req.started)

        # The first chunk reached the caller: the answer's, or a stream's that broke later.
        first = answered if answered is not None else last_called
        if first is not None and first.ttfb_ms is not None:
            child = self._ttfb.get(entry)
            if child is None:
                child = self._ttfb[entry] = fam.ttfb.labels(entry)
            child.observe((first.started_ms + first.ttfb_ms) / 1000.0)

        # Usage belongs to the model that produced it: the answer's, or the last one called
        # (a stream that reported usage and then broke).
        served = answered if answered is not None else last_called
        if usage is not None and served is not None:
            mkey = (served.model, served.provider)
            pair = self._tokens.get(mkey)
            if pair is None:
                pair = self._tokens[mkey] = (fam.tokens.labels(*mkey, "input"),
                                             fam.tokens.labels(*mkey, "output"))
            prompt = getattr(usage, "prompt_tokens", 0) or 0
            completion = getattr(usage, "completion_tokens", 0) or 0
            if prompt > 0:
                pair[0].inc(prompt)
            if completion > 0:
                pair[1].inc(completion)
        if answered is not None and answered.cost_usd:
            ckey = (answered.model, answered.provider)
            child = self._cost.get(ckey)
            if child is None:
                child = self._cost[ckey] = fam.cost.labels(*ckey)
            child.inc(answered.cost_usd)
