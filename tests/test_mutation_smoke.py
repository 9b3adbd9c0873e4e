"""No input crashes the interpreter: checked-in crashers and a short mutation run over a
real module's bitcode (the long runs are the reliability issue's `make reliability`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_python

CRASHERS = sorted((Path(__file__).parent / "fixtures" / "crashers").glob("*.bc"))
EXAMPLE = Path(__file__).parent.parent / "examples" / "fastmath.c"

LOAD_ONE = """
import importlib.machinery, sys
from jitload import _native
p = sys.argv[1] if len(sys.argv) > 1 else {path!r}
try:
    _native.load_extension(p, "fastmath", "PyInit_fastmath", importlib.machinery.ModuleSpec("fastmath", None, origin=p))
    print("loaded")
except ImportError as e:
    print(type(e).__name__, e)
"""


@pytest.mark.parametrize("path", CRASHERS, ids=[p.name for p in CRASHERS])
def test_known_crashers_raise_instead(path):
    out = run_python(LOAD_ONE.format(path=str(path)))
    assert out.returncode == 0, out.stderr
    # Unreadable, or (the input that makes LLVM grow a buffer without end) over the memory limit.
    memory = out.stdout.startswith("CompileError") and "JITLOAD_COMPILE_MEMORY_MB=" in out.stdout
    assert out.stdout.startswith("BitcodeError") or memory, out.stdout
    assert str(path) in out.stdout


MUTATE = r"""
import importlib.machinery, json, os, random, sys, tempfile
from pathlib import Path
from jitload import _native
from jitload.build import compile
work = Path(tempfile.mkdtemp())
seed = work / "seed.bc"
compile([sys.argv[1]], str(seed))
data = seed.read_bytes()
counts = {"loaded": 0}
for i in range(int(sys.argv[2])):
    rng = random.Random(i)
    b = bytearray(data)
    kind = ("flip", "trunc", "splice", "bytes")[i % 4]
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            p = rng.randrange(len(b)); b[p] ^= 1 << rng.randrange(8)
    elif kind == "trunc":
        b = b[: rng.randrange(4, len(b))]
    elif kind == "splice":
        a, c, n = rng.randrange(len(b)), rng.randrange(len(b)), rng.randint(1, 64)
        b[a:a + n] = data[c:c + n]
    else:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    p = work / f"m{i}.bc"
    p.write_bytes(bytes(b))
    try:
        _native.load_extension(str(p), "fastmath", "PyInit_fastmath", importlib.machinery.ModuleSpec("fastmath", None, origin=str(p)))
        counts["loaded"] += 1
    except ImportError as e:
        counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1
    p.unlink()
print(json.dumps(counts))
"""


def test_mutated_bitcode_never_crashes():
    n = 60
    proc = subprocess.run([sys.executable, "-c", MUTATE, str(EXAMPLE), str(n)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sum(counts.values()) == n
    assert counts.get("BitcodeError", 0) > n // 4, counts  # most mutants are rejected as bitcode errors
