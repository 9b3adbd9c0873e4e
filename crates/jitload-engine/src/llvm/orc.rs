//! ORC v2 through the C API: one LLJIT, bare JITDylibs, resolver-backed definition
//! generators, objects added under resource trackers, and blocking lookups.

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::{Arc, Condvar, Mutex};

use llvm_sys::error::{LLVMCreateStringError, LLVMErrorRef};
use llvm_sys::orc2::lljit::*;
use llvm_sys::orc2::*;
use llvm_sys::prelude::LLVMMemoryBufferRef;

use super::{check, cstr};

/// Resolves a symbol name to an address, or `None` when it is not known.
pub type ResolveFn = dyn Fn(&str) -> Option<u64> + Send + Sync;

/// Errors that ORC reports asynchronously (e.g. a failed materialization), kept until the
/// operation that triggered them collects them.
static REPORTED: Mutex<Vec<String>> = Mutex::new(Vec::new());

extern "C" fn report_error(_ctx: *mut c_void, err: LLVMErrorRef) {
    let _ = catch_unwind(|| {
        if let Err(msg) = check(err) {
            REPORTED.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
        }
    });
}

/// Drains the errors ORC reported asynchronously since the last call.
pub fn take_reported_errors() -> Vec<String> {
    std::mem::take(&mut *REPORTED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The LLJIT instance. Owned; disposing it frees all JIT'd code, so jitload keeps one for
/// the life of the process.
pub struct Jit {
    raw: LLVMOrcLLJITRef,
}

// SAFETY: LLJIT and its ExecutionSession are internally synchronised (ORC is designed for
// concurrent adds and lookups); jitload never hands out the raw pointer.
unsafe impl Send for Jit {}
// SAFETY: as above.
unsafe impl Sync for Jit {}

/// A JITDylib owned by the Jit's ExecutionSession; valid while the Jit lives.
#[derive(Clone, Copy, Debug)]
pub struct Dylib {
    raw: LLVMOrcJITDylibRef,
}
// SAFETY: a JITDylib handle is a pointer into the session, which synchronises access.
unsafe impl Send for Dylib {}
// SAFETY: as above.
unsafe impl Sync for Dylib {}

/// A resource tracker: everything added under it can be removed together.
pub struct Tracker {
    raw: LLVMOrcResourceTrackerRef,
}
// SAFETY: resource trackers are reference-counted and used under the session's locks.
unsafe impl Send for Tracker {}
// SAFETY: as above.
unsafe impl Sync for Tracker {}

impl Tracker {
    /// Removes (frees) all code and data added under this tracker.
    pub fn remove(&self) -> Result<(), String> {
        // SAFETY: raw is a live tracker we hold a reference to.
        check(unsafe { LLVMOrcResourceTrackerRemove(self.raw) })
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // SAFETY: we hold one reference, released once here. Releasing does not remove code.
        unsafe { LLVMOrcReleaseResourceTracker(self.raw) };
    }
}

struct GeneratorCtx {
    resolve: Arc<ResolveFn>,
}

/// Address space ORC's memory manager reserves at a time for linked code (pages are only
/// used as allocations fill them).
const JIT_RESERVATION: usize = 1 << 20;

extern "C" {
    /// shim/jit_memory.cpp: the builder's LLJIT links through jitload-codemem.
    fn jitload_lljit_builder_use_codemem(builder: llvm_sys::orc2::lljit::LLVMOrcLLJITBuilderRef, granularity: usize);
}

impl Jit {
    /// Creates an LLJIT for the host (JITLink object linking layer, host CPU).
    pub fn new() -> Result<Jit, String> {
        super::initialize();
        let mut jtmb = ptr::null_mut();
        // SAFETY: jtmb is a valid out-pointer; on success we own the builder.
        check(unsafe { LLVMOrcJITTargetMachineBuilderDetectHost(&mut jtmb) })?;
        // SAFETY: creating a builder has no preconditions; ownership of jtmb moves into it, and
        // LLVMOrcCreateLLJIT consumes the builder even when it fails.
        let raw = unsafe {
            let builder = LLVMOrcCreateLLJITBuilder();
            LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb);
            // Linked code goes into jitload-codemem's memory (shim/jit_memory.cpp).
            jitload_lljit_builder_use_codemem(builder, JIT_RESERVATION);
            let mut raw = ptr::null_mut();
            check(LLVMOrcCreateLLJIT(&mut raw, builder))?;
            raw
        };
        // SAFETY: raw is a live LLJIT; report_error is valid for the whole process.
        unsafe { LLVMOrcExecutionSessionSetErrorReporter(LLVMOrcLLJITGetExecutionSession(raw), report_error, ptr::null_mut()) };
        Ok(Jit { raw })
    }

    /// Registers every object linked from now on with the GDB JIT interface
    /// (`__jit_debug_register_code`), so gdb sees JIT'd functions, their debug info and their
    /// source lines (ORC's ELF debug-object plugin).
    pub fn enable_debugger_support(&self) -> Result<(), String> {
        // SAFETY: raw is a live LLJIT; the plugin is owned by its object layer.
        check(unsafe { llvm_sys::orc2::lljit::LLVMOrcLLJITEnableDebugSupport(self.raw) })
    }

    fn session(&self) -> LLVMOrcExecutionSessionRef {
        // SAFETY: raw is live; the session is owned by the LLJIT.
        unsafe { LLVMOrcLLJITGetExecutionSession(self.raw) }
    }

    /// The triple LLJIT compiles for.
    pub fn triple(&self) -> String {
        // SAFETY: the string is owned by the LLJIT and lives as long as it.
        unsafe { CStr::from_ptr(LLVMOrcLLJITGetTripleString(self.raw)) }.to_string_lossy().into_owned()
    }

    /// Creates an empty JITDylib with a unique `name` (no platform symbols, no generators).
    pub fn create_dylib(&self, name: &str) -> Dylib {
        let name = cstr(name);
        // SAFETY: the session copies the name; the JITDylib is owned by the session.
        Dylib { raw: unsafe { LLVMOrcExecutionSessionCreateBareJITDylib(self.session(), name.as_ptr()) } }
    }

    /// Makes symbols that `dylib` does not define resolve in `other` (exported ones only),
    /// after the libraries linked before it.
    pub fn add_to_link_order(&self, dylib: Dylib, other: Dylib) {
        extern "C" {
            fn jitload_dylib_add_to_link_order(jd: LLVMOrcJITDylibRef, other: LLVMOrcJITDylibRef);
        }
        // SAFETY: both dylibs belong to this session and are live.
        unsafe { jitload_dylib_add_to_link_order(dylib.raw, other.raw) };
    }

    /// Removes `dylib` from the session, freeing everything still defined in it. The handle
    /// must not be used afterwards.
    pub fn remove_dylib(&self, dylib: Dylib) -> Result<(), String> {
        extern "C" {
            fn jitload_remove_dylib(es: LLVMOrcExecutionSessionRef, jd: LLVMOrcJITDylibRef) -> LLVMErrorRef;
        }
        // SAFETY: dylib belongs to this session; the caller never uses it again.
        check(unsafe { jitload_remove_dylib(self.session(), dylib.raw) })
    }

    /// Drops interned symbol names nothing refers to any more (ORC keeps them otherwise, so
    /// every add/remove cycle of uniquely named code would grow the pool).
    pub fn clear_dead_symbols(&self) {
        // SAFETY: the pool belongs to the live session; clearing dead entries is synchronised
        // by the pool's own lock.
        unsafe { LLVMOrcSymbolStringPoolClearDeadEntries(LLVMOrcExecutionSessionGetSymbolStringPool(self.session())) };
    }

    /// A fresh resource tracker for `dylib`.
    pub fn create_tracker(&self, dylib: Dylib) -> Tracker {
        // SAFETY: dylib is live; the returned tracker is retained for us.
        Tracker { raw: unsafe { LLVMOrcJITDylibCreateResourceTracker(dylib.raw) } }
    }

    /// Attaches a generator that defines any symbol `resolve` knows as an absolute address.
    pub fn add_resolver(&self, dylib: Dylib, resolve: Arc<ResolveFn>) {
        let ctx = Box::into_raw(Box::new(GeneratorCtx { resolve }));
        // SAFETY: ctx is a leaked Box reclaimed exactly once by dispose_generator; the dylib
        // takes ownership of the generator.
        unsafe {
            let generator = LLVMOrcCreateCustomCAPIDefinitionGenerator(try_to_generate, ctx.cast(), dispose_generator);
            LLVMOrcJITDylibAddGenerator(dylib.raw, generator);
        }
    }

    /// Attaches a generator that links members of the static archive at `path` on demand.
    pub fn add_archive(&self, dylib: Dylib, path: &str) -> Result<(), String> {
        let path = cstr(path);
        let mut generator = ptr::null_mut();
        // SAFETY: the object layer is owned by the LLJIT; path is copied; on success the
        // generator is ours until handed to the dylib.
        unsafe {
            let layer = LLVMOrcLLJITGetObjLinkingLayer(self.raw);
            check(LLVMOrcCreateStaticLibrarySearchGeneratorForPath(&mut generator, layer, path.as_ptr()))?;
            LLVMOrcJITDylibAddGenerator(dylib.raw, generator);
        }
        Ok(())
    }

    /// Adds a relocatable object to `dylib` under `tracker`. Linking happens on first lookup.
    pub fn add_object(&self, tracker: &Tracker, object: &[u8], name: &str) -> Result<(), String> {
        let cname = cstr(name);
        // SAFETY: LLVM copies the bytes into a buffer that LLVMOrcLLJITAddObjectFileWithRT then
        // owns on both success and failure.
        unsafe {
            let buf: LLVMMemoryBufferRef = llvm_sys::core::LLVMCreateMemoryBufferWithMemoryRangeCopy(object.as_ptr().cast(), object.len(), cname.as_ptr());
            check(LLVMOrcLLJITAddObjectFileWithRT(self.raw, tracker.raw, buf))
        }
    }

    /// The address of `name` in `dylib` if it defines it (materializing and linking it).
    pub fn lookup_optional(&self, dylib: Dylib, name: &str) -> Option<u64> {
        self.lookup_with(dylib, &[name], LLVMOrcSymbolLookupFlags::LLVMOrcSymbolLookupFlagsWeaklyReferencedSymbol)
            .ok()
            .and_then(|found| found.into_iter().next())
            .filter(|&a| a != 0)
    }

    /// Looks `names` up in `dylib` (materializing and linking them), returning their addresses
    /// in order. All missing names are reported together by ORC.
    pub fn lookup(&self, dylib: Dylib, names: &[&str]) -> Result<Vec<u64>, String> {
        self.lookup_with(dylib, names, LLVMOrcSymbolLookupFlags::LLVMOrcSymbolLookupFlagsRequiredSymbol)
    }

    /// [`Jit::lookup`], also telling for each name whether its definition is weak (weak,
    /// linkonce or common: one the linker may merge with others).
    pub fn lookup_with_weakness(&self, dylib: Dylib, names: &[&str]) -> Result<Vec<(u64, bool)>, String> {
        self.lookup_detailed(dylib, names, LLVMOrcSymbolLookupFlags::LLVMOrcSymbolLookupFlagsRequiredSymbol)
    }

    fn lookup_with(&self, dylib: Dylib, names: &[&str], flags: LLVMOrcSymbolLookupFlags) -> Result<Vec<u64>, String> {
        Ok(self.lookup_detailed(dylib, names, flags)?.into_iter().map(|(a, _)| a).collect())
    }

    fn lookup_detailed(&self, dylib: Dylib, names: &[&str], flags: LLVMOrcSymbolLookupFlags) -> Result<Vec<(u64, bool)>, String> {
        let mut order =
            [LLVMOrcCJITDylibSearchOrderElement { JD: dylib.raw, JDLookupFlags: LLVMOrcJITDylibLookupFlags::LLVMOrcJITDylibLookupFlagsMatchAllSymbols }];
        let mut set: Vec<LLVMOrcCLookupSetElement> = names
            .iter()
            .map(|n| {
                let c = cstr(n);
                LLVMOrcCLookupSetElement {
                    // SAFETY: interning returns a retained entry whose ownership passes to the
                    // lookup, as Orc.h requires.
                    Name: unsafe { LLVMOrcExecutionSessionIntern(self.session(), c.as_ptr()) },
                    LookupFlags: flags,
                }
            })
            .collect();
        let waiter = Arc::new(LookupWaiter::default());
        let ctx = Arc::into_raw(waiter.clone()) as *mut c_void;
        // SAFETY: order and set outlive the call; ctx is an Arc reference reclaimed exactly once
        // in on_lookup_result.
        unsafe {
            LLVMOrcExecutionSessionLookup(
                self.session(),
                LLVMOrcLookupKind::LLVMOrcLookupKindStatic,
                order.as_mut_ptr(),
                1,
                set.as_mut_ptr(),
                set.len(),
                on_lookup_result,
                ctx,
            )
        };
        let result = waiter.wait();
        let map = result?;
        names.iter().map(|n| map.iter().find(|(k, _, _)| k == n).map(|&(_, a, w)| (a, w)).ok_or_else(|| format!("symbol {n} not returned"))).collect()
    }
}

impl Drop for Jit {
    fn drop(&mut self) {
        // SAFETY: raw is owned by us; disposing frees every JITDylib and all JIT'd memory.
        let _ = check(unsafe { LLVMOrcDisposeLLJIT(self.raw) });
    }
}

/// Symbol names, addresses and weakness from a lookup, or ORC's error message.
type LookupResult = Result<Vec<(String, u64, bool)>, String>;

#[derive(Default)]
struct LookupWaiter {
    result: Mutex<Option<LookupResult>>,
    done: Condvar,
}

impl LookupWaiter {
    fn wait(&self) -> LookupResult {
        let mut guard = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = guard.take() {
                return r;
            }
            guard = self.done.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }
}

extern "C" fn on_lookup_result(err: LLVMErrorRef, pairs: LLVMOrcCSymbolMapPairs, n: usize, ctx: *mut c_void) {
    // SAFETY: ctx is the Arc<LookupWaiter> leaked in Jit::lookup; this handler runs once.
    let waiter = unsafe { Arc::from_raw(ctx as *const LookupWaiter) };
    let result = catch_unwind(AssertUnwindSafe(|| {
        check(err)?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: pairs has n elements valid for the duration of this call.
            let pair = unsafe { &*pairs.add(i) };
            // SAFETY: the name entry is valid while the pair array lives.
            let name = unsafe { CStr::from_ptr(LLVMOrcSymbolStringPoolEntryStr(pair.Name)) };
            let weak = pair.Sym.Flags.GenericFlags & LLVMJITSymbolGenericFlags::LLVMJITSymbolGenericFlagsWeak as u8 != 0;
            out.push((name.to_string_lossy().into_owned(), pair.Sym.Address, weak));
        }
        Ok(out)
    }))
    .unwrap_or_else(|_| Err("panic while collecting lookup results".into()));
    *waiter.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    waiter.done.notify_all();
}

extern "C" fn dispose_generator(ctx: *mut c_void) {
    // SAFETY: ctx is the Box<GeneratorCtx> leaked in add_resolver; disposed exactly once.
    drop(unsafe { Box::from_raw(ctx.cast::<GeneratorCtx>()) });
}

extern "C" fn try_to_generate(
    _generator: LLVMOrcDefinitionGeneratorRef,
    ctx: *mut c_void,
    _state: *mut LLVMOrcLookupStateRef,
    _kind: LLVMOrcLookupKind,
    jd: LLVMOrcJITDylibRef,
    _flags: LLVMOrcJITDylibLookupFlags,
    set: LLVMOrcCLookupSet,
    n: usize,
) -> LLVMErrorRef {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx is the live GeneratorCtx of this generator.
        let ctx = unsafe { &*(ctx as *const GeneratorCtx) };
        let mut found: Vec<LLVMOrcCSymbolMapPair> = Vec::new();
        for i in 0..n {
            // SAFETY: set has n valid elements for this call.
            let element = unsafe { &*set.add(i) };
            // SAFETY: the entry is valid while the lookup set lives.
            let name = unsafe { CStr::from_ptr(LLVMOrcSymbolStringPoolEntryStr(element.Name)) };
            let Ok(name_str) = name.to_str() else { continue };
            if let Some(address) = (ctx.resolve)(name_str) {
                // SAFETY: LLVMOrcAbsoluteSymbols takes over one reference per name.
                unsafe { LLVMOrcRetainSymbolStringPoolEntry(element.Name) };
                found.push(LLVMOrcCSymbolMapPair {
                    Name: element.Name,
                    Sym: LLVMJITEvaluatedSymbol {
                        Address: address,
                        Flags: LLVMJITSymbolFlags { GenericFlags: LLVMJITSymbolGenericFlags::LLVMJITSymbolGenericFlagsExported as u8, TargetFlags: 0 },
                    },
                });
            }
        }
        if found.is_empty() {
            return Ok(());
        }
        // SAFETY: found holds retained names; the MU takes ownership of them. On a define
        // failure the MU stays ours and is disposed.
        unsafe {
            let mu = LLVMOrcAbsoluteSymbols(found.as_mut_ptr(), found.len());
            let err = LLVMOrcJITDylibDefine(jd, mu);
            if !err.is_null() {
                LLVMOrcDisposeMaterializationUnit(mu);
                return check(err);
            }
        }
        Ok(())
    }));
    let message = match result {
        Ok(Ok(())) => return ptr::null_mut(),
        Ok(Err(msg)) => msg,
        Err(_) => "panic in jitload symbol generator".to_string(),
    };
    let c = cstr(&message);
    // SAFETY: LLVMCreateStringError copies the message; LLVM takes the returned error.
    unsafe { LLVMCreateStringError(c.as_ptr()) }
}
