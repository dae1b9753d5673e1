"""routekit's error tree. Every error routekit raises is a ``RouteKitError``.

Third-party errors (openai, httpx, llama_cpp) are translated into this tree once, at the
provider boundary, with ``raise ... from exc``; nothing above the providers sees them.

    RouteKitError
    ├── ConfigError                  bad config: field path and YAML line
    ├── NoRouteError                 unknown entry model, or no candidate left to try
    ├── Overloaded                   the router's own limit (routing.limits) is full
    ├── AllCandidatesFailed          every candidate failed; carries every attempt
    └── ProviderError                one attempt on one candidate failed
        ├── ConnectionFailed         refused / reset / DNS; ``refused`` is True when nothing listened
        ├── RequestTimeout           connect, first-byte, read or total deadline passed
        ├── ProviderBusy             a bulkhead or an in-process model queue is full
        ├── MissingAPIKey            the environment variable the config names is unset
        ├── UnsupportedRequest       this candidate cannot honour the request (another may)
        ├── StreamInterrupted        a stream ended early; carries the partial text
        └── StatusError              an HTTP error status; ``status_code``, ``body``
            ├── BadRequest           400: the request itself is wrong (fails fast)
            │   └── ContextLengthExceeded   the prompt does not fit this model (moves on)
            ├── AuthenticationFailed 401 / 403 (moves on, no retry)
            ├── ModelNotFound        404 (moves on, no retry)
            ├── RateLimited          429; ``retry_after`` seconds when the server said
            └── ServerError          5xx, 408, 409 (retryable)

Each ``ProviderError`` class states the policies the pipeline reads: ``retryable`` (worth
another try on the same candidate), ``fatal`` (the request itself is at fault: stop the whole
route rather than move on) and ``breaker_scope`` (whose circuit breaker the failure counts
against: ``"provider"`` — the server itself is unwell, which counts against the model too —
``"model"``, or ``None`` when it says nothing about health).

When openai is imported, an error leaving a router's public surface is also an instance of
the matching openai exception class (``except openai.RateLimitError`` catches a
``RateLimited``): ``_compat/errors.py`` says how, and which class each one gets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence

if TYPE_CHECKING:
    from ._pipeline.route import Attempt, Route

__all__ = [
    "AllCandidatesFailed",
    "AuthenticationFailed",
    "BadRequest",
    "ConfigError",
    "ConfigIssue",
    "ConnectionFailed",
    "ContextLengthExceeded",
    "MissingAPIKey",
    "ModelNotFound",
    "NoRouteError",
    "Overloaded",
    "ProviderBusy",
    "ProviderError",
    "RateLimited",
    "RequestRejected",
    "RequestTimeout",
    "RouteKitError",
    "ServerError",
    "StatusError",
    "StreamInterrupted",
    "UnsupportedRequest",
    "rebuild",
]


class RouteKitError(Exception):
    """Root of every error routekit raises.

    Errors raised by a router call carry ``route``: every attempt made before the failure.
    """

    route: Route | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls cls(*args), which keyword-only constructors refuse.
        return (rebuild, (type(self), self.args, dict(self.__dict__)))


def rebuild(cls: type, args: tuple[Any, ...], state: Any) -> Any:
    """Unpickle a routekit error: its class, args and attributes, without its constructor."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class ConfigIssue:
    """One problem found in a config: where (field path, YAML line) and what."""

    __slots__ = ("path", "line", "message")

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.message = message
        self.line = line

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line is not None else ""
        if self.path:
            head, sep, tail = self.message.partition(";")
            return f"{self.path}: {head}{where}{sep}{tail}"
        return f"{self.message}{where}"

    def __repr__(self) -> str:
        return f"ConfigIssue(path={self.path!r}, line={self.line!r}, message={self.message!r})"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "message": self.message}


class ConfigError(RouteKitError):
    """The config is invalid. ``issues`` lists every problem found, each with its path."""

    def __init__(self, issues: Sequence[ConfigIssue], *, source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        body = "\n".join(f"  {issue}" for issue in self.issues)
        super().__init__(f"{head}: {len(self.issues)} problem(s)\n{body}")


class NoRouteError(RouteKitError):
    """No candidate can serve the request (unknown model, or every candidate unavailable)."""


class Overloaded(RouteKitError):
    """The router's own concurrency limit (``routing.limits``) is full: the request was not
    started. Nothing is wrong with the providers; retry later or raise the limit."""


BreakerScope = Optional[Literal["provider", "model"]]


class ProviderError(RouteKitError):
    """One attempt on one provider failed."""

    retryable: bool = False
    fatal: bool = False
    breaker_scope: BreakerScope = "model"

    def __init__(
        self, message: str, *, provider: str | None = None, model: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model


class ConnectionFailed(ProviderError):
    """Could not reach the provider. ``refused``: nothing listened (move on at once)."""

    retryable = True
    breaker_scope: BreakerScope = "provider"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        refused: bool = False,
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.refused = refused


class RequestTimeout(ProviderError):
    """A connect, first-byte, read or total deadline passed. ``partial`` holds the text an
    answer had produced when its deadline stopped it (non-streaming in-process or assembled
    answers), else ``""``."""

    retryable = True
    breaker_scope: BreakerScope = "provider"

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        partial: str = "",
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.partial = partial


class ProviderBusy(ProviderError):
    """A bulkhead (provider ``max_concurrency``/``max_waiting``) or an in-process model's
    queue is full: the attempt spills to the next candidate at once. A full queue is retried
    on the last candidate; a full bulkhead is not (``max_waiting`` is its wait). Says
    nothing about the provider's health."""

    retryable = True
    breaker_scope: BreakerScope = None


class MissingAPIKey(ProviderError):
    """The environment variable named by ``api_key_env`` is not set."""

    breaker_scope: BreakerScope = None


class UnsupportedRequest(ProviderError):
    """This candidate cannot honour the request without changing its meaning (for example
    ``n`` > 1 or tools on an in-process model); another candidate may. Not a health signal."""

    breaker_scope: BreakerScope = None


class StreamInterrupted(ProviderError):
    """A stream stopped before its end. ``partial`` is the text received so far."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        partial: str = "",
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.partial = partial


class StatusError(ProviderError):
    """The provider answered with an HTTP error status. Retryable as its status is (408,
    409, 429, 5xx), whichever class carries it: HTTP providers raise the subclass for it,
    a test script may raise this one."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        provider: str | None = None,
        model: str | None = None,
        body: object | None = None,
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.status_code = status_code
        self.body = body
        if type(self) is StatusError and (status_code in (408, 409, 429)
                                          or status_code >= 500):
            self.retryable = True


class BadRequest(StatusError):
    """400: the request itself is invalid; it would fail on every candidate."""

    fatal = True
    breaker_scope: BreakerScope = None


class ContextLengthExceeded(BadRequest):
    """The prompt does not fit this model's context window; a larger one may take it."""

    fatal = False


class RequestRejected(StatusError):
    """413, 414, 422 or 431: this server refused the request as it was written (too large
    for it or a proxy in front of it; a field its schema does not take, as FastAPI-based
    servers answer 422). Another candidate may take it, so the plan moves on; it is not
    retried here, and says nothing about the server's health (no breaker counts it)."""

    breaker_scope: BreakerScope = None


class AuthenticationFailed(StatusError):
    """401/403: this candidate's credentials were refused."""

    breaker_scope: BreakerScope = "provider"


class ModelNotFound(StatusError):
    """404: the provider does not serve this model."""


class RateLimited(StatusError):
    """429. ``retry_after`` is the server's hint in seconds, when it gave one."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        provider: str | None = None,
        model: str | None = None,
        body: object | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, provider=provider, model=model, body=body
        )
        self.retry_after = retry_after


class ServerError(StatusError):
    """5xx, 408 or 409: the provider failed; trying again may work."""

    retryable = True


class AllCandidatesFailed(RouteKitError):
    """Every candidate in the plan failed. ``attempts`` holds each one, in order.

    ``last_error`` is the error of the last attempt that failed (None when every candidate
    was skipped); ``retry_after`` and ``body`` are its own (a 429's wait, a status error's
    body, redacted), so code written for one provider's errors reads them here too.
    """

    def __init__(self, model: str, attempts: Sequence[Attempt], *,
                 last_error: ProviderError | None = None) -> None:
        self.model = model
        self.attempts = list(attempts)
        self.last_error = last_error
        self.retry_after: float | None = getattr(last_error, "retry_after", None)
        self.body: Any = getattr(last_error, "body", None)
        lines = [f"all {len(self.attempts)} attempt(s) for model {model!r} failed:"]
        for a in self.attempts:
            lines.append(f"  - {a.describe()}")
        lines.append("  " + _advice(self.attempts))
        super().__init__("\n".join(lines))


def _advice(attempts: Sequence[Attempt]) -> str:
    """What a person can do next, from what the attempts say."""
    if any(a.error_type == "RequestTimeout" and a.outcome == "skipped" for a in attempts):
        return ("The request deadline ran out before every candidate was tried: raise "
                "`timeout=` or routing.deadline.")
    if not any(a.kind in ("llama_cpp", "llama_cpp_native") for a in attempts):
        return ("Start one of these providers, fix the reasons above, or end the chain with "
                "an in-process model (kind: llama_cpp), which needs no server.")
    return "Start one of these providers or fix the reasons above."
