//! Compiles the C stencils (`stencils/*.c`) with clang 22 and turns each stencil function into
//! a table entry: its machine code and its holes (relocations), for `src/patch.rs` to copy
//! and fill at run time. Every relocation kind is matched explicitly: anything the patcher
//! does not know is a build error, never a silently wrong patch.
//!
//! Output (in `OUT_DIR`): `stencils.rs` (the tables, stamped with a hash of every input) and
//! `<group>.o` (the objects, for the golden disassembly tests).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::elf;
use object::read::elf::ElfFile64;
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionKind};

/// Stencil groups: one C file each, one continuation convention each.
const GROUPS: &[&str] = &["wrapper", "thunk"];

/// Every clang flag, with the reason it is there.
const CFLAGS: &[(&str, &str)] = &[
    ("--target=x86_64-unknown-linux-gnu", "the patcher knows x86-64 ELF relocations only"),
    ("-std=c23", "[[clang::musttail]] is C23 attribute syntax"),
    ("-O2", "stencils are the hot path; -O3 adds nothing here but unrolling"),
    ("-c", "an object file to cut stencils out of, no link"),
    ("-fpic", "external symbols (holes) are reached through GOT slots, so a hole holds any 64-bit value; the patcher relaxes them when the value fits"),
    ("-fno-plt", "calls to C API functions are `call [rip+GOT]`, not PLT stubs we would have to synthesise"),
    ("-ffunction-sections", "one section per stencil: its code and relocations are cut out alone"),
    ("-fdata-sections", "any data a stencil grew would be its own section, which the build rejects"),
    ("-fno-asynchronous-unwind-tables", "no .eh_frame: stencils are never unwound through by C++ or Rust"),
    ("-fno-unwind-tables", "as above"),
    ("-fno-stack-protector", "no canary: it would need __stack_chk_fail and a TLS guard we do not patch"),
    ("-fno-jump-tables", "a switch must not become a table in .rodata"),
    ("-ffreestanding", "no libc assumptions: the stencils call only what they declare"),
    ("-fno-builtin", "no loop turned into a memcpy/memset call (an undeclared hole)"),
    ("-fomit-frame-pointer", "fewer instructions; stencils are leaf-like and never unwound"),
    ("-Wall", "warnings are errors in stencils: a sloppy stencil is a miscompile waiting"),
    ("-Wextra", "as above"),
    ("-Werror", "as above"),
    ("-Wno-unused-parameter", "every stencil of a chain has the chain's full signature, used or not"),
];

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=stencils");
    println!("cargo:rerun-if-env-changed=JITLOAD_CLANG");
    println!("cargo:rerun-if-env-changed=LLVM_SYS_221_PREFIX");

    let clang = find_clang();
    let version = run(Command::new(&clang).arg("--version"));
    assert!(version.contains("version 22."), "stencils need clang 22, {} is:\n{version}", clang.display());

    // The hash of every input: flags, clang's version, this script, each source file.
    let mut hasher = blake3::Hasher::new();
    for (flag, _) in CFLAGS {
        hasher.update(flag.as_bytes()).update(b"\0");
    }
    hasher.update(version.as_bytes());
    hasher.update(&std::fs::read(dir.join("build.rs")).expect("read build.rs"));
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir.join("stencils")).expect("read stencils/").map(|e| e.expect("dir entry").path()).collect();
    sources.sort();
    for path in &sources {
        hasher.update(path.file_name().expect("file name").as_encoded_bytes()).update(b"\0");
        hasher.update(&std::fs::read(path).expect("read stencil source"));
    }
    let hash = hasher.finalize().to_hex().to_string();

    let mut stencils = Vec::new();
    for group in GROUPS {
        let src = dir.join("stencils").join(format!("{group}.c"));
        let obj = out.join(format!("{group}.o"));
        let mut cmd = Command::new(&clang);
        cmd.args(CFLAGS.iter().map(|(flag, _)| flag)).arg("-o").arg(&obj).arg(&src);
        run(&mut cmd);
        let bytes = std::fs::read(&obj).expect("read object");
        stencils.extend(parse(group, &obj, &bytes));
    }
    std::fs::write(out.join("stencils.rs"), generate(&stencils, &hash)).expect("write stencils.rs");
}

fn find_clang() -> PathBuf {
    if let Ok(path) = std::env::var("JITLOAD_CLANG") {
        return path.into();
    }
    let prefix = std::env::var("LLVM_SYS_221_PREFIX").unwrap_or_else(|_| "/usr/lib/llvm-22".into());
    let in_prefix = Path::new(&prefix).join("bin/clang");
    if in_prefix.exists() {
        return in_prefix;
    }
    "clang-22".into()
}

fn run(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?} (install clang-22): {e}"));
    assert!(output.status.success(), "{cmd:?} failed:\n{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 output")
}

struct Hole {
    offset: u64,
    kind: &'static str,
    symbol: String,
    addend: i64,
}

struct Stencil {
    group: &'static str,
    name: String,
    code: Vec<u8>,
    holes: Vec<Hole>,
}

fn parse(group: &'static str, path: &Path, bytes: &[u8]) -> Vec<Stencil> {
    let file = ElfFile64::<object::Endianness>::parse(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // Stencil code may only live in .text.<function>; any data section with contents means
    // a stencil grew a constant or a variable we would not copy.
    for section in file.sections() {
        let name = section.name().unwrap_or("?");
        let data_like = matches!(
            section.kind(),
            SectionKind::Data | SectionKind::ReadOnlyData | SectionKind::ReadOnlyString | SectionKind::UninitializedData | SectionKind::Tls
        );
        assert!(
            !(data_like && section.size() > 0),
            "{}: section {name} has {} bytes of data; stencils must not (constants would be left behind)",
            path.display(),
            section.size()
        );
    }
    let mut out = Vec::new();
    for section in file.sections() {
        let Ok(name) = section.name() else { continue };
        let Some(function) = name.strip_prefix(".text.") else {
            assert!(!(name == ".text" && section.size() > 0), "{}: code outside a function section", path.display());
            continue;
        };
        assert!(section.align() <= 16, "{}: {name} wants {}-byte alignment", path.display(), section.align());
        // The stencil is entered at the section's start; a section may also hold local
        // helpers its stencil calls directly (a thunk entry's body), placed after it.
        let entry = file.symbols().find(|s| s.name() == Ok(function) && s.section_index() == Some(section.index()));
        assert!(entry.is_some_and(|s| s.address() == 0 && s.is_global()), "{}: {name} must start with the global function {function}", path.display());
        let code = section.data().expect("section data").to_vec();
        let mut holes = Vec::new();
        for (offset, reloc) in section.relocations() {
            let RelocationFlags::Elf { r_type } = reloc.flags() else {
                panic!("{}: {name}+{offset:#x}: not an ELF relocation", path.display());
            };
            let symbol = match reloc.target() {
                RelocationTarget::Symbol(index) => {
                    let sym = file.symbol_by_index(index).expect("relocation symbol");
                    let sym_name = sym.name().expect("symbol name").to_string();
                    assert!(
                        sym.is_undefined(),
                        "{}: {name}+{offset:#x} refers to {sym_name:?}, defined in the object; stencils may refer only to holes",
                        path.display()
                    );
                    sym_name
                }
                other => panic!("{}: {name}+{offset:#x}: relocation against {other:?}", path.display()),
            };
            // Every kind the patcher implements, and nothing else.
            let kind = match r_type {
                // jmp/call rel32 to a hidden symbol: only the continuation may be one.
                elf::R_X86_64_PLT32 | elf::R_X86_64_PC32 => {
                    assert_eq!(symbol, "_JIT_CONTINUE", "{}: {name}+{offset:#x}: rel32 to {symbol}", path.display());
                    "Rel32"
                }
                // call/jmp [rip+GOT] (no REX): direct call/jmp when in reach.
                elf::R_X86_64_GOTPCRELX => "GotPcRelX",
                // mov/cmp/test/... reg, [rip+GOT] (REX prefix): an immediate when it fits.
                elf::R_X86_64_REX_GOTPCRELX => "RexGotPcRelX",
                // An absolute, sign-extended 32-bit field (inline asm displacements such as
                // the handshake slot's `%fs:_JIT_TLS`): the value itself, which must fit.
                elf::R_X86_64_32S => "Abs32S",
                // An absolute 64-bit field (inline asm `movabs` from a global's address, the
                // epoch guard's `_JIT_GRACE_EPOCH`): the value itself.
                elf::R_X86_64_64 => "Abs64",
                other => panic!("{}: {name}+{offset:#x}: relocation type {other} against {symbol} is not one the patcher implements", path.display()),
            };
            // Abs32S: a displacement into a TLS block of 64-bit words (`%fs:_JIT_GRACE+8`).
            let addends: &[i64] = match kind {
                "Abs32S" => &[0, 8, 16],
                "Abs64" => &[0],
                _ => &[-4],
            };
            assert!(addends.contains(&reloc.addend()), "{}: {name}+{offset:#x}: addend {}", path.display(), reloc.addend());
            assert!(!reloc.has_implicit_addend(), "RELA expected");
            // A thunk's exit ends its mark as inside thunk code (thunk.c, THUNK_ENTRY): only a
            // jump to it (a tail call) guarantees no instruction of the thunk runs after.
            if symbol == "jitload_fast_cb_leave" {
                let at = offset as usize;
                assert!(at >= 2 && code[at - 2..at] == [0xFF, 0x25], "{}: {name}+{offset:#x}: jitload_fast_cb_leave is called, not jumped to", path.display());
            }
            holes.push(Hole { offset, kind, symbol, addend: reloc.addend() });
        }
        holes.sort_by_key(|h| h.offset);
        out.push(Stencil { group, name: function.to_string(), code, holes });
    }
    assert!(!out.is_empty(), "{}: no stencils", path.display());
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn generate(stencils: &[Stencil], hash: &str) -> String {
    let mut symbols = BTreeMap::new();
    for h in stencils.iter().flat_map(|s| &s.holes) {
        let next = symbols.len();
        symbols.entry(h.symbol.clone()).or_insert(next);
    }
    // Stable ids: sorted by name.
    let names: Vec<String> = {
        let mut v: Vec<String> = symbols.keys().cloned().collect();
        v.sort();
        v
    };
    let id = |s: &str| names.iter().position(|n| n == s).expect("known symbol");
    let mut o = String::new();
    writeln!(o, "// @generated by build.rs from stencils/*.c; do not edit.").unwrap();
    writeln!(o, "// Input hash (flags, clang version, build.rs, sources): {hash}").unwrap();
    writeln!(o, "/// BLAKE3 of every input the tables were generated from.").unwrap();
    writeln!(o, "pub const INPUT_HASH: &str = {hash:?};").unwrap();
    writeln!(o, "/// The flags the stencils were compiled with.").unwrap();
    writeln!(o, "pub const CFLAGS: &[&str] = &{:?};", CFLAGS.iter().map(|(f, _)| *f).collect::<Vec<_>>()).unwrap();
    writeln!(o, "/// Every hole symbol, by id.").unwrap();
    writeln!(o, "pub const SYMBOL_NAMES: [&str; {}] = {:?};", names.len(), names).unwrap();
    writeln!(o, "/// Hole symbol ids.").unwrap();
    writeln!(o, "#[allow(non_upper_case_globals, dead_code)]\npub mod sym {{").unwrap();
    for (i, n) in names.iter().enumerate() {
        writeln!(o, "    pub const {n}: u16 = {i};").unwrap();
    }
    writeln!(o, "}}").unwrap();
    writeln!(o, "/// Stencil ids (indexes into STENCILS).").unwrap();
    writeln!(o, "#[allow(non_upper_case_globals, dead_code)]\npub mod id {{").unwrap();
    for (i, s) in stencils.iter().enumerate() {
        writeln!(o, "    pub const {}: usize = {i};", s.name).unwrap();
    }
    writeln!(o, "}}").unwrap();
    writeln!(o, "/// Every stencil.").unwrap();
    writeln!(o, "pub static STENCILS: [Stencil; {}] = [", stencils.len()).unwrap();
    for s in stencils {
        writeln!(o, "    Stencil {{").unwrap();
        writeln!(o, "        name: {:?},", s.name).unwrap();
        writeln!(o, "        group: {:?},", s.group).unwrap();
        writeln!(o, "        code: &{:?},", s.code).unwrap();
        writeln!(o, "        holes: &[").unwrap();
        for h in &s.holes {
            writeln!(
                o,
                "            Hole {{ offset: {}, kind: HoleKind::{}, symbol: {}, addend: {} }}, // {}",
                h.offset,
                h.kind,
                id(&h.symbol),
                h.addend,
                h.symbol
            )
            .unwrap();
        }
        writeln!(o, "        ],").unwrap();
        writeln!(o, "    }},").unwrap();
    }
    writeln!(o, "];").unwrap();
    writeln!(o, "/// The object files the stencils were cut from (for golden tests).").unwrap();
    writeln!(o, "pub const OBJECTS: &[(&str, &str)] = &[").unwrap();
    for g in GROUPS {
        writeln!(o, "    ({g:?}, concat!(env!(\"OUT_DIR\"), \"/{g}.o\")),").unwrap();
    }
    writeln!(o, "];").unwrap();
    o
}
