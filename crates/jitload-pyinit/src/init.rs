//! Running a JIT'd extension module's `PyInit_*` the way CPython's dynamic loader does:
//! single-phase and multi-phase (PEP 489) init, package context, and CPython's checks on
//! what the init function returns.

use std::ffi::{c_char, CString};

use pyo3::exceptions::PySystemError;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::{make_error, ErrorClass};

type InitFn = unsafe extern "C" fn() -> *mut ffi::PyObject;
type SwapContextFn = unsafe extern "C" fn(*const c_char) -> *const c_char;

/// Sets CPython's "package context" (the full dotted name single-phase modules are created
/// under) for the duration of the init call, or jitload's where CPython does not export its
/// own (3.12+); restored on drop.
struct PackageContext {
    previous: *const c_char,
    _name: CString,
}

pub(crate) fn lookup(symbol: &str) -> *mut std::ffi::c_void {
    let c = CString::new(symbol).expect("static symbol name");
    // SAFETY: RTLD_DEFAULT search of a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) }
}

impl PackageContext {
    fn enter(fullname: &str) -> Option<PackageContext> {
        let name = CString::new(fullname).ok()?;
        let swap = lookup("_PyImport_SwapPackageContext");
        if !swap.is_null() {
            // SAFETY: CPython >= 3.12 exports this function with this signature; we hold the GIL.
            let swap: SwapContextFn = unsafe { std::mem::transmute(swap) };
            // SAFETY: name outlives the init call (kept in self until restore).
            let previous = unsafe { swap(name.as_ptr()) };
            return Some(PackageContext { previous, _name: name });
        }
        let var = lookup("_Py_PackageContext") as *mut *const c_char;
        if var.is_null() {
            // CPython >= 3.12 keeps it in a thread-local it does not export: jitload keeps
            // its own, which JIT'd code's PyModule_Create2 reads (jitload_runtime::pkgcontext).
            let previous = jitload_runtime::pkgcontext::swap(name.as_ptr());
            return Some(PackageContext { previous, _name: name });
        }
        // SAFETY: CPython <= 3.11 exports `const char *_Py_PackageContext`; we hold the GIL,
        // which guards it.
        let previous = unsafe { std::ptr::replace(var, name.as_ptr()) };
        Some(PackageContext { previous, _name: name })
    }
}

impl Drop for PackageContext {
    fn drop(&mut self) {
        let swap = lookup("_PyImport_SwapPackageContext");
        if !swap.is_null() {
            // SAFETY: as in enter.
            let swap: SwapContextFn = unsafe { std::mem::transmute(swap) };
            // SAFETY: restoring the value we replaced, under the GIL.
            unsafe { swap(self.previous) };
            return;
        }
        let var = lookup("_Py_PackageContext") as *mut *const c_char;
        if var.is_null() {
            jitload_runtime::pkgcontext::swap(self.previous);
            return;
        }
        // SAFETY: as in enter.
        unsafe { *var = self.previous };
    }
}

/// Runs `constructors` (if any) then the init function at `init_address`, and returns the
/// module (for multi-phase init: created from the spec, not yet executed).
pub fn run_init<'py>(
    py: Python<'py>,
    init_address: u64,
    constructors: Option<u64>,
    fullname: &str,
    path: &str,
    spec: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let init_error = |msg: String| make_error(py, ErrorClass::Init, msg, Some(fullname), Some(path));
    let system_error = |msg: String| make_error(py, ErrorClass::InitSystem, msg, Some(fullname), Some(path));
    // A C++ exception escaping the module's code is caught in the engine's C++ shim (it must
    // not unwind into these frames) and becomes an InitError naming its type and what().
    let cxx_error = |stage: &str, e: jitload_runtime::cxx::CxxException| {
        let _ = PyErr::take(py); // whatever the module had half-raised when it threw
        init_error(format!("{path}: {stage} of {fullname} threw {e}"))
    };
    if let Some(ctor) = constructors {
        // SAFETY: the engine lowered llvm.global_ctors into this `void()` function.
        let ctor: extern "C" fn() = unsafe { std::mem::transmute(ctor as usize) };
        jitload_runtime::cxx::call_void(ctor).map_err(|e| cxx_error("a static constructor", e))?;
    }
    // SAFETY: the engine checked the module defines this PyInit function before linking.
    let init: InitFn = unsafe { std::mem::transmute(init_address as usize) };
    let raw = {
        let _context = PackageContext::enter(fullname);
        // SAFETY: we hold the GIL, as PyInit functions require.
        unsafe { jitload_runtime::cxx::call_ptr(std::mem::transmute::<InitFn, unsafe extern "C" fn() -> *mut std::ffi::c_void>(init)) }
            .map_err(|e| cxx_error("initialization", e))?
            .cast::<ffi::PyObject>()
    };

    if raw.is_null() {
        return Err(match PyErr::take(py) {
            Some(cause) => {
                let err = init_error(format!("{path}: initialization of {fullname} raised {}", describe(py, &cause)));
                err.set_cause(py, Some(cause));
                err
            }
            None => system_error(format!("{path}: initialization of {fullname} failed without raising an exception")),
        });
    }
    // SAFETY: raw is a live object; PyModuleDef_Type is a static type object in libpython.
    let is_def = unsafe { ffi::PyObject_TypeCheck(raw, &raw mut ffi::PyModuleDef_Type) } != 0;
    if is_def {
        // Multi-phase init: PyModuleDef_Init returns the static def *without* a new
        // reference (CPython never decrefs it), so it must not be wrapped as owned.
        if let Some(stray) = PyErr::take(py) {
            let err = system_error(format!("{path}: initialization of {fullname} raised unreported exception"));
            err.set_cause(py, Some(stray));
            return Err(err);
        }
        // SAFETY: raw is a PyModuleDef (checked above) in the module's static storage;
        // spec is a live object; we hold the GIL.
        let module = unsafe { ffi::PyModule_FromDefAndSpec2(raw.cast::<ffi::PyModuleDef>(), spec.as_ptr(), ffi::PYTHON_API_VERSION) };
        if module.is_null() {
            let cause = PyErr::take(py).unwrap_or_else(|| PySystemError::new_err("no exception set"));
            let err = init_error(format!("{path}: creating module {fullname} failed: {}", describe(py, &cause)));
            err.set_cause(py, Some(cause));
            return Err(err);
        }
        // SAFETY: module is a new reference.
        return Ok(unsafe { Bound::from_owned_ptr(py, module) });
    }
    // SAFETY: single-phase init returns a new reference.
    let object = unsafe { Bound::from_owned_ptr(py, raw) };
    if let Some(stray) = PyErr::take(py) {
        let err = system_error(format!("{path}: initialization of {fullname} raised unreported exception"));
        err.set_cause(py, Some(stray));
        return Err(err);
    }
    // SAFETY: type checks on a live object under the GIL.
    let is_module = unsafe { ffi::PyModule_Check(object.as_ptr()) } != 0;
    // SAFETY: as above; returns NULL without raising for a module without a def.
    let has_def = is_module && !unsafe { ffi::PyModule_GetDef(object.as_ptr()) }.is_null();
    if !has_def {
        return Err(system_error(format!(
            "{path}: initialization of {fullname} did not return an extension module (got {})",
            object.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
        )));
    }
    check_single_phase_allowed(py, spec)?;
    object.setattr("__file__", path)?;
    if let Some(def) = crate::extensions::single_phase_def(&object) {
        crate::extensions::fix_up(py, &object, def, init_address, fullname)?;
    }
    Ok(object)
}

/// CPython 3.12+ refuses single-phase modules in a subinterpreter that requires multi-phase
/// init (an isolated one, with its own GIL): "module X does not support loading in
/// subinterpreters". It exports no function to ask (`_PyImport_CheckSubinterpIncompatibleExtensionAllowed`
/// is 3.12's only), so jitload lets CPython decide: creating a module from a definition that
/// declares no support for multiple interpreters runs exactly that check under the module's
/// name (`spec.name`); the module it makes is dropped. The main interpreter takes every module.
pub(crate) fn check_single_phase_allowed(py: Python<'_>, spec: &Bound<'_, PyAny>) -> PyResult<()> {
    if py.version_info() < (3, 12) {
        return Ok(());
    }
    if crate::extensions::in_main_interpreter() {
        return Ok(());
    }
    // SAFETY: a definition built once and never freed; PyModuleDef_Init only initialises its
    // object header (as every static definition's); we hold the GIL.
    let def = probe_definition() as *mut ffi::PyModuleDef;
    // SAFETY: def is a multi-phase definition, spec a live module spec; we hold the GIL.
    let module = unsafe { ffi::PyModule_FromDefAndSpec2(def, spec.as_ptr(), ffi::PYTHON_API_VERSION) };
    if module.is_null() {
        return Err(PyErr::take(py).unwrap_or_else(|| PySystemError::new_err("no exception set")));
    }
    // SAFETY: a new reference we own.
    unsafe { ffi::Py_DECREF(module) };
    Ok(())
}

/// The address of a `PyModuleDef` whose one slot is `Py_mod_multiple_interpreters:
/// Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED` (3.12+; the ABI3 headers jitload builds with
/// predate them: slot 3, value NULL).
fn probe_definition() -> usize {
    static DEFINITION: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *DEFINITION.get_or_init(|| {
        let slots = Box::leak(Box::new([
            ffi::PyModuleDef_Slot { slot: 3, value: std::ptr::null_mut() },
            ffi::PyModuleDef_Slot { slot: 0, value: std::ptr::null_mut() },
        ]));
        let def = Box::leak(Box::new(ffi::PyModuleDef {
            m_base: ffi::PyModuleDef_HEAD_INIT,
            m_name: c"jitload single-phase check".as_ptr(),
            m_doc: std::ptr::null(),
            m_size: 0,
            m_methods: std::ptr::null_mut(),
            m_slots: slots.as_mut_ptr(),
            m_traverse: None,
            m_clear: None,
            m_free: None,
        }));
        def as *mut ffi::PyModuleDef as usize
    })
}

/// Executes a multi-phase module's slots, as CPython's `exec_dynamic` does: a no-op for
/// single-phase modules and for modules whose state already exists.
pub fn exec_module(py: Python<'_>, module: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: type check under the GIL.
    if unsafe { ffi::PyModule_Check(module.as_ptr()) } == 0 {
        return Ok(());
    }
    // SAFETY: module is a module object; NULL means "no def", not an error.
    let def = unsafe { ffi::PyModule_GetDef(module.as_ptr()) };
    if def.is_null() {
        return Ok(());
    }
    // SAFETY: as above.
    if !unsafe { ffi::PyModule_GetState(module.as_ptr()) }.is_null() {
        return Ok(());
    }
    type ExecDef = unsafe extern "C" fn(*mut std::ffi::c_void, *mut std::ffi::c_void) -> std::ffi::c_int;
    // SAFETY: PyModule_ExecDef takes (module, def); only the pointer types differ.
    let exec_def: ExecDef = unsafe { std::mem::transmute(ffi::PyModule_ExecDef as unsafe extern "C" fn(_, _) -> _) };
    // SAFETY: def belongs to module; we hold the GIL. A C++ exception from an exec slot is
    // caught in the shim (it unwinds through CPython's frames, as it would from a .so).
    let status = unsafe { jitload_runtime::cxx::call_int2(exec_def, module.as_ptr().cast(), def.cast()) };
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            let _ = PyErr::take(py);
            let name = module.getattr("__name__").map(|n| n.to_string()).unwrap_or_default();
            let path = module.getattr("__file__").ok().map(|p| p.to_string());
            let message = format!("{}: executing module {name} threw {e}", path.as_deref().unwrap_or("?"));
            return Err(make_error(py, ErrorClass::Init, message, Some(&name), path.as_deref()));
        }
    };
    if status != 0 {
        let cause = PyErr::take(py).unwrap_or_else(|| PySystemError::new_err("no exception set"));
        let name = module.getattr("__name__").map(|n| n.to_string()).unwrap_or_default();
        let path = module.getattr("__file__").ok().map(|p| p.to_string());
        let err = make_error(
            py,
            ErrorClass::Init,
            format!("{}: executing module {name} raised {}", path.as_deref().unwrap_or("?"), describe(py, &cause)),
            Some(&name),
            path.as_deref(),
        );
        err.set_cause(py, Some(cause));
        return Err(err);
    }
    Ok(())
}

fn describe(py: Python<'_>, err: &PyErr) -> String {
    let ty = err.get_type(py).name().map(|n| n.to_string()).unwrap_or_else(|_| "an exception".into());
    format!("{ty}: {}", err.value(py))
}
