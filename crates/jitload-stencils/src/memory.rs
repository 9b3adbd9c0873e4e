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
//!
//! Small blocks share pages (see "pooled code pages" below).

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

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
        Ok(CodeMemory { base: this.rx, len: this.len, strategy: this.strategy, page: 0 })
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
    /// The pooled page holding the block, or 0 for a mapping of its own.
    page: usize,
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
        if self.page != 0 {
            release_pooled(self.page);
            return;
        }
        // SAFETY: our mapping; the owner guarantees no code runs in it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

// ---- pooled code pages ------------------------------------------------------------------
//
// A wrapper's code is a few hundred bytes; a page each would cost 4 KiB of memory (and a
// TLB entry) per wrapper. With the mprotect strategy, small blocks share pages:
//
// * the first block of a page is written into a fresh read+write page, which is then made
//   read+execute (as for a block of its own);
// * a later block of the same page is never written in place (code in that page may be
//   running on another thread): a fresh read+write page receives a copy of the page and the
//   new block, is made read+execute, and `mremap(MREMAP_FIXED)` moves it over the old page
//   in one step. The bytes of every block already there are the same, so code running in
//   the page (or a thread faulting on it during the move, which waits for the move under
//   the kernel's mmap lock) sees no change. No mapping is ever writable and executable.
// * each page counts its live blocks; when the last one goes (and the page is no longer
//   the one being filled) the page is unmapped.
//
// Blocks larger than half a page, and every block under the dual-mapping strategy (whose
// writable views must not alias running code), keep mappings of their own.
// `JITLOAD_STENCIL_POOL=0` turns pooling off (for measurements).

struct Pool {
    /// The page being filled (0: none) and how many bytes of it are used.
    open: usize,
    used: usize,
    /// Live blocks per pooled page.
    live: BTreeMap<usize, usize>,
    /// Read+write pages mapped ahead (one mmap for many fresh pages): the next one and how
    /// many are left.
    spare: usize,
    spare_pages: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { open: 0, used: 0, live: BTreeMap::new(), spare: 0, spare_pages: 0 });

/// Alignment of a block inside a pooled page: a cache line, so that a block's instructions
/// fall on cache-line and 32-byte fetch boundaries the same way wherever it is placed (with
/// 16, the same wrapper measured up to 10 % slower or faster depending on its offset).
const BLOCK_ALIGN: usize = 64;
/// Fresh pages mapped at once.
const SPARE_PAGES: usize = 32;

impl Pool {
    /// A fresh, zero-filled, read+write page (from the spare run, mapped ahead).
    fn fresh_page(&mut self, page: usize) -> io::Result<Writable> {
        if self.spare_pages == 0 {
            // SAFETY: an anonymous private mapping with no address hint; checked. Populated
            // in this one call rather than by a page fault per page.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page * SPARE_PAGES,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            self.spare = p as usize;
            self.spare_pages = SPARE_PAGES;
        }
        let p = self.spare as *mut u8;
        self.spare += page;
        self.spare_pages -= 1;
        Ok(Writable { rw: p, rx: p, len: page, strategy: Strategy::Mprotect })
    }
}

fn pooling() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("JITLOAD_STENCIL_POOL").as_deref() != Ok("0"))
}

/// Why [`place`] gave no block.
pub enum PlaceError<E> {
    /// `fill` failed; nothing was mapped.
    Fill(E),
    /// The host refused mprotect to executable: the process now dual-maps; place again.
    Retry,
    Memory(io::Error),
}

/// Places `len` bytes of code: `fill(address, bytes)` writes the code that will run at
/// `address` into `bytes` (zero-filled, not yet executable); the result is sealed.
pub fn place<T, E>(len: usize, mut fill: impl FnMut(u64, &mut [u8]) -> Result<T, E>) -> Result<(CodeMemory, T), PlaceError<E>> {
    let page = page_size();
    if strategy() == Strategy::Mprotect && len <= page / 2 && pooling() {
        return place_pooled(len, page, fill);
    }
    let mut mem = Writable::new(len).map_err(PlaceError::Memory)?;
    let address = mem.address();
    let value = fill(address, &mut mem.bytes()[..len]).map_err(PlaceError::Fill)?;
    match mem.seal() {
        Ok(memory) => Ok((memory, value)),
        Err(None) => Err(PlaceError::Retry),
        Err(Some(e)) => Err(PlaceError::Memory(e)),
    }
}

fn place_pooled<T, E>(len: usize, page: usize, mut fill: impl FnMut(u64, &mut [u8]) -> Result<T, E>) -> Result<(CodeMemory, T), PlaceError<E>> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let offset = pool.used.next_multiple_of(BLOCK_ALIGN);
    let append = pool.open != 0 && offset + len <= page;
    let fresh = pool.fresh_page(page).map_err(PlaceError::Memory)?;
    let target = if append { pool.open } else { fresh.rx as usize };
    let at = if append { offset } else { 0 };
    // SAFETY: fresh is our read+write mapping of `page` bytes.
    let bytes = unsafe { std::slice::from_raw_parts_mut(fresh.rw, page) };
    if append {
        // SAFETY: the open page is our readable (r-x) mapping of `page` bytes.
        let old = unsafe { std::slice::from_raw_parts(pool.open as *const u8, pool.used) };
        bytes[..pool.used].copy_from_slice(old);
    }
    let value = fill((target + at) as u64, &mut bytes[at..at + len]).map_err(PlaceError::Fill)?;
    let sealed = match fresh.seal() {
        Ok(sealed) => sealed,
        Err(None) => return Err(PlaceError::Retry),
        Err(Some(e)) => return Err(PlaceError::Memory(e)),
    };
    let sealed = std::mem::ManuallyDrop::new(sealed);
    if append {
        // SAFETY: moves our sealed page over the open page (ours, same size, same bytes
        // where blocks live); the source mapping ceases to exist.
        let moved = unsafe {
            libc::mremap(sealed.base.cast(), page, page, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, pool.open as *mut libc::c_void)
        };
        if moved == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            drop(std::mem::ManuallyDrop::into_inner(sealed));
            return Err(PlaceError::Memory(err));
        }
    } else {
        let old = std::mem::replace(&mut pool.open, target);
        if old != 0 && pool.live.get(&old) == Some(&0) {
            pool.live.remove(&old);
            // SAFETY: a pooled page of ours with no live block: nothing runs in it.
            unsafe { libc::munmap(old as *mut libc::c_void, page) };
        }
    }
    pool.used = at + len;
    *pool.live.entry(target).or_insert(0) += 1;
    let memory = CodeMemory { base: (target + at) as *mut u8, len, strategy: Strategy::Mprotect, page: target };
    Ok((memory, value))
}

/// A pooled block died: its page is unmapped once it holds no live block and is not open.
fn release_pooled(page: usize) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(n) = pool.live.get_mut(&page) else { return };
    *n -= 1;
    if *n == 0 && pool.open != page {
        pool.live.remove(&page);
        // SAFETY: a pooled page of ours with no live block: nothing runs in it.
        unsafe { libc::munmap(page as *mut libc::c_void, page_size()) };
    }
}

/// Pooled pages mapped now and live blocks in them (for tests and measurements).
pub fn pool_stats() -> (usize, usize) {
    let pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let mut pages = pool.live.len();
    if pool.open != 0 && !pool.live.contains_key(&pool.open) {
        pages += 1;
    }
    (pages, pool.live.values().sum())
}
