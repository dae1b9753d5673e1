"""``router.chat.completions``: the OpenAI-shaped ``create``, sync and async.

Owns the public signature — every argument of the openai client's ``chat.completions.create``
(as of openai 3.x), typed with overloads on ``stream`` like the openai client itself (so the
three signatures per class repeat, as they do there) — and, for every entry point (this one
and the legacy ``completions.create`` in ``text``), the router-wide concurrency limit around
each request (``run_sync`` / ``run_async``) and the public error boundary (``to_openai``:
an error that leaves ``create`` is also openai's matching exception class). Checking the
arguments and building the ``RequestState`` is ``params.start``; running it is ``attempts``
and ``streams``. ``parse``, ``stream`` and the raw-response wrappers come from
``_compat.chat`` and call ``create``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, overload

from .._compat.chat import AsyncChatSurface, ChatSurface
from .._compat.errors import to_openai
from .._exceptions import Overloaded, RouteKitError
from .attempts import complete_async, complete_sync
from .options import start_with
from .params import Messages, Stop, Timeout, start
from .streams import AsyncStream, Stream

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion

    from .options import ClientOptions
    from .request import RequestState
    from .results import RoutedChatCompletion
    from .route import Route
    from .router_state import RouterState

__all__ = ["AsyncCompletions", "Completions"]

# create() hands its request parameters to ``start`` as one tuple, in ``params.PARAM_NAMES``
# order; tests/test_public_api.py checks both signatures against it.

_with_route: Callable[[ChatCompletion, Route], RoutedChatCompletion] | None = None


def wrap(completion: ChatCompletion, route: Route) -> RoutedChatCompletion:
    global _with_route
    if _with_route is None:  # results imports openai: only once a router answers
        from .results import with_route

        _with_route = with_route
    return _with_route(completion, route)


def _overloaded(req: RequestState) -> Overloaded:
    limit = req.router.limit
    assert limit is not None
    return Overloaded(
        f"router is at its limit (routing.limits: {limit.describe()}); request for "
        f"{req.requested!r} not started"
    )


def _enter_limit(req: RequestState) -> Callable[[], None] | None:
    """Take a slot of the router-wide limit (waiting up to the request's budget), or raise
    ``Overloaded``. Returns the release, or None when the router has no limit."""
    limit = req.router.limit
    if limit is None:
        return None
    if not limit.enter(max(0.0, req.remaining())):
        raise _overloaded(req)
    return limit.leave


async def _aenter_limit(req: RequestState) -> Callable[[], None] | None:
    limit = req.router.limit
    if limit is None:
        return None
    if not await limit.aenter(max(0.0, req.remaining())):
        raise _overloaded(req)
    return limit.leave


def run_sync(req: RequestState, stream: bool, wrap_result: Callable[[Any, Route], Any]) -> Any:
    """Run a started request under the router's limit: a ``Stream``, or the wrapped answer."""
    try:
        release = _enter_limit(req)
    except BaseException as exc:  # Overloaded, or interrupted while queued: still counted
        req.finish(exc)
        raise
    if stream:
        return Stream(req, release)
    try:
        result = complete_sync(req)
    except BaseException as exc:
        req.finish(exc)
        raise
    finally:
        if release is not None:
            release()
    req.finish(None, result.usage)
    return wrap_result(result, req.route())


async def run_async(req: RequestState, stream: bool,
                    wrap_result: Callable[[Any, Route], Any]) -> Any:
    try:
        release = await _aenter_limit(req)
    except BaseException as exc:  # Overloaded, or cancelled while queued: still counted
        req.finish(exc)
        raise
    if stream:
        return await AsyncStream(req, release)._prime()
    try:
        result = await complete_async(req)
    except BaseException as exc:
        req.finish(exc)
        raise
    finally:
        if release is not None:
            release()
    req.finish(None, result.usage)
    return wrap_result(result, req.route())


class Completions(ChatSurface):
    """``router.chat.completions``: ``create`` takes every argument of
    ``openai.OpenAI().chat.completions.create`` and routes it; ``parse``, ``stream``,
    ``with_raw_response`` and ``with_streaming_response`` are openai's too."""

    def __init__(self, router: RouterState, options: ClientOptions | None = None) -> None:
        self._router = router
        self._options = options

    def with_client_options(self, options: ClientOptions) -> Completions:
        """The same router's completions with a client view's defaults (``with_options``)."""
        return Completions(self._router, options)

    @overload
    def create(
        self, *, model: str, messages: Messages, stream: Literal[False] = False,
        audio: dict[str, Any] | None = None,
        frequency_penalty: float | None = None,
        function_call: Any = None,
        functions: list[dict[str, Any]] | None = None,
        logit_bias: dict[str, int] | None = None,
        logprobs: bool | None = None,
        max_completion_tokens: int | None = None,
        max_tokens: int | None = None,
        metadata: dict[str, str] | None = None,
        modalities: list[str] | None = None,
        moderation: Any = None,
        n: int | None = None,
        parallel_tool_calls: bool | None = None,
        prediction: dict[str, Any] | None = None,
        presence_penalty: float | None = None,
        prompt_cache_key: str | None = None,
        prompt_cache_options: Any = None,
        prompt_cache_retention: Any = None,
        reasoning_effort: str | None = None,
        response_format: Any = None,
        safety_identifier: str | None = None,
        seed: int | None = None,
        service_tier: str | None = None,
        stop: Stop = None,
        store: bool | None = None,
        stream_options: dict[str, Any] | None = None,
        temperature: float | None = None,
        tool_choice: Any = None,
        tools: list[dict[str, Any]] | None = None,
        top_logprobs: int | None = None,
        top_p: float | None = None,
        user: str | None = None,
        verbosity: str | None = None,
        web_search_options: dict[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout = None,
    ) -> RoutedChatCompletion: ...

    @overload
    def create(
        self, *, model: str, messages: Messages, stream: Literal[True],
        audio: dict[str, Any] | None = None,
        frequency_penalty: float | None = None,
        function_call: Any = None,
        functions: list[dict[str, Any]] | None = None,
        logit_bias: dict[str, int] | None = None,
        logprobs: bool | None = None,
        max_completion_tokens: int | None = None,
        max_tokens: int | None = None,
        metadata: dict[str, str] | None = None,
        modalities: list[str] | None = None,
        moderation: Any = None,
        n: int | None = None,
        parallel_tool_calls: bool | None = None,
        prediction: dict[str, Any] | None = None,
        presence_penalty: float | None = None,
        prompt_cache_key: str | None = None,
        prompt_cache_options: Any = None,
        prompt_cache_retention: Any = None,
        reasoning_effort: str | None = None,
        response_format: Any = None,
        safety_identifier: str | None = None,
        seed: int | None = None,
        service_tier: str | None = None,
        stop: Stop = None,
        store: bool | None = None,
        stream_options: dict[str, Any] | None = None,
        temperature: float | None = None,
        tool_choice: Any = None,
        tools: list[dict[str, Any]] | None = None,
        top_logprobs: int | None = None,
        top_p: float | None = None,
        user: str | None = None,
        verbosity: str | None = None,
        web_search_options: dict[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout = None,
    ) -> Stream: ...

    def create(
        self, *, model: str, messages: Messages, stream: bool = False,
        audio: dict[str, Any] | None = None,
        frequency_penalty: float | None = None,
        function_call: Any = None,
        functions: list[dict[str, Any]] | None = None,
        logit_bias: dict[str, int] | None = None,
        logprobs: bool | None = None,
        max_completion_tokens: int | None = None,
        max_tokens: int | None = None,
        metadata: dict[str, str] | None = None,
        modalities: list[str] | None = None,
        moderation: Any = None,
        n: int | None = None,
        parallel_tool_calls: bool | None = None,
        prediction: dict[str, Any] | None = None,
        presence_penalty: float | None = None,
        prompt_cache_key: str | None = None,
        prompt_cache_options: Any = None,
        prompt_cache_retention: Any = None,
        reasoning_effort: str | None = None,
        response_format: Any = None,
        safety_identifier: str | None = None,
        seed: int | None = None,
        service_tier: str | None = None,
        stop: Stop = None,
        store: bool | None = None,
        stream_options: dict[str, Any] | None = None,
        temperature: float | None = None,
        tool_choice: Any = None,
        tools: list[dict[str, Any]] | None = None,
        top_logprobs: int | None = None,
        top_p: float | None = None,
        user: str | None = None,
        verbosity: str | None = None,
        web_search_options: dict[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout = None,
    ) -> RoutedChatCompletion | Stream:
        try:
            req = start_with(self._options, start, self._router, model, messages, timeout,
                             extra_body, extra_headers, extra_query, (
                audio, frequency_penalty, function_call, functions, logit_bias, logprobs,
                max_completion_tokens, max_tokens, metadata, modalities, moderation, n,
                parallel_tool_calls, prediction, presence_penalty, prompt_cache_key,
                prompt_cache_options, prompt_cache_retention, reasoning_effort, response_format,
                safety_identifier, seed, service_tier, stop, store, stream_options, temperature,
                tool_choice, tools, top_logprobs, top_p, user, verbosity, web_search_options,
            ))
            result: RoutedChatCompletion | Stream = run_sync(req, stream is True, wrap)
            return result
        except RouteKitError as exc:
            to_openai(exc)
            raise


class AsyncCompletions(AsyncChatSurface):
    """``router.chat.completions``: ``create`` takes every argument of
    ``openai.AsyncOpenAI().chat.completions.create`` and routes it; ``parse``, ``stream``,
    ``with_raw_response`` and ``with_streaming_response`` are openai's too."""

    def __init__(self, router: RouterState, *,
                 on_request: Callable[[], None] | None = None,
                 options: ClientOptions | None = None) -> None:
        self._router = router
        self._options = options
        # Called at each request (starts the health-probe task on the running loop, once
        # per loop: a cheap check after that).
        self.on_request = on_request

    def with_client_options(self, options: ClientOptions) -> AsyncCompletions:
        return AsyncCompletions(self._router, on_request=self.on_request, options=options)

    @overload
    async def create(
        self, *, model: str, messages: Messages, stream: Literal[False] = False,
        audio: dict[str, Any] | None = None,
        frequency_penalty: float | None = None,
        function_call: Any = None,
        functions: list[dict[str, Any]] | None = None,
        logit_bias: dict[str, int] | None = None,
        logprobs: bool | None = None,
        max_completion_tokens: int | None = None,
        max_tokens: int | None = None,
        metadata: dict[str, str] | None = None,
        modalities: list[str] | None = None,
        moderation: Any = None,
        n: int | None = None,
        parallel_tool_calls: bool | None = None,
        prediction: dict[str, Any] | None = None,
        presence_penalty: float | None = None,
        prompt_cache_key: str | None = None,
        prompt_cache_options: Any = None,
        prompt_cache_retention: Any = None,
        reasoning_effort: str | None = None,
        response_format: Any = None,
        safety_identifier: str | None = None,
        seed: int | None = None,
        service_tier: str | None = None,
        stop: Stop = None,
        store: bool | None = None,
        stream_options: dict[str, Any] | None = None,
        temperature: float | None = None,
        tool_choice: Any = None,
        tools: list[dict[str, Any]] | None = None,
        top_logprobs: int | None = None,
        top_p: float | None = None,
        user: str | None = None,
        verbosity: str | None = None,
        web_search_options: dict[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout = None,
    ) -> RoutedChatCompletion: ...

    @overload
    async def create(
        self, *, model: str, messages: Messages, stream: Literal[True],
        audio: dict[str, Any] | None = None,
        frequency_penalty: float | None = None,
        function_call: Any = None,
        functions: list[dict[str, Any]] | None = None,
        logit_bias: dict[str, int] | None = None,
        logprobs: bool | None = None,
        max_completion_tokens: int | None = None,
        max_tokens: int | None = None,
        metadata: dict[str, str] | None = None,
        modalities: list[str] | None = None,
        moderation: Any = None,
        n: int | None = None,
        parallel_tool_calls: bool | None = None,
        prediction: dict[str, Any] | None = None,
        presence_penalty: float | None = None,
        prompt_cache_key: str | None = None,
        prompt_cache_options: Any = None,
        prompt_cache_retention: Any = None,
        reasoning_effort: str | None = None,
        response_format: Any = None,
        safety_identifier: str | None = None,
        seed: int | None = None,
        service_tier: str | None = None,
        stop: Stop = None,
        store: bool | None = None,
        stream_options: dict[str, Any] | None = None,
        temperature: float | None = None,
        tool_choice: Any = None,
        tools: list[dict[str, Any]] | None = None,
        top_logprobs: int | None = None,
        top_p: float | None = None,
        user: str | None = None,
        verbosity: str | None = None,
        web_search_options: dict[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout = None,
    ) -> AsyncStream: ...

    async def create(
        self, *, model: str, messages: Messages, stream: bool = False,
        audio: dict[str, Any] | None = None,
        frequency_penalty: float | None = None,
        function_call: Any = None,
        functions: list[dict[str, Any]] | None = None,
        logit_bias: dict[str, int] | None = None,
        logprobs: bool | None = None,
        max_completion_tokens: int | None = None,
        max_tokens: int | None = None,
        metadata: dict[str, str] | None = None,
        modalities: list[str] | None = None,
        moderation: Any = None,
        n: int | None = None,
        parallel_tool_calls: bool | None = None,
        prediction: dict[str, Any] | None = None,
        presence_penalty: float | None = None,
        prompt_cache_key: str | None = None,
        prompt_cache_options: Any = None,
        prompt_cache_retention: Any = None,
        reasoning_effort: str | None = None,
        response_format: Any = None,
        safety_identifier: str | None = None,
        seed: int | None = None,
        service_tier: str | None = None,
        stop: Stop = None,
        store: bool | None = None,
        stream_options: dict[str, Any] | None = None,
        temperature: float | None = None,
        tool_choice: Any = None,
        tools: list[dict[str, Any]] | None = None,
        top_logprobs: int | None = None,
        top_p: float | None = None,
        user: str | None = None,
        verbosity: str | None = None,
        web_search_options: dict[str, Any] | None = None,
        extra_headers: Mapping[str, str] | None = None,
        extra_query: Mapping[str, Any] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        timeout: Timeout = None,
    ) -> RoutedChatCompletion | AsyncStream:
        try:
            req = start_with(self._options, start, self._router, model, messages, timeout,
                             extra_body, extra_headers, extra_query, (
                audio, frequency_penalty, function_call, functions, logit_bias, logprobs,
                max_completion_tokens, max_tokens, metadata, modalities, moderation, n,
                parallel_tool_calls, prediction, presence_penalty, prompt_cache_key,
                prompt_cache_options, prompt_cache_retention, reasoning_effort, response_format,
                safety_identifier, seed, service_tier, stop, store, stream_options, temperature,
                tool_choice, tools, top_logprobs, top_p, user, verbosity, web_search_options,
            ))
            if self.on_request is not None:
                self.on_request()  # the probe task runs on this loop (started once per loop)
            result: RoutedChatCompletion | AsyncStream = await run_async(req, stream is True,
                                                                         wrap)
            return result
        except RouteKitError as exc:
            to_openai(exc)
            raise
