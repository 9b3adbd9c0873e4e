//! Rust `log` records → Python's `logging`, logger `jitload`.
//!
//! Each native module links its own copy of the `log` crate, so each installs this logger in
//! its module init ([`install`]), and each record is forwarded once, by the copy that made it.
//!
//! A record is never handed to Python where it is logged: that thread may not hold the GIL
//! (compiles run without it), may hold an engine lock that a logging handler calling back
//! into jitload would wait for, or may be a compiler child, where no interpreter works.
//! Records are queued instead, and a pending call (which the interpreter runs on its main
//! thread at the next check, with the GIL) passes them to `logging.getLogger("jitload")`. In
//! any process other than the one that installed the logger (a compiler child, a fork) they
//! are dropped.
//!
//! Debug records cost a queue entry and a Python call each, and a warm import makes one; so
//! they are forwarded only while the `jitload` logger is enabled for DEBUG, as read when the
//! module is loaded (if `logging` is imported by then) and at every forwarding.
//! The logger gets a `NullHandler`, as a library's logger should: records reach the
//! application's handlers, and nothing is printed when logging is not configured.

use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Records kept while the main thread has not run the pending call; older ones go first.
const QUEUE_MAX: usize = 1000;

struct Queue {
    /// (Python logging level, message)
    records: VecDeque<(u32, String)>,
    dropped: usize,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue { records: VecDeque::new(), dropped: 0 });
/// A pending call is scheduled and has not started yet.
static SCHEDULED: AtomicBool = AtomicBool::new(false);
/// The process whose interpreter receives the records.
static OWNER: AtomicU32 = AtomicU32::new(0);
static NULL_HANDLER_ADDED: AtomicBool = AtomicBool::new(false);

const DEBUG: u32 = 10;

fn python_level(level: log::Level) -> u32 {
    match level {
        log::Level::Error => 40,
        log::Level::Warn => 30,
        log::Level::Info => 20,
        log::Level::Debug => DEBUG,
        log::Level::Trace => 5,
    }
}

struct Forward;

static FORWARD: Forward = Forward;

impl log::Log for Forward {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) || std::process::id() != OWNER.load(Ordering::Relaxed) {
            return;
        }
        // SAFETY: Py_IsInitialized may be called from any thread at any time. After
        // finalisation (a compiler thread finishing at exit) there is no logger to reach.
        if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
            return;
        }
        let entry = (python_level(record.level()), record.args().to_string());
        {
            let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
            if queue.records.len() >= QUEUE_MAX {
                queue.records.pop_front();
                queue.dropped += 1;
            }
            queue.records.push_back(entry);
        }
        if !SCHEDULED.swap(true, Ordering::AcqRel) {
            // SAFETY: Py_AddPendingCall may be called from any thread, with or without the
            // GIL; `forward_pending` has the signature it expects and ignores its argument.
            if unsafe { pyo3::ffi::Py_AddPendingCall(Some(forward_pending), std::ptr::null_mut()) } != 0 {
                SCHEDULED.store(false, Ordering::Release); // the queue is full: the next record retries
            }
        }
    }

    fn flush(&self) {}
}

/// The pending call: runs on the interpreter's main thread with the GIL held.
extern "C" fn forward_pending(_: *mut c_void) -> c_int {
    SCHEDULED.store(false, Ordering::Release);
    // SAFETY: as in `log`.
    if unsafe { pyo3::ffi::Py_IsInitialized() } == 0 {
        return 0;
    }
    let (records, dropped) = {
        let mut queue = QUEUE.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut queue.records), std::mem::take(&mut queue.dropped))
    };
    // A panic must not unwind into the interpreter; a failing handler loses its records
    // (logging reports its own handlers' errors).
    let _ = std::panic::catch_unwind(|| Python::attach(|py| forward(py, records, dropped).map_err(|e| e.restore(py))));
    // SAFETY: the GIL is held; clears what `restore` left, so the pending call reports success.
    unsafe { pyo3::ffi::PyErr_Clear() };
    0
}

fn forward(py: Python<'_>, records: VecDeque<(u32, String)>, dropped: usize) -> PyResult<()> {
    let logging = py.import("logging")?;
    let logger = logging.call_method1("getLogger", ("jitload",))?;
    if !NULL_HANDLER_ADDED.swap(true, Ordering::AcqRel) {
        logger.call_method1("addHandler", (logging.getattr("NullHandler")?.call0()?,))?;
    }
    for (level, text) in records {
        logger.call_method1("log", (level, "%s", text))?;
    }
    if dropped > 0 {
        logger.call_method1("warning", ("%d log records of jitload's native code were dropped (too many at once)", dropped))?;
    }
    follow_level(&logger)
}

/// Forwards debug records only while the logger wants them (see the module docs).
fn follow_level(logger: &Bound<'_, PyAny>) -> PyResult<()> {
    let debug: bool = logger.call_method1("isEnabledFor", (DEBUG,))?.extract()?;
    log::set_max_level(if debug { log::LevelFilter::Trace } else { log::LevelFilter::Info });
    Ok(())
}

/// Installs the forwarding logger for this native module's copy of `log` (once; later
/// calls only re-read the level).
pub fn install(py: Python<'_>) -> PyResult<()> {
    OWNER.store(std::process::id(), Ordering::Relaxed);
    if log::set_logger(&FORWARD).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    // Importing `logging` here would cost every process that imports a bitcode module.
    let modules = py.import("sys")?.getattr("modules")?;
    if let Some(logging) = modules.cast::<PyDict>()?.get_item("logging")? {
        follow_level(&logging.call_method1("getLogger", ("jitload",))?)?;
    }
    Ok(())
}
