//! Listing the entries, least-recently-used eviction and sweeping stray temporary files.
//!
//! Recency is the entry's mtime: `put` sets it by writing and `get` refreshes it on every
//! hit. atime is not used because `noatime`/`relatime` mounts do not keep it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sys::Dir;
use crate::CacheError;

pub(crate) const ENTRY_SUFFIX: &str = ".jlo";
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// A temporary file this old belongs to a writer that died; a live one renames within
/// moments.
pub(crate) const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// What [`Cache::prune`](crate::Cache::prune) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Entries removed.
    pub removed: usize,
    /// Bytes those entries took.
    pub freed_bytes: u64,
    /// Entries left.
    pub remaining_entries: usize,
    /// Bytes left in entries.
    pub remaining_bytes: u64,
    /// Temporary files of dead writers removed (older than an hour).
    pub stale_temps_removed: usize,
}

/// One entry found on disk.
#[derive(Debug)]
pub(crate) struct Found {
    /// Relative to the objects directory, e.g. `ab/ab…cd.jlo`.
    pub name: String,
    pub size: u64,
    pub mtime: (i64, i64),
}

#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub entries: Vec<Found>,
    pub bytes: u64,
    pub stale_temps_removed: usize,
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_shard(name: &str) -> bool {
    name.len() == 2 && is_hex(name)
}

fn is_entry(shard: &str, name: &str) -> bool {
    name.strip_suffix(ENTRY_SUFFIX).is_some_and(|hex| hex.len() == 64 && is_hex(hex) && hex.starts_with(shard))
}

fn older_than(mtime: (i64, i64), age: Duration, now: SystemTime) -> bool {
    let Ok(secs) = u64::try_from(mtime.0) else {
        return true;
    };
    let written = UNIX_EPOCH + Duration::from_secs(secs);
    now.duration_since(written).is_ok_and(|elapsed| elapsed > age)
}

/// Lists every entry under `objects` (whose path is `objects_path`, for messages). With
/// `sweep_temps`, also removes temporary files older than [`STALE_TEMP_AGE`]. Names that are
/// neither are left alone: the directory may hold other things later.
pub(crate) fn scan(objects: &Dir, objects_path: &Path, sweep_temps: bool) -> Result<Listing, CacheError> {
    let list_err = |path: &Path, e| CacheError::io("list directory", path, e);
    let now = SystemTime::now();
    let mut listing = Listing::default();
    for shard in objects.names().map_err(|e| list_err(objects_path, e))? {
        let Some(shard) = shard.to_str().filter(|s| is_shard(s)) else {
            continue;
        };
        let shard_path = objects_path.join(shard);
        let dir = match objects.open_dir_at(shard) {
            Ok(dir) => dir,
            // Not there any more, or a symlink/file where a shard should be: nothing of ours.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => continue,
            Err(e) => return Err(CacheError::io("open directory", shard_path, e)),
        };
        for name in dir.names().map_err(|e| list_err(&shard_path, e))? {
            let Some(name) = name.to_str() else { continue };
            let entry = is_entry(shard, name);
            let temp = sweep_temps && name.ends_with(TEMP_SUFFIX);
            if !(entry || temp) {
                continue;
            }
            let stat = match dir.stat_at(name) {
                Ok(stat) if stat.is_file => stat,
                Ok(_) => continue,
                // Removed by someone else since the listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(CacheError::io("inspect", shard_path.join(name), e)),
            };
            if entry {
                listing.bytes += stat.size;
                listing.entries.push(Found { name: format!("{shard}/{name}"), size: stat.size, mtime: stat.mtime });
            } else if older_than(stat.mtime, STALE_TEMP_AGE, now) && dir.unlink_at(name).is_ok() {
                listing.stale_temps_removed += 1;
            }
        }
    }
    Ok(listing)
}

/// Removes least-recently-used entries until at most `target` bytes remain.
pub(crate) fn evict(objects: &Dir, objects_path: &Path, mut listing: Listing, target: u64) -> Result<PruneStats, CacheError> {
    // Oldest first; the name breaks ties so concurrent pruners agree on the order.
    listing.entries.sort_by(|a, b| (a.mtime, &a.name).cmp(&(b.mtime, &b.name)));
    let mut stats = PruneStats { stale_temps_removed: listing.stale_temps_removed, ..PruneStats::default() };
    let mut remaining = listing.bytes;
    let mut kept = listing.entries.len();
    for found in &listing.entries {
        if remaining <= target {
            break;
        }
        match objects.unlink_at(&found.name) {
            Ok(()) => {
                stats.removed += 1;
                stats.freed_bytes += found.size;
            }
            // Another process pruned it first: gone all the same.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CacheError::io("remove", objects_path.join(&found.name), e)),
        }
        remaining -= found.size;
        kept -= 1;
    }
    stats.remaining_bytes = remaining;
    stats.remaining_entries = kept;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let hex = "ab".to_owned() + &"0".repeat(62);
        assert!(is_shard("ab") && !is_shard("AB") && !is_shard("abc") && !is_shard("zz"));
        assert!(is_entry("ab", &format!("{hex}.jlo")));
        assert!(!is_entry("cd", &format!("{hex}.jlo")), "entry in the wrong shard");
        assert!(!is_entry("ab", &format!("{hex}.tmp")));
        assert!(!is_entry("ab", &format!("{}.jlo", &hex[1..])));
    }

    #[test]
    fn temp_age() {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!(!older_than((secs - 10, 0), STALE_TEMP_AGE, now));
        assert!(older_than((secs - 3700, 0), STALE_TEMP_AGE, now));
        assert!(!older_than((secs + 100, 0), STALE_TEMP_AGE, now), "future mtime is not stale");
    }
}
