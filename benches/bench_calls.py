"""Native calls and Python callbacks: jitload.fast against its peers, side by side in one run.

    python benches/bench_calls.py [--quick] [--instructions] [--rounds N] [--seed N] [--no-pin] [--json PATH] [--md PATH]

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
  * jitload Library.function  the engine's functions: a jitload.fast wrapper under the engine's
                 epoch guard (removal-safe), calling through the function's stable entry point
Callbacks, from a native loop in the C extension, per call of cb(i, 1) -> int64 and cb() -> int64:
  * direct       PyObject_Vectorcall from C (boxing i and 1, unboxing the result)
  * jitload.fast a thunk from jitload.fast.callback, called through its C function pointer
  * ctypes       a CFUNCTYPE callback
  * cffi-api     an extern "Python" function of the compiled cffi module
  * cffi-abi     ffi.callback
Build cost: jitload.fast.wrap and jitload.fast.callback, median per object.

Each round runs every peer (and the empty loop) once, in a new shuffled order (seeded: --seed);
two warm-up rounds are dropped; the garbage collector is off. Figures are medians over rounds
with the 25th-75th percentile, and each peer's *paired* ratio: the median over rounds of its
time over its floor's time in the same round, which a slow phase of the machine (shared CPUs)
moves much less than a ratio of medians. The process is pinned to one CPU when it may use two
or more (os.sched_setaffinity; --no-pin). Cycles and instructions per call come from hardware
counters (perf_event_open) when the machine has them, and --instructions counts instructions
exactly under valgrind (callgrind client requests around each peer's loop, in one process):
independent of load, so differences of a few instructions show. Writes benchmarks/calls.json
and benchmarks/calls.md.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
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

/* Instruction counts (--instructions): callgrind's client requests, which are no-ops (a
 * few rotate instructions) when the process does not run under valgrind. */
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#define HAVE_CALLGRIND 1
#else
#define HAVE_CALLGRIND 0
#define CALLGRIND_ZERO_STATS
#define CALLGRIND_DUMP_STATS_AT(s) ((void)(s))
#endif
static PyObject *cg_zero(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    CALLGRIND_ZERO_STATS;
    Py_RETURN_NONE;
}
static PyObject *cg_dump(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    const char *name = PyUnicode_AsUTF8(args[0]);
    if (!name) return NULL;
    CALLGRIND_DUMP_STATS_AT(name);
    Py_RETURN_NONE;
}

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
    {"cg_zero", (PyCFunction)(void (*)(void))cg_zero, METH_FASTCALL, NULL},
    {"cg_dump", (PyCFunction)(void (*)(void))cg_dump, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_callbench", NULL, -1, methods};
PyMODINIT_FUNC PyInit__callbench(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "HAVE_CALLGRIND", HAVE_CALLGRIND) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
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
# The engine's functions (`Library.function`: a fast wrapper under the epoch guard, through a stub).
ENGINE = "jitload Library.function"
PLACEMENTS = 4


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

    def __init__(self, work: Path, light: bool = False) -> None:
        """``light``: without numba (whose compiler is far too slow under valgrind)."""
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
            if light:
                raise ImportError
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
            if not light:
                self.notes.append("numba not installed: pip install numba")
        try:
            import jitload

            engine_lib = jitload.Session().library("callbench")
            engine_lib.add_ir(
                "define i64 @add(i64 %a, i64 %b) {\n  %s = add i64 %a, %b\n  ret i64 %s\n}\n"
                "define void @f() {\n  ret void\n}\n"
            )
            add[ENGINE] = engine_lib.function("add", "int64(int64, int64)")
            f[ENGINE] = engine_lib.function("f", "void()")
            self.engine_lib = engine_lib
        except Exception as exc:  # noqa: BLE001 - the engine is optional here
            self.notes.append(f"{ENGINE} skipped: {exc}")

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
        # jitload.fast's code is placed in shared pages, so each object lands at its own offset
        # in a page, and the same code measures faster or slower by up to 20 % depending on
        # that offset and on where its caller is (branch-predictor aliasing, see docs/fast.md).
        # Every jitload.fast peer is therefore PLACEMENTS objects, built interleaved (so they
        # land at different offsets) and taken in turn, one per round.
        self.placements: Dict[Tuple[str, str], List[Any]] = {
            ("add(int64, int64)", "jitload.fast"): [add["jitload.fast"]],
            ("f()", "jitload.fast"): [f["jitload.fast"]],
            ("cb(i, 1)", "jitload.fast"): [two["jitload.fast"]],
            ("cb()", "jitload.fast"): [zero["jitload.fast"]],
        }
        for _ in range(PLACEMENTS - 1):
            t2, t0 = fast.callback(cb2, "int64(int64, int64)"), fast.callback(cb0, "int64()")
            self.thunks += [t2, t0]
            self.placements[("add(int64, int64)", "jitload.fast")].append(fast.wrap(add_addr, "int64(int64, int64)", name="add"))
            self.placements[("f()", "jitload.fast")].append(fast.wrap(f_addr, "void()", name="f"))
            self.placements[("cb(i, 1)", "jitload.fast")].append((self.ext.loop_ptr2, t2.address))
            self.placements[("cb()", "jitload.fast")].append((self.ext.loop_ptr0, t0.address))
        self.check()

    def check(self) -> None:
        for (bench, _), objects in self.placements.items():
            for obj in objects:
                if bench == "add(int64, int64)":
                    assert obj(2, 3) == 5
                elif bench == "f()":
                    assert obj() is None
                else:
                    assert obj[0](obj[1], 10) == (45 if bench == "cb(i, 1)" else 0)
        for name, fn in self.calls["add(int64, int64)"].items():
            assert fn(2, 3) == 5, name
        for name, fn in self.calls["f()"].items():
            assert fn() is None, name
        for name, (loop, target) in self.callbacks["cb(i, 1)"].items():
            assert loop(target, 10) == 45, name
        for name, (loop, target) in self.callbacks["cb()"].items():
            assert loop(target, 10) == 0, name


class HwCounters:
    """User-space cycles and instructions of this thread (perf_event_open through ctypes), when
    the machine exposes them: virtual machines without a virtual PMU and kernels with
    perf_event_paranoid > 2 do not, and then every read is None."""

    SYS_PERF_EVENT_OPEN = 298  # x86-64
    PERF_TYPE_HARDWARE = 0
    EVENTS = (("cycles", 0), ("instructions", 1))  # PERF_COUNT_HW_CPU_CYCLES, _INSTRUCTIONS

    def __init__(self) -> None:
        self.fds: List[int] = []
        self.reason = ""
        if sys.platform != "linux" or platform.machine() != "x86_64":
            self.reason = "not x86-64 Linux"
            return
        libc = ctypes.CDLL(None, use_errno=True)
        for _, config in self.EVENTS:
            attr = (ctypes.c_uint64 * 16)()  # struct perf_event_attr, zeroed (128 bytes)
            attr_u32 = ctypes.cast(attr, ctypes.POINTER(ctypes.c_uint32))
            attr_u32[0] = self.PERF_TYPE_HARDWARE  # type
            attr_u32[1] = 64  # size: PERF_ATTR_SIZE_VER0
            attr[1] = config
            attr[6] = (1 << 5) | (1 << 6)  # exclude_kernel, exclude_hv (user space only)
            fd = libc.syscall(self.SYS_PERF_EVENT_OPEN, attr, 0, -1, -1, 0)
            if fd < 0:
                self.reason = f"perf_event_open: {os.strerror(ctypes.get_errno())}"
                self.close()
                return
            self.fds.append(fd)

    @property
    def available(self) -> bool:
        return bool(self.fds)

    def read(self) -> Optional[Tuple[int, ...]]:
        if not self.fds:
            return None
        return tuple(int.from_bytes(os.read(fd, 8), "little") for fd in self.fds)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def pin_cpu() -> Optional[int]:
    """Pins this process to one CPU (the last one allowed) when it may use two or more: no
    migrations between samples, and every peer runs on the same core."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(0, {cpus[-1]})
    return cpus[-1]


def call_runner(fn: Callable[..., Any], two_args: bool, n: int) -> Callable[[], float]:
    timer = timeit.Timer("f(1, 2)" if two_args else "f()", globals={"f": fn})
    return lambda: timer.timeit(n) / n


def callback_runner(loop: Callable[[Any, int], int], target: Any, n: int) -> Callable[[], float]:
    def run() -> float:
        t0 = time.perf_counter()
        loop(target, n)
        return (time.perf_counter() - t0) / n

    return run


def percentiles(xs: List[float]) -> Tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


FLOORS = {"calls": "floor (METH_FASTCALL ext)", "callbacks": "direct PyObject_Vectorcall"}
EMPTY = ("", "empty loop")


def measure(peers: Peers, rounds: int, warmup: int, calls: int, callbacks: int, builds: int, seed: int) -> Dict[str, Any]:
    """Every peer once per round, in a new shuffled order each round (the empty loop is one of
    the peers); the first ``warmup`` rounds are dropped. Figures: medians over rounds, and for
    each peer the median over rounds of its time divided by its floor's time in the same
    round (paired: a slow phase of the machine slows both)."""
    rng = random.Random(seed)
    hw = HwCounters()
    empty = timeit.Timer("pass")
    # Each peer: its runners (several for the jitload.fast placements, taken in turn).
    runners: Dict[Tuple[str, str], Tuple[List[Callable[[], float]], int]] = {EMPTY: ([lambda: empty.timeit(calls) / calls], calls)}
    for bench, fns in peers.calls.items():
        for name, fn in fns.items():
            objects = peers.placements.get((bench, name), [fn])
            runners[(bench, name)] = ([call_runner(o, bench.startswith("add"), calls) for o in objects], calls)
    for bench, entries in peers.callbacks.items():
        for name, (loop, target) in entries.items():
            objects = peers.placements.get((bench, name), [(loop, target)])
            runners[(bench, name)] = ([callback_runner(lp, tg, callbacks) for lp, tg in objects], callbacks)
    samples: Dict[Tuple[str, str], List[float]] = {k: [] for k in runners}
    counts: Dict[Tuple[str, str], List[Tuple[float, ...]]] = {k: [] for k in runners}
    keys = list(runners)
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for r in range(warmup + rounds):
            rng.shuffle(keys)
            for key in keys:
                runs, n = runners[key]
                run = runs[r % len(runs)]
                c0 = hw.read()
                t = run()
                c1 = hw.read()
                if r >= warmup:
                    samples[key].append(t)
                    if c0 is not None and c1 is not None:
                        counts[key].append(tuple((b - a) / n for a, b in zip(c0, c1)))
    finally:
        if gc_was:
            gc.enable()
        hw.close()
    loop_samples = samples.pop(EMPTY)
    overhead = statistics.median(loop_samples)
    loop_counts = counts.pop(EMPTY)
    results: Dict[str, Any] = {
        "loop_overhead_ns": overhead * 1e9,
        "counters": [name for name, _ in HwCounters.EVENTS] if hw.reason == "" else None,
        "counters_unavailable": hw.reason or None,
        "calls": {},
        "callbacks": {},
        "build": {},
    }
    for (bench, name), xs in samples.items():
        section = "calls" if bench in peers.calls else "callbacks"
        if section == "calls":
            xs = [x - overhead for x in xs]
            samples[(bench, name)] = xs
        p25, med, p75 = percentiles(xs)
        entry: Dict[str, Any] = {"median_ns": med * 1e9, "p25_ns": p25 * 1e9, "p75_ns": p75 * 1e9, "min_ns": min(xs) * 1e9}
        if counts[(bench, name)]:
            per = counts[(bench, name)]
            for i, (counter, _) in enumerate(HwCounters.EVENTS):
                value = statistics.median(c[i] for c in per)
                if section == "calls":
                    value -= statistics.median(c[i] for c in loop_counts)
                entry[f"{counter}_per_call"] = value
        results[section].setdefault(bench, {})[name] = entry
    # The placements of jitload.fast objects: the median of each, and its offset in its page.
    # Measured round r (after the warm-up rounds) used placement (r + warmup) % count.
    for (bench, name), objects in peers.placements.items():
        section = "calls" if bench in peers.calls else "callbacks"
        xs = samples[(bench, name)]
        count = len(objects)
        by_placement: List[Optional[float]] = []
        for k in range(count):
            mine = [x for i, x in enumerate(xs) if (i + warmup) % count == k]
            by_placement.append(statistics.median(mine) * 1e9 if mine else None)
        offsets = [(peers.fast.info(o).code[0] if section == "calls" else o[1]) & 0xFFF for o in objects]
        results[section][bench][name]["placements"] = [{"page_offset": hex(off), "median_ns": ns} for off, ns in zip(offsets, by_placement)]
    # Paired ratios: each round's time over the floor's time in that round.
    for section in ("calls", "callbacks"):
        for bench, entries in results[section].items():
            floor = samples[(bench, FLOORS[section])]
            for name, entry in entries.items():
                ratios = [x / f for x, f in zip(samples[(bench, name)], floor)]
                p25, med, p75 = percentiles(ratios)
                entry["paired_ratio"] = {"median": med, "p25": p25, "p75": p75}
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


# ---- instruction counts under valgrind (--instructions) --------------------------------

# Peers whose instructions are counted (numba is left out: its compiler runs far too slowly
# under valgrind; the engine's compile of two tiny functions takes seconds there).
def count_child(n: int) -> None:
    """Runs under callgrind: each peer's loop between a zeroing and a dump of the counters."""
    with tempfile.TemporaryDirectory(prefix="jitload-callbench-") as tmp:
        peers = Peers(Path(tmp), light=True)
        ext = peers.ext
        if not ext.HAVE_CALLGRIND:
            raise SystemExit("valgrind/callgrind.h was not found when the extension was built")
        empty = timeit.Timer("pass")
        jobs: List[Tuple[str, Callable[[], float]]] = [("\t".join(EMPTY), lambda: empty.timeit(n) / n)]
        for bench, fns in peers.calls.items():
            for name, fn in fns.items():
                jobs.append((f"{bench}\t{name}", call_runner(fn, bench.startswith("add"), n)))
        for bench, entries in peers.callbacks.items():
            for name, (loop, target) in entries.items():
                jobs.append((f"{bench}\t{name}", callback_runner(loop, target, n)))
        gc.disable()
        for label, run in jobs:
            run()  # warm: the interpreter specialises the loop, caches fill
            ext.cg_zero()
            run()
            ext.cg_dump(label)


def count_instructions(n: int) -> Dict[str, Any]:
    """Instructions per call of each peer, exact and independent of the machine's load:
    callgrind's instruction count (Ir) of n calls, from one process that runs every peer.
    Calls: minus the empty Python loop's count. Callbacks: the whole native loop."""
    import shutil

    if shutil.which("valgrind") is None:
        return {"unavailable": "valgrind is not installed"}
    with tempfile.TemporaryDirectory(prefix="jitload-callgrind-") as tmp:
        out = Path(tmp) / "cg.out"
        cmd = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
            sys.executable, str(Path(__file__).resolve()), "--count-child", str(n),
        ]
        env = dict(os.environ, PYTHONHASHSEED="0")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"unavailable": f"valgrind run failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"}
        totals: Dict[str, float] = {}
        for dump in Path(tmp).glob("cg.out.*"):
            label, total = None, None
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith("desc: Trigger: Client Request: "):
                    label = line[len("desc: Trigger: Client Request: "):]
                elif line.startswith("summary: "):  # the event total (Ir) of the dump
                    total = float(line.split()[1])
            if label is not None and total is not None:
                totals[label] = total
    empty = totals.pop("\t".join(EMPTY), None)
    result: Dict[str, Any] = {"calls_per_peer": n, "calls": {}, "callbacks": {}}
    for label, total in totals.items():
        bench, name = label.split("\t", 1)
        section = "callbacks" if bench.startswith("cb") else "calls"
        per = total / n
        if section == "calls" and empty is not None:
            per -= empty / n
        result[section].setdefault(bench, {})[name] = per
    return result


def verdicts(results: Dict[str, Any], instructions: Dict[str, Any]) -> List[Tuple[str, bool, str]]:
    """The issue's targets, from the medians of the run (ratio of medians; the paired ratio in
    brackets)."""
    out: List[Tuple[str, bool, str]] = []

    def paired(entry: Dict[str, Any]) -> str:
        return f"paired {entry['paired_ratio']['median']:.2f}x"

    for bench, peers in results["calls"].items():
        floor = peers[FLOORS["calls"]]["median_ns"]
        me = peers["jitload.fast"]
        mine = me["median_ns"]
        ratio = mine / floor
        out.append((f"{bench}: jitload.fast <= 1.2x the C extension floor", ratio <= 1.2, f"{ratio:.2f}x; {paired(me)}"))
        if CALLING_FLOOR in peers:
            calling = mine / peers[CALLING_FLOOR]["median_ns"]
            out.append((f"{bench}: (for reference) <= 1.2x a C extension that calls the function", calling <= 1.2, f"{calling:.2f}x"))
        speedup = peers["ctypes"]["median_ns"] / mine
        out.append((f"{bench}: >= 10x faster than ctypes", speedup >= 10, f"{speedup:.1f}x"))
        for other in ("cffi API mode", "numba @njit"):
            if other in peers:
                theirs = peers[other]["median_ns"]
                out.append((f"{bench}: faster than {other}", mine < theirs, f"{mine:.1f} vs {theirs:.1f} ns"))
    counted = instructions.get("calls", {})
    for bench, peers in results["calls"].items():
        if ENGINE not in peers:
            continue
        floor = peers[FLOORS["calls"]]["median_ns"]
        ratio = peers[ENGINE]["median_ns"] / floor
        out.append((f"{bench}: {ENGINE} <= 1.2x the C extension floor", ratio <= 1.2, f"{ratio:.2f}x; {paired(peers[ENGINE])}"))
        instructions = counted.get(bench, {})
        if ENGINE in instructions and FLOORS["calls"] in instructions:
            ratio = instructions[ENGINE] / instructions[FLOORS["calls"]]
            out.append((f"{bench}: {ENGINE} <= 1.2x the floor's instructions", ratio <= 1.2, f"{ratio:.3f}x"))
    for bench, peers in results["callbacks"].items():
        floor = peers[FLOORS["callbacks"]]["median_ns"]
        me = peers["jitload.fast"]
        mine = me["median_ns"]
        out.append((f"callback {bench}: <= 1.3x a direct PyObject_Vectorcall", mine / floor <= 1.3, f"{mine / floor:.2f}x; {paired(me)}"))
        speedup = peers["ctypes CFUNCTYPE"]["median_ns"] / mine
        out.append((f"callback {bench}: >= 2.5x faster than ctypes", speedup >= 2.5, f"{speedup:.2f}x"))
        # What any callback can reach at best: the floor (no conversion layer at all).
        bound = peers["ctypes CFUNCTYPE"]["median_ns"] / floor
        out.append((f"callback {bench}: (for reference) the direct PyObject_Vectorcall floor itself is >= 2.5x faster than ctypes", bound >= 2.5, f"{bound:.2f}x"))
    for kind, r in results["build"].items():
        out.append((f"building a {kind} < 20 us", r["median_us"] < 20, f"{r['median_us']:.1f} us"))
    return out


def markdown(results: Dict[str, Any], meta: Dict[str, Any]) -> str:
    pinned = f"pinned to CPU {meta['pinned_cpu']}" if meta.get("pinned_cpu") is not None else "not pinned"
    lines = [
        "# Calls and callbacks (benches/bench_calls.py)",
        "",
        f"`{meta['command']}`: {meta['python']} on {meta['machine']}, {pinned}, load average {meta['load']} at the start; "
        f"{meta['rounds']} rounds (after {meta['warmup']} dropped), every peer once per round in a shuffled order; "
        "medians (p25-p75), the best round, and the paired ratio: the median over rounds of the peer's time over the "
        "floor's time in the same round. "
        f"Calls: ns per call from a Python loop minus the empty loop ({results['loop_overhead_ns']:.1f} ns), "
        f"{meta['calls_per_sample']:,} per sample. Callbacks: ns per call from a native loop, {meta['callbacks_per_sample']:,} per sample.",
        "",
    ]
    counters = results.get("counters")
    if not counters:
        lines += [f"Hardware counters: unavailable ({results.get('counters_unavailable')}).", ""]
    instr = meta.get("instructions") or {}
    if instr.get("unavailable"):
        lines += [f"Instruction counts: unavailable ({instr['unavailable']}).", ""]
    elif instr:
        lines += [
            f"Instructions: callgrind's exact count per call (`--instructions`, {instr['calls_per_peer']:,} calls per peer, "
            "calls minus the empty Python loop; callbacks including the native loop).",
            "",
        ]
    for section in ("calls", "callbacks"):
        floor_name = FLOORS[section]
        for bench, peers in results[section].items():
            floor = peers[floor_name]["median_ns"]
            title = f"`{bench}`" if section == "calls" else f"callback `{bench}` from a native loop"
            best_floor = peers[floor_name]["min_ns"]
            extra = [c for c in (counters or [])]
            head = "| peer | median ns | p25-p75 | vs floor | paired (p25-p75) | best ns | best vs floor |"
            rule = "|---|---:|---:|---:|---:|---:|---:|"
            counted = instr.get(section, {}).get(bench, {})
            if counted:
                head += " instructions |"
                rule += "---:|"
            for c in extra:
                head += f" {c} |"
                rule += "---:|"
            lines += [f"## {title}", "", head, rule]
            for name, r in sorted(peers.items(), key=lambda kv: kv[1]["median_ns"]):
                pr = r["paired_ratio"]
                row = (
                    f"| {name} | {r['median_ns']:.1f} | {r['p25_ns']:.1f}-{r['p75_ns']:.1f} | {r['median_ns'] / floor:.2f}x "
                    f"| {pr['median']:.2f}x ({pr['p25']:.2f}-{pr['p75']:.2f}) | {r['min_ns']:.1f} | {r['min_ns'] / best_floor:.2f}x |"
                )
                if counted:
                    row += f" {counted[name]:.1f} |" if name in counted else " - |"
                for c in extra:
                    value = r.get(f"{c}_per_call")
                    row += f" {value:.1f} |" if value is not None else " - |"
                lines.append(row)
            lines.append("")
            for name, r in peers.items():
                if r.get("placements"):
                    shown = ", ".join(f"{p['median_ns']:.1f} ns at {p['page_offset']}" for p in r["placements"] if p["median_ns"] is not None)
                    lines += [f"{name}: {len(r['placements'])} objects at different offsets in their code pages, one per round in turn: {shown}.", ""]
    lines += ["## Building", "", "| object | median us | p25-p75 |", "|---|---:|---:|"]
    for kind, r in results["build"].items():
        lines.append(f"| jitload.fast.{kind} | {r['median_us']:.1f} | {r['p25_us']:.1f}-{r['p75_us']:.1f} |")
    lines += ["", "## Targets", ""]
    for text, ok, value in verdicts(results, instr):
        lines.append(f"- {'met' if ok else 'MISSED'}: {text} ({value})")
    for note in meta.get("notes", []):
        lines.append(f"- note: {note}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and iterations")
    parser.add_argument("--rounds", type=int, help="rounds measured (default 61, --quick 9)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the shuffled order")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    parser.add_argument("--instructions", action="store_true", help="also count instructions per call under valgrind (callgrind)")
    parser.add_argument("--json", type=Path, default=OUT / "calls.json")
    parser.add_argument("--md", type=Path, default=OUT / "calls.md")
    parser.add_argument("--count-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_child:
        count_child(args.count_child)
        return
    rounds, calls, callbacks, builds = (9, 50_000, 20_000, 300) if args.quick else (61, 200_000, 100_000, 2000)
    rounds = args.rounds or rounds
    warmup = 2
    loadavg = Path("/proc/loadavg")
    load = " ".join(loadavg.read_text().split()[:3]) if loadavg.exists() else "?"
    with tempfile.TemporaryDirectory(prefix="jitload-callbench-") as tmp:
        peers = Peers(Path(tmp))
        # After the builds (compilers inherit the affinity), before any measurement.
        cpu = None if args.no_pin else pin_cpu()
        results = measure(peers, rounds, warmup, calls, callbacks, builds, args.seed)
    # The command, without where it wrote (--json/--md and their values).
    shown: List[str] = []
    skip = False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--json", "--md"):
            skip = True
        elif not a.startswith(("--json=", "--md=")):
            shown.append(a)
    argv = " ".join(shown)
    meta: Dict[str, Any] = {
        "command": f"python benches/bench_calls.py {argv}".strip(),
        "python": f"CPython {platform.python_version()}",
        "machine": f"{platform.machine()} ({os.cpu_count()} CPUs)",
        "pinned_cpu": cpu,
        "rounds": rounds,
        "warmup": warmup,
        "seed": args.seed,
        "calls_per_sample": calls,
        "callbacks_per_sample": callbacks,
        "notes": peers.notes,
        "load": load,
    }
    if args.instructions:
        meta["instructions"] = count_instructions(20_000 if not args.quick else 5_000)
    text = markdown(results, meta)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "results": results, "targets": verdicts(results, meta.get("instructions") or {})}, indent=2) + "\n")
    args.md.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
