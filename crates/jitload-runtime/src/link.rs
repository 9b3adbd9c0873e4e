//! The link contract: what happens between "these are a module's compiled objects" and "its
//! init function may run", and again when its code is freed — once, for both linkers (ORC in
//! the engine, `jitload-objload` on the warm path), so the two cannot drift.
//!
//! Linking: the module's dependent libraries are opened into its scope, the linker places and
//! relocates the objects, the init symbol, the lowered constructors/destructors and every
//! export are looked up (with their weakness), JIT'd functions go to the perf map when asked,
//! the destructors are registered to run at exit, and the exports join the shared scope.
//! Releasing: refused while threads may still run the module's `thread_local` destructors,
//! another module links against its exports, or the module uses a function through which
//! something other than its module objects may still reach it (`crate::outlive`); else its
//! destructors run, then the linker frees the memory.

use std::collections::HashMap;
use std::sync::Arc;

use crate::compiled::{Compiled, CTORS, DTORS};
use crate::dynlib::SharedLibrary;
use crate::resolve::{ModuleScope, SharedScope};

/// A linker: places compiled objects in memory and resolves their symbols.
pub trait Linker {
    /// The linked code, kept (mapped) until [`Linker::free`] or dropped.
    type Code;

    /// Links `objects` of the module file `path`, resolving undefined symbols through
    /// `scope`. `label` names the module (`jitload.<id>:<path>`) where the linker keeps names.
    fn link(&self, label: &str, path: &str, objects: &[Vec<u8>], scope: Arc<ModuleScope>) -> Result<Self::Code, String>;

    /// The address of each of `names`, which must all be defined, and whether that
    /// definition is weak.
    fn lookup(&self, code: &Self::Code, names: &[&str]) -> Result<Vec<(u64, bool)>, String>;

    /// The address of `name`, if the code defines it.
    fn lookup_optional(&self, code: &Self::Code, name: &str) -> Option<u64>;

    /// The code's functions as (address, size, name), for the perf map; `known` holds the
    /// addresses looked up so far.
    fn functions(&self, code: &Self::Code, objects: &[Vec<u8>], known: &HashMap<String, u64>) -> Vec<(u64, u64, String)>;

    /// Frees the code's memory (nothing of it may run afterwards).
    fn free(&self, code: Self::Code, path: &str);
}

/// A module whose code is linked and whose exports are in the shared scope.
pub struct Linked<C> {
    pub id: u64,
    pub path: String,
    /// The address of the symbol the caller required (e.g. `PyInit_<name>`), if it named one.
    pub required_address: Option<u64>,
    /// Runs the module's static constructors (`llvm.global_ctors`), if it has any.
    pub constructors: Option<u64>,
    pub dependent_libraries: Vec<String>,
    /// The module's lowered static destructors, run at exit or on release.
    pub destructors: Option<u64>,
    /// The module's own `__dso_handle` (C++): what its `__cxa_atexit` registrations name.
    pub dso_handle: Option<u64>,
    /// A symbol the module uses that can leave pointers into it beyond its module objects
    /// (see `crate::outlive`): its code is then never released.
    pub pinned_by: Option<String>,
    pub shared: Arc<SharedScope>,
    pub code: C,
}

/// Why a module could not be linked.
#[derive(Debug)]
pub enum LinkFailure {
    DependentLibrary { library: String, reason: String },
    Link(String),
}

/// The scope a module with these dependent `libraries` resolves in.
pub fn open_scope(shared: &Arc<SharedScope>, libraries: &[String]) -> Result<ModuleScope, LinkFailure> {
    let mut dependencies = Vec::with_capacity(libraries.len());
    for library in libraries {
        let opened = SharedLibrary::open(library)
            .map_err(|reason| LinkFailure::DependentLibrary { library: library.clone(), reason })?;
        dependencies.push(Arc::new(opened));
    }
    Ok(ModuleScope { shared: shared.clone(), dependencies })
}

/// Links `compiled` as module `id` (see the module's notes). `required` is a symbol the
/// module must define (its init function), returned as `required_address`.
pub fn link<L: Linker>(
    linker: &L,
    scope: ModuleScope,
    id: u64,
    path: &str,
    compiled: Compiled,
    required: Option<&str>,
) -> Result<Linked<L::Code>, LinkFailure> {
    let pinned_by = crate::outlive::pinning_symbol(&compiled.undefined).map(str::to_string);
    let Compiled { objects, exports, dependent_libraries, has_ctors, has_dtors, .. } = compiled;
    let shared = scope.shared.clone();
    let code = linker.link(&format!("jitload.{id}:{path}"), path, &objects, Arc::new(scope)).map_err(LinkFailure::Link)?;

    let mut wanted: Vec<&str> = Vec::with_capacity(exports.len() + 3);
    wanted.extend(required);
    if has_ctors {
        wanted.push(CTORS);
    }
    if has_dtors {
        wanted.push(DTORS);
    }
    wanted.extend(exports.iter().map(String::as_str));
    let found = linker.lookup(&code, &wanted).map_err(LinkFailure::Link)?;
    if crate::debug::perf_map_enabled() {
        let known = wanted.iter().map(|w| w.to_string()).zip(found.iter().map(|&(a, _)| a)).collect();
        crate::debug::write_perf_map(&linker.functions(&code, &objects, &known));
    }
    let weak: Vec<&str> = wanted.iter().zip(&found).filter(|(_, f)| f.1).map(|(n, _)| *n).collect();
    let mut addresses = found.iter().map(|&(a, _)| a);
    let required_address = required.and_then(|_| addresses.next());
    let constructors = if has_ctors { addresses.next() } else { None };
    let destructors = if has_dtors { addresses.next() } else { None };
    if let Some(d) = destructors {
        crate::exit::at_exit(d);
    }
    let dso_handle = linker.lookup_optional(&code, "__dso_handle");
    let exported: Vec<(String, u64)> = exports.iter().cloned().zip(addresses).collect();
    shared.add_exports(id, path, &weak, exported);
    log::debug!("loaded {path} as jitload.{id}");
    Ok(Linked {
        id,
        path: path.to_string(),
        required_address,
        constructors,
        dependent_libraries,
        destructors,
        dso_handle,
        pinned_by,
        shared,
        code,
    })
}

/// Frees a linked module's code (see the module's notes); refused (the module handed back)
/// while threads may still run its thread-exit destructors, something else may reach its
/// code, or other modules link against it.
pub fn release<L: Linker>(linker: &L, module: Linked<L::Code>) -> Result<(), Box<Linked<L::Code>>> {
    if module.dso_handle.is_some_and(crate::cxx::has_thread_destructors) {
        return Err(Box::new(module));
    }
    if let Some(symbol) = &module.pinned_by {
        log::debug!("jitload: keeping the code of {} for the life of the process: it uses {symbol}", module.path);
        return Err(Box::new(module));
    }
    if !module.shared.remove_exports(module.id) {
        return Err(Box::new(module));
    }
    crate::exit::run_before_free(&module.path, module.dso_handle, module.destructors);
    linker.free(module.code, &module.path);
    Ok(())
}
