//! Libraries: named JITDylibs that code is added to, looked up in, replaced in and removed
//! from while the program runs.
//!
//! Every strong function a library gets from IR or bitcode is renamed to a private body
//! (`name.jitload.<module>`) and reached through a stub (see `stubs`) under its own name, so
//! the library decides where each name leads:
//! - `add` binds a new name's stub to its body; `replace=true` rebinds existing names;
//! - a *lazy* library binds stubs to nothing and compiles a function's body on its first
//!   call, from the module kept in memory;
//! - `define_lazy` asks a [`Provider`] (a Python callback) for the code on the first call;
//! - `define_address` binds a name to an address outside the JIT (a Python callback thunk);
//! - removing a module unbinds its names (a later call reports the error) and frees its
//!   code once no call through the Python API is running (see `jitload_codemem::grace`).
//!
//! Global variables, weak functions and object files' symbols are defined directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use crate::error::EngineError;
use crate::ir;
use crate::llvm::context::Context;
use crate::llvm::guard::guarded;
use crate::llvm::module::{GlobalKind, Module};
use crate::llvm::orc::{Dylib, Tracker};
use crate::llvm::target::OptLevel;
use crate::session::Session;
use crate::stubs::{self, ResolverCtx, StubBlock, STUBS_PER_BLOCK};
use jitload_runtime::dynlib::SharedLibrary;

mod binding;
mod install;
mod names;
mod prepare;

use binding::{Stub, StubTable, Target};
use jitload_options::edit_distance;
use names::{body_name, emutls_name, internal_name, user_name};
use prepare::{LazySource, Prepared};

/// How a library compiles what is added to it.
#[derive(Debug, Clone, Copy)]
pub struct LibraryOptions {
    pub opt_level: OptLevel,
    /// Compile each function on its first call instead of when its module is added.
    pub lazy: bool,
    /// Parse, check and compile added IR and bitcode in a forked child process with the
    /// import path's limits (see `isolate`), the default; `false` compiles in-process, for
    /// trusted IR built in memory (no fork, but no memory bound and no way to stop LLVM).
    pub isolate: bool,
}

impl Default for LibraryOptions {
    fn default() -> Self {
        LibraryOptions { opt_level: OptLevel::O2, lazy: false, isolate: true }
    }
}

/// Code handed back by a [`Provider`]: IR text or bitcode (told apart by content), or a
/// relocatable object file.
pub enum Generated {
    Ir(Vec<u8>),
    Object(Vec<u8>),
}

/// Produces the code for a symbol on its first call (`Library::define_lazy`).
pub trait Provider: Send + Sync {
    fn generate(&self, symbol: &str) -> Result<Generated, EngineError>;
}

/// Called around blocking waits inside a stub resolution, so the Python layer can release
/// the GIL while another thread finishes generating the code this thread waits for.
pub type WaitHook = fn(&mut dyn FnMut());
static WAIT_HOOK: RwLock<Option<WaitHook>> = RwLock::new(None);

/// Installs the hook used around blocking waits (see [`WaitHook`]).
pub fn set_wait_hook(hook: WaitHook) {
    *WAIT_HOOK.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
}

pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    let hook = *WAIT_HOOK.read().unwrap_or_else(|e| e.into_inner());
    let mut f = Some(f);
    let mut out = None;
    match hook {
        Some(h) => h(&mut || out = f.take().map(|f| f())),
        None => out = f.take().map(|f| f()),
    }
    out.expect("the wait hook runs its argument")
}

/// One added module: what it defines and the memory that holds it.
pub struct ModuleCode {
    pub id: u64,
    pub name: String,
    /// Names reached through stubs (functions).
    pub functions: Vec<String>,
    /// Names defined directly (data, weak functions, object-file symbols).
    pub direct: Vec<String>,
    tracker: Option<Tracker>,
    destructors: OnceLock<u64>,
    /// Set once every name is bound: until then the module is not "superseded", whatever
    /// its stubs say (another thread's add may look at it mid-install).
    installed: AtomicBool,
    /// Keeps a non-JIT target (a callback thunk) alive while the name is bound to it.
    _keepalive: Option<Box<dyn std::any::Any + Send + Sync>>,
}

#[derive(Default)]
struct State {
    modules: BTreeMap<u64, Arc<ModuleCode>>,
    /// Directly defined names and their addresses.
    direct: HashMap<String, (u64, u64)>,
    /// Libraries whose symbols this one can use, in order.
    links: Vec<Library>,
    dependencies: Vec<Arc<SharedLibrary>>,
    removed: bool,
}

struct Inner {
    session: Arc<Session>,
    name: String,
    dylib: Dylib,
    options: LibraryOptions,
    state: Mutex<State>,
    stubs: RwLock<StubTable>,
    resolver: Box<ResolverCtx>,
    removed: AtomicBool,
}

/// A library of JIT'd code (an ORC JITDylib). Cheap to clone; all clones are one library.
#[derive(Clone)]
pub struct Library {
    inner: Arc<Inner>,
}

impl Library {
    /// Creates a library in `session`, searching the session's process scope last.
    pub fn new(session: Arc<Session>, name: &str, options: LibraryOptions) -> Result<Library, EngineError> {
        let id = session.next_id();
        let dylib = session.jit().create_dylib(&format!("jitload.lib.{id}:{name}"));
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let weak = weak.clone();
            Inner {
                session: session.clone(),
                name: name.to_string(),
                dylib,
                options,
                state: Mutex::new(State::default()),
                stubs: RwLock::new(StubTable::default()),
                resolver: Box::new(ResolverCtx {
                    resolve: Box::new(move |slot| match weak.upgrade() {
                        Some(inner) => Library { inner }.resolve_slot(slot as usize),
                        None => {
                            stubs::set_call_error(EngineError::Removed { library: String::new(), what: "a library".into() });
                            stubs::failed_call_address()
                        }
                    }),
                }),
                removed: AtomicBool::new(false),
            }
        });
        let library = Library { inner };
        let weak = Arc::downgrade(&library.inner);
        session.jit().add_resolver(dylib, Arc::new(move |symbol: &str| weak.upgrade().and_then(|inner| Library { inner }.resolve_for_link(symbol))));
        session.jit().add_to_link_order(dylib, session.process_dylib());
        Ok(library)
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn options(&self) -> LibraryOptions {
        self.inner.options
    }

    fn session(&self) -> &Session {
        &self.inner.session
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_live(&self) -> Result<(), EngineError> {
        if self.inner.removed.load(Ordering::Acquire) {
            return Err(EngineError::Removed { library: String::new(), what: format!("library '{}'", self.inner.name) });
        }
        Ok(())
    }

    /// Lets this library use `other`'s symbols (after its own, before the process's).
    pub fn link(&self, other: &Library) -> Result<(), EngineError> {
        self.check_live()?;
        other.check_live()?;
        if Arc::ptr_eq(&self.inner, &other.inner) {
            return Ok(());
        }
        let mut state = self.state();
        if state.links.iter().any(|l| Arc::ptr_eq(&l.inner, &other.inner)) {
            return Ok(());
        }
        self.session().jit().add_to_link_order(self.inner.dylib, other.inner.dylib);
        state.links.push(other.clone());
        Ok(())
    }

    /// Whether module `id` is still part of the library.
    pub fn has_module(&self, id: u64) -> bool {
        self.state().modules.contains_key(&id)
    }

    /// Module ids and names, oldest first.
    pub fn modules(&self) -> Vec<(u64, String)> {
        self.state().modules.values().map(|m| (m.id, m.name.clone())).collect()
    }

    /// The names module `id` defines (functions first, then the rest).
    pub fn module_symbols(&self, id: u64) -> Option<Vec<String>> {
        let state = self.state();
        let m = state.modules.get(&id)?;
        Some(m.functions.iter().chain(&m.direct).filter(|n| !n.starts_with("__emutls_t.")).map(|n| user_name(n).to_string()).collect())
    }

    /// Adds IR text or bitcode, isolated as the library's options say. With `replace`,
    /// functions the library already defines are redirected to the new bodies; without it
    /// they are an error.
    pub fn add_ir(&self, bytes: &[u8], path: &str, replace: bool) -> Result<u64, EngineError> {
        self.add_ir_with(bytes, path, replace, self.inner.options.isolate)
    }

    /// [`Library::add_ir`] with isolation chosen for this call.
    ///
    /// Isolated, the module is parsed, checked and compiled in a forked child under the
    /// import path's memory, time and CPU limits; Ctrl-C or the time limit kill the child.
    /// In-process, the compile runs on a compiler thread while this one waits for it, so
    /// Ctrl-C (the interrupt check) and `JITLOAD_COMPILE_TIMEOUT_S` end the wait at once; the
    /// compile itself cannot be stopped and is abandoned: it finishes in the background and
    /// nothing of it is linked (see `background`). Linking and constructors run on this
    /// thread either way.
    pub fn add_ir_with(&self, bytes: &[u8], path: &str, replace: bool, isolate: bool) -> Result<u64, EngineError> {
        self.check_live()?;
        let id = self.session().next_id();
        let prepared = if isolate {
            self.prepare_isolated(bytes, path, id)?
        } else {
            let (library, owned, label) = (self.clone(), bytes.to_vec(), path.to_string());
            crate::background::run(path, move || library.prepare(&owned, &label, id))?
        };
        self.check_live()?;
        self.install(id, path, prepared, replace, None)
    }

    /// Adds a relocatable object file; its symbols are defined directly (not replaceable).
    pub fn add_object(&self, bytes: &[u8], path: &str) -> Result<u64, EngineError> {
        self.check_live()?;
        let id = self.session().next_id();
        let symbols = crate::objfile::symbols(bytes).map_err(|detail| EngineError::NotBitcode {
            path: path.to_string(),
            detail: format!("not a relocatable object file for this machine: {detail}"),
        })?;
        if let Some(cause) = crate::objfile::thread_local_use(bytes) {
            return Err(EngineError::Link {
                path: path.to_string(),
                message: format!(
                    "{cause}, which the JIT linker cannot give per-thread storage without a TLS runtime; \
                     compile it with -femulated-tls, or add it as bitcode (add_bitcode/add_c use emulated TLS)"
                ),
            });
        }
        let prepared = Prepared {
            objects: vec![bytes.to_vec()],
            functions: Vec::new(),
            direct: symbols.defined,
            undefined: symbols.undefined,
            dependent_libraries: Vec::new(),
            constructors: None,
            destructors: None,
            lazy: None,
        };
        self.install(id, path, prepared, false, None)
    }

    /// Binds `name` to `address` (code outside the JIT, kept alive by `keepalive`).
    pub fn define_address(&self, name: &str, address: u64, keepalive: Box<dyn std::any::Any + Send + Sync>, replace: bool) -> Result<u64, EngineError> {
        self.check_live()?;
        let id = self.session().next_id();
        let path = format!("<address of {name}>");
        self.check_duplicates(&[name.to_string()], &[], &path, replace)?;
        let module = Arc::new(ModuleCode {
            id,
            name: path,
            functions: vec![name.to_string()],
            direct: Vec::new(),
            tracker: None,
            destructors: OnceLock::new(),
            installed: AtomicBool::new(false),
            _keepalive: Some(keepalive),
        });
        let stub = self.stub(name)?;
        self.state().modules.insert(id, module.clone());
        self.set_target(&stub, Target::Bound { address, module: id });
        module.installed.store(true, Ordering::Release);
        self.retire_superseded();
        Ok(id)
    }

    /// Makes `name` a function whose code `provider` generates on its first call.
    pub fn define_lazy(&self, name: &str, provider: Arc<dyn Provider>, replace: bool) -> Result<(), EngineError> {
        self.check_live()?;
        self.check_duplicates(&[name.to_string()], &[], &format!("<define_lazy {name}>"), replace)?;
        let stub = self.stub(name)?;
        self.set_target(&stub, Target::Provider(provider));
        self.retire_superseded();
        Ok(())
    }

    /// The address of `symbol`: a function's stub (stable across replace), or a direct
    /// symbol's address.
    pub fn address(&self, symbol: &str) -> Result<u64, EngineError> {
        self.check_live()?;
        let stub = self.stubs().by_name.get(symbol).cloned();
        if let Some(stub) = stub {
            if !stub.live.load(Ordering::Acquire) {
                return Err(EngineError::Removed { library: self.inner.name.clone(), what: format!("'{symbol}'") });
            }
            return Ok(stub.address);
        }
        if let Some(&(address, _)) = self.state().direct.get(symbol) {
            return Ok(address);
        }
        let control = self.state().direct.get(&emutls_name(symbol)).map(|&(a, _)| a);
        if let Some(control) = control {
            // A thread-local: this thread's copy (each thread that asks gets its own).
            // SAFETY: `control` is the module's own control object, linked and alive.
            return Ok(unsafe { jitload_runtime::cxx::thread_local_address(control) });
        }
        Err(EngineError::NotFound { library: self.inner.name.clone(), symbol: symbol.to_string(), close: self.close_names(symbol) })
    }

    /// Whether `symbol` is reached through a stub (a function from IR, `define_lazy` or
    /// `define_address`) rather than defined directly.
    pub fn is_stub(&self, symbol: &str) -> bool {
        self.stubs().by_name.contains_key(symbol)
    }

    /// The word `symbol`'s stub jumps through ([`StubBlock::slot_address`]), if it has one:
    /// calling through the word is calling the stub, one jump fewer. The word lives as long
    /// as the library.
    pub fn jump_slot(&self, symbol: &str) -> Option<u64> {
        self.stubs().by_name.get(symbol).map(|stub| stub.block.slot_address(stub.index))
    }

    /// The module that currently provides `symbol`, if any.
    pub fn owner_of(&self, symbol: &str) -> Option<u64> {
        if let Some(stub) = self.stubs().by_name.get(symbol) {
            let owner = stub.owner.load(Ordering::Acquire);
            return (owner != 0).then_some(owner);
        }
        let state = self.state();
        state.direct.get(symbol).or_else(|| state.direct.get(&emutls_name(symbol))).map(|&(_, m)| m)
    }

    /// Every name the library defines now, sorted.
    pub fn symbols(&self) -> Vec<String> {
        let mut names: Vec<String> = self.stubs().by_name.values().filter(|s| s.live.load(Ordering::Acquire)).map(|s| s.name.clone()).collect();
        names.extend(self.state().direct.keys().filter(|n| !internal_name(n)).map(|n| user_name(n).to_string()));
        names.retain(|n| !internal_name(n));
        names.sort();
        names
    }

    fn close_names(&self, symbol: &str) -> Vec<String> {
        let mut scored: Vec<(usize, String)> = self
            .symbols()
            .into_iter()
            .map(|n| (edit_distance(&n.to_lowercase(), &symbol.to_lowercase()), n))
            .filter(|(d, n)| *d <= (symbol.len().max(n.len()) / 3).max(2))
            .collect();
        scored.sort();
        scored.into_iter().take(3).map(|(_, n)| n).collect()
    }

    /// Removes module `id`: its names stop resolving and its memory is freed as soon as no
    /// call through the Python API is running.
    pub fn remove_module(&self, id: u64) -> Result<(), EngineError> {
        let module = {
            let mut state = self.state();
            let Some(module) = state.modules.remove(&id) else {
                return Err(EngineError::Removed { library: self.inner.name.clone(), what: format!("module {id}") });
            };
            state.direct.retain(|_, (_, owner)| *owner != id);
            module
        };
        for name in &module.functions {
            let stub = self.stubs().by_name.get(name).cloned();
            if let Some(stub) = stub {
                let mut target = blocking(|| stub.target.lock().unwrap_or_else(|e| e.into_inner()));
                if stub.owner.load(Ordering::Acquire) == id {
                    let what = format!("'{name}' (module '{}')", module.name);
                    self.retarget(&stub, &mut target, Target::Unbound { what });
                }
            }
        }
        self.retire(module);
        Ok(())
    }

    /// Removes every module and the library itself; later uses raise `Removed`.
    pub fn remove(&self) -> Result<(), EngineError> {
        if self.inner.removed.swap(true, Ordering::AcqRel) {
            return Err(EngineError::Removed { library: String::new(), what: format!("library '{}'", self.inner.name) });
        }
        let ids: Vec<u64> = self.state().modules.keys().copied().rev().collect();
        for id in ids {
            let _ = self.remove_module(id);
        }
        let what = format!("library '{}'", self.inner.name);
        let all = self.stubs().by_slot.clone();
        for stub in all {
            let mut target = blocking(|| stub.target.lock().unwrap_or_else(|e| e.into_inner()));
            self.retarget(&stub, &mut target, Target::Unbound { what: what.clone() });
        }
        let mut state = self.state();
        state.removed = true;
        state.links.clear();
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Every module was retired (or is retired now); the dylib itself goes last.
        let modules = std::mem::take(&mut self.state.get_mut().unwrap_or_else(|e| e.into_inner()).modules);
        for (_, module) in modules {
            if let Some(tracker) = &module.tracker {
                let _ = tracker.remove();
            }
        }
        if let Err(e) = self.session.jit().remove_dylib(self.dylib) {
            log::warn!("jitload: removing library '{}' failed: {e}", self.name);
        }
    }
}

/// A per-thread token (never 0) to recognise re-entry on the same thread.
fn thread_token() -> u64 {
    thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as u64)
}
