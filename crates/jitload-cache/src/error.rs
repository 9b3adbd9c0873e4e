//! The crate's one error type. Every variant names the path involved, because the user has
//! to find and fix it (a permission, a full disk, someone else's directory).

use std::io;
use std::path::PathBuf;

/// Why a cache operation failed. Lookups never fail (a problem there is a miss); this is
/// returned by [`Cache::open`](crate::Cache::open) and by operations that write or scan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The directory could be used by another user to plant code, so it is not used at all.
    #[error("refusing to use cache directory {}: {reason}", path.display())]
    Insecure {
        /// The directory that was refused.
        path: PathBuf,
        /// What is wrong with it, e.g. "writable by group and others (mode 0777)".
        reason: String,
    },
    /// A system call failed; `op` says what was being done.
    #[error("cache: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create directory", "write".
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl CacheError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CacheError::Io { op, path: path.into(), source }
    }
}
