"""Loading one in-process model: from a ``ModelConfig`` to a ``llama_cpp.Llama`` in its slot.

Owns: importing ``llama_cpp`` (lazily, with an install hint when it is missing), the keyword
arguments ``Llama`` gets (model file, padded ``n_ctx``, GPU offload, chat format, threads),
constructing it under the AMX workaround of ``_llama_compat``, and publishing it to its
``ModelSlot`` exactly once even when several threads ask together or ``close()`` races the
load. ``LlamaModel`` names the part of ``Llama`` routekit calls. Finding and assembling the
model file lives in ``_model_files``; the gate in ``_llama_gate``. Must not decode.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ... import _constants as C
from ..._exceptions import ConfigError, ProviderError
from .model_files import resolve_model_path
from . import cxx_runtime
from .compat import (
    construction_guard,
    flush_llama_logs,
    probe_load,
    probe_wanted,
    route_llama_logs,
)
from .gate import LlamaModel, free_llama

if TYPE_CHECKING:
    from .model_files import ProgressCallback
    from .gate import ModelSlot

__all__ = ["llama_module", "load", "resolve_params"]

log = logging.getLogger("routekit.providers.llama_cpp")

# llama.cpp allocates contexts in multiples of this many tokens.
_CTX_PAD = 256


def llama_module() -> ModuleType:
    """``llama_cpp``, imported the first time with libstdc++ made global first (the CUDA
    build's crash in ``cxx_runtime``'s doc)."""
    if "llama_cpp" not in sys.modules:
        cxx_runtime.share_libstdcxx()
    try:
        import llama_cpp
    except ImportError as exc:
        raise ProviderError(
            f"llama-cpp-python is not importable ({exc}); install it with: pip install routekit"
        ) from exc
    return llama_cpp


def load(slot: ModelSlot, *, progress: ProgressCallback | None, translate_config: bool
         ) -> LlamaModel:
    """The slot's ``Llama``, loading it first if needed (once, whoever else asks).

    ``translate_config``: at request time a missing model file is a ``ProviderError`` (this
    candidate fails, the next one serves); at warm-up it stays the ``ConfigError`` it is.
    """
    llm = slot.llm
    if llm is not None:
        return llm
    with slot.load_lock:
        if slot.llm is not None:
            return slot.llm
        if slot.closing:
            raise slot.closed_error()
        try:
            params = resolve_params(slot, progress)
        except ConfigError as exc:
            if not translate_config:
                raise
            # At request time a missing file is this candidate's failure: move on.
            raise ProviderError(
                f"in-process model {slot.name!r} is unavailable: "
                + "; ".join(i.message for i in exc.issues),
                provider=slot.provider, model=slot.name,
            ) from exc
        llama_cpp = llama_module()
        t0 = time.perf_counter()
        llm = _construct(llama_cpp, params, slot)
        actual = llm.n_ctx()
        if actual > params["n_ctx"]:
            # A llama.cpp with another padding rule: reload at its size (see resolve_params).
            log.debug("llama.cpp padded n_ctx %s to %s; reloading", params["n_ctx"], actual)
            free_llama(llm)
            params = {**params, "n_ctx": actual}
            llm = _construct(llama_cpp, params, slot)
        log.info(
            "loaded in-process model %r in %.2f s (n_ctx=%s, n_gpu_layers=%s, chat_format=%s)",
            slot.name, time.perf_counter() - t0, params["n_ctx"], params["n_gpu_layers"],
            params.get("chat_format"),
        )
        slot.params = params
        with slot.cond:
            if slot.closing and not slot.busy:
                free, slot.llm = llm, None
            else:
                free, slot.llm = None, llm
        if free is not None:
            free_llama(free)
            raise slot.closed_error()
        return llm


def resolve_params(slot: ModelSlot, progress: ProgressCallback | None) -> dict[str, Any]:
    """The keyword arguments ``llama_cpp.Llama`` gets for the slot's model. Resolves the model
    file (which may assemble it) but loads nothing."""
    cfg = slot.config
    path = resolve_model_path(cfg, name=slot.name, progress=progress)
    if cfg.n_gpu_layers is not None:
        n_gpu_layers = cfg.n_gpu_layers
    else:
        # All layers on the GPU when this llama-cpp-python build can offload; else CPU.
        n_gpu_layers = -1 if llama_module().llama_supports_gpu_offload() else 0
    n_ctx = cfg.n_ctx or C.DEFAULT_N_CTX
    params: dict[str, Any] = {
        "model_path": str(path),
        # llama.cpp pads the context it allocates to a multiple of 256, while
        # llama-cpp-python sizes its token buffer by the n_ctx it was given: prompts
        # between the two then crash inside eval() instead of raising the context-window
        # error. Asking for the padded size keeps both equal (the memory is spent anyway).
        "n_ctx": -(-n_ctx // _CTX_PAD) * _CTX_PAD,
        "n_gpu_layers": n_gpu_layers,
        "verbose": False,
    }
    chat_format = cfg.chat_format
    if chat_format is None and cfg.path is None:
        # Package models (the default gemma GGUF) carry no chat template: without a format
        # llama-cpp-python guesses one and the model answers with an empty message.
        chat_format = C.DEFAULT_MODEL_CHAT_FORMAT
    if chat_format is not None:
        params["chat_format"] = chat_format
    if cfg.n_threads is not None:
        params["n_threads"] = cfg.n_threads
    return params


# One Llama(...) at a time in the process: with verbose=False llama-cpp-python points fds
# 1 and 2 at /dev/null while it loads (suppress_stdout_stderr) and puts back what it saw.
# Two loads at once interleave that: the second saves /dev/null as "the original", and the
# process's stdout and stderr stayed silenced for good (3 runs of 3, 8 tiny models loaded
# by 8 threads). Loads are seconds of I/O and compute each; serialising them costs little.
_CONSTRUCT_LOCK = threading.Lock()


def _construct(llama_cpp: ModuleType, params: dict[str, Any], slot: ModelSlot) -> LlamaModel:
    conflict = cxx_runtime.llama_cxx_conflict(llama_cpp)
    if conflict is not None:
        # Bound at import, in another library's libstdc++: any load would crash the process.
        raise ProviderError(f"not loading in-process model {slot.name!r}: {conflict}",
                            provider=slot.provider, model=slot.name)
    route_llama_logs(llama_cpp)
    if probe_wanted(llama_cpp, params):
        # A crash inside llama.cpp cannot be caught: try this load in a child process first.
        crashed = probe_load(params)
        if crashed is not None:
            raise ProviderError(
                f"llama.cpp crashed loading model {slot.name!r} from {params['model_path']} "
                f"(n_gpu_layers {params.get('n_gpu_layers')}) in a probe process ({crashed}); "
                "not loading it in this process",
                provider=slot.provider, model=slot.name,
            )
    try:
        with _CONSTRUCT_LOCK, construction_guard(llama_cpp) as guarded:
            if guarded:
                log.debug("loading %r without extra buffer types (AMX crash workaround)",
                          slot.name)
            llm: LlamaModel = llama_cpp.Llama(**params)
            return llm
    except Exception as exc:
        raise ProviderError(
            f"llama.cpp could not load model {slot.name!r} from {params['model_path']}: {exc}",
            provider=slot.provider, model=slot.name,
        ) from exc
    finally:
        flush_llama_logs()
