"""Metrics (and, next, traces): optional observers of finished requests and breaker changes.

Owns ``attach`` (turns Prometheus metrics on for one router: sets ``RouterState.telemetry``
and subscribes to its breaker board), ``metrics_app`` (what ``router.metrics_handler()``
serves) and ``error_label`` (the bounded error names that metrics use as labels).

``prometheus_client`` is imported by ``metrics.py`` only, which loads only when a router is
built with metrics on; this module does not import it, so ``import routekit`` stays light and
a router with metrics off pays one ``is None`` test per request (``RequestState.finish``).

Must not touch the pipeline or the policies: everything is derived from what ``finish``
hands over (the request's route, usage and error) and from breaker state changes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .._exceptions import ConfigError, ConfigIssue, RouteKitError

if TYPE_CHECKING:
    from .._pipeline.router_state import RouterState, Telemetry
    from .metrics import Metrics

__all__ = ["attach", "bad_argument", "error_label", "metrics_app"]

# The label for anything a config does not name (an unknown entry model, a foreign error):
# label values must come from a bounded set, never from a request.
OTHER = "_other"


def error_label(error: BaseException) -> str:
    """A bounded name for ``error``: routekit's exception class names, or ``_other``."""
    if isinstance(error, (RouteKitError, asyncio.CancelledError, KeyboardInterrupt)):
        return type(error).__name__
    return OTHER


def bad_argument(name: str, message: str) -> ConfigError:
    """A ``metrics=`` / ``traces=`` argument routekit cannot use, as a config error."""
    return ConfigError([ConfigIssue(name, message)])


def _on(value: object) -> bool:
    return value is not None and value is not False


def attach(state: RouterState, *, metrics: Any = None) -> None:
    """Turn on what the router was asked for; a no-op when ``metrics`` is None or False.

    ``metrics``: True (a registry of the router's own) or a ``CollectorRegistry``.
    """
    sinks: list[Telemetry] = []
    if _on(metrics):
        try:
            from .metrics import Metrics
        except ImportError as exc:
            raise bad_argument("metrics", "needs prometheus-client: pip install "
                               "'routekit[metrics]'") from exc

        sink = Metrics(state, None if metrics is True else metrics)
        state.board.listeners.append(sink.breaker_changed)
        sinks.append(sink)
    if sinks:
        state.telemetry = sinks[0]


def _metrics_of(state: RouterState) -> Metrics | None:
    telemetry = state.telemetry
    if telemetry is None:
        return None
    from .metrics import Metrics

    return telemetry if isinstance(telemetry, Metrics) else None


def metrics_app(state: RouterState, *, asgi: bool) -> Any:
    """A WSGI (or ASGI) app serving the router's registry in Prometheus' text format."""
    sink = _metrics_of(state)
    if sink is None:
        raise RouteKitError(
            "metrics are off for this router: build it with metrics=True (a registry of its "
            "own) or metrics=<a prometheus_client.CollectorRegistry>"
        )
    import prometheus_client

    if asgi:
        return prometheus_client.make_asgi_app(sink.registry)
    return prometheus_client.make_wsgi_app(sink.registry)
