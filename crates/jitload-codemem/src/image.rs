//! A mapped image: one read+write mapping, written, then split into read+execute, read-only
//! and read+write parts (a loaded object file; the engine's stub blocks). W^X: no page is
//! ever writable and executable at once.

use std::io;

use crate::provider::{page_size, provider};

/// An anonymous private mapping of whole pages, unmapped on drop.
pub struct Image {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; after loading it is only read
// (by code that runs in it) or written through its owner's own synchronisation, and freed
// on drop.
unsafe impl Send for Image {}
// SAFETY: as above; `Image` has no interior mutability of its own.
unsafe impl Sync for Image {}

impl Image {
    /// Maps `len` bytes (rounded up to whole pages, > 0) read+write, zero-filled, aligned to
    /// `align` (a power of two; at least a page is used).
    pub fn new(len: usize, align: usize) -> io::Result<Image> {
        let page = page_size();
        let too_big = || io::Error::from(io::ErrorKind::OutOfMemory);
        let len = len.max(1).checked_next_multiple_of(page).ok_or_else(too_big)?;
        let align = align.max(page);
        if !align.is_power_of_two() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("alignment {align} is not a power of two")));
        }
        let total = len.checked_add(align - page).ok_or_else(too_big)?;
        let p = provider();
        let raw = p.map(total, false)? as usize;
        let base = raw.next_multiple_of(align);
        let (head, tail) = (base - raw, total - (base - raw) - len);
        // The slack before and after the aligned range: whole pages the image does not use.
        if head > 0 {
            p.unmap(raw as *mut u8, head);
        }
        if tail > 0 {
            p.unmap((base + len) as *mut u8, tail);
        }
        Ok(Image { base: base as *mut u8, len })
    }

    pub fn address(&self) -> u64 {
        self.base as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole image as bytes, while it is still read+write (before any part is sealed).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: base..base+len is our read+write mapping; `&mut self` makes this the only
        // reference for the slice's lifetime.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len) }
    }

    /// The whole image as bytes; every part of it stays at least readable.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: base..base+len is our mapping, readable in every state.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }

    /// Faults in `0..len` (clamped to the image) with one system call rather than a page
    /// fault per page, where the kernel supports it (Linux 5.14+); best effort.
    pub fn prefault(&mut self, len: usize) {
        let len = len.min(self.len).next_multiple_of(page_size()).min(self.len);
        if len == 0 {
            return;
        }
        // SAFETY: advice on our own read+write mapping; it changes no contents (the pages are
        // zero either way) and failure is harmless.
        unsafe { libc::madvise(self.base.cast(), len, libc::MADV_POPULATE_WRITE) };
    }

    /// Seals `offset..offset+len` (rounded out to whole pages) read+execute: written, not
    /// yet running, never written again.
    pub fn make_executable(&mut self, offset: usize, len: usize) -> io::Result<()> {
        let Some((addr, len)) = self.pages(offset, len)? else { return Ok(()) };
        provider().make_executable(addr, len)
    }

    /// Makes `offset..offset+len` (rounded out to whole pages) read-only.
    pub fn make_readonly(&mut self, offset: usize, len: usize) -> io::Result<()> {
        let Some((addr, len)) = self.pages(offset, len)? else { return Ok(()) };
        provider().make_readonly(addr, len)
    }

    /// The whole pages covering `offset..offset+len`, checked to lie inside the image.
    fn pages(&self, offset: usize, len: usize) -> io::Result<Option<(*mut u8, usize)>> {
        if len == 0 {
            return Ok(None);
        }
        let page = page_size();
        let start = offset - offset % page;
        let end = offset.checked_add(len).map(|e| e.next_multiple_of(page)).filter(|&e| e <= self.len);
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("range {offset:#x}+{len:#x} outside the image ({:#x} bytes)", self.len)));
        };
        // SAFETY: start < end <= len: inside our mapping.
        Ok(Some((unsafe { self.base.add(start) }, end - start)))
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // The owner guarantees no code runs in the image any more.
        provider().unmap(self.base, self.len);
    }
}
