"""Structured output: ``chat.completions.parse`` and the ``chat.completions.stream`` helper.

Owns the two openai helpers, rebuilt on routekit's ``create`` so fallback, breakers and
deadlines apply: a pydantic ``response_format`` becomes openai's strict JSON-schema
``response_format``, the request is routed like any other, and the answer is parsed back with
openai's own parsing (``openai.lib._parsing``: ``message.parsed``, ``parsed_arguments`` of
strict tools), so results are openai's ``ParsedChatCompletion`` types exactly as the openai
client returns them, plus ``.route``. The stream helper yields openai's stream events
(``content.delta``, ``content.done``, ``tool_calls.function.arguments.delta``, ``chunk``...)
from openai's ``ChatCompletionStreamState``, and ``get_final_completion()`` the parsed answer
with its route.

openai's helpers are private modules of the openai package, present with the same names and
arguments from openai 1.40 (which introduced them) to 3.x; ``tests/test_compat_surface.py``
runs on both ends of that range. Imports openai only when called.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

__all__ = ["AsyncChatStream", "AsyncChatStreamManager", "ChatStream", "ChatStreamManager",
           "parse_request", "parse_result"]


def _parsing() -> ModuleType:
    from openai.lib._parsing import _completions

    return _completions


def _not_given() -> Any:
    import openai

    return openai.NOT_GIVEN


def _given(value: Any) -> Any:
    """``value``, or openai's NOT_GIVEN for None/omit (openai's helpers test ``is_given``)."""
    from .._pipeline.params import is_omitted

    return _not_given() if is_omitted(value) else value


def parse_request(response_format: Any, tools: Any) -> tuple[Any, Any]:
    """(the ``response_format`` to send, the checked ``tools``) as openai's ``parse`` does:
    a pydantic model becomes a strict JSON schema; tools must be strict function tools."""
    p = _parsing()
    response_format = _given(response_format)
    tools = _given(tools)
    p.validate_input_tools(tools)
    return p.type_to_response_format_param(response_format), tools


def parse_result(completion: Any, response_format: Any, tools: Any) -> Any:
    """``completion`` (routed) parsed as openai's ``parse`` would, with its route."""
    from .._pipeline.results import routed

    parsed = _parsing().parse_chat_completion(
        response_format=_given(response_format), input_tools=_given(tools),
        chat_completion=completion)
    return routed(parsed, completion.route)


def _state(response_format: Any, tools: Any) -> Any:
    from openai.lib.streaming.chat._completions import ChatCompletionStreamState

    return ChatCompletionStreamState(input_tools=_given(tools),
                                     response_format=_given(response_format))


class _StreamViews:
    """What ``ChatStream`` and ``AsyncChatStream`` show alike: the routed stream under them
    and openai's accumulating state."""

    def __init__(self, raw: Any, response_format: Any, tools: Any) -> None:
        self._raw = raw
        self._state = _state(response_format, tools)

    @property
    def response(self) -> Any:
        return self._raw.response

    @property
    def route(self) -> Any:
        return self._raw.route

    @property
    def current_completion_snapshot(self) -> Any:
        return self._state.current_completion_snapshot


class ChatStream(_StreamViews):
    """Events of one routed stream (openai's ``ChatCompletionStream`` shape). Iterate it
    inside the manager's ``with`` block."""

    def __init__(self, raw: Any, response_format: Any, tools: Any) -> None:
        super().__init__(raw, response_format, tools)
        self._events = self._run()

    def _run(self) -> Iterator[Any]:
        for chunk in self._raw:
            yield from self._state.handle_chunk(chunk)

    def __iter__(self) -> Iterator[Any]:
        return self._events

    def __next__(self) -> Any:
        return next(self._events)

    def until_done(self) -> ChatStream:
        for _ in self._events:
            pass
        return self

    def get_final_completion(self) -> Any:
        """The whole answer, parsed (``ParsedChatCompletion``), with ``.route``."""
        from .._pipeline.results import routed

        self.until_done()
        return routed(self._state.get_final_completion(), self._raw.route)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> ChatStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ChatStreamManager:
    """What ``chat.completions.stream(...)`` returns: the request starts at ``with``."""

    def __init__(self, open_stream: Callable[[], Any], response_format: Any, tools: Any
                 ) -> None:
        self._open = open_stream
        self._format = response_format
        self._tools = tools
        self._stream: ChatStream | None = None

    def __enter__(self) -> ChatStream:
        self._stream = ChatStream(self._open(), self._format, self._tools)
        return self._stream

    def __exit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            self._stream.close()


class AsyncChatStream(_StreamViews):
    """Async twin of ``ChatStream``."""

    def __init__(self, raw: Any, response_format: Any, tools: Any) -> None:
        super().__init__(raw, response_format, tools)
        self._events = self._run()

    async def _run(self) -> AsyncIterator[Any]:
        async for chunk in self._raw:
            for event in self._state.handle_chunk(chunk):
                yield event

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events

    async def __anext__(self) -> Any:
        return await self._events.__anext__()

    async def until_done(self) -> AsyncChatStream:
        async for _ in self._events:
            pass
        return self

    async def get_final_completion(self) -> Any:
        from .._pipeline.results import routed

        await self.until_done()
        return routed(self._state.get_final_completion(), self._raw.route)

    async def close(self) -> None:
        await self._raw.close()

    async def __aenter__(self) -> AsyncChatStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class AsyncChatStreamManager:
    def __init__(self, open_stream: Callable[[], Awaitable[Any]], response_format: Any,
                 tools: Any) -> None:
        self._open = open_stream
        self._format = response_format
        self._tools = tools
        self._stream: AsyncChatStream | None = None

    async def __aenter__(self) -> AsyncChatStream:
        self._stream = AsyncChatStream(await self._open(), self._format, self._tools)
        return self._stream

    async def __aexit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            await self._stream.close()
