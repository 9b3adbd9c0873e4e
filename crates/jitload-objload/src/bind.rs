//! Symbol binding across a set of objects, as a static linker does for the objects of one
//! link: each global name has at most one definition in the set (a strong one beats COMMON
//! ones, which beat weak ones; the first COMMON or weak wins among equals and COMMON sizes
//! and alignments merge; two strong definitions are an error), every reference to the name
//! (undefined symbols, and the definitions that lost) is bound to it, and only the names
//! the set does not define go to the caller's `resolve`.

use std::collections::hash_map::{Entry, HashMap};

use object::elf;
use object::read::elf::Sym;
use object::{LittleEndian as LE, SymbolIndex};

use crate::load::{malformed, Def, Linker, Object, STB_GNU_UNIQUE};
use crate::LoadError;

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

/// Every global name the set defines, with the definition that wins.
fn definitions<'d>(set: &[Object<'d>]) -> Result<HashMap<&'d str, Definition>, LoadError> {
    let mut table: HashMap<&'d str, Definition> = HashMap::new();
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
                    } else if strength > old.strength {
                        *old = new;
                    }
                }
            }
        }
    }
    Ok(table)
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
    table: HashMap<&'d str, Definition>,
    resolve: &'r dyn Fn(&str) -> Option<u64>,
    resolved: HashMap<&'d str, Option<u64>>,
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

    /// The new bindings of object `object`'s symbols: (symbol, binding).
    fn object(&mut self, set: &[Object<'d>], object: usize) -> Result<Vec<(usize, Def)>, LoadError> {
        let o = &set[object];
        let mut bindings = Vec::new();
        for (index, def) in o.defs.iter().enumerate() {
            let binding = match *def {
                Def::Undefined { weak } => self.undefined(set, undefined_name(&o.linker, index)?, weak),
                // A definition that another one overrides.
                Def::Section { .. } | Def::Absolute(_) | Def::Common { .. } => global_name(&o.linker, index)
                    .and_then(|name| self.table.get(name))
                    .filter(|d| (d.object, d.symbol) != (object, index))
                    .map(|d| bound_to(set, d)),
                _ => None,
            };
            if let Some(binding) = binding {
                bindings.push((index, binding));
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
    let table = definitions(set)?;
    let mut binder = Binder { table, resolve, resolved: HashMap::new(), missing: Vec::new(), dso_handle: false };
    for object in 0..set.len() {
        let bindings = binder.object(set, object)?;
        let o = &mut set[object];
        for (index, binding) in bindings {
            o.defs[index] = binding;
        }
        // COMMON symbols that lost are not allocated; the winners get the merged size.
        let (linker, defs) = (&o.linker, &o.defs);
        o.commons.retain(|c| matches!(defs.get(c.0), Some(Def::Common { .. })));
        for c in &mut o.commons {
            if let Some((size, align)) = global_name(linker, c.0).and_then(|n| binder.table.get(n)).and_then(|d| d.common) {
                (c.1, c.2) = (size, align);
            }
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
