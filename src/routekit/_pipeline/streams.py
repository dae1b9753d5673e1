"""Streaming through a plan: fallback before the first token, then committed.

Owns ``Stream`` / ``AsyncStream`` (iterators *and* context managers that close the provider's
stream in ``finally``) and the streaming attempt loop. Before the first chunk arrives, a
failure moves on to the next candidate exactly as a non-streaming call does; after it, the
answer is committed to that candidate and a failure raises ``StreamInterrupted`` carrying the
partial text and the route. ``create(stream=True)`` returns once the first chunk is ready, so
``AllCandidatesFailed`` is raised by ``create`` itself, like the openai client's errors.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, AsyncGenerator, AsyncIterator, Generator, Iterator

from .attempts import (
    Candidate, RouteRecorder, attempt_deadline, eligible, record_failure,
)
from .._config.model import Config
from .._exceptions import ProviderError, RouteKitError, StreamInterrupted
from .retry import CandidateRetry
from .route import Route
from ..providers._base import Deadline

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk

__all__ = ["AsyncStream", "Stream"]

_now = time.perf_counter


def _chunk_text(chunk: ChatCompletionChunk) -> str:
    if chunk.choices:
        delta = chunk.choices[0].delta
        if delta is not None and delta.content:
            return delta.content
    return ""


class Stream:
    """Chunks of one routed streaming answer. Iterate it, or use it as a context manager.

    ``route`` is complete once the stream has ended or been closed. Not thread-safe: one
    consumer.
    """

    def __init__(self, config: Config, requested: str, candidates: list[Candidate],
                 deadline_s: float) -> None:
        self._rec = RouteRecorder(requested)
        self._gen = self._run(config, candidates, deadline_s)
        # Prime: fail over until a first chunk exists, so create() raises routing errors.
        self._first: ChatCompletionChunk | None = next(self._gen)

    @property
    def route(self) -> Route:
        return self._rec.build()

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        first = self._first
        if first is not None:
            self._first = None
            return first
        return next(self._gen)

    def close(self) -> None:
        self._first = None
        self._gen.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def text(self) -> str:
        """Consume the rest of the stream and return its text."""
        return "".join(_chunk_text(c) for c in self)

    def _run(self, config: Config, candidates: list[Candidate], deadline_s: float
             ) -> Generator[ChatCompletionChunk, None, None]:
        rec = self._rec
        deadline_at = _now() + deadline_s
        for cand, policy in eligible(config, candidates, rec, deadline_at):
            started = _now()
            try:
                it, first = policy.run(lambda: _open(cand, attempt_deadline(cand, deadline_at)))
            except ProviderError as exc:
                record_failure(rec, cand, policy, started, exc)
                continue
            ttfb = _now()
            parts: list[str] = []
            failed = False
            try:
                parts.append(_chunk_text(first))
                yield first
                for chunk in it:
                    parts.append(_chunk_text(chunk))
                    yield chunk
            except ProviderError as exc:
                failed = True
                raise _interrupted(rec, cand, policy, started, ttfb, parts, exc) from exc
            finally:
                _close(it)
                if not failed:  # normal end, or the caller closed early: the answer was served
                    rec.ok(cand, policy.tries, started, ttfb)
            return
        raise rec.all_failed()


def _interrupted(rec: RouteRecorder, cand: Candidate, policy: CandidateRetry, started: float,
                 ttfb: float, parts: list[str], exc: ProviderError) -> RouteKitError:
    """A committed stream broke: record it and build the error carrying the partial text.
    No fallback now: switching models mid-answer would splice two different answers."""
    rec.fail(cand, policy.tries, started, exc, ttfb)
    return rec.raise_with_route(StreamInterrupted(
        f"stream from {cand.model} via {cand.provider_name} broke after the first token "
        f"({type(exc).__name__}: {exc})",
        provider=cand.provider_name, model=cand.model, partial="".join(parts),
    ))


def _open(cand: Candidate, deadline: Deadline
          ) -> tuple[Iterator[ChatCompletionChunk], ChatCompletionChunk]:
    """Open a stream and wait for its first chunk (the commit point)."""
    it = cand.provider.stream(cand.request, deadline)
    try:
        return it, next(it)
    except StopIteration:
        raise StreamInterrupted("stream ended before its first chunk",
                                provider=cand.provider_name, model=cand.model) from None
    except BaseException:
        _close(it)
        raise


async def _aopen(cand: Candidate, deadline: Deadline
                 ) -> tuple[AsyncIterator[ChatCompletionChunk], ChatCompletionChunk]:
    ait = cand.provider.astream(cand.request, deadline)
    try:
        return ait, await ait.__anext__()
    except StopAsyncIteration:
        raise StreamInterrupted("stream ended before its first chunk",
                                provider=cand.provider_name, model=cand.model) from None
    except BaseException:
        await _aclose(ait)
        raise


def _close(it: Iterator[ChatCompletionChunk]) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


class AsyncStream:
    """Async twin of ``Stream``: ``async for`` it, or ``async with`` it."""

    def __init__(self, config: Config, requested: str, candidates: list[Candidate],
                 deadline_s: float) -> None:
        self._rec = RouteRecorder(requested)
        self._gen = self._run(config, candidates, deadline_s)
        self._first: ChatCompletionChunk | None = None

    async def _prime(self) -> AsyncStream:
        self._first = await self._gen.__anext__()
        return self

    @property
    def route(self) -> Route:
        return self._rec.build()

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        first = self._first
        if first is not None:
            self._first = None
            return first
        return await self._gen.__anext__()

    async def close(self) -> None:
        self._first = None
        await self._gen.aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def text(self) -> str:
        return "".join([_chunk_text(c) async for c in self])

    async def _run(self, config: Config, candidates: list[Candidate], deadline_s: float
                   ) -> AsyncGenerator[ChatCompletionChunk, None]:
        rec = self._rec
        deadline_at = _now() + deadline_s
        for cand, policy in eligible(config, candidates, rec, deadline_at):
            started = _now()
            try:
                ait, first = await policy.arun(
                    lambda: _aopen(cand, attempt_deadline(cand, deadline_at))
                )
            except ProviderError as exc:
                record_failure(rec, cand, policy, started, exc)
                continue
            ttfb = _now()
            parts: list[str] = []
            failed = False
            try:
                parts.append(_chunk_text(first))
                yield first
                async for chunk in ait:
                    parts.append(_chunk_text(chunk))
                    yield chunk
            except ProviderError as exc:
                failed = True
                raise _interrupted(rec, cand, policy, started, ttfb, parts, exc) from exc
            finally:
                await _aclose(ait)
                if not failed:
                    rec.ok(cand, policy.tries, started, ttfb)
            return
        raise rec.all_failed()


async def _aclose(ait: AsyncIterator[ChatCompletionChunk]) -> None:
    aclose = getattr(ait, "aclose", None)
    if aclose is not None:
        await aclose()
