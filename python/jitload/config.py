"""Runtime options of the import hook, set by :func:`jitload.install` or environment variables.

``JITLOAD_PREFER_BITCODE=1`` — a ``.bc`` beside a ``.so`` wins (default: the ``.so`` wins).
``JITLOAD_OPT_LEVEL=0..3`` — optimisation level for JIT compilation (default 2, as ``-O2``).
``JITLOAD_DISABLE=1`` — the ``.pth`` file does not install the hook at start-up.
``JITLOAD_ISOLATION=fork|none`` — compile untrusted bitcode in a forked child (default) so no
input can crash or exhaust the interpreter, or in-process (faster, still crash-guarded).
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
"""

from __future__ import annotations

import os


from _jitload_hook import env_flag as _env_flag


def _env_opt_level() -> int:
    raw = os.environ.get("JITLOAD_OPT_LEVEL", "2").strip() or "2"
    if raw not in ("0", "1", "2", "3"):
        raise ValueError(f"JITLOAD_OPT_LEVEL must be 0, 1, 2 or 3, not {raw!r}")
    return int(raw)


def _env_isolation() -> bool:
    raw = os.environ.get("JITLOAD_ISOLATION", "fork").strip().lower() or "fork"
    if raw not in ("fork", "none"):
        raise ValueError(f"JITLOAD_ISOLATION must be 'fork' or 'none', not {raw!r}")
    return raw == "fork"


class Options:
    """The hook's options. A plain class: this module is imported by the first bitcode import
    of a process, where dataclasses/typing would cost ~25 ms."""

    def __init__(
        self, prefer_bitcode: bool, opt_level: int, isolate: bool, c_source: bool = False, cache: bool = True
    ) -> None:
        self.prefer_bitcode = prefer_bitcode
        self.opt_level = opt_level
        self.isolate = isolate
        self.c_source = c_source
        self.cache = cache

    @classmethod
    def from_environment(cls) -> "Options":
        return cls(
            prefer_bitcode=_env_flag("JITLOAD_PREFER_BITCODE"),
            opt_level=_env_opt_level(),
            isolate=_env_isolation(),
            c_source=_env_flag("JITLOAD_C_SOURCE"),
            cache=os.environ.get("JITLOAD_CACHE", "1").strip().lower() not in ("0", "off", "false", "no"),
        )


options = Options.from_environment()
