"""In-process llama.cpp through routekit's C++ decode loop (provider kind ``llama_cpp_native``).

Owns ``LlamaCppNativeProvider``'s request paths: loading through ``load``, one
``_core.LlamaNativeContext`` per model, formatting and submitting a request, and the gate
around it. Its parts: the ABI check that binds ``_core`` to llama-cpp-python's libllama in
``native_abi``; turning the relay's pieces into ``openai`` chunks and completions in
``native_run``. It extends ``LlamaCppProvider``: the lifecycle (``warm``, ``close``,
``health``, the gate) and the Python decoding paths, for what the loop hands over (below).

How a request runs. The model is loaded by llama-cpp-python through ``load.load`` (the same
parameters, GPU offload and AMX workaround as ``llama_cpp``); its raw handles go to a
``_core.LlamaNativeContext`` (one per model, one C++ worker thread). The chat is formatted
once in Python by llama-cpp-python's own chat handler (``chat.plan_chat``); tokenizing,
decoding the prompt in batches, sampling (llama.cpp's sampler chain, in llama-cpp-python's
order), stop sequences, UTF-8 assembly and detokenizing run on the worker, which pushes
pieces into a ``_core.Relay``. ``stream()`` / ``astream()`` / ``complete()`` are the relay's
consumer: the sync ones wait in C++ with the GIL released; the async ones await the relay's
wake-up fd (``loop.add_reader``), never blocking the event loop. No Python runs per token on
the decode side; the consumer takes whatever pieces arrived since it last looked. Once per
request, after the first piece, the loop waits (at most 2 ms) for the consumer to take it and
come back before decoding on: a decode step that takes every core would otherwise leave the
woken consumer waiting for the scheduler (~2 ms of TTFB measured on a 2-core VM).

Prefix reuse: the context keeps its KV cache between requests and remembers its tokens; a
prompt that extends the previous one (a second chat turn) decodes only its new suffix.

Deadlines: ``Deadline.first_byte`` bounds the wait for the first piece (the gate included),
``Deadline.total`` the whole attempt: a stream raises ``RequestTimeout`` before its first
chunk and ``StreamInterrupted`` (with the text sent) after; ``complete`` raises
``RequestTimeout`` whose ``partial`` holds the text decoded so far. ``connect`` and ``read``
do not apply in-process. Closing a stream, cancelling an async caller, or ``close()`` stops
the decode loop before its next token.

What the C++ loop does not do is served by llama-cpp-python on the same loaded model, under
the same gate (``LlamaCppProvider``'s paths, which this class inherits): grammars
(``response_format``), legacy text completions (``completions.create``), and chat handlers
that are not one plain ``create_completion`` call (multimodal, some function-calling formats,
a handler that sets a grammar, mirostat or a logits processor). So the kind serves every
request ``llama_cpp`` serves, with the same answers. The two decoders share one llama
context, each remembering which tokens its KV cache holds; whichever takes the context over
from the other adopts what the other left (``_take_kv``), so prefix reuse survives the
switch. Requests the model cannot honour at all (``n`` > 1, tools, ...) are refused as
``llama_cpp`` refuses them (``params``).

The ABI check refuses a libllama whose layouts or signatures differ from what
``cpp/llama_native.hpp`` declares, or whose version was not verified
(``ROUTEKIT_LLAMA_NATIVE_UNTESTED=1`` accepts an unverified version whose ABI matches): the
requests the loop would serve then fail with that ``ProviderError`` (the plan moves on).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, AsyncGenerator, Generator, Mapping

from ... import _cpp as _core
from ..._config.model import ModelConfig, ProviderConfig
from ..._exceptions import ProviderError, RequestTimeout
from .._base import ChatRequest, Deadline
from .base import AttemptClock, translate
from .chat import ChatPlan, UnsupportedChat, plan_chat
from .chunks import to_completion
from .compat import flush_llama_logs
from .gate import LlamaModel, ModelSlot
from .load import load
from .native_abi import _api_cache, describe_ctypes, native_api
from .native_run import COLLECT_CAPACITY, RELAY_CAPACITY, NativeRun
from .params import include_usage
from .provider import LlamaCppProvider, answer

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["LlamaCppNativeProvider", "describe_ctypes", "native_api"]

_ = _api_cache  # re-exported: tests clear the process-wide ABI verdict

log = logging.getLogger("routekit.providers.llama_cpp")

_now = time.monotonic

# -- the provider --------------------------------------------------------------------------------


class LlamaCppNativeProvider(LlamaCppProvider):
    """Serves the in-process models of one ``llama_cpp_native`` provider.

    Same constructor, methods, gate and errors as ``LlamaCppProvider``; decoding runs in
    routekit's C++ loop, except for what only llama-cpp-python does (see the module doc).
    Thread safety: every method may be called from any thread, the async ones from any event
    loop. One request decodes per model at a time; up to ``queue_size`` more wait, the next
    fail at once with ``ProviderBusy``. A stream holds its model until it ends or is closed;
    closing it stops decoding within one token. Async methods never block the event loop:
    they await the relay's wake-up fd; a thread from the provider's pool is used only to wait
    for a busy gate, to load a model, or to decode what is handed to llama-cpp-python.
    """

    # The context's abort callback is the decode loop's (it stops a cancelled job); the
    # llama-cpp-python paths on the same context must not replace it.
    _sets_abort_callback = False

    def __init__(
        self, name: str, config: ProviderConfig, models: Mapping[str, ModelConfig]
    ) -> None:
        super().__init__(name, config, models)
        self._natives: dict[str, tuple[LlamaModel, _core.LlamaNativeContext]] = {}
        self._natives_lock = threading.Lock()
        # The latest job per model (its counts and worker-side timings: tests, benchmarks).
        self._last_job: dict[str, _core.LlamaNativeJob] = {}
        # Per model, which decoder used its llama context last ("native" or "python"); read
        # and written with the model's gate held.
        self._kv_user: dict[str, str] = {}

    def _servable(self, slot: ModelSlot) -> bool:
        """Start the loaded model's decode loop (the ABI check included). A refused ABI check
        is logged, not raised: the requests the loop would serve then fail with its
        ``ProviderError`` and the plan moves on, as it would for any candidate that cannot
        serve."""
        try:
            self._native(slot)
        except ProviderError as exc:
            log.warning("llama_cpp_native model %r is loaded but its decode loop cannot "
                        "serve it (only what llama-cpp-python serves for this kind will "
                        "be): %s", slot.name, exc)
            return False
        return True

    # -- sync -----------------------------------------------------------------------------------

    def complete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        slot, clock, kwargs = self._begin(request, deadline)
        slot.enter(clock.gate_end)
        run: NativeRun | None = None
        try:
            run = self._start(slot, request, kwargs, clock, notify=False, collect=True)
            if run is None:
                return answer(self._run_complete(slot, request, kwargs, clock), request)
            raw = run.collect_sync()
        finally:
            self._finish_sync(slot, run)
        return to_completion(raw, request.model)

    def _stream_sync(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock
    ) -> Generator[ChatCompletionChunk, None, None]:
        slot.enter(clock.gate_end)
        run: NativeRun | None = None
        try:
            run = self._start(slot, request, kwargs, clock, notify=False)
            if run is None:
                yield from self._decode_stream(slot, request, kwargs, clock, None)
            else:
                yield from run.chunks_sync()
        finally:
            self._finish_sync(slot, run)

    def _finish_sync(self, slot: ModelSlot, run: NativeRun | None) -> None:
        try:
            if run is not None:
                run.stop_sync()
                run.close()
        finally:
            slot.release()
            flush_llama_logs()

    # -- async ----------------------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        slot, clock, kwargs = self._begin(request, deadline)
        if _python_only(request, kwargs):
            return await self._acomplete(slot, request, kwargs, clock)
        await self._acquire(slot, clock.gate_end)
        run: NativeRun | None = None
        handed_over = False
        try:
            run = await self._astart(slot, request, kwargs, clock, collect=True)
            if run is None:
                handed_over = True  # the gate goes with it
                return await self._acomplete(slot, request, kwargs, clock, held=True)
            raw = await run.collect_async()
        finally:
            if not handed_over:
                await self._finish_async(slot, run)
        return to_completion(raw, request.model)

    async def _astream(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock,
        *, held: bool = False,
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        if held or _python_only(request, kwargs):
            # aclosing: ``async for`` leaves an inner generator open when the outer one is
            # closed, and the gate with it (until the garbage collector finalises it).
            async with aclosing(super()._astream(slot, request, kwargs, clock, held=held)) as it:
                async for chunk in it:
                    yield chunk
            return
        await self._acquire(slot, clock.gate_end)
        run: NativeRun | None = None
        handed_over = False
        try:
            run = await self._astart(slot, request, kwargs, clock)
            if run is None:
                handed_over = True
                async with aclosing(super()._astream(slot, request, kwargs, clock,
                                                     held=True)) as it:
                    async for chunk in it:
                        yield chunk
                return
            async for chunk in run.chunks_async():
                yield chunk
        finally:
            if not handed_over:
                await self._finish_async(slot, run)

    async def _finish_async(self, slot: ModelSlot, run: NativeRun | None) -> None:
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
    ) -> NativeRun | None:
        if slot.llm is None or slot.name not in self._natives:
            # Loading takes a while (and the ABI check once): not on the event loop.
            loop = asyncio.get_running_loop()
            try:
                prepared = loop.run_in_executor(self._pool(), self._prepare, slot)
            except RuntimeError:  # the pool was shut down: the provider is closed
                raise slot.closed_error() from None
            await prepared
        return self._start(slot, request, kwargs, clock, notify=True, collect=collect)

    # -- the work -------------------------------------------------------------------------------

    def _prepare(self, slot: ModelSlot) -> None:
        """Load the model and start its decode loop; a refused ABI check is raised again by
        ``_start`` for the requests the loop would serve (not for those it hands over)."""
        load(slot, progress=None, translate_config=True)
        try:
            self._native(slot)
        except ProviderError:
            pass

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
    ) -> NativeRun | None:
        """Submit the request to the decode loop (the gate held), or None when only
        llama-cpp-python can serve it: the caller then decodes it through the inherited
        Python path, still holding the gate."""
        if _python_only(request, kwargs):
            return None
        llm = load(slot, progress=None, translate_config=True)
        try:
            plan = plan_chat(llm, request.messages, kwargs, tokenize=False)
        except UnsupportedChat as exc:
            log.debug("model %r: %s; served by llama-cpp-python", slot.name, exc)
            return None
        except Exception as exc:
            raise translate(exc, slot, None) from exc
        why = _python_only_plan(plan)
        if why:
            log.debug("model %r: the chat handler asks for %s; served by llama-cpp-python",
                      slot.name, why)
            return None
        llm, native = self._native(slot)  # the ABI check refuses here, before any decoding
        args = _submit_args(plan, int(getattr(llm, "last_n_tokens_size", 64)))
        self._take_kv(slot, "native")
        now = _now()
        if now >= clock.t_end:
            raise RequestTimeout(
                f"deadline passed before in-process model {slot.name!r} started decoding",
                provider=slot.provider, model=slot.name,
            )
        relay = _core.Relay(COLLECT_CAPACITY if collect else RELAY_CAPACITY, False, notify)
        producer = relay.attach()
        # (seconds from now; 0 when already due: a negative number would mean "no limit")
        relay.set_deadlines(None if clock.t_first is None else max(0.0, clock.t_first - now),
                            None, max(0.0, clock.t_end - now))
        try:
            job = native.submit(relay, producer, **args)
        except RuntimeError as exc:  # the native context was closed under us
            raise slot.closed_error() from exc
        self._last_job[slot.name] = job
        return NativeRun(lambda: self._closed, slot, request.model, relay, job,
                         include_usage=include_usage(request))

    # -- llama-cpp-python's part (the gate held) ------------------------------------------------

    def _run_complete(self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any],
                      clock: AttemptClock, cancel: threading.Event | None = None,
                      ) -> dict[str, Any]:
        self._take_kv(slot, "python")
        return super()._run_complete(slot, request, kwargs, clock, cancel)

    def _decode_stream(self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any],
                       clock: AttemptClock, cancel: threading.Event | None,
                       ) -> Generator[ChatCompletionChunk, None, None]:
        self._take_kv(slot, "python")
        return super()._decode_stream(slot, request, kwargs, clock, cancel)

    def _take_kv(self, slot: ModelSlot, user: str) -> None:
        """Hand the model's llama context to ``user`` ("native" or "python"), the gate held.

        Each decoder remembers which tokens the KV cache holds, to decode only the suffix of
        a prompt that extends them. After the other one decoded, that memory is wrong
        (llama-cpp-python would even sample a fully cached prompt from the other decoder's
        logits), so it is replaced with what the other one left: an app that alternates
        chat turns (native) with JSON-mode calls (llama-cpp-python) on one conversation keeps
        its prefix reuse across the switch."""
        before = self._kv_user.get(slot.name)
        self._kv_user[slot.name] = user
        if before is None or before == user:
            return
        entry = self._natives.get(slot.name)
        llm = slot.llm
        if llm is None:
            return
        if entry is None:  # no decode loop has used this context: nothing to adopt
            llm.reset()
            return
        native = entry[1]
        if user == "python":
            cached = native.cached_tokens()
            llm.reset()  # also: llama-cpp-python must decode before it samples again
            if cached:
                llm.input_ids[: len(cached)] = cached
                llm.n_tokens = len(cached)
        else:
            native.adopt_cache(llm.input_ids[: int(llm.n_tokens)].tolist())

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


def _python_only(request: ChatRequest, kwargs: dict[str, Any]) -> bool:
    """Whether only llama-cpp-python serves this request, known before the model's gate: a
    legacy text completion, or a grammar (``response_format``)."""
    return request.prompt is not None or "response_format" in kwargs


def _python_only_plan(plan: ChatPlan) -> str:
    """What in a chat handler's ``create_completion`` arguments the C++ loop does not do
    ("" when it does all of it)."""
    kw = plan.completion_kwargs
    wants = []
    if kw.get("grammar") is not None:
        wants.append("a grammar")
    if kw.get("logits_processor") is not None or kw.get("logit_bias"):
        wants.append("a logits processor")
    if kw.get("mirostat_mode"):
        wants.append("mirostat sampling")
    if kw.get("logprobs"):
        wants.append("logprobs")
    return ", ".join(wants)


def _submit_args(plan: ChatPlan, last_n: int) -> dict[str, Any]:
    """A ChatPlan's create_completion arguments → ``LlamaNativeContext.submit`` keywords."""
    kw = plan.completion_kwargs
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


