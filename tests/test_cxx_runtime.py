"""The C++ runtime llama.cpp binds to (``providers/llama_cpp/cxx_runtime.py``).

The fault, found on an H100 (issue #7): a CUDA build's ``libggml-cuda.so`` carries its own copy
of libstdc++; when numpy (or the jaxtyping pytest plugin, which imports it) had loaded
libstdc++ privately before ``llama_cpp`` was imported, libllama bound to that copy and every
model load died with SIGSEGV. This CPU build links libstdc++ normally, so the crash cannot
happen here; these tests check the mechanism each half of the fix relies on, with a stand-in
library that exports the symbol as libggml-cuda does. Each runs in a fresh interpreter: which
libraries are global is process state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import http_provider, routekit_path  # noqa: E402
from tinygguf import write_tiny_gguf  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="dlsym/dladdr scopes as glibc has them")

llama_cpp = pytest.importorskip("llama_cpp")

_TESTS = str(Path(__file__).parent)


def _fresh(code: str, timeout: float = 120) -> Any:
    """Run ``code`` in a new interpreter (routekit under test importable); its last stdout
    line, parsed as JSON."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([routekit_path(), _TESTS]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout, env=env, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _is_libstdcxx(path: str | None) -> bool:
    return path is not None and os.path.basename(path).startswith("libstdc++")


def test_numpy_loads_libstdcxx_privately_and_sharing_makes_it_global() -> None:
    # The precondition of the crash, as it is on this machine too: after `import numpy`,
    # libstdc++ is in the process but not in the global scope; share_libstdcxx() puts it there.
    before, after = _fresh(
        "import json, numpy\n"
        "from routekit.providers.llama_cpp.cxx_runtime import share_libstdcxx, symbol_file\n"
        "before = symbol_file(None)\n"
        "assert share_libstdcxx()\n"
        "print(json.dumps([before, symbol_file(None)]))\n")
    assert before is None
    assert _is_libstdcxx(after)


def test_routekit_makes_libstdcxx_global_before_it_imports_llama_cpp() -> None:
    shared, bound, conflict = _fresh(
        "import json, sys, numpy\n"
        "from routekit.providers.llama_cpp.load import llama_module\n"
        "from routekit.providers.llama_cpp.cxx_runtime import llama_cxx_conflict, symbol_file\n"
        "assert 'llama_cpp' not in sys.modules\n"
        "lc = llama_module()\n"
        "print(json.dumps([symbol_file(None), symbol_file(lc.llama_cpp._lib._handle),\n"
        "                  llama_cxx_conflict(lc)]))\n")
    assert _is_libstdcxx(shared)  # global: searched before any library's own copy
    # libllama's own search order (dlsym on its handle) finds libstdc++ on this CPU build; on
    # a CUDA build it may find libggml-cuda's copy, which the global scope now overrides.
    assert _is_libstdcxx(bound) or llama_cpp.llama_supports_gpu_offload()
    assert conflict is None


@pytest.fixture(scope="module")
def own_copy(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A shared library that exports std::ostream::_M_insert<long> itself, as the CUDA
    build's libggml-cuda.so does (with ~3,400 other std:: symbols)."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert compiler, "a C compiler is needed (the one that builds routekit._core)"
    folder = tmp_path_factory.mktemp("owncopy")
    source = folder / "owncopy.c"
    source.write_text("void _ZNSo9_M_insertIlEERSoT_(void) {}\n")
    lib = folder / "libowncopy.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(lib), str(source)], check=True,
                   timeout=120)
    return str(lib)


def test_a_library_bound_to_its_own_copy_is_named_until_libstdcxx_is_global(
    own_copy: str
) -> None:
    owner, reason, own, after = _fresh(
        "import ctypes, json, numpy\n"
        "from routekit.providers.llama_cpp.cxx_runtime import (cxx_conflict, share_libstdcxx,\n"
        "                                                      symbol_file)\n"
        f"lib = ctypes.CDLL({own_copy!r})  # RTLD_LOCAL, as llama-cpp-python opens libllama\n"
        "owner = symbol_file(lib._handle)\n"
        "reason = cxx_conflict(lib._handle, '/elsewhere/libllama.so')\n"
        f"own = cxx_conflict(lib._handle, {own_copy!r})\n"
        "share_libstdcxx()\n"
        "after = cxx_conflict(lib._handle, '/elsewhere/libllama.so')\n"
        "print(json.dumps([owner, reason, own, after]))\n")
    assert owner == own_copy
    assert reason is not None and own_copy in reason and "numpy" in reason
    assert "RTLD_GLOBAL" in reason  # says what to do about it
    assert own is None  # a library's own static copy (-static-libstdc++) is not a conflict
    assert after is None  # the global scope is searched first


def test_the_real_libllama_here_has_no_conflict() -> None:
    from routekit.providers.llama_cpp.cxx_runtime import llama_cxx_conflict, symbol_file

    # conftest made libstdc++ global before this module imported llama_cpp, as routekit does.
    assert _is_libstdcxx(symbol_file(None))
    if not llama_cpp.llama_supports_gpu_offload():  # a CUDA build carries its own copy
        assert _is_libstdcxx(symbol_file(llama_cpp.llama_cpp._lib._handle))
    assert llama_cxx_conflict(llama_cpp) is None


def test_a_conflict_refuses_the_load_and_the_plan_moves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: Any
) -> None:
    # Where llama_cpp was imported too early to be fixed, the load must fail as a provider
    # error (no llama.cpp call at all), so the router answers from the next candidate.
    from routekit import Router
    from routekit.providers.llama_cpp import cxx_runtime

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    calls: list[object] = []
    monkeypatch.setattr(cxx_runtime, "llama_cxx_conflict",
                        lambda module: calls.append(module) or "bound to another libstdc++")
    monkeypatch.setattr(llama_cpp, "Llama", lambda **kw: pytest.fail("llama.cpp was called"))
    config = {
        "providers": {"local": {"kind": "llama_cpp"}, "backup": http_provider(fault.url("ok"))},
        "models": {"tiny": {"provider": "local", "path": str(path), "chat_format": "chatml",
                            "n_ctx": 256, "n_threads": 1},
                   "spare": {"provider": "backup", "model_id": "spare"}},
        "fallback_chains": {"tiny": {"chain": ["spare"]}},
    }
    with Router(config, health_probes=False) as router:
        reply = router.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        health = router.health()
    assert calls and calls[0] is llama_cpp
    assert reply.choices[0].message.content == fault.text
    first, second = reply.route.attempts
    assert (first.model, first.outcome, first.error_type) == ("tiny", "error", "ProviderError")
    assert "not loading in-process model 'tiny'" in str(first.error)
    assert "bound to another libstdc++" in str(first.error)
    assert (second.model, second.outcome) == ("spare", "ok")
    # health() says so before any request fails.
    local = health["local"]
    assert not local.ok and local.probe is not None
    assert "bound to another libstdc++" in local.probe.detail
