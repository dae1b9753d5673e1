"""One ``ChatCompletion`` from the chunks of a streamed answer.

Owns ``Assembler``: the merge rules for ``ChatCompletionChunk`` deltas — text and refusal
concatenated per choice, tool calls merged by their index (id, type and name from the first
delta that has them, arguments concatenated), the role, the last finish reason, logprobs
appended, usage from the chunk that carries it (``stream_options.include_usage``), and the
fields a server adds beyond OpenAI's schema, so a non-streaming answer keeps them: a delta's
extra strings concatenated (vLLM's ``reasoning_content``, Ollama's ``reasoning``), other
extras (a choice's ``stop_reason``, a chunk's ``timings``) the last value that was not null. Used when
a provider streams a non-streaming request upstream (``stream_upstream``) so first-byte and
stall deadlines can tell a hung server from a slow answer; the caller still gets the
``ChatCompletion`` a non-streaming call returns. ``TextAssembler`` does the same for legacy
text completions (``Completion`` chunks). Must not do I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["Assembler", "TextAssembler"]


def _merge_last(into: dict[str, Any], extra: dict[str, Any]) -> None:
    """Extras that are not increments: the last value that was not null wins."""
    for key, value in extra.items():
        if value is not None or key not in into:
            into[key] = value


def _plain(usage: Any) -> Any:
    """Usage as the server sent it (the fields it set, not every default as null)."""
    dump = getattr(usage, "model_dump", None)
    return dump(exclude_unset=True) if dump is not None else usage


class _Choice:
    __slots__ = ("role", "content", "refusal", "tools", "function", "finish", "logprobs",
                 "refusal_logprobs", "extra", "message_extra")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tools: dict[int, dict[str, Any]] = {}
        self.function: dict[str, Any] | None = None
        self.finish: str | None = None
        self.logprobs: list[Any] | None = None
        self.refusal_logprobs: list[Any] | None = None
        self.extra: dict[str, Any] = {}  # the choice's own extras (vLLM's stop_reason)
        self.message_extra: dict[str, Any] = {}  # the delta's (reasoning text)

    def add_message_extra(self, extra: dict[str, Any]) -> None:
        """A delta's extras: strings are increments (reasoning text streams like content);
        anything else is a value, the last one not null kept."""
        into = self.message_extra
        for key, value in extra.items():
            old = into.get(key)
            if isinstance(value, str) and isinstance(old, str):
                into[key] = old + value
            elif value is not None or key not in into:
                into[key] = value


class Assembler:
    """Feed it chunks in order (``add``); ``completion()`` builds the answer."""

    __slots__ = ("id", "created", "model", "fingerprint", "service_tier", "usage", "choices",
                 "chunks", "text", "extra")

    def __init__(self) -> None:
        self.id = ""
        self.created = 0
        self.model = ""
        self.fingerprint: str | None = None
        self.service_tier: str | None = None
        self.usage: Any = None
        self.choices: dict[int, _Choice] = {}
        self.chunks = 0
        self.text: list[str] = []  # choice 0's text so far (a deadline's partial answer)
        self.extra: dict[str, Any] = {}  # the chunks' own extras (llama.cpp's timings)

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.chunks += 1
        if not self.id:
            self.id, self.created, self.model = chunk.id, chunk.created, chunk.model
        if chunk.model_extra:
            _merge_last(self.extra, chunk.model_extra)
        if chunk.system_fingerprint:
            self.fingerprint = chunk.system_fingerprint
        tier = getattr(chunk, "service_tier", None)
        if tier:
            self.service_tier = tier
        if chunk.usage is not None:
            self.usage = chunk.usage
        for c in chunk.choices:
            choice = self.choices.get(c.index)
            if choice is None:
                choice = self.choices[c.index] = _Choice()
            if c.finish_reason is not None:
                choice.finish = c.finish_reason
            if c.model_extra:
                _merge_last(choice.extra, c.model_extra)
            if c.logprobs is not None:
                if c.logprobs.content:
                    choice.logprobs = (choice.logprobs or []) + list(c.logprobs.content)
                if c.logprobs.refusal:
                    choice.refusal_logprobs = ((choice.refusal_logprobs or [])
                                               + list(c.logprobs.refusal))
            d = c.delta
            if d is None:
                continue
            if d.model_extra:
                choice.add_message_extra(d.model_extra)
            if d.role:
                choice.role = d.role
            if d.content:
                choice.content.append(d.content)
                if c.index == 0:
                    self.text.append(d.content)
            if d.refusal:
                choice.refusal.append(d.refusal)
            if d.function_call is not None:
                f = choice.function or {"name": "", "arguments": ""}
                if d.function_call.name:
                    f["name"] += d.function_call.name
                if d.function_call.arguments:
                    f["arguments"] += d.function_call.arguments
                choice.function = f
            for tc in d.tool_calls or ():
                slot = choice.tools.setdefault(
                    tc.index, {"id": "", "type": "function",
                               "function": {"name": "", "arguments": ""}})
                if tc.id:
                    slot["id"] = tc.id
                if tc.type:
                    slot["type"] = tc.type
                if tc.function is not None:
                    if tc.function.name:
                        slot["function"]["name"] += tc.function.name
                    if tc.function.arguments:
                        slot["function"]["arguments"] += tc.function.arguments

    @property
    def finished(self) -> bool:
        return bool(self.choices) and all(c.finish is not None for c in self.choices.values())

    def partial(self) -> str:
        return "".join(self.text)

    def completion(self) -> ChatCompletion:
        from openai.types.chat import ChatCompletion

        choices = []
        for index in sorted(self.choices):
            c = self.choices[index]
            # No text and something else instead (tool calls, a refusal): null, as a
            # non-streaming answer has it.
            message: dict[str, Any] = {
                "role": c.role,
                "content": "".join(c.content)
                if c.content or not (c.tools or c.function or c.refusal) else None,
            }
            if c.refusal:
                message["refusal"] = "".join(c.refusal)
            if c.tools:
                message["tool_calls"] = [c.tools[i] for i in sorted(c.tools)]
            if c.function is not None:
                message["function_call"] = c.function
            for key, value in c.message_extra.items():
                message.setdefault(key, value)
            logprobs = None
            if c.logprobs is not None or c.refusal_logprobs is not None:
                logprobs = {"content": c.logprobs, "refusal": c.refusal_logprobs}
            out = {"index": index, "message": message,
                   "finish_reason": c.finish or "stop", "logprobs": logprobs}
            for key, value in c.extra.items():
                out.setdefault(key, value)
            choices.append(out)
        data: dict[str, Any] = {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model, "choices": choices,
        }
        for key, value in self.extra.items():
            if key not in ("object", "choices", "usage"):
                data.setdefault(key, value)
        if self.fingerprint:
            data["system_fingerprint"] = self.fingerprint
        if self.service_tier:
            data["service_tier"] = self.service_tier
        if self.usage is not None:
            data["usage"] = _plain(self.usage)
        return ChatCompletion.model_validate(data)


class TextAssembler:
    """``Assembler`` for legacy text completions: ``Completion`` chunks in, one ``Completion``
    out (text concatenated per choice, logprobs' lists appended, the last finish reason, usage
    when a chunk has it, extras as ``Assembler`` keeps them)."""

    __slots__ = ("id", "created", "model", "fingerprint", "usage", "texts", "finish", "chunks",
                 "logprobs", "extra", "choice_extra")

    def __init__(self) -> None:
        self.id = ""
        self.created = 0
        self.model = ""
        self.fingerprint: str | None = None
        self.usage: Any = None
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, str] = {}
        self.chunks = 0
        self.logprobs: dict[int, dict[str, list[Any]]] = {}
        self.extra: dict[str, Any] = {}
        self.choice_extra: dict[int, dict[str, Any]] = {}

    def add(self, chunk: Any) -> None:
        self.chunks += 1
        if not self.id:
            self.id, self.created, self.model = chunk.id, chunk.created, chunk.model
        if getattr(chunk, "system_fingerprint", None):
            self.fingerprint = chunk.system_fingerprint
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        if getattr(chunk, "model_extra", None):
            _merge_last(self.extra, chunk.model_extra)
        for c in chunk.choices:
            self.texts.setdefault(c.index, [])
            if c.text:
                self.texts[c.index].append(c.text)
            if c.finish_reason is not None:
                self.finish[c.index] = c.finish_reason
            if getattr(c, "model_extra", None):
                _merge_last(self.choice_extra.setdefault(c.index, {}), c.model_extra)
            lp = getattr(c, "logprobs", None)
            if lp is not None:
                into = self.logprobs.setdefault(c.index, {})
                for key in ("text_offset", "token_logprobs", "tokens", "top_logprobs"):
                    part = getattr(lp, key, None)
                    if part is not None:
                        into.setdefault(key, []).extend(part)

    def partial(self) -> str:
        return "".join(self.texts.get(0, ()))

    def completion(self) -> Any:
        from openai.types import Completion

        choices = []
        for i in sorted(self.texts):
            choice: dict[str, Any] = {"index": i, "text": "".join(self.texts[i]),
                                      "logprobs": self.logprobs.get(i),
                                      "finish_reason": self.finish.get(i, "stop")}
            for key, value in self.choice_extra.get(i, {}).items():
                choice.setdefault(key, value)
            choices.append(choice)
        data: dict[str, Any] = {
            "id": self.id, "object": "text_completion", "created": self.created,
            "model": self.model, "choices": choices,
        }
        for key, value in self.extra.items():
            if key not in ("object", "choices", "usage"):
                data.setdefault(key, value)
        if self.fingerprint:
            data["system_fingerprint"] = self.fingerprint
        if self.usage is not None:
            data["usage"] = _plain(self.usage)
        return Completion.model_validate(data)
