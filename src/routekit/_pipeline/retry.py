"""Retrying one candidate, composed from tenacity's own strategies and routekit's predicates.

Owns *whether* and *when* to call the same candidate again. Moving on to the next candidate
is the walk's job (``request.py``); classifying errors is the providers' job.

The policy for one candidate, as tenacity objects (``policy_for``)::

    retry = retry_if_exception_type(ProviderError) & retry_if_worth_it(cap, last)
    wait  = wait_retry_after(wait_exponential(initial, max=backoff_max) + wait_random(0, jitter))
    stop  = stop_after_attempt(tries) | stop_before_deadline(deadline, wait, clock)

* ``retry_if_worth_it`` retries what may pass on a second try (connection reset, 408, 409,
  429, 5xx, timeouts, busy) only when that is cheaper than moving on: never a refused
  connection (nothing listens), never a ``Retry-After`` longer than ``retry_after_cap``, a
  timeout or a full in-process queue only on the last candidate (while another candidate
  remains, it gets the time instead; a full bulkhead is checked before the call and never
  retried: ``max_waiting`` is its wait), and not once the request's own failure opened the candidate's
  breaker while another candidate remains (``RequestState.worth_another_try``).
* ``wait_retry_after`` waits what the server asked for; otherwise exponential backoff from
  ``backoff_initial`` (the first retry waits ``backoff_initial``, the next twice that, ...)
  plus up to ``jitter`` seconds at random.
* ``stop_before_deadline`` stops when the wait would end past the request deadline. It and
  the ``wait`` share one memoised value per attempt, so the decision holds whatever order
  tenacity calls them in (tenacity 9 calls ``wait`` before ``stop``; 8 did the opposite, and
  routekit's earlier policy ran one attempt late because of it).

All sleeping goes through the router's clock (``Retrying(sleep=clock.sleep)``). This module
(and tenacity, and asyncio under it) is imported on the first retry, not at ``import
routekit``: most requests never retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable, TypeVar

import tenacity
from tenacity import (
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .._exceptions import ProviderError, RateLimited
from .request import worth_retrying

if TYPE_CHECKING:
    from .._clock import Clock
    from .._config.model import RetryConfig

__all__ = [
    "Policy",
    "policy_for",
    "retry_if_worth_it",
    "stop_before_deadline",
    "wait_retry_after",
    "worth_retrying",
]

T = TypeVar("T")


def _exception(state: tenacity.RetryCallState) -> BaseException | None:
    outcome = state.outcome
    if outcome is None or not outcome.failed:
        return None
    return outcome.exception()


class retry_if_worth_it(retry_base):  # noqa: N801 - tenacity's naming, composed with its own
    """``worth(exc)``: the request's own judgement (``RequestState.worth_another_try``), or
    ``worth_retrying`` with ``retry_after_cap`` and ``last``."""

    def __init__(self, retry_after_cap: float, last: bool,
                 worth: Callable[[BaseException], bool] | None = None) -> None:
        self.retry_after_cap = retry_after_cap
        self.last = last
        self.worth = worth

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        exc = _exception(retry_state)
        if exc is None:
            return False
        if self.worth is not None:
            return self.worth(exc)
        return worth_retrying(exc, self.retry_after_cap, self.last)


class wait_retry_after(wait_base):  # noqa: N801
    """The server's ``Retry-After`` when it gave one, else ``fallback``'s wait."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = _exception(retry_state)
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        return float(self.fallback(retry_state))


class _memo(wait_base):  # noqa: N801
    """One value per attempt number: ``stop`` and ``wait`` see the same jittered wait."""

    def __init__(self, inner: wait_base) -> None:
        self.inner = inner
        self.attempt = -1
        self.value = 0.0

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        if retry_state.attempt_number != self.attempt:
            self.attempt = retry_state.attempt_number
            self.value = float(self.inner(retry_state))
        return self.value


class stop_before_deadline(stop_base):  # noqa: N801
    """Stop when the coming wait would end at or after ``deadline_at`` on ``clock``."""

    def __init__(self, deadline_at: float, wait: wait_base, clock: Clock) -> None:
        self.deadline_at = deadline_at
        self.wait = wait
        self.clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock.now() + float(self.wait(retry_state)) >= self.deadline_at


class Policy:
    """tenacity's three strategies for one candidate of one request."""

    __slots__ = ("retry", "stop", "wait", "clock")

    def __init__(self, retry: retry_base, stop: stop_base, wait: wait_base, clock: Clock) -> None:
        self.retry = retry
        self.stop = stop
        self.wait = wait
        self.clock = clock

    def run(self, first: ProviderError, call: Callable[[], T]) -> T:
        """Retry ``call`` after its first failure ``first`` (made outside tenacity: most calls
        succeed, and tenacity's machinery costs ~20 µs), until it succeeds or the policy gives
        up; then the last error propagates. ``first`` counts as tenacity's attempt 1."""
        pending: BaseException | None = first
        retrying = tenacity.Retrying(retry=self.retry, stop=self.stop, wait=self.wait,
                                     sleep=self.clock.sleep, reraise=True)
        for attempt in retrying:
            with attempt:
                if pending is not None:
                    failed, pending = pending, None
                    raise failed
                return call()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def arun(self, first: ProviderError, call: Callable[[], Awaitable[T]]) -> T:
        """Async twin of ``run``: waits on the clock's ``asleep``."""
        pending: BaseException | None = first
        retrying = tenacity.AsyncRetrying(retry=self.retry, stop=self.stop, wait=self.wait,
                                          sleep=self.clock.asleep, reraise=True)
        async for attempt in retrying:
            with attempt:
                if pending is not None:
                    failed, pending = pending, None
                    raise failed
                return await call()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def policy_for(config: RetryConfig, *, last: bool, deadline_at: float, clock: Clock,
               worth: Callable[[BaseException], bool] | None = None) -> Policy:
    """The retry policy for one candidate: more tries on the last one (nothing follows it).
    ``worth``: the request's retry predicate, when it knows more than the error."""
    tries = config.last_candidate_attempts if last else config.max_attempts
    backoff = wait_exponential(multiplier=config.backoff_initial, min=0,
                               max=config.backoff_max, exp_base=2)
    wait = _memo(wait_retry_after(backoff + wait_random(0, config.jitter)))
    return Policy(
        retry=retry_if_exception_type(ProviderError)
        & retry_if_worth_it(config.retry_after_cap, last, worth),
        stop=stop_after_attempt(tries) | stop_before_deadline(deadline_at, wait, clock),
        wait=wait,
        clock=clock,
    )
