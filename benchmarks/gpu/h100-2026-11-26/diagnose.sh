# One device call: build CUDA llama-cpp-python (no routekit install), then find why a GPU model
# load segfaults once jaxtyping (pytest plugin) is imported first.
export PYTHONUNBUFFERED=1; T0=$(date +%s); K=.gpukit; O=/tmp/x; mkdir -p $O
s() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a $O/g.txt; cp $O/g.txt $OUT/; }
mkdir -p /tmp/site /tmp/kb
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $K/whl/*.whl || exit 3
tar xzf $K/llama_cpp_python-*-trim.tar.gz -C /tmp/kb
( cd /tmp/kb/llama_cpp_python-* && CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=OFF -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF" \
  CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install -q --no-build-isolation --no-deps --no-index --no-cache-dir --target /tmp/site . ) > /tmp/kb/build.log 2>&1 || { tail -20 /tmp/kb/build.log; exit 4; }
s built
export PYTHONPATH=/tmp/site:$PWD/tests
python3 -c "from tinygguf import write_tiny_gguf; write_tiny_gguf('/tmp/t.gguf')"
L="import llama_cpp; llama_cpp.Llama('/tmp/t.gguf', n_gpu_layers=NGL, verbose=True); print('LOADED')"
e() { local name=$1 pre=$2 ngl=$3; shift 3
  env "$@" timeout 30 python3 -c "$pre; ${L/NGL/$ngl}" > $O/$name.txt 2>&1; s "$name rc=$? ($pre; ngl=$ngl $*)"; }
e numpy_first "import numpy" -1
e jaxtyping_first "import jaxtyping" -1
e numpy_first_cpu "import numpy" 0
e numpy_first_blas1 "import numpy" -1 OPENBLAS_NUM_THREADS=1
e wl_first "import wadler_lindig" -1
e llama_then_jt "import llama_cpp, jaxtyping" -1
e numpy_first_nomap "import numpy" -1 GGML_CUDA_NO_PINNED=1
s "crash log tail:"; grep -v "llama_model_loader: - \|print_info\|^load_tensors:  *\|^llama_kv\|^llama_context" $O/jaxtyping_first.txt | tail -12 | tee -a $O/g.txt
python3 -c "import jaxtyping, os; print([l.split()[-1] for l in open('/proc/self/maps') if '.so' in l and 'python3' not in l])" 2>&1 | tr ',' '\n' | sort -u > $O/maps.txt
timeout 50 cuda-gdb -q -batch -ex run -ex bt -ex "info registers rip" -ex "x/6i \$pc" --args python3 -c "import jaxtyping; ${L/NGL/-1}" > $O/gdb.txt 2>&1
s "gdb rc=$?"; grep -A30 "SIGSEGV" $O/gdb.txt | head -40 | tee -a $O/g.txt
s done
tar czf $OUT/all.tgz -C /tmp x; cp $O/gdb.txt $O/jaxtyping_first.txt $OUT/ 2>/dev/null
