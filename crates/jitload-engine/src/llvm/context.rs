//! An owned `LLVMContext` that collects diagnostics instead of printing them.

use std::ffi::c_void;
use std::sync::Mutex;

use llvm_sys::core::{LLVMContextCreate, LLVMContextDispose, LLVMContextSetDiagnosticHandler, LLVMGetDiagInfoDescription, LLVMGetDiagInfoSeverity};
use llvm_sys::prelude::{LLVMContextRef, LLVMDiagnosticInfoRef};
use llvm_sys::LLVMDiagnosticSeverity;

use super::take_message;

/// Error diagnostics reported through the context (bitcode reader, inline asm, backend).
#[derive(Default)]
struct Diagnostics {
    errors: Mutex<Vec<String>>,
}

/// An owned LLVM context. Disposed on drop; every module made in it must be dropped first,
/// which the `Module<'ctx>` lifetime enforces.
pub struct Context {
    raw: LLVMContextRef,
    diagnostics: Box<Diagnostics>,
}

// SAFETY: an LLVMContext may be moved between threads as long as only one uses it at a time;
// Context is not Sync and every use goes through &self/&mut self on one thread.
unsafe impl Send for Context {}

impl Context {
    /// Creates a fresh context whose error diagnostics are collected for `take_errors`.
    pub fn new() -> Self {
        super::initialize();
        // SAFETY: LLVMContextCreate has no preconditions; we own the result.
        let raw = unsafe { LLVMContextCreate() };
        let diagnostics = Box::<Diagnostics>::default();
        let ctx_ptr: *const Diagnostics = &*diagnostics;
        // SAFETY: the handler context points into a Box that lives as long as the LLVM context
        // (both are dropped together, the LLVM context first).
        unsafe { LLVMContextSetDiagnosticHandler(raw, Some(on_diagnostic), ctx_ptr as *mut c_void) };
        Context { raw, diagnostics }
    }

    pub(crate) fn raw(&self) -> LLVMContextRef {
        self.raw
    }

    /// Returns and clears the error diagnostics reported so far.
    pub fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.diagnostics.errors.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Default for Context {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: raw is owned by us and every Module borrowing it has been dropped.
        unsafe { LLVMContextDispose(self.raw) };
    }
}

extern "C" fn on_diagnostic(info: LLVMDiagnosticInfoRef, ctx: *mut c_void) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: LLVM passes a valid diagnostic for the duration of this call.
        let severity = unsafe { LLVMGetDiagInfoSeverity(info) };
        if severity != LLVMDiagnosticSeverity::LLVMDSError {
            return;
        }
        // SAFETY: the description is an LLVM-allocated string that we own.
        let text = unsafe { take_message(LLVMGetDiagInfoDescription(info)) };
        // SAFETY: ctx is the Diagnostics pointer installed in Context::new, still alive.
        let diagnostics = unsafe { &*(ctx as *const Diagnostics) };
        diagnostics.errors.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    });
}
