//! The import path's persistent object cache: what the engine compiles is stored (in
//! `jitload-cache`) under a key covering everything that changes the code, and a later
//! process with the same input and host skips parsing, optimising and code generation — and,
//! through `_fastload`, even loading LLVM. So the key is computed without LLVM: the LLVM
//! version and host triple the engine was built against (one build ships both modules), and
//! the CPU as the raw CPUID/XCR0 values LLVM derives its host CPU name and features from
//! (`jitload_objload::host::cpu_fingerprint`).
//!
//! Configuration (read when the session first needs the cache):
//! - `JITLOAD_CACHE=0` (or `off`, `false`, `no`) disables it;
//! - `JITLOAD_CACHE_DIR` moves it (default `$XDG_CACHE_HOME/jitload`, else `~/.cache/jitload`);
//! - `JITLOAD_CACHE_MAX_MB` bounds its size (default 2048), least recently used out first.
//!
//! A cache that cannot be used (not ours, group/world-writable, unwritable) is reported once
//! through [`ObjectCache::take_warning`] and loading falls back to compiling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use jitload_cache::{Cache, CacheError, CacheInfo, CacheKey, KeyBuilder, PruneStats};

use std::sync::OnceLock;

/// Bump when the payload format (`Compiled`'s wire form) or what is compiled changes.
const FORMAT: &str = "jitload-object-v3";

/// Hits, misses and stores since the session started.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub stores: u64,
    pub store_failures: u64,
}

/// The session's view of the on-disk cache (or of its absence).
pub struct ObjectCache {
    cache: Option<Cache>,
    warning: Mutex<Option<String>>,
    hits: AtomicU64,
    misses: AtomicU64,
    stores: AtomicU64,
    store_failures: AtomicU64,
}

impl ObjectCache {
    /// Opens the cache the settings ask for (`JITLOAD_CACHE`, `JITLOAD_CACHE_DIR`, ...).
    pub fn from_options(options: &jitload_options::Options) -> ObjectCache {
        if !options.cache {
            return ObjectCache::new(None, None);
        }
        let Some(dir) = options.cache_dir.clone() else {
            return ObjectCache::new(None, Some("jitload: no cache directory (HOME is not set); compiling every import".into()));
        };
        match Cache::open(dir, options.cache_max_bytes) {
            Ok(cache) => ObjectCache::new(Some(cache), None),
            Err(e) => ObjectCache::new(None, Some(format!("jitload: not using the object cache: {e}; compiling every import"))),
        }
    }

    fn new(cache: Option<Cache>, warning: Option<String>) -> ObjectCache {
        ObjectCache {
            cache,
            warning: Mutex::new(warning),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stores: AtomicU64::new(0),
            store_failures: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The key of the object jitload would compile from `input` for this host at `opt_level`.
    pub fn key(input: &[u8], opt_level: u8) -> CacheKey {
        static CPU: OnceLock<Vec<u8>> = OnceLock::new();
        KeyBuilder::new(FORMAT)
            .field("input", input)
            .field("llvm", crate::LLVM_VERSION.as_bytes())
            .field("triple", crate::LLVM_HOST_TRIPLE.as_bytes())
            .field("cpu", CPU.get_or_init(jitload_objload::host::cpu_fingerprint))
            .field("opt", &[opt_level])
            .field("tune", crate::tuning::key_field())
            // Which x86-64 level's bitcode variant a module may load (0: the host's highest):
            // with the file and the CPU above, it decides which variant was compiled.
            .field("x86-level", &[jitload_options::get().x86_level.unwrap_or(0)])
            .field("jitload", env!("CARGO_PKG_VERSION").as_bytes())
            .finish()
    }

    /// The stored payload for `key`, if there is a valid one.
    pub fn get(&self, key: &CacheKey) -> Option<Vec<u8>> {
        let found = self.cache.as_ref()?.get(key);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores `payload`; a failure (full disk, read-only directory) only costs a recompile
    /// next time, so it is remembered as a warning rather than returned.
    pub fn put(&self, key: &CacheKey, payload: &[u8]) {
        let Some(cache) = &self.cache else { return };
        match cache.put(key, payload) {
            Ok(()) => {
                self.stores.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                if self.store_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                    *self.warning.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("jitload: cannot store compiled code in the cache: {e}"));
                }
            }
        }
    }

    /// A problem to tell the user about, once.
    pub fn take_warning(&self) -> Option<String> {
        self.warning.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stores: self.stores.load(Ordering::Relaxed),
            store_failures: self.store_failures.load(Ordering::Relaxed),
        }
    }

    pub fn info(&self) -> Option<Result<CacheInfo, CacheError>> {
        self.cache.as_ref().map(Cache::info)
    }

    pub fn clear(&self) -> Option<Result<usize, CacheError>> {
        self.cache.as_ref().map(Cache::clear)
    }

    pub fn prune(&self, max_bytes: u64) -> Option<Result<PruneStats, CacheError>> {
        self.cache.as_ref().map(|c| c.prune(max_bytes))
    }
}
