"""What an installed wheel costs a user: install time, `python -c pass` start-up against a venv
without jitload, and cold/warm import of a bitcode module, for each wheel given.

    python benches/bench_wheel.py WHEEL [WHEEL...] [--find-links DIR] [--rounds N]

Each wheel goes into a fresh venv (`pip install WHEEL`, its dependencies from the index or
--find-links); the start-up baseline is a fresh venv of the same interpreter without jitload.
The bitcode module is built once with this checkout's `jitload compile`. Prints one JSON row
per measurement (medians; start-up as a paired ratio with a 95% bootstrap interval)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BC, env_with, paired, result, time_process  # noqa: E402

MODULE = r"""
#include <Python.h>
static PyObject *add(PyObject *self, PyObject *args) {
    long a, b;
    if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
    return PyLong_FromLong(a + b);
}
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "wheelbench", NULL, -1, methods};
PyMODINIT_FUNC PyInit_wheelbench(void) { return PyModule_Create(&def); }
"""
IMPORT = "import wheelbench; assert wheelbench.add(2, 3) == 5"


def venv(path: Path) -> str:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return str(path / "bin" / "python")


def bench_wheel(wheel: Path, work: Path, baseline: str, mods: Path, find_links: list[str], rounds: int) -> list[dict]:
    python = venv(work / wheel.stem)
    links = [a for d in find_links for a in ("--find-links", d)]
    t0 = time.perf_counter()
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-cache-dir", *links, str(wheel)], check=True)
    install_s = time.perf_counter() - t0
    subprocess.run([python, "-c", "pass"], check=True)  # first start: wheels' one-time hooks (wheel-axle links)
    env = env_with()
    a, b = paired(rounds, lambda: time_process([baseline, "-c", "pass"], mods, env), lambda: time_process([python, "-c", "pass"], mods, env))
    rows = [result("wheel/python -c pass", "venv without jitload", wheel.name, a, b, "target <= 1.05x")]
    cold, warm = [], []
    for i in range(max(3, rounds // 20)):
        cache = work / f"cache-{wheel.stem}-{i}"
        cold_env = env_with(JITLOAD_CACHE_DIR=str(cache))
        cold.append(time_process([python, "-c", IMPORT], mods, cold_env))
        warm.append(time_process([python, "-c", IMPORT], mods, cold_env))
        shutil.rmtree(cache)
    pass_s = sorted(b)[len(b) // 2]
    site = next((work / wheel.stem).glob("lib/python*/site-packages"))
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in site.iterdir() if p.is_dir()}
    rows.append({
        "bench": "wheel/install", "wheel": wheel.name, "wheel_bytes": wheel.stat().st_size, "install_s": install_s,
        "installed_bytes": {k: v for k, v in sizes.items() if v > 1 << 20},
        "lib_bytes": sum(f.stat().st_size for f in (work / wheel.stem / "lib").rglob("*.so*") if f.is_file() and not f.is_symlink()),
    })
    rows.append({
        "bench": "wheel/import a .bc (fresh process)", "wheel": wheel.name,
        "cold_median_s": sorted(cold)[len(cold) // 2], "warm_median_s": sorted(warm)[len(warm) // 2],
        "python_c_pass_s": pass_s, "note": "cold: compiled (LLVM loaded); warm: from the object cache, LLVM not loaded",
    })
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheels", nargs="+", type=Path)
    ap.add_argument("--find-links", action="append", default=[])
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jitload-wheel-bench-") as tmp:
        work = Path(tmp)
        mods = work / "mods"
        mods.mkdir()
        (mods / "wheelbench.c").write_text(MODULE)
        subprocess.run([sys.executable, "-m", "jitload", "compile", str(mods / "wheelbench.c"), "-o", str(mods / f"wheelbench{BC}")],
                       check=True, stdout=subprocess.DEVNULL)
        os.remove(mods / "wheelbench.c")
        baseline = venv(work / "baseline")
        for wheel in args.wheels:
            for row in bench_wheel(wheel.resolve(), work, baseline, mods, args.find_links, args.rounds):
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
