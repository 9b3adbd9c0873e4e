"""What a wheel of bitcode extension modules declares so that pip installs it exactly where
it can run: ``Requires-Dist: jitload`` (a version range) and a platform tag.

The platform tag is decided as auditwheel decides a ``.so``'s, with auditwheel's own
manylinux policies: the C library symbols a module will bind to at JIT-link time (the
functions its optimised IR declares and its code calls through the PLT/GOT), each taken at
the version the host's library defines by default — the version a static link here would
record — must all be in a policy's symbol versions, and every library the module names
(``!llvm.dependent-libraries``) must be in the policy's whitelist. The most compatible
policy that holds gives ``manylinux_2_X_<arch>``; without auditwheel (``pip install
"jitload[build]"`` brings it) or when no policy holds, the tag stays the build's own
(``linux_<arch>``, installable on this kind of host only). The Python and ABI tags are the
build's (setuptools' ``cp311-cp311``, or ``cp3X-abi3`` for limited-API modules): the
interpreter a bitcode module is compiled against is the one that built it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from . import __version__

#: Libraries whose symbol versions count (what the JIT's process scope binds C code to).
SYSTEM_LIBRARIES = ("libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libgcc_s.so.1")

_DECLARE = re.compile(r"^declare\b[^@]*@(\"[^\"]+\"|[\w.$]+)\(", re.M)
_EXTERNAL_GLOBAL = re.compile(r"^@(\"[^\"]+\"|[\w.$]+) = external\b", re.M)
_CALL_THROUGH = re.compile(r"\b([A-Za-z_][\w.$]*)@(?:PLT|GOTPCREL)\b")
# Intrinsics the code generator lowers to these C library calls.
_INTRINSIC_CALLS = {"llvm.memcpy": "memcpy", "llvm.memmove": "memmove", "llvm.memset": "memset"}


def requirement() -> str:
    """The jitload versions that load this jitload's bitcode modules: this one up to the next
    release that may change the module ABI (the next minor while at 0.x, else the next major)."""
    parts = [int(p) for p in re.findall(r"\d+", __version__)[:2]]
    upper = f"0.{parts[1] + 1}" if parts[0] == 0 else f"{parts[0] + 1}"
    return f"jitload>={__version__},<{upper}"


def external_symbols(path: str) -> Set[str]:
    """The symbols ``path``'s compiled code needs from outside the module."""
    import jitload

    code = jitload.inspect(path)
    names: Set[str] = set()
    for match in (*_DECLARE.finditer(code["ir"]), *_EXTERNAL_GLOBAL.finditer(code["ir"])):
        name = match.group(1).strip('"')
        if name.startswith("llvm."):
            name = next((call for prefix, call in _INTRINSIC_CALLS.items() if name.startswith(prefix + ".")), "")
        if name:
            names.add(name)
    names.update(_CALL_THROUGH.findall(code["asm"]))
    return names


def _default_versions(library_path: str) -> Dict[str, str]:
    """symbol -> the version a link against ``library_path`` records (its default version)."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerDefSection, GNUVerSymSection
    from elftools.elf.sections import SymbolTableSection

    versions: Dict[str, str] = {}
    with open(library_path, "rb") as f:
        elf = ELFFile(f)
        dynsym = elf.get_section_by_name(".dynsym")
        versym = elf.get_section_by_name(".gnu.version")
        verdef = elf.get_section_by_name(".gnu.version_d")
        if not isinstance(dynsym, SymbolTableSection) or not isinstance(versym, GNUVerSymSection) or not isinstance(verdef, GNUVerDefSection):
            return versions
        names = {}
        for definition, aux in verdef.iter_versions():
            names[definition["vd_ndx"]] = next(aux).name
        for i, symbol in enumerate(dynsym.iter_symbols()):
            if symbol["st_shndx"] == "SHN_UNDEF" or not symbol.name:
                continue
            index = versym.get_symbol(i)["ndx"]
            if not isinstance(index, int) or index & 0x8000:  # local/global or a hidden old version
                continue
            if index in names and index > 1:
                versions[symbol.name] = names[index]
    return versions


def required_versions(symbols: Iterable[str], libraries: Iterable[str]) -> Dict[str, Set[str]]:
    """soname -> the symbol versions ``symbols`` bind to in ``libraries`` (loaded here to
    find the files the dynamic linker would use)."""
    from ._llvm import opened_path

    wanted = set(symbols)
    found: Dict[str, Set[str]] = {}
    for soname in dict.fromkeys(libraries):
        path = opened_path(soname)
        if path is None:
            continue
        defined = _default_versions(path)
        for name in wanted & defined.keys():
            found.setdefault(soname, set()).add(defined[name])
        wanted -= defined.keys()
    return found


def platform_tag(modules: Iterable[str], dependent_libraries: Iterable[str], fallback: str) -> Tuple[str, str]:
    """(the platform tag for a wheel of bitcode ``modules``, why). ``fallback`` is the build's."""
    try:
        # auditwheel ships no type information.
        from auditwheel.architecture import Architecture  # type: ignore[import-untyped,unused-ignore]
        from auditwheel.libc import Libc  # type: ignore[import-untyped,unused-ignore]
        from auditwheel.policy import WheelPolicies  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return fallback, "auditwheel is not installed (pip install 'jitload[build]')"
    machine = os.uname().machine
    try:
        policies = WheelPolicies(libc=Libc.GLIBC, arch=Architecture(machine))
    except ValueError as e:
        return fallback, f"no manylinux policies for {machine}: {e}"
    symbols: Set[str] = set()
    for path in modules:
        symbols |= external_symbols(path)
    libraries = list(dict.fromkeys([*dependent_libraries, *SYSTEM_LIBRARIES]))
    versions = required_versions(symbols, libraries)
    used = sorted({v for vs in versions.values() for v in vs}, key=_version_key)
    # Most compatible first, as auditwheel ranks them; "linux" (any) is the fallback.
    problem = "no manylinux policies"
    for policy in sorted(policies, key=lambda p: -p.priority):
        if policy.name.startswith("linux"):
            continue
        found = _policy_problem(policy, used, set(dependent_libraries), symbols)
        if found is None:
            return policy.name, f"newest symbol version used: {used[-1] if used else 'none'}"
        problem = found
    return fallback, f"no manylinux policy allows them ({problem})"


def _policy_problem(policy: Any, used: List[str], libraries: Set[str], symbols: Set[str]) -> Optional[str]:
    """Why a module using symbol versions ``used``, ``libraries`` and ``symbols`` does not
    meet an auditwheel policy, or None if it does."""
    for version in used:
        family, _, number = version.partition("_")
        allowed = policy.symbol_versions.get(family)
        if allowed is not None and number not in allowed:
            return f"{version} is newer than {policy.name} allows"
    unlisted = sorted(libraries - policy.whitelist)
    if unlisted:
        return f"{', '.join(unlisted)} not allowed"
    for library, names in policy.blacklist.items():
        if library in libraries and symbols & names:
            return f"{', '.join(sorted(symbols & names))} from {library} not allowed"
    return None


def _version_key(version: str) -> Tuple[str, List[int]]:
    name, _, number = version.partition("_")
    return name, [int(n) for n in re.findall(r"\d+", number)]


def retag(wheel_name: str, tags: List[str], platform: str) -> Tuple[str, List[str]]:
    """The wheel's file name and ``Tag:`` values with the platform tag replaced."""
    stem = wheel_name[: -len(".whl")]
    head, _, _old = stem.rpartition("-")
    new_tags = list(dict.fromkeys(f"{t.rsplit('-', 1)[0]}-{platform}" for t in tags))
    return f"{head}-{platform}.whl", new_tags


def with_requirement(metadata: str) -> str:
    """METADATA text with ``Requires-Dist: jitload...`` added (unless jitload is required)."""
    if re.search(r"^Requires-Dist:\s*jitload\b", metadata, re.M | re.I):
        return metadata
    headers, sep, body = metadata.partition("\n\n")
    return f"{headers.rstrip()}\nRequires-Dist: {requirement()}\n{sep or chr(10)}{body}"


def wheel_tags(wheel_text: str) -> List[str]:
    return [line.split(":", 1)[1].strip() for line in wheel_text.splitlines() if line.startswith("Tag:")]


def with_tags(wheel_text: str, tags: List[str]) -> str:
    """WHEEL text with its ``Tag:`` lines replaced by ``tags``."""
    lines = [line for line in wheel_text.splitlines() if not line.startswith("Tag:")]
    return "\n".join([*lines, *(f"Tag: {t}" for t in tags)]) + "\n"

