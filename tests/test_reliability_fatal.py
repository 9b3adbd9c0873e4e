"""Fatal-error containment: every LLVM path we can reach that ends in report_fatal_error, an
unsupported relocation, an allocation failure or a backend error must give a Python
exception, never an exit, and leave the session usable. Each case runs in a fresh
interpreter so that an exit or a crash shows as a return code instead of killing pytest."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

import jitload
from conftest import run_python

FIXTURES = Path(__file__).parent / "fixtures"


def run_cases(code: str, timeout: int = 120, env: Optional[dict] = None) -> list:
    """Runs `code` (which prints one 'case: outcome' line per case and 'alive' last) in a
    fresh interpreter; returns the case lines after checking it exited normally."""
    out = run_python(code, timeout=timeout, env={"JITLOAD_CACHE": "0", **(env or {})})
    assert out.returncode == 0, f"interpreter died ({out.returncode}):\n{out.stdout}\n{out.stderr[-3000:]}"
    lines = out.stdout.strip().splitlines()
    assert lines and lines[-1] == "alive", out.stdout + out.stderr[-2000:]
    return lines[:-1]


PRELUDE = """
import importlib.machinery, resource, sys, jitload
from jitload import _native
lib = jitload.Session().library("fatal", opt_level=2)
def case(name, fn):
    try:
        fn()
        print(f"{name}: ok")
    except Exception as e:
        print(f"{name}: {type(e).__name__}: {str(e)[:300]}".replace("\\n", " | "))
def still_works():
    m = lib.add_ir("define i32 @still() { ret i32 7 }")
    assert lib.function("still", "int()")() == 7
    m.remove()
"""


def compile_object(tmp_path: Path, name: str, source: str, *flags: str, asm: bool = False) -> Path:
    src = tmp_path / (name + (".s" if asm else ".c"))
    src.write_text(textwrap.dedent(source))
    obj = tmp_path / (name + ".o")
    subprocess.run([jitload._clang.find(), "-c", *flags, str(src), "-o", str(obj)], check=True)
    return obj


def patch_first_relocation(obj: bytes, new_type: int) -> bytes:
    """The object with the first RELA entry's relocation type set to `new_type`."""
    b = bytearray(obj)
    (shoff,) = struct.unpack_from("<Q", b, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", b, 0x3A)
    for i in range(shnum):
        off = shoff + i * shentsize
        (sh_type,) = struct.unpack_from("<I", b, off + 4)
        sh_offset, sh_size = struct.unpack_from("<QQ", b, off + 0x18)
        if sh_type == 4 and sh_size >= 24:  # SHT_RELA
            (info,) = struct.unpack_from("<Q", b, sh_offset + 8)
            struct.pack_into("<Q", b, sh_offset + 8, (info & ~0xFFFFFFFF) | new_type)
            return bytes(b)
    raise AssertionError("no relocation section")


def test_unresolved_symbols_at_link_time(tmp_path):
    obj = compile_object(tmp_path, "needs", "extern int jitload_nowhere(int);\nint user(int x) { return jitload_nowhere(x) + 1; }\n", "-O1", "-fPIC")
    lines = run_cases(PRELUDE + f"""
case("ir", lambda: lib.add_ir("declare i32 @jitload_nowhere_ir()\\ndefine i32 @u() {{ %v = call i32 @jitload_nowhere_ir()\\n ret i32 %v }}"))
case("object", lambda: lib.add_object({str(obj)!r}))
def lazy():
    lib.define_lazy("gen", lambda name: "declare i32 @jitload_nowhere_gen()\\ndefine i32 @gen() {{ %v = call i32 @jitload_nowhere_gen()\\n ret i32 %v }}")
    lib.function("gen", "int()")()
case("generated", lazy)
lazy_lib = jitload.Session().library("lazy", lazy=True)
def lazy_body():
    lazy_lib.add_ir("declare i32 @jitload_nowhere_lazy()\\ndefine i32 @lz() {{ %v = call i32 @jitload_nowhere_lazy()\\n ret i32 %v }}")
    lazy_lib.function("lz", "int()")()
case("lazy", lazy_body)
still_works()
print("alive")
""")
    assert lines[0].startswith("ir: LinkError") and "jitload_nowhere_ir" in lines[0], lines
    assert lines[1].startswith("object: LinkError") and "jitload_nowhere" in lines[1], lines
    assert "jitload_nowhere_gen" in lines[2] and not lines[2].endswith(": ok"), lines
    assert "jitload_nowhere_lazy" in lines[3] and not lines[3].endswith(": ok"), lines


def test_unsupported_relocations_in_objects(tmp_path):
    tls = "__thread int tv = 4;\nint get_tv(void) { return tv; }\n"
    le = compile_object(tmp_path, "tls_le", tls, "-O1", "-fPIC", "-ftls-model=local-exec")
    ie = compile_object(tmp_path, "tls_ie", tls, "-O1", "-fPIC", "-ftls-model=initial-exec")
    pltoff = compile_object(tmp_path, "pltoff", """
        .text
        .globl f64
    f64:
        movabsq $ext_sym@PLTOFF, %rcx
        ret
        .data
        .globl ext_sym
    ext_sym:
        .quad 1
    """, asm=True)
    plain = compile_object(tmp_path, "plain", "int other(int x) { return 2 * x; }\nint calls(int x) { return other(x) + 1; }\n", "-O1", "-fPIC")
    objects = {"TPOFF32": le, "GOTTPOFF": ie, "PLTOFF64": pltoff}
    for name, rtype in (("COPY", 5), ("unknown-200", 200), ("unknown-255", 255)):
        p = tmp_path / f"{name}.o"
        p.write_bytes(patch_first_relocation(plain.read_bytes(), rtype))
        objects[name] = p
    lines = run_cases(PRELUDE + "\n".join(f"case({k!r}, lambda: lib.add_object({str(v)!r}))" for k, v in objects.items()) + "\nstill_works()\nprint('alive')\n")
    for line in lines:
        assert ": LinkError:" in line and "relocation" in line, lines


def test_backend_fatal_errors_are_contained():
    """Instruction selection failures call report_fatal_error ('Cannot select'); in-process
    (engine API, import with isolation off) crash recovery catches it, isolated imports see
    the compiler process fail."""
    ir = 'define x86_fp80 @l(x86_fp80 %x) #0 { %y = fadd x86_fp80 %x, %x\n ret x86_fp80 %y }\nattributes #0 = { "target-features"="-x87" }\n'
    lines = run_cases(PRELUDE + f"""
import tempfile, os
ir = {ir!r}
case("library", lambda: lib.add_ir(ir))
d = tempfile.mkdtemp()
p = os.path.join(d, "isel.ll")
open(p, "w").write(ir + "define ptr @PyInit_isel() {{ ret ptr null }}\\n")
spec = importlib.machinery.ModuleSpec("isel", None, origin=p)
case("import-inprocess", lambda: _native.load_extension(p, "isel", "PyInit_isel", spec, isolate=False))
case("import-isolated", lambda: _native.load_extension(p, "isel", "PyInit_isel", spec, isolate=True))
case("inspect", lambda: jitload.Session.default().inspect(ir))
still_works()
print("alive")
""")
    assert len(lines) == 4
    for line in lines:
        assert not line.endswith(": ok") and "Error" in line, lines
        assert "Cannot select" in line or "compiler process" in line or "LLVM" in line, lines


def test_invalid_target_features_and_cpus_do_not_exit():
    lines = run_cases(PRELUDE + """
cases = {
 "bogus-feature": ('define i32 @g(i32 %x) #0 { ret i32 %x }\\nattributes #0 = { "target-features"="+jitload-no-such-feature" }', "g"),
 "bogus-cpu": ('define i32 @h(i32 %x) #0 { ret i32 %x }\\nattributes #0 = { "target-cpu"="jitload-cpu" "tune-cpu"="nope" }', "h"),
 "contradictory": ('define i32 @k(i32 %x) #0 { ret i32 %x }\\nattributes #0 = { "target-features"="+avx512f,-avx512f,+avx10.2-512,-sse" }', "k"),
 "soft-float": ('define float @s(float %x) #0 { %y = fmul float %x, %x\\n ret float %y }\\nattributes #0 = { "use-soft-float"="true" "target-features"="-sse" }', None),
}
for name, (ir, fn) in cases.items():
    def go(ir=ir, fn=fn):
        m = lib.add_ir(ir, name=name)
        if fn:
            assert lib.function(fn, "int(int)")(5) == 5
        m.remove()
    case(name, go)
still_works()
print("alive")
""")
    outcome = dict(line.split(": ", 1) for line in lines)
    assert outcome["bogus-feature"] == "ok" and outcome["bogus-cpu"] == "ok", lines
    assert outcome["contradictory"] == "ok", lines
    assert outcome["soft-float"].startswith("LinkError") and "__mulsf3" in outcome["soft-float"], lines


def test_codegen_error_diagnostics_are_reported():
    """A function whose target-features disable SSE but which returns double: LLVM reports
    'SSE register return with SSE disabled' as a diagnostic and still emits code; jitload
    raises instead of loading wrong code (f(1.0) gave 1.0 before)."""
    lines = run_cases(PRELUDE + """
def go():
    lib.add_ir('define double @f(double %x) #0 { %y = fadd double %x, 1.0\\n ret double %y }\\nattributes #0 = { "target-features"="-sse,-sse2" }')
    print("f(1.0) =", lib.function("f", "double(double)")(1.0))
case("nosse", go)
print("alive")
""")
    assert "Error" in lines[-1] and "SSE" in lines[-1], lines


@pytest.mark.parametrize("size,kind,expect", [
    (1 << 40, "LinkError", "Cannot allocate memory"),
    # A size that wraps: the backend reports it as a diagnostic, which now stops compilation.
    ((1 << 64) - 1, "CompileError", "invalid number of bytes"),
    (3 << 30, "LinkError", "out of range"),
])
def test_huge_bss_in_the_jit_linker(size, kind, expect):
    """A 1 TiB .bss under RLIMIT_AS=4 GiB (allocation failure in JITLink's memory manager), a
    bss whose size wraps (refused by code generation), and a 3 GiB bss beyond the small code
    model's reach: a clear error each, and the session keeps working."""
    lines = run_cases(PRELUDE + f"""
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))
small = jitload.Session().library("small", opt_level=0)
case("bss", lambda: small.add_ir("@big = global [{size} x i8] zeroinitializer\\ndefine ptr @where() {{ ret ptr @big }}"))
still_works()
print("alive")
""")
    assert lines[0].startswith(f"bss: {kind}") and expect in lines[0], lines


def test_compiler_out_of_memory_in_isolated_child():
    """The isolated compile of a module that needs more memory than JITLOAD_COMPILE_MEMORY_MB
    allows dies in the child; the import raises."""
    lines = run_cases(PRELUDE + """
import os, tempfile
n = 1 << 20
d = tempfile.mkdtemp()
p = os.path.join(d, "huge.ll")
with open(p, "w") as f:
    f.write("define ptr @PyInit_huge() { ret ptr null }\\n")
    f.write("@tbl = global [%d x i64] [" % n + ", ".join("i64 %d" % (i * 7919 % 100003) for i in range(n)) + "]\\n")
spec = importlib.machinery.ModuleSpec("huge", None, origin=p)
case("isolated", lambda: _native.load_extension(p, "huge", "PyInit_huge", spec, opt_level=0, isolate=True))
still_works()
print("alive")
""", timeout=300, env={"JITLOAD_COMPILE_MEMORY_MB": "8"})
    # With 8 MB of address space on top of the parent's, the child cannot parse ~14 MB of IR.
    assert lines[0].startswith("isolated: CompileError") and "JITLOAD_COMPILE_MEMORY_MB=8" in lines[0], lines


def test_bitcode_that_hangs_llvm_is_bounded_in_time():
    """This mutated bitcode (found by the load_bytes fuzz target) makes LLVM's bitcode reader
    loop forever (llvm-dis and opt hang on it too): the isolated compile is killed after
    JITLOAD_COMPILE_TIMEOUT_S and the import raises."""
    path = FIXTURES / "hangs" / "cyclic-debug-scope.bc"
    code = f"""
import importlib.machinery
from jitload import _native
p = {str(path)!r}
try:
    _native.load_extension(p, "_speedups", "PyInit__speedups", importlib.machinery.ModuleSpec("_speedups", None, origin=p), isolate=True)
    print("loaded")
except ImportError as e:
    print(type(e).__name__, e)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "JITLOAD_CACHE": "0", "JITLOAD_COMPILE_TIMEOUT_S": "5"})
    try:
        # Generous: the subject is that the limit stops it, not how fast a loaded machine starts Python.
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the interpreter and its hung compiler process
        proc.communicate()
        pytest.fail("the isolated import of a bitcode file that hangs LLVM did not return within 120 s")
    assert proc.returncode == 0 and stdout.startswith("CompileError") and "JITLOAD_COMPILE_TIMEOUT_S=5" in stdout, stdout
    assert stderr == "", stderr[-2000:]  # LLVM's verifier text stays in the compiler process



@pytest.mark.parametrize("isolate", [True, False])
def test_bitcode_that_hangs_llvm_through_the_engine_api_is_bounded(isolate):
    """The same input through the engine API. Isolated (the default), the compiler process is
    killed after JITLOAD_COMPILE_TIMEOUT_S; in-process (isolate=False, on a compiler thread)
    the caller gets CompileError after the limit while the compile, which LLVM cannot stop,
    is abandoned and does not keep the process from exiting cleanly. Either way the library
    stays usable and nothing reaches stderr."""
    path = FIXTURES / "hangs" / "cyclic-debug-scope.bc"
    code = f"""
import time, jitload
from jitload import _native
lib = jitload.Session().library("hang", opt_level=0, isolate={isolate})
t0 = time.monotonic()
try:
    lib.add_bitcode({str(path)!r})
    print("loaded")
except jitload.errors.CompileError as e:
    print("CompileError", "JITLOAD_COMPILE_TIMEOUT_S=3" in str(e))
print(round(time.monotonic() - t0, 1) < 30, _native.abandoned_compiles())
lib.add_ir("define i32 @ok() {{ ret i32 1 }}")
print(lib.function("ok", "int()")(), lib.symbols())
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "JITLOAD_CACHE": "0", "JITLOAD_COMPILE_TIMEOUT_S": "3"})
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("add_bitcode of a bitcode file that hangs LLVM, or the exit after it, did not end within 120 s")
    assert proc.returncode == 0, stderr[-2000:]
    abandoned = 0 if isolate else 1  # an isolated compile is killed, not abandoned
    assert stdout.splitlines() == ["CompileError True", f"True {abandoned}", "1 ['ok']"], stdout + stderr[-2000:]
    if isolate:
        assert stderr == "", stderr[-2000:]
