"""The JIT engine API: sessions, libraries, adding and removing code, calling it.

>>> import jitload
>>> lib = jitload.Session.default().library("demo")
>>> m = lib.add_ir('''
... define i64 @add(i64 %a, i64 %b) {
...   %s = add i64 %a, %b
...   ret i64 %s
... }''')
>>> add = lib.function("add", "int64(int64, int64)")
>>> add(2, 3)
5
>>> _ = lib.add_ir('define i64 @add(i64 %a, i64 %b) {\\n %s = sub i64 %a, %b\\n ret i64 %s\\n}',
...                replace=True)
>>> add(2, 3)
-1
>>> m.removed
True

See docs/engine.md for the guide (with llvmlite equivalents).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar, Union

from . import _native
from .errors import RemovedError
from .signature import Signature, parse

__all__ = ["Function", "Library", "Module", "Session"]

Code = Union[str, bytes]
PathLike = Union[str, "os.PathLike[str]"]
_C = TypeVar("_C")


class Session:
    """A JIT session (an ORC ExecutionSession) holding libraries.

    ``Session.default()`` is the process-wide session that imports use; ``Session()`` makes
    an independent one.
    """

    _default: Optional["Session"] = None
    _default_lock = threading.Lock()

    def __init__(self, _native_session: Optional[_native.Session] = None) -> None:
        self._native = _native_session if _native_session is not None else _native.Session()

    @classmethod
    def default(cls) -> "Session":
        """The process-wide session (created on first use)."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls(_native.Session.default_session())
            return cls._default

    def library(self, name: str, *, opt_level: int = 2, lazy: bool = False, link: Iterable["Library"] = (),
                isolate: bool = True) -> "Library":
        """Create a library. ``lazy=True`` compiles each function on its first call;
        ``link`` lists libraries whose symbols this one may use (searched in order, before
        the process). ``isolate=True`` (the default) parses, checks and compiles added IR and
        bitcode in a compiler process with the import path's memory, time and CPU limits, as
        untrusted input deserves; ``isolate=False`` compiles in-process, for trusted IR built
        in memory (no fork, but nothing bounds LLVM's memory, and a compile that runs too long
        can only be abandoned, not stopped). Each ``add_*`` call may choose otherwise."""
        lib = Library(self, self._native.create_library(name, opt_level, lazy, isolate))
        for other in link:
            lib.link(other)
        return lib

    def inspect(self, code: Code, *, name: str = "<ir>", opt_level: int = 2) -> Tuple[str, str]:
        """(optimised IR, assembly) for IR text or bitcode, compiled as a library would."""
        data = code.encode() if isinstance(code, str) else bytes(code)
        return self._native.inspect(data, name, opt_level)


class Module:
    """One unit of code added to a library. ``remove()`` frees it."""

    def __init__(self, library: "Library", module_id: int, name: str) -> None:
        self.library = library
        self.id = module_id
        self.name = name

    def __repr__(self) -> str:
        state = "removed" if self.removed else "live"
        return f"<jitload.Module {self.name!r} #{self.id} in {self.library.name!r} ({state})>"

    @property
    def removed(self) -> bool:
        """True once removed, or once every function in it was replaced."""
        return not self.library._native.has_module(self.id)

    @property
    def symbols(self) -> List[str]:
        """Names this module defines (functions first)."""
        found = self.library._native.module_symbols(self.id)
        if found is None:
            raise RemovedError(f"module {self.name!r} was removed from library {self.library.name!r}")
        return [s for s in found if not s.startswith("__jitload_")]

    def remove(self) -> None:
        """Remove the module: its names stop resolving; its memory is freed as soon as no
        call into the library is running. Raises RemovedError if already removed."""
        self.library._native.remove_module(self.id)
        self.library._sources.pop(self.id, None)

    def ir(self) -> str:
        """The optimised IR of this module (IR and bitcode modules only)."""
        return self.library._inspect_module(self.id)[0]

    def asm(self) -> str:
        """The native assembly of this module (IR and bitcode modules only)."""
        return self.library._inspect_module(self.id)[1]


class Library:
    """A library of JIT'd code (an ORC JITDylib). Thread-safe; compiles without the GIL."""

    def __init__(self, session: Session, native: _native.Library) -> None:
        self.session = session
        self._native = native
        self._sources: Dict[int, Tuple[bytes, str]] = {}
        self._generated: Dict[str, Tuple[bytes, str]] = {}
        self._links: List[Library] = []

    def __repr__(self) -> str:
        kind = "lazy" if self.lazy else "eager"
        return f"<jitload.Library {self.name!r} O{self.opt_level} {kind}>"

    @property
    def name(self) -> str:
        return self._native.name

    @property
    def opt_level(self) -> int:
        return self._native.opt_level

    @property
    def lazy(self) -> bool:
        return self._native.lazy

    @property
    def isolate(self) -> bool:
        """Whether added IR and bitcode compile in a compiler process unless a call says otherwise."""
        return self._native.isolate

    def link(self, other: "Library") -> None:
        """Let this library use ``other``'s symbols (after its own)."""
        self._native.link(other._native)
        self._links.append(other)

    # -- adding code -------------------------------------------------------------------

    def add_ir(self, code: Code, *, name: Optional[str] = None, replace: bool = False,
               isolate: Optional[bool] = None) -> Module:
        """Add LLVM IR text (``str``) or bitcode (``bytes``). With ``replace=True``, functions
        the library already has are redirected to the new bodies, for every caller that
        reaches them through the library. ``isolate`` overrides the library's choice of
        compiling in a compiler process (see :meth:`Session.library`)."""
        data = code.encode() if isinstance(code, str) else bytes(code)
        label = name or ("<ir>" if isinstance(code, str) else "<bitcode>")
        module_id = self._native.add_ir(data, label, replace, isolate)
        self._sources[module_id] = (data, label)
        return Module(self, module_id, label)

    def add_bitcode(self, data_or_path: Union[bytes, PathLike], *, name: Optional[str] = None, replace: bool = False,
                    isolate: Optional[bool] = None) -> Module:
        """Add bitcode given as bytes or as a file path (``.bc``, or ``.ll`` text)."""
        if isinstance(data_or_path, (bytes, bytearray, memoryview)):
            return self.add_ir(bytes(data_or_path), name=name or "<bitcode>", replace=replace, isolate=isolate)
        path = os.fspath(data_or_path)
        with open(path, "rb") as f:
            data = f.read()
        return self.add_ir(data, name=name or path, replace=replace, isolate=isolate)

    def add_object(self, data_or_path: Union[bytes, PathLike], *, name: Optional[str] = None) -> Module:
        """Add a relocatable object file (bytes or path). Its symbols are defined as they
        are: object-file functions cannot be replaced."""
        if isinstance(data_or_path, (bytes, bytearray, memoryview)):
            data, label = bytes(data_or_path), name or "<object>"
        else:
            path = os.fspath(data_or_path)
            with open(path, "rb") as f:
                data = f.read()
            label = name or path
        return Module(self, self._native.add_object(data, label), label)

    def add_c(
        self,
        source: Union[str, PathLike],
        *,
        flags: Sequence[str] = (),
        name: Optional[str] = None,
        replace: bool = False,
        isolate: Optional[bool] = None,
    ) -> Module:
        """Compile C with clang 22 (cached by content, see :mod:`jitload.csource`) and add
        it. ``source`` is a path to a ``.c`` file or C source text."""
        from . import csource

        is_path = not isinstance(source, str) or ("\n" not in source and source.endswith(".c") and os.path.exists(source))
        if is_path:
            bitcode = csource.compile_file(source, flags, opt_level=self.opt_level, include_python=True)
            label = name or os.fspath(source)
        else:
            label = name or "<c source>"
            bitcode = csource.compile_source(str(source), flags, name=label if label.endswith(".c") else "source.c",
                                             opt_level=self.opt_level)
        return self.add_ir(bitcode, name=label, replace=replace, isolate=isolate)

    def define_python(
        self,
        name: str,
        func: Callable[..., Any],
        signature: Union[str, Signature],
        *,
        error_value: Any = 0,
        replace: bool = False,
    ) -> Module:
        """Expose a Python callable to native code as the C function ``name``.

        When ``func`` raises, native code gets ``error_value``; the exception is re-raised by
        the :class:`Function` call that led to the callback, or reported through
        :func:`sys.unraisablehook` when the callback came from elsewhere."""
        sig = parse(signature) if isinstance(signature, str) else signature
        thunk: Any
        if _fast_available():
            from . import fast

            thunk = fast.callback(func, sig, error_value=None if sig.result == "void" else error_value, name=name)
            address = thunk.address
        else:
            thunk = _make_callback(func, sig, error_value)
            address = ctypes.cast(thunk, ctypes.c_void_p).value or 0
        module_id = self._native.define_address(name, address, thunk, replace)
        return Module(self, module_id, f"<python {getattr(func, '__qualname__', func)!s}>")

    def define_lazy(self, name: str, generator: Callable[[str], Code], *, replace: bool = False) -> None:
        """Make ``name`` a function whose code is produced on its first call, by native code
        or through :meth:`function`: ``generator(name)`` returns IR text (``str``), bitcode or
        an object file (``bytes``) defining ``name``. Works from any thread; the GIL is held
        only while the generator runs."""
        def generate(symbol: str) -> Code:
            code = generator(symbol)
            if isinstance(code, (str, bytes)):
                data = code.encode() if isinstance(code, str) else code
                self._generated[symbol] = (data, f"<code generated for {symbol}>")
            return code

        self._native.define_lazy(name, generate, replace)

    # -- looking up and calling ---------------------------------------------------------

    def address(self, name: str) -> int:
        """The address of ``name``: for a function, its stable entry point (replace and lazy
        compilation redirect it); for a variable, its storage (for a ``thread_local`` one, the
        calling thread's copy). Raises SymbolNotFoundError
        (with close matches) or RemovedError."""
        return self._native.address(name)

    def function(self, name: str, signature: Union[str, Signature], *, release_gil: bool = False) -> Callable[..., Any]:
        """A Python callable for the function ``name`` with the C signature given, e.g.
        ``"int64(int64, int64)"`` (see :mod:`jitload.signature`).

        Where :mod:`jitload.fast` is available (x86-64 Linux) this is a copy-and-patch
        wrapper as fast as a C extension function (``jitload.fast.info(f)`` describes it); it
        holds the GIL during the call like one, unless ``release_gil=True`` (for code that
        runs long or waits for other Python threads). Elsewhere it is a :class:`Function`
        (through ctypes). Either way a call keeps the code it runs alive until it returns,
        reaches replaced code through the library, and raises RemovedError after removal."""
        sig = parse(signature) if isinstance(signature, str) else signature
        if _fast_available():
            from . import fast

            address = self.address(name)
            jump_slot = self._native.jump_slot(name)
            if jump_slot is not None:
                # Reached through a stable entry point, which raises RemovedError itself: the
                # engine's epoch guard, inline in the wrapper, is all a call needs. The wrapper
                # jumps through the entry point's word itself (one jump fewer a call).
                return fast.wrap(address, sig, name=name, owner=self, release_gil=release_gil, guard="epoch", jump_slot=jump_slot)
            # An object-file function, called directly: its module is checked on every call.
            enter, exit_, ctx, guard = self._native.call_guard(name)
            return fast.wrap(address, sig, name=name, owner=(self, guard), release_gil=release_gil, guard=(enter, exit_, ctx))
        return Function(self, name, sig)

    def variable(self, name: str, ctype: Type[_C]) -> _C:
        """The global variable ``name`` as a ctypes object of type ``ctype`` (e.g.
        ``ctypes.c_int64`` or an array type); it keeps the library alive. A ``thread_local``
        variable gives the calling thread's copy: ask again from each thread."""
        address = self.address(name)
        holder = _keepalive_subclass(ctype)
        value = holder.from_address(address)
        value._jitload_library = self
        return value  # type: ignore[no-any-return]

    def symbols(self) -> List[str]:
        """Every name the library defines now, sorted."""
        return [s for s in self._native.symbols() if not s.startswith("__jitload_")]

    @property
    def modules(self) -> List[Module]:
        """The library's modules, oldest first."""
        return [Module(self, i, n) for i, n in self._native.modules()]

    def module_of(self, name: str) -> Optional[Module]:
        """The module that currently defines ``name``."""
        owner = self._native.owner(name)
        for i, n in self._native.modules():
            if i == owner:
                return Module(self, i, n)
        return None

    def remove(self) -> None:
        """Remove every module and the library; later use raises RemovedError."""
        self._native.remove()
        self._sources.clear()

    # -- inspection --------------------------------------------------------------------

    def _inspect_module(self, module_id: int) -> Tuple[str, str]:
        source = self._sources.get(module_id)
        if source is None:
            raise RemovedError(f"module #{module_id} of library {self.name!r} has no IR to show (removed, or an object/Python symbol)")
        return self.session.inspect(source[0], name=source[1], opt_level=self.opt_level)

    def ir(self, symbol: Optional[str] = None) -> str:
        """The optimised IR of the module defining ``symbol`` (just that function's
        definition when given), or of every module."""
        return self._inspect(symbol, 0)

    def asm(self, symbol: Optional[str] = None) -> str:
        """The native assembly of ``symbol``'s function (or of every module)."""
        return self._inspect(symbol, 1)

    def _inspect(self, symbol: Optional[str], which: int) -> str:
        if symbol is None:
            return "\n".join(self._inspect_module(i)[which] for i in list(self._sources))
        module = self.module_of(symbol)
        if module is None:
            self.address(symbol)  # raises the precise error
            raise RemovedError(f"{symbol!r} in library {self.name!r} has no module to inspect")
        generated = self._generated.get(symbol)
        if module.id not in self._sources and generated is not None:
            text = self.session.inspect(generated[0], name=generated[1], opt_level=self.opt_level)[which]
        else:
            text = self._inspect_module(module.id)[which]
        return _extract_ir_function(text, symbol) if which == 0 else _extract_asm_function(text, symbol)


class Function:
    """A callable for a JIT'd function. Calls go through the library's entry point, so they
    see replacements; the code a call runs stays alive until the call returns."""

    def __init__(self, library: Library, name: str, signature: Signature) -> None:
        self.library = library
        self.name = name
        self.signature = signature
        self.address = library.address(name)
        self._cfunc = signature.ctypes_prototype()(self.address)
        self._ranges = [signature.int_range(a) for a in signature.args]
        # Object-file functions are not behind an entry point: check their module per call.
        self._direct_module = None if _behind_stub(library, name) else library._native.owner(name)

    def __repr__(self) -> str:
        return f"<jitload.Function {self.name}: {self.signature} at {self.address:#x}>"

    def __call__(self, *args: Any) -> Any:
        sig = self.signature
        if len(args) != len(sig.args):
            raise TypeError(f"{self.name}() takes {len(sig.args)} argument{'s' if len(sig.args) != 1 else ''} ({sig}), {len(args)} given")
        converted = [_convert(a, t, r, i, self.name) for i, (a, t, r) in enumerate(zip(args, sig.args, self._ranges))]
        native = self.library._native
        ticket = native.enter()
        _depth.value = getattr(_depth, "value", 0) + 1
        try:
            if self._direct_module is not None and not native.has_module(self._direct_module):
                raise RemovedError(f"{self.name!r} was removed from library {self.library.name!r}")
            result = self._cfunc(*converted)
        finally:
            _depth.value -= 1
            ticket.close()
        error = _native.take_call_error()
        pending = _take_pending()
        if pending is not None:
            raise pending
        if error is not None:
            raise error
        return result


# -- helpers ---------------------------------------------------------------------------

_fast_state: List[bool] = []


def _fast_available() -> bool:
    """Whether calls and callbacks use :mod:`jitload.fast` (checked once). Both switch
    together: a fast callback re-raises its exception only through a fast wrapper.
    ``JITLOAD_FAST=0`` keeps the ctypes path."""
    if not _fast_state:
        from . import config

        use = config.options.fast_wrappers
        if use:
            from . import fast

            use = fast.available()
        _fast_state.append(use)
    return _fast_state[0]

_depth = threading.local()
_pending = threading.local()


def _take_pending() -> Optional[BaseException]:
    exc: Optional[BaseException] = getattr(_pending, "exc", None)
    _pending.exc = None
    return exc


def _behind_stub(library: Library, name: str) -> bool:
    return library._native.is_stub(name)


def _convert(value: Any, type_name: str, limits: Optional[Tuple[int, int]], index: int, fname: str) -> Any:
    if limits is not None:
        if isinstance(value, bool) or not isinstance(value, int):
            if not hasattr(value, "__index__"):
                raise TypeError(f"{fname}() argument {index + 1} must be int ({type_name}), not {type(value).__name__}")
            value = value.__index__()
        if not limits[0] <= value <= limits[1]:
            raise OverflowError(f"{fname}() argument {index + 1}: {value} does not fit in {type_name}")
        return value
    if type_name in ("float", "double"):
        if not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise TypeError(f"{fname}() argument {index + 1} must be float ({type_name}), not {type(value).__name__}")
        return float(value)
    if type_name == "buffer":
        return _buffer_address(value, index, fname)
    if type_name == "ptr":
        if value is None or isinstance(value, int):
            return value
        if isinstance(value, (ctypes._Pointer, ctypes.Array)):
            return ctypes.cast(value, ctypes.c_void_p)
        return _buffer_address(value, index, fname)
    return value


def _buffer_address(value: Any, index: int, fname: str) -> Any:
    if isinstance(value, bytes):
        return ctypes.c_char_p(value)
    try:
        view = memoryview(value)
    except TypeError:
        raise TypeError(f"{fname}() argument {index + 1} must support the buffer protocol, not {type(value).__name__}") from None
    if view.readonly:
        return ctypes.c_char_p(view.tobytes())
    return (ctypes.c_char * view.nbytes).from_buffer(view)


_keepalive_types: Dict[Any, Any] = {}


def _keepalive_subclass(ctype: Any) -> Any:
    """A subclass of ``ctype`` whose instances can hold a reference to their library."""
    sub = _keepalive_types.get(ctype)
    if sub is None:
        sub = type(f"jitload_{getattr(ctype, '__name__', 'value')}", (ctype,), {"__slots__": ("_jitload_library",)})
        _keepalive_types[ctype] = sub
    return sub


def _make_callback(func: Callable[..., Any], sig: Signature, error_value: Any) -> Any:
    prototype = sig.ctypes_prototype()
    if sig.result == "void":
        error_value = None

    def thunk(*args: Any) -> Any:
        try:
            return func(*args)
        except BaseException as exc:  # noqa: BLE001 - reported, never swallowed
            if getattr(_depth, "value", 0) > 0:
                if getattr(_pending, "exc", None) is None:
                    _pending.exc = exc
            else:
                _native.write_unraisable(exc, func)
            return error_value

    return prototype(thunk)


def _extract_ir_function(ir: str, symbol: str) -> str:
    lines = ir.splitlines()
    out: List[str] = []
    inside = False
    for line in lines:
        if line.startswith("define ") and (f"@{symbol}(" in line or f'@"{symbol}"(' in line):
            inside = True
        if inside:
            out.append(line)
            if line == "}":
                break
    return "\n".join(out) if out else ir


def _extract_asm_function(asm: str, symbol: str) -> str:
    lines = asm.splitlines()
    out: List[str] = []
    inside = False
    for line in lines:
        if line.startswith(f"{symbol}:"):
            inside = True
        if inside:
            out.append(line)
            if line.strip().startswith(".size") and symbol in line or line.strip() == f".Lfunc_end_{symbol}:":
                break
            if line.strip().startswith(".Lfunc_end"):
                break
    return "\n".join(out) if out else asm

