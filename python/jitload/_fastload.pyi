"""Warm imports without LLVM: links a bitcode module's compiled objects from the persistent
cache (no libLLVM loaded), and owns the process-wide symbol scope ``_native`` shares."""

from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, Dict, Optional

__all__ = [
    "_PROCESS_SCOPE",
    "exec_extension",
    "free_with_module",
    "load_cached",
    "loaded_extension_count",
    "stats",
]

def load_cached(
    path: str, fullname: str, init_symbol: str, spec: ModuleSpec, opt_level: int = 2
) -> Optional[ModuleType]:
    """Link the cached compiled form of the bitcode module at ``path`` and run its init
    (as ``_native.load_extension`` does), or return None when the cache cannot serve it
    (not cached, cache off, a symbol only the engine can provide): the engine must then.

    Raises InitError / InitSystemError when the module's init fails."""

def exec_extension(module: ModuleType) -> None:
    """Run a PEP 489 module's exec slots (no-op for single-phase modules)."""

def free_with_module(module: ModuleType, allowed: bool) -> bool:
    """With ``allowed``, free a loaded module's code right after the module object is
    destroyed (hooks its m_free). Call once per module ``load_cached`` returned."""

def loaded_extension_count() -> int:
    """How many extension modules' code this module holds now."""

def stats() -> Dict[str, int]:
    """This process's warm-path counts: ``hits`` (linked without LLVM), ``misses`` (not
    cached, or the cache is off) and ``fallbacks`` (cached, but left to the engine)."""

#: The process symbol scope's C function table, for ``_native`` (a capsule).
_PROCESS_SCOPE: Any
