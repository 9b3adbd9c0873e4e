//! Helpers: throw-away directories, self-checking payloads, child processes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once};

use jitload_cache::{CacheKey, KeyBuilder};

/// Set in a child process to the role it plays (see `child_process_entry`).
pub const CHILD_ROLE: &str = "JITLOAD_CACHE_TEST_ROLE";
/// The cache directory a child works in.
pub const CHILD_DIR: &str = "JITLOAD_CACHE_TEST_DIR";
/// The child's writer number.
pub const CHILD_ID: &str = "JITLOAD_CACHE_TEST_ID";

/// A unique directory under the system temp dir, removed (permissions restored first) on drop.
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        install_logger();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("jitload-cache-test-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        TestDir(path)
    }

    /// Where a test's cache goes (not created: `Cache::open` does that).
    pub fn cache_dir(&self) -> PathBuf {
        self.0.join("cache")
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

fn make_writable(path: &Path) {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.is_dir() {
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
            if let Ok(entries) = fs::read_dir(path) {
                for entry in entries.flatten() {
                    make_writable(&entry.path());
                }
            }
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        make_writable(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn key(name: &str) -> CacheKey {
    KeyBuilder::new("jitload-cache-tests").field("name", name.as_bytes()).finish()
}

/// Key number `i` of the concurrency tests.
pub fn nth_key(i: u32) -> CacheKey {
    key(&format!("key-{i}"))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A payload that says which key, writer and iteration produced it and can be checked
/// against that: a mix of two writers' bytes, a wrong length or another key's payload all
/// fail [`check_payload`].
pub fn payload(key: u32, writer: u32, iter: u32, base_len: usize) -> Vec<u8> {
    let len = base_len + ((writer as usize * 7919 + iter as usize * 104_729) % 4096);
    let mut out = Vec::with_capacity(len);
    for word in [key, writer, iter] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    let mut state = (u64::from(key) << 42) ^ (u64::from(writer) << 21) ^ u64::from(iter) ^ 0x9e37_79b9_7f4a_7c15;
    while out.len() < len {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.push(state as u8);
    }
    out
}

/// Whether `bytes` is exactly some `payload(key, w, i, base_len)`.
pub fn check_payload(key: u32, base_len: usize, bytes: &[u8]) -> bool {
    if bytes.len() < 12 {
        return false;
    }
    let word = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
    word(0) == key && payload(key, word(1), word(2), base_len) == bytes
}

/// Runs `child_process_entry` of this test binary in a new process with `role`, working on
/// `dir`. Returns the child; the caller waits. The child's output is captured.
pub fn spawn_child(role: &str, dir: &Path, id: u32) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "concurrency::child_process_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env(CHILD_DIR, dir)
        .env(CHILD_ID, id.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child started by [`spawn_child`] and fails the test unless it ran the entry
/// test (so a wrong filter cannot pass silently) and that test passed.
pub fn expect_child_ok(child: std::process::Child) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("1 passed"), "child failed ({}):\n{stdout}\n{stderr}", out.status);
}

/// Files in the cache whose names end in `.tmp`.
pub fn temp_files(cache_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for shard in fs::read_dir(cache_dir.join("objects")).unwrap().flatten() {
        if let Ok(files) = fs::read_dir(shard.path()) {
            for file in files.flatten() {
                if file.file_name().to_string_lossy().ends_with(".tmp") {
                    found.push(file.path());
                }
            }
        }
    }
    found
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Every log record of this process, so tests can check what the cache reported.
static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Recorder;

impl log::Log for Recorder {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let text = record.args().to_string();
        RECORDS.lock().unwrap_or_else(|e| e.into_inner()).push((record.level(), text));
    }
    fn flush(&self) {}
}

pub fn install_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Recorder).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Records at `level` whose text contains `needle` (tests use their unique directory).
pub fn logged(level: log::Level, needle: &str) -> Vec<String> {
    let records = RECORDS.lock().unwrap_or_else(|e| e.into_inner());
    records.iter().filter(|(l, t)| *l == level && t.contains(needle)).map(|(_, t)| t.clone()).collect()
}
