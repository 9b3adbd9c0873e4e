//! A persistent cache of compiled objects for jitload: pure Rust, no LLVM or Python.
//!
//! Loading a cached object runs its code, so the cache is built to never hand back bytes
//! that are wrong or that someone else could have planted, and to stay correct with any
//! number of threads and processes using it at once.
//!
//! # Use
//!
//! ```no_run
//! use jitload_cache::{Cache, KeyBuilder};
//!
//! # fn main() -> Result<(), jitload_cache::CacheError> {
//! let dir = std::env::temp_dir().join("jitload-example-cache"); // jitload takes it from jitload-options
//! let cache = Cache::open(dir, 1 << 30)?;
//! let key = KeyBuilder::new("jitload-object-v1")
//!     .field("input", b"...bitcode bytes...")
//!     .field("llvm", b"22.1.0")
//!     .field("triple", b"x86_64-unknown-linux-gnu")
//!     .finish();
//! let object = match cache.get(&key) {
//!     Some(object) => object,
//!     None => {
//!         let object = b"...compiled object...".to_vec();
//!         if let Err(e) = cache.put(&key, &object) {
//!             log::warn!("{e}"); // a failed put only costs the next process a compile
//!         }
//!         object
//!     }
//! };
//! # let _ = object; Ok(()) }
//! ```
//!
//! # API
//!
//! - [`KeyBuilder::new`]`(domain)`, [`.field`](KeyBuilder::field)`(name, value)` (each part
//!   length-prefixed, so `("ab","c")` and `("a","bc")` differ), [`.finish`](KeyBuilder::finish)
//!   → [`CacheKey`], a 32-byte BLAKE3 digest with [`hex`](CacheKey::hex).
//! - [`Cache::open`]`(dir, max_bytes) -> Result<Cache, CacheError>` (jitload's directory and
//!   bound come from `jitload-options`: this crate reads no environment).
//! - [`Cache::get`]`(&key) -> Option<Vec<u8>>`: a miss for anything doubtful.
//! - [`Cache::put`]`(&key, &payload) -> Result<(), CacheError>`.
//! - [`Cache::info`]`() -> Result<CacheInfo, _>`, [`Cache::clear`]`() -> Result<usize, _>`,
//!   [`Cache::prune`]`(max_bytes) -> Result<PruneStats, _>` (for `python -m jitload cache`).
//! - [`Cache::entry_path`], [`Cache::dir`], [`Cache::max_bytes`] for diagnostics.
//!
//! `Cache` is `Send + Sync`: share one per process (e.g. in an `Arc` or a `OnceLock`).
//! Callers should treat every `CacheError` from `put` as a warning: the object is already
//! compiled, and the next process simply compiles again.
//!
//! # Layout
//!
//! ```text
//! <dir>/                              0700, owned by the user
//!   objects/                          0700
//!     ab/                             first two hex digits of the key
//!       ab12…ef.jlo                   one entry (64 hex digits), 0600
//!       ab12…ef.jlo.<pid>.<n>.<t>.tmp a write in progress
//! ```
//!
//! One entry is an 88-byte header and the payload (integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic "jlcache\0"
//!      8     4  format version, u32 (1); another version reads as invalid
//!     12     4  reserved, must be 0
//!     16    32  the key, echoed: a file copied or renamed to another key's name is rejected
//!     48     8  payload length, u64; must equal the file size minus 88
//!     56    32  BLAKE3 of bytes 0..56 followed by the payload
//!     88     …  payload
//! ```
//!
//! # Guarantees
//!
//! - **Security.** [`Cache::open`] refuses ([`CacheError::Insecure`]) a directory not owned by
//!   the effective user or writable by group or others. It keeps the directory open, and
//!   every later operation is relative to that descriptor, so replacing the path afterwards
//!   redirects nothing. [`Cache::get`] opens entries with `O_NOFOLLOW` and uses one only if
//!   fstat shows a regular file owned by the effective user and not group/world-writable;
//!   otherwise it logs a warning (once per `Cache`) and misses. The shard directories are
//!   not checked one by one: only the user can create anything in `objects/`.
//! - **Integrity.** A truncated, corrupt, foreign-key or old-format entry is removed and
//!   reported as a miss; `get` never returns bytes that fail the checks.
//! - **Concurrency.** `put` writes a temporary file created with `O_EXCL` and mode 0600 in
//!   the entry's directory and `rename`s it into place: readers see a whole old entry or a
//!   whole new one. Concurrent puts of one key all succeed; the last rename wins.
//! - **Size.** After a put that takes the cache over `max_bytes`, least-recently-used entries
//!   (by mtime, which a hit refreshes) are removed down to 90% of the limit. Each `Cache`
//!   scans the directory once, at its first put, and then keeps an estimate from its own
//!   puts, so it rescans only when the estimate goes over the limit. What other processes
//!   wrote since its last scan is counted only at its next one, so with several long-lived
//!   writers the total can overshoot by what the others added meanwhile; each short-lived
//!   process scans at its first put and sees the real size. A payload larger than the limit
//!   is not stored. Pruning, automatic or by [`Cache::prune`] / [`Cache::clear`], also
//!   removes temporary files older than an hour (writers that died).
//! - **Errors.** `put` failures (full disk, read-only directory) come back as [`CacheError`]
//!   naming the path and the cause; nothing panics, and the temporary file is removed.
//!
//! # Cost
//!
//! A hit is: open, fstat, one read of the 88-byte header, one read of the payload straight
//! into the returned vector (no zero-filling, no further copy), one BLAKE3 pass, and a
//! futimens. Measured with `cargo run --release -p jitload-cache --example cache_timing`
//! (1 MiB payload, median of 200 runs, page cache warm, ext4, a 2-core x86-64 VM with AVX2):
//!
//! | operation                  | time     | where it goes                                   |
//! |----------------------------|----------|-------------------------------------------------|
//! | `get`, hit                 | ~0.33 ms | plain read of the file ~0.05 ms + BLAKE3 ~0.25 ms |
//! | `get`, miss                | ~2 µs    | one failed open                                 |
//! | `put`, new key             | ~0.8 ms  | BLAKE3, writing 1 MiB into the page cache, rename |
//! | `put`, replacing an entry  | ~1.5 ms  | ext4 starts writeback when a rename replaces a file |
//!
//! Linux and other Unix systems only.

mod entry;
mod error;
mod key;
mod prune;
mod security;
mod store;
mod sys;
mod temp;

pub use error::CacheError;
pub use key::{CacheKey, KeyBuilder};
pub use prune::PruneStats;
pub use store::{Cache, CacheInfo};
