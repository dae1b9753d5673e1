"""Static analysis of a config: the checks and figures behind ``routekit validate``.

Owns: cycle errors, topology warnings (single terminal provider, no in-process terminal,
single-provider chains, unbudgeted cloud fallbacks of local models) and figures (terminals,
longest path, provider diversity per chain position, terminal entropy, analytic availability
with correlated per-provider failure). Reads the compiled graph; changes nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import _constants as C
from ._config.model import Config
from ._plan import CompiledGraph

__all__ = ["Analysis", "Finding", "analyze", "chain_availability"]


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

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def as_dict(self) -> dict[str, Any]:
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
            },
        }


def chain_availability(providers: list[str], availability: dict[str, float]) -> float:
    """Availability of a plan when every model of a provider fails together (correlated
    failure) and providers fail independently: 1 − Π over *distinct* providers of (1 − a)."""
    unavailable = 1.0
    for p in set(providers):
        unavailable *= 1.0 - availability[p]
    return 1.0 - unavailable


def _entropy_bits(counts: Counter[str]) -> float:
    total = sum(counts.values())
    if total == 0:
        return 0.0
    h = -sum((n / total) * math.log2(n / total) for n in counts.values() if n)
    return h + 0.0  # normalise -0.0


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

    kind_of = {name: p.kind for name, p in config.providers.items()}
    avail = {name: p.effective_availability for name, p in config.providers.items()}
    provider_of = {name: m.provider for name, m in config.models.items()}

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
        out.availability[entry] = chain_availability(provs, avail)
    out.diversity = [len(s) for s in positions]
    out.entropy_bits = _entropy_bits(terminal_counts)

    _topology_warnings(config, out, kind_of, provider_of, terminal_counts)

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
    unbudgeted: dict[str, list[str]] = {}
    for entry, plan in out.plans.items():
        if kind_of[provider_of[entry]] in C.CLOUD_KINDS:
            continue
        for m in plan[1:]:
            kind = kind_of[provider_of[m]]
            if kind in C.IN_PROCESS_KINDS:
                break  # an in-process model answers first: cloud is reached only if it fails
            if kind in C.CLOUD_KINDS:
                unbudgeted.setdefault(m, []).append(entry)
    for cloud, entries in unbudgeted.items():
        add(
            Finding(
                "warning",
                "unbudgeted-cloud-fallback",
                f"cloud model '{cloud}' is a fallback of local model(s) {_short_list(entries)} "
                "with no spending cap: an outage or a cost attack turns local traffic into paid "
                "traffic; put an in-process model before it in those chains (per-model budgets "
                "are not supported yet)",
            )
        )


def _short_list(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
