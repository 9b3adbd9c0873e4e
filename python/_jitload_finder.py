# The finders jitload's import hooks make or take over (see _jitload_hook): the interpreter's
# FileFinders with two changes made by adopt(). FileFinder's own lookup tries only the
# interpreter's suffixes, and their `find_spec` (an instance attribute, which PathFinder calls)
# first looks for a bitcode or C-source file in the directory listing; only a name that has
# one, or a subdirectory holding a bitcode `__init__` (a package), goes on to pick the winner
# among all suffixes, in the order FileFinder would try them.
#
# This is what keeps installing jitload from slowing the imports of ordinary modules: with every
# suffix given to FileFinder, each lookup made a path join and a debug-message call per bitcode
# suffix, and each package import a failed stat per suffix: an import-heavy start-up (28
# stdlib packages, 247 modules) ran 2.6% more instructions than without jitload; with adopted
# finders, 1.3%. Measured with callgrind, whose counts do not depend on machine load.
#
# Design notes:
# - not a FileFinder subclass: defining one in the start-up hook cost ~0.3 M instructions (the
#   class and the collector pass its objects tipped), as much as loading the whole hook; and a
#   module of its own, loaded by the hook's second call (see _jitload_hook.put), so that a
#   process that imports from at most one new directory (`python -c pass`; on 3.13 its `-c`
#   imports linecache through the `''` entry) does not load it at all;
# - nothing is switched per lookup (FileFinder reads `_loaders` while it works), so concurrent
#   lookups in one directory cannot see each other's choice; finders made before are replaced
#   by adopted copies rather than changed under a lookup that may be under way;
# - case-sensitive names only: jitload runs on Linux.

import sys

import _frozen_importlib_external as _bootstrap_external
from _frozen_importlib_external import BYTECODE_SUFFIXES, EXTENSION_SUFFIXES, SOURCE_SUFFIXES, FileFinder

from _jitload_hook import BITCODE_SUFFIXES, C_SOURCE_SUFFIXES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import AbstractSet, Any, List, Optional, Tuple

    Loaders = List[Tuple[str, Any]]  # FileFinder's `_loaders`: (suffix, loader)

_JIT_SUFFIXES = frozenset(BITCODE_SUFFIXES + C_SOURCE_SUFFIXES)
_JIT_INITS = frozenset("__init__" + suffix for suffix in _JIT_SUFFIXES)
_KNOWN_INITS = frozenset("__init__" + suffix for suffix in SOURCE_SUFFIXES + BYTECODE_SUFFIXES + EXTENSION_SUFFIXES)
_path_join = _bootstrap_external._path_join  # type: ignore[attr-defined]
_path_isfile = _bootstrap_external._path_isfile  # type: ignore[attr-defined]
_listdir = _bootstrap_external._os.listdir  # type: ignore[attr-defined]

# The interpreter's suffixes of the last `loaders` given to adopt(), which all finders share.
_plain = ([], [])  # type: Tuple[Loaders, Loaders]


def adopt(finder: "Any", loaders: "Loaders") -> None:
    """Gives `finder` the lookup described above for `loaders` (every suffix, in FileFinder's
    order), which becomes its `_all_loaders`."""
    global _plain
    if _plain[0] is not loaders:
        _plain = (loaders, [entry for entry in loaders if entry[0] not in _JIT_SUFFIXES])
    finder._all_loaders = loaders
    finder._loaders = _plain[1]
    finder.find_spec = _find_spec.__get__(finder)


def adopt_all(loaders: "Loaders") -> None:
    """Replaces every FileFinder in `sys.path_importer_cache` by an adopted copy with the same
    directory listing (a new finder would list its directory again). Another library's
    FileFinder subclass is kept, and only given every suffix: a copy would lose what it adds."""
    for key in list(sys.path_importer_cache):
        finder = sys.path_importer_cache[key]
        if not isinstance(finder, FileFinder) or not isinstance(getattr(finder, "_loaders", None), list):
            continue
        if type(finder) is not FileFinder:
            finder._loaders = loaders  # type: ignore[attr-defined]
        else:
            copy = FileFinder(finder.path)
            for name in ("_path_mtime", "_path_cache", "_relaxed_path_cache"):
                setattr(copy, name, getattr(finder, name))
            adopt(copy, loaders)
            sys.path_importer_cache[key] = copy


def _find_spec(finder: "Any", fullname: str, target: "Any" = None) -> "Any":
    spec = _jit_spec(finder, fullname, target)
    if spec is None:
        listed = finder._path_mtime
        spec = FileFinder.find_spec(finder, fullname, target)
        if finder._path_mtime != listed:
            # FileFinder listed the directory again (it had changed): decide again with that.
            spec = _jit_spec(finder, fullname, target) or spec
    return spec


def _jit_spec(finder: "Any", fullname: str, target: "Any") -> "Any":
    # The spec of a bitcode or C-source file if one wins for `fullname`, else None, from the
    # listing as it is (see _find_spec).
    tail = fullname.rpartition(".")[2]
    cache = finder._path_cache
    if tail in cache:
        # Perhaps a package, which wins over a module file when it has an `__init__`.
        base = _path_join(finder.path, tail)
        try:
            names = set(_listdir(base))
        except OSError:
            names = set()
        if not _JIT_INITS.isdisjoint(names):
            return _winner(finder, fullname, "__init__", names, base, [base], target)
        if not _KNOWN_INITS.isdisjoint(names):
            return None  # a package FileFinder finds
    for suffix in _JIT_SUFFIXES:
        if tail + suffix in cache:
            return _winner(finder, fullname, tail, cache, finder.path, None, target)
    return None


def _winner(
    finder: "Any", fullname: str, stem: str, names: "AbstractSet[str]", directory: str, search: "Optional[List[str]]", target: "Any"
) -> "Any":
    # The first suffix, in FileFinder's order, whose file `names` holds: its spec if it is a
    # bitcode or C-source file, None (FileFinder finds it) otherwise.
    for suffix, loader in finder._all_loaders:
        if stem + suffix in names:
            if suffix not in _JIT_SUFFIXES:
                return None
            path = _path_join(directory, stem + suffix)
            if _path_isfile(path):
                return finder._get_spec(loader, fullname, path, search, target)
    return None
