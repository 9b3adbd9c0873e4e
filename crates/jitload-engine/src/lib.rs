//! jitload's engine: LLVM bitcode and IR in, linked native code out, through LLVM 22's ORC.
//! Pure Rust with no Python dependency; `jitload-py` exposes it to Python.

pub mod background;
pub mod bitstream;
pub mod error;
pub mod fork_gate;
pub mod ir;
pub mod isolate;
pub mod kept;
pub mod library;
pub mod link;
pub mod llvm;
pub mod native;
pub mod objfile;
pub mod session;
pub mod stubs;
pub mod tiers;
pub mod variants;

pub use error::EngineError;
pub use library::{Generated, Library, LibraryOptions, Provider};
pub use llvm::target::{HostTarget, OptLevel};
pub use session::{LoadOptions, LoadedModule, Session};
