//! The part of jitload that runs JIT'd modules and needs no LLVM: symbol resolution and the
//! process-wide scope, C++ runtime hooks, the object cache's keys and payloads, perf maps.
//! Both native modules link it: `_fastload` (warm imports from the cache, no libLLVM) and
//! `_native` (the engine), which shares `_fastload`'s process scope (see [`scope_table`]).

pub mod compiled;
pub mod cxx;
pub mod debug;
pub mod dynlib;
pub mod exit;
pub mod link;
pub mod objcache;
pub mod outlive;
pub mod pkgcontext;
pub mod python_abi;
pub mod resolve;
pub mod scope_state;
pub mod scope_table;
pub mod tuning;
pub mod wire;

pub use compiled::Compiled;

/// The LLVM version the engine was built against (part of the cache key).
pub const LLVM_VERSION: &str = env!("JITLOAD_LLVM_VERSION");
/// The host triple of that LLVM (part of the cache key).
pub const LLVM_HOST_TRIPLE: &str = env!("JITLOAD_LLVM_HOST_TRIPLE");

/// A C string for FFI; interior NULs (impossible in valid symbol names) are replaced.
pub fn cstr(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s.replace('\0', "\\0")).expect("NULs were replaced")
}
