#!/usr/bin/env bash
# Developer build: compile routekit._core in place (src/routekit/_core*.so) for PYTHONPATH=src runs.
# Users and CI install with pip instead (see README).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
pyb=$("$py" -m pybind11 --cmakedir)
cmake -S "$root" -B "$root/build/dev" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -Dpybind11_DIR="$pyb" -DPython_EXECUTABLE="$(command -v "$py")" \
  -DSKBUILD_PROJECT_NAME=routekit -DSKBUILD_PROJECT_VERSION=0.1.0 >/dev/null
cmake --build "$root/build/dev" -j 2
cp "$root"/build/dev/_core*.so "$root/src/routekit/"
