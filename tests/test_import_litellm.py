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


# -- timeouts: each deployment keeps its own, and the request budget fits them all ---------

TIMEOUTS = """
model_list:
  - model_name: small
    litellm_params: {model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}
  - model_name: big
    litellm_params: {model: openai/o1, api_key: os.environ/OPENAI_API_KEY, timeout: 600}
router_settings:
  fallbacks: [{big: [small]}]
"""


def _answer(config, script: dict[str, list]):  # type: ignore[no-untyped-def]
    """Ask for ``big`` on fake servers (fake time) where each model plays its ``script`` of
    FakeReplies, then answers at once: (the answering attempt, seconds taken, each call's
    (model, deadline) in order)."""
    from routekit import Router
    from routekit.testing import FakeClock, FakeProvider, FakeReply

    def play(request):  # type: ignore[no-untyped-def]
        left = script.get(request.model)
        return left.pop(0) if left else FakeReply(text=request.model)

    clock = FakeClock()
    providers = {name: FakeProvider(name, kind=p.kind, clock=clock, default=play)
                 for name, p in config.providers.items()}
    router = Router(config, clock=clock, health_probes=False, providers=providers)
    start = clock.now()
    reply = router.chat.completions.create(model="big", messages=[{"role": "user", "content": "hi"}])
    calls = sorted((c.at, c.request.model, c.deadline) for p in providers.values() for c in p.calls)
    return reply.route.answered_by, clock.now() - start, [(m, d) for _, m, d in calls]


def test_a_deployment_timeout_takes_effect_and_stays_with_its_deployment() -> None:
    from routekit.testing import FakeReply

    result = import_litellm(TIMEOUTS)
    config = load_config_text(result.yaml)
    # o1 may take 500 s, as LiteLLM lets it (it was cut at the 120 s default budget).
    answered, took, _ = _answer(config, {"big": [FakeReply(delay=500)]})
    assert (answered.model, took) == ("big", 500)
    # Hung: cut at its own 600 s, then the fallback gets its own (default) 120 s, not 600.
    answered, took, calls = _answer(config, {"big": [FakeReply(delay=3600)],
                                             "small": [FakeReply(delay=100)]})
    assert (answered.model, took) == ("small", 700)
    assert [(m, d.total) for m, d in calls] == [("big", 600), ("small", 120)]
    assert config.provider_of("big").timeout.total == 600  # type: ignore[union-attr]
    assert config.provider_of("small").timeout is None
    assert "the endpoint of 'openai' again, for 'big' (timeout 600 s)" in result.yaml
    assert "deadline: " in result.yaml and "so that no attempt is cut short" in result.yaml
    assert "get routekit's 120 s per attempt" in result.yaml  # small's, said


def test_a_retry_with_fallbacks_after_it_may_wait_its_whole_timeout() -> None:
    # big fails after 590 s (a 500), and its retry answers after 550 s: LiteLLM waits for it.
    from routekit._exceptions import ServerError
    from routekit.testing import FakeReply

    text = TIMEOUTS.replace("gpt-4o-mini, ", "gpt-4o-mini, timeout: 10, ") + "  num_retries: 1\n"
    result = import_litellm(text)
    config = load_config_text(result.yaml)
    failed = ServerError("busy", status_code=500)
    answered, took, calls = _answer(config, {"big": [FakeReply(delay=590, error=failed),
                                                     FakeReply(delay=550)]})
    assert answered.model == "big" and took == pytest.approx(1140, abs=3)  # + the retry wait
    assert config.routing.first_byte_share == 1
    assert "first_byte_share: 1, so that a model with fallbacks may wait" in result.yaml


def test_the_budget_fits_every_retry_and_fallback_at_its_whole_timeout() -> None:
    # The shipped example: gpt-4o 300 s, router_settings.timeout 60 s, 3 tries each.
    config = load_config_text(import_litellm(CASES["example"]).yaml)
    assert config.provider_of("gpt-4o").timeout.total == 300  # type: ignore[union-attr]
    assert config.provider_of("gpt-4o-mini").timeout is None  # the router's 60 s
    assert config.routing.timeout.total == 60
    r = config.routing
    wait = max(r.retry.backoff_max, r.retry.retry_after_cap) + r.retry.jitter
    # gpt-4o, then gpt-4o-mini and llama-70b-groq: 3 tries each, every one timing out.
    assert r.deadline is not None and r.deadline >= 3 * 300 + 6 * 60 + 6 * wait
    assert r.first_byte_share * (r.deadline - 2 * (300 + wait)) >= 300  # 3rd try: uncut


def test_a_local_servers_first_byte_limit_is_said_within_a_long_timeout() -> None:
    result = import_litellm("model_list:\n"
                            "  - {model_name: a, litellm_params: {model: ollama/a, timeout: 600}}\n")
    assert "routekit's 10 s for a local server's first byte still applies" in result.yaml
    assert load_config_text(result.yaml).provider_of("a").timeout.total == 600  # type: ignore[union-attr]


def test_no_timeout_in_the_file_leaves_routekits_budget() -> None:
    config = _load(QUICKSTART)
    assert config.routing.deadline is None and config.routing.first_byte_share == 0.5


# Plain scalars YAML (or routekit's loader, which reads 1e3 as a number and refuses 08, 010
# and 1:30 rather than guess) would not read back as the same text.
AWKWARD = ["1e3", "08", "010", "0:30", "1:30", "-08", "1_000", "-1e-3", "+1", ".5", "1E3",
           "5e-2", "0x1F", "0o17", "0b101", "1.0", ".inf", ".NaN", "null", "~", "true", "yes",
           "on", "2024-01-01", "0", "=", "<<", "'q'", 'a "b"', "a: b", "a #b", "#x", "@x",
           "`x", "- x", "? x", "%x", "!x", "&x", "[x]", "{x}", "x,y", "|", ">", " x", "x "]


def test_awkward_names_and_ids_round_trip() -> None:
    import json

    # JSON is YAML: every name is a quoted string in the LiteLLM file.
    data = {"model_list": [{"model_name": name, "litellm_params": {"model": f"ollama/{name}"}}
                           for name in AWKWARD]
            + [{"model_name": f"id-{i}", "litellm_params": {"model": f"ollama/{name}"}}
               for i, name in enumerate(AWKWARD)],
            "router_settings": {"fallbacks": [{AWKWARD[0]: AWKWARD[1:]}]}}
    result = import_litellm(json.dumps(data))
    assert result.skipped == []
    config = load_config_text(result.yaml)
    assert list(config.models)[:len(AWKWARD)] == AWKWARD
    assert all(config.models[name].model_id is None for name in AWKWARD)  # its own name
    assert [config.models[f"id-{i}"].model_id for i in range(len(AWKWARD))] == AWKWARD
    assert config.chain_of(AWKWARD[0]) == AWKWARD[1:]
    assert config.routing.default_model == AWKWARD[0]


def test_a_key_in_an_api_base_path_is_not_copied() -> None:
    key = "sk-proj-RRRRRRRRRRRRRRRRRRRRRRRRRRRRRR"
    result = import_litellm(textwrap.dedent(f"""
        model_list:
          - model_name: c
            litellm_params: {{model: openai/x, api_base: "https://api.example.com/{key}/v1"}}
          - model_name: runpod
            litellm_params: {{model: openai/x, api_base: "https://api.runpod.ai/v2/abc123xyz/openai/v1"}}
    """))
    assert "RRRR" not in result.yaml and not any("RRRR" in s for s in result.skipped)
    config = load_config_text(result.yaml)
    assert list(config.models) == ["runpod"]  # an ID in a path is not a key
    assert config.provider_of("runpod").base_url == "https://api.runpod.ai/v2/abc123xyz/openai/v1"
    assert any(s.startswith("model_list[0] (c): api_base has what looks like an API key in it "
                            "(not shown); it is not copied") for s in result.skipped)


@pytest.mark.parametrize("router,litellm,said,check", [
    ("num_retries: true", "num_retries: 5",
     "router_settings.num_retries true: expected a whole number from 0 to 1,000,000,000; "
     "litellm_settings.num_retries (5) is the one imported",
     lambda r: r.retry.max_attempts == 6),
    ("timeout: .nan", "timeout: 30",
     "router_settings.timeout .nan: expected seconds, more than 0 and at most 31536000; "
     "litellm_settings.timeout (30) is the one imported",
     lambda r: r.timeout.total == 30),
    ("allowed_fails: -1", "allowed_fails: 2", "litellm_settings.allowed_fails (2) is the one",
     lambda r: r.breaker.failure_threshold == 3),
    ("cooldown_time: '5'", "cooldown_time: 5", "litellm_settings.cooldown_time (5) is the one",
     lambda r: r.breaker.open_initial == 5),
    ("disable_cooldowns: 'yes'", "disable_cooldowns: true",
     "router_settings.disable_cooldowns \"yes\": expected true or false; "
     "litellm_settings.disable_cooldowns (true) is the one imported",
     lambda r: r.breaker.enabled is False),
    ("timeout: -1", "request_timeout: 45", "timeout: -1: expected seconds",
     lambda r: r.timeout.total == 45),
])
def test_a_valid_setting_is_taken_when_the_other_section_has_an_invalid_one(
        router: str, litellm: str, said: str, check) -> None:  # type: ignore[no-untyped-def]
    result = import_litellm("model_list:\n  - {model_name: a, litellm_params: {model: ollama/a}}\n"
                            f"router_settings: {{{router}}}\nlitellm_settings: {{{litellm}}}\n")
    assert check(load_config_text(result.yaml).routing)
    assert any(said in s for s in result.skipped), result.skipped
    assert len(result.skipped) == 1, result.skipped  # said once


def test_an_empty_output_name_is_a_usage_error(tmp_path: Path) -> None:
    src = tmp_path / "ok.yaml"
    src.write_text(QUICKSTART, encoding="utf-8")
    for args in (["-o", ""], ["--output="]):
        proc = routekit("import", "litellm", str(src), *args, code=2)
        assert proc.stdout == ""  # no YAML on stdout: an empty -o is not "stdout"
        assert proc.stderr.startswith("error: the output path is empty")
