"""numpy workloads for comparing a bitcode numpy wheel with the PyPI wheel (issue 19).

Run one round per interpreter, alternating them (interleaved rounds share the machine's
load), e.g. four rounds:

    for r in 1 2 3 4; do for v in venv-bitcode venv-pypi; do
        $v/bin/python benches/numpy_workloads.py | sed "s/^/$v /"; done; done

Each round prints one JSON line: the best of REPS runs of each workload, in seconds of wall
time and (``cpu_`` keys) of this thread's CPU time, and which file numpy's core module came
from. On a loaded machine the CPU time is the steadier figure (time spent waiting for a core
is not counted); it only covers the calling thread, so for matmul, which OpenBLAS runs on
several threads in the PyPI wheel, compare wall time.
"""

import json
import time

import numpy as np

REPS = 5


def best(f):
    """(wall, thread CPU) seconds: the minimum of each over REPS runs after a warm-up."""
    f()  # warm-up (and, for a bitcode module, any lazy work)
    wall, cpu = [], []
    for _ in range(REPS):
        t, c = time.perf_counter(), time.thread_time()
        f()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return min(wall), min(cpu)


def main():
    rng = np.random.default_rng(0)
    a, b = rng.random((1000, 1000)), rng.random((1000, 1000))
    x, y = rng.random(10_000_000), rng.random(10_000_000)
    workloads = {
        "matmul_1000": lambda: a @ b,
        "sort_1e7": lambda: np.sort(x),
        "add_1e7": lambda: np.add(x, y),
        "sin_1e7": lambda: np.sin(x),
        "exp_1e7": lambda: np.exp(x),
        "sqrt_1e7": lambda: np.sqrt(x),
        "sum_1e7": lambda: x.sum(),
    }
    out = {}
    for name, f in workloads.items():
        out[name], out["cpu_" + name] = best(f)
    out["_from"] = np._core._multiarray_umath.__file__.rsplit("/", 1)[-1]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
