"""Threads importing, compiling, calling, reloading and removing at once, every result checked.

    python tests/reliability/stress.py --threads 8 --seconds 120     # the long run
    python tests/reliability/stress.py --threads 8 --seconds 5       # CI

Each thread loops over random operations until the time is up:
- own library: add a function returning a known value, call it, replace it (reload) and call
  again, remove the module and check the call raises RemovedError, sometimes remove the library;
- shared library: replace one function that every thread calls (each version returns a value
  ending in ...321, so a call through a torn or freed stub shows as a wrong result);
- lazy library: functions compiled on their first call, from several threads at once;
- Python callbacks (define_python) called from JIT'd code;
- imports of bitcode extension modules through the import hook (each compiles; isolated).
Exit status 0 only with 0 wrong results, 0 unexpected exceptions and no thread stuck (a
thread not done 60 s after the deadline is a deadlock: all stacks are dumped, exit 3).
Figures go to docs/reliability.json, section "stress" (unless --quick).
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import random
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jitload  # noqa: E402

FN = "define i64 @{name}(i64 %x) {{\n  %y = mul i64 %x, 1000\n  %z = add i64 %y, {k}\n  ret i64 %z\n}}\n"
MODULE_C = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *ok(PyObject *s, PyObject *a) { return PyLong_FromLong(%(k)d); }
static PyMethodDef methods[] = {{"ok", ok, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&def); }
"""


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: Counter = Counter()
        self.wrong: List[str] = []
        self.errors: List[str] = []

    def op(self, name: str) -> None:
        with self.lock:
            self.ops[name] += 1

    def bad(self, what: str) -> None:
        with self.lock:
            self.wrong.append(what)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def worker(tid: int, deadline: float, stats: Stats, shared: "jitload.Library", lazy: "jitload.Library",
           modules: List[str], seed: int) -> None:
    rng = random.Random(seed * 1000 + tid)
    session = jitload.Session.default()
    g = shared.function("g", "int64(int64)")
    n = 0
    own = session.library(f"own{tid}")
    while time.monotonic() < deadline:
        n += 1
        choice = rng.random()
        try:
            if choice < 0.35:
                k = rng.randrange(1, 999)
                m = own.add_ir(FN.format(name="f", k=k), replace=True)
                f = own.function("f", "int64(int64)")
                if f(7) != 7000 + k:
                    stats.bad(f"own f(7) = {f(7)}, expected {7000 + k}")
                m2 = own.add_ir(FN.format(name="f", k=k + 1), replace=True)
                if f(7) != 7001 + k:
                    stats.bad("own f after reload")
                if not m.removed:
                    stats.bad("replaced module not retired")
                m2.remove()
                try:
                    f(7)
                    stats.bad("call after remove did not raise")
                except jitload.RemovedError:
                    pass
                stats.op("add/reload/remove")
                if rng.random() < 0.1:
                    own.remove()
                    own = session.library(f"own{tid}.{n}")
                    stats.op("library remove")
            elif choice < 0.5:
                shared.add_ir(FN.format(name="g", k=rng.randrange(10) * 1000 + 321), replace=True)
                stats.op("shared replace")
            elif choice < 0.8:
                for _ in range(50):
                    v = g(rng.randrange(1000))
                    if v % 1000 != 321:
                        stats.bad(f"shared g returned {v}")
                stats.op("shared call x50")
            elif choice < 0.9:
                i = rng.randrange(20)
                fn = lazy.function(f"lz{i}", "int64(int64)")
                if fn(3) != 3000 + i:
                    stats.bad(f"lazy lz{i}")
                stats.op("lazy call")
            elif choice < 0.95:
                cb = own.define_python("cb", lambda x: x * 2, "int64(int64)", replace=True)
                own.add_ir("declare i64 @cb(i64)\ndefine i64 @via(i64 %x) {\n %r = call i64 @cb(i64 %x)\n ret i64 %r\n}\n", replace=True)
                if own.function("via", "int64(int64)")(21) != 42:
                    stats.bad("callback result")
                cb.remove()
                stats.op("python callback")
            else:
                if modules:
                    name = modules.pop()
                    mod = importlib.import_module(name)
                    if mod.ok() != int(name.rsplit("_", 1)[1]):
                        stats.bad(f"import {name}")
                    stats.op("import")
        except jitload.RemovedError:
            stats.op("removed (expected race)")
        except Exception:  # noqa: BLE001 - counted and reported
            stats.error(traceback.format_exc(limit=6))


def build_modules(count: int, directory: Path) -> List[str]:
    from jitload.build import compile as jl_compile

    names = []
    for i in range(count):
        name = f"stressmod_{os.getpid()}_{i}"
        src = directory / f"{name}.c"
        src.write_text(MODULE_C % {"name": name, "k": i})
        jl_compile([str(src)], str(directory / (name + jitload.BITCODE_SUFFIXES[0])), opt_level=1)
        names.append(name)
    return names


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--imports", type=int, default=24, help="bitcode modules to import during the run")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    faulthandler.enable()
    tmp = Path(tempfile.mkdtemp(prefix="jitload-stress-"))
    modules = build_modules(args.imports, tmp)
    sys.path.insert(0, str(tmp))
    jitload.install()
    session = jitload.Session.default()
    shared = session.library("shared")
    shared.add_ir(FN.format(name="g", k=321))
    lazy = session.library("lazy", lazy=True)
    lazy.add_ir("".join(FN.format(name=f"lz{i}", k=i) for i in range(20)))
    stats = Stats()
    start = time.monotonic()
    deadline = start + args.seconds
    threads = [threading.Thread(target=worker, args=(t, deadline, stats, shared, lazy, modules, args.seed), daemon=True)
               for t in range(args.threads)]
    for t in threads:
        t.start()
    stuck = False
    for t in threads:
        t.join(max(1.0, deadline + 60 - time.monotonic()))
        stuck |= t.is_alive()
    elapsed = time.monotonic() - start
    if stuck:
        faulthandler.dump_traceback(all_threads=True)
    fig: Dict[str, object] = {
        "threads": args.threads,
        "seconds": round(elapsed, 1),
        "operations": dict(stats.ops),
        "operations_total": sum(stats.ops.values()),
        "wrong_results": len(stats.wrong),
        "unexpected_exceptions": len(stats.errors),
        "deadlocks": int(stuck),
        "crashes": 0,
        "examples": (stats.wrong + stats.errors)[:5],
        "command": f"python tests/reliability/stress.py --threads {args.threads} --seconds {args.seconds:g}",
    }
    print(json.dumps(fig, indent=1))
    if not args.quick:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import common

        common.merge_results("stress", fig)
    sys.stdout.flush()
    if stuck:
        os._exit(3)
    return 0 if not stats.wrong and not stats.errors else 1


if __name__ == "__main__":
    sys.exit(main())
