//! In-process LLVM work and the forks of compiler children exclude each other (see
//! [`ForkGate`]), and the flag that says "this process is a compiler child".

use std::sync::atomic::{AtomicBool, Ordering};

static IN_CHILD: AtomicBool = AtomicBool::new(false);

/// True in a compiler child: code that would take a lock another thread of the parent may
/// have held at the fork (the target-machine pool, the logger) must not.
pub fn in_compiler_child() -> bool {
    IN_CHILD.load(Ordering::Relaxed)
}

/// Called first thing in a compiler child (see `isolate`).
pub(crate) fn enter_compiler_child() {
    IN_CHILD.store(true, Ordering::Relaxed);
}

/// In-process LLVM work and forks exclude each other. LLVM keeps process-wide locks (e.g.
/// the timer groups code generation registers with): a fork while another thread of the
/// interpreter held one gave the child a lock nobody would release, and the child hung until
/// the time limit (found by tests/regressions/repro_cross_library_free.py: a lazy library
/// compiling a function in-process while another thread's add_ir forked).
///
/// Readers (guarded LLVM work, `llvm::guard::guarded`) never wait for one another, nor for a
/// fork that is only waiting: nested and concurrent guarded work (parallel code generation
/// runs guarded pieces on other threads while its caller is guarded) cannot deadlock; they
/// wait only while a fork is actually under way. Not a `RwLock` guard: a fatal error inside
/// the guarded work longjmps over Rust frames, so the count is kept outside that region.
struct ForkGate {
    /// (guarded LLVM calls in progress, a fork under way)
    state: std::sync::Mutex<(usize, bool)>,
    changed: std::sync::Condvar,
}

static FORK_GATE: ForkGate = ForkGate { state: std::sync::Mutex::new((0, false)), changed: std::sync::Condvar::new() };

/// Marks the start of in-process LLVM work on this thread (a no-op in a compiler child,
/// which never forks and whose copy of the gate may be mid-fork).
pub(crate) fn llvm_work_begins() {
    if in_compiler_child() {
        return;
    }
    let mut state = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    while state.1 {
        state = FORK_GATE.changed.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    state.0 += 1;
    OWN_LLVM_WORK.with(|n| n.set(n.get() + 1));
}

thread_local! {
    /// How much of the gate's count is this thread's own (a fork from inside guarded work
    /// waits only for the other threads').
    static OWN_LLVM_WORK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the end of what [`llvm_work_begins`] started.
pub(crate) fn llvm_work_ends() {
    if in_compiler_child() {
        return;
    }
    OWN_LLVM_WORK.with(|n| n.set(n.get().saturating_sub(1)));
    let mut state = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    state.0 = state.0.saturating_sub(1);
    FORK_GATE.changed.notify_all();
}

/// Waits until no in-process LLVM work runs, then keeps new work out until `fork_done`.
pub(crate) fn fork_begins() {
    let own = OWN_LLVM_WORK.with(|n| n.get());
    let mut state = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    while state.0 > own || state.1 {
        state = FORK_GATE.changed.wait(state).unwrap_or_else(|e| e.into_inner());
    }
    state.1 = true;
}

pub(crate) fn fork_done() {
    let mut state = FORK_GATE.state.lock().unwrap_or_else(|e| e.into_inner());
    state.1 = false;
    FORK_GATE.changed.notify_all();
}
