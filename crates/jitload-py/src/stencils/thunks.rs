//! Callback thunks: `callback(...)`, the `Thunk` behind each, the retirement of dead
//! thunks' code, and the thunks' slow paths and exit.

use std::cell::UnsafeCell;
use std::ffi::c_int;
use std::sync::atomic::{AtomicUsize, Ordering};

use jitload_codemem::grace;

use jitload_stencils::frames::{report_pending, CbFrame, Pending, Ret, ThunkCell};
use jitload_stencils::{build_thunk, CType, CodeBlock};
use pyo3::exceptions::PyTypeError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};

use super::convert::convert;
use super::runtime::runtime;
use super::{guarded, parse_signature, stencil_error, type_name};

/// A thunk's cell (what the stencils read, first) and what the slow paths need.
#[repr(C)]
struct Cell {
    cell: ThunkCell,
    callable: Option<Py<PyAny>>,
    name: String,
    result: CType,
    result_name: String,
}

/// The cell lives in a Box (stable address) and is only touched with the GIL held.
struct GilCell(Box<UnsafeCell<Cell>>);
// SAFETY: every access holds the GIL (stencils take it before reading the cell).
unsafe impl Send for GilCell {}
// SAFETY: as above.
unsafe impl Sync for GilCell {}

impl GilCell {
    fn get(&self) -> &Cell {
        // SAFETY: GIL-protected; no &mut outlives a method call.
        unsafe { &*self.0.get() }
    }

    #[allow(clippy::mut_from_ref)]
    fn get_mut(&self) -> &mut Cell {
        // SAFETY: GIL-protected, as above.
        unsafe { &mut *self.0.get() }
    }
}

/// A C function pointer (`address`) that calls a Python callable; see `jitload.fast.callback`.
#[pyclass(module = "jitload._native._stencils", name = "Thunk")]
pub struct Thunk {
    cell: GilCell,
    signature: String,
    code: Option<CodeBlock>,
}

#[pymethods]
impl Thunk {
    /// The C function pointer.
    #[getter]
    fn address(&self) -> u64 {
        self.code.as_ref().map(CodeBlock::entry).unwrap_or(0)
    }

    /// The signature, e.g. `"int64(int64, int64)"`.
    #[getter]
    fn signature(&self) -> &str {
        &self.signature
    }

    /// The callable, or None once closed.
    #[getter]
    fn callable(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.cell.get().callable.as_ref().map(|c| c.clone_ref(py))
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.cell.get().cell.callable.is_null()
    }

    /// Drops the callable. The code stays until this object dies: a later call returns the
    /// error value and reports `jitload.CallbackError` (a `RuntimeError`; to the calling
    /// jitload wrapper, or `sys.unraisablehook`).
    fn close(&self) {
        let cell = self.cell.get_mut();
        cell.cell.callable = std::ptr::null_mut();
        let callable = cell.callable.take();
        drop(callable);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, _exc_type: Py<PyAny>, _exc: Py<PyAny>, _tb: Py<PyAny>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        format!("<jitload thunk {}: {} at {:#x} ({state})>", self.cell.get().name, self.signature, self.address())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.cell.get().callable)
    }

    fn __clear__(&mut self) {
        self.close();
    }
}

impl Drop for Thunk {
    fn drop(&mut self) {
        self.close();
        if let Some(code) = self.code.take() {
            let cell = std::mem::replace(&mut self.cell, GilCell(Box::new(UnsafeCell::new(dead_cell()))));
            retire(code, cell);
        }
    }
}

fn dead_cell() -> Cell {
    Cell {
        cell: ThunkCell { callable: std::ptr::null_mut(), error_i: 0, error_d: 0 },
        callable: None,
        name: String::new(),
        result: CType::Void,
        result_name: String::new(),
    }
}

/// Dead thunks whose code and cell wait to be freed.
static RETIRED: AtomicUsize = AtomicUsize::new(0);

/// Frees a dead thunk's code and cell once no call is inside them (`jitload_codemem::grace`,
/// the one reclamation scheme): a call may still be running it, on this thread (the callable
/// dropped the last reference to its thunk) or on another (waiting for the GIL, running the
/// callable, releasing the GIL). Every thunk call marks its thread as inside from its entry
/// until `jitload_fast_cb_leave`, after the thunk's last instruction (thunk.c, THUNK_ENTRY).
fn retire(code: CodeBlock, cell: GilCell) {
    RETIRED.fetch_add(1, Ordering::Relaxed);
    // The cell's callable is already dropped (closed): what is left needs no GIL.
    grace::retire(move || {
        log::trace!("jitload: freeing thunk code at {:#x}", code.entry());
        drop((code, cell));
        RETIRED.fetch_sub(1, Ordering::Relaxed);
    });
}

/// How many dead thunks' code blocks wait to be freed (for tests).
#[pyfunction]
pub(super) fn buried_thunks() -> usize {
    RETIRED.load(Ordering::Relaxed)
}

/// A thunk's exit, tail-called by its entry (thunk.c, THUNK_ENTRY): ends the call `token`
/// began, after the thunk's last instruction ran, and frees what waited for this call
/// (without the GIL: `gil_held` says whether this thread holds it, as before the thunk's
/// call). Returns the thunk's result to the thunk's caller.
pub(super) extern "C" fn jitload_fast_cb_leave(i: u64, d: f64, token: u64, gil_held: u64) -> Ret {
    if grace::exit(grace::Token(token)) {
        cb_leave_slow(gil_held != 0);
    }
    Ret { i, d }
}

/// A flag was set on the way out: if retired code waited for this (outermost) call, free it.
#[cold]
#[inline(never)]
fn cb_leave_slow(gil_held: bool) {
    if grace::take_wake() {
        let _ = std::panic::catch_unwind(|| {
            if gil_held {
                // SAFETY: this thread holds the GIL (it did when the thunk was called).
                unsafe { Python::assume_attached() }.detach(grace::reclaim);
            } else {
                grace::reclaim();
            }
        });
    }
}

/// Builds a thunk calling `func` for the C signature `result(args...)`; `error_value` is
/// what the native caller gets when the callback fails.
#[pyfunction]
#[pyo3(signature = (func, result, args, error_value=None, name=None))]
pub(super) fn callback(
    py: Python<'_>,
    func: Py<PyAny>,
    result: &str,
    args: Vec<String>,
    error_value: Option<Bound<'_, PyAny>>,
    name: Option<String>,
) -> PyResult<Thunk> {
    if !func.bind(py).is_callable() {
        return Err(PyTypeError::new_err(format!("callback() needs a callable, not {}", type_name(func.bind(py)))));
    }
    let signature = parse_signature(result, &args)?;
    let runtime = runtime()?;
    let (error_i, error_d) = error_bits(py, signature.result, result, error_value.as_ref())?;
    let name = match name {
        Some(n) => n,
        None => func.bind(py).getattr("__qualname__").and_then(|q| q.extract::<String>()).unwrap_or_else(|_| "callback".into()),
    };
    let cell = GilCell(Box::new(UnsafeCell::new(Cell {
        cell: ThunkCell { callable: func.as_ptr().cast(), error_i, error_d },
        callable: Some(func),
        name,
        result: signature.result,
        result_name: result.to_string(),
    })));
    let cell_ptr = cell.0.get() as *const ThunkCell;
    let code = build_thunk(runtime, &signature, cell_ptr).map_err(stencil_error)?;
    Ok(Thunk { cell, signature: format!("{result}({})", args.join(", ")), code: Some(code) })
}

/// The raw error value for a result type (rax bits, xmm0 bits).
fn error_bits(py: Python<'_>, ty: CType, type_label: &str, value: Option<&Bound<'_, PyAny>>) -> PyResult<(u64, u64)> {
    let Some(value) = value.filter(|v| !v.is_none()) else { return Ok((0, 0)) };
    let what = || "error_value".to_string();
    match ty {
        CType::Void => Ok((0, 0)),
        CType::PyObject => Err(PyTypeError::new_err("a pyobject callback returns NULL on error; error_value must be None")),
        CType::F32 | CType::F64 => Ok((0, convert(py, value, ty, type_label, &what, None)?)),
        _ => Ok((convert(py, value, ty, type_label, &what, None)?, 0)),
    }
}

/// A callback failed (boxing, the call, or its result): report the exception to the jitload
/// wrapper running on this thread, else `sys.unraisablehook`; return the error value.
pub(super) extern "C" fn jitload_fast_cb_error(fr: *mut CbFrame, cell: *mut ThunkCell) -> Ret {
    // SAFETY: cell is the first field of a live Cell (the thunk's).
    let ext = unsafe { &*(cell as *const Cell) };
    let error = Ret { i: ext.cell.error_i, d: f64::from_bits(ext.cell.error_d) };
    guarded(error, |py| {
        // SAFETY: the live frame of this callback.
        let frame = unsafe { &mut *fr };
        for k in 1..=frame.nboxed as usize {
            // SAFETY: argv[1..=nboxed] hold references the boxing stencils made.
            unsafe { ffi::Py_DECREF(frame.argv[k] as *mut ffi::PyObject) };
        }
        frame.nboxed = 0;
        let err = PyErr::take(py).unwrap_or_else(|| {
            let message = if ext.cell.callable.is_null() {
                format!("callback {} was called after its thunk was closed", ext.name)
            } else {
                format!("callback {} failed without an exception", ext.name)
            };
            crate::error::make_error(py, crate::error::ErrorClass::Callback, message, None, None)
        });
        let exc = err.into_value(py);
        // SAFETY: called on the callback's thread, outside any wrapper's entry or exit.
        match unsafe { report_pending(exc.as_ptr().cast()) } {
            Pending::Stored => {
                // The wrapper's frame took over this reference.
                let _ = exc.into_ptr();
            }
            Pending::Dropped => {}
            Pending::NoWrapper => {
                let obj = ext.callable.as_ref().map(|c| c.bind(py).clone());
                PyErr::from_value(exc.into_bound(py).into_any()).write_unraisable(py, obj.as_ref());
            }
        }
        error
    })
}

/// The callback's result in general (any int-like, float-like...), or an exception naming
/// the callback. Consumes the result.
pub(super) extern "C" fn jitload_fast_cb_result_slow(fr: *mut CbFrame, cell: *mut ThunkCell, kind: usize, out: *mut Ret) -> c_int {
    guarded(-1, |py| {
        drop(PyErr::take(py));
        // SAFETY: the live frame; result is the callable's return value (a reference).
        let result = unsafe { std::mem::replace(&mut (*fr).result, std::ptr::null_mut()) } as *mut ffi::PyObject;
        // SAFETY: we take over that reference.
        let obj = unsafe { Bound::from_owned_ptr(py, result) };
        // SAFETY: cell is the first field of a live Cell.
        let ext = unsafe { &*(cell as *const Cell) };
        let ty = CType::from_kind(kind as u64).unwrap_or(ext.result);
        let what = || format!("callback {} result", ext.name);
        match convert(py, &obj, ty, &ext.result_name, &what, None) {
            Ok(raw) => {
                let ret = if ty.is_sse() { Ret { i: 0, d: f64::from_bits(raw) } } else { Ret { i: raw, d: 0.0 } };
                // SAFETY: out points to the stencil's Ret.
                unsafe { *out = ret };
                0
            }
            Err(e) => {
                e.restore(py);
                -1
            }
        }
    })
}
