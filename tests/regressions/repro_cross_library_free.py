"""Reproducer: code of library A is freed while a call that entered through library B (linked
to A) is running it or about to jump into it.

    python tests/regressions/repro_cross_library_free.py [--seconds 30] [--eager]   # --eager crashes too
    python tests/regressions/repro_cross_library_free.py --control   # the same calls entering through A: no crash

Library A (lazy by default) defines ``target(x)``; a replacer thread replaces it over and
over (new version numbers). Library B is linked to A and defines ``via_b(x)``, which calls
``target`` (A's stub). Two caller threads call ``via_b`` through B's Function object and
check the result is a version of ``target``.

Symptom: SIGSEGV within seconds, a jump to an unmapped page in JIT memory (gdb:
``0x00007ffff6e2e000 in ?? ()`` called from JIT'd code); in the stress harness (tests/reliability/stress.py) it
showed as a segfault in ``op_private_library`` (a private library calling an anchor of the
shared lazy library) while the anchor was replaced. Calling ``target`` through A's own
Function object, or ``via_a`` defined in A, never crashes (the stress run passes without
private libraries).

Cause (reading crates/jitload-engine/src/library.rs and grace.rs): freeing is deferred per
library — a module's memory is retired into *its own library's* epochs, and only calls that
entered through that library's Python API (``Library::enter``) hold those epochs. A call
entering through B holds B's epoch only; when it reaches A's stub (and, for a lazy A, waits
while A compiles the new body), A can replace and free the body that stub led to — the
caller then runs or jumps into freed code. Likely fix: a session-wide epoch for calls (or
entering every library in the link closure), so a free waits for every call that could
reach the code.
"""

from __future__ import annotations

import argparse
import faulthandler
import sys
import threading
import time

import jitload


def target_ir(version: int) -> str:
    return f"""define i64 @target(i64 %x) {{
entry:
  br label %loop
loop:
  %k = phi i64 [ 0, %entry ], [ %k1, %loop ]
  %k1 = add i64 %k, 1
  %more = icmp ult i64 %k1, %x
  br i1 %more, label %loop, label %done
done:
  %r = add i64 %k1, {version * 1000}
  ret i64 %r
}}
"""


VIA_B = """declare i64 @target(i64)
define i64 @via_b(i64 %x) {
  %r = call i64 @target(i64 %x)
  ret i64 %r
}
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--eager", action="store_true", help="library A eager (the window is much smaller)")
    ap.add_argument("--control", action="store_true", help="call via_a, defined in A itself, through A (does not crash)")
    args = ap.parse_args()
    faulthandler.enable()
    session = jitload.Session()
    a = session.library("A", lazy=not args.eager, opt_level=1)
    a.add_ir(target_ir(1))
    b = session.library("B", link=[a], opt_level=1)
    b.add_ir(VIA_B)
    owner, name = (a, "via_a") if args.control else (b, "via_b")
    if args.control:
        a.add_ir(VIA_B.replace("via_b", "via_a"))
    try:  # copy-and-patch wrappers hold the GIL during a call unless asked not to
        via_b = owner.function(name, "int64(int64)", release_gil=True)
    except TypeError:  # the ctypes path always releases it
        via_b = owner.function(name, "int64(int64)")
    deadline = time.monotonic() + args.seconds
    state = {"version": 1, "calls": 0, "replaces": 0, "wrong": 0}

    def replacer() -> None:
        while time.monotonic() < deadline:
            v = state["version"] + 1
            a.add_ir(target_ir(v), replace=True)
            state["version"] = v
            state["replaces"] += 1

    def caller() -> None:
        while time.monotonic() < deadline:
            got = via_b(50)
            state["calls"] += 1
            if got % 1000 != 50 or not 1 <= got // 1000 <= state["version"] + 1:
                state["wrong"] += 1
                print(f"WRONG: via_b(50) = {got}", flush=True)

    threads = [threading.Thread(target=replacer)] + [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"no crash in {args.seconds:.0f} s: {state}")
    return 1 if state["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
