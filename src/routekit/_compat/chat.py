"""The rest of openai's ``chat.completions`` resource, on top of a router's ``create``.

Owns the mixins ``ChatSurface`` / ``AsyncChatSurface`` that ``_pipeline.completions`` puts
under ``Completions`` / ``AsyncCompletions``: ``parse`` (a pydantic ``response_format``,
strict tools), ``stream`` (the helper that yields events), ``with_raw_response`` and
``with_streaming_response``. Each calls ``self.create`` — the one routed entry point — so
fallback, breakers, deadlines and routes apply to all of them. Their keyword arguments are
``create``'s (forwarded unchanged; ``create`` checks them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .parsing import AsyncChatStreamManager, ChatStreamManager, parse_request, parse_result
from .raw import AsyncRawSurface, RawSurface

if TYPE_CHECKING:
    from openai.types.chat import ParsedChatCompletion

__all__ = ["AsyncChatSurface", "ChatSurface"]

_PATH = "/chat/completions"


def _no_stream(kwargs: dict[str, Any], method: str) -> None:
    stream = kwargs.pop("stream", None)
    if stream is True:
        from .._exceptions import BadRequest

        raise BadRequest(f"{method}() does not stream; use chat.completions.stream() for "
                         "streamed structured output", status_code=400)


def _request(kwargs: dict[str, Any], response_format: Any, tools: Any, method: str | None
             ) -> tuple[Any, Any]:
    """The checked ``response_format`` and ``tools``; what is wrong is raised as create()
    raises it (openai's class too)."""
    from .._exceptions import RouteKitError
    from .errors import to_openai

    try:
        if method is not None:
            _no_stream(kwargs, method)
        return parse_request(response_format, tools)
    except RouteKitError as exc:
        to_openai(exc)
        raise


class ChatSurface(RawSurface):
    """``parse``, ``stream``, ``with_raw_response``, ``with_streaming_response``."""

    create: Any  # the routed create() of the class this is mixed into
    raw_path = _PATH

    def parse(self, *, response_format: Any = None, tools: Any = None,
              **kwargs: Any) -> ParsedChatCompletion[Any]:
        """``create`` with a pydantic model (or dataclass) as ``response_format``; the answer
        is openai's ``ParsedChatCompletion`` (``choices[0].message.parsed``), with ``.route``."""
        fmt, checked = _request(kwargs, response_format, tools, "parse")
        completion = self.create(response_format=fmt, tools=checked, **kwargs)
        return parse_result(completion, response_format, tools)  # type: ignore[no-any-return]

    def stream(self, *, response_format: Any = None, tools: Any = None,
               **kwargs: Any) -> ChatStreamManager:
        """openai's streaming helper: ``with router.chat.completions.stream(...) as s:``
        yields events; ``s.get_final_completion()`` is the parsed answer with ``.route``."""
        kwargs.pop("stream", None)
        fmt, checked = _request(kwargs, response_format, tools, None)
        return ChatStreamManager(
            lambda: self.create(stream=True, response_format=fmt, tools=checked, **kwargs),
            response_format, tools)


class AsyncChatSurface(AsyncRawSurface):
    """Async twin of ``ChatSurface`` (``parse`` is awaited; ``stream`` is ``async with``)."""

    create: Any
    raw_path = _PATH

    async def parse(self, *, response_format: Any = None, tools: Any = None,
                    **kwargs: Any) -> ParsedChatCompletion[Any]:
        fmt, checked = _request(kwargs, response_format, tools, "parse")
        completion = await self.create(response_format=fmt, tools=checked, **kwargs)
        return parse_result(completion, response_format, tools)  # type: ignore[no-any-return]

    def stream(self, *, response_format: Any = None, tools: Any = None,
               **kwargs: Any) -> AsyncChatStreamManager:
        kwargs.pop("stream", None)
        fmt, checked = _request(kwargs, response_format, tools, None)

        async def open_stream() -> Any:
            return await self.create(stream=True, response_format=fmt, tools=checked,
                                     **kwargs)

        return AsyncChatStreamManager(open_stream, response_format, tools)
