//! How long linking a cached object takes without LLVM: generates C source that compiles
//! (clang-22 -O2 -fPIC -c) to a ~200 KB object, then times `LoadedObject::load` + drop in
//! this process (first load and steady state), the first load in fresh processes, and, for
//! scale, `dlopen` of the same code linked as a shared library.
//!
//! `cargo run --release -p jitload-objload --example objload_timing [-- FUNCTIONS]`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::ffi::CString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use jitload_objload::LoadedObject;

fn source(functions: usize) -> String {
    let mut s = String::from("#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n#include <math.h>\n");
    s.push_str("static int state[64];\nint counter;\n");
    for i in 0..functions {
        let _ = write!(
            s,
            r#"
static const int table{i}[] = {{{a}, {b}, {c}, {d}, {e}, {f}, {g}, {h}}};
__attribute__((noinline)) int helper{i}(int x) {{ return x * {a} + table{i}[x & 7]; }}
int func{i}(int x, char *buf, int n) {{
    int r = 0;
    switch (x % 9) {{
    case 0: r = helper{i}(x) + state[x & 63]; break;
    case 1: r = (int)strlen("literal number {i} for func{i}"); break;
    case 2: r = snprintf(buf, n, "func{i} %d %s", x, "tag{i}"); break;
    case 3: r = (int)sqrt((double)x * {b}); break;
    case 4: state[x & 63] += x; r = state[(x + {c}) & 63]; break;
    case 5: r = abs(x - {d}) + counter++; break;
    case 6: memset(buf, {e}, n > 8 ? 8 : n); r = buf[0]; break;
    case 7: r = helper{i}(x + 1) - helper{i}(x - 1); break;
    default: r = table{i}[(x >> 3) & 7] * {f};
    }}
    for (int k = 0; k < (x & 15); k++) r = r * 31 + table{i}[k & 7];
    return r;
}}
"#,
            a = i % 97 + 1,
            b = i % 13 + 2,
            c = i % 7 + 3,
            d = i % 31,
            e = 65 + i % 26,
            f = i % 5 + 1,
            g = i % 11,
            h = i % 17,
        );
    }
    s.push_str("int (*entry_points[])(int, char *, int) = {\n");
    for i in 0..functions {
        let _ = writeln!(s, "    func{i},");
    }
    s.push_str("};\n");
    s
}

fn dlsym(handle: *mut libc::c_void, name: &str) -> Option<u64> {
    let c = CString::new(name).ok()?;
    // SAFETY: handle is RTLD_DEFAULT; c is NUL-terminated.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    (!p.is_null()).then_some(p as u64)
}

fn libm() -> *mut libc::c_void {
    // SAFETY: a constant NUL-terminated name; the handle is never closed.
    unsafe { libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW) }
}

fn resolve(name: &str) -> Option<u64> {
    dlsym(libc::RTLD_DEFAULT, name).or_else(|| dlsym(libm(), name))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

fn micros(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One load in a fresh process (the warm-cache import's situation): prints µs.
fn once(object: &Path) {
    let bytes = std::fs::read(object).expect("read object");
    // Warm the resolver (opening libm is its cost, not the loader's).
    let _ = resolve("sqrt");
    let start = Instant::now();
    let obj = LoadedObject::load(&bytes, &resolve).expect("load");
    let elapsed = start.elapsed();
    assert!(obj.symbol("func0").is_some());
    println!("{:.1}", micros(elapsed));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--once") {
        once(Path::new(&args[2]));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--repeat") {
        // For profilers: load and drop OBJECT N times.
        let bytes = std::fs::read(&args[2]).expect("read object");
        let n: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1000);
        for _ in 0..n {
            drop(LoadedObject::load(&bytes, &resolve).expect("load"));
        }
        return;
    }
    let functions: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(130);
    let dir = std::env::temp_dir().join(format!("jitload-objload-timing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let c = dir.join("big.c");
    let o = dir.join("big.o");
    std::fs::write(&c, source(functions)).expect("write source");
    if Command::new("clang-22").arg("--version").output().is_err() {
        eprintln!("clang-22 not found");
        return;
    }
    run(Command::new("clang-22").args(["-c", "-fPIC", "-O2"]).arg(&c).arg("-o").arg(&o));
    let bytes = std::fs::read(&o).expect("read object");

    let start = Instant::now();
    let first = LoadedObject::load(&bytes, &resolve).expect("load");
    let first_time = start.elapsed();
    let stats = first.stats();
    let symbols = first.symbols().count();
    drop(first);

    let mut loads = Vec::new();
    let mut drops = Vec::new();
    for _ in 0..300 {
        let t0 = Instant::now();
        let obj = LoadedObject::load(&bytes, &resolve).expect("load");
        let t1 = Instant::now();
        drop(obj);
        loads.push(micros(t1 - t0));
        drops.push(micros(t1.elapsed()));
    }
    let resolve_time = {
        let names = ["strlen", "snprintf", "sqrt", "memset", "abs"];
        let t0 = Instant::now();
        for _ in 0..1000 {
            for n in names {
                std::hint::black_box(resolve(n));
            }
        }
        micros(t0.elapsed()) / 5000.0
    };

    let me = std::env::current_exe().expect("current exe");
    let fresh: Vec<f64> = (0..10)
        .map(|_| {
            let out = Command::new(&me).arg("--once").arg(&o).output().expect("run --once");
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(f64::NAN)
        })
        .collect();

    // For scale: dlopen of the same code as a shared library (a fresh copy each time).
    let so = dir.join("big.so");
    run(Command::new("clang-22").args(["-shared", "-fPIC", "-O2"]).arg(&c).arg("-o").arg(&so).arg("-lm"));
    let mut dlopens = Vec::new();
    for i in 0..30 {
        let copy: PathBuf = dir.join(format!("big{i}.so"));
        std::fs::copy(&so, &copy).expect("copy .so");
        let path = CString::new(copy.as_os_str().as_encoded_bytes()).expect("path");
        let t0 = Instant::now();
        // SAFETY: a shared library we just built from our own C source (no constructors).
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        let elapsed = t0.elapsed();
        assert!(!handle.is_null());
        assert!(dlsym(handle, "func0").is_some());
        dlopens.push(micros(elapsed));
        // SAFETY: nothing from the library is in use.
        unsafe { libc::dlclose(handle) };
    }
    if std::env::var_os("JITLOAD_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("kept {}", dir.display());
    }

    println!("object: {} bytes ({functions} functions, {symbols} global symbols)", bytes.len());
    println!(
        "image: {} KiB, {} GOT slots, {} stubs, {} relaxed, {} eh_frame registered",
        stats.image_size / 1024,
        stats.got_entries,
        stats.stubs,
        stats.relaxed,
        stats.frames_registered
    );
    println!("first load in this process:      {:8.1} µs", micros(first_time));
    println!("load, median of 300:             {:8.1} µs (min {:.1})", median(loads.clone()), loads.iter().copied().fold(f64::MAX, f64::min));
    println!("drop, median of 300:             {:8.1} µs", median(drops));
    println!("load in a fresh process, median: {:8.1} µs (10 runs: {:?})", median(fresh.clone()), fresh);
    println!("one dlsym resolution:            {:8.2} µs", resolve_time);
    println!("dlopen of the same code as .so:  {:8.1} µs (median of 30 fresh copies)", median(dlopens));
}
