//! `jitload._native`: the Python face of the engine. Argument normalisation and the import
//! protocol live in Python; anything touching bitcode, symbols or code memory is here.

mod cache;
mod engine;
mod error;
mod stencils;
mod subinterp;
mod tiers;

use std::path::{Path, PathBuf};

use jitload_engine::{link, LoadOptions, LoadedModule, OptLevel, Session};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::engine_error;

fn session(py: Python<'_>) -> PyResult<std::sync::Arc<Session>> {
    py.detach(Session::global).map_err(|e| engine_error(py, e, None))
}

fn opt_level(level: u8) -> PyResult<OptLevel> {
    OptLevel::from_number(level).ok_or_else(|| PyValueError::new_err(format!("opt_level must be 0-3, not {level}")))
}

/// Compiles and links an extension module from `path`, runs its static constructors and its
/// init function `init_symbol`, and returns the module object (unexecuted for PEP 489).
#[pyfunction]
#[pyo3(signature = (path, fullname, init_symbol, spec, opt_level=2, isolate=true, use_cache=true, tiered=false))]
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
    tiered: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let level = self::opt_level(opt_level)?;
    let session = session(py)?;
    let options = LoadOptions { opt_level: level, required_symbol: Some(init_symbol.to_string()), isolate, use_cache };
    let loaded = py.detach(|| if tiered { jitload_engine::tiers::load_file(&session, &path, &options) } else { session.load_file(&path, &options) });
    cache::warn_once(py, &session)?;
    let loaded = loaded.map_err(|e| engine_error(py, e, Some(fullname)))?;
    let init_address = loaded.required_address.expect("required symbol was looked up");
    let constructors = loaded.constructors;
    let id = loaded.id;
    jitload_pyinit::keep_and_init(py, id, Box::new(EngineModule(loaded)), init_address, constructors, fullname, &path.display().to_string(), spec)
}

/// An extension module the engine linked (kept in [`jitload_pyinit`]'s registry).
struct EngineModule(LoadedModule);

impl jitload_pyinit::Loaded for EngineModule {
    fn release(self: Box<Self>) -> Result<(), Box<dyn jitload_pyinit::Loaded>> {
        let Ok(session) = Session::global() else { return Err(self) };
        session.release(self.0).map_err(|kept| Box::new(EngineModule(*kept)) as Box<dyn jitload_pyinit::Loaded>)
    }
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
#[pyo3(signature = (inputs, output, libraries=Vec::new(), python_abi=None))]
fn link_bitcode(py: Python<'_>, inputs: Vec<PathBuf>, output: PathBuf, libraries: Vec<String>, python_abi: Option<String>) -> PyResult<()> {
    let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    py.detach(|| link::link_files(&refs, &output, &libraries, python_abi.as_deref())).map_err(|e| engine_error(py, e, None))
}

/// Stores each (x86-64 level, bitcode file) of `variants` in the bitcode module at `base`.
#[pyfunction]
fn embed_variants(py: Python<'_>, base: PathBuf, variants: Vec<(String, PathBuf)>) -> PyResult<()> {
    py.detach(|| jitload_engine::variants::embed(&base, &variants)).map_err(|e| engine_error(py, e, None))
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

/// The host target jitload compiles for: triple, CPU name and features, tuning, and the
/// features functions do not get unless they ask for them.
#[pyfunction]
fn host_target(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let host = jitload_engine::HostTarget::detect();
    let d = PyDict::new(py);
    d.set_item("triple", host.triple)?;
    d.set_item("cpu", host.cpu)?;
    d.set_item("features", host.features)?;
    d.set_item("tune", host.tune)?;
    d.set_item("withheld", host.withheld.join(","))?;
    Ok(d)
}

/// Directories searched for shared libraries given by bare name (after LD_LIBRARY_PATH).
#[pyfunction]
fn library_dirs() -> Vec<&'static str> {
    jitload_runtime::dynlib::LIBRARY_DIRS.to_vec()
}

/// The version of the LLVM library in use, e.g. "22.1.8".
#[pyfunction]
fn llvm_version() -> String {
    jitload_engine::llvm::llvm_version()
}

/// Connects this module to `_fastload`'s process scope (see `jitload_runtime::scope_table`),
/// before anything here resolves a symbol.
fn share_process_scope(py: Python<'_>) -> PyResult<()> {
    let fastload = py.import("jitload._fastload")?;
    let capsule = fastload.getattr("_PROCESS_SCOPE")?;
    let capsule = capsule.cast::<pyo3::types::PyCapsule>()?;
    let table = capsule.pointer_checked(Some(jitload_runtime::scope_table::CAPSULE_NAME))?;
    // SAFETY: the capsule holds `own_table()` of `_fastload`, a module never unloaded.
    unsafe { jitload_runtime::scope_table::install(table.as_ptr()) }.map_err(pyo3::exceptions::PyImportError::new_err)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    jitload_pyinit::pylog::install(m.py())?;
    share_process_scope(m.py())?;
    jitload_pyinit::register(m)?;
    m.add_function(wrap_pyfunction!(load_extension, m)?)?;
    m.add_function(wrap_pyfunction!(load_library, m)?)?;
    m.add_function(wrap_pyfunction!(user_libraries, m)?)?;
    m.add_function(wrap_pyfunction!(link_bitcode, m)?)?;
    m.add_function(wrap_pyfunction!(embed_variants, m)?)?;
    m.add_function(wrap_pyfunction!(dependent_libraries, m)?)?;
    m.add_function(wrap_pyfunction!(inspect, m)?)?;
    m.add_function(wrap_pyfunction!(host_target, m)?)?;
    m.add_function(wrap_pyfunction!(llvm_version, m)?)?;
    m.add_function(wrap_pyfunction!(library_dirs, m)?)?;
    jitload_engine::isolate::set_interrupt_check(error::interrupt_requested);
    cache::register(m)?;
    engine::register(m)?;
    stencils::register(m)?;
    tiers::register(m)?;
    Ok(())
}
