"""jitload: import Python extension modules from LLVM bitcode, JIT-compiled in-process.

>>> import jitload
>>> jitload.install()          # also done at start-up by jitload.pth
>>> import mymodule            # finds mymodule.cpython-311-x86_64-linux-gnu.bc, .bc or .ll

LLVM is loaded lazily, the first time a bitcode module is imported or a native function is
called, so importing jitload costs no more than a few small Python modules.
"""

from __future__ import annotations

from .importer import BITCODE_SUFFIXES, is_installed

# typing is only for the type checker: this package is imported by the first bitcode import
# of a process, whose time counts against the `.so` it replaces.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional

    from .engine import Function, Library, Module, Session
    from .errors import (
        AbiError,
        AbiWarning,
        BitcodeError,
        CallbackError,
        CompileError,
        DuplicateSymbolError,
        GeneratorError,
        InitError,
        CSourceError,
        InitSystemError,
        JitloadError,
        JitloadWarning,
        LibraryError,
        LLVMLibraryError,
        LinkError,
        OptionWarning,
        RemovedError,
        SymbolNotFoundError,
        ToolchainError,
    )

__version__ = "0.1.0"

# The engine API loads ctypes and the native module: imported on first use, not at start-up.
_ENGINE_NAMES = ("Session", "Library", "Module", "Function")


# The exception classes too: the import hook needs none of them until something fails.
_ERROR_NAMES = (
    "AbiError",
    "AbiWarning",
    "BitcodeError",
    "CallbackError",
    "CSourceError",
    "CompileError",
    "DuplicateSymbolError",
    "GeneratorError",
    "InitError",
    "InitSystemError",
    "JitloadError",
    "JitloadWarning",
    "LibraryError",
    "LLVMLibraryError",
    "LinkError",
    "OptionWarning",
    "RemovedError",
    "SymbolNotFoundError",
    "ToolchainError",
)


def __getattr__(name: str) -> object:
    if name in _ENGINE_NAMES:
        from . import engine

        return getattr(engine, name)
    if name in _ERROR_NAMES:
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'jitload' has no attribute {name!r}")

__all__ = [
    "AbiError",
    "AbiWarning",
    "BITCODE_SUFFIXES",
    "BitcodeError",
    "CallbackError",
    "CSourceError",
    "CompileError",
    "DuplicateSymbolError",
    "Function",
    "GeneratorError",
    "Library",
    "Module",
    "RemovedError",
    "Session",
    "SymbolNotFoundError",
    "InitError",
    "InitSystemError",
    "JitloadError",
    "JitloadWarning",
    "LibraryError",
    "LLVMLibraryError",
    "LinkError",
    "OptionWarning",
    "ToolchainError",
    "cache_stats",
    "host_target",
    "inspect",
    "install",
    "is_installed",
    "dependent_libraries",
    "llvm_version",
    "load_library",
    "loaded_libraries",
    "options",
    "set_option",
    "tier_info",
    "uninstall",
    "versions",
    "wait_for_tiers",
]


def install(
    *,
    prefer_bitcode: Optional[bool] = None,
    opt_level: Optional[int] = None,
    isolate: Optional[bool] = None,
    c_source: Optional[bool] = None,
    cache: Optional[bool] = None,
    tier: Optional[str] = None,
) -> None:
    """Install the import hook (idempotent).

    Args:
        prefer_bitcode: if true, ``foo.bc`` wins over a ``foo.so`` in the same directory
            (default: ``JITLOAD_PREFER_BITCODE``, else false).
        opt_level: 0-3, the optimisation level for JIT compilation (default:
            ``JITLOAD_OPT_LEVEL``, else 2).
        isolate: compile in a forked child process so no input can crash or exhaust the
            interpreter (default: ``JITLOAD_ISOLATION``, else true).
        c_source: if true, ``import foo`` also finds ``foo.c`` (after every other kind of
            module), compiles it with clang 22 to bitcode, cached by content, and loads that;
            flags come from ``// jitload:`` lines and a ``foo.c.flags`` sidecar; see
            :mod:`jitload.csource` (default: ``JITLOAD_C_SOURCE``, else false).
        cache: reuse compiled objects from the persistent cache and store new ones
            (default: ``JITLOAD_CACHE``, else true); see ``python -m jitload cache``.
        tier: ``"auto"``: a module imported with nothing cached compiles each function at
            -O0 on its first call and the whole module at ``opt_level`` in the background
            (:func:`wait_for_tiers`); ``"eager"``: all of it before ``import`` returns
            (default: ``JITLOAD_TIER``, else ``"auto"``).
    """
    from .importer import install as _install

    _install(prefer_bitcode=prefer_bitcode, opt_level=opt_level, isolate=isolate, c_source=c_source, cache=cache, tier=tier)


def uninstall() -> None:
    """Remove the import hook. Already-imported bitcode modules keep working."""
    from .importer import uninstall as _uninstall

    _uninstall()


def load_library(name_or_path: str) -> str:
    """Make a shared library's symbols visible to bitcode modules loaded afterwards.

    ``name_or_path`` is a path, a file name (``"libyaml-0.so.2"``) or a bare name as in
    ``-lyaml`` (``"yaml"``). Returns the path that was opened. Raises LibraryError.
    """
    from . import _native

    return _native.load_library(name_or_path)


def host_target() -> Dict[str, str]:
    """The triple, CPU name and CPU features jitload compiles for, the CPU it tunes for
    (``tune``), and the host features functions do not get unless they ask for them
    (``withheld``, comma-separated: ``-avx512dq`` on Intel AVX-512 hosts, see docs/benchmarks.md)."""
    from . import _native

    return dict(_native.host_target())


def llvm_version() -> str:
    """The LLVM version jitload runs on."""
    from . import _native

    return _native.llvm_version()


def inspect(path: str, opt_level: int = 2) -> Dict[str, str]:
    """The optimised IR (``"ir"``) and native assembly (``"asm"``) jitload produces for a file."""
    from . import _native

    ir, asm = _native.inspect(path, opt_level)
    return {"ir": ir, "asm": asm}


def _module_file(module: object) -> str:
    if isinstance(module, str):
        import sys

        found = sys.modules.get(module)
        if found is None:
            raise ValueError(f"no module named {module!r} is imported")
        module = found
    path = getattr(module, "__file__", None)
    if not isinstance(path, str):
        raise ValueError(f"{module!r} has no __file__: not an extension module")
    return path


def wait_for_tiers(module: object = None, timeout: Optional[float] = None) -> bool:
    """Wait until ``module`` (a module object or its name; every module without one), loaded
    in tiers, runs its final-tier code (``JITLOAD_OPT_LEVEL``) or gave up on it (its first
    tier keeps running). Returns False if ``timeout`` seconds passed first.

    >>> import jitload
    >>> jitload.wait_for_tiers(timeout=600)
    True
    """
    from . import _native

    return _native.wait_for_tiers(None if module is None else _module_file(module), timeout)


def tier_info(module: object) -> Optional[Dict[str, object]]:
    """The tiers of ``module`` (a module object or its name) if it was loaded in tiers:
    ``{"state": "pending" | "final" | "failed: ..." | "released", "source_kept": bool,
    "functions": {name: tier}}`` with tier 0 (not called yet), 1 (-O0, compiled on its first
    call) or 2 (final tier); ``source_kept``: the lazily read module is still in memory (it
    is dropped once the final tier serves every function first-tier code can call);
    None for a module loaded eagerly or from the cache."""
    import sys

    if "jitload._native" not in sys.modules:
        return None  # nothing was compiled in this process
    from . import _native

    info: Optional[Dict[str, object]] = _native.tier_info(_module_file(module))
    return info


def loaded_libraries() -> List[str]:
    """Paths of the libraries added with :func:`load_library`, in search order."""
    from . import _native

    return list(_native.user_libraries())


def options() -> Dict[str, object]:
    """Every ``JITLOAD_*`` setting's value in effect (name -> value: bool, int, float or str;
    None for a setting with no default that is not set). Warns (:class:`OptionWarning`) about
    values that did not parse. Does not load LLVM. ``python -m jitload options`` prints them
    with their meanings.

    >>> import jitload
    >>> jitload.options()["JITLOAD_OPT_LEVEL"] in (0, 1, 2, 3)
    True
    """
    from . import _settings, config

    values, _ = config.current()
    return {name: values.get(name) for name, *_ in _settings.SETTINGS}


def set_option(name: str, value: str) -> None:
    """Set one ``JITLOAD_*`` setting for the rest of the process, as if the environment had
    said ``name=value`` from the start (``""`` restores the default), in the import hook and
    both native modules. Raises ValueError naming the problem. What already took a value
    keeps it (a session takes its settings when it is made).

    >>> import jitload
    >>> jitload.set_option("JITLOAD_CODEGEN_THREADS", "2")
    >>> jitload.options()["JITLOAD_CODEGEN_THREADS"]
    2
    >>> jitload.set_option("JITLOAD_CODEGEN_THREADS", "")
    """
    from . import config

    config.set_option(name, value)


def cache_stats() -> Dict[str, int]:
    """This process's object-cache counts: ``hits`` (imports served from the cache),
    ``without_llvm`` (of those, linked without loading LLVM), ``fallbacks`` (cached but left
    to the engine: e.g. a helper only compiler-rt's archive provides), ``misses`` (compiled),
    ``stores`` and ``store_failures``. Does not load LLVM."""
    import sys

    from .importer import _fastload

    fast = _fastload()
    warm = dict(fast.stats()) if fast is not None else {}
    native = sys.modules.get("jitload._native")
    engine = dict(native.cache_stats()) if native is not None else {}
    return {
        "hits": warm.get("hits", 0) + engine.get("hits", 0),
        "without_llvm": warm.get("hits", 0),
        "fallbacks": warm.get("fallbacks", 0),
        "misses": engine.get("misses", 0),
        "stores": engine.get("stores", 0),
        "store_failures": engine.get("store_failures", 0),
    }


def versions() -> Dict[str, str]:
    """jitload's version, and LLVM's and clang's with where they were found: keys
    ``jitload``, ``llvm`` and ``libllvm`` (the library's path, or why none is usable),
    ``clang`` and ``clang_path`` ("" when not found). Loads libLLVM, not jitload's compiler."""
    from . import _clang, _llvm
    from .errors import LLVMLibraryError, ToolchainError

    found: Dict[str, str] = {"jitload": __version__}
    try:
        library = _llvm.find()
        found.update(llvm=library.version_text, libllvm=f"{library.path} ({library.source})")
    except LLVMLibraryError as e:
        found.update(llvm="", libllvm=str(e))
    try:
        clang = _clang.find()
        found.update(clang=_clang.version_number(clang), clang_path=clang)
    except ToolchainError as e:
        found.update(clang="", clang_path=str(e))
    return found


def dependent_libraries(path: str) -> List[str]:
    """The shared libraries a bitcode/IR file names in ``!llvm.dependent-libraries``."""
    from . import _native

    return list(_native.dependent_libraries(path))
