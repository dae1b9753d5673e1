"""From ``create()``'s arguments to a ``RequestState``: what was given, and is it sane.

Owns the argument checks that do not depend on any candidate — the OpenAI API's own limits
(``temperature`` 0–2, ``max_tokens`` ≥ 1, ...), the types of ``model``, ``messages``,
``timeout`` and the ``extra_*`` mappings — so a request every candidate would reject fails
fast with a ``BadRequest`` naming the argument, instead of walking the whole chain. Also
what "not given" means: ``None``, or openai's own ``NOT_GIVEN`` / ``omit`` sentinels, which
libraries built on the openai client pass for every unset option.

``timeout=`` differs from the openai client's on purpose: a number is the budget for the
whole route (every candidate and retry), not for one HTTP request. An ``httpx.Timeout`` (as
the openai client takes) sets the connect and read timeouts of each HTTP attempt instead,
and the budget stays the config's (``routing.deadline``, else ``routing.timeout.total``).
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, Union

from .. import _constants as C
from .._exceptions import BadRequest
from ..providers._base import RequestParams
from .request import RequestState

if TYPE_CHECKING:
    from .router_state import RouterState

__all__ = ["PARAM_NAMES", "TEXT_PARAM_NAMES", "Messages", "Stop", "Timeout", "is_omitted",
           "start", "start_text"]

# The request parameters of create(), in signature order: create() passes their values as
# one tuple (most are None), cheaper to build than a 34-entry dict.
PARAM_NAMES: tuple[str, ...] = (
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "moderation",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "prompt_cache_options",
    "prompt_cache_retention",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
)

# The request parameters of the legacy ``completions.create`` (text completion), in its
# signature order.
TEXT_PARAM_NAMES: tuple[str, ...] = (
    "best_of",
    "echo",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "max_tokens",
    "n",
    "presence_penalty",
    "seed",
    "stop",
    "stream_options",
    "suffix",
    "temperature",
    "top_p",
    "user",
)

Messages = Iterable[Mapping[str, Any]]
Stop = Union[str, Sequence[str], None]
Timeout = Any  # float | httpx.Timeout | openai.NOT_GIVEN | None

# The OpenAI API's own limits on parameters: (low, high, whole number?)
_LIMITS: dict[str, tuple[float, float, bool]] = C.PARAM_LIMITS
# Text completions: ``logprobs`` is a count there (0-5), and ``best_of`` at least 1.
_TEXT_LIMITS: dict[str, tuple[float, float, bool]] = {
    **_LIMITS, "logprobs": (0, 5, True), "best_of": (1, 20, True),
}

_sentinels: tuple[type, ...] | None = None


def _sentinel_types() -> tuple[type, ...]:
    """openai's "not given" classes (``NotGiven``, and ``Omit`` in newer releases). Without
    openai imported, no such value can exist, so nothing is looked up."""
    global _sentinels
    if _sentinels is None:
        types_mod = sys.modules.get("openai._types")
        if types_mod is None:
            return ()
        _sentinels = tuple(t for t in (getattr(types_mod, "NotGiven", None),
                                       getattr(types_mod, "Omit", None)) if isinstance(t, type))
    return _sentinels


def is_omitted(value: object) -> bool:
    """``None``, ``openai.NOT_GIVEN`` or ``openai.omit``: the caller did not set it."""
    return value is None or (bool(_sentinel_types()) and isinstance(value, _sentinel_types()))


def _bad(message: str) -> BadRequest:
    return BadRequest(message, status_code=400)


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _mapping(name: str, value: Any) -> dict[str, Any] | None:
    if is_omitted(value):
        return None
    if not isinstance(value, Mapping):
        raise _bad(f"{name} must be a mapping (a dict), got {_describe(value)}")
    return value if type(value) is dict else dict(value)


def _timeout(router: RouterState, value: Any) -> tuple[float, tuple[float, float] | None]:
    """(the route's budget in seconds, per-attempt (connect, read) phases or None)."""
    routing = router.config.routing
    default = routing.deadline if routing.deadline is not None else routing.timeout.total
    if is_omitted(value):
        return default, None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not value > 0 or not math.isfinite(value):
            raise _bad(f"timeout must be a positive number of seconds, got {value!r}")
        return float(value), None
    # An httpx.Timeout (httpx or httpx2, whichever the caller has): duck-typed, so neither
    # library is imported here.
    connect = getattr(value, "connect", _MISSING)
    read = getattr(value, "read", _MISSING)
    if connect is not _MISSING and read is not _MISSING and hasattr(value, "as_dict"):
        t = routing.timeout
        c = float(connect) if isinstance(connect, (int, float)) else t.connect
        r = float(read) if isinstance(read, (int, float)) else t.read
        if not (c > 0 and r > 0):
            raise _bad(f"timeout's connect and read must be positive, got {value!r}")
        return default, (c, r)
    raise _bad("timeout must be a number of seconds (the budget for the whole route) or an "
               f"httpx.Timeout, got {_describe(value)}")


_MISSING = object()


def _message_dict(message: Any) -> dict[str, Any]:
    """A message that is not a dict: a pydantic model (a ``ChatCompletionMessage`` appended
    from an answer) is sent as openai's client sends it, with only the fields it was given
    (no ``refusal: null``, ``audio: null`` a strict server may refuse); other mappings as
    they are."""
    dump = getattr(message, "model_dump", None)
    if dump is not None:
        out: dict[str, Any] = dump(mode="json", exclude_unset=True, warnings=False)
        return out
    return dict(message)


def _messages(messages: Any) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise _bad("messages must be a list of mappings with 'role' and 'content', got "
                   f"{_describe(messages)}")
    try:
        msgs = [m if type(m) is dict else _message_dict(m) for m in messages]
    except (TypeError, ValueError) as exc:
        raise _bad(f"messages must be a list of mappings with 'role' and 'content': {exc}"
                   ) from None
    if not msgs:
        raise _bad("messages must not be empty")
    for i, m in enumerate(msgs):
        if not isinstance(m.get("role"), str):
            raise _bad(f"messages[{i}] has no 'role'")
    return msgs


def _params(values: tuple[Any, ...], names: tuple[str, ...] = PARAM_NAMES,
            all_limits: dict[str, tuple[float, float, bool]] = _LIMITS) -> RequestParams:
    """The parameters the caller set (in ``names`` order), checked against the OpenAI
    API's limits."""
    sentinels = _sentinels if _sentinels is not None else _sentinel_types()
    out: Any = {}
    # A plain loop: most of the 34 are None. Filtering them with C iterators (map, compress)
    # was no faster warm and cost ~20 µs more with cold caches, as every request after an
    # in-process decode or an idle spell has (2-core dev VM, median of 40 after 20 ms idle:
    # 53 vs 74 µs).
    for name, v in zip(names, values):
        if v is None or (sentinels and isinstance(v, sentinels)):
            continue
        limits = all_limits.get(name)
        if limits is not None:
            # The test inline (no call on the hot path), the words C.limit_problem's.
            lo, hi, whole = limits
            if isinstance(v, bool) or not isinstance(v, int if whole else (int, float)) \
                    or not lo <= v <= hi:
                raise _bad(f"{name} {C.limit_problem(v, limits)}")
        out[name] = v
    if isinstance(out.get("response_format"), type):
        # openai's own check, word for word in spirit: a class is parse()'s argument, and
        # sent as it is it would fail on every candidate.
        raise TypeError("You tried to pass a `BaseModel` class to `chat.completions.create()`; "
                        "You must use `chat.completions.parse()` instead")
    params: RequestParams = out
    return params


def start(router: RouterState, model: Any, messages: Any, timeout: Any, extra_body: Any,
          extra_headers: Any, extra_query: Any, values: tuple[Any, ...]) -> RequestState:
    """Check a ``create()`` call and open its ``RequestState`` (the clock starts here).
    ``values``: the request parameters in ``PARAM_NAMES`` order."""
    if router.closed:
        router.check_open()
    if type(model) is not str or not model:
        raise _bad(f"model must be the name of a model (a non-empty string), got "
                   f"{_describe(model)}")
    if timeout is None:
        budget, phases = router.default_budget, None
    else:
        budget, phases = _timeout(router, timeout)
    msgs = messages if type(messages) is list and _plain_messages(messages) \
        else _messages(messages)
    return RequestState(
        router, model, msgs, _params(values), budget=budget, phases=phases,
        extra_body=None if extra_body is None else _mapping("extra_body", extra_body),
        extra_headers=None if extra_headers is None else _mapping("extra_headers",
                                                                  extra_headers),
        extra_query=None if extra_query is None else _mapping("extra_query", extra_query),
    )


def start_text(router: RouterState, model: Any, prompt: Any, timeout: Any, extra_body: Any,
               extra_headers: Any, extra_query: Any, values: tuple[Any, ...]) -> RequestState:
    """``start`` for a legacy text completion: ``prompt`` must be one string (or a list of
    exactly one); ``values`` are in ``TEXT_PARAM_NAMES`` order."""
    if isinstance(prompt, (list, tuple)) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("prompt must be a string (routekit routes one prompt per request; token "
                   f"arrays and batches are not supported), got {_describe(prompt)}")
    req = start(router, model, [{"role": "user", "content": prompt}], timeout, extra_body,
                extra_headers, extra_query, ())
    req.params = _params(values, TEXT_PARAM_NAMES, _TEXT_LIMITS)
    req.prompt = prompt
    return req


def _plain_messages(messages: list[Any]) -> bool:
    """The common case, checked cheaply: a non-empty list of dicts that each name a role."""
    if not messages:
        return False
    for m in messages:
        if type(m) is not dict or type(m.get("role")) is not str:
            return False
    return True
