// Which copy of libstdc++ libraries loaded after routekit._core bind to (the Python half, and
// why it matters, is src/routekit/providers/llama_cpp/cxx_runtime.py).
//
// Python opens extension modules with RTLD_LOCAL, so loading _core loads libstdc++ privately,
// exactly as numpy 2 does: a CUDA build of llama-cpp-python imported afterwards binds
// libllama's std:: calls to libggml-cuda's private copy of libstdc++ and crashes on the first
// model load (found on an H100, issue #7). So `import routekit; import llama_cpp` must not be
// that order: at module init, _core puts the libstdc++ it was linked against in the global
// scope, which the dynamic linker searches before any library's own.
#pragma once

#include <string>

namespace routekit {

// Promotes the libstdc++ this module uses to the global scope (dlopen RTLD_NOLOAD|RTLD_GLOBAL:
// loads nothing). Returns its path, or "" when there is nothing to share (not glibc/Linux, or
// libstdc++ linked statically into this module: never make this module itself global).
std::string share_cxx_runtime();

}  // namespace routekit
