"""Build tools: C sources to one bitcode module, and setuptools projects to bitcode
extensions (in place or as a wheel whose extension modules are ``.bc`` files)."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from . import _clang, _variants, elf
from ._bitcode_file import BITCODE_MAGIC, is_bitcode
from .errors import ToolchainError

#: Source suffixes compiled as C++ (with clang++-22).
CXX_SUFFIXES = (".cc", ".cpp", ".cxx", ".C", ".c++")


def bitcode_name(so_name: str) -> str:
    """``foo.cpython-311-x86_64-linux-gnu.so`` -> ``foo.cpython-311-x86_64-linux-gnu.bc``."""
    if not so_name.endswith(".so"):
        raise ValueError(f"not an extension module file name: {so_name}")
    return so_name[: -len(".so")] + ".bc"


def compile(
    sources: Sequence[str],
    output: str,
    *,
    cflags: Sequence[str] = (),
    include_dirs: Sequence[str] = (),
    defines: Sequence[str] = (),
    libraries: Sequence[str] = (),
    library_dirs: Sequence[str] = (),
    opt_level: int = 2,
) -> str:
    """Compile C (or C++) sources with clang 22 (clang++ 22 for ``.cpp``/``.cc``/``.cxx``) and
    link them into one bitcode module.

    ``libraries`` (names as in ``-lfoo``) are resolved to the shared library the linker would
    use and recorded as ``!llvm.dependent-libraries``, so the JIT loads them; with C++ sources
    the C++ runtime (``libstdc++.so.6``, or ``libc++.so.1`` for ``-stdlib=libc++``) is recorded
    too. Returns ``output``.
    """
    from . import _native, abi

    if not sources:
        raise ToolchainError("no source files given")
    with tempfile.TemporaryDirectory(prefix="jitload-compile-") as tmp:
        objects = []
        for i, src in enumerate(sources):
            cxx = Path(src).suffix in CXX_SUFFIXES
            clang = _clang.find("clang++" if cxx else "clang")
            obj = os.path.join(tmp, f"{i}-{Path(src).stem}.o")
            cmd = [clang, "-c", f"-O{opt_level}", *_clang.BITCODE_FLAGS]
            cmd += [f"-I{d}" for d in [*include_dirs, *_clang.python_include_dirs()]]
            cmd += [f"-D{d}" for d in defines]
            cmd += [*cflags, src, "-o", obj]
            status, messages = _variants.compile_with_variants(cmd, capture=True)
            if status != 0:
                tail = messages.strip().splitlines()[-40:]
                raise ToolchainError(f"compiling {src} failed (exit {status}): {' '.join(cmd)}\n" + "\n".join(tail))
            objects.append(obj)
        from ._toolchain import _RUNTIME_LIBRARIES, cxx_runtime

        deps = [_RUNTIME_LIBRARIES.get(lib) or elf.resolve_library(lib, library_dirs) for lib in libraries]
        if any(Path(src).suffix in CXX_SUFFIXES for src in sources):
            # C++ code calls into its runtime (operator new, exceptions, RTTI): record it, as
            # a native link with clang++ would add -lstdc++.
            runtime = cxx_runtime(list(cflags))
            if runtime not in deps:
                deps.append(runtime)
        _native.link_bitcode(objects, output, list(dict.fromkeys(deps)), abi.record_for(str(output)))
    return output


def _run(cmd: List[str], what: str, env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-40:]
        raise ToolchainError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))


def standin_script(tool: str) -> str:
    """The shell script of one stand-in (``cc``, ``c++``, ``ld``): this interpreter, by absolute
    path, in isolated mode (``-I``: a build frontend's PYTHONPATH and user site cannot change
    what it imports), importing jitload from the directory this copy was loaded from. So it
    works from any environment a build frontend creates (pip's or ``build``'s isolated build
    environments), which need not have jitload installed."""
    import shlex

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = f"import sys; sys.path.insert(0, {package_parent!r}); from jitload._toolchain import main; sys.exit(main(sys.argv[1:]))"
    return f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -I -c {shlex.quote(code)} {tool} "$@"\n'


def toolchain_dir() -> str:
    """A directory of executables standing for the compilers and the linker (``cc``, ``c++``,
    ``ld``; ``llvm-ar``/``llvm-ranlib`` for archives of bitcode), each one word, so build
    systems that want a compiler *path* (CMake, meson, scikit-build-core) can use them too.
    Made once per interpreter, in a private temporary directory removed at exit."""
    global _TOOLCHAIN_DIR
    if _TOOLCHAIN_DIR is None or not os.path.isdir(_TOOLCHAIN_DIR):
        import atexit
        import shutil

        d = tempfile.mkdtemp(prefix="jitload-toolchain-")
        atexit.register(shutil.rmtree, d, True)
        for tool in ("cc", "c++", "ld"):
            path = os.path.join(d, tool)
            with open(path, "w") as f:
                f.write(standin_script(tool))
            os.chmod(path, 0o755)
        # Build systems strip release modules (pybind11's CMake does): bitcode has nothing to
        # strip that the JIT would keep, so stripping is a no-op.
        path = os.path.join(d, "strip")
        with open(path, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(path, 0o755)
        llvm_bin = os.path.dirname(os.path.realpath(_clang.find("clang")))
        for tool in ("llvm-ar", "llvm-ranlib", "llvm-nm"):
            target = os.path.join(llvm_bin, tool)
            if os.path.exists(target):
                os.symlink(target, os.path.join(d, tool))
        _TOOLCHAIN_DIR = d
    return _TOOLCHAIN_DIR


_TOOLCHAIN_DIR: Optional[str] = None


def toolchain_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment that makes setuptools (and CMake-based builds such as scikit-build-core's)
    compile with clang 22 to bitcode and "link" with jitload's bitcode linker (see
    :mod:`jitload._toolchain`)."""
    env = dict(os.environ if base is None else base)
    d = toolchain_dir()
    env["CC"] = os.path.join(d, "cc")
    env["CXX"] = os.path.join(d, "c++")
    env["LDSHARED"] = f"{os.path.join(d, 'ld')} -shared"
    env["LDCXXSHARED"] = f"{os.path.join(d, 'ld')} -shared"
    # CMake-based builds (scikit-build-core reads CMAKE_ARGS): LLVM's archiver for archives
    # of bitcode, and no stripping.
    if os.path.exists(os.path.join(d, "llvm-ar")):
        env["AR"] = os.path.join(d, "llvm-ar")
    cmake_args = [f"-DCMAKE_STRIP={os.path.join(d, 'strip')}"]
    if os.path.exists(os.path.join(d, "llvm-ar")):
        cmake_args += [f"-DCMAKE_AR={os.path.join(d, 'llvm-ar')}", f"-DCMAKE_RANLIB={os.path.join(d, 'llvm-ranlib')}"]
    env["CMAKE_ARGS"] = " ".join([env.get("CMAKE_ARGS", ""), *cmake_args]).strip()
    # CFLAGS stays the user's, or unset: recent setuptools (84 here) lets CFLAGS *replace* Python's own
    # flags (-O3 -fwrapv ...), so even an empty one would change what the package is built with.
    return env


def _setup_py_args(project: Path, args: List[str]) -> List[str]:
    """Interpreter arguments that run setuptools command ``args`` (with or without setup.py)."""
    if (project / "setup.py").exists():
        return ["setup.py", *args]
    return ["-c", "import setuptools; setuptools.setup()", *args]


def _convert_tree(root: Path, since: float) -> List[Path]:
    """Rename extension outputs under ``root`` that hold bitcode from ``.so`` to ``.bc``."""
    converted = []
    for path in root.rglob("*.so"):
        if path.stat().st_mtime >= since - 1 and is_bitcode(path):
            target = path.with_name(bitcode_name(path.name))
            os.replace(path, target)
            converted.append(target)
    return converted


def build_ext_inplace(
    project: "os.PathLike[str] | str", extra_env: Optional[Dict[str, str]] = None, setup_args: Optional[Sequence[str]] = None
) -> List[Path]:
    """Build every extension of a setuptools project directory to ``.bc`` beside its sources.

    ``setup_args`` replaces the default ``build_ext --inplace --force`` for projects that need
    their own options (e.g. ``--no-cffi-backend``). Returns the ``.bc`` files made.
    """
    root = Path(project).resolve()
    args = list(setup_args) if setup_args else ["build_ext", "--inplace", "--force"]
    return run_build(root, _setup_py_args(root, args), extra_env)


def run_build(project: "os.PathLike[str] | str", python_args: Sequence[str], extra_env: Optional[Dict[str, str]] = None) -> List[Path]:
    """Run ``python <python_args>`` in ``project`` with jitload's toolchain (any setuptools
    invocation), then turn every extension it produced, wherever it landed (``build/``
    included), into a ``.bc`` file. Returns them all."""
    root = Path(project).resolve()
    start = time.time()
    env = toolchain_env()
    env.update(extra_env or {})
    _run([sys.executable, *python_args], f"building {root}", env=env, cwd=str(root))
    converted = _convert_tree(root, start)
    if not converted:
        raise ToolchainError(f"building {root} produced no extension modules")
    return converted


def build_wheel(
    project: "os.PathLike[str] | str",
    out_dir: "os.PathLike[str] | str",
    *,
    isolation: bool = True,
    extra_env: Optional[Dict[str, str]] = None,
    config_settings: Sequence[str] = (),
) -> Path:
    """Build a wheel of ``project`` (directory or sdist) whose extension modules are ``.bc``.

    The project's own PEP 517 backend runs through ``pip wheel``: by default in an isolated
    environment into which pip installs the project's build requirements (``isolation=False``:
    in this interpreter's environment, which must have them). ``config_settings`` are
    ``KEY=VALUE`` strings handed to the backend as ``pip wheel -C KEY=VALUE`` does (e.g.
    meson-python's ``setup-args=-Dfoo=bar``; a key may repeat)."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = toolchain_env()
    env.update(extra_env or {})
    for setting in config_settings:
        if "=" not in setting:
            raise ToolchainError(f"config setting {setting!r} is not KEY=VALUE")
    with tempfile.TemporaryDirectory(prefix="jitload-wheel-") as tmp:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp]
        if not isolation:
            cmd.append("--no-build-isolation")
        cmd += [f"--config-settings={setting}" for setting in config_settings]
        _run([*cmd, str(Path(project).resolve())], f"building a wheel of {project}", env=env)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ToolchainError(f"expected one wheel from {project}, got {[w.name for w in wheels]}")
        return _rewrite_wheel(wheels[0], out)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _bitcode_platform(modules: List[bytes], fallback: str) -> str:
    """The platform tag for a wheel of these bitcode modules (see jitload.wheelinfo)."""
    import jitload

    from . import wheelinfo

    with tempfile.TemporaryDirectory(prefix="jitload-tag-") as tmp:
        paths, libraries = [], []
        for i, data in enumerate(modules):
            path = os.path.join(tmp, f"module{i}.bc")
            Path(path).write_bytes(data)
            paths.append(path)
            libraries += jitload.dependent_libraries(path)
        tag, why = wheelinfo.platform_tag(paths, libraries, fallback)
    import logging

    logging.getLogger("jitload.build").info("platform tag %s (%s)", tag, why)
    return tag


def _rewrite_wheel(wheel: Path, out: Path) -> Path:
    """Copy ``wheel`` to ``out`` with bitcode ``.so`` members renamed ``.bc``, ``Requires-Dist:
    jitload`` and the platform tag the modules allow (jitload.wheelinfo), and RECORD redone."""
    from . import wheelinfo

    renamed = 0
    with zipfile.ZipFile(wheel) as src:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        dist_info = record_name.rpartition("/")[0]
        entries = []
        for info in src.infolist():
            if info.filename == record_name:
                continue
            data = src.read(info)
            name = info.filename
            if name.endswith(".so") and data[:4] in BITCODE_MAGIC:
                head, _, base = name.rpartition("/")
                name = f"{head}/{bitcode_name(base)}" if head else bitcode_name(base)
                renamed += 1
            entries.append((name, info, data))
    if renamed == 0:
        raise ToolchainError(f"{wheel.name} contains no bitcode extension modules")
    wheel_text = next(d for n, _, d in entries if n == f"{dist_info}/WHEEL").decode()
    tags = wheelinfo.wheel_tags(wheel_text)
    platform = _bitcode_platform([d for n, i, d in entries if n != i.filename], tags[0].rsplit("-", 1)[1])
    target_name, tags = wheelinfo.retag(wheel.name, tags, platform)
    edits = {
        f"{dist_info}/WHEEL": lambda text: wheelinfo.with_tags(text, tags),
        f"{dist_info}/METADATA": wheelinfo.with_requirement,
    }
    entries = [(n, i, edits[n](d.decode()).encode() if n in edits else d) for n, i, d in entries]
    target = out / target_name
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        # A stale .bc shipped as package data must not shadow the module just built.
        fresh = {n for n, i, _ in entries if n != i.filename}
        rows = []
        for name, info, data in entries:
            if name in fresh and name == info.filename:
                continue
            zi = zipfile.ZipInfo(name, info.date_time)
            zi.external_attr = info.external_attr
            zi.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(zi, data)
            rows.append((name, _record_hash(data), str(len(data))))
        rows.append((record_name, "", ""))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        dst.writestr(record_name, buf.getvalue())
    return target


def unpack_sdist(sdist: "os.PathLike[str] | str", dest: "os.PathLike[str] | str") -> Path:
    """Extract an sdist (.tar.gz or .zip) and return its project directory."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    s = str(sdist)
    if s.endswith(".zip"):
        with zipfile.ZipFile(s) as z:
            z.extractall(dest)
    else:
        with tarfile.open(s) as t:
            if sys.version_info >= (3, 12):
                t.extractall(dest, filter="data")
            else:
                t.extractall(dest)
    entries = [p for p in dest.iterdir() if p.is_dir()]
    if len(entries) != 1:
        raise ToolchainError(f"{sdist}: expected one top-level directory, found {len(entries)}")
    return entries[0]


def iter_bitcode_modules(root: "os.PathLike[str] | str") -> Iterable[Path]:
    for p in Path(root).rglob("*.bc"):
        if is_bitcode(p):
            yield p


__all__ = [
    "build_ext_inplace",
    "run_build",
    "build_wheel",
    "bitcode_name",
    "compile",
    "is_bitcode",
    "toolchain_env",
    "unpack_sdist",
]
