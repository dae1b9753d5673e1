"""How ``routekit simulate`` shows its results: rich tables, the side-by-side comparison of
two layouts, and the optional matplotlib figure.

Owns presentation only: every figure comes from ``_simulate`` (``SimResult``), nothing is
computed here beyond formatting. matplotlib is imported only by ``plot`` (``routekit[plot]``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._analysis import availability_text, format_duration, nines
from ._simulate import (EntryFigures, PassFigures, ProviderFacts, SimResult,
                        ccdf_points)

__all__ = ["plot", "print_comparison", "print_result"]


def _avail(f: EntryFigures) -> str:
    return "—" if f.requests == 0 else availability_text(f.failed / f.requests)


def _ci(f: EntryFigures) -> str:
    if f.requests == 0:
        return "—"
    low, high = f.interval()
    return f"{availability_text(1 - low)}–{availability_text(1 - high)}"


def _ms(seconds: float) -> str:
    return "—" if math.isnan(seconds) else "0" if seconds == 0 else format_duration(seconds)


def _usd(value: float) -> str:
    return "—" if math.isnan(value) else f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _nines(down: float) -> str:
    n = nines(down)
    return "∞" if math.isinf(n) else f"{n:.1f}"


def _table(title: str, columns: Sequence[str], *, numeric_from: int = 1,
           names: Sequence[str] = (), fold: Sequence[int] = ()) -> Table:
    """Text columns first (they fold; the first keeps room for ``names``), then figures,
    which never wrap: a figure cut in two is worse than a name folded. ``fold``: more
    columns that may fold."""
    table = Table(title=title, title_justify="left")
    cap = 24 if len(columns) < 5 else 18
    first = min(cap, max([len(n) for n in names] + [len(columns[0]), 8]))
    for i, col in enumerate(columns):
        if i < numeric_from or i in fold:
            table.add_column(col, overflow="fold", min_width=first if i == 0 else 6)
        else:
            table.add_column(col, justify="right", no_wrap=True)
    return table


def _shares(f: EntryFigures, limit: int = 3) -> str:
    if f.requests == 0:
        return "—"
    ranked = sorted(f.answered_by.items(), key=lambda kv: -kv[1])
    parts = [f"{m} {n / f.requests:.4%}".replace(".0000%", "%") for m, n in ranked[:limit]]
    if len(ranked) > limit:
        parts.append(f"+{len(ranked) - limit} more")
    if f.failed:
        parts.append(f"failed {f.failed / f.requests:.4%}")
    return ", ".join(parts)


def _header(result: SimResult, console: Console) -> None:
    o = result.options
    timeline = (f" + {o.timeline_seconds() / 3600:,.1f} h timeline at {o.rps:g} req/s, with "
                "and without breakers" if o.timeline else "")
    console.print(Text(f"routekit simulate {result.source}: {o.requests:,} independent "
                       f"requests{timeline} (seed {o.seed}) in {result.elapsed_s:.2f} s",
                       style="bold"), soft_wrap=True, highlight=False)
    console.print(Text(
        f"assumed: {o.hang_share:.0%} of outages hang (the rest fail fast, {o.refused_ms:g} ms); "
        f"a breaker skip costs {o.skip_ms:g} ms; request budget {result.budget_s:g} s; "
        f"providers with only an availability repair in {o.mttr_hours:g} h; "
        f"{o.prompt_tokens} prompt + {o.completion_tokens} completion tokens per request"),
        soft_wrap=True, highlight=False)


def _providers(result: SimResult, console: Console) -> None:
    grouped = result.analytic_if_independent is not None
    cols = ["provider"] + (["unit"] if grouped else []) + [
        "avail.", "MTBF / MTTR", "hung hop", "breaker"]
    table = _table("providers: what a failed hop costs (from the config)", cols,
                   numeric_from=len(cols) - 4, names=[p.name for p in result.providers],
                   fold=[len(cols) - 1])
    for p in result.providers:
        mtbf = "never down" if math.isinf(p.mtbf_hours) else (
            f"{format_duration(p.mtbf_hours * 3600)} / {format_duration(p.mttr_hours * 3600)}")
        hung = "never" if p.failure == "in-process" else _hung(p)
        row = [Text(p.name)] + ([Text(p.unit)] if grouped else [])
        table.add_row(*row, availability_text(1 - p.availability), mtbf, hung, p.breaker)
    console.print(table)


def _hung(p: ProviderFacts) -> str:
    """The most a hung hop waits: while later candidates remain (first_byte_share of the
    budget caps it) and, where that differs, as a plan's last candidate."""
    text = f"≤ {p.hang_wait_s:g} s"
    if f"{p.hang_wait_last_s:g}" != f"{p.hang_wait_s:g}":
        text += f", last {p.hang_wait_last_s:g} s"
    return text


def print_result(result: SimResult, console: Console) -> None:
    _header(result, console)
    _providers(result, console)
    ind = result.independent
    names = result.entries
    grouped = result.analytic_if_independent is not None
    cols = ["model", "analytic", "simulated", "95% CI", "ok"]
    table = _table(f"availability per entry model ({ind.overall.requests:,} independent "
                   "draws; ok: analytic inside the CI)", cols, names=names)
    for e in names:
        f = ind.entries[e]
        low, high = f.interval()
        down = result.analytic[e]
        row: list[Any] = [Text(e)]
        inside = f.requests > 0 and low <= 1 - down <= high
        row += [availability_text(down), _avail(f), _ci(f),
                Text("✓", "green") if inside else Text("✗", "red")]
        table.add_row(*row)
    console.print(table)

    table = _table("added latency from failovers, answered requests (independent draws)",
                   ["model", "p50", "p99", "p99.9", "max", "failed over"], names=names)
    for e in names:
        f = ind.entries[e]
        table.add_row(Text(e), _ms(f.quantile(0.5)), _ms(f.quantile(0.99)),
                      _ms(f.quantile(0.999)), _ms(f.delays[-1] if f.delays else 0.0),
                      f"{f.fell_back / f.requests:.3%}" if f.requests else "—")
    console.print(table)

    brk, nob = result.with_breakers, result.without_breakers
    if brk is not None and nob is not None:
        table = _table(f"timeline ({(brk.simulated_s or 0) / 3600:,.1f} h): added latency "
                       "p99.9 and availability, with / without breakers",
                       ["model", "p99.9 brk", "p99.9 none", "avail. brk", "avail. none"],
                       names=names)
        for e in names:
            a, b = brk.entries[e], nob.entries[e]
            table.add_row(Text(e), _ms(a.quantile(0.999)), _ms(b.quantile(0.999)), _avail(a),
                          _avail(b))
        console.print(table)

    table = _table("cost and who answered (independent draws)",
                   ["model", "answered by (share of requests)", "$ / 1k req", "entropy"],
                   numeric_from=2, names=names)
    for e in names:
        f = ind.entries[e]
        table.add_row(Text(e), Text(_shares(f)), _usd(f.cost_per_1k()),
                      f"{f.entropy_bits():.3f}")
    console.print(table)
    _tiers(result, console)
    if brk is not None and nob is not None:
        _timeline_summary(brk, nob, console)
    if grouped:
        _correlated([result], names, console)


def _tiers(result: SimResult, console: Console) -> None:
    ind = result.independent
    table = _table("per tier (independent draws)",
                   ["tier", "models", "traffic", "avail.", "p99.9", "$/1k req",
                    "by cloud"], names=list(ind.tiers))
    total = ind.overall.requests
    cloud = {p.name for p in result.providers if p.kind == "openai"}
    for tier, f in sorted(ind.tiers.items()):
        members = sum(1 for e in result.entries if (result.tiers[e] or "(no tier)") == tier)
        paid = sum(n for prov, n in f.answered_via.items() if prov in cloud)
        table.add_row(Text(tier), str(members), f"{f.requests / total:.1%}", _avail(f),
                      _ms(f.quantile(0.999)), _usd(f.cost_per_1k()),
                      f"{paid / f.requests:.2%}" if f.requests else "—")
    o = ind.overall
    paid = sum(n for prov, n in o.answered_via.items() if prov in cloud)
    table.add_row(Text("all", style="bold"), str(len(result.entries)), "100%", _avail(o),
                  _ms(o.quantile(0.999)), _usd(o.cost_per_1k()),
                  f"{paid / o.requests:.2%}" if o.requests else "—")
    console.print(table)


def _timeline_summary(brk: PassFigures, nob: PassFigures, console: Console) -> None:
    table = _table("timeline, all entry models", ["", "breakers", "no breakers"],
                   names=["hops skipped by an open breaker"])
    a, b = brk.overall, nob.overall
    rows = [
        ("requests", f"{a.requests:,}", f"{b.requests:,}"),
        ("availability", _avail(a), _avail(b)),
        ("added latency p99", _ms(a.quantile(0.99)), _ms(b.quantile(0.99))),
        ("added latency p99.9", _ms(a.quantile(0.999)), _ms(b.quantile(0.999))),
        ("hung hops waited out", f"{a.hung_hops:,}", f"{b.hung_hops:,}"),
        ("hops skipped by an open breaker", f"{a.skipped_hops:,}", "—"),
        ("time lost to failed hops", format_duration(sum(a.delays) + sum(a.failure_times)),
         format_duration(sum(b.delays) + sum(b.failure_times))),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_comparison(results: Sequence[SimResult], console: Console) -> None:
    a, b = results
    for r in results:
        _header(r, console)
    names = list(a.entries) + [e for e in b.entries if e not in a.entries]
    la, lb = "A", "B"
    console.print(Text(f"A = {a.source}\nB = {b.source}"), highlight=False)
    table = _table("availability per entry model, side by side",
                   ["model", f"{la} analytic", f"{la} simulated", f"{lb} analytic",
                    f"{lb} simulated"])
    for e in names:
        row: list[Any] = [Text(e)]
        for r in (a, b):
            if e in r.independent.entries:
                row += [availability_text(r.analytic[e]), _avail(r.independent.entries[e])]
            else:
                row += ["—", "—"]
        table.add_row(*row)
    console.print(table)

    table = _table("layouts, all entry models", ["", la, lb])

    def both(fn: Any) -> tuple[str, str]:
        return fn(a), fn(b)

    def weighted_analytic(r: SimResult) -> str:
        total = sum(r.weights.values())
        down = sum(r.weights[e] * r.analytic[e] for e in r.entries) / total
        return availability_text(down)

    def timeline(r: SimResult, breakers: bool, q: float) -> str:
        p = r.with_breakers if breakers else r.without_breakers
        return "—" if p is None else _ms(p.overall.quantile(q))

    rows: list[tuple[str, tuple[str, str]]] = [
        ("entry models", both(lambda r: str(len(r.entries)))),
        ("availability, analytic (traffic-weighted)", both(weighted_analytic)),
        ("availability, simulated", both(lambda r: _avail(r.independent.overall))),
        ("95% CI", both(lambda r: _ci(r.independent.overall))),
        ("answered after a failover", both(
            lambda r: f"{r.independent.overall.fell_back / r.independent.overall.requests:.3%}")),
        ("answering-provider entropy bits", both(
            lambda r: f"{r.independent.overall.entropy_bits():.3f}")),
        ("added latency p99 / p99.9", both(
            lambda r: f"{_ms(r.independent.overall.quantile(0.99))} / "
                      f"{_ms(r.independent.overall.quantile(0.999))}")),
        ("timeline p99.9, breakers", both(lambda r: timeline(r, True, 0.999))),
        ("timeline p99.9, no breakers", both(lambda r: timeline(r, False, 0.999))),
        ("$ / 1k requests", both(lambda r: _usd(r.independent.overall.cost_per_1k()))),
    ]
    tiers = sorted(set(a.independent.tiers) | set(b.independent.tiers))
    for tier in tiers:
        rows.append((f"tier {tier}: availability", both(
            lambda r, t=tier: _avail(r.independent.tiers[t]) if t in r.independent.tiers
            else "—")))
    for label, (x, y) in rows:
        table.add_row(Text(label), x, y)
    console.print(table)
    if any(r.analytic_if_independent is not None for r in results):
        _correlated(results, names, console)
    else:
        shared = [p.name for p in a.providers if p.failure != "in-process"
                  and any(q.name == p.name for q in b.providers)]
        hint = f" --group host={','.join(shared[:2])}" if len(shared) >= 2 else " --group ..."
        console.print(Text("no correlation_group in either layout: every provider fails on its "
                           f"own; add{hint} to see what a shared host does"),
                      soft_wrap=True, highlight=False)


def _correlated(results: Sequence[SimResult], names: Sequence[str], console: Console) -> None:
    """Analytic availability with every provider failing on its own, against the same with
    the correlation groups in effect."""
    cols = ["model"]
    for label in ("A", "B")[: len(results)]:
        cols += [f"{label} indep.", f"{label} correlated"]
    table = _table("correlated failure: analytic availability per entry model", cols,
                   names=names)
    for e in names:
        row: list[Any] = [Text(e)]
        for r in results:
            if e not in r.analytic:
                row += ["—", "—"]
                continue
            alone = r.analytic_if_independent or r.analytic
            row += [availability_text(alone[e]), availability_text(r.analytic[e])]
        table.add_row(*row)
    console.print(table)
    for label, r in zip("AB", results):
        together = [f"{n} ({', '.join(m)})" for n, m in zip(r.units.names, r.units.members)
                    if len(m) > 1]
        if together:
            console.print(Text(f"{label}: go down together: " + "; ".join(together)),
                          soft_wrap=True, highlight=False)


def plot(results: Sequence[SimResult], path: str) -> None:
    """Availability per entry model (nines) for each layout, and the tail of the added
    latency (timeline, with and without breakers), into one PNG/SVG/PDF at ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(
            "--plot needs matplotlib: pip install 'routekit[plot]'") from exc

    names: list[str] = []
    for r in results:
        names += [e for e in r.entries if e not in names]
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(13, max(4.0, 0.32 * len(names) + 1.5)),
        gridspec_kw={"width_ratios": [1.2, 1]})
    height = 0.8 / len(results)
    colours = ["tab:blue", "tab:orange"]
    for i, r in enumerate(results):
        ys = [j + (i - (len(results) - 1) / 2) * height for j in range(len(names))]
        analytic = [nines(r.analytic[e]) if e in r.analytic else 0.0 for e in names]
        shown = [min(x, 12.0) for x in analytic]
        ax1.barh(ys, shown, height=height * 0.9, color=colours[i % 2], alpha=0.45,
                 label=f"{r.source}: analytic")
        for y, e in zip(ys, names):
            f = r.independent.entries.get(e)
            if f is None or f.requests == 0:
                continue
            low, high = f.interval()
            lo_n = nines(1 - low)
            if f.failed:
                mid = nines(f.failed / f.requests)
                ax1.errorbar([mid], [y], xerr=[[mid - lo_n], [max(0.0, nines(1 - high) - mid)]],
                             fmt="o", color=colours[i % 2], markersize=3, capsize=2)
            else:  # no failures seen: the interval only bounds it from below
                ax1.plot([lo_n], [y], marker=">", color=colours[i % 2], markersize=4)
    ax1.set_yticks(range(len(names)))
    ax1.set_yticklabels(names, fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("availability, nines (−log10 of the failure share); "
                   "dots: simulated with 95% CI, ▶: no failure seen")
    ax1.set_title("availability per entry model")
    ax1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.09))
    ax1.grid(axis="x", alpha=0.3)

    drew = False
    for i, r in enumerate(results):
        for p, style in ((r.with_breakers, "-"), (r.without_breakers, "--")):
            if p is None:
                continue
            pts = ccdf_points(p.overall)
            if not pts:
                continue
            label = f"{r.source}: {'breakers' if style == '-' else 'no breakers'}"
            ax2.step([x * 1000 for x, _ in pts], [y for _, y in pts], where="post",
                     linestyle=style,
                     color=colours[i % 2], label=label)
            drew = True
    if drew:
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.legend(fontsize=7)
    else:
        ran = any(r.with_breakers is not None for r in results)
        ax2.text(0.5, 0.5, "no failovers on the timeline" if ran else
                 "no timeline simulated (--no-timeline)", ha="center", va="center",
                 transform=ax2.transAxes)
    ax2.set_xlabel("added latency x, ms (timeline)")
    ax2.set_ylabel("share of answered requests slower than x")
    ax2.set_title("latency CDF tail, with and without breakers")
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
