"""The stress harness: threads doing random add / lookup / call / replace / remove on shared
libraries, Python callbacks called from JIT'd code, and imports of bitcode extension modules,
all at once, every result checked.

    python tests/reliability/stress.py --threads 4 --seconds 60 [--seed 1] [--json FILE]
    python tests/reliability/stress.py --threads 8 --seconds 120 --record   # make reliability

Exit status: 0 when every check passed; 1 on a wrong result or an unexpected exception; 2
when the watchdog saw a thread make no progress for --stall seconds (it dumps every
thread's Python stack with faulthandler first); a crash kills the process (faulthandler
prints the stacks).

The world
---------
One Session with two shared libraries: ``eager`` (O2) and ``lazy`` (lazy=True, O1). Each
has SLOTS slots and 2 *anchors* (``anc<sid>_f``). Slot ``i`` of a library, when present,
is one module defining

    s<i>_f0(x) .. s<i>_f3(x)   f0 loops x times to compute ENC(version, i, 0) + x; f<j>
                               calls f<j-1> (a direct call inside the module) and adds 256
    s<i>_peer(x)               calls an anchor of the same library (through the library:
                               another module) and returns its result unchanged

where ``ENC(v, slot, j) = v << 24 | slot << 16 | j << 8`` and ``0 < x < 256``: every result
says which version of which function of which slot computed it. An anchor is a module
defining ``anc<sid>_f`` the same way; anchors are replaced but never removed.

Mutations of one slot are serialised by the slot's lock (different slots change at the same
time, in the same library). Versions come from one global counter. A slot keeps a log of
its states (a version, or None for "absent") and two indices into it, ``lo <= hi``: before a
mutation starts, its new state is appended and ``hi`` moves to it; when the engine call
returns, ``lo`` moves to it too. So at any moment the library's real state for the slot is
one of ``log[lo..hi]``.

What "correct" means
--------------------
A call reads ``lo`` of its slot before calling and ``hi`` after returning. Its result must
decode to the function and argument asked for, with a version in ``log[lo_before..hi_after]``
— the old or the new version when it raced with a replace, never anything else; or it
raises RemovedError / SymbolNotFoundError, which is correct only if None (absent) is in that
range. For ``peer`` the decoded slot is the anchor's and its version is checked against the
anchor's log. ``lib.address(name)`` must return the same stub address every time for a name
(or raise as above when absent). A replace must leave the replaced module ``removed``; a
remove must leave it ``removed``. Private libraries (one per thread at a time, linked to
the shared eager library) are created, used, and removed whole; calling into one after its
removal must raise RemovedError. A ``client`` library, linked to both shared libraries and
never changed, defines ``c<sid>(x)`` calling anchor ``sid``: calls through it cross a link
into code being replaced. Anything else — a wrong value, an unexpected exception
type, a failed add/replace/remove — is counted as wrong.

Two more operations race with these: ``callback`` binds a Python function into the thread's
own library (``define_python``), calls it from JIT'd code and checks the value, then removes
it; ``import`` imports one of ``--imports`` bitcode extension modules built from C at start
(through the import hook: a compile, isolated in a child, while other threads call and
change code) and checks what its function returns.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import itertools
import json
import os
import random
import sys
import threading
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jitload
from jitload import RemovedError, SymbolNotFoundError

SIG = "int64(int64)"
FUNCS = 4
SLOTS = 6
ANCHORS = 2
ABSENT_ERRORS = (RemovedError, SymbolNotFoundError)


def function(lib: jitload.Library, name: str, release_gil: bool = True) -> Any:
    """A callable for ``name``. Copy-and-patch wrappers hold the GIL during a call unless
    ``release_gil=True``; releasing it lets calls overlap with other threads' work (the
    ctypes path, where there is no such option, always releases it)."""
    try:
        return lib.function(name, SIG, release_gil=release_gil)
    except TypeError:
        return lib.function(name, SIG)


def enc(version: int, slot: int, j: int) -> int:
    return (version << 24) | (slot << 16) | (j << 8)


def counted_function(name: str, base: int) -> str:
    """``name(x)`` = base + x, computed by a loop of x iterations (0 < x < 256)."""
    return f"""define i64 @{name}(i64 %x) {{
entry:
  br label %loop
loop:
  %k = phi i64 [ 0, %entry ], [ %k1, %loop ]
  %acc = phi i64 [ {base}, %entry ], [ %acc1, %loop ]
  %k1 = add i64 %k, 1
  %acc1 = add i64 %acc, 1
  %more = icmp ult i64 %k1, %x
  br i1 %more, label %loop, label %done
done:
  ret i64 %acc1
}}"""


def slot_ir(sid: int, index: int, anchor: str, version: int) -> str:
    parts = [f"declare i64 @{anchor}(i64)", counted_function(f"s{index}_f0", enc(version, sid, 0))]
    for j in range(1, FUNCS):
        parts.append(f"""define i64 @s{index}_f{j}(i64 %x) {{
  %r = call i64 @s{index}_f{j - 1}(i64 %x)
  %o = add i64 %r, 256
  ret i64 %o
}}""")
    parts.append(f"""define i64 @s{index}_peer(i64 %x) {{
  %r = call i64 @{anchor}(i64 %x)
  ret i64 %r
}}""")
    return "\n\n".join(parts) + "\n"


def anchor_ir(sid: int, name: str, version: int) -> str:
    return counted_function(name, enc(version, sid, 0)) + "\n"


CALLBACK_CLIENT = "declare i64 @cb(i64)\ndefine i64 @via(i64 %x) {\n  %r = call i64 @cb(i64 %x)\n  ret i64 %r\n}\n"
EXTENSION_C = """
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *ok(PyObject *s, PyObject *a) { return PyLong_FromLong(%(k)d); }
static PyMethodDef methods[] = {{"ok", ok, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, methods};
PyMODINIT_FUNC PyInit_%(name)s(void) { return PyModule_Create(&def); }
"""


def build_extensions(count: int) -> List[str]:
    """``count`` bitcode extension modules (``ok()`` returns the number in the name) in a new
    directory put on ``sys.path``, with the import hook installed."""
    from jitload.build import compile as compile_c

    directory = Path(tempfile.mkdtemp(prefix="jitload-stress-"))
    names = []
    for i in range(count):
        name = f"stressmod_{os.getpid()}_{i}"
        (directory / f"{name}.c").write_text(EXTENSION_C % {"name": name, "k": i})
        compile_c([str(directory / f"{name}.c")], str(directory / (name + jitload.BITCODE_SUFFIXES[0])), opt_level=1)
        names.append(name)
    sys.path.insert(0, str(directory))
    jitload.install()
    return names


class Slot:
    """One replaceable unit of a shared library, with the log of its states."""

    def __init__(self, lib: jitload.Library, sid: int, index: int, anchor: Optional["Slot"]) -> None:
        self.lib = lib
        self.sid = sid  # unique across libraries: results name it
        self.index = index
        self.anchor = anchor
        self.lock = threading.Lock()
        self.log: List[Optional[int]] = [None]
        self.lo = 0
        self.hi = 0
        self.module: Optional[jitload.Module] = None
        self.names = [self.anchor_name()] if anchor is None else [f"s{index}_f{j}" for j in range(FUNCS)] + [f"s{index}_peer"]
        self.stub_addresses: Dict[str, int] = {}
        self.stub_lock = threading.Lock()

    def anchor_name(self) -> str:
        return f"anc{self.sid}_f"  # unique across libraries: the client library links to all

    def ir(self, version: int) -> str:
        if self.anchor is None:
            return anchor_ir(self.sid, self.anchor_name(), version)
        return slot_ir(self.sid, self.index, self.anchor.anchor_name(), version)

    def begin(self, state: Optional[int]) -> None:
        self.log.append(state)
        self.hi = len(self.log) - 1

    def commit(self) -> None:
        self.lo = self.hi

    def possible(self, lo: int, hi: int) -> List[Optional[int]]:
        return self.log[lo:hi + 1]


class Stop(Exception):
    pass


class World:
    def __init__(self, seed: int, slots: int, kinds: Sequence[str] = ("eager", "lazy"), imports: int = 0) -> None:
        self.session = jitload.Session()
        self.extensions = build_extensions(imports) if imports else []
        self.extensions_lock = threading.Lock()
        self.versions = itertools.count(1)
        makers = {
            "eager": lambda: self.session.library("eager", opt_level=2),
            "lazy": lambda: self.session.library("lazy", opt_level=1, lazy=True),
        }
        self.libs: List[jitload.Library] = [makers[k]() for k in kinds]
        self.slots: List[Slot] = []
        self.anchors: List[Slot] = []
        sid = 0
        for lib in self.libs:
            anchors = []
            for k in range(ANCHORS):
                a = Slot(lib, sid, k, None)
                sid += 1
                anchors.append(a)
            for i in range(slots):
                self.slots.append(Slot(lib, sid, i, anchors[i % ANCHORS]))
                sid += 1
            self.anchors += anchors
        assert sid < 256
        # Anchors first (slots' peers link to them), then half of the slots.
        rng = random.Random(seed)
        for a in self.anchors:
            self.add(a)
        # A client library linked to every shared library, never changed: its c<sid>(x) calls
        # anchor <sid> across the link while the anchor is replaced.
        self.client = self.session.library("client", opt_level=1, link=self.libs)
        self.client.add_ir("\n\n".join(
            [f"declare i64 @{a.anchor_name()}(i64)" for a in self.anchors]
            + [f"define i64 @c{a.sid}(i64 %x) {{\n  %r = call i64 @{a.anchor_name()}(i64 %x)\n  ret i64 %r\n}}"
               for a in self.anchors]) + "\n")
        for s in self.slots:
            if rng.random() < 0.5:
                self.add(s)

    def add(self, slot: Slot) -> None:
        v = next(self.versions)
        slot.begin(v)
        slot.module = slot.lib.add_ir(slot.ir(v), name=f"slot{slot.sid}v{v}")
        slot.commit()


class Worker(threading.Thread):
    WEIGHTS = (
        ("call", 35), ("call_cached", 12), ("peer", 10), ("client", 8), ("lookup", 8), ("symbols", 2),
        ("replace", 12), ("remove", 5), ("add", 5), ("private_library", 3), ("callback", 3), ("import", 2),
    )

    def __init__(self, world: World, tid: int, seed: int, deadline: float, stats: "Stats",
                 skip: Sequence[str] = ()) -> None:
        super().__init__(name=f"stress-{tid}", daemon=True)
        self.world = world
        self.tid = tid
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.stats = stats
        self.counts: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.functions: Dict[Tuple[int, str], Any] = {}
        self.last_progress = time.monotonic()
        self.current = "starting"
        self.private_serial = 0
        self.own: Optional[jitload.Library] = None
        ops, weights = zip(*[(op, w) for op, w in self.WEIGHTS if op not in skip])
        self.ops: Sequence[str] = ops
        self.weights: Sequence[int] = weights

    # -- checks ---------------------------------------------------------------------------

    def wrong(self, message: str) -> None:
        self.stats.wrong(f"[thread {self.tid}] {message}")

    def check_value(self, got: int, want_slot: Slot, j: int, x: int, lo: int, hi: int, what: str) -> None:
        version, sid, jj, xx = got >> 24, (got >> 16) & 0xFF, (got >> 8) & 0xFF, got & 0xFF
        possible = want_slot.possible(lo, hi)
        if sid != want_slot.sid or jj != j or xx != x or version not in possible:
            self.wrong(f"{what}({x}) = {got:#x} (version {version}, slot {sid}, function {jj}, x {xx}); expected slot "
                       f"{want_slot.sid}, function {j}, x {x}, version in {possible}")
        else:
            self.outcomes["value ok"] += 1
            if len(set(possible)) > 1:
                self.outcomes["value ok while racing a change"] += 1

    def check_absent(self, exc: BaseException, slots: Sequence[Tuple[Slot, int, int]], what: str) -> None:
        if isinstance(exc, ABSENT_ERRORS) and any(None in s.possible(lo, hi) for s, lo, hi in slots):
            self.outcomes["absent ok"] += 1
            return
        states = {s.sid: s.possible(lo, hi) for s, lo, hi in slots}
        self.wrong(f"{what}: {type(exc).__name__}: {exc} (possible states {states})")

    # -- operations -----------------------------------------------------------------------

    def pick(self) -> Slot:
        return self.rng.choice(self.world.slots)

    def op_call(self, cached: bool) -> None:
        slot = self.pick()
        j = self.rng.randrange(FUNCS)
        name = f"s{slot.index}_f{j}"
        x = self.rng.randrange(1, 256)
        lo = slot.lo
        got = self.call_slot(slot, name, x, lo, cached)
        if got is not None:
            self.check_value(got, slot, j, x, lo, slot.hi, f"{slot.lib.name}:{name}")

    def call_slot(self, slot: Slot, name: str, x: int, lo: int, cached: bool) -> Optional[int]:
        """``name(x)`` in the slot's library (a callable kept from earlier when ``cached``);
        None when it raised, which is checked against the slot's possible states."""
        try:
            f = self.functions.get((slot.sid, name)) if cached else None
            if f is None:
                f = function(slot.lib, name, self.rng.random() < 0.75)
                self.functions[(slot.sid, name)] = f
            return int(f(x))
        except Exception as exc:  # noqa: BLE001 - checked
            self.check_absent(exc, [(slot, lo, slot.hi)], f"{slot.lib.name}:{name}")
            return None

    def op_peer(self) -> None:
        slot = self.pick()
        anchor = slot.anchor
        assert anchor is not None
        name = f"s{slot.index}_peer"
        x = self.rng.randrange(1, 256)
        lo, alo = slot.lo, anchor.lo
        got = self.call_slot(slot, name, x, lo, cached=True)
        if got is None:
            return
        hi, ahi = slot.hi, anchor.hi
        if all(v is None for v in slot.possible(lo, hi)):
            self.wrong(f"{slot.lib.name}:{name}({x}) returned {got:#x} while the slot was absent throughout")
            return
        self.check_value(got, anchor, 0, x, alo, ahi, f"{slot.lib.name}:{name}->{anchor.anchor_name()}")

    def op_client(self) -> None:
        """A call through the client library into a shared library's anchor (across a link)."""
        anchor = self.rng.choice(self.world.anchors)
        name = f"c{anchor.sid}"
        x = self.rng.randrange(1, 256)
        f = self.functions.get((-1, name))
        if f is None:
            f = function(self.world.client, name, self.rng.random() < 0.75)
            self.functions[(-1, name)] = f
        lo = anchor.lo
        try:
            got = f(x)
        except Exception as exc:  # noqa: BLE001 - anchors are never absent: any exception is wrong
            self.check_absent(exc, [(anchor, lo, anchor.hi)], f"client:{name}")
            return
        self.check_value(got, anchor, 0, x, lo, anchor.hi, f"client:{name}->{anchor.lib.name}:{anchor.anchor_name()}")

    def op_lookup(self) -> None:
        slot = self.pick()
        name = self.rng.choice(slot.names)
        lo = slot.lo
        try:
            address = slot.lib.address(name)
        except Exception as exc:  # noqa: BLE001 - checked
            self.check_absent(exc, [(slot, lo, slot.hi)], f"address({slot.lib.name}:{name})")
            return
        if all(v is None for v in slot.possible(lo, slot.hi)):
            self.wrong(f"address({slot.lib.name}:{name}) = {address:#x} while the slot was absent throughout")
            return
        with slot.stub_lock:
            first = slot.stub_addresses.setdefault(name, address)
        if first != address:
            self.wrong(f"address({slot.lib.name}:{name}) = {address:#x}, earlier {first:#x}: the stub moved")
        else:
            self.outcomes["address ok"] += 1

    def op_symbols(self) -> None:
        lib = self.rng.choice(self.world.libs)
        names = set(lib.symbols())
        # Anchors are never removed: always listed.
        for a in self.world.anchors:
            if a.lib is lib and a.anchor_name() not in names:
                self.wrong(f"{lib.name}.symbols() lacks anchor {a.anchor_name()}")

    def mutate(self, slot: Slot, kind: str) -> None:
        with slot.lock:
            present = slot.module is not None
            if kind == "replace" and not present:
                kind = "add"
            elif kind == "add" and present:
                kind = "replace"
            elif kind == "remove" and not present:
                kind = "add"
            self.counts[f"mutation:{kind}"] += 1
            old = slot.module
            try:
                if kind == "remove":
                    assert old is not None
                    slot.begin(None)
                    old.remove()
                    slot.module = None
                else:
                    v = next(self.world.versions)
                    slot.begin(v)
                    slot.module = slot.lib.add_ir(slot.ir(v), name=f"slot{slot.sid}v{v}", replace=kind == "replace")
                slot.commit()
            except Exception as exc:  # noqa: BLE001 - a failed mutation is a bug
                self.wrong(f"{kind} of slot {slot.sid} in {slot.lib.name}: {type(exc).__name__}: {exc}")
                raise Stop from exc
            if old is not None and not old.removed:
                self.wrong(f"{kind} of slot {slot.sid} in {slot.lib.name}: the old module is not removed")

    def op_private_library(self) -> None:
        """A library of this thread's own, linked to the shared eager library: add, call
        (itself and an anchor through the link), remove whole, then a call must fail."""
        self.private_serial += 1
        world = self.world
        shared = world.libs[0]  # linked to; its anchor is called through the link
        anchor = next(a for a in world.anchors if a.lib is shared)
        sid = 250 + self.tid % 5
        lib = world.session.library(f"private-{self.tid}-{self.private_serial}", opt_level=self.rng.choice((0, 2)),
                                    lazy=self.rng.random() < 0.5, link=[shared])
        version = next(world.versions)
        ir = "\n\n".join([
            f"declare i64 @{anchor.anchor_name()}(i64)",
            counted_function("p_own", enc(version, sid, 1)),
            f"define i64 @p_peer(i64 %x) {{\n  %r = call i64 @{anchor.anchor_name()}(i64 %x)\n  ret i64 %r\n}}",
        ]) + "\n"
        try:
            lib.add_ir(ir)
            own = function(lib, "p_own")
            x = self.rng.randrange(1, 256)
            got = own(x)
            if got != enc(version, sid, 1) + x:
                self.wrong(f"{lib.name}:p_own({x}) = {got:#x}, expected {enc(version, sid, 1) + x:#x}")
            peer = function(lib, "p_peer")
            for _ in range(10):  # calls into the shared library through the link, racing its replaces
                alo = anchor.lo
                got = peer(x)
                self.check_value(got, anchor, 0, x, alo, anchor.hi, f"{lib.name}:p_peer->{anchor.anchor_name()}")
        except Exception as exc:  # noqa: BLE001 - a failure here is a bug
            self.wrong(f"private library {lib.name}: {type(exc).__name__}: {exc}")
        finally:
            lib.remove()
        try:
            own(1)
        except RemovedError:
            self.outcomes["call after library removal raised RemovedError"] += 1
        except Exception as exc:  # noqa: BLE001 - checked
            self.wrong(f"{lib.name}:p_own after remove(): {type(exc).__name__} instead of RemovedError: {exc}")
        else:
            self.wrong(f"{lib.name}:p_own after remove() returned instead of raising RemovedError")

    def op_callback(self) -> None:
        """A Python function bound into this thread's library and called from JIT'd code."""
        if self.own is None:
            self.own = self.world.session.library(f"own-{self.tid}", opt_level=1)
        k = self.rng.randrange(1, 1000)
        try:
            callback = self.own.define_python("cb", lambda x: 2 * x + k, SIG, replace=True)
            self.own.add_ir(CALLBACK_CLIENT, replace=True)
            got = function(self.own, "via")(21)
            if got != 42 + k:
                self.wrong(f"{self.own.name}:via(21) through a Python callback = {got}, expected {42 + k}")
            callback.remove()
        except Exception as exc:  # noqa: BLE001 - a failure here is a bug
            self.wrong(f"callback in {self.own.name}: {type(exc).__name__}: {exc}")

    def op_import(self) -> None:
        """A bitcode extension module through the import hook, while other threads work."""
        with self.world.extensions_lock:
            name = self.world.extensions.pop() if self.world.extensions else None
        if name is None:
            self.outcomes["import: every module imported already"] += 1
            return
        try:
            got = importlib.import_module(name).ok()
        except Exception as exc:  # noqa: BLE001 - a failure here is a bug
            self.wrong(f"import {name}: {type(exc).__name__}: {exc}")
            return
        if got != int(name.rsplit("_", 1)[1]):
            self.wrong(f"{name}.ok() = {got}")

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline and not self.stats.stop.is_set():
                op = self.rng.choices(self.ops, self.weights)[0]
                self.current = op
                if op == "call":
                    self.op_call(cached=False)
                elif op == "call_cached":
                    self.op_call(cached=True)
                elif op == "peer":
                    self.op_peer()
                elif op == "client":
                    self.op_client()
                elif op == "lookup":
                    self.op_lookup()
                elif op == "symbols":
                    self.op_symbols()
                elif op in ("replace", "remove", "add"):
                    slot = self.rng.choice(self.world.anchors) if op == "replace" and self.rng.random() < 0.25 else self.pick()
                    self.mutate(slot, "replace" if slot.anchor is None else op)
                elif op == "private_library":
                    self.op_private_library()
                elif op == "callback":
                    self.op_callback()
                elif op == "import":
                    self.op_import()
                self.counts[op] += 1
                self.last_progress = time.monotonic()
        except Stop:
            pass
        except BaseException as exc:  # noqa: BLE001 - reported
            import traceback

            self.stats.wrong(f"[thread {self.tid}] unexpected {type(exc).__name__} in {self.current}: {exc}\n"
                             + traceback.format_exc())
        finally:
            self.current = "done"
            self.last_progress = time.monotonic()


class Stats:
    def __init__(self, max_messages: int = 30) -> None:
        self.lock = threading.Lock()
        self.wrong_count = 0
        self.messages: List[str] = []
        self.max_messages = max_messages
        self.stop = threading.Event()

    def wrong(self, message: str) -> None:
        with self.lock:
            self.wrong_count += 1
            if len(self.messages) < self.max_messages:
                self.messages.append(message)
                print("WRONG:", message, file=sys.stderr, flush=True)


def native_stacks() -> None:
    """Every thread's native stack, from gdb attached to this process (if gdb is there)."""
    import shutil
    import subprocess

    if shutil.which("gdb") is None:
        print("(gdb not found: no native stacks)", file=sys.stderr, flush=True)
        return
    print("Native stacks (gdb):", file=sys.stderr, flush=True)
    subprocess.run(["gdb", "-q", "-batch", "-p", str(os.getpid()), "-ex", "set pagination off", "-ex", "thread apply all bt 40"],
                   stdout=sys.stderr, stderr=subprocess.STDOUT, timeout=120, check=False)


def watchdog(workers: List[Worker], stall: float, done: threading.Event, gdb: bool) -> None:
    while not done.wait(1.0):
        now = time.monotonic()
        for w in workers:
            if w.is_alive() and now - w.last_progress > stall:
                print(f"\nSTALL: thread {w.tid} made no progress for {now - w.last_progress:.0f} s (in {w.current}); "
                      "Python stacks of every thread:", file=sys.stderr, flush=True)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                sys.stderr.flush()
                if gdb:
                    native_stacks()
                os._exit(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--slots", type=int, default=SLOTS, help="slots per shared library")
    ap.add_argument("--stall", type=float, default=30, help="watchdog: seconds without progress before dumping and failing")
    ap.add_argument("--libraries", default="eager,lazy", help="shared libraries: eager, lazy or both (comma-separated)")
    ap.add_argument("--skip", default="", help="operations to leave out (comma-separated, e.g. private_library,peer)")
    ap.add_argument("--native-stacks", action="store_true", help="on a stall, also print native stacks (gdb attaches)")
    ap.add_argument("--imports", type=int, default=4, help="bitcode extension modules to import during the run (0: none)")
    ap.add_argument("--json", help="write counts and outcome here")
    ap.add_argument("--record", action="store_true", help="merge the figures into docs/reliability.json (section stress)")
    args = ap.parse_args()
    faulthandler.enable()
    t0 = time.monotonic()
    kinds = [k for k in args.libraries.split(",") if k]
    skip = [k for k in args.skip.split(",") if k]
    world = World(args.seed, args.slots, kinds, args.imports if "import" not in skip else 0)
    setup_s = time.monotonic() - t0
    stats = Stats()
    deadline = time.monotonic() + args.seconds
    workers = [Worker(world, t, args.seed * 1000 + t, deadline, stats, skip) for t in range(args.threads)]
    done = threading.Event()
    dog = threading.Thread(target=watchdog, args=(workers, args.stall, done, args.native_stacks), name="watchdog", daemon=True)
    dog.start()
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    elapsed = time.monotonic() - start
    ops: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for w in workers:
        ops.update(w.counts)
        outcomes.update(w.outcomes)
    # Final consistency: every present slot answers with its committed version.
    for slot in world.slots + world.anchors:
        name = slot.names[0]
        x = 7
        try:
            got = function(slot.lib, name)(x)
        except ABSENT_ERRORS:
            if slot.module is not None:
                stats.wrong(f"final: {slot.lib.name}:{name} raised although slot {slot.sid} is present")
            continue
        want = enc(slot.log[-1], slot.sid, 0) + x if slot.log[-1] is not None else None
        if got != want:
            stats.wrong(f"final: {slot.lib.name}:{name}({x}) = {got:#x}, expected {want!r}")
    total = sum(v for k, v in ops.items() if not k.startswith("mutation:"))
    report = {
        "threads": args.threads, "seconds": round(elapsed, 1), "seed": args.seed, "setup_s": round(setup_s, 2),
        "operations": total, "ops_per_s": round(total / elapsed, 1) if elapsed else 0,
        "counts": dict(sorted(ops.items())), "outcomes": dict(sorted(outcomes.items())),
        "versions": next(world.versions) - 1, "wrong": stats.wrong_count, "messages": stats.messages,
    }
    print(f"stress: {args.threads} threads x {elapsed:.1f} s, {total} operations ({report['ops_per_s']}/s), "
          f"{report['versions']} versions compiled")
    for k, v in report["counts"].items():
        print(f"  {k:24s} {v:8d}")
    for k, v in report["outcomes"].items():
        print(f"  {k:48s} {v:8d}")
    print(f"wrong results: {stats.wrong_count}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    if args.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import common

        command = f"python tests/reliability/stress.py --threads {args.threads} --seconds {args.seconds:g}"
        common.merge_results("stress", {**report, "messages": report["messages"][:5], "command": command})
    return 0 if stats.wrong_count == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
