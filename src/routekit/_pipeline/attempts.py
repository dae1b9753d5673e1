"""Non-streaming requests: walk the plan, call each candidate (retrying per policy), answer.

Owns the two drivers, ``complete_sync`` and ``complete_async``, which differ only where they
wait (provider calls, bulkhead queues, retry sleeps). The same drivers serve chat and legacy
text completions (``endpoints`` picks the provider call). Every decision — which candidate, its
timeouts, breaker bookkeeping, retry or move on or raise — is ``RequestState``'s and
``retry.policy_for``'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._exceptions import ProviderError, RouteKitError
from .endpoints import acomplete_call, complete_call

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion

    from .entries import ModelEntry
    from .request import RequestState

__all__ = ["complete_async", "complete_sync"]


def complete_sync(req: RequestState) -> ChatCompletion:
    retry_cfg = req.retry
    for entry in req.candidates():
        try:
            bulkhead = entry.bulkhead
            if (bulkhead is not None and not bulkhead.try_enter()
                    and not bulkhead.enter(req.queue_wait())):
                req.busy(entry, bulkhead.describe())
                continue
            try:
                result = _call_sync(req, entry, retry_cfg)
            except ProviderError as exc:
                req.give_up(entry, exc)
                continue
            except BaseException as exc:  # cancelled mid-call: the route and metrics say so
                req.record_error(entry, exc)
                if isinstance(exc, RouteKitError) and exc.route is None:
                    req.with_route(exc)  # the router closed under the call
                raise
            finally:
                if bulkhead is not None:
                    bulkhead.leave()
            req.answered(entry, result.usage)
            return result
        finally:
            if req.permits:  # the turn ended with no verdict: a deadline, a cancellation
                req.release_permits(entry)
    raise req.all_failed()


async def complete_async(req: RequestState) -> ChatCompletion:
    retry_cfg = req.retry
    for entry in req.candidates():
        try:
            bulkhead = entry.bulkhead
            if (bulkhead is not None and not bulkhead.try_enter()
                    and not await bulkhead.aenter(req.queue_wait())):
                req.busy(entry, bulkhead.describe())
                continue
            try:
                result = await _call_async(req, entry, retry_cfg)
            except ProviderError as exc:
                req.give_up(entry, exc)
                continue
            except BaseException as exc:  # cancelled mid-call: the route and metrics say so
                req.record_error(entry, exc)
                if isinstance(exc, RouteKitError) and exc.route is None:
                    req.with_route(exc)  # the router closed under the call
                raise
            finally:
                if bulkhead is not None:
                    bulkhead.leave()
            req.answered(entry, result.usage)
            return result
        finally:
            if req.permits:  # the turn ended with no verdict: a deadline, a cancellation
                req.release_permits(entry)
    raise req.all_failed()


def _call_sync(req: RequestState, entry: ModelEntry, retry_cfg: Any) -> ChatCompletion:
    call = complete_call(req, entry)
    request = req.chat_request(entry)

    def once() -> ChatCompletion:
        deadline = req.deadline()  # raises RequestTimeout once the request's time is up
        req.tries += 1
        try:
            result: ChatCompletion = call(request, deadline)
        except ProviderError as exc:
            req.failed_call(entry, exc)
            raise
        except BaseException:  # cancelled, or a bug: no verdict, but give permits back
            req.release_permits(entry)
            raise
        req.succeeded_call(entry)
        return result

    try:
        return once()  # most calls succeed: no tenacity machinery on the fast path
    except ProviderError as exc:
        if not req.worth_another_try(exc):
            raise
        first = exc
    from .retry import policy_for  # tenacity, on the first retry only

    policy = policy_for(retry_cfg, last=req.last, deadline_at=req.deadline_at, clock=req.clock,
                        worth=req.worth_another_try)
    return policy.run(first, once)


async def _call_async(req: RequestState, entry: ModelEntry, retry_cfg: Any) -> ChatCompletion:
    call = acomplete_call(req, entry)
    request = req.chat_request(entry)

    async def once() -> ChatCompletion:
        deadline = req.deadline()  # raises RequestTimeout once the request's time is up
        req.tries += 1
        try:
            result: ChatCompletion = await call(request, deadline)
        except ProviderError as exc:
            req.failed_call(entry, exc)
            raise
        except BaseException:  # cancelled, or a bug: no verdict, but give permits back
            req.release_permits(entry)
            raise
        req.succeeded_call(entry)
        return result

    try:
        return await once()
    except ProviderError as exc:
        if not req.worth_another_try(exc):
            raise
        first = exc
    from .retry import policy_for  # tenacity, on the first retry only

    policy = policy_for(retry_cfg, last=req.last, deadline_at=req.deadline_at, clock=req.clock,
                        worth=req.worth_another_try)
    return await policy.arun(first, once)
