"""The ``routekit`` command: validate, chat, plan, health, simulate, graph, import.

The CLI prints; the library never does. Every routekit error becomes a short message and a
non-zero exit, never a traceback (``ROUTEKIT_DEBUG=1`` shows one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._exceptions import AllCandidatesFailed, ConfigError, RouteKitError

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _positive_int(text: str) -> int:
    # llama.cpp reads max_tokens <= 0 as "until the context is full"; the openai API
    # rejects it. Refuse it here rather than let it mean either.
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    """A probe timeout: a finite number of seconds above 0 (0, -1, nan and inf would fail
    every probe or never end one)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (0 < value <= 3600):  # also false for nan
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 3600 seconds, "
                                         f"got {text}")
    return value


def _settle(text: str) -> float:
    """Seconds of quiet: finite, 0 to 60 (time.sleep refuses nan and negatives only after
    the model has loaded; a huge value would look like a hang)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (0 <= value <= 60):  # also false for nan
        raise argparse.ArgumentTypeError(f"must be 0 to 60 seconds, got {text}")
    return value


_PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _plot_path(text: str) -> str:
    """Where a figure goes, checked before any work: a file name ending in .png, .svg or
    .pdf (matplotlib would add .png to a bare name and write somewhere else than said) in
    a folder that exists."""
    from pathlib import Path

    path = Path(text)
    if path.suffix.lower() not in _PLOT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"needs a file name ending in .png, .svg or .pdf, "
                                         f"got {text!r}")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {str(path.parent)!r}")
    return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="routekit", description="Route LLM requests through "
                                "fallback chains that end inside your own process.")
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("validate", help="check a config: cycles, terminals, availability")
    v.add_argument("config")
    v.add_argument("--json", action="store_true", help="machine-readable output")
    v.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")

    c = sub.add_parser("chat", help="send one prompt through a fallback chain")
    c.add_argument("prompt")
    c.add_argument("--config", help="config file (default: $ROUTEKIT_CONFIG or built-in)")
    c.add_argument("--model", help="entry model (default: routing.default_model)")
    c.add_argument("--stream", action="store_true")
    c.add_argument("--json", action="store_true")
    c.add_argument("--max-tokens", type=_positive_int, default=64)
    c.add_argument("--temperature", type=float, default=None)
    c.add_argument("--system", help="system message")

    pl = sub.add_parser("plan", help="print the candidates a model would try, in order")
    pl.add_argument("model", nargs="?")
    pl.add_argument("--config")
    pl.add_argument("--json", action="store_true")

    h = sub.add_parser("health", help="probe every provider of a config")
    h.add_argument("--config")
    h.add_argument("--timeout", type=_seconds, default=1.0,
                   help="seconds each probe may take (1)")
    h.add_argument("--json", action="store_true")
    from ._cli_bench import add_bench_parser
    from ._cli_simulate import add_simulate_parser

    add_simulate_parser(sub, positive_int=_positive_int, plot_path=_plot_path)

    add_bench_parser(sub, positive_int=_positive_int, plot_path=_plot_path, settle=_settle)

    g = sub.add_parser("graph", help="the chains as a Mermaid or Graphviz graph",
                       description="Print a config's fallback chains as text to paste into a "
                       "README (Mermaid) or render with Graphviz (dot -Tsvg): providers are "
                       "clusters, terminals have a double border, cycles are red, edge "
                       "labels are chain positions.")
    g.add_argument("config")
    g.add_argument("--format", choices=("mermaid", "dot"), default="mermaid")
    g.add_argument("--model", help="only what this entry model can reach")

    imp = sub.add_parser("import", help="turn another router's config into routekit YAML")
    kinds = imp.add_subparsers(dest="source", required=True)
    lite = kinds.add_parser("litellm", help="a LiteLLM proxy or Router config",
                            description="Import a LiteLLM proxy/Router config (model_list, "
                            "router_settings, litellm_settings): deployments become providers "
                            "and models, fallbacks become chains, api_key: os.environ/NAME "
                            "becomes api_key_env. Whatever cannot be mapped is written as a "
                            "comment saying why. Secrets are never copied.")
    lite.add_argument("config", help="the LiteLLM config.yaml")
    lite.add_argument("-o", "--output", help="write here instead of stdout")
    lite.add_argument("--force", action="store_true", help="overwrite --output")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console()
    err = Console(stderr=True)
    try:
        return _run(args, out, err)
    except BrokenPipeError:
        # `routekit ... | head`: the reader left; exit quietly instead of a traceback at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAIL


def _say(console: Console, label: str, style: str, message: str) -> None:
    """``label: message``, the message taken literally (names may contain ``[...]``) and
    never hard-wrapped, so one problem stays one line for grep."""
    console.print(Text.assemble((label, style), " ", message), soft_wrap=True, highlight=False)


def _usage(args: argparse.Namespace, err: Console, problem: str) -> int:
    """A usage problem found after parsing: one line, or under ``--json`` one JSON object
    on stdout, as every other failure of a ``--json`` command. Exit 2."""
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": "usage", "message": problem}, indent=2,
                         ensure_ascii=False))
    else:
        _say(err, "error:", "bold red", problem)
    return EXIT_USAGE


def _run(args: argparse.Namespace, out: Console, err: Console) -> int:
    # An empty name is a mistake (an unset shell variable), never "the default" or "all".
    if getattr(args, "config", None) == "":
        optional = args.command in ("chat", "plan", "health")  # --config, not a position
        return _usage(args, err, "the config path is empty: give a file" + (
            ", or leave --config out for $ROUTEKIT_CONFIG or the built-in default"
            if optional else ""))
    if args.command == "plan" and args.model == "":
        return _usage(args, err, "the model name is empty: give one, or none for every model")
    try:
        if args.command == "validate":
            return _validate(args, out)
        if args.command == "chat":
            return _chat(args, out, err)
        if args.command == "plan":
            return _plan(args, out)
        if args.command == "health":
            return _health(args, out)
        if args.command == "simulate":
            from ._cli_simulate import run_simulate

            return run_simulate(args, out, err)
        if args.command == "graph":
            return _graph(args)
        if args.command == "bench":
            from ._cli_bench import run_bench_command

            return run_bench_command(args, out, err)
        if args.command == "import":
            return _import(args, out, err)
    except ConfigError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"ok": False, "errors": [i.as_dict() for i in exc.issues]}, indent=2))
        else:
            _say(err, "error:", "bold red", str(exc))
        return EXIT_FAIL
    except RouteKitError as exc:
        if os.environ.get("ROUTEKIT_DEBUG"):
            raise
        route = getattr(exc, "route", None)
        if getattr(args, "json", False):
            partial = getattr(exc, "partial", None)  # what a broken stream had said
            print(json.dumps({"ok": False, "error": type(exc).__name__, "message": str(exc),
                              **({"partial": partial} if partial else {}),
                              "route": route.as_dict() if route else None}, indent=2,
                             ensure_ascii=False))
        else:
            _say(err, f"{type(exc).__name__}:", "bold red", str(exc))
            # AllCandidatesFailed's message already lists every hop.
            if route is not None and not isinstance(exc, AllCandidatesFailed):
                _print_route(route, err)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


def _load(path: str | None) -> Any:
    from ._config.default import default_config_source
    from ._config.loader import load_config

    return load_config(path or default_config_source())


# ---------------------------------------------------------------- validate

def _validate(args: argparse.Namespace, out: Console) -> int:
    from ._analysis import analyze, availability_figures, format_duration
    from ._config.loader import load_config

    t0 = time.perf_counter()
    config = load_config(args.config)
    report = analyze(config)
    elapsed = (time.perf_counter() - t0) * 1000
    failed = bool(report.errors) or (args.strict and bool(report.warnings))
    if args.json:
        data = report.as_dict()
        data["ok"] = not failed
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return EXIT_FAIL if failed else EXIT_OK

    f = report
    summary = Table(title=Text(f"routekit validate {args.config}"), show_header=False)
    summary.add_row("models", str(f.models))
    summary.add_row("providers", str(f.providers))
    summary.add_row("fallback edges", str(f.edges))
    summary.add_row("terminals", Text(", ".join(f.terminals) or "—"))
    summary.add_row("longest path", Text(f"{max(0, len(f.longest_path) - 1)} hops: "
                                         + " → ".join(f.longest_path)))
    summary.add_row("provider diversity by position",
                    Text(" ".join(f"[{i}]={n}" for i, n in enumerate(f.diversity))))
    summary.add_row("terminal-provider entropy", f"{f.entropy_bits:.3f} bits")
    out.print(summary)

    # Figures never wrap or shrink (a truncated 0.99999… hides the very nines it is about);
    # plans go on their own lines below, where long chains can wrap.
    entries = Table(title="entry models")
    entries.add_column("model", overflow="fold")
    entries.add_column("tier", overflow="fold")
    entries.add_column("ends on", overflow="fold")
    for col in ("availability", "nines", "down/yr"):
        entries.add_column(col, justify="left" if col == "availability" else "right",
                           no_wrap=True, min_width=len(col))
    shown = list(f.plans.items())
    for entry, plan in shown[:40]:
        figs = availability_figures(f.unavailability[entry])
        entries.add_row(Text(entry), Text(f.tiers[entry] or "—"),
                        Text(f.terminal_provider[entry]), figs["availability_text"],
                        "∞" if figs["nines"] is None else f"{figs['nines']:.1f}",
                        format_duration(figs["downtime_per_year_s"]))
    out.print(entries)
    if len(shown) > 40:
        out.print(f"... and {len(shown) - 40} more entry models (use --json)")
    out.print(Text("plans", style="bold"))
    for entry, plan in shown[:40]:
        out.print(Text(f"  {entry}: " + " → ".join(plan)), soft_wrap=True, highlight=False)

    for finding in f.findings:
        style = {"error": "bold red", "warning": "yellow", "note": "cyan"}[finding.level]
        _say(out, f"{finding.level} [{finding.code}]", style, finding.message)
    verdict = "[bold red]invalid[/]" if failed else "[bold green]ok[/]"
    out.print(f"{verdict}: {len(f.errors)} error(s), {len(f.warnings)} warning(s) "
              f"in {elapsed:.0f} ms")
    return EXIT_FAIL if failed else EXIT_OK


# ---------------------------------------------------------------- chat

def entry_model(config: Any, given: str | None) -> str | None:
    """The model a command asks for: ``--model``, else the config's routing.default_model."""
    # Only an absent --model means the default: --model "" is a name, and no model's.
    return given if given is not None else config.routing.default_model


def _chat(args: argparse.Namespace, out: Console, err: Console) -> int:
    from ._plan import CompiledGraph
    from ._router import Router

    config = _load(args.config)
    model = entry_model(config, args.model)
    if model is None:
        return _usage(args, err, "no --model given and the config has no "
                      "routing.default_model")
    # An unknown model fails here, before the router loads any in-process model.
    CompiledGraph.from_config(config).plan(model, max_depth=config.routing.max_depth)
    messages: list[dict[str, Any]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": args.prompt})

    with _progress(err, quiet=args.json) as progress:
        router = Router(config, progress=progress)
    with router:
        if args.stream:
            stream = router.chat.completions.create(
                model=model, messages=messages, stream=True, max_tokens=args.max_tokens,
                temperature=args.temperature,
            )
            parts = []
            try:
                with stream:
                    for chunk in stream:
                        text = chunk.choices[0].delta.content if chunk.choices else None
                        if text:
                            parts.append(text)
                            if not args.json:
                                out.print(text, end="", markup=False, highlight=False)
            finally:  # a broken stream's error goes on a line of its own
                if not args.json and parts:
                    out.print()
            if not args.json and not parts:
                out.print()
            content, route = "".join(parts), stream.route
        else:
            reply = router.chat.completions.create(
                model=model, messages=messages, max_tokens=args.max_tokens,
                temperature=args.temperature,
            )
            content = reply.choices[0].message.content or ""
            route = reply.route
            if not args.json:  # a base model's answer often starts with a space
                out.print(content.strip(), markup=False, highlight=False)
    note = _base_model_note(config, route)
    if args.json:
        print(json.dumps({"ok": True, "content": content, "route": route.as_dict(),
                          **({"note": note} if note else {})}, indent=2, ensure_ascii=False))
    else:
        _print_route(route, err)
        if note:
            _say(err, "note:", "bold yellow", note)
    return EXIT_OK


BASE_MODEL_NOTE = (
    "{model} is routekit's built-in last resort, a 270M-parameter base model (not "
    "instruction-tuned): it keeps your app answering, not answering well. For answers worth "
    "reading, point the chain's terminal at an instruct GGUF (README: \"What the default "
    "model is\")."
)


def _base_model_note(config: Any, route: Any) -> str | None:
    """Said whenever the built-in base model answered, so nobody mistakes it for a chat
    model."""
    from . import _constants as C

    answered = route.answered_by
    if answered is None or answered.model not in config.models:
        return None
    if config.models[answered.model].package != C.DEFAULT_MODEL_PACKAGE:
        return None
    return BASE_MODEL_NOTE.format(model=answered.model)


def _print_route(route: Any, console: Console) -> None:
    # One line per hop rather than a table: at 80 columns a table ellipsizes model names and
    # error classes, the two things a reader looks for (and greps for).
    answered = route.answered_by
    verdict = (f"answered by {answered.model} ({answered.provider})" if answered is not None
               else "not answered")
    console.print(Text(f"route for {route.requested!r}: {verdict} in {route.total_ms:.1f} ms",
                       style="bold"), soft_wrap=True, highlight=False)
    for i, a in enumerate(route.attempts, 1):
        style = {"ok": "green", "error": "red", "skipped": "yellow"}.get(a.outcome, "")
        line = Text.assemble(f"  {i}. {a.model} via {a.provider} ({a.kind}): ",
                             (a.outcome, style))
        if a.error_type:
            line.append(f" — {a.error_type}: {a.error}")
        timing = [] if a.ttfb_ms is None else [f"ttfb {a.ttfb_ms:.1f} ms"]
        timing.append(f"{a.duration_ms:.1f} ms")
        if a.tries > 1:
            timing.append(f"{a.tries} tries")
        line.append(f" [{', '.join(timing)}]")
        console.print(line, soft_wrap=True, highlight=False)


class _progress:
    """A rich progress bar for first-run model assembly; silent when nothing is slow."""

    def __init__(self, console: Console, *, quiet: bool) -> None:
        self._console = console
        self._quiet = quiet
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Any:
        return None if self._quiet else self

    def __call__(self, phase: str, fraction: float) -> None:
        if self._bar is None:
            from rich.progress import BarColumn, Progress, TextColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"),
                                 console=self._console, transient=True)
            self._bar.start()
        # One bar for the whole preparation: ``fraction`` is overall progress and ``phase``
        # says what is happening now (assembling, verifying, ready).
        if self._task is None:
            self._task = self._bar.add_task(phase, total=1.0)
        self._bar.update(self._task, description=phase, completed=max(0.0, min(1.0, fraction)))

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()


# ---------------------------------------------------------------- plan / health

def _plan(args: argparse.Namespace, out: Console) -> int:
    from ._plan import CompiledGraph

    config = _load(args.config)
    graph = CompiledGraph.from_config(config)
    models = [args.model] if args.model else list(config.models)
    plans = {m: graph.plan(m, max_depth=config.routing.max_depth) for m in models}
    if args.json:
        print(json.dumps(plans, indent=2, ensure_ascii=False))
        return EXIT_OK
    for m, plan in plans.items():
        out.print(f"{m}: " + " → ".join(
            f"{c} ({config.models[c].provider})" for c in plan), markup=False, highlight=False,
            soft_wrap=True)  # one plan, one line, whatever the terminal's width
    return EXIT_OK


def _health(args: argparse.Namespace, out: Console) -> int:
    from ._router import Router

    config = _load(args.config)
    with Router(config, warm=False, health_probes=False) as router:
        snap = router.health(probe=True, timeout=args.timeout)
    if args.json:
        print(json.dumps(snap.as_dict(), indent=2, ensure_ascii=False))
        return EXIT_OK if snap.ok else EXIT_FAIL
    table = Table(title="provider health")
    for col in ("provider", "kind", "ok", "ms", "breaker", "detail"):
        table.add_column(col)
    for p in snap.providers:
        probe = p.probe
        ms = f"{probe.latency_ms:.1f}" if probe is not None else "—"
        detail = probe.detail if probe is not None else "not probed"
        state = p.breaker.state.replace("_", "-")
        if p.breaker.reopens_in is not None:
            state += f" ({p.breaker.reopens_in:.0f} s)"
        table.add_row(Text(p.provider), p.kind,
                      Text("yes", "green") if p.ok else Text("no", "red"), ms,
                      Text(state, "green" if state == "closed" else "yellow"), Text(detail))
    out.print(table)
    return EXIT_OK if snap.ok else EXIT_FAIL


# ---------------------------------------------------------------- graph

def _graph(args: argparse.Namespace) -> int:
    from ._config.loader import load_config
    from ._graph_text import render_graph

    config = load_config(args.config)
    sys.stdout.write(render_graph(config, fmt=args.format, model=args.model))
    return EXIT_OK


# ---------------------------------------------------------------- import

def _import(args: argparse.Namespace, out: Console, err: Console) -> int:
    from ._import_litellm import LiteLLMImportError, import_litellm, read_litellm_file

    if args.output == "":  # an unset shell variable, not "stdout": that is leaving -o out
        return _usage(args, err, "the output path is empty: give a file, or leave -o out to "
                      "write to stdout")
    try:
        result = import_litellm(read_litellm_file(args.config), source=args.config)
    except LiteLLMImportError as exc:
        _say(err, "error:", "bold red", f"cannot import {args.config}: {exc}")
        return EXIT_FAIL
    if args.output is not None:
        if os.path.exists(args.output) and not args.force:
            _say(err, "error:", "bold red", f"{args.output} exists; add --force to overwrite")
            return EXIT_FAIL
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(result.yaml)
        except OSError as exc:
            _say(err, "error:", "bold red", f"cannot write {args.output}: {exc.strerror or exc}")
            return EXIT_FAIL
    else:
        sys.stdout.write(result.yaml)
        sys.stdout.flush()  # the YAML first, then the summary on stderr
    where = f" into {args.output}" if args.output is not None else ""
    _say(err, "imported:", "bold green",
         f"{result.models} model(s) on {result.providers} provider(s){where}; "
         f"{len(result.skipped)} item(s) not imported (see the comments at the top); "
         "check it with: routekit validate " + (args.output or "FILE"))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
