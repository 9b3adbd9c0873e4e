"""The engine bugs found by reproducers (tests/regressions/repro_*.py, each documenting its
symptom and cause) stay fixed: every reproducer runs here briefly, in its own process, and
must exit 0 — a crash, a deadlock (the script's watchdog exits 2), a wrong result, a
misleading exception class, super-linear lazy compiles or memory growth per add/remove cycle
all fail it. By hand they run longer (their --help)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

HERE = Path(__file__).with_name("regressions")

CASES: List[List[str]] = [
    ["repro_cross_library_free.py", "--seconds", "4"],
    ["repro_cross_library_free.py", "--seconds", "3", "--eager"],
    ["repro_lazy_remove_linkerror.py", "--seconds", "5"],
    ["repro_retire_race.py", "--seconds", "4", "--functions", "100"],
    ["repro_stub_lock_deadlock.py", "--seconds", "4"],
    # Broken, a first call in a 5,000-function lazy module cost ~3x one in a 250-function one.
    ["repro_lazy_quadratic.py", "--sizes", "250", "5000", "--calls", "40", "--max-ratio", "2.2"],
    # Broken, ~200 B per function and cycle with 200-character names; fixed ~3 B.
    ["repro_symbol_pool_growth.py", "--cycles", "200", "--warmup", "50", "--functions", "50", "--name-length", "203", "--max-growth", "50"],
    ["repro_symbol_pool_growth.py", "--cycles", "100", "--warmup", "30", "--functions", "50", "--libraries", "--max-growth", "50"],
]


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c[:1] + [a for a in c[1:] if a.startswith("--") and a not in ("--seconds", "--cycles", "--warmup", "--functions", "--calls", "--sizes")]) for c in CASES])
def test_reproducer_stays_fixed(case: List[str]) -> None:
    out = subprocess.run([sys.executable, str(HERE / case[0]), *case[1:]], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(case)}: exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
