"""Checks that need the whole config: names that must exist, fields that only one kind of
provider or model uses, and the breakers as they run (a provider's block over routing's).

``cross_check`` works on the raw data, so it still reports when pydantic found other
problems in the same config; ``check_breakers`` reads the validated ``Config``. Issues go to
the loader's collector (``Issues``), which formats paths and finds YAML lines. Imports
nothing heavy: llama-cpp-python's chat formats are read from its source, not imported.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Hashable, Protocol, Sequence

from pydantic import BaseModel

from .. import _constants as C
from .model import BreakerConfig, Config
from .values import default_problem, default_value_ok, has_control, shown_text
from .yaml_lines import YamlDocument

__all__ = ["Issues", "check_breakers", "chat_formats", "cross_check", "get", "kind_of", "section"]

# ModelConfig fields that only an in-process (llama.cpp) model can use.
_IN_PROCESS_FIELDS = ("path", "package", "n_ctx", "n_gpu_layers", "n_threads", "chat_format",
                      "queue_size", "warm")
# ProviderConfig fields that only an HTTP provider can use (and health.path, checked apart).
_HTTP_PROVIDER_FIELDS = ("base_url", "api_key_env", "stream_upstream")
# Request arguments routekit sets itself on every call (providers/http/call_args.py
# _RESERVED): a model's ``defaults`` setting one would be dropped, so it is refused.
_RESERVED_DEFAULTS = frozenset({"model", "messages", "stream", "timeout", "extra_body",
                                "extra_headers", "extra_query"})


class Issues(Protocol):
    """What the checks need of the loader's issue collector."""

    doc: YamlDocument | None

    def add(self, raw: Sequence[Hashable], message: str, *, key: bool = False,
            line: int | None = None, path: str | None = None) -> None: ...

    def unknown(self, what: str, name: str, candidates: Sequence[str]) -> str: ...

    def suggest(self, name: str, candidates: Sequence[str], label: str) -> str | None: ...

    def path_of(self, raw: Sequence[Hashable]) -> str: ...

    def append(self, message: str) -> None: ...


def get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None) if isinstance(obj, BaseModel) else None


def kind_of(provider: Any) -> str | None:
    kind = get(provider, "kind")
    return kind if isinstance(kind, str) else None


def section(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if not isinstance(value, Mapping):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str)}


def cross_check(data: Mapping[str, Any], ctx: Issues) -> None:
    """Names that must exist, and fields that only fit one kind of provider. Works on the raw
    data, so it still reports when pydantic found other problems in the same config."""
    providers = section(data, "providers")
    models = section(data, "models")
    chains = section(data, "fallback_chains")
    provider_names = list(providers)
    model_names = list(models)
    version = data.get("version", 1)
    if isinstance(version, int) and not isinstance(version, bool) and version != 1:
        ctx.add(("version",), f"unsupported version {version}; this routekit reads version 1")
    if not data.get("models") and not data.get("fallback_chains"):
        ctx.append("the config names no models: add 'fallback_chains' (and 'providers' and "
                   "'models')")

    for part, names in (("providers", provider_names), ("models", model_names),
                        ("fallback_chains", list(chains))):
        for name in names:
            if not name.strip():
                ctx.add((part, name), "a name must not be empty", key=True)
            elif has_control(name):
                ctx.add((part, name), "a name must not contain control characters "
                        "(newline, tab, NUL...): names appear in logs, routes and metrics",
                        key=True)

    for name, prov in providers.items():
        kind = kind_of(prov)
        if kind in C.CLOUD_KINDS and get(prov, "api_key_env") is None:
            ctx.add(("providers", name), "kind openai needs 'api_key_env': the name of the "
                    "environment variable that holds the key", key=True)
        if kind in C.IN_PROCESS_KINDS:
            # An in-process provider has no server: these would be accepted and ignored.
            for field in _HTTP_PROVIDER_FIELDS:
                if get(prov, field) is not None:
                    ctx.add(("providers", name, field), f"{field!r} applies only to HTTP "
                            f"providers; provider {name!r} is kind {kind} (runs in this "
                            "process, no server to reach)", key=True)
            timeout = get(prov, "timeout")
            if isinstance(timeout, Mapping):
                for field in ("connect", "read"):
                    if timeout.get(field) is not None:
                        ctx.add(("providers", name, "timeout", field), f"{field!r} applies "
                                f"only to HTTP providers; provider {name!r} is kind {kind} (no "
                                "connection, no reads: first_byte bounds its first token, "
                                "total the answer)", key=True)
            health = get(prov, "health")
            if isinstance(health, Mapping) and health.get("path") is not None:
                ctx.add(("providers", name, "health", "path"), "'path' applies only to HTTP "
                        f"providers; provider {name!r} is kind {kind} (its health is whether "
                        "its model loaded)", key=True)

    for name, model in models.items():
        prov_name = get(model, "provider")
        if not isinstance(prov_name, str):
            continue
        if prov_name not in providers:
            msg = ("a provider name must not be empty" if not prov_name.strip()
                   else ctx.unknown("provider", prov_name, provider_names))
            ctx.add(("models", name, "provider"), msg)
            continue
        kind = kind_of(providers[prov_name])
        defaults = get(model, "defaults")
        reserved: set[str] = set()
        if isinstance(defaults, Mapping):
            for key in defaults:
                if isinstance(key, str) and key in _RESERVED_DEFAULTS:
                    reserved.add(key)
                    ctx.add(("models", name, "defaults", key),
                            f"{key!r} cannot be a default: routekit sets it on every call "
                            f"(reserved: {', '.join(sorted(_RESERVED_DEFAULTS))})", key=True)
                elif isinstance(key, str) and default_value_ok(defaults[key]):
                    # Held to what a request is held to: create(temperature=7) is refused.
                    # (A value no default can be, a mapping say, is pydantic's to name.)
                    problem = default_problem(key, defaults[key])
                    if problem is not None:
                        ctx.add(("models", name, "defaults", key), problem)
        if kind in C.IN_PROCESS_KINDS:
            if get(model, "model_id") is not None:
                ctx.add(("models", name, "model_id"), "'model_id' names a model on a server; "
                        f"provider {prov_name!r} is kind {kind}, whose model is its 'path' or "
                        "'package'", key=True)
            if get(model, "path") is None and get(model, "package") is None:
                ctx.add(("models", name), "an in-process model needs 'path' (a GGUF file) or "
                        f"'package' (e.g. {C.DEFAULT_MODEL_PACKAGE})", key=True)
            chat_format = get(model, "chat_format")
            if isinstance(chat_format, str):
                known = chat_formats()
                # chat_template.<name>: a template the GGUF itself carries.
                if (known and chat_format not in known
                        and not chat_format.startswith("chat_template.")):
                    guess = ctx.suggest(chat_format, sorted(known), "chat_format")
                    ctx.add(("models", name, "chat_format"),
                            f"unknown chat_format {shown_text(chat_format)}"
                            + (f"; did you mean {guess!r}?" if guess else
                               f"; llama-cpp-python knows: {', '.join(sorted(known))}")
                            + " (or omit it to use the GGUF's own template)")
            if isinstance(defaults, Mapping):
                for key in defaults:
                    if (isinstance(key, str) and key not in C.IN_PROCESS_DEFAULT_KEYS
                            and key not in reserved):
                        ctx.add(("models", name, "defaults", key),
                                f"{key!r} has no effect on an in-process model; its defaults "
                                f"may set: {', '.join(sorted(C.IN_PROCESS_DEFAULT_KEYS))}",
                                key=True)
        elif kind in C.HTTP_KINDS:
            for field in _IN_PROCESS_FIELDS:
                if get(model, field) is not None:
                    why = (" (routekit loads only in-process models; a server loads its own)"
                           if field == "warm" else "")
                    ctx.add(("models", name, field), f"{field!r} applies only to in-process models "
                            f"(kind llama_cpp or llama_cpp_native); provider {prov_name!r} is kind "
                            f"{kind}{why}", key=True)

    for name, entry in chains.items():
        if name.strip() and name not in models:
            ctx.add(("fallback_chains", name), ctx.unknown("model", name, model_names), key=True)
        chain = get(entry, "chain")
        if not isinstance(chain, (list, tuple)):
            continue
        first_at: dict[str, int] = {}
        for i, item in enumerate(chain):
            if not isinstance(item, str):
                continue
            raw = ("fallback_chains", name, "chain", i)
            if not item.strip():
                ctx.add(raw, "a model name must not be empty")
            elif item not in models:
                ctx.add(raw, ctx.unknown("model", item, model_names))
            if item in first_at:
                j = first_at[item]
                where = f" (line {ctx.doc.line_of(raw[:-1] + (j,))})" if ctx.doc else ""
                ctx.add(raw, f"model {item!r} appears twice in this chain; first at chain[{j}]{where}")
            else:
                first_at[item] = i

    routing = data.get("routing")
    default = get(routing, "default_model")
    if isinstance(default, str) and default not in models:
        ctx.add(("routing", "default_model"), ctx.unknown("model", default, model_names))



@functools.lru_cache(maxsize=1)
def chat_formats() -> frozenset[str]:
    """The chat formats the installed llama-cpp-python registers, read from its source
    without importing it (importing llama_cpp loads its native library: seconds, and the
    loader must stay light). Empty when it is not installed or its layout is unknown: then
    nothing is checked here and llama-cpp-python reports a bad name when the model loads."""
    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        return frozenset()
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    for folder in spec.submodule_search_locations:
        try:
            text = (Path(folder) / "llama_chat_format.py").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        names = re.findall(r'@register_chat_(?:format|completion_handler)\(\s*"([^"]+)"', text)
        if names:
            return frozenset(names)
    return frozenset()


def check_breakers(config: Config, ctx: Issues) -> None:
    """open_initial <= open_max on the breakers that run: routing.breaker with its defaults,
    and each provider's block laid over it. Reported at a value the user wrote, naming where
    the other one came from."""
    routing = config.routing.breaker
    routing_set = routing.model_fields_set

    def origin(field: str, own: BreakerConfig | None, own_path: tuple[Hashable, ...]) -> str:
        if own is not None and field in own.model_fields_set:
            return ctx.path_of(own_path + (field,))
        if field in routing_set:
            line = ctx.doc.line_of(("routing", "breaker", field)) if ctx.doc else None
            return f"routing.breaker.{field}" + (f" on line {line}" if line else "")
        return "routekit's default"

    def check(b: BreakerConfig, own: BreakerConfig | None, path: tuple[Hashable, ...]) -> None:
        if b.open_max >= b.open_initial:
            return
        written = (own or b).model_fields_set
        if {"open_initial", "open_max"} <= written:
            return  # the block itself is inconsistent: BreakerConfig reported it
        field = "open_initial" if "open_initial" in written else "open_max"
        if field == "open_initial":
            msg = (f"{b.open_initial:g} is more than open_max {b.open_max:g}, which comes "
                   f"from {origin('open_max', own, path)}; set open_max here too")
        else:
            msg = (f"{b.open_max:g} is less than open_initial {b.open_initial:g}, which comes "
                   f"from {origin('open_initial', own, path)}; set open_initial here too")
        ctx.add(path + (field,), msg)

    _check_breaker_fields_used(config, ctx)
    if {"open_initial", "open_max"} & routing_set:  # both defaults are in order
        check(routing, None, ("routing", "breaker"))
    for name, prov in config.providers.items():
        own = prov.breaker
        if own is None or not {"open_initial", "open_max"} & own.model_fields_set:
            continue  # routing's values: checked above
        merged = routing.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})
        check(merged, own, ("providers", name, "breaker"))


# Breaker fields only one mode reads (_policy/breakers.py): ``rate`` reads the window,
# ``consecutive`` the threshold; ``trip_on_refused`` acts on local HTTP kinds alone.
_RATE_FIELDS = ("window", "window_min_calls", "failure_rate")


def _check_breaker_fields_used(config: Config, ctx: Issues) -> None:
    """A breaker field written where no provider's breaker reads it is refused at its line
    (accepted and ignored, it would be a promise the router does not keep): a rate field
    under ``mode: consecutive``, ``failure_threshold`` under ``mode: rate``, and
    ``trip_on_refused`` on cloud or in-process kinds. ``routing.breaker``'s fields count as
    read when any provider that does not set the field itself reads it."""
    routing = config.routing.breaker
    # (provider, field) where it is written ("" for routing) -> who takes it from there
    readers: dict[tuple[str, str], list[tuple[BreakerConfig, bool, bool]]] = {}
    for name, prov in config.providers.items():
        own = prov.breaker
        merged = routing if own is None else routing.model_copy(
            update={k: getattr(own, k) for k in own.model_fields_set})
        for field in (*_RATE_FIELDS, "failure_threshold", "trip_on_refused"):
            here = own is not None and field in own.model_fields_set
            readers.setdefault((name if here else "", field), []).append(
                (merged, prov.is_cloud, prov.in_process))

    def why_unused(field: str, takers: list[tuple[BreakerConfig, bool, bool]]) -> str | None:
        reasons = []
        for merged, cloud, in_process in takers:
            rate = merged.mode == "rate" or (merged.mode == "auto" and cloud)
            if field in _RATE_FIELDS and rate or field == "failure_threshold" and not rate:
                return None
            if field == "trip_on_refused" and not cloud and not in_process:
                return None
            reasons.append("the breaker counts failures in a row (mode consecutive)"
                           if field in _RATE_FIELDS else
                           "the breaker counts a failure rate (mode rate)"
                           if field == "failure_threshold" else
                           "a refused connection to a cloud or in-process kind counts as one "
                           "failure")
        return reasons[0] if len(set(reasons)) == 1 else "no provider's breaker reads it"

    blocks = [("", routing), *((n, p.breaker) for n, p in config.providers.items())]
    for name, block in blocks:
        if block is None:
            continue
        base = ("providers", name, "breaker") if name else ("routing", "breaker")
        for field in sorted(block.model_fields_set & {*_RATE_FIELDS, "failure_threshold",
                                                     "trip_on_refused"}):
            takers = readers.get((name, field), [])
            if not takers:
                continue  # every provider sets it itself (routing's is theirs to override)
            why = why_unused(field, takers)
            if why is not None:
                ctx.add(base + (field,), f"has no effect here: {why}")
