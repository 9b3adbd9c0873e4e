//! The frames stencils share with the host, mirrored from `stencils/stencils.h` (the C side
//! has `_Static_assert`s on the same offsets), and the callback handshake.
//!
//! # The callback handshake
//!
//! A callback thunk whose Python callable raises must hand the exception to the jitload
//! wrapper whose call led to the callback, on the same thread, so that the wrapper re-raises
//! it; with no such wrapper the exception goes to `sys.unraisablehook`. The handshake is a
//! per-thread association kept in one list, protected by the GIL:
//!
//! * every wrapper entry, holding the GIL, pushes its [`CallFrame`] (on its own stack) on
//!   the list at [`CALL_TOP`], recording the thread's identity (the thread pointer, `%fs:0`,
//!   one load), and unlinks it before returning (still holding the GIL: a wrapper that
//!   releases the GIL around the call takes it back first). The common case is "it is on
//!   top" (a compare and a store); frames of other threads can interleave when the GIL
//!   changes hands during a call, and are then unlinked from the middle ([`unlink`]).
//! * a thunk that fails (holding the GIL, its own or one it took with `PyGILState_Ensure`)
//!   looks for the newest frame of its own thread ([`frame_for_thread`]). If there is one,
//!   the first exception is stored in its `pending` slot (later ones while it is pending are
//!   dropped, like the first error of a C loop) and the native code gets the declared error
//!   value; the wrapper raises the pending exception when the native call returns, whatever
//!   the call returned. Otherwise the exception goes to `sys.unraisablehook`.
//!
//! Every frame on the list is live (pushed and unlinked by its own, running, entry), so the
//! search never touches a dead stack. The cost on the call path is four loads/stores.

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Python -> native wrapper frame (C `CallFrame`).
#[repr(C)]
pub struct CallFrame {
    pub i: [u64; 6],
    pub f: [u64; 8],
    pub stack: [u64; 16],
    pub ret_i: u64,
    pub ret_d: u64,
    pub self_: *mut libc::c_void,
    pub prev: *mut CallFrame,
    pub thread: usize,
    /// A normalized exception (a reference) raised by a callback during the call.
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
    pub argv: [*mut libc::c_void; 1 + MAX_CALLBACK_ARGS],
    pub nboxed: i64,
    pub result: *mut libc::c_void,
    pub thread: usize,
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
    /// Calls inside the thunk's code now (changed by the stencils with the GIL held).
    pub active: i64,
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
pub const MAX_CALLBACK_ARGS: usize = 14;
/// `sizeof(Py_buffer)` on 64-bit CPython.
pub const PY_BUFFER_SIZE: usize = 80;

const _: () = {
    assert!(std::mem::offset_of!(CallFrame, ret_i) == 240);
    assert!(std::mem::offset_of!(CallFrame, self_) == 256);
    assert!(std::mem::offset_of!(CallFrame, prev) == 264);
    assert!(std::mem::offset_of!(CallFrame, thread) == 272);
    assert!(std::mem::offset_of!(CallFrame, pending) == 280);
    assert!(std::mem::offset_of!(CallFrame, bufs) == 296);
    assert!(std::mem::size_of::<CallFrame>() == 312);
    assert!(std::mem::offset_of!(CbFrame, argv) == 112);
    assert!(std::mem::offset_of!(CbFrame, nboxed) == 232);
    assert!(std::mem::size_of::<CbFrame>() == 256);
    assert!(std::mem::size_of::<ThunkCell>() == 32);
};

/// Byte offset of integer argument register `k` in a [`CallFrame`] / [`CbFrame`].
pub const fn int_slot(k: usize) -> u64 {
    (8 * k) as u64
}
/// Byte offset of SSE argument register `k`.
pub const fn sse_slot(k: usize) -> u64 {
    (48 + 8 * k) as u64
}
/// Byte offset of memory argument `k` in a [`CallFrame`].
pub const fn stack_slot(k: usize) -> u64 {
    (112 + 8 * k) as u64
}

/// The newest running wrapper frame (see the module docs). Touched only with the GIL held.
pub static CALL_TOP: AtomicPtr<CallFrame> = AtomicPtr::new(ptr::null_mut());

/// This thread's identity as the stencils record it: the thread pointer.
#[inline]
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

/// Removes `frame` from the list wherever it is (the entry's slow path, when frames of other
/// threads were pushed after it).
///
/// # Safety
/// The GIL is held and every frame on the list is live.
pub unsafe extern "C" fn unlink(frame: *mut CallFrame) {
    let mut p = CALL_TOP.load(Ordering::Relaxed);
    if p == frame {
        // SAFETY: frame is live (the caller's own).
        CALL_TOP.store(unsafe { (*frame).prev }, Ordering::Relaxed);
        return;
    }
    while !p.is_null() {
        // SAFETY: every frame on the list is live (caller's contract).
        let next = unsafe { (*p).prev };
        if next == frame {
            // SAFETY: as above.
            unsafe { (*p).prev = (*frame).prev };
            return;
        }
        p = next;
    }
}

/// The newest running wrapper frame of the thread `thread`, if any.
///
/// # Safety
/// The GIL is held and every frame on the list is live.
pub unsafe fn frame_for_thread(thread: usize) -> Option<*mut CallFrame> {
    let mut p = CALL_TOP.load(Ordering::Relaxed);
    while !p.is_null() {
        // SAFETY: every frame on the list is live (caller's contract).
        let frame = unsafe { &*p };
        if frame.thread == thread {
            return Some(p);
        }
        p = frame.prev;
    }
    None
}
