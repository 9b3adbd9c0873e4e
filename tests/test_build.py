"""Build tools: `jitload compile` and `jitload build-ext` (in place and as a wheel)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
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


@pytest.mark.parametrize("flags", [[], ["--no-build-isolation"]], ids=["isolated", "no-isolation"])
def test_build_ext_wheel_installs_and_imports(tmp_path, flags):
    project = tmp_path / "proj"
    shutil.copytree(FIXTURE, project)
    wheels = tmp_path / "wheels"
    # The default: pip's isolated build environment, which has no jitload in it.
    proc = subprocess.run([sys.executable, "-m", "jitload", "build-ext", str(project), "--wheel", str(wheels), *flags],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"demopkg/_speed{BC_SUFFIX}" in names and not any(n.endswith(".so") for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    res = run_python(CHECK, cwd=target)
    assert res.stdout.split() == ["True", "15.0", "True"], res.stderr


def test_link_rejects_inputs_that_are_neither_bitcode_nor_objects(tmp_path):
    from jitload import _toolchain

    exe = tmp_path / "prog"
    src = tmp_path / "n.c"
    src.write_text("int main(void) { return 0; }\n")
    subprocess.run([jitload._clang.find(), str(src), "-o", str(exe)], check=True)
    rc = _toolchain.link_main(["-shared", str(exe), "-o", str(tmp_path / "out.so")])
    assert rc == 1 and not (tmp_path / "out.so").exists()


ASM_FIXTURE = Path(__file__).parent / "fixtures" / "asm_project"
ASM_CHECK = """
import json, sys, jitload, asmpkg._asm as m
print(json.dumps([m.__file__.endswith('.bc'), m.scale(6), m.MULTIPLIER, jitload.cache_stats()["without_llvm"], "jitload._native" in sys.modules]))
"""


def _asm_import(cwd: Path, cache: Path, fastload: str = "1") -> list:
    res = run_python(ASM_CHECK, cwd=cwd, env={"JITLOAD_CACHE_DIR": str(cache), "JITLOAD_FASTLOAD": fastload})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_assembly_object_travels_in_the_bitcode_and_both_loaders_link_it(tmp_path):
    """An assembly object linked into a module is carried inside the .bc and linked by the
    engine (cold and from the cache) and by the warm path; the cache key covers it."""
    from jitload import _toolchain

    pkg = tmp_path / "asmpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    cc = [sys.executable, "-m", "jitload._toolchain", "cc", "-c", f"-I{sysconfig.get_paths()['include']}"]

    def link(multiplier: int) -> None:
        for src in ("asmmod.c", "scale.S"):
            subprocess.run([*cc, f"-DMULTIPLIER={multiplier}", str(ASM_FIXTURE / "src" / src), "-o", str(tmp_path / f"{src}.o")], check=True)
        # As meson links: the compiler driver with its arguments in a response file.
        rsp = tmp_path / "link.rsp"
        rsp.write_text(f'-shared "{tmp_path / "asmmod.c.o"}" {tmp_path / "scale.S.o"} -o {pkg / f"_asm{BC_SUFFIX}"}\n')
        assert _toolchain.main(["c++", f"@{rsp}"]) == 0

    link(3)
    cache = tmp_path / "cache"
    assert _asm_import(tmp_path, cache) == [True, 1018, 3, 0, True]  # compiled by the engine
    assert _asm_import(tmp_path, cache) == [True, 1018, 3, 1, False]  # warm path, no LLVM
    assert _asm_import(tmp_path, cache, fastload="0") == [True, 1018, 3, 0, True]  # engine, cached
    link(5)  # only the assembly's constant and the C constant change
    assert _asm_import(tmp_path, cache) == [True, 1030, 5, 0, True]


def test_link_assembles_assembly_sources_it_is_given(tmp_path):
    """numpy's meson build hands its .s files to the link itself, as a compiler driver takes them."""
    from jitload import _toolchain

    (tmp_path / "m.c").write_text(
        "#include <Python.h>\nlong asm_answer(void);\n"
        "static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, \"asmlink\", 0, -1, 0};\n"
        "PyMODINIT_FUNC PyInit_asmlink(void) { PyObject *m = PyModule_Create(&d);\n"
        "  if (m) PyModule_AddIntConstant(m, \"answer\", asm_answer()); return m; }\n"
    )
    (tmp_path / "answer.s").write_text(".text\n.globl asm_answer\nasm_answer:\n  movl $42, %eax\n  ret\n.section .note.GNU-stack,\"\",@progbits\n")
    cc = [sys.executable, "-m", "jitload._toolchain", "cc", "-c", f"-I{sysconfig.get_paths()['include']}"]
    subprocess.run([*cc, str(tmp_path / "m.c"), "-o", str(tmp_path / "m.o")], check=True)
    out = tmp_path / f"asmlink{BC_SUFFIX}"
    assert _toolchain.link_main(["-shared", str(tmp_path / "m.o"), str(tmp_path / "answer.s"), "-o", str(out)]) == 0
    res = run_python("import asmlink; print(asmlink.__file__.endswith('.bc'), asmlink.answer)", cwd=tmp_path)
    assert res.stdout.split() == ["True", "42"], res.stderr


def test_build_ext_wheel_isolated_with_assembly_and_a_config_setting(tmp_path):
    """`build-ext --wheel` with pip's build isolation on a project with a `.S` source and an
    in-tree backend that turns `-C multiplier=N` into a macro of the C and assembly code."""
    project = tmp_path / "proj"
    shutil.copytree(ASM_FIXTURE, project)
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "jitload", "build-ext", str(project), "--wheel", str(wheels), "-C", "multiplier=7"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"asmpkg/_asm{BC_SUFFIX}" in names and not any(n.endswith((".so", ".o")) for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    assert _asm_import(target, tmp_path / "cache") == [True, 6 * 7 + 1000, 7, 0, True]


def test_build_ext_rejects_a_config_setting_without_a_value(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jitload", "build-ext", str(FIXTURE), "--wheel", str(tmp_path), "-C", "novalue"],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "'novalue' is not KEY=VALUE" in proc.stderr


@pytest.mark.parametrize(
    "fixture, module, setting",
    [
        ("meson_project", "mesonpkg._meson", "setup-args=-Doffset=5"),  # meson-python
        ("cmake_project", "cmakepkg._cmake", "cmake.define.OFFSET=5"),  # scikit-build-core + CMake
    ],
)
def test_build_ext_wheel_meson_and_cmake_projects(tmp_path, fixture, module, setting):
    """meson and CMake take the stand-ins for clang (their compiler checks, `ar`, C, C++ and
    assembly sources, a static library) inside pip's isolated build environment; the backend
    gets its -C setting."""
    project = tmp_path / "proj"
    shutil.copytree(Path(__file__).parent / "fixtures" / fixture, project)
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "jitload", "build-ext", str(project), "--wheel", str(wheels), "-C", setting],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (wheel,) = wheels.glob("*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    res = run_python(f"import {module} as m; print(m.__file__.endswith('.bc'), m.total(4), m.COMPILER_ID.lower())", cwd=target)
    # 4*4 + (1+2+3+4) + 3*4 + 5
    assert res.stdout.split() == ["True", "43", "clang"], res.stderr


def test_a_carried_native_object_that_is_not_an_object_is_an_import_error(tmp_path):
    (tmp_path / "junkobj.ll").write_text(
        "define ptr @PyInit_junkobj() {\n  ret ptr null\n}\n"
        '!jitload.native_objects = !{!0, !1}\n!0 = !{!"junk.o", !"not an object"}\n!1 = !{!"half"}\n'
    )
    res = run_python(
        "import jitload\ntry:\n    import junkobj\nexcept ImportError as e:\n    print(type(e).__name__, '|', e)\n",
        cwd=tmp_path, env={"JITLOAD_CACHE": "0"},
    )
    assert res.returncode == 0, res.stderr
    assert "junkobj.ll" in res.stdout and "native object junk.o" in res.stdout, res.stdout


@pytest.mark.parametrize("flags", [[], ["-O0"], ["-O3"]], ids=["no-O", "O0", "O3"])
def test_standin_compiles_stay_optimisable(tmp_path, flags):
    """A compile without -O (pip's setuptools can drop Python's -O3) or with -O0 would mark
    every function `optnone`, which the JIT must obey: the stand-in's bitcode never has it."""
    from jitload import _native

    src = tmp_path / "t.c"
    src.write_text("int triple(int x) { return x * 3; }\n")
    obj = tmp_path / "t.o"
    proc = subprocess.run([sys.executable, "-m", "jitload._toolchain", "cc", *flags, "-c", str(src), "-o", str(obj)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ir, _ = _native.inspect(str(obj))
    assert "define" in ir and "optnone" not in ir


def test_toolchain_env_leaves_cflags_alone():
    """setuptools 84 lets CFLAGS replace Python's own flags (-O3 -fwrapv): never set it."""
    from jitload.build import toolchain_env

    assert "CFLAGS" not in toolchain_env({})
    assert toolchain_env({"CFLAGS": "-DX=1"})["CFLAGS"] == "-DX=1"
