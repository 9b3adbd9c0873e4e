"""Writes small LLVM bitstreams by hand, to make bitcode that no installed compiler can
produce (e.g. "from LLVM 99") for the bad-input tests."""

from __future__ import annotations

from typing import List


class BitWriter:
    """LLVM's bitstream format: little-endian bit order, VBR fields, 32-bit aligned blocks."""

    def __init__(self) -> None:
        self.bits: List[int] = []

    def fixed(self, value: int, width: int) -> None:
        self.bits.extend((value >> i) & 1 for i in range(width))

    def vbr(self, value: int, width: int) -> None:
        hi = 1 << (width - 1)
        while value >= hi:
            self.fixed((value & (hi - 1)) | hi, width)
            value >>= width - 1
        self.fixed(value, width)

    def align32(self) -> None:
        while len(self.bits) % 32:
            self.bits.append(0)

    def enter_block(self, block_id: int, new_width: int, cur_width: int) -> int:
        self.fixed(1, cur_width)  # ENTER_SUBBLOCK
        self.vbr(block_id, 8)
        self.vbr(new_width, 4)
        self.align32()
        at = len(self.bits)
        self.fixed(0, 32)  # length in words, patched by end_block
        return at

    def end_block(self, at: int, width: int) -> None:
        self.fixed(0, width)  # END_BLOCK
        self.align32()
        words = (len(self.bits) - at - 32) // 32
        self.bits[at : at + 32] = [(words >> i) & 1 for i in range(32)]

    def record(self, code: int, ops: List[int], width: int) -> None:
        self.fixed(3, width)  # UNABBREV_RECORD
        self.vbr(code, 6)
        self.vbr(len(ops), 6)
        for op in ops:
            self.vbr(op, 6)

    def to_bytes(self) -> bytes:
        self.align32()
        out = bytearray()
        for i in range(0, len(self.bits), 8):
            out.append(sum(b << j for j, b in enumerate(self.bits[i : i + 8])))
        return bytes(out)


def future_bitcode(producer: str = "LLVM99.0.0", module_version: int = 7) -> bytes:
    """Bitcode whose identification block names `producer` and whose module block uses a
    format version this LLVM does not know, as bitcode from a future LLVM would."""
    w = BitWriter()
    for byte in b"BC\xc0\xde":
        w.fixed(byte, 8)
    at = w.enter_block(13, 5, 2)  # IDENTIFICATION_BLOCK
    w.record(1, [ord(c) for c in producer], 5)  # STRING
    w.record(2, [0], 5)  # EPOCH
    w.end_block(at, 5)
    at = w.enter_block(8, 3, 2)  # MODULE_BLOCK
    w.record(1, [module_version], 3)  # VERSION
    w.end_block(at, 3)
    return w.to_bytes()
