//! Symbol binding across a set of objects, as a static linker does for the objects of one
//! link: each global name has at most one definition in the set (a strong one beats COMMON
//! ones, which beat weak ones; the first COMMON or weak wins among equals and COMMON sizes
//! and alignments merge; two strong definitions are an error), every reference to the name
//! (undefined symbols, and the definitions that lost) is bound to it, and only the names
//! the set does not define go to the caller's `resolve`.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use object::elf;
use object::read::elf::Sym;
use object::{LittleEndian as LE, SymbolIndex};

use crate::load::{malformed, Def, Linker, Object, STB_GNU_UNIQUE};
use crate::LoadError;

/// The Fx hash (rustc's): symbol names hash several times faster than with SipHash, which
/// matters on the warm path (a module has thousands of names); the names come from our
/// own cache, so flooding is not a concern.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().unwrap_or_default()));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ rest.len() as u64);
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type Map<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Strength {
    /// `STB_WEAK` (and `STB_GNU_UNIQUE`, whose copies are meant to be one).
    Weak,
    Common,
    Strong,
}

/// The definition a global name binds to.
struct Definition {
    object: usize,
    symbol: usize,
    strength: Strength,
    /// For a COMMON winner: the largest size and alignment of the name's COMMON symbols.
    common: Option<(u64, u64)>,
}

/// The outcome of binding.
pub(crate) struct Bound<'d> {
    /// Every defined global name: (name, object, symbol, size when COMMON).
    pub exports: Vec<(&'d str, usize, usize, Option<u64>)>,
    /// Whether some object uses `__dso_handle` and neither the set nor `resolve` has one.
    pub dso_handle: bool,
}

/// The name of a global, weak or unique symbol, if it is valid UTF-8 and not empty.
fn global_name<'d>(linker: &Linker<'d>, index: usize) -> Option<&'d str> {
    let sym = linker.symtab.symbol(SymbolIndex(index)).ok()?;
    if !matches!(sym.st_bind(), elf::STB_GLOBAL | elf::STB_WEAK | STB_GNU_UNIQUE) {
        return None;
    }
    let name = std::str::from_utf8(linker.symtab.symbol_name(LE, sym).ok()?).ok()?;
    (!name.is_empty()).then_some(name)
}

/// The set's global definitions: each name with the definition that wins.
struct Definitions<'d> {
    table: Map<&'d str, Definition>,
    /// The definitions that lost: (object, symbol, name).
    losers: Vec<(usize, usize, &'d str)>,
    /// Names with several COMMON symbols.
    merged: Vec<&'d str>,
}

/// Every global name the set defines, with the definition that wins.
fn definitions<'d>(set: &[Object<'d>]) -> Result<Definitions<'d>, LoadError> {
    let symbols = set.iter().map(|o| o.defs.len()).sum();
    let mut table = Map::with_capacity_and_hasher(symbols, Default::default());
    let (mut losers, mut merged) = (Vec::new(), Vec::new());
    for (object, o) in set.iter().enumerate() {
        for (symbol, def) in o.defs.iter().enumerate() {
            if !matches!(def, Def::Section { .. } | Def::Absolute(_) | Def::Common { .. }) {
                continue;
            }
            let Some(name) = global_name(&o.linker, symbol) else { continue };
            let Ok(sym) = o.linker.symtab.symbol(SymbolIndex(symbol)) else { continue };
            let strength = match def {
                Def::Common { .. } => Strength::Common,
                _ if sym.st_bind() == elf::STB_GLOBAL => Strength::Strong,
                _ => Strength::Weak,
            };
            // The alignment was checked to be a power of two when the symbol was planned.
            let common = (strength == Strength::Common).then(|| (sym.st_size(LE), sym.st_value(LE).max(1)));
            let new = Definition { object, symbol, strength, common };
            match table.entry(name) {
                Entry::Vacant(e) => {
                    e.insert(new);
                }
                Entry::Occupied(mut e) => {
                    let old = e.get_mut();
                    if old.strength == Strength::Strong && strength == Strength::Strong {
                        return Err(LoadError::DuplicateSymbol { name: name.to_string(), first: old.object, second: object });
                    }
                    if let (Some(a), Some(b)) = (old.common, new.common) {
                        old.common = Some((a.0.max(b.0), a.1.max(b.1)));
                        merged.push(name);
                        losers.push((object, symbol, name));
                    } else if strength > old.strength {
                        losers.push((old.object, old.symbol, name));
                        *old = new;
                    } else {
                        losers.push((object, symbol, name));
                    }
                }
            }
        }
    }
    Ok(Definitions { table, losers, merged })
}

/// What a reference to `d` becomes.
fn bound_to(set: &[Object<'_>], d: &Definition) -> Def {
    match set[d.object].defs[d.symbol] {
        Def::Absolute(value) => Def::Resolved(value),
        _ => Def::Elsewhere { object: d.object, symbol: d.symbol },
    }
}

/// The name of undefined symbol `index` (an error if it is not UTF-8).
fn undefined_name<'d>(linker: &Linker<'d>, index: usize) -> Result<&'d str, LoadError> {
    let sym = linker.symtab.symbol(SymbolIndex(index)).map_err(malformed)?;
    let name = linker.symtab.symbol_name(LE, sym).map_err(malformed)?;
    std::str::from_utf8(name).map_err(|_| malformed(format!("undefined symbol {index} has a name that is not UTF-8")))
}

/// The state of binding: the set's definitions and what `resolve` said about each name.
struct Binder<'r, 'd> {
    table: Map<&'d str, Definition>,
    resolve: &'r dyn Fn(&str) -> Option<u64>,
    resolved: Map<&'d str, Option<u64>>,
    missing: Vec<String>,
    dso_handle: bool,
}

impl<'d> Binder<'_, 'd> {
    /// What an undefined symbol named `name` binds to (`None`: found nowhere, recorded).
    fn undefined(&mut self, set: &[Object<'d>], name: &'d str, weak: bool) -> Option<Def> {
        if name == "_GLOBAL_OFFSET_TABLE_" {
            return Some(Def::GotBase);
        }
        if let Some(d) = self.table.get(name) {
            return Some(bound_to(set, d));
        }
        let resolve = self.resolve;
        match *self.resolved.entry(name).or_insert_with(|| resolve(name)) {
            Some(address) => Some(Def::Resolved(address)),
            None if weak => Some(Def::Resolved(0)),
            None if name == "__dso_handle" => {
                self.dso_handle = true;
                Some(Def::DsoHandle)
            }
            None => {
                self.missing.push(name.to_string());
                None
            }
        }
    }

    /// The bindings of object `object`'s undefined symbols: (symbol, binding).
    fn object(&mut self, set: &[Object<'d>], object: usize) -> Result<Vec<(usize, Def)>, LoadError> {
        let o = &set[object];
        let mut bindings = Vec::new();
        for (index, def) in o.defs.iter().enumerate() {
            if let Def::Undefined { weak } = *def {
                if let Some(binding) = self.undefined(set, undefined_name(&o.linker, index)?, weak) {
                    bindings.push((index, binding));
                }
            }
        }
        Ok(bindings)
    }
}

/// Binds every undefined symbol of the set and every definition that another one
/// overrides: to the set's definition of the name, else to what `resolve` gives (called
/// once per name), else 0 for a weak reference or the loader's `__dso_handle`. All names
/// found nowhere are reported together.
pub(crate) fn bind<'d>(set: &mut [Object<'d>], resolve: &dyn Fn(&str) -> Option<u64>) -> Result<Bound<'d>, LoadError> {
    let Definitions { table, losers, merged } = definitions(set)?;
    // Definitions that lost bind to the winner.
    for (object, symbol, name) in losers {
        if let Some(binding) = table.get(name).map(|d| bound_to(set, d)) {
            set[object].defs[symbol] = binding;
        }
    }
    // COMMON symbols that lost are not allocated; the winners get the merged size.
    for o in set.iter_mut() {
        let defs = &o.defs;
        o.commons.retain(|c| matches!(defs.get(c.0), Some(Def::Common { .. })));
    }
    for name in merged {
        let Some(&Definition { object, symbol, common: Some((size, align)), .. }) = table.get(name) else { continue };
        if let Some(c) = set[object].commons.iter_mut().find(|c| c.0 == symbol) {
            (c.1, c.2) = (size, align);
        }
    }
    let mut binder = Binder { table, resolve, resolved: Map::default(), missing: Vec::new(), dso_handle: false };
    for object in 0..set.len() {
        let bindings = binder.object(set, object)?;
        for (index, binding) in bindings {
            set[object].defs[index] = binding;
        }
    }
    let Binder { table, mut missing, dso_handle, .. } = binder;
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        return Err(LoadError::Unresolved(missing));
    }
    let exports = table.into_iter().map(|(name, d)| (name, d.object, d.symbol, d.common.map(|c| c.0))).collect();
    Ok(Bound { exports, dso_handle })
}
