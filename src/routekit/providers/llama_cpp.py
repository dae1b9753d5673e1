"""In-process llama.cpp provider: ``llama_cpp.Llama`` behind routekit's provider protocol.

Owns: one ``Llama`` per configured model (loaded lazily, or at router start via ``warm``), the
one-request-at-a-time gate in front of each llama context with its bounded wait queue, the
mapping of OpenAI parameters onto ``create_chat_completion``, the translation of llama_cpp
errors into routekit's tree (here, once), and the thread bridge for the async methods.
Must not retry (the attempt loop does), print, or import ``llama_cpp`` / ``openai`` before a
model is used. Finding and assembling model files lives in ``_model_files``.

Parameters. Passed on: ``temperature``, ``top_p``, ``stop``, ``seed``, ``presence_penalty``,
``frequency_penalty``, ``max_tokens`` / ``max_completion_tokens`` (the latter wins),
``response_format`` (``json_object``, and ``json_schema`` as a grammar-constrained
``json_object``), and from ``extra_body``: ``top_k``, ``min_p``, ``typical_p``,
``repeat_penalty``. Requests this model cannot honour without changing their meaning —
``n`` > 1, ``tools`` / ``functions`` (unless ``tool_choice="none"``), ``logprobs``,
``logit_bias`` (token ids of another vocabulary) — raise a plain ``ProviderError`` (neither
fatal nor retryable): the request is fine, another candidate may serve it. Parameters that do
not change the text (``user``, ``metadata``, ``stream_options``, ...) and unknown ones are
ignored with a debug log.

Deadlines. ``Deadline.total`` bounds the wait for the model's gate (``RequestTimeout``) and,
for streams, is checked between tokens: before any chunk went out it raises
``RequestTimeout``; after, ``StreamInterrupted`` with the text already sent (the caller has
seen those chunks, so no other candidate can take over invisibly). ``complete`` checks the
deadline before decoding starts; once started, a completion runs to its end, which
``max_tokens`` and ``n_ctx`` bound (llama-cpp-python has no per-token hook outside streaming).
``connect`` and ``read`` do not apply in-process.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Generator,
    Iterator,
    Mapping,
    NoReturn,
)

from .. import _constants as C
from .._config import ModelConfig, ProviderConfig
from .._exceptions import (
    ConfigError,
    ContextLengthExceeded,
    ModelNotFound,
    ProviderBusy,
    ProviderError,
    RequestTimeout,
    StreamInterrupted,
)
from .._model_files import ProgressCallback, describe_model_source, resolve_model_path
from ._llama_compat import construction_guard
from ._base import ChatRequest, Deadline, HealthReport

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["LlamaCppProvider"]

log = logging.getLogger("routekit.providers.llama_cpp")

_now = time.monotonic

# llama.cpp allocates contexts in multiples of this many tokens.
_CTX_PAD = 256
# Chunks an async stream's producer thread may run ahead of its consumer (backpressure).
_ASYNC_STREAM_BUFFER = 32

_PASSED = frozenset(
    {"temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"}
)
_EXTRA_BODY_PASSED = frozenset({"top_k", "min_p", "typical_p", "repeat_penalty"})
# Accepted and dropped: they do not change the generated text.
_IGNORED = frozenset(
    {
        "stream", "stream_options", "user", "metadata", "store", "service_tier",
        "parallel_tool_calls", "reasoning_effort", "modalities", "prediction",
        "safety_identifier", "prompt_cache_key", "verbosity", "timeout", "extra_headers",
    }
)
_CONTEXT_RE = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")

_CHUNK, _END, _ERROR = 0, 1, 2


class _Slot:
    """One model: its ``Llama`` (or None), and the gate in front of its single context.

    The gate is a fair lock with a bounded queue. ``pending`` counts admitted requests (the
    one decoding plus those waiting); admission fails fast past ``capacity`` = 1 + queue_size.
    A release hands the context straight to the oldest waiter (``busy`` stays set), so a
    newcomer can never overtake the queue. All fields are guarded by ``cond``.
    """

    __slots__ = (
        "name", "config", "provider", "capacity", "cond", "busy", "pending", "waiters",
        "closing", "load_lock", "llm", "params",
    )

    def __init__(self, name: str, config: ModelConfig, provider: str) -> None:
        self.name = name
        self.config = config
        self.provider = provider
        queue = config.queue_size if config.queue_size is not None else C.DEFAULT_QUEUE_SIZE
        self.capacity = 1 + queue
        self.cond = threading.Condition(threading.Lock())
        self.busy = False
        self.pending = 0
        self.waiters: deque[list[bool]] = deque()  # one [granted] flag per waiter, oldest first
        self.closing = False
        self.load_lock = threading.Lock()
        self.llm: Any = None  # llama_cpp.Llama once loaded
        self.params: dict[str, Any] | None = None

    # -- gate ---------------------------------------------------------------------------------

    def enter(self, t_end: float) -> None:
        """Admit and take the context, waiting in the queue until ``t_end`` at most."""
        with self.cond:
            self._admit_locked()
            self._wait_locked(t_end, None)

    def admit(self) -> None:
        with self.cond:
            self._admit_locked()

    def acquire_admitted(self, t_end: float, cancel: threading.Event) -> None:
        with self.cond:
            self._wait_locked(t_end, cancel)

    def abandon(self) -> None:
        """Give back an admission that never reached ``acquire_admitted``."""
        with self.cond:
            self.pending -= 1

    def release(self) -> None:
        with self.cond:
            self.pending -= 1
            free = self._handoff_locked()
        _free(free)

    def wake_all(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def queue_depth(self) -> int:
        with self.cond:
            return max(0, self.pending - (1 if self.busy else 0))

    def _admit_locked(self) -> None:
        if self.closing:
            raise self.closed_error()
        if self.pending >= self.capacity:
            raise ProviderBusy(
                f"in-process model {self.name!r} is busy: 1 request decoding and "
                f"{self.capacity - 1} waiting (queue_size {self.capacity - 1})",
                provider=self.provider, model=self.name,
            )
        self.pending += 1

    def _wait_locked(self, t_end: float, cancel: threading.Event | None) -> None:
        # Called holding an admission: every way out takes the context or gives it back.
        if not self.busy and not self.waiters and not self.closing:
            self.busy = True  # uncontended: no wait, one lock round trip in all
            return
        me = [False]
        self.waiters.append(me)
        try:
            while True:
                if self.closing:
                    raise self.closed_error()
                if cancel is not None and cancel.is_set():
                    raise ProviderError(
                        "request cancelled", provider=self.provider, model=self.name
                    )
                if me[0]:
                    return
                remaining = t_end - _now()
                if remaining <= 0:
                    raise RequestTimeout(
                        f"deadline passed while waiting for in-process model {self.name!r} "
                        f"({len(self.waiters) - 1} other request(s) waiting)",
                        provider=self.provider, model=self.name,
                    )
                self.cond.wait(remaining)
        except BaseException:
            self.pending -= 1
            if me[0]:
                _free(self._handoff_locked())  # granted as we gave up: pass it on
            else:
                self.waiters.remove(me)
            raise

    def _handoff_locked(self) -> Any:
        """Give the context to the oldest waiter, or mark it idle. Returns a Llama to free."""
        if self.waiters:
            self.waiters.popleft()[0] = True
            self.cond.notify_all()  # queues are short (queue_size); the granted one proceeds
            return None
        self.busy = False
        if self.closing:
            free, self.llm = self.llm, None
            return free
        return None

    def closed_error(self) -> ProviderError:
        return ProviderError(
            f"in-process provider for model {self.name!r} is closed",
            provider=self.provider, model=self.name,
        )


def _free(llm: Any) -> None:
    if llm is None:
        return
    close = getattr(llm, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:  # freeing must not mask the caller's own outcome
            log.debug("llama close() failed: %s", exc)


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
        self._slots = {m: _Slot(m, cfg, name) for m, cfg in models.items()}
        self._closed = False
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def warm(self, model: str, *, progress: ProgressCallback | None = None) -> None:
        """Load ``model`` now (assembling its file when needed) so the first request is fast.

        Raises ``ConfigError`` when the model file cannot be found or built, ``ProviderError``
        when llama.cpp cannot load it.
        """
        self._load(self._slot(model), progress=progress, translate_config=False)

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
            slot.params = self._resolve_params(slot, None)
        return dict(slot.params)

    def close(self) -> None:
        """Free every model; idempotent. In-flight requests finish or fail (see class doc)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            executor, self._executor = self._executor, None
        for slot in self._slots.values():
            free = None
            with slot.cond:
                slot.closing = True
                if not slot.busy:
                    free, slot.llm = slot.llm, None
                slot.cond.notify_all()
            # A loader racing with close() checks ``closing`` when it publishes its model;
            # a busy model is freed by the request holding it, on release.
            _free(free)
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
            _llama_module()
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
        kwargs = _llama_kwargs(request, slot)
        slot.enter(t_end)
        try:
            raw = self._run_complete(slot, request, kwargs, t_end)
        finally:
            slot.release()
        return _to_completion(raw, request.model)

    def stream(self, request: ChatRequest, deadline: Deadline) -> Iterator[ChatCompletionChunk]:
        """A generator of chunks. The model's gate is taken at the first ``next()`` and held
        until the generator ends or is closed; closing it early stops decoding."""
        slot = self._slot(request.model)
        t_end = _now() + deadline.total
        kwargs = _llama_kwargs(request, slot)
        return self._stream_sync(slot, request, kwargs, t_end)

    def _stream_sync(
        self, slot: _Slot, request: ChatRequest, kwargs: dict[str, Any], t_end: float
    ) -> Generator[ChatCompletionChunk, None, None]:
        slot.enter(t_end)
        try:
            yield from self._decode_stream(slot, request, kwargs, t_end, None)
        finally:
            slot.release()

    # -- async ----------------------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion:
        slot = self._slot(request.model)
        t_end = _now() + deadline.total
        kwargs = _llama_kwargs(request, slot)
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
        return _to_completion(raw, request.model)

    def astream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncIterator[ChatCompletionChunk]:
        """An async generator of chunks, decoded on a worker thread that runs at most
        ``_ASYNC_STREAM_BUFFER`` chunks ahead. ``aclose()`` or cancellation stops decoding at
        the next token and frees the model for the next request."""
        slot = self._slot(request.model)
        t_end = _now() + deadline.total
        kwargs = _llama_kwargs(request, slot)
        return self._astream(slot, request, kwargs, t_end)

    async def _astream(
        self, slot: _Slot, request: ChatRequest, kwargs: dict[str, Any], t_end: float
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
        self, slot: _Slot, request: ChatRequest, kwargs: dict[str, Any], t_end: float
    ) -> dict[str, Any]:
        llm = self._load(slot, progress=None, translate_config=True)
        if _now() >= t_end:
            raise RequestTimeout(
                f"deadline passed before in-process model {slot.name!r} started decoding",
                provider=slot.provider, model=slot.name,
            )
        try:
            raw: dict[str, Any] = llm.create_chat_completion(
                messages=request.messages, stream=False, **kwargs
            )
        except Exception as exc:
            raise _translate(exc, slot, None) from exc
        return raw

    def _decode_stream(
        self,
        slot: _Slot,
        request: ChatRequest,
        kwargs: dict[str, Any],
        t_end: float,
        cancel: threading.Event | None,
    ) -> Generator[ChatCompletionChunk, None, None]:
        """Decode with the gate already held; the caller releases it."""
        llm = self._load(slot, progress=None, translate_config=True)
        chunk_type = _chunk_type()
        model = request.model
        sent: list[str] = []  # text already yielded, for StreamInterrupted.partial
        emitted = False
        try:
            it = llm.create_chat_completion(messages=request.messages, stream=True, **kwargs)
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
                    content = choices[0]["delta"].get("content")
                    if content:
                        sent.append(content)
                emitted = True
                yield chunk
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    # -- loading --------------------------------------------------------------------------------

    def _load(
        self, slot: _Slot, *, progress: ProgressCallback | None, translate_config: bool
    ) -> Any:
        llm = slot.llm
        if llm is not None:
            return llm
        with slot.load_lock:
            if slot.llm is not None:
                return slot.llm
            if slot.closing:
                raise slot.closed_error()
            try:
                params = self._resolve_params(slot, progress)
            except ConfigError as exc:
                if not translate_config:
                    raise
                # At request time a missing file is this candidate's failure: move on.
                raise ProviderError(
                    f"in-process model {slot.name!r} is unavailable: "
                    + "; ".join(i.message for i in exc.issues),
                    provider=slot.provider, model=slot.name,
                ) from exc
            llama_cpp = _llama_module()
            t0 = time.perf_counter()
            llm = _construct(llama_cpp, params, slot)
            actual = llm.n_ctx()
            if actual > params["n_ctx"]:
                # A llama.cpp with another padding rule: reload at its size (see above).
                log.debug("llama.cpp padded n_ctx %s to %s; reloading", params["n_ctx"], actual)
                _free(llm)
                params = {**params, "n_ctx": actual}
                llm = _construct(llama_cpp, params, slot)
            log.info(
                "loaded in-process model %r in %.2f s (n_ctx=%s, n_gpu_layers=%s, chat_format=%s)",
                slot.name, time.perf_counter() - t0, params["n_ctx"], params["n_gpu_layers"],
                params.get("chat_format"),
            )
            slot.params = params
            with slot.cond:
                if slot.closing and not slot.busy:
                    free, slot.llm = llm, None
                else:
                    free, slot.llm = None, llm
            if free is not None:
                _free(free)
                raise slot.closed_error()
            return llm

    def _resolve_params(self, slot: _Slot, progress: ProgressCallback | None) -> dict[str, Any]:
        cfg = slot.config
        path = resolve_model_path(cfg, name=slot.name, progress=progress)
        if cfg.n_gpu_layers is not None:
            n_gpu_layers = cfg.n_gpu_layers
        else:
            # All layers on the GPU when this llama-cpp-python build can offload; else CPU.
            n_gpu_layers = -1 if _llama_module().llama_supports_gpu_offload() else 0
        n_ctx = cfg.n_ctx or C.DEFAULT_N_CTX
        params: dict[str, Any] = {
            "model_path": str(path),
            # llama.cpp pads the context it allocates to a multiple of 256, while
            # llama-cpp-python sizes its token buffer by the n_ctx it was given: prompts
            # between the two then crash inside eval() instead of raising the context-window
            # error. Asking for the padded size keeps both equal (the memory is spent anyway).
            "n_ctx": -(-n_ctx // _CTX_PAD) * _CTX_PAD,
            "n_gpu_layers": n_gpu_layers,
            "verbose": False,
        }
        chat_format = cfg.chat_format
        if chat_format is None and cfg.path is None:
            # Package models (the default gemma GGUF) carry no chat template: without a format
            # llama-cpp-python guesses one and the model answers with an empty message.
            chat_format = C.DEFAULT_MODEL_CHAT_FORMAT
        if chat_format is not None:
            params["chat_format"] = chat_format
        if cfg.n_threads is not None:
            params["n_threads"] = cfg.n_threads
        return params

    # -- helpers --------------------------------------------------------------------------------

    def _slot(self, model: str) -> _Slot:
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


def _construct(llama_cpp: Any, params: dict[str, Any], slot: _Slot) -> Any:
    try:
        with construction_guard(llama_cpp) as guarded:
            if guarded:
                log.debug("loading %r without extra buffer types (AMX crash workaround)",
                          slot.name)
            return llama_cpp.Llama(**params)
    except Exception as exc:
        raise ProviderError(
            f"llama.cpp could not load model {slot.name!r} from {params['model_path']}: {exc}",
            provider=slot.provider, model=slot.name,
        ) from exc


def _llama_module() -> Any:
    try:
        import llama_cpp
    except ImportError as exc:
        raise ProviderError(
            f"llama-cpp-python is not importable ({exc}); install it with: pip install routekit"
        ) from exc
    return llama_cpp


_chunk_cls: Any = None
_completion_cls: Any = None


def _chunk_type() -> Any:
    global _chunk_cls
    if _chunk_cls is None:
        from openai.types.chat import ChatCompletionChunk

        _chunk_cls = ChatCompletionChunk
    return _chunk_cls


def _to_completion(raw: dict[str, Any], model: str) -> ChatCompletion:
    global _completion_cls
    if _completion_cls is None:
        from openai.types.chat import ChatCompletion

        _completion_cls = ChatCompletion
    raw["model"] = model
    completion: ChatCompletion = _build(_completion_cls, raw)
    return completion


def _build(cls: Any, raw: dict[str, Any]) -> Any:
    # model_validate (pydantic-core, compiled) measured ~20x cheaper here than the openai
    # models' recursive pure-Python construct(): ~3 us vs ~60 us per chunk. construct() stays
    # as the fallback so an unexpected field value never costs the caller a response.
    try:
        return cls.model_validate(raw)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        log.debug("llama output did not validate as %s (%s); building it unvalidated",
                  cls.__name__, exc)
        return cls.construct(**raw)


def _llama_kwargs(request: ChatRequest, slot: _Slot) -> dict[str, Any]:
    """OpenAI ``chat.completions.create`` arguments → ``create_chat_completion`` kwargs."""
    out: dict[str, Any] = {}
    unsupported: list[str] = []
    tools = False
    tool_choice: Any = None
    for key, value in request.params.items():
        if value is None:
            continue
        if key in _PASSED:
            out[key] = value
        elif key == "max_completion_tokens":
            out["max_tokens"] = value
        elif key == "max_tokens":
            out.setdefault("max_tokens", value)
        elif key == "n":
            if value != 1:
                unsupported.append(f"n={value} (one choice per request)")
        elif key == "response_format":
            fmt = _response_format(value)
            if fmt is False:
                unsupported.append(f"response_format {value!r}")
            elif fmt is not None:
                out["response_format"] = fmt
        elif key in ("tools", "functions"):
            tools = tools or bool(value)
        elif key in ("tool_choice", "function_call"):
            tool_choice = value
        elif key in ("logprobs", "top_logprobs"):
            if value:
                unsupported.append(f"{key} (the model is loaded without logits_all)")
        elif key == "logit_bias":
            if value:
                unsupported.append("logit_bias (token ids belong to another vocabulary)")
        elif key in _IGNORED:
            log.debug("ignoring parameter %r for in-process model %r", key, slot.name)
        else:
            log.debug("ignoring unknown parameter %r for in-process model %r", key, slot.name)
    if tools and tool_choice != "none":
        unsupported.append("tools / function calling")
    if request.extra_body:
        for key, value in request.extra_body.items():
            if key in _EXTRA_BODY_PASSED and value is not None:
                out[key] = value
            else:
                log.debug("ignoring extra_body[%r] for in-process model %r", key, slot.name)
    if unsupported:
        raise ProviderError(
            f"in-process model {slot.name!r} does not support {', '.join(unsupported)}",
            provider=slot.provider, model=slot.name,
        )
    return out


def _response_format(value: Any) -> dict[str, Any] | None | bool:
    """None: nothing to pass; False: unsupported; else llama's own response_format."""
    kind = value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = value.get("json_schema") if isinstance(value, Mapping) else None
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        # llama-cpp-python constrains json_object output with a grammar built from "schema".
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    return False


def _translate(exc: Exception, slot: _Slot, sent: list[str] | None) -> ProviderError:
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


def _deadline_passed(slot: _Slot, sent: list[str] | None) -> NoReturn:
    if sent is None:
        raise RequestTimeout(
            f"deadline passed while in-process model {slot.name!r} was decoding",
            provider=slot.provider, model=slot.name,
        )
    raise StreamInterrupted(
        f"deadline passed mid-stream from in-process model {slot.name!r}",
        provider=slot.provider, model=slot.name, partial="".join(sent),
    )

