//! Deferred freeing: code that a call may still be running is freed only after that call
//! returns (epoch-based reclamation).
//!
//! A global epoch counter advances each time something is retired. A thread entering a call
//! through the Python API publishes the epoch it saw in its own slot (a thread-local, so the
//! guard around every call costs a few instructions and one fence, with no lock and no
//! allocation); leaving clears it. An item retired in epoch `e` ("free this module's code",
//! after the code was unlinked) runs once no thread is inside a call that began in epoch `e`
//! or earlier. Calls that begin later cannot reach the item: it was unlinked before the
//! epoch advanced. Nested calls keep the outermost call's epoch: entering returns a
//! [`Token`], the thread's epoch word as it was, and leaving stores it back (so a nested
//! call leaves the word as it found it, and the outermost one leaves it idle). Calls on a
//! thread end in the reverse order they began (the callers bracket them).
//!
//! Items run where reclamation is attempted: right after retiring (if no call holds them),
//! and when a thread leaves its outermost call while items wait for it: the reclaimer sets a
//! wake bit in the word every exit reads anyway (the stub-error word), so a call's exit
//! checks one word. The domain is process-wide: a call into one session's library may run
//! another's code.
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

/// The epoch word of a registered thread outside any call.
const IDLE: u64 = u64::MAX;
/// The epoch word of a thread not registered yet (the TLS block's initial zero); epochs
/// start at 1, so no call's epoch is 0.
const UNREGISTERED: u64 = 0;
/// Bit 0 of a thread's state word: its epoch word is registered in [`SLOTS`].
const REGISTERED: u64 = 1;
/// The flags word: bit 0, a stub call on this thread recorded an error; bit 1, retired items
/// wait for this thread's call (set by the reclaimer, cleared by the thread's outermost
/// exit); bits 2-63 count the wrapper frames of this thread holding a callback's exception
/// (the wrapper stencils' handshake, jitload-stencils' frames.rs: the epoch-guarded entries
/// test this word on exit instead of their frame).
pub const CALL_ERROR_FLAG: u64 = 1;
const WAKE_FLAG: u64 = 2;
const ONE_CALLBACK_ERROR: u64 = 4;

static EPOCH: AtomicU64 = AtomicU64::new(1);
/// How many retired items wait.
static PENDING: AtomicUsize = AtomicUsize::new(0);
/// Addresses of the registered threads' epoch words.
static SLOTS: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// Retired items in epoch order (each push takes a new, larger epoch under the lock).
static RETIRED: Mutex<VecDeque<(u64, Retired)>> = Mutex::new(VecDeque::new());

// Each thread's state: three words of initial-exec TLS (a fixed offset from the thread
// pointer), because Rust's thread-locals in a shared library go through `__tls_get_addr`
// (~11 instructions an access, two accesses a call). Word 0: REGISTERED while the thread's
// epoch word is in SLOTS; word 1: the epoch the outermost current call began in, IDLE
// outside calls, UNREGISTERED (0) before the first call; word 2: the flags (CALL_ERROR_FLAG,
// WAKE_FLAG), the one word a call's exit tests.
//
// The layout is a contract with the wrapper stencils, which inline `enter`/`exit`
// (jitload-stencils' stencils.h, "the engine's epoch guard"; values in [`inline`], checked
// by this module's tests): words at byte 8 and 16 of `%fs:offset`, the values above, EPOCH
// as a plain 64-bit word.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
std::arch::global_asm!(
    ".pushsection .tbss.jitload_grace_words,\"awT\",@nobits",
    // Global (but hidden: this library's own) so that inline assembly inlined into other
    // crates of the library can name it.
    ".globl jitload_grace_words",
    ".hidden jitload_grace_words",
    ".p2align 3",
    ".type jitload_grace_words, @object",
    ".size jitload_grace_words, 24",
    "jitload_grace_words:",
    ".zero 24",
    ".popsection",
    options(att_syntax)
);

/// This thread's three state words.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
fn words() -> *mut [AtomicU64; 3] {
    let thread_pointer: usize;
    // SAFETY: reads the TCB self-pointer at %fs:0, which every x86-64 Linux thread has.
    unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) thread_pointer, options(nostack, readonly, preserves_flags)) };
    (thread_pointer as isize).wrapping_add(tls_offset()) as *mut [AtomicU64; 3]
}

/// The words' offset from the thread pointer: the constant the dynamic linker resolved for
/// this library's static TLS block, read from its GOT entry (initial-exec; the same in
/// every thread).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[inline(always)]
fn tls_offset() -> isize {
    let offset: isize;
    // SAFETY: loads the GOT entry of the words' TLS offset, which the dynamic linker filled
    // when it loaded this library; no other memory is touched.
    unsafe { std::arch::asm!("movq jitload_grace_words@GOTTPOFF(%rip), {}", out(reg) offset, options(att_syntax, nostack, pure, readonly, preserves_flags)) };
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
        // A call made later on this thread (another destructor) registers again.
        state()[1].store(UNREGISTERED, Ordering::Relaxed);
    }
}

thread_local! {
    static REGISTRATION: std::cell::OnceCell<Registration> = const { std::cell::OnceCell::new() };
}

#[cold]
fn register() {
    let epoch_word = &state()[1] as *const AtomicU64 as usize;
    state()[1].store(IDLE, Ordering::Relaxed);
    // Listed only with a Registration, whose destructor unlists the word before the thread's
    // TLS goes away: a call made after the thread's Rust thread-locals were destroyed (from a
    // C thread's own TLS destructor: a callback thunk during thread exit) runs unlisted,
    // since the reclaimer would otherwise read the word after the thread is gone.
    let recorded = REGISTRATION
        .try_with(|r| {
            r.get_or_init(move || Registration(epoch_word));
        })
        .is_ok();
    if recorded {
        SLOTS.lock().unwrap_or_else(|e| e.into_inner()).push(epoch_word);
        state()[0].fetch_or(REGISTERED, Ordering::Relaxed);
    }
}

/// Records that this thread has (or no longer has) a stub-call error waiting (the
/// reclaimer may set the wake bit of the same word at any time: read-modify-write).
pub fn set_call_error_flag(set: bool) {
    if set {
        state()[2].fetch_or(CALL_ERROR_FLAG, Ordering::Relaxed);
    } else {
        state()[2].fetch_and(!CALL_ERROR_FLAG, Ordering::Relaxed);
    }
}

/// Whether this thread has a stub-call error waiting.
#[inline]
pub fn call_error_flag() -> bool {
    state()[2].load(Ordering::Relaxed) & CALL_ERROR_FLAG != 0
}

/// Counts a wrapper frame of this thread that now holds a callback's exception.
pub fn callback_error_stored() {
    state()[2].fetch_add(ONE_CALLBACK_ERROR, Ordering::Relaxed);
}

/// A wrapper frame's callback exception was taken (raised): one fewer.
pub fn callback_error_taken() {
    state()[2].fetch_sub(ONE_CALLBACK_ERROR, Ordering::Relaxed);
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
        supported >= 0 && supported & PRIVATE_EXPEDITED != 0 && unsafe { libc::syscall(libc::SYS_membarrier, REGISTER_PRIVATE_EXPEDITED, 0, 0) } == 0
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

/// What [`enter`] found in the thread's epoch word, for [`exit`] to put back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(pub u64);

/// Marks the start of a call on this thread; [`exit`] with the token ends it. Calls nest
/// (the outermost call's epoch stays published) and must end in reverse order.
#[inline]
pub fn enter() -> Token {
    let words = state();
    let mut old = words[1].load(Ordering::Relaxed);
    if old == UNREGISTERED {
        register();
        old = IDLE;
    }
    if old == IDLE {
        words[1].store(EPOCH.load(Ordering::Relaxed), Ordering::Relaxed);
        if FENCE_MODE.load(Ordering::Relaxed) == MODE_MEMBARRIER {
            // The reclaimer's membarrier is the other half (see the module's notes).
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
    Token(old)
}

/// Ends the call `token` began. Returns whether the slow exit must run: a stub-call error
/// waits ([`call_error_flag`]), or retired items wait for this thread ([`exit_slow`]).
#[inline]
pub fn exit(token: Token) -> bool {
    let words = state();
    words[1].store(token.0, Ordering::Release);
    words[2].load(Ordering::Relaxed) != 0
}

/// After [`exit`] returned true: whether this was the outermost call and retired items
/// waited for it (the wake bit is cleared): the caller then runs [`reclaim`].
pub fn take_wake() -> bool {
    let words = state();
    if in_call() || words[2].load(Ordering::Relaxed) & WAKE_FLAG == 0 {
        return false;
    }
    words[2].fetch_and(!WAKE_FLAG, Ordering::Relaxed);
    true
}

/// Whether retired items are waiting.
pub fn pending() -> bool {
    PENDING.load(Ordering::Relaxed) > 0
}

/// Whether this thread is inside a call.
pub fn in_call() -> bool {
    let epoch = state()[1].load(Ordering::Relaxed);
    epoch != IDLE && epoch != UNREGISTERED
}

/// What code that inlines [`enter`] and [`exit`] needs (the wrapper stencils' epoch guard,
/// stencils.h): it must do exactly what they do, on the same words.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod inline {
    use super::*;

    /// Byte offsets of the words the stencils use from the thread's words' start.
    pub const EPOCH_WORD: usize = 8;
    pub const FLAGS_WORD: usize = 16;
    /// The epoch word's value outside a call.
    pub const IDLE: u64 = super::IDLE;
    /// The epoch word's value before the thread's first call (then call [`enter`]).
    pub const UNREGISTERED: u64 = super::UNREGISTERED;
    /// The flags word's bits: a stub-call error waits; retired items wait for this call.
    pub const CALL_ERROR: u64 = super::CALL_ERROR_FLAG;
    pub const WAKE: u64 = super::WAKE_FLAG;
    pub const ONE_CALLBACK_ERROR: u64 = super::ONE_CALLBACK_ERROR;

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
/// they may retire more, or enter calls). Threads whose calls hold items that still wait get
/// the wake bit, so the exit of such a call reclaims again.
pub fn reclaim() {
    loop {
        if !barrier() {
            // Cannot happen once registered; if it did, the slots could be stale: free nothing
            // (the items wait for the next attempt).
            return;
        }
        let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        let epoch_of = |word: usize| {
            // SAFETY: a word in SLOTS, whose lock is held.
            let words = unsafe { slot_words(word) };
            words[0].load(Ordering::Acquire)
        };
        let oldest_in_progress = slots.iter().map(|&w| epoch_of(w)).min().unwrap_or(IDLE);
        let (ready, newest_waiting) = {
            let mut retired = RETIRED.lock().unwrap_or_else(|e| e.into_inner());
            let count = retired.iter().take_while(|(epoch, _)| *epoch < oldest_in_progress).count();
            PENDING.fetch_sub(count, Ordering::SeqCst);
            let ready: Vec<Retired> = retired.drain(..count).map(|(_, item)| item).collect();
            (ready, retired.back().map(|(epoch, _)| *epoch))
        };
        let mut woken = Vec::new();
        if let Some(newest) = newest_waiting {
            // Every call that began in an epoch up to the newest waiting item's holds some
            // item: its outermost exit must reclaim.
            for &w in slots.iter().filter(|&&w| epoch_of(w) <= newest) {
                // SAFETY: a word in SLOTS, whose lock is held.
                let words = unsafe { slot_words(w) };
                words[1].fetch_or(WAKE_FLAG, Ordering::SeqCst);
                woken.push(w);
            }
        }
        drop(slots);
        for item in ready {
            item();
        }
        if woken.is_empty() {
            return;
        }
        // A thread may have left its call after its epoch was read and before its wake bit
        // was set, reading the flags without it. The barrier makes its exit's store visible:
        // if a woken thread is no longer in the call it was in, reclaim again.
        if !barrier() {
            return;
        }
        let slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        let newest = newest_waiting.unwrap_or(0);
        let left = woken.iter().any(|&w| {
            slots.contains(&w) && {
                // SAFETY: checked to be in SLOTS, whose lock is held.
                let words = unsafe { slot_words(w) };
                words[0].load(Ordering::Acquire) > newest
            }
        });
        drop(slots);
        if !left {
            return;
        }
    }
}

/// A registered thread's epoch word and flags word (words 1 and 2), from the epoch word's
/// address in SLOTS.
///
/// # Safety
/// `word` is in SLOTS and SLOTS' lock is held (a thread unregisters under it before its
/// words go away).
unsafe fn slot_words<'a>(word: usize) -> &'a [AtomicU64; 2] {
    // SAFETY: the caller's contract: two live, aligned words of that thread's TLS block.
    unsafe { &*(word as *const [AtomicU64; 2]) }
}

/// Orders this thread's view after every running thread's earlier stores (see the notes
/// on fences); false if the kernel refused (never once registered).
fn barrier() -> bool {
    fence(Ordering::SeqCst);
    readers_fence() || membarrier::barrier()
}

/// A call in progress on this thread, ended when dropped (not `Send`: it must end on the
/// thread that began it). Dropping it may run retired items.
pub struct CallScope {
    token: Token,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl CallScope {
    pub fn begin() -> CallScope {
        CallScope { token: enter(), _not_send: std::marker::PhantomData }
    }
}

impl Drop for CallScope {
    fn drop(&mut self) {
        if exit(self.token) && take_wake() {
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
        assert_eq!((inline::EPOCH_WORD, inline::FLAGS_WORD), (8, 16));
        assert_eq!((inline::IDLE, inline::UNREGISTERED, inline::CALL_ERROR, inline::WAKE, inline::ONE_CALLBACK_ERROR), (u64::MAX, 0, 1, 2, 4));
        let thread_pointer: usize;
        // SAFETY: reads the TCB self-pointer at %fs:0, which every x86-64 Linux thread has.
        unsafe { std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) thread_pointer, options(nostack, readonly, preserves_flags)) };
        let base = (thread_pointer as isize + inline::tls_offset()) as *const u64;
        assert!(i32::try_from(inline::tls_offset()).is_ok(), "a 32-bit displacement");
        // SAFETY: this thread's words (`base`) and the epoch, read as the stencils read them.
        let read = |k: usize| unsafe { std::ptr::read_volatile(base.add(k / 8)) };
        // SAFETY: as above.
        let global = |address: usize| unsafe { std::ptr::read_volatile(address as *const u64) };
        let call = CallScope::begin();
        assert_eq!(call.token, Token(inline::IDLE), "the outermost call found the word idle");
        let began = read(inline::EPOCH_WORD);
        assert!(began != inline::UNREGISTERED && began <= global(inline::epoch_address()), "the epoch the call began in");
        let nested = CallScope::begin();
        assert_eq!(nested.token, Token(began), "a nested call finds the outer call's epoch");
        assert_eq!(read(inline::EPOCH_WORD), began, "and keeps it");
        retire(|| {});
        assert!(global(inline::epoch_address()) > began, "retiring advanced the epoch");
        assert_eq!(read(inline::FLAGS_WORD), inline::WAKE, "the item waits for this thread's call");
        assert!(pending());
        drop(nested);
        assert!(pending(), "the nested exit leaves it to the outermost");
        drop(call);
        assert!(!pending(), "the outermost exit reclaimed");
        assert_eq!(read(inline::EPOCH_WORD), inline::IDLE);
        assert_eq!(read(inline::FLAGS_WORD), 0);
        set_call_error_flag(true);
        assert_eq!(read(inline::FLAGS_WORD), inline::CALL_ERROR);
        set_call_error_flag(false);
        assert_eq!(read(inline::FLAGS_WORD), 0);
        callback_error_stored();
        callback_error_stored();
        assert_eq!(read(inline::FLAGS_WORD), 2 * inline::ONE_CALLBACK_ERROR);
        callback_error_taken();
        callback_error_taken();
        assert_eq!(read(inline::FLAGS_WORD), 0);
    }

    /// A thread that was never registered has 0 in its epoch word (so the stencils call the
    /// host's enter), and is idle once its first call ended.
    #[test]
    fn a_new_thread_registers_on_its_first_call() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            assert_eq!(state()[1].load(Ordering::Relaxed), UNREGISTERED);
            assert!(!in_call());
            let call = CallScope::begin();
            assert!(in_call());
            assert_eq!(call.token, Token(IDLE));
            drop(call);
            assert_eq!(state()[1].load(Ordering::Relaxed), IDLE);
            assert!(!in_call());
        })
        .join()
        .unwrap();
    }

    /// A call from a thread-local destructor that runs after the registration's (as a callback
    /// thunk during a thread's exit) leaves no word of the dead thread listed.
    #[test]
    fn a_call_during_thread_exit_leaves_no_dead_word_listed() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        struct CallsOnExit;
        impl Drop for CallsOnExit {
            fn drop(&mut self) {
                drop(CallScope::begin());
            }
        }
        thread_local! {
            static CALLS_ON_EXIT: std::cell::RefCell<Option<CallsOnExit>> = const { std::cell::RefCell::new(None) };
        }
        fn listed() -> usize {
            SLOTS.lock().unwrap_or_else(|e| e.into_inner()).len()
        }
        let before = listed();
        std::thread::spawn(move || {
            // Destructors run in the reverse order of first use: this one after the
            // registration's, which the call below creates.
            CALLS_ON_EXIT.with(|c| *c.borrow_mut() = Some(CallsOnExit));
            drop(CallScope::begin());
            assert_eq!(listed(), before + 1);
        })
        .join()
        .unwrap();
        assert_eq!(listed(), before, "the exited thread's word is not listed");
        retire(|| {});
        assert!(!pending());
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
