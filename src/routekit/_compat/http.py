"""The HTTP objects an openai client hands out, made up for a router that has no one server.

Owns ``BASE_URL`` (a router's ``base_url``: a reserved ``.invalid`` host, so code that takes it
and builds its own HTTP client fails loudly instead of bypassing the routes), and builders
for the ``httpx.Request`` / ``httpx.Response`` objects that openai's errors, raw responses and
streams carry (``http_lib()``: httpx or httpx2, whichever the installed openai uses). The
response headers say who answered: ``x-routekit-model``, ``x-routekit-provider``,
``x-routekit-attempts``.

Must not import openai or an HTTP library at import time.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .._pipeline.route import Route

__all__ = ["BASE_URL", "make_request", "make_response", "route_headers"]

BASE_URL = "http://routekit.invalid/v1"


def make_request(path: str = "/chat/completions") -> Any:
    from ..providers.http.transport import http_lib

    return http_lib().Request("POST", BASE_URL + path)


def route_headers(route: Route | None) -> dict[str, str]:
    """Response headers that summarise a route (no secrets: a route holds none)."""
    headers = {"content-type": "application/json"}
    if route is None:
        return headers
    headers["x-routekit-requested"] = route.requested
    headers["x-routekit-attempts"] = str(len(route.attempts))
    ok = route.answered_by
    if ok is not None:
        headers["x-routekit-model"] = ok.model
        headers["x-routekit-provider"] = ok.provider
    return headers


def make_response(status: int, *, request: Any = None, headers: Mapping[str, str] | None = None,
                  body: object = None, path: str = "/chat/completions") -> Any:
    """A closed ``httpx.Response`` (its body, if any, already read)."""
    from ..providers.http.transport import http_lib

    lib = http_lib()
    content = b"" if body is None else json.dumps(body, default=str).encode()
    return lib.Response(status, headers=dict(headers or {}), content=content,
                        request=request if request is not None else make_request(path))
