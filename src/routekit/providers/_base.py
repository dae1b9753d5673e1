"""The provider protocol: one small interface every backend implements, sync and async.

A provider serves *one* configured provider (one HTTP client, or one in-process model per
model name). It translates every third-party error into routekit's error tree, once, here at
the boundary (``raise ... from exc``). It never retries: the attempt loop owns retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING, Any, AsyncIterator, Iterator, NamedTuple, Protocol, Sequence, TypedDict,
    Union, runtime_checkable,
)

if TYPE_CHECKING:
    from openai.types import Completion
    from openai.types.chat import ChatCompletion, ChatCompletionChunk


class RequestParams(TypedDict, total=False):
    """The ``chat.completions.create`` arguments a request carries to its providers: only
    those the caller (or the model's ``defaults``) set; an absent key means "not given".
    ``model``, ``messages``, ``stream``, ``timeout`` and the ``extra_*`` arguments travel
    separately (``ChatRequest``, ``Deadline``)."""

    audio: dict[str, Any]
    frequency_penalty: float
    function_call: Any
    functions: list[dict[str, Any]]
    logit_bias: dict[str, int]
    logprobs: Union[bool, int]  # chat: a flag; text completions: how many
    max_completion_tokens: int
    max_tokens: int
    metadata: dict[str, str]
    modalities: list[str]
    moderation: Any
    n: int
    parallel_tool_calls: bool
    prediction: dict[str, Any]
    presence_penalty: float
    prompt_cache_key: str
    prompt_cache_options: Any
    prompt_cache_retention: Any
    reasoning_effort: str
    response_format: Any
    safety_identifier: str
    seed: int
    service_tier: str
    stop: Union[str, Sequence[str]]
    store: bool
    stream_options: dict[str, Any]
    temperature: float
    tool_choice: Any
    tools: list[dict[str, Any]]
    top_logprobs: int
    top_p: float
    user: str
    # legacy text completions only
    best_of: int
    echo: bool
    suffix: str
    verbosity: str
    web_search_options: dict[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    """One chat request, as handed to a provider.

    ``model`` is the routekit model name (for routes and errors); ``model_id`` is the id the
    provider knows it by. ``params`` holds the other ``chat.completions.create`` arguments
    (temperature, max_tokens, stop, ...) already merged with the model's defaults; ``None``
    values are absent. ``extra_body``, ``extra_headers`` and ``extra_query`` are passed through
untouched to HTTP providers (in-process models read a few sampling knobs from ``extra_body``).

    ``prompt`` is set for a legacy text completion (``completions.create``): the provider's
    ``*_text`` methods continue it as plain text; ``messages`` then holds it as one user
    message for estimates only.
    """

    model: str
    model_id: str
    messages: list[dict[str, Any]]
    params: RequestParams = field(default_factory=lambda: RequestParams())
    extra_body: dict[str, Any] | None = None
    extra_headers: dict[str, str] | None = None
    extra_query: dict[str, Any] | None = None
    prompt: str | None = None


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


def chat_chunk_answers(chunk: Any) -> bool:
    """Does this chat chunk carry part of the answer? Text, a tool call, a refusal, a
    finish_reason, or reasoning text (vLLM's ``reasoning_content``, Ollama's ``reasoning``:
    what a reasoning model streams first, for minutes maybe) do. A role-only chunk does not:
    a server that sends one and then stalls has not begun to answer. The pipeline commits a
    stream to its candidate at the first such chunk; HTTP providers bound the wait for it by
    ``first_byte``."""
    for choice in chunk.choices:
        if choice.finish_reason is not None:
            return True
        delta = choice.delta
        if delta is not None and (delta.content or delta.tool_calls or delta.function_call
                                  or getattr(delta, "refusal", None)
                                  or getattr(delta, "reasoning_content", None)
                                  or getattr(delta, "reasoning", None)):
            return True
    return False


def text_chunk_answers(chunk: Any) -> bool:
    """:func:`chat_chunk_answers` for a legacy text completion's chunk."""
    return any(c.text or c.finish_reason is not None for c in chunk.choices)


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

    def health(self, timeout: float = 1.0) -> HealthReport:
        """Probe the backend (never raises): HTTP kinds ask their server's health endpoint;
        in-process kinds report whether their models are loaded."""
        ...

    def warm(self, *args: Any, **kwargs: Any) -> None:
        """Get ready before the first request: HTTP kinds build their client (``warm()``);
        in-process kinds load a model (``warm(model, progress=...)``)."""
        ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TextProvider(Protocol):
    """What a provider adds to serve legacy text completions (``completions.create``): the
    same four calls, for a ``ChatRequest`` whose ``prompt`` is set, answering with openai's
    ``Completion``. Optional: a provider without them is skipped for text requests (the route
    says ``UnsupportedRequest``)."""

    def complete_text(self, request: ChatRequest, deadline: Deadline) -> Completion: ...

    def stream_text(self, request: ChatRequest, deadline: Deadline) -> Iterator[Completion]: ...

    async def acomplete_text(self, request: ChatRequest, deadline: Deadline) -> Completion: ...

    def astream_text(self, request: ChatRequest, deadline: Deadline
                     ) -> AsyncIterator[Completion]: ...


@dataclass(frozen=True)
class HealthReport:
    provider: str
    ok: bool
    detail: str
    latency_ms: float
    # The probe got no answer in time (rather than a wrong one, or a refused connection):
    # the provider's breaker counts it as one failure instead of opening at once.
    timed_out: bool = False
