"""In-process llama.cpp through routekit's C++ decode loop (provider kind ``llama_cpp_native``).

Owns ``LlamaCppNativeProvider``'s request paths, the binding of ``routekit._core``'s decode
loop to the libllama that llama-cpp-python loaded (``native_api``: the ABI check), and turning
the relay's pieces into ``openai`` chunks and completions. Its lifecycle (``warm``, ``close``,
``health``, the gate) is ``base.InProcessProvider``'s, shared with ``LlamaCppProvider``.

How a request runs. The model is loaded by llama-cpp-python through ``load.load`` (the same
parameters, GPU offload and AMX workaround as ``llama_cpp``); its raw handles go to a
``_core.LlamaNativeContext`` (one per model, one C++ worker thread). The chat is formatted
once in Python by llama-cpp-python's own chat handler (``chat.plan_chat``); tokenizing,
decoding the prompt in batches, sampling (llama.cpp's sampler chain, in llama-cpp-python's
order), stop sequences, UTF-8 assembly and detokenizing run on the worker, which pushes
pieces into a ``_core.Relay``. ``stream()`` / ``astream()`` / ``complete()`` are the relay's
consumer: the sync ones wait in C++ with the GIL released; the async ones await the relay's
wake-up fd (``loop.add_reader``), never blocking the event loop. No Python runs per token on
the decode side; the consumer takes whatever pieces arrived since it last looked.

Prefix reuse: the context keeps its KV cache between requests and remembers its tokens; a
prompt that extends the previous one (a second chat turn) decodes only its new suffix.

Deadlines: ``Deadline.first_byte`` bounds the wait for the first piece (the gate included),
``Deadline.total`` the whole attempt: a stream raises ``RequestTimeout`` before its first
chunk and ``StreamInterrupted`` (with the text sent) after; ``complete`` raises
``RequestTimeout`` whose ``partial`` holds the text decoded so far. ``connect`` and ``read``
do not apply in-process. Closing a stream, cancelling an async caller, or ``close()`` stops
the decode loop before its next token.

Not served natively (a plain ``ProviderError``: the plan moves on): grammars
(``response_format``), mirostat, logit processors, and chat handlers that are not one
``create_completion`` call. The ABI check refuses a libllama whose layouts or signatures
differ from what ``cpp/llama_native.hpp`` declares, or whose version was not verified
(``ROUTEKIT_LLAMA_NATIVE_UNTESTED=1`` accepts an unverified version whose ABI matches).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator, Generator, Iterator, Mapping

from ... import _core
from ..._config.model import ModelConfig, ProviderConfig
from ..._exceptions import ProviderError, RequestTimeout, StreamInterrupted
from .._base import ChatRequest, Deadline
from .base import (
    AttemptClock,
    InProcessProvider,
    build,
    chunk_type,
    context_length_error,
    deadline_passed,
    first_byte_timeout,
    to_completion,
    translate,
)
from .chat import ChatPlan, UnsupportedChat, plan_chat
from .compat import flush_llama_logs
from .gate import LlamaModel, ModelSlot
from .load import llama_module, load
from .model_files import ProgressCallback
from .params import llama_kwargs

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["LlamaCppNativeProvider", "describe_ctypes", "native_api"]

log = logging.getLogger("routekit.providers.llama_cpp")

_now = time.monotonic

# Pieces the decode loop may run ahead of a slow stream consumer before it waits
# (backpressure).
RELAY_CAPACITY = 64
# complete() wants the whole answer: a roomy relay it drains when half full (or at the end),
# so its thread wakes a few times per answer rather than once per token (each wake-up is a
# context switch: ~50-100 us of CPU on the dev VM, ten times the Python work per token).
_COLLECT_CAPACITY = 1024
_COLLECT_MIN = _COLLECT_CAPACITY // 2
# Pieces one wake-up of the consumer takes at most (merged into one chunk).
_POP_MAX = 1024

_FINISH_REASONS = {_core.FINISH_STOP: "stop", _core.FINISH_LENGTH: "length"}


# -- the ABI check -------------------------------------------------------------------------------


class _ApiCache:
    """The checked ``_core.LlamaApi`` (or the refusal), once per process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.api: _core.LlamaApi | None = None
        self.error: str | None = None

    def clear(self) -> None:
        with self.lock:
            self.api, self.error = None, None


_api_cache = _ApiCache()


def native_api() -> _core.LlamaApi:
    """routekit's decode loop bound to llama-cpp-python's libllama, after the ABI check.

    Raises ``ProviderError`` naming both sides' versions (and every mismatch) when the check
    refuses; the process is never at risk (nothing is called before the check passed).
    """
    api = _api_cache.api
    if api is not None:
        return api
    with _api_cache.lock:
        if _api_cache.api is None and _api_cache.error is None:
            llama_cpp = llama_module()
            low = llama_cpp.llama_cpp
            path = getattr(getattr(low, "_lib", None), "_name", None)
            if not isinstance(path, str):
                _api_cache.error = "llama-cpp-python does not expose its libllama (_lib._name)"
            else:
                layouts, signatures = describe_ctypes(low)
                untested = os.environ.get("ROUTEKIT_LLAMA_NATIVE_UNTESTED") == "1"
                try:
                    _api_cache.api = _core.LlamaApi.open(
                        path, str(getattr(llama_cpp, "__version__", "unknown")), layouts,
                        signatures, untested,
                    )
                except _core.AbiError as exc:
                    _api_cache.error = str(exc)
        if _api_cache.api is not None:
            return _api_cache.api
        raise ProviderError(_api_cache.error or "llama_cpp_native is unavailable")


def describe_ctypes(low: Any) -> tuple[
    list[tuple[str, int, list[tuple[str, int, int]]]], list[tuple[str, str]]
]:
    """What llama-cpp-python's ctypes module declares for the structs and functions the
    native loop uses: ``(name, size, [(field, offset, size)])`` per struct and
    ``(name, "ret(args)")`` per function, in ``_core.llama_native_declared()``'s notation."""
    layouts = []
    for name in _core.LLAMA_NATIVE_STRUCTS:
        cls = getattr(low, name, None)
        if not isinstance(cls, type) or not issubclass(cls, ctypes.Structure):
            continue
        fields = [(f[0], getattr(cls, f[0]).offset, getattr(cls, f[0]).size)
                  for f in cls._fields_]
        layouts.append((name, ctypes.sizeof(cls), fields))
    lib = getattr(low, "_lib", None)
    signatures = []
    for name in _core.LLAMA_NATIVE_FUNCTIONS:
        fn = getattr(lib, name, None) if lib is not None else None
        args = getattr(fn, "argtypes", None)
        if fn is None or args is None:
            continue  # the check reports it as "not declared by llama-cpp-python"
        signatures.append(
            (name, f"{_ctype_code(fn.restype)}({','.join(_ctype_code(a) for a in args)})")
        )
    return layouts, signatures


_POINTER_BASES = tuple(
    t for t in (getattr(ctypes, "_Pointer", None), getattr(ctypes, "_CFuncPtr", None))
    if isinstance(t, type)
)


def _ctype_code(t: Any) -> str:
    if t is None:
        return "v"
    if isinstance(t, type) and issubclass(t, ctypes.Structure):
        return "S:" + t.__name__
    if t in (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_wchar_p) or (
        isinstance(t, type) and issubclass(t, _POINTER_BASES)
    ):
        return "p"
    code = getattr(t, "_type_", None)
    if not isinstance(code, str):
        return f"?{getattr(t, '__name__', t)}"
    bits = 8 * ctypes.sizeof(t)
    if code == "?":
        return "b"
    if code in "fd":
        return f"f{bits}"
    if code in "bhilq":
        return f"i{bits}"
    if code in "BHILQ":
        return f"u{bits}"
    return f"?{t.__name__}"


# -- the provider --------------------------------------------------------------------------------


class LlamaCppNativeProvider(InProcessProvider):
    """Serves the in-process models of one ``llama_cpp_native`` provider.

    Same constructor, methods, gate and errors as ``LlamaCppProvider``; decoding runs in
    routekit's C++ loop (see the module doc). Thread safety: every method may be called from
    any thread, the async ones from any event loop. One request decodes per model at a time;
    up to ``queue_size`` more wait, the next fail at once with ``ProviderBusy``. A stream
    holds its model until it ends or is closed; closing it stops decoding within one token.
    Async methods never block the event loop: they await the relay's wake-up fd; a thread
    from the provider's pool is used only to wait for a busy gate or to load a model.
    """

    def __init__(
        self, name: str, config: ProviderConfig, models: Mapping[str, ModelConfig]
    ) -> None:
        super().__init__(name, config, models)
        self._natives: dict[str, tuple[LlamaModel, _core.LlamaNativeContext]] = {}
        self._natives_lock = threading.Lock()
        # The latest job per model (its counts and worker-side timings: tests, benchmarks).
        self._last_job: dict[str, _core.LlamaNativeJob] = {}

    def warm(self, model: str, *, progress: ProgressCallback | None = None) -> None:
        """Load ``model`` and start its decode loop (the ABI check included) now.

        Raises like ``LlamaCppProvider.warm`` when the model cannot be loaded. A refused ABI
        check is logged, not raised: requests then fail with its ``ProviderError`` and the
        plan moves on, as it would for any candidate that cannot serve.
        """
        super().warm(model, progress=progress)
        try:
            self._native(self._slot(model))
        except ProviderError as exc:
            log.warning("llama_cpp_native model %r is loaded but cannot be served: %s",
                        model, exc)

    # -- sync -----------------------------------------------------------------------------------

    def complete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        slot = self._slot(request.model)
        clock = AttemptClock(deadline)
        kwargs = llama_kwargs(request, slot)
        slot.enter(clock.gate_end)
        run: _Run | None = None
        try:
            run = self._start(slot, request, kwargs, clock, notify=False, collect=True)
            raw = run.collect_sync()
        finally:
            self._finish_sync(slot, run)
        return to_completion(raw, request.model)

    def stream(self, request: ChatRequest, deadline: Deadline) -> Iterator[ChatCompletionChunk]:
        """A generator of chunks. The model's gate is taken at the first ``next()`` and held
        until the generator ends or is closed; closing it early stops decoding."""
        slot = self._slot(request.model)
        clock = AttemptClock(deadline)
        kwargs = llama_kwargs(request, slot)
        return self._stream_sync(slot, request, kwargs, clock)

    def _stream_sync(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock
    ) -> Generator[ChatCompletionChunk, None, None]:
        slot.enter(clock.gate_end)
        run: _Run | None = None
        try:
            run = self._start(slot, request, kwargs, clock, notify=False)
            yield from run.chunks_sync()
        finally:
            self._finish_sync(slot, run)

    def _finish_sync(self, slot: ModelSlot, run: _Run | None) -> None:
        try:
            if run is not None:
                run.stop_sync()
                run.close()
        finally:
            slot.release()
            flush_llama_logs()

    # -- async ----------------------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        slot = self._slot(request.model)
        clock = AttemptClock(deadline)
        kwargs = llama_kwargs(request, slot)
        await self._acquire(slot, clock.gate_end)
        run: _Run | None = None
        try:
            run = await self._astart(slot, request, kwargs, clock, collect=True)
            raw = await run.collect_async()
        finally:
            await self._finish_async(slot, run)
        return to_completion(raw, request.model)

    def astream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncIterator[ChatCompletionChunk]:
        """An async generator of chunks. ``aclose()`` or cancellation stops decoding within
        one token and frees the model for the next request."""
        slot = self._slot(request.model)
        clock = AttemptClock(deadline)
        kwargs = llama_kwargs(request, slot)
        return self._astream(slot, request, kwargs, clock)

    async def _astream(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock
    ) -> AsyncIterator[ChatCompletionChunk]:
        await self._acquire(slot, clock.gate_end)
        run: _Run | None = None
        try:
            run = await self._astart(slot, request, kwargs, clock)
            async for chunk in run.chunks_async():
                yield chunk
        finally:
            await self._finish_async(slot, run)

    async def _finish_async(self, slot: ModelSlot, run: _Run | None) -> None:
        try:
            if run is not None:
                # shield: a second cancellation must not leave the decode loop running on a
                # context the gate hands to the next request.
                await asyncio.shield(run.stop_async())
                run.close()
        finally:
            slot.release()
            flush_llama_logs()

    async def _acquire(self, slot: ModelSlot, t_end: float) -> None:
        """Take the model's gate without blocking the loop (a pool thread waits if busy)."""
        slot.admit()
        if slot.try_acquire_admitted():
            return
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._pool(), slot.acquire_admitted, t_end, cancel)
        except RuntimeError:  # the pool was shut down: the provider is closed
            slot.abandon()
            raise slot.closed_error() from None
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            slot.wake_all()

            def give_back(f: asyncio.Future[None]) -> None:
                if not f.cancelled() and f.exception() is None:
                    slot.release()  # granted while we were being cancelled

            future.add_done_callback(give_back)
            raise

    async def _astart(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock,
        *, collect: bool = False,
    ) -> _Run:
        if slot.llm is None or slot.name not in self._natives:
            # Loading takes a while (and the ABI check once): not on the event loop.
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool(), self._native, slot)
        return self._start(slot, request, kwargs, clock, notify=True, collect=collect)

    # -- the work -------------------------------------------------------------------------------

    def _native(self, slot: ModelSlot) -> tuple[LlamaModel, _core.LlamaNativeContext]:
        """The slot's Llama and its native context (loading and checking on first use)."""
        llm = load(slot, progress=None, translate_config=True)
        entry = self._natives.get(slot.name)
        if entry is not None and entry[0] is llm:
            return entry
        api = native_api()
        with self._natives_lock:
            entry = self._natives.get(slot.name)
            if entry is not None and entry[0] is llm:
                return entry
            if self._closed:
                raise slot.closed_error()
            handles = _raw_handles(llm)
            if handles is None:
                raise ProviderError(
                    f"llama_cpp_native cannot reach the raw handles of model {slot.name!r} "
                    "(llama-cpp-python's Llama._model.model / _ctx.ctx)",
                    provider=slot.provider, model=slot.name,
                )
            try:
                native = _core.LlamaNativeContext(api, *handles)
            except (ValueError, RuntimeError) as exc:
                raise ProviderError(
                    f"llama_cpp_native cannot drive model {slot.name!r}: {exc}",
                    provider=slot.provider, model=slot.name,
                ) from exc
            entry = (llm, native)
            self._natives[slot.name] = entry
            return entry

    def _start(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock,
        *, notify: bool, collect: bool = False,
    ) -> _Run:
        llm, native = self._native(slot)
        try:
            plan = plan_chat(llm, request.messages, kwargs, tokenize=False)
        except UnsupportedChat as exc:
            raise ProviderError(
                f"llama_cpp_native cannot serve model {slot.name!r}: {exc}",
                provider=slot.provider, model=slot.name,
            ) from exc
        except Exception as exc:
            raise translate(exc, slot, None) from exc
        args = _submit_args(plan, slot, int(getattr(llm, "last_n_tokens_size", 64)))
        now = _now()
        if now >= clock.t_end:
            raise RequestTimeout(
                f"deadline passed before in-process model {slot.name!r} started decoding",
                provider=slot.provider, model=slot.name,
            )
        relay = _core.Relay(_COLLECT_CAPACITY if collect else RELAY_CAPACITY, False, notify)
        producer = relay.attach()
        # (seconds from now; 0 when already due: a negative number would mean "no limit")
        relay.set_deadlines(None if clock.t_first is None else max(0.0, clock.t_first - now),
                            None, max(0.0, clock.t_end - now))
        try:
            job = native.submit(relay, producer, **args)
        except RuntimeError as exc:  # the native context was closed under us
            raise slot.closed_error() from exc
        self._last_job[slot.name] = job
        return _Run(self, slot, request.model, relay, job)

    def _close_models(self) -> None:
        # The workers first: a model must never be freed under a running decode loop.
        with self._natives_lock:
            natives, self._natives = list(self._natives.values()), {}
        for _, native in natives:
            native.close()  # cancels a running job; returns once the worker let go
        super()._close_models()

    def _health_extra(self) -> tuple[bool, str] | None:
        try:
            api = native_api()
        except ProviderError as exc:
            return False, f"native decode loop unavailable: {exc}"
        return True, (f"native decode loop on libllama {api.library_version} "
                      f"(llama-cpp-python {api.bindings_version})")


def _raw_handles(llm: LlamaModel) -> tuple[int, int] | None:
    model = getattr(getattr(llm, "_model", None), "model", None)
    ctx = getattr(getattr(llm, "_ctx", None), "ctx", None)
    model = getattr(model, "value", model)  # a c_void_p instance or already an int
    ctx = getattr(ctx, "value", ctx)
    if isinstance(model, int) and isinstance(ctx, int) and model and ctx:
        return model, ctx
    return None


def _submit_args(plan: ChatPlan, slot: ModelSlot, last_n: int) -> dict[str, Any]:
    """A ChatPlan's create_completion arguments → ``LlamaNativeContext.submit`` keywords."""
    kw = plan.completion_kwargs
    refused = []
    if kw.get("grammar") is not None:
        refused.append("response_format (grammar-constrained decoding)")
    if kw.get("logits_processor") is not None or kw.get("logit_bias"):
        refused.append("logit processors")
    if kw.get("mirostat_mode"):
        refused.append("mirostat sampling")
    if kw.get("logprobs"):
        refused.append("logprobs")
    if refused:
        raise ProviderError(
            f"llama_cpp_native does not support {', '.join(refused)} "
            f"(model {slot.name!r}; the llama_cpp kind does)",
            provider=slot.provider, model=slot.name,
        )
    stop = kw.get("stop") or []
    stops = [s.encode("utf-8") for s in ([stop] if isinstance(stop, str) else stop) if s]
    seed = kw.get("seed")
    max_tokens = kw.get("max_tokens")
    # A chat format's stopping criterion (a GGUF template's) ends on its EOS token, which the
    # loop's end-of-generation check already covers.
    return {
        "prompt_text": plan.prompt_text,
        "add_special": plan.add_bos,
        "parse_special": plan.special,
        "max_tokens": int(max_tokens) if max_tokens is not None and max_tokens > 0 else 0,
        "temperature": float(kw.get("temperature", 0.2)),
        "top_p": float(kw.get("top_p", 0.95)),
        "top_k": int(kw.get("top_k", 40)),
        "min_p": float(kw.get("min_p", 0.05)),
        "typical_p": float(kw.get("typical_p", 1.0)),
        "repeat_penalty": float(kw.get("repeat_penalty", 1.0)),
        "frequency_penalty": float(kw.get("frequency_penalty", 0.0)),
        "presence_penalty": float(kw.get("presence_penalty", 0.0)),
        "penalty_last_n": last_n,
        "seed": random.getrandbits(32) if seed is None else int(seed) & 0xFFFFFFFF,
        "stops": stops,
    }


class _Run:
    """One request on the native loop: the relay's consumer side, as chunks or a completion.

    Not thread-safe: one consumer (the caller's thread or task) drives it.
    """

    __slots__ = ("provider", "slot", "model", "relay", "job", "sent", "started", "chunk_id",
                 "created", "chunk_cls", "finish")

    def __init__(self, provider: LlamaCppNativeProvider, slot: ModelSlot, model: str,
                 relay: _core.Relay, job: _core.LlamaNativeJob) -> None:
        self.provider = provider
        self.slot = slot
        self.model = model
        self.relay = relay
        self.job = job
        self.sent: list[str] = []
        self.started = False  # a chunk went out (streams) / a piece came in
        self.chunk_id = f"chatcmpl-{uuid.uuid4()}"
        self.created = int(time.time())
        self.chunk_cls: Any = None
        self.finish: str | None = None

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
        return "provider closed" if self.slot.closing or self.provider._closed else "cancelled"

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

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> ChatCompletionChunk:
        if self.chunk_cls is None:
            self.chunk_cls = chunk_type()
        chunk: ChatCompletionChunk = build(self.chunk_cls, {
            "id": self.chunk_id, "model": self.model, "created": self.created,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}],
        })
        return chunk

    def _chunks_of(self, text: str, finish: int) -> list[ChatCompletionChunk]:
        out = []
        if not self.started:
            out.append(self._chunk({"role": "assistant"}, None))
            self.started = True
        if text and finish in (_core.FINISH_NONE, _core.FINISH_STOP, _core.FINISH_LENGTH):
            self.sent.append(text)
            out.append(self._chunk({"content": text}, None))
        if finish:
            self._finished(finish, text, streaming=True)
            out.append(self._chunk({}, self.finish))
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

    def chunks_sync(self) -> Iterator[ChatCompletionChunk]:
        relay = self.relay
        while True:
            status, text, _, finish, _ = relay.pop_text(_POP_MAX, -1.0)
            if status != _core.POP_PIECES:
                self._status(status, streaming=True)
            if not finish and (self.slot.closing or self.provider._closed):
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
        async with _Waker(self.relay) as waker:
            while True:
                status, text, finish = await waker.next()
                if status != _core.POP_PIECES:
                    self._status(status, streaming=True)
                if not finish and (self.slot.closing or self.provider._closed):
                    self._interrupted("provider closed", streaming=True)
                for chunk in self._chunks_of(text, finish):
                    yield chunk
                if finish:
                    return

    async def collect_async(self) -> dict[str, Any]:
        async with _Waker(self.relay, _COLLECT_MIN) as waker:
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


class _Waker:
    """Awaits a relay without blocking the event loop: ``poll_text_async`` arms the relay's
    fd when it finds nothing, and ``loop.add_reader`` wakes the awaiting task."""

    __slots__ = ("relay", "min", "fd", "loop", "waiter")

    def __init__(self, relay: _core.Relay, min_pieces: int = 1) -> None:
        self.relay = relay
        self.min = min_pieces
        self.fd = relay.fileno()
        self.loop = asyncio.get_running_loop()
        self.waiter: asyncio.Future[None] | None = None

    async def __aenter__(self) -> _Waker:
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
