"""The HTTP library under the ``openai`` client, and deadlines that bound a whole call.

Owns two things:

* **Which library.** openai 1.x and 2.x are built on ``httpx`` (and ``httpcore``); openai 3.x
  on their forks ``httpx2`` (and ``httpcore2``). routekit builds its own HTTP clients (pool
  sizes, TLS context, proxies) and must hand openai the kind it expects, so it asks the
  installed openai which module it imported (``http_lib``) instead of importing either by
  name: importing one that is not installed broke every router on openai 2 (#9).
* **Whole-call deadlines for sync calls.** httpx's ``read`` timeout bounds each socket read,
  so a server that trickles a byte every half second keeps a sync call alive for minutes.
  ``install_deadlines`` wraps the client's network backend so that every read, write and
  connect on this thread also stops at the deadline set with ``call_deadline`` (a thread
  local: one sync call runs on one thread). Async calls are bounded by a cancel scope instead.

Must not import openai or either HTTP library at module import time.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from types import ModuleType
from typing import Any

__all__ = ["call_deadline", "core_lib", "http_lib", "install_deadlines", "loaded_http_libs"]

log = logging.getLogger("routekit")

_lib: ModuleType | None = None
_core: ModuleType | None = None
_local = threading.local()
_now = time.monotonic


def http_lib() -> ModuleType:
    """``httpx2`` or ``httpx``: whichever the installed openai client is built on."""
    global _lib
    if _lib is None:
        import openai._base_client as base

        lib = getattr(base, "httpx2", None) or getattr(base, "httpx", None)
        if not isinstance(lib, ModuleType):  # pragma: no cover - an openai we do not know
            raise ImportError(
                f"openai {getattr(sys.modules.get('openai'), '__version__', '?')} is built on "
                "neither httpx nor httpx2; routekit supports openai>=1.40,<4"
            )
        _lib = lib
    return _lib


_tls_lock = threading.Lock()
_tls: Any = None


def tls_context() -> Any:
    """One ``ssl.SSLContext`` for every client, made once by the HTTP library (its
    certificate store, with ``SSL_CERT_FILE`` and the like honoured)."""
    global _tls
    with _tls_lock:
        if _tls is None:
            _tls = http_lib().create_ssl_context(verify=True, trust_env=True)
        return _tls


def core_lib() -> ModuleType:
    """``httpcore2`` or ``httpcore``: the transport core under ``http_lib()``."""
    global _core
    if _core is None:
        import importlib

        name = "httpcore2" if http_lib().__name__ == "httpx2" else "httpcore"
        _core = importlib.import_module(name)
    return _core


def loaded_http_libs() -> tuple[ModuleType, ...]:
    """Every HTTP library that is imported now (errors may come from any of them)."""
    mods = sys.modules
    return tuple(m for m in (mods.get("httpx2"), mods.get("httpx")) if m is not None)


class call_deadline:
    """``with call_deadline(t_end):`` bounds every socket operation of sync calls made on
    this thread inside the block by the monotonic time ``t_end`` (``None``: no bound). Nests:
    the previous bound comes back on exit. About 0.2 µs per use."""

    __slots__ = ("_t_end", "_saved")

    def __init__(self, t_end: float | None) -> None:
        self._t_end = t_end
        self._saved: float | None = None

    def __enter__(self) -> None:
        self._saved = getattr(_local, "t_end", None)
        _local.t_end = self._t_end

    def __exit__(self, *exc: object) -> None:
        _local.t_end = self._saved


def _bounded(timeout: float | None, timeout_exc: type[BaseException]) -> float | None:
    t_end: float | None = getattr(_local, "t_end", None)
    if t_end is None:
        return timeout
    left = t_end - _now()
    if left <= 0:
        raise timeout_exc("the call's deadline passed")
    return left if timeout is None or left < timeout else timeout


# The network stream each thread is reading from right now (thread id -> _Stream), so
# that another thread can end that read at once (``interrupt_read``).
_reading: dict[int, _Stream] = {}


def interrupt_read(thread_id: int) -> bool:
    """End the read thread ``thread_id`` is blocked in, if any, by shutting its socket down
    (the read then fails as a lost connection). For ``Stream.close()`` from a watchdog
    thread. Returns whether there was such a read."""
    stream = _reading.get(thread_id)
    if stream is None:
        return False
    stream._shutdown()
    return True


class _Stream:
    """A network stream whose every operation also respects the thread's call deadline."""

    def __init__(self, inner: Any, core: ModuleType) -> None:
        self._inner = inner
        self._core = core

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        me = threading.get_ident()
        _reading[me] = self
        try:
            data: bytes = self._inner.read(max_bytes,
                                           _bounded(timeout, self._core.ReadTimeout))
        finally:
            del _reading[me]
        return data

    def _shutdown(self) -> None:
        try:
            sock = self._inner.get_extra_info("socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass  # already closed or never connected

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, self._core.WriteTimeout))

    def close(self) -> None:
        # Shut the socket down first: on Linux, close() alone does not wake a recv()
        # blocked in another thread (a stream being read while its router is closed), so
        # that read would last until its timeout.
        self._shutdown()
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> _Stream:
        inner = self._inner.start_tls(ssl_context, server_hostname,
                                      _bounded(timeout, self._core.ConnectTimeout))
        return _Stream(inner, self._core)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend:
    """Wraps httpcore's sync network backend; streams it opens honour call deadlines."""

    def __init__(self, inner: Any, core: ModuleType) -> None:
        self._inner = inner
        self._core = core

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None) -> _Stream:
        stream = self._inner.connect_tcp(
            host, port, _bounded(timeout, self._core.ConnectTimeout), local_address,
            socket_options,
        )
        return _Stream(stream, self._core)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> _Stream:
        stream = self._inner.connect_unix_socket(
            path, _bounded(timeout, self._core.ConnectTimeout), socket_options
        )
        return _Stream(stream, self._core)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def install_deadlines(client: Any) -> bool:
    """Make a sync ``http_lib().Client`` honour ``call_deadline``. Returns False (and the
    client keeps per-read timeouts only) when its transport is not the stock one."""
    core = core_lib()
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    backend = getattr(pool, "_network_backend", None)
    if backend is None or not hasattr(backend, "connect_tcp"):
        log.debug("routekit: HTTP transport %r has no network backend to wrap; sync calls "
                  "are bounded per read only", type(getattr(client, "_transport", None)))
        return False
    if not isinstance(backend, _Backend):
        setattr(pool, "_network_backend", _Backend(backend, core))  # noqa: B010
    return True
