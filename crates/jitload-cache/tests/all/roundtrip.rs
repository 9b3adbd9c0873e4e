//! Storing and getting back, persistence across `Cache` instances, file modes.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use jitload_cache::{Cache, KeyBuilder};

use crate::common::{key, TestDir};

#[test]
fn put_then_get() {
    let t = TestDir::new("roundtrip");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    assert_eq!(cache.get(&key("a")), None);
    cache.put(&key("a"), b"object bytes").unwrap();
    cache.put(&key("empty"), b"").unwrap();
    assert_eq!(cache.get(&key("a")).as_deref(), Some(&b"object bytes"[..]));
    assert_eq!(cache.get(&key("empty")).as_deref(), Some(&b""[..]));
    assert_eq!(cache.get(&key("b")), None);

    cache.put(&key("a"), b"replaced").unwrap();
    assert_eq!(cache.get(&key("a")).as_deref(), Some(&b"replaced"[..]));
}

#[test]
fn survives_reopening() {
    let t = TestDir::new("reopen");
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    Cache::open(t.cache_dir(), u64::MAX).unwrap().put(&key("big"), &big).unwrap();
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    let got = cache.get(&key("big")).unwrap();
    assert_eq!(got, big);
    // Read straight into an exactly sized buffer: no growth, no header to strip (a copy).
    assert_eq!(got.capacity(), got.len());
}

#[test]
fn key_fields_cannot_collide() {
    let t = TestDir::new("fields");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    let k1 = KeyBuilder::new("d").field("ab", b"c").finish();
    let k2 = KeyBuilder::new("d").field("a", b"bc").finish();
    let k3 = KeyBuilder::new("d").field("x", b"ab").field("y", b"c").finish();
    let k4 = KeyBuilder::new("d").field("x", b"a").field("y", b"bc").finish();
    assert_ne!(k1, k2);
    assert_ne!(k3, k4);
    cache.put(&k1, b"one").unwrap();
    cache.put(&k3, b"three").unwrap();
    assert_eq!(cache.get(&k2), None);
    assert_eq!(cache.get(&k4), None);
}

#[test]
fn layout_and_modes() {
    let t = TestDir::new("modes");
    let nested = t.path().join("missing/parents/cache");
    let cache = Cache::open(nested.clone(), u64::MAX).unwrap();
    cache.put(&key("a"), b"x").unwrap();
    let entry = cache.entry_path(&key("a"));
    let hex = key("a").hex();
    assert_eq!(entry, nested.join("objects").join(&hex[..2]).join(format!("{hex}.jlo")));
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&entry), 0o600);
    for dir in [t.path().join("missing"), nested.clone(), nested.join("objects"), entry.parent().unwrap().to_path_buf()] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let info = cache.info().unwrap();
    assert_eq!((info.dir, info.entries, info.bytes), (nested, 1, 88 + 1));
}
