"""The short form of benchmarks/soak.py: concurrent requests through two loopback server
processes while the first is killed and restarted. Nothing lost, nothing answered twice.
(That traffic returns to a restarted server is proven deterministically in
tests/test_resilience.py; here the last third may finish before the first probe.)"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import soak  # noqa: E402


def test_soak_short_form_loses_nothing() -> None:
    for result in soak.run(requests=240, concurrency=30):
        assert result["lost"] == 0, result
        assert result["answered_twice"] == 0, result
        assert result["events"] == ["killed at 80", "restarted at 160"]
        by_model = result["by_model"]
        assert by_model.get("m1", 0) >= 60  # the fallback took over while m0 was dead
        assert by_model.get("m0", 0) >= 80 - 30  # m0 served until it was killed
