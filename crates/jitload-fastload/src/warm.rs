//! Linking a cached module without LLVM: the cache entry's objects go through
//! `jitload-objload` against the same scope the engine would resolve them in.
//!
//! Anything this path does not handle the way the engine would — no entry, an entry from
//! another format, a dependent library that does not open, a symbol only the compiler-rt
//! archive provides, an ambiguous symbol, an object the loader refuses — is a miss: the
//! importer then asks the engine, which compiles (or links the entry through ORC) and reports
//! real errors with their full diagnostics.

use std::sync::{Arc, OnceLock};

use jitload_objload::{LoadedObject, SymbolKind};
use jitload_runtime::compiled::{Compiled, CTORS, DTORS};
use jitload_runtime::objcache::ObjectCache;
use jitload_runtime::resolve::{Library, ModuleScope, SharedScope};

/// A module linked from the cache.
pub struct WarmModule {
    pub id: u64,
    pub path: String,
    pub init_address: u64,
    pub constructors: Option<u64>,
    destructors: Option<u64>,
    dso_handle: Option<u64>,
    /// A symbol that keeps the code for the life of the process (`jitload_runtime::outlive`).
    pinned_by: Option<String>,
    shared: Arc<SharedScope>,
    object: LoadedObject,
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
    CACHE.get_or_init(ObjectCache::from_env)
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
    let mut dependencies = Vec::new();
    for lib in &compiled.dependent_libraries {
        let opened = Library::open(lib).map_err(|e| Miss::Unusable(format!("dependent library {lib}: {e}")))?;
        dependencies.push(Arc::new(opened));
    }
    let scope = ModuleScope { shared: shared.clone(), dependencies };
    let objects: Vec<&[u8]> = compiled.objects.iter().map(Vec::as_slice).collect();
    let object = LoadedObject::load_all(&objects, &|name| scope.resolve(name)).map_err(|e| Miss::Unusable(e.to_string()))?;
    let symbol = |name: &str| object.symbol(name).ok_or_else(|| Miss::Unusable(format!("{name} is not in the linked object")));
    let init_address = symbol(init_symbol)?;
    let constructors = compiled.has_ctors.then(|| symbol(CTORS)).transpose()?;
    let destructors = compiled.has_dtors.then(|| symbol(DTORS)).transpose()?;
    let dso_handle = object.symbol("__dso_handle");

    let id = jitload_runtime::scope_table::next_id();
    let mut exports = Vec::with_capacity(compiled.exports.len());
    let mut weak = Vec::new();
    for name in &compiled.exports {
        let info = object.symbol_info(name).ok_or_else(|| Miss::Unusable(format!("export {name} is not in the linked object")))?;
        if info.weak {
            weak.push(name.as_str());
        }
        exports.push((name.clone(), info.address));
    }
    if jitload_runtime::debug::perf_map_enabled() {
        let functions: Vec<(u64, u64, String)> = object
            .symbols()
            .filter(|(_, s)| s.kind == SymbolKind::Function && s.size > 0)
            .map(|(n, s)| (s.address, s.size, n.to_string()))
            .collect();
        jitload_runtime::debug::write_perf_map(&functions);
    }
    shared.add_exports(id, path, &weak, exports);
    if let Some(d) = destructors {
        jitload_runtime::exit::at_exit(d);
    }
    let pinned_by = jitload_runtime::outlive::pinning_symbol(&compiled.undefined).map(str::to_string);
    Ok(WarmModule { id, path: path.to_string(), init_address, constructors, destructors, dso_handle, pinned_by, shared, object })
}

impl jitload_pyinit::Loaded for WarmModule {
    /// As the engine's `Session::release`: refused while threads may still run its
    /// thread-exit destructors, when it uses a function that may leave pointers into it
    /// elsewhere (`jitload_runtime::outlive`) or other modules link against it; else its static objects'
    /// destructors run, then its lowered destructors, then the memory goes.
    fn release(self: Box<Self>) -> Result<(), Box<dyn jitload_pyinit::Loaded>> {
        if self.dso_handle.is_some_and(jitload_runtime::cxx::has_thread_destructors) {
            return Err(self);
        }
        if let Some(symbol) = &self.pinned_by {
            log::debug!("jitload: keeping the code of {} for the life of the process: it uses {symbol}", self.path);
            return Err(self);
        }
        if !self.shared.remove_exports(self.id) {
            return Err(self);
        }
        jitload_runtime::exit::run_before_free(&self.path, self.dso_handle, self.destructors);
        drop(self.object);
        Ok(())
    }
}
