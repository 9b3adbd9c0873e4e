"""jitload's settings (``JITLOAD_*`` environment variables), parsed once, the way the native
modules parse them.

The table and the parser are those of the ``jitload-options`` crate, which the native modules
use; this module is their Python twin because the import hook needs the values in processes
and interpreters where no native module can load yet (start-up, subinterpreters).
``tests/test_settings.py`` checks that the two agree on every setting and on every kind of
value, so a flag cannot mean one thing here and another there. See ``python -m jitload
options`` for the list with the values in effect.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

    Value = Union[bool, int, float, str]

# (name, kind, argument, default, meaning). Kinds: flag; count (argument: (min, max));
# seconds (argument: (min, max)); choice (argument: ((word, canonical), ...)); text.
_MEMORY_CHOICES = (("auto", "auto"), ("mprotect", "mprotect"), ("dualmap", "dualmap"))
_X86_LEVEL_CHOICES = (("auto", "auto"), ("baseline", "x86-64"), ("v2", "x86-64-v2"), ("v3", "x86-64-v3"), ("v4", "x86-64-v4"))
SETTINGS = (
    ("JITLOAD_DISABLE", "flag", None, "off", "the .pth file does not install the import hook at start-up"),
    ("JITLOAD_PREFER_BITCODE", "flag", None, "off", "a .bc beside a .so wins (default: the .so wins)"),
    ("JITLOAD_C_SOURCE", "flag", None, "off", "`import foo` also finds foo.c, compiled to bitcode with clang 22 and cached"),
    ("JITLOAD_OPT_LEVEL", "count", (0, 3), "2", "optimisation level of JIT compilation (as -O0..-O3)"),
    (
        "JITLOAD_ISOLATION",
        "choice",
        (("fork", "fork"), ("none", "none")),
        "fork",
        "compile untrusted bitcode in a forked child (fork) or in-process (none, still crash-guarded)",
    ),
    (
        "JITLOAD_TIER",
        "choice",
        (("auto", "auto"), ("eager", "eager")),
        "auto",
        "auto: a cold import compiles functions at -O0 when first called and the whole module at the opt level in the background; eager: everything before import returns",
    ),
    ("JITLOAD_CACHE", "flag", None, "on", "use the persistent object cache"),
    ("JITLOAD_CACHE_DIR", "text", None, "", "where the object cache lives (default $XDG_CACHE_HOME/jitload or ~/.cache/jitload)"),
    ("JITLOAD_CACHE_MAX_MB", "count", (1, 1 << 40), "2048", "size bound of the object cache in MB"),
    ("JITLOAD_FASTLOAD", "flag", None, "on", "link cached objects with jitload's LLVM-free loader (off: through LLVM's ORC)"),
    ("JITLOAD_FAST", "flag", None, "on", "typed calls through copy-and-patch wrappers (off: ctypes)"),
    ("JITLOAD_DEBUGGER", "flag", None, "off", "register JIT'd code with gdb (GDB JIT interface)"),
    ("JITLOAD_PERF_MAP", "flag", None, "off", "append JIT'd functions to /tmp/perf-<pid>.map for perf"),
    (
        "JITLOAD_TUNE_CPU",
        "choice",
        (("generic", "generic"), ("host", "host"), ("native", "host")),
        "generic",
        "tune code for the host CPU (host) or LLVM's generic x86-64 model (generic); the host's instructions are used either way",
    ),
    (
        "JITLOAD_X86_LEVEL",
        "choice",
        _X86_LEVEL_CHOICES,
        "auto",
        "the highest x86-64 level whose bitcode variant a module may load (auto: the host's; baseline, v2, v3, v4)",
    ),
    (
        "JITLOAD_BUILD_LEVELS",
        "choice",
        (("v3", "v3"), ("all", "all"), ("none", "none")),
        "v3",
        "x86-64 levels the build tools compile besides the baseline: v3, all (v2, v3, v4) or none",
    ),
    ("JITLOAD_CODEGEN_THREADS", "count", (1, 8), "", "threads for code generation of large modules (default: the cores, at most 8)"),
    ("JITLOAD_COMPILE_TIMEOUT_S", "seconds", (0.1, 1e9), "600", "how long an isolated compile may run before it is stopped"),
    ("JITLOAD_COMPILE_MEMORY_MB", "count", (1, 1 << 30), "1024", "address space the compiler child may add"),
    ("JITLOAD_COMPILER_STDERR", "flag", None, "off", "let the compiler child write to the interpreter's stderr (default: captured)"),
    (
        "JITLOAD_CODE_MEMORY",
        "choice",
        _MEMORY_CHOICES,
        "auto",
        "how code memory is made executable: mprotect, a dual mapping (for hosts that forbid it), or auto (mprotect, dual mapping once refused)",
    ),
    ("JITLOAD_STENCIL_MEMORY", "choice", _MEMORY_CHOICES, "auto", "deprecated name of JITLOAD_CODE_MEMORY"),
    ("JITLOAD_STENCIL_POOL", "flag", None, "on", "small stencil code blocks share pages"),
    ("JITLOAD_STENCIL_RELAX_CALLS", "flag", None, "on", "stencils call helpers directly rather than through a GOT"),
    ("JITLOAD_LIBLLVM", "text", None, "", "the libLLVM 22 file to load (default: the environment's, then the system's)"),
    ("JITLOAD_CLANG", "text", None, "", "the clang 22 the build tools and C-source imports run"),
    ("JITLOAD_CLANGXX", "text", None, "", "the clang++ 22 the build tools run"),
)

_BY_NAME = {s[0]: s for s in SETTINGS}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse(name: str, raw: str) -> "Optional[Value]":
    """``raw`` as setting ``name``'s kind; None for an empty value (not set). ValueError says
    what was expected; KeyError for a name that is not a setting."""
    entry = _BY_NAME[name]
    kind = entry[1]
    arg: "Any" = entry[2]  # its shape depends on the kind (see SETTINGS)
    text = raw.strip()
    if not text:
        return None
    lower = text.lower()
    if kind == "flag":
        if lower in _TRUE or lower in _FALSE:
            return lower in _TRUE
        raise ValueError("expected 1/0, on/off, true/false or yes/no")
    if kind == "count":
        low, high = arg
        if text.isdigit() and text.isascii() and low <= int(text) <= high:
            return int(text)
        raise ValueError(f"expected a whole number from {low} to {high}")
    if kind == "seconds":
        try:
            seconds = float(text)
        except ValueError:
            seconds = float("nan")
        low, high = arg
        if low <= seconds <= high:
            return seconds
        raise ValueError(f"expected a number of seconds from {_number(low)} to {_number(high)}")
    if kind == "choice":
        for word, canonical in arg:
            if word == lower:
                return str(canonical)
        raise ValueError("expected one of " + ", ".join(w for w, _ in arg))
    return text


def _number(x: float) -> str:
    # As Rust prints an f64: 0.1, 1000000000.
    return str(int(x)) if x == int(x) else repr(x)


def suggest(name: str) -> "Optional[str]":
    """The setting an unknown ``name`` is a typo of (at most two edits away), for "did you
    mean". Farther names are not ours: build scripts and test harnesses have ``JITLOAD_*``
    variables too."""
    best = min(((_distance(s[0], name), s[0]) for s in SETTINGS), default=(99, ""))
    return best[1] if best[0] <= 2 else None


def _distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a):
        diagonal, row[0] = row[0], i + 1
        for j, cb in enumerate(b):
            above = row[j + 1]
            row[j + 1] = min(above + 1, row[j] + 1, diagonal + (ca != cb))
            diagonal = above
    return row[len(b)]


def read(environ: "Mapping[str, str]") -> "Tuple[Dict[str, Value], Dict[str, str], List[str]]":
    """Every setting's value (defaults included; none for a setting with no default and no
    value), the ones given (as given) and the problems (one sentence each, naming the variable)."""
    problems: List[str] = []
    # A name close to a setting's is a typo worth a warning; other JITLOAD_* names belong to
    # build scripts and test harnesses.
    for name in sorted(environ):
        if name.startswith("JITLOAD_") and name not in _BY_NAME:
            hint = suggest(name)
            if hint:
                problems.append(f"{name} is not a jitload setting (did you mean {hint}?); ignored")
    values: Dict[str, Value] = {}
    given: Dict[str, str] = {}
    for name, _, _, default, _ in SETTINGS:
        value = None
        raw = environ.get(name)
        if raw is not None:
            try:
                value = parse(name, raw)
            except ValueError as e:
                shown = f" ({default})" if default else ""
                problems.append(f'{name}="{raw}" is not valid: {e}; using the default{shown}')
            else:
                if value is not None:
                    given[name] = raw.strip()
        if value is None:
            value = parse(name, default)
        if value is not None:
            values[name] = value
    return values, given, problems


def read_environment() -> "Tuple[Dict[str, Value], Dict[str, str], List[str]]":
    """:func:`read` of this process's environment."""
    return read(os.environ)


def cache_dir(environ: "Mapping[str, str]") -> "Optional[str]":
    """The object cache's directory: ``$JITLOAD_CACHE_DIR``, else ``$XDG_CACHE_HOME/jitload``,
    else ``$HOME/.cache/jitload`` (empty variables count as unset; a relative
    ``XDG_CACHE_HOME`` is ignored, as the XDG specification says); None if none is set."""
    own = environ.get("JITLOAD_CACHE_DIR", "").strip()
    if own:
        return os.path.abspath(own)
    xdg = environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "jitload")
    home = environ.get("HOME", "")
    return os.path.join(home, ".cache", "jitload") if home else None
