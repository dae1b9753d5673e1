"""Per-client defaults: what ``router.with_options(...)`` / ``router.copy(...)`` change.

Owns ``ClientOptions``: the openai client options a router view may set — ``timeout`` (a
request's default budget, as ``create(timeout=)`` takes it), ``max_retries`` (retries per
candidate: every candidate gets ``max_retries + 1`` calls, replacing ``routing.retry``'s
``max_attempts`` and ``last_candidate_attempts``), ``default_headers`` and ``default_query``
(merged under each request's ``extra_headers`` / ``extra_query``, which win). A view shares its
router's providers, breakers and limits; only these defaults differ. Applied in ``create``
before ``params.start`` checks the request; nothing here runs for a router without a view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

from .._exceptions import BadRequest
from .params import is_omitted

if TYPE_CHECKING:
    from .._config.model import RetryConfig
    from .request import RequestState
    from .router_state import RouterState

__all__ = ["ClientOptions", "start_with"]


class ClientOptions:
    """Immutable once built; ``merged`` makes a new one."""

    __slots__ = ("timeout", "max_retries", "headers", "query")

    def __init__(self, *, timeout: Any = None, max_retries: int | None = None,
                 headers: Mapping[str, str] | None = None,
                 query: Mapping[str, Any] | None = None) -> None:
        if max_retries is not None and (isinstance(max_retries, bool)
                                        or not isinstance(max_retries, int) or max_retries < 0):
            raise BadRequest(f"max_retries must be a whole number >= 0, got {max_retries!r}",
                             status_code=400)
        self.timeout = None if is_omitted(timeout) else timeout
        self.max_retries = max_retries
        self.headers = dict(headers) if headers else None
        self.query = dict(query) if query else None

    def merged(self, *, timeout: Any = None, max_retries: Any = None,
               headers: Mapping[str, str] | None = None,
               query: Mapping[str, Any] | None = None) -> ClientOptions:
        """These options with the given ones on top (omitted ones keep their value)."""
        return ClientOptions(
            timeout=self.timeout if is_omitted(timeout) else timeout,
            max_retries=self.max_retries if is_omitted(max_retries) else max_retries,
            headers={**(self.headers or {}), **(headers or {})} or None,
            query={**(self.query or {}), **(query or {})} or None,
        )

    def request_args(self, timeout: Any, extra_headers: Any, extra_query: Any
                     ) -> tuple[Any, Any, Any]:
        """``create``'s ``timeout``, ``extra_headers`` and ``extra_query`` with these defaults
        under them."""
        if is_omitted(timeout) and self.timeout is not None:
            timeout = self.timeout
        if self.headers is not None:
            extra_headers = (dict(self.headers) if is_omitted(extra_headers)
                             else {**self.headers, **extra_headers})
        if self.query is not None:
            extra_query = (dict(self.query) if is_omitted(extra_query)
                           else {**self.query, **extra_query})
        return timeout, extra_headers, extra_query

    def apply(self, req: RequestState) -> None:
        if self.max_retries is not None:
            req.retry = self.retry_config(req.retry)

    def retry_config(self, base: RetryConfig) -> RetryConfig:
        tries = (self.max_retries or 0) + 1
        return base.model_copy(update={"max_attempts": tries, "last_candidate_attempts": tries})


def start_with(options: ClientOptions | None, start: Callable[..., RequestState],
               router: RouterState, model: Any, body: Any, timeout: Any, extra_body: Any,
               extra_headers: Any, extra_query: Any, values: tuple[Any, ...]) -> RequestState:
    """``params.start`` (or ``start_text``, whose ``body`` is the prompt) under a client
    view's defaults; ``options`` None: the router's own."""
    if options is None:
        return start(router, model, body, timeout, extra_body, extra_headers, extra_query,
                     values)
    timeout, extra_headers, extra_query = options.request_args(timeout, extra_headers,
                                                               extra_query)
    req = start(router, model, body, timeout, extra_body, extra_headers, extra_query, values)
    options.apply(req)
    return req
