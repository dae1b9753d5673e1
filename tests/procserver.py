"""A fault server in a process of its own, which a test can kill (SIGKILL) and restart on
the same port: a provider that dies mid-run, as a real one does. Bound to 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["ProcServer"]

_HERE = Path(__file__).resolve().parent
_CODE = (
    "import sys, time; sys.path.insert(0, {here!r}); from faultserver import FaultServer; "
    "s = FaultServer({mode!r}, port={port}, hang_seconds={hang}, served_log={log!r}); "
    "s.start(); "
    "print(s.port, flush=True); time.sleep({life})"
)


class ProcServer:
    """``start()`` / ``kill()`` / ``start()`` again: the same port each time."""

    def __init__(self, mode: str = "ok", *, hang_seconds: float = 10.0, life: float = 600.0,
                 served_log: str | None = None) -> None:
        self.mode = mode
        self.served_log = served_log  # a file each answered request's "user" is appended to
        self.hang_seconds = hang_seconds
        self.life = life  # the process exits on its own after this long, whatever happens
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> ProcServer:
        code = _CODE.format(here=str(_HERE), mode=self.mode, port=self.port,
                            hang=self.hang_seconds, life=self.life, log=self.served_log)
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(5)
            raise RuntimeError(f"fault server process did not start (port {self.port})")
        self.port = int(line)
        self._proc = proc
        return self

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait(10)

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url(self, mode: str | None = None) -> str:
        prefix = f"/mode/{mode}" if mode else ""
        return f"http://127.0.0.1:{self.port}{prefix}/v1"

    def __enter__(self) -> ProcServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
