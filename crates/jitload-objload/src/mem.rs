//! The loaded image's memory: one anonymous mapping, written while read+write, then split
//! into read+execute, read-only and read+write parts (W^X: no page is ever writable and
//! executable at once).

use std::io;

pub(crate) const PAGE: u64 = 4096;

/// An anonymous private mapping, unmapped on drop.
pub(crate) struct Mapping {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; after loading it is only read
// (by code that runs in it) and freed on drop.
unsafe impl Send for Mapping {}
// SAFETY: as above; `Mapping` has no interior mutability once built.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes (a multiple of the page size, > 0) read+write, aligned to `align`
    /// (a power of two, at least a page).
    pub(crate) fn new(len: u64, align: u64) -> io::Result<Mapping> {
        debug_assert!(len > 0 && len % PAGE == 0 && align.is_power_of_two() && align >= PAGE);
        let len_usize = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let slack = if align > PAGE { (align - PAGE) as usize } else { 0 };
        let total = len_usize.checked_add(slack).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: an anonymous private mapping with no address hint; checked for failure.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let raw = raw as usize;
        let base = (raw + (align as usize - 1)) & !(align as usize - 1);
        let head = base - raw;
        let tail = total - head - len_usize;
        // SAFETY: both ranges are page-aligned parts of the mapping just created that the
        // image will not use.
        unsafe {
            if head > 0 {
                libc::munmap(raw as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((base + len_usize) as *mut libc::c_void, tail);
            }
        }
        Ok(Mapping { base: base as *mut u8, len: len_usize })
    }

    pub(crate) fn address(&self) -> u64 {
        self.base as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The whole mapping as bytes, while it is still read+write (before [`Mapping::protect`]).
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: base..base+len is our read+write mapping; `&mut self` makes this the only
        // reference for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len) }
    }

    /// The whole mapping as bytes; the caller must only read parts that are readable.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: base..base+len is our mapping; every part of it stays at least readable.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }

    /// Faults in `0..len` (clamped to the mapping) with one system call rather than a page
    /// fault per page, where the kernel supports it (Linux 5.14+); best effort.
    pub(crate) fn prefault(&mut self, len: u64) {
        let len = len.min(self.len as u64).div_ceil(PAGE) * PAGE;
        if len == 0 {
            return;
        }
        // SAFETY: advice on our own read+write mapping; it changes no contents (the pages are
        // zero either way) and failure is harmless.
        unsafe { libc::madvise(self.base.cast(), len.min(self.len as u64) as usize, libc::MADV_POPULATE_WRITE) };
    }

    /// Sets the protection of `offset..offset+len` (page-aligned, inside the mapping).
    pub(crate) fn protect(&mut self, offset: u64, len: u64, prot: libc::c_int) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        debug_assert!(offset % PAGE == 0 && offset + len <= self.len as u64);
        // SAFETY: the range lies inside our own mapping (checked by the layout code).
        let rc = unsafe { libc::mprotect(self.base.add(offset as usize).cast(), len as usize, prot) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base..base+len is the mapping created in `new`; its owner (`LoadedObject`)
        // guarantees no code runs in it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}
