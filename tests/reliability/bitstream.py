"""A small reader of LLVM's bitstream container, enough to find where every block and record
of a bitcode file starts and ends (abbreviations and BLOCKINFO included), so mutations can
splice, drop, duplicate and swap whole records and blocks instead of only flipping bits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

LITERAL, FIXED, VBR, ARRAY, CHAR6, BLOB = 0, 1, 2, 3, 4, 5


@dataclass
class Block:
    block_id: int
    start: int  # bit where the ENTER_SUBBLOCK abbrev id begins
    body: int  # bit of the 32-bit length word (word aligned)
    end: int  # bit after END_BLOCK's alignment (word aligned)
    width: int  # abbrev id width inside the block
    depth: int


@dataclass
class Record:
    block_id: int
    start: int
    end: int
    code: int
    depth: int


@dataclass
class Layout:
    blocks: List[Block] = field(default_factory=list)
    records: List[Record] = field(default_factory=list)
    complete: bool = False


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos
        self.limit = len(data) * 8

    def read(self, n: int) -> int:
        if n == 0:
            return 0
        if self.pos + n > self.limit:
            raise EOFError
        byte = self.pos >> 3
        chunk = int.from_bytes(self.data[byte : byte + (n + 7) // 8 + 1], "little")
        v = (chunk >> (self.pos & 7)) & ((1 << n) - 1)
        self.pos += n
        return v

    def vbr(self, n: int) -> int:
        if n < 2:
            raise ValueError("bad vbr width")
        hi = 1 << (n - 1)
        value, shift = 0, 0
        while True:
            piece = self.read(n)
            value |= (piece & (hi - 1)) << shift
            if not piece & hi:
                return value
            shift += n - 1
            if shift > 64:
                raise ValueError("vbr too long")

    def align32(self) -> None:
        self.pos = (self.pos + 31) & ~31


Abbrev = List[Tuple[int, int]]


def parse(data: bytes) -> Layout:
    """Block and record positions of a bitcode file; `complete` is False if the stream
    could not be read to its end (the positions found so far are still returned)."""
    layout = Layout()
    start = 0
    if data[:4] == b"\xde\xc0\x17\x0b" and len(data) >= 20:
        offset = int.from_bytes(data[8:12], "little")
        size = int.from_bytes(data[12:16], "little")
        data = data[: offset + size]
        start = offset * 8
    if data[start // 8 : start // 8 + 4] != b"BC\xc0\xde":
        return layout
    r = _Reader(data, start + 32)
    blockinfo: Dict[int, List[Abbrev]] = {}
    try:
        while r.pos + 32 <= r.limit:
            if r.read(2) != 1:  # top level: only ENTER_SUBBLOCK
                break
            _block(r, r.pos - 2, 0, blockinfo, layout)
        layout.complete = True
    except (EOFError, ValueError, IndexError):
        pass
    return layout


def _block(r: _Reader, start: int, depth: int, blockinfo: Dict[int, List[Abbrev]], layout: Layout) -> None:
    block_id = r.vbr(8)
    width = r.vbr(4)
    r.align32()
    body = r.pos
    words = r.read(32)
    if width < 1 or width > 32 or body + 32 + words * 32 > r.limit:
        raise ValueError("bad block header")
    abbrevs: List[Abbrev] = list(blockinfo.get(block_id, []))
    current_info: Optional[int] = None
    while True:
        at = r.pos
        aid = r.read(width)
        if aid == 0:  # END_BLOCK
            r.align32()
            layout.blocks.append(Block(block_id, start, body, r.pos, width, depth))
            return
        if aid == 1:
            _block(r, at, depth + 1, blockinfo, layout)
            continue
        if aid == 2:
            abbrev = _define_abbrev(r)
            if block_id == 0 and current_info is not None:
                blockinfo.setdefault(current_info, []).append(abbrev)
            else:
                abbrevs.append(abbrev)
            continue
        if aid == 3:
            code = r.vbr(6)
            ops = [r.vbr(6) for _ in range(r.vbr(6))]
        else:
            index = aid - 4
            if index >= len(abbrevs):
                raise ValueError("unknown abbrev")
            values = _read_abbreviated(r, abbrevs[index])
            code, ops = (values[0], values[1:]) if values else (0, [])
        if block_id == 0 and code == 1 and ops:  # BLOCKINFO SETBID
            current_info = ops[0]
        layout.records.append(Record(block_id, at, r.pos, code, depth + 1))


def _define_abbrev(r: _Reader) -> Abbrev:
    ops: Abbrev = []
    for _ in range(r.vbr(5)):
        if r.read(1):
            ops.append((LITERAL, r.vbr(8)))
            continue
        enc = r.read(3)
        if enc in (FIXED, VBR):
            width = r.vbr(5)
            ops.append((LITERAL, 0) if width == 0 else (enc, width))
        elif enc in (ARRAY, CHAR6, BLOB):
            ops.append((enc, 0))
        else:
            raise ValueError("bad abbrev encoding")
    return ops


def _scalar(r: _Reader, op: Tuple[int, int]) -> int:
    kind, value = op
    if kind == LITERAL:
        return value
    if kind == FIXED:
        return r.read(value)
    if kind == VBR:
        return r.vbr(value)
    if kind == CHAR6:
        return r.read(6)
    raise ValueError("bad scalar op")


def _read_abbreviated(r: _Reader, abbrev: Abbrev) -> List[int]:
    values: List[int] = []
    i = 0
    while i < len(abbrev):
        kind, _ = abbrev[i]
        if kind == ARRAY:
            n = r.vbr(6)
            element = abbrev[i + 1]
            values.extend(_scalar(r, element) for _ in range(n))
            i += 2
            continue
        if kind == BLOB:
            n = r.vbr(6)
            r.align32()
            r.pos += n * 8
            if r.pos > r.limit:
                raise EOFError
            r.align32()
            i += 1
            continue
        values.append(_scalar(r, abbrev[i]))
        i += 1
    return values


# -- bit-level editing -------------------------------------------------------------------


def to_bits(data: bytes) -> int:
    return int.from_bytes(data, "little")


def from_bits(value: int, nbits: int) -> bytes:
    nbytes = (nbits + 7) // 8
    nbytes = (nbytes + 3) & ~3  # bitcode files are whole 32-bit words
    return (value & ((1 << nbits) - 1)).to_bytes(nbytes, "little")


def cut(value: int, lo: int, hi: int) -> int:
    """Bits [lo, hi) of value, as a number."""
    return (value >> lo) & ((1 << (hi - lo)) - 1)


def replace_bits(data: bytes, lo: int, hi: int, insert: int, insert_len: int) -> bytes:
    """`data` with bits [lo, hi) replaced by `insert_len` bits of `insert`."""
    v = to_bits(data)
    total = len(data) * 8
    head = cut(v, 0, lo)
    tail = cut(v, hi, total)
    out = head | (insert << lo) | (tail << (lo + insert_len))
    return from_bits(out, lo + insert_len + (total - hi))
