//! The frames stencils share with the host, mirrored from `stencils/stencils.h` (the C side
//! has `_Static_assert`s on the same offsets), and the callback handshake.
//!
//! # The callback handshake
//!
//! A callback thunk whose Python callable raises must hand the exception to the jitload
//! wrapper whose call led to the callback, on the same thread, so that the wrapper re-raises
//! it; with no such wrapper the exception goes to `sys.unraisablehook`. Each thread has one
//! word of static (initial-exec) thread-local storage, the *handshake slot*, at a fixed
//! offset from the thread pointer ([`tls_offset`], patched into the stencils):
//!
//! * every wrapper entry saves the slot in its [`CallFrame`]'s `prev`, clears the frame's
//!   `pending`, stores the frame's address in the slot, and on return restores `prev` and
//!   checks `pending`: one load and three stores before the call, one load, one store and
//!   one compare with memory after. No lock, no list shared between threads, no thread
//!   identity to record, and no register held across the call for it (the frame is at a
//!   fixed place in the entry's stack frame).
//! * a thunk that fails (on any thread) reads its own thread's slot ([`report_pending`]): a
//!   frame address means a wrapper of this thread is running; the exception is stored in the
//!   frame's `pending`, which sends the wrapper to its slow path when it returns, where it
//!   raises the exception whatever the native call returned. A frame whose `pending` is
//!   already set keeps its first exception (later ones are dropped, like the first error of
//!   a C loop); an empty slot sends the exception to `sys.unraisablehook`.
//!
//! Frames nest like the calls: a wrapper called from a callback pushes above the frame of
//! the wrapper that led to the callback and restores it on return; exceptions of callbacks
//! under the inner call go to the inner frame.
//!
//! Under the engine's epoch guard (`entry*_epoch_*`) the fused entries skip the compare of
//! `pending` on return: storing an exception also counts it in the guard's flags word
//! (`jitload_codemem::grace`), which their exit tests anyway, and [`take_pending`] uncounts
//! it; a frame's exit that finds the count non-zero checks its own `pending` on the slow
//! path (the count may be an outer frame's, which its own exit then handles).
//!
//! (An earlier version tagged the slot itself (`| 1`) instead of reading `pending`: the
//! wrapper then had to load the slot again after the call and compare it with its frame's
//! address, which it kept in a callee-saved register across the call.)

/// Python -> native wrapper frame (C `CallFrame`).
#[repr(C)]
pub struct CallFrame {
    pub i: [u64; 6],
    pub f: [u64; 8],
    pub stack: [u64; MAX_STACK_ARGS],
    pub ret_i: u64,
    pub ret_d: u64,
    pub self_: *mut libc::c_void,
    /// The handshake slot before this frame was pushed.
    pub prev: *mut CallFrame,
    /// A normalized exception (a reference) raised by a callback during the call, or null
    /// (cleared by the entry before the frame is pushed).
    pub pending: *mut libc::c_void,
    pub token: usize,
    /// `MAX_BUFFERS` `Py_buffer`s (80 bytes each), only in entries with buffers.
    pub bufs: *mut u8,
    pub nbuf: i64,
}

/// Native -> Python thunk frame (C `CbFrame`).
#[repr(C)]
pub struct CbFrame {
    pub i: [u64; 6],
    pub f: [u64; 8],
    pub stack: [u64; MAX_STACK_ARGS],
    pub argv: [*mut libc::c_void; 1 + MAX_CALLBACK_ARGS],
    pub nboxed: i64,
    pub result: *mut libc::c_void,
}

/// The mutable part of a thunk (C `ThunkCell`): the host owns it, at a stable address.
#[repr(C)]
pub struct ThunkCell {
    /// A strong reference to the callable; null once the thunk is closed.
    pub callable: *mut libc::c_void,
    /// Returned to the native caller when the callback fails (rax).
    pub error_i: u64,
    /// ... (xmm0 bits).
    pub error_d: u64,
}

/// Both return registers (C `Ret`): `{rax, xmm0}`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ret {
    pub i: u64,
    pub d: f64,
}

/// Buffer slots in a wrapper frame (ptr and buffer arguments).
pub const MAX_BUFFERS: usize = 16;
/// Arguments of a callback.
pub const MAX_CALLBACK_ARGS: usize = 6 + 8 + MAX_STACK_ARGS;
/// Memory-class (stack) arguments of a wrapper or a callback.
pub const MAX_STACK_ARGS: usize = 16;
/// `sizeof(Py_buffer)` on 64-bit CPython.
pub const PY_BUFFER_SIZE: usize = 80;

const _: () = {
    assert!(std::mem::offset_of!(CallFrame, ret_i) == 240);
    assert!(std::mem::offset_of!(CallFrame, self_) == 256);
    assert!(std::mem::offset_of!(CallFrame, prev) == 264);
    assert!(std::mem::offset_of!(CallFrame, pending) == 272);
    assert!(std::mem::offset_of!(CallFrame, bufs) == 288);
    assert!(std::mem::size_of::<CallFrame>() == 304);
    assert!(std::mem::offset_of!(CbFrame, stack) == 112);
    assert!(std::mem::offset_of!(CbFrame, argv) == 240);
    assert!(std::mem::offset_of!(CbFrame, nboxed) == 488);
    assert!(std::mem::size_of::<CbFrame>() == 504);
    assert!(std::mem::size_of::<ThunkCell>() == 24);
};

/// Byte offset of integer argument register `k` in a [`CallFrame`] / [`CbFrame`].
pub const fn int_slot(k: usize) -> u64 {
    (8 * k) as u64
}
/// Byte offset of SSE argument register `k`.
pub const fn sse_slot(k: usize) -> u64 {
    (48 + 8 * k) as u64
}
/// Byte offset of memory argument `k` in a [`CallFrame`] / [`CbFrame`].
pub const fn stack_slot(k: usize) -> u64 {
    (112 + 8 * k) as u64
}

// The handshake slot: one word of initial-exec TLS (a fixed offset from the thread pointer
// in every thread, which is what lets patched code reach it with `mov reg, fs:[offset]`).
// Rust has no stable initial-exec thread-locals, hence the assembly.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".pushsection .tbss.jitload_stencils_slot,\"awT\",@nobits",
    ".p2align 3",
    ".type jitload_stencils_slot, @object",
    ".size jitload_stencils_slot, 8",
    "jitload_stencils_slot:",
    ".zero 8",
    ".popsection",
    ".pushsection .text.jitload_stencils_tls_offset,\"ax\",@progbits",
    ".globl jitload_stencils_tls_offset",
    ".hidden jitload_stencils_tls_offset",
    ".type jitload_stencils_tls_offset, @function",
    ".p2align 4",
    "jitload_stencils_tls_offset:",
    "movq jitload_stencils_slot@GOTTPOFF(%rip), %rax",
    "ret",
    ".size jitload_stencils_tls_offset, .-jitload_stencils_tls_offset",
    ".popsection",
    options(att_syntax)
);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
extern "C" {
    /// The handshake slot's offset from the thread pointer (the same in every thread).
    fn jitload_stencils_tls_offset() -> isize;
}

/// The handshake slot's offset from the thread pointer: the value of the `_JIT_TLS` hole.
pub fn tls_offset() -> isize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // SAFETY: a leaf function returning a constant (the offset the dynamic linker
        // resolved for this module's static TLS); it reads only its GOT entry.
        unsafe { jitload_stencils_tls_offset() }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        0
    }
}

/// The calling thread's handshake slot.
fn slot() -> *mut usize {
    (thread_pointer() as isize).wrapping_add(tls_offset()) as *mut usize
}

/// This thread's thread pointer (`%fs:0`, the TCB's self-pointer).
pub fn thread_pointer() -> usize {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let t: usize;
        // SAFETY: reads the TCB self-pointer at %fs:0, which every x86-64 Linux thread has.
        unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) t, options(nostack, readonly, preserves_flags)) };
        t
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        0
    }
}

/// Where a failing callback's exception went (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Stored in the newest running wrapper frame of this thread, which raises it on return.
    Stored,
    /// That wrapper already has an exception: the caller drops this one.
    Dropped,
    /// No wrapper is running on this thread: the caller reports it (`sys.unraisablehook`).
    NoWrapper,
}

/// Hands `exception` (a reference: taken over only when the result is `Stored`) to the
/// newest running wrapper frame of the calling thread.
///
/// # Safety
/// Every frame reachable from this thread's slot is live (true whenever no wrapper is
/// between its push and its pop, i.e. always outside the stencils).
pub unsafe fn report_pending(exception: *mut libc::c_void) -> Pending {
    let slot = slot();
    // SAFETY: this thread's slot (static TLS, mapped for the thread's whole life).
    let top = unsafe { *slot };
    if top == 0 {
        return Pending::NoWrapper;
    }
    let frame = top as *mut CallFrame;
    // SAFETY: the slot holds the live frame of a wrapper running on this thread (contract);
    // its entry cleared `pending` before pushing it.
    unsafe {
        if !(*frame).pending.is_null() {
            return Pending::Dropped;
        }
        (*frame).pending = exception;
    }
    // The epoch-guarded entries test the guard's flags word on exit rather than `pending`.
    jitload_codemem::grace::callback_error_stored();
    Pending::Stored
}

/// Takes the exception [`report_pending`] stored in `frame` (NULL if none).
///
/// # Safety
/// `frame` is a live wrapper frame of the calling thread.
pub unsafe fn take_pending(frame: *mut CallFrame) -> *mut libc::c_void {
    // SAFETY: the caller's contract.
    let pending = unsafe { std::mem::replace(&mut (*frame).pending, std::ptr::null_mut()) };
    if !pending.is_null() {
        jitload_codemem::grace::callback_error_taken();
    }
    pending
}

/// Wrapper calls running on the calling thread now (frames reachable from its slot).
///
/// # Safety
/// As for [`report_pending`].
pub unsafe fn running_frames() -> usize {
    // SAFETY: this thread's slot.
    let mut p = unsafe { *slot() };
    let mut n = 0;
    while p != 0 {
        n += 1;
        // SAFETY: every frame reachable from the slot is live (the caller's contract).
        p = unsafe { (*(p as *mut CallFrame)).prev } as usize;
    }
    n
}
