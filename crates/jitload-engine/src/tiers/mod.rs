//! Tiered compilation of imported modules: a cold import compiles only what runs, quickly,
//! and the whole module reaches the configured optimisation level in the background.
//!
//! - *First tier* (`first`): the bitcode is read lazily (module-level records; function
//!   bodies on demand). Global data and the lowered constructors are compiled and linked at
//!   once; every function the module defines becomes a stub (`stubs`) under its own name,
//!   which the module's JITDylib resolves. A stub's first call reads that one function's body,
//!   compiles it at -O0 (FastISel) and points the stub at it.
//! - *Final tier* (`last`): after the import, a worker compiles the whole module at the
//!   configured level in the compiler child, as bodies beside the first tier (the data stays
//!   the first tier's), links them into the same JITDylib and repoints every stub. A thread
//!   inside a first-tier body finishes there; first-tier bodies live as long as the module.
//!   The child also builds the module's glue (data + a forwarder per stub name), so the cache
//!   gets a complete module that the next process loads through the warm path.
//! - *Identity*: a function's address is its stub in every tier, in data and in code.
//!
//! A body that cannot be read or compiled on its first call (corrupt bitcode found late)
//! makes that call fail: the stub returns the function's error value (-1 for an integer,
//! NULL otherwise) with the error reported through the hook the embedding layer installs
//! (a Python exception naming the module and function).

mod first;
mod last;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::error::EngineError;
use crate::kept::KeptModule;
use crate::llvm::orc::{Dylib, Tracker};
use crate::llvm::target::OptLevel;
use crate::llvm::tiering::{Returns, TierFunction};
use crate::session::{LoadOptions, LoadedModule, Session, StubResolver};
use crate::stubs::{self, ResolverCtx, StubBlock, STUBS_PER_BLOCK};

pub use last::wait_all;

/// Loads the module file `path` in tiers: a cached object is linked as usual; else the first
/// tier is linked now and the final tier compiled in the background (it stores the module in
/// the cache). A module tiers cannot take, or whose declarations do not all resolve, is
/// compiled eagerly.
pub fn load_file(session: &Arc<Session>, path: &std::path::Path, options: &LoadOptions) -> Result<LoadedModule, EngineError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| EngineError::Read { path: shown.clone(), source })?;
    let (key, cached) = session.cached(&bytes, &shown, options)?;
    if let Some(compiled) = cached {
        return session.link_checked(compiled, &shown, options);
    }
    if let Some((compiled, tiers)) = first::prepare_first_tier(session, &bytes, &shown, options, key)? {
        if let Ok(loaded) = session.link_with_stubs(compiled, &shown, options, Some(tiers.clone()))? {
            tiers.attach(loaded.code.dylib);
            last::start(tiers);
            return Ok(loaded);
        }
    }
    session.compile_and_link(&bytes, &shown, options, key)
}

/// Called with the error of a call whose first-tier compile failed, on the calling thread
/// (the embedding layer raises it as an exception).
pub type FailureHook = fn(EngineError);
static FAILURE_HOOK: RwLock<Option<FailureHook>> = RwLock::new(None);

/// Installs the hook (see [`FailureHook`]).
pub fn set_failure_hook(hook: FailureHook) {
    *FAILURE_HOOK.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
}

/// Suffix of the names local symbols get so that tiers compiled apart can refer to them
/// (unique within the module's own JITDylib).
const PROMOTED: &str = "jlt";
/// How `promote_locals` ends a promoted name.
const PROMOTED_SUFFIX: &str = ".jlt";

/// Set once the interpreter has finalised: a first-tier compile is no longer safe (C exit
/// handlers run after this thread's thread-local storage and LLVM's are gone).
static EXITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// From now on a function never compiled fails its call instead of being compiled (called
/// when the interpreter has finalised, before C `atexit` handlers and static destructors).
pub fn forbid_compiles() {
    EXITING.store(true, Ordering::Release);
}

/// The tier a function's stub leads to.
pub const TIER_NONE: u8 = 0;
pub const TIER_FIRST: u8 = 1;
pub const TIER_FINAL: u8 = 2;
/// Its first-tier compile failed at exit preparation (not tried again there).
const TIER_FAILED: u8 = 255;

/// Where a module's final tier stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalState {
    /// Queued or compiling.
    Pending,
    /// Linked; every stub it provides leads to it.
    Done,
    /// It failed (the first tier keeps serving); the reason.
    Failed(String),
    /// The module was released first.
    Abandoned,
}

struct Slot {
    name: String,
    returns: Returns,
    block: usize,
    index: usize,
    /// Held while this function's first tier is compiled and bound.
    lock: Mutex<()>,
    tier: AtomicU8,
}

/// The module's code in ORC, while it is linked.
struct Attached {
    dylib: Dylib,
    /// First-tier pieces and the final tier.
    pieces: Tracker,
}

/// One imported module compiled in tiers: its stubs, the source of its first tier and the
/// state of its final tier.
pub struct TieredModule {
    path: String,
    session: Arc<Session>,
    opt_level: OptLevel,
    // Field order matters: the stub blocks are unmapped before the resolver they point to.
    blocks: Vec<StubBlock>,
    _resolver: Box<ResolverCtx>,
    slots: Vec<Slot>,
    by_name: HashMap<String, usize>,
    /// The lazily read module the first tier compiles from (dropped once no stub needs it).
    source: Mutex<Option<KeptModule>>,
    /// Functions that first-tier bodies call or take the address of: the final tier keeps
    /// them reachable by name (a first-tier body may still call their stubs).
    referenced: Mutex<HashSet<String>>,
    /// `Some` while linked; linking into the JITDylib holds a read lock, release the write lock.
    attached: RwLock<Option<Attached>>,
    /// Input for the final tier (taken by its worker).
    input: Mutex<Option<Arc<[u8]>>>,
    cache_key: Option<jitload_cache::CacheKey>,
    final_state: Mutex<FinalState>,
    final_changed: Condvar,
    /// The module registers C exit handlers (`atexit`, `Py_AtExit` and the like).
    runs_at_exit: bool,
}

impl TieredModule {
    #[allow(clippy::too_many_arguments)]
    fn new(
        session: Arc<Session>,
        referenced: HashSet<String>,
        path: &str,
        opt_level: OptLevel,
        functions: Vec<TierFunction>,
        source: KeptModule,
        input: Arc<[u8]>,
        cache_key: Option<jitload_cache::CacheKey>,
        runs_at_exit: bool,
    ) -> Result<Arc<TieredModule>, EngineError> {
        let mut block_error = None;
        let module = Arc::new_cyclic(|weak: &Weak<TieredModule>| {
            let weak = weak.clone();
            let resolver = Box::new(ResolverCtx {
                resolve: Box::new(move |slot| match weak.upgrade() {
                    Some(module) => module.resolve(slot as usize),
                    None => stubs::failed_call_address(),
                }),
            });
            let ctx: *const ResolverCtx = &*resolver;
            let mut blocks = Vec::new();
            for first in (0..functions.len()).step_by(STUBS_PER_BLOCK) {
                match StubBlock::new(ctx, first as u32) {
                    Ok(block) => blocks.push(block),
                    Err(e) => {
                        block_error = Some(e);
                        break;
                    }
                }
            }
            let slots: Vec<Slot> = functions
                .into_iter()
                .enumerate()
                .map(|(i, f)| Slot {
                    name: f.name,
                    returns: f.returns,
                    block: i / STUBS_PER_BLOCK,
                    index: i % STUBS_PER_BLOCK,
                    lock: Mutex::new(()),
                    tier: AtomicU8::new(TIER_NONE),
                })
                .collect();
            let by_name = slots.iter().enumerate().map(|(i, s)| (s.name.clone(), i)).collect();
            TieredModule {
                path: path.to_string(),
                session,
                opt_level,
                blocks,
                _resolver: resolver,
                slots,
                by_name,
                source: Mutex::new(Some(source)),
                referenced: Mutex::new(referenced),
                attached: RwLock::new(None),
                input: Mutex::new(Some(input)),
                cache_key,
                final_state: Mutex::new(FinalState::Pending),
                final_changed: Condvar::new(),
                runs_at_exit,
            }
        });
        match block_error {
            Some(reason) => Err(EngineError::Unsupported { what: format!("{path}: tiered compilation"), reason }),
            None => Ok(module),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Each function (a local one under its name in the source) and the tier its stub leads
    /// to now, in module order.
    pub fn tiers(&self) -> Vec<(String, u8)> {
        let shown = |name: &str| name.strip_suffix(PROMOTED_SUFFIX).unwrap_or(name).to_string();
        self.slots.iter().map(|s| (shown(&s.name), s.tier.load(Ordering::Acquire))).collect()
    }

    /// Whether the lazily read module is still kept for first-tier compiles (after the final
    /// tier only while some first-tier body may still call a function it keeps internal).
    pub fn source_kept(&self) -> bool {
        self.source.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Where the final tier stands.
    pub fn final_state(&self) -> FinalState {
        self.final_state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the final tier is no longer pending (or `timeout` passed); the state then.
    pub fn wait_final(&self, timeout: Option<Duration>) -> FinalState {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.final_state.lock().unwrap_or_else(|e| e.into_inner());
        while *state == FinalState::Pending {
            let wait = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) => left,
                    None => break,
                },
                None => Duration::from_secs(3600),
            };
            state = crate::library::blocking(|| self.final_changed.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0);
        }
        state.clone()
    }

    fn set_final_state(&self, state: FinalState) {
        let mut current = self.final_state.lock().unwrap_or_else(|e| e.into_inner());
        if *current == FinalState::Pending {
            *current = state;
        }
        self.final_changed.notify_all();
    }

    /// Connects the module to its linked JITDylib: first-tier pieces and the final tier go
    /// there.
    pub(crate) fn attach(&self, dylib: Dylib) {
        let pieces = self.session.jit().create_tracker(dylib);
        *self.attached.write().unwrap_or_else(|e| e.into_inner()) = Some(Attached { dylib, pieces });
    }
}

impl StubResolver for TieredModule {
    fn stub(&self, name: &str) -> Option<u64> {
        let slot = &self.slots[*self.by_name.get(name)?];
        Some(self.blocks[slot.block].stub_address(slot.index))
    }

    /// The module's code is being freed: nothing may link into it any more, and the final
    /// tier (if still running) is dropped when it ends.
    fn detach(&self) {
        let attached = self.attached.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(a) = attached {
            if let Err(e) = a.pieces.remove() {
                log::warn!("jitload: freeing the tiers of {} failed: {e}", self.path);
            }
        }
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.set_final_state(FinalState::Abandoned);
    }
}

impl TieredModule {
    /// Links `objects` into the module's JITDylib and returns the addresses of `names`;
    /// `Removed` if the module was released.
    fn link_pieces(&self, objects: &[Vec<u8>], names: &[&str], label: &str) -> Result<Vec<u64>, EngineError> {
        let attached = self.attached.read().unwrap_or_else(|e| e.into_inner());
        let Some(a) = attached.as_ref() else {
            return Err(EngineError::Removed { library: String::new(), what: format!("module {}", self.path) });
        };
        let jit = self.session.jit();
        for object in objects {
            jit.add_object(&a.pieces, object, label).map_err(|message| EngineError::Link { path: label.to_string(), message })?;
        }
        let addresses = jit.lookup(a.dylib, names).map_err(|m| crate::session::link_error(label, m))?;
        if jitload_runtime::debug::perf_map_enabled() {
            let known: HashMap<String, u64> = names.iter().map(|n| n.to_string()).zip(addresses.iter().copied()).collect();
            for object in objects {
                jitload_runtime::debug::write_perf_map(&crate::objfile::function_addresses(object, &known));
            }
        }
        Ok(addresses)
    }

    /// The trampoline's callback for a stub whose slot leads to the resolver.
    fn resolve(&self, index: usize) -> u64 {
        let Some(slot) = self.slots.get(index) else {
            return stubs::failed_call_address();
        };
        match self.first_tier(index) {
            Ok(address) => address,
            Err(error) => {
                log::debug!("jitload: {error}");
                match *FAILURE_HOOK.read().unwrap_or_else(|e| e.into_inner()) {
                    Some(hook) => hook(error),
                    None => stubs::set_call_error(error),
                }
                match slot.returns {
                    Returns::Integer => stubs::failed_call_minus_one_address(),
                    _ => stubs::failed_call_address(),
                }
            }
        }
    }

    /// Compiles function `index` at the first tier (unless another thread bound it
    /// meanwhile) and returns where its stub leads.
    fn first_tier(&self, index: usize) -> Result<u64, EngineError> {
        let slot = &self.slots[index];
        let block = &self.blocks[slot.block];
        // No GIL release around these waits: a first call can come from a thread without a
        // Python thread state (a C atexit handler during finalisation), and the thread holding
        // the lock needs no GIL to finish.
        let _compiling = slot.lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = block.target(slot.index);
        if current != block.stub_address(slot.index) + 6 {
            return Ok(current);
        }
        let label = format!("{} (function '{}')", self.path, slot.name);
        let body = format!("{}.jitload.t1", slot.name);
        let compile_and_link = || -> Result<u64, EngineError> {
            let started = Instant::now();
            let object = self.compile_piece(&slot.name, &body, &label)?;
            let compiled = started.elapsed();
            let address = self.link_pieces(&[object], &[&body], &label)?[0];
            log::debug!("jitload: first tier of {label}: compiled in {compiled:?}, linked in {:?}", started.elapsed() - compiled);
            Ok(address)
        };
        let address = if EXITING.load(Ordering::Acquire) {
            // Called from an exit handler: this thread's thread-local storage (and LLVM's on
            // it) is gone; a fresh thread has its own.
            std::thread::scope(|scope| {
                scope
                    .spawn(compile_and_link)
                    .join()
                    .unwrap_or_else(|_| Err(EngineError::LlvmCrash { path: label.clone(), reason: "the compile thread panicked".into() }))
            })?
        } else {
            compile_and_link()?
        };
        block.bind(slot.index, address);
        slot.tier.store(TIER_FIRST, Ordering::Release);
        Ok(address)
    }

    /// Reads `function`'s body and compiles it alone as `body` at -O0, noting the functions
    /// it refers to (under the source's lock, which the final tier takes before it frees the
    /// source).
    fn compile_piece(&self, function: &str, body: &str, label: &str) -> Result<Vec<u8>, EngineError> {
        let source = self.source.lock().unwrap_or_else(|e| e.into_inner());
        let Some(module) = source.as_ref().and_then(KeptModule::module) else {
            return Err(EngineError::Removed { library: String::new(), what: format!("the source of '{function}' ({})", self.path) });
        };
        let session = &self.session;
        let work = || -> Result<(Vec<u8>, Vec<String>), EngineError> {
            module.materialize(function).map_err(|message| EngineError::Bitcode {
                path: label.to_string(),
                message,
                producer: None,
                reader: crate::llvm::llvm_version(),
            })?;
            // First-tier code is short-lived and the final tier has the debug information:
            // without it the copy below need not clone the function's debug metadata.
            module.strip_function_debug_info(function);
            let Some(mut part) = module.extract_function(function, body) else {
                return Err(EngineError::Link { path: label.to_string(), message: format!("no definition of '{function}' to compile") });
            };
            part.verify().map_err(|message| EngineError::Verify { path: label.to_string(), message })?;
            let referenced = part.declared_functions();
            let object = session.compile(&mut part, OptLevel::O0, label)?;
            Ok((object, referenced))
        };
        let (object, referenced) = match crate::llvm::guard::guarded(work) {
            Ok(result) => result?,
            Err(reason) => return Err(EngineError::LlvmCrash { path: label.to_string(), reason }),
        };
        let mut known = self.referenced.lock().unwrap_or_else(|e| e.into_inner());
        known.extend(referenced.into_iter().filter(|n| self.by_name.contains_key(n)));
        Ok(object)
    }
}

/// Live tiered modules and their paths, oldest first (a reloaded path has several).
static MODULES: Mutex<Vec<(String, Weak<TieredModule>)>> = Mutex::new(Vec::new());

fn register(module: &Arc<TieredModule>) {
    let mut modules = MODULES.lock().unwrap_or_else(|e| e.into_inner());
    modules.retain(|(_, weak)| weak.strong_count() > 0);
    modules.push((module.path.clone(), Arc::downgrade(module)));
}

/// The newest live tiered module loaded from `path`, if any.
pub fn find(path: &str) -> Option<Arc<TieredModule>> {
    let modules = MODULES.lock().unwrap_or_else(|e| e.into_inner());
    modules.iter().rev().find(|(p, _)| p == path).and_then(|(_, w)| w.upgrade())
}

/// Compiles, at the first tier, what code that already ran may still call at exit, for each
/// module that registers C exit handlers (`atexit`, `Py_AtExit` and the like) and has not
/// reached its final tier: the functions compiled code refers to (calls or takes the address
/// of, as when it registers a handler), until none is left. Called before the interpreter
/// finalises. A first call after that (a static destructor, a handler this missed) compiles on
/// a fresh thread, since the exiting thread's thread-local storage is gone; that was seen to
/// fail for `atexit` handlers of a module replaced by a reload, hence this step for them.
pub fn prepare_for_exit() {
    last::shut_down();
    for module in all() {
        if !module.runs_at_exit || module.final_state() == FinalState::Done {
            continue;
        }
        loop {
            let todo: Vec<usize> = {
                let referenced = module.referenced.lock().unwrap_or_else(|e| e.into_inner());
                referenced
                    .iter()
                    .filter_map(|n| module.by_name.get(n).copied())
                    .filter(|&i| module.slots[i].tier.load(Ordering::Acquire) == TIER_NONE)
                    .collect()
            };
            if todo.is_empty() {
                break;
            }
            for index in todo {
                if let Err(e) = module.first_tier(index) {
                    log::debug!("jitload: at exit: {e}");
                    // A body that does not compile stays unbound; do not try it again.
                    module.slots[index].tier.store(TIER_FAILED, Ordering::Release);
                }
            }
        }
    }
}

/// Every live tiered module.
pub fn all() -> Vec<Arc<TieredModule>> {
    let modules = MODULES.lock().unwrap_or_else(|e| e.into_inner());
    modules.iter().filter_map(|(_, w)| w.upgrade()).collect()
}
