"""Status: fixed by 75aac34 (lazy pieces declare only what the function uses); kept as a
regression check — it now prints ~5-6 ms per first call at every module size.

Reproducer: in a lazy library, compiling one function costs time proportional to the size
of the whole module, so calling every function of an N-function module once is O(N^2).

    python tests/regressions/repro_lazy_quadratic.py            # modules of 250, 2500, 5000, 10000 functions

Symptom: the first call of a function in a lazy library (which compiles just that function)
takes ~7 ms in a 250-function module but ~20 ms at 5,000 functions and ~40 ms at 10,000 (same
functions, same opt level; the first 200 functions are called in each case). Calling all
5,000 functions of benches/engine.py's lazy module once takes ~100-160 s, about 10x the
eager compile of the whole module (~12 s).

Cause (reading crates/jitload-engine/shim/orc.cpp): `jitload_clone_module_part` clones the
kept module with `CloneModule(source, map, predicate)` for every function compiled. The
predicate only decides which *definitions* are copied; CloneModule still creates a
declaration for every other function and global of the module, and the new module (N
declarations) then goes through the pass pipeline and codegen. Likely fix: build the part
from the function's own references only (a new module with declarations of just the globals
the function uses, then CloneFunctionInto), or split the module into per-function parts once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches"))  # irgen
import irgen  # noqa: E402

import jitload  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="*", default=[250, 2500, 5000, 10000])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--max-ratio", type=float, help="fail (exit 1) if a first call in the largest module costs more than this many times one in the smallest")
    args = ap.parse_args()
    session = jitload.Session()
    per_call = {}
    for n in args.sizes:
        lib = session.library(f"lazy{n}", lazy=True)
        lib.add_ir(irgen.module_ir(irgen.specs(n, chain=4, trips=2)))
        functions = [lib.function(f"f{i}", "int64(int64)") for i in range(min(n, args.calls))]
        t0 = time.perf_counter()
        for f in functions:
            f(3)
        per = (time.perf_counter() - t0) / len(functions)
        print(f"{n:6d}-function lazy module: {per * 1000:6.2f} ms per first call (compiles one function); "
              f"all {n} would take ~{per * n:.0f} s", flush=True)
        lib.remove()
        per_call[n] = per
    ratio = per_call[max(per_call)] / per_call[min(per_call)]
    print(f"largest/smallest: {ratio:.2f}x")
    return 1 if args.max_ratio is not None and ratio > args.max_ratio else 0


if __name__ == "__main__":
    sys.exit(main())
