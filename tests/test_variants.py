"""x86-64 level variants: the build tools compile each translation unit for the baseline and
higher levels, the module carries them, the loader picks the highest the host supports (or
`JITLOAD_X86_LEVEL` allows), cold through the engine and warm from the cache alike."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BC_SUFFIX, run_python

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 levels")

# Which level the preprocessor saw when this unit was compiled.
LEVEL_C = """
#include <Python.h>
int other_level(void);
static int own_level(void) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    return 4;
#elif defined(__AVX2__) && defined(__BMI2__) && defined(__FMA__)
    return 3;
#elif defined(__SSE4_2__) && defined(__POPCNT__)
    return 2;
#else
    return 1;
#endif
}
static PyObject *level(PyObject *self, PyObject *unused) { return PyLong_FromLong(own_level()); }
static PyObject *other(PyObject *self, PyObject *unused) { return PyLong_FromLong(other_level()); }
static PyMethodDef methods[] = {{"level", level, METH_NOARGS, 0}, {"other", other, METH_NOARGS, 0}, {0}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "lvlmod", 0, -1, methods};
PyMODINIT_FUNC PyInit_lvlmod(void) { return PyModule_Create(&def); }
"""

# A second unit; with `refuse` it does not compile with AVX2 (as code written for one level).
OTHER_C = """
#if defined(REFUSE_AVX2) && defined(__AVX2__)
#error "not for AVX2"
#endif
int other_level(void) {
#if defined(__AVX2__)
    return 3;
#else
    return 1;
#endif
}
"""

LEVELS = {"baseline": 1, "v2": 2, "v3": 3, "v4": 4}


def host_level() -> int:
    """The host's x86-64 level from the kernel's CPU flags (independent of LLVM's detection)."""
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    needs = [
        {"cx16", "popcnt", "lahf_lm", "pni", "sse4_1", "sse4_2", "ssse3"},
        {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"},
        {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"},
    ]
    level = 1
    for added in needs:
        if not added <= flags:
            break
        level += 1
    return level


def build(directory: Path, levels: str, refuse_avx2: bool = False) -> subprocess.CompletedProcess:
    (directory / "lvl.c").write_text(LEVEL_C)
    (directory / "other.c").write_text(OTHER_C)
    cmd = [sys.executable, "-m", "jitload", "compile", "lvl.c", "other.c", "-o", f"lvlmod{BC_SUFFIX}"]
    if refuse_avx2:
        cmd += ["-D", "REFUSE_AVX2"]
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, env={**os.environ, "JITLOAD_BUILD_LEVELS": levels})
    assert proc.returncode == 0, proc.stderr
    return proc


def load(directory: Path, setting: str, cache: Path) -> tuple[int, int, bool]:
    """(level(), other(), loaded warm) in a fresh interpreter."""
    code = "import sys, lvlmod; print(lvlmod.level(), lvlmod.other(), 'jitload._native' not in sys.modules)"
    env = {"JITLOAD_X86_LEVEL": setting, "JITLOAD_CACHE_DIR": str(cache)}
    res = run_python(code, cwd=directory, env=env)
    assert res.returncode == 0, res.stderr
    level, other, warm = res.stdout.split()
    return int(level), int(other), warm == "True"


def test_the_loader_picks_the_highest_level_allowed(tmp_path):
    build(tmp_path, "all")
    data = (tmp_path / f"lvlmod{BC_SUFFIX}").read_bytes()
    for name in (b"x86-64-v2", b"x86-64-v3", b"x86-64-v4"):
        assert name in data
    host = host_level()
    cache = tmp_path / "cache"
    for setting, cap in [("auto", 4), *LEVELS.items()]:
        expected = min(cap, host)
        # Cold (compiled by the engine), then warm (the cache, without LLVM): the level is
        # part of the cache key, so each setting gets its own objects.
        cold = load(tmp_path, setting, cache)
        warm = load(tmp_path, setting, cache)
        assert cold == (expected, 3 if expected >= 3 else 1, False), setting
        assert warm == (expected, cold[1], True), setting


def test_by_default_the_build_adds_v3_only(tmp_path):
    build(tmp_path, "v3")
    data = (tmp_path / f"lvlmod{BC_SUFFIX}").read_bytes()
    assert b"x86-64-v3" in data and b"x86-64-v4" not in data and b"x86-64-v2" not in data
    expected = 3 if host_level() >= 3 else 1
    assert load(tmp_path, "auto", tmp_path / "cache")[0] == expected
    assert load(tmp_path, "baseline", tmp_path / "cache")[0] == 1


def test_a_module_without_variants_loads_its_baseline(tmp_path):
    build(tmp_path, "none")
    assert b"jitload.variants" not in (tmp_path / f"lvlmod{BC_SUFFIX}").read_bytes()
    for setting in ("auto", "v4"):
        assert load(tmp_path, setting, tmp_path / "cache")[:2] == (1, 1)


def test_a_unit_that_fails_at_a_level_serves_its_baseline_there(tmp_path):
    """`other.c` refuses AVX2: the build says so, and the v3 module links lvl.c's v3 code with
    other.c's baseline code."""
    proc = build(tmp_path, "v3", refuse_avx2=True)
    assert "x86-64-v3 variant did not compile" in proc.stderr and "not for AVX2" in proc.stderr
    if host_level() >= 3:
        assert load(tmp_path, "auto", tmp_path / "cache")[:2] == (3, 1)


def test_a_corrupt_variant_is_an_import_error_naming_file_and_level(tmp_path):
    import jitload._native as native

    build(tmp_path, "none")
    module = tmp_path / f"lvlmod{BC_SUFFIX}"
    garbage = tmp_path / "garbage.bc"
    garbage.write_bytes(b"BC\xc0\xde" + bytes(range(256)) * 4)
    native.embed_variants(str(module), [("x86-64-v2", str(garbage))])
    code = "try:\n    import lvlmod\nexcept ImportError as e:\n    print(type(e).__name__, e)"
    res = run_python(code, cwd=tmp_path, env={"JITLOAD_CACHE": "0"})
    assert res.returncode == 0, res.stderr
    message = res.stdout.strip()
    assert str(module) in message and "x86-64-v2 variant" in message and "JITLOAD_X86_LEVEL=baseline" in message, message
    res = run_python("import lvlmod; print(lvlmod.level())", cwd=tmp_path, env={"JITLOAD_CACHE": "0", "JITLOAD_X86_LEVEL": "baseline"})
    assert res.stdout.strip() == "1", res.stderr


def test_a_variant_compile_writes_no_dependency_file_and_no_warnings():
    from jitload._variants import output_of, variant_command, wants_variants

    cmd = ["clang", "-c", "-MD", "-MQ", "x.o", "-MF", "x.o.d", "-MFother.d", "-O2", "x.c", "-o", "x.o"]
    assert wants_variants(cmd) and output_of(cmd) == "x.o"
    assert variant_command(cmd, "x86-64-v3", "v3.bc") == ["clang", "-c", "-O2", "x.c", "-march=x86-64-v3", "-w", "-o", "v3.bc"]
    # The command chose its own CPU or target, or compiles assembly or several files: no variants.
    assert not wants_variants(["clang", "-c", "-march=native", "x.c", "-o", "x.o"])
    assert not wants_variants(["clang", "-c", "x.S", "-o", "x.o"])
    assert not wants_variants(["clang", "-c", "a.c", "b.c"])
