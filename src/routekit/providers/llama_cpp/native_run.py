"""The consumer side of one native request: relay pieces → ``openai`` chunks or a completion.

Owns ``NativeRun`` (sync and async consumption of a ``_core.Relay`` fed by the native decode
loop, the outcome of each last piece and each wait, stopping the loop and waiting until it
let go of the context) and ``RelayWaker`` (awaiting a relay's wake-up fd with
``loop.add_reader``: the event loop never blocks). Raises only routekit errors. Must not load
models or start jobs (``native`` does).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator

from ... import _cpp as _core
from ..._exceptions import ProviderError, RequestTimeout, StreamInterrupted
from .base import context_length_error, deadline_passed, first_byte_timeout
from .chunks import chat_chunk, usage_chunk
from .gate import ModelSlot

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionChunk

__all__ = ["COLLECT_CAPACITY", "NativeRun", "RELAY_CAPACITY", "RelayWaker"]

_now = time.monotonic

# Pieces the decode loop may run ahead of a slow stream consumer before it waits
# (backpressure).
RELAY_CAPACITY = 64
# complete() wants the whole answer: a roomy relay it drains when half full (or at the end),
# so its thread wakes a few times per answer rather than once per token (each wake-up is a
# context switch: ~50-100 us of CPU on the dev VM, ten times the Python work per token).
COLLECT_CAPACITY = 1024
_COLLECT_MIN = COLLECT_CAPACITY // 2
# Pieces one wake-up of the consumer takes at most (merged into one chunk).
_POP_MAX = 1024

_FINISH_REASONS = {_core.FINISH_STOP: "stop", _core.FINISH_LENGTH: "length"}


class NativeRun:
    """One request on the native loop: the relay's consumer side, as chunks or a completion.

    Not thread-safe: one consumer (the caller's thread or task) drives it.
    """

    __slots__ = ("provider_closed", "slot", "model", "relay", "job", "sent", "started",
                 "chunk_id", "created", "finish", "role_chunk", "include_usage")

    def __init__(self, provider_closed: Callable[[], bool], slot: ModelSlot, model: str,
                 relay: _core.Relay, job: _core.LlamaNativeJob, *,
                 include_usage: bool = False) -> None:
        self.provider_closed = provider_closed
        self.slot = slot
        self.model = model
        self.relay = relay
        self.job = job
        self.sent: list[str] = []
        self.started = False  # a chunk went out (streams) / a piece came in
        self.chunk_id = f"chatcmpl-{uuid.uuid4()}"
        self.created = int(time.time())
        self.finish: str | None = None
        self.role_chunk: ChatCompletionChunk | None = None
        # stream_options.include_usage: a last chunk with no choices and the usage.
        self.include_usage = include_usage

    # -- pieces → outcome -------------------------------------------------------------------

    def _status(self, status: int, *, streaming: bool) -> None:
        """Raise for a wait that ended without pieces."""
        slot = self.slot
        if status == _core.POP_TIMEOUT_FIRST:
            raise first_byte_timeout(slot)
        if status == _core.POP_TIMEOUT_TOTAL:
            if streaming:
                deadline_passed(slot, self.sent if self.started else None)
            raise RequestTimeout(
                f"deadline passed after {self.job.completion_tokens} tokens from in-process "
                f"model {slot.name!r}", provider=slot.provider, model=slot.name,
                partial="".join(self.sent),
            )
        self._interrupted(self._why(), streaming=streaming)

    def _why(self) -> str:
        return "provider closed" if self.slot.closing or self.provider_closed() else "cancelled"

    def _interrupted(self, why: str, *, streaming: bool) -> None:
        slot = self.slot
        text = f"in-process model {slot.name!r} stopped: {why}"
        if streaming and self.started:
            raise StreamInterrupted(text, provider=slot.provider, model=slot.name,
                                    partial="".join(self.sent))
        raise ProviderError(text, provider=slot.provider, model=slot.name)

    def _finished(self, finish: int, text: str, *, streaming: bool) -> None:
        """Handle a last piece; sets ``self.finish`` or raises."""
        reason = _FINISH_REASONS.get(finish)
        if reason is not None:
            self.finish = reason
            return
        slot = self.slot
        if finish == _core.FINISH_CONTEXT_FULL:
            n_tokens, n_ctx = (int(x) for x in text.split())
            raise context_length_error(slot, n_tokens, n_ctx)
        if finish == _core.FINISH_ERROR:
            self._interrupted(f"decode failed: {self.job.error or text}", streaming=streaming)
        self._interrupted(self._why(), streaming=streaming)

    def _chunk(self, delta: dict[str, str], finish: str | None) -> ChatCompletionChunk:
        return chat_chunk(self.chunk_id, self.model, self.created, delta, finish)

    def _chunks_of(self, text: str, finish: int) -> list[ChatCompletionChunk]:
        out = []
        if not self.started:
            out.append(self.role_chunk or self._chunk({"role": "assistant"}, None))
            self.started = True
        if text and finish in (_core.FINISH_NONE, _core.FINISH_STOP, _core.FINISH_LENGTH):
            self.sent.append(text)
            out.append(self._chunk({"content": text}, None))
        if finish:
            self._finished(finish, text, streaming=True)
            out.append(self._chunk({}, self.finish))
            if self.include_usage:
                job = self.job
                out.append(usage_chunk(self.chunk_id, self.model, self.created,
                                       job.prompt_tokens, job.completion_tokens))
        return out

    def _completion(self) -> dict[str, Any]:
        prompt, completion = self.job.prompt_tokens, self.job.completion_tokens
        return {
            "id": self.chunk_id, "object": "chat.completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "logprobs": None, "finish_reason": self.finish,
                         "message": {"role": "assistant", "content": "".join(self.sent)}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion},
        }

    def _take(self, text: str, finish: int) -> bool:
        """complete(): keep a piece; True at the last one."""
        if finish in (_core.FINISH_NONE, _core.FINISH_STOP, _core.FINISH_LENGTH):
            if text:
                self.sent.append(text)
        if finish:
            self._finished(finish, text, streaming=False)
            return True
        return False

    # -- sync -------------------------------------------------------------------------------

    def _prebuild(self) -> None:
        """Build the role chunk while the loop decodes the prompt, not after the first piece
        arrived: that is time off the first token's path (~0.1 ms on the dev VM, where a
        thread woken after an idle wait runs its first Python ~20x slower than warm)."""
        self.role_chunk = self._chunk({"role": "assistant"}, None)

    def chunks_sync(self) -> Iterator[ChatCompletionChunk]:
        relay = self.relay
        self._prebuild()
        while True:
            status, text, _, finish, _ = relay.pop_text(_POP_MAX, -1.0)
            if status != _core.POP_PIECES:
                self._status(status, streaming=True)
            if not finish and (self.slot.closing or self.provider_closed()):
                self._interrupted("provider closed", streaming=True)
            yield from self._chunks_of(text, finish)
            if finish:
                return

    def collect_sync(self) -> dict[str, Any]:
        relay = self.relay
        while True:
            status, text, _, finish, _ = relay.pop_text(_POP_MAX, -1.0, _COLLECT_MIN)
            if status != _core.POP_PIECES:
                if status == _core.POP_TIMEOUT_TOTAL:
                    self.stop_sync()  # the loop lets go; what it produced is the partial
                    self._salvage()
                self._status(status, streaming=False)
            if self._take(text, finish):
                return self._completion()

    def _salvage(self) -> None:
        """After giving up: keep the text the loop produced that was not taken yet."""
        _, text, _, finish, _ = self.relay.take_all_text()
        if text and finish in (_core.FINISH_NONE, _core.FINISH_STOP, _core.FINISH_LENGTH):
            self.sent.append(text)

    def stop_sync(self) -> None:
        """Stop the decode loop (if still running) and wait until it let go of the context.
        What it queued stays in the relay (``_salvage``) until ``close()``."""
        job = self.job
        if not job.done:
            job.cancel()  # also refuses its further pieces, freeing a push waiting for room
            job.wait()

    def close(self) -> None:
        self.relay.close()

    # -- async ------------------------------------------------------------------------------

    async def chunks_async(self) -> AsyncIterator[ChatCompletionChunk]:
        async with RelayWaker(self.relay) as waker:
            self._prebuild()
            while True:
                status, text, finish = await waker.next()
                if status != _core.POP_PIECES:
                    self._status(status, streaming=True)
                if not finish and (self.slot.closing or self.provider_closed()):
                    self._interrupted("provider closed", streaming=True)
                for chunk in self._chunks_of(text, finish):
                    yield chunk
                if finish:
                    return

    async def collect_async(self) -> dict[str, Any]:
        async with RelayWaker(self.relay, _COLLECT_MIN) as waker:
            while True:
                status, text, finish = await waker.next()
                if status != _core.POP_PIECES:
                    if status == _core.POP_TIMEOUT_TOTAL:
                        await self.stop_async()
                        self._salvage()
                    self._status(status, streaming=False)
                if self._take(text, finish):
                    return self._completion()

    async def stop_async(self) -> None:
        """stop_sync() without blocking the loop: the loop stops within one token and its
        finish() wakes the relay's fd."""
        job = self.job
        if job.done:
            return
        job.cancel()
        loop = asyncio.get_running_loop()
        fd = self.relay.fileno()
        deadline = _now() + 30.0
        while not job.done and not self.relay.arm_end() and _now() < deadline:
            woken: asyncio.Future[None] = loop.create_future()

            def readable(woken: asyncio.Future[None] = woken) -> None:
                self.relay.drain_fd()
                _resolve(woken)

            loop.add_reader(fd, readable)
            timer = loop.call_later(0.05, _resolve, woken)
            try:
                await woken
            finally:
                timer.cancel()
                loop.remove_reader(fd)
        if not job.done:  # a decode step slower than all that: wait off the loop
            await loop.run_in_executor(None, job.wait)


class RelayWaker:
    """Awaits a relay without blocking the event loop: ``poll_text_async`` arms the relay's
    fd when it finds nothing, and ``loop.add_reader`` wakes the awaiting task."""

    __slots__ = ("relay", "min", "fd", "loop", "waiter")

    def __init__(self, relay: _core.Relay, min_pieces: int = 1) -> None:
        self.relay = relay
        self.min = min_pieces
        self.fd = relay.fileno()
        self.loop = asyncio.get_running_loop()
        self.waiter: asyncio.Future[None] | None = None

    async def __aenter__(self) -> RelayWaker:
        self.loop.add_reader(self.fd, self._readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.loop.remove_reader(self.fd)

    def _readable(self) -> None:
        self.relay.drain_fd()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, max_wait: float | None = None) -> tuple[int, str, int]:
        """(status, text, finish) of the next pop that is not POP_EMPTY (or, with max_wait,
        POP_EMPTY once that many seconds passed)."""
        waited = False
        while True:
            status, text, _, finish, _, wait_s = self.relay.poll_text_async(_POP_MAX, self.min)
            if status != _core.POP_EMPTY or (waited and max_wait is not None):
                return status, text, finish
            if max_wait is not None:
                wait_s = max_wait if wait_s < 0 else min(wait_s, max_wait)
            waiter = self.waiter = self.loop.create_future()
            timer = None
            if wait_s >= 0:
                # A relay deadline (or max_wait) comes due: poll again then.
                timer = self.loop.call_later(wait_s, _resolve, waiter)
            try:
                await waiter
            finally:
                self.waiter = None
                if timer is not None:
                    timer.cancel()
            waited = True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
