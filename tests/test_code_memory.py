"""Every kind of code jitload writes itself is sealed by the provider `JITLOAD_CODE_MEMORY`
chooses (crates/jitload-codemem): the warm path's loaded module (objload), the engine's stubs,
the fast wrappers, and the code ORC links (cold imports, engine functions). With `dualmap` each lives in a read+execute memfd mapping, as on a host that
forbids making written memory executable; W^X holds either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build, single_phase, unique

pytestmark = pytest.mark.skipif(sys.platform != "linux" or os.uname().machine != "x86_64", reason="x86-64 Linux")

SCRIPT = """
import ctypes, json, sys
import jitload

def mapping(address):
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= address < hi:
                return [fields[1], fields[5] if len(fields) > 5 else ""]
    return None

def c_function(builtin):
    # PyCFunctionObject: m_ml (PyMethodDef *) after the object header; ml_meth after ml_name.
    method_def = ctypes.c_void_p.from_address(id(builtin) + 16).value
    return ctypes.c_void_p.from_address(method_def + 8).value

import {module} as m
assert m.answer() == 42
lib = jitload.Session.default().library("code_memory")
lib.add_ir("define i64 @add(i64 %a, i64 %b) {{\\n %s = add i64 %a, %b\\n ret i64 %s\\n}}\\n")
add = lib.function("add", "int64(int64, int64)")
assert add(2, 3) == 5
from jitload import _native, _fastload
writable_exec = []
with open("/proc/self/maps") as maps:
    writable_exec = [line for line in maps if "w" in line.split()[1] and "x" in line.split()[1]]
print(json.dumps({{
    "warm": _fastload.stats()["hits"],
    "module": mapping(c_function(m.answer)),
    "stub": mapping(lib.address("add")),
    "wrapper": mapping(add.__self__.code[0]),
    # The function's body, where its stub's slot points: code ORC linked.
    "body": mapping(ctypes.c_uint64.from_address(lib._native.jump_slot("add")).value),
    "provider": _native._stencils.memory_strategy(),
    "wx": writable_exec,
}}))
"""


@pytest.mark.parametrize("mode, perms, path", [("mprotect", "r-xp", ""), ("dualmap", "r-xs", "/memfd:jitload-code")])
def test_every_kind_of_code_is_sealed_by_the_chosen_provider(tmp_path: Path, mode: str, perms: str, path: str) -> None:
    name = unique("codemem")
    methods = "static PyObject *answer(PyObject *s, PyObject *a) { return PyLong_FromLong(42); }"
    build(tmp_path, name, single_phase(name, methods, method_table='{"answer", answer, METH_NOARGS, NULL},'))
    env = {k: v for k, v in os.environ.items() if k not in ("JITLOAD_CODE_MEMORY", "JITLOAD_STENCIL_MEMORY")}
    env.update(JITLOAD_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(tmp_path), JITLOAD_CODE_MEMORY=mode)
    script = SCRIPT.format(module=name)
    runs = []
    for _ in ("cold", "warm"):
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert warm["warm"] == 1, "the second import links the cached object (objload)"
    assert warm["provider"] == mode
    # The cold import's module and the engine's function bodies were linked by ORC (JITLink
    # through jitload-codemem: shim/jit_memory.cpp), the rest by jitload itself.
    for run, kind in [(cold, "module"), (cold, "body"), (warm, "module"), (warm, "stub"), (warm, "wrapper"), (warm, "body")]:
        assert run[kind] is not None, kind
        assert run[kind][0] == perms, (kind, run[kind])
        assert run[kind][1].startswith(path), (kind, run[kind])
    assert warm["wx"] == [] and runs[0]["wx"] == []
