"""C source to LLVM bitcode with clang 22, cached by content.

Used by the import hook (``jitload.install(c_source=True)`` or ``JITLOAD_C_SOURCE=1``:
``import foo`` compiles ``foo.c``) and meant for the engine API (adding C source to a
library). Two entry points, both returning bitcode bytes and both cached:

* :func:`compile_file` — a ``.c`` file, with the flags the file asks for (see below);
* :func:`compile_source` — C source text (``name`` is the file name diagnostics show).

:func:`build_file` / :func:`build_source` do the same and return a :class:`CompiledC` with
the cached file's path, whether it was a cache hit, the headers it depends on, etc.

Flags, in order (later ones win where clang lets them):

1. ``// jitload: FLAGS`` lines among the comment lines at the top of the source;
2. for files, the sidecar ``foo.c.flags`` beside ``foo.c``: shell-quoted flags on any number
   of lines, ``#`` starts a comment;
3. the ``flags`` argument.

Relative paths given to ``-I``, ``-L``, ``-isystem``, ``-iquote``, ``-idirafter``,
``-include`` and ``-imacros`` are made absolute: against the source's directory for 1 and 2,
against the current directory for 3. ``-lNAME`` / ``-L DIR`` are not passed to clang: the
libraries are recorded in the bitcode's ``!llvm.dependent-libraries`` (by SONAME, as
``python -m jitload compile -l`` does), so the JIT loads them. Everything else goes to clang
unchanged, after jitload's own bitcode flags (``-O2 -flto=full -fPIC ...``) and before
Python's include directories.

The cache lives in ``$JITLOAD_CACHE_DIR/csource``, else ``$XDG_CACHE_HOME/jitload/csource``,
else ``~/.cache/jitload/csource`` (created mode 0700; a directory not owned by the user or
writable by group/others is not used: the compile happens in a temporary directory and a
:class:`~jitload.errors.JitloadWarning` is issued once). Per compile there are two files:

* ``<base>.json`` — the manifest, named by the *base key*: sha256 over the jitload version,
  the cache format, clang's path and ``--version`` text, the complete clang command line
  (flags, opt level, include directories), the resolved dependent libraries, the source's
  identity (absolute path; for text, its name and the current directory), the source bytes
  and clang-relevant environment variables (``CPATH``, ...). It lists every file the compile
  read (clang ``-MD``: headers, including system and Python headers) with its sha256;
* ``<full>.bc`` — the bitcode, named by the *full key*: sha256 over the base key and the
  dependencies' paths and hashes.

A lookup re-hashes the manifest's dependencies; any change (or a missing file) is a miss and
clang runs again. Writes are atomic (temporary file + ``os.replace``), so concurrent
processes may share the cache. Old entries are never removed automatically: delete the
directory at any time.

This module imports only ``os`` (and jitload's errors) when imported; the rest is imported
when a compile happens.
"""

from __future__ import annotations

import os

from .errors import CSourceError, JitloadWarning, ToolchainError

# Only for the type checker (typing costs ~10 ms to import).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

    StrPath = Union[str, "os.PathLike[str]"]

__all__ = [
    "CompiledC",
    "build_file",
    "build_source",
    "compile_file",
    "compile_source",
    "default_cache_dir",
    "file_flags",
    "SIDECAR_SUFFIX",
]

#: Bumped when the cache layout or key changes.
CACHE_FORMAT = 1
#: The sidecar of ``foo.c`` is ``foo.c`` + this suffix.
SIDECAR_SUFFIX = ".flags"
#: ``// jitload: FLAGS`` at the top of a source.
DIRECTIVE = "jitload:"

_BITCODE_MAGIC = (b"BC\xc0\xde", b"\xde\xc0\x17\x0b")
# Options whose argument is a path (joined or separate); longest first.
_PATH_OPTIONS = ("-idirafter", "-imacros", "-include", "-isystem", "-iquote", "-I", "-L")
# Options that would make clang produce something other than one bitcode object.
_REJECTED = ("-o", "-E", "-S", "-M", "-MM", "-fsyntax-only", "-###")
# Environment variables that change what clang compiles.
_ENV_KEYS = ("CPATH", "C_INCLUDE_PATH", "CPLUS_INCLUDE_PATH", "OBJC_INCLUDE_PATH", "CCC_OVERRIDE_OPTIONS")

_warned_dirs: Set[str] = set()


class CompiledC:
    """The result of compiling C source to bitcode.

    Attributes:
        bitcode: the LLVM bitcode.
        path: the cached bitcode file (immutable: named by its content key), or None when
            the cache was not used (disabled, or an unsafe cache directory).
        cache_hit: true when clang did not run.
        key: the full content key (sha256 hex); equal keys mean identical bitcode.
        dependencies: every file the compile read besides the source (headers).
        libraries: dependent libraries recorded in the bitcode (SONAMEs).
        flags: the flags as given to clang (file flags + ``flags``, paths made absolute).
        diagnostics: clang's warnings ("" on a cache hit).
    """

    __slots__ = ("bitcode", "path", "cache_hit", "key", "dependencies", "libraries", "flags", "diagnostics")

    def __init__(
        self,
        bitcode: bytes,
        path: Optional[str],
        cache_hit: bool,
        key: str,
        dependencies: List[str],
        libraries: List[str],
        flags: List[str],
        diagnostics: str = "",
    ) -> None:
        self.bitcode = bitcode
        self.path = path
        self.cache_hit = cache_hit
        self.key = key
        self.dependencies = dependencies
        self.libraries = libraries
        self.flags = flags
        self.diagnostics = diagnostics

    def __repr__(self) -> str:
        where = self.path or "uncached"
        return f"<CompiledC {len(self.bitcode)} bytes, {'hit' if self.cache_hit else 'compiled'}, {where}>"


# -- public API ---------------------------------------------------------------------------------


def compile_file(
    path: StrPath,
    flags: Sequence[str] = (),
    *,
    opt_level: int = 2,
    include_python: bool = True,
    use_file_flags: bool = True,
    use_cache: bool = True,
    cache_dir: Optional[StrPath] = None,
) -> bytes:
    """Compile the C file ``path`` to bitcode (cached); see :func:`build_file`."""
    return build_file(
        path,
        flags,
        opt_level=opt_level,
        include_python=include_python,
        use_file_flags=use_file_flags,
        use_cache=use_cache,
        cache_dir=cache_dir,
    ).bitcode


def compile_source(
    text: Union[str, bytes],
    flags: Sequence[str] = (),
    *,
    name: str = "source.c",
    opt_level: int = 2,
    include_python: bool = True,
    use_cache: bool = True,
    cache_dir: Optional[StrPath] = None,
) -> bytes:
    """Compile C source text to bitcode (cached); see :func:`build_source`."""
    return build_source(
        text, flags, name=name, opt_level=opt_level, include_python=include_python, use_cache=use_cache, cache_dir=cache_dir
    ).bitcode


def build_file(
    path: StrPath,
    flags: Sequence[str] = (),
    *,
    opt_level: int = 2,
    include_python: bool = True,
    use_file_flags: bool = True,
    use_cache: bool = True,
    cache_dir: Optional[StrPath] = None,
) -> CompiledC:
    """Compile the C file ``path`` with clang 22 to bitcode, or take it from the cache.

    Args:
        flags: extra clang flags (after the file's own ``// jitload:`` and sidecar flags).
        opt_level: clang's ``-O`` level for the bitcode (the JIT optimises again at its own
            level; at 0 functions are not marked ``optnone``, so the JIT still may).
        include_python: add Python's include directories (needed for extension modules).
        use_file_flags: read the ``// jitload:`` lines and the ``<path>.flags`` sidecar.
        use_cache: look up and store the result in the cache.
        cache_dir: the cache directory to use instead of the default one.

    Raises:
        CSourceError: clang rejected the source (the message holds its diagnostics).
        ToolchainError: clang 22 is missing, the file or sidecar is unreadable, or a flag is
            not allowed (``-o``, ``-E``, ``-S``, ...).
    """
    abspath = os.path.abspath(os.fspath(path))
    try:
        with open(abspath, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ToolchainError(f"{abspath}: cannot read the C source: {e.strerror or e}", path=abspath) from e
    given = _absolutize(_check_flags(flags), os.getcwd())
    all_flags = (_file_flags(abspath, data) if use_file_flags else []) + given
    return _build(
        display=abspath,
        source_path=abspath,
        source=data,
        stdin=None,
        identity=["file", abspath],
        flags=all_flags,
        opt_level=opt_level,
        include_python=include_python,
        use_cache=use_cache,
        cache_dir=cache_dir,
    )


def build_source(
    text: Union[str, bytes],
    flags: Sequence[str] = (),
    *,
    name: str = "source.c",
    opt_level: int = 2,
    include_python: bool = True,
    use_cache: bool = True,
    cache_dir: Optional[StrPath] = None,
) -> CompiledC:
    """Compile C source text with clang 22 to bitcode, or take it from the cache.

    The text is compiled as if it were a file called ``name`` (diagnostics, ``__FILE__``);
    ``#include "..."`` and relative paths in ``flags`` resolve against the current
    directory. ``// jitload:`` lines at its top are honoured. Other arguments and errors as
    in :func:`build_file`.
    """
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    stdin = f'#line 1 "{escaped}"\n'.encode("utf-8") + data
    cwd = os.getcwd()
    all_flags = _absolutize(_directive_flags(data, name), cwd) + _absolutize(_check_flags(flags), cwd)
    return _build(
        display=name,
        source_path=None,
        source=stdin,
        stdin=stdin,
        identity=["text", name, cwd],
        flags=all_flags,
        opt_level=opt_level,
        include_python=include_python,
        use_cache=use_cache,
        cache_dir=cache_dir,
    )


def file_flags(path: StrPath) -> List[str]:
    """The flags a C file asks for: its ``// jitload:`` lines, then its sidecar
    ``<path>.flags``, with relative paths made absolute against the file's directory."""
    abspath = os.path.abspath(os.fspath(path))
    with open(abspath, "rb") as f:
        data = f.read()
    return _file_flags(abspath, data)


def default_cache_dir() -> str:
    """Where compiled C sources are cached (see the module documentation); not created:
    ``csource`` in the object cache's directory (``JITLOAD_CACHE_DIR``, XDG rules)."""
    from . import config

    base = config.options.cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "jitload")
    return os.path.join(base, "csource")


# -- flags ---------------------------------------------------------------------------------------


def _check_flags(flags: Sequence[str]) -> List[str]:
    if isinstance(flags, (str, bytes)):
        raise TypeError(f"flags must be a sequence of strings (e.g. shlex.split({flags!r})), not a string")
    out = list(flags)
    for f in out:
        if not isinstance(f, str):
            raise TypeError(f"flags must be strings, not {type(f).__name__}: {f!r}")
    return out


def _directive_flags(data: bytes, where: str) -> List[str]:
    """Flags from ``// jitload: ...`` lines among the comment lines at the top of a source."""
    import shlex

    flags: List[str] = []
    for line in data.decode("utf-8", "replace").splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("//"):
            break
        body = s[2:].strip()
        if body.startswith(DIRECTIVE):
            try:
                flags += shlex.split(body[len(DIRECTIVE) :])
            except ValueError as e:
                raise ToolchainError(f"{where}: bad '// {DIRECTIVE}' line: {e}", path=where) from e
    return flags


def _file_flags(abspath: str, data: bytes) -> List[str]:
    import shlex

    flags = _directive_flags(data, abspath)
    sidecar = abspath + SIDECAR_SUFFIX
    try:
        with open(sidecar, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise ToolchainError(f"{sidecar}: cannot read the flags sidecar: {e}", path=sidecar) from e
    else:
        try:
            flags += shlex.split(text, comments=True)
        except ValueError as e:
            raise ToolchainError(f"{sidecar}: {e}", path=sidecar) from e
    return _absolutize(flags, os.path.dirname(abspath))


def _absolutize(flags: List[str], base: str) -> List[str]:
    """Make the path arguments of ``_PATH_OPTIONS`` absolute against ``base``."""

    def fix(option: str, value: str) -> str:
        if not value or os.path.isabs(value):
            return value
        joined = os.path.normpath(os.path.join(base, value))
        if option in ("-include", "-imacros") and not os.path.exists(joined):
            return value  # also searched in the include path: leave it to clang
        return joined

    out: List[str] = []
    i = 0
    while i < len(flags):
        f = flags[i]
        if f in _PATH_OPTIONS and i + 1 < len(flags):
            out += [f, fix(f, flags[i + 1])]
            i += 2
            continue
        for option in _PATH_OPTIONS:
            if f.startswith(option) and len(f) > len(option):
                out.append(option + fix(option, f[len(option) :]))
                break
        else:
            out.append(f)
        i += 1
    return out


def _split_link_flags(flags: List[str], where: str) -> Tuple[List[str], List[str], List[str]]:
    """(flags for clang, ``-l`` libraries, ``-L`` directories)."""
    compile_flags: List[str] = []
    libraries: List[str] = []
    library_dirs: List[str] = []
    i = 0
    while i < len(flags):
        f = flags[i]
        if f in ("-l", "-L"):
            if i + 1 >= len(flags):
                raise ToolchainError(f"{where}: {f} needs an argument", path=where)
            (libraries if f == "-l" else library_dirs).append(flags[i + 1])
            i += 2
            continue
        if f.startswith("-l"):
            libraries.append(f[2:])
        elif f.startswith("-L"):
            library_dirs.append(f[2:])
        elif f in _REJECTED:
            raise ToolchainError(f"{where}: flag {f} is not allowed here: jitload chooses clang's output itself", path=where)
        else:
            compile_flags.append(f)
        i += 1
    return compile_flags, libraries, library_dirs


def _resolve_libraries(names: List[str], dirs: List[str]) -> List[str]:
    if not names:
        return []
    from .elf import resolve_library

    return list(dict.fromkeys(resolve_library(n, dirs) for n in names))


# -- cache ---------------------------------------------------------------------------------------


def _cache_dir_problem(path: str) -> Optional[str]:
    """Why ``path`` must not hold the cache (None if it may), creating it if needed."""
    import stat

    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError as e:
        return f"it cannot be created ({e.strerror or e})"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != os.getuid():
        return f"it is owned by uid {st.st_uid}, not by this user (uid {os.getuid()})"
    if st.st_mode & 0o022:
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _usable_cache_dir(explicit: Optional[StrPath]) -> Optional[str]:
    path = os.path.abspath(os.fspath(explicit)) if explicit is not None else default_cache_dir()
    problem = _cache_dir_problem(path)
    if problem is None:
        return path
    if path not in _warned_dirs:
        import warnings

        _warned_dirs.add(path)
        warnings.warn(
            f"jitload: not caching compiled C sources in {path}: {problem}; compiling in a temporary directory instead",
            JitloadWarning,
            stacklevel=3,
        )
    return None


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _hash_file(path: str) -> Optional[Tuple[str, int]]:
    """(sha256, mtime in ns) of a file, or None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read()
            mtime = os.fstat(f.fileno()).st_mtime_ns
    except OSError:
        return None
    return _sha256(data), mtime


def _full_key(base: str, deps: List[List[str]]) -> str:
    return _sha256("\n".join([base, *(f"{sha}  {path}" for path, sha in deps)]).encode("utf-8"))


def _lookup(cache: str, base: str) -> Optional[CompiledC]:
    import json

    try:
        with open(os.path.join(cache, base + ".json"), encoding="utf-8") as f:
            manifest = json.load(f)
        deps = [[str(p), str(h)] for p, h in manifest["dependencies"]]
        libraries = [str(x) for x in manifest["libraries"]]
        flags = [str(x) for x in manifest["flags"]]
        key = str(manifest["key"])
        if manifest["format"] != CACHE_FORMAT:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for path, sha in deps:
        now = _hash_file(path)
        if now is None or now[0] != sha:
            return None
    if _full_key(base, deps) != key:
        return None
    bc_path = os.path.join(cache, key + ".bc")
    try:
        with open(bc_path, "rb") as f:
            bitcode = f.read()
    except OSError:
        return None
    if bitcode[:4] not in _BITCODE_MAGIC:
        return None
    return CompiledC(bitcode, bc_path, True, key, [p for p, _ in deps], libraries, flags)


def _write_atomic(path: str, data: bytes) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- compiling -----------------------------------------------------------------------------------


def _run_clang(cmd: List[str], stdin: Optional[bytes]) -> subprocess.CompletedProcess[bytes]:
    """Run clang (the one place it is run for a compile; tests replace it to count compiles)."""
    import subprocess

    try:
        return subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True)
    except OSError as e:
        raise ToolchainError(f"cannot run {cmd[0]}: {e.strerror or e}") from e


def _parse_depfile(text: str, target: str) -> List[str]:
    """The prerequisites of ``target`` in a clang ``-MD`` depfile (Make syntax)."""
    text = text.replace("\\\r\n", " ").replace("\\\n", " ")
    head = target + ":"
    if not text.startswith(head):
        return []
    rest = text[len(head) :].split("\n", 1)[0]
    deps: List[str] = []
    cur: List[str] = []
    i = 0
    while i < len(rest):
        c = rest[i]
        nxt = rest[i + 1] if i + 1 < len(rest) else ""
        if c == "\\" and nxt in (" ", "#"):
            cur.append(nxt)
            i += 2
            continue
        if c == "$" and nxt == "$":
            cur.append("$")
            i += 2
            continue
        if c.isspace():
            if cur:
                deps.append("".join(cur))
                cur = []
        else:
            cur.append(c)
        i += 1
    if cur:
        deps.append("".join(cur))
    return deps


def _build(
    *,
    display: str,
    source_path: Optional[str],
    source: bytes,
    stdin: Optional[bytes],
    identity: List[str],
    flags: List[str],
    opt_level: int,
    include_python: bool,
    use_cache: bool,
    cache_dir: Optional[StrPath],
) -> CompiledC:
    import json
    import shlex
    import shutil
    import tempfile
    import time

    from . import __version__, _clang

    if opt_level not in (0, 1, 2, 3):
        raise ValueError(f"opt_level must be 0, 1, 2 or 3, not {opt_level!r}")
    clang_flags, library_names, library_dirs = _split_link_flags(flags, display)
    clang = _clang.find("clang")
    cmd = [clang, "-c", f"-O{opt_level}"]
    if opt_level == 0:
        cmd += ["-Xclang", "-disable-O0-optnone"]  # let the JIT optimise it at its own level
    cmd += [*_clang.BITCODE_FLAGS, "-fno-color-diagnostics", *clang_flags]
    if include_python:
        cmd += [f"-I{d}" for d in _clang.python_include_dirs()]
    libraries = _resolve_libraries(library_names, library_dirs)
    environment: Dict[str, Optional[str]] = {k: os.environ.get(k) for k in _ENV_KEYS}
    base = _sha256(
        json.dumps(
            ["jitload-csource", CACHE_FORMAT, __version__, clang, _clang.version_text(clang), cmd, libraries, identity, _sha256(source), environment]
        ).encode("utf-8")
    )

    cache = _usable_cache_dir(cache_dir) if use_cache else None
    if cache is not None:
        hit = _lookup(cache, base)
        if hit is not None:
            return hit

    work = tempfile.mkdtemp(prefix=".tmp-", dir=cache) if cache is not None else tempfile.mkdtemp(prefix="jitload-csource-")
    try:
        obj = os.path.join(work, "out.bc")
        depfile = os.path.join(work, "out.d")
        full = [*cmd, "-MD", "-MF", depfile, "-MT", "out", "-o", obj]
        full += ["-x", "c", "-"] if stdin is not None else [source_path or display]
        started = time.time_ns()
        proc = _run_clang(full, stdin)
        diagnostics = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode != 0:
            raise CSourceError(
                f"{display}: clang failed to compile it (exit {proc.returncode}):\n{diagnostics}\ncommand: {shlex.join(full)}",
                diagnostics=diagnostics,
                path=source_path,
            )
        output = obj
        if libraries:
            from . import _native

            output = os.path.join(work, "linked.bc")
            _native.link_bitcode([obj], output, libraries)
        with open(output, "rb") as f:
            bitcode = f.read()
        try:
            with open(depfile, encoding="utf-8", errors="surrogateescape") as f:
                dep_text = f.read()
        except OSError:
            dep_text = ""
        finished = time.time_ns()
        cacheable = cache is not None and bool(dep_text)
        deps: List[List[str]] = []
        for dep in dict.fromkeys(_parse_depfile(dep_text, "out")):
            if dep in ("-", "<stdin>"):
                continue
            path = os.path.abspath(dep)
            if path == source_path:
                continue
            hashed = _hash_file(path)
            if hashed is None:
                cacheable = False
                continue
            deps.append([path, hashed[0]])
            if started < hashed[1] <= finished:
                cacheable = False  # changed while clang read it: the bitcode may not match
        if source_path is not None:
            now = _hash_file(source_path)
            if now is None or now[0] != _sha256(source):
                cacheable = False  # edited while compiling: the bitcode may not match the key
        key = _full_key(base, deps)
        result = CompiledC(bitcode, None, False, key, [p for p, _ in deps], libraries, list(flags), diagnostics)
        if cacheable and cache is not None:
            bc_path = os.path.join(cache, key + ".bc")
            os.replace(output, bc_path)
            manifest = {
                "format": CACHE_FORMAT,
                "key": key,
                "source": identity,
                "flags": list(flags),
                "libraries": libraries,
                "dependencies": deps,
            }
            _write_atomic(os.path.join(cache, base + ".json"), json.dumps(manifest, separators=(",", ":")).encode("utf-8"))
            result.path = bc_path
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
