"""The import hook: finding, loading and initialising extension modules from bitcode."""

from __future__ import annotations

import importlib
import os
import importlib.machinery
import importlib.util
import sys
import sysconfig
import subprocess
from pathlib import Path

import pytest

import jitload
import jitload.build
from conftest import BC_SUFFIX, build, run_python, single_phase, unique

ADD_METHOD = """
static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}
"""
ADD_ENTRY = '{"add", add, METH_VARARGS, "add two ints"},'


def test_suffixes_follow_extension_suffixes():
    exts = [s for s in importlib.machinery.EXTENSION_SUFFIXES if s.endswith(".so")]
    assert jitload.BITCODE_SUFFIXES[: len(exts)] == [s[:-3] + ".bc" for s in exts]
    assert jitload.BITCODE_SUFFIXES[-1] == ".ll"
    assert ".abi3.bc" in jitload.BITCODE_SUFFIXES and ".bc" in jitload.BITCODE_SUFFIXES


def test_single_phase_module_is_importable_like_an_extension(modules_dir):
    name = unique("single")
    path = build(modules_dir, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY))
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin == str(path)
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    mod = importlib.import_module(name)
    assert mod.add(40, 2) == 42
    assert mod.__file__ == str(path)
    assert mod.__spec__.name == name and mod.__spec__.origin == str(path)
    assert type(mod.__loader__).__name__ == "BitcodeExtensionLoader"
    assert mod.__loader__.get_filename(name) == str(path)


@pytest.mark.parametrize("suffix", [".abi3.bc", ".bc"])
def test_other_bitcode_suffixes(modules_dir, suffix):
    name = unique("suffix")
    build(modules_dir, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY), suffix=suffix)
    mod = importlib.import_module(name)
    assert mod.__file__.endswith(name + suffix)
    assert mod.add(1, 2) == 3


def test_textual_ir_module(modules_dir, tmp_path):
    name = unique("textir")
    # Produce real textual IR with clang so the .ll path is exercised end to end.
    src = tmp_path / f"{name}_src.c"
    src.write_text(single_phase(name, ADD_METHOD, method_table=ADD_ENTRY))
    ll = modules_dir / f"{name}.ll"
    from jitload import _clang

    subprocess.run(
        [_clang.find(), "-S", "-emit-llvm", "-O1", "-fPIC", *[f"-I{d}" for d in _clang.python_include_dirs()], str(src), "-o", str(ll)],
        check=True,
    )
    assert ll.read_text().lstrip().startswith("; ModuleID")
    with pytest.warns(jitload.AbiWarning, match="no record of the Python"):  # plain clang, plain .ll name
        mod = importlib.import_module(name)
    assert mod.add(2, 3) == 5 and mod.__file__ == str(ll)


MULTI_PHASE = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
typedef struct { long counter; } state_t;
static PyObject *bump(PyObject *m, PyObject *unused) {
    state_t *st = PyModule_GetState(m);
    return PyLong_FromLong(++st->counter);
}
static PyMethodDef methods[] = {{"bump", bump, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static int exec_slot(PyObject *m) { return PyModule_AddIntConstant(m, "EXECUTED", 1); }
static PyObject *create_slot(PyObject *spec, PyModuleDef *def) {
    PyObject *name = PyObject_GetAttrString(spec, "name");
    if (!name) return NULL;
    PyObject *m = PyModule_NewObject(name);
    Py_DECREF(name);
    if (m && PyModule_AddStringConstant(m, "CREATED_BY", "Py_mod_create") < 0) { Py_DECREF(m); return NULL; }
    return m;
}
static PyModuleDef_Slot slots[] = {CREATE_SLOT {Py_mod_exec, exec_slot}, {0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "NAME", NULL, sizeof(state_t), methods, slots, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit_NAME(void) { return PyModuleDef_Init(&def); }
"""


@pytest.mark.parametrize("with_create", [False, True])
def test_multi_phase_init_with_state_and_slots(modules_dir, with_create):
    name = unique("multi")
    src = MULTI_PHASE.replace("NAME", name).replace("CREATE_SLOT", "{Py_mod_create, create_slot}," if with_create else "")
    build(modules_dir, name, src)
    mod = importlib.import_module(name)
    assert mod.EXECUTED == 1
    assert (mod.__dict__.get("CREATED_BY") == "Py_mod_create") is with_create
    assert [mod.bump(), mod.bump()] == [1, 2]
    assert mod.__name__ == name and mod.__file__.endswith(BC_SUFFIX)
    # A second import of the same name (after removal from sys.modules) is a fresh instance.
    del sys.modules[name]
    again = importlib.import_module(name)
    assert again is not mod and again.bump() == 1 and mod.bump() == 3


def test_submodule_of_a_package(modules_dir):
    pkg = unique("pkg")
    (modules_dir / pkg).mkdir()
    (modules_dir / pkg / "__init__.py").write_text("from ._ext import add\n")
    # Single-phase, m_name without the package: CPython's package context fixes the name.
    src = single_phase("_ext", ADD_METHOD, method_table=ADD_ENTRY)
    build(modules_dir / pkg, "_ext", src)
    mod = importlib.import_module(f"{pkg}._ext")
    assert mod.__name__ == f"{pkg}._ext"
    assert mod.add.__module__ == f"{pkg}._ext"  # (3.12+: jitload's own package context)
    assert importlib.import_module(pkg).add(2, 2) == 4
    assert mod.__spec__.parent == pkg


def test_so_beside_bc_wins_unless_bitcode_preferred(modules_dir, tmp_path):
    name = unique("both")
    so_src = single_phase(name, 'static PyObject *which(PyObject *s, PyObject *a) { return PyUnicode_FromString("so"); }', method_table='{"which", which, METH_NOARGS, NULL},')
    bc_src = so_src.replace('"so"', '"bc"')
    build(modules_dir, name, bc_src)
    from jitload import _clang

    c = tmp_path / "so.c"
    c.write_text(so_src)
    so_suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    subprocess.run(
        [_clang.find(), "-shared", "-fPIC", "-O2", *[f"-I{d}" for d in _clang.python_include_dirs()], str(c), "-o", str(modules_dir / (name + so_suffix))],
        check=True,
    )
    code = f"import {name}; print({name}.which())"
    assert run_python(code, cwd=modules_dir).stdout.strip() == "so"
    assert run_python(code, cwd=modules_dir, env={"JITLOAD_PREFER_BITCODE": "1"}).stdout.strip() == "bc"
    out = run_python(f"import jitload; jitload.install(prefer_bitcode=True); {code}", cwd=modules_dir)
    assert out.stdout.strip() == "bc", out.stderr


def test_reload_does_not_crash(modules_dir):
    name = unique("reload")
    build(modules_dir, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY))
    mod = importlib.import_module(name)
    again = importlib.reload(mod)
    assert again.add(1, 1) == 2


def test_static_constructors_run_before_init_and_destructors_at_exit(modules_dir):
    name = unique("ctors")
    extra = """
#include <stdio.h>
static int ready;
__attribute__((constructor(150))) static void first(void) { ready = ready * 10 + 1; }
__attribute__((constructor(200))) static void second(void) { ready = ready * 10 + 2; }
__attribute__((destructor)) static void bye(void) { printf("destructor ran\\n"); fflush(stdout); }
static PyObject *state(PyObject *s, PyObject *a) { return PyLong_FromLong(ready); }
"""
    build(modules_dir, name, single_phase(name, extra=extra, method_table='{"state", state, METH_NOARGS, NULL},'))
    out = run_python(f"import {name}; print({name}.state())", cwd=modules_dir)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["12", "destructor", "ran"]


PROCESS_SYMBOLS = r"""
#include <ctype.h>
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern char **environ;
static int cmp(const void *a, const void *b, void *arg) { return *(const int *)a - *(const int *)b; }
static void at_exit_handler(void) { fputs("atexit handler ran\n", stdout); fflush(stdout); }
static PyObject *register_exit(PyObject *s, PyObject *a) {
    /* atexit and pthread_atfork live in libc_nonshared.a, not in libc.so.6 */
    return PyLong_FromLong(atexit(at_exit_handler) + pthread_atfork(NULL, NULL, NULL));
}
static PyObject *probe(PyObject *s, PyObject *a) {
    int v[4] = {3, 1, 2, 0};
    qsort_r(v, 4, sizeof(int), cmp, NULL);
    char buf[8] = "abc";
    int same = memcmp(buf, "abc", 3) == 0;          /* becomes bcmp */
    int alpha = isalpha((unsigned char)buf[0]) != 0;  /* __ctype_b_loc */
    fprintf(stderr, "%s", "");                        /* stderr: a data symbol */
    return Py_BuildValue("(iiiidi)", v[0], v[3], same, alpha, log2(8.0), environ != NULL);
}
"""


def test_process_and_runtime_symbols_resolve(modules_dir):
    name = unique("procsyms")
    build(modules_dir, name, single_phase(name, PROCESS_SYMBOLS, method_table='{"probe", probe, METH_NOARGS, NULL}, {"register_exit", register_exit, METH_NOARGS, NULL},'))
    mod = importlib.import_module(name)
    assert mod.probe() == (0, 3, 1, 1, 3.0, 1)
    out = run_python(f"import {name}; print({name}.register_exit())", cwd=modules_dir)
    assert out.stdout.split() == ["0", "atexit", "handler", "ran"], out.stderr


def test_int128_division_uses_compiler_runtime(modules_dir):
    name = unique("i128")
    body = """
static PyObject *divide(PyObject *s, PyObject *args) {
    unsigned long long hi, lo, d;
    if (!PyArg_ParseTuple(args, "KKK", &hi, &lo, &d)) return NULL;
    volatile unsigned __int128 n = ((unsigned __int128)hi << 64) | lo;
    unsigned __int128 q = n / d;                       /* __udivti3 */
    __int128 p; int ovf = __builtin_mul_overflow((__int128)n, (__int128)d, &p);  /* __muloti4 */
    return Py_BuildValue("(KKi)", (unsigned long long)(q >> 64), (unsigned long long)q, ovf);
}
"""
    build(modules_dir, name, single_phase(name, body, method_table='{"divide", divide, METH_VARARGS, NULL},'))
    mod = importlib.import_module(name)
    n = (5 << 64) | 7
    q = n // 3
    assert mod.divide(5, 7, 3) == (q >> 64, q & (2**64 - 1), 0)


def test_symbols_from_other_jitload_modules(modules_dir):
    lib, user = unique("provider"), unique("consumer")
    provider_src = single_phase(lib, extra="long jitload_shared_answer(void) { return 4242; }")
    build(modules_dir, lib, provider_src)
    consumer_src = single_phase(
        user,
        "long jitload_shared_answer(void);\nstatic PyObject *get(PyObject *s, PyObject *a) { return PyLong_FromLong(jitload_shared_answer()); }",
        method_table='{"get", get, METH_NOARGS, NULL},',
    )
    build(modules_dir, user, consumer_src)
    importlib.import_module(lib)
    assert importlib.import_module(user).get() == 4242


def test_dependent_library_recorded_at_build_and_loaded(modules_dir):
    name = unique("zlibuser")
    body = """
#include <zlib.h>
static PyObject *crc(PyObject *s, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    unsigned long c = crc32(0L, b.buf, (unsigned)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}
"""
    path = build(modules_dir, name, single_phase(name, body, method_table='{"crc", crc, METH_O, NULL},'), libraries=["z"])
    assert jitload.dependent_libraries(str(path)) == ["libz.so.1"]
    import zlib

    assert importlib.import_module(name).crc(b"jitload") == zlib.crc32(b"jitload")


def test_user_library_via_load_library(modules_dir, tmp_path):
    from jitload import _clang

    lib = tmp_path / "libjitloadtest.so"
    c = tmp_path / "lib.c"
    c.write_text("int jitload_test_secret(void) { return 1234; }\n")
    subprocess.run([_clang.find(), "-shared", "-fPIC", str(c), "-o", str(lib)], check=True)
    name = unique("userlib")
    src = single_phase(name, "int jitload_test_secret(void);\nstatic PyObject *get(PyObject *s, PyObject *a) { return PyLong_FromLong(jitload_test_secret()); }", method_table='{"get", get, METH_NOARGS, NULL},')
    build(modules_dir, name, src)
    with pytest.raises(jitload.LinkError, match="jitload_test_secret"):
        importlib.import_module(name)
    assert jitload.load_library(str(lib)) == str(lib)
    assert importlib.import_module(name).get() == 1234


def test_opt_level_is_configurable(tmp_path):
    src = tmp_path / "k.c"
    src.write_text("int sq(int x) { int r = 0; for (int i = 0; i < x; i++) r += x; return r; }\n")
    out = tmp_path / "k.bc"
    from jitload import _clang

    subprocess.run([_clang.find(), "-c", "-emit-llvm", "-O1", "-Xclang", "-disable-llvm-passes", str(src), "-o", str(out)], check=True)
    o0 = jitload.inspect(str(out), opt_level=0)["ir"]
    o2 = jitload.inspect(str(out), opt_level=2)["ir"]
    assert "alloca" in o0 and "alloca" not in o2
    assert "mul" in o2  # the loop is folded into a multiplication at -O2
    with pytest.raises(ValueError):
        jitload.install(opt_level=7)


def test_code_is_compiled_for_the_host_cpu(tmp_path):
    host = jitload.host_target()
    assert host["triple"].startswith(sysconfig.get_config_var("MULTIARCH").split("-")[0] if sysconfig.get_config_var("MULTIARCH") else "")
    assert host["cpu"] and host["cpu"] != "generic"
    src = tmp_path / "v.c"
    src.write_text("void add(float *restrict a, const float *restrict b) { for (int i = 0; i < 1024; i++) a[i] += b[i]; }\n")
    out = tmp_path / "v.bc"
    # jitload's compile defers vectorisation to the JIT (-flto=full pre-link pipeline), so the
    # JIT picks the vector width for this CPU, although clang stamped the function "x86-64".
    jitload.build.compile([str(src)], str(out))
    assert '"target-cpu"="x86-64"' in subprocess.run(
        [jitload._clang.find().replace("clang", "llvm-dis"), str(out), "-o", "-"], capture_output=True, text=True
    ).stdout
    asm = jitload.inspect(str(out))["asm"]
    if "+avx2" in host["features"].split(","):
        assert "ymm" in asm or "zmm" in asm, asm  # 256/512-bit AVX, not baseline SSE2


def test_code_targets_the_host_and_is_tuned_generically(tmp_path):
    # Instructions for the host CPU, scheduling for LLVM's generic model (what the .so gets
    # from clang -O2) unless JITLOAD_TUNE_CPU=host; the host's preferred vector width is kept.
    host = jitload.host_target()
    assert host["tune"] == "generic"
    ir, _ = jitload.Session.default().inspect("define i64 @f(i64 %x) {\n %y = mul i64 %x, %x\n ret i64 %y\n}\n")
    assert f'"target-cpu"="{host["cpu"]}"' in ir and '"tune-cpu"="generic"' in ir, ir
    if host["triple"].startswith("x86_64") and "+avx2" in host["features"].split(","):
        assert '"prefer-vector-width"="256"' in ir or '"prefer-vector-width"="512"' in ir, ir
    code = (
        "import jitload; h = jitload.host_target(); assert h['tune'] == h['cpu'], h\n"
        "ir, _ = jitload.Session.default().inspect('define void @f() {\\n ret void\\n}\\n')\n"
        "assert '\"tune-cpu\"=\"' + h['cpu'] + '\"' in ir and 'prefer-vector-width' not in ir, ir\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, JITLOAD_TUNE_CPU="host"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _four_multiply_lanes_ir() -> str:
    # XXH64's inner loop: four independent 64-bit lanes, each a multiply, add, rotate and
    # multiply carried from one iteration to the next; what SLP packs into `vpmullq`.
    lanes = range(4)
    phis = "".join(f"  %v{k} = phi i64 [ {k + 1}, %entry ], [ %r{k}, %loop ]\n" for k in lanes)
    body = "".join(
        f"  %p{k} = getelementptr i64, ptr %p, i64 %o{k}\n"
        f"  %x{k} = load i64, ptr %p{k}, align 1\n"
        f"  %m{k} = mul i64 %x{k}, -4417276706812531889\n"
        f"  %a{k} = add i64 %m{k}, %v{k}\n"
        f"  %t{k} = call i64 @llvm.fshl.i64(i64 %a{k}, i64 %a{k}, i64 31)\n"
        f"  %r{k} = mul i64 %t{k}, -7046029288634856825\n"
        for k in lanes
    )
    offsets = "".join(f"  %o{k} = add i64 %i, {k}\n" for k in lanes)
    # The lanes merge as XXH64's do: each rotated by its own amount, then added.
    merge = "".join(f"  %z{k} = call i64 @llvm.fshl.i64(i64 %r{k}, i64 %r{k}, i64 {n})\n" for k, n in zip(lanes, (1, 7, 12, 18)))
    return (
        "declare i64 @llvm.fshl.i64(i64, i64, i64)\n"
        "define i64 @lanes(ptr %p, i64 %n) {\nentry:\n  br label %loop\nloop:\n"
        "  %i = phi i64 [ 0, %entry ], [ %next, %loop ]\n" + phis + offsets + body +
        "  %next = add i64 %i, 4\n  %more = icmp ult i64 %next, %n\n  br i1 %more, label %loop, label %done\n"
        "done:\n" + merge + "  %h01 = add i64 %z0, %z1\n  %h23 = add i64 %z2, %z3\n  %h = add i64 %h01, %h23\n  ret i64 %h\n}\n"
        # A function that asks for AVX-512DQ itself (as an x86-64-v4 variant's do) keeps it.
        "define <4 x i64> @own(<4 x i64> %a, <4 x i64> %b) #0 {\n  %m = mul <4 x i64> %a, %b\n  ret <4 x i64> %m\n}\n"
        'attributes #0 = { "target-features"="+avx512f,+avx512dq,+avx512vl" }\n'
    )


def test_intel_hosts_keep_64_bit_multiply_lanes_scalar():
    # On Intel, vpmullq is 3 uops with a 15-cycle latency and LLVM's cost model does not know:
    # with AVX-512DQ the SLP vectoriser turned XXH64's four lanes into vpmullq, 2.1x slower.
    # The JIT withholds avx512dq there from functions that do not ask for it themselves.
    host = jitload.host_target()
    features = host["features"].split(",")
    intel_dq = "+avx512dq" in features and "GenuineIntel" in Path("/proc/cpuinfo").read_text()
    assert host["withheld"] == ("-avx512dq" if intel_dq else ""), host
    ir, asm = jitload.Session.default().inspect(_four_multiply_lanes_ir())
    start, own_start = asm.index("lanes:"), asm.index("own:")
    lanes = asm[start:own_start] if start < own_start else asm[start:]
    if intel_dq:
        # (This loop, unlike XXH64, is still packed, with AVX2's 3-multiply emulation: SLP's
        # cost model counts throughput, not the loop-carried latency; docs/benchmarks.md.)
        assert "vpmullq" not in lanes, lanes
        assert '-avx512dq"' in ir, ir  # the withheld feature ends the host's list
    if "+avx512dq" in features:
        own = asm[own_start:].split("ret")[0]
        assert "vpmullq" in own, own  # its own features win
    code = "import jitload; h = jitload.host_target(); assert h['withheld'] == '', h"
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, JITLOAD_TUNE_CPU="host"), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_bitcode_leaves_loops_unrollable_by_the_jit(tmp_path):
    # jitload's compile must not unroll loops for the baseline CPU, nor forbid the JIT to:
    # -fno-unroll-loops would stamp every loop `llvm.loop.unroll.disable`, and then even a
    # 4-iteration loop over a local array stays a loop with the array in memory.
    src = tmp_path / "u.c"
    src.write_text(  # the shape of xxhash's XXH3 inner loop: explicit vectors, which no vectoriser widens
        "typedef unsigned long long v2 __attribute__((vector_size(16)));\n"
        "static void round4(v2 *acc, const v2 *in) {\n"
        "  for (int i = 0; i < 4; i++) acc[i] = (acc[i] + in[i] * in[i]) ^ (acc[i] >> 29);\n"
        "}\n"
        "unsigned long long h(const v2 *p, long n) {\n"
        "  v2 acc[4] = {{1, 2}, {3, 4}, {5, 6}, {7, 8}};\n"
        "  for (long j = 0; j + 4 <= n; j += 4) round4(acc, p + j);\n"
        "  return acc[0][0] ^ acc[1][1] ^ acc[2][0] ^ acc[3][1];\n"
        "}\n"
    )
    out = tmp_path / "u.bc"
    jitload.build.compile([str(src)], str(out))
    ir = subprocess.run(
        [jitload._clang.find().replace("clang", "llvm-dis"), str(out), "-o", "-"], capture_output=True, text=True
    ).stdout
    assert "define" in ir and "llvm.loop.unroll.disable" not in ir, ir
    jit_ir = jitload.inspect(str(out))["ir"]
    assert "alloca" not in jit_ir, jit_ir  # the inner loop unrolled, the accumulators in registers


def test_scripts_and_non_directories_still_run(tmp_path):
    script = tmp_path / "hello.py"
    script.write_text("import jitload\nprint('hello', jitload.is_installed())\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.stdout.strip() == "hello True", out.stderr


def test_disable_env_var_and_uninstall():
    out = run_python("import sys; print(any(getattr(h, '_jitload', False) for h in sys.path_hooks))", env={"JITLOAD_DISABLE": "1"})
    assert out.stdout.strip() == "False"
    out = run_python("import sys; print(any(getattr(h, '_jitload', False) for h in sys.path_hooks))")
    assert out.stdout.strip() == "True"
    out = run_python(
        "import jitload, sys\njitload.install(); jitload.install()\nn = sum(getattr(h, '_jitload', False) for h in sys.path_hooks)\n"
        "jitload.uninstall()\nprint(n, jitload.is_installed())"
    )
    assert out.stdout.strip() == "1 False"


def test_uninstalled_hook_leaves_loaded_modules_working(modules_dir):
    name = unique("afteruninstall")
    build(modules_dir, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY))
    mod = importlib.import_module(name)
    jitload.uninstall()
    try:
        assert mod.add(5, 5) == 10
        other = unique("notfound")
        build(modules_dir, other, single_phase(other, ADD_METHOD, method_table=ADD_ENTRY))
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(other)
    finally:
        jitload.install()


SUBINTERPRETERS = """
import sys
try:
    import _xxsubinterpreters as interpreters
except ImportError:
    import _interpreters as interpreters

def create(kind):
    # A subinterpreter sharing the main GIL ("legacy", the only kind before 3.12) or an
    # isolated one with its own GIL (3.12+), which requires multi-phase init.
    if sys.version_info >= (3, 13):
        return interpreters.create(kind)
    if sys.version_info >= (3, 12):
        return interpreters.create(isolated=(kind == "isolated"))
    return interpreters.create()

def run(sid, code):
    # 3.13's run_string returns what the code raised instead of raising it.
    failure = interpreters.run_string(sid, code)
    if failure is not None:
        raise RuntimeError(f"the subinterpreter raised {failure}")
"""

SUBINTERPRETER = SUBINTERPRETERS.replace("{", "{{").replace("}", "}}") + """
import importlib
sid = create("legacy")
run(sid, '''
import sys
sys.path.insert(0, {d!r})
import {single}, {multi}
assert {single}.add(2, 3) == 5 and {multi}.bump() == 1 and {multi}.EXECUTED == 1
assert {single}.__file__.endswith(".bc")
try:
    import {broken}
except ImportError as e:
    assert type(e).__name__ == "BitcodeError", type(e)
    print("subinterpreter ok", type(e).__name__)
''')
import sys
sys.path.insert(0, {d!r})
import {single}
print("main ok", {single}.add(1, 1))
"""


def test_bitcode_modules_import_in_subinterpreters(modules_dir):
    pytest.importorskip("_xxsubinterpreters" if sys.version_info < (3, 13) else "_interpreters")
    single, multi, broken = unique("subsingle"), unique("submulti"), unique("subbroken")
    build(modules_dir, single, single_phase(single, ADD_METHOD, method_table=ADD_ENTRY))
    build(modules_dir, multi, MULTI_PHASE.replace("NAME", multi).replace("CREATE_SLOT", ""))
    (modules_dir / (broken + BC_SUFFIX)).write_bytes(b"BC\xc0\xde garbage")
    out = run_python(SUBINTERPRETER.format(d=str(modules_dir), single=single, multi=multi, broken=broken))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["subinterpreter", "ok", "BitcodeError", "main", "ok", "2"], out.stdout + out.stderr


C_ENTRY_CACHE = """
import importlib.util, os, sys
from jitload import importer
native = importer._SubinterpreterNative()
def entries():
    return sum(len(files) for _, _, files in os.walk({cache!r}))
for name, use_cache in (({off!r}, False), ({on!r}, True)):
    before = entries()
    path = os.path.join({d!r}, name + {suffix!r})
    spec = importlib.util.spec_from_file_location(name, path)
    module = native.load_extension(path, name, "PyInit_" + name, spec, use_cache=use_cache)
    assert module.add(2, 3) == 5
    print("on" if use_cache else "off", entries() > before)
"""


def test_the_subinterpreter_entry_points_keep_the_cache_setting(modules_dir, tmp_path):
    """The C entry points a subinterpreter loads through (where PyO3 refuses `_native`) take
    `use_cache` as the module does (they used to drop it and always use the cache)."""
    off, on = unique("centryoff"), unique("centryon")
    for name in (off, on):
        build(modules_dir, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY))
    cache = tmp_path / "cache"
    code = C_ENTRY_CACHE.format(d=str(modules_dir), cache=str(cache), off=off, on=on, suffix=BC_SUFFIX)
    out = run_python(code, env={"JITLOAD_CACHE_DIR": str(cache)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["off", "False", "on", "True"], out.stdout + out.stderr


ISOLATED_SUBINTERPRETER = SUBINTERPRETERS.replace("{", "{{").replace("}", "}}") + """
sid = create("isolated")
run(sid, '''
import sys
sys.path.insert(0, {d!r})
try:
    import ctypes  # what jitload reaches its loader with in a subinterpreter
    print("ctypes", True)
except ImportError:
    print("ctypes", False)
for name in ({single!r}, {multi!r}, {pergil!r}):
    try:
        __import__(name)
        print("loaded")
    except ImportError as e:
        print("refused" if "subinterpreter" in str(e) or "interpreter" in str(e) else repr(e))
''')
"""


@pytest.mark.skipif(sys.version_info < (3, 12), reason="isolated subinterpreters (own GIL) are new in 3.12")
def test_isolated_subinterpreters_follow_cpythons_rules(modules_dir):
    """An isolated subinterpreter (own GIL) takes only multi-phase modules that declare
    Py_MOD_PER_INTERPRETER_GIL_SUPPORTED, as for .so modules; where ctypes does not load in
    one (3.12), jitload cannot load any and says so."""
    single, multi, pergil = unique("isosingle"), unique("isomulti"), unique("isopergil")
    build(modules_dir, single, single_phase(single, ADD_METHOD, method_table=ADD_ENTRY))
    build(modules_dir, multi, MULTI_PHASE.replace("NAME", multi).replace("CREATE_SLOT", ""))
    per_gil = "{Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},"
    build(modules_dir, pergil, MULTI_PHASE.replace("NAME", pergil).replace("CREATE_SLOT", per_gil))
    out = run_python(ISOLATED_SUBINTERPRETER.format(d=str(modules_dir), single=single, multi=multi, pergil=pergil))
    assert out.returncode == 0, out.stderr
    words = out.stdout.split()
    assert words[:1] == ["ctypes"] and len(words) == 5, out.stdout + out.stderr
    has_ctypes = words[1] == "True"
    assert words[2:] == ["refused", "refused", "loaded" if has_ctypes else "refused"], out.stdout + out.stderr


def test_concurrent_imports_from_threads(modules_dir):
    """Eight threads import eight different bitcode modules at once (compiles run with the GIL
    released, each in its own forked compiler process): every result is right, none hangs."""
    import threading

    names = [unique("threaded") for _ in range(8)]
    for i, name in enumerate(names):
        body = f"static PyObject *ident(PyObject *s, PyObject *a) {{ return PyLong_FromLong({i}); }}"
        build(modules_dir, name, single_phase(name, body, method_table='{"ident", ident, METH_NOARGS, NULL},'))
    results: dict = {}
    errors: list = []

    def work(i: int, name: str) -> None:
        try:
            results[i] = importlib.import_module(name).ident()
        except BaseException as e:  # reported below, not swallowed
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, n)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "an import hung"
    assert not errors, errors
    assert results == {i: i for i in range(8)}


def test_startup_hook_is_light(tmp_path):
    """jitload.pth runs in every interpreter of the environment: it installs the hook without
    importing the jitload package, LLVM (jitload._native), ctypes, typing or dataclasses.
    (A script: with `-c`, CPython 3.13+ imports linecache through sys.path's '' entry, a new
    directory, which loads _jitload_finder as any first import from a new directory does.)"""
    names = "('_jitload_hook', '_jitload_finder', 'jitload', 'jitload._native', 'jitload._fastload', 'ctypes', 'typing', 'dataclasses')"
    script = tmp_path / "startup.py"
    script.write_text(f"import sys; print(sorted(m for m in {names} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "['_jitload_hook']", out.stdout + out.stderr


def test_the_startup_hook_and_install_agree(tmp_path):
    """The start-up hook finds bitcode modules by itself, jitload.install() replaces it with
    the same suffixes, and uninstall() gives back the interpreter's own hook."""
    code = """
import sys, importlib.machinery as m
start = [h for h in sys.path_hooks if getattr(h, "_jitload", False)]
import jitload
jitload.install()
after = [h for h in sys.path_hooks if getattr(h, "_jitload", False)]
jitload.uninstall()
restored = [h.__name__ for h in sys.path_hooks if not getattr(h, "_jitload", False)]
print(len(start), len(after), start[0] is not after[0], jitload.is_installed(), "path_hook_for_FileFinder" in restored)
"""
    out = run_python(code)
    assert out.stdout.split() == ["1", "1", "True", "False", "True"], out.stdout + out.stderr


def test_bitcode_package_init_wins_over_python_init(modules_dir):
    """A package whose `__init__` is bitcode (beside an `__init__.py`, as compiled packages
    ship) in a directory holding no other bitcode: the bitcode `__init__` is found first, as a
    `.so` one would be, and the package's submodules import."""
    pkg = unique("bcpkg")
    (modules_dir / pkg).mkdir()
    (modules_dir / pkg / "__init__.py").write_text("which = 'py'\n")
    (modules_dir / pkg / "sub.py").write_text("value = 7\n")
    init = build(modules_dir / pkg, "__init__", single_phase(pkg, ADD_METHOD, method_table=ADD_ENTRY))
    assert not [p for p in modules_dir.iterdir() if p.suffix in (".bc", ".ll")]
    mod = importlib.import_module(pkg)
    assert mod.__file__ == str(init) and mod.add(2, 3) == 5
    assert importlib.import_module(f"{pkg}.sub").value == 7
    assert sys.path_importer_cache[str(modules_dir)].find_spec.__func__.__name__ == "_find_spec"


def test_bitcode_file_added_after_the_directory_was_listed(modules_dir):
    """The finder decides from its directory listing; a bitcode file that appears later is
    found once the directory's mtime changes (FileFinder lists it again), without
    invalidate_caches()."""
    first, late = unique("listed"), unique("late")
    (modules_dir / f"{first}.py").write_text("x = 1\n")
    assert importlib.import_module(first).x == 1  # the directory is listed now, without bitcode
    build(modules_dir, late, single_phase(late, ADD_METHOD, method_table=ADD_ENTRY))
    later = modules_dir.stat().st_mtime + 10
    import os

    os.utime(modules_dir, (later, later))
    assert importlib.import_module(late).add(1, 1) == 2


def test_ordinary_lookups_skip_the_bitcode_suffixes(modules_dir):
    """Installing jitload must not slow ordinary imports: FileFinder's own lookup tries only
    the interpreter's suffixes (bitcode ones are looked up in the listing first), and a name
    with a bitcode file is still found, beside a `.py` of the same name."""
    plain, jit = unique("plainmod"), unique("jitmod")
    (modules_dir / f"{plain}.py").write_text("x = 1\n")
    importlib.import_module(plain)
    finder = sys.path_importer_cache[str(modules_dir)]
    assert {suffix for suffix, _ in finder._loaders} == set(importlib.machinery.all_suffixes())
    assert set(jitload.BITCODE_SUFFIXES) <= {suffix for suffix, _ in finder._all_loaders}
    build(modules_dir, jit, single_phase(jit, ADD_METHOD, method_table=ADD_ENTRY))
    (modules_dir / f"{jit}.py").write_text("raise ImportError('the .py beside the bitcode was imported')\n")
    importlib.invalidate_caches()
    assert importlib.import_module(jit).add(2, 2) == 4


def test_finders_are_adopted_when_new_directories_are_imported_from(tmp_path):
    """At start-up the hook only gives the existing finders every suffix; its second call (here:
    the current directory, then the json package's) loads _jitload_finder and adopts them all.
    A script whose own directory holds a bitcode module finds it at the hook's first call."""
    code = """
import os, sys
stdlib = os.path.dirname(os.__file__)  # (modules the interpreter loaded before site ran)
before = hasattr(sys.path_importer_cache[stdlib], "_all_loaders")
import json
after = hasattr(sys.path_importer_cache[stdlib], "_all_loaders")
print(before, after, "_jitload_finder" in sys.modules)
"""
    # A script, not `-c` (see test_startup_hook_is_light): its directory is new to the import system too.
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "probe.py").write_text(code)
    out = subprocess.run([sys.executable, str(tmp_path / "probe" / "probe.py")], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "True", "True"], out.stdout + out.stderr
    name = unique("scriptdir")
    build(tmp_path, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY))
    script = tmp_path / "main.py"
    script.write_text(f"import {name}\nprint({name}.add(20, 22))\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "42", run.stdout + run.stderr


def test_another_librarys_filefinder_subclass_is_kept(modules_dir, tmp_path, monkeypatch):
    """jitload.install() gives every suffix to a FileFinder subclass another library put in
    the path importer cache, without replacing it (an adopted copy would lose what it adds)."""

    class TracingFinder(importlib.machinery.FileFinder):
        looked_up: list = []

        def find_spec(self, fullname, target=None):
            self.looked_up.append(fullname)
            return super().find_spec(fullname, target)

    other = tmp_path / "other"
    other.mkdir()
    name = unique("subclassed")
    build(other, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY))
    mine = TracingFinder(str(other), (importlib.machinery.SourceFileLoader, [".py"]))
    monkeypatch.syspath_prepend(str(other))
    monkeypatch.setitem(sys.path_importer_cache, str(other), mine)
    jitload.install()
    assert sys.path_importer_cache[str(other)] is mine
    assert importlib.import_module(name).add(3, 4) == 7
    assert name in TracingFinder.looked_up


RACE_AT_ADOPTION = """
import sys, threading, importlib
sys.path.insert(0, {d!r})
names = {names!r}
barrier = threading.Barrier(len(names) + 2)
results, errors = {{}}, []

def bitcode(name):
    barrier.wait()
    try:
        results[name] = importlib.import_module(name).add(1, 2)
    except BaseException as e:
        errors.append(repr(e))

def stdlib(module):
    barrier.wait()
    try:
        importlib.import_module(module)
    except BaseException as e:
        errors.append(repr(e))

threads = [threading.Thread(target=bitcode, args=(n,)) for n in names]
threads += [threading.Thread(target=stdlib, args=(m,)) for m in ("email.mime.text", "xml.etree.ElementTree")]
for t in threads: t.start()
for t in threads: t.join(60)
assert not errors, errors
assert results == {{n: 3 for n in names}}, results
print("ok", "_jitload_finder" in sys.modules)
"""


def test_imports_race_the_first_adoption(tmp_path):
    """Threads import bitcode modules from a new directory and stdlib packages at once, in a
    fresh process: the hook's first calls (the second loads _jitload_finder and adopts the
    finders made at start-up) happen under concurrent lookups, which must all still find their
    module."""
    names = [unique("race") for _ in range(6)]
    for name in names:
        build(tmp_path, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY))
    for attempt in range(5):
        out = run_python(RACE_AT_ADOPTION.format(d=str(tmp_path), names=names), env={"JITLOAD_CACHE_DIR": str(tmp_path / "cache")})
        assert out.stdout.strip() == "ok True", (attempt, out.stdout, out.stderr)
