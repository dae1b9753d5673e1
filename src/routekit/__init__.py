"""routekit: route LLM requests through fallback chains that end inside your own process.

    from routekit import Router
    with Router.default() as router:
        reply = router.chat.completions.create(model="llama3.2", messages=[...])
        print(reply.choices[0].message.content, reply.route.answered_by)

``import routekit`` loads neither ``openai`` nor ``llama_cpp``: they load when a router that
uses them is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._exceptions import (
    AllCandidatesFailed,
    AuthenticationFailed,
    BadRequest,
    ConfigError,
    ConfigIssue,
    ConnectionFailed,
    ContextLengthExceeded,
    MissingAPIKey,
    ModelNotFound,
    NoRouteError,
    Overloaded,
    ProviderBusy,
    ProviderError,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    RouteKitError,
    ServerError,
    StatusError,
    StreamInterrupted,
    UnsupportedRequest,
)
from ._pipeline.route import Attempt, Route
from ._router import AsyncRouter, Router
from ._pipeline.streams import AsyncStream, Stream
from ._policy.health import HealthSnapshot, ProviderHealth

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._config.loader import load_config
    from ._config.model import Config


def __getattr__(name: str) -> Any:
    # ``Config`` and ``load_config`` bring pydantic (~150 ms here): loaded on first use, so
    # that ``from routekit import Router`` stays fast (PEP 562).
    if name == "Config":
        from ._config.model import Config

        return Config
    if name == "load_config":
        from ._config.loader import load_config

        return load_config
    raise AttributeError(f"module 'routekit' has no attribute {name!r}")

__all__ = [
    "AllCandidatesFailed",
    "AsyncRouter",
    "AsyncStream",
    "Attempt",
    "AuthenticationFailed",
    "BadRequest",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "ConnectionFailed",
    "ContextLengthExceeded",
    "HealthSnapshot",
    "MissingAPIKey",
    "ModelNotFound",
    "NoRouteError",
    "Overloaded",
    "ProviderBusy",
    "ProviderError",
    "ProviderHealth",
    "RateLimited",
    "RequestRejected",
    "RequestTimeout",
    "Route",
    "RouteKitError",
    "Router",
    "ServerError",
    "StatusError",
    "Stream",
    "StreamInterrupted",
    "UnsupportedRequest",
    "__version__",
    "load_config",
]
