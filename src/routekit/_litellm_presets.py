"""LiteLLM's terms in routekit's, for ``routekit import litellm``: what each LiteLLM provider
prefix is (a provider kind, the endpoint LiteLLM would use, and the environment variable it
reads the key from), what ``os.environ/NAME``, a bare ``api_base`` and a setting's number
must be to map, how long LiteLLM lets a request run (``worst_case``, ``first_byte_cut``:
routekit bounds it with one budget), and writing the result: one-line YAML values that
routekit's loader reads back as written, and comment lines that no value can end or leak a
key into. Only prefixes whose endpoint speaks the OpenAI chat API are here; the importer
says why every other one is not imported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

import yaml

from ._config.values import MAX_SECONDS, finite_number, looks_like_secret, whole_number
from ._config.yaml_lines import YamlProblem, parse_yaml
from ._secrets import redact

if TYPE_CHECKING:
    from ._config.model import Config

__all__ = ["LOOPBACK", "PRESETS", "Preset", "clean", "count_problem", "entry", "env_name",
           "first_byte_cut", "flow", "seconds_problem", "shown", "with_v1", "worst_case"]


@dataclass(frozen=True)
class Preset:
    kind: str
    base_url: str | None  # None: LiteLLM's default for the kind (OpenAI's own API)
    key_env: str | None  # the variable LiteLLM reads when the config names no key
    note: str = ""


_LOCAL = "http://127.0.0.1"
# LiteLLM provider prefixes whose endpoint speaks the OpenAI chat API.
PRESETS: dict[str, Preset] = {
    "openai": Preset("openai", None, "OPENAI_API_KEY"),
    "ollama": Preset("ollama", f"{_LOCAL}:11434/v1", None),
    "ollama_chat": Preset("ollama", f"{_LOCAL}:11434/v1", None),
    "hosted_vllm": Preset("vllm", f"{_LOCAL}:8000/v1", None),
    "vllm": Preset("vllm", f"{_LOCAL}:8000/v1", None,
                   "LiteLLM's vllm/ runs vLLM inside the proxy; routekit talks to a vLLM "
                   "server (vllm serve) at this URL"),
    "llamafile": Preset("llama_cpp_server", f"{_LOCAL}:8080/v1", None),
    "lm_studio": Preset("llama_cpp_server", f"{_LOCAL}:1234/v1", None),
    "groq": Preset("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "together_ai": Preset("openai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "deepseek": Preset("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "mistral": Preset("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "openrouter": Preset("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "fireworks_ai": Preset("openai", "https://api.fireworks.ai/inference/v1",
                           "FIREWORKS_AI_API_KEY"),
    "xai": Preset("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    "perplexity": Preset("openai", "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "deepinfra": Preset("openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
}
LOOPBACK = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "host.docker.internal"}
_ENV = "os.environ/"


def env_name(value: Any) -> str | None:
    """NAME of LiteLLM's ``os.environ/NAME``, when it is a variable's name (not a key)."""
    if isinstance(value, str) and value.startswith(_ENV):
        name = value[len(_ENV):].strip()
        if name and all(ch.isalnum() or ch == "_" for ch in name) and not looks_like_secret(name):
            return name
    return None


def with_v1(url: str) -> tuple[str, bool]:
    """LiteLLM's bare ``api_base`` (no path) as the OpenAI-compatible ``.../v1``, and
    whether ``/v1`` was added."""
    parts = urlsplit(url)
    if parts.path.strip("/") == "":
        return url.rstrip("/") + "/v1", True
    return url.rstrip("/"), False


def seconds_problem(raw: Any) -> str | None:
    """Why ``raw`` is not seconds routekit takes (None: it is)."""
    value = finite_number(raw)
    return None if value is not None and 0 < value <= MAX_SECONDS else (
        f"expected seconds, more than 0 and at most {MAX_SECONDS:.0f}")


def count_problem(raw: Any, low: int, high: int) -> str | None:
    """Why ``raw`` is not a whole number from ``low`` to ``high`` (None: it is)."""
    value = whole_number(raw)
    return None if value is not None and low <= value <= high else (
        f"expected a whole number from {low:,} to {high:,}")


# -- writing ---------------------------------------------------------------------------

_WORD = re.compile(r"[^\s'\"`,;:()\[\]{}<>]+")


def clean(text: object) -> str:
    """One comment-safe line: a newline in a user's value must not end the comment, and a
    key written where a name or number belongs is masked (whatever the field)."""
    line = re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", " ", redact(str(text)))
    return _WORD.sub(lambda m: "***" if looks_like_secret(m.group()) else m.group(), line)


def shown(value: Any) -> str:
    """A user's value for a comment: short, on one line, secrets masked."""
    try:
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else flow(value)
    except (yaml.YAMLError, TypeError, ValueError):
        text = type(value).__name__
    text = clean(text)
    return text if len(text) <= 60 else text[:57] + "..."


def flow(value: Any) -> str:
    """A YAML flow scalar or collection on one line, quoted where YAML needs it."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{flow(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    if isinstance(value, str) and re.search(r"[\x00-\x1f\x7f\u2028\u2029\x85]", value):
        return json.dumps(value)  # a JSON string is a double-quoted YAML scalar, one line
    text = yaml.safe_dump([value], default_flow_style=True, width=10**9,
                          allow_unicode=True).strip()[1:-1]
    if isinstance(value, str) and text[:1] not in ("'", '"') and not _reads_back(text, value):
        return "'" + value.replace("'", "''") + "'"  # single-quoted: always text
    return text


@lru_cache(maxsize=4096)
def _reads_back(plain: str, value: str) -> bool:
    """Whether routekit's loader reads the plain scalar ``plain``, as a key and as a flow
    item, back as the text ``value``. PyYAML quotes what YAML 1.1 reads otherwise, but the
    loader also reads ``1e3`` as a number and refuses ``08``, ``0:30`` and the like."""
    try:
        doc = parse_yaml(f"{plain}: [{plain}]\n")
    except YamlProblem:
        return False
    return not doc.ambiguous and doc.data == {value: [value]}  # only a str equals a str


def entry(key: str, value: Any) -> str:
    """One ``  key: value`` line of a section; a key past YAML's 1024-character limit for
    simple keys is written as an explicit ``? key`` entry."""
    flow_key = flow(key)
    if len(flow_key) > 1000:
        return f"  ? {flow_key}\n  : {flow(value)}"
    return f"  {flow_key}: {flow(value)}"


# -- timing ----------------------------------------------------------------------------

# One attempt of a plan, every attempt running to its whole timeout: the retry wait before
# it, its timeout.total, and how long it may wait for its first byte when a fallback follows
# it (None on the last candidate, which routekit never caps).
_Step = tuple[float, float, float | None]


def _steps(config: Config) -> dict[str, list[_Step]]:
    """Each entry model's plan as attempts, with routekit's retries: LiteLLM gives every
    attempt its own timeout, retries and fallbacks included, and no limit for the request."""
    from ._pipeline.entries import first_byte_of, overlay
    from ._plan import CompiledGraph

    r = config.routing
    # A retry waits at most backoff_max (or a Retry-After up to its cap), plus jitter.
    pause = max(r.retry.backoff_max, r.retry.retry_after_cap) + r.retry.jitter
    out: dict[str, list[_Step]] = {}
    for entry, plan in CompiledGraph.from_config(config).plans(max_depth=r.max_depth).items():
        steps: list[_Step] = []
        for i, name in enumerate(plan):
            provider = config.providers[config.models[name].provider]
            timeout = overlay(r.timeout, provider.timeout)
            last = i == len(plan) - 1
            first_byte = first_byte_of(timeout, provider.kind)
            need = None if last else (timeout.total if first_byte is None
                                      else min(first_byte, timeout.total))
            tries = r.retry.last_candidate_attempts if last else r.retry.max_attempts
            steps += [(pause if k else 0.0, timeout.total, need) for k in range(tries)]
        out[entry] = steps
    return out


def worst_case(config: Config) -> tuple[float, str]:
    """The longest a request may take when every attempt times out (seconds), and the entry
    model whose plan takes that long."""
    totals = {entry: sum(p + t for p, t, _ in steps) for entry, steps in _steps(config).items()}
    entry = max(totals, key=lambda e: totals[e])
    return totals[entry], entry


def first_byte_cut(config: Config, deadline: float) -> bool:
    """Whether ``routing.first_byte_share`` of what is left of ``deadline`` could stop an
    attempt with fallbacks after it before its timeout (or first-byte limit) runs out, with
    every attempt before it timing out."""
    share = config.routing.first_byte_share
    for steps in _steps(config).values():
        spent = 0.0
        for pause, total, need in steps:
            spent += pause
            if need is not None and share * (deadline - spent) < need:
                return True
            spent += total
    return False
