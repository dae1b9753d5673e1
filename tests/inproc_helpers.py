"""What the in-process provider tests share (tests/test_llama_cpp_provider.py and
tests/test_native.py): a long deadline, a greedy request, the text of chunks, waiting for a
condition without sleeping longer than needed, and counting event-loop ticks during a call."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import time
from typing import Any, Awaitable, Callable, Iterator, TypeVar

from routekit.providers._base import ChatRequest, Deadline

__all__ = ["HELLO", "LONG", "PROVIDER", "acut_while_dawdling", "cut_while_dawdling",
           "refused_abi", "request", "text", "ticking", "wait_for"]

_T = TypeVar("_T")

PROVIDER = "local"
LONG = Deadline(connect=1.0, read=60.0, total=60.0)
HELLO = [{"role": "user", "content": "Write one short sentence about the sea."}]


def request(model: str = "m", messages: list[dict[str, Any]] | None = None,
            extra_body: dict[str, Any] | None = None, **params: Any) -> ChatRequest:
    """Greedy (temperature 0) and short (8 tokens) unless told otherwise."""
    params.setdefault("temperature", 0)
    params.setdefault("max_tokens", 8)
    return ChatRequest(model, model, messages or HELLO, params, extra_body=extra_body)


def text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def cut_while_dawdling(stream: Any, first: int, dawdle: float = 0.35
                       ) -> tuple[list[Any], Any]:
    """Take ``first`` chunks, sleep ``dawdle`` seconds (past the stream's deadline), then read
    on: returns the chunks received and the StreamInterrupted the deadline raised."""
    import pytest

    from routekit._exceptions import StreamInterrupted

    got = [next(stream) for _ in range(first)]
    time.sleep(dawdle)  # the consumer dawdles past the deadline
    with pytest.raises(StreamInterrupted) as info:
        for c in stream:
            got.append(c)
    return got, info.value


async def acut_while_dawdling(stream: Any, first: int, dawdle: float = 0.35
                              ) -> tuple[list[Any], Any]:
    """``cut_while_dawdling`` for an async stream."""
    import pytest

    from routekit._exceptions import StreamInterrupted

    got: list[Any] = []
    with pytest.raises(StreamInterrupted) as info:
        async for c in stream:
            got.append(c)
            if len(got) == first:
                await asyncio.sleep(dawdle)  # the consumer dawdles past the deadline
    return got, info.value


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


async def ticking(work: Callable[[], Awaitable[_T]]) -> tuple[_T, int]:
    """Run ``work()`` while a task ticks every 5 ms: (its result, the ticks). A loop that
    decoding blocked would tick once or twice."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        return await work(), ticks
    finally:
        done.set()
        await task


@contextlib.contextmanager
def refused_abi(monkeypatch: Any) -> Iterator[None]:
    """Within: llama-cpp-python declares ``llama_batch`` with a field added in the middle, so
    the native ABI check refuses (its process-wide verdict is cleared on entry and exit)."""
    import llama_cpp

    from routekit.providers.llama_cpp import native as native_module

    class wrong_batch(ctypes.Structure):
        _fields_ = [("n_tokens", ctypes.c_int32), ("token", ctypes.c_void_p),
                    ("extra", ctypes.c_void_p), ("embd", ctypes.c_void_p),
                    ("pos", ctypes.c_void_p), ("n_seq_id", ctypes.c_void_p),
                    ("seq_id", ctypes.c_void_p), ("logits", ctypes.c_void_p)]

    monkeypatch.setattr(llama_cpp.llama_cpp, "llama_batch", wrong_batch)
    native_module._api_cache.clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        native_module._api_cache.clear()
