"""In-process llama.cpp: the providers (``provider``: llama-cpp-python decodes; ``native``:
routekit's C++ loop decodes), what they share (``base``), the per-model gate (``gate``),
loading (``load``), parameter mapping (``params``), chat formatting (``chat``), the
``openai`` objects built from llama's output (``chunks``), build workarounds (``compat``) and
model files (``model_files``). Nothing here imports
``llama_cpp`` until a model is used."""

from __future__ import annotations

from .native import LlamaCppNativeProvider
from .provider import LlamaCppProvider

__all__ = ["LlamaCppNativeProvider", "LlamaCppProvider"]
