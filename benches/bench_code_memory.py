"""Memory and build time of 10,000 jitload.fast wrappers and thunks, with and without pooled
code pages (JITLOAD_STENCIL_POOL=0 gives every block a mapping of its own).

    python benches/bench_code_memory.py [--n N] [--repeat R] [--json PATH] [--md PATH]

Each measurement runs in a fresh interpreter (so the modes do not share pages): it builds N
objects of one kind, keeping them all, and reports the growth of the resident set (VmRSS,
which includes the Python objects themselves), of the address space (VmSize), the number of
mappings (/proc/self/maps lines), the median build time, and what remains after the objects
are dropped. Modes alternate R times; figures are medians over the repeats. Writes
benchmarks/code_memory.json and benchmarks/code_memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks"

CHILD = r"""
import ctypes, gc, json, statistics, sys, time
import jitload.fast as fast
from jitload import _native

kind, n = sys.argv[1], int(sys.argv[2])
labs = ctypes.cast(ctypes.CDLL(None).labs, ctypes.c_void_p).value


def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmSize"):
            out[key] = int(value.split()[0])
    out["maps"] = sum(1 for _ in open("/proc/self/maps"))
    return out


def make():
    if kind == "wrap":
        return fast.wrap(labs, "int64(int64, int64)")
    return fast.callback(lambda a, b: a, "int64(int64, int64)")


make()  # warm up (runtime resolution, first page)
gc.collect()
before = status()
objs, times = [], []
for _ in range(n):
    t0 = time.perf_counter()
    objs.append(make())
    times.append(time.perf_counter() - t0)
after = status()
pages, live = _native._stencils.code_pages()
del objs
gc.collect()
freed = status()
print(json.dumps({
    "rss_kib": after["VmRSS"] - before["VmRSS"],
    "vm_kib": after["VmSize"] - before["VmSize"],
    "mappings": after["maps"] - before["maps"],
    "build_us": statistics.median(times) * 1e6,
    "pooled_pages": pages,
    "vm_kib_after_free": freed["VmSize"] - before["VmSize"],
    "mappings_after_free": freed["maps"] - before["maps"],
}))
"""


def run(kind: str, pooled: bool, n: int) -> Dict[str, Any]:
    env = dict(os.environ, JITLOAD_STENCIL_POOL="1" if pooled else "0")
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(n)], env=env, capture_output=True, text=True, check=True)
    result: Dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, default=OUT / "code_memory.json")
    parser.add_argument("--md", type=Path, default=OUT / "code_memory.md")
    args = parser.parse_args()
    samples: Dict[str, List[Dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for kind in ("wrap", "callback"):
            for pooled in (False, True):
                samples.setdefault(f"{kind} {'pooled' if pooled else 'page each'}", []).append(run(kind, pooled, args.n))
    results = {name: {key: statistics.median(s[key] for s in runs) for key in runs[0]} for name, runs in samples.items()}
    loadavg = Path("/proc/loadavg")
    load = " ".join(loadavg.read_text().split()[:3]) if loadavg.exists() else "?"
    lines = [
        "# Code memory (benches/bench_code_memory.py)",
        "",
        f"{args.n} objects of each kind, fresh interpreter per measurement, medians of {args.repeat}; "
        f"load average {load} at the end. RSS includes the Python objects (wrapper state, thunk cell).",
        "",
        "| objects | RSS KiB | per object | address space KiB | mappings | median build us | code pages | mappings after free |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['rss_kib']:.0f} | {r['rss_kib'] * 1024 / args.n:.0f} B | {r['vm_kib']:.0f} | {r['mappings']:.0f} "
            f"| {r['build_us']:.1f} | {r['pooled_pages']:.0f} | {r['mappings_after_free']:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"n": args.n, "repeat": args.repeat, "load": load, "results": results}, indent=2) + "\n")
    args.md.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
