"""jitload's start-up hook, run by ``jitload.pth`` in every interpreter of the environment.

It makes ``import`` find bitcode extension modules while importing nothing: not even the
``jitload`` package (about a millisecond of imports), let alone LLVM. The interpreter's
FileFinder path hook is replaced by one that also knows the bitcode suffixes; their loader
is a factory that imports :mod:`jitload.importer` only when a bitcode (or C-source) file is
actually found. :func:`jitload.install` later replaces this hook with its own (same suffixes,
same order) and :func:`jitload.uninstall` restores :data:`replaced`.

A top-level module rather than ``jitload._startup``: a submodule would import the package
first.
"""

import os
import sys

from _frozen_importlib_external import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    ExtensionFileLoader,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Tuple

    Details = Tuple[Any, List[str]]


def _bitcode_suffixes() -> "List[str]":
    suffixes = [s[: -len(".so")] + ".bc" for s in EXTENSION_SUFFIXES if s.endswith(".so")]
    suffixes += [".abi3.bc", ".bc", ".ll"]
    return list(dict.fromkeys(suffixes))


#: Suffixes the hook looks for, most specific first: the interpreter's own extension
#: suffixes with ``.so`` turned into ``.bc``, then ``.abi3.bc``, ``.bc`` and textual ``.ll``.
BITCODE_SUFFIXES: "List[str]" = _bitcode_suffixes()

#: Suffixes of C sources the hook compiles when ``c_source`` is on (after every other kind).
C_SOURCE_SUFFIXES: "List[str]" = [".c"]

#: The interpreter's own FileFinder hook, which the first jitload hook replaced.
replaced: "Optional[Callable[..., Any]]" = None


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def loader_details(prefer_bitcode: bool, c_source: bool, bitcode: "Any", c_loader: "Any") -> "List[Details]":
    """FileFinder's (loader, suffixes) pairs: native or bitcode first, then Python source and
    bytecode, then (when on) C source."""
    native: "Details" = (ExtensionFileLoader, EXTENSION_SUFFIXES)
    jit: "Details" = (bitcode, BITCODE_SUFFIXES)
    first = [jit, native] if prefer_bitcode else [native, jit]
    c: "List[Details]" = [(c_loader, C_SOURCE_SUFFIXES)] if c_source else []
    return first + [(SourceFileLoader, SOURCE_SUFFIXES), (SourcelessFileLoader, BYTECODE_SUFFIXES)] + c


def _bitcode_loader(fullname: str, path: str) -> "Any":
    from jitload.importer import BitcodeExtensionLoader

    return BitcodeExtensionLoader(fullname, path)


def _c_source_loader(fullname: str, path: str) -> "Any":
    from jitload.importer import CSourceLoader

    return CSourceLoader(fullname, path)


def put(details: "List[Details]") -> None:
    """Puts a FileFinder hook with ``details`` in place of the FileFinder hook (the
    interpreter's or a jitload one), and gives the finders it already made the same loaders.

    Those finders are updated in place (their ``_loaders``, as FileFinder's constructor sets
    it) rather than dropped: a new finder would list its directory again at the next import,
    which costs more at start-up than everything else this hook does."""
    global replaced
    hook = FileFinder.path_hook(*details)
    hook._jitload = True  # type: ignore[attr-defined]
    for i, existing in enumerate(sys.path_hooks):
        jitload_hook = getattr(existing, "_jitload", False)
        if jitload_hook or getattr(existing, "__name__", "") == "path_hook_for_FileFinder":
            if not jitload_hook:
                replaced = existing
            sys.path_hooks[i] = hook
            break
    else:
        sys.path_hooks.append(hook)
    refresh(details)


def refresh(details: "Optional[List[Details]]") -> None:
    """Gives the FileFinders already made the loaders of ``details`` (None: drops them, so
    the interpreter's own hook makes new ones). Paths no hook could handle (None entries)
    stay: a jitload hook accepts exactly the directories FileFinder's own hook accepts."""
    loaders = [(suffix, loader) for loader, suffixes in details for suffix in suffixes] if details is not None else None
    for key, finder in list(sys.path_importer_cache.items()):
        if isinstance(finder, FileFinder):
            if loaders is not None and isinstance(getattr(finder, "_loaders", None), list):
                finder._loaders = list(loaders)  # type: ignore[attr-defined]
            else:
                del sys.path_importer_cache[key]


def install() -> None:
    """Installs the start-up hook with the options of the environment
    (``JITLOAD_PREFER_BITCODE``, ``JITLOAD_C_SOURCE``), unless ``JITLOAD_DISABLE`` is set or a
    jitload hook is already in place (a venv's ``lib64`` link makes site read ``jitload.pth``
    twice)."""
    if env_flag("JITLOAD_DISABLE") or any(getattr(h, "_jitload", False) for h in sys.path_hooks):
        return
    put(loader_details(env_flag("JITLOAD_PREFER_BITCODE"), env_flag("JITLOAD_C_SOURCE"), _bitcode_loader, _c_source_loader))
