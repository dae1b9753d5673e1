"""``router.chat.completions``: the OpenAI-shaped ``create``, sync and async.

Owns only the public signature: every argument of the openai client's
``chat.completions.create`` (as of openai 3.x), typed with overloads on ``stream`` like the
openai client itself (so the three signatures per class repeat, as they do there). Turning
the arguments into candidates is ``RouterCore.candidates``; running them is ``_attempt`` and
``_streaming``.
"""

from __future__ import annotations

import inspect
from itertools import compress, repeat
from operator import is_not, itemgetter
from typing import TYPE_CHECKING, Any, Callable, Literal, overload

from .attempts import complete_async, complete_sync
from .streams import AsyncStream, Stream

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion

    from .results import RoutedChatCompletion
    from .route import Route
    from .router import Messages, RouterCore, Stop

__all__ = ["AsyncCompletions", "Completions"]

# create() arguments that are not request parameters for the provider.
_NOT_PARAMS = frozenset({"self", "model", "messages", "stream", "extra_headers", "extra_query",
                         "extra_body", "timeout"})
_PARAM_NAMES: tuple[str, ...] = ()  # filled below, from the signature


def _given(args: dict[str, Any]) -> dict[str, Any]:
    """The request parameters the caller set (not None). Runs on every request over ~35
    mostly-None arguments: the scan is done by C iterators (operator.is_not), which halves
    what a dict comprehension costs here."""
    values = _param_getter(args)
    return {name: args[name] for name in compress(_PARAM_NAMES, map(is_not, values,
                                                                     repeat(None)))}


_with_route: Callable[[ChatCompletion, Route], RoutedChatCompletion] | None = None


def wrap(completion: ChatCompletion, route: Route) -> RoutedChatCompletion:
    global _with_route
    if _with_route is None:  # _results imports openai: only once a router answers
        from .results import with_route

        _with_route = with_route
    return _with_route(completion, route)


class Completions:
    """``router.chat.completions``: ``create`` takes every argument of
    ``openai.OpenAI().chat.completions.create`` and routes it."""

    def __init__(self, core: RouterCore) -> None:
        self._core = core

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
        response_format: dict[str, Any] | None = None,
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
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = None,
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
        response_format: dict[str, Any] | None = None,
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
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = None,
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
        response_format: dict[str, Any] | None = None,
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
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> RoutedChatCompletion | Stream:
        params = _given(locals())
        core = self._core
        cands = core.candidates(model, messages, params, extra_body=extra_body,
                                extra_headers=extra_headers, extra_query=extra_query)
        if stream:
            return Stream(core.config, model, cands, core.deadline(timeout))
        return complete_sync(core.config, model, cands, core.deadline(timeout), wrap)


class AsyncCompletions:
    """``router.chat.completions``: ``create`` takes every argument of
    ``openai.AsyncOpenAI().chat.completions.create`` and routes it."""

    def __init__(self, core: RouterCore) -> None:
        self._core = core

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
        response_format: dict[str, Any] | None = None,
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
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = None,
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
        response_format: dict[str, Any] | None = None,
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
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = None,
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
        response_format: dict[str, Any] | None = None,
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
        extra_headers: dict[str, str] | None = None,
        extra_query: dict[str, Any] | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> RoutedChatCompletion | AsyncStream:
        params = _given(locals())
        core = self._core
        cands = core.candidates(model, messages, params, extra_body=extra_body,
                                extra_headers=extra_headers, extra_query=extra_query)
        if stream:
            stream_ = AsyncStream(core.config, model, cands, core.deadline(timeout))
            return await stream_._prime()
        return await complete_async(core.config, model, cands, core.deadline(timeout), wrap)


_PARAM_NAMES = tuple(
    name for name in inspect.signature(Completions.create).parameters if name not in _NOT_PARAMS
)
_param_getter = itemgetter(*_PARAM_NAMES)
