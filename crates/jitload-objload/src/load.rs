//! The linker proper: sections → layout → symbols → GOT and stubs → relocations →
//! protection → unwind registration.

use object::elf;
use object::read::elf::{FileHeader, Rela, SectionHeader, SectionTable, Sym, SymbolTable};
use object::{LittleEndian as LE, SectionIndex, SymbolIndex};

use crate::mem::{Mapping, PAGE};
use crate::reloc::{self, Field, Formula, Kind, Refusal, Relaxable};
use crate::{ehframe, Exports, LoadError, LoadStats, LoadedObject, SymbolInfo, SymbolKind};

type Elf = elf::FileHeader64<LE>;
type Relocation = elf::Rela64<LE>;

const SHT_X86_64_UNWIND: u32 = 0x7000_0001;
const SHT_CREL: u32 = 0x4000_0014;
const SHN_X86_64_LCOMMON: u16 = 0xff02;
const STB_GNU_UNIQUE: u8 = 10;
/// The image must stay within ±2 GB reach of 32-bit PC-relative references.
const MAX_IMAGE: u64 = 1 << 31;
const MAX_ALIGN: u64 = 1 << 20;
const STUB_SIZE: u64 = 8;
const TLS: &str = "thread-local storage";

/// Where a section (or other piece of the image) goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Read+execute.
    Code = 0,
    /// Read-only after relocation (rodata, eh_frame, relro data, GOT).
    ReadOnly = 1,
    /// Read+write (data, bss, COMMON).
    Data = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayKind {
    Preinit,
    Init,
    Fini,
}

/// A section that is part of the image.
struct Placed<'d> {
    class: Class,
    /// Offset in its class, then (after layout) in the image.
    offset: u64,
    size: u64,
    /// File contents (`None` for NOBITS).
    contents: Option<&'d [u8]>,
    executable: bool,
    eh_frame: bool,
    array: Option<(ArrayKind, u32)>,
}

/// What a symbol-table entry refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Def {
    /// The null symbol: value 0.
    Null,
    Undefined { weak: bool },
    /// Defined at this offset in a placed section.
    Section { section: usize, value: u64 },
    Absolute(u64),
    /// COMMON: allocated in the data class; `offset` set by the layout.
    Common { offset: u64 },
    /// Defined in a section that is not loaded (debug info, ...).
    NotLoaded,
}

/// A COMMON symbol to allocate: (symbol index, size, alignment).
type Common = (usize, u64, u64);

struct Image {
    code_start: u64,
    code_size: u64,
    ro_start: u64,
    ro_size: u64,
    data_start: u64,
    size: u64,
    align: u64,
}

fn malformed(what: impl std::fmt::Display) -> LoadError {
    LoadError::Malformed(what.to_string())
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    value.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Reserves `size` bytes aligned to `align` at `cursor`; returns their offset.
fn reserve(cursor: &mut u64, size: u64, align: u64) -> Result<u64, LoadError> {
    let offset = align_up(*cursor, align).ok_or_else(|| LoadError::Unsupported("image larger than 2 GiB".into()))?;
    let end = offset.checked_add(size).filter(|&e| e <= MAX_IMAGE);
    *cursor = end.ok_or_else(|| LoadError::Unsupported("image larger than 2 GiB".into()))?;
    Ok(offset)
}

fn check_align(align: u64, what: &dyn Fn() -> String) -> Result<u64, LoadError> {
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

struct Linker<'d> {
    data: &'d [u8],
    sections: SectionTable<'d, Elf, &'d [u8]>,
    symtab: SymbolTable<'d, Elf, &'d [u8]>,
}

impl<'d> Linker<'d> {
    fn section_name(&self, index: usize) -> String {
        self.sections
            .section(SectionIndex(index))
            .and_then(|s| self.sections.section_name(LE, s))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_else(|_| format!("section {index}"))
    }

    fn symbol_name(&self, index: usize) -> String {
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
                other => {
                    return Err(LoadError::Unsupported(format!(
                        "allocatable section {} of type {other:#x}",
                        String::from_utf8_lossy(name)
                    )))
                }
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
                elf::STT_GNU_IFUNC => {
                    return Err(LoadError::Unsupported(format!("GNU indirect function {}", self.symbol_name(index.0))))
                }
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
                        .ok_or_else(|| {
                            LoadError::Unsupported(format!("symbol {} in special section {shndx:#x}", self.symbol_name(index.0)))
                        })?
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
struct Needs {
    got: Option<u32>,
    stub: Option<u32>,
}

fn unsupported_relocation(linker: &Linker<'_>, r_type: u32, target: usize, sym: usize, refusal: Refusal) -> LoadError {
    match refusal {
        Refusal::ThreadLocal => LoadError::Unsupported(TLS.into()),
        Refusal::Unknown => LoadError::UnsupportedRelocation {
            kind: r_type,
            section: linker.section_name(target),
            symbol: linker.symbol_name(sym),
        },
    }
}

pub(crate) fn load(data: &[u8], resolve: &dyn Fn(&str) -> Option<u64>) -> Result<LoadedObject, LoadError> {
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

    let mut placed = linker.plan_sections()?;
    let (mut defs, commons) = linker.plan_symbols(&placed)?;
    let rel_sections = linker.relocation_sections(&placed)?;

    // Scan the relocations: refuse unknown kinds and bad offsets before anything is mapped,
    // and count the GOT slots and stubs they need.
    let nsyms = defs.len();
    let mut needs = vec![Needs::default(); nsyms.max(1)];
    let (mut got_count, mut stub_count) = (0u32, 0u32);
    for &(target, relas) in &rel_sections {
        let Some(section) = placed[target].as_ref() else { continue };
        for rela in relas {
            let r_type = rela.r_type(LE, false);
            let sym = rela.r_sym(LE, false) as usize;
            if sym >= nsyms.max(1) {
                return Err(malformed(format!("relocation in {} refers to symbol {sym}, past the table", linker.section_name(target))));
            }
            let kind = reloc::classify(r_type).map_err(|r| unsupported_relocation(&linker, r_type, target, sym, r))?;
            if kind.formula == Formula::None {
                continue;
            }
            let offset = rela.r_offset(LE);
            let fits = offset.checked_add(kind.field.width() as u64).is_some_and(|end| end <= section.size);
            if !fits || section.contents.is_none() {
                return Err(malformed(format!("relocation at {offset:#x} outside the contents of {}", linker.section_name(target))));
            }
            let def = if sym == 0 { Def::Null } else { defs[sym] };
            if def == Def::NotLoaded {
                return Err(malformed(format!(
                    "{} refers to {}, which is in a section that is not loaded",
                    linker.section_name(target),
                    linker.symbol_name(sym)
                )));
            }
            let external = matches!(def, Def::Undefined { .. } | Def::Absolute(_) | Def::Null);
            let wants_stub = external
                && (kind.formula == Formula::Call || (kind.formula == Formula::PcRelative && section.executable && kind.field == Field::Signed32));
            let wants_got = wants_stub || matches!(kind.formula, Formula::GotPcRelative | Formula::GotOffset);
            let n = &mut needs[sym];
            if wants_got && n.got.is_none() {
                n.got = Some(got_count);
                got_count += 1;
            }
            if wants_stub && n.stub.is_none() {
                n.stub = Some(stub_count);
                stub_count += 1;
            }
        }
    }

    // Resolve undefined symbols, all missing ones reported at once.
    let mut addresses = vec![0u64; nsyms];
    let mut missing = Vec::new();
    let mut wants_got_symbol = Vec::new();
    let mut dso_handle = None;
    for (index, def) in defs.iter().enumerate() {
        let Def::Undefined { weak } = *def else { continue };
        let sym = linker.symtab.symbol(SymbolIndex(index)).map_err(malformed)?;
        let name = linker.symtab.symbol_name(LE, sym).map_err(malformed)?;
        let name = std::str::from_utf8(name).map_err(|_| malformed(format!("undefined symbol {index} has a name that is not UTF-8")))?;
        if name == "_GLOBAL_OFFSET_TABLE_" {
            wants_got_symbol.push(index);
            continue;
        }
        match resolve(name) {
            Some(address) => addresses[index] = address,
            None if weak => addresses[index] = 0,
            None if name == "__dso_handle" => dso_handle = Some(index),
            None => missing.push(name.to_string()),
        }
    }
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        return Err(LoadError::Unresolved(missing));
    }

    // Layout: each class in section order, sections with contents before NOBITS ones; then
    // the stubs (code), the GOT (read-only), our __dso_handle and COMMON symbols (data).
    // Everything up to the end of the data class's contents is written (and prefaulted);
    // zero-initialised memory after it is left untouched.
    let mut cursors = [0u64; 3];
    let mut max_align = PAGE;
    let mut place = |cursors: &mut [u64; 3], index: usize, p: &mut Placed<'_>| -> Result<(), LoadError> {
        let section = linker.sections.section(SectionIndex(index)).map_err(malformed)?;
        let align = check_align(section.sh_addralign(LE), &|| linker.section_name(index))?;
        max_align = max_align.max(align);
        // An .eh_frame gets the zero terminator the unwinder looks for after it.
        let size = if p.eh_frame { p.size.checked_add(4).ok_or_else(|| malformed("huge .eh_frame"))? } else { p.size };
        p.offset = reserve(&mut cursors[p.class as usize], size, align)?;
        Ok(())
    };
    for (index, p) in placed.iter_mut().enumerate() {
        if let Some(p) = p.as_mut().filter(|p| p.contents.is_some()) {
            place(&mut cursors, index, p)?;
        }
    }
    let stubs_offset = reserve(&mut cursors[Class::Code as usize], u64::from(stub_count) * STUB_SIZE, 16)?;
    let got_offset = reserve(&mut cursors[Class::ReadOnly as usize], u64::from(got_count) * 8, 8)?;
    let written_data = cursors[Class::Data as usize];
    for (index, p) in placed.iter_mut().enumerate() {
        if let Some(p) = p.as_mut().filter(|p| p.contents.is_none()) {
            place(&mut cursors, index, p)?;
        }
    }
    for &(index, size, align) in &commons {
        max_align = max_align.max(align);
        let offset = reserve(&mut cursors[Class::Data as usize], size, align)?;
        defs[index] = Def::Common { offset };
    }
    let dso_offset = match dso_handle {
        Some(_) => Some(reserve(&mut cursors[Class::Data as usize], 8, 8)?),
        None => None,
    };
    let too_big = || LoadError::Unsupported("image larger than 2 GiB".into());
    let code_size = cursors[0];
    let ro_start = align_up(code_size, max_align).ok_or_else(too_big)?;
    let data_start = align_up(ro_start + cursors[1], max_align).ok_or_else(too_big)?;
    let size = align_up(data_start + cursors[2], PAGE).filter(|&s| s <= MAX_IMAGE).ok_or_else(too_big)?;
    let image = Image { code_start: 0, code_size, ro_start, ro_size: cursors[1], data_start, size, align: max_align };
    let class_start = [image.code_start, image.ro_start, image.data_start];

    let mut mapping = if image.size > 0 {
        Some(Mapping::new(image.size, image.align).map_err(|e| LoadError::Memory(e.to_string()))?)
    } else {
        None
    };
    if let Some(mapping) = mapping.as_mut() {
        mapping.prefault(image.data_start + written_data);
    }
    let base = mapping.as_ref().map_or(0, Mapping::address);
    for p in placed.iter_mut().flatten() {
        p.offset += class_start[p.class as usize];
    }
    let got_base = base + image.ro_start + got_offset;
    let stubs_base = base + stubs_offset;
    for (index, def) in defs.iter().enumerate() {
        match *def {
            Def::Section { section, value } => {
                addresses[index] = base + placed[section].as_ref().map_or(0, |p| p.offset) + value;
            }
            Def::Absolute(value) => addresses[index] = value,
            Def::Common { offset } => addresses[index] = base + image.data_start + offset,
            Def::Null | Def::Undefined { .. } | Def::NotLoaded => {}
        }
    }
    for &index in &wants_got_symbol {
        addresses[index] = got_base;
    }
    if let (Some(index), Some(offset)) = (dso_handle, dso_offset) {
        addresses[index] = base + image.data_start + offset;
    }

    let mut stats = LoadStats { image_size: image.size as usize, got_entries: got_count as usize, stubs: stub_count as usize, ..LoadStats::default() };
    if let Some(mapping) = mapping.as_mut() {
        let memory = mapping.bytes_mut();
        for p in placed.iter().flatten() {
            if let Some(contents) = p.contents {
                memory[p.offset as usize..p.offset as usize + contents.len()].copy_from_slice(contents);
            }
        }
        // The GOT holds every symbol's final address; each stub jumps through its slot.
        for (index, n) in needs.iter().enumerate() {
            let value = addresses.get(index).copied().unwrap_or(0);
            if let Some(slot) = n.got {
                let at = (image.ro_start + got_offset + 8 * u64::from(slot)) as usize;
                memory[at..at + 8].copy_from_slice(&value.to_le_bytes());
                if let Some(stub) = n.stub {
                    let at = stubs_offset + STUB_SIZE * u64::from(stub);
                    let slot_address = got_base + 8 * u64::from(slot);
                    let disp = slot_address as i64 - (base + at + 6) as i64;
                    let disp = i32::try_from(disp).map_err(|_| malformed("stub out of reach of its GOT slot"))?;
                    let at = at as usize;
                    memory[at..at + 2].copy_from_slice(&[0xff, 0x25]); // jmp qword [rip+disp32]
                    memory[at + 2..at + 6].copy_from_slice(&disp.to_le_bytes());
                    memory[at + 6..at + 8].copy_from_slice(&[0xcc, 0xcc]);
                }
            }
        }
        let ctx = Context { linker: &linker, addresses: &addresses, needs: &needs, base, got_base, stubs_base, defs: &defs };
        for &(target, relas) in &rel_sections {
            let Some(section) = placed[target].as_ref() else { continue };
            for rela in relas {
                ctx.apply(memory, section, target, rela, &mut stats)?;
            }
        }
    }

    // Constructors and destructors, in the order the dynamic loader would run them.
    let mut arrays: Vec<(ArrayKind, u32, usize)> =
        placed.iter().enumerate().filter_map(|(i, p)| p.as_ref().and_then(|p| p.array).map(|(k, prio)| (k, prio, i))).collect();
    arrays.sort_by_key(|&(kind, prio, index)| (kind as u8, prio, index));
    let (mut init, mut fini) = (Vec::new(), Vec::new());
    if let Some(mapping) = mapping.as_ref() {
        let memory = mapping.bytes();
        for &(kind, _, index) in &arrays {
            let Some(p) = placed[index].as_ref() else { continue };
            let entries = &memory[p.offset as usize..(p.offset + p.size) as usize];
            for word in entries.chunks_exact(8) {
                let address = u64::from_le_bytes(word.try_into().unwrap_or_default());
                if address == 0 || address == u64::MAX {
                    continue;
                }
                match kind {
                    ArrayKind::Preinit | ArrayKind::Init => init.push(address),
                    ArrayKind::Fini => fini.push(address),
                }
            }
        }
    }
    fini.reverse();

    // Unwind information: checked as the unwinder will read it, then registered once the
    // memory has its final protection.
    let code = base + image.code_start..base + image.code_start + image.code_size;
    let mut frames = Vec::new();
    if let Some(mapping) = mapping.as_ref() {
        let memory = mapping.bytes();
        for (index, p) in placed.iter().enumerate() {
            let Some(p) = p.as_ref().filter(|p| p.eh_frame && p.size >= 4) else { continue };
            let frame = &memory[p.offset as usize..(p.offset + p.size) as usize];
            if frame[..4] == [0, 0, 0, 0] {
                continue;
            }
            ehframe::validate(frame, base + p.offset, code.clone())
                .map_err(|e| malformed(format!("{}: {e}", linker.section_name(index))))?;
            frames.push(base + p.offset);
        }
    }

    if let Some(mapping) = mapping.as_mut() {
        let protect = |m: &mut Mapping, start: u64, len: u64, prot| {
            m.protect(start, align_up(len, PAGE).unwrap_or(len), prot).map_err(|e| LoadError::Memory(e.to_string()))
        };
        protect(mapping, image.code_start, image.code_size, libc::PROT_READ | libc::PROT_EXEC)?;
        protect(mapping, image.ro_start, image.ro_size, libc::PROT_READ)?;
    }
    for &frame in &frames {
        // SAFETY: validated above; the section is followed by four zero bytes (reserved by
        // the layout, never written), lies in the read-only part of the mapping and stays
        // there until `LoadedObject::drop` deregisters it before unmapping.
        unsafe { ehframe::register(frame as *const u8) };
    }
    stats.frames_registered = frames.len();

    let mut exported: Vec<(&str, SymbolInfo)> = Vec::new();
    for (index, sym) in linker.symtab.enumerate() {
        let bind = sym.st_bind();
        if !matches!(bind, elf::STB_GLOBAL | elf::STB_WEAK | STB_GNU_UNIQUE) {
            continue;
        }
        if !matches!(defs.get(index.0), Some(Def::Section { .. } | Def::Absolute(_) | Def::Common { .. })) {
            continue;
        }
        let Ok(name) = linker.symtab.symbol_name(LE, sym) else { continue };
        let Ok(name) = std::str::from_utf8(name) else { continue };
        if name.is_empty() {
            continue;
        }
        let kind = match sym.st_type() {
            elf::STT_FUNC => SymbolKind::Function,
            elf::STT_OBJECT | elf::STT_COMMON => SymbolKind::Data,
            _ if matches!(defs[index.0], Def::Common { .. }) => SymbolKind::Data,
            _ => SymbolKind::Other,
        };
        exported.push((name, SymbolInfo { address: addresses[index.0], size: sym.st_size(LE), kind }));
    }
    let symbols = Exports::new(exported);
    log::debug!(
        "jitload-objload: loaded {} bytes at {base:#x}: {} symbols, {} GOT slots, {} stubs, {} relaxed",
        image.size,
        symbols.len(),
        stats.got_entries,
        stats.stubs,
        stats.relaxed
    );
    let dso_handle = dso_handle.map(|index| addresses[index]);
    Ok(LoadedObject { symbols, init, fini, code, stats, frames, dso_handle, mapping })
}

/// Everything a relocation needs once the layout is fixed.
struct Context<'a, 'd> {
    linker: &'a Linker<'d>,
    addresses: &'a [u64],
    needs: &'a [Needs],
    defs: &'a [Def],
    base: u64,
    got_base: u64,
    stubs_base: u64,
}

impl Context<'_, '_> {
    fn apply(&self, memory: &mut [u8], section: &Placed<'_>, target: usize, rela: &Relocation, stats: &mut LoadStats) -> Result<(), LoadError> {
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
        let s = i128::from(self.addresses.get(sym).copied().unwrap_or(0));
        let a = i128::from(rela.r_addend(LE));
        let p = i128::from(place);
        let needs = self.needs.get(sym).copied().unwrap_or_default();
        let got_slot = |what: &str| -> Result<i128, LoadError> {
            needs.got.map(|slot| 8 * i128::from(slot)).ok_or_else(|| malformed(format!("no GOT slot for {what}")))
        };
        let stub = needs.stub.map(|i| i128::from(self.stubs_base + STUB_SIZE * u64::from(i)));
        let fits32 = |v: i128| (i32::MIN as i128..=i32::MAX as i128).contains(&v);
        let value = match kind.formula {
            Formula::None => return Ok(()),
            Formula::Absolute => s + a,
            Formula::PcRelative => {
                let direct = s + a - p;
                // An out-of-reach `call`/`jmp rel32` to an external function takes its stub.
                let is_branch = section.executable
                    && at >= 2
                    && (matches!(memory[at - 1], 0xe8 | 0xe9) || (memory[at - 2] == 0x0f && memory[at - 1] & 0xf0 == 0x80));
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
            Formula::Size => {
                let size = match self.defs.get(sym) {
                    Some(Def::Null) | None => 0,
                    _ => self.linker.symtab.symbol(SymbolIndex(sym)).map(|s| s.st_size(LE)).unwrap_or(0),
                };
                i128::from(size) + a
            }
        };
        let bytes = kind.field.encode(value).ok_or_else(|| LoadError::RelocationOverflow {
            kind: r_type,
            section: self.linker.section_name(target),
            offset,
            symbol: self.linker.symbol_name(sym),
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
