"""Thread-local variables in JIT'd code (found while writing the fatal-error tests)."""

from __future__ import annotations

import pytest

from conftest import run_python

TLS = """
import threading, jitload
lib = jitload.Session().library("tls")
lib.add_ir('''
@tv = thread_local global i32 4
define i32 @get_tv() {
  %v = load i32, ptr @tv
  ret i32 %v
}
define void @set_tv(i32 %x) {
  store i32 %x, ptr @tv
  ret void
}''')
get = lib.function("get_tv", "int()")
put = lib.function("set_tv", "void(int)")
first = get()
put(9)
seen = []
t = threading.Thread(target=lambda: seen.append(get()))
t.start(); t.join()
print(first, get(), seen[0])
"""


@pytest.mark.xfail(strict=True, reason="thread_local globals: the initial value is lost (reads 0, not 4) and the storage "
                   "is shared by all threads (another thread sees the 9 stored here); the same for a -fPIC object "
                   "with general-dynamic TLS added with add_object")
def test_thread_local_initial_value_and_per_thread_storage():
    out = run_python(TLS)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["4", "9", "4"], out.stdout
