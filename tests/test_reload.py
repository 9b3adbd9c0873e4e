"""Hot reload of bitcode extension modules: new code after an edit, the old module keeps
working, its code is freed once it is gone, and reloading from inside itself is safe."""

from __future__ import annotations

import gc
import importlib
import os
import sys
from pathlib import Path

from conftest import build, single_phase, unique

import jitload._native as native

VERSION_METHOD = """
static PyObject *version(PyObject *self, PyObject *args) { return PyLong_FromLong(VERSION); }
"""
VERSION_ENTRY = '{"version", version, METH_NOARGS, NULL},'


def build_version(directory: Path, name: str, version: int, extra: str = "", methods: str = "", table: str = "") -> None:
    out = build(
        directory,
        name,
        single_phase(name, VERSION_METHOD + methods, extra=extra, method_table=VERSION_ENTRY + table),
        defines=[f"VERSION={version}"],
    )
    # Make sure the change is visible even on file systems with coarse timestamps.
    st = os.stat(out)
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + version * 1_000_000_000))


def settle() -> None:
    """Collect garbage and let CPython run pending calls (where code is freed)."""
    gc.collect()
    for _ in range(1000):
        pass


def test_reload_loads_new_code_and_frees_the_old(modules_dir):
    name = unique("hot")
    build_version(modules_dir, name, 1)
    old = importlib.import_module(name)
    assert old.version() == 1
    settle()
    before = native.loaded_extension_count()

    build_version(modules_dir, name, 2)
    new = importlib.reload(old)
    assert new is sys.modules[name] and new is not old
    assert new.version() == 2
    assert old.version() == 1, "the old module keeps running the old code"
    assert native.loaded_extension_count() == before + 1

    version_of_old = old.version  # a function keeps its module (and code) alive
    del old
    settle()
    assert native.loaded_extension_count() == before + 1
    assert version_of_old() == 1
    del version_of_old
    settle()
    assert native.loaded_extension_count() == before, "the old code was freed"
    assert new.version() == 2


def test_reload_without_change_keeps_the_module(modules_dir):
    name = unique("same")
    build_version(modules_dir, name, 1)
    mod = importlib.import_module(name)
    assert importlib.reload(mod) is mod


def test_many_reloads_do_not_accumulate_code(modules_dir):
    name = unique("cycle")
    build_version(modules_dir, name, 1)
    mod = importlib.import_module(name)
    settle()
    baseline = native.loaded_extension_count()
    for v in range(2, 12):
        build_version(modules_dir, name, v)
        mod = importlib.reload(mod)
        assert mod.version() == v
        settle()
    assert native.loaded_extension_count() == baseline


RELOAD_ME = """
static PyObject *reload_me(PyObject *self, PyObject *args) {
    /* Reload this very module while this function runs, then keep running old code. */
    PyObject *fresh = PyImport_ReloadModule(self);
    if (fresh == NULL) return NULL;
    long v = PyLong_AsLong(PyObject_CallMethod(fresh, "version", NULL));
    Py_DECREF(fresh);
    return Py_BuildValue("(ll)", (long)VERSION, v);
}
"""


def test_reload_from_inside_the_module(modules_dir):
    name = unique("inside")
    build_version(modules_dir, name, 1, methods=RELOAD_ME, table='{"reload_me", reload_me, METH_NOARGS, NULL},')
    mod = importlib.import_module(name)
    build_version(modules_dir, name, 2, methods=RELOAD_ME, table='{"reload_me", reload_me, METH_NOARGS, NULL},')
    reload_me = mod.reload_me
    del mod
    assert reload_me() == (1, 2), "old code finished after loading the new module"
    del reload_me
    settle()
    assert sys.modules[name].version() == 2


TYPE_EXTRA = """
static PyTypeObject Thing = {PyVarObject_HEAD_INIT(NULL, 0) .tp_name = "thing.Thing",
                             .tp_basicsize = sizeof(PyObject), .tp_flags = Py_TPFLAGS_DEFAULT,
                             .tp_new = PyType_GenericNew};
"""


def test_module_with_static_types_is_never_freed(modules_dir):
    name = unique("typed")
    init = f"""
PyMODINIT_FUNC PyInit_{name}(void) {{
    if (PyType_Ready(&Thing) < 0) return NULL;
    PyObject *m = PyModule_Create(&def);
    Py_INCREF(&Thing);
    PyModule_AddObject(m, "Thing", (PyObject *)&Thing);
    return m;
}}
"""
    src = single_phase(name, VERSION_METHOD, extra=TYPE_EXTRA, method_table=VERSION_ENTRY)
    src = src.replace(f"PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&def); }}", init)
    out = build(modules_dir, name, src, defines=["VERSION=1"])
    mod = importlib.import_module(name)
    thing = mod.Thing()
    settle()
    count = native.loaded_extension_count()
    src2 = src
    build(modules_dir, name, src2, defines=["VERSION=2"])
    st = os.stat(out)
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    importlib.reload(mod)
    del mod
    settle()
    assert native.loaded_extension_count() == count + 1, "a module with types keeps its code"
    assert type(thing).__name__ == "Thing"
