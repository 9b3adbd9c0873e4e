"""Which Python a bitcode module was built for, and refusing one built for another.

A C extension compiled against one CPython's headers bakes in that version's struct layouts
and macros; loading it into another version is a crash waiting to happen. CPython guards
`.so` files by name only (``.cpython-311-x86_64-linux-gnu.so`` is looked for by 3.11 alone).
jitload's build tools also record the ABI in the module: named metadata ``jitload.python``
holding one string,

    jitload-python-abi:<SOABI or abi3>:<major>.<minor>;

(``jitload-python-abi:cpython-311-x86_64-linux-gnu:3.11;``, or ``...:abi3:3.11;`` for a
module linked under an ``.abi3`` name, built with 3.11's headers for the limited API).
The record is read without LLVM: bitcode keeps metadata strings as raw bytes (the
``METADATA_STRINGS`` blob), and IR text spells them out, so finding the marker in the file
is exact. The loader then decides (:func:`check`):

* a record for another SOABI -> :class:`~jitload.errors.AbiError` naming both versions;
  an ``abi3`` record loads on any CPython 3 (as CPython treats ``.abi3.so``);
* no record (bitcode made by plain clang): accepted under a name whose tag is this
  interpreter's (``.cpython-311-...bc``, ``.abi3.bc``), the only names the import hook
  looks for with a tag; a plain ``.bc``/``.ll`` loads with a :class:`AbiWarning`, once
  per file.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Set, Tuple

#: Named metadata holding the record.
METADATA_NAME = "jitload.python"

_warned: "Set[str]" = set()


def this_soabi() -> str:
    """This interpreter's SOABI (``cpython-311-x86_64-linux-gnu``), from its first extension
    suffix: cheaper than importing ``sysconfig``, whose lazy set-up is also not thread-safe
    (a thread importing while another sets it up read None)."""
    import _imp

    first = _imp.extension_suffixes()[0]  # ".cpython-311-x86_64-linux-gnu.so"
    return first[1:].rpartition(".")[0]


def record_for(output: str) -> str:
    """The record a module linked to ``output`` by this interpreter gets: ``abi3`` for an
    ``.abi3`` name (built for the limited API), else this interpreter's SOABI."""
    base = os.path.basename(output)
    tag = "abi3" if ".abi3." in base else this_soabi()
    return f"jitload-python-abi:{tag}:{sys.version_info[0]}.{sys.version_info[1]};"


def read_records(data: bytes, native: "Any") -> "List[Tuple[str, str]]":
    """Every distinct (tag, version) record in a module's bytes (a module linked from
    several recorded ones may hold several), read by ``native`` (either native module:
    memmem; a Python ``bytes.find`` took ~0.5 ns a byte, 1 ms for a 2 MB module)."""
    return list(native.python_abi_records(data))


def check(path: str, records: "List[Tuple[str, str]]", fullname: str) -> None:
    """Raise :class:`~jitload.errors.AbiError` if module ``fullname`` at ``path`` (with the
    ABI ``records`` of :func:`read_records`) was built for another Python; warn once for an
    unrecorded plain ``.bc``/``.ll``."""
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    soabi = this_soabi()
    for tag, version in records:
        if tag == "abi3" or tag == soabi:
            continue
        from .errors import AbiError

        raise AbiError(
            f"{path}: built for Python {version} ({tag}), but this is Python {here} ({soabi}): "
            f"rebuild it with this Python (python -m jitload compile / build-ext)",
            name=fullname,
            path=path,
        )
    if records:
        return
    base = os.path.basename(path)
    tags = {f".{soabi}.", ".abi3."}
    if any(t in base for t in tags) or path in _warned:
        return
    _warned.add(path)
    import warnings

    from .errors import AbiWarning

    warnings.warn(
        f"{path}: no record of the Python it was built for (not built by jitload's tools) and no "
        f"ABI tag in its name; loading it into Python {here} ({soabi}) on trust",
        AbiWarning,
        stacklevel=2,
    )
