"""Status: fixed by 75aac34 (a module mid-install is never retired); kept as a regression
check — it now ends with {'retired early': 0, 'wrong': 0, ...} and exit status 0.

Reproducer: a module being added can be freed by another thread's add to the same library
before its names are bound; its stubs then lead into freed (later reused) JIT memory.

    python tests/regressions/repro_retire_race.py [--seconds 20]
    python tests/regressions/repro_retire_race.py --no-calls     # only count modules removed on arrival

Two threads, one eager library. Thread A adds a 200-function module ``a0..a199`` (each
returns its version number), checks ``module.removed`` right after ``add_ir`` returned,
calls a few functions, removes the module, and again. Thread B does the same with another
module (``b0..b199``) in the same library. Nothing is shared between them but the library.

Symptom: within seconds, ``add_ir`` returns a module that is already ``removed`` (printed
as "RETIRED EARLY"); calls into it then return another module's results ("WRONG") or crash
the process (SIGSEGV in JIT'd memory: the stub jumps to freed code). In
the stress harness (tests/reliability/stress.py) this showed as calls of ``s4_f0`` returning the result of another
slot's function, then a segfault.

Cause (reading crates/jitload-engine/src/library.rs, `install`): an eager add inserts the
new module into `state.modules` and only then binds its functions' stubs one by one
(`bind_new`, which sets the stub's owner). After every add, `retire_superseded` retires each
module none of whose functions is owned by it. When thread B's add runs
`retire_superseded` between thread A's `state.modules.insert` and A's `bind_new` loop, A's
module looks superseded (no stub names it as owner yet), is removed from `state.modules`
and its memory freed (at once: no call is in flight); A then binds the stubs to the freed
bodies. Likely fix: bind the stubs before publishing the module, or have
`retire_superseded` skip modules whose install has not finished (or take one lock across
install and retire).
"""

from __future__ import annotations

import argparse
import faulthandler
import sys
import threading
import time

import jitload


def module(prefix: str, version: int, functions: int) -> str:
    return "\n".join(f"define i64 @{prefix}{i}() {{\n  ret i64 {version * 1000 + i}\n}}" for i in range(functions)) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--functions", type=int, default=200)
    ap.add_argument("--no-calls", action="store_true", help="only check module.removed after add_ir (no crash)")
    args = ap.parse_args()
    faulthandler.enable()
    lib = jitload.Session().library("race", opt_level=0)
    deadline = time.monotonic() + args.seconds
    problems = {"retired early": 0, "wrong": 0, "cycles": 0}
    lock = threading.Lock()

    def worker(prefix: str) -> None:
        version = 0
        while time.monotonic() < deadline:
            version += 1
            m = lib.add_ir(module(prefix, version, args.functions))
            early = m.removed
            bad = []
            for i in () if args.no_calls else (0, args.functions // 2, args.functions - 1):
                try:
                    got = lib.function(f"{prefix}{i}", "int64(void)")()
                except jitload.JitloadError as e:
                    bad.append(f"{prefix}{i}() raised {type(e).__name__}: {e}")
                    continue
                if got != version * 1000 + i:
                    bad.append(f"{prefix}{i}() = {got}, expected {version * 1000 + i}")
            with lock:
                problems["cycles"] += 1
                if early:
                    problems["retired early"] += 1
                    print(f"RETIRED EARLY: {prefix} version {version}: module.removed is True right after add_ir", flush=True)
                for b in bad:
                    problems["wrong"] += 1
                    print("WRONG:", b, flush=True)
            if early:
                # Its names are still bound (to freed code), so the next add would fail
                # with DuplicateSymbolError: stop this thread.
                return
            m.remove()

    threads = [threading.Thread(target=worker, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(problems)
    return 1 if problems["retired early"] or problems["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
