//! Size limit, least-recently-used eviction, info/clear/prune, stale temp files.

use std::fs;
use std::thread::sleep;
use std::time::{Duration, SystemTime};

use jitload_cache::Cache;

use crate::common::{key, TestDir};

const PAYLOAD: usize = 10_000;
const ENTRY: u64 = 88 + PAYLOAD as u64;
/// File timestamps come from a coarse kernel clock (a few ms); wait longer than a tick
/// between operations whose order matters.
const TICK: Duration = Duration::from_millis(30);

fn put(cache: &Cache, name: &str) {
    cache.put(&key(name), &[name.as_bytes()[0]; PAYLOAD]).unwrap();
    sleep(TICK);
}

fn present(cache: &Cache, names: &[&str]) -> Vec<bool> {
    // Checking by path: a get would itself count as a use.
    names.iter().map(|n| cache.entry_path(&key(n)).exists()).collect()
}

#[test]
fn least_recently_used_goes_first() {
    let t = TestDir::new("lru");
    // Room for four and a half entries: the fifth put prunes to 90% (~4 entries).
    let cache = Cache::open(t.cache_dir(), ENTRY * 9 / 2).unwrap();
    for name in ["a", "b", "c", "d"] {
        put(&cache, name);
    }
    assert!(cache.get(&key("a")).is_some()); // "a" is now the most recently used.
    sleep(TICK);
    put(&cache, "e");
    assert_eq!(present(&cache, &["a", "b", "c", "d", "e"]), [true, false, true, true, true]);
    put(&cache, "f");
    assert_eq!(present(&cache, &["a", "c", "d", "e", "f"]), [true, false, true, true, true]);
    let info = cache.info().unwrap();
    assert_eq!((info.entries, info.bytes), (4, 4 * ENTRY));
}

#[test]
fn without_use_oldest_goes_first() {
    let t = TestDir::new("fifo");
    let cache = Cache::open(t.cache_dir(), ENTRY * 9 / 2).unwrap();
    for name in ["a", "b", "c", "d", "e"] {
        put(&cache, name);
    }
    assert_eq!(present(&cache, &["a", "b", "c", "d", "e"]), [false, true, true, true, true]);
}

#[test]
fn limit_counts_other_writers() {
    // Two `Cache`s on one directory stand in for two processes: the first's first put scans
    // the directory, so its pruning counts (and evicts) what the second wrote.
    let t = TestDir::new("two-writers");
    let first = Cache::open(t.cache_dir(), ENTRY * 9 / 2).unwrap();
    let second = Cache::open(t.cache_dir(), ENTRY * 9 / 2).unwrap();
    put(&second, "z");
    for name in ["a", "b", "c"] {
        put(&first, name);
    }
    assert_eq!(present(&first, &["z", "a", "b", "c"]), [true; 4]);
    put(&first, "d");
    assert_eq!(present(&first, &["z", "a", "b", "c", "d"]), [false, true, true, true, true]);
    assert!(second.info().unwrap().bytes <= ENTRY * 9 / 2);
}

#[test]
fn payload_over_the_limit_is_not_stored() {
    let t = TestDir::new("too-big");
    let cache = Cache::open(t.cache_dir(), 1000).unwrap();
    cache.put(&key("big"), &[0; 2000]).unwrap();
    assert_eq!(cache.get(&key("big")), None);
}

#[test]
fn info_clear_prune() {
    let t = TestDir::new("info");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    for name in ["a", "b", "c"] {
        put(&cache, name);
    }
    let info = cache.info().unwrap();
    assert_eq!((info.entries, info.bytes, info.dir), (3, 3 * ENTRY, t.cache_dir()));

    let stats = cache.prune(2 * ENTRY).unwrap();
    assert_eq!((stats.removed, stats.freed_bytes), (1, ENTRY));
    assert_eq!((stats.remaining_entries, stats.remaining_bytes), (2, 2 * ENTRY));
    assert_eq!(present(&cache, &["a", "b", "c"]), [false, true, true]);
    assert_eq!(cache.prune(2 * ENTRY).unwrap().removed, 0);

    // Unrelated files are neither counted nor removed.
    let other = t.cache_dir().join("objects").join("README");
    fs::write(&other, b"not an entry").unwrap();
    assert_eq!(cache.clear().unwrap(), 2);
    assert_eq!(cache.info().unwrap().entries, 0);
    assert!(other.exists());
    assert_eq!(cache.get(&key("b")), None);
}

#[test]
fn stale_temp_files_are_swept() {
    let t = TestDir::new("stale-temps");
    let cache = Cache::open(t.cache_dir(), u64::MAX).unwrap();
    put(&cache, "a");
    let entry = cache.entry_path(&key("a"));
    let stale = entry.with_extension("jlo.1234.0.abc.tmp");
    let fresh = entry.with_extension("jlo.1234.1.abc.tmp");
    fs::write(&stale, b"half written").unwrap();
    fs::write(&fresh, b"being written").unwrap();
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    fs::File::options().write(true).open(&stale).unwrap().set_modified(two_hours_ago).unwrap();

    assert_eq!(cache.info().unwrap().entries, 1, "temp files are not entries");
    let stats = cache.prune(u64::MAX).unwrap();
    assert_eq!((stats.removed, stats.stale_temps_removed), (0, 1));
    assert!(!stale.exists(), "a dead writer's temp file was kept");
    assert!(fresh.exists(), "a live writer's temp file was removed");
    assert!(entry.exists());
}
