"""The import hook: a FileFinder that also knows bitcode suffixes, and the loader that
JIT-compiles what it finds.

Pure Python and cheap to import: LLVM (``jitload._native``) is loaded only when a bitcode
module is actually imported.
"""

from __future__ import annotations

import os
import sys

import _jitload_hook as _hook

from . import config

# Imported by the first bitcode import of a process (the start-up hook is `_jitload_hook`),
# so it imports nothing that is not loaded already: `typing` alone would cost ~12 ms, `importlib.machinery` ~0.6 ms (it pulls in
# `warnings`) and `types` ~0.3 ms. The machinery classes are the same objects, taken from the
# frozen bootstrap modules every interpreter has loaded before site runs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from importlib.machinery import ExtensionFileLoader, ModuleSpec
    from types import ModuleType
    from typing import Any, Dict, List, Optional, Tuple
else:
    from _frozen_importlib import ModuleSpec
    from _frozen_importlib_external import ExtensionFileLoader

    ModuleType = type(sys)


#: Suffixes the hook looks for, most specific first: the interpreter's own extension
#: suffixes with ``.so`` turned into ``.bc``, then ``.abi3.bc``, ``.bc`` and textual ``.ll``.
BITCODE_SUFFIXES: List[str] = _hook.BITCODE_SUFFIXES


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
        import importlib.util  # noqa: F401

        from ._llvm import native_path

        lib = ctypes.PyDLL(native_path())
        self._load = lib.jitload_subinterpreter_load
        self._load.restype = ctypes.py_object
        self._load.argtypes = [ctypes.py_object] * 4 + [ctypes.c_int] * 3
        self._exec = lib.jitload_subinterpreter_exec
        self._exec.restype = ctypes.c_int
        self._exec.argtypes = [ctypes.py_object]
        # Each native module keeps the code it loaded: ask both (the LLVM-free one may have
        # served the main interpreter's import from the cache).
        self._registries = [lib]
        fast = importlib.util.find_spec("jitload._fastload")
        if fast is not None and fast.origin is not None:
            self._registries.append(ctypes.PyDLL(fast.origin))
        for registry in self._registries:
            registry.jitload_find_extension.restype = ctypes.py_object
            registry.jitload_find_extension.argtypes = [ctypes.py_object] * 4
            registry.jitload_track_extension.restype = ctypes.c_int
            registry.jitload_track_extension.argtypes = [ctypes.py_object] * 4 + [ctypes.c_int]

    def load_extension(
        self,
        path: str,
        fullname: str,
        init_symbol: str,
        spec: ModuleSpec,
        opt_level: int = 2,
        isolate: bool = True,
        use_cache: bool = True,
        tiered: bool = False,
    ) -> ModuleType:
        # Subinterpreters load eagerly: a failed first-tier call raises through the main
        # interpreter's error hook, which cannot reach another interpreter's thread state.
        module: ModuleType = self._load(path, fullname, init_symbol, spec, opt_level, int(isolate), int(use_cache))
        return module

    def exec_extension(self, module: ModuleType) -> None:
        self._exec(module)

    def find_extension(self, path: str, fullname: str, key: str, spec: ModuleSpec) -> Optional[ModuleType]:
        for registry in self._registries:
            module: Optional[ModuleType] = registry.jitload_find_extension(path, fullname, key, spec)
            if module is not None:
                return module
        return None

    def in_main_interpreter(self) -> bool:
        return False  # only used where PyO3 refused to load the native module: a subinterpreter

    def track_extension(self, module: ModuleType, path: str, fullname: str, key: str, releasable: bool) -> bool:
        return any(r.jitload_track_extension(module, path, fullname, key, int(releasable)) for r in self._registries)


def _native() -> Any:
    """``jitload._native``, or its C entry points where PyO3 cannot load (subinterpreters)."""
    global _native_module
    if _native_module is None:
        native: Any
        try:
            from . import _native as native
        except ImportError as error:
            from .errors import LLVMLibraryError

            if isinstance(error, LLVMLibraryError):
                raise  # no libLLVM: the ctypes entry points need it too
            try:
                native = _SubinterpreterNative()
            except ImportError as e:
                # CPython 3.12's _ctypes does not load in an isolated subinterpreter (own GIL).
                raise ImportError(f"jitload cannot load bitcode modules in this interpreter: it needs ctypes here ({e})") from e
        _native_module = native
    return _native_module


_native_module: Any = None
_fastload_module: Any = None


def _fastload() -> Any:
    """``jitload._fastload`` (warm imports from the object cache without LLVM), or None where
    it cannot load (not built, a subinterpreter)."""
    global _fastload_module
    if _fastload_module is None:
        fast: Any = False
        config.warn_problems()
        if config.options.fastload:
            try:
                from . import _fastload as fast
            except ImportError:
                pass
            else:
                config.apply_overrides(fast)
        _fastload_module = fast
    return _fastload_module or None


def _runtime() -> Any:
    """A native module for what both do alike (running exec slots): the LLVM-free one if it
    loads, so that a warm import never loads LLVM."""
    return _fastload() or _native()


def find_loaded(path: str, spec: ModuleSpec, key: str) -> Optional[Tuple[ModuleType, Any]]:
    """The module ``spec.name`` made from code already loaded for ``path`` while the file is
    unchanged (``key``), as CPython makes a ``.so`` module it has loaded before (after ``del
    sys.modules[name]``, or in another interpreter): a single-phase module from its saved
    dictionary or by running its init again, a multi-phase one by running its init again.
    None when nothing loaded serves it. Asks only the native modules already loaded."""
    fast = _fastload()
    native = _native_module or sys.modules.get("jitload._native")
    if native is not None and "find_extension" not in getattr(native, "__dict__", {}):
        # jitload._native's Python stand-in, still loading the extension in another thread:
        # no code can have been loaded with it yet (and asking it would wait for that import
        # while this thread holds another module's import lock).
        native = None
    if native is None and not (fast.in_main_interpreter() if fast else not _in_subinterpreter()):
        native = _native()  # another interpreter of this process may have loaded code with it
    owners = [o for o in (fast, native) if o]
    for owner in owners:
        module = owner.find_extension(path, spec.name, key, spec)
        if module is not None:
            return module, owner
    return None


def _in_subinterpreter() -> bool:
    """Whether this is not the main interpreter (asked only where ``_fastload`` is off)."""
    for name in ("_interpreters", "_xxsubinterpreters"):  # 3.13 / 3.10-3.12
        try:
            interpreters = __import__(name)
        except ImportError:
            continue
        return _interpreter_id(interpreters.get_current()) != _interpreter_id(interpreters.get_main())
    return False


def _interpreter_id(ident: Any) -> int:
    return int(ident[0] if isinstance(ident, tuple) else ident)  # 3.13: (id, whence)


def load_extension(path: str, spec: ModuleSpec, check_abi: bool = True) -> Tuple[ModuleType, Any]:
    """Loads the extension module ``spec.name`` from bitcode/IR ``path`` with the current
    options: from the object cache without loading LLVM when it can, else through the
    engine (which compiles, or links a cached object ORC's way). Returns the module and the
    native module that holds its code. ``check_abi``: refuse a module built for another
    Python (:mod:`jitload.abi`; off for C sources this interpreter just compiled)."""
    options = config.options
    symbol = init_symbol(spec.name)
    data: Optional[bytes] = None
    if check_abi:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            pass  # the loader reports it
        else:
            from . import abi

            abi.check(path, abi.read_records(data, _runtime()), spec.name)
    fast = _fastload() if options.cache else None
    if fast is not None:
        module = fast.load_cached(path, spec.name, symbol, spec, opt_level=options.opt_level, data=data)
        if module is not None:
            return module, fast
    native = _native()
    module = native.load_extension(
        path,
        spec.name,
        symbol,
        spec,
        opt_level=options.opt_level,
        isolate=options.isolate,
        use_cache=options.cache,
        tiered=options.tiered,
    )
    if options.tiered:
        _prepare_tiers_for_exit(native)
    return module, native


_exit_hook_registered = False


def _prepare_tiers_for_exit(native: Any) -> None:
    """Once a module may have been loaded in tiers: before the interpreter finalises, compile
    what such modules may still run at exit (destructors, atexit handlers), while that is
    safe (Python's atexit handlers run before finalisation; C ``atexit`` handlers and static
    destructors after it, when a first-tier compile could no longer run)."""
    global _exit_hook_registered
    if not _exit_hook_registered and hasattr(native, "prepare_tiers_for_exit"):
        import atexit

        atexit.register(native.prepare_tiers_for_exit)
        _exit_hook_registered = True


class BitcodeExtensionLoader(ExtensionFileLoader):
    """Loads an extension module from LLVM bitcode or IR by JIT-compiling it in-process.

    It is an :class:`~importlib.machinery.ExtensionFileLoader`, so tools that ask "is this a
    native extension?" get the right answer; only creating and executing the module differ.

    Hot reload: ``importlib.reload(mod)`` after the file changed loads the new code as a new
    module object, which goes into ``sys.modules`` (and onto the parent package) and is what
    ``reload`` returns. The old module object keeps running the old code; once it is
    unreferenced that code is freed (see :func:`_releasable`). Unchanged files are kept, as
    CPython does for ``.so`` modules.
    """

    _pending: Optional[ModuleType] = None
    # The native module holding the pending module's code (frees it with the module).
    _pending_owner: Any = None

    _pending_key: str = ""
    _pending_name: str = ""

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        key = repr(self._content_key(spec.name))
        found = find_loaded(self.path, spec, key)
        module, owner = found if found is not None else self._load(spec)
        self._pending, self._pending_owner, self._pending_key, self._pending_name = module, owner, key, spec.name
        return module

    def _load(self, spec: ModuleSpec) -> Tuple[ModuleType, Any]:
        return load_extension(self.path, spec)

    def _content_key(self, fullname: str) -> object:
        """What identifies the code this loader would load now (changes when the file does)."""
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def exec_module(self, module: ModuleType) -> None:
        if self._pending is module:  # the module create_module just made
            owner, key, self._pending, self._pending_owner = self._pending_owner, self._pending_key, None, None
            owner.exec_extension(module)
            _track(module, self.path, self._pending_name, key, owner)
            return
        # importlib.reload: the module was made earlier (by this file, or another loader).
        key = repr(self._content_key(module.__name__))
        if _keys().get(module, _NO_KEY) == key:
            _runtime().exec_extension(module)
            return
        import importlib.util

        spec = module.__spec__
        if spec is None:
            raise ImportError(f"cannot reload {module!r}: it has no __spec__", path=self.path)
        new = importlib.util.module_from_spec(spec)
        self.exec_module(new)
        sys.modules[spec.name] = new
        parent, _, child = spec.name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, new)

    def is_package(self, fullname: str) -> bool:
        return False


_NO_KEY = object()


class _ModuleKeys:
    """Module -> content key of the code it runs, forgotten when the module dies. Built on
    the builtin ``_weakref`` module: ``weakref.WeakKeyDictionary`` would import ``weakref``,
    ``_weakrefset``, ``types`` and ``itertools`` (about a millisecond) on the first import."""

    def __init__(self) -> None:
        self._entries: Dict[int, Tuple[Any, object]] = {}

    def get(self, module: ModuleType, default: object) -> object:
        entry = self._entries.get(id(module))
        return entry[1] if entry is not None and entry[0]() is module else default

    def __setitem__(self, module: ModuleType, key: object) -> None:
        import _weakref

        ident = id(module)
        entries = self._entries

        def forget(_: object) -> None:
            entry = entries.get(ident)
            if entry is not None and entry[0]() is None:
                del entries[ident]

        entries[ident] = (_weakref.ref(module, forget), key)  # TypeError: no weak references


_module_keys = _ModuleKeys()


def _keys() -> _ModuleKeys:
    return _module_keys


# Values a module's namespace may hold for its code to be freed once the module is gone:
# none of them can point into the module's code or data. Anything else (a type, a capsule,
# an instance of the module's own types, ...) might outlive the module, so such modules are
# kept for the life of the process, as CPython keeps every .so.
_PLAIN_TYPES = ("builtin_function_or_method", "str", "int", "float", "bool", "NoneType", "bytes", "module")
_CONTAINER_TYPES = ("tuple", "list", "dict", "frozenset", "set")


def _is_plain(value: object, depth: int = 0) -> bool:
    kind = type(value)
    if kind.__module__ != "builtins":
        return False
    if kind.__name__ in _PLAIN_TYPES:
        return True
    if kind.__name__ in _CONTAINER_TYPES and depth == 0:
        if isinstance(value, dict):
            return all(_is_plain(k, 1) and _is_plain(v, 1) for k, v in value.items())
        if isinstance(value, (tuple, list, set, frozenset)):
            return all(_is_plain(v, 1) for v in value)
    return False


def _releasable(module: ModuleType) -> bool:
    """Whether the module's code can be freed once the module object is unreferenced."""
    if type(module) is not ModuleType:
        return False
    try:
        return all(_is_plain(v) for k, v in vars(module).items() if k not in ("__spec__", "__loader__"))
    except Exception:
        return False


def _track(module: ModuleType, path: str, fullname: str, key: str, owner: Any) -> None:
    """Remember what code ``module`` runs: for reload (which loads anew only when the file
    changed) and for the native module holding it, which serves later imports of the
    unchanged file from that code and, when safe, frees it once a reload replaced it and
    the module objects made from it are gone."""
    try:
        _keys()[module] = key
    except TypeError:  # a module type without weak references: every reload loads anew
        pass
    owner.track_extension(module, path, fullname, key, _releasable(module))


#: Suffixes of C sources the hook compiles when ``c_source`` is on (after every other kind).
C_SOURCE_SUFFIXES: List[str] = _hook.C_SOURCE_SUFFIXES



class CSourceLoader(BitcodeExtensionLoader):
    """Loads an extension module from a C source file (``foo.c``): clang 22 compiles it to
    bitcode, cached by content (:mod:`jitload.csource`; flags from ``// jitload:`` lines and
    the ``foo.c.flags`` sidecar), which is then loaded like a ``.bc`` file.

    ``importlib.reload`` recompiles (a cache hit when nothing changed) and reloads as for
    bitcode: if the source, a header or the flags changed, a new module runs the new code
    (write ``foo = importlib.reload(foo)``); if nothing changed, the module is kept.
    """

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

    def _content_key(self, fullname: str) -> object:
        compiled = self._compile(fullname)
        self._compiled = compiled  # the _load that follows (create_module) uses it
        return compiled.key

    def _load(self, spec: ModuleSpec) -> Tuple[ModuleType, Any]:
        compiled, self._compiled = self._compiled, None
        if compiled is None:
            compiled = self._compile(spec.name)
        if compiled.path is not None:
            module, owner = self._load_bitcode(spec, compiled.path)
        else:  # the cache is unusable: load from a temporary file
            import tempfile

            with tempfile.TemporaryDirectory(prefix="jitload-csource-") as tmp:
                path = os.path.join(tmp, spec.name.rpartition(".")[2] + ".bc")
                with open(path, "wb") as f:
                    f.write(compiled.bitcode)
                module, owner = self._load_bitcode(spec, path)
        if getattr(module, "__file__", None) != self.path:
            try:
                module.__file__ = self.path  # single-phase init set it to the bitcode file
            except AttributeError:
                pass
        return module, owner

    def _load_bitcode(self, spec: ModuleSpec, bitcode_path: str) -> Tuple[ModuleType, Any]:
        from .errors import JitloadError

        try:
            return load_extension(bitcode_path, spec, check_abi=False)
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


def install(
    prefer_bitcode: Optional[bool] = None,
    opt_level: Optional[int] = None,
    isolate: Optional[bool] = None,
    c_source: Optional[bool] = None,
    cache: Optional[bool] = None,
    tier: Optional[str] = None,
) -> None:
    """Make ``import`` find bitcode extension modules (and, with ``c_source``, C sources).
    Idempotent; later calls update options."""
    if tier is not None:
        if tier not in ("auto", "eager"):
            raise ValueError(f"tier must be 'auto' or 'eager', not {tier!r}")
        config.options.tiered = tier == "auto"
    if cache is not None:
        config.options.cache = bool(cache)
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
    options = config.options
    _hook.put(_hook.loader_details(options.prefer_bitcode, options.c_source, BitcodeExtensionLoader, CSourceLoader))


def uninstall() -> None:
    """Restore the interpreter's own FileFinder hook. Modules already imported stay usable."""
    for i, existing in enumerate(sys.path_hooks):
        if getattr(existing, "_jitload", False):
            if _hook.replaced is not None:
                sys.path_hooks[i] = _hook.replaced
            else:
                del sys.path_hooks[i]
            break
    _hook.replaced = None
    _hook.forget()


def is_installed() -> bool:
    return any(getattr(h, "_jitload", False) for h in sys.path_hooks)
