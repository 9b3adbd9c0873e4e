//! The patcher: copies stencils one after another into fresh memory, fills their holes and
//! seals the memory (jitload-codemem).
//!
//! Holes are filled the way a static linker relaxes GOT references (x86-64 psABI, "Optimize
//! GOTPCRELX relocations"), since the stencils were compiled as position-independent code:
//! * `Rel32` (continuations): `S + A - P`, always in reach (same block).
//! * `GotPcRelX` on `call/jmp [rip+GOT]`: `addr32 call rel32` / `jmp rel32; nop` when the
//!   target is within ±2 GiB of the code, else a GOT slot at the end of the block. Where the
//!   target is a stub that jumps through a word ([`Piece::through`]) in reach, the word
//!   itself serves as the GOT slot: `call [rip+word]`, the stub's own jump.
//! * `RexGotPcRelX` on `mov reg, [rip+GOT]`: `mov reg, imm32` when the value fits a
//!   sign-extended 32-bit immediate, else `lea reg, [rip+rel32]` when within reach, else a
//!   GOT slot; on `cmp/add/sub/and/or/xor/adc/sbb reg, [rip+GOT]` and `test`: the
//!   immediate form when it fits, else a GOT slot.
//!
//! * `Abs32S` (inline-asm displacements, `%fs:_JIT_TLS`): the value, which must fit.
//! * `Abs64` (inline-asm `movabs` from a global, `_JIT_GRACE_EPOCH`): the value.
//!
//! Instruction lengths never change, so stencil offsets are those of the object file. A
//! stencil whose last instruction jumps to the next one is cut before that jump and the next
//! stencil placed right after it (execution falls through), as CPython's JIT does.

use crate::table::{HoleKind, Stencil, STENCILS, SYMBOL_NAMES};
use crate::{sym, Error, Runtime};
use jitload_codemem::{CodeMemory, PlaceError};

/// Alignment of each stencil in a block: entries and loop heads like 16.
const ALIGN: usize = 16;
const INT3: u8 = 0xCC;

/// A stencil to emit and its own hole values (`_JIT_ARG`, `_JIT_DEST`, ...).
#[derive(Debug, Clone)]
pub struct Piece {
    pub stencil: usize,
    pub values: Vec<(u16, u64)>,
    /// Holes that take the value of a process-wide symbol (`_JIT_CONV0` = `PyLong_AsLongLong`).
    pub aliases: Vec<(u16, u16)>,
    /// Holes whose value is a PLT-style stub that jumps through a word: the word's address.
    pub through: Vec<(u16, u64)>,
}

impl Piece {
    pub fn new(stencil: usize) -> Piece {
        Piece { stencil, values: Vec::new(), aliases: Vec::new(), through: Vec::new() }
    }

    pub fn with(mut self, symbol: u16, value: u64) -> Piece {
        self.values.push((symbol, value));
        self
    }

    /// Fills hole `symbol` with the [`Runtime`]'s value of `from`.
    pub fn with_symbol(mut self, symbol: u16, from: u16) -> Piece {
        self.aliases.push((symbol, from));
        self
    }

    /// Hole `symbol`'s value is code that only jumps through the 8-byte word at `word`
    /// (`jmp [word]`, as a PLT entry or an engine stub): a `call/jmp [rip+GOT]` to it reads
    /// the word itself, as its GOT slot, where the word is in reach (one jump fewer a call).
    /// The word must hold, whenever the code runs, an address that does what the value does.
    pub fn through(mut self, symbol: u16, word: u64) -> Piece {
        self.through.push((symbol, word));
        self
    }
}

/// Patched code: the first piece's address is the entry point.
pub struct CodeBlock {
    memory: CodeMemory,
    code_len: usize,
    /// Where each piece starts (for inspection and tests).
    pub offsets: Vec<usize>,
    /// How many holes were relaxed to immediates/direct branches vs. left to GOT slots.
    pub relaxed: usize,
    pub got_slots: usize,
    /// How many calls/jumps read a stub's word directly ([`Piece::through`]).
    pub through_words: usize,
}

impl CodeBlock {
    /// The address of the first piece (the entry).
    pub fn entry(&self) -> u64 {
        self.memory.address()
    }

    /// Code bytes (without the GOT).
    pub fn code(&self) -> &[u8] {
        &self.memory.bytes()[..self.code_len]
    }

    pub fn memory(&self) -> &CodeMemory {
        &self.memory
    }
}

impl std::fmt::Debug for CodeBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodeBlock({:#x}, {} bytes of code, {} GOT slots)", self.entry(), self.code_len, self.got_slots)
    }
}

/// Where each piece goes in a block, and where its GOT starts.
struct Layout {
    offsets: Vec<usize>,
    lens: Vec<usize>,
    got_start: usize,
}

/// Emits `pieces` into one sealed block; piece `i`'s `_JIT_CONTINUE` is piece `i + 1`.
pub fn emit(runtime: &Runtime, pieces: &[Piece]) -> Result<CodeBlock, Error> {
    let stencils: Vec<&'static Stencil> = pieces.iter().map(|p| &STENCILS[p.stencil]).collect();
    let mut offsets = Vec::with_capacity(pieces.len());
    let mut lens = Vec::with_capacity(pieces.len());
    let mut end = 0usize;
    let mut fell_through = false;
    for (i, s) in stencils.iter().enumerate() {
        // A stencil that ends by jumping to the next one falls into it instead: the jump is
        // cut and the next stencil follows at once (no alignment padding).
        let start = if fell_through { end } else { end.next_multiple_of(ALIGN) };
        fell_through = i + 1 < stencils.len() && ends_with_continue(s);
        let len = s.code.len() - if fell_through { 5 } else { 0 };
        offsets.push(start);
        lens.push(len);
        end = start + len;
    }
    let code_len = end;
    let got_start = code_len.next_multiple_of(8);
    let max_got = stencils.iter().map(|s| s.holes.len()).sum::<usize>();
    let len = got_start + 8 * max_got;
    let layout = Layout { offsets, lens, got_start };
    match jitload_codemem::place(len, |base, buf| write(runtime, pieces, &stencils, &layout, base, buf)) {
        Ok((memory, (relaxed, got_slots, through_words))) => Ok(CodeBlock { memory, code_len, offsets: layout.offsets, relaxed, got_slots, through_words }),
        Err(PlaceError::Fill(e)) => Err(e),
        Err(PlaceError::Memory(e)) => Err(Error::Memory(e)),
    }
}

fn write(
    runtime: &Runtime,
    pieces: &[Piece],
    stencils: &[&'static Stencil],
    layout: &Layout,
    base: u64,
    buf: &mut [u8],
) -> Result<(usize, usize, usize), Error> {
    let (offsets, lens, got_start) = (&layout.offsets, &layout.lens, layout.got_start);
    buf[..got_start].fill(INT3);
    let mut got: Vec<u64> = Vec::new();
    let mut relaxed = 0;
    let mut through = 0;
    for (i, (piece, stencil)) in pieces.iter().zip(stencils).enumerate() {
        let at = offsets[i];
        let len = lens[i];
        buf[at..at + len].copy_from_slice(&stencil.code[..len]);
        for hole in stencil.holes.iter().filter(|h| (h.offset as usize) < len) {
            let value = if hole.symbol == sym::_JIT_CONTINUE {
                match offsets.get(i + 1) {
                    Some(next) => base + *next as u64,
                    None => return Err(Error::Plan(format!("{} continues, but it is the last piece", stencil.name))),
                }
            } else if let Some((_, v)) = piece.values.iter().rev().find(|(s, _)| *s == hole.symbol) {
                *v
            } else if let Some(&(_, from)) = piece.aliases.iter().rev().find(|(s, _)| *s == hole.symbol) {
                runtime.value(from).ok_or_else(|| Error::Plan(format!("{} needs {}, which was not resolved", stencil.name, SYMBOL_NAMES[from as usize])))?
            } else if let Some(v) = runtime.value(hole.symbol) {
                v
            } else {
                return Err(Error::Plan(format!("{} needs {}, which was not given", stencil.name, SYMBOL_NAMES[hole.symbol as usize])));
            };
            let field = at + hole.offset as usize;
            let place = base + field as u64;
            match hole.kind {
                HoleKind::Rel32 => {
                    let rel = rel32(value, hole.addend, place).ok_or_else(|| Error::Plan(format!("{}: continuation out of reach", stencil.name)))?;
                    buf[field..field + 4].copy_from_slice(&rel.to_le_bytes());
                }
                HoleKind::GotPcRelX => {
                    let word = piece.through.iter().rev().find(|(s, _)| *s == hole.symbol).map(|&(_, w)| w);
                    if let Some(rel) = word.and_then(|w| rel32(w, hole.addend, place)).filter(|_| matches!(buf[field - 2..field], [0xFF, 0x15 | 0x25])) {
                        // call/jmp [rip+word]: the stub's own jump, done here.
                        buf[field..field + 4].copy_from_slice(&rel.to_le_bytes());
                        through += 1;
                        continue;
                    }
                    if let Some(rel) = rel32(value, hole.addend, place).filter(|_| relax_calls()) {
                        match (buf[field - 2], buf[field - 1]) {
                            (0xFF, 0x15) => {
                                // call [rip+GOT] -> addr32 call rel32 (same length).
                                buf[field - 2] = 0x67;
                                buf[field - 1] = 0xE8;
                                buf[field..field + 4].copy_from_slice(&rel.to_le_bytes());
                                relaxed += 1;
                                continue;
                            }
                            (0xFF, 0x25) => {
                                // jmp [rip+GOT] -> jmp rel32; nop. The jmp ends one byte earlier.
                                let rel = rel32(value, hole.addend + 1, place);
                                if let Some(rel) = rel {
                                    buf[field - 2] = 0xE9;
                                    buf[field - 1..field + 3].copy_from_slice(&rel.to_le_bytes());
                                    buf[field + 3] = 0x90;
                                    relaxed += 1;
                                    continue;
                                }
                            }
                            _ => {}
                        }
                    }
                    got_slot(buf, &mut got, got_start, base, field, place, value, hole.addend);
                }
                HoleKind::Abs32S => {
                    let imm = i32::try_from((value as i64).wrapping_add(hole.addend))
                        .map_err(|_| Error::Plan(format!("{}: {} = {value:#x} does not fit 32 bits", stencil.name, SYMBOL_NAMES[hole.symbol as usize])))?;
                    buf[field..field + 4].copy_from_slice(&imm.to_le_bytes());
                    relaxed += 1;
                }
                HoleKind::Abs64 => {
                    buf[field..field + 8].copy_from_slice(&value.wrapping_add(hole.addend as u64).to_le_bytes());
                    relaxed += 1;
                }
                HoleKind::RexGotPcRelX => {
                    if relax_rex(buf, field, place, value, hole.addend) {
                        relaxed += 1;
                    } else {
                        got_slot(buf, &mut got, got_start, base, field, place, value, hole.addend);
                    }
                }
            }
        }
    }
    Ok((relaxed, got.len(), through))
}

/// Direct calls instead of `call [rip+GOT]` (on unless `JITLOAD_STENCIL_RELAX_CALLS=0`, for
/// measuring the difference).
fn relax_calls() -> bool {
    jitload_options::get().stencil_relax_calls
}

/// Whether the stencil's last instruction is `jmp rel32` to `_JIT_CONTINUE`.
fn ends_with_continue(s: &Stencil) -> bool {
    let n = s.code.len();
    n >= 5 && s.code[n - 5] == 0xE9 && s.holes.iter().any(|h| h.kind == HoleKind::Rel32 && h.symbol == sym::_JIT_CONTINUE && h.offset as usize == n - 4)
}

/// `S + A - P` as a rel32, if it fits.
fn rel32(target: u64, addend: i64, place: u64) -> Option<i32> {
    let rel = (target as i128) + (addend as i128) - (place as i128);
    i32::try_from(rel).ok()
}

#[allow(clippy::too_many_arguments)]
fn got_slot(buf: &mut [u8], got: &mut Vec<u64>, got_start: usize, base: u64, field: usize, place: u64, value: u64, addend: i64) {
    let index = match got.iter().position(|v| *v == value) {
        Some(i) => i,
        None => {
            got.push(value);
            let i = got.len() - 1;
            buf[got_start + 8 * i..got_start + 8 * i + 8].copy_from_slice(&value.to_le_bytes());
            i
        }
    };
    let slot = base + (got_start + 8 * index) as u64;
    let rel = rel32(slot, addend, place).expect("the GOT is in the same block");
    buf[field..field + 4].copy_from_slice(&rel.to_le_bytes());
}

/// `REX op reg, [rip+disp32]` at `field - 3`: the immediate (or lea) form if possible.
fn relax_rex(buf: &mut [u8], field: usize, place: u64, value: u64, addend: i64) -> bool {
    let (rex, opcode, modrm) = (buf[field - 3], buf[field - 2], buf[field - 1]);
    if rex & 0xF0 != 0x40 || modrm & 0xC7 != 0x05 {
        return false; // not REX + rip-relative: leave it to the GOT
    }
    let reg = (modrm >> 3) & 7;
    // REX.R (the register's high bit) moves to REX.B when the register becomes r/m.
    let rex_rm = (rex & 0xF8) | ((rex >> 2) & 1);
    let imm = i32::try_from(value as i64).ok();
    match (opcode, imm) {
        (0x8B, Some(imm)) => {
            // mov r64, [GOT] -> mov r/m64, imm32 (C7 /0)
            buf[field - 3] = rex_rm;
            buf[field - 2] = 0xC7;
            buf[field - 1] = 0xC0 | reg;
            buf[field..field + 4].copy_from_slice(&imm.to_le_bytes());
            true
        }
        (0x8B, None) => match rel32(value, addend, place) {
            // mov r64, [GOT] -> lea r64, [rip+rel32] (the value is an address in reach)
            Some(rel) => {
                buf[field - 2] = 0x8D;
                buf[field..field + 4].copy_from_slice(&rel.to_le_bytes());
                true
            }
            None => false,
        },
        (0x03 | 0x0B | 0x13 | 0x1B | 0x23 | 0x2B | 0x33 | 0x3B, Some(imm)) => {
            // op r64, [GOT] -> op r/m64, imm32 (81 /ext), ext = the opcode's operation
            buf[field - 3] = rex_rm;
            buf[field - 2] = 0x81;
            buf[field - 1] = 0xC0 | ((opcode >> 3) << 3) | reg;
            buf[field..field + 4].copy_from_slice(&imm.to_le_bytes());
            true
        }
        (0x85, Some(imm)) => {
            // test r/m64, r64 -> test r/m64, imm32 (F7 /0)
            buf[field - 3] = rex_rm;
            buf[field - 2] = 0xF7;
            buf[field - 1] = 0xC0 | reg;
            buf[field..field + 4].copy_from_slice(&imm.to_le_bytes());
            true
        }
        _ => false,
    }
}
