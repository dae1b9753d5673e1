"""The keyword arguments of one openai client call, from a ``ChatRequest``.

Owns which request parameters go to ``chat.completions.create`` / ``completions.create`` as
keyword arguments (those the installed openai's signature accepts, computed once) and which
travel in ``extra_body`` (server-specific knobs: ``top_k``, ``repeat_penalty``...), the
``stream`` / ``stream_options`` rules, and the arguments routekit itself sets and a request
may not override. Must not import openai at module import time.
"""

from __future__ import annotations

from typing import Any

from .._base import ChatRequest, RequestParams

__all__ = ["call_kwargs"]

# Arguments routekit itself sets on every create() call; a request's params may not override them.
_RESERVED = frozenset(
    {"model", "messages", "stream", "timeout", "extra_body", "extra_headers", "extra_query"}
)

_create_args: frozenset[str] | None = None
_text_create_args: frozenset[str] | None = None
_text_chat_only: frozenset[str] = frozenset()  # set with _text_create_args


def _known_create_args() -> frozenset[str]:
    """Keyword arguments the installed ``chat.completions.create`` accepts (computed once)."""
    global _create_args
    if _create_args is None:
        import inspect

        from openai.resources.chat.completions import Completions

        params = inspect.signature(Completions.create).parameters
        _create_args = frozenset(params) - _RESERVED - {"self"}
    return _create_args


def _known_text_create_args() -> frozenset[str]:
    """Keyword arguments the installed ``completions.create`` accepts (computed once)."""
    global _text_create_args, _text_chat_only
    if _text_create_args is None:
        import inspect

        from openai.resources.completions import Completions

        params = inspect.signature(Completions.create).parameters
        known = frozenset(params) - _RESERVED - {"self", "prompt"}
        # Chat's parameters, as this openai has them and as routekit's own surface does (an
        # older openai's signature lacks reasoning_effort, say), less the text endpoint's.
        _text_chat_only = (_known_create_args() | frozenset(RequestParams.__annotations__)) - known
        _text_create_args = known
    return _text_create_args


def call_kwargs(request: ChatRequest, timeout: Any, *, stream: bool,
                include_usage: bool = False, cap_as_max_tokens: bool = False) -> dict[str, Any]:
    """The keyword arguments of one ``create`` call for ``request`` (chat, or legacy text when
    its ``prompt`` is set).

    ``max_completion_tokens`` and ``max_tokens`` are one cap under two names. It is sent as
    ``max_tokens`` where ``cap_as_max_tokens`` (local servers: Ollama's OpenAI layer and
    llama_cpp.server read only that name, and left an answer uncapped) and on the legacy
    text endpoint, which has no other. Chat-only parameters a model's ``defaults`` put in a
    text completion (``reasoning_effort``, ``response_format``...) are left out: that
    endpoint has no such parameter (vLLM ignores it, OpenAI answers 400)."""
    kw: dict[str, Any] = {"model": request.model_id, "timeout": timeout}
    params: dict[str, Any] = request.params  # type: ignore[assignment]
    chat_only: frozenset[str] = frozenset()
    if request.prompt is None:
        known = _create_args if _create_args is not None else _known_create_args()
        kw["messages"] = request.messages
    else:
        known = _known_text_create_args()
        kw["prompt"] = request.prompt
        chat_only = _text_chat_only
        cap_as_max_tokens = True
    cap = params.get("max_completion_tokens")
    if cap_as_max_tokens and cap is not None:
        params = {k: v for k, v in params.items() if k != "max_completion_tokens"}
        if params.get("max_tokens") is None:
            params["max_tokens"] = cap
    extra: dict[str, Any] | None = None
    for name, value in params.items():
        if value is None or name in _RESERVED or name in chat_only:
            continue
        if name in known:
            kw[name] = value
        else:
            # Server-specific sampling knobs (top_k, repeat_penalty, ...) travel in the body.
            if extra is None:
                extra = {}
            extra[name] = value
    if request.extra_body:
        extra = {**extra, **request.extra_body} if extra else dict(request.extra_body)
    if extra:
        kw["extra_body"] = extra
    if request.extra_headers:
        kw["extra_headers"] = request.extra_headers
    if request.extra_query:
        kw["extra_query"] = request.extra_query
    if stream:
        # stream_options only when the caller asked: include_usage adds a last chunk with
        # choices == [], which code written against the openai client does not expect.
        kw["stream"] = True
        if include_usage:
            kw["stream_options"] = {"include_usage": True}
    else:
        # Shared defaults may carry it; OpenAI rejects it (400) on non-stream requests.
        kw.pop("stream_options", None)
    return kw
