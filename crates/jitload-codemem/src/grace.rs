//! Deferred freeing: code that a call may still be running is freed only after that call
//! returns (epoch-based reclamation).
//!
//! A global epoch counter advances each time something is retired. A thread entering a call
//! through the Python API publishes the epoch it saw in its own slot (a thread-local, so the
//! guard around every call costs a few instructions and one fence, with no lock and no
//! allocation); leaving clears it. An item retired in epoch `e` ("free this module's code",
//! after the code was unlinked) runs once no thread is inside a call that began in epoch `e`
//! or earlier. Calls that begin later cannot reach the item: it was unlinked before the
//! epoch advanced. Nested calls keep the outermost call's epoch.
//!
//! Items run where reclamation is attempted: right after retiring (if no call holds them),
//! and when a thread leaves its outermost call while items are waiting ([`pending`]).
//! The domain is process-wide: a call into one session's library may run another's code.
//!
//! Why fences: entering stores the slot, then a `SeqCst` fence, then reads code pointers;
//! reclaiming advances the epoch (`SeqCst`), fences, then reads every slot. Either the
//! reclaimer sees the slot, or the entering thread's reads come after the unlink. The
//! entering side's fence is the expensive part of a call (a locked instruction, ~20
//! cycles), so where the kernel offers it the fence is asymmetric ([`readers_fence`]): the
//! reclaimer runs `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`, which makes every running
//! thread of the process execute a full barrier, and entering needs only a compiler barrier
//! (the scheme of userspace RCU's membarrier flavour).

use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

type Retired = Box<dyn FnOnce() + Send>;

/// `u64::MAX`: the thread is not inside a call.
const IDLE: u64 = u64::MAX;
/// Bit 0 of a thread's state word: its epoch word is registered in [`SLOTS`].
const REGISTERED: u64 = 1;
/// The state word counts calls in bits 1-63: one call adds this (so "registered, in no
/// call" is the single value REGISTERED, which code comparing with it inline can use).
const ONE_CALL: u64 = 2;

static EPOCH: AtomicU64 = AtomicU64::new(0);
/// How many retired items wait (read on every call's exit, so kept outside the lock).
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// Addresses of the registered threads' epoch words.
static SLOTS: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// Retired items in epoch order (each push takes a new, larger epoch under the lock).
static RETIRED: Mutex<VecDeque<(u64, Retired)>> = Mutex::new(VecDeque::new());

// Each thread's state: three words of initial-exec TLS (a fixed offset from the thread
// pointer), because Rust's thread-locals in a shared library go through `__tls_get_addr`
// (~11 instructions an access, three accesses a call). Word 0: call depth * ONE_CALL |
// REGISTERED;
// word 1: the epoch the outermost current call began in, or IDLE (0 before the first call,
// when the thread is not registered, so never read); word 2: [`CALL_ERROR_FLAG`].
//
// The layout is a contract with the wrapper stencils, which inline `enter`/`exit`
// (jitload-stencils' stencils.h, "the engine's epoch guard"; values in [`inline`], checked
// by this module's tests): words at byte 0, 8 and 16 of `%fs:offset`, the bit and the
// values above, EPOCH and PENDING as plain 64-bit words.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".pushsection .tbss.jitload_grace_words,\"awT\",@nobits",
    ".p2align 3",
    ".type jitload_grace_words, @object",
    ".size jitload_grace_words, 24",
    "jitload_grace_words:",
    ".zero 24",
    ".popsection",
    ".pushsection .text.jitload_grace_tls_offset,\"ax\",@progbits",
    ".globl jitload_grace_tls_offset",
    ".hidden jitload_grace_tls_offset",
    ".type jitload_grace_tls_offset, @function",
    ".p2align 4",
    "jitload_grace_tls_offset:",
    "movq jitload_grace_words@GOTTPOFF(%rip), %rax",
    "ret",
    ".size jitload_grace_tls_offset, .-jitload_grace_tls_offset",
    ".popsection",
    options(att_syntax)
);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
extern "C" {
    /// The words' offset from the thread pointer (the same in every thread).
    fn jitload_grace_tls_offset() -> isize;
}

/// This thread's three state words.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
fn words() -> *mut [AtomicU64; 3] {
    let thread_pointer: usize;
    // SAFETY: reads the TCB self-pointer at %fs:0, which every x86-64 Linux thread has.
    unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) thread_pointer, options(nostack, readonly, preserves_flags)) };
    (thread_pointer as isize).wrapping_add(tls_offset()) as *mut [AtomicU64; 3]
}

/// The words' offset from the thread pointer, asked once (initial-exec offsets are never 0).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
fn tls_offset() -> isize {
    static OFFSET: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);
    let offset = OFFSET.load(Ordering::Relaxed);
    if offset != 0 {
        return offset;
    }
    // SAFETY: a leaf function returning the constant the dynamic linker resolved for this
    // module's static TLS block; it reads only its GOT entry.
    let offset = unsafe { jitload_grace_tls_offset() };
    OFFSET.store(offset, Ordering::Relaxed);
    offset
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn words() -> *mut [AtomicU64; 3] {
    thread_local! {
        static WORDS: [AtomicU64; 3] = const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] };
    }
    WORDS.with(|w| w as *const [AtomicU64; 3] as *mut [AtomicU64; 3])
}

/// This thread's state words: only this thread writes them (other threads read word 1).
#[inline(always)]
fn state() -> &'static [AtomicU64; 3] {
    // SAFETY: the words live as long as the thread, which is all a caller on this thread
    // can observe; they are atomics, so shared references are sound.
    unsafe { &*words() }
}

/// Unregisters the thread's epoch word when the thread exits (a Rust thread-local's
/// destructor runs before the thread's static TLS block goes away).
struct Registration(usize);

impl Drop for Registration {
    fn drop(&mut self) {
        SLOTS.lock().unwrap_or_else(|e| e.into_inner()).retain(|&a| a != self.0);
        state()[0].fetch_and(!REGISTERED, Ordering::Relaxed);
    }
}

thread_local! {
    static REGISTRATION: std::cell::OnceCell<Registration> = const { std::cell::OnceCell::new() };
}

#[cold]
fn register() {
    let epoch_word = &state()[1] as *const AtomicU64 as usize;
    state()[1].store(IDLE, Ordering::Relaxed);
    SLOTS.lock().unwrap_or_else(|e| e.into_inner()).push(epoch_word);
    state()[0].fetch_or(REGISTERED, Ordering::Relaxed);
    let _ = REGISTRATION.try_with(|r| {
        r.get_or_init(move || Registration(epoch_word));
    });
}

/// The bit of word 2 saying a stub call on this thread recorded an error
/// (`stubs::set_call_error`); lets the wrapper's exit skip the error lookup.
pub const CALL_ERROR_FLAG: u64 = 1;

/// Records that this thread has (or no longer has) a stub-call error waiting.
pub fn set_call_error_flag(set: bool) {
    state()[2].store(u64::from(set) * CALL_ERROR_FLAG, Ordering::Relaxed);
}

/// Whether this thread has a stub-call error waiting.
#[inline]
pub fn call_error_flag() -> bool {
    state()[2].load(Ordering::Relaxed) & CALL_ERROR_FLAG != 0
}

/// The fence modes ([`readers_fence`]): not decided yet, readers fence, the reclaimer does.
const MODE_UNKNOWN: u8 = 0;
const MODE_READERS_FENCE: u8 = 1;
const MODE_MEMBARRIER: u8 = 2;
static FENCE_MODE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(MODE_UNKNOWN);

/// Whether entering a call must execute a full fence after publishing its epoch: false when
/// the reclaimer can make every thread fence instead (`membarrier`'s private expedited
/// command, registered here on the first ask; Linux 4.14+). Decided once per process, before
/// any call relies on it: code that inlines [`enter`] asks when it is built.
pub fn readers_fence() -> bool {
    match FENCE_MODE.load(Ordering::Acquire) {
        MODE_UNKNOWN => decide_fence_mode(),
        mode => mode == MODE_READERS_FENCE,
    }
}

#[cold]
fn decide_fence_mode() -> bool {
    static DECIDE: std::sync::Once = std::sync::Once::new();
    DECIDE.call_once(|| {
        let mode = if membarrier::register() { MODE_MEMBARRIER } else { MODE_READERS_FENCE };
        FENCE_MODE.store(mode, Ordering::Release);
    });
    FENCE_MODE.load(Ordering::Acquire) == MODE_READERS_FENCE
}

/// The kernel's process-wide barrier (membarrier(2)).
mod membarrier {
    #[cfg(target_os = "linux")]
    const QUERY: libc::c_long = 0;
    #[cfg(target_os = "linux")]
    const PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    #[cfg(target_os = "linux")]
    const REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    /// Registers the process for [`barrier`]; false where the kernel (or a seccomp filter)
    /// does not offer it.
    #[cfg(target_os = "linux")]
    pub fn register() -> bool {
        // SAFETY: membarrier takes plain integers; QUERY and REGISTER change no memory.
        let supported = unsafe { libc::syscall(libc::SYS_membarrier, QUERY, 0, 0) };
        // SAFETY: as above.
        supported >= 0
            && supported & PRIVATE_EXPEDITED != 0
            && unsafe { libc::syscall(libc::SYS_membarrier, REGISTER_PRIVATE_EXPEDITED, 0, 0) } == 0
    }

    /// Every running thread of the process executes a full memory barrier before this returns.
    #[cfg(target_os = "linux")]
    pub fn barrier() -> bool {
        // SAFETY: as above; the process registered (register() returned true).
        unsafe { libc::syscall(libc::SYS_membarrier, PRIVATE_EXPEDITED, 0, 0) == 0 }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn register() -> bool {
        false
    }

    #[cfg(not(target_os = "linux"))]
    pub fn barrier() -> bool {
        false
    }
}

/// Marks the start of a call on this thread; [`exit`] ends it (calls nest).
#[inline]
pub fn enter() {
    let words = state();
    let mut s = words[0].load(Ordering::Relaxed);
    if s & REGISTERED == 0 {
        register();
        s = words[0].load(Ordering::Relaxed);
    }
    if s == REGISTERED {
        words[1].store(EPOCH.load(Ordering::Relaxed), Ordering::Relaxed);
        if FENCE_MODE.load(Ordering::Relaxed) == MODE_MEMBARRIER {
            // The reclaimer's membarrier is the other half (see the module's notes).
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
    words[0].store(s + ONE_CALL, Ordering::Relaxed);
}

/// Ends this thread's innermost call. Returns whether retired items are waiting that this
/// exit may have released: the caller then calls [`reclaim`] (where it may run them).
#[inline]
pub fn exit() -> bool {
    let words = state();
    let s = words[0].load(Ordering::Relaxed);
    if s < ONE_CALL {
        return false; // not in a call (a ticket dropped twice): nothing to end
    }
    words[0].store(s - ONE_CALL, Ordering::Relaxed);
    if s - ONE_CALL != REGISTERED {
        return false;
    }
    words[1].store(IDLE, Ordering::Release);
    PENDING.load(Ordering::Relaxed) > 0
}

/// Whether retired items are waiting.
pub fn pending() -> bool {
    PENDING.load(Ordering::Relaxed) > 0
}

/// Whether this thread is inside a call.
pub fn in_call() -> bool {
    state()[0].load(Ordering::Relaxed) >= ONE_CALL
}

/// What code that inlines [`enter`] and [`exit`] needs (the wrapper stencils' epoch guard,
/// stencils.h): it must do exactly what they do, on the same words.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod inline {
    use super::*;

    /// Byte offsets of the three words from the thread's words' start.
    pub const STATE_WORD: usize = 0;
    pub const EPOCH_WORD: usize = 8;
    pub const ERROR_WORD: usize = 16;
    /// Bit 0 of the state word: the thread is registered (else call [`enter`]).
    pub const REGISTERED: u64 = super::REGISTERED;
    /// What one call adds to the state word.
    pub const ONE_CALL: u64 = super::ONE_CALL;
    /// The epoch word's value outside a call.
    pub const IDLE: u64 = super::IDLE;
    /// The error word's bit: a stub-call error waits.
    pub const CALL_ERROR: u64 = super::CALL_ERROR_FLAG;

    /// Whether inline code must fence after publishing its epoch ([`super::readers_fence`]).
    pub fn readers_fence() -> bool {
        super::readers_fence()
    }

    /// The words' offset from the thread pointer (`%fs:0`), the same in every thread.
    pub fn tls_offset() -> isize {
        super::tls_offset()
    }

    /// The address of the global epoch (a `u64`).
    pub fn epoch_address() -> usize {
        &EPOCH as *const AtomicU64 as usize
    }

    /// The address of the count of waiting items (a `u64`).
    pub fn pending_address() -> usize {
        &PENDING as *const AtomicUsize as usize
    }
}

/// Runs `item` once every call in progress now has returned (at once if none is).
pub fn retire(item: impl FnOnce() + Send + 'static) {
    {
        let mut retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = EPOCH.fetch_add(1, Ordering::SeqCst);
        retired.push_back((epoch, Box::new(item)));
        PENDING.fetch_add(1, Ordering::SeqCst);
    }
    reclaim();
}

/// Runs the retired items no call in progress can still be running (outside every lock:
/// they may retire more, or enter calls).
pub fn reclaim() {
    fence(Ordering::SeqCst);
    if !readers_fence() && !membarrier::barrier() {
        // Cannot happen once registered; if it did, the slots could be stale: free nothing
        // (the items wait for the next attempt).
        return;
    }
    let oldest_in_progress = SLOTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        // SAFETY: a registered thread's epoch word, alive until the thread unregisters it
        // under this lock.
        .map(|&word| unsafe { &*(word as *const AtomicU64) }.load(Ordering::Acquire))
        .min()
        .unwrap_or(IDLE);
    let ready: Vec<Retired> = {
        let mut retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
        let count = retired.iter().take_while(|(epoch, _)| *epoch < oldest_in_progress).count();
        PENDING.fetch_sub(count, Ordering::SeqCst);
        retired.drain(..count).map(|(_, item)| item).collect()
    };
    for item in ready {
        item();
    }
}

/// A call in progress on this thread, ended when dropped (not `Send`: it must end on the
/// thread that began it). Dropping it may run retired items.
pub struct CallScope {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl CallScope {
    pub fn begin() -> CallScope {
        enter();
        CallScope { _not_send: std::marker::PhantomData }
    }
}

impl Drop for CallScope {
    fn drop(&mut self) {
        if exit() {
            reclaim();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The domain is process-wide: tests that assert when items run take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn counter() -> (std::sync::Arc<AtomicUsize>, impl Fn() -> Box<dyn FnOnce() + Send>) {
        let ran = std::sync::Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        (ran, move || {
            let r = r.clone();
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
        })
    }

    #[test]
    fn retired_items_wait_for_earlier_calls() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (ran, item) = counter();
        retire(item());
        assert_eq!(ran.load(Ordering::SeqCst), 1, "nothing in flight: runs at once");

        let call = CallScope::begin();
        retire(item());
        let nested = CallScope::begin();
        retire(item());
        assert_eq!(ran.load(Ordering::SeqCst), 1, "a call in flight holds both items");
        drop(nested);
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the outer call still holds both");
        drop(call);
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_call_on_another_thread_holds_items_until_it_returns() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (ran, item) = counter();
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (leave_tx, leave_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let call = CallScope::begin();
            entered_tx.send(()).unwrap();
            leave_rx.recv().unwrap();
            drop(call);
        });
        entered_rx.recv().unwrap();
        retire(item());
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the other thread's call may run it");
        let later = CallScope::begin(); // began after the retirement: does not hold it
        leave_tx.send(()).unwrap();
        other.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1, "released when the other call returned");
        drop(later);
    }

    /// The words, bits and values the wrapper stencils' inline guard relies on (stencils.h),
    /// read through the addresses and offset the stencils are patched with.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn the_inline_guard_contract_holds() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assert_eq!((inline::STATE_WORD, inline::EPOCH_WORD, inline::ERROR_WORD), (0, 8, 16));
        assert_eq!((inline::REGISTERED, inline::ONE_CALL, inline::IDLE, inline::CALL_ERROR), (1, 2, u64::MAX, 1));
        assert_eq!(std::mem::size_of::<AtomicUsize>(), 8, "PENDING is read as a 64-bit word");
        let thread_pointer: usize;
        // SAFETY: reads the TCB self-pointer at %fs:0, which every x86-64 Linux thread has.
        unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) thread_pointer, options(nostack, readonly, preserves_flags)) };
        let base = (thread_pointer as isize + inline::tls_offset()) as *const u64;
        assert!(i32::try_from(inline::tls_offset()).is_ok(), "a 32-bit displacement");
        // SAFETY: this thread's words (`base`) and the two globals, read as the stencils read them.
        let read = |k: usize| unsafe { std::ptr::read_volatile(base.add(k / 8)) };
        // SAFETY: as above.
        let global = |address: usize| unsafe { std::ptr::read_volatile(address as *const u64) };
        let call = CallScope::begin();
        assert_eq!(read(inline::STATE_WORD), inline::REGISTERED + inline::ONE_CALL, "registered, depth 1");
        let began = read(inline::EPOCH_WORD);
        assert!(began <= global(inline::epoch_address()), "the epoch the call began in");
        let nested = CallScope::begin();
        assert_eq!(read(inline::STATE_WORD), inline::REGISTERED + 2 * inline::ONE_CALL);
        assert_eq!(read(inline::EPOCH_WORD), began, "nested calls keep the outermost epoch");
        retire(|| {});
        assert!(global(inline::epoch_address()) > began, "retiring advanced the epoch");
        assert!(global(inline::pending_address()) > 0, "the item waits for this call");
        drop(nested);
        drop(call);
        assert_eq!(read(inline::STATE_WORD), inline::REGISTERED);
        assert_eq!(read(inline::EPOCH_WORD), inline::IDLE);
        set_call_error_flag(true);
        assert_eq!(read(inline::ERROR_WORD), inline::CALL_ERROR);
        set_call_error_flag(false);
        assert_eq!(read(inline::ERROR_WORD), 0);
    }

    #[test]
    fn many_retirements_in_one_call() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (ran, item) = counter();
        let call = CallScope::begin();
        for _ in 0..20_000 {
            retire(item());
        }
        drop(call);
        assert_eq!(ran.load(Ordering::SeqCst), 20_000);
    }
}
