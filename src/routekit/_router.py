"""``Router`` and ``AsyncRouter``: the OpenAI-shaped surface over plans, attempts, providers.

Owns: building providers from a config, warm standby of terminal in-process models, turning
``chat.completions.create`` arguments into per-candidate requests, and lifecycle (``close``).
Plans come from ``_plan`` (the C++ core); attempts from ``_attempt`` / ``_streaming``.
``openai`` and ``llama_cpp`` are imported only when a router that uses them is built.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterable,
    Mapping,
    NamedTuple,
    Sequence,
    Union,
)

from ._pipeline.attempts import Candidate, context_window
from ._pipeline.completions import AsyncCompletions, Completions
from ._config.model import Config, TimeoutConfig
from ._exceptions import BadRequest, MissingAPIKey, NoRouteError, RouteKitError
from ._config.loader import load_config
from ._plan import CompiledGraph
from .providers._base import ChatRequest, HealthReport, Provider

if TYPE_CHECKING:
    from .providers.llama_cpp.provider import LlamaCppProvider
    from .providers.http.openai_compat import OpenAICompatProvider

__all__ = ["AsyncRouter", "Router"]

log = logging.getLogger("routekit")

ConfigSource = Union[Config, Mapping[str, Any], str, "os.PathLike[str]"]
ProgressCallback = Callable[[str, float], None]
Messages = Iterable[Mapping[str, Any]]
Stop = Union[str, Sequence[str], None]


def _to_config(config: ConfigSource) -> Config:
    return config if isinstance(config, Config) else load_config(config)


class RouterCore:
    """State shared by the sync and async routers. Thread-safe: providers are built once at
    construction; the graph's availability flags are atomics in the core."""

    def __init__(self, config: ConfigSource, *, warm: bool, progress: ProgressCallback | None
                 ) -> None:
        self.config = _to_config(config)
        self.graph = CompiledGraph.from_config(self.config)
        if self.graph.cycles(limit=1):
            log.warning("config has fallback cycles; plans de-duplicate them (see routekit validate)")
        self.providers: dict[str, Provider] = {}
        # The same providers again, typed as what they are, for warm-up.
        self._in_process: dict[str, LlamaCppProvider] = {}
        self._http: dict[str, OpenAICompatProvider] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._build_providers()
        # Everything a request needs per model, resolved once: the hot path only indexes.
        self._model_cache: dict[str, _ModelEntry] = {}
        for name, m in self.config.models.items():
            p = self.config.providers[m.provider]
            self._model_cache[name] = _ModelEntry(
                m.provider, p.kind, self.providers[m.provider], m.model_id or name,
                dict(m.defaults), p.timeout or self.config.routing.timeout,
                context_window(m, p.in_process),
            )
        if warm:
            self.warm(progress=progress)

    def _build_providers(self) -> None:
        cfg = self.config
        used = {m.provider for m in cfg.models.values()}
        for name in used:
            pcfg = cfg.providers[name]
            if pcfg.in_process:
                from .providers.llama_cpp.provider import LlamaCppProvider

                models = {n: m for n, m in cfg.models.items() if m.provider == name}
                llama = LlamaCppProvider(name, pcfg, models)
                self.providers[name] = self._in_process[name] = llama
            else:
                from .providers.http.openai_compat import OpenAICompatProvider

                self.providers[name] = self._http[name] = OpenAICompatProvider(
                    name, pcfg, default_timeout=cfg.routing.timeout
                )

    def warm_models(self) -> list[str]:
        """In-process models loaded at start: chain terminals (a cold load on the failover
        path would ruin its TTFB) and any model with ``warm: true``; ``warm: false`` opts out."""
        out = []
        terminals = set(self.graph.terminals())
        for name, m in self.config.models.items():
            if not self.config.providers[m.provider].in_process:
                continue
            if m.warm or (m.warm is None and name in terminals):
                out.append(name)
        return out

    def warm(self, *, progress: ProgressCallback | None = None) -> None:
        # HTTP clients first: importing openai and building a client costs ~0.3 s once,
        # which would otherwise land on the first request's first hop.
        for http in self._http.values():
            try:
                http.warm()
            except MissingAPIKey as exc:  # reported per request, as a skipped candidate
                log.debug("%s", exc)
        for name in self.warm_models():
            provider = self._in_process[self.config.models[name].provider]
            try:
                provider.warm(name, progress=progress)
            except Exception as exc:  # keep routing: the attempt will report it in the route
                log.warning("could not warm in-process model %r: %s", name, exc)

    def candidates(self, model: str, messages: Messages, params: dict[str, Any], *,
                   extra_body: dict[str, Any] | None = None,
                   extra_headers: dict[str, str] | None = None,
                   extra_query: dict[str, Any] | None = None) -> list[Candidate]:
        if self._closed:
            raise RouteKitError("this router is closed; create a new one to send requests")
        user = params  # only what the caller set: create() drops None values
        msgs = _check_request(messages, user)
        plan = self.graph.plan(model, max_depth=self.config.routing.max_depth)
        if not plan:
            raise NoRouteError(
                f"every candidate for model {model!r} is marked unavailable"
            )
        out = []
        for name in plan:
            e = self._model_cache[name]
            merged = {**e.defaults, **user} if e.defaults else user
            request = ChatRequest(name, e.model_id, msgs, merged, extra_body, extra_headers,
                                  extra_query)
            out.append(Candidate(name, e.provider_name, e.kind, e.provider, request, e.timeout,
                                 e.window))
        return out

    def deadline(self, timeout: float | None) -> float:
        if timeout is not None:
            return float(timeout)
        r = self.config.routing
        return r.deadline if r.deadline is not None else r.timeout.total

    def health(self, timeout: float) -> list[HealthReport]:
        return [p.health(timeout) for p in self.providers.values()]

    def _begin_close(self) -> bool:
        """Mark the router closed; True for the one caller that gets to release providers."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            return True

    def close(self) -> None:
        if self._begin_close():
            for p in self.providers.values():
                try:
                    p.close()
                except Exception as exc:  # closing must release everything it can
                    log.warning("error closing provider %r: %s", p.name, exc)

    async def aclose(self) -> None:
        if self._begin_close():
            for p in self.providers.values():
                try:
                    await p.aclose()
                except Exception as exc:
                    log.warning("error closing provider %r: %s", p.name, exc)


class _ModelEntry(NamedTuple):
    provider_name: str
    kind: str
    provider: Provider
    model_id: str
    defaults: dict[str, Any]
    timeout: TimeoutConfig
    window: int | None


# The OpenAI API's own limits on parameters: (low, high, whole number?)
_LIMITS: dict[str, tuple[float, float, bool]] = {
    "max_tokens": (1, math.inf, True), "max_completion_tokens": (1, math.inf, True),
    "n": (1, 128, True), "temperature": (0.0, 2.0, False), "top_p": (0.0, 1.0, False),
    "presence_penalty": (-2.0, 2.0, False), "frequency_penalty": (-2.0, 2.0, False),
}


def _check_request(messages: Messages, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Reject what every candidate would reject (the OpenAI API's own limits), before any
    attempt: such a request must fail fast, not walk the whole chain. llama.cpp in
    particular reads max_tokens <= 0 as "until the context is full". ``params`` holds only
    the arguments the caller gave."""
    def bad(message: str) -> BadRequest:
        return BadRequest(message, status_code=400)

    try:
        msgs = [m if type(m) is dict else dict(m) for m in messages]
    except (TypeError, ValueError) as exc:
        raise bad(f"messages must be a list of mappings with 'role' and 'content': {exc}") from None
    if not msgs:
        raise bad("messages must not be empty")
    for i, m in enumerate(msgs):
        if not isinstance(m.get("role"), str):
            raise bad(f"messages[{i}] has no 'role'")
    for name, v in params.items():
        limits = _LIMITS.get(name)
        if limits is None:
            continue
        lo, hi, whole = limits
        kind = int if whole else (int, float)
        if isinstance(v, bool) or not isinstance(v, kind) or not lo <= v <= hi:
            if whole:
                raise bad(f"{name} must be a whole number >= {lo:g}, got {v!r}")
            raise bad(f"{name} must be a number from {lo:g} to {hi:g}, got {v!r}")
    return msgs


class _Chat:
    def __init__(self, completions: Completions) -> None:
        self.completions = completions


class _AsyncChat:
    def __init__(self, completions: AsyncCompletions) -> None:
        self.completions = completions


class _RouterBase:
    _core: RouterCore

    @property
    def config(self) -> Config:
        return self._core.config

    @property
    def graph(self) -> CompiledGraph:
        return self._core.graph

    def plan(self, model: str) -> list[str]:
        """The candidates a request for ``model`` would try now, in order."""
        return self._core.graph.plan(model, max_depth=self._core.config.routing.max_depth)

    def health(self, *, timeout: float = 1.0) -> list[HealthReport]:
        return self._core.health(timeout)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(models={len(self.config.models)}, "
                f"providers={sorted(self.config.providers)})")


class Router(_RouterBase):
    """Routes OpenAI-shaped chat requests through fallback chains.

    ``router.chat.completions.create(...)`` takes the openai client's arguments and returns
    the openai types, each carrying ``.route``. Thread-safe: share one router between threads.
    Use as a context manager, or call ``close()`` to release models and HTTP clients.
    """

    def __init__(self, config: ConfigSource, *, warm: bool = True,
                 progress: ProgressCallback | None = None) -> None:
        self._core = RouterCore(config, warm=warm, progress=progress)
        self.chat = _Chat(Completions(self._core))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, warm: bool = True,
                  progress: ProgressCallback | None = None) -> Router:
        return cls(load_config(path), warm=warm, progress=progress)

    @classmethod
    def default(cls, *, warm: bool = True, progress: ProgressCallback | None = None) -> Router:
        """Ollama → vLLM → in-process gemma3-270m, or ``$ROUTEKIT_CONFIG`` when set."""
        from ._config.default import default_config_source

        return cls(default_config_source(), warm=warm, progress=progress)

    def close(self) -> None:
        self._core.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncRouter(_RouterBase):
    """Async twin of ``Router``: ``await router.chat.completions.create(...)``.

    Safe to share between tasks of one event loop (and between threads).
    """

    def __init__(self, config: ConfigSource, *, warm: bool = True,
                 progress: ProgressCallback | None = None) -> None:
        self._core = RouterCore(config, warm=warm, progress=progress)
        self.chat = _AsyncChat(AsyncCompletions(self._core))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], *, warm: bool = True,
                  progress: ProgressCallback | None = None) -> AsyncRouter:
        return cls(load_config(path), warm=warm, progress=progress)

    @classmethod
    def default(cls, *, warm: bool = True, progress: ProgressCallback | None = None
                ) -> AsyncRouter:
        from ._config.default import default_config_source

        return cls(default_config_source(), warm=warm, progress=progress)

    async def aclose(self) -> None:
        await self._core.aclose()

    async def close(self) -> None:
        await self.aclose()

    async def __aenter__(self) -> AsyncRouter:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
