"""Type stubs for the private native module ``jitload._native`` (PyO3, abi3)."""

from importlib.machinery import ModuleSpec

from os import PathLike
from types import ModuleType
from typing import final, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union
from ._pyinit import (
    error_classes as error_classes,
    exec_extension as exec_extension,
    find_extension as find_extension,
    in_main_interpreter as in_main_interpreter,
    loaded_extension_count as loaded_extension_count,
    option_problems as option_problems,
    options as options,
    python_abi_records as python_abi_records,
    set_option as set_option,
    track_extension as track_extension,
)

__all__ = [
    "error_classes",
    "CallGuard",
    "CallTicket",
    "Library",
    "Session",
    "abandoned_compiles",
    "cache_clear",
    "cache_info",
    "cache_prune",
    "cache_stats",
    "dependent_libraries",
    "embed_variants",
    "exec_extension",
    "find_extension",
    "in_main_interpreter",
    "host_target",
    "inspect",
    "library_dirs",
    "link_bitcode",
    "llvm_version",
    "load_extension",
    "prepare_tiers_for_exit",
    "tier_info",
    "wait_for_tiers",
    "load_library",
    "loaded_extension_count",
    "option_problems",
    "options",
    "python_abi_records",
    "set_option",
    "take_call_error",
    "track_extension",
    "user_libraries",
    "write_unraisable",
]

_Path = Union[str, "PathLike[str]"]

def load_extension(
    path: _Path,
    fullname: str,
    init_symbol: str,
    spec: ModuleSpec,
    opt_level: int = 2,
    isolate: bool = True,
    use_cache: bool = True,
    tiered: bool = False,
) -> ModuleType:
    """Compile, link and initialise an extension module from bitcode/IR.

    With ``tiered`` (and nothing cached) functions are compiled at -O0 when first called and
    the whole module at ``opt_level`` in the background (see :func:`wait_for_tiers`).

    With ``isolate`` the module is parsed and compiled in a forked child process, so that no
    input can crash or exhaust this interpreter; the object code comes back through a pipe.

    Raises:
        BitcodeError, LinkError, CompileError, InitError, InitSystemError (all ImportError).
    """

def load_library(spec: str) -> str:
    """Open a shared library for symbol resolution; returns its path. Raises LibraryError."""

def user_libraries() -> List[str]:
    """Paths of libraries added with load_library."""

def link_bitcode(inputs: Sequence[_Path], output: _Path, libraries: Sequence[str] = ..., python_abi: Optional[str] = None) -> None:
    """Link bitcode/IR files into one bitcode module, recording dependent libraries and
    ``python_abi`` (:func:`jitload.abi.record_for`) as named metadata ``jitload.python``."""

def embed_variants(base: _Path, variants: Sequence[Tuple[str, _Path]]) -> None:
    """Store each (x86-64 level, bitcode file) of ``variants`` in the bitcode module ``base``
    as named metadata ``jitload.variants`` (see :mod:`jitload._variants`)."""

def dependent_libraries(path: _Path) -> List[str]:
    """The !llvm.dependent-libraries entries of a bitcode/IR file."""

def inspect(path: _Path, opt_level: int = 2) -> Tuple[str, str]:
    """(optimised IR, native assembly) for a bitcode/IR file."""

def host_target() -> Dict[str, str]:
    """{'triple', 'cpu', 'features', 'tune', 'withheld'} of the host."""

def llvm_version() -> str:
    """The LLVM version in use."""

def library_dirs() -> List[str]:
    """Directories searched for shared libraries given by bare name (after LD_LIBRARY_PATH)."""

@final
class Session:
    """A JIT session (ORC ExecutionSession)."""

    def __init__(self) -> None: ...
    @staticmethod
    def default_session() -> Session:
        """The process-wide session."""
    def create_library(self, name: str, opt_level: int = 2, lazy: bool = False, isolate: bool = True) -> Library:
        """Create a library (JITDylib)."""
    def inspect(self, data: bytes, name: str, opt_level: int = 2) -> Tuple[str, str]:
        """(optimised IR, assembly) for IR text or bitcode."""

@final
class Library:
    """A library of JIT'd code."""

    @property
    def name(self) -> str: ...
    @property
    def opt_level(self) -> int: ...
    @property
    def lazy(self) -> bool: ...
    @property
    def isolate(self) -> bool: ...
    def link(self, other: Library) -> None: ...
    def add_ir(self, data: Union[str, bytes], name: str, replace: bool = False, isolate: Optional[bool] = None) -> int: ...
    def add_object(self, data: bytes, name: str) -> int: ...
    def define_address(self, name: str, address: int, keepalive: object, replace: bool = False) -> int: ...
    def define_lazy(self, name: str, generator: Callable[[str], Union[str, bytes]], replace: bool = False) -> None: ...
    def address(self, name: str) -> int: ...
    def is_stub(self, name: str) -> bool: ...
    def jump_slot(self, name: str) -> Optional[int]: ...
    def owner(self, name: str) -> Optional[int]: ...
    def symbols(self) -> List[str]: ...
    def modules(self) -> List[Tuple[int, str]]: ...
    def module_symbols(self, id: int) -> Optional[List[str]]: ...
    def has_module(self, id: int) -> bool: ...
    def remove_module(self, id: int) -> None: ...
    def remove(self) -> None: ...
    def enter(self) -> CallTicket: ...
    def call_guard(self, name: str) -> Tuple[int, int, int, CallGuard]: ...

@final
class CallGuard:
    """Keeps a fast wrapper's call guard context alive."""

@final
class CallTicket:
    """Held for the length of one native call."""

    def close(self) -> None: ...

def take_call_error() -> Optional[BaseException]:
    """The error of the last failed stub call on this thread, as an exception to raise."""

def write_unraisable(exc: BaseException, obj: Optional[Any]) -> None:
    """Report an exception through sys.unraisablehook."""

def abandoned_compiles() -> int:
    """Engine-API compiles whose wait Ctrl-C or the time limit ended and that are still
    running (each finishes in the background; its result is dropped)."""

def cache_info() -> Optional[Dict[str, Any]]:
    """{'dir', 'entries', 'bytes', 'max_bytes'} of the object cache, or None when it is off."""

def cache_clear() -> Optional[int]:
    """Remove every cache entry; the count, or None when the cache is off."""

def cache_prune(max_bytes: int) -> Optional[Dict[str, int]]:
    """Evict least recently used entries down to max_bytes."""

def cache_stats() -> Dict[str, int]:
    """This process's cache hits, misses, stores and failed stores."""


def wait_for_tiers(path: Optional[str] = None, timeout: Optional[float] = None) -> bool:
    """Wait until the module loaded from ``path`` (every tiered module without one) reached
    its final tier or gave up on it; False if ``timeout`` seconds passed first."""
    ...

def tier_info(path: str) -> Optional[Dict[str, Any]]:
    """``{"state": ..., "functions": {name: tier}}`` of the module loaded from ``path`` in
    tiers (tier 0: not compiled yet, 1: -O0, 2: final), or None."""
    ...

def prepare_tiers_for_exit() -> None:
    """Compile, while it is safe, what modules loaded in tiers may run at exit."""
    ...
