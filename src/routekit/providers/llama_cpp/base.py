"""What the two in-process providers share: lifecycle, health, results, error translation.

Owns ``InProcessProvider`` — the per-model slots and their gates, ``warm``, ``close``,
``health``, ``queue_depth``, ``load_params``, the context manager and the thread pool for
waits that must leave the event loop — and the helpers both providers use to translate
llama_cpp's errors into routekit's tree (``chunks`` builds their ``openai`` results).
``LlamaCppProvider`` (``provider``) decodes through llama-cpp-python; ``LlamaCppNativeProvider``
(``native``) through routekit's C++ loop. Must not decode, print, or import ``llama_cpp`` /
``openai`` before a model is used.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, Mapping, NoReturn, TypeVar

from ..._config.model import ModelConfig, ProviderConfig
from ..._exceptions import (
    BadRequest,
    ContextLengthExceeded,
    ModelNotFound,
    ProviderError,
    RequestTimeout,
    StreamInterrupted,
)
from .._base import ChatRequest, Deadline, HealthReport
from . import chunks, cxx_runtime
from .gate import ModelSlot
from .load import llama_module, load, resolve_params
from .model_files import ProgressCallback, describe_model_source
from .params import llama_kwargs

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = [
    "AttemptClock",
    "InProcessProvider",
    "context_length_error",
    "deadline_passed",
    "first_byte_timeout",
    "translate",
]

log = logging.getLogger("routekit.providers.llama_cpp")

_P = TypeVar("_P", bound="InProcessProvider")

# A generous bound on the warm-up's two tokens; a model that needs more is slow enough to be
# warming while it is used anyway.
_WARM_UP_DEADLINE = Deadline(connect=60.0, read=60.0, total=60.0)

_CONTEXT_RE = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


class AttemptClock:
    """One attempt's deadlines as ``time.monotonic()`` instants: ``t_end`` (total),
    ``t_first`` (first token; None: no separate limit) and ``gate_end``, the bound on the
    wait for the model's gate (the first token cannot come before the model is ours)."""

    __slots__ = ("t_end", "t_first", "gate_end")

    def __init__(self, deadline: Deadline) -> None:
        now = time.monotonic()
        self.t_end = now + deadline.total
        self.t_first = None if deadline.first_byte is None else now + deadline.first_byte
        self.gate_end = self.t_end if self.t_first is None else min(self.t_end, self.t_first)

    def first_late(self, now: float) -> bool:
        return self.t_first is not None and now > self.t_first


def first_byte_timeout(slot: ModelSlot) -> RequestTimeout:
    return RequestTimeout(
        f"no first token from in-process model {slot.name!r} within first_byte",
        provider=slot.provider, model=slot.name,
    )


class InProcessProvider:
    """The lifecycle both in-process providers share (see their class docs for requests).

    Thread safety: every method may be called from any thread. ``close()`` refuses new
    requests, wakes the waiters with an error and frees each model once its current request
    lets go; subclasses stop their own work in ``_close_models``.
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
        """Load ``model`` now (assembling its file when needed) and run it once (``warm_up``),
        so the first request is as fast as the next.

        Raises ``ConfigError`` when the model file cannot be found or built, ``ProviderError``
        when llama.cpp cannot load it. A warm-up that fails is logged, never raised.
        """
        slot = self._slot(model)
        load(slot, progress=progress, translate_config=False)
        if self._servable(slot):
            self.warm_up(slot)

    def _servable(self, slot: ModelSlot) -> bool:
        """After ``warm`` loaded the model: ready what loading does not, and say whether it
        can serve (the native kind starts its decode loop here)."""
        return True

    def warm_up(self, slot: ModelSlot) -> None:
        """Run a loaded model's request path once: a two-token answer to "Hi", streamed.

        Measured on the 2-core dev VM (gemma-3-270m), a model that ``warm`` had loaded still
        took 360-480 ms to its first token through the Router, against 50-60 ms for the next
        request. ~0.4 s of that was importing openai's result types; ~30 ms the first decode
        (faulting in the mapped weights, starting llama.cpp's threads). llama.cpp's own tools
        and server warm a model up after loading it for the same reason (``common`` does
        "warming up the model with an empty run" unless ``--no-warmup``; llama-cpp-python does
        not). After this, the first request costs what the next one does. Once per loaded
        ``Llama``; skipped while a request holds or waits for the model (it is warm then). The
        KV cache keeps the warm-up turn as it keeps any earlier request; prefix reuse treats it
        the same way.
        """
        with slot.cond:  # once, however many threads warm at the same time
            llm = slot.llm
            if llm is None or slot.warmed is llm or slot.busy or slot.pending:
                return
            slot.warmed = llm
        t0 = time.perf_counter()
        try:
            chunks.prepare()
            request = ChatRequest(slot.name, slot.name, [{"role": "user", "content": "Hi"}],
                                  {"max_tokens": 2, "temperature": 0})
            for _ in self.stream(request, _WARM_UP_DEADLINE):
                pass
        except Exception as exc:  # the first real request will report a real problem
            log.debug("warm-up of in-process model %r failed: %s", slot.name, exc)
            return
        log.debug("warmed up in-process model %r in %.1f ms", slot.name,
                  (time.perf_counter() - t0) * 1000.0)

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
        self._close_models()
        if executor is not None:
            executor.shutdown(wait=False)

    def _close_models(self) -> None:
        for slot in self._slots.values():
            # A loader racing with close() checks ``closing`` when it publishes its model;
            # a busy model is freed by the request holding it, on release.
            slot.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def health(self, timeout: float = 1.0) -> HealthReport:
        t0 = time.perf_counter()
        ok = True
        parts = []
        try:
            module = llama_module()
        except ProviderError as exc:
            ok = False
            parts.append(str(exc))
        else:
            conflict = cxx_runtime.llama_cxx_conflict(module)
            if conflict is not None:  # loads are refused (load._construct): say why up front
                ok = False
                parts.append(conflict)
        extra = self._health_extra()
        if extra is not None:
            good, text = extra
            ok = ok and good
            parts.append(text)
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

    def _health_extra(self) -> tuple[bool, str] | None:
        """A provider-wide (ok, detail) line for health(), or None."""
        return None

    # -- helpers --------------------------------------------------------------------------------

    def _begin(self, request: ChatRequest, deadline: Deadline
               ) -> tuple[ModelSlot, AttemptClock, dict[str, Any]]:
        """A request's model slot, its attempt clock (started now) and its llama arguments
        (``_kwargs``: refusals happen here, before the model is touched)."""
        slot = self._slot(request.model)
        return slot, AttemptClock(deadline), self._kwargs(request, slot)

    def _kwargs(self, request: ChatRequest, slot: ModelSlot) -> dict[str, Any]:
        return llama_kwargs(request, slot)

    # -- streams (each kind decodes in its own _stream_sync / _astream) ------------------------

    def stream(self, request: ChatRequest, deadline: Deadline) -> Iterator[ChatCompletionChunk]:
        """A generator of chunks. The model's gate is taken at the first ``next()`` and held
        until the generator ends or is closed; closing it early stops decoding."""
        slot, clock, kwargs = self._begin(request, deadline)
        return self._stream_sync(slot, request, kwargs, clock)

    def astream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncIterator[ChatCompletionChunk]:
        """An async generator of chunks. ``aclose()`` or cancellation stops decoding at the
        next token and frees the model for the next request."""
        slot, clock, kwargs = self._begin(request, deadline)
        return self._astream(slot, request, kwargs, clock)

    def _stream_sync(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock
    ) -> Iterator[ChatCompletionChunk]:
        raise NotImplementedError

    def _astream(
        self, slot: ModelSlot, request: ChatRequest, kwargs: dict[str, Any], clock: AttemptClock
    ) -> AsyncIterator[ChatCompletionChunk]:
        raise NotImplementedError

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


# -- errors --------------------------------------------------------------------------------------


def context_length_error(slot: ModelSlot, n_tokens: int, n_ctx: int) -> ContextLengthExceeded:
    return ContextLengthExceeded(
        f"prompt of {n_tokens} tokens does not fit in-process model {slot.name!r} "
        f"(n_ctx {n_ctx})",
        status_code=400, provider=slot.provider, model=slot.name,
        body={"prompt_tokens": n_tokens, "n_ctx": n_ctx},
    )


def translate(exc: Exception, slot: ModelSlot, sent: list[str] | None) -> ProviderError:
    """llama_cpp's exceptions → routekit's tree. ``sent``: text already yielded, or None."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, UnicodeEncodeError):
        # Text that is not valid Unicode (a lone surrogate from a bad decode upstream): the
        # request's fault, not the model's, so its breaker hears nothing of it.
        bad = exc.object[exc.start:exc.end] if isinstance(exc.object, str) else ""
        return BadRequest(
            f"in-process model {slot.name!r}: the request's text is not valid Unicode "
            f"({exc.reason}: {bad!r} at position {exc.start} of a message)",
            status_code=400, provider=slot.provider, model=slot.name)
    message = str(exc)
    match = _CONTEXT_RE.search(message) if isinstance(exc, ValueError) else None
    if match is not None:
        return context_length_error(slot, int(match.group(1)), int(match.group(2)))
    text = f"in-process model {slot.name!r} failed: {type(exc).__name__}: {message}"
    if sent is not None:
        return StreamInterrupted(text, provider=slot.provider, model=slot.name,
                                 partial="".join(sent))
    return ProviderError(text, provider=slot.provider, model=slot.name)


def deadline_passed(slot: ModelSlot, sent: list[str] | None) -> NoReturn:
    if sent is None:
        raise RequestTimeout(
            f"deadline passed while in-process model {slot.name!r} was decoding",
            provider=slot.provider, model=slot.name,
        )
    raise StreamInterrupted(
        f"deadline passed mid-stream from in-process model {slot.name!r}",
        provider=slot.provider, model=slot.name, partial="".join(sent),
    )
