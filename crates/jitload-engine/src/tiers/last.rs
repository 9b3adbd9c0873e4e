//! The final tier: the whole module at the configured level, compiled in the compiler child
//! by a background worker, linked beside the first tier, every stub repointed at once.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::first::prepare_common;
use super::{FinalState, TieredModule, TIER_FINAL, TIER_NONE};
use crate::error::EngineError;
use crate::ir;
use crate::llvm::target::OptLevel;
use crate::native;
use crate::session::{in_guarded_context, Session};
use crate::variants;
use jitload_runtime::compiled::Compiled;
use jitload_runtime::wire::{Reader, Writer};

/// How many functions the final tier's installation compiles at the first tier so that the
/// lazily read module can be freed (see `install`).
const STRAGGLERS_COMPILED_AT_INSTALL: usize = 64;

/// Suffix of a final-tier body (`name.jitload.t2`).
const BODY: &str = ".jitload.t2";

/// What the compiler child hands back.
struct FinalTier {
    /// The bodies, to link beside the first tier.
    objects: Vec<Vec<u8>>,
    /// (stub, body) for every stub the final tier serves.
    pairs: Vec<(String, String)>,
    /// The whole module for the object cache: glue (data, constructors, a forwarder per
    /// stub name) + the bodies + native objects.
    cached: Compiled,
}

impl FinalTier {
    fn write(&self, w: &mut Writer) {
        w.u32(self.objects.len() as u32);
        for o in &self.objects {
            w.bytes(o);
        }
        let (stubs, bodies): (Vec<String>, Vec<String>) = self.pairs.iter().cloned().unzip();
        w.strs(&stubs).strs(&bodies);
        self.cached.write(w);
    }

    fn read(r: &mut Reader<'_>) -> Option<FinalTier> {
        let objects = (0..r.u32()?).map(|_| r.bytes()).collect::<Option<Vec<_>>>()?;
        let (stubs, bodies) = (r.strs()?, r.strs()?);
        if stubs.len() != bodies.len() {
            return None;
        }
        let pairs = stubs.into_iter().zip(bodies).collect();
        Some(FinalTier { objects, pairs, cached: Compiled::read(r)? })
    }
}

/// Set before the interpreter finalises: no final tier is linked after that (the process is
/// going away, and LLVM's and the runtime's state with it). Linking holds the read lock.
static SHUTTING_DOWN: std::sync::RwLock<bool> = std::sync::RwLock::new(false);

/// Stops final tiers from being linked from now on; waits for one being linked now.
pub(crate) fn shut_down() {
    *SHUTTING_DOWN.write().unwrap_or_else(|e| e.into_inner()) = true;
}

/// Final tiers compiling at once, at most `JITLOAD_CODEGEN_THREADS` (the cores by default).
static RUNNING: Mutex<usize> = Mutex::new(0);
static SLOT_FREE: Condvar = Condvar::new();

fn limit() -> usize {
    jitload_options::get().codegen_threads.max(1)
}

/// Starts the final tier of `module` on a worker thread.
pub(crate) fn start(module: Arc<TieredModule>) {
    let spawned = std::thread::Builder::new().name("jitload-tier".into()).stack_size(16 << 20).spawn({
        let module = module.clone();
        move || run(&module)
    });
    if let Err(e) = spawned {
        module.set_final_state(FinalState::Failed(format!("cannot start a worker: {e}")));
    }
}

fn run(module: &Arc<TieredModule>) {
    crate::isolate::set_uninterruptible();
    {
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= limit() {
            running = SLOT_FREE.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
    }
    let result = compile_and_install(module);
    {
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        SLOT_FREE.notify_one();
    }
    match result {
        Ok(()) => module.set_final_state(FinalState::Done),
        Err(EngineError::Removed { .. }) => module.set_final_state(FinalState::Abandoned),
        Err(e) => {
            log::warn!("jitload: {}: the optimised tier failed, the first tier keeps running: {e}", module.path);
            module.set_final_state(FinalState::Failed(e.to_string()));
        }
    }
}

fn compile_and_install(module: &TieredModule) -> Result<(), EngineError> {
    let input = module.input.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(input) = input else {
        return Err(EngineError::Removed { library: String::new(), what: format!("module {}", module.path) });
    };
    if module.attached.read().unwrap_or_else(|e| e.into_inner()).is_none() {
        return Err(EngineError::Removed { library: String::new(), what: format!("module {}", module.path) });
    }
    let keep: Vec<String> = module.referenced.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
    let (session, path, opt) = (&module.session, module.path.as_str(), module.opt_level);
    let work = || {
        // Below the interpreter's threads: the first tier keeps the program going meanwhile.
        // SAFETY: setpriority on this (child) process only changes its scheduling.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
        compile_final(session, &input, path, opt, &keep)
    };
    let final_tier = crate::isolate::compile_in_child(path, work, FinalTier::write, FinalTier::read)?;
    drop(input);
    install(module, final_tier)
}

/// Runs in the compiler child: the module read whole, prepared as the first tier was (same
/// names), split into glue and final-tier bodies.
fn compile_final(session: &Session, bytes: &[u8], path: &str, opt: OptLevel, keep: &[String]) -> Result<FinalTier, EngineError> {
    in_guarded_context(path, |ctx| {
        let module = ir::parse(ctx, bytes, path)?;
        let mut module = variants::select(ctx, module, session.host(), path)?;
        let common = prepare_common(&mut module, session.host(), path)?;
        let symbols = module.symbols();
        let natives = native::carried_objects(&module, path)?;
        let undefined = native::undefined_with(ir::undefined_symbols(&symbols), &symbols, &natives);
        let exported = ir::exports(&module);
        let mut glue = module.clone_part(None);
        let pairs = module.make_final_tier(BODY, &common.promoted, keep);
        glue.add_forwarders(&pairs);
        let glue_object = session.compile(&mut glue, OptLevel::O0, path)?;
        drop(glue);
        let objects = session.compile_objects(&mut module, opt, path, "jlq")?;
        let mut cached_objects = vec![glue_object];
        cached_objects.extend(objects.iter().cloned());
        cached_objects.extend(natives.into_iter().map(|n| n.bytes));
        let cached = Compiled {
            objects: cached_objects,
            exports: exported,
            undefined,
            dependent_libraries: module.dependent_libraries(),
            has_ctors: common.has_ctors,
            has_dtors: common.has_dtors,
        };
        Ok(FinalTier { objects, pairs, cached })
    })
}

/// Links the final tier and points every stub it serves at it; stores the whole module in
/// the object cache; frees the first tier's source once no stub can need it.
fn install(module: &TieredModule, final_tier: FinalTier) -> Result<(), EngineError> {
    let shutting_down = SHUTTING_DOWN.read().unwrap_or_else(|e| e.into_inner());
    if *shutting_down {
        return Err(EngineError::Removed { library: String::new(), what: format!("module {} (the process is exiting)", module.path) });
    }
    let FinalTier { objects, pairs, cached } = final_tier;
    let served: Vec<&(String, String)> = pairs.iter().filter(|(stub, _)| module.by_name.contains_key(stub)).collect();
    let bodies: Vec<&str> = served.iter().map(|(_, body)| body.as_str()).collect();
    let label = format!("{} (optimised tier)", module.path);
    let addresses = module.link_pieces(&objects, &bodies, &label)?;
    for ((stub, _), address) in served.iter().zip(addresses) {
        let slot = &module.slots[module.by_name[stub]];
        let _binding = slot.lock.lock().unwrap_or_else(|e| e.into_inner());
        module.blocks[slot.block].bind(slot.index, address);
        slot.tier.store(TIER_FINAL, Ordering::Release);
    }
    if let Some(key) = &module.cache_key {
        module.session.object_cache().put(key, &cached.to_payload());
    }
    // A stub the final tier does not serve is reached only from first-tier bodies, through
    // the functions they refer to (noted under the source's lock by each first-tier compile).
    // Those not compiled yet (first-tier code compiled while the final tier was compiling may
    // call them) are compiled now, a few at most, so that the source can go; if too many,
    // it stays for first-tier compiles on demand.
    let served_names: HashSet<&str> = served.iter().map(|(s, _)| s.as_str()).collect();
    let unserved = |module: &TieredModule| -> Vec<usize> {
        let referenced = module.referenced.lock().unwrap_or_else(|e| e.into_inner());
        referenced
            .iter()
            .filter(|n| !served_names.contains(n.as_str()))
            .filter_map(|n| module.by_name.get(n).copied())
            .filter(|&i| module.slots[i].tier.load(Ordering::Acquire) == TIER_NONE)
            .collect()
    };
    let mut budget = STRAGGLERS_COMPILED_AT_INSTALL;
    loop {
        let todo = unserved(module);
        if todo.is_empty() || todo.len() > budget {
            break;
        }
        budget -= todo.len();
        for index in todo {
            if module.first_tier(index).is_err() {
                budget = 0; // it will fail again on demand, with the caller told
            }
        }
    }
    let mut source = module.source.lock().unwrap_or_else(|e| e.into_inner());
    let freed = unserved(module).is_empty() && source.take().is_some();
    drop(source);
    if freed {
        // The lazily read module was the parent's only large LLVM allocation (an eager import
        // compiles in the child); give its pages back rather than keep them in malloc's heap.
        // SAFETY: malloc_trim only releases free memory at the top of each arena.
        unsafe { libc::malloc_trim(0) };
    }
    log::debug!("jitload: {} reached its optimised tier ({} functions)", module.path, served.len());
    Ok(())
}

/// Waits until every tiered module's final tier is no longer pending, or `timeout` passed;
/// true if none is pending.
pub fn wait_all(timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    for module in super::all() {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if module.wait_final(left) == FinalState::Pending {
            return false;
        }
    }
    true
}
