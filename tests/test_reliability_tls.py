"""Thread-local variables in JIT'd code (found while writing the fatal-error tests): code
added through the engine API gets emulated TLS (each thread its own copy, initialised from
the variable's initial value), and an object file whose TLS accesses the JIT linker cannot
serve is refused with an error naming the file, the variable and the relocation."""

from __future__ import annotations

import json

import pytest

from conftest import run_python
from test_reliability_fatal import compile_object

TLS_IR = """
@tv = thread_local global i32 4
define i32 @get_tv() {
  %v = load i32, ptr @tv
  ret i32 %v
}
define void @set_tv(i32 %x) {
  store i32 %x, ptr @tv
  ret void
}"""

TLS = """
import threading, jitload
lib = jitload.Session().library("tls", lazy=LAZY)
lib.add_ir('''%s''')
get = lib.function("get_tv", "int()")
put = lib.function("set_tv", "void(int)")
first = get()
put(9)
seen = []
t = threading.Thread(target=lambda: seen.append(get()))
t.start(); t.join()
print(first, get(), seen[0])
""" % TLS_IR


@pytest.mark.parametrize("lazy", [False, True])
def test_thread_local_initial_value_and_per_thread_storage(lazy):
    out = run_python(TLS.replace("LAZY", str(lazy)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["4", "9", "4"], out.stdout


def test_thread_locals_across_modules_libraries_and_c():
    """Another module and a linked library reach the same per-thread variable; `variable()`
    and `address()` give the calling thread's copy; C's _Thread_local works through add_c;
    a second definition of the name is refused."""
    out = run_python("""
import ctypes, json, threading, jitload
from jitload.errors import DuplicateSymbolError
s = jitload.Session()
lib = s.library("tls")
m = lib.add_ir('''%s''')
lib.add_ir('''@tv = external thread_local global i32
define i32 @twice_tv() {
  %%v = load i32, ptr @tv
  %%w = mul i32 %%v, 2
  ret i32 %%w
}''')
other = s.library("user", link=[lib])
other.add_ir('''@tv = external thread_local global i32
define void @bump_tv() {
  %%v = load i32, ptr @tv
  %%w = add i32 %%v, 100
  store i32 %%w, ptr @tv
  ret void
}''')
c = s.library("c")
c.add_c("_Thread_local long counter = 40;\\nlong next_counter(void) { return ++counter; }\\n")
nxt = c.function("next_counter", "int64()")
get, twice, bump = lib.function("get_tv", "int()"), lib.function("twice_tv", "int()"), other.function("bump_tv", "void()")
var = lib.variable("tv", ctypes.c_int)
bump()
here = [get(), twice(), var.value, nxt(), nxt()]
var.value = 7
here.append(get())
there = []
def other_thread():
    v = lib.variable("tv", ctypes.c_int)
    there.extend([get(), v.value, lib.address("tv") != ctypes.addressof(var), nxt()])
    bump()
    there.append(twice())
t = threading.Thread(target=other_thread); t.start(); t.join()
here.append(get())
try:
    lib.add_ir("@tv = global i32 1")
    dup = "added"
except DuplicateSymbolError as e:
    dup = str(e)
print(json.dumps({"here": here, "there": there, "symbols": lib.symbols(), "module": m.symbols,
                  "c": c.symbols(), "dup": dup}))
""" % TLS_IR)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    assert r["here"] == [104, 208, 104, 41, 42, 7, 7], r
    assert r["there"] == [4, 4, True, 41, 208], r  # the other thread starts from the initial values
    assert r["symbols"] == ["get_tv", "set_tv", "tv", "twice_tv"], r
    assert r["module"] == ["get_tv", "set_tv", "tv"], r
    assert r["c"] == ["counter", "next_counter"], r
    assert "tv" in r["dup"] and "already defines" in r["dup"], r


TLS_C = "__thread int tv = 4;\nint get_tv(void) { return tv; }\nvoid set_tv(int x) { tv = x; }\n"


def compile_c(tmp_path, name, *flags):
    return compile_object(tmp_path, name, TLS_C, "-O1", "-fPIC", *flags)


@pytest.mark.parametrize("flags, model, relocation", [
    (["-ftls-model=global-dynamic"], "general-dynamic", "R_X86_64_TLSGD"),
    (["-ftls-model=local-dynamic"], "local-dynamic", "R_X86_64_TLSLD"),
    (["-ftls-model=initial-exec"], "initial-exec", "R_X86_64_GOTTPOFF"),
    (["-ftls-model=local-exec"], "local-exec", "R_X86_64_TPOFF32"),
    (["-mtls-dialect=gnu2"], "TLS descriptor", "R_X86_64_GOTPC32_TLSDESC"),
])
def test_objects_with_real_tls_relocations_are_refused_clearly(tmp_path, flags, model, relocation):
    obj = compile_c(tmp_path, "tls_" + model.replace(" ", "_"), *flags)
    out = run_python(f"""
import jitload
lib = jitload.Session().library("obj")
try:
    lib.add_object({str(obj)!r})
    print("loaded")
except jitload.errors.LinkError as e:
    print(e)
lib.add_ir("define i32 @ok() {{ ret i32 1 }}")
print(lib.function("ok", "int()")(), lib.symbols())
""")
    assert out.returncode == 0, out.stderr[-2000:]
    message, after = out.stdout.strip().splitlines()
    assert str(obj) in message and "thread-local 'tv'" in message and model in message and relocation in message, message
    assert "-femulated-tls" in message, message
    assert after == "1 ['ok']", after  # nothing of the refused object was added


def test_an_object_built_with_emulated_tls_works(tmp_path):
    obj = compile_c(tmp_path, "tls_emulated", "-femulated-tls")
    out = run_python(f"""
import threading, jitload
lib = jitload.Session().library("obj")
lib.add_object({str(obj)!r})
get, put = lib.function("get_tv", "int()"), lib.function("set_tv", "void(int)")
first = get(); put(9); seen = []
t = threading.Thread(target=lambda: seen.append(get())); t.start(); t.join()
print(first, get(), seen[0], lib.symbols())
""")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().split(maxsplit=3) == ["4", "9", "4", "['get_tv', 'set_tv', 'tv']"], out.stdout
