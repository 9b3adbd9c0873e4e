"""Native calls and Python callbacks: jitload.fast against its peers, side by side in one run.

    python benches/bench_calls.py [--quick] [--json PATH] [--md PATH]

Calls, from a Python loop (``timeit``'s loop; its empty-loop cost is subtracted):
  add(int64, int64) -> int64 and f() -> void, through
  * floor        a METH_FASTCALL C extension function built for this benchmark (clang-22 -O2);
                 add_native/f_native are in the same file, so clang inlines them (f() is then
                 4 instructions: no call at all)
  * C ext calling the function  the same extension code, calling add_native/f_native through
                 a pointer (not inlined), as an extension wrapping another library's function
                 (a PLT call) or a JIT'd function must
  * jitload.fast a wrapper from jitload.fast.wrap (copy-and-patch stencils)
  * ctypes       CDLL function with argtypes/restype
  * cffi-api     a compiled cffi module (API mode)
  * cffi-abi     ffi.dlopen (ABI mode)
  * numba        @njit functions (the dispatcher's call cost)
  * jitload.engine  the engine's Function (today's ctypes path), when importable
Callbacks, from a native loop in the C extension, per call of cb(i, 1) -> int64 and cb() -> int64:
  * direct       PyObject_Vectorcall from C (boxing i and 1, unboxing the result)
  * jitload.fast a thunk from jitload.fast.callback, called through its C function pointer
  * ctypes       a CFUNCTYPE callback
  * cffi-api     an extern "Python" function of the compiled cffi module
  * cffi-abi     ffi.callback
Build cost: jitload.fast.wrap and jitload.fast.callback, median per object.

Each round runs every peer once in a shuffled order; figures are medians over rounds, with
the 25th-75th percentile. Writes benchmarks/calls.json and benchmarks/calls.md.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks"

EXT_SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

int64_t add_native(int64_t a, int64_t b) { return a + b; }
void f_native(void) {}

/* The floor: what a hand-written extension does for add(a, b) and f(), calling CALLEE. */
#define EXT_ADD(NAME, CALLEE)                                                             \
    static PyObject *NAME(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {      \
        if (nargs != 2) {                                                                 \
            PyErr_SetString(PyExc_TypeError, "add() takes 2 arguments");                  \
            return NULL;                                                                  \
        }                                                                                 \
        long long a = PyLong_AsLongLong(args[0]);                                         \
        if (a == -1 && PyErr_Occurred()) return NULL;                                     \
        long long b = PyLong_AsLongLong(args[1]);                                         \
        if (b == -1 && PyErr_Occurred()) return NULL;                                     \
        return PyLong_FromLongLong(CALLEE(a, b));                                         \
    }
#define EXT_F(NAME, CALLEE)                                                               \
    static PyObject *NAME(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {      \
        if (nargs != 0) {                                                                 \
            PyErr_SetString(PyExc_TypeError, "f() takes no arguments");                   \
            return NULL;                                                                  \
        }                                                                                 \
        CALLEE();                                                                         \
        Py_RETURN_NONE;                                                                   \
    }
EXT_ADD(ext_add, add_native)
EXT_F(ext_f, f_native)

/* The same, calling the functions for real (not inlined): what an extension wrapping a
 * function of another library (through the PLT) or a JIT'd function does. */
static int64_t (*volatile add_ptr)(int64_t, int64_t) = add_native;
static void (*volatile f_ptr)(void) = f_native;
EXT_ADD(ext_add_call, add_ptr)
EXT_F(ext_f_call, f_ptr)

/* Native loops calling a C function pointer: cb(i, 1) or cb(), n times. */
static PyObject *loop_ptr2(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t (*cb)(int64_t, int64_t) = (int64_t (*)(int64_t, int64_t))PyLong_AsVoidPtr(args[0]);
    long long n = PyLong_AsLongLong(args[1]);
    int64_t sum = 0;
    for (long long i = 0; i < n; i++) sum += cb(i, 1);
    return PyLong_FromLongLong(sum);
}
static PyObject *loop_ptr0(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t (*cb)(void) = (int64_t (*)(void))PyLong_AsVoidPtr(args[0]);
    long long n = PyLong_AsLongLong(args[1]);
    int64_t sum = 0;
    for (long long i = 0; i < n; i++) sum += cb();
    return PyLong_FromLongLong(sum);
}

/* The callback floor: the same loops calling the Python callable directly. */
static PyObject *loop_direct2(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *callable = args[0];
    long long n = PyLong_AsLongLong(args[1]);
    int64_t sum = 0;
    for (long long i = 0; i < n; i++) {
        PyObject *argv[3] = {NULL, PyLong_FromLongLong(i), PyLong_FromLongLong(1)};
        if (!argv[1] || !argv[2]) return NULL;
        PyObject *r = PyObject_Vectorcall(callable, argv + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(argv[1]);
        Py_DECREF(argv[2]);
        if (!r) return NULL;
        long long v = PyLong_AsLongLong(r);
        Py_DECREF(r);
        if (v == -1 && PyErr_Occurred()) return NULL;
        sum += v;
    }
    return PyLong_FromLongLong(sum);
}
static PyObject *loop_direct0(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    PyObject *callable = args[0];
    long long n = PyLong_AsLongLong(args[1]);
    int64_t sum = 0;
    for (long long i = 0; i < n; i++) {
        PyObject *r = PyObject_Vectorcall(callable, NULL, 0, NULL);
        if (!r) return NULL;
        long long v = PyLong_AsLongLong(r);
        Py_DECREF(r);
        if (v == -1 && PyErr_Occurred()) return NULL;
        sum += v;
    }
    return PyLong_FromLongLong(sum);
}

static PyMethodDef methods[] = {
    {"add", (PyCFunction)(void (*)(void))ext_add, METH_FASTCALL, NULL},
    {"f", (PyCFunction)(void (*)(void))ext_f, METH_FASTCALL, NULL},
    {"add_call", (PyCFunction)(void (*)(void))ext_add_call, METH_FASTCALL, NULL},
    {"f_call", (PyCFunction)(void (*)(void))ext_f_call, METH_FASTCALL, NULL},
    {"loop_ptr2", (PyCFunction)(void (*)(void))loop_ptr2, METH_FASTCALL, NULL},
    {"loop_ptr0", (PyCFunction)(void (*)(void))loop_ptr0, METH_FASTCALL, NULL},
    {"loop_direct2", (PyCFunction)(void (*)(void))loop_direct2, METH_FASTCALL, NULL},
    {"loop_direct0", (PyCFunction)(void (*)(void))loop_direct0, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_callbench", NULL, -1, methods};
PyMODINIT_FUNC PyInit__callbench(void) { return PyModule_Create(&module); }
"""

CFFI_CDEF = """
int64_t add_native(int64_t a, int64_t b);
void f_native(void);
extern "Python" int64_t cffi_cb2(int64_t, int64_t);
extern "Python" int64_t cffi_cb0(void);
"""
CFFI_SOURCE = """
#include <stdint.h>
int64_t add_native(int64_t a, int64_t b) { return a + b; }
void f_native(void) {}
"""


CALLING_FLOOR = "C ext calling the function (not inlined)"


def load_module(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_extension(work: Path) -> Tuple[Any, Path]:
    src = work / "_callbench.c"
    src.write_text(EXT_SOURCE)
    so = work / ("_callbench" + sysconfig.get_config_var("EXT_SUFFIX"))
    include = sysconfig.get_paths()["include"]
    subprocess.run(["clang-22", "-O2", "-shared", "-fPIC", f"-I{include}", str(src), "-o", str(so)], check=True)
    return load_module("_callbench", so), so


def build_cffi_api(work: Path) -> Optional[Any]:
    try:
        import cffi
    except ImportError:
        return None
    ffi = cffi.FFI()
    ffi.cdef(CFFI_CDEF)
    ffi.set_source("_callbench_cffi", CFFI_SOURCE, extra_compile_args=["-O2"])
    env = dict(os.environ, CC="clang-22")
    saved = os.environ.copy()
    os.environ.update(env)
    try:
        so = ffi.compile(tmpdir=str(work), verbose=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return load_module("_callbench_cffi", Path(so))


def address(fn: Any) -> int:
    value = ctypes.cast(fn, ctypes.c_void_p).value
    assert value
    return value


def cb2(i: int, one: int) -> int:
    return i


def cb0() -> int:
    return 0


class Peers:
    """Everything measured, built once."""

    def __init__(self, work: Path) -> None:
        import jitload.fast as fast

        self.fast = fast
        self.ext, so = build_extension(work)
        self.lib = ctypes.CDLL(str(so))
        add_addr, f_addr = address(self.lib.add_native), address(self.lib.f_native)
        self.calls: Dict[str, Dict[str, Callable[..., Any]]] = {"add(int64, int64)": {}, "f()": {}}
        add, f = self.calls["add(int64, int64)"], self.calls["f()"]
        add["floor (METH_FASTCALL ext)"] = self.ext.add
        f["floor (METH_FASTCALL ext)"] = self.ext.f
        add[CALLING_FLOOR] = self.ext.add_call
        f[CALLING_FLOOR] = self.ext.f_call
        add["jitload.fast"] = fast.wrap(add_addr, "int64(int64, int64)", name="add")
        f["jitload.fast"] = fast.wrap(f_addr, "void()", name="f")
        c_add = self.lib.add_native
        c_add.argtypes, c_add.restype = [ctypes.c_int64, ctypes.c_int64], ctypes.c_int64
        c_f = self.lib.f_native
        c_f.argtypes, c_f.restype = [], None
        add["ctypes"], f["ctypes"] = c_add, c_f
        self.notes: List[str] = []
        api = build_cffi_api(work)
        if api is not None:
            add["cffi API mode"], f["cffi API mode"] = api.lib.add_native, api.lib.f_native
            import cffi

            abi = cffi.FFI()
            abi.cdef("int64_t add_native(int64_t, int64_t); void f_native(void);")
            abi_lib = abi.dlopen(str(so))
            add["cffi ABI mode"], f["cffi ABI mode"] = abi_lib.add_native, abi_lib.f_native
        else:
            self.notes.append("cffi not installed: pip install cffi")
        try:
            import numba

            @numba.njit(cache=False)
            def nb_add(a: int, b: int) -> int:
                return a + b

            @numba.njit(cache=False)
            def nb_f() -> None:
                pass

            nb_add(1, 2)
            nb_f()
            add["numba @njit"], f["numba @njit"] = nb_add, nb_f
        except ImportError:
            self.notes.append("numba not installed: pip install numba")
        try:
            import jitload

            engine_lib = jitload.Session().library("callbench")
            engine_lib.add_ir(
                "define i64 @add(i64 %a, i64 %b) {\n  %s = add i64 %a, %b\n  ret i64 %s\n}\n"
                "define void @f() {\n  ret void\n}\n"
            )
            add["jitload.engine Function"] = engine_lib.function("add", "int64(int64, int64)")
            f["jitload.engine Function"] = engine_lib.function("f", "void()")
            self.engine_lib = engine_lib
        except Exception as exc:  # noqa: BLE001 - the engine is optional here
            self.notes.append(f"jitload engine Function skipped: {exc}")

        # Callbacks: (loop, pointer or callable) per peer.
        self.callbacks: Dict[str, Dict[str, Tuple[Callable[[Any, int], int], Any]]] = {"cb(i, 1)": {}, "cb()": {}}
        two, zero = self.callbacks["cb(i, 1)"], self.callbacks["cb()"]
        two["direct PyObject_Vectorcall"] = (self.ext.loop_direct2, cb2)
        zero["direct PyObject_Vectorcall"] = (self.ext.loop_direct0, cb0)
        self.thunks = [fast.callback(cb2, "int64(int64, int64)"), fast.callback(cb0, "int64()")]
        two["jitload.fast"] = (self.ext.loop_ptr2, self.thunks[0].address)
        zero["jitload.fast"] = (self.ext.loop_ptr0, self.thunks[1].address)
        self.ctypes_cbs = [
            ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)(cb2),
            ctypes.CFUNCTYPE(ctypes.c_int64)(cb0),
        ]
        two["ctypes CFUNCTYPE"] = (self.ext.loop_ptr2, address(self.ctypes_cbs[0]))
        zero["ctypes CFUNCTYPE"] = (self.ext.loop_ptr0, address(self.ctypes_cbs[1]))
        if api is not None:
            api.ffi.def_extern(name="cffi_cb2")(cb2)
            api.ffi.def_extern(name="cffi_cb0")(cb0)
            two["cffi API mode (extern Python)"] = (self.ext.loop_ptr2, int(api.ffi.cast("uintptr_t", api.ffi.addressof(api.lib, "cffi_cb2"))))
            zero["cffi API mode (extern Python)"] = (self.ext.loop_ptr0, int(api.ffi.cast("uintptr_t", api.ffi.addressof(api.lib, "cffi_cb0"))))
            import cffi

            ffi = cffi.FFI()
            self.cffi_cbs = [ffi.callback("int64_t(int64_t, int64_t)", cb2), ffi.callback("int64_t(void)", cb0)]
            two["cffi ABI mode (ffi.callback)"] = (self.ext.loop_ptr2, int(ffi.cast("uintptr_t", self.cffi_cbs[0])))
            zero["cffi ABI mode (ffi.callback)"] = (self.ext.loop_ptr0, int(ffi.cast("uintptr_t", self.cffi_cbs[1])))
        self.add_addr = add_addr
        self.check()

    def check(self) -> None:
        for name, fn in self.calls["add(int64, int64)"].items():
            assert fn(2, 3) == 5, name
        for name, fn in self.calls["f()"].items():
            assert fn() is None, name
        for name, (loop, target) in self.callbacks["cb(i, 1)"].items():
            assert loop(target, 10) == 45, name
        for name, (loop, target) in self.callbacks["cb()"].items():
            assert loop(target, 10) == 0, name


def call_runner(fn: Callable[..., Any], two_args: bool, n: int) -> Callable[[], float]:
    timer = timeit.Timer("f(1, 2)" if two_args else "f()", globals={"f": fn})
    return lambda: timer.timeit(n) / n


def percentiles(xs: List[float]) -> Tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def measure(peers: Peers, rounds: int, calls: int, callbacks: int, builds: int) -> Dict[str, Any]:
    empty = timeit.Timer("pass")
    runners: Dict[Tuple[str, str], Callable[[], float]] = {}
    for bench, fns in peers.calls.items():
        for name, fn in fns.items():
            runners[(bench, name)] = call_runner(fn, bench.startswith("add"), calls)
    for bench, entries in peers.callbacks.items():
        for name, (loop, target) in entries.items():
            def run(loop: Callable[[Any, int], int] = loop, target: Any = target) -> float:
                t0 = time.perf_counter()
                loop(target, callbacks)
                return (time.perf_counter() - t0) / callbacks

            runners[(bench, name)] = run
    samples: Dict[Tuple[str, str], List[float]] = {k: [] for k in runners}
    loop_cost: List[float] = []
    keys = list(runners)
    for _ in range(rounds):
        random.shuffle(keys)
        loop_cost.append(empty.timeit(calls) / calls)
        for key in keys:
            samples[key].append(runners[key]())
    overhead = statistics.median(loop_cost)
    results: Dict[str, Any] = {"loop_overhead_ns": overhead * 1e9, "calls": {}, "callbacks": {}, "build": {}}
    for (bench, name), xs in samples.items():
        is_call = bench in peers.calls
        if is_call:
            xs = [x - overhead for x in xs]
        p25, med, p75 = percentiles(xs)
        section = "calls" if is_call else "callbacks"
        results[section].setdefault(bench, {})[name] = {
            "median_ns": med * 1e9,
            "p25_ns": p25 * 1e9,
            "p75_ns": p75 * 1e9,
            "min_ns": min(xs) * 1e9,
        }
    fast = peers.fast
    sig = "int64(int64, int64)"
    for kind, make in (
        ("wrap", lambda: fast.wrap(peers.add_addr, sig)),
        ("callback", lambda: fast.callback(cb2, sig)),
    ):
        times = []
        keep = []
        for _ in range(builds):
            t0 = time.perf_counter()
            obj = make()
            times.append(time.perf_counter() - t0)
            keep.append(obj)
            if len(keep) > 200:
                keep.clear()
        p25, med, p75 = percentiles(times)
        results["build"][kind] = {"median_us": med * 1e6, "p25_us": p25 * 1e6, "p75_us": p75 * 1e6}
    return results


def verdicts(results: Dict[str, Any]) -> List[Tuple[str, bool, str]]:
    out: List[Tuple[str, bool, str]] = []
    for bench, peers in results["calls"].items():
        floor = peers["floor (METH_FASTCALL ext)"]["median_ns"]
        mine = peers["jitload.fast"]["median_ns"]
        ratio = mine / floor
        out.append((f"{bench}: jitload.fast <= 1.2x the C extension floor", ratio <= 1.2, f"{ratio:.2f}x"))
        if CALLING_FLOOR in peers:
            calling = mine / peers[CALLING_FLOOR]["median_ns"]
            out.append((f"{bench}: (for reference) <= 1.2x a C extension that calls the function", calling <= 1.2, f"{calling:.2f}x"))
        speedup = peers["ctypes"]["median_ns"] / mine
        out.append((f"{bench}: >= 10x faster than ctypes", speedup >= 10, f"{speedup:.1f}x"))
        for other in ("cffi API mode", "numba @njit"):
            if other in peers:
                theirs = peers[other]["median_ns"]
                out.append((f"{bench}: faster than {other}", mine < theirs, f"{mine:.1f} vs {theirs:.1f} ns"))
    for bench, peers in results["callbacks"].items():
        floor = peers["direct PyObject_Vectorcall"]["median_ns"]
        mine = peers["jitload.fast"]["median_ns"]
        out.append((f"callback {bench}: <= 1.3x a direct PyObject_Vectorcall", mine / floor <= 1.3, f"{mine / floor:.2f}x"))
        speedup = peers["ctypes CFUNCTYPE"]["median_ns"] / mine
        out.append((f"callback {bench}: >= 2.5x faster than ctypes", speedup >= 2.5, f"{speedup:.1f}x"))
        # What any callback can reach at best: the floor (no conversion layer at all).
        bound = peers["ctypes CFUNCTYPE"]["median_ns"] / floor
        out.append((f"callback {bench}: (for reference) the direct PyObject_Vectorcall floor itself is >= 2.5x faster than ctypes", bound >= 2.5, f"{bound:.1f}x"))
    for kind, r in results["build"].items():
        out.append((f"building a {kind} < 20 us", r["median_us"] < 20, f"{r['median_us']:.1f} us"))
    return out


def markdown(results: Dict[str, Any], meta: Dict[str, Any]) -> str:
    lines = [
        "# Calls and callbacks (benches/bench_calls.py)",
        "",
        f"{meta['python']} on {meta['machine']}, load average {meta['load']} at the start; {meta['rounds']} rounds, "
        "medians (p25-p75) and the best round. "
        f"Calls: ns per call from a Python loop minus the empty loop ({results['loop_overhead_ns']:.1f} ns). "
        "Callbacks: ns per call from a native loop.",
        "",
    ]
    for section, floor_name in (("calls", "floor (METH_FASTCALL ext)"), ("callbacks", "direct PyObject_Vectorcall")):
        for bench, peers in results[section].items():
            floor = peers[floor_name]["median_ns"]
            title = f"`{bench}`" if section == "calls" else f"callback `{bench}` from a native loop"
            best_floor = peers[floor_name]["min_ns"]
            lines += [f"## {title}", "", "| peer | median ns | p25-p75 | vs floor | best ns | best vs floor |", "|---|---:|---:|---:|---:|---:|"]
            for name, r in sorted(peers.items(), key=lambda kv: kv[1]["median_ns"]):
                lines.append(
                    f"| {name} | {r['median_ns']:.1f} | {r['p25_ns']:.1f}-{r['p75_ns']:.1f} | {r['median_ns'] / floor:.2f}x "
                    f"| {r['min_ns']:.1f} | {r['min_ns'] / best_floor:.2f}x |"
                )
            lines.append("")
    lines += ["## Building", "", "| object | median us | p25-p75 |", "|---|---:|---:|"]
    for kind, r in results["build"].items():
        lines.append(f"| jitload.fast.{kind} | {r['median_us']:.1f} | {r['p25_us']:.1f}-{r['p75_us']:.1f} |")
    lines += ["", "## Targets", ""]
    for text, ok, value in verdicts(results):
        lines.append(f"- {'met' if ok else 'MISSED'}: {text} ({value})")
    for note in meta.get("notes", []):
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and iterations")
    parser.add_argument("--json", type=Path, default=OUT / "calls.json")
    parser.add_argument("--md", type=Path, default=OUT / "calls.md")
    args = parser.parse_args()
    rounds, calls, callbacks, builds = (7, 50_000, 20_000, 300) if args.quick else (31, 200_000, 100_000, 2000)
    loadavg = Path("/proc/loadavg")
    load = " ".join(loadavg.read_text().split()[:3]) if loadavg.exists() else "?"
    with tempfile.TemporaryDirectory(prefix="jitload-callbench-") as tmp:
        peers = Peers(Path(tmp))
        results = measure(peers, rounds, calls, callbacks, builds)
    meta = {
        "python": f"CPython {platform.python_version()}",
        "machine": f"{platform.machine()} ({os.cpu_count()} CPUs)",
        "rounds": rounds,
        "calls_per_sample": calls,
        "callbacks_per_sample": callbacks,
        "notes": peers.notes,
        "load": load,
    }
    text = markdown(results, meta)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results, "targets": verdicts(results)}, indent=2) + "\n")
    args.md.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
