"""The first request after start-up: is a warm in-process model as fast the first time as the
next?

    PYTHONPATH=src .venv/bin/python benchmarks/bench_first_request.py [--runs 5] [--threads 2]
        [--model PATH --chat-format FMT] [--n-gpu-layers N]

Each run is a fresh Python process (first-time costs only show once per process) that starts
a Router over one in-process model (``warm`` loads it: the warm standby) and sends three
streamed requests, timing each one's TTFB (call to the first chunk with text), and the
Router's start-up. Variants, each in its own processes, interleaved so noise hits all alike:

  llama_cpp / llama_cpp_native     the Router as it is (warm loads, then warm_up runs the
                                   model once)
  ... without warm-up              the same with InProcessProvider.warm_up a no-op: what
                                   routekit did before (the model loaded, nothing run)
  llama-cpp-python direct          Llama(...) then create_chat_completion(stream=True): what
                                   an application calling llama-cpp-python itself gets

Prompts differ per request beyond the chat template. Reported: medians over runs of the first
request's TTFB, the later requests' TTFB, their ratio, and the start-up time.
Target: with warm-up the first request's TTFB is <= 1.5 x the later ones' (before: 7-9x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import median, report
from llama_server import default_model_path

PROMPT = "Count from 1 to 500, separated by commas."

CHILD = r"""
import json, sys, time
t_import = time.perf_counter()
args = json.loads(sys.argv[1])
sys.path[:0] = args["path"]
variant = args["variant"]
from routekit.providers.llama_cpp.load import llama_module

def prompt(i):
    return [{"role": "user", "content": f"Request {i} of {args['tag']}: {args['prompt']}"}]

out = {}
if variant == "direct":
    llama_cpp = llama_module()
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=args["model"], n_ctx=args["n_ctx"],
                          n_threads=args["threads"], n_gpu_layers=args["ngl"],
                          chat_format=args["chat_format"], verbose=False)
    out["start_ms"] = (time.perf_counter() - t0) * 1000
    def ttfb(i):
        t = time.perf_counter()
        for c in llm.create_chat_completion(messages=prompt(i), stream=True, temperature=0,
                                            max_tokens=4):
            if c["choices"] and c["choices"][0]["delta"].get("content"):
                return (time.perf_counter() - t) * 1000
else:
    from routekit import Router
    from routekit.providers.llama_cpp.base import InProcessProvider
    kind = variant.split()[0]
    if variant.endswith("without warm-up"):
        InProcessProvider.warm_up = lambda self, slot: None
    cfg = {"providers": {"local": {"kind": kind}},
           "models": {"m": {"provider": "local", "path": args["model"],
                            "chat_format": args["chat_format"], "n_ctx": args["n_ctx"],
                            "n_threads": args["threads"], "n_gpu_layers": args["ngl"]}}}
    t0 = time.perf_counter()
    router = Router(cfg)
    out["start_ms"] = (time.perf_counter() - t0) * 1000
    def ttfb(i):
        t = time.perf_counter()
        with router.chat.completions.create(model="m", messages=prompt(i), stream=True,
                                            temperature=0, max_tokens=4) as s:
            for c in s:
                if c.choices and c.choices[0].delta.content:
                    return (time.perf_counter() - t) * 1000
out["ttfb_ms"] = [ttfb(i) for i in range(3)]
print("RESULT " + json.dumps(out))
"""

VARIANTS = ("llama_cpp", "llama_cpp without warm-up", "llama_cpp_native",
            "llama_cpp_native without warm-up", "direct")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--chat-format", default="gemma")
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    args = ap.parse_args()
    model = str(args.model or default_model_path())
    import routekit  # the child imports the same routekit (src/ here, site-packages when installed)

    paths = [str(Path(routekit.__file__).resolve().parent.parent)] + [p for p in sys.path if p]
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for r in range(args.runs):
        for i in range(len(VARIANTS)):
            variant = VARIANTS[(i + r) % len(VARIANTS)]
            spec = {"path": paths, "variant": variant, "model": model, "n_ctx": args.n_ctx,
                    "threads": args.threads, "ngl": args.n_gpu_layers,
                    "chat_format": args.chat_format, "prompt": PROMPT, "tag": f"run {r}"}
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)],
                                  capture_output=True, text=True, timeout=300)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{variant}: child failed (rc {proc.returncode})")
            results[variant].append(json.loads(lines[-1][len("RESULT "):]))
    rows = []
    extra: dict[str, object] = {"model": model, "threads": args.threads, "runs": args.runs,
                                "n_gpu_layers": args.n_gpu_layers}
    ratios = {}
    for variant in VARIANTS:
        runs = results[variant]
        first = median([x["ttfb_ms"][0] for x in runs])
        later = median([t for x in runs for t in x["ttfb_ms"][1:]])
        ratio = median([x["ttfb_ms"][0] / median(x["ttfb_ms"][1:]) for x in runs])
        start = median([x["start_ms"] for x in runs])
        ratios[variant] = ratio
        rows.append({"variant": variant, "first TTFB ms": first, "later TTFB ms": later,
                     "first / later": ratio, "start-up ms": start})
        extra[variant] = runs
    checks = [(f"{kind}: first request TTFB <= 1.5 x the later ones' (after warm)",
               ratios[kind] <= 1.5,
               f"{ratios[kind]:.2f}x (without warm-up {ratios[kind + ' without warm-up']:.2f}x;"
               f" llama-cpp-python direct {ratios['direct']:.2f}x)")
              for kind in ("llama_cpp", "llama_cpp_native")]
    return report("bench_first_request", rows, checks, extra)


if __name__ == "__main__":
    raise SystemExit(main())
