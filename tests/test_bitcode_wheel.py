"""Bitcode wheels pip understands: `build-ext --wheel` declares `Requires-Dist: jitload` and
the platform tag the modules' C library symbol versions allow (auditwheel's policies), so pip
refuses a wheel for another Python and installing one pulls jitload in."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import build, single_phase, unique

import jitload
from jitload import wheelinfo

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "demo_project"
MACHINE = os.uname().machine
pytest.importorskip("auditwheel", reason="the platform tag comes from auditwheel's policies (jitload[build])")


def _module(tmp_path: Path, extra: str, **kw: object) -> tuple[str, list[str]]:
    name = unique("tagged")
    path = build(tmp_path, name, single_phase(name, extra=extra), **kw)
    return str(path), jitload.dependent_libraries(str(path))


def test_platform_tag_follows_glibc_symbol_versions(tmp_path: Path) -> None:
    plain, libs = _module(tmp_path, "")
    assert wheelinfo.platform_tag([plain], libs, "linux_x86_64")[0] == f"manylinux_2_5_{MACHINE}"
    # getrandom arrived in glibc 2.25: manylinux_2_24 cannot have it, manylinux_2_26 can.
    newer, libs = _module(tmp_path, "#include <sys/random.h>\nssize_t r(char *b) { return getrandom(b, 8, 0); }")
    assert "getrandom" in wheelinfo.external_symbols(newer)
    tag, why = wheelinfo.platform_tag([newer], libs, "linux_x86_64")
    assert tag == f"manylinux_2_26_{MACHINE}" and "GLIBC_2.25" in why
    # Both in one wheel: the stricter one decides.
    assert wheelinfo.platform_tag([plain, newer], libs, "linux_x86_64")[0] == f"manylinux_2_26_{MACHINE}"


def test_library_outside_manylinux_keeps_the_build_tag(tmp_path: Path) -> None:
    if not glob.glob("/usr/lib/*/libyaml-0.so.2"):
        pytest.skip("libyaml not installed")
    path, libs = _module(tmp_path, "int yaml_get_version_string(void);\nint y(void) { return yaml_get_version_string() != 0; }", libraries=["yaml"])
    assert libs == ["libyaml-0.so.2"]
    tag, why = wheelinfo.platform_tag([path], libs, "linux_x86_64")
    assert tag == "linux_x86_64" and "libyaml-0.so.2" in why


@pytest.fixture(scope="module")
def demo_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("demo")
    project = tmp / "proj"
    shutil.copytree(FIXTURE, project)
    out = tmp / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "jitload", "build-ext", str(project), "--wheel", str(out), "--no-build-isolation"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (wheel,) = out.glob("*.whl")
    return wheel


def test_wheel_declares_jitload_and_its_tags(demo_wheel: Path) -> None:
    py = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    assert demo_wheel.name == f"demopkg-1.0-{py}-{py}-manylinux_2_5_{MACHINE}.whl"  # uses only libz's unversioned adler32
    with zipfile.ZipFile(demo_wheel) as z:
        metadata = z.read("demopkg-1.0.dist-info/METADATA").decode()
        wheel = z.read("demopkg-1.0.dist-info/WHEEL").decode()
    assert f"Requires-Dist: {wheelinfo.requirement()}" in metadata.splitlines()
    assert wheelinfo.wheel_tags(wheel) == [f"{py}-{py}-manylinux_2_5_{MACHINE}"]


def _pip_accepts(wheel: Path, target: Path, python_version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--only-binary=:all:",
         "--python-version", python_version, "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )


def test_pip_refuses_a_wheel_for_another_python(demo_wheel: Path, tmp_path: Path) -> None:
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    other = f"3.{sys.version_info[1] + 1}"
    assert _pip_accepts(demo_wheel, tmp_path / "a", mine).returncode == 0
    refused = _pip_accepts(demo_wheel, tmp_path / "b", other)
    assert refused.returncode != 0 and "is not a supported wheel on this platform" in refused.stderr


def test_installing_a_bitcode_wheel_pulls_in_jitload(demo_wheel: Path, tmp_path: Path) -> None:
    jitload_wheels = sorted((ROOT / "target" / "wheels").glob("jitload-*.whl"))
    if not jitload_wheels:
        pytest.skip("no jitload wheel in target/wheels (make build makes one)")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(jitload_wheels[0].parent), str(demo_wheel)],
        check=True, timeout=300,
    )
    out = subprocess.run(
        [python, "-c", "import importlib.metadata as m, demopkg._speed as s; print(m.version('jitload'), s.__file__.endswith('.bc'))"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert out.stdout.split() == [jitload.__version__, "True"], out.stderr
