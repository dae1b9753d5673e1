"""Which C++ runtime llama.cpp's own C++ calls bind to, and keeping it one runtime.

The fault (issue #7; llama-cpp-python 0.3.36 built with CUDA 13 on the GPU image, found on an
H100, understood on an H200): that toolchain links libstdc++ statically, so every library of
the build carries a copy and exports it (the H200 build: ``libggml-base`` 739 ``std::``
symbols, ``libggml-cuda`` 2,876, ``libllama`` 1,028; none of them needs ``libstdc++.so.6``,
though cuBLAS, loaded with them, does). llama-cpp-python opens ``libllama`` with
``RTLD_LOCAL`` and ``RTLD_NOW`` (ctypes), so every C++ symbol it needs is bound at import:
first in the global scope, then in its own dependencies, in order. What came before decides:

- ``import llama_cpp`` first: everything binds to the build's own copies, which also define
  libstdc++'s GNU_UNIQUE objects (facet ids: process-wide, whatever RTLD_LOCAL says). Loads.
- the real libstdc++ loaded privately first (numpy 2's C++ extensions, or the ``jaxtyping``
  pytest plugin that imports numpy): libllama bound 116 of its calls to the copies and 2 to
  the real libstdc++, whose unique objects were first. Every model load died with SIGSEGV in
  ``llama_model::print_info`` (cuda-gdb: ``std::ostream::_M_insert<long>`` in
  ``libggml-cuda.so``), CPU loads included.
- the real libstdc++ made global first (``RTLD_GLOBAL``): everything it defines binds to it,
  the rest (``std::__at_thread_exit``, which it does not export) to a copy. Loads.
- ``import routekit`` first: any load died. ``_core``, built by that toolchain, exported a
  third copy, GNU_UNIQUE objects included, and one such object (``std::string``'s empty
  representation) of libggml's was bound to it. Shown on a CPU build linked the same way
  (tools/static_cxx_check.sh; no GPU was lent to rerun it there): with that ``_core`` every
  import order binds one of libggml's calls to ``_core``, with ``_core`` as built now
  (CMakeLists.txt keeps static archives' symbols private) ``import routekit`` first binds
  exactly as ``import llama_cpp`` alone. Where ``_core`` links libstdc++ dynamically, it makes
  that libstdc++ global at import.

The fix: before ``llama_cpp`` is first imported, :func:`share_libstdcxx` opens
``libstdc++.so.6`` with ``RTLD_GLOBAL`` (``_core`` did already where it links libstdc++
dynamically): one runtime, whatever was imported before.

When ``llama_cpp`` was imported before routekit could do that, the binding is already made.
:func:`llama_cxx_conflict` then reads it, before any load: each library's ELF relocations name
the slots (GOT entries) the dynamic linker filled for each ``std::`` function it imports, and
``dladdr`` tells which file each filled address lies in. If what libstdc++ defines is split
between runtimes (the real libstdc++, the build's own copies, another library's copy), routekit
refuses the model with a clear error instead of letting llama.cpp take the process down. Where
a file cannot be read that way (not ELF64 little-endian, no section headers), it falls back to
asking where a lookup from the library finds ``std::ostream::_M_insert<long>``. Linux only
(glibc's ``dlsym``, ``dladdr``, ``dlinfo``); elsewhere everything here is a no-op. Must not
import ``llama_cpp``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
import sys
from typing import Any

__all__ = ["cxx_conflict", "libstdcxx_defines", "llama_cxx_conflict", "share_libstdcxx",
           "std_bindings", "std_imports", "symbol_file"]

# std::ostream::_M_insert<long>: what llama_model::print_info called into the wrong copy.
PROBE_SYMBOL = "_ZNSo9_M_insertIlEERSoT_"
_LINUX = sys.platform.startswith("linux")


def share_libstdcxx() -> bool:
    """Put libstdc++ in the process's global symbol scope (see the module doc). Call before
    ``llama_cpp`` is imported; cheap, and harmless when it was global already. Returns whether
    it is global now."""
    if not _LINUX:
        return False
    try:
        ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
    except OSError:  # no libstdc++ (a musl system, say): nothing to share
        return False
    return True


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


@functools.lru_cache(maxsize=1)
def _libdl() -> Any:
    libc = ctypes.CDLL(None)  # the global scope, where glibc's dlsym and dladdr live
    libc.dlsym.restype = ctypes.c_void_p
    libc.dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    libc.dladdr.restype = ctypes.c_int
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    libc.dlinfo.restype = ctypes.c_int
    libc.dlinfo.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    libc.dlopen.restype = ctypes.c_void_p
    libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.dlclose.restype = ctypes.c_int
    libc.dlclose.argtypes = [ctypes.c_void_p]
    return libc


def symbol_file(handle: int | None, name: str = PROBE_SYMBOL) -> str | None:
    """The file whose definition of ``name`` a lookup from ``handle`` finds (``None``: the
    global scope), or None when there is none."""
    if not _LINUX:
        return None
    address = _libdl().dlsym(handle, name.encode())
    return _file_at(address) if address else None


def _file_at(address: int) -> str | None:
    """The loaded file whose mapping holds ``address``."""
    info = _DlInfo()
    if not _libdl().dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.fsdecode(info.dli_fname)


# -- the bindings a library was given -------------------------------------------------------------

# Mangled prefixes of what the C++ runtime defines in namespace std (std::ostream is _ZNSo,
# std::__cxx11::basic_string _ZNSt7__cxx11..., const members _ZNKS..., free functions _ZSt...).
_STD_PREFIXES = (b"_ZNS", b"_ZNKS", b"_ZSt")
_SHT_RELA, _SHT_DYNSYM, _PT_LOAD = 4, 11, 1
# Relocations whose slot holds the bound symbol's address (GLOB_DAT, JUMP_SLOT) by e_machine;
# TLS ones hold module ids and offsets. Another machine: read nothing, fall back to a lookup.
_ADDRESS_RELOCS = {62: (6, 7), 183: (1025, 1026)}  # x86-64, AArch64 (elf.h)
_RTLD_DI_LINKMAP = 2
_RTLD_NOW, _RTLD_NOLOAD = 2, 4  # glibc's dlfcn.h


@functools.lru_cache(maxsize=8)
def std_imports(path: str) -> tuple[tuple[str, int], ...] | None:
    """The ``std::`` symbols the ELF64 little-endian shared library at ``path`` imports, each
    with the offset of the slot the dynamic linker fills for it (its relocation's r_offset, a
    virtual address inside one of its loaded segments). None when the file cannot be read so."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return None
            (machine,) = struct.unpack_from("<H", head, 0x12)
            phoff, shoff = struct.unpack_from("<QQ", head, 0x20)
            phentsize, phnum, shentsize, shnum = struct.unpack_from("<HHHH", head, 0x36)
            kinds = _ADDRESS_RELOCS.get(machine)
            if kinds is None or not shoff or shentsize != 64 or phentsize != 56:
                return None

            def read(offset: int, size: int) -> bytes:
                f.seek(offset)
                data = f.read(size)
                if len(data) != size:
                    raise ValueError("truncated ELF file")
                return data

            raw = read(phoff, 56 * phnum)
            # (p_type, p_vaddr, p_memsz) of each program header; the loaded segments' ranges
            headers = [struct.unpack_from("<I12xQ16xQ8x", raw, i * 56) for i in range(phnum)]
            loads = [(vaddr, vaddr + size) for kind, vaddr, size in headers if kind == _PT_LOAD]
            raw = read(shoff, 64 * shnum)
            # (type, offset, size, link) of each section header
            sections = [struct.unpack_from("<4xI16xQQI", raw, i * 64) for i in range(shnum)]
            found: list[tuple[str, int]] = []
            for stype, offset, size, link in sections:
                if stype != _SHT_RELA or link >= shnum or sections[link][0] != _SHT_DYNSYM:
                    continue
                _, sym_off, sym_size, str_link = sections[link]
                syms = read(sym_off, sym_size)
                names = read(sections[str_link][1], sections[str_link][2])
                rela = read(offset, size)
                for at in range(0, len(rela) - 23, 24):
                    slot, info = struct.unpack_from("<QQ", rela, at)
                    index = info >> 32
                    if (info & 0xFFFFFFFF) not in kinds or not index \
                            or index * 24 + 24 > len(syms):
                        continue
                    st_name, _, _, st_shndx = struct.unpack_from("<IBBH", syms, index * 24)
                    if st_shndx != 0:  # defined in the file itself: not an import
                        continue
                    name = names[st_name:names.index(b"\0", st_name)]
                    if name.startswith(_STD_PREFIXES) and any(
                            lo <= slot and slot + 8 <= hi for lo, hi in loads):
                        found.append((name.decode("ascii", "replace"), slot))
            return tuple(found)
    except (OSError, ValueError, IndexError, struct.error):  # not the ELF file it seemed
        return None


def _load_base(handle: int) -> int | None:
    """The address the library opened as ``handle`` was loaded at (its link_map's l_addr)."""
    link_map = ctypes.c_void_p()
    if _libdl().dlinfo(handle, _RTLD_DI_LINKMAP, ctypes.byref(link_map)) != 0 \
            or not link_map.value:
        return None
    return ctypes.c_size_t.from_address(link_map.value).value


@functools.lru_cache(maxsize=32)
def std_bindings(handle: int, path: str) -> tuple[tuple[str, str | None], ...] | None:
    """Each ``std::`` import of the library at ``path`` (opened as ``handle``) with the file
    its slot was bound to; None when that cannot be read (then only a lookup can tell).
    Bound once at load (ctypes opens with ``RTLD_NOW``), so kept: health checks ask often."""
    if not _LINUX:
        return None
    real = os.path.realpath(path)
    imports = std_imports(real)
    base = _load_base(handle) if imports is not None else None
    mapped = _mappings_of(real) if base is not None else None
    if imports is None or base is None or not mapped:
        return None
    bound = []
    for name, slot in imports:
        address = base + slot
        # Read only inside this file's own mappings: were the file on disk not the one loaded
        # (replaced by an upgrade since), the offsets would mean nothing.
        if not any(lo <= address and address + 8 <= hi for lo, hi in mapped):
            return None
        target = ctypes.c_void_p.from_address(address).value
        bound.append((name, _file_at(target) if target else None))
    return tuple(bound)


def _mappings_of(path: str) -> list[tuple[int, int]] | None:
    """The address ranges this process maps from the file at ``path`` — the same file (inode)
    the path names now — or None."""
    try:
        inode = os.stat(path).st_ino
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return None
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == path and fields[4] == str(inode):
            lo, _, hi = fields[0].partition("-")
            ranges.append((int(lo, 16), int(hi, 16)))
    return ranges or None


def _is_libstdcxx(path: str) -> bool:
    return os.path.basename(path).startswith("libstdc++")


@functools.lru_cache(maxsize=4096)
def libstdcxx_defines(name: str) -> bool:
    """Whether the process's libstdc++ defines ``name`` itself (its default version), so a
    binding elsewhere means the real runtime lost to a copy. True (count it) when libstdc++ is
    not loaded: then nothing can tell, and every caller of this loaded libstdc++ anyway.

    A lookup from libstdc++'s handle searches it and its dependencies (libc, libm, libgcc_s:
    none defines a std:: name), so finding the name at all is the answer. Where it is found
    does not tell: for a GNU_UNIQUE object (a facet id, ``std::num_put<char>::id``) the
    dynamic linker answers with the process-wide definition, which is a copy's when a library
    exporting one was loaded first (tests/test_cxx_runtime.py shows it)."""
    if not _LINUX:
        return True
    libdl = _libdl()
    handle = libdl.dlopen(b"libstdc++.so.6", _RTLD_NOW | _RTLD_NOLOAD)
    if not handle:
        return True
    try:
        return bool(libdl.dlsym(handle, name.encode()))
    finally:
        libdl.dlclose(handle)  # drops only the reference dlopen just took


def cxx_conflict(handle: int, own_file: str | None = None) -> str | None:
    """Why C++ calls of the library opened as ``handle`` (file ``own_file``) do not all run in
    one C++ runtime, or None when they do (see :func:`_judge`)."""
    return _judge([(handle, own_file)])


def _runtime(path: str, build: str | None) -> str:
    """Which C++ runtime the file at ``path`` is: the real libstdc++, the library's own build
    (a file in its folder: llama-cpp-python's libraries carry copies in some builds), or that
    file, another library's copy."""
    if _is_libstdcxx(path):
        return "libstdc++"
    real = os.path.realpath(path)
    return "build" if build is not None and os.path.dirname(real) == build else real


def _judge(libraries: list[tuple[int, str | None]]) -> str | None:
    """Whether the libraries of one build (each ``(handle, file)``, the first one's folder
    being the build's) bind their std:: calls to one runtime.

    One runtime works, whichever: the real libstdc++ (the usual build, or a build with its own
    copies loaded once libstdc++ was global), or the build's own copies alone (the H200 CUDA
    build, whose libraries all carry libstdc++ statically, imported before anything loaded the
    real one). A mix crashes: measured on that build, ``import numpy`` then ``llama_cpp`` bound
    all but two of libllama's std:: calls to the copies and the rest to the real libstdc++, and
    the first load died with SIGSEGV. So does a copy inside some other library. Only symbols
    libstdc++ defines count: what it does not export can only come from a copy."""
    first = libraries[0][1]
    build = os.path.dirname(os.path.realpath(first)) if first is not None else None
    seen: dict[str, tuple[str, str]] = {}  # runtime -> (its first symbol, the file)
    for handle, path in libraries:
        bindings = std_bindings(handle, path) if path is not None else None
        if bindings is None:  # unreadable: ask a lookup instead
            reason = _lookup_conflict(handle, path)
            if reason is not None:
                return reason
            continue
        for name, target in bindings:
            if target is not None and libstdcxx_defines(name):
                seen.setdefault(_runtime(target, build), (name, target))
    copies = {runtime: found for runtime, found in seen.items() if runtime != "libstdc++"}
    if not copies or (set(seen) == {"build"}):
        return None
    others = [found for runtime, found in copies.items() if runtime != "build"]
    symbol, owner = others[0] if others else copies["build"]
    return _explain(symbol, owner, build)


def _lookup_conflict(handle: int, own_file: str | None) -> str | None:
    """Where a lookup from the library finds one std:: function (when its slots cannot be
    read). The global scope is searched before the library's own, so libstdc++ there wins.
    (Were it made global only after the library was bound, this would miss the conflict;
    routekit never does that.) A copy in the library itself is its own business."""
    owner = symbol_file(handle)
    if owner is None or _is_libstdcxx(owner) or (
            own_file is not None and os.path.realpath(owner) == os.path.realpath(own_file)):
        return None
    shared = symbol_file(None)
    if shared is not None and _is_libstdcxx(shared):
        return None
    build = os.path.dirname(os.path.realpath(own_file)) if own_file is not None else None
    return _explain(PROBE_SYMBOL, owner, build)


def _explain(symbol: str, owner: str, build: str | None) -> str:
    """The refusal: what ``symbol`` was bound to, why that happens, and the ways out. A copy
    inside the build itself (``build``, its folder) came in because libstdc++ was loaded
    first, privately; a copy another library exports came in because that library was."""
    head = (f"llama.cpp's C++ calls ({symbol}) are bound to the copy of libstdc++ inside "
            f"{owner}, which crashes the process on the first model load: ")
    if build is not None and os.path.dirname(os.path.realpath(owner)) == build:
        return head + (
            "llama_cpp was imported after another module (numpy 2, for one) had loaded "
            "libstdc++ privately, and this llama-cpp-python build carries its own copy of "
            "libstdc++'s symbols. Let routekit import llama_cpp, or import it before anything "
            "else that loads C++ code, or run ctypes.CDLL('libstdc++.so.6', "
            "mode=ctypes.RTLD_GLOBAL) before importing it")
    return head + (
        "that library was loaded before llama_cpp and exports the copy it was linked with "
        "(libstdc++'s GNU_UNIQUE objects, such as facet ids, then have one definition in the "
        "whole process, the first loaded). Import llama_cpp before it, or run "
        "ctypes.CDLL('libstdc++.so.6', mode=ctypes.RTLD_GLOBAL) before importing either, or "
        "rebuild it keeping its static libstdc++ private (-Wl,--exclude-libs,ALL)")


def llama_cxx_conflict(llama_cpp: Any) -> str | None:
    """:func:`_judge` for libllama and every other library of llama-cpp-python's that is
    loaded (libggml-base, libggml, the backends), together: None when they all bind to one
    C++ runtime (also when libllama's handle cannot be read)."""
    lib = getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None)
    handle, name = getattr(lib, "_handle", None), getattr(lib, "_name", None)
    if not isinstance(handle, int):
        return None
    if not isinstance(name, str) or not _LINUX:
        return cxx_conflict(handle, name if isinstance(name, str) else None)
    folder = os.path.dirname(name)
    try:
        files = sorted(os.listdir(folder))
    except OSError:
        files = []
    libdl = _libdl()
    opened: list[int] = []
    libraries: list[tuple[int, str | None]] = [(handle, name)]
    try:
        for file in files:
            path = os.path.join(folder, file)
            if not file.startswith("lib") or ".so" not in file or path == name:
                continue
            # Only what is loaded (a folder holds each library under several names: the
            # same handle comes back for each, read once).
            other = libdl.dlopen(os.fsencode(path), _RTLD_NOW | _RTLD_NOLOAD)
            if not other:
                continue
            opened.append(other)
            if other != handle and all(other != h for h, _ in libraries):
                libraries.append((other, path))
        return _judge(libraries)
    finally:
        for other in opened:
            libdl.dlclose(other)  # drops only the reference dlopen just took
