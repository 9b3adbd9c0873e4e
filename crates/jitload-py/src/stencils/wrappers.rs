//! Call wrappers: `wrap(...)`, the `FastWrapper` behind each, and the wrappers' slow paths.

use std::ffi::{c_int, CString};

use jitload_stencils::frames::{take_pending, CallFrame};
use jitload_stencils::{build_wrapper, CType, CodeBlock, Guard, Signature, WrapperSpec};
use pyo3::exceptions::{PySystemError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};

use super::convert::convert;
use super::runtime::runtime;
use super::{guarded, parse_signature, stencil_error};

/// The state behind a fast wrapper (its `__self__`): signature, target, owner, the code.
#[pyclass(module = "jitload._native._stencils", name = "FastWrapper")]
pub struct FastWrapper {
    name: String,
    signature: Signature,
    /// Type names as the caller wrote them (for messages).
    arg_names: Vec<String>,
    result_name: String,
    target: u64,
    /// The word `target` jumps through, when given (see `wrap`).
    jump_slot: Option<u64>,
    release_gil: bool,
    guard: Option<Guard>,
    owner: Option<Py<PyAny>>,
    code: CodeBlock,
    def: Box<ffi::PyMethodDef>,
    _name_c: CString,
    _doc_c: CString,
}

// SAFETY: the raw pointers inside (the method definition's strings, the code) are immutable
// after construction and owned by this object; Python objects are touched with the GIL.
unsafe impl Send for FastWrapper {}
// SAFETY: as above.
unsafe impl Sync for FastWrapper {}

#[pymethods]
impl FastWrapper {
    /// The function's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The signature, e.g. `"int64(int64, int64)"`.
    #[getter]
    fn signature(&self) -> String {
        format!("{}({})", self.result_name, self.arg_names.join(", "))
    }

    /// The native function's address.
    #[getter]
    fn address(&self) -> u64 {
        self.target
    }

    /// What keeps the native code alive (given to `wrap`).
    #[getter]
    fn owner(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.owner.as_ref().map(|o| o.clone_ref(py))
    }

    /// The word calls read the target from (a stub's jump slot), or None: they call `address`.
    #[getter]
    fn jump_slot(&self) -> Option<u64> {
        self.jump_slot.filter(|_| self.code.through_words > 0)
    }

    /// Whether the GIL is released around the native call.
    #[getter]
    fn release_gil(&self) -> bool {
        self.release_gil
    }

    /// Whether a call guard runs around each call.
    #[getter]
    fn guarded(&self) -> bool {
        self.guard.is_some()
    }

    /// Address and size of the patched code.
    #[getter]
    fn code(&self) -> (u64, usize) {
        (self.code.entry(), self.code.code().len())
    }

    /// Names of the stencils the wrapper is made of, in order.
    #[getter]
    fn stencils(&self) -> PyResult<Vec<&'static str>> {
        let spec = WrapperSpec { signature: &self.signature, target: self.target, release_gil: self.release_gil, guard: self.guard, jump_slot: self.jump_slot };
        let pieces = jitload_stencils::plan::wrapper_pieces(&spec).map_err(stencil_error)?;
        Ok(pieces.iter().map(|p| jitload_stencils::STENCILS[p.stencil].name).collect())
    }

    fn __repr__(&self) -> String {
        format!("<jitload fast wrapper {}: {} at {:#x}>", self.name, self.signature(), self.target)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)
    }

    fn __clear__(&mut self) {
        self.owner = None;
    }
}

/// Builds a fast call wrapper for the native function at `address` with the signature
/// `result(args...)` (type names of `jitload.signature`). Returns a builtin function
/// object. `owner` is kept alive as long as the wrapper; `guard` is `(enter, exit, ctx)`
/// addresses of `uintptr_t enter(void *ctx)` / `int exit(void *ctx, uintptr_t token)` run
/// around every call (a non-zero exit means it set an exception), or `"epoch"`: the engine's
/// epoch guard, inline (`jitload_stencils::Guard::Epoch`). `jump_slot`: where `address` is a
/// stub that jumps through an 8-byte word, the word (`WrapperSpec::jump_slot`).
#[pyfunction]
#[pyo3(signature = (address, result, args, name="function", owner=None, release_gil=false, guard=None, jump_slot=None))]
#[allow(clippy::too_many_arguments)]
pub(super) fn wrap(
    py: Python<'_>,
    address: u64,
    result: &str,
    args: Vec<String>,
    name: &str,
    owner: Option<Py<PyAny>>,
    release_gil: bool,
    guard: Option<Bound<'_, PyAny>>,
    jump_slot: Option<u64>,
) -> PyResult<Py<PyAny>> {
    if address == 0 || jump_slot == Some(0) {
        return Err(PyValueError::new_err(format!("cannot wrap {name}: the address is NULL")));
    }
    let signature = parse_signature(result, &args)?;
    let runtime = runtime()?;
    let guard = guard.map(|g| parse_guard(&g)).transpose()?;
    let spec = WrapperSpec { signature: &signature, target: address, release_gil, guard, jump_slot };
    let code = build_wrapper(runtime, &spec).map_err(stencil_error)?;
    let name_c = CString::new(name).map_err(|_| PyValueError::new_err("the name contains a NUL character"))?;
    let params: Vec<String> = (0..args.len()).map(|i| format!("a{i}")).collect();
    let doc = format!(
        "{name}($self, {}{})\n--\n\n{result}({}): native code at {address:#x} (jitload.fast)",
        params.join(", "),
        if params.is_empty() { "" } else { ", /" },
        args.join(", ")
    );
    let doc = doc.replace("($self, )", "($self)");
    let doc_c = CString::new(doc).map_err(|_| PyValueError::new_err("the signature contains a NUL character"))?;
    // SAFETY: the entry is a METH_FASTCALL function (see jitload_stencils::plan::build_wrapper),
    // alive as long as this FastWrapper, which the function object keeps as its self.
    let meth: ffi::PyCFunctionFast = unsafe { std::mem::transmute::<usize, ffi::PyCFunctionFast>(code.entry() as usize) };
    let def = Box::new(ffi::PyMethodDef {
        ml_name: name_c.as_ptr(),
        ml_meth: ffi::PyMethodDefPointer { PyCFunctionFast: meth },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: doc_c.as_ptr(),
    });
    let state = FastWrapper {
        name: name.to_string(),
        signature,
        arg_names: args,
        result_name: result.to_string(),
        target: address,
        jump_slot,
        release_gil,
        guard,
        owner,
        code,
        def,
        _name_c: name_c,
        _doc_c: doc_c,
    };
    let state = Bound::new(py, state)?;
    let def_ptr = &*state.borrow().def as *const ffi::PyMethodDef as *mut ffi::PyMethodDef;
    // SAFETY: def lives in the FastWrapper (a Box: stable address), which the function holds
    // as m_self until it is deallocated; CPython only reads it.
    let function = unsafe { ffi::PyCFunction_NewEx(def_ptr, state.as_ptr(), std::ptr::null_mut()) };
    // SAFETY: a new reference or NULL with an exception set.
    unsafe { Bound::from_owned_ptr_or_err(py, function) }.map(Bound::unbind)
}

/// `"epoch"` or `(enter, exit, ctx)` (see `wrap`).
fn parse_guard(guard: &Bound<'_, PyAny>) -> PyResult<Guard> {
    if let Ok(name) = guard.extract::<String>() {
        if name == "epoch" {
            return Ok(Guard::Epoch { fence: crate::engine::epoch_guard_fences() });
        }
        return Err(PyValueError::new_err(format!("unknown guard {name:?}: expected \"epoch\" or (enter, exit, ctx)")));
    }
    let (enter, exit, ctx) = guard.extract::<(u64, u64, u64)>()?;
    Ok(Guard::Calls { enter, exit, ctx })
}

/// The FastWrapper behind the frame's `self`.
fn wrapper_of<'py>(py: Python<'py>, fr: *mut CallFrame) -> Option<Bound<'py, FastWrapper>> {
    // SAFETY: the entry stored its METH_FASTCALL self, a FastWrapper, in the live frame.
    let me = unsafe { (*fr).self_ } as *mut ffi::PyObject;
    // SAFETY: a live object (m_self of the function being called).
    let any = unsafe { Bound::from_borrowed_ptr(py, me) };
    any.cast_into::<FastWrapper>().ok()
}

pub(super) extern "C" fn jitload_fast_bad_nargs(me: *mut ffi::PyObject, nargs: ffi::Py_ssize_t) -> *mut ffi::PyObject {
    guarded(std::ptr::null_mut(), |py| {
        // SAFETY: the METH_FASTCALL self, a FastWrapper.
        let any = unsafe { Bound::from_borrowed_ptr(py, me) };
        let message = match any.cast::<FastWrapper>() {
            Ok(w) => {
                let w = w.borrow();
                let n = w.arg_names.len();
                format!("{}() takes {n} argument{} ({}), {nargs} given", w.name, if n == 1 { "" } else { "s" }, w.signature())
            }
            Err(_) => format!("wrong number of arguments ({nargs} given)"),
        };
        PyTypeError::new_err(message).restore(py);
        std::ptr::null_mut()
    })
}

/// Converts `o` for the wrapper's argument `arg` generally (any int-like, float-like,
/// object; buffers and pointers), or raises like a C extension would.
pub(super) extern "C" fn jitload_fast_conv_slow(fr: *mut CallFrame, o: *mut ffi::PyObject, arg: usize, kind: usize, dest: usize) -> c_int {
    guarded(-1, |py| {
        // The fast path may have left an exception (overflow, a failed buffer request).
        drop(PyErr::take(py));
        let Some(wrapper) = wrapper_of(py, fr) else {
            PySystemError::new_err("jitload: fast wrapper frame without its state").restore(py);
            return -1;
        };
        let w = wrapper.borrow();
        // SAFETY: o is args[arg] of the running call: borrowed, alive for the call.
        let obj = unsafe { Bound::from_borrowed_ptr(py, o) };
        let ty = CType::from_kind(kind as u64).unwrap_or(CType::PyObject);
        let what = || format!("{}() argument {}", w.name, arg + 1);
        let type_label = w.arg_names.get(arg).cloned().unwrap_or_else(|| ty.name().to_string());
        // SAFETY: the frame is live (the running call's).
        let frame = unsafe { &mut *fr };
        match convert(py, &obj, ty, &type_label, &what, Some(frame)) {
            Ok(raw) => {
                // SAFETY: dest is a slot offset inside the frame, chosen by the plan.
                unsafe { *((fr as *mut u8).add(dest) as *mut u64) = raw };
                0
            }
            Err(e) => {
                e.restore(py);
                -1
            }
        }
    })
}

pub(super) extern "C" fn jitload_fast_raise_pending(result: *mut ffi::PyObject, fr: *mut CallFrame) -> *mut ffi::PyObject {
    guarded(std::ptr::null_mut(), |py| {
        if !result.is_null() {
            // SAFETY: the call's result, a reference we own and drop.
            unsafe { ffi::Py_DECREF(result) };
        }
        // SAFETY: the live frame, whose pending holds a reference stored by
        // jitload_fast_cb_error (report_pending).
        let pending = unsafe { take_pending(fr) } as *mut ffi::PyObject;
        // SAFETY: as above: we take over that reference.
        let exc = unsafe { Bound::from_owned_ptr(py, pending) };
        let current = PyErr::take(py);
        let err = PyErr::from_value(exc);
        if let Some(current) = current {
            // Something failed after the callback's error (e.g. the result's conversion).
            err.set_context(py, Some(current));
        }
        err.restore(py);
        std::ptr::null_mut()
    })
}

pub(super) extern "C" fn jitload_fast_null_result(fr: *mut CallFrame) -> *mut ffi::PyObject {
    guarded(std::ptr::null_mut(), |py| {
        if PyErr::occurred(py) {
            return std::ptr::null_mut();
        }
        let name = wrapper_of(py, fr).map(|w| w.borrow().name.clone()).unwrap_or_default();
        PySystemError::new_err(format!("{name}() returned NULL (pyobject) without setting an exception")).restore(py);
        std::ptr::null_mut()
    })
}
