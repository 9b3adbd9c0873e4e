//! Parsing and planning one object of a set: its header, which sections are loaded and in
//! which class, what each symbol refers to, its relocation sections, and what its
//! relocations need (GOT slots, call stubs). Binding symbols across the set is in `bind`,
//! the layout and the rest of linking in `link`.

use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, SectionTable, Sym, SymbolTable};
use object::{LittleEndian as LE, SectionIndex, SymbolIndex};

use crate::reloc::{self, Field, Formula, Refusal};
use crate::LoadError;

type Elf = elf::FileHeader64<LE>;
pub(crate) type Relocation = elf::Rela64<LE>;

const SHT_X86_64_UNWIND: u32 = 0x7000_0001;
const SHT_CREL: u32 = 0x4000_0014;
const SHN_X86_64_LCOMMON: u16 = 0xff02;
pub(crate) const STB_GNU_UNIQUE: u8 = 10;
/// The image must stay within ±2 GB reach of 32-bit PC-relative references.
pub(crate) const MAX_IMAGE: u64 = 1 << 31;
const MAX_ALIGN: u64 = 1 << 20;
pub(crate) const STUB_SIZE: u64 = 8;
const TLS: &str = "thread-local storage";

/// Where a section (or other piece of the image) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Read+execute.
    Code = 0,
    /// Read-only after relocation (rodata, eh_frame, relro data, GOT).
    ReadOnly = 1,
    /// Read+write (data, bss, COMMON).
    Data = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArrayKind {
    Preinit,
    Init,
    Fini,
}

/// A section that is part of the image.
pub(crate) struct Placed<'d> {
    pub class: Class,
    /// Offset in its class, then (after layout) in the image.
    pub offset: u64,
    pub size: u64,
    /// A power of two, at most `MAX_ALIGN`.
    pub align: u64,
    /// File contents (`None` for NOBITS).
    pub contents: Option<&'d [u8]>,
    pub executable: bool,
    pub eh_frame: bool,
    pub array: Option<(ArrayKind, u32)>,
}

/// What a symbol-table entry refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Def {
    /// The null symbol: value 0.
    Null,
    /// Undefined; replaced by `bind` with one of the four kinds below.
    Undefined {
        weak: bool,
    },
    /// Bound to a definition in the image: symbol `symbol` of object `object` of the set
    /// (an undefined symbol, or a weak or COMMON definition that another one overrides).
    Elsewhere {
        object: usize,
        symbol: usize,
    },
    /// An address outside the image (from `resolve`, 0 for a missing weak symbol, or another
    /// object's absolute symbol).
    Resolved(u64),
    /// `__dso_handle` that nothing defines: the loader's own, one for the whole set.
    DsoHandle,
    /// `_GLOBAL_OFFSET_TABLE_`: the image's GOT.
    GotBase,
    /// Defined at this offset in a placed section.
    Section {
        section: usize,
        value: u64,
    },
    Absolute(u64),
    /// COMMON: allocated in the data class; `offset` set by the layout.
    Common {
        offset: u64,
    },
    /// Defined in a section that is not loaded (debug info, ...).
    NotLoaded,
}

impl Def {
    /// Whether the symbol's address may be out of ±2 GB reach of the image (a call to it may
    /// need a stub).
    pub(crate) fn external(self) -> bool {
        matches!(self, Def::Null | Def::Undefined { .. } | Def::Absolute(_) | Def::Resolved(_))
    }
}

/// A COMMON symbol to allocate: (symbol index, size, alignment).
pub(crate) type Common = (usize, u64, u64);

pub(crate) fn malformed(what: impl std::fmt::Display) -> LoadError {
    LoadError::Malformed(what.to_string())
}

pub(crate) fn align_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Reserves `size` bytes aligned to `align` at `cursor`; returns their offset.
pub(crate) fn reserve(cursor: &mut u64, size: u64, align: u64) -> Result<u64, LoadError> {
    let offset = align_up(*cursor, align).ok_or_else(|| LoadError::Unsupported("image larger than 2 GiB".into()))?;
    let end = offset.checked_add(size).filter(|&e| e <= MAX_IMAGE);
    *cursor = end.ok_or_else(|| LoadError::Unsupported("image larger than 2 GiB".into()))?;
    Ok(offset)
}

pub(crate) fn check_align(align: u64, what: &dyn Fn() -> String) -> Result<u64, LoadError> {
    let align = align.max(1);
    if !align.is_power_of_two() {
        return Err(malformed(format!("alignment {align} of {} is not a power of two", what())));
    }
    if align > MAX_ALIGN {
        return Err(LoadError::Unsupported(format!("alignment {align} of {} (above {MAX_ALIGN})", what())));
    }
    Ok(align)
}

/// `.init_array.101` → 101; no suffix sorts after every priority.
fn priority(name: &[u8], prefix: &[u8]) -> u32 {
    match name.strip_prefix(prefix) {
        Some([b'.', digits @ ..]) => std::str::from_utf8(digits).ok().and_then(|d| d.parse().ok()).unwrap_or(65536),
        _ => 65536,
    }
}

/// One parsed object.
pub(crate) struct Linker<'d> {
    data: &'d [u8],
    sections: SectionTable<'d, Elf, &'d [u8]>,
    pub symtab: SymbolTable<'d, Elf, &'d [u8]>,
}

impl<'d> Linker<'d> {
    pub(crate) fn section_name(&self, index: usize) -> String {
        self.sections
            .section(SectionIndex(index))
            .and_then(|s| self.sections.section_name(LE, s))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|_| format!("section {index}"))
    }

    pub(crate) fn symbol_name(&self, index: usize) -> String {
        if index == 0 {
            return String::new();
        }
        let Ok(sym) = self.symtab.symbol(SymbolIndex(index)) else { return format!("symbol {index}") };
        if sym.st_type() == elf::STT_SECTION {
            if let Ok(Some(section)) = self.symtab.symbol_section(LE, sym, SymbolIndex(index)) {
                return self.section_name(section.0);
            }
        }
        match self.symtab.symbol_name(LE, sym) {
            Ok(n) if !n.is_empty() => String::from_utf8_lossy(n).into_owned(),
            _ => format!("symbol {index}"),
        }
    }

    /// Decides which sections are loaded and where each class of them goes.
    fn plan_sections(&self) -> Result<Vec<Option<Placed<'d>>>, LoadError> {
        let mut placed = Vec::with_capacity(self.sections.len());
        for section in self.sections.iter() {
            let flags = section.sh_flags(LE);
            let sh_type = section.sh_type(LE);
            if flags & u64::from(elf::SHF_ALLOC) == 0 || sh_type == elf::SHT_NULL {
                placed.push(None); // debug info, .comment, .note.GNU-stack, .llvm_addrsig, groups
                continue;
            }
            let name = self.sections.section_name(LE, section).map_err(malformed)?;
            if flags & u64::from(elf::SHF_TLS) != 0 {
                return Err(LoadError::Unsupported(TLS.into()));
            }
            let executable = flags & u64::from(elf::SHF_EXECINSTR) != 0;
            let writable = flags & u64::from(elf::SHF_WRITE) != 0;
            if executable && writable {
                return Err(LoadError::Unsupported(format!("writable code section {}", String::from_utf8_lossy(name))));
            }
            let array = match sh_type {
                elf::SHT_PROGBITS | elf::SHT_NOBITS | elf::SHT_NOTE | SHT_X86_64_UNWIND => None,
                elf::SHT_INIT_ARRAY => Some((ArrayKind::Init, priority(name, b".init_array"))),
                elf::SHT_FINI_ARRAY => Some((ArrayKind::Fini, priority(name, b".fini_array"))),
                elf::SHT_PREINIT_ARRAY => Some((ArrayKind::Preinit, priority(name, b".preinit_array"))),
                other => return Err(LoadError::Unsupported(format!("allocatable section {} of type {other:#x}", String::from_utf8_lossy(name)))),
            };
            for legacy in [&b".ctors"[..], b".dtors"] {
                if name == legacy || name.strip_prefix(legacy).is_some_and(|rest| rest.starts_with(b".")) {
                    return Err(LoadError::Unsupported(format!("{} sections (use .init_array)", String::from_utf8_lossy(legacy))));
                }
            }
            let size = section.sh_size(LE);
            if array.is_some() && size % 8 != 0 {
                return Err(malformed(format!("{} is not an array of pointers", String::from_utf8_lossy(name))));
            }
            let align = check_align(section.sh_addralign(LE), &|| String::from_utf8_lossy(name).into_owned())?;
            let nobits = sh_type == elf::SHT_NOBITS;
            let contents = if nobits { None } else { Some(section.data(LE, self.data).map_err(malformed)?) };
            let class = if executable {
                Class::Code
            } else if writable && !name.starts_with(b".data.rel.ro") {
                Class::Data
            } else {
                Class::ReadOnly
            };
            placed.push(Some(Placed {
                class,
                offset: 0,
                size,
                align,
                contents,
                executable,
                eh_frame: sh_type == SHT_X86_64_UNWIND || name == b".eh_frame",
                array,
            }));
        }
        Ok(placed)
    }

    /// What every symbol refers to; refuses TLS and ifuncs.
    fn plan_symbols(&self, placed: &[Option<Placed<'d>>]) -> Result<(Vec<Def>, Vec<Common>), LoadError> {
        let mut defs = Vec::with_capacity(self.symtab.len());
        let mut commons = Vec::new(); // (symbol, size, align)
        for (index, sym) in self.symtab.enumerate() {
            if index.0 == 0 {
                defs.push(Def::Null);
                continue;
            }
            match sym.st_type() {
                elf::STT_TLS => return Err(LoadError::Unsupported(TLS.into())),
                elf::STT_GNU_IFUNC => return Err(LoadError::Unsupported(format!("GNU indirect function {}", self.symbol_name(index.0)))),
                _ => {}
            }
            let shndx = sym.st_shndx(LE);
            let def = match shndx {
                elf::SHN_UNDEF => Def::Undefined { weak: sym.st_bind() == elf::STB_WEAK },
                elf::SHN_ABS => Def::Absolute(sym.st_value(LE)),
                elf::SHN_COMMON | SHN_X86_64_LCOMMON => {
                    let align = check_align(sym.st_value(LE), &|| format!("COMMON symbol {}", self.symbol_name(index.0)))?;
                    commons.push((index.0, sym.st_size(LE), align));
                    Def::Common { offset: 0 }
                }
                _ => {
                    let section = self
                        .symtab
                        .symbol_section(LE, sym, index)
                        .map_err(malformed)?
                        .ok_or_else(|| LoadError::Unsupported(format!("symbol {} in special section {shndx:#x}", self.symbol_name(index.0))))?
                        .0;
                    match placed.get(section) {
                        None => return Err(malformed(format!("symbol {} in section {section}, which does not exist", index.0))),
                        Some(None) => Def::NotLoaded,
                        Some(Some(p)) => {
                            let value = sym.st_value(LE);
                            if value > p.size {
                                return Err(malformed(format!("symbol {} lies outside its section", self.symbol_name(index.0))));
                            }
                            Def::Section { section, value }
                        }
                    }
                }
            };
            defs.push(def);
        }
        Ok((defs, commons))
    }

    /// The relocation sections that apply to loaded sections: (target section, entries).
    fn relocation_sections(&self, placed: &[Option<Placed<'d>>]) -> Result<Vec<(usize, &'d [Relocation])>, LoadError> {
        let mut out = Vec::new();
        for section in self.sections.iter() {
            let sh_type = section.sh_type(LE);
            if !matches!(sh_type, elf::SHT_RELA | elf::SHT_REL | SHT_CREL) {
                continue;
            }
            let target = section.sh_info(LE) as usize;
            match placed.get(target) {
                None => return Err(malformed(format!("relocations for section {target}, which does not exist"))),
                Some(None) => continue, // relocations of debug info and other unloaded sections
                Some(Some(_)) => {}
            }
            if sh_type != elf::SHT_RELA {
                return Err(LoadError::Unsupported(format!("REL or CREL relocations for {}", self.section_name(target))));
            }
            let Some((relas, link)) = section.rela(LE, self.data).map_err(malformed)? else { continue };
            if !relas.is_empty() && link != self.symtab.section() {
                return Err(malformed(format!("relocations for {} use a table other than the symbol table", self.section_name(target))));
            }
            out.push((target, relas));
        }
        Ok(out)
    }
}

/// Per-symbol needs found by scanning the relocations.
#[derive(Default, Clone, Copy)]
pub(crate) struct Needs {
    /// Slot in the image's GOT.
    pub got: Option<u32>,
    /// Call stub (jumping through the GOT slot).
    pub stub: Option<u32>,
}

/// How an object's relocations use a symbol (from the scan, before binding).
#[derive(Default, Clone, Copy)]
struct Uses {
    /// Through the GOT.
    got: bool,
    /// As the target of a call or jump that may need a stub if the symbol is external.
    call: bool,
}

fn unsupported_relocation(linker: &Linker<'_>, r_type: u32, target: usize, sym: usize, refusal: Refusal) -> LoadError {
    match refusal {
        Refusal::ThreadLocal => LoadError::Unsupported(TLS.into()),
        Refusal::Unknown => LoadError::UnsupportedRelocation { kind: r_type, section: linker.section_name(target), symbol: linker.symbol_name(sym) },
    }
}

/// One object of a set, from parsing to relocation.
pub(crate) struct Object<'d> {
    pub linker: Linker<'d>,
    /// Per section: where it goes (`None`: not loaded).
    pub placed: Vec<Option<Placed<'d>>>,
    /// Per symbol: what it refers to (bound across the set by `bind`).
    pub defs: Vec<Def>,
    /// The COMMON symbols this object allocates (after binding: those that won).
    pub commons: Vec<Common>,
    /// Relocation sections of loaded sections: (target section, entries).
    pub rel_sections: Vec<(usize, &'d [Relocation])>,
    uses: Vec<Uses>,
    /// Per symbol: its GOT slot and stub (numbered across the set), once bound.
    pub needs: Vec<Needs>,
    /// Per symbol: its final address, once laid out.
    pub addresses: Vec<u64>,
}

impl<'d> Object<'d> {
    /// Parses and checks `data` and plans its sections, symbols and relocations; nothing
    /// is resolved or mapped yet.
    pub(crate) fn parse(data: &'d [u8]) -> Result<Object<'d>, LoadError> {
        let header = Elf::parse(data).map_err(malformed)?;
        header.endian().map_err(|_| malformed("not a little-endian object"))?;
        if header.e_type(LE) != elf::ET_REL {
            return Err(malformed("not a relocatable object (ET_REL)"));
        }
        if header.e_machine(LE) != elf::EM_X86_64 {
            return Err(malformed(format!("object for machine {} rather than x86-64", header.e_machine(LE))));
        }
        let sections = header.sections(LE, data).map_err(malformed)?;
        let symtab = sections.symbols(LE, data, elf::SHT_SYMTAB).map_err(malformed)?;
        let linker = Linker { data, sections, symtab };
        let placed = linker.plan_sections()?;
        let (defs, commons) = linker.plan_symbols(&placed)?;
        let rel_sections = linker.relocation_sections(&placed)?;
        let mut object = Object { linker, placed, defs, commons, rel_sections, uses: Vec::new(), needs: Vec::new(), addresses: Vec::new() };
        object.uses = object.scan()?;
        Ok(object)
    }

    /// Scans the relocations: refuses unknown kinds and bad offsets before anything is
    /// mapped, and records how each symbol is used.
    fn scan(&self) -> Result<Vec<Uses>, LoadError> {
        let linker = &self.linker;
        let nsyms = self.defs.len().max(1);
        let mut uses = vec![Uses::default(); nsyms];
        for &(target, relas) in &self.rel_sections {
            let Some(section) = self.placed[target].as_ref() else { continue };
            for rela in relas {
                let r_type = rela.r_type(LE, false);
                let sym = rela.r_sym(LE, false) as usize;
                if sym >= nsyms {
                    return Err(malformed(format!("relocation in {} refers to symbol {sym}, past the table", linker.section_name(target))));
                }
                let kind = reloc::classify(r_type).map_err(|r| unsupported_relocation(linker, r_type, target, sym, r))?;
                if kind.formula == Formula::None {
                    continue;
                }
                let offset = rela.r_offset(LE);
                let fits = offset.checked_add(kind.field.width() as u64).is_some_and(|end| end <= section.size);
                if !fits || section.contents.is_none() {
                    return Err(malformed(format!("relocation at {offset:#x} outside the contents of {}", linker.section_name(target))));
                }
                if sym != 0 && self.defs[sym] == Def::NotLoaded {
                    return Err(malformed(format!(
                        "{} refers to {}, which is in a section that is not loaded",
                        linker.section_name(target),
                        linker.symbol_name(sym)
                    )));
                }
                let u = &mut uses[sym];
                u.call |= kind.formula == Formula::Call || (kind.formula == Formula::PcRelative && section.executable && kind.field == Field::Signed32);
                u.got |= matches!(kind.formula, Formula::GotPcRelative | Formula::GotOffset);
            }
        }
        Ok(uses)
    }

    /// Numbers this object's GOT slots and stubs after those of the objects before it:
    /// a stub (and its GOT slot) for every external symbol a call may target, a GOT slot
    /// for every symbol used through the GOT. Needs the symbols bound.
    pub(crate) fn allocate(&mut self, got_count: &mut u32, stub_count: &mut u32) {
        self.needs = vec![Needs::default(); self.uses.len()];
        for (sym, (u, n)) in self.uses.iter().zip(self.needs.iter_mut()).enumerate() {
            let def = if sym == 0 { Def::Null } else { self.defs.get(sym).copied().unwrap_or(Def::Null) };
            let stub = u.call && def.external();
            if u.got || stub {
                n.got = Some(*got_count);
                *got_count += 1;
            }
            if stub {
                n.stub = Some(*stub_count);
                *stub_count += 1;
            }
        }
    }
}
