# jitload's start-up hook, run by ``jitload.pth`` in every interpreter of the environment.
#
# It makes ``import`` find bitcode extension modules while importing nothing: not even the
# ``jitload`` package (about a millisecond of imports), let alone LLVM. The interpreter's
# FileFinder path hook is replaced by one that also knows the bitcode suffixes; their loader
# is a factory that imports jitload.importer only when a bitcode (or C-source) file is
# actually found. jitload.install() later replaces this hook with its own (same suffixes,
# same order) and jitload.uninstall() restores `replaced`.
#
# Every interpreter pays for this module, so it is kept small and cheap (benchmarks/results.md,
# "startup"; measured with callgrind, whose instruction counts do not depend on machine load):
# - comments, not docstrings: docstrings go into the .pyc, which is read and unmarshalled at
#   every start-up;
# - a top-level module, not jitload._startup: a submodule would import the package first;
# - no module-level reference to `os`: this module's functions stay referenced by the path
#   hook and the finders until late in interpreter shutdown, and a module they keep alive
#   (os pulls in stat, genericpath, _abc) is then wiped entry by entry instead of being
#   collected: about 0.5 M instructions, 1.3% of `python -c pass`, at every exit;
# - few objects: `python -c pass` ends about a hundred allocations short of the collector's
#   first young-generation threshold, and one more pass costs ~0.3 M instructions (1% of the
#   wall time). Hence type comments rather than annotations (an annotated function allocates a
#   tuple), and the finders' own machinery in a module of its own, _jitload_finder, imported
#   when the hook is first asked for a finder (see put);
# - importing it installs the hook (see the end), so that jitload.pth is one short line: site
#   compiles it each time it reads the file, and a venv makes it read the file twice.

import sys

from _frozen_importlib_external import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    ExtensionFileLoader,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
    spec_from_file_location,
)
from _frozen_importlib import module_from_spec
from posix import environ as _environ

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Tuple

    Details = Tuple[Any, List[str]]  # FileFinder's (loader, suffixes)
    Loaders = List[Tuple[str, Any]]  # FileFinder's `_loaders`: (suffix, loader)

# Suffixes the hook looks for, most specific first: the interpreter's own extension suffixes
# with `.so` turned into `.bc`, then `.abi3.bc`, `.bc` and textual `.ll`.
BITCODE_SUFFIXES = list(
    dict.fromkeys([s[:-3] + ".bc" for s in EXTENSION_SUFFIXES if s.endswith(".so")] + [".abi3.bc", ".bc", ".ll"])
)  # type: List[str]

# Suffixes of C sources the hook compiles when `c_source` is on (after every other kind).
C_SOURCE_SUFFIXES = [".c"]  # type: List[str]

# The interpreter's own FileFinder hook, which the first jitload hook replaced.
replaced = None  # type: Optional[Callable[..., Any]]


def env_flag(name):  # type: (str) -> bool
    # os.environ keeps its data in posix.environ (bytes), which this reads without os.environ's
    # Python-level decoding; setting os.environ[...] updates both.
    return _environ.get(name.encode(), b"").strip().lower() in (b"1", b"true", b"yes", b"on")


def loader_details(prefer_bitcode, c_source, bitcode, c_loader):  # type: (bool, bool, Any, Any) -> List[Details]
    # FileFinder's (loader, suffixes) pairs: native or bitcode first, then Python source and
    # bytecode, then (when on) C source.
    native: "Details" = (ExtensionFileLoader, EXTENSION_SUFFIXES)
    jit: "Details" = (bitcode, BITCODE_SUFFIXES)
    first = [jit, native] if prefer_bitcode else [native, jit]
    c: "List[Details]" = [(c_loader, C_SOURCE_SUFFIXES)] if c_source else []
    return first + [(SourceFileLoader, SOURCE_SUFFIXES), (SourcelessFileLoader, BYTECODE_SUFFIXES)] + c


def _bitcode_loader(fullname, path):  # type: (str, str) -> Any
    from jitload.importer import BitcodeExtensionLoader

    return BitcodeExtensionLoader(fullname, path)


def _c_source_loader(fullname, path):  # type: (str, str) -> Any
    from jitload.importer import CSourceLoader

    return CSourceLoader(fullname, path)


def put(details, adopt_now=True):  # type: (List[Details], bool) -> None
    # Puts a FileFinder hook with `details` in place of the FileFinder hook (the interpreter's
    # or a jitload one), and gives the finders it already made the same loaders. Those keep the
    # directory listing they hold: a new finder would list its directory again at the next
    # import, which costs more at start-up than everything else this hook does. Paths no hook
    # could handle (None entries) stay: a jitload hook accepts exactly the directories
    # FileFinder's own hook accepts.
    #
    # At start-up (`adopt_now` false) each finder is only given every suffix, which is all
    # `python -c pass` needs; their adoption by _jitload_finder, which makes imports of ordinary
    # modules cheaper, waits for the hook's second call (see hook): a program that imports from
    # new directories has imports that repay it.
    global replaced, _pending
    make_finder = FileFinder.path_hook(*details)
    loaders = [(suffix, loader) for loader, suffixes in details for suffix in suffixes]

    def hook(path):  # type: (str) -> Any
        global _deferred
        finder = make_finder(path)  # ImportError for anything but a directory, as FileFinder's
        if _pending is not None:
            if _deferred:
                # The first new directory after start-up still gets every suffix (a finder from
                # make_finder has them all): CPython 3.13's `python -c` imports linecache through
                # the '' entry, and a program that stops there does not repay the adoption.
                _deferred = False
                return finder
            machinery = _finder_module()
            _adopt_pending(machinery.adopt_all)  # (the deferred first finder included)
        else:
            machinery = _finder_module()
        machinery.adopt(finder, loaders)
        return finder

    hook._jitload = True  # type: ignore[attr-defined]
    for i, existing in enumerate(sys.path_hooks):
        jitload_hook = getattr(existing, "_jitload", False)
        if jitload_hook or getattr(existing, "__name__", "") == "path_hook_for_FileFinder":
            if not jitload_hook:
                replaced = existing
            sys.path_hooks[i] = hook
            break
    else:
        sys.path_hooks.append(hook)
    _pending = None
    if adopt_now:
        _finder_module().adopt_all(loaders)
        return
    for key in list(sys.path_importer_cache):  # (keys only: every object counts, see the top)
        finder = sys.path_importer_cache[key]
        if isinstance(finder, FileFinder) and isinstance(getattr(finder, "_loaders", None), list):
            finder._loaders = loaders  # type: ignore[attr-defined]
    _pending = loaders


# The loaders of the finders the start-up hook found already made, which it has not adopted
# yet, and whether the hook's next call is its first (see put).
_pending = None  # type: Optional[Loaders]
_deferred = True


def forget():  # type: () -> None
    # Drops the FileFinders made so far (the jitload hook's or given its loaders), so that the
    # hook now in place (the interpreter's own, after jitload.uninstall()) makes new ones.
    global _pending
    _pending = None
    for key in list(sys.path_importer_cache):
        if isinstance(sys.path_importer_cache[key], FileFinder):
            del sys.path_importer_cache[key]


def _adopt_pending(adopt_all):  # type: (Callable[[Loaders], None]) -> None
    global _pending
    pending, _pending = _pending, None
    if pending is not None:
        adopt_all(pending)


def _finder_module():  # type: () -> Any
    # _jitload_finder, loaded from beside this file rather than imported: an import would search
    # sys.path, whose entry the hook is being asked about has no finder yet, and ask the hook
    # again. (Two threads may both load it; either copy does the same.)
    module = sys.modules.get("_jitload_finder")
    if module is None:
        spec = spec_from_file_location("_jitload_finder", __file__.rpartition("/")[0] + "/_jitload_finder.py")
        if spec is None or spec.loader is None:
            raise ImportError("jitload: _jitload_finder.py has no loader")
        module = module_from_spec(spec)
        sys.modules["_jitload_finder"] = module
        spec.loader.exec_module(module)
    return module


def install():  # type: () -> None
    # Installs the start-up hook with the options of the environment (JITLOAD_PREFER_BITCODE,
    # JITLOAD_C_SOURCE), unless JITLOAD_DISABLE is set or a jitload hook is already in place.
    if env_flag("JITLOAD_DISABLE") or any(getattr(h, "_jitload", False) for h in sys.path_hooks):
        return
    put(loader_details(env_flag("JITLOAD_PREFER_BITCODE"), env_flag("JITLOAD_C_SOURCE"), _bitcode_loader, _c_source_loader), adopt_now=False)


# jitload.pth imports this module at start-up, before anything has imported the jitload
# package; the package imports it too (for the suffixes and put()), and installs its own hook
# only when asked to.
if "jitload" not in sys.modules:
    install()
