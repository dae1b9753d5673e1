"""The router end to end over real loopback servers: fallback, retries, routes, errors.

HTTP candidates are fault servers (tests/faultserver.py) or closed ports; sync and async
share one body per behaviour through ``call``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from conftest import fast_retry, http_provider
from faultserver import FaultServer, closed_port
from openai.types.chat import ChatCompletion

import routekit
from routekit import (
    AllCandidatesFailed, AsyncRouter, BadRequest, NoRouteError, Router, StreamInterrupted,
)

MSG = [{"role": "user", "content": "hi"}]


def chain_config(urls: list[str], *, keys: dict[int, str] | None = None,
                 windows: dict[int, int] | None = None) -> dict[str, Any]:
    """m0 → m1 → ... each on its own provider p<i> at urls[i]."""
    providers, models = {}, {}
    for i, url in enumerate(urls):
        extra = {"api_key_env": keys[i]} if keys and i in keys else {}
        providers[f"p{i}"] = http_provider(url, **extra)
        models[f"m{i}"] = {"provider": f"p{i}", "model_id": f"model-{i}"}
        if windows and i in windows:
            models[f"m{i}"]["context_window"] = windows[i]
    names = list(models)
    return {"providers": providers, "models": models,
            "fallback_chains": {names[0]: {"chain": names[1:]}}, "routing": fast_retry()}


def call(mode: str, config: dict[str, Any], **kw: Any) -> Any:
    """Run one create() through Router (sync) or AsyncRouter, same arguments."""
    kw.setdefault("model", "m0")
    kw.setdefault("messages", MSG)
    if mode == "sync":
        with Router(config) as r:
            return r.chat.completions.create(**kw)

    async def go() -> Any:
        async with AsyncRouter(config) as r:
            return await r.chat.completions.create(**kw)

    return asyncio.run(go())


modes = pytest.mark.parametrize("mode", ["sync", "async"])


@modes
def test_refused_ports_fall_through_to_a_working_candidate(mode: str, fault: FaultServer) -> None:
    cfg = chain_config([f"http://127.0.0.1:{closed_port()}/v1",
                        f"http://127.0.0.1:{closed_port()}/v1", fault.url("ok")])
    reply = call(mode, cfg)
    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content == fault.text
    route = reply.route
    assert [a.outcome for a in route.attempts] == ["error", "error", "ok"]
    assert [a.error_type for a in route.attempts[:2]] == ["ConnectionFailed"] * 2
    assert all(a.tries == 1 for a in route.attempts)  # refused: no retry, move on at once
    assert route.answered_by is not None and route.answered_by.model == "m2"


@modes
def test_transient_errors_are_retried_then_move_on(mode: str, fault: FaultServer) -> None:
    cfg = chain_config([fault.url("503"), fault.url("ok")])
    reply = call(mode, cfg)
    first, second = reply.route.attempts
    assert first.outcome == "error" and first.error_type == "ServerError"
    assert first.status_code == 503 and first.tries == 2 and first.retries == 1
    assert fault.count("503") == 2
    assert second.outcome == "ok"


@modes
def test_retry_succeeds_on_the_same_candidate(mode: str, fault: FaultServer) -> None:
    fault.sequence = ["500", "ok"]
    cfg = chain_config([fault.base_url, fault.url("ok")])
    reply = call(mode, cfg)
    (only,) = reply.route.attempts
    assert only.model == "m0" and only.outcome == "ok" and only.tries == 2


@modes
def test_short_retry_after_is_honoured_long_one_moves_on(mode: str) -> None:
    with FaultServer(retry_after=0.05) as short, FaultServer(retry_after=30) as long_:
        short.sequence = ["429", "ok"]
        reply = call(mode, chain_config([short.base_url, short.url("ok")]))
        assert reply.route.attempts[0].tries == 2 and reply.route.attempts[0].outcome == "ok"

        reply = call(mode, chain_config([long_.url("429"), long_.url("ok")]))
        first = reply.route.attempts[0]
        assert first.error_type == "RateLimited" and first.tries == 1  # did not sleep 30 s
        assert first.duration_ms < 5000


@pytest.mark.parametrize("status,error", [("401", "AuthenticationFailed"),
                                          ("403", "AuthenticationFailed"),
                                          ("404", "ModelNotFound")])
@modes
def test_non_retryable_statuses_skip_to_next(mode: str, status: str, error: str,
                                             fault: FaultServer) -> None:
    reply = call(mode, chain_config([fault.url(status), fault.url("ok")]))
    first = reply.route.attempts[0]
    assert first.error_type == error and first.tries == 1
    assert reply.route.answered_by.model == "m1"


@modes
def test_bad_request_fails_fast_with_route(mode: str, fault: FaultServer) -> None:
    cfg = chain_config([fault.url("400"), fault.url("ok")])
    with pytest.raises(BadRequest) as info:
        call(mode, cfg)
    assert info.value.status_code == 400
    assert info.value.route is not None
    assert [a.model for a in info.value.route.attempts] == ["m0"]  # m1 never tried
    assert fault.count("ok") == 0


@modes
def test_context_length_error_moves_on(mode: str, fault: FaultServer) -> None:
    reply = call(mode, chain_config([fault.url("context"), fault.url("ok")]))
    assert reply.route.attempts[0].error_type == "ContextLengthExceeded"
    assert reply.route.answered_by.model == "m1"


def test_precheck_skips_candidates_whose_window_is_too_small(fault: FaultServer) -> None:
    cfg = chain_config([fault.url("ok"), fault.url("ok")], windows={0: 32, 1: 100_000})
    long_prompt = [{"role": "user", "content": "word " * 400}]
    reply = call("sync", cfg, messages=long_prompt, max_tokens=16)
    first, second = reply.route.attempts
    assert first.outcome == "skipped" and first.error_type == "ContextLengthExceeded"
    assert "context window of 32" in (first.error or "")
    assert second.outcome == "ok"
    assert fault.requests == 1  # the small model was never called


@pytest.mark.parametrize("where", ["tool schema", "tool call arguments"])
def test_precheck_counts_tools_and_tool_calls_too(fault: FaultServer, where: str) -> None:
    # Tool schemas and an assistant's tool-call arguments are prompt tokens on the server;
    # the pre-check counted message text only, and called a model whose window was far too
    # small for them (probe report).
    cfg = chain_config([fault.url("ok"), fault.url("ok")], windows={0: 200, 1: 100_000})
    pad = "x" * 2000  # ~500 tokens at 4 characters a token
    if where == "tool schema":
        kw: dict[str, Any] = {"messages": MSG, "tools": [{"type": "function", "function": {
            "name": "f", "description": pad, "parameters": {"type": "object"}}}]}
    else:
        kw = {"messages": MSG + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": pad}}]},
            {"role": "tool", "tool_call_id": "1", "content": "ok"}]}
    reply = call("sync", cfg, **kw)
    first, second = reply.route.attempts
    assert first.outcome == "skipped" and first.error_type == "ContextLengthExceeded"
    assert second.outcome == "ok" and fault.requests == 1


@modes
def test_all_candidates_failed_carries_every_attempt(mode: str, fault: FaultServer) -> None:
    cfg = chain_config([f"http://127.0.0.1:{closed_port()}/v1", fault.url("500"),
                        fault.url("404")])
    with pytest.raises(AllCandidatesFailed) as info:
        call(mode, cfg)
    err = info.value
    assert [a.model for a in err.attempts] == ["m0", "m1", "m2"]
    assert [a.error_type for a in err.attempts] == ["ConnectionFailed", "ServerError",
                                                    "ModelNotFound"]
    text = str(err)
    assert "m0" in text and "ServerError" in text and "in-process" in text
    assert err.route is not None and err.route.answered_by is None


def test_missing_key_skips_with_reason_and_no_key_leaks(
        fault: FaultServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-routekit-test-SECRET-0123456789"
    monkeypatch.delenv("RK_TEST_MISSING", raising=False)
    monkeypatch.setenv("RK_TEST_KEY", secret)
    cfg = chain_config([fault.url("ok"), fault.url("401"), fault.url("ok")],
                       keys={0: "RK_TEST_MISSING", 1: "RK_TEST_KEY"})
    caplog.set_level(logging.DEBUG, logger="routekit")
    with Router(cfg) as router:
        reply = router.chat.completions.create(model="m0", messages=MSG)
        everything = [repr(router), str(reply.route), repr(reply.route),
                      str(reply.route.as_dict()), caplog.text]
    skipped, refused, ok = reply.route.attempts
    assert skipped.outcome == "skipped" and skipped.error_type == "MissingAPIKey"
    assert "RK_TEST_MISSING" in (skipped.error or "")
    assert refused.error_type == "AuthenticationFailed"  # the 401 body echoes the key back
    assert ok.outcome == "ok"
    assert "AuthenticationFailed" in caplog.text  # failovers are logged (INFO) ...
    for text in everything:
        assert secret not in text  # ... and nothing anywhere holds the key


def test_unknown_model_is_a_clear_error(fault: FaultServer) -> None:
    with Router(chain_config([fault.url("ok")])) as router:
        with pytest.raises(NoRouteError, match="did you mean 'm0'"):
            router.chat.completions.create(model="m", messages=MSG)


def test_unavailable_candidates_are_not_tried(fault: FaultServer) -> None:
    with Router(chain_config([fault.url("500"), fault.url("ok")])) as router:
        router.graph.set_provider_available("p0", False)
        reply = router.chat.completions.create(model="m0", messages=MSG)
        assert [a.model for a in reply.route.attempts] == ["m1"]
        router.graph.set_provider_available("p1", False)
        with pytest.raises(NoRouteError):
            router.chat.completions.create(model="m0", messages=MSG)
    assert fault.count("500") == 0


def test_a_candidate_set_available_again_is_tried_again(fault: FaultServer) -> None:
    # The request path plans from a memo while every flag is up: it must notice flags that
    # go down and come back through router.graph.
    with Router(chain_config([fault.url("ok"), fault.url("ok")])) as router:
        def tried() -> list[str]:
            reply = router.chat.completions.create(model="m0", messages=MSG)
            return [a.model for a in reply.route.attempts]

        assert tried() == ["m0"]
        router.graph.set_model_available("m0", False)
        assert tried() == ["m1"]
        router.graph.set_model_available("m0", True)
        assert tried() == ["m0"]


# ------------------------------------------------------------------ streaming

def test_stream_falls_back_before_first_token(fault: FaultServer) -> None:
    cfg = chain_config([f"http://127.0.0.1:{closed_port()}/v1", fault.url("503"),
                        fault.url("ok")])
    with Router(cfg) as router:
        with router.chat.completions.create(model="m0", messages=MSG, stream=True) as stream:
            text = stream.text()
        assert text == fault.text
        route = stream.route
    assert [a.outcome for a in route.attempts] == ["error", "error", "ok"]
    assert route.answered_by.ttfb_ms is not None


def test_stream_cut_after_first_token_raises_with_partial_text(fault: FaultServer) -> None:
    cfg = chain_config([fault.url("cut"), fault.url("ok")])
    with Router(cfg) as router:
        stream = router.chat.completions.create(model="m0", messages=MSG, stream=True)
        parts = []
        with pytest.raises(StreamInterrupted) as info:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
    err = info.value
    assert err.partial == "".join(parts) and err.partial
    assert err.route is not None and err.route.attempts[-1].outcome == "error"
    assert fault.count("ok") == 0  # committed: no silent switch mid-answer


def test_async_stream_falls_back(fault: FaultServer) -> None:
    cfg = chain_config([fault.url("500"), fault.url("ok")])

    async def go() -> tuple[str, Any]:
        async with AsyncRouter(cfg) as router:
            stream = await router.chat.completions.create(model="m0", messages=MSG,
                                                          stream=True)
            async with stream:
                return await stream.text(), stream.route

    text, route = asyncio.run(go())
    assert text == fault.text
    assert [a.outcome for a in route.attempts] == ["error", "ok"]


# ------------------------------------------------------------------ concurrency

def test_routes_are_per_request_under_threads(fault: FaultServer) -> None:
    cfg = chain_config([fault.url("ok"), fault.url("ok")])
    cfg["fallback_chains"]["m1"] = {"chain": []}
    results: dict[int, Any] = {}
    errors: list[BaseException] = []
    with Router(cfg) as router:
        def worker(i: int) -> None:
            try:
                model = "m0" if i % 2 else "m1"
                results[i] = router.chat.completions.create(model=model, messages=MSG)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert not errors
    assert len(results) == 16
    for i, reply in results.items():
        assert reply.route.requested == ("m0" if i % 2 else "m1")
        assert reply.route.answered_by.model == reply.route.requested


def test_async_tasks_share_one_router(fault: FaultServer) -> None:
    cfg = chain_config([fault.url("500"), fault.url("ok")])

    async def go() -> list[Any]:
        async with AsyncRouter(cfg) as router:
            return await asyncio.gather(*[
                router.chat.completions.create(model="m0", messages=MSG) for _ in range(12)])

    replies = asyncio.run(go())
    assert all(r.route.answered_by.model == "m1" for r in replies)
    assert fault.count("ok") == 12


def test_routekit_errors_tree() -> None:
    assert issubclass(routekit.ContextLengthExceeded, routekit.BadRequest)
    assert not routekit.ContextLengthExceeded.fatal and routekit.BadRequest.fatal
    assert routekit.RateLimited.retryable and not routekit.ModelNotFound.retryable


# ------------------------------------------------------------------ a real server

def _server_chain(llama_base_url: str, dead: str) -> dict[str, Any]:
    cfg = chain_config([dead, llama_base_url])
    cfg["providers"]["p1"]["kind"] = "llama_cpp_server"
    cfg["providers"]["p1"]["timeout"] = {"connect": 2.0, "read": 60.0, "total": 120.0}
    return cfg


@modes
@pytest.mark.parametrize("upstream", [False, True])
def test_real_llama_server_answers_after_a_dead_port(mode: str, upstream: bool,
                                                     llama_base_url: str, dead_url: str) -> None:
    cfg = _server_chain(llama_base_url, dead_url)
    cfg["providers"]["p1"]["stream_upstream"] = upstream
    reply = call(mode, cfg, max_tokens=8, temperature=0)
    assert isinstance(reply, ChatCompletion)
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert [a.outcome for a in reply.route.attempts] == ["error", "ok"]
    if not upstream:
        assert reply.usage is not None and reply.usage.completion_tokens > 0
    else:
        # llama-cpp-python's server sends no usage in streams (stream_options is ignored):
        # an assembled answer cannot invent it.
        assert reply.usage is None


def test_assembled_answer_equals_the_servers_own(llama_base_url: str, dead_url: str) -> None:
    texts = []
    for upstream in (False, True):
        cfg = _server_chain(llama_base_url, dead_url)
        cfg["providers"]["p1"]["stream_upstream"] = upstream
        reply = call("sync", cfg, max_tokens=12, temperature=0, seed=1)
        texts.append((reply.choices[0].message.content, reply.choices[0].finish_reason))
    assert texts[0] == texts[1]


def test_real_llama_server_streams(llama_base_url: str, dead_url: str) -> None:
    with Router(_server_chain(llama_base_url, dead_url)) as router:
        with router.chat.completions.create(model="m0", messages=MSG, stream=True,
                                            max_tokens=8, temperature=0) as stream:
            chunks = list(stream)
        route = stream.route
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    assert route.answered_by.model == "m1" and route.answered_by.ttfb_ms > 0


@pytest.mark.parametrize("kw,fragment", [
    ({"max_tokens": 0}, "max_tokens must be a whole number >= 1"),
    ({"max_completion_tokens": -3}, "max_completion_tokens"),
    ({"n": 0}, "n must be"),
    ({"temperature": 3.0}, "temperature must be a number from 0 to 2"),
    ({"top_p": -0.1}, "top_p"),
    ({"messages": []}, "messages must not be empty"),
    ({"messages": [{"content": "no role"}]}, "messages[0] has no 'role'"),
])
def test_requests_every_candidate_would_reject_fail_before_any_attempt(
        kw: dict[str, Any], fragment: str, fault: FaultServer) -> None:
    with Router(chain_config([fault.url("ok")])) as router:
        args: dict[str, Any] = {"model": "m0", "messages": MSG, **kw}
        with pytest.raises(BadRequest) as info:
            router.chat.completions.create(**args)
    assert fragment in str(info.value)
    assert fault.requests == 0


def test_router_start_builds_http_clients(fault: FaultServer) -> None:
    """Warm start: the openai client exists before the first request, so the first hop
    does not pay for importing and building it (~0.3 s)."""
    cfg = chain_config([fault.url("ok")])
    with Router(cfg) as router:
        assert router._state.providers["p0"]._create is not None
    with Router(cfg, warm=False) as router:
        assert router._state.providers["p0"]._create is None


def test_all_failed_advice_names_the_deadline_when_it_ran_out(fault: FaultServer) -> None:
    # m0 sends its first chunk in time (so the first-byte share does not cut it), then
    # stalls: it uses the whole budget, and m1 is left no time.
    fault.hang_seconds = 2.0
    cfg = chain_config([fault.url("stall_stream"), fault.url("ok")])
    with Router(cfg) as router:
        with pytest.raises(AllCandidatesFailed) as info:
            router.chat.completions.create(model="m0", messages=MSG, timeout=0.5)
    err = info.value
    assert err.attempts[0].error_type == "RequestTimeout"
    assert err.attempts[-1].outcome == "skipped"
    assert "raise `timeout=`" in str(err)
    assert err.route is not None and err.route.total_ms < 2000  # the deadline held


def test_request_options_reach_http_providers(fault: FaultServer) -> None:
    with Router(chain_config([fault.url("ok")])) as router:
        router.chat.completions.create(
            model="m0", messages=MSG, extra_headers={"X-Trace": "abc"},
            extra_query={"tenant": "t1"}, extra_body={"top_k": 3}, metadata={"k": "v"},
            reasoning_effort="low")
    received = fault.received[-1]
    assert "tenant=t1" in received.path
    assert fault.post_headers[-1]["x-trace"] == "abc"
    assert received.body["top_k"] == 3 and received.body["metadata"] == {"k": "v"}
    assert received.body["reasoning_effort"] == "low"


@modes
def test_a_closed_router_refuses_requests(mode: str, fault: FaultServer) -> None:
    cfg = chain_config([fault.url("ok")])
    if mode == "sync":
        router = Router(cfg)
        router.close()
        router.close()  # idempotent
        with pytest.raises(routekit.RouteKitError, match="router is closed"):
            router.chat.completions.create(model="m0", messages=MSG)
    else:
        async def go() -> None:
            arouter = AsyncRouter(cfg)
            await arouter.aclose()
            with pytest.raises(routekit.RouteKitError, match="router is closed"):
                await arouter.chat.completions.create(model="m0", messages=MSG)

        asyncio.run(go())
    assert fault.requests == 0


def test_plan_of_a_non_name_and_a_default_config_that_fails_say_what_was_wrong(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, fault: FaultServer
) -> None:
    from routekit import ConfigError

    with Router(chain_config([fault.url("ok")])) as router:
        with pytest.raises(TypeError, match=r"plan\(\) takes a model name \(a str\), got NoneType"):
            router.plan(None)  # type: ignore[arg-type]  # was a TypeError from inside difflib
    # Router.default() with a bad $ROUTEKIT_CONFIG said only "no such file": not where the
    # path came from.
    missing = str(tmp_path / "missing.yaml")
    monkeypatch.setenv("ROUTEKIT_CONFIG", missing)
    for cls in (Router, AsyncRouter):
        with pytest.raises(ConfigError) as info:
            cls.default(warm=False)
        assert f"{missing} (named by $ROUTEKIT_CONFIG)" in str(info.value)
        assert "no such file" in str(info.value)
