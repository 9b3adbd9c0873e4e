"""Just enough ELF reading to turn ``-lfoo`` into the library name a linker would record
(the DT_SONAME of ``libfoo.so``), so a bitcode module names the same library a ``.so`` would."""

from __future__ import annotations

import mmap
import os
import struct
import warnings
from typing import List, Optional, Sequence

from .errors import JitloadWarning, ToolchainError


DT_NEEDED = 1
DT_SONAME = 14
SHT_DYNAMIC = 6


def soname(path: str) -> Optional[str]:
    """The DT_SONAME of a 64-bit little-endian ELF shared library, or None."""
    names = dynamic_strings(path, DT_SONAME)
    return names[0] if names else None


def needed(path: str) -> List[str]:
    """The DT_NEEDED libraries of a 64-bit little-endian ELF file ([] if not one)."""
    return dynamic_strings(path, DT_NEEDED)


def dynamic_strings(path: str, tag: int) -> List[str]:
    """The strings of the dynamic section's ``tag`` entries, in order. The file is mapped,
    not read: a libLLVM is 150 MB, of which this touches a few pages."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _dynamic_strings(data, tag)
    except (OSError, ValueError):  # unreadable, or empty (mmap refuses a zero length)
        return []


def _dynamic_strings(data: "mmap.mmap", tag: int) -> List[str]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return []
    found = []
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        for _name, sh_type, _f, _a, offset, size, link, _i, _al, entsize in sections:
            if sh_type != SHT_DYNAMIC:
                continue
            strtab_off = sections[link][4]
            for j in range(0, size, entsize or 16):
                entry_tag, val = struct.unpack_from("<qQ", data, offset + j)
                if entry_tag == 0:
                    break
                if entry_tag == tag:
                    end = data.find(b"\0", strtab_off + val)
                    found.append(data[strtab_off + val : end].decode())
    except (struct.error, IndexError, ValueError, UnicodeDecodeError):
        return found
    return found


def _linker_script_target(path: str) -> Optional[str]:
    """Debian ships some libfoo.so as a text linker script (e.g. libm.so); read its GROUP."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head[:4] == b"\x7fELF" or b"GROUP" not in head and b"INPUT" not in head:
        return None
    for tok in head.decode("latin-1").replace("(", " ").replace(")", " ").split():
        if tok.startswith("/") and ".so" in tok:
            return tok
    return None


def resolve_library(name: str, library_dirs: Sequence[str] = ()) -> str:
    """Map a ``-l`` name to what the JIT should load: the library's SONAME when a shared
    library is found, else the bare name (with a warning) for the JIT to search at load time.
    Raises ToolchainError when only a static archive exists (native code cannot join bitcode).
    """
    if name.startswith(":"):
        return name[1:]
    from . import _native

    dirs = [*library_dirs, *os.environ.get("LIBRARY_PATH", "").split(":"), *_native.library_dirs()]
    for d in filter(None, dirs):
        shared = os.path.join(d, f"lib{name}.so")
        if os.path.exists(shared):
            real = _linker_script_target(shared) or shared
            return soname(real) or os.path.basename(real)
    for d in filter(None, dirs):
        if os.path.exists(os.path.join(d, f"lib{name}.a")):
            raise ToolchainError(
                f"-l{name}: only the static archive lib{name}.a was found; its native objects cannot be "
                f"linked into bitcode. Install the shared library (lib{name}.so) instead."
            )
    warnings.warn(f"-l{name}: no lib{name}.so found at build time; recording '{name}' for the JIT to find", JitloadWarning)
    return name
