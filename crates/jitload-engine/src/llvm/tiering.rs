//! The module operations tiered compilation needs (`shim/tiers.cpp`): lazy reading, one
//! function's body on demand, and the final tier's rewrite and glue.

use std::ffi::{c_char, c_void, CString};
use std::ptr;

use llvm_sys::prelude::{LLVMContextRef, LLVMModuleRef, LLVMValueRef};

use super::context::Context;
use super::module::Module;
use super::{cstr, take_message};

extern "C" {
    fn jitload_parse_bitcode_lazy(ctx: LLVMContextRef, data: *const c_char, len: usize, name: *const c_char, error: *mut *mut c_char) -> LLVMModuleRef;
    fn jitload_materialize(f: LLVMValueRef, error: *mut *mut c_char) -> bool;
    fn jitload_materialize_all(m: LLVMModuleRef, error: *mut *mut c_char) -> bool;
    fn jitload_tier_blocker(m: LLVMModuleRef) -> *const c_char;
    fn jitload_tier_functions(m: LLVMModuleRef, each: extern "C" fn(*mut c_void, *const c_char, usize, i32), ctx: *mut c_void);
    fn jitload_declared_functions(m: LLVMModuleRef, each: extern "C" fn(*mut c_void, *const c_char, usize), ctx: *mut c_void);
    fn jitload_make_final_tier(
        m: LLVMModuleRef,
        suffix: *const c_char,
        local: *const *const c_char,
        n_local: usize,
        keep: *const *const c_char,
        n_keep: usize,
        pair: extern "C" fn(*mut c_void, *const c_char, *const c_char),
        ctx: *mut c_void,
    );
    fn jitload_strip_debug_info(m: LLVMModuleRef);
    fn jitload_strip_function_debug_info(m: LLVMModuleRef, name: *const c_char);
    fn jitload_add_forwarders(m: LLVMModuleRef, names: *const *const c_char, bodies: *const *const c_char, n: usize);
}

/// What a function returns, as far as a failed call's error value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returns {
    Nothing,
    Integer,
    Pointer,
    Other,
}

/// A function a tier compiles, and what it returns.
#[derive(Debug, Clone)]
pub struct TierFunction {
    pub name: String,
    pub returns: Returns,
}

fn string_of(p: *const c_char, len: usize) -> String {
    // SAFETY: the shim passes a pointer to `len` bytes valid for the callback's duration.
    String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }).into_owned()
}

fn error_text(error: *mut c_char) -> String {
    // SAFETY: the shim returns a malloc'd message we own (or null).
    unsafe { take_message(error) }
}

fn c_strings(names: &[String]) -> (Vec<CString>, Vec<*const c_char>) {
    let owned: Vec<CString> = names.iter().map(|n| cstr(n)).collect();
    let pointers = owned.iter().map(|c| c.as_ptr()).collect();
    (owned, pointers)
}

impl<'ctx> Module<'ctx> {
    /// Reads bitcode with every function body left unread until [`Module::materialize`].
    pub fn parse_bitcode_lazy(ctx: &'ctx Context, bytes: &[u8], name: &str) -> Result<Self, String> {
        let label = cstr(name);
        let mut error = ptr::null_mut();
        // SAFETY: ctx is live; the shim copies the bytes into a buffer the module owns.
        let raw = unsafe { jitload_parse_bitcode_lazy(ctx.raw(), bytes.as_ptr().cast(), bytes.len(), label.as_ptr(), &mut error) };
        let errors = ctx.take_errors();
        if raw.is_null() {
            let text = error_text(error);
            return Err(if errors.is_empty() { text } else { errors.join("; ") });
        }
        // SAFETY: a new module of ctx that we own.
        Ok(unsafe { Module::from_raw(raw, ctx) })
    }

    /// Reads the body of `function` if it is still unread; false if there is no such function.
    pub fn materialize(&self, function: &str) -> Result<bool, String> {
        let name = cstr(function);
        // SAFETY: raw is live; the name is NUL-terminated.
        let f = unsafe { llvm_sys::core::LLVMGetNamedFunction(self.raw(), name.as_ptr()) };
        if f.is_null() {
            return Ok(false);
        }
        let mut error = ptr::null_mut();
        // SAFETY: f is a function of this module.
        if unsafe { jitload_materialize(f, &mut error) } {
            Ok(true)
        } else {
            Err(error_text(error))
        }
    }

    /// Reads every body still unread.
    pub fn materialize_all(&self) -> Result<(), String> {
        let mut error = ptr::null_mut();
        // SAFETY: raw is live.
        if unsafe { jitload_materialize_all(self.raw(), &mut error) } {
            Ok(())
        } else {
            Err(error_text(error))
        }
    }

    /// Why this module cannot be compiled in tiers, if it cannot.
    pub fn tier_blocker(&self) -> Option<&'static str> {
        // SAFETY: raw is live; the shim returns a static string or null.
        let p = unsafe { jitload_tier_blocker(self.raw()) };
        // SAFETY: a NUL-terminated static string.
        (!p.is_null()).then(|| unsafe { std::ffi::CStr::from_ptr(p) }.to_str().unwrap_or("it uses an unsupported feature"))
    }

    /// The functions a tier compiles: every definition the module emits (read or not), but
    /// jitload's lowered constructors.
    pub fn tier_functions(&self) -> Vec<TierFunction> {
        extern "C" fn each(ctx: *mut c_void, name: *const c_char, len: usize, returns: i32) {
            // SAFETY: ctx is the Vec passed below, alive for the call.
            let out = unsafe { &mut *(ctx as *mut Vec<TierFunction>) };
            let returns = match returns {
                0 => Returns::Nothing,
                1 => Returns::Integer,
                2 => Returns::Pointer,
                _ => Returns::Other,
            };
            out.push(TierFunction { name: string_of(name, len), returns });
        }
        let mut out: Vec<TierFunction> = Vec::new();
        // SAFETY: raw is live; the callback only touches `out`.
        unsafe { jitload_tier_functions(self.raw(), each, (&mut out as *mut Vec<TierFunction>).cast()) };
        out
    }

    /// The functions this module declares but does not define.
    pub fn declared_functions(&self) -> Vec<String> {
        extern "C" fn each(ctx: *mut c_void, name: *const c_char, len: usize) {
            // SAFETY: ctx is the Vec passed below, alive for the call.
            let out = unsafe { &mut *(ctx as *mut Vec<String>) };
            out.push(string_of(name, len));
        }
        let mut out: Vec<String> = Vec::new();
        // SAFETY: raw is live; the callback only touches `out`.
        unsafe { jitload_declared_functions(self.raw(), each, (&mut out as *mut Vec<String>).cast()) };
        out
    }

    /// Rewrites this (fully read) module into a final tier beside a first tier that defines
    /// its data (see `shim/tiers.cpp`). `local`: the names `promote_locals` gave
    /// (symbols that were local; only functions' matter); `keep`: functions whose bodies must stay reachable by name. Returns
    /// the (stub, body) pairs to bind.
    pub fn make_final_tier(&mut self, suffix: &str, local: &[String], keep: &[String]) -> Vec<(String, String)> {
        extern "C" fn pair(ctx: *mut c_void, stub: *const c_char, body: *const c_char) {
            // SAFETY: ctx is the Vec passed below; the strings are NUL-terminated for the call.
            let out = unsafe { &mut *(ctx as *mut Vec<(String, String)>) };
            // SAFETY: as above.
            let text = |p: *const c_char| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned();
            out.push((text(stub), text(body)));
        }
        let suffix = cstr(suffix);
        let (_local_owned, local_ptrs) = c_strings(local);
        let (_keep_owned, keep_ptrs) = c_strings(keep);
        let mut out: Vec<(String, String)> = Vec::new();
        // SAFETY: raw is live; the arrays hold live NUL-terminated strings; the callback only
        // touches `out`.
        unsafe {
            jitload_make_final_tier(
                self.raw(),
                suffix.as_ptr(),
                local_ptrs.as_ptr(),
                local_ptrs.len(),
                keep_ptrs.as_ptr(),
                keep_ptrs.len(),
                pair,
                (&mut out as *mut Vec<(String, String)>).cast(),
            )
        };
        out
    }

    /// Drops the module's debug information.
    pub fn strip_debug_info(&mut self) {
        // SAFETY: raw is live.
        unsafe { jitload_strip_debug_info(self.raw()) };
    }

    /// Drops the debug information of `function` only.
    pub fn strip_function_debug_info(&self, function: &str) {
        let name = cstr(function);
        // SAFETY: raw is live; the name is NUL-terminated.
        unsafe { jitload_strip_function_debug_info(self.raw(), name.as_ptr()) };
    }

    /// Defines each declared `stub` as a tail call of its `body` (the cache's glue).
    pub fn add_forwarders(&mut self, pairs: &[(String, String)]) {
        let stubs: Vec<String> = pairs.iter().map(|(s, _)| s.clone()).collect();
        let bodies: Vec<String> = pairs.iter().map(|(_, b)| b.clone()).collect();
        let (_s, stub_ptrs) = c_strings(&stubs);
        let (_b, body_ptrs) = c_strings(&bodies);
        // SAFETY: raw is live; both arrays hold `len` live NUL-terminated strings.
        unsafe { jitload_add_forwarders(self.raw(), stub_ptrs.as_ptr(), body_ptrs.as_ptr(), stub_ptrs.len()) };
    }
}
