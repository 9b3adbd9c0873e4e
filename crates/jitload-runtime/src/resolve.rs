//! Where undefined symbols come from, in jitload's documented order: other jitload-loaded
//! code, the process (libpython, libc, libm, ... and RTLD_GLOBAL libraries), the module's
//! dependent libraries, libraries the user added, then the compiler runtime.

use std::sync::Arc;

use crate::dynlib::{cxx_runtime_symbol, libc_nonshared, process_symbol, runtime_libraries, SharedLibrary};
use crate::scope_state::ScopeState;

/// A session's shared scope: its own (an independent session) or the process's, which every
/// import and the default session use.
pub enum SharedScope {
    Private(Box<ScopeState>),
    Process,
}

impl SharedScope {
    pub fn add_exports(&self, owner: u64, path: &str, weak: &[&str], symbols: Vec<(String, u64)>) {
        match self {
            SharedScope::Private(s) => s.add_exports(owner, path, weak, symbols),
            SharedScope::Process => crate::scope_table::add_exports(owner, path, weak, &symbols),
        }
    }

    pub fn clash(&self, symbol: &str) -> Option<Vec<String>> {
        match self {
            SharedScope::Private(s) => s.clash(symbol),
            SharedScope::Process => crate::scope_table::clash(symbol),
        }
    }

    pub fn remove_exports(&self, owner: u64) -> bool {
        match self {
            SharedScope::Private(s) => s.remove_exports(owner),
            SharedScope::Process => crate::scope_table::remove_exports(owner),
        }
    }

    pub fn add_user_library(&self, library: Arc<SharedLibrary>) {
        match self {
            SharedScope::Private(s) => s.add_user_library(library),
            SharedScope::Process => crate::scope_table::add_user_library(&library),
        }
    }

    pub fn user_libraries(&self) -> Vec<String> {
        match self {
            SharedScope::Private(s) => s.user_libraries(),
            SharedScope::Process => crate::scope_table::user_libraries(),
        }
    }

    fn lookup_export(&self, symbol: &str) -> Option<u64> {
        match self {
            SharedScope::Private(s) => s.lookup_export(symbol),
            SharedScope::Process => crate::scope_table::lookup_export(symbol),
        }
    }

    fn lookup_user_library(&self, symbol: &str) -> Option<u64> {
        match self {
            SharedScope::Private(s) => s.lookup_user_library(symbol),
            SharedScope::Process => crate::scope_table::lookup_user_library(symbol),
        }
    }
}

/// Resolution for one module: the shared scope plus the module's own dependent libraries.
pub struct ModuleScope {
    pub shared: Arc<SharedScope>,
    pub dependencies: Vec<Arc<SharedLibrary>>,
}

impl ModuleScope {
    /// Resolves `symbol` in jitload's order; `None` if nothing defines it.
    pub fn resolve(&self, symbol: &str) -> Option<u64> {
        // C++ runtime hooks JIT'd code must reach instead of the process's (see `cxx`), and
        // the package context's `PyModule_Create2` (see `pkgcontext`).
        match symbol {
            "__emutls_get_address" => return Some(crate::cxx::emutls_get_address as *const () as usize as u64),
            "__cxa_thread_atexit" => return Some(crate::cxx::cxa_thread_atexit as *const () as usize as u64),
            // CPython's, under the package context jitload keeps where CPython's is not exported.
            "PyModule_Create2" if process_symbol(symbol).is_some() => {
                return Some(crate::pkgcontext::module_create2 as *const () as usize as u64)
            }
            _ => {}
        }
        if let Some(a) = self.shared.lookup_export(symbol) {
            return Some(a);
        }
        if let Some(name) = symbol.strip_prefix("__emutls_v.") {
            // A thread-local a shared library defines: a control object that reaches it.
            let address = self.resolve_native(name)?;
            return crate::cxx::foreign_tls_control(name, address);
        }
        if let Some(a) = self.resolve_native(symbol) {
            return Some(a);
        }
        // A thread-local another loaded module defines is exported as its control object.
        self.shared.lookup_export(&format!("__emutls_v.{symbol}"))
    }

    /// Resolution outside jitload's own modules: the process, dependent libraries, user
    /// libraries, the compiler runtime.
    fn resolve_native(&self, symbol: &str) -> Option<u64> {
        if let Some(a) = process_symbol(symbol) {
            return Some(a);
        }
        if let Some(a) = self.dependencies.iter().find_map(|l| l.symbol(symbol)) {
            return Some(a);
        }
        if let Some(a) = self.shared.lookup_user_library(symbol) {
            return Some(a);
        }
        runtime_libraries()
            .iter()
            .find_map(|l| l.symbol(symbol))
            .or_else(|| libc_nonshared(symbol))
            .or_else(|| cxx_runtime_symbol(symbol))
    }
}

