//! Builds the two files the wheel ships beside `_native` that maturin cannot build itself, and
//! puts them in the Python package directory (`python/jitload`), where `[tool.maturin]
//! include` adds them to the wheel:
//!
//! * `_fastload.abi3.so`, the LLVM-free module for warm imports: a cdylib of its own
//!   (`jitload-fastload`), built by a nested cargo in a target directory of its own (the outer
//!   cargo holds the lock on this one);
//! * `libjitload_cxxguard.so`, `_fastload`'s C++ exception guards, a shared library loaded
//!   only once libstdc++ is (see `jitload_runtime::cxx`), built with `JITLOAD_GUARD_CXX`
//!   if set (the manylinux build's g++: the guards must run on libstdc++, not zig's libc++);
//! * `libjitload_unwind.so`, loaded before libLLVM so that JIT'd code's unwind information
//!   reaches libgcc_s whichever convention the libLLVM follows (see shim/unwind.c).
//!
//! Doing it here rather than in a Makefile or a PEP 517 wrapper means every route that builds
//! `_native` (pip install/wheel, an sdist, `maturin build`/`develop`, the Makefile) builds a
//! complete wheel. `JITLOAD_SKIP_EXTRAS=1` skips both (for `cargo clippy`/`check` runs).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// The crates `_fastload` is built from: a change in any of them rebuilds it.
const FASTLOAD_SOURCES: &[&str] = &["jitload-fastload", "jitload-runtime", "jitload-pyinit", "jitload-objload", "jitload-cache", "jitload-options", "jitload-codemem"];

fn main() {
    let started = SystemTime::now();
    link_libcxx();
    println!("cargo:rerun-if-env-changed=JITLOAD_SKIP_EXTRAS");
    if env::var_os("JITLOAD_SKIP_EXTRAS").is_some_and(|v| v == "1") {
        return;
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let crates = manifest_dir.parent().expect("crates/ directory");
    let root = crates.parent().expect("workspace root");
    let package = root.join("python").join("jitload");
    let fastload = package.join("_fastload.abi3.so");
    let guard = package.join("libjitload_cxxguard.so");
    let unwind = package.join("libjitload_unwind.so");
    for name in FASTLOAD_SOURCES {
        println!("cargo:rerun-if-changed={}", crates.join(name).display());
    }
    println!("cargo:rerun-if-changed={}", root.join("Cargo.lock").display());
    // A deleted output rebuilds too (cargo reruns a script whose watched file is missing);
    // `copy_if_changed` dates what it writes before this run, or it would always look newer.
    println!("cargo:rerun-if-changed={}", fastload.display());
    println!("cargo:rerun-if-changed={}", guard.display());
    println!("cargo:rerun-if-changed={}", unwind.display());
    println!("cargo:rerun-if-changed={}", manifest_dir.join("shim/unwind.c").display());
    println!("cargo:rerun-if-env-changed=JITLOAD_GUARD_CXX");

    build_fastload(root, &fastload, started);
    build_cxx_guard(&crates.join("jitload-runtime/shim/cxx.cpp"), &guard, started);
    build_unwind(&manifest_dir.join("shim/unwind.c"), &unwind, started);
}

/// With a libc++-based libLLVM (`JITLOAD_LIBCXX_DIR`, see scripts/pip-llvm-prefix.sh) the C++
/// shims link that libLLVM's libc++ by file: a compiler's own (zig's, under `maturin --zig`)
/// would be a second copy, and `-lc++` means zig's.
/// Likewise `JITLOAD_LIBGCC_S`, the library file that replaces the `-lgcc_s` zig drops (see
/// crates/jitload-fastload/build.rs).
fn link_libcxx() {
    println!("cargo:rerun-if-env-changed=JITLOAD_LIBCXX_DIR");
    if let Some(dir) = env::var_os("JITLOAD_LIBCXX_DIR") {
        for lib in ["libc++.so.1", "libc++abi.so.1"] {
            println!("cargo:rustc-link-arg-cdylib={}", Path::new(&dir).join(lib).display());
        }
    }
    println!("cargo:rerun-if-env-changed=JITLOAD_LIBGCC_S");
    if let Some(path) = env::var_os("JITLOAD_LIBGCC_S") {
        println!("cargo:rustc-link-arg-cdylib={}", path.to_string_lossy());
    }
}

/// `cargo build -p jitload-fastload` for this build's target and profile, then a copy of the
/// cdylib into the package under the name Python imports.
fn build_fastload(root: &Path, dest: &Path, started: SystemTime) {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out: a sibling of the
    // profile directories, so it survives `cargo clean -p` and is shared by later builds.
    let nested_target = out_dir.ancestors().nth(4).expect("target directory").join("nested");
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--locked", "-p", "jitload-fastload", "--target", &target])
        .arg("--target-dir")
        .arg(&nested_target);
    if release {
        cmd.arg("--release");
    }
    // What cargo tells this script about *this* package must not leak into the nested build
    // (features, manifest, out dir...); the toolchain settings (linker, rustflags, jobserver,
    // CC/CXX) are inherited on purpose, so `maturin build --zig` builds both modules alike.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let private = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_MANIFEST_")
            || ["OUT_DIR", "TARGET", "HOST", "PROFILE", "OPT_LEVEL", "DEBUG", "NUM_JOBS", "CARGO_PRIMARY_PACKAGE", "CARGO_CRATE_NAME"]
                .contains(&key.as_ref());
        // Under `cargo clippy` the nested build is a plain build, not a second lint run.
        let lint = key == "RUSTC_WORKSPACE_WRAPPER" || key == "CLIPPY_ARGS";
        if private || lint {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build jitload-fastload: {e}"));
    assert!(status.success(), "building jitload-fastload failed ({status})");
    let built = nested_target.join(&target).join(if release { "release" } else { "debug" }).join("lib_fastload.so");
    copy_if_changed(&built, dest, started);
}

/// The guards as a shared library, with the C++ compiler cc would use (CXX, or the target's).
fn build_cxx_guard(source: &Path, dest: &Path, started: SystemTime) {
    let mut command = match env::var_os("JITLOAD_GUARD_CXX") {
        Some(cxx) => Command::new(cxx),
        None => cc::Build::new().cpp(true).cargo_metadata(false).get_compiler().to_command(),
    };
    command.args(["-shared", "-fPIC", "-O2", "-std=c++17", "-fexceptions"]);
    compile_library(command, source, &[], dest, started);
}

/// The unwind-registration library, in C with the C compiler cc would use; `-ldl` for the
/// glibc before 2.34 that a manylinux build targets.
fn build_unwind(source: &Path, dest: &Path, started: SystemTime) {
    let mut command = cc::Build::new().cargo_metadata(false).get_compiler().to_command();
    command.args(["-shared", "-fPIC", "-O2"]);
    compile_library(command, source, &["-ldl", "-lpthread"], dest, started);
}

/// Runs `command` (a compiler and its flags) on `source` then `libraries`, and copies the
/// library it makes to `dest`.
fn compile_library(mut command: Command, source: &Path, libraries: &[&str], dest: &Path, started: SystemTime) {
    let name = dest.file_name().expect("a file name");
    let built = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join(name);
    let status = command
        .arg("-o")
        .arg(&built)
        .arg(source)
        .args(libraries)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the compiler {:?}: {e}", command.get_program()));
    assert!(status.success(), "compiling {} failed ({status})", source.display());
    copy_if_changed(&built, dest, started);
}

/// Copies through a temporary file and a rename, so a process that has the old file mapped
/// keeps it intact; an identical file is left alone. What is written is dated just before
/// `started`, so that cargo, which watches it, does not take it for a change made since.
fn copy_if_changed(from: &Path, to: &Path, started: SystemTime) {
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()));
    if std::fs::read(to).is_ok_and(|old| old == new) {
        return;
    }
    let tmp = to.with_extension("so.tmp");
    std::fs::write(&tmp, &new).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    let file = std::fs::File::options().write(true).open(&tmp).expect("the file just written");
    file.set_modified(started - Duration::from_secs(2)).unwrap_or_else(|e| panic!("cannot date {}: {e}", tmp.display()));
    std::fs::rename(&tmp, to).unwrap_or_else(|e| panic!("cannot write {}: {e}", to.display()));
}
