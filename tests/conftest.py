"""Shared fixtures: the real in-process model, a real llama_cpp.server, fault servers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from faultserver import FaultServer, closed_port  # noqa: E402
from llama_server import default_model_path, llama_server  # noqa: E402
from routekit.providers.llama_cpp.cxx_runtime import share_libstdcxx  # noqa: E402

# Test modules import llama_cpp themselves, before routekit could make libstdc++ global as it
# does before its own first import of it; pytest plugins may have loaded numpy (and with it
# libstdc++) already. A CUDA build would then crash on the first load (cxx_runtime's doc).
share_libstdcxx()


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def llama_base_url(gemma_path: Path) -> Iterator[str]:
    """A real OpenAI-compatible server (llama_cpp.server) with the gemma model, on loopback."""
    with llama_server(gemma_path, n_ctx=512) as url:
        yield url


@pytest.fixture
def fault() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


@pytest.fixture
def dead_url() -> str:
    return f"http://127.0.0.1:{closed_port()}/v1"


def http_provider(url: str, kind: str = "vllm", **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "base_url": url,
            "timeout": {"connect": 1.0, "read": 5.0, "total": 10.0}, **extra}


def gemma_model(path: Path, **extra: Any) -> dict[str, Any]:
    return {"provider": "local", "path": str(path), "chat_format": "gemma", "n_ctx": 512,
            "n_threads": 2, **extra}


def fast_retry() -> dict[str, Any]:
    """Retries with short backoff so fault tests stay quick and bounded."""
    return {"retry": {"max_attempts": 2, "last_candidate_attempts": 3,
                      "backoff_initial": 0.01, "backoff_max": 0.05, "jitter": 0.01,
                      "retry_after_cap": 0.5}}


def routekit_path() -> str:
    """The folder holding the routekit under test (src/ in development, site-packages when
    installed): what a subprocess needs on PYTHONPATH to import the same routekit."""
    import routekit

    return str(Path(routekit.__file__).resolve().parent.parent)
