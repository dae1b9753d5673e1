"""Pure-Python twin of routekit's C++ plan core (RapidFuzz's habit: one semantics, two
implementations, differential tests between them).

Written for obviousness, not speed: each function is the definition the C++ code must
match. Used by tests/test_core.py, tests/test_plan.py and benchmarks/bench_plan.py; not
part of the installed package.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Hashable, Mapping, Sequence, TypeVar

N = TypeVar("N", bound=Hashable)

__all__ = [
    "ReferenceGraph",
    "TooManyPaths",
    "cycles",
    "longest_path",
    "plan",
    "terminals",
]


def plan(
    chains: Mapping[N, Sequence[N]] | Sequence[Sequence[N]],
    entry: N,
    max_depth: int,
    available: Callable[[N], bool] | None = None,
) -> list[N]:
    """visit(entry, 0); visit(n, d): if n seen: return; mark seen; if available(n): emit n;
    if d == max_depth: return; for c in chain[n] in order: visit(c, d + 1)."""
    if max_depth < 0:
        raise ValueError("max_depth must be >= 0")
    seen: set[N] = set()
    out: list[N] = []
    chain_of: Any = chains  # a dict by name or a list by id: both index with chain_of[n]

    def visit(n: N, d: int) -> None:
        if n in seen:
            return
        seen.add(n)
        if available is None or available(n):
            out.append(n)
        if d == max_depth:
            return
        for c in chain_of[n]:
            visit(c, d + 1)

    visit(entry, 0)
    return out


class TooManyPaths(Exception):
    """The brute-force cycle search passed its step budget."""


def cycles(chains: Sequence[Sequence[int]], limit: int, *, budget: int = 200_000) -> list[list[int]]:
    """Every elementary cycle, by brute force over simple paths: from each start s, walk
    simple paths through nodes greater than s and record each edge back to s. Each cycle
    is closed on its smallest id; the whole list is sorted, then cut to ``limit``.
    Raises TooManyPaths after ``budget`` path steps."""
    n = len(chains)
    succ = [sorted(set(c)) for c in chains]
    found: set[tuple[int, ...]] = set()
    steps = 0
    for s in range(n):
        path = [s]
        on_path = {s}

        def walk(v: int) -> None:
            nonlocal steps
            for w in succ[v]:
                steps += 1
                if steps > budget:
                    raise TooManyPaths
                if w == s:
                    found.add((*path, s))
                elif w > s and w not in on_path:
                    path.append(w)
                    on_path.add(w)
                    walk(w)
                    path.pop()
                    on_path.discard(w)

        walk(s)
    return [list(c) for c in sorted(found)][:limit]


def terminals(chains: Sequence[Sequence[int]]) -> list[int]:
    return [i for i, c in enumerate(chains) if not c]


def longest_path(chains: Sequence[Sequence[int]]) -> list[int]:
    """Drop the back edges of a DFS (roots in id order, children in chain order), then
    take the longest path of the DAG that remains; ties: the smallest id list."""
    n = len(chains)
    if n == 0:
        return []
    state = [0] * n  # 0 new, 1 on the DFS stack, 2 done
    dag: list[set[int]] = [set() for _ in range(n)]

    def dfs(v: int) -> None:
        state[v] = 1
        for w in chains[v]:
            if state[w] == 1:
                continue  # back edge
            dag[v].add(w)
            if state[w] == 0:
                dfs(w)
        state[v] = 2

    for root in range(n):
        if state[root] == 0:
            dfs(root)

    best: dict[int, tuple[int, ...]] = {}

    def rank(p: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        return (-len(p), p)  # longer first, then the smaller id list

    def longest_from(v: int) -> tuple[int, ...]:
        if v not in best:
            tails = [longest_from(w) for w in dag[v]]
            tail = min(tails, key=rank) if tails else ()
            best[v] = (v, *tail)
        return best[v]

    longest: tuple[int, ...] = min([longest_from(v) for v in range(n)], key=rank)
    return list(longest)


class ReferenceGraph:
    """Same surface as routekit._plan.CompiledGraph, in plain Python dicts and sets."""

    def __init__(
        self,
        models: Sequence[str],
        model_providers: Sequence[str],
        chains: Mapping[str, Sequence[str]],
    ) -> None:
        self.models = tuple(models)
        self.providers = tuple(sorted(set(model_providers)))
        self._provider = dict(zip(self.models, model_providers))
        self._chains = {m: list(chains.get(m, ())) for m in self.models}
        self._index = {m: i for i, m in enumerate(self.models)}
        self._model_up = dict.fromkeys(self.models, True)
        self._provider_up = dict.fromkeys(self.providers, True)

    def _ids(self) -> list[list[int]]:
        return [[self._index[c] for c in self._chains[m]] for m in self.models]

    def _available(self, model: str) -> bool:
        return self._model_up[model] and self._provider_up[self._provider[model]]

    def plan(self, model: str, *, max_depth: int = 16, respect_availability: bool = True) -> list[str]:
        if model not in self._chains:
            close = difflib.get_close_matches(model, self.models, n=1)
            raise KeyError(f"unknown model {model!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        return plan(self._chains, model, max_depth, self._available if respect_availability else None)

    def plans(self, *, max_depth: int = 16, respect_availability: bool = False) -> dict[str, list[str]]:
        return {
            m: self.plan(m, max_depth=max_depth, respect_availability=respect_availability)
            for m in self.models
        }

    def cycles(self, *, limit: int = 1000) -> list[list[str]]:
        return [[self.models[i] for i in c] for c in cycles(self._ids(), limit)]

    def terminals(self) -> list[str]:
        return [self.models[i] for i in terminals(self._ids())]

    def longest_path(self) -> list[str]:
        return [self.models[i] for i in longest_path(self._ids())]

    def set_model_available(self, model: str, available: bool) -> None:
        self._model_up[model] = available

    def set_provider_available(self, provider: str, available: bool) -> None:
        self._provider_up[provider] = available

    def is_available(self, model: str) -> bool:
        return self._available(model)

    def provider_of(self, model: str) -> str:
        return self._provider[model]
