"""HTTP providers: every OpenAI-compatible server (Ollama, vLLM, llama.cpp server, clouds)
through the official ``openai`` client, and the translation of its errors."""

from __future__ import annotations

from .openai_compat import OpenAICompatProvider

__all__ = ["OpenAICompatProvider"]
