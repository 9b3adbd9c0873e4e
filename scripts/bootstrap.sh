#!/usr/bin/env bash
# Installs what jitload needs on Debian 12, idempotently: LLVM/clang 22 and friends from
# apt, a Rust toolchain if none is present, and a virtualenv (.venv) with the Python tools.
# Re-running it when everything is present costs a few dpkg queries and a pip no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  llvm-22-dev clang-22 libclang-rt-22-dev lld-22   # the JIT's LLVM, the C compiler, compiler-rt
  libzstd-dev zlib1g-dev libffi-dev libxml2-dev libedit-dev libncurses-dev  # libLLVM's link deps
  libyaml-dev                                      # corpus: PyYAML links libyaml
  python3-dev python3-venv                         # headers and venv for the system Python
  build-essential gdb patchelf ca-certificates
)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  missing+=(rustc-web cargo-web)   # Debian 12's current Rust (the plain rustc is too old for PyO3)
fi
# The lint step's rustfmt and clippy, where Rust came from rustup (Debian's Rust has neither;
# the lint step then says it skipped them).
if command -v rustup >/dev/null 2>&1; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
want="maturin>=1.5,<2 pytest>=8 pytest-timeout setuptools wheel Cython>=3.0 build mypy auditwheel>=6"
stamp=.venv/.bootstrap-$(echo "$want" | md5sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q $want
  touch "$stamp"
fi
