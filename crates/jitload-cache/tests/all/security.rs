//! Directories and entries that someone else could have written are refused.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use jitload_cache::{Cache, CacheError};

use crate::common::{chmod, is_root, key, logged, TestDir};

fn expect_insecure(result: Result<Cache, CacheError>, path: &std::path::Path, why: &str) {
    match result {
        Err(e @ CacheError::Insecure { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "path missing: {msg}");
            assert!(msg.contains(why), "reason missing: {msg}");
        }
        Err(e) => panic!("expected Insecure, got {e}"),
        Ok(_) => panic!("an insecure directory was accepted"),
    }
}

#[test]
fn world_writable_directory() {
    let t = TestDir::new("insecure-777");
    let dir = t.cache_dir();
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    expect_insecure(Cache::open(dir.clone(), u64::MAX), &dir, "writable by group and others (mode 0777)");
}

#[test]
fn group_writable_directory() {
    let t = TestDir::new("insecure-770");
    let dir = t.cache_dir();
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o770);
    expect_insecure(Cache::open(dir.clone(), u64::MAX), &dir, "writable by group (mode 0770)");
}

#[test]
fn world_writable_objects_directory() {
    let t = TestDir::new("insecure-objects");
    let dir = t.cache_dir();
    drop(Cache::open(dir.clone(), u64::MAX).unwrap());
    chmod(&dir.join("objects"), 0o757);
    expect_insecure(Cache::open(dir.clone(), u64::MAX), &dir.join("objects"), "writable by others");
}

#[test]
fn readable_by_others_is_fine() {
    let t = TestDir::new("secure-755");
    let dir = t.cache_dir();
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    assert!(Cache::open(dir, u64::MAX).is_ok());
}

#[test]
fn directory_of_another_user() {
    // Needs root to give a directory away; elsewhere the other checks still run.
    if !is_root() {
        return;
    }
    let t = TestDir::new("insecure-owner");
    let dir = t.cache_dir();
    fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
    expect_insecure(Cache::open(dir.clone(), u64::MAX), &dir, "owned by uid 65534");
}

#[test]
fn group_or_world_writable_entry() {
    let t = TestDir::new("entry-666");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    cache.put(&key("a"), b"payload").unwrap();
    let path = cache.entry_path(&key("a"));
    for mode in [0o666, 0o620, 0o602] {
        chmod(&path, mode);
        assert_eq!(cache.get(&key("a")), None, "mode {mode:o} accepted");
        assert!(path.exists(), "a refused entry is left alone, not deleted");
    }
    // Warned about once, with the path and the reason; the later refusals at debug level.
    let needle = path.display().to_string();
    let warnings = logged(log::Level::Warn, &needle);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("writable by group and others (mode 0666)"), "{warnings:?}");
    assert_eq!(logged(log::Level::Debug, &needle).len(), 2);
    // A put replaces it with a safe one.
    cache.put(&key("a"), b"payload").unwrap();
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(cache.get(&key("a")).is_some());
}

#[test]
fn entry_of_another_user() {
    if !is_root() {
        return;
    }
    let t = TestDir::new("entry-owner");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    cache.put(&key("a"), b"payload").unwrap();
    std::os::unix::fs::chown(cache.entry_path(&key("a")), Some(65534), None).unwrap();
    assert_eq!(cache.get(&key("a")), None);
}

#[test]
fn symlinked_entry() {
    // A link to a perfectly valid entry is still refused: links are how someone else's file
    // would get in.
    let t = TestDir::new("entry-symlink");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    cache.put(&key("a"), b"payload").unwrap();
    let path = cache.entry_path(&key("a"));
    let elsewhere = t.path().join("elsewhere.jlo");
    fs::rename(&path, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    assert_eq!(cache.get(&key("a")), None);
}

#[test]
fn replaced_path_after_open() {
    // The cache keeps its directory open: swapping the path for another directory later
    // does not redirect it.
    let t = TestDir::new("swap");
    let dir = t.cache_dir();
    let cache = Cache::open(dir.clone(), u64::MAX).unwrap();
    cache.put(&key("a"), b"mine").unwrap();
    fs::rename(&dir, t.path().join("moved")).unwrap();
    let planted = Cache::open(dir, u64::MAX).unwrap();
    planted.put(&key("a"), b"planted").unwrap();
    assert_eq!(cache.get(&key("a")).as_deref(), Some(&b"mine"[..]));
}
