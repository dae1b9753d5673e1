"""In-process llama.cpp: the providers (``provider``), the per-model gate (``gate``), loading
(``load``), parameter mapping (``params``), build workarounds (``compat``) and model files
(``model_files``). Nothing here imports ``llama_cpp`` until a model is used."""

from __future__ import annotations

from .provider import LlamaCppProvider

__all__ = ["LlamaCppProvider"]
