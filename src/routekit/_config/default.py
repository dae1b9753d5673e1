"""The embedded default config: Ollama → vLLM → in-process gemma3-270m.

With nothing else running, a request falls through the two dead local ports in milliseconds
and is answered inside the process by the GGUF shipped on the package index.

That GGUF is gemma-3-270m, a *base* model: it continues text, it was never taught to follow
instructions or chat turns. Given gemma's chat template it echoed the prompt back line after
line. Its defaults here are the best it measured on (``benchmarks/first_run.py``): a plain
"### Prompt: / ### Response:" frame that web text teaches a base model to continue
(llama-cpp-python's ``snoozy`` format, which also stops at the next ``###``), greedy
decoding, a frequency penalty against loops, and a stop at the first blank line. It keeps
an application answering, not answering well; point the terminal at an instruct GGUF for
answers worth reading (README: "What the default model is").
"""

from __future__ import annotations

import os
from typing import Any

from .. import _constants as C

__all__ = [
    "BASE_MODEL_DEFAULTS",
    "BASE_MODEL_FORMAT",
    "DEFAULT_CONFIG",
    "DEFAULT_MODEL",
    "default_config_source",
]

DEFAULT_MODEL = "llama3.2"
# Measured on gemma-3-270m (base) by benchmarks/first_run.py; see the module docstring.
BASE_MODEL_FORMAT = C.DEFAULT_MODEL_CHAT_FORMAT
BASE_MODEL_DEFAULTS: dict[str, Any] = dict(C.DEFAULT_MODEL_GENERATION)

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
            "chat_format": BASE_MODEL_FORMAT,
            "n_ctx": C.DEFAULT_N_CTX,
            "defaults": BASE_MODEL_DEFAULTS,
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
