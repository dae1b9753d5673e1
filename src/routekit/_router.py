"""``Router`` and ``AsyncRouter``: the OpenAI-shaped public surface.

Owns construction (from a ``Config``, a mapping or a YAML path; with an injected clock and
provider doubles for tests), the ``chat.completions`` and ``completions`` attributes,
``plan()``, ``health()`` and the lifecycle (``close``, context managers, the background health
probes). Everything a request does lives in ``_pipeline``; everything a router remembers in
``RouterState``; the rest of the openai client's surface (``base_url``, ``with_options``,
``models``, ``beta``...) in ``_compat.client``.
``openai`` and ``llama_cpp`` are imported only when a router that uses them is built.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Union

from ._compat.client import AsyncClientSurface, ClientSurface
from ._pipeline.completions import AsyncCompletions, Completions
from ._pipeline.router_state import ProgressCallback, RouterState
from ._pipeline.text import AsyncTextCompletions, TextCompletions

if TYPE_CHECKING:
    from ._config.model import Config
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    from ._clock import Clock
    from ._plan import CompiledGraph
    from ._policy.health import HealthSnapshot
    from .providers._base import Provider

__all__ = ["AsyncRouter", "Router"]

ConfigSource = Union["Config", Mapping[str, Any], str, "os.PathLike[str]"]


def _to_config(config: ConfigSource) -> Config:
    # pydantic and the loader load here, with the first router: not at `import routekit`.
    from ._config.loader import load_config
    from ._config.model import Config

    return config if isinstance(config, Config) else load_config(config)


class _Chat:
    def __init__(self, completions: Completions) -> None:
        self.completions = completions


class _AsyncChat:
    def __init__(self, completions: AsyncCompletions) -> None:
        self.completions = completions


def _default_config() -> Config:
    """``Router.default()``'s config: ``$ROUTEKIT_CONFIG`` when set (its errors say that is
    where the path came from), else the embedded default."""
    from ._config.default import default_config_source
    from ._exceptions import ConfigError

    source = default_config_source()
    try:
        return _to_config(source)
    except ConfigError as exc:
        if not isinstance(source, str):
            raise
        raise ConfigError(exc.issues, source=f"{exc.source or source} (named by "
                          "$ROUTEKIT_CONFIG)") from None


def _probe_timeout(value: Any) -> float | None:
    """``health(timeout=)``: None (each provider's configured probe timeout) or a positive
    number of seconds. Anything else failed inside every probe, and each failed probe opened
    a healthy provider's breaker."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"health(timeout=) takes a number of seconds or None, "
                        f"got {type(value).__name__}")
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"health(timeout=) must be a positive number of seconds, "
                         f"got {value!r}")
    return float(value)


class _RouterBase:
    _state: RouterState
    _asgi = False

    def _observe(self, metrics: bool | CollectorRegistry | None,
                 traces: bool | TracerProvider | None) -> None:
        if metrics in (None, False) and traces in (None, False):
            return
        from ._telemetry import attach

        try:
            attach(self._state, metrics=metrics, traces=traces)
        except BaseException:
            self._state.close()
            raise

    def metrics_handler(self) -> Any:
        """A WSGI app (``AsyncRouter``: an ASGI app) serving this router's Prometheus
        metrics; raises ``RouteKitError`` when the router was built without ``metrics=``.
        With ``metrics=<registry>``, serving that registry as usual does the same."""
        from ._telemetry import metrics_app

        return metrics_app(self._state, asgi=self._asgi)

    @property
    def config(self) -> Config:
        return self._state.config

    @property
    def graph(self) -> CompiledGraph:
        return self._state.graph

    def plan(self, model: str) -> list[str]:
        """The candidates a request for ``model`` would try now, in order (open breakers
        left out)."""
        if not isinstance(model, str):
            raise TypeError(f"plan() takes a model name (a str), got {type(model).__name__}")
        state = self._state
        state.board.tick(state.clock.now())
        return state.graph.plan(model, max_depth=state.max_depth)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(models={len(self.config.models)}, "
                f"providers={sorted(self.config.providers)})")


class Router(_RouterBase, ClientSurface):
    """Routes OpenAI-shaped chat requests through fallback chains.

    ``router.chat.completions.create(...)`` takes the openai client's arguments and returns
    the openai types, each carrying ``.route``; ``router.completions.create(...)`` routes
    legacy text completions the same way. A router goes where an ``openai.OpenAI`` client
    goes (``parse``, ``stream``, ``with_raw_response``, ``with_options``, ``models.list()``,
    and errors that are openai's exception classes too). Thread-safe: share one router between
    threads. Use as a context manager, or call ``close()`` to release models, HTTP clients
    and the health-probe thread.

    ``clock`` replaces the monotonic clock that deadlines, retry waits, breakers and probe
    schedules read (tests pass ``routekit.testing.FakeClock``); ``providers`` replaces the
    providers the config would build, by name (``routekit.testing.FakeProvider``).

    ``metrics``: True for Prometheus metrics in a registry of the router's own (serve it with
    ``metrics_handler()``), or a ``prometheus_client.CollectorRegistry`` to register them
    there (needs ``routekit[metrics]``). ``traces``: True for OpenTelemetry spans from the
    global tracer provider, or a ``TracerProvider`` (needs ``routekit[otel]``). Both off by
    default; neither package is imported unless asked for.
    """

    def __init__(self, config: ConfigSource, *, warm: bool = True,
                 progress: ProgressCallback | None = None, clock: Clock | None = None,
                 providers: Mapping[str, Provider] | None = None,
                 health_probes: bool = True,
                 metrics: bool | CollectorRegistry | None = None,
                 traces: bool | TracerProvider | None = None) -> None:
        self._state = RouterState(_to_config(config), warm=warm, progress=progress,
                                  clock=clock, providers=providers)
        self._observe(metrics, traces)
        self.chat = _Chat(Completions(self._state))
        self.completions = TextCompletions(self._state)
        if health_probes:
            self._state.monitor.start_thread()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, warm: bool = True,
                  progress: ProgressCallback | None = None,
                  metrics: bool | CollectorRegistry | None = None,
                  traces: bool | TracerProvider | None = None) -> Router:
        return cls(_to_config(path), warm=warm, progress=progress, metrics=metrics,
                   traces=traces)

    @classmethod
    def default(cls, *, warm: bool = True, progress: ProgressCallback | None = None,
                metrics: bool | CollectorRegistry | None = None,
                traces: bool | TracerProvider | None = None) -> Router:
        """Ollama → vLLM → in-process gemma3-270m, or ``$ROUTEKIT_CONFIG`` when set."""
        return cls(_default_config(), warm=warm, progress=progress, metrics=metrics,
                   traces=traces)

    def health(self, *, probe: bool = True, timeout: float | None = None) -> HealthSnapshot:
        """Every provider's health: its last probe, its breakers (provider and models) and
        its bulkhead. ``probe=True`` probes every provider first (in parallel, each bounded
        by ``timeout`` or its configured probe timeout); ``False`` reports what the
        background probes and the traffic have seen."""
        timeout = _probe_timeout(timeout)
        state = self._state
        if probe and not state.closed:
            state.monitor.probe_all(timeout)
        return state.monitor.snapshot()

    def close(self) -> None:
        self._state.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRouter(_RouterBase, AsyncClientSurface):
    """Async twin of ``Router``: ``await router.chat.completions.create(...)``.

    Safe to share between tasks of one event loop (and between threads). Background health
    probes run as one asyncio task, started by ``async with`` or the first request.
    """

    _asgi = True

    def __init__(self, config: ConfigSource, *, warm: bool = True,
                 progress: ProgressCallback | None = None, clock: Clock | None = None,
                 providers: Mapping[str, Provider] | None = None,
                 health_probes: bool = True,
                 metrics: bool | CollectorRegistry | None = None,
                 traces: bool | TracerProvider | None = None) -> None:
        self._state = RouterState(_to_config(config), warm=warm, progress=progress,
                                  clock=clock, providers=providers)
        self._observe(metrics, traces)
        self.chat = _AsyncChat(AsyncCompletions(self._state, on_request=(
            self._state.monitor.start_task if health_probes else None)))
        self.completions = AsyncTextCompletions(self._state, on_request=(
            self._state.monitor.start_task if health_probes else None))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, warm: bool = True,
                  progress: ProgressCallback | None = None,
                  metrics: bool | CollectorRegistry | None = None,
                  traces: bool | TracerProvider | None = None) -> AsyncRouter:
        return cls(_to_config(path), warm=warm, progress=progress, metrics=metrics,
                   traces=traces)

    @classmethod
    def default(cls, *, warm: bool = True, progress: ProgressCallback | None = None,
                metrics: bool | CollectorRegistry | None = None,
                traces: bool | TracerProvider | None = None) -> AsyncRouter:
        return cls(_default_config(), warm=warm, progress=progress, metrics=metrics,
                   traces=traces)

    async def health(self, *, probe: bool = True, timeout: float | None = None
                     ) -> HealthSnapshot:
        timeout = _probe_timeout(timeout)
        state = self._state
        if probe and not state.closed:
            await state.monitor.aprobe_all(timeout)
        return state.monitor.snapshot()

    async def aclose(self) -> None:
        await self._state.aclose()

    async def close(self) -> None:
        await self.aclose()

    async def __aenter__(self) -> AsyncRouter:
        if self.chat.completions.on_request is not None:
            self.chat.completions.on_request()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
