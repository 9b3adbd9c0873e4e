"""Runs in a fresh interpreter (any CPython 3.10-3.13) for tests/test_so_vs_bc.py.

``build DIR NAME VARIANT``: writes the variant's C source and builds it twice with this
interpreter's headers, as ``DIR/so/...so`` (clang-22, a plain shared library) and
``DIR/bc/...bc`` (jitload's build tools).

``observe DIR KIND NAME``: imports module NAME from ``DIR/KIND`` and prints, as JSON, what a
program can see of it: its attributes, what its C code finds (``PyState_FindModule``, its
definition, its state, its static counters), and the same after importing it again (``del
sys.modules``), reloading it, and importing it in a subinterpreter. Run once for the ``.so``
and once for the ``.bc``, the two outputs must be equal.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from typing import Any, Dict

SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static int init_calls = 0;  /* how often PyInit ran */
static long counter = 0;    /* C static state: shared by every module made from this code */
static PyModuleDef def;

static PyObject *found(PyObject *self, PyObject *unused) {
    PyObject *m = PyState_FindModule(&def);
    if (m == NULL) { if (PyErr_Occurred()) return NULL; return PyUnicode_FromString("NULL"); }
    return PyUnicode_FromString(m == self ? "self" : "another module");
}
static PyObject *has_def(PyObject *self, PyObject *unused) { return PyBool_FromLong(PyModule_GetDef(self) == &def); }
static PyObject *state(PyObject *self, PyObject *unused) {
    if (STATE_SIZE <= 0) Py_RETURN_NONE;  /* m_size 0: a zero-byte allocation, nothing to read */
    long *st = (long *)PyModule_GetState(self);
    if (st == NULL) { PyErr_Clear(); Py_RETURN_NONE; }
    return PyLong_FromLong(*st);
}
static PyObject *inits(PyObject *self, PyObject *unused) { return PyLong_FromLong(init_calls); }
static PyObject *bump(PyObject *self, PyObject *unused) { return PyLong_FromLong(++counter); }

static PyMethodDef methods[] = {
    {"found", found, METH_NOARGS, "PyState_FindModule(&def): self, another module or NULL"},
    {"has_def", has_def, METH_NOARGS, NULL},
    {"state", state, METH_NOARGS, NULL},
    {"inits", inits, METH_NOARGS, NULL},
    {"bump", bump, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static int fill(PyObject *m) {
    if (PyModule_AddIntConstant(m, "ANSWER", 42) < 0) return -1;
    if (STATE_SIZE > 0) *(long *)PyModule_GetState(m) = 7;
    return 0;
}

#if MULTI_PHASE
static PyModuleDef_Slot slots[] = {{Py_mod_exec, (void *)fill}, {0, NULL}};
static PyModuleDef def = {PyModuleDef_HEAD_INIT, "SHORT", "a test module", STATE_SIZE, methods, slots};
PyMODINIT_FUNC PyInit_SHORT(void) { init_calls++; return PyModuleDef_Init(&def); }
#else
static PyModuleDef def = {PyModuleDef_HEAD_INIT, "SHORT", "a test module", STATE_SIZE, methods};
PyMODINIT_FUNC PyInit_SHORT(void) {
    init_calls++;
    PyObject *m = PyModule_Create(&def);
    if (m == NULL || fill(m) < 0) { Py_XDECREF(m); return NULL; }
    return m;
}
#endif
"""

#: variant name -> (multi-phase, state size expression)
VARIANTS = {
    "single": (0, "-1"),
    "single_state": (0, "(Py_ssize_t)sizeof(long)"),
    "multi": (1, "0"),
    "multi_state": (1, "(Py_ssize_t)sizeof(long)"),
}


def build(directory: str, fullname: str, variant: str) -> None:
    multi, size = VARIANTS[variant]
    short = fullname.rpartition(".")[2]
    source = SOURCE.replace("SHORT", short).replace("MULTI_PHASE", str(multi)).replace("STATE_SIZE", size)
    package = fullname.rpartition(".")[0].replace(".", os.sep)
    src = os.path.join(directory, f"{short}.c")
    with open(src, "w") as f:
        f.write(source)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for kind in ("so", "bc"):
        target = os.path.join(directory, kind, package)
        os.makedirs(target, exist_ok=True)
        if package:
            open(os.path.join(target, "__init__.py"), "w").close()
    include = sysconfig.get_paths()["include"]
    so = os.path.join(directory, "so", package, short + suffix)
    subprocess.run(["clang-22", "-shared", "-fPIC", "-O2", "-I", include, src, "-o", so], check=True)
    from jitload.build import compile as jl_compile

    jl_compile([src], os.path.join(directory, "bc", package, short + suffix[: -len(".so")] + ".bc"))


SUBINTERPRETER = """
import importlib, json, sys
sys.path.insert(0, {path!r})
import jitload
jitload.install()
m = importlib.import_module({name!r})
with open({out!r}, "w") as f:
    json.dump({{"found": m.found(), "has_def": m.has_def(), "state": m.state(), "inits": m.inits(),
               "bump": m.bump(), "ANSWER": getattr(m, "ANSWER", None), "name": m.__name__}}, f)
"""


def in_subinterpreter(path: str, name: str) -> Any:
    try:
        import _interpreters as interpreters  # type: ignore[import-not-found]
    except ImportError:
        import _xxsubinterpreters as interpreters  # type: ignore[import-not-found,no-redef]
    if sys.version_info >= (3, 13):
        sid = interpreters.create("legacy")
    elif sys.version_info >= (3, 12):
        sid = interpreters.create(isolated=False)
    else:
        sid = interpreters.create()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        failure = interpreters.run_string(sid, SUBINTERPRETER.format(path=path, name=name, out=out))
        if failure is not None:  # 3.13 returns what the code raised
            return f"raised {failure}"
        with open(out) as f:
            return json.load(f)


def describe(module: Any) -> Dict[str, Any]:
    ignore = ("__file__", "__loader__", "__spec__", "__builtins__")
    return {
        "name": module.__name__,
        "doc": module.__doc__,
        "file": os.path.basename(getattr(module, "__file__", "") or "").partition(".")[0],
        "attrs": sorted((k, type(v).__name__) for k, v in vars(module).items() if k not in ignore),
        "function_module": sorted({str(getattr(v, "__module__", None)) for v in vars(module).values() if callable(v)}),
        "function_self_is_module": sorted({getattr(v, "__self__", None) is module for v in vars(module).values() if callable(v)}),
        "found": module.found(),
        "has_def": module.has_def(),
        "state": module.state(),
        "in_sys_modules": sys.modules.get(module.__name__) is module,
        "extension_loader": isinstance(module.__loader__, importlib.machinery.ExtensionFileLoader),
    }


def observe(directory: str, kind: str, name: str) -> Dict[str, Any]:
    path = os.path.join(directory, kind)
    sys.path.insert(0, path)
    import jitload

    jitload.install()
    first = importlib.import_module(name)
    seen: Dict[str, Any] = {"first": describe(first), "inits": first.inits(), "bump": first.bump()}
    if kind == "bc":  # which native module linked it: the engine or the warm path
        fast = sys.modules.get("jitload._fastload")
        seen["loaded_by"] = "jitload._fastload" if fast is not None and fast.stats()["hits"] else "jitload._native"
    del sys.modules[name]
    again = importlib.import_module(name)
    seen["again"] = describe(again)
    seen["again_is_first"] = again is first
    seen["again_inits"] = again.inits()
    seen["again_bump"] = again.bump()
    seen["first_found_now"] = first.found()
    seen["reload_keeps_module"] = importlib.reload(again) is again
    seen["after_reload"] = describe(again)
    seen["subinterpreter"] = in_subinterpreter(path, name)
    seen["main_after_subinterpreter"] = {"found": again.found(), "inits": again.inits(), "bump": again.bump()}
    return seen


if __name__ == "__main__":
    if sys.argv[1] == "build":
        build(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(json.dumps(observe(sys.argv[2], sys.argv[3], sys.argv[4]), sort_keys=True))
