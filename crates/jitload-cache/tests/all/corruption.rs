//! Damaged entries are misses, are removed, and never yield bytes.

use std::fs::{self, OpenOptions};

use jitload_cache::Cache;

use crate::common::{key, logged, TestDir};

fn cache_with_entry(t: &TestDir) -> (Cache, std::path::PathBuf) {
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    let payload: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    cache.put(&key("a"), &payload).unwrap();
    assert_eq!(cache.get(&key("a")), Some(payload));
    let path = cache.entry_path(&key("a"));
    (cache, path)
}

/// The warning `get` logged when it removed the entry at `path`.
fn removal_reason(path: &std::path::Path) -> String {
    let warnings = logged(log::Level::Warn, &path.display().to_string());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("removing invalid entry"), "{warnings:?}");
    warnings[0].clone()
}

fn flip_byte(path: &std::path::Path, offset: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    fs::write(path, bytes).unwrap();
}

#[test]
fn corrupt_payload_byte() {
    let t = TestDir::new("corrupt-payload");
    let (cache, path) = cache_with_entry(&t);
    flip_byte(&path, 88 + 5000);
    assert_eq!(cache.get(&key("a")), None);
    assert!(!path.exists(), "a corrupt entry must be removed");
    assert!(removal_reason(&path).contains("checksum mismatch"));
    // And rebuilt by the next put.
    cache.put(&key("a"), b"fresh").unwrap();
    assert_eq!(cache.get(&key("a")).as_deref(), Some(&b"fresh"[..]));
}

#[test]
fn corrupt_header_bytes() {
    // Magic, version, reserved, key echo, length, checksum: each is checked.
    let reasons =
        [(0, "bad magic"), (9, "format version"), (13, "reserved"), (20, "different key"), (50, "payload bytes, file holds"), (60, "checksum mismatch")];
    for (offset, reason) in reasons {
        let t = TestDir::new("corrupt-header");
        let (cache, path) = cache_with_entry(&t);
        flip_byte(&path, offset);
        assert_eq!(cache.get(&key("a")), None, "flipped byte {offset}");
        assert!(!path.exists(), "flipped byte {offset}: entry not removed");
        let why = removal_reason(&path);
        assert!(why.contains(reason), "flipped byte {offset}: {why}");
    }
}

#[test]
fn truncated_entry() {
    for keep in [0u64, 10, 87, 88, 88 + 4999, 88 + 9999] {
        let t = TestDir::new("truncated");
        let (cache, path) = cache_with_entry(&t);
        OpenOptions::new().write(true).open(&path).unwrap().set_len(keep).unwrap();
        assert_eq!(cache.get(&key("a")), None, "truncated to {keep}");
        assert!(!path.exists(), "truncated to {keep}: entry not removed");
        let why = removal_reason(&path);
        assert!(why.contains("truncated") || why.contains("file holds"), "truncated to {keep}: {why}");
    }
}

#[test]
fn trailing_garbage() {
    let t = TestDir::new("trailing");
    let (cache, path) = cache_with_entry(&t);
    let mut bytes = fs::read(&path).unwrap();
    bytes.push(0);
    fs::write(&path, bytes).unwrap();
    assert_eq!(cache.get(&key("a")), None);
}

#[test]
fn entry_under_another_keys_name() {
    let t = TestDir::new("key-echo");
    let (cache, path) = cache_with_entry(&t);
    let other = cache.entry_path(&key("b"));
    fs::create_dir_all(other.parent().unwrap()).unwrap();
    fs::copy(&path, &other).unwrap();
    assert_eq!(cache.get(&key("b")), None, "a valid entry of another key was accepted");
    assert!(!other.exists());
    assert!(removal_reason(&other).contains("different key"));
    assert!(cache.get(&key("a")).is_some(), "the original is untouched");
}

#[test]
fn not_a_regular_file() {
    let t = TestDir::new("directory-entry");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    let path = cache.entry_path(&key("a"));
    fs::create_dir_all(&path).unwrap();
    assert_eq!(cache.get(&key("a")), None);
    // A put cannot rename a file over a directory: an error, not a panic.
    assert!(cache.put(&key("a"), b"x").is_err());
}
