//! Crash containment for work on untrusted modules (see `shim/guard.cpp`).

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

extern "C" {
    fn jitload_run_guarded(callback: extern "C" fn(*mut c_void), data: *mut c_void) -> i32;
    fn jitload_exit_on_out_of_memory(status: i32);
}

/// Makes a failed C++ or LLVM allocation end the process with `status` (`_exit`) instead of
/// throwing or aborting; for the compiler child only (see `isolate`).
pub(crate) fn exit_on_out_of_memory(status: i32) {
    // SAFETY: installs process-wide handlers; the shim function has no preconditions.
    unsafe { jitload_exit_on_out_of_memory(status) }
}

thread_local! {
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    // Reached with `try_with`: guarded work can run while the thread's locals are being
    // destroyed (a module's destructor at exit calling a function compiled on first call).
    static FATAL_REASON: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Called by the fatal-error handler: inside a guarded region, remember why and abort so
/// the crash-recovery context takes control back. Returns false outside guarded regions.
pub(crate) fn on_fatal_error(reason: &str) -> bool {
    if !GUARDED.with(Cell::get) {
        return false;
    }
    let _ = FATAL_REASON.try_with(|r| *r.borrow_mut() = Some(reason.to_string()));
    // SAFETY: abort raises SIGABRT, which the CrashRecoveryContext active on this thread
    // turns into a return from jitload_run_guarded.
    unsafe { libc::abort() }
}

struct Call<'a, T> {
    f: Option<Box<dyn FnOnce() -> T + 'a>>,
    out: Option<std::thread::Result<T>>,
}

extern "C" fn trampoline<T>(data: *mut c_void) {
    // SAFETY: data is the &mut Call<T> passed by `guarded`, alive for this call.
    let call = unsafe { &mut *(data as *mut Call<'_, T>) };
    if let Some(f) = call.f.take() {
        // A panic must not unwind through the C++ frames of the shim.
        call.out = Some(catch_unwind(AssertUnwindSafe(f)));
    }
}

/// Runs `f`, returning `Err(reason)` if LLVM hit a fatal error or crashed inside it.
///
/// After an `Err`, everything `f` created was abandoned without running destructors (the
/// crash may have left it inconsistent): the caller must also abandon (leak) any LLVM
/// object `f` touched, such as the context its module lives in.
pub fn guarded<'a, T>(f: impl FnOnce() -> T + 'a) -> Result<T, String> {
    let mut call: Call<'a, T> = Call { f: Some(Box::new(f)), out: None };
    let was = GUARDED.with(|g| g.replace(true));
    let _ = FATAL_REASON.try_with(|r| r.borrow_mut().take());
    // In-process LLVM work keeps forks out (see `isolate::ForkGate`): counted here, outside
    // the region a crash longjmps over.
    crate::fork_gate::llvm_work_begins();
    // SAFETY: trampoline::<T> matches the data pointer's type. If LLVM crashes, the shim
    // longjmps back over the frames of `f`, skipping their destructors: that leaks what `f`
    // built, which is the documented contract of this function, and no Rust frame between
    // here and the crash holds a lock or other state that must be released.
    let ok = unsafe { jitload_run_guarded(trampoline::<T>, (&mut call as *mut Call<'a, T>).cast()) } != 0;
    crate::fork_gate::llvm_work_ends();
    GUARDED.with(|g| g.set(was));
    if !ok {
        let reason = FATAL_REASON.try_with(|r| r.borrow_mut().take()).ok().flatten();
        std::mem::forget(call); // its closure state may be half-dropped; never touch it again
        return Err(reason.unwrap_or_else(|| "LLVM crashed while processing the module".to_string()));
    }
    match call.out.take() {
        Some(Ok(v)) => Ok(v),
        Some(Err(panic)) => resume_unwind(panic),
        None => Err("guarded call did not run".to_string()),
    }
}
