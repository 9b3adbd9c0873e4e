//! The import path, `Session::load_bytes` (object cache off), compiling in a forked child
//! (isolation on, the default): the child's result crosses a pipe and is linked here.
//! Coverage is the parent's.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jitload_fuzz::load_bytes(data, true));
