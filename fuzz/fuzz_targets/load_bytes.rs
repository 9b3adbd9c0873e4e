//! The import path, `Session::load_bytes` (object cache off), compiling in-process (isolation
//! off, as with `JITLOAD_ISOLATION=none`): crash recovery is all that stands between LLVM and
//! the process.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jitload_fuzz::load_bytes(data, false));
