//! The Python face of tiered compilation (the engine's `tiers`): waiting for modules to reach
//! their final tier, what tier each function runs at, and the exception a call raises when
//! its first-tier compile fails.

use std::time::Duration;

use jitload_engine::tiers::{self, FinalState};
use jitload_engine::EngineError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::engine_error;

/// Raises `error` on the calling thread (taking the GIL if it does not hold it): the call
/// whose function could not be compiled returns its error value with this exception set.
fn raise_call_failure(error: EngineError) {
    // SAFETY: Py_IsInitialized may be called at any time, with or without the GIL.
    if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
        // After finalisation (a C atexit handler): no interpreter to raise in and no logger;
        // stderr is what is left, as for an exception in an atexit handler.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("jitload: {error}");
        }
        return;
    }
    Python::attach(|py| engine_error(py, error, None).restore(py));
}

fn state_name(state: &FinalState) -> String {
    match state {
        FinalState::Pending => "pending".into(),
        FinalState::Done => "final".into(),
        FinalState::Failed(why) => format!("failed: {why}"),
        FinalState::Abandoned => "released".into(),
    }
}

/// Waits until the module loaded from `path` (or, without a path, every tiered module)
/// reached its final tier or gave up on it; True unless `timeout` seconds passed first.
#[pyfunction]
#[pyo3(signature = (path=None, timeout=None))]
fn wait_for_tiers(py: Python<'_>, path: Option<String>, timeout: Option<f64>) -> PyResult<bool> {
    let timeout = match timeout {
        Some(t) if !(t >= 0.0 && t.is_finite()) => {
            return Err(pyo3::exceptions::PyValueError::new_err(format!("timeout must be a non-negative number of seconds, not {t}")))
        }
        Some(t) => Some(Duration::from_secs_f64(t)),
        None => None,
    };
    Ok(py.detach(|| match path {
        Some(path) => tiers::find(&path).is_none_or(|m| m.wait_final(timeout) != FinalState::Pending),
        None => tiers::wait_all(timeout),
    }))
}

/// The tiers of the module loaded from `path`: {"state": ..., "functions": {name: tier}},
/// tier 0 (not compiled yet), 1 (first tier, -O0) or 2 (final tier); None if the module was
/// not loaded in tiers.
#[pyfunction]
fn tier_info<'py>(py: Python<'py>, path: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(module) = tiers::find(path) else { return Ok(None) };
    let info = PyDict::new(py);
    info.set_item("state", state_name(&module.final_state()))?;
    let functions = PyDict::new(py);
    for (name, tier) in module.tiers() {
        functions.set_item(name, tier)?;
    }
    info.set_item("functions", functions)?;
    Ok(Some(info))
}

/// Compiles what modules may run at exit while that is still safe (registered with
/// `atexit` by the import hook; see the engine's `tiers::prepare_for_exit`).
#[pyfunction]
fn prepare_tiers_for_exit(py: Python<'_>) {
    py.detach(tiers::prepare_for_exit);
}

extern "C" fn interpreter_finalised() {
    tiers::forbid_compiles();
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // SAFETY: registers a plain extern "C" fn, valid for the process lifetime; Py_AtExit
    // callbacks run at the end of finalisation, before C atexit handlers.
    unsafe { pyo3::ffi::Py_AtExit(Some(interpreter_finalised)) };
    m.add_function(wrap_pyfunction!(prepare_tiers_for_exit, m)?)?;
    tiers::set_failure_hook(raise_call_failure);
    m.add_function(wrap_pyfunction!(wait_for_tiers, m)?)?;
    m.add_function(wrap_pyfunction!(tier_info, m)?)?;
    Ok(())
}
