"""Config data model: providers, models, fallback chains and routing policies (pydantic v2).

This module owns the shape of a config and the checks that need the whole config (cross
references). Reading files and mapping errors to YAML lines lives in ``_loader.py``; graph
figures live in ``_analysis.py``. Nothing here touches the network or loads a model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import _constants as C

ProviderKind = Literal[
    "llama_cpp", "llama_cpp_native", "ollama", "vllm", "llama_cpp_server", "openai"
]

__all__ = [
    "BreakerConfig",
    "BudgetConfig",
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
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class TimeoutConfig(_Strict):
    """Seconds. ``connect``: TCP connect; ``read``: between bytes; ``total``: whole request."""

    connect: float = Field(default=C.DEFAULT_CONNECT_TIMEOUT, gt=0)
    read: float = Field(default=C.DEFAULT_READ_TIMEOUT, gt=0)
    total: float = Field(default=C.DEFAULT_TOTAL_TIMEOUT, gt=0)


class ProviderConfig(_Strict):
    kind: ProviderKind
    base_url: str | None = None
    # The *name* of an environment variable holding the key. Keys never live in a config.
    api_key_env: str | None = None
    timeout: TimeoutConfig | None = None
    max_concurrency: int | None = Field(default=None, ge=1)
    availability: float | None = Field(default=None, gt=0, le=1)

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or not all(ch.isalnum() or ch == "_" for ch in v)):
            raise ValueError(
                "must be the name of an environment variable (letters, digits, '_'), "
                "not the key itself"
            )
        return v

    @property
    def effective_base_url(self) -> str | None:
        return self.base_url or C.DEFAULT_BASE_URLS.get(self.kind)

    @property
    def effective_availability(self) -> float:
        return self.availability if self.availability is not None else C.DEFAULT_AVAILABILITY[self.kind]

    @property
    def in_process(self) -> bool:
        return self.kind in C.IN_PROCESS_KINDS


class PriceConfig(_Strict):
    """US dollars per 1,000 tokens."""

    input_per_1k: float = Field(default=0.0, ge=0)
    output_per_1k: float = Field(default=0.0, ge=0)


class BudgetConfig(_Strict):
    max_usd_per_day: float | None = Field(default=None, ge=0)
    max_requests_per_minute: int | None = Field(default=None, ge=1)


class ModelConfig(_Strict):
    provider: str
    # The provider's own id for this model (defaults to the config name).
    model_id: str | None = None
    context_window: int | None = Field(default=None, ge=1)
    price: PriceConfig = PriceConfig()
    budget: BudgetConfig | None = None
    # Generation defaults merged under each request's own parameters.
    defaults: dict[str, float | int | str | bool | list[str]] = Field(default_factory=dict)
    # In-process (llama_cpp) parameters.
    path: str | None = None
    package: str | None = None
    n_ctx: int | None = Field(default=None, ge=16)
    n_gpu_layers: int | None = Field(default=None, ge=-1)
    n_threads: int | None = Field(default=None, ge=1)
    chat_format: str | None = None
    warm: bool | None = None  # load at router start; default: True for chain terminals
    queue_size: int | None = Field(default=None, ge=0)
    # Set by the loader for models a legacy (chains-only) config names but never declares.
    inferred: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if self.path is not None and self.package is not None:
            raise ValueError("give either 'path' or 'package', not both")
        return self


class ChainConfig(_Strict):
    chain: list[str] = Field(default_factory=list)
    tier: str | None = None


class RetryConfig(_Strict):
    max_attempts: int = Field(default=C.DEFAULT_MAX_ATTEMPTS, ge=1, le=20)
    last_candidate_attempts: int = Field(default=C.DEFAULT_LAST_CANDIDATE_ATTEMPTS, ge=1, le=20)
    backoff_initial: float = Field(default=C.DEFAULT_BACKOFF_INITIAL, ge=0)
    backoff_max: float = Field(default=C.DEFAULT_BACKOFF_MAX, ge=0)
    jitter: float = Field(default=C.DEFAULT_BACKOFF_JITTER, ge=0)
    retry_after_cap: float = Field(default=C.DEFAULT_RETRY_AFTER_CAP, ge=0)


class BreakerConfig(_Strict):
    failure_threshold: int = Field(default=C.DEFAULT_BREAKER_FAILURES, ge=1)
    reset_timeout: float = Field(default=C.DEFAULT_BREAKER_RESET, gt=0)


class LimitsConfig(_Strict):
    max_concurrency: int | None = Field(default=None, ge=1)


class RoutingConfig(_Strict):
    default_model: str | None = None
    max_depth: int = Field(default=C.DEFAULT_MAX_DEPTH, ge=0, le=256)
    # Whole-request deadline across every candidate and retry (seconds).
    deadline: float | None = Field(default=None, gt=0)
    timeout: TimeoutConfig = TimeoutConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
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
