"""The route: what happened to one request, attempt by attempt.

Every response carries its own ``Route`` (no "last route" global), so routes stay correct under
concurrency. Messages stored here have already passed through ``redact`` — API keys never
reach a route, a log line or an error.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

__all__ = ["Attempt", "Outcome", "Route"]

Outcome = Literal["ok", "error", "skipped"]


# Immutable records built on every request: NamedTuples (0.4 µs to build, where a frozen
# dataclass of this size took 3.8 µs here).
class Attempt(NamedTuple):
    """One candidate's part in a route. ``tries`` counts calls made (1 + retries)."""

    model: str
    provider: str
    kind: str
    outcome: Outcome
    tries: int = 0
    error_type: str | None = None
    error: str | None = None
    status_code: int | None = None
    ttfb_ms: float | None = None
    duration_ms: float = 0.0
    # US dollars at the model's configured price, from the answer's usage (None: no price,
    # or the provider reported no usage).
    cost_usd: float | None = None
    # When this candidate's turn began, in ms from the start of the request.
    started_ms: float = 0.0

    @property
    def retries(self) -> int:
        return max(0, self.tries - 1)

    def describe(self) -> str:
        head = f"{self.model} via {self.provider} ({self.kind}): {self.outcome}"
        if self.error_type:
            head += f" — {self.error_type}: {self.error}"
        tail = f" [{self.duration_ms:.1f} ms"
        if self.retries:
            tail += f", {self.retries} retr{'y' if self.retries == 1 else 'ies'}"
        return head + tail + "]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "kind": self.kind,
            "outcome": self.outcome,
            "tries": self.tries,
            "retries": self.retries,
            "error_type": self.error_type,
            "error": self.error,
            "status_code": self.status_code,
            "ttfb_ms": self.ttfb_ms,
            "duration_ms": self.duration_ms,
            "cost_usd": self.cost_usd,
            "started_ms": self.started_ms,
        }


class Route(NamedTuple):
    """The whole story of one request: the model asked for, each attempt, who answered.

    ``endpoint`` says which API was routed: ``"chat.completions"``, or ``"completions"`` for a
    legacy text completion (a prompt continued as text, not a chat)."""

    requested: str
    attempts: tuple[Attempt, ...] = ()
    total_ms: float = 0.0
    endpoint: str = "chat.completions"

    @property
    def answered_by(self) -> Attempt | None:
        for attempt in self.attempts:
            if attempt.outcome == "ok":
                return attempt
        return None

    @property
    def ttfb_ms(self) -> float | None:
        ok = self.answered_by
        return ok.ttfb_ms if ok is not None else None

    @property
    def cost_usd(self) -> float | None:
        """What the answer cost at the configured prices (None: no priced model answered)."""
        ok = self.answered_by
        return ok.cost_usd if ok is not None else None

    def as_dict(self) -> dict[str, Any]:
        ok = self.answered_by
        return {
            "requested": self.requested,
            "endpoint": self.endpoint,
            "answered_by": ok.model if ok else None,
            "provider": ok.provider if ok else None,
            "total_ms": self.total_ms,
            "cost_usd": self.cost_usd,
            "attempts": [a.as_dict() for a in self.attempts],
        }
