//! Bitcode (and anything else) through `Library::add_ir`: classify, parse, verify, retarget,
//! compile at -O0, link, remove.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jitload_fuzz::add_and_remove(|lib| lib.add_ir(data, "fuzz.bc", false));
});
