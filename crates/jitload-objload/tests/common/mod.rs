//! Shared test helpers: compiling C/C++ with clang-22 at test time and a resolver that
//! searches the process, libm, libgcc_s and libstdc++.
#![allow(dead_code, clippy::print_stderr)]

use std::ffi::{CStr, CString};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub const CLANG: &str = "clang-22";
pub const CLANGXX: &str = "clang++-22";

/// True if `tool` runs; tests skip (with a message) when clang-22 is missing.
pub fn have(tool: &str) -> bool {
    static FOUND: OnceLock<std::sync::Mutex<std::collections::HashMap<String, bool>>> = OnceLock::new();
    let map = FOUND.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(tool.to_string()).or_insert_with(|| {
        let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("skipping: {tool} not found");
        }
        ok
    })
}

fn scratch_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // One directory for every run (files carry the process id), so runs leave nothing.
        let dir = std::env::temp_dir().join("jitload-objload-tests");
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        dir
    })
    .clone()
}

/// Compiles `source` (C, or C++ when `cxx`) with `flags` (plus `-c -fPIC`) to object bytes.
/// `None` when the compiler is missing (the caller skips).
pub fn compile_with(source: &str, cxx: bool, flags: &[&str]) -> Option<Vec<u8>> {
    compile_file(source, if cxx { "cpp" } else { "c" }, flags)
}

/// What jitload's engine does: C → bitcode (clang-22 -emit-llvm), then code generation for
/// this host's CPU and features with PIC relocations (llc-22, the same back end as the
/// engine's TargetMachine). `None` when either tool is missing.
pub fn compile_via_llc(source: &str, opt: &str) -> Option<Vec<u8>> {
    if !have("llc-22") {
        return None;
    }
    let bitcode = compile_file(source, "c", &["-emit-llvm", opt])?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = scratch_dir();
    let pid = std::process::id();
    let bc = dir.join(format!("llc{pid}-{n}.bc"));
    let obj = dir.join(format!("llc{pid}-{n}.o"));
    std::fs::write(&bc, bitcode).expect("write bitcode");
    let out = Command::new("llc-22")
        .args([opt, "-relocation-model=pic", "-code-model=small", "-mcpu=native", "-filetype=obj"])
        .arg(&bc)
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("run llc-22");
    assert!(out.status.success(), "llc-22 failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&obj).expect("read object");
    let _ = std::fs::remove_file(&bc);
    let _ = std::fs::remove_file(&obj);
    Some(bytes)
}

/// What jitload's engine does above -O0 for a large module: C → bitcode (clang-22
/// `-emit-llvm -O2`), split into `parts` modules with LLVM's SplitModule (`llvm-split-22
/// -j parts` plus `split_flags`, e.g. `--round-robin` as the engine does, or
/// `--preserve-locals`), each piece compiled by llc-22 (`opt`, PIC). The objects in piece
/// order; `None` when a tool is missing.
pub fn compile_split(source: &str, parts: usize, split_flags: &[&str], opt: &str) -> Option<Vec<Vec<u8>>> {
    if !have("llc-22") || !have("llvm-split-22") {
        return None;
    }
    let bitcode = compile_file(source, "c", &["-emit-llvm", "-O2"])?;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let prefix = scratch_dir().join(format!("split{}-{n}", std::process::id()));
    let bc = prefix.with_extension("bc");
    std::fs::write(&bc, bitcode).expect("write bitcode");
    let out = Command::new("llvm-split-22").arg(format!("-j={parts}")).args(split_flags).arg("-o").arg(&prefix).arg(&bc).output().expect("run llvm-split-22");
    assert!(out.status.success(), "llvm-split-22 failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&bc);
    let mut objects = Vec::new();
    for i in 0..parts {
        // llvm-split names the pieces <prefix>0, <prefix>1, ...
        let piece = PathBuf::from(format!("{}{i}", prefix.display()));
        let obj = piece.with_extension("o");
        let out = Command::new("llc-22")
            .args([opt, "-relocation-model=pic", "-mcpu=native", "-filetype=obj"])
            .arg(&piece)
            .arg("-o")
            .arg(&obj)
            .output()
            .expect("run llc-22");
        assert!(out.status.success(), "llc-22 failed on piece {i}:\n{}", String::from_utf8_lossy(&out.stderr));
        objects.push(std::fs::read(&obj).expect("read object"));
        let _ = std::fs::remove_file(&piece);
        let _ = std::fs::remove_file(&obj);
    }
    Some(objects)
}

/// Assembles x86-64 assembly (clang-22's integrated assembler) with `flags`.
pub fn assemble(source: &str, flags: &[&str]) -> Option<Vec<u8>> {
    compile_file(source, "s", flags)
}

fn compile_file(source: &str, extension: &str, flags: &[&str]) -> Option<Vec<u8>> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let tool = if extension == "cpp" { CLANGXX } else { CLANG };
    if !have(tool) {
        return None;
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = scratch_dir();
    let pid = std::process::id();
    let src = dir.join(format!("t{pid}-{n}.{extension}"));
    let obj = dir.join(format!("t{pid}-{n}.o"));
    std::fs::write(&src, source).expect("write source");
    let out = Command::new(tool).args(["-c", "-fPIC"]).args(flags).arg(&src).arg("-o").arg(&obj).output().expect("run clang");
    assert!(out.status.success(), "{tool} {flags:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&obj).expect("read object");
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&obj);
    Some(bytes)
}

pub fn compile_c(source: &str, flags: &[&str]) -> Option<Vec<u8>> {
    compile_with(source, false, flags)
}

fn dlopen(name: &str) -> usize {
    let c = CString::new(name).expect("name");
    // SAFETY: c is NUL-terminated; the handle is never closed.
    unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) as usize }
}

/// Handles of the libraries the resolver searches after the process.
fn libraries() -> &'static [usize] {
    static LIBS: OnceLock<Vec<usize>> = OnceLock::new();
    LIBS.get_or_init(|| ["libm.so.6", "libgcc_s.so.1", "libstdc++.so.6"].iter().map(|n| dlopen(n)).filter(|&h| h != 0).collect())
}

fn dlsym(handle: *mut libc::c_void, name: &str) -> Option<u64> {
    let c = CString::new(name).ok()?;
    // SAFETY: handle is RTLD_DEFAULT or a live handle; c is NUL-terminated.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    (!p.is_null()).then_some(p as u64)
}

/// The process, then libm, libgcc_s and libstdc++ (as jitload's scope would).
pub fn system_resolve(name: &str) -> Option<u64> {
    dlsym(libc::RTLD_DEFAULT, name).or_else(|| libraries().iter().find_map(|&h| dlsym(h as *mut libc::c_void, name)))
}

/// Calls `f` as `extern "C" fn(A...) -> R` at `address`.
#[macro_export]
macro_rules! call {
    ($obj:expr, $name:expr, fn($($t:ty),*) -> $r:ty $(, $arg:expr)*) => {{
        let address = $obj.symbol($name).unwrap_or_else(|| panic!("no symbol {}", $name));
        // SAFETY: the test's C source defines $name with this signature.
        let f: extern "C" fn($($t),*) -> $r = unsafe { std::mem::transmute(address as usize) };
        f($($arg),*)
    }};
}

/// Reads a NUL-terminated string at `p`.
pub fn c_string(p: u64) -> String {
    // SAFETY: the caller passes a pointer to a NUL-terminated string in a loaded object.
    unsafe { CStr::from_ptr(p as *const libc::c_char) }.to_string_lossy().into_owned()
}

/// Every line of /proc/self/maps.
pub fn maps() -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps").expect("read maps").lines().map(str::to_string).collect()
}

/// Resident set size in bytes.
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("statm rss");
    pages * 4096
}

/// A small C program touching most of what the loader handles.
pub const BASIC_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

static int counter = 5;
int global_value = 100;
const char *greeting = "hello from the object";
static const int table[] = {1, 2, 3, 4, 5, 6, 7, 8};
static char scratch[64];

static int add(int a, int b) { return a + b; }
__attribute__((noinline)) int mul(int a, int b) { return a * b; }
static int sub(int a, int b) { return a - b; }
int (*ops[])(int, int) = {add, mul, sub};
void *(*allocator)(size_t) = malloc;

int apply(int op, int a, int b) { return ops[op](a, b); }
int bump(void) { return ++counter; }
int sum_table(void) { int s = 0; for (int i = 0; i < 8; i++) s += table[i]; return s + global_value; }
int calls(int x) { return mul(add(x, 1), 2); }

__attribute__((noinline)) int dispatch(int x) {
    switch (x) {
    case 0: return add(x, counter);
    case 1: counter += 3; return counter;
    case 2: return mul(x, x + 40);
    case 3: return (int)strlen(greeting);
    case 4: return sub(x, 100);
    case 5: return global_value * 2;
    case 6: return table[x] * 11;
    case 7: return abs(-x * 7);
    case 8: return mul(x, 3) + 1;
    default: return -1;
    }
}

int format(char *buf, int n, double x) {
    return snprintf(buf, n, "%s|%d|%.3f|%.3f", greeting, global_value, sqrt(x), cbrt(x));
}
size_t length(const char *s) { return strlen(s); }
const char *scratch_copy(const char *s) { strncpy(scratch, s, sizeof scratch - 1); return scratch; }
const char *literal(int i) { return i ? "second literal" : "first literal"; }
"#;

/// The flag sets every functional test runs with.
pub const VARIANTS: &[&[&str]] = &[
    &["-O2"],
    &["-O2", "-ffunction-sections", "-fdata-sections"],
    &["-O0"],
    &["-O2", "-fno-plt"],
    &["-O2", "-mcmodel=medium"],
    &["-O2", "-mcmodel=large"],
    &["-O2", "-g", "-fstack-protector-strong"],
];

/// C++ with static initialisers (and destructors through `__cxa_atexit`) and exceptions
/// thrown and caught inside the object.
pub const THROW_CPP: &str = r#"
#include <stdexcept>
#include <string>
#include <vector>

static int opaque(int x) { volatile int v = x; return v; }
static std::vector<int> *registry = new std::vector<int>{opaque(1), opaque(2), opaque(3)};
static std::string name = std::string("jit") + std::to_string(opaque(22));

struct Guard { int *n; ~Guard() { *n += 100; } };

__attribute__((noinline)) static void deep(int x) {
    if (x > 3) throw std::runtime_error("too deep: " + std::to_string(x));
    deep(x + 1);
}

extern "C" int thrower(int x) {
    int cleanups = 0;
    try {
        Guard g{&cleanups};
        if (x < 0) throw x;
        deep(x);
        return 1;
    } catch (int v) {
        return v * 2 + cleanups;
    } catch (const std::exception &e) {
        return static_cast<int>(std::string(e.what()).size()) + cleanups;
    }
}

extern "C" int registry_sum() { int s = 0; for (int v : *registry) s += v; return s; }
extern "C" int name_length() { return static_cast<int>(name.size()); }
"#;

/// Three translation units that call each other circularly (`is_odd` ↔ `is_even`), share
/// hidden data, override a weak function with a strong one (`policy`: weak in A and C,
/// strong in B), define one weak variable twice (`tunable`: the first object's wins), keep
/// a function-pointer table in B that points into A, B and C, and each have a constructor
/// (calling B's `record`, so that the compiler cannot evaluate it at compile time).
pub const SET_A: &str = r#"
__attribute__((visibility("hidden"))) int shared_counter = 10;
__attribute__((visibility("hidden"))) int hidden_log[8];
__attribute__((visibility("hidden"))) int hidden_log_len;
int is_even(unsigned n);
int is_odd(unsigned n) { return n == 0 ? 0 : is_even(n - 1); }
__attribute__((weak)) int policy(void) { return 1; }
int use_policy(void) { return policy() * 100; }
__attribute__((weak)) int tunable = 5;
extern int (*const op_table[3])(int, int);
int apply_op(int i, int a, int b) { return op_table[i](a, b); }
int add_a(int a, int b) { return a + b; }
int bump_shared(int by) { shared_counter += by; return shared_counter; }
void record(int v);
__attribute__((constructor(200))) static void init_a(void) { record(200); }
extern void *__dso_handle;
void *dso_a(void) { return &__dso_handle; }
"#;

pub const SET_B: &str = r#"
extern __attribute__((visibility("hidden"))) int shared_counter;
extern __attribute__((visibility("hidden"))) int hidden_log[8];
extern __attribute__((visibility("hidden"))) int hidden_log_len;
int is_odd(unsigned n);
int is_even(unsigned n) { return n == 0 ? 1 : is_odd(n - 1); }
int policy(void) { return 7; }
int add_a(int, int);
int sub_c(int, int);
__attribute__((noinline)) static int mul_b(int a, int b) { return a * b; }
int (*const op_table[3])(int, int) = { add_a, mul_b, sub_c };
int read_shared(void) { return shared_counter; }
int log_entry(int i) { return i < hidden_log_len ? hidden_log[i] : -1; }
void record(int v) { hidden_log[hidden_log_len++] = v; }
__attribute__((constructor(101))) static void init_b(void) { record(101); }
extern void *__dso_handle;
void *dso_b(void) { return &__dso_handle; }
"#;

pub const SET_C: &str = r#"
void record(int v);
int sub_c(int a, int b) { return a - b; }
__attribute__((weak)) int policy(void) { return 3; }
__attribute__((weak)) int tunable = 9;
int read_tunable(void) { return tunable; }
int policy_from_c(void) { return policy(); }
extern int (*const op_table[3])(int, int);
int (*get_op(int i))(int, int) { return op_table[i]; }
__attribute__((constructor)) static void init_c(void) { record(65535); }
"#;

/// One entry of an object's symbol table, as the tests inspect it.
pub struct ElfSymbol {
    pub name: String,
    pub bind: u8,
    pub shndx: u16,
}

/// Every symbol of an ELF relocatable object (test input, so parse errors panic).
pub fn elf_symbols(bytes: &[u8]) -> Vec<ElfSymbol> {
    use object::read::elf::{FileHeader, Sym};
    type Elf = object::elf::FileHeader64<object::LittleEndian>;
    let le = object::LittleEndian;
    let header = Elf::parse(bytes).expect("elf");
    let sections = header.sections(le, bytes).expect("sections");
    let symbols = sections.symbols(le, bytes, object::elf::SHT_SYMTAB).expect("symtab");
    symbols
        .iter()
        .map(|s| ElfSymbol {
            name: String::from_utf8_lossy(symbols.symbol_name(le, s).unwrap_or_default()).into_owned(),
            bind: s.st_bind(),
            shndx: s.st_shndx(le),
        })
        .collect()
}
