# jitload: `make demo` and `make test` set everything up themselves (see README.md).
SHELL := /bin/bash
export LLVM_SYS_221_PREFIX ?= /usr/lib/llvm-22
export PATH := $(HOME)/.cargo/bin:$(PATH)
VENV := .venv
PY := $(VENV)/bin/python
WHEEL_STAMP := target/.wheel-installed
SOURCES := $(shell find crates python -type f \( -name '*.rs' -o -name '*.py' -o -name '*.pyi' -o -name 'Cargo.toml' \) 2>/dev/null) Cargo.toml pyproject.toml jitload.pth

.PHONY: setup build demo test lint typecheck test-rust test-python corpus corpus-fast bench clean

setup:
	@bash scripts/bootstrap.sh

$(WHEEL_STAMP): $(SOURCES) | setup
	@mkdir -p target
	@# One build at a time: parallel `make build`s would delete each other's wheels.
	flock target/.build.lock bash -c 'rm -rf target/wheels && \
	  $(VENV)/bin/maturin build --release --compatibility linux --auditwheel skip -o target/wheels -q && \
	  $(PY) -m pip install -q --force-reinstall --no-deps target/wheels/jitload-*.whl'
	@touch $@

build: setup $(WHEEL_STAMP)

demo: build
	$(PY) examples/demo.py

test-rust: setup
	cargo test --release -p jitload-engine -p jitload-cache -q

# Lints from the workspace manifest (SAFETY comments, no prints...), where clippy is installed.
lint: setup
	@if cargo clippy --version >/dev/null 2>&1; then cargo clippy --release -q -p jitload-engine -p jitload-py -p jitload-cache -- -D warnings; \
	else echo "lint: cargo clippy not installed, skipped"; fi

test-python: build
	$(PY) -m pytest tests -q

# The Python package type-checks strictly, and the stub matches the built native module.
typecheck: build
	$(PY) -m mypy --strict python/jitload
	$(PY) -m mypy.stubtest jitload._native

test: lint typecheck test-rust test-python corpus-fast

corpus-fast: build
	$(PY) tests/corpus/run.py --fast

corpus: build
	$(PY) tests/corpus/run.py

bench: build
	$(PY) benches/run.py

clean:
	rm -rf target build .corpus benchmarks/out
