//! `LoadedObject::load_all`: several objects linked as one image, as jitload's engine
//! produces them when it splits a module and compiles the pieces in parallel.

use std::cell::RefCell;
use std::collections::HashMap;

use super::common::*;
use crate::call;
use jitload_objload::{LoadError, LoadedObject, SymbolKind};

/// PIC, PIE (clang's default without -fPIC), sections per function and variable, non-PIC
/// (large code model: 64-bit absolute addresses), and unoptimised.
const SET_VARIANTS: &[&[&str]] =
    &[&["-O2"], &["-O2", "-fPIE"], &["-O2", "-ffunction-sections", "-fdata-sections"], &["-O2", "-fno-pic", "-mcmodel=large"], &["-O0"]];

fn load_set(objects: &[&[u8]]) -> LoadedObject {
    LoadedObject::load_all(objects, &system_resolve).unwrap_or_else(|e| panic!("load_all failed: {e}"))
}

fn run_constructors(obj: &LoadedObject) {
    for &f in obj.init_functions() {
        // SAFETY: a constructor of the loaded set.
        let f: extern "C" fn() = unsafe { std::mem::transmute(f as usize) };
        f();
    }
}

fn read_i32(address: u64) -> i32 {
    // SAFETY: the callers pass the address of an int in a loaded object's data.
    unsafe { *(address as *const i32) }
}

#[test]
fn circular_objects_link_as_one_image() {
    for flags in SET_VARIANTS {
        let (Some(a), Some(b), Some(c)) = (compile_c(SET_A, flags), compile_c(SET_B, flags), compile_c(SET_C, flags)) else { return };
        let obj = load_set(&[&a, &b, &c]);
        let ctx = format!("{flags:?}");
        for n in 0..12u32 {
            assert_eq!(call!(obj, "is_odd", fn(u32) -> i32, n), (n % 2) as i32, "{ctx} is_odd({n})");
            assert_eq!(call!(obj, "is_even", fn(u32) -> i32, n), (n % 2 == 0) as i32, "{ctx} is_even({n})");
        }
        // The strong definition in B wins over the weak ones in A and C, for callers in A
        // and C too.
        assert_eq!(call!(obj, "policy", fn() -> i32), 7, "{ctx}");
        assert_eq!(call!(obj, "use_policy", fn() -> i32), 700, "{ctx}");
        assert_eq!(call!(obj, "policy_from_c", fn() -> i32), 7, "{ctx}");
        // Two weak definitions: the first object's, also for C's reader.
        assert_eq!(call!(obj, "read_tunable", fn() -> i32), 5, "{ctx}");
        assert_eq!(read_i32(obj.symbol("tunable").expect("tunable")), 5, "{ctx}");
        // A table in B of functions in A, B and C, called from A and read from C.
        for (i, (a, b)) in [(6, 3), (-4, 9), (100, 58)].into_iter().enumerate() {
            let want = [a + b, a * b, a - b][i];
            assert_eq!(call!(obj, "apply_op", fn(i32, i32, i32) -> i32, i as i32, a, b), want, "{ctx} op {i}");
        }
        assert_eq!(call!(obj, "get_op", fn(i32) -> u64, 0), obj.symbol("add_a").expect("add_a"), "{ctx}");
        assert_eq!(call!(obj, "get_op", fn(i32) -> u64, 2), obj.symbol("sub_c").expect("sub_c"), "{ctx}");
        // Hidden data defined in A, written by A, read by B.
        let start = read_i32(obj.symbol("shared_counter").expect("shared_counter"));
        assert_eq!(call!(obj, "bump_shared", fn(i32) -> i32, 5), start + 5, "{ctx}");
        assert_eq!(call!(obj, "read_shared", fn() -> i32), start + 5, "{ctx}");
        // Constructors by priority across the set (B's 101, A's 200, then C's default).
        assert_eq!(obj.init_functions().len(), 3, "{ctx}");
        assert_eq!(call!(obj, "log_entry", fn(i32) -> i32, 0), -1, "{ctx}: loading ran a constructor");
        run_constructors(&obj);
        let log: Vec<i32> = (0..4).map(|i| call!(obj, "log_entry", fn(i32) -> i32, i)).collect();
        assert_eq!(log, [101, 200, 65535, -1], "{ctx}");
        // One __dso_handle for the set, inside the image.
        let (base, len) = obj.image();
        let dso = call!(obj, "dso_a", fn() -> u64);
        assert_eq!(dso, call!(obj, "dso_b", fn() -> u64), "{ctx}");
        assert!(dso >= base && dso < base + len as u64, "{ctx}");
        // Every object's unwind information, and exports from every object.
        assert_eq!(obj.stats().frames_registered, 3, "{ctx}: {:?}", obj.stats());
        for name in ["is_odd", "is_even", "sub_c", "op_table", "hidden_log", "read_tunable"] {
            let info = obj.symbol_info(name).unwrap_or_else(|| panic!("{ctx}: no export {name}"));
            assert!(info.address >= base && info.address < base + len as u64, "{ctx}: {name}");
        }
        assert_eq!(obj.symbol_info("op_table").map(|s| (s.kind, s.size)), Some((SymbolKind::Data, 24)), "{ctx}");
        assert_eq!(obj.symbols().filter(|(n, _)| *n == "policy").count(), 1, "{ctx}");
        assert!(obj.symbol("init_a").is_none(), "{ctx}: a local symbol exported");
    }
}

#[test]
fn the_first_weak_definition_wins_in_set_order() {
    let (Some(a), Some(b), Some(c)) = (compile_c(SET_A, &["-O2"]), compile_c(SET_B, &["-O2"]), compile_c(SET_C, &["-O2"])) else { return };
    let obj = load_set(&[&c, &b, &a]);
    assert_eq!(call!(obj, "read_tunable", fn() -> i32), 9);
    assert_eq!(read_i32(obj.symbol("tunable").expect("tunable")), 9);
    assert_eq!(call!(obj, "use_policy", fn() -> i32), 700);
    run_constructors(&obj);
    let log: Vec<i32> = (0..3).map(|i| call!(obj, "log_entry", fn(i32) -> i32, i)).collect();
    assert_eq!(log, [101, 200, 65535], "priorities order constructors across the set");
}

/// A module with static functions and data used across functions, a static and a public
/// table of function pointers, string constants and mutual recursion: once split, most of
/// these cross pieces (locals promoted to hidden globals, unless `--preserve-locals`).
const SPLIT_C: &str = r#"
#include <string.h>

static int state[16];
static const char *const names[] = {"alpha", "beta", "gamma", "delta"};
static int calls;

__attribute__((noinline)) static int square(int x) { calls++; return x * x; }
__attribute__((noinline)) static int name_length(int i) { calls++; return (int)strlen(names[i & 3]); }
__attribute__((noinline)) static int accumulate(int i, int v) { state[i & 15] += v; return state[i & 15]; }
__attribute__((noinline)) int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
__attribute__((noinline)) int is_even(unsigned n);
__attribute__((noinline)) static int is_odd(unsigned n) { return n == 0 ? 0 : is_even(n - 1); }
__attribute__((noinline)) int is_even(unsigned n) { return n == 0 ? 1 : is_odd(n - 1); }
__attribute__((noinline)) static int op_add(int a, int b) { return a + b; }
__attribute__((noinline)) static int op_mul(int a, int b) { return square(a) - square(b) + a * b; }
__attribute__((noinline)) static int op_names(int a, int b) { return name_length(a) * 10 + name_length(b); }
__attribute__((noinline)) static int op_acc(int a, int b) { return accumulate(a, b); }
static int (*const ops[])(int, int) = {op_add, op_mul, op_names, op_acc};
int (*const public_ops[])(int, int) = {op_mul, op_names};

__attribute__((noinline)) int apply(int op, int a, int b) { return ops[op & 3](a, b); }
__attribute__((noinline)) int combine(int x) { return apply(0, x, 1) + apply(1, x, 2) + apply(2, x, x + 1) + fib(x & 15); }
__attribute__((noinline)) int parity_sum(int n) { int s = 0; for (int i = 0; i < n; i++) s += is_even(i) * i; return s; }
__attribute__((noinline)) int through_public(int i, int a, int b) { return public_ops[i & 1](a, b); }
__attribute__((noinline)) int bump(int i, int v) { return apply(3, i, v); }
__attribute__((noinline)) int call_count(void) { return calls; }
__attribute__((noinline)) const char *name_of(int i) { return names[i & 3]; }
"#;

/// (name, defined) for every global symbol of an object.
fn globals(bytes: &[u8]) -> Vec<(String, bool)> {
    elf_symbols(bytes).into_iter().filter(|s| s.bind != object::elf::STB_LOCAL).map(|s| (s.name, s.shndx != object::elf::SHN_UNDEF)).collect()
}

/// How many (piece, other piece) pairs have the first referencing a definition of the other.
fn cross_references(pieces: &[Vec<u8>]) -> Vec<(usize, usize)> {
    let tables: Vec<_> = pieces.iter().map(|p| globals(p)).collect();
    let mut pairs = Vec::new();
    for (i, ti) in tables.iter().enumerate() {
        for (j, tj) in tables.iter().enumerate() {
            let refers = ti.iter().any(|(n, def)| !def && tj.iter().any(|(m, d)| *d && m == n));
            if i != j && refers {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// Calls every function of SPLIT_C with a range of arguments, in a fixed order.
fn split_results(obj: &LoadedObject) -> Vec<i64> {
    let mut out = Vec::new();
    for x in 0..20 {
        out.push(call!(obj, "fib", fn(i32) -> i32, x).into());
        out.push(call!(obj, "combine", fn(i32) -> i32, x).into());
        out.push(call!(obj, "parity_sum", fn(i32) -> i32, x).into());
        out.push(call!(obj, "is_even", fn(u32) -> i32, x as u32).into());
        for op in 0..4 {
            out.push(call!(obj, "apply", fn(i32, i32, i32) -> i32, op, x, 7 - x).into());
        }
        out.push(call!(obj, "through_public", fn(i32, i32, i32) -> i32, x, x + 1, 3).into());
        out.push(call!(obj, "bump", fn(i32, i32) -> i32, x % 5, x).into());
        out.push(c_string(call!(obj, "name_of", fn(i32) -> u64, x)).len() as i64);
    }
    out.push(call!(obj, "call_count", fn() -> i32).into());
    out
}

fn fib(n: i32) -> i32 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

#[test]
fn split_module_pieces_link_as_one() {
    let Some(whole) = compile_via_llc(SPLIT_C, "-O2") else { return };
    let reference = split_results(&LoadedObject::load(&whole, &system_resolve).expect("load the unsplit module"));
    for split_flags in [&["--round-robin"][..], &[], &["--preserve-locals"]] {
        let Some(pieces) = compile_split(SPLIT_C, 3, split_flags, "-O2") else { return };
        let ctx = format!("llvm-split {split_flags:?}");
        let crossing = cross_references(&pieces);
        assert!(!crossing.is_empty(), "{ctx}: the pieces do not reference each other");
        if split_flags.is_empty() || split_flags == ["--round-robin"] {
            // Externalised locals reference each other both ways.
            assert!(crossing.iter().any(|&(i, j)| crossing.contains(&(j, i))), "{ctx}: no circular references: {crossing:?}");
        }
        let views: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let obj = load_set(&views);
        for x in 0..20 {
            assert_eq!(call!(obj, "fib", fn(i32) -> i32, x), fib(x), "{ctx}");
            assert_eq!(call!(obj, "is_even", fn(u32) -> i32, x as u32), (x % 2 == 0) as i32, "{ctx}");
            let parity: i32 = (0..x).filter(|i| i % 2 == 0).sum();
            assert_eq!(call!(obj, "parity_sum", fn(i32) -> i32, x), parity, "{ctx}");
        }
        assert_eq!(c_string(call!(obj, "name_of", fn(i32) -> u64, 2)), "gamma", "{ctx}");
        // Everything else as the same module compiled whole, on a fresh copy.
        drop(obj);
        let obj = load_set(&views);
        assert_eq!(split_results(&obj), reference, "{ctx}");
        assert_eq!(obj.stats().frames_registered, pieces.len(), "{ctx}");
    }
}

#[test]
fn duplicate_strong_definitions_are_an_error() {
    let one = compile_c("int twice(void) { return 1; } int only_one(void) { return 0; }", &["-O2"]);
    let two = compile_c("int other(void) { return 3; }", &["-O2"]);
    let three = compile_c("int twice(void) { return 2; }", &["-O2"]);
    let (Some(one), Some(two), Some(three)) = (one, two, three) else { return };
    match LoadedObject::load_all(&[&one, &two, &three], &system_resolve) {
        Err(e @ LoadError::DuplicateSymbol { .. }) => {
            let message = e.to_string();
            let LoadError::DuplicateSymbol { name, first, second } = e else { unreachable!() };
            assert_eq!((name.as_str(), first, second), ("twice", 0, 2));
            assert!(message.contains("'twice'") && message.contains('0') && message.contains('2'), "{message}");
        }
        other => panic!("expected DuplicateSymbol, got {other:?}"),
    }
    // Without the second definition, the set loads.
    let obj = load_set(&[&one, &two]);
    assert_eq!(call!(obj, "twice", fn() -> i32), 1);
}

#[test]
fn unresolved_names_across_the_set_are_listed_together() {
    let first = compile_c("extern int nope_a(void), in_second(void); int f(void) { return nope_a() + in_second(); }", &["-O2"]);
    let second = compile_c("extern int nope_c, nope_b(void), nope_a(void); int in_second(void) { return nope_b() + nope_a() + nope_c; }", &["-O2"]);
    let (Some(first), Some(second)) = (first, second) else { return };
    let asked = RefCell::new(HashMap::<String, usize>::new());
    let resolve = |name: &str| {
        *asked.borrow_mut().entry(name.to_string()).or_default() += 1;
        None
    };
    match LoadedObject::load_all(&[&first, &second], &resolve) {
        Err(LoadError::Unresolved(names)) => assert_eq!(names, ["nope_a", "nope_b", "nope_c"]),
        other => panic!("expected Unresolved, got {other:?}"),
    }
    let asked = asked.into_inner();
    assert_eq!(asked.get("nope_a"), Some(&1), "resolve called once per name: {asked:?}");
    assert_eq!(asked.get("in_second"), None, "a name the set defines went to resolve: {asked:?}");
}

#[test]
fn a_set_of_one_behaves_like_load() {
    let Some(bytes) = compile_c(BASIC_C, &["-O2"]) else { return };
    let single = LoadedObject::load(&bytes, &system_resolve).expect("load");
    let set = load_set(&[&bytes]);
    super::check_basic(&set, &["load_all of one"]);
    let relative = |obj: &LoadedObject| {
        let base = obj.image().0;
        let mut symbols: Vec<_> = obj.symbols().map(|(n, s)| (n.to_string(), s.address - base, s.size, s.kind)).collect();
        symbols.sort_by(|a, b| a.0.cmp(&b.0));
        symbols
    };
    assert_eq!(relative(&single), relative(&set));
    assert_eq!(single.stats(), set.stats());
    assert_eq!(single.image().1, set.image().1);
    assert_eq!(single.init_functions().len(), set.init_functions().len());
}

#[test]
fn an_empty_set_loads_nothing() {
    let obj = LoadedObject::load_all(&[], &system_resolve).expect("empty set");
    assert_eq!(obj.image(), (0, 0));
    assert_eq!(obj.symbols().count(), 0);
}

#[test]
fn common_symbols_merge_across_the_set() {
    let first = compile_c("int common_buf[4]; int *first_buf(void) { return common_buf; }", &["-O2", "-fcommon"]);
    let second = compile_c("int common_buf[64]; int *second_buf(void) { return common_buf; }", &["-O2", "-fcommon"]);
    let (Some(first), Some(second)) = (first, second) else { return };
    let obj = load_set(&[&first, &second]);
    let address = obj.symbol("common_buf").expect("common_buf");
    assert_eq!(call!(obj, "first_buf", fn() -> u64), address);
    assert_eq!(call!(obj, "second_buf", fn() -> u64), address);
    assert_eq!(obj.symbol_info("common_buf").map(|s| s.size), Some(256), "the largest size wins");
    let (base, len) = obj.image();
    assert!(address + 256 <= base + len as u64);
    // R_X86_64_SIZE32 against a COMMON symbol that a larger one in another object absorbs.
    let small = assemble(".comm blob, 16, 8\n.text\n.globl blob_size\nblob_size: movl $blob@SIZE, %eax\nret\n", &[]);
    let large = assemble(".comm blob, 64, 32\n", &[]);
    let (Some(small), Some(large)) = (small, large) else { return };
    let obj = load_set(&[&small, &large]);
    assert_eq!(call!(obj, "blob_size", fn() -> u32), 64);
    assert_eq!(obj.symbol("blob").map(|a| a % 32), Some(0), "the largest alignment wins");
}

#[test]
fn cxx_exceptions_cross_objects() {
    let thrower = r#"
        #include <stdexcept>
        extern "C" int thrower(int x) { if (x > 0) throw std::runtime_error("positive"); return -x; }
    "#;
    let catcher = r#"
        #include <stdexcept>
        #include <string>
        extern "C" int thrower(int x);
        extern "C" int catcher(int x) {
            try { return thrower(x); } catch (const std::exception &e) { return 1000 + (int)std::string(e.what()).size(); }
        }
    "#;
    for flags in [&["-O2"][..], &["-O0"]] {
        let (Some(t), Some(c)) = (compile_with(thrower, true, flags), compile_with(catcher, true, flags)) else { return };
        let obj = load_set(&[&c, &t]);
        run_constructors(&obj);
        assert_eq!(call!(obj, "catcher", fn(i32) -> i32, -5), 5, "{flags:?}");
        assert_eq!(call!(obj, "catcher", fn(i32) -> i32, 5), 1008, "{flags:?}");
        assert_eq!(obj.stats().frames_registered, 2, "{flags:?}");
    }
}

#[test]
fn errors_in_a_set_name_the_object() {
    let (Some(a), Some(b)) = (compile_c(SET_A, &["-O2"]), compile_c(SET_B, &["-O2"])) else { return };
    let mut wrong_machine = b.clone();
    wrong_machine[18] = 183; // EM_AARCH64
    match LoadedObject::load_all(&[&a, &wrong_machine], &system_resolve) {
        Err(LoadError::Malformed(m)) => assert!(m.starts_with("object 1: ") && m.contains("machine"), "{m}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
    // A only: B's definitions are missing.
    match LoadedObject::load_all(&[&a], &system_resolve) {
        Err(LoadError::Unresolved(names)) => assert_eq!(names, ["is_even", "op_table", "record"]),
        other => panic!("expected Unresolved, got {other:?}"),
    }
}
