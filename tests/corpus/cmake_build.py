"""Builds a CMake project for the corpus with jitload's toolchain (run by ``jitload.build.run_build``,
so CC/CXX and CMAKE_ARGS already point at the bitcode compilers): configure ``_build`` with
Ninja in Release mode for this interpreter, then build.

    python cmake_build.py [-DNAME=VALUE ...]

Build steps that import the modules just built (nanobind's stub generation does) get
``buildhooks/sitecustomize.py``, which loads extension ``.so`` files holding bitcode through
jitload. cmake and ninja come from the interpreter's environment (the PyPI packages).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE / "buildhooks"), env.get("PYTHONPATH", "")]))
    cmake_args = env.pop("CMAKE_ARGS", "").split()
    configure = ["cmake", "-S", ".", "-B", "_build", "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                 f"-DPython_EXECUTABLE={sys.executable}", *cmake_args, *argv]
    subprocess.run(configure, env=env, check=True)
    subprocess.run(["cmake", "--build", "_build", "-j", str(min(2, os.cpu_count() or 1))], env=env, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
