"""In-process llama.cpp provider: ``llama_cpp.Llama`` behind routekit's provider protocol.

Owns ``LlamaCppProvider``'s request paths — sync and async (the thread bridge and stream
backpressure for the async ones), decoding with deadline and close checks between tokens,
building the ``openai`` result types from llama's dicts, and translating llama_cpp errors
into routekit's tree (here, once). Its lifecycle (``warm``, ``close``, ``health``) is
``base.InProcessProvider``'s, shared with the native provider. Must not retry (the attempt
loop does), print, or import ``llama_cpp`` / ``openai`` before a model is used.

Its parts live next to it: the per-model gate and queue in ``gate``, loading a model in
``load``, the OpenAI → llama parameter mapping (what is passed on, what refused) in
``params``, formatting a chat as llama-cpp-python does in ``chat``, model files in
``model_files``.

Deadlines. ``Deadline.total`` bounds the wait for the model's gate (``RequestTimeout``) and
is checked between tokens. Streams: before any chunk went out it raises ``RequestTimeout``;
after, ``StreamInterrupted`` with the text already sent (the caller has seen those chunks,
so no other candidate can take over invisibly). ``complete`` formats the chat once
(``chat.plan_chat``) and decodes through ``Llama.create_completion`` with a stopping
criterion that checks the deadline (and an async caller's cancellation) at every token: a
completion cut by its deadline raises ``RequestTimeout`` whose ``partial`` holds the text
decoded so far; one that finishes carries exactly the usage and finish reason of
``create_chat_completion(stream=False)`` (it is the same code path). ``connect`` and ``read``
do not apply in-process.

Legacy text completions (``complete_text``, ``stream_text`` and their async twins, for a
request whose ``prompt`` is set) take the same paths, continuing the prompt as it is with
``create_completion`` (no chat template), with the same per-token deadline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncGenerator,
    AsyncIterator,
    Generator,
    Iterator,
)

from ..._exceptions import ProviderError, RequestTimeout, StreamInterrupted
from .._base import ChatRequest, Deadline
from .base import (
    AttemptClock,
    InProcessProvider,
    deadline_passed,
    first_byte_timeout,
    translate,
)
from .chat import UnsupportedChat, completion_to_chat, plan_chat
from .chunks import build, from_llama, text_from_llama, to_completion, usage_chunk
from .compat import flush_llama_logs
from .gate import ModelSlot
from .load import llama_module, load
from .params import include_usage

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["LlamaCppProvider", "answer"]

log = logging.getLogger("routekit.providers.llama_cpp")

_now = time.monotonic

# Chunks an async stream's producer thread may run ahead of its consumer (backpressure).
_ASYNC_STREAM_BUFFER = 32

_CHUNK, _END, _ERROR = 0, 1, 2


class LlamaCppProvider(InProcessProvider):
    """Serves the in-process models of one ``llama_cpp`` provider.

    Thread safety: every method may be called from any thread, and the async methods from
    any event loop. Each model has one llama context, so one request decodes at a time;
    up to ``queue_size`` more wait (FIFO wake-ups, ``Deadline.total`` bounds the wait) and
    the next ones fail at once with ``ProviderBusy``. A model loads once even when several
    threads ask for it together. A stream holds its model's context until it ends or is
    closed (closing it early stops decoding). ``close()`` refuses new requests, wakes the
    waiters with an error, interrupts open streams at their next token and frees each model
    once its current request lets go.

    Async methods never block the event loop: decoding runs on a thread pool owned by the
    provider, sized so that every admitted request has a thread (waiters never starve the
    loop's default executor). Cancelling an ``acomplete`` gives up its place in the queue,
    or stops its decoding at the next token. Cancelling or closing an ``astream`` stops its
    decoding at the next token.
    """

    # Install ``_deadline_abort`` as each model context's llama.cpp abort callback. The
    # native kind says no: its decode loop has its own callback on the same context.
    _sets_abort_callback = True

    # -- sync -----------------------------------------------------------------------------------

    def complete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        slot, clock, kwargs = self._begin(request, deadline)
        slot.enter(clock.gate_end)
        try:
            raw = self._run_complete(slot, request, kwargs, clock)
        finally:
            slot.release()
            flush_llama_logs()
        return answer(raw, request)

    def _stream_sync(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock
    ) -> Generator[ChatCompletionChunk, None, None]:
        slot.enter(clock.gate_end)
        try:
            yield from self._decode_stream(slot, request, kwargs, clock, None)
        finally:
            slot.release()
            flush_llama_logs()

    # -- legacy text completions (providers._base.TextProvider): ``request.prompt`` is set,
    # and the paths above continue it with create_completion.

    def complete_text(self, request: ChatRequest, deadline: Deadline) -> Any:
        return self.complete(request, deadline)

    def stream_text(self, request: ChatRequest, deadline: Deadline) -> Iterator[Any]:
        return self.stream(request, deadline)

    async def acomplete_text(self, request: ChatRequest, deadline: Deadline) -> Any:
        return await self.acomplete(request, deadline)

    def astream_text(self, request: ChatRequest, deadline: Deadline) -> AsyncIterator[Any]:
        return self.astream(request, deadline)

    # -- async ----------------------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        slot, clock, kwargs = self._begin(request, deadline)
        return await self._acomplete(slot, request, kwargs, clock)

    async def _acomplete(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock,
        *, held: bool = False,
    ) -> ChatCompletion:
        """``acomplete`` once begun. ``held``: the caller already holds the model's gate
        (the native kind, handing a request over); it is released here either way."""
        loop = asyncio.get_running_loop()
        if not held:
            slot.admit()  # fail fast with ProviderBusy without a thread hop
        cancel = threading.Event()

        def work() -> dict[str, Any]:
            if not held:
                slot.acquire_admitted(clock.gate_end, cancel)
            try:
                return self._run_complete(slot, request, kwargs, clock, cancel)
            finally:
                slot.release()
                flush_llama_logs()

        try:
            future = loop.run_in_executor(self._pool(), work)
        except RuntimeError:  # the pool was shut down: the provider is closed
            if held:
                slot.release()
            else:
                slot.abandon()
            raise slot.closed_error() from None
        try:
            # shield: a cancelled caller must not cancel the work item before it runs, or its
            # admission would never be given back; the work sees ``cancel`` instead.
            raw = await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            slot.wake_all()
            # The work ends on its own with "request cancelled"; shield() stops watching it
            # once the caller is cancelled, so retrieve that here, or asyncio logs "Future
            # exception was never retrieved" with a traceback through the app's loop.
            future.add_done_callback(_retrieve)
            raise
        return answer(raw, request)

    async def _astream(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock,
        *, held: bool = False,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """``astream`` once begun; ``held`` as in ``_acomplete``."""
        t_end = clock.t_end
        loop = asyncio.get_running_loop()
        if not held:
            slot.admit()
        cancel = threading.Event()
        credits = threading.Semaphore(_ASYNC_STREAM_BUFFER)
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

        def put(kind: int, item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        def produce() -> None:
            try:
                if not held:
                    slot.acquire_admitted(clock.gate_end, cancel)
            except BaseException as exc:
                put(_ERROR, exc)
                return
            try:
                gen = self._decode_stream(slot, request, kwargs, clock, cancel)
                try:
                    for chunk in gen:
                        # Backpressure; a consumer that stops reading past the deadline
                        # must not hold the model forever.
                        if not credits.acquire(timeout=max(0.0, t_end - _now())):
                            deadline_passed(slot, [])
                        if cancel.is_set():
                            return
                        put(_CHUNK, chunk)
                finally:
                    gen.close()  # stops decoding before the context is handed on
                put(_END, None)
            except BaseException as exc:
                put(_ERROR, exc)
            finally:
                slot.release()
                flush_llama_logs()

        try:
            future = loop.run_in_executor(self._pool(), produce)
        except RuntimeError:
            if held:
                slot.release()
            else:
                slot.abandon()
            raise slot.closed_error() from None
        text = request.prompt is not None
        sent: list[str] = []  # what this consumer handed out, for StreamInterrupted.partial
        try:
            while True:
                kind, item = await queue.get()
                if kind == _CHUNK:
                    credits.release()
                    if item.choices:
                        choice = item.choices[0]
                        content = choice.text if text else choice.delta.content
                        if content:
                            sent.append(content)
                    yield item
                elif kind == _END:
                    return
                else:
                    if isinstance(item, StreamInterrupted):
                        # Exactly the text this consumer handed out: a producer stopped by
                        # the deadline while blocked on backpressure reports none.
                        item.partial = "".join(sent)
                    raise item
        finally:
            cancel.set()
            credits.release()  # wake a producer blocked on backpressure so it sees ``cancel``
            slot.wake_all()  # ... or one still waiting for the gate
            if not future.done():
                # The model is free again when aclose() returns (after one token at most);
                # shield: a second cancellation must not cancel the producer's work item.
                await asyncio.shield(future)

    # -- the work -------------------------------------------------------------------------------

    def _run_complete(
        self,
        slot: ModelSlot,
        request: ChatRequest,
        kwargs: dict[str, Any],
        clock: AttemptClock,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        llm = load(slot, progress=None, translate_config=True)
        if _now() >= clock.t_end:
            raise RequestTimeout(
                f"deadline passed before in-process model {slot.name!r} started decoding",
                provider=slot.provider, model=slot.name,
            )
        if request.prompt is not None:
            return self._run_text(llm, slot, request.prompt, kwargs, clock, cancel)
        try:
            plan = plan_chat(llm, request.messages, kwargs, tokenize=True)
        except UnsupportedChat as exc:
            # A handler of its own (multimodal, function calling): decode the old way, with
            # the deadline checked before decoding only.
            log.debug("model %r: %s; decoding without a per-token deadline", slot.name, exc)
            try:
                raw: dict[str, Any] = llm.create_chat_completion(
                    messages=request.messages, stream=False, **kwargs
                )
            except Exception as err:
                raise translate(err, slot, None) from err
            return raw
        except Exception as exc:
            raise translate(exc, slot, None) from exc
        assert plan.prompt_tokens is not None  # plan_chat(tokenize=True) always sets them
        return completion_to_chat(self._run_text(llm, slot, plan.prompt_tokens,
                                                 dict(plan.completion_kwargs), clock, cancel))

    def _run_text(self, llm: Any, slot: ModelSlot, prompt: list[int] | str,
                  completion_kwargs: dict[str, Any], clock: AttemptClock,
                  cancel: threading.Event | None) -> dict[str, Any]:
        """``create_completion`` with the per-token deadline: a text completion's raw dict."""
        abort = _deadline_abort(llm, clock) if self._sets_abort_callback else None
        stop = _StopAt(clock, cancel, slot, abort)
        criteria = list(completion_kwargs.pop("stopping_criteria", None) or ())
        stopping = llama_module().StoppingCriteriaList([stop, *criteria])
        try:
            completion: dict[str, Any] = llm.create_completion(
                prompt=prompt, stream=False, stopping_criteria=stopping, **completion_kwargs,
            )
        except Exception as exc:
            if _aborted(exc):  # the deadline passed mid-decode (a long prompt batch)
                if not stop.seen and clock.first_late(_now()):
                    raise first_byte_timeout(slot) from None
                deadline_passed(slot, None)
            raise translate(exc, slot, None) from exc
        finally:
            if abort is not None:
                abort.disarm()
        if stop.fired:
            if stop.first_late:
                raise first_byte_timeout(slot)
            if slot.closing:
                raise ProviderError(f"in-process model {slot.name!r} stopped: provider closed",
                                    provider=slot.provider, model=slot.name)
            if cancel is not None and cancel.is_set():
                raise ProviderError("request cancelled", provider=slot.provider,
                                    model=slot.name)
            usage = completion.get("usage") or {}
            raise RequestTimeout(
                f"deadline passed after {usage.get('completion_tokens', 0)} tokens from "
                f"in-process model {slot.name!r}",
                provider=slot.provider, model=slot.name,
                partial=completion["choices"][0]["text"],
            )
        _cut_at_the_earliest_stop(completion, completion_kwargs.get("stop"))
        return completion

    def _decode_stream(
        self,
        slot: ModelSlot,
        request: ChatRequest,
        kwargs: dict[str, Any],
        clock: AttemptClock,
        cancel: threading.Event | None,
    ) -> Generator[ChatCompletionChunk, None, None]:
        """Decode with the gate already held; the caller releases it."""
        t_end = clock.t_end
        llm = load(slot, progress=None, translate_config=True)
        text = request.prompt is not None
        # llama-cpp-python's text stream drops echo (its non-stream answer has it): the
        # prompt goes out with the first chunk.
        echo = request.prompt if text and kwargs.get("echo") else None
        model = request.model
        sent: list[str] = []  # text already yielded, for StreamInterrupted.partial
        emitted = False
        raw: dict[str, Any] = {}
        abort = _deadline_abort(llm, clock) if self._sets_abort_callback else None
        try:
            if text:
                it = llm.create_completion(prompt=request.prompt or "", stream=True, **kwargs)
            else:
                it = llm.create_chat_completion(messages=request.messages, stream=True,
                                                **kwargs)
        except Exception as exc:
            raise translate(exc, slot, None) from exc
        # stream_options.include_usage: llama-cpp-python's streams carry no usage; count.
        # (Its stream is a generator: nothing is sampled before the first next().)
        counter = _TokenCounter(llm) if include_usage(request) else None
        try:
            while True:
                try:
                    raw = next(it)
                except StopIteration:
                    if counter is not None and raw:
                        prompt_tokens, completion_tokens = counter.counts()
                        yield usage_chunk(raw["id"], model, raw["created"], prompt_tokens,
                                          completion_tokens, text=text)
                    return
                except Exception as exc:
                    if _aborted(exc):  # the deadline passed mid-decode
                        if not emitted and clock.first_late(_now()):
                            raise first_byte_timeout(slot) from None
                        deadline_passed(slot, sent if emitted else None)
                    raise translate(exc, slot, sent if emitted else None) from exc
                if abort is not None and not emitted:
                    abort.arm(t_end)  # the first token is in: only the total bounds the rest
                now = _now()
                if now > t_end:
                    deadline_passed(slot, sent if emitted else None)
                if not emitted and clock.first_late(now):
                    raise first_byte_timeout(slot)
                if slot.closing or (cancel is not None and cancel.is_set()):
                    raise StreamInterrupted(
                        f"stream from in-process model {slot.name!r} stopped: "
                        + ("provider closed" if slot.closing else "cancelled"),
                        provider=slot.provider, model=slot.name, partial="".join(sent),
                    )
                choices = raw["choices"]
                if echo is not None and choices:
                    choices[0]["text"] = echo + (choices[0].get("text") or "")
                    echo = None
                chunk = text_from_llama(raw, model) if text else from_llama(raw, model)
                if choices:
                    content = (choices[0].get("text") if text
                               else choices[0]["delta"].get("content"))
                    if content:
                        sent.append(content)
                emitted = True
                yield chunk
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            if counter is not None:
                counter.remove()
            if abort is not None:
                abort.disarm()


def _deadline_abort(llm: Any, clock: AttemptClock) -> Any:
    """The model's ``_core.DeadlineAbort``, installed as its context's llama.cpp abort
    callback on first use and armed at this attempt's first-token deadline: a prompt batch
    then stops there (CPU backend) instead of running to its end. None when this
    llama-cpp-python exposes no context handle (the per-token checks remain)."""
    abort = getattr(llm, "_routekit_abort", None)
    if abort is None:
        ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)
        low = getattr(llama_module(), "llama_cpp", None)
        setter = getattr(low, "llama_set_abort_callback", None)
        kind = getattr(low, "ggml_abort_callback", None)
        if ctx is None or setter is None or kind is None:
            return None
        import ctypes

        from ... import _cpp as _core

        cell = _core.DeadlineAbort()
        callback = kind(cell.callback())  # a C function: no Python runs per graph node
        setter(ctx, callback, ctypes.c_void_p(cell.data()))
        abort = llm._routekit_abort = cell
        llm._routekit_abort_callback = callback  # the ctypes object stays referenced
    abort.arm(clock.gate_end)
    return abort


def _aborted(exc: Exception) -> bool:
    """llama-cpp-python's error for a decode the abort callback stopped (status 2)."""
    return isinstance(exc, RuntimeError) and str(exc).endswith("returned 2")


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as seen (nobody awaits it any more)."""
    if not future.cancelled():
        future.exception()


class _TokenCounter:
    """Counts a stream's tokens as llama-cpp-python's own non-stream usage does, for
    ``stream_options.include_usage`` (its streams report none): installed over the Llama's
    ``sample`` for one request (the model's gate is held), it sees the prompt's length at the
    first sample and every sampled token; an end-of-generation token ends the answer
    uncounted. ~1 µs a token."""

    __slots__ = ("llm", "prompt", "sampled", "last")

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.prompt = 0
        self.sampled = 0
        self.last = -1
        inner = llm.sample  # the bound method, before the instance attribute shadows it

        def sample(*args: Any, **kwargs: Any) -> Any:
            if not self.sampled:
                self.prompt = int(llm.n_tokens)  # the whole prompt is in the context now
            token = inner(*args, **kwargs)
            self.sampled += 1
            self.last = token
            return token

        llm.sample = sample

    def remove(self) -> None:
        self.llm.__dict__.pop("sample", None)

    def counts(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens)."""
        completion = self.sampled
        if completion and self._eog(self.last):
            completion -= 1
        return self.prompt, completion

    def _eog(self, token: int) -> bool:
        llama_cpp = llama_module()
        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))


def _text_type() -> Any:
    from openai.types import Completion

    return Completion


def answer(raw: dict[str, Any], request: ChatRequest) -> ChatCompletion:
    """The openai type for a raw answer: a ``ChatCompletion``, or for a text request (whose
    ``prompt`` is set) a ``Completion`` (``complete_text`` returns it)."""
    if request.prompt is None:
        return to_completion(raw, request.model)
    raw["model"] = request.model
    text: ChatCompletion = build(_text_type(), raw)
    return text


def _cut_at_the_earliest_stop(completion: dict[str, Any], stop: Any) -> None:
    """llama-cpp-python 0.3.36 cuts a non-streamed answer at the first stop *listed* that the
    last token completed, so when one token completes two, the text keeps the earlier one
    (its stream cuts at the earliest). No stop sequence may be in an answer: cut there."""
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    choice = completion["choices"][0]
    text = choice.get("text")
    if not stops or not isinstance(text, str):
        return
    found = [at for at in (text.find(s) for s in stops if s) if at >= 0]
    if found:
        choice["text"] = text[:min(found)]
        choice["finish_reason"] = "stop"


class _StopAt:
    """A llama-cpp-python stopping criterion: stop at the deadline, a cancellation, the
    provider closing, or a first token later than first_byte. Called once per generated
    token (and once more at the end); ``fired`` says it stopped, ``first_late`` why."""

    __slots__ = ("clock", "cancel", "slot", "abort", "fired", "first_late", "seen")

    def __init__(self, clock: AttemptClock, cancel: threading.Event | None,
                 slot: ModelSlot, abort: Any = None) -> None:
        self.clock = clock
        self.cancel = cancel
        self.slot = slot
        self.abort = abort  # the model's DeadlineAbort, armed at the first-token deadline
        self.fired = False
        self.first_late = False
        self.seen = False

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        now = _now()
        if not self.seen:
            self.seen = True
            if self.clock.first_late(now):
                self.fired = self.first_late = True
            elif self.abort is not None:
                self.abort.arm(self.clock.t_end)  # the first token is in
        if (now >= self.clock.t_end or (self.cancel is not None and self.cancel.is_set())
                or self.slot.closing):
            self.fired = True
        return self.fired
