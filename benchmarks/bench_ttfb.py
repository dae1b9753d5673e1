"""Time to first token: in-process (routekit) vs a llama.cpp server (openai client, routekit).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_ttfb.py [--runs 10] [--threads 2]

Same GGUF (gemma3-270m Q4_K_M from its package), same n_ctx and threads, same prompts,
max_tokens 16, temperature 0. Each round sends one fresh prompt down every path, in turn,
so all paths see the same machine noise (prompts differ per path only by an index, so no
path reuses another's prompt cache); TTFB is the time
from the call until the first chunk carrying text. Medians over the rounds.

Paths:
  llama-cpp-python direct     Llama.create_chat_completion(stream=True) in this process
  routekit in-process         Router → llama_cpp provider (the same kind of Llama object)
  server via openai client    `python -m llama_cpp.server` on loopback, openai.OpenAI
  server via routekit         Router → openai_compat provider (kind llama_cpp_server)

Targets (router issue): routekit in-process ≤ 0.75 × server-via-openai TTFB, and routekit
adds ≤ 1 ms over calling llama-cpp-python directly. Reference measured here before routekit
existed: in-process 34 ms, server 47 ms.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Iterable

from _common import median, report
from llama_server import default_model_path, llama_server

from routekit import Router
from routekit.providers.llama_cpp.compat import construction_guard


def ttfb(call: Callable[[], Iterable[Any]], text_of: Callable[[Any], str | None]) -> float:
    """Time to the first chunk with text. The stream is then drained: a server keeps
    decoding after an early hang-up and would steal the CPU from the next path measured."""
    t0 = time.perf_counter()
    first: float | None = None
    for chunk in call():
        if first is None and text_of(chunk):
            first = (time.perf_counter() - t0) * 1000.0
    if first is None:
        raise RuntimeError("stream produced no text")
    return first


def openai_text(chunk: Any) -> str | None:
    return chunk.choices[0].delta.content if chunk.choices else None


def llama_text(chunk: dict[str, Any]) -> str | None:
    return chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()

    import llama_cpp
    import openai

    path = default_model_path()
    gpu = bool(llama_cpp.llama_supports_gpu_offload())
    n_gpu = -1 if gpu else 0
    # Same load as routekit's provider, including its AMX crash workaround (without it the
    # direct path segfaults on AMX CPUs; see providers/_llama_compat.py).
    with construction_guard(llama_cpp):
        direct = llama_cpp.Llama(model_path=str(path), n_ctx=args.n_ctx,
                                 n_threads=args.threads, chat_format="gemma",
                                 n_gpu_layers=n_gpu, verbose=False)
    in_proc = Router({
        "providers": {"local": {"kind": "llama_cpp"}},
        "models": {"gemma": {"provider": "local", "path": str(path), "chat_format": "gemma",
                             "n_ctx": args.n_ctx, "n_threads": args.threads}},
    })
    params = {"max_tokens": args.max_tokens, "temperature": 0.0}
    timings: dict[str, list[float]] = {k: [] for k in (
        "llama-cpp-python direct", "routekit in-process", "server via openai client",
        "server via routekit")}

    with llama_server(path, n_ctx=args.n_ctx, n_threads=args.threads) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
        via_server = Router({
            "providers": {"srv": {"kind": "llama_cpp_server", "base_url": base_url}},
            "models": {"gemma-srv": {"provider": "srv", "model_id": "gemma"}},
        })
        paths: list[tuple[str, Callable[[list[dict[str, str]]], Iterable[Any]],
                          Callable[[Any], str | None]]] = [
            ("llama-cpp-python direct",
             lambda msgs: direct.create_chat_completion(messages=msgs, stream=True, **params),
             llama_text),
            ("routekit in-process",
             lambda msgs: in_proc.chat.completions.create(model="gemma", messages=msgs,
                                                          stream=True, **params),
             openai_text),
            ("server via openai client",
             lambda msgs: client.chat.completions.create(model="gemma", messages=msgs,
                                                         stream=True, **params),
             openai_text),
            ("server via routekit",
             lambda msgs: via_server.chat.completions.create(model="gemma-srv", messages=msgs,
                                                             stream=True, **params),
             openai_text),
        ]
        for r in range(args.runs + 1):  # round 0 warms every path and is discarded
            # The order rotates each round so no path always follows the same neighbour.
            for i in range(len(paths)):
                name, call, text_of = paths[(i + r) % len(paths)]
                # A fresh prompt per path and round, all the same length: the server's
                # prompt cache is shared by its two client paths and must favour neither.
                msgs = [{"role": "user", "content": f"Round {r:02d}.{i}: name one colour."}]
                took = ttfb(lambda: call(msgs), text_of)
                if r:
                    timings[name].append(took)
        client.close()
        via_server.close()
    in_proc.close()
    direct.close()

    med = {k: median(v) for k, v in timings.items()}
    rows = [{"path": k, "median_ms": med[k], "min_ms": min(v), "max_ms": max(v), "runs": len(v)}
            for k, v in timings.items()]
    ratio = med["routekit in-process"] / med["server via openai client"]
    added = med["routekit in-process"] - med["llama-cpp-python direct"]
    checks = [
        ("routekit in-process ≤ 0.75 × server TTFB", ratio <= 0.75, f"ratio {ratio:.2f}"),
        ("routekit adds ≤ 1 ms over llama-cpp-python", added <= 1.0, f"{added:+.2f} ms"),
    ]
    return report("bench_ttfb", rows, checks, {
        "gpu_offload": gpu, "threads": args.threads, "n_ctx": args.n_ctx,
        "max_tokens": args.max_tokens, "ratio_in_process_vs_server": ratio,
        "added_ms_over_llama_cpp": added})


if __name__ == "__main__":
    raise SystemExit(main())
