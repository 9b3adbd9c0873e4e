//! Functional tests: C and C++ compiled by clang-22 at test time, loaded and run.
#![allow(clippy::print_stderr)]

#[path = "../common/mod.rs"]
mod common;
mod set;

use common::*;
use jitload_objload::{LoadError, LoadedObject, SymbolKind};

fn load(bytes: &[u8]) -> LoadedObject {
    LoadedObject::load(bytes, &system_resolve).unwrap_or_else(|e| panic!("load failed: {e}"))
}

fn check_basic(obj: &LoadedObject, flags: &[&str]) {
    let ctx = format!("{flags:?}");
    assert_eq!(call!(obj, "mul", fn(i32, i32) -> i32, 6, 7), 42, "{ctx}");
    assert_eq!(call!(obj, "calls", fn(i32) -> i32, 4), 10, "{ctx}");
    // Function pointers in data (R_X86_64_64 to local functions).
    assert_eq!(call!(obj, "apply", fn(i32, i32, i32) -> i32, 0, 2, 3), 5, "{ctx}");
    assert_eq!(call!(obj, "apply", fn(i32, i32, i32) -> i32, 1, 2, 3), 6, "{ctx}");
    assert_eq!(call!(obj, "apply", fn(i32, i32, i32) -> i32, 2, 2, 3), -1, "{ctx}");
    // Static and global data.
    assert_eq!(call!(obj, "bump", fn() -> i32), 6, "{ctx}");
    assert_eq!(call!(obj, "bump", fn() -> i32), 7, "{ctx}");
    assert_eq!(call!(obj, "sum_table", fn() -> i32), 136, "{ctx}");
    let global = obj.symbol("global_value").expect("global_value");
    // SAFETY: global_value is an int in the object's writable data.
    unsafe { *(global as *mut i32) = 200 };
    assert_eq!(call!(obj, "sum_table", fn() -> i32), 236, "{ctx}");
    assert_eq!(obj.symbol_info("global_value").map(|s| (s.kind, s.size)), Some((SymbolKind::Data, 4)), "{ctx}");
    assert_eq!(obj.symbol_info("mul").map(|s| s.kind), Some(SymbolKind::Function), "{ctx}");
    assert!(obj.code_range().contains(&obj.symbol("mul").unwrap_or(0)), "{ctx}");
    // A switch: a jump table at -O2.
    let expected = [7, 10, 84, 21, -96, 400, 77, 49, 25, -1];
    for (x, &want) in expected.iter().enumerate() {
        assert_eq!(call!(obj, "dispatch", fn(i32) -> i32, x as i32), want, "{ctx} dispatch({x})");
    }
    // String literals in merge sections, libc and libm.
    assert_eq!(c_string(call!(obj, "literal", fn(i32) -> u64, 0)), "first literal", "{ctx}");
    assert_eq!(c_string(call!(obj, "literal", fn(i32) -> u64, 1)), "second literal", "{ctx}");
    let mut buf = [0u8; 128];
    let n = call!(obj, "format", fn(*mut u8, i32, f64) -> i32, buf.as_mut_ptr(), buf.len() as i32, 27.0);
    let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    assert_eq!(text, "hello from the object|200|5.196|3.000", "{ctx}");
    assert_eq!(call!(obj, "length", fn(*const u8) -> usize, c"four".as_ptr().cast()), 4, "{ctx}");
    assert_eq!(c_string(call!(obj, "scratch_copy", fn(*const u8) -> u64, c"copied".as_ptr().cast())), "copied", "{ctx}");
    // A pointer to a libc function stored in data.
    let allocator = obj.symbol("allocator").expect("allocator");
    // SAFETY: `allocator` is a function pointer variable in the object's data.
    assert_eq!(Some(unsafe { *(allocator as *const u64) }), system_resolve("malloc"), "{ctx}");
}

#[test]
fn c_program_in_every_variant() {
    for flags in VARIANTS {
        let Some(bytes) = compile_c(BASIC_C, flags) else { return };
        let obj = load(&bytes);
        check_basic(&obj, flags);
        let stats = obj.stats();
        assert!(stats.frames_registered >= 1, "{flags:?}: {stats:?}");
        eprintln!("{flags:?}: {stats:?}");
    }
}

#[test]
fn objects_from_llvm_code_generation_for_this_host() {
    for opt in ["-O2", "-O3", "-O0"] {
        let Some(bytes) = compile_via_llc(BASIC_C, opt) else { return };
        let obj = load(&bytes);
        check_basic(&obj, &["llc-22", opt]);
    }
}

#[test]
fn unaligned_input_is_copied() {
    let Some(bytes) = compile_c(BASIC_C, &["-O2"]) else { return };
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    let obj = load(&shifted[1..]);
    check_basic(&obj, &["unaligned"]);
}

#[test]
fn two_copies_are_independent() {
    let Some(bytes) = compile_c(BASIC_C, &["-O2"]) else { return };
    let a = load(&bytes);
    let b = load(&bytes);
    assert_eq!(call!(a, "bump", fn() -> i32), 6);
    assert_eq!(call!(a, "bump", fn() -> i32), 7);
    assert_eq!(call!(b, "bump", fn() -> i32), 6);
}

#[test]
fn int128_division_through_libgcc() {
    let src = r#"
        __int128 div128(__int128 a, __int128 b) { return a / b; }
        unsigned __int128 udiv128(unsigned __int128 a, unsigned __int128 b) { return a / b; }
        __int128 mod128(__int128 a, __int128 b) { return a % b; }
    "#;
    for flags in VARIANTS {
        let Some(bytes) = compile_c(src, flags) else { return };
        // libgcc_s must be reached through the resolver (it is dlopened, not the process).
        let obj = load(&bytes);
        let a: i128 = -(1i128 << 100) - 12345;
        let b: i128 = 1_000_000_007;
        assert_eq!(call!(obj, "div128", fn(i128, i128) -> i128, a, b), a / b);
        assert_eq!(call!(obj, "mod128", fn(i128, i128) -> i128, a, b), a % b);
        assert_eq!(call!(obj, "udiv128", fn(u128, u128) -> u128, u128::MAX, 3), u128::MAX / 3);
    }
}

extern "C" fn far_callback(x: i32) -> i32 {
    x * 1000 + 7
}

static FAR_DATA: i32 = 31337;

#[test]
fn far_externals_go_through_stubs() {
    let src = r#"
        extern int far_callback(int);
        extern const int far_data;
        int call_far(int x) { return far_callback(x) + 1; }
        int tail_far(int x) { return far_callback(x); }
        int read_far(void) { return far_data; }
        int (*far_pointer(void))(int) { return far_callback; }
    "#;
    for flags in VARIANTS {
        let Some(bytes) = compile_c(src, flags) else { return };
        let resolve = |name: &str| match name {
            "far_callback" => Some(far_callback as *const () as u64),
            "far_data" => Some(&FAR_DATA as *const i32 as u64),
            _ => None,
        };
        let obj = LoadedObject::load(&bytes, &resolve).expect("load");
        assert_eq!(call!(obj, "call_far", fn(i32) -> i32, 5), 5008, "{flags:?}");
        assert_eq!(call!(obj, "tail_far", fn(i32) -> i32, 2), 2007, "{flags:?}");
        assert_eq!(call!(obj, "read_far", fn() -> i32), 31337, "{flags:?}");
        assert_eq!(call!(obj, "far_pointer", fn() -> u64), far_callback as *const () as u64, "{flags:?}");
        let distance = (far_callback as *const () as i64 - obj.code_range().start as i64).unsigned_abs();
        let stats = obj.stats();
        let direct_calls = !flags.contains(&"-fno-plt") && !flags.contains(&"-mcmodel=large");
        if distance > (1 << 31) && direct_calls {
            assert!(stats.calls_through_stubs >= 1, "{flags:?}: {stats:?}");
        }
    }
}

#[test]
fn weak_undefined_symbols() {
    let src = r#"
        extern int maybe(void) __attribute__((weak));
        extern int maybe_data __attribute__((weak));
        int has_maybe(void) { return maybe ? maybe() : -1; }
        int has_data(void) { return &maybe_data ? maybe_data : -2; }
    "#;
    extern "C" fn maybe() -> i32 {
        77
    }
    for flags in VARIANTS {
        let Some(bytes) = compile_c(src, flags) else { return };
        let missing = LoadedObject::load(&bytes, &|_: &str| None).expect("weak symbols may be missing");
        assert_eq!(call!(missing, "has_maybe", fn() -> i32), -1, "{flags:?}");
        assert_eq!(call!(missing, "has_data", fn() -> i32), -2, "{flags:?}");
        let present = LoadedObject::load(&bytes, &|n: &str| (n == "maybe").then_some(maybe as *const () as u64)).expect("load");
        assert_eq!(call!(present, "has_maybe", fn() -> i32), 77, "{flags:?}");
    }
}

#[test]
fn unresolved_symbols_are_listed_at_once() {
    let src = r#"
        extern int nope_b(void), nope_a(void);
        extern int nope_c;
        int f(void) { return nope_a() + nope_b() + nope_c + (int)__builtin_strlen(""); }
    "#;
    let Some(bytes) = compile_c(src, &["-O2"]) else { return };
    match LoadedObject::load(&bytes, &|_: &str| None) {
        Err(LoadError::Unresolved(names)) => assert_eq!(names, ["nope_a", "nope_b", "nope_c"]),
        other => panic!("expected Unresolved, got {other:?}"),
    }
}

#[test]
fn common_symbols_live_in_bss() {
    let src = r#"
        int common_var;
        double common_array[100];
        int get_common(void) { return common_var + (int)common_array[99]; }
        void set_common(int v) { common_var = v; common_array[99] = v; }
    "#;
    let Some(bytes) = compile_c(src, &["-O2", "-fcommon"]) else { return };
    let has_common = elf_symbols(&bytes).iter().any(|s| s.name == "common_var" && s.shndx == object::elf::SHN_COMMON);
    assert!(has_common, "clang did not emit a COMMON symbol");
    let obj = load(&bytes);
    assert_eq!(call!(obj, "get_common", fn() -> i32), 0);
    call!(obj, "set_common", fn(i32) -> (), 21);
    assert_eq!(call!(obj, "get_common", fn() -> i32), 42);
    let (base, len) = obj.image();
    let var = obj.symbol("common_var").expect("common_var");
    assert!(var >= base && var < base + len as u64);
    assert_eq!(var % 4, 0);
    assert_eq!(obj.symbol("common_array").map(|a| a % 8), Some(0));
}

#[test]
fn large_bss_is_not_touched() {
    let src = r#"
        static char big[256 << 20];
        char *big_ptr(void) { return big; }
        int touch(int i) { big[i] += 1; return big[i]; }
    "#;
    let Some(bytes) = compile_c(src, &["-O2"]) else { return };
    let obj = load(&bytes);
    let (_, len) = obj.image();
    assert!(len >= 256 << 20);
    assert_eq!(call!(obj, "touch", fn(i32) -> i32, 0), 1);
    assert_eq!(call!(obj, "touch", fn(i32) -> i32, (256 << 20) - 1), 1);
    assert_eq!(call!(obj, "touch", fn(i32) -> i32, (256 << 20) - 1), 2);
}

#[test]
fn constructors_and_destructors_are_reported() {
    let src = r#"
        static volatile int seed = 4;
        int initialized, order[3], n, finalized;
        __attribute__((constructor(200))) static void late(void) { order[n++] = 200 + (seed - 4); }
        __attribute__((constructor(101))) static void early(void) { order[n++] = 101 + (seed - 4); }
        __attribute__((constructor)) static void init(void) { initialized = seed * 10; order[n++] = 0; }
        __attribute__((destructor)) static void fini(void) { finalized += 1; }
        int get_initialized(void) { return initialized; }
        int get_order(int i) { return order[i]; }
        int get_finalized(void) { return finalized; }
    "#;
    for flags in VARIANTS {
        let Some(bytes) = compile_c(src, flags) else { return };
        let obj = load(&bytes);
        assert_eq!(obj.init_functions().len(), 3, "{flags:?}");
        assert_eq!(obj.fini_functions().len(), 1, "{flags:?}");
        assert_eq!(call!(obj, "get_initialized", fn() -> i32), 0);
        for &f in obj.init_functions() {
            // SAFETY: a constructor of the loaded object.
            let f: extern "C" fn() = unsafe { std::mem::transmute(f as usize) };
            f();
        }
        assert_eq!(call!(obj, "get_initialized", fn() -> i32), 40, "{flags:?}");
        let order: Vec<i32> = (0..3).map(|i| call!(obj, "get_order", fn(i32) -> i32, i)).collect();
        assert_eq!(order, [101, 200, 0], "{flags:?}");
        for &f in obj.fini_functions() {
            // SAFETY: a destructor of the loaded object.
            let f: extern "C" fn() = unsafe { std::mem::transmute(f as usize) };
            f();
        }
        assert_eq!(call!(obj, "get_finalized", fn() -> i32), 1, "{flags:?}");
    }
}

#[test]
fn cxx_exceptions_thrown_and_caught_inside() {
    for flags in [&["-O2"][..], &["-O0"], &["-O2", "-ffunction-sections", "-fdata-sections"], &["-O2", "-mcmodel=large"]] {
        let Some(bytes) = compile_with(THROW_CPP, true, flags) else { return };
        let obj = load(&bytes);
        for &f in obj.init_functions() {
            // SAFETY: a constructor of the loaded object (the C++ static initialisers).
            let f: extern "C" fn() = unsafe { std::mem::transmute(f as usize) };
            f();
        }
        assert_eq!(call!(obj, "registry_sum", fn() -> i32), 6, "{flags:?}");
        assert_eq!(call!(obj, "name_length", fn() -> i32), 5, "{flags:?}");
        assert_eq!(call!(obj, "thrower", fn(i32) -> i32, -21), 58, "{flags:?}");
        // "too deep: 4" is 11 characters, plus the guard's cleanup.
        assert_eq!(call!(obj, "thrower", fn(i32) -> i32, 0), 111, "{flags:?}");
        assert_eq!(call!(obj, "thrower", fn(i32) -> i32, 9), 111, "{flags:?}");
    }
}

#[test]
fn thread_local_storage_is_refused() {
    let src = "__thread int tls_var; int get_tls(void) { return tls_var; }";
    for flags in [&["-O2"][..], &["-O2", "-fdata-sections"]] {
        let Some(bytes) = compile_c(src, flags) else { return };
        match LoadedObject::load(&bytes, &system_resolve) {
            Err(LoadError::Unsupported(what)) => assert_eq!(what, "thread-local storage"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
    // Only an extern TLS variable: no .tbss, just TLS relocations and symbol.
    let Some(bytes) = compile_c("extern __thread int tls_var; int get_tls(void) { return tls_var; }", &["-O2"]) else { return };
    assert!(matches!(LoadedObject::load(&bytes, &system_resolve), Err(LoadError::Unsupported(w)) if w == "thread-local storage"));
}

/// Byte offsets of every RELA entry's `r_info` in `bytes`, with the section it applies to.
fn rela_entries(bytes: &[u8]) -> Vec<(usize, String)> {
    use object::read::elf::{FileHeader, SectionHeader};
    type Elf = object::elf::FileHeader64<object::LittleEndian>;
    let le = object::LittleEndian;
    let header = Elf::parse(bytes).expect("elf");
    let sections = header.sections(le, bytes).expect("sections");
    let mut out = Vec::new();
    for s in sections.iter() {
        if s.sh_type(le) != object::elf::SHT_RELA {
            continue;
        }
        let target = sections.section(object::SectionIndex(s.sh_info(le) as usize)).expect("target");
        let name = String::from_utf8_lossy(sections.section_name(le, target).unwrap_or_default()).into_owned();
        let (offset, size) = s.file_range(le).expect("range");
        for i in 0..size as usize / 24 {
            out.push((offset as usize + 24 * i + 8, name.clone()));
        }
    }
    out
}

#[test]
fn unknown_relocations_are_refused() {
    let Some(bytes) = compile_c(BASIC_C, &["-O2"]) else { return };
    let entries = rela_entries(&bytes);
    let (info, section) = entries.iter().find(|(_, s)| s == ".text").expect("a .text relocation").clone();
    for (kind, tls) in [(0x7eu32, false), (7, false), (8, false), (37, false), (19, true), (22, true)] {
        let mut patched = bytes.clone();
        patched[info..info + 4].copy_from_slice(&kind.to_le_bytes());
        match LoadedObject::load(&patched, &system_resolve) {
            Err(LoadError::UnsupportedRelocation { kind: k, section: s, symbol }) if !tls => {
                assert_eq!((k, s.as_str()), (kind, section.as_str()));
                assert!(!symbol.is_empty());
                let message = LoadError::UnsupportedRelocation { kind: k, section: s, symbol }.to_string();
                assert!(message.contains("unsupported relocation"), "{message}");
            }
            Err(LoadError::Unsupported(what)) if tls => assert_eq!(what, "thread-local storage"),
            other => panic!("type {kind}: unexpected {other:?}"),
        }
    }
}

#[test]
fn out_of_range_absolute_relocations_are_errors() {
    // Non-PIC code with a 32-bit absolute address cannot be placed at our mapping's address.
    let src = "int x; int *addr(void) { return &x; }";
    let Some(bytes) = compile_c(src, &["-O2", "-fno-pic", "-mcmodel=small", "-fno-pie"]) else { return };
    match LoadedObject::load(&bytes, &system_resolve) {
        Err(LoadError::RelocationOverflow { kind, .. }) => assert!(kind == 10 || kind == 11, "{kind}"),
        Ok(obj) => assert_eq!(call!(obj, "addr", fn() -> u64), obj.symbol("x").unwrap_or(0)), // mapped low
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_headers_are_errors() {
    let Some(bytes) = compile_c(BASIC_C, &["-O2"]) else { return };
    assert!(matches!(LoadedObject::load(&[], &system_resolve), Err(LoadError::Malformed(_))));
    assert!(matches!(LoadedObject::load(&bytes[..100], &system_resolve), Err(LoadError::Malformed(_))));
    let mut wrong_machine = bytes.clone();
    wrong_machine[18] = 183; // EM_AARCH64
    assert!(matches!(LoadedObject::load(&wrong_machine, &system_resolve), Err(LoadError::Malformed(m)) if m.contains("machine")));
    let mut not_rel = bytes.clone();
    not_rel[16] = 3; // ET_DYN
    assert!(matches!(LoadedObject::load(&not_rel, &system_resolve), Err(LoadError::Malformed(_))));
}

#[test]
fn gcc_objects_load_too() {
    // Not a requirement (the cache holds LLVM output), but a second producer catches
    // assumptions about section order and relocation choice.
    if !have("gcc") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("jitload-objload-gcc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let src = dir.join("basic.c");
    let obj = dir.join("basic.o");
    std::fs::write(&src, BASIC_C).expect("write");
    let ok = std::process::Command::new("gcc").args(["-c", "-fPIC", "-O2"]).arg(&src).arg("-o").arg(&obj).status();
    if !ok.is_ok_and(|s| s.success()) {
        return;
    }
    let bytes = std::fs::read(&obj).expect("read");
    let _ = std::fs::remove_dir_all(&dir);
    let loaded = load(&bytes);
    check_basic(&loaded, &["gcc"]);
}

/// Every relocation kind compilers rarely emit, written out in assembly.
const RELOCATIONS_S: &str = r#"
        .text
        .globl  size32
size32: movl    $blob@SIZE, %eax                    # R_X86_64_SIZE32
        ret

        .globl  got_base
got_base:
        leaq    _GLOBAL_OFFSET_TABLE_(%rip), %rax   # R_X86_64_GOTPC32
        ret

        .globl  got32_offset
got32_offset:
        movl    $blob@GOT, %eax                     # R_X86_64_GOT32
        ret

        .globl  blob_gotoff
blob_gotoff:
.Lpb:   leaq    .Lpb(%rip), %rax
        movabsq $_GLOBAL_OFFSET_TABLE_-.Lpb, %rcx   # R_X86_64_GOTPC64
        addq    %rcx, %rax
        movabsq $blob@GOTOFF, %rcx                  # R_X86_64_GOTOFF64
        addq    %rcx, %rax
        ret

        .globl  blob_got64
blob_got64:
.Lpb2:  leaq    .Lpb2(%rip), %rax
        movabsq $_GLOBAL_OFFSET_TABLE_-.Lpb2, %rcx
        addq    %rcx, %rax
        movabsq $blob@GOT, %rcx                     # R_X86_64_GOT64
        movq    (%rax,%rcx), %rax
        ret

        .globl  ext_pltoff
ext_pltoff:
.Lpb3:  leaq    .Lpb3(%rip), %rax
        movabsq $_GLOBAL_OFFSET_TABLE_-.Lpb3, %rcx
        addq    %rcx, %rax
        movabsq $ext_fn@PLTOFF, %rcx                # R_X86_64_PLTOFF64
        addq    %rcx, %rax
        ret

        .globl  blob_gotpcrel
blob_gotpcrel:
        movq    blob@GOTPCREL(%rip), %rax           # R_X86_64_GOTPCREL (relaxation off)
        ret

        .globl  call_ext
call_ext:
        jmp     ext_fn@PLT                          # R_X86_64_PLT32 (tail call)

        .section .rodata,"a"
        .globl  pc64_value
pc64_value:
        .quad   blob - .                            # R_X86_64_PC64
        .globl  size64_value
size64_value:
        .quad   blob@SIZE                           # R_X86_64_SIZE64
        .globl  pc16_value
pc16_value:
        .short  size32 - .                          # R_X86_64_PC16

        .data
        .globl  blob
        .type   blob,@object
        .size   blob, 24
blob:   .quad 1, 2, 3
"#;

extern "C" fn ext_fn(x: i64) -> i64 {
    x + 1000
}

#[test]
fn rare_relocation_kinds_from_assembly() {
    let Some(bytes) = assemble(RELOCATIONS_S, &["-Wa,-mrelax-relocations=no"]) else { return };
    let ext = ext_fn as *const () as u64;
    let obj = LoadedObject::load(&bytes, &|n: &str| (n == "ext_fn").then_some(ext)).expect("load");
    let blob = obj.symbol("blob").expect("blob");
    assert_eq!(call!(obj, "size32", fn() -> u32), 24);
    let got = call!(obj, "got_base", fn() -> u64);
    let (base, len) = obj.image();
    assert!(got >= base && got < base + len as u64);
    let offset = call!(obj, "got32_offset", fn() -> u32) as u64;
    // SAFETY: got + offset is blob's GOT slot, inside the image.
    assert_eq!(unsafe { *((got + offset) as *const u64) }, blob);
    assert_eq!(call!(obj, "blob_gotoff", fn() -> u64), blob);
    assert_eq!(call!(obj, "blob_got64", fn() -> u64), blob);
    assert_eq!(call!(obj, "blob_gotpcrel", fn() -> u64), blob);
    let target = call!(obj, "ext_pltoff", fn() -> u64);
    // SAFETY: PLTOFF64 leads to ext_fn (directly or through its stub).
    let f: extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(target as usize) };
    assert_eq!(f(5), 1005);
    assert_eq!(call!(obj, "call_ext", fn(i64) -> i64, 7), 1007);
    let read = |name: &str| obj.symbol(name).unwrap_or_else(|| panic!("{name}"));
    let pc64 = read("pc64_value");
    // SAFETY: the three values are in the object's read-only data.
    unsafe {
        assert_eq!(pc64.wrapping_add(*(pc64 as *const u64)), blob);
        assert_eq!(*(read("size64_value") as *const u64), 24);
        let pc16 = read("pc16_value");
        assert_eq!(pc16.wrapping_add(*(pc16 as *const i16) as i64 as u64), read("size32"));
    }
}

#[test]
fn narrow_relocations_that_do_not_fit_are_errors() {
    let src = "
        .section .rodata,\"a\"
        .byte blob - .
        .data
        .globl blob
blob:   .quad 1
";
    let Some(bytes) = assemble(src, &[]) else { return };
    match LoadedObject::load(&bytes, &|_: &str| None) {
        Err(LoadError::RelocationOverflow { kind, section, symbol, .. }) => {
            assert_eq!((kind, section.as_str(), symbol.as_str()), (15, ".rodata", "blob"));
        }
        other => panic!("expected an overflow, got {other:?}"),
    }
}
