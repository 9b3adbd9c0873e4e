"""Exception classes raised by jitload.

Every failure to import a bitcode module is an :class:`ImportError` subclass, so code that
falls back on ``except ImportError`` keeps working. ``name`` and ``path`` are set as on
ImportError, and the underlying Python exception (if any) is chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "JitloadError",
    "BitcodeError",
    "AbiError",
    "CompileError",
    "LinkError",
    "LibraryError",
    "InitError",
    "InitSystemError",
    "ToolchainError",
    "LLVMLibraryError",
    "CSourceError",
    "JitloadWarning",
    "AbiWarning",
    "OptionWarning",
    "DuplicateSymbolError",
    "SymbolNotFoundError",
    "RemovedError",
    "GeneratorError",
    "CallbackError",
]


class JitloadError(ImportError):
    """Base class of every jitload error."""


class BitcodeError(JitloadError):
    """The file is not usable bitcode/IR: empty, not bitcode, unreadable (e.g. made by a newer
    LLVM), an IR syntax error, a module failing the verifier, or built for another target."""


class AbiError(BitcodeError):
    """The module was built for another Python (its recorded version/ABI differs from this
    interpreter's); the message names both. See :mod:`jitload.abi`."""


class CompileError(JitloadError):
    """Optimisation or code generation failed."""


class LinkError(JitloadError):
    """Linking failed: undefined symbols (all listed), a missing dependent library, or no
    ``PyInit_<name>`` function."""


class LibraryError(JitloadError):
    """A shared library given to :func:`jitload.load_library` could not be opened."""


class InitError(JitloadError):
    """The module's init function (or a PEP 489 exec slot) raised; the exception is chained."""


class InitSystemError(InitError, SystemError):
    """The init function misbehaved as CPython would report with SystemError: it returned
    NULL without an exception, or returned something that is not an extension module."""


class LLVMLibraryError(JitloadError):
    """The libLLVM jitload compiles with is missing, or is not the LLVM it was built against."""


class ToolchainError(JitloadError):
    """clang-22 (or another build tool) is missing or failed while building bitcode."""


class CSourceError(ToolchainError):
    """clang rejected a C source (see :mod:`jitload.csource`). The message holds the file
    name and clang's diagnostics (``file:line:col: error: ...``), also in ``diagnostics``."""

    def __init__(self, *args: object, diagnostics: str = "", name: str | None = None, path: str | None = None) -> None:
        super().__init__(*args, name=name, path=path)
        self.diagnostics = diagnostics


class JitloadWarning(UserWarning):
    """Something worked, but not the way the user asked (e.g. a fallback was taken)."""


class AbiWarning(JitloadWarning):
    """A plain ``.bc``/``.ll`` module without a record of the Python it was built for was
    loaded on trust (once per file). See :mod:`jitload.abi`."""


class OptionWarning(JitloadWarning):
    """A ``JITLOAD_*`` environment variable has a value that does not parse (the default is
    used), or a name close to a setting's that is not one (a typo). See ``python -m jitload
    options``."""


class DuplicateSymbolError(JitloadError):
    """A module added to a :class:`jitload.Library` defines a name the library already has
    (pass ``replace=True`` to replace functions)."""


class SymbolNotFoundError(JitloadError, LookupError):
    """A library has no such symbol; the message suggests close names."""


class RemovedError(JitloadError):
    """The module, library or function was removed (or its library was) before this use."""


class GeneratorError(JitloadError):
    """A ``define_lazy`` generator raised or returned something that is not code defining the
    requested symbol; the generator's exception, if any, is chained."""


class CallbackError(JitloadError, RuntimeError):
    """A Python callback exposed to native code (:mod:`jitload.fast`) could not run: its
    thunk was closed, or it failed without setting an exception. Its own exceptions are
    re-raised as they are. Reported to the calling jitload wrapper (or
    ``sys.unraisablehook``)."""

