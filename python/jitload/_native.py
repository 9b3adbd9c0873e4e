"""Loads the compiler module (``_lib/_native``, jitload's LLVM-backed extension) after
:func:`jitload._llvm.preload` has found and checked the libLLVM it needs, and puts it in
``sys.modules`` under this name: ``from . import _native`` gets the extension module itself.
A missing or wrong libLLVM is thus an ImportError that names the library, the version found,
the one needed and the fix, raised at the first compile — not at start-up, not a crash.
"""

from __future__ import annotations

import sys

from . import _llvm
from .errors import LLVMLibraryError


def _load() -> object:
    from importlib.machinery import ExtensionFileLoader
    from importlib.util import module_from_spec, spec_from_file_location

    library = _llvm.preload()
    path = _llvm.native_path()
    loader = ExtensionFileLoader(__name__, path)
    spec = spec_from_file_location(__name__, path, loader=loader)
    assert spec is not None  # a loader was given
    try:
        module = module_from_spec(spec)
        loader.exec_module(module)
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


# Out of sys.modules while libLLVM and the extension load (tens of milliseconds): code that
# looks there for a loaded _native (without importing it) must not find this half-made module;
# a thread importing it waits on the module's import lock, then gets the extension.
del sys.modules[__name__]
sys.modules[__name__] = _load()  # type: ignore[assignment]
