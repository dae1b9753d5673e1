"""Helpers of the compatibility suite: the router config, README snippets, route checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from faultserver import closed_port

README = Path(__file__).resolve().parents[2] / "README.md"
MODEL = "llama3.2"


def router_config(base_url: str) -> dict[str, Any]:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    return {
        "providers": {"dead": {"kind": "vllm", "base_url": dead},
                      "local": {"kind": "vllm", "base_url": base_url}},
        "models": {MODEL: {"provider": "dead"}, "gpt-4o-mini": {"provider": "dead"},
                   "echo": {"provider": "local"}},
        "fallback_chains": {MODEL: {"chain": ["echo"]}, "gpt-4o-mini": {"chain": ["echo"]}},
        # Every test stays bounded: no request may outlive 20 s.
        "routing": {"deadline": 20, "timeout": {"connect": 2, "read": 10, "total": 20}},
    }


def readme_snippet(library: str) -> str:
    """The ```python block under README's "Use routekit with ..." heading for ``library``."""
    section = README.read_text(encoding="utf-8").split("## Use routekit with", 1)[1]
    section = section.split("\n## ", 1)[0]
    match = re.search(rf"### {re.escape(library)}\b.*?```python\n(.*?)```", section, re.S)
    assert match is not None, f"README has no snippet for {library}"
    return match.group(1)


def run_snippet(library: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = dict(names)
    exec(compile(readme_snippet(library), f"README.md[{library}]", "exec"), namespace)
    return namespace


def answered_by_fallback(route: Any) -> bool:
    """The route went past the dead entry model and was answered by ``echo``."""
    return (route.answered_by is not None and route.answered_by.model == "echo"
            and route.attempts[0].outcome in ("error", "skipped"))
