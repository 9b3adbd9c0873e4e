//! The session-wide part of symbol resolution: what loaded modules export (and which names
//! two files define, an ODR clash) and the libraries the user added.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::dynlib::SharedLibrary;

/// The session-wide part of resolution: jitload exports and user libraries. The process's
/// scope (what imports use) may live in another copy of this crate, in the other native
/// module: see [`crate::scope_table`].
#[derive(Default)]
pub struct ScopeState {
    /// Symbols loaded modules export: name -> (address, id of the module).
    exports: RwLock<HashMap<String, (u64, u64)>>,
    /// Exports that a later module defined again (name -> those modules' ids), and the file
    /// each exporting module came from: a module that needs such a name cannot tell which
    /// definition is meant (an ODR clash).
    duplicates: RwLock<HashMap<String, Vec<u64>>>,
    owner_paths: RwLock<HashMap<u64, String>>,
    /// Exports whose (first) definition is weak.
    weak_exports: RwLock<std::collections::HashSet<String>>,
    /// Modules whose exports another module was linked against (they can never be freed).
    exports_used: RwLock<std::collections::HashSet<u64>>,
    user_libraries: RwLock<Vec<Arc<SharedLibrary>>>,
}

impl ScopeState {
    /// Records what module `owner` exports (the first definition of a name wins; later ones
    /// from another file are remembered as duplicates, see [`crate::resolve::SharedScope::clash`]).
    /// `weak` names definitions the linker may merge (inline functions, templates): those
    /// never clash.
    pub fn add_exports(&self, owner: u64, path: &str, weak: &[&str], symbols: impl IntoIterator<Item = (String, u64)>) {
        self.owner_paths.write().unwrap_or_else(|e| e.into_inner()).insert(owner, path.to_string());
        let paths = self.owner_paths.read().unwrap_or_else(|e| e.into_inner());
        let mut map = self.exports.write().unwrap_or_else(|e| e.into_inner());
        let mut duplicates = self.duplicates.write().unwrap_or_else(|e| e.into_inner());
        let mut weak_names = self.weak_exports.write().unwrap_or_else(|e| e.into_inner());
        for (name, address) in symbols {
            let is_weak = weak.contains(&name.as_str());
            match map.get(&name) {
                Some(_) if is_weak || weak_names.contains(&name) => {}
                // The same file loaded again (a reload) replaces, it does not clash.
                Some(&(_, first)) if paths.get(&first).map(String::as_str) != Some(path) => {
                    duplicates.entry(name).or_default().push(owner);
                }
                Some(_) => {}
                None => {
                    if is_weak {
                        weak_names.insert(name.clone());
                    }
                    map.insert(name, (address, owner));
                }
            }
        }
    }

    /// When loaded modules from different files define `symbol`, their files (first
    /// definition first): a module that needs it has two candidates and jitload will not
    /// pick one silently.
    pub fn clash(&self, symbol: &str) -> Option<Vec<String>> {
        let duplicates = self.duplicates.read().unwrap_or_else(|e| e.into_inner());
        let others = duplicates.get(symbol).filter(|o| !o.is_empty())?;
        let &(_, first) = self.exports.read().unwrap_or_else(|e| e.into_inner()).get(symbol)?;
        let paths = self.owner_paths.read().unwrap_or_else(|e| e.into_inner());
        let mut files: Vec<String> = std::iter::once(first).chain(others.iter().copied()).filter_map(|o| paths.get(&o).cloned()).collect();
        files.dedup();
        (files.len() > 1).then_some(files)
    }

    /// Forgets module `owner`'s exports, unless another module was linked against them
    /// (then it returns false and nothing changes).
    pub fn remove_exports(&self, owner: u64) -> bool {
        if self.exports_used.read().unwrap_or_else(|e| e.into_inner()).contains(&owner) {
            return false;
        }
        let mut weak_names = self.weak_exports.write().unwrap_or_else(|e| e.into_inner());
        self.exports.write().unwrap_or_else(|e| e.into_inner()).retain(|name, (_, o)| {
            let keep = *o != owner;
            if !keep {
                weak_names.remove(name);
            }
            keep
        });
        drop(weak_names);
        self.duplicates.write().unwrap_or_else(|e| e.into_inner()).retain(|_, owners| {
            owners.retain(|o| *o != owner);
            !owners.is_empty()
        });
        self.owner_paths.write().unwrap_or_else(|e| e.into_inner()).remove(&owner);
        true
    }

    pub fn add_user_library(&self, library: Arc<SharedLibrary>) {
        let mut libs = self.user_libraries.write().unwrap_or_else(|e| e.into_inner());
        if !libs.iter().any(|l| l.path == library.path) {
            libs.push(library);
        }
    }

    pub fn user_libraries(&self) -> Vec<String> {
        self.user_libraries.read().unwrap_or_else(|e| e.into_inner()).iter().map(|l| l.path.clone()).collect()
    }

    /// The address of an export of a loaded module; a module that resolves against it can
    /// never be freed before this one, so the exporter is marked as used.
    pub fn lookup_export(&self, symbol: &str) -> Option<u64> {
        let &(a, owner) = self.exports.read().unwrap_or_else(|e| e.into_inner()).get(symbol)?;
        self.exports_used.write().unwrap_or_else(|e| e.into_inner()).insert(owner);
        Some(a)
    }

    /// `symbol` in the libraries the user added, first added first.
    pub fn lookup_user_library(&self, symbol: &str) -> Option<u64> {
        self.user_libraries.read().unwrap_or_else(|e| e.into_inner()).iter().find_map(|l| l.symbol(symbol))
    }
}
