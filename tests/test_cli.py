"""The ``routekit`` command end to end, run as a real subprocess (``python -m routekit``).

HTTP hops are closed loopback ports or a FaultServer; the in-process hop is the real gemma
GGUF. Every run is bounded by a timeout and must never print a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import fast_retry, http_provider, routekit_path
from faultserver import FaultServer, closed_port
from llama_server import default_model_path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def routekit(*args: str, env: dict[str, str] | None = None, timeout: float = 60,
             code: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m routekit ARGS``; ``$ROUTEKIT_CONFIG`` is unset unless ``env`` sets it."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("ROUTEKIT_CONFIG", "ROUTEKIT_DEBUG", "COLUMNS")}
    base["PYTHONPATH"] = os.pathsep.join(
        p for p in (routekit_path(), os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "routekit", *args], capture_output=True,
                          text=True, encoding="utf-8", env={**base, **(env or {})},
                          timeout=timeout, cwd=ROOT)
    both = proc.stdout + proc.stderr
    assert "Traceback" not in both, both
    if code is not None:
        assert proc.returncode == code, both
    return proc


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON on stdout:\n{proc.stdout}\n--- stderr:\n{proc.stderr}")


def write(tmp_path: Path, config: dict[str, Any], name: str = "routekit.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def dead() -> str:
    return f"http://127.0.0.1:{closed_port()}/v1"


def chat_config(gemma: Path | None) -> dict[str, Any]:
    """m0 (vllm) → m1 (ollama) on refused ports, then the in-process gemma when given."""
    providers = {"p0": http_provider(dead()), "p1": http_provider(dead(), kind="ollama")}
    models: dict[str, Any] = {"m0": {"provider": "p0", "model_id": "model-0"},
                              "m1": {"provider": "p1", "model_id": "model-1"}}
    if gemma is not None:
        providers["local"] = {"kind": "llama_cpp"}
        models["gemma"] = {"provider": "local", "path": str(gemma), "chat_format": "gemma",
                           "n_ctx": 512, "n_threads": 1}
    return {"providers": providers, "models": models,
            "fallback_chains": {"m0": {"chain": list(models)[1:]}},
            "routing": {"default_model": "m0", **fast_retry()}}


# ---------------------------------------------------------------- validate: the examples

@pytest.mark.parametrize("name,code", [("seed", 1), ("v1.7-single-terminal", 0),
                                       ("multi-terminal", 0), ("laptop", 0)])
def test_validate_examples_exit_codes(name: str, code: int) -> None:
    proc = routekit("validate", str(EXAMPLES / f"{name}.yaml"), code=code)
    assert ("invalid:" if code else "ok:") in proc.stdout
    assert "entry models" in proc.stdout and "terminal-provider entropy" in proc.stdout


def test_validate_seed_prints_the_cycle_as_a_path() -> None:
    proc = routekit("validate", str(EXAMPLES / "seed.yaml"), code=1)
    # One line, not hard-wrapped at 80 columns, with its code in brackets (not eaten as markup).
    assert ("error [cycle] cycle: gpt-oss:20b-cloud → llama-cpp-default → gpt-oss:20b-cloud"
            in proc.stdout.splitlines())
    assert "note [inferred] legacy layout" in proc.stdout


def test_validate_single_terminal_warns_and_strict_fails() -> None:
    path = str(EXAMPLES / "v1.7-single-terminal.yaml")
    proc = routekit("validate", path, code=0)
    assert ("warning [single-terminal-provider] every chain ends on provider 'ollama'"
            in proc.stdout)
    assert "0.000 bits" in proc.stdout
    strict = routekit("validate", path, "--strict", code=1)
    assert "invalid:" in strict.stdout
    data = as_json(routekit("validate", path, "--strict", "--json", code=1))
    assert data["ok"] is False and data["errors"] == []
    assert "single-terminal-provider" in [w["code"] for w in data["warnings"]]


@pytest.mark.parametrize("name", ["seed", "v1.7-single-terminal", "multi-terminal", "laptop"])
def test_validate_json_figures(name: str) -> None:
    proc = routekit("validate", str(EXAMPLES / f"{name}.yaml"), "--json")
    data = as_json(proc)
    fig = data["figures"]
    assert data["ok"] is (proc.returncode == 0) and data["ok"] is (name != "seed")
    assert set(fig["availability"]) == set(fig["plans"]) and len(fig["plans"]) == fig["models"]
    assert all(0 < a <= 1 for a in fig["availability"].values())
    diversity = fig["provider_diversity_by_position"]
    assert diversity and all(1 <= n <= fig["providers"] for n in diversity)
    assert fig["longest_path_hops"] == len(fig["longest_path"]) - 1 >= 1
    assert fig["terminal_entropy_bits"] >= 0
    if name == "seed":
        assert fig["cycles"] == ["gpt-oss:20b-cloud → llama-cpp-default → gpt-oss:20b-cloud"]
        assert [e["code"] for e in data["errors"]] == ["cycle"]
    else:
        assert fig["cycles"] == []


def test_validate_json_entropy_and_availability_figures() -> None:
    single = as_json(routekit("validate", str(EXAMPLES / "v1.7-single-terminal.yaml"), "--json"))
    multi = as_json(routekit("validate", str(EXAMPLES / "multi-terminal.yaml"), "--json"))
    assert single["figures"]["terminal_entropy_bits"] == 0
    assert set(single["figures"]["terminal_provider"].values()) == {"ollama"}
    assert multi["figures"]["terminal_entropy_bits"] > 1
    # Correlated failure: a chain that stays on Ollama is exactly as available as Ollama.
    assert single["figures"]["availability"]["phi3:mini"] == pytest.approx(0.99)
    assert single["figures"]["availability"]["llama3.1-8b-vllm"] == pytest.approx(
        1 - 0.01 * 0.05)


def test_validate_shows_nines_downtime_and_tiers() -> None:
    proc = routekit("validate", str(EXAMPLES / "multi-terminal.yaml"), code=0,
                    env={"COLUMNS": "80"})
    row = next(line for line in proc.stdout.splitlines() if line.startswith("│ qwen2.5:7b "))
    # 1 − 0.01·0.05·0.05·0.001: shown in full at 80 columns, never rounded to "1".
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells == ["qwen2.5:7b", "local", "cloud", "0.999999975", "7.6", "0.789 s"]
    assert ("  qwen2.5:7b: qwen2.5:7b → qwen2.5-14b-vllm → gemma3-270m → gpt-oss:20b-cloud"
            in proc.stdout.splitlines())
    assert "local-tier-reaches-cloud" not in proc.stdout  # the example keeps cloud last
    entry = as_json(routekit("validate", str(EXAMPLES / "multi-terminal.yaml"), "--json"))[
        "figures"]["entries"]["gpt-oss:120b-cloud"]
    assert entry["tier"] == "cloud_entry" and entry["availability_text"] == "0.999999975"
    assert entry["nines"] == 7.6 and entry["downtime_per_year_s"] == pytest.approx(0.789, rel=1e-3)


# ---------------------------------------------------------------- validate: bad input

BAD_INPUT = {
    "malformed": (b"fallback_chains:\n  a: {chain: [b]\n", "invalid YAML"),
    "bomb": (b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
        b"%c: &%c [%s]\n" % (c, c, b", ".join([b"*%c" % (c - 1)] * 9))
        for c in range(ord("b"), ord("k"))), "YAML bomb"),
    "unknown-key": (b"fallback_chains:\n  a: {chain: []}\nbogus: 1\n",
                    "bogus: unknown field 'bogus' (line 3)"),
    "typo": (b"providers:\n  o: {kind: ollama}\nmodels:\n  llama-cpp-default: {provider: o}\n"
             b"  x: {provider: o}\nfallback_chains:\n  x: {chain: [llama-cpp-defualt]}\n",
             "fallback_chains[\"x\"].chain[0]: unknown model 'llama-cpp-defualt' (line 7); "
             "did you mean 'llama-cpp-default'?"),
    "latin1": (b"fallback_chains:\n  caf\xe9: {chain: []}\n", "not valid UTF-8"),
    "empty": (b"", "empty"),
    "markup": (b"fallback_chains:\n  a: {chain: []}\n'[/x]': 1\n", "unknown field '[/x]'"),
    # Values that used to pass validate and then crash it, or a later command.
    "mtbf-inf": (b"providers:\n  o: {kind: ollama, mtbf_hours: .inf, mttr_hours: 1}\nmodels:\n"
                 b"  a: {provider: o}\n",
                 'providers["o"].mtbf_hours: expected a finite number, got inf (line 2)'),
    "set-chain": (b"providers:\n  o: {kind: ollama}\nmodels:\n  a: {provider: o}\n"
                  b"fallback_chains:\n  a: {chain: !!set {zzz}}\n",
                  'fallback_chains["a"].chain: expected a list, got a set (!!set) (line 6)'),
    "binary-provider": (b"providers:\n  o: {kind: ollama}\nmodels:\n"
                        b"  a: {provider: !!binary bm9wZQ==}\n",
                        'models["a"].provider: expected a string, got binary data'),
    "ipv6-base-url": (b"providers:\n  o: {kind: ollama, base_url: 'http://[::1'}\nmodels:\n"
                      b"  a: {provider: o}\n", 'providers["o"].base_url: is not a valid URL'),
    "key-as-kind": (b"providers:\n  o: {kind: sk-proj-SECRETSECRETSECRET123}\nmodels:\n"
                    b"  a: {provider: o}\n", "got a string that looks like an API key (not shown)"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_validate_bad_input_is_one_clear_message(case: str, tmp_path: Path) -> None:
    content, expected = BAD_INPUT[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(content)
    proc = routekit("validate", str(path), code=1)
    assert proc.stderr.startswith(f"error: invalid config {path}: 1 problem(s)")
    assert expected in proc.stderr and proc.stdout == ""
    assert "SECRET" not in proc.stderr
    data = as_json(routekit("validate", str(path), "--json", code=1))
    assert data["ok"] is False and len(data["errors"]) == 1
    if case == "typo":
        assert data["errors"][0] == {
            "path": 'fallback_chains["x"].chain[0]', "line": 7,
            "message": "unknown model 'llama-cpp-defualt'; did you mean 'llama-cpp-default'?"}


def test_configs_validate_refuses_never_reach_other_commands(tmp_path: Path) -> None:
    """graph, health and chat load through the same checks: a clean error, no traceback."""
    for case, args in (("set-chain", ["graph"]), ("binary-provider", ["graph"]),
                       ("ipv6-base-url", ["health", "--config"]),
                       ("ipv6-base-url", ["chat", "hi", "--config"])):
        path = tmp_path / f"{case}.yaml"
        path.write_bytes(BAD_INPUT[case][0])
        proc = routekit(*args, str(path), code=1)
        assert BAD_INPUT[case][1] in proc.stderr


def test_validate_missing_file_and_directory(tmp_path: Path) -> None:
    missing = routekit("validate", str(tmp_path / "nope.yaml"), code=1)
    assert f"{tmp_path / 'nope.yaml'}: no such file" in missing.stderr
    folder = routekit("validate", str(tmp_path), code=1)
    assert "is a directory, expected a YAML file" in folder.stderr
    data = as_json(routekit("validate", str(tmp_path / "nope.yaml"), "--json", code=1))
    assert "no such file" in data["errors"][0]["message"]


def test_validate_names_with_brackets_are_printed_literally(tmp_path: Path) -> None:
    path = write(tmp_path, {"fallback_chains": {"[/x]": {"chain": ["[bold]a"]},
                                                "[bold]a": {"chain": []}}})
    proc = routekit("validate", str(path), code=0)
    assert "chain of '[/x]' stays on provider" in proc.stdout
    assert "[bold]a" in proc.stdout


# ---------------------------------------------------------------- chat

@pytest.mark.slow
def test_chat_falls_through_refused_ports_to_in_process(gemma_path: Path,
                                                        tmp_path: Path) -> None:
    path = write(tmp_path, chat_config(gemma_path))
    proc = routekit("chat", "Say hi.", "--config", str(path), "--max-tokens", "4",
                    timeout=180, code=0)
    assert proc.stdout.strip(), proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("route for 'm0': answered by gemma (local)") for line in lines)
    assert any(line.startswith("  1. m0 via p0 (vllm): error — ConnectionFailed: ")
               for line in lines), proc.stderr
    assert any(line.startswith("  2. m1 via p1 (ollama): error — ConnectionFailed: ")
               for line in lines), proc.stderr
    assert any(line.startswith("  3. gemma via local (llama_cpp): ok") for line in lines)


@pytest.mark.slow
def test_chat_json_carries_content_and_route(gemma_path: Path, tmp_path: Path) -> None:
    path = write(tmp_path, chat_config(gemma_path))
    data = as_json(routekit("chat", "Say hi.", "--config", str(path), "--max-tokens", "4",
                            "--json", timeout=180, code=0))
    assert data["ok"] is True and data["content"].strip()
    route = data["route"]
    assert route["requested"] == "m0" and route["answered_by"] == "gemma"
    *failed, last = route["attempts"]
    assert [a["model"] for a in failed] == ["m0", "m1"]
    assert all(a["outcome"] == "error" and a["error_type"] == "ConnectionFailed"
               for a in failed)
    assert last["model"] == "gemma" and last["outcome"] == "ok" and last["error_type"] is None


@pytest.mark.slow
def test_chat_stream_prints_text_then_route(gemma_path: Path, tmp_path: Path) -> None:
    path = write(tmp_path, chat_config(gemma_path))
    proc = routekit("chat", "Say hi.", "--config", str(path), "--max-tokens", "4", "--stream",
                    timeout=180, code=0)
    assert proc.stdout.strip()
    line = next(x for x in proc.stderr.splitlines() if x.startswith("  3. gemma via local"))
    assert ": ok [ttfb " in line  # a stream records its time to first token


@pytest.mark.slow
def test_chat_uses_routekit_config_env(gemma_path: Path, tmp_path: Path) -> None:
    path = write(tmp_path, chat_config(gemma_path), name="from-env.yaml")
    data = as_json(routekit("chat", "Say hi.", "--max-tokens", "4", "--json", "--stream",
                            env={"ROUTEKIT_CONFIG": str(path)}, timeout=180, code=0))
    assert data["content"].strip()
    assert data["route"]["requested"] == "m0" and data["route"]["answered_by"] == "gemma"
    assert [a["outcome"] for a in data["route"]["attempts"]] == ["error", "error", "ok"]


@pytest.mark.slow
def test_chat_says_plainly_when_the_built_in_base_model_answered(tmp_path: Path) -> None:
    from routekit._config.default import DEFAULT_CONFIG

    config = {"providers": {"p0": http_provider(dead()), "local": {"kind": "llama_cpp"}},
              "models": {"m0": {"provider": "p0"},
                         "gemma3-270m": DEFAULT_CONFIG["models"]["gemma3-270m"]},
              "fallback_chains": {"m0": {"chain": ["gemma3-270m"]}},
              "routing": {"default_model": "m0", **fast_retry()}}
    path = write(tmp_path, config)
    proc = routekit("chat", "What is the capital of France?", "--config", str(path),
                    timeout=180, code=0)
    # The tuned defaults: a short answer that stops by itself, not the prompt echoed back.
    assert "Paris" in proc.stdout and "capital of France" not in proc.stdout
    note = next(ln for ln in proc.stderr.splitlines() if ln.startswith("note: "))
    assert "base model (not instruction-tuned): it keeps your app answering, not answering "\
        "well" in note and "instruct GGUF" in note
    data = as_json(routekit("chat", "Say hello.", "--config", str(path), "--json",
                            timeout=180, code=0))
    assert "not answering well" in data["note"]
    # Any other model answering: no note.
    other = write(tmp_path, chat_config(default_model_path()), name="other.yaml")
    assert "note" not in as_json(routekit("chat", "hi", "--config", str(other), "--json",
                                          "--max-tokens", "4", timeout=180, code=0))


def test_examples_give_the_base_model_its_measured_defaults() -> None:
    from routekit import load_config
    from routekit._config.default import BASE_MODEL_DEFAULTS, BASE_MODEL_FORMAT, DEFAULT_CONFIG

    assert DEFAULT_CONFIG["models"]["gemma3-270m"]["defaults"] == BASE_MODEL_DEFAULTS
    for name in ("laptop", "multi-terminal"):
        config = load_config(EXAMPLES / f"{name}.yaml")
        packaged = [m for m in config.models.values() if m.package]
        assert packaged and all(m.chat_format == BASE_MODEL_FORMAT
                                and m.defaults == BASE_MODEL_DEFAULTS for m in packaged)


def test_chat_unknown_model_fails_fast_with_did_you_mean(gemma_path: Path,
                                                         tmp_path: Path) -> None:
    path = write(tmp_path, chat_config(gemma_path))
    proc = routekit("chat", "hi", "--config", str(path), "--model", "gema", code=1)
    assert proc.stderr.strip() == "NoRouteError: unknown model 'gema'; did you mean 'gemma'?"
    data = as_json(routekit("chat", "hi", "--config", str(path), "--model", "gema", "--json",
                            code=1))
    assert data["error"] == "NoRouteError" and "did you mean 'gemma'" in data["message"]


def test_chat_all_candidates_dead(tmp_path: Path) -> None:
    path = write(tmp_path, chat_config(None))
    proc = routekit("chat", "hi", "--config", str(path), code=1)
    assert proc.stderr.startswith("AllCandidatesFailed: all 2 attempt(s) for model 'm0' failed:")
    for hop in ("m0 via p0 (vllm): error — ConnectionFailed",
                "m1 via p1 (ollama): error — ConnectionFailed"):
        assert f"  - {hop}" in proc.stderr
    data = as_json(routekit("chat", "hi", "--config", str(path), "--json", code=1))
    assert data["ok"] is False and data["error"] == "AllCandidatesFailed"
    assert [a["outcome"] for a in data["route"]["attempts"]] == ["error", "error"]


def test_chat_argument_errors(tmp_path: Path) -> None:
    config = chat_config(None)
    del config["routing"]["default_model"]
    path = write(tmp_path, config)
    proc = routekit("chat", "hi", "--config", str(path), code=2)
    assert "no --model given" in proc.stderr
    data = as_json(routekit("chat", "hi", "--config", str(path), "--json", code=2))
    assert data["ok"] is False and "no --model given" in data["message"]
    # --model "" is a name (no model's), not a request for the default.
    proc = routekit("chat", "hi", "--config", str(write(tmp_path, chat_config(None), "d.yaml")),
                    "--model", "", code=1)
    assert proc.stderr.startswith("NoRouteError: unknown model ''"), proc.stderr
    # llama.cpp reads max_tokens <= 0 as "until the context is full": refuse it up front.
    for bad in ("0", "-3", "x"):
        proc = routekit("chat", "hi", "--config", str(path), "--max-tokens", bad, code=2)
        assert "--max-tokens" in proc.stderr
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("fallback_chains: [oops\n")
    proc = routekit("chat", "hi", "--config", str(bad_config), code=1)
    assert "invalid YAML" in proc.stderr


def test_chat_stream_cut_mid_answer_keeps_the_partial_text_and_its_own_line(
        tmp_path: Path) -> None:
    with FaultServer() as server:
        config = {"providers": {"p": http_provider(server.url("cut"))},
                  "models": {"m": {"provider": "p"}},
                  "routing": {**fast_retry(), "default_model": "m"}}
        path = write(tmp_path, config)
        proc = routekit("chat", "hi", "--config", str(path), "--stream", code=1)
        data = as_json(routekit("chat", "hi", "--config", str(path), "--stream", "--json",
                                code=1))
    assert proc.stdout == "Hello from\n"  # the text, then the error on a line of its own
    assert proc.stderr.startswith("StreamInterrupted:"), proc.stderr
    assert data["error"] == "StreamInterrupted" and data["partial"] == "Hello from"


# ---------------------------------------------------------------- plan / health

def test_plan_text_json_and_unknown(tmp_path: Path) -> None:
    path = write(tmp_path, chat_config(Path("/nonexistent/never-loaded.gguf")))
    text = routekit("plan", "m0", "--config", str(path), code=0)
    assert text.stdout.strip() == "m0: m0 (p0) → m1 (p1) → gemma (local)"
    # One plan, one line, in a narrow terminal too (was hard-wrapped when piped).
    narrow = routekit("plan", "--config", str(path), env={"COLUMNS": "20"}, code=0)
    assert len(narrow.stdout.splitlines()) == 3
    data = as_json(routekit("plan", "--config", str(path), "--json", code=0))
    assert data == {"m0": ["m0", "m1", "gemma"], "m1": ["m1"], "gemma": ["gemma"]}
    env = {"ROUTEKIT_CONFIG": str(path)}
    assert as_json(routekit("plan", "m1", "--json", env=env, code=0)) == {"m1": ["m1"]}
    proc = routekit("plan", "m2", "--config", str(path), code=1)
    assert proc.stderr.strip() == "NoRouteError: unknown model 'm2'; known: 'm0', 'm1', 'gemma'"


def test_health_ok_and_refused(tmp_path: Path) -> None:
    def config(url: str) -> dict[str, Any]:
        return {"providers": {"p": http_provider(url)}, "models": {"m": {"provider": "p"}},
                "fallback_chains": {"m": {"chain": []}}}

    with FaultServer() as server:
        ok = write(tmp_path, config(server.url("ok")), name="ok.yaml")
        data = as_json(routekit("health", "--config", str(ok), "--json", code=0))
        assert [(r["provider"], r["ok"]) for r in data["providers"]] == [("p", True)]
        assert data["providers"][0]["breaker"]["state"] == "closed"
        assert "yes" in routekit("health", "--config", str(ok), code=0).stdout
        # vllm kind: the probe asks the server's /health, not the chat endpoint.
        assert [r.path for r in server.received] == ["/mode/ok/health"] * 2
    refused = write(tmp_path, config(dead()), name="refused.yaml")
    data = as_json(routekit("health", "--config", str(refused), "--json", code=1))
    p = data["providers"][0]
    assert p["ok"] is False and "connection refused" in p["probe"]["detail"]
    assert p["breaker"]["state"] == "open"  # a failing probe opens the breaker
    out = routekit("health", "--config", str(refused), code=1).stdout
    assert "no" in out and "open" in out
    for bad in ("0", "-1", "nan", "inf", "soon"):  # a usage error, not a failed probe
        err = routekit("health", "--config", str(refused), "--timeout", bad, code=2).stderr
        assert "--timeout" in err and "Traceback" not in err


# ---------------------------------------------------------------- the command itself

def test_help_and_usage_errors() -> None:
    proc = routekit("--help", code=0)
    for command in ("validate", "chat", "plan", "health", "simulate", "graph", "import"):
        assert command in proc.stdout
    assert "--strict" in routekit("validate", "--help", code=0).stdout
    assert "invalid choice: 'frobnicate'" in routekit("frobnicate", code=2).stderr
    assert "usage: routekit" in routekit(code=2).stderr
    assert "usage: routekit validate" in routekit("validate", code=2).stderr
    sim = routekit("simulate", "--help", code=0).stdout
    assert "95% interval" in sim and "--compare" in sim and "first_byte_share" in sim
    # An empty name (an unset shell variable) is a mistake, not the default config or every
    # model: `plan --config ""` printed the built-in default's plans and exited 0.
    for args in (("plan", "--config", ""), ("chat", "--config", "", "hi"), ("validate", ""),
                 ("health", "--config", "")):
        assert "the config path is empty" in routekit(*args, code=2).stderr
    assert "--config out" not in routekit("validate", "", code=2).stderr
    assert "model name is empty" in routekit("plan", "", code=2).stderr
    assert json.loads(routekit("plan", "--config", "", "--json", code=2).stdout)["error"] \
        == "usage"
