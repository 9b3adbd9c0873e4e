//! What both of jitload's native modules do with a linked extension module: run its init the
//! way CPython's dynamic loader does ([`init`]), keep its code while it is in use, and free it
//! after the module object is gone ([`free_with_module`]). `_fastload` (cached objects, no
//! LLVM) and `_native` (the engine) each keep the modules they linked. Both also forward
//! their Rust `log` records to Python's `logging` ([`pylog`]).

pub mod init;
pub mod pylog;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Linked code of one extension module, freed by [`Loaded::release`].
pub trait Loaded: Send {
    /// Frees the code, or hands it back when it must stay (other code links against it).
    fn release(self: Box<Self>) -> Result<(), Box<dyn Loaded>>;
}

/// Modules loaded so far, by id. A module's code stays here until it is released (after a
/// hot reload, once the old module object is gone); CPython never unloads a `.so`.
static LOADED: Mutex<BTreeMap<u64, Box<dyn Loaded>>> = Mutex::new(BTreeMap::new());

/// The id of the code behind each module object returned to the importer, until it asks for
/// it (by object address, right after creating the module).
static MODULE_IDS: Mutex<BTreeMap<usize, u64>> = Mutex::new(BTreeMap::new());

/// Module definitions whose `m_free` jitload wrapped: def -> (original m_free, module id).
static FREE_HOOKS: Mutex<BTreeMap<usize, (Option<pyo3::ffi::freefunc>, u64)>> = Mutex::new(BTreeMap::new());

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
    LOADED.lock().unwrap_or_else(|e| e.into_inner()).insert(id, code);
    let module = init::run_init(py, init_address, constructors, fullname, path, spec)?;
    MODULE_IDS.lock().unwrap_or_else(|e| e.into_inner()).insert(module.as_ptr() as usize, id);
    Ok(module)
}

/// With `allowed`, arranges for `module`'s code to be freed right after the module object
/// is destroyed; `module` must be one this native module just returned from a load (called
/// once per module, allowed or not). Returns whether the hook was installed.
///
/// The hook is the module's own `m_free`: CPython calls it from the module's deallocation
/// after the last use of the module's C definition, whereas weakref callbacks run earlier
/// (and the garbage collector may still traverse the module after them).
#[pyfunction]
pub fn free_with_module(module: &Bound<'_, PyAny>, allowed: bool) -> bool {
    let Some(id) = MODULE_IDS.lock().unwrap_or_else(|e| e.into_inner()).remove(&(module.as_ptr() as usize)) else {
        return false;
    };
    if !allowed {
        return false;
    }
    // SAFETY: type check under the GIL.
    if unsafe { pyo3::ffi::PyModule_Check(module.as_ptr()) } == 0 {
        return false;
    }
    // SAFETY: module is a module object; NULL means it has no definition.
    let def = unsafe { pyo3::ffi::PyModule_GetDef(module.as_ptr()) };
    if def.is_null() {
        return false;
    }
    let mut hooked = FREE_HOOKS.lock().unwrap_or_else(|e| e.into_inner());
    if hooked.contains_key(&(def as usize)) {
        return false;
    }
    // SAFETY: def is the module's PyModuleDef, in the JIT'd module's writable data; we hold
    // the GIL, and CPython reads m_free only when the module is deallocated.
    let original = unsafe { std::ptr::replace(&mut (*def).m_free, Some(module_freed)) };
    hooked.insert(def as usize, (original, id));
    true
}

unsafe extern "C" fn module_freed(module: *mut std::ffi::c_void) {
    // SAFETY: CPython passes the module being deallocated; its definition is still valid.
    let def = unsafe { pyo3::ffi::PyModule_GetDef(module.cast()) };
    let Some((original, id)) = FREE_HOOKS.lock().unwrap_or_else(|e| e.into_inner()).remove(&(def as usize)) else {
        return;
    };
    if let Some(f) = original {
        // SAFETY: the module's own m_free, called as CPython would have.
        unsafe { f(module) };
    }
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
        let Some(code) = LOADED.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) else { continue };
        if let Err(kept) = code.release() {
            LOADED.lock().unwrap_or_else(|e| e.into_inner()).insert(id, kept);
        }
    }
}

/// How many extension modules' code this native module holds now.
#[pyfunction]
pub fn loaded_extension_count() -> usize {
    LOADED.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Runs a multi-phase module's exec slots (a no-op for single-phase modules).
#[pyfunction]
pub fn exec_extension(py: Python<'_>, module: &Bound<'_, PyAny>) -> PyResult<()> {
    init::exec_module(py, module)
}

/// Adds the functions above to a native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(pyo3::wrap_pyfunction!(free_with_module, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(loaded_extension_count, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(exec_extension, m)?)?;
    Ok(())
}

/// Builds `jitload.errors.<cls>(message, name=..., path=...)`.
pub fn make_error(py: Python<'_>, cls: &str, message: String, name: Option<&str>, path: Option<&str>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = py.import("jitload.errors")?;
        let class = module.getattr(cls)?;
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
    build().unwrap_or_else(|e| e)
}
