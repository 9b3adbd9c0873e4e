"""The acceptance corpus: real PyPI packages whose C extensions are rebuilt to bitcode with
``jitload build-ext``, every ``.so`` removed, and their own test suites run, with proof that
each extension module was loaded from a ``.bc`` file.

    python tests/corpus/run.py            # all packages in packages.toml
    python tests/corpus/run.py --fast     # the CI subset (FAST below)
    python tests/corpus/run.py --only markupsafe regex

Writes ``results.json`` in the corpus work directory (``~/.cache/jitload-corpus``) and prints a table and ``K/N packages pass``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
# Outside the repository on purpose: pytest would otherwise pick up jitload's own pytest
# settings (filterwarnings=error) for the packages' suites. Kept between runs as a cache.
WORK = Path(os.environ.get("JITLOAD_CORPUS_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jitload-corpus")
PY = sys.executable
# The CI subset: an external library + Cython + multi-phase init (pyyaml), a package with a
# pure-Python fallback that must not be taken (markupsafe), a bundled C library (xxhash),
# and one package built the way users build (cytoolz: `build-ext <sdist> --wheel` under pip's
# build isolation, five Cython modules; about a minute).
FAST = {"pyyaml", "markupsafe", "xxhash", "cytoolz"}


def sh(cmd: List[str], **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, text=True, capture_output=True, **kw)


def ensure_apt(packages: List[str]) -> None:
    missing = [p for p in packages if "install ok installed" not in sh(["dpkg-query", "-W", "-f=${Status}", p]).stdout]
    if not missing:
        return
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    sh(prefix + ["apt-get", "update", "-qq"])
    r = sh(prefix + ["apt-get", "install", "-y", "-qq", *missing], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if r.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(missing)} failed: {r.stderr[-2000:]}")


def ensure_pip(requirements: List[str]) -> None:
    if not requirements:
        return
    # The stamp lives in the environment pip installs into: the corpus directory is shared by
    # every checkout (and CI run) on the machine, each with a venv of its own.
    stamp = Path(sys.prefix) / "jitload-corpus-pip" / hashlib.sha256(" ".join(sorted(requirements)).encode()).hexdigest()[:16]
    if stamp.exists():
        return
    r = sh([PY, "-m", "pip", "install", "-q", *requirements])
    if r.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirements)} failed: {r.stderr[-2000:]}")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.touch()


def fetch_sdist(pkg: Dict[str, Any]) -> Path:
    dest = WORK / "sdists"
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / pkg["sdist"]
    if not path.exists():
        # fetch_args: e.g. --no-build-isolation for CMake-based sdists, whose isolated metadata
        # build would install CMake again (the build deps are installed already, by ensure_pip).
        # --no-binary names the package only: with :all:, the metadata build's own build
        # dependencies come from source too (pyyaml's Cython: 14 min on a loaded 2-core
        # machine, against 10 s); a wheel-built package's build requirements (meson, cmake,
        # ...) stay binary, and pip prepares its metadata in an isolated environment.
        r = sh([PY, "-m", "pip", "download", "-q", "--no-deps", *pkg.get("fetch_args", []), "--no-binary", pkg["name"], "-d", str(dest), f"{pkg['name']}=={pkg['version']}"])
        if r.returncode != 0 or not path.exists():
            raise RuntimeError(f"cannot download {pkg['sdist']}: {r.stderr[-2000:]}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != pkg["sha256"]:
        path.unlink()
        raise RuntimeError(f"{pkg['sdist']}: sha256 {digest} does not match the pinned {pkg['sha256']}")
    return path


def install_bitcode_wheel(pkg: Dict[str, Any], sdist: Path, work: Path) -> tuple[Path, Path]:
    """The way a user builds (``build = "wheel"``): ``jitload build-ext SDIST --wheel`` with
    pip's build isolation (the project's own backend and build requirements), the wheel
    installed with ``pip install --target`` into ``work/site``. The sdist's ``test_files``
    are copied into ``work/run``, the test directory, so the sources cannot shadow the
    installed package. Returns (site, run)."""
    from jitload.build import build_wheel, unpack_sdist

    env_extra = {k: str(v) for k, v in pkg.get("build_env", {}).items()}
    wheel = build_wheel(sdist, work / "dist", extra_env=env_extra, config_settings=pkg.get("config_settings", []))
    site = work / "site"
    r = sh([PY, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)])
    if r.returncode != 0:
        raise RuntimeError(f"pip install {wheel.name} failed: {r.stderr[-2000:]}")
    project = unpack_sdist(sdist, work / "src")
    run = work / "run"
    run.mkdir()
    for rel in pkg.get("test_files", []):
        source = project / rel
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, run / rel)
    return site, run


def run_package(pkg: Dict[str, Any]) -> Dict[str, Any]:
    from jitload.build import run_build, unpack_sdist

    result: Dict[str, Any] = {"name": pkg["name"], "version": pkg["version"], "tags": pkg.get("tags", [])}
    t0 = time.time()
    try:
        ensure_apt(pkg.get("apt", []))
        ensure_pip(pkg.get("build_deps", []) + pkg.get("test_deps", []))
        sdist = fetch_sdist(pkg)
        work = WORK / "work" / pkg["name"]
        shutil.rmtree(work, ignore_errors=True)
        env_extra = {k: str(v) for k, v in pkg.get("build_env", {}).items()}
        t_build = time.time()
        if pkg.get("build") == "wheel":
            project, cwd = install_bitcode_wheel(pkg, sdist, work)
            built = list(project.rglob("*.bc"))
        else:
            project = unpack_sdist(sdist, work)
            # "{corpus}" in build_cmd names this directory (for shared build drivers such as cmake_build.py).
            build_cmd = [a.replace("{corpus}", str(HERE)) for a in pkg.get("build_cmd", ["setup.py", "build_ext", "--inplace"])]
            built = run_build(project, build_cmd, extra_env=env_extra)
            cwd = project / pkg.get("test_cwd", ".")
        result["build_s"] = round(time.time() - t_build, 1)
        result["bitcode_files"] = [str(p.relative_to(project)) for p in built]
        # Nothing native may remain: any .so left (a prebuilt one shipped in the sdist, say)
        # is deleted, so only bitcode can satisfy the imports.
        removed = [p for p in project.rglob("*.so")]
        for p in removed:
            p.unlink()
        result["so_removed"] = len(removed)
        assert not list(project.rglob("*.so")), "a .so survived"
        test_cmd = [a.replace("{site}", str(project)) for a in pkg["test_cmd"]]
        cmd = [PY, str(HERE / "harness.py"), "--extensions", ",".join(pkg["extensions"]), "--check", pkg.get("check_expr", "True"), "--", *test_cmd]
        env = {**os.environ, **env_extra}
        test_env = {k: str(v) for k, v in pkg.get("test_env", {}).items()}
        # PYTHONPATH entries in the manifest are relative to the test directory.
        # "{site}" (here and in test_cmd): where a wheel-built package is installed.
        pythonpath = [p.replace("{site}", str(project)) for p in test_env.pop("PYTHONPATH", ".").split(os.pathsep) if p]
        env.update(test_env)
        env["PYTHONPATH"] = os.pathsep.join(str((cwd / p).resolve()) for p in pythonpath)
        t_test = time.time()
        proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, timeout=pkg.get("timeout", 900))
        result["test_s"] = round(time.time() - t_test, 1)
        (WORK / "logs").mkdir(parents=True, exist_ok=True)
        (WORK / "logs" / f"{pkg['name']}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
        line = next((l for l in reversed(proc.stdout.splitlines()) if l.startswith("JITLOAD-CORPUS ")), None)
        report = json.loads(line[len("JITLOAD-CORPUS "):]) if line else {}
        result.update(report)
        result["summary"] = summary_line(proc.stdout + proc.stderr)
        result["returncode"] = proc.returncode
        result["passed"] = proc.returncode == 0 and bool(report.get("from_bitcode")) and bool(report.get("check"))
        if not result["passed"] and not line:
            result["error"] = (proc.stderr or proc.stdout)[-1500:]
    except Exception as e:  # one package's failure is reported, the run goes on
        result["passed"] = False
        result["error"] = f"{type(e).__name__}: {e}"[-3000:]
    result["total_s"] = round(time.time() - t0, 1)
    return result


def summary_line(output: str) -> str:
    for line in reversed(output.splitlines()):
        s = line.strip().strip("=").strip()
        if (" passed" in s or " failed" in s) and " in " in s:
            return s
        if s.startswith("Ran ") or s.startswith("OK") or s.startswith("FAILED ("):
            return s
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", action="store_true", help="only packages marked fast (the CI subset)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--manifest", type=Path, default=HERE / "packages.toml")
    args = ap.parse_args()
    manifest = tomllib.loads(args.manifest.read_text())
    packages = manifest["package"]
    if args.fast:
        packages = [p for p in packages if p.get("fast") or p["name"] in FAST]
    if args.only:
        packages = [p for p in packages if p["name"] in args.only]
    if not packages:
        print("no packages selected", file=sys.stderr)
        return 2
    results = []
    for pkg in packages:
        print(f"== {pkg['name']} {pkg['version']} ...", flush=True)
        r = run_package(pkg)
        results.append(r)
        status = "PASS" if r["passed"] else "FAIL"
        print(f"   {status}  build {r.get('build_s', '-')}s  tests {r.get('test_s', '-')}s  {r.get('summary', '')}", flush=True)
        if not r["passed"]:
            print("   " + str(r.get("error") or r.get("files") or r.get("summary"))[-1500:].replace("\n", "\n   "), flush=True)
    WORK.mkdir(exist_ok=True)
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    print()
    print("| package | version | tags | extensions from .bc | from the cache (without LLVM) / compiled | .so removed | build s | tests s | test result | pass |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        files = r.get("files") or {}
        nbc = sum(1 for f in files.values() if isinstance(f, str) and f.endswith(".bc"))
        cache = r.get("cache") or {}
        cached = f"{cache.get('hits', '-')} ({cache.get('without_llvm', '-')}) / {cache.get('misses', '-')}"
        print(f"| {r['name']} | {r['version']} | {', '.join(r['tags'])} | {nbc}/{len(files)} | {cached} | {r.get('so_removed', '-')} | "
              f"{r.get('build_s', '-')} | {r.get('test_s', '-')} | {r.get('summary', '')} | {'yes' if r['passed'] else 'NO'} |")
    passed = sum(r["passed"] for r in results)
    print(f"\n{passed}/{len(results)} packages pass")
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
