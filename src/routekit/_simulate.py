"""Monte Carlo of provider outages over a config's fallback plans (``routekit simulate``).

Owns the simulation model below, building the C++ core's input from a ``Config`` (outage
units, hop costs from the timeouts, breakers, prices, plans, traffic), running the core in
chunks with a progress callback, and the figures: availability with a 95% Wilson interval,
added latency quantiles, cost per 1,000 requests, which model answered (shares, entropy) —
per entry model, per tier and overall. Printing and plotting live in ``_simulate_report``.
Reads a loaded config; no network, no model, no files. The C++ loop comes through
``_plan.Simulation`` (the C++ core is reached through ``_cpp`` only).

The model
---------
*Outage units.* Each provider is up with its availability (``availability``, or
``mtbf_hours/(mtbf_hours+mttr_hours)``, else the kind's default); every model of a provider
fails with it, and providers sharing a ``correlation_group`` (or a ``--group``) are one
unit at its least available member's figure (see ``_analysis``).

*A request* tries its entry model's plan (``CompiledGraph.plan``, depth first, each model
once) in order and is answered by the first candidate whose unit is up. A down unit's
failure shows in one of two ways, drawn per outage: it *hangs* (with probability
``hang_share``) or it fails fast. An in-process provider never hangs.

*Cost of a failed hop*, from the config: fast failure (refused connection, or a cloud
error) ``refused_ms`` (0.64 ms: the median measured by ``benchmarks/bench_overhead.py``); a
hung hop waits as the router's attempt does (``hang_limit``): for its first byte up to
``timeout.first_byte`` (the provider's ``timeout`` fields laid over ``routing.timeout``;
unset: the kind's default in ``_constants.DEFAULT_FIRST_BYTE``), or without such a limit
(off, or none for the kind) until the attempt's ``timeout.total``: ``read`` bounds only
the silences once bytes flow. While later candidates remain it waits at most
``routing.first_byte_share`` of what is left of the request budget (``routing.deadline``,
else ``timeout.total``); the last candidate may wait for the rest of the budget. A hung hop
is not retried; retries are not modelled (a down unit stays down for the seconds a retry
takes). A hop skipped by an open breaker costs ``skip_ms`` (0.02 ms). *Added latency* is
the time a request spent on failed and skipped hops before the candidate that answered it.

*Independent draws* (``requests`` of them, entry models drawn by traffic weight): each
request meets a fresh, independent draw of every unit. No time passes, so there are no
breakers. This is the pass whose availability converges on ``validate``'s analytic figure.

*Timeline* (``hours`` of simulated time, default ``requests / rps``): requests arrive as a
Poisson process at ``rps``; each unit alternates up and down periods drawn from exponential
distributions with means MTBF and MTTR (a provider given only an availability gets
``mttr_hours`` of repair and the MTBF that yields its availability), starting in its
stationary state. Hung hops overlap: a request waiting on one lets others arrive (a
discrete-event loop). Breakers follow ``routing.breaker`` with each provider's own
``breaker`` fields on top, per provider: ``auto`` is ``rate`` for cloud kinds and
``consecutive`` otherwise, ``trip_on_refused`` opens a local HTTP provider's breaker on its
first refused connection, open time starts at ``open_initial`` and grows by
``open_multiplier`` per trip up to ``open_max``, then ``half_open_probes`` requests probe at
a time, a success closes it and a failed probe reopens it. As in the router, a request
whose candidates are all open tries the one that reopens soonest anyway, and one whose
admitted hops all failed tries the skipped hop that reopens soonest as its last resort
(its failure changes nothing, its success closes that breaker). Per-model breakers are not simulated: outages here are whole
providers, so a model's breaker would trip with (never before) its provider's. The same
timeline (same outages, same arrivals) runs twice, with and without breakers.

Everything is seeded: the same config, options and seed give the same figures.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from . import _constants as C
from ._analysis import (
    OutageUnits,
    availability_figures,
    chain_availability,
    chain_unavailability,
    format_duration,
    outage_units,
    tier_of,
)
from ._config.model import BreakerConfig, Config
from ._config.values import MAX_TOKENS
from ._pipeline.entries import first_byte_of, overlay
from ._plan import CompiledGraph

__all__ = [
    "EntryFigures",
    "PassFigures",
    "ProviderFacts",
    "SimOptions",
    "SimResult",
    "effective_breaker",
    "hang_limit",
    "hang_waits",
    "simulate",
]

REFUSED_MS = 0.64  # median failover past a closed loopback port (bench_overhead.py)
SKIP_MS = 0.02  # deciding that an open breaker skips a candidate: tens of microseconds
Z95 = 1.959963984540054
_FAIL_KIND = {"refused": 0, "error": 1, "in-process": 2}
_CHUNK_REQUESTS = 250_000
MAX_REQUESTS = 1_000_000_000
# Outage periods (up + down) a timeline may draw per unit: like requests, each is a step of
# the event loop, so tiny MTBF/MTTR over a long timeline would run for hours.
MAX_OUTAGES = 100_000_000
MAX_TIMELINE_S = 100 * 365.25 * 86400.0
MAX_HOURS = 1e9  # as the config's mtbf_hours / mttr_hours
MAX_HOP_MS = 3_600_000.0
MAX_SEED = (1 << 64) - 1  # the core's generators take a 64-bit seed

Progress = Callable[[float], None]  # fraction of the whole run done, 0..1


@dataclass(frozen=True)
class SimOptions:
    requests: int = 1_000_000
    hours: float | None = None  # timeline length; None: requests / rps
    rps: float = 5.0
    seed: int = 0
    hang_share: float = 0.25
    prompt_tokens: int = 500
    completion_tokens: int = 200
    mttr_hours: float = 0.5
    refused_ms: float = REFUSED_MS
    skip_ms: float = SKIP_MS
    entries: Mapping[str, float] | None = None  # entry model → traffic weight
    groups: Mapping[str, Sequence[str]] | None = None  # what-if correlation groups
    timeline: bool = True

    def timeline_seconds(self) -> float:
        return self.hours * 3600.0 if self.hours is not None else self.requests / self.rps

    def check(self) -> None:
        # Every float must be finite first: NaN compares false both ways, so a bare
        # ``x < 0`` lets it through, and inf turns the timeline into NaN.
        floats = {"--rps": self.rps, "--hours": self.hours, "--hang-share": self.hang_share,
                  "--mttr-hours": self.mttr_hours, "--refused-ms": self.refused_ms,
                  "--skip-ms": self.skip_ms}
        for option, value in floats.items():
            if value is not None and not _finite(value):
                raise ValueError(f"{option} must be a finite number, got {value!r:.40}")
        # The seed as given, never reduced: -1 and 2**64 - 1 (2**64 and 0) are not one run.
        seed = self.seed
        if isinstance(seed, bool) or not (isinstance(seed, int) and 0 <= seed <= MAX_SEED):
            raise ValueError(f"--seed must be a whole number from 0 to {MAX_SEED} "
                             f"(2**64 - 1), got {_shown(seed)}")
        if self.requests < 1:
            raise ValueError(f"--requests must be at least 1, got {self.requests}")
        if not self.rps > 0:
            raise ValueError(f"--rps must be greater than 0, got {self.rps}")
        if self.hours is not None and not self.hours > 0:
            raise ValueError(f"--hours must be greater than 0, got {self.hours}")
        if not 0 <= self.hang_share <= 1:
            raise ValueError(f"--hang-share must be between 0 and 1, got {self.hang_share}")
        if not self.mttr_hours > 0:
            raise ValueError(f"--mttr-hours must be greater than 0, got {self.mttr_hours}")
        if self.mttr_hours > MAX_HOURS:
            raise ValueError(f"--mttr-hours must be at most {MAX_HOURS:g}, got {self.mttr_hours}")
        if self.prompt_tokens < 0 or self.completion_tokens < 0:
            raise ValueError("--prompt-tokens and --completion-tokens must be >= 0")
        if max(self.prompt_tokens, self.completion_tokens) > MAX_TOKENS:
            raise ValueError(f"--prompt-tokens and --completion-tokens must be at most "
                             f"{MAX_TOKENS:,} (the largest context window a config takes)")
        if self.refused_ms < 0 or self.skip_ms < 0:
            raise ValueError("--refused-ms and --skip-ms must be >= 0")
        if max(self.refused_ms, self.skip_ms) > MAX_HOP_MS:
            raise ValueError(f"--refused-ms and --skip-ms must be at most {MAX_HOP_MS:g} "
                             "(an hour)")
        # Past this a run takes minutes and its latency samples gigabytes: split it.
        if self.requests > MAX_REQUESTS:
            raise ValueError(f"--requests must be at most {MAX_REQUESTS:,}")
        if self.timeline and self.rps * self.timeline_seconds() > MAX_REQUESTS:
            raise ValueError(f"the timeline would simulate more than {MAX_REQUESTS:,} "
                             "requests (--rps × --hours); lower one of them")
        if self.timeline and self.timeline_seconds() > MAX_TIMELINE_S:
            given = "--hours" if self.hours is not None else "--requests / --rps"
            raise ValueError(f"the timeline would last {self.timeline_seconds() / 3600:.3g} "
                             f"hours ({given}); at most {MAX_TIMELINE_S / 3600:,.0f} (about a "
                             "century): " + ("lower --hours" if self.hours is not None
                                             else "raise --rps or give --hours"))


def _shown(value: object) -> str:  # str() of an int refuses past 4,300 digits
    if isinstance(value, int) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    return f"{value!r:.80}"


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past a float's range
        return False


def effective_breaker(config: Config, provider: str) -> BreakerConfig:
    """``routing.breaker`` with the fields the provider's own ``breaker`` sets on top."""
    return overlay(config.routing.breaker, config.providers[provider].breaker)


def hang_limit(config: Config, provider: str) -> float:
    """Seconds a hung hop here waits before the request's caps, as the router's attempt: the
    first-byte limit, else ``total``, of the provider's ``timeout`` over ``routing``'s."""
    p = config.providers[provider]
    t = overlay(config.routing.timeout, p.timeout)
    fb = first_byte_of(t, p.kind)
    return t.total if fb is None else min(fb, t.total)


def hang_waits(config: Config, provider: str, budget: float) -> tuple[float, float]:
    """(most a hung hop here waits while later candidates remain, as the last candidate)."""
    limit = hang_limit(config, provider)
    return (min(limit, config.routing.first_byte_share * budget), min(limit, budget))


@dataclass(frozen=True)
class ProviderFacts:
    """What the simulation assumes about one provider, for the report."""

    name: str
    kind: str
    unit: str
    availability: float  # its outage unit's
    mtbf_hours: float
    mttr_hours: float
    failure: str  # "refused" | "error" | "in-process"
    hang_limit_s: float  # before the request's caps (the core's input)
    hang_wait_s: float  # at most, at a request's start, while later candidates remain
    hang_wait_last_s: float  # at most, as the last candidate
    breaker: str  # "5 in a row or refused", "≥50% of ≥20 in 10 s", "off"
    open_s: tuple[float, float, float]  # initial, multiplier, max

    def as_dict(self) -> dict[str, Any]:
        never = math.isinf(self.mtbf_hours)  # availability 1: never down (JSON has no inf)
        return {**self.__dict__, "open_s": list(self.open_s),
                "mtbf_hours": None if never else self.mtbf_hours}


@dataclass
class EntryFigures:
    """One entry model's (or a tier's, or everything's) figures from one pass."""

    requests: int = 0
    answered: int = 0
    cost: float = 0.0
    refused_hops: int = 0
    hung_hops: int = 0
    skipped_hops: int = 0
    forced: int = 0
    zero_delay: int = 0
    delays: list[float] = field(default_factory=list)  # sorted, seconds, all > 0
    failure_times: list[float] = field(default_factory=list)
    answered_by: dict[str, int] = field(default_factory=dict)  # model → requests
    answered_via: dict[str, int] = field(default_factory=dict)  # provider → requests
    fell_back: int = 0  # answered by another model than the entry

    @property
    def failed(self) -> int:
        return self.requests - self.answered

    @property
    def availability(self) -> float:
        return self.answered / self.requests if self.requests else math.nan

    def interval(self) -> tuple[float, float]:
        """95% Wilson score interval of the availability (computed on the failures, which
        keeps its digits near 1)."""
        n = self.requests
        if n == 0:
            return (math.nan, math.nan)
        q = self.failed / n
        z2 = Z95 * Z95
        denom = 1 + z2 / n
        centre = (q + z2 / (2 * n)) / denom
        half = Z95 * math.sqrt(q * (1 - q) / n + z2 / (4 * n * n)) / denom
        return (1 - min(1.0, centre + half), 1 - max(0.0, centre - half))

    def quantile(self, q: float) -> float:
        """Added latency (seconds) at quantile ``q`` of answered requests (nearest rank)."""
        n = self.answered
        if n == 0:
            return math.nan
        i = max(0, math.ceil(q * n) - 1)
        return 0.0 if i < self.zero_delay else self.delays[i - self.zero_delay]

    def cost_per_1k(self) -> float:
        return 1000.0 * self.cost / self.requests if self.requests else math.nan

    def entropy_bits(self) -> float:
        """Entropy of the provider that answered, over answered requests."""
        total = sum(self.answered_via.values())
        h = -sum(n / total * math.log2(n / total) for n in self.answered_via.values() if n)
        return h + 0.0 if total else 0.0

    def merge(self, other: EntryFigures) -> None:
        for name in ("requests", "answered", "cost", "refused_hops", "hung_hops",
                     "skipped_hops", "forced", "zero_delay", "fell_back"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.delays = _merge_sorted(self.delays, other.delays)
        self.failure_times.extend(other.failure_times)
        for mine, theirs in ((self.answered_by, other.answered_by),
                             (self.answered_via, other.answered_via)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v

    def as_dict(self, *, analytic_unavailability: float | None = None) -> dict[str, Any]:
        if self.requests == 0:
            return {"requests": 0, "note": "no traffic reached this entry model"}
        low, high = self.interval()
        ms = {f"p{label}_ms": _ms(self.quantile(q))
              for label, q in (("50", 0.5), ("90", 0.9), ("99", 0.99), ("99.9", 0.999))}
        out: dict[str, Any] = {
            "requests": self.requests,
            "answered": self.answered,
            "failed": self.failed,
            **availability_figures(self.failed / self.requests),
            "ci95": [low, high],
            "added_latency": {
                **ms,
                "max_ms": 1000.0 * self.delays[-1] if self.delays else 0.0,
                "mean_ms": 1000.0 * sum(self.delays) / self.answered if self.answered else None,
                "failed_over": self.fell_back,
            },
            "cost_per_1k_requests_usd": self.cost_per_1k(),
            "answered_by": {m: n / self.requests for m, n in self.answered_by.items()},
            "answered_by_provider_entropy_bits": self.entropy_bits(),
            "hops": {"refused_or_error": self.refused_hops, "hung": self.hung_hops,
                     "skipped_open_breaker": self.skipped_hops,
                     "last_resort": self.forced},
            "median_time_to_failure_ms": (
                1000.0 * sorted(self.failure_times)[len(self.failure_times) // 2]
                if self.failure_times else None),
        }
        if analytic_unavailability is not None:
            out["analytic"] = availability_figures(analytic_unavailability)
            out["analytic_within_ci95"] = low <= 1 - analytic_unavailability <= high
        return out


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else 1000.0 * seconds


def _merge_sorted(a: list[float], b: list[float]) -> list[float]:
    if not a:
        return list(b)
    if not b:
        return list(a)
    return sorted(a + b)


@dataclass
class PassFigures:
    name: str  # "independent" | "timeline, breakers" | "timeline, no breakers"
    entries: dict[str, EntryFigures]
    tiers: dict[str, EntryFigures]
    overall: EntryFigures
    simulated_s: float | None = None  # timeline only

    def as_dict(self, analytic: Mapping[str, float] | None = None) -> dict[str, Any]:
        return {
            "pass": self.name,
            **({"simulated_hours": self.simulated_s / 3600.0}
               if self.simulated_s is not None else {}),
            "entries": {e: f.as_dict(analytic_unavailability=(analytic or {}).get(e))
                        for e, f in self.entries.items()},
            "tiers": {t: f.as_dict() for t, f in self.tiers.items()},
            "overall": self.overall.as_dict(),
        }


@dataclass
class SimResult:
    source: str
    options: SimOptions
    entries: list[str]
    weights: dict[str, float]
    tiers: dict[str, str | None]
    plans: dict[str, list[str]]
    analytic: dict[str, float]  # entry → unavailability, with correlation groups
    analytic_if_independent: dict[str, float] | None  # only when groups exist
    providers: list[ProviderFacts]
    units: OutageUnits
    budget_s: float
    independent: PassFigures
    with_breakers: PassFigures | None = None
    without_breakers: PassFigures | None = None
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        opts = {k: v for k, v in self.options.__dict__.items() if k not in ("entries", "groups")}
        return {
            "config": self.source,
            "options": {**opts, "timeline_hours": self.options.timeline_seconds() / 3600.0,
                        "groups": {k: list(v) for k, v in (self.options.groups or {}).items()}},
            "request_budget_s": self.budget_s,
            "entries": {
                e: {"tier": self.tiers[e], "weight": self.weights[e], "plan": self.plans[e],
                    "analytic": availability_figures(self.analytic[e]),
                    **({"analytic_if_independent": availability_figures(
                        self.analytic_if_independent[e])}
                       if self.analytic_if_independent is not None else {})}
                for e in self.entries
            },
            "providers": [p.as_dict() for p in self.providers],
            "outage_units": [{"name": n, "availability": a, "providers": m} for n, a, m
                             in zip(self.units.names, self.units.availability,
                                    self.units.members)],
            "independent": self.independent.as_dict(self.analytic),
            "timeline_with_breakers": (self.with_breakers.as_dict()
                                       if self.with_breakers else None),
            "timeline_without_breakers": (self.without_breakers.as_dict()
                                          if self.without_breakers else None),
            "elapsed_s": self.elapsed_s,
        }


# --- building the core's input -----------------------------------------------------------


class _Built:
    def __init__(self, config: Config, options: SimOptions) -> None:
        self.config = config
        graph = CompiledGraph.from_config(config)
        wanted = dict(options.entries) if options.entries else {
            e: 1.0 for e in (list(config.fallback_chains) or list(config.models))}
        for name, w in wanted.items():
            graph.plan(name)  # NoRouteError with did-you-mean for an unknown model
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"traffic weight of {name!r} must be >= 0, got {w}")
        if not sum(wanted.values()) > 0:
            raise ValueError("the traffic weights sum to zero")
        if not math.isfinite(sum(wanted.values())):
            raise ValueError("the traffic weights are too large to add up (their sum "
                             "overflows); use smaller numbers in the same proportions")
        self.entries = list(wanted)
        self.weights = wanted
        depth = config.routing.max_depth
        self.plans = {e: graph.plan(e, max_depth=depth, respect_availability=False)
                      for e in self.entries}
        self.units = outage_units(config, extra_groups=options.groups)
        self.providers = list(config.providers)
        self.models = list(config.models)
        r = config.routing
        self.budget = r.deadline if r.deadline is not None else r.timeout.total
        self.facts = [self._facts(p, options) for p in self.providers]
        avail = {p: config.providers[p].effective_availability for p in self.providers}
        unit_avail = dict(enumerate(self.units.availability))
        self.analytic: dict[str, float] = {}
        independent: dict[str, float] = {}
        for e, plan in self.plans.items():
            provs = [config.models[m].provider for m in plan]
            self.analytic[e] = chain_unavailability(
                (self.units.of_provider[p] for p in provs), unit_avail)
            independent[e] = 1.0 - chain_availability(provs, avail)
        grouped = len(self.units.names) < len(self.providers)
        self.analytic_if_independent = independent if grouped else None
        if options.timeline:
            self._check_outages(options)

    def _check_outages(self, options: SimOptions) -> None:
        span = options.timeline_seconds()
        for u, name in enumerate(self.units.names):
            up, down = self._unit_periods(u, options)
            if math.isinf(up):
                continue  # never down
            cycles = span / (up + down) if up + down > 0 else math.inf
            if cycles > MAX_OUTAGES:
                given = "--hours" if options.hours is not None else "--requests / --rps"
                label = name if name.startswith("group ") else f"provider {name!r}"
                raise ValueError(
                    f"{label} would go down about {cycles:.3g} times on the timeline "
                    f"(MTBF {format_duration(up)}, MTTR {format_duration(down)}, over "
                    f"{format_duration(span)} from {given}); at most {MAX_OUTAGES:,}: "
                    "shorten the timeline or lengthen mtbf_hours/mttr_hours (or --mttr-hours)")

    def _unit_periods(self, u: int, options: SimOptions) -> tuple[float, float]:
        """(mean up, mean down) seconds of unit ``u``: its least available member's."""
        members = self.units.members[u]
        worst = min(members, key=lambda p: self.config.providers[p].effective_availability)
        prov = self.config.providers[worst]
        a = prov.effective_availability
        if prov.mtbf_hours is not None and prov.mttr_hours is not None:
            return prov.mtbf_hours * 3600.0, prov.mttr_hours * 3600.0
        down = options.mttr_hours * 3600.0
        return (math.inf if a >= 1 else down * a / (1.0 - a)), down

    def _facts(self, name: str, options: SimOptions) -> ProviderFacts:
        prov = self.config.providers[name]
        u = self.units.of_provider[name]
        up, down = self._unit_periods(u, options)
        b = effective_breaker(self.config, name)
        rate = b.mode == "rate" or (b.mode == "auto" and prov.kind in C.CLOUD_KINDS)
        if not b.enabled:
            desc = "off"
        elif rate:
            desc = f"≥{b.failure_rate:.0%} of ≥{b.window_min_calls} in {b.window:g} s"
        else:
            desc = f"{b.failure_threshold} in a row"
            if b.trip_on_refused and self._local_http(prov.kind):
                desc += " or refused"
        failure = ("in-process" if prov.kind in C.IN_PROCESS_KINDS
                   else "error" if prov.kind in C.CLOUD_KINDS else "refused")
        wait, wait_last = hang_waits(self.config, name, self.budget)
        return ProviderFacts(
            name=name, kind=prov.kind, unit=self.units.names[u],
            availability=self.units.availability[u], mtbf_hours=up / 3600.0,
            mttr_hours=down / 3600.0, failure=failure, hang_limit_s=hang_limit(self.config, name),
            hang_wait_s=wait, hang_wait_last_s=wait_last, breaker=desc,
            open_s=(b.open_initial, b.open_multiplier, b.open_max))

    @staticmethod
    def _local_http(kind: str) -> bool:
        return kind in C.HTTP_KINDS and kind not in C.CLOUD_KINDS

    def core_kwargs(self, options: SimOptions) -> dict[str, Any]:
        config = self.config
        index = {p: i for i, p in enumerate(self.providers)}
        model_index = {m: i for i, m in enumerate(self.models)}
        periods = [self._unit_periods(u, options) for u in range(len(self.units.names))]
        breakers = []
        for name in self.providers:
            kind = config.providers[name].kind
            b = effective_breaker(config, name)
            rate = b.mode == "rate" or (b.mode == "auto" and kind in C.CLOUD_KINDS)
            breakers.append((b.enabled, rate, b.failure_threshold,
                             b.trip_on_refused and self._local_http(kind), b.window,
                             b.window_min_calls, b.failure_rate, b.open_initial,
                             b.open_multiplier, b.open_max, b.half_open_probes))
        cost = []
        for m in self.models:
            price = config.models[m].price
            cost.append(price.input_per_1k * options.prompt_tokens / 1000.0
                        + price.output_per_1k * options.completion_tokens / 1000.0)
        return {
            "unit_availability": list(self.units.availability),
            "unit_mean_up": [up for up, _ in periods],
            "unit_mean_down": [down for _, down in periods],
            "provider_unit": [self.units.of_provider[p] for p in self.providers],
            "provider_fail_kind": [_FAIL_KIND[f.failure] for f in self.facts],
            "provider_hang_limit": [f.hang_limit_s for f in self.facts],
            "provider_breaker": breakers,
            "model_provider": [index[config.models[m].provider] for m in self.models],
            "model_cost": cost,
            "plans": [[model_index[m] for m in self.plans[e]] for e in self.entries],
            "entry_weight": [float(self.weights[e]) for e in self.entries],
            "budget": self.budget,
            "first_byte_share": config.routing.first_byte_share,
            "refused_cost": options.refused_ms / 1000.0,
            "skip_cost": options.skip_ms / 1000.0,
            "hang_share": options.hang_share,
            "seed": options.seed,
        }

    def figures(self, name: str, raw: list[tuple[Any, ...]],
                simulated_s: float | None = None) -> PassFigures:
        entries: dict[str, EntryFigures] = {}
        for e, row in zip(self.entries, raw):
            (requests, answered, at, cost, refused, hung, skipped, forced, zero, delays,
             failures) = row
            f = EntryFigures(requests, answered, cost, refused, hung, skipped, forced, zero,
                             sorted(delays), list(failures))
            for k, n in enumerate(at):
                if n:
                    model = self.plans[e][k]
                    f.answered_by[model] = f.answered_by.get(model, 0) + n
                    prov = self.config.models[model].provider
                    f.answered_via[prov] = f.answered_via.get(prov, 0) + n
                    if k:
                        f.fell_back += n
            entries[e] = f
        tiers: dict[str, EntryFigures] = {}
        overall = EntryFigures()
        for e, f in entries.items():
            tiers.setdefault(tier_of(self.config, e) or "(no tier)", EntryFigures()).merge(f)
            overall.merge(f)
        return PassFigures(name, entries, tiers, overall, simulated_s)


# --- running -------------------------------------------------------------------------------


def simulate(config: Config, options: SimOptions | None = None, *, source: str = "<config>",
             progress: Progress | None = None) -> SimResult:
    """Run the independent pass and (unless ``options.timeline`` is off) the timeline with
    and without breakers. ``progress`` gets the fraction done now and then."""
    from ._plan import Simulation

    options = options or SimOptions()
    options.check()
    t0 = time.perf_counter()
    built = _Built(config, options)
    kwargs = built.core_kwargs(options)
    span = options.timeline_seconds()
    expected_timeline = options.rps * span if options.timeline else 0.0
    total = options.requests + 2 * expected_timeline
    done = 0.0

    def tick(amount: float) -> None:
        nonlocal done
        done += amount
        if progress is not None:
            progress(min(1.0, done / total))

    sim = Simulation(**kwargs, timeline=False, breakers=False, rps=options.rps)
    left = options.requests
    while left > 0:
        n = min(_CHUNK_REQUESTS, left)
        sim.run_requests(n)
        left -= n
        tick(n)
    independent = built.figures("independent", sim.stats())

    passes: list[PassFigures] = []
    if options.timeline:
        steps = max(1, math.ceil(expected_timeline / _CHUNK_REQUESTS))
        for breakers in (True, False):
            tsim = Simulation(**kwargs, timeline=True, breakers=breakers,
                                    rps=options.rps)
            for i in range(1, steps + 1):
                tsim.run_until(span * i / steps)
                tick(expected_timeline / steps)
            tsim.finish()
            passes.append(built.figures(
                "timeline, breakers" if breakers else "timeline, no breakers",
                tsim.stats(), span))
    if progress is not None:
        progress(1.0)
    return SimResult(
        source=source, options=options, entries=built.entries, weights=built.weights,
        tiers={e: tier_of(config, e) for e in built.entries}, plans=built.plans,
        analytic=built.analytic, analytic_if_independent=built.analytic_if_independent,
        providers=built.facts, units=built.units, budget_s=built.budget,
        independent=independent, with_breakers=passes[0] if passes else None,
        without_breakers=passes[1] if passes else None,
        elapsed_s=time.perf_counter() - t0,
    )


def ccdf_points(f: EntryFigures, *, points: int = 200) -> list[tuple[float, float]]:
    """(added seconds x, share of answered requests slower than x), for plots: log-spaced
    over the delays that occurred."""
    if not f.delays or f.answered == 0:
        return []
    lo, hi = f.delays[0], f.delays[-1]
    out = []
    for i in range(points + 1):
        x = lo * (hi / lo) ** (i / points) if hi > lo else lo
        slower = len(f.delays) - bisect.bisect_right(f.delays, x)
        out.append((x, slower / f.answered))
    return out
