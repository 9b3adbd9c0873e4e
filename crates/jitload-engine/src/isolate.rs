//! Runs work on an untrusted module in a forked child process, so that nothing the input can
//! make LLVM do (exhaust memory, crash in a way crash recovery cannot catch, loop in a
//! corrupted allocation) can take the interpreter down. The child gets a memory limit, does
//! pure computation on its own LLVM context, writes its result to a pipe and `_exit`s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::error::EngineError;
use jitload_runtime::wire::{Reader, Writer};

/// Extra address space the child may use on top of what the parent has mapped
/// (`JITLOAD_COMPILE_MEMORY_MB`, default 1024). Real modules need far less (a 1.4 MB IR
/// module at -O2 compiles within 256 MB); corrupt input that makes LLVM grow a buffer until
/// allocation fails spends CPU in proportion to it (`fastmath-smallvector-fatal.bc`: 1.7 s
/// of CPU at 1024 MB, 5.5 s at 2048 MB).
fn extra_memory_mb() -> u64 {
    jitload_options::get().compile_memory_mb
}

/// How long a compile may take before the child is killed (`JITLOAD_COMPILE_TIMEOUT_S`,
/// default 600 s): some corrupt bitcode makes LLVM loop forever (found by the mutation run).
pub(crate) fn timeout() -> Duration {
    jitload_options::get().compile_timeout
}

/// Asked every 50 ms while waiting for the child (and for an in-process compile's thread,
/// see `background`): true cancels the compile (the embedding layer checks for Ctrl-C here,
/// so a long compile is interrupted promptly).
pub type InterruptCheck = fn() -> bool;
static INTERRUPT_CHECK: RwLock<Option<InterruptCheck>> = RwLock::new(None);

/// Installs the check (see [`InterruptCheck`]).
pub fn set_interrupt_check(check: InterruptCheck) {
    *INTERRUPT_CHECK.write().unwrap_or_else(|e| e.into_inner()) = Some(check);
}

thread_local! {
    /// Set on threads that compile in the background for nobody waiting (a final tier):
    /// Ctrl-C is the program's, not theirs, and they may outlive the interpreter.
    static UNINTERRUPTIBLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread's compiles as not interruptible (see `UNINTERRUPTIBLE`).
pub(crate) fn set_uninterruptible() {
    UNINTERRUPTIBLE.with(|u| u.set(true));
}

/// The installed check, if any (none on an uninterruptible thread).
pub(crate) fn interrupt_check() -> Option<InterruptCheck> {
    if UNINTERRUPTIBLE.with(|u| u.get()) {
        return None;
    }
    *INTERRUPT_CHECK.read().unwrap_or_else(|e| e.into_inner())
}

/// Why the compiler child produced no result.
#[derive(Debug)]
pub enum ChildError {
    /// It died, failed or could not be started; the text says how (with the tail of what
    /// it wrote to stderr, if anything).
    Failed(String),
    /// It ran longer than the time limit (or used more CPU time than the limit allows) and
    /// was killed.
    TimedOut(Duration),
    /// It needed more memory than `JITLOAD_COMPILE_MEMORY_MB` allows (the limit in MB).
    OutOfMemory(u64),
    /// The interrupt check asked to stop; the child was killed.
    Interrupted,
}

/// What a compiler child that ran to its end produced.
pub struct ChildOutput {
    /// The bytes `work` returned.
    pub result: Vec<u8>,
    /// What it wrote to stderr (LLVM's warnings, for instance); kept off the interpreter's
    /// stderr unless `JITLOAD_COMPILER_STDERR=1`.
    pub stderr: Vec<u8>,
}

/// Exit status of a child whose allocation failed in C++ (`operator new`, LLVM's
/// `safe_malloc`): their handlers `_exit` with it instead of throwing `std::bad_alloc`
/// through Rust frames (which aborts with "Rust cannot catch foreign exceptions").
const EXIT_OUT_OF_MEMORY: i32 = 71;
/// Exit status of a child whose parent was already gone when it started.
const EXIT_PARENT_GONE: i32 = 72;
/// Exit status of a child that could not write its whole result.
const EXIT_WRITE_FAILED: i32 = 70;

/// Most of the child's stderr kept for an error message (the end is what matters).
const STDERR_KEEP: usize = 64 << 10;
/// Most of it quoted in an exception.
const STDERR_QUOTE: usize = 1200;

/// Whether the child's stderr goes to the interpreter's stderr as it is written
/// (`JITLOAD_COMPILER_STDERR=1`, for debugging LLVM); by default it is captured.
fn pass_stderr() -> bool {
    jitload_options::get().compiler_stderr
}

fn mapped_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

/// CPU seconds the child may use: a backstop for the wall-clock limit the parent enforces,
/// which binds only while the parent lives (and PDEATHSIG covers its death). Code generation
/// runs on up to `codegen_threads` threads, so a compile within the time limit can use that
/// many CPU seconds per second; the limit never fires before the parent's.
fn cpu_limit_seconds() -> u64 {
    let threads = jitload_options::get().codegen_threads as f64;
    (timeout().as_secs_f64() * threads).ceil() as u64 + 1
}

/// Runs `work` in a forked child and returns the bytes it produced, or a description of how
/// the child died.
///
/// `work` must not take locks or touch state shared with other threads of this process (a
/// lock held by another thread at fork time would never be released in the child), must not
/// call into Python, and must not spawn threads. Pure computation on data it owns and on a
/// private LLVM context qualifies.
///
/// The child dies with this process: it asks for SIGKILL when the thread that forked it ends
/// (`PR_SET_PDEATHSIG`; that thread waits here until the child is reaped, so it ends only
/// with the process), and checks that its parent did not die before it asked. It also gets a
/// CPU-time limit (see [`cpu_limit_seconds`]) and no core dumps.
pub fn in_child(work: impl FnOnce() -> Vec<u8>) -> Result<ChildOutput, ChildError> {
    let memory_mb = extra_memory_mb();
    let extra = memory_mb.saturating_mul(1 << 20);
    let limit = mapped_bytes().saturating_add(extra);
    let cpu = cpu_limit_seconds();
    let capture = !pass_stderr();
    let result_pipe = Pipe::new()?;
    let err_pipe = if capture { Some(Pipe::new()?) } else { None };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // No other thread is inside LLVM while we fork (see `ForkGate`); only for the fork itself.
    crate::fork_gate::fork_begins();
    // SAFETY: fork has no preconditions; the child only runs `work` (see the contract above),
    // writes to the pipe and calls _exit, never returning into the caller's frames.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        crate::fork_gate::fork_done(); // the parent's gate; the child never touches its copy
    }
    if pid < 0 {
        return Err(ChildError::Failed(format!("cannot fork a compiler process: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        // SAFETY: runs only in the freshly forked child and never returns.
        unsafe { child_main(parent, limit, extra, cpu, &result_pipe, err_pipe.as_ref(), work) }
    }
    // Parent: the write ends belong to the child now.
    result_pipe.close_write();
    if let Some(p) = &err_pipe {
        p.close_write();
    }
    let collected = collect_output(pid, &result_pipe, err_pipe.as_ref());
    let status = reap(pid);
    let (result, stderr) = match collected {
        Ok(out) => out,
        Err(Stop::TimedOut(d)) => return Err(ChildError::TimedOut(d)),
        Err(Stop::Interrupted) => return Err(ChildError::Interrupted),
        Err(Stop::Failed(m)) => return Err(ChildError::Failed(m)),
    };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(ChildOutput { result, stderr });
    }
    if (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == EXIT_OUT_OF_MEMORY) || shows_out_of_memory(&stderr) {
        return Err(ChildError::OutOfMemory(memory_mb));
    }
    let said = quote_stderr(&stderr);
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        if sig == libc::SIGXCPU {
            return Err(ChildError::TimedOut(timeout()));
        }
        let hint = if sig == libc::SIGKILL { " (killed: out of memory?)" } else { "" };
        return Err(ChildError::Failed(format!("the compiler process died from signal {sig}{hint}{said}")));
    }
    Err(ChildError::Failed(format!("the compiler process failed (exit status {}){said}", libc::WEXITSTATUS(status))))
}

/// The child's side of [`in_child`].
///
/// # Safety
/// Call only in the child of a fork, with the pipes created before it.
unsafe fn child_main(
    parent: libc::pid_t,
    memory: u64,
    extra: u64,
    cpu_seconds: u64,
    result_pipe: &Pipe,
    err_pipe: Option<&Pipe>,
    work: impl FnOnce() -> Vec<u8>,
) -> ! {
    // SAFETY: plain syscalls on our own process, fds and limits; _exit never returns.
    unsafe {
        // Die with the parent; if it died between fork and prctl, the signal was never sent:
        // the parent pid we inherited tells.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(EXIT_PARENT_GONE);
        }
        libc::close(result_pipe.read);
        if let Some(p) = err_pipe {
            libc::close(p.read);
            libc::dup2(p.write, 2);
            libc::close(p.write);
        }
        let set = |resource, soft: u64, hard: u64| {
            let rl = libc::rlimit { rlim_cur: soft, rlim_max: hard };
            libc::setrlimit(resource, &rl);
        };
        // The hard limit is twice the allowance, for the second try in `compile_in_child`.
        set(libc::RLIMIT_AS, memory, memory.saturating_add(extra));
        // SIGXCPU at the soft limit (reported as a time-out), SIGKILL a second later.
        set(libc::RLIMIT_CPU, cpu_seconds, cpu_seconds + 1);
        // A crash must not write a core file of a multi-gigabyte compile.
        set(libc::RLIMIT_CORE, 0, 0);
    }
    crate::fork_gate::enter_compiler_child();
    crate::llvm::guard::exit_on_out_of_memory(EXIT_OUT_OF_MEMORY);
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_default();
    let mut written = 0usize;
    while written < out.len() {
        // SAFETY: writing from a live buffer to our pipe end.
        let n = unsafe { libc::write(result_pipe.write, out[written..].as_ptr().cast(), out.len() - written) };
        if n <= 0 {
            break;
        }
        written += n as usize;
    }
    // SAFETY: ends the child without running atexit handlers or Python finalisation,
    // which belong to the parent.
    unsafe { libc::_exit(if written == out.len() && !out.is_empty() { 0 } else { EXIT_WRITE_FAILED }) }
}

/// In the child: raises the address-space limit to its hard limit; false if it was there.
fn raise_memory_limit() -> bool {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: reading and setting our own limits through a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_AS, &mut rl) != 0 || rl.rlim_cur >= rl.rlim_max {
            return false;
        }
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_AS, &rl) == 0
    }
}

/// Whether the child's stderr says an allocation failed (Rust's and LLVM's own reports; the
/// C++ handlers exit with [`EXIT_OUT_OF_MEMORY`] instead).
fn shows_out_of_memory(stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    ["memory allocation of", "LLVM ERROR: out of memory", "std::bad_alloc", "Cannot allocate memory"].iter().any(|m| text.contains(m))
}

/// The end of the child's stderr, for an error message ("" if it wrote nothing).
pub(crate) fn quote_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut start = text.len().saturating_sub(STDERR_QUOTE);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let cut = if start > 0 { "..." } else { "" };
    format!("; the compiler process wrote: {cut}{}", &text[start..])
}

/// Runs a compile in the child and decodes its result: `work`'s value or error crosses the
/// pipe (`encode`/`decode`), and the child's failures become the engine error a user reads
/// (time limit, memory limit, crash, with the tail of the child's stderr).
///
/// Not every failed allocation announces itself: LLVM does not check every `malloc`, and a
/// NULL it then dereferences is a crash like any other. So a compile that crashes is run once
/// more with twice the memory (the child's hard limit): if it then gets further, the memory
/// limit is what stopped it and the error says so.
pub(crate) fn compile_in_child<T>(
    path: &str,
    work: impl Fn() -> Result<T, EngineError>,
    encode: impl FnOnce(&T, &mut Writer),
    decode: impl FnOnce(&mut Reader<'_>) -> Option<T>,
) -> Result<T, EngineError> {
    let output = in_child(|| {
        let mut w = Writer::default();
        let crashed = |r: &Result<T, EngineError>| matches!(r, Err(EngineError::LlvmCrash { .. }));
        let mut result = work();
        if crashed(&result) && raise_memory_limit() {
            let again = work();
            if !crashed(&again) {
                // SAFETY: ends the compiler child (see `child_main`).
                unsafe { libc::_exit(EXIT_OUT_OF_MEMORY) };
            }
            result = again;
        }
        match result {
            Ok(value) => encode(&value, w.u8(OK_TAG)),
            Err(e) => e.to_wire(w.u8(ERR_TAG)),
        }
        w.0
    })
    .map_err(|e| child_error(path, e))?;
    let mut r = Reader::new(&output.result);
    let decoded = match r.u8() {
        Some(OK_TAG) => decode(&mut r).map(Ok),
        Some(ERR_TAG) => EngineError::from_wire(&mut r).map(Err),
        _ => None,
    };
    let Some(result) = decoded else {
        return Err(EngineError::LlvmCrash {
            path: path.to_string(),
            reason: format!("the compiler process returned an unreadable result{}", quote_stderr(&output.stderr)),
        });
    };
    match result {
        // Crash recovery in the child caught an allocation failure's abort (Rust's handler).
        Err(EngineError::LlvmCrash { .. }) if shows_out_of_memory(&output.stderr) => Err(child_error(path, ChildError::OutOfMemory(extra_memory_mb()))),
        Err(EngineError::LlvmCrash { path, reason }) => Err(EngineError::LlvmCrash { reason: format!("{reason}{}", quote_stderr(&output.stderr)), path }),
        other => {
            if !output.stderr.is_empty() {
                log::debug!("the compiler process for {path} wrote: {}", String::from_utf8_lossy(&output.stderr).trim());
            }
            other
        }
    }
}

const OK_TAG: u8 = 0;
const ERR_TAG: u8 = 1;

/// The engine error for a compiler child that produced no result.
pub(crate) fn child_error(path: &str, e: ChildError) -> EngineError {
    match e {
        ChildError::Failed(reason) => EngineError::LlvmCrash { path: path.to_string(), reason },
        ChildError::TimedOut(limit) => EngineError::Compile {
            path: path.to_string(),
            stage: "compilation".into(),
            message: format!(
                "still running after {:.1} s, so the compiler process was stopped (the limit is \
                 JITLOAD_COMPILE_TIMEOUT_S={})",
                limit.as_secs_f64(),
                setting("JITLOAD_COMPILE_TIMEOUT_S")
            ),
        },
        ChildError::OutOfMemory(mb) => EngineError::Compile {
            path: path.to_string(),
            stage: "compilation".into(),
            message: format!(
                "the compiler process needed more than the {mb} MB of memory it may use (JITLOAD_COMPILE_MEMORY_MB={}, \
                 on top of what the interpreter has mapped); raise it if the module is really that large",
                setting("JITLOAD_COMPILE_MEMORY_MB")
            ),
        },
        ChildError::Interrupted => EngineError::Interrupted { path: path.to_string() },
    }
}

/// A setting's value as the user gave it, or "<default>, the default".
pub(crate) fn setting(name: &str) -> String {
    jitload_options::get().describe(name)
}

enum Stop {
    Failed(String),
    TimedOut(Duration),
    Interrupted,
}

/// A pipe whose ends are closed when dropped (each at most once).
struct Pipe {
    read: i32,
    write: i32,
    write_open: AtomicBool,
}

impl Pipe {
    fn new() -> Result<Pipe, ChildError> {
        let mut fds = [0i32; 2];
        // SAFETY: fds is a valid array of two ints; O_CLOEXEC keeps the pipe out of exec'd children.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(ChildError::Failed(format!("cannot create a pipe: {}", std::io::Error::last_os_error())));
        }
        // The parent reads without blocking: it stops when the child has exited, even if a
        // sibling compiler child forked meanwhile holds a copy of the write end.
        // SAFETY: setting a flag on our own fd.
        unsafe { libc::fcntl(fds[0], libc::F_SETFL, libc::O_NONBLOCK) };
        Ok(Pipe { read: fds[0], write: fds[1], write_open: AtomicBool::new(true) })
    }

    fn close_write(&self) {
        if self.write_open.swap(false, Ordering::AcqRel) {
            // SAFETY: our own fd, closed once (guarded by write_open).
            unsafe { libc::close(self.write) };
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.close_write();
        // SAFETY: our own fd, closed once, here.
        unsafe { libc::close(self.read) };
    }
}

/// Reads what is available from `fd` into `out` (keeping at most `keep` bytes, the latest);
/// returns true at end of file.
fn drain(fd: i32, out: &mut Vec<u8>, keep: usize, buf: &mut [u8]) -> Result<bool, std::io::Error> {
    loop {
        // SAFETY: reading into a live buffer of buf.len() bytes from our own fd.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            return Ok(true);
        }
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(false),
                Some(libc::EINTR) => continue,
                _ => Err(err),
            };
        }
        out.extend_from_slice(&buf[..n as usize]);
        if out.len() > keep {
            out.drain(..out.len() - keep);
        }
    }
}

/// Collects the child's result and stderr until it exits, polling so that the time limit
/// and the interrupt check are honoured; on either, kills the child (the caller reaps it).
fn collect_output(pid: libc::pid_t, result: &Pipe, stderr: Option<&Pipe>) -> Result<(Vec<u8>, Vec<u8>), Stop> {
    let deadline = Instant::now() + timeout();
    let check = interrupt_check();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut buf = vec![0u8; 1 << 16];
    let (mut out_done, mut err_done) = (false, stderr.is_none());
    let fail = |e: std::io::Error| {
        kill(pid);
        Stop::Failed(format!("cannot read the compiler process's result: {e}"))
    };
    loop {
        let mut fds = [
            libc::pollfd { fd: result.read, events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stderr.map_or(-1, |p| p.read), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds (a negative fd is ignored by poll).
        unsafe { libc::poll(fds.as_mut_ptr(), 2, 50) };
        if !out_done {
            out_done = drain(result.read, &mut out, usize::MAX, &mut buf).map_err(fail)?;
        }
        if let (false, Some(p)) = (err_done, stderr) {
            err_done = drain(p.read, &mut err, STDERR_KEEP, &mut buf).map_err(fail)?;
        }
        if (out_done && err_done) || exited(pid) {
            // Whatever the child wrote before exiting is in the pipes now.
            if !out_done {
                drain(result.read, &mut out, usize::MAX, &mut buf).map_err(fail)?;
            }
            if let (false, Some(p)) = (err_done, stderr) {
                drain(p.read, &mut err, STDERR_KEEP, &mut buf).map_err(fail)?;
            }
            return Ok((out, err));
        }
        if Instant::now() >= deadline {
            kill(pid);
            return Err(Stop::TimedOut(timeout()));
        }
        if check.is_some_and(|c| c()) {
            kill(pid);
            return Err(Stop::Interrupted);
        }
    }
}

/// Whether the child has exited (it stays a zombie until [`reap`]).
fn exited(pid: libc::pid_t) -> bool {
    // SAFETY: an empty siginfo for waitid to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: asks about our own child without reaping it (WNOWAIT).
    let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
    // SAFETY: si_pid is valid to read for the WEXITED result waitid filled in.
    r == 0 && unsafe { info.si_pid() } == pid
}

/// Waits for the child and returns its status.
fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0i32;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid || (r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            return status;
        }
    }
}

fn kill(pid: libc::pid_t) {
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::ptr_arg)] // the signature the generic encoder passes (`&T` for T = Vec<u8>)
    fn encode_bytes(v: &Vec<u8>, w: &mut Writer) {
        w.bytes(v);
    }

    fn decode_bytes(r: &mut Reader<'_>) -> Option<Vec<u8>> {
        r.bytes()
    }

    #[test]
    fn a_result_and_an_error_cross_the_pipe() {
        let got = compile_in_child("ok", || Ok(vec![1u8, 2, 3]), encode_bytes, decode_bytes).unwrap();
        assert_eq!(got, vec![1, 2, 3]);
        let err = compile_in_child("bad", || Err(EngineError::Empty { path: "bad".into() }), encode_bytes, decode_bytes);
        assert!(matches!(err, Err(EngineError::Empty { .. })), "{err:?}");
    }

    #[test]
    fn an_allocation_over_the_limit_names_the_setting() {
        // Far more than the default allowance: Rust's allocation failure aborts the child.
        let err = compile_in_child("big", || Ok(vec![1u8; 64 << 30]), encode_bytes, decode_bytes).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("JITLOAD_COMPILE_MEMORY_MB="), "{text}");
        assert!(!text.contains("corrupt"), "{text}");
    }

    #[test]
    fn what_a_dying_child_wrote_is_in_the_error_not_on_stderr() {
        let err = compile_in_child::<Vec<u8>>(
            "dies",
            || {
                // SAFETY: writing a constant string to fd 2 (the captured pipe in the child).
                unsafe { libc::write(2, b"the last words\n".as_ptr().cast(), 15) };
                // SAFETY: ends the child abnormally, as a crash LLVM could not recover would.
                unsafe { libc::abort() }
            },
            encode_bytes,
            decode_bytes,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("signal 6") && text.contains("the last words"), "{text}");
    }

    #[test]
    fn the_child_knows_it_is_one() {
        let got = compile_in_child("flag", || Ok(vec![u8::from(crate::fork_gate::in_compiler_child())]), encode_bytes, decode_bytes).unwrap();
        assert_eq!(got, vec![1]);
        assert!(!crate::fork_gate::in_compiler_child());
    }
}
