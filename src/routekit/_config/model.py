"""Config data model: providers, models, fallback chains and routing policies (pydantic v2).

This module owns the shape of a config: strict types (no bool/number/text coercion, finite
numbers) and per-field bounds (``values.py``). Checks that need the whole config live in
``checks.py``; reading files and mapping errors to YAML lines in ``loader.py``; graph
figures live in ``_analysis.py``. Nothing here touches the network or loads a model.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .. import _constants as C
from .values import (
    MAX_COUNT,
    MAX_HOURS,
    MAX_PRICE,
    MAX_SECONDS,
    MAX_TOKENS,
    check_base_url,
    looks_like_secret,
    shown_text,
)

ProviderKind = Literal[
    "llama_cpp", "llama_cpp_native", "ollama", "vllm", "llama_cpp_server", "openai"
]

__all__ = [
    "BreakerConfig",
    "HealthConfig",
    "ChainConfig",
    "Config",
    "LimitsConfig",
    "ModelConfig",
    "PriceConfig",
    "ProviderConfig",
    "RetryConfig",
    "RoutingConfig",
    "TimeoutConfig",
]


class _Strict(BaseModel):
    # strict: YAML's ``true`` is not 1, ``'off'`` is not false, ``"30"`` is not 30, a
    # ``!!binary`` value is not a name and a ``!!set`` is not a chain; each is refused with
    # its path instead of being converted. allow_inf_nan=False: no duration, price, rate or
    # MTBF means anything at ``.inf`` or ``.nan``.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              strict=True, allow_inf_nan=False, hide_input_in_errors=True)


class TimeoutConfig(_Strict):
    """Seconds, per attempt on one candidate (the request's own budget is ``routing.deadline``
    or ``create(timeout=)``).

    ``connect``: TCP connect. ``first_byte``: until the answer's first byte (a stream's first
    chunk; with ``stream_upstream`` a non-streaming answer is streamed from the server, so
    this is its first token too); ``None`` takes the kind's default (``_constants``), ``false``
    turns it off. ``read``: the longest silence between bytes once the answer flows (a stall).
    ``total``: the whole attempt.
    """

    connect: float = Field(default=C.DEFAULT_CONNECT_TIMEOUT, gt=0, le=MAX_SECONDS)
    first_byte: float | Literal[False] | None = None
    read: float = Field(default=C.DEFAULT_READ_TIMEOUT, gt=0, le=MAX_SECONDS)
    total: float = Field(default=C.DEFAULT_TOTAL_TIMEOUT, gt=0, le=MAX_SECONDS)

    @field_validator("first_byte", mode="before")
    @classmethod
    def _seconds_or_off(cls, v: Any) -> Any:
        # Checked before pydantic's union, which would read 0 as false (off) and ``true`` as
        # "not a number, not false" without saying what is accepted.
        if v is None or v is False:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("must be a number of seconds, or false to turn it off")
        if isinstance(v, int) and v > MAX_SECONDS:  # float() of a huge int would overflow
            raise ValueError(f"must be at most {MAX_SECONDS:.0f} seconds (a year)")
        if not math.isfinite(v):
            raise ValueError(f"must be a finite number of seconds (or false to turn it off), "
                             f"got {v!r}")
        if not v > 0:
            raise ValueError(f"must be greater than 0 (or false to turn it off), got {v!r}")
        if v > MAX_SECONDS:
            raise ValueError(f"must be at most {MAX_SECONDS:.0f} seconds (a year), got {v!r}")
        return float(v)


class BreakerConfig(_Strict):
    """Circuit breakers, one per provider and one per model (see ``_policy/breakers.py``).

    ``mode``: ``consecutive`` trips after ``failure_threshold`` failures in a row;
    ``rate`` trips when at least ``window_min_calls`` calls in the last ``window`` seconds
    failed at ``failure_rate`` or more; ``auto`` uses ``rate`` for cloud kinds and
    ``consecutive`` for the others. ``trip_on_refused``: a refused connection to a local
    provider trips its breaker at once. An open breaker stays open ``open_initial`` seconds,
    multiplied by ``open_multiplier`` on each trip until it has stayed closed ``open_max``
    seconds (a flapping server backs off as one that stays down), up to ``open_max``; then
    it is half-open and lets ``half_open_probes`` request(s) through at a time. A field no
    breaker reads where it is written is refused (``checks._check_breaker_fields_used``).
    """

    enabled: bool = True
    mode: Literal["auto", "consecutive", "rate"] = "auto"
    failure_threshold: int = Field(default=C.DEFAULT_BREAKER_FAILURES, ge=1, le=MAX_COUNT)
    trip_on_refused: bool = True
    window: float = Field(default=C.DEFAULT_BREAKER_WINDOW, gt=0, le=MAX_SECONDS)
    window_min_calls: int = Field(default=C.DEFAULT_BREAKER_MIN_CALLS, ge=1, le=MAX_COUNT)
    failure_rate: float = Field(default=C.DEFAULT_BREAKER_FAILURE_RATE, gt=0, le=1)
    open_initial: float = Field(default=C.DEFAULT_BREAKER_OPEN_INITIAL, gt=0, le=MAX_SECONDS)
    open_multiplier: float = Field(default=C.DEFAULT_BREAKER_OPEN_MULTIPLIER, ge=1, le=1000)
    open_max: float = Field(default=C.DEFAULT_BREAKER_OPEN_MAX, gt=0, le=MAX_SECONDS)
    half_open_probes: int = Field(default=1, ge=1, le=MAX_COUNT)

    @model_validator(mode="after")
    def _ordered(self) -> BreakerConfig:
        # Only when this block writes both: a provider's block is laid over routing.breaker,
        # so its open_max may rely on routing's open_initial. The loader checks the effective
        # (merged) values of each provider and of routing.breaker with its defaults.
        both = {"open_initial", "open_max"} <= self.model_fields_set
        if both and self.open_max < self.open_initial:
            raise ValueError(
                f"open_max ({self.open_max:g}) must be at least open_initial "
                f"({self.open_initial:g})"
            )
        return self


class HealthConfig(_Strict):
    """Background health probes. ``interval`` seconds between probes of one provider (``None``:
    no probing), spread by up to ``jitter`` (a fraction of the interval); each probe may take
    ``timeout`` seconds. ``path`` replaces the kind's probe path (for example ``/health``)."""

    interval: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    jitter: float = Field(default=C.DEFAULT_HEALTH_JITTER, ge=0, le=1)
    timeout: float = Field(default=C.DEFAULT_HEALTH_TIMEOUT, gt=0, le=MAX_SECONDS)
    path: str | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"must start with '/', got {shown_text(v)}")
        return v


class ProviderConfig(_Strict):
    kind: ProviderKind
    base_url: str | None = None
    # The *name* of an environment variable holding the key. Keys never live in a config.
    api_key_env: str | None = None
    timeout: TimeoutConfig | None = None
    # Bulkhead: at most this many requests in flight on this provider, and this many waiting
    # for a slot (past that, the attempt spills to the next candidate as busy).
    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    max_waiting: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    # Send non-streaming requests as streams and assemble the answer (default: on for local
    # HTTP kinds, off for cloud), so first-byte and stall deadlines can tell a hung server
    # from a slow answer.
    stream_upstream: bool | None = None
    # Fields set here replace those of routing.breaker / routing.health for this provider;
    # health: false turns probing off for it.
    breaker: BreakerConfig | None = None
    health: HealthConfig | Literal[False] | None = None
    # For validate and simulate: the share of time the provider is up, or MTBF/MTTR (hours)
    # from which it follows; providers in one correlation_group fail together.
    availability: float | None = Field(default=None, gt=0, le=1)
    mtbf_hours: float | None = Field(default=None, gt=0, le=MAX_HOURS)
    mttr_hours: float | None = Field(default=None, gt=0, le=MAX_HOURS)
    correlation_group: str | None = Field(default=None, min_length=1)

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_env_name(cls, v: str | None) -> str | None:
        # Never echo the value: it may be the key itself.
        if v is not None and (not v or not all(ch.isalnum() or ch == "_" for ch in v)
                              or looks_like_secret(v)):
            raise ValueError(
                "must be the name of an environment variable (letters, digits, '_', like "
                "OPENAI_API_KEY), not the key itself: put the key in an environment variable "
                "and name that variable here"
            )
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return v if v is None else check_base_url(v)

    @field_validator("health", mode="before")
    @classmethod
    def _health_or_off(cls, v: Any) -> Any:
        # pydantic's Literal[False] takes 0 (0 == False): probes silently off. Only false.
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ValueError(f"expected a mapping or false, got {v!r}")
        return v

    @property
    def effective_base_url(self) -> str | None:
        return self.base_url if self.base_url is not None else C.DEFAULT_BASE_URLS.get(self.kind)

    @model_validator(mode="after")
    def _consistent(self) -> ProviderConfig:
        if (self.mtbf_hours is None) != (self.mttr_hours is None):
            raise ValueError("give 'mtbf_hours' and 'mttr_hours' together")
        if self.mtbf_hours is not None and self.availability is not None:
            raise ValueError("give either 'availability' or 'mtbf_hours'/'mttr_hours', not both")
        if self.max_waiting is not None and self.max_concurrency is None:
            raise ValueError("'max_waiting' needs 'max_concurrency' (the slots to wait for)")
        return self

    @property
    def effective_availability(self) -> float:
        if self.availability is not None:
            return self.availability
        if self.mtbf_hours is not None and self.mttr_hours is not None:
            # mtbf / (mtbf + mttr), written so that the sum cannot overflow.
            return 1.0 / (1.0 + self.mttr_hours / self.mtbf_hours)
        return C.DEFAULT_AVAILABILITY[self.kind]

    @property
    def is_cloud(self) -> bool:
        return self.kind in C.CLOUD_KINDS

    @property
    def effective_stream_upstream(self) -> bool:
        if self.stream_upstream is not None:
            return self.stream_upstream
        return not self.in_process and not self.is_cloud

    @property
    def in_process(self) -> bool:
        return self.kind in C.IN_PROCESS_KINDS


class PriceConfig(_Strict):
    """US dollars per 1,000 tokens."""

    input_per_1k: float = Field(default=0.0, ge=0, le=MAX_PRICE)
    output_per_1k: float = Field(default=0.0, ge=0, le=MAX_PRICE)


class ModelConfig(_Strict):
    provider: str
    # The provider's own id for this model (defaults to the config name).
    model_id: str | None = None
    context_window: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    price: PriceConfig = PriceConfig()
    # Generation defaults merged under each request's own parameters.
    defaults: dict[str, float | int | str | bool | list[str]] = Field(default_factory=dict)
    # In-process (llama_cpp) parameters.
    path: str | None = None
    package: str | None = None
    n_ctx: int | None = Field(default=None, ge=16, le=MAX_TOKENS)
    n_gpu_layers: int | None = Field(default=None, ge=-1, le=MAX_COUNT)
    n_threads: int | None = Field(default=None, ge=1, le=4096)
    chat_format: str | None = None
    warm: bool | None = None  # load at router start; default: True for chain terminals
    queue_size: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    # Set by the loader for models a legacy (chains-only) config names but never declares.
    inferred: bool = False

    @field_validator("model_id")
    @classmethod
    def _named(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty; omit model_id to send the model's own name")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.path is not None and self.package is not None:
            raise ValueError("give either 'path' or 'package', not both")
        return self


class ChainConfig(_Strict):
    chain: list[str] = Field(default_factory=list)
    tier: str | None = Field(default=None, min_length=1)

    @field_validator("chain", mode="before")
    @classmethod
    def _ordered(cls, v: Any) -> Any:
        # A tuple is an ordered list to a Python caller; a set has no order, so strict
        # validation refuses it.
        return list(v) if isinstance(v, tuple) else v


class RetryConfig(_Strict):
    max_attempts: int = Field(default=C.DEFAULT_MAX_ATTEMPTS, ge=1, le=20)
    last_candidate_attempts: int = Field(default=C.DEFAULT_LAST_CANDIDATE_ATTEMPTS, ge=1, le=20)
    backoff_initial: float = Field(default=C.DEFAULT_BACKOFF_INITIAL, ge=0, le=MAX_SECONDS)
    backoff_max: float = Field(default=C.DEFAULT_BACKOFF_MAX, ge=0, le=MAX_SECONDS)
    jitter: float = Field(default=C.DEFAULT_BACKOFF_JITTER, ge=0, le=MAX_SECONDS)
    retry_after_cap: float = Field(default=C.DEFAULT_RETRY_AFTER_CAP, ge=0, le=MAX_SECONDS)


class LimitsConfig(_Strict):
    """Router-wide: at most ``max_concurrency`` requests in flight (a stream counts until it
    is closed) and ``max_waiting`` waiting for a slot; past that, ``create`` raises
    ``Overloaded`` at once."""

    max_concurrency: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    max_waiting: int | None = Field(default=None, ge=0, le=MAX_COUNT)

    @model_validator(mode="after")
    def _paired(self) -> LimitsConfig:
        if self.max_waiting is not None and self.max_concurrency is None:
            raise ValueError("'max_waiting' needs 'max_concurrency' (the slots to wait for)")
        return self


class RoutingConfig(_Strict):
    default_model: str | None = None
    max_depth: int = Field(default=C.DEFAULT_MAX_DEPTH, ge=0, le=256)
    # Whole-request budget across every candidate and retry (seconds); create(timeout=)
    # overrides it per request. Unset: timeout.total.
    deadline: float | None = Field(default=None, gt=0, le=MAX_SECONDS)
    # While later candidates remain, one candidate may wait at most this share of the
    # remaining budget for its first byte, so a hung server leaves time for the fallback.
    first_byte_share: float = Field(default=C.DEFAULT_FIRST_BYTE_SHARE, gt=0, le=1)
    timeout: TimeoutConfig = TimeoutConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    health: HealthConfig = HealthConfig()
    limits: LimitsConfig = LimitsConfig()


class Config(_Strict):
    """A whole routekit config. Build it with ``routekit.load_config``."""

    version: int = 1
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    fallback_chains: dict[str, ChainConfig] = Field(default_factory=dict)
    routing: RoutingConfig = RoutingConfig()

    def provider_of(self, model: str) -> ProviderConfig:
        return self.providers[self.models[model].provider]

    def chain_of(self, model: str) -> list[str]:
        entry = self.fallback_chains.get(model)
        return list(entry.chain) if entry is not None else []
