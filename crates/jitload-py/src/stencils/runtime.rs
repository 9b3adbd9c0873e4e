//! The runtime: the process-wide values the stencils' holes are patched with (C API
//! functions, the slow paths, interpreter layout facts).

use std::ffi::CString;
use std::sync::OnceLock;

use jitload_stencils::Runtime;
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi;
use pyo3::prelude::*;

use super::thunks::{jitload_fast_cb_error, jitload_fast_cb_leave, jitload_fast_cb_result_slow};
use super::wrappers::{jitload_fast_bad_nargs, jitload_fast_conv_slow, jitload_fast_null_result, jitload_fast_raise_pending};

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

pub(super) fn runtime() -> PyResult<&'static Runtime> {
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
                    "jitload_fast_cb_leave" => jitload_fast_cb_leave as *const () as usize,
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
