"""The import hook: a FileFinder that also knows bitcode suffixes, and the loader that
JIT-compiles what it finds.

Pure Python and cheap to import: LLVM (``jitload._native``) is loaded only when a bitcode
module is actually imported.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    ExtensionFileLoader,
    FileFinder,
    ModuleSpec,
    SourceFileLoader,
    SourcelessFileLoader,
)
from types import ModuleType

from . import config

# Imported at every interpreter start (jitload.pth): `typing` alone would cost ~12 ms, so it is
# only imported for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Tuple

    _Details = Tuple[Any, List[str]]


def _bitcode_suffixes() -> List[str]:
    suffixes = [s[: -len(".so")] + ".bc" for s in EXTENSION_SUFFIXES if s.endswith(".so")]
    suffixes += [".abi3.bc", ".bc", ".ll"]
    return list(dict.fromkeys(suffixes))


#: Suffixes the hook looks for, most specific first: the interpreter's own extension
#: suffixes with ``.so`` turned into ``.bc``, then ``.abi3.bc``, ``.bc`` and textual ``.ll``.
BITCODE_SUFFIXES: List[str] = _bitcode_suffixes()


def init_symbol(fullname: str) -> str:
    """The init function CPython would call for module ``fullname`` (PEP 489 naming)."""
    short = fullname.rpartition(".")[2]
    try:
        short.encode("ascii")
    except UnicodeEncodeError:
        return "PyInitU_" + short.encode("punycode").decode("ascii").replace("-", "_")
    return "PyInit_" + short


class _SubinterpreterNative:
    """The two native entry points the loader needs, reached through ctypes.

    PyO3 (which builds ``jitload._native``) refuses to initialise the module in any
    interpreter but the main one; the same shared library also exports plain C functions
    that work in subinterpreters. Only used when importing ``_native`` fails there.
    """

    def __init__(self) -> None:
        import ctypes
        import importlib.util

        spec = importlib.util.find_spec("jitload._native")
        if spec is None or spec.origin is None:
            raise ImportError("jitload._native is not installed")
        lib = ctypes.PyDLL(spec.origin)
        self._load = lib.jitload_subinterpreter_load
        self._load.restype = ctypes.py_object
        self._load.argtypes = [ctypes.py_object] * 4 + [ctypes.c_int, ctypes.c_int]
        self._exec = lib.jitload_subinterpreter_exec
        self._exec.restype = ctypes.c_int
        self._exec.argtypes = [ctypes.py_object]

    def load_extension(
        self, path: str, fullname: str, init_symbol: str, spec: ModuleSpec, opt_level: int = 2, isolate: bool = True
    ) -> ModuleType:
        module: ModuleType = self._load(path, fullname, init_symbol, spec, opt_level, int(isolate))
        return module

    def exec_extension(self, module: ModuleType) -> None:
        self._exec(module)


def _native() -> Any:
    """``jitload._native``, or its C entry points where PyO3 cannot load (subinterpreters)."""
    global _native_module
    if _native_module is None:
        native: Any
        try:
            from . import _native as native
        except ImportError:
            native = _SubinterpreterNative()
        _native_module = native
    return _native_module


_native_module: Any = None


class BitcodeExtensionLoader(ExtensionFileLoader):
    """Loads an extension module from LLVM bitcode or IR by JIT-compiling it in-process.

    It is an :class:`~importlib.machinery.ExtensionFileLoader`, so tools that ask "is this a
    native extension?" get the right answer; only creating and executing the module differ.
    """

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return _native().load_extension(  # type: ignore[no-any-return]
            self.path,
            spec.name,
            init_symbol(spec.name),
            spec,
            opt_level=config.options.opt_level,
            isolate=config.options.isolate,
        )

    def exec_module(self, module: ModuleType) -> None:
        _native().exec_extension(module)

    def is_package(self, fullname: str) -> bool:
        return False


#: Suffixes of C sources the hook compiles when ``c_source`` is on (after every other kind).
C_SOURCE_SUFFIXES: List[str] = [".c"]

# Module loaded from C source -> content key of the bitcode it runs, to tell on reload whether
# anything changed. A WeakKeyDictionary, created on first use (weakref is not needed at start-up).
_c_module_keys: Any = None


def _c_keys() -> Any:
    global _c_module_keys
    if _c_module_keys is None:
        import weakref

        _c_module_keys = weakref.WeakKeyDictionary()
    return _c_module_keys


class CSourceLoader(BitcodeExtensionLoader):
    """Loads an extension module from a C source file (``foo.c``): clang 22 compiles it to
    bitcode, cached by content (:mod:`jitload.csource`; flags from ``// jitload:`` lines and
    the ``foo.c.flags`` sidecar), which is then loaded like a ``.bc`` file.

    ``importlib.reload`` recompiles (a cache hit when nothing changed). If the source, a
    header or the flags changed, a new module is loaded from the new code and put in
    ``sys.modules`` (and on its parent package), which is what ``importlib.reload`` returns:
    write ``foo = importlib.reload(foo)``. The old module object keeps running the old code.
    If nothing changed, reload behaves as for a ``.so`` (the module is kept).
    """

    _pending: Optional[ModuleType] = None
    _compiled: Any = None

    def _compile(self, fullname: str) -> Any:
        from . import csource
        from .errors import JitloadError

        try:
            return csource.build_file(self.path)
        except JitloadError as e:
            if e.name is None:
                e.name = fullname
            raise

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        compiled, self._compiled = self._compiled, None
        if compiled is None:
            compiled = self._compile(spec.name)
        if compiled.path is not None:
            module = self._load_bitcode(spec, compiled.path)
        else:  # the cache is unusable: load from a temporary file
            import tempfile

            with tempfile.TemporaryDirectory(prefix="jitload-csource-") as tmp:
                path = os.path.join(tmp, spec.name.rpartition(".")[2] + ".bc")
                with open(path, "wb") as f:
                    f.write(compiled.bitcode)
                module = self._load_bitcode(spec, path)
        if getattr(module, "__file__", None) != self.path:
            try:
                module.__file__ = self.path  # single-phase init set it to the bitcode file
            except AttributeError:
                pass
        try:
            _c_keys()[module] = compiled.key
        except TypeError:  # a module type without weak references: every reload loads anew
            pass
        self._pending = module
        return module

    def _load_bitcode(self, spec: ModuleSpec, bitcode_path: str) -> ModuleType:
        from .errors import JitloadError

        try:
            return _native().load_extension(  # type: ignore[no-any-return]
                bitcode_path,
                spec.name,
                init_symbol(spec.name),
                spec,
                opt_level=config.options.opt_level,
                isolate=config.options.isolate,
            )
        except JitloadError as e:
            # Name the C file the user knows; keep the class and the cause chain.
            detail = str(e)
            if detail.startswith(bitcode_path + ": "):
                detail = detail[len(bitcode_path) + 2 :]
            message = f"{self.path} (compiled to {bitcode_path}): {detail}"
            e.msg = message
            e.args = (message,)
            e.path = self.path
            raise

    def exec_module(self, module: ModuleType) -> None:
        if self._pending is module:  # the module create_module just made
            self._pending = None
            _native().exec_extension(module)
            return
        # importlib.reload: the module was made earlier (by this file, or another loader).
        compiled = self._compile(module.__name__)
        try:
            unchanged = _c_keys().get(module) == compiled.key
        except TypeError:
            unchanged = False
        if unchanged:
            _native().exec_extension(module)
            return
        import importlib.util

        spec = module.__spec__
        if spec is None:
            raise ImportError(f"cannot reload {module!r}: it has no __spec__", path=self.path)
        self._compiled = compiled
        new = importlib.util.module_from_spec(spec)
        self.exec_module(new)
        sys.modules[spec.name] = new
        parent, _, child = spec.name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, new)


def _loader_details(prefer_bitcode: bool, c_source: bool = False) -> List[_Details]:
    native: _Details = (ExtensionFileLoader, EXTENSION_SUFFIXES)
    bitcode: _Details = (BitcodeExtensionLoader, BITCODE_SUFFIXES)
    source: _Details = (SourceFileLoader, SOURCE_SUFFIXES)
    compiled: _Details = (SourcelessFileLoader, BYTECODE_SUFFIXES)
    first = [bitcode, native] if prefer_bitcode else [native, bitcode]
    c: List[_Details] = [(CSourceLoader, C_SOURCE_SUFFIXES)] if c_source else []
    return first + [source, compiled] + c


def _is_file_finder_hook(hook: Callable[..., Any]) -> bool:
    return getattr(hook, "__name__", "") == "path_hook_for_FileFinder" or getattr(hook, "_jitload", False)


_replaced: Optional[Callable[..., Any]] = None


def _invalidate_finders() -> None:
    for key, finder in list(sys.path_importer_cache.items()):
        if finder is None or isinstance(finder, FileFinder):
            del sys.path_importer_cache[key]


def install(
    prefer_bitcode: Optional[bool] = None,
    opt_level: Optional[int] = None,
    isolate: Optional[bool] = None,
    c_source: Optional[bool] = None,
) -> None:
    """Make ``import`` find bitcode extension modules (and, with ``c_source``, C sources).
    Idempotent; later calls update options."""
    global _replaced
    if c_source is not None:
        config.options.c_source = bool(c_source)
    if isolate is not None:
        config.options.isolate = bool(isolate)
    if prefer_bitcode is not None:
        config.options.prefer_bitcode = bool(prefer_bitcode)
    if opt_level is not None:
        if opt_level not in (0, 1, 2, 3):
            raise ValueError(f"opt_level must be 0, 1, 2 or 3, not {opt_level!r}")
        config.options.opt_level = opt_level
    hook = FileFinder.path_hook(*_loader_details(config.options.prefer_bitcode, config.options.c_source))
    hook._jitload = True  # type: ignore[attr-defined]
    for i, existing in enumerate(sys.path_hooks):
        if _is_file_finder_hook(existing):
            if not getattr(existing, "_jitload", False):
                _replaced = existing
            sys.path_hooks[i] = hook
            break
    else:
        sys.path_hooks.append(hook)
    _invalidate_finders()


def uninstall() -> None:
    """Restore the interpreter's own FileFinder hook. Modules already imported stay usable."""
    global _replaced
    for i, existing in enumerate(sys.path_hooks):
        if getattr(existing, "_jitload", False):
            if _replaced is not None:
                sys.path_hooks[i] = _replaced
            else:
                del sys.path_hooks[i]
            break
    _replaced = None
    _invalidate_finders()


def is_installed() -> bool:
    return any(getattr(h, "_jitload", False) for h in sys.path_hooks)
