"""jitload's settings in effect in this process: the ``JITLOAD_*`` environment variables read
once at the first bitcode import (or ``import jitload``'s first use of them), then what
:func:`jitload.install` and :func:`jitload.set_option` changed.

``python -m jitload options`` lists every setting with its value and meaning; the table is in
:mod:`jitload._settings` (and the ``jitload-options`` crate, which the native modules read).
The ones users set most:

``JITLOAD_PREFER_BITCODE=1`` — a ``.bc`` beside a ``.so`` wins (default: the ``.so`` wins).
``JITLOAD_OPT_LEVEL=0..3`` — optimisation level for JIT compilation (default 2, as ``-O2``).
``JITLOAD_DISABLE=1`` — the ``.pth`` file does not install the hook at start-up.
``JITLOAD_ISOLATION=fork|none`` — compile untrusted bitcode in a forked child (default) so no
input can crash or exhaust the interpreter, or in-process (faster, still crash-guarded).
``JITLOAD_TIER=auto|eager`` — ``auto`` (default): a cold import (nothing cached) compiles each
function at -O0 when it is first called and the whole module at the opt level in a background
process, then switches every function to that code (and caches it); ``eager``: everything is
compiled at the opt level before ``import`` returns. See :func:`jitload.wait_for_tiers`.
``JITLOAD_C_SOURCE=1`` — ``import foo`` also finds ``foo.c`` (lowest priority), compiles it with clang 22
to bitcode (cached, see :mod:`jitload.csource`) and loads that (default: off).
``JITLOAD_CACHE=0`` — do not use the persistent object cache (default: on; compiled objects are
reused by later processes). ``JITLOAD_CACHE_DIR`` moves it (default ``$XDG_CACHE_HOME/jitload``
or ``~/.cache/jitload``); ``JITLOAD_CACHE_MAX_MB`` bounds it (default 2048). See
``python -m jitload cache``.
``JITLOAD_FASTLOAD=0`` — link cached objects through the engine (LLVM's ORC) rather than jitload's own
LLVM-free loader, which imports a cached module without loading libLLVM (default: on).
``JITLOAD_DEBUGGER=1`` — register JIT'd code with gdb (GDB JIT interface: breakpoints by function name,
backtraces with source lines when the bitcode has debug info, e.g. built with ``-g``).
``JITLOAD_PERF_MAP=1`` — append JIT'd functions to ``/tmp/perf-<pid>.map`` so ``perf report`` names them.
Both are off by default: they cost time and memory per module.
``JITLOAD_COMPILE_TIMEOUT_S`` — how long an isolated compile may run before it is stopped (default 600);
the compiler process also gets this many CPU seconds per code generation thread, plus one.
``JITLOAD_CODEGEN_THREADS`` — threads for code generation of large modules (default: all cores, at most 8).
``JITLOAD_COMPILE_MEMORY_MB`` — address space the compiler child may add (default 1024; the largest corpus module needs about 300).
``JITLOAD_COMPILER_STDERR=1`` — let the compiler child write to the interpreter's stderr (default: captured,
and its end quoted in the exception when the compile fails).

A value that does not parse, or a ``JITLOAD_*`` name that is not a setting, gives a
:class:`jitload.OptionWarning` naming the variable, and the default is used.
"""

from __future__ import annotations

import os
import sys

from . import _settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Tuple


class Options:
    """The settings the Python side acts on. A plain class: this module is imported by the
    first bitcode import of a process, where dataclasses/typing would cost ~25 ms."""

    def __init__(
        self,
        prefer_bitcode: bool,
        opt_level: int,
        isolate: bool,
        c_source: bool = False,
        cache: bool = True,
        tiered: bool = True,
    ) -> None:
        self.prefer_bitcode = prefer_bitcode
        self.opt_level = opt_level
        self.isolate = isolate
        self.c_source = c_source
        self.cache = cache
        #: Compile cold imports in tiers (``JITLOAD_TIER=auto``).
        self.tiered = tiered
        self.fastload = True
        self.fast_wrappers = True
        self.cache_dir: Optional[str] = None
        self.clang: Optional[str] = None
        self.clangxx: Optional[str] = None
        self.libllvm: Optional[str] = None
        #: x86-64 levels the build tools compile besides the baseline (``JITLOAD_BUILD_LEVELS``).
        self.build_levels = "v3"

    @classmethod
    def from_values(cls, values: "Dict[str, Any]", environ: "Any") -> "Options":
        o = cls(
            prefer_bitcode=values["JITLOAD_PREFER_BITCODE"],
            opt_level=values["JITLOAD_OPT_LEVEL"],
            isolate=values["JITLOAD_ISOLATION"] == "fork",
            c_source=values["JITLOAD_C_SOURCE"],
            cache=values["JITLOAD_CACHE"],
            tiered=values["JITLOAD_TIER"] == "auto",
        )
        o.fastload = values["JITLOAD_FASTLOAD"]
        o.fast_wrappers = values["JITLOAD_FAST"]
        o.cache_dir = _settings.cache_dir(environ)
        o.clang = values.get("JITLOAD_CLANG")
        o.clangxx = values.get("JITLOAD_CLANGXX")
        o.libllvm = values.get("JITLOAD_LIBLLVM")
        o.build_levels = values["JITLOAD_BUILD_LEVELS"]
        return o


# Every setting's value and the ones given, as the environment said and set_option changed.
_values, _given, _problems = _settings.read(os.environ)
# The environment as read, and every set_option since: what a native module loaded later gets.
_environ: Dict[str, str] = dict(os.environ)
_overrides: Dict[str, str] = {}
options = Options.from_values(_values, _environ)


def current() -> "Tuple[Dict[str, Any], Dict[str, str]]":
    """Every setting's value in effect (defaults included) and the ones given (as given),
    after warning once about what did not parse."""
    warn_problems()
    return _values, _given


def warn_problems() -> None:
    """Each setting that did not parse, as a :class:`jitload.OptionWarning` (once: the
    environment is read once)."""
    global _problems
    problems, _problems = _problems, []
    if problems:
        import warnings

        from .errors import OptionWarning

        for problem in problems:
            warnings.warn(problem, OptionWarning, stacklevel=3)


def set_option(name: str, value: str) -> None:
    """Sets one setting for the rest of the process, as if the environment had said
    ``name=value`` from the start ("" restores the default); ValueError if it does not parse.
    Code that already took a value keeps it (a session takes its settings when it is made)."""
    global options, _values, _given
    if name not in _settings._BY_NAME:
        hint = _settings.suggest(name)
        raise ValueError(f"{name} is not a jitload setting{f' (did you mean {hint}?)' if hint else ''}")
    try:
        _settings.parse(name, value)
    except ValueError as e:
        raise ValueError(f'{name}="{value}" is not valid: {e}') from None
    _overrides[name] = value
    _environ[name] = value
    _values, _given, _ = _settings.read(_environ)
    # install()'s choices stay (they were made after the environment's).
    keep = {k: getattr(options, k) for k in ("prefer_bitcode", "opt_level", "isolate", "c_source", "cache", "tiered")}
    options = Options.from_values(_values, _environ)
    changed = {
        "JITLOAD_PREFER_BITCODE": "prefer_bitcode",
        "JITLOAD_OPT_LEVEL": "opt_level",
        "JITLOAD_ISOLATION": "isolate",
        "JITLOAD_C_SOURCE": "c_source",
        "JITLOAD_CACHE": "cache",
        "JITLOAD_TIER": "tiered",
    }.get(name)
    for attr, v in keep.items():
        if attr != changed:
            setattr(options, attr, v)
    for native in ("jitload._fastload", "jitload._native"):
        # Only a module that finished loading (jitload._native is a Python stand-in while it loads).
        setter = getattr(sys.modules.get(native), "__dict__", {}).get("set_option")
        if setter is not None:
            setter(name, value)


def apply_overrides(native: Any) -> None:
    """Gives a native module loaded just now the settings :func:`set_option` changed before."""
    for name, value in _overrides.items():
        native.set_option(name, value)
