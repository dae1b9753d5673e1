"""Metrics and traces (routekit._telemetry): real prometheus_client registries read back with
``get_sample_value``, and real OpenTelemetry SDK spans caught by ``InMemorySpanExporter``.
Routers run on ``FakeProvider`` doubles and a ``FakeClock``, so every duration is exact."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from routekit import (  # noqa: E402
    AllCandidatesFailed, AsyncRouter, ConfigError, ConnectionFailed, NoRouteError, Overloaded,
    RouteKitError, Router, ServerError, StreamInterrupted,
)
from routekit.testing import FakeClock, FakeProvider, FakeReply  # noqa: E402
from conftest import read_to_the_end  # noqa: E402

MSG = [{"role": "user", "content": "hello there"}]
MODES = ["sync", "async"]
NO_RETRY = {"retry": {"max_attempts": 1, "last_candidate_attempts": 1}}


def config(n: int = 2, *, routing: dict[str, Any] | None = None,
           models: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """m0 → m1 → ... each on its own provider p<i> (ollama); no retries unless asked."""
    names = [f"m{i}" for i in range(n)]
    return {
        "providers": {f"p{i}": {"kind": "ollama" if i % 2 == 0 else "vllm"} for i in range(n)},
        "models": {m: {"provider": f"p{i}", **(models or {}).get(m, {})}
                   for i, m in enumerate(names)},
        "fallback_chains": {names[0]: {"chain": names[1:]}},
        "routing": {**NO_RETRY, **(routing or {})},
    }


class Rig:
    """A router with metrics on a fresh registry and traces into an in-memory exporter."""

    def __init__(self, cfg: dict[str, Any], *, mode: str = "sync", metrics: bool = True,
                 traces: bool = True, **replies: list[Any]) -> None:
        self.clock = FakeClock()
        self.fakes = {name: FakeProvider(name, p["kind"], replies=replies.get(name, []),
                                         clock=self.clock)
                      for name, p in cfg["providers"].items()}
        self.registry = CollectorRegistry()
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")
        self.mode = mode
        cls = Router if mode == "sync" else AsyncRouter
        self.router: Any = cls(cfg, clock=self.clock, providers=self.fakes, health_probes=False,
                               metrics=self.registry if metrics else None,
                               traces=self.provider if traces else None)

    def ask(self, model: str = "m0", *, stream: bool = False, **kw: Any) -> Any:
        """One request inside an ``outer`` span; returns the reply (a stream: its route)."""
        if self.mode == "sync":
            with self.tracer.start_as_current_span("outer"):
                if not stream:
                    return self.router.chat.completions.create(model=model, messages=MSG, **kw)
                with self.router.chat.completions.create(model=model, messages=MSG,
                                                         stream=True, **kw) as s:
                    s.text()
                    return s.route

        async def go() -> Any:
            with self.tracer.start_as_current_span("outer"):
                if not stream:
                    return await self.router.chat.completions.create(model=model,
                                                                     messages=MSG, **kw)
                s = await self.router.chat.completions.create(model=model, messages=MSG,
                                                              stream=True, **kw)
                async with s:
                    await s.text()
                    return s.route

        return asyncio.run(go())

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)  # type: ignore[no-any-return]

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def request_spans(self) -> list[ReadableSpan]:
        outer = {s.context.span_id for s in self.spans() if s.name == "outer"}
        return [s for s in self.spans() if s.parent is not None and s.parent.span_id in outer]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        return sorted((s for s in self.spans()
                       if s.parent is not None and s.parent.span_id == parent.context.span_id),
                      key=lambda s: s.start_time or 0)


def err503() -> ServerError:
    return ServerError("503 from upstream", status_code=503)


def label_sets(registry: CollectorRegistry) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return {(s.name, frozenset(s.labels.items()))
            for fam in registry.collect() for s in fam.samples
            if fam.name.startswith("routekit_")}


# ------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("mode", MODES)
def test_failover_counts_requests_attempts_failovers_tokens(mode: str, stream: bool) -> None:
    rig = Rig(config(2), mode=mode, p0=[FakeReply(delay=0.5, error=err503())],
              p1=[FakeReply(text="fine thanks", delay=0.25)])
    route = rig.ask(stream=stream)
    route = route if stream else route.route
    assert route.answered_by.model == "m1"
    assert rig.value("routekit_requests_total", entry_model="m0", outcome="ok") == 1
    assert rig.value("routekit_attempts_total", model="m0", provider="p0", outcome="error",
                     error_type="ServerError") == 1
    assert rig.value("routekit_attempts_total", model="m1", provider="p1", outcome="ok",
                     error_type="") == 1
    assert rig.value("routekit_failovers_total", entry_model="m0", model="m0",
                     error_type="ServerError") == 1
    assert rig.value("routekit_request_duration_seconds_count", entry_model="m0",
                     outcome="ok") == 1
    assert rig.value("routekit_request_duration_seconds_sum", entry_model="m0",
                     outcome="ok") == pytest.approx(0.75)
    ttfb = rig.value("routekit_time_to_first_byte_seconds_sum", entry_model="m0")
    if stream:  # from create(): the failed hop (0.5 s) plus m1's first byte (0.25 s)
        assert ttfb == pytest.approx(0.75)
    else:  # non-streaming answers have no first byte of their own: not observed
        assert ttfb is None
        assert rig.value("routekit_tokens_total", model="m1", provider="p1",
                         type="input") == 3  # "hello there": 11 chars // 4 + 1
        assert rig.value("routekit_tokens_total", model="m1", provider="p1",
                         type="output") == 2


@pytest.mark.parametrize("mode", MODES)
def test_every_candidate_failing_counts_the_final_error(mode: str) -> None:
    rig = Rig(config(2), mode=mode, p0=[err503()], p1=[err503()])
    with pytest.raises(AllCandidatesFailed):
        rig.ask()
    assert rig.value("routekit_requests_total", entry_model="m0",
                     outcome="AllCandidatesFailed") == 1
    assert rig.value("routekit_requests_total", entry_model="m0", outcome="ok") is None
    # m0 failed and m1 was called after it: one failover; m1 failed last: none.
    assert rig.value("routekit_failovers_total", entry_model="m0", model="m0",
                     error_type="ServerError") == 1
    assert rig.value("routekit_failovers_total", entry_model="m0", model="m1",
                     error_type="ServerError") is None
    assert rig.value("routekit_request_duration_seconds_count", entry_model="m0",
                     outcome="error") == 1


@pytest.mark.parametrize("mode", MODES)
def test_breaker_opening_moves_gauges_and_later_requests_record_skips(mode: str) -> None:
    cfg = config(2, routing={"breaker": {"failure_threshold": 1, "open_initial": 10}})
    rig = Rig(cfg, mode=mode, p0=[ConnectionFailed("refused", refused=True)])
    assert rig.value("routekit_provider_breaker_state", provider="p0") == 0
    assert rig.value("routekit_model_breaker_state", model="m0", provider="p0") == 0
    rig.ask()
    assert rig.value("routekit_provider_breaker_state", provider="p0") == 2  # open
    assert rig.value("routekit_model_breaker_state", model="m0", provider="p0") == 2
    assert rig.value("routekit_provider_breaker_state", provider="p1") == 0

    rig.ask()  # m0 is skipped while its breakers are open
    assert rig.value("routekit_attempts_total", model="m0", provider="p0", outcome="skipped",
                     error_type="CircuitOpen") == 1
    second = rig.request_spans()[-1]
    skips = [e for e in second.events if e.name == "routekit.skip"]
    assert len(skips) == 1 and skips[0].attributes is not None
    assert skips[0].attributes["error.type"] == "CircuitOpen"
    assert skips[0].attributes["routekit.model"] == "m0"
    assert "breaker open" in str(skips[0].attributes["routekit.reason"])
    assert [c.name for c in rig.children(second)] == ["chat m1"]  # no span for the skip
    assert not [e for e in second.events if e.name == "routekit.failover"]

    rig.clock.advance(11)  # past open_initial: half-open at the next request, then closed
    rig.ask()
    assert rig.value("routekit_provider_breaker_state", provider="p0") == 0
    assert rig.value("routekit_model_breaker_state", model="m0", provider="p0") == 0
    assert rig.value("routekit_attempts_total", model="m0", provider="p0", outcome="ok",
                     error_type="") == 1


def test_half_open_is_reported_as_one() -> None:
    cfg = config(2, routing={"breaker": {"failure_threshold": 1, "open_initial": 10}})
    rig = Rig(cfg, p0=[ConnectionFailed("refused", refused=True)])
    rig.ask()
    rig.clock.advance(11)
    rig.router.plan("m0")  # ticks the board: open → half-open
    assert rig.value("routekit_provider_breaker_state", provider="p0") == 1


@pytest.mark.parametrize("mode", MODES)
def test_overloaded_is_a_request_outcome(mode: str) -> None:
    cfg = config(1, routing={"limits": {"max_concurrency": 1}})
    rig = Rig(cfg, mode=mode, p0=[FakeReply(text="a b c")])
    if mode == "sync":
        held = rig.router.chat.completions.create(model="m0", messages=MSG, stream=True)
        with pytest.raises(Overloaded):
            rig.router.chat.completions.create(model="m0", messages=MSG)
        held.close()
    else:
        async def go() -> None:
            held = await rig.router.chat.completions.create(model="m0", messages=MSG,
                                                            stream=True)
            with pytest.raises(Overloaded):
                await rig.router.chat.completions.create(model="m0", messages=MSG)
            await held.close()

        asyncio.run(go())
    assert rig.value("routekit_requests_total", entry_model="m0", outcome="Overloaded") == 1
    assert rig.value("routekit_requests_total", entry_model="m0", outcome="ok") == 1
    overloaded = [s for s in rig.spans() if s.attributes and
                  s.attributes.get("error.type") == "Overloaded"]
    assert len(overloaded) == 1 and overloaded[0].status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("mode", MODES)
def test_interrupted_stream_counts_its_error_and_no_failover(mode: str) -> None:
    cut = FakeReply(text="one two three four", fail_after=2,
                    error=ConnectionFailed("reset by peer"))
    rig = Rig(config(2), mode=mode, p0=[cut])
    with pytest.raises(StreamInterrupted):
        rig.ask(stream=True)
    assert rig.value("routekit_requests_total", entry_model="m0",
                     outcome="StreamInterrupted") == 1
    assert rig.value("routekit_attempts_total", model="m0", provider="p0", outcome="error",
                     error_type="ConnectionFailed") == 1
    assert rig.value("routekit_failovers_total", entry_model="m0", model="m0",
                     error_type="ConnectionFailed") is None
    assert len(rig.fakes["p1"].calls) == 0
    # Its first chunk reached the caller: that time to first byte is on record too.
    assert rig.value("routekit_time_to_first_byte_seconds_count", entry_model="m0") == 1
    [req] = rig.request_spans()
    assert req.status.status_code is StatusCode.ERROR
    assert req.attributes is not None and req.attributes["error.type"] == "StreamInterrupted"
    [attempt] = rig.children(req)
    assert attempt.attributes is not None
    assert attempt.attributes["error.type"] == "ConnectionFailed"


def test_cost_and_tokens_follow_the_answering_model_and_its_price() -> None:
    cfg = config(2, models={"m1": {"price": {"input_per_1k": 2.0, "output_per_1k": 10.0}}})
    rig = Rig(cfg, p0=[err503()], p1=["three word answer"])
    reply = rig.ask()
    # 3 input tokens at $2/1k + 3 output tokens at $10/1k
    assert reply.route.cost_usd == pytest.approx(0.036)
    assert rig.value("routekit_cost_usd_total", model="m1",
                     provider="p1") == pytest.approx(0.036)
    assert rig.value("routekit_cost_usd_total", model="m0", provider="p0") is None
    assert rig.value("routekit_tokens_total", model="m1", provider="p1", type="output") == 3
    assert rig.value("routekit_tokens_total", model="m0", provider="p0", type="output") is None


def test_label_sets_stay_bounded_by_the_config() -> None:
    rig = Rig(config(2), traces=False, p0=[err503()] * 3)

    def burst(start: int, count: int) -> None:
        for i in range(start, start + count):
            try:
                rig.router.chat.completions.create(
                    model="m0" if i % 2 else f"nonexistent-{i}",  # a new name every request
                    messages=[{"role": "user", "content": f"request {i}"}])
            except NoRouteError:
                pass

    burst(0, 20)
    seen = label_sets(rig.registry)
    burst(20, 300)
    assert label_sets(rig.registry) == seen
    labels = {v for _, pairs in seen for _, v in pairs}
    assert not any(v.startswith("nonexistent") or v.startswith("request") for v in labels)
    assert rig.value("routekit_requests_total", entry_model="_other",
                     outcome="NoRouteError") == 160


# ------------------------------------------------------------------ turning them on


def test_metrics_true_serves_its_own_registry_over_wsgi() -> None:
    clock = FakeClock()
    router = Router(config(1), clock=clock, health_probes=False, metrics=True,
                    traces=TracerProvider(),  # both on: the handler finds metrics in the fan-out
                    providers={"p0": FakeProvider("p0", clock=clock)})
    router.chat.completions.create(model="m0", messages=MSG)
    app = router.metrics_handler()
    status: list[str] = []
    body = b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""},
                        lambda s, headers: status.append(s)))
    router.close()
    assert status and status[0].startswith("200")
    text = body.decode()
    assert 'routekit_requests_total{entry_model="m0",outcome="ok"} 1.0' in text
    assert 'routekit_provider_breaker_state{provider="p0"} 0.0' in text


def test_async_router_serves_metrics_over_asgi() -> None:
    clock = FakeClock()
    router = AsyncRouter(config(1), clock=clock, health_probes=False, metrics=True,
                         providers={"p0": FakeProvider("p0", clock=clock)})
    sent: list[dict[str, Any]] = []

    async def go() -> None:
        await router.chat.completions.create(model="m0", messages=MSG)
        app = router.metrics_handler()

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "method": "GET", "path": "/metrics", "query_string": b"",
                   "headers": []}, receive, send)
        await router.aclose()

    asyncio.run(go())
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent).decode()
    assert 'routekit_requests_total{entry_model="m0",outcome="ok"} 1.0' in body


def test_metrics_handler_without_metrics_says_how_to_turn_them_on() -> None:
    router = Router(config(1), providers={"p0": FakeProvider("p0")}, health_probes=False,
                    traces=TracerProvider())
    with pytest.raises(RouteKitError, match="metrics=True"):
        router.metrics_handler()
    router.close()


def test_routers_sharing_a_registry_share_its_families() -> None:
    registry = CollectorRegistry()
    routers = [Router(config(1), providers={"p0": FakeProvider("p0")}, health_probes=False,
                      metrics=registry) for _ in range(2)]
    for r in routers:
        r.chat.completions.create(model="m0", messages=MSG)
        r.close()
    assert registry.get_sample_value("routekit_requests_total",
                                     {"entry_model": "m0", "outcome": "ok"}) == 2


def test_a_taken_metric_name_is_a_config_error_that_leaves_the_registry_as_it_was() -> None:
    registry = CollectorRegistry()
    for name in ("routekit_requests", "routekit_tokens"):  # the first family, a later one
        theirs = prometheus_client.Counter(name, "someone else's", registry=registry)
        with pytest.raises(ConfigError, match="metrics"):
            Router(config(1), providers={"p0": FakeProvider("p0")}, health_probes=False,
                   metrics=registry)
        registry.unregister(theirs)
    assert list(registry.collect()) == []  # nothing of routekit's left behind
    with Router(config(1), providers={"p0": FakeProvider("p0")}, health_probes=False,
                metrics=registry) as router:  # the name freed: it registers
        router.chat.completions.create(model="m0", messages=MSG)
    assert registry.get_sample_value("routekit_requests_total",
                                     {"entry_model": "m0", "outcome": "ok"}) == 1


def test_routers_sharing_a_registry_show_the_worst_breaker_state_among_them() -> None:
    registry, clock = CollectorRegistry(), FakeClock()
    cfg = config(2, routing={"breaker": {"failure_threshold": 1, "open_initial": 30}})

    def router(default: Any = "ok") -> Router:
        return Router(cfg, clock=clock, health_probes=False, metrics=registry,
                      providers={"p0": FakeProvider("p0", default=default),
                                 "p1": FakeProvider("p1", "vllm")})

    def gauge() -> Any:
        return registry.get_sample_value("routekit_model_breaker_state",
                                         {"model": "m0", "provider": "p0"})

    a = router(default=ServerError("boom", status_code=503))
    a.chat.completions.create(model="m0", messages=MSG)  # m0 fails over: its breaker opens
    assert gauge() == 2
    b = router()  # a later router whose m0 is closed does not hide A's open one
    assert gauge() == 2
    b.chat.completions.create(model="m0", messages=MSG)
    assert gauge() == 2
    skipped = a.chat.completions.create(model="m0", messages=MSG).route.attempts[0]
    assert (skipped.model, skipped.outcome) == ("m0", "skipped")  # as the gauge says
    a.close()  # a closed router counts no more: the gauge shows B's at once
    assert gauge() == 0
    c = router()
    assert gauge() == 0
    b.close()
    c.close()


@pytest.mark.parametrize("kw", [{"metrics": "yes"}, {"traces": 42}])
def test_arguments_that_are_neither_bool_nor_a_registry_are_refused(kw: dict[str, Any]
                                                                    ) -> None:
    with pytest.raises(ConfigError, match=next(iter(kw))):
        Router(config(1), providers={"p0": FakeProvider("p0")}, health_probes=False, **kw)


def test_both_off_leaves_the_router_without_telemetry() -> None:
    for kw in ({}, {"metrics": False, "traces": False}, {"metrics": None, "traces": None}):
        router = Router(config(1), providers={"p0": FakeProvider("p0")}, health_probes=False,
                        **kw)
        assert router._state.telemetry is None
        assert router._state.board.listeners == []
        router.close()


# ------------------------------------------------------------------------------- traces


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("mode", MODES)
def test_request_span_with_a_child_per_attempt_timed_from_the_route(mode: str,
                                                                    stream: bool) -> None:
    cfg = config(2, models={"m1": {"model_id": "llama3.1:8b"}})
    rig = Rig(cfg, mode=mode, p0=[FakeReply(delay=0.5, error=err503())],
              p1=[FakeReply(text="fine thanks", delay=0.25)])
    rig.ask(stream=stream, temperature=0.2, max_tokens=64)
    [req] = rig.request_spans()
    assert req.name == "chat m0" and req.kind is SpanKind.INTERNAL
    a = req.attributes
    assert a is not None
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "m0"
    assert a["gen_ai.response.model"] == "llama3.1:8b"
    assert a["gen_ai.provider.name"] == "vllm"
    assert a["gen_ai.request.stream"] is stream
    assert a["gen_ai.request.temperature"] == 0.2 and a["gen_ai.request.max_tokens"] == 64
    assert a["routekit.answered_by"] == "m1" and a["routekit.failovers"] == 1
    assert "error.type" not in a and req.status.status_code is StatusCode.UNSET

    failed, answered = rig.children(req)
    assert failed.name == "chat m0" and answered.name == "chat llama3.1:8b"
    assert failed.kind is SpanKind.CLIENT
    fa, aa = failed.attributes, answered.attributes
    assert fa is not None and aa is not None
    assert fa["error.type"] == "ServerError" and fa["http.response.status_code"] == 503
    assert failed.status.status_code is StatusCode.ERROR
    assert fa["server.address"] == "127.0.0.1" and fa["server.port"] == 11434
    assert aa["gen_ai.request.model"] == "llama3.1:8b" and aa["routekit.model"] == "m1"
    assert aa["gen_ai.provider.name"] == "vllm" and aa["routekit.provider"] == "p1"
    assert "error.type" not in aa
    # Times come from the route on the fake clock: m0 took 0.5 s, then m1 0.25 s.
    assert req.start_time == failed.start_time
    assert failed.end_time == answered.start_time == req.start_time + 500_000_000
    assert answered.end_time == req.end_time == req.start_time + 750_000_000
    if stream:
        assert aa["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.25)
        assert a["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.75)
    else:
        assert "gen_ai.response.time_to_first_chunk" not in a
        assert a["gen_ai.usage.input_tokens"] == 3 and a["gen_ai.usage.output_tokens"] == 2
        assert aa["gen_ai.usage.input_tokens"] == 3 and "gen_ai.usage.input_tokens" not in fa

    [event] = req.events
    assert event.name == "routekit.failover"
    assert event.attributes is not None
    assert dict(event.attributes) == {"routekit.from_model": "m0", "routekit.to_model": "m1",
                                      "error.type": "ServerError"}
    assert event.timestamp == failed.end_time


def test_in_process_attempts_are_internal_spans_without_a_server() -> None:
    cfg = {
        "providers": {"gpu": {"kind": "vllm", "base_url": "https://gpu.example:9443/v1"},
                      "local": {"kind": "llama_cpp"}},
        "models": {"big": {"provider": "gpu"},
                   "small": {"provider": "local", "path": "/models/small.gguf"}},
        "fallback_chains": {"big": {"chain": ["small"]}},
        "routing": NO_RETRY,
    }
    rig = Rig(cfg, gpu=[err503()])
    rig.ask("big")
    [req] = rig.request_spans()
    remote, local = rig.children(req)
    assert remote.kind is SpanKind.CLIENT and local.kind is SpanKind.INTERNAL
    assert remote.attributes is not None and local.attributes is not None
    assert remote.attributes["server.address"] == "gpu.example"
    assert remote.attributes["server.port"] == 9443
    assert "server.address" not in local.attributes
    assert local.attributes["gen_ai.provider.name"] == "llama_cpp"


@pytest.mark.parametrize("mode", MODES)
def test_failed_request_span_carries_the_error(mode: str) -> None:
    rig = Rig(config(2), mode=mode, p0=[err503()], p1=[err503()])
    with pytest.raises(AllCandidatesFailed):
        rig.ask()
    [req] = rig.request_spans()
    assert req.status.status_code is StatusCode.ERROR
    assert req.status.description is not None
    assert req.status.description.startswith("AllCandidatesFailed")
    assert req.attributes is not None
    assert req.attributes["error.type"] == "AllCandidatesFailed"
    assert "routekit.answered_by" not in req.attributes
    assert [c.status.status_code for c in rig.children(req)] == [StatusCode.ERROR] * 2
    # one failover (m0 → m1); m1's failure ended the request, it is no failover
    assert [e.name for e in req.events] == ["routekit.failover"]


def test_without_an_sdk_one_non_recording_span_and_nothing_else() -> None:
    started: list[str] = []

    class Counting(trace.NoOpTracerProvider):
        def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
            inner = super().get_tracer(*args, **kwargs)

            class T(trace.NoOpTracer):
                def start_span(self, name: str, *a: Any, **k: Any) -> trace.Span:
                    started.append(name)
                    return inner.start_span(name, *a, **k)

            return T()

    cfg = config(2)
    clock = FakeClock()
    router = Router(cfg, clock=clock, health_probes=False, traces=Counting(),
                    providers={"p0": FakeProvider("p0", replies=[err503()], clock=clock),
                               "p1": FakeProvider("p1", clock=clock)})
    router.chat.completions.create(model="m0", messages=MSG)
    router.close()
    assert started == ["chat m0"]  # two attempts, yet no child span was even started


def test_traces_true_uses_the_global_provider_without_failing() -> None:
    # No SDK is installed globally in this test session: the API's proxy tracer is a no-op.
    clock = FakeClock()
    router = Router(config(1), clock=clock, health_probes=False, traces=True,
                    providers={"p0": FakeProvider("p0", clock=clock)})
    reply = router.chat.completions.create(model="m0", messages=MSG)
    router.close()
    assert reply.choices[0].message.content == "ok"
    from routekit._telemetry.traces import Traces

    assert isinstance(router._state.telemetry, Traces)


def test_a_failing_sink_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(config(1), traces=False)

    def broken(*args: Any) -> None:
        raise RuntimeError("sink bug")

    rig.router._state.telemetry._record = broken
    with caplog.at_level("WARNING", logger="routekit"):
        assert rig.ask().choices[0].message.content == "ok"
    assert "could not record a request" in caplog.text


def test_streams_started_and_ended_in_one_span_are_its_children() -> None:
    rig = Rig(config(1))
    with rig.tracer.start_as_current_span("handler") as handler:
        with rig.router.chat.completions.create(model="m0", messages=MSG, stream=True) as s:
            s.text()
    [req] = [s for s in rig.spans() if s.name == "chat m0" and s.kind is SpanKind.INTERNAL]
    assert req.parent is not None
    assert req.parent.span_id == handler.get_span_context().span_id


def test_neither_package_is_imported_unless_turned_on() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from routekit import Router\n"
        "from routekit.testing import FakeProvider\n"
        "cfg = {'providers': {'p0': {'kind': 'ollama'}}, 'models': {'m0': {'provider': 'p0'}}}\n"
        "def loaded(): return [m for m in ('prometheus_client', 'opentelemetry') "
        "if m in sys.modules]\n"
        "r = Router(cfg, providers={'p0': FakeProvider('p0')}, health_probes=False)\n"
        "r.chat.completions.create(model='m0', messages=[{'role': 'user', 'content': 'x'}])\n"
        "print(loaded())\n"
        "Router(cfg, providers={'p0': FakeProvider('p0')}, health_probes=False, metrics=True)\n"
        "print(loaded())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["[]", "['prometheus_client']"]


# ------------------------------------------------------------------------------ found under load


def _real_time_rig(cfg: dict[str, Any], replies: list[Any]) -> tuple[Any, Any, Any]:
    """An AsyncRouter on the real clock (the waits here are real queues and tasks)."""
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    fake = FakeProvider("p0", replies=replies)
    router = AsyncRouter(cfg, providers={"p0": fake}, metrics=registry, traces=provider,
                         health_probes=False)
    return router, registry, exporter


def test_a_request_cancelled_while_queued_for_the_router_limit_is_counted() -> None:
    cfg = config(1, routing={"limits": {"max_concurrency": 1, "max_waiting": 4}})
    router, registry, exporter = _real_time_rig(cfg, [FakeReply(delay=0.4)])

    async def go() -> dict[str, Any]:
        async with router:
            first = asyncio.ensure_future(router.chat.completions.create(model="m0",
                                                                          messages=MSG))
            await asyncio.sleep(0.05)
            queued = asyncio.ensure_future(router.chat.completions.create(model="m0",
                                                                           messages=MSG))
            await asyncio.sleep(0.05)
            queued.cancel()
            with pytest.raises(asyncio.CancelledError):
                await queued
            await first
            return dict(router._state.limit.as_dict())

    limit = asyncio.run(go())
    assert limit["refused"] == 0 and limit["in_flight"] == 0  # it gave up; nobody refused it
    assert registry.get_sample_value("routekit_requests_total",
                                     {"entry_model": "m0", "outcome": "CancelledError"}) == 1
    assert registry.get_sample_value("routekit_requests_total",
                                     {"entry_model": "m0", "outcome": "ok"}) == 1
    errors = [s.attributes.get("error.type") for s in exporter.get_finished_spans()
              if s.kind is SpanKind.INTERNAL and s.attributes is not None]
    assert errors.count("CancelledError") == 1


def test_a_stream_closed_from_another_task_is_counted_as_the_caller_saw_it() -> None:
    router, registry, exporter = _real_time_rig(
        config(1), [FakeReply(text="one two three four", chunk_delay=0.8)])

    async def go() -> BaseException | None:
        async with router:
            stream = await router.chat.completions.create(model="m0", messages=MSG,
                                                          stream=True)

            reader = asyncio.ensure_future(read_to_the_end(stream))
            await asyncio.sleep(0.1)
            await stream.close()
            return await reader

    error = asyncio.run(go())
    assert isinstance(error, StreamInterrupted)
    assert error.route is not None and error.route.attempts[-1].outcome == "error"
    assert registry.get_sample_value("routekit_requests_total",
                                     {"entry_model": "m0", "outcome": "StreamInterrupted"}) == 1
    assert registry.get_sample_value(
        "routekit_attempts_total", {"model": "m0", "provider": "p0", "outcome": "error",
                                    "error_type": "StreamInterrupted"}) == 1
    [span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.INTERNAL]
    assert span.attributes is not None and span.attributes["error.type"] == "StreamInterrupted"


def test_the_breaker_gauge_shows_the_breaker_not_a_stale_transition() -> None:
    rig = Rig(config(2))
    breaker = rig.router._state.board.models["m0"]
    rig.router._state.board._on_change(breaker, "closed", "open")  # stale: it is closed
    assert rig.value("routekit_model_breaker_state", model="m0", provider="p0") == 0


def test_an_attempt_cancelled_in_flight_is_on_record() -> None:
    router, registry, exporter = _real_time_rig(config(1), [FakeReply(delay=5.0)])

    async def go() -> None:
        async with router:
            task = asyncio.ensure_future(router.chat.completions.create(model="m0",
                                                                         messages=MSG))
            await asyncio.sleep(0.1)  # the provider is answering
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    assert registry.get_sample_value(
        "routekit_attempts_total", {"model": "m0", "provider": "p0", "outcome": "error",
                                    "error_type": "CancelledError"}) == 1
    [request] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.INTERNAL]
    assert request.attributes is not None and request.attributes["routekit.attempts"] == 1


def _attempt_counts(registry: Any, outcome: str, error_type: str = "") -> Any:
    return registry.get_sample_value("routekit_attempts_total", {
        "model": "m0", "provider": "p0", "outcome": outcome, "error_type": error_type})


def test_a_stream_cancelled_while_opening_is_on_record() -> None:
    # As a call cancelled in flight: an error attempt, counted, in the request's span.
    router, registry, exporter = _real_time_rig(config(1), [FakeReply(delay=5.0)])

    async def go() -> None:
        async with router:
            task = asyncio.ensure_future(router.chat.completions.create(
                model="m0", messages=MSG, stream=True))
            await asyncio.sleep(0.1)  # the provider is opening the stream
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(go())
    assert _attempt_counts(registry, "error", "CancelledError") == 1
    [request] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.INTERNAL]
    assert request.attributes is not None and request.attributes["routekit.attempts"] == 1


def test_a_stream_cancelled_mid_read_is_an_error_attempt_not_an_answer() -> None:
    router, registry, exporter = _real_time_rig(
        config(1), [FakeReply(text="one two three four five", chunk_delay=0.5)])

    async def go() -> Any:
        async with router:
            stream = await router.chat.completions.create(model="m0", messages=MSG,
                                                          stream=True)

            async def read() -> None:
                async for _ in stream:
                    pass

            task = asyncio.ensure_future(read())
            await asyncio.sleep(0.2)  # waiting for the second chunk
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return stream.route

    route = asyncio.run(go())
    assert [(a.model, a.outcome, a.error_type) for a in route.attempts] == [
        ("m0", "error", "CancelledError")]
    assert _attempt_counts(registry, "ok") is None
    assert _attempt_counts(registry, "error", "CancelledError") == 1
    [request] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.INTERNAL]
    assert request.attributes is not None and "routekit.answered_by" not in request.attributes


def test_a_stream_that_breaks_with_a_bug_while_opening_is_on_record() -> None:
    # Not a ProviderError (a bug in a provider): it propagates, and the route says where.
    def broken(request: Any) -> Any:
        raise RuntimeError("provider bug")

    registry = CollectorRegistry()
    router = Router(config(2), providers={"p0": FakeProvider("p0", replies=[broken])},
                    metrics=registry, health_probes=False)
    with router, pytest.raises(RuntimeError, match="provider bug"):
        router.chat.completions.create(model="m0", messages=MSG, stream=True)
    assert _attempt_counts(registry, "error", "RuntimeError") == 1
