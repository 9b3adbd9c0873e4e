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
//!   code once no call through the Python API is running (see `grace`).
//!
//! Global variables, weak functions and object files' symbols are defined directly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use crate::error::EngineError;
use crate::ir;
use crate::llvm::context::Context;
use crate::llvm::guard::guarded;
use crate::llvm::module::{Module, GlobalKind};
use crate::llvm::orc::{Dylib, Tracker};
use crate::llvm::target::OptLevel;
use jitload_runtime::dynlib::SharedLibrary;
use crate::session::Session;
use crate::stubs::{self, ResolverCtx, StubBlock, STUBS_PER_BLOCK};

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

fn blocking<T>(f: impl FnOnce() -> T) -> T {
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

/// Where a stub leads.
enum Target {
    /// Nowhere: reported as `Removed` when called.
    Unbound { what: String },
    Bound { address: u64, module: u64 },
    Lazy { module: u64, source: Arc<LazySource>, function: String },
    Provider(Arc<dyn Provider>),
}

struct Stub {
    name: String,
    /// The block holding this stub's code and slot (shared, so retargeting needs no table
    /// lock).
    block: Arc<StubBlock>,
    index: usize,
    address: u64,
    target: Mutex<Target>,
    /// The module the target belongs to (0: none), readable without the target's lock, which
    /// a resolution holds while it generates code (linking must never wait for it).
    owner: AtomicU64,
    /// Whether the name has a definition (any target but `Unbound`); lock-free like `owner`.
    live: AtomicBool,
    /// The thread resolving this stub right now (0: none), to catch a generator that calls
    /// the function it is generating.
    resolving: AtomicU64,
}

impl Stub {
    /// Replaces the target (the caller holds `target`'s lock) and points the slot at it.
    fn retarget(&self, locked: &mut Target, target: Target, block: &StubBlock) {
        let (live, owner) = match &target {
            Target::Unbound { .. } => (false, 0),
            Target::Bound { module, .. } | Target::Lazy { module, .. } => (true, *module),
            Target::Provider(_) => (true, 0),
        };
        match &target {
            Target::Bound { address, .. } => block.bind(self.index, *address),
            _ => block.unbind(self.index),
        }
        self.owner.store(owner, Ordering::Release);
        self.live.store(live, Ordering::Release);
        *locked = target;
    }
}

#[derive(Default)]
struct StubTable {
    blocks: Vec<Arc<StubBlock>>,
    by_name: HashMap<String, Arc<Stub>>,
    by_slot: Vec<Arc<Stub>>,
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

/// A module compiled for a library but not linked yet.
struct Prepared {
    objects: Vec<Vec<u8>>,
    functions: Vec<String>,
    direct: Vec<String>,
    undefined: Vec<String>,
    dependent_libraries: Vec<String>,
    constructors: Option<String>,
    destructors: Option<String>,
    lazy: Option<Arc<LazySource>>,
}

impl Prepared {
    /// Encodes an eager module's preparation for the trip from the compiler child.
    fn write(&self, w: &mut jitload_runtime::wire::Writer) {
        w.u32(self.objects.len() as u32);
        for object in &self.objects {
            w.bytes(object);
        }
        w.strs(&self.functions).strs(&self.direct).strs(&self.undefined).strs(&self.dependent_libraries);
        w.strs(self.constructors.as_slice()).strs(self.destructors.as_slice());
    }

    /// Decodes what [`Prepared::write`] wrote; `None` on malformed input.
    fn read(r: &mut jitload_runtime::wire::Reader<'_>) -> Option<Prepared> {
        let objects = (0..r.u32()?).map(|_| r.bytes()).collect::<Option<Vec<_>>>()?;
        let (functions, direct, undefined, dependent_libraries) = (r.strs()?, r.strs()?, r.strs()?, r.strs()?);
        let (constructors, destructors) = (r.strs()?.pop(), r.strs()?.pop());
        Some(Prepared { objects, functions, direct, undefined, dependent_libraries, constructors, destructors, lazy: None })
    }
}

/// A module kept in memory so a lazy library can compile its functions one at a time.
struct LazySource {
    module: Mutex<LazyModule>,
    path: String,
}

struct LazyModule {
    // Field order matters: the module must be disposed before its context.
    module: Option<Module<'static>>,
    _context: Box<Context>,
}

impl Drop for LazyModule {
    fn drop(&mut self) {
        self.module = None;
    }
}

// SAFETY: the module and its context are only used by one thread at a time (behind the Mutex
// in LazySource).
unsafe impl Send for LazyModule {}

/// Prefix of an emulated-TLS control object: thread-local `x` is linked as `__emutls_v.x`.
const EMUTLS_CONTROL: &str = "__emutls_v.";

fn emutls_name(name: &str) -> String {
    format!("{EMUTLS_CONTROL}{name}")
}

/// The name users know a linked name by (a thread-local's control object by its variable).
fn user_name(linked: &str) -> &str {
    linked.strip_prefix(EMUTLS_CONTROL).unwrap_or(linked)
}

/// Names users never see: lowered init functions and emulated-TLS initial-value templates.
fn internal_name(name: &str) -> bool {
    name.starts_with("__jitload_") || name.starts_with("__emutls_t.")
}

fn body_name(name: &str, module: u64) -> String {
    format!("{name}.jitload.{module}")
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
        session.jit().add_resolver(
            dylib,
            Arc::new(move |symbol: &str| weak.upgrade().and_then(|inner| Library { inner }.resolve_for_link(symbol))),
        );
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

    /// Prepares `bytes` in a compiler child. An eager module comes back compiled (objects
    /// and the names the library needs). A lazy module must live in this process to be
    /// compiled piece by piece, so the child only shows that preparing it (parse, verify,
    /// retarget, compile the global variables) ends well within the limits, and it is then
    /// prepared again here; its pieces compile in-process, from an input already read once.
    fn prepare_isolated(&self, bytes: &[u8], path: &str, id: u64) -> Result<Prepared, EngineError> {
        if !self.inner.options.lazy {
            return crate::isolate::compile_in_child(path, || self.prepare_eager(bytes, path, id), Prepared::write, Prepared::read);
        }
        // The child's prepared module is not disposed: the child exits right after.
        let checked = || self.prepare_lazy(bytes, path, id).map(std::mem::forget);
        crate::isolate::compile_in_child(path, checked, |_, _| {}, |_| Some(()))?;
        let (library, owned, label) = (self.clone(), bytes.to_vec(), path.to_string());
        crate::background::run(path, move || library.prepare_lazy(&owned, &label, id))
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
    pub fn define_address(
        &self,
        name: &str,
        address: u64,
        keepalive: Box<dyn std::any::Any + Send + Sync>,
        replace: bool,
    ) -> Result<u64, EngineError> {
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
        let mut names: Vec<String> = self
            .stubs()
            .by_name
            .values()
            .filter(|s| s.live.load(Ordering::Acquire))
            .map(|s| s.name.clone())
            .collect();
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

    /// Frees a module's memory once no call can be running in it.
    fn retire(&self, module: Arc<ModuleCode>) {
        let session = self.inner.session.clone();
        jitload_codemem::grace::retire(move || {
            if let Some(&dtors) = module.destructors.get() {
                // SAFETY: the lowered destructor function of this module, `void()`, still
                // linked: its tracker is removed just below.
                let f: extern "C" fn() = unsafe { std::mem::transmute(dtors as usize) };
                f();
            }
            if let Some(tracker) = &module.tracker {
                if let Err(e) = tracker.remove() {
                    log::warn!("jitload: freeing module '{}' failed: {e}", module.name);
                }
            }
            // The module's unique body names are dead in ORC's symbol pool now; ORC keeps
            // dead entries until asked to drop them.
            session.jit().clear_dead_symbols();
        });
    }

    /// Retires modules whose every name now leads elsewhere (all replaced) and that define
    /// nothing directly.
    fn retire_superseded(&self) {
        let candidates: Vec<Arc<ModuleCode>> = self
            .state()
            .modules
            .values()
            .filter(|m| m.direct.is_empty() && !m.functions.is_empty() && m.installed.load(Ordering::Acquire))
            .cloned()
            .collect();
        for module in candidates {
            let still_used = module.functions.iter().any(|n| self.owner_of(n) == Some(module.id));
            if !still_used {
                let removed = self.state().modules.remove(&module.id);
                if let Some(m) = removed {
                    self.retire(m);
                }
            }
        }
    }

    fn stubs(&self) -> std::sync::RwLockReadGuard<'_, StubTable> {
        self.inner.stubs.read().unwrap_or_else(|e| e.into_inner())
    }


    fn set_target(&self, stub: &Stub, target: Target) {
        let mut current = blocking(|| stub.target.lock().unwrap_or_else(|e| e.into_inner()));
        self.retarget(stub, &mut current, target);
    }

    fn retarget(&self, stub: &Stub, locked: &mut Target, target: Target) {
        stub.retarget(locked, target, &stub.block);
    }

    /// The stub for `name`, created (unbound) if new.
    fn stub(&self, name: &str) -> Result<Arc<Stub>, EngineError> {
        if let Some(s) = self.stubs().by_name.get(name) {
            return Ok(s.clone());
        }
        let mut table = self.inner.stubs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = table.by_name.get(name) {
            return Ok(s.clone());
        }
        let slot = table.by_slot.len();
        let (block, index) = (slot / STUBS_PER_BLOCK, slot % STUBS_PER_BLOCK);
        if block == table.blocks.len() {
            let ctx: *const ResolverCtx = &*self.inner.resolver;
            if slot >= i32::MAX as usize {
                return Err(EngineError::Unsupported { what: format!("defining '{name}'"), reason: "too many functions in one library".into() });
            }
            let new_block = StubBlock::new(ctx, slot as u32)
                .map_err(|reason| EngineError::Unsupported { what: format!("defining '{name}'"), reason })?;
            table.blocks.push(Arc::new(new_block));
        }
        let stub = Arc::new(Stub {
            name: name.to_string(),
            block: table.blocks[block].clone(),
            index,
            address: table.blocks[block].stub_address(index),
            target: Mutex::new(Target::Unbound { what: format!("'{name}'") }),
            owner: AtomicU64::new(0),
            live: AtomicBool::new(false),
            resolving: AtomicU64::new(0),
        });
        table.by_slot.push(stub.clone());
        table.by_name.insert(name.to_string(), stub.clone());
        Ok(stub)
    }

    /// Definitions ORC asks for while linking: stubs of names with a target, then the
    /// library's dependent libraries (the process scope is searched after, in its own dylib).
    fn resolve_for_link(&self, symbol: &str) -> Option<u64> {
        if let Some(stub) = self.stubs().by_name.get(symbol) {
            return stub.live.load(Ordering::Acquire).then_some(stub.address);
        }
        self.state().dependencies.iter().find_map(|l| l.symbol(symbol))
    }

    /// Whether `symbol` will resolve when a module of this library is linked.
    fn can_resolve(&self, symbol: &str) -> bool {
        if self.resolve_for_link(symbol).is_some() || self.state().direct.contains_key(symbol) {
            return true;
        }
        let links = self.state().links.clone();
        links.iter().any(|l| l.resolve_for_link(symbol).is_some() || l.state().direct.contains_key(symbol))
            || self.session().process_scope_resolve(symbol).is_some()
    }

    /// Called by the stub trampoline for a stub whose slot leads to the resolver.
    fn resolve_slot(&self, slot: usize) -> u64 {
        let stub = self.stubs().by_slot.get(slot).cloned();
        let Some(stub) = stub else {
            return stubs::failed_call_address();
        };
        match self.resolve_stub(&stub) {
            Ok(address) => address,
            Err(error) => {
                stubs::set_call_error(error);
                stubs::failed_call_address()
            }
        }
    }

    fn resolve_stub(&self, stub: &Stub) -> Result<u64, EngineError> {
        let me = thread_token();
        if stub.resolving.load(Ordering::Acquire) == me {
            return Err(EngineError::Generator {
                library: self.inner.name.clone(),
                symbol: stub.name.clone(),
                message: "it was called while its own code was being generated".into(),
            });
        }
        // Another thread may be generating this function: wait for it without the GIL.
        let mut target = match stub.target.try_lock() {
            Ok(guard) => guard,
            Err(_) => blocking(|| stub.target.lock().unwrap_or_else(|e| e.into_inner())),
        };
        stub.resolving.store(me, Ordering::Release);
        let result = self.resolve_target(stub, &mut target);
        stub.resolving.store(0, Ordering::Release);
        result
    }

    fn resolve_target(&self, stub: &Stub, target: &mut Target) -> Result<u64, EngineError> {
        match target {
            Target::Bound { address, .. } => Ok(*address),
            Target::Unbound { what } => Err(EngineError::Removed { library: self.inner.name.clone(), what: what.clone() }),
            Target::Lazy { module, source, function } => {
                let (module, source, function) = (*module, source.clone(), function.clone());
                let address = self.compile_lazy(module, &source, &function)?;
                self.retarget(stub, target, Target::Bound { address, module });
                Ok(address)
            }
            Target::Provider(provider) => {
                let provider = provider.clone();
                // Whatever goes wrong while generating is reported as the generator's failure.
                self.generate(stub, target, provider.as_ref()).map_err(|e| match e {
                    g @ EngineError::Generator { .. } => g,
                    other => EngineError::Generator {
                        library: self.inner.name.clone(),
                        symbol: stub.name.clone(),
                        message: other.to_string(),
                    },
                })
            }
        }
    }

    /// Runs `provider` for the stub being resolved, compiles and links what it returns and
    /// binds the stub (whose lock the caller holds as `target`).
    fn generate(&self, stub: &Stub, target: &mut Target, provider: &dyn Provider) -> Result<u64, EngineError> {
        let failure = |message: String| EngineError::Generator {
            library: self.inner.name.clone(),
            symbol: stub.name.clone(),
            message,
        };
        let bytes = match provider.generate(&stub.name)? {
            Generated::Ir(bytes) => bytes,
            Generated::Object(_) => {
                return Err(failure("it returned an object file; generators must return IR text or bitcode".into()))
            }
        };
        let path = format!("<code generated for {}>", stub.name);
        let id = self.session().next_id();
        let prepared = self.prepare_eager(&bytes, &path, id)?;
        if !prepared.functions.contains(&stub.name) {
            return Err(failure(format!("the generated code does not define a function named '{}'", stub.name)));
        }
        self.install(id, &path, prepared, true, Some((stub, &mut *target)))?;
        match target {
            Target::Bound { address, .. } => Ok(*address),
            _ => Err(failure("the generated code was linked but did not bind the function".into())),
        }
    }

    /// Parses and checks `bytes` and compiles them (eager library) or splits them for
    /// per-function compilation (lazy library).
    fn prepare(&self, bytes: &[u8], path: &str, id: u64) -> Result<Prepared, EngineError> {
        if self.inner.options.lazy {
            self.prepare_lazy(bytes, path, id)
        } else {
            self.prepare_eager(bytes, path, id)
        }
    }

    fn prepare_eager(&self, bytes: &[u8], path: &str, id: u64) -> Result<Prepared, EngineError> {
        let session = self.session();
        crate::session::in_guarded_context(path, |ctx| {
            let mut module = ir::parse_content(ctx, bytes, path)?;
            let mut prepared = self.analyse(&mut module, path, id)?;
            // Calls inside the module stay direct; everyone else calls through the stubs.
            for f in &prepared.functions {
                module.rename(f, &body_name(f, id));
            }
            prepared.objects.extend(session.compile_objects(&mut module, self.inner.options.opt_level, path, &format!("jlp{id}"))?);
            Ok(prepared)
        })
    }

    /// Retargets the module, lowers its constructors and renames its stubbed functions.
    fn analyse(&self, module: &mut Module<'_>, path: &str, id: u64) -> Result<Prepared, EngineError> {
        ir::retarget(module, self.session().host(), path)?;
        let ctors = format!("__jitload_ctors_{id}");
        let dtors = format!("__jitload_dtors_{id}");
        let constructors = module.lower_init_array("llvm.global_ctors", &ctors, false).then_some(ctors);
        let destructors = module.lower_init_array("llvm.global_dtors", &dtors, true).then_some(dtors);
        let symbols = module.symbols();
        // The target machine emits every thread-local as its emulated-TLS control object
        // (see `cxx`): that is the name the module defines or needs.
        let tls: std::collections::HashSet<&str> =
            symbols.iter().filter(|s| s.thread_local).map(|s| s.name.as_str()).collect();
        let undefined =
            ir::undefined_symbols(&symbols).into_iter().map(|n| if tls.contains(n.as_str()) { emutls_name(&n) } else { n }).collect();
        let mut functions = Vec::new();
        let mut direct = Vec::new();
        for s in symbols.iter().filter(|s| s.defined && s.exported) {
            // Constructors and destructors stay direct: they must run even while (or after)
            // the module's names are unbound.
            if s.thread_local {
                direct.push(emutls_name(&s.name));
            } else if s.kind == GlobalKind::Function && !s.weak_definition && !s.name.starts_with("__jitload_") {
                functions.push(s.name.clone());
            } else {
                direct.push(s.name.clone());
            }
        }
        Ok(Prepared {
            objects: Vec::new(),
            functions,
            direct,
            undefined,
            dependent_libraries: module.dependent_libraries(),
            constructors,
            destructors,
            lazy: None,
        })
    }

    fn prepare_lazy(&self, bytes: &[u8], path: &str, id: u64) -> Result<Prepared, EngineError> {
        let context = Box::new(Context::new());
        // SAFETY: the module borrows the boxed context, which LazyModule keeps (at a stable
        // heap address) and disposes after the module.
        let ctx: &'static Context = unsafe { &*(&*context as *const Context) };
        let work = || -> Result<(Prepared, Module<'static>, Vec<u8>), EngineError> {
            let mut module = ir::parse_content(ctx, bytes, path)?;
            let aliases = module.function_aliases();
            if !aliases.is_empty() {
                return Err(EngineError::Unsupported {
                    what: format!("{path}: lazy compilation of a module with function aliases ({})", aliases.join(", ")),
                    reason: "add it to a library created with lazy=False".into(),
                });
            }
            module.drop_used_lists();
            module.promote_locals(&format!("jl{id}"));
            let mut prepared = self.analyse(&mut module, path, id)?;
            // Promoted (hidden) functions are stubbed too: pieces call each other through stubs.
            for s in module.symbols() {
                if s.defined
                    && s.kind == GlobalKind::Function
                    && !s.exported
                    && !s.name.contains(".jitload.")
                    && !s.name.starts_with("__jitload_")
                {
                    prepared.functions.push(s.name.clone());
                }
            }
            let mut globals = module.clone_part(None);
            let object = self.session().compile(&mut globals, self.inner.options.opt_level, path)?;
            Ok((prepared, module, object))
        };
        let (mut prepared, module, globals_object) = match guarded(work) {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                // Dispose under the guard: after a failed parse this can crash (see
                // `session::in_guarded_context`); if it does, the context is abandoned.
                let _ = guarded(move || drop(context));
                return Err(e);
            }
            Err(reason) => {
                std::mem::forget(context);
                return Err(EngineError::LlvmCrash { path: path.to_string(), reason });
            }
        };
        prepared.objects.push(globals_object);
        prepared.lazy = Some(Arc::new(LazySource {
            module: Mutex::new(LazyModule { module: Some(module), _context: context }),
            path: path.to_string(),
        }));
        Ok(prepared)
    }

    /// Compiles the body of one function of a lazy module and links it.
    fn compile_lazy(&self, module_id: u64, source: &LazySource, function: &str) -> Result<u64, EngineError> {
        let body = body_name(function, module_id);
        let path = &source.path;
        let object = {
            let guard = blocking(|| source.module.lock().unwrap_or_else(|e| e.into_inner()));
            let Some(module) = guard.module.as_ref() else {
                return Err(EngineError::Removed { library: self.inner.name.clone(), what: format!("the source of '{function}'") });
            };
            let opt = self.inner.options.opt_level;
            let session = self.session();
            match guarded(|| -> Result<Vec<u8>, EngineError> {
                // Only this piece calls the body by its private name; the other pieces (compiled
                // or not) reach it through the stub.
                let Some(mut part) = module.extract_function(function, &body) else {
                    return Err(EngineError::Link { path: path.clone(), message: format!("no definition of '{function}' to compile") });
                };
                session.compile(&mut part, opt, path)
            }) {
                Ok(result) => result?,
                Err(reason) => return Err(EngineError::LlvmCrash { path: path.clone(), reason }),
            }
        };
        let removed = || EngineError::Removed { library: self.inner.name.clone(), what: format!("'{function}'") };
        let owner = self.state().modules.get(&module_id).cloned();
        let Some(tracker) = owner.as_ref().and_then(|m| m.tracker.as_ref()) else {
            return Err(removed());
        };
        let jit = self.session().jit();
        // Another thread may remove the module (or the library) while this body links: its
        // siblings' symbols are then gone, and the failure to report is that removal, not the
        // undefined symbols it caused.
        let removed_meanwhile = |error: EngineError| {
            if self.inner.removed.load(Ordering::Acquire) || !self.state().modules.contains_key(&module_id) {
                removed()
            } else {
                error
            }
        };
        jit.add_object(tracker, &object, path)
            .map_err(|message| removed_meanwhile(EngineError::Link { path: path.clone(), message }))?;
        let addresses = jit
            .lookup(self.inner.dylib, &[&body])
            .map_err(|m| removed_meanwhile(crate::session::link_error(path, m)))?;
        if jitload_runtime::debug::perf_map_enabled() {
            let known = HashMap::from([(body.clone(), addresses[0])]);
            jitload_runtime::debug::write_perf_map(&crate::objfile::function_addresses(&object, &known));
        }
        Ok(addresses[0])
    }

    fn check_duplicates(&self, functions: &[String], direct: &[String], path: &str, replace: bool) -> Result<(), EngineError> {
        let mut clashes = Vec::new();
        if !replace {
            for f in functions {
                if self.stubs().by_name.get(f).is_some_and(|s| s.live.load(Ordering::Acquire)) {
                    clashes.push(f.clone());
                }
            }
        }
        let state = self.state();
        for d in direct {
            // A thread-local and a plain variable of the same name clash too.
            let plain = user_name(d);
            if state.direct.contains_key(d) || state.direct.contains_key(plain) || state.direct.contains_key(&emutls_name(plain)) {
                clashes.push(plain.to_string());
            }
        }
        drop(state);
        if clashes.is_empty() {
            return Ok(());
        }
        clashes.sort();
        Err(EngineError::Duplicate { path: path.to_string(), library: self.inner.name.clone(), symbols: clashes })
    }

    /// Links a prepared module and binds its names. `resolving` is the stub (and its locked
    /// target) being generated, if this runs inside a `define_lazy` resolution.
    fn install(
        &self,
        id: u64,
        path: &str,
        prepared: Prepared,
        replace: bool,
        resolving: Option<(&Stub, &mut Target)>,
    ) -> Result<u64, EngineError> {
        let skip = resolving.as_ref().map(|(s, _)| s.name.clone());
        let check: Vec<String> = prepared.functions.iter().filter(|f| Some(*f) != skip.as_ref()).cloned().collect();
        self.check_duplicates(&check, &prepared.direct, path, replace)?;
        let mut deps = Vec::new();
        for lib in &prepared.dependent_libraries {
            let opened = SharedLibrary::open(lib).map_err(|reason| EngineError::DependentLibrary {
                path: path.to_string(),
                library: lib.clone(),
                reason,
            })?;
            deps.push(Arc::new(opened));
        }
        {
            let mut state = self.state();
            for d in deps {
                if !state.dependencies.iter().any(|l| l.path == d.path) {
                    state.dependencies.push(d);
                }
            }
        }
        let own: std::collections::HashSet<&String> = prepared.functions.iter().chain(&prepared.direct).collect();
        let missing: Vec<String> =
            prepared.undefined.iter().filter(|s| !own.contains(s) && !self.can_resolve(s)).cloned().collect();
        if !missing.is_empty() {
            return Err(EngineError::Unresolved { path: format!("{path} (library '{}')", self.inner.name), symbols: missing });
        }

        let jit = self.session().jit();
        let module = Arc::new(ModuleCode {
            id,
            name: path.to_string(),
            functions: prepared.functions.clone(),
            direct: prepared.direct.clone(),
            tracker: Some(jit.create_tracker(self.inner.dylib)),
            destructors: OnceLock::new(),
            installed: AtomicBool::new(false),
            _keepalive: None,
        });
        let mut resolving = resolving;
        let in_resolution = resolving.is_some();
        // A lazy module's pieces (its constructors first of all) call its functions through
        // their stubs, so those must lead to the compiler before anything is linked.
        if let Some(source) = &prepared.lazy {
            self.state().modules.insert(id, module.clone());
            for f in &prepared.functions {
                let target = Target::Lazy { module: id, source: source.clone(), function: f.clone() };
                self.bind_new(f, target, &mut resolving)?;
            }
        }
        let tracker = module.tracker.as_ref().expect("JIT modules have a tracker");
        let by_name = match self.link_objects(tracker, id, path, &prepared) {
            Ok(found) => found,
            Err(e) => {
                if prepared.lazy.is_some() {
                    let _ = self.remove_module(id);
                } else {
                    let _ = tracker.remove();
                }
                return Err(e);
            }
        };
        if let Some(d) = &prepared.destructors {
            let _ = module.destructors.set(by_name[d]);
        }
        {
            let mut state = self.state();
            for d in &prepared.direct {
                state.direct.insert(d.clone(), (by_name[d], id));
            }
            state.modules.insert(id, module.clone());
        }
        if prepared.lazy.is_none() {
            for f in &prepared.functions {
                let target = Target::Bound { address: by_name[&body_name(f, id)], module: id };
                self.bind_new(f, target, &mut resolving)?;
            }
        }
        module.installed.store(true, Ordering::Release);
        if let Some(ctors) = &prepared.constructors {
            // SAFETY: the lowered constructor function of this module, `void()`, just linked.
            let f: extern "C" fn() = unsafe { std::mem::transmute(by_name[ctors] as usize) };
            f();
        }
        // Inside a resolution this stub's lock is held; superseded modules wait for the next add.
        if !in_resolution {
            self.retire_superseded();
        }
        Ok(id)
    }

    /// Points `name` at `target`; the stub being resolved (whose lock the caller holds) is
    /// updated through its guard.
    fn bind_new(&self, name: &str, target: Target, resolving: &mut Option<(&Stub, &mut Target)>) -> Result<(), EngineError> {
        match resolving.as_mut() {
            Some((stub, locked)) if stub.name == name => self.retarget(stub, locked, target),
            _ => {
                let stub = self.stub(name)?;
                self.set_target(&stub, target);
            }
        }
        Ok(())
    }

    /// Adds the prepared objects under `tracker` and links them; returns the addresses of
    /// the bodies (eager modules), direct names and constructor functions.
    fn link_objects(&self, tracker: &Tracker, id: u64, path: &str, prepared: &Prepared) -> Result<HashMap<String, u64>, EngineError> {
        let jit = self.session().jit();
        for object in &prepared.objects {
            jit.add_object(tracker, object, path).map_err(|message| {
                if let Some(name) = message.strip_prefix("Duplicate definition of symbol ") {
                    EngineError::Duplicate {
                        path: path.to_string(),
                        library: self.inner.name.clone(),
                        symbols: vec![name.trim_matches(|c| c == '\'' || c == '"').to_string()],
                    }
                } else {
                    EngineError::Link { path: path.to_string(), message }
                }
            })?;
        }
        // Link now by looking up every body (eager modules), direct name and init function.
        let mut wanted: Vec<String> = Vec::new();
        if prepared.lazy.is_none() {
            wanted.extend(prepared.functions.iter().map(|f| body_name(f, id)));
        }
        wanted.extend(prepared.direct.iter().cloned());
        wanted.extend(prepared.constructors.iter().cloned());
        wanted.extend(prepared.destructors.iter().cloned());
        let names: Vec<&str> = wanted.iter().map(String::as_str).collect();
        let addresses = jit.lookup(self.inner.dylib, &names).map_err(|m| crate::session::link_error(path, m))?;
        let found: HashMap<String, u64> = wanted.into_iter().zip(addresses).collect();
        if jitload_runtime::debug::perf_map_enabled() {
            for object in &prepared.objects {
                jitload_runtime::debug::write_perf_map(&crate::objfile::function_addresses(object, &found));
            }
        }
        Ok(found)
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

/// Levenshtein distance, for "did you mean" suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
