"""OpenAI request parameters → ``llama_cpp.Llama.create_chat_completion`` keyword arguments.

Owns the mapping and its refusals, nothing else (no loading, no decoding, no llama_cpp
import). Passed on: ``temperature``, ``top_p``, ``stop``, ``seed``, ``presence_penalty``,
``frequency_penalty``, ``max_tokens`` / ``max_completion_tokens`` (the latter wins),
``response_format`` (``json_object``, and ``json_schema`` as a grammar-constrained
``json_object``), llama.cpp's own ``top_k``, ``min_p``, ``typical_p``, ``repeat_penalty``,
``mirostat_mode`` / ``_tau`` / ``_eta`` and ``grammar`` (GBNF text, as llama.cpp's server
takes it) from ``extra_body`` or a model's ``defaults``, and for text completions
(``create_completion``) ``echo``. ``extra_body`` is read as an HTTP server reads it, part
of the body: an OpenAI parameter there counts as one (``max_tokens`` caps, ``n=2`` is
refused), over the same key given as an argument, as openai's client merges it. Empty
stop strings are dropped (``_stops``); a seed becomes llama.cpp's 32-bit seed without
landing on its "pick a random seed" value (``_seed``).
Requests this model cannot honour without changing their meaning — ``n`` > 1, ``tools`` /
``functions`` (unless ``tool_choice="none"``), ``logprobs``, ``logit_bias`` (token ids of
another vocabulary), ``best_of`` > 1, audio output (``audio``, ``modalities`` other than
text), ``web_search_options``, ``suffix`` (llama-cpp-python 0.3.36 puts token 0 where the
infill tokens belong), legacy ``logprobs`` (0 included), a ``tool_choice`` that requires a
tool with no tools given — raise ``UnsupportedRequest`` (neither fatal nor retryable, and
no breaker hears of it): the request is fine, another candidate may serve it. Parameters that do not
change the text (``user``, ``metadata``, ...) and unknown ones are ignored with a debug
log. ``stream_options`` is not llama's: the providers' streams honour its ``include_usage``
(``include_usage``) with a last chunk that carries the usage, as OpenAI's do.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

from ... import _constants as C
from ..._exceptions import UnsupportedRequest

if TYPE_CHECKING:
    from .._base import ChatRequest
    from .gate import ModelSlot

__all__ = ["include_usage", "llama_kwargs"]

log = logging.getLogger("routekit.providers.llama_cpp")

_PASSED = C.LLAMA_OPENAI_SAMPLING
# llama.cpp's own sampling knobs: from extra_body (as HTTP requests carry them), or from a
# model's ``defaults`` (which arrive among the request's params).
_EXTRA_BODY_PASSED = C.LLAMA_OWN_SAMPLING
# Text completions only (create_completion takes it; chat has no such argument).
_TEXT_PASSED = frozenset({"echo"})
# Accepted and dropped: they do not change the generated text.
_IGNORED = frozenset(
    {
        "stream", "stream_options", "user", "metadata", "store", "service_tier",
        "parallel_tool_calls", "reasoning_effort", "prediction",
        "safety_identifier", "prompt_cache_key", "verbosity", "timeout", "extra_headers",
    }
)


def llama_kwargs(request: ChatRequest, slot: ModelSlot) -> dict[str, Any]:
    """OpenAI ``chat.completions.create`` arguments → ``create_chat_completion`` kwargs."""
    out: dict[str, Any] = {}
    unsupported: list[str] = []
    tools = False
    tool_choice: Any = None
    text = request.prompt is not None
    params: Mapping[str, Any] = request.params
    if request.extra_body:
        params = {**params, **request.extra_body}
    for key, value in params.items():
        if value is None:
            continue
        if key == "stop":
            stops = _stops(value)
            if stops:
                out["stop"] = stops
        elif key == "seed":
            out["seed"] = _seed(value)
        elif key == "grammar":
            out["grammar"] = _grammar(value, slot)
        elif key in _PASSED or key in _EXTRA_BODY_PASSED or (key in _TEXT_PASSED and text):
            out[key] = value
        elif key == "suffix" and text:
            unsupported.append("suffix (llama-cpp-python 0.3.36 has no working infill: it "
                               "puts token 0 where the model's infill tokens belong)")
        elif key == "best_of":
            if value != 1:
                unsupported.append(f"best_of={value} (one candidate per request)")
        elif key == "max_completion_tokens":
            out["max_tokens"] = value
        elif key == "max_tokens":
            out.setdefault("max_tokens", value)
        elif key == "n":
            if value != 1:
                unsupported.append(f"n={value} (one choice per request)")
        elif key == "response_format":
            fmt = _response_format(value)
            if fmt is False:
                unsupported.append(f"response_format {value!r}")
            elif fmt is not None:
                out["response_format"] = fmt
        elif key in ("tools", "functions"):
            tools = tools or bool(value)
        elif key in ("tool_choice", "function_call"):
            tool_choice = value
        elif key in ("logprobs", "top_logprobs"):
            # A text completion's logprobs=0 still asks for the sampled tokens' logprobs.
            if value or (text and key == "logprobs" and value is not False):
                unsupported.append(f"{key} (the model is loaded without logits_all)")
        elif key == "logit_bias":
            if value:
                unsupported.append("logit_bias (token ids belong to another vocabulary)")
        elif key == "modalities":
            modes = list(value) if isinstance(value, (list, tuple)) else [value]
            if any(m != "text" for m in modes):
                unsupported.append(f"modalities {modes!r} (text only)")
        elif key == "audio":
            unsupported.append("audio output (text only)")
        elif key == "web_search_options":
            unsupported.append("web_search_options (no web search in-process)")
        elif key in _IGNORED:
            log.debug("ignoring parameter %r for in-process model %r", key, slot.name)
        else:
            log.debug("ignoring unknown parameter %r for in-process model %r", key, slot.name)
    if tools and tool_choice != "none":
        unsupported.append("tools / function calling")
    elif not tools and tool_choice not in (None, "none", "auto"):
        unsupported.append(f"tool_choice {tool_choice!r} without tools (nothing to call)")
    if unsupported:
        # Not a health signal: the model is fine, this request asks what it cannot do.
        raise UnsupportedRequest(
            f"in-process model {slot.name!r} does not support {', '.join(unsupported)}",
            provider=slot.provider, model=slot.name,
        )
    return out


def include_usage(request: ChatRequest) -> bool:
    """Did the caller ask, with ``stream_options``, for a last chunk carrying the usage?"""
    options = request.params.get("stream_options")
    if options is None:
        return False
    flag = (options.get("include_usage") if isinstance(options, Mapping)
            else getattr(options, "include_usage", None))
    return bool(flag)


# llama.cpp's LLAMA_DEFAULT_SEED: a sampler given it picks a random seed.
_RANDOM_SEED = 0xFFFFFFFF


def _seed(value: Any) -> int:
    """An OpenAI seed (any int: -1 is a valid one) as llama.cpp's 32-bit seed. Seeds that
    fit are kept as they are; others are folded, so -1 and 2**32 + 7 are seeds of their own
    rather than "random" and 7; the one value llama.cpp reads as "random" moves by one."""
    seed = int(value)
    if not 0 <= seed < 2**32:
        x = seed & 0xFFFFFFFFFFFFFFFF
        seed = (x ^ (x >> 32)) & 0xFFFFFFFF
    return seed - 1 if seed == _RANDOM_SEED else seed


def _grammar(value: Any, slot: ModelSlot) -> Any:
    """A GBNF grammar (text, as llama.cpp's server takes it) as llama-cpp-python's
    ``LlamaGrammar``; refused with the parser's reason when it does not parse."""
    if not isinstance(value, str):
        return value  # already a LlamaGrammar (a caller in-process)
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_string(value, verbose=False)
    except Exception as exc:
        raise UnsupportedRequest(
            f"in-process model {slot.name!r}: grammar does not parse: {exc}",
            provider=slot.provider, model=slot.name) from None


def _stops(value: Any) -> list[str]:
    """The stop sequences, without empty strings: llama-cpp-python ends a completion before
    its first token on one (an empty string is found in any text), the native loop never
    matches one; dropped, both kinds give the same answer, the one no stop gives."""
    stops = [value] if isinstance(value, str) else list(value)
    return [s for s in stops if s]


def _response_format(value: Any) -> dict[str, Any] | None | bool:
    """None: nothing to pass; False: unsupported; else llama's own response_format."""
    kind = value.get("type") if isinstance(value, Mapping) else getattr(value, "type", None)
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        spec = value.get("json_schema") if isinstance(value, Mapping) else None
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        # llama-cpp-python constrains json_object output with a grammar built from "schema".
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    return False
