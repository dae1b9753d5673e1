"""``router.completions``: the legacy text-completion ``create``, routed like chat.

Owns the public signature — every argument of the openai client's ``completions.create``,
typed with overloads on ``stream`` — for one prompt per request. A text completion stays a
text completion on every candidate: HTTP providers call their server's ``/v1/completions``
(Ollama, vLLM and llama.cpp server have it), in-process models continue the prompt with
llama-cpp-python's ``create_completion`` (no chat template: what the built-in base model does
best), and a provider without text completions is recorded as ``UnsupportedRequest`` while
the plan moves on. The route says ``endpoint="completions"``. Answers are openai
``Completion`` objects with ``.route``; streams are ``Stream`` / ``AsyncStream`` of
``Completion`` chunks.

Checking and starting is ``params.start_text``; the limit, drivers and error boundary are
``completions.run_sync`` / ``run_async`` and ``to_openai``, shared with chat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Union, overload

from .._compat.errors import to_openai
from .._compat.raw import AsyncRawSurface, RawSurface
from .._exceptions import RouteKitError
from .completions import run_async, run_sync
from .options import start_with
from .params import Stop, Timeout, start_text

if TYPE_CHECKING:
    from openai.types import Completion

    from .options import ClientOptions
    from .route import Route
    from .router_state import RouterState
    from .streams import AsyncStream, Stream

__all__ = ["AsyncTextCompletions", "TextCompletions"]

Prompt = Union[str, "list[str]"]
_PATH = "/completions"
_routed: Callable[[Any, Route], Any] | None = None


def _wrap(completion: Completion, route: Route) -> Completion:
    global _routed
    if _routed is None:  # results imports openai: only once a router answers
        from .results import routed

        _routed = routed
    out: Completion = _routed(completion, route)
    return out


class TextCompletions(RawSurface):
    """``router.completions``: ``create`` takes every argument of
    ``openai.OpenAI().completions.create`` and routes it."""

    raw_path = _PATH

    def __init__(self, router: RouterState, options: ClientOptions | None = None) -> None:
        self._router = router
        self._options = options

    def with_client_options(self, options: ClientOptions) -> TextCompletions:
        return TextCompletions(self._router, options)

    @overload
    def create(
        self, *, model: str, prompt: Prompt, stream: Literal[False] = False,
        best_of: int | None = None, echo: bool | None = None,
        frequency_penalty: float | None = None, logit_bias: dict[str, int] | None = None,
        logprobs: int | None = None, max_tokens: int | None = None, n: int | None = None,
        presence_penalty: float | None = None, seed: int | None = None, stop: Stop = None,
        stream_options: dict[str, Any] | None = None, suffix: str | None = None,
        temperature: float | None = None, top_p: float | None = None, user: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None, timeout: Timeout = None,
    ) -> Completion: ...

    @overload
    def create(
        self, *, model: str, prompt: Prompt, stream: Literal[True],
        best_of: int | None = None, echo: bool | None = None,
        frequency_penalty: float | None = None, logit_bias: dict[str, int] | None = None,
        logprobs: int | None = None, max_tokens: int | None = None, n: int | None = None,
        presence_penalty: float | None = None, seed: int | None = None, stop: Stop = None,
        stream_options: dict[str, Any] | None = None, suffix: str | None = None,
        temperature: float | None = None, top_p: float | None = None, user: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None, timeout: Timeout = None,
    ) -> Stream: ...

    def create(
        self, *, model: str, prompt: Prompt, stream: bool = False,
        best_of: int | None = None, echo: bool | None = None,
        frequency_penalty: float | None = None, logit_bias: dict[str, int] | None = None,
        logprobs: int | None = None, max_tokens: int | None = None, n: int | None = None,
        presence_penalty: float | None = None, seed: int | None = None, stop: Stop = None,
        stream_options: dict[str, Any] | None = None, suffix: str | None = None,
        temperature: float | None = None, top_p: float | None = None, user: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None, timeout: Timeout = None,
    ) -> Completion | Stream:
        try:
            req = start_with(self._options, start_text, self._router, model, prompt, timeout,
                             extra_body, extra_headers, extra_query, (
                best_of, echo, frequency_penalty, logit_bias, logprobs, max_tokens, n,
                presence_penalty, seed, stop, stream_options, suffix, temperature, top_p, user,
            ))
            result: Completion | Stream = run_sync(req, stream is True, _wrap)
            return result
        except RouteKitError as exc:
            to_openai(exc, path=_PATH)
            raise


class AsyncTextCompletions(AsyncRawSurface):
    """``router.completions``: ``create`` takes every argument of
    ``openai.AsyncOpenAI().completions.create`` and routes it."""

    raw_path = _PATH

    def __init__(self, router: RouterState, options: ClientOptions | None = None, *,
                 on_request: Callable[[], None] | None = None) -> None:
        self._router = router
        self._options = options
        # As AsyncCompletions.on_request: starts the health-probe task on the running loop.
        self.on_request = on_request

    def with_client_options(self, options: ClientOptions) -> AsyncTextCompletions:
        return AsyncTextCompletions(self._router, options, on_request=self.on_request)

    @overload
    async def create(
        self, *, model: str, prompt: Prompt, stream: Literal[False] = False,
        best_of: int | None = None, echo: bool | None = None,
        frequency_penalty: float | None = None, logit_bias: dict[str, int] | None = None,
        logprobs: int | None = None, max_tokens: int | None = None, n: int | None = None,
        presence_penalty: float | None = None, seed: int | None = None, stop: Stop = None,
        stream_options: dict[str, Any] | None = None, suffix: str | None = None,
        temperature: float | None = None, top_p: float | None = None, user: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None, timeout: Timeout = None,
    ) -> Completion: ...

    @overload
    async def create(
        self, *, model: str, prompt: Prompt, stream: Literal[True],
        best_of: int | None = None, echo: bool | None = None,
        frequency_penalty: float | None = None, logit_bias: dict[str, int] | None = None,
        logprobs: int | None = None, max_tokens: int | None = None, n: int | None = None,
        presence_penalty: float | None = None, seed: int | None = None, stop: Stop = None,
        stream_options: dict[str, Any] | None = None, suffix: str | None = None,
        temperature: float | None = None, top_p: float | None = None, user: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None, timeout: Timeout = None,
    ) -> AsyncStream: ...

    async def create(
        self, *, model: str, prompt: Prompt, stream: bool = False,
        best_of: int | None = None, echo: bool | None = None,
        frequency_penalty: float | None = None, logit_bias: dict[str, int] | None = None,
        logprobs: int | None = None, max_tokens: int | None = None, n: int | None = None,
        presence_penalty: float | None = None, seed: int | None = None, stop: Stop = None,
        stream_options: dict[str, Any] | None = None, suffix: str | None = None,
        temperature: float | None = None, top_p: float | None = None, user: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None, timeout: Timeout = None,
    ) -> Completion | AsyncStream:
        try:
            req = start_with(self._options, start_text, self._router, model, prompt, timeout,
                             extra_body, extra_headers, extra_query, (
                best_of, echo, frequency_penalty, logit_bias, logprobs, max_tokens, n,
                presence_penalty, seed, stop, stream_options, suffix, temperature, top_p, user,
            ))
            if self.on_request is not None:
                self.on_request()  # the probe task runs on this loop (started once per loop)
            result: Completion | AsyncStream = await run_async(req, stream is True, _wrap)
            return result
        except RouteKitError as exc:
            to_openai(exc, path=_PATH)
            raise
