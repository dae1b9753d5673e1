"""In-process llama.cpp provider: ``llama_cpp.Llama`` behind routekit's provider protocol.

Owns ``LlamaCppProvider``: its lifecycle (``warm``, ``close``, ``health``), the sync and async
request paths (the thread bridge and stream backpressure for the async ones), decoding with
deadline and close checks between tokens, building the ``openai`` result types from llama's
dicts, and translating llama_cpp errors into routekit's tree (here, once). Must not retry (the
attempt loop does), print, or import ``llama_cpp`` / ``openai`` before a model is used.

Its parts live next to it: the per-model gate and queue in ``_llama_gate``, loading a model
in ``_llama_load``, the OpenAI → llama parameter mapping (what is passed on, what refused) in
``_llama_params``, finding and assembling model files in ``.._model_files``.

Deadlines. ``Deadline.total`` bounds the wait for the model's gate (``RequestTimeout``) and,
for streams, is checked between tokens: before any chunk went out it raises
``RequestTimeout``; after, ``StreamInterrupted`` with the text already sent (the caller has
seen those chunks, so no other candidate can take over invisibly). ``complete`` checks the
deadline before decoding starts; once started, a completion runs to its end, which
``max_tokens`` and ``n_ctx`` bound (llama-cpp-python has no per-token hook outside streaming).
``connect`` and ``read`` do not apply in-process.

Legacy text completions (``complete_text``, ``stream_text`` and their async twins, for a
request whose ``prompt`` is set) take the same paths with llama-cpp-python's
``create_completion``: the prompt is continued as it is, without a chat template.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Generator,
    Iterator,
    Mapping,
    NoReturn,
    TypeVar,
)

from ..._config.model import ModelConfig, ProviderConfig
from ..._exceptions import (
    ContextLengthExceeded,
    ModelNotFound,
    ProviderError,
    RequestTimeout,
    StreamInterrupted,
)
from .model_files import ProgressCallback, describe_model_source
from .._base import ChatRequest, Deadline, HealthReport
from .gate import ModelSlot
from .load import llama_module, load, resolve_params
from .params import llama_kwargs

if TYPE_CHECKING:
    from openai import BaseModel as OpenAIModel
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["LlamaCppProvider"]

log = logging.getLogger("routekit.providers.llama_cpp")

_now = time.monotonic

# Chunks an async stream's producer thread may run ahead of its consumer (backpressure).
_ASYNC_STREAM_BUFFER = 32

_CONTEXT_RE = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")

_CHUNK, _END, _ERROR = 0, 1, 2


class LlamaCppProvider:
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
    loop's default executor). Cancelling an ``acomplete`` gives up its place in the queue;
    a completion already decoding finishes in the background and frees the context.
    Cancelling or closing an ``astream`` stops its decoding at the next token.
    """

    def __init__(
        self, name: str, config: ProviderConfig, models: Mapping[str, ModelConfig]
    ) -> None:
        self.name = name
        self.kind: str = config.kind
        self.config = config
        self._slots = {m: ModelSlot(m, cfg, name) for m, cfg in models.items()}
        self._closed = False
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def warm(self, model: str, *, progress: ProgressCallback | None = None) -> None:
        """Load ``model`` now (assembling its file when needed) so the first request is fast.

        Raises ``ConfigError`` when the model file cannot be found or built, ``ProviderError``
        when llama.cpp cannot load it.
        """
        load(self._slot(model), progress=progress, translate_config=False)

    def is_loaded(self, model: str) -> bool:
        return self._slot(model).llm is not None

    def queue_depth(self, model: str) -> int:
        """Requests waiting for ``model``'s context (not counting the one decoding)."""
        return self._slot(model).queue_depth()

    def load_params(self, model: str) -> dict[str, Any]:
        """The keyword arguments ``llama_cpp.Llama`` gets (or got) for ``model``.

        Resolves the model file (which may assemble it) but loads nothing.
        """
        slot = self._slot(model)
        if slot.params is None:
            slot.params = resolve_params(slot, None)
        return dict(slot.params)

    def close(self) -> None:
        """Free every model; idempotent. In-flight requests finish or fail (see class doc)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
        for slot in self._slots.values():
            # A loader racing with close() checks ``closing`` when it publishes its model;
            # a busy model is freed by the request holding it, on release.
            slot.close()
        if executor is not None:
            executor.shutdown(wait=False)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> LlamaCppProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self, timeout: float = 1.0) -> HealthReport:
        t0 = time.perf_counter()
        ok = True
        parts = []
        try:
            llama_module()
        except ProviderError as exc:
            ok = False
            parts.append(str(exc))
        for slot in self._slots.values():
            good, detail = describe_model_source(slot.config, name=slot.name)
            ok = ok and good
            if slot.closing:
                state = "closed"
            elif slot.llm is not None:
                p = slot.params or {}
                state = (
                    f"loaded (n_ctx {p.get('n_ctx')}, n_gpu_layers {p.get('n_gpu_layers')}, "
                    f"{'busy' if slot.busy else 'idle'}, {slot.queue_depth()} waiting)"
                )
            else:
                state = "not loaded"
            parts.append(f"{slot.name}: {state}; {detail}")
        if self._closed:
            ok = False
        return HealthReport(self.name, ok, "; ".join(parts) or "no models",
                            (time.perf_counter() - t0) * 1000.0)

    # -- sync -----------------------------------------------------------------------------------

    def complete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        slot = self._slot(request.model)
        t_end = _now() + deadline.total
        kwargs = llama_kwargs(request, slot)
        slot.enter(t_end)
        try:
            raw = self._run_complete(slot, request, kwargs, t_end)
        finally:
            slot.release()
        return _to_completion(raw, request.model, request.prompt is not None)

    def stream(self, request: ChatRequest, deadline: Deadline) -> Iterator[ChatCompletionChunk]:
        """A generator of chunks. The model's gate is taken at the first ``next()`` and held
        until the generator ends or is closed; closing it early stops decoding."""
        slot = self._slot(request.model)
        t_end = _now() + deadline.total
        kwargs = llama_kwargs(request, slot)
        return self._stream_sync(slot, request, kwargs, t_end)

    def _stream_sync(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], t_end: float
    ) -> Generator[ChatCompletionChunk, None, None]:
        slot.enter(t_end)
        try:
            yield from self._decode_stream(slot, request, kwargs, t_end, None)
        finally:
            slot.release()

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
        slot = self._slot(request.model)
        t_end = _now() + deadline.total
        kwargs = llama_kwargs(request, slot)
        loop = asyncio.get_running_loop()
        slot.admit()  # fail fast with ProviderBusy without a thread hop
        cancel = threading.Event()

        def work() -> dict[str, Any]:
            slot.acquire_admitted(t_end, cancel)
            try:
                return self._run_complete(slot, request, kwargs, t_end)
            finally:
                slot.release()

        try:
            future = loop.run_in_executor(self._pool(), work)
        except RuntimeError:  # the pool was shut down: the provider is closed
            slot.abandon()
            raise slot.closed_error() from None
        try:
            # shield: a cancelled caller must not cancel the work item before it runs, or its
            # admission would never be given back; the work sees ``cancel`` instead.
            raw = await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            slot.wake_all()
            raise
        return _to_completion(raw, request.model, request.prompt is not None)

    def astream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncIterator[ChatCompletionChunk]:
        """An async generator of chunks, decoded on a worker thread that runs at most
        ``_ASYNC_STREAM_BUFFER`` chunks ahead. ``aclose()`` or cancellation stops decoding at
        the next token and frees the model for the next request."""
        slot = self._slot(request.model)
        t_end = _now() + deadline.total
        kwargs = llama_kwargs(request, slot)
        return self._astream(slot, request, kwargs, t_end)

    async def _astream(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], t_end: float
    ) -> AsyncIterator[ChatCompletionChunk]:
        loop = asyncio.get_running_loop()
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
                slot.acquire_admitted(t_end, cancel)
            except BaseException as exc:
                put(_ERROR, exc)
                return
            try:
                gen = self._decode_stream(slot, request, kwargs, t_end, cancel)
                try:
                    for chunk in gen:
                        # Backpressure; a consumer that stops reading past the deadline
                        # must not hold the model forever.
                        if not credits.acquire(timeout=max(0.0, t_end - _now())):
                            _deadline_passed(slot, [])
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

        try:
            future = loop.run_in_executor(self._pool(), produce)
        except RuntimeError:
            slot.abandon()
            raise slot.closed_error() from None
        try:
            while True:
                kind, item = await queue.get()
                if kind == _CHUNK:
                    credits.release()
                    yield item
                elif kind == _END:
                    return
                else:
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
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], t_end: float
    ) -> dict[str, Any]:
        llm = load(slot, progress=None, translate_config=True)
        if _now() >= t_end:
            raise RequestTimeout(
                f"deadline passed before in-process model {slot.name!r} started decoding",
                provider=slot.provider, model=slot.name,
            )
        try:
            if request.prompt is None:
                raw: dict[str, Any] = llm.create_chat_completion(
                    messages=request.messages, stream=False, **kwargs
                )
            else:
                raw = llm.create_completion(prompt=request.prompt, stream=False, **kwargs)
        except Exception as exc:
            raise _translate(exc, slot, None) from exc
        return raw

    def _decode_stream(
        self,
        slot: ModelSlot,
        request: ChatRequest,
        kwargs: dict[str, Any],
        t_end: float,
        cancel: threading.Event | None,
    ) -> Generator[ChatCompletionChunk, None, None]:
        """Decode with the gate already held; the caller releases it."""
        llm = load(slot, progress=None, translate_config=True)
        text = request.prompt is not None
        chunk_type: Any = _text_type() if text else _chunk_type()
        model = request.model
        sent: list[str] = []  # text already yielded, for StreamInterrupted.partial
        emitted = False
        try:
            if text:
                it = llm.create_completion(prompt=request.prompt or "", stream=True, **kwargs)
            else:
                it = llm.create_chat_completion(messages=request.messages, stream=True,
                                                **kwargs)
        except Exception as exc:
            raise _translate(exc, slot, None) from exc
        try:
            while True:
                try:
                    raw = next(it)
                except StopIteration:
                    return
                except Exception as exc:
                    raise _translate(exc, slot, sent if emitted else None) from exc
                if _now() > t_end:
                    _deadline_passed(slot, sent if emitted else None)
                if slot.closing or (cancel is not None and cancel.is_set()):
                    raise StreamInterrupted(
                        f"stream from in-process model {slot.name!r} stopped: "
                        + ("provider closed" if slot.closing else "cancelled"),
                        provider=slot.provider, model=slot.name, partial="".join(sent),
                    )
                raw["model"] = model
                chunk = _build(chunk_type, raw)
                choices = raw["choices"]
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

    # -- helpers --------------------------------------------------------------------------------

    def _slot(self, model: str) -> ModelSlot:
        slot = self._slots.get(model)
        if slot is None:
            raise ModelNotFound(
                f"in-process provider {self.name!r} has no model {model!r} "
                f"(it serves: {', '.join(sorted(self._slots)) or 'none'})",
                status_code=404, provider=self.name, model=model,
            )
        return slot

    def _pool(self) -> ThreadPoolExecutor:
        executor = self._executor
        if executor is not None:
            return executor
        with self._lock:
            if self._closed:
                raise RuntimeError("closed")
            if self._executor is None:
                workers = sum(s.capacity for s in self._slots.values()) or 1
                self._executor = ThreadPoolExecutor(
                    max_workers=workers, thread_name_prefix=f"routekit-llama-{self.name}"
                )
            return self._executor


# -- module helpers ------------------------------------------------------------------------------


# The openai types, imported at first use (``import routekit`` must not load openai).
_chunk_cls: type[ChatCompletionChunk] | None = None
_completion_cls: type[ChatCompletion] | None = None
_Model = TypeVar("_Model", bound="OpenAIModel")


def _chunk_type() -> type[ChatCompletionChunk]:
    global _chunk_cls
    if _chunk_cls is None:
        from openai.types.chat import ChatCompletionChunk

        _chunk_cls = ChatCompletionChunk
    return _chunk_cls


def _text_type() -> Any:
    from openai.types import Completion

    return Completion


def _to_completion(raw: dict[str, Any], model: str, text: bool = False) -> ChatCompletion:
    global _completion_cls
    if _completion_cls is None:
        from openai.types.chat import ChatCompletion

        _completion_cls = ChatCompletion
    raw["model"] = model
    if text:
        built: ChatCompletion = _build(_text_type(), raw)
        return built
    return _build(_completion_cls, raw)


def _build(cls: type[_Model], raw: dict[str, Any]) -> _Model:
    # model_validate (pydantic-core, compiled) measured ~20x cheaper here than the openai
    # models' recursive pure-Python construct(): ~3 us vs ~60 us per chunk. construct() stays
    # as the fallback so an unexpected field value never costs the caller a response.
    try:
        return cls.model_validate(raw)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        log.debug("llama output did not validate as %s (%s); building it unvalidated",
                  cls.__name__, exc)
        return cls.construct(**raw)


def _translate(exc: Exception, slot: ModelSlot, sent: list[str] | None) -> ProviderError:
    """llama_cpp's exceptions → routekit's tree. ``sent``: text already yielded, or None."""
    if isinstance(exc, ProviderError):
        return exc
    message = str(exc)
    match = _CONTEXT_RE.search(message) if isinstance(exc, ValueError) else None
    if match is not None:
        n_tokens, n_ctx = int(match.group(1)), int(match.group(2))
        return ContextLengthExceeded(
            f"prompt of {n_tokens} tokens does not fit in-process model {slot.name!r} "
            f"(n_ctx {n_ctx})",
            status_code=400, provider=slot.provider, model=slot.name,
            body={"prompt_tokens": n_tokens, "n_ctx": n_ctx},
        )
    text = f"in-process model {slot.name!r} failed: {type(exc).__name__}: {message}"
    if sent is not None:
        return StreamInterrupted(text, provider=slot.provider, model=slot.name,
                                 partial="".join(sent))
    return ProviderError(text, provider=slot.provider, model=slot.name)


def _deadline_passed(slot: ModelSlot, sent: list[str] | None) -> NoReturn:
    if sent is None:
        raise RequestTimeout(
            f"deadline passed while in-process model {slot.name!r} was decoding",
            provider=slot.provider, model=slot.name,
        )
    raise StreamInterrupted(
        f"deadline passed mid-stream from in-process model {slot.name!r}",
        provider=slot.provider, model=slot.name, partial="".join(sent),
    )
