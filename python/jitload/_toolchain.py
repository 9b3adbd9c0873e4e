"""Compiler and linker stand-ins that setuptools runs (through CC / LDSHARED) when jitload
builds a project: compiles become clang-22 bitcode compiles, and the shared-library link
becomes a bitcode link whose output keeps the ``.so`` name until the build tool renames it.

Usage (by setuptools, not by hand): ``python -m jitload._toolchain cc|c++|ld ARGS...``
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional, Tuple

from . import _clang, _native_objects, _variants, elf
from ._bitcode_file import BITCODE_MAGIC, is_bitcode
from .errors import JitloadError

# Linker flags with a separate argument that the bitcode link has no use for.
_SKIP_WITH_ARG = {"-Xlinker", "-T", "-z", "-u", "-soname", "-rpath", "-install_name"}


#: The C++ runtime a bitcode module built from C++ needs, by the compiler's -stdlib choice.
CXX_RUNTIMES = {"libstdc++": "libstdc++.so.6", "libc++": "libc++.so.1"}
#: ``-l`` names of C++ runtimes (their unversioned .so lives in the compiler's private
#: directory, where the library search does not look) and what to record for them.
_RUNTIME_LIBRARIES = {"stdc++": "libstdc++.so.6", "c++": "libc++.so.1"}
#: Names that only C++ code refers to: bitcode mentioning one needs a C++ runtime.
_CXX_MARKERS = (b"__gxx_personality_v0", b"__cxa_", b"_ZNSt", b"_ZSt", b"_Znwm", b"_Znam", b"_ZdlPv", b"_ZTVN10__cxxabiv1")


def cxx_runtime(args: List[str]) -> str:
    """The C++ runtime library to record for a C++ link (``-stdlib=`` picks, libstdc++ by default)."""
    for a in args:
        if a.startswith("-stdlib="):
            return CXX_RUNTIMES.get(a.split("=", 1)[1], CXX_RUNTIMES["libstdc++"])
    return CXX_RUNTIMES["libstdc++"]


def looks_like_cxx(path: str) -> bool:
    """Whether a bitcode file refers to the C++ runtime (its symbol names are stored as text)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return any(m in data for m in _CXX_MARKERS)


def compile_main(tool: str, args: List[str]) -> int:
    clang = _clang.find(tool)
    if "-shared" in args and "-c" not in args:
        # The compiler driver used as the shared-library linker (setuptools does this for C++
        # extensions, CMake for everything): a bitcode link.
        return link_main(args, cxx=tool == "clang++")
    if "-c" in args:
        # Also compiled for higher x86-64 levels, carried in the object (see _variants).
        return _variants.compile_with_variants([clang, _clang.DEFAULT_OPT, *_clang.BITCODE_FLAGS, *args])[0]
    if "-E" in args or "-S" in args:
        return subprocess.call([clang, *args])
    # A configure-style probe that links a test program: do a normal native build. Objects
    # from our compiles are bitcode (CMake's compiler checks link them into executables):
    # clang links those with LTO through lld.

    if any(not a.startswith("-") and is_bitcode(a) for a in args):
        return subprocess.call([clang, "-flto=full", "-fuse-ld=lld", *args])
    return subprocess.call([clang, *args])


_AR_MAGIC = b"!<arch>\n"
_THIN_AR_MAGIC = b"!<thin>\n"


def archive_members(path: str) -> Optional[List[Tuple[str, bytes]]]:
    """The members (name, bytes) of a Unix ``ar`` archive (GNU/BSD names, thin archives), or
    None if ``path`` is not an archive."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    thin = data.startswith(_THIN_AR_MAGIC)
    if not (thin or data.startswith(_AR_MAGIC)):
        return None
    members: List[Tuple[str, bytes]] = []
    long_names = b""
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("latin-1").rstrip()
        size = int(header[48:58].decode("latin-1").strip() or 0)
        pos += 60
        body_size = 0 if thin and name not in ("/", "//") else size
        body = data[pos : pos + body_size]
        pos += body_size + (body_size & 1)
        if name == "//":
            long_names = body
            continue
        if name in ("/", "/SYM64/", "__.SYMDEF", "__.SYMDEF SORTED"):
            continue
        if name.startswith("#1/"):  # BSD: the name precedes the contents
            n = int(name[3:])
            name, body = body[:n].rstrip(b"\0").decode("latin-1"), body[n:]
        elif name.startswith("/") and name[1:].isdigit():  # GNU long name
            start = int(name[1:])
            end = long_names.find(b"\n", start)
            name = long_names[start : end if end >= 0 else None].decode("latin-1").rstrip("/")
        else:
            name = name.rstrip("/")
        if thin:
            member_path = name if os.path.isabs(name) else os.path.join(os.path.dirname(path), name)
            with open(member_path, "rb") as f:
                body = f.read()
        members.append((name, body))
    return members


def split_input(path: str, scratch: str) -> Optional[Tuple[List[str], List[Tuple[str, bytes]]]]:
    """What link input ``path`` contributes: bitcode files (itself if it is bitcode, also a
    "shared library" our own link made, or an archive's bitcode members written to
    ``scratch``) and native objects (name, bytes): itself if it is a relocatable ELF object
    (assembly sources, prebuilt objects), or an archive's native members. None if it is
    neither (a shared library, a linker script, ...)."""

    if is_bitcode(path):
        return [path], []
    members = archive_members(path)
    if members is None:
        data = _read_head(path, 64)
        return ([], [(path, _read(path))]) if is_relocatable_elf(data) else None
    bitcode: List[str] = []
    native: List[Tuple[str, bytes]] = []
    for i, (name, body) in enumerate(members):
        if body[:4] in BITCODE_MAGIC:
            member = os.path.join(scratch, f"{len(os.listdir(scratch))}-{i}-{os.path.basename(name) or 'member'}")
            with open(member, "wb") as f:
                f.write(body)
            bitcode.append(member)
        elif is_relocatable_elf(body):
            native.append((f"{path}({name})", body))
        else:
            return None
    return bitcode, native


def is_relocatable_elf(data: bytes) -> bool:
    """An ELF relocatable object (``e_type`` ET_REL), as ``cc -c`` makes from assembly."""
    if len(data) < 18 or data[:4] != b"\x7fELF":
        return False
    return int.from_bytes(data[16:18], "little" if data[5] == 1 else "big") == 1


def _read_head(path: str, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


#: Assembly source suffixes a compiler driver accepts (``.S`` and ``.sx`` are preprocessed).
ASSEMBLY_SUFFIXES = (".s", ".S", ".sx")


def assemble(source: str, scratch: str) -> str:
    """Assembles ``source`` with clang into a relocatable object in ``scratch``; returns its
    path (the source's own path if clang fails, so the link names it as unusable)."""
    obj = os.path.join(scratch, f"{len(os.listdir(scratch))}-{os.path.basename(source)}.o")
    proc = subprocess.run([_clang.find("clang"), "-c", source, "-o", obj], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        return source
    return obj


def _find_static_or_bitcode(name: str, library_dirs: List[str]) -> Optional[str]:
    """A ``-lname`` that our own builds produced (bitcode .so or bitcode archive) in the
    project's library directories."""
    for d in library_dirs:
        for candidate in (f"lib{name}.so", f"lib{name}.a"):
            path = os.path.join(d, candidate)
            if os.path.exists(path) and (path.endswith(".a") or _is_bitcode_file(path)):
                return path
    return None


def _is_bitcode_file(path: str) -> bool:

    return is_bitcode(path)


def link_main(args: List[str], cxx: bool = False) -> int:
    from . import _native, abi

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
    scratch = tempfile.mkdtemp(prefix="jitload-ld-")
    objects: List[str] = []
    native: List[Tuple[str, bytes]] = []
    unusable: List[str] = []
    for lib in list(libraries):
        # A library the same build made (a bitcode "shared library" or an archive): linked
        # into this module, as a static library would be.
        found = _find_static_or_bitcode(lib, library_dirs) if lib not in _RUNTIME_LIBRARIES else None
        if found is not None and split_input(found, scratch) is not None:
            libraries.remove(lib)
            inputs.append(found)
    for path in inputs:
        if path.endswith(ASSEMBLY_SUFFIXES):
            # The driver assembles sources given to a link (numpy's meson build hands it
            # its SVML .s files that way): do the same, and carry the object.
            path = assemble(path, scratch)
        contributed = split_input(path, scratch)
        if contributed is not None:
            objects.extend(contributed[0])
            native.extend(contributed[1])
        elif path.endswith((".so",)) or ".so." in os.path.basename(path):
            libraries.append(":" + path)  # an explicit shared library: the JIT loads it by path
        else:
            unusable.append(path)
    runtime = cxx_runtime(args)
    for lib in list(libraries):
        if lib in _RUNTIME_LIBRARIES:
            libraries.remove(lib)
            cxx, runtime = True, _RUNTIME_LIBRARIES[lib]
    if cxx or any(looks_like_cxx(o) for o in objects):
        libraries.append(":" + runtime)
    if unusable:
        print(
            "jitload ld: these inputs are neither bitcode nor relocatable objects, and cannot be linked into a "
            "bitcode module: " + ", ".join(unusable),
            file=sys.stderr,
        )
        return 1
    if native:
        # Assembly and other native objects travel inside the module (see _native_objects).
        carrier = os.path.join(scratch, "native-objects.ll")
        with open(carrier, "w") as f:
            f.write(_native_objects.ir_text(native))
        objects.append(carrier)
    try:
        deps = list(dict.fromkeys(elf.resolve_library(lib, library_dirs) for lib in libraries))
        _native.link_bitcode(list(dict.fromkeys(objects)), output, deps, abi.record_for(output))
    except JitloadError as e:
        print(f"jitload ld: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def expand_response_files(args: List[str]) -> List[str]:
    """``@file`` arguments replaced by the arguments the file holds (as gcc and clang read
    them: whitespace-separated, shell-style quotes), so a link meson writes to a response
    file is still seen as a link."""
    import shlex

    out: List[str] = []
    for a in args:
        if a.startswith("@") and os.path.isfile(a[1:]):
            with open(a[1:]) as f:
                out.extend(expand_response_files(shlex.split(f.read())))
        else:
            out.append(a)
    return out


def main(argv: List[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    tool, args = argv[0], expand_response_files(argv[1:])
    # setuptools builds a C++ link command from CXX (with its flags) plus LDCXXSHARED minus its
    # "first word", which leaves our own "-m jitload._toolchain ld" in the middle: drop it,
    # keep the meaning.
    for i in range(len(args) - 2):
        if args[i : i + 2] == ["-m", "jitload._toolchain"]:
            rest = args[:i] + args[i + 3 :]
            if args[i + 2] == "ld":
                return link_main(rest, cxx=tool == "c++")
            args = rest
            break
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
