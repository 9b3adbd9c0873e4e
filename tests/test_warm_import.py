"""Warm imports without LLVM (`jitload._fastload`): a module whose compiled object is in the
cache is linked by jitload's own loader, in a fresh process that never loads libLLVM, and
behaves exactly as when the engine links it; whatever that path cannot serve goes to the
engine. Each case runs in fresh interpreters with a private cache directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import build, single_phase, unique

REPORT = """
import json, sys
import jitload
print(json.dumps({"result": result, "stats": jitload.cache_stats(), "llvm": "jitload._native" in sys.modules}))
"""


def run(directory: Path, cache: Path, code: str, **env: str) -> dict:
    full = dict(os.environ, JITLOAD_CACHE_DIR=str(cache), PYTHONPATH=str(directory), **env)
    out = subprocess.run([sys.executable, "-c", code + REPORT], env=full, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold_then_warm(directory: Path, cache: Path, code: str) -> tuple[dict, dict]:
    cold = run(directory, cache, code)
    warm = run(directory, cache, code)
    assert cold["llvm"] and cold["stats"]["stores"] >= 1
    return cold, warm


def test_a_module_of_several_objects(tmp_path: Path) -> None:
    """Above -O0 a large module is code-generated in pieces (one object each), which
    reference each other: the warm path links them as one image."""
    name = unique("pieces")
    functions = "\n".join(
        f"static long f{i}(long x) {{ long s = 0; for (long k = 0; k < x; k++) s += (k * {i + 3}) % {i + 7} + (x ^ k); return s; }}\n"
        f"long g{i}(long x) {{ return f{i}(x) + {'g%d(x - 1)' % (i - 1) if i else '0'}; }}"
        for i in range(400)
    )
    method = """
    static PyObject *total(PyObject *self, PyObject *arg) { return PyLong_FromLong(g399(PyLong_AsLong(arg))); }
    """
    build(tmp_path, name, single_phase(name, functions + method, method_table='{"total", total, METH_O, NULL},'))
    code = f"import {name}; result = {name}.total(50)"
    cold, warm = cold_then_warm(tmp_path, tmp_path / "cache", code)
    assert warm["result"] == cold["result"]
    assert warm["stats"]["without_llvm"] == 1 and not warm["llvm"], warm


CXX = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdexcept>
#include <string>
#include <vector>

struct Registry {
    std::vector<std::string> names;
    Registry() { names.push_back("constructed"); }
};
static Registry registry;  // a static constructor

static long checked(long x) {
    if (x < 0) throw std::invalid_argument("negative: " + std::to_string(x));
    return x * 2;
}

static PyObject *twice(PyObject *, PyObject *arg) {
    try {
        return PyLong_FromLong(checked(PyLong_AsLong(arg)));
    } catch (const std::exception &e) {  // thrown and caught inside JIT'd code
        PyErr_SetString(PyExc_ValueError, e.what());
        return nullptr;
    }
}

static PyObject *state(PyObject *, PyObject *) { return PyUnicode_FromString(registry.names.at(0).c_str()); }

static PyMethodDef methods[] = {
    {"twice", twice, METH_O, nullptr},
    {"state", state, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr},
};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "NAME", nullptr, -1, methods};
extern "C" PyMODINIT_FUNC PyInit_NAME(void) { return PyModule_Create(&def); }
"""


def test_a_cxx_module_with_static_constructors_and_exceptions(tmp_path: Path) -> None:
    from jitload.build import compile as jl_compile

    name = unique("warmcxx")
    src = tmp_path / f"{name}.cpp"
    src.write_text(CXX.replace("NAME", name))
    jl_compile([str(src)], str(tmp_path / f"{name}.bc"))
    code = (
        f"import {name}\n"
        f"try:\n    {name}.twice(-3)\nexcept ValueError as e:\n    err = str(e)\n"
        f"result = [{name}.twice(21), {name}.state(), err]"
    )
    cold, warm = cold_then_warm(tmp_path, tmp_path / "cache", code)
    assert cold["result"] == [42, "constructed", "negative: -3"]
    assert warm["result"] == cold["result"]
    assert warm["stats"]["without_llvm"] == 1 and not warm["llvm"], warm


DUPLICATE = """
long shared_dup(long x) { return x + OFFSET; }
"""
USER = """
long shared_dup(long x);
static PyObject *use(PyObject *self, PyObject *arg) { return PyLong_FromLong(shared_dup(PyLong_AsLong(arg))); }
"""


def test_what_the_warm_path_cannot_decide_goes_to_the_engine(tmp_path: Path) -> None:
    """A cached module needing a symbol two loaded modules define: the warm path does not pick
    one, it hands the module to the engine, which reports the clash naming both files."""
    first, second, user = unique("dupa"), unique("dupb"), unique("dupuser")
    build(tmp_path, first, single_phase(first, DUPLICATE), defines=["OFFSET=1"])
    build(tmp_path, second, single_phase(second, DUPLICATE), defines=["OFFSET=2"])
    build(tmp_path, user, single_phase(user, USER, method_table='{"use", use, METH_O, NULL},'))
    cache = tmp_path / "cache"
    assert run(tmp_path, cache, f"import {first}, {user}; result = {user}.use(10)")["result"] == 11
    code = f"""
import {first}, {second}
try:
    import {user}
    result = "imported"
except ImportError as e:
    result = [type(e).__name__, str(e)]
"""
    out = run(tmp_path, cache, code)
    assert out["result"][0] == "LinkError", out
    assert f"{first}" in out["result"][1] and f"{second}" in out["result"][1], out["result"][1]
    # first: from the cache without LLVM; second: compiled; user: cached, left to the engine.
    assert out["stats"]["fallbacks"] == 1 and out["stats"]["without_llvm"] == 1 and out["llvm"], out


PROVIDER = """
long provided_value(long x) { return x * 7 + 1; }
"""
CONSUMER = """
long provided_value(long x);
static PyObject *use(PyObject *self, PyObject *arg) { return PyLong_FromLong(provided_value(PyLong_AsLong(arg))); }
"""


def test_modules_from_both_paths_share_one_scope(tmp_path: Path) -> None:
    """A module linked by the warm path exports its symbols to modules the engine links later
    in the same process (one process scope, owned by _fastload, shared with _native)."""
    provider, consumer = unique("provider"), unique("consumer")
    build(tmp_path, provider, single_phase(provider, PROVIDER))
    build(tmp_path, consumer, single_phase(consumer, CONSUMER, method_table='{"use", use, METH_O, NULL},'))
    run(tmp_path, tmp_path / "cache", f"import {provider}; result = 0")  # caches the provider only
    code = f"import {provider}, {consumer}; result = {consumer}.use(6)"
    out = run(tmp_path, tmp_path / "cache", code)
    assert out["result"] == 43
    # The provider came from the cache without LLVM; the consumer was compiled by the engine.
    assert out["stats"]["without_llvm"] == 1 and out["stats"]["misses"] == 1 and out["llvm"], out


def test_code_is_freed_with_the_module_on_reload(tmp_path: Path) -> None:
    name = unique("warmreload")
    version = """
    static PyObject *version(PyObject *self, PyObject *args) { return PyLong_FromLong(VERSION); }
    """
    for v in (1, 2):
        (tmp_path / f"v{v}").mkdir()
        table = '{"version", version, METH_NOARGS, NULL},'
        build(tmp_path / f"v{v}", name, single_phase(name, version, method_table=table), defines=[f"VERSION={v}"])
    cache = tmp_path / "cache"
    for v in (1, 2):  # both versions cached
        run(tmp_path / f"v{v}", cache, f"import {name}; result = {name}.version()")
    code = f"""
import gc, importlib, shutil, sys, os
from jitload import _fastload
import {name}
first = {name}.version()
count = _fastload.loaded_extension_count()
src = os.path.join({str(tmp_path)!r}, "v2", os.path.basename({name}.__file__))
shutil.copy(src, {name}.__file__)
st = os.stat({name}.__file__); os.utime({name}.__file__, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
new = importlib.reload({name})
second = new.version()
del new, {name}; sys.modules.pop({name!r}, None); gc.collect()
for _ in range(1000): pass
after = _fastload.loaded_extension_count()
import {name}
result = [first, second, count, after, {name}.version(), _fastload.loaded_extension_count()]
"""
    out = run(tmp_path / "v1", cache, code)
    first, second, count, after, again, last = out["result"]
    assert (first, second) == (1, 2)
    assert out["stats"]["without_llvm"] == 2 and not out["llvm"], out
    assert after == count, "the old code was freed once replaced and unused; the new code stays, as a .so would"
    assert (again, last) == (2, count), "importing the unchanged file again reuses its code (CPython's m_copy)"


@pytest.mark.parametrize("flag", ["JITLOAD_FASTLOAD", "JITLOAD_DEBUGGER"])
def test_the_warm_path_can_be_bypassed(tmp_path: Path, flag: str) -> None:
    name = unique("bypass")
    build(tmp_path, name, single_phase(name))
    run(tmp_path, tmp_path / "cache", f"import {name}; result = 0")
    out = run(tmp_path, tmp_path / "cache", f"import {name}; result = 0", **{flag: "0" if flag == "JITLOAD_FASTLOAD" else "1"})
    assert out["stats"]["hits"] == 1 and out["stats"]["without_llvm"] == 0 and out["llvm"], out


THROWING_INIT = r"""
#include <Python.h>
#include <stdexcept>
extern "C" PyMODINIT_FUNC PyInit_NAME(void) { throw std::runtime_error("init refuses"); }
"""


def test_a_cxx_exception_escaping_init_is_an_import_error(tmp_path: Path) -> None:
    """The warm path loads no libstdc++ of its own; with a C++ module (which brings it) it
    loads its exception guards, so a throwing init is an InitError, as from the engine."""
    from jitload.build import compile as jl_compile

    name = unique("warmthrow")
    src = tmp_path / f"{name}.cpp"
    src.write_text(THROWING_INIT.replace("NAME", name))
    jl_compile([str(src)], str(tmp_path / f"{name}.bc"))
    code = f"""
try:
    import {name}
    result = "imported"
except ImportError as e:
    result = [type(e).__name__, str(e)]
"""
    cold, warm = cold_then_warm(tmp_path, tmp_path / "cache", code)
    for out in (cold, warm):
        kind, message = out["result"]
        assert kind == "InitError" and "std::runtime_error" in message and "init refuses" in message, out
    assert warm["stats"]["without_llvm"] == 1 and not warm["llvm"], warm


ZLIB_USER = """
const char *zlibVersion(void);
static PyObject *version(PyObject *self, PyObject *args) { return PyUnicode_FromString(zlibVersion()); }
"""


def test_user_libraries_reach_the_warm_path(tmp_path: Path) -> None:
    """jitload.load_library() (in _native) adds to the one process scope, which the warm path
    (in _fastload) resolves against."""
    import zlib

    name = unique("warmzlib")
    build(tmp_path, name, single_phase(name, ZLIB_USER, method_table='{"version", version, METH_NOARGS, NULL},'))
    code = f"import jitload; jitload.load_library('z'); import {name}; result = {name}.version()"
    cold, warm = cold_then_warm(tmp_path, tmp_path / "cache", code)
    assert warm["result"] == cold["result"] == zlib.ZLIB_RUNTIME_VERSION
    assert warm["stats"]["without_llvm"] == 1, warm


@pytest.mark.parametrize("fastload", ["1", "0"])
def test_code_of_modules_the_collector_frees_in_a_batch_is_freed(tmp_path: Path, fastload: str) -> None:
    """A module and its functions form a cycle, so the garbage collector frees modules in
    batches — more than CPython's pending-call queue (32) holds. Every replaced module's code
    is freed all the same, from the cache (_fastload) and from the engine (_native). (Each
    reload after a touch loads the file anew; importing an unchanged file again would reuse
    its code, as CPython does.)"""
    name = unique("batch")
    build(tmp_path, name, single_phase(name, "static PyObject *ok(PyObject *s, PyObject *a) { Py_RETURN_TRUE; }",
                                       method_table='{"ok", ok, METH_NOARGS, NULL},'))
    run(tmp_path, tmp_path / "cache", f"import {name}; result = 0")
    code = f"""
import gc, importlib, os, sys
owner = importlib.import_module("jitload._fastload" if {fastload!r} == "1" else "jitload._native")
gc.disable()
m = importlib.import_module({name!r})
for i in range(300):
    st = os.stat(m.__file__); os.utime(m.__file__, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    m = importlib.reload(m); assert m.ok()
del m, sys.modules[{name!r}]
before = owner.loaded_extension_count()
gc.enable(); gc.collect()
for _ in range(1000): pass
result = [before, owner.loaded_extension_count()]
"""
    out = run(tmp_path, tmp_path / "cache", code, JITLOAD_FASTLOAD=fastload)
    before, after = out["result"]
    assert before >= 301 and after == 1, out["result"]  # the last code stays for a new import
