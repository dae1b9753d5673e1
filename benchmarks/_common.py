"""Helpers shared by the benchmark scripts: stats, the machine line, table + JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # faultserver, llama_server


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}


def report(name: str, rows: list[dict[str, Any]], checks: list[tuple[str, bool, str]],
           extra: dict[str, Any] | None = None) -> int:
    """Print rows and PASS/FAIL lines, write benchmarks/results/<name>.json; exit status."""
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r[c]).ljust(widths[c]) for c in cols))
    for label, ok, detail in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    data = {"machine": machine(), "rows": rows,
            "checks": [{"target": l, "pass": ok, "detail": d} for l, ok, d in checks],
            **(extra or {})}
    (out / f"{name}.json").write_text(json.dumps(data, indent=2))
    print(f"wrote {out / (name + '.json')}")
    return 0 if all(ok for _, ok, _ in checks) else 1


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)
