"""The openai client surface beyond ``create``: parse, the stream helper, raw and streaming
responses, client attributes and views, ``models.list()``, and legacy text completions —
each routed (fallback, routes) like ``create``. Sync and async share one body per behaviour.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from pathlib import Path
from typing import Any

import openai
import pydantic
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ParsedChatCompletion
from openai_server import TEXT_CONTINUATION, OpenAIServer

from routekit import AsyncRouter, BadRequest, ConnectionFailed, Router, ServerError
from routekit.testing import FakeProvider

MSG = [{"role": "user", "content": "hi"}]


class City(pydantic.BaseModel):
    name: str
    population: int


CITY = json.dumps({"name": "Paris", "population": 2})


def fake_config() -> dict[str, Any]:
    return {"providers": {"a": {"kind": "ollama"}, "b": {"kind": "vllm"}},
            "models": {"m": {"provider": "a"}, "n": {"provider": "b"}},
            "fallback_chains": {"m": {"chain": ["n"]}},
            "routing": {"retry": {"max_attempts": 2, "last_candidate_attempts": 2,
                                  "backoff_initial": 0, "jitter": 0}}}


def fake_router(mode: str, a: Any = CITY, b: Any = CITY) -> tuple[Any, FakeProvider,
                                                                  FakeProvider]:
    pa = a if isinstance(a, (FakeProvider, ChatOnly)) else FakeProvider("a", default=a)
    pb = FakeProvider("b", default=b)
    cls = Router if mode == "sync" else AsyncRouter
    return cls(fake_config(), providers={"a": pa, "b": pb}, health_probes=False), pa, pb


def run(mode: str, value: Any) -> Any:
    """``value`` when sync; awaited when async (``value`` is a coroutine then)."""
    return value if mode == "sync" else asyncio.run(_await(value))


async def _await(value: Any) -> Any:
    return await value


modes = pytest.mark.parametrize("mode", ["sync", "async"])
FAILING = ServerError("down", status_code=503)


@modes
def test_parse_returns_openais_parsed_completion_with_its_route(mode: str) -> None:
    router, _, _ = fake_router(mode, a=FAILING)
    for completions in (router.chat.completions, router.beta.chat.completions):
        parsed = run(mode, completions.parse(model="m", messages=MSG, response_format=City))
        assert isinstance(parsed, ParsedChatCompletion) and isinstance(parsed, ChatCompletion)
        assert parsed.choices[0].message.parsed == City(name="Paris", population=2)
        assert [a.outcome for a in parsed.route.attempts] == ["error", "ok"]
        assert parsed.route.answered_by.model == "n"


@modes
def test_parse_sends_a_strict_json_schema(mode: str) -> None:
    router, a, _ = fake_router(mode)
    run(mode, router.chat.completions.parse(model="m", messages=MSG, response_format=City))
    fmt = a.calls[-1].request.params["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "City"
    assert fmt["json_schema"]["strict"] is True


@modes
def test_raw_response_parses_to_the_routed_completion(mode: str) -> None:
    router, _, _ = fake_router(mode, a=FAILING)
    raw = run(mode, router.chat.completions.with_raw_response.create(model="m", messages=MSG))
    reply = raw.parse()
    assert isinstance(reply, ChatCompletion) and reply.route.answered_by.model == "n"
    assert raw.headers["x-routekit-model"] == "n" and raw.headers["x-routekit-provider"] == "b"
    assert raw.status_code == 200 and raw.http_response.status_code == 200
    assert raw.retries_taken == 2  # the failing candidate was tried twice
    assert json.loads(raw.text)["choices"][0]["message"]["content"] == CITY
    parsed = run(mode, router.chat.completions.with_raw_response.parse(
        model="m", messages=MSG, response_format=City)).parse()
    assert parsed.choices[0].message.parsed.population == 2


def test_streaming_response_yields_the_stream_and_closes_it() -> None:
    router, _, _ = fake_router("sync", a="one two three")
    with router.chat.completions.with_streaming_response.create(
            model="m", messages=MSG, stream=True) as response:
        assert response.headers["x-routekit-model"] == "m"
        stream = response.parse()
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "one two three"
    assert stream.route.answered_by.model == "m"

    async def go() -> str:
        arouter, _, _ = fake_router("async", a="four five")
        async with arouter.chat.completions.with_streaming_response.create(
                model="m", messages=MSG, stream=True) as response:
            stream = await response.parse()
            return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(go()) == "four five"


@modes
def test_stream_helper_yields_openais_events_and_a_parsed_final(mode: str) -> None:
    router, _, _ = fake_router(mode, a=FAILING)

    def sync() -> tuple[list[str], Any, Any]:
        with router.chat.completions.stream(model="m", messages=MSG,
                                            response_format=City) as stream:
            types = [event.type for event in stream]
            assert stream.response.headers["x-routekit-model"] == "n"
            return types, stream.get_final_completion(), stream.current_completion_snapshot

    async def asynchronous() -> tuple[list[str], Any, Any]:
        async with router.chat.completions.stream(model="m", messages=MSG,
                                                  response_format=City) as stream:
            types = [event.type async for event in stream]
            return types, await stream.get_final_completion(), stream.current_completion_snapshot

    types, final, snapshot = sync() if mode == "sync" else asyncio.run(asynchronous())
    assert types[0] == "chunk" and "content.delta" in types and "content.done" in types
    assert final.choices[0].message.parsed == City(name="Paris", population=2)
    assert final.route.answered_by.model == "n" and snapshot.choices[0].message.content == CITY


@modes
def test_streams_expose_a_response(mode: str) -> None:
    router, _, _ = fake_router(mode, a="hello there")
    stream = run(mode, router.chat.completions.create(model="m", messages=MSG, stream=True))
    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"] == "text/event-stream"
    assert stream.response.headers["x-routekit-provider"] == "a"
    if mode == "async":
        asyncio.run(stream.close())
    else:
        stream.close()


@modes
def test_client_attributes(mode: str) -> None:
    router, _, _ = fake_router(mode)
    assert str(router.base_url) == "http://routekit.invalid/v1/"
    assert router.api_key == "routekit-no-key"
    assert router.max_retries == 1 and router.timeout == 120.0
    models = run(mode, router.models.list())
    assert [m.id for m in models] == ["m", "n"] and models.data[0].owned_by == "a"
    assert run(mode, router.models.retrieve("n")).owned_by == "b"


@modes
def test_with_options_sets_budget_retries_and_headers_for_the_view_only(mode: str) -> None:
    router, a, _ = fake_router(mode, a=FAILING)
    view = router.with_options(timeout=5.0, max_retries=0,
                               default_headers={"x-team": "t", "x-both": "view"})
    assert (view.timeout, view.max_retries) == (5.0, 0)
    assert (router.timeout, router.max_retries) == (120.0, 1)
    reply = run(mode, view.chat.completions.create(model="m", messages=MSG,
                                                   extra_headers={"x-both": "call"}))
    assert reply.route.attempts[0].tries == 1  # max_retries=0: no retry of the failure
    call = a.calls[-1]
    assert call.request.extra_headers == {"x-team": "t", "x-both": "call"}
    assert call.deadline.total <= 5.0
    again = run(mode, router.chat.completions.create(model="m", messages=MSG))
    assert again.route.attempts[0].tries == 2 and a.calls[-1].request.extra_headers is None
    copied = view.copy(max_retries=1)
    assert (copied.timeout, copied.max_retries) == (5.0, 1)
    with pytest.raises(BadRequest, match="api_key"):
        router.with_options(api_key="sk-other")


@modes
def test_text_completions_are_routed(mode: str) -> None:
    router, a, _ = fake_router(mode, a=FAILING, b="once upon a time")
    reply = run(mode, router.completions.create(model="m", prompt="Tell me", max_tokens=8))
    assert isinstance(reply, Completion) and reply.choices[0].text == "once upon a time"
    assert reply.route.endpoint == "completions" and reply.route.answered_by.model == "n"
    assert a.calls[-1].request.prompt == "Tell me"
    assert a.calls[-1].request.params == {"max_tokens": 8}
    raw = run(mode, router.completions.with_raw_response.create(model="n", prompt="x"))
    assert raw.parse().choices[0].text == "once upon a time"

    if mode == "sync":
        text = "".join(c.choices[0].text for c in
                       router.completions.create(model="m", prompt="x", stream=True))
    else:
        async def go() -> str:
            stream = await router.completions.create(model="m", prompt="x", stream=True)
            return "".join([c.choices[0].text async for c in stream])
        text = asyncio.run(go())
    assert text == "once upon a time"


class ChatOnly:
    """A provider with no text calls (providers may leave them out)."""

    def __init__(self) -> None:
        self.inner = FakeProvider("a", default="chat")
        self.name, self.kind = "a", "ollama"

    def __getattr__(self, name: str) -> Any:
        if name.endswith("_text"):
            raise AttributeError(name)
        return getattr(self.inner, name)


@modes
def test_a_provider_without_text_completions_is_skipped(mode: str) -> None:
    router, _, _ = fake_router(mode, a=ChatOnly(), b="text")  # type: ignore[arg-type]
    reply = run(mode, router.completions.create(model="m", prompt="x"))
    first, second = reply.route.attempts
    assert first.error_type == "UnsupportedRequest" and "text completions" in first.error
    assert second.outcome == "ok" and reply.choices[0].text == "text"


def test_text_prompt_must_be_one_string() -> None:
    router, _, _ = fake_router("sync")
    assert router.completions.create(model="m", prompt=["one"]).choices[0].text
    with pytest.raises(openai.BadRequestError, match="prompt"):
        router.completions.create(model="m", prompt=["a", "b"])
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        router.completions.create(model="m", prompt="a", logprobs=9)


@modes
def test_text_completions_over_http_use_the_servers_completions_endpoint(
        mode: str, dead_url: str) -> None:
    with OpenAIServer() as server:
        cfg = {"providers": {"dead": {"kind": "vllm", "base_url": dead_url},
                             "srv": {"kind": "vllm", "base_url": server.base_url}},
               "models": {"m": {"provider": "dead"}, "echo": {"provider": "srv"}},
               "fallback_chains": {"m": {"chain": ["echo"]}}}
        cls = Router if mode == "sync" else AsyncRouter
        router = cls(cfg, health_probes=False)
        reply = run(mode, router.completions.create(model="m", prompt="Once", max_tokens=5))
        assert reply.choices[0].text == TEXT_CONTINUATION
        assert [a.outcome for a in reply.route.attempts] == ["error", "ok"]
        sent = server.received[-1]
        assert sent["prompt"] == "Once" and sent["max_tokens"] == 5 and "messages" not in sent
        run(mode, router.close())


def test_text_completion_in_process_continues_the_prompt(tmp_path: Path) -> None:
    from tinygguf import write_tiny_gguf

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    cfg = {"providers": {"local": {"kind": "llama_cpp"}},
           "models": {"tiny": {"provider": "local", "path": str(path), "n_ctx": 128,
                               "n_threads": 1}},
           "fallback_chains": {"tiny": {"chain": []}}}
    with Router(cfg, health_probes=False) as router:
        reply = router.completions.create(model="tiny", prompt="hello world", max_tokens=4)
        assert isinstance(reply, Completion) and reply.choices[0].text
        assert reply.usage is not None and reply.usage.completion_tokens == 4
        assert reply.route.answered_by.kind == "llama_cpp"
        chunks = list(router.completions.create(model="tiny", prompt="hello", max_tokens=3,
                                                stream=True))
        assert "".join(c.choices[0].text for c in chunks).split()
        assert all(isinstance(c, Completion) for c in chunks)  # built directly (chunks.py)
        assert chunks[-1].choices[0].finish_reason in ("length", "stop")
        assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
        assert {c.model for c in chunks} == {"tiny"} and len({c.id for c in chunks}) == 1
        asked = list(router.completions.create(model="tiny", prompt="hello", max_tokens=3,
                                               stream=True,
                                               stream_options={"include_usage": True}))
        assert asked[-1].choices == [] and isinstance(asked[-1], Completion)
        assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 3
        assert asked[-1].usage.total_tokens == asked[-1].usage.prompt_tokens + 3


def test_text_create_accepts_every_argument_of_the_openai_client() -> None:
    from openai.resources.completions import AsyncCompletions as OpenAIAsync
    from openai.resources.completions import Completions as OpenAISync

    from routekit._pipeline.params import TEXT_PARAM_NAMES
    from routekit._pipeline.text import AsyncTextCompletions, TextCompletions

    for ours, theirs in ((TextCompletions, OpenAISync), (AsyncTextCompletions, OpenAIAsync)):
        mine = inspect.signature(ours.create).parameters
        assert set(inspect.signature(theirs.create).parameters) <= set(mine)
        names = [n for n in mine if n not in {"self", "model", "prompt", "stream",
                                              "extra_headers", "extra_query", "extra_body",
                                              "timeout"}]
        assert tuple(names) == TEXT_PARAM_NAMES


def test_connection_errors_before_text_fall_back(dead_url: str) -> None:
    router, _, _ = fake_router("sync", a=ConnectionFailed("refused", refused=True), b="t")
    assert router.completions.create(model="m", prompt="x").route.answered_by.model == "n"


@modes
def test_openais_not_given_and_omit_mean_not_given(mode: str) -> None:
    """Libraries (the Agents SDK) pass openai's sentinels for every unset argument."""
    from routekit.providers.http.transport import http_lib

    router, a, _ = fake_router(mode, a="ok")
    unset = [openai.NOT_GIVEN] + ([openai.omit] if hasattr(openai, "omit") else [])
    for sentinel in unset:
        reply = run(mode, router.chat.completions.create(
            model="m", messages=MSG, stream=sentinel, temperature=sentinel, top_p=sentinel,
            max_tokens=sentinel, n=sentinel, presence_penalty=sentinel, tools=sentinel,
            frequency_penalty=sentinel, max_completion_tokens=sentinel, timeout=sentinel,
            extra_headers=None, extra_body=None))
        assert isinstance(reply, ChatCompletion) and a.calls[-1].request.params == {}
    run(mode, router.chat.completions.create(model="m", messages=MSG,
                                             timeout=http_lib().Timeout(3.0, connect=1.0)))
    assert a.calls[-1].deadline.connect == 1.0 and a.calls[-1].deadline.read == 3.0


def test_native_in_process_models_serve_text_completions(tmp_path: Path) -> None:
    """llama_cpp_native hands a text completion to llama-cpp-python on the same model (its
    C++ loop takes formatted chats): the model answers it itself, as llama_cpp would."""
    from tinygguf import write_tiny_gguf

    path = str(write_tiny_gguf(tmp_path / "tiny.gguf"))
    model = {"path": path, "n_ctx": 128, "n_threads": 1, "chat_format": "chatml",
             "warm": False}
    cfg = {"providers": {"native": {"kind": "llama_cpp_native"},
                         "local": {"kind": "llama_cpp"}},
           "models": {"fast": {"provider": "native", **model},
                      "slow": {"provider": "local", **model}},
           "fallback_chains": {"fast": {"chain": ["slow"]}}}
    with Router(cfg, health_probes=False) as router:
        reply = router.completions.create(model="fast", prompt="hello", max_tokens=2)
        (only,) = reply.route.attempts
        assert (only.model, only.outcome) == ("fast", "ok")
        assert reply.route.endpoint == "completions"
        assert reply.choices[0].text and reply.usage.completion_tokens == 2
