//! Which CPU the JIT *tunes* for (instruction scheduling and cost heuristics), as opposed to
//! the CPU it *targets* (the instructions it may use, always the host's).
//!
//! By default jitload targets the host CPU but tunes for LLVM's `generic` x86-64 model — what
//! clang uses for every ordinary `-O2` build, and so for the `.so` a bitcode module stands in
//! for: the JIT'd code is the `.so`'s code plus the host's instruction-set extensions. Host
//! tuning is not reliably better: on a Zen 3 host, LLVM's `znver3` model turns on the post-RA
//! list scheduler, which reorders xxhash's XXH64 loop (the same instructions) into an order
//! that runs 1.38x slower (docs/benchmarks.md). The host's preferred vector width, which is a
//! tuning choice too (Intel AVX-512 CPUs prefer 256-bit vectors), is kept.
//!
//! One cost is corrected: on Intel CPUs the JIT withholds `avx512dq` from code not compiled
//! for AVX-512 (see [`withheld_features`]).
//!
//! `JITLOAD_TUNE_CPU=host` tunes for the host CPU as well, and withholds nothing (clang's
//! `-march=native`). The choice is part of the object
//! cache key, and read without LLVM (the warm path computes the key too).

/// Whether code is tuned for the host CPU (`JITLOAD_TUNE_CPU=host`) rather than `generic`.
pub fn tune_for_host() -> bool {
    jitload_options::get().tune_for_host
}

/// The object cache key's field for the tuning choice. The generic choice names its rules'
/// revision: objects compiled under older rules (before features were withheld) must miss.
pub fn key_field() -> &'static [u8] {
    if tune_for_host() {
        b"host"
    } else {
        b"generic;withheld-1"
    }
}

/// Target features (`-name` entries for LLVM's feature string) withheld from functions that do
/// not ask for them themselves, although the host has them.
///
/// `avx512dq`, on Intel: its 64-bit vector multiply (`vpmullq`) is 3 uops with a 15-cycle
/// latency on the Intel cores that have it, Skylake-X to Sapphire Rapids (1 uop, 3 cycles on AMD Zen 4), but LLVM's cost
/// model charges a 4-lane `vpmullq` 2 against 1 per scalar `imul`, by throughput. So the SLP
/// vectoriser packs four independent 64-bit multiply chains (XXH64's lanes, most 64-bit hashes)
/// into one vector whose loop-carried latency is 4x the scalar code's: XXH64 ran 2.1x slower
/// on an AVX-512 Xeon (docs/benchmarks.md). xxhash's own source fences these lanes when built
/// with `__AVX512F__`, which bitcode for a lower x86-64 level never sees. A function that
/// asks for `avx512dq` itself (an x86-64-v4 variant, a `target("avx512dq")` function) keeps
/// it: its own features come after these.
pub fn withheld_features(host_features: &str) -> &'static [&'static str] {
    if tune_for_host() {
        return &[];
    }
    withheld_for(host_features, jitload_objload::host::vendor_is_intel())
}

fn withheld_for(host_features: &str, intel: bool) -> &'static [&'static str] {
    if intel && host_features.split(',').any(|f| f == "+avx512dq") {
        &["-avx512dq"]
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::withheld_for;

    #[test]
    fn only_intel_hosts_with_avx512dq_lose_it() {
        let dq = "+avx2,+avx512f,+avx512dq,+avx512vl";
        assert_eq!(withheld_for(dq, true), ["-avx512dq"]);
        assert!(withheld_for(dq, false).is_empty(), "AMD's vpmullq is fast");
        assert!(withheld_for("+avx2,-avx512dq,+avx512f", true).is_empty());
        assert!(withheld_for("+avx2,+avx512dqx", true).is_empty());
    }
}
