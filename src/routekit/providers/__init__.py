"""Provider backends. ``_base`` holds the protocol; concrete providers import their heavy
third-party packages (openai, llama_cpp) only when constructed or first used."""

from __future__ import annotations

from ._base import ChatRequest, Deadline, HealthReport, Provider

__all__ = ["ChatRequest", "Deadline", "HealthReport", "Provider"]
