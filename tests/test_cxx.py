"""C++ extension modules from bitcode: static constructors in order and destructors at exit
and on removal, guarded function-local statics, exceptions inside JIT'd code and through the
C++ runtime, RTTI across module boundaries, thread_local, weak/linkonce_odr definitions, and
the bad inputs (a throwing init, a missing C++ runtime, an ODR clash). Sources are in
tests/fixtures/cxx/."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import BC_SUFFIX, run_python, unique

import jitload
import jitload._native as native
from jitload import _clang
from jitload.build import compile as jl_compile

FIXTURES = Path(__file__).parent / "fixtures" / "cxx"


def build_cxx(directory: Path, name: str, sources, defines=(), **kw) -> Path:
    out = directory / (name + BC_SUFFIX)
    defs = [f'MODNAME="{name}"', f"MODNAME_ID={name}", *defines]
    jl_compile([str(FIXTURES / s) for s in sources], str(out), defines=defs, include_dirs=[str(FIXTURES)], **kw)
    return out


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """The cxxfeatures module, built once and imported in this process."""
    d = tmp_path_factory.mktemp("cxxfeatures")
    name = unique("cxxfeatures")
    build_cxx(d, name, ["features.cpp", "features_order.cpp"])
    sys.path.insert(0, str(d))
    jitload.install()
    try:
        module = importlib.import_module(name)
    finally:
        sys.path.remove(str(d))
    assert module.__file__.endswith(".bc")
    return module


def test_build_records_the_cxx_runtime(tmp_path):
    out = build_cxx(tmp_path, "rt", ["dtor_version.cpp"], defines=["VERSION=1"])
    assert "libstdc++.so.6" in native.dependent_libraries(str(out))


def test_static_constructors_run_in_priority_then_link_order(features):
    assert features.init_order() == "early;first;second;second-tu;"


def test_function_local_static_is_constructed_once_under_contention(features):
    constructions, total = features.guarded_static(8)
    assert constructions == 1
    assert total == 8 * 42


def test_exception_thrown_and_caught_inside_jitted_code(features):
    assert features.exc_inside() == ("deep", 7)


def test_exception_thrown_by_the_runtime_caught_in_jitted_code(features):
    out = features.exc_from_runtime()
    assert out.startswith("invalid_argument;out_of_range;")
    assert out.endswith("St12out_of_range")  # typeid(e).name() of a runtime-thrown exception


def test_exception_through_runtime_frames_and_back(features):
    # std::call_once runs the JIT'd callable from libstdc++/glibc frames; its exceptions come
    # back through them (and call_once's state lives in libstdc++'s thread-locals).
    assert features.exc_through_runtime() == (3, True)


def test_exception_ptr_and_nested_exceptions(features):
    assert features.exc_ptr() == "outer/inner"


def test_rtti_dynamic_cast_and_typeid(features):
    ok, runtime_name, own_name = features.rtti()
    assert ok is True
    assert runtime_name == "St9bad_alloc"
    assert own_name == "3Dog"


def test_thread_local_per_python_thread(features):
    first = features.tls_next()
    results = {}

    def worker(i):
        results[i] = [features.tls_next() for _ in range(i + 1)]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert results[i] == list(range(101, 101 + i + 1)), "each thread starts from the initial value"
    assert features.tls_next() == first + 1, "the main thread's copy is untouched by the others"


def test_thread_local_per_native_thread(features):
    assert features.tls_threads() == [101, 102, 103, 104]


def test_thread_local_destructors_run_at_thread_exit(features):
    before = features.tls_destroyed_count()
    t = threading.Thread(target=features.tls_touch)
    t.start()
    t.join()
    # join() returns when the thread's Python part is done; its thread_local destructors run
    # as the OS thread exits, a moment later.
    deadline = time.monotonic() + 10
    while features.tls_destroyed_count() < before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert features.tls_destroyed_count() == before + 1


def test_templates_inline_and_weak_definitions(features):
    assert features.templates() == (42, 3, "apple,fig,pear,module", 2.5)


def test_weak_definition_coexists_with_the_same_symbol_in_a_library(tmp_path, modules_dir):
    # A library defining the module's weak symbol too is loaded first: the module still
    # links, and its own definition serves its own calls (as with an RTLD_LOCAL .so).
    lib = tmp_path / "libweakprobe.so"
    src = tmp_path / "weakprobe.c"
    src.write_text('const char *jitload_cxx_weak_probe(void) { return "library"; }\n')
    subprocess.run([_clang.find("clang"), "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    jitload.load_library(str(lib))
    name = unique("cxxweak")
    build_cxx(modules_dir, name, ["features.cpp", "features_order.cpp"])
    m = importlib.import_module(name)
    assert m.templates()[2].endswith(",module")


def test_dynamic_cast_typeid_and_exceptions_across_modules(modules_dir):
    maker_name, user_name = unique("shape_maker"), unique("shape_user")
    build_cxx(modules_dir, maker_name, ["shape_maker.cpp"])
    build_cxx(modules_dir, user_name, ["shape_user.cpp"])
    maker = importlib.import_module(maker_name)
    user = importlib.import_module(user_name)
    assert user.inspect(maker.make("square")) == ("square", True, True, 9.0)
    assert user.inspect(maker.make("circle")) == ("shape", False, False, 3.0)
    # Thrown by the maker's code, caught by the user's handler (type_info matched by name).
    assert user.catch_from(maker.thrower()) == "shape error"


@pytest.mark.parametrize(
    "where, expected",
    [
        (1, "initialization of {name} threw C++ exception ConfigError: bad configuration: 42"),
        (2, "a static constructor of {name} threw C++ exception ConfigError: static constructor failed"),
        (3, "executing module {name} threw C++ exception std::length_error: exec slot failed"),
        (4, "initialization of {name} threw C++ exception NotAnException"),
    ],
)
def test_exception_escaping_module_init_is_an_import_error(modules_dir, where, expected):
    name = unique(f"cxxthrow{where}")
    build_cxx(modules_dir, name, ["throwing_init.cpp"], defines=[f"THROW_IN={where}"])
    with pytest.raises(ImportError) as info:
        importlib.import_module(name)
    assert isinstance(info.value, jitload.InitError)
    assert expected.format(name=name) in str(info.value)
    assert name not in sys.modules
    # The interpreter is fine and so is the next import.
    assert importlib.import_module("json").dumps([1]) == "[1]"


def test_odr_clash_between_loaded_modules_is_a_clear_error(modules_dir):
    a, b, c = unique("odr_a"), unique("odr_b"), unique("odr_c")
    for name, role in ((a, 1), (b, 2), (c, 3)):
        build_cxx(modules_dir, name, ["odr.cpp"], defines=[f"ODR_ROLE={role}"])
    # Two modules defining the same strong function load, each using its own definition.
    assert importlib.import_module(a).value() == 10
    assert importlib.import_module(b).value() == 20
    # A module that needs it cannot be told which one: an ImportError naming both files.
    with pytest.raises(jitload.LinkError) as info:
        importlib.import_module(c)
    message = str(info.value)
    assert "ODR clash" in message and "_Z9odr_valuev" in message
    assert f"{a}{BC_SUFFIX}" in message and f"{b}{BC_SUFFIX}" in message


def _link_without_runtime(directory: Path, name: str, runtime_libs) -> Path:
    """Compile a C++ module with clang++ and link it recording `runtime_libs` instead of the
    runtime jitload's build tools would record."""
    obj = directory / f"{name}.o"
    cmd = [_clang.find("clang++"), "-c", "-O1", *_clang.BITCODE_FLAGS, f"-I{FIXTURES}"]
    cmd += [f"-I{d}" for d in _clang.python_include_dirs()]
    cmd += [f'-DMODNAME="{name}"', f"-DMODNAME_ID={name}", "-DVERSION=1", str(FIXTURES / "dtor_version.cpp"), "-o", str(obj)]
    subprocess.run(cmd, check=True)
    out = directory / (name + BC_SUFFIX)
    native.link_bitcode([str(obj)], str(out), list(runtime_libs))
    return out


def test_missing_cxx_runtime_library_is_named(modules_dir):
    name = unique("cxx_libcxx")
    # A runtime that is not installed (not libc++.so.1: the manylinux wheel's libLLVM loads it).
    _link_without_runtime(modules_dir, name, ["libjitload-absent-cxx.so.1"])
    with pytest.raises(ImportError) as info:
        importlib.import_module(name)
    assert "libjitload-absent-cxx.so.1" in str(info.value)


def test_cxx_runtime_not_recorded_still_resolves_to_libstdcxx(modules_dir):
    # Bitcode linked without recording a runtime (e.g. by hand) still loads: jitload itself
    # runs on libstdc++, whose symbols its resolver sees.
    name = unique("cxx_noruntime")
    _link_without_runtime(modules_dir, name, [])
    assert importlib.import_module(name).version() == 1


def test_static_destructors_run_at_exit_in_reverse_order(tmp_path):
    d = tmp_path / "mods"
    d.mkdir()
    name = unique("cxxexit")
    build_cxx(d, name, ["features.cpp", "features_order.cpp"])
    log = tmp_path / "log.txt"
    r = run_python(
        f"""
        import sys, jitload
        sys.path.insert(0, {str(d)!r})
        jitload.install()
        import {name} as m
        m.guarded_static(2)  # constructs the function-local static (destroyed first)
        print("ok")
        """,
        env={"JITLOAD_CXX_LOG": str(log)},
    )
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
    assert log.read_text().split() == ["~local-static", "~second-tu", "~second", "~first", "~early"]


def test_destructors_run_when_a_reloaded_module_is_freed(tmp_path):
    d = tmp_path / "mods"
    d.mkdir()
    name = unique("cxxreload")
    log = tmp_path / "log.txt"
    builder = textwrap.dedent(
        f"""
        def build(version):
            import os
            from jitload.build import compile
            out = {str(d)!r} + "/{name}{BC_SUFFIX}"
            fx = {str(FIXTURES)!r}
            compile([fx + "/dtor_version.cpp"], out, include_dirs=[fx],
                    defines=['MODNAME="{name}"', "MODNAME_ID={name}", f"VERSION={{version}}"])
            st = os.stat(out)
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns + version * 1_000_000_000))
        """
    )
    r = run_python(
        builder
        + textwrap.dedent(
            f"""
            import gc, importlib, sys, jitload, jitload._native as native
            sys.path.insert(0, {str(d)!r})
            jitload.install()
            build(1)
            import {name} as m
            assert m.version() == 1 and m.throw_catch() == "v1"
            build(2)
            new = importlib.reload(m)
            assert new.version() == 2
            before = native.loaded_extension_count()
            del m
            gc.collect()
            for _ in range(1000): pass
            assert native.loaded_extension_count() == before - 1, "old code freed"
            # Exceptions still unwind in the live module once the old one's eh-frames are gone.
            assert new.throw_catch() == "v2"
            print("freed", open({str(log)!r}).read().split() if __import__("os").path.exists({str(log)!r}) else [])
            """
        ),
        env={"JITLOAD_CXX_LOG": str(log)},
    )
    assert r.returncode == 0, r.stderr
    assert "freed ['~tracked', 'v1']" in r.stdout, r.stdout
    # At exit only the live version's destructor is left to run.
    assert log.read_text().splitlines() == ["~tracked v1", "~tracked v2"]
