"""routekit errors that are openai's errors too, so ``except openai.RateLimitError`` catches them.

CPython matches ``except`` clauses by the real MRO (``__subclasscheck__`` is not consulted),
so a routekit error can only be caught as ``openai.RateLimitError`` if its class inherits from
it. ``import routekit`` must not import openai, so the routekit classes cannot. Instead, when an
error leaves a router's public surface (``create`` and the other entry points, a stream's
``__next__``) and openai is imported, ``to_openai`` retypes it in place to a cached class that
inherits from both: ``class RateLimited(routekit.RateLimited, openai.RateLimitError)``. Built
once per pair, on first need. The error keeps its identity, message, traceback, ``__cause__``
and every routekit attribute (``route``, ``partial``, ``status_code``, ``retry_after``,
``body``, ``provider``, ``model``) and stays an instance of its routekit class; openai's
constructor adds what libraries read (``request``, ``response``, ``status_code``, ``code``,
``param``, ``type``, ``request_id``). When openai is not imported nobody can be catching its
classes, and nothing happens.

Which openai class: status errors by their status code, as openai's client picks
(400 ``BadRequestError`` ... 429 ``RateLimitError``, 5xx ``InternalServerError``);
``RequestTimeout`` → ``APITimeoutError``; ``ConnectionFailed`` and ``StreamInterrupted`` →
``APIConnectionError``; ``NoRouteError`` → ``NotFoundError`` (404); ``Overloaded`` →
``RateLimitError`` (429: too many requests in flight); ``ProviderBusy`` → 503;
``AllCandidatesFailed`` → what its last failed attempt was (a 429 → ``RateLimitError``, a
timeout → ``APITimeoutError``, only breakers open or queues full → 503, a missing API key →
401); anything else → ``APIError``. Status errors carry the provider's real response when
there was one (its headers: ``retry-after``, ``x-request-id``; for ``AllCandidatesFailed``
its last failed attempt's), else a synthetic one whose body wraps routekit's in ``"error"``.

Pickling: ``RouteKitError.__reduce__`` rebuilds the routekit class; the classes here rebuild
through ``restore``, which builds the pair again in the unpickling process.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Mapping

from .._exceptions import (
    AllCandidatesFailed,
    ConnectionFailed,
    MissingAPIKey,
    NoRouteError,
    Overloaded,
    ProviderBusy,
    RequestTimeout,
    RouteKitError,
    StatusError,
    StreamInterrupted,
    rebuild,
)
from .http import make_request, make_response, route_headers

__all__ = ["openai_class_name", "restore", "to_openai"]

_lock = threading.Lock()
_pairs: dict[tuple[type, str], type] = {}

# openai's own choice of class per status code (OpenAI._make_status_error).
_BY_STATUS = {400: "BadRequestError", 401: "AuthenticationError",
              403: "PermissionDeniedError", 404: "NotFoundError", 409: "ConflictError",
              422: "UnprocessableEntityError", 429: "RateLimitError"}
# Attempt.error_type values with no status code, as an openai class and status (or None).
_BY_ATTEMPT_TYPE: dict[str, tuple[str, int | None]] = {
    "RequestTimeout": ("APITimeoutError", None),
    "ConnectionFailed": ("APIConnectionError", None),
    "StreamInterrupted": ("APIConnectionError", None),
    "CircuitOpen": ("InternalServerError", 503),
    "ProviderBusy": ("InternalServerError", 503),
    "MissingAPIKey": ("AuthenticationError", 401),
}


def _status_class(status: int) -> str:
    name = _BY_STATUS.get(status)
    if name is not None:
        return name
    return "InternalServerError" if status >= 500 else "APIStatusError"


def openai_class_name(exc: RouteKitError) -> tuple[str, int | None]:
    """(the openai exception class name for ``exc``, the HTTP status it stands for or None)."""
    if isinstance(exc, StatusError):
        return _status_class(exc.status_code), exc.status_code
    if isinstance(exc, RequestTimeout):
        return "APITimeoutError", None
    if isinstance(exc, (ConnectionFailed, StreamInterrupted)):
        return "APIConnectionError", None
    if isinstance(exc, NoRouteError):
        return "NotFoundError", 404
    if isinstance(exc, Overloaded):
        return "RateLimitError", 429
    if isinstance(exc, ProviderBusy):
        return "InternalServerError", 503
    if isinstance(exc, MissingAPIKey):
        return "AuthenticationError", 401
    if isinstance(exc, AllCandidatesFailed):
        return _from_attempts(exc)
    return "APIError", None


def _from_attempts(exc: AllCandidatesFailed) -> tuple[str, int | None]:
    failed = [a for a in exc.attempts if a.outcome == "error"] or list(exc.attempts)
    if not failed:
        return "APIError", None
    last = failed[-1]
    if last.status_code is not None:
        return _status_class(last.status_code), last.status_code
    return _BY_ATTEMPT_TYPE.get(last.error_type or "", ("APIError", None))


def _pair(base: type, name: str) -> type:
    """The cached class inheriting from routekit's ``base`` and openai's class ``name``."""
    key = (base, name)
    cls = _pairs.get(key)
    if cls is not None:
        return cls
    import openai

    theirs = getattr(openai, name)
    with _lock:
        cls = _pairs.get(key)
        if cls is None:
            cls = type(base.__name__, (base, theirs), {
                "__module__": base.__module__,
                "__qualname__": base.__qualname__,
                "__doc__": base.__doc__,
                "__reduce__": _reduce,
            })
            _pairs[key] = cls
    return cls


def _reduce(self: BaseException) -> tuple[Any, ...]:
    base, name = _origin(type(self))
    return (restore, (base, name, self.args, dict(self.__dict__)))


def _origin(cls: type) -> tuple[type, str]:
    for (base, name), pair in _pairs.items():
        if pair is cls:
            return base, name
    raise TypeError(f"{cls!r} is not a routekit/openai error pair")  # pragma: no cover


def restore(base: type, name: str, args: tuple[Any, ...], state: Mapping[str, Any]) -> Any:
    """Unpickle an error of a routekit/openai pair (the pair is built again if needed)."""
    try:
        cls = _pair(base, name)
    except (ImportError, AttributeError):  # no openai (or no such class) here: routekit's own
        cls = base
    return rebuild(cls, args, state)


def _is_pair(cls: type) -> bool:
    return cls.__reduce__ is _reduce  # type: ignore[comparison-overlap]


def to_openai(exc: BaseException, *, path: str = "/chat/completions") -> None:
    """Retype a routekit error leaving the public surface into its routekit/openai pair, in
    place. Does nothing for other exceptions, for errors already retyped, or when openai is
    not imported."""
    if not isinstance(exc, RouteKitError) or _is_pair(type(exc)):
        return
    if "openai" not in sys.modules:
        return
    try:
        _retype(exc, path)
    except Exception:  # pragma: no cover - never lose the routekit error over its costume
        import logging

        logging.getLogger("routekit").debug("could not give %r openai's class", exc,
                                            exc_info=True)


def _retype(exc: RouteKitError, path: str) -> None:
    name, status = openai_class_name(exc)
    pair = _pair(type(exc), name)
    args = exc.args
    state = dict(exc.__dict__)
    message = state.get("message") if isinstance(state.get("message"), str) else str(exc)
    body = state.get("body")
    inner = body.get("error", body) if isinstance(body, Mapping) else body
    # An AllCandidatesFailed speaks with its last failed attempt's real response.
    source = exc.last_error if isinstance(exc, AllCandidatesFailed) and \
        exc.last_error is not None else exc
    request = _cause_attr(source, "request") or make_request(path)
    exc.__class__ = pair
    import openai

    theirs: Any = getattr(openai, name)
    if status is not None:
        response = _cause_attr(source, "response")
        if response is None or getattr(response, "status_code", None) != status:
            headers = route_headers(exc.route)
            retry_after = getattr(exc, "retry_after", None)
            if status == 429 and retry_after is not None:
                headers["retry-after"] = f"{retry_after:g}"
            # The body as a server sends it: openai's clients unwrap "error" into ``.body``.
            response = make_response(status, request=request, headers=headers,
                                     body={"error": inner if inner is not None else
                                           {"message": message, "type": type(exc).__name__}})
        theirs.__init__(exc, message, response=response, body=inner)
    elif name == "APITimeoutError":
        theirs.__init__(exc, request)
    elif name == "APIConnectionError":
        theirs.__init__(exc, message=message, request=request)
    else:
        theirs.__init__(exc, message, request, body=inner)
    # openai's constructors set their own message (and args); routekit's text stays, and so
    # does routekit's body (the whole error body, redacted).
    exc.args = args
    exc.message = message  # type: ignore[attr-defined]
    if "body" in state:
        exc.body = body  # type: ignore[attr-defined]


def _cause_attr(exc: BaseException, attr: str) -> Any:
    """``request`` / ``response`` of the openai error this one was translated from, if any
    (redacted when it was translated: ``providers.http.errors``)."""
    cause = exc.__cause__
    if cause is None:
        return None
    openai = sys.modules.get("openai")
    if openai is None or not isinstance(cause, openai.APIError):
        return None
    return getattr(cause, attr, None)
