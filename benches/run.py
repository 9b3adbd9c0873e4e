"""jitload benchmarks, peers measured side by side in one run (interleaved A B A B ...),
medians and ratios with bootstrap 95% intervals. Writes benchmarks/results.json and
benchmarks/results.md.

    python benches/run.py [--quick] [--only import,run,engine] [--out DIR]

Benchmarks:
  import/fresh-process/<mod>  `python -c "import mod"` wall time: .so vs .bc (cold JIT compile)
  import/fresh-process-cached/<mod>  the same with the object cache warm (no LLVM loaded)
  import/warm-process[-cached]/<mod>  importing one more module in a process that already
                              imported one (fresh copies with distinct names): .so vs .bc,
                              cache off and warm
  import/fresh-process/<mod> vs llvmlite  the same bitcode through a minimal llvmlite MCJIT loader
  startup/python -c pass      start-up with jitload installed vs a venv without it (wall time,
                              and callgrind instruction counts when valgrind is installed)
  startup/import-heavy script the same for a script importing 247 stdlib modules
  run/<pkg>:<function>        a compute-heavy function, .so built by clang-22 -O2 vs the same
                              sources as bitcode JIT-compiled by jitload (fresh process each)
  engine (benches/engine.py, each part in its own process):
    memory/...                RSS over 10,000 add/call/remove cycles of a 100-function module,
                              1,000 create-library/add/call/remove cycles, and variants that
                              show what grows
    lazy/...                  5,000-function module: add_ir to first result, lazy vs eager
    compile/...               IR to callable address, jitload vs llvmlite 0.50 (MCJIT), tiny
                              function and ~20k-instruction module at O0 and O2, and two
                              modules at once from two threads
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks"
PY = sys.executable
SO = sysconfig.get_config_var("EXT_SUFFIX")
BC = SO[: -len(".so")] + ".bc"


def clang() -> str:
    from jitload import _clang

    return _clang.find()


def include_flags() -> List[str]:
    from jitload import _clang

    return [f"-I{d}" for d in _clang.python_include_dirs()]


def build_so(src: Path, out: Path) -> None:
    subprocess.run([clang(), "-O2", "-shared", "-fPIC", *include_flags(), str(src), "-o", str(out)], check=True)


def build_bc(src: Path, out: Path) -> None:
    from jitload.build import compile

    compile([str(src)], str(out))


def bootstrap_ratio_ci(a: List[float], b: List[float], rounds: int = 2000) -> Tuple[float, float]:
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(b, k=len(b))) / statistics.median(rng.choices(a, k=len(a))) for _ in range(rounds)
    )
    return ratios[int(0.025 * rounds)], ratios[int(0.975 * rounds) - 1]


def paired(n: int, baseline: Callable[[], float], contender: Callable[[], float]) -> Tuple[List[float], List[float]]:
    a, b = [], []
    for i in range(n):
        # Alternate which side goes first so drift and cache effects hit both.
        if i % 2 == 0:
            a.append(baseline()); b.append(contender())
        else:
            b.append(contender()); a.append(baseline())
    return a, b


def result(bench: str, baseline: str, contender: str, a: List[float], b: List[float], note: str = "") -> Dict:
    ma, mb = statistics.median(a), statistics.median(b)
    lo, hi = bootstrap_ratio_ci(a, b)
    return {
        "bench": bench, "baseline": baseline, "contender": contender, "n": len(a),
        "baseline_median_s": ma, "contender_median_s": mb, "ratio": mb / ma,
        "ratio_ci95": [lo, hi], "note": note,
    }


def time_process(args: List[str], cwd: Path, env: Dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def env_with(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def fastmath_variant(work: Path, name: str) -> Path:
    src = (ROOT / "examples" / "fastmath.c").read_text().replace("fastmath", name)
    p = work / f"{name}.c"
    p.write_text(src)
    return p


def bench_import_fresh(work: Path, n: int) -> Dict:
    d_so, d_bc = work / "fresh_so", work / "fresh_bc"
    d_so.mkdir(); d_bc.mkdir()
    src = fastmath_variant(work, "fastmath")
    build_so(src, d_so / f"fastmath{SO}")
    build_bc(src, d_bc / f"fastmath{BC}")
    code = [PY, "-c", "import fastmath; fastmath.prime_sum(10)"]
    env = env_with(JITLOAD_CACHE="0")
    a, b = paired(n, lambda: time_process(code, d_so, env), lambda: time_process(code, d_bc, env))
    return result("import/fresh-process/fastmath", ".so", ".bc (cold JIT)", a, b,
                  "whole `python -c 'import fastmath'`: interpreter start + import; .bc includes loading LLVM and compiling (cache off)")


LLVMLITE_LOADER = r"""
import ctypes, sys
import llvmlite.binding as llvm
llvm.initialize_native_target(); llvm.initialize_native_asmprinter()
path, name = sys.argv[1], sys.argv[2]
mod = llvm.parse_bitcode(open(path, "rb").read())
mod.verify()
target = llvm.Target.from_default_triple()
tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(),
                                  opt=2, codemodel="jitdefault", reloc="pic")
pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=2))
pb.getModulePassManager().run(mod, pb)
ee = llvm.create_mcjit_compiler(mod, tm)
ee.finalize_object()
ee.run_static_constructors()
import importlib.machinery
api = ctypes.pythonapi
raw = ctypes.PYFUNCTYPE(ctypes.c_void_p)(ee.get_function_address("PyInit_" + name))()
def_type = ctypes.addressof(ctypes.c_char.in_dll(api, "PyModuleDef_Type"))
if ctypes.c_void_p.from_address(raw + 8).value == def_type:  # multi-phase: PyInit returned its PyModuleDef
    api.PyModule_FromDefAndSpec2.restype = ctypes.py_object
    api.PyModule_FromDefAndSpec2.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.c_int]
    api.PyModule_ExecDef.argtypes = [ctypes.py_object, ctypes.c_void_p]
    module = api.PyModule_FromDefAndSpec2(raw, importlib.machinery.ModuleSpec(name, None, origin=path), 1013)
    assert api.PyModule_ExecDef(module, raw) == 0
else:  # single-phase: a new reference to the module
    module = ctypes.cast(raw, ctypes.py_object).value
sys.modules[name] = module
engines = [ee]  # the code stays while the process lives
import fastmath; fastmath.prime_sum(10)
"""


def bench_import_llvmlite(work: Path, n: int) -> Dict:
    """A peer: the same bitcode imported by a minimal llvmlite (MCJIT) loader, the way the
    seed CPython patch loads bitcode, vs jitload with the cache off (both compile at -O2)."""
    ensure_llvmlite()
    d_bc = work / "fresh_bc"
    script = work / "llvmlite_loader.py"
    script.write_text(LLVMLITE_LOADER)
    lite = [PY, str(script), str(d_bc / f"fastmath{BC}"), "fastmath"]
    code = [PY, "-c", "import fastmath; fastmath.prime_sum(10)"]
    env = env_with(JITLOAD_CACHE="0", JITLOAD_DISABLE="1")
    a, b = paired(n, lambda: time_process(lite, d_bc, env), lambda: time_process(code, d_bc, env_with(JITLOAD_CACHE="0")))
    return result("import/fresh-process/fastmath vs llvmlite", "llvmlite MCJIT loader", ".bc (cold JIT)", a, b,
                  "whole process: a minimal llvmlite loader (parse_bitcode, O2 pipeline, MCJIT, PyInit through ctypes; no "
                  "checks, no cache) vs jitload compiling the same bitcode with the cache off")


def bench_import_fresh_cached(work: Path, n: int) -> Dict:
    """The issue-8 target row: a warm cache, a fresh process (jitload's start-up included)."""
    d_so, d_bc = work / "fresh_so", work / "fresh_bc"
    code = [PY, "-c", "import fastmath; fastmath.prime_sum(10)"]
    env = env_with(JITLOAD_CACHE_DIR=str(work / "cache-fresh"))
    check = [PY, "-c", "import fastmath, jitload, sys; s = jitload.cache_stats(); "
             "assert s['without_llvm'] == 1 and 'jitload._native' not in sys.modules, s"]
    # fills the cache (a tiered import stores the module once its final tier is done)
    subprocess.run([PY, "-c", "import fastmath, jitload; jitload.wait_for_tiers(timeout=600)"], cwd=d_bc, env=env, check=True)
    subprocess.run(check, cwd=d_bc, env=env, check=True)  # the timed runs take the LLVM-free path
    a, b = paired(n, lambda: time_process(code, d_so, env), lambda: time_process(code, d_bc, env))
    return result("import/fresh-process-cached/fastmath", ".so", ".bc (warm cache)", a, b,
                  "whole `python -c 'import fastmath'` with the object cache warm: jitload links the cached object "
                  "without loading LLVM (target <= 1.3x)")


IMPORT_HEAVY = """
import asyncio, json, email.mime.text, http.client, logging.handlers, unittest, xml.etree.ElementTree
import concurrent.futures, urllib.request, argparse, dataclasses, typing, decimal, fractions, statistics
import sqlite3, csv, zipfile, tarfile, pickle, pathlib, tempfile, subprocess, shutil, inspect, ast, dis, pdb
"""


def instructions(python: str, args: List[str], cwd: Path) -> Optional[float]:
    """Instructions a whole process runs, counted by callgrind (mean over five hash seeds,
    which change dict layouts), or None without valgrind. Unlike wall time, the count does not
    depend on the machine's load, so it settles a ratio that sits within wall-time noise."""
    if shutil.which("valgrind") is None:
        return None
    counts = []
    for seed in range(1, 6):
        out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, *args], cwd=cwd,
                             env=env_with(PYTHONHASHSEED=str(seed)), capture_output=True, text=True, check=True).stderr
        match = re.search(r"refs:\s+([\d,]+)", out)
        assert match, out
        counts.append(int(match.group(1).replace(",", "")))
    return statistics.mean(counts)


def bench_startup(work: Path, n: int) -> List[Dict]:
    """Python start-up in a venv with jitload installed but unused vs the same venv without
    it: two fresh venvs of this interpreter, jitload's installed files copied into one. Bare
    venvs (no pip or setuptools, so no other .pth file) make jitload's .pth the only one read,
    the strictest comparison. Start-up is ~11 ms and the target a 5% margin, so the wall-time
    row takes 20x the usual rounds and comes with callgrind instruction counts."""
    import jitload

    site = Path(jitload.__file__).resolve().parent.parent
    pythons = []
    for name, with_jitload in (("without", False), ("with", True)):
        venv = work / f"venv-{name}-jitload"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        if with_jitload:
            (target,) = venv.glob("lib/python*/site-packages")
            shutil.copytree(site / "jitload", target / "jitload")
            for f in ("jitload.pth", "_jitload_hook.py", "_jitload_finder.py"):
                shutil.copy2(site / f, target / f)
            (target / "__pycache__").mkdir(exist_ok=True)
            for pyc in (site / "__pycache__").glob("_jitload_*.pyc"):
                shutil.copy2(pyc, target / "__pycache__" / pyc.name)
        pythons.append(str(venv / "bin" / "python"))
    probe = subprocess.run([pythons[1], "-c", "import sys; print(sys.path_hooks[-1]._jitload)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "True", probe.stdout + probe.stderr  # the hook really is installed
    script = work / "import_heavy.py"
    script.write_text(IMPORT_HEAVY)
    env = env_with()
    rows = []
    for bench, args, rounds, what in (
        ("startup/python -c pass", ["-c", "pass"], 20 * n,
         "interpreter start-up; jitload's .pth installs the import hook, importing neither jitload nor native code (target <= 1.05x)"),
        ("startup/import-heavy script", [str(script)], 2 * n,
         "a script importing 28 stdlib packages (247 modules): what the hook adds to every ordinary import"),
    ):
        a, b = paired(rounds, lambda: time_process([pythons[0], *args], work, env), lambda: time_process([pythons[1], *args], work, env))
        row = result(bench, "venv without jitload", "with jitload (.pth hook)", a, b, what)
        counts = [instructions(python, args, work) for python in pythons]
        if counts[0] and counts[1]:
            row["instructions"] = {"baseline": counts[0], "contender": counts[1], "ratio": counts[1] / counts[0]}
            row["note"] += (f"; callgrind instructions (mean of 5 hash seeds) {counts[0] / 1e6:.2f} M vs {counts[1] / 1e6:.2f} M"
                            f" = {counts[1] / counts[0]:.3f}x")
        rows.append(row)
    return rows


WARM_SCRIPT = r"""
import importlib, json, sys, time
sys.path.insert(0, sys.argv[1])
names = sys.argv[2].split(",")
import jitload
importlib.import_module(names[0])  # first import: the loader's native module is loaded
times = []
for n in names[1:]:
    t0 = time.perf_counter(); importlib.import_module(n); times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def bench_import_warm(work: Path, n: int) -> List[Dict]:
    d_so, d_bc = work / "warm_so", work / "warm_bc"
    d_so.mkdir(); d_bc.mkdir()
    names = [f"fastmath_w{i}" for i in range(n + 1)]
    for name in names:
        src = fastmath_variant(work, name)
        build_so(src, d_so / f"{name}{SO}")
        build_bc(src, d_bc / f"{name}{BC}")
    script = work / "warm.py"
    script.write_text(WARM_SCRIPT)

    def run(d: Path, **extra: str) -> List[float]:
        out = subprocess.run([PY, str(script), str(d), ",".join(names)], check=True, capture_output=True, text=True, env=env_with(**extra))
        return json.loads(out.stdout)

    so = run(d_so)
    cold = run(d_bc, JITLOAD_CACHE="0")
    cache = str(work / "cache-warm")
    run(d_bc, JITLOAD_CACHE_DIR=cache, JITLOAD_TIER="eager")  # fills the cache (eager: stored before the process ends)
    cached = run(d_bc, JITLOAD_CACHE_DIR=cache)
    return [
        result("import/warm-process/fastmath", ".so", ".bc (JIT running)", so, cold,
               "one more module imported in a process that already imported one; .bc time is JIT compile + link + init (cache off)"),
        result("import/warm-process-cached/fastmath", ".so", ".bc (warm cache)", so, cached,
               "one more module in a process that already imported one, the object cache warm (target <= 2x)"),
    ]


RUN_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import fastmath
import jitload; jitload.wait_for_tiers(timeout=600)  # steady state: the final tier when a cold import tiered
assert fastmath.__file__.endswith(sys.argv[2]), fastmath.__file__
fastmath.prime_sum(1000)
best = float("inf")
for _ in range(7):  # steady-state: best of 7 in this process; the median is taken across processes
    t0 = time.perf_counter(); fastmath.prime_sum(200_000); best = min(best, time.perf_counter() - t0)
print(best)
"""


def bench_run_fastmath(work: Path, n: int) -> Dict:
    script = work / "run_fastmath.py"
    script.write_text(RUN_SCRIPT)
    d_so, d_bc = work / "fresh_so", work / "fresh_bc"
    if not d_so.exists():  # `--only run`: the import benches did not build them
        d_so.mkdir(); d_bc.mkdir()
        src = fastmath_variant(work, "fastmath")
        build_so(src, d_so / f"fastmath{SO}")
        build_bc(src, d_bc / f"fastmath{BC}")
    run = lambda d, suffix: float(subprocess.run([PY, str(script), str(d), suffix], check=True, capture_output=True, text=True).stdout)
    a, b = paired(n, lambda: run(d_so, ".so"), lambda: run(d_bc, ".bc"))
    return result("run/fastmath:prime_sum(200000)", ".so clang-22 -O2", ".bc jitload -O2", a, b,
                  "examples/fastmath.c; per process the best of 7 calls, median over processes")


REGEX_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import regex, regex._regex as r
import jitload; jitload.wait_for_tiers(timeout=600)  # steady state: the final tier when a cold import tiered
assert r.__file__.endswith(sys.argv[2]), r.__file__
text = ("The quick brown fox jumps over the lazy dog 2024-11-23 user@example.com " * 4000)
pat = regex.compile(r"(\w+)@(\w+)\.com|(\d{4})-(\d{2})-(\d{2})|\b[a-z]{5}\b")
pat.findall(text[:1000])
best = float("inf")
for _ in range(5):  # steady-state: best of 5 in this process; the median is taken across processes
    t0 = time.perf_counter(); pat.findall(text); best = min(best, time.perf_counter() - t0)
print(best)
"""


XXHASH_SCRIPT = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import xxhash, xxhash._xxhash as x
import jitload; jitload.wait_for_tiers(timeout=600)  # steady state: the final tier when a cold import tiered
assert x.__file__.endswith(sys.argv[2]), x.__file__
data = bytes(range(256)) * (1 << 18)  # 64 MiB
xxhash.xxh64_intdigest(data[:4096])
best = float("inf")
for _ in range(5):  # steady-state: best of 5 in this process; the median is taken across processes
    t0 = time.perf_counter(); xxhash.xxh64_intdigest(data); xxhash.xxh3_64_intdigest(data); best = min(best, time.perf_counter() - t0)
print(best)
"""


def sdist_pair(work: Path, requirement: str) -> Tuple[Path, Path]:
    """A corpus package's sdist built twice in place: its .so by clang-22 -O2, and its
    bitcode by jitload's build_ext (same sources, -O2)."""
    from jitload.build import build_ext_inplace, unpack_sdist

    name = requirement.split("==")[0]
    sd = work / f"sd-{name}"
    sd.mkdir()
    subprocess.run([PY, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", str(sd), requirement], check=True)
    sdist = next(sd.glob(f"{name}-*"))
    so_proj = unpack_sdist(sdist, work / f"{name}_so")
    env = env_with(CC=clang(), LDSHARED=f"{clang()} -shared", CFLAGS="-O2")
    subprocess.run([PY, "setup.py", "build_ext", "--inplace", "-q"], cwd=so_proj, env=env, check=True, capture_output=True)
    bc_proj = unpack_sdist(sdist, work / f"{name}_bc")
    build_ext_inplace(bc_proj, extra_env={"CFLAGS": "-O2"})
    return so_proj, bc_proj


def run_pair(work: Path, n: int, name: str, script_text: str, so_proj: Path, bc_proj: Path) -> Tuple[List[float], List[float]]:
    script = work / f"run_{name}.py"
    script.write_text(script_text)
    run = lambda d, suffix: float(subprocess.run([PY, str(script), str(d), suffix], check=True, capture_output=True, text=True).stdout)
    return paired(n, lambda: run(so_proj, ".so"), lambda: run(bc_proj, ".bc"))


def bench_run_regex(work: Path, n: int) -> Dict:
    """The corpus package `regex`: its .so built by clang-22 -O2 vs its bitcode via build-ext."""
    so_proj, bc_proj = sdist_pair(work, "regex==2024.11.6")
    for proj in (so_proj, bc_proj):  # the package lives in regex_3/ as "regex"
        (proj / "regex").symlink_to(proj / "regex_3")
    a, b = run_pair(work, n, "regex", REGEX_SCRIPT, so_proj, bc_proj)
    return result("run/regex:findall", ".so clang-22 -O2", ".bc jitload -O2", a, b, "regex 2024.11.6 from PyPI (a corpus package), same sources and -O2; per process the best of 5 findall runs")


def bench_run_xxhash(work: Path, n: int) -> Dict:
    """The corpus package `xxhash` (bundled C library): hashing 64 MiB with xxh64 and xxh3."""
    so_proj, bc_proj = sdist_pair(work, "xxhash==3.5.0")
    a, b = run_pair(work, n, "xxhash", XXHASH_SCRIPT, so_proj, bc_proj)
    return result("run/xxhash:xxh64+xxh3_64(64 MiB)", ".so clang-22 -O2", ".bc jitload -O2", a, b,
                  "xxhash 3.5.0 from PyPI (a corpus package, bundled libxxhash), same sources and -O2; per process the best of 5")


LLVMLITE = "llvmlite==0.50.0"  # the llvmlite built on LLVM 22


def ensure_llvmlite() -> None:
    """The compile benchmarks compare against llvmlite: install it into this environment
    if it is missing (like the regex benchmark fetches its sdist)."""
    if subprocess.run([PY, "-c", "import llvmlite.binding"], capture_output=True).returncode != 0:
        subprocess.run([PY, "-m", "pip", "install", "-q", LLVMLITE], check=True)


def engine_benches(work: Path, quick: bool) -> Dict:
    """Runs benches/engine.py's parts, each in a fresh process; returns their merged figures."""
    ensure_llvmlite()
    merged: Dict = {"results": [], "memory": [], "extra": {}}
    for part in ("memory", "libcycle", "memdiag", "lazy", "compile"):
        out = work / f"engine-{part}.json"
        cmd = [PY, str(ROOT / "benches" / "engine.py"), part, "--json", str(out)] + (["--quick"] if quick else [])
        print("$", " ".join(["python", "benches/engine.py", *cmd[2:-2]]), flush=True)
        subprocess.run(cmd, check=True)
        doc = json.loads(out.read_text())
        merged["results"] += doc["results"]
        merged["memory"] += doc["memory"]
        merged["extra"].update(doc["extra"])
    return merged


def engine_markdown(doc: Dict) -> List[str]:
    engine = doc.get("engine")
    if not engine:
        return []
    lines = [
        "",
        "## Engine API (benches/engine.py)",
        "",
        "### Memory: add / call / remove cycles",
        "",
        "RSS (VmRSS) after the warm-up cycles and at the end, after `gc.collect()`; growth limit "
        f"{MEMORY_LIMIT_MB:.0f} MB. \"malloc'd\" is glibc's bytes in use (`mallinfo2().uordblks`): what native code "
        "still holds. Modules of 100 functions (3 of 4 call another), O0; three functions looked up and called per "
        "cycle, every result checked.",
        "",
        "| workload | cycles | RSS after warm-up | RSS at end | RSS growth | < 5 MB | malloc'd growth | per function per cycle | cycles/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in engine["memory"]:
        lines.append(
            f"| {m['what']} | {m['cycles']} (warm-up {m['warmup']}) | {m['rss_after_warmup_mb']:.1f} MB | "
            f"{m['rss_end_mb']:.1f} MB | {m['rss_growth_mb']:+.2f} MB | {'yes' if m['ok'] else '**no**'} | "
            f"{m['malloc_growth_mb']:+.2f} MB | {m['malloc_bytes_per_function_cycle']:.0f} B | {m['cycles_per_s']:.0f} |"
        )
    new_names = None
    for m in engine["memory"]:
        if "new names" in m["what"]:
            new_names = m
    if new_names is not None:
        lines += ["", f"The last row is not the workload but a diagnosis: every *distinct* function name a library has "
                      f"ever defined keeps its stub (so its address stays stable across remove and re-add) until the "
                      f"library itself is removed — about {new_names['malloc_bytes_per_function_cycle']:.0f} B per name "
                      f"here. The same names over and over (rows 1, 3, 4) and whole libraries (row 2) do not grow."]
    lazy_all = engine["extra"].get("lazy_all")
    compile_info = engine["extra"].get("compile")
    lines += ["", "### Lazy compilation and compile latency", ""]
    for r in doc["results"]:
        if r["bench"].startswith("lazy/"):
            speedup = r["baseline_median_s"] / r["contender_median_s"]
            lines.append(f"- {r['bench']}: eager {r['baseline_median_s']:.3f} s, lazy {r['contender_median_s']:.3f} s "
                         f"(medians of {r['n']}): **{speedup:.1f}x** faster to the first result (target: 10x).")
    if lazy_all and lazy_all.get("n"):
        lines.append(f"- {lazy_all['bench']}: {lazy_all['median_s']:.1f} s (median of {lazy_all['n']}; the eager library "
                     f"compiles the whole module in {lazy_all['eager_add_median_s']:.1f} s). Measured {lazy_all['note']}.")
    if compile_info:
        lines.append(f"- compile/...: baseline llvmlite {compile_info['llvmlite']} on LLVM {compile_info['llvmlite_llvm']}; "
                     f"the large module has {compile_info['big_module_instructions']} instructions; ratio = jitload / "
                     "baseline (below 1: jitload is faster).")
    return lines


MEMORY_LIMIT_MB = 5.0


def markdown(doc: Dict) -> str:
    lines = [
        f"# jitload benchmarks",
        "",
        f"commit `{doc['commit']}`, LLVM {doc['llvm']}, Python {doc['python']}, CPU {doc['cpu']}, {doc['date']}",
        "",
    ]
    if "loadavg_start" in doc:
        lines += [f"{doc['cores']} cores; load average (1/5/15 min) {'/'.join(map(str, doc['loadavg_start']))} at the start, "
                  f"{'/'.join(map(str, doc['loadavg_end']))} at the end (other work on the machine widens the intervals).", ""]
    lines += [
        "Ratio = contender median / baseline median (lower is faster for the contender). Each pair measured interleaved in one run.",
        "",
        "| benchmark | baseline | contender | n | baseline median | contender median | ratio | 95% CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        lines.append(
            f"| {r['bench']} | {r['baseline']} | {r['contender']} | {r['n']} | {r['baseline_median_s']*1000:.3f} ms | "
            f"{r['contender_median_s']*1000:.3f} ms | {r['ratio']:.3f} | {r['ratio_ci95'][0]:.3f}–{r['ratio_ci95'][1]:.3f} |"
        )
    lines.append("")
    notes: Dict[str, List[str]] = {}  # one line per distinct note, naming every benchmark it explains
    for r in doc["results"]:
        if r["note"] and r["bench"] not in notes.setdefault(r["note"], []):
            notes[r["note"]].append(r["bench"])
    for note, benches in notes.items():
        lines.append(f"- {', '.join(benches)}: {note}")
    lines += engine_markdown(doc)
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (for CI smoke runs)")
    ap.add_argument("--only", default="import,run,engine", help="comma-separated groups: import, run, engine")
    ap.add_argument("--markdown-only", action="store_true", help="re-render results.md from results.json (no runs)")
    ap.add_argument("--out", default=str(OUT), help="directory for results.json/.md (a partial --only run should not replace the full one)")
    args = ap.parse_args()
    out_dir = Path(args.out)
    if args.markdown_only:
        (out_dir / "results.md").write_text(markdown(json.loads((out_dir / "results.json").read_text())))
        return 0
    groups = set(args.only.split(","))
    n = 5 if args.quick else 21
    import jitload

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    doc = {
        "schema": 1, "commit": commit, "llvm": jitload.llvm_version(), "python": platform.python_version(),
        "cpu": jitload.host_target()["cpu"], "date": time.strftime("%Y-%m-%d"), "results": [],
        "cores": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }
    work = Path(tempfile.mkdtemp(prefix="jitload-bench-"))
    try:
        benches = []
        if "import" in groups:
            benches += [bench_import_fresh, bench_import_llvmlite, bench_import_fresh_cached, bench_import_warm, bench_startup]
        if "run" in groups:
            benches += [bench_run_fastmath, bench_run_regex, bench_run_xxhash]
        for bench in benches:
            rows = bench(work, n)
            for r in rows if isinstance(rows, list) else [rows]:
                doc["results"].append(r)
                print(f"{r['bench']:40s} {r['baseline']:>18s} {r['baseline_median_s']*1000:10.3f} ms   "
                  f"{r['contender']:>18s} {r['contender_median_s']*1000:10.3f} ms   ratio {r['ratio']:.3f}", flush=True)
        if "engine" in groups:
            engine = engine_benches(work, args.quick)
            doc["results"] += engine["results"]
            doc["engine"] = {"memory": engine["memory"], "extra": engine["extra"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(doc))
    print(f"wrote {out_dir / 'results.json'} and {out_dir / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
