//! `python -m jitload cache …` and the cache's one-time warning, over the engine's
//! persistent object cache.

use std::sync::Arc;

use jitload_engine::Session;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::engine_error;

fn session(py: Python<'_>) -> PyResult<Arc<Session>> {
    py.detach(Session::global).map_err(|e| engine_error(py, e, None))
}

fn io_error(e: impl std::fmt::Display) -> PyErr {
    pyo3::exceptions::PyOSError::new_err(e.to_string())
}

/// Issues the cache's pending warning (unusable directory, failed write) as a
/// `jitload.JitloadWarning`, once.
pub fn warn_once(py: Python<'_>, session: &Session) -> PyResult<()> {
    if let Some(message) = session.object_cache().take_warning() {
        let category = py.import("jitload.errors")?.getattr("JitloadWarning")?;
        PyErr::warn(py, &category, &std::ffi::CString::new(message).unwrap_or_default(), 1)?;
    }
    Ok(())
}

/// `{"dir", "entries", "bytes", "max_bytes"}`, or None when the cache is off or unusable.
#[pyfunction]
fn cache_info(py: Python<'_>) -> PyResult<Option<Bound<'_, PyDict>>> {
    let session = session(py)?;
    warn_once(py, &session)?;
    let Some(info) = session.object_cache().info() else { return Ok(None) };
    let info = info.map_err(io_error)?;
    let d = PyDict::new(py);
    d.set_item("dir", info.dir.display().to_string())?;
    d.set_item("entries", info.entries)?;
    d.set_item("bytes", info.bytes)?;
    d.set_item("max_bytes", info.max_bytes)?;
    Ok(Some(d))
}

/// Removes every entry; returns how many (None when the cache is off or unusable).
#[pyfunction]
fn cache_clear(py: Python<'_>) -> PyResult<Option<usize>> {
    let session = session(py)?;
    warn_once(py, &session)?;
    session.object_cache().clear().transpose().map_err(io_error)
}

/// Evicts least recently used entries down to `max_bytes`.
#[pyfunction]
fn cache_prune(py: Python<'_>, max_bytes: u64) -> PyResult<Option<Bound<'_, PyDict>>> {
    let session = session(py)?;
    warn_once(py, &session)?;
    let Some(stats) = session.object_cache().prune(max_bytes) else { return Ok(None) };
    let stats = stats.map_err(io_error)?;
    let d = PyDict::new(py);
    d.set_item("removed", stats.removed)?;
    d.set_item("freed_bytes", stats.freed_bytes)?;
    d.set_item("remaining_entries", stats.remaining_entries)?;
    d.set_item("remaining_bytes", stats.remaining_bytes)?;
    d.set_item("stale_temps_removed", stats.stale_temps_removed)?;
    Ok(Some(d))
}

/// This process's cache hits, misses, stores and failed stores.
#[pyfunction]
fn cache_stats(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let stats = session(py)?.object_cache().stats();
    let d = PyDict::new(py);
    d.set_item("hits", stats.hits)?;
    d.set_item("misses", stats.misses)?;
    d.set_item("stores", stats.stores)?;
    d.set_item("store_failures", stats.store_failures)?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cache_info, m)?)?;
    m.add_function(wrap_pyfunction!(cache_clear, m)?)?;
    m.add_function(wrap_pyfunction!(cache_prune, m)?)?;
    m.add_function(wrap_pyfunction!(cache_stats, m)?)?;
    Ok(())
}
