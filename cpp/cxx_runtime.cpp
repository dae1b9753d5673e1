// See cxx_runtime.hpp.
#include "cxx_runtime.hpp"

#include <cstring>
#include <iostream>

#if defined(__linux__)
#include <dlfcn.h>
#endif

namespace routekit {

std::string share_cxx_runtime() {
#if defined(__linux__) && defined(__GLIBCXX__)
    // std::cout lives in whichever libstdc++ this module was linked against.
    Dl_info info{};
    if (::dladdr(static_cast<const void*>(&std::cout), &info) == 0 || info.dli_fname == nullptr)
        return {};
    const char* base = std::strrchr(info.dli_fname, '/');
    base = base ? base + 1 : info.dli_fname;
    if (std::strncmp(base, "libstdc++", 9) != 0) return {};  // a static copy: ours alone
    void* handle = ::dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    if (handle == nullptr) return {};
    std::string path = info.dli_fname;
    ::dlclose(handle);  // drops only the reference just taken; the promotion stays
    return path;
#else
    return {};
#endif
}

}  // namespace routekit
