"""``FakeProvider``: a provider that answers from a script, for tests and prototypes.

Owns a scriptable stand-in for any backend (httpx's ``MockTransport`` idea, one layer up):
each call takes the next scripted reply — a text, a routekit error, or a ``FakeReply`` with
a delay before its first byte, a failure after some chunks, a finish reason — and records
what it was asked (``calls``). Delays run on the router's clock, so with a ``FakeClock`` a
"server that hangs for 30 s" costs no real time, and the ``Deadline`` it was handed cuts it
exactly as a real server would be cut: past ``first_byte`` (or ``total``) it raises
``RequestTimeout``.

    from routekit import Router
    from routekit.testing import FakeClock, FakeProvider, FakeReply

    clock = FakeClock()
    dead = FakeProvider("ollama", replies=[FakeReply(delay=60)], clock=clock)
    router = Router(config, providers={"ollama": dead, "vllm": FakeProvider("vllm")},
                    clock=clock)

Thread-safe: the script and the call log are guarded by one lock.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable, Iterator, Union

from .._exceptions import ProviderError, RequestTimeout
from ._base import ChatRequest, Deadline, HealthReport

if TYPE_CHECKING:
    from openai.types import Completion
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from .._clock import Clock

__all__ = ["FakeCall", "FakeProvider", "FakeReply"]


@dataclass(frozen=True)
class FakeReply:
    """One scripted answer.

    ``delay``: seconds before the first byte (on the clock). ``error``: raised instead of
    answering (after ``delay``), or, for streams with ``fail_after`` set (which needs it),
    after that many text chunks. ``chunk_delay``: seconds between stream chunks; past the
    ``read`` or ``total`` of the deadline the provider was handed, the stream is cut there
    with ``RequestTimeout``, as a real server's stall is.
    """

    text: str = "ok"
    delay: float = 0.0
    error: ProviderError | None = None
    fail_after: int | None = None
    chunk_delay: float = 0.0
    finish_reason: str = "stop"
    role_chunk: bool = True  # streams start with a role-only chunk, as OpenAI's do

    def __post_init__(self) -> None:
        if self.fail_after is not None and self.error is None:
            raise ValueError("FakeReply(fail_after=...) needs error=: the error the stream "
                             "breaks with after that many text chunks")


Reply = Union[str, ProviderError, FakeReply, Callable[[ChatRequest], Any]]


@dataclass(frozen=True)
class FakeCall:
    request: ChatRequest
    deadline: Deadline
    stream: bool
    at: float


_ids = itertools.count(1)


class FakeProvider:
    """A provider that plays ``replies`` in order, then ``default`` forever. Without
    ``clock=`` it takes the clock of the router it is given to (``adopt_clock``)."""

    def __init__(self, name: str = "fake", kind: str = "ollama", *,
                 replies: Iterable[Reply] = (), default: Reply = "ok",
                 clock: Clock | None = None, healthy: bool = True) -> None:
        self.name = name
        self.kind = kind
        self.default = default
        self.healthy = healthy
        self.calls: list[FakeCall] = []
        self.health_checks = 0
        self.health_timeouts: list[float] = []  # the timeout each health() call was given
        self.closed = False
        self._replies: deque[Reply] = deque(replies)
        self._clock = clock
        self._lock = threading.Lock()

    # -- script -------------------------------------------------------------------------

    def adopt_clock(self, clock: Clock) -> None:
        """Run on ``clock`` unless built with a clock of its own (a router calls this)."""
        with self._lock:
            if self._clock is None:
                self._clock = clock

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.monotonic()

    def push(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def _next(self, request: ChatRequest, deadline: Deadline, stream: bool) -> FakeReply:
        now = self._now()
        with self._lock:
            if self.closed:
                raise ProviderError(f"fake provider {self.name!r} is closed",
                                    provider=self.name, model=request.model)
            self.calls.append(FakeCall(request, deadline, stream, now))
            reply = self._replies.popleft() if self._replies else self.default
        if callable(reply) and not isinstance(reply, (FakeReply, ProviderError)):
            reply = reply(request)
        if isinstance(reply, str):
            return FakeReply(text=reply)
        if isinstance(reply, ProviderError):
            return FakeReply(error=reply)
        if isinstance(reply, FakeReply):
            return reply
        raise TypeError(f"a FakeProvider reply must be a str, a ProviderError or a FakeReply, "
                        f"not {type(reply).__name__}")

    def _wait(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._clock is not None:
            self._clock.sleep(seconds)
        else:
            time.sleep(seconds)

    async def _await(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self._clock is not None:
            await self._clock.asleep(seconds)
        else:
            await asyncio.sleep(seconds)

    def _first_byte_limit(self, deadline: Deadline) -> float:
        fb = deadline.first_byte
        return deadline.total if fb is None or fb > deadline.total else fb

    def _stall(self, request: ChatRequest, deadline: Deadline, end: float, gap: float
               ) -> tuple[float, RequestTimeout] | None:
        """A gap of ``gap`` seconds before the next chunk: None when the deadline allows it,
        else (how long until it cuts the stream, the error), as a real server's stall ends:
        at ``read`` of silence, or at the attempt's ``total``."""
        left = end - self._now()
        if gap > deadline.read and deadline.read <= left:
            return deadline.read, RequestTimeout(
                f"fake provider {self.name!r}: no chunk within {deadline.read:g} s (read)",
                provider=self.name, model=request.model)
        if gap > left:
            return max(0.0, left), RequestTimeout(
                f"fake provider {self.name!r}: the attempt's deadline "
                f"({deadline.total:g} s) passed while streaming",
                provider=self.name, model=request.model)
        return None

    def _timeout(self, request: ChatRequest, what: str, limit: float) -> RequestTimeout:
        return RequestTimeout(f"fake provider {self.name!r}: {what} within {limit:g} s",
                              provider=self.name, model=request.model)

    # -- the protocol ------------------------------------------------------------------------

    def complete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        reply = self._next(request, deadline, False)
        limit = self._first_byte_limit(deadline)
        if reply.delay > limit:
            self._wait(limit)
            raise self._timeout(request, "no first byte", limit)
        self._wait(reply.delay)
        if reply.error is not None:
            raise reply.error
        return _completion(request, reply)

    def stream(self, request: ChatRequest, deadline: Deadline) -> Iterator[ChatCompletionChunk]:
        reply = self._next(request, deadline, True)
        return self._stream(request, deadline, reply)

    def _stream(self, request: ChatRequest, deadline: Deadline, reply: FakeReply
                ) -> Iterator[ChatCompletionChunk]:
        end = self._now() + deadline.total
        limit = self._first_byte_limit(deadline)
        if reply.delay > limit:
            self._wait(limit)
            raise self._timeout(request, "no first byte", limit)
        self._wait(reply.delay)
        if reply.error is not None and reply.fail_after is None:
            raise reply.error
        for i, chunk in enumerate(_chunks(request, reply)):
            if i and reply.chunk_delay:
                cut = self._stall(request, deadline, end, reply.chunk_delay)
                if cut is not None:
                    self._wait(cut[0])
                    raise cut[1]
                self._wait(reply.chunk_delay)
            yield chunk

    async def acomplete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        reply = self._next(request, deadline, False)
        limit = self._first_byte_limit(deadline)
        if reply.delay > limit:
            await self._await(limit)
            raise self._timeout(request, "no first byte", limit)
        await self._await(reply.delay)
        if reply.error is not None:
            raise reply.error
        return _completion(request, reply)

    def astream(self, request: ChatRequest, deadline: Deadline
                ) -> AsyncIterator[ChatCompletionChunk]:
        reply = self._next(request, deadline, True)
        return self._astream(request, deadline, reply)

    async def _astream(self, request: ChatRequest, deadline: Deadline, reply: FakeReply
                       ) -> AsyncIterator[ChatCompletionChunk]:
        end = self._now() + deadline.total
        limit = self._first_byte_limit(deadline)
        if reply.delay > limit:
            await self._await(limit)
            raise self._timeout(request, "no first byte", limit)
        await self._await(reply.delay)
        if reply.error is not None and reply.fail_after is None:
            raise reply.error
        for i, chunk in enumerate(_chunks(request, reply)):
            if i and reply.chunk_delay:
                cut = self._stall(request, deadline, end, reply.chunk_delay)
                if cut is not None:
                    await self._await(cut[0])
                    raise cut[1]
                await self._await(reply.chunk_delay)
            yield chunk

    # -- legacy text completions (providers._base.TextProvider) ---------------------------

    def complete_text(self, request: ChatRequest, deadline: Deadline) -> Completion:
        return _as_text(self.complete(request, deadline))

    def stream_text(self, request: ChatRequest, deadline: Deadline) -> Iterator[Completion]:
        return (_as_text_chunk(c) for c in self.stream(request, deadline))

    async def acomplete_text(self, request: ChatRequest, deadline: Deadline) -> Completion:
        return _as_text(await self.acomplete(request, deadline))

    async def astream_text(self, request: ChatRequest, deadline: Deadline
                           ) -> AsyncIterator[Completion]:
        async for chunk in self.astream(request, deadline):
            yield _as_text_chunk(chunk)

    def health(self, timeout: float = 1.0) -> HealthReport:
        with self._lock:
            self.health_checks += 1
            self.health_timeouts.append(timeout)
        if self.closed:
            return HealthReport(self.name, False, "closed", 0.0)
        return HealthReport(self.name, self.healthy, "fake: " + ("up" if self.healthy else "down"),
                            0.0)

    def warm(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to get ready."""

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FakeProvider({self.name!r}, kind={self.kind!r}, calls={len(self.calls)})"


# -- building openai types ------------------------------------------------------------------


def _usage(request: ChatRequest, text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", ""))) for m in request.messages) // 4 + 1
    completion = max(1, len(text.split()))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _completion(request: ChatRequest, reply: FakeReply) -> ChatCompletion:
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate({
        "id": f"fake-{next(_ids)}", "object": "chat.completion", "created": int(time.time()),
        "model": request.model_id,
        "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                     "message": {"role": "assistant", "content": reply.text}}],
        "usage": _usage(request, reply.text),
    })


def _chunks(request: ChatRequest, reply: FakeReply) -> Iterator[ChatCompletionChunk]:
    from openai.types.chat import ChatCompletionChunk

    cid = f"fake-{next(_ids)}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate({
            "id": cid, "object": "chat.completion.chunk", "created": created,
            "model": request.model_id,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })

    if reply.role_chunk:
        yield chunk({"role": "assistant", "content": ""}, None)
    words = reply.text.split(" ")
    for i, word in enumerate(words):
        if reply.fail_after is not None and i >= reply.fail_after:
            raise reply.error  # type: ignore[misc]  # FakeReply checks it is set
        yield chunk({"content": word if i == 0 else " " + word}, None)
    if reply.fail_after is not None and reply.error is not None:
        raise reply.error
    yield chunk({}, reply.finish_reason)
    options = request.params.get("stream_options")
    wants = (options.get("include_usage") if isinstance(options, dict)
             else getattr(options, "include_usage", None))
    if wants:  # the last chunk carries the usage and no choice, as OpenAI's does
        yield ChatCompletionChunk.model_validate({
            "id": cid, "object": "chat.completion.chunk", "created": created,
            "model": request.model_id, "choices": [],
            "usage": _usage(request, reply.text),
        })


def _as_text(completion: ChatCompletion) -> Completion:
    from openai.types import Completion

    return Completion.model_validate({
        "id": completion.id, "object": "text_completion", "created": completion.created,
        "model": completion.model,
        "choices": [{"index": c.index, "text": c.message.content or "", "logprobs": None,
                     "finish_reason": c.finish_reason} for c in completion.choices],
        "usage": completion.usage.model_dump() if completion.usage is not None else None,
    })


def _as_text_chunk(chunk: ChatCompletionChunk) -> Completion:
    from openai.types import Completion

    # construct, as openai's own Stream does: a chunk's finish_reason is null until the last.
    fields: dict[str, Any] = {
        "id": chunk.id, "object": "text_completion", "created": chunk.created,
        "model": chunk.model,
        "choices": [{"index": c.index, "text": (c.delta.content if c.delta else None) or "",
                     "logprobs": None, "finish_reason": c.finish_reason or None}
                    for c in chunk.choices],
    }
    if chunk.usage is not None:
        fields["usage"] = chunk.usage
    return Completion.construct(**fields)
