"""The C++ core's Python face: the one module that imports ``routekit._core``.

Owns nothing but the list of what crosses the boundary, so it stays visible in one place
(STYLE: the boundary carries plain data; only ``bindings.cpp`` includes pybind11, and only
this module imports the extension). Users of each part: ``_plan`` (Graph, Simulation),
``providers/llama_cpp`` (the token relay, the native decode loop and its ABI check, and
llama.cpp's log sink).
"""

from __future__ import annotations

from ._core import (
    FINISH_CONTEXT_FULL,
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_NONE,
    FINISH_STOP,
    LLAMA_NATIVE_FUNCTIONS,
    LLAMA_NATIVE_STRUCTS,
    POP_EMPTY,
    POP_PIECES,
    POP_TIMEOUT_FIRST,
    POP_TIMEOUT_TOTAL,
    AbiError,
    DeadlineAbort,
    Graph,
    LlamaApi,
    LlamaNativeContext,
    LlamaNativeJob,
    Relay,
    Simulation,
    llama_log_drain,
    llama_log_sink_install,
    llama_logs_pending,
    llama_native_declared,
)

__all__ = [
    "FINISH_CONTEXT_FULL", "FINISH_ERROR", "FINISH_LENGTH", "FINISH_NONE", "FINISH_STOP",
    "LLAMA_NATIVE_FUNCTIONS", "LLAMA_NATIVE_STRUCTS", "POP_EMPTY", "POP_PIECES",
    "POP_TIMEOUT_FIRST", "POP_TIMEOUT_TOTAL", "AbiError", "DeadlineAbort", "Graph", "LlamaApi",
    "LlamaNativeContext", "LlamaNativeJob", "Relay", "Simulation", "llama_log_drain",
    "llama_log_sink_install", "llama_logs_pending", "llama_native_declared",
]
