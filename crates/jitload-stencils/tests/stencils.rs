//! The stencil tables against their golden files, the patcher on real code (with a fake C
//! API standing in for CPython), and the W^X memory.
//!
//! Bless the golden files after an intended change to the stencils or the compiler:
//! `JITLOAD_BLESS=1 cargo test --release -p jitload-stencils --test stencils golden`.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Mutex;

use jitload_codemem::block::pool_stats;
use jitload_codemem::grace;
use jitload_codemem::{self as memory, Mode, Recording};
use jitload_stencils::table::{self, OBJECTS};
use jitload_stencils::{build_thunk, build_wrapper, CbFrame, Guard, Ret, Runtime, Signature, ThunkCell, WrapperSpec, STENCILS};

// ---- golden files ----------------------------------------------------------------------

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

fn objdump() -> String {
    std::env::var("JITLOAD_OBJDUMP").unwrap_or_else(|_| "llvm-objdump-22".into())
}

/// The golden text of a stencil: our relocation table, then llvm-objdump's disassembly with
/// relocations of its section.
fn golden_text(stencil: &table::Stencil) -> String {
    let object = OBJECTS.iter().find(|(g, _)| *g == stencil.group).expect("object of the group").1;
    let out = Command::new(objdump())
        .args(["-d", "-r", "--no-leading-addr", "--section"])
        .arg(format!(".text.{}", stencil.name))
        .arg(object)
        .output()
        .expect("run llvm-objdump-22");
    assert!(out.status.success(), "llvm-objdump failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    // Drop the header naming the object's (machine-specific) path.
    let body: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("Disassembly of section")).collect();
    format!("# holes\n{}\n# llvm-objdump -d -r\n{}\n", table::describe(stencil), body.join("\n").trim_end())
}

#[test]
fn golden() {
    let dir = golden_dir();
    let bless = std::env::var_os("JITLOAD_BLESS").is_some();
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut failures = Vec::new();
    for stencil in STENCILS.iter() {
        let path = dir.join(format!("{}.txt", stencil.name));
        let text = golden_text(stencil);
        if bless {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == text => {}
            Ok(expected) => {
                let line = expected.lines().zip(text.lines()).position(|(a, b)| a != b).unwrap_or(0);
                failures.push(format!(
                    "{}: differs from line {}:\n  golden: {:?}\n  now:    {:?}",
                    path.display(),
                    line + 1,
                    expected.lines().nth(line).unwrap_or(""),
                    text.lines().nth(line).unwrap_or("")
                ));
            }
            Err(_) => failures.push(format!("{}: missing", path.display())),
        }
    }
    // No golden file for a stencil that is gone.
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".txt") {
            if table::by_name(stem).is_none() {
                if bless {
                    std::fs::remove_file(dir.join(&name)).unwrap();
                } else {
                    failures.push(format!("golden/{name}: no such stencil any more"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "stencils differ from their golden files (after an intended change: JITLOAD_BLESS=1 cargo test --release -p jitload-stencils --test stencils golden):\n{}",
        failures.join("\n")
    );
}

#[test]
fn tables_are_stamped_and_complete() {
    assert_eq!(jitload_stencils::INPUT_HASH.len(), 64);
    assert!(jitload_stencils::INPUT_HASH.bytes().all(|b| b.is_ascii_hexdigit()));
    for s in STENCILS.iter() {
        assert!(!s.code.is_empty(), "{}", s.name);
        for h in s.holes {
            assert!((h.offset as usize) + 4 <= s.code.len(), "{}: hole past the end", s.name);
        }
    }
    // Every required process-wide symbol is a C API name, a host helper, the tstate getter or
    // the engine's epoch guard's words.
    for name in Runtime::required_symbols() {
        assert!(
            name.starts_with("Py")
                || name.starts_with("_Py")
                || name.starts_with("jitload_fast_")
                || name == "_JIT_TSTATE_GET"
                || name == "_JIT_FUNCTION_TYPE"
                || name == "_JIT_TS_THREAD_ID"
                || name.starts_with("_JIT_GRACE"),
            "{name}"
        );
    }
}

// ---- a fake C API ----------------------------------------------------------------------

#[repr(C)]
struct Obj {
    refcnt: isize,
    ty: *const u8,
    value: i64,
}

static LONG_TYPE: u8 = 0;
static FLOAT_TYPE: u8 = 0;
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// Serialises tests that count live objects.
static SERIAL: Mutex<()> = Mutex::new(());

fn new_int(v: i64) -> *mut Obj {
    LIVE.fetch_add(1, Ordering::SeqCst);
    Box::into_raw(Box::new(Obj { refcnt: 1, ty: &LONG_TYPE, value: v }))
}

extern "C" fn fake_from_ll(v: i64) -> *mut Obj {
    new_int(v)
}
extern "C" fn fake_as_ll(o: *mut Obj) -> i64 {
    // SAFETY: the stencils pass objects the test made.
    unsafe { (*o).value }
}
extern "C" fn fake_occurred() -> *mut c_void {
    std::ptr::null_mut()
}
extern "C" fn fake_dealloc(o: *mut Obj) {
    LIVE.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: made by new_int, refcount reached zero.
    drop(unsafe { Box::from_raw(o) });
}
extern "C" fn fake_tstate() -> usize {
    1
}
/// Whether the last call of the fake callable ran inside a grace call (the thunk's mark).
static CALLED_MARKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The "callable": returns the sum of its int arguments times 10.
extern "C" fn fake_vectorcall(_callable: *mut Obj, args: *const *mut Obj, nargsf: usize, _kw: *mut c_void) -> *mut Obj {
    CALLED_MARKED.store(grace::in_call(), Ordering::SeqCst);
    let n = nargsf & !(1usize << 63);
    // SAFETY: the thunk passes n valid objects.
    let sum: i64 = (0..n).map(|k| unsafe { (**args.add(k)).value }).sum();
    new_int(sum * 10)
}
/// The host's slow entry of the epoch guard (an unregistered thread).
extern "C" fn grace_enter_slow() {
    grace::enter();
}
/// The host's thunk exit (jitload-py's, without the GIL): ends the mark, frees what waited.
extern "C" fn cb_leave(i: u64, d: f64, token: u64, _gil_held: u64) -> Ret {
    if grace::exit(grace::Token(token)) && grace::take_wake() {
        grace::reclaim();
    }
    Ret { i, d }
}
extern "C" fn unexpected() {
    panic!("a slow path was called in a fast-path test");
}

fn fake_runtime() -> Runtime {
    Runtime::new(&|name| {
        let addr = match name {
            "PyLong_FromLongLong" | "PyLong_FromUnsignedLongLong" => fake_from_ll as *const () as usize,
            "PyLong_AsLongLong" | "PyLong_AsUnsignedLongLong" => fake_as_ll as *const () as usize,
            "PyErr_Occurred" => fake_occurred as *const () as usize,
            "_Py_Dealloc" => fake_dealloc as *const () as usize,
            "PyLong_Type" => &LONG_TYPE as *const u8 as usize,
            "PyFloat_Type" => &FLOAT_TYPE as *const u8 as usize,
            // Singletons the stencils may incref: leaked, writable.
            "_Py_NoneStruct" | "_Py_TrueStruct" | "_Py_FalseStruct" => {
                Box::leak(Box::new(Obj { refcnt: 1 << 40, ty: std::ptr::null(), value: 0 })) as *mut Obj as usize
            }
            "PyGILState_GetThisThreadState" | "_JIT_TSTATE_GET" => fake_tstate as *const () as usize,
            // Unknown: the thunks compare PyGILState_GetThisThreadState with the current one.
            "_JIT_TS_THREAD_ID" => 1,
            "PyObject_Vectorcall" => fake_vectorcall as *const () as usize,
            "_JIT_GRACE" => grace::inline::tls_offset() as usize,
            "_JIT_GRACE_EPOCH" => grace::inline::epoch_address(),
            "jitload_fast_grace_enter" => grace_enter_slow as *const () as usize,
            "jitload_fast_cb_leave" => cb_leave as *const () as usize,
            _ => unexpected as *const () as usize,
        };
        Some(addr as u64)
    })
    .expect("fake runtime")
}

extern "C" fn native_add(a: i64, b: i64) -> i64 {
    a.wrapping_add(b)
}

extern "C" fn native_mix(a: i8, x: f64, b: u16, y: f32, c: i64, d: i64, e: i64, f: i64, g: i64) -> i64 {
    // g is the 7th integer argument: it is passed on the stack.
    (a as i64) + (x * 2.0) as i64 + (b as i64) + (y * 4.0) as i64 + c + d + e + f + g
}

type Entry = unsafe extern "C" fn(*mut c_void, *const *mut Obj, isize) -> *mut Obj;

fn call(entry: u64, args: &[i64]) -> i64 {
    let objs: Vec<*mut Obj> = args.iter().map(|v| new_int(*v)).collect();
    // SAFETY: entry is a wrapper built for this many int64 arguments with the fake API.
    let f: Entry = unsafe { std::mem::transmute(entry as usize) };
    // SAFETY: as above; the fake API never touches `self`.
    let r = unsafe { f(std::ptr::null_mut(), objs.as_ptr(), objs.len() as isize) };
    // SAFETY: the result and arguments are objects from new_int.
    let value = unsafe { (*r).value };
    for o in objs.into_iter().chain([r]) {
        fake_dealloc(o);
    }
    value
}

fn check_wrapper(mode: Mode, name: &str) {
    let runtime = fake_runtime();
    memory::configure(mode);
    let recording: &'static Recording = Box::leak(Box::new(Recording::new(memory::provider())));
    memory::set_provider(Some(recording));
    let sig = Signature::parse("int64(int64, int64)").unwrap();
    let block = build_wrapper(
        &runtime,
        &WrapperSpec { signature: &sig, target: native_add as *const () as usize as u64, release_gil: false, guard: None, jump_slot: None },
    )
    .unwrap();
    assert_eq!(block.memory().sealed_by(), name);
    assert_eq!(call(block.entry(), &[2, 3]), 5);
    assert_eq!(call(block.entry(), &[i64::MAX, 1]), i64::MIN);
    assert_eq!(call(block.entry(), &[-7, 0]), -7);
    assert!(block.relaxed > 0, "small values should become immediates");
    assert_no_writable_exec(block.entry());
    drop(block);
    memory::set_provider(None);
    let events = recording.events();
    assert!(events.iter().any(|e| e.op == memory::Op::Executable), "sealed through the provider: {events:?}");
    assert_eq!(recording.violations(), Vec::<String>::new());
}

#[test]
fn wrapper_runs_with_mprotect_and_with_dual_mapping() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = LIVE.load(Ordering::SeqCst);
    check_wrapper(Mode::DualMap, "dualmap");
    check_wrapper(Mode::Mprotect, "mprotect");
    assert_eq!(LIVE.load(Ordering::SeqCst), before, "every object freed");
}

#[test]
fn wrapper_with_every_register_class_and_the_stack() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    memory::configure(Mode::Mprotect);
    let runtime = fake_runtime();
    // Only integer conversions run (the fake float type is never exact), so pass the
    // floats as raw bits through int64 slots: check the register assignment instead.
    let sig = Signature::parse("int64(int8, double, uint16, float, int64, int64, int64, int64, int64)").unwrap();
    let pieces = jitload_stencils::plan::wrapper_pieces(&WrapperSpec {
        signature: &sig,
        target: native_mix as *const () as usize as u64,
        release_gil: false,
        guard: None,
        jump_slot: None,
    })
    .unwrap();
    let names: Vec<&str> = pieces.iter().map(|p| STENCILS[p.stencil].name).collect();
    assert_eq!(
        names,
        [
            "entry_plain",
            "conv_sint_r0",
            "conv_f64",
            "conv_uint_r1",
            "conv_f32",
            "conv_i64_mem",
            "conv_i64_mem",
            "conv_i64_mem",
            "conv_i64_mem",
            "conv_i64_mem",
            "call_stack",
            "box_i64"
        ]
    );
    let dest = |i: usize| pieces[i].values.iter().find(|(s, _)| *s == jitload_stencils::sym::_JIT_DEST).unwrap().1;
    // int8 -> rdi, double -> xmm0, uint16 -> rsi, float -> xmm1, 4 x int64 -> rdx rcx r8 r9, the 5th -> stack[0].
    assert_eq!([dest(1), dest(2), dest(3), dest(4), dest(5), dest(8), dest(9)], [0, 48, 8, 56, 16, 40, 112]);
    let _ = runtime;
}

#[test]
fn thunk_runs_and_frees_what_it_boxes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    memory::configure(Mode::Mprotect);
    let runtime = fake_runtime();
    let before = LIVE.load(Ordering::SeqCst);
    let callable = new_int(0);
    let cell = Box::new(ThunkCell { callable: callable.cast(), error_i: 0, error_d: 0 });
    let sig = Signature::parse("int64(int64, int64)").unwrap();
    let block = build_thunk(&runtime, &sig, &*cell).unwrap();
    // SAFETY: a C function of this signature, calling the fake vectorcall.
    let f: extern "C" fn(i64, i64) -> i64 = unsafe { std::mem::transmute(block.entry() as usize) };
    assert_eq!(f(2, 3), 50);
    assert_eq!(f(-1, 1), 0);
    for i in 0..1000 {
        assert_eq!(f(i, 1), (i + 1) * 10);
    }
    assert!(CALLED_MARKED.load(Ordering::SeqCst), "the callable ran with the thread marked inside thunk code");
    assert!(!grace::in_call(), "the exit ended the mark");
    // A thread never seen before registers on its first call.
    let entry = block.entry() as usize;
    std::thread::spawn(move || {
        // SAFETY: as above.
        let f: extern "C" fn(i64, i64) -> i64 = unsafe { std::mem::transmute(entry) };
        assert_eq!(f(4, 5), 90);
        assert!(!grace::in_call());
    })
    .join()
    .unwrap();
    fake_dealloc(callable);
    assert_eq!(LIVE.load(Ordering::SeqCst), before, "arguments and results were released");
    assert_no_writable_exec(block.entry());
    let _ = std::mem::size_of::<CbFrame>() + std::mem::size_of::<Ret>();
}

/// The setting of the tests that build `int64(int64, int64)` blocks with mprotect.
fn serial_mprotect_add() -> (std::sync::MutexGuard<'static, ()>, Runtime, Signature) {
    let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    memory::configure(Mode::Mprotect);
    (serial, fake_runtime(), Signature::parse("int64(int64, int64)").unwrap())
}

#[test]
fn many_blocks_are_freed() {
    let (_serial, runtime, sig) = serial_mprotect_add();
    let maps_before = std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    for _ in 0..2000 {
        let block = build_wrapper(
            &runtime,
            &WrapperSpec { signature: &sig, target: native_add as *const () as usize as u64, release_gil: false, guard: None, jump_slot: None },
        )
        .unwrap();
        drop(block);
    }
    let maps_after = std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    assert!(maps_after < maps_before + 50, "{maps_before} -> {maps_after} mappings");
}

#[test]
fn pooled_blocks_share_pages_and_run_while_their_page_is_replaced() {
    let (_serial, runtime, sig) = serial_mprotect_add();
    let spec = WrapperSpec { signature: &sig, target: native_add as *const () as usize as u64, release_gil: false, guard: None, jump_slot: None };
    let (_, live_before) = pool_stats();
    let first = build_wrapper(&runtime, &spec).unwrap();
    let entry = first.entry();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let blocks = std::thread::scope(|s| {
        // Another thread runs the first block all along, while later blocks are appended
        // to its page (each append replaces the page under it).
        let runner = s.spawn(|| {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(call(entry, &[n, 1]), n + 1);
                n += 1;
            }
            n
        });
        let blocks: Vec<_> = (0..2000).map(|_| build_wrapper(&runtime, &spec).unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        assert!(runner.join().unwrap() > 0, "the runner ran");
        blocks
    });
    for (k, b) in blocks.iter().enumerate() {
        assert_eq!(call(b.entry(), &[k as i64, -2]), k as i64 - 2);
    }
    assert_no_writable_exec(entry);
    let pages: std::collections::BTreeSet<u64> = blocks.iter().map(|b| b.entry() & !4095).collect();
    assert!(pages.len() * 3 <= blocks.len(), "{} blocks in {} pages", blocks.len(), pages.len());
    assert_eq!(pool_stats().1, live_before + 2001);
    drop(blocks);
    drop(first);
    let (pages, live) = pool_stats();
    assert_eq!(live, live_before);
    assert!(pages <= 1 + live_before, "only the page being filled stays: {pages}");
}

extern "C" fn native_sub(a: i64, b: i64) -> i64 {
    a.wrapping_sub(b)
}

/// One read+write page mapped within 1 GiB below `near` (as an engine stub block's slots
/// lie near the wrappers' pooled code pages).
fn map_page_near(near: u64) -> *mut u64 {
    for k in 1..4096u64 {
        let hint = (near & !0xFFFF).wrapping_sub(k << 18);
        // SAFETY: a fresh anonymous mapping; MAP_FIXED_NOREPLACE never replaces one.
        let page = unsafe {
            libc::mmap(
                hint as *mut c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if page as u64 == hint {
            return page as *mut u64;
        }
        if page != libc::MAP_FAILED {
            // SAFETY: the mapping just made (a kernel that took the flag as a hint only).
            unsafe { libc::munmap(page, 4096) };
        }
    }
    panic!("no free page within 1 GiB below {near:#x}");
}

/// A wrapper of a stub (code that only jumps through a word) calls through the word itself
/// where it is in reach, reading it at every call; out of reach it calls the stub.
#[test]
fn calls_read_a_stubs_jump_slot_where_it_is_in_reach() {
    let (_serial, runtime, sig) = serial_mprotect_add();
    let (add, sub) = (native_add as *const () as usize as u64, native_sub as *const () as usize as u64);
    let first = build_wrapper(&runtime, &WrapperSpec { signature: &sig, target: add, release_gil: false, guard: None, jump_slot: None }).unwrap();
    assert_eq!(first.through_words, 0);
    let word = map_page_near(first.entry());
    // SAFETY: the word of the page just mapped, read by the wrapper only during calls below.
    let set = |f: u64| unsafe { std::ptr::write_volatile(word, f) };
    set(add);
    // The target stands for the stub: a call that reached it instead of the word would subtract.
    let spec = WrapperSpec { signature: &sig, target: sub, release_gil: false, guard: None, jump_slot: Some(word as u64) };
    let block = build_wrapper(&runtime, &spec).unwrap();
    assert!(block.entry().abs_diff(word as u64) < 1 << 31, "the pool placed the code near the word");
    assert_eq!(block.through_words, 1);
    assert_eq!(call(block.entry(), &[5, 3]), 8, "through the word");
    set(sub);
    assert_eq!(call(block.entry(), &[5, 3]), 2, "the word is read at every call");
    // 2^40 bytes away: out of reach, never read; the call goes to the target.
    let far = WrapperSpec { signature: &sig, target: add, release_gil: false, guard: None, jump_slot: Some(block.entry() + (1 << 40)) };
    let far = build_wrapper(&runtime, &far).unwrap();
    assert_eq!(far.through_words, 0);
    assert_eq!(call(far.entry(), &[5, 3]), 8);
    drop((first, block, far));
    // SAFETY: the page mapped above; no wrapper that reads it is left.
    unsafe { libc::munmap(word as *mut c_void, 4096) };
}

/// The entries each guard takes: the epoch guard fuses the common shapes unless entering must
/// fence (no membarrier), which only the chain's entries do.
#[test]
fn guards_pick_their_entries() {
    let names = |sig: &str, guard: Option<Guard>| -> Vec<&'static str> {
        let sig = Signature::parse(sig).unwrap();
        let spec = WrapperSpec { signature: &sig, target: 1, release_gil: false, guard, jump_slot: None };
        jitload_stencils::plan::wrapper_pieces(&spec).unwrap().iter().map(|p| STENCILS[p.stencil].name).collect()
    };
    let calls = Some(Guard::Calls { enter: 1, exit: 2, ctx: 3 });
    let (epoch, fenced) = (Some(Guard::Epoch { fence: false }), Some(Guard::Epoch { fence: true }));
    assert_eq!(names("int64(int64, int64)", None), ["entry2_i64"]);
    assert_eq!(names("int64(int64, int64)", epoch), ["entry2_epoch_i64"]);
    assert_eq!(names("void()", epoch), ["entry0_epoch_void"]);
    assert_eq!(names("int64(int64, int64)", fenced), ["entry_epoch_fenced", "conv_i64_r0", "conv_i64_r1", "call_i2", "box_i64"]);
    assert_eq!(names("int64(int64, int64)", calls)[0], "entry_guard");
    assert_eq!(names("double(double)", epoch)[0], "entry_epoch");
    assert_eq!(names("uint64(buffer, size_t)", epoch)[0], "entry_epoch_buffers");
    assert_eq!(names("uint64(buffer, size_t)", fenced)[0], "entry_epoch_fenced_buffers");
    assert_eq!(names("uint64(buffer, size_t)", calls)[0], "entry_guard_buffers");
}

#[test]
fn signature_errors() {
    for bad in ["int64", "int64(int64", "nope(int64)", "int64(void, int64)", "int64(int64))"] {
        assert!(Signature::parse(bad).is_err(), "{bad}");
    }
    let many = format!("int64({})", vec!["int64"; 23].join(", "));
    let sig = Signature::parse(&many).unwrap();
    let spec = WrapperSpec { signature: &sig, target: 1, release_gil: false, guard: None, jump_slot: None };
    assert!(jitload_stencils::plan::wrapper_pieces(&spec).is_err(), "6 + 16 integer arguments at most");
    let sig = Signature::parse(&format!("int64({})", ["int64"; 22].join(", "))).unwrap();
    let pieces = jitload_stencils::plan::thunk_pieces(&sig, std::ptr::null()).unwrap();
    assert_eq!(STENCILS[pieces[0].stencil].name, "cb_entry_stack");
    let nstack = pieces[0].values.iter().find(|(s, _)| *s == jitload_stencils::sym::_JIT_NSTACK).unwrap().1;
    assert_eq!(nstack, 16, "6 in registers, 16 on the stack");
    let sig = Signature::parse(&many).unwrap();
    let err = jitload_stencils::plan::thunk_pieces(&sig, std::ptr::null()).unwrap_err().to_string();
    assert!(err.contains("16 more on the stack") && err.contains("int64(int64"), "{err}");
}

/// The mapping holding `address` is r-x (private: mprotect; shared: the memfd's view), and
/// no mapping of the process is writable and executable.
fn assert_no_writable_exec(address: u64) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mut found = false;
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let range = parts.next().unwrap();
        let perms = parts.next().unwrap();
        assert!(!(perms.contains('w') && perms.contains('x')), "writable+executable mapping: {line}");
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (u64::from_str_radix(lo, 16).unwrap(), u64::from_str_radix(hi, 16).unwrap());
        if (lo..hi).contains(&address) {
            assert!(perms.starts_with("r-x"), "{line}");
            found = true;
        }
    }
    assert!(found, "no mapping holds {address:#x}");
}
