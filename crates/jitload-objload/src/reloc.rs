//! The x86-64 relocation types the loader applies, each matched explicitly. Anything not
//! listed is refused, so an object we do not understand is never silently miscompiled.
//!
//! Notation (psABI): S symbol value, A addend, P place, G offset of the symbol's GOT slot
//! from the GOT base, GOT the GOT base, L the symbol's call target (a stub when the symbol
//! is out of direct reach), Z symbol size.

/// How a relocation's value is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Formula {
    /// Nothing to do.
    None,
    /// S + A
    Absolute,
    /// S + A - P
    PcRelative,
    /// L + A - P (a call or jump; may go through a stub)
    Call,
    /// G + GOT + A - P
    GotPcRelative,
    /// G + A
    GotOffset,
    /// S + A - GOT
    GotRelative,
    /// GOT + A - P
    GotPc,
    /// L + A - GOT
    PltGotRelative,
    /// Z + A
    Size,
}

/// How the computed value is stored and which range it must fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// 64 bits, any value (wraps like every linker).
    Word64,
    /// 32 bits, zero-extended by the instruction.
    Unsigned32,
    /// 32 bits, sign-extended by the instruction.
    Signed32,
    /// 16 bits, either interpretation.
    Any16,
    /// 16 bits, sign-extended.
    Signed16,
    /// 8 bits, either interpretation.
    Any8,
    /// 8 bits, sign-extended.
    Signed8,
}

impl Field {
    pub(crate) fn width(self) -> usize {
        match self {
            Field::Word64 => 8,
            Field::Unsigned32 | Field::Signed32 => 4,
            Field::Any16 | Field::Signed16 => 2,
            Field::Any8 | Field::Signed8 => 1,
        }
    }

    /// The bytes to store, or `None` when `value` does not fit.
    pub(crate) fn encode(self, value: i128) -> Option<[u8; 8]> {
        let fits = match self {
            Field::Word64 => true,
            Field::Unsigned32 => (0..=u32::MAX as i128).contains(&value),
            Field::Signed32 => (i32::MIN as i128..=i32::MAX as i128).contains(&value),
            Field::Any16 => (i16::MIN as i128..=u16::MAX as i128).contains(&value),
            Field::Signed16 => (i16::MIN as i128..=i16::MAX as i128).contains(&value),
            Field::Any8 => (i8::MIN as i128..=u8::MAX as i128).contains(&value),
            Field::Signed8 => (i8::MIN as i128..=i8::MAX as i128).contains(&value),
        };
        fits.then(|| (value as u64).to_le_bytes())
    }
}

/// A supported relocation type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kind {
    pub formula: Formula,
    pub field: Field,
    /// A `GOTPCRELX`-family relocation, which may be relaxed to a direct reference.
    pub relaxable: Relaxable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relaxable {
    No,
    /// `R_X86_64_GOTPCRELX`: the opcode is the byte before the ModRM byte.
    Plain,
    /// `R_X86_64_REX_GOTPCRELX`: a REX prefix, then the opcode and ModRM byte.
    Rex,
}

/// Why a relocation type is not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A thread-local-storage relocation.
    ThreadLocal,
    /// A type unknown here, or one only dynamic linkers process.
    Unknown,
}

pub(crate) const R_X86_64_NONE: u32 = 0;
pub(crate) const R_X86_64_64: u32 = 1;
pub(crate) const R_X86_64_PC32: u32 = 2;
pub(crate) const R_X86_64_GOT32: u32 = 3;
pub(crate) const R_X86_64_PLT32: u32 = 4;
pub(crate) const R_X86_64_GOTPCREL: u32 = 9;
pub(crate) const R_X86_64_32: u32 = 10;
pub(crate) const R_X86_64_32S: u32 = 11;
pub(crate) const R_X86_64_16: u32 = 12;
pub(crate) const R_X86_64_PC16: u32 = 13;
pub(crate) const R_X86_64_8: u32 = 14;
pub(crate) const R_X86_64_PC8: u32 = 15;
pub(crate) const R_X86_64_PC64: u32 = 24;
pub(crate) const R_X86_64_GOTOFF64: u32 = 25;
pub(crate) const R_X86_64_GOTPC32: u32 = 26;
pub(crate) const R_X86_64_GOT64: u32 = 27;
pub(crate) const R_X86_64_GOTPCREL64: u32 = 28;
pub(crate) const R_X86_64_GOTPC64: u32 = 29;
pub(crate) const R_X86_64_GOTPLT64: u32 = 30;
pub(crate) const R_X86_64_PLTOFF64: u32 = 31;
pub(crate) const R_X86_64_SIZE32: u32 = 32;
pub(crate) const R_X86_64_SIZE64: u32 = 33;
pub(crate) const R_X86_64_GOTPCRELX: u32 = 41;
pub(crate) const R_X86_64_REX_GOTPCRELX: u32 = 42;
pub(crate) const R_X86_64_CODE_4_GOTPCRELX: u32 = 43;

/// The rule for relocation type `r_type`.
pub(crate) fn classify(r_type: u32) -> Result<Kind, Refusal> {
    use Field::*;
    use Formula::*;
    let kind = |formula, field| Ok(Kind { formula, field, relaxable: Relaxable::No });
    match r_type {
        R_X86_64_NONE => kind(None, Word64),
        R_X86_64_64 => kind(Absolute, Word64),
        R_X86_64_PC32 => kind(PcRelative, Signed32),
        R_X86_64_GOT32 => kind(GotOffset, Signed32),
        R_X86_64_PLT32 => kind(Call, Signed32),
        R_X86_64_GOTPCREL => kind(GotPcRelative, Signed32),
        R_X86_64_32 => kind(Absolute, Unsigned32),
        R_X86_64_32S => kind(Absolute, Signed32),
        R_X86_64_16 => kind(Absolute, Any16),
        R_X86_64_PC16 => kind(PcRelative, Signed16),
        R_X86_64_8 => kind(Absolute, Any8),
        R_X86_64_PC8 => kind(PcRelative, Signed8),
        R_X86_64_PC64 => kind(PcRelative, Word64),
        R_X86_64_GOTOFF64 => kind(GotRelative, Word64),
        R_X86_64_GOTPC32 => kind(GotPc, Signed32),
        R_X86_64_GOT64 | R_X86_64_GOTPLT64 => kind(GotOffset, Word64),
        R_X86_64_GOTPCREL64 => kind(GotPcRelative, Word64),
        R_X86_64_GOTPC64 => kind(GotPc, Word64),
        R_X86_64_PLTOFF64 => kind(PltGotRelative, Word64),
        R_X86_64_SIZE32 => kind(Size, Unsigned32),
        R_X86_64_SIZE64 => kind(Size, Word64),
        R_X86_64_GOTPCRELX => Ok(Kind { formula: GotPcRelative, field: Signed32, relaxable: Relaxable::Plain }),
        R_X86_64_REX_GOTPCRELX => Ok(Kind { formula: GotPcRelative, field: Signed32, relaxable: Relaxable::Rex }),
        R_X86_64_CODE_4_GOTPCRELX => kind(GotPcRelative, Signed32),
        // DTPMOD64, DTPOFF64, TPOFF64, TLSGD, TLSLD, DTPOFF32, GOTTPOFF, TPOFF32,
        // GOTPC32_TLSDESC, TLSDESC_CALL, TLSDESC, CODE_4_GOTTPOFF, CODE_4_GOTPC32_TLSDESC.
        16..=23 | 34..=36 | 44 | 45 => Err(Refusal::ThreadLocal),
        // COPY, GLOB_DAT, JUMP_SLOT, RELATIVE, IRELATIVE, RELATIVE64 (dynamic linking only),
        // the deprecated 39/40 and everything else.
        _ => Err(Refusal::Unknown),
    }
}

/// The psABI name of relocation type `r_type` (for messages).
pub fn relocation_name(r_type: u32) -> &'static str {
    const NAMES: [&str; 46] = [
        "R_X86_64_NONE",
        "R_X86_64_64",
        "R_X86_64_PC32",
        "R_X86_64_GOT32",
        "R_X86_64_PLT32",
        "R_X86_64_COPY",
        "R_X86_64_GLOB_DAT",
        "R_X86_64_JUMP_SLOT",
        "R_X86_64_RELATIVE",
        "R_X86_64_GOTPCREL",
        "R_X86_64_32",
        "R_X86_64_32S",
        "R_X86_64_16",
        "R_X86_64_PC16",
        "R_X86_64_8",
        "R_X86_64_PC8",
        "R_X86_64_DTPMOD64",
        "R_X86_64_DTPOFF64",
        "R_X86_64_TPOFF64",
        "R_X86_64_TLSGD",
        "R_X86_64_TLSLD",
        "R_X86_64_DTPOFF32",
        "R_X86_64_GOTTPOFF",
        "R_X86_64_TPOFF32",
        "R_X86_64_PC64",
        "R_X86_64_GOTOFF64",
        "R_X86_64_GOTPC32",
        "R_X86_64_GOT64",
        "R_X86_64_GOTPCREL64",
        "R_X86_64_GOTPC64",
        "R_X86_64_GOTPLT64",
        "R_X86_64_PLTOFF64",
        "R_X86_64_SIZE32",
        "R_X86_64_SIZE64",
        "R_X86_64_GOTPC32_TLSDESC",
        "R_X86_64_TLSDESC_CALL",
        "R_X86_64_TLSDESC",
        "R_X86_64_IRELATIVE",
        "R_X86_64_RELATIVE64",
        "R_X86_64_39",
        "R_X86_64_40",
        "R_X86_64_GOTPCRELX",
        "R_X86_64_REX_GOTPCRELX",
        "R_X86_64_CODE_4_GOTPCRELX",
        "R_X86_64_CODE_4_GOTTPOFF",
        "R_X86_64_CODE_4_GOTPC32_TLSDESC",
    ];
    NAMES.get(r_type as usize).copied().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_check_ranges() {
        assert!(Field::Signed32.encode(i32::MAX as i128).is_some());
        assert!(Field::Signed32.encode(i32::MAX as i128 + 1).is_none());
        assert!(Field::Signed32.encode(i32::MIN as i128).is_some());
        assert!(Field::Unsigned32.encode(-1).is_none());
        assert!(Field::Unsigned32.encode(u32::MAX as i128).is_some());
        assert!(Field::Any16.encode(-1).is_some());
        assert!(Field::Any16.encode(65536).is_none());
        assert_eq!(Field::Word64.encode(-1), Some([0xff; 8]));
    }

    #[test]
    fn every_type_below_64_is_decided() {
        for t in 0..64 {
            let _ = classify(t);
        }
        assert_eq!(classify(R_X86_64_PLT32).map(|k| k.formula), Ok(Formula::Call));
        assert_eq!(classify(19), Err(Refusal::ThreadLocal));
        assert_eq!(classify(7), Err(Refusal::Unknown));
        assert_eq!(relocation_name(42), "R_X86_64_REX_GOTPCRELX");
        assert_eq!(relocation_name(1000), "unknown");
    }
}
