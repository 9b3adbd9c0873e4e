"""jitload.fast: copy-and-patch call wrappers and callback thunks.

Native functions come from a small C library compiled here with clang 22 and loaded with
ctypes (independent of the JIT engine).
"""

from __future__ import annotations

import ctypes
import gc
import math
import mmap
import os
import struct
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

import jitload

fast = pytest.importorskip("jitload.fast")
pytestmark = pytest.mark.skipif(not fast.available(), reason=str(fast.unavailable_reason()))

INT_TYPES = {
    "int8": ("int8_t", -(2**7), 2**7 - 1),
    "int16": ("int16_t", -(2**15), 2**15 - 1),
    "int32": ("int32_t", -(2**31), 2**31 - 1),
    "int64": ("int64_t", -(2**63), 2**63 - 1),
    "uint8": ("uint8_t", 0, 2**8 - 1),
    "uint16": ("uint16_t", 0, 2**16 - 1),
    "uint32": ("uint32_t", 0, 2**32 - 1),
    "uint64": ("uint64_t", 0, 2**64 - 1),
}
C_TYPES = {name: spec[0] for name, spec in INT_TYPES.items()}
C_TYPES.update({"bool": "_Bool", "float": "float", "double": "double", "ptr": "void *", "pyobject": "void *"})

SOURCE = r"""
#include <stdint.h>
#include <stddef.h>
#include <pthread.h>
extern void Py_IncRef(void *);
extern void PyErr_SetString(void *, const char *);
extern void *PyExc_ValueError, *PyExc_RuntimeError;
""" + "".join(
    f"{c} id_{n}({c} x) {{ return x; }}\n"
    f"{c} call_{n}({c} (*cb)({c}), {c} x) {{ return cb(x); }}\n"
    for n, c in C_TYPES.items()
) + r"""
int64_t add(int64_t a, int64_t b) { return a + b; }
void nothing(void) {}
/* Narrow results with garbage in the upper bits (the ABI allows it). */
int64_t wide(int64_t x) { return x; }
double mixed(int8_t a, double x, uint16_t b, float y, int64_t c, int32_t d, uint8_t e, _Bool f, double z) {
    return a + x + b + y + c + d + e + f + z;
}
/* 6 integer + 8 SSE registers, and 8 more of each class on the stack. */
double many(int64_t i0, double f0, int64_t i1, double f1, int64_t i2, double f2, int64_t i3, double f3,
            int64_t i4, double f4, int64_t i5, double f5, int64_t i6, double f6, int64_t i7, double f7,
            int64_t i8, double f8, int64_t i9, double f9, int64_t i10, double f10, float f11, int8_t i11) {
    return i0 + 2*i1 + 3*i2 + 4*i3 + 5*i4 + 6*i5 + 7*i6 + 8*i7 + 9*i8 + 10*i9 + 11*i10 + 12*i11
         + f0 + f1*2 + f2*3 + f3*4 + f4*5 + f5*6 + f6*7 + f7*8 + f8*9 + f9*10 + f10*11 + f11*12;
}
/* 10 int64 and 10 double interleaved, then a float and an int8 (both on the stack): each
 * argument is stored as it arrived, so every bit can be checked. */
static int64_t seen_i[11];
static double seen_d[11];
void record20(int64_t i0, double d0, int64_t i1, double d1, int64_t i2, double d2, int64_t i3, double d3,
              int64_t i4, double d4, int64_t i5, double d5, int64_t i6, double d6, int64_t i7, double d7,
              int64_t i8, double d8, int64_t i9, double d9, float f, int8_t b) {
    int64_t is[] = {i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, b};
    double ds[] = {d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, f};
    for (int k = 0; k < 11; k++) { seen_i[k] = is[k]; seen_d[k] = ds[k]; }
}
int64_t seen_int(int k) { return seen_i[k]; }
double seen_double(int k) { return seen_d[k]; }
typedef int64_t (*cb20_t)(int64_t, double, int64_t, double, int64_t, double, int64_t, double, int64_t, double,
                          int64_t, double, int64_t, double, int64_t, double, int64_t, double, int64_t, double,
                          float, int8_t);
/* Calls cb with the arguments recorded by record20 (so both directions share the values). */
int64_t replay20(cb20_t cb) {
    return cb(seen_i[0], seen_d[0], seen_i[1], seen_d[1], seen_i[2], seen_d[2], seen_i[3], seen_d[3],
              seen_i[4], seen_d[4], seen_i[5], seen_d[5], seen_i[6], seen_d[6], seen_i[7], seen_d[7],
              seen_i[8], seen_d[8], seen_i[9], seen_d[9], (float)seen_d[10], (int8_t)seen_i[10]);
}
uint64_t sum_bytes(const uint8_t *p, size_t n) { uint64_t s = 0; for (size_t i = 0; i < n; i++) s += p[i]; return s; }
uint8_t byte_at(const uint8_t *p, size_t i) { return p[i]; }
void fill(uint8_t *p, size_t n, uint8_t v) { for (size_t i = 0; i < n; i++) p[i] = v; }
void *newref(void *o) { Py_IncRef(o); return o; }
void *null_obj(void) { return NULL; }
void *raise_obj(void) { PyErr_SetString(PyExc_ValueError, "raised by C"); return NULL; }

int64_t call2(int64_t (*cb)(int64_t, int64_t), int64_t a, int64_t b) { return cb(a, b); }
int64_t loop2(int64_t (*cb)(int64_t, int64_t), int64_t n) { int64_t s = 0; for (int64_t i = 0; i < n; i++) s += cb(i, 1); return s; }
int64_t call0(int64_t (*cb)(void)) { return cb(); }
void call_void(void (*cb)(void)) { cb(); }
double call_mixed(double (*cb)(int8_t, double, uint16_t, float, int64_t, int32_t, uint8_t, _Bool, double)) {
    return cb(-3, 0.5, 65535, 0.25f, -(1LL << 40), -7, 200, 1, -0.0);
}
int64_t call6(int64_t (*cb)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t)) { return cb(1, 2, 3, 4, 5, 6); }

struct job { int64_t (*cb)(int64_t, int64_t); int64_t a, b, r; };
static void *run_job(void *p) { struct job *j = p; j->r = j->cb(j->a, j->b); return NULL; }
int64_t call2_in_thread(int64_t (*cb)(int64_t, int64_t), int64_t a, int64_t b) {
    struct job j = {cb, a, b, 0};
    pthread_t t;
    if (pthread_create(&t, NULL, run_job, &j) != 0) return -12345;
    pthread_join(t, NULL);
    return j.r;
}

/* A call guard: counts enters, sums tokens, fails on demand. */
uintptr_t guard_enter(int64_t *ctx) {
    ctx[0]++;
    if (ctx[3]) { PyErr_SetString(PyExc_RuntimeError, "enter says no"); return UINTPTR_MAX; }
    return 7;
}
int64_t calls_seen;
int64_t counted_add(int64_t a, int64_t b) { calls_seen++; return a + b; }
int guard_exit(int64_t *ctx, uintptr_t token) {
    ctx[1] += (int64_t)token;
    if (ctx[2]) { PyErr_SetString(PyExc_RuntimeError, "guard says no"); return -1; }
    return 0;
}
"""


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    d = tmp_path_factory.mktemp("fastlib")
    src = d / "fastlib.c"
    src.write_text(SOURCE)
    so = d / "fastlib.so"
    subprocess.run(["clang-22", "-shared", "-fPIC", "-O1", "-pthread", "-o", str(so), str(src)], check=True)
    return ctypes.CDLL(str(so))


def addr(lib: ctypes.CDLL, name: str) -> int:
    value = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
    assert value
    return value


@pytest.fixture(autouse=True)
def no_frame_left_behind() -> Any:
    from jitload import _native

    assert _native._stencils.running_wrappers() == 0
    yield
    assert _native._stencils.running_wrappers() == 0


class Unraisable(list):  # type: ignore[type-arg]
    """Collects what reaches sys.unraisablehook while the test runs (pytest installs its own
    hook around the test call, after fixtures, so this one is installed lazily)."""

    def install(self) -> None:
        sys.unraisablehook = self.append


@pytest.fixture
def unraisable() -> Any:
    seen = Unraisable()
    saved = sys.unraisablehook
    yield seen
    sys.unraisablehook = saved


# ---- wrappers: results and edge values ---------------------------------------------------


def test_add_and_introspection(lib: ctypes.CDLL) -> None:
    add = fast.wrap(addr(lib, "add"), "int64(int64 a, int64 b)", name="add")
    assert add(2, 3) == 5
    assert add(-(2**63), -1) == 2**63 - 1  # wraps like C
    state = fast.info(add)
    assert state.name == "add" and state.address == addr(lib, "add")
    assert state.stencils == ["entry2_i64"]  # the fused shape: entry, conversions, call, box
    assert add.__name__ == "add"
    assert "int64(int64, int64)" in (add.__doc__ or "")
    assert fast.wrap(addr(lib, "nothing"), "void()")() is None


def test_a_jump_slot_is_read_at_every_call(lib: ctypes.CDLL) -> None:
    """A wrapper of a stub that jumps through a word calls through the word itself (where its
    code is within 2 GiB of it: an anonymous mapping, as the engine's stub slots are)."""
    page = mmap.mmap(-1, mmap.PAGESIZE)
    word = ctypes.c_uint64.from_buffer(page)
    seen = ctypes.c_int64.in_dll(lib, "calls_seen")
    word.value = addr(lib, "counted_add")
    # The target stands for the stub: a call that reached it would not count.
    add = fast.wrap(addr(lib, "add"), "int64(int64, int64)", jump_slot=ctypes.addressof(word))
    assert fast.info(add).jump_slot == ctypes.addressof(word)
    before = seen.value
    assert add(2, 3) == 5 and seen.value == before + 1, "called through the word"
    word.value = addr(lib, "add")
    assert add(2, 3) == 5 and seen.value == before + 1, "the word is read at every call"
    assert fast.info(fast.wrap(addr(lib, "add"), "int64(int64, int64)")).jump_slot is None
    with pytest.raises(TypeError, match="jump_slot"):
        fast.wrap(addr(lib, "add"), "int64(int64, int64)", jump_slot="0x10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NULL"):
        fast.wrap(addr(lib, "add"), "int64(int64, int64)", jump_slot=0)
    seen.value = before  # other tests count calls of counted_add from 0
    del add, word
    gc.collect()
    page.close()


@pytest.mark.parametrize("name", sorted(INT_TYPES))
def test_integer_edges(lib: ctypes.CDLL, name: str) -> None:
    _, lo, hi = INT_TYPES[name]
    f = fast.wrap(addr(lib, f"id_{name}"), f"{name}({name})", name=f"id_{name}")
    for v in (lo, hi, 0, 1, lo + 1, hi - 1, (lo + hi) // 2):
        assert f(v) == v
    assert f(True) == 1
    class Index:
        def __index__(self) -> int:
            return hi
    assert f(Index()) == hi
    class IntSub(int):
        pass
    assert f(IntSub(hi)) == hi
    for bad in (lo - 1, hi + 1, 2**200, -(2**200)):
        with pytest.raises(OverflowError, match=rf"id_{name}\(\) argument 1: .* does not fit in {name}"):
            f(bad)
    for wrong in (1.5, "1", None, b"1", [1]):
        with pytest.raises(TypeError, match=rf"id_{name}\(\) argument 1 must be int \({name}\), not"):
            f(wrong)


@pytest.mark.parametrize("name", sorted(INT_TYPES))
def test_narrow_results_are_truncated(lib: ctypes.CDLL, name: str) -> None:
    _, lo, hi = INT_TYPES[name]
    bits = 8 * {"int8": 1, "int16": 2, "int32": 4, "int64": 8}.get(name.lstrip("u"), 8)
    f = fast.wrap(addr(lib, "wide"), f"{name}(int64)")
    raw = 0x5A5A5A5A5A5A5A5A
    v = raw & ((1 << bits) - 1)
    if lo < 0 and v > hi:
        v -= 1 << bits
    assert f(raw) == v


def test_bool(lib: ctypes.CDLL) -> None:
    f = fast.wrap(addr(lib, "id_bool"), "bool(bool)")
    assert f(True) is True and f(False) is False
    assert f(5) is True and f([]) is False and f(None) is False and f("x") is True
    class Bad:
        def __bool__(self) -> bool:
            raise ZeroDivisionError("no truth")
    with pytest.raises(ZeroDivisionError):
        f(Bad())
    assert fast.wrap(addr(lib, "wide"), "bool(int64)")(0x100) is False  # only the low byte counts


def test_double_edges(lib: ctypes.CDLL) -> None:
    f = fast.wrap(addr(lib, "id_double"), "double(double)", name="idd")
    for v in (0.0, 1.5, -1e308, 5e-324, math.inf, -math.inf, sys.float_info.max):
        assert f(v) == v
    assert math.isnan(f(math.nan))
    assert math.copysign(1.0, f(-0.0)) == -1.0
    assert f(3) == 3.0 and isinstance(f(3), float)
    assert f(2**53 + 1) == float(2**53 + 1)
    class F:
        def __float__(self) -> float:
            return 2.5
    assert f(F()) == 2.5
    class FloatSub(float):
        pass
    assert f(FloatSub(0.25)) == 0.25
    with pytest.raises(OverflowError):
        f(10**400)
    with pytest.raises(TypeError, match=r"idd\(\) argument 1 must be float \(double\), not str"):
        f("1.0")


def test_float_edges(lib: ctypes.CDLL) -> None:
    f = fast.wrap(addr(lib, "id_float"), "float(float)")
    f32 = lambda v: struct.unpack("f", struct.pack("f", v))[0]  # noqa: E731
    assert f(1 / 3) == f32(1 / 3)
    assert f(math.inf) == math.inf and f(-math.inf) == -math.inf
    assert math.isnan(f(math.nan))
    assert math.copysign(1.0, f(-0.0)) == -1.0
    assert f(1e39) == math.inf  # out of float range: C's conversion
    assert f(3.4028234663852886e38) == 3.4028234663852886e38


def test_mixed_registers_and_stack(lib: ctypes.CDLL) -> None:
    sig = "double(int8, double, uint16, float, int64, int32, uint8, bool, double)"
    f = fast.wrap(addr(lib, "mixed"), sig)
    assert f(-3, 0.5, 65535, 0.25, -(2**40), -7, 200, True, -0.0) == -3 + 0.5 + 65535 + 0.25 - 2**40 - 7 + 200 + 1
    args = []
    expected = 0.0
    for k in range(11):
        args += [k + 1, (k + 1) / 4]
    args += [0.125, -5]
    sig = "double(" + ", ".join(["int64", "double"] * 11 + ["float", "int8"]) + ")"
    g = fast.wrap(addr(lib, "many"), sig)
    ints = [a for i, a in enumerate(args[:22]) if i % 2 == 0] + [-5]
    floats = [a for i, a in enumerate(args[:22]) if i % 2 == 1] + [0.125]
    expected = sum((i + 1) * v for i, v in enumerate(ints)) + sum((i + 1) * v for i, v in enumerate(floats))
    assert fast.info(g).stencils[-2] == "call_stack"
    assert g(*args) == pytest.approx(expected)


SIG20 = ", ".join(["int64", "double"] * 10 + ["float", "int8"])
EDGE_INTS = [-(2**63), 2**63 - 1, 0, -1, 1, 2**62, -(2**62) + 7, 123456789012345, -98765, 2**31]
EDGE_DOUBLES = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, -2.5, 1 / 3, 0.0, -1e-300]


def interleave20() -> List[Any]:
    args: List[Any] = []
    for i, d in zip(EDGE_INTS, EDGE_DOUBLES):
        args += [i, d]
    return args + [-0.5, -128]


def same_double(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1.0, a) == math.copysign(1.0, b))


def test_stack_arguments_with_edge_values(lib: ctypes.CDLL) -> None:
    """10 int64 and 10 double interleaved plus a float and an int8: 4 integer and 2 SSE
    arguments (and the last two) go on the stack; every one arrives bit for bit."""
    record = fast.wrap(addr(lib, "record20"), f"void({SIG20})")
    assert fast.info(record).stencils[-2] == "call_stack"
    seen_int = fast.wrap(addr(lib, "seen_int"), "int64(int32)")
    seen_double = fast.wrap(addr(lib, "seen_double"), "double(int32)")
    args = interleave20()
    assert record(*args) is None
    assert [seen_int(k) for k in range(10)] == EDGE_INTS
    assert seen_int(10) == -128
    for k, d in enumerate(EDGE_DOUBLES):
        assert same_double(seen_double(k), d), (k, seen_double(k), d)
    assert seen_double(10) == -0.5
    # Reversed values, so a swapped pair of slots cannot pass unnoticed.
    rev: List[Any] = []
    for i, d in zip(EDGE_INTS[::-1], EDGE_DOUBLES[::-1]):
        rev += [i, d]
    record(*rev, 0.25, 127)
    assert [seen_int(k) for k in range(11)] == EDGE_INTS[::-1] + [127]
    assert all(same_double(seen_double(k), d) for k, d in enumerate(EDGE_DOUBLES[::-1] + [0.25]))


def test_callback_stack_arguments_with_edge_values(lib: ctypes.CDLL) -> None:
    got: List[Any] = []

    def cb(*a: Any) -> int:
        got.append(a)
        return len(a)

    t = fast.callback(cb, f"int64({SIG20})")
    fast.wrap(addr(lib, "record20"), f"void({SIG20})")(*interleave20())
    replay = via_wrapper(lib, "replay20", "int64(ptr)")
    assert replay(t.address) == 22
    (a,) = got
    assert list(a[0:20:2]) == EDGE_INTS
    for k, d in enumerate(EDGE_DOUBLES):
        assert same_double(a[2 * k + 1], d), (k, a[2 * k + 1], d)
    assert a[20] == -0.5 and a[21] == -128
    # Plain C callers too (ctypes pushes the same stack arguments).
    proto = ctypes.CFUNCTYPE(ctypes.c_int64, *([ctypes.c_int64, ctypes.c_double] * 10 + [ctypes.c_float, ctypes.c_int8]))
    assert proto(t.address)(*interleave20()) == 22
    assert got[1][:20:2] == tuple(EDGE_INTS) and got[1][21] == -128


def test_argument_limits_name_the_signature(lib: ctypes.CDLL) -> None:
    """6 integer + 8 SSE registers and 16 stack slots: the 17th memory argument is refused
    with a message naming the signature and the limit; up to it, both directions work."""
    most = "int64(" + ", ".join(["int64"] * 22) + ")"
    t = fast.callback(lambda *a: sum(a), most)
    proto = ctypes.CFUNCTYPE(ctypes.c_int64, *([ctypes.c_int64] * 22))
    assert proto(t.address)(*range(-11, 11)) == sum(range(-11, 11))
    too_many = "int64(" + ", ".join(["int64"] * 23) + ")"
    for make in (lambda: fast.wrap(addr(lib, "add"), too_many), lambda: fast.callback(lambda *a: 0, too_many)):
        with pytest.raises(ValueError, match=r"too many arguments .*int64\(int64, .*16 more on the stack"):
            make()
    doubles = "double(" + ", ".join(["double"] * 25) + ")"
    with pytest.raises(ValueError, match="8 floating-point"):
        fast.callback(lambda *a: 0.0, doubles)


def test_pointers(lib: ctypes.CDLL) -> None:
    f = fast.wrap(addr(lib, "id_ptr"), "ptr(ptr)", name="idp")
    assert f(None) is None and f(0) is None
    assert f(0xDEADBEEF) == 0xDEADBEEF
    assert f(2**64 - 1) == 2**64 - 1
    assert f(-1) == 2**64 - 1
    buf = ctypes.create_string_buffer(16)
    assert f(buf) == ctypes.addressof(buf)
    assert f(ctypes.pointer(ctypes.c_int(3))) is not None
    assert f(ctypes.c_void_p(1234)) == 1234
    assert f(ctypes.c_void_p()) is None
    ba = bytearray(b"xyz")
    assert f(ba) is not None
    with pytest.raises(OverflowError):
        f(2**64)
    with pytest.raises(TypeError, match=r"idp\(\) argument 1 must be an int, None, a ctypes pointer or a buffer"):
        f(1.5)


def test_buffers(lib: ctypes.CDLL) -> None:
    s = fast.wrap(addr(lib, "sum_bytes"), "uint64(buffer, size_t)", name="sum_bytes")
    assert s(bytearray(b"\x01\x02\x03"), 3) == 6
    assert s(b"\xff" * 10, 10) == 2550  # read-only: a copy is passed
    assert s(memoryview(bytearray(range(10)))[2:5], 3) == 2 + 3 + 4
    import array

    assert s(array.array("B", [9, 9]), 2) == 18
    fill = fast.wrap(addr(lib, "fill"), "void(buffer, size_t, uint8)")
    ba = bytearray(4)
    fill(ba, 4, 7)
    assert ba == bytearray(b"\x07" * 4)
    data = b"abcd"
    fill(data, 4, 0)  # the callee wrote to a copy
    assert data == b"abcd"
    with pytest.raises(TypeError, match=r"sum_bytes\(\) argument 1 must support the buffer protocol \(buffer\), not int"):
        s(3, 3)
    with pytest.raises(BufferError):
        s(memoryview(bytearray(10))[::2], 5)


def test_huge_buffer(lib: ctypes.CDLL) -> None:
    size = 5 << 30  # 5 GiB, past every 32-bit length; pages untouched but the last
    m = mmap.mmap(-1, size)
    m[size - 1] = 0xAB
    at = fast.wrap(addr(lib, "byte_at"), "uint8(buffer, size_t)")
    assert at(m, size - 1) == 0xAB
    assert at(m, 0) == 0
    m.close()


def test_pyobject(lib: ctypes.CDLL) -> None:
    f = fast.wrap(addr(lib, "newref"), "pyobject(pyobject)")
    o = object()
    before = sys.getrefcount(o)
    for _ in range(100):
        assert f(o) is o
    assert sys.getrefcount(o) == before
    with pytest.raises(SystemError, match=r"null\(\) returned NULL"):
        fast.wrap(addr(lib, "null_obj"), "pyobject()", name="null")()
    with pytest.raises(ValueError, match="raised by C"):
        fast.wrap(addr(lib, "raise_obj"), "pyobject()")()


# ---- wrappers: bad input -----------------------------------------------------------------


def test_wrong_argument_count_and_keywords(lib: ctypes.CDLL) -> None:
    add = fast.wrap(addr(lib, "add"), "int64(int64, int64)", name="add")
    with pytest.raises(TypeError, match=r"add\(\) takes 2 arguments \(int64\(int64, int64\)\), 3 given"):
        add(1, 2, 3)
    with pytest.raises(TypeError, match="1 given"):
        add(1)
    with pytest.raises(TypeError, match="keyword"):
        add(1, b=2)
    with pytest.raises(TypeError, match="argument 2 must be int"):
        add(1, "2")


@pytest.mark.parametrize(
    "sig", ["int64", "int64(int64", "nosuch(int64)", "int64(void, int64)", "int64(int64))", "int64(int64 a b)"]
)
def test_unparsable_signatures(lib: ctypes.CDLL, sig: str) -> None:
    with pytest.raises(ValueError, match="signature"):
        fast.wrap(addr(lib, "add"), sig)
    with pytest.raises(ValueError, match="signature"):
        fast.callback(lambda: 0, sig)


def test_bad_wrap_arguments(lib: ctypes.CDLL) -> None:
    with pytest.raises(TypeError):
        fast.wrap(addr(lib, "add"), 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        fast.wrap("0x1234", "int64()")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NULL"):
        fast.wrap(0, "int64()")
    with pytest.raises(ValueError, match="too many arguments"):
        fast.wrap(addr(lib, "add"), "int64(" + ", ".join(["int64"] * 23) + ")")
    with pytest.raises(TypeError, match="callable"):
        fast.callback(42, "int64()")
    with pytest.raises(ValueError, match="too many arguments"):
        fast.callback(lambda *a: 0, "int64(" + ", ".join(["int64"] * 23) + ")")


def test_owner_is_kept_alive(lib: ctypes.CDLL) -> None:
    class Owner:
        pass

    owner = Owner()
    ref = weakref.ref(owner)
    add = fast.wrap(addr(lib, "add"), "int64(int64, int64)", owner=owner)
    del owner
    gc.collect()
    assert ref() is not None and fast.info(add).owner is ref()
    del add
    gc.collect()
    assert ref() is None


def test_guard_runs_around_every_call(lib: ctypes.CDLL) -> None:
    ctx = (ctypes.c_int64 * 4)()
    guard = (addr(lib, "guard_enter"), addr(lib, "guard_exit"), ctypes.addressof(ctx))
    add = fast.wrap(addr(lib, "add"), "int64(int64, int64)", guard=guard, owner=ctx)
    assert add(1, 2) == 3 and add(3, 4) == 7
    assert list(ctx[:2]) == [2, 14]
    ctx[2] = 1
    with pytest.raises(RuntimeError, match="guard says no"):
        add(1, 2)
    s = fast.wrap(addr(lib, "sum_bytes"), "uint64(buffer, size_t)", guard=guard, owner=ctx)
    assert fast.info(s).stencils[0] == "entry_guard_buffers"
    ctx[2] = 0
    assert s(bytearray(b"\x05"), 1) == 5
    # enter can refuse the call: its exception is raised and the function does not run.
    counted = fast.wrap(addr(lib, "counted_add"), "int64(int64, int64)", guard=guard, owner=ctx)
    seen = ctypes.c_int64.in_dll(lib, "calls_seen")
    assert counted(1, 1) == 2 and seen.value == 1
    ctx[3] = 1
    with pytest.raises(RuntimeError, match="enter says no"):
        counted(1, 1)
    assert seen.value == 1


# ---- callbacks -------------------------------------------------------------------------


def via_wrapper(lib: ctypes.CDLL, caller: str, sig: str, **kw: Any) -> Callable[..., Any]:
    return fast.wrap(addr(lib, caller), sig, name=caller, **kw)


def test_callback_basic(lib: ctypes.CDLL) -> None:
    seen: List[Any] = []
    t = fast.callback(lambda a, b: seen.append((a, b)) or a * b, "int64(int64, int64)")
    call2 = via_wrapper(lib, "call2", "int64(ptr, int64, int64)")
    assert call2(t.address, 6, 7) == 42
    assert seen == [(6, 7)]
    loop2 = via_wrapper(lib, "loop2", "int64(ptr, int64)")
    t2 = fast.callback(lambda i, one: i + one, "int64(int64, int64)")
    assert loop2(t2.address, 1000) == sum(range(1, 1001))
    # Plain C callers (ctypes) work too: the thunk is an ordinary C function pointer.
    proto = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
    assert proto(t.address)(3, 4) == 12
    zero = fast.callback(lambda: 99, "int64()")
    assert via_wrapper(lib, "call0", "int64(ptr)")(zero.address) == 99
    hit: List[int] = []
    v = fast.callback(lambda: hit.append(1), "void()")
    via_wrapper(lib, "call_void", "void(ptr)")(v.address)
    assert hit == [1]
    six = fast.callback(lambda *a: sum(k * x for k, x in enumerate(a, 1)), "int64(int64, int64, int64, int64, int64, int64)")
    assert via_wrapper(lib, "call6", "int64(ptr)")(six.address) == sum(k * k for k in range(1, 7))


def test_callback_mixed_arguments(lib: ctypes.CDLL) -> None:
    got: List[Any] = []

    def cb(*args: Any) -> float:
        got.extend(args)
        return 1.25

    t = fast.callback(cb, "double(int8, double, uint16, float, int64, int32, uint8, bool, double)")
    assert via_wrapper(lib, "call_mixed", "double(ptr)")(t.address) == 1.25
    assert got[:8] == [-3, 0.5, 65535, 0.25, -(2**40), -7, 200, True]
    assert math.copysign(1.0, got[8]) == -1.0


@pytest.mark.parametrize("name", sorted(C_TYPES))
def test_callback_edge_values(lib: ctypes.CDLL, name: str) -> None:
    caller = via_wrapper(lib, f"call_{name}", f"{name}(ptr, {name})")
    received: List[Any] = []

    def echo(x: Any) -> Any:
        received.append(x)
        return x

    t = fast.callback(echo, f"{name}({name})")
    if name in INT_TYPES:
        _, lo, hi = INT_TYPES[name]
        for v in (lo, hi, 0, 1):
            assert caller(t.address, v) == v
        assert received == [lo, hi, 0, 1]
    elif name == "bool":
        assert caller(t.address, True) is True and caller(t.address, False) is False
    elif name in ("float", "double"):
        for v in (1.5, math.inf, -math.inf, 0.25):
            assert caller(t.address, v) == v
        assert math.isnan(caller(t.address, math.nan))
        assert math.copysign(1.0, caller(t.address, -0.0)) == -1.0
    elif name == "ptr":
        assert caller(t.address, None) is None and received[-1] is None
        assert caller(t.address, 0x1234) == 0x1234 and received[-1] == 0x1234
    elif name == "pyobject":
        o = object()
        assert caller(t.address, o) is o
        # The callee returned a new reference it owns; newref-style callers must release it.
        assert received[-1] is o


def test_callback_result_conversions(lib: ctypes.CDLL, unraisable: List[Any]) -> None:
    unraisable.install()
    call = via_wrapper(lib, "call_int8", "int8(ptr, int8)")
    t = fast.callback(lambda x: 1000, "int8(int8)", error_value=-1)
    with pytest.raises(OverflowError, match=r"callback .*<lambda> result: 1000 does not fit in int8"):
        call(t.address, 1)
    t2 = fast.callback(lambda x: "no", "int8(int8)", error_value=-1)
    with pytest.raises(TypeError, match=r"callback .*<lambda> result must be int \(int8\), not str"):
        call(t2.address, 1)
    class Idx:
        def __index__(self) -> int:
            return 5
    t3 = fast.callback(lambda x: Idx(), "int8(int8)")
    assert call(t3.address, 1) == 5
    d = via_wrapper(lib, "call_double", "double(ptr, double)")
    assert d(fast.callback(lambda x: 2, "double(double)").address, 1.0) == 2.0
    b = via_wrapper(lib, "call_bool", "bool(ptr, bool)")
    assert b(fast.callback(lambda x: [1], "bool(bool)").address, False) is True
    assert unraisable == []


def test_callback_that_raises_is_reraised_by_the_wrapper(lib: ctypes.CDLL, unraisable: List[Any]) -> None:
    unraisable.install()
    calls: List[int] = []

    def boom(a: int, b: int) -> int:
        calls.append(a)
        raise KeyError(f"boom {a}")

    t = fast.callback(boom, "int64(int64, int64)", error_value=-7)
    call2 = via_wrapper(lib, "call2", "int64(ptr, int64, int64)")
    with pytest.raises(KeyError, match="boom 1"):
        call2(t.address, 1, 2)
    loop2 = via_wrapper(lib, "loop2", "int64(ptr, int64)")
    with pytest.raises(KeyError, match="boom 0"):  # the first one; the loop went on
        loop2(t.address, 5)
    assert calls == [1, 0, 1, 2, 3, 4]
    assert unraisable == []
    # The error value reached the native caller: count it through a callback that fails once.
    state = {"n": 0}

    def sometimes(i: int, one: int) -> int:
        state["n"] += 1
        if i == 2:
            raise ValueError("two")
        return 1

    t2 = fast.callback(sometimes, "int64(int64, int64)", error_value=100)
    proto = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64)(addr(lib, "loop2"))
    assert proto(t2.address, 4) == 1 + 1 + 100 + 1
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, ValueError)


def test_fused_entries_convert_fail_and_reraise_like_the_chain(lib: ctypes.CDLL, unraisable: List[Any]) -> None:
    """Signatures of no argument or one or two 64-bit integers use one fused stencil: its
    slow paths, errors and callback handshake behave as the chain's."""
    unraisable.install()
    sig_stencils = {
        "int64(int64, int64)": ["entry2_i64"],
        "uint64(uint64, int64)": ["entry2_u64"],
        "pyobject(int64, uint64)": ["entry2_pyobject"],
        "double(uint64)": ["entry1_f64"],
        "void()": ["entry0_void"],
        "int64(int32, int64)": ["entry_plain", "conv_sint_r0", "conv_i64_r1", "call_i2", "box_i64"],
    }
    for sig, stencils in sig_stencils.items():
        assert fast.info(fast.wrap(addr(lib, "add"), sig)).stencils == stencils, sig
    # The callback's address passed as an integer: call_int64(cb, x) = cb(x).
    call = fast.wrap(addr(lib, "call_int64"), "int64(int64, int64)", name="call")
    callu = fast.wrap(addr(lib, "call_uint64"), "uint64(uint64, uint64)", name="callu")
    double = fast.callback(lambda x: 2 * x, "int64(int64)")
    ident = fast.callback(lambda x: x, "uint64(uint64)")
    assert call(double.address, 21) == 42 and call(double.address, -21) == -42
    assert callu(ident.address, 2**64 - 1) == 2**64 - 1
    class Index:
        def __index__(self) -> int:
            return 5
    assert call(double.address, Index()) == 10 and callu(ident.address, Index()) == 5
    assert call(double.address, True) == 2
    with pytest.raises(OverflowError, match=r"call\(\) argument 2: .* does not fit in int64"):
        call(double.address, 2**63)
    with pytest.raises(OverflowError, match=r"callu\(\) argument 2: .* does not fit in uint64"):
        callu(ident.address, -1)
    with pytest.raises(TypeError, match=r"call\(\) argument 1 must be int \(int64\), not str"):
        call("x", 1)
    with pytest.raises(TypeError, match=r"callu\(\) argument 2 must be int \(uint64\), not float"):
        callu(ident.address, 1.0)
    with pytest.raises(TypeError, match=r"call\(\) takes 2 arguments \(int64\(int64, int64\)\), 1 given"):
        call(1)

    def boom(x: int) -> int:
        raise KeyError(f"boom {x}")

    failing = fast.callback(boom, "int64(int64)", error_value=-1)
    with pytest.raises(KeyError, match="boom 5"):
        call(failing.address, 5)
    # A pyobject result with a pending exception: the NULL the callback's error value gave.
    callp = fast.wrap(addr(lib, "call_int64"), "pyobject(int64, int64)", name="callp")
    failing0 = fast.callback(boom, "int64(int64)", error_value=0)
    with pytest.raises(KeyError, match="boom 7"):
        callp(failing0.address, 7)
    # An __index__ that raises fails the conversion inside the handshake as in the chain (a
    # TypeError naming the argument), and the handshake slot is restored (autouse fixture).
    class Bad:
        def __index__(self) -> int:
            raise ValueError("no index")
    chain = fast.wrap(addr(lib, "call_int64"), "int64(int64, int32)", name="call")
    for f in (call, chain):
        with pytest.raises(TypeError, match=r"call\(\) argument 2 must be int \(int(64|32)\), not Bad"):
            f(double.address, Bad())
    assert call(double.address, 4) == 8
    assert unraisable == []


@pytest.mark.parametrize("outer_sig", ["int64(ptr, int64)", "int64(int64, int64)"])
def test_nested_wrappers_each_get_their_own_callbacks_exceptions(lib: ctypes.CDLL, unraisable: List[Any], outer_sig: str) -> None:
    """wrapper -> native -> thunk -> Python -> wrapper -> native -> thunk: an exception goes
    to the innermost running wrapper of its thread; an outer call's pending exception is not
    seen by wrappers called after it, and later exceptions of the outer call are dropped.
    (The chain entry and the fused entry2.)"""
    unraisable.install()
    inner = via_wrapper(lib, "call2", "int64(ptr, int64, int64)")

    def inner_boom(a: int, b: int) -> int:
        raise LookupError(f"inner {a}")

    inner_bad = fast.callback(inner_boom, "int64(int64, int64)")
    inner_ok = fast.callback(lambda a, b: a + b, "int64(int64, int64)")
    seen: List[str] = []

    def outer_cb(i: int, one: int) -> int:
        if i == 0:
            raise KeyError("outer 0")  # pending in the outer frame from now on
        if i == 1:
            try:
                inner(inner_bad.address, 1, 1)
            except LookupError as exc:
                seen.append(str(exc))
            return 1
        if i == 2:
            seen.append(f"ok {inner(inner_ok.address, 2, 3)}")  # no exception here
            return 1
        raise ValueError(f"outer {i}")  # dropped: the outer call keeps its first

    outer_thunk = fast.callback(outer_cb, "int64(int64, int64)")
    outer = fast.wrap(addr(lib, "loop2"), outer_sig, name="loop2")
    with pytest.raises(KeyError, match="outer 0"):
        outer(outer_thunk.address, 4)
    assert seen == ["inner 1", "ok 5"]
    assert unraisable == []
    seen.clear()
    # The handshake slot was restored: the same wrappers work normally afterwards.
    assert inner(inner_ok.address, 4, 5) == 9


def test_callback_error_without_a_wrapper_goes_to_unraisablehook(lib: ctypes.CDLL, unraisable: List[Any]) -> None:
    unraisable.install()
    def boom(a: int, b: int) -> int:
        raise KeyError("nobody to raise to")

    t = fast.callback(boom, "int64(int64, int64)", error_value=-7)
    call2 = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(addr(lib, "call2"))
    assert call2(t.address, 1, 2) == -7
    assert len(unraisable) == 1
    assert isinstance(unraisable[0].exc_value, KeyError)
    assert unraisable[0].object is boom


def test_closed_thunk_gives_a_defined_result(lib: ctypes.CDLL, unraisable: List[Any]) -> None:
    unraisable.install()
    def cb(a: int, b: int) -> int:
        return a + b

    ref = weakref.ref(cb)
    t = fast.callback(cb, "int64(int64, int64)", error_value=-1)
    del cb
    gc.collect()
    assert ref() is not None, "the thunk keeps its callable alive"
    call2 = via_wrapper(lib, "call2", "int64(ptr, int64, int64)")
    assert call2(t.address, 2, 3) == 5
    t.close()
    gc.collect()
    assert ref() is None and t.closed and t.callable is None
    with pytest.raises(jitload.CallbackError, match="after its thunk was closed") as info:
        call2(t.address, 2, 3)
    assert isinstance(info.value, RuntimeError)
    raw = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(addr(lib, "call2"))
    assert raw(t.address, 2, 3) == -1
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, jitload.CallbackError)
    with fast.callback(lambda: 1, "int64()") as t2:
        assert not t2.closed
    assert t2.closed


def test_thunk_freed_with_its_object(lib: ctypes.CDLL) -> None:
    def cb() -> int:
        return 1

    ref = weakref.ref(cb)
    t = fast.callback(cb, "int64()")
    del cb
    del t
    gc.collect()
    assert ref() is None
    # A cycle through the callable is collected too.
    class Holder:
        pass

    h = Holder()
    h.thunk = fast.callback(lambda: id(h), "int64()")  # type: ignore[attr-defined]
    href = weakref.ref(h)
    del h
    gc.collect()
    assert href() is None


def test_callback_that_drops_its_own_thunk(lib: ctypes.CDLL) -> None:
    from jitload import _native

    holder: Dict[str, Any] = {}
    waiting: List[int] = []

    def cb() -> int:
        holder.clear()  # the last reference to the thunk goes away during its own call
        waiting.append(_native._stencils.buried_thunks())
        return 5

    holder["t"] = fast.callback(cb, "int64()")
    address = holder["t"].address
    assert via_wrapper(lib, "call0", "int64(ptr)")(address) == 5
    assert waiting == [1], "kept while its own call runs"
    assert _native._stencils.buried_thunks() == 0, "freed by the call's exit"


PARKED_IN_THUNK_EXIT = r"""
import ctypes, gc, sys, threading, time
import jitload.fast as fast
from jitload import _native

lib = ctypes.CDLL(sys.argv[1])
lib.call2_in_thread.restype = ctypes.c_int64
lib.call2_in_thread.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
parked, release = threading.Event(), threading.Event()
local = threading.local()


class Parker:
    # Runs when the new thread's thread state is cleared: inside the thunk's
    # PyGILState_Release, after the callback returned and before the thunk's code returns.
    def __del__(self) -> None:
        parked.set()
        release.wait(60)


def cb(a: int, b: int) -> int:
    local.parker = Parker()
    return a + b


thunk = fast.callback(cb, "int64(int64, int64)")
address = thunk.address
result = []
caller = threading.Thread(target=lambda: result.append(lib.call2_in_thread(address, 2, 3)))
caller.start()
assert parked.wait(60)
del thunk
gc.collect()
for _ in range(200):  # other thunks made and freed meanwhile
    fast.callback(lambda a, b: 0, "int64(int64, int64)").close()
time.sleep(0.2)  # longer than any grace period a timer would give
print("waiting while parked:", _native._stencils.buried_thunks(), flush=True)
release.set()
caller.join()
print("result:", result[0], flush=True)
print("waiting after:", _native._stencils.buried_thunks(), flush=True)
"""


def test_thunk_code_outlives_a_thread_parked_in_its_exit(lib: ctypes.CDLL, tmp_path: Path) -> None:
    """A callback from a thread CPython never saw: the thunk takes the GIL with a new thread
    state and, on the way out, releases it, which clears that thread state: a ``__del__``
    run there parks the thread inside the thunk's exit while the thunk dies and 200 more are
    made and freed, for longer than the 50 ms timer that used to free dead thunks' code.
    Each block in its own mapping (no pooling), so freed code is unmapped: the parked thread
    then returned into unmapped memory (SIGSEGV). Now the code waits for it."""
    script = tmp_path / "parked.py"
    script.write_text(PARKED_IN_THUNK_EXIT)
    env = dict(os.environ, JITLOAD_STENCIL_POOL="0")
    proc = subprocess.run([sys.executable, "-X", "faulthandler", str(script), lib._name], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    assert int(lines["waiting while parked"]) >= 1, proc.stdout
    assert lines["result"] == "5"
    assert lines["waiting after"] == "0", "the parked thread's exit freed them"


def test_callback_from_a_foreign_thread(lib: ctypes.CDLL, unraisable: List[Any]) -> None:
    unraisable.install()
    threads: List[int] = []

    def cb(a: int, b: int) -> int:
        threads.append(threading.get_ident())
        return a - b

    t = fast.callback(cb, "int64(int64, int64)")
    # The native thread is not a Python thread: the thunk takes the GIL itself. The wrapper
    # must release the GIL while it waits for that thread.
    run = via_wrapper(lib, "call2_in_thread", "int64(ptr, int64, int64)", release_gil=True)
    assert run(t.address, 10, 3) == 7
    assert threads and threads[0] != threading.get_ident()
    # ... and from Python threads that do not hold the GIL at the time (ctypes releases it).
    proto = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(addr(lib, "call2_in_thread"))
    results: List[int] = []
    workers = [threading.Thread(target=lambda: results.append(proto(t.address, 5, 1))) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == [4] * 4

    # An exception on a foreign thread has no wrapper of its own thread: unraisablehook.
    def boom(a: int, b: int) -> int:
        raise ArithmeticError("in a foreign thread")

    bad = fast.callback(boom, "int64(int64, int64)", error_value=-3)
    assert run(bad.address, 1, 1) == -3
    assert len(unraisable) == 1 and isinstance(unraisable[0].exc_value, ArithmeticError)


def test_callbacks_of_every_kind_of_callable(lib: ctypes.CDLL, unraisable: List[Any]) -> None:
    """Python functions go through their own vectorcall slot, every other callable through
    PyObject_Vectorcall: both give the same results and errors."""
    import functools
    import operator

    unraisable.install()
    call2 = via_wrapper(lib, "call2", "int64(ptr, int64, int64)")

    def plain(a: int, b: int) -> int:
        return a - b

    def defaults(a: int, b: int, c: int = 100) -> int:
        return a + b + c

    def star(*args: int) -> int:
        return sum(args) * 10

    base = 1000

    def closure(a: int, b: int) -> int:
        return a * b + base

    class Adder:
        def __init__(self, k: int) -> None:
            self.k = k

        def method(self, a: int, b: int) -> int:
            return a + b + self.k

        def __call__(self, a: int, b: int) -> int:
            return a * b * self.k

        @staticmethod
        def static(a: int, b: int) -> int:
            return a ** b

    def generator(a: int, b: int) -> Any:
        yield a

    kinds: List[tuple] = [
        (plain, 6 - 7),
        (defaults, 6 + 7 + 100),
        (star, 130),
        (closure, 1042),
        (lambda a, b: a << b, 6 << 7),
        (Adder(3).method, 16),
        (Adder(2), 84),
        (Adder.static, 6**7),
        (operator.sub, -1),
        (max, 7),
        (functools.partial(defaults, c=1), 14),
        (type("Sum", (), {"__new__": lambda cls, a, b: a + b}), 13),  # a class
    ]
    for func, expected in kinds:
        t = fast.callback(func, "int64(int64, int64)")
        assert call2(t.address, 6, 7) == expected, func
    # Errors: wrong arity in the callee, a generator (not an int), recursion in the callable.
    for func, exc in ((lambda a: a, TypeError), (generator, TypeError), (lambda a, b: int("x"), ValueError)):
        t = fast.callback(func, "int64(int64, int64)")
        with pytest.raises(exc):
            call2(t.address, 6, 7)

    def deep(a: int, b: int) -> int:
        return deep(a, b)

    t = fast.callback(deep, "int64(int64, int64)")
    with pytest.raises(RecursionError):
        call2(t.address, 1, 2)
    assert unraisable == []
    # The function's code can be replaced between calls: the slot is read at every call.
    t = fast.callback(plain, "int64(int64, int64)")
    assert call2(t.address, 1, 1) == 0
    plain.__code__ = (lambda a, b: a + b).__code__
    assert call2(t.address, 1, 1) == 2


def test_callbacks_on_python_threads_with_and_without_the_gil(lib: ctypes.CDLL) -> None:
    """The thunks' GIL check (the current thread state's thread_id against this thread) on
    threads started by `threading`: holding the GIL (no PyGILState_Ensure needed) and having
    released it around the native call (the thunk takes it)."""
    holding = via_wrapper(lib, "call2", "int64(ptr, int64, int64)")
    released = via_wrapper(lib, "call2", "int64(ptr, int64, int64)", release_gil=True)
    results: Dict[int, List[int]] = {}

    def worker(k: int) -> None:
        t = fast.callback(lambda a, b: a * b + k, "int64(int64, int64)")
        results[k] = [holding(t.address, 3, 4), released(t.address, 5, 6)] + [holding(t.address, i, 1) for i in range(100)]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in range(4):
        assert results[k][:2] == [12 + k, 30 + k]
        assert results[k][2:] == [i + k for i in range(100)]


def test_callbacks_interleaved_across_threads(lib: ctypes.CDLL) -> None:
    """Wrappers on several threads, releasing the GIL, with callbacks that raise: each
    exception reaches the wrapper of its own thread."""
    call2 = via_wrapper(lib, "call2", "int64(ptr, int64, int64)")
    errors: List[str] = []

    def worker(k: int) -> None:
        def boom(a: int, b: int) -> int:
            time.sleep(0.0005)  # let other threads run wrappers in between
            raise LookupError(f"worker {k}")

        t = fast.callback(boom, "int64(int64, int64)")
        for _ in range(50):
            try:
                call2(t.address, k, k)
            except LookupError as exc:
                errors.append(str(exc) == f"worker {k}" and "ok" or f"wrong: {exc} in {k}")

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == ["ok"] * 200


def test_wrapper_on_a_python_wrapped_thunk_roundtrip(lib: ctypes.CDLL) -> None:
    t = fast.callback(lambda a, b: a * b, "int64(int64, int64)")
    mul = fast.wrap(t.address, "int64(int64, int64)", owner=t)
    assert mul(6, 7) == 42 and fast.info(mul).owner is t


@pytest.mark.parametrize(
    "result, value, bad",
    [
        ("double", -0.0, "x"),
        ("float", 0.5, None),
        ("bool", True, None),
        ("int8", -128, 128),
        ("uint16", 65535, -1),
        ("uint64", 2**64 - 1, 2**64),
        ("int64", -(2**63), 2**63),
        ("ptr", 0x1234, "p"),
        ("void", None, None),
    ],
)
def test_zero_argument_callbacks(result: str, value: Any, bad: Any) -> None:
    """Callbacks without arguments use one fused stencil per result type: results convert
    like the chained ones, and a result that does not convert reaches the calling wrapper."""
    box = [value]
    t = fast.callback(lambda: box[0], f"{result}()")
    f = fast.wrap(t.address, f"{result}()", owner=t)
    got = f()
    assert got == value and type(got) is type(value)
    if isinstance(value, float):
        assert math.copysign(1.0, got) == math.copysign(1.0, value)
    if bad is not None:
        box[0] = bad
        with pytest.raises((OverflowError, TypeError), match=f"{result}|int|float"):
            f()
    box[0] = value
    if result == "int64":
        # From threads that do not hold the GIL (ctypes releases it): the fused entry takes it.
        proto = ctypes.CFUNCTYPE(ctypes.c_int64)(t.address)
        results: List[int] = []
        workers = [threading.Thread(target=lambda: results.extend(proto() for _ in range(50))) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert results == [value] * 200
    t.close()
    with pytest.raises(RuntimeError, match="closed"):
        f()


def test_guide_and_docstring_examples() -> None:
    import doctest
    import re

    guide = (Path(__file__).resolve().parent.parent / "docs" / "fast.md").read_text()
    namespace: Dict[str, Any] = {"__name__": "docs_fast"}
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", guide, flags=re.S)):
        exec(compile(block, f"fast.md#block{i + 1}", "exec"), namespace)
    failures, tried = doctest.testmod(fast)
    assert tried > 0 and failures == 0


# ---- cost of building ------------------------------------------------------------------


def test_building_many_and_dropping_them_leaves_nothing_behind(lib: ctypes.CDLL) -> None:
    """Building is a copy-and-patch into pooled pages (its time is a benchmark:
    benches/bench_calls.py reports microseconds per wrapper and per thunk): 2,000 wrappers
    and thunks built, called and dropped leave no live block and no extra page behind."""
    from jitload import _native

    address = addr(lib, "add")
    sig = "int64(int64, int64)"
    gc.collect()
    pages_before, live_before = _native._stencils.code_pages()
    for k in range(1000):
        f = fast.wrap(address, sig)
        t = fast.callback(lambda a, b, k=k: a + b + k, sig)
        assert f(k, 1) == k + 1
        t.close()
        del f, t
    gc.collect()
    deadline = time.monotonic() + 60  # dead thunks' code is freed after a grace period
    while _native._stencils.buried_thunks() and time.monotonic() < deadline:  # (which sweeps)
        time.sleep(0.05)
    pages_after, live_after = _native._stencils.code_pages()
    assert live_after <= live_before, (live_before, live_after)  # (other tests' blocks may go meanwhile)
    assert pages_after <= pages_before + 1, (pages_before, pages_after)  # at most the open page


def test_no_writable_and_executable_memory(lib: ctypes.CDLL) -> None:
    add = fast.wrap(addr(lib, "add"), "int64(int64, int64)")
    t = fast.callback(lambda: 1, "int64()")
    code = fast.info(add).code[0]
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= code < hi or lo <= t.address < hi:
            assert parts[1].startswith("r-x"), line


def test_wrappers_and_thunks_share_code_pages(lib: ctypes.CDLL) -> None:
    """Small blocks are pooled: many per page, each still right after later blocks were
    appended to its page, no writable+executable mapping, pages unmapped when emptied."""
    from jitload import _native

    gc.collect()
    gc.disable()  # no collection of other tests' objects while counting blocks
    try:
        live_before = _native._stencils.code_pages()[1]
        adds = [fast.wrap(addr(lib, "add"), "int64(int64, int64)") for _ in range(60)]
        assert _native._stencils.code_pages()[1] == live_before + 60
    finally:
        gc.enable()
    thunks = [fast.callback(lambda a, b, k=k: a * b + k, "int64(int64, int64)") for k in range(20)]
    pages = {fast.info(f).code[0] & ~4095 for f in adds} | {t.address & ~4095 for t in thunks}
    assert len(pages) * 3 <= len(adds) + len(thunks), len(pages)
    call2 = via_wrapper(lib, "call2", "int64(ptr, int64, int64)")
    for k, (f, t) in enumerate(zip(adds, thunks)):
        assert f(k, -(2**62)) == k - 2**62
        assert call2(t.address, 6, k) == 6 * k + k
    for line in Path("/proc/self/maps").read_text().splitlines():
        perms = line.split()[1]
        assert not ("w" in perms and "x" in perms), line
    # Wrappers' blocks go with them (thunks' after a grace period, see Thunk).
    gc.disable()
    try:
        live = _native._stencils.code_pages()[1]
        del adds, f
        assert _native._stencils.code_pages()[1] == live - 60
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "variable, value",
    [("JITLOAD_CODE_MEMORY", "dualmap"), ("JITLOAD_STENCIL_MEMORY", "dualmap"), ("JITLOAD_CODE_MEMORY", "mprotect")],
)
def test_code_memory_mode(lib: ctypes.CDLL, variable: str, value: str) -> None:
    """The mode chosen in the environment seals wrappers and thunks (the former variable name too)."""
    script = (
        "import ctypes, sys, jitload.fast as fast\n"
        f"lib = ctypes.CDLL({str(Path(lib._name))!r})\n"
        "a = ctypes.cast(lib.add, ctypes.c_void_p).value\n"
        "f = fast.wrap(a, 'int64(int64, int64)')\n"
        "t = fast.callback(lambda x, y: x * y, 'int64(int64, int64)')\n"
        "g = fast.wrap(t.address, 'int64(int64, int64)')\n"
        "from jitload import _native\n"
        "print(_native._stencils.memory_strategy(), f(2, 3), g(4, 5))\n"
    )
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("JITLOAD_CODE_MEMORY", "JITLOAD_STENCIL_MEMORY")}
    env[variable] = value
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [value, "5", "20"]


def test_a_callback_error_under_the_epoch_guard_survives_a_later_guarded_call(lib: ctypes.CDLL) -> None:
    """The epoch-guarded entries learn of a callback's exception from the guard's flags word
    (a count of frames holding one), not from their frame: an exception stored in the outer
    call's frame must still be raised after a later callback ran another guarded call to the
    end, and leave nothing behind for the calls after it."""
    pytest.importorskip("jitload._native")
    loop = fast.wrap(addr(lib, "loop2"), "int64(int64, int64)", name="loop2", guard="epoch")
    add = fast.wrap(addr(lib, "add"), "int64(int64, int64)", name="add", guard="epoch")
    assert "entry2_epoch_i64" in fast.info(loop).stencils
    seen = []

    def cb(i: int, one: int) -> int:
        if i == 0:
            raise ValueError("first")
        seen.append(add(i, one))  # a guarded call that ends normally, after the error
        return 0

    thunk = fast.callback(cb, "int64(int64, int64)")
    with pytest.raises(ValueError, match="first"):
        loop(thunk.address, 3)
    assert seen == [2, 3]
    assert add(2, 3) == 5 and loop(thunk.address, 0) == 0, "no error left over"
