"""Checks that an sdist builds the same wheel as the Makefile: `python -m build --sdist` (the
PEP 517 route `pip install .` also takes), unpacked, then `pip wheel` of it in a clean venv.
The two wheels must hold the same files (both extension modules, the C++ guard library, the
start-up hook), and the sdist's wheel must import both modules.

    python tests/packaging/sdist_wheel.py target/wheels/jitload-*.whl

Work goes to target/sdist-check; its cargo target directory is kept between runs (the sdist
is unpacked to the same path each time, so cargo reuses what did not change).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*cmd: object, **kw: object) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kw)  # type: ignore[call-overload]


def wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path, help="the Makefile's wheel")
    parser.add_argument("--work", type=Path, default=ROOT / "target" / "sdist-check")
    args = parser.parse_args()
    work: Path = args.work.resolve()
    for sub in ("sdist", "src", "wheels", "venv"):
        shutil.rmtree(work / sub, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)

    run(sys.executable, "-m", "build", "--sdist", "--outdir", work / "sdist", ROOT)
    (sdist,) = (work / "sdist").glob("jitload-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(work / "src", filter="data")
    (source,) = (work / "src").iterdir()

    # A clean venv: nothing but pip; the build backend comes from the sdist's build-system.
    run(sys.executable, "-m", "venv", work / "venv")
    python = work / "venv" / "bin" / "python"
    env = dict(os.environ, CARGO_TARGET_DIR=str(work / "cargo-target"))
    run(python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", work / "wheels", source, env=env)
    (built,) = (work / "wheels").glob("jitload-*.whl")

    expected, got = wheel_files(args.reference), wheel_files(built)
    if expected != got:
        print(f"FAIL: {built.name} (from the sdist) differs from {args.reference.name}:")
        for name in sorted(expected - got):
            print(f"  missing: {name}")
        for name in sorted(got - expected):
            print(f"  extra:   {name}")
        return 1
    run(python, "-m", "pip", "install", "-q", "--no-deps", built)
    # Run from the venv, not the checkout, so the installed package is the one imported.
    run(python, "-c", "import jitload._native, jitload._fastload, _jitload_hook", cwd=work)
    print(f"OK: the sdist's wheel has the Makefile wheel's {len(expected)} files and imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
