//! Applying relocations once the layout is fixed, with GOT-load relaxation.

use object::read::elf::{Rela, Sym};
use object::{LittleEndian as LE, SymbolIndex};

use crate::load::{malformed, Def, Object, Placed, Relocation, STUB_SIZE};
use crate::reloc::{self, Field, Formula, Kind, Relaxable};
use crate::{LoadError, LoadStats};

/// Everything a relocation needs once the layout is fixed.
pub(crate) struct Context<'a, 'd> {
    /// Every object of the set (symbols bound to another object's definition).
    pub set: &'a [Object<'d>],
    /// The object whose relocations are applied.
    pub object: &'a Object<'d>,
    pub base: u64,
    pub got_base: u64,
    pub stubs_base: u64,
}

impl Context<'_, '_> {
    /// Size of symbol `sym` of the object (of the definition it is bound to; COMMON
    /// symbols have their merged size).
    fn symbol_size(&self, sym: usize) -> u64 {
        let (object, sym) = match self.object.defs.get(sym) {
            Some(Def::Null) | None => return 0,
            Some(&Def::Elsewhere { object, symbol }) => (self.set.get(object).unwrap_or(self.object), symbol),
            Some(_) => (self.object, sym),
        };
        if let Some(&(_, size, _)) = object.commons.iter().find(|c| c.0 == sym) {
            return size;
        }
        object.linker.symtab.symbol(SymbolIndex(sym)).map(|s| s.st_size(LE)).unwrap_or(0)
    }

    pub(crate) fn apply(&self, memory: &mut [u8], section: &Placed<'_>, target: usize, rela: &Relocation, stats: &mut LoadStats) -> Result<(), LoadError> {
        let r_type = rela.r_type(LE, false);
        let sym = rela.r_sym(LE, false) as usize;
        // Checked by the scan: the type is supported, the symbol exists and the field lies
        // inside the section's contents.
        let Ok(kind) = reloc::classify(r_type) else { return Err(malformed("relocation changed")) };
        if kind.formula == Formula::None {
            return Ok(());
        }
        let offset = rela.r_offset(LE);
        let at = (section.offset + offset) as usize;
        let place = self.base + section.offset + offset;
        let s = i128::from(self.object.addresses.get(sym).copied().unwrap_or(0));
        let a = i128::from(rela.r_addend(LE));
        let p = i128::from(place);
        let needs = self.object.needs.get(sym).copied().unwrap_or_default();
        let got_slot =
            |what: &str| -> Result<i128, LoadError> { needs.got.map(|slot| 8 * i128::from(slot)).ok_or_else(|| malformed(format!("no GOT slot for {what}"))) };
        let stub = needs.stub.map(|i| i128::from(self.stubs_base + STUB_SIZE * u64::from(i)));
        let fits32 = |v: i128| (i32::MIN as i128..=i32::MAX as i128).contains(&v);
        let value = match kind.formula {
            Formula::None => return Ok(()),
            Formula::Absolute => s + a,
            Formula::PcRelative => {
                let direct = s + a - p;
                // An out-of-reach `call`/`jmp rel32` to an external function takes its stub.
                let is_branch =
                    section.executable && at >= 2 && (matches!(memory[at - 1], 0xe8 | 0xe9) || (memory[at - 2] == 0x0f && memory[at - 1] & 0xf0 == 0x80));
                match stub {
                    Some(stub) if !fits32(direct) && is_branch && kind.field == Field::Signed32 => {
                        stats.calls_through_stubs += 1;
                        stub + a - p
                    }
                    _ => direct,
                }
            }
            Formula::Call => {
                let direct = s + a - p;
                match stub {
                    Some(stub) if !fits32(direct) => {
                        stats.calls_through_stubs += 1;
                        stub + a - p
                    }
                    _ => direct,
                }
            }
            Formula::GotPcRelative => {
                if kind.relaxable != Relaxable::No && section.executable && self.relax(memory, at, kind, s + a - p) {
                    stats.relaxed += 1;
                    return Ok(());
                }
                i128::from(self.got_base) + got_slot("a GOT-relative reference")? + a - p
            }
            Formula::GotOffset => got_slot("a GOT offset")? + a,
            Formula::GotRelative => s + a - i128::from(self.got_base),
            Formula::GotPc => i128::from(self.got_base) + a - p,
            Formula::PltGotRelative => s + a - i128::from(self.got_base),
            Formula::Size => i128::from(self.symbol_size(sym)) + a,
        };
        let bytes = kind.field.encode(value).ok_or_else(|| LoadError::RelocationOverflow {
            kind: r_type,
            section: self.object.linker.section_name(target),
            offset,
            symbol: self.object.linker.symbol_name(sym),
            value,
        })?;
        let width = kind.field.width();
        memory[at..at + width].copy_from_slice(&bytes[..width]);
        Ok(())
    }

    /// Rewrites a `GOTPCRELX` load, call or jump to use the target directly when it is in
    /// reach (`direct` = S + A - P), as linkers do; returns false to keep the GOT.
    fn relax(&self, memory: &mut [u8], at: usize, kind: Kind, direct: i128) -> bool {
        let Ok(disp) = i32::try_from(direct) else { return false };
        if at < if kind.relaxable == Relaxable::Rex { 3 } else { 2 } {
            return false;
        }
        let (opcode, modrm) = (memory[at - 2], memory[at - 1]);
        match (opcode, modrm) {
            // mov reg, [rip + foo@GOTPCREL] → lea reg, [rip + foo]
            (0x8b, m) if m & 0xc7 == 0x05 => {
                if kind.relaxable == Relaxable::Rex && memory[at - 3] & 0xf0 != 0x40 {
                    return false;
                }
                memory[at - 2] = 0x8d;
                memory[at..at + 4].copy_from_slice(&disp.to_le_bytes());
                true
            }
            // call [rip + foo@GOTPCREL] → addr32 call foo
            (0xff, 0x15) if kind.relaxable == Relaxable::Plain => {
                memory[at - 2] = 0x67;
                memory[at - 1] = 0xe8;
                memory[at..at + 4].copy_from_slice(&disp.to_le_bytes());
                true
            }
            // jmp [rip + foo@GOTPCREL] → jmp foo; nop
            (0xff, 0x25) if kind.relaxable == Relaxable::Plain => {
                let Some(disp) = disp.checked_add(1) else { return false };
                memory[at - 2] = 0xe9;
                memory[at - 1..at + 3].copy_from_slice(&disp.to_le_bytes());
                memory[at + 3] = 0x90;
                true
            }
            _ => false,
        }
    }
}
