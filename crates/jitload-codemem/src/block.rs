//! Blocks of code: written once, sealed, unmapped when dropped. Small blocks share pages
//! (see "pooled code pages" below).

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::provider::{page_size, provider};

/// Read+execute memory holding code; unmapped when dropped (its owner guarantees nothing
/// runs it any more).
pub struct CodeMemory {
    base: *mut u8,
    len: usize,
    /// Which provider sealed it.
    sealed_by: &'static str,
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

    /// The name of the provider that sealed this block (`"mprotect"`, `"dualmap"`).
    pub fn sealed_by(&self) -> &'static str {
        self.sealed_by
    }

    /// The code as bytes (readable: the mapping is read+execute); their length is the block's.
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
        provider().unmap(self.base, self.len.div_ceil(page_size()) * page_size());
    }
}

/// Why [`place`] gave no block.
pub enum PlaceError<E> {
    /// `fill` failed; nothing stays mapped.
    Fill(E),
    Memory(io::Error),
}

/// Places `len` bytes of code: `fill(address, bytes)` writes the code that will run at
/// `address` into `bytes` (zero-filled, not yet executable); the result is sealed.
pub fn place<T, E>(len: usize, fill: impl FnOnce(u64, &mut [u8]) -> Result<T, E>) -> Result<(CodeMemory, T), PlaceError<E>> {
    let page = page_size();
    if len <= page / 2 && POOLING.load(Ordering::Relaxed) {
        return place_pooled(len, page, fill);
    }
    let size = len.max(1).div_ceil(page) * page;
    let p = provider();
    let base = p.map(size, false).map_err(PlaceError::Memory)?;
    // SAFETY: base..base+size is the read+write mapping just made, ours alone.
    let bytes = unsafe { std::slice::from_raw_parts_mut(base, size) };
    let sealed = fill(base as u64, &mut bytes[..len]).map_err(PlaceError::Fill).and_then(|value| {
        p.make_executable(base, size).map_err(PlaceError::Memory)?;
        Ok(value)
    });
    match sealed {
        Ok(value) => Ok((CodeMemory { base, len, sealed_by: provider().name(), page: 0 }, value)),
        Err(e) => {
            p.unmap(base, size);
            Err(e)
        }
    }
}

// ---- pooled code pages ------------------------------------------------------------------
//
// A wrapper's code is a few hundred bytes; a page each would cost 4 KiB of memory (and a
// TLB entry) per wrapper. Small blocks share pages:
//
// * the first block of a page is written into a fresh read+write page, which is then sealed
//   (as for a block of its own);
// * a later block of the same page is never written in place (code in that page may be
//   running on another thread): a fresh read+write page receives a copy of the page and the
//   new block, is sealed, and moved over the old page in one step (`mremap(MREMAP_FIXED)`).
//   The bytes of every block already there are the same, so code running in the page (or a
//   thread faulting on it during the move, which waits for the move under the kernel's mmap
//   lock) sees no change. No mapping is ever writable and executable, with either provider.
// * each page counts its live blocks; when the last one goes (and the page is no longer
//   the one being filled) the page is unmapped.
//
// Blocks larger than half a page keep mappings of their own.

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
static POOLING: AtomicBool = AtomicBool::new(true);

/// Alignment of a block inside a pooled page: a cache line, so that a block's instructions
/// fall on cache-line and 32-byte fetch boundaries the same way wherever it is placed (with
/// 16, the same wrapper measured up to 10 % slower or faster depending on its offset).
const BLOCK_ALIGN: usize = 64;
/// Fresh pages mapped at once.
const SPARE_PAGES: usize = 32;

/// Turns pooling of small blocks on or off (for measurements; on by default).
pub fn set_pooling(on: bool) {
    POOLING.store(on, Ordering::Relaxed);
}

impl Pool {
    /// A fresh, zero-filled, read+write page (from the spare run, mapped ahead and populated
    /// in one call rather than by a page fault per page).
    fn fresh_page(&mut self, page: usize) -> io::Result<*mut u8> {
        if self.spare_pages == 0 {
            self.spare = provider().map(page * SPARE_PAGES, true)? as usize;
            self.spare_pages = SPARE_PAGES;
        }
        let p = self.spare as *mut u8;
        self.spare += page;
        self.spare_pages -= 1;
        Ok(p)
    }
}

fn place_pooled<T, E>(len: usize, page: usize, fill: impl FnOnce(u64, &mut [u8]) -> Result<T, E>) -> Result<(CodeMemory, T), PlaceError<E>> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let offset = pool.used.next_multiple_of(BLOCK_ALIGN);
    let append = pool.open != 0 && offset + len <= page;
    let fresh = pool.fresh_page(page).map_err(PlaceError::Memory)?;
    let target = if append { pool.open } else { fresh as usize };
    let at = if append { offset } else { 0 };
    // SAFETY: fresh is our read+write page.
    let bytes = unsafe { std::slice::from_raw_parts_mut(fresh, page) };
    if append {
        // SAFETY: the open page is our readable (executable) page.
        let old = unsafe { std::slice::from_raw_parts(pool.open as *const u8, pool.used) };
        bytes[..pool.used].copy_from_slice(old);
    }
    let p = provider();
    let value = match fill((target + at) as u64, &mut bytes[at..at + len]) {
        Ok(value) => value,
        Err(e) => {
            p.unmap(fresh, page);
            return Err(PlaceError::Fill(e));
        }
    };
    let sealed = p.make_executable(fresh, page).and_then(|()| if append { p.move_over(fresh, target as *mut u8, page) } else { Ok(()) });
    if let Err(e) = sealed {
        p.unmap(fresh, page);
        return Err(PlaceError::Memory(e));
    }
    if !append {
        let old = std::mem::replace(&mut pool.open, target);
        if old != 0 && pool.live.get(&old) == Some(&0) {
            pool.live.remove(&old);
            // A pooled page with no live block: nothing runs in it.
            p.unmap(old as *mut u8, page);
        }
    }
    pool.used = at + len;
    *pool.live.entry(target).or_insert(0) += 1;
    Ok((CodeMemory { base: (target + at) as *mut u8, len, sealed_by: provider().name(), page: target }, value))
}

/// A pooled block died: its page is unmapped once it holds no live block and is not open.
fn release_pooled(page: usize) {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(n) = pool.live.get_mut(&page) else { return };
    *n -= 1;
    if *n == 0 && pool.open != page {
        pool.live.remove(&page);
        // A pooled page with no live block: nothing runs in it.
        provider().unmap(page as *mut u8, page_size());
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
