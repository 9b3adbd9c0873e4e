//! Mutation fuzzing of `LoadedObject::load` and `load_all`: ~10,000 mutants of real clang-22 objects
//! (random bit flips, bytes, interesting integers in headers, symbols and relocations,
//! truncation) must each load or fail with an error — never panic or crash. Loading runs
//! no code of the object, so a crash would be a bug in the loader, or in the unwinder
//! reading a registered `.eh_frame` we failed to validate (each loaded mutant makes libgcc
//! parse its frames with `_Unwind_Find_FDE`); batches run in forked children so that a
//! crash is reported with the mutant that caused it. A second run feeds `load_all` pairs of
//! objects that reference each other, one or both mutated.
//!
//! `JITLOAD_FUZZ_ITERATIONS` (default 10000) and `JITLOAD_FUZZ_SEED` change the run.
#![allow(clippy::print_stderr)]

mod common;

use common::*;
use jitload_objload::{LoadError, LoadedObject};
use object::read::elf::{FileHeader, SectionHeader};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// An object and the byte ranges worth mutating most: headers, symbols, relocations.
struct Seed {
    bytes: Vec<u8>,
    hot: Vec<std::ops::Range<usize>>,
}

fn seed(bytes: Vec<u8>) -> Seed {
    type Elf = object::elf::FileHeader64<object::LittleEndian>;
    let le = object::LittleEndian;
    let mut hot = Vec::new();
    hot.push(0..64); // the ELF header
    {
        let header = Elf::parse(&*bytes).expect("elf");
        let shoff = header.e_shoff(le) as usize;
        let sections = header.sections(le, &*bytes).expect("sections");
        hot.push(shoff..shoff + 64 * sections.len());
        for s in sections.iter() {
            let kind = s.sh_type(le);
            let interesting =
                matches!(kind, object::elf::SHT_SYMTAB | object::elf::SHT_RELA | 0x7000_0001) || s.sh_flags(le) & u64::from(object::elf::SHF_ALLOC) != 0;
            if let (true, Some((offset, size))) = (interesting, s.file_range(le)) {
                hot.push(offset as usize..(offset + size) as usize);
            }
        }
    }
    hot.retain(|r| r.start < r.end && r.end <= bytes.len());
    Seed { bytes, hot }
}

const INTERESTING: &[u64] =
    &[0, 1, 2, 4, 7, 8, 0x10, 0x7f, 0x80, 0xff, 0x100, 0xfff0, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x1_0000_0000, u64::MAX, u64::MAX - 7, 1 << 40];

fn mutate(seed: &Seed, rng: &mut Rng) -> Vec<u8> {
    let mut m = seed.bytes.clone();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let region = if rng.below(4) == 0 { 0..m.len() } else { seed.hot[rng.below(seed.hot.len())].clone() };
        let region = region.start.min(m.len())..region.end.min(m.len());
        if region.is_empty() {
            continue;
        }
        let at = region.start + rng.below(region.len());
        match rng.below(10) {
            0..=2 => m[at] ^= 1 << rng.below(8),
            3..=4 => m[at] = rng.next() as u8,
            5..=7 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1usize, 2, 4, 8][rng.below(4)];
                let at = at & !(width - 1);
                for i in 0..width.min(m.len().saturating_sub(at)) {
                    m[at + i] = (value >> (8 * i)) as u8;
                }
            }
            8 => {
                // Copy a chunk from elsewhere (splices plausible values).
                let from = rng.below(m.len());
                let len = (1 + rng.below(16)).min(m.len() - from).min(m.len() - at);
                let chunk = m[from..from + len].to_vec();
                m[at..at + len].copy_from_slice(&chunk);
            }
            _ => {
                if rng.below(4) == 0 {
                    m.truncate(at);
                }
            }
        }
    }
    m
}

extern "C" {
    // libgcc_s: searches registered frames (parsing newly registered ones) and libraries.
    fn _Unwind_Find_FDE(pc: *mut libc::c_void, bases: *mut [usize; 3]) -> *const libc::c_void;
}

fn fde_for(pc: u64) -> bool {
    let mut bases = [0usize; 3];
    // SAFETY: `bases` is the three-pointer struct libgcc fills; `pc` is only compared.
    !unsafe { _Unwind_Find_FDE(pc as *mut libc::c_void, &mut bases) }.is_null()
}

/// A resolver that resolves names to distinct fake addresses, some far, some near, some
/// zero, and leaves names a mutation garbled unresolved. Nothing loaded here ever runs.
fn fake_resolve(name: &str) -> Option<u64> {
    if name == "__dso_handle" || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
        return None;
    }
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    match h % 8 {
        0 => Some(0x10),
        1 => Some(0),
        2 => Some(0x1000 + (h & 0xffff0)),
        _ => Some(0x7f00_0000_0000 + (h & 0xff_ffff_fff0)),
    }
}

/// Loads the object or set made by `load` for mutants `0..iterations`, in forked children
/// (batches of 1000): each must load or fail with an error — never panic or crash. Every
/// loaded image makes the unwinder read its registered frames. Returns (loaded, refused).
fn run_mutants(iterations: usize, base_seed: u64, load: &dyn Fn(usize, &mut Rng) -> Result<LoadedObject, LoadError>) -> (u64, u64) {
    const BATCH: usize = 1000;
    // Shared with the children: [next mutant index, loaded ok, refused].
    // SAFETY: an anonymous shared mapping of three words, unmapped at the end of the test.
    let shared = unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0) };
    assert_ne!(shared, libc::MAP_FAILED);
    let words = shared as *mut u64;
    let (mut loaded, mut refused) = (0u64, 0u64);
    let mut start = 0;
    while start < iterations {
        let end = (start + BATCH).min(iterations);
        // SAFETY: fork in a test process: the child only runs the loader on data it owns,
        // uses malloc (fork-safe in glibc), writes to the shared page and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut code = 0;
            for i in start..end {
                // SAFETY: words points to the shared page (3 words); only this child writes.
                unsafe { words.write_volatile(i as u64) };
                let mut rng = Rng(base_seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
                let load_and_unwind = || {
                    load(i, &mut rng).map(|obj| {
                        // Make the unwinder read the registered .eh_frame now, as any
                        // exception or panic in the process would (GCC 12 parses lazily).
                        let code = obj.code_range();
                        fde_for(code.start);
                        fde_for(code.start + (code.end - code.start) / 2);
                        fde_for(fde_for as *const () as u64);
                    })
                };
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(load_and_unwind)) {
                    // SAFETY: as above.
                    Ok(Ok(())) => unsafe { *words.add(1) += 1 },
                    // SAFETY: as above.
                    Ok(Err(_)) => unsafe { *words.add(2) += 1 },
                    Err(_) => {
                        code = 3;
                        break;
                    }
                }
            }
            // SAFETY: leaves the child without running the parent's exit handlers or tests.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(waited, pid);
        // SAFETY: the child has exited; the page is ours again.
        let last = unsafe { words.read_volatile() };
        if libc::WIFSIGNALED(status) {
            panic!("mutant {last} (JITLOAD_FUZZ_SEED={base_seed}) crashed the loader with signal {}", libc::WTERMSIG(status));
        }
        assert!(libc::WIFEXITED(status));
        assert_eq!(libc::WEXITSTATUS(status), 0, "mutant {last} (JITLOAD_FUZZ_SEED={base_seed}) made the loader panic");
        // SAFETY: as above.
        unsafe {
            loaded += *words.add(1);
            refused += *words.add(2);
            *words.add(1) = 0;
            *words.add(2) = 0;
        }
        start = end;
    }
    // SAFETY: the mapping created above; no child uses it any more.
    unsafe { libc::munmap(shared, 4096) };
    (loaded, refused)
}

fn settings() -> (usize, u64) {
    let iterations: usize = std::env::var("JITLOAD_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let base_seed: u64 = std::env::var("JITLOAD_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_0b1e);
    (iterations, base_seed)
}

fn check_counts(what: &str, iterations: usize, (loaded, refused): (u64, u64)) {
    eprintln!("{iterations} {what}: {loaded} loaded, {refused} refused");
    assert_eq!(loaded + refused, iterations as u64);
    if iterations >= 1000 {
        assert!(loaded > iterations as u64 / 20, "mutations too destructive to exercise loading: {loaded}");
        assert!(refused > iterations as u64 / 20, "mutations too mild to exercise validation: {refused}");
    }
}

#[test]
fn mutated_objects_never_panic_or_crash() {
    let mut seeds = Vec::new();
    for flags in [&["-O2"][..], &["-O2", "-ffunction-sections", "-fdata-sections"], &["-O0"], &["-O2", "-mcmodel=large"]] {
        let Some(bytes) = compile_c(BASIC_C, flags) else { return };
        seeds.push(seed(bytes));
    }
    if let Some(bytes) = compile_with(THROW_CPP, true, &["-O2"]) {
        seeds.push(seed(bytes));
    }
    for s in &seeds {
        LoadedObject::load(&s.bytes, &fake_resolve).expect("the unmutated seeds load");
    }
    let (iterations, base_seed) = settings();
    let counts = run_mutants(iterations, base_seed, &|i, rng| LoadedObject::load(&mutate(&seeds[i % seeds.len()], rng), &fake_resolve));
    check_counts("mutants", iterations, counts);
}

/// `load_all` of two objects that reference each other (a set from the functional tests),
/// both mutated, or one of them (a third of the time each).
#[test]
fn mutated_sets_never_panic_or_crash() {
    let mut pairs = Vec::new();
    for flags in [&["-O2"][..], &["-O2", "-ffunction-sections", "-fdata-sections"], &["-O0"]] {
        let (Some(a), Some(b)) = (compile_c(SET_A, flags), compile_c(SET_B, flags)) else { return };
        pairs.push((seed(a), seed(b)));
    }
    for (a, b) in &pairs {
        LoadedObject::load_all(&[&a.bytes, &b.bytes], &fake_resolve).expect("the unmutated sets load");
    }
    let (iterations, base_seed) = settings();
    let counts = run_mutants(iterations, base_seed ^ 0x5e75, &|i, rng| {
        let (a, b) = &pairs[i % pairs.len()];
        let (a, b) = match rng.below(3) {
            0 => (mutate(a, rng), b.bytes.clone()),
            1 => (a.bytes.clone(), mutate(b, rng)),
            _ => (mutate(a, rng), mutate(b, rng)),
        };
        LoadedObject::load_all(&[&a, &b], &fake_resolve)
    });
    check_counts("mutated sets", iterations, counts);
}
