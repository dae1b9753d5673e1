"""What an HTTP provider's health probe asks, and what its answer means.

Owns the probe URL per kind (Ollama ``/api/version``, vLLM and llama.cpp server
``/health``, OpenAI-compatible clouds ``/v1/models``; a config's ``health.path`` replaces it)
and the verdict on an answer. Sending the request is the provider's job (``health`` /
``ahealth`` in ``openai_compat``), with its own client and deadline.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from ... import _constants as C
from ..._exceptions import RequestTimeout
from .._base import HealthReport
from .errors import translate

__all__ = ["failed", "judge", "probe_url"]


def probe_url(base_url: str, kind: str, path: str | None) -> str:
    """The health endpoint. Cloud kinds list models under ``base_url`` (``/v1/models``); local
    servers answer at their root, which is ``base_url`` without its ``/v1`` (a server behind a
    reverse proxy at ``https://host/ollama/v1`` is probed at ``https://host/ollama/...``)."""
    probe = path or C.HEALTH_PATHS.get(kind, "/models")
    if path is None and kind in C.CLOUD_KINDS:
        return base_url + probe
    root = base_url[:-3] if base_url.endswith("/v1") else base_url
    return root + probe


def judge(provider: str, url: str, status: int, body: bytes, latency_ms: float) -> HealthReport:
    """Up on a 200 (a model list is counted when the endpoint lists models), down otherwise,
    except a 429: the server answered, so it is up. A cloud rate-limits ``/v1/models`` with
    the rest of an account's traffic; taking that for an outage opened the provider's breaker
    and took every model of it out of plans, where a request's 429 counts against its model's
    breaker alone."""
    path = urlsplit(url).path
    if status == 429:
        return HealthReport(provider, True, f"GET {path} answered HTTP 429 (rate limited: up)",
                            latency_ms)
    if status != 200:
        return HealthReport(provider, False, f"GET {path} answered HTTP {status}", latency_ms)
    detail = f"GET {path}: 200"
    if path.endswith("/models"):
        try:
            data = json.loads(body).get("data")
            detail += f", {len(data) if isinstance(data, list) else 0} model(s) listed"
        except Exception:  # a health answer, not a contract: any 200 is up
            pass
    return HealthReport(provider, True, detail, latency_ms)


def failed(provider: str, exc: BaseException, latency_ms: float) -> HealthReport:
    """Down: the probe's request raised. A timeout says so (``timed_out``): no answer in time
    is weaker evidence than a wrong answer or a refused connection."""
    err = translate(exc, provider=provider, model=None)
    return HealthReport(provider, False, err.message, latency_ms,
                        timed_out=isinstance(err, RequestTimeout))
