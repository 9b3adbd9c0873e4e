//! The cache itself: opening (with the security checks), lookups, atomic writes, and
//! keeping the size under the limit.

use std::fs::DirBuilder;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::entry::{self, ReadError, HEADER_LEN};
use crate::prune::{self, PruneStats, ENTRY_SUFFIX};
use crate::security::{self, WarnOnce};
use crate::sys::{self, Dir};
use crate::temp::TempFile;
use crate::{CacheError, CacheKey};

/// Subdirectory holding the entries, so the cache directory can hold other things later.
const OBJECTS: &str = "objects";

/// A persistent object cache in one directory, shared safely by threads and processes.
/// See the [crate documentation](crate) for the layout and the guarantees.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
    objects_path: PathBuf,
    /// `<dir>/objects`, opened and checked once; every entry is named relative to it.
    objects: Dir,
    max_bytes: u64,
    /// This process's estimate of the bytes in the cache: `None` until the first put scans
    /// the directory, then kept up to date by our own puts. Other processes' writes are not
    /// seen until the next scan, which happens whenever the estimate exceeds the limit. The
    /// lock also serialises this process's scans and prunes.
    size: Mutex<Option<u64>>,
    /// Directory scans so far (tests check puts do not rescan).
    scans: AtomicU64,
    refusals: WarnOnce,
}

/// What [`Cache::info`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    /// The cache directory.
    pub dir: PathBuf,
    /// Number of entries.
    pub entries: usize,
    /// Bytes in entries (file sizes, headers included).
    pub bytes: u64,
    /// The size limit the cache was opened with.
    pub max_bytes: u64,
}

fn entry_name(key: &CacheKey) -> (String, String) {
    let hex = key.hex();
    (hex[..2].to_owned(), format!("{}/{hex}{ENTRY_SUFFIX}", &hex[..2]))
}

impl Cache {
    /// Opens (creating with mode 0700 if missing, parents included) the cache in `dir`,
    /// keeping it under about `max_bytes` (`u64::MAX`: no limit).
    ///
    /// Fails with [`CacheError::Insecure`] if `dir` or its `objects` subdirectory is not
    /// owned by the effective user or is writable by group or others.
    pub fn open(dir: PathBuf, max_bytes: u64) -> Result<Cache, CacheError> {
        DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| CacheError::io("create directory", &dir, e))?;
        let root = Dir::open(&dir).map_err(|e| CacheError::io("open directory", &dir, e))?;
        let meta = root.metadata().map_err(|e| CacheError::io("inspect", &dir, e))?;
        security::check_dir(&dir, &meta)?;

        let objects_path = dir.join(OBJECTS);
        match root.mkdir_at(OBJECTS, 0o700) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(CacheError::io("create directory", &objects_path, e)),
            _ => {}
        }
        let objects = root.open_dir_at(OBJECTS).map_err(|e| CacheError::io("open directory", &objects_path, e))?;
        let meta = objects.metadata().map_err(|e| CacheError::io("inspect", &objects_path, e))?;
        security::check_dir(&objects_path, &meta)?;

        Ok(Cache { dir, objects_path, objects, max_bytes, size: Mutex::new(None), scans: AtomicU64::new(0), refusals: WarnOnce::default() })
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size limit.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Where the entry for `key` is stored (whether or not it exists), for diagnostics.
    pub fn entry_path(&self, key: &CacheKey) -> PathBuf {
        self.objects_path.join(entry_name(key).1)
    }

    /// The payload stored under `key`, or `None`.
    ///
    /// Never returns wrong bytes: an entry is used only if it is a regular file owned by
    /// the effective user and not writable by group or others (otherwise a warning is logged
    /// once per `Cache` and the entry is left alone), and only if its header echoes `key` and
    /// its checksum matches (otherwise it is removed). A hit refreshes the entry's mtime,
    /// which is what least-recently-used eviction goes by.
    pub fn get(&self, key: &CacheKey) -> Option<Vec<u8>> {
        let (_, name) = entry_name(key);
        let path = || self.objects_path.join(&name);
        let file = match self.objects.open_read_at(&name) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.refusals.refuse(&path(), "it is a symbolic link");
                return None;
            }
            Err(e) => {
                log::debug!("jitload cache: cannot open {}: {e}", path().display());
                return None;
            }
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => {
                log::debug!("jitload cache: cannot inspect {}: {e}", path().display());
                return None;
            }
        };
        if !meta.is_file() {
            self.refusals.refuse(&path(), "it is not a regular file");
            return None;
        }
        if let Err(reason) = security::check_owner_mode(meta.uid(), meta.mode(), sys::euid()) {
            self.refusals.refuse(&path(), &reason);
            return None;
        }
        match entry::read(&file, meta.len(), key) {
            Ok(payload) => {
                // Best effort: failing to refresh only makes the entry look older.
                if let Err(e) = file.set_modified(SystemTime::now()) {
                    log::debug!("jitload cache: cannot refresh mtime of {}: {e}", path().display());
                }
                Some(payload)
            }
            Err(ReadError::Invalid(why)) => {
                log::warn!("jitload cache: removing invalid entry {}: {why}", path().display());
                self.remove_if_unchanged(&name, meta.dev(), meta.ino());
                None
            }
            Err(ReadError::Io(e)) => {
                log::debug!("jitload cache: cannot read {}: {e}", path().display());
                None
            }
        }
    }

    /// Removes `name` if it is still the file we found invalid: a writer may have renamed a
    /// good entry over it meanwhile, and that one must stay.
    fn remove_if_unchanged(&self, name: &str, dev: u64, ino: u64) {
        if let Ok(now) = self.objects.stat_at(name) {
            if now.dev == dev && now.ino == ino {
                let _ = self.objects.unlink_at(name);
            }
        }
    }

    /// Stores `payload` under `key`, replacing any entry there.
    ///
    /// The entry is written to a unique temporary file (mode 0600) in the entry's directory
    /// and renamed into place, so readers see the old entry or the new one, never a mix, and
    /// any number of threads and processes may store the same key at once (the last rename
    /// wins; every candidate is complete). On failure (full disk, read-only directory) the
    /// temporary file is removed and the error returned; the cache stays usable for reading.
    /// A payload larger than the limit is not stored (`Ok`, logged at debug level).
    ///
    /// Nothing is fsynced: after a crash an entry may be torn, which its checksum catches.
    pub fn put(&self, key: &CacheKey, payload: &[u8]) -> Result<(), CacheError> {
        let size = HEADER_LEN as u64 + payload.len() as u64;
        if size > self.max_bytes {
            log::debug!("jitload cache: not storing {size} bytes, over the {}-byte limit", self.max_bytes);
            return Ok(());
        }
        let (shard, name) = entry_name(key);
        // Dropping `temp` on any early return removes the file.
        let (temp, mut file) = TempFile::create(&self.objects, &self.objects_path, &shard, &name)?;
        file.write_all(&entry::header(key, payload))
            .and_then(|()| file.write_all(payload))
            .map_err(|e| CacheError::io("write", self.objects_path.join(temp.name()), e))?;
        drop(file);
        temp.rename_to(&name).map_err(|e| CacheError::io("rename into place", self.objects_path.join(&name), e))?;
        self.account(size);
        Ok(())
    }

    /// Adds a new entry's size to the estimate and prunes to ~90% of the limit when over.
    /// A failure here does not fail the put that triggered it; it is logged.
    fn account(&self, added: u64) {
        let mut size = self.size.lock().unwrap_or_else(PoisonError::into_inner);
        let estimate = match *size {
            Some(bytes) => bytes.saturating_add(added),
            // First put in this process: learn the real size (the new entry included).
            None => match self.scan(false) {
                Ok(listing) => listing.bytes,
                Err(e) => {
                    log::warn!("{e}");
                    return;
                }
            },
        };
        if estimate <= self.max_bytes {
            *size = Some(estimate);
            return;
        }
        match self.prune_locked(self.max_bytes - self.max_bytes / 10) {
            Ok(stats) => *size = Some(stats.remaining_bytes),
            Err(e) => {
                log::warn!("{e}");
                *size = None;
            }
        }
    }

    fn scan(&self, sweep_temps: bool) -> Result<prune::Listing, CacheError> {
        self.scans.fetch_add(1, Ordering::Relaxed);
        prune::scan(&self.objects, &self.objects_path, sweep_temps)
    }

    fn prune_locked(&self, target: u64) -> Result<PruneStats, CacheError> {
        let listing = self.scan(true)?;
        prune::evict(&self.objects, &self.objects_path, listing, target)
    }

    /// Counts the entries and their bytes (scans the directory).
    pub fn info(&self) -> Result<CacheInfo, CacheError> {
        let listing = self.scan(false)?;
        *self.size.lock().unwrap_or_else(PoisonError::into_inner) = Some(listing.bytes);
        Ok(CacheInfo { dir: self.dir.clone(), entries: listing.entries.len(), bytes: listing.bytes, max_bytes: self.max_bytes })
    }

    /// Removes least-recently-used entries until at most `max_bytes` remain, and temporary
    /// files left by writers that died (older than an hour).
    pub fn prune(&self, max_bytes: u64) -> Result<PruneStats, CacheError> {
        let mut size = self.size.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = self.prune_locked(max_bytes)?;
        *size = Some(stats.remaining_bytes);
        Ok(stats)
    }

    /// Removes every entry (and stale temporary files); returns how many entries went.
    pub fn clear(&self) -> Result<usize, CacheError> {
        Ok(self.prune(0)?.removed)
    }

    #[cfg(test)]
    pub(crate) fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyBuilder;

    #[test]
    fn puts_under_the_limit_scan_once() {
        let dir = std::env::temp_dir().join(format!("jitload-cache-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = Cache::open(dir.clone(), 1 << 30).unwrap();
        for i in 0..50u32 {
            let key = KeyBuilder::new("unit").field("i", &i.to_le_bytes()).finish();
            cache.put(&key, &[7u8; 1000]).unwrap();
        }
        assert_eq!(cache.scans(), 1, "puts under the limit must not rescan the directory");
        let info = cache.info().unwrap();
        assert_eq!((info.entries, info.bytes), (50, 50 * (1000 + HEADER_LEN as u64)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
