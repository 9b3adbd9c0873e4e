"""C++ (pybind11) extension modules: import time and run time of the same pybind11 module
built as a native ``.so`` (clang++-22 -O2) and as bitcode JIT-compiled by jitload.

    python benches/bench_cxx.py [--quick] [--json PATH] [--md PATH]

Writes benchmarks/cxx.json and benchmarks/cxx.md (records also importable: run_all(dir, n)).

Benchmarks (each sample a fresh process; .so and .bc interleaved, medians, ratio .bc/.so with
a bootstrap 95% interval), in the same record format as benches/run.py:
  import/fresh-process/pybind11          `python -c "import pbbench"`: .so vs .bc, cold JIT
                                         (object cache off) and warm (cached object)
  run/pybind11:<work>                    the work timed inside the process, after import
                                         (compute loop, STL on converted arguments, a bound
                                         class, many tiny calls through pybind11's dispatch)
Needs pybind11 (pip install pybind11).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "benchmarks"
SOURCE = HERE / "cxx" / "pbbench.cpp"
PY = sys.executable
SO = sysconfig.get_config_var("EXT_SUFFIX")
BC = SO[: -len(".so")] + ".bc"

#: name -> statement run after `import pbbench as m` (timed in-process)
WORK = {
    "collatz": "m.collatz_steps(300_000)",
    "word_counts": "m.word_counts(WORDS)",
    "point_class": "p = m.Point(0.0, 0.0)\nfor i in range(100_000): p = p.add(m.Point(1.0, 2.0))",
    "tiny_calls": "for i in range(300_000): m.add(i, 1)",
}
SETUP = "WORDS = [w for i in range(20_000) for w in ('Alpha', 'beta', 'GAMMA', 'delta%d' % (i % 500))]"


def pybind11_includes() -> List[str]:
    import pybind11

    from jitload import _clang

    return [pybind11.get_include(), *_clang.python_include_dirs()]


def build_so(out: Path) -> None:
    from jitload import _clang

    cmd = [_clang.find("clang++"), "-O2", "-shared", "-fPIC", "-std=c++17", "-fvisibility=hidden"]
    cmd += [f"-I{d}" for d in pybind11_includes()] + [str(SOURCE), "-o", str(out)]
    subprocess.run(cmd, check=True)


def build_bc(out: Path) -> None:
    from jitload.build import compile

    compile([str(SOURCE)], str(out), include_dirs=pybind11_includes(), cflags=["-std=c++17", "-fvisibility=hidden"])


def bootstrap_ratio_ci(a: List[float], b: List[float], rounds: int = 2000) -> Tuple[float, float]:
    rng = random.Random(0)
    ratios = sorted(statistics.median(rng.choices(b, k=len(b))) / statistics.median(rng.choices(a, k=len(a))) for _ in range(rounds))
    return ratios[int(0.025 * rounds)], ratios[int(0.975 * rounds) - 1]


def paired(n: int, baseline: Callable[[], float], contender: Callable[[], float]) -> Tuple[List[float], List[float]]:
    a: List[float] = []
    b: List[float] = []
    for i in range(n):
        if i % 2 == 0:
            a.append(baseline())
            b.append(contender())
        else:
            b.append(contender())
            a.append(baseline())
    return a, b


def result(bench: str, baseline: str, contender: str, a: List[float], b: List[float], note: str = "") -> Dict:
    ma, mb = statistics.median(a), statistics.median(b)
    lo, hi = bootstrap_ratio_ci(a, b)
    return {"bench": bench, "baseline": baseline, "contender": contender, "n": len(a), "baseline_median_s": ma,
            "contender_median_s": mb, "ratio": mb / ma, "ratio_ci95": [lo, hi], "note": note}


def time_process(args: List[str], cwd: Path, env: Dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_in_process(cwd: Path, env: Dict[str, str], work: str) -> float:
    # A cold import tiers: time the final tier (the steady state), not the first.
    code = f"import time, jitload, pbbench as m\njitload.wait_for_tiers(timeout=600)\n{SETUP}\nt0 = time.perf_counter()\n{work}\nprint(time.perf_counter() - t0)\n"
    out = subprocess.run([PY, "-c", code], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def run_all(work_dir: Path, n: int) -> List[Dict]:
    d_so, d_bc = work_dir / "pb_so", work_dir / "pb_bc"
    d_so.mkdir(parents=True, exist_ok=True)
    d_bc.mkdir(parents=True, exist_ok=True)
    build_so(d_so / f"pbbench{SO}")
    build_bc(d_bc / f"pbbench{BC}")
    base = dict(os.environ)
    base.pop("JITLOAD_CACHE", None)
    cold = {**base, "JITLOAD_CACHE": "0"}
    warm = {**base, "JITLOAD_CACHE_DIR": str(work_dir / "cache")}
    code = [PY, "-c", "import pbbench"]
    # Fill the object cache (a tiered import stores the module once its final tier is done).
    subprocess.run([PY, "-c", "import jitload, pbbench; jitload.wait_for_tiers(timeout=600)"], cwd=d_bc, env=warm, check=True)
    results = []
    a, b = paired(n, lambda: time_process(code, d_so, base), lambda: time_process(code, d_bc, cold))
    results.append(result("import/fresh-process/pybind11", ".so", ".bc (cold JIT)", a, b,
                          "`python -c 'import pbbench'` (pybind11 module): interpreter start + import; cold = object cache off"))
    a, b = paired(n, lambda: time_process(code, d_so, base), lambda: time_process(code, d_bc, warm))
    results.append(result("import/fresh-process/pybind11", ".so", ".bc (cached object)", a, b,
                          "the same with jitload's object cache holding the compiled module"))
    for name, stmt in WORK.items():
        a, b = paired(n, lambda: run_in_process(d_so, base, stmt), lambda: run_in_process(d_bc, warm, stmt))
        results.append(result(f"run/pybind11:{name}", ".so", ".bc", a, b, stmt.replace("\n", "; ")))
    return results


def markdown(results: List[Dict]) -> str:
    lines = ["| bench | baseline | contender | n | baseline median | contender median | ratio (95% CI) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["ratio_ci95"]
        lines.append(f"| {r['bench']} | {r['baseline']} | {r['contender']} | {r['n']} | {r['baseline_median_s'] * 1000:.1f} ms | "
                     f"{r['contender_median_s'] * 1000:.1f} ms | {r['ratio']:.2f} ({lo:.2f}-{hi:.2f}) |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 samples instead of 9")
    ap.add_argument("--json", type=Path, default=OUT / "cxx.json", help="where to write the records")
    ap.add_argument("--md", type=Path, default=OUT / "cxx.md", help="where to write the table")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="jitload-bench-cxx-") as tmp:
        results = run_all(Path(tmp), 3 if args.quick else 9)
    table = markdown(results)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    args.md.write_text("# C++ (pybind11) module: .bc vs .so\n\n`python benches/bench_cxx.py` — fresh process per sample, "
                       "medians, ratio .bc/.so with a bootstrap 95% interval.\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
