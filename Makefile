# jitload: `make demo` and `make test` set everything up themselves (see README.md).
SHELL := /bin/bash
export LLVM_SYS_221_PREFIX ?= /usr/lib/llvm-22
export PATH := $(HOME)/.cargo/bin:$(PATH)
VENV := .venv
PY := $(VENV)/bin/python
WHEEL_STAMP := target/.wheel-installed
SOURCES := $(shell find crates python -type f \( -name '*.rs' -o -name '*.py' -o -name '*.pyi' -o -name 'Cargo.toml' -o -name '*.cpp' \) 2>/dev/null) Cargo.toml pyproject.toml jitload.pth

.PHONY: setup build demo test lint typecheck test-rust test-python test-dualmap test-sdist test-install wheel-manylinux test-wheel corpus corpus-fast bench bench-wheels clean

setup:
	@bash scripts/bootstrap.sh

$(WHEEL_STAMP): $(SOURCES) | setup
	@mkdir -p target
	@# One build at a time: parallel `make build`s would delete each other's wheels.
	@# The route every other one takes (pip, an sdist): maturin, whose cargo build of _native
	@# also builds _fastload and the C++ guard library (crates/jitload-py/build.rs).
	flock target/.build.lock bash -c 'rm -rf target/wheels && \
	  $(VENV)/bin/maturin build --release --compatibility linux --auditwheel skip -o target/wheels -q && \
	  $(PY) -m pip install -q --force-reinstall --no-deps target/wheels/jitload-*.whl'
	@touch $@

build: setup $(WHEEL_STAMP)

demo: build
	$(PY) examples/demo.py

test-rust: setup
	cargo test --release -p jitload-engine -p jitload-runtime -p jitload-cache -p jitload-objload -p jitload-stencils -p jitload-codemem -p jitload-options -q

# Lints from the workspace manifest (SAFETY comments, no prints...), where clippy is installed.
lint: setup
	@if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all --check; \
	else echo "lint: rustfmt not installed, skipped"; fi
	@if cargo clippy --version >/dev/null 2>&1; then cargo clippy --release -q --all-targets -p jitload-engine -p jitload-runtime -p jitload-pyinit -p jitload-fastload -p jitload-py -p jitload-cache -p jitload-objload -p jitload-stencils -p jitload-codemem -p jitload-options -- -D warnings; \
	else echo "lint: cargo clippy not installed, skipped"; fi

test-python: build
	$(PY) -m pytest tests -q

# The suite again with every piece of code jitload writes sealed by the memfd fallback, as on
# a host that forbids making written memory executable (crates/jitload-codemem).
test-dualmap: build
	JITLOAD_CODE_MEMORY=dualmap $(PY) -m pytest tests -q

# The Python package type-checks strictly, and the stub matches the built native module.
typecheck: build
	$(PY) -m mypy --strict python/jitload python/_jitload_hook.py python/_jitload_finder.py
	$(PY) -m mypy.stubtest jitload._native jitload._fastload

# test-wheel: the manylinux wheel in a clean Debian root (root or sudo; skipped otherwise).
test: lint typecheck test-rust test-python test-dualmap corpus-fast test-sdist test-wheel

# The manylinux_2_28 wheel with LLVM from PyPI (karellen-llvm-core); see docs/distribution.md.
wheel-manylinux: setup
	nice bash scripts/manylinux-wheel.sh target/wheels-manylinux

# The manylinux wheel in a clean Debian 12 minbase root (debootstrap; needs root or sudo), C
# and C++ modules; the root is cached as a tarball in ~/.cache/jitload-ci.
test-wheel: wheel-manylinux
	bash tests/wheel/minbase.sh target/wheels-manylinux/jitload-*manylinux_2_28_x86_64.whl

# An sdist, built into a wheel in a clean venv, gives the Makefile's wheel (same files).
test-sdist: build
	nice $(PY) tests/packaging/sdist_wheel.py target/wheels/jitload-*.whl

# `pip install .` into a fresh venv, then the whole Python suite against that install.
test-install: setup
	nice bash tests/packaging/install_suite.sh

# The packages' own tests run with the object cache off, so every test process imports the
# extensions cold: compiled in tiers (the default), tiering up while the tests run.
corpus-fast: build
	JITLOAD_CACHE=0 $(PY) tests/corpus/run.py --fast

corpus: build
	$(PY) tests/corpus/run.py

bench: build
	$(PY) benches/run.py
	$(PY) benches/bench_tiers.py
	$(PY) -m pip install -q cffi==2.1.1 numba==0.68.1  # the peers bench_calls measures
	$(PY) benches/bench_calls.py --instructions
	$(PY) -m pip install -q pybind11==2.13.6 && $(PY) benches/bench_cxx.py

# jitload's bitcode builds vs the PyPI binary wheels of the same versions (issue 16's
# workloads; writes benchmarks/wheels.json and .md). Builds bitcode wheels on first use.
bench-wheels: build
	$(PY) benches/bench_wheels.py

clean:
	rm -rf target build .corpus benchmarks/out

# Long reliability runs (fuzzing every loader, 10,000 mutated corpus modules per mode, 8 threads x
# 120 s, 1,000 leak-check cycles); figures in docs/reliability.json and docs/reliability.md.
# CI runs the short versions: tests/test_reliability_*.py in test-python, and reliability-quick.
.PHONY: reliability reliability-quick
reliability: build
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q atheris
	nice -n 10 $(PY) tests/reliability/fuzz.py --runs 100000
	nice -n 10 $(PY) tests/reliability/mutate.py --count 10000 --mode library
	nice -n 10 $(PY) tests/reliability/mutate.py --count 10000 --mode import
	JITLOAD_CACHE=0 nice -n 10 $(PY) tests/reliability/stress.py --threads 8 --seconds 120 --record
	nice -n 10 $(PY) tests/reliability/leaks.py --cycles 1000
	$(PY) tests/reliability/report.py

reliability-quick: build
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install -q atheris
	$(PY) tests/reliability/mutate.py --count 200 --mode import --quick
	$(PY) tests/reliability/atheris_signature.py -runs=20000 -max_len=256 >/dev/null 2>&1 || \
	  { echo "signature fuzzing failed"; exit 1; }
