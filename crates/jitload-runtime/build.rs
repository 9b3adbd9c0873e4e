//! Builds the C++-exception guards around calls into JIT'd code, and records the LLVM version
//! and host triple the engine is built against (for cache keys computed without LLVM).

use std::process::Command;

fn llvm_config(prefix: &str, arg: &str) -> String {
    let config = format!("{prefix}/bin/llvm-config");
    let out = Command::new(&config).arg(arg).output().unwrap_or_else(|e| panic!("cannot run {config} (install llvm-22-dev): {e}"));
    assert!(out.status.success(), "{config} {arg} failed");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

fn main() {
    println!("cargo:rerun-if-changed=shim/cxx.cpp");
    println!("cargo:rerun-if-env-changed=LLVM_SYS_221_PREFIX");
    let prefix = std::env::var("LLVM_SYS_221_PREFIX").unwrap_or_else(|_| "/usr/lib/llvm-22".into());
    println!("cargo:rustc-env=JITLOAD_LLVM_VERSION={}", llvm_config(&prefix, "--version"));
    println!("cargo:rustc-env=JITLOAD_LLVM_HOST_TRIPLE={}", llvm_config(&prefix, "--host-target"));
    // With lazy-cxx-guards the shim is a shared library of its own, built beside the module
    // that loads it (see `cxx::guards`), so nothing here links libstdc++.
    if std::env::var_os("CARGO_FEATURE_LAZY_CXX_GUARDS").is_some() {
        return;
    }
    // Exceptions and RTTI on (these guards catch C++ exceptions), so no LLVM flags.
    let mut build = cc::Build::new();
    build.cpp(true).file("shim/cxx.cpp").flag("-std=c++17").flag("-fexceptions").warnings(false);
    // With a libc++-based libLLVM (scripts/pip-llvm-prefix.sh), jitload-py links that libc++.
    println!("cargo:rerun-if-env-changed=JITLOAD_LIBCXX_DIR");
    if std::env::var_os("JITLOAD_LIBCXX_DIR").is_some() {
        build.cpp_link_stdlib(None);
    }
    build.compile("jitload_cxx_shim");
}
