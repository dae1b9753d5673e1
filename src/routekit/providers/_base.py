"""The provider protocol: one small interface every backend implements, sync and async.

A provider serves *one* configured provider (one HTTP client, or one in-process model per
model name). It translates every third-party error into routekit's error tree, once, here at
the boundary (``raise ... from exc``). It never retries: the attempt loop owns retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING, Any, AsyncIterator, Iterator, NamedTuple, Protocol, runtime_checkable,
)

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk


@dataclass(frozen=True)
class ChatRequest:
    """One chat request, as handed to a provider.

    ``model`` is the routekit model name (for routes and errors); ``model_id`` is the id the
    provider knows it by. ``params`` holds the other ``chat.completions.create`` arguments
    (temperature, max_tokens, stop, ...) already merged with the model's defaults; ``None``
    values are absent. ``extra_body``, ``extra_headers`` and ``extra_query`` are passed through
untouched to HTTP providers (in-process models read a few sampling knobs from ``extra_body``).
    """

    model: str
    model_id: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)
    extra_body: dict[str, Any] | None = None
    extra_headers: dict[str, str] | None = None
    extra_query: dict[str, Any] | None = None


class Deadline(NamedTuple):
    """Timeouts for one attempt, in seconds, counted from when the provider is called.

    ``total`` is what this attempt may spend in all (never more than what is left of the
    request's budget). ``first_byte`` (None: no separate limit) bounds the wait for the first
    byte of the answer: a stream's first chunk, or a non-streaming answer's first token when
    the provider can see it. ``read`` is the longest silence allowed once bytes flow.
    ``connect`` applies to HTTP only.

    A NamedTuple (immutable, and built on every attempt: cheaper than a frozen dataclass)."""

    connect: float
    read: float
    total: float
    first_byte: float | None = None


@runtime_checkable
class Provider(Protocol):
    """What the attempt loop needs from a backend. Implementations state their thread safety."""

    name: str
    kind: str

    def complete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion: ...

    def stream(self, request: ChatRequest, deadline: Deadline) -> Iterator[ChatCompletionChunk]:
        """A generator of chunks; closing it early releases the connection / model."""
        ...

    async def acomplete(self, request: ChatRequest, deadline: Deadline) -> ChatCompletion: ...

    def astream(
        self, request: ChatRequest, deadline: Deadline
    ) -> AsyncIterator[ChatCompletionChunk]: ...

    def health(self, timeout: float = 1.0) -> HealthReport: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class HealthReport:
    provider: str
    ok: bool
    detail: str
    latency_ms: float
