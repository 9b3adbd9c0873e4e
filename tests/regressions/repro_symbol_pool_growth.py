"""Status: fixed by 75aac34 (dead pool entries dropped after each removal); kept as a
regression check — it now prints ~0 B/function/cycle.

Reproducer: memory grows on every add/remove cycle of the same module, in proportion to
the number of functions and to the length of their names.

    python tests/regressions/repro_symbol_pool_growth.py                 # growth per cycle, two name lengths
    python tests/regressions/repro_symbol_pool_growth.py --cycles 2000 --name-length 200
    python tests/regressions/repro_symbol_pool_growth.py --libraries    # create-library/add/remove-library
    python tests/regressions/repro_symbol_pool_growth.py --distinct     # new function names every cycle

Symptom: ``lib.add_ir(ir).remove()`` in a loop, same IR every time (same names), no calls:
the process's malloc'd bytes in use (``mallinfo2().uordblks``) grow linearly, ~46 bytes per
function per cycle with 3-character names and ~250 with 203-character names, i.e. about one
copy of the name (plus ~45 bytes) per function per cycle. Python's own heap does not grow
(tracemalloc), and no mappings are left behind (/proc/self/maps): the leak is in native
memory, keyed by names.

Cause (confirmed with --trap under gdb, below): every add renames each function's body to a
name unique to the module (``name.jitload.<module id>``) and interns it in the ORC
ExecutionSession's SymbolStringPool. ORC never drops pool entries whose reference count has
fallen to zero unless ``SymbolStringPool::clearDeadEntries()`` is called
(``LLVMOrcSymbolStringPoolClearDeadEntries`` in the C API), and jitload never calls it. So
each cycle leaves one dead entry per function.

Confirmation under gdb: ``--trap`` stops the process with SIGTRAP after the cycles; the gdb
script remembers the ExecutionSession from the first ``LLVMOrcExecutionSessionIntern`` call
and, at the trap, clears the pool's dead entries; the script then prints the bytes in use
again, which fall back to (about) the warm-up level:

    gdb -q -batch -x tests/regressions/repro_symbol_pool_growth.gdb \
        --args .venv/bin/python tests/regressions/repro_symbol_pool_growth.py --trap

Likely fix (in crates/, not done here): call LLVMOrcSymbolStringPoolClearDeadEntries on the
session's pool after a module is freed (e.g. every N removals, under the session lock).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benches"))  # irgen
import irgen  # noqa: E402

import jitload  # noqa: E402


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2


def in_use() -> int:
    gc.collect()
    return int(_libc.mallinfo2().uordblks)


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(functions: int, name_length: int, cycles: int, warmup: int, trap: bool, libraries: bool, distinct: bool) -> float:
    """Returns the growth of malloc'd memory per function and cycle (bytes)."""
    prefix = "f" + "x" * max(0, name_length - 3) + "_"
    ir = irgen.module_ir(irgen.specs(functions, prefix=prefix, chain=4, trips=0))
    fresh = (irgen.module_ir(irgen.specs(functions, prefix=f"c{i}_", chain=4, trips=0)) for i in range(1 << 62))
    session = jitload.Session()
    lib = session.library("repro", opt_level=0)
    counter = iter(range(1 << 62))

    def cycle() -> None:
        if libraries:  # a fresh library each cycle, removed whole
            other = session.library(f"repro{next(counter)}", opt_level=0)
            other.add_ir(ir)
            other.remove()
        elif distinct:  # new function names every cycle
            lib.add_ir(next(fresh)).remove()
        else:
            lib.add_ir(ir).remove()

    for _ in range(warmup):
        cycle()
    before, rss_before = in_use(), rss_kb()
    for _ in range(cycles):
        cycle()
    after, rss_after = in_use(), rss_kb()
    per = (after - before) / cycles
    what = "create-library/add/library.remove()" if libraries else "add/remove, new names each cycle" if distinct else "add/remove"
    print(f"{what}: {functions} functions, names ~{len(prefix) + 2} chars, {cycles} cycles: malloc in use "
          f"+{(after - before) / 2**20:.2f} MB ({per:.0f} B/cycle, {per / functions:.1f} B/function/cycle); "
          f"RSS +{(rss_after - rss_before) / 1024:.2f} MB", flush=True)
    if trap:
        os.kill(os.getpid(), signal.SIGTRAP)  # gdb clears the pool's dead entries here
        cleared = in_use()
        print(f"after LLVMOrcSymbolStringPoolClearDeadEntries: malloc in use {(cleared - before) / 2**20:+.2f} MB "
              f"relative to after warm-up (was {(after - before) / 2**20:+.2f} MB)", flush=True)
    return per / functions


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--functions", type=int, default=100)
    ap.add_argument("--name-length", type=int, action="append", help="(repeatable) default: 3 and 203")
    ap.add_argument("--libraries", action="store_true", help="cycle whole libraries instead of modules")
    ap.add_argument("--distinct", action="store_true", help="new function names every cycle (c<cycle>_<i>)")
    ap.add_argument("--trap", action="store_true", help="SIGTRAP after the cycles (run under gdb with the .gdb script)")
    ap.add_argument("--max-growth", type=float, help="fail (exit 1) if malloc'd memory grows by more bytes per function and cycle")
    args = ap.parse_args()
    lengths = args.name_length or ([3] if args.trap else [3, 203])
    growth = max(run(args.functions, n, args.cycles, args.warmup, args.trap, args.libraries, args.distinct) for n in lengths)
    return 1 if args.max_growth is not None and growth > args.max_growth else 0


if __name__ == "__main__":
    sys.exit(main())
