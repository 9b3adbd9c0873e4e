//! Shared set-up for the fuzz targets: one session per process (with libpython added as a
//! user library when `JITLOAD_FUZZ_LIBPYTHON` names it, so real extension modules link), an
//! eager library at -O0 for the library loaders, and the oracle every target applies: an
//! input must end in `Ok` or an `EngineError`; anything else (a crash, an abort, a panic)
//! is reported by libFuzzer and counted by the driver.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use jitload_engine::{Library, LibraryOptions, LoadOptions, OptLevel, Session};

/// The process's session, created once.
pub fn session() -> Arc<Session> {
    static SESSION: OnceLock<Arc<Session>> = OnceLock::new();
    SESSION
        .get_or_init(|| {
            let session = Arc::new(Session::new().expect("a JIT session"));
            add_libpython(&session);
            session
        })
        .clone()
}

/// A fresh session (for loaders whose code is only freed with the session).
pub fn fresh_session() -> Session {
    let session = Session::new().expect("a JIT session");
    add_libpython(&session);
    session
}

fn add_libpython(session: &Session) {
    if let Ok(path) = std::env::var("JITLOAD_FUZZ_LIBPYTHON") {
        if !path.is_empty() {
            if let Err(e) = session.load_library(&path) {
                panic!("cannot load {path}: {e}");
            }
        }
    }
}

/// The eager -O0 library the IR, bitcode and object targets add to.
pub fn library() -> Library {
    static LIBRARY: OnceLock<Mutex<Library>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            let options = LibraryOptions { opt_level: OptLevel::O0, lazy: false, isolate: false };
            Mutex::new(Library::new(session(), "fuzz", options).expect("a library"))
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Adds `data` with `add`, removing the module again when it loaded, so that the library
/// stays small and the next input may define the same names.
pub fn add_and_remove(add: impl FnOnce(&Library) -> Result<u64, jitload_engine::EngineError>) {
    let lib = library();
    match add(&lib) {
        Ok(id) => {
            lib.remove_module(id).expect("a module just added can be removed");
        }
        Err(e) => {
            // Every error must be describable (Display walks every variant's fields).
            let _ = e.to_string();
        }
    }
}

/// Loads `data` through the import path, `Session::load_bytes` (object cache off, -O0),
/// compiling in a forked child (`isolate`) or in-process. Loaded code is only freed with its
/// session, so a fresh session is used every 256 inputs.
pub fn load_bytes(data: &[u8], isolate: bool) {
    thread_local! {
        static STATE: RefCell<(Option<Session>, u32)> = const { RefCell::new((None, 0)) };
    }
    let bitcode = data.starts_with(b"BC\xc0\xde") || data.starts_with(&[0xde, 0xc0, 0x17, 0x0b]);
    let path = if bitcode { "fuzz.bc" } else { "fuzz.ll" };
    let options = LoadOptions { opt_level: OptLevel::O0, required_symbol: None, isolate, use_cache: false };
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if s.0.is_none() || s.1 >= 256 {
            s.0 = None;
            s.0 = Some(fresh_session());
            s.1 = 0;
        }
        s.1 += 1;
        let session = s.0.as_ref().expect("session");
        match session.load_bytes(data, path, &options) {
            Ok(loaded) => drop(loaded),
            // Every error must be describable (Display walks every variant's fields).
            Err(e) => drop(e.to_string()),
        }
    });
}
