"""Metrics and traces: optional observers of finished requests and breaker changes.

Owns ``attach`` (turns Prometheus metrics and/or OpenTelemetry traces on for one router: sets
``RouterState.telemetry`` and subscribes to its breaker board), ``Fanout`` (the ``Telemetry``
that tells both when both are on), ``metrics_app`` (what ``router.metrics_handler()``
serves) and ``error_label`` (the bounded error names that metrics use as labels).

``prometheus_client`` and ``opentelemetry`` are imported by ``metrics.py`` and ``traces.py``
only, and those load only when a router is built with them on; this module imports neither,
so ``import routekit`` stays light and a router with both off pays one ``is None`` test per
request (``RequestState.finish``).

Must not touch the pipeline or the policies: everything is derived from what ``finish``
hands over (the request's route, usage and error) and from breaker state changes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Sequence

from .._exceptions import ConfigError, ConfigIssue, RouteKitError

if TYPE_CHECKING:
    from .._pipeline.request import RequestState
    from .._pipeline.router_state import RouterState, Telemetry
    from .metrics import Metrics

__all__ = ["Fanout", "attach", "bad_argument", "error_label", "metrics_app"]

# The label for anything a config does not name (an unknown entry model, a foreign error):
# label values must come from a bounded set, never from a request.
OTHER = "_other"


def error_label(error: BaseException) -> str:
    """A bounded name for ``error``: routekit's exception class names, or ``_other``."""
    if isinstance(error, (RouteKitError, asyncio.CancelledError, KeyboardInterrupt)):
        return type(error).__name__
    return OTHER


class Fanout:
    """Tells every sink about each finished request (metrics and traces both on).
    Thread-safe as its sinks are."""

    __slots__ = ("sinks",)

    def __init__(self, sinks: Sequence[Telemetry]) -> None:
        self.sinks = tuple(sinks)

    def request_finished(self, req: RequestState, error: BaseException | None, usage: Any,
                         stream: bool) -> None:
        for sink in self.sinks:
            sink.request_finished(req, error, usage, stream)


def bad_argument(name: str, message: str) -> ConfigError:
    """A ``metrics=`` / ``traces=`` argument routekit cannot use, as a config error."""
    return ConfigError([ConfigIssue(name, message)])


def _on(value: object) -> bool:
    return value is not None and value is not False


def attach(state: RouterState, *, metrics: Any = None, traces: Any = None) -> None:
    """Turn on what the router was asked for; a no-op when both are None or False.

    ``metrics``: True (a registry of the router's own) or a ``CollectorRegistry``.
    ``traces``: True (OpenTelemetry's global tracer provider) or a ``TracerProvider``.
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
        state.on_close.append(sink.router_closed)
        sinks.append(sink)
    if _on(traces):
        try:
            from .traces import Traces
        except ImportError as exc:
            raise bad_argument("traces", "needs opentelemetry-api: pip install "
                               "'routekit[otel]'") from exc

        sinks.append(Traces(state, None if traces is True else traces))
    if sinks:
        state.telemetry = sinks[0] if len(sinks) == 1 else Fanout(sinks)


def _metrics_of(state: RouterState) -> Metrics | None:
    telemetry = state.telemetry
    if telemetry is None:
        return None
    from .metrics import Metrics

    for sink in telemetry.sinks if isinstance(telemetry, Fanout) else (telemetry,):
        if isinstance(sink, Metrics):
            return sink
    return None


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
