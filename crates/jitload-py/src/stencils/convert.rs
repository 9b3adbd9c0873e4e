//! General conversions of Python objects to C values (wrapper arguments, callback results):
//! any int-like, float-like or object, buffers and pointers, raising like a C extension.

use std::ffi::{c_int, c_void};

use jitload_stencils::frames::{CallFrame, MAX_BUFFERS, PY_BUFFER_SIZE};
use jitload_stencils::CType;
use pyo3::exceptions::{PyOverflowError, PySystemError, PyTypeError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyFloat, PyInt, PyTuple};

use super::type_name;

extern "C" {
    // Exported by every CPython 3; outside the limited API of 3.10 (so not in pyo3's abi3
    // bindings), which is why they are declared here.
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut c_void, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut c_void);
}

const PYBUF_SIMPLE: c_int = 0;

/// The general conversion of `obj` to the raw bits of a C `ty` (for wrapper arguments and
/// callback results). `frame` gives buffer slots (wrapper arguments only).
pub(super) fn convert(
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
