//! `jitload._native`: the Python face of the engine. Argument normalisation and the import
//! protocol live in Python; anything touching bitcode, symbols or code memory is here.

mod cache;
mod engine;
mod error;
mod init;
mod stencils;
mod subinterp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jitload_engine::{link, LoadOptions, LoadedModule, OptLevel, Session};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::engine_error;

/// Modules loaded so far, by id. A module's code stays here until `release_extension` (after
/// a hot reload, once the old module object is gone); CPython never unloads a `.so`.
static LOADED: Mutex<BTreeMap<u64, LoadedModule>> = Mutex::new(BTreeMap::new());

/// The id of the code behind each module object `load_extension` returned, until the
/// importer asks for it (by object address, right after creating the module).
static MODULE_IDS: Mutex<BTreeMap<usize, u64>> = Mutex::new(BTreeMap::new());

fn session(py: Python<'_>) -> PyResult<std::sync::Arc<Session>> {
    py.detach(Session::global).map_err(|e| engine_error(py, e, None))
}

fn opt_level(level: u8) -> PyResult<OptLevel> {
    OptLevel::from_number(level).ok_or_else(|| PyValueError::new_err(format!("opt_level must be 0-3, not {level}")))
}

/// Compiles and links an extension module from `path`, runs its static constructors and its
/// init function `init_symbol`, and returns the module object (unexecuted for PEP 489).
#[pyfunction]
#[pyo3(signature = (path, fullname, init_symbol, spec, opt_level=2, isolate=true, use_cache=true))]
#[allow(clippy::too_many_arguments)]
fn load_extension<'py>(
    py: Python<'py>,
    path: PathBuf,
    fullname: &str,
    init_symbol: &str,
    spec: &Bound<'py, PyAny>,
    opt_level: u8,
    isolate: bool,
    use_cache: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let level = self::opt_level(opt_level)?;
    let session = session(py)?;
    let options = LoadOptions { opt_level: level, required_symbol: Some(init_symbol.to_string()), isolate, use_cache };
    let loaded = py.detach(|| session.load_file(&path, &options));
    cache::warn_once(py, &session)?;
    let loaded = loaded.map_err(|e| engine_error(py, e, Some(fullname)))?;
    let init_address = loaded.required_address.expect("required symbol was looked up");
    let constructors = loaded.constructors;
    let id = loaded.id;
    LOADED.lock().unwrap_or_else(|e| e.into_inner()).insert(id, loaded);
    let module = init::run_init(py, init_address, constructors, fullname, &path.display().to_string(), spec)?;
    MODULE_IDS.lock().unwrap_or_else(|e| e.into_inner()).insert(module.as_ptr() as usize, id);
    Ok(module)
}

/// With `allowed`, arranges for `module`'s code to be freed right after the module object
/// is destroyed; `module` must be one `load_extension` just returned (called once per
/// module, allowed or not). Returns whether the hook was installed.
///
/// The hook is the module's own `m_free`: CPython calls it from the module's deallocation
/// after the last use of the module's C definition, whereas weakref callbacks run earlier
/// (and the garbage collector may still traverse the module after them).
#[pyfunction]
fn free_with_module(module: &Bound<'_, PyAny>, allowed: bool) -> bool {
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

/// Module definitions whose `m_free` jitload wrapped: def -> (original m_free, extension id).
static FREE_HOOKS: Mutex<BTreeMap<usize, (Option<pyo3::ffi::freefunc>, u64)>> = Mutex::new(BTreeMap::new());

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
    release_extension(id);
}

/// Frees the code of extension `id` at the interpreter's next safe point (a CPython pending
/// call: the deallocation that requested it has finished by then).
fn release_extension(id: u64) {
    extern "C" fn release_now(arg: *mut std::ffi::c_void) -> std::ffi::c_int {
        let id = arg as usize as u64;
        let _ = std::panic::catch_unwind(|| {
            let Some(module) = LOADED.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) else { return };
            let Ok(session) = Session::global() else { return };
            if let Err(kept) = session.release(module) {
                // Other modules link against it: it stays for the life of the process.
                LOADED.lock().unwrap_or_else(|e| e.into_inner()).insert(id, *kept);
            }
        });
        0
    }
    // SAFETY: release_now is a plain extern "C" fn; the argument is the id, not a pointer.
    // Py_AddPendingCall may be called without the GIL and fails only when its queue is full.
    if unsafe { pyo3::ffi::Py_AddPendingCall(Some(release_now), id as usize as *mut std::ffi::c_void) } != 0 {
        log::debug!("jitload: could not schedule freeing extension {id}; it stays loaded");
    }
}

/// How many extension modules' code is loaded now.
#[pyfunction]
fn loaded_extension_count() -> usize {
    LOADED.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Runs a multi-phase module's exec slots (a no-op for single-phase modules).
#[pyfunction]
fn exec_extension(py: Python<'_>, module: &Bound<'_, PyAny>) -> PyResult<()> {
    init::exec_module(py, module)
}

/// Makes a shared library's symbols available to modules loaded afterwards; returns the
/// path that was opened.
#[pyfunction]
fn load_library(py: Python<'_>, spec: &str) -> PyResult<String> {
    let session = session(py)?;
    session.load_library(spec).map_err(|e| engine_error(py, e, None))
}

/// Paths of the libraries added with `load_library`.
#[pyfunction]
fn user_libraries(py: Python<'_>) -> PyResult<Vec<String>> {
    Ok(session(py)?.user_libraries())
}

/// Links bitcode/IR files into one bitcode module at `output`, recording `libraries` as
/// `!llvm.dependent-libraries`.
#[pyfunction]
#[pyo3(signature = (inputs, output, libraries=Vec::new()))]
fn link_bitcode(py: Python<'_>, inputs: Vec<PathBuf>, output: PathBuf, libraries: Vec<String>) -> PyResult<()> {
    let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    py.detach(|| link::link_files(&refs, &output, &libraries)).map_err(|e| engine_error(py, e, None))
}

/// The libraries a bitcode/IR file records in `!llvm.dependent-libraries`.
#[pyfunction]
fn dependent_libraries(py: Python<'_>, path: PathBuf) -> PyResult<Vec<String>> {
    py.detach(|| link::dependent_libraries(&path)).map_err(|e| engine_error(py, e, None))
}

/// The optimised IR and native assembly jitload would produce for a file.
#[pyfunction]
#[pyo3(signature = (path, opt_level=2))]
fn inspect(py: Python<'_>, path: PathBuf, opt_level: u8) -> PyResult<(String, String)> {
    let level = self::opt_level(opt_level)?;
    let session = session(py)?;
    let shown = path.display().to_string();
    py.detach(|| {
        let bytes = std::fs::read(&path).map_err(|source| jitload_engine::EngineError::Read { path: shown.clone(), source })?;
        session.inspect(&bytes, &shown, level)
    })
    .map_err(|e| engine_error(py, e, None))
}

/// The host target jitload compiles for: triple, CPU name and features.
#[pyfunction]
fn host_target(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let host = jitload_engine::HostTarget::detect();
    let d = PyDict::new(py);
    d.set_item("triple", host.triple)?;
    d.set_item("cpu", host.cpu)?;
    d.set_item("features", host.features)?;
    Ok(d)
}

/// Directories searched for shared libraries given by bare name (after LD_LIBRARY_PATH).
#[pyfunction]
fn library_dirs() -> Vec<&'static str> {
    jitload_engine::resolve::LIBRARY_DIRS.to_vec()
}

/// The version of the LLVM library in use, e.g. "22.1.8".
#[pyfunction]
fn llvm_version() -> String {
    jitload_engine::llvm::llvm_version()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load_extension, m)?)?;
    m.add_function(wrap_pyfunction!(exec_extension, m)?)?;
    m.add_function(wrap_pyfunction!(load_library, m)?)?;
    m.add_function(wrap_pyfunction!(user_libraries, m)?)?;
    m.add_function(wrap_pyfunction!(link_bitcode, m)?)?;
    m.add_function(wrap_pyfunction!(dependent_libraries, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(host_target, m)?)?;
    m.add_function(wrap_pyfunction!(llvm_version, m)?)?;
    m.add_function(wrap_pyfunction!(library_dirs, m)?)?;
    m.add_function(wrap_pyfunction!(free_with_module, m)?)?;
    m.add_function(wrap_pyfunction!(loaded_extension_count, m)?)?;
    jitload_engine::isolate::set_interrupt_check(error::interrupt_requested);
    cache::register(m)?;
    engine::register(m)?;
    stencils::register(m)?;
    Ok(())
}
