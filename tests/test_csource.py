"""C source import (`jitload.install(c_source=True)` / `JITLOAD_C_SOURCE=1`) and the cached
C-to-bitcode compiler behind it (`jitload.csource`)."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import stat
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import jitload
from jitload import _clang, _settings, config, csource
from jitload.errors import CSourceError, JitloadWarning, ToolchainError
from conftest import BC_SUFFIX, build, run_python, single_phase, unique

BITCODE_MAGIC = b"BC\xc0\xde"


def value_module(name: str, expression: str = "VALUE", prelude: str = "") -> str:
    """A single-phase module `name` whose `value()` returns the C long `expression`."""
    return single_phase(
        name,
        extra=prelude,
        methods_c=f"static PyObject *value(PyObject *s, PyObject *a) {{ return PyLong_FromLong({expression}); }}",
        method_table='{"value", value, METH_NOARGS, NULL},',
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private cache root for the test (`$JITLOAD_CACHE_DIR`); entries go to `<it>/csource`."""
    root = tmp_path / "cache"
    monkeypatch.setattr(config.options, "cache_dir", str(root))
    return root / "csource"


@pytest.fixture
def c_dir(tmp_path, monkeypatch, cache_dir):
    """A directory on sys.path, with the import hook compiling C sources."""
    d = tmp_path / "csrc"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    jitload.install(c_source=True)
    yield d
    jitload.install(c_source=False)


def forbid_clang(monkeypatch):
    """From now on, fail the test if clang compiles anything (proves a cache hit)."""
    monkeypatch.setattr(csource, "_run_clang", lambda cmd, stdin: pytest.fail(f"clang ran: {cmd}"))


def bitcode_files(cache_dir: Path) -> list:
    return sorted(cache_dir.glob("*.bc"))


def test_import_from_c_source(c_dir, cache_dir):
    name = unique("csrc")
    src = write(c_dir / f"{name}.c", value_module(name, "6 * 7"))
    mod = importlib.import_module(name)
    assert mod.value() == 42
    assert mod.__file__ == str(src) and mod.__spec__.origin == str(src)
    assert type(mod.__loader__).__name__ == "CSourceLoader"
    assert isinstance(mod.__loader__, importlib.machinery.ExtensionFileLoader)
    assert len(bitcode_files(cache_dir)) == 1 and len(list(cache_dir.glob("*.json"))) == 1
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700


def test_second_import_is_a_cache_hit(c_dir, cache_dir, monkeypatch):
    name = unique("hit")
    write(c_dir / f"{name}.c", value_module(name, "1"))
    first = importlib.import_module(name)
    before = bitcode_files(cache_dir)
    forbid_clang(monkeypatch)
    del sys.modules[name]
    second = importlib.import_module(name)
    assert second is not first and second.value() == 1
    assert bitcode_files(cache_dir) == before
    assert csource.build_file(c_dir / f"{name}.c").cache_hit


def test_edit_then_reload_runs_the_new_code(c_dir):
    name = unique("edit")
    src = write(c_dir / f"{name}.c", value_module(name, "1"))
    old = importlib.import_module(name)
    assert old.value() == 1
    write(src, value_module(name, "2"))
    new = importlib.reload(old)
    assert new.value() == 2 and sys.modules[name] is new
    assert old.value() == 1, "the old module keeps running the old code"
    # Unchanged source: the module is kept, as for a .so.
    assert importlib.reload(new) is new and new.value() == 2


MULTI_PHASE = """
#include <Python.h>
typedef struct { long counter; } state_t;
static PyObject *bump(PyObject *m, PyObject *unused) {
    state_t *st = PyModule_GetState(m);
    st->counter += STEP;
    return PyLong_FromLong(st->counter);
}
static PyMethodDef methods[] = {{"bump", bump, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static int exec_slot(PyObject *m) { return PyModule_AddIntConstant(m, "STEP", STEP); }
static PyModuleDef_Slot slots[] = {{Py_mod_exec, exec_slot}, {0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_ext", NULL, sizeof(state_t), methods, slots, NULL, NULL, NULL};
PyMODINIT_FUNC PyInit__ext(void) { return PyModuleDef_Init(&def); }
"""


def test_reload_multi_phase_submodule_of_a_package(c_dir):
    pkg = unique("cpkg")
    (c_dir / pkg).mkdir()
    (c_dir / pkg / "__init__.py").write_text("")
    src = write(c_dir / pkg / "_ext.c", "// jitload: -DSTEP=1\n" + MULTI_PHASE)
    old = importlib.import_module(f"{pkg}._ext")
    assert old.STEP == 1 and old.bump() == 1 and old.__file__ == str(src)
    write(src, "// jitload: -DSTEP=10\n" + MULTI_PHASE)
    new = importlib.reload(old)
    assert new is not old and new.STEP == 10 and new.bump() == 10, "fresh module state, new code"
    assert getattr(sys.modules[pkg], "_ext") is new and sys.modules[f"{pkg}._ext"] is new
    assert old.bump() == 2


def test_reload_without_changes_is_a_cache_hit(c_dir, monkeypatch):
    name = unique("same")
    write(c_dir / f"{name}.c", value_module(name, "5"))
    mod = importlib.import_module(name)
    forbid_clang(monkeypatch)
    assert importlib.reload(mod) is mod and mod.value() == 5


def test_header_edit_is_picked_up(c_dir, cache_dir):
    name = unique("hdr")
    header = write(c_dir / f"{name}_value.h", "#define VALUE 10\n")
    write(c_dir / f"{name}.c", value_module(name, prelude=f'#include "{header.name}"'))
    mod = importlib.import_module(name)
    assert mod.value() == 10
    write(header, "#define VALUE 11\n")
    mod = importlib.reload(mod)
    assert mod.value() == 11
    assert len(bitcode_files(cache_dir)) == 2
    manifest = next(cache_dir.glob("*.json")).read_text()
    assert str(header) in manifest and "Python.h" in manifest


def test_sidecar_and_directive_flags(c_dir):
    name = unique("flags")
    # Directive lines among the leading comments; the sidecar is shell syntax with comments and
    # relative -I paths resolved against the source's directory (here one with a space).
    (c_dir / "inc dir").mkdir()
    write(c_dir / "inc dir" / f"{name}_extra.h", "#define EXTRA 100\n")
    source = "// A module.\n// jitload: -DOTHER=7\n" + value_module(name, "VALUE + OTHER + EXTRA", prelude=f'#include "{name}_extra.h"')
    src = write(c_dir / f"{name}.c", source)
    write(c_dir / f"{name}.c.flags", """
        # flags for the module
        -DVALUE=42   # the answer
        -I 'inc dir'
    """)
    assert csource.file_flags(src) == ["-DOTHER=7", "-DVALUE=42", "-I", str(c_dir / "inc dir")]
    mod = importlib.import_module(name)
    assert mod.value() == 149
    # Editing the sidecar (or a header found through it) is an edit too.
    write(c_dir / f"{name}.c.flags", "-DVALUE=1 -I'inc dir'\n")
    mod = importlib.reload(mod)
    assert mod.value() == 108
    write(c_dir / "inc dir" / f"{name}_extra.h", "#define EXTRA 200\n")
    assert importlib.reload(mod).value() == 208


def test_dash_l_becomes_a_dependent_library(c_dir):
    name = unique("libm")
    src = write(
        c_dir / f"{name}.c",
        value_module(name, "(long)(cbrt((double)VALUE) + 0.5)", prelude="#include <math.h>"),
    )
    write(c_dir / f"{name}.c.flags", "-DVALUE=27 -lm\n")
    mod = importlib.import_module(name)
    assert mod.value() == 3
    compiled = csource.build_file(src)
    assert compiled.cache_hit and compiled.libraries == ["libm.so.6"]
    assert jitload.dependent_libraries(compiled.path) == ["libm.so.6"]


def test_compile_error_names_the_file_and_line(c_dir):
    name = unique("broken")
    src = write(c_dir / f"{name}.c", "#include <Python.h>\n\nint f(void) { return missing_name; }\n")
    with pytest.raises(CSourceError) as info:
        importlib.import_module(name)
    err = info.value
    assert isinstance(err, ImportError) and isinstance(err, ToolchainError)
    assert f"{src}:3:22: error: use of undeclared identifier 'missing_name'" in str(err)
    assert err.path == str(src) and "missing_name" in err.diagnostics
    # Fixing the file fixes the import.
    write(src, value_module(name, "3"))
    assert importlib.import_module(name).value() == 3


def test_link_errors_name_the_c_file(c_dir):
    name = unique("noinit")
    src = write(c_dir / f"{name}.c", "int not_an_init(void) { return 1; }\n")
    with pytest.raises(jitload.LinkError) as info:
        importlib.import_module(name)
    assert str(info.value).startswith(f"{src} (compiled to ")
    assert f"PyInit_{name}" in str(info.value)


def test_bitcode_beside_c_source_wins(c_dir):
    name = unique("both")
    build(c_dir, name, value_module(name, "1"))
    write(c_dir / f"{name}.c", value_module(name, "2"))
    mod = importlib.import_module(name)
    assert mod.value() == 1 and mod.__file__.endswith(BC_SUFFIX)


def test_c_sources_are_ignored_unless_enabled(tmp_path, monkeypatch, cache_dir):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = unique("off")
    write(tmp_path / f"{name}.c", value_module(name, "1"))
    jitload.install()
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(name)
    assert not cache_dir.exists()


def test_environment_variable_and_cache_across_processes(tmp_path, monkeypatch):
    """JITLOAD_C_SOURCE=1 at start-up; a second interpreter finds the bitcode in the cache and
    never asks clang to compile (a logging wrapper stands in for clang)."""
    name = unique("env")
    write(tmp_path / f"{name}.c", value_module(name, "VALUE * 2"))
    write(tmp_path / f"{name}.c.flags", "-DVALUE=21\n")
    log = tmp_path / "clang.log"
    wrapper = tmp_path / "clang-wrapper"
    clang = _clang.find("clang")
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{clang}" "$@"\n')
    wrapper.chmod(0o755)
    env = {"JITLOAD_C_SOURCE": "1", "JITLOAD_CLANG": str(wrapper), "JITLOAD_CACHE_DIR": str(tmp_path / "cache")}
    code = f"import {name}; print({name}.value())"
    for _ in range(2):
        out = run_python(code, cwd=tmp_path, env=env)
        assert out.stdout.strip() == "42", out.stderr
    compiles = [line for line in log.read_text().splitlines() if " -c " in f" {line} "]
    assert len(compiles) == 1, compiles
    # Without the variable, .c files are not modules.
    env["JITLOAD_C_SOURCE"] = "0"
    assert "ModuleNotFoundError" in run_python(code, cwd=tmp_path, env=env).stderr


def test_start_up_stays_light_with_c_source_enabled():
    out = run_python(
        "import sys; print(sorted(m for m in ('jitload.csource', 'jitload._native', 'typing') if m in sys.modules))",
        env={"JITLOAD_C_SOURCE": "1"},
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("problem", ["world-writable", "group-writable", "other-owner"])
def test_unsafe_cache_directory_falls_back_with_one_warning(c_dir, cache_dir, problem):
    if problem == "other-owner" and os.getuid() != 0:
        pytest.skip("needs root to give the directory away")
    cache_dir.mkdir(parents=True)
    if problem == "other-owner":
        os.chown(cache_dir, os.getuid() + 12345, -1)
    else:
        cache_dir.chmod(0o777 if problem == "world-writable" else 0o770)
    name = unique("unsafe")
    src = write(c_dir / f"{name}.c", value_module(name, "9"))
    with pytest.warns(JitloadWarning, match="not caching compiled C sources"):
        mod = importlib.import_module(name)
    assert mod.value() == 9
    assert list(cache_dir.iterdir()) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only one warning per directory
        compiled = csource.build_file(src)
    assert compiled.path is None and not compiled.cache_hit
    assert compiled.bitcode[:4] == BITCODE_MAGIC


def test_compile_source_text(tmp_path, cache_dir, monkeypatch):
    text = "// jitload: -DBASE=40\nlong add(long x) { return x + BASE + EXTRA; }\n"
    first = csource.build_source(text, ["-DEXTRA=2"], name="adder.c")
    assert first.bitcode[:4] == BITCODE_MAGIC and not first.cache_hit
    assert first.path is not None and Path(first.path).parent == cache_dir
    assert csource.compile_source(text, ["-DEXTRA=2"], name="adder.c") == first.bitcode
    assert csource.build_source(text, ["-DEXTRA=2"], name="adder.c").cache_hit
    assert csource.build_source(text, ["-DEXTRA=3"], name="adder.c").key != first.key
    # The bytes are a loadable module: write them out and import them.
    name = unique("text")
    mod_bc = csource.compile_source(value_module(name, "VALUE"), ["-DVALUE=77"], name=f"{name}.c")
    (tmp_path / f"{name}{BC_SUFFIX}").write_bytes(mod_bc)
    monkeypatch.syspath_prepend(str(tmp_path))
    jitload.install()
    assert importlib.import_module(name).value() == 77


def test_compile_source_errors_use_the_given_name():
    with pytest.raises(CSourceError) as info:
        csource.compile_source("int ok;\nint bad = ;\n", name="snippet.c", use_cache=False)
    assert "snippet.c:2:11: error: expected expression" in str(info.value)


def test_compile_file_with_explicit_flags_and_no_cache(tmp_path, cache_dir):
    src = write(tmp_path / "plain.c", "int f(void) { return X; }\n")
    bitcode = csource.compile_file(src, ["-DX=1"], include_python=False, use_cache=False)
    assert bitcode[:4] == BITCODE_MAGIC and not cache_dir.exists()
    explicit = tmp_path / "elsewhere"
    compiled = csource.build_file(src, ["-DX=1"], cache_dir=explicit)
    assert compiled.path is not None and Path(compiled.path).parent == explicit


def test_bad_flags(tmp_path):
    src = write(tmp_path / "plain.c", "int f(void) { return 0; }\n")
    with pytest.raises(TypeError, match="sequence of strings"):
        csource.compile_file(src, "-DX=1")  # type: ignore[arg-type]
    with pytest.raises(ToolchainError, match="-o is not allowed"):
        csource.compile_file(src, ["-o", "x.bc"], use_cache=False)
    with pytest.raises(ToolchainError, match="cannot read the C source"):
        csource.compile_file(tmp_path / "missing.c")
    with pytest.raises(ValueError, match="opt_level"):
        csource.compile_file(src, opt_level=5, use_cache=False)


def test_depfile_parsing():
    text = "out: /a/b.h /with\\ space/c.h \\\n  rel/d.h /dollar$$/e.h /hash\\#/f.h\n"
    assert csource._parse_depfile(text, "out") == ["/a/b.h", "/with space/c.h", "rel/d.h", "/dollar$/e.h", "/hash#/f.h"]


def test_default_cache_location(monkeypatch, tmp_path):
    """C sources are cached in `csource` under the object cache's directory, chosen by the XDG
    rules the native modules use too (tests/test_settings.py checks they agree)."""
    xdg, home, mine = str(tmp_path / "xdg"), str(tmp_path / "home"), str(tmp_path / "mine")
    assert _settings.cache_dir({"XDG_CACHE_HOME": xdg, "HOME": home}) == os.path.join(xdg, "jitload")
    assert _settings.cache_dir({"XDG_CACHE_HOME": "relative/ignored", "HOME": home}) == os.path.join(home, ".cache", "jitload")
    assert _settings.cache_dir({"JITLOAD_CACHE_DIR": mine, "XDG_CACHE_HOME": xdg}) == mine
    assert _settings.cache_dir({}) is None
    monkeypatch.setattr(config.options, "cache_dir", mine)
    assert csource.default_cache_dir() == os.path.join(mine, "csource")
