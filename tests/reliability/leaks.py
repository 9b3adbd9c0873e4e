"""Leak check: N cycles of add / call / replace (reload) / remove and library create / remove
through the engine API, plus bitcode imports and reloads through the import hook (compiled,
and from the object cache without LLVM, each freed with its module), under
valgrind's memcheck. Reports the bytes lost whose allocation stack passes through jitload
(`_native`: jitload-engine, jitload-py, the C++ shim; `_fastload`: the warm path), with CPython's and
LLVM's own process-lifetime allocations suppressed (tests/reliability/valgrind.supp,
documented there).

    python tests/reliability/leaks.py --cycles 1000

Figures go to docs/reliability.json, section "leaks".
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

WORKLOAD = r"""
import importlib, sys, os, gc
import jitload
cycles = int(sys.argv[1])
moddir = sys.argv[2]
sys.path.insert(0, moddir)
jitload.install()
session = jitload.Session.default()
IR = "define i64 @f(i64 %x) {{\n  %y = add i64 %x, {k}\n  ret i64 %y\n}}\n@counter = global i64 {k}\n"
for i in range(cycles):
    lib = session.library(f"leak{i % 7}")
    m = lib.add_ir(IR.format(k=i))
    f = lib.function("f", "int64(int64)")
    assert f(1) == i + 1
    m2 = lib.add_ir(IR.format(k=i + 1).replace("@counter", "@counter2"), replace=True)   # reload
    assert f(1) == i + 2
    m2.remove()
    try:
        f(1)
    except jitload.RemovedError:
        pass
    lib.remove()
    if i % 10 == 0:
        jitload.install(cache=False)                       # compiled by the engine
        mod = importlib.import_module("leakmod")           # import through the hook
        assert mod.ok() == "ok"
        importlib.reload(mod)
        del sys.modules["leakmod"], mod
        jitload.install(cache=True)
    warm = importlib.import_module("leakwarm")             # from the cache by _fastload (after the first)
    assert warm.ok() == "ok"
    del sys.modules["leakwarm"], warm                      # its code is freed with the module
gc.collect()
stats = jitload.cache_stats()
assert stats["without_llvm"] >= cycles - 1, stats
print("done", cycles)
"""

MODULE = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *ok(PyObject *s, PyObject *a) { return PyUnicode_FromString("ok"); }
static PyMethodDef methods[] = {{"ok", ok, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "NAME", NULL, -1, methods};
PyMODINIT_FUNC PyInit_NAME(void) { return PyModule_Create(&def); }
"""

LOST = re.compile(r"==\d+== (\S+(?: \S+)*) bytes in (\S+) blocks are (definitely|indirectly|possibly) lost in loss record")


def parse(log: str) -> Dict[str, object]:
    """Loss records; a record counts as jitload's if its stack names jitload code."""
    records: List[Dict[str, object]] = []
    blocks = log.split("\n==")
    current = None
    for line in log.splitlines():
        m = LOST.search(line)
        if m:
            current = {"bytes": int(m.group(1).replace(",", "")), "blocks": int(m.group(2).replace(",", "")), "kind": m.group(3), "stack": []}
            records.append(current)
            continue
        if current is not None:
            if re.match(r"==\d+== +(at|by) ", line):
                current["stack"].append(line.split(":", 1)[-1].strip())  # type: ignore[union-attr]
            elif re.match(r"==\d+== *$", line):
                current = None
    del blocks
    ours = [r for r in records if any(("jitload" in s or "_native" in s) for s in r["stack"])]  # type: ignore[union-attr]
    summary = {}
    for kind in ("definitely", "indirectly", "possibly"):
        m = re.search(rf"{kind} lost: ([\d,]+) bytes in ([\d,]+) blocks", log)
        summary[kind] = int(m.group(1).replace(",", "")) if m else None
    return {
        "summary_all_bytes": summary,
        "jitload_records": len(ours),
        "jitload_definitely_lost_bytes": sum(int(r["bytes"]) for r in ours if r["kind"] == "definitely"),  # type: ignore[arg-type]
        "jitload_indirectly_lost_bytes": sum(int(r["bytes"]) for r in ours if r["kind"] == "indirectly"),  # type: ignore[arg-type]
        "jitload_possibly_lost_bytes": sum(int(r["bytes"]) for r in ours if r["kind"] == "possibly"),  # type: ignore[arg-type]
        "jitload_examples": [{"bytes": r["bytes"], "kind": r["kind"], "stack": r["stack"][:12]} for r in ours[:5]],  # type: ignore[index]
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    valgrind = shutil.which("valgrind")
    if not valgrind:
        print("valgrind not installed (apt-get install valgrind)")
        return 2
    from jitload.build import compile as jl_compile
    import jitload

    tmp = Path(tempfile.mkdtemp(prefix="jitload-leaks-"))
    for name in ("leakmod", "leakwarm"):
        src = tmp / f"{name}.c"
        src.write_text(MODULE.replace("NAME", name))
        jl_compile([str(src)], str(tmp / (name + jitload.BITCODE_SUFFIXES[0])))
    log = common.WORK / "valgrind.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    supp = Path(__file__).resolve().parent / "valgrind.supp"
    cmd = [valgrind, "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
           "--errors-for-leak-kinds=definite", "--smc-check=all-non-file", "--num-callers=40",
           f"--suppressions={supp}", f"--log-file={log}",
           sys.executable, "-X", "faulthandler", "-c", WORKLOAD, str(args.cycles), str(tmp)]
    env = common.env_with_pythonpath({"PYTHONMALLOC": "malloc", "JITLOAD_CACHE_DIR": str(tmp / "cache"), "JITLOAD_ISOLATION": "none"})
    start = time.monotonic()
    proc = subprocess.run(["nice", "-n", "10", *cmd], capture_output=True, text=True, env=env)
    elapsed = time.monotonic() - start
    text = log.read_text(errors="replace")
    fig = parse(text)
    fig.update(cycles=args.cycles, exit_code=proc.returncode, seconds=round(elapsed, 1), stdout=proc.stdout.strip()[-200:],
               command=f"python tests/reliability/leaks.py --cycles {args.cycles}",
               note="PYTHONMALLOC=malloc; every 10th cycle an import compiled in-process (cache off, JITLOAD_ISOLATION=none, "
                    "so valgrind sees the compiler's allocations too), every cycle an import from the cache by _fastload, freed with its module")
    print({k: v for k, v in fig.items() if k != "jitload_examples"})
    for ex in fig["jitload_examples"]:  # type: ignore[union-attr]
        print(ex)
    if not args.quick:
        common.merge_results("leaks", fig)
    return 0 if proc.returncode == 0 and fig["jitload_definitely_lost_bytes"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
