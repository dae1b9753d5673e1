"""What a config value may be, beyond its type: the bounds that keep every figure finite,
the shapes of API keys (refused where a name belongs, never echoed), base URLs, names.

Shared by the schema (``model``), the checks and ``routekit import litellm``, which must
write only what the loader accepts. Plain functions over plain values; imports nothing of
routekit.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .. import _constants as C
from .._secrets import redact

__all__ = [
    "MAX_COUNT",
    "MAX_HOURS",
    "MAX_PRICE",
    "MAX_SECONDS",
    "MAX_TOKENS",
    "check_base_url",
    "default_problem",
    "default_value_ok",
    "finite_number",
    "has_control",
    "looks_like_secret",
    "shown_text",
    "whole_number",
    "without_userinfo",
]

# Upper bounds that keep every figure finite (``simulate`` sums costs and delays over a
# billion requests; the C++ breakers take 32-bit counts) and far past any real setting.
MAX_SECONDS = 365 * 86400.0  # a year: any duration, timeout, window or backoff
MAX_HOURS = 1e9  # mtbf_hours / mttr_hours (disk MTBF specs reach ~2.5 million hours)
MAX_PRICE = 1000.0  # US dollars per 1,000 tokens
MAX_COUNT = 1_000_000  # breaker counts, probes, concurrency and queue slots
MAX_TOKENS = 1_000_000_000  # context windows


# Shapes of API keys, for refusing one written where a name belongs (``api_key_env``) and for
# never echoing one in an error. Prefixes: OpenAI/Anthropic/DeepSeek (sk-), Stripe-style
# (sk_, pk_, rk_), Groq (gsk_), Hugging Face (hf_), xAI (xai-), Google (AIza), GitHub
# (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_), Slack (xox?-), GitLab (glpat-), Replicate
# (r8_), Perplexity (pplx-), NVIDIA (nvapi-), AWS access key ids (AKIA).
_KEY_PREFIXES = ("sk-", "sk_", "gsk_", "hf_", "xai-", "pk_", "rk_", "AIza", "ghp_", "gho_",
                 "ghu_", "ghs_", "ghr_", "github_pat_", "xoxb-", "xoxp-", "xoxa-", "glpat-",
                 "r8_", "pplx-", "nvapi-", "AKIA")
_TOKEN_RUN = re.compile(r"[A-Za-z0-9]{20,}")


def shown_text(value: str) -> str:
    """``value`` as an error message may quote it: never a key-shaped one, never 4 kB."""
    if looks_like_secret(value) or redact(value) != value:
        return "a string that looks like an API key (not shown)"
    return repr(value if len(value) <= 40 else value[:37] + "...")


def looks_like_secret(text: str) -> bool:
    """Whether ``text`` looks like an API key rather than a name: a known key prefix followed
    by a long tail, or a long run of letters and digits that mixes them the way random tokens
    do. ``OPENAI_API_KEY``, ``my_key``, ``HOME`` and model names like ``llama3.1:8b`` do not."""
    for prefix in _KEY_PREFIXES:
        if text.startswith(prefix) and len(text) - len(prefix) >= 16:
            return True
    for run in _TOKEN_RUN.findall(text):
        digits = sum(ch.isdigit() for ch in run)
        lower = any(ch.islower() for ch in run)
        upper = any(ch.isupper() for ch in run)
        if digits >= 4 and lower and (len(run) >= 24 or upper):
            return True
        if len(run) >= 32 and lower and upper:
            return True
    return False


def check_base_url(v: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL, or a ValueError saying what is wrong. The
    messages never repeat the value: a URL may carry a password."""
    if not v.strip():
        raise ValueError("must not be empty; omit base_url to use the kind's default URL")
    if v != v.strip() or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in v):
        raise ValueError("must be a URL like http://127.0.0.1:11434/v1 (it contains spaces "
                         "or control characters)")
    try:
        parts = urlsplit(v)
        port = parts.port
    except ValueError as exc:
        why = "its port is not a number from 0 to 65535" if "port" in str(exc).lower() else (
            "its host is not a valid IPv6 address (write it as [::1])"
            if "ipv6" in str(exc).lower() else "it cannot be parsed")
        raise ValueError(f"is not a valid URL: {why}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must start with http:// or https:// (like http://127.0.0.1:11434/v1)")
    if "@" in parts.netloc:
        raise ValueError("must not contain credentials (user:password@): put the key in an "
                         "environment variable and name it with 'api_key_env'")
    if not parts.hostname:
        raise ValueError("has no host (like http://127.0.0.1:11434/v1)")
    if port == 0:
        raise ValueError("is not a valid URL: its port is not a number from 1 to 65535")
    if parts.fragment or parts.query:
        raise ValueError("must not have a query (?...) or fragment (#...): give the API's "
                         "base path, like https://api.example.com/v1")
    return v


def has_control(name: str) -> bool:
    """Control characters, line and paragraph separators: a name with one would break the
    log lines, routes and metric labels it appears in."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in name)


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is an int or float (not a bool, not text) and finite."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int past a float's range
            return None
        if math.isfinite(number):
            return number
    return None


def whole_number(value: Any) -> int | None:
    """``value`` when it is an int (not a bool)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def default_value_ok(value: Any) -> bool:
    """Whether a model's ``defaults`` can hold ``value``: a finite number, text, true/false or
    a list of text (``ModelConfig.defaults``)."""
    if isinstance(value, (bool, str)):
        return True
    if isinstance(value, (int, float)):
        return finite_number(value) is not None
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def default_problem(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` as the default of request parameter ``name`` (the
    limits the OpenAI API sets, which requests are held to), or None."""
    limits = C.PARAM_LIMITS.get(name)
    if limits is not None:
        return C.limit_problem(value, limits)
    if name == "seed" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"must be a whole number, got {value!r}"
    if name == "stop" and not (isinstance(value, str) or (
            isinstance(value, list) and all(isinstance(v, str) for v in value))):
        return f"must be text or a list of text, got {value!r}"
    return None


def without_userinfo(url: str) -> tuple[str, bool]:
    """``url`` without ``user:password@`` (a key must never be copied), and whether it had
    one. Raises ValueError where ``urlsplit`` does."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, False
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=host)), True
