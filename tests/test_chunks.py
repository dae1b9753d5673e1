"""The in-process providers' openai objects: the direct chat-chunk build must give exactly the
object validation gives (same fields, fields set, extra and private state, dumps and JSON),
and everything outside its plain shape must still be validated."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk

from routekit.providers.llama_cpp import chunks
from routekit.providers.llama_cpp.chunks import _same, chat_chunk, from_llama


def llama_chunk(delta: dict[str, Any], finish: str | None = None, **over: Any
                ) -> dict[str, Any]:
    """A chunk as llama-cpp-python's chat stream yields it (keys and order as it does)."""
    raw: dict[str, Any] = {
        "id": "chatcmpl-a8b7", "model": "/models/x.gguf", "created": 1795707783,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    raw.update(over)
    return raw


def validated(raw: dict[str, Any], model: str) -> ChatCompletionChunk:
    raw = copy.deepcopy(raw)
    raw["model"] = model
    return ChatCompletionChunk.model_validate(raw)


def identical(a: ChatCompletionChunk, b: ChatCompletionChunk) -> None:
    assert _same(a, b)
    assert a == b
    assert a.model_dump() == b.model_dump()
    assert a.model_dump(exclude_unset=True) == b.model_dump(exclude_unset=True)
    assert a.model_dump_json() == b.model_dump_json()
    assert a.to_json() == b.to_json()
    assert a.to_dict() == b.to_dict()
    assert repr(a) == repr(b)
    assert a.model_fields_set == b.model_fields_set
    for ca, cb in zip(a.choices, b.choices, strict=True):
        assert ca.model_fields_set == cb.model_fields_set
        assert ca.delta.model_fields_set == cb.delta.model_fields_set


PLAIN = [
    llama_chunk({"role": "assistant"}),
    llama_chunk({"content": "hi"}),
    llama_chunk({"content": ""}),
    llama_chunk({"content": "caf\u00e9 \U0001f600\n"}),
    llama_chunk({"role": "assistant", "content": "both"}),
    llama_chunk({}, "length"),
    llama_chunk({}, "stop"),
    llama_chunk({"content": "x"}, "stop"),
]


def test_the_direct_build_is_on_and_checked_against_validation() -> None:
    shells = chunks._get_shells()
    assert shells.ok  # on this openai/pydantic the self-check passed
    for case in chunks._SELF_CHECK:
        built = shells._make(*case)
        assert _same(built, ChatCompletionChunk.model_validate(chunks._raw(*case)))


@pytest.mark.parametrize("raw", PLAIN, ids=lambda r: repr(r["choices"][0]))
def test_plain_llama_chunks_build_exactly_what_validation_builds(raw: dict[str, Any]) -> None:
    want = validated(raw, "gemma")
    got = from_llama(copy.deepcopy(raw), "gemma")
    identical(got, want)
    assert got.model == "gemma"  # the routed model's name, not llama's file path


def test_chat_chunk_matches_validation_and_objects_share_nothing() -> None:
    a = chat_chunk("chatcmpl-1", "m", 7, {"content": "a"}, None)
    b = chat_chunk("chatcmpl-1", "m", 7, {"content": "b"}, None)
    identical(a, ChatCompletionChunk.model_validate(chunks._raw("chatcmpl-1", "m", 7,
                                                                {"content": "a"}, None)))
    a.choices[0].delta.content = "changed"
    a.choices.append(b.choices[0])
    assert b.choices[0].delta.content == "b" and len(b.choices) == 1
    assert a.__dict__ is not b.__dict__ and a.model_fields_set is not b.model_fields_set


OUTSIDE = {
    "tool call": llama_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                              "function": {"name": "f", "arguments": "{}"}}]}),
    "logprobs": llama_chunk({"content": "x"}, logprobs=None,
                            choices=[{"index": 0, "delta": {"content": "x"}, "finish_reason": None,
                                      "logprobs": {"content": [{"token": "x", "logprob": -0.1,
                                                                "bytes": [120],
                                                                "top_logprobs": []}]}}]),
    "usage": llama_chunk({}, "stop", usage={"prompt_tokens": 3, "completion_tokens": 1,
                                            "total_tokens": 4}),
    "no logprobs key": llama_chunk({}, choices=[{"index": 0, "delta": {"content": "x"},
                                                 "finish_reason": None}]),
    "second choice": llama_chunk({}, choices=[
        {"index": 0, "delta": {"content": "x"}, "logprobs": None, "finish_reason": None},
        {"index": 1, "delta": {"content": "y"}, "logprobs": None, "finish_reason": None}]),
    "no choices": llama_chunk({}, choices=[]),
    "user role": llama_chunk({"role": "user"}),
    "content None": llama_chunk({"content": None}),
    "float created": llama_chunk({"content": "x"}, created=12.0),
}


@pytest.mark.parametrize("name", list(OUTSIDE))
def test_chunks_outside_the_plain_shape_are_validated(name: str) -> None:
    raw = OUTSIDE[name]
    assert not chunks._plain(dict(raw, model="gemma"))
    identical(from_llama(copy.deepcopy(raw), "gemma"), validated(raw, "gemma"))


def test_an_unknown_finish_reason_is_kept_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    raw = llama_chunk({}, "abort")  # not in openai's literal: validation fails, construct keeps it
    assert not chunks._plain(dict(raw))
    with caplog.at_level(logging.DEBUG, "routekit.providers.llama_cpp"):
        chunk = from_llama(raw, "gemma")
    assert chunk.choices[0].finish_reason == "abort"
    assert "did not validate" in caplog.text


def test_a_failed_self_check_falls_back_to_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another openai/pydantic where the check fails: the shells turn off, chunks validate.
    monkeypatch.setattr(chunks, "_SELF_CHECK", chunks._SELF_CHECK
                        + (("chatcmpl-check", "m", 1, {"content": "x"}, "unknown-reason"),))
    monkeypatch.setattr(chunks, "_shells", None)
    shells = chunks._get_shells()
    assert not shells.ok
    got = chat_chunk("chatcmpl-1", "m", 1, {"content": "x"}, None)
    identical(got, ChatCompletionChunk.model_validate(chunks._raw("chatcmpl-1", "m", 1,
                                                                  {"content": "x"}, None)))
    raw = llama_chunk({"content": "y"})
    identical(from_llama(copy.deepcopy(raw), "gemma"), validated(raw, "gemma"))


def test_a_default_other_than_none_is_refused() -> None:
    from pydantic import BaseModel

    class WithDefault(BaseModel):
        items: list[int] = []

    with pytest.raises(TypeError, match="WithDefault.items has a default other than None"):
        chunks._template(WithDefault)


# -- legacy text streams --------------------------------------------------------------------


def llama_text_chunk(text: str, finish: str | None = None, **over: Any) -> dict[str, Any]:
    """A chunk as llama-cpp-python's create_completion(stream=True) yields it."""
    raw: dict[str, Any] = {
        "id": "cmpl-721b", "object": "text_completion", "created": 1795707783,
        "model": "/models/x.gguf",
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
    }
    raw.update(over)
    return raw


def test_text_chunks_build_what_validation_or_construct_builds() -> None:
    from openai.types import Completion

    assert chunks._get_text_shells().ok
    for finish in ("length", "stop"):  # a final chunk: what validation gives
        raw = llama_text_chunk("é", finish)
        want = Completion.model_validate(dict(copy.deepcopy(raw), model="gemma"))
        got = chunks.text_from_llama(copy.deepcopy(raw), "gemma")
        assert _same(got, want) and got.to_json() == want.to_json()
    # Mid-stream llama says finish_reason None, which openai's type does not admit: the
    # object is what construct() (the fallback before, and openai's own stream reader) gives.
    raw = llama_text_chunk(" i")
    want = Completion.construct(**dict(copy.deepcopy(raw), model="gemma"))
    got = chunks.text_from_llama(copy.deepcopy(raw), "gemma")
    assert _same(got, want)
    assert got.choices[0].text == " i" and got.choices[0].finish_reason is None
    assert got.model == "gemma" and got.model_dump() == want.model_dump()


@pytest.mark.parametrize("raw", [
    llama_text_chunk("x", "abort"),
    llama_text_chunk("x", usage={"prompt_tokens": 1, "completion_tokens": 1,
                                 "total_tokens": 2}),
    llama_text_chunk("x", choices=[{"text": "x", "index": 0, "finish_reason": None,
                                    "logprobs": {"tokens": ["x"], "token_logprobs": [-0.1],
                                                 "top_logprobs": [{"x": -0.1}],
                                                 "text_offset": [0]}}]),
    llama_text_chunk("x", object="chat.completion.chunk"),
], ids=["unknown finish", "usage", "logprobs", "wrong object"])
def test_text_chunks_outside_the_plain_shape_go_through_build(raw: dict[str, Any]) -> None:
    from openai.types import Completion

    assert not chunks._plain_text(dict(raw, model="gemma"))
    got = chunks.text_from_llama(copy.deepcopy(raw), "gemma")
    want = chunks.build(Completion, dict(copy.deepcopy(raw), model="gemma"))
    assert _same(got, want)
