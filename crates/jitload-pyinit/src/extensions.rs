//! What CPython does with a single-phase extension module around its `PyInit_*` call, done
//! the same way for JIT'd modules: the bookkeeping of `_PyImport_FixupExtensionObject` after
//! the first init, and `import_find_extension` when the module is imported again (after
//! `del sys.modules[name]`, or in a subinterpreter).
//!
//! Only public (stable) C API is used, on every supported CPython (3.10–3.13):
//! `PyState_AddModule` (so the module's own `PyState_FindModule(&def)` finds it),
//! `sys.modules`, and the definition's `m_base.m_init` / `m_base.m_copy` fields, whose layout
//! (`PyModuleDef_Base`) is part of the stable ABI. CPython 3.13 no longer exports
//! `_PyImport_FixupExtensionObject`, and no version exports `import_find_extension`.

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::prelude::*;

/// The definition of a module made by single-phase init, or None for a multi-phase one (its
/// definition has slots) or an object without a definition.
pub(crate) fn single_phase_def(module: &Bound<'_, PyAny>) -> Option<*mut ffi::PyModuleDef> {
    // SAFETY: type check under the GIL.
    if unsafe { ffi::PyModule_Check(module.as_ptr()) } == 0 {
        return None;
    }
    // SAFETY: a module object; NULL means it has no definition.
    let def = unsafe { ffi::PyModule_GetDef(module.as_ptr()) };
    // SAFETY: def, when not NULL, is the module's live definition.
    (!def.is_null() && unsafe { (*def).m_slots.is_null() }).then_some(def)
}

/// Whether the calling thread runs in the main interpreter.
pub(crate) fn in_main_interpreter() -> bool {
    let Some(main) = jitload_runtime::dynlib::process_symbol("PyInterpreterState_Main") else {
        return true;
    };
    // SAFETY: `PyInterpreterState *PyInterpreterState_Main(void)`, exported by every CPython.
    let main: unsafe extern "C" fn() -> *mut ffi::PyInterpreterState = unsafe { std::mem::transmute(main as usize) };
    // SAFETY: the caller holds the GIL of the current interpreter.
    unsafe { ffi::PyInterpreterState_Get() == main() }
}

/// After a single-phase init returned `module` (with `__file__` set), as CPython's
/// `_PyImport_LoadDynamicModuleWithSpec` + `_PyImport_FixupExtensionObject`: remember the init
/// function in the definition, put the module into `sys.modules` and into the interpreter's
/// by-index list (`PyState_FindModule`), and for a module without per-module state
/// (`m_size == -1`) keep a copy of its dictionary for later imports.
pub(crate) fn fix_up(py: Python<'_>, module: &Bound<'_, PyAny>, def: *mut ffi::PyModuleDef, init_address: u64, fullname: &str) -> PyResult<()> {
    // SAFETY: def is the module's definition (static data of the JIT'd module); we hold the
    // GIL. init_address is the `PyObject *(void)` init function that made this module.
    unsafe { (*def).m_base.m_init = Some(std::mem::transmute::<usize, extern "C" fn() -> *mut ffi::PyObject>(init_address as usize)) };
    let modules = py.import("sys")?.getattr("modules")?;
    modules.set_item(fullname, module)?;
    if let Err(e) = add_to_interpreter(py, module, def) {
        let _ = modules.del_item(fullname);
        return Err(e);
    }
    // SAFETY: reading the definition's size under the GIL.
    let size = unsafe { (*def).m_size };
    // CPython keeps the copy when in the main interpreter or for m_size == -1 (bpo-44050);
    // only m_size == -1 modules ever read it.
    if size == -1 {
        keep_dict_copy(module, def)?;
    }
    Ok(())
}

/// `PyState_AddModule`, unless the interpreter already lists this very module (CPython's
/// public function treats that as a fatal error).
fn add_to_interpreter(py: Python<'_>, module: &Bound<'_, PyAny>, def: *mut ffi::PyModuleDef) -> PyResult<()> {
    // SAFETY: def is a live single-phase definition; we hold the GIL. A borrowed result.
    if unsafe { ffi::PyState_FindModule(def) } == module.as_ptr() {
        return Ok(());
    }
    // SAFETY: module is a live module object made from def (single-phase: no slots).
    if unsafe { ffi::PyState_AddModule(module.as_ptr(), def) } != 0 {
        return Err(PyErr::take(py).unwrap_or_else(|| PySystemError::new_err("PyState_AddModule failed")));
    }
    Ok(())
}

/// `def->m_base.m_copy = module.__dict__.copy()`, dropping an older copy.
fn keep_dict_copy(module: &Bound<'_, PyAny>, def: *mut ffi::PyModuleDef) -> PyResult<()> {
    let copy = module.getattr("__dict__")?.call_method0("copy")?;
    // SAFETY: m_copy is NULL or a reference the definition owns; we replace it under the GIL.
    let old = unsafe { std::ptr::replace(&mut (*def).m_base.m_copy, copy.into_ptr()) };
    // SAFETY: old is NULL or an owned reference (released after the store, as Py_XSETREF).
    unsafe { ffi::Py_XDECREF(old) };
    Ok(())
}

/// A single-phase module imported again from code already loaded, as CPython's
/// `import_find_extension`: a module without per-module state (`m_size == -1`) becomes a new
/// module object in `sys.modules` filled from the saved dictionary copy (its init function
/// is not run again; the new module, as in CPython, has no definition of its own); any other
/// runs its init function again. Either is then listed for `PyState_FindModule`. Returns
/// None when CPython would load the module anew (no copy or no init function kept).
pub(crate) fn import_again<'py>(py: Python<'py>, def: *mut ffi::PyModuleDef, fullname: &str) -> PyResult<Option<Bound<'py, PyAny>>> {
    let modules = py.import("sys")?.getattr("modules")?;
    // SAFETY: def is a live definition this process loaded; read under the GIL.
    let (size, copy, init) = unsafe { ((*def).m_size, (*def).m_base.m_copy, (*def).m_base.m_init) };
    let module = if size == -1 {
        if copy.is_null() {
            return Ok(None);
        }
        let name = pyo3::types::PyString::new(py, fullname);
        // SAFETY: a borrowed reference to the module sys.modules holds (created if missing).
        let raw = unsafe { ffi::PyImport_AddModuleObject(name.as_ptr()) };
        if raw.is_null() {
            return Err(PyErr::take(py).unwrap_or_else(|| PySystemError::new_err("PyImport_AddModuleObject failed")));
        }
        // SAFETY: raw is alive (sys.modules holds it); we take our own reference.
        let module = unsafe { Bound::from_borrowed_ptr(py, raw) };
        // SAFETY: copy is the dict reference the definition owns, alive under the GIL.
        let copy = unsafe { Bound::from_borrowed_ptr(py, copy) };
        module.getattr("__dict__")?.call_method1("update", (copy,))?;
        module
    } else {
        let Some(init) = init else { return Ok(None) };
        // SAFETY: m_init is the module's init function (set by fix_up); we hold the GIL. A
        // C++ exception from it is caught in the shim.
        let raw = unsafe {
            jitload_runtime::cxx::call_ptr(std::mem::transmute::<extern "C" fn() -> *mut ffi::PyObject, unsafe extern "C" fn() -> *mut std::ffi::c_void>(init))
        }
        .map_err(|e| PySystemError::new_err(format!("initialization of {fullname} threw {e}")))?;
        if raw.is_null() {
            return Err(PyErr::take(py).unwrap_or_else(|| PySystemError::new_err(format!("initialization of {fullname} failed without raising an exception"))));
        }
        // SAFETY: init returns a new reference.
        let module = unsafe { Bound::from_owned_ptr(py, raw.cast()) };
        modules.set_item(fullname, &module)?;
        module
    };
    if let Err(e) = add_to_interpreter(py, &module, def) {
        let _ = modules.del_item(fullname);
        return Err(e);
    }
    Ok(Some(module))
}

/// Undoes [`fix_up`] for a module whose code a reload replaced, so the old module object
/// can be freed: the interpreter's by-index list and the definition's dictionary copy (whose
/// functions refer back to the module) were the references CPython never drops.
pub(crate) fn forget(def: *mut ffi::PyModuleDef) {
    // SAFETY: def is the old module's live definition; we hold the GIL. A borrowed result.
    if !unsafe { ffi::PyState_FindModule(def) }.is_null() {
        // SAFETY: as above; fails only for a multi-phase definition (not the case here).
        unsafe { ffi::PyState_RemoveModule(def) };
        // SAFETY: clearing whatever PyState_RemoveModule may have raised, under the GIL.
        unsafe { ffi::PyErr_Clear() };
    }
    // SAFETY: m_copy is NULL or a reference the definition owns.
    let copy = unsafe { std::ptr::replace(&mut (*def).m_base.m_copy, std::ptr::null_mut()) };
    // SAFETY: an owned reference or NULL.
    unsafe { ffi::Py_XDECREF(copy) };
}
