"""The engine API: libraries, adding, calling, replacing, removing, lazy and Python-driven
code, and every bad input the issue lists (each must raise and leave the session usable)."""

from __future__ import annotations

import ctypes
import gc
import shutil
import subprocess
import sys
import threading

import pytest

import jitload
from jitload import DuplicateSymbolError, GeneratorError, RemovedError, SymbolNotFoundError
from jitload.errors import BitcodeError, LinkError

ADD = "define i64 @add(i64 %a, i64 %b) {\n  %s = add i64 %a, %b\n  ret i64 %s\n}\n"
SUB_AS_ADD = "define i64 @add(i64 %a, i64 %b) {\n  %s = sub i64 %a, %b\n  ret i64 %s\n}\n"
USES_ADD = """
declare i64 @add(i64, i64)
define i64 @add_plus_1000(i64 %a, i64 %b) {
  %s = call i64 @add(i64 %a, i64 %b)
  %t = add i64 %s, 1000
  ret i64 %t
}
"""


@pytest.fixture
def session() -> jitload.Session:
    return jitload.Session()


def test_add_call_and_symbols(session: jitload.Session) -> None:
    lib = session.library("math")
    m = lib.add_ir(ADD, name="add.ll")
    add = lib.function("add", "int64(int64, int64)")
    assert add(2, 3) == 5
    assert add(-(2**63), 0) == -(2**63)
    assert lib.symbols() == ["add"]
    assert m.symbols == ["add"] and not m.removed
    import jitload.fast

    if jitload.fast.available():
        assert jitload.fast.info(add).address == lib.address("add"), "calls go through the stable entry point"
        # ... reading its word themselves (the stub block and the wrapper's code page are
        # both anonymous mappings, placed near each other).
        assert jitload.fast.info(add).jump_slot == lib._native.jump_slot("add")


def test_replace_redirects_other_modules_calls(session: jitload.Session) -> None:
    lib = session.library("r")
    first = lib.add_ir(ADD)
    lib.add_ir(USES_ADD)
    caller = lib.function("add_plus_1000", "int64(int64, int64)")
    add = lib.function("add", "int64(int64, int64)")
    assert caller(5, 3) == 1008
    with pytest.raises(DuplicateSymbolError, match="add"):
        lib.add_ir(SUB_AS_ADD)
    lib.add_ir(SUB_AS_ADD, replace=True)
    assert add(5, 3) == 2, "an existing Function sees the new body"
    assert caller(5, 3) == 1002, "JIT'd code calling through the library sees the new body"
    assert first.removed, "a module whose functions were all replaced is freed"


def test_remove_then_call_raises_and_readd_works(session: jitload.Session) -> None:
    lib = session.library("rm")
    m = lib.add_ir(ADD)
    lib.add_ir(USES_ADD)
    add = lib.function("add", "int64(int64, int64)")
    caller = lib.function("add_plus_1000", "int64(int64, int64)")
    m.remove()
    with pytest.raises(RemovedError, match="'add'"):
        add(1, 2)
    with pytest.raises(RemovedError, match="'add'"):
        caller(1, 2)  # native code reaching the removed function
    with pytest.raises(RemovedError):
        m.remove()
    with pytest.raises(RemovedError):
        lib.address("add")
    lib.add_ir(SUB_AS_ADD)
    assert caller(5, 3) == 1002 and add(5, 3) == 2


def test_remove_library(session: jitload.Session) -> None:
    lib = session.library("gone")
    lib.add_ir(ADD)
    add = lib.function("add", "int64(int64, int64)")
    lib.remove()
    with pytest.raises(RemovedError):
        add(1, 2)
    with pytest.raises(RemovedError):
        lib.add_ir(ADD)
    with pytest.raises(RemovedError):
        lib.remove()
    other = session.library("still-works")
    other.add_ir(ADD)
    assert other.function("add", "int64(int64, int64)")(1, 2) == 3


def test_link_order(session: jitload.Session) -> None:
    base = session.library("base")
    base.add_ir(ADD)
    app = session.library("app")
    with pytest.raises(LinkError, match="add"):
        app.add_ir(USES_ADD)
    app.link(base)
    app.add_ir(USES_ADD)
    assert app.function("add_plus_1000", "int64(int64, int64)")(1, 2) == 1003
    linked = session.library("linked-at-creation", link=[base])
    linked.add_ir(USES_ADD)
    assert linked.function("add_plus_1000", "int64(int64, int64)")(0, 0) == 1000


def test_globals_as_ctypes_and_constructors(session: jitload.Session) -> None:
    lib = session.library("data")
    lib.add_ir(
        """
@counter = global i64 0
@table = global [4 x i32] [i32 1, i32 2, i32 3, i32 4]
@llvm.global_ctors = appending global [1 x { i32, ptr, ptr }] [{ i32, ptr, ptr } { i32 65535, ptr @init, ptr null }]
define internal void @init() {
  store i64 41, ptr @counter
  ret void
}
define i64 @bump() {
  %v = load i64, ptr @counter
  %n = add i64 %v, 1
  store i64 %n, ptr @counter
  ret i64 %n
}
"""
    )
    counter = lib.variable("counter", ctypes.c_int64)
    assert counter.value == 41, "static constructor ran at add"
    assert lib.function("bump", "int64()")() == 42
    assert counter.value == 42
    counter.value = 100
    assert lib.function("bump", "int64()")() == 101
    table = lib.variable("table", ctypes.c_int32 * 4)
    assert list(table) == [1, 2, 3, 4]
    del lib
    gc.collect()
    assert counter.value == 101, "the ctypes object keeps its library alive"


def test_signatures_and_argument_errors(session: jitload.Session) -> None:
    lib = session.library("sig")
    lib.add_ir(
        """
define double @scale(double %x, float %y) {
  %e = fpext float %y to double
  %r = fmul double %x, %e
  ret double %r
}
define i8 @neg8(i8 %x) {
  %r = sub i8 0, %x
  ret i8 %r
}
define i64 @sum(ptr %p, i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %acc = phi i64 [0, %entry], [%acc1, %loop]
  %q = getelementptr i8, ptr %p, i64 %i
  %b = load i8, ptr %q
  %w = zext i8 %b to i64
  %acc1 = add i64 %acc, %w
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, %n
  br i1 %done, label %out, label %loop
out:
  ret i64 %acc1
}
define void @nothing() {
  ret void
}
"""
    )
    assert lib.function("scale", "double(double, float)")(2.5, 2.0) == 5.0
    neg8 = lib.function("neg8", "int8(int8)")
    assert neg8(5) == -5
    with pytest.raises(OverflowError, match="int8"):
        neg8(128)
    with pytest.raises(TypeError, match="int"):
        neg8("x")
    with pytest.raises(TypeError, match="takes 1 argument"):
        neg8(1, 2)
    total = lib.function("sum", "int64(buffer, int64)")
    assert total(b"\x01\x02\x03", 3) == 6
    assert total(bytearray(b"\x05\x05"), 2) == 10
    with pytest.raises(TypeError, match="buffer"):
        total(object(), 1)
    assert lib.function("nothing", "void()")() is None
    for bad in ("int64", "int64(", "wat(int64)", "int64(void, int64)", "int64(int64 a b)"):
        with pytest.raises(ValueError, match="signature"):
            lib.function("neg8", bad)


def test_bad_inputs_raise_and_session_stays_usable(session: jitload.Session) -> None:
    lib = session.library("bad")
    with pytest.raises(BitcodeError, match=r"<ir>:1:\d+"):
        lib.add_ir("define i64 @f( {")
    with pytest.raises(BitcodeError, match="verifier"):
        lib.add_ir("define i32 @f() {\n  %x = add i32 %y, 1\n  %y = add i32 1, 1\n  ret i32 %x\n}\n")
    with pytest.raises(BitcodeError):
        lib.add_ir(b"BC\xc0\xde garbage")
    with pytest.raises(BitcodeError, match="object"):
        lib.add_object(b"not an object")
    with pytest.raises(LinkError, match="missing_one.*missing_two|missing_two.*missing_one"):
        lib.add_ir("declare i64 @missing_one()\ndeclare i64 @missing_two()\n"
                   "define i64 @g() {\n %a = call i64 @missing_one()\n %b = call i64 @missing_two()\n"
                   " %c = add i64 %a, %b\n ret i64 %c\n}\n")
    lib.add_ir("@x = global i32 1\n" + ADD)
    with pytest.raises(DuplicateSymbolError, match="x"):
        lib.add_ir("@x = global i32 2\n")
    with pytest.raises(SymbolNotFoundError, match="did you mean: add"):
        lib.address("ad")
    with pytest.raises(LookupError):
        lib.function("nope", "void()")
    assert lib.function("add", "int64(int64, int64)")(20, 22) == 42
    assert lib.symbols() == ["add", "x"]


def test_object_files(session: jitload.Session, tmp_path) -> None:
    clang = shutil.which("clang-22") or shutil.which("clang")
    if clang is None:
        pytest.skip("clang not installed")
    src = tmp_path / "mul.c"
    src.write_text("long mul(long a, long b) { return a * b; }\nint flag = 7;\n")
    obj = tmp_path / "mul.o"
    subprocess.run([clang, "-O2", "-fPIC", "-c", str(src), "-o", str(obj)], check=True)
    lib = session.library("obj")
    m = lib.add_object(obj)
    mul = lib.function("mul", "int64(int64, int64)")
    assert mul(6, 7) == 42
    assert lib.variable("flag", ctypes.c_int).value == 7
    m.remove()
    with pytest.raises(RemovedError):
        mul(1, 1)
    import jitload.fast

    if jitload.fast.available():
        # Called directly, not through a stable entry point: the module is checked per call.
        assert jitload.fast.info(mul).stencils[0] == "entry_guard"


def test_functions_take_the_inline_epoch_guard(session: jitload.Session) -> None:
    """Library.function wraps with the engine's epoch guard inline (docs/fast.md): one fused
    stencil for the common shapes, the guarded chain entry for the rest; a failing stub call
    raises through the guard's slow exit, nested or not."""
    import jitload.fast

    if not jitload.fast.available():
        pytest.skip(str(jitload.fast.unavailable_reason()))
    lib = session.library("inline-guard")
    m = lib.add_ir(ADD)
    lib.add_ir(USES_ADD)
    lib.add_ir("define double @half(double %x) {\n  %h = fmul double %x, 0.5\n  ret double %h\n}\n")
    add = lib.function("add", "int64(int64, int64)")
    caller = lib.function("add_plus_1000", "int64(int64, int64)")
    half = lib.function("half", "double(double)")
    fused = jitload.fast.info(add).stencils
    # Where the kernel lacks membarrier, entering fences: the chain's fenced entry instead.
    assert fused in (["entry2_epoch_i64"], ["entry_epoch_fenced", "conv_i64_r0", "conv_i64_r1", "call_i2", "box_i64"])
    assert jitload.fast.info(half).stencils[0] in ("entry_epoch", "entry_epoch_fenced")
    assert add(2, 3) == 5 and caller(2, 3) == 1005 and half(3.0) == 1.5
    m.remove()
    for _ in range(3):  # the error is raised each time, and nothing stays behind
        with pytest.raises(RemovedError, match="'add'"):
            add(1, 2)
        with pytest.raises(RemovedError, match="'add'"):
            caller(1, 2)
    assert half(5.0) == 2.5
    with pytest.raises(ValueError, match="unknown guard"):
        jitload.fast.wrap(lib.address("half"), "double(double)", guard="nope")  # type: ignore[arg-type]


def test_c_source(session: jitload.Session) -> None:
    lib = session.library("c")
    lib.add_c("#include <math.h>\ndouble hyp(double a, double b) { return sqrt(a*a + b*b); }\n", flags=["-lm"])
    assert lib.function("hyp", "double(double, double)")(3.0, 4.0) == 5.0


def test_define_lazy(session: jitload.Session) -> None:
    lib = session.library("gen")
    calls: list[str] = []

    def generate(name: str) -> str:
        calls.append(name)
        return f"define i64 @{name}(i64 %x) {{\n  %y = mul i64 %x, %x\n  ret i64 %y\n}}\n"

    lib.define_lazy("square", generate)
    lib.add_ir("declare i64 @square(i64)\ndefine i64 @sq_plus_1(i64 %x) {\n %y = call i64 @square(i64 %x)\n"
               " %z = add i64 %y, 1\n ret i64 %z\n}\n")
    assert calls == [], "nothing generated before the first call"
    assert lib.function("sq_plus_1", "int64(int64)")(9) == 82, "JIT'd code triggered generation"
    assert lib.function("square", "int64(int64)")(4) == 16
    assert calls == ["square"]


def test_define_lazy_generation_from_many_threads_runs_once(session: jitload.Session) -> None:
    lib = session.library("gen-threads")
    calls: list[str] = []
    gate = threading.Event()

    def generate(name: str) -> str:
        calls.append(name)
        gate.wait(0.2)  # widen the window in which other threads arrive
        return "define i64 @slow(i64 %x) {\n  %y = add i64 %x, 1\n  ret i64 %y\n}\n"

    lib.define_lazy("slow", generate)
    slow = lib.function("slow", "int64(int64)")
    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(slow(i))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [1, 2, 3, 4, 5, 6]
    assert calls == ["slow"]


@pytest.mark.parametrize(
    "generator, message",
    [
        (lambda name: 1 / 0, "ZeroDivisionError"),
        (lambda name: 42, "returned int"),
        (lambda name: "define i64 @other() {\n ret i64 0\n}\n", "does not define"),
        (lambda name: "this is not IR", "invalid LLVM IR"),
    ],
)
def test_define_lazy_bad_generators(session: jitload.Session, generator, message: str) -> None:
    lib = session.library("gen-bad")
    lib.define_lazy("f", generator)
    f = lib.function("f", "int64()")
    with pytest.raises(GeneratorError, match=message) as info:
        f()
    if message == "ZeroDivisionError":
        assert isinstance(info.value.__cause__, ZeroDivisionError)
    # Still usable: redefine and call.
    lib.define_lazy("f", lambda name: "define i64 @f() {\n ret i64 7\n}\n", replace=True)
    assert f() == 7


def test_python_callbacks(session: jitload.Session) -> None:
    lib = session.library("cb")
    seen: list[int] = []

    def record(x: int) -> int:
        seen.append(x)
        return x * 10

    lib.define_python("record", record, "int64(int64)")
    lib.define_python("fail", lambda x: 1 // 0, "int64(int64)", error_value=-1)
    lib.add_ir(
        """
declare i64 @record(i64)
declare i64 @fail(i64)
define i64 @use_record(i64 %x) {
  %r = call i64 @record(i64 %x)
  %s = add i64 %r, 1
  ret i64 %s
}
define i64 @use_fail(i64 %x) {
  %r = call i64 @fail(i64 %x)
  ret i64 %r
}
"""
    )
    assert lib.function("use_record", "int64(int64)")(4) == 41
    assert seen == [4]
    with pytest.raises(ZeroDivisionError):
        lib.function("use_fail", "int64(int64)")(1)
    # Called from elsewhere (a plain ctypes call): the error value, and unraisablehook.
    reported: list[BaseException] = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda args: reported.append(args.exc_value)
    try:
        raw = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(lib.address("use_fail"))
        assert raw(1) == -1
    finally:
        sys.unraisablehook = old
    assert len(reported) == 1 and isinstance(reported[0], ZeroDivisionError)


def test_callback_from_a_native_thread(session: jitload.Session) -> None:
    """JIT'd code starts a pthread that calls a Python callback: it takes the GIL itself."""
    lib = session.library("thread-cb")
    got: list[int] = []
    lib.define_python("py_note", lambda x: got.append(x) or 0, "int64(int64)")
    lib.add_ir(
        """
declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @pthread_join(i64, ptr)
declare i64 @py_note(i64)
define internal ptr @worker(ptr %arg) {
  %v = ptrtoint ptr %arg to i64
  %r = call i64 @py_note(i64 %v)
  ret ptr null
}
define i32 @run_in_thread(i64 %v) {
  %t = alloca i64
  %p = inttoptr i64 %v to ptr
  %c = call i32 @pthread_create(ptr %t, ptr null, ptr @worker, ptr %p)
  %id = load i64, ptr %t
  %j = call i32 @pthread_join(i64 %id, ptr null)
  ret i32 %c
}
"""
    )
    # The native code waits for a thread that calls back into Python: release the GIL.
    assert lib.function("run_in_thread", "int32(int64)", release_gil=True)(1234) == 0
    assert got == [1234]


def test_module_removed_while_its_code_runs(session: jitload.Session) -> None:
    """A callback removes the module whose function is running: the code stays until return."""
    lib = session.library("self-remove")
    holder: dict[str, jitload.Module] = {}

    def remove_me() -> int:
        holder["m"].remove()
        gc.collect()
        return 5

    lib.define_python("remove_me", remove_me, "int64()")
    holder["m"] = lib.add_ir(
        """
declare i64 @remove_me()
define i64 @run(i64 %x) {
  %a = call i64 @remove_me()
  %b = mul i64 %x, 7
  %c = add i64 %a, %b
  ret i64 %c
}
"""
    )
    run = lib.function("run", "int64(int64)")
    assert run(3) == 26
    assert holder["m"].removed
    with pytest.raises(RemovedError):
        run(3)


def test_lazy_library(session: jitload.Session) -> None:
    n = 300
    body = []
    for i in range(n):
        callee = f"call i64 @f{i - 1}(i64 %x)" if i else "add i64 %x, 0"
        body.append(f"define internal i64 @f{i}(i64 %x) {{\n  %a = {callee}\n  %b = add i64 %a, {i}\n  ret i64 %b\n}}\n")
        body.append(f"define i64 @g{i}(i64 %x) {{\n  %r = call i64 @f{i}(i64 %x)\n  ret i64 %r\n}}\n")
    ir = "".join(body)
    lazy = session.library("lazy", lazy=True)
    eager = session.library("eager")
    lazy.add_ir(ir)
    eager.add_ir(ir)
    for i in (0, 1, 17, n - 1):
        expected = eager.function(f"g{i}", "int64(int64)")(5)
        assert expected == 5 + i * (i + 1) // 2
        assert lazy.function(f"g{i}", "int64(int64)")(5) == expected


def test_inspection(session: jitload.Session) -> None:
    lib = session.library("show", opt_level=2)
    lib.add_ir(ADD + "define i64 @twice(i64 %x) {\n %y = add i64 %x, %x\n ret i64 %y\n}\n")
    ir = lib.ir("twice")
    assert ir.startswith("define") and "@twice(" in ir and "@add(" not in ir
    asm = lib.asm("add")
    assert asm.startswith("add:") and "ret" in asm
    assert "@twice" in lib.ir() and "@add" in lib.ir()


def test_threads_add_call_remove_concurrently(session: jitload.Session) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            lib = session.library(f"t{t}")
            for i in range(15):
                m = lib.add_ir(f"define i64 @v(i64 %x) {{\n  %r = add i64 %x, {t * 1000 + i}\n  ret i64 %r\n}}\n")
                assert lib.function("v", "int64(int64)")(1) == t * 1000 + i + 1
                m.remove()
            lib.remove()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errors == []
