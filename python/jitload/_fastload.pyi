"""Warm imports without LLVM: links a bitcode module's compiled objects from the persistent
cache (no libLLVM loaded), and owns the process-wide symbol scope ``_native`` shares."""

from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any, Dict, List, Optional, Tuple
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
    "_PROCESS_SCOPE",
    "exec_extension",
    "find_extension",
    "in_main_interpreter",
    "load_cached",
    "loaded_extension_count",
    "option_problems",
    "options",
    "python_abi_records",
    "set_option",
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

def stats() -> Dict[str, int]:
    """This process's warm-path counts: ``hits`` (linked without LLVM), ``misses`` (not
    cached, or the cache is off) and ``fallbacks`` (cached, but left to the engine)."""

#: The process symbol scope's C function table, for ``_native`` (a capsule).
_PROCESS_SCOPE: Any
