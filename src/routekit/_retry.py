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
from typing import Callable

import tenacity

from ._config import RetryConfig
from ._exceptions import ConnectionFailed, ProviderError, RateLimited

__all__ = ["CandidateRetry", "should_retry"]


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

    __slots__ = ("_policy", "_max_tries", "_deadline_at", "_clock", "_next_wait")

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
        backoff = min(p.backoff_max, p.backoff_initial * (2 ** (state.attempt_number - 1)))
        return backoff + random.uniform(0.0, p.jitter)

    def retrying(self) -> tenacity.Retrying:
        return tenacity.Retrying(
            retry=self.retry, stop=self.stop, wait=self.wait, reraise=True
        )

    def async_retrying(self) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            retry=self.retry, stop=self.stop, wait=self.wait, reraise=True
        )
