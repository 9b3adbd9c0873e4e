"""Linking through ORC's JITLink memory manager: time and memory of add/call/remove cycles of
one object file (no compile: the object is built once), and where the linked code lives.

    python benches/bench_orc_memory.py [--cycles 2000] [--functions 100]

Each cycle makes a library, links the object into it (`Library.add_object`: ORC's
ObjectLinkingLayer, whose memory comes from jitload-codemem: shim/jit_memory.cpp), calls
every function once and removes the library (ORC frees the memory). Prints the median and
p90 time of a cycle, the resident and mapped size before and after, the number of mappings,
and the mapping a linked function lives in (`r-xs /memfd:jitload-code` under
JITLOAD_CODE_MEMORY=dualmap).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict

import jitload


def status() -> Dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmSize"):
            fields[key] = int(value.split()[0])
    fields["maps"] = len(Path("/proc/self/maps").read_text().splitlines())
    return fields


def mapping(address: int) -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= address < hi:
            fields = line.split()
            return " ".join([fields[1]] + fields[5:])
    return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=2000)
    ap.add_argument("--functions", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jitload-orcmem-") as tmp:
        src = Path(tmp) / "funcs.c"
        src.write_text("".join(f"long f{k}(long x) {{ return x * {k + 3} + {k}; }}\n" for k in range(args.functions)))
        obj = Path(tmp) / "funcs.o"
        subprocess.run(["clang-22", "-O2", "-fPIC", "-c", str(src), "-o", str(obj)], check=True)
        data = obj.read_bytes()
    session = jitload.Session()
    times = []
    where = ""
    before: Dict[str, int] = {}
    for cycle in range(args.cycles):
        if cycle == 100:
            before = status()  # after a warm-up
        t0 = time.perf_counter()
        lib = session.library(f"cycle{cycle}")
        lib.add_object(data)
        for k in range(args.functions):
            f = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long)(lib.address(f"f{k}"))
            assert f(2) == 2 * (k + 3) + k
        if cycle == 0:
            where = mapping(lib.address("f0"))
        lib.remove()
        times.append(time.perf_counter() - t0)
    after = status()
    times.sort()
    print(f"cycles {args.cycles}, {args.functions} functions each; code memory {jitload.options()['JITLOAD_CODE_MEMORY']}")
    print(f"cycle median {statistics.median(times) * 1e3:.3f} ms, p90 {times[int(0.9 * len(times))] * 1e3:.3f} ms")
    print(f"RSS {before['VmRSS'] / 1024:.1f} -> {after['VmRSS'] / 1024:.1f} MB, mapped {before['VmSize'] / 1024:.1f} -> {after['VmSize'] / 1024:.1f} MB, "
          f"mappings {before['maps']} -> {after['maps']}")
    print(f"a linked function lives in: {where}")


if __name__ == "__main__":
    main()
