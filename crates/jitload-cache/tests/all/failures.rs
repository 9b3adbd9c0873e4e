//! Writes that cannot happen return errors; reading keeps working; no temp files are left.

use std::fs;

use jitload_cache::{Cache, CacheError};

use crate::common::{chmod, expect_child_ok, is_root, key, spawn_child, temp_files, TestDir};

#[test]
fn read_only_directory() {
    // Root ignores permission bits, so there is nothing to test as root.
    if is_root() {
        return;
    }
    let t = TestDir::new("read-only");
    let dir = t.cache_dir();
    let cache = Cache::open(dir.clone(), u64::MAX).unwrap();
    cache.put(&key("a"), b"stored before").unwrap();
    let shard = cache.entry_path(&key("a")).parent().unwrap().to_path_buf();
    for d in [&shard, &dir.join("objects"), &dir] {
        chmod(d, 0o500);
    }
    let err = cache.put(&key("a"), b"new").unwrap_err();
    assert!(matches!(err, CacheError::Io { .. }), "{err}");
    assert!(err.to_string().contains(&shard.display().to_string()), "{err}");
    assert!(cache.put(&key("b"), b"new").is_err());
    assert_eq!(cache.get(&key("a")).as_deref(), Some(&b"stored before"[..]));
    // A read-only cache opens fine too.
    let again = Cache::open(dir.clone(), u64::MAX).unwrap();
    assert!(again.get(&key("a")).is_some());
}

#[test]
fn unwritable_shard() {
    // Works as root too: a file where the entry's directory should be.
    let t = TestDir::new("shard-file");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    let shard = cache.entry_path(&key("a")).parent().unwrap().to_path_buf();
    fs::write(&shard, b"not a directory").unwrap();
    let err = cache.put(&key("a"), b"x").unwrap_err();
    assert!(err.to_string().contains("create temporary file"), "{err}");
    assert_eq!(cache.get(&key("a")), None);
    assert_eq!(fs::read(&shard).unwrap(), b"not a directory");
}

#[test]
fn disk_full() {
    // A child process whose file-size limit stands in for a full disk (see `full_disk_child`).
    let t = TestDir::new("disk-full");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    cache.put(&key("small"), b"stored before").unwrap();
    expect_child_ok(spawn_child("full-disk", &t.cache_dir(), 0));
    assert!(temp_files(&t.cache_dir()).is_empty(), "a failed put left its temp file");
    assert_eq!(cache.get(&key("big")), None);
    assert_eq!(cache.get(&key("small")).as_deref(), Some(&b"stored before"[..]));
}

/// Runs in the child of [`disk_full`]: writes past RLIMIT_FSIZE fail with EFBIG, as
/// writes to a full disk fail with ENOSPC.
pub fn full_disk_child(dir: std::path::PathBuf) {
    // SAFETY: ignoring SIGXFSZ (so the write fails instead of killing the process) and
    // lowering our own file-size limit touch only this process; the arguments are valid.
    unsafe {
        assert_ne!(libc::signal(libc::SIGXFSZ, libc::SIG_IGN), libc::SIG_ERR);
        let limit = libc::rlimit { rlim_cur: 64 * 1024, rlim_max: 64 * 1024 };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let cache = Cache::open(dir.clone(), u64::MAX).unwrap();
    let err = cache.put(&key("big"), &vec![1u8; 1 << 20]).unwrap_err();
    assert!(err.to_string().contains("cannot write"), "{err}");
    assert!(temp_files(&dir).is_empty(), "temp file left after a failed write");
    assert_eq!(cache.get(&key("big")), None);
    assert_eq!(cache.get(&key("small")).as_deref(), Some(&b"stored before"[..]));
    cache.put(&key("fits"), b"still works").unwrap();
    assert!(cache.get(&key("fits")).is_some());
}
