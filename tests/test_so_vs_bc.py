"""The same C code as a `.so` (loaded by CPython) and as bitcode (loaded by jitload) must
look and behave the same to a program: attributes, `PyState_FindModule`, module state and
definition, C static state, importing again after `del sys.modules[...]`, reload, a
subinterpreter — single- and multi-phase, with and without state, top-level and in a
package, on every CPython 3.10-3.13 found on this machine (the abi3 wheel serves them all).

The scenario itself is tests/so_vs_bc_scenario.py, run in a fresh interpreter per side.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest

import jitload

from conftest import unique

SCENARIO = Path(__file__).with_name("so_vs_bc_scenario.py")


def interpreters() -> Dict[str, str]:
    """CPython 3.10-3.13 executables: this one, then any other on PATH or under pyenv."""
    found = {f"{sys.version_info[0]}.{sys.version_info[1]}": sys.executable}
    for minor in (10, 11, 12, 13):
        version = f"3.{minor}"
        if version in found:
            continue
        candidates = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{version}.*/bin/python{version}"))) + [shutil.which(f"python{version}")]
        for exe in candidates:
            if exe and _runs_as(exe, version):
                found[version] = exe
                break
    return found


def _runs_as(exe: str, version: str) -> bool:
    """Whether ``exe`` starts and is CPython ``version`` (a pyenv shim may be neither)."""
    probe = "import sys, sysconfig; print('%d.%d' % sys.version_info[:2], sys.implementation.name, bool(sysconfig.get_config_var('Py_GIL_DISABLED')))"
    try:
        out = subprocess.run([exe, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.split() == [version, "cpython", "False"]


INTERPRETERS = interpreters()
# The installed jitload (pure Python + abi3 native modules) serves every version from here.
SITE = str(Path(jitload.__file__).parent.parent)

CASES: List[tuple] = [
    ("single", False),
    ("single_state", False),
    ("multi", False),
    ("multi_state", False),
    ("single", True),
    ("multi_state", True),
]


def scenario(exe: str, *args: str, env: Optional[Dict[str, str]] = None) -> str:
    full_env = dict(os.environ, PYTHONPATH=SITE, **(env or {}))
    out = subprocess.run([exe, str(SCENARIO), *args], capture_output=True, text=True, env=full_env, timeout=300)
    assert out.returncode == 0, f"{' '.join(args)} in {exe}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.parametrize("version", sorted(INTERPRETERS))
@pytest.mark.parametrize("variant,in_package", CASES, ids=[f"{v}{'-package' if p else ''}" for v, p in CASES])
def test_bitcode_module_behaves_as_the_so(tmp_path: Path, version: str, variant: str, in_package: bool) -> None:
    exe = INTERPRETERS[version]
    name = unique("same")
    fullname = f"pkg_{name}.{name}" if in_package else name
    scenario(exe, "build", str(tmp_path), fullname, variant)
    so = json.loads(scenario(exe, "observe", str(tmp_path), "so", fullname))
    assert so["first"]["found"] == ("NULL" if variant.startswith("multi") else "self"), so  # the scenario sees what it should
    # The first process compiles (the engine), the second links the cached object (_fastload).
    for loader in ("engine", "warm path"):
        bc = json.loads(scenario(exe, "observe", str(tmp_path), "bc", fullname, env={"JITLOAD_CACHE_DIR": str(tmp_path / "cache")}))
        assert bc.pop("loaded_by") == ("jitload._native" if loader == "engine" else "jitload._fastload")
        differences = {k: (so[k], bc.get(k)) for k in so if so[k] != bc.get(k)}
        assert not differences, f"CPython {version}, {variant}, {loader}: .so vs .bc differ in {json.dumps(differences, indent=1)}"


def test_all_supported_versions_are_compared() -> None:
    """Say which versions this machine could not compare (a skip, not a silent pass)."""
    missing = [v for v in ("3.10", "3.11", "3.12", "3.13") if v not in INTERPRETERS]
    if missing:
        pytest.skip(f"CPython {', '.join(missing)} not found on this machine")
