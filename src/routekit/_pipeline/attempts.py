"""The attempt loop: walk a plan's candidates, retrying each per policy, recording the route.

Owns: per-candidate pre-checks (context window), deadlines handed to providers, the
move-on / fail-fast decision, and the route record. Does not classify errors (providers do)
nor decide retry timing (``_retry.py``). Streaming's loop lives in ``_streaming.py`` and reuses
the pieces here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

from .. import _constants as C
from .._config.model import Config, ModelConfig, TimeoutConfig
from .._exceptions import (
    AllCandidatesFailed,
    MissingAPIKey,
    NoRouteError,
    ProviderError,
    RouteKitError,
    StatusError,
)
from .retry import CandidateRetry
from .route import Attempt, Route
from .._secrets import redact
from ..providers._base import ChatRequest, Deadline, Provider

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion

__all__ = [
    "Candidate", "RouteRecorder", "complete_async", "complete_sync", "eligible", "record_failure",
]

log = logging.getLogger("routekit")
_now = time.perf_counter
R = TypeVar("R")


@dataclass(slots=True)
class Candidate:
    model: str
    provider_name: str
    kind: str
    provider: Provider
    request: ChatRequest
    timeout: TimeoutConfig
    context_window: int | None


class RouteRecorder:
    """Collects attempts for one request. One per request: never shared."""

    __slots__ = ("requested", "attempts", "_t0")

    def __init__(self, requested: str) -> None:
        self.requested = requested
        self.attempts: list[Attempt] = []
        self._t0 = _now()

    def elapsed_ms(self) -> float:
        return (_now() - self._t0) * 1000.0

    def skip(self, cand: Candidate, reason: str, error_type: str) -> None:
        self.attempts.append(
            Attempt(cand.model, cand.provider_name, cand.kind, "skipped",
                    error_type=error_type, error=redact(reason))
        )

    def ok(self, cand: Candidate, tries: int, started: float, ttfb: float | None) -> None:
        self.attempts.append(
            Attempt(cand.model, cand.provider_name, cand.kind, "ok", tries=tries,
                    ttfb_ms=None if ttfb is None else (ttfb - started) * 1000.0,
                    duration_ms=(_now() - started) * 1000.0)
        )

    def fail(self, cand: Candidate, tries: int, started: float, exc: BaseException,
             ttfb: float | None = None) -> None:
        self.attempts.append(
            Attempt(cand.model, cand.provider_name, cand.kind, "error", tries=tries,
                    error_type=type(exc).__name__, error=redact(str(exc)),
                    status_code=exc.status_code if isinstance(exc, StatusError) else None,
                    ttfb_ms=None if ttfb is None else (ttfb - started) * 1000.0,
                    duration_ms=(_now() - started) * 1000.0)
        )

    def build(self) -> Route:
        return Route(self.requested, tuple(self.attempts), self.elapsed_ms())

    def raise_with_route(self, exc: RouteKitError) -> RouteKitError:
        exc.route = self.build()
        return exc

    def all_failed(self) -> RouteKitError:
        if not self.attempts:
            return self.raise_with_route(
                NoRouteError(f"no candidate is available for model {self.requested!r}")
            )
        return self.raise_with_route(AllCandidatesFailed(self.requested, self.attempts))


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # content parts
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
        chars += 8  # role and template tokens
    return int(chars / C.CHARS_PER_TOKEN) + 1


def precheck(cand: Candidate, prompt_tokens: int) -> str | None:
    """Why this candidate cannot serve the request, or None."""
    window = cand.context_window
    if window is None:
        return None
    params = cand.request.params
    wanted = params.get("max_completion_tokens") or params.get("max_tokens") or 0
    if prompt_tokens + int(wanted) > window:
        return (f"prompt ≈{prompt_tokens} tokens + max_tokens {wanted} exceed the context "
                f"window of {window}")
    return None


def context_window(model: ModelConfig, in_process: bool) -> int | None:
    if model.context_window is not None:
        return model.context_window
    if in_process:
        return model.n_ctx or C.DEFAULT_N_CTX
    return None


def attempt_deadline(cand: Candidate, deadline_at: float) -> Deadline:
    remaining = max(0.001, deadline_at - _now())
    t = cand.timeout
    return Deadline(connect=min(t.connect, remaining), read=min(t.read, remaining),
                    total=min(t.total, remaining))


def eligible(
    config: Config, candidates: list[Candidate], rec: RouteRecorder, deadline_at: float
) -> Iterator[tuple[Candidate, CandidateRetry]]:
    """The candidates worth calling, in plan order, each with its retry policy; the others
    are recorded as skipped (prompt too long for the window, request deadline passed)."""
    prompt_tokens = -1  # estimated once, and only if some candidate has a known window
    last = len(candidates) - 1
    for i, cand in enumerate(candidates):
        reason = None
        if cand.context_window is not None:
            if prompt_tokens < 0:
                prompt_tokens = estimate_tokens(cand.request.messages)
            reason = precheck(cand, prompt_tokens)
        if reason is not None:
            rec.skip(cand, reason, "ContextLengthExceeded")
        elif _now() >= deadline_at:
            rec.skip(cand, "the request deadline passed before this candidate", "RequestTimeout")
        else:
            yield cand, CandidateRetry(config.routing.retry, last=i == last,
                                       deadline_at=deadline_at)


def record_failure(rec: RouteRecorder, cand: Candidate, policy: CandidateRetry,
                   started: float, exc: ProviderError) -> None:
    """Record a candidate that failed; raise when the request itself is at fault (it would
    fail on every candidate), otherwise let the caller move on."""
    if isinstance(exc, MissingAPIKey):
        rec.skip(cand, str(exc), type(exc).__name__)
    else:
        rec.fail(cand, policy.tries, started, exc)
    # INFO: an application that wants to see failovers turns this logger up; the text is
    # the route's, already redacted.
    log.info("request for %r: %s", rec.requested, rec.attempts[-1].describe())
    if exc.fatal:
        raise rec.raise_with_route(exc) from None


def complete_sync(
    config: Config,
    requested: str,
    candidates: list[Candidate],
    deadline_s: float,
    wrap: Callable[[ChatCompletion, Route], R],
) -> R:
    rec = RouteRecorder(requested)
    deadline_at = _now() + deadline_s
    for cand, policy in eligible(config, candidates, rec, deadline_at):
        started = _now()
        provider, request = cand.provider, cand.request
        try:
            result = policy.run(
                lambda: provider.complete(request, attempt_deadline(cand, deadline_at))
            )
        except ProviderError as exc:
            record_failure(rec, cand, policy, started, exc)
            continue
        rec.ok(cand, policy.tries, started, None)
        return wrap(result, rec.build())
    raise rec.all_failed()


async def complete_async(
    config: Config,
    requested: str,
    candidates: list[Candidate],
    deadline_s: float,
    wrap: Callable[[ChatCompletion, Route], R],
) -> R:
    rec = RouteRecorder(requested)
    deadline_at = _now() + deadline_s
    for cand, policy in eligible(config, candidates, rec, deadline_at):
        started = _now()
        provider, request = cand.provider, cand.request
        try:
            result = await policy.arun(
                lambda: provider.acomplete(request, attempt_deadline(cand, deadline_at))
            )
        except ProviderError as exc:
            record_failure(rec, cand, policy, started, exc)
            continue
        rec.ok(cand, policy.tries, started, None)
        return wrap(result, rec.build())
    raise rec.all_failed()
