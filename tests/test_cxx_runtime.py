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
    """Run ``code`` in a new interpreter (routekit under test importable, and ``cxx_runtime``
    importable alone: importing routekit itself makes libstdc++ global, which the tests of the
    mechanism must be free of); its last stdout line, parsed as JSON."""
    alone = os.path.join(routekit_path(), "routekit", "providers", "llama_cpp", "cxx_runtime.py")
    code = ("import importlib.util as _u, sys as _s\n"
            f"_spec = _u.spec_from_file_location('cxx_runtime', {alone!r})\n"
            "_s.modules['cxx_runtime'] = _u.module_from_spec(_spec)\n"
            "_spec.loader.exec_module(_s.modules['cxx_runtime'])\n" + code)
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
        "from cxx_runtime import share_libstdcxx, symbol_file\n"
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


def test_importing_routekit_makes_the_libstdcxx_it_loaded_global() -> None:
    # routekit._core is C++: Python opens it RTLD_LOCAL, so importing routekit loads libstdc++
    # privately, as numpy does. `import routekit` then `import llama_cpp` (a benchmark script
    # comparing direct calls) must not be the crashing order: _core shares it at import. A
    # _core linked with libstdc++ statically (a toolchain that does so) loads none: nothing
    # to share, and nothing of its copy is visible (the next test).
    from routekit import _core

    readelf = shutil.which("readelf")
    assert readelf, "binutils' readelf (installed with the compiler that builds routekit._core)"
    dynamic = "libstdc++" in subprocess.run([readelf, "-d", _core.__file__], capture_output=True,
                                            text=True, timeout=60, check=True).stdout
    before, shared, after, conflict = _fresh(
        "import json, sys\n"
        "from cxx_runtime import symbol_file\n"
        "before = symbol_file(None)\n"
        "import routekit\n"
        "from routekit import _core\n"
        "after = symbol_file(None)\n"
        "import llama_cpp  # directly, not through routekit's llama_module()\n"
        "from routekit.providers.llama_cpp.cxx_runtime import llama_cxx_conflict\n"
        "print(json.dumps([before, _core.CXX_RUNTIME_SHARED, after,\n"
        "                  llama_cxx_conflict(llama_cpp)]))\n")
    assert before is None
    if dynamic:
        assert _is_libstdcxx(shared) and _is_libstdcxx(after)
        assert os.path.realpath(shared) == os.path.realpath(after)
    else:
        assert shared == "" and after is None
    assert conflict is None


def test_core_exports_no_copy_of_the_cxx_runtime() -> None:
    # Linked with libstdc++ statically, _core would export the copy (3,600 std:: symbols
    # here, 106 of them GNU_UNIQUE: facet ids the dynamic linker makes process-wide, whatever
    # RTLD_LOCAL says). CMakeLists.txt keeps static archives' symbols private.
    from routekit import _core

    nm = shutil.which("nm")
    assert nm, "binutils' nm (installed with the compiler that builds routekit._core)"
    out = subprocess.run([nm, "-D", "--defined-only", _core.__file__], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    kinds = [line.split()[1] for line in out.splitlines() if len(line.split()) == 3]
    names = {line.split()[-1] for line in out.splitlines()}
    assert "PyInit__core" in names  # the table was read
    assert "u" not in kinds  # no GNU_UNIQUE definitions
    # Nothing of libstdc++'s own code: what the crash ran in, and what routekit shares.
    assert not names & {"_ZNSo9_M_insertIlEERSoT_", "_ZNSt6localeC1Ev", "_ZSt4cout"}


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
    sibling_file = os.path.join(os.path.dirname(own_copy), "libllama.so")
    owner, reason, sibling, own, after = _fresh(
        "import ctypes, json, numpy\n"
        "from cxx_runtime import cxx_conflict, share_libstdcxx, symbol_file\n"
        f"lib = ctypes.CDLL({own_copy!r})  # RTLD_LOCAL, as llama-cpp-python opens libllama\n"
        "owner = symbol_file(lib._handle)\n"
        "reason = cxx_conflict(lib._handle, '/elsewhere/libllama.so')\n"
        f"sibling = cxx_conflict(lib._handle, {sibling_file!r})\n"
        f"own = cxx_conflict(lib._handle, {own_copy!r})\n"
        "share_libstdcxx()\n"
        "after = cxx_conflict(lib._handle, '/elsewhere/libllama.so')\n"
        "print(json.dumps([owner, reason, sibling, own, after]))\n")
    assert owner == own_copy
    # Another library's copy: it was loaded first and exports it.
    assert reason is not None and own_copy in reason and "exports the copy" in reason
    assert "Import llama_cpp before it" in reason and "RTLD_GLOBAL" in reason
    # A copy inside the build itself (beside libllama, as libggml-cuda's): libstdc++ came first.
    assert sibling is not None and own_copy in sibling and "numpy" in sibling
    assert "RTLD_GLOBAL" in sibling  # says what to do about it
    assert own is None  # a library's own static copy (-static-libstdc++) is not a conflict
    assert after is None  # the global scope is searched first


@pytest.fixture(scope="module")
def user_of_copy(own_copy: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A shared library that calls std::ostream::_M_insert<long> and needs only ``own_copy``,
    another library's copy in another folder: its call is bound to that copy unless libstdc++
    is global when it is opened."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert compiler
    copies = Path(own_copy).parent
    folder = tmp_path_factory.mktemp("user")
    source = folder / "user.c"
    source.write_text("extern void _ZNSo9_M_insertIlEERSoT_(void);\n"
                      "void print_info(void) { _ZNSo9_M_insertIlEERSoT_(); }\n")
    lib = folder / "libuser.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(lib), str(source), f"-L{copies}",
                    "-lowncopy", f"-Wl,-rpath,{copies}"], check=True, timeout=120)
    shutil.copy(lib, folder / "libuser2.so")
    return str(lib)


def test_the_binding_itself_is_read_from_the_library_s_slots(
    own_copy: str, user_of_copy: str
) -> None:
    second = str(Path(user_of_copy).parent / "libuser2.so")
    bound, reason, after_share, second_bound, second_reason = _fresh(
        "import ctypes, json, numpy\n"
        "from cxx_runtime import cxx_conflict, share_libstdcxx, std_bindings\n"
        f"user = ctypes.CDLL({user_of_copy!r})\n"
        f"bound = std_bindings(user._handle, {user_of_copy!r})\n"
        f"reason = cxx_conflict(user._handle, {user_of_copy!r})\n"
        "share_libstdcxx()\n"
        f"after = cxx_conflict(user._handle, {user_of_copy!r})\n"
        f"second = ctypes.CDLL({second!r})  # opened once libstdc++ is global\n"
        f"print(json.dumps([bound, reason, after, std_bindings(second._handle, {second!r}),\n"
        f"                  cxx_conflict(second._handle, {second!r})]))\n")
    assert bound == [["_ZNSo9_M_insertIlEERSoT_", own_copy]]
    assert reason is not None and "_ZNSo9_M_insertIlEERSoT_" in reason and own_copy in reason
    # Sharing later does not rebind what was bound at load: still a conflict (a lookup from
    # the library would now find libstdc++ first and miss it).
    assert after_share == reason
    ((name, path),) = second_bound
    assert name == "_ZNSo9_M_insertIlEERSoT_" and _is_libstdcxx(path)
    assert second_reason is None


def _build(folder: Path, name: str, source: str, *link: str) -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert compiler
    (folder / f"{name}.c").write_text(source)
    lib = folder / f"lib{name}.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(lib), str(folder / f"{name}.c"),
                    f"-L{folder}", *link, "-Wl,-rpath,$ORIGIN"], check=True, timeout=120)
    return str(lib)


# A build like the H200's llama-cpp-python (every library carries libstdc++ statically): a
# copy defining _M_insert<long> and a std:: function libstdc++ lacks (as libggml-cuda's
# std::__at_thread_exit), and beside it the libraries that use it.
_ONLY = "_ZNSt24routekit_only_in_a_copyEv"
_LOCALE = "_ZNSt6localeC1Ev"  # std::locale::locale(): libstdc++'s, not in the copy


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("build")
    _build(folder, "copy", f"void _ZNSo9_M_insertIlEERSoT_(void) {{}}\nvoid {_ONLY}(void) {{}}\n")
    calls = f"_ZNSo9_M_insertIlEERSoT_(); {_ONLY}();"
    decl = f"extern void _ZNSo9_M_insertIlEERSoT_(void);\nextern void {_ONLY}(void);\n"
    # Needs the copy only: all it calls is bound inside the build, whatever came first.
    _build(folder, "alone", decl + f"void run(void) {{ {calls} }}\n", "-lcopy")
    # Needs the copy, then libstdc++ (for std::locale): split unless libstdc++ is global.
    for name in ("mixed", "mixed2"):
        _build(folder, name, decl + f"extern void {_LOCALE}(void);\n"
               f"void run(void) {{ {calls} {_LOCALE}(); }}\n", "-lcopy", "-lstdc++")
    return folder


def test_one_runtime_for_all_is_no_conflict_but_a_mix_is(build: Path) -> None:
    alone, mixed, mixed2 = (str(build / f"lib{n}.so") for n in ("alone", "mixed", "mixed2"))
    defines, bound_alone, alone_reason, bound_mixed, mixed_reason, late, late_bound = _fresh(
        "import ctypes, json, numpy  # libstdc++ loaded, privately\n"
        "from cxx_runtime import (cxx_conflict, libstdcxx_defines, share_libstdcxx,\n"
        "                         std_bindings)\n"
        f"alone, mixed = ctypes.CDLL({alone!r}), ctypes.CDLL({mixed!r})\n"
        "share_libstdcxx()\n"
        f"late = ctypes.CDLL({mixed2!r})\n"
        "names = ['_ZNSo9_M_insertIlEERSoT_', " + repr(_ONLY) + ", " + repr(_LOCALE) + "]\n"
        "print(json.dumps([[libstdcxx_defines(n) for n in names],\n"
        f"    std_bindings(alone._handle, {alone!r}), cxx_conflict(alone._handle, {alone!r}),\n"
        f"    std_bindings(mixed._handle, {mixed!r}), cxx_conflict(mixed._handle, {mixed!r}),\n"
        f"    cxx_conflict(late._handle, {mixed2!r}), std_bindings(late._handle, {mixed2!r})]))\n")
    assert defines == [True, False, True]
    copy = str(build / "libcopy.so")
    # All in the build's own copy (the H200 build imported first): one runtime, it loads.
    assert dict(bound_alone) == {"_ZNSo9_M_insertIlEERSoT_": copy, _ONLY: copy}
    assert alone_reason is None
    # _M_insert<long> in the copy, std::locale in libstdc++: the split that crashed.
    bound = dict(bound_mixed)
    assert bound["_ZNSo9_M_insertIlEERSoT_"] == copy and _is_libstdcxx(bound[_LOCALE])
    assert mixed_reason is not None and copy in mixed_reason
    assert "_ZNSo9_M_insertIlEERSoT_" in mixed_reason and _ONLY not in mixed_reason
    # Opened once libstdc++ is global: all it defines is libstdc++'s; the copy-only function
    # stays the copy's (it can come from nowhere else), which is no conflict.
    bound = dict(late_bound)
    assert _is_libstdcxx(bound["_ZNSo9_M_insertIlEERSoT_"]) and _is_libstdcxx(bound[_LOCALE])
    assert bound[_ONLY] == copy
    assert late is None


def test_the_build_s_libraries_are_judged_together(build: Path) -> None:
    # Each consistent alone, split together: libalone bound to the build's copy (opened
    # before libstdc++ was global), libmixed2 (standing for libllama) to libstdc++ (after).
    alone, mixed2 = str(build / "libalone.so"), str(build / "libmixed2.so")
    each, together = _fresh(
        "import ctypes, json, types\n"
        "from cxx_runtime import cxx_conflict, llama_cxx_conflict, share_libstdcxx\n"
        f"alone = ctypes.CDLL({alone!r})\n"
        "share_libstdcxx()\n"
        f"llama = ctypes.CDLL({mixed2!r})\n"
        "module = types.SimpleNamespace(llama_cpp=types.SimpleNamespace(_lib=llama))\n"
        f"print(json.dumps([[cxx_conflict(alone._handle, {alone!r}),\n"
        f"                   cxx_conflict(llama._handle, {mixed2!r})],\n"
        "                  llama_cxx_conflict(module)]))\n")
    assert each == [None, None]
    assert together is not None and str(build / "libcopy.so") in together


def test_a_library_replaced_on_disk_since_it_was_loaded_is_not_read(
    own_copy: str, user_of_copy: str
) -> None:
    # An upgrade that rewrites the file under a running process: its offsets no longer
    # describe what is mapped, so no slot is read (the lookup fallback answers instead).
    third = str(Path(user_of_copy).parent / "libuser3.so")
    shutil.copy(user_of_copy, third)
    bound, reason = _fresh(
        "import ctypes, json, os, shutil\n"
        "from cxx_runtime import cxx_conflict, std_bindings\n"
        f"lib = ctypes.CDLL({third!r})\n"
        f"shutil.copy({own_copy!r}, {third!r} + '.new')\n"
        f"os.replace({third!r} + '.new', {third!r})\n"
        f"print(json.dumps([std_bindings(lib._handle, {third!r}),\n"
        f"                  cxx_conflict(lib._handle, {third!r})]))\n")
    assert bound is None
    assert reason is not None and own_copy in reason  # found by the lookup


def test_every_loaded_library_beside_libllama_is_checked(own_copy: str, user_of_copy: str
                                                         ) -> None:
    # libllama itself is clean here; libuser, loaded from the same folder (as libggml-base is
    # beside libllama), is bound to the private copy. libuser2 lies there too, not loaded.
    folder = Path(user_of_copy).parent
    clean = folder / "libclean.so"
    (folder / "clean.c").write_text("int llama_clean(void) { return 0; }\n")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert compiler
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(clean), str(folder / "clean.c")],
                   check=True, timeout=120)
    before, reason = _fresh(
        "import ctypes, json, types\n"
        "from cxx_runtime import llama_cxx_conflict\n"
        f"module = types.SimpleNamespace(llama_cpp=types.SimpleNamespace(\n"
        f"    _lib=ctypes.CDLL({str(clean)!r})))\n"
        "before = llama_cxx_conflict(module)\n"
        f"ctypes.CDLL({user_of_copy!r})\n"
        "print(json.dumps([before, llama_cxx_conflict(module)]))\n")
    assert before is None  # libuser not loaded yet; libuser2 never is
    assert reason is not None and own_copy in reason


# std::num_put<char>::id: a GNU_UNIQUE object (a facet id), one of the 106 that a library
# linked with -static-libstdc++ exports unless it keeps them private.
_NUM_PUT_ID = "_ZNSt7num_putIcSt19ostreambuf_iteratorIcSt11char_traitsIcEEE2idE"


@pytest.fixture(scope="module")
def exported_copy(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A C++ library linked with libstdc++ statically that exports the copy, GNU_UNIQUE facet
    ids included: routekit's _core as the GPU image's toolchain built it before CMakeLists.txt
    kept static archives private (tools/static_cxx_check.sh builds both)."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    assert compiler, "a C++ compiler is needed (the one that builds routekit._core)"
    folder = tmp_path_factory.mktemp("exported")
    (folder / "copy.cpp").write_text(
        "#include <sstream>\n"
        'extern "C" int copy_format(long v) {\n'
        "    std::ostringstream out; out << v; return (int)out.str().size(); }\n")
    lib = folder / "libexported.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-static-libstdc++", "-o", str(lib),
                    str(folder / "copy.cpp")], check=True, timeout=180)
    return str(lib)


def test_a_unique_object_won_by_an_exported_copy_still_counts(
    exported_copy: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # A library that needs only libstdc++ (standing for llama.cpp) is loaded after a library
    # exporting a copy was. Its import of a facet id is bound to the copy's: the dynamic linker
    # keeps one definition of a GNU_UNIQUE object per process, the first loaded, whatever
    # RTLD_LOCAL says. A lookup of that name from libstdc++ itself answers with the copy's too,
    # so whether libstdc++ defines it must not be judged by where the lookup lands.
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    assert compiler
    folder = tmp_path_factory.mktemp("uniqueuser")
    (folder / "user.c").write_text(
        f"extern char {_NUM_PUT_ID}[];\n"
        f"void *facet_id(void) {{ return {_NUM_PUT_ID}; }}\n")
    user = folder / "libuser.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(user), str(folder / "user.c"),
                    "-lstdc++"], check=True, timeout=120)
    formatted, lookup, defines, bound, reason = _fresh(
        "import ctypes, json\n"
        "from cxx_runtime import cxx_conflict, libstdcxx_defines, std_bindings, symbol_file\n"
        f"copy = ctypes.CDLL({exported_copy!r})\n"
        "formatted = copy.copy_format(12345)\n"
        "real = ctypes.CDLL('libstdc++.so.6')  # privately, as numpy loads it\n"
        f"user = ctypes.CDLL({str(user)!r})\n"
        f"print(json.dumps([formatted, symbol_file(real._handle, {_NUM_PUT_ID!r}),\n"
        f"    libstdcxx_defines({_NUM_PUT_ID!r}), std_bindings(user._handle, {str(user)!r}),\n"
        f"    cxx_conflict(user._handle, {str(user)!r})]))\n")
    assert formatted == 5
    assert lookup == exported_copy  # the precondition: the copy won the unique object
    assert defines is True
    assert bound == [[_NUM_PUT_ID, exported_copy]]
    assert reason is not None and exported_copy in reason and _NUM_PUT_ID in reason
    assert "exports the copy" in reason and "--exclude-libs" in reason


def test_the_real_libllama_here_has_no_conflict() -> None:
    from routekit.providers.llama_cpp.cxx_runtime import (libstdcxx_defines, llama_cxx_conflict,
                                                          std_bindings, symbol_file)

    # conftest made libstdc++ global before this module imported llama_cpp, as routekit does.
    assert _is_libstdcxx(symbol_file(None))
    lib = llama_cpp.llama_cpp._lib
    # A lookup from libllama's own handle searches its dependencies, not the global scope: it
    # finds libstdc++ unless the build carries its own copy (every CUDA build on the GPU image,
    # and a CPU build linked with -static-libstdc++: tools/static_cxx_check.sh), in which case
    # it finds that copy in the build's folder, and nothing else.
    found = symbol_file(lib._handle)
    assert found is not None
    assert _is_libstdcxx(found) or (
        os.path.dirname(os.path.realpath(found)) == os.path.dirname(os.path.realpath(lib._name)))
    bindings = std_bindings(lib._handle, lib._name)
    assert bindings is not None and len(bindings) > 10  # libllama imports many std:: symbols
    # Everything libstdc++ defines is bound to it (a CUDA build takes what it does not export,
    # std::__at_thread_exit, from libggml-cuda's copy); on this CPU build, everything is.
    assert [(name, path) for name, path in bindings
            if path is not None and not _is_libstdcxx(path) and libstdcxx_defines(name)] == []
    assert llama_cpp.llama_supports_gpu_offload() or all(
        _is_libstdcxx(path) for _, path in bindings if path is not None)
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


def test_files_that_are_not_whole_elf_libraries_read_as_nothing(tmp_path: Path) -> None:
    from routekit.providers.llama_cpp.cxx_runtime import std_imports

    real = Path(llama_cpp.llama_cpp._lib._name).read_bytes()
    cases = {"garbage": os.urandom(4096), "empty": b"", "head": real[:64],
             "half": real[: len(real) // 2], "elf32": real[:4] + b"\x01" + real[5:4096]}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert std_imports(str(path)) is None, name
    assert std_imports(str(tmp_path / "missing.so")) is None
    whole = std_imports(llama_cpp.llama_cpp._lib._name)
    assert whole and all(n.startswith(("_ZNS", "_ZNKS", "_ZSt")) for n, _ in whole)
