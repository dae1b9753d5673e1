"""One request's state, from ``create()`` to its answer or its error.

Owns ``RequestState`` (in the spirit of tenacity's ``RetryCallState``): the router's clock,
the deadline, the route being recorded, the partial text of a stream, the candidate being
tried, and the walk over the plan — which candidates to attempt, which to skip and why
(breaker open, probe in flight, prompt too long, deadline spent), each attempt's timeouts
(first-byte share, remaining budget), and what a failure means (move on, or stop the whole
route). The sync and async drivers (``attempts.py``, ``streams.py``) share all of this and
differ only where they wait.

Must not call providers or sleep.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .. import _constants as C
from .._exceptions import (
    AllCandidatesFailed,
    ConnectionFailed,
    MissingAPIKey,
    NoRouteError,
    ProviderBusy,
    ProviderError,
    RateLimited,
    RequestTimeout,
    RouteKitError,
    StatusError,
)
from .._policy.breakers import PERMIT, REFUSED
from .._secrets import redact
from ..providers._base import ChatRequest, Deadline, RequestParams
from .route import Attempt, Route

if TYPE_CHECKING:
    from .entries import ModelEntry
    from .router_state import RouterState

__all__ = ["RequestState", "estimate_tokens", "worth_retrying"]

log = logging.getLogger("routekit")


def worth_retrying(exc: BaseException, retry_after_cap: float, last: bool) -> bool:
    """routekit's retry predicate: is another call on the same candidate worth it? (The
    tenacity strategies built on it live in ``retry.py``, imported on the first retry.)"""
    if not isinstance(exc, ProviderError) or not exc.retryable:
        return False
    if isinstance(exc, ConnectionFailed) and exc.refused:
        return False  # nothing listens: another try costs time and cannot succeed soon
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return exc.retry_after <= retry_after_cap
    if isinstance(exc, (RequestTimeout, ProviderBusy)) and not last:
        return False  # the next candidate gets this time instead
    return True


def estimate_tokens(messages: list[dict[str, Any]], params: Any = None) -> int:
    """The prompt's tokens, from its characters: message text, the tool calls an assistant
    made (names and arguments), and the tool (function) schemas the request offers, which
    the server's template puts in the prompt too."""
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # content parts
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
        calls = m.get("tool_calls")
        if isinstance(calls, list):
            for call in calls:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    chars += sum(len(v) for v in function.values() if isinstance(v, str))
        legacy = m.get("function_call")
        if isinstance(legacy, dict):
            chars += sum(len(v) for v in legacy.values() if isinstance(v, str))
        chars += 8  # role and template tokens
    if params:
        schemas = [params[k] for k in ("tools", "functions") if params.get(k)]
        if schemas:
            import json

            chars += len(json.dumps(schemas, default=str))
    return int(chars / C.CHARS_PER_TOKEN) + 1


class RequestState:
    """Everything about one request in flight. One per request: never shared between
    threads or tasks."""

    __slots__ = (
        "router", "clock", "requested", "messages", "params", "extra_body", "extra_headers",
        "extra_query", "started", "deadline_at", "phases", "attempts", "partial",
        "candidate", "last", "tries", "attempt_started", "first_byte_at", "_prompt_tokens",
        "wall_start_ns", "retry", "prompt", "last_error", "permits", "permit_periods", "tripped",
        "forcing",
    )

    def __init__(self, router: RouterState, requested: str, messages: list[dict[str, Any]],
                 params: RequestParams, *, budget: float, phases: tuple[float, float] | None,
                 extra_body: dict[str, Any] | None, extra_headers: dict[str, str] | None,
                 extra_query: dict[str, Any] | None, prompt: str | None = None) -> None:
        self.router = router
        self.clock = router.clock
        self.requested = requested
        self.messages = messages
        self.params = params
        self.extra_body = extra_body
        self.extra_headers = extra_headers
        self.extra_query = extra_query
        # A legacy text completion's prompt (``completions.create``); None for chat. Its
        # ``messages`` then hold the prompt as one user message, for estimates only.
        self.prompt = prompt
        # The retry settings for this request: the router's, or a client view's (max_retries).
        self.retry = router.retry
        self.started = self.clock.now()
        self.deadline_at = self.started + budget
        # Wall-clock start (ns since the epoch) for traces, taken only when they are on.
        self.wall_start_ns = time.time_ns() if router.telemetry is not None else 0
        # (connect, read) from an httpx.Timeout given to create(): per-attempt phases.
        self.phases = phases
        self.attempts: list[Attempt] = []
        self.last_error: ProviderError | None = None  # the last failed attempt's error
        self.permits = 0  # half-open permits held for the candidate: 1 provider, 2 model
        self.permit_periods = (0, 0)  # the breakers' periods they were taken in
        self.tripped = False  # this candidate's turn opened one of its breakers
        self.partial: list[str] = []  # text a committed stream has delivered so far
        self.candidate: ModelEntry | None = None
        self.last = False  # is the current candidate the last one of the plan?
        self.forcing = False  # is it tried though a breaker holds it back? (``candidates``)
        self.tries = 0  # calls made on the current candidate
        self.attempt_started = 0.0
        self.first_byte_at: float | None = None
        self._prompt_tokens = -1

    # -- time ------------------------------------------------------------------------------

    def remaining(self) -> float:
        return self.deadline_at - self.clock.now()

    def deadline(self) -> Deadline:
        """Timeouts for the next call on the current candidate.

        While later candidates remain, the wait for the first byte is capped at
        ``routing.first_byte_share`` of what is left, so a hung server leaves the rest of the
        budget to its fallbacks; the last candidate may use all of it.
        """
        entry = self.candidate
        assert entry is not None
        remaining = self.deadline_at - self.clock.now()
        if remaining <= 0:
            raise RequestTimeout(
                f"the request deadline passed before calling {entry.name!r}",
                provider=entry.provider_name, model=entry.name,
            )
        t = entry.timeout
        total = t.total if t.total < remaining else remaining
        first_byte = self._first_byte(entry.first_byte, remaining)
        if self.phases is not None:
            connect, read = self.phases
            # openai's meaning: its read timeout bounds every read, the first one too.
            if first_byte is None or read < first_byte:
                first_byte = read
        else:
            connect, read = t.connect, t.read
        return Deadline(connect if connect < total else total, read if read < total else total,
                        total, first_byte)

    def queue_wait(self) -> float:
        """How long the current candidate may wait for a bulkhead slot: as long as its first
        byte may take (the wait is part of it)."""
        remaining = self.deadline_at - self.clock.now()
        if remaining <= 0:
            return 0.0
        first_byte = self._first_byte(
            self.candidate.first_byte if self.candidate is not None else None, remaining)
        return remaining if first_byte is None else min(first_byte, remaining)

    def _first_byte(self, limit: float | None, remaining: float) -> float | None:
        """The candidate's first-byte limit, capped while later candidates remain at
        ``routing.first_byte_share`` of what is left (None: no limit)."""
        if self.last:
            return limit
        cap = self.router.first_byte_share * remaining
        return cap if limit is None or cap < limit else limit

    # -- requests --------------------------------------------------------------------------

    def chat_request(self, entry: ModelEntry) -> ChatRequest:
        params = self.params
        if entry.defaults:
            defaults = entry.defaults
            if ("max_tokens" in params or "max_completion_tokens" in params) and (
                    "max_tokens" in defaults or "max_completion_tokens" in defaults):
                # One cap, two names: the caller's (either name) replaces the model's.
                defaults = {k: v for k, v in defaults.items()
                            if k not in ("max_tokens", "max_completion_tokens")}
            merged: Any = {**defaults, **params}
            params = merged
        return ChatRequest(entry.name, entry.model_id, self.messages, params, self.extra_body,
                           self.extra_headers, self.extra_query, self.prompt)

    # -- the walk --------------------------------------------------------------------------

    def candidates(self) -> Iterator[ModelEntry]:
        """The candidates to attempt, in plan order; the others are recorded as skipped.

        A candidate is yielded holding its half-open probe permits (``release_permits``
        gives them back). If breakers have taken every candidate out of the plan, the one
        that reopens soonest is tried anyway, in its place. Otherwise, once every candidate
        the breakers allowed has failed, one of those they held back (open, or half-open
        with its probes in flight) is tried, the soonest to reopen that can serve the
        request: the last resort. A request does not fail without trying a fallback that
        was only skipped for a breaker, time permitting. (Envoy's "panic mode" does the like
        for hosts.) A candidate taken out by hand (``router.graph``) is never tried.
        """
        router = self.router
        board = router.board
        now = self.clock.now()
        board.tick(now)
        graph = router.graph
        entries = router.entries
        forced = None
        names: Sequence[str]
        plan: Sequence[str]
        down: frozenset[str] | set[str] = frozenset()
        closed = board.all_closed
        if closed:
            # With every flag up (no breaker open, none set down through router.graph) the
            # plan is the static one, memoized; a flag flipped meanwhile is seen by the next
            # request, as one flipped during a plan in the core would be.
            if graph.all_available:
                names = plan = graph.static_plan(self.requested, router.max_depth)
            else:
                names = plan = graph.plan(self.requested, max_depth=router.max_depth)
                # Empty because a breaker opened after all_closed was read (it counts
                # itself before its flag goes down): walk as with breakers open, below.
                closed = bool(plan) or board.all_closed
        if not closed:
            names = graph.static_plan(self.requested, router.max_depth)
            plan = graph.plan(self.requested, max_depth=router.max_depth)
            up = set(plan)
            down = {n for n in names if n not in up}
            if down:
                down_by_breaker = [n for n in names if n in down and not graph.down_by_hand(n)]
                if not plan and down_by_breaker:
                    forced = min(down_by_breaker,
                                 key=lambda n: board.reopen_at(n, entries[n].provider_name))
                    down.discard(forced)
        if not names:
            raise NoRouteError(f"no candidate is available for model {self.requested!r}")
        last_name = plan[-1] if plan else forced
        held: list[tuple[str, Attempt]] = []  # skipped for a breaker: the last resort's pool
        resorted = False  # has a candidate been called though a breaker held it back?
        for name in names:
            entry = entries[name]
            if name in down:
                reason, reopens = board.reason_for(name, entry.provider_name, now)
                if reopens is not None:
                    reason += f"; reopens in {reopens:.1f} s"
                self.skip(entry, reason, "CircuitOpen")
                if not graph.down_by_hand(name):
                    held.append((name, self.attempts[-1]))
                continue
            why = self._precheck(entry)
            if why is not None:
                self.skip(entry, why[0], why[1])
                continue
            if name is not forced and not self._take_permits(entry):
                reason, _ = board.reason_for(name, entry.provider_name, now)
                self.skip(entry, reason, "CircuitOpen")
                held.append((name, self.attempts[-1]))
                continue
            # The plan's last candidate keeps the last one's retries and time with a last
            # resort behind it: the breakers said that resort was failing.
            self._turn(entry, last=name == last_name, forcing=name is forced)
            yield entry
            if name is forced and self.tries:
                resorted = True  # every candidate was open: that was the one attempt
        if not held or resorted:
            return
        # The last resort, soonest to reopen first (half-open ones before open ones), until
        # one has been called: a candidate skipped now as busy or unfit passes the turn on.
        held.sort(key=lambda h: board.reopen_at(h[0], entries[h[0]].provider_name))
        for name, row in held:
            if self.remaining() <= 0:
                return  # no time left to try it: its skipped row says why it was not
            entry = entries[name]
            if self._precheck(entry) is not None:
                continue
            # This attempt's row stands for it now, in time order.
            del self.attempts[next(i for i, a in enumerate(self.attempts) if a is row)]
            self._turn(entry, last=True, forcing=True)
            yield entry
            if self.tries:
                return

    def _turn(self, entry: ModelEntry, *, last: bool, forcing: bool) -> None:
        """A candidate's turn begins."""
        self.candidate = entry
        self.last = last
        self.forcing = forcing
        self.tries = 0
        self.tripped = False
        self.first_byte_at = None
        self.attempt_started = self.clock.now()

    def _precheck(self, entry: ModelEntry) -> tuple[str, str] | None:
        """(why, error type) when this candidate cannot serve the request, else None."""
        if entry.window is not None:
            if self._prompt_tokens < 0:
                self._prompt_tokens = estimate_tokens(self.messages, self.params)
            params: Any = self.params
            wanted = (params.get("max_completion_tokens") or params.get("max_tokens")
                      or entry.defaults.get("max_completion_tokens")
                      or entry.defaults.get("max_tokens") or 0)
            if self._prompt_tokens + int(wanted) > entry.window:
                return (f"prompt ≈{self._prompt_tokens} tokens + max_tokens {wanted} exceed "
                        f"the context window of {entry.window}", "ContextLengthExceeded")
        if self.clock.now() >= self.deadline_at:
            return ("the request deadline passed before this candidate", "RequestTimeout")
        return None

    def _take_permits(self, entry: ModelEntry) -> bool:
        pb, mb = entry.provider_breaker, entry.model_breaker
        if pb.state == "closed" and mb.state == "closed":
            return True
        got_p, period_p = pb.take_permit()
        if got_p == REFUSED:
            return False
        got_m, period_m = mb.take_permit()
        if got_m == REFUSED:
            if got_p == PERMIT:
                pb.release(period_p)
            return False
        self.permits = (got_p == PERMIT) | (got_m == PERMIT) << 1
        self.permit_periods = (period_p, period_m)
        return True

    def release_permits(self, entry: ModelEntry) -> None:
        """Give back the half-open permits this request holds for ``entry``, when its turn
        ends without a verdict (cancelled, deadline, busy, an error that says nothing about
        the provider). Idempotent; free when none is held, as almost always."""
        held = self.permits
        if held:
            self.permits = 0
            if held & 1:
                entry.provider_breaker.release(self.permit_periods[0])
            if held & 2:
                entry.model_breaker.release(self.permit_periods[1])

    # -- outcomes --------------------------------------------------------------------------

    def failed_call(self, entry: ModelEntry, exc: ProviderError) -> None:
        """One call on ``entry`` failed: tell its breakers (before any retry decision). Raises
        ``closed_under``'s error instead when the router was closed under the call."""
        if self.router.closed:
            raise self.closed_under(entry) from exc
        scope = exc.breaker_scope
        if scope is None:
            self.release_permits(entry)
            return
        if self.forcing:
            # Tried though its breaker was open: that failure is what the breaker already
            # knew. Counting it would push the reopen time out on every request that fell
            # through to it (5 s to 160 s in five requests).
            return
        if self.tripped:
            # A retry of this turn failed after the turn's own failure opened the breaker:
            # one request opens a breaker once (its open time doubles only across requests).
            return
        refused = isinstance(exc, ConnectionFailed) and exc.refused
        self.router.board.record_failure(
            entry.name, entry.provider_name, scope, self.clock.now(),
            f"{type(exc).__name__}: {exc.message}", refused=refused,
        )
        held, self.permits = self.permits, 0  # the failure reopened what it tried
        if scope == "model" and held & 1:
            # The server answered; only the model failed.
            entry.provider_breaker.release(self.permit_periods[0])
        if entry.provider_breaker.state == "open" or entry.model_breaker.state == "open":
            self.tripped = True

    def worth_another_try(self, exc: BaseException) -> bool:
        """Call the same candidate again? ``worth_retrying``, and not once this turn's own
        failure opened its breaker while another candidate remains: the breaker says move
        on (retrying anyway cost a call to a failing server and, failing, doubled the
        breaker's open time)."""
        if self.tripped and not self.last:
            return False
        return worth_retrying(exc, self.retry.retry_after_cap, self.last)

    def succeeded_call(self, entry: ModelEntry) -> None:
        self.permits = 0  # the success closes what it tried
        self.router.board.record_success(entry.name, entry.provider_name, self.clock.now())

    def give_up(self, entry: ModelEntry, exc: ProviderError) -> None:
        """The candidate is done with: record it; raise when the request itself is at fault
        (it would fail on every candidate); otherwise the walk moves on."""
        if isinstance(exc, MissingAPIKey):
            self.skip(entry, str(exc), type(exc).__name__)
        else:
            self.record_error(entry, exc)
        # INFO: an application that wants to see failovers turns this logger up; the text is
        # the route's, already redacted.
        log.info("request for %r: %s", self.requested, self.attempts[-1].describe())
        if exc.fatal:
            # The provider's own error (already redacted) stays the cause: openai's surface
            # reads its response (headers, request id) from there.
            raise self.with_route(exc) from exc.__cause__

    def record_error(self, entry: ModelEntry, exc: BaseException) -> None:
        """The candidate's turn ended in ``exc``: a provider's error, or the caller's
        (cancelled while the call was in flight)."""
        self.attempts.append(self._attempt(entry, "error", exc))
        if isinstance(exc, ProviderError):
            self.last_error = exc

    def busy(self, entry: ModelEntry, detail: str) -> None:
        self.release_permits(entry)
        self.skip(entry, f"busy: {detail}", "ProviderBusy")

    def answered(self, entry: ModelEntry, usage: Any = None) -> None:
        self.attempts.append(self._attempt(entry, "ok", None, usage=usage))

    def skip(self, entry: ModelEntry, reason: str, error_type: str) -> None:
        self.attempts.append(Attempt(entry.name, entry.provider_name, entry.kind, "skipped",
                                     error_type=error_type, error=redact(reason),
                                     started_ms=(self.clock.now() - self.started) * 1000.0))

    def _attempt(self, entry: ModelEntry, outcome: Any, exc: BaseException | None, *,
                 usage: Any = None) -> Attempt:
        now = self.clock.now()
        started = self.attempt_started
        ttfb = self.first_byte_at
        cost = None
        if usage is not None:
            cost = entry.cost(getattr(usage, "prompt_tokens", 0) or 0,
                              getattr(usage, "completion_tokens", 0) or 0)
        return Attempt(
            entry.name, entry.provider_name, entry.kind, outcome, tries=self.tries,
            error_type=type(exc).__name__ if exc is not None else None,
            error=redact(str(exc)) if exc is not None else None,
            status_code=exc.status_code if isinstance(exc, StatusError) else None,
            ttfb_ms=None if ttfb is None else (ttfb - started) * 1000.0,
            duration_ms=(now - started) * 1000.0, cost_usd=cost,
            started_ms=(started - self.started) * 1000.0,
        )

    # -- endings ---------------------------------------------------------------------------

    def route(self) -> Route:
        return Route(self.requested, tuple(self.attempts),
                     (self.clock.now() - self.started) * 1000.0,
                     "chat.completions" if self.prompt is None else "completions")

    def closed_under(self, entry: ModelEntry) -> RouteKitError:
        """The router was closed while ``entry`` was called: its error says nothing about
        the provider (its client was closed under it). No breaker hears of it, no fallback
        is tried, and the route says what happened."""
        self.release_permits(entry)
        return RouteKitError(f"the router was closed while {entry.name} via "
                             f"{entry.provider_name} was answering")

    def with_route(self, exc: RouteKitError) -> RouteKitError:
        exc.route = self.route()
        return exc

    def all_failed(self) -> RouteKitError:
        if not self.attempts:
            return self.with_route(
                NoRouteError(f"no candidate is available for model {self.requested!r}")
            )
        return self.with_route(AllCandidatesFailed(self.requested, self.attempts,
                                                   last_error=self.last_error))

    def partial_text(self) -> str:
        return "".join(self.partial)

    def finish(self, error: BaseException | None, usage: Any = None, *,
               stream: bool = False) -> None:
        """The request is over (answered, or ``error``): tell the router's telemetry, if it
        has any. Costs one attribute test when it has none."""
        telemetry = self.router.telemetry
        if telemetry is not None:
            telemetry.request_finished(self, error, usage, stream)
