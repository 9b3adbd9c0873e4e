//! Making JIT'd code visible to debuggers and profilers, when asked (it costs time and
//! memory per module, so it is off by default):
//! - `JITLOAD_DEBUGGER=1`: objects are registered with the GDB JIT interface (breakpoints by
//!   function name, backtraces with file:line when the bitcode has debug info);
//! - `JITLOAD_PERF_MAP=1`: every JIT'd function is appended to `/tmp/perf-<pid>.map`, which
//!   `perf report` reads to name samples in JIT'd code.

use std::io::Write;
use std::sync::Mutex;

/// Whether new sessions register their code with debuggers.
pub fn debugger_enabled() -> bool {
    jitload_options::get().debugger
}

/// Whether linked code is written to the perf map.
pub fn perf_map_enabled() -> bool {
    jitload_options::get().perf_map
}

static PERF_MAP: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Appends `(address, size, name)` entries to `/tmp/perf-<pid>.map` (the file perf looks
/// for; a fork writes its own).
pub fn write_perf_map(entries: &[(u64, u64, String)]) {
    if entries.is_empty() {
        return;
    }
    let mut file = PERF_MAP.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    let path = format!("/tmp/perf-{pid}.map");
    if file.is_none() {
        match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            Ok(f) => *file = Some(f),
            Err(e) => {
                log::warn!("jitload: cannot write {path}: {e}");
                return;
            }
        }
    }
    let mut text = String::new();
    for (address, size, name) in entries {
        text.push_str(&format!("{address:x} {size:x} {name}\n"));
    }
    if let Some(f) = file.as_mut() {
        let _ = f.write_all(text.as_bytes());
    }
}
