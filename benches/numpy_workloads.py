"""numpy workloads for comparing a bitcode numpy wheel with the PyPI wheel (issue 19).

Run one round per interpreter, alternating them (interleaved rounds share the machine's
load), e.g. four rounds:

    for r in 1 2 3 4; do for v in venv-bitcode venv-pypi; do
        $v/bin/python benches/numpy_workloads.py | sed "s/^/$v /"; done; done

Each round prints one JSON line: the best of REPS runs of each workload, in seconds, and
which file numpy's core module came from.
"""

import json
import time

import numpy as np

REPS = 5


def best(f):
    f()  # warm-up (and, for a bitcode module, any lazy work)
    times = []
    for _ in range(REPS):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    rng = np.random.default_rng(0)
    a, b = rng.random((1000, 1000)), rng.random((1000, 1000))
    x, y = rng.random(10_000_000), rng.random(10_000_000)
    out = {
        "matmul_1000": best(lambda: a @ b),
        "sort_1e7": best(lambda: np.sort(x)),
        "add_1e7": best(lambda: np.add(x, y)),
        "sin_1e7": best(lambda: np.sin(x)),
        "exp_1e7": best(lambda: np.exp(x)),
        "sqrt_1e7": best(lambda: np.sqrt(x)),
        "sum_1e7": best(lambda: x.sum()),
    }
    out["_from"] = np._core._multiarray_umath.__file__.rsplit("/", 1)[-1]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
