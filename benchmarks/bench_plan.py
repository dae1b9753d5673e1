"""Plan resolution: the C++ core (through routekit._plan) against the pure-Python reference.

    PYTHONPATH=src python3 benchmarks/bench_plan.py [--quick]

Graphs: the seed config of ARCHITECTURE.md (4 models), a 16-model config shaped like the
examples (cloud and server entries falling back to in-process llama.cpp), and generated
graphs of 100 and 1,000 models (1-4 fallbacks each, 6-10 providers, 10% of providers
marked unavailable). Each figure is the median, over several batches, of the mean time
per plan() call within a batch (time.perf_counter_ns around the batch; the Python -> C++
call and the id -> name mapping are included). Prints a table and writes
benchmarks/results/bench_plan.json. Timing here never decides a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import plan_reference as ref  # noqa: E402

from routekit._plan import CompiledGraph  # noqa: E402

Graph = tuple[list[str], list[str], dict[str, list[str]]]

TARGET_SEED_NS = 2_000
TARGET_SPEEDUP_1000 = 5.0
TARGET_COMPILE_1000_MS = 10.0


def seed_graph() -> Graph:
    chains = {
        "llama3.1:latest": ["llama-cpp-default", "gpt-oss:20b-cloud"],
        "gpt-oss:20b-cloud": ["llama-cpp-default", "llama-cpp-native"],
        "llama-cpp-default": ["llama-cpp-native", "gpt-oss:20b-cloud"],
        "llama-cpp-native": [],
    }
    providers = ["ollama", "cloud", "local", "local"]
    return list(chains), providers, chains


def examples_graph() -> Graph:
    """16 models: cloud and server entry points whose chains end in-process."""
    spec = {
        # model: (provider, chain)
        "gpt-4o": ("openai", ["gpt-4o-mini", "qwen2.5:14b-vllm", "llama3.1:8b", "gemma3-270m"]),
        "gpt-4o-mini": ("openai", ["qwen2.5:7b-vllm", "llama3.1:8b", "gemma3-270m"]),
        "o3-mini": ("openai", ["gpt-4o-mini", "deepseek-r1:14b", "qwen2.5:7b"]),
        "gpt-oss:20b-cloud": ("openai", ["gpt-oss:20b", "llama-cpp-default", "llama-cpp-native"]),
        "gpt-oss:20b": ("ollama", ["qwen2.5:14b-vllm", "llama-cpp-default"]),
        "qwen2.5:14b-vllm": ("vllm", ["qwen2.5:7b-vllm", "qwen2.5:7b", "llama-cpp-default"]),
        "qwen2.5:7b-vllm": ("vllm", ["qwen2.5:7b", "llama-cpp-default"]),
        "qwen2.5:7b": ("ollama", ["llama-cpp-default", "gemma3-270m"]),
        "deepseek-r1:14b": ("ollama", ["qwen2.5:14b-vllm", "llama-cpp-default"]),
        "llama3.1:latest": ("ollama", ["llama-cpp-default", "gpt-oss:20b-cloud"]),
        "llama3.1:8b": ("ollama", ["llama3.2:3b", "llama-cpp-default"]),
        "llama3.2:3b": ("ollama", ["llama-cpp-server", "gemma3-270m"]),
        "llama-cpp-server": ("llama_cpp_server", ["llama-cpp-default", "gemma3-270m"]),
        "llama-cpp-default": ("llama_cpp", ["llama-cpp-native", "gemma3-270m"]),
        "llama-cpp-native": ("llama_cpp_native", []),
    }
    spec["gemma3-270m"] = ("llama_cpp", [])
    models = list(spec)
    return models, [spec[m][0] for m in models], {m: spec[m][1] for m in models}


def generated_graph(n: int, seed: int) -> Graph:
    """n models, 6-10 providers; 5% are terminals (in-process), the rest have 1-4
    fallbacks drawn from the other models (so cycles occur, as in hand-written configs)."""
    rng = random.Random(seed)
    providers = [f"provider-{k}" for k in range(rng.randint(6, 10))]
    models = [f"model-{i:04d}" for i in range(n)]
    terminals = set(rng.sample(models, max(1, n // 20)))
    chains: dict[str, list[str]] = {}
    for m in models:
        if m in terminals:
            chains[m] = []
        else:
            chains[m] = rng.sample([x for x in models if x != m], rng.randint(1, 4))
    return models, [rng.choice(providers) for _ in models], chains


def mark_providers_down(graphs: Sequence[Any], providers: Sequence[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    down = rng.sample(list(providers), max(1, round(len(providers) * 0.10)))
    for g in graphs:
        for p in down:
            g.set_provider_available(p, False)
    return down


def time_per_call(fn: Callable[[str], object], entries: Sequence[str], batches: int, calls: int) -> float:
    """Median over batches of ns per call; each batch makes `calls` calls."""
    work = [entries[i % len(entries)] for i in range(calls)]
    for e in work[: min(len(work), 50)]:  # warm caches and thread-local scratch
        fn(e)
    per_call = []
    for _ in range(batches):
        t0 = time.perf_counter_ns()
        for e in work:
            fn(e)
        per_call.append((time.perf_counter_ns() - t0) / calls)
    return statistics.median(per_call)


def bench_graph(name: str, graph: Graph, *, quick: bool) -> dict[str, Any]:
    models, model_providers, chains = graph
    core = CompiledGraph(models, model_providers, chains)
    py = ref.ReferenceGraph(models, model_providers, chains)
    down = mark_providers_down([core, py], core.providers, seed=7) if len(models) > 20 else []
    for m in models:  # both must answer the same before timing means anything
        assert core.plan(m) == py.plan(m), m
    rng = random.Random(11)
    entries = [rng.choice(models) for _ in range(64)]
    big = len(models) >= 1000
    batches = 5 if quick else 11
    core_calls = 2_000 if big else 20_000
    ref_calls = 100 if big else 5_000
    if quick:
        core_calls //= 10
        ref_calls = max(20, ref_calls // 10)
    raw = core._core  # the bare binding: ids in, ids out
    index = {m: i for i, m in enumerate(models)}
    core_ns = time_per_call(core.plan, entries, batches, core_calls)
    raw_ns = time_per_call(lambda m: raw.plan(index[m], 16, True), entries, batches, core_calls)
    ref_ns = time_per_call(py.plan, entries, batches, max(ref_calls, 20))
    return {
        "graph": name,
        "models": len(models),
        "providers": len(core.providers),
        "providers_down": down,
        "mean_plan_len": statistics.fmean(len(core.plan(m)) for m in entries),
        "core_ns": core_ns,
        "core_ids_ns": raw_ns,
        "reference_ns": ref_ns,
        "speedup": ref_ns / core_ns,
    }


def bench_compile(graph: Graph, *, quick: bool) -> dict[str, float]:
    models, model_providers, chains = graph
    runs = 7 if quick else 21
    wrapper, bare = [], []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        g = CompiledGraph(models, model_providers, chains)
        wrapper.append(time.perf_counter_ns() - t0)
    index = {m: i for i, m in enumerate(models)}
    ids = [[index[c] for c in chains[m]] for m in models]
    pidx = {p: i for i, p in enumerate(g.providers)}
    prov = [pidx[p] for p in model_providers]
    core_type = type(g._core)
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        core_type(models, prov, len(pidx), ids)
        bare.append(time.perf_counter_ns() - t0)
    return {"compile_ms": statistics.median(wrapper) / 1e6, "compile_core_only_ms": statistics.median(bare) / 1e6}


def render(rows: list[dict[str, Any]], compile_: dict[str, float], checks: list[tuple[str, bool, str]]) -> None:
    header = ["graph", "models", "plan len", "core ns/plan", "core ids ns", "reference ns", "speedup"]
    body = [
        [
            r["graph"],
            str(r["models"]),
            f"{r['mean_plan_len']:.1f}",
            f"{r['core_ns']:,.0f}",
            f"{r['core_ids_ns']:,.0f}",
            f"{r['reference_ns']:,.0f}",
            f"{r['speedup']:.1f}x",
        ]
        for r in rows
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
        print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for b in body:
            print("  ".join(c.rjust(w) for c, w in zip(b, widths)))
    else:
        table = Table(title="plan() resolution")
        for h in header:
            table.add_column(h, justify="right")
        for b in body:
            table.add_row(*b)
        Console(width=max(100, Console().width)).print(table)
    print(
        f"compile 1,000 models: {compile_['compile_ms']:.2f} ms "
        f"(C++ construction alone {compile_['compile_core_only_ms']:.2f} ms)"
    )
    for label, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches (smoke run)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "bench_plan.json")
    args = parser.parse_args(argv)

    graphs = {
        "seed": seed_graph(),
        "examples-like": examples_graph(),
        "generated-100": generated_graph(100, seed=100),
        "generated-1000": generated_graph(1000, seed=1000),
    }
    rows = [bench_graph(name, g, quick=args.quick) for name, g in graphs.items()]
    compile_ = bench_compile(graphs["generated-1000"], quick=args.quick)
    seed_ns = rows[0]["core_ns"]
    speedup = rows[-1]["speedup"]
    checks = [
        ("seed plan() <= 2 us", seed_ns <= TARGET_SEED_NS, f"{seed_ns:,.0f} ns"),
        ("1,000 models >= 5x reference", speedup >= TARGET_SPEEDUP_1000, f"{speedup:.1f}x"),
        ("compile 1,000 models <= 10 ms", compile_["compile_ms"] <= TARGET_COMPILE_1000_MS, f"{compile_['compile_ms']:.2f} ms"),
    ]
    render(rows, compile_, checks)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "plan",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "quick": args.quick,
        "rows": rows,
        "compile_1000": compile_,
        "targets": [{"check": c, "pass": ok, "value": v} for c, ok, v in checks],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
