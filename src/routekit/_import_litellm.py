"""Import a LiteLLM proxy or Router config as routekit YAML: ``routekit import litellm``.

Owns the mapping from LiteLLM's ``model_list``, ``router_settings``, ``litellm_settings``,
``general_settings`` and ``environment_variables`` to routekit's providers, models, chains
and routing, and writing the result as commented YAML. Whatever has no routekit equivalent
becomes a comment saying why. It never copies a secret: ``api_key: os.environ/NAME``
becomes ``api_key_env: NAME``, a literal key is dropped with a comment, and nothing from
``general_settings`` or ``environment_variables`` is written but names. The YAML is loaded
back through routekit's own loader and checked for cycles before it is returned, so it
passes ``routekit validate``. Reads text; writes nothing (the CLI writes).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml

from . import _constants as C
from ._config.yaml_lines import YamlProblem, parse_yaml

__all__ = ["ImportResult", "LiteLLMImportError", "import_litellm"]


class LiteLLMImportError(ValueError):
    """The input is not a LiteLLM config routekit can read; the message says why."""


@dataclass(frozen=True)
class _Preset:
    kind: str
    base_url: str | None  # None: LiteLLM's default for the kind (OpenAI's own API)
    key_env: str | None  # the variable LiteLLM reads when the config names no key
    note: str = ""


_LOCAL = "http://127.0.0.1"
# LiteLLM provider prefixes whose endpoint speaks the OpenAI chat API.
_PRESETS: dict[str, _Preset] = {
    "openai": _Preset("openai", None, "OPENAI_API_KEY"),
    "ollama": _Preset("ollama", f"{_LOCAL}:11434/v1", None),
    "ollama_chat": _Preset("ollama", f"{_LOCAL}:11434/v1", None),
    "hosted_vllm": _Preset("vllm", f"{_LOCAL}:8000/v1", None),
    "vllm": _Preset("vllm", f"{_LOCAL}:8000/v1", None,
                    "LiteLLM's vllm/ runs vLLM inside the proxy; routekit talks to a vLLM "
                    "server (vllm serve) at this URL"),
    "llamafile": _Preset("llama_cpp_server", f"{_LOCAL}:8080/v1", None),
    "lm_studio": _Preset("llama_cpp_server", f"{_LOCAL}:1234/v1", None),
    "groq": _Preset("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "together_ai": _Preset("openai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "deepseek": _Preset("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "mistral": _Preset("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "openrouter": _Preset("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "fireworks_ai": _Preset("openai", "https://api.fireworks.ai/inference/v1",
                            "FIREWORKS_AI_API_KEY"),
    "xai": _Preset("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    "perplexity": _Preset("openai", "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "deepinfra": _Preset("openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
}
_LOOPBACK = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "host.docker.internal"}
# Per-request generation parameters LiteLLM lets a deployment fix; routekit: model defaults.
_DEFAULTS = ("temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty",
             "frequency_penalty")
_HANDLED_PARAMS = {"model", "api_key", "api_base", "base_url", "timeout", "stream_timeout",
                   "rpm", "tpm", "max_parallel_requests", "max_retries",
                   "input_cost_per_token", "output_cost_per_token", *_DEFAULTS}
_ENV = "os.environ/"
_MAX_BYTES = C.MAX_CONFIG_FILE_BYTES


@dataclass
class ImportResult:
    yaml: str
    models: int
    providers: int
    skipped: list[str]  # one line per thing not imported (also written as comments)


@dataclass
class _Provider:
    name: str
    fields: dict[str, Any]
    comments: list[str] = field(default_factory=list)


@dataclass
class _Model:
    name: str
    fields: dict[str, Any]
    comments: list[str] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)


def _clean(text: object) -> str:
    """One comment-safe line: a newline in a user's value must not end the comment."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", str(text))


def _flow(value: Any) -> str:
    """A YAML flow scalar or collection on one line, quoted where YAML needs it."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str) and re.search(r"[\x00-\x1f\x7f\u2028\u2029\x85]", value):
        return json.dumps(value)  # a JSON string is a double-quoted YAML scalar, one line
    return yaml.safe_dump([value], default_flow_style=True, width=10**9,
                          allow_unicode=True).strip()[1:-1]


def _env_name(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(_ENV):
        name = value[len(_ENV):].strip()
        if name and all(ch.isalnum() or ch == "_" for ch in name):
            return name
    return None


def _with_v1(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    if parts.path.strip("/") == "":
        return url.rstrip("/") + "/v1", True
    return url.rstrip("/"), False


class _Importer:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.providers: dict[tuple[str, str | None, str | None], _Provider] = {}
        self.models: dict[str, _Model] = {}
        self.groups: dict[str, list[str]] = {}  # LiteLLM model_name → routekit models
        self.listed: set[str] = set()  # every model_name in model_list, imported or not
        self.header: list[str] = []
        self.routing: dict[str, Any] = {}
        self.routing_comments: list[str] = []

    def skip(self, what: str) -> None:
        self.header.append(_clean(what))

    # -- model_list ---------------------------------------------------------------------

    def deployments(self) -> None:
        items = self.data.get("model_list")
        if not isinstance(items, list) or not items:
            raise LiteLLMImportError("no 'model_list': this does not look like a LiteLLM "
                                     "proxy or Router config (a list of {model_name, "
                                     "litellm_params} is required)")
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                self.skip(f"model_list[{i}]: not a mapping")
                continue
            group = item.get("model_name")
            params = item.get("litellm_params")
            if not isinstance(group, str) or not group.strip():
                self.skip(f"model_list[{i}]: no model_name")
                continue
            self.listed.add(group)
            if not isinstance(params, Mapping) or not isinstance(params.get("model"), str):
                self.skip(f"model_list[{i}] ({group}): no litellm_params.model")
                continue
            if "*" in group or "*" in params["model"]:
                self.skip(f"model_list[{i}] ({group}): wildcard routes have no routekit "
                          "equivalent; declare each model you route")
                continue
            raw_info = item.get("model_info")
            info: Mapping[str, Any] = raw_info if isinstance(raw_info, Mapping) else {}
            mode = info.get("mode")
            if mode not in (None, "chat", "completion"):
                self.skip(f"model_list[{i}] ({group}): mode {mode}; routekit routes chat "
                          "completions only")
                continue
            self.deployment(i, group, params, item, info)

    def deployment(self, i: int, group: str, params: Mapping[str, Any],
                   item: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        target = str(params["model"])
        prefix, sep, model_id = target.partition("/")
        notes: list[str] = []
        if not sep:
            prefix, model_id = "openai", target
            notes.append(f"'{target}' has no provider prefix; taken as an OpenAI model")
        preset = _PRESETS.get(prefix)
        if preset is None:
            self.skip(f"model_list[{i}] ({group}): provider '{prefix}/' speaks its own API; "
                      "routekit reaches providers through the OpenAI-compatible chat API "
                      "only (if this provider offers one, declare it as kind openai with "
                      "its base_url)")
            return
        kind, base_url = preset.kind, preset.base_url
        if preset.note:
            notes.append(preset.note)
        api_base = params.get("api_base", params.get("base_url"))
        if isinstance(api_base, str) and _env_name(api_base):
            notes.append(f"api_base comes from ${_env_name(api_base)} in LiteLLM; routekit "
                         f"needs the URL itself: set base_url (using {base_url or 'the default'})")
        elif isinstance(api_base, str) and api_base.strip():
            base_url, added = _with_v1(api_base.strip())
            if added:
                notes.append(f"base_url: added /v1 to {api_base} (the OpenAI-compatible path)")
            host = urlsplit(base_url).hostname or ""
            if kind == "openai" and host in _LOOPBACK:
                kind = "llama_cpp_server"
                notes.append("an OpenAI-compatible server on this machine: kind "
                             "llama_cpp_server (local defaults: 10 s first byte, breaker "
                             "trips on a refused connection)")
        if kind == "openai" and base_url is None:
            base_url = C.DEFAULT_BASE_URLS["openai"]
        key = params.get("api_key")
        key_env = _env_name(key)
        if key is not None and key_env is None:
            notes.append("api_key was written in the LiteLLM config; it is not copied: put it "
                         "in an environment variable and name it in api_key_env")
        if key_env is None and kind == "openai":
            key_env = preset.key_env or "OPENAI_API_KEY"
            notes.append(f"api_key_env: {key_env} (the variable to hold this provider's key)")
        provider = self.provider(prefix, kind, base_url, key_env)
        self.provider_extras(provider, params, item, group)

        name = group if group not in self.models else self.unique(group)
        fields: dict[str, Any] = {"provider": provider.name}
        if model_id != name:
            fields["model_id"] = model_id
        window = info.get("max_input_tokens", info.get("max_tokens"))
        if isinstance(window, int) and window > 0:
            fields["context_window"] = window
        price = self.price(params, info)
        if price:
            fields["price"] = price
        defaults = {k: params[k] for k in _DEFAULTS if k in params and params[k] is not None}
        if defaults:
            fields["defaults"] = defaults
        model = _Model(name, fields, notes)
        for key_name in ("rpm", "tpm"):
            value = params.get(key_name, item.get(key_name))
            if value is not None:
                model.comments.append(f"{key_name}: {value} not imported: routekit has no "
                                      "per-deployment rate limit; max_concurrency on the "
                                      "provider bounds requests in flight instead")
        if params.get("max_retries") is not None:
            model.comments.append(f"max_retries: {params['max_retries']} not imported: "
                                  "routekit's retries are router-wide (routing.retry)")
        if params.get("stream_timeout") is not None:
            model.comments.append(f"stream_timeout: {params['stream_timeout']} not imported: "
                                  "use timeout.first_byte / read on the provider")
        rest = sorted(str(k) for k in params if k not in _HANDLED_PARAMS)
        if rest:
            model.comments.append("not imported from litellm_params: " + ", ".join(rest))
        self.models[name] = model
        self.groups.setdefault(group, []).append(name)
        if len(self.groups[group]) > 1:
            first = self.models[self.groups[group][0]]
            first.chain.append(name)
            model.comments.append(f"another deployment of '{group}': LiteLLM balances load "
                                  "across a group's deployments; routekit tries them in order")

    def unique(self, group: str) -> str:
        n = len(self.groups.get(group, [])) + 1
        while f"{group}-{n}" in self.models:
            n += 1
        return f"{group}-{n}"

    def provider(self, prefix: str, kind: str, base_url: str | None,
                 key_env: str | None) -> _Provider:
        key = (kind, base_url, key_env)
        found = self.providers.get(key)
        if found is not None:
            return found
        base = {"ollama_chat": "ollama", "hosted_vllm": "vllm"}.get(prefix, prefix)
        if kind == "llama_cpp_server" and prefix == "openai":
            base = "local-server"
        name, n = base, 2
        taken = {p.name for p in self.providers.values()}
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        fields: dict[str, Any] = {"kind": kind}
        if base_url is not None and base_url != C.DEFAULT_BASE_URLS.get(kind):
            fields["base_url"] = base_url
        if key_env is not None:
            fields["api_key_env"] = key_env
        provider = _Provider(name, fields)
        self.providers[key] = provider
        return provider

    def provider_extras(self, provider: _Provider, params: Mapping[str, Any],
                        item: Mapping[str, Any], group: str) -> None:
        timeout = params.get("timeout")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
            current = provider.fields.get("timeout", {}).get("total")
            if current is None:
                provider.fields["timeout"] = {"total": float(timeout)}
            elif current != timeout:
                provider.comments.append(f"'{group}' asked for timeout {timeout}; routekit "
                                         f"times out per provider, kept {current}")
        limit = params.get("max_parallel_requests", item.get("max_parallel_requests"))
        if isinstance(limit, int) and limit > 0 and "max_concurrency" not in provider.fields:
            provider.fields["max_concurrency"] = limit

    @staticmethod
    def price(params: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        for src, dst in (("input_cost_per_token", "input_per_1k"),
                         ("output_cost_per_token", "output_per_1k")):
            value = params.get(src, info.get(src))
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                out[dst] = round(float(value) * 1000, 12)
        return out

    # -- fallbacks ------------------------------------------------------------------------

    def setting(self, name: str) -> Any:
        for section in ("router_settings", "litellm_settings"):
            block = self.data.get(section)
            if isinstance(block, Mapping) and block.get(name) is not None:
                return block[name]
        return None

    def fallbacks(self) -> None:
        for setting, label in (("fallbacks", "fallbacks"),
                               ("context_window_fallbacks", "context_window_fallbacks")):
            rules = self.setting(setting)
            if rules is None:
                continue
            if not isinstance(rules, list):
                self.skip(f"{setting}: expected a list of {{model: [fallbacks]}}")
                continue
            for rule in rules:
                if not isinstance(rule, Mapping):
                    self.skip(f"{setting}: entry {_clean(rule)} is not a mapping")
                    continue
                for src, targets in rule.items():
                    self.add_fallbacks(str(src), targets, label)
            if setting == "context_window_fallbacks":
                self.routing_comments.append(
                    "context_window_fallbacks were appended to the chains: routekit skips a "
                    "candidate whose context_window is too small for the prompt, so the "
                    "larger model is reached; it is also reached on outages")
        default = self.setting("default_fallbacks")
        if isinstance(default, list) and default:
            for group in list(self.groups):
                self.add_fallbacks(group, [g for g in default if g != group], "default_fallbacks")
        if self.setting("content_policy_fallbacks") is not None:
            self.skip("content_policy_fallbacks: routekit does not inspect content policies")

    def add_fallbacks(self, src: str, targets: Any, label: str) -> None:
        if src not in self.groups:
            why = "was not imported" if src in self.listed else "is not a model_name in model_list"
            self.skip(f"{label}: '{_clean(src)}' {why}")
            return
        if not isinstance(targets, list):
            self.skip(f"{label} of '{src}': expected a list")
            return
        head = self.models[self.groups[src][0]]
        for target in targets:
            if not isinstance(target, str) or target not in self.groups:
                why = ("was not imported" if target in self.listed
                       else "is not a model_name in model_list")
                self.skip(f"{label} of '{_clean(src)}': '{_clean(target)}' {why}")
                continue
            first = self.groups[target][0]
            if first not in head.chain and first != head.name:
                head.chain.append(first)

    def break_cycles(self) -> None:
        """routekit follows chains transitively and refuses cycles; LiteLLM tries only the
        listed groups, so a -> b and b -> a are fine there. Drop each edge that closes one."""
        state: dict[str, int] = {}  # 1 on the DFS stack, 2 done
        for root in self.models:
            if root in state:
                continue
            stack: list[tuple[str, int]] = [(root, 0)]
            state[root] = 1
            while stack:
                node, i = stack[-1]
                chain = self.models[node].chain
                if i >= len(chain):
                    state[node] = 2
                    stack.pop()
                    continue
                stack[-1] = (node, i + 1)
                nxt = chain[i]
                if state.get(nxt) == 1:
                    path = [n for n, _ in stack]
                    loop = " → ".join(path[path.index(nxt):] + [nxt])
                    chain.pop(i)
                    stack[-1] = (node, i)
                    self.models[node].comments.append(
                        f"fallback to '{nxt}' dropped: it would close the cycle {loop} "
                        "(routekit follows fallbacks depth first; LiteLLM only the listed ones)")
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))

    # -- settings ---------------------------------------------------------------------------

    def settings(self) -> None:
        retries = self.setting("num_retries")
        if isinstance(retries, int) and not isinstance(retries, bool) and retries >= 0:
            attempts = min(20, retries + 1)
            self.routing["retry"] = {"max_attempts": attempts,
                                     "last_candidate_attempts": attempts}
        timeout = self.setting("timeout") or self.setting("request_timeout")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
            self.routing["timeout"] = {"total": float(timeout)}
        breaker: dict[str, Any] = {}
        if self.setting("disable_cooldowns") is True:
            breaker["enabled"] = False
        fails = self.setting("allowed_fails")
        if isinstance(fails, int) and not isinstance(fails, bool) and fails >= 0:
            breaker.update(mode="consecutive", failure_threshold=fails + 1)
            self.routing_comments.append(
                f"allowed_fails: {fails} → a breaker that opens after {fails + 1} failures in "
                "a row (LiteLLM counts failures per minute)")
        cooldown = self.setting("cooldown_time")
        if isinstance(cooldown, (int, float)) and not isinstance(cooldown, bool) and cooldown > 0:
            breaker.update(open_initial=float(cooldown), open_multiplier=1.0,
                           open_max=float(cooldown))
            self.routing_comments.append(f"cooldown_time: {cooldown} → open for {cooldown} s "
                                         "each time (LiteLLM's cooldown does not grow)")
        if breaker:
            self.routing["breaker"] = breaker
        if self.groups:
            self.routing["default_model"] = next(iter(self.groups))
        handled = {"fallbacks", "context_window_fallbacks", "default_fallbacks",
                   "content_policy_fallbacks", "num_retries", "timeout", "request_timeout",
                   "allowed_fails", "cooldown_time", "disable_cooldowns"}
        for section in ("router_settings", "litellm_settings"):
            block = self.data.get(section)
            if isinstance(block, Mapping):
                rest = sorted(str(k) for k in block if k not in handled)
                if rest:
                    why = ("routekit tries candidates in chain order; no load balancing, "
                           "Redis or aliases here" if section == "router_settings" else
                           "LiteLLM module settings (callbacks, caching, logging)")
                    self.skip(f"{section}: {', '.join(rest)} ({why})")
        general = self.data.get("general_settings")
        if isinstance(general, Mapping) and general:
            self.skip(f"general_settings: {', '.join(sorted(map(str, general)))} (proxy server "
                      "settings; routekit runs inside your application, not as a proxy)")
        env = self.data.get("environment_variables")
        if isinstance(env, Mapping) and env:
            self.skip(f"environment_variables: {', '.join(sorted(map(str, env)))} (set them "
                      "in the environment; values are not copied)")
        known = {"model_list", "router_settings", "litellm_settings", "general_settings",
                 "environment_variables"}
        for key in self.data:
            if key not in known:
                self.skip(f"{key}: not a LiteLLM section routekit knows")

    # -- output -------------------------------------------------------------------------------

    def render(self, source: str) -> str:
        out = [f"# routekit config imported from {_clean(source)} (LiteLLM) by "
               "`routekit import litellm`.",
               "# routekit follows fallbacks depth first (a fallback's own fallbacks come "
               "before the next",
               "# one); `routekit plan` shows each model's order. Add an in-process model "
               "(kind llama_cpp)",
               "# at the end of your chains to keep answering with every server down.",
               ""]
        if self.header:
            out.append("# Not imported:")
            out += [f"#   - {line}" for line in self.header]
            out.append("")
        out.append("providers:")
        for p in self.providers.values():
            out += [f"  # {_clean(c)}" for c in p.comments]
            out.append(f"  {_flow(p.name)}: {_flow(p.fields)}")
        out += ["", "models:"]
        for m in self.models.values():
            out += [f"  # {_clean(c)}" for c in m.comments]
            out.append(f"  {_flow(m.name)}: {_flow(m.fields)}")
        out += ["", "fallback_chains:"]
        for m in self.models.values():
            out.append(f"  {_flow(m.name)}: {_flow({'chain': m.chain})}")
        out += ["", "routing:"]
        out += [f"  # {_clean(c)}" for c in self.routing_comments]
        for key, value in self.routing.items():
            out.append(f"  {key}: {_flow(value)}")
        return "\n".join(out) + "\n"


def import_litellm(text: str, *, source: str = "<litellm config>") -> ImportResult:
    """LiteLLM config text → routekit YAML (checked by routekit's loader and for cycles)."""
    from ._config.loader import load_config_text
    from ._exceptions import ConfigError
    from ._plan import CompiledGraph

    if len(text.encode("utf-8", "surrogatepass")) > _MAX_BYTES:
        raise LiteLLMImportError(f"{source} is larger than {_MAX_BYTES} bytes")
    try:
        data = parse_yaml(text).data
    except YamlProblem as exc:
        raise LiteLLMImportError(f"{source}: {exc}") from None
    importer = _Importer(data)
    importer.deployments()
    if not importer.models:
        raise LiteLLMImportError(
            f"{source}: no deployment could be imported: " + "; ".join(importer.header))
    importer.fallbacks()
    importer.break_cycles()
    importer.settings()
    rendered = importer.render(source)
    try:
        config = load_config_text(rendered, source="<imported>")
    except ConfigError as exc:  # a bug here, not in the user's file: say so plainly
        raise LiteLLMImportError(f"internal error: the imported config does not load: {exc}")
    if CompiledGraph.from_config(config).cycles(limit=1):
        raise LiteLLMImportError("internal error: the imported config has a cycle")
    return ImportResult(rendered, len(config.models), len(config.providers),
                        list(importer.header))


def read_litellm_file(path: str) -> str:
    """The file's text, or a LiteLLMImportError that says why not."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        raise LiteLLMImportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LiteLLMImportError(f"{path} is a directory, expected a YAML file") from None
    except OSError as exc:
        raise LiteLLMImportError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > _MAX_BYTES:
        raise LiteLLMImportError(f"{path} is larger than {_MAX_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LiteLLMImportError(f"{path} is not valid UTF-8 (byte {exc.start})") from None
