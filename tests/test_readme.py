"""The README stays true: its config example loads, and .ci/run runs its test command."""

from __future__ import annotations

import re
from pathlib import Path

from routekit import load_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands() -> list[str]:
    return [line.strip() for line in README.splitlines()[:15] if line.startswith("    python3")]


def test_readme_opens_with_the_two_commands() -> None:
    main_job, tests = _commands()
    assert "routekit chat" in main_job and ".[model]" in main_job
    assert "pytest" in tests and ".[dev,server,model]" in tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, tests = _commands()
    assert tests in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_config_example_loads() -> None:
    block = re.search(r"```yaml\n(.*?)```", README, re.S)
    assert block is not None
    import yaml

    config = load_config(yaml.safe_load(block.group(1)))
    assert config.routing.default_model in config.models
    assert config.providers["cloud"].api_key_env == "OPENAI_API_KEY"


def test_readme_testing_snippet_runs() -> None:
    """The "Testing code built on routekit" example does what it says."""
    section = README.split("## Testing code built on routekit", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    config = {
        "providers": {"ollama": {"kind": "ollama"}, "vllm": {"kind": "vllm"}},
        "models": {"llama3.1:latest": {"provider": "ollama"}, "q": {"provider": "vllm"}},
        "fallback_chains": {"llama3.1:latest": {"chain": ["q"]}},
    }
    exec(code.group(1), {"config": config, "msgs": [{"role": "user", "content": "hi"}]})


def test_every_use_with_snippet_is_run_by_the_compat_suite() -> None:
    """The "Use routekit with ..." snippets are not copies: tests/compat/ executes them from
    this README (``compat.support.run_snippet``), one per library, on every openai version CI
    runs the library on."""
    section = README.split("## Use routekit with", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^### (.+)$", section, re.M)
    assert headings == ["instructor", "LangChain", "LlamaIndex", "OpenAI Agents SDK"]
    for heading, body in zip(headings, re.split(r"^### .+$", section, flags=re.M)[1:]):
        assert body.count("```python") == 1, heading
    suite = "".join(p.read_text(encoding="utf-8")
                    for p in sorted((ROOT / "tests" / "compat").glob("test_*.py")))
    for heading in headings:
        assert f'run_snippet("{heading}"' in suite, heading
