//! `jitload._native._stencils`: the Python face of `jitload-stencils` (copy-and-patch call
//! wrappers and callback thunks). The public API is `jitload.fast`.
//!
//! * `wrap(...)` builds a call wrapper and returns a builtin function object (`METH_FASTCALL`)
//!   whose C function *is* the patched code, with a `FastWrapper` as its `__self__`: the
//!   state the slow paths read (name, signature) and what keeps the code and its owner
//!   alive. CPython calls it exactly as it calls a C extension's function.
//! * `callback(...)` builds a `Thunk`: a C function pointer into patched code that calls a
//!   Python callable.
//! * The `jitload_fast_*` functions below are the stencils' slow paths (holes filled with
//!   their addresses): general conversions with C-extension-style errors, argument-count
//!   errors, the callback exception handshake (`jitload_stencils::frames`).
//!
//! Files: [`runtime`] (the process-wide hole values), [`wrappers`] (call wrappers and their
//! slow paths), [`convert`] (general Python -> C conversions), [`thunks`] (callback thunks and
//! their slow paths); this file holds what they share and the module's functions.

mod convert;
mod runtime;
mod thunks;
mod wrappers;

use jitload_stencils::frames::running_frames;
use jitload_stencils::Signature;
use pyo3::exceptions::{PyRuntimeError, PySystemError, PyValueError};
use pyo3::prelude::*;

use runtime::runtime;
use thunks::{buried_thunks, callback, Thunk};
use wrappers::{wrap, FastWrapper};

fn stencil_error(e: jitload_stencils::Error) -> PyErr {
    match e {
        jitload_stencils::Error::Signature(m) => PyValueError::new_err(m),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

fn parse_signature(result: &str, args: &[String]) -> PyResult<Signature> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Signature::from_names(result, &refs).map_err(stencil_error)
}

fn type_name(o: &Bound<'_, PyAny>) -> String {
    o.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

/// Runs a slow path with the GIL (held by the caller) and panics turned into SystemError.
fn guarded<R>(fallback: R, f: impl FnOnce(Python<'_>) -> R) -> R {
    // SAFETY: every slow path is called by stencils holding the GIL.
    let py = unsafe { Python::assume_attached() };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(py))) {
        Ok(r) => r,
        Err(_) => {
            PySystemError::new_err("jitload: panic in a fast-call slow path").restore(py);
            fallback
        }
    }
}

// ---- module ----------------------------------------------------------------------------

/// The hash of the stencils' inputs (sources, flags, clang version), for diagnostics.
#[pyfunction]
fn input_hash() -> &'static str {
    jitload_stencils::INPUT_HASH
}

/// How code memory is made executable now: "mprotect" or "dualmap".
#[pyfunction]
fn memory_strategy() -> &'static str {
    jitload_codemem::provider().name()
}

/// Pooled code pages mapped now and the live blocks (wrappers, thunks) in them.
#[pyfunction]
fn code_pages() -> (usize, usize) {
    jitload_codemem::block::pool_stats()
}

/// How many wrapper calls are running on this thread now (0 outside any: for tests).
#[pyfunction]
fn running_wrappers(_py: Python<'_>) -> usize {
    // SAFETY: outside the stencils every frame reachable from the slot is live.
    unsafe { running_frames() }
}

/// Checks that every symbol the stencils need resolves in this interpreter.
#[pyfunction]
fn check_runtime() -> PyResult<()> {
    runtime().map(|_| ())
}

pub fn register(parent: &Bound<'_, PyModule>) -> PyResult<()> {
    let m = PyModule::new(parent.py(), "_stencils")?;
    m.add_class::<FastWrapper>()?;
    m.add_class::<Thunk>()?;
    m.add_function(wrap_pyfunction!(wrap, &m)?)?;
    m.add_function(wrap_pyfunction!(callback, &m)?)?;
    m.add_function(wrap_pyfunction!(input_hash, &m)?)?;
    m.add_function(wrap_pyfunction!(memory_strategy, &m)?)?;
    m.add_function(wrap_pyfunction!(check_runtime, &m)?)?;
    m.add_function(wrap_pyfunction!(running_wrappers, &m)?)?;
    m.add_function(wrap_pyfunction!(code_pages, &m)?)?;
    m.add_function(wrap_pyfunction!(buried_thunks, &m)?)?;
    // An attribute, not in __all__: private (jitload.fast is the API).
    parent.setattr("_stencils", m)?;
    Ok(())
}
