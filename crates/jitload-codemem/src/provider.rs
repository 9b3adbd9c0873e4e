//! How written memory becomes executable: the [`Provider`] trait, its two real providers, and
//! the process-wide choice ([`configure`], [`provider`]).

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::RwLock;

/// Which provider seals code (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// mprotect, switching to dual mapping the first time the host refuses it.
    Auto,
    Mprotect,
    DualMap,
}

impl Mode {
    fn to_u8(self) -> u8 {
        match self {
            Mode::Auto => 0,
            Mode::Mprotect => 1,
            Mode::DualMap => 2,
        }
    }

    fn from_u8(value: u8) -> Mode {
        match value {
            1 => Mode::Mprotect,
            2 => Mode::DualMap,
            _ => Mode::Auto,
        }
    }
}

/// Makes written pages executable (and read-only), never both writable and executable.
///
/// Every address range is page-aligned and a page multiple. The caller owns the ranges: it
/// mapped them through [`Provider::map`] and guarantees nothing runs in a range it unmaps.
pub trait Provider: Send + Sync {
    /// What [`crate::provider`] reports (`"mprotect"`, `"dualmap"`, ...).
    fn name(&self) -> &'static str;

    /// Seals `addr..addr+len`: written, not yet running; read+execute from now on.
    fn make_executable(&self, addr: *mut u8, len: usize) -> io::Result<()>;

    /// Maps `len` bytes of zero-filled, private, read+write memory (`populate`: fault every
    /// page in now, with the mapping call, rather than one fault per page later).
    fn map(&self, len: usize, populate: bool) -> io::Result<*mut u8> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: an anonymous mapping with no address hint; the result is checked.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(p.cast())
    }

    /// Makes `addr..addr+len` read-only (data that relocation wrote and nothing writes again).
    fn make_readonly(&self, addr: *mut u8, len: usize) -> io::Result<()> {
        // SAFETY: the caller's own mapping (trait contract); dropping write access cannot
        // break memory safety, only later writes, which the caller promises not to make.
        if unsafe { libc::mprotect(addr.cast(), len, libc::PROT_READ) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Moves the mapping at `from` over the one at `to` (same length) in one step: code
    /// running in `to` sees the same bytes before and after (the page pool's append).
    fn move_over(&self, from: *mut u8, to: *mut u8, len: usize) -> io::Result<()> {
        // SAFETY: both ranges are the caller's own mappings of `len` bytes; the source
        // mapping ceases to exist, the target is replaced atomically.
        let moved = unsafe { libc::mremap(from.cast(), len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, to.cast::<libc::c_void>()) };
        if moved == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Replaces `addr..addr+len` with fresh zero-filled read+write pages in one step: how a
    /// sealed range is reused (its executable pages are dropped, never made writable).
    fn map_fresh(&self, addr: *mut u8, len: usize) -> io::Result<()> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
        // SAFETY: the caller's own mapping, in which (trait contract) nothing runs any more;
        // MAP_FIXED replaces exactly those pages.
        let p = unsafe { libc::mmap(addr.cast(), len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unmaps `addr..addr+len`.
    fn unmap(&self, addr: *mut u8, len: usize) {
        // SAFETY: the caller's own mapping, in which (trait contract) nothing runs any more.
        unsafe { libc::munmap(addr.cast(), len) };
    }
}

/// `mprotect` to read+execute. In [`Mode::Auto`], a refusal with `EACCES`/`EPERM` switches
/// the process to [`DualMap`] and seals this range that way.
pub struct Mprotect;

impl Provider for Mprotect {
    fn name(&self) -> &'static str {
        "mprotect"
    }

    fn make_executable(&self, addr: *mut u8, len: usize) -> io::Result<()> {
        // SAFETY: the caller's written mapping (trait contract); from here on never written.
        if unsafe { libc::mprotect(addr.cast(), len, libc::PROT_READ | libc::PROT_EXEC) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        let refused = matches!(err.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM));
        if refused && MODE.compare_exchange(Mode::Auto.to_u8(), FELL_BACK, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            log::info!("jitload-codemem: mprotect to executable refused ({err}); dual-mapping code from now on");
        }
        if refused && MODE.load(Ordering::Relaxed) == FELL_BACK {
            return DualMap.make_executable(addr, len);
        }
        Err(err)
    }
}

/// A memfd holding a copy of the written bytes, mapped read+execute over them.
pub struct DualMap;

impl Provider for DualMap {
    fn name(&self) -> &'static str {
        "dualmap"
    }

    fn make_executable(&self, addr: *mut u8, len: usize) -> io::Result<()> {
        // SAFETY: a NUL-terminated name; valid flags.
        let fd = unsafe { libc::memfd_create(c"jitload-code".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let result = copy_and_map(fd, addr, len);
        // SAFETY: our descriptor; the mapping keeps the file's pages.
        unsafe { libc::close(fd) };
        result
    }
}

fn copy_and_map(fd: libc::c_int, addr: *mut u8, len: usize) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        // SAFETY: addr..addr+len is the caller's readable mapping; fd is our memfd.
        let n = unsafe { libc::pwrite(fd, addr.add(done).cast(), len - done, done as libc::off_t) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        done += n as usize;
    }
    // SAFETY: replaces the caller's written range (nothing runs in it yet) with the memfd's
    // copy of the same bytes, read+execute; checked.
    let p = unsafe { libc::mmap(addr.cast(), len, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_SHARED | libc::MAP_FIXED, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [`Mode::Auto`] after its fallback: dual mapping, and reported as auto's choice.
const FELL_BACK: u8 = 3;
static MODE: AtomicU8 = AtomicU8::new(0);
/// A provider installed by [`set_provider`] (tests), in place of the mode's.
static OVERRIDE: RwLock<Option<&'static dyn Provider>> = RwLock::new(None);

/// Chooses the provider for code sealed from now on (call once at start-up; the default is
/// [`Mode::Auto`]). Code already sealed is unaffected.
pub fn configure(mode: Mode) {
    MODE.store(mode.to_u8(), Ordering::Relaxed);
}

/// The mode configured (auto stays auto after its fallback; [`provider`] says which seals).
pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        FELL_BACK => Mode::Auto,
        m => Mode::from_u8(m),
    }
}

/// The provider that seals code now.
pub fn provider() -> &'static dyn Provider {
    if let Some(p) = *OVERRIDE.read().unwrap_or_else(|e| e.into_inner()) {
        return p;
    }
    let mode = MODE.load(Ordering::Relaxed);
    if mode == Mode::DualMap.to_u8() || mode == FELL_BACK {
        &DualMap
    } else {
        &Mprotect
    }
}

/// Installs `provider` for everything sealed from now on, whatever the mode (`None`: the
/// mode's provider again). For tests: a [`crate::Recording`] around the real provider.
pub fn set_provider(provider: Option<&'static dyn Provider>) {
    *OVERRIDE.write().unwrap_or_else(|e| e.into_inner()) = provider;
}

/// The page size of this host (`sysconf`), read once.
pub fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(size).ok().filter(|s| s.is_power_of_two()).unwrap_or(4096)
    })
}
