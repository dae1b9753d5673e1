"""Translation of HTTP-client errors (``openai`` / ``httpx`` or ``httpx2``) into routekit's error tree.

This module owns one boundary: an exception raised by the ``openai`` client (or the
``httpx`` / ``httpx2`` transport under it) becomes exactly one ``ProviderError`` subclass, with a
message that has passed through ``_route.redact`` and never contains request headers or
keys. Callers always ``raise translate(exc, ...) from exc`` so the original stays on
``__cause__`` for debugging.

It must not import ``openai`` at module import time (``import routekit`` stays fast): the
error classes are looked up from ``sys.modules``, which holds them whenever an openai
error can exist at all. It makes no retry or routing decision; the classes it picks carry
those policies (see ``_exceptions.py``).
"""

from __future__ import annotations

import email.utils
import errno
import math
import sys
import time
from typing import Any, Mapping

from ..._exceptions import (
    AuthenticationFailed,
    BadRequest,
    ConnectionFailed,
    ContextLengthExceeded,
    ModelNotFound,
    ProviderError,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    ServerError,
    StatusError,
)
from ..._secrets import redact
from .transport import loaded_http_libs

__all__ = ["is_context_length_message", "parse_retry_after", "redact_body", "translate"]

# Phrases servers use when a prompt does not fit the context window:
#   llama_cpp.server (0.3.x): 400 {"error": {"message": "This model's maximum context length is
#     512 tokens. However, you requested 1218 tokens ...", "code": "context_length_exceeded"}}
#   OpenAI: code "context_length_exceeded"; vLLM: "This model's maximum context length is ...";
#   llama.cpp's C++ server: type "exceed_context_size_error", "exceeds the available context size".
#   Text Generation Inference: 422 "Input validation error: `inputs` tokens + `max_new_tokens`
#     must be <= 4096. Given: ...".
_CONTEXT_PHRASES = (
    "`inputs` tokens + `max_new_tokens`",
    "context length",
    "context_length",
    "maximum context",
    "context window",
    "context size",
    "exceed_context_size",
    "too many tokens",
    "prompt is too long",
)
_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})

# An error message is for humans; a server's whole HTML error page is not.
_MAX_DETAIL = 400


def translate(exc: BaseException, *, provider: str | None, model: str | None) -> ProviderError:
    """Return the routekit error for ``exc``. The caller raises it ``from exc``."""
    if isinstance(exc, ProviderError):
        return exc

    _scrub(exc)
    openai = sys.modules.get("openai")
    if openai is not None:
        if isinstance(exc, openai.APIStatusError):
            return _from_status(
                exc.status_code,
                body=exc.body,
                headers=exc.response.headers,
                provider=provider,
                model=model,
            )
        # APITimeoutError subclasses APIConnectionError: test it first.
        if isinstance(exc, openai.APITimeoutError):
            return RequestTimeout(
                _timeout_message(exc, provider), provider=provider, model=model
            )
        if isinstance(exc, openai.APIConnectionError):
            return _connection_failed(exc, provider=provider, model=model)
        if isinstance(exc, openai.APIError):
            # An error event inside a stream, or a response the client could not parse.
            detail = _body_message(exc.body) or exc.message
            error = ProviderError(
                redact(f"{_who(provider)} returned an error: {_clip(detail)}"),
                provider=provider,
                model=model,
            )
            # Its body (code, type), redacted, as a status error keeps its own.
            error.body = redact_body(exc.body)  # type: ignore[attr-defined]
            return error

    for lib in loaded_http_libs():
        if isinstance(exc, lib.TimeoutException):
            return RequestTimeout(_timeout_message(exc, provider), provider=provider, model=model)
        if isinstance(exc, lib.HTTPStatusError):
            return _from_status(
                exc.response.status_code,
                body=_response_body(exc.response),
                headers=exc.response.headers,
                provider=provider,
                model=model,
            )
        if isinstance(exc, lib.TransportError):
            return _connection_failed(exc, provider=provider, model=model)

    if isinstance(exc, TimeoutError):
        # anyio.fail_after / asyncio timeouts around a whole request (the total deadline).
        return RequestTimeout(
            f"{_who(provider)}: total deadline passed", provider=provider, model=model
        )
    if isinstance(exc, OSError):
        return _connection_failed(exc, provider=provider, model=model)
    return ProviderError(
        redact(f"{_who(provider)}: {type(exc).__name__}: {_clip(str(exc))}"),
        provider=provider,
        model=model,
    )


# --- status codes -------------------------------------------------------------------------


def _from_status(
    status: int,
    *,
    body: object,
    headers: Mapping[str, str] | None,
    provider: str | None,
    model: str | None,
) -> StatusError:
    detail = _body_message(body)
    message = redact(f"{_who(provider)} answered HTTP {status}" + (f": {_clip(detail)}" if detail else ""))
    clean_body = redact_body(body)
    kw: dict[str, Any] = {
        "status_code": status,
        "provider": provider,
        "model": model,
        "body": clean_body,
    }
    if status in (400, 413, 422) and _is_context_error(body, detail):
        return ContextLengthExceeded(message, **kw)
    if status == 400:
        return BadRequest(message, **kw)
    if status in (413, 414, 422, 431):
        return RequestRejected(message, **kw)
    if status in (401, 403):
        return AuthenticationFailed(message, **kw)
    if status == 404:
        return ModelNotFound(message, **kw)
    if status == 429:
        return RateLimited(message, retry_after=parse_retry_after(headers), **kw)
    if status >= 500 or status in (408, 409):
        return ServerError(message, **kw)
    return StatusError(message, **kw)


def is_context_length_message(text: str) -> bool:
    """True when an error text says the prompt does not fit the model's context."""
    low = text.lower()
    return any(phrase in low for phrase in _CONTEXT_PHRASES)


def _is_context_error(body: object, detail: str) -> bool:
    if isinstance(body, Mapping):
        for key in ("code", "type"):
            value = body.get(key)
            if isinstance(value, str) and value in _CONTEXT_CODES:
                return True
    return is_context_length_message(detail)


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date).

    Returns None when absent or unparseable; never negative; never infinite.
    """
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        seconds = _finite(raw_ms, 1000.0)
        if seconds is not None:
            return seconds
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _finite(raw, 1.0)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None instead of raising
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _finite(text: str, divisor: float) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return max(0.0, value / divisor)


def _body_message(body: object) -> str:
    """The human part of an error body: ``{"error": {"message": ...}}``, ``{"message": ...}``
    (vLLM), ``{"detail": ...}`` (FastAPI), or the text itself."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            for key in ("message", "detail", "error"):
                value = inner.get(key)
                if isinstance(value, str) and value:
                    return value
            detail = inner.get("detail")
            if detail is not None:
                return str(detail)
        elif isinstance(inner, str):
            return inner
        return ""
    if isinstance(body, str):
        return body.strip()
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace").strip()
    return ""


def _response_body(response: Any) -> object:
    try:
        return response.json()
    except Exception:  # any decode failure: fall back to text, the body is only a detail
        try:
            return response.text
        except Exception:
            return None


def redact_body(body: object, _depth: int = 0) -> object:
    """A copy of an error body with every string redacted (servers may echo headers back)."""
    if isinstance(body, str):
        return redact(body)
    if _depth > 8:
        return None
    if isinstance(body, Mapping):
        return {redact(str(k)): redact_body(v, _depth + 1) for k, v in body.items()}
    if isinstance(body, (list, tuple)):
        return [redact_body(v, _depth + 1) for v in body]
    if isinstance(body, bytes):
        return redact(body.decode("utf-8", "replace"))
    return body


def _scrub(exc: BaseException) -> None:
    """Redact the original error and every error chained to it, in place: they stay on
    ``__cause__`` / ``__context__``, and tracebacks, ``logging.exception`` and code that
    reads ``.response`` or ``.request`` see them (a 401 body may echo the Authorization
    header; the request carries it)."""
    for e in _walk(exc):
        _scrub_one(e)


def _scrub_one(exc: BaseException) -> None:
    try:
        args = tuple(redact(a) if isinstance(a, str) else a for a in exc.args)
        if args != exc.args:
            exc.args = args
        message = getattr(exc, "message", None)
        if isinstance(message, str):
            setattr(exc, "message", redact(message))  # noqa: B010 - any exception type
        if hasattr(exc, "body"):
            setattr(exc, "body", redact_body(getattr(exc, "body")))  # noqa: B009,B010
        state = vars(exc)
        for attr in ("request", "_request", "response"):
            value = state.get(attr)
            if value is not None:
                state[attr] = redacted_http(value)
    except Exception:  # a read-only attribute on some future class: keep the original
        pass


# Request headers whose values are credentials, whatever their shape.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "api-key",
                                 "x-api-key", "cookie", "set-cookie"})
# Headers that describe the body as it came off the wire; the copy's body is decoded.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def redacted_http(obj: Any) -> Any:
    """A copy of an ``httpx.Request`` / ``httpx.Response`` (httpx or httpx2) with credential
    headers masked and every secret removed from the URL, the other headers and a response's
    body; anything else is returned as it is. Copies are marked, so a second pass keeps them."""
    if getattr(obj, "_routekit_redacted", False):
        return obj
    for lib in loaded_http_libs():
        if isinstance(obj, lib.Request):
            try:
                content = obj.content
            except Exception:  # a streamed body, never read
                content = b""
            copy = lib.Request(obj.method, redact(str(obj.url)),
                               headers=_redacted_headers(obj.headers), content=content)
        elif isinstance(obj, lib.Response):
            try:
                text = obj.text
            except Exception:  # a streamed body, never read
                text = ""
            try:
                request = redacted_http(obj.request)
            except RuntimeError:  # httpx: a response built without a request
                request = None
            copy = lib.Response(obj.status_code, headers=_redacted_headers(obj.headers),
                                content=redact(text).encode("utf-8"), request=request)
        else:
            continue
        copy._routekit_redacted = True
        return copy
    return obj


def _redacted_headers(headers: Any) -> list[tuple[str, str]]:
    out = []
    for key, value in headers.multi_items():
        low = key.lower()
        if low in _WIRE_HEADERS:
            continue
        out.append((key, "***" if low in _CREDENTIAL_HEADERS else redact(value)))
    return out


# --- connection and timeout -----------------------------------------------------------------


def _connection_failed(exc: BaseException, *, provider: str | None, model: str | None) -> ConnectionFailed:
    refused = _is_refused(exc)
    if refused:
        message = f"{_who(provider)}: connection refused (nothing is listening)"
    else:
        root = _root_cause(exc)
        detail = str(root) or type(root).__name__
        message = redact(f"{_who(provider)}: connection failed: {_clip(detail)}")
    return ConnectionFailed(message, provider=provider, model=model, refused=refused)


def _walk(exc: BaseException) -> list[BaseException]:
    """Every exception reachable through __cause__, __context__ and exception groups."""
    seen: set[int] = set()
    stack = [exc]
    out: list[BaseException] = []
    while stack and len(out) < 64:
        cur = stack.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        out.append(cur)
        for sub in getattr(cur, "exceptions", None) or ():
            if isinstance(sub, BaseException):
                stack.append(sub)
        if cur.__cause__ is not None:
            stack.append(cur.__cause__)
        if cur.__context__ is not None:
            stack.append(cur.__context__)
    return out


def _is_refused(exc: BaseException) -> bool:
    for e in _walk(exc):
        if isinstance(e, ConnectionRefusedError):
            return True
        if isinstance(e, OSError) and e.errno == errno.ECONNREFUSED:
            return True
        if "Connection refused" in str(e) or "[Errno 111]" in str(e):
            return True
    return False


def _root_cause(exc: BaseException) -> BaseException:
    cur = exc
    for _ in range(32):
        nxt = cur.__cause__ or cur.__context__
        if nxt is None:
            break
        cur = nxt
    return cur


_TIMEOUT_PHASES = (("ConnectTimeout", "connect"), ("ReadTimeout", "read"),
                   ("WriteTimeout", "write"), ("PoolTimeout", "connection pool"))


def _timeout_message(exc: BaseException, provider: str | None) -> str:
    for lib in loaded_http_libs():
        for e in _walk(exc):
            for cls_name, phase in _TIMEOUT_PHASES:
                if isinstance(e, getattr(lib, cls_name)):
                    return f"{_who(provider)}: {phase} timeout"
    return f"{_who(provider)}: request timeout"


def _who(provider: str | None) -> str:
    return f"provider {provider!r}" if provider else "provider"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 1] + "…"
