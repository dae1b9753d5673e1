"""Import a LiteLLM proxy or Router config as routekit YAML: ``routekit import litellm``.

Owns the mapping from LiteLLM's ``model_list``, ``router_settings``, ``litellm_settings``,
``general_settings`` and ``environment_variables`` to routekit's providers, models, chains
and routing, and the result as commented YAML (``_litellm_presets`` writes its values and
comment lines, and works out the request budget). Whatever has no routekit equivalent
becomes a comment saying why. It never copies a secret: ``api_key: os.environ/NAME``
becomes ``api_key_env: NAME``, a literal key is dropped with a comment, and nothing from
``general_settings`` or ``environment_variables`` is written but names. The YAML is loaded
back through routekit's own loader and checked for cycles before it is returned, so it
passes ``routekit validate``. Reads text; writes nothing (the CLI writes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import urlsplit

from . import _constants as C
from ._config.values import (MAX_COUNT, MAX_PRICE, MAX_SECONDS, MAX_TOKENS, check_base_url,
                             default_problem, default_value_ok, finite_number, has_control,
                             looks_like_secret, whole_number, without_userinfo)
from ._config.yaml_lines import YamlProblem, dotted_path, parse_yaml
from ._litellm_presets import (LOOPBACK as _LOOPBACK, PRESETS as _PRESETS, clean as _clean,
                               entry as _entry, env_name as _env_name, first_byte_cut,
                               count_problem, flow as _flow, seconds_problem, shown as _shown,
                               with_v1 as _with_v1, worst_case)

if TYPE_CHECKING:
    from ._config.model import Config

__all__ = ["ImportResult", "LiteLLMImportError", "import_litellm"]


class LiteLLMImportError(ValueError):
    """The input is not a LiteLLM config routekit can read; the message says why."""


# Per-request generation parameters LiteLLM lets a deployment fix; routekit: model defaults.
_DEFAULTS = ("temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty",
             "frequency_penalty")
_HANDLED_PARAMS = {"model", "api_key", "api_base", "base_url", "timeout", "stream_timeout",
                   "rpm", "tpm", "max_parallel_requests", "max_retries",
                   "input_cost_per_token", "output_cost_per_token", *_DEFAULTS}
_SETTINGS = ("router_settings", "litellm_settings")  # the first wins
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


class _Importer:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        # (kind, base_url, api_key_env, timeout) → provider
        self.providers: dict[tuple[str, str | None, str | None, float | None], _Provider] = {}
        self.timed = self.untimed = False  # some deployment set a timeout / some did not
        self.models: dict[str, _Model] = {}
        self.groups: dict[str, list[str]] = {}  # LiteLLM model_name → routekit models
        self.listed: set[str] = set()  # every model_name in model_list, imported or not
        self.taken: set[Any] = set()  # every model_name the file has, before any is read
        self.overridden: set[str] = set()  # settings both sections set: said once
        self.header: list[str] = []
        self.routing: dict[str, Any] = {}
        self.routing_comments: list[str] = []

    def skip(self, what: str) -> None:
        self.header.append(_clean(what))

    def seconds(self, label: str, raw: Any) -> float | None:
        """``raw`` as seconds; a value that is there but is not is said not imported."""
        return finite_number(self.checked(label, raw, seconds_problem(raw)))

    def count(self, label: str, raw: Any, low: int, high: int) -> int | None:
        """``raw`` as a whole number from ``low`` to ``high``; else said not imported."""
        return whole_number(self.checked(label, raw, count_problem(raw, low, high)))

    def checked(self, label: str, raw: Any, problem: str | None) -> Any:
        if problem is not None and raw is not None:
            self.skip(f"{label} {_shown(raw)}: {problem}")
        return raw if problem is None else None

    # -- model_list ---------------------------------------------------------------------

    def deployments(self) -> None:
        items = self.data.get("model_list")
        if not isinstance(items, list) or not items:
            raise LiteLLMImportError("no 'model_list': this does not look like a LiteLLM "
                                     "proxy or Router config (a list of {model_name, "
                                     "litellm_params} is required)")
        # A name made up for a group's second deployment must not be one the file uses:
        # an app asking for that model would reach this deployment instead.
        self.taken = {item.get("model_name") for item in items if isinstance(item, Mapping)}
        for i, item in enumerate(items):
            if not isinstance(item, Mapping):
                self.skip(f"model_list[{i}]: not a mapping")
                continue
            group = item.get("model_name")
            params = item.get("litellm_params")
            if not isinstance(group, str) or not group.strip():
                self.skip(f"model_list[{i}]: no model_name")
                continue
            if has_control(group):
                self.skip(f"model_list[{i}]: model_name {group!r} contains a control "
                          "character (a newline?); routekit names may not")
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
                self.skip(f"model_list[{i}] ({group}): mode {_clean(mode)}; routekit routes "
                          "chat completions only")
                continue
            self.deployment(i, group, params, item, info)

    def deployment(self, i: int, group: str, params: Mapping[str, Any],
                   item: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        target = str(params["model"])
        prefix, sep, model_id = target.partition("/")
        notes: list[str] = []
        where = f"model_list[{i}] ({group})"
        if not sep:
            prefix, model_id = "openai", target
            notes.append(f"'{target}' has no provider prefix; taken as an OpenAI model")
        preset = _PRESETS.get(prefix)
        if not model_id.strip():
            return self.skip(f"{where}: litellm_params.model names no model")
        if preset is None:
            self.skip(f"{where}: provider '{prefix}/' speaks its own API; "
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
            try:
                url, had_key = without_userinfo(api_base.strip())
                base_url, added = _with_v1(url)
                check_base_url(base_url)
            except ValueError as exc:
                why = str(exc)
                try:  # urlsplit's own words ("Invalid IPv6 URL") -> routekit's
                    check_base_url(api_base.strip())
                except ValueError as named:
                    why = str(named)
                return self.skip(f"{where}: api_base {why}; routekit needs the server's "
                                 "http(s) URL")
            if any(looks_like_secret(part) for part in re.split(r"[/:.@;,=&]", url)):
                return self.skip(f"{where}: api_base has what looks like an API key in it "
                                 "(not shown); it is not copied, and without it this "
                                 "deployment has no URL: give the server's URL without the "
                                 "key, and the key in an environment variable (api_key_env)")
            if had_key:
                notes.append("api_base carried credentials (user:password@); they are not "
                             "copied: put the key in an environment variable named by "
                             "api_key_env")
            if added:
                notes.append(f"base_url: added /v1 to {url} (the OpenAI-compatible path)")
            host = urlsplit(base_url).hostname or ""
            if kind == "openai" and host in _LOOPBACK:
                kind = "llama_cpp_server"
                notes.append("an OpenAI-compatible server on this machine: kind "
                             "llama_cpp_server (local defaults: 10 s first byte, breaker "
                             "trips on a refused connection)")
        elif api_base is not None and not (isinstance(api_base, str) and not api_base.strip()):
            return self.skip(f"{where}: api_base {_shown(api_base)} is not a URL; routekit "
                             "needs the server's http(s) URL")
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
        timeout = self.seconds(f"{where}: timeout", params.get("timeout"))
        provider = self.provider(prefix, kind, base_url, key_env, timeout, group)
        self.provider_extras(provider, params, item, group, where)

        name = group if group not in self.models else self.unique(group)
        fields: dict[str, Any] = {"provider": provider.name}
        if model_id != name:
            fields["model_id"] = model_id
        window_key = "max_input_tokens" if "max_input_tokens" in info else "max_tokens"
        window = self.count(f"{where}: model_info.{window_key}", info.get(window_key), 1,
                            MAX_TOKENS)
        if window is not None:
            fields["context_window"] = window
        price = self.price(params, info, where)
        if price:
            fields["price"] = price
        defaults: dict[str, Any] = {}
        for k in _DEFAULTS:
            value = params.get(k)
            if value is None:
                continue
            problem = (default_problem(k, value) if default_value_ok(value) else
                       "expected a number, text, true/false or a list of strings")
            if problem is None:
                defaults[k] = value
            else:  # routekit would refuse it at load (a request with it, at the call)
                self.skip(f"{where}: {k} {_shown(value)}: {problem}")
        if defaults:
            fields["defaults"] = defaults
        model = _Model(name, fields, notes)
        for key_name in ("rpm", "tpm"):
            value = params.get(key_name, item.get(key_name))
            if value is not None:
                model.comments.append(f"{key_name}: {_shown(value)} not imported: routekit has "
                                      "no per-deployment rate limit; max_concurrency on the "
                                      "provider bounds requests in flight instead")
        if params.get("max_retries") is not None:
            model.comments.append(f"max_retries: {_shown(params['max_retries'])} not imported: "
                                  "routekit's retries are router-wide (routing.retry)")
        if params.get("stream_timeout") is not None:
            model.comments.append(f"stream_timeout: {_shown(params['stream_timeout'])} not "
                                  "imported: use timeout.first_byte / read on the provider")
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
        while f"{group}-{n}" in self.models or f"{group}-{n}" in self.taken:
            n += 1
        return f"{group}-{n}"

    def provider(self, prefix: str, kind: str, base_url: str | None, key_env: str | None,
                 timeout: float | None, group: str) -> _Provider:
        """One provider per endpoint, key and timeout: LiteLLM times each deployment out on
        its own, routekit each provider (``timeout.total`` per attempt)."""
        self.timed |= timeout is not None
        self.untimed |= timeout is None
        key = (kind, base_url, key_env, timeout)
        found = self.providers.get(key)
        if found is not None:
            return found
        twin = next((p for k, p in self.providers.items() if k[:3] == key[:3]), None)
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
        if timeout is not None:
            fields["timeout"] = {"total": timeout}
            first_byte = C.DEFAULT_FIRST_BYTE.get(kind)
            if first_byte is not None and first_byte < timeout:  # LiteLLM has no such limit
                provider.comments.append(f"routekit's {first_byte:g} s for a local server's "
                                         "first byte still applies: set timeout.first_byte to "
                                         "wait longer")
        if twin is not None:
            own = f"timeout {timeout:g} s" if timeout is not None else "no timeout of its own"
            provider.comments.append(f"the endpoint of '{twin.name}' again, for '{group}' "
                                     f"({own}): routekit sets timeouts per provider")
        self.providers[key] = provider
        return provider

    def provider_extras(self, provider: _Provider, params: Mapping[str, Any],
                        item: Mapping[str, Any], group: str, where: str) -> None:
        limit = self.count(f"{where}: max_parallel_requests", params.get(
            "max_parallel_requests", item.get("max_parallel_requests")), 1, MAX_COUNT)
        if limit is not None:
            if "max_concurrency" not in provider.fields:
                provider.fields["max_concurrency"] = limit
            elif provider.fields["max_concurrency"] != limit:
                provider.comments.append(
                    f"'{group}' asked for max_parallel_requests {limit}; routekit bounds "
                    f"requests per provider, kept {provider.fields['max_concurrency']}")

    def price(self, params: Mapping[str, Any], info: Mapping[str, Any],
              where: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for src, dst in (("input_cost_per_token", "input_per_1k"),
                         ("output_cost_per_token", "output_per_1k")):
            raw = params.get(src, info.get(src))
            if raw is None:
                continue
            value = finite_number(raw)
            per_1k = round(value * 1000, 12) if value is not None else None
            if per_1k is not None and 0 <= per_1k <= MAX_PRICE:
                if per_1k > 0:
                    out[dst] = per_1k
            else:
                self.skip(f"{where}: {src} {_shown(raw)}: expected US dollars per token, at "
                          f"least 0 and at most {MAX_PRICE / 1000:g}")
        return out

    # -- fallbacks ------------------------------------------------------------------------

    def setting(self, name: str, problem: Callable[[Any], str | None] | None = None) -> Any:
        """``name`` from router_settings, else litellm_settings. Set in both: lists (the
        fallback rules) are taken from both; otherwise router_settings' value is, unless
        ``problem`` refuses it and not the other; the other is listed as not imported."""
        found = []
        for section in _SETTINGS:
            block = self.data.get(section)
            if isinstance(block, Mapping) and block.get(name) is not None:
                found.append((section, block[name]))
        if not found:
            return None
        if len(found) == 2:
            (used, value), (other, dropped) = found
            if isinstance(value, list) and isinstance(dropped, list):
                return value + dropped
            why = None  # both valid, or neither: router_settings' (refused later if so)
            if problem is not None and problem(value) is not None and problem(dropped) is None:
                why = problem(value)
                (used, value), (other, dropped) = (other, dropped), (used, value)
            if (why or dropped != value) and name not in self.overridden:
                self.overridden.add(name)
                self.skip(f"{other}.{name} {_shown(dropped)}: " + (f"{why}; " if why else "")
                          + f"{used}.{name} ({_shown(value)}) is the one imported")
            return value
        return found[0][1]

    def setting_seconds(self, name: str) -> float | None:
        return self.seconds(f"{name}:", self.setting(name, seconds_problem))

    def setting_count(self, name: str, low: int, high: int) -> int | None:
        return self.count(f"{name}:", self.setting(
            name, lambda raw: count_problem(raw, low, high)), low, high)

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
        elif default is not None and not isinstance(default, list):
            self.skip(f"default_fallbacks: {_shown(default)}: expected a list of model names")
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
        retries = self.setting_count("num_retries", 0, 10**9)
        if retries is not None:
            attempts = min(20, retries + 1)
            self.routing["retry"] = {"max_attempts": attempts,
                                     "last_candidate_attempts": attempts}
            if retries + 1 > 20:
                self.routing_comments.append(
                    f"num_retries: {retries} → max_attempts 20, the most routekit allows "
                    "(per candidate)")
        timeout = self.setting_seconds("timeout")
        if timeout is None:  # LiteLLM's default for calls that set none (router or deployment)
            timeout = self.setting_seconds("request_timeout")
        if timeout is not None:
            self.routing["timeout"] = {"total": timeout}
        breaker: dict[str, Any] = {}
        disable = self.setting("disable_cooldowns", lambda raw: None if isinstance(
            raw, bool) else "expected true or false")
        if disable is True:
            breaker["enabled"] = False
        elif disable is not None and disable is not False:
            self.skip(f"disable_cooldowns: {_shown(disable)}: expected true or false")
        fails = self.setting_count("allowed_fails", 0, MAX_COUNT - 1)
        if fails is not None:
            breaker.update(mode="consecutive", failure_threshold=fails + 1)
            self.routing_comments.append(
                f"allowed_fails: {fails} → a breaker that opens after {fails + 1} failures in "
                "a row (LiteLLM counts failures per minute)")
        cooldown = self.setting_seconds("cooldown_time")
        if cooldown is not None:
            breaker.update(open_initial=cooldown, open_multiplier=1.0, open_max=cooldown)
            self.routing_comments.append(f"cooldown_time: {cooldown:g} → open for {cooldown:g} "
                                         "s each time (LiteLLM's cooldown does not grow)")
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

    def budget(self, config: Config) -> bool:
        """Let every attempt run its whole timeout, as LiteLLM does: ``routing.deadline``
        (else ``timeout.total`` bounds the whole request) and, where its default would cut a
        wait for a first byte short, ``first_byte_share``. True when the routing changed."""
        if "timeout" not in self.routing and not self.timed:
            return False  # LiteLLM's file sets no timeout: routekit's defaults stand
        if self.untimed and "timeout" not in self.routing:
            self.routing_comments.append(
                "deployments without a timeout (none in router_settings either) get routekit's "
                f"{config.routing.timeout.total:g} s per attempt (routing.timeout.total)")
        seconds, entry = worst_case(config)
        deadline = config.routing.timeout.total
        if seconds > deadline:
            deadline = min(math.ceil(seconds), MAX_SECONDS)
            self.routing["deadline"] = deadline
            self.routing_comments.append(
                f"deadline: {deadline:g} s, so that no attempt is cut short: LiteLLM gives each "
                "one (retries and fallbacks too) its whole timeout and sets no limit for the "
                f"request; '{entry}' and its fallbacks take up to {seconds:g} s that way"
                + (" (past routekit's limit)" if seconds > MAX_SECONDS else ""))
        if first_byte_cut(config, deadline):
            self.routing["first_byte_share"] = 1.0
            self.routing_comments.append(
                "first_byte_share: 1, so that a model with fallbacks may wait its whole timeout "
                "for an answer, as in LiteLLM (routekit's default gives it a share of what is left)")
        return "deadline" in self.routing or "first_byte_share" in self.routing

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
            out.append(_entry(p.name, p.fields))
        out += ["", "models:"]
        for m in self.models.values():
            out += [f"  # {_clean(c)}" for c in m.comments]
            out.append(_entry(m.name, m.fields))
        out += ["", "fallback_chains:"]
        for m in self.models.values():
            out.append(_entry(m.name, {"chain": m.chain}))
        out += ["", "routing:"]
        out += [f"  # {_clean(c)}" for c in self.routing_comments]
        for key, value in self.routing.items():
            out.append(f"  {key}: {_flow(value)}")
        return "\n".join(out) + "\n"


_LITELLM_SHAPE = ("a LiteLLM config is a mapping with a 'model_list': a list of "
                  "{model_name, litellm_params: {model: provider/name, ...}}")


def import_litellm(text: str, *, source: str = "<litellm config>") -> ImportResult:
    """LiteLLM config text → routekit YAML (checked by routekit's loader and for cycles)."""
    from ._config.loader import load_config_text
    from ._exceptions import ConfigError
    from ._plan import CompiledGraph

    if len(text.encode("utf-8", "surrogatepass")) > _MAX_BYTES:
        raise LiteLLMImportError(f"{source} is larger than {_MAX_BYTES} bytes")
    try:
        doc = parse_yaml(text)
    except YamlProblem as exc:
        first = exc.issues[0]
        if first.message.startswith(("the config is empty", "the top level must be")):
            what = "empty" if first.message.startswith("the config is empty") else (
                "not a mapping" + (f" (line {first.line})" if first.line else ""))
            raise LiteLLMImportError(f"the file is {what}; {_LITELLM_SHAPE}") from None
        raise LiteLLMImportError(str(exc)) from None
    if doc.duplicates:
        # LiteLLM (PyYAML) would keep the last one silently; refuse to guess, as validate does.
        raise LiteLLMImportError("; ".join(
            f"{_clean(dotted_path(d.path))}: duplicate key on line {d.line} (first written on line "
            f"{d.first_line})" for d in doc.duplicates[:5])
            + (f"; and {len(doc.duplicates) - 5} more" if len(doc.duplicates) > 5 else "")
            + "; remove one (YAML would keep only the last, silently)")
    importer = _Importer(doc.data)
    importer.deployments()
    if not importer.models:
        raise LiteLLMImportError("no deployment could be imported: " + "; ".join(importer.header))
    importer.fallbacks()
    importer.break_cycles()
    importer.settings()
    for budgeted in (False, True):  # the budget is worked out on the loaded config
        rendered = importer.render(source)
        try:
            config = load_config_text(rendered, source="<imported>")
        except ConfigError as exc:  # a bug here, not in the user's file: say so plainly
            raise LiteLLMImportError(f"internal error: the imported config does not load: {exc}")
        if budgeted or not importer.budget(config):
            break
    if CompiledGraph.from_config(config).cycles(limit=1):
        raise LiteLLMImportError("internal error: the imported config has a cycle")
    return ImportResult(rendered, len(config.models), len(config.providers),
                        list(importer.header))


def read_litellm_file(path: str) -> str:
    """The file's text, or a LiteLLMImportError that says why not. Read as ``validate`` reads
    a config: regular files only (a named pipe would block forever), size-capped, UTF-8."""
    from pathlib import Path

    from ._config.loader import read_text_file

    text = read_text_file(Path(path))
    if not isinstance(text, str):
        raise LiteLLMImportError(str(text))
    return text
