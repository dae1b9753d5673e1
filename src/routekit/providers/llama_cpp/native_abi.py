"""Binding routekit's C++ decode loop to the libllama that llama-cpp-python loaded.

Owns ``native_api()``: the one ``_core.LlamaApi`` per process, made after the ABI check —
every struct the loop passes by value (size and field offsets) and every function it calls
(signature) compared with llama-cpp-python's own ctypes declarations, and both versions
checked — or the refusal, as a ``ProviderError`` naming the versions and each mismatch.
Nothing of libllama but ``llama_version()`` (no arguments, for the message) is called before
the check passed. Must not load models or decode.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

from ... import _cpp as _core
from ..._exceptions import ProviderError
from .load import llama_module

__all__ = ["describe_ctypes", "native_api"]


class _ApiCache:
    """The checked ``_core.LlamaApi`` (or the refusal), once per process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.api: _core.LlamaApi | None = None
        self.error: str | None = None

    def clear(self) -> None:
        with self.lock:
            self.api, self.error = None, None


_api_cache = _ApiCache()


def native_api() -> _core.LlamaApi:
    """routekit's decode loop bound to llama-cpp-python's libllama, after the ABI check.

    Raises ``ProviderError`` naming both sides' versions (and every mismatch) when the check
    refuses; the process is never at risk (only llama_version() runs before the check).
    """
    api = _api_cache.api
    if api is not None:
        return api
    with _api_cache.lock:
        if _api_cache.api is None and _api_cache.error is None:
            llama_cpp = llama_module()
            low = llama_cpp.llama_cpp
            path = getattr(getattr(low, "_lib", None), "_name", None)
            if not isinstance(path, str):
                _api_cache.error = "llama-cpp-python does not expose its libllama (_lib._name)"
            else:
                layouts, signatures = describe_ctypes(low)
                untested = os.environ.get("ROUTEKIT_LLAMA_NATIVE_UNTESTED") == "1"
                try:
                    _api_cache.api = _core.LlamaApi.open(
                        path, str(getattr(llama_cpp, "__version__", "unknown")), layouts,
                        signatures, untested,
                    )
                except _core.AbiError as exc:
                    _api_cache.error = str(exc)
        if _api_cache.api is not None:
            return _api_cache.api
        raise ProviderError(_api_cache.error or "llama_cpp_native is unavailable")


def describe_ctypes(low: Any) -> tuple[
    list[tuple[str, int, list[tuple[str, int, int]]]], list[tuple[str, str]]
]:
    """What llama-cpp-python's ctypes module declares for the structs and functions the
    native loop uses: ``(name, size, [(field, offset, size)])`` per struct and
    ``(name, "ret(args)")`` per function, in ``_core.llama_native_declared()``'s notation."""
    layouts = []
    for name in _core.LLAMA_NATIVE_STRUCTS:
        cls = getattr(low, name, None)
        if not isinstance(cls, type) or not issubclass(cls, ctypes.Structure):
            continue
        fields = [(f[0], getattr(cls, f[0]).offset, getattr(cls, f[0]).size)
                  for f in cls._fields_]
        layouts.append((name, ctypes.sizeof(cls), fields))
    lib = getattr(low, "_lib", None)
    signatures = []
    for name in _core.LLAMA_NATIVE_FUNCTIONS:
        fn = getattr(lib, name, None) if lib is not None else None
        args = getattr(fn, "argtypes", None)
        if fn is None or args is None:
            continue  # the check reports it as "not declared by llama-cpp-python"
        signatures.append(
            (name, f"{_ctype_code(fn.restype)}({','.join(_ctype_code(a) for a in args)})")
        )
    return layouts, signatures


_POINTER_BASES = tuple(
    t for t in (getattr(ctypes, "_Pointer", None), getattr(ctypes, "_CFuncPtr", None))
    if isinstance(t, type)
)


def _ctype_code(t: Any) -> str:
    if t is None:
        return "v"
    if isinstance(t, type) and issubclass(t, ctypes.Structure):
        return "S:" + t.__name__
    if t in (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_wchar_p) or (
        isinstance(t, type) and issubclass(t, _POINTER_BASES)
    ):
        return "p"
    code = getattr(t, "_type_", None)
    if not isinstance(code, str):
        return f"?{getattr(t, '__name__', t)}"
    bits = 8 * ctypes.sizeof(t)
    if code == "?":
        return "b"
    if code in "fd":
        return f"f{bits}"
    if code in "bhilq":
        return f"i{bits}"
    if code in "BHILQ":
        return f"u{bits}"
    return f"?{t.__name__}"
