"""Per-model facts a request needs, resolved once when a router is built.

Owns ``ModelEntry`` (provider object, provider-side id, generation defaults, effective
timeouts, context window, price, breakers, bulkhead) and ``build_entries``. The hot path only
indexes these; nothing here runs per request. Must not call providers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar


from .. import _constants as C

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .._config.model import Config, ModelConfig, TimeoutConfig
    from .._policy.breakers import Breaker, BreakerBoard
    from .._policy.bulkheads import Bulkhead
    from ..providers._base import Provider

__all__ = ["ModelEntry", "build_entries", "context_window", "first_byte_of", "overlay"]


class ModelEntry:
    """One model of the config, ready for requests. Immutable after the router is built."""

    __slots__ = (
        "name", "provider_name", "kind", "provider", "model_id", "defaults", "timeout",
        "first_byte", "window", "price_in", "price_out", "priced", "bulkhead", "model_breaker",
        "provider_breaker", "in_process",
    )

    def __init__(self, name: str, provider_name: str, kind: str, provider: Provider,
                 model_id: str, defaults: dict[str, Any], timeout: TimeoutConfig,
                 first_byte: float | None, window: int | None,
                 price: tuple[float, float] | None,
                 bulkhead: Bulkhead | None, model_breaker: Breaker,
                 provider_breaker: Breaker) -> None:
        self.name = name
        self.provider_name = provider_name
        self.kind = kind
        self.provider = provider
        self.model_id = model_id
        self.defaults = defaults
        self.timeout = timeout
        self.first_byte = first_byte
        self.window = window
        # None: the config gives no price (cost unknown); (0, 0) is a free model (cost 0).
        self.priced = price is not None
        self.price_in, self.price_out = price if price is not None else (0.0, 0.0)
        self.bulkhead = bulkhead
        self.model_breaker = model_breaker
        self.provider_breaker = provider_breaker
        self.in_process = kind in C.IN_PROCESS_KINDS

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """US dollars for one answer at this model's price; None when it has no price."""
        if not self.priced:
            return None
        return (prompt_tokens * self.price_in + completion_tokens * self.price_out) / 1000.0

    def __repr__(self) -> str:
        return f"ModelEntry({self.name!r} via {self.provider_name!r})"


def context_window(model: ModelConfig) -> int | None:
    """The window the router's pre-check holds a request against (an estimate: 4 characters
    a token). None for an in-process model that does not set one: it counts the prompt
    exactly with its own tokenizer and refuses one that does not fit (the estimate refused
    prompts that fit gemma's n_ctx, and let through CJK ones that did not)."""
    return model.context_window


def first_byte_of(timeout: TimeoutConfig, kind: str) -> float | None:
    """The first-byte limit in seconds for a provider of ``kind`` (None: no limit)."""
    if timeout.first_byte is False:
        return None
    if timeout.first_byte is not None:
        return float(timeout.first_byte)
    return C.DEFAULT_FIRST_BYTE.get(kind)


M = TypeVar("M", bound="BaseModel")


def overlay(base: M, override: M | None) -> M:
    """``base`` with the fields ``override`` sets explicitly (a provider's ``timeout``,
    ``breaker`` or ``health`` over ``routing``'s)."""
    if override is None:
        return base
    fields = override.model_fields_set
    if not fields:
        return base
    return base.model_copy(update={k: getattr(override, k) for k in fields})


def build_entries(config: Config, providers: dict[str, Provider], board: BreakerBoard,
                  bulkheads: dict[str, Bulkhead]) -> dict[str, ModelEntry]:
    out: dict[str, ModelEntry] = {}
    for name, m in config.models.items():
        p = config.providers[m.provider]
        timeout = overlay(config.routing.timeout, p.timeout)
        out[name] = ModelEntry(
            name, m.provider, p.kind, providers[m.provider], m.model_id or name,
            dict(m.defaults), timeout, first_byte_of(timeout, p.kind),
            context_window(m),
            (m.price.input_per_1k, m.price.output_per_1k) if "price" in m.model_fields_set
            else None, bulkheads.get(m.provider),
            board.models[name], board.providers[m.provider],
        )
    return out
