"""Secrets: the API keys routekit holds, and their removal from every text it emits.

Owns the registry of secret values (read from the environment variables a config names) and
``redact``, which every route, error message and log line passes through. Must not import
anything heavy; it sits below every other module.
"""

from __future__ import annotations

import os
import re

__all__ = ["redact", "register_secret", "secret_from_env"]

# Shapes of common API keys (OpenAI "sk-...", bearer tokens); plus the literal values of the
# environment variables the config names, registered by the providers that read them.
_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,})")
_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so ``redact`` removes it wherever it appears."""
    if len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub("***", text)


def secret_from_env(name: str) -> str | None:
    """Read an API key from the environment and register it for redaction."""
    value = os.environ.get(name)
    if value:
        register_secret(value)
    return value or None
