//! The engine API's native half: `Session`, `Library` and the call-ticket used by Python
//! wrappers. Argument conversion, signatures and callables live in `jitload/engine.py`.

use std::cell::RefCell;
use std::sync::Arc;

use jitload_codemem::grace;
use jitload_engine::{EngineError, Generated, Library, LibraryOptions, Provider, Session};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::error::engine_error;

/// A JIT session: one ORC ExecutionSession with its own libraries.
#[pyclass(module = "jitload._native", name = "Session", frozen)]
pub struct PySession {
    inner: Arc<Session>,
}

#[pymethods]
impl PySession {
    /// A new, independent session.
    #[new]
    fn new(py: Python<'_>) -> PyResult<Self> {
        let inner = py.detach(Session::new).map_err(|e| engine_error(py, e, None))?;
        Ok(PySession { inner: Arc::new(inner) })
    }

    /// The process-wide session (the one imports use).
    #[staticmethod]
    fn default_session(py: Python<'_>) -> PyResult<Self> {
        let inner = py.detach(Session::global).map_err(|e| engine_error(py, e, None))?;
        Ok(PySession { inner })
    }

    /// Creates a library (a JITDylib) in this session.
    #[pyo3(signature = (name, opt_level=2, lazy=false, isolate=true))]
    fn create_library(&self, py: Python<'_>, name: &str, opt_level: u8, lazy: bool, isolate: bool) -> PyResult<PyLibrary> {
        let options = LibraryOptions { opt_level: crate::opt_level(opt_level)?, lazy, isolate };
        let session = self.inner.clone();
        let inner = py.detach(|| Library::new(session, name, options)).map_err(|e| engine_error(py, e, None))?;
        Ok(PyLibrary { inner })
    }

    /// Optimised IR and assembly for IR text or bitcode (`name` labels errors).
    #[pyo3(signature = (data, name, opt_level=2))]
    fn inspect(&self, py: Python<'_>, data: &[u8], name: &str, opt_level: u8) -> PyResult<(String, String)> {
        let level = crate::opt_level(opt_level)?;
        // In a compiler process this thread waits for: Ctrl-C and the time limit kill it.
        py.detach(|| self.inner.inspect(data, name, level)).map_err(|e| engine_error(py, e, None))
    }
}

/// A library of JIT'd code. All methods may be called from any thread; compilation runs
/// with the GIL released.
#[pyclass(module = "jitload._native", name = "Library", frozen)]
pub struct PyLibrary {
    inner: Library,
}

/// Text or bytes as the engine takes them.
fn code_bytes(data: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = data.cast::<PyString>() {
        return Ok(s.to_str()?.as_bytes().to_vec());
    }
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    Err(PyTypeError::new_err(format!("expected str (IR text) or bytes, not {}", data.get_type().name()?)))
}

#[pymethods]
impl PyLibrary {
    #[getter]
    fn name(&self) -> String {
        self.inner.name().to_string()
    }

    #[getter]
    fn opt_level(&self) -> u8 {
        self.inner.options().opt_level.number()
    }

    #[getter]
    fn lazy(&self) -> bool {
        self.inner.options().lazy
    }

    /// Whether added IR and bitcode compile in a compiler child by default.
    #[getter]
    fn isolate(&self) -> bool {
        self.inner.options().isolate
    }

    /// Lets this library use `other`'s symbols.
    fn link(&self, py: Python<'_>, other: &PyLibrary) -> PyResult<()> {
        self.inner.link(&other.inner).map_err(|e| engine_error(py, e, None))
    }

    /// Adds IR text or bitcode; returns the new module's id. `isolate` (default: the
    /// library's) compiles it in a compiler child.
    #[pyo3(signature = (data, name, replace=false, isolate=None))]
    fn add_ir(&self, py: Python<'_>, data: &Bound<'_, PyAny>, name: &str, replace: bool, isolate: Option<bool>) -> PyResult<u64> {
        let bytes = code_bytes(data)?;
        let lib = self.inner.clone();
        let isolate = isolate.unwrap_or(lib.options().isolate);
        py.detach(|| lib.add_ir_with(&bytes, name, replace, isolate)).map_err(|e| engine_error(py, e, None))
    }

    /// Adds a relocatable object file; returns the new module's id.
    fn add_object(&self, py: Python<'_>, data: &[u8], name: &str) -> PyResult<u64> {
        let lib = self.inner.clone();
        py.detach(|| lib.add_object(data, name)).map_err(|e| engine_error(py, e, None))
    }

    /// Binds `name` to a native address kept valid by `keepalive`; returns a module id.
    #[pyo3(signature = (name, address, keepalive, replace=false))]
    fn define_address(&self, py: Python<'_>, name: &str, address: u64, keepalive: Py<PyAny>, replace: bool) -> PyResult<u64> {
        self.inner.define_address(name, address, Box::new(keepalive), replace).map_err(|e| engine_error(py, e, None))
    }

    /// Makes `name` a function whose code `generator(name)` returns (IR text, bitcode or an
    /// object file) on its first call.
    #[pyo3(signature = (name, generator, replace=false))]
    fn define_lazy(&self, py: Python<'_>, name: &str, generator: Py<PyAny>, replace: bool) -> PyResult<()> {
        let provider = Arc::new(PyProvider { generator });
        self.inner.define_lazy(name, provider, replace).map_err(|e| engine_error(py, e, None))
    }

    /// Address of a symbol (a function's stable entry point, or a variable).
    fn address(&self, py: Python<'_>, name: &str) -> PyResult<u64> {
        self.inner.address(name).map_err(|e| engine_error(py, e, None))
    }

    /// Whether `name` is reached through a stable entry point (not an object-file symbol).
    fn is_stub(&self, name: &str) -> bool {
        self.inner.is_stub(name)
    }

    /// The address of the word `name`'s stable entry point jumps through, if it has one.
    fn jump_slot(&self, name: &str) -> Option<u64> {
        self.inner.jump_slot(name)
    }

    /// The id of the module that currently defines `name`, if any.
    fn owner(&self, name: &str) -> Option<u64> {
        self.inner.owner_of(name)
    }

    /// Names defined now, sorted.
    fn symbols(&self) -> Vec<String> {
        self.inner.symbols()
    }

    /// (id, name) of each module, oldest first.
    fn modules(&self) -> Vec<(u64, String)> {
        self.inner.modules()
    }

    fn module_symbols(&self, id: u64) -> Option<Vec<String>> {
        self.inner.module_symbols(id)
    }

    fn has_module(&self, id: u64) -> bool {
        self.inner.has_module(id)
    }

    /// Removes a module; its memory is freed once no call through a wrapper is running.
    fn remove_module(&self, py: Python<'_>, id: u64) -> PyResult<()> {
        let lib = self.inner.clone();
        py.detach(|| lib.remove_module(id)).map_err(|e| engine_error(py, e, None))
    }

    /// Removes every module and the library.
    fn remove(&self, py: Python<'_>) -> PyResult<()> {
        let lib = self.inner.clone();
        py.detach(|| lib.remove()).map_err(|e| engine_error(py, e, None))
    }

    /// The guard a fast wrapper runs around every call of `name` (see `jitload.fast.wrap`):
    /// `(enter, exit, ctx)` addresses, and the object that keeps `ctx` alive (pass it as the
    /// wrapper's owner). `enter` holds the library's current epoch for the call (so removed
    /// code is freed only after it returns) and refuses calls into a removed object-file
    /// function; `exit` raises the error of a stub call that failed (removed function,
    /// failing generator).
    fn call_guard(&self, name: &str) -> PyResult<(usize, usize, usize, CallGuard)> {
        let direct_module = if self.inner.is_stub(name) { None } else { self.inner.owner_of(name) };
        let ctx = Box::new(GuardCtx { library: self.inner.clone(), direct_module, name: name.to_string() });
        let address = &*ctx as *const GuardCtx as usize;
        Ok((guard_enter as *const () as usize, guard_exit as *const () as usize, address, CallGuard { _ctx: ctx }))
    }

    /// Starts a call into this library's code: code removed meanwhile stays until the
    /// ticket is closed.
    fn enter(&self) -> CallTicket {
        CallTicket { token: grace::enter(), open: std::cell::Cell::new(true) }
    }
}

/// What a fast wrapper's guard needs (see `PyLibrary::call_guard`).
struct GuardCtx {
    library: Library,
    /// For a function defined directly (object files): its module, checked before each call.
    direct_module: Option<u64>,
    name: String,
}

/// Keeps a guard's context alive; the fast wrapper holds it as its owner.
#[pyclass(module = "jitload._native", frozen)]
pub struct CallGuard {
    _ctx: Box<GuardCtx>,
}

/// Runs before each fast call, with the GIL held: returns a token for `guard_exit` (the
/// grace token, complemented: never `usize::MAX`, since epochs start at 1), or `usize::MAX`
/// with an exception set to refuse the call. The call's epoch word (see
/// `jitload_codemem::grace`) is thread-local: no lock, no allocation.
extern "C" fn guard_enter(ctx: usize) -> usize {
    std::panic::catch_unwind(|| {
        // SAFETY: ctx is the GuardCtx owned by the CallGuard the wrapper keeps alive.
        let ctx = unsafe { &*(ctx as *const GuardCtx) };
        let token = grace::enter();
        if let Some(module) = ctx.direct_module {
            if !ctx.library.has_module(module) {
                // SAFETY: the wrapper calls us with the GIL held.
                let py = unsafe { Python::assume_attached() };
                leave(py, token);
                let what = format!("'{}'", ctx.name);
                engine_error(py, EngineError::Removed { library: ctx.library.name().to_string(), what }, None).restore(py);
                return usize::MAX;
            }
        }
        !token.0 as usize
    })
    .unwrap_or(usize::MAX)
}

/// Runs after each fast call, with the GIL held: ends the call's epoch and raises the error
/// of a failed stub call, if any (returns -1 with the exception set).
extern "C" fn guard_exit(_ctx: usize, token: usize) -> std::ffi::c_int {
    std::panic::catch_unwind(|| {
        // SAFETY: the wrapper calls us with the GIL held.
        let py = unsafe { Python::assume_attached() };
        leave(py, grace::Token(!(token as u64)));
        if !grace::call_error_flag() {
            return 0; // the common case: one flag read instead of the error's thread-local
        }
        match take_call_error(py) {
            Some(err) => {
                err.restore(py);
                -1
            }
            None => 0,
        }
    })
    .unwrap_or(-1)
}

/// The values of the holes of the wrapper stencils' inline epoch guard (stencils.h, "the
/// engine's epoch guard"; `jitload_codemem::grace::inline`), by hole name.
pub fn epoch_guard_hole(name: &str) -> Option<u64> {
    use jitload_codemem::grace::inline;
    Some(match name {
        "_JIT_GRACE" => inline::tls_offset() as u64,
        "_JIT_GRACE_EPOCH" => inline::epoch_address() as u64,
        "jitload_fast_grace_enter" => jitload_fast_grace_enter as *const () as u64,
        "jitload_fast_grace_exit_slow" => jitload_fast_grace_exit_slow as *const () as u64,
        _ => return None,
    })
}

/// Whether the inline epoch guard must fence on entry (decided once per process).
pub fn epoch_guard_fences() -> bool {
    jitload_codemem::grace::inline::readers_fence()
}

/// The inline epoch guard's slow entry (the thread is not registered yet): enters the call
/// as the outermost (the stencil's token is the idle word).
extern "C" fn jitload_fast_grace_enter() {
    // Registration only allocates; an allocation failure aborts, it does not unwind. The
    // catch is for the FFI edge all the same (a panic must not cross into the stencil).
    let _ = std::panic::catch_unwind(grace::enter);
}

/// The inline epoch guard's slow exit, with the GIL held, after the stencil ended the call:
/// frees what waits if this was the outermost call, and raises the error of a failed stub
/// call (dropping `result`). Returns the result to return, or NULL with an exception set.
extern "C" fn jitload_fast_grace_exit_slow(result: *mut pyo3::ffi::PyObject) -> *mut pyo3::ffi::PyObject {
    std::panic::catch_unwind(|| {
        // SAFETY: the wrapper calls us with the GIL held.
        let py = unsafe { Python::assume_attached() };
        if grace::take_wake() {
            py.detach(grace::reclaim);
        }
        if !grace::call_error_flag() {
            return result;
        }
        match take_call_error(py) {
            Some(err) => {
                if !result.is_null() {
                    // SAFETY: the wrapper's new reference, dropped instead of returned.
                    unsafe { pyo3::ffi::Py_DECREF(result) };
                }
                err.restore(py);
                std::ptr::null_mut()
            }
            None => result,
        }
    })
    .unwrap_or(std::ptr::null_mut())
}

/// Ends this thread's call; if code retired meanwhile may now be freed, frees it without
/// the GIL (it may run module destructors and ORC work).
fn leave(py: Python<'_>, token: grace::Token) {
    if grace::exit(token) && grace::take_wake() {
        py.detach(grace::reclaim);
    }
}

/// Held by a wrapper for the length of one native call (see `jitload_codemem::grace`); it
/// must end on the thread that began it.
#[pyclass(module = "jitload._native", unsendable)]
pub struct CallTicket {
    token: grace::Token,
    open: std::cell::Cell<bool>,
}

impl Drop for CallTicket {
    /// A ticket never closed (its wrapper failed before `close`) still ends its call; freeing
    /// waits for the next exit or retirement. PyO3 drops an `unsendable` object only on its
    /// own thread.
    fn drop(&mut self) {
        if self.open.replace(false) {
            grace::exit(self.token);
        }
    }
}

#[pymethods]
impl CallTicket {
    /// Ends the call (idempotent); code retired during it may be freed now.
    fn close(&self, py: Python<'_>) {
        if self.open.replace(false) {
            leave(py, self.token);
        }
    }
}

thread_local! {
    /// The Python exception a generator raised in the last failed resolution on this thread.
    static GENERATOR_EXCEPTION: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

struct PyProvider {
    generator: Py<PyAny>,
}

impl Provider for PyProvider {
    fn generate(&self, symbol: &str) -> Result<Generated, EngineError> {
        Python::attach(|py| {
            let fail = |message: String| EngineError::Generator { library: String::new(), symbol: symbol.to_string(), message };
            let result = self.generator.call1(py, (symbol,)).map_err(|err| {
                let message = err.to_string();
                GENERATOR_EXCEPTION.with(|e| *e.borrow_mut() = Some(err));
                fail(format!("the generator raised {message}"))
            })?;
            let result = result.bind(py);
            if let Ok(s) = result.cast::<PyString>() {
                return Ok(Generated::Ir(s.to_str().map_err(|e| fail(e.to_string()))?.as_bytes().to_vec()));
            }
            if let Ok(b) = result.cast::<PyBytes>() {
                let bytes = b.as_bytes().to_vec();
                return Ok(if bytes.starts_with(b"\x7fELF") { Generated::Object(bytes) } else { Generated::Ir(bytes) });
            }
            let type_name = result.get_type().name().map(|n| n.to_string()).unwrap_or_default();
            Err(fail(format!("the generator returned {type_name}, expected str (IR text) or bytes (bitcode or an object file)")))
        })
    }
}

/// The error of the last native call on this thread that reached a removed or ungeneratable
/// function, as the exception to raise (a generator's own exception is chained as its cause).
#[pyfunction]
pub fn take_call_error(py: Python<'_>) -> Option<PyErr> {
    let error = jitload_engine::stubs::take_call_error()?;
    let err = engine_error(py, error, None);
    if let Some(cause) = GENERATOR_EXCEPTION.with(|e| e.borrow_mut().take()) {
        err.set_cause(py, Some(cause));
    }
    Some(err)
}

/// Reports `exc` through `sys.unraisablehook`, as CPython does for errors in callbacks that
/// have no caller to raise to.
#[pyfunction]
pub fn write_unraisable(py: Python<'_>, exc: Bound<'_, PyAny>, obj: Option<Bound<'_, PyAny>>) {
    PyErr::from_value(exc).write_unraisable(py, obj.as_ref());
}

/// How many engine-API compiles were abandoned (Ctrl-C or the time limit ended their wait)
/// and are still running: LLVM cannot stop a compile, so each finishes in the background and
/// its result is dropped.
#[pyfunction]
pub fn abandoned_compiles() -> usize {
    jitload_engine::background::abandoned_running()
}

/// Releases the GIL around a wait inside a stub resolution, if this thread holds it: the
/// thread it waits for may need the GIL to run a generator.
fn wait_without_gil(wait: &mut dyn FnMut()) {
    extern "C" {
        // Exported by every CPython 3 (outside the limited API, so not in pyo3's bindings).
        fn PyGILState_Check() -> std::ffi::c_int;
    }
    // SAFETY: PyGILState_Check only reads the thread state; it is safe to call without the GIL.
    if unsafe { PyGILState_Check() } == 1 {
        // SAFETY: this thread holds the GIL (checked above); the thread state is restored
        // before returning.
        let state = unsafe { pyo3::ffi::PyEval_SaveThread() };
        wait();
        // SAFETY: state came from PyEval_SaveThread on this thread.
        unsafe { pyo3::ffi::PyEval_RestoreThread(state) };
    } else {
        wait();
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    jitload_engine::library::set_wait_hook(wait_without_gil);
    m.add_class::<PySession>()?;
    m.add_class::<PyLibrary>()?;
    m.add_class::<CallTicket>()?;
    m.add_class::<CallGuard>()?;
    m.add_function(wrap_pyfunction!(take_call_error, m)?)?;
    m.add_function(wrap_pyfunction!(write_unraisable, m)?)?;
    m.add_function(wrap_pyfunction!(abandoned_compiles, m)?)?;
    Ok(())
}
