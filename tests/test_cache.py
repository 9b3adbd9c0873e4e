"""The persistent object cache on the import path: warm imports skip compilation, and every
bad cache state (corrupt, truncated, unwritable, insecure, raced) falls back to compiling
and never loads wrong code. Each case runs in fresh interpreters, as real users would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import pytest

from conftest import build, single_phase, unique

ADD_METHOD = """
static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b + OFFSET);
}
"""
ADD_ENTRY = '{"add", add, METH_VARARGS, NULL},'

PROBE = """
import json, sys, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import {name}
    result = {name}.add(2, 3)
import jitload
print(json.dumps({{"result": result, "stats": jitload.cache_stats(), "llvm_loaded": "jitload._native" in sys.modules,
                  "warnings": [str(w.message) for w in caught]}}))
"""


def make_module(directory: Path, offset: int = 0) -> str:
    name = unique("cached")
    build(directory, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY), defines=[f"OFFSET={offset}"])
    return name


def run(directory: Path, name: str, cache_dir: Path, **env: str) -> dict:
    full = dict(os.environ, JITLOAD_CACHE_DIR=str(cache_dir), PYTHONPATH=str(directory), **env)
    out = subprocess.run([sys.executable, "-c", PROBE.format(name=name)], env=full, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def entries(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "objects").glob("*/*.jlo")) if (cache_dir / "objects").exists() else []


@pytest.fixture
def mods(tmp_path: Path) -> Path:
    d = tmp_path / "mods"
    d.mkdir()
    return d


def test_second_process_loads_from_the_cache(mods: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    name = make_module(mods)
    cold = run(mods, name, cache)
    assert cold["result"] == 5 and cold["stats"]["misses"] == 1 and cold["stats"]["stores"] == 1
    assert len(entries(cache)) == 1
    assert (cache.stat().st_mode & 0o777) == 0o700
    assert cold["llvm_loaded"]
    warm = run(mods, name, cache)
    assert warm["result"] == 5 and warm["stats"]["hits"] == 1 and warm["stats"]["misses"] == 0
    # Linked from the cache by _fastload: libLLVM was never loaded.
    assert warm["stats"]["without_llvm"] == 1 and not warm["llvm_loaded"]


def test_a_warm_import_through_the_engine_gives_the_same_module(mods: Path, tmp_path: Path) -> None:
    """With the LLVM-free path off (JITLOAD_FASTLOAD=0) the engine links the same entry."""
    cache = tmp_path / "cache"
    name = make_module(mods)
    run(mods, name, cache)
    warm = run(mods, name, cache, JITLOAD_FASTLOAD="0")
    assert warm["result"] == 5 and warm["stats"]["hits"] == 1 and warm["stats"]["without_llvm"] == 0
    assert warm["llvm_loaded"]


def test_a_changed_module_is_a_miss(mods: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    name = make_module(mods, offset=0)
    run(mods, name, cache)
    build(mods, name, single_phase(name, ADD_METHOD, method_table=ADD_ENTRY), defines=["OFFSET=100"])
    changed = run(mods, name, cache)
    assert changed["result"] == 105 and changed["stats"]["misses"] == 1
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("setting", [{"JITLOAD_OPT_LEVEL": "0"}, {"JITLOAD_TUNE_CPU": "host"}])
def test_code_settings_are_part_of_the_key(mods: Path, tmp_path: Path, setting: Dict[str, str]) -> None:
    """The opt level and the CPU the code is tuned for change the code: each has its own entry,
    which a later process with the same setting links from the cache without LLVM."""
    cache = tmp_path / "cache"
    name = make_module(mods)
    run(mods, name, cache)
    other = run(mods, name, cache, **setting)
    assert other["stats"]["misses"] == 1 and len(entries(cache)) == 2
    again = run(mods, name, cache, **setting)
    assert again["stats"]["hits"] == 1 and again["stats"]["without_llvm"] == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_damaged_entries_are_rebuilt(mods: Path, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    name = make_module(mods)
    run(mods, name, cache)
    (entry,) = entries(cache)
    data = bytearray(entry.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40  # inside the object code
    elif damage == "truncate":
        data = data[: len(data) - 100]
    else:
        data = bytearray()
    entry.write_bytes(bytes(data))
    again = run(mods, name, cache)
    assert again["result"] == 5, "never loads wrong code"
    assert again["stats"]["hits"] == 0 and again["stats"]["stores"] == 1
    assert run(mods, name, cache)["stats"]["hits"] == 1, "the rebuilt entry is used next time"


def test_insecure_cache_directory_is_refused_with_a_warning(mods: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    os.chmod(cache, 0o777)
    name = make_module(mods)
    out = run(mods, name, cache)
    assert out["result"] == 5
    assert any("not using the object cache" in w and "writable" in w for w in out["warnings"]), out["warnings"]
    assert entries(cache) == []


def test_unwritable_cache_still_imports(mods: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "objects").mkdir(mode=0o700, parents=True)
    os.chmod(cache, 0o700)
    for i in range(256):  # files where the entries' directories should be: every write fails
        (cache / "objects" / f"{i:02x}").write_text("not a directory")
    name = make_module(mods)
    out = run(mods, name, cache)
    assert out["result"] == 5 and out["stats"]["store_failures"] == 1
    assert any("cannot store" in w for w in out["warnings"]), out["warnings"]


def test_cache_can_be_disabled(mods: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    name = make_module(mods)
    out = run(mods, name, cache, JITLOAD_CACHE="0")
    assert out["result"] == 5
    assert out["stats"] == {"hits": 0, "without_llvm": 0, "fallbacks": 0, "misses": 0, "stores": 0, "store_failures": 0}
    assert entries(cache) == []


def test_processes_racing_to_fill_the_same_entry(mods: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    name = make_module(mods)
    env = dict(os.environ, JITLOAD_CACHE_DIR=str(cache), PYTHONPATH=str(mods))
    procs = [
        subprocess.Popen([sys.executable, "-c", PROBE.format(name=name)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["result"] == 5
    assert len(entries(cache)) == 1
    assert not list((cache / "objects").glob("*/*.tmp"))
    assert run(mods, name, cache)["stats"]["hits"] == 1


def test_cache_cli(mods: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    name = make_module(mods)
    run(mods, name, cache)
    env = dict(os.environ, JITLOAD_CACHE_DIR=str(cache))

    def cli(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "jitload", "cache", *args], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert "entries: 1" in cli("info")
    assert "removed 1 entries" in cli("prune", "--max-mb", "0")
    run(mods, name, cache)
    assert "removed 1 entries" in cli("clear")
    assert entries(cache) == []
