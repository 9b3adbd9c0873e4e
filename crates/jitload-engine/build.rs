//! Builds the small C++ shim for what LLVM's C API lacks (crash recovery, link order,
//! module splitting, emulated TLS), against the same LLVM 22 that llvm-sys links.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=shim/guard.cpp");
    println!("cargo:rerun-if-changed=shim/orc.cpp");
    println!("cargo:rerun-if-changed=shim/tiers.cpp");
    println!("cargo:rerun-if-changed=shim/jit_memory.cpp");
    println!("cargo:rerun-if-env-changed=LLVM_SYS_221_PREFIX");
    let prefix = std::env::var("LLVM_SYS_221_PREFIX").unwrap_or_else(|_| "/usr/lib/llvm-22".into());
    let config = format!("{prefix}/bin/llvm-config");
    // Its flags are the shim's ABI: a different llvm-config (scripts/pip-llvm-prefix.sh) rebuilds.
    println!("cargo:rerun-if-changed={config}");
    let out = Command::new(&config).arg("--cxxflags").output().unwrap_or_else(|e| panic!("cannot run {config} (install llvm-22-dev): {e}"));
    assert!(out.status.success(), "{config} --cxxflags failed");
    let flags = String::from_utf8(out.stdout).expect("utf-8 flags");
    let mut build = cc::Build::new();
    build.cpp(true).file("shim/guard.cpp").file("shim/orc.cpp").file("shim/tiers.cpp").file("shim/jit_memory.cpp").warnings(false);
    // LLVM's own flags (include path, -std=c++17, ABI macros, -fno-exceptions) so the shim
    // is ABI-compatible with libLLVM.
    for flag in flags.split_whitespace() {
        build.flag(flag);
    }
    // With a libc++-based libLLVM (scripts/pip-llvm-prefix.sh), jitload-py links that libc++.
    println!("cargo:rerun-if-env-changed=JITLOAD_LIBCXX_DIR");
    if std::env::var_os("JITLOAD_LIBCXX_DIR").is_some() {
        build.cpp_link_stdlib(None);
    }
    build.compile("jitload_shim");
}
