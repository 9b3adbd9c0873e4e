//! C-ABI entry points for subinterpreters. PyO3 refuses to initialise `jitload._native` in
//! any interpreter but the first, so the import hook running in a subinterpreter reaches the
//! same code through these plain functions (called with ctypes, which holds the GIL and turns
//! a NULL return into the pending exception). They do the same work as `load_extension` and
//! `exec_extension`, on the calling interpreter's thread state.

use std::ffi::c_int;
use std::path::PathBuf;

use pyo3::ffi;
use pyo3::prelude::*;

/// `load_extension(path, fullname, init_symbol, spec, opt_level, isolate, use_cache)` for
/// subinterpreters.
/// Returns a new reference, or NULL with an exception set.
///
/// # Safety
/// Called with the GIL held and valid object pointers (ctypes `py_object` arguments).
#[no_mangle]
pub unsafe extern "C" fn jitload_subinterpreter_load(
    path: *mut ffi::PyObject,
    fullname: *mut ffi::PyObject,
    init_symbol: *mut ffi::PyObject,
    spec: *mut ffi::PyObject,
    opt_level: c_int,
    isolate: c_int,
    use_cache: c_int,
) -> *mut ffi::PyObject {
    // SAFETY: the contract of this function is the contract of with_current_interpreter.
    unsafe {
        jitload_pyinit::subinterp::with_current_interpreter(std::ptr::null_mut(), |py| {
            // SAFETY: ctypes passes borrowed references that stay alive for the call.
            let (path, fullname, init_symbol, spec) = (
                Bound::from_borrowed_ptr(py, path),
                Bound::from_borrowed_ptr(py, fullname),
                Bound::from_borrowed_ptr(py, init_symbol),
                Bound::from_borrowed_ptr(py, spec),
            );
            let path: PathBuf = path.extract()?;
            let fullname: String = fullname.extract()?;
            let init_symbol: String = init_symbol.extract()?;
            let level = u8::try_from(opt_level).unwrap_or(u8::MAX);
            let module = crate::load_extension(py, path, &fullname, &init_symbol, &spec, level, isolate != 0, use_cache != 0, false)?;
            Ok(module.into_ptr())
        })
    }
}

/// `exec_extension(module)` for subinterpreters. Returns 0, or -1 with an exception set.
///
/// # Safety
/// Called with the GIL held and a valid object pointer.
#[no_mangle]
pub unsafe extern "C" fn jitload_subinterpreter_exec(module: *mut ffi::PyObject) -> c_int {
    // SAFETY: as for jitload_subinterpreter_load.
    unsafe {
        jitload_pyinit::subinterp::with_current_interpreter(-1, |py| {
            // SAFETY: a borrowed reference alive for the call.
            let module = Bound::from_borrowed_ptr(py, module);
            jitload_pyinit::init::exec_module(py, &module)?;
            Ok(0)
        })
    }
}
