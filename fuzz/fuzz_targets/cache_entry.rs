//! Cache entries through `jitload_cache::Cache::get`. The oracle: `get` returns the exact
//! payload that was stored, or `None` — never other bytes, never a crash.
//!
//! First input byte selects the mode:
//! - even: the rest of the input is written as the entry file itself (header parsing);
//! - odd: the rest is stored with `put` (a valid entry), then byte `data[1]`-derived
//!   positions of the file are corrupted (xor `data[2]`, or truncation) before `get`.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use jitload_cache::{Cache, KeyBuilder};
use libfuzzer_sys::fuzz_target;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| {
        let base = std::env::var_os("JITLOAD_FUZZ_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("jitload-fuzz-cache-{}", std::process::id()));
        Cache::open(dir, 1 << 30).expect("a cache directory")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let cache = cache();
    let key = KeyBuilder::new("fuzz").field("input", &[mode]).finish();
    let path = cache.entry_path(&key);
    if mode % 2 == 0 {
        std::fs::create_dir_all(path.parent().expect("entry dir")).expect("entry dir");
        std::fs::write(&path, rest).expect("write entry");
        // Raw bytes: only a well-formed entry for this key with a matching checksum is used,
        // and the fuzzer cannot forge a BLAKE3 checksum, so this must be None.
        assert!(cache.get(&key).is_none() || rest.len() >= 88, "a short file was accepted");
    } else {
        cache.put(&key, rest).expect("put");
        assert_eq!(cache.get(&key).as_deref(), Some(rest), "a fresh entry reads back");
        if rest.len() >= 2 {
            let mut file = std::fs::read(&path).expect("read entry");
            let at = (rest[0] as usize * 131 + rest[1] as usize) % (file.len() + 1);
            if rest[1] & 1 == 0 && at < file.len() {
                file[at] ^= rest.get(2).copied().unwrap_or(1).max(1);
            } else {
                file.truncate(at);
            }
            std::fs::write(&path, &file).expect("write corrupted entry");
            if let Some(got) = cache.get(&key) {
                assert_eq!(got, rest, "a corrupted entry returned different bytes");
            }
        }
    }
    let _ = std::fs::remove_file(&path);
});
