//! CPython's "package context" for single-phase init where CPython does not export it.
//!
//! A single-phase module `pkg._ext` names itself `"_ext"` in its `PyModuleDef`; CPython's
//! loader sets a package context (`"pkg._ext"`) around the `PyInit_*` call, and the first
//! `PyModule_Create2` whose `m_name` is the context's last component creates the module under
//! the full name (its `__name__`, and the `__module__` of the functions it adds), then clears
//! the context. CPython <= 3.11 exports the context as `_Py_PackageContext`; 3.12 moved it into
//! a thread-local that libpython does not export (`_PyImport_SwapPackageContext` is internal).
//! There jitload keeps the context itself ([`swap`]), and JIT'd code's `PyModule_Create2`
//! resolves to [`module_create2`], which does what CPython's does with it before calling
//! CPython's own (see `resolve::ModuleScope::resolve`).

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// How many modules JIT'd code has created with `PyModule_Create2` (see [`modules_created`]).
static CREATED: AtomicU64 = AtomicU64::new(0);

/// How many modules JIT'd code has created with `PyModule_Create2` so far in this process.
/// A module whose loading creates more than its own module object made a module from another
/// of its definitions, which nothing counts: its code is then kept (`jitload-pyinit`).
pub fn modules_created() -> u64 {
    CREATED.load(Ordering::Relaxed)
}

thread_local! {
    /// The context of the init call running on this thread (CPython's is per thread too).
    static CONTEXT: Cell<*const c_char> = const { Cell::new(ptr::null()) };
}

/// Sets this thread's package context to `context` (NULL: none) and returns the previous one.
/// The caller keeps the string alive until it swaps the previous context back.
pub fn swap(context: *const c_char) -> *const c_char {
    CONTEXT.with(|c| c.replace(context))
}

/// The head of `PyModuleDef` up to `m_name`, as in CPython's stable ABI (GIL builds):
/// `PyModuleDef_Base` (`PyObject_HEAD`, `m_init`, `m_index`, `m_copy`), then `m_name`.
#[repr(C)]
struct ModuleDefHead {
    ob_refcnt: isize,
    ob_type: *mut c_void,
    m_init: *mut c_void,
    m_index: isize,
    m_copy: *mut c_void,
    m_name: *const c_char,
}

type ModuleCreate2 = unsafe extern "C" fn(*mut c_void, c_int) -> *mut c_void;

fn cpython_module_create2() -> Option<ModuleCreate2> {
    static REAL: OnceLock<Option<usize>> = OnceLock::new();
    let address = (*REAL.get_or_init(|| crate::dynlib::process_symbol("PyModule_Create2").map(|a| a as usize)))?;
    // SAFETY: CPython's `PyObject *PyModule_Create2(PyModuleDef *, int)`.
    Some(unsafe { std::mem::transmute::<usize, ModuleCreate2>(address) })
}

/// What JIT'd code gets for `PyModule_Create2`: CPython's, under this thread's package context
/// (see the module documentation). Without a context it is a plain call.
///
/// # Safety
/// As CPython's `PyModule_Create2`: `def` is a live `PyModuleDef`, the GIL is held.
pub unsafe extern "C" fn module_create2(def: *mut c_void, api_version: c_int) -> *mut c_void {
    CREATED.fetch_add(1, Ordering::Relaxed);
    let Some(real) = cpython_module_create2() else {
        return ptr::null_mut(); // unreachable: JIT'd code is only linked into a Python process
    };
    let context = CONTEXT.with(Cell::get);
    if context.is_null() || def.is_null() {
        // SAFETY: forwarded as given.
        return unsafe { real(def, api_version) };
    }
    let head = def.cast::<ModuleDefHead>();
    // SAFETY: def is a PyModuleDef (the caller's contract); context is a live C string (swap's).
    let (name, full) = unsafe { ((*head).m_name, CStr::from_ptr(context)) };
    let last = full.to_bytes().rsplit(|&b| b == b'.').next();
    // SAFETY: m_name is the module's NUL-terminated name when set.
    let matches = full.to_bytes().contains(&b'.') && !name.is_null() && last == Some(unsafe { CStr::from_ptr(name) }.to_bytes());
    if !matches {
        // SAFETY: forwarded as given.
        return unsafe { real(def, api_version) };
    }
    // Used once, as CPython's: modules the init function creates after this one keep their names.
    swap(ptr::null());
    // The full name only while CPython creates the module (the GIL is held throughout): the
    // init code that called us sees its definition unchanged when the call returns.
    // SAFETY: definitions live in the module's writable data (CPython writes into them too).
    unsafe { (*head).m_name = context };
    // SAFETY: forwarded with the full name.
    let module = unsafe { real(def, api_version) };
    // SAFETY: as above.
    unsafe { (*head).m_name = name };
    module
}
