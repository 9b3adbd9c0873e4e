//! Code placed by each provider runs, is never writable and executable, and is freed; the
//! automatic fallback happens where mprotect to executable is refused (simulated with a
//! seccomp filter in a child process). Tests run one at a time: they switch the process-wide
//! provider.

use std::sync::Mutex;

use jitload_codemem::block::pool_stats;
use jitload_codemem::{self as codemem, Image, Mode, Op, Recording};

static SERIAL: Mutex<()> = Mutex::new(());

/// `mov eax, value; ret`
fn returns(value: u32) -> [u8; 6] {
    let v = value.to_le_bytes();
    [0xB8, v[0], v[1], v[2], v[3], 0xC3]
}

fn call(address: u64) -> u32 {
    // SAFETY: `address` holds `returns(..)`'s code, sealed read+execute.
    let f: extern "C" fn() -> u32 = unsafe { std::mem::transmute(address as usize) };
    f()
}

/// Runs `f` with a recording provider around `mode`'s provider; returns the recording.
fn recorded(mode: Mode, f: impl FnOnce()) -> &'static Recording {
    codemem::configure(mode);
    let recording: &'static Recording = Box::leak(Box::new(Recording::new(codemem::provider())));
    codemem::set_provider(Some(recording));
    f();
    codemem::set_provider(None);
    codemem::configure(Mode::Auto);
    recording
}

fn perms_at(address: u64) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (range, perms) = (parts.next().unwrap(), parts.next().unwrap());
        let (lo, hi) = range.split_once('-').unwrap();
        if (u64::from_str_radix(lo, 16).unwrap()..u64::from_str_radix(hi, 16).unwrap()).contains(&address) {
            return perms.to_string();
        }
    }
    panic!("{address:#x} is not mapped");
}

fn blocks_run_and_are_freed(mode: Mode, name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_, live_before) = pool_stats();
    let recording = recorded(mode, || {
        // Small blocks (pooled: each one after the first replaces its page) and a large one.
        let mut blocks = Vec::new();
        for (i, len) in [6usize, 6, 100, 3000, 6, 20000].into_iter().enumerate() {
            let (memory, ()) = codemem::place(len, |_, bytes| {
                bytes[..6].copy_from_slice(&returns(i as u32 + 1));
                Ok::<_, ()>(())
            })
            .unwrap_or_else(|_| panic!("place {len}"));
            assert_eq!(memory.sealed_by(), name);
            blocks.push(memory);
        }
        for (i, memory) in blocks.iter().enumerate() {
            assert_eq!(call(memory.address()), i as u32 + 1, "block {i} runs");
            assert!(perms_at(memory.address()).starts_with("r-x"), "{}", perms_at(memory.address()));
        }
        assert_eq!(pool_stats().1, live_before + 4);
    });
    assert_eq!(pool_stats().1, live_before, "pooled blocks released");
    let events = recording.events();
    assert!(events.iter().filter(|e| e.op == Op::Executable).count() >= 6, "{events:?}");
    assert!(events.iter().any(|e| matches!(e.op, Op::MoveFrom(_))), "pooled appends move a page: {events:?}");
    assert!(events.iter().any(|e| e.op == Op::Unmap), "{events:?}");
    if mode == Mode::DualMap {
        assert!(events.iter().filter(|e| e.op == Op::Executable).all(|e| e.observed.iter().all(|p| p == "r-xs")), "{events:?}");
    }
    assert_eq!(recording.violations(), Vec::<String>::new());
}

#[test]
fn mprotect_blocks_run_and_are_freed() {
    blocks_run_and_are_freed(Mode::Mprotect, "mprotect");
}

#[test]
fn dualmap_blocks_run_and_are_freed() {
    blocks_run_and_are_freed(Mode::DualMap, "dualmap");
}

#[test]
fn a_failed_fill_maps_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let recording = recorded(Mode::Mprotect, || {
        for len in [10, 50000] {
            assert!(matches!(codemem::place(len, |_, _| Err::<(), _>("no")), Err(codemem::PlaceError::Fill("no"))));
        }
    });
    let events = recording.events();
    assert!(!events.iter().any(|e| e.op == Op::Executable), "nothing sealed: {events:?}");
    assert!(events.iter().any(|e| e.op == Op::Unmap), "the large block's mapping went: {events:?}");
}

fn image_parts(mode: Mode) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let page = codemem::page_size();
    let recording = recorded(mode, || {
        let mut image = Image::new(3 * page, 8 * page).unwrap();
        assert_eq!(image.address() % (8 * page) as u64, 0, "aligned");
        image.prefault(3 * page);
        image.bytes_mut()[..6].copy_from_slice(&returns(7));
        image.bytes_mut()[page] = 1;
        image.make_executable(0, 6).unwrap();
        image.make_readonly(page, 1).unwrap();
        image.bytes_mut()[2 * page] = 9; // the data part stays writable
        let base = image.address();
        assert_eq!(call(base), 7);
        assert!(perms_at(base).starts_with("r-x"));
        assert_eq!(perms_at(base + page as u64), "r--p");
        assert_eq!(perms_at(base + 2 * page as u64), "rw-p");
        assert_eq!(image.bytes()[page], 1);
        assert!(image.make_executable(2 * page, 2 * page).is_err(), "a range outside the image");
    });
    assert_eq!(recording.violations(), Vec::<String>::new());
}

#[test]
fn image_parts_with_mprotect() {
    image_parts(Mode::Mprotect);
}

#[test]
fn image_parts_with_dualmap() {
    image_parts(Mode::DualMap);
}

#[test]
fn recording_reports_writable_executable_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    /// A provider that breaks W^X: maps code read+write+execute.
    struct Rwx;
    impl codemem::Provider for Rwx {
        fn name(&self) -> &'static str {
            "rwx"
        }
        fn make_executable(&self, addr: *mut u8, len: usize) -> std::io::Result<()> {
            // SAFETY: the test's own mapping.
            assert_eq!(unsafe { libc::mprotect(addr.cast(), len, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) }, 0);
            Ok(())
        }
    }
    let recording = Recording::new(&Rwx);
    let page = codemem::page_size();
    let p = codemem::Provider::map(&recording, page, false).unwrap();
    codemem::Provider::make_executable(&recording, p, page).unwrap();
    codemem::Provider::map(&recording, page, false).unwrap(); // not the same page: fine
    codemem::Provider::unmap(&recording, p, page);
    let violations = recording.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].contains("rwx"), "{violations:?}");
}

/// A child process where `mprotect(..., PROT_EXEC)` fails with EACCES, as under SELinux
/// `deny_execmem`: in auto mode code is sealed by the dual-map provider, and runs.
#[test]
fn auto_falls_back_to_dualmap_where_mprotect_exec_is_refused() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the child only calls async-signal-safe functions and our own code, then _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        let status = std::panic::catch_unwind(|| {
            deny_mprotect_exec();
            codemem::configure(Mode::Auto);
            codemem::block::set_pooling(false);
            let (memory, ()) = codemem::place(6, |_, b| {
                b[..6].copy_from_slice(&returns(5));
                Ok::<_, ()>(())
            })
            .unwrap_or_else(|_| panic!("place"));
            let ok = call(memory.address()) == 5 && memory.sealed_by() == "dualmap" && codemem::provider().name() == "dualmap";
            let mut image = Image::new(codemem::page_size(), 1).unwrap();
            image.bytes_mut()[..6].copy_from_slice(&returns(6));
            image.make_executable(0, 6).unwrap();
            if ok && call(image.address()) == 6 && codemem::mode() == Mode::Auto {
                0
            } else {
                1
            }
        });
        // SAFETY: leaving the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(status.unwrap_or(2)) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
}

/// Installs a seccomp filter: `mprotect` with PROT_EXEC in its flags fails with EACCES.
fn deny_mprotect_exec() {
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: code as u16, jt, jf, k };
    let (ld, jeq, jset, ret) = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, libc::BPF_RET | libc::BPF_K);
    let filter = [
        stmt(ld, 0), // seccomp_data.nr
        jump(jeq, libc::SYS_mprotect as u32, 0, 3),
        stmt(ld, 32), // seccomp_data.args[2], low half
        jump(jset, libc::PROT_EXEC as u32, 0, 1),
        stmt(ret, RET_ERRNO | libc::EACCES as u32),
        stmt(ret, RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    // SAFETY: prctl with valid arguments; the filter outlives the call (the kernel copies it).
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog), 0);
    }
}
