"""jitload's bitcode builds against the binary wheels people install from PyPI: the same
package version on both sides, each workload timed in fresh processes interleaved
(wheel, bitcode, wheel, ...), medians and minima, ``__file__`` of every extension checked
(``.so`` from the wheel on one side, ``.bc`` on the other). Writes benchmarks/wheels.json
and benchmarks/wheels.md.

    python benches/bench_wheels.py [--quick] [--only xxhash,bitarray] [--rounds N] [--instructions]

Two virtual environments under ``~/.cache/jitload-bench-wheels`` (``JITLOAD_BENCH_WHEELS``):
``wheel`` gets ``pip install <pkg>==<version> --only-binary :all:``; ``bitcode`` gets this
checkout's jitload (the wheel ``make build`` installed) and a bitcode wheel of the same
version built with ``python -m jitload build-ext <sdist> --wheel`` (build isolation on).
Versions come from tests/corpus/packages.toml.

The workloads are the ones issue 16 names (xxhash, bitarray, simplejson, markupsafe,
msgpack, pyahocorasick, lz4, zstandard); each is a function in WORKLOADS below, run in a
child process that imports the package, checks where its extensions came from, warms up,
then times ``--repeat`` calls and prints the minimum and median.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any, Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks"
WORK = Path(os.environ.get("JITLOAD_BENCH_WHEELS", Path.home() / ".cache" / "jitload-bench-wheels"))

# Each workload: (package, extension modules to check, setup code, timed statement). The
# setup builds deterministic data (seeded), the statement is what one timed call runs.
WORKLOADS: Dict[str, Tuple[str, List[str], str, str]] = {
    "xxhash/xxh64 256KiB": ("xxhash", ["xxhash._xxhash"], "import xxhash, os; d = os.urandom(256 << 10)", "xxhash.xxh64_intdigest(d)"),
    "xxhash/xxh3_64 256KiB": ("xxhash", ["xxhash._xxhash"], "import xxhash, os; d = os.urandom(256 << 10)", "xxhash.xxh3_64_intdigest(d)"),
    "xxhash/xxh64 64MiB": ("xxhash", ["xxhash._xxhash"], "import xxhash, os; d = os.urandom(64 << 20)", "xxhash.xxh64_intdigest(d)"),
    "xxhash/xxh3_64 64MiB": ("xxhash", ["xxhash._xxhash"], "import xxhash, os; d = os.urandom(64 << 20)", "xxhash.xxh3_64_intdigest(d)"),
    "bitarray/count": (
        "bitarray", ["bitarray._bitarray"],
        "import bitarray, random; random.seed(1); a = bitarray.bitarray(); a.frombytes(random.randbytes(8 << 20))",
        "a.count()",
    ),
    "bitarray/count_and": (
        "bitarray", ["bitarray._bitarray", "bitarray._util"],
        "import bitarray, bitarray.util as u, random; random.seed(1); a = bitarray.bitarray(); a.frombytes(random.randbytes(8 << 20)); b = bitarray.bitarray(); b.frombytes(random.randbytes(8 << 20))",
        "u.count_and(a, b)",
    ),
    "bitarray/a&b": (
        "bitarray", ["bitarray._bitarray"],
        "import bitarray, random; random.seed(1); a = bitarray.bitarray(); a.frombytes(random.randbytes(8 << 20)); b = bitarray.bitarray(); b.frombytes(random.randbytes(8 << 20))",
        "a & b",
    ),
    "bitarray/search": (
        "bitarray", ["bitarray._bitarray"],
        "import bitarray, random; random.seed(1); a = bitarray.bitarray(); a.frombytes(random.randbytes(1 << 20)); p = bitarray.bitarray('1011001110001111')",
        "sum(1 for _ in a.search(p))",
    ),
    "simplejson/dumps 5MB": (
        "simplejson", ["simplejson._speedups"],
        "import simplejson, random; random.seed(1); doc = [{'id': i, 'name': 'item %d' % i, 'tags': ['a', 'b\\u00e9', 'c'], 'score': random.random(), 'ok': i % 3 == 0, 'none': None} for i in range(40000)]",
        "simplejson.dumps(doc)",
    ),
    "simplejson/loads 5MB": (
        "simplejson", ["simplejson._speedups"],
        "import simplejson, random; random.seed(1); s = simplejson.dumps([{'id': i, 'name': 'item %d' % i, 'tags': ['a', 'b\\u00e9', 'c'], 'score': random.random(), 'ok': i % 3 == 0, 'none': None} for i in range(40000)])",
        "simplejson.loads(s)",
    ),
    "markupsafe/escape 10MB": (
        "markupsafe", ["markupsafe._speedups"],
        "import markupsafe; s = ('Hello <world> & \"friends\" ' * 400000)[: 10 << 20]",
        "markupsafe.escape(s)",
    ),
    "msgpack/packb 5MB": (
        "msgpack", ["msgpack._cmsgpack"],
        "import msgpack, random; random.seed(1); doc = [{'id': i, 'name': 'item %d' % i, 'v': [random.random(), i, 'x' * 10], 'b': b'\\x00' * 16} for i in range(50000)]",
        "msgpack.packb(doc)",
    ),
    "msgpack/unpackb 5MB": (
        "msgpack", ["msgpack._cmsgpack"],
        "import msgpack, random; random.seed(1); s = msgpack.packb([{'id': i, 'name': 'item %d' % i, 'v': [random.random(), i, 'x' * 10], 'b': b'\\x00' * 16} for i in range(50000)])",
        "msgpack.unpackb(s)",
    ),
    "pyahocorasick/build 20k words": (
        "pyahocorasick", ["ahocorasick"],
        "import ahocorasick, random; random.seed(1); words = [''.join(random.choice('abcdefghij') for _ in range(random.randint(4, 12))) for _ in range(20000)]",
        "A = ahocorasick.Automaton()\nfor i, w in enumerate(words): A.add_word(w, i)\nA.make_automaton()",
    ),
    "pyahocorasick/iter 10MB": (
        "pyahocorasick", ["ahocorasick"],
        "import ahocorasick, random; random.seed(1); A = ahocorasick.Automaton()\nfor i in range(20000): A.add_word(''.join(random.choice('abcdefghij') for _ in range(random.randint(4, 12))), i)\nA.make_automaton(); text = ''.join(random.choices('abcdefghij ', k=10 << 20))",
        "sum(1 for _ in A.iter(text))",
    ),
    "lz4/frame compress 16MiB": (
        "lz4", ["lz4.frame._frame"],
        "import lz4.frame, random; random.seed(1); d = bytes(random.choices(b'abcdefgh  ', k=16 << 20))",
        "lz4.frame.compress(d)",
    ),
    "lz4/frame decompress 16MiB": (
        "lz4", ["lz4.frame._frame"],
        "import lz4.frame, random; random.seed(1); c = lz4.frame.compress(bytes(random.choices(b'abcdefgh  ', k=16 << 20)))",
        "lz4.frame.decompress(c)",
    ),
    "lz4/block compress 16MiB": (
        "lz4", ["lz4.block._block"],
        "import lz4.block, random; random.seed(1); d = bytes(random.choices(b'abcdefgh  ', k=16 << 20))",
        "lz4.block.compress(d)",
    ),
    "lz4/block decompress 16MiB": (
        "lz4", ["lz4.block._block"],
        "import lz4.block, random; random.seed(1); c = lz4.block.compress(bytes(random.choices(b'abcdefgh  ', k=16 << 20)))",
        "lz4.block.decompress(c)",
    ),
    "zstandard/compress level 3 16MiB": (
        "zstandard", ["zstandard.backend_c"],
        "import zstandard, random; random.seed(1); d = bytes(random.choices(b'abcdefgh  ', k=16 << 20)); z = zstandard.ZstdCompressor(level=3)",
        "z.compress(d)",
    ),
    "zstandard/decompress 16MiB": (
        "zstandard", ["zstandard.backend_c"],
        "import zstandard, random; random.seed(1); c = zstandard.ZstdCompressor(level=3).compress(bytes(random.choices(b'abcdefgh  ', k=16 << 20))); z = zstandard.ZstdDecompressor()",
        "z.decompress(c)",
    ),
}

CHILD = """
import importlib, json, sys, time
{setup}
files = {{m: importlib.import_module(m).__file__ for m in {modules!r}}}
def once():
{body}
once()  # warm-up (the first call of JIT'd code, page faults)
times = []
for _ in range({repeat}):
    t = time.perf_counter(); once(); times.append(time.perf_counter() - t)
times.sort()
print(json.dumps({{"files": files, "min": times[0], "median": times[len(times) // 2]}}))
"""


# `--instructions`: the same workload under callgrind, instrumented only around the calls
# (machine load changes no count). Instructions are not time (no cache misses, no
# frequency), but they are what a loaded machine can still compare.
CHILD_COUNT = """
import importlib, json, os, subprocess, sys
{setup}
files = {{m: importlib.import_module(m).__file__ for m in {modules!r}}}
def once():
{body}
once()
subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], capture_output=True)
for _ in range({repeat}):
    once()
subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], capture_output=True)
print(json.dumps({{"files": files}}))
"""


def packages() -> Dict[str, Dict[str, Any]]:
    with open(ROOT / "tests" / "corpus" / "packages.toml", "rb") as f:
        return {p["name"]: p for p in tomllib.load(f)["package"]}


def sh(cmd: List[str], **kw: Any) -> None:
    subprocess.run(cmd, check=True, **kw)


def venv(name: str) -> Path:
    path = WORK / name
    if not (path / "bin" / "python").exists():
        sh([sys.executable, "-m", "venv", str(path)])
    return path / "bin" / "python"


def prepare(names: List[str]) -> Tuple[Path, Path]:
    """The two environments with every package in ``names`` installed."""
    pkgs = packages()
    wheel_py, bitcode_py = venv("wheel"), venv("bitcode")
    jitload_wheel = sorted((ROOT / "target" / "wheels").glob("jitload-*.whl"))
    if not jitload_wheel:
        sys.exit("no jitload wheel in target/wheels: run `make build` first")
    sh([str(bitcode_py), "-m", "pip", "install", "-q", "--force-reinstall", str(jitload_wheel[-1])])
    dist = WORK / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    for name in names:
        pkg = pkgs[name]
        spec = f"{name}=={pkg['version']}"
        sh([str(wheel_py), "-m", "pip", "install", "-q", "--only-binary", ":all:", spec])
        built = list(dist.glob(f"{name.replace('-', '_')}-{pkg['version']}-*.whl"))
        if not built:
            sdists = WORK / "sdists"
            sh([str(bitcode_py), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", name, spec, "-d", str(sdists)])
            sdist = next(sdists.glob(f"{pkg['sdist'].rsplit('.tar.gz', 1)[0]}*"))
            sh([str(bitcode_py), "-m", "jitload", "build-ext", str(sdist), "--wheel", str(dist)])
            built = list(dist.glob(f"{name.replace('-', '_')}-{pkg['version']}-*.whl"))
        sh([str(bitcode_py), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", str(built[0])])
    return wheel_py, bitcode_py


def run_once(python: Path, workload: str, repeat: int) -> Dict[str, Any]:
    package, modules, setup, statement = WORKLOADS[workload]
    body = "\n".join("    " + line for line in statement.splitlines())
    code = CHILD.format(setup=setup, modules=modules, body=body, repeat=repeat)
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{workload} in {python}: exit {out.returncode}\n{out.stderr[-2000:]}")
    result: Dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def count_once(python: Path, workload: str, repeat: int) -> Tuple[int, Dict[str, str]]:
    """Instructions callgrind counts over ``repeat`` calls (plus the toggling's own), and the
    extensions' files."""
    package, modules, setup, statement = WORKLOADS[workload]
    body = "\n".join("    " + line for line in statement.splitlines())
    code = CHILD_COUNT.format(setup=setup, modules=modules, body=body, repeat=repeat)
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null", str(python), "-c", code]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env={**os.environ, "PYTHONHASHSEED": "0"})
    collected = [line for line in out.stderr.splitlines() if "Collected :" in line]
    if out.returncode != 0 or not collected:
        raise RuntimeError(f"{workload} in {python} under callgrind: exit {out.returncode}\n{out.stderr[-2000:]}")
    files: Dict[str, str] = json.loads(out.stdout.strip().splitlines()[-1])["files"]
    return int(collected[-1].split(":")[1]), files


def count_instructions(wheel_py: Path, bitcode_py: Path, chosen: List[str], repeat: int) -> List[Dict[str, Any]]:
    """Instructions per call on each side: (count over ``repeat`` calls - count over none) / repeat."""
    warm = set()
    rows = []
    for workload in chosen:
        package = WORKLOADS[workload][0]
        if package not in warm:
            # Under valgrind the CPU (CPUID) is another, so the object cache has no code for
            # it: compile it once without instrumentation (valgrind's bare tool is ~10x faster
            # than callgrind), with time for LLVM to run under valgrind.
            imports = "; ".join(f"import {m}" for w in chosen if WORKLOADS[w][0] == package for m in WORKLOADS[w][1])
            sh(["valgrind", "--tool=none", "-q", str(bitcode_py), "-c", imports], env={**os.environ, "JITLOAD_COMPILE_TIMEOUT_S": "7200"})
            warm.add(package)
        per_call = {}
        for side, python in (("wheel", wheel_py), ("bitcode", bitcode_py)):
            base, _ = count_once(python, workload, 0)
            total, files = count_once(python, workload, repeat)
            suffix = ".bc" if side == "bitcode" else ".so"
            if not all(str(f).endswith(suffix) for f in files.values()):
                raise RuntimeError(f"{workload}: the {side} side loaded {files}, not {suffix} files")
            per_call[side] = (total - base) / repeat
        ratio = per_call["wheel"] / per_call["bitcode"]
        rows.append({"workload": workload, "wheel_instructions": per_call["wheel"], "bitcode_instructions": per_call["bitcode"], "ratio": ratio})
        print(f"{workload:34s} wheel {per_call['wheel'] / 1e6:10.3f} M  bitcode {per_call['bitcode'] / 1e6:10.3f} M instructions/call  {ratio:.2f}x", flush=True)
    return rows


def write_instructions(rows: List[Dict[str, Any]], repeat: int) -> None:
    OUT.mkdir(exist_ok=True)
    meta = {"repeat": repeat, "python": sys.version.split()[0], "cpu": _cpu() + " (as valgrind presents it)"}
    (OUT / "wheels-instructions.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Bitcode builds vs PyPI binary wheels: instructions per call",
        "",
        f"`python benches/bench_wheels.py --instructions` — callgrind's instruction count over {repeat} calls minus "
        "the count over none (the same process otherwise), per call; ratio = wheel / bitcode (> 1: the JIT'd code "
        f"executes fewer instructions). Not time: no cache or branch behaviour. CPU: {meta['cpu']}.",
        "",
        "| workload | wheel (M instructions) | bitcode (M instructions) | ratio |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['workload']} | {r['wheel_instructions'] / 1e6:.3f} | {r['bitcode_instructions'] / 1e6:.3f} | {r['ratio']:.2f}x |" for r in rows]
    (OUT / "wheels-instructions.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds of 3 calls")
    ap.add_argument("--rounds", type=int, help="fresh-process rounds per side (default 7, --quick 3)")
    ap.add_argument("--repeat", type=int, help="timed calls per process (default 7, --quick 3)")
    ap.add_argument("--only", help="comma-separated packages")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--instructions", action="store_true", help="count instructions under callgrind instead of timing")
    args = ap.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    repeat = args.repeat or (3 if args.quick else 7)
    chosen = [w for w in WORKLOADS if not args.only or WORKLOADS[w][0] in args.only.split(",")]
    wheel_py, bitcode_py = prepare(sorted({WORKLOADS[w][0] for w in chosen}))
    if args.instructions:
        write_instructions(count_instructions(wheel_py, bitcode_py, chosen, args.repeat or 3), args.repeat or 3)
        return 0
    rng = random.Random(args.seed)
    rows = []
    for workload in chosen:
        sides: Dict[str, List[Dict[str, Any]]] = {"wheel": [], "bitcode": []}
        for _ in range(rounds):
            order = [("wheel", wheel_py), ("bitcode", bitcode_py)]
            rng.shuffle(order)  # interleaved, in a shuffled order each round
            for side, python in order:
                sides[side].append(run_once(python, workload, repeat))
        for side, results in sides.items():
            suffix = ".bc" if side == "bitcode" else ".so"
            wrong = {m: f for r in results for m, f in r["files"].items() if not str(f).endswith(suffix)}
            if wrong:
                raise RuntimeError(f"{workload}: the {side} side loaded {wrong}, not {suffix} files")
        med = {s: statistics.median(r["median"] for r in rs) for s, rs in sides.items()}
        mins = {s: min(r["min"] for r in rs) for s, rs in sides.items()}
        per_round = [w["median"] / b["median"] for w, b in zip(sides["wheel"], sides["bitcode"])]
        rows.append({
            "workload": workload,
            "wheel_median_ms": med["wheel"] * 1e3, "bitcode_median_ms": med["bitcode"] * 1e3,
            "speedup_median": med["wheel"] / med["bitcode"], "speedup_min": mins["wheel"] / mins["bitcode"],
            "speedup_per_round": sorted(per_round),
        })
        print(f"{workload:34s} wheel {med['wheel'] * 1e3:9.3f} ms  bitcode {med['bitcode'] * 1e3:9.3f} ms  "
              f"{med['wheel'] / med['bitcode']:.2f}x (minima {mins['wheel'] / mins['bitcode']:.2f}x)", flush=True)
    OUT.mkdir(exist_ok=True)
    meta = {"rounds": rounds, "repeat": repeat, "python": sys.version.split()[0], "cpu": _cpu()}
    (OUT / "wheels.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Bitcode builds vs PyPI binary wheels",
        "",
        f"`python benches/bench_wheels.py` — {rounds} fresh-process rounds per side, interleaved in a shuffled order, "
        f"{repeat} timed calls each (after one warm-up call); speed-up = wheel time / bitcode time (> 1: jitload faster). "
        f"CPU: {meta['cpu']}.",
        "",
        "| workload | wheel (ms, median) | bitcode (ms, median) | speed-up (medians) | speed-up (minima) | per-round range |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lo, hi = r["speedup_per_round"][0], r["speedup_per_round"][-1]
        lines.append(f"| {r['workload']} | {r['wheel_median_ms']:.3f} | {r['bitcode_median_ms']:.3f} | {r['speedup_median']:.2f}x | {r['speedup_min']:.2f}x | {lo:.2f}-{hi:.2f} |")
    (OUT / "wheels.md").write_text("\n".join(lines) + "\n")
    return 0


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
