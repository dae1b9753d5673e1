"""routekit._core.Graph against the pure-Python twin in tests/plan_reference.py, on ids.

Property tests draw random graphs (self-loops, cycles, duplicate chain entries, random
providers and availability) and require both implementations to agree exactly.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

import plan_reference as ref  # noqa: E402

from routekit import _core  # noqa: E402

T = TypeVar("T")


@dataclass
class Case:
    chains: list[list[int]]
    provider_of: list[int]
    num_providers: int
    model_up: list[bool]
    provider_up: list[bool]

    def build(self) -> _core.Graph:
        g = _core.Graph(
            [f"m{i}" for i in range(len(self.chains))],
            self.provider_of,
            self.num_providers,
            self.chains,
        )
        for i, up in enumerate(self.model_up):
            g.set_model_available(i, up)
        for p, up in enumerate(self.provider_up):
            g.set_provider_available(p, up)
        return g

    def available(self, v: int) -> bool:
        return self.model_up[v] and self.provider_up[self.provider_of[v]]


@st.composite
def cases(draw: st.DrawFn, max_nodes: int = 40) -> Case:
    n = draw(st.integers(0, max_nodes))
    num_providers = draw(st.integers(1 if n else 0, 8))
    node = st.integers(0, max(n - 1, 0))
    chains = [draw(st.lists(node, max_size=4)) for _ in range(n)]
    provider_of = [draw(st.integers(0, num_providers - 1)) for _ in range(n)]
    # Mostly available, as in a live system, but with every mix reachable.
    flag = st.booleans() | st.just(True)
    model_up = [draw(flag) for _ in range(n)]
    provider_up = [draw(flag) for _ in range(num_providers)]
    return Case(chains, provider_of, num_providers, model_up, provider_up)


PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(case=cases(), max_depth=st.integers(0, 6) | st.just(16))
def test_plans_match_reference(case: Case, max_depth: int) -> None:
    g = case.build()
    n = len(case.chains)
    for v in range(n):
        assert g.plan(v, max_depth, True) == ref.plan(case.chains, v, max_depth, case.available)
        full = ref.plan(case.chains, v, max_depth)
        assert g.plan(v, max_depth, False) == full
        assert g.plan_name(f"m{v}", max_depth, False) == full
        names = tuple(f"m{i}" for i in range(n))
        assert g.plan_names(v, max_depth, False, names) == [names[i] for i in full]
    assert g.plans(max_depth, False) == [ref.plan(case.chains, v, max_depth) for v in range(n)]
    assert g.plans(max_depth, True) == [
        ref.plan(case.chains, v, max_depth, case.available) for v in range(n)
    ]


@PROPERTY
@given(case=cases(), limit=st.integers(1, 40) | st.just(1000))
def test_cycles_match_reference(case: Case, limit: int) -> None:
    g = case.build()
    got = g.cycles(limit)
    _check_cycles_are_canonical(case.chains, got)
    assert len(got) <= limit
    try:
        want = ref.cycles(case.chains, limit)
    except ref.TooManyPaths:
        # Too many simple paths to brute-force; the structural checks above still hold,
        # and a graph this tangled has at least `limit` cycles or close to it.
        return
    assert got == want


def _check_cycles_are_canonical(chains: list[list[int]], cycles: list[list[int]]) -> None:
    edges = {(v, w) for v, chain in enumerate(chains) for w in chain}
    for c in cycles:
        assert len(c) >= 2 and c[0] == c[-1]
        body = c[:-1]
        assert len(set(body)) == len(body), "cycle repeats a model"
        assert body[0] == min(body), "cycle not rotated to its smallest id"
        assert all((a, b) in edges for a, b in zip(c, c[1:]))
    assert cycles == sorted(cycles)
    assert len({tuple(c) for c in cycles}) == len(cycles)


@PROPERTY
@given(case=cases())
def test_terminals_and_longest_path_match_reference(case: Case) -> None:
    g = case.build()
    assert g.terminals() == ref.terminals(case.chains)
    path = g.longest_path()
    assert path == ref.longest_path(case.chains)
    edges = {(v, w) for v, chain in enumerate(case.chains) for w in chain}
    assert len(set(path)) == len(path)
    assert all((a, b) in edges for a, b in zip(path, path[1:]))
    assert (path == []) == (not case.chains)


def test_cycle_limit_keeps_the_first_cycles_in_order() -> None:
    # Complete graph on 5 nodes: 84 elementary cycles (every subset of size >= 2,
    # every cyclic order). Each limit must return a prefix of the full sorted list.
    chains = [[w for w in range(5) if w != v] for v in range(5)]
    g = _core.Graph([f"m{i}" for i in range(5)], [0] * 5, 1, chains)
    everything = g.cycles(10_000)
    assert len(everything) == 84
    assert everything == ref.cycles(chains, 10_000)
    for limit in (0, 1, 2, 17, 83, 84, 85):
        assert g.cycles(limit) == everything[:limit]


def test_self_loop_is_a_two_element_cycle() -> None:
    g = _core.Graph(["a", "b"], [0, 0], 1, [[0, 1], [1, 1]])
    assert g.cycles() == [[0, 0], [1, 1]]
    assert g.plan(0) == [0, 1]
    assert g.longest_path() == [0, 1]


def test_flags_are_per_model_and_per_provider() -> None:
    g = _core.Graph(["a", "b", "c"], [0, 1, 1], 2, [[1, 2], [], []])
    assert g.is_available(1) and g.provider_flag(1) and g.model_flag(1)
    g.set_provider_available(1, False)
    assert not g.is_available(1) and g.model_flag(1)
    assert g.plan(0) == [0]
    assert g.plan(0, 16, False) == [0, 1, 2]
    g.set_provider_available(1, True)
    g.set_model_available(2, False)
    assert g.plan(0) == [0, 1]
    # The entry itself is skipped when down, but its chain is still expanded.
    g.set_model_available(0, False)
    assert g.plan(0) == [1]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((["a"], [0], 1, [[1]]), "outside"),
        ((["a"], [0], 1, [[-1]]), "outside"),
        ((["a"], [1], 1, [[]]), "provider id"),
        ((["a"], [-1], 1, [[]]), "provider id"),
        ((["a", "a"], [0, 0], 1, [[], []]), "duplicate"),
        ((["a"], [0, 0], 1, [[]]), "provider_of"),
        ((["a"], [0], 1, [[], []]), "chains"),
        ((["a"], [0], -1, [[]]), "num_providers"),
    ],
)
def test_bad_graphs_raise_value_error(args: tuple[object, ...], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        _core.Graph(*args)


def test_bad_ids_raise_value_error() -> None:
    g = _core.Graph(["a", "b"], [0, 0], 1, [[1], []])
    calls: list[Callable[[], object]] = [
        lambda: g.plan(2),
        lambda: g.plan(-1),
        lambda: g.plan(0, -1),
        lambda: g.plans(-1),
        lambda: g.cycles(-1),
        lambda: g.set_model_available(5, False),
        lambda: g.set_provider_available(1, False),
        lambda: g.provider_flag(-1),
        lambda: g.is_available(2),
        lambda: g.provider_of(2),
        lambda: g.chain(9),
        lambda: g.plan_names(0, 16, True, ("a",)),
        lambda: g.plan_names(2, 16, True, ("a", "b")),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    with pytest.raises(KeyError):
        g.plan_name("zzz")
    assert g.find("b") == 1 and g.find("zzz") == -1
    assert g.chain(0) == [1] and len(g) == 2 and g.names == ["a", "b"]


def _in_small_stack(fn: Callable[[], T]) -> T:
    """Run fn in a thread with a 256 KiB stack: a recursive walk of 10,000 models would
    overflow it (and crash the process), an iterative one does not notice."""
    result: list[T] = []

    def target() -> None:
        result.append(fn())

    old = threading.stack_size(256 * 1024)
    try:
        t = threading.Thread(target=target)
        t.start()
    finally:
        threading.stack_size(old)
    t.join(timeout=60)
    assert not t.is_alive()
    return result[0]


def test_ten_thousand_model_chain_does_not_recurse() -> None:
    n = 10_000
    line = [[i + 1] for i in range(n - 1)] + [[]]
    g = _core.Graph([f"m{i}" for i in range(n)], [i % 7 for i in range(n)], 7, line)
    assert _in_small_stack(lambda: g.plan(0, n, False)) == list(range(n))
    assert g.plan(0, 16, False) == list(range(17))
    assert _in_small_stack(g.longest_path) == list(range(n))
    assert _in_small_stack(g.cycles) == []
    assert g.terminals() == [n - 1]

    ring = [[(i + 1) % n] for i in range(n)]
    r = _core.Graph([f"m{i}" for i in range(n)], [0] * n, 1, ring)
    assert _in_small_stack(r.cycles) == [list(range(n)) + [0]]
    assert _in_small_stack(r.longest_path) == list(range(n))
    assert len(r.plans(3, False)) == n


def test_large_dag_has_no_cycles() -> None:
    # Every model falls back to up to four later ones: acyclic, so the cycle search must
    # find nothing (after one Tarjan pass); the longest path is the exact one.
    n = 10_000
    chains = [[j for j in (i + 1, i + 2, i + 7, i + 50) if j < n] for i in range(n)]
    g = _core.Graph([f"m{i}" for i in range(n)], [i % 9 for i in range(n)], 9, chains)
    assert g.cycles() == []
    assert g.longest_path() == list(range(n))


def test_concurrent_flag_flips_and_plans() -> None:
    # Big enough that plan() runs without the GIL, so planners and flippers really overlap.
    n = 3000
    providers = 8
    chains = [[(i * 7 + k * 13 + 1) % n for k in range(3)] for i in range(n)]
    g = _core.Graph([f"m{i}" for i in range(n)], [i % providers for i in range(n)], providers, chains)
    assert n >= _core.PLAN_RELEASE_GIL_AT
    full = {e: g.plan(e, 16, False) for e in (0, 1, 2, 3)}
    errors: list[str] = []
    stop = threading.Event()

    def flipper(seed: int) -> None:
        k = seed
        for _ in range(20_000):
            if stop.is_set():
                return
            k = (k * 1103515245 + 12345) % 2**31
            if k % 3:
                g.set_model_available(k % n, bool(k & 8))
            else:
                g.set_provider_available(k % providers, bool(k & 8))

    def planner(entry: int) -> None:
        want = full[entry]
        for _ in range(300):
            got = g.plan(entry, 16, True)
            # Whatever the flags were, a plan is the full plan minus some models, in order.
            it = iter(want)
            if not all(any(x == y for y in it) for x in got):
                errors.append(f"plan({entry}) is not a subsequence of the full plan")
                return
            if g.plan(entry, 16, False) != want:
                errors.append(f"plan({entry}) ignoring flags changed")
                return

    threads = [threading.Thread(target=flipper, args=(s,)) for s in (1, 2)]
    threads += [threading.Thread(target=planner, args=(e,)) for e in full]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    for p in range(providers):
        g.set_provider_available(p, True)
    for v in range(n):
        g.set_model_available(v, True)
    assert g.plan(0, 16, True) == full[0]
