//! Runs work on an untrusted module in a forked child process, so that nothing the input can
//! make LLVM do (exhaust memory, crash in a way crash recovery cannot catch, loop in a
//! corrupted allocation) can take the interpreter down. The child gets a memory limit, does
//! pure computation on its own LLVM context, writes its result to a pipe and `_exit`s.

use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Extra address space the child may use on top of what the parent has mapped.
const DEFAULT_EXTRA_MEMORY_MB: u64 = 2048;

fn extra_memory_bytes() -> u64 {
    std::env::var("JITLOAD_COMPILE_MEMORY_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_EXTRA_MEMORY_MB)
        .saturating_mul(1 << 20)
}

/// How long a compile may take before the child is killed (`JITLOAD_COMPILE_TIMEOUT_S`,
/// default 600 s): some corrupt bitcode makes LLVM loop forever (found by the mutation run).
pub(crate) fn timeout() -> Duration {
    let secs = std::env::var("JITLOAD_COMPILE_TIMEOUT_S").ok().and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(600.0);
    Duration::from_secs_f64(secs.max(0.1))
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

/// The installed check, if any.
pub(crate) fn interrupt_check() -> Option<InterruptCheck> {
    *INTERRUPT_CHECK.read().unwrap_or_else(|e| e.into_inner())
}

/// Why the compiler child produced no result.
#[derive(Debug)]
pub enum ChildError {
    /// It died, failed or could not be started; the text says how.
    Failed(String),
    /// It ran longer than the time limit and was killed.
    TimedOut(Duration),
    /// The interrupt check asked to stop; the child was killed.
    Interrupted,
}

fn mapped_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

/// Runs `work` in a forked child and returns the bytes it produced, or a description of how
/// the child died.
///
/// `work` must not take locks or touch state shared with other threads of this process (a
/// lock held by another thread at fork time would never be released in the child), must not
/// call into Python, and must not spawn threads. Pure computation on data it owns and on a
/// private LLVM context qualifies.
pub fn in_child(work: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, ChildError> {
    run_child(work).map_err(|e| match e {
        Stop::Failed(m) => ChildError::Failed(m),
        Stop::TimedOut(d) => ChildError::TimedOut(d),
        Stop::Interrupted => ChildError::Interrupted,
    })
}

enum Stop {
    Failed(String),
    TimedOut(Duration),
    Interrupted,
}

impl From<String> for Stop {
    fn from(m: String) -> Stop {
        Stop::Failed(m)
    }
}

fn run_child(work: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, Stop> {
    let limit = mapped_bytes().saturating_add(extra_memory_bytes());
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints; O_CLOEXEC keeps the pipe out of exec'd children.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("cannot create a pipe: {}", std::io::Error::last_os_error()).into());
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // SAFETY: fork has no preconditions; the child only runs `work` (see the contract above),
    // writes to the pipe and calls _exit, never returning into the caller's frames.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let err = std::io::Error::last_os_error();
        // SAFETY: closing the fds we just created.
        unsafe {
            libc::close(read_fd);
            libc::close(write_fd);
        }
        return Err(format!("cannot fork a compiler process: {err}").into());
    }
    if pid == 0 {
        // Child.
        // SAFETY: plain syscalls on our own fds and limits; _exit never returns.
        unsafe {
            libc::close(read_fd);
            let rl = libc::rlimit { rlim_cur: limit, rlim_max: limit };
            libc::setrlimit(libc::RLIMIT_AS, &rl);
        }
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_default();
        let mut written = 0usize;
        while written < out.len() {
            // SAFETY: writing from a live buffer to our pipe end.
            let n = unsafe { libc::write(write_fd, out[written..].as_ptr().cast(), out.len() - written) };
            if n <= 0 {
                break;
            }
            written += n as usize;
        }
        // SAFETY: ends the child without running atexit handlers or Python finalisation,
        // which belong to the parent.
        unsafe { libc::_exit(if written == out.len() && !out.is_empty() { 0 } else { 70 }) };
    }
    // Parent.
    // SAFETY: the write end belongs to the child now; read_fd is ours and wrapped once.
    unsafe { libc::close(write_fd) };
    let collected = collect_output(read_fd, pid);
    // SAFETY: read_fd is ours and closed once, here.
    unsafe { libc::close(read_fd) };
    let mut status = 0i32;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid || (r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)) {
            break;
        }
    }
    let out = collected?;
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let hint = if sig == libc::SIGKILL { " (killed: out of memory?)" } else { "" };
        return Err(format!("the compiler process died from signal {sig}{hint}").into());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("the compiler process failed (exit status {})", libc::WEXITSTATUS(status)).into());
    }
    Ok(out)
}

/// Reads the child's output until end of file, polling so that the time limit and the
/// interrupt check are honoured; on either, kills the child (the caller reaps it).
fn collect_output(fd: i32, pid: libc::pid_t) -> Result<Vec<u8>, Stop> {
    let deadline = Instant::now() + timeout();
    let check = interrupt_check();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for our own fd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 50) };
        if ready > 0 {
            // SAFETY: reading into a live buffer of buf.len() bytes from our own fd.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                return Ok(out); // end of file: the child is done
            }
            if n > 0 {
                out.extend_from_slice(&buf[..n as usize]);
                continue;
            }
        }
        if ready != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) && err.raw_os_error() != Some(libc::EAGAIN) {
                kill(pid);
                return Err(format!("cannot read the compiler process's result: {err}").into());
            }
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

fn kill(pid: libc::pid_t) {
    // SAFETY: signalling our own child, which has not been reaped yet.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

pub use jitload_runtime::wire::{Reader, Writer};
