"""Shared helpers: build small extension modules to bitcode and run code in fresh interpreters."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

# The suite was written for imports that compile the whole module before they return (and
# store it in the cache at once): it runs that way, in this process and the interpreters it
# starts. Tiered compilation (the default for users) has its own tests (test_tiers.py), which
# ask for it explicitly, and the corpus run uses the default.
os.environ.setdefault("JITLOAD_TIER", "eager")

import jitload  # noqa: E402
from jitload.build import compile as jl_compile  # noqa: E402

BC_SUFFIX = jitload.BITCODE_SUFFIXES[0]
_counter = itertools.count()


def unique(prefix: str) -> str:
    """A module name no other test uses (modules stay loaded for the whole session)."""
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


MODULE_TEMPLATE = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
{body}
"""


def single_phase(name: str, methods_c: str = "", extra: str = "", method_table: str = "") -> str:
    """C source of a single-phase module `name` with optional extra code and methods."""
    return MODULE_TEMPLATE.format(
        body=f"""
{extra}
{methods_c}
static PyMethodDef methods[] = {{ {method_table} {{NULL, NULL, 0, NULL}} }};
static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, methods}};
PyMODINIT_FUNC PyInit_{name.rpartition('.')[2]}(void) {{ return PyModule_Create(&def); }}
"""
    )


@pytest.fixture
def modules_dir(tmp_path, monkeypatch):
    """A directory on sys.path for bitcode modules built by the test."""
    d = tmp_path / "mods"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    jitload.install()
    yield d


def build(directory: Path, name: str, source: str, suffix: str = BC_SUFFIX, **kw) -> Path:
    """Compile C `source` to bitcode file `directory/name+suffix`."""
    src = directory / f"{name.replace('.', '_')}_src.c"
    src.write_text(textwrap.dedent(source))
    out = directory / (name.rpartition(".")[2] + suffix)
    jl_compile([str(src)], str(out), **kw)
    return out


def run_python(code: str, cwd: Optional[Path] = None, env: Optional[dict] = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (with jitload's .pth active); a crash shows as a
    negative return code instead of killing the test run."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
