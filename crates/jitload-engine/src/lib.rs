//! jitload's engine: LLVM bitcode and IR in, linked native code out, through LLVM 22's ORC.
//! Pure Rust with no Python dependency; `jitload-py` exposes it to Python.

pub mod bitstream;
pub mod error;
pub mod ir;
pub mod isolate;
pub mod link;
pub mod llvm;
pub mod resolve;
pub mod session;

pub use error::EngineError;
pub use llvm::target::{HostTarget, OptLevel};
pub use session::{LoadOptions, LoadedModule, Session};
