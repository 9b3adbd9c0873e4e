"""Loads the compiler module (``_lib/_native``, jitload's LLVM-backed extension) after
:func:`jitload._llvm.preload` has found and checked the libLLVM it needs, and puts it in
``sys.modules`` under this name: ``from . import _native`` gets the extension module itself.
A missing or wrong libLLVM is thus an ImportError that names the library, the version found,
the one needed and the fix, raised at the first compile — not at start-up, not a crash.
"""

from __future__ import annotations

import sys


def __getattr__(name: str) -> object:
    """While this module loads the extension (tens of milliseconds), another thread can find
    it in ``sys.modules`` and ask it for an attribute: wait for the import (its lock) and
    answer from the extension."""
    if name.startswith("__"):
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(__name__), name)


def _load() -> object:
    from importlib.machinery import ExtensionFileLoader
    from importlib.util import module_from_spec, spec_from_file_location

    from . import _llvm
    from .errors import LLVMLibraryError

    library = _llvm.preload()
    path = _llvm.native_path()
    loader = ExtensionFileLoader(__name__, path)
    spec = spec_from_file_location(__name__, path, loader=loader)
    assert spec is not None  # a loader was given
    try:
        module = module_from_spec(spec)
        loader.exec_module(module)
        from . import config

        config.warn_problems()
        config.apply_overrides(module)
    except ImportError as e:
        if not any(word in str(e) for word in ("symbol", "version", "shared object")):
            raise  # not the dynamic linker's (e.g. PyO3 declining a subinterpreter)
        raise LLVMLibraryError(
            f"cannot load {path} with {library.path} (LLVM {library.version_text}, {library.source}): {e}. "
            f"That library is not the {_llvm.SONAME} jitload was built against (another build of LLVM, "
            f"or one built with another C++ standard library). Fix: {_llvm.FIX}.",
            name=__name__,
            path=path,
        ) from e
    return module


sys.modules[__name__] = _load()  # type: ignore[assignment]
