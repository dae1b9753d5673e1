"""Loading a config: file or mapping in, a validated ``Config`` out, or one ``ConfigError``
listing every problem with its field path and YAML line.

This module owns reading files (strict UTF-8, safe YAML via ``_yaml_lines``), turning
pydantic's errors into short messages with ``models["qwen"].price.input_per_1k``-style paths
(never echoing a value that looks like a key), running the whole-config checks
(``checks.py``: names that must exist, kind-specific fields, merged breakers), and inferring
models for legacy chains-only configs. It does not judge the graph: cycles and self-loops load fine and are
reported by ``routekit validate`` (``_analysis.py``); the plan core de-duplicates.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import os
import stat
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Hashable, Literal, NamedTuple, Sequence, Union

from pydantic import BaseModel, ValidationError

from .. import _constants as C
from .checks import check_breakers, cross_check, get, kind_of, section
from .model import BreakerConfig, ChainConfig, Config, HealthConfig, ModelConfig, ProviderKind
from .values import MAX_SECONDS, looks_like_secret, shown_text
from .._exceptions import ConfigError, ConfigIssue
from .._secrets import redact
from .yaml_lines import YamlDocument, YamlProblem, parse_yaml

__all__ = ["legacy_inferences", "load_config", "load_config_text", "read_text_file"]

_KINDS: tuple[str, ...] = typing.get_args(ProviderKind)
_SECTIONS = ("providers", "models", "fallback_chains", "routing")
# Did-you-mean costs O(candidates) per unknown name (~1.4 us each here); past this many
# comparisons in one load we stop offering, so a huge broken config still fails fast.
_SUGGESTION_BUDGET = 500_000
# Larger files are refused rather than read (a config is kilobytes; this is a stray path).
_MAX_FILE_BYTES = C.MAX_CONFIG_FILE_BYTES


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any], *, strict_legacy: bool = False
) -> Config:
    """Load and validate a config from a YAML file path or an already-parsed mapping.

    Raises ``ConfigError`` listing every problem found (path, message, YAML line). A legacy
    config with ``fallback_chains`` only gets a model inferred for each chain key
    (``inferred=True``); ``strict_legacy=True`` turns that off, so every model must be declared.
    """
    if isinstance(source, Mapping):
        return _build(_plain(source), None, None, strict_legacy)
    if isinstance(source, (str, os.PathLike)):
        raw = os.fspath(source)
        name = os.fsdecode(raw)
        if isinstance(source, str) and "\n" in source:
            raise ConfigError(
                [ConfigIssue("", "load_config takes a file path or a mapping; this string looks "
                             "like YAML text (use load_config_text for text)")]
            )
        path = Path(name).expanduser()
        return load_config_text(_read_text(path), source=str(path), strict_legacy=strict_legacy)
    raise TypeError(f"load_config() takes a path or a mapping, not {type(source).__name__}")


def load_config_text(text: str, *, source: str = "<string>", strict_legacy: bool = False) -> Config:
    """Load a config from YAML text (``source`` names it in errors)."""
    try:
        doc = parse_yaml(text)
    except YamlProblem as exc:
        problem = exc.issues
    else:
        return _build(doc.data, doc, source, strict_legacy)
    raise ConfigError(problem, source=source)


def legacy_inferences(config: Config) -> list[str]:
    """One line per model the loader inferred from a chains-only config, for ``validate``."""
    lines = []
    for name, model in config.models.items():
        if model.inferred:
            provider = config.providers[model.provider]
            lines.append(
                f"model {name!r} was not declared: inferred provider {model.provider!r} "
                f"(kind {provider.kind}) from its name"
            )
    return lines


# --- reading -------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    issue = read_text_file(path)
    if isinstance(issue, ConfigIssue):
        raise ConfigError([issue], source=str(path))
    return issue


def _os_problem(path: Path, exc: OSError) -> ConfigIssue:
    if isinstance(exc, FileNotFoundError):
        return ConfigIssue("", f"{path}: no such file")
    if isinstance(exc, PermissionError):
        return ConfigIssue("", f"{path}: permission denied")
    return ConfigIssue("", f"{path}: cannot read ({exc.strerror or exc})")


def read_text_file(path: Path) -> str | ConfigIssue:
    """The file's text, or the one issue that stops us from reading it. Anything that is not
    a regular file (a named pipe would block the read forever) and anything over the size
    limit is refused before a byte is read."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return _os_problem(path, exc)
    if stat.S_ISDIR(st.st_mode):
        return ConfigIssue("", f"{path} is a directory, expected a YAML file")
    if not stat.S_ISREG(st.st_mode):
        return ConfigIssue("", f"{path} is not a regular file (a pipe, socket or device?); "
                           "give the path of a YAML file")
    if st.st_size > _MAX_FILE_BYTES:
        return ConfigIssue("", f"{path} is {st.st_size / 2**20:.1f} MiB; a config file may be "
                           f"at most {_MAX_FILE_BYTES / 2**20:g} MiB (configs are kilobytes: "
                           "is this the right file?)")
    try:
        with open(path, "rb") as fh:
            data = _read_capped(fh, _MAX_FILE_BYTES + 1)
    except OSError as exc:
        return _os_problem(path, exc)
    if len(data) > _MAX_FILE_BYTES:  # it grew while we read it
        return ConfigIssue("", f"{path} is larger than {_MAX_FILE_BYTES / 2**20:g} MiB; "
                           "not a config file?")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ConfigIssue("", "the file is UTF-16; save it as UTF-8", 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return ConfigIssue(
            "", f"the file is not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}", line
        )
    return text[1:] if text.startswith("\ufeff") else text


def _read_capped(fh: typing.BinaryIO, limit: int) -> bytes:
    # read(limit) would allocate ``limit`` bytes up front; chunks cost only what is there.
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = fh.read(min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# --- building ------------------------------------------------------------------------------


def _build(data: Any, doc: YamlDocument | None, source: str | None, strict_legacy: bool) -> Config:
    ctx = _Context(doc)
    ambiguous: set[tuple[str, int]] = set()  # (path as read, line) of each refused number
    said: set[int] = set()  # ids of the issues that refuse them
    if doc is not None:
        for dup in doc.duplicates:
            ctx.add(dup.path, f"duplicate key {dup.path[-1]!r}; first written on line {dup.first_line}",
                    line=dup.line)
        for amb in doc.ambiguous:
            # A key is named as written (models["010"]), not as YAML 1.1 read it (models[8]).
            shown = ctx.path_of((*amb.path[:-1], amb.text)) if amb.key else None
            ctx.add(amb.path, amb.message, key=amb.key, line=amb.line, path=shown)
            ambiguous.add((ctx.path_of(amb.path), amb.line))
            said.add(id(ctx.issues[-1]))
    data = {k: v for k, v in data.items() if not (k in _SECTIONS and v is None)}
    for name, model in section(data, "models").items():
        if isinstance(model, Mapping) and "inferred" in model:
            ctx.add(("models", name, "inferred"), _RETIRED[(ModelConfig, "inferred")], key=True)
    if not strict_legacy and "models" not in data:
        data = _infer_legacy(data)
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    else:
        errors = []
    _translate(errors, ctx)
    cross_check(data, ctx)
    if config is not None:
        check_breakers(config, ctx)
    if ambiguous:  # what else was said of the value as read (08 is text; -012 is -10) is moot
        ctx.issues = [i for i in ctx.issues if (i.path, i.line) not in ambiguous or id(i) in said
                      or i.message.startswith(("unknown field", "duplicate key"))]
    if ctx.issues or config is None:
        raise ConfigError(ctx.sorted_issues(), source=source)
    return config


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """A caller's mapping as plain dicts and lists (strict validation takes exactly those):
    other Mappings become dicts and tuples lists; sets and everything else stay as they are,
    to be refused with their path."""

    def conv(value: Any, depth: int) -> Any:
        if depth > 64:  # deeper than any config: leave it for the validator to refuse
            return value
        if isinstance(value, Mapping):
            return {k: conv(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [conv(v, depth + 1) for v in value]
        return value

    return {k: conv(v, 1) for k, v in data.items()}


class _Context:
    """Collects issues, formats raw paths and finds their YAML lines."""

    def __init__(self, doc: YamlDocument | None) -> None:
        self.doc = doc
        self.issues: list[ConfigIssue] = []
        self._suggested: dict[tuple[str, str], str | None] = {}
        self._budget = _SUGGESTION_BUDGET

    def add(self, raw: Sequence[Hashable], message: str, *, key: bool = False,
            line: int | None = None, path: str | None = None) -> None:
        if line is None and self.doc is not None:
            line = self.doc.line_of(raw, key=key)
        # Every message passes redaction: a key written where a name belongs is never echoed
        # (the value checks below mostly avoid echoing it; this is the backstop).
        where = path if path is not None else _locate(raw).path
        self.issues.append(ConfigIssue(redact(where), redact(message), line))

    def append(self, message: str) -> None:
        """An issue about the whole config (no path; line 1 of a file)."""
        self.issues.append(ConfigIssue("", message, 1 if self.doc else None))

    def path_of(self, raw: Sequence[Hashable]) -> str:
        return _locate(raw).path

    def scalar_text(self, raw: Sequence[Hashable], *, key: bool = False) -> str | None:
        return self.doc.scalar_text(raw, key=key) if self.doc is not None else None

    def suggest(self, name: str, candidates: Sequence[str], label: str) -> str | None:
        """The closest candidate to a misspelt ``name`` (difflib), or None. ``label`` names
        the candidate set for the cache."""
        cache_key = (name, label)
        if cache_key in self._suggested:
            return self._suggested[cache_key]
        found: str | None = None
        if self._budget >= len(candidates):
            self._budget -= len(candidates)
            lowered = {c.lower(): c for c in candidates}
            found = lowered.get(name.lower())
            if found is None:
                close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
                found = close[0] if close else None
        self._suggested[cache_key] = found
        return found

    def unknown(self, what: str, name: str, candidates: Sequence[str]) -> str:
        """``unknown model 'x'; did you mean 'y'?`` (or the short list of names there are)."""
        if looks_like_secret(name):
            return (f"unknown {what}: the value looks like an API key (not shown); write the "
                    f"{what}'s name here")
        guess = self.suggest(name, candidates, what)
        if guess is not None:
            return f"unknown {what} {name!r}; did you mean {guess!r}?"
        if not candidates:
            return f"unknown {what} {name!r}; none are declared"
        if len(candidates) <= 6:
            return f"unknown {what} {name!r}; known: {', '.join(candidates)}"
        return f"unknown {what} {name!r}"

    def sorted_issues(self) -> list[ConfigIssue]:
        # Reading order; issues without a line (mapping input) keep the order found.
        return sorted(self.issues, key=lambda i: (i.line is None, i.line or 0))


# --- paths ---------------------------------------------------------------------------------


class _Where(NamedTuple):
    raw: tuple[Hashable, ...]  # the data path, for line lookup
    path: str  # `models["qwen"].price.input_per_1k`
    leaf: Any  # schema type at the end of the path (None: outside the schema)
    parent: type[BaseModel] | None  # the model that owns the last field
    union_at: int | None  # how many raw segments precede a union member tag (pydantic's)
    union: Any  # that union type
    key_error: bool  # pydantic's "[key]": the dict key itself is invalid


def _locate(loc: Sequence[Hashable], *, tags: bool = False) -> _Where:
    """Walk the schema along ``loc`` to tell fields (``.name``) from user-named map keys
    (``["name"]``) and list indexes. ``tags``: ``loc`` is pydantic's, with union member tags."""
    tp: Any = Config
    raw: list[Hashable] = []
    parts: list[str] = []
    parent: type[BaseModel] | None = None
    union_at: int | None = None
    union: Any = None
    key_error = False
    for item in loc:
        tp = _unwrap_optional(tp)
        if tags and item == "[key]":
            key_error = True
            continue
        if tags and isinstance(item, str) and _is_union(tp):
            union_at, union = len(raw), tp
            tp = next((m for m in typing.get_args(tp) if _type_name(m) == item), None)
            continue
        if _is_union(tp) and isinstance(item, str):
            # A raw path into ``HealthConfig | Literal[False] | None`` goes through the model.
            tp = next((m for m in typing.get_args(tp)
                       if isinstance(m, type) and issubclass(m, BaseModel)), None)
        raw.append(item)
        origin = typing.get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            parts.append(f".{item}" if parts else str(item))
            parent = tp
            field = tp.model_fields.get(str(item))
            tp = field.annotation if field is not None else None
        elif origin is list or (origin is not dict and type(item) is int):
            parts.append(f"[{item}]")
            tp = typing.get_args(tp)[0] if origin is list else None
        else:
            parts.append(f"[{json.dumps(item, ensure_ascii=False)}]" if isinstance(item, str) else f"[{item!r}]")
            tp = typing.get_args(tp)[1] if origin is dict else None
    return _Where(tuple(raw), "".join(parts), _unwrap_optional(tp), parent, union_at, union, key_error)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _unwrap_optional(tp: Any) -> Any:
    if _is_union(tp):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if len(members) == 1:
            return members[0]
    return tp


def _type_name(tp: Any) -> str:
    """pydantic's tag for a union member: ``float``, ``list[str]``, a model's class name."""
    if typing.get_origin(tp) is typing.Annotated:
        return _type_name(typing.get_args(tp)[0])
    origin = typing.get_origin(tp)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


# --- pydantic errors -----------------------------------------------------------------------

# Fields that an earlier routekit accepted, or that users reach for, and why they are refused.
_RETIRED: dict[tuple[Any, str], str] = {
    (ModelConfig, "budget"): (
        "'budget' is not supported yet: routekit would accept it and enforce nothing, so it "
        "refuses it; remove it (spending caps arrive with fleets and shared state)"
    ),
    (ModelConfig, "inferred"): (
        "'inferred' is set by routekit for models a chains-only config never declares; "
        "remove it"
    ),
    (BreakerConfig, "reset_timeout"): (
        "'reset_timeout' was replaced by 'open_initial' (seconds open after a trip) and "
        "'open_max' (the cap as repeated trips double it)"
    ),
}

_TYPE_WORDS = {
    "float": "a number", "int": "a whole number", "str": "a string", "bool": "true/false",
    "list[str]": "a list of strings", "Literal[False]": "false", "NoneType": "",
    **{cls.__name__: "a mapping" for cls in (HealthConfig, BreakerConfig)},
}
_EXPECTED = {
    "float_type": "a number", "float_parsing": "a number", "int_type": "a whole number",
    "int_parsing": "a whole number", "int_from_float": "a whole number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "list_type": "a list", "finite_number": "a finite number",
}
_BOUNDS = {"greater_than": ("gt", "greater than"), "greater_than_equal": ("ge", "at least"),
           "less_than": ("lt", "less than"), "less_than_equal": ("le", "at most")}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and len(str(abs(value))) > 20:
        return f"a {len(str(abs(value)))}-digit number"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return shown_text(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (bytes, bytearray)):
        return "binary data (!!binary)"
    if isinstance(value, (set, frozenset)):
        return "a set (!!set)"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    return f"a {type(value).__name__}"


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _bound(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value} (a year, in seconds)" if value == MAX_SECONDS else str(value)


def _translate(errors: list[Any], ctx: _Context) -> None:
    # pydantic reports one error per union member; group them by the path of the union.
    unions: dict[tuple[Hashable, ...], list[tuple[_Where, Any]]] = {}
    for err in errors:
        where = _locate(err["loc"], tags=True)
        if where.union_at is None:
            _one_error(err, where, ctx)
        else:
            unions.setdefault(where.raw[: where.union_at], []).append((where, err))
    for head, group in unions.items():
        deeper = [(w, e) for w, e in group if len(w.raw) > len(head)]
        if deeper:
            # The value had the right container type (a list): its items are what is wrong.
            for where, err in deeper:
                _one_error(err, where, ctx)
            continue
        where, err = group[0]
        accepts: list[str] = []
        for member in typing.get_args(where.union):
            word = _TYPE_WORDS.get(_type_name(member), _type_name(member))
            if not word or word in accepts or (word == "a whole number" and "a number" in accepts):
                continue
            accepts.append(word)
        words = f"{', '.join(accepts[:-1])} or {accepts[-1]}" if len(accepts) > 1 else accepts[0]
        ctx.add(head, f"expected {words}, got {_describe(err['input'])}", path=_locate(head).path)


def _one_error(err: Any, where: _Where, ctx: _Context) -> None:
    kind: str = err["type"]
    value = err.get("input")
    err_ctx = err.get("ctx") or {}
    raw = where.raw
    if kind == "extra_forbidden":
        name = str(raw[-1])
        fields = [f for f in (where.parent.model_fields if where.parent else {}) if f != "inferred"]
        if name in ("api_key", "key", "token", "secret"):
            msg = (f"unknown field {name!r}; keys never live in a config: name the environment "
                   "variable that holds it with 'api_key_env'")
        elif (where.parent, name) in _RETIRED:
            msg = _RETIRED[(where.parent, name)]
        else:
            guess = ctx.suggest(name, fields, f"field of {where.parent}")
            msg = (f"unknown field {name!r}; did you mean {guess!r}?" if guess
                   else f"unknown field {name!r}; expected one of: {', '.join(fields)}")
        ctx.add(raw, msg, key=True)
        return
    if kind == "missing":
        ctx.add(raw[:-1], f"missing required field {str(raw[-1])!r}", path=_locate(raw[:-1]).path)
        return
    if kind == "literal_error":
        allowed = [str(a) for a in typing.get_args(where.leaf)] if typing.get_origin(where.leaf) is Literal else []
        msg = f"must be one of: {', '.join(allowed) or err_ctx.get('expected', '?')}"
        guess = ctx.suggest(value, allowed, f"value of {where.path}") if isinstance(value, str) and allowed else None
        msg += f"; got {_describe(value)}" + (f", did you mean {guess!r}?" if guess else "")
        ctx.add(raw, msg)
        return
    if kind in _BOUNDS:
        bound_key, words = _BOUNDS[kind]
        ctx.add(raw, f"must be {words} {_bound(err_ctx.get(bound_key))}, got {_describe(value)}")
        return
    if kind in ("value_error", "assertion_error"):
        # Validators write their own messages and never echo the value (it may be a secret).
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        ctx.add(raw, msg)
        return
    if kind in _EXPECTED:
        what = "a name (a string)" if where.key_error else _EXPECTED[kind]
        if kind == "model_type" and isinstance(value, list) and where.leaf is ChainConfig:
            msg = "expected a mapping like {chain: [a, b]}, got a list"
        else:
            msg = f"expected {what}, got {_describe(value)}"
        text = ctx.scalar_text(raw, key=where.key_error)
        if kind == "string_type" and text is not None and not isinstance(value, str):
            msg += f"; write it in quotes (\"{text}\") to mean the text"
        elif kind in ("float_type", "int_type") and isinstance(value, str) and _is_number(value):
            msg += "; write it without quotes to mean the number"
        ctx.add(raw, msg, key=where.key_error)
        return
    ctx.add(raw, str(err["msg"]), key=where.key_error)


# --- legacy configs ------------------------------------------------------------------------


def _legacy_guess(name: str, tier: Any) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(provider name, provider fields, extra model fields) for a chains-only model name."""
    in_process = {"package": C.DEFAULT_MODEL_PACKAGE, "chat_format": C.DEFAULT_MODEL_CHAT_FORMAT,
                  "defaults": dict(C.DEFAULT_MODEL_GENERATION)}
    if name.startswith("llama-cpp-native"):
        return "llama-cpp-native", {"kind": "llama_cpp_native"}, in_process
    if name.startswith("llama-cpp"):
        return "llama-cpp", {"kind": "llama_cpp"}, in_process
    if "cloud" in name or (isinstance(tier, str) and tier.startswith("cloud")):
        return "cloud", {"kind": "openai", "api_key_env": "OPENAI_API_KEY"}, {}
    return "ollama", {"kind": "ollama"}, {}


def _infer_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Give a chains-only config (the v1.7 shape) a model per chain key, marked inferred."""
    chains = section(data, "fallback_chains")
    if not chains:
        return data
    declared = data.get("providers")
    if declared is not None and not isinstance(declared, Mapping):
        return data  # pydantic reports the bad section; inferring on top would only add noise
    providers: dict[str, Any] = dict(declared) if isinstance(declared, Mapping) else {}
    models: dict[str, Any] = {}
    for name, entry in chains.items():
        if not name.strip():
            continue
        prov_name, prov_fields, extra = _legacy_guess(name, get(entry, "tier"))
        if prov_name not in providers:
            providers[prov_name] = prov_fields
        model: dict[str, Any] = {"provider": prov_name, "inferred": True}
        if kind_of(providers[prov_name]) in C.IN_PROCESS_KINDS:
            model.update(extra)
        models[name] = model
    out = dict(data)
    out["providers"] = providers
    out["models"] = models
    return out
