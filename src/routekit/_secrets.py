"""Secrets: the API keys routekit holds, and their removal from every text it emits.

Owns the registry of secret values (read from the environment variables a config names) and
``redact``, which every route, error message and log line passes through. Must not import
anything heavy; it sits below every other module.
"""

from __future__ import annotations

import logging
import os
import re
import threading

__all__ = ["install_log_redaction", "redact", "register_secret", "secret_from_env"]

# Shapes of common API keys (OpenAI "sk-...", bearer tokens); plus the literal values of the
# environment variables the config names, registered by the providers that read them.
_KEY_PATTERN = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,})")
_SECRETS: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so ``redact`` removes it wherever it appears: as it is, with the
    whitespace around it stripped, and escaped (an error that quotes a header as bytes shows
    a trailing CR as the two characters \\r)."""
    for form in (value, value.strip(), value.encode("unicode_escape").decode("ascii")):
        if len(form) >= 4:
            _SECRETS.add(form)


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):  # the longest form first
        if secret in text:
            text = text.replace(secret, "***")
    return _KEY_PATTERN.sub("***", text)


def secret_from_env(name: str) -> str | None:
    """Read an API key from the environment and register it for redaction."""
    value = os.environ.get(name)
    if value:
        register_secret(value)
    return value or None


# Loggers of the HTTP stack under the openai client. httpcore logs every response header at
# DEBUG (a server that echoes the Authorization header puts the key there), and filters on
# a logger do not apply to records of its children, so each one is named.
_HTTP_LOGGERS = (
    "openai", "openai._base_client", "httpx", "httpx2",
    "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
    "httpcore2", "httpcore2.connection", "httpcore2.http11", "httpcore2.http2",
    "httpcore2.proxy",
)
_installed = False
_install_lock = threading.Lock()


class RedactingFilter(logging.Filter):
    """Rewrites a record's message with every secret routekit holds removed. Runs only for
    records that pass the logger's level (a DEBUG line costs nothing when DEBUG is off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _SECRETS and "sk-" not in str(record.msg) and not record.args:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's business, not ours
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def install_log_redaction() -> None:
    """Install ``RedactingFilter`` on the HTTP libraries' loggers (once per process; called
    when a provider builds its first HTTP client). Every logger in ``_HTTP_LOGGERS`` and any
    other already created under those names gets it."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        names = set(_HTTP_LOGGERS)
        prefixes = ("openai", "httpx", "httpcore")
        names.update(n for n in list(logging.Logger.manager.loggerDict)
                     if n.split(".")[0] in prefixes or n.split(".")[0] in ("httpx2", "httpcore2"))
        shared = RedactingFilter()
        for name in names:
            logger = logging.getLogger(name)
            if not any(isinstance(f, RedactingFilter) for f in logger.filters):
                logger.addFilter(shared)
        _installed = True
