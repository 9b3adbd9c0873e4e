//! Under `maturin --zig` (scripts/manylinux-wheel.sh) the linker drops `-lgcc_s`, which defines
//! the `__emutls_get_address` jitload-runtime hands to JIT'd code: `JITLOAD_LIBGCC_S` names
//! the library file to link instead.

fn main() {
    println!("cargo:rerun-if-env-changed=JITLOAD_LIBGCC_S");
    if let Some(path) = std::env::var_os("JITLOAD_LIBGCC_S") {
        println!("cargo:rustc-link-arg-cdylib={}", path.to_string_lossy());
    }
}
