//! Executable memory that is never writable and executable at once (W^X).
//!
//! Two strategies, chosen once per process:
//! * **mprotect** (default): map read+write, write the code, `mprotect` to read+execute.
//! * **dual mapping** (hosts whose policy forbids making written memory executable, e.g.
//!   SELinux `deny_execmem`, PaX MPROTECT): a `memfd` mapped twice, read+execute (the address
//!   the code is patched for) and read+write (where it is written); the writable view is
//!   unmapped before the code is used, so no writable alias remains.
//!
//! The first `mprotect` refused with `EACCES`/`EPERM` switches the process to dual mapping.
//! `JITLOAD_STENCIL_MEMORY=mprotect|dualmap` forces one (tests use it).

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

const AUTO: u8 = 0;
const MPROTECT: u8 = 1;
const DUALMAP: u8 = 2;

static STRATEGY: AtomicU8 = AtomicU8::new(AUTO);

/// How code memory is made executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Mprotect,
    DualMap,
}

/// The strategy in use (after the environment override and any fallback so far).
pub fn strategy() -> Strategy {
    match STRATEGY.load(Ordering::Relaxed) {
        DUALMAP => Strategy::DualMap,
        MPROTECT => Strategy::Mprotect,
        _ => {
            let chosen = match std::env::var("JITLOAD_STENCIL_MEMORY").as_deref() {
                Ok("dualmap") => DUALMAP,
                _ => MPROTECT,
            };
            let _ = STRATEGY.compare_exchange(AUTO, chosen, Ordering::Relaxed, Ordering::Relaxed);
            if STRATEGY.load(Ordering::Relaxed) == DUALMAP {
                Strategy::DualMap
            } else {
                Strategy::Mprotect
            }
        }
    }
}

/// Forces a strategy for blocks made from now on (existing blocks are unaffected).
pub fn set_strategy(strategy: Strategy) {
    STRATEGY.store(if strategy == Strategy::DualMap { DUALMAP } else { MPROTECT }, Ordering::Relaxed);
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// Memory being written: `write()` is where bytes go, `address()` where they will run.
pub struct Writable {
    rw: *mut u8,
    rx: *mut u8,
    len: usize,
    strategy: Strategy,
}

impl Writable {
    /// At least `len` bytes, page-rounded, zero-filled.
    pub fn new(len: usize) -> io::Result<Writable> {
        let page = page_size();
        let len = len.max(1).div_ceil(page) * page;
        match strategy() {
            Strategy::Mprotect => {
                // SAFETY: an anonymous private mapping with no address hint; checked.
                let p = unsafe {
                    libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
                };
                if p == libc::MAP_FAILED {
                    return Err(io::Error::last_os_error());
                }
                Ok(Writable { rw: p.cast(), rx: p.cast(), len, strategy: Strategy::Mprotect })
            }
            Strategy::DualMap => Self::dual(len),
        }
    }

    fn dual(len: usize) -> io::Result<Writable> {
        // SAFETY: a NUL-terminated name; flags are valid.
        let fd = unsafe { libc::memfd_create(c"jitload-stencils".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = (|| {
            // SAFETY: fd is our memfd.
            if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: shared mappings of our own memfd; results checked.
            let rx = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_SHARED, fd, 0) };
            if rx == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: as above.
            let rw = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
            if rw == libc::MAP_FAILED {
                let err = io::Error::last_os_error();
                // SAFETY: rx is the mapping made just above.
                unsafe { libc::munmap(rx, len) };
                return Err(err);
            }
            Ok(Writable { rw: rw.cast(), rx: rx.cast(), len, strategy: Strategy::DualMap })
        })();
        // SAFETY: the mappings keep the memfd's memory; the descriptor is no longer needed.
        unsafe { libc::close(fd) };
        result
    }

    /// The address the code will run at.
    pub fn address(&self) -> u64 {
        self.rx as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes to write.
    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: rw is a read+write mapping of len bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.rw, self.len) }
    }

    /// Makes the memory executable and read-only; `Err(None)` means this host refuses
    /// mprotect to executable and the process switched to dual mapping (write again).
    pub fn seal(self) -> Result<CodeMemory, Option<io::Error>> {
        let this = std::mem::ManuallyDrop::new(self);
        match this.strategy {
            Strategy::Mprotect => {
                // SAFETY: our mapping; from here on never written.
                if unsafe { libc::mprotect(this.rx.cast(), this.len, libc::PROT_READ | libc::PROT_EXEC) } != 0 {
                    let err = io::Error::last_os_error();
                    // SAFETY: our mapping, not yet used by anyone.
                    unsafe { libc::munmap(this.rx.cast(), this.len) };
                    if matches!(err.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
                        set_strategy(Strategy::DualMap);
                        return Err(None);
                    }
                    return Err(Some(err));
                }
            }
            Strategy::DualMap => {
                // SAFETY: the writable view; the executable one stays.
                unsafe { libc::munmap(this.rw.cast(), this.len) };
            }
        }
        Ok(CodeMemory { base: this.rx, len: this.len, strategy: this.strategy })
    }
}

impl Drop for Writable {
    fn drop(&mut self) {
        // SAFETY: our mappings (one, or two for dual mapping), never handed out.
        unsafe {
            libc::munmap(self.rw.cast(), self.len);
            if self.rx != self.rw {
                libc::munmap(self.rx.cast(), self.len);
            }
        }
    }
}

/// Read+execute memory holding patched code; unmapped when dropped (its owner guarantees
/// nothing runs it any more).
pub struct CodeMemory {
    base: *mut u8,
    len: usize,
    strategy: Strategy,
}

// SAFETY: the memory is immutable once sealed; dropping it is the owner's decision.
unsafe impl Send for CodeMemory {}
// SAFETY: as above: shared access only reads.
unsafe impl Sync for CodeMemory {}

impl CodeMemory {
    pub fn address(&self) -> u64 {
        self.base as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How this block was made executable.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The code as bytes (readable: the mapping is read+execute).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: base..base+len is our readable mapping, alive as long as self.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }
}

impl Drop for CodeMemory {
    fn drop(&mut self) {
        // SAFETY: our mapping; the owner guarantees no code runs in it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
