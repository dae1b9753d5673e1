"""One chat request → exactly what llama-cpp-python would decode for it.

Owns ``plan_chat``: it runs ``Llama.create_chat_completion`` (the real method, with its own
defaults: temperature 0.2, repeat_penalty 1.0, ...) against a stand-in for the ``Llama`` that
forwards every attribute to the real one but records the ``create_completion`` call the chat
handler makes instead of decoding. The result (a ``ChatPlan``) is the formatted prompt — as
tokens, or as text to tokenize elsewhere — the merged stop list and every sampling argument,
as llama-cpp-python's own chat handler computed them: the same chat template (a registered
``chat_format``, the GGUF's template, or a custom ``chat_handler``), formatting once per
request, in Python.

Both in-process providers use it: ``llama_cpp`` to decode non-streaming requests through
``create_completion`` with a deadline check per token, ``llama_cpp_native`` to hand the plan
to the C++ decode loop. Handlers that do not end in exactly one ``create_completion`` call
(multimodal, some function-calling formats) raise ``UnsupportedChat``.

Must not decode, load models or import ``llama_cpp`` at module import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from .gate import LlamaModel

__all__ = ["ChatPlan", "UnsupportedChat", "completion_to_chat", "plan_chat"]


class UnsupportedChat(Exception):
    """The model's chat handler does not reduce to one ``create_completion`` call."""


@dataclass(frozen=True)
class ChatPlan:
    """What ``create_chat_completion`` would have decoded.

    ``prompt_tokens`` is set when the plan was made with ``tokenize=True``; otherwise the
    prompt is ``prompt_text`` (UTF-8) to be tokenized with ``add_bos`` (llama.cpp's
    ``add_special``) and ``special`` (``parse_special``). ``completion_kwargs`` holds the
    rest of the ``create_completion`` keyword arguments (never ``prompt`` or ``stream``).
    """

    prompt_text: bytes
    add_bos: bool
    special: bool
    prompt_tokens: list[int] | None
    completion_kwargs: dict[str, Any]


class _DeferredTokens(list):  # type: ignore[type-arg]  # a list, so handlers pass it along
    """Stands for a tokenized prompt whose tokenization happens later (in C++)."""

    __slots__ = ("text", "add_bos", "special")
    text: bytes
    add_bos: bool
    special: bool


class _Recorder:
    """A ``Llama`` whose ``create_completion`` only records its arguments."""

    def __init__(self, llm: LlamaModel, tokenize: bool) -> None:
        self._llm = llm
        self._tokenize = tokenize
        self.calls: list[dict[str, Any]] = []
        self.deferred: list[_DeferredTokens] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        if self._tokenize:
            return self._llm.tokenize(text, add_bos=add_bos, special=special)
        deferred = _DeferredTokens()
        deferred.text, deferred.add_bos, deferred.special = bytes(text), add_bos, special
        self.deferred.append(deferred)
        return deferred

    def create_completion(self, **kwargs: Any) -> Iterator[Any]:
        self.calls.append(kwargs)
        return iter(())


def plan_chat(
    llm: LlamaModel, messages: list[dict[str, Any]], kwargs: dict[str, Any], *, tokenize: bool
) -> ChatPlan:
    """Format ``messages`` with ``kwargs`` (``create_chat_completion`` arguments, from
    ``params.llama_kwargs``) exactly as ``llm.create_chat_completion`` would.

    Exceptions of the chat handler (a template that rejects the messages, ...) propagate
    unchanged: the caller translates them. Raises ``UnsupportedChat`` for handlers that do
    something else than one ``create_completion`` call.
    """
    recorder = _Recorder(llm, tokenize)
    create: Any = type(llm).create_chat_completion  # the real method, run on the stand-in
    create(recorder, messages=messages, stream=True, **kwargs)
    if len(recorder.calls) != 1:
        raise UnsupportedChat(
            f"the chat handler made {len(recorder.calls)} create_completion calls, not one"
        )
    call = dict(recorder.calls[0])
    prompt = call.pop("prompt", None)
    call.pop("stream", None)
    if call.pop("suffix", None) is not None or call.pop("echo", False):
        raise UnsupportedChat("the chat handler asked for an infill or echo completion")
    if tokenize:
        if not isinstance(prompt, list):
            raise UnsupportedChat("the chat handler passed a text prompt")
        return ChatPlan(b"", True, True, [int(t) for t in prompt], call)
    if isinstance(prompt, _DeferredTokens) and len(recorder.deferred) == 1:
        return ChatPlan(prompt.text, prompt.add_bos, prompt.special, None, call)
    if isinstance(prompt, str):  # create_completion tokenizes text prompts like this
        return ChatPlan(prompt.encode("utf-8"), True, True, None, call)
    raise UnsupportedChat("the chat handler built its prompt in an unexpected way")


def completion_to_chat(completion: dict[str, Any]) -> dict[str, Any]:
    """llama-cpp-python's text completion dict → its chat completion dict (the shape
    ``create_chat_completion(stream=False)`` returns)."""
    choice = completion["choices"][0]
    return {
        "id": "chat" + completion["id"],
        "object": "chat.completion",
        "created": completion["created"],
        "model": completion["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": choice["text"]},
                "logprobs": None,
                "finish_reason": choice["finish_reason"],
            }
        ],
        "usage": completion["usage"],
    }
