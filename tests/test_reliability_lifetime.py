"""Compiler processes never outlive their interpreter: whether it is killed with SIGKILL or
calls os._exit from another thread in the middle of a cold import (of bitcode that hangs
LLVM, and of a large valid module) or of an engine-API compile, no compiler process of it is
left 2 s later. And with the interpreter stopped (so it cannot enforce the time limit), the
child's own CPU-time limit ends it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import jitload
from test_reliability_stress import BIG_IR  # long chains of dependent arithmetic: seconds at -O2

FIXTURES = Path(__file__).parent / "fixtures"
HANG = FIXTURES / "hangs" / "cyclic-debug-scope.bc"
SUFFIX = jitload.BITCODE_SUFFIXES[0]

# argv: what ("hang-import", "big-import", "hang-library"), how ("sigkill", "exit-thread"),
# and the directory holding the modules. Prints "compiling" just before the compile starts.
SCRIPT = """
import os, sys, threading, time
what, how, where = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, where)
import jitload
jitload.install()
if how == "exit-thread":
    # Ends the process from another thread once the compiler process runs.
    def exit_when_compiling():
        me = str(os.getpid())
        while True:
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        if pid.isdigit() and f.read().rpartition(")")[2].split()[1] == me:
                            print("compiler", pid, flush=True)  # the test cannot race our exit for it
                            os._exit(3)
                except OSError:
                    pass
            time.sleep(0.02)
    threading.Thread(target=exit_when_compiling, daemon=True).start()
print("compiling", flush=True)
try:
    if what == "hang-import":
        import hangmod
    elif what == "big-import":
        import bigmod
    else:
        jitload.Session().library("x").add_bitcode(os.path.join(where, "hang.bc"))
except Exception as e:
    print(type(e).__name__, e, flush=True)
time.sleep(600)
"""


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid`, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (a dead process nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_for(what, limit: float, step: float = 0.02):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = what()
        if got:
            return got
        time.sleep(step)
    return what()


@pytest.fixture
def modules(tmp_path):
    shutil.copy(HANG, tmp_path / f"hangmod{SUFFIX}")
    shutil.copy(HANG, tmp_path / "hang.bc")
    namespace: dict = {}
    exec(BIG_IR, namespace)
    (tmp_path / "bigmod.ll").write_text(namespace["big_ir"](8, 3000) + "\ndefine ptr @PyInit_bigmod() { ret ptr null }\n")
    return tmp_path


def start(what: str, how: str, where: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, what, how, str(where)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "JITLOAD_CACHE": "0", "JITLOAD_COMPILE_TIMEOUT_S": "600", **env})


@pytest.mark.parametrize("how", ["sigkill", "exit-thread"])
@pytest.mark.parametrize("what", ["hang-import", "big-import", "hang-library"])
def test_no_compiler_process_outlives_its_interpreter(modules, what, how):
    proc = start(what, how, modules)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "compiling"
        if how == "sigkill":
            compilers = wait_for(lambda: children_of(proc.pid), 120)
            assert compilers, "no compiler process started"
            proc.kill()
        else:
            said = proc.stdout.readline().split()
            assert said[:1] == ["compiler"], said
            compilers = [int(said[1])]
            assert proc.wait(timeout=60) == 3  # the other thread's os._exit(3)
        proc.wait(timeout=60)
        # Measured from the interpreter's end: 2 s for every compiler process to be gone.
        gone = wait_for(lambda: not any(alive(p) for p in compilers), 2.0)
        assert gone, f"compiler processes {[p for p in compilers if alive(p)]} outlived their interpreter by 2 s"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()


def test_the_cpu_limit_ends_a_compile_whose_interpreter_is_stopped(modules):
    """With the interpreter stopped it cannot enforce JITLOAD_COMPILE_TIMEOUT_S: the child's
    RLIMIT_CPU (derived from it) is the backstop."""
    proc = start("hang-import", "sigkill", modules, JITLOAD_COMPILE_TIMEOUT_S="1")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "compiling"
        compilers = wait_for(lambda: children_of(proc.pid), 120)
        assert compilers, "no compiler process started"
        os.kill(proc.pid, signal.SIGSTOP)
        # At most (1 s x code generation threads + 1) s of CPU, however slowly it gets them.
        gone = wait_for(lambda: not any(alive(p) for p in compilers), 120, step=0.2)
        assert gone, "the compiler process of a stopped interpreter kept running past its CPU limit"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
