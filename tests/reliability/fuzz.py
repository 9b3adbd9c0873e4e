"""Coverage-guided fuzzing of every loader, with libFuzzer (cargo-fuzz) on the engine's Rust
entry points and atheris on the Python signature parser.

    python tests/reliability/fuzz.py --runs 100000          # the long run (make reliability)
    python tests/reliability/fuzz.py --runs 300 --quick     # the CI smoke run

Each libFuzzer target runs in fork mode (`-fork=1 -ignore_crashes=1 ...`): inputs are
executed in a child process, so a crash, abort, out-of-memory or hang is counted (and its
input saved under fuzz/artifacts/<target>/) instead of ending the run. The figures (inputs
executed, coverage, crashes/ooms/timeouts) go to docs/reliability.json, section "fuzz".

Coverage: the fuzz targets and jitload's Rust crates are instrumented (SanitizerCoverage via
cargo-fuzz); libLLVM itself is the distribution's uninstrumented shared library, so inside
LLVM the search is guided only by the seeds (real modules) and libFuzzer's mutations, not by
LLVM's own branches.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

FUZZ = common.ROOT / "fuzz"
TARGET_DIR = FUZZ / "target" / "x86_64-unknown-linux-gnu" / "release"
RUST_TARGETS = ["bitcode", "ir_text", "object", "objload", "load_bytes", "load_bytes_isolated", "cache_entry"]
MAX_LEN = {"bitcode": 131072, "load_bytes": 131072, "load_bytes_isolated": 131072, "ir_text": 32768, "object": 65536, "objload": 131072, "cache_entry": 4096}
STATUS = re.compile(r"^#(\d+): cov: (\d+) ft: (\d+) corp: (\d+) exec/s: (\d+) oom/timeout/crash: (\d+)/(\d+)/(\d+) time: (\d+)s")


def toolchain() -> List[str]:
    """`cargo +nightly` when rustup has a nightly, else plain cargo with RUSTC_BOOTSTRAP."""
    if shutil.which("rustup"):
        r = subprocess.run(["rustup", "toolchain", "list"], capture_output=True, text=True)
        if "nightly" in r.stdout:
            return ["cargo", "+nightly"]
    os.environ["RUSTC_BOOTSTRAP"] = "1"
    return ["cargo"]


def build() -> None:
    if not shutil.which("cargo-fuzz"):
        subprocess.run(["cargo", "install", "cargo-fuzz", "--locked"], check=True)
    os.environ.setdefault("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22")
    subprocess.run([*toolchain(), "fuzz", "build", "-s", "none", "-O"], cwd=FUZZ, check=True)


def seed(target: str, corpus: Path, modules: Dict[str, List[Path]]) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return  # keep what earlier runs found
    files: List[Path] = []
    if target in ("bitcode", "load_bytes", "load_bytes_isolated"):
        files = modules["bc"] + common.corpus_bitcode(max_bytes=MAX_LEN[target])[:6]
        if target.startswith("load_bytes"):
            files += modules["ll"][:3]
    elif target == "ir_text":
        files = [p for p in modules["ll"] if p.stat().st_size <= MAX_LEN[target]]
    elif target == "object":
        files = modules["o"]
    elif target == "objload":  # a leading 0 byte: the whole object as a set of one
        for f in modules["o"]:
            if f.stat().st_size < MAX_LEN[target]:
                (corpus / f.name).write_bytes(b"\x00" + f.read_bytes())
    elif target == "cache_entry":
        (corpus / "raw").write_bytes(b"\x00jlcache\x00" + bytes(100))
        (corpus / "valid").write_bytes(b"\x01" + bytes(range(200)))
    for f in files:
        if f.stat().st_size <= MAX_LEN[target]:
            shutil.copy(f, corpus / f.name)


def run_target(target: str, runs: int, max_time: int, modules: Dict[str, List[Path]], log_dir: Path) -> Dict[str, object]:
    corpus = FUZZ / "corpus" / target
    seed(target, corpus, modules)
    artifacts = FUZZ / "artifacts" / target
    artifacts.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in artifacts.iterdir()}
    env = dict(os.environ)
    env["JITLOAD_FUZZ_LIBPYTHON"] = common.libpython()
    env["JITLOAD_FUZZ_TMP"] = str(common.WORK)
    # Fuzz inputs never reach (or fill) the user's object cache.
    env["JITLOAD_CACHE"] = "0"
    env["JITLOAD_CACHE_DIR"] = str(common.WORK / "objcache")
    cmd = [
        str(TARGET_DIR / target), str(corpus),
        f"-runs={runs}", f"-max_total_time={max_time}", f"-max_len={MAX_LEN[target]}",
        "-fork=1", "-ignore_crashes=1", "-ignore_ooms=1", "-ignore_timeouts=1",
        "-timeout=30", "-rss_limit_mb=4096", "-use_value_profile=1",
        f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
    ]
    log = log_dir / f"{target}.log"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run(["nice", "-n", "10", *cmd], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=common.WORK)
    elapsed = time.monotonic() - start
    last = None
    for line in log.read_text(errors="replace").splitlines():
        m = STATUS.match(line)
        if m:
            last = m
    # slow-unit-* files are libFuzzer's note of its slowest inputs, not failures.
    new = sorted(p.name for p in artifacts.iterdir() if p.name not in before and not p.name.startswith("slow-unit-"))
    fig: Dict[str, object] = {
        "engine": "libFuzzer (cargo-fuzz, fork mode)",
        "exit_code": proc.returncode,
        "seconds": round(elapsed, 1),
        "new_artifacts": new,
        "command": " ".join(["fuzz/target/x86_64-unknown-linux-gnu/release/" + target, f"fuzz/corpus/{target}", *cmd[2:]]).replace(str(artifacts), f"fuzz/artifacts/{target}"),
    }
    if last:
        execs, cov, ft, corp, eps, oom, tmo, crash, _secs = (int(x) for x in last.groups())
        fig.update(executions=execs, coverage_edges=cov, features=ft, corpus=corp, execs_per_s=eps, ooms=oom, timeouts=tmo, crashes=crash)
    else:
        fig.update(executions=0, crashes=None, note="no status line; see " + str(log))
    return fig


def run_atheris(runs: int, max_time: int, log_dir: Path) -> Dict[str, object]:
    script = Path(__file__).resolve().parent / "atheris_signature.py"
    corpus = common.WORK / "atheris-signature"
    corpus.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for i, s in enumerate(["int64(int64, int64)", "double(ptr, size_t)", "void(void)", "pyobject(PyObject*, char *)",
                               "uint8(i8 a, u64 b, f32 c, _Bool d)", "void()", "buffer(buffer, ssize_t)"]):
            (corpus / f"s{i}").write_text(s)
    log = log_dir / "signature.log"
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run(
            ["nice", "-n", "10", sys.executable, str(script), str(corpus), f"-runs={runs}", f"-max_total_time={max_time}",
             "-max_len=256", f"-artifact_prefix={common.WORK}/atheris-", "-print_final_stats=1"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    text = log.read_text(errors="replace")
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", text)
    cov = re.findall(r"cov: (\d+)", text)
    return {
        "engine": "atheris (libFuzzer on instrumented Python)",
        "exit_code": proc.returncode,
        "seconds": round(time.monotonic() - start, 1),
        "executions": int(m.group(1)) if m else 0,
        "coverage_edges": int(cov[-1]) if cov else None,
        "crashes": 0 if proc.returncode == 0 else 1,
        "command": f"python tests/reliability/atheris_signature.py CORPUS -runs={runs}",
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100_000, help="executions per target")
    ap.add_argument("--max-time", type=int, default=3600, help="seconds per target at most")
    ap.add_argument("--targets", default=",".join(RUST_TARGETS + ["signature"]))
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--quick", action="store_true", help="CI smoke run: do not record figures")
    args = ap.parse_args()
    targets = args.targets.split(",")
    common.WORK.mkdir(parents=True, exist_ok=True)
    log_dir = common.WORK / "logs"
    log_dir.mkdir(exist_ok=True)
    if not args.no_build and any(t in RUST_TARGETS for t in targets):
        build()
    modules = common.build_seed_modules(common.WORK / "seeds")
    results: Dict[str, object] = {}
    failed = False
    for t in targets:
        fig = run_atheris(args.runs, args.max_time, log_dir) if t == "signature" else run_target(t, args.runs, args.max_time, modules, log_dir)
        results[t] = fig
        bad = fig.get("crashes") or fig.get("new_artifacts") or fig.get("exit_code")
        failed |= bool(bad)
        print(f"{t:22} {fig.get('executions', 0):>9} execs  cov {fig.get('coverage_edges')}  "
              f"crash {fig.get('crashes')} oom {fig.get('ooms', 0)} timeout {fig.get('timeouts', 0)}  "
              f"{fig['seconds']}s {'NEW: ' + ', '.join(fig.get('new_artifacts') or []) if fig.get('new_artifacts') else ''}", flush=True)
    if not args.quick:
        prev = {}
        if common.RESULTS.exists():
            import json

            prev = json.loads(common.RESULTS.read_text()).get("fuzz", {}).get("targets", {})
        prev.update(results)
        common.merge_results("fuzz", {"targets": prev, "runs_requested": args.runs})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
