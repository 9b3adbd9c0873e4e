"""Build tools: `jitload compile` and `jitload build-ext` (in place and as a wheel)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import jitload
from conftest import BC_SUFFIX, run_python

FIXTURE = Path(__file__).parent / "fixtures" / "demo_project"
CHECK = "import demopkg, demopkg._speed as s, zlib; print(s.__file__.endswith('.bc'), demopkg.scaled_norm(3, 4), demopkg.checksum(b'abc') == zlib.adler32(b'abc'))"


def test_compile_cli_links_sources_and_records_libraries(tmp_path):
    a = tmp_path / "a.c"
    b = tmp_path / "b.c"
    a.write_text("#include <Python.h>\nint twice(int);\nstatic PyObject *f(PyObject *s, PyObject *x) { return PyLong_FromLong(twice(PyLong_AsLong(x))); }\n"
                 "static PyMethodDef m[] = {{\"f\", f, METH_O, 0}, {0}};\nstatic struct PyModuleDef d = {PyModuleDef_HEAD_INIT, \"twomod\", 0, -1, m};\n"
                 "PyMODINIT_FUNC PyInit_twomod(void) { return PyModule_Create(&d); }\n")
    b.write_text("int twice(int x) { return 2 * x; }\n")
    out = tmp_path / f"twomod{BC_SUFFIX}"
    proc = subprocess.run([sys.executable, "-m", "jitload", "compile", str(a), str(b), "-o", str(out), "-l", "z", "-l", "m"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:4] == b"BC\xc0\xde"
    assert jitload.dependent_libraries(str(out)) == ["libz.so.1", "libm.so.6"]
    res = run_python("import twomod; print(twomod.f(21))", cwd=tmp_path)
    assert res.stdout.strip() == "42", res.stderr


def test_compile_cli_reports_compiler_errors(tmp_path):
    bad = tmp_path / "bad.c"
    bad.write_text("int f( { return 1; }\n")
    proc = subprocess.run([sys.executable, "-m", "jitload", "compile", str(bad), "-o", str(tmp_path / "x.bc")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "compiling" in proc.stderr and "bad.c:1" in proc.stderr


def test_build_ext_inplace(tmp_path):
    project = tmp_path / "proj"
    shutil.copytree(FIXTURE, project)
    proc = subprocess.run([sys.executable, "-m", "jitload", "build-ext", str(project), "--inplace"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    built = list((project / "demopkg").glob("_speed*"))
    assert [p.name for p in built] == [f"_speed{BC_SUFFIX}"]
    assert jitload.dependent_libraries(str(built[0])) == ["libz.so.1", "libm.so.6"]
    res = run_python(CHECK, cwd=project)
    assert res.stdout.split() == ["True", "15.0", "True"], res.stderr


def test_build_ext_wheel_installs_and_imports(tmp_path):
    project = tmp_path / "proj"
    shutil.copytree(FIXTURE, project)
    wheels = tmp_path / "wheels"
    proc = subprocess.run([sys.executable, "-m", "jitload", "build-ext", str(project), "--wheel", str(wheels), "--no-build-isolation"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"demopkg/_speed{BC_SUFFIX}" in names and not any(n.endswith(".so") for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    res = run_python(CHECK, cwd=target)
    assert res.stdout.split() == ["True", "15.0", "True"], res.stderr


def test_build_ext_rejects_native_objects(tmp_path):
    from jitload import _toolchain

    obj = tmp_path / "native.o"
    src = tmp_path / "n.c"
    src.write_text("int n(void) { return 1; }\n")
    subprocess.run([jitload._clang.find(), "-c", str(src), "-o", str(obj)], check=True)
    rc = _toolchain.link_main(["-shared", str(obj), "-o", str(tmp_path / "out.so")])
    assert rc == 1
