//! Copy-and-patch for jitload: Python -> native call wrappers and native -> Python callback
//! thunks, generated in microseconds from stencils instead of compiled by LLVM.
//!
//! The stencils are small C functions (`stencils/*.c`) that clang 22 compiles at build time
//! with `preserve_none` and `[[clang::musttail]]` continuations; their external symbols are
//! *holes*. `build.rs` cuts each function's code and relocations out of the object into
//! tables ([`table`]); at run time [`patch::emit`] copies the stencils a signature needs one
//! after another into fresh W^X memory (`jitload_codemem`) and fills the holes: the next stencil,
//! argument indexes and frame offsets, ranges, the target function, C API functions.
//!
//! * [`build_wrapper`]: a `METH_FASTCALL` C function converting Python arguments, calling a
//!   native function and boxing its result; the host wraps it in a builtin function object.
//! * [`build_thunk`]: a C function pointer boxing its arguments and calling a Python
//!   callable with `PyObject_Vectorcall`, taking the GIL when its thread lacks it.
//!
//! This crate has no Python dependency: the host (the `jitload._native` module) supplies the
//! C API's addresses and the slow-path helpers through the [`Runtime`] resolver, and owns
//! the Python objects that keep code alive. The exception handshake between thunks and
//! wrappers is documented in [`frames`].

pub mod frames;
pub mod patch;
pub mod plan;
pub mod sig;
pub mod table;

pub use frames::{CallFrame, CbFrame, Ret, ThunkCell};
pub use patch::{CodeBlock, Piece};
pub use plan::{build_thunk, build_wrapper, Guard, WrapperSpec};
pub use sig::{CType, Signature};
pub use table::{sym, INPUT_HASH, STENCILS, SYMBOL_NAMES};

/// What can go wrong building code.
#[derive(Debug)]
pub enum Error {
    /// The signature cannot be wrapped (unknown type, too many arguments...).
    Signature(String),
    /// Symbols the stencils need that the resolver did not find.
    Unresolved(Vec<String>),
    /// Mapping or protecting memory failed.
    Memory(std::io::Error),
    /// A plan referred to a missing value (a bug in this crate).
    Plan(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Signature(m) => write!(f, "{m}"),
            Error::Unresolved(names) => write!(f, "symbols needed by the stencils were not found: {}", names.join(", ")),
            Error::Memory(e) => write!(f, "cannot map executable memory: {e}"),
            Error::Plan(m) => write!(f, "internal error in the stencil plan: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Holes whose value differs per piece (set by [`plan`]); every other hole is a process-wide
/// symbol the [`Runtime`] resolves once.
pub const PER_PIECE: &[&str] = &[
    "_JIT_CONTINUE",
    "_JIT_NARGS",
    "_JIT_NSTACK",
    "_JIT_ARG",
    "_JIT_DEST",
    "_JIT_KIND",
    "_JIT_KIND0",
    "_JIT_KIND1",
    "_JIT_CONV0",
    "_JIT_CONV1",
    "_JIT_BOX0",
    "_JIT_BOX1",
    "_JIT_MIN",
    "_JIT_MAX",
    "_JIT_TARGET",
    "_JIT_GUARD_ENTER",
    "_JIT_GUARD_EXIT",
    "_JIT_GUARD_CTX",
    "_JIT_SRC",
    "_JIT_CELL",
];

/// The process-wide hole values: C API functions and types, host helpers, the handshake
/// slot's offset. Resolve once, share (it is plain data).
#[derive(Debug, Clone)]
pub struct Runtime {
    values: Vec<Option<u64>>,
}

impl Runtime {
    /// Resolves every process-wide hole with `resolve(name)`, except those this crate
    /// provides itself (`_JIT_TLS`, the handshake slot's offset). `_JIT_TSTATE_GET` must resolve to
    /// `PyThreadState_GetUnchecked` (3.13+) or `_PyThreadState_UncheckedGet`, and
    /// `_JIT_FUNCTION_TYPE` to `&PyFunction_Type` when its `PyTypeObject` layout is the one
    /// `stencils.h` reads (`tp_vectorcall_offset` at 56), else to 1, and `_JIT_TS_THREAD_ID` to
    /// the byte offset of `thread_id` in `PyThreadState`, or 1 when unknown; `_JIT_GRACE`,
    /// `_JIT_GRACE_EPOCH` and `jitload_fast_grace_*` to `jitload_codemem::grace`'s words (their
    /// TLS offset, the epoch's address, two slow paths), which [`Guard::Epoch`] wrappers and
    /// every thunk enter; `jitload_fast_cb_leave` to the thunks' exit (stencils.h), code that
    /// is never freed. Fails listing every name not found.
    pub fn new(resolve: &dyn Fn(&str) -> Option<u64>) -> Result<Runtime, Error> {
        let mut values = vec![None; SYMBOL_NAMES.len()];
        let mut missing = Vec::new();
        for (i, name) in SYMBOL_NAMES.iter().enumerate() {
            if PER_PIECE.contains(name) {
                continue;
            }
            let value = match *name {
                "_JIT_TLS" => Some(frames::tls_offset() as u64),
                _ => resolve(name),
            };
            match value {
                Some(v) if v != 0 => values[i] = Some(v),
                _ => missing.push(name.to_string()),
            }
        }
        if !missing.is_empty() {
            return Err(Error::Unresolved(missing));
        }
        Ok(Runtime { values })
    }

    /// The value of a process-wide hole.
    pub fn value(&self, symbol: u16) -> Option<u64> {
        self.values.get(symbol as usize).copied().flatten()
    }

    /// The process-wide holes the stencils need, by name (what a resolver must provide).
    pub fn required_symbols() -> Vec<&'static str> {
        SYMBOL_NAMES.iter().copied().filter(|n| !PER_PIECE.contains(n) && *n != "_JIT_TLS").collect()
    }
}
