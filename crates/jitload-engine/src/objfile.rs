//! What a relocatable object file defines and needs, read before it is handed to the JIT
//! linker (so a wrong file is refused with a clear message instead of a link failure).

use object::{Object, ObjectSymbol, SymbolKind};

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
