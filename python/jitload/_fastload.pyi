"""Warm imports without LLVM: links a bitcode module's compiled objects from the persistent
cache (no libLLVM loaded), and owns the process-wide symbol scope ``_native`` shares."""

from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    "_PROCESS_SCOPE",
    "exec_extension",
    "find_extension",
    "in_main_interpreter",
    "load_cached",
    "loaded_extension_count",
    "python_abi_records",
    "stats",
    "track_extension",
]

def load_cached(
    path: str, fullname: str, init_symbol: str, spec: ModuleSpec, opt_level: int = 2, data: Optional[bytes] = None
) -> Optional[ModuleType]:
    """Link the cached compiled form of the bitcode module at ``path`` (whose contents are
    ``data`` when the caller read them already) and run its init
    (as ``_native.load_extension`` does), or return None when the cache cannot serve it
    (not cached, cache off, a symbol only the engine can provide): the engine must then.

    Raises InitError / InitSystemError when the module's init fails."""

def exec_extension(module: ModuleType) -> None:
    """Run a PEP 489 module's exec slots (no-op for single-phase modules)."""

def find_extension(path: str, fullname: str, key: str, spec: ModuleSpec) -> Optional[ModuleType]:
    """The module ``fullname`` made from code this native module already loaded for the
    file ``path`` whose contents ``key`` identified, as CPython makes a ``.so`` module it
    loaded before: single-phase from the saved dictionary (``m_size == -1``) or by running
    its init again, multi-phase by running its init again (not yet executed). None when the
    file must be loaded."""

def track_extension(module: ModuleType, path: str, fullname: str, key: str, releasable: bool) -> bool:
    """Record that ``module``, just returned by ``load_cached``, runs the code of ``path`` (contents
    ``key``) for :func:`find_extension`; a later load of changed contents replaces it, and with
    ``releasable`` the old code is freed once no module object made from it is left. Returns
    whether ``module`` was one this native module had just loaded."""

def in_main_interpreter() -> bool:
    """Whether the calling thread runs in the main interpreter."""

def loaded_extension_count() -> int:
    """How many extension modules' code this module holds now."""

def python_abi_records(data: bytes) -> List[Tuple[str, str]]:
    """The (tag, version) records of the Python ABI in a module's bytes (see jitload.abi)."""

def stats() -> Dict[str, int]:
    """This process's warm-path counts: ``hits`` (linked without LLVM), ``misses`` (not
    cached, or the cache is off) and ``fallbacks`` (cached, but left to the engine)."""

#: The process symbol scope's C function table, for ``_native`` (a capsule).
_PROCESS_SCOPE: Any
