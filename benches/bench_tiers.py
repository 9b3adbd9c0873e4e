"""Tiered compilation (issue 15): cold imports against the `.so`, and what the final tier costs
and gives, for real extension modules. Writes benchmarks/tiers.json and benchmarks/tiers.md.

    python benches/bench_tiers.py [--rounds N] [--only NAME,...]

Modules: the bitcode builds of the PyPI-wheel benchmark (`make bench-wheels` builds them, from
the packages' sdists with `build-ext`) against the binary wheels of the same versions, and the
pybind11 bench module (benches/cxx/pbbench.cpp) against its clang++-22 -O2 `.so`. Every run is
a fresh interpreter (this one), object cache off, the sides interleaved:

  cold import    `python -c "import m"` wall time: .so, .bc tiered (JITLOAD_TIER=auto), .bc
                 eager (JITLOAD_TIER=eager); the figure is the tiered median minus the .so's
  to final tier  in one process: import, then `jitload.wait_for_tiers()`, against the eager
                 import (the whole compile at -O2 before import returns)
  steady state   a workload after the final tier against the same workload eagerly compiled
                 (best of 5 per process)
  memory         RSS after the final tier against RSS after the eager import; and RSS over
                 `--reload-cycles` reloads of a small module, each reaching its final tier
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks"
WHEELS = Path(os.environ.get("JITLOAD_BENCH_WHEELS", Path.home() / ".cache" / "jitload-bench-wheels"))
PY = sys.executable
SO = sysconfig.get_config_var("EXT_SUFFIX")
BC = SO[: -len(".so")] + ".bc"
PURELIB = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"

# module -> (top-level entries it needs on the path, workload after `import <module> as m`)
MODULES: Dict[str, Tuple[List[str], str]] = {
    "markupsafe._speedups": (["markupsafe"], "import markupsafe; s = '<a>&' * 200_000\nmarkupsafe.escape(s)"),
    "simplejson._speedups": (["simplejson"], "import simplejson; d = simplejson.dumps([{'a': i, 'b': [1.5, 'x' * 20]} for i in range(50_000)])\nsimplejson.loads(d)"),
    "xxhash._xxhash": (["xxhash"], "import xxhash; data = bytes(range(256)) * 8192\nfor _ in range(20): xxhash.xxh64_intdigest(data); xxhash.xxh3_64_intdigest(data)"),
    "msgpack._cmsgpack": (["msgpack"], "import msgpack; o = [{'k': i, 'v': [i, str(i)]} for i in range(100_000)]\nmsgpack.unpackb(msgpack.packb(o))"),
    "bitarray._bitarray": (["bitarray"], "import bitarray; a = bitarray.bitarray(1 << 22); a.setall(1)\nfor _ in range(20): a.count(1)"),
    "ahocorasick": (["ahocorasick"], "import ahocorasick; A = ahocorasick.Automaton()\nfor i in range(20_000): A.add_word('w%d' % i, i)\nA.make_automaton()"),
    "lz4.block._block": (["lz4"], "import lz4.block; d = bytes(range(256)) * 16384\nfor _ in range(10): lz4.block.decompress(lz4.block.compress(d))"),
    "zstandard.backend_c": (["zstandard"], "import zstandard; d = bytes(range(256)) * 16384\nc = zstandard.ZstdCompressor(level=3)\nfor _ in range(5): zstandard.ZstdDecompressor().decompress(c.compress(d))"),
    "pbbench": ([], "WORDS = [w for i in range(20_000) for w in ('Alpha', 'beta', 'GAMMA', 'delta%d' % (i % 500))]\nm.word_counts(WORDS); m.collatz_steps(300_000)"),
}


def link_tree(target: Path, site: Path, entries: List[str], suffix: str) -> None:
    """Symlinks each top-level package (a directory) or single-file module of `site` named in
    `entries` into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        found = [site / entry] if (site / entry).is_dir() else [site / f"{entry}{suffix}"]
        if not found or not found[0].exists():
            raise FileNotFoundError(f"{entry} ({suffix}) not in {site}")
        (target / found[0].name).unlink(missing_ok=True)
        (target / found[0].name).symlink_to(found[0])


def prepare(work: Path, names: List[str]) -> Dict[str, Tuple[Path, Path]]:
    """For each module: a directory holding its .so and one holding its .bc (symlinks into
    the benchmark environments), both for this interpreter."""
    out = {}
    so_site, bc_site = WHEELS / "wheel" / PURELIB, WHEELS / "bitcode" / PURELIB
    for name in names:
        entries, _ = MODULES[name]
        d_so, d_bc = work / name / "so", work / name / "bc"
        if name == "pbbench":
            sys.path.insert(0, str(ROOT / "benches"))
            import bench_cxx

            d_so.mkdir(parents=True, exist_ok=True)
            d_bc.mkdir(parents=True, exist_ok=True)
            bench_cxx.build_so(d_so / f"pbbench{SO}")
            bench_cxx.build_bc(d_bc / f"pbbench{BC}")
        else:
            if not bc_site.exists():
                sys.exit(f"{bc_site} is missing: run `make bench-wheels` once to build the bitcode wheels")
            link_tree(d_so, so_site, entries, SO)
            link_tree(d_bc, bc_site, entries, BC)
        out[name] = (d_so, d_bc)
    return out


def env(tier: str) -> Dict[str, str]:
    e = dict(os.environ)
    e.update({"JITLOAD_CACHE": "0", "JITLOAD_TIER": tier})
    return e


def wall(cmd: List[str], cwd: Path, environ: Dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env={**environ, "PYTHONPATH": str(cwd)}, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


IN_PROCESS = r"""
import json, sys, time, resource
t0 = time.perf_counter()
import {module} as m
t1 = time.perf_counter()
import jitload
assert m.__file__.endswith({suffix!r}), m.__file__
waited = jitload.wait_for_tiers(timeout=1200)
t2 = time.perf_counter()
info = jitload.tier_info(m)
rss = int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()
best = float('inf')
for _ in range(5):
    s = time.perf_counter()
    exec(compile({work!r}, 'work', 'exec'), {{'m': m}})
    best = min(best, time.perf_counter() - s)
print(json.dumps(dict(import_s=t1 - t0, final_s=t2 - t0, waited=waited, state=info and info['state'], rss=rss, work_s=best)))
"""


def in_process(d: Path, name: str, tier: str) -> Dict[str, Any]:
    code = IN_PROCESS.format(module=name, suffix=BC, work=MODULES[name][1])
    r = subprocess.run([PY, "-c", code], cwd=d, env={**env(tier), "PYTHONPATH": str(d)}, check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(name: str, d_so: Path, d_bc: Path, rounds: int) -> Dict[str, Any]:
    cmd = [PY, "-c", f"import {name}"]
    so, tiered, eager = [], [], []
    for i in range(rounds):
        order = [("so", d_so, "auto"), ("tiered", d_bc, "auto"), ("eager", d_bc, "eager")]
        if i % 2:
            order.reverse()
        for label, d, tier in order:
            t = wall(cmd, d, env(tier))
            {"so": so, "tiered": tiered, "eager": eager}[label].append(t)
    runs_t = [in_process(d_bc, name, "auto") for _ in range(max(3, rounds // 2))]
    runs_e = [in_process(d_bc, name, "eager") for _ in range(max(3, rounds // 2))]
    med = statistics.median
    return {
        "module": name,
        "rounds": rounds,
        "cold_import_s": {"so": med(so), "tiered": med(tiered), "eager": med(eager), "so_min": min(so), "tiered_min": min(tiered)},
        "tiered_above_so_ms": 1000 * (med(tiered) - med(so)),
        "to_final_tier_s": med(r["final_s"] for r in runs_t),
        "eager_import_s": med(r["import_s"] for r in runs_e),
        "final_over_eager": med(r["final_s"] for r in runs_t) / med(r["import_s"] for r in runs_e),
        "states": sorted({str(r["state"]) for r in runs_t}),
        "steady_tiered_over_eager": med(r["work_s"] for r in runs_e) / med(r["work_s"] for r in runs_t),
        "rss_tiered_over_eager": med(r["rss"] for r in runs_t) / med(r["rss"] for r in runs_e),
    }


RELOADS = r"""
import gc, importlib, json, os, shutil, sys, jitload
directory, name, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, directory)
target = os.path.join(directory, name + {suffix!r})
def put(v):
    shutil.copyfile(os.path.join(directory, 'v%d' % v, name + {suffix!r}), target)
    os.utime(target, ns=(v * 10**9 + cycle, v * 10**9 + cycle))
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
cycle = 0
put(1)
m = importlib.import_module(name)
marks = {{}}
for cycle in range(1, cycles + 1):
    put(1 + cycle % 2)
    m = importlib.reload(m)
    assert m.f(3) == 3 * (1 + cycle % 2)
    assert jitload.wait_for_tiers(m, timeout=600) and jitload.tier_info(m)['state'] == 'final'
    gc.collect()
    if cycle in (cycles // 10, cycles):
        marks[cycle] = rss()
print(json.dumps(marks))
"""

RELOAD_SOURCE = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static long scale(long x) {{ return x * VERSION; }}
static PyObject *f(PyObject *s, PyObject *a) {{ return PyLong_FromLong(scale(PyLong_AsLong(a))); }}
static PyMethodDef methods[] = {{ {{"f", f, METH_O, NULL}}, {{NULL, NULL, 0, NULL}} }};
static struct PyModuleDef def = {{PyModuleDef_HEAD_INIT, "{name}", NULL, -1, methods}};
PyMODINIT_FUNC PyInit_{name}(void) {{ return PyModule_Create(&def); }}
"""


def measure_reloads(work: Path, cycles: int) -> Dict[str, Any]:
    """RSS after 10% of `cycles` reloads, each tiering up to its final tier, and at the end."""
    from jitload.build import compile as jl_compile

    name = "tier_reload"
    for v in (1, 2):
        d = work / f"v{v}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "m.c").write_text(RELOAD_SOURCE.format(name=name))
        jl_compile([str(d / "m.c")], str(d / f"{name}{BC}"), defines=[f"VERSION={v}"])
    code = RELOADS.format(suffix=BC)
    r = subprocess.run([PY, "-c", code, str(work), name, str(cycles)], env=env("auto"), check=True, capture_output=True, text=True)
    marks = {int(k): v for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}
    first, last = marks[cycles // 10], marks[cycles]
    return {"cycles": cycles, "rss_at_10pct": first, "rss_at_end": last, "growth_per_cycle_bytes": (last - first) / (cycles - cycles // 10)}


def markdown(rows: List[Dict[str, Any]], command: str, reloads: Dict[str, Any]) -> str:
    lines = [
        "# Tiered compilation: cold imports and the final tier",
        "",
        f"`{command}` (object cache off, fresh interpreters, sides interleaved; medians).",
        "",
        "| module | .so import | tiered import | eager import | tiered - .so | to final tier / eager compile | steady speed (eager time / tiered time) | RSS tiered / eager |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r["cold_import_s"]
        lines.append(
            f"| {r['module']} | {1000 * c['so']:.0f} ms | {1000 * c['tiered']:.0f} ms | {1000 * c['eager']:.0f} ms | "
            f"{r['tiered_above_so_ms']:+.0f} ms | {r['final_over_eager']:.2f}x | {r['steady_tiered_over_eager']:.2f}x | {r['rss_tiered_over_eager']:.2f}x |"
        )
    if reloads:
        lines += [
            "",
            f"Reload cycles, each to its final tier ({reloads['cycles']}): RSS {reloads['rss_at_10pct'] / 2**20:.1f} MiB after "
            f"{reloads['cycles'] // 10}, {reloads['rss_at_end'] / 2**20:.1f} MiB after {reloads['cycles']} "
            f"({reloads['growth_per_cycle_bytes']:.0f} bytes per cycle).",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", default="")
    ap.add_argument("--reload-cycles", type=int, default=1000, help="0 skips the reload-cycle memory run")
    args = ap.parse_args()
    names = [n for n in MODULES if not args.only or n in args.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="jitload-tiers-") as tmp:
        dirs = prepare(Path(tmp), names)
        for name in names:
            row = measure(name, *dirs[name], args.rounds)
            print(json.dumps(row), flush=True)
            rows.append(row)
        reloads = measure_reloads(Path(tmp) / "reloads", args.reload_cycles) if args.reload_cycles else {}
        if reloads:
            print(json.dumps(reloads), flush=True)
    OUT.mkdir(exist_ok=True)
    command = "python benches/bench_tiers.py " + " ".join(sys.argv[1:])
    (OUT / "tiers.json").write_text(json.dumps({"command": command, "results": rows, "reloads": reloads}, indent=2) + "\n")
    (OUT / "tiers.md").write_text(markdown(rows, command.strip(), reloads))
    print(markdown(rows, command.strip(), reloads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
