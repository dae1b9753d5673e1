"""One async HTTP client per event loop: which loop is running, and the closer that shuts
a loop's client as ``asyncio.run`` ends that loop.

An ``openai.AsyncOpenAI`` client (its httpx pool) belongs to the event loop it was built
in; ``OpenAICompatProvider`` keeps one per loop, keyed by ``running_loop_key()``.
"""

from __future__ import annotations

import weakref
from typing import Any, AsyncGenerator

__all__ = ["NO_LOOP", "running_loop_key", "start_closer"]


class _NoLoop:
    """Weak-referenceable stand-in key when no asyncio loop runs (e.g. under trio)."""


NO_LOOP = _NoLoop()


async def _loop_closer(provider: weakref.ref[Any], loop: object) -> AsyncGenerator[None, None]:
    """Suspended at its ``yield`` while ``loop``'s async client lives. ``asyncio.run`` ends
    a loop by finalising its async generators (``loop.shutdown_asyncgens``) while the loop
    still runs: this one's ``finally`` then closes that client (``_aclose_for``), so a
    router used by one ``asyncio.run`` after another keeps no sockets of finished loops
    (they piled up, two per loop, each a ResourceWarning when collected)."""
    try:
        yield
    finally:
        owner = provider()
        if owner is not None:
            await owner._aclose_for(loop)


def start_closer(provider: Any, loop: object) -> AsyncGenerator[None, None] | None:
    """A started closer of ``provider``'s client for the running asyncio ``loop`` (None
    elsewhere: trio)."""
    if loop is NO_LOOP:
        return None
    closer = _loop_closer(weakref.ref(provider), loop)
    # __anext__ registers the generator with the running loop (its firstiter hook); the
    # generator reaches its yield without awaiting anything, so one send() starts it.
    step = closer.__anext__()
    try:
        step.send(None)
    except StopIteration:
        pass
    return closer


def running_loop_key() -> object:
    """The running asyncio loop, or ``NO_LOOP``."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return NO_LOOP
