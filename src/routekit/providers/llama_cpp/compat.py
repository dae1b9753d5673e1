"""Workarounds for faults of the llama.cpp build underneath llama-cpp-python.

Owns only what must change in how a ``Llama`` is constructed; decoding is untouched.

AMX: llama-cpp-python 0.3.36 built from source on a CPU with AMX (Sapphire Rapids and later)
crashes the process (SIGSEGV in ``ggml_backend_amx_mul_mat``) on the first decode of a
quantized model, in-process and in ``llama_cpp.server`` alike (seen here on the 2-core CI
machines, gdb backtrace). The AMX kernels are reached through llama.cpp's "extra buffer
types" (repacked weights); loading with ``use_extra_bufts = False`` avoids them, at a small
cost on CPUs where repacking would help. ``Llama`` has no argument for that field, so the
model-params factory it calls is swapped for the duration of one construction, under a lock.
``ROUTEKIT_LLAMA_EXTRA_BUFTS=1`` keeps llama.cpp's default (for a fixed build); ``=0`` forces
the workaround on any CPU.

Logs: llama.cpp's log hook is process-wide and llama.cpp calls it from whatever thread logs —
model loaders (CUDA's included), the native decode loop's worker, and frees run during
interpreter shutdown. A Python (ctypes) callback there takes the GIL on a foreign thread per
line, can run while the interpreter is being torn down, and puts Python code inside
``llama_model_load_from_file`` — the only Python code that can run inside it, since routekit
sets no progress callback. So the hook is a C function in ``routekit._core`` that only copies
each line into a bounded buffer; ``flush_llama_logs()`` hands the lines to the
``routekit.llama_cpp`` logger from a Python thread (after each load and each request). The
ctypes bridge remains only as a fallback when ``_core`` cannot install its hook.

Load probe: a crash inside llama.cpp (a segfault in a CUDA load, an AMX kernel) kills the
whole process, and no Python ``except`` can catch it. So before routekit first loads a model
with GPU offload in a process, ``probe_load`` loads it — and decodes one token — in a child
process with the same parameters, importing ``llama_cpp`` the way routekit does. (A fresh child
cannot reproduce a crash that depends on what else the parent imported before: the CUDA
build's libstdc++ fault of issue #7 is prevented and detected in ``cxx_runtime`` instead.) If the child dies by a signal, the
model is refused with a ``ProviderError`` (the plan moves on; the application lives) naming
the signal and the child's last log lines. It costs one extra load per model and parameter
set per process. ``ROUTEKIT_LLAMA_LOAD_PROBE=0`` turns it off, ``=1`` turns it on for CPU
loads too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "construction_guard",
    "disable_extra_bufts",
    "flush_llama_logs",
    "probe_load",
    "probe_wanted",
    "route_llama_logs",
]

log = logging.getLogger("routekit")
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _cpu_has_amx(llama_cpp: Any) -> bool:
    try:
        info = llama_cpp.llama_print_system_info()
    except Exception:  # an older build without the call: assume the default is safe
        return False
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return "AMX_INT8 = 1" in text


def disable_extra_bufts(llama_cpp: Any) -> bool:
    """Whether models must load without extra buffer types on this machine."""
    choice = os.environ.get("ROUTEKIT_LLAMA_EXTRA_BUFTS")
    if choice == "1":
        return False
    if choice == "0":
        return True
    return _cpu_has_amx(llama_cpp)


@contextlib.contextmanager
def construction_guard(llama_cpp: Any) -> Iterator[bool]:
    """Wrap one ``llama_cpp.Llama(...)`` call; yields whether the workaround is active."""
    if not disable_extra_bufts(llama_cpp):
        yield False
        return
    low = llama_cpp.llama_cpp  # the ctypes module that Llama.__init__ reads its defaults from
    with _lock:
        original = low.llama_model_default_params

        def params() -> Any:
            p = original()
            p.use_extra_bufts = False
            return p

        low.llama_model_default_params = params
        try:
            yield True
        finally:
            low.llama_model_default_params = original


# llama.cpp's log levels as this build numbers them (ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3,
# ERROR 4, CONT 5). llama-cpp-python's own bridge still uses an older numbering and prints
# warnings such as "using full-size SWA cache" to stderr even with verbose=False.
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.DEBUG,
           4: logging.WARNING}
_llama_log = logging.getLogger("routekit.llama_cpp")
# What llama.cpp logs as errors when a decode is aborted through its abort callback (the
# native loop cancelling a job mid-batch: a deadline, a close): status 1 is
# GGML_STATUS_ABORTED, llama_decode's 2 "aborted". Expected, so DEBUG, not WARNING.
_ABORTED = re.compile(r"failed with error 1\s*$|compute status: 1\s*$|"
                      r"failed to decode, ret = 2\s*$")
_bridge: Any = None  # the ctypes callback; must stay referenced while installed
_last_level = logging.DEBUG


def route_llama_logs(llama_cpp: Any) -> None:
    """Send llama.cpp's log lines to the ``routekit.llama_cpp`` logger instead of stderr.

    Installed once, when routekit first loads a model (llama.cpp has one process-wide log
    hook). Errors become WARNING records; the rest DEBUG. ``ROUTEKIT_LLAMA_LOG=stderr``
    leaves llama-cpp-python's own hook in place.
    """
    global _sink, _bridge
    if _sink or _bridge is not None or os.environ.get("ROUTEKIT_LLAMA_LOG") == "stderr":
        return
    with _lock:
        if _sink or _bridge is not None:
            return
        path = getattr(getattr(llama_cpp.llama_cpp, "_lib", None), "_name", None)
        if isinstance(path, str):
            from ... import _cpp as _core

            if _core.llama_log_sink_install(path):
                _sink = True
                return
        log.debug("routekit._core could not hook llama.cpp's log; using a ctypes callback")
        _bridge = _ctypes_bridge(llama_cpp)


def flush_llama_logs() -> None:
    """Hand the log lines llama.cpp wrote since the last call to logging (cheap when none)."""
    if not _sink:
        return
    try:
        from ... import _cpp as _core
    except ImportError:  # at interpreter exit (a stream left open): imports are gone
        return
    if not _core.llama_logs_pending():
        return
    lines, dropped = _core.llama_log_drain()
    for level, text in lines:
        py_level = _LEVELS.get(level, logging.DEBUG)
        if py_level > logging.DEBUG and _ABORTED.search(text):
            py_level = logging.DEBUG  # a decode the native loop stopped on purpose
        if _llama_log.isEnabledFor(py_level):
            _llama_log.log(py_level, "%s", text)
    if dropped:
        _llama_log.debug("%d llama.cpp log line(s) dropped (buffer full)", dropped)


_sink = False


def _ctypes_bridge(llama_cpp: Any) -> Any:
    import ctypes

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]  # ctypes, untyped
    def bridge(level: int, text: bytes, user_data: Any) -> None:
        global _last_level
        py_level = _last_level if level == 5 else _LEVELS.get(level, logging.DEBUG)
        _last_level = py_level
        if _llama_log.isEnabledFor(py_level):
            _llama_log.log(py_level, "%s", text.decode("utf-8", "replace").rstrip("\n"))

    llama_cpp.llama_log_set(bridge, ctypes.c_void_p(0))
    return bridge  # the caller keeps it referenced while installed


# -- load probe ----------------------------------------------------------------------------------

# What the child runs: llama_cpp imported as routekit imports it (routekit first, libstdc++
# made global: the H200 build crashed in the parent's order and loaded in llama_cpp-first,
# which this child used), the same construction (AMX guard included), one decoded token.
_PROBE_CODE = (
    "import json, sys\n"
    "from routekit.providers.llama_cpp.load import llama_module\n"
    "from routekit.providers.llama_cpp.compat import construction_guard\n"
    "llama_cpp = llama_module()\n"
    "params = json.loads(sys.argv[1])\n"
    "with construction_guard(llama_cpp):\n"
    "    llm = llama_cpp.Llama(**params)\n"
    "llm.create_completion('Hi', max_tokens=1)\n"
    "llm.close()\n"
)
_PROBE_TIMEOUT = 300.0
_probed: dict[str, str | None] = {}
_probe_lock = threading.Lock()


def probe_wanted(llama_cpp: Any, params: dict[str, Any]) -> bool:
    """Whether a load with ``params`` is probed in a child process first (see module doc)."""
    choice = os.environ.get("ROUTEKIT_LLAMA_LOAD_PROBE")
    if choice in ("0", "1"):
        return choice == "1"
    if not params.get("n_gpu_layers"):
        return False
    try:
        return bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        return False


def probe_load(params: dict[str, Any], *, code: str | None = None,
               timeout: float = _PROBE_TIMEOUT) -> str | None:
    """Load (and decode one token with) ``params`` in a child process, once per parameter
    set. Returns None when the child succeeded — or failed in an ordinary way, which the
    load in this process will report properly — else how it died, with its last log lines.
    """
    key = json.dumps(params, sort_keys=True, default=str)
    with _probe_lock:
        if key in _probed:
            return _probed[key]
        verdict = _run_probe(params, code or _PROBE_CODE, timeout)
        _probed[key] = verdict
        return verdict


def _run_probe(params: dict[str, Any], code: str, timeout: float) -> str | None:
    import routekit

    env = dict(os.environ)
    root = str(Path(routekit.__file__).resolve().parent.parent)  # the routekit in use
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["ROUTEKIT_LLAMA_LOG"] = "stderr"  # the child's llama.cpp lines: the crash report
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(params, default=str)], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not probe loading %s in a child process (%s); loading it here",
                    params.get("model_path"), exc)
        return None
    if proc.returncode >= 0:
        if proc.returncode:
            log.debug("load probe of %s exited with %d", params.get("model_path"),
                      proc.returncode)
        return None
    try:
        how = f"killed by {signal.Signals(-proc.returncode).name}"
    except ValueError:
        how = f"killed by signal {-proc.returncode}"
    tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-8:]
    return how + (": " + " | ".join(tail) if tail else "")
