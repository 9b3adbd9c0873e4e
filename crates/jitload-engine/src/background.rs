//! In-process compiles the caller can stop waiting for.
//!
//! LLVM has no cancellation point: once a module is being optimised or compiled, nothing short
//! of killing the process stops it. The engine API compiles in-process (no fork, so the result
//! can be linked right away), so a Ctrl-C or the time limit cannot stop the compile itself; what
//! they can stop is the *wait*. [`run`] runs the work on a worker thread while the caller waits,
//! polling the interrupt check (`isolate::set_interrupt_check`: Python's signal handlers) and
//! the time limit (`JITLOAD_COMPILE_TIMEOUT_S`). On either, the caller returns at once and the
//! compile is *abandoned*: it keeps its CPU until it ends on its own, then its result is
//! dropped on the worker thread.
//!
//! The handoff is one slot under a lock: the waiter either takes the result or marks the slot
//! abandoned; the worker stores its result only into a slot that is still waited on. The work
//! itself must not publish anything (it prepares; the caller links), so nothing an abandoned
//! compile produced can become visible.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::EngineError;

/// Stack of a compiler thread: LLVM recurses deeply on some inputs (nested constant
/// expressions, long use chains), so twice the 8 MiB these compiles had on a Python thread
/// or the main thread. Address space only; untouched pages cost nothing.
const STACK_BYTES: usize = 16 << 20;

/// How often the waiter runs the interrupt check.
const POLL: Duration = Duration::from_millis(50);

/// Abandoned compiles that are still running.
static ABANDONED_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// How many abandoned compiles are still running (each ends on its own; see the module docs).
pub fn abandoned_running() -> usize {
    ABANDONED_RUNNING.load(Ordering::Acquire)
}

enum Slot<T> {
    Waiting,
    Done(Result<T, EngineError>),
    Abandoned,
}

struct Handoff<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// Why the caller stopped waiting.
enum Stop {
    Interrupted,
    TimedOut(Duration),
}

/// A compile for a pooled compiler thread; returns whether the thread may run another.
type Job = Box<dyn FnOnce() -> bool + Send + 'static>;

/// Idle compiler threads, kept so that a small compile does not pay for starting a thread
/// (about 0.1 ms, a fifth of a tiny -O0 add). One lock guards the queue and the count of
/// waiting threads; every queued job has either a waiting thread woken for it or a new one.
struct Pool {
    jobs: VecDeque<Job>,
    /// Threads blocked waiting for a job (or woken and not yet running).
    waiting: usize,
    /// The process the threads belong to: a forked child has none of its parent's.
    pid: u32,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { jobs: VecDeque::new(), waiting: 0, pid: 0 });
static POOL_WAKE: Condvar = Condvar::new();

/// An idle compiler thread ends after this long without work.
const IDLE_EXIT: Duration = Duration::from_secs(30);

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

fn submit(job: Job) -> std::io::Result<()> {
    let mut pool = pool();
    let pid = std::process::id();
    if pool.pid != pid {
        // First use, or a child forked from a process with compiler threads: none run here,
        // and jobs queued at the fork belong to the parent's callers (never run or dropped).
        std::mem::forget(std::mem::take(&mut pool.jobs));
        pool.waiting = 0;
        pool.pid = pid;
    }
    pool.jobs.push_back(job);
    if pool.waiting >= pool.jobs.len() {
        POOL_WAKE.notify_one();
        return Ok(());
    }
    let spawned = std::thread::Builder::new().name("jitload-compile".into()).stack_size(STACK_BYTES).spawn(worker);
    if let Err(e) = spawned {
        pool.jobs.pop_back(); // ours: nobody took a job while we held the lock
        return Err(e);
    }
    Ok(())
}

fn worker() {
    let mut pool = pool();
    loop {
        if let Some(job) = pool.jobs.pop_front() {
            drop(pool);
            if !job() {
                return;
            }
            pool = self::pool();
            continue;
        }
        pool.waiting += 1;
        let (guard, wait) = POOL_WAKE.wait_timeout(pool, IDLE_EXIT).unwrap_or_else(|e| e.into_inner());
        pool = guard;
        pool.waiting -= 1;
        if wait.timed_out() && pool.jobs.is_empty() {
            return;
        }
    }
}

/// Runs `work` on a compiler thread and waits for it with the engine's interrupt check and
/// time limit (see the module docs). `path` labels the errors. `work` must only prepare: its
/// result may be dropped unseen.
pub fn run<T: Send + 'static>(path: &str, work: impl FnOnce() -> Result<T, EngineError> + Send + 'static) -> Result<T, EngineError> {
    run_with(path, work, crate::isolate::interrupt_check(), crate::isolate::timeout())
}

fn run_with<T: Send + 'static>(
    path: &str,
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
    check: Option<crate::isolate::InterruptCheck>,
    limit: Duration,
) -> Result<T, EngineError> {
    let handoff = Arc::new(Handoff { slot: Mutex::new(Slot::Waiting), ready: Condvar::new() });
    let theirs = handoff.clone();
    let label = path.to_string();
    submit(Box::new(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .unwrap_or_else(|_| Err(EngineError::LlvmCrash { path: label, reason: "the compiler thread panicked".into() }));
        // After a crash LLVM recovered from, the thread's own state (LLVM's thread-locals, a
        // stack it jumped over) is not trusted again: the thread ends after this job.
        let reuse = !matches!(result, Err(EngineError::LlvmCrash { .. }));
        let mut slot = theirs.slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Slot::Abandoned = *slot {
            drop(slot);
            // Nobody waits any more: the result (objects, a lazy module) is dropped here.
            drop(result);
            ABANDONED_RUNNING.fetch_sub(1, Ordering::AcqRel);
        } else {
            *slot = Slot::Done(result);
            theirs.ready.notify_all();
        }
        reuse
    }))
    .map_err(|e| EngineError::Compile {
        path: path.to_string(),
        stage: "compilation".into(),
        message: format!("cannot start a compiler thread: {e}"),
    })?;
    let deadline = Instant::now() + limit;
    let stop = loop {
        {
            let slot = handoff.slot.lock().unwrap_or_else(|e| e.into_inner());
            let wait = POLL.min(deadline.saturating_duration_since(Instant::now()));
            let (mut slot, _) = handoff.ready.wait_timeout_while(slot, wait, |s| matches!(s, Slot::Waiting)).unwrap_or_else(|e| e.into_inner());
            // Still `Waiting` unless the worker handed its result over (only we abandon).
            if let Slot::Done(result) = std::mem::replace(&mut *slot, Slot::Waiting) {
                return result;
            }
        }
        if Instant::now() >= deadline {
            break Stop::TimedOut(limit);
        }
        // Without the slot's lock: the check may wait for the GIL.
        if check.is_some_and(|c| c()) {
            break Stop::Interrupted;
        }
    };
    {
        let mut slot = handoff.slot.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *slot, Slot::Abandoned) {
            // Finished meanwhile: the caller still gets the interrupt, so the result is dropped.
            Slot::Done(result) => {
                drop(slot);
                drop(result);
            }
            _ => {
                ABANDONED_RUNNING.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
    Err(match stop {
        Stop::Interrupted => EngineError::Interrupted { path: path.to_string() },
        Stop::TimedOut(limit) => EngineError::Compile {
            path: path.to_string(),
            stage: "compilation".into(),
            message: format!(
                "still running after {:.1} s (the limit is JITLOAD_COMPILE_TIMEOUT_S={}); LLVM cannot be stopped \
                 mid-compile in-process, so it finishes in the background and its result is dropped",
                limit.as_secs_f64(),
                crate::isolate::setting("JITLOAD_COMPILE_TIMEOUT_S")
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Counts drops, so a test sees that an abandoned result was dropped, not leaked or used.
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wait_until(what: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(20);
        while !what() {
            assert!(Instant::now() < end, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_finished_compile_is_handed_over() {
        let out = run_with("quick", || Ok(41 + 1), None, Duration::from_secs(5)).unwrap();
        assert_eq!(out, 42);
        let err = run_with::<()>("bad", || Err(EngineError::Empty { path: "bad".into() }), None, Duration::from_secs(5));
        assert!(matches!(err, Err(EngineError::Empty { .. })));
    }

    #[test]
    fn a_panicking_compile_is_an_error() {
        let err = run_with::<()>("p", || panic!("boom"), None, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, EngineError::LlvmCrash { .. }), "{err}");
    }

    #[test]
    fn many_callers_at_once_each_get_their_own_result() {
        let callers: Vec<_> = (0..12u64)
            .map(|t| {
                std::thread::spawn(move || {
                    for i in 0..60u64 {
                        let want = t * 1000 + i;
                        let got = run_with(
                            "many",
                            move || {
                                if i % 7 == 0 {
                                    std::thread::sleep(Duration::from_millis(2));
                                }
                                Ok(want)
                            },
                            None,
                            Duration::from_secs(60),
                        )
                        .unwrap();
                        assert_eq!(got, want);
                    }
                })
            })
            .collect();
        for c in callers {
            c.join().unwrap();
        }
    }

    static STOP_NOW: AtomicBool = AtomicBool::new(false);
    fn stop_now() -> bool {
        STOP_NOW.load(Ordering::SeqCst)
    }

    #[test]
    fn the_waiter_stops_on_time_limit_and_interrupt_and_the_result_is_dropped() {
        for interrupt in [false, true] {
            let dropped = Arc::new(AtomicUsize::new(0));
            let release = Arc::new(AtomicBool::new(false));
            let (d, r) = (dropped.clone(), release.clone());
            STOP_NOW.store(interrupt, Ordering::SeqCst);
            let limit = if interrupt { Duration::from_secs(60) } else { Duration::from_millis(200) };
            let started = Instant::now();
            let err = run_with(
                "slow",
                move || {
                    while !r.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Ok(Tracked(d))
                },
                Some(stop_now),
                limit,
            )
            .err()
            .expect("the wait is stopped");
            assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
            match (interrupt, &err) {
                (true, EngineError::Interrupted { .. }) => {}
                (false, EngineError::Compile { message, .. }) => assert!(message.contains("JITLOAD_COMPILE_TIMEOUT_S"), "{message}"),
                _ => panic!("unexpected {err}"),
            }
            assert!(abandoned_running() >= 1);
            assert_eq!(dropped.load(Ordering::SeqCst), 0, "the compile is still running");
            release.store(true, Ordering::SeqCst);
            // The worker finishes and drops the result itself: nobody else ever sees it.
            wait_until(|| dropped.load(Ordering::SeqCst) == 1);
        }
        STOP_NOW.store(false, Ordering::SeqCst);
    }
}
