"""Generated LLVM IR for the engine benchmarks and the stress run, with a Python model of
every generated function so results can be checked.

Each generated function is ``i64 NAME(i64 %x)``: a loop of ``trips`` iterations (straight
-line code when ``trips`` is 0) over a seeded chain of arithmetic (mul/add/xor/shift-xor) and, for most functions, a call to the
previous function of the module on the way out. ``expected(spec, x)`` computes the same in
Python (two's-complement 64-bit arithmetic).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

MASK = (1 << 64) - 1


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    ops: Tuple[Tuple[str, int], ...]  # (op, constant): "mul", "add", "xor", "xori" (xor loop index), "shx" (a ^ (a >> c))
    trips: int
    callee: Optional[str]  # called with the loop result; its result is added to it


def _ops(rng: random.Random, chain: int) -> Tuple[Tuple[str, int], ...]:
    ops = []
    for _ in range(chain):
        kind = rng.choice(("mul", "add", "xor", "xori", "shx"))
        if kind == "mul":
            ops.append((kind, rng.randrange(3, 1 << 31) | 1))
        elif kind == "shx":
            ops.append((kind, rng.randrange(1, 63)))
        elif kind == "xori":
            ops.append((kind, 0))
        else:
            ops.append((kind, rng.randrange(1, 1 << 40)))
    return tuple(ops)


def specs(count: int, *, prefix: str = "f", chain: int = 8, trips: int = 4, call_every: int = 4, seed: int = 0) -> List[FunctionSpec]:
    """``count`` functions named ``{prefix}{i}``. Function i calls function i-1 unless
    ``i % call_every == 0`` (so call chains are at most ``call_every - 1`` deep)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        callee = f"{prefix}{i - 1}" if call_every and i % call_every != 0 else None
        out.append(FunctionSpec(f"{prefix}{i}", _ops(rng, chain), trips, callee))
    return out


def function_ir(spec: FunctionSpec, *, extra_add: int = 0, linkage: str = "") -> str:
    """The IR of one function. ``extra_add`` is added to the result (the stress run encodes
    versions with it)."""
    lines = [f"define {linkage}i64 @{spec.name}(i64 %x) {{", "entry:"]
    looped = spec.trips > 0
    if looped:
        lines += ["  br label %loop", "loop:"]
        lines.append("  %i = phi i64 [ 0, %entry ], [ %i.next, %loop ]")
        lines.append(f"  %a0 = phi i64 [ %x, %entry ], [ %a{len(spec.ops)}, %loop ]")
    else:
        lines.append("  %a0 = add i64 %x, 0")
    for k, (op, c) in enumerate(spec.ops, start=1):
        prev = f"%a{k - 1}"
        if op == "mul":
            lines.append(f"  %a{k} = mul i64 {prev}, {c}")
        elif op == "add":
            lines.append(f"  %a{k} = add i64 {prev}, {c}")
        elif op == "xor":
            lines.append(f"  %a{k} = xor i64 {prev}, {c}")
        elif op == "xori":
            lines.append(f"  %a{k} = xor i64 {prev}, {'%i' if looped else 0}")
        else:
            lines.append(f"  %s{k} = lshr i64 {prev}, {c}")
            lines.append(f"  %a{k} = xor i64 {prev}, %s{k}")
    last = f"%a{len(spec.ops)}"
    if looped:
        lines.append("  %i.next = add i64 %i, 1")
        lines.append(f"  %more = icmp ult i64 %i.next, {spec.trips}")
        lines.append("  br i1 %more, label %loop, label %done")
        lines.append("done:")
    if spec.callee:
        lines.append(f"  %r = call i64 @{spec.callee}(i64 {last})")
        lines.append(f"  %sum = add i64 %r, {last}")
        last = "%sum"
    if extra_add:
        lines.append(f"  %out = add i64 {last}, {extra_add}")
        last = "%out"
    lines.append(f"  ret i64 {last}")
    lines.append("}")
    return "\n".join(lines)


def module_ir(fspecs: Sequence[FunctionSpec], *, extra_add: int = 0, externs: Sequence[str] = ()) -> str:
    """A module of the given functions; callees not in the module and ``externs`` are declared."""
    defined = {s.name for s in fspecs}
    declared = sorted({s.callee for s in fspecs if s.callee and s.callee not in defined} | set(externs))
    parts = [f"declare i64 @{d}(i64)" for d in declared]
    parts += [function_ir(s, extra_add=extra_add) for s in fspecs]
    return "\n\n".join(parts) + "\n"


def instruction_count(ir: str) -> int:
    """Instructions in IR text: indented lines of function bodies."""
    return sum(1 for line in ir.splitlines() if line.startswith("  ") and not line.strip().endswith(":"))


def expected(fspecs: Dict[str, FunctionSpec], name: str, x: int, extra_add: int = 0) -> int:
    """The signed 64-bit result of ``name(x)`` as the generated code computes it."""
    spec = fspecs[name]
    a = x & MASK
    for i in range(max(spec.trips, 1)):
        for op, c in spec.ops:
            if op == "mul":
                a = (a * c) & MASK
            elif op == "add":
                a = (a + c) & MASK
            elif op == "xor":
                a ^= c
            elif op == "xori":
                a ^= i
            else:
                a ^= a >> c
    if spec.callee:
        a = (expected(fspecs, spec.callee, a, extra_add) + a) & MASK
    a = (a + extra_add) & MASK
    return a - (1 << 64) if a >> 63 else a
