"""Both in-process kinds under a bounded, seeded mix of everything at once.

Threads and asyncio tasks share one model with a short queue: chats, JSON mode and text
completions (which the native kind hands to llama-cpp-python), complete and stream, streams
closed early, deadlines that pass while a request waits in the queue or decodes, and tasks
cancelled while they wait. Afterwards the gate must be idle with nobody queued, asyncio must
have reported nothing (an unretrieved "request cancelled" is logged with a traceback in the
application's loop), and the model must answer as a fresh one does.

A longer run of this mix found two bugs, each pinned by its own test in
test_llama_cpp_provider.py: a waiter giving up removed an earlier waiter's place in the
queue (the places were equal lists), so the model was later handed to a waiter that had left
and stayed busy for good (this short form catches that one too); and a cancelled
``acomplete`` left its pool future's exception unretrieved. The tiny GGUF from ``tinygguf``
keeps it to a few seconds; counts are bounded, and no request starts after ``BUDGET_S``.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("openai")

from routekit._exceptions import (  # noqa: E402
    ProviderBusy,
    RequestTimeout,
    StreamInterrupted,
)
from routekit.providers._base import ChatRequest, Deadline  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from inproc_helpers import LONG  # noqa: E402
from inproc_helpers import request as _request  # noqa: E402

EXPECTED = (ProviderBusy, RequestTimeout, StreamInterrupted)
PER_WORKER = 60  # requests per thread and per task (a few seconds in all here)
BUDGET_S = 20.0  # no new request after this: a stuck model must fail the test, not hang it
WAIT = Deadline(connect=1.0, read=2.0, total=2.0)  # the "long" deadline


def _random_request(rng: random.Random) -> tuple[ChatRequest, Deadline]:
    kind = rng.choice(["chat", "chat", "json", "text"])
    params: dict[str, Any] = {"max_tokens": rng.randint(1, 40),
                              "temperature": rng.choice([0, 0.7])}
    if rng.random() < 0.3:
        params["stop"] = ["ab"]
    if kind == "json":
        params["response_format"] = {"type": "json_object"}
    content = "hello " * rng.randint(1, 4)
    prompt = content if kind == "text" else None
    req = ChatRequest("m", "m", [{"role": "user", "content": content}], params, prompt=prompt)
    # Short deadlines pass while a request waits in the queue (or decodes): a waiter gives
    # up while others wait before and after it.
    deadline = WAIT if rng.random() < 0.5 else Deadline(
        connect=1.0, read=1.0, total=rng.choice([0.005, 0.02, 0.05, 0.1]))
    return req, deadline


@pytest.mark.parametrize("kind", ["llama_cpp", "llama_cpp_native"])
def test_a_mixed_concurrent_load_leaves_the_model_consistent(
    make_tiny: Callable[..., Any], kind: str
) -> None:
    provider = make_tiny(kind, queue_size=2, n_ctx=512)
    fresh = make_tiny("llama_cpp", n_ctx=512)
    unexpected: list[str] = []
    answered = [0]
    lock = threading.Lock()

    def outcome(exc: BaseException | None) -> None:
        with lock:
            if exc is None:
                answered[0] += 1
            elif not isinstance(exc, EXPECTED):
                unexpected.append(repr(exc))

    stop_at = time.monotonic() + BUDGET_S

    def requests(seed: int) -> Iterator[tuple[random.Random, ChatRequest, Deadline, bool]]:
        """One worker's requests (and whether each is a text completion), within the budget."""
        rng = random.Random(seed)
        for _ in range(PER_WORKER):
            if time.monotonic() > stop_at:
                return
            req, deadline = _random_request(rng)
            yield rng, req, deadline, req.prompt is not None

    def sync_worker(seed: int) -> None:
        for rng, req, deadline, text in requests(seed):
            try:
                if rng.random() < 0.5:
                    (provider.complete_text if text else provider.complete)(req, deadline)
                else:
                    stream = (provider.stream_text if text else provider.stream)(req, deadline)
                    cut = rng.randint(0, 12)
                    for i, _ in enumerate(stream):
                        if i == cut:
                            stream.close()
                            break
                outcome(None)
            except BaseException as exc:
                outcome(exc)

    async def async_worker(seed: int) -> None:
        for rng, req, deadline, text in requests(seed):
            try:
                if rng.random() < 0.5:
                    call = (provider.acomplete_text if text else provider.acomplete)
                    task = asyncio.ensure_future(call(req, deadline))
                    if rng.random() < 0.25:
                        await asyncio.sleep(rng.random() * 0.01)
                        task.cancel()
                        try:
                            await task
                        except asyncio.CancelledError:
                            pass
                        continue
                    await task
                else:
                    stream = (provider.astream_text if text else provider.astream)(req, deadline)
                    cut = rng.randint(0, 12)
                    i = 0
                    async for _ in stream:
                        if i == cut:
                            await stream.aclose()
                            break
                        i += 1
                outcome(None)
            except BaseException as exc:
                outcome(exc)
                if isinstance(exc, ProviderBusy):
                    await asyncio.sleep(0.002)  # refused at once: do not spin

    async def tasks() -> list[dict[str, Any]]:
        reported: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: reported.append(ctx))
        await asyncio.gather(*(async_worker(100 + s) for s in range(3)))
        await asyncio.sleep(0.2)  # cancelled work items finish in the pool
        gc.collect()
        return reported

    threads = [threading.Thread(target=sync_worker, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    reported = asyncio.run(tasks())
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert unexpected == []
    assert [ctx.get("message") for ctx in reported] == []
    assert answered[0] > 0
    slot = provider._slot("m")
    assert (slot.busy, slot.pending, len(slot.waiters)) == (False, 0, 0)
    # The model still answers, and as a fresh model does (the KV cache is not stale).
    want = fresh.complete(_request(max_tokens=8), LONG).choices[0].message.content
    assert provider.complete(_request(max_tokens=8), LONG).choices[0].message.content == want
