//! The temporary file a `put` writes before renaming it into place.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::prune::TEMP_SUFFIX;
use crate::sys::Dir;
use crate::CacheError;

/// Makes names unique within the process; `O_EXCL` makes them unique overall.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file in the objects directory, removed on drop unless renamed into place.
pub(crate) struct TempFile<'a> {
    dir: &'a Dir,
    name: String,
    renamed: bool,
}

impl<'a> TempFile<'a> {
    /// Creates `<entry>.<pid>.<counter>.<nanos>.tmp` with mode 0600 next to the entry
    /// `entry` (a name relative to `dir`, in subdirectory `shard`, created if missing).
    /// `dir_path` is for messages.
    pub fn create(dir: &'a Dir, dir_path: &Path, shard: &str, entry: &str) -> Result<(Self, File), CacheError> {
        let mut made_shard = false;
        let mut clashes = 0;
        loop {
            let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{entry}.{}.{n}.{nanos:x}{TEMP_SUFFIX}", std::process::id());
            match dir.create_new_at(&name, 0o600) {
                Ok(file) => return Ok((TempFile { dir, name, renamed: false }, file)),
                // First write into this shard: create it and try again.
                Err(e) if e.kind() == io::ErrorKind::NotFound && !made_shard => {
                    made_shard = true;
                    match dir.mkdir_at(shard, 0o700) {
                        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(CacheError::io("create directory", dir_path.join(shard), e)),
                        _ => {}
                    }
                }
                // The same pid in another pid namespace sharing the directory: try another name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && clashes < 16 => clashes += 1,
                Err(e) => return Err(CacheError::io("create temporary file", dir_path.join(&name), e)),
            }
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Atomically replaces `target` with this file. On failure the file is removed.
    pub fn rename_to(mut self, target: &str) -> io::Result<()> {
        self.dir.rename_at(&self.name, target)?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = self.dir.unlink_at(&self.name);
        }
    }
}
