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
//! `JITLOAD_TUNE_CPU=host` tunes for the host CPU as well. The choice is part of the object
//! cache key, and read without LLVM (the warm path computes the key too).

/// Whether code is tuned for the host CPU (`JITLOAD_TUNE_CPU=host`) rather than `generic`.
pub fn tune_for_host() -> bool {
    jitload_options::get().tune_for_host
}

/// The object cache key's field for the tuning choice.
pub fn key_field() -> &'static [u8] {
    if tune_for_host() {
        b"host"
    } else {
        b"generic"
    }
}
