"""A short run of the stress harness, tests/reliability/stress.py (the long run is `make
reliability`; CI runs 4 threads x 5 s): random add / lookup / call / replace / remove from
four threads on shared eager and lazy libraries, Python callbacks and imports of bitcode
modules racing them, every result checked. It runs in a subprocess so that a
crash or a deadlock fails this test instead of the whole session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "reliability" / "stress.py"


def test_four_threads_random_operations_all_results_checked(tmp_path: Path) -> None:
    report_path = tmp_path / "stress.json"
    cmd = [sys.executable, "-X", "faulthandler", str(SCRIPT), "--threads", "4", "--seconds", "5",
           "--stall", "20", "--seed", "1", "--json", str(report_path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "JITLOAD_CACHE_DIR": str(tmp_path / "cache")})
    except subprocess.TimeoutExpired as e:  # the script's own watchdog should have fired first
        raise AssertionError(f"stress run hung past its watchdog:\n{e.stdout}\n{e.stderr}") from None
    output = f"exit code {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr[-20000:]}"
    assert proc.returncode != 2, "deadlock: a thread made no progress for 20 s\n" + output
    assert proc.returncode >= 0, f"crashed (signal {-proc.returncode})\n" + output
    assert proc.returncode == 0, output
    report = json.loads(report_path.read_text())
    assert report["wrong"] == 0, output
    counts = report["counts"]
    # Every kind of operation ran, and calls raced with changes.
    for op in ("call", "call_cached", "peer", "client", "lookup", "replace", "remove", "add", "private_library", "callback", "import"):
        assert counts.get(op, 0) > 0, f"no {op} operations\n" + output
    assert report["outcomes"].get("value ok", 0) > 100, output
