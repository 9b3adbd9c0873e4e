"""Compiler and linker stand-ins that setuptools runs (through CC / LDSHARED) when jitload
builds a project: compiles become clang-22 bitcode compiles, and the shared-library link
becomes a bitcode link whose output keeps the ``.so`` name until the build tool renames it.

Usage (by setuptools, not by hand): ``python -m jitload._toolchain cc|c++|ld ARGS...``
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List

from . import _clang, elf
from .errors import JitloadError

# Linker flags with a separate argument that the bitcode link has no use for.
_SKIP_WITH_ARG = {"-Xlinker", "-T", "-z", "-u", "-soname", "-rpath", "-install_name"}


def compile_main(tool: str, args: List[str]) -> int:
    clang = _clang.find(tool)
    if "-c" in args or "-E" in args or "-S" in args:
        extra = _clang.BITCODE_FLAGS if "-c" in args else []
        return subprocess.call([clang, *extra, *args])
    # A configure-style probe that links a test program: do a normal native build.
    return subprocess.call([clang, *args])


def link_main(args: List[str]) -> int:
    from . import _native

    output = None
    inputs: List[str] = []
    libraries: List[str] = []
    library_dirs: List[str] = []
    it = iter(args)
    for a in it:
        if a == "-o":
            output = next(it, None)
        elif a.startswith("-L"):
            library_dirs.append(a[2:] or next(it, ""))
        elif a.startswith("-l"):
            libraries.append(a[2:] or next(it, ""))
        elif a.startswith("-Wl,"):
            parts = a[4:].split(",")
            for i, p in enumerate(parts):
                if p.startswith("-L"):
                    library_dirs.append(p[2:])
                elif p == "-rpath" and i + 1 < len(parts):
                    library_dirs.append(parts[i + 1])
                elif p.startswith("-l"):
                    libraries.append(p[2:])
        elif a in _SKIP_WITH_ARG:
            next(it, None)
        elif a.startswith("-"):
            continue  # -shared, -pthread, -O2, -g, -fPIC, ...: meaningless for a bitcode link
        else:
            inputs.append(a)
    if output is None:
        print("jitload ld: no -o output given", file=sys.stderr)
        return 2
    from .build import is_bitcode

    objects, native = [], []
    for path in inputs:
        if path.endswith((".so",)) or ".so." in os.path.basename(path):
            libraries.append(":" + path)  # an explicit shared library: the JIT loads it by path
        elif is_bitcode(path):
            objects.append(path)
        else:
            native.append(path)
    if native:
        print(
            "jitload ld: these inputs are native code, not bitcode, and cannot be linked into a bitcode "
            "module: " + ", ".join(native),
            file=sys.stderr,
        )
        return 1
    try:
        deps = list(dict.fromkeys(elf.resolve_library(lib, library_dirs) for lib in libraries))
        _native.link_bitcode(objects, output, deps)
    except JitloadError as e:
        print(f"jitload ld: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    tool, args = argv[0], argv[1:]
    if tool == "cc":
        return compile_main("clang", args)
    if tool == "c++":
        return compile_main("clang++", args)
    if tool == "ld":
        return link_main(args)
    print(f"jitload._toolchain: unknown tool {tool!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
