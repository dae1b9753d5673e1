"""``routekit simulate`` against the router it models: what a hung hop costs (the provider's
``timeout`` laid over ``routing.timeout``, the first-byte limit or else the attempt's total,
the share of the budget per candidate position), checked on a router over fake providers on
a fake clock; and the command's refusals (the seed's range, an empty ``--compare``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_cli import EXAMPLES, as_json, routekit, write  # noqa: E402

from routekit import Router, load_config  # noqa: E402
from routekit._simulate import SimOptions, hang_limit, hang_waits, simulate  # noqa: E402
from routekit.testing import FakeClock, FakeProvider, FakeReply  # noqa: E402

MSG = [{"role": "user", "content": "hi"}]
NO_RETRIES = {"max_attempts": 1, "last_candidate_attempts": 1}  # simulate models none

# (head provider, routing): the probe's configs, and the edges of the rule.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # hang_router.yaml: a cloud kind has no first-byte default; read 0.5 bounds silences
    # only. The router gave up on the hung head after half of the 4 s deadline, not 0.5 s.
    "cloud-no-first-byte": ({"kind": "openai", "api_key_env": "K"},
                            {"deadline": 4, "timeout": {"read": 0.5, "total": 3}}),
    # nofb.yaml: the total (80 s) under the deadline (100 s).
    "cloud-long-total": ({"kind": "openai", "api_key_env": "K"},
                         {"deadline": 100, "timeout": {"read": 5, "total": 80}}),
    # hang_router2.yaml: the provider sets only connect; routing's first_byte still holds.
    "overlay-first-byte": ({"kind": "ollama", "timeout": {"connect": 1}},
                           {"deadline": 30,
                            "timeout": {"first_byte": 0.5, "read": 20, "total": 25}}),
    # first_byte off on the provider, total from routing (no deadline: budget = total).
    "first-byte-off": ({"kind": "vllm", "timeout": {"first_byte": False, "read": 7}},
                       {"timeout": {"total": 40}}),
    # A total past the deadline: the deadline cuts it.
    "deadline-cuts-total": ({"kind": "openai", "api_key_env": "K", "timeout": {"total": 500}},
                            {"deadline": 30}),
    # A first-byte limit shorter than every cap.
    "short-first-byte": ({"kind": "vllm", "timeout": {"first_byte": 2, "total": 9}},
                         {"deadline": 60}),
}


def _cfg(head: dict[str, Any], routing: dict[str, Any], *, last: bool) -> dict[str, Any]:
    """Model ``m`` on provider ``srv`` (down half the time): alone (``last``), or with ``t``
    (always up) behind it."""
    providers: dict[str, Any] = {"srv": {**head, "availability": 0.5}}
    models: dict[str, Any] = {"m": {"provider": "srv"}}
    if not last:
        providers["up"] = {"kind": "ollama", "availability": 1.0}
        models["t"] = {"provider": "up"}
    return {"providers": providers, "models": models,
            "fallback_chains": {"m": {"chain": [] if last else ["t"]}},
            "routing": {**routing, "retry": NO_RETRIES}}


def _router_wait(cfg: dict[str, Any]) -> float:
    """Seconds the router spends on a hung ``srv`` before it answers from ``t`` or gives up."""
    clock = FakeClock()
    fakes = {name: FakeProvider(name, p["kind"], clock=clock,
                                replies=[FakeReply(delay=86_400)] if name == "srv" else [])
             for name, p in cfg["providers"].items()}
    with Router(cfg, clock=clock, providers=fakes, health_probes=False) as router:
        t0 = clock.now()
        try:
            reply = router.chat.completions.create(model="m", messages=MSG)
            assert reply.route.answered_by.model == "t"
        except Exception as exc:  # the plan's only candidate hung
            assert type(exc).__name__ in ("RequestTimeout", "AllCandidatesFailed"), exc
        return clock.now() - t0


def _simulated_wait(cfg: dict[str, Any], *, last: bool) -> float:
    config = load_config(cfg)
    result = simulate(config, SimOptions(requests=400, hang_share=1.0, timeline=False))
    m = result.independent.entries["m"]
    # A hung head delays the answer from ``t``, or (alone) is the time to failure.
    seen = set(m.failure_times) if last else set(m.delays)
    assert len(seen) == 1 and m.hung_hops > 100, seen
    return seen.pop()


@pytest.mark.parametrize("last", [False, True], ids=["fallbacks-left", "last-candidate"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_hung_hop_costs_what_the_routers_attempt_waits(case: str, last: bool) -> None:
    head, routing = CASES[case]
    routed = _router_wait(_cfg(head, routing, last=last))
    simulated = _simulated_wait(_cfg(head, routing, last=last), last=last)
    assert simulated == pytest.approx(routed, abs=1e-6)
    # The report's figures say the same, at a request's start.
    config = load_config(_cfg(head, routing, last=last))
    budget = routing.get("deadline", routing.get("timeout", {}).get("total", 120.0))
    assert hang_waits(config, "srv", budget)[1 if last else 0] == pytest.approx(routed)


def test_the_probes_figures() -> None:
    head, routing = CASES["cloud-no-first-byte"]
    assert _router_wait(_cfg(head, routing, last=False)) == pytest.approx(2.0)  # 0.5 × 4 s
    assert _router_wait(_cfg(head, routing, last=True)) == pytest.approx(3.0)  # the total
    head, routing = CASES["overlay-first-byte"]
    assert hang_limit(load_config(_cfg(head, routing, last=True)), "srv") == 0.5  # not 10


def test_a_provider_timeout_keeps_the_routing_fields_it_does_not_set() -> None:
    # overlay.yaml: routing's first_byte (3 s) holds for 'a', which sets only connect.
    cfg = load_config({
        "providers": {"a": {"kind": "ollama", "availability": 0.5, "timeout": {"connect": 1}},
                      "c": {"kind": "ollama", "availability": 1.0}},
        "models": {"ma": {"provider": "a"}, "mc": {"provider": "c"}},
        "fallback_chains": {"ma": {"chain": ["mc"]}},
        "routing": {"deadline": 60, "timeout": {"first_byte": 3, "read": 20, "total": 30}}})
    assert hang_limit(cfg, "a") == 3.0
    result = simulate(cfg, SimOptions(requests=1_000, hang_share=1.0, timeline=False,
                                      entries={"ma": 1.0}))
    assert set(result.independent.entries["ma"].delays) == {3.0}


def test_the_hung_hop_column_and_help_follow_the_candidate_position(tmp_path: Path) -> None:
    head, routing = CASES["cloud-no-first-byte"]
    path = write(tmp_path, _cfg(head, routing, last=False))
    proc = routekit("simulate", str(path), "--requests", "1000", "--no-timeline", code=0,
                    env={"COLUMNS": "200"})
    row = next(line for line in proc.stdout.splitlines() if line.startswith("│ srv "))
    assert "≤ 2 s, last 3 s" in row  # half of the 4 s deadline, else the 3 s total
    data = as_json(routekit("simulate", str(path), "--requests", "1000", "--no-timeline",
                            "--json", code=0))
    srv = next(p for p in data["providers"] if p["name"] == "srv")
    assert (srv["hang_limit_s"], srv["hang_wait_s"], srv["hang_wait_last_s"]) == (3.0, 2.0, 3.0)
    helptext = " ".join(routekit("simulate", "-h", code=0).stdout.split())
    assert "read/total" not in helptext
    assert "or timeout.total when there is no first-byte limit" in helptext
    assert "the rest of the budget for the last candidate" in helptext


# ---------------------------------------------------------------- the seed


@pytest.mark.parametrize("seed", [-1, 2**64, 2**64 + 5, -(2**64), 10**5000, 1.5, True],
                         ids=["-1", "2**64", "2**64+5", "-2**64", "10**5000", "1.5", "True"])
def test_a_seed_outside_64_bits_is_refused_naming_it(seed: Any) -> None:
    with pytest.raises(ValueError, match=r"^--seed must be a whole number from 0 to "
                       r"18446744073709551615 \(2\*\*64 - 1\), got "):
        SimOptions(seed=seed).check()
    with pytest.raises(ValueError, match="--seed"):
        simulate(load_config(_cfg(*CASES["short-first-byte"], last=True)),
                 SimOptions(requests=10, timeline=False, seed=seed))


def test_the_seeds_ends_are_taken_as_given() -> None:
    cfg = load_config({"providers": {"o": {"kind": "ollama", "availability": 0.5}},
                       "models": {"a": {"provider": "o"}}, "fallback_chains": {"a": {"chain": []}}})
    failed = {seed: simulate(cfg, SimOptions(requests=2_000, timeline=False, seed=seed))
              .independent.entries["a"].failed for seed in (0, 1, 2**64 - 1)}
    assert len(set(failed.values())) == 3  # three seeds, three runs


def test_the_command_refuses_a_seed_outside_64_bits_in_one_line() -> None:
    single = str(EXAMPLES / "v1.7-single-terminal.yaml")
    quick = ("--requests", "1000", "--no-timeline")
    for seed in ("-1", str(2**64), "1" + "0" * 400):
        proc = routekit("simulate", single, *quick, "--seed", seed, code=2)
        assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "--seed must be a whole number from 0 to 18446744073709551615" in proc.stderr
        data = as_json(routekit("simulate", single, *quick, "--seed", seed, "--json", code=2))
        assert data["ok"] is False and data["message"].startswith("--seed must be")
    top = routekit("simulate", single, *quick, "--seed", str(2**64 - 1), code=0)
    assert f"(seed {2**64 - 1})" in top.stdout


# ---------------------------------------------------------------- --compare ""


def test_an_empty_compare_path_is_a_mistake() -> None:
    single = str(EXAMPLES / "v1.7-single-terminal.yaml")
    proc = routekit("simulate", single, "--requests", "1000", "--no-timeline", "--compare", "",
                    code=2)
    assert proc.stdout == "" and "the --compare path is empty" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    data = json.loads(routekit("simulate", single, "--compare", "", "--json", code=2).stdout)
    assert data == {"ok": False, "error": "usage",
                    "message": "the --compare path is empty: give a second config, or leave "
                               "--compare out"}
