#!/usr/bin/env bash
# `make test-install`: what a user gets from `pip install <checkout>`: a fresh venv, `pip
# install .` (the PEP 517 route: maturin under build isolation, crates/jitload-py/build.rs
# building the rest), then the whole Python suite run against that install, not the
# checkout's python/ directory.
#   tests/packaging/install_suite.sh [PYTEST ARGS...]
# Work goes to target/install-check; its cargo target directory is kept between runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
work=$root/target/install-check
rm -rf "$work/venv" && mkdir -p "$work"
"${PYTHON:-python3}" -m venv "$work/venv"
py=$work/venv/bin/python
"$py" -m pip install -q --upgrade pip
t0=$(date +%s.%N)
CARGO_TARGET_DIR=$work/cargo-target "$py" -m pip install -q "$root"
t1=$(date +%s.%N)
echo "pip install . (fresh venv): $("$py" -c "print(round($t1 - $t0, 1))") s"
# What the tests themselves use (scripts/bootstrap.sh's list, without the linters).
"$py" -m pip install -q "pytest>=8" pytest-timeout setuptools wheel "Cython>=3.0" build "auditwheel>=6"
cd "$work"  # nothing of the checkout on sys.path: jitload is the installed one
"$py" -c "import jitload, sys; f = jitload.__file__; assert f.startswith(sys.prefix), f; print('testing', f)"
"$py" -m pytest "$root/tests" -q "$@"
