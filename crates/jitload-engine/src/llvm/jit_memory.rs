//! The pages ORC's JITLink links the engine's code into, from jitload-codemem: the callbacks of
//! the C++ `CodememMapper` (`shim/jit_memory.cpp`, an `orc::MemoryMapper`), so that W^X and
//! `JITLOAD_CODE_MEMORY=dualmap` hold for cold-compiled code as for everything else jitload
//! runs. Ranges are page-aligned page multiples; errors are `errno` values.

use std::ffi::{c_int, c_uint, c_void};
use std::io;

use jitload_codemem::{page_size, provider};

/// What `jitload_jit_memory_protect` takes (shim: `PROT_R`, `PROT_W`, `PROT_X`).
const WRITE: c_uint = 2;
const EXEC: c_uint = 4;

fn errno(e: &io::Error) -> c_int {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Runs `f` at the FFI edge: a panic is reported as `EIO`, never unwound into C++.
fn edge(f: impl FnOnce() -> io::Result<()>) -> c_int {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => errno(&e),
        Err(_) => libc::EIO,
    }
}

#[no_mangle]
extern "C" fn jitload_jit_memory_page_size() -> usize {
    page_size()
}

/// Maps `len` bytes of zeroed read+write memory (null with `*error` set on failure).
#[no_mangle]
extern "C" fn jitload_jit_memory_map(len: usize, error: *mut c_int) -> *mut c_void {
    let mut mapped = std::ptr::null_mut();
    let code = edge(|| {
        mapped = provider().map(len, false)?.cast();
        Ok(())
    });
    if code != 0 && !error.is_null() {
        // SAFETY: the shim passes the address of its own int.
        unsafe { *error = code };
    }
    mapped
}

/// Gives a written segment its final protection: executable ones are sealed by the provider
/// (read+execute, or the memfd fallback), read-only ones made read-only, writable ones left.
/// Segments start on a page and own the rest of their last page (ORC lays them out so).
#[no_mangle]
extern "C" fn jitload_jit_memory_protect(addr: *mut c_void, len: usize, prot: c_uint) -> c_int {
    edge(|| {
        if len == 0 {
            return Ok(());
        }
        let len = len.next_multiple_of(page_size());
        match (prot & EXEC != 0, prot & WRITE != 0) {
            (true, true) => Err(io::Error::new(io::ErrorKind::PermissionDenied, "writable and executable JIT memory")),
            (true, false) => provider().make_executable(addr.cast(), len),
            (false, false) => provider().make_readonly(addr.cast(), len),
            (false, true) => Ok(()),
        }
    })
}

/// Turns freed pages back into fresh read+write memory for the next allocation.
#[no_mangle]
extern "C" fn jitload_jit_memory_reset(addr: *mut c_void, len: usize) -> c_int {
    edge(|| if len == 0 { Ok(()) } else { provider().map_fresh(addr.cast(), len) })
}

/// Unmaps a reservation (nothing runs in it any more: ORC freed every allocation in it).
#[no_mangle]
extern "C" fn jitload_jit_memory_unmap(addr: *mut c_void, len: usize) {
    let _ = edge(|| {
        provider().unmap(addr.cast(), len);
        Ok(())
    });
}
