"""Just enough ELF reading to turn ``-lfoo`` into the library name a linker would record
(the DT_SONAME of ``libfoo.so``), so a bitcode module names the same library a ``.so`` would."""

from __future__ import annotations

import os
import struct
import warnings
from typing import Optional, Sequence

from .errors import JitloadWarning, ToolchainError


DT_SONAME = 14
SHT_DYNAMIC = 6


def soname(path: str) -> Optional[str]:
    """The DT_SONAME of a 64-bit little-endian ELF shared library, or None."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        for _name, sh_type, _f, _a, offset, size, link, _i, _al, entsize in sections:
            if sh_type != SHT_DYNAMIC:
                continue
            strtab_off = sections[link][4]
            for j in range(0, size, entsize or 16):
                tag, val = struct.unpack_from("<qQ", data, offset + j)
                if tag == 0:
                    break
                if tag == DT_SONAME:
                    end = data.index(b"\0", strtab_off + val)
                    return data[strtab_off + val : end].decode()
    except (struct.error, IndexError, ValueError):
        return None
    return None


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
