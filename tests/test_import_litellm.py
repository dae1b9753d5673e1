"""``routekit import litellm``: LiteLLM proxy/Router configs shaped like LiteLLM's documented
examples become routekit YAML that loads and passes ``routekit validate``; what cannot be
mapped is a comment saying why; secrets are never copied; bad input is one clear message."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from test_cli import EXAMPLES, as_json, routekit  # noqa: E402

from routekit import load_config  # noqa: E402
from routekit._config.loader import load_config_text  # noqa: E402
from routekit._import_litellm import LiteLLMImportError, import_litellm  # noqa: E402

# The proxy quick start: one OpenAI model, its key from the environment.
QUICKSTART = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
litellm_settings:
  drop_params: true
"""

# A load-balanced Router: one model_name, several deployments; rpm/tpm beside
# litellm_params; costs in model_info; Redis, aliases and default fallbacks.
ROUTER = """
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: azure/chatgpt-v-2
      api_base: os.environ/AZURE_API_BASE
      api_key: os.environ/AZURE_API_KEY
      api_version: "2023-07-01-preview"
    tpm: 240000
    rpm: 1800
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: gpt-3.5-turbo
      api_key: os.environ/OPENAI_API_KEY
    tpm: 1000000
    rpm: 9000
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openai/gpt-3.5-turbo
      api_base: https://proxy.example.com/v1
      api_key: os.environ/OTHER_KEY
  - model_name: mixtral
    litellm_params:
      model: together_ai/mistralai/Mixtral-8x7B-Instruct-v0.1
    model_info:
      input_cost_per_token: 0.0000006
      output_cost_per_token: 0.0000006
      max_tokens: 32768
  - model_name: embed
    litellm_params:
      model: openai/text-embedding-3-small
    model_info:
      mode: embedding
router_settings:
  routing_strategy: usage-based-routing-v2
  redis_host: os.environ/REDIS_HOST
  redis_password: os.environ/REDIS_PASSWORD
  model_group_alias: {gpt-4: gpt-3.5-turbo}
  num_retries: 3
  retry_after: 5
  disable_cooldowns: true
litellm_settings:
  default_fallbacks: ["mixtral"]
  content_policy_fallbacks: [{"gpt-3.5-turbo": ["mixtral"]}]
  request_timeout: 600
environment_variables:
  REDIS_HOST: redis.internal
  REDIS_PASSWORD: hunter2-secret
"""

# Local servers only, with fallbacks that form a cycle (fine in LiteLLM, which does not
# follow a fallback's own fallbacks) and a local OpenAI-compatible server.
LOCAL = """
model_list:
  - model_name: "llama3.1:8b"
    litellm_params: {model: "ollama/llama3.1:8b", api_base: "http://127.0.0.1:11434"}
  - model_name: qwen
    litellm_params: {model: hosted_vllm/Qwen/Qwen2.5-7B-Instruct, api_base: "http://gpu-box:8000"}
  - model_name: local-gguf
    litellm_params:
      model: openai/qwen2.5-7b-instruct-q4_k_m
      api_base: http://localhost:8080/v1
      api_key: sk-no-key-required-but-literal
      stop: ["</s>"]
      max_tokens: 512
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet-20240620, api_key: os.environ/ANTHROPIC_API_KEY}
router_settings:
  fallbacks:
    - "llama3.1:8b": [qwen, local-gguf, claude]
    - qwen: ["llama3.1:8b"]
    - local-gguf: [nonexistent]
  allowed_fails: 1
  cooldown_time: 10
general_settings:
  master_key: sk-1234-very-secret
  database_url: postgresql://user:pw@db/litellm
"""

CASES = {"quickstart": QUICKSTART, "router": ROUTER, "local": LOCAL,
         "example": (EXAMPLES / "litellm-proxy.yaml").read_text(encoding="utf-8")}


def _load(text: str):  # type: ignore[no-untyped-def]
    return load_config_text(import_litellm(text).yaml)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_case_imports_and_passes_validate(name: str, tmp_path: Path) -> None:
    src = tmp_path / f"{name}-litellm.yaml"
    src.write_text(CASES[name], encoding="utf-8")
    out = tmp_path / f"{name}-routekit.yaml"
    proc = routekit("import", "litellm", str(src), "-o", str(out), code=0)
    assert proc.stderr.startswith("imported: ")
    data = as_json(routekit("validate", str(out), "--json", code=0))
    assert data["ok"] is True and data["errors"] == []


def test_quickstart_maps_the_key_by_name() -> None:
    config = _load(QUICKSTART)
    assert config.providers["openai"].kind == "openai"
    assert config.providers["openai"].api_key_env == "OPENAI_API_KEY"
    assert config.models["gpt-4o"].provider == "openai"
    assert config.routing.default_model == "gpt-4o"
    text = import_litellm(QUICKSTART).yaml
    assert "litellm_settings: drop_params" in text  # not imported, and said so


def test_router_groups_become_ordered_chains_and_settings_map() -> None:
    result = import_litellm(ROUTER)
    config = load_config_text(result.yaml)
    # azure/ is skipped (its own API); the other two deployments of the group are chained.
    assert list(config.models) == ["gpt-3.5-turbo", "gpt-3.5-turbo-2", "mixtral"]
    assert config.chain_of("gpt-3.5-turbo") == ["gpt-3.5-turbo-2", "mixtral"]
    assert config.providers[config.models["gpt-3.5-turbo-2"].provider].base_url == (
        "https://proxy.example.com/v1")
    together = config.provider_of("mixtral")
    assert (together.base_url, together.api_key_env) == ("https://api.together.xyz/v1",
                                                         "TOGETHERAI_API_KEY")
    mixtral = config.models["mixtral"]
    assert mixtral.model_id == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert mixtral.price.input_per_1k == pytest.approx(0.0006)
    assert mixtral.context_window == 32768
    assert config.routing.retry.max_attempts == 4  # num_retries 3 → 4 attempts
    assert config.routing.timeout.total == 600
    assert config.routing.breaker.enabled is False  # disable_cooldowns
    text = result.yaml
    for said in ("provider 'azure/' speaks its own API", "mode embedding",
                 "rpm: 9000 not imported", "content_policy_fallbacks",
                 "router_settings: model_group_alias, redis_host, redis_password, retry_after,"
                 " routing_strategy", "environment_variables: REDIS_HOST, REDIS_PASSWORD",
                 "LiteLLM balances load across a group's deployments"):
        assert said in text, said
    assert "hunter2" not in text and "redis.internal" not in text


def test_local_servers_cycles_and_secrets() -> None:
    result = import_litellm(LOCAL)
    config = load_config_text(result.yaml)
    assert config.providers["ollama"].effective_base_url == "http://127.0.0.1:11434/v1"
    assert config.provider_of("qwen").base_url == "http://gpu-box:8000/v1"  # /v1 added
    local = config.provider_of("local-gguf")
    assert local.kind == "llama_cpp_server" and local.api_key_env is None
    assert config.models["local-gguf"].defaults == {"stop": ["</s>"], "max_tokens": 512}
    assert "claude" not in config.models  # anthropic/: skipped with a reason
    # qwen → llama3.1:8b would close a cycle with llama3.1:8b → qwen: dropped, and said so.
    assert config.chain_of("llama3.1:8b") == ["qwen", "local-gguf"]
    assert config.chain_of("qwen") == []
    text = result.yaml
    assert "would close the cycle llama3.1:8b → qwen → llama3.1:8b" in text
    assert "'claude' was not imported" in text and "'nonexistent' is not a model_name" in text
    b = config.routing.breaker
    assert (b.mode, b.failure_threshold, b.open_initial, b.open_max, b.open_multiplier) == (
        "consecutive", 2, 10, 10, 1)
    for secret in ("sk-no-key-required-but-literal", "sk-1234-very-secret", "user:pw"):
        assert secret not in text
    assert "api_key was written in the LiteLLM config; it is not copied" in text
    assert "general_settings: database_url, master_key" in text


def test_names_and_values_cannot_break_out_of_comments() -> None:
    text = textwrap.dedent("""
        model_list:
          - model_name: "evil\\nproviders: {x: {kind: ollama}}"
            litellm_params: {model: "ollama/a", api_base: "http://h:1"}
          - model_name: "evil: {x: y} # not a comment"
            litellm_params: {model: "ollama/a: b", api_base: "http://h:1", weird_key: 1}
          - model_name: "it's \\"quoted\\""
            litellm_params: {model: "bedrock/x\\n# injected"}
    """)
    result = import_litellm(text)
    config = load_config_text(result.yaml)
    assert list(config.providers) == ["ollama"]
    # A newline cannot be part of a routekit name: that deployment is skipped, said so on
    # one comment line.
    (name,) = config.models
    assert name == "evil: {x: y} # not a comment"
    assert config.models[name].model_id == "a: b"
    assert any("model_list[0]" in s and "control character" in s for s in result.skipped)
    data = yaml.safe_load(result.yaml)
    assert set(data) == {"providers", "models", "fallback_chains", "routing"}


@pytest.mark.parametrize("content,message", [
    ("model_list: [oops\n", "invalid YAML"),
    ("- a\n- b\n", "mapping"),
    ("general_settings: {master_key: x}\n", "no 'model_list'"),
    ("model_list: []\n", "no 'model_list'"),
    ("model_list:\n  - model_name: b\n    litellm_params: {model: bedrock/anthropic.claude}\n",
     "no deployment could be imported: model_list[0] (b): provider 'bedrock/'"),
])
def test_bad_input_is_one_clear_message(content: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(LiteLLMImportError, match=message.replace("[", r"\[").replace(
            "(", r"\(").replace(")", r"\)")):
        import_litellm(content)
    path = tmp_path / "bad.yaml"
    path.write_text(content, encoding="utf-8")
    proc = routekit("import", "litellm", str(path), code=1)
    assert proc.stdout == "" and proc.stderr.startswith(f"error: cannot import {path}: ")


def test_cli_files_missing_binary_and_overwrite(tmp_path: Path) -> None:
    assert "no such file" in routekit("import", "litellm", str(tmp_path / "x.yaml"),
                                      code=1).stderr
    assert "is a directory" in routekit("import", "litellm", str(tmp_path), code=1).stderr
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"model_list:\n  - \xff\xfe\n")
    assert "not valid UTF-8" in routekit("import", "litellm", str(binary), code=1).stderr
    src = tmp_path / "ok.yaml"
    src.write_text(QUICKSTART, encoding="utf-8")
    out = tmp_path / "out.yaml"
    out.write_text("keep me", encoding="utf-8")
    proc = routekit("import", "litellm", str(src), "-o", str(out), code=1)
    assert "exists; add --force" in proc.stderr and out.read_text() == "keep me"
    routekit("import", "litellm", str(src), "-o", str(out), "--force", code=0)
    assert load_config(out).models["gpt-4o"].provider == "openai"
    # stdout carries only YAML, so `> file` works
    printed = routekit("import", "litellm", str(src), code=0).stdout
    assert load_config_text(printed).routing.default_model == "gpt-4o"
    assert "usage: routekit import" in routekit("import", code=2).stderr


@pytest.mark.parametrize("content,expected", [
    ("model_list:\n  - model_name: a\n    litellm_params: {model: ollama/x}\n"
     "model_list:\n  - model_name: b\n    litellm_params: {model: ollama/y}\n",
     "model_list: duplicate key on line 4 (first written on line 1)"),
    ("model_list:\n  - model_name: a\n    model_name: b\n"
     "    litellm_params: {model: ollama/x, model: ollama/y}\n",
     "model_list[0].model_name: duplicate key on line 3 (first written on line 2); "
     "model_list[0].litellm_params.model: duplicate key on line 4"),
])
def test_duplicate_keys_are_refused_naming_key_and_line(content: str, expected: str) -> None:
    with pytest.raises(LiteLLMImportError) as info:
        import_litellm(content)
    assert expected in str(info.value)


def test_values_of_the_wrong_type_are_said_not_imported() -> None:
    result = import_litellm(textwrap.dedent("""
        model_list:
          - model_name: a
            litellm_params: {model: ollama/x, timeout: "30", max_parallel_requests: "4",
                             input_cost_per_token: "0.000001", output_cost_per_token: .inf,
                             temperature: {x: 1}}
            model_info: {max_input_tokens: "8192"}
          - model_name: b
            litellm_params: {model: ollama/y, timeout: .nan, max_parallel_requests: 0}
        router_settings:
          num_retries: "3"
          allowed_fails: "2"
          cooldown_time: .inf
          timeout: -5
          default_fallbacks: notalist
          disable_cooldowns: "yes"
    """))
    skipped = "\n".join(result.skipped)
    for said in ('model_list[0] (a): timeout "30"', 'model_list[0] (a): max_parallel_requests "4"',
                 'model_list[0] (a): input_cost_per_token "0.000001"',
                 "model_list[0] (a): output_cost_per_token .inf",
                 "model_list[0] (a): temperature {x: 1}",
                 'model_list[0] (a): model_info.max_input_tokens "8192"',
                 "model_list[1] (b): timeout .nan", "model_list[1] (b): max_parallel_requests 0",
                 'num_retries: "3"', 'allowed_fails: "2"', "cooldown_time: .inf", "timeout: -5",
                 'default_fallbacks: "notalist"', 'disable_cooldowns: "yes"'):
        assert said in skipped, said
        assert said in result.yaml, said  # and written as a comment
    assert len(result.skipped) == 14
    config = load_config_text(result.yaml)
    assert config.providers["ollama"].timeout is None
    assert config.models["a"].price.output_per_1k == 0 and not config.models["a"].defaults
    assert config.routing.retry.max_attempts == 2  # the default: nothing was imported


def test_num_retries_past_routekits_cap_is_noted() -> None:
    result = import_litellm("model_list:\n  - model_name: a\n    litellm_params: {model: ollama/x}\n"
                            "router_settings: {num_retries: 1000}\n")
    assert load_config_text(result.yaml).routing.retry.max_attempts == 20
    assert "num_retries: 1000 → max_attempts 20, the most routekit allows" in result.yaml


def test_credentials_in_api_base_are_not_copied() -> None:
    secret = "sk-SECRETSECRETSECRET"
    result = import_litellm(textwrap.dedent(f"""
        model_list:
          - model_name: a
            litellm_params: {{model: openai/gpt-4o, api_base: 'https://u:{secret}@api.example.com'}}
          - model_name: b
            litellm_params: {{model: openai/gpt-4o, api_key: os.environ/gsk_SECRETSECRETSECRET123456}}
    """))
    assert "SECRET" not in result.yaml and "u:" not in result.yaml
    config = load_config_text(result.yaml)
    assert config.providers[config.models["a"].provider].base_url == "https://api.example.com/v1"
    assert config.providers[config.models["b"].provider].api_key_env == "OPENAI_API_KEY"
    assert "api_base carried credentials (user:password@); they are not copied" in result.yaml


@pytest.mark.parametrize("api_base,why", [
    ("1234", "api_base 1234 is not a URL"),
    ("'not a url'", "api_base must be a URL like"),
    ("'http://[::1'", "api_base is not a valid URL"),
    ("'ftp://host/v1'", "api_base must start with http:// or https://"),
])
def test_deployment_with_an_unusable_api_base_is_skipped(api_base: str, why: str) -> None:
    result = import_litellm("model_list:\n"
                            f"  - model_name: a\n    litellm_params: {{model: openai/gpt, api_base: {api_base}}}\n"
                            "  - model_name: b\n    litellm_params: {model: ollama/x}\n")
    assert list(load_config_text(result.yaml).models) == ["b"]
    assert any(s.startswith("model_list[0] (a): ") and why in s for s in result.skipped)


def test_empty_file_and_fifo_are_clear_errors(tmp_path: Path) -> None:
    import os

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n", encoding="utf-8")
    proc = routekit("import", "litellm", str(empty), code=1)
    assert proc.stderr.startswith(f"error: cannot import {empty}: the file is empty; a LiteLLM "
                                  "config is a mapping with a 'model_list'")
    assert proc.stderr.count(str(empty)) == 1 and "fallback_chains" not in proc.stderr
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    proc = routekit("import", "litellm", str(fifo), code=1, timeout=20)
    assert "is not a regular file" in proc.stderr


def test_a_made_up_name_never_takes_a_model_name_the_file_uses() -> None:
    # Two deployments of gpt-4o, then a group really named gpt-4o-2: the second gpt-4o
    # deployment was named gpt-4o-2, and the app's gpt-4o-2 was sent to Groq's Llama.
    text = """
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}
  - model_name: gpt-4o
    litellm_params: {model: groq/llama-3.3-70b-versatile, api_key: os.environ/GROQ_API_KEY}
  - model_name: gpt-4o-2
    litellm_params: {model: openai/gpt-4o-2024-08-06, api_key: os.environ/OPENAI_API_KEY}
"""
    config = _load(text)
    assert config.models["gpt-4o-2"].model_id == "gpt-4o-2024-08-06"
    assert config.provider_of("gpt-4o-2").kind == "openai"
    spare = config.chain_of("gpt-4o")[0]
    assert spare not in ("gpt-4o", "gpt-4o-2")
    assert config.models[spare].model_id == "llama-3.3-70b-versatile"


def test_settings_in_both_sections_are_taken_or_said() -> None:
    text = """
model_list:
  - {model_name: a, litellm_params: {model: ollama/a}}
  - {model_name: b, litellm_params: {model: ollama/b}}
  - {model_name: c, litellm_params: {model: ollama/c}}
router_settings: {fallbacks: [{a: [b]}], num_retries: 1}
litellm_settings: {fallbacks: [{c: [a]}], num_retries: 5}
"""
    result = import_litellm(text)
    config = load_config_text(result.yaml)
    assert config.chain_of("a") == ["b"] and config.chain_of("c") == ["a"]  # both rules
    assert config.routing.retry.max_attempts == 2  # router_settings' num_retries 1
    assert "litellm_settings.num_retries 5: router_settings.num_retries (1)" in result.yaml


def test_defaults_routekit_would_refuse_are_not_copied() -> None:
    text = """
model_list:
  - model_name: a
    litellm_params: {model: ollama/a, temperature: "0.2", top_p: -1, stop: 7, seed: 1.5,
                     max_tokens: 64}
"""
    result = import_litellm(text)
    config = load_config_text(result.yaml)
    assert config.models["a"].defaults == {"max_tokens": 64}
    for said in ('temperature "0.2": must be a number from 0 to 2',
                 "top_p -1: must be a number from 0 to 1", "stop 7: must be text",
                 "seed 1.5: must be a whole number"):
        assert said in result.yaml, said
