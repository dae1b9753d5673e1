"""A config's fallback chains as text a README or Graphviz draws: ``routekit graph``.

Owns rendering only: Mermaid (``flowchart LR``) and Graphviz DOT. Providers are clusters
(in-process ones shaded), models are nodes, chain links are edges labelled with their
position in the chain, terminals (models with no fallback) have a double border, and edges
on a cycle are red. Reads the compiled graph; writes nothing.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Literal

from . import _constants as C
from ._config.model import Config
from ._plan import CompiledGraph

__all__ = ["render_graph"]

Format = Literal["mermaid", "dot"]
_RED = "#dd2222"
_IN_PROCESS_FILL = "#e8f5e9"


class _Layout:
    """Nodes, clusters and edges to draw, shared by both formats."""

    def __init__(self, config: Config, model: str | None) -> None:
        graph = CompiledGraph.from_config(config)
        if model is not None:
            graph.plan(model)  # NoRouteError with did-you-mean when unknown
        self.models = self._reachable(config, model) if model else list(config.models)
        shown = set(self.models)
        self.ids = {m: f"m{i}" for i, m in enumerate(self.models)}
        self.edges: list[tuple[str, str, int]] = []
        seen: set[tuple[str, str]] = set()
        for m in self.models:
            for pos, target in enumerate(config.chain_of(m), 1):
                if target in shown and (m, target) not in seen:
                    seen.add((m, target))
                    self.edges.append((m, target, pos))
        self.on_cycle: set[tuple[str, str]] = set()
        for cycle in graph.cycles(limit=1000):
            self.on_cycle.update(zip(cycle, cycle[1:]))
        self.terminals = {m for m in self.models if not config.chain_of(m)}
        self.clusters: dict[str, list[str]] = {}
        for m in self.models:
            self.clusters.setdefault(config.models[m].provider, []).append(m)
        self.kind = {p: config.providers[p].kind for p in self.clusters}
        self.tier = {m: config.fallback_chains[m].tier if m in config.fallback_chains else None
                     for m in self.models}

    @staticmethod
    def _reachable(config: Config, start: str) -> list[str]:
        seen = {start}
        queue = deque([start])
        while queue:
            for nxt in config.chain_of(queue.popleft()):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append(nxt)
        return [m for m in config.models if m in seen]


def render_graph(config: Config, *, fmt: Format = "mermaid", model: str | None = None) -> str:
    """The chains of ``config`` (or only what ``model`` can reach) as Mermaid or DOT."""
    layout = _Layout(config, model)
    return _mermaid(layout) if fmt == "mermaid" else _dot(layout)


def _mermaid_text(text: str) -> str:
    # Inside "..." Mermaid reads entity codes; a raw quote would end the label.
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(
        ">", "#gt;")


def _label(layout: _Layout, m: str, *, newline: str, escape: Callable[[str], str]) -> str:
    tier = layout.tier[m]
    return escape(m) if tier is None else f"{escape(m)}{newline}{escape(f'tier: {tier}')}"


def _mermaid(layout: _Layout) -> str:
    lines = ["flowchart LR",
             "  %% routekit graph: providers are boxes around their models; a double border"
             " marks a terminal (no fallback); red links are on a cycle; numbers are chain"
             " positions"]
    for i, (provider, members) in enumerate(layout.clusters.items()):
        title = _mermaid_text(f"{provider} ({layout.kind[provider]})")
        lines.append(f'  subgraph p{i}["{title}"]')
        for m in members:
            text = _label(layout, m, newline="<br/>", escape=_mermaid_text)
            shape = f'[["{text}"]]' if m in layout.terminals else f'["{text}"]'
            lines.append(f"    {layout.ids[m]}{shape}")
        lines.append("  end")
        if layout.kind[provider] in C.IN_PROCESS_KINDS:
            lines.append(f"  style p{i} fill:{_IN_PROCESS_FILL}")
    red: list[str] = []
    for n, (src, dst, pos) in enumerate(layout.edges):
        lines.append(f"  {layout.ids[src]} -->|{pos}| {layout.ids[dst]}")
        if (src, dst) in layout.on_cycle:
            red.append(str(n))
    terminals = [layout.ids[m] for m in layout.models if m in layout.terminals]
    if terminals:
        lines.append("  classDef terminal stroke-width:3px")
        lines.append(f"  class {','.join(terminals)} terminal")
    if red:
        lines.append(f"  linkStyle {','.join(red)} stroke:{_RED},stroke-width:3px,color:{_RED}")
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _dot(layout: _Layout) -> str:
    lines = [
        "// routekit graph: clusters are providers; a double border marks a terminal (no",
        "// fallback); red edges are on a cycle; edge labels are chain positions.",
        "digraph routekit {",
        '  rankdir=LR; fontname="Helvetica";',
        '  node [shape=box, style="rounded,filled", fillcolor=white, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for i, (provider, members) in enumerate(layout.clusters.items()):
        fill = _IN_PROCESS_FILL if layout.kind[provider] in C.IN_PROCESS_KINDS else "#f6f6f6"
        lines.append(f"  subgraph cluster_{i} {{")
        lines.append(f'    label="{_dot_text(f"{provider} ({layout.kind[provider]})")}";')
        lines.append(f'    style="rounded,filled"; fillcolor="{fill}"; color="#999999";')
        for m in members:
            extra = ", peripheries=2, penwidth=2" if m in layout.terminals else ""
            text = _label(layout, m, newline="\\n", escape=_dot_text)
            lines.append(f'    {layout.ids[m]} [label="{text}"{extra}];')
        lines.append("  }")
    for src, dst, pos in layout.edges:
        style = f', color="{_RED}", fontcolor="{_RED}", penwidth=2.5' if (
            (src, dst) in layout.on_cycle) else ""
        lines.append(f'  {layout.ids[src]} -> {layout.ids[dst]} [label="{pos}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"
