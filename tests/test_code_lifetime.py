"""Code a reload replaced is freed only when nothing can reach it any more: not while a C exit
handler, a type or a module object made from it may still run at interpreter exit.

Each case runs in a fresh interpreter (a crash shows as a return code): version 1 of a module
is imported, registers something that outlives its module object, version 2 replaces it
through ``importlib.reload``, the old module object goes, and the interpreter exits. Freeing
version 1's code there made the exit crash (an ``atexit`` handler in freed code; a type or a
second module whose definition was freed, touched by the final garbage collection). Each case
runs twice against one cache: the engine links the first run, the warm path the second.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from conftest import build, run_python, unique

HEAD = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdio.h>
#include <stdlib.h>
static PyObject *version(PyObject *self, PyObject *args) { return PyLong_FromLong(VERSION); }
static PyMethodDef methods[] = { {"version", version, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL} };
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "NAME", NULL, -1, methods};
"""

# What version 1 leaves behind, as (C code before init, C code in init, Python run after the
# old module object is gone, what stderr must show at exit).
CASES = {
    "c_atexit": (
        'static void bye(void) { fprintf(stderr, "exit handler of version %d ran\\n", VERSION); }',
        "atexit(bye);",
        "",
        "exit handler of version 1 ran",
    ),
    "py_atexit": (
        'static void bye(void) { fprintf(stderr, "exit handler of version %d ran\\n", VERSION); }',
        "Py_AtExit(bye);",
        "",
        "exit handler of version 1 ran",
    ),
    # A heap type made without a module: its instances do not keep the module alive.
    "type_instance": (
        """
static void thing_dealloc(PyObject *o) {
    fprintf(stderr, "a Thing of version %d freed\\n", VERSION);
    PyTypeObject *t = Py_TYPE(o); t->tp_free(o); Py_DECREF(t);
}
static PyType_Slot slots[] = { {Py_tp_dealloc, thing_dealloc}, {0, NULL} };
static PyType_Spec spec = {"NAME.Thing", sizeof(PyObject), 0, Py_TPFLAGS_DEFAULT, slots};
static PyObject *thing_type;
static PyObject *make(PyObject *self, PyObject *args) { return PyObject_CallNoArgs(thing_type); }
static PyMethodDef make_def = {"make", make, METH_NOARGS, NULL};
""",
        "thing_type = PyType_FromSpec(&spec); if (!thing_type) return NULL;"
        ' PyObject *f = PyCFunction_New(&make_def, NULL); if (!f || PyModule_AddObject(m, "make", f) < 0) return NULL;',
        "kept = [mod_make()]",
        "a Thing of version 1 freed",
    ),
    # A second module made from a definition in the code (kept in a C static, handed out by
    # a function), reachable after the first is gone.
    "second_module": (
        """
static PyObject *hello(PyObject *self, PyObject *args) {
    fprintf(stderr, "second module of version %d called\\n", VERSION); Py_RETURN_NONE;
}
static PyMethodDef sub_methods[] = { {"hello", hello, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL} };
static struct PyModuleDef sub_def = {PyModuleDef_HEAD_INIT, "NAME_sub", NULL, -1, sub_methods};
static PyObject *sub;
static PyObject *get_sub(PyObject *self, PyObject *args) { return Py_NewRef(sub); }
static PyMethodDef sub_getter[] = { {"sub", get_sub, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL} };
""",
        "sub = PyModule_Create(&sub_def); if (!sub || PyModule_AddFunctions(m, sub_getter) < 0) return NULL;",
        "import atexit; atexit.register(mod.sub().hello)",
        "second module of version 1 called",
    ),
}


def module_source(name: str, case: str) -> str:
    before, in_init, _, _ = CASES[case]
    init = f"""
PyMODINIT_FUNC PyInit_{name}(void) {{
    PyObject *m = PyModule_Create(&def);
    if (m == NULL) return NULL;
    {in_init}
    return m;
}}
"""
    return (HEAD + before + init).replace("NAME", name)


SCRIPT = """
import gc, importlib, os, shutil, sys
import jitload, jitload._native, jitload._fastload
directory, name, suffix = sys.argv[1:4]
target = os.path.join(directory, name + suffix)

def put(version):
    shutil.copyfile(os.path.join(directory, f"v{version}", name + suffix), target)
    os.utime(target, ns=(version * 10**18, version * 10**18))

def loaded():
    return jitload._native.loaded_extension_count(), jitload._fastload.loaded_extension_count()

sys.path.insert(0, directory)
jitload.install()
put(1)
mod = importlib.import_module(name)
assert mod.version() == 1
mod_make = getattr(mod, "make", None)
AFTER
put(2)
mod = importlib.reload(mod)
assert mod.version() == 2
del mod_make
gc.collect()
for _ in range(1000):
    pass
print("loaded", loaded())
"""


@pytest.mark.parametrize("case", sorted(CASES))
def test_replaced_code_outlives_what_it_left_behind(tmp_path: Path, case: str) -> None:
    name = unique(f"keep_{case}")
    for version in (1, 2):
        (tmp_path / f"v{version}").mkdir()
        out = build(tmp_path / f"v{version}", name, module_source(name, case), defines=[f"VERSION={version}"])
    suffix = out.name[len(name) :]
    script = SCRIPT.replace("AFTER", textwrap.dedent(CASES[case][2]))
    env = {"JITLOAD_CACHE_DIR": str(tmp_path / "cache")}
    for run in ("engine", "warm"):
        result = run_python(f"import sys; sys.argv[1:] = {[str(tmp_path), name, suffix]!r}\n" + script, env=env)
        assert result.returncode == 0, f"{case} ({run} run): exit status {result.returncode}\n{result.stderr[-3000:]}"
        assert CASES[case][3] in result.stderr, f"{case} ({run} run): {result.stderr[-3000:]}"
        # Both versions' code is still loaded when the interpreter exits, linked by the
        # engine (from source, then from the cache) or by the warm path.
        expected = "loaded (0, 2)" if run == "warm" else "loaded (2, 0)"
        assert expected in result.stdout, f"{case} ({run} run): {result.stdout}"
        (tmp_path / f"{name}{suffix}").unlink()
    shutil.rmtree(tmp_path / "cache")
