//! What a relocatable object file defines and needs, read before it is handed to the JIT
//! linker (so a wrong file is refused with a clear message instead of a link failure).

use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SymbolKind};

/// Global names of an object file.
pub struct ObjectSymbols {
    pub defined: Vec<String>,
    pub undefined: Vec<String>,
}

/// Reads the symbol table of a relocatable ELF object for this machine's architecture.
pub fn symbols(bytes: &[u8]) -> Result<ObjectSymbols, String> {
    let file = object::File::parse(bytes).map_err(|e| e.to_string())?;
    if file.kind() != object::ObjectKind::Relocatable {
        return Err(format!("it is a {:?} file, not a relocatable object (.o)", file.kind()));
    }
    let host = if cfg!(target_arch = "x86_64") {
        object::Architecture::X86_64
    } else if cfg!(target_arch = "aarch64") {
        object::Architecture::Aarch64
    } else {
        file.architecture()
    };
    if file.architecture() != host {
        return Err(format!("it is for {:?}, this machine is {host:?}", file.architecture()));
    }
    let mut defined = Vec::new();
    let mut undefined = Vec::new();
    for symbol in file.symbols() {
        if !symbol.is_global() || matches!(symbol.kind(), SymbolKind::File | SymbolKind::Section) {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty() {
            continue;
        }
        if symbol.is_undefined() {
            if !symbol.is_weak() {
                undefined.push(name.to_string());
            }
        } else {
            defined.push(name.to_string());
        }
    }
    defined.sort();
    defined.dedup();
    undefined.sort();
    undefined.dedup();
    Ok(ObjectSymbols { defined, undefined })
}

/// The TLS access model an ELF relocation type belongs to, if it is a TLS relocation of
/// this machine (x86-64 or AArch64).
fn tls_relocation(r_type: u32) -> Option<(&'static str, String)> {
    use object::elf;
    if cfg!(target_arch = "x86_64") {
        let (model, name) = match r_type {
            elf::R_X86_64_TLSGD => ("general-dynamic TLS", "R_X86_64_TLSGD"),
            elf::R_X86_64_DTPMOD64 => ("general-dynamic TLS", "R_X86_64_DTPMOD64"),
            elf::R_X86_64_TLSLD => ("local-dynamic TLS", "R_X86_64_TLSLD"),
            elf::R_X86_64_DTPOFF32 => ("local-dynamic TLS", "R_X86_64_DTPOFF32"),
            elf::R_X86_64_DTPOFF64 => ("local-dynamic TLS", "R_X86_64_DTPOFF64"),
            elf::R_X86_64_GOTTPOFF => ("initial-exec TLS", "R_X86_64_GOTTPOFF"),
            elf::R_X86_64_TPOFF64 => ("initial-exec TLS", "R_X86_64_TPOFF64"),
            elf::R_X86_64_TPOFF32 => ("local-exec TLS", "R_X86_64_TPOFF32"),
            elf::R_X86_64_GOTPC32_TLSDESC => ("TLS descriptor", "R_X86_64_GOTPC32_TLSDESC"),
            elf::R_X86_64_TLSDESC_CALL => ("TLS descriptor", "R_X86_64_TLSDESC_CALL"),
            elf::R_X86_64_TLSDESC => ("TLS descriptor", "R_X86_64_TLSDESC"),
            _ => return None,
        };
        return Some((model, name.to_string()));
    }
    if cfg!(target_arch = "aarch64") && ((512..=573).contains(&r_type) || (1028..=1031).contains(&r_type)) {
        return Some(("TLS", format!("AArch64 TLS relocation {r_type}")));
    }
    None
}

/// Why the JIT linker cannot give this object correct thread-local storage, if it uses any:
/// its first TLS relocation (model, type, symbol and section) or thread-local definition.
///
/// Without a TLS runtime (ORC's ELFNixPlatform, see `cxx`), JITLink either refuses these
/// relocations or links a general-dynamic access to a descriptor glibc misreads, so the code
/// would silently share one copy between threads and lose the initial value. Bitcode gets
/// emulated TLS from the target machine instead; an object can be built with
/// `-femulated-tls` for the same effect.
pub fn thread_local_use(bytes: &[u8]) -> Option<String> {
    let file = object::File::parse(bytes).ok()?;
    for section in file.sections() {
        for (_, relocation) in section.relocations() {
            let RelocationFlags::Elf { r_type } = relocation.flags() else { continue };
            let Some((model, kind)) = tls_relocation(r_type) else { continue };
            let symbol = match relocation.target() {
                RelocationTarget::Symbol(index) => file.symbol_by_index(index).ok().and_then(|s| s.name().ok().filter(|n| !n.is_empty()).map(str::to_string)),
                _ => None,
            };
            let what = symbol.map_or_else(|| "a thread-local".to_string(), |n| format!("thread-local '{n}'"));
            let place = section.name().unwrap_or("?");
            return Some(format!("{what} is accessed through {model} relocations ({kind} in {place})"));
        }
    }
    file.symbols()
        .find(|s| s.kind() == SymbolKind::Tls && !s.is_undefined())
        .map(|s| format!("it defines thread-local '{}' (TLS storage)", s.name().unwrap_or("?")))
}

/// Run-time `(address, size, name)` of every function in `bytes`, for the perf map: each
/// section's load address is inferred from a symbol in it whose address is `known` (the
/// JIT linker moves sections as a whole). Functions in sections with no known symbol are
/// left out.
pub fn function_addresses(bytes: &[u8], known: &std::collections::HashMap<String, u64>) -> Vec<(u64, u64, String)> {
    let Ok(file) = object::File::parse(bytes) else { return Vec::new() };
    let mut base: std::collections::HashMap<object::SectionIndex, u64> = std::collections::HashMap::new();
    for symbol in file.symbols() {
        let (Some(section), Ok(name)) = (symbol.section_index(), symbol.name()) else { continue };
        if let Some(&address) = known.get(name) {
            base.entry(section).or_insert(address.wrapping_sub(symbol.address()));
        }
    }
    let mut out = Vec::new();
    for symbol in file.symbols() {
        if symbol.kind() != SymbolKind::Text || symbol.size() == 0 {
            continue;
        }
        let (Some(section), Ok(name)) = (symbol.section_index(), symbol.name()) else { continue };
        if let Some(&b) = base.get(&section) {
            out.push((b.wrapping_add(symbol.address()), symbol.size(), name.to_string()));
        }
    }
    out
}
