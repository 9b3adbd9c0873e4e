"""Bitcode built for another Python is refused at import with both versions named; the build
tools record the ABI; unrecorded bitcode loads only under this interpreter's tag (a plain
`.bc`/`.ll` with a warning, once)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import sysconfig
import warnings
from pathlib import Path

import pytest

import jitload
from jitload import _native, abi

from conftest import BC_SUFFIX, build, single_phase, unique

SOABI = sysconfig.get_config_var("SOABI")
HERE = f"{sys.version_info[0]}.{sys.version_info[1]}"


def relink(source: Path, output: Path, record: str) -> Path:
    """`source` re-linked into `output` with ABI record `record` instead of its own."""
    plain = output.with_suffix(".plain.bc")
    subprocess.run(["clang-22", "-c", "-emit-llvm", "-I", sysconfig.get_paths()["include"], str(source), "-o", str(plain)], check=True)
    _native.link_bitcode([plain], output, [], record)
    plain.unlink()
    return output


def test_the_build_tools_record_this_python(modules_dir: Path) -> None:
    name = unique("recorded")
    out = build(modules_dir, name, single_phase(name))
    assert abi.read_records(out.read_bytes(), _native) == [(SOABI, HERE)]
    assert importlib.import_module(name).__name__ == name


def test_a_module_built_for_another_python_is_refused(modules_dir: Path) -> None:
    name = unique("otherpy")
    src = modules_dir / f"{name}.c"
    src.write_text(single_phase(name))
    relink(src, modules_dir / f"{name}{BC_SUFFIX}", "jitload-python-abi:cpython-399-x86_64-linux-gnu:3.99;")
    with pytest.raises(jitload.AbiError) as e:
        importlib.import_module(name)
    message = str(e.value)
    assert "3.99" in message and HERE in message and "cpython-399-x86_64-linux-gnu" in message and SOABI in message, message
    assert e.value.name == name and e.value.path.endswith(BC_SUFFIX)
    assert isinstance(e.value, ImportError)


def test_abi3_bitcode_loads(modules_dir: Path) -> None:
    name = unique("abi3mod")
    src = modules_dir / f"{name}.c"
    src.write_text(single_phase(name))
    relink(src, modules_dir / f"{name}.abi3.bc", "jitload-python-abi:abi3:3.99;")
    assert importlib.import_module(name).__file__.endswith(".abi3.bc")


@pytest.mark.parametrize("suffix", [BC_SUFFIX, ".abi3.bc"])
def test_unrecorded_bitcode_under_this_pythons_tag_loads_silently(modules_dir: Path, suffix: str) -> None:
    name = unique("plaintag")
    src = modules_dir / f"{name}.c"
    src.write_text(single_phase(name))
    include = sysconfig.get_paths()["include"]
    subprocess.run(["clang-22", "-c", "-emit-llvm", "-I", include, str(src), "-o", str(modules_dir / f"{name}{suffix}")], check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert importlib.import_module(name).__file__.endswith(suffix)


@pytest.mark.parametrize("suffix,flag", [(".bc", "-c"), (".ll", "-S")])
def test_unrecorded_plain_bitcode_warns_once(modules_dir: Path, suffix: str, flag: str) -> None:
    name = unique("plain")
    src = modules_dir / f"{name}.c"
    src.write_text(single_phase(name))
    include = sysconfig.get_paths()["include"]
    subprocess.run(["clang-22", flag, "-emit-llvm", "-I", include, str(src), "-o", str(modules_dir / f"{name}{suffix}")], check=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = importlib.import_module(name)
        del sys.modules[name]
        importlib.import_module(name)
        st = os.stat(first.__file__)  # a changed file is loaded anew: still one warning per file
        os.utime(first.__file__, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        importlib.reload(sys.modules[name])
    abi_warnings = [w for w in caught if issubclass(w.category, jitload.AbiWarning)]
    assert len(abi_warnings) == 1, [str(w.message) for w in caught]
    assert name in str(abi_warnings[0].message) and HERE in str(abi_warnings[0].message)


def test_a_record_in_ir_text_is_read(modules_dir: Path) -> None:
    name = unique("irtext")
    src = modules_dir / f"{name}.c"
    src.write_text(single_phase(name))
    relinked = relink(src, modules_dir / f"{name}.tmp.bc", "jitload-python-abi:cpython-399-x86_64-linux-gnu:3.99;")
    text = subprocess.run(["llvm-dis-22", str(relinked), "-o", "-"], capture_output=True, text=True, check=True).stdout
    relinked.unlink()
    (modules_dir / f"{name}.ll").write_text(text)
    with pytest.raises(jitload.AbiError, match="3.99"):
        importlib.import_module(name)


def test_a_module_compiled_by_another_installed_python_is_refused(tmp_path: Path) -> None:
    """The real case: `python3.X -m jitload compile` with 3.X's headers, the result renamed
    for this interpreter."""
    from test_so_vs_bc import INTERPRETERS, SITE

    other = next((v for v in ("3.12", "3.13", "3.10") if v in INTERPRETERS and v != HERE), None)
    if other is None:
        pytest.skip("no other CPython 3.10-3.13 on this machine")
    name = unique("cross")
    src = tmp_path / f"{name}.c"
    src.write_text(single_phase(name))
    out = tmp_path / f"{name}{BC_SUFFIX}"
    env = dict(os.environ, PYTHONPATH=SITE)
    subprocess.run([INTERPRETERS[other], "-m", "jitload", "compile", str(src), "-o", str(out)], check=True, env=env, capture_output=True)
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r})\ntry:\n    import {name}\nexcept ImportError as e:\n    print(type(e).__name__, e)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("AbiError") and f"Python {other}" in result.stdout and f"Python {HERE}" in result.stdout, result.stdout + result.stderr
