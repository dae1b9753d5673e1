"""Health probes: checking providers in the background, and what a router knows about them.

Owns ``HealthMonitor`` — per provider, a probe schedule (``interval`` seconds, spread by up to
``jitter`` of it, from ``routing.health`` with the provider's ``health`` over it), the last
probe result, and the hand-off of results to the provider's breaker: a probe that fails
opens it (one that timed out counts as one failure toward ``failure_threshold``; neither
counts while requests through the provider were answered during the probe); a passing
probe turns an open breaker half-open (the next request tries it) and closes a half-open
one that has no request in flight. Probes run on one daemon thread for
``Router`` and one asyncio task for ``AsyncRouter``; closing the router stops them. Also
``HealthSnapshot``, what ``router.health()`` returns.

What a probe asks is the provider's business (``Provider.health``: the kind's endpoint —
Ollama ``/api/version``, vLLM and llama.cpp server ``/health``, OpenAI-compatible
``/v1/models``; in-process: the model is loaded). Must not route requests.
"""

from __future__ import annotations

import logging
import random
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._exceptions import RouteKitError
from ..providers._base import HealthReport

if TYPE_CHECKING:
    import asyncio

    from .._clock import Clock
    from .._config.model import HealthConfig
    from ..providers._base import Provider
    from .breakers import BreakerBoard, BreakerSnapshot
    from .bulkheads import Bulkhead

__all__ = ["HealthMonitor", "HealthSnapshot", "ProviderHealth"]

log = logging.getLogger("routekit")

# The background thread re-reads the clock at least this often (seconds of real time), so a
# router on a FakeClock still notices probes falling due.
_MAX_NAP = 0.5


@dataclass(frozen=True)
class ProviderHealth:
    """One provider as the router sees it now."""

    provider: str
    kind: str
    probe: HealthReport | None  # the last probe, or None when never probed
    probed_ago: float | None  # seconds since that probe
    breaker: BreakerSnapshot
    models: list[BreakerSnapshot]
    bulkhead: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        """Its last probe passed (or none ran) and no breaker of it, the provider's or a
        model's, is open: plans take all of its models."""
        probe_ok = self.probe is None or self.probe.ok
        return (probe_ok and self.breaker.state != "open"
                and all(m.state != "open" for m in self.models))

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "kind": self.kind,
            "ok": self.ok,
            "probe": None if self.probe is None else {
                "ok": self.probe.ok, "detail": self.probe.detail,
                "latency_ms": self.probe.latency_ms, "seconds_ago": self.probed_ago,
            },
            "breaker": self.breaker.as_dict(),
            "models": [m.as_dict() for m in self.models],
            "bulkhead": self.bulkhead,
        }


@dataclass(frozen=True)
class HealthSnapshot:
    """``router.health()``: every provider's last probe, breaker and bulkhead."""

    providers: list[ProviderHealth] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.providers)

    def __getitem__(self, provider: str) -> ProviderHealth:
        for p in self.providers:
            if p.provider == provider:
                return p
        raise KeyError(provider)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "providers": [p.as_dict() for p in self.providers]}


class _Schedule:
    __slots__ = ("name", "interval", "jitter", "timeout", "next_at", "last", "last_at")

    def __init__(self, name: str, config: HealthConfig) -> None:
        self.name = name
        self.interval = config.interval
        self.jitter = config.jitter
        self.timeout = config.timeout
        self.next_at = 0.0
        self.last: HealthReport | None = None
        self.last_at = 0.0

    def plan_next(self, now: float, rng: random.Random) -> None:
        if self.interval is None:
            self.next_at = float("inf")
            return
        self.next_at = now + self.interval * (1.0 + self.jitter * rng.random())


class HealthMonitor:
    """Probes for one router. Thread-safe: the schedule and results are guarded by a lock;
    probes themselves run outside it."""

    def __init__(self, providers: dict[str, Provider], kinds: dict[str, str],
                 configs: dict[str, HealthConfig | None], board: BreakerBoard,
                 bulkheads: dict[str, Bulkhead], clock: Clock, *, seed: int | None = None) -> None:
        """``configs``: the effective probe settings per provider (None: never probed in the
        background; ``health()`` may still probe it on demand)."""
        self._providers = providers
        self._kinds = kinds
        self._board = board
        self._bulkheads = bulkheads
        self._clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._timeouts = {name: (cfg.timeout if cfg is not None else None)
                          for name, cfg in configs.items()}
        self._schedules: dict[str, _Schedule] = {}
        now = clock.now()
        for name, cfg in configs.items():
            if cfg is not None and cfg.interval is not None:
                s = _Schedule(name, cfg)
                # The first probe comes within one interval, spread so that providers
                # configured alike are not all probed at the same instant.
                s.next_at = now + cfg.interval * self._rng.random()
                self._schedules[name] = s
        self._last: dict[str, tuple[HealthReport, float]] = {}

    @property
    def scheduled(self) -> list[str]:
        """The providers probed in the background."""
        return list(self._schedules)

    # -- probing --------------------------------------------------------------------------

    def due(self, now: float) -> list[str]:
        with self._lock:
            return [s.name for s in self._schedules.values() if s.next_at <= now]

    def probe(self, name: str, timeout: float | None = None) -> HealthReport:
        """Probe one provider now (blocking) and feed its breaker."""
        if self._stop.is_set():
            return HealthReport(name, False, "router closed", 0.0)
        t = timeout if timeout is not None else (self._timeouts.get(name) or 1.0)
        before = self._successes(name)
        try:
            report = self._providers[name].health(t)
        except Exception as exc:  # a probe must never take the monitor down
            report = HealthReport(name, False, f"probe failed: {type(exc).__name__}: {exc}", 0.0)
        self.record(name, report, before)
        return report

    async def aprobe(self, name: str, timeout: float | None = None) -> HealthReport:
        import asyncio

        if self._stop.is_set():
            return HealthReport(name, False, "router closed", 0.0)
        t = timeout if timeout is not None else (self._timeouts.get(name) or 1.0)
        provider = self._providers[name]
        before = self._successes(name)
        try:
            ahealth = getattr(provider, "ahealth", None)
            if ahealth is not None:
                report: HealthReport = await ahealth(t)
            else:
                report = await asyncio.to_thread(provider.health, t)
        except Exception as exc:
            report = HealthReport(name, False, f"probe failed: {type(exc).__name__}: {exc}", 0.0)
        self.record(name, report, before)
        return report

    def _successes(self, name: str) -> int:
        breaker = self._board.providers.get(name)
        return 0 if breaker is None else breaker.successes

    def record(self, name: str, report: HealthReport, successes_before: int) -> None:
        """Keep a probe's result and hand it to the provider's breaker. ``successes_before``:
        the breaker's ``successes`` as the probe began."""
        if self._stop.is_set():
            return  # a probe that outlived close(): the router's breakers are not its to move
        now = self._clock.now()
        with self._lock:
            self._last[name] = (report, now)
            sched = self._schedules.get(name)
            if sched is not None:
                sched.plan_next(now, self._rng)
        breaker = self._board.providers.get(name)
        if breaker is None or not self._board.enabled.get(name, True):
            return
        if report.ok:
            breaker.probe_passed(now)
        else:
            why = f"health probe failed: {report.detail}"
            if not breaker.probe_failed(now, why, successes_before,
                                        timed_out=report.timed_out):
                log.info("provider %r: health probe failed (%s); its breaker is %s (%s)", name,
                         report.detail, breaker.state,
                         "requests through it were answered meanwhile"
                         if breaker.successes != successes_before
                         else "a timeout counts as one failure")
                return
            log.info("provider %r: health probe failed (%s); its breaker is open", name,
                     report.detail)

    def run_due(self) -> list[HealthReport]:
        """Probe every provider whose time has come (what the thread does each round)."""
        return [self.probe(name) for name in self.due(self._clock.now())]

    async def arun_due(self) -> list[HealthReport]:
        import asyncio

        names = self.due(self._clock.now())
        return list(await asyncio.gather(*(self.aprobe(n) for n in names)))

    def probe_all(self, timeout: float | None = None) -> None:
        """Probe every provider now, in parallel threads (``router.health()``)."""
        names = list(self._providers)
        if len(names) == 1:
            self.probe(names[0], timeout)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(names)),
                                thread_name_prefix="routekit-probe") as pool:
            list(pool.map(lambda n: self.probe(n, timeout), names))

    async def aprobe_all(self, timeout: float | None = None) -> None:
        import asyncio

        await asyncio.gather(*(self.aprobe(n, timeout) for n in self._providers))

    # -- background ---------------------------------------------------------------------------

    def _nap(self) -> float:
        with self._lock:
            nxt = min((s.next_at for s in self._schedules.values()), default=float("inf"))
        return max(0.0, min(_MAX_NAP, nxt - self._clock.now()))

    def start_thread(self) -> None:
        if not self._schedules or self._thread is not None or self._stop.is_set():
            return
        # The thread holds the monitor weakly: a router dropped without close() is collected
        # and its probes stop, instead of probing its servers for the life of the process.
        self._thread = threading.Thread(target=_probe_loop, args=(weakref.ref(self), self._stop),
                                        name="routekit-health", daemon=True)
        self._thread.start()

    def start_task(self) -> None:
        """Start the probe task on the running event loop, unless one runs there already
        (an AsyncRouter used by one ``asyncio.run`` after another gets a task on each)."""
        if not self._schedules or self._stop.is_set():
            return
        import asyncio  # cached in sys.modules: this runs on every async request

        loop = asyncio.get_running_loop()
        task = self._task
        # One task for the router, on whichever loop started it while that loop runs: an
        # AsyncRouter shared by threads, each with a loop, started a task at every switch
        # and left the others running (probe report: ~50 tasks a loop, 384 probes for 8).
        if task is not None and not task.done() and (
                task.get_loop() is loop or task.get_loop().is_running()):
            return
        self._task = loop.create_task(self._aloop(), name="routekit-health")

    async def _aloop(self) -> None:
        import asyncio

        while not self._stop.is_set():
            await asyncio.sleep(self._nap())
            if self._stop.is_set():
                return
            try:
                await self.arun_due()
            except Exception:  # aprobe() catches provider errors; anything else is logged
                log.exception("routekit health probes failed")

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            # A probe waiting on a hung server ends by its own timeout; close() does not
            # wait for it (record() ignores what it finds once stopped).
            thread.join(timeout=0.5)

    async def astop(self) -> None:
        import asyncio

        self._stop.set()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, RouteKitError):
                pass
        self.stop()

    # -- snapshot -------------------------------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        now = self._clock.now()
        board = self._board
        # An open breaker whose time is up is half-open, as plan() and requests see it: an
        # idle router's readiness check must not stay red until traffic comes.
        board.tick(now)
        models_of: dict[str, list[BreakerSnapshot]] = {name: [] for name in self._providers}
        providers_snap, models_snap = board.snapshots(now)
        by_name = {s.name: s for s in providers_snap}
        for snap, breaker in zip(models_snap, board.models.values()):
            owner = board.model_provider.get(breaker.name)
            if owner in models_of:
                models_of[owner].append(snap)
        out = []
        with self._lock:
            last = dict(self._last)
        for name in self._providers:
            probe = last.get(name)
            bulkhead = self._bulkheads.get(name)
            out.append(ProviderHealth(
                name, self._kinds[name], probe[0] if probe else None,
                (now - probe[1]) if probe else None, by_name[name], models_of[name],
                bulkhead.as_dict() if bulkhead is not None else None,
            ))
        return HealthSnapshot(out)


def _probe_loop(ref: weakref.ReferenceType[HealthMonitor], stop: threading.Event) -> None:
    """The probe thread: a round whenever one is due, until ``stop`` or the monitor is gone
    (its router was dropped without ``close()``). Between rounds it holds no reference."""
    while True:
        monitor = ref()
        if monitor is None:
            return
        nap = monitor._nap()
        del monitor
        if stop.wait(nap):
            return
        monitor = ref()
        if monitor is None:
            return
        try:
            monitor.run_due()
        except Exception:  # pragma: no cover - probe() already catches provider errors
            log.exception("routekit health probes failed")
        del monitor
