//! Safe wrappers over the `*at` system calls the cache needs; all of the crate's `unsafe`
//! lives here.
//!
//! Why descriptors rather than paths: the cache directory is opened and checked once (in
//! `Cache::open`) and every later operation is relative to that descriptor, so renaming or
//! replacing the directory's path afterwards cannot redirect reads or writes elsewhere.

use std::ffi::{CStr, CString, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An open directory that names are resolved against.
#[derive(Debug)]
pub(crate) struct Dir {
    file: File,
}

/// What `fstatat` reports about one name, in portable types.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub is_file: bool,
    pub size: u64,
    /// Seconds and nanoseconds since the epoch.
    pub mtime: (i64, i64),
    pub dev: u64,
    pub ino: u64,
}

/// The effective user id: the owner every cache file and directory must have.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in file name"))
}

/// Runs a system call until it is not interrupted by a signal.
fn retry(mut call: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        let ret = call();
        if ret != -1 {
            return Ok(ret);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

impl Dir {
    /// Opens the directory at `path` (symlinks in it are followed: the result is checked).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let file = OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC).open(path)?;
        Ok(Dir { file })
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// fstat of the directory itself.
    pub fn metadata(&self) -> io::Result<Metadata> {
        self.file.metadata()
    }

    fn open_at(&self, name: &str, flags: libc::c_int, mode: libc::c_uint) -> io::Result<File> {
        let c = c_name(name)?;
        let fd = retry(|| {
            // SAFETY: `c` is NUL-terminated and outlives the call; `self.fd()` is open for as
            // long as `self` lives. openat is variadic; the mode is passed as the promoted
            // unsigned int it expects.
            unsafe { libc::openat(self.fd(), c.as_ptr(), flags | libc::O_CLOEXEC, mode) }
        })?;
        // SAFETY: `fd` was just returned by openat, is open, and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Opens the subdirectory `name`, refusing a symlink as the last component.
    pub fn open_dir_at(&self, name: &str) -> io::Result<Dir> {
        let file = self.open_at(name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)?;
        Ok(Dir { file })
    }

    /// Opens `name` for reading, refusing a symlink as the last component. O_NONBLOCK so a
    /// FIFO planted under an entry's name cannot hang us (it has no effect on regular files).
    pub fn open_read_at(&self, name: &str) -> io::Result<File> {
        self.open_at(name, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK, 0)
    }

    /// Creates `name`, which must not exist yet, for writing with permissions `mode`.
    pub fn create_new_at(&self, name: &str, mode: u32) -> io::Result<File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        self.open_at(name, flags, mode)
    }

    pub fn mkdir_at(&self, name: &str, mode: u32) -> io::Result<()> {
        let c = c_name(name)?;
        retry(|| {
            // SAFETY: `c` is NUL-terminated and outlives the call; the descriptor is open.
            unsafe { libc::mkdirat(self.fd(), c.as_ptr(), mode as libc::mode_t) }
        })?;
        Ok(())
    }

    /// Atomically replaces `to` with `from` (both relative to this directory).
    pub fn rename_at(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (c_name(from)?, c_name(to)?);
        retry(|| {
            // SAFETY: both names are NUL-terminated and outlive the call; the descriptor is open.
            unsafe { libc::renameat(self.fd(), from.as_ptr(), self.fd(), to.as_ptr()) }
        })?;
        Ok(())
    }

    pub fn unlink_at(&self, name: &str) -> io::Result<()> {
        let c = c_name(name)?;
        retry(|| {
            // SAFETY: `c` is NUL-terminated and outlives the call; the descriptor is open.
            unsafe { libc::unlinkat(self.fd(), c.as_ptr(), 0) }
        })?;
        Ok(())
    }

    /// lstat of `name` (a symlink is reported as itself, not followed).
    // The libc field types differ between platforms, so some casts are no-ops here.
    #[allow(clippy::unnecessary_cast)]
    pub fn stat_at(&self, name: &str) -> io::Result<Stat> {
        let c = c_name(name)?;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        retry(|| {
            // SAFETY: `c` is NUL-terminated, `st` is writable memory of the right type and
            // size, and both outlive the call; the descriptor is open.
            unsafe { libc::fstatat(self.fd(), c.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) }
        })?;
        // SAFETY: fstatat succeeded, so it filled in the whole struct.
        let st = unsafe { st.assume_init() };
        Ok(Stat {
            is_file: st.st_mode & libc::S_IFMT == libc::S_IFREG,
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        })
    }

    /// The names in this directory, without `.` and `..`.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        // A fresh open file description, so the listing has its own position and fdopendir
        // can own it.
        let fd = self.open_at(".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?.into_raw_fd();
        // SAFETY: `fd` is an open directory descriptor that we own; on success fdopendir
        // takes it over.
        let dirp = unsafe { libc::fdopendir(fd) };
        if dirp.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `fd` is still ours and still open.
            unsafe { libc::close(fd) };
            return Err(err);
        }
        let stream = DirStream(dirp);
        let mut names = Vec::new();
        loop {
            // readdir signals errors only through errno, and leaves it alone at the end.
            clear_errno();
            // SAFETY: `stream.0` is a valid DIR* owned by this function; no other thread uses it.
            let ent = unsafe { libc::readdir(stream.0) };
            if ent.is_null() {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(0) {
                    return Ok(names);
                }
                return Err(err);
            }
            // SAFETY: readdir returned a valid entry whose `d_name` is NUL-terminated and stays
            // valid until the next readdir on this stream; it is copied out before that.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
    }
}

/// Closes a `DIR*` on every path out of [`Dir::names`].
struct DirStream(*mut libc::DIR);

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful fdopendir and is closed only here.
        unsafe { libc::closedir(self.0) };
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn clear_errno() {
    // SAFETY: __errno_location returns this thread's errno slot, which is always valid.
    unsafe { *libc::__errno_location() = 0 };
}

#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
fn clear_errno() {
    // SAFETY: __error returns this thread's errno slot, which is always valid.
    unsafe { *libc::__error() = 0 };
}
