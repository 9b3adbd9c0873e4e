//! The engine's one error type. Each variant names the stage that failed and carries the
//! facts a user needs; the Python layer maps each variant to an exception class.

use std::fmt::Write as _;

/// Everything that can go wrong between a file on disk and callable code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },

    #[error("{path}: the file is empty, so it holds no bitcode or IR")]
    Empty { path: String },

    #[error("{path}: not LLVM bitcode or IR: {detail}")]
    NotBitcode { path: String, detail: String },

    #[error("{path}: {}", bitcode_message(message, producer.as_deref(), reader))]
    Bitcode { path: String, message: String, producer: Option<String>, reader: String },

    #[error("{path}: invalid LLVM IR: {message}")]
    IrSyntax { path: String, message: String },

    #[error("{path}: the module fails LLVM's verifier: {message}")]
    Verify { path: String, message: String },

    #[error("{path}: built for target '{module_triple}', but this machine is '{host_triple}'; rebuild the bitcode for this machine")]
    Target { path: String, module_triple: String, host_triple: String },

    #[error("{path}: no function {expected} in the module ({})", found_inits(found))]
    MissingInit { path: String, expected: String, found: Vec<String> },

    #[error("{path}: {} undefined symbol{}: {}; load the library that defines them with jitload.load_library(...)",
        symbols.len(), if symbols.len() == 1 { "" } else { "s" }, symbols.join(", "))]
    Unresolved { path: String, symbols: Vec<String> },

    #[error("{path}: cannot load library '{library}' named in the module's dependent libraries: {reason}")]
    DependentLibrary { path: String, library: String, reason: String },

    #[error("cannot load library '{name}': {reason}")]
    Library { name: String, reason: String },

    #[error("{path}: {stage} failed: {message}")]
    Compile { path: String, stage: &'static str, message: String },

    #[error("{path}: LLVM failed on this module ({reason}); the file is probably corrupt or was not made by clang")]
    LlvmCrash { path: String, reason: String },

    #[error("{path}: JIT linking failed: {message}")]
    Link { path: String, message: String },

    #[error("cannot start the JIT: {message}")]
    Jit { message: String },

    #[error("{path}: cannot write output: {source}")]
    Write { path: String, source: std::io::Error },
}

fn bitcode_message(message: &str, producer: Option<&str>, reader: &str) -> String {
    let mut out = format!("unreadable LLVM bitcode: {message}");
    if let Some(p) = producer {
        let _ = write!(out, " (made by {p}; this JIT reads bitcode up to LLVM {reader}");
        if crate::ir::producer_is_newer(p, reader) {
            out.push_str(": rebuild it with clang 22 or older");
        }
        out.push(')');
    }
    out
}

fn found_inits(found: &[String]) -> String {
    if found.is_empty() {
        "it defines no PyInit_* function at all".to_string()
    } else {
        format!("it defines: {}", found.join(", "))
    }
}

impl EngineError {
    /// The file the error is about, when there is one.
    pub fn path(&self) -> Option<&str> {
        match self {
            EngineError::Read { path, .. }
            | EngineError::Empty { path }
            | EngineError::NotBitcode { path, .. }
            | EngineError::Bitcode { path, .. }
            | EngineError::IrSyntax { path, .. }
            | EngineError::Verify { path, .. }
            | EngineError::Target { path, .. }
            | EngineError::MissingInit { path, .. }
            | EngineError::Unresolved { path, .. }
            | EngineError::DependentLibrary { path, .. }
            | EngineError::Compile { path, .. }
            | EngineError::Link { path, .. }
            | EngineError::LlvmCrash { path, .. }
            | EngineError::Write { path, .. } => Some(path),
            EngineError::Library { .. } | EngineError::Jit { .. } => None,
        }
    }
}
