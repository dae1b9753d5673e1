"""The drop-in against openai's own client, where they used to differ: what an error carries
from the server that answered, what an assembled answer keeps, the response wrappers'
methods, the page ``models.list()`` returns, and argument checks made before routing.

Real parts: the fault server on a loopback port, openai's real client inside the providers,
and the in-tree fakes where no server is needed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from conftest import fast_retry, http_provider
from faultserver import FaultServer
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from routekit import AllCandidatesFailed, AsyncRouter, BadRequest, Router
from routekit.providers.http.assemble import Assembler, TextAssembler
from routekit.testing import FakeProvider

MSG = [{"role": "user", "content": "hi"}]
SECRET = "sk-fidelity-0123456789abcdef"
modes = pytest.mark.parametrize("mode", ["sync", "async"])


def _config(url: str, **provider: Any) -> dict[str, Any]:
    return {"providers": {"p": http_provider(url, kind="openai", api_key_env="RK_FIDELITY_KEY",
                                             **provider)},
            "models": {"m": {"provider": "p"}}, "routing": fast_retry()}


def _call(mode: str, config: dict[str, Any], **kw: Any) -> Any:
    kw.setdefault("model", "m")
    kw.setdefault("messages", MSG)
    if mode == "sync":
        with Router(config, health_probes=False) as router:
            return router.chat.completions.create(**kw)

    async def go() -> Any:
        async with AsyncRouter(config, health_probes=False) as router:
            return await router.chat.completions.create(**kw)

    return asyncio.run(go())


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or any(cur is s for s in seen):
            continue
        seen.append(cur)
        stack += [cur.__cause__, cur.__context__, getattr(cur, "last_error", None)]
    return seen


def _assert_no_secret(exc: BaseException) -> None:
    """Nowhere in the error, its chain, their requests or responses."""
    for e in _chain(exc):
        blob = [str(e), repr(e.args), repr(getattr(e, "body", None)), repr(vars(e))]
        for attr in ("request", "response"):
            obj = vars(e).get(attr)
            if obj is None:
                continue
            blob.append(str(obj.url) if attr == "request" else obj.text)
            blob.append(repr(list(obj.headers.items())))
            if attr == "request":
                assert obj.headers.get("authorization") in (None, "***")
        assert SECRET not in " ".join(blob), type(e).__name__


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RK_FIDELITY_KEY", SECRET)
    return SECRET


@modes
def test_a_fatal_status_error_carries_the_servers_own_response(mode: str, key: str) -> None:
    with FaultServer() as server:
        server.response_headers = {"x-request-id": "req_fatal", "x-echo": f"Bearer {key}"}
        with pytest.raises(openai.BadRequestError) as info:
            _call(mode, _config(server.url("400")))
    exc = info.value
    assert isinstance(exc, BadRequest)
    assert exc.request_id == "req_fatal" and exc.response.headers["x-request-id"] == "req_fatal"
    # The body as the server sent it, and openai's unwrapped ``.body``.
    assert exc.response.json()["error"]["message"] == "faultserver says 400"
    assert exc.code is None or isinstance(exc.code, str)
    assert key not in exc.response.headers["x-echo"]
    _assert_no_secret(exc)


@modes
def test_all_failed_speaks_with_its_last_attempts_response(mode: str, key: str) -> None:
    with FaultServer(retry_after=0.01) as server:
        server.response_headers = {"x-request-id": "req_429"}
        with pytest.raises(openai.RateLimitError) as info:
            _call(mode, _config(server.url("429")))
    exc = info.value
    assert isinstance(exc, AllCandidatesFailed)
    assert exc.retry_after == pytest.approx(0.01)
    assert exc.last_error is not None and exc.last_error.status_code == 429
    assert exc.request_id == "req_429" and exc.response.headers["retry-after"]
    assert exc.body == exc.response.json()["error"] and exc.body["message"]
    _assert_no_secret(exc)


@modes
def test_an_echoed_key_is_gone_from_every_part_of_the_error(mode: str, key: str) -> None:
    with FaultServer() as server:
        with pytest.raises(openai.AuthenticationError) as info:
            _call(mode, _config(server.url("401")))
        assert any(key in v for h in server.post_headers for v in h.values())  # it was sent
    _assert_no_secret(info.value)
    assert info.value.response.status_code == 401


def test_a_synthetic_error_response_wraps_its_body_as_a_server_does() -> None:
    router = Router({"providers": {"a": {"kind": "ollama"}}, "models": {"m": {"provider": "a"}},
                     "routing": {"retry": {"max_attempts": 1, "last_candidate_attempts": 1}}},
                    providers={"a": FakeProvider("a", default=BadRequest(
                        "no", status_code=400, body={"error": {"message": "no", "code": "x"}}))},
                    health_probes=False)
    with pytest.raises(openai.BadRequestError) as info:
        router.chat.completions.create(model="m", messages=MSG)
    assert info.value.response.json() == {"error": {"message": "no", "code": "x"}}
    assert info.value.code == "x"


# --- answers assembled from a stream ---------------------------------------------------------


def _chunk(choices: list[dict[str, Any]], **top: Any) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate({"id": "c", "object": "chat.completion.chunk",
                                               "created": 1, "model": "x", "choices": choices,
                                               **top})


def test_assembly_keeps_the_fields_a_server_adds() -> None:
    asm = Assembler()
    for chunk in (
        _chunk([{"index": 0, "delta": {"role": "assistant", "reasoning_content": "think "},
                 "finish_reason": None, "stop_reason": None}]),
        _chunk([{"index": 0, "delta": {"reasoning_content": "hard"}, "finish_reason": None}]),
        _chunk([{"index": 0, "delta": {"content": "42"}, "finish_reason": None}]),
        _chunk([{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "</s>"}],
               timings={"predicted_ms": 5.0}),
        _chunk([], usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}),
    ):
        asm.add(chunk)
    done = asm.completion()
    choice = done.choices[0]
    assert choice.message.content == "42"
    assert choice.message.reasoning_content == "think hard"  # type: ignore[attr-defined]
    assert choice.stop_reason == "</s>"  # type: ignore[attr-defined]
    assert done.timings == {"predicted_ms": 5.0}  # type: ignore[attr-defined]
    # As a server's own JSON would have it: no null for fields it never sent.
    wire = done.model_dump(exclude_unset=True)
    assert "refusal" not in wire["choices"][0]["message"]
    assert wire["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_a_refusal_only_answer_has_no_content_as_openai_gives_it() -> None:
    asm = Assembler()
    asm.add(_chunk([{"index": 0, "delta": {"role": "assistant", "refusal": "I can't"},
                     "finish_reason": "stop"}]))
    message = asm.completion().choices[0].message
    assert message.content is None and message.refusal == "I can't"
    asm = Assembler()
    asm.add(_chunk([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": "stop"}]))
    assert asm.completion().choices[0].message.content == ""


def test_text_assembly_keeps_logprobs_and_extras() -> None:
    asm = TextAssembler()
    for text, lp, extra in (("a", -0.1, {}), ("b", -0.2, {"stop_reason": 7})):
        # As openai's client builds stream chunks: constructed, not validated (a chunk's
        # finish_reason is null until the last).
        asm.add(Completion.construct(**{
            "id": "t", "object": "text_completion", "created": 1, "model": "x",
            "choices": [{"index": 0, "text": text, "finish_reason": None, **extra,
                         "logprobs": {"tokens": [text], "token_logprobs": [lp],
                                      "text_offset": [0], "top_logprobs": [{text: lp}]}}]}))
    choice = asm.completion().choices[0]
    assert choice.text == "ab"
    assert choice.logprobs is not None
    assert choice.logprobs.tokens == ["a", "b"] and choice.logprobs.token_logprobs == [-0.1, -0.2]
    assert choice.logprobs.top_logprobs == [{"a": -0.1}, {"b": -0.2}]
    assert choice.stop_reason == 7  # type: ignore[attr-defined]


# --- results and the client surface ----------------------------------------------------------


def _fake(mode: str, default: Any = "one two three — été") -> Any:
    cls = Router if mode == "sync" else AsyncRouter
    provider = FakeProvider("a", default=default)
    return cls({"providers": {"a": {"kind": "ollama"}}, "models": {"m": {"provider": "a"}}},
               providers={"a": provider}, health_probes=False), provider


def test_request_id_reads_the_servers_or_none(key: str) -> None:
    router, _ = _fake("sync")
    assert router.chat.completions.create(model="m", messages=MSG)._request_id is None
    with FaultServer() as server:
        server.response_headers = {"x-request-id": "req_ok"}
        reply = _call("sync", _config(server.url("ok"), stream_upstream=False))
        # What openai's own client gives here (older clients set no _request_id at all;
        # they also need an HTTP client handed in, as routekit hands one).
        from routekit.providers.http.transport import http_lib

        with http_lib().Client() as http:
            direct = openai.OpenAI(base_url=server.url("ok"), api_key=key, http_client=http) \
                .chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
    assert reply._request_id == getattr(direct, "_request_id", None)
    assert reply.route.answered_by is not None


def test_a_raw_response_has_the_answering_servers_request_id(key: str) -> None:
    from routekit.providers.http.transport import http_lib

    with FaultServer() as server:
        server.response_headers = {"x-request-id": "req_raw"}
        with Router(_config(server.url("ok"), stream_upstream=False),
                    health_probes=False) as router:
            raw = router.chat.completions.with_raw_response.create(model="m", messages=MSG)
        with http_lib().Client() as http:  # what openai's own client gives (1.x: no id)
            direct = openai.OpenAI(base_url=server.url("ok"), api_key=key, http_client=http) \
                .chat.completions.with_raw_response.create(model="m", messages=MSG)  # type: ignore[arg-type]
    wanted = getattr(direct.parse(), "_request_id", None)
    assert wanted in ("req_raw", None)
    assert raw.request_id == wanted and raw.parse()._request_id == wanted
    if wanted is not None:
        assert raw.headers["x-request-id"] == "req_raw"
    in_process, _ = _fake("sync")  # no server, no id
    assert in_process.chat.completions.with_raw_response.create(
        model="m", messages=MSG).request_id is None


@modes
def test_an_error_event_in_a_stream_keeps_its_body(mode: str, key: str) -> None:
    # vLLM fails inside a 200 stream with an error event: its code and type reach the caller.
    with FaultServer() as server:
        with pytest.raises(openai.APIError) as info:
            _call(mode, _config(server.url("sse_error")), stream=True)
    exc = info.value
    assert exc.body == {"message": "upstream exploded", "type": "server_error",
                        "code": "engine_dead"}
    assert (exc.code, exc.type) == ("engine_dead", "server_error")


def test_a_routed_legacy_completion_pickles_with_its_route() -> None:
    import pickle

    from openai.types import Completion

    router, _ = _fake("sync")
    reply = router.completions.create(model="m", prompt="hi")
    again = pickle.loads(pickle.dumps(reply))
    assert isinstance(again, Completion) and type(again) is type(reply)
    assert again.model_dump() == reply.model_dump()
    assert again.route == reply.route


@modes
def test_create_refuses_a_model_class_before_routing(mode: str) -> None:
    class City(BaseModel):
        name: str

    router, provider = _fake(mode)
    with pytest.raises(TypeError, match=r"chat\.completions\.parse\(\)"):
        create = router.chat.completions.create(model="m", messages=MSG,
                                                response_format=City)
        if mode == "async":
            asyncio.run(create)
    assert not provider.calls


def test_an_answer_appended_to_messages_is_sent_without_nulls() -> None:
    with FaultServer() as server:
        config = {"providers": {"p": http_provider(server.url("ok"))},
                  "models": {"m": {"provider": "p"}}}
        with Router(config, health_probes=False) as router:
            reply = router.chat.completions.create(model="m", messages=MSG)
            router.chat.completions.create(model="m", messages=[
                *MSG, reply.choices[0].message, {"role": "user", "content": "again"}])
        sent = server.received[-1].body["messages"][1]
    assert sent == {"role": "assistant", "content": "Hello from the fault server."}


def test_async_models_list_is_awaitable_and_async_iterable() -> None:
    async def go() -> tuple[Any, list[str]]:
        router, _ = _fake("async")
        page = await router.models.list()
        ids = [m.id async for m in router.models.list()]
        return page, ids

    page, ids = asyncio.run(go())
    assert ids == ["m"] and [m.id for m in page] == ["m"]
    assert page.model_dump()["data"][0]["id"] == "m" and page.to_dict()["object"] == "list"
    assert not page.has_next_page() and list(page.iter_pages()) == [page]


def test_is_closed_follows_close() -> None:
    router, _ = _fake("sync")
    view = router.with_options(max_retries=0)
    assert not router.is_closed() and not view.is_closed()
    router.close()
    assert router.is_closed() and view.is_closed()


# --- with_raw_response / with_streaming_response ---------------------------------------------


def test_streaming_response_reads_a_stream_as_server_sent_events() -> None:
    router, _ = _fake("sync")
    surface = router.chat.completions.with_streaming_response
    with surface.create(model="m", messages=MSG, stream=True) as response:
        lines = list(response.iter_lines())
        assert response.read().startswith(b"data: {")  # what was read is kept
    assert lines[-2:] == ["data: [DONE]", ""] and lines[1] == ""
    with surface.create(model="m", messages=MSG, stream=True) as response:
        # Two-byte pieces cut the answer's non-ASCII characters; the text comes out whole.
        assert "".join(response.iter_text(2)) == response.read().decode()
        assert "été" in response.read().decode()
    events = [ChatCompletionChunk.model_validate_json(line[6:]) for line in lines
              if line.startswith("data: {")]
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == \
        "one two three — été"
    with surface.create(model="m", messages=MSG) as response:
        body = response.json()
        assert response.text() == response.read().decode()
        assert b"".join(response.iter_bytes(7)) == response.read()
        assert response.parse(to=dict) == body and isinstance(response.parse(to=str), str)
        assert isinstance(response.parse(to=ChatCompletion), ChatCompletion)
    assert body["choices"][0]["message"]["content"] == "one two three — été"


def test_async_streaming_response_reads_and_iterates() -> None:
    async def go() -> tuple[list[str], Any, str]:
        router, _ = _fake("async")
        surface = router.chat.completions.with_streaming_response
        async with surface.create(model="m", messages=MSG, stream=True) as response:
            lines = [line async for line in response.iter_lines()]
        async with surface.create(model="m", messages=MSG) as response:
            body = await response.json()
            text = "".join([t async for t in response.iter_text(5)])
        return lines, body, text

    lines, body, text = asyncio.run(go())
    assert lines[-2:] == ["data: [DONE]", ""]
    assert body["choices"][0]["message"]["content"] == "one two three — été"
    assert text.startswith("{")


def test_raw_response_parses_to_the_type_asked_for() -> None:
    router, _ = _fake("sync")
    raw = router.chat.completions.with_raw_response.create(model="m", messages=MSG)
    as_dict = raw.parse(to=dict)
    assert isinstance(as_dict, dict) and as_dict["object"] == "chat.completion"
    assert raw.parse(to=bytes) == raw.content
    with pytest.raises(TypeError, match="parse"):
        raw.parse(to=set)
    stream = router.chat.completions.with_raw_response.create(model="m", messages=MSG,
                                                              stream=True)
    with pytest.raises(TypeError, match="stream"):
        stream.parse(to=dict)
    stream.close()

