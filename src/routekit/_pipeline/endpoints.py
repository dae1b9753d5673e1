"""Which provider call serves a request: chat (``complete`` / ``stream``) or legacy text
completion (``complete_text`` / ``stream_text``), and how to read its chunks.

Owns the choice, made once per candidate, and the answer for a provider that has no text
calls (``providers._base.TextProvider`` is optional): a call that raises
``UnsupportedRequest``, so the driver records it and moves on like any failed attempt (its
breaker permits given back). Also the two chunk readers the stream driver needs per
endpoint: the chunk's text, and whether it commits the stream.

Must not decide retries or routes (the drivers and ``RequestState`` do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterator

from .._exceptions import UnsupportedRequest
from ..providers._base import chat_chunk_answers, text_chunk_answers

if TYPE_CHECKING:
    from .entries import ModelEntry
    from .request import RequestState

__all__ = ["acomplete_call", "astream_call", "chunk_reader", "complete_call", "stream_call"]

Call = Callable[..., Any]


def _unsupported(entry: ModelEntry) -> UnsupportedRequest:
    return UnsupportedRequest(
        f"provider {entry.provider_name!r} ({entry.kind}) serves no text completions "
        "(completions.create)", provider=entry.provider_name, model=entry.name)


def complete_call(req: RequestState, entry: ModelEntry) -> Call:
    if req.prompt is None:
        return entry.provider.complete
    fn: Call | None = getattr(entry.provider, "complete_text", None)
    if fn is not None:
        return fn

    def refuse(*_: Any) -> Any:
        raise _unsupported(entry)

    return refuse


def acomplete_call(req: RequestState, entry: ModelEntry) -> Call:
    if req.prompt is None:
        return entry.provider.acomplete
    fn: Call | None = getattr(entry.provider, "acomplete_text", None)
    if fn is not None:
        return fn

    async def refuse(*_: Any) -> Any:
        raise _unsupported(entry)

    return refuse


def stream_call(req: RequestState, entry: ModelEntry) -> Call:
    if req.prompt is None:
        return entry.provider.stream
    fn: Call | None = getattr(entry.provider, "stream_text", None)
    if fn is not None:
        return fn

    def refuse(*_: Any) -> Iterator[Any]:
        raise _unsupported(entry)
        yield  # a generator: the refusal comes at the first next(), like a failed request

    return refuse


def astream_call(req: RequestState, entry: ModelEntry) -> Call:
    if req.prompt is None:
        return entry.provider.astream
    fn: Call | None = getattr(entry.provider, "astream_text", None)
    if fn is not None:
        return fn

    async def refuse(*_: Any) -> AsyncIterator[Any]:
        raise _unsupported(entry)
        yield

    return refuse


# -- reading chunks ------------------------------------------------------------------------


def _chat_text(chunk: Any) -> str:
    if chunk.choices:
        delta = chunk.choices[0].delta
        if delta is not None and delta.content:
            return str(delta.content)
    return ""


def _text_text(chunk: Any) -> str:
    if chunk.choices:
        return str(chunk.choices[0].text or "")
    return ""


def chunk_reader(req: RequestState) -> tuple[Callable[[Any], str], Callable[[Any], bool]]:
    """(the chunk's text, does the chunk commit the stream) for this request's endpoint."""
    if req.prompt is None:
        return _chat_text, chat_chunk_answers
    return _text_text, text_chunk_answers
