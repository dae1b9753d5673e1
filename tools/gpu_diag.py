"""Which libstdc++ a CUDA build of llama-cpp-python binds to, by import order (issue #7).

    python3 tools/gpu_diag.py ORDER MODEL     ORDER: llama | numpy | routekit | shared

Imports in the named order (``llama``: llama_cpp alone; ``numpy``: numpy, then llama_cpp;
``routekit``: routekit, then llama_cpp directly; ``shared``: routekit, then llama_cpp the way
routekit imports it, libstdc++ made global first), prints for every loaded library of
llama-cpp-python its std:: imports (how many are bound outside libstdc++, how many of those
libstdc++ defines, how many bind to each file, the first few), then loads MODEL with full
offload and prints LOADED. A crash shows as the missing LOADED line and the exit status.
``cxx_runtime`` is loaded from its file alone, so that reading the bindings does not import
routekit (which changes the order). Also used on a CPU by tools/static_cxx_check.sh.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter

order, model = sys.argv[1], sys.argv[2]
if order == "numpy":
    import numpy  # noqa: F401
elif order == "routekit":
    import routekit  # noqa: F401
elif order == "shared":
    from routekit.providers.llama_cpp.load import llama_module

    llama_module()
import llama_cpp  # noqa: E402

spec = importlib.util.find_spec("routekit")
assert spec is not None and spec.origin is not None
path = os.path.join(os.path.dirname(spec.origin), "providers", "llama_cpp", "cxx_runtime.py")
alone = importlib.util.spec_from_file_location("cxx_runtime_alone", path)
assert alone is not None and alone.loader is not None
cr = importlib.util.module_from_spec(alone)
alone.loader.exec_module(cr)

lib = llama_cpp.llama_cpp._lib
folder = os.path.dirname(lib._name)
core = sys.modules.get("routekit._core")
print(f"order {order}: global lookup finds {cr.symbol_file(None)}; routekit._core shared "
      f"{getattr(core, 'CXX_RUNTIME_SHARED', None)!r}")
libdl = cr._libdl()
for name in sorted(os.listdir(folder)):
    full = os.path.join(folder, name)
    handle = libdl.dlopen(os.fsencode(full), 2 | 4)  # RTLD_NOW | RTLD_NOLOAD: loaded ones only
    if not handle:
        continue
    try:
        bound = cr.std_bindings(handle, full)
    finally:
        libdl.dlclose(handle)
    if bound is None:
        print(f"  {name}: bindings unreadable")
        continue
    out = [(s, p) for s, p in bound if p is not None and not cr._is_libstdcxx(p)]
    real = [(s, p) for s, p in out if cr.libstdcxx_defines(s)]
    by_file = Counter(os.path.basename(p) if p else "unbound" for _, p in bound)
    print(f"  {name}: {len(bound)} std:: imports, {len(out)} bound outside libstdc++, "
          f"{len(real)} of them defined by libstdc++ too; by file {dict(by_file)}")
    for s, p in (real or out)[:4]:
        print(f"      {s} -> {p}")
print("conflict:", cr.llama_cxx_conflict(llama_cpp))
sys.stdout.flush()
llm = llama_cpp.Llama(model_path=model, n_gpu_layers=-1, n_ctx=512, verbose=False)
print("LOADED", llm.create_completion("hi", max_tokens=2)["usage"]["completion_tokens"])
