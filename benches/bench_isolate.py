"""What isolation costs an engine-API add: `add_ir` of the same IR compiled in a compiler
process (`isolate=True`, the default) and in-process (`isolate=False`), at -O0 and -O2, for
a one-function module and a 200-function one.

    python benches/bench_isolate.py [--reps 41]

Prints the median and the fastest add per case in milliseconds (each add defines new names,
so nothing is cached or replaced). The difference is the fork of this process (its page
tables: the more memory the interpreter maps, the more a fork costs), a target machine made
in the child (the parent pools them), and the object's trip through a pipe.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jitload


def module(prefix: str, functions: int) -> str:
    return "".join(
        f"define i64 @{prefix}_{f}(i64 %x) {{\n  %a = mul i64 %x, {f + 3}\n  %b = add i64 %a, {f}\n"
        f"  %c = xor i64 %b, %x\n  ret i64 %c\n}}\n"
        for f in range(functions)
    )


def measure(opt_level: int, isolate: bool, functions: int, reps: int) -> tuple[float, float]:
    lib = jitload.Session().library(f"bench-{opt_level}-{isolate}-{functions}", opt_level=opt_level, isolate=isolate)
    times = []
    for rep in range(reps):
        ir = module(f"r{rep}", functions)
        t0 = time.perf_counter()
        lib.add_ir(ir)
        times.append(time.perf_counter() - t0)
    check = lib.function(f"r0_{functions - 1}", "int64(int64)")(5)
    assert check == ((5 * (functions + 2) + functions - 1) ^ 5), check
    return statistics.median(times) * 1e3, min(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=41)
    args = parser.parse_args()
    print("| functions | opt | in-process median (min) ms | isolated median (min) ms |")
    print("|---:|---:|---:|---:|")
    for functions in (1, 200):
        for opt_level in (0, 2):
            inproc = measure(opt_level, False, functions, args.reps)
            isolated = measure(opt_level, True, functions, args.reps)
            print(f"| {functions} | O{opt_level} | {inproc[0]:.2f} ({inproc[1]:.2f}) | {isolated[0]:.2f} ({isolated[1]:.2f}) |")


if __name__ == "__main__":
    main()
