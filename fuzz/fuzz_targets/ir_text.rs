//! Textual IR through `Library::add_ir`: the input is made text (lossy UTF-8, no NULs) so it
//! always reaches LLVM's IR parser.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut text = String::from_utf8_lossy(data).into_owned();
    text.retain(|c| c != '\0');
    if text.is_empty() {
        return;
    }
    jitload_fuzz::add_and_remove(|lib| lib.add_ir(text.as_bytes(), "fuzz.ll", false));
});
