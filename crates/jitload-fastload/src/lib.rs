//! `jitload._fastload`: imports of bitcode modules whose compiled objects are in the cache,
//! without loading libLLVM (which alone costs more than a whole `.so` import), and the owner
//! of the process-wide symbol scope that `_native` (the engine) shares.

mod warm;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict};

static HITS: AtomicU64 = AtomicU64::new(0);
static MISSES: AtomicU64 = AtomicU64::new(0);
static FALLBACKS: AtomicU64 = AtomicU64::new(0);

/// Links the cached compiled form of the bitcode module at `path` (contents `data` if given)
/// and runs its init `init_symbol` (as `load_extension` does), or returns None when the cache
/// cannot serve it and the engine must.
#[pyfunction]
#[pyo3(signature = (path, fullname, init_symbol, spec, opt_level=2, data=None))]
fn load_cached<'py>(
    py: Python<'py>,
    path: PathBuf,
    fullname: &str,
    init_symbol: &str,
    spec: &Bound<'py, PyAny>,
    opt_level: u8,
    data: Option<&[u8]>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    // `data`: the file's contents when the caller read them already (the importer does).
    let read;
    let bytes: &[u8] = match data {
        Some(data) => data,
        None => match std::fs::read(&path) {
            Ok(contents) => {
                read = contents;
                &read
            }
            Err(_) => return Ok(None), // the engine reports it
        },
    };
    let shown = path.display().to_string();
    let linked = py.detach(|| {
        std::panic::catch_unwind(|| warm::link_cached(bytes, &shown, init_symbol, opt_level))
            .unwrap_or_else(|_| Err(warm::Miss::Unusable("the warm path panicked".into())))
    });
    let module = match linked {
        Ok(module) => module,
        Err(miss) => {
            let counter = if matches!(miss, warm::Miss::Unusable(_)) { &FALLBACKS } else { &MISSES };
            counter.fetch_add(1, Ordering::Relaxed);
            log::debug!("jitload: {shown}: not from the cache without LLVM: {miss}");
            return Ok(None);
        }
    };
    HITS.fetch_add(1, Ordering::Relaxed);
    let (id, ctors) = (module.id, module.constructors);
    let init = module.required_address.expect("the init symbol was required");
    jitload_pyinit::keep_and_init(py, id, Box::new(module), init, ctors, fullname, &shown, spec).map(Some)
}

/// Counts of this process's warm-path attempts: served, not cached (or cache off), and
/// cached but left to the engine.
#[pyfunction]
fn stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("hits", HITS.load(Ordering::Relaxed))?;
    d.set_item("misses", MISSES.load(Ordering::Relaxed))?;
    d.set_item("fallbacks", FALLBACKS.load(Ordering::Relaxed))?;
    Ok(d)
}

#[pymodule]
fn _fastload(m: &Bound<'_, PyModule>) -> PyResult<()> {
    jitload_pyinit::pylog::install(m.py())?;
    let table = std::ptr::NonNull::new(jitload_runtime::scope_table::own_table().cast_mut()).expect("a static");
    // SAFETY: the table is a static of this module, which CPython never unloads.
    let capsule = unsafe { PyCapsule::new_with_pointer(m.py(), table, jitload_runtime::scope_table::CAPSULE_NAME) }?;
    m.add("_PROCESS_SCOPE", capsule)?;
    m.add_function(wrap_pyfunction!(load_cached, m)?)?;
    m.add_function(wrap_pyfunction!(stats, m)?)?;
    jitload_pyinit::register(m)?;
    Ok(())
}
