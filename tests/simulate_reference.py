"""Pure-Python twin of cpp/simulate.cpp: the same model, the same random streams, slowly.

Tests run both on the same spec and require identical results, the way
tests/plan_reference.py checks the plan core. Keep the order of every random draw in step
with the C++ file.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

MASK = (1 << 64) - 1
INF = math.inf
REFUSED, ERROR, IN_PROCESS = 0, 1, 2
NORMAL, PROBE, FORCED = 0, 1, 2


def _splitmix64(x: int) -> tuple[int, int]:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return x, z ^ (z >> 31)


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (64 - k))) & MASK


class Rng:
    def __init__(self, seed: int, stream: int) -> None:
        x = (seed ^ ((stream * 0xD1B54A32D192ED03) & MASK)) & MASK
        self.s = []
        for _ in range(4):
            x, z = _splitmix64(x)
            self.s.append(z)

    def next(self) -> int:
        s = self.s
        result = (_rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def uniform(self) -> float:
        return (self.next() >> 11) * 2.0**-53

    def exponential(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.uniform())


@dataclass
class EntryStats:
    requests: int = 0
    answered: int = 0
    answered_at: list[int] = field(default_factory=list)
    cost: float = 0.0
    refused_hops: int = 0
    hung_hops: int = 0
    skipped_hops: int = 0
    forced: int = 0
    zero_delay: int = 0
    delays: list[float] = field(default_factory=list)
    failure_times: list[float] = field(default_factory=list)

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.requests, self.answered, self.answered_at, self.cost, self.refused_hops,
                self.hung_hops, self.skipped_hops, self.forced, self.zero_delay, self.delays,
                self.failure_times)


@dataclass
class _Breaker:
    state: int = 0
    until: float = 0.0
    open_for: float = 0.0
    fails: int = 0
    trips: int = 0
    in_flight: int = 0
    window: deque[tuple[float, bool]] = field(default_factory=deque)
    window_fails: int = 0


@dataclass
class _Unit:
    up: bool = True
    hung: bool = False
    next_change: float = INF


@dataclass
class _Request:
    entry: int
    arrival: float
    k: int = 0
    mode: int = NORMAL
    forced: bool = False
    skipped: int = 0  # plan positions (< 64) skipped by a breaker, as bits


class Simulation:
    """Same constructor keywords and methods as ``routekit._core.Simulation``."""

    def __init__(self, *, unit_availability: Sequence[float], unit_mean_up: Sequence[float],
                 unit_mean_down: Sequence[float], provider_unit: Sequence[int],
                 provider_fail_kind: Sequence[int], provider_hang_limit: Sequence[float],
                 provider_breaker: Sequence[tuple[Any, ...]], model_provider: Sequence[int],
                 model_cost: Sequence[float], plans: Sequence[Sequence[int]],
                 entry_weight: Sequence[float], budget: float, first_byte_share: float,
                 refused_cost: float, skip_cost: float, hang_share: float, seed: int,
                 timeline: bool, breakers: bool, rps: float) -> None:
        self.a = list(unit_availability)
        self.mean_up = list(unit_mean_up)
        self.mean_down = list(unit_mean_down)
        self.unit = list(provider_unit)
        self.kind = list(provider_fail_kind)
        self.hang_limit = list(provider_hang_limit)
        self.bspec = [dict(zip(("enabled", "rate_mode", "threshold", "trip_on_refused",
                                "window", "min_calls", "rate", "open_initial", "mult",
                                "open_max", "probes"), b)) for b in provider_breaker]
        self.model_provider = list(model_provider)
        self.model_cost = list(model_cost)
        self.plans = [list(p) for p in plans]
        self.cumulative: list[float] = []
        total = 0.0
        for w in entry_weight:
            total += w
            self.cumulative.append(total)
        self.budget = budget
        self.share = first_byte_share
        self.refused_cost = refused_cost
        self.skip_cost = skip_cost
        self.hang_share = hang_share
        self.timeline = timeline
        self.breakers = breakers and timeline
        self.rps = rps
        self.rng = Rng(seed, 0)
        self.st = [EntryStats(answered_at=[0] * len(p)) for p in self.plans]
        self.now = 0.0
        self.events: list[tuple[float, int, _Request]] = []
        self.seq = 0
        if timeline:
            self.breaker = [_Breaker() for _ in self.unit]
            self.units = [_Unit() for _ in self.a]
            self.unit_rng = [Rng(seed, 1 + u) for u in range(len(self.a))]
            for u, s in enumerate(self.units):
                if self.a[u] >= 1.0:
                    continue
                rng = self.unit_rng[u]
                s.up = rng.uniform() < self.a[u]
                if not s.up:
                    s.hung = rng.uniform() < self.hang_share
                s.next_change = rng.exponential(self.mean_up[u] if s.up else self.mean_down[u])
            self.next_arrival = self.rng.exponential(1.0 / rps)

    def stats(self) -> list[tuple[Any, ...]]:
        return [s.as_tuple() for s in self.st]

    def _pick(self) -> int:
        x = self.rng.uniform() * self.cumulative[-1]
        return min(bisect.bisect_right(self.cumulative, x), len(self.cumulative) - 1)

    def _hang_wait(self, p: int, elapsed: float, later: bool) -> float:
        remaining = self.budget - elapsed
        cap = self.share * remaining if later else remaining
        return min(self.hang_limit[p], cap)

    # -- independent draws

    def run_requests(self, n: int) -> None:
        for _ in range(n):
            self._independent()

    def _independent(self) -> None:
        e = self._pick()
        st = self.st[e]
        st.requests += 1
        drawn: dict[int, tuple[bool, bool]] = {}
        plan = self.plans[e]
        t = 0.0
        for k, m in enumerate(plan):
            if t >= self.budget:
                break
            p = self.model_provider[m]
            u = self.unit[p]
            if u not in drawn:
                down = not (self.rng.uniform() < self.a[u])
                hung = down and self.rng.uniform() < self.hang_share
                drawn[u] = (down, hung)
            down, hung = drawn[u]
            if not down:
                st.answered += 1
                st.answered_at[k] += 1
                st.cost += self.model_cost[m]
                if t == 0.0:
                    st.zero_delay += 1
                else:
                    st.delays.append(t)
                return
            if hung and self.kind[p] != IN_PROCESS:
                t += self._hang_wait(p, t, k + 1 < len(plan))
                st.hung_hops += 1
            else:
                t += self.refused_cost
                st.refused_hops += 1
        st.failure_times.append(t)

    # -- timeline

    def run_until(self, t_end: float) -> None:
        while True:
            te = self.events[0][0] if self.events else INF
            if te <= self.next_arrival:
                if te >= t_end:
                    break
                t, _, req = heapq.heappop(self.events)
                self.now = t
                self._resume(req, t)
            else:
                if self.next_arrival >= t_end:
                    break
                self.now = self.next_arrival
                self._arrive(self.now)
                self.next_arrival += self.rng.exponential(1.0 / self.rps)
        self.now = max(self.now, t_end)

    def finish(self) -> None:
        while self.events:
            t, _, req = heapq.heappop(self.events)
            self.now = max(self.now, t)
            self._resume(req, t)

    def _unit_at(self, u: int, t: float) -> _Unit:
        s = self.units[u]
        rng = self.unit_rng[u]
        while s.next_change <= t:
            if s.up:
                s.up = False
                s.hung = rng.uniform() < self.hang_share
                s.next_change += rng.exponential(self.mean_down[u])
            else:
                s.up = True
                s.next_change += rng.exponential(self.mean_up[u])
        return s

    def _arrive(self, t: float) -> None:
        e = self._pick()
        self.st[e].requests += 1
        req = _Request(e, t)
        if self.breakers:
            plan = self.plans[e]
            if not any(self._would_admit(self.model_provider[m], t) for m in plan):
                best, soonest = 0, INF
                for k, m in enumerate(plan):
                    at = self._reopens_at(self.model_provider[m], t)
                    if at < soonest:
                        best, soonest = k, at
                req.k = best
                req.forced = True
                self.st[e].forced += 1
        self._walk(req, t)

    def _walk(self, req: _Request, t: float) -> None:
        plan = self.plans[req.entry]
        st = self.st[req.entry]
        while True:
            if req.k >= len(plan) or t - req.arrival >= self.budget:
                if (req.k >= len(plan) and not req.forced and req.skipped
                        and t - req.arrival < self.budget):
                    req.k = self._last_resort(plan, req, t)
                    req.forced = True
                    st.forced += 1
                    continue
                st.failure_times.append(t - req.arrival)
                return
            m = plan[req.k]
            p = self.model_provider[m]
            mode = FORCED if req.forced else NORMAL
            if self.breakers and not req.forced:
                a = self._admit(p, t)
                if a == 0:
                    if req.k < 64:
                        req.skipped |= 1 << req.k
                    st.skipped_hops += 1
                    t += self.skip_cost
                    req.k += 1
                    continue
                if a == 2:
                    mode = PROBE
            req.mode = mode
            s = self._unit_at(self.unit[p], t)
            if s.up:
                self._on_success(p, t, mode)
                st.answered += 1
                st.answered_at[req.k] += 1
                st.cost += self.model_cost[m]
                d = t - req.arrival
                if d == 0.0:
                    st.zero_delay += 1
                else:
                    st.delays.append(d)
                return
            if s.hung and self.kind[p] != IN_PROCESS:
                later = not req.forced and (req.k + 1 < len(plan) or req.skipped != 0)
                w = self._hang_wait(p, t - req.arrival, later)
                st.hung_hops += 1
                heapq.heappush(self.events, (t + w, self.seq, req))
                self.seq += 1
                return
            t += self.refused_cost
            st.refused_hops += 1
            self._on_failure(p, t, self.kind[p] == REFUSED, mode)
            if req.forced:
                st.failure_times.append(t - req.arrival)
                return
            req.k += 1

    def _resume(self, req: _Request, t: float) -> None:
        p = self.model_provider[self.plans[req.entry][req.k]]
        self._on_failure(p, t, False, req.mode)
        if req.forced:
            self.st[req.entry].failure_times.append(t - req.arrival)
            return
        req.k += 1
        self._walk(req, t)

    # -- breakers

    def _last_resort(self, plan: list[int], req: _Request, t: float) -> int:
        """The skipped hop (of the first 64) that reopens soonest; ties: the earliest."""
        best, soonest = len(plan), INF
        for j in range(min(len(plan), 64)):
            if req.skipped >> j & 1:
                at = self._reopens_at(self.model_provider[plan[j]], t)
                if at < soonest:
                    best, soonest = j, at
        return best

    def _would_admit(self, p: int, t: float) -> bool:
        spec, b = self.bspec[p], self.breaker[p]
        if not spec["enabled"] or b.state == 0:
            return True
        if b.state == 1:
            return t >= b.until
        return b.in_flight < spec["probes"]

    def _reopens_at(self, p: int, t: float) -> float:
        b = self.breaker[p]
        return b.until if b.state == 1 else t

    def _admit(self, p: int, t: float) -> int:
        spec, b = self.bspec[p], self.breaker[p]
        if not spec["enabled"] or b.state == 0:
            return 1
        if b.state == 1:
            if t < b.until:
                return 0
            b.state = 2
            b.in_flight = 0
        if b.in_flight < spec["probes"]:
            b.in_flight += 1
            return 2
        return 0

    def _prune(self, b: _Breaker, spec: dict[str, Any], t: float) -> None:
        while b.window and b.window[0][0] <= t - spec["window"]:
            if b.window[0][1]:
                b.window_fails -= 1
            b.window.popleft()

    def _on_success(self, p: int, t: float, mode: int) -> None:
        if not self.breakers:
            return
        spec, b = self.bspec[p], self.breaker[p]
        if not spec["enabled"]:
            return
        if mode != NORMAL:
            self.breaker[p] = _Breaker()
            return
        if b.state != 0:
            return
        if spec["rate_mode"]:
            b.window.append((t, False))
            self._prune(b, spec, t)
        else:
            b.fails = 0

    def _on_failure(self, p: int, t: float, refused: bool, mode: int) -> None:
        if not self.breakers:
            return
        spec, b = self.bspec[p], self.breaker[p]
        if not spec["enabled"] or mode == FORCED:
            return
        if mode == PROBE:
            self._trip(p, t)
            return
        if b.state != 0:
            return
        if refused and spec["trip_on_refused"]:
            self._trip(p, t)
            return
        if spec["rate_mode"]:
            b.window.append((t, True))
            b.window_fails += 1
            self._prune(b, spec, t)
            if (len(b.window) >= spec["min_calls"]
                    and b.window_fails >= spec["rate"] * len(b.window)):
                self._trip(p, t)
        else:
            b.fails += 1
            if b.fails >= spec["threshold"]:
                self._trip(p, t)

    def _trip(self, p: int, t: float) -> None:
        spec, b = self.bspec[p], self.breaker[p]
        b.trips += 1
        b.open_for = (spec["open_initial"] if b.trips == 1
                      else min(b.open_for * spec["mult"], spec["open_max"]))
        b.until = t + b.open_for
        b.state = 1
        b.fails = 0
        b.in_flight = 0
        b.window.clear()
        b.window_fails = 0
