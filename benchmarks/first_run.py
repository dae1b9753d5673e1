"""The honest first run: what the built-in default model answers, with the old generation
defaults and the new ones, on a few prompts a new user would try.

    PYTHONPATH=src python3 benchmarks/first_run.py

Runs the real default model (gemma-3-270m Q4_K_M, a *base* model, from the package index)
in-process through routekit, three ways:
  old       chat_format gemma, no generation defaults (what routekit 0.1.0 shipped)
  new       the embedded default now: routekit/_config/default.py (a plain-text prompt
            format a base model continues sensibly, greedy decoding, a frequency penalty,
            stop at a blank line)
  proposed  new + repeat_penalty 1.3 sent through extra_body, i.e. what the default could
            do once the in-process provider passes repeat_penalty from a model's defaults
Prints every answer and a few crude measures (does the answer echo the prompt, how much of
it repeats, did it stop by itself), and writes benchmarks/results/first_run.json. Nothing
here decides a test: judge the answers by reading them.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import report  # noqa: E402

from routekit import Router, load_config  # noqa: E402
from routekit._config.default import DEFAULT_CONFIG  # noqa: E402

PROMPTS = [
    "Write a haiku about fallbacks.",
    "What is the capital of France?",
    "List three colors.",
    "Explain what a fallback chain is in one sentence.",
    "Give me a tip for writing clean code.",
]
MAX_TOKENS = 64


def _config(variant: str) -> Any:
    model = copy.deepcopy(DEFAULT_CONFIG["models"]["gemma3-270m"])
    if variant == "old":
        model["chat_format"] = "gemma"
        model.pop("defaults", None)
    return load_config({"providers": {"local": {"kind": "llama_cpp"}},
                        "models": {"gemma3-270m": model},
                        "fallback_chains": {"gemma3-270m": {"chain": []}}})


def _repeated_share(text: str) -> float:
    """Share of non-empty lines that are a repeat of an earlier line (0: no repetition)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return 0.0
    return 1 - len(set(lines)) / len(lines)


def main() -> int:
    rows: list[dict[str, Any]] = []
    answers: dict[str, list[dict[str, Any]]] = {}
    for variant in ("old", "new", "proposed"):
        extra = {"repeat_penalty": 1.3} if variant == "proposed" else None
        answers[variant] = []
        with Router(_config(variant)) as router:
            for prompt in PROMPTS:
                t0 = time.perf_counter()
                reply = router.chat.completions.create(
                    model="gemma3-270m", messages=[{"role": "user", "content": prompt}],
                    max_tokens=MAX_TOKENS, extra_body=extra)
                elapsed = time.perf_counter() - t0
                text = reply.choices[0].message.content or ""
                item = {"prompt": prompt, "answer": text,
                        "finish_reason": reply.choices[0].finish_reason,
                        "echoes_prompt": prompt.lower().rstrip(".?") in text.lower(),
                        "repeated_lines": _repeated_share(text), "seconds": elapsed,
                        "completion_tokens": reply.usage.completion_tokens if reply.usage
                        else None}
                answers[variant].append(item)
                print(f"--- [{variant}] {prompt}\n{text.strip()}\n"
                      f"    ({item['finish_reason']}, {elapsed:.2f} s)")
        got = answers[variant]
        rows.append({
            "variant": variant,
            "echo prompt": sum(a["echoes_prompt"] for a in got),
            "stopped by itself": sum(a["finish_reason"] == "stop" for a in got),
            "mean repeated lines": sum(a["repeated_lines"] for a in got) / len(got),
            "mean tokens": sum(a["completion_tokens"] or 0 for a in got) / len(got),
            "mean s": sum(a["seconds"] for a in got) / len(got),
        })
    by = {r["variant"]: r for r in rows}
    checks = [
        ("new defaults echo the prompt less than the old ones",
         by["new"]["echo prompt"] < by["old"]["echo prompt"],
         f"{by['old']['echo prompt']} → {by['new']['echo prompt']} of {len(PROMPTS)}"),
        ("new defaults stop by themselves more often",
         by["new"]["stopped by itself"] > by["old"]["stopped by itself"],
         f"{by['old']['stopped by itself']} → {by['new']['stopped by itself']} of {len(PROMPTS)}"),
    ]
    return report("first_run", rows, checks, {"prompts": PROMPTS, "max_tokens": MAX_TOKENS,
                                              "answers": answers})


if __name__ == "__main__":
    sys.exit(main())
