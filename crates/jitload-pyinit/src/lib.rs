//! What both of jitload's native modules do with a linked extension module: run its init the
//! way CPython's dynamic loader does ([`init`], [`extensions`]), keep its code while it is in
//! use, serve later imports of the same file from that code as CPython serves a `.so` it has
//! loaded ([`find_extension`]), and free the code once a reload replaced it and no module
//! object uses it any more ([`track_extension`]). `_fastload` (cached objects, no LLVM) and
//! `_native` (the engine) each keep the modules they linked. Both also forward their Rust
//! `log` records to Python's `logging` ([`pylog`]).

mod extensions;
mod options;
pub mod init;
pub mod pylog;
pub mod subinterp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Linked code of one extension module, freed by [`Loaded::release`].
pub trait Loaded: Send {
    /// Frees the code, or hands it back when it must stay (other code links against it).
    fn release(self: Box<Self>) -> Result<(), Box<dyn Loaded>>;
}

/// The code this native module loaded and how it is used. CPython never unloads a `.so`;
/// jitload frees a module's code when a reload replaced it (its file changed) and the last
/// module object made from it is gone.
#[derive(Default)]
struct Modules {
    /// Module id -> its code.
    code: BTreeMap<u64, Box<dyn Loaded>>,
    /// Module id -> its init function, for modules whose init has run.
    inits: BTreeMap<u64, u64>,
    /// Object address of a module just returned to the importer -> its id, until
    /// [`track_extension`] takes it.
    fresh: BTreeMap<usize, u64>,
    /// (file, module name) -> the code a new import of that file (while unchanged) uses:
    /// CPython's `extensions` table.
    files: BTreeMap<(String, String), Registered>,
    /// Module id -> references to its code: the `files` entry and each live module object
    /// made from its definition.
    users: BTreeMap<u64, usize>,
    /// Ids whose code stays for the life of the process: a module held something that may
    /// outlive it (a type, a capsule, ...), as CPython keeps every `.so`.
    pinned: BTreeSet<u64>,
    /// Definitions whose `m_free` jitload wrapped -> (original m_free, module id).
    free_hooks: BTreeMap<usize, (Option<pyo3::ffi::freefunc>, u64)>,
    /// Module id -> `pkgcontext::modules_created()` before its init ran, until
    /// [`track_extension`] compares.
    created_before: BTreeMap<u64, u64>,
}

/// One `files` entry.
struct Registered {
    id: u64,
    /// What identifies the file's contents when it was loaded (from the importer).
    key: String,
    /// The definition of a single-phase module (0 for multi-phase).
    single_phase_def: usize,
}

static MODULES: LazyLock<Mutex<Modules>> = LazyLock::new(Mutex::default);

/// The bookkeeping, locked. Never held across a call into Python or into a module's code:
/// a deallocation there may re-enter through [`module_freed`].
fn modules() -> MutexGuard<'static, Modules> {
    MODULES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps `code` as module `id` and runs its init: see [`init::run_init`]. The code stays
/// loaded even if init fails (it may have registered callbacks or types).
#[allow(clippy::too_many_arguments)]
pub fn keep_and_init<'py>(
    py: Python<'py>,
    id: u64,
    code: Box<dyn Loaded>,
    init_address: u64,
    constructors: Option<u64>,
    fullname: &str,
    path: &str,
    spec: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // A safe point: free what earlier modules left queued (if the pending call was lost).
    release_queued();
    {
        let mut m = modules();
        m.code.insert(id, code);
        m.created_before.insert(id, jitload_runtime::pkgcontext::modules_created());
    }
    let module = init::run_init(py, init_address, constructors, fullname, path, spec).inspect_err(|_| {
        modules().created_before.remove(&id);
    })?;
    let mut m = modules();
    m.inits.insert(id, init_address);
    m.fresh.insert(module.as_ptr() as usize, id);
    Ok(module)
}

/// Records that `module` (just returned by a load of this native module) runs the code of
/// file `path` as `fullname`, whose contents `key` identifies: later imports of the unchanged
/// file use this code ([`find_extension`]), and a load of changed contents replaces it. With
/// `releasable`, the code is freed once replaced and no module object made from it is left;
/// otherwise it stays for the life of the process. Returns whether `module` was one this
/// native module had just loaded.
///
/// The module objects are counted through their definition's `m_free`, which CPython calls
/// from the module's deallocation after the last use of the module's C definition (weakref
/// callbacks run earlier, and the garbage collector may still traverse the module after them).
#[pyfunction]
pub fn track_extension(module: &Bound<'_, PyAny>, path: &str, fullname: &str, key: &str, releasable: bool) -> bool {
    let Some(id) = modules().fresh.remove(&(module.as_ptr() as usize)) else {
        return false;
    };
    let single_phase_def = extensions::single_phase_def(module).map_or(0, |d| d as usize);
    let replaced = {
        let mut m = modules();
        // Modules its init and exec made besides its own (a single-phase module makes itself
        // with PyModule_Create2): nothing counts those, so the code stays.
        let created = m.created_before.remove(&id).map_or(0, |before| jitload_runtime::pkgcontext::modules_created() - before);
        if !releasable || created > u64::from(single_phase_def != 0) {
            m.pinned.insert(id);
        }
        *m.users.entry(id).or_default() += 1;
        m.files.insert((path.to_string(), fullname.to_string()), Registered { id, key: key.to_string(), single_phase_def })
    };
    count_module_object(module, id);
    if let Some(old) = replaced {
        if old.single_phase_def != 0 {
            extensions::forget(old.single_phase_def as *mut pyo3::ffi::PyModuleDef);
        }
        drop_user(old.id);
    }
    true
}

/// The module `fullname` made from the code already loaded for file `path`, if its contents
/// are still those identified by `key`, as CPython's `import_find_extension` (single-phase)
/// or a second `dlopen` of the same `.so` (multi-phase: its init runs again and the module
/// is created from `spec`, not yet executed). None when the file must be loaded.
#[pyfunction]
pub fn find_extension<'py>(py: Python<'py>, path: &str, fullname: &str, key: &str, spec: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let (id, single_phase_def, init_address) = {
        let m = modules();
        let Some(entry) = m.files.get(&(path.to_string(), fullname.to_string())).filter(|e| e.key == key) else {
            return Ok(None);
        };
        let Some(&init_address) = m.inits.get(&entry.id) else { return Ok(None) };
        (entry.id, entry.single_phase_def, init_address)
    };
    let module = if single_phase_def != 0 {
        init::check_single_phase_allowed(py, spec)?;
        match extensions::import_again(py, single_phase_def as *mut pyo3::ffi::PyModuleDef, fullname)? {
            Some(module) => module,
            None => return Ok(None),
        }
    } else {
        init::run_init(py, init_address, None, fullname, path, spec)?
    };
    count_module_object(&module, id);
    Ok(Some(module))
}

/// Counts `module` as a user of code `id` if it has a definition (whose `m_free` reports its
/// end); hooks that definition's `m_free` the first time.
fn count_module_object(module: &Bound<'_, PyAny>, id: u64) {
    // SAFETY: type check under the GIL.
    if unsafe { pyo3::ffi::PyModule_Check(module.as_ptr()) } == 0 {
        return;
    }
    // SAFETY: module is a module object; NULL means it has no definition.
    let def = unsafe { pyo3::ffi::PyModule_GetDef(module.as_ptr()) };
    if def.is_null() {
        return;
    }
    let mut m = modules();
    m.free_hooks.entry(def as usize).or_insert_with(|| {
        // SAFETY: def is the module's PyModuleDef, in the JIT'd module's writable data; we
        // hold the GIL, and CPython reads m_free only when a module is deallocated.
        let original = unsafe { std::ptr::replace(&mut (*def).m_free, Some(module_freed)) };
        (original, id)
    });
    *m.users.entry(id).or_default() += 1;
}

unsafe extern "C" fn module_freed(module: *mut std::ffi::c_void) {
    // SAFETY: CPython passes the module being deallocated; its definition is still valid.
    let def = unsafe { pyo3::ffi::PyModule_GetDef(module.cast()) };
    let Some((original, id)) = modules().free_hooks.get(&(def as usize)).copied() else {
        return;
    };
    if let Some(f) = original {
        // SAFETY: the module's own m_free, called as CPython would have.
        unsafe { f(module) };
    }
    drop_user(id);
}

/// Drops one reference to code `id`; the last one queues the code to be freed (unless it is
/// pinned).
fn drop_user(id: u64) {
    let mut m = modules();
    let Some(count) = m.users.get_mut(&id) else { return };
    *count -= 1;
    if *count > 0 {
        return;
    }
    m.users.remove(&id);
    if m.pinned.contains(&id) {
        return;
    }
    m.free_hooks.retain(|_, (_, owner)| *owner != id);
    drop(m);
    release_later(id);
}

/// Modules whose objects are gone and whose code waits to be freed.
static TO_RELEASE: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Whether a pending call to [`release_queued`] is scheduled.
static RELEASE_SCHEDULED: AtomicBool = AtomicBool::new(false);

/// Frees the code of module `id` at the interpreter's next safe point (a CPython pending
/// call: the deallocation that requested it has finished by then). One pending call drains
/// every queued module: the garbage collector frees modules in batches (a module and its
/// functions form a cycle), and CPython's pending-call queue holds only 32 calls — one call
/// per module lost the releases past that, and their code stayed loaded.
fn release_later(id: u64) {
    TO_RELEASE.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    schedule_release();
}

fn schedule_release() {
    extern "C" fn release_now(_: *mut std::ffi::c_void) -> std::ffi::c_int {
        RELEASE_SCHEDULED.store(false, Ordering::SeqCst);
        let _ = std::panic::catch_unwind(release_queued);
        0
    }
    if RELEASE_SCHEDULED.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: release_now is a plain extern "C" fn taking no data. Py_AddPendingCall may be
    // called without the GIL and fails only when its queue is full; then the next load (or
    // the next freed module) tries again.
    if unsafe { pyo3::ffi::Py_AddPendingCall(Some(release_now), std::ptr::null_mut()) } != 0 {
        RELEASE_SCHEDULED.store(false, Ordering::SeqCst);
        log::debug!("jitload: freeing code deferred (the interpreter's pending-call queue is full)");
    }
}

/// Frees every queued module's code (refused ones stay for the life of the process: other
/// modules link against them). Runs with the GIL held, outside any deallocation.
fn release_queued() {
    let ids = std::mem::take(&mut *TO_RELEASE.lock().unwrap_or_else(|e| e.into_inner()));
    for id in ids {
        let Some(code) = modules().code.remove(&id) else { continue };
        modules().inits.remove(&id);
        if let Err(kept) = code.release() {
            modules().code.insert(id, kept);
        }
    }
}

/// How many extension modules' code this native module holds now.
#[pyfunction]
pub fn loaded_extension_count() -> usize {
    modules().code.len()
}

/// Runs a multi-phase module's exec slots (a no-op for single-phase modules).
#[pyfunction]
pub fn exec_extension(py: Python<'_>, module: &Bound<'_, PyAny>) -> PyResult<()> {
    init::exec_module(py, module)
}

/// Whether the calling thread runs in the main interpreter.
#[pyfunction]
pub fn in_main_interpreter() -> bool {
    extensions::in_main_interpreter()
}

/// The records of the Python ABI in a module's bytes: (tag, version) pairs, see
/// `jitload.abi`.
#[pyfunction]
pub fn python_abi_records(data: &[u8]) -> Vec<(String, String)> {
    jitload_runtime::python_abi::records(data)
}

/// Adds the functions above to a native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    configure_code_memory();
    m.add_function(pyo3::wrap_pyfunction!(track_extension, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(find_extension, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(in_main_interpreter, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(python_abi_records, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(error_classes, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(loaded_extension_count, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(exec_extension, m)?)?;
    options::register(m)?;
    Ok(())
}

/// Configures this native module's code memory (each native module links its own
/// jitload-codemem) from the settings: `JITLOAD_CODE_MEMORY=auto|mprotect|dualmap` (or its
/// former name `JITLOAD_STENCIL_MEMORY`), `JITLOAD_STENCIL_POOL=0` turns the page pool for small
/// blocks off. Blocks made earlier keep how they were made.
pub(crate) fn configure_code_memory() {
    let options = jitload_options::get();
    jitload_codemem::configure(match options.code_memory {
        jitload_options::CodeMemoryMode::Auto => jitload_codemem::Mode::Auto,
        jitload_options::CodeMemoryMode::Mprotect => jitload_codemem::Mode::Mprotect,
        jitload_options::CodeMemoryMode::DualMap => jitload_codemem::Mode::DualMap,
    });
    jitload_codemem::block::set_pooling(options.stencil_pool);
}

/// The exception classes jitload's native code raises, defined in `jitload.errors` (plain
/// Python, importable without loading LLVM). Every Rust error type maps onto these by an
/// exhaustive `match` (`jitload-py`'s `error.rs`, `init.rs` here), never by a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    Jitload,
    Bitcode,
    Abi,
    Compile,
    Link,
    Library,
    Init,
    InitSystem,
    Toolchain,
    CSource,
    DuplicateSymbol,
    SymbolNotFound,
    Removed,
    Generator,
    Callback,
}

impl ErrorClass {
    /// Every class, for the test that each exists, is exported and is raised.
    pub const ALL: [ErrorClass; 15] = [
        ErrorClass::Jitload,
        ErrorClass::Bitcode,
        ErrorClass::Abi,
        ErrorClass::Compile,
        ErrorClass::Link,
        ErrorClass::Library,
        ErrorClass::Init,
        ErrorClass::InitSystem,
        ErrorClass::Toolchain,
        ErrorClass::CSource,
        ErrorClass::DuplicateSymbol,
        ErrorClass::SymbolNotFound,
        ErrorClass::Removed,
        ErrorClass::Generator,
        ErrorClass::Callback,
    ];

    /// The class's name in `jitload.errors`.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorClass::Jitload => "JitloadError",
            ErrorClass::Bitcode => "BitcodeError",
            ErrorClass::Abi => "AbiError",
            ErrorClass::Compile => "CompileError",
            ErrorClass::Link => "LinkError",
            ErrorClass::Library => "LibraryError",
            ErrorClass::Init => "InitError",
            ErrorClass::InitSystem => "InitSystemError",
            ErrorClass::Toolchain => "ToolchainError",
            ErrorClass::CSource => "CSourceError",
            ErrorClass::DuplicateSymbol => "DuplicateSymbolError",
            ErrorClass::SymbolNotFound => "SymbolNotFoundError",
            ErrorClass::Removed => "RemovedError",
            ErrorClass::Generator => "GeneratorError",
            ErrorClass::Callback => "CallbackError",
        }
    }
}

/// The names of [`ErrorClass::ALL`], for the Python test.
#[pyfunction]
pub fn error_classes() -> Vec<&'static str> {
    ErrorClass::ALL.iter().map(|c| c.name()).collect()
}

/// Builds `jitload.errors.<class>(message, name=..., path=...)`. Should `jitload.errors`
/// itself fail to import or build the exception, the error is still an `ImportError` with
/// the same message (the failure chained as its cause), never the lookup's own exception.
pub fn make_error(py: Python<'_>, class: ErrorClass, message: String, name: Option<&str>, path: Option<&str>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = py.import("jitload.errors")?;
        let class = module.getattr(class.name())?;
        let kwargs = PyDict::new(py);
        if let Some(n) = name {
            kwargs.set_item("name", n)?;
        }
        if let Some(p) = path {
            kwargs.set_item("path", p)?;
        }
        let instance = class.call((message.clone(),), Some(&kwargs))?;
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|failure| {
        let err = pyo3::exceptions::PyImportError::new_err(message.clone());
        err.set_cause(py, Some(failure));
        err
    })
}
