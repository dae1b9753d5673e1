"""Streaming through a plan: fallback until the first text arrives, then committed.

Owns ``Stream`` / ``AsyncStream`` (iterators *and* context managers that close the provider's
stream in ``finally``) and their drivers. A stream **commits** on its first chunk that
carries something of the answer — text, reasoning text, a tool call, a refusal, or a finish
reason (``providers._base.chat_chunk_answers``) — not on a role-only first chunk, which
OpenAI-style servers send before anything else: a server that sends that and then stalls
(HTTP providers keep their ``first_byte`` limit until the answer begins) or resets is a
failed candidate, and the next one is tried.
Chunks before the commit are held back and delivered with it.

Before the commit, a failure moves on (or retries) exactly as a non-streaming call does;
after it, the answer belongs to that candidate and a failure raises ``StreamInterrupted``
with the text delivered so far (``RequestState.partial``, the one place it is kept). This
module alone builds that error. ``create(stream=True)`` returns once the stream has
committed, so routing errors (``AllCandidatesFailed``) are raised by ``create`` itself.
"""

from __future__ import annotations

import threading
from threading import get_ident as _thread_id
from typing import (
    TYPE_CHECKING, Any, AsyncGenerator, AsyncIterator, Callable, Generator, Iterator,
)

from .._compat.errors import to_openai
from .._exceptions import ProviderError, RouteKitError, StreamInterrupted
from .endpoints import astream_call, chunk_reader, stream_call

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk

    from .entries import ModelEntry
    from .request import RequestState
    from .route import Route

__all__ = ["AsyncStream", "Stream"]

Release = Callable[[], None]


def _ended_early(entry: ModelEntry) -> StreamInterrupted:
    return StreamInterrupted("stream ended before any text", provider=entry.provider_name,
                             model=entry.name)


def _interrupted(req: RequestState, entry: ModelEntry, exc: ProviderError) -> RouteKitError:
    """A committed stream broke: record it, and build the error with the partial text. No
    fallback now: switching models mid-answer would splice two different answers."""
    if req.router.closed:  # not the provider's fault: its connection was closed under it
        req.release_permits(entry)
        closed = StreamInterrupted(
            f"stream from {entry.name} via {entry.provider_name} stopped: the router was "
            "closed while it was read", provider=entry.provider_name, model=entry.name,
            partial=req.partial_text())
        req.record_error(entry, closed)  # the route says so, not the closed socket's error
        return req.with_route(closed)
    req.failed_call(entry, exc)
    req.record_error(entry, exc)
    return req.with_route(StreamInterrupted(
        f"stream from {entry.name} via {entry.provider_name} broke after its first text "
        f"({type(exc).__name__}: {exc})",
        provider=entry.provider_name, model=entry.name, partial=req.partial_text(),
    ))


_CLOSED_MID_READ = "the stream was closed while a read was waiting for its next chunk"


def _closed_mid_read(req: RequestState, entry: ModelEntry) -> RouteKitError:
    """The caller closed the stream from another task while this read waited: the attempt
    ends in an error the caller made (its breakers hear nothing of it)."""
    exc = StreamInterrupted(_CLOSED_MID_READ, provider=entry.provider_name, model=entry.name,
                            partial=req.partial_text())
    req.release_permits(entry)
    req.record_error(entry, exc)
    return req.with_route(exc)


# -- sync ----------------------------------------------------------------------------------


class Stream:
    """Chunks of one routed streaming answer. Iterate it, or use it as a context manager.

    ``route`` is complete once the stream has ended or been closed. ``response`` is an
    ``httpx.Response`` standing for the stream, as openai's ``Stream.response`` is (status 200,
    ``x-routekit-*`` headers naming the candidate that answers). Legacy text completions
    (``completions.create(stream=True)``) stream openai ``Completion`` chunks through the same
    class. One consumer; ``close()`` may come from another thread while it waits for a
    chunk (a watchdog's): that read ends at once with ``StreamInterrupted``.
    """

    def __init__(self, req: RequestState, release: Release | None = None) -> None:
        self._req = req
        self._response: Any = None
        self._closed_by_other = [False]  # the driver reads it: close() from another thread
        self._gen = _run_sync(req, release, self._closed_by_other)
        self._reader: int | None = None  # the thread inside __next__, while one is
        self._read_done: Any = None  # a threading.Event while close() waits for that read
        # Prime: fail over until the stream commits, so create() raises routing errors.
        self._first: ChatCompletionChunk | None = next(self._gen)

    @property
    def route(self) -> Route:
        return self._req.route()

    @property
    def response(self) -> Any:
        if self._response is None:
            self._response = _response(self._req)
        return self._response

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        first = self._first
        if first is not None:
            self._first = None
            return first
        self._reader = _thread_id()
        try:
            return next(self._gen)
        except RouteKitError as exc:
            to_openai(exc)
            raise
        finally:
            self._reader = None
            done = self._read_done
            if done is not None:
                done.set()

    def close(self) -> None:
        """End the stream. From another thread while a read waits (a watchdog's close):
        that read ends at once with ``StreamInterrupted`` (an HTTP read: its socket is shut
        down; an in-process one at its next token), and close() returns once it has."""
        self._first = None
        reader = self._reader
        if reader is not None and reader != _thread_id():
            from ..providers.http.transport import interrupt_read

            done = self._read_done = threading.Event()
            self._closed_by_other[0] = True
            if self._reader is None:
                return  # the read ended meanwhile; it saw the flag or will at its next
            # Again every 50 ms: the reader may be between two reads at the first try.
            for _ in range(100):
                interrupt_read(reader)
                if done.wait(0.05):
                    break
            return
        self._gen.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def text(self) -> str:
        """Consume the rest of the stream and return its text."""
        text_of = chunk_reader(self._req)[0]
        return "".join(text_of(c) for c in self)


def _response(req: RequestState) -> Any:
    from .._compat.http import make_response, route_headers

    headers = route_headers(req.route())
    entry = req.candidate
    if entry is not None:
        headers["x-routekit-model"] = entry.name
        headers["x-routekit-provider"] = entry.provider_name
    headers["content-type"] = "text/event-stream"
    path = "/chat/completions" if req.prompt is None else "/completions"
    return make_response(200, headers=headers, path=path)


def _open_sync(req: RequestState, entry: ModelEntry
               ) -> tuple[Iterator[ChatCompletionChunk], list[ChatCompletionChunk]]:
    """Open a stream on ``entry`` and read up to its commit, retrying per policy."""
    call = stream_call(req, entry)
    commits = chunk_reader(req)[1]
    request = req.chat_request(entry)

    def once() -> tuple[Iterator[ChatCompletionChunk], list[ChatCompletionChunk]]:
        deadline = req.deadline()
        req.tries += 1
        it: Iterator[ChatCompletionChunk] = call(request, deadline)
        held: list[ChatCompletionChunk] = []
        try:
            for chunk in it:
                held.append(chunk)
                if commits(chunk):
                    break
            else:
                raise _ended_early(entry)
        except ProviderError as exc:
            _close(it)
            req.failed_call(entry, exc)
            raise
        except BaseException:  # cancelled, or a bug: no verdict, but give permits back
            _close(it)
            req.release_permits(entry)
            raise
        req.succeeded_call(entry)
        return it, held

    retry_cfg = req.retry
    try:
        return once()
    except ProviderError as exc:
        if not req.worth_another_try(exc):
            raise
        first = exc
    from .retry import policy_for  # tenacity, on the first retry only

    policy = policy_for(retry_cfg, last=req.last, deadline_at=req.deadline_at, clock=req.clock,
                        worth=req.worth_another_try)
    return policy.run(first, once)


class _ClosedByOther(Exception):
    """Raised in the sync driver after a chunk when close() came from another thread."""


def _run_sync(req: RequestState, release: Release | None, closed_by_other: list[bool]
              ) -> Generator[ChatCompletionChunk, None, None]:
    error: BaseException | None = None
    usage: Any = None
    text_of = chunk_reader(req)[0]
    try:
        for entry in req.candidates():
            try:
                bulkhead = entry.bulkhead
                if (bulkhead is not None and not bulkhead.try_enter()
                    and not bulkhead.enter(req.queue_wait())):
                    req.busy(entry, bulkhead.describe())
                    continue
                try:
                    try:
                        it, held = _open_sync(req, entry)
                    except ProviderError as exc:
                        req.give_up(entry, exc)
                        continue
                    except BaseException as exc:  # interrupted while opening: on record
                        req.record_error(entry, exc)
                        if isinstance(exc, RouteKitError) and exc.route is None:
                            req.with_route(exc)  # the router closed under the call
                        raise
                    req.first_byte_at = req.clock.now()
                    partial = req.partial
                    failed = False
                    try:
                        for chunk in held:
                            partial.append(text_of(chunk))
                            if chunk.usage is not None:
                                usage = chunk.usage
                            yield chunk
                            if closed_by_other[0]:
                                raise _ClosedByOther
                        for chunk in it:
                            partial.append(text_of(chunk))
                            if chunk.usage is not None:
                                usage = chunk.usage
                            yield chunk
                            if closed_by_other[0]:
                                raise _ClosedByOther
                    except (ProviderError, _ClosedByOther) as exc:
                        failed = True
                        if closed_by_other[0]:  # its read was ended by that close()
                            raise _closed_mid_read(req, entry) from None
                        assert isinstance(exc, ProviderError)
                        raise _interrupted(req, entry, exc) from exc
                    except GeneratorExit:  # the caller closed early: served
                        raise
                    except BaseException as exc:  # interrupted mid-read (Ctrl-C): not served
                        failed = True
                        req.record_error(entry, exc)
                        raise
                    finally:
                        _close(it)
                        if not failed:  # a normal end, or the caller closed early: served
                            req.answered(entry, usage)
                    return
                finally:
                    if bulkhead is not None:
                        bulkhead.leave()
            finally:
                if req.permits:  # no verdict: cancelled, closed, a deadline
                    req.release_permits(entry)
        raise req.all_failed()
    except GeneratorExit:  # the caller closed the stream: what it read was the answer
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        if release is not None:
            release()
        req.finish(error, usage, stream=True)


def _close(it: Iterator[ChatCompletionChunk]) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


# -- async ---------------------------------------------------------------------------------


class AsyncStream:
    """Async twin of ``Stream``: ``async for`` it, or ``async with`` it. ``close()`` (or
    ``aclose()``) may come from another task while one is waiting for a chunk, as a
    watchdog's would: the waiting read ends at once with ``StreamInterrupted``, as openai's
    stream ends it with ``APIConnectionError``."""

    def __init__(self, req: RequestState, release: Release | None = None) -> None:
        self._req = req
        self._response: Any = None
        self._closed_by_other = [False]  # the driver reads it: a cancellation is a close
        self._gen = _run_async(req, release, self._closed_by_other)
        self._first: ChatCompletionChunk | None = None
        self._reader: Any = None  # the task inside __anext__, while one is
        self._closing: Any = None  # an asyncio.Event while close() stops that read
        self._closed: Any = None  # an asyncio.Event: set once the first close() is done
        import asyncio  # here, not at import: `import routekit` must not load asyncio

        self._asyncio = asyncio

    async def _prime(self) -> AsyncStream:
        self._first = await self._gen.__anext__()
        return self

    @property
    def route(self) -> Route:
        return self._req.route()

    @property
    def response(self) -> Any:
        if self._response is None:
            self._response = _response(self._req)
        return self._response

    def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        first = self._first
        if first is not None:
            self._first = None
            return first
        if self._closing is not None:
            raise StopAsyncIteration
        self._reader = self._asyncio.current_task()
        try:
            return await self._gen.__anext__()
        except RouteKitError as exc:
            if self._closing is not None:
                self._uncancel()  # the driver turned close()'s cancellation into this
            to_openai(exc)
            raise
        except self._asyncio.CancelledError:
            if self._closing is None:
                raise
            # Cancelled by close() outside the driver's reach: the same error, made here.
            self._uncancel()
            exc = self._req.with_route(StreamInterrupted(_CLOSED_MID_READ,
                                                         partial=self._req.partial_text()))
            to_openai(exc)
            raise exc from None
        finally:
            self._reader = None
            if self._closing is not None:
                self._closing.set()  # however the read ended, close() may go on

    async def close(self) -> None:
        self._first = None
        done = self._closed
        if done is not None:  # another close() is at work, or done: wait for it
            await done.wait()
            return
        done = self._closed = self._asyncio.Event()
        try:
            reader = self._reader
            if reader is not None and reader is not self._asyncio.current_task():
                # A read is waiting in another task: the generator cannot be closed under
                # it. Cancel that read (once); its task carries on with StreamInterrupted.
                closing = self._closing = self._asyncio.Event()
                self._closed_by_other[0] = True
                reader.cancel()
                await closing.wait()
            await self._gen.aclose()
        finally:
            done.set()

    aclose = close

    def _uncancel(self) -> None:
        """The reader's task was cancelled by close(), not by whoever runs it: take the
        cancellation back (3.11+ counts them), so the task carries on."""
        uncancel = getattr(self._reader, "uncancel", None)
        if uncancel is not None:
            uncancel()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def text(self) -> str:
        text_of = chunk_reader(self._req)[0]
        return "".join([text_of(c) async for c in self])


async def _aopen(req: RequestState, entry: ModelEntry
                 ) -> tuple[AsyncIterator[ChatCompletionChunk], list[ChatCompletionChunk]]:
    call = astream_call(req, entry)
    commits = chunk_reader(req)[1]
    request = req.chat_request(entry)

    async def once() -> tuple[AsyncIterator[ChatCompletionChunk], list[ChatCompletionChunk]]:
        deadline = req.deadline()
        req.tries += 1
        ait: AsyncIterator[ChatCompletionChunk] = call(request, deadline)
        held: list[ChatCompletionChunk] = []
        try:
            async for chunk in ait:
                held.append(chunk)
                if commits(chunk):
                    break
            else:
                raise _ended_early(entry)
        except ProviderError as exc:
            await _aclose(ait)
            req.failed_call(entry, exc)
            raise
        except BaseException:
            await _aclose(ait)
            req.release_permits(entry)
            raise
        req.succeeded_call(entry)
        return ait, held

    retry_cfg = req.retry
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


async def _run_async(req: RequestState, release: Release | None,
                     closed_by_other: list[bool]) -> AsyncGenerator[ChatCompletionChunk, None]:
    error: BaseException | None = None
    usage: Any = None
    text_of = chunk_reader(req)[0]
    try:
        for entry in req.candidates():
            try:
                bulkhead = entry.bulkhead
                if (bulkhead is not None and not bulkhead.try_enter()
                    and not await bulkhead.aenter(req.queue_wait())):
                    req.busy(entry, bulkhead.describe())
                    continue
                try:
                    try:
                        ait, held = await _aopen(req, entry)
                    except ProviderError as exc:
                        req.give_up(entry, exc)
                        continue
                    except BaseException as exc:  # cancelled while opening: on record
                        req.record_error(entry, exc)
                        if isinstance(exc, RouteKitError) and exc.route is None:
                            req.with_route(exc)
                        raise
                    req.first_byte_at = req.clock.now()
                    partial = req.partial
                    failed = False
                    try:
                        for chunk in held:
                            partial.append(text_of(chunk))
                            if chunk.usage is not None:
                                usage = chunk.usage
                            yield chunk
                        async for chunk in ait:
                            partial.append(text_of(chunk))
                            if chunk.usage is not None:
                                usage = chunk.usage
                            yield chunk
                    except ProviderError as exc:
                        failed = True
                        raise _interrupted(req, entry, exc) from exc
                    except GeneratorExit:  # the caller closed early: served
                        raise
                    except BaseException as exc:
                        failed = True
                        if closed_by_other[0]:  # close() from another task cancelled this read
                            raise _closed_mid_read(req, entry) from None
                        req.record_error(entry, exc)  # cancelled mid-read: not served
                        raise
                    finally:
                        await _aclose(ait)
                        if not failed:
                            req.answered(entry, usage)
                    return
                finally:
                    if bulkhead is not None:
                        bulkhead.leave()
            finally:
                if req.permits:  # no verdict: cancelled, closed, a deadline
                    req.release_permits(entry)
        raise req.all_failed()
    except GeneratorExit:  # the caller closed the stream: what it read was the answer
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        if release is not None:
            release()
        req.finish(error, usage, stream=True)


async def _aclose(ait: AsyncIterator[ChatCompletionChunk]) -> None:
    aclose = getattr(ait, "aclose", None)
    if aclose is not None:
        await aclose()
