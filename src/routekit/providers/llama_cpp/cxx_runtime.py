"""Which C++ runtime llama.cpp's own C++ calls bind to, and keeping it the real libstdc++.

The fault (issue #7, found on an H100 with llama-cpp-python 0.3.36 built with CUDA 13):
``libggml-cuda.so`` carries a private copy of libstdc++ — ``ldd`` shows no libstdc++ for it,
and ``nm -D`` shows ~3,400 exported ``std::`` symbols. llama-cpp-python opens ``libllama``
with ``RTLD_LOCAL`` and ``RTLD_NOW`` (ctypes), so every C++ symbol libllama needs is bound at
import, in its local search order. When nothing had loaded libstdc++ before, that order finds
the real ``libstdc++.so.6`` first and all is well. When another module had already loaded it
privately (numpy 2's C++ extensions do; the ``jaxtyping`` pytest plugin imports numpy, which is
how the test process differed from a plain script), libllama's ``std::ostream`` calls bound to
libggml-cuda's copy, whose locale state was never set up: every model load, CPU ones included,
died with SIGSEGV in ``llama_model::print_info`` (cuda-gdb: ``std::ostream::_M_insert<long>``
in ``libggml-cuda.so``).

The fix: before ``llama_cpp`` is first imported, :func:`share_libstdcxx` opens
``libstdc++.so.6`` with ``RTLD_GLOBAL``. It is nearly always loaded already, so this only puts
it in the global scope, which the dynamic linker searches before any library's own: libllama
then binds to it whatever was imported before. Measured on the H100: ``import numpy`` then a
load crashed (also with ``n_gpu_layers=0``), and loaded once libstdc++ was global.

When ``llama_cpp`` was imported before routekit could do that (an application importing numpy,
then ``llama_cpp``, then using routekit), the binding is already made. :func:`cxx_conflict`
then tells, before any load, whether libllama resolves ``std::ostream::_M_insert<long>``
anywhere but a libstdc++, so routekit refuses the model with a clear error instead of letting
llama.cpp take the process down. Linux only (glibc's ``dlsym``/``dladdr``); elsewhere both are
no-ops. Must not import ``llama_cpp``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from typing import Any

__all__ = ["cxx_conflict", "llama_cxx_conflict", "share_libstdcxx", "symbol_file"]

# std::ostream::_M_insert<long>: what llama_model::print_info called into the wrong copy.
PROBE_SYMBOL = "_ZNSo9_M_insertIlEERSoT_"
_LINUX = sys.platform.startswith("linux")


def share_libstdcxx() -> bool:
    """Put libstdc++ in the process's global symbol scope (see the module doc). Call before
    ``llama_cpp`` is imported; cheap, and harmless when it was global already. Returns whether
    it is global now."""
    if not _LINUX:
        return False
    try:
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
    except OSError:  # no libstdc++ (a musl system, say): nothing to share
        return False
    return True


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


@functools.lru_cache(maxsize=1)
def _libdl() -> Any:
    libc = ctypes.CDLL(None)  # the global scope, where glibc's dlsym and dladdr live
    libc.dlsym.restype = ctypes.c_void_p
    libc.dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    libc.dladdr.restype = ctypes.c_int
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    return libc


def symbol_file(handle: int | None, name: str = PROBE_SYMBOL) -> str | None:
    """The file whose definition of ``name`` a lookup from ``handle`` finds (``None``: the
    global scope), or None when there is none."""
    if not _LINUX:
        return None
    libdl = _libdl()
    address = libdl.dlsym(handle, name.encode())
    if not address:
        return None
    info = _DlInfo()
    if not libdl.dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


def _is_libstdcxx(path: str) -> bool:
    return os.path.basename(path).startswith("libstdc++")


def cxx_conflict(handle: int, own_file: str | None = None) -> str | None:
    """Why C++ calls of the library opened as ``handle`` (file ``own_file``) would run in
    another library's copy of libstdc++, or None when they would not. A copy in the library
    itself (a build linked with ``-static-libstdc++``) is its own business, not a conflict."""
    owner = symbol_file(handle)
    if owner is None or _is_libstdcxx(owner):
        return None
    if own_file is not None and os.path.realpath(owner) == os.path.realpath(own_file):
        return None
    # The global scope is searched first. (Were libstdc++ made global only after libllama
    # was bound, this would miss the conflict; routekit itself never does that.)
    shared = symbol_file(None)
    if shared is not None and _is_libstdcxx(shared):
        return None
    return (f"llama.cpp's C++ calls would run in the copy of libstdc++ inside {owner}, which "
            "crashes the process on the first model load: llama_cpp was imported after "
            "another module (numpy 2, for one) had loaded libstdc++ privately, and this "
            "llama-cpp-python build carries its own copy of libstdc++'s symbols. Let routekit "
            "import llama_cpp (do not import it before routekit first loads a model), or run "
            "ctypes.CDLL('libstdc++.so.6', mode=ctypes.RTLD_GLOBAL) before importing it")


def llama_cxx_conflict(llama_cpp: Any) -> str | None:
    """:func:`cxx_conflict` for the libllama that ``llama_cpp`` opened (None when its handle
    cannot be read)."""
    lib = getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None)
    handle, name = getattr(lib, "_handle", None), getattr(lib, "_name", None)
    if not isinstance(handle, int):
        return None
    return cxx_conflict(handle, name if isinstance(name, str) else None)
