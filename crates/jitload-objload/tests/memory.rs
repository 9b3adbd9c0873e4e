//! Freeing: drop unmaps the image and deregisters its unwind information; loading and
//! dropping thousands of times does not grow the process. Tests here run one at a time
//! (they read process-wide state: /proc/self/maps, RSS, the unwinder's registry).
#![allow(clippy::print_stderr)]

mod common;

use std::sync::Mutex;

use common::*;
use jitload_objload::LoadedObject;

static SERIAL: Mutex<()> = Mutex::new(());

extern "C" {
    // libgcc_s: the FDE covering `pc` among registered frames and loaded libraries.
    fn _Unwind_Find_FDE(pc: *mut libc::c_void, bases: *mut [usize; 3]) -> *const libc::c_void;
}

fn fde_for(pc: u64) -> bool {
    let mut bases = [0usize; 3];
    // SAFETY: `bases` is the three-pointer struct libgcc fills; `pc` is only compared.
    !unsafe { _Unwind_Find_FDE(pc as *mut libc::c_void, &mut bases) }.is_null()
}

/// Mappings that start at `base` with permissions `perms` ("r-xp", ...).
fn mapped_at(base: u64, perms: &str) -> usize {
    maps()
        .iter()
        .filter(|l| {
            let mut parts = l.split_whitespace();
            let range = parts.next().unwrap_or("");
            let p = parts.next().unwrap_or("");
            range.split('-').next().and_then(|s| u64::from_str_radix(s, 16).ok()) == Some(base) && p == perms
        })
        .count()
}

#[test]
fn drop_unmaps_and_deregisters() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bytes) = compile_c(BASIC_C, &["-O2"]) else { return };
    let obj = LoadedObject::load(&bytes, &system_resolve).expect("load");
    let (base, len) = obj.image();
    let mul = obj.symbol("mul").expect("mul");
    assert_eq!(mapped_at(base, "r-xp"), 1, "code mapped read+execute");
    let ro = maps().iter().any(|l| l.contains(" r--p ") && l.starts_with(&format!("{:x}-", base + 4096)));
    assert!(ro, "read-only data follows the code");
    assert!(fde_for(mul + 1), "unwind information registered");
    drop(obj);
    assert_eq!(mapped_at(base, "r-xp"), 0, "code unmapped");
    let overlapping = maps()
        .iter()
        .filter(|l| {
            let range = l.split_whitespace().next().unwrap_or("");
            let mut it = range.split('-').map(|s| u64::from_str_radix(s, 16).unwrap_or(0));
            let (start, end) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
            start < base + len as u64 && end > base && l.contains("xp")
        })
        .count();
    assert_eq!(overlapping, 0, "nothing executable left in the old image");
    assert!(!fde_for(mul + 1), "unwind information deregistered");
}

#[test]
fn load_and_drop_ten_thousand_times() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bytes) = compile_c(BASIC_C, &["-O2", "-ffunction-sections", "-fdata-sections"]) else { return };
    let cycle = || {
        let obj = LoadedObject::load(&bytes, &system_resolve).expect("load");
        assert_eq!(call!(obj, "calls", fn(i32) -> i32, 4), 10);
    };
    for _ in 0..500 {
        cycle();
    }
    let (rss_before, maps_before) = (rss(), maps().len());
    let start = std::time::Instant::now();
    for _ in 0..10_000 {
        cycle();
    }
    let elapsed = start.elapsed();
    let (rss_after, maps_after) = (rss(), maps().len());
    eprintln!(
        "10000 load+call+drop: {:.1} µs each; RSS {} KiB -> {} KiB; {} -> {} mappings",
        elapsed.as_secs_f64() * 1e6 / 10_000.0,
        rss_before / 1024,
        rss_after / 1024,
        maps_before,
        maps_after
    );
    assert!(rss_after < rss_before + (4 << 20), "RSS grew from {rss_before} to {rss_after}");
    assert!(maps_after <= maps_before + 2, "mappings grew from {maps_before} to {maps_after}");
}

#[test]
fn cxx_objects_with_exceptions_and_static_destructors_free_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(bytes) = compile_with(THROW_CPP, true, &["-O2"]) else { return };
    let cycle = || {
        let obj = LoadedObject::load(&bytes, &system_resolve).expect("load");
        for &f in obj.init_functions() {
            // SAFETY: the object's C++ static initialisers (they register the destructor of
            // a static std::string with __cxa_atexit, which drop finalises).
            let f: extern "C" fn() = unsafe { std::mem::transmute(f as usize) };
            f();
        }
        assert_eq!(call!(obj, "thrower", fn(i32) -> i32, 0), 111);
        assert_eq!(call!(obj, "thrower", fn(i32) -> i32, -1), 98);
    };
    for _ in 0..200 {
        cycle();
    }
    let (rss_before, maps_before) = (rss(), maps().len());
    for _ in 0..2_000 {
        cycle();
    }
    let (rss_after, maps_after) = (rss(), maps().len());
    eprintln!("2000 C++ load+init+throw+drop: RSS {} KiB -> {} KiB", rss_before / 1024, rss_after / 1024);
    // Each cycle leaks the object's own `new std::vector` (a few dozen bytes, by design).
    assert!(rss_after < rss_before + (4 << 20), "RSS grew from {rss_before} to {rss_after}");
    assert!(maps_after <= maps_before + 2, "mappings grew from {maps_before} to {maps_after}");
}
