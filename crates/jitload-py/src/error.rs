//! The one conversion from engine errors to Python exceptions. The exception classes live
//! in `jitload.errors` (plain Python, so users can import them without loading LLVM).

use jitload_engine::EngineError;
use pyo3::prelude::*;

/// The `jitload.errors` class for each engine failure. No `_` arm: a new variant must
/// choose its exception before this compiles.
fn class_of(err: &EngineError) -> ErrorClass {
    match err {
        EngineError::Read { .. } => ErrorClass::Bitcode,
        EngineError::Empty { .. } => ErrorClass::Bitcode,
        EngineError::NotBitcode { .. } => ErrorClass::Bitcode,
        EngineError::Bitcode { .. } => ErrorClass::Bitcode,
        EngineError::IrSyntax { .. } => ErrorClass::Bitcode,
        EngineError::Verify { .. } => ErrorClass::Bitcode,
        EngineError::Target { .. } => ErrorClass::Bitcode,
        EngineError::MissingInit { .. } => ErrorClass::Link,
        EngineError::Unresolved { .. } => ErrorClass::Link,
        EngineError::DependentLibrary { .. } => ErrorClass::Link,
        EngineError::Library { .. } => ErrorClass::Library,
        EngineError::Compile { .. } => ErrorClass::Compile,
        EngineError::Link { .. } => ErrorClass::Link,
        EngineError::LlvmCrash { .. } => ErrorClass::Bitcode,
        EngineError::Jit { .. } => ErrorClass::Jitload,
        EngineError::Write { .. } => ErrorClass::Jitload,
        EngineError::Duplicate { .. } => ErrorClass::DuplicateSymbol,
        EngineError::NotFound { .. } => ErrorClass::SymbolNotFound,
        EngineError::Removed { .. } => ErrorClass::Removed,
        EngineError::Generator { .. } => ErrorClass::Generator,
        EngineError::Unsupported { .. } => ErrorClass::Jitload,
        EngineError::Interrupted { .. } => ErrorClass::Jitload,
    }
}

pub use jitload_pyinit::{make_error, ErrorClass};

thread_local! {
    /// The KeyboardInterrupt (or other signal handler exception) that stopped a compile on
    /// this thread, raised in place of the engine's `Interrupted`.
    static INTERRUPT: std::cell::RefCell<Option<PyErr>> = const { std::cell::RefCell::new(None) };
}

/// The engine's interrupt check: runs Python's signal handlers (main thread only; elsewhere
/// they never run) and asks the compile to stop if one raised.
pub fn interrupt_requested() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time from any thread.
    if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
        return false; // after finalisation there are no signal handlers to run
    }
    Python::attach(|py| match py.check_signals() {
        Ok(()) => false,
        Err(err) => {
            INTERRUPT.with(|i| *i.borrow_mut() = Some(err));
            true
        }
    })
}

/// Converts an engine error for module `name` (if any) into its Python exception.
pub fn engine_error(py: Python<'_>, err: EngineError, name: Option<&str>) -> PyErr {
    if let EngineError::Interrupted { .. } = err {
        if let Some(raised) = INTERRUPT.with(|i| i.borrow_mut().take()) {
            return raised;
        }
    }
    let path = err.path().map(str::to_owned);
    make_error(py, class_of(&err), err.to_string(), name, path.as_deref())
}
