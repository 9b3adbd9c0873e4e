//! Times `get` and `put` of a 1 MiB entry next to their parts (a plain read of the file and
//! one BLAKE3 pass), to show that a hit costs one read plus one checksum.
//!
//! `cargo run --release -p jitload-cache --example cache_timing`

// A measuring tool: printing its results is its whole job.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use jitload_cache::{Cache, KeyBuilder};

const RUNS: usize = 200;

fn median(mut f: impl FnMut()) -> Duration {
    f(); // warm up (page cache, allocator)
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn main() -> Result<(), jitload_cache::CacheError> {
    let dir = std::env::temp_dir().join(format!("jitload-cache-timing-{}", std::process::id()));
    let cache = Cache::open(dir.clone(), u64::MAX)?;
    let payload: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let key = KeyBuilder::new("timing").field("input", &payload).finish();

    // A put normally stores a new key; replacing an existing entry costs more on ext4, whose
    // rename-over-a-file heuristic starts writing the new file back at once.
    let mut n = 0u32;
    let put_new = median(|| {
        n += 1;
        let key = KeyBuilder::new("timing").field("n", &n.to_le_bytes()).finish();
        cache.put(&key, &payload).expect("put");
    });
    let put = median(|| cache.put(&key, &payload).expect("put"));
    let get = median(|| assert_eq!(cache.get(&key).expect("hit").len(), payload.len()));
    let path = cache.entry_path(&key);
    let read = median(|| assert_eq!(std::fs::read(&path).expect("read").len(), payload.len() + 88));
    let hash = median(|| {
        std::hint::black_box(blake3::hash(&payload));
    });
    let miss_key = KeyBuilder::new("timing").field("input", b"absent").finish();
    let miss = median(|| assert!(cache.get(&miss_key).is_none()));
    let _ = std::fs::remove_dir_all(&dir);

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("1 MiB payload, median of {RUNS} runs");
    println!("put (new key)   {:8.1} us", us(put_new));
    println!("put (replace)   {:8.1} us", us(put));
    println!("get (hit)       {:8.1} us", us(get));
    println!("  plain read    {:8.1} us", us(read));
    println!("  blake3 1 MiB  {:8.1} us", us(hash));
    println!("get (miss)      {:8.1} us", us(miss));
    Ok(())
}
