"""The embedded default config: Ollama → vLLM → in-process gemma3-270m.

With nothing else running, a request falls through the two dead local ports in milliseconds
and is answered inside the process by the GGUF shipped on the package index.
"""

from __future__ import annotations

import os
from typing import Any

from .. import _constants as C

__all__ = ["DEFAULT_CONFIG", "DEFAULT_MODEL", "default_config_source"]

DEFAULT_MODEL = "llama3.2"

DEFAULT_CONFIG: dict[str, Any] = {
    "providers": {
        "ollama": {"kind": "ollama", "timeout": {"connect": 0.5, "read": 60, "total": 120}},
        "vllm": {"kind": "vllm", "timeout": {"connect": 0.5, "read": 60, "total": 120}},
        "local": {"kind": "llama_cpp"},
    },
    "models": {
        "llama3.2": {"provider": "ollama", "model_id": "llama3.2"},
        "vllm-default": {"provider": "vllm", "model_id": "Qwen/Qwen2.5-1.5B-Instruct"},
        "gemma3-270m": {
            "provider": "local",
            "package": C.DEFAULT_MODEL_PACKAGE,
            "chat_format": C.DEFAULT_MODEL_CHAT_FORMAT,
            "n_ctx": C.DEFAULT_N_CTX,
        },
    },
    "fallback_chains": {
        "llama3.2": {"chain": ["vllm-default", "gemma3-270m"], "tier": "local"},
        "vllm-default": {"chain": ["gemma3-270m"], "tier": "local"},
        "gemma3-270m": {"chain": [], "tier": "local"},
    },
    "routing": {"default_model": DEFAULT_MODEL},
}


def default_config_source() -> str | dict[str, Any]:
    """``$ROUTEKIT_CONFIG`` when set, else the embedded default."""
    return os.environ.get("ROUTEKIT_CONFIG") or DEFAULT_CONFIG
