#!/usr/bin/env bash
# Issue #7's libstdc++ question on a CPU, no GPU needed: the GPU image's toolchain links
# libstdc++ statically into every library it builds (llama-cpp-python's and routekit's _core),
# and llama.cpp crashed there when its C++ calls were split between copies. This builds both
# that way here and shows what each import order binds llama.cpp to, with routekit's _core as
# it is built now (static archives kept private) and as it was (exporting its copy), then runs
# the in-process test modules against that build.
#
#     bash tools/static_cxx_check.sh            (~8 min on 2 cores; the llama build is kept)
#
# WORK (default /tmp/static-cxx) holds the builds and out/summary.txt. The llama-cpp-python
# source is .gpukit's trimmed sdist when present (bash ../shared/gpu/make-kit.sh), else the
# installed version's sdist from the package index. PYTHON (default .venv/bin/python) runs the
# checks; it needs routekit's dependencies and numpy. MODEL defaults to the packaged gemma.
# A CPU build does not crash on a split (only the CUDA one was seen to), so what this shows is
# the bindings: with _core as built now, routekit first must bind exactly as llama_cpp alone.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
W=${WORK:-/tmp/static-cxx}
PY=${PYTHON:-$root/.venv/bin/python}
O=$W/out
mkdir -p "$W" "$O"
: > "$O/summary.txt"
say() { echo "$*" | tee -a "$O/summary.txt"; }
flags="-static-libstdc++"

if [ ! -d "$W/site/llama_cpp/lib" ]; then
  rm -rf "$W/src-llama" && mkdir -p "$W/src-llama"
  sdist=$(ls .gpukit/llama_cpp_python-*.tar.gz 2>/dev/null | head -1)
  if [ -z "$sdist" ]; then
    v=$("$PY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))') || exit 2
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$W/src-llama" "llama-cpp-python==$v" \
      || exit 2
    sdist=$(ls "$W"/src-llama/llama_cpp_python-*.tar.gz | head -1)
  fi
  tar xzf "$sdist" -C "$W/src-llama" || exit 2
  say "building llama-cpp-python from $(basename "$sdist") with $flags (log: $W/llama-build.log)"
  ( cd "$W"/src-llama/llama_cpp_python-*/ && \
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DCMAKE_SHARED_LINKER_FLAGS=$flags -DCMAKE_MODULE_LINKER_FLAGS=$flags" \
    "$PY" -m pip install -q --no-deps --no-cache-dir --target "$W/site" . ) \
    > "$W/llama-build.log" 2>&1 || { tail -20 "$W/llama-build.log"; exit 3; }
fi

exports() {  # exports FILE: its std:: and GNU_UNIQUE dynamic exports, and what it needs
  echo "$(nm -D --defined-only "$1" | grep -c ' _ZNS\| _ZNKS\| _ZSt') std:: exported," \
       "$(nm -D --defined-only "$1" | grep -c ' u ') GNU_UNIQUE;" \
       "needs $(readelf -d "$1" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
}
for f in "$W"/site/llama_cpp/lib/lib*.so.0; do say "$(basename "$f"): $(exports "$f")"; done

# _core both ways: "now" is this checkout; "exported" drops the --exclude-libs link option.
pyb=$(python3 -m pybind11 --cmakedir 2>/dev/null || "$PY" -m pybind11 --cmakedir) || exit 4
for variant in now exported; do
  rm -rf "$W/rk-$variant" && mkdir -p "$W/rk-$variant"
  cp -r CMakeLists.txt cpp src "$W/rk-$variant/"  # this working tree, uncommitted edits too
  rm -f "$W"/rk-$variant/src/routekit/_core*.so
  [ $variant = exported ] && sed -i '/--exclude-libs/d' "$W/rk-$variant/CMakeLists.txt"
  cmake -S "$W/rk-$variant" -B "$W/rk-$variant/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -Dpybind11_DIR="$pyb" -DPython_EXECUTABLE="$PY" -DSKBUILD_PROJECT_NAME=routekit \
    -DSKBUILD_PROJECT_VERSION=0.1.0 -DCMAKE_MODULE_LINKER_FLAGS=$flags \
    -DCMAKE_SHARED_LINKER_FLAGS=$flags > "$W/rk-$variant.log" 2>&1 \
    && cmake --build "$W/rk-$variant/build" -j 2 >> "$W/rk-$variant.log" 2>&1 || exit 4
  cp "$W"/rk-$variant/build/_core*.so "$W/rk-$variant/src/routekit/"
  say "_core ($variant): $(exports "$W"/rk-$variant/build/_core*.so)"
done

model=${MODEL:-$(PYTHONPATH="$W/rk-now/src:tests" "$PY" -c \
  'from llama_server import default_model_path; print(default_model_path())')} || exit 5
for variant in now exported; do
  for order in llama numpy routekit shared; do
    PYTHONPATH="$W/site:$W/rk-$variant/src" timeout 120 "$PY" tools/gpu_diag.py "$order" "$model" \
      > "$O/diag-$variant-$order.log" 2>&1
    rc=$?
    say "diag _core=$variant order=$order: exit $rc"
    grep -E '^order|libllama|libggml.so|^conflict|^LOADED' "$O/diag-$variant-$order.log" \
      | sed 's/^/    /' | cut -c1-240 | tee -a "$O/summary.txt"
  done
done

PYTHONPATH="$W/site:$W/rk-now/src" timeout 900 "$PY" -m pytest -q -p no:cacheprovider \
  tests/test_cxx_runtime.py tests/test_llama_cpp_provider.py tests/test_router_inprocess.py \
  tests/test_native.py tests/test_native_handover.py tests/test_inprocess_mixed_load.py \
  > "$O/pytest.log" 2>&1
say "in-process tests on the static build (_core=now): exit $? ($(tail -1 "$O/pytest.log"))"
