"""Decoding: llama_cpp_native (routekit's C++ loop) vs llama_cpp (llama-cpp-python) vs
llama_cpp.server through the openai client — TTFB, tokens/s, GIL independence, Python CPU
per token, and second-turn TTFB (prefix reuse).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_decode.py [--runs 6] [--threads 2]
        [--model PATH --chat-format FMT] [--n-gpu-layers N] [--max-tokens 64]

Same model (the gemma GGUF unless --model), prompt, n_ctx, threads and offload for every
path. Streams; TTFB is the time to the first chunk with text (--ttfb-runs short rounds of
--ttfb-tokens tokens), tokens/s is (N - 1) over the time from the first to the last text
chunk, N = max_tokens (--rate-runs rounds). Every round runs every path once, in an order that
rotates, so machine noise hits every path alike. Comparisons are paired: the median of the
per-round ratios (this shared VM's speed drifts by tens of percent between minutes, which a
ratio of two medians taken apart would mostly measure).

GIL independence: tokens/s with 0, 1 and 2 busy pure-Python threads in the process (llama on
--gil-threads threads, 1 by default, so a busy thread takes a core llama does not use), each
against the idle run of the same round; controls that load the CPU the same way without
this process's GIL: a C++ thread spinning in this process (no Python, no memory traffic),
and a busy Python loop in another process.
Python CPU per token: CPU time of the consuming thread over the tokens it received (the
native worker runs no Python); beside it, what building one chunk costs on this machine warm
and after 10 ms idle. Second turn: TTFB of a turn that extends the previous one (the KV
cache kept) over the same prompt decoded from an empty cache; for native also after a
JSON-mode first turn, which llama-cpp-python decodes on the same context.

Targets (issue #7, CPU): native TTFB <= llama_cpp's and <= 0.75 x the server's; native
tokens/s >= 1.0 x llama_cpp's; with busy threads native keeps >= 0.95 x its idle speed;
<= 10 us of Python CPU per native token; second-turn TTFB <= 0.2 x a fresh context's (and,
on any device, no more than 1.15 x llama_cpp's own ratio: its prefix reuse kept).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from _common import median, pct, report
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
    """k busy threads for the length of a ``with``. how="gil": pure-Python loops (they want
    this process's GIL all the time). Controls with the same CPU load and no claim on this
    GIL: how="c", C++ threads spinning in this process (``_core.Spinner``: no Python, no
    memory traffic); how="process", pure-Python loops in other processes. They separate CPU
    contention from the GIL's share of a slowdown."""

    def __init__(self, k: int, *, how: str = "gil") -> None:
        self.k = k
        self.how = how
        self.stop = False
        self.threads = ([threading.Thread(target=self.spin, daemon=True) for _ in range(k)]
                        if how == "gil" else [])
        self.spinners: list[Any] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def spin(self) -> None:
        n = 0
        while not self.stop:
            n += 1

    def __enter__(self) -> Busy:
        for t in self.threads:
            t.start()
        if self.how == "c":
            from routekit import _core

            self.spinners = [_core.Spinner() for _ in range(self.k)]
        if self.how == "process":
            # Bounded: the loop ends by itself after 120 s should this script die first.
            code = "import time\nt=time.monotonic()+120\nwhile time.monotonic()<t: pass"
            self.procs = [subprocess.Popen([sys.executable, "-c", code])
                          for _ in range(self.k)]
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop = True
        for t in self.threads:
            t.join()
        for sp in self.spinners:
            sp.stop()
        for p in self.procs:
            p.kill()
            p.wait()


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


def chunk_build_cost(n: int = 40) -> dict[str, tuple[float, float]]:
    """CPU us to build one openai chunk, validated (``build``) and built directly as the
    providers do (``chat_chunk``), in a tight loop and after 10 ms of sleep: what a stream
    consumer's per-token Python costs here once a wake-up has left its caches (and, on a VM,
    its core) cold."""
    from routekit.providers.llama_cpp.chunks import build, chat_chunk, chunk_type

    cls = chunk_type()

    def validated(i: int) -> None:
        build(cls, {"id": "chatcmpl-x", "model": "m", "created": 0,
                    "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": f"t{i}"}, "logprobs": None,
                                 "finish_reason": None}]})

    def direct(i: int) -> None:
        chat_chunk("chatcmpl-x", "m", 0, {"content": f"t{i}"}, None)

    out = {}
    for name, one in (("validated", validated), ("direct", direct)):
        for i in range(200):
            one(i)
        c0 = time.thread_time()
        for i in range(2000):
            one(i)
        warm = (time.thread_time() - c0) / 2000 * 1e6
        cold = []
        for i in range(n):
            time.sleep(0.01)
            c0 = time.thread_time()
            one(i)
            cold.append((time.thread_time() - c0) * 1e6)
        out[name] = (warm, median(cold))
    return out


def openai_text(chunk: Any) -> str | None:
    return chunk.choices[0].delta.content if chunk.choices else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8, help="rounds of the GIL section")
    ap.add_argument("--rate-runs", type=int, default=12, help="rounds for tokens/s")
    ap.add_argument("--ttfb-runs", type=int, default=20)
    ap.add_argument("--ttfb-tokens", type=int, default=4, help="max_tokens of a TTFB round")
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
                    model="m", messages=r.messages,  # type: ignore[arg-type]
                    stream=True, temperature=0, max_tokens=r.params["max_tokens"])))

            def rounds(n: int, max_tokens: int, tag: str) -> list[dict[str, dict[str, float]]]:
                out = []
                for r in range(n + 1):  # round 0 warms every path and is discarded
                    got: dict[str, dict[str, float]] = {}
                    for i in range(len(paths)):
                        name, call = paths[(i + r) % len(paths)]
                        # Same length, different text per path and round: no path reuses
                        # another's prompt beyond the chat template.
                        rq = req(f"{tag} {r:02d}.{i}: {PROMPT}", max_tokens)
                        time.sleep(args.settle)  # the previous path's OpenMP workers stop
                        got[name] = timed_stream(call(rq), openai_text)
                        if name == "llama_cpp_native":
                            got[name]["worker_first_ms"] = (
                                nat._last_job["m"].seconds_to_first_token * 1000.0)
                    if r:
                        out.append(got)
                return out

            # TTFB: many short rounds (one prompt decode each); rates: fewer, longer ones.
            # Both compare paths within a round (adjacent in time) and quote the median of
            # the per-round ratios: on a shared machine whose speed drifts by tens of
            # percent between minutes, a ratio of two medians taken apart is mostly noise.
            ttfb_rounds = rounds(args.ttfb_runs, args.ttfb_tokens, "TTFB")
            rate_rounds = rounds(args.rate_runs, args.max_tokens, "Rate")
        finally:
            if client is not None:
                client.close()
            if server_cm is not None:
                server_cm.__exit__(None, None, None)

        def rate(m: dict[str, float]) -> float:
            return (args.max_tokens - 1) / m["span_s"] if m["span_s"] > 0 else float("nan")

        names = [n for n, _ in paths]
        for name in names:
            t = median([g[name]["ttfb_ms"] for g in ttfb_rounds])
            k = median([rate(g[name]) for g in rate_rounds])
            rows.append({"case": f"{name}: TTFB ms", "median": t})
            rows.append({"case": f"{name}: tokens/s", "median": k})
            extra[f"{name}_ttfb_ms"] = t
            extra[f"{name}_tokens_per_s"] = k
        own = median([g["llama_cpp_native"]["ttfb_ms"] - g["llama_cpp_native"]["worker_first_ms"]
                      for g in ttfb_rounds])
        rows.append({"case": "llama_cpp_native: TTFB outside the C++ loop ms (formatting, "
                             "submit, hand-off, chunk)", "median": own})
        extra["native_ttfb_outside_loop_ms"] = own

        def paired(a: str, b: str, key: Callable[[dict[str, float]], float],
                   data: list[dict[str, dict[str, float]]]) -> float:
            return median([key(g[a]) / key(g[b]) for g in data])

        r_ttfb = paired("llama_cpp_native", "llama_cpp", lambda m: m["ttfb_ms"], ttfb_rounds)
        extra["ratio_native_vs_llama_cpp_ttfb"] = r_ttfb
        checks.append(("native TTFB <= llama_cpp TTFB (median of per-round ratios)",
                       r_ttfb <= 1.0, f"{r_ttfb:.3f}x ({extra['llama_cpp_native_ttfb_ms']:.1f} "
                                      f"vs {extra['llama_cpp_ttfb_ms']:.1f} ms medians, "
                                      f"{args.ttfb_runs} rounds)"))
        if client is not None:
            server = "llama_cpp.server via openai"
            r_srv = paired("llama_cpp_native", server, lambda m: m["ttfb_ms"], ttfb_rounds)
            extra["ratio_native_vs_server_ttfb"] = r_srv
            checks.append(("native TTFB <= 0.75 x server TTFB", r_srv <= 0.75,
                           f"{r_srv:.2f}x"))
        r_rate = paired("llama_cpp_native", "llama_cpp", rate, rate_rounds)
        extra["ratio_native_vs_llama_cpp_tokens_per_s"] = r_rate
        checks.append(("native tokens/s >= 1.0 x llama_cpp (median of per-round ratios)",
                       r_rate >= 1.0, f"{r_rate:.3f}x ({extra['llama_cpp_native_tokens_per_s']:.1f}"
                                      f" vs {extra['llama_cpp_tokens_per_s']:.1f} tok/s medians, "
                                      f"{args.rate_runs} rounds)"))

    # -- Python CPU per token (native, idle) ----------------------------------------------------
    if "cpu" in want:
        # complete() drains the relay in batches (one wake-up per ~512 tokens); stream() wakes
        # once per token by design, and a wake-up (a context switch) costs ~50-150 us of CPU on
        # this VM whatever runs after it: reported beside, not held to the 10 us target.
        # complete()'s figure is the whole request's Python CPU (formatting, submitting,
        # building the completion) over its tokens; beside it the marginal cost of one more
        # token, from a request three times as long.
        cpu_stream, cpu_complete, cpu_marginal = [], [], []

        def complete_cpu(tag: str, max_tokens: int) -> tuple[float, int]:
            c0 = time.thread_time()
            reply = nat.complete(req(f"{tag}: {PROMPT}", max_tokens), LONG)
            return time.thread_time() - c0, (reply.usage.completion_tokens if reply.usage
                                             else max_tokens)

        for r in range(args.runs):
            m = timed_stream(nat.stream(req(f"cpu {r}: {PROMPT}", args.max_tokens), LONG),
                             openai_text)
            cpu_stream.append(m["cpu_s"] / args.max_tokens * 1e6)
            short, n = complete_cpu(f"cpu c{r}", args.max_tokens)
            cpu_complete.append(short / n * 1e6)
            long_, n_long = complete_cpu(f"cpu l{r}", 3 * args.max_tokens)
            if n_long > n:
                cpu_marginal.append((long_ - short) / (n_long - n) * 1e6)
        if cpu_marginal:
            rows.append({"case": "native: Python CPU us per additional token, complete()",
                         "median": median(cpu_marginal)})
            extra["python_cpu_us_per_additional_token_complete"] = median(cpu_marginal)
        rows.append({"case": "native: Python CPU us/token, complete()",
                     "median": median(cpu_complete)})
        rows.append({"case": "native: consumer CPU us/token, stream() (one wake-up per token)",
                     "median": median(cpu_stream)})
        checks.append(("Python CPU per native token <= 10 us (complete)",
                       median(cpu_complete) <= 10, f"{median(cpu_complete):.1f} us "
                       f"(stream: {median(cpu_stream):.0f} us, mostly the per-token wake-up)"))
        extra["python_cpu_us_per_token"] = {"stream": median(cpu_stream),
                                            "complete": median(cpu_complete)}
        costs = chunk_build_cost()
        for how, (warm, cold) in costs.items():
            rows.append({"case": f"this machine: one chunk built {how}, warm, CPU us",
                         "median": warm})
            rows.append({"case": f"this machine: one chunk built {how}, after 10 ms idle, "
                                 "CPU us", "median": cold})
        extra["chunk_build_us"] = {how: {"warm": w, "after_idle": c}
                                   for how, (w, c) in costs.items()}

    # -- second turn: prefix reuse --------------------------------------------------------------
    if "turn" in want:
        def second_turn(provider: Any, reset: Callable[[], None], r: int,
                        **first_params: Any) -> tuple[float, float]:
            first = [{"role": "user", "content": f"{r}: {SYSTEM_TURN} Which box is item 7?"}]
            reset()
            reply = provider.complete(ChatRequest("m", "m", first, {
                "temperature": 0, "max_tokens": 16, **first_params}), LONG)
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

        def reset_both() -> None:  # the native kind's two decoders share one context
            reset_native()
            nat._slot("m").llm.reset()  # type: ignore[union-attr]

        # A third case: native's second turn after a JSON-mode first turn, which the native kind
        # hands to llama-cpp-python; the loop adopts what it left in the KV cache.
        handed = "llama_cpp_native after a JSON-mode turn"
        turns: dict[str, list[tuple[float, float]]] = {"llama_cpp_native": [], "llama_cpp": [],
                                                       handed: []}
        for r in range(max(3, args.runs // 2)):
            turns["llama_cpp_native"].append(second_turn(nat, reset_native, r))
            turns["llama_cpp"].append(second_turn(py, reset_python, r))
            turns[handed].append(second_turn(nat, reset_both, r,
                                             response_format={"type": "json_object"}))
        for name, pairs in turns.items():
            warm, fresh = median([p[0] for p in pairs]), median([p[1] for p in pairs])
            rows.append({"case": f"{name}: 2nd-turn TTFB ms (prefix kept)", "median": warm})
            rows.append({"case": f"{name}: same prompt, empty cache, TTFB ms", "median": fresh})
            extra[f"{name}_second_turn_ratio"] = warm / fresh
        ratio = extra["llama_cpp_native_second_turn_ratio"]
        py_ratio = extra["llama_cpp_second_turn_ratio"]
        checks.append(("native second-turn TTFB <= 0.2 x fresh (the CPU target)", ratio <= 0.2,
                       f"{ratio:.2f}x (llama_cpp {py_ratio:.2f}x)"))
        # On a GPU a short prompt decodes in ~1 ms, so fixed costs dominate both turns and
        # neither kind reaches 0.2x; what the issue asks there is that native keep the reuse
        # llama-cpp-python has (0.26-0.31x on the H200). 15% slack for medians of a few rounds.
        checks.append(("native keeps llama_cpp's prefix reuse (ratio <= 1.15 x llama_cpp's)",
                       ratio <= 1.15 * py_ratio, f"{ratio:.2f}x vs {py_ratio:.2f}x"))
        h_ratio = extra[f"{handed}_second_turn_ratio"]
        # 1.0 would mean the whole prompt decoded again; the JSON reply in the history makes
        # this second turn's prompt differ from the plain case's, so no tighter comparison.
        checks.append(("the prefix survives a JSON-mode turn (ratio <= 0.5; 1.0: none kept)",
                       h_ratio <= 0.5, f"{h_ratio:.3f}x (native alone {ratio:.3f}x)"))
    nat.close()
    py.close()

    # -- GIL independence -----------------------------------------------------------------------
    if "gil" in want:
        # Rates as the consumer sees them (first to last text chunk) for both; for native also as
        # its worker measured them (first to last sampled token), which no consumer delay touches.
        # Each loaded run is compared with the idle run of the same round and provider (paired,
        # adjacent in time); the medians of those ratios are quoted. Controls that take the
        # same CPU without touching this process's GIL: a C++ thread spinning in this process,
        # and a pure-Python loop in another process. What a busy Python thread costs beyond
        # them is the GIL's share; what they cost is sharing the cores.
        nat1, py1 = providers(args.gil_threads)
        loads = (("0", 0, "gil"), ("1", 1, "gil"), ("2", 2, "gil"),
                 ("1 C thread (no GIL)", 1, "c"), ("1 other process", 1, "process"))
        per_round: dict[tuple[str, str], list[float]] = {}
        for r in range(args.runs):
            for label, k, how in loads:
                for name, prov in (("llama_cpp_native", nat1), ("llama_cpp", py1)):
                    rq = req(f"gil {r}.{label}: {PROMPT}", args.max_tokens)
                    with Busy(k, how=how):
                        m = timed_stream(prov.stream(rq, LONG), openai_text)
                    per_round.setdefault((name, label), []).append(
                        (args.max_tokens - 1) / m["span_s"])
                    if prov is nat1:
                        job = nat1._last_job["m"]
                        per_round.setdefault(("llama_cpp_native (worker)", label), []).append(
                            (job.completion_tokens - 1) / job.seconds_decoding)
        nat1.close()
        py1.close()
        for name in ("llama_cpp_native", "llama_cpp_native (worker)", "llama_cpp"):
            idle = per_round[(name, "0")]
            for label, _, _ in loads:
                rates = per_round[(name, label)]
                row = {"case": f"{name}: tokens/s, busy: {label}, llama on "
                               f"{args.gil_threads} thread(s)", "median": median(rates)}
                rows.append(row)
                extra[f"{name}_gil_{label}"] = median(rates)
                if label != "0":
                    ratios = [a / b for a, b in zip(rates, idle)]
                    extra[f"{name}_gil_ratio_{label}"] = median(ratios)
                    extra[f"{name}_gil_ratio_{label}_iqr"] = (pct(ratios, 0.25),
                                                             pct(ratios, 0.75))
        ctl = {n: (extra[f"{n}_gil_ratio_1 C thread (no GIL)"],
                   extra[f"{n}_gil_ratio_1 other process"])
               for n in ("llama_cpp_native", "llama_cpp")}
        for busy in ("1", "2"):
            nr, pr = extra[f"llama_cpp_native_gil_ratio_{busy}"], extra[f"llama_cpp_gil_ratio_{busy}"]
            wr = extra[f"llama_cpp_native (worker)_gil_ratio_{busy}"]
            lo, hi = extra[f"llama_cpp_native_gil_ratio_{busy}_iqr"]
            checks.append((f"native keeps >= 0.95 x idle speed with {busy} busy Python "
                           f"thread(s)", nr >= 0.95,
                           f"{nr:.2f}x (per-round ratios' middle half {lo:.2f}-{hi:.2f}; "
                           f"worker-side {wr:.2f}x; llama-cpp-python {pr:.2f}x; "
                           f"controls without this GIL: busy C thread native "
                           f"{ctl['llama_cpp_native'][0]:.2f}x / llama-cpp-python "
                           f"{ctl['llama_cpp'][0]:.2f}x, busy other process native "
                           f"{ctl['llama_cpp_native'][1]:.2f}x / llama-cpp-python "
                           f"{ctl['llama_cpp'][1]:.2f}x)"))
    extra["load_average_end"] = os.getloadavg()
    name = "bench_decode" if args.only == "all" else f"bench_decode_{args.only}"
    return report(name, rows, checks, extra)


if __name__ == "__main__":
    raise SystemExit(main())
