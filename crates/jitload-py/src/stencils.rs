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

use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void, CString};
use std::sync::OnceLock;

use jitload_stencils::frames::{report_pending, running_frames, CallFrame, CbFrame, Pending, Ret, ThunkCell, MAX_BUFFERS, PY_BUFFER_SIZE};
use jitload_stencils::{build_thunk, build_wrapper, CType, CodeBlock, Guard, Runtime, Signature, WrapperSpec};
use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PySystemError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pyclass::{PyTraverseError, PyVisit};
use pyo3::types::{PyByteArray, PyFloat, PyInt, PyTuple};

extern "C" {
    // Exported by every CPython 3; outside the limited API of 3.10 (so not in pyo3's abi3
    // bindings), which is why they are declared here.
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut c_void, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut c_void);
}

const PYBUF_SIMPLE: c_int = 0;

// ---- the runtime: process-wide hole values -------------------------------------------

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

fn runtime() -> PyResult<&'static Runtime> {
    RUNTIME
        .get_or_init(|| {
            Runtime::new(&|name| {
                let helper = match name {
                    "jitload_fast_bad_nargs" => jitload_fast_bad_nargs as *const () as usize,
                    "jitload_fast_conv_slow" => jitload_fast_conv_slow as *const () as usize,
                    "jitload_fast_raise_pending" => jitload_fast_raise_pending as *const () as usize,
                    "jitload_fast_null_result" => jitload_fast_null_result as *const () as usize,
                    "jitload_fast_cb_error" => jitload_fast_cb_error as *const () as usize,
                    "jitload_fast_cb_result_slow" => jitload_fast_cb_result_slow as *const () as usize,
                    "_JIT_TSTATE_GET" => return dlsym("PyThreadState_GetUnchecked").or_else(|| dlsym("_PyThreadState_UncheckedGet")),
                    "_JIT_FUNCTION_TYPE" => return Some(function_type_for_stencils()),
                    "_JIT_TS_THREAD_ID" => return Some(thread_id_offset()),
                    // 3.10 has it only as an inline function; the stencils always pass NULL
                    // keyword names, and PyObject_VectorcallDict with NULL keywords makes the
                    // same call (the callable's vectorcall slot, else tp_call, and CPython's
                    // result check).
                    "PyObject_Vectorcall" => return dlsym(name).or_else(|| dlsym("PyObject_VectorcallDict")),
                    _ => return crate::engine::epoch_guard_hole(name).or_else(|| dlsym(name)),
                };
                Some(helper as u64)
            })
            .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(e.clone()))
}

/// `&PyFunction_Type` when its `PyTypeObject` has the layout the thunks read at call time
/// (stencils.h: `tp_vectorcall_offset` at byte 56, which holds for every 64-bit CPython 3.8+;
/// checked here through `tp_flags` at byte 168 against `PyType_GetFlags`, the vectorcall flag,
/// and an offset inside `tp_basicsize` at byte 32), else 1: no object has that type, so
/// every callable goes through `PyObject_Vectorcall`.
fn function_type_for_stencils() -> u64 {
    const TP_BASICSIZE: usize = 32;
    const TP_VECTORCALL_OFFSET: usize = 56;
    const TP_FLAGS: usize = 168;
    const HAVE_VECTORCALL: std::os::raw::c_ulong = 1 << 11;
    let Some(ty) = dlsym("PyFunction_Type") else { return 1 };
    let base = ty as usize as *const u8;
    // SAFETY: PyFunction_Type is a static PyTypeObject (over 400 bytes in every CPython 3),
    // so the three words read are inside it; PyType_GetFlags takes any type object.
    let ok = unsafe {
        let flags = ffi::PyType_GetFlags(ty as usize as *mut ffi::PyTypeObject);
        let basicsize = *(base.add(TP_BASICSIZE) as *const isize);
        let offset = *(base.add(TP_VECTORCALL_OFFSET) as *const isize);
        *(base.add(TP_FLAGS) as *const std::os::raw::c_ulong) == flags
            && flags & HAVE_VECTORCALL != 0
            && offset >= 16
            && offset + 8 <= basicsize
            && offset % 8 == 0
    };
    if ok {
        ty
    } else {
        1
    }
}

/// The byte offset of `thread_id` in this CPython's `PyThreadState` (the thunks' GIL check
/// compares it with the thread pointer: thunk.c, `holds_gil`), or 1 (unknown: the thunks then
/// ask `PyGILState_GetThisThreadState`). Found in the calling thread's own thread state (the
/// GIL is held here) as the one word in its first 256 bytes equal to `pthread_self()`, which
/// must also be the thread pointer (`%fs:0`, as in glibc). `thread_id` is at byte 136-176 in
/// CPython 3.10 to 3.13, whose thread states are all larger than 256 bytes.
fn thread_id_offset() -> u64 {
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() } as usize;
    if me != jitload_stencils::frames::thread_pointer() {
        return 1;
    }
    // SAFETY: the GIL is held (runtime() is called with it), so this thread has a thread state.
    let ts = unsafe { ffi::PyThreadState_Get() } as *const usize;
    if ts.is_null() {
        return 1;
    }
    let mut found = None;
    for k in 1..32 {
        // SAFETY: inside the thread state (over 256 bytes in every supported version).
        if unsafe { *ts.add(k) } == me {
            if found.is_some() {
                return 1; // ambiguous: do not guess
            }
            found = Some(8 * k as u64);
        }
    }
    found.unwrap_or(1)
}

fn dlsym(name: &str) -> Option<u64> {
    let name = CString::new(name).ok()?;
    // SAFETY: RTLD_DEFAULT lookup of a NUL-terminated name; the interpreter's symbols are
    // global (the executable or libpython).
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p as u64)
}

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

// ---- call wrappers -------------------------------------------------------------------

/// The state behind a fast wrapper (its `__self__`): signature, target, owner, the code.
#[pyclass(module = "jitload._native._stencils", name = "FastWrapper")]
pub struct FastWrapper {
    name: String,
    signature: Signature,
    /// Type names as the caller wrote them (for messages).
    arg_names: Vec<String>,
    result_name: String,
    target: u64,
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
        let spec = WrapperSpec { signature: &self.signature, target: self.target, release_gil: self.release_gil, guard: self.guard };
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
/// epoch guard, inline (`jitload_stencils::Guard::Epoch`).
#[pyfunction]
#[pyo3(signature = (address, result, args, name="function", owner=None, release_gil=false, guard=None))]
#[allow(clippy::too_many_arguments)]
fn wrap(
    py: Python<'_>,
    address: u64,
    result: &str,
    args: Vec<String>,
    name: &str,
    owner: Option<Py<PyAny>>,
    release_gil: bool,
    guard: Option<Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    if address == 0 {
        return Err(PyValueError::new_err(format!("cannot wrap {name}: the address is NULL")));
    }
    let signature = parse_signature(result, &args)?;
    let runtime = runtime()?;
    let guard = guard.map(|g| parse_guard(&g)).transpose()?;
    let spec = WrapperSpec { signature: &signature, target: address, release_gil, guard };
    let code = build_wrapper(runtime, &spec).map_err(stencil_error)?;
    let name_c = CString::new(name).map_err(|_| PyValueError::new_err("the name contains a NUL character"))?;
    let params: Vec<String> = (0..args.len()).map(|i| format!("a{i}")).collect();
    let doc = format!("{name}($self, {}{})\n--\n\n{result}({}): native code at {address:#x} (jitload.fast)", params.join(", "), if params.is_empty() { "" } else { ", /" }, args.join(", "));
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

extern "C" fn jitload_fast_bad_nargs(me: *mut ffi::PyObject, nargs: ffi::Py_ssize_t) -> *mut ffi::PyObject {
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
extern "C" fn jitload_fast_conv_slow(fr: *mut CallFrame, o: *mut ffi::PyObject, arg: usize, kind: usize, dest: usize) -> c_int {
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

/// The general conversion of `obj` to the raw bits of a C `ty` (for wrapper arguments and
/// callback results). `frame` gives buffer slots (wrapper arguments only).
fn convert(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    ty: CType,
    type_label: &str,
    what: &dyn Fn() -> String,
    frame: Option<&mut CallFrame>,
) -> PyResult<u64> {
    match ty {
        CType::I8 | CType::I16 | CType::I32 | CType::I64 | CType::U8 | CType::U16 | CType::U32 | CType::U64 => {
            let index = as_index(py, obj).map_err(|_| PyTypeError::new_err(format!("{} must be int ({type_label}), not {}", what(), type_name(obj))))?;
            let (min, max) = ty.int_range().expect("an integer type");
            let value: Option<i128> = index.extract::<i64>().map(i128::from).ok().or_else(|| index.extract::<u64>().map(i128::from).ok());
            match value {
                Some(v) if v >= min && v <= max => Ok(v as i64 as u64),
                _ => Err(PyOverflowError::new_err(format!("{}: {} does not fit in {type_label}", what(), index.repr().map(|r| r.to_string()).unwrap_or_default()))),
            }
        }
        CType::F64 | CType::F32 => {
            let is_number = obj.is_instance_of::<PyFloat>() || obj.is_instance_of::<PyInt>() || obj.hasattr("__float__")? || obj.hasattr("__index__")?;
            if !is_number {
                return Err(PyTypeError::new_err(format!("{} must be float ({type_label}), not {}", what(), type_name(obj))));
            }
            let v: f64 = obj.extract::<f64>().map_err(|e: PyErr| {
                if e.is_instance_of::<PyOverflowError>(py) {
                    PyOverflowError::new_err(format!("{}: {} does not fit in {type_label}", what(), obj.repr().map(|r| r.to_string()).unwrap_or_default()))
                } else {
                    e
                }
            })?;
            Ok(if ty == CType::F32 { (v as f32).to_bits() as u64 } else { v.to_bits() })
        }
        CType::Bool => Ok(obj.is_truthy()? as u64),
        CType::Ptr => {
            if obj.is_none() {
                return Ok(0);
            }
            if let Ok(index) = as_index(py, obj) {
                return match index.extract::<u64>().ok().or_else(|| index.extract::<i64>().ok().map(|v| v as u64)) {
                    Some(v) => Ok(v),
                    None => Err(PyOverflowError::new_err(format!("{}: {} does not fit in a pointer", what(), index.repr().map(|r| r.to_string()).unwrap_or_default()))),
                };
            }
            if let Some(address) = ctypes_pointer(py, obj)? {
                return Ok(address);
            }
            match frame {
                Some(frame) if has_buffer(obj) => acquire_buffer(py, obj, frame, what, type_label),
                _ => Err(PyTypeError::new_err(format!(
                    "{} must be an int, None, a ctypes pointer or a buffer ({type_label}), not {}",
                    what(),
                    type_name(obj)
                ))),
            }
        }
        CType::Buffer => match frame {
            Some(frame) => acquire_buffer(py, obj, frame, what, type_label),
            None => Err(PyTypeError::new_err(format!("{}: a buffer cannot be returned", what()))),
        },
        CType::PyObject => Ok(obj.as_ptr() as u64),
        CType::Void => Ok(0),
    }
}

fn as_index<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: PyNumber_Index returns a new reference or NULL with an exception.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyNumber_Index(obj.as_ptr())) }
}

fn has_buffer(obj: &Bound<'_, PyAny>) -> bool {
    let mut view = [0u8; PY_BUFFER_SIZE];
    // SAFETY: a Py_buffer-sized scratch; released at once on success.
    if unsafe { PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr().cast(), PYBUF_SIMPLE) } == 0 {
        // SAFETY: acquired just above.
        unsafe { PyBuffer_Release(view.as_mut_ptr().cast()) };
        true
    } else {
        drop(PyErr::take(obj.py()));
        false
    }
}

/// The address a ctypes pointer-like object holds (`ctypes.cast(obj, c_void_p).value`),
/// or None for other objects.
fn ctypes_pointer(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
    let ctypes = py.import("ctypes")?;
    let kinds = PyTuple::new(
        py,
        [
            ctypes.getattr("_Pointer")?,
            ctypes.getattr("_CFuncPtr")?,
            ctypes.getattr("c_void_p")?,
            ctypes.getattr("c_char_p")?,
            ctypes.getattr("c_wchar_p")?,
        ],
    )?;
    if !obj.is_instance(&kinds)? {
        return Ok(None);
    }
    let value = ctypes.getattr("cast")?.call1((obj, ctypes.getattr("c_void_p")?))?.getattr("value")?;
    Ok(Some(if value.is_none() { 0 } else { value.extract::<u64>()? }))
}

/// Acquires `obj`'s buffer into the frame's next slot (released after the call); a
/// read-only buffer is copied first, so the native code may write to what it gets.
fn acquire_buffer(py: Python<'_>, obj: &Bound<'_, PyAny>, frame: &mut CallFrame, what: &dyn Fn() -> String, type_label: &str) -> PyResult<u64> {
    if frame.bufs.is_null() || frame.nbuf as usize >= MAX_BUFFERS {
        return Err(PySystemError::new_err("jitload: no buffer slot left for this call"));
    }
    let not_buffer = || PyTypeError::new_err(format!("{} must support the buffer protocol ({type_label}), not {}", what(), type_name(obj)));
    // SAFETY: slot nbuf of the frame's MAX_BUFFERS Py_buffers (checked above).
    let view = unsafe { frame.bufs.add(PY_BUFFER_SIZE * frame.nbuf as usize) };
    // SAFETY: view is a Py_buffer-sized slot; on success the entry releases it after the call.
    if unsafe { PyObject_GetBuffer(obj.as_ptr(), view.cast(), PYBUF_SIMPLE) } != 0 {
        let err = PyErr::take(py);
        return Err(match err {
            Some(e) if e.is_instance_of::<PyTypeError>(py) => not_buffer(),
            Some(e) => e,
            None => not_buffer(),
        });
    }
    // Py_buffer: buf at 0, readonly (int) at 32.
    // SAFETY: the slot now holds a filled Py_buffer.
    let (buf, readonly) = unsafe { (*(view as *const u64), *(view.add(32) as *const c_int)) };
    if readonly == 0 {
        frame.nbuf += 1;
        return Ok(buf);
    }
    // SAFETY: release the read-only view; a writable copy takes the slot.
    unsafe { PyBuffer_Release(view.cast()) };
    let copy = PyByteArray::from(obj)?;
    // SAFETY: as above; the copy stays alive through the view's reference to it.
    if unsafe { PyObject_GetBuffer(copy.as_ptr(), view.cast(), PYBUF_SIMPLE) } != 0 {
        return Err(PyErr::fetch(py));
    }
    frame.nbuf += 1;
    // SAFETY: filled just above.
    Ok(unsafe { *(view as *const u64) })
}

extern "C" fn jitload_fast_raise_pending(result: *mut ffi::PyObject, fr: *mut CallFrame) -> *mut ffi::PyObject {
    guarded(std::ptr::null_mut(), |py| {
        if !result.is_null() {
            // SAFETY: the call's result, a reference we own and drop.
            unsafe { ffi::Py_DECREF(result) };
        }
        // SAFETY: the live frame, whose pending holds a reference stored by
        // jitload_fast_cb_error (report_pending).
        let pending = unsafe { std::mem::replace(&mut (*fr).pending, std::ptr::null_mut()) } as *mut ffi::PyObject;
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

extern "C" fn jitload_fast_null_result(fr: *mut CallFrame) -> *mut ffi::PyObject {
    guarded(std::ptr::null_mut(), |py| {
        if PyErr::occurred(py) {
            return std::ptr::null_mut();
        }
        let name = wrapper_of(py, fr).map(|w| w.borrow().name.clone()).unwrap_or_default();
        PySystemError::new_err(format!("{name}() returned NULL (pyobject) without setting an exception")).restore(py);
        std::ptr::null_mut()
    })
}

// ---- callback thunks -------------------------------------------------------------------

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
            bury(code, cell);
        }
    }
}

fn dead_cell() -> Cell {
    Cell {
        cell: ThunkCell { callable: std::ptr::null_mut(), error_i: 0, error_d: 0, active: 0 },
        callable: None,
        name: String::new(),
        result: CType::Void,
        result_name: String::new(),
    }
}

/// The code of dead thunks, kept until no call is inside it.
///
/// A thunk can die during its own call (its callable drops the last reference), and a call
/// that took the GIL itself still runs a few instructions of the thunk's code after releasing
/// it. So the code of a dead thunk is unmapped only once its cell counts no call inside
/// (`active`, maintained by the stencils with the GIL held) and a grace period has passed
/// since that was last seen otherwise. Sweeps run, with the GIL, whenever a thunk is made or
/// dies.
struct Grave {
    since: std::time::Instant,
    code: CodeBlock,
    cell: GilCell,
}

static GRAVEYARD: std::sync::Mutex<Vec<Grave>> = std::sync::Mutex::new(Vec::new());
const GRACE: std::time::Duration = std::time::Duration::from_millis(50);

fn bury(code: CodeBlock, cell: GilCell) {
    let mut graves = GRAVEYARD.lock().unwrap_or_else(|e| e.into_inner());
    graves.push(Grave { since: std::time::Instant::now(), code, cell });
    maybe_sweep(&mut graves);
}

/// Sweeps when the oldest grave's grace period is over (graves are pushed in time order),
/// so making and dropping thunks costs O(1) most of the time.
fn maybe_sweep(graves: &mut Vec<Grave>) {
    if graves.first().is_some_and(|g| g.since.elapsed() >= GRACE) {
        sweep(graves);
    }
}

fn sweep(graves: &mut Vec<Grave>) {
    let now = std::time::Instant::now();
    graves.retain_mut(|g| {
        if g.cell.get().cell.active > 0 {
            g.since = now;
            return true;
        }
        let keep = now.duration_since(g.since) < GRACE;
        if !keep {
            log::trace!("jitload: freeing thunk code at {:#x}", g.code.entry());
        }
        keep
    });
}

/// How many dead thunks' code blocks wait to be freed (for tests).
#[pyfunction]
fn buried_thunks() -> usize {
    let mut graves = GRAVEYARD.lock().unwrap_or_else(|e| e.into_inner());
    sweep(&mut graves);
    graves.len()
}

/// Builds a thunk calling `func` for the C signature `result(args...)`; `error_value` is
/// what the native caller gets when the callback fails.
#[pyfunction]
#[pyo3(signature = (func, result, args, error_value=None, name=None))]
fn callback(py: Python<'_>, func: Py<PyAny>, result: &str, args: Vec<String>, error_value: Option<Bound<'_, PyAny>>, name: Option<String>) -> PyResult<Thunk> {
    if !func.bind(py).is_callable() {
        return Err(PyTypeError::new_err(format!("callback() needs a callable, not {}", type_name(func.bind(py)))));
    }
    let signature = parse_signature(result, &args)?;
    let runtime = runtime()?;
    maybe_sweep(&mut GRAVEYARD.lock().unwrap_or_else(|e| e.into_inner()));
    let (error_i, error_d) = error_bits(py, signature.result, result, error_value.as_ref())?;
    let name = match name {
        Some(n) => n,
        None => func.bind(py).getattr("__qualname__").and_then(|q| q.extract::<String>()).unwrap_or_else(|_| "callback".into()),
    };
    let cell = GilCell(Box::new(UnsafeCell::new(Cell {
        cell: ThunkCell { callable: func.as_ptr().cast(), error_i, error_d, active: 0 },
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
extern "C" fn jitload_fast_cb_error(fr: *mut CbFrame, cell: *mut ThunkCell) -> Ret {
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
extern "C" fn jitload_fast_cb_result_slow(fr: *mut CbFrame, cell: *mut ThunkCell, kind: usize, out: *mut Ret) -> c_int {
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
