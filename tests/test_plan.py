"""routekit._plan.CompiledGraph: the name-level wrapper over the C++ plan core."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

import plan_reference as ref  # noqa: E402

from routekit._config.model import Config  # noqa: E402
from routekit._exceptions import NoRouteError, RouteKitError  # noqa: E402
from routekit._plan import CompiledGraph  # noqa: E402

# The seed config of shared/design/ARCHITECTURE.md, with a provider for each model.
SEED = Config.model_validate(
    {
        "providers": {
            "ollama": {"kind": "ollama"},
            "cloud": {"kind": "openai", "api_key_env": "OPENAI_API_KEY"},
            "local": {"kind": "llama_cpp"},
        },
        "models": {
            "llama3.1:latest": {"provider": "ollama"},
            "gpt-oss:20b-cloud": {"provider": "cloud"},
            "llama-cpp-default": {"provider": "local"},
            "llama-cpp-native": {"provider": "local"},
        },
        "fallback_chains": {
            "llama3.1:latest": {"chain": ["llama-cpp-default", "gpt-oss:20b-cloud"], "tier": "local"},
            "gpt-oss:20b-cloud": {"chain": ["llama-cpp-default", "llama-cpp-native"], "tier": "cloud_entry"},
            "llama-cpp-default": {"chain": ["llama-cpp-native", "gpt-oss:20b-cloud"], "tier": "local"},
            "llama-cpp-native": {"chain": [], "tier": "local"},
        },
    }
)


@pytest.fixture
def seed() -> CompiledGraph:
    return CompiledGraph.from_config(SEED)


def test_seed_graph(seed: CompiledGraph) -> None:
    assert seed.models == ("llama3.1:latest", "gpt-oss:20b-cloud", "llama-cpp-default", "llama-cpp-native")
    assert seed.providers == ("cloud", "local", "ollama")
    assert seed.plan("llama3.1:latest") == [
        "llama3.1:latest",
        "llama-cpp-default",
        "llama-cpp-native",
        "gpt-oss:20b-cloud",
    ]
    # The one cycle, llama-cpp-default <-> gpt-oss:20b-cloud, starts at the model declared
    # first (gpt-oss:20b-cloud) and closes on it.
    assert seed.cycles() == [["gpt-oss:20b-cloud", "llama-cpp-default", "gpt-oss:20b-cloud"]]
    assert seed.terminals() == ["llama-cpp-native"]
    assert seed.longest_path() == ["llama3.1:latest", "llama-cpp-default", "gpt-oss:20b-cloud", "llama-cpp-native"]
    assert seed.provider_of("gpt-oss:20b-cloud") == "cloud"
    assert seed.plans() == {
        "llama3.1:latest": ["llama3.1:latest", "llama-cpp-default", "llama-cpp-native", "gpt-oss:20b-cloud"],
        "gpt-oss:20b-cloud": ["gpt-oss:20b-cloud", "llama-cpp-default", "llama-cpp-native"],
        "llama-cpp-default": ["llama-cpp-default", "llama-cpp-native", "gpt-oss:20b-cloud"],
        "llama-cpp-native": ["llama-cpp-native"],
    }
    assert len(seed) == 4 and "llama-cpp-native" in seed and "nope" not in seed


def test_unavailable_provider_is_skipped_but_its_chain_is_followed(seed: CompiledGraph) -> None:
    seed.set_provider_available("local", False)
    assert not seed.is_available("llama-cpp-default")
    # llama-cpp-default is skipped, yet gpt-oss:20b-cloud is still reached through it.
    assert seed.plan("llama3.1:latest") == ["llama3.1:latest", "gpt-oss:20b-cloud"]
    assert seed.plan("llama-cpp-default") == ["gpt-oss:20b-cloud"]
    assert seed.plan("llama3.1:latest", respect_availability=False)[1] == "llama-cpp-default"
    # plans() ignores flags unless asked.
    assert seed.plans()["llama-cpp-default"][0] == "llama-cpp-default"
    assert seed.plans(respect_availability=True)["llama-cpp-default"] == ["gpt-oss:20b-cloud"]
    seed.set_provider_available("local", True)
    seed.set_model_available("llama-cpp-native", False)
    assert seed.is_available("llama-cpp-default") and not seed.is_available("llama-cpp-native")
    assert seed.plan("gpt-oss:20b-cloud") == ["gpt-oss:20b-cloud", "llama-cpp-default"]
    seed.set_provider_available("cloud", False)
    seed.set_provider_available("ollama", False)
    seed.set_provider_available("local", False)
    assert seed.plan("llama3.1:latest") == []


def test_static_plan_ignores_flags_and_is_computed_once(seed: CompiledGraph) -> None:
    # The request path's plan while every breaker is closed: memoized per model and depth.
    first = seed.static_plan("llama3.1:latest")
    assert first == ("llama3.1:latest", "llama-cpp-default", "llama-cpp-native",
                     "gpt-oss:20b-cloud")
    assert seed.all_available
    seed.set_provider_available("local", False)
    assert not seed.all_available
    assert seed.static_plan("llama3.1:latest") is first  # flags do not change it
    assert seed.plan("llama3.1:latest") == ["llama3.1:latest", "gpt-oss:20b-cloud"]
    assert seed.static_plan("llama3.1:latest", 1) == (
        "llama3.1:latest", "llama-cpp-default", "gpt-oss:20b-cloud")
    with pytest.raises(NoRouteError, match="did you mean 'llama3.1:latest'"):
        seed.static_plan("llama3.1:lates")
    seed.set_model_available("llama-cpp-native", False)
    seed.set_provider_available("local", True)
    assert not seed.all_available  # one flag is still down
    seed.set_model_available("llama-cpp-native", True)
    assert seed.all_available


def test_depth_bound(seed: CompiledGraph) -> None:
    assert seed.plan("llama3.1:latest", max_depth=0) == ["llama3.1:latest"]
    # At depth 1 neither fallback is expanded, so llama-cpp-native is never reached.
    assert seed.plan("llama3.1:latest", max_depth=1) == [
        "llama3.1:latest",
        "llama-cpp-default",
        "gpt-oss:20b-cloud",
    ]
    with pytest.raises(ValueError):
        seed.plan("llama3.1:latest", max_depth=-1)


def test_unknown_model_suggests_the_closest(seed: CompiledGraph) -> None:
    with pytest.raises(NoRouteError) as info:
        seed.plan("llama3.1:lates")
    assert str(info.value) == "unknown model 'llama3.1:lates'; did you mean 'llama3.1:latest'?"
    assert isinstance(info.value, RouteKitError)
    with pytest.raises(NoRouteError, match="known: 'llama3.1:latest'"):
        seed.plan("zzzzzzzz")
    with pytest.raises(NoRouteError, match="did you mean 'llama-cpp-native'"):
        seed.set_model_available("llama-cpp-nativ", False)
    with pytest.raises(NoRouteError):
        seed.is_available("x")
    with pytest.raises(ValueError, match="did you mean 'local'"):
        seed.set_provider_available("locl", False)


def test_bad_graphs_raise_value_error() -> None:
    with pytest.raises(ValueError, match="did you mean 'alpha'"):
        CompiledGraph(["alpha", "beta"], ["p", "p"], {"beta": ["alpah"]})
    with pytest.raises(ValueError, match="chain for unknown model 'gamma'"):
        CompiledGraph(["alpha", "beta"], ["p", "p"], {"gamma": ["alpha"]})
    with pytest.raises(ValueError, match="duplicate"):
        CompiledGraph(["alpha", "alpha"], ["p", "p"], {})
    with pytest.raises(ValueError, match="1 providers given for 2 models"):
        CompiledGraph(["alpha", "beta"], ["p"], {})


def test_empty_graph() -> None:
    g = CompiledGraph([], [], {})
    assert g.models == () and g.providers == ()
    assert g.plans() == {} and g.cycles() == [] and g.terminals() == [] and g.longest_path() == []
    with pytest.raises(NoRouteError):
        g.plan("a")


def test_ten_thousand_model_chain() -> None:
    n = 10_000
    names = [f"model-{i}" for i in range(n)]
    g = CompiledGraph(names, [f"p{i % 5}" for i in range(n)], {a: [b] for a, b in zip(names, names[1:])})
    assert g.plan("model-0", max_depth=n) == names
    assert g.longest_path() == names
    assert g.cycles() == [] and g.terminals() == [names[-1]]


names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=6)


@st.composite
def named_graphs(draw: st.DrawFn) -> tuple[list[str], list[str], dict[str, list[str]]]:
    models = draw(st.lists(names, max_size=25, unique=True))
    providers = draw(st.lists(names, min_size=1, max_size=5, unique=True))
    model_providers = [draw(st.sampled_from(providers)) for _ in models]
    chains: dict[str, list[str]] = {}
    if models:
        for m in models:
            if draw(st.booleans()):
                chains[m] = draw(st.lists(st.sampled_from(models), max_size=4))
    return models, model_providers, chains


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graph=named_graphs(), data=st.data())
def test_wrapper_matches_reference(
    graph: tuple[list[str], list[str], dict[str, list[str]]], data: st.DataObject
) -> None:
    models, model_providers, chains = graph
    got, want = CompiledGraph(models, model_providers, chains), ref.ReferenceGraph(models, model_providers, chains)
    assert got.providers == want.providers
    for m in models:
        if data.draw(st.integers(0, 4)) == 0:
            got.set_model_available(m, False)
            want.set_model_available(m, False)
    for p in want.providers:
        if data.draw(st.integers(0, 3)) == 0:
            got.set_provider_available(p, False)
            want.set_provider_available(p, False)
    depth = data.draw(st.integers(0, 5) | st.just(16))
    for m in models:
        assert got.plan(m, max_depth=depth) == want.plan(m, max_depth=depth)
        assert list(got.static_plan(m, depth)) == want.plan(m, max_depth=depth,
                                                           respect_availability=False)
        assert got.is_available(m) == want.is_available(m)
        assert got.provider_of(m) == want.provider_of(m)
    assert got.plans(max_depth=depth) == want.plans(max_depth=depth)
    assert got.cycles(limit=25) == want.cycles(limit=25)
    assert got.terminals() == want.terminals()
    assert got.longest_path() == want.longest_path()
