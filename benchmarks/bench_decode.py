"""Decoding: llama_cpp_native (routekit's C++ loop) vs llama_cpp (llama-cpp-python) vs
llama_cpp.server through the openai client — TTFB, tokens/s, GIL independence, Python CPU
per token, and second-turn TTFB (prefix reuse).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_decode.py [--runs 6] [--threads 2]
        [--model PATH --chat-format FMT] [--n-gpu-layers N] [--max-tokens 64]

Same model (the gemma GGUF unless --model), prompt, n_ctx, threads and offload for every
path. Streams; TTFB is the time to the first chunk with text, tokens/s is (N - 1) over the
time from the first to the last text chunk, N = max_tokens (a run that stops early is
reported, not counted). Rounds are interleaved so machine noise hits every path alike;
medians.

GIL independence: tokens/s with 0, 1 and 2 busy pure-Python threads in the process (llama on
--gil-threads threads, 1 by default, so a busy thread takes a core llama does not use).
Python CPU per token: CPU time of the consuming thread over the tokens it received (the
native worker runs no Python). Second turn: TTFB of a turn that extends the previous one
(the KV cache kept) over the same prompt decoded from an empty cache.

Targets (issue #7, CPU): native TTFB <= llama_cpp's and <= 0.75 x the server's; native
tokens/s >= 1.0 x llama_cpp's; with busy threads native keeps >= 0.95 x its idle speed;
<= 10 us of Python CPU per native token; second-turn TTFB <= 0.2 x a fresh context's.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from _common import median, report
from llama_server import default_model_path, llama_server

from routekit._config.model import ModelConfig, ProviderConfig
from routekit.providers._base import ChatRequest, Deadline
from routekit.providers.llama_cpp import LlamaCppNativeProvider, LlamaCppProvider

LONG = Deadline(connect=5.0, read=600.0, total=600.0)
# A prompt this model answers at length (it does not stop before max_tokens).
PROMPT = "Count from 1 to 500, separated by commas."
SYSTEM_TURN = ("You are a patient assistant. Here are the notes for today: " +
               " ".join(f"item {i} is a {c} box;" for i, c in
                        zip(range(60), ["red", "blue", "green", "small", "large"] * 12)))


def device(n_gpu_layers: int) -> str:
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload() and n_gpu_layers != 0:
        return "GPU (llama-cpp-python built with offload; n_gpu_layers %d)" % n_gpu_layers
    return "CPU"


class Busy:
    """k pure-Python threads spinning (they want the GIL all the time); with gil=False, k
    threads hashing in C with the GIL released: the same CPU load without the GIL, a control
    that separates CPU contention from the GIL's share of a slowdown."""

    _DATA = b"x" * (1 << 20)

    def __init__(self, k: int, *, gil: bool = True) -> None:
        self.k = k
        self.stop = False
        target = self.spin if gil else self.hash
        self.threads = [threading.Thread(target=target, daemon=True) for _ in range(k)]

    def spin(self) -> None:
        n = 0
        while not self.stop:
            n += 1

    def hash(self) -> None:
        import hashlib

        while not self.stop:
            hashlib.sha256(self._DATA).digest()  # releases the GIL for large inputs

    def __enter__(self) -> Busy:
        for t in self.threads:
            t.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop = True
        for t in self.threads:
            t.join()


def timed_stream(chunks: Iterable[Any], text_of: Callable[[Any], str | None]
                 ) -> dict[str, float]:
    t0 = time.perf_counter()
    c0 = time.thread_time()
    first = last = None
    pieces = 0
    for chunk in chunks:
        if text_of(chunk):
            now = time.perf_counter()
            if first is None:
                first = now
            last = now
            pieces += 1
    cpu = time.thread_time() - c0
    if first is None or last is None:
        raise RuntimeError("no text")
    return {"ttfb_ms": (first - t0) * 1000.0, "span_s": last - first,
            "total_s": time.perf_counter() - t0, "cpu_s": cpu, "pieces": pieces}


def openai_text(chunk: Any) -> str | None:
    return chunk.choices[0].delta.content if chunk.choices else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gil-threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--chat-format", default="gemma")
    ap.add_argument("--n-gpu-layers", type=int, default=None,
                    help="default: -1 when llama-cpp-python can offload, else 0")
    ap.add_argument("--no-server", action="store_true")
    ap.add_argument("--settle", type=float, default=0.05,
                    help="seconds of quiet before each measured call (OpenMP spin-down)")
    ap.add_argument("--only", choices=("all", "paths", "cpu", "turn", "gil"), default="all",
                    help="run one section (the machine is shared: shorter runs, quieter)")
    args = ap.parse_args()
    want = {args.only} if args.only != "all" else {"paths", "cpu", "turn", "gil"}

    import llama_cpp

    path = args.model or default_model_path()
    ngl = args.n_gpu_layers
    if ngl is None:
        ngl = -1 if llama_cpp.llama_supports_gpu_offload() else 0
    dev = device(ngl)
    print(f"model {path}\ndevice: {dev}; threads {args.threads}; n_ctx {args.n_ctx}")

    def providers(threads: int) -> tuple[LlamaCppNativeProvider, LlamaCppProvider]:
        cfg = ModelConfig(provider="local", path=str(path), chat_format=args.chat_format,
                          n_ctx=args.n_ctx, n_threads=threads, n_gpu_layers=ngl)
        nat = LlamaCppNativeProvider("local", ProviderConfig(kind="llama_cpp_native"),
                                     {"m": cfg})
        py = LlamaCppProvider("local", ProviderConfig(kind="llama_cpp"), {"m": cfg})
        nat.warm("m")
        py.warm("m")
        return nat, py

    def req(content: str, max_tokens: int, history: list[dict[str, str]] | None = None
            ) -> ChatRequest:
        msgs = (history or []) + [{"role": "user", "content": content}]
        return ChatRequest("m", "m", msgs, {"temperature": 0, "max_tokens": max_tokens})

    nat, py = providers(args.threads)
    rows: list[dict[str, Any]] = []
    checks: list[tuple[str, bool, str]] = []
    extra: dict[str, Any] = {"load_average_start": os.getloadavg(), "device": dev, "threads": args.threads, "n_ctx": args.n_ctx,
                             "max_tokens": args.max_tokens, "model": str(path)}

    # -- TTFB and tokens/s, three paths ---------------------------------------------------------
    if "paths" in want:
        results: dict[str, list[dict[str, float]]] = {"llama_cpp_native": [], "llama_cpp": [],
                                                      "llama_cpp.server via openai": []}
        server_cm = None if args.no_server else llama_server(
            path, chat_format=args.chat_format, n_ctx=args.n_ctx, n_threads=args.threads,
            n_gpu_layers=ngl)
        client = None
        base_url = server_cm.__enter__() if server_cm is not None else None
        try:
            if base_url is not None:
                import openai

                client = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
            paths: list[tuple[str, Callable[[ChatRequest], Iterable[Any]]]] = [
                ("llama_cpp_native", lambda r: nat.stream(r, LONG)),
                ("llama_cpp", lambda r: py.stream(r, LONG)),
            ]
            if client is not None:
                paths.append(("llama_cpp.server via openai", lambda r: client.chat.completions.create(
                    model="m", messages=r.messages, stream=True, temperature=0,
                    max_tokens=args.max_tokens)))
            for r in range(args.runs + 1):  # round 0 warms every path and is discarded
                for i in range(len(paths)):
                    name, call = paths[(i + r) % len(paths)]
                    # Same length, different text per path and round: no path reuses another's
                    # prompt beyond the chat template.
                    rq = req(f"Round {r:02d}.{i}: {PROMPT}", args.max_tokens)
                    time.sleep(args.settle)  # the previous path's OpenMP workers stop spinning
                    m = timed_stream(call(rq), openai_text)
                    if r:
                        results[name].append(m)
        finally:
            if client is not None:
                client.close()
            if server_cm is not None:
                server_cm.__exit__(None, None, None)
        for name, ms in results.items():
            if not ms:
                continue
            rate = median([(args.max_tokens - 1) / m["span_s"] for m in ms if m["span_s"] > 0])
            rows.append({"case": f"{name}: TTFB ms", "median": median([m["ttfb_ms"] for m in ms])})
            rows.append({"case": f"{name}: tokens/s", "median": rate})
            extra[f"{name}_ttfb_ms"] = median([m["ttfb_ms"] for m in ms])
            extra[f"{name}_tokens_per_s"] = rate
        n_ttfb, p_ttfb = extra["llama_cpp_native_ttfb_ms"], extra["llama_cpp_ttfb_ms"]
        checks.append(("native TTFB <= llama_cpp TTFB", n_ttfb <= p_ttfb,
                       f"{n_ttfb:.1f} vs {p_ttfb:.1f} ms"))
        if "llama_cpp.server via openai_ttfb_ms" in extra:
            s_ttfb = extra["llama_cpp.server via openai_ttfb_ms"]
            checks.append(("native TTFB <= 0.75 x server TTFB", n_ttfb <= 0.75 * s_ttfb,
                           f"ratio {n_ttfb / s_ttfb:.2f}"))
        n_rate, p_rate = extra["llama_cpp_native_tokens_per_s"], extra["llama_cpp_tokens_per_s"]
        checks.append(("native tokens/s >= 1.0 x llama_cpp", n_rate >= p_rate,
                       f"{n_rate:.1f} vs {p_rate:.1f} tok/s ({n_rate / p_rate:.2f}x)"))

    # -- Python CPU per token (native, idle) ----------------------------------------------------
    if "cpu" in want:
        # complete() drains the relay in batches (one wake-up per ~512 tokens); stream() wakes
        # once per token by design, and a wake-up (a context switch) costs ~50-150 us of CPU on
        # this VM whatever runs after it: reported beside, not held to the 10 us target.
        cpu_stream, cpu_complete = [], []
        for r in range(args.runs):
            m = timed_stream(nat.stream(req(f"cpu {r}: {PROMPT}", args.max_tokens), LONG),
                             openai_text)
            cpu_stream.append(m["cpu_s"] / args.max_tokens * 1e6)
            c0 = time.thread_time()
            reply = nat.complete(req(f"cpu c{r}: {PROMPT}", args.max_tokens), LONG)
            n = reply.usage.completion_tokens if reply.usage else args.max_tokens
            cpu_complete.append((time.thread_time() - c0) / n * 1e6)
        rows.append({"case": "native: Python CPU us/token, complete()",
                     "median": median(cpu_complete)})
        rows.append({"case": "native: consumer CPU us/token, stream() (one wake-up per token)",
                     "median": median(cpu_stream)})
        checks.append(("Python CPU per native token <= 10 us (complete)",
                       median(cpu_complete) <= 10, f"{median(cpu_complete):.1f} us "
                       f"(stream: {median(cpu_stream):.0f} us, mostly the per-token wake-up)"))
        extra["python_cpu_us_per_token"] = {"stream": median(cpu_stream),
                                            "complete": median(cpu_complete)}

    # -- second turn: prefix reuse --------------------------------------------------------------
    if "turn" in want:
        def second_turn(provider: Any, reset: Callable[[], None], r: int) -> tuple[float, float]:
            first = [{"role": "user", "content": f"{r}: {SYSTEM_TURN} Which box is item 7?"}]
            reset()
            reply = provider.complete(ChatRequest("m", "m", first, {"temperature": 0,
                                                                    "max_tokens": 16}), LONG)
            history = first + [{"role": "assistant",
                                "content": reply.choices[0].message.content or ""}]
            turn2 = req("And item 9?", 4, history)
            warm = timed_stream(provider.stream(turn2, LONG), openai_text)["ttfb_ms"]
            reset()
            fresh = timed_stream(provider.stream(turn2, LONG), openai_text)["ttfb_ms"]
            return warm, fresh

        def reset_native() -> None:
            nat._natives["m"][1].invalidate_cache()

        def reset_python() -> None:
            py._slot("m").llm.reset()  # type: ignore[union-attr]

        turns: dict[str, list[tuple[float, float]]] = {"llama_cpp_native": [], "llama_cpp": []}
        for r in range(max(3, args.runs // 2)):
            turns["llama_cpp_native"].append(second_turn(nat, reset_native, r))
            turns["llama_cpp"].append(second_turn(py, reset_python, r))
        for name, pairs in turns.items():
            warm, fresh = median([p[0] for p in pairs]), median([p[1] for p in pairs])
            rows.append({"case": f"{name}: 2nd-turn TTFB ms (prefix kept)", "median": warm})
            rows.append({"case": f"{name}: same prompt, empty cache, TTFB ms", "median": fresh})
            extra[f"{name}_second_turn_ratio"] = warm / fresh
        ratio = extra["llama_cpp_native_second_turn_ratio"]
        checks.append(("native second-turn TTFB <= 0.2 x fresh", ratio <= 0.2,
                       f"{ratio:.2f}x (llama_cpp {extra['llama_cpp_second_turn_ratio']:.2f}x)"))
    nat.close()
    py.close()

    # -- GIL independence -----------------------------------------------------------------------
    if "gil" in want:
        # Rates as the consumer sees them (first to last text chunk) for both; for native also as
        # its worker measured them (first to last sampled token), which no consumer delay touches.
        nat1, py1 = providers(args.gil_threads)
        gil: dict[tuple[str, int], list[float]] = {}
        loads = (("0", 0, True), ("1", 1, True), ("2", 2, True), ("1 C (no GIL)", 1, False))
        for r in range(args.runs):
            for label, k, holds_gil in loads:
                for name, prov in (("llama_cpp_native", nat1), ("llama_cpp", py1)):
                    rq = req(f"gil {r}.{label}: {PROMPT}", args.max_tokens)
                    with Busy(k, gil=holds_gil):
                        m = timed_stream(prov.stream(rq, LONG), openai_text)
                    gil.setdefault((name, label), []).append((args.max_tokens - 1) / m["span_s"])
                    if prov is nat1:
                        job = nat1._last_job["m"]
                        gil.setdefault(("llama_cpp_native (worker)", label), []).append(
                            (job.completion_tokens - 1) / job.seconds_decoding)
        nat1.close()
        py1.close()
        for name in ("llama_cpp_native", "llama_cpp_native (worker)", "llama_cpp"):
            idle = median(gil[(name, "0")])
            for label, _, _ in loads:
                rate = median(gil[(name, label)])
                rows.append({"case": f"{name}: tokens/s, {label} busy thread(s), llama on "
                                     f"{args.gil_threads} thread(s)", "median": rate})
                extra[f"{name}_gil_{label}"] = rate
                if label != "0":
                    extra[f"{name}_gil_ratio_{label}"] = rate / idle
        c_native = extra["llama_cpp_native_gil_ratio_1 C (no GIL)"]
        c_python = extra["llama_cpp_gil_ratio_1 C (no GIL)"]
        for busy in ("1", "2"):
            nr, pr = extra[f"llama_cpp_native_gil_ratio_{busy}"], extra[f"llama_cpp_gil_ratio_{busy}"]
            wr = extra[f"llama_cpp_native (worker)_gil_ratio_{busy}"]
            checks.append((f"native keeps >= 0.95 x idle speed with {busy} busy thread(s)",
                           nr >= 0.95, f"{nr:.2f}x (worker-side {wr:.2f}x; llama-cpp-python "
                                       f"{pr:.2f}x; with a GIL-free busy C thread instead: "
                                       f"native {c_native:.2f}x, llama-cpp-python {c_python:.2f}x)"))
    extra["load_average_end"] = os.getloadavg()
    name = "bench_decode" if args.only == "all" else f"bench_decode_{args.only}"
    return report(name, rows, checks, extra)


if __name__ == "__main__":
    raise SystemExit(main())
