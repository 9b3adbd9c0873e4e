//! The JIT session: turns bitcode or IR into linked code in its own JITDylib, with every
//! check done before LLVM's linker sees the module, and keeps what it loaded.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::EngineError;
use crate::ir;
use crate::isolate;
use crate::llvm::context::Context;
use crate::llvm::guard::guarded;
use crate::llvm::module::{Module, ModuleSymbol};
use crate::llvm::orc::{self, Dylib, Jit, Tracker};
use crate::llvm::target::{HostTarget, OptLevel, TargetMachine};
use crate::native;
use crate::variants;
use jitload_cache::CacheKey;
use jitload_runtime::compiled::Compiled;
use jitload_runtime::dynlib::{builtins_archive, SharedLibrary};
use jitload_runtime::link::{self, LinkFailure, Linked, Linker};
use jitload_runtime::objcache::ObjectCache;
use jitload_runtime::resolve::{ModuleScope, SharedScope};
use std::collections::HashMap;

/// How to load one module.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub opt_level: OptLevel,
    /// A function the module must define (e.g. `PyInit_foo`); checked before linking.
    pub required_symbol: Option<String>,
    /// Compile in a forked child process (see `isolate`), so no input can crash this one.
    pub isolate: bool,
    /// Reuse and store compiled objects in the persistent cache (see `objcache`).
    pub use_cache: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { opt_level: OptLevel::O2, required_symbol: None, isolate: true, use_cache: true }
    }
}

/// Code that has been linked into the session (see `jitload_runtime::link`). Its memory
/// lives until [`Session::release`].
pub type LoadedModule = Linked<OrcCode>;

/// A module's code in ORC: its JITDylib and the resource tracker that owns its memory.
pub struct OrcCode {
    pub dylib: Dylib,
    tracker: Tracker,
    /// Stubs its JITDylib resolves the module's functions to (a module compiled in tiers).
    stubs: Option<Arc<dyn StubResolver>>,
}

/// Functions a linked module reaches through stubs (see `tiers`).
pub trait StubResolver: Send + Sync {
    /// The stub of function `name`, if the module defines it.
    fn stub(&self, name: &str) -> Option<u64>;
    /// The module's code is about to be freed.
    fn detach(&self);
}

/// The link contract's ORC backend (the warm path's is `jitload-objload`).
struct OrcLinker<'s> {
    session: &'s Session,
    stubs: Option<Arc<dyn StubResolver>>,
}

impl Linker for OrcLinker<'_> {
    type Code = OrcCode;

    fn link(&self, label: &str, path: &str, objects: &[Vec<u8>], scope: Arc<ModuleScope>) -> Result<OrcCode, String> {
        let jit = &self.session.jit;
        let dylib = jit.create_dylib(label);
        let stubs = self.stubs.clone();
        jit.add_resolver(dylib, Arc::new(move |name: &str| stubs.as_ref().and_then(|t| t.stub(name)).or_else(|| scope.resolve(name))));
        if let Some(archive) = builtins_archive() {
            // A missing or unreadable archive only loses rare helpers; linking reports those.
            if let Err(e) = jit.add_archive(dylib, archive) {
                log::debug!("compiler-rt builtins not used: {e}");
            }
        }
        let tracker = jit.create_tracker(dylib);
        for object in objects {
            jit.add_object(&tracker, object, path)?;
        }
        Ok(OrcCode { dylib, tracker, stubs: self.stubs.clone() })
    }

    fn lookup(&self, code: &OrcCode, names: &[&str]) -> Result<Vec<(u64, bool)>, String> {
        self.session.jit.lookup_with_weakness(code.dylib, names)
    }

    fn lookup_optional(&self, code: &OrcCode, name: &str) -> Option<u64> {
        self.session.jit.lookup_optional(code.dylib, name)
    }

    fn functions(&self, _code: &OrcCode, objects: &[Vec<u8>], known: &HashMap<String, u64>) -> Vec<(u64, u64, String)> {
        objects.iter().flat_map(|object| crate::objfile::function_addresses(object, known)).collect()
    }

    fn free(&self, code: OrcCode, path: &str) {
        let OrcCode { dylib, tracker, stubs } = code;
        if let Some(stubs) = stubs {
            stubs.detach();
        }
        if let Err(e) = tracker.remove() {
            log::warn!("jitload: freeing {path} failed: {e}");
        }
        drop(tracker);
        if let Err(e) = self.session.jit.remove_dylib(dylib) {
            log::warn!("jitload: removing the library of a released module failed: {e}");
        }
        self.session.jit.clear_dead_symbols();
    }
}

/// One JIT: an LLJIT, the host description and the shared symbol scope.
pub struct Session {
    jit: Jit,
    host: HostTarget,
    scope: Arc<SharedScope>,
    /// Target machines not in use (see [`Machine`]).
    machines: Mutex<Vec<TargetMachine>>,
    /// Calls in flight and code waiting for them to return (see `grace`). One for the whole
    /// session: a call entering through one library may run another's code (link order).
    /// The persistent object cache, opened on first use (so the environment can still
    /// change before the first import).
    cache: OnceLock<ObjectCache>,
    /// Searched last by every library: jitload exports, the process, user libraries and the
    /// compiler-rt builtins.
    process: Dylib,
}

impl Session {
    /// The process-wide session, created on first use.
    pub fn global() -> Result<Arc<Session>, EngineError> {
        static GLOBAL: OnceLock<Result<Arc<Session>, String>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| Session::with_scope(SharedScope::Process).map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(|message| EngineError::Jit { message })
    }

    /// An independent session: its own JIT, and a scope of its own (imports never see it).
    pub fn new() -> Result<Session, EngineError> {
        Session::with_scope(SharedScope::Private(Default::default()))
    }

    fn with_scope(scope: SharedScope) -> Result<Session, EngineError> {
        let jit = Jit::new().map_err(|message| EngineError::Jit { message })?;
        if jitload_runtime::debug::debugger_enabled() {
            if let Err(e) = jit.enable_debugger_support() {
                log::warn!("jitload: cannot register JIT'd code with debuggers: {e}");
            }
        }
        let scope = Arc::new(scope);
        let process = jit.create_dylib("jitload.process");
        let process_scope = ModuleScope { shared: scope.clone(), dependencies: Vec::new() };
        jit.add_resolver(process, Arc::new(move |name: &str| process_scope.resolve(name)));
        if let Some(archive) = builtins_archive() {
            if let Err(e) = jit.add_archive(process, archive) {
                log::debug!("compiler-rt builtins not used: {e}");
            }
        }
        Ok(Session { jit, host: HostTarget::detect(), scope, machines: Mutex::new(Vec::new()), cache: OnceLock::new(), process })
    }

    pub(crate) fn jit(&self) -> &Jit {
        &self.jit
    }

    pub(crate) fn process_dylib(&self) -> Dylib {
        self.process
    }

    /// A fresh id for a module or library (unique in the process).
    pub(crate) fn next_id(&self) -> u64 {
        jitload_runtime::scope_table::next_id()
    }

    /// What the process dylib would resolve `symbol` to.
    pub(crate) fn process_scope_resolve(&self, symbol: &str) -> Option<u64> {
        ModuleScope { shared: self.scope.clone(), dependencies: Vec::new() }.resolve(symbol)
    }

    pub fn host(&self) -> &HostTarget {
        &self.host
    }

    /// Opens a library and adds it to the scope every module resolves against.
    pub fn load_library(&self, spec: &str) -> Result<String, EngineError> {
        let lib = SharedLibrary::open(spec).map_err(|reason| EngineError::Library { name: spec.to_string(), reason })?;
        let path = lib.path.clone();
        self.scope.add_user_library(Arc::new(lib));
        Ok(path)
    }

    pub fn user_libraries(&self) -> Vec<String> {
        self.scope.user_libraries()
    }

    /// Reads and loads a `.bc` or `.ll` file.
    pub fn load_file(&self, path: &Path, options: &LoadOptions) -> Result<LoadedModule, EngineError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| EngineError::Read { path: shown.clone(), source })?;
        self.load_bytes(&bytes, &shown, options)
    }

    /// The persistent object cache.
    pub fn object_cache(&self) -> &ObjectCache {
        self.cache.get_or_init(|| ObjectCache::from_options(&jitload_options::get()))
    }

    /// The cache key of `bytes` (if the cache is used) and the valid cached object, if any.
    pub(crate) fn cached(&self, bytes: &[u8], path: &str, options: &LoadOptions) -> Result<(Option<CacheKey>, Option<Compiled>), EngineError> {
        let key = options.use_cache.then(|| ObjectCache::key(bytes, options.opt_level.number()));
        // A payload that is checksummed but not ours to read (a format change): compile anew.
        let cached = key.as_ref().and_then(|k| self.object_cache().get(k)).and_then(|payload| Compiled::from_payload(&payload));
        if let (Some(compiled), Some(required)) = (&cached, &options.required_symbol) {
            check_required_export(&compiled.exports, required, path)?;
        }
        Ok((key, cached))
    }

    /// Parses, checks, optimises, compiles and links `bytes`; `path` names it in errors.
    /// A valid cached object for the same input and host skips everything up to linking.
    pub fn load_bytes(&self, bytes: &[u8], path: &str, options: &LoadOptions) -> Result<LoadedModule, EngineError> {
        match self.cached(bytes, path, options)? {
            (_, Some(compiled)) => self.link_checked(compiled, path, options),
            (key, None) => self.compile_and_link(bytes, path, options, key),
        }
    }

    /// Compiles `bytes` (nothing cached under `key`), stores the result under `key` and links it.
    pub(crate) fn compile_and_link(&self, bytes: &[u8], path: &str, options: &LoadOptions, key: Option<CacheKey>) -> Result<LoadedModule, EngineError> {
        let compiled = self.compile_input(bytes, path, options)?;
        if let Some(k) = &key {
            self.object_cache().put(k, &compiled.to_payload());
        }
        self.link_checked(compiled, path, options)
    }

    /// Checks that `compiled`'s symbols resolve and links it.
    pub(crate) fn link_checked(&self, compiled: Compiled, path: &str, options: &LoadOptions) -> Result<LoadedModule, EngineError> {
        self.link_with_stubs(compiled, path, options, None)?
    }

    /// Links `compiled`, its functions resolving to `stubs` first; `Ok(Err(..))` if some
    /// undefined symbol does not resolve (nothing was linked).
    pub(crate) fn link_with_stubs(
        &self,
        compiled: Compiled,
        path: &str,
        options: &LoadOptions,
        stubs: Option<Arc<dyn StubResolver>>,
    ) -> Result<Result<LoadedModule, EngineError>, EngineError> {
        let scope = self.module_scope(&compiled.dependent_libraries, path)?;
        if let Err(unresolved) = check_resolvable(&compiled.undefined, &scope, path) {
            return Ok(Err(unresolved));
        }
        let linker = OrcLinker { session: self, stubs };
        link::link(&linker, scope, self.next_id(), path, compiled, options.required_symbol.as_deref()).map(Ok).map_err(|f| link_failure(path, f))
    }

    /// Compiles `bytes` in a forked child (`options.isolate`) or here.
    fn compile_input(&self, bytes: &[u8], path: &str, options: &LoadOptions) -> Result<Compiled, EngineError> {
        if !options.isolate {
            return self.compile_guarded(bytes, path, options);
        }
        isolate::compile_in_child(path, || self.compile_guarded(bytes, path, options), Compiled::write, Compiled::read)
    }

    /// Runs [`Session::compile_module`] in a private context under crash recovery.
    fn compile_guarded(&self, bytes: &[u8], path: &str, options: &LoadOptions) -> Result<Compiled, EngineError> {
        in_guarded_context(path, |ctx| self.compile_module(ctx, bytes, path, options))
    }

    /// Parse, verify, retarget, check the init symbol, lower constructors, optimise and
    /// compile to an object. Touches no state shared with other threads (it may run in a
    /// forked child).
    fn compile_module(&self, ctx: &Context, bytes: &[u8], path: &str, options: &LoadOptions) -> Result<Compiled, EngineError> {
        let module = ir::parse(ctx, bytes, path)?;
        let mut module = variants::select(ctx, module, &self.host, path)?;
        let (has_ctors, has_dtors) = ir::prepare_for_link(&mut module, &self.host, path)?;
        let symbols = module.symbols();
        if let Some(required) = &options.required_symbol {
            check_required(&symbols, required, path)?;
        }
        let natives = native::carried_objects(&module, path)?;
        let undefined = native::undefined_with(ir::undefined_symbols(&symbols), &symbols, &natives);
        let dependent_libraries = module.dependent_libraries();
        // Locals made external by a parallel split only need to be unique in this module's own
        // JITDylib, and a fixed suffix keeps the object the same for the cache.
        let mut objects = self.compile_objects(&mut module, options.opt_level, path, "jlp")?;
        objects.extend(natives.into_iter().map(|n| n.bytes));
        let exports = ir::exports(&module);
        Ok(Compiled { objects, exports, undefined, dependent_libraries, has_ctors, has_dtors })
    }

    fn module_scope(&self, libraries: &[String], path: &str) -> Result<ModuleScope, EngineError> {
        link::open_scope(&self.scope, libraries).map_err(|f| link_failure(path, f))
    }

    /// A target machine for the host at `opt`, from the pool when one is free.
    pub(crate) fn machine(&self, opt: OptLevel) -> Result<Machine<'_>, String> {
        // In a compiler child another thread of the parent may have held the pool's lock at
        // the fork: never touch it there.
        let pooled = if crate::fork_gate::in_compiler_child() {
            None
        } else {
            let mut pool = self.machines.lock().unwrap_or_else(|e| e.into_inner());
            pool.iter().position(|m| m.opt_level() == opt).map(|i| pool.swap_remove(i))
        };
        let tm = match pooled {
            Some(tm) => tm,
            None => TargetMachine::new(&self.host, opt)?,
        };
        Ok(Machine { tm: Some(tm), pool: (!crate::fork_gate::in_compiler_child()).then_some(&self.machines) })
    }

    /// Optimises `module` for the host at `opt` and emits an object.
    pub(crate) fn compile(&self, module: &mut Module<'_>, opt: OptLevel, path: &str) -> Result<Vec<u8>, EngineError> {
        let tm = self.optimize(module, opt, path)?;
        let object = tm.emit(module, false).map_err(stage_error(path, "code generation"))?;
        codegen_diagnostics(module, path)?;
        Ok(object)
    }

    /// Optimises `module` and generates code, in parallel on pieces of the module when it is
    /// large and several cores are available (LTO-style: optimise whole, split, compile each
    /// piece in its own context on its own thread). `unique` suffixes the names of local
    /// symbols the split makes external; it must be unique within the JITDylib.
    pub(crate) fn compile_objects(&self, module: &mut Module<'_>, opt: OptLevel, path: &str, unique: &str) -> Result<Vec<Vec<u8>>, EngineError> {
        let tm = self.optimize(module, opt, path)?;
        let threads = jitload_options::get().codegen_threads;
        // At -O0 code generation is fast enough that splitting (and the bitcode round trip of
        // each piece) costs more than a second core saves (measured: 284 ms one piece, 487 ms
        // two, for 23k instructions).
        let worth_splitting = opt != OptLevel::O0 && module.instruction_count() >= PARALLEL_CODEGEN_MIN_INSTRUCTIONS;
        if threads < 2 || !worth_splitting || module.has_inline_asm() {
            let object = tm.emit(module, false).map_err(stage_error(path, "code generation"))?;
            codegen_diagnostics(module, path)?;
            return Ok(vec![object]);
        }
        drop(tm);
        module.promote_locals(unique);
        let pieces = module.split_to_bitcode(threads as u32);
        std::thread::scope(|scope| {
            let workers: Vec<_> = pieces
                .iter()
                .enumerate()
                .map(|(i, bitcode)| {
                    scope.spawn(move || {
                        let piece = format!("{path} (piece {})", i + 1);
                        in_guarded_context(&piece, |ctx| {
                            let mut part = Module::parse_bitcode(ctx, bitcode, &piece).map_err(|message| EngineError::Compile {
                                path: piece.clone(),
                                stage: "splitting".into(),
                                message,
                            })?;
                            let tm = self.machine(opt).map_err(stage_error(&piece, "target setup"))?;
                            part.set_data_layout(&tm.data_layout());
                            let object = tm.emit(&part, false).map_err(stage_error(&piece, "code generation"))?;
                            codegen_diagnostics(&part, &piece)?;
                            Ok(object)
                        })
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join().unwrap_or_else(|_| Err(EngineError::LlvmCrash { path: path.to_string(), reason: "a code generation thread panicked".into() }))
                })
                .collect()
        })
    }

    /// Sets the host data layout and runs the `default<On>` pipeline; returns the target
    /// machine, ready to generate code for the optimised module.
    fn optimize(&self, module: &mut Module<'_>, opt: OptLevel, path: &str) -> Result<Machine<'_>, EngineError> {
        let tm = self.machine(opt).map_err(stage_error(path, "target setup"))?;
        module.set_data_layout(&tm.data_layout());
        tm.optimize(module).map_err(stage_error(path, "optimisation"))?;
        Ok(tm)
    }

    /// Compiles `bytes` the way `load_bytes` would and returns the optimised IR and assembly;
    /// in a compiler child, like any untrusted input (see `isolate`).
    pub fn inspect(&self, bytes: &[u8], path: &str, opt: OptLevel) -> Result<(String, String), EngineError> {
        isolate::compile_in_child(
            path,
            || self.inspect_here(bytes, path, opt),
            |(ir, asm), w| {
                w.str(ir).str(asm);
            },
            |r| Some((r.str()?, r.str()?)),
        )
    }

    fn inspect_here(&self, bytes: &[u8], path: &str, opt: OptLevel) -> Result<(String, String), EngineError> {
        in_guarded_context(path, |ctx| {
            let module = ir::parse_content(ctx, bytes, path)?;
            let mut module = variants::select(ctx, module, &self.host, path)?;
            ir::retarget(&mut module, &self.host, path)?;
            // Capture the IR before codegen, which mutates the module, then emit assembly.
            let tm = self.optimize(&mut module, opt, path)?;
            let ir = module.to_ir_text();
            let asm = tm.emit(&module, true).map_err(stage_error(path, "code generation"))?;
            Ok((ir, String::from_utf8_lossy(&asm).into_owned()))
        })
    }

    /// Frees a loaded module: runs its static destructors, then releases its code, data and
    /// JITDylib. Refused (the module is handed back) when another module was linked against
    /// its exports, since that module still points into it.
    pub fn release(&self, module: LoadedModule) -> Result<(), Box<LoadedModule>> {
        link::release(&OrcLinker { session: self, stubs: None }, module)
    }
}

/// A target machine borrowed from the session's pool; returned when dropped. Creating one
/// costs about a millisecond (subtarget tables), as much as compiling a small function, and
/// one may not be used by two threads at once, hence a pool rather than one shared machine.
/// A machine in use when LLVM crashed is never returned (its frame is abandoned).
pub(crate) struct Machine<'s> {
    tm: Option<TargetMachine>,
    /// Where it goes back to (none in a compiler child).
    pool: Option<&'s Mutex<Vec<TargetMachine>>>,
}

impl std::ops::Deref for Machine<'_> {
    type Target = TargetMachine;
    fn deref(&self) -> &TargetMachine {
        self.tm.as_ref().expect("present until dropped")
    }
}

impl Drop for Machine<'_> {
    fn drop(&mut self) {
        if let (Some(tm), Some(pool)) = (self.tm.take(), self.pool) {
            let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < MACHINE_POOL_SIZE {
                pool.push(tm);
            }
        }
    }
}

const MACHINE_POOL_SIZE: usize = 8;

/// Below this many instructions one thread generates code sooner than a split would.
const PARALLEL_CODEGEN_MIN_INSTRUCTIONS: usize = 4000;

/// Runs `work` on a fresh LLVM context under crash recovery. If LLVM crashed, the context is
/// abandoned (leaked), never disposed: the crash may have left it inconsistent.
pub(crate) fn in_guarded_context<T>(path: &str, work: impl FnOnce(&Context) -> Result<T, EngineError>) -> Result<T, EngineError> {
    // The context is disposed inside the guard too: after a failed parse of corrupt bitcode,
    // disposing it can be what crashes (found by the mutation run).
    let guarded_work = || {
        let ctx = Context::new();
        let result = work(&ctx);
        drop(ctx);
        result
    };
    match guarded(guarded_work) {
        Ok(result) => result,
        Err(reason) => Err(EngineError::LlvmCrash { path: path.to_string(), reason }),
    }
}

/// Errors LLVM reported as diagnostics during code generation (some backends report an
/// unsupported construct that way and still emit an object).
fn codegen_diagnostics(module: &Module<'_>, path: &str) -> Result<(), EngineError> {
    let errors = module.take_context_errors();
    if errors.is_empty() {
        return Ok(());
    }
    Err(EngineError::Compile { path: path.to_string(), stage: "code generation".into(), message: errors.join("; ") })
}

/// Wraps an LLVM message from compilation stage `stage` of `path`.
fn stage_error<'a>(path: &'a str, stage: &'static str) -> impl Fn(String) -> EngineError + 'a {
    move |message| EngineError::Compile { path: path.to_string(), stage: stage.to_string(), message }
}

fn check_required(symbols: &[ModuleSymbol], required: &str, path: &str) -> Result<(), EngineError> {
    if symbols.iter().any(|s| s.defined && s.name == required) {
        return Ok(());
    }
    let mut found: Vec<String> = symbols.iter().filter(|s| s.defined && s.name.starts_with("PyInit")).map(|s| s.name.clone()).collect();
    found.sort();
    Err(EngineError::MissingInit { path: path.to_string(), expected: required.to_string(), found })
}

/// The cached-object form of [`check_required`]: the init function must be an export.
fn check_required_export(exports: &[String], required: &str, path: &str) -> Result<(), EngineError> {
    if exports.iter().any(|e| e == required) {
        return Ok(());
    }
    let mut found: Vec<String> = exports.iter().filter(|e| e.starts_with("PyInit")).cloned().collect();
    found.sort();
    Err(EngineError::MissingInit { path: path.to_string(), expected: required.to_string(), found })
}

/// Every symbol the module refers to but does not define must resolve before we link; list
/// all that do not, at once.
fn check_resolvable(undefined: &[String], scope: &ModuleScope, path: &str) -> Result<(), EngineError> {
    let missing: Vec<String> = undefined.iter().filter(|s| scope.resolve(s).is_none()).cloned().collect();
    if missing.is_empty() {
        if let Some((symbol, files)) = undefined.iter().find_map(|s| scope.shared.clash(s).map(|f| (s, f))) {
            return Err(EngineError::Link {
                path: path.to_string(),
                message: format!(
                    "ODR clash: '{symbol}' is defined by more than one loaded module ({}); this module needs it \
                     and jitload will not choose one silently. Give the definitions internal linkage or hidden \
                     visibility, or load only one of those modules",
                    files.join(", ")
                ),
            });
        }
        return Ok(());
    }
    Err(EngineError::Unresolved { path: path.to_string(), symbols: missing })
}

/// Link-time failures: "Symbols not found: [ a, b ]" becomes an Unresolved list.
fn link_failure(path: &str, failure: LinkFailure) -> EngineError {
    match failure {
        LinkFailure::DependentLibrary { library, reason } => EngineError::DependentLibrary { path: path.to_string(), library, reason },
        LinkFailure::Link(message) => link_error(path, message),
    }
}

pub(crate) fn link_error(path: &str, message: String) -> EngineError {
    let mut all = orc::take_reported_errors();
    all.push(message);
    let text = all.join("; ");
    if let Some(start) = text.find("Symbols not found: [") {
        let rest = &text[start + "Symbols not found: [".len()..];
        if let Some(end) = rest.find(']') {
            let mut symbols: Vec<String> = rest[..end].split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            symbols.sort();
            symbols.dedup();
            return EngineError::Unresolved { path: path.to_string(), symbols };
        }
    }
    EngineError::Link { path: path.to_string(), message: text }
}
