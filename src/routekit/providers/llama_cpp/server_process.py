"""A ``llama_cpp.server`` child process on loopback, for ``routekit bench --server`` and tests.

Owns only the child: start it with the same model, context, threads and GPU offload as the
in-process paths, wait until ``GET /v1/models`` answers, yield the base URL, and terminate
it (kill after a grace period). Its output goes to a temporary file whose tail is shown when
it dies.

The child runs the server module through a tiny bootstrap that applies routekit's AMX
workaround (``compat.disable_extra_bufts``: llama-cpp-python 0.3.36 built on a CPU with AMX
crashes on the first decode unless models load with ``use_extra_bufts = False``), which the
server has no flag for. ``ROUTEKIT_LLAMA_EXTRA_BUFTS=1`` runs the plain module.
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

from ..._exceptions import ProviderError

__all__ = ["free_port", "llama_server"]

_BOOTSTRAP = (
    "import runpy, llama_cpp, llama_cpp.llama_cpp as lc\n"
    "from routekit.providers.llama_cpp.compat import disable_extra_bufts\n"
    "if disable_extra_bufts(llama_cpp):\n"
    "    _defaults = lc.llama_model_default_params\n"
    "    def _params():\n"
    "        p = _defaults()\n"
    "        p.use_extra_bufts = False\n"
    "        return p\n"
    "    lc.llama_model_default_params = _params\n"
    "runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n"
)


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
    model_path: str | os.PathLike[str],
    *,
    chat_format: str | None = None,
    n_ctx: int = 512,
    n_threads: int = 1,
    n_gpu_layers: int = 0,
    startup_timeout: float = 60.0,
    grace: float = 5.0,
) -> Iterator[str]:
    """Run ``llama_cpp.server`` on 127.0.0.1; yields its base URL (``http://127.0.0.1:P/v1``).

    Raises ``ProviderError`` when the server module is missing (``pip install
    'routekit[server]'``) or the child dies or does not answer within ``startup_timeout``.
    """
    try:
        import llama_cpp.server  # noqa: F401 - only to say clearly what is missing
    except ImportError as exc:
        raise ProviderError(
            f"llama_cpp.server is not installed ({exc}); pip install 'routekit[server]'"
        ) from exc
    port = free_port()
    head = ([sys.executable, "-m", "llama_cpp.server"]
            if os.environ.get("ROUTEKIT_LLAMA_EXTRA_BUFTS") == "1"
            else [sys.executable, "-c", _BOOTSTRAP])
    cmd = head + [
        "--model", str(model_path),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(n_ctx),
        "--n_threads", str(n_threads),
        "--n_threads_batch", str(n_threads),
        "--n_gpu_layers", str(n_gpu_layers),
        "--use_mlock", "False",
        "--verbose", "False",
    ]  # fmt: skip
    if chat_format:
        cmd += ["--chat_format", chat_format]
    base_url = f"http://127.0.0.1:{port}/v1"
    env = dict(os.environ)
    # The bootstrap imports routekit: make this routekit importable in the child.
    here = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        try:
            deadline = time.monotonic() + startup_timeout
            while not _answers(base_url + "/models"):
                if proc.poll() is not None:
                    raise ProviderError(
                        f"llama_cpp.server exited with {proc.returncode} before answering:\n"
                        + _tail(log)
                    )
                if time.monotonic() > deadline:
                    raise ProviderError(
                        f"llama_cpp.server did not answer within {startup_timeout:.0f} s:\n"
                        + _tail(log)
                    )
                time.sleep(0.2)
            yield base_url
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
    return log.read()[-limit:].decode("utf-8", "replace")
