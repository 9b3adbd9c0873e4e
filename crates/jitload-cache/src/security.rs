//! Who may have written a file. Loading a cached object runs its code, so a directory or
//! entry that another user owns or can write to is a code-injection hole and is refused.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys;
use crate::CacheError;

/// `Err(reason)` unless a file with owner `uid` and permission bits `mode` can only have
/// been written by the user `euid` (or root, who can write anything anyway).
pub(crate) fn check_owner_mode(uid: u32, mode: u32, euid: u32) -> Result<(), String> {
    if uid != euid {
        return Err(format!("owned by uid {uid}, not by the current user (uid {euid})"));
    }
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "group",
        (false, true) => "others",
        (true, true) => "group and others",
    };
    Err(format!("writable by {who} (mode {:04o})", mode & 0o7777))
}

/// Checks an opened cache directory (`meta` from fstat on its descriptor).
pub(crate) fn check_dir(path: &Path, meta: &Metadata) -> Result<(), CacheError> {
    let insecure = |reason: String| CacheError::Insecure { path: path.to_path_buf(), reason };
    if !meta.is_dir() {
        return Err(insecure("not a directory".to_owned()));
    }
    check_owner_mode(meta.uid(), meta.mode(), sys::euid()).map_err(insecure)
}

/// Logs the first refusal at warning level and later ones at debug level, so a bad entry
/// looked up on every import does not flood the log.
#[derive(Debug, Default)]
pub(crate) struct WarnOnce(AtomicBool);

impl WarnOnce {
    pub fn refuse(&self, path: &Path, reason: &str) {
        if self.0.swap(true, Ordering::Relaxed) {
            log::debug!("jitload cache: not using {}: {reason}", path.display());
        } else {
            log::warn!("jitload cache: not using {}: {reason}; compiling instead (further refusals are logged at debug level)", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_owner_mode;

    #[test]
    fn owner_and_mode() {
        assert_eq!(check_owner_mode(1000, 0o100600, 1000), Ok(()));
        assert_eq!(check_owner_mode(1000, 0o40755, 1000), Ok(()));
        let other = check_owner_mode(1001, 0o600, 1000).unwrap_err();
        assert!(other.contains("uid 1001") && other.contains("uid 1000"), "{other}");
        assert_eq!(check_owner_mode(0, 0o700, 1000).unwrap_err(), "owned by uid 0, not by the current user (uid 1000)");
        assert_eq!(check_owner_mode(5, 0o770, 5).unwrap_err(), "writable by group (mode 0770)");
        assert_eq!(check_owner_mode(5, 0o40702, 5).unwrap_err(), "writable by others (mode 0702)");
        assert_eq!(check_owner_mode(5, 0o100666, 5).unwrap_err(), "writable by group and others (mode 0666)");
    }
}
