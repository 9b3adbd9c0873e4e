"""Reproducer: removing a module deadlocks when another thread defines a new function name
in the same library at the same time.

    python tests/regressions/repro_stub_lock_deadlock.py [--seconds 20] [--native-stacks]

Thread R adds and removes a 100-function module (same names every time). Thread N adds
modules whose function names are new every time (and removes them). A watchdog reports
when neither thread has made progress for 10 s, prints both threads' Python stacks, and
exits 2.

Symptom: both threads hang (usually within a second or two), R in ``Module.remove`` and N
in ``Library.add_ir``; the process never finishes. In the stress harness (tests/reliability/stress.py) this showed
as the watchdog's STALL, with native stacks of several threads waiting in
``Library::stubs()`` (the stub table's RwLock read) called from ``retarget``.

Cause (reading crates/jitload-engine/src/library.rs, edition 2021): in ``remove_module``,
``if let Some(stub) = self.stubs().by_name.get(name).cloned() { ... }`` keeps the stub
table's read guard (a temporary of the ``if let`` scrutinee) alive for the whole block,
which waits for the stub's target lock and calls ``retarget`` -> ``block_of`` ->
``self.stubs()``: a second read lock on the same thread. ``stub()`` for a new name takes
the write lock. std's RwLock makes new readers wait while a writer waits, so: R holds
read #1 and waits for read #2, N's writer waits for R's read #1 to go. (The same shape
with a third thread resolving a lazy function — holding a target lock and needing a read
lock in ``retarget`` — also deadlocks.) ``Library::remove`` and ``address`` hold the read
guard across their bodies the same way. Likely fix: clone the Arc<Stub> out in its own
statement (``let stub = self.stubs().by_name.get(name).cloned();``) so the guard drops
before anything blocks, and never take the stub table's lock while holding it.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import sys
import threading
import time

import jitload


def module(prefix: str, functions: int) -> str:
    return "\n".join(f"define i64 @{prefix}{i}() {{\n  ret i64 {i}\n}}" for i in range(functions)) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--native-stacks", action="store_true", help="on deadlock, print native stacks (gdb attaches)")
    args = ap.parse_args()
    lib = jitload.Session().library("deadlock", opt_level=0)
    deadline = time.monotonic() + args.seconds
    progress = {"remove": 0, "new names": 0}
    last = [time.monotonic()]

    def remover() -> None:
        fixed = module("r", 100)
        while time.monotonic() < deadline:
            lib.add_ir(fixed).remove()
            progress["remove"] += 1
            last[0] = time.monotonic()

    def namer() -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            lib.add_ir(module(f"n{n}_", 20)).remove()
            progress["new names"] += 1
            last[0] = time.monotonic()

    threads = [threading.Thread(target=remover, daemon=True), threading.Thread(target=namer, daemon=True)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        if time.monotonic() - last[0] > 10:
            print(f"DEADLOCK: no progress for 10 s after {progress}; Python stacks:", flush=True)
            faulthandler.dump_traceback(all_threads=True)
            if args.native_stacks:
                import subprocess

                sys.stdout.flush()
                subprocess.run(["gdb", "-q", "-batch", "-p", str(os.getpid()), "-ex", "thread apply all bt 16"], check=False)
            os._exit(2)
    print(f"no deadlock in {args.seconds:.0f} s: {progress}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
