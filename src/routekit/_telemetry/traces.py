"""OpenTelemetry traces of one router (``Router(..., traces=True | tracer_provider)``).

Owns ``Traces``, the ``Telemetry`` sink that draws each finished request after the fact from
its route: a span per request (``chat {requested model}``) with a child span per candidate
that was called (``chat {model id}``), timed from ``RequestState.wall_start_ns`` plus each
attempt's ``started_ms`` and ``duration_ms``. Skipped candidates (breaker open, busy, prompt
too long, deadline spent, no API key) and failovers (a called candidate failed and a later one
was called) are events on the request span. Attribute names are OpenTelemetry's GenAI
semantic conventions where one applies (``gen_ai.*``, ``server.*``, ``error.type``,
``http.response.status_code``) and ``routekit.*`` for routing facts they have no name for.

The only module that imports ``opentelemetry``; it is imported only when a router is built
with traces on. With only ``opentelemetry-api`` installed (no SDK), or a sampler that drops
the request, one non-recording span is started and nothing else is built.

The request span's parent is the span current when ``finish`` runs: the caller's, for a
non-streaming ``create``; for a stream, the context that ends it (its last ``next``, or its
``close``) — the same span when the stream is read where it was created.

Must not touch the pipeline or the route; it only reads them.

Thread safety: stateless after ``__init__``; OpenTelemetry's tracers are thread-safe.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._secrets import redact
from . import bad_argument

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from .._pipeline.request import RequestState
    from .._pipeline.router_state import RouterState

__all__ = ["Traces"]

log = logging.getLogger("routekit")

_CHAT = "chat"

# create() parameters → GenAI request attributes (on the request span).
_PARAMS = (
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
)

_SECONDS_PER_MS = 1e-3


def _server(base_url: str | None) -> dict[str, AttributeValue]:
    if not base_url:
        return {}
    parts = urlsplit(base_url)
    if not parts.hostname:
        return {}
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname, "server.port": port}


class _ModelFacts:
    """What every span of one model carries, worked out once when the router is built."""

    __slots__ = ("model_id", "kind", "attributes")

    def __init__(self, model_id: str, kind: SpanKind, attributes: dict[str, AttributeValue]
                 ) -> None:
        self.model_id = model_id
        self.kind = kind
        self.attributes = attributes


class Traces:
    """The ``Telemetry`` sink for OpenTelemetry (see the module docstring)."""

    def __init__(self, state: RouterState, provider: trace.TracerProvider | None) -> None:
        from .. import __version__

        if provider is None:
            # The global provider, looked up at each span: an SDK installed after the router
            # was built still gets its spans; until then the API's tracer is a no-op.
            self.tracer = trace.get_tracer("routekit", __version__)
        elif isinstance(provider, trace.TracerProvider):
            self.tracer = provider.get_tracer("routekit", __version__)
        else:
            raise bad_argument("traces", f"must be True, False, None or an opentelemetry "
                               f"TracerProvider, got {type(provider).__name__}")
        providers = state.config.providers
        self._models: dict[str, _ModelFacts] = {}
        for name, entry in state.entries.items():
            pcfg = providers[entry.provider_name]
            attrs: dict[str, AttributeValue] = {
                "gen_ai.operation.name": _CHAT,
                "gen_ai.provider.name": entry.kind,
                "gen_ai.request.model": entry.model_id,
                "routekit.model": name,
                "routekit.provider": entry.provider_name,
            }
            if not entry.in_process:
                attrs.update(_server(pcfg.effective_base_url))
            self._models[name] = _ModelFacts(
                entry.model_id, SpanKind.INTERNAL if entry.in_process else SpanKind.CLIENT,
                attrs)

    def request_finished(self, req: RequestState, error: BaseException | None, usage: Any,
                         stream: bool) -> None:
        try:
            self._record(req, error, usage, stream)
        except Exception:  # observing must never fail the request
            log.warning("traces: could not record a request", exc_info=True)

    def _record(self, req: RequestState, error: BaseException | None, usage: Any,
                stream: bool) -> None:
        t0 = req.wall_start_ns
        span = self.tracer.start_span(
            f"{_CHAT} {req.requested}", kind=SpanKind.INTERNAL, start_time=t0,
            attributes={"gen_ai.operation.name": _CHAT, "gen_ai.request.model": req.requested},
        )
        if not span.is_recording():  # no SDK, or sampled out: build nothing more
            return
        route = req.route()
        attempts = route.attempts
        models = self._models
        attrs: dict[str, AttributeValue] = {"gen_ai.request.stream": stream,
                                            "routekit.attempts": len(attempts)}
        params: Any = req.params
        for param, name in _PARAMS:
            value = params.get(param)
            if value is not None and name not in attrs:
                attrs[name] = value
        stop = params.get("stop")
        if stop is not None:
            attrs["gen_ai.request.stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        n = params.get("n")
        if n is not None and n != 1:
            attrs["gen_ai.request.choice.count"] = n

        called = [i for i, a in enumerate(attempts) if a.outcome != "skipped"]
        served = None  # the attempt the usage belongs to: the answer, or the last one called
        for i in called:
            if attempts[i].outcome == "ok":
                served = i
        if served is None and called:
            served = called[-1]
        input_tokens = output_tokens = None
        if usage is not None:
            input_tokens = getattr(usage, "prompt_tokens", None)
            output_tokens = getattr(usage, "completion_tokens", None)
            if input_tokens is not None:
                attrs["gen_ai.usage.input_tokens"] = input_tokens
            if output_tokens is not None:
                attrs["gen_ai.usage.output_tokens"] = output_tokens

        ctx = trace.set_span_in_context(span)
        next_called = dict(zip(called, called[1:]))
        failovers = 0
        for i, a in enumerate(attempts):
            at = t0 + int(a.started_ms * 1e6)
            facts = models.get(a.model)
            if a.outcome == "skipped":
                span.add_event("routekit.skip", {
                    "routekit.model": a.model, "routekit.provider": a.provider,
                    "error.type": a.error_type or "", "routekit.reason": a.error or "",
                }, timestamp=at)
                continue
            end = at + int(a.duration_ms * 1e6)
            child_attrs: dict[str, AttributeValue] = dict(facts.attributes) if facts else {
                "gen_ai.operation.name": _CHAT, "routekit.model": a.model,
                "routekit.provider": a.provider}
            child_attrs["routekit.tries"] = a.tries
            if a.ttfb_ms is not None:
                child_attrs["gen_ai.response.time_to_first_chunk"] = a.ttfb_ms * _SECONDS_PER_MS
            if a.outcome == "ok" and facts is not None:
                child_attrs["gen_ai.response.model"] = facts.model_id
            if a.cost_usd is not None:
                child_attrs["routekit.cost_usd"] = a.cost_usd
            if i == served:
                if input_tokens is not None:
                    child_attrs["gen_ai.usage.input_tokens"] = input_tokens
                if output_tokens is not None:
                    child_attrs["gen_ai.usage.output_tokens"] = output_tokens
            if a.outcome == "error":
                child_attrs["error.type"] = a.error_type or "_OTHER"
                if a.status_code is not None:
                    child_attrs["http.response.status_code"] = a.status_code
            model_id = facts.model_id if facts is not None else a.model
            child = self.tracer.start_span(
                f"{_CHAT} {model_id}", context=ctx,
                kind=facts.kind if facts is not None else SpanKind.CLIENT,
                attributes=child_attrs, start_time=at)
            if a.outcome == "error":
                child.set_status(Status(StatusCode.ERROR, f"{a.error_type}: {a.error}"))
                nxt = next_called.get(i)
                if nxt is not None:
                    failovers += 1
                    span.add_event("routekit.failover", {
                        "routekit.from_model": a.model, "routekit.to_model": attempts[nxt].model,
                        "error.type": a.error_type or "_OTHER",
                    }, timestamp=end)
            child.end(end_time=end)

        answered = route.answered_by
        if answered is not None:
            facts = models.get(answered.model)
            attrs["routekit.answered_by"] = answered.model
            attrs["gen_ai.provider.name"] = answered.kind
            if facts is not None:
                attrs["gen_ai.response.model"] = facts.model_id
            if answered.ttfb_ms is not None:
                # Seen from the caller: failed hops before the answer included.
                attrs["gen_ai.response.time_to_first_chunk"] = (
                    (answered.started_ms + answered.ttfb_ms) * _SECONDS_PER_MS)
            if answered.cost_usd is not None:
                attrs["routekit.cost_usd"] = answered.cost_usd
        attrs["routekit.failovers"] = failovers
        if error is not None:
            attrs["error.type"] = type(error).__name__
            span.set_status(Status(StatusCode.ERROR,
                                   f"{type(error).__name__}: {redact(str(error))}"))
        span.set_attributes(attrs)
        span.end(end_time=t0 + int(route.total_ms * 1e6))
