"""Whether a file is LLVM bitcode, from its first bytes (raw bitcode or the wrapper header
Darwin tools write), for the build tools and their compiler stand-ins alike."""

from __future__ import annotations

import os

#: Raw bitcode, and bitcode inside the wrapper header.
BITCODE_MAGIC = (b"BC\xc0\xde", b"\xde\xc0\x17\x0b")


def is_bitcode(path: "os.PathLike[str] | str") -> bool:
    """Whether ``path`` starts like bitcode (False for a file that cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in BITCODE_MAGIC
    except OSError:
        return False
