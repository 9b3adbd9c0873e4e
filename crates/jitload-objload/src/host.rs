//! An LLVM-free description of the host CPU for cache keys.
//!
//! jitload's object cache key covers the CPU name and features LLVM detected
//! (`LLVMGetHostCPUName`, `LLVMGetHostCPUFeatures`), which the warm path cannot ask for
//! without loading libLLVM. On x86-64 LLVM derives both from CPUID and XCR0 alone, so the
//! raw values of exactly the leaves LLVM 22's host detection reads are an equivalent (if
//! slightly stricter) key: two hosts with the same fingerprint get the same CPU name and
//! features from LLVM. Per-core values (APIC ids, cache topology, hybrid core type) are
//! left out, so the fingerprint is the same on every core of a machine.

/// The CPUID leaves and XCR0 that determine LLVM's host CPU name and features, as bytes
/// (empty on other architectures). Stable for a given CPU model, microcode feature set and
/// kernel (which decides XCR0); it changes when the process moves to a different CPU.
pub fn cpu_fingerprint() -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    {
        x86::fingerprint()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// Whether the CPU is Intel's (CPUID vendor "GenuineIntel"): the JIT's target set-up tunes a
/// cost the cost model gets wrong on Intel cores only (`jitload_runtime::tuning`).
pub fn vendor_is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        x86::vendor() == *b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{__cpuid_count, _xgetbv, CpuidResult};

    #[allow(unused_unsafe)]
    fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
        // SAFETY: CPUID exists on every x86-64 processor; leaves above the maximum return
        // unspecified (but harmless) values and are never asked for below.
        unsafe { __cpuid_count(leaf, subleaf) }
    }

    #[target_feature(enable = "xsave")]
    unsafe fn xcr0() -> u64 {
        // SAFETY: the caller checked that the OS enabled XSAVE (CPUID.1:ECX.OSXSAVE).
        unsafe { _xgetbv(0) }
    }

    /// The 12-byte vendor string of CPUID leaf 0 (EBX, EDX, ECX in that order).
    pub(super) fn vendor() -> [u8; 12] {
        let leaf0 = cpuid(0, 0);
        let mut out = [0u8; 12];
        for (chunk, v) in out.chunks_mut(4).zip([leaf0.ebx, leaf0.edx, leaf0.ecx]) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub(super) fn fingerprint() -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let mut push = |v: u32| out.extend_from_slice(&v.to_le_bytes());
        let vendor = cpuid(0, 0);
        let max = vendor.eax;
        push(vendor.eax);
        push(vendor.ebx);
        push(vendor.ecx);
        push(vendor.edx);
        let leaf1 = cpuid(1, 0);
        push(leaf1.eax); // family, model, stepping
        push(leaf1.ebx & 0xffff); // brand index, CLFLUSH size (not the APIC id)
        push(leaf1.ecx);
        push(leaf1.edx);
        let leaf = |leaf: u32, subleaf: u32| if leaf <= max { cpuid(leaf, subleaf) } else { CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 } };
        let l7 = leaf(7, 0);
        let l7s1 = leaf(7, 1);
        for v in [l7.ebx, l7.ecx, l7.edx, l7s1.eax, l7s1.ebx, l7s1.edx] {
            push(v);
        }
        push(leaf(0xd, 1).eax); // XSAVE variants
        push(leaf(0x14, 0).ebx); // PTWRITE
        push(leaf(0x19, 0).ebx); // Key Locker
        push(leaf(0x1e, 1).eax); // AMX extensions
        push(leaf(0x24, 0).ebx); // AVX10 version and vector sizes
        let max_ext = cpuid(0x8000_0000, 0).eax;
        push(max_ext);
        let ext = |leaf: u32| if leaf <= max_ext { cpuid(leaf, 0) } else { CpuidResult { eax: 0, ebx: 0, ecx: 0, edx: 0 } };
        let e1 = ext(0x8000_0001);
        push(e1.ecx);
        push(e1.edx);
        for brand in 0x8000_0002..=0x8000_0004 {
            let r = ext(brand);
            for v in [r.eax, r.ebx, r.ecx, r.edx] {
                push(v);
            }
        }
        push(ext(0x8000_0008).ebx); // CLZERO, WBNOINVD, ...
        let osxsave = leaf1.ecx & (1 << 27) != 0;
        // SAFETY: XGETBV is only executed when the OS enabled XSAVE.
        let xcr0 = if osxsave { unsafe { xcr0() } } else { 0 };
        out.extend_from_slice(&xcr0.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vendor_matches_proc_cpuinfo() {
        // The kernel's vendor_id line comes from the same CPUID leaf.
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else { return };
        let Some(line) = info.lines().find(|l| l.starts_with("vendor_id")) else { return };
        assert_eq!(super::vendor_is_intel(), line.trim_end().ends_with("GenuineIntel"), "{line}");
    }

    #[test]
    fn stable_on_every_core() {
        let first = super::cpu_fingerprint();
        if cfg!(target_arch = "x86_64") {
            assert!(first.len() > 64);
        }
        // Run on each CPU the process may use; the fingerprint must not change.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for cpu in 0..cpus {
            let fp = std::thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t with one CPU set, passed by pointer with its size.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                super::cpu_fingerprint()
            })
            .join()
            .expect("thread");
            assert_eq!(fp, first, "cpu {cpu}");
        }
    }
}
