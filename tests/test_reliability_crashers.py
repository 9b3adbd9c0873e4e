"""Inputs found by the fuzzers and the mutation run, kept as regression tests. Each loads in a
fresh interpreter through every loader that compiles in-process (the engine API, imports with
isolation off) and through the isolated import; each must raise, never crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CRASHERS = Path(__file__).parent / "fixtures" / "crashers"

# Inputs that still crash when compiled in-process (the isolated import survives them), with
# why. Fixed so far: wrapt-spliced-record-context-dispose.bc (the LLVMContext left corrupt by a
# failed parse is now disposed inside the crash guard).
IN_PROCESS_CRASHES: dict[str, str] = {}

LOAD = """
import importlib.machinery, sys, jitload
from jitload import _native
p, how = sys.argv[1], sys.argv[2]
try:
    if how == "library":
        jitload.Session().library("crashers", opt_level=0).add_bitcode(p)
    else:
        spec = importlib.machinery.ModuleSpec("fastmath", None, origin=p)
        _native.load_extension(p, "fastmath", "PyInit_fastmath", spec, isolate=(how == "isolated"))
    print("loaded")
except Exception as e:
    print(type(e).__name__)
"""


def cases():
    for path in sorted(CRASHERS.glob("*.bc")):
        for how in ("library", "inprocess", "isolated"):
            marks = []
            if how != "isolated" and path.name in IN_PROCESS_CRASHES:
                marks = [pytest.mark.xfail(strict=True, reason=IN_PROCESS_CRASHES[path.name])]
            yield pytest.param(path, how, id=f"{path.stem}-{how}", marks=marks)


@pytest.mark.parametrize("path,how", list(cases()))
def test_found_inputs_raise(path, how):
    out = subprocess.run([sys.executable, "-c", LOAD, str(path), how], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "JITLOAD_CACHE": "0"})
    assert out.returncode == 0, f"interpreter died ({out.returncode}): {out.stderr[-1500:]}"
    assert out.stdout.strip() == "loaded" or out.stdout.strip().endswith("Error"), out.stdout
