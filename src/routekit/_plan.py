"""Fallback plans: the Python face of the compiled graph in ``routekit._core``.

This module owns name <-> id mapping for the C++ plan core (reached through ``_cpp``, the one
module that imports ``routekit._core``). It knows nothing about providers beyond their names, and never
touches the network, a model or a config file (``from_config`` reads an already loaded
``Config``).
"""

from __future__ import annotations

import difflib
import threading
from typing import TYPE_CHECKING, Mapping, Sequence

from . import _constants as C
from . import _cpp as _core
from ._exceptions import NoRouteError

if TYPE_CHECKING:
    from ._config.model import Config

__all__ = ["CompiledGraph", "Simulation"]

# The Monte Carlo loop of ``routekit simulate`` (``_simulate.py`` drives it).
Simulation = _core.Simulation


def _did_you_mean(kind: str, name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"unknown {kind} {name!r}; did you mean {close[0]!r}?"
    shown = ", ".join(repr(k) for k in known[:8])
    more = ", ..." if len(known) > 8 else ""
    return f"unknown {kind} {name!r}; known: {shown}{more}" if known else f"unknown {kind} {name!r}"


class CompiledGraph:
    """Immutable snapshot of a fallback graph compiled to integer ids.

    Plans follow each model's chain depth first, in chain order, listing every model once
    and going no deeper than ``max_depth`` hops; a model that is unavailable (its own flag,
    or its provider's) is left out of the plan but its chain is still followed.

    Thread safety: everything may be called from any thread at any time. The graph never
    changes after construction; availability flags are atomics inside the core, so a plan
    running while another thread flips a flag sees the flag either before or after.
    """

    __slots__ = ("models", "providers", "_core", "_index", "_provider_index", "_static",
                 "_down", "_flags_lock")

    models: tuple[str, ...]
    providers: tuple[str, ...]

    def __init__(
        self,
        models: Sequence[str],
        model_providers: Sequence[str],
        chains: Mapping[str, Sequence[str]],
    ) -> None:
        """``models[i]`` is served by ``model_providers[i]``; ``chains`` maps a model to its
        fallbacks (models absent from it have an empty chain). Raises ValueError for
        mismatched lengths, duplicate models, or a chain naming an unknown model."""
        self.models = tuple(models)
        if len(model_providers) != len(self.models):
            raise ValueError(
                f"{len(model_providers)} providers given for {len(self.models)} models"
            )
        self.providers = tuple(sorted(set(model_providers)))
        self._index: dict[str, int] = {}
        for i, m in enumerate(self.models):
            if self._index.setdefault(m, i) != i:
                raise ValueError(f"duplicate model {m!r}")
        self._provider_index = {p: i for i, p in enumerate(self.providers)}
        # static_plan's memo: (model, max_depth) -> plan ignoring availability. The graph
        # never changes, so neither do these; at most one entry per model and depth.
        self._static: dict[tuple[str, int], tuple[str, ...]] = {}
        # The flags set down through this object, ("m", id) / ("p", id) -> who holds each
        # down: "hand" (the public setters) and/or "breaker" (the router's breakers). A
        # flag is up in the core only when nobody holds it down, so a breaker closing does
        # not undo a hand mark. all_available: nothing is held down.
        self._down: dict[tuple[str, int], set[str]] = {}
        self._flags_lock = threading.Lock()  # the core's flag and _down change together
        for m in chains:
            if m not in self._index:
                raise ValueError(
                    "chain for " + _did_you_mean("model", m, self.models)
                )
        ids: list[list[int]] = []
        for m in self.models:
            row: list[int] = []
            for target in chains.get(m, ()):
                j = self._index.get(target)
                if j is None:
                    raise ValueError(
                        f"chain of {m!r}: " + _did_you_mean("model", target, self.models)
                    )
                row.append(j)
            ids.append(row)
        self._core = _core.Graph(
            list(self.models),
            [self._provider_index[p] for p in model_providers],
            len(self.providers),
            ids,
        )

    @classmethod
    def from_config(cls, config: Config) -> CompiledGraph:
        """Models in ``config.models`` order, chains from ``config.fallback_chains``."""
        models = list(config.models)
        return cls(
            models,
            [config.models[m].provider for m in models],
            {name: entry.chain for name, entry in config.fallback_chains.items()},
        )

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and model in self._index

    def __repr__(self) -> str:
        return f"<CompiledGraph: {len(self.models)} models, {len(self.providers)} providers>"

    def _id(self, model: str) -> int:
        i = self._index.get(model)
        if i is None:
            raise NoRouteError(_did_you_mean("model", model, self.models))
        return i

    def plan(
        self,
        model: str,
        *,
        max_depth: int = C.DEFAULT_MAX_DEPTH,
        respect_availability: bool = True,
    ) -> list[str]:
        """Candidates for ``model``, in the order to try them. Unknown model: NoRouteError.
        An empty list means every reachable candidate is unavailable."""
        # The hot path of every request: one dict lookup and one C++ call, which maps ids
        # to names by indexing the models tuple (cheaper than building ints to map here).
        i = self._index.get(model)
        if i is None:
            raise NoRouteError(_did_you_mean("model", model, self.models))
        return self._core.plan_names(i, max_depth, respect_availability, self.models)

    def static_plan(self, model: str, max_depth: int = C.DEFAULT_MAX_DEPTH) -> tuple[str, ...]:
        """``plan(model, respect_availability=False)``, computed once per model and depth.

        The request path's plan while ``all_available`` (every flag up, so the two plans
        agree), and its list of candidates otherwise: a dict lookup instead of a call into
        the core. That call costs ~1 µs warm but
        ~40 µs when the caches are cold, as they are after an in-process decode or an idle
        spell (measured on the 2-core dev VM, 20 ms idle; bench_ttfb's routing share)."""
        key = (model, max_depth)
        found = self._static.get(key)
        if found is None:
            found = tuple(self.plan(model, max_depth=max_depth, respect_availability=False))
            self._static[key] = found
        return found

    def plans(
        self, *, max_depth: int = C.DEFAULT_MAX_DEPTH, respect_availability: bool = False
    ) -> dict[str, list[str]]:
        """The plan of every model (computed with the GIL released)."""
        names = self.models
        rows = self._core.plans(max_depth, respect_availability)
        return {m: [names[i] for i in row] for m, row in zip(names, rows)}

    def cycles(self, *, limit: int = 1000) -> list[list[str]]:
        """Every elementary cycle as a closed path (``['a', 'b', 'a']``), starting at its
        earliest model in ``models`` order; sorted by model position; at most ``limit``
        (the first ``limit`` of that order)."""
        names = self.models
        return [[names[i] for i in c] for c in self._core.cycles(limit)]

    def terminals(self) -> list[str]:
        """Models with an empty chain, in ``models`` order."""
        names = self.models
        return [names[i] for i in self._core.terminals()]

    def longest_path(self) -> list[str]:
        """The longest simple chain of fallbacks (exact when the graph has no cycles; with
        cycles, the longest path once DFS back edges are dropped). Ties: earliest models."""
        names = self.models
        return [names[i] for i in self._core.longest_path()]

    @property
    def all_available(self) -> bool:
        """No model or provider flag is down: every plan is its ``static_plan``."""
        return not self._down

    def set_model_available(self, model: str, available: bool, *,
                            by: str = "hand") -> None:
        """Take a model out of plans, or put it back. ``by`` names who does: a model taken
        out by hand stays out, whatever its breaker does, until put back by hand (the
        router's breakers use ``by="breaker"``)."""
        i = self._id(model)
        with self._flags_lock:
            self._core.set_model_available(i, self._mark(("m", i), available, by))

    def set_provider_available(self, provider: str, available: bool, *,
                               by: str = "hand") -> None:
        """``set_model_available`` for all of a provider's models. Unknown provider:
        ValueError (it is a programming error, not a routing one)."""
        p = self._provider_index.get(provider)
        if p is None:
            raise ValueError(_did_you_mean("provider", provider, self.providers))
        with self._flags_lock:
            self._core.set_provider_available(p, self._mark(("p", p), available, by))

    def _mark(self, flag: tuple[str, int], available: bool, by: str) -> bool:
        """Record who holds ``flag`` down; whether it is up now. A request reading
        all_available just before a change plans as before it, which the core's atomics
        allow too."""
        holders = self._down.get(flag)
        if available:
            if holders is not None:
                holders.discard(by)
                if not holders:
                    del self._down[flag]
                    return True
                return False
            return True
        if holders is None:
            self._down[flag] = {by}
        else:
            holders.add(by)
        return False

    def down_by_hand(self, model: str) -> bool:
        """Is the model, or its provider, taken out of plans by hand?"""
        i = self._id(model)
        p = self._core.provider_of(i)
        return any("hand" in self._down.get(flag, ()) for flag in (("m", i), ("p", p)))

    def is_available(self, model: str) -> bool:
        """The model's own flag and its provider's flag are both up."""
        return self._core.is_available(self._id(model))

    def provider_of(self, model: str) -> str:
        return self.providers[self._core.provider_of(self._id(model))]
