"""The per-model gate of the in-process provider: one llama context, one request at a time.

Owns ``ModelSlot``: one configured model's state (its loaded ``Llama`` and the arguments it
got) and the fair lock with a bounded FIFO queue in front of its single context — admission
(``ProviderBusy`` past the queue), waiting until a deadline (``RequestTimeout``), hand-off to
the oldest waiter on release, and waking everyone on close. Also ``free_llama``, the one way a
``Llama`` is freed. Must not load models (``_llama_load``), decode, or import ``llama_cpp``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Iterator, Literal, Protocol, overload

from ... import _constants as C
from ..._config.model import ModelConfig
from ..._exceptions import ProviderBusy, ProviderError, RequestTimeout

__all__ = ["LlamaModel", "ModelSlot", "free_llama"]

log = logging.getLogger("routekit.providers.llama_cpp")

_now = time.monotonic


class LlamaModel(Protocol):
    """The part of ``llama_cpp.Llama`` that routekit calls (raw OpenAI-shaped dicts out)."""

    def n_ctx(self) -> int: ...

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False
                 ) -> list[int]: ...

    def create_completion(self, prompt: list[int] | str, **kwargs: Any) -> Any: ...

    def reset(self) -> None: ...

    # The tokens its KV cache holds: input_ids[:n_tokens] (a numpy array of n_ctx ints).
    input_ids: Any
    n_tokens: int

    @overload
    def create_chat_completion(
        self, *, messages: list[dict[str, Any]], stream: Literal[False], **kwargs: Any
    ) -> dict[str, Any]: ...

    @overload
    def create_chat_completion(
        self, *, messages: list[dict[str, Any]], stream: Literal[True], **kwargs: Any
    ) -> Iterator[dict[str, Any]]: ...


class _Place:
    """One waiter's place in a gate's queue. Compared by identity: ``deque.remove`` takes the
    first *equal* item, and a plain ``[False]`` flag per waiter let a waiter giving up remove
    an earlier waiter's place, so a later release handed the model to one that had left."""

    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted = False


class ModelSlot:
    """One model: its ``Llama`` (or None), and the gate in front of its single context.

    The gate is a fair lock with a bounded queue. ``pending`` counts admitted requests (the
    one decoding plus those waiting); admission fails fast past ``capacity`` = 1 + queue_size.
    A release hands the context straight to the oldest waiter (``busy`` stays set), so a
    newcomer can never overtake the queue. All fields are guarded by ``cond`` (or its
    ``lock``, the same lock); ``llm`` is published under ``load_lock`` too (see
    ``_llama_load.load``).
    """

    __slots__ = (
        "name", "config", "provider", "capacity", "lock", "cond", "busy", "pending", "waiters",
        "closing", "load_lock", "llm", "params", "warmed",
    )

    def __init__(self, name: str, config: ModelConfig, provider: str) -> None:
        self.name = name
        self.config = config
        self.provider = provider
        queue = config.queue_size if config.queue_size is not None else C.DEFAULT_QUEUE_SIZE
        self.capacity = 1 + queue
        # ``lock`` is ``cond``'s own lock: the request path's fast paths take it directly
        # (a C-level ``with``; Condition's __enter__/__exit__ are Python calls).
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.busy = False
        self.pending = 0
        self.waiters: deque[_Place] = deque()  # oldest first
        self.closing = False
        self.load_lock = threading.Lock()
        self.llm: LlamaModel | None = None
        self.params: dict[str, Any] | None = None  # the keyword arguments Llama got
        self.warmed: object | None = None  # the Llama the warm-up ran on (base.warm_up)

    def enter(self, t_end: float) -> None:
        """Admit and take the context, waiting in the queue until ``t_end`` at most."""
        with self.lock:
            if (self.busy or self.waiters or self.closing
                    or self.pending >= self.capacity):
                self._admit_locked()
                self._wait_locked(t_end, None)
                return
            # Uncontended (every request when one caller uses the model): admitted and
            # taken in one step, with no Python call. Every request pays this path with cold
            # caches (after the previous decode), where each call costs microseconds.
            self.pending += 1
            self.busy = True

    def admit(self) -> None:
        with self.lock:
            self._admit_locked()

    def acquire_admitted(self, t_end: float, cancel: threading.Event) -> None:
        with self.cond:
            self._wait_locked(t_end, cancel)

    def try_acquire_admitted(self) -> bool:
        """Take the context now if it is free and nobody waits (an async caller's fast path:
        no thread hop); False leaves the admission in place for ``acquire_admitted``."""
        with self.lock:
            if self.busy or self.waiters or self.closing:
                return False
            self.busy = True
            return True

    def abandon(self) -> None:
        """Give back an admission that never reached ``acquire_admitted``."""
        with self.lock:
            self.pending -= 1

    def release(self) -> None:
        with self.lock:
            self.pending -= 1
            if not self.waiters and not self.closing:
                self.busy = False  # nobody to hand over to (as in _handoff_locked)
                return
            free = self._handoff_locked()
        free_llama(free)

    def wake_all(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def queue_depth(self) -> int:
        with self.cond:
            return max(0, self.pending - (1 if self.busy else 0))

    def close(self) -> None:
        """Refuse new requests and wake the waiters; frees the model unless a request holds
        it (that request frees it on release)."""
        free = None
        with self.cond:
            self.closing = True
            if not self.busy:
                free, self.llm = self.llm, None
            self.cond.notify_all()
        free_llama(free)

    def closed_error(self) -> ProviderError:
        return ProviderError(
            f"in-process provider for model {self.name!r} is closed",
            provider=self.provider, model=self.name,
        )

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
        me = _Place()
        self.waiters.append(me)
        try:
            while True:
                if self.closing:
                    raise self.closed_error()
                if cancel is not None and cancel.is_set():
                    raise ProviderError(
                        "request cancelled", provider=self.provider, model=self.name
                    )
                if me.granted:
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
            if me.granted:
                free_llama(self._handoff_locked())  # granted as we gave up: pass it on
            else:
                self.waiters.remove(me)
            raise

    def _handoff_locked(self) -> LlamaModel | None:
        """Give the context to the oldest waiter, or mark it idle. Returns a Llama to free."""
        if self.waiters:
            self.waiters.popleft().granted = True
            self.cond.notify_all()  # queues are short (queue_size); the granted one proceeds
            return None
        self.busy = False
        if self.closing:
            free, self.llm = self.llm, None
            return free
        return None


def free_llama(llm: object | None) -> None:
    """Free a ``Llama`` now rather than at garbage collection; never raises."""
    if llm is None:
        return
    close = getattr(llm, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:  # freeing must not mask the caller's own outcome
            log.debug("llama close() failed: %s", exc)
