//! Static destructors of loaded modules that must run at process exit, newest module first,
//! as the dynamic loader does for shared libraries (after the interpreter has finalised).

use std::sync::{Mutex, Once};

static DESTRUCTORS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Runs the `void()` function at `address` at exit, unless [`forget`] removes it first.
pub fn at_exit(address: u64) {
    static REGISTERED: Once = Once::new();
    DESTRUCTORS.lock().unwrap_or_else(|e| e.into_inner()).push(address);
    REGISTERED.call_once(|| {
        // SAFETY: run_all is a plain extern "C" fn valid for the process lifetime.
        unsafe { libc::atexit(run_all) };
    });
}

/// Forgets `address` (its module is being freed and runs it itself).
pub fn forget(address: u64) {
    DESTRUCTORS.lock().unwrap_or_else(|e| e.into_inner()).retain(|&a| a != address);
}

/// What a module being freed runs first, as `dlclose` does: the destructors its static
/// objects registered with `__cxa_atexit` against its `__dso_handle`, then its lowered
/// destructors (which then no longer run at exit). A C++ exception from one is logged.
pub fn run_before_free(path: &str, dso_handle: Option<u64>, destructors: Option<u64>) {
    if let Some(dso) = dso_handle {
        if let Err(e) = crate::cxx::finalize(dso) {
            log::warn!("jitload: a destructor of {path} threw {e}");
        }
    }
    if let Some(d) = destructors {
        forget(d);
        // SAFETY: the module's lowered `void()` destructor function, still mapped.
        let f: extern "C" fn() = unsafe { std::mem::transmute(d as usize) };
        if let Err(e) = crate::cxx::call_void(f) {
            log::warn!("jitload: a destructor of {path} threw {e}");
        }
    }
}

extern "C" fn run_all() {
    let _ = std::panic::catch_unwind(|| {
        let list = std::mem::take(&mut *DESTRUCTORS.lock().unwrap_or_else(|e| e.into_inner()));
        for address in list.into_iter().rev() {
            // SAFETY: address is the lowered `void()` destructor function of a module whose
            // code is never freed before exit (freeing it calls `forget` first).
            let f: extern "C" fn() = unsafe { std::mem::transmute(address as usize) };
            let _ = crate::cxx::call_void(f);
        }
    });
}
