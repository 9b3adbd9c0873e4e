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
    Compile { path: String, stage: String, message: String },

    #[error("{path}: LLVM failed on this module ({reason}); the file is probably corrupt or was not made by clang")]
    LlvmCrash { path: String, reason: String },

    #[error("{path}: JIT linking failed: {message}")]
    Link { path: String, message: String },

    #[error("cannot start the JIT: {message}")]
    Jit { message: String },

    #[error("{path}: cannot write output: {source}")]
    Write { path: String, source: std::io::Error },

    #[error("{path}: library '{library}' already defines {}; remove the module that defines {} first, or add with replace=True",
        symbols.join(", "), if symbols.len() == 1 { "it" } else { "them" })]
    Duplicate { path: String, library: String, symbols: Vec<String> },

    #[error("library '{library}' has no symbol '{symbol}'{}", close_matches(close))]
    NotFound { library: String, symbol: String, close: Vec<String> },

    #[error("{what} was removed{}", removed_from(library, what))]
    Removed { library: String, what: String },

    #[error("generating '{symbol}' for library '{library}' failed: {message}")]
    Generator { library: String, symbol: String, message: String },

    #[error("{what} is not supported: {reason}")]
    Unsupported { what: String, reason: String },

    #[error("{path}: compilation interrupted")]
    Interrupted { path: String },
}

fn removed_from(library: &str, what: &str) -> String {
    if library.is_empty() || what.contains(&format!("library '{library}'")) {
        String::new()
    } else {
        format!(" from library '{library}'")
    }
}

fn close_matches(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!(" (did you mean: {}?)", close.join(", "))
    }
}

fn bitcode_message(message: &str, producer: Option<&str>, reader: &str) -> String {
    let mut out = format!("unreadable LLVM bitcode: {message}");
    if let Some(p) = producer {
        let _ = write!(out, " (made by {p}; this JIT reads bitcode up to LLVM {reader}");
        if crate::bitstream::producer_is_newer(p, reader) {
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
            | EngineError::Write { path, .. }
            | EngineError::Duplicate { path, .. }
            | EngineError::Interrupted { path } => Some(path),
            EngineError::Library { .. }
            | EngineError::Jit { .. }
            | EngineError::NotFound { .. }
            | EngineError::Removed { .. }
            | EngineError::Generator { .. }
            | EngineError::Unsupported { .. } => None,
        }
    }
}

impl EngineError {
    /// Encodes the error for the trip from the compiler process to the parent.
    pub(crate) fn to_wire(&self, w: &mut jitload_runtime::wire::Writer) {
        use EngineError::*;
        let none = String::new();
        match self {
            Read { path, source } => w.u8(0).strs(&[path.clone(), source.to_string()]),
            Empty { path } => w.u8(1).strs(std::slice::from_ref(path)),
            NotBitcode { path, detail } => w.u8(2).strs(&[path.clone(), detail.clone()]),
            Bitcode { path, message, producer, reader } => w.u8(3).strs(&[
                path.clone(),
                message.clone(),
                producer.clone().unwrap_or_default(),
                if producer.is_some() { "1".into() } else { none },
                reader.clone(),
            ]),
            IrSyntax { path, message } => w.u8(4).strs(&[path.clone(), message.clone()]),
            Verify { path, message } => w.u8(5).strs(&[path.clone(), message.clone()]),
            Target { path, module_triple, host_triple } => w.u8(6).strs(&[path.clone(), module_triple.clone(), host_triple.clone()]),
            MissingInit { path, expected, found } => w.u8(7).strs(&[path.clone(), expected.clone()]).strs(found),
            Unresolved { path, symbols } => w.u8(8).strs(std::slice::from_ref(path)).strs(symbols),
            DependentLibrary { path, library, reason } => w.u8(9).strs(&[path.clone(), library.clone(), reason.clone()]),
            Library { name, reason } => w.u8(10).strs(&[name.clone(), reason.clone()]),
            Compile { path, stage, message } => w.u8(11).strs(&[path.clone(), stage.clone(), message.clone()]),
            LlvmCrash { path, reason } => w.u8(12).strs(&[path.clone(), reason.clone()]),
            Link { path, message } => w.u8(13).strs(&[path.clone(), message.clone()]),
            Jit { message } => w.u8(14).strs(std::slice::from_ref(message)),
            Write { path, source } => w.u8(15).strs(&[path.clone(), source.to_string()]),
            Duplicate { path, library, symbols } => w.u8(16).strs(&[path.clone(), library.clone()]).strs(symbols),
            NotFound { library, symbol, close } => w.u8(17).strs(&[library.clone(), symbol.clone()]).strs(close),
            Removed { library, what } => w.u8(18).strs(&[library.clone(), what.clone()]),
            Generator { library, symbol, message } => w.u8(19).strs(&[library.clone(), symbol.clone(), message.clone()]),
            Unsupported { what, reason } => w.u8(20).strs(&[what.clone(), reason.clone()]),
            Interrupted { path } => w.u8(21).strs(std::slice::from_ref(path)),
        };
    }

    /// Decodes what [`EngineError::to_wire`] wrote; `None` on malformed input.
    pub(crate) fn from_wire(r: &mut jitload_runtime::wire::Reader<'_>) -> Option<EngineError> {
        use EngineError::*;
        let tag = r.u8()?;
        let f = r.strs()?;
        let g = |i: usize| f.get(i).cloned();
        Some(match tag {
            0 => Read { path: g(0)?, source: std::io::Error::other(g(1)?) },
            1 => Empty { path: g(0)? },
            2 => NotBitcode { path: g(0)?, detail: g(1)? },
            3 => Bitcode { path: g(0)?, message: g(1)?, producer: (g(3)? == "1").then(|| f[2].clone()), reader: g(4)? },
            4 => IrSyntax { path: g(0)?, message: g(1)? },
            5 => Verify { path: g(0)?, message: g(1)? },
            6 => Target { path: g(0)?, module_triple: g(1)?, host_triple: g(2)? },
            7 => MissingInit { path: g(0)?, expected: g(1)?, found: r.strs()? },
            8 => Unresolved { path: g(0)?, symbols: r.strs()? },
            9 => DependentLibrary { path: g(0)?, library: g(1)?, reason: g(2)? },
            10 => Library { name: g(0)?, reason: g(1)? },
            11 => Compile { path: g(0)?, stage: g(1)?, message: g(2)? },
            12 => LlvmCrash { path: g(0)?, reason: g(1)? },
            13 => Link { path: g(0)?, message: g(1)? },
            14 => Jit { message: g(0)? },
            15 => Write { path: g(0)?, source: std::io::Error::other(g(1)?) },
            16 => Duplicate { path: g(0)?, library: g(1)?, symbols: r.strs()? },
            17 => NotFound { library: g(0)?, symbol: g(1)?, close: r.strs()? },
            18 => Removed { library: g(0)?, what: g(1)? },
            19 => Generator { library: g(0)?, symbol: g(1)?, message: g(2)? },
            20 => Unsupported { what: g(0)?, reason: g(1)? },
            21 => Interrupted { path: g(0)? },
            _ => return None,
        })
    }
}
