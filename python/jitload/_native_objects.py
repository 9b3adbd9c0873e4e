"""Native objects that travel inside a bitcode module.

Assembly sources (``.s``/``.S``) and prebuilt objects cannot become bitcode. The bitcode
link carries them in the module itself, as named metadata::

    !jitload.native_objects = !{!0, ...}
    !0 = !{!"<where it came from>", !"<the object file's bytes>"}

and both loaders link them beside the code compiled from the bitcode (the engine adds them
to the module's JITDylib; the warm path finds them in the cache entry with the compiled
objects). Why inside the file rather than a sidecar archive: a ``.bc`` stays one file
(copied, renamed by build tools, listed once in a wheel's RECORD), the object cache's key —
a hash of the file — covers the native code without anything new, and LLVM's own linker
concatenates named metadata, so modules linked together keep all of their objects.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

#: The named metadata holding the objects (read by the engine, `crates/jitload-engine/src/native.rs`).
NAMED_METADATA = "jitload.native_objects"

# How each byte is written inside an IR string literal: printable ASCII as itself, the rest
# (and the quote and backslash) as \XX.
_ESCAPE = [chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else f"\\{b:02X}" for b in range(256)]


def _ir_string(data: bytes) -> str:
    return '!"' + "".join([_ESCAPE[b] for b in data]) + '"'


def ir_text(objects: Sequence[Tuple[str, bytes]]) -> str:
    """An IR module carrying ``objects`` (name, bytes) for the bitcode link to merge in."""
    lines: List[str] = []
    refs = []
    for i, (name, data) in enumerate(objects):
        lines.append(f"!{i} = !{{{_ir_string(name.encode())}, {_ir_string(data)}}}")
        refs.append(f"!{i}")
    return f"!{NAMED_METADATA} = !{{{', '.join(refs)}}}\n" + "\n".join(lines) + "\n"
