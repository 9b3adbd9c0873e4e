"""JIT'd code is visible to gdb (breakpoint by name, backtrace with source lines) and to perf
(the perf map), when switched on with JITLOAD_DEBUGGER / JITLOAD_PERF_MAP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build, unique

SOURCE = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static long helper_for_gdb(long x) {
    long total = 0;
    for (long i = 0; i < x; i++)
        total += i * 3;          /* line 9 */
    return total;
}

static PyObject *compute(PyObject *self, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    return PyLong_FromLong(helper_for_gdb(n));
}

static PyMethodDef methods[] = {{"compute", compute, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "NAME", NULL, -1, methods};
PyMODINIT_FUNC PyInit_NAME(void) { return PyModule_Create(&def); }
"""


# With JITLOAD_CODE_MEMORY=dualmap, code lives in a read-only shared memfd mapping, which
# ptrace cannot write: gdb's software breakpoints (int3) cannot be inserted there, so the
# test uses a hardware breakpoint in that mode (as a user would).
BREAK = "hbreak" if os.environ.get("JITLOAD_CODE_MEMORY") == "dualmap" else "break"


def make(tmp_path: Path) -> tuple[Path, str]:
    name = unique("dbg")
    mods = tmp_path / "mods"
    mods.mkdir()
    # -O0 keeps helper_for_gdb a real function for the breakpoint; -g gives the line table.
    build(mods, name, SOURCE.replace("NAME", name), cflags=["-g"], opt_level=0)
    return mods, name


@pytest.mark.skipif(shutil.which("gdb") is None, reason="gdb not installed")
def test_gdb_breaks_in_jitted_code_with_source_lines(tmp_path: Path) -> None:
    mods, name = make(tmp_path)
    script = tmp_path / "run.py"
    script.write_text(f"import {name}\nprint('result', {name}.compute(5))\n")
    env = dict(os.environ, JITLOAD_DEBUGGER="1", JITLOAD_OPT_LEVEL="0", JITLOAD_CACHE="0", PYTHONPATH=str(mods))
    out = subprocess.run(
        ["gdb", "-q", "-batch", "-nx",
         "-ex", "set breakpoint pending on", "-ex", "set debuginfod enabled off",
         "-ex", f"{BREAK} helper_for_gdb", "-ex", "run", "-ex", "bt 6", "-ex", "continue",
         "--args", sys.executable, str(script)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    text = out.stdout + out.stderr
    assert re.search(r"Breakpoint 1, helper_for_gdb \(x=5\) at .*_src\.c:\d+", text), text[-3000:]
    assert re.search(r"#1 .* compute \(.*\) at .*_src\.c:\d+", text), text[-3000:]
    assert "result 30" in text


def test_perf_map_names_jitted_functions(tmp_path: Path) -> None:
    mods, name = make(tmp_path)
    code = f"import os, {name}; {name}.compute(3); print(os.getpid())"
    env = dict(os.environ, JITLOAD_PERF_MAP="1", JITLOAD_CACHE="0", PYTHONPATH=str(mods))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pid = int(out.stdout.strip().splitlines()[-1])
    perf_map = Path(f"/tmp/perf-{pid}.map")
    try:
        lines = perf_map.read_text().splitlines()
    finally:
        perf_map.unlink(missing_ok=True)
    entries = {}
    for line in lines:
        address, size, symbol = line.split(" ", 2)
        entries[symbol] = (int(address, 16), int(size, 16))
    for symbol in ("helper_for_gdb", "compute", f"PyInit_{name}"):
        assert symbol in entries, lines
        assert entries[symbol][0] > 0x1000 and entries[symbol][1] > 0
    # Functions of one module lie close together (one section, one base).
    addresses = [entries[s][0] for s in ("helper_for_gdb", "compute")]
    assert abs(addresses[0] - addresses[1]) < 1 << 20
