"""Bad input: each case raises an ImportError subclass naming the file and the cause, the
interpreter keeps working, and fixing the file makes the next import succeed."""

from __future__ import annotations

import importlib
import os
import random
import subprocess
import sys

import pytest

import jitload
from jitload import _native as jitload_native
import jitload.build
from bitcode_forge import future_bitcode
from conftest import BC_SUFFIX, build, run_python, single_phase, unique

OK_METHOD = 'static PyObject *ok(PyObject *s, PyObject *a) { return PyUnicode_FromString("ok"); }'
OK_ENTRY = '{"ok", ok, METH_NOARGS, NULL},'


@pytest.fixture
def survivor(modules_dir):
    """A module loaded before the bad input, which must keep working after it."""
    name = unique("survivor")
    build(modules_dir, name, single_phase(name, OK_METHOD, method_table=OK_ENTRY))
    mod = importlib.import_module(name)
    yield mod
    assert mod.ok() == "ok"


def good_module_bytes(tmp_path, name):
    """Valid bitcode for module `name` (used to 'fix' a broken file)."""
    return build(tmp_path, name, single_phase(name, OK_METHOD, method_table=OK_ENTRY)).read_bytes()


def assert_fails_then_recovers(modules_dir, tmp_path, name, content, exc, *patterns, suffix=BC_SUFFIX):
    path = modules_dir / (name + suffix)
    path.write_bytes(content)
    with pytest.raises(exc) as info:
        importlib.import_module(name)
    err = info.value
    assert isinstance(err, ImportError)
    text = str(err)
    assert str(path) in text, text
    for p in patterns:
        assert p in text, f"{p!r} not in {text!r}"
    assert err.name == name and err.path == str(path)
    assert name not in sys.modules
    # Fix the file: the next import works in the same interpreter.
    path.unlink()
    path.with_name(name + BC_SUFFIX).write_bytes(good_module_bytes(tmp_path, name))
    importlib.invalidate_caches()
    assert importlib.import_module(name).ok() == "ok"
    return err


def test_empty_file(modules_dir, tmp_path, survivor):
    assert_fails_then_recovers(modules_dir, tmp_path, unique("empty"), b"", jitload.BitcodeError, "empty")


def test_random_bytes(modules_dir, tmp_path, survivor):
    rng = random.Random(1234)
    junk = bytes(rng.randrange(256) for _ in range(4096))
    assert_fails_then_recovers(modules_dir, tmp_path, unique("junk"), junk, jitload.BitcodeError, "not LLVM bitcode", "starts with bytes")


def test_elf_file_named_bc(modules_dir, tmp_path, survivor):
    from pathlib import Path

    elf = Path(sys.executable).resolve().read_bytes()[:8192]
    assert_fails_then_recovers(modules_dir, tmp_path, unique("elf"), elf, jitload.BitcodeError, "ELF")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_bitcode(modules_dir, tmp_path, survivor, keep):
    name = unique("trunc")
    data = good_module_bytes(tmp_path, name)
    cut = data[: max(8, int(len(data) * keep))]
    assert_fails_then_recovers(modules_dir, tmp_path, name, cut, jitload.BitcodeError, "unreadable LLVM bitcode")


def test_bitcode_from_a_newer_llvm(modules_dir, tmp_path, survivor):
    err = assert_fails_then_recovers(
        modules_dir, tmp_path, unique("future"), future_bitcode("LLVM99.0.0"), jitload.BitcodeError, "LLVM99.0.0", "rebuild it with clang 22"
    )
    assert jitload.llvm_version() in str(err)


def test_ir_syntax_error_reports_line_and_column(modules_dir, tmp_path, survivor):
    name = unique("syntax")
    ll = b"; ModuleID = 'x'\ndefine i32 @f(i32 %a) {\n  %b = add i32 %a,\n  ret i32 %b\n}\n"
    path = modules_dir / f"{name}.ll"
    path.write_bytes(ll)
    with pytest.warns(jitload.AbiWarning), pytest.raises(jitload.BitcodeError, match=rf"{name}\.ll:4:3: error") as info:
        importlib.import_module(name)  # a plain .ll without an ABI record: loaded on trust
    assert info.value.path == str(path)
    path.unlink()
    (modules_dir / (name + BC_SUFFIX)).write_bytes(good_module_bytes(tmp_path, name))
    importlib.invalidate_caches()
    assert importlib.import_module(name).ok() == "ok"


def test_module_failing_the_verifier(modules_dir, tmp_path, survivor):
    name = unique("unverified")
    # Parses fine, but %x does not dominate its use: only the verifier catches it.
    ll = (
        f"define ptr @PyInit_{name}(i1 %c) {{\nentry:\n  br i1 %c, label %a, label %b\n"
        "a:\n  %x = getelementptr i8, ptr null, i64 1\n  br label %b\nb:\n  ret ptr %x\n}\n"
    )
    path = modules_dir / f"{name}.ll"
    path.write_text(ll)
    with pytest.warns(jitload.AbiWarning), pytest.raises(jitload.BitcodeError) as info:
        importlib.import_module(name)
    text = str(info.value)
    assert "verifier" in text and "does not dominate all uses" in text, text
    assert str(path) in text


def test_wrong_target_triple(modules_dir, tmp_path, survivor):
    name = unique("aarch64")
    src = tmp_path / "a.c"
    src.write_text(f"void *PyInit_{name}(void) {{ return 0; }}\n")
    bc = tmp_path / "a.bc"
    subprocess.run([jitload._clang.find(), "--target=aarch64-unknown-linux-gnu", "-c", "-emit-llvm", str(src), "-o", str(bc)], check=True)
    assert_fails_then_recovers(modules_dir, tmp_path, name, bc.read_bytes(), jitload.BitcodeError, "aarch64", "this machine is")


def test_missing_pyinit_lists_the_ones_present(modules_dir, tmp_path, survivor):
    name = unique("noinit")
    other = single_phase("something_else", OK_METHOD, method_table=OK_ENTRY)
    content = build(tmp_path, "something_else", other).read_bytes()
    err = assert_fails_then_recovers(modules_dir, tmp_path, name, content, jitload.LinkError, f"PyInit_{name}", "PyInit_something_else")
    assert "no function" in str(err)


def test_unresolved_symbols_are_all_listed(modules_dir, tmp_path, survivor):
    name = unique("unresolved")
    body = """
int jitload_missing_alpha(void); int jitload_missing_beta(int); extern int jitload_missing_gamma;
static PyObject *f(PyObject *s, PyObject *a) { return PyLong_FromLong(jitload_missing_alpha() + jitload_missing_beta(2) + jitload_missing_gamma); }
"""
    content = build(tmp_path, name, single_phase(name, body, method_table='{"f", f, METH_NOARGS, NULL},')).read_bytes()
    err = assert_fails_then_recovers(
        modules_dir, tmp_path, name, content, jitload.LinkError, "3 undefined symbols", "jitload_missing_alpha", "jitload_missing_beta", "jitload_missing_gamma"
    )
    assert "load_library" in str(err)


def test_missing_dependent_library(modules_dir, tmp_path, survivor):
    name = unique("nolib")
    src = tmp_path / "m.c"
    src.write_text(single_phase(name, OK_METHOD, method_table=OK_ENTRY))
    bc = tmp_path / "m.bc"
    jitload.build.compile([str(src)], str(bc))
    linked = tmp_path / "linked.bc"
    jitload_native.link_bitcode([str(bc)], str(linked), ["libjitload-does-not-exist.so.7"])
    assert_fails_then_recovers(modules_dir, tmp_path, name, linked.read_bytes(), jitload.LinkError, "libjitload-does-not-exist.so.7")


def test_pyinit_raising_is_chained(modules_dir, tmp_path, survivor):
    name = unique("raises")
    src = f"""
#include <Python.h>
PyMODINIT_FUNC PyInit_{name}(void) {{ PyErr_SetString(PyExc_ValueError, "init refused: no config"); return NULL; }}
"""
    content = build(tmp_path, name, src).read_bytes()
    err = assert_fails_then_recovers(modules_dir, tmp_path, name, content, jitload.InitError, "ValueError", "init refused")
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "init refused: no config"


def test_pyinit_null_without_exception_is_a_system_error(modules_dir, tmp_path, survivor):
    name = unique("nullinit")
    src = f"#include <Python.h>\nPyMODINIT_FUNC PyInit_{name}(void) {{ return NULL; }}\n"
    content = build(tmp_path, name, src).read_bytes()
    err = assert_fails_then_recovers(modules_dir, tmp_path, name, content, SystemError, "failed without raising an exception")
    assert isinstance(err, jitload.InitSystemError) and isinstance(err, ImportError)


def test_pyinit_returning_a_non_module(modules_dir, tmp_path, survivor):
    name = unique("notmodule")
    src = f"#include <Python.h>\nPyMODINIT_FUNC PyInit_{name}(void) {{ return PyLong_FromLong(7); }}\n"
    content = build(tmp_path, name, src).read_bytes()
    assert_fails_then_recovers(modules_dir, tmp_path, name, content, jitload.InitSystemError, "did not return an extension module", "int")


def test_exec_slot_raising_is_chained(modules_dir, tmp_path, survivor):
    name = unique("execfails")
    src = f"""
#include <Python.h>
static int ex(PyObject *m) {{ PyErr_SetString(PyExc_RuntimeError, "exec slot failed"); return -1; }}
static PyModuleDef_Slot slots[] = {{{{Py_mod_exec, ex}}, {{0, NULL}}}};
static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{name}", NULL, 0, NULL, slots}};
PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModuleDef_Init(&def); }}
"""
    content = build(tmp_path, name, src).read_bytes()
    err = assert_fails_then_recovers(modules_dir, tmp_path, name, content, jitload.InitError, "RuntimeError", "exec slot failed")
    assert isinstance(err.__cause__, RuntimeError)


def test_bad_inputs_never_kill_the_interpreter(tmp_path):
    """Every bad case again, in one fresh interpreter: it must reach the end and exit 0."""
    d = tmp_path / "mods"
    d.mkdir()
    good = unique("good")
    build(d, good, single_phase(good, OK_METHOD, method_table=OK_ENTRY))
    (d / ("e" + BC_SUFFIX)).write_bytes(b"")
    (d / ("r" + BC_SUFFIX)).write_bytes(os.urandom(3000))
    (d / ("t" + BC_SUFFIX)).write_bytes((d / (good + BC_SUFFIX)).read_bytes()[:200])
    (d / ("f" + BC_SUFFIX)).write_bytes(future_bitcode())
    (d / "s.ll").write_text("define i32 @f( {")
    code = f"""
import importlib, {good}
for name in ["e", "r", "t", "f", "s"]:
    try:
        importlib.import_module(name)
    except ImportError as e:
        print(name, type(e).__name__)
print({good}.ok())
"""
    out = run_python(code, cwd=d)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["e", "BitcodeError", "r", "BitcodeError", "t", "BitcodeError", "f", "BitcodeError", "s", "BitcodeError", "ok"]


def test_load_library_errors(tmp_path):
    with pytest.raises(jitload.LibraryError, match="jitload-no-such-lib"):
        jitload.load_library("jitload-no-such-lib")
    bogus = tmp_path / "libbogus.so"
    bogus.write_bytes(b"not an elf")
    with pytest.raises(jitload.LibraryError, match="libbogus.so"):
        jitload.load_library(str(bogus))
