"""Finding and checking the libLLVM that jitload's compiler module (``_native``) links.

``_native`` names ``libLLVM.so.22.1`` as a needed library. Left to the dynamic linker, a
missing library is a bare "cannot open shared object file", and a wrong one (another LLVM
given that name, or one built with another C++ library) an "undefined symbol" or worse.
So before ``_native`` is loaded — at the first compile of a process, never at start-up and
never on a warm import, which does not load LLVM — :func:`preload` finds the library, checks
its version, and loads it: ``_native``'s needed entry then resolves to it (the dynamic linker
matches a loaded library by its SONAME). A failure is an :class:`~jitload.errors.LLVMLibraryError` (an ImportError) naming the
library, the version found, the one needed and the fix.

Where the library is looked for, in order:

1. ``JITLOAD_LIBLLVM``: a path;
2. a pip-installed LLVM: a wheel (karellen-llvm-core) that installs ``lib/libLLVM.so.22.1``
   as data into the environment's ``lib/``, beside ``lib/pythonX.Y/site-packages``;
3. the dynamic linker's own search (``LD_LIBRARY_PATH``, the ld.so cache: a system LLVM).
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple, Optional, Tuple

from .errors import LLVMLibraryError

#: The LLVM release ``_native`` is built against (llvm-sys 221), and its library's SONAME.
REQUIRED: Tuple[int, int] = (22, 1)
SONAME = f"libLLVM.so.{REQUIRED[0]}.{REQUIRED[1]}"

FIX = (
    f"install LLVM {REQUIRED[0]}.{REQUIRED[1]}'s shared library: "
    f"pip install 'karellen-llvm-core=={REQUIRED[0]}.{REQUIRED[1]}.*' (into this environment), "
    f"or apt-get install libllvm{REQUIRED[0]}; "
    f"or set JITLOAD_LIBLLVM to the path of an LLVM {REQUIRED[0]}.{REQUIRED[1]} {SONAME}"
)


class LLVMLibrary(NamedTuple):
    """The libLLVM in use: its path, version and how it was found."""

    path: str
    version: Tuple[int, int, int]
    source: str

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


_loaded: Optional[LLVMLibrary] = None


def environment_prefix() -> str:
    """The prefix of the environment this package is installed in, where pip puts wheels'
    data files (``lib/``, ``bin/``): this file is
    ``<prefix>/lib/pythonX.Y/site-packages/jitload/_llvm.py`` (venv, --user or system)."""
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".."))


def candidates() -> list[Tuple[str, str]]:
    """(file name or path, where it came from) to try, in order; see the module docstring."""
    found = []
    from . import config

    explicit = config.options.libllvm
    if explicit:
        found.append((explicit, "JITLOAD_LIBLLVM"))
    for lib_dir in dict.fromkeys([os.path.join(environment_prefix(), "lib"), os.path.join(sys.prefix, "lib")]):
        path = os.path.join(lib_dir, SONAME)
        if os.path.exists(path):
            found.append((path, "pip-installed LLVM"))
    found.append((SONAME, "the dynamic linker's search path"))
    return found


def _dlinfo_path(handle: int) -> Optional[str]:
    """The file the dynamic linker opened for ``handle`` (``dlinfo``'s link map)."""
    import ctypes

    class LinkMap(ctypes.Structure):
        _fields_ = [("l_addr", ctypes.c_void_p), ("l_name", ctypes.c_char_p)]

    RTLD_DI_LINKMAP = 2
    for libname in (None, "libdl.so.2"):
        try:
            dlinfo = ctypes.CDLL(libname).dlinfo
        except (OSError, AttributeError):
            continue
        entry = ctypes.POINTER(LinkMap)()
        if dlinfo(ctypes.c_void_p(handle), RTLD_DI_LINKMAP, ctypes.byref(entry)) == 0 and entry:
            name: Optional[bytes] = entry.contents.l_name
            if name:
                return os.path.realpath(name.decode(errors="replace"))
    return None


def opened_path(name: str) -> Optional[str]:
    """The file the dynamic linker opens for library ``name`` (a SONAME or a path) in this
    process, or None if it cannot be opened."""
    import ctypes

    try:
        return _dlinfo_path(ctypes.CDLL(name, mode=os.RTLD_NOW | os.RTLD_LOCAL)._handle)
    except OSError:
        return None


def _cxx_mismatch(path: str) -> Optional[str]:
    """Why the library at ``path`` cannot serve the compiler module, whose C++ shims pass
    LLVM's C++ types across (so one C++ standard library for both), or None."""
    theirs, ours = cxx_runtime(path), _native_cxx_runtime()
    if theirs and ours and theirs != ours:
        return f"built with {theirs}; jitload's compiler module uses {ours}"
    return None


def _open(name: str, source: str) -> Tuple[Optional[LLVMLibrary], str, bool]:
    """Opens and checks one candidate: (the library, "", True) or (None, why not, whether it
    was loaded). A path is checked for its C++ library before it is loaded: once loaded, a
    library answers for its SONAME, so a wrong one ends the search."""
    import ctypes

    if os.sep in name:
        mismatch = _cxx_mismatch(name) if os.path.exists(name) else None
        if mismatch:
            return None, f"{os.path.realpath(name)} ({source}): {mismatch}", False
    use_libgcc_unwinder()
    try:
        lib = ctypes.CDLL(name, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError as e:
        return None, f"{name} ({source}): cannot be opened: {e}", False
    path = _dlinfo_path(lib._handle) or name
    try:
        get_version = lib.LLVMGetVersion
    except AttributeError:
        return None, f"{path} ({source}): no LLVMGetVersion: LLVM 15 or older, or not LLVM at all", True
    numbers = [ctypes.c_uint() for _ in range(3)]
    get_version.restype = None
    get_version(*(ctypes.byref(n) for n in numbers))
    found = LLVMLibrary(path, (numbers[0].value, numbers[1].value, numbers[2].value), source)
    if found.version[:2] != REQUIRED:
        return None, f"{path} ({source}): LLVM {found.version_text}, not {REQUIRED[0]}.{REQUIRED[1]}", True
    mismatch = _cxx_mismatch(path)
    if mismatch:
        return None, f"{path} ({source}): LLVM {found.version_text} {mismatch}", True
    return found, "", True


def use_libgcc_unwinder() -> None:
    """Makes libgcc_s the unwinder every library loaded from now on binds to; called before
    a libLLVM is loaded (its symbols are bound then: ``RTLD_NOW``).

    Why: JIT'd C++ code throws through libstdc++ (what clang's headers on Linux compile
    against), which unwinds with libgcc_s. A libc++-based libLLVM (karellen-llvm-core's)
    brings LLVM's own ``libunwind.so.1`` too: left alone, its ``__register_frame`` (how ORC
    registers JIT'd code's ``.eh_frame``) and libc++abi's ``_Unwind_*`` bind to libunwind, a
    second unwinder that libgcc_s never asks, and every exception thrown into JIT'd frames
    ends in std::terminate (or a crash in a libc++ frame). The dynamic linker looks in the
    global scope before a library's own dependencies, so, made global first:
    ``libjitload_unwind.so`` takes ``__register_frame``/``__deregister_frame`` (such a
    libLLVM calls them once per FDE, libunwind's convention; see its source,
    crates/jitload-py/shim/unwind.c), then libgcc_s everything else. A libLLVM built on
    libstdc++ binds to libgcc_s anyway, and calls the registration in libgcc's convention,
    which ``libjitload_unwind.so`` passes on unchanged."""
    import ctypes

    for library in (os.path.join(os.path.dirname(os.path.abspath(__file__)), "libjitload_unwind.so"), "libgcc_s.so.1"):
        try:
            ctypes.CDLL(library, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
        except OSError:
            pass  # missing from a partial build, or no libgcc_s: nothing in the process unwinds with it


def cxx_runtime(path: str) -> Optional[str]:
    """The C++ standard library an ELF file links (``libstdc++.so.6``/``libc++.so.1``), if any."""
    from .elf import needed

    return next((n for n in needed(path) if n.startswith(("libstdc++.so", "libc++.so"))), None)


def _native_cxx_runtime() -> Optional[str]:
    try:
        return cxx_runtime(native_path())
    except ImportError:
        return None


def find() -> LLVMLibrary:
    """The libLLVM jitload would use (loaded, not yet global). Raises LLVMLibraryError."""
    problems = []
    for name, source in candidates():
        found, problem, loaded = _open(name, source)
        if found is not None:
            return found
        problems.append(problem)
        if loaded or source == "JITLOAD_LIBLLVM":
            break  # a loaded library answers for the SONAME; an explicit choice stands
    raise LLVMLibraryError(
        f"jitload needs {SONAME} (LLVM {REQUIRED[0]}.{REQUIRED[1]}.x) to compile bitcode; "
        + "; ".join(problems)
        + f". Fix: {FIX}.",
        name=SONAME,
    )


def preload() -> LLVMLibrary:
    """Finds and checks libLLVM and keeps it loaded, so that ``_native``'s needed entry
    resolves to it. Idempotent. Raises LLVMLibraryError."""
    global _loaded
    if _loaded is None:
        import ctypes

        found = find()
        # Kept loaded (and local: global, LLVM's symbols would be found by JIT'd code looking
        # for the process's). _native's needed entry matches it by SONAME.
        ctypes.CDLL(found.path, mode=os.RTLD_NOW | os.RTLD_LOCAL)
        _loaded = found
    return _loaded


def native_path() -> str:
    """The file of the compiler module, ``_lib/_native.<suffix>`` (out of the import path,
    so that ``import jitload._native`` finds ``_native.py``, which checks libLLVM first)."""
    import importlib.machinery

    lib_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(lib_dir, "_native" + suffix)
        if os.path.exists(path):
            return path
    raise ImportError(f"jitload's compiler module (_native) is not installed in {lib_dir}", name="jitload._native")
