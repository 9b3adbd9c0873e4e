"""C++ bitcode modules from an installed jitload (run by tests/wheel/minbase.sh in the clean
root): tests/fixtures/cxx's features module (static initialisers, guarded statics,
exceptions inside JIT'd code and through libstdc++'s frames, exception_ptr, RTTI,
thread_local) and tests/wheel/pybind_shapes.cpp (pybind11).

    python cxx_checks.py cold|warm

cold: this process compiles them (jitload._native loaded); warm: they come from the cache
and LLVM is never loaded."""

from __future__ import annotations

import sys
import threading

import cxxfeatures
import pybind_shapes as ps

import jitload

mode = sys.argv[1]
for module in (cxxfeatures, ps):
    assert module.__file__ is not None and module.__file__.endswith(".bc"), module.__file__

f = cxxfeatures
assert f.init_order() == "early;first;second;second-tu;", f.init_order()
assert f.guarded_static(8) == (1, 8 * 42)
assert f.exc_inside() == ("deep", 7)
assert f.exc_from_runtime().startswith("invalid_argument;out_of_range;")
assert f.exc_through_runtime() == (3, True)
assert f.exc_ptr() == "outer/inner"
assert f.rtti() == (True, "St9bad_alloc", "3Dog")
assert f.tls_threads() == [101, 102, 103, 104]
assert f.templates() == (42, 3, "apple,fig,pear,module", 2.5)


class Circle(ps.Shape):
    def area(self) -> float:
        return 12.0

    def name(self) -> str:
        return "circle"


assert ps.describe([ps.Square(3), Circle()]) == ["circle=12", "square=9"]
for call, error in ((lambda: ps.Square(-1), ValueError), (lambda: ps.check(101), ps.TooBig), (lambda: ps.check(-1), IndexError)):
    try:
        call()
        raise AssertionError(f"{error.__name__} not raised")
    except error:
        pass
assert ps.check(7) == 7
assert ps.call_twice(lambda x: x * 3, 2) == 18


def refuse(x: int) -> int:
    raise KeyError(x)


try:
    ps.call_twice(refuse, 5)
    raise AssertionError("KeyError not raised")
except KeyError as e:
    assert e.args == (5,)
counts: list[int] = []
worker = threading.Thread(target=lambda: counts.extend(ps.count() for _ in range(2)))
worker.start()
worker.join()
assert ps.count() == 1 and counts == [1, 2], counts  # thread_local: one counter per thread

if mode == "cold":
    # Compiled in tiers: the checks above ran first-tier code; the final tier fills the cache.
    assert jitload.wait_for_tiers(timeout=600)
    assert ps.count() == 2  # the same thread_local counter, now through the final tier

compiled = "jitload._native" in sys.modules
assert compiled == (mode == "cold"), f"{mode}: jitload._native loaded: {compiled}"
print(f"C++ modules ({mode}): features and pybind11 ok,", "compiled" if compiled else "from the cache, without LLVM", jitload.cache_stats())
