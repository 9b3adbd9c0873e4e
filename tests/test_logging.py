"""Rust `log` records of both native modules reach Python's `logging` (logger `jitload`),
each once, without printing anything when logging is not configured."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import build, run_python, single_phase, unique

# Prints each record of the `jitload` logger as "levelname|message", one per line.
CONFIGURE = """
import logging, sys
class Collect(logging.Handler):
    def emit(self, record):
        print("record|" + record.levelname + "|" + record.getMessage(), flush=True)
logging.getLogger("jitload").addHandler(Collect())
logging.getLogger("jitload").setLevel(logging.DEBUG)
"""


def records(stdout: str) -> list[tuple[str, str]]:
    return [tuple(line.split("|", 2)[1:]) for line in stdout.splitlines() if line.startswith("record|")]  # type: ignore[misc]


def test_records_of_both_native_modules_reach_the_jitload_logger(tmp_path):
    name = unique("logged")
    build(tmp_path, name, single_phase(name))
    env = {"JITLOAD_CACHE_DIR": str(tmp_path / "cache")}
    code = CONFIGURE + f"""
sys.path.insert(0, {str(tmp_path)!r})
import jitload
jitload.install()
import {name}
print("imported", {name}.__name__)
"""
    cold = run_python(code, env=env)
    assert cold.returncode == 0 and f"imported {name}" in cold.stdout, cold.stderr[-2000:]
    # The engine (_native) compiled and linked it.
    engine = [m for level, m in records(cold.stdout) if level == "DEBUG" and m.startswith("loaded ") and name in m]
    assert len(engine) == 1, cold.stdout
    warm = run_python(code, env=env)
    assert warm.returncode == 0 and f"imported {name}" in warm.stdout, warm.stderr[-2000:]
    # The warm path (_fastload, no LLVM) linked the cached object.
    fast = [m for level, m in records(warm.stdout) if level == "DEBUG" and m.startswith("jitload-objload: loaded")]
    assert len(fast) == 1, warm.stdout
    assert cold.stderr == "" and warm.stderr == "", cold.stderr + warm.stderr


# A native WARNING on demand: the perf map cannot be written when its path is a directory.
WARN = """
import os, sys
sys.path.insert(0, sys.argv[1])
os.makedirs(f"/tmp/perf-{os.getpid()}.map")
try:
    import jitload
    jitload.install()
    __import__(sys.argv[2])
    print("imported")
finally:
    os.rmdir(f"/tmp/perf-{os.getpid()}.map")
"""


def test_a_native_warning_reaches_logging_and_only_logging(tmp_path):
    """Configured, the warning is a record of the jitload logger; not configured, nothing is
    printed (the logger has a NullHandler, so Python's last-resort handler, which prints to
    stderr, never sees jitload's records)."""
    name = unique("warned")
    build(tmp_path, name, single_phase(name))
    env = {"JITLOAD_CACHE": "0", "JITLOAD_PERF_MAP": "1"}
    configured = run_python(CONFIGURE + WARN.replace("sys.argv[1]", repr(str(tmp_path))).replace("sys.argv[2]", repr(name)),
                            env=env)
    assert configured.returncode == 0 and "imported" in configured.stdout, configured.stderr[-2000:]
    warnings = [m for level, m in records(configured.stdout) if level == "WARNING" and "cannot write /tmp/perf-" in m]
    assert len(warnings) == 1, configured.stdout
    assert configured.stderr == "", configured.stderr
    quiet = subprocess.run([sys.executable, "-c", WARN, str(tmp_path), name], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **env})
    assert quiet.returncode == 0 and "imported" in quiet.stdout, quiet.stderr[-2000:]
    assert quiet.stderr == "", quiet.stderr
