"""jitload demo: build a C extension to LLVM bitcode, import it, use it.

Run with `make demo` (which sets everything up), or `python examples/demo.py`.
"""

import importlib.machinery
import os
import sys
import tempfile
import time

import jitload
from jitload.build import compile

here = os.path.dirname(os.path.abspath(__file__))
work = tempfile.mkdtemp(prefix="jitload-demo-")
suffix = jitload.BITCODE_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.bc
out = os.path.join(work, "fastmath" + suffix)

print(f"LLVM {jitload.llvm_version()}, host CPU {jitload.host_target()['cpu']}")
print(f"1. compiling examples/fastmath.c to bitcode with clang 22 -> {os.path.basename(out)}")
compile([os.path.join(here, "fastmath.c")], out)
with open(out, "rb") as f:
    print(f"   {os.path.getsize(out)} bytes, magic {f.read(4).hex()} (LLVM bitcode), no .so anywhere:",
          [n for n in os.listdir(work)])

print("2. import fastmath  (found by jitload's import hook, JIT-compiled by ORC for this CPU)")
sys.path.insert(0, work)
t0 = time.perf_counter()
import fastmath  # noqa: E402

t1 = time.perf_counter()
print(f"   imported in {1000 * (t1 - t0):.1f} ms from {fastmath.__file__}")
print(f"   loader: {type(fastmath.__loader__).__name__} "
      f"(an ExtensionFileLoader: {isinstance(fastmath.__loader__, importlib.machinery.ExtensionFileLoader)})")

print("3. use it")
print(f"   fastmath.prime_sum(100_000) = {fastmath.prime_sum(100_000)}")
print(f"   fastmath.hypot_scaled(3.0, 4.0) = {fastmath.hypot_scaled(3.0, 4.0)!r}  (sqrt(2)*5, constant set by a static constructor)")
print(f"   fastmath.calls() = {fastmath.calls()}  (PEP 489 module state)")
print(f"   fastmath.compiled_by = {fastmath.compiled_by!r}  (set by the Py_mod_exec slot)")

print("4. bad input gives an ImportError, and the interpreter keeps going")
bad = os.path.join(work, "broken" + suffix)  # tagged for this Python: no ABI warning, just the error
with open(bad, "wb") as f:
    f.write(b"BC\xc0\xde" + os.urandom(64))
try:
    import broken  # noqa: F401
except ImportError as e:
    print(f"   {type(e).__name__}: {e}")
print(f"   fastmath still works: prime_sum(10) = {fastmath.prime_sum(10)}")
