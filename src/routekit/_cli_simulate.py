"""The ``routekit simulate`` command: its arguments, options into ``SimOptions``, the
progress bar, and which report to print. The model lives in ``_simulate``, the tables and
the figure in ``_simulate_report``; ``cli`` only registers and dispatches."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

from rich.console import Console

__all__ = ["add_simulate_parser", "run_simulate"]

_SIMULATE_HELP = """\
Monte Carlo of provider outages over the config's fallback plans.

Two passes, both seeded and deterministic:
  independent draws  --requests requests, each meeting a fresh draw of every provider
                     (up with its availability); availability per entry model converges on
                     validate's analytic figure, shown with a 95% interval.
  timeline           --hours of simulated time (default: requests / rps), Poisson arrivals
                     at --rps, each provider down for exponential periods (mean MTTR, from
                     mttr_hours or --mttr-hours) between exponential up periods (mean MTBF),
                     run twice on the same outages: with the config's breakers, and without.

Providers in one correlation_group (or --group) go down together, as one unit at its
least available member's availability. A down provider hangs in --hang-share of its
outages and fails fast otherwise. Hop costs come from the config: a fast failure costs
--refused-ms; a hung hop waits as the router's attempt does: timeout.first_byte (the
provider's timeout fields over routing.timeout; kind default when unset), or timeout.total
when there is no first-byte limit, at most routing.first_byte_share of the remaining
budget while later candidates remain and the rest of the budget for the last candidate;
a hop skipped by an open breaker costs --skip-ms. Cost per 1,000 requests uses
models' price with --prompt-tokens / --completion-tokens. Per-model breakers and retries
are not simulated (see routekit/_simulate.py)."""


def add_simulate_parser(sub: Any, *, positive_int: Callable[[str], int],
                        plot_path: Callable[[str], str]) -> None:
    s = sub.add_parser("simulate", help="Monte Carlo of outages: availability, failover "
                       "latency, cost, who answered", description=_SIMULATE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("config")
    s.add_argument("--compare", metavar="OTHER_CONFIG", help="simulate a second layout and "
                   "show both side by side")
    s.add_argument("--requests", type=positive_int, default=1_000_000,
                   help="independent requests (default 1,000,000)")
    s.add_argument("--hours", type=float, help="simulated hours on the timeline")
    s.add_argument("--rps", type=float, default=5.0, help="timeline arrivals per second (5)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--hang-share", type=float, default=0.25,
                   help="share of outages that hang instead of failing fast (0.25)")
    s.add_argument("--mttr-hours", type=float, default=0.5, help="mean repair time of "
                   "providers that give only an availability (0.5)")
    s.add_argument("--prompt-tokens", type=int, default=500)
    s.add_argument("--completion-tokens", type=int, default=200)
    s.add_argument("--refused-ms", type=float, default=0.64)
    s.add_argument("--skip-ms", type=float, default=0.02)
    s.add_argument("--entry", action="append", default=[], metavar="MODEL[=WEIGHT]",
                   help="entry model and traffic weight (repeat; default: every chain, "
                   "equal weights)")
    s.add_argument("--group", action="append", default=[], metavar="NAME=P1,P2",
                   help="what if these providers went down together (repeat)")
    s.add_argument("--no-timeline", action="store_true", help="independent draws only")
    s.add_argument("--json", action="store_true", help="everything, machine-readable")
    s.add_argument("--plot", metavar="OUT.png", type=plot_path, help="availability and "
                   "latency CDF figure, .png, .svg or .pdf (needs routekit[plot])")



def run_simulate(args: argparse.Namespace, out: Console, err: Console) -> int:
    from ._config.loader import load_config
    from ._simulate import SimOptions, simulate
    from ._simulate_report import plot, print_comparison, print_result
    from .cli import EXIT_FAIL, EXIT_OK, _say, _usage

    if args.compare == "":  # an unset shell variable, as an empty config path
        return _usage(args, err, "the --compare path is empty: give a second config, or "
                      "leave --compare out")
    if args.plot:  # before minutes of simulation, not after
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _say(err, "error:", "bold red", "--plot needs matplotlib: pip install "
                 "'routekit[plot]'")
            return EXIT_FAIL
    try:
        entries = dict(_entry_weight(e) for e in args.entry) or None
        groups = dict(_group(g) for g in args.group) or None
    except ValueError as exc:
        return _usage(args, err, str(exc))
    paths = [args.config] + ([args.compare] if args.compare is not None else [])
    configs = [load_config(path) for path in paths]
    if groups:
        # With --compare a member may exist in one layout only; in neither is a typo.
        for name, members in groups.items():
            unknown = [m for m in members if not any(m in c.providers for c in configs)]
            if unknown:
                return _usage(args, err, f"--group {name}: no provider "
                              + ", ".join(repr(m) for m in unknown) + " in "
                              + " or ".join(paths))
    if entries is None and len(configs) == 2:
        # Side by side means the same traffic: the entry models both layouts declare.
        common = [e for e in _chain_keys(configs[0]) if e in set(_chain_keys(configs[1]))]
        entries = dict.fromkeys(common, 1.0) or None
    results = []
    with _sim_progress(err, quiet=args.json) as progress:
        for path, config in zip(paths, configs):
            try:
                options = SimOptions(
                    requests=args.requests, hours=args.hours, rps=args.rps, seed=args.seed,
                    hang_share=args.hang_share, prompt_tokens=args.prompt_tokens,
                    completion_tokens=args.completion_tokens, mttr_hours=args.mttr_hours,
                    refused_ms=args.refused_ms, skip_ms=args.skip_ms, entries=entries,
                    groups={k: kept for k, v in (groups or {}).items()
                            if (kept := [p for p in v if p in config.providers])} or None,
                    timeline=not args.no_timeline)
                results.append(simulate(config, options, source=path, progress=progress))
            except ValueError as exc:
                return _usage(args, err, str(exc))
    if args.json:
        data = [r.as_dict() for r in results]
        print(json.dumps(data[0] if len(data) == 1 else {"layouts": data}, indent=2,
                         ensure_ascii=False, allow_nan=False))
    elif len(results) == 1:
        print_result(results[0], out)
    else:
        print_comparison(results, out)
    if args.plot:  # after the figures are out: a figure that cannot be written loses none
        try:
            plot(results, args.plot)
        except (RuntimeError, OSError, ValueError) as exc:
            _say(err, "error:", "bold red", f"--plot {args.plot}: {exc}")
            return EXIT_FAIL
        if not args.json:
            out.print(f"plot written to {args.plot}", markup=False, highlight=False,
                      soft_wrap=True)
    return EXIT_OK


def _chain_keys(config: Any) -> list[str]:
    return list(config.fallback_chains) or list(config.models)


def _entry_weight(text: str) -> tuple[str, float]:
    name, sep, weight = text.rpartition("=")
    if sep:
        try:
            return name, float(weight)
        except ValueError:
            pass
    return text, 1.0


def _group(text: str) -> tuple[str, list[str]]:
    name, sep, members = text.partition("=")
    providers = [m.strip() for m in members.split(",") if m.strip()]
    if not sep or not name or not providers:
        raise ValueError(f"--group takes NAME=PROVIDER,PROVIDER, got {text!r}")
    return name, providers


class _sim_progress:
    """A rich progress bar for long simulations: it appears only after half a second."""

    def __init__(self, console: Console, *, quiet: bool) -> None:
        self._console = console
        self._quiet = quiet
        self._bar: Any = None
        self._task: Any = None
        self._start = time.perf_counter()

    def __enter__(self) -> Any:
        return None if self._quiet else self

    def __call__(self, fraction: float) -> None:
        if self._bar is None:
            if time.perf_counter() - self._start < 0.5 or fraction >= 1.0:
                return
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("simulating"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                 console=self._console, transient=True)
            self._bar.start()
            self._task = self._bar.add_task("simulating", total=1.0)
        self._bar.update(self._task, completed=fraction)

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()
