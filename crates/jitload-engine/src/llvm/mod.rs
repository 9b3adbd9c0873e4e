//! Safe RAII wrappers over LLVM 22's C API: the only place in the crate that names `llvm_sys`.

pub mod context;
pub mod guard;
mod jit_memory;
pub mod module;
pub mod orc;
pub mod target;
pub mod tiering;

use std::ffi::{c_char, CStr, CString};
use std::sync::Once;

use llvm_sys::error::{LLVMDisposeErrorMessage, LLVMErrorRef, LLVMGetErrorMessage};

/// Turns an `LLVMErrorRef` into a Rust value, consuming it.
pub(crate) fn check(err: LLVMErrorRef) -> Result<(), String> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: err is non-null and not yet consumed; LLVMGetErrorMessage consumes it.
    let msg = unsafe { LLVMGetErrorMessage(err) };
    // SAFETY: msg is a NUL-terminated string owned by us until disposed below.
    let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
    // SAFETY: msg came from LLVMGetErrorMessage and is disposed exactly once.
    unsafe { LLVMDisposeErrorMessage(msg) };
    Err(text)
}

/// Copies and frees a message allocated by LLVM (`LLVMDisposeMessage`).
///
/// # Safety
/// `msg` must be null or a string allocated by LLVM that nobody else frees.
pub(crate) unsafe fn take_message(msg: *mut c_char) -> String {
    if msg.is_null() {
        return String::new();
    }
    // SAFETY: caller guarantees msg is a live NUL-terminated LLVM string.
    let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
    // SAFETY: caller guarantees we own msg; freed exactly once here.
    unsafe { llvm_sys::core::LLVMDisposeMessage(msg) };
    text
}

/// A C string for LLVM; interior NULs (impossible in valid symbol names) are replaced.
pub(crate) fn cstr(s: &str) -> CString {
    CString::new(s.replace('\0', "\\0")).expect("NULs were replaced")
}

/// Registers the native target, its asm printer/parser (inline asm) and disassembler once,
/// and routes LLVM fatal errors to a handler that names jitload before LLVM exits.
pub fn initialize() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: these initialisers only register target descriptions; they are idempotent
        // and guarded by Once so no other thread races on LLVM's registries here.
        unsafe {
            llvm_sys::target::LLVM_InitializeNativeTarget();
            llvm_sys::target::LLVM_InitializeNativeAsmPrinter();
            llvm_sys::target::LLVM_InitializeNativeAsmParser();
            llvm_sys::target::LLVM_InitializeNativeDisassembler();
        }
        // SAFETY: the handler is a plain extern "C" fn valid for the whole process.
        unsafe { llvm_sys::error_handling::LLVMInstallFatalErrorHandler(Some(fatal_error_handler)) };
    });
}

/// LLVM calls this just before it exits the process. jitload validates every input before
/// handing it to LLVM so this should be unreachable; if it is reached, say who and why.
extern "C" fn fatal_error_handler(reason: *const c_char) {
    let text = if reason.is_null() {
        String::from("(no reason given)")
    } else {
        // SAFETY: LLVM passes a NUL-terminated reason string valid for this call.
        unsafe { CStr::from_ptr(reason) }.to_string_lossy().into_owned()
    };
    if guard::on_fatal_error(&text) {
        return; // unreachable: on_fatal_error aborts into the crash-recovery context
    }
    log::error!("jitload: LLVM fatal error (please report this as a jitload bug): {text}");
    let line = format!("jitload: LLVM fatal error (please report this as a jitload bug): {text}\n");
    // SAFETY: writing a valid buffer to fd 2; failure is irrelevant as the process is ending.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// The LLVM version this library runs against, e.g. "22.1.8".
pub fn llvm_version() -> String {
    let (mut major, mut minor, mut patch) = (0u32, 0u32, 0u32);
    // SAFETY: LLVMGetVersion writes three unsigned ints through valid pointers.
    unsafe { llvm_sys::core::LLVMGetVersion(&mut major, &mut minor, &mut patch) };
    format!("{major}.{minor}.{patch}")
}
