"""`python -m jitload --version`, `jitload.versions()`, and what a missing or wrong libLLVM
does: an LLVMLibraryError (an ImportError) at the first compile naming the library, the
version found, the one needed and the fix — nothing at interpreter start, never a crash."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build, run_python, single_phase, unique

import jitload
from jitload import _llvm


def test_version_matches_the_installed_distribution() -> None:
    assert jitload.__version__ == importlib.metadata.version("jitload")


def test_version_flag_names_versions_and_paths(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "jitload", "--version"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"jitload {jitload.__version__}"
    # The libLLVM reported is the one the compiler module runs on.
    llvm_line = f"LLVM {jitload.llvm_version()}: "
    assert lines[1].startswith(llvm_line), lines
    assert os.path.exists(lines[1][len(llvm_line) :].split(" (")[0])
    assert lines[2].startswith("clang 22."), lines
    assert os.path.exists(lines[2].split(": ", 1)[1])


def _fake_libllvm(directory: Path, version: tuple[int, int, int]) -> Path:
    """A shared library named (and SONAMEd) libLLVM.so.22.1 that reports `version` and has
    none of LLVM's other functions."""
    from jitload._clang import find

    directory.mkdir()
    src = directory / "fake.c"
    src.write_text(
        "void LLVMGetVersion(unsigned *a, unsigned *b, unsigned *c) "
        f"{{ *a = {version[0]}; *b = {version[1]}; *c = {version[2]}; }}\n"
    )
    out = directory / _llvm.SONAME
    subprocess.run([find(), "-shared", "-fPIC", f"-Wl,-soname,{_llvm.SONAME}", "-o", str(out), str(src)], check=True)
    return out


def _import_cold(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    name = unique("llvmcheck")
    mods = tmp_path / "mods"
    mods.mkdir()
    build(mods, name, single_phase(name))
    code = f"""
        import sys
        sys.path.insert(0, {str(mods)!r})
        try:
            import {name}
        except ImportError as e:
            print(type(e).__name__)
            print(e)
        else:
            print("imported")
    """
    return run_python(code, env={"JITLOAD_CACHE": "0", **env})


@pytest.mark.parametrize("version", [(23, 1, 0), (21, 1, 8)])
def test_wrong_llvm_version_first_on_the_library_path(tmp_path: Path, version: tuple[int, int, int]) -> None:
    if any(source == "pip-installed LLVM" for _, source in _llvm.candidates()):
        pytest.skip("a pip-installed libLLVM (the manylinux wheel's) comes before the library path, by design")
    fake = _fake_libllvm(tmp_path / "lib", version)
    env = {"LD_LIBRARY_PATH": f"{fake.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    start = run_python("pass", env=env)
    assert (start.returncode, start.stderr) == (0, ""), "interpreter start must not notice libLLVM"
    out = _import_cold(tmp_path, env)
    assert out.returncode == 0, out.stderr
    kind, message = out.stdout.splitlines()[:2]
    assert kind == "LLVMLibraryError"
    found = ".".join(map(str, version))
    assert str(fake) in message and f"LLVM {found}, not 22.1" in message
    assert "Fix: " in message and "karellen-llvm-core" in message and "JITLOAD_LIBLLVM" in message


def test_right_version_wrong_library(tmp_path: Path) -> None:
    """A libLLVM.so.22.1 that says 22.1 but lacks LLVM's functions: the compiler module's
    link fails, reported with the library's path and version instead of a bare dlerror."""
    fake = _fake_libllvm(tmp_path / "lib", (22, 1, 0))
    out = _import_cold(tmp_path, {"JITLOAD_LIBLLVM": str(fake)})
    assert out.returncode == 0, out.stderr
    kind, message = out.stdout.splitlines()[:2]
    assert kind == "LLVMLibraryError"
    assert f"with {fake} (LLVM 22.1.0, JITLOAD_LIBLLVM)" in message and "Fix: " in message
    # The dynamic linker's reason: a symbol the fake lacks, or (the manylinux wheel's _native)
    # the libc++ that only the real library's run path finds.
    assert "symbol" in message or "libc++.so.1: cannot open shared object file" in message


def test_missing_libllvm(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / _llvm.SONAME
    out = _import_cold(tmp_path, {"JITLOAD_LIBLLVM": str(missing)})
    kind, message = out.stdout.splitlines()[:2]
    assert kind == "LLVMLibraryError"
    assert str(missing) in message and "cannot be opened" in message and "Fix: " in message
    version = subprocess.run(
        [sys.executable, "-m", "jitload", "--version"],
        capture_output=True, text=True, env={**os.environ, "JITLOAD_LIBLLVM": str(missing)}, timeout=120,
    )
    assert version.returncode == 1 and "cannot be opened" in version.stdout


def test_clang_in_the_environment_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install "jitload[build]"` puts clang-22 in the environment's bin/: found before
    the system's (here a link to the system's clang stands in the environment's bin/)."""
    from jitload import _clang

    system = _clang.find()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "clang-22").symlink_to(system)
    monkeypatch.setattr(_llvm, "environment_prefix", lambda: str(tmp_path))
    from jitload import config

    monkeypatch.setattr(config.options, "clang", None)
    _clang.find.cache_clear()
    try:
        assert _clang.find() == str(tmp_path / "bin" / "clang-22")
    finally:
        _clang.find.cache_clear()
