//! C-ABI entry points for subinterpreters. PyO3 refuses to initialise jitload's native
//! modules in any interpreter but the first, so the import hook running in a subinterpreter
//! reaches the same code through plain functions called with ctypes (which holds the GIL and
//! turns a NULL return into the pending exception). Both native modules export the ones
//! here, each for the code it loaded.

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;

/// Runs `body` with a `Python` token for the current (possibly sub-) interpreter, turning
/// errors and panics into a pending exception.
///
/// # Safety
/// The calling thread must hold the GIL of the interpreter it is running in (ctypes' PyDLL
/// functions guarantee this); PyO3's attach machinery (PyGILState) is bypassed because it
/// only knows the main interpreter.
pub unsafe fn with_current_interpreter<T>(error: T, body: impl FnOnce(Python<'_>) -> PyResult<T>) -> T {
    // SAFETY: the caller holds the GIL of the current interpreter.
    let py = unsafe { Python::assume_attached() };
    match catch_unwind(AssertUnwindSafe(|| body(py))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            e.restore(py);
            error
        }
        Err(_) => {
            PyRuntimeError::new_err("panic in jitload (subinterpreter entry point)").restore(py);
            error
        }
    }
}

/// [`crate::find_extension`] for subinterpreters: a new reference to the module, to None when
/// the file must be loaded, or NULL with an exception set.
///
/// # Safety
/// Called with the GIL held and valid object pointers (ctypes `py_object` arguments).
#[no_mangle]
pub unsafe extern "C" fn jitload_find_extension(
    path: *mut ffi::PyObject,
    fullname: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
    spec: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: the contract of this function is the contract of with_current_interpreter.
    unsafe {
        with_current_interpreter(std::ptr::null_mut(), |py| {
            // SAFETY: ctypes passes borrowed references that stay alive for the call.
            let (path, fullname, key, spec) = (
                Bound::from_borrowed_ptr(py, path),
                Bound::from_borrowed_ptr(py, fullname),
                Bound::from_borrowed_ptr(py, key),
                Bound::from_borrowed_ptr(py, spec),
            );
            let found = crate::find_extension(py, &path.extract::<String>()?, &fullname.extract::<String>()?, &key.extract::<String>()?, &spec)?;
            Ok(found.map_or_else(|| py.None().into_ptr(), Bound::into_ptr))
        })
    }
}

/// [`crate::track_extension`] for subinterpreters: 1 or 0 (its result), -1 with an exception set.
///
/// # Safety
/// Called with the GIL held and valid object pointers.
#[no_mangle]
pub unsafe extern "C" fn jitload_track_extension(
    module: *mut ffi::PyObject,
    path: *mut ffi::PyObject,
    fullname: *mut ffi::PyObject,
    key: *mut ffi::PyObject,
    releasable: c_int,
) -> c_int {
    // SAFETY: as for jitload_find_extension.
    unsafe {
        with_current_interpreter(-1, |py| {
            // SAFETY: borrowed references alive for the call.
            let (module, path, fullname, key) = (
                Bound::from_borrowed_ptr(py, module),
                Bound::from_borrowed_ptr(py, path),
                Bound::from_borrowed_ptr(py, fullname),
                Bound::from_borrowed_ptr(py, key),
            );
            let tracked =
                crate::track_extension(&module, &path.extract::<String>()?, &fullname.extract::<String>()?, &key.extract::<String>()?, releasable != 0);
            Ok(c_int::from(tracked))
        })
    }
}
