//! Relocatable object files through `Library::add_object`: symbol table checks, then ORC's
//! JITLink (graph building, relocation, allocation), then removal.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    jitload_fuzz::add_and_remove(|lib| lib.add_object(data, "fuzz.o"));
});
