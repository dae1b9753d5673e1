"""``routekit bench``: in-process against server, time to first token and tokens per second,
on the user's own GGUF.

Owns the measurement: which paths run (routekit in-process through ``llama_cpp`` and
``llama_cpp_native``; with ``server``, a ``llama_cpp.server`` child with the same model,
context, threads and GPU offload, called through routekit and through the bare openai
client), the rounds (every path once per round, in an order that rotates, each call after a
short quiet ``settle`` so llama.cpp's OpenMP workers from the previous call have spun down,
and a prompt of its own so no path reuses another's KV cache),
and the figures (medians of TTFB — from the call to the first chunk carrying text — and of
decode speed — text chunks after the first over the time they took). The same method as
``benchmarks/bench_ttfb.py``, packaged for users' own models. Printing, the progress bar and
the chart live in ``_cli_bench``. Timing never decides anything here; it is reported.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["BenchOptions", "BenchResult", "PathFigures", "run_bench"]

Progress = Callable[[str, float], None]
_PROMPT = "In two sentences, explain why a fallback chain should end inside the application."


@dataclass
class BenchOptions:
    model: str | None = None  # a GGUF path
    package: str | None = None  # or a model package (assembled on first use)
    chat_format: str | None = None
    n_ctx: int = 1024
    n_threads: int | None = None
    n_gpu_layers: int | None = None  # None: -1 where llama-cpp-python can offload, else 0
    rounds: int = 8
    max_tokens: int = 32
    server: bool = False
    native: bool = True
    settle: float = 0.2
    prompt: str = _PROMPT


@dataclass
class PathFigures:
    path: str
    ttfb_ms: list[float] = field(default_factory=list)
    tokens_per_s: list[float] = field(default_factory=list)
    error: str | None = None  # the last failure, when some round failed
    failures: int = 0

    @property
    def ttfb_median(self) -> float | None:
        return statistics.median(self.ttfb_ms) if self.ttfb_ms else None

    @property
    def tps_median(self) -> float | None:
        return statistics.median(self.tokens_per_s) if self.tokens_per_s else None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ttfb_ms_median": self.ttfb_median,
                "tokens_per_s_median": self.tps_median, "ttfb_ms": self.ttfb_ms,
                "tokens_per_s": self.tokens_per_s, "error": self.error,
                "failed_rounds": self.failures}


@dataclass
class BenchResult:
    model_path: str
    device: str
    options: BenchOptions
    paths: list[PathFigures]

    def figure(self, path: str) -> PathFigures | None:
        return next((p for p in self.paths if p.path == path), None)

    def as_dict(self) -> dict[str, Any]:
        o = self.options
        return {"model_path": self.model_path, "device": self.device,
                "options": {"n_ctx": o.n_ctx, "n_threads": o.n_threads,
                            "n_gpu_layers": o.n_gpu_layers, "rounds": o.rounds,
                            "max_tokens": o.max_tokens, "chat_format": o.chat_format},
                "paths": [p.as_dict() for p in self.paths]}


def _model_path(opts: BenchOptions) -> str:
    from ._config.model import ModelConfig
    from .providers.llama_cpp.model_files import resolve_model_path

    cfg = ModelConfig(provider="local", path=opts.model, package=opts.package)
    return str(resolve_model_path(cfg, name="bench"))


def _offload(opts: BenchOptions) -> int:
    if opts.n_gpu_layers is not None:
        return opts.n_gpu_layers
    from .providers.llama_cpp.load import llama_module

    return -1 if llama_module().llama_supports_gpu_offload() else 0


def _device(layers: int, threads: int) -> str:
    from .providers.llama_cpp.load import llama_module

    gpu = bool(llama_module().llama_supports_gpu_offload())
    if layers != 0 and gpu:
        return f"GPU offload ({'all' if layers < 0 else layers} layers), {threads} CPU threads"
    return f"CPU, {threads} threads" + (" (this build cannot offload)" if layers and not gpu
                                        else "")


def _config(model_path: str, opts: BenchOptions, layers: int, threads: int,
            server_url: str | None) -> dict[str, Any]:
    local = {"path": model_path, "n_ctx": opts.n_ctx, "n_threads": threads,
             "n_gpu_layers": layers, "warm": True}
    if opts.chat_format:
        local["chat_format"] = opts.chat_format
    providers: dict[str, Any] = {"inproc": {"kind": "llama_cpp"}}
    models: dict[str, Any] = {"inproc": {"provider": "inproc", **local}}
    if opts.native:
        providers["native"] = {"kind": "llama_cpp_native"}
        models["native"] = {"provider": "native", **local}
    if server_url is not None:
        providers["server"] = {"kind": "llama_cpp_server", "base_url": server_url,
                               "stream_upstream": False, "health": {"path": "/v1/models"},
                               "timeout": {"connect": 2, "first_byte": 120, "read": 120,
                                           "total": 600}}
        models["server"] = {"provider": "server", "model_id": "bench"}
    return {"providers": providers, "models": models,
            "fallback_chains": {m: {"chain": []} for m in models},
            "routing": {"breaker": {"enabled": False}, "retry": {"max_attempts": 1,
                                                                "last_candidate_attempts": 1}}}


def _timed(start: Callable[[], Iterator[Any]]) -> tuple[float, float]:
    """(ms from the call to the first text, text chunks per second after it). ``start``
    makes the call: routekit's ``create(stream=True)`` returns only once text has come."""
    t0 = time.perf_counter()
    stream = start()
    first: float | None = None
    last = t0
    pieces = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                pieces += 1
            last = now
    if first is None:
        raise RuntimeError("the stream carried no text")
    tps = pieces / (last - first) if pieces and last > first else 0.0
    return (first - t0) * 1000.0, tps


def _starter(path: str, router: Any, client: Any, messages: list[dict[str, str]],
             opts: BenchOptions) -> Callable[[], Iterator[Any]]:
    if path == "openai":
        return lambda: iter(client.chat.completions.create(
            model="bench", messages=messages, stream=True, max_tokens=opts.max_tokens,
            temperature=0))
    return lambda: iter(router.chat.completions.create(
        model=path, messages=messages, stream=True, max_tokens=opts.max_tokens,
        temperature=0))


def run_bench(opts: BenchOptions, progress: Progress | None = None) -> BenchResult:
    import os

    from ._router import Router

    model_path = _model_path(opts)
    if opts.chat_format is None and opts.model is None:
        from . import _constants as C

        # A package model carries no chat template: give every path the same format the
        # in-process providers would pick (without one the server guesses another).
        opts.chat_format = C.DEFAULT_MODEL_CHAT_FORMAT
    threads = opts.n_threads or max(1, min(8, os.cpu_count() or 1))
    layers = _offload(opts)
    paths = ["inproc"] + (["native"] if opts.native else [])
    labels = {"inproc": "routekit in-process (llama_cpp)",
              "native": "routekit in-process (llama_cpp_native)",
              "server": "llama_cpp.server via routekit",
              "openai": "llama_cpp.server via the openai client"}
    with contextlib.ExitStack() as stack:
        url = None
        if opts.server:
            from .providers.llama_cpp.server_process import llama_server

            if progress:
                progress("starting llama_cpp.server", 0.0)
            url = stack.enter_context(llama_server(
                model_path, chat_format=opts.chat_format, n_ctx=opts.n_ctx,
                n_threads=threads, n_gpu_layers=layers))
            paths += ["server", "openai"]
        if progress:
            progress("loading the model", 0.0)
        router = stack.enter_context(Router(_config(model_path, opts, layers, threads, url),
                                            health_probes=False))
        client = None
        if url is not None:
            import openai

            from .providers.http.transport import http_lib

            # Its own HTTP client: openai < 1.55 cannot build one on httpx 0.28 (it passes
            # ``proxies``, which httpx removed), and routekit supports openai >= 1.40.
            client = openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0,
                                   http_client=http_lib().Client(timeout=600))
            stack.callback(client.close)
        figures = {p: PathFigures(labels[p]) for p in paths}
        total = opts.rounds * len(paths)
        done = 0
        for r in range(opts.rounds + 1):  # round 0 warms every path and is not counted
            order = paths[r % len(paths):] + paths[:r % len(paths)]
            for p in order:
                fig = figures[p]
                # A prompt of its own per path and round: a server keeps the KV cache of the
                # prompt it saw last, and two paths sharing one would let the second skip its
                # prompt processing.
                messages = [{"role": "user",
                             "content": f"({r}.{paths.index(p)}) {opts.prompt}"}]
                time.sleep(opts.settle)
                try:
                    ttfb, tps = _timed(_starter(p, router, client, messages, opts))
                except Exception as exc:  # one broken path must not hide the others
                    fig.error = f"{type(exc).__name__}: {exc}"
                    fig.failures += 1
                    continue
                if r:
                    fig.ttfb_ms.append(ttfb)
                    fig.tokens_per_s.append(tps)
                    done += 1
                    if progress:
                        progress(f"round {r}/{opts.rounds}", done / total)
    return BenchResult(str(Path(model_path)), _device(layers, threads), opts,
                       [figures[p] for p in paths])
