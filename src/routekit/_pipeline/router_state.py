"""What one router holds between requests: config, plan graph, providers, and their memory.

Owns ``RouterState``: building the providers (or taking the caller's, e.g. ``FakeProvider``),
the per-model entries, the breaker board, the bulkheads (per provider and router-wide), the
health monitor, warm standby of in-process terminals, and closing it all exactly once.
Requests borrow it through ``RequestState``; it never looks at one request.

Thread safety: built once; afterwards its own fields do not change except ``closed``, under
a lock. Breakers, bulkheads and the monitor are each thread-safe.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from .._clock import SYSTEM_CLOCK, Clock
from .._exceptions import ConfigError, ConfigIssue, MissingAPIKey, RouteKitError
from .._plan import CompiledGraph
from .._policy.breakers import BreakerBoard
from .._policy.bulkheads import Bulkhead
from .._policy.health import HealthMonitor
from .entries import build_entries, overlay

if TYPE_CHECKING:
    from .._config.model import Config, HealthConfig
    from ..providers._base import Provider


class Telemetry(Protocol):
    """What the pipeline tells metrics and traces: one call per finished request, with its
    ``RequestState`` (typed ``Any`` here: naming it would make request.py and this module
    import each other), the usage, the error (None when answered) and whether it streamed.
    Breaker changes reach it as a ``BreakerBoard`` listener."""

    def request_finished(self, req: Any, error: BaseException | None, usage: Any,
                         stream: bool) -> None: ...

__all__ = ["ProgressCallback", "RouterState"]

log = logging.getLogger("routekit")

ProgressCallback = Callable[[str, float], None]


class RouterState:
    """Everything a router keeps between requests (see the module docstring)."""

    def __init__(self, config: Config, *, warm: bool, progress: ProgressCallback | None,
                 clock: Clock | None = None,
                 providers: Mapping[str, Provider] | None = None) -> None:
        self.config = config
        self.clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        routing = config.routing
        self.max_depth = routing.max_depth
        self.retry = routing.retry
        self.first_byte_share = routing.first_byte_share
        # The budget of a request that gives no timeout=.
        self.default_budget = (routing.deadline if routing.deadline is not None
                               else routing.timeout.total)
        self.graph = CompiledGraph.from_config(config)
        if self.graph.cycles(limit=1):
            log.warning("config has fallback cycles; plans de-duplicate them (see routekit validate)")
        self.closed = False
        self._lock = threading.Lock()
        # Metrics and traces (routekit._telemetry), when the router was given any.
        self.telemetry: Telemetry | None = None
        self.on_close: list[Callable[[], None]] = []  # run once, as the router closes
        self.providers: dict[str, Provider] = {}
        self._build_providers(dict(providers or {}))
        self.board = BreakerBoard(
            self.graph,
            providers={name: (overlay(routing.breaker, p.breaker), p.is_cloud)
                       for name, p in config.providers.items()
                       if name in self.providers},
            models={name: m.provider for name, m in config.models.items()},
        )
        self.bulkheads: dict[str, Bulkhead] = {
            name: Bulkhead(name, p.max_concurrency, p.max_waiting or 0)
            for name, p in config.providers.items()
            if p.max_concurrency is not None and name in self.providers
        }
        lim = routing.limits
        self.limit: Bulkhead | None = (
            Bulkhead("router", lim.max_concurrency, lim.max_waiting or 0)
            if lim.max_concurrency is not None else None
        )
        self.entries = build_entries(config, self.providers, self.board, self.bulkheads)
        self.monitor = HealthMonitor(
            self.providers, {n: config.providers[n].kind for n in self.providers},
            {n: self._health_config(n) for n in self.providers}, self.board, self.bulkheads,
            self.clock,
        )
        if warm:
            self.warm(progress=progress)

    def _health_config(self, name: str) -> HealthConfig | None:
        """The provider's probe settings (None: ``health: false``). Without an ``interval``
        nothing probes it in the background, but ``health()`` still probes with its
        ``timeout``."""
        p = self.config.providers[name]
        if p.health is False:
            return None
        return overlay(self.config.routing.health, p.health)

    def _build_providers(self, given: dict[str, Provider]) -> None:
        cfg = self.config
        unknown = sorted(set(given) - set(cfg.providers))
        if unknown:
            raise ConfigError([ConfigIssue(
                "providers", f"providers= names {', '.join(map(repr, unknown))}, which the "
                f"config does not declare (it has: {', '.join(sorted(cfg.providers))})")])
        used = {m.provider for m in cfg.models.values()}
        for name in sorted(used):
            if name in given:
                provider = given[name]
                # A test double built without a clock takes the router's (FakeProvider):
                # its delays then run on the FakeClock the router was given.
                adopt = getattr(provider, "adopt_clock", None)
                if adopt is not None:
                    adopt(self.clock)
                self.providers[name] = provider
                continue
            pcfg = cfg.providers[name]
            if pcfg.in_process:
                from ..providers.llama_cpp import LlamaCppNativeProvider, LlamaCppProvider

                models = {n: m for n, m in cfg.models.items() if m.provider == name}
                cls = (LlamaCppNativeProvider if pcfg.kind == "llama_cpp_native"
                       else LlamaCppProvider)
                self.providers[name] = cls(name, pcfg, models)
            else:
                from ..providers.http.openai_compat import OpenAICompatProvider

                probe = overlay(cfg.routing.health, pcfg.health or None)
                self.providers[name] = OpenAICompatProvider(
                    name, pcfg, default_timeout=overlay(cfg.routing.timeout, pcfg.timeout),
                    probe_path=probe.path,
                )

    # -- warm standby ------------------------------------------------------------------------

    def warm_models(self) -> list[str]:
        """In-process models loaded at start: chain terminals (a cold load on the failover
        path would ruin its TTFB) and any model with ``warm: true``; ``warm: false`` opts out."""
        out = []
        terminals = set(self.graph.terminals())
        for name, m in self.config.models.items():
            if not self.config.providers[m.provider].in_process:
                continue
            if m.warm or (m.warm is None and name in terminals):
                out.append(name)
        return out

    def warm(self, *, progress: ProgressCallback | None = None) -> None:
        # HTTP clients first: importing openai and building a client costs ~0.3 s once,
        # which would otherwise land on the first request's first hop.
        warmed = False
        for name, provider in self.providers.items():
            if self.config.providers[name].in_process:
                continue
            try:
                provider.warm()
                warmed = True
            except MissingAPIKey as exc:  # reported per request, as a skipped candidate
                log.debug("%s", exc)
        for name in self.warm_models():
            model_provider: Any = self.providers[self.config.models[name].provider]
            try:
                model_provider.warm(name, progress=progress)
                warmed = True
            except Exception as exc:  # keep routing: the attempt will report it in the route
                log.warning("could not warm in-process model %r: %s", name, exc)
        if warmed:
            collect_startup_garbage()

    # -- lifecycle ---------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise RouteKitError("this router is closed; create a new one to send requests")

    def _begin_close(self) -> bool:
        """Mark the router closed; True for the one caller that gets to release providers."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
            return True

    def _closed_now(self) -> None:
        for hook in self.on_close:
            try:
                hook()
            except Exception:  # closing must release everything it can
                log.warning("routekit: a close hook failed", exc_info=True)

    def close(self) -> None:
        if self._begin_close():
            self._closed_now()
            self.monitor.stop()
            for p in self.providers.values():
                try:
                    p.close()
                except Exception as exc:  # closing must release everything it can
                    log.warning("error closing provider %r: %s", p.name, exc)

    async def aclose(self) -> None:
        if self._begin_close():
            self._closed_now()
            await self.monitor.astop()
            for p in self.providers.values():
                try:
                    await p.aclose()
                except Exception as exc:
                    log.warning("error closing provider %r: %s", p.name, exc)


_startup_collected = False


def collect_startup_garbage() -> None:
    """One full garbage collection after the first warm start in a process.

    What a warm start imports (openai's types, pydantic's schemas, llama_cpp's ctypes) leaves
    ~100k new objects for CPython's next full collection, which then falls on whatever runs
    next: the main job's first hop (a refused local port) took 68 ms instead of 6, 62 of them
    a generation-2 collection (gc.callbacks, the 2-core dev VM). Collecting here moves that
    pause into start-up. Once per process: later routers import nothing new. Not where the
    application turned automatic collection off (``gc.disable()``: no pause can come then).
    ``gc.freeze()`` would go further, but it is the application's policy to set, not a
    library's."""
    global _startup_collected
    if _startup_collected or not gc.isenabled():
        return
    _startup_collected = True
    gc.collect()
