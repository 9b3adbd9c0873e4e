//! The import path, `Session::load_bytes`, compiling in a forked child (isolation on, the
//! default): the child's result crosses a pipe and is linked here. Coverage is the parent's.
//! Loaded code is only freed with its session, so a fresh session is used every 256 inputs.
#![no_main]
use std::cell::RefCell;

use jitload_engine::{LoadOptions, OptLevel, Session};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static STATE: RefCell<(Option<Session>, u32)> = const { RefCell::new((None, 0)) };
}

fuzz_target!(|data: &[u8]| {
    let path = if data.starts_with(b"BC\xc0\xde") || data.starts_with(&[0xde, 0xc0, 0x17, 0x0b]) { "fuzz.bc" } else { "fuzz.ll" };
    let options = LoadOptions { opt_level: OptLevel::O0, required_symbol: None, isolate: true, ..Default::default() };
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.0.is_none() || s.1 >= 256 {
            s.0 = None;
            s.0 = Some(jitload_fuzz::fresh_session());
            s.1 = 0;
        }
        s.1 += 1;
        let session = s.0.as_ref().expect("session");
        match session.load_bytes(data, path, &options) {
            Ok(loaded) => drop(loaded),
            Err(e) => drop(e.to_string()),
        }
    });
});
