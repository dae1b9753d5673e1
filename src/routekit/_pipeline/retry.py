"""Retry policy for one candidate, expressed as tenacity strategies.

Owns *whether* and *when* to try the same candidate again. Moving on to the next candidate
is the attempt loop's job (``_attempt.py``); classifying errors is the providers' job.

Rules (see the router issue): transient failures (connection reset, timeouts, 408/409/429/5xx,
in-process busy) are retried with exponential backoff and jitter, honouring Retry-After up to
a cap. Retry only when it is cheaper than moving on: a refused connection (nothing listening)
and a Retry-After above the cap move on at once, and the request deadline is never slept past.
The last candidate gets more tries, since nothing follows it.
"""

from __future__ import annotations

import random
import time
from typing import Awaitable, Callable, TypeVar

import tenacity

from .._config.model import RetryConfig
from .._exceptions import ConnectionFailed, ProviderError, RateLimited

__all__ = ["CandidateRetry", "should_retry"]

T = TypeVar("T")


def should_retry(exc: BaseException, retry_after_cap: float) -> bool:
    if not isinstance(exc, ProviderError) or not exc.retryable:
        return False
    if isinstance(exc, ConnectionFailed) and exc.refused:
        return False  # nothing listens: another try costs time and cannot succeed soon
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return exc.retry_after <= retry_after_cap
    return True


class CandidateRetry:
    """tenacity ``retry`` / ``stop`` / ``wait`` for one candidate of one request.

    Built per candidate (cheap: plain attributes); not shared between threads.
    """

    __slots__ = ("_policy", "_max_tries", "_deadline_at", "_clock", "_next_wait", "tries")

    def __init__(
        self,
        policy: RetryConfig,
        *,
        last: bool,
        deadline_at: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._policy = policy
        self._max_tries = policy.last_candidate_attempts if last else policy.max_attempts
        self._deadline_at = deadline_at
        self._clock = clock
        self._next_wait = 0.0
        self.tries = 0  # calls made so far by run() / arun()

    def run(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` until it succeeds or the policy gives up (then its error propagates).

        The first call runs outside tenacity: most calls succeed, and tenacity's machinery
        (futures, locks) costs ~20 µs. A first failure is handed to tenacity as its attempt 1,
        so waits and stops are decided exactly as if tenacity had made that call.
        """
        self.tries = 1
        try:
            return fn()
        except ProviderError as exc:
            if not should_retry(exc, self._policy.retry_after_cap):
                raise
            pending: BaseException | None = exc
        for attempt in self.retrying():
            with attempt:
                if pending is not None:
                    failed, pending = pending, None
                    raise failed
                self.tries += 1
                return fn()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def arun(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Async twin of ``run``."""
        self.tries = 1
        try:
            return await fn()
        except ProviderError as exc:
            if not should_retry(exc, self._policy.retry_after_cap):
                raise
            pending: BaseException | None = exc
        async for attempt in self.async_retrying():
            with attempt:
                if pending is not None:
                    failed, pending = pending, None
                    raise failed
                self.tries += 1
                return await fn()
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    # tenacity calls retry(), then stop(), then wait(), each with the same RetryCallState.
    def retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        exc = outcome.exception()
        return exc is not None and should_retry(exc, self._policy.retry_after_cap)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self._max_tries:
            return True
        self._next_wait = self._compute_wait(state)
        # Sleeping past the request deadline is pointless: the next candidate gets the time.
        return self._clock() + self._next_wait >= self._deadline_at

    def wait(self, state: tenacity.RetryCallState) -> float:
        return self._next_wait

    def _compute_wait(self, state: tenacity.RetryCallState) -> float:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        p = self._policy
        backoff = min(p.backoff_max, p.backoff_initial * (2.0 ** (state.attempt_number - 1)))
        return backoff + random.uniform(0.0, p.jitter)

    def retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=self.retry, stop=self.stop, wait=self.wait, reraise=True
        )

    def async_retrying(self) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            retry=self.retry, stop=self.stop, wait=self.wait, reraise=True
        )
