"""C function signatures as strings: ``"int64(int64, int64)"``, ``"double(ptr, size_t)"``.

The grammar is ``RESULT "(" [ARG {"," ARG}] ")"`` where each type is one of the names in
:data:`TYPES` (``void`` only as a result, or alone as ``f(void)``). Whitespace is free; an
argument may carry a name (``"int64(int64 a, int64 b)"``), which is ignored.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Type

__all__ = ["Signature", "TYPES", "parse"]

_INT_TYPES: Dict[str, Tuple[Any, int, int]] = {}


def _int(name: str, ctype: Any, signed: bool) -> None:
    bits = ctypes.sizeof(ctype) * 8
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    _INT_TYPES[name] = (ctype, lo, hi)


for _bits, _s, _u in (
    (8, ctypes.c_int8, ctypes.c_uint8),
    (16, ctypes.c_int16, ctypes.c_uint16),
    (32, ctypes.c_int32, ctypes.c_uint32),
    (64, ctypes.c_int64, ctypes.c_uint64),
):
    _int(f"int{_bits}", _s, True)
    _int(f"uint{_bits}", _u, False)
for _name, _ctype, _signed in (
    ("char", ctypes.c_char, True),
    ("schar", ctypes.c_byte, True),
    ("uchar", ctypes.c_ubyte, False),
    ("short", ctypes.c_short, True),
    ("ushort", ctypes.c_ushort, False),
    ("int", ctypes.c_int, True),
    ("uint", ctypes.c_uint, False),
    ("long", ctypes.c_long, True),
    ("ulong", ctypes.c_ulong, False),
    ("longlong", ctypes.c_longlong, True),
    ("ulonglong", ctypes.c_ulonglong, False),
    ("size_t", ctypes.c_size_t, False),
    ("ssize_t", ctypes.c_ssize_t, True),
    ("intptr_t", ctypes.c_ssize_t, True),
    ("uintptr_t", ctypes.c_size_t, False),
):
    if _name == "char":
        _int(_name, ctypes.c_byte, True)  # a small integer, not bytes
    else:
        _int(_name, _ctype, _signed)

#: Every type name a signature may use, with its ctypes type (None for void).
TYPES: Dict[str, Optional[Any]] = {name: spec[0] for name, spec in _INT_TYPES.items()}
TYPES.update(
    {
        "void": None,
        "bool": ctypes.c_bool,
        "float": ctypes.c_float,
        "double": ctypes.c_double,
        "ptr": ctypes.c_void_p,
        "buffer": ctypes.c_void_p,
        "pyobject": ctypes.py_object,
    }
)
_ALIASES = {"i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64", "u8": "uint8", "u16": "uint16",
            "u32": "uint32", "u64": "uint64", "f32": "float", "f64": "double", "void*": "ptr", "char*": "ptr",
            "PyObject*": "pyobject", "_Bool": "bool"}


class Signature(NamedTuple):
    """A parsed signature: type names (canonical) of the result and the arguments."""

    result: str
    args: Tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.result}({', '.join(self.args)})"

    def ctypes_prototype(self) -> Type[Any]:
        """A ``ctypes.CFUNCTYPE`` for this signature (releases the GIL around calls)."""
        args: List[Any] = [TYPES[a] for a in self.args]
        return ctypes.CFUNCTYPE(TYPES[self.result], *args)

    def int_range(self, type_name: str) -> Optional[Tuple[int, int]]:
        """(min, max) for an integer type name, else None."""
        spec = _INT_TYPES.get(type_name)
        return (spec[1], spec[2]) if spec else None


def _type_name(text: str, where: str, full: str, allow_void: bool) -> str:
    words = text.split()
    if not words:
        raise ValueError(f"signature {full!r}: missing type in {where}")
    name = words[0]
    if len(words) == 2 and words[1] == "*":
        name = name + "*"
        words = [name]
    elif len(words) > 2 or (len(words) == 2 and not words[1].isidentifier()):
        raise ValueError(f"signature {full!r}: cannot read {text.strip()!r} in {where}")
    name = _ALIASES.get(name, name)
    if name not in TYPES:
        known = ", ".join(sorted(TYPES))
        raise ValueError(f"signature {full!r}: unknown type {words[0]!r} in {where} (known: {known})")
    if name == "void" and not allow_void:
        raise ValueError(f"signature {full!r}: void is only allowed as the result or as '(void)'")
    return name


def parse(text: str) -> Signature:
    """Parse ``"result(arg, ...)"``. Raises ValueError naming what is wrong."""
    if not isinstance(text, str):
        raise TypeError(f"a signature is a str like 'int64(int64, int64)', not {type(text).__name__}")
    full = text
    text = text.strip()
    open_at = text.find("(")
    if open_at < 0 or not text.endswith(")") or text.count("(") != 1 or text.count(")") != 1:
        raise ValueError(f"signature {full!r}: expected 'result(arg, ...)', e.g. 'int64(int64, int64)'")
    result = _type_name(text[:open_at], "the result", full, allow_void=True)
    inner = text[open_at + 1 : -1].strip()
    args: List[str] = []
    if inner and inner != "void":
        for i, part in enumerate(inner.split(",")):
            args.append(_type_name(part, f"argument {i + 1}", full, allow_void=False))
    return Signature(result, tuple(args))
