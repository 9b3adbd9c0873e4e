//! The host target: triple, CPU and features, a target machine, the optimiser and codegen.

use std::ffi::c_char;
use std::ptr;

use llvm_sys::target::{LLVMCopyStringRepOfTargetData, LLVMDisposeTargetData};
use llvm_sys::target_machine::*;
use llvm_sys::transforms::pass_builder::{LLVMCreatePassBuilderOptions, LLVMDisposePassBuilderOptions, LLVMRunPasses};

use super::context::Context;
use super::module::{take_buffer, Module};
use super::{check, cstr, take_message};

/// The machine jitload compiles for: the host, with its exact CPU name and features. Code is
/// tuned for `tune` (`generic` unless `JITLOAD_TUNE_CPU=host`, see
/// `jitload_runtime::tuning`), keeping the vector width the host CPU prefers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTarget {
    pub triple: String,
    pub cpu: String,
    pub features: String,
    pub tune: String,
    /// The vector width (bits) the host CPU's own tuning prefers, when tuning for another CPU.
    pub prefer_vector_width: Option<u32>,
    /// Host features functions do not get unless they ask for them (`-avx512dq` on Intel: see
    /// `jitload_runtime::tuning::withheld_features`). `features` stays the host's own.
    pub withheld: &'static [&'static str],
}

impl HostTarget {
    pub fn detect() -> HostTarget {
        super::initialize();
        // SAFETY: each call returns a fresh LLVM-allocated string that take_message frees.
        let (triple, cpu, features) = unsafe {
            let raw_triple = LLVMGetDefaultTargetTriple();
            let triple_norm = LLVMNormalizeTargetTriple(raw_triple);
            let _ = take_message(raw_triple);
            (take_message(triple_norm), take_message(LLVMGetHostCPUName()), take_message(LLVMGetHostCPUFeatures()))
        };
        let tune = if jitload_runtime::tuning::tune_for_host() { cpu.clone() } else { "generic".to_string() };
        let withheld = jitload_runtime::tuning::withheld_features(&features);
        let mut host = HostTarget { triple, cpu, features, tune, prefer_vector_width: None, withheld };
        if host.tune != host.cpu {
            // A target machine costs about half a millisecond: once per process (the host
            // does not change), before any compile child is forked.
            static WIDTH: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
            host.prefer_vector_width = *WIDTH.get_or_init(|| host.preferred_vector_width());
        }
        host
    }

    /// The vector width the host CPU's own tuning gives the vectorisers (LLVM's cost model for
    /// a function targeting and tuned for the host): `generic` tuning alone would let an
    /// AVX-512 Intel CPU use 512-bit vectors, which its tuning avoids.
    fn preferred_vector_width(&self) -> Option<u32> {
        extern "C" {
            fn jitload_preferred_vector_bits(tm: LLVMTargetMachineRef, f: llvm_sys::prelude::LLVMValueRef) -> std::ffi::c_uint;
        }
        let tm = TargetMachine::new(self, OptLevel::O2).ok()?;
        let ctx = Context::new();
        let ir = format!(
            "define void @f() #0 {{\n  ret void\n}}\nattributes #0 = {{ \"target-cpu\"=\"{cpu}\" \"tune-cpu\"=\"{cpu}\" \"target-features\"=\"{features}\" }}\n",
            cpu = self.cpu,
            features = self.features
        );
        let module = Module::parse_ir(&ctx, ir.as_bytes(), "<host>").ok()?;
        // SAFETY: the module is live and defines @f; the name is NUL-terminated.
        let f = unsafe { llvm_sys::core::LLVMGetNamedFunction(module.raw(), c"f".as_ptr()) };
        if f.is_null() {
            return None;
        }
        // SAFETY: tm and f are live; f's module belongs to a context only this thread uses.
        let bits = unsafe { jitload_preferred_vector_bits(tm.raw, f) };
        (bits > 0).then_some(bits)
    }

    /// The feature string functions compile with: the host's, less the withheld ones.
    pub fn function_features(&self) -> String {
        let mut out = self.features.clone();
        for f in self.withheld {
            out.push(',');
            out.push_str(f);
        }
        out
    }

    /// The architecture part of a triple ("x86_64" of "x86_64-pc-linux-gnu").
    pub fn arch_of(triple: &str) -> &str {
        triple.split('-').next().unwrap_or("")
    }

    /// The OS part of a triple, ignoring vendor ("linux" of "x86_64-unknown-linux-gnu").
    pub fn os_of(triple: &str) -> &str {
        let parts: Vec<&str> = triple.split('-').collect();
        match parts.len() {
            0 | 1 => "",
            2 => parts[1],
            _ => parts[2],
        }
    }
}

/// Optimisation level, as clang's -O0..-O3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptLevel {
    O0,
    O1,
    O2,
    O3,
}

impl OptLevel {
    pub fn from_number(n: u8) -> Option<OptLevel> {
        Some(match n {
            0 => OptLevel::O0,
            1 => OptLevel::O1,
            2 => OptLevel::O2,
            3 => OptLevel::O3,
            _ => return None,
        })
    }

    pub fn number(self) -> u8 {
        match self {
            OptLevel::O0 => 0,
            OptLevel::O1 => 1,
            OptLevel::O2 => 2,
            OptLevel::O3 => 3,
        }
    }

    fn codegen(self) -> LLVMCodeGenOptLevel {
        match self {
            OptLevel::O0 => LLVMCodeGenOptLevel::LLVMCodeGenLevelNone,
            OptLevel::O1 => LLVMCodeGenOptLevel::LLVMCodeGenLevelLess,
            OptLevel::O2 => LLVMCodeGenOptLevel::LLVMCodeGenLevelDefault,
            OptLevel::O3 => LLVMCodeGenOptLevel::LLVMCodeGenLevelAggressive,
        }
    }
}

/// An owned target machine for the host. Not thread-safe: one compile at a time.
pub struct TargetMachine {
    raw: LLVMTargetMachineRef,
    opt: OptLevel,
}

// SAFETY: a TargetMachine may move between threads; it is only ever used by one thread at a
// time (owned, or borrowed from the session's pool by one compile).
unsafe impl Send for TargetMachine {}

impl TargetMachine {
    /// A PIC, small-code-model machine for `host`: external data goes through the GOT, which
    /// the JIT linker builds, so code can live anywhere relative to the libraries it uses.
    pub fn new(host: &HostTarget, opt: OptLevel) -> Result<TargetMachine, String> {
        super::initialize();
        let triple = cstr(&host.triple);
        let cpu = cstr(&host.cpu);
        let features = cstr(&host.features);
        let mut target = ptr::null_mut();
        let mut err: *mut c_char = ptr::null_mut();
        // SAFETY: triple is NUL-terminated; target and err are valid out-pointers.
        let failed = unsafe { LLVMGetTargetFromTriple(triple.as_ptr(), &mut target, &mut err) } != 0;
        // SAFETY: err is null or an LLVM message we own.
        let msg = unsafe { take_message(err) };
        if failed {
            return Err(format!("no LLVM target for {}: {msg}", host.triple));
        }
        // SAFETY: target came from LLVMGetTargetFromTriple; the strings are copied.
        let raw = unsafe {
            LLVMCreateTargetMachine(
                target,
                triple.as_ptr(),
                cpu.as_ptr(),
                features.as_ptr(),
                opt.codegen(),
                LLVMRelocMode::LLVMRelocPIC,
                LLVMCodeModel::LLVMCodeModelSmall,
            )
        };
        if raw.is_null() {
            return Err(format!("cannot create a target machine for {}", host.triple));
        }
        extern "C" {
            fn jitload_target_machine_use_emulated_tls(tm: LLVMTargetMachineRef);
        }
        // SAFETY: raw is the live target machine just created; the shim sets one option field.
        // Emulated TLS: thread-locals become `__emutls_v.*` objects (see `crate::cxx`).
        unsafe { jitload_target_machine_use_emulated_tls(raw) };
        Ok(TargetMachine { raw, opt })
    }

    /// The data layout string modules must carry for this machine.
    pub fn opt_level(&self) -> OptLevel {
        self.opt
    }

    pub fn data_layout(&self) -> String {
        // SAFETY: raw is live; the data layout is ours and disposed after copying its string.
        unsafe {
            let td = LLVMCreateTargetDataLayout(self.raw);
            let s = take_message(LLVMCopyStringRepOfTargetData(td));
            LLVMDisposeTargetData(td);
            s
        }
    }

    /// Runs the new pass manager's `default<On>` pipeline on `module`.
    pub fn optimize(&self, module: &mut Module<'_>) -> Result<(), String> {
        let pipeline = cstr(&format!("default<O{}>", self.opt.number()));
        // SAFETY: module and raw are live; the options object is created and disposed here.
        unsafe {
            let opts = LLVMCreatePassBuilderOptions();
            let result = check(LLVMRunPasses(module.raw(), pipeline.as_ptr(), self.raw, opts));
            LLVMDisposePassBuilderOptions(opts);
            result
        }
    }

    /// Generates a relocatable object (ELF on Linux) or textual assembly for `module`.
    pub fn emit(&self, module: &Module<'_>, assembly: bool) -> Result<Vec<u8>, String> {
        let mut err: *mut c_char = ptr::null_mut();
        let mut buf = ptr::null_mut();
        let kind = if assembly { LLVMCodeGenFileType::LLVMAssemblyFile } else { LLVMCodeGenFileType::LLVMObjectFile };
        // SAFETY: raw and module are live; buf and err are valid out-pointers.
        let failed = unsafe { LLVMTargetMachineEmitToMemoryBuffer(self.raw, module.raw(), kind, &mut err, &mut buf) } != 0;
        // SAFETY: err is null or an LLVM message we own.
        let msg = unsafe { take_message(err) };
        if failed || buf.is_null() {
            return Err(msg);
        }
        // SAFETY: buf was just returned to us and is freed by take_buffer.
        Ok(unsafe { take_buffer(buf) })
    }
}

impl Drop for TargetMachine {
    fn drop(&mut self) {
        // SAFETY: raw is owned by us.
        unsafe { LLVMDisposeTargetMachine(self.raw) };
    }
}
