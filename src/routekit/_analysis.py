"""Static analysis of a config: the checks and figures behind ``routekit validate``.

Owns: cycle errors, topology warnings (single terminal provider, no in-process terminal,
single-provider chains, local-tier traffic that can reach a cloud model before an in-process
one) and figures (terminals, longest path, provider diversity per chain position, terminal
entropy, each entry's tier, analytic availability with correlated failure), plus the outage
units and the availability formatting that ``_simulate`` shares. Reads the compiled graph;
changes nothing.

Correlated failure: every model of a provider fails with its provider, and providers that
share a ``correlation_group`` go down together, so the group is one *outage unit*. A group's
availability is its least available member's: the members are down whenever the group is,
so the group is down at least as often as its worst member says (``validate`` notes it when
members disagree). Units fail independently of each other.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping, NamedTuple, Sequence

from . import _constants as C
from ._config.model import Config
from ._plan import CompiledGraph

__all__ = [
    "Analysis",
    "Finding",
    "OutageUnits",
    "analyze",
    "availability_figures",
    "availability_text",
    "chain_availability",
    "chain_unavailability",
    "format_duration",
    "nines",
    "outage_units",
    "tier_of",
]

SECONDS_PER_YEAR = 365.25 * 86400.0


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning" | "note"
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "code": self.code, "message": self.message}


@dataclass
class Analysis:
    findings: list[Finding] = field(default_factory=list)
    models: int = 0
    providers: int = 0
    edges: int = 0
    terminals: list[str] = field(default_factory=list)
    longest_path: list[str] = field(default_factory=list)
    cycles: list[list[str]] = field(default_factory=list)
    plans: dict[str, list[str]] = field(default_factory=dict)
    terminal_provider: dict[str, str] = field(default_factory=dict)
    diversity: list[int] = field(default_factory=list)
    entropy_bits: float = 0.0
    availability: dict[str, float] = field(default_factory=dict)
    # 1 − availability, computed as the product itself (1 − a loses digits past ~1e-16).
    unavailability: dict[str, float] = field(default_factory=dict)
    # Only when correlation groups exist: the figure if every provider failed on its own.
    availability_independent: dict[str, float] = field(default_factory=dict)
    tiers: dict[str, str | None] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def as_dict(self) -> dict[str, Any]:
        entries = {
            e: {
                "tier": self.tiers.get(e),
                "plan": plan,
                "ends_on": self.terminal_provider[e],
                **availability_figures(self.unavailability[e]),
                **({"availability_if_independent": self.availability_independent[e]}
                   if e in self.availability_independent else {}),
            }
            for e, plan in self.plans.items()
        }
        return {
            "ok": not self.errors,
            "errors": [f.as_dict() for f in self.errors],
            "warnings": [f.as_dict() for f in self.warnings],
            "notes": [f.as_dict() for f in self.findings if f.level == "note"],
            "figures": {
                "models": self.models,
                "providers": self.providers,
                "edges": self.edges,
                "terminals": self.terminals,
                "longest_path": self.longest_path,
                "longest_path_hops": max(0, len(self.longest_path) - 1),
                "cycles": [" → ".join(c) for c in self.cycles],
                "provider_diversity_by_position": self.diversity,
                "terminal_entropy_bits": self.entropy_bits,
                "terminal_provider": self.terminal_provider,
                "availability": self.availability,
                "plans": self.plans,
                "entries": entries,
            },
        }


# --- availability ----------------------------------------------------------------------------


def chain_unavailability(units: Iterable[Hashable], availability: Mapping[Any, float]) -> float:
    """Π over *distinct* outage units of (1 − a): a plan fails only when every unit it
    touches is down."""
    down = 1.0
    for u in set(units):
        down *= 1.0 - availability[u]
    return down


def chain_availability(providers: list[str], availability: dict[str, float]) -> float:
    """Availability of a plan when every model of a provider fails together (correlated
    failure) and providers fail independently: 1 − Π over *distinct* providers of (1 − a)."""
    return 1.0 - chain_unavailability(providers, availability)


def nines(unavailability: float) -> float:
    """−log10(1 − a): 0.99 → 2, 0.9999995 → 6.3; ``inf`` when nothing can fail."""
    # + 0.0: an availability so small that 1 − a rounds to 1 has 0 nines, not -0.0.
    return math.inf if unavailability <= 0 else -math.log10(unavailability) + 0.0


def availability_text(unavailability: float) -> str:
    """The availability with enough digits to show three significant digits of what is
    missing: 0.99, 0.9995, 0.9999995, 0.999999975 (never a rounded ``1``)."""
    if unavailability <= 0:
        return "1"
    if unavailability >= 1:
        return "0"
    digits = min(17, max(2, math.ceil(-math.log10(unavailability)) + 2))
    text = f"{1.0 - unavailability:.{digits}f}".rstrip("0").rstrip(".")
    return text if text != "1" else f"1 - {unavailability:.2g}"


def format_duration(seconds: float) -> str:
    """A short human duration: ``16 s``, ``4.4 min``, ``87.7 h``, ``18.3 d``."""
    if seconds == 0:
        return "0 s"
    if seconds < 0.1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} d"


def availability_figures(unavailability: float) -> dict[str, Any]:
    """The figures ``validate`` and ``simulate`` print and put in their JSON."""
    n = nines(unavailability)
    return {
        "availability": 1.0 - unavailability,
        "availability_text": availability_text(unavailability),
        "unavailability": unavailability,
        "nines": None if math.isinf(n) else round(n, 2),
        "downtime_per_year_s": unavailability * SECONDS_PER_YEAR,
    }


class OutageUnits(NamedTuple):
    """Providers grouped into units that go down together (see the module docstring)."""

    names: list[str]  # a provider's name, or "group <name>" for a correlation group
    availability: list[float]
    members: list[list[str]]  # providers per unit, in config order
    of_provider: dict[str, int]

    def unit_name(self, provider: str) -> str:
        return self.names[self.of_provider[provider]]


def outage_units(
    config: Config, *, extra_groups: Mapping[str, Sequence[str]] | None = None
) -> OutageUnits:
    """Outage units of a config: its ``correlation_group``s, plus ``extra_groups`` (group
    name → providers, for what-if runs); groups that share a provider merge into one."""
    parent = {p: p for p in config.providers}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    label: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for name, prov in config.providers.items():
        if prov.correlation_group is not None:
            groups.setdefault(prov.correlation_group, []).append(name)
    for group, provs in (extra_groups or {}).items():
        listed = groups.setdefault(group, [])
        listed.extend(p for p in dict.fromkeys(provs) if p not in listed)
    groups = {g: provs for g, provs in groups.items() if provs}
    for group, provs in groups.items():
        for p in provs:
            if p not in parent:
                raise ValueError(f"correlation group {group!r}: unknown provider {p!r}")
        root = find(provs[0])
        for p in provs[1:]:
            parent[find(p)] = root
    for group, provs in groups.items():
        label.setdefault(find(provs[0]), group)  # merged groups take the first one's name
    roots = {name: find(name) for name in config.providers}
    size = Counter(roots.values())
    names: list[str] = []
    avail: list[float] = []
    members: list[list[str]] = []
    of_provider: dict[str, int] = {}
    index: dict[str, int] = {}
    for name, prov in config.providers.items():
        root = roots[name]
        if root not in index:
            index[root] = len(names)
            grouped = size[root] > 1 or prov.correlation_group is not None
            names.append(f"group {label.get(root, name)}" if grouped else name)
            avail.append(prov.effective_availability)
            members.append([])
        u = index[root]
        of_provider[name] = u
        members[u].append(name)
        avail[u] = min(avail[u], prov.effective_availability)
    return OutageUnits(names, avail, members, of_provider)


def tier_of(config: Config, model: str) -> str | None:
    entry = config.fallback_chains.get(model)
    return entry.tier if entry is not None else None


def _local_traffic(config: Config, entry: str) -> tuple[bool, str]:
    """Whether an entry's traffic is meant to stay off paid cloud models, and why: a tier
    starting with ``cloud`` says cloud traffic, any other tier says local; without a tier
    the entry model's own provider decides."""
    tier = tier_of(config, entry)
    if tier is not None:
        return not tier.startswith("cloud"), f"tier {tier}"
    kind = config.provider_of(entry).kind
    return kind not in C.CLOUD_KINDS, f"no tier, on {kind}"


def _entropy_bits(counts: Counter[str]) -> float:
    total = sum(counts.values())
    if total == 0:
        return 0.0
    h = -sum((n / total) * math.log2(n / total) for n in counts.values() if n)
    return h + 0.0  # normalise -0.0


# --- analysis --------------------------------------------------------------------------------


def analyze(config: Config, graph: CompiledGraph | None = None) -> Analysis:
    graph = graph or CompiledGraph.from_config(config)
    depth = config.routing.max_depth
    out = Analysis(models=len(config.models), providers=len(config.providers))
    out.edges = sum(len(c.chain) for c in config.fallback_chains.values())
    out.terminals = graph.terminals()
    out.longest_path = graph.longest_path()
    out.cycles = graph.cycles(limit=100)
    out.plans = graph.plans(max_depth=depth, respect_availability=False)

    for cycle in out.cycles:
        kind = "self-loop" if len(cycle) == 2 else "cycle"
        out.findings.append(
            Finding("error", "cycle", f"{kind}: {' → '.join(cycle)}")
        )
    if depth < len(config.models):  # deeper than the model count cuts nothing
        # One hop deeper shows whether the limit left anything out (as cheap as the plans).
        deeper = graph.plans(max_depth=depth + 1, respect_availability=False)
        cut = {e: [m for m in deeper[e] if m not in out.plans[e]] for e in out.plans}
        cut = {e: missing for e, missing in cut.items() if missing}
        if cut:
            first, missing = next(iter(cut.items()))
            out.findings.append(Finding(
                "warning", "max-depth-cuts-chains",
                f"routing.max_depth {depth} cuts {len(cut)} chain(s) short: '{first}' never "
                f"tries {_short_list(missing, 4)} (or what follows)"
                + (f"; also {_short_list(list(cut)[1:])}" if len(cut) > 1 else "")))

    kind_of = {name: p.kind for name, p in config.providers.items()}
    avail = {name: p.effective_availability for name, p in config.providers.items()}
    provider_of = {name: m.provider for name, m in config.models.items()}
    units = outage_units(config)
    unit_avail = dict(enumerate(units.availability))
    grouped = len(units.names) < len(config.providers)

    positions: list[set[str]] = []
    terminal_counts: Counter[str] = Counter()
    for entry, plan in out.plans.items():
        provs = [provider_of[m] for m in plan]
        for i, p in enumerate(provs):
            if i == len(positions):
                positions.append(set())
            positions[i].add(p)
        out.terminal_provider[entry] = provs[-1]
        terminal_counts[provs[-1]] += 1
        down = chain_unavailability((units.of_provider[p] for p in provs), unit_avail)
        out.unavailability[entry] = down
        out.availability[entry] = 1.0 - down
        if grouped:
            out.availability_independent[entry] = chain_availability(provs, avail)
        out.tiers[entry] = tier_of(config, entry)
    out.diversity = [len(s) for s in positions]
    out.entropy_bits = _entropy_bits(terminal_counts)

    _topology_warnings(config, out, kind_of, provider_of, terminal_counts)
    _group_notes(config, out, units)

    inferred = [name for name, m in config.models.items() if m.inferred]
    if inferred:
        out.findings.append(
            Finding(
                "note",
                "inferred",
                "legacy layout (no 'models' section): inferred "
                + ", ".join(f"{n} → {provider_of[n]} ({kind_of[provider_of[n]]})" for n in inferred),
            )
        )
    return out


def _group_notes(config: Config, out: Analysis, units: OutageUnits) -> None:
    for name, members, a in zip(units.names, units.members, units.availability):
        if len(members) < 2:
            continue
        own = [config.providers[p].effective_availability for p in members]
        detail = ", ".join(f"{p} {availability_text(1.0 - x)}" for p, x in zip(members, own))
        differ = " (its least available member's figure)" if len(set(own)) > 1 else ""
        out.findings.append(
            Finding(
                "note",
                "correlation-group",
                f"{name}: {detail} go down together; counted as one outage unit at "
                f"{availability_text(1.0 - a)}{differ}",
            )
        )


def _topology_warnings(
    config: Config,
    out: Analysis,
    kind_of: Mapping[str, str],
    provider_of: Mapping[str, str],
    terminal_counts: Counter[str],
) -> None:
    add = out.findings.append
    # An in-process terminal fails only with the application itself, so a single one is
    # the design goal rather than a single point of failure.
    only = next(iter(terminal_counts)) if len(terminal_counts) == 1 else None
    if only is not None and len(out.plans) > 1 and kind_of[only] not in C.IN_PROCESS_KINDS:
        add(
            Finding(
                "warning",
                "single-terminal-provider",
                f"every chain ends on provider '{only}' ({kind_of[only]}): one point of failure "
                "(terminal entropy 0 bits); end some chains on another provider",
            )
        )
    no_local = [
        e for e, plan in out.plans.items()
        if not any(kind_of[provider_of[m]] in C.IN_PROCESS_KINDS for m in plan)
    ]
    if no_local:
        scope = ("no chain can" if len(no_local) == len(out.plans)
                 else f"{len(no_local)} chain(s) cannot")
        add(
            Finding(
                "warning",
                "no-in-process-terminal",
                f"{scope} fall back to an in-process model (kind llama_cpp): "
                + _short_list(no_local),
            )
        )
    for entry, plan in out.plans.items():
        provs = {provider_of[m] for m in plan}
        if len(plan) > 1 and len(provs) == 1:
            add(
                Finding(
                    "warning",
                    "single-provider-chain",
                    f"chain of '{entry}' stays on provider '{next(iter(provs))}': its "
                    f"{len(plan)} candidates fail together",
                )
            )
    reached: dict[str, list[str]] = {}
    for entry, plan in out.plans.items():
        local, why = _local_traffic(config, entry)
        if not local or kind_of[provider_of[entry]] in C.CLOUD_KINDS:
            continue
        for m in plan[1:]:
            kind = kind_of[provider_of[m]]
            if kind in C.IN_PROCESS_KINDS:
                break  # an in-process model answers first: cloud is reached only if it fails
            if kind in C.CLOUD_KINDS:
                reached.setdefault(m, []).append(f"'{entry}' ({why})")
    for cloud, entries in reached.items():
        price = config.models[cloud].price
        paid = (f" at ${price.input_per_1k:g}/${price.output_per_1k:g} per 1k tokens in/out"
                if price.input_per_1k or price.output_per_1k else "")
        shown = ", ".join(entries[:6]) + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
        add(
            Finding(
                "warning",
                "local-tier-reaches-cloud",
                f"cloud model '{cloud}'{paid} answers local-tier traffic of {shown} before "
                "any in-process model: an outage or a cost attack turns local traffic into "
                "paid traffic; put an in-process model before it in those chains, or give "
                "chains meant for cloud a tier starting with 'cloud' (per-model budgets are "
                "not supported yet)",
            )
        )


def _short_list(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
