//! An owned LLVM `Module`: parsing, verification, inspection and the few edits jitload makes.

use std::ffi::{c_char, c_uint, CStr};
use std::marker::PhantomData;
use std::ptr;

use llvm_sys::analysis::{LLVMVerifierFailureAction, LLVMVerifyModule};
use llvm_sys::bit_reader::LLVMParseBitcodeInContext2;
use llvm_sys::bit_writer::LLVMWriteBitcodeToMemoryBuffer;
use llvm_sys::core::*;
use llvm_sys::ir_reader::LLVMParseIRInContext2;
use llvm_sys::linker::LLVMLinkModules2;
use llvm_sys::prelude::{LLVMMemoryBufferRef, LLVMModuleRef, LLVMValueRef};
use llvm_sys::LLVMLinkage;

use super::context::Context;
use super::{cstr, take_message};

/// What kind of symbol a module-level name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalKind {
    Function,
    Data,
}

/// A module-level symbol as the linker sees it.
#[derive(Debug, Clone)]
pub struct ModuleSymbol {
    pub name: String,
    pub kind: GlobalKind,
    /// Defined here (a body or an initializer), as opposed to declared.
    pub defined: bool,
    /// Visible to other modules (external/weak linkage and default visibility).
    pub exported: bool,
    /// A declaration that may stay unresolved (`extern_weak`).
    pub weak_reference: bool,
    /// A declaration that some instruction or initializer actually refers to.
    pub used: bool,
    /// A definition the linker may merge with others of the same name (weak, linkonce, common).
    pub weak_definition: bool,
    /// A `thread_local` variable (emitted as `__emutls_v.<name>`, see `cxx`).
    pub thread_local: bool,
}

/// An owned module in a [`Context`]. Disposed on drop unless ownership moved to LLVM.
pub struct Module<'ctx> {
    raw: LLVMModuleRef,
    ctx: &'ctx Context,
    _marker: PhantomData<&'ctx Context>,
}

/// A memory buffer we own, freed on drop.
struct MemBuf(LLVMMemoryBufferRef);

impl MemBuf {
    fn copy_of(bytes: &[u8], name: &str) -> MemBuf {
        let name = cstr(name);
        // SAFETY: bytes is valid for len bytes; LLVM copies them; name is NUL-terminated.
        MemBuf(unsafe { LLVMCreateMemoryBufferWithMemoryRangeCopy(bytes.as_ptr().cast(), bytes.len(), name.as_ptr()) })
    }
}

impl Drop for MemBuf {
    fn drop(&mut self) {
        // SAFETY: we own the buffer and no parsed module borrows it (full parses copy).
        unsafe { LLVMDisposeMemoryBuffer(self.0) };
    }
}

/// Copies the bytes out of an LLVM memory buffer and disposes it.
///
/// # Safety
/// `buf` must be a valid buffer owned by the caller; it is freed here.
pub(crate) unsafe fn take_buffer(buf: LLVMMemoryBufferRef) -> Vec<u8> {
    // SAFETY: caller guarantees buf is valid.
    let start = unsafe { LLVMGetBufferStart(buf) };
    // SAFETY: as above.
    let size = unsafe { LLVMGetBufferSize(buf) };
    // SAFETY: start points to size readable bytes inside buf.
    let bytes = unsafe { std::slice::from_raw_parts(start.cast::<u8>(), size) }.to_vec();
    // SAFETY: caller transferred ownership of buf; disposed exactly once.
    unsafe { LLVMDisposeMemoryBuffer(buf) };
    bytes
}

fn value_name(v: LLVMValueRef) -> String {
    let mut len = 0usize;
    // SAFETY: v is a live value; the returned pointer is valid for len bytes while v lives.
    let p = unsafe { LLVMGetValueName2(v, &mut len) };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: as above.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    String::from_utf8_lossy(bytes).into_owned()
}

impl<'ctx> Module<'ctx> {
    /// Parses bitcode. LLVM copies the bytes; errors come back as the reader's message.
    pub fn parse_bitcode(ctx: &'ctx Context, bytes: &[u8], name: &str) -> Result<Self, String> {
        let buf = MemBuf::copy_of(bytes, name);
        let mut raw: LLVMModuleRef = ptr::null_mut();
        // SAFETY: ctx and buf are live; the call does not take ownership of buf
        // (it parses fully from a MemoryBufferRef) and reports errors via diagnostics.
        let failed = unsafe { LLVMParseBitcodeInContext2(ctx.raw(), buf.0, &mut raw) } != 0;
        let errors = ctx.take_errors();
        if failed || raw.is_null() {
            return Err(if errors.is_empty() { "unreadable bitcode".to_string() } else { errors.join("; ") });
        }
        Ok(Module { raw, ctx, _marker: PhantomData })
    }

    /// Parses textual IR. Errors carry `name:line:column`.
    pub fn parse_ir(ctx: &'ctx Context, text: &[u8], name: &str) -> Result<Self, String> {
        let buf = MemBuf::copy_of(text, name);
        let mut raw: LLVMModuleRef = ptr::null_mut();
        let mut msg: *mut c_char = ptr::null_mut();
        // SAFETY: ctx and buf are live; LLVMParseIRInContext2 does not consume buf.
        let failed = unsafe { LLVMParseIRInContext2(ctx.raw(), buf.0, &mut raw, &mut msg) } != 0;
        // SAFETY: msg is null or an LLVM-allocated message we own.
        let text = unsafe { take_message(msg) };
        if failed || raw.is_null() {
            return Err(text);
        }
        Ok(Module { raw, ctx, _marker: PhantomData })
    }

    /// Creates an empty module (used as the destination when linking several inputs).
    pub fn new_empty(ctx: &'ctx Context, name: &str) -> Self {
        let name = cstr(name);
        // SAFETY: ctx is live; we own the new module.
        let raw = unsafe { LLVMModuleCreateWithNameInContext(name.as_ptr(), ctx.raw()) };
        Module { raw, ctx, _marker: PhantomData }
    }

    /// Takes ownership of `raw`, a module LLVM made in `ctx`.
    ///
    /// # Safety
    /// `raw` must be a live module of `ctx` that nothing else owns.
    pub(crate) unsafe fn from_raw(raw: LLVMModuleRef, ctx: &'ctx Context) -> Self {
        Module { raw, ctx, _marker: PhantomData }
    }

    pub(crate) fn raw(&self) -> LLVMModuleRef {
        self.raw
    }

    /// Runs the IR verifier; returns its report on failure.
    pub fn verify(&self) -> Result<(), String> {
        let mut msg: *mut c_char = ptr::null_mut();
        // SAFETY: raw is a live module; ReturnStatusAction never aborts.
        let broken = unsafe { LLVMVerifyModule(self.raw, LLVMVerifierFailureAction::LLVMReturnStatusAction, &mut msg) } != 0;
        // SAFETY: msg is an LLVM-allocated message we own.
        let text = unsafe { take_message(msg) };
        if broken {
            Err(text.trim().to_string())
        } else {
            Ok(())
        }
    }

    /// The module's target triple ("" when unset).
    pub fn triple(&self) -> String {
        // SAFETY: the returned string is owned by the module and valid while it lives.
        let p = unsafe { LLVMGetTarget(self.raw) };
        if p.is_null() {
            return String::new();
        }
        // SAFETY: as above.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    pub fn set_triple(&mut self, triple: &str) {
        let t = cstr(triple);
        // SAFETY: the module copies the string.
        unsafe { LLVMSetTarget(self.raw, t.as_ptr()) };
    }

    pub fn set_data_layout(&mut self, layout: &str) {
        let l = cstr(layout);
        // SAFETY: the module copies the string.
        unsafe { LLVMSetDataLayout(self.raw, l.as_ptr()) };
    }

    /// Makes every defined function compile for `cpu` with `features`, tuned for `tune`:
    /// clang stamps each function with the CPU it was built for (usually baseline "x86-64"),
    /// which would override the target machine. A function's own features are appended after
    /// the host's so explicit per-function choices (`+avx2` behind a cpuid check, `-sse4.2`)
    /// still win. `prefer_vector_width` (the host CPU's preference, when tuning for another
    /// CPU) is added to functions that do not set their own.
    pub fn retarget_functions(&mut self, cpu: &str, tune: &str, features: &str, prefer_vector_width: Option<u32>) {
        let (cpu_key, tune_key, feat_key, width_key) = ("target-cpu", "tune-cpu", "target-features", "prefer-vector-width");
        let width = prefer_vector_width.map(|w| w.to_string());
        let idx = llvm_sys::LLVMAttributeFunctionIndex;
        // SAFETY: iterating the live module's functions; attributes are created in its context
        // and attached to functions of this module.
        unsafe {
            let mut f = LLVMGetFirstFunction(self.raw);
            while !f.is_null() {
                if LLVMIsDeclaration(f) == 0 {
                    let own = string_attribute(f, idx, feat_key);
                    let merged = match own.as_deref() {
                        Some(o) if !o.is_empty() => format!("{features},{o}"),
                        _ => features.to_string(),
                    };
                    let mut attributes = vec![(cpu_key, cpu), (tune_key, tune), (feat_key, merged.as_str())];
                    if let Some(w) = width.as_deref() {
                        if string_attribute(f, idx, width_key).is_none() {
                            attributes.push((width_key, w));
                        }
                    }
                    for (key, value) in attributes {
                        LLVMRemoveStringAttributeAtIndex(f, idx, key.as_ptr().cast(), key.len() as c_uint);
                        let attr =
                            LLVMCreateStringAttribute(self.ctx.raw(), key.as_ptr().cast(), key.len() as c_uint, value.as_ptr().cast(), value.len() as c_uint);
                        LLVMAddAttributeAtIndex(f, idx, attr);
                    }
                }
                f = LLVMGetNextFunction(f);
            }
        }
    }

    /// Every function, global variable and alias at module level.
    pub fn symbols(&self) -> Vec<ModuleSymbol> {
        let mut out = Vec::new();
        // Iteration: the iterator functions return values owned by the module that stay valid
        // while no value is deleted, which never happens here.
        // SAFETY: raw is a live module.
        let mut f = unsafe { LLVMGetFirstFunction(self.raw) };
        while !f.is_null() {
            // SAFETY: f is a function of this module.
            let intrinsic = unsafe { LLVMGetIntrinsicID(f) } != 0;
            if !intrinsic {
                out.push(self.describe(f, GlobalKind::Function));
            }
            // SAFETY: f is a function of this module.
            f = unsafe { LLVMGetNextFunction(f) };
        }
        // SAFETY: as above.
        let mut g = unsafe { LLVMGetFirstGlobal(self.raw) };
        while !g.is_null() {
            if !value_name(g).starts_with("llvm.") {
                out.push(self.describe(g, GlobalKind::Data));
            }
            // SAFETY: g is a global of this module.
            g = unsafe { LLVMGetNextGlobal(g) };
        }
        // SAFETY: as above.
        let mut a = unsafe { LLVMGetFirstGlobalAlias(self.raw) };
        while !a.is_null() {
            let mut sym = self.describe(a, GlobalKind::Data);
            sym.defined = true;
            out.push(sym);
            // SAFETY: a is an alias of this module.
            a = unsafe { LLVMGetNextGlobalAlias(a) };
        }
        out
    }

    fn describe(&self, v: LLVMValueRef, kind: GlobalKind) -> ModuleSymbol {
        use LLVMLinkage::*;
        // SAFETY: v is a live global value of this module.
        let linkage = unsafe { LLVMGetLinkage(v) };
        // SAFETY: as above.
        let declaration = unsafe { LLVMIsDeclaration(v) } != 0;
        // SAFETY: as above.
        let hidden = unsafe { LLVMGetVisibility(v) } != llvm_sys::LLVMVisibility::LLVMDefaultVisibility;
        let local = matches!(linkage, LLVMInternalLinkage | LLVMPrivateLinkage);
        let weak_definition = matches!(linkage, LLVMWeakAnyLinkage | LLVMWeakODRLinkage | LLVMLinkOnceAnyLinkage | LLVMLinkOnceODRLinkage | LLVMCommonLinkage);
        // SAFETY: as above; a null first use means nothing refers to it.
        let used = !unsafe { LLVMGetFirstUse(v) }.is_null();
        ModuleSymbol {
            name: value_name(v),
            kind,
            defined: !declaration,
            exported: !declaration && !local && !hidden,
            weak_reference: linkage == LLVMExternalWeakLinkage,
            used,
            weak_definition: weak_definition && !declaration,
            // SAFETY: as above; LLVMIsThreadLocal is only asked of global variables.
            thread_local: kind == GlobalKind::Data && unsafe { !LLVMIsAGlobalVariable(v).is_null() && LLVMIsThreadLocal(v) != 0 },
        }
    }

    /// Library names recorded in `!llvm.dependent-libraries`.
    pub fn dependent_libraries(&self) -> Vec<String> {
        self.named_metadata("llvm.dependent-libraries").into_iter().flatten().flatten().map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).collect()
    }

    /// The nodes of the named metadata `key`, each as its operands: the bytes of an MDString,
    /// `None` for any other operand.
    pub fn named_metadata(&self, key: &str) -> Vec<Vec<Option<Vec<u8>>>> {
        let key = cstr(key);
        // SAFETY: raw is live; key is NUL-terminated.
        let n = unsafe { LLVMGetNamedMetadataNumOperands(self.raw, key.as_ptr()) } as usize;
        let mut nodes: Vec<LLVMValueRef> = vec![ptr::null_mut(); n];
        if n > 0 {
            // SAFETY: nodes has room for exactly n operands.
            unsafe { LLVMGetNamedMetadataOperands(self.raw, key.as_ptr(), nodes.as_mut_ptr()) };
        }
        let mut out = Vec::with_capacity(n);
        for node in nodes {
            // SAFETY: node is an MDNode wrapped as a value.
            let count = unsafe { LLVMGetMDNodeNumOperands(node) } as usize;
            let mut ops: Vec<LLVMValueRef> = vec![ptr::null_mut(); count];
            if count > 0 {
                // SAFETY: ops has room for count operands.
                unsafe { LLVMGetMDNodeOperands(node, ops.as_mut_ptr()) };
            }
            let strings = ops
                .into_iter()
                .map(|op| {
                    if op.is_null() {
                        return None;
                    }
                    let mut len: c_uint = 0;
                    // SAFETY: op is a metadata value; returns null if it is not an MDString.
                    let s = unsafe { LLVMGetMDString(op, &mut len) };
                    // SAFETY: s points to len bytes owned by the context.
                    (!s.is_null()).then(|| unsafe { std::slice::from_raw_parts(s.cast::<u8>(), len as usize) }.to_vec())
                })
                .collect();
            out.push(strings);
        }
        out
    }

    /// Appends `lib` to `!llvm.dependent-libraries` (as `#pragma comment(lib, ...)` does).
    pub fn add_dependent_library(&mut self, lib: &str) {
        if self.dependent_libraries().iter().any(|l| l == lib) {
            return;
        }
        self.add_named_string("llvm.dependent-libraries", lib);
    }

    /// Appends a node holding one string to named metadata `name` (e.g. jitload's record of
    /// the Python ABI a module was built for).
    pub fn add_named_string(&mut self, name: &str, value: &str) {
        self.add_named_strings(name, &[value.as_bytes()]);
    }

    /// Appends a node of strings (any bytes) to named metadata `name`.
    pub fn add_named_strings(&mut self, name: &str, values: &[&[u8]]) {
        let key = cstr(name);
        // SAFETY: ctx and the strings are live (LLVM copies them); the metadata is uniqued in
        // the context; mds holds values.len() valid metadata.
        unsafe {
            let mut mds: Vec<_> = values.iter().map(|v| LLVMMDStringInContext2(self.ctx.raw(), v.as_ptr().cast(), v.len())).collect();
            let node = LLVMMDNodeInContext2(self.ctx.raw(), mds.as_mut_ptr(), mds.len());
            let value = LLVMMetadataAsValue(self.ctx.raw(), node);
            LLVMAddNamedMetadataOperand(self.raw, key.as_ptr(), value);
        }
    }

    /// Removes named metadata `name` (its nodes stay in the context while other users hold them).
    pub fn erase_named_metadata(&mut self, name: &str) {
        extern "C" {
            fn jitload_erase_named_metadata(m: LLVMModuleRef, name: *const c_char);
        }
        let key = cstr(name);
        // SAFETY: raw is live; key is NUL-terminated; the shim only touches this module.
        unsafe { jitload_erase_named_metadata(self.raw, key.as_ptr()) };
    }

    /// Appends the nodes of `other`'s named metadata `name` to this module's (both modules
    /// live in one context, where metadata nodes belong, so the nodes are shared, not copied).
    pub fn copy_named_metadata_from(&mut self, other: &Module<'ctx>, name: &str) {
        let key = cstr(name);
        // SAFETY: other.raw is live; key is NUL-terminated.
        let n = unsafe { LLVMGetNamedMetadataNumOperands(other.raw, key.as_ptr()) } as usize;
        if n == 0 {
            return;
        }
        let mut nodes: Vec<LLVMValueRef> = vec![ptr::null_mut(); n];
        // SAFETY: nodes has room for exactly n operands; each is then added to a module of
        // the same context.
        unsafe {
            LLVMGetNamedMetadataOperands(other.raw, key.as_ptr(), nodes.as_mut_ptr());
            for node in nodes {
                LLVMAddNamedMetadataOperand(self.raw, key.as_ptr(), node);
            }
        }
    }

    /// Whether the module defines any function or global variable (a module of metadata
    /// alone, like the build tools' carrier of native objects, does not).
    pub fn has_definitions(&self) -> bool {
        self.symbols().iter().any(|s| s.defined)
    }

    /// Replaces `llvm.global_ctors` (or `_dtors`) with one exported function `name` that calls
    /// each entry in priority order (descending for destructors, as the LangRef says).
    /// Returns whether the module had any entries.
    pub fn lower_init_array(&mut self, array: &str, name: &str, reverse: bool) -> bool {
        let key = cstr(array);
        // SAFETY: raw is live; returns null when the global does not exist.
        let global = unsafe { LLVMGetNamedGlobal(self.raw, key.as_ptr()) };
        if global.is_null() {
            return false;
        }
        let mut entries: Vec<(u64, usize, LLVMValueRef)> = Vec::new();
        // SAFETY: global is a live global variable; the initializer may be null for a declaration.
        let init = unsafe { LLVMGetInitializer(global) };
        if !init.is_null() {
            // SAFETY: init is a constant array of {i32, ptr, ptr} structs (or zeroinitializer,
            // which has no operands).
            let n = unsafe { LLVMGetNumOperands(init) }.max(0) as u32;
            for i in 0..n {
                // SAFETY: i < n operands.
                let entry = unsafe { LLVMGetOperand(init, i) };
                // SAFETY: entry is a constant struct; check it has the 3 expected fields.
                if entry.is_null() || unsafe { LLVMGetNumOperands(entry) } < 2 {
                    continue;
                }
                // SAFETY: operand 0 is the i32 priority, operand 1 the function.
                let (prio, func) = unsafe { (LLVMGetOperand(entry, 0), LLVMGetOperand(entry, 1)) };
                // SAFETY: only a real function is callable; null pointers are skipped.
                if func.is_null() || unsafe { LLVMIsAFunction(func) }.is_null() {
                    continue;
                }
                // SAFETY: prio is a ConstantInt.
                let prio = if unsafe { LLVMIsAConstantInt(prio) }.is_null() {
                    65535
                } else {
                    // SAFETY: checked it is a ConstantInt just above.
                    unsafe { LLVMConstIntGetZExtValue(prio) }
                };
                entries.push((prio, i as usize, func));
            }
        }
        entries.sort_by_key(|&(prio, idx, _)| (prio, idx));
        if reverse {
            entries.reverse();
        }
        let had_entries = !entries.is_empty();
        let cname = cstr(name);
        // SAFETY: building a new void() function and a single block calling each entry; all
        // values belong to this module and context, and the builder is disposed at the end.
        unsafe {
            let ctx = self.ctx.raw();
            let void = LLVMVoidTypeInContext(ctx);
            let fnty = LLVMFunctionType(void, ptr::null_mut(), 0, 0);
            let func = LLVMAddFunction(self.raw, cname.as_ptr(), fnty);
            LLVMSetLinkage(func, LLVMLinkage::LLVMExternalLinkage);
            let bb = LLVMAppendBasicBlockInContext(ctx, func, c"entry".as_ptr());
            let builder = LLVMCreateBuilderInContext(ctx);
            LLVMPositionBuilderAtEnd(builder, bb);
            for (_, _, callee) in &entries {
                let ty = LLVMGlobalGetValueType(*callee);
                LLVMBuildCall2(builder, ty, *callee, ptr::null_mut(), 0, c"".as_ptr());
            }
            LLVMBuildRetVoid(builder);
            LLVMDisposeBuilder(builder);
            LLVMDeleteGlobal(global);
        }
        had_entries
    }

    /// Gives a module that refers to `__dso_handle` its own definition (hidden, so it stays
    /// within the module), as `crtbegin.o` gives each shared library: `__cxa_atexit`
    /// registrations then name the module, and freeing it can run just its destructors.
    /// Returns whether the module uses it.
    pub fn define_dso_handle(&mut self) -> bool {
        let name = c"__dso_handle";
        // SAFETY: raw is live; the global, if any, belongs to this module; the initializer is
        // a constant of the module's context.
        unsafe {
            let g = LLVMGetNamedGlobal(self.raw, name.as_ptr());
            if g.is_null() {
                return false;
            }
            if LLVMIsDeclaration(g) != 0 {
                let ty = LLVMGlobalGetValueType(g);
                LLVMSetInitializer(g, LLVMConstNull(ty));
                LLVMSetLinkage(g, LLVMLinkage::LLVMExternalLinkage);
                LLVMSetVisibility(g, llvm_sys::LLVMVisibility::LLVMHiddenVisibility);
                LLVMSetThreadLocal(g, 0);
            }
        }
        true
    }

    /// Links `other` into this module (`other` is consumed, as `LLVMLinkModules2` destroys it).
    pub fn link_in(&mut self, other: Module<'ctx>) -> Result<(), String> {
        let src = other.raw;
        std::mem::forget(other); // LLVMLinkModules2 destroys Src on both paths.
                                 // SAFETY: both modules live in the same context; Src ownership passes to LLVM.
        let failed = unsafe { LLVMLinkModules2(self.raw, src) } != 0;
        let errors = self.ctx.take_errors();
        if failed {
            return Err(if errors.is_empty() { "link failed".into() } else { errors.join("; ") });
        }
        Ok(())
    }

    /// Renames the function or global `old` to `new`; uses follow. Returns whether it existed.
    pub fn rename(&mut self, old: &str, new: &str) -> bool {
        let value = self.global_value(old);
        if value.is_null() {
            return false;
        }
        // SAFETY: value is a live global of this module; LLVM copies the name.
        unsafe { LLVMSetValueName2(value, new.as_ptr().cast(), new.len()) };
        true
    }

    /// Gives the function or global `name` strong external linkage (so the optimiser cannot
    /// drop a weak or linkonce body that has no callers in this module).
    pub fn make_strong(&mut self, name: &str) {
        let value = self.global_value(name);
        if !value.is_null() {
            // SAFETY: value is a live global of this module.
            unsafe { LLVMSetLinkage(value, LLVMLinkage::LLVMExternalLinkage) };
        }
    }

    fn global_value(&self, name: &str) -> LLVMValueRef {
        let c = cstr(name);
        // SAFETY: raw is live; both lookups return null when the name is absent.
        unsafe {
            let f = LLVMGetNamedFunction(self.raw, c.as_ptr());
            if !f.is_null() {
                return f;
            }
            LLVMGetNamedGlobal(self.raw, c.as_ptr())
        }
    }

    /// Makes every internal or private function and global variable external with hidden
    /// visibility under a name unique to this module (`name.suffix`), so a module split into
    /// pieces can refer across them. Unnamed values get `anon.N.suffix`. Returns the renames.
    pub fn promote_locals(&mut self, suffix: &str) -> Vec<(String, String)> {
        use LLVMLinkage::*;
        let mut values = Vec::new();
        // SAFETY: iterating the live module's functions and globals; none are deleted here.
        unsafe {
            let mut f = LLVMGetFirstFunction(self.raw);
            while !f.is_null() {
                values.push(f);
                f = LLVMGetNextFunction(f);
            }
            let mut g = LLVMGetFirstGlobal(self.raw);
            while !g.is_null() {
                values.push(g);
                g = LLVMGetNextGlobal(g);
            }
        }
        let mut renamed = Vec::new();
        for (i, v) in values.into_iter().enumerate() {
            // SAFETY: v is a live global value of this module.
            let linkage = unsafe { LLVMGetLinkage(v) };
            if !matches!(linkage, LLVMInternalLinkage | LLVMPrivateLinkage) {
                continue;
            }
            let old = value_name(v);
            if old.starts_with("llvm.") {
                continue;
            }
            let new = if old.is_empty() { format!("anon.{i}.{suffix}") } else { format!("{old}.{suffix}") };
            // SAFETY: v is live; LLVM copies the name; linkage and visibility are plain setters.
            unsafe {
                LLVMSetValueName2(v, new.as_ptr().cast(), new.len());
                LLVMSetLinkage(v, LLVMExternalLinkage);
                LLVMSetVisibility(v, llvm_sys::LLVMVisibility::LLVMHiddenVisibility);
                // A promoted constant may be merged by address with others no more.
                LLVMSetUnnamedAddress(v, llvm_sys::LLVMUnnamedAddr::LLVMNoUnnamedAddr);
            }
            renamed.push((old, new));
        }
        renamed
    }

    /// Deletes `llvm.used` and `llvm.compiler.used`: they only steer static linkers, and a
    /// module split into pieces cannot keep them valid.
    pub fn drop_used_lists(&mut self) {
        for name in ["llvm.used", "llvm.compiler.used"] {
            let c = cstr(name);
            // SAFETY: raw is live; the global, if any, is deleted once.
            unsafe {
                let g = LLVMGetNamedGlobal(self.raw, c.as_ptr());
                if !g.is_null() {
                    LLVMDeleteGlobal(g);
                }
            }
        }
    }

    /// Names of aliases whose target is a function (a split module cannot keep them).
    pub fn function_aliases(&self) -> Vec<String> {
        let mut out = Vec::new();
        // SAFETY: iterating the live module's aliases; the aliasee is a constant of the module.
        unsafe {
            let mut a = LLVMGetFirstGlobalAlias(self.raw);
            while !a.is_null() {
                let target = LLVMAliasGetAliasee(a);
                if !target.is_null() && !LLVMIsAFunction(target).is_null() {
                    out.push(value_name(a));
                }
                a = LLVMGetNextGlobalAlias(a);
            }
        }
        out
    }

    /// A new module with just the definition of `function`, renamed `body`, and
    /// declarations of what it uses (`None` if there is no such definition). Its cost
    /// depends on the function, not on the size of this module.
    pub fn extract_function(&self, function: &str, body: &str) -> Option<Module<'ctx>> {
        extern "C" {
            fn jitload_extract_function(m: LLVMModuleRef, function_name: *const c_char, body_name: *const c_char) -> LLVMModuleRef;
        }
        let (f, b) = (cstr(function), cstr(body));
        // SAFETY: raw is live; the shim returns a new module in the same context (owned by us)
        // or null.
        let raw = unsafe { jitload_extract_function(self.raw, f.as_ptr(), b.as_ptr()) };
        (!raw.is_null()).then_some(Module { raw, ctx: self.ctx, _marker: PhantomData })
    }

    /// Number of instructions in function bodies (a measure of code-generation work).
    pub fn instruction_count(&self) -> usize {
        let mut n = 0;
        // SAFETY: iterating the live module's functions, blocks and instructions read-only.
        unsafe {
            let mut f = LLVMGetFirstFunction(self.raw);
            while !f.is_null() {
                let mut bb = LLVMGetFirstBasicBlock(f);
                while !bb.is_null() {
                    let mut i = LLVMGetFirstInstruction(bb);
                    while !i.is_null() {
                        n += 1;
                        i = LLVMGetNextInstruction(i);
                    }
                    bb = LLVMGetNextBasicBlock(bb);
                }
                f = LLVMGetNextFunction(f);
            }
        }
        n
    }

    /// Whether the module has module-level inline assembly (which may name local symbols,
    /// so the module cannot be split).
    pub fn has_inline_asm(&self) -> bool {
        let mut len = 0usize;
        // SAFETY: raw is live; the returned pointer is valid for len bytes.
        let p = unsafe { LLVMGetModuleInlineAsm(self.raw, &mut len) };
        !p.is_null() && len > 0
    }

    /// Splits the module into up to `parts` pieces (as bitcode, for code generation in other
    /// contexts). Call after `promote_locals`.
    pub fn split_to_bitcode(&self, parts: u32) -> Vec<Vec<u8>> {
        extern "C" {
            fn jitload_split_module(
                m: LLVMModuleRef,
                parts: c_uint,
                emit: extern "C" fn(*mut std::ffi::c_void, *const c_char, usize),
                ctx: *mut std::ffi::c_void,
            ) -> c_uint;
        }
        extern "C" fn collect(ctx: *mut std::ffi::c_void, data: *const c_char, len: usize) {
            // SAFETY: ctx is the Vec passed below, alive for the call; data is valid for len.
            let out = unsafe { &mut *(ctx as *mut Vec<Vec<u8>>) };
            // SAFETY: as above.
            out.push(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }.to_vec());
        }
        let mut out: Vec<Vec<u8>> = Vec::new();
        // SAFETY: raw is live; collect only touches `out`, which outlives the call.
        unsafe { jitload_split_module(self.raw, parts, collect, (&mut out as *mut Vec<Vec<u8>>).cast()) };
        out
    }

    /// A copy keeping only the global variables' definitions (`function: None`) or only the
    /// definition of `function`; the rest become declarations. Call after `promote_locals`.
    pub fn clone_part(&self, function: Option<&str>) -> Module<'ctx> {
        extern "C" {
            fn jitload_clone_module_part(m: LLVMModuleRef, function_name: *const c_char) -> LLVMModuleRef;
        }
        let name = function.map(cstr);
        let name_ptr = name.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        // SAFETY: raw is live; the shim returns a new module in the same context, owned by us.
        let raw = unsafe { jitload_clone_module_part(self.raw, name_ptr) };
        Module { raw, ctx: self.ctx, _marker: PhantomData }
    }

    /// Error diagnostics reported to this module's context since they were last taken.
    pub fn take_context_errors(&self) -> Vec<String> {
        self.ctx.take_errors()
    }

    /// Serialises the module as bitcode.
    pub fn to_bitcode(&self) -> Vec<u8> {
        // SAFETY: raw is live; the returned buffer is owned by us and freed in take_buffer.
        unsafe { take_buffer(LLVMWriteBitcodeToMemoryBuffer(self.raw)) }
    }

    /// Writes the module as bitcode to `path` through a temporary file and a rename, so a
    /// reader never sees half a module.
    pub fn write_bitcode_file(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, self.to_bitcode()).and_then(|_| std::fs::rename(&tmp, path))
    }

    /// The module as textual IR.
    pub fn to_ir_text(&self) -> String {
        // SAFETY: raw is live; the returned string is LLVM-allocated and ours.
        unsafe { take_message(LLVMPrintModuleToString(self.raw)) }
    }
}

impl Drop for Module<'_> {
    fn drop(&mut self) {
        // SAFETY: we still own raw (ownership-moving calls forget self first).
        unsafe { LLVMDisposeModule(self.raw) };
    }
}

/// The value of string attribute `key` at `idx` of function `f`, if present.
///
/// # Safety
/// `f` must be a live function.
unsafe fn string_attribute(f: LLVMValueRef, idx: llvm_sys::LLVMAttributeIndex, key: &str) -> Option<String> {
    // SAFETY: f is live per the caller; key is passed with its length (no NUL needed).
    let attr = unsafe { LLVMGetStringAttributeAtIndex(f, idx, key.as_ptr().cast(), key.len() as c_uint) };
    if attr.is_null() {
        return None;
    }
    let mut len: c_uint = 0;
    // SAFETY: attr is a live string attribute; the value is valid for len bytes.
    let p = unsafe { LLVMGetStringAttributeValue(attr, &mut len) };
    if p.is_null() {
        return Some(String::new());
    }
    // SAFETY: as above.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) };
    Some(String::from_utf8_lossy(bytes).into_owned())
}
