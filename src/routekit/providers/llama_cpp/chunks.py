"""``openai`` result objects from llama's dicts: chat chunks (fast), completions, text chunks.

Owns the one place in-process providers turn llama output into the types a drop-in must
return. ``build`` validates any dict through pydantic-core; ``chat_chunk`` and
``from_llama`` build the common plain-text chat chunk — one choice, a role or content delta,
a finish reason — without validation, from values they check themselves, because a stream
builds one per token and on the token's path: validation cost 6.2 µs warm and 119 µs with
cold caches (the first Python after an idle wait, as on every token a decode thread hands
over), the direct build 5.0 and 83 µs (medians on the 2-core dev VM;
``benchmarks/bench_decode.py`` prints both).

The direct build gives the object validation would: the same ``__dict__`` (every field, in
field order), ``model_fields_set``, extra and private state. ``_Shells`` checks that once per
process against ``model_validate`` and, on any difference (another pydantic or openai
version), turns itself off: every chunk is then validated, as before. Anything outside the
plain shape (tool calls, logprobs, an unknown finish reason) is always validated.
``text_from_llama`` does the same for legacy text streams (``_TextShells``).

Must not import ``openai`` before a chunk is built (``import routekit`` does not load it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from openai import BaseModel as OpenAIModel
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

__all__ = ["build", "chat_chunk", "chunk_type", "from_llama", "prepare", "text_from_llama",
           "to_completion", "usage_chunk"]

log = logging.getLogger("routekit.providers.llama_cpp")

_Model = TypeVar("_Model", bound="OpenAIModel")

# openai's ChatCompletionChunk Choice.finish_reason literal.
_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_CHUNK_KEYS = frozenset({"id", "model", "created", "object", "choices"})
_CHOICE_KEYS = frozenset({"index", "delta", "logprobs", "finish_reason"})
# openai's CompletionChoice.finish_reason literal, and a text stream chunk's choice keys.
_TEXT_FINISH = frozenset({"stop", "length", "content_filter"})
_TEXT_CHOICE_KEYS = frozenset({"text", "index", "logprobs", "finish_reason"})

_chunk_cls: type[ChatCompletionChunk] | None = None
_completion_cls: type[ChatCompletion] | None = None


def chunk_type() -> type[ChatCompletionChunk]:
    global _chunk_cls
    if _chunk_cls is None:
        from openai.types.chat import ChatCompletionChunk

        _chunk_cls = ChatCompletionChunk
    return _chunk_cls


def build(cls: type[_Model], raw: dict[str, Any]) -> _Model:
    # model_validate (pydantic-core, compiled) measured ~20x cheaper here than the openai
    # models' recursive pure-Python construct(): ~3 us vs ~60 us per chunk. construct() stays
    # as the fallback so an unexpected field value never costs the caller a response.
    try:
        return cls.model_validate(raw)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        log.debug("llama output did not validate as %s (%s); building it unvalidated",
                  cls.__name__, exc)
        return cls.construct(**raw)


def to_completion(raw: dict[str, Any], model: str) -> ChatCompletion:
    global _completion_cls
    if _completion_cls is None:
        from openai.types.chat import ChatCompletion

        _completion_cls = ChatCompletion
    raw["model"] = model
    return build(_completion_cls, raw)


def prepare() -> None:
    """Import openai's chat result types and build each kind once (chunks both ways, a
    completion), so a model's first request does not pay for it: importing
    ``openai.types.chat`` alone took ~0.4 s on the 2-core dev VM, most of a warm model's first
    TTFB. The in-process providers' warm-up calls this."""
    chat_chunk("chatcmpl-warm", "m", 0, {"role": "assistant"}, None)
    chat_chunk("chatcmpl-warm", "m", 0, {"content": "x"}, "stop")
    to_completion({"id": "chatcmpl-warm", "object": "chat.completion", "created": 0,
                   "choices": [{"index": 0, "logprobs": None, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "x"}}],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
                  "m")


def usage_chunk(id_: str, model: str, created: int, prompt_tokens: int, completion_tokens: int,
                *, text: bool = False) -> Any:
    """The last chunk of a stream asked for ``stream_options={"include_usage": True}``: no
    choices, the usage (as OpenAI sends it). A ``Completion`` for a legacy text stream."""
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if text:
        from openai.types import Completion

        return build(Completion, {"id": id_, "object": "text_completion", "created": created,
                                  "model": model, "choices": [], "usage": usage})
    return build(chunk_type(), {"id": id_, "object": "chat.completion.chunk", "created": created,
                                "model": model, "choices": [], "usage": usage})


# -- the direct build --------------------------------------------------------------------------

_set = object.__setattr__


def _template(cls: type[Any]) -> dict[str, None]:
    """Every field of ``cls`` in field order, set to None: the ``__dict__`` validation gives
    before the values given are written over it. Refuses a class with a default other than
    None (a shared mutable default would leak between objects)."""
    for name, field in cls.model_fields.items():
        if not field.is_required() and field.get_default(call_default_factory=True) is not None:
            raise TypeError(f"{cls.__name__}.{name} has a default other than None")
    return dict.fromkeys(cls.model_fields)


def _new(cls: Any, fields: dict[str, Any], fields_set: set[str]) -> Any:
    """One model object with the state validation would give it (no validation)."""
    obj = cls.__new__(cls)
    _set(obj, "__dict__", fields)
    _set(obj, "__pydantic_fields_set__", fields_set)
    _set(obj, "__pydantic_extra__", {})
    _set(obj, "__pydantic_private__", None)
    return obj


class _Shells:
    """The chat chunk's three classes and their field templates, made and checked at first
    use; ``ok`` False when the direct build would differ from validation (then every chunk
    is validated)."""

    __slots__ = ("ok", "chunk_cls", "choice_cls", "delta_cls", "chunk_t", "choice_t",
                 "delta_t")

    def __init__(self) -> None:
        self.ok = False
        cls = chunk_type()
        try:
            choice_cls = cls.model_fields["choices"].annotation.__args__[0]  # type: ignore[union-attr]
            delta_cls = choice_cls.model_fields["delta"].annotation
            self.chunk_cls, self.choice_cls, self.delta_cls = cls, choice_cls, delta_cls
            self.chunk_t, self.choice_t, self.delta_t = (
                _template(cls), _template(choice_cls), _template(delta_cls))
            self.ok = all(_same(self._make(*case), cls.model_validate(_raw(*case)))
                          for case in _SELF_CHECK)
        except Exception as exc:  # any surprise in another openai/pydantic: validate instead
            log.debug("direct chunk build unavailable (%s); validating every chunk", exc)
        if not self.ok:
            log.debug("direct chunk build differs from model_validate here; validating "
                      "every chunk")

    def _make(self, id_: str, model: str, created: int, delta: dict[str, Any],
              finish: str | None) -> Any:
        d = _new(self.delta_cls, {**self.delta_t, **delta}, set(delta))
        c = _new(self.choice_cls, {**self.choice_t, "delta": d, "finish_reason": finish,
                                   "index": 0, "logprobs": None},
                 set(_CHOICE_KEYS))
        return _new(self.chunk_cls, {**self.chunk_t, "id": id_, "choices": [c],
                                     "created": created, "model": model,
                                     "object": "chat.completion.chunk"}, set(_CHUNK_KEYS))


_SELF_CHECK: tuple[tuple[str, str, int, dict[str, Any], str | None], ...] = (
    ("chatcmpl-check", "m", 1, {"role": "assistant"}, None),
    ("chatcmpl-check", "m", 1, {"content": "é"}, None),
    ("chatcmpl-check", "m", 1, {}, "length"),
)


def _raw(id_: str, model: str, created: int, delta: dict[str, Any],
         finish: str | None) -> dict[str, Any]:
    return {"id": id_, "model": model, "created": created, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}]}


class _TextShells:
    """The legacy text stream's chunk (``Completion`` with one ``CompletionChoice``), built
    directly like the chat chunk. Mid-stream, llama's finish reason is None, which openai's
    type does not admit: validation fails and ``build`` falls back to ``construct`` (81 µs a
    chunk here, against 4 µs validated); the direct build gives ``construct``'s object for
    those, and validation's for a final chunk. Both checked at first use, as ``_Shells``."""

    __slots__ = ("ok", "cls", "choice_cls", "t", "choice_t")

    def __init__(self) -> None:
        self.ok = False
        try:
            from openai.types import Completion

            choice_cls = Completion.model_fields["choices"].annotation.__args__[0]  # type: ignore[union-attr]
            self.cls, self.choice_cls = Completion, choice_cls
            self.t, self.choice_t = _template(Completion), _template(choice_cls)
            final = ("cmpl-check", "m", 1, "é", "length")
            mid = ("cmpl-check", "m", 1, "x", None)
            self.ok = (_same(self._make(*final), Completion.model_validate(_text_raw(*final)))
                       and _same(self._make(*mid), Completion.construct(**_text_raw(*mid))))
        except Exception as exc:
            log.debug("direct text chunk build unavailable (%s)", exc)

    def _make(self, id_: str, model: str, created: int, text: str, finish: str | None) -> Any:
        c = _new(self.choice_cls, {**self.choice_t, "finish_reason": finish, "index": 0,
                                   "logprobs": None, "text": text}, set(_TEXT_CHOICE_KEYS))
        return _new(self.cls, {**self.t, "id": id_, "choices": [c], "created": created,
                               "model": model, "object": "text_completion"},
                    set(_CHUNK_KEYS))


def _text_raw(id_: str, model: str, created: int, text: str,
              finish: str | None) -> dict[str, Any]:
    return {"id": id_, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None,
                         "finish_reason": finish}]}


def _same(a: Any, b: Any) -> bool:
    """Equal as objects, state and all (pydantic's == skips model_fields_set)."""
    if type(a) is not type(b):
        return False
    if hasattr(type(a), "model_fields"):
        if (a.__pydantic_fields_set__ != b.__pydantic_fields_set__
                or a.__pydantic_extra__ != b.__pydantic_extra__
                or a.__pydantic_private__ != b.__pydantic_private__
                or list(a.__dict__) != list(b.__dict__)):
            return False
        return all(_same(a.__dict__[k], b.__dict__[k]) for k in a.__dict__)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


_shells: _Shells | None = None
_text_shells: _TextShells | None = None


def _get_shells() -> _Shells:
    global _shells
    if _shells is None:
        _shells = _Shells()
    return _shells


def _get_text_shells() -> _TextShells:
    global _text_shells
    if _text_shells is None:
        _text_shells = _TextShells()
    return _text_shells


def chat_chunk(id_: str, model: str, created: int, delta: dict[str, str],
               finish: str | None) -> ChatCompletionChunk:
    """One chat chunk: ``delta`` is ``{"role": "assistant"}``, ``{"content": text}`` or
    ``{}``; ``finish`` None or one of openai's finish reasons."""
    shells = _shells or _get_shells()
    if shells.ok:
        chunk: ChatCompletionChunk = shells._make(id_, model, created, delta, finish)
        return chunk
    return build(chunk_type(), _raw(id_, model, created, delta, finish))


def from_llama(raw: dict[str, Any], model: str) -> ChatCompletionChunk:
    """llama-cpp-python's chat stream chunk as openai's, ``model`` as its model name."""
    raw["model"] = model
    shells = _shells or _get_shells()
    if shells.ok and _plain(raw):
        c = raw["choices"][0]
        return chat_chunk(raw["id"], model, raw["created"], c["delta"], c["finish_reason"])
    return build(chunk_type(), raw)


def _plain(raw: dict[str, Any]) -> bool:
    """The shape ``chat_chunk`` builds exactly (see ``_one_choice``), with a delta of an
    assistant role and/or str content."""
    c = _one_choice(raw, "chat.completion.chunk", _CHOICE_KEYS, _FINISH)
    if c is None or type(c["delta"]) is not dict:
        return False
    for key, value in c["delta"].items():
        if key == "content":
            if type(value) is not str:
                return False
        elif key != "role" or value != "assistant":
            return False
    return True


def _one_choice(raw: dict[str, Any], obj: str, choice_keys: frozenset[str],
                finishes: frozenset[str]) -> dict[str, Any] | None:
    """The one choice of a chunk the direct build makes exactly, or None: the same keys as
    it writes (so the same fields set), values validation keeps as they are (str id, int
    created, index 0, no logprobs, no or a known finish reason)."""
    if raw.keys() != _CHUNK_KEYS or raw["object"] != obj:
        return None
    if type(raw["id"]) is not str or type(raw["created"]) is not int:
        return None
    choices = raw["choices"]
    if type(choices) is not list or len(choices) != 1:
        return None
    c = choices[0]
    if type(c) is not dict or c.keys() != choice_keys or type(c["index"]) is not int \
            or c["index"] != 0 or c["logprobs"] is not None:
        return None
    finish = c["finish_reason"]
    if finish is not None and finish not in finishes:
        return None
    return c


def text_from_llama(raw: dict[str, Any], model: str) -> Any:
    """llama-cpp-python's text stream chunk as openai's ``Completion``, ``model`` as its
    model name."""
    raw["model"] = model
    shells = _text_shells or _get_text_shells()
    if shells.ok and _plain_text(raw):
        c = raw["choices"][0]
        return shells._make(raw["id"], model, raw["created"], c["text"], c["finish_reason"])
    from openai.types import Completion

    return build(Completion, raw)


def _plain_text(raw: dict[str, Any]) -> bool:
    """The text chunk ``_TextShells`` builds exactly (see ``_one_choice``), with str text."""
    c = _one_choice(raw, "text_completion", _TEXT_CHOICE_KEYS, _TEXT_FINISH)
    return c is not None and type(c["text"]) is str
