//! The stencil tables `build.rs` generates from `stencils/*.c` (code bytes and holes).

/// How a hole is patched; one variant per relocation type `build.rs` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoleKind {
    /// `R_X86_64_PLT32`/`PC32` to `_JIT_CONTINUE`: a rel32 to the next stencil.
    Rel32,
    /// `R_X86_64_GOTPCRELX`: `call/jmp [rip+GOT]`; relaxed to a direct rel32 when in reach.
    GotPcRelX,
    /// `R_X86_64_REX_GOTPCRELX`: `op reg64, [rip+GOT]`; relaxed to an immediate (or `lea`)
    /// when the value allows, else a GOT slot in the block.
    RexGotPcRelX,
    /// `R_X86_64_32S`: an absolute 32-bit field (an inline-asm displacement), the value
    /// itself, which must fit a sign-extended 32-bit integer.
    Abs32S,
    /// `R_X86_64_64`: an absolute 64-bit field (`movabs` from a global's address), the value.
    Abs64,
}

/// One relocation of a stencil.
#[derive(Debug)]
pub struct Hole {
    /// Where the field (32 bits; 64 for [`HoleKind::Abs64`]) is, from the stencil's start.
    pub offset: u32,
    pub kind: HoleKind,
    /// Index into [`SYMBOL_NAMES`].
    pub symbol: u16,
    pub addend: i64,
}

/// A stencil: a function's machine code, cut from the object, and its holes.
#[derive(Debug)]
pub struct Stencil {
    pub name: &'static str,
    /// `wrapper` (Python -> native) or `thunk` (native -> Python).
    pub group: &'static str,
    pub code: &'static [u8],
    pub holes: &'static [Hole],
}

include!(concat!(env!("OUT_DIR"), "/stencils.rs"));

/// The stencil named `name`.
pub fn by_name(name: &str) -> Option<&'static Stencil> {
    STENCILS.iter().find(|s| s.name == name)
}

/// The relocation table of a stencil as text (for golden files and debugging).
pub fn describe(stencil: &Stencil) -> String {
    let mut out = format!("{} ({} group, {} bytes)\n", stencil.name, stencil.group, stencil.code.len());
    for h in stencil.holes {
        out.push_str(&format!("  {:#06x} {:<12} {}{:+}\n", h.offset, format!("{:?}", h.kind), SYMBOL_NAMES[h.symbol as usize], h.addend));
    }
    out
}
