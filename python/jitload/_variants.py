"""x86-64 level variants: the build tools compile each translation unit for the baseline and,
besides, for higher x86-64 levels with the matching ``-march`` (so the preprocessor sees
``__AVX2__``, ``__BMI2__``, ... and code that picks its SIMD path with ``#if`` gets the fast
one), and the module carries every level's code. The loader picks the highest level the host
supports; ``JITLOAD_X86_LEVEL`` caps it.

Format (read by ``crates/jitload-engine/src/variants.rs``, which says why it is this one): the
file is the baseline module, and each higher level's code is a whole bitcode module stored as
named metadata::

    !jitload.variants = !{!0, ...}
    !0 = !{!"x86-64-v3", !"<bitcode compiled with -march=x86-64-v3>"}

Here: one compile becomes a baseline compile and, at the same time, one compile per level
(``JITLOAD_BUILD_LEVELS``: ``v3`` by default, ``all`` for v2, v3 and v4, ``none``), whose
bitcode is stored in the baseline object; the bitcode link (``_native.link_bitcode``) links
each level's pieces into one module per level. A level that does not compile for a
translation unit (code that ``#error``s on AVX2, say) is reported and left out: the link
gives that level the unit's baseline code.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
from typing import List, Optional, Tuple

from ._bitcode_file import is_bitcode

#: The levels each ``JITLOAD_BUILD_LEVELS`` value builds besides the baseline.
LEVELS = {"v3": ("x86-64-v3",), "all": ("x86-64-v2", "x86-64-v3", "x86-64-v4"), "none": ()}

#: Dependency-file flags (with their argument, for the second set): the baseline compile
#: writes the dependency file; a variant must not overwrite it with its own temporary name.
_DEPFILE_FLAGS = {"-MD", "-MMD", "-MP"}
_DEPFILE_FLAGS_WITH_ARG = {"-MF", "-MT", "-MQ"}

#: Flags after which the compile is for another target or CPU than variants are made for.
_TARGET_FLAGS = ("-march=", "-mcpu=", "-target", "--target=", "-arch")

_ASSEMBLY_SUFFIXES = (".s", ".S", ".sx")


def levels_to_build() -> Tuple[str, ...]:
    """The levels compiles get variants for (none off x86-64)."""
    from .config import options

    if platform.machine() not in ("x86_64", "AMD64"):
        return ()
    return LEVELS.get(options.build_levels, ())


def output_of(cmd: List[str]) -> Optional[str]:
    """The ``-o`` output of a compile command, if it names exactly one."""
    outputs = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "-o"]
    outputs += [a[2:] for a in cmd if a.startswith("-o") and len(a) > 2]
    return outputs[0] if len(outputs) == 1 else None


def wants_variants(cmd: List[str]) -> bool:
    """Whether a ``-c`` compile gets level variants: not when it chooses its own target or CPU,
    compiles assembly, or compiles several sources at once."""
    if any(a.startswith(_TARGET_FLAGS) for a in cmd[1:]):
        return False
    if any(cmd[i] == "-x" and cmd[i + 1].startswith("assembler") for i in range(len(cmd) - 1)):
        return False
    if any(a.endswith(_ASSEMBLY_SUFFIXES) and not a.startswith("-") for a in cmd[1:]):
        return False
    return "-c" in cmd and output_of(cmd) is not None


def variant_command(cmd: List[str], level: str, output: str) -> List[str]:
    """``cmd`` compiling for ``level`` into ``output``: no dependency file, no warnings (the
    baseline compile reports them)."""
    out: List[str] = []
    it = iter(cmd)
    for a in it:
        if a == "-o":
            next(it, None)
        elif a.startswith("-o") and len(a) > 2:
            continue
        elif a in _DEPFILE_FLAGS:
            continue
        elif a in _DEPFILE_FLAGS_WITH_ARG:
            next(it, None)
        elif a.startswith(tuple(_DEPFILE_FLAGS_WITH_ARG)):
            continue
        else:
            out.append(a)
    return [*out, f"-march={level}", "-w", "-o", output]


def compile_with_variants(cmd: List[str], capture: bool = False) -> Tuple[int, str]:
    """Runs the bitcode compile ``cmd`` (a clang command line with ``-c`` and ``-o``) and, at
    the same time, its variants; stores the variants that compiled in its output. Returns the
    baseline compile's exit status and, with ``capture``, its output (else it goes to this
    process's stdout/stderr, as a compiler's would)."""
    levels = levels_to_build() if wants_variants(cmd) else ()
    output = output_of(cmd)
    if not levels or output is None:
        base = subprocess.run(cmd, capture_output=capture, text=True)
        return base.returncode, (base.stdout + base.stderr) if capture else ""
    with tempfile.TemporaryDirectory(prefix="jitload-cc-") as tmp:
        files = [os.path.join(tmp, f"{level}.bc") for level in levels]
        running = [
            subprocess.Popen(variant_command(cmd, level, f), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for level, f in zip(levels, files)
        ]
        base = subprocess.run(cmd, capture_output=capture, text=True)
        finished = [(p.communicate()[0], p.returncode) for p in running]
        if base.returncode != 0 or not is_bitcode(output):
            return base.returncode, (base.stdout + base.stderr) if capture else ""
        built: List[Tuple[str, str]] = []
        for level, f, (text, status) in zip(levels, files, finished):
            if status == 0 and is_bitcode(f):
                built.append((level, f))
            else:
                tail = "\n".join(text.strip().splitlines()[-5:])
                print(f"jitload: {output}: the {level} variant did not compile (the baseline code serves that level):\n{tail}", file=sys.stderr)
        if built:
            from . import _native
            from .errors import JitloadError

            try:
                _native.embed_variants(output, built)
            except JitloadError as e:
                print(f"jitload: {output}: cannot store its level variants: {e}", file=sys.stderr)
                return 1, (base.stdout + base.stderr) if capture else ""
    return base.returncode, (base.stdout + base.stderr) if capture else ""
