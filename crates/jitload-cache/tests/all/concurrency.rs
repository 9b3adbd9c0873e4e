//! Many threads and processes reading and writing the same keys at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use jitload_cache::Cache;

use crate::common::{check_payload, expect_child_ok, install_logger, logged, nth_key, payload, spawn_child, temp_files, TestDir};
use crate::common::{CHILD_DIR, CHILD_ID, CHILD_ROLE};

const KEYS: u32 = 4;
const BASE_LEN: usize = 32 * 1024;

/// One writer's loop: put then get, every get must be a miss or a whole, right payload.
/// Returns the number of hits.
fn hammer(cache: &Cache, writer: u32, iterations: u32) -> usize {
    let mut hits = 0;
    for iter in 0..iterations {
        let k = (writer + iter) % KEYS;
        cache.put(&nth_key(k), &payload(k, writer, iter, BASE_LEN)).unwrap();
        let r = (writer * 3 + iter) % KEYS;
        if let Some(bytes) = cache.get(&nth_key(r)) {
            assert!(check_payload(r, BASE_LEN, &bytes), "writer {writer} iter {iter}: wrong bytes for key {r}");
            hits += 1;
        }
    }
    hits
}

fn threads(limit: u64) -> usize {
    let t = TestDir::new("threads");
    let cache = Arc::new(Cache::open(t.cache_dir(), limit).unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..8)
        .map(|writer| {
            let (cache, hits) = (Arc::clone(&cache), Arc::clone(&hits));
            std::thread::spawn(move || hits.fetch_add(hammer(&cache, writer, 200), Ordering::Relaxed))
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert!(temp_files(&t.cache_dir()).is_empty(), "temp files left behind");
    // Writes are atomic, so a reader never even sees a partial entry.
    let invalid = logged(log::Level::Warn, &t.cache_dir().display().to_string());
    assert!(invalid.is_empty(), "readers saw invalid entries: {invalid:?}");
    hits.load(Ordering::Relaxed)
}

#[test]
fn threads_same_keys() {
    let hits = threads(u64::MAX);
    assert!(hits > 0, "no get ever hit");
}

#[test]
fn threads_same_keys_while_pruning() {
    // Room for about two entries: nearly every put prunes while others read and write.
    threads(2 * (BASE_LEN as u64 + 4096 + 88));
}

#[test]
fn processes_same_keys() {
    let t = TestDir::new("processes");
    let dir = t.cache_dir();
    drop(Cache::open(dir.clone(), u64::MAX).unwrap());
    let children: Vec<_> = (0..4).map(|id| spawn_child("writer", &dir, id)).collect();
    for child in children {
        expect_child_ok(child);
    }
    let cache = Cache::open(dir.clone(), u64::MAX).unwrap();
    for k in 0..KEYS {
        let bytes = cache.get(&nth_key(k)).expect("every key was written");
        assert!(check_payload(k, BASE_LEN, &bytes), "wrong bytes for key {k}");
    }
    assert!(temp_files(&dir).is_empty(), "temp files left behind");
    assert_eq!(cache.info().unwrap().entries, KEYS as usize);
}

/// The body of the child processes other tests start; run without the role variable (as
/// in a normal test run) it does nothing.
#[test]
fn child_process_entry() {
    let Ok(role) = std::env::var(CHILD_ROLE) else {
        return;
    };
    let dir = std::path::PathBuf::from(std::env::var_os(CHILD_DIR).unwrap());
    let id: u32 = std::env::var(CHILD_ID).unwrap().parse().unwrap();
    match role.as_str() {
        "writer" => {
            install_logger();
            let cache = Cache::open(dir.clone(), u64::MAX).unwrap();
            // Two threads per process, so threads and processes race together.
            std::thread::scope(|s| {
                s.spawn(|| hammer(&cache, id * 2 + 1, 100));
                hammer(&cache, id * 2, 100);
            });
            let invalid = logged(log::Level::Warn, &dir.display().to_string());
            assert!(invalid.is_empty(), "readers saw invalid entries: {invalid:?}");
        }
        "full-disk" => crate::failures::full_disk_child(dir),
        other => panic!("unknown child role {other}"),
    }
}
