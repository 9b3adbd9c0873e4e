"""What both native modules (``_native``, the engine, and ``_fastload``, the warm path) export
from the crate ``jitload-pyinit``: running PEP 489 exec slots, the table of code loaded per file
(CPython's ``extensions``), and helpers. Each module answers for the code it loaded itself.
Stubs only: re-exported by ``_native.pyi`` and ``_fastload.pyi``."""

from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Dict, List, Optional, Tuple

def exec_extension(module: ModuleType) -> None:
    """Run a PEP 489 module's exec slots (no-op for single-phase modules and for modules whose
    state exists already). Raises InitError when a slot fails (the exception chained)."""

def find_extension(path: str, fullname: str, key: str, spec: ModuleSpec) -> Optional[ModuleType]:
    """The module ``fullname`` made from code this native module already loaded for the
    file ``path`` whose contents ``key`` identified, as CPython makes a ``.so`` module it
    loaded before: single-phase from the saved dictionary (``m_size == -1``) or by running
    its init again, multi-phase by running its init again (not yet executed). None when the
    file must be loaded."""

def track_extension(module: ModuleType, path: str, fullname: str, key: str, releasable: bool) -> bool:
    """Record that ``module``, just returned by this native module's load, runs the code of
    ``path`` (contents ``key``) for :func:`find_extension`; a later load of changed contents
    replaces it, and with ``releasable`` the old code is freed once no module object made from
    it is left. Returns whether ``module`` was one this native module had just loaded."""

def in_main_interpreter() -> bool:
    """Whether the calling thread runs in the main interpreter."""

def loaded_extension_count() -> int:
    """How many extension modules' code this native module holds now."""

def python_abi_records(data: bytes) -> List[Tuple[str, str]]:
    """The (tag, version) records of the Python ABI in a module's bytes (see jitload.abi)."""

def error_classes() -> List[str]:
    """The names of the ``jitload.errors`` classes native code raises (the Rust ErrorClass)."""

def options() -> Dict[str, object]:
    """Every setting as this native module parsed it: name -> (value or None, whether it was
    given, kind, default, meaning); and ``cache_dir`` -> the cache directory or None."""

def option_problems() -> List[str]:
    """What did not parse when this native module read the environment."""

def set_option(name: str, value: str) -> None:
    """Set one setting in this native module (ValueError naming the problem)."""
