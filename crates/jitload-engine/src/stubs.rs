//! Stable entry points for JIT'd functions: PLT-style stubs that jump through a slot.
//!
//! Every function a library defines is reached through its stub, so the library can change
//! where a name points while code that already links to it keeps working: replacing a
//! function stores the new body's address in the slot; a lazy function's slot starts at a
//! resolver that compiles the body on the first call; a removed function's slot goes back to
//! the resolver, which reports the error. The stub memory is never writable and executable at
//! once: code pages are written once, then made read+execute; slots live in a separate
//! read+write page.
//!
//! Layout of one block (two pages, code then data):
//! ```text
//! code +0          push [ctx]; jmp [resolver]        shared entry of the block
//! code +16*(i+1)   jmp [slot_i]; push id; jmp +0     stub i (16 bytes; id = first_slot + i)
//! data +0 ctx, +8 resolver, +16+8*i slot_i
//! ```
//! A slot first holds `stub_i + 6`, the `push id` that leads to the resolver, like lazy
//! binding in an ELF PLT. x86-64 only; on other hosts `StubBlock::new` fails.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};

/// Stubs per block: (code area - shared entry) / stub size.
pub const STUBS_PER_BLOCK: usize = CODE_AREA / STUB_SIZE - 1;
/// Bytes of stub code per block (the smallest page size; a block's image rounds it up to the
/// host's pages).
const CODE_AREA: usize = 4096;
const STUB_SIZE: usize = 16;
const DATA_HEADER: usize = 16;

/// Pages of stubs, then the page of their slots. Unmapped on drop: the owner keeps it alive
/// as long as any code may jump to its stubs.
pub struct StubBlock {
    image: jitload_codemem::Image,
    /// Where the data page starts (the code's length in whole pages).
    data: usize,
}

impl StubBlock {
    /// Maps a block whose unresolved stub `i` calls `(ctx.resolve)(first_slot + i)`. `ctx`
    /// must outlive the block.
    pub fn new(ctx: *const ResolverCtx, first_slot: u32) -> Result<StubBlock, String> {
        if !cfg!(target_arch = "x86_64") {
            return Err("stubs (replace, lazy and on-demand functions) are implemented for x86-64 only".into());
        }
        let data = CODE_AREA.next_multiple_of(jitload_codemem::page_size());
        let mut image = jitload_codemem::Image::new(data + DATA_HEADER + 8 * STUBS_PER_BLOCK, 1).map_err(|e| format!("cannot map stub memory: {e}"))?;
        let base = image.address();
        let (code, slots) = image.bytes_mut().split_at_mut(data);
        write_entry(code, data);
        slots[0..8].copy_from_slice(&(ctx as u64).to_le_bytes());
        slots[8..16].copy_from_slice(&trampoline_address().to_le_bytes());
        for i in 0..STUBS_PER_BLOCK {
            write_stub(code, data, i, first_slot + i as u32);
            let initial = stub_address(base, i) + 6;
            slots[DATA_HEADER + 8 * i..DATA_HEADER + 8 * i + 8].copy_from_slice(&initial.to_le_bytes());
        }
        // From now on the code is read+execute and never written; the slots stay read+write.
        image.make_executable(0, data).map_err(|e| format!("cannot make stub code executable: {e}"))?;
        Ok(StubBlock { image, data })
    }

    /// Address callers jump to for stub `i`.
    pub fn stub_address(&self, i: usize) -> u64 {
        stub_address(self.image.address(), i)
    }

    /// Address of the word stub `i` jumps through (its code is only `jmp [word]` while
    /// bound), for callers that jump through the word themselves.
    pub fn slot_address(&self, i: usize) -> u64 {
        assert!(i < STUBS_PER_BLOCK);
        self.image.address() + (self.data + DATA_HEADER + 8 * i) as u64
    }

    fn slot(&self, i: usize) -> &AtomicU64 {
        let address = self.slot_address(i) as usize;
        // SAFETY: slot i is an 8-byte aligned word inside the block's read+write data page,
        // which lives as long as self; all accesses to it are atomic.
        unsafe { &*(address as *const AtomicU64) }
    }

    /// Points stub `i` at `address`; callers that jump to the stub from now on reach it.
    pub fn bind(&self, i: usize, address: u64) {
        self.slot(i).store(address, Ordering::Release);
    }

    /// Sends stub `i` back to the resolver.
    pub fn unbind(&self, i: usize) {
        self.slot(i).store(self.stub_address(i) + 6, Ordering::Release);
    }

    /// Where stub `i` currently leads (its own resolver path when unbound).
    pub fn target(&self, i: usize) -> u64 {
        self.slot(i).load(Ordering::Acquire)
    }
}

fn stub_address(base: u64, i: usize) -> u64 {
    base + (STUB_SIZE * (i + 1)) as u64
}

/// `push qword [rip+ctx]; jmp qword [rip+resolver]` at the start of the code; the data page
/// starts `data` bytes after it.
fn write_entry(code: &mut [u8], data: usize) {
    // push [rip + disp32]: FF 35; the displacement is from the end of the instruction (6).
    let ctx_disp = (data as i64 - 6) as i32;
    code[0..2].copy_from_slice(&[0xFF, 0x35]);
    code[2..6].copy_from_slice(&ctx_disp.to_le_bytes());
    // jmp [rip + disp32]: FF 25; the resolver word is at data+8, this instruction ends at 12.
    let resolver_disp = (data as i64 + 8 - 12) as i32;
    code[6..8].copy_from_slice(&[0xFF, 0x25]);
    code[8..12].copy_from_slice(&resolver_disp.to_le_bytes());
    code[12..16].fill(0xCC); // int3 padding
}

/// `jmp qword [rip+slot_i]; push id; jmp entry` at stub i.
fn write_stub(code: &mut [u8], data: usize, i: usize, id: u32) {
    let at = STUB_SIZE * (i + 1);
    let slot = data + DATA_HEADER + 8 * i;
    let s = &mut code[at..at + STUB_SIZE];
    s[0..2].copy_from_slice(&[0xFF, 0x25]);
    s[2..6].copy_from_slice(&((slot as i64 - (at as i64 + 6)) as i32).to_le_bytes());
    s[6] = 0x68; // push imm32 (sign-extended to 64 bits: ids stay below 2^31)
    s[7..11].copy_from_slice(&id.to_le_bytes());
    s[11] = 0xE9; // jmp rel32 to the block's shared entry at offset 0
    s[12..16].copy_from_slice(&(-(at as i64 + 16) as i32).to_le_bytes());
}

thread_local! {
    static CALL_ERROR: std::cell::RefCell<Option<crate::EngineError>> = const { std::cell::RefCell::new(None) };
}

/// Records why a stub call could not reach a function; the caller's wrapper raises it.
pub fn set_call_error(error: crate::EngineError) {
    let _ = CALL_ERROR.try_with(|e| *e.borrow_mut() = Some(error));
    jitload_codemem::grace::set_call_error_flag(true);
}

/// The error recorded by the last stub call on this thread that failed, if any.
pub fn take_call_error() -> Option<crate::EngineError> {
    if !jitload_codemem::grace::call_error_flag() {
        return None; // the common case, without the thread-local lookup
    }
    jitload_codemem::grace::set_call_error_flag(false);
    CALL_ERROR.try_with(|e| e.borrow_mut().take()).ok().flatten()
}

#[cfg(target_arch = "x86_64")]
mod trampoline {
    //! The resolver path: saves every argument register (integer, vector, `al` for varargs,
    //! `r10` for a static chain), calls the Rust resolver, restores them and jumps to the
    //! address it returned, so the original call proceeds as if it had gone there directly.
    //! 256-bit and wider vector arguments are not preserved (documented limitation).

    std::arch::global_asm!(
        ".pushsection .text.jitload_stubs,\"ax\",@progbits",
        ".globl jitload_stub_trampoline",
        ".hidden jitload_stub_trampoline",
        ".p2align 4",
        "jitload_stub_trampoline:",
        // stack: [rsp] = ctx, [rsp+8] = index, [rsp+16] = caller's return address
        "push rbp",
        "mov rbp, rsp",
        "push rax", "push rdi", "push rsi", "push rdx", "push rcx", "push r8", "push r9", "push r10",
        "sub rsp, 128",
        "movdqu [rsp], xmm0", "movdqu [rsp+16], xmm1", "movdqu [rsp+32], xmm2", "movdqu [rsp+48], xmm3",
        "movdqu [rsp+64], xmm4", "movdqu [rsp+80], xmm5", "movdqu [rsp+96], xmm6", "movdqu [rsp+112], xmm7",
        "mov rdi, [rbp+8]",
        "mov rsi, [rbp+16]",
        "call {resolve}",
        "mov r11, rax",
        "movdqu xmm0, [rsp]", "movdqu xmm1, [rsp+16]", "movdqu xmm2, [rsp+32]", "movdqu xmm3, [rsp+48]",
        "movdqu xmm4, [rsp+64]", "movdqu xmm5, [rsp+80]", "movdqu xmm6, [rsp+96]", "movdqu xmm7, [rsp+112]",
        "add rsp, 128",
        "pop r10", "pop r9", "pop r8", "pop rcx", "pop rdx", "pop rsi", "pop rdi", "pop rax",
        "pop rbp",
        "add rsp, 16",
        "jmp r11",
        // Where a call that cannot be resolved goes: return zero in every return register.
        ".globl jitload_stub_failed",
        ".hidden jitload_stub_failed",
        ".p2align 4",
        "jitload_stub_failed:",
        "xor eax, eax",
        "xor edx, edx",
        "pxor xmm0, xmm0",
        "pxor xmm1, xmm1",
        "ret",
        // The same for a function whose error value is -1 (an `int`/`Py_ssize_t` return).
        ".globl jitload_stub_failed_minus_one",
        ".hidden jitload_stub_failed_minus_one",
        ".p2align 4",
        "jitload_stub_failed_minus_one:",
        "mov rax, -1",
        "mov rdx, -1",
        "pxor xmm0, xmm0",
        "pxor xmm1, xmm1",
        "ret",
        ".popsection",
        resolve = sym super::resolve_dispatch,
    );
}

extern "C" {
    #[cfg(target_arch = "x86_64")]
    fn jitload_stub_trampoline();
    #[cfg(target_arch = "x86_64")]
    fn jitload_stub_failed();
    #[cfg(target_arch = "x86_64")]
    fn jitload_stub_failed_minus_one();
}

/// The resolver every block's entry jumps to.
pub fn trampoline_address() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        jitload_stub_trampoline as *const () as usize as u64
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// A function that returns zero: where a call goes after its resolution failed.
pub fn failed_call_address() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        jitload_stub_failed as *const () as usize as u64
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// A function that returns -1: where a call to a function returning an integer goes after
/// its resolution failed (CPython's error value for `int` and `Py_ssize_t` results).
pub fn failed_call_minus_one_address() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        jitload_stub_failed_minus_one as *const () as usize as u64
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// A block's context: the trampoline calls `resolve(index)` and jumps where it returns (a
/// body, or [`failed_call_address`] after recording the error with [`set_call_error`]).
pub struct ResolverCtx {
    pub resolve: Box<dyn Fn(u64) -> u64 + Send + Sync>,
}

extern "C" fn resolve_dispatch(ctx: *const c_void, index: u64) -> u64 {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: ctx is the ResolverCtx the block was created with; its owner keeps it alive
        // as long as the block's stubs can be called.
        let ctx = unsafe { &*(ctx as *const ResolverCtx) };
        (ctx.resolve)(index)
    }));
    result.unwrap_or_else(|_| failed_call_address())
}
