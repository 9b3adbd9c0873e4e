//! Linking a cached module without LLVM: the cache entry's objects go through
//! `jitload-objload` against the same scope the engine would resolve them in.
//!
//! Anything this path does not handle the way the engine would — no entry, an entry from
//! another format, a dependent library that does not open, a symbol only the compiler-rt
//! archive provides, an ambiguous symbol, an object the loader refuses — is a miss: the
//! importer then asks the engine, which compiles (or links the entry through ORC) and reports
//! real errors with their full diagnostics.

use std::sync::{Arc, OnceLock};

use std::collections::HashMap;

use jitload_objload::{LoadedObject, SymbolKind};
use jitload_runtime::compiled::Compiled;
use jitload_runtime::link::{self, LinkFailure, Linked, Linker};
use jitload_runtime::objcache::ObjectCache;
use jitload_runtime::resolve::{ModuleScope, SharedScope};

/// A module linked from the cache (see `jitload_runtime::link`).
pub struct WarmModule(Linked<LoadedObject>);

impl std::ops::Deref for WarmModule {
    type Target = Linked<LoadedObject>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// The link contract's backend without LLVM (the engine's is ORC).
struct ObjloadLinker;

impl Linker for ObjloadLinker {
    type Code = LoadedObject;

    fn link(&self, _label: &str, _path: &str, objects: &[Vec<u8>], scope: Arc<ModuleScope>) -> Result<LoadedObject, String> {
        let objects: Vec<&[u8]> = objects.iter().map(Vec::as_slice).collect();
        LoadedObject::load_all(&objects, &|name| scope.resolve(name)).map_err(|e| e.to_string())
    }

    fn lookup(&self, code: &LoadedObject, names: &[&str]) -> Result<Vec<(u64, bool)>, String> {
        names
            .iter()
            .map(|name| code.symbol_info(name).map(|info| (info.address, info.weak)).ok_or_else(|| format!("{name} is not in the linked object")))
            .collect()
    }

    fn lookup_optional(&self, code: &LoadedObject, name: &str) -> Option<u64> {
        code.symbol(name)
    }

    fn functions(&self, code: &LoadedObject, _objects: &[Vec<u8>], _known: &HashMap<String, u64>) -> Vec<(u64, u64, String)> {
        code.symbols().filter(|(_, s)| s.kind == SymbolKind::Function && s.size > 0).map(|(n, s)| (s.address, s.size, n.to_string())).collect()
    }

    fn free(&self, code: LoadedObject, _path: &str) {
        drop(code);
    }
}

/// Why the warm path gave the module back to the engine (for `stats` and debug logs).
#[derive(Debug)]
pub enum Miss {
    Disabled,
    NotCached,
    Unusable(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Disabled => f.write_str("the cache is off (or JITLOAD_DEBUGGER is on)"),
            Miss::NotCached => f.write_str("not in the cache"),
            Miss::Unusable(why) => write!(f, "cached, but {why}"),
        }
    }
}

pub fn object_cache() -> &'static ObjectCache {
    static CACHE: OnceLock<ObjectCache> = OnceLock::new();
    CACHE.get_or_init(|| ObjectCache::from_options(&jitload_options::get()))
}

fn process_scope() -> Arc<SharedScope> {
    static SCOPE: OnceLock<Arc<SharedScope>> = OnceLock::new();
    SCOPE.get_or_init(|| Arc::new(SharedScope::Process)).clone()
}

/// Links the cached object for `bytes` (the module file's contents, `path` naming it) and
/// returns it with its init function `init_symbol`, without running anything of it.
pub fn link_cached(bytes: &[u8], path: &str, init_symbol: &str, opt_level: u8) -> Result<WarmModule, Miss> {
    let cache = object_cache();
    if !cache.enabled() || jitload_runtime::debug::debugger_enabled() {
        // Debugger registration is ORC's: with JITLOAD_DEBUGGER the engine links everything.
        return Err(Miss::Disabled);
    }
    let payload = cache.get(&ObjectCache::key(bytes, opt_level)).ok_or(Miss::NotCached)?;
    let compiled = Compiled::from_payload(&payload).ok_or_else(|| Miss::Unusable("entry in another format".into()))?;
    if !compiled.exports.iter().any(|e| e == init_symbol) {
        return Err(Miss::Unusable(format!("{init_symbol} is not defined")));
    }
    let shared = process_scope();
    if let Some(name) = compiled.undefined.iter().find(|s| shared.clash(s).is_some()) {
        return Err(Miss::Unusable(format!("{name} is defined by several loaded modules")));
    }
    let scope = link::open_scope(&shared, &compiled.dependent_libraries)?;
    let id = jitload_runtime::scope_table::next_id();
    Ok(WarmModule(link::link(&ObjloadLinker, scope, id, path, compiled, Some(init_symbol))?))
}

impl From<LinkFailure> for Miss {
    fn from(failure: LinkFailure) -> Miss {
        match failure {
            LinkFailure::DependentLibrary { library, reason } => Miss::Unusable(format!("dependent library {library}: {reason}")),
            LinkFailure::Link(message) => Miss::Unusable(message),
        }
    }
}

impl jitload_pyinit::Loaded for WarmModule {
    fn release(self: Box<Self>) -> Result<(), Box<dyn jitload_pyinit::Loaded>> {
        link::release(&ObjloadLinker, self.0).map_err(|kept| Box::new(WarmModule(*kept)) as Box<dyn jitload_pyinit::Loaded>)
    }
}
