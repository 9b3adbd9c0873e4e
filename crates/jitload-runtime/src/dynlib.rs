//! Shared libraries the process opens for JIT'd code (`dlopen`, never closed), the search
//! for a library by bare name (`-lyaml` -> `libyaml.so.N`), and the symbol sources outside
//! every library: the process's global scope, the compiler runtime, and the functions glibc
//! never exports.

use std::ffi::{c_void, CStr};
use std::path::Path;
use std::sync::OnceLock;

use crate::cstr;

/// A shared library opened with `dlopen`. Never closed: JIT'd code may hold its addresses.
#[derive(Debug)]
pub struct SharedLibrary {
    pub name: String,
    pub path: String,
    handle: usize,
}

impl SharedLibrary {
    /// Opens `spec`: a path, a file name the dynamic loader can find ("libyaml-0.so.2"), or a
    /// bare name as in `-lyaml` ("yaml"), searched as lib<name>.so then lib<name>.so.N.
    pub fn open(spec: &str) -> Result<SharedLibrary, String> {
        let mut errors = Vec::new();
        for candidate in candidates(spec) {
            match dlopen(&candidate) {
                Ok(handle) => return Ok(SharedLibrary { name: spec.to_string(), path: candidate, handle }),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.pop().unwrap_or_else(|| format!("no file found for '{spec}'")))
    }

    /// A library another copy of this crate opened (see [`crate::scope_table`]).
    pub(crate) fn from_raw(name: String, path: String, handle: usize) -> SharedLibrary {
        SharedLibrary { name, path, handle }
    }

    pub(crate) fn handle(&self) -> usize {
        self.handle
    }

    /// The address of `symbol` in this library (or the libraries it depends on).
    pub fn symbol(&self, symbol: &str) -> Option<u64> {
        dlsym(self.handle as *mut c_void, symbol)
    }
}

fn dlopen(path: &str) -> Result<usize, String> {
    let c = cstr(path);
    // SAFETY: c is NUL-terminated; dlopen has no other preconditions. RTLD_LOCAL keeps the
    // library's symbols out of the global namespace, as for a normal extension module.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns null or a thread-local message valid until the next dl* call.
        let err = unsafe { libc::dlerror() };
        let msg = if err.is_null() {
            format!("cannot open {path}")
        } else {
            // SAFETY: as above; copied immediately.
            unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
        };
        return Err(msg);
    }
    Ok(handle as usize)
}

fn dlsym(handle: *mut c_void, symbol: &str) -> Option<u64> {
    let c = cstr(symbol);
    // SAFETY: handle is RTLD_DEFAULT or a live dlopen handle; c is NUL-terminated.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    (!p.is_null()).then_some(p as u64)
}

/// Looks `symbol` up in the process's global scope: the executable, the libraries it started
/// with and `RTLD_GLOBAL` ones, what a `.so` extension sees before its own dependencies.
/// Not `RTLD_DEFAULT`: from this library that also searches the libraries this library
/// depends on, such as the compiler module's libLLVM and, in the manylinux wheel, its libc++
/// and libc++abi, a second C++ runtime that JIT'd code must never bind to.
pub fn process_symbol(symbol: &str) -> Option<u64> {
    static GLOBAL_SCOPE: OnceLock<usize> = OnceLock::new();
    // SAFETY: dlopen(NULL) has no preconditions; it returns the main program's handle (never
    // closed), and if it ever failed, null is RTLD_DEFAULT.
    let handle = *GLOBAL_SCOPE.get_or_init(|| unsafe { libc::dlopen(std::ptr::null(), libc::RTLD_NOW) } as usize);
    dlsym(handle as *mut c_void, symbol)
}

/// A C++ runtime symbol for bitcode that records no runtime library (linked by hand):
/// libstdc++'s, which clang's C++ on Linux compiles against. Opened only when such a symbol
/// is looked for: with libstdc++ in the process, calls are guarded against C++ exceptions.
pub(crate) fn cxx_runtime_symbol(symbol: &str) -> Option<u64> {
    static LIBSTDCXX: OnceLock<Option<SharedLibrary>> = OnceLock::new();
    let cxx = ["_Z", "__cxa_", "__gxx_", "__dynamic_cast"].iter().any(|p| symbol.starts_with(p));
    cxx.then(|| LIBSTDCXX.get_or_init(|| SharedLibrary::open("libstdc++.so.6").ok()).as_ref()?.symbol(symbol)).flatten()
}

/// Where shared libraries are searched by bare name, after `LD_LIBRARY_PATH` (the build tools
/// use the same list to resolve `-l` flags).
pub const LIBRARY_DIRS: &[&str] = &[
    "/usr/local/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
];

fn candidates(spec: &str) -> Vec<String> {
    if spec.contains('/') || spec.contains(".so") {
        return vec![spec.to_string()];
    }
    let mut out = vec![format!("lib{spec}.so")];
    let prefix = format!("lib{spec}.so.");
    let options = jitload_options::get();
    let env_dirs = options.library_path.iter().map(|d| d.to_string_lossy());
    for dir in env_dirs.chain(LIBRARY_DIRS.iter().map(|d| std::borrow::Cow::Borrowed(*d))) {
        let dir = dir.as_ref();
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut versioned: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        // Shortest name first: libfoo.so.2 before libfoo.so.2.0.9 (same library, SONAME form).
        versioned.sort_by_key(|n| (n.len(), n.clone()));
        out.extend(versioned.into_iter().map(|n| Path::new(dir).join(n).to_string_lossy().into_owned()));
    }
    out
}

/// Libraries that provide compiler-runtime helpers clang may call (`__udivti3`, ...).
pub(crate) fn runtime_libraries() -> &'static [SharedLibrary] {
    static RUNTIME: OnceLock<Vec<SharedLibrary>> = OnceLock::new();
    RUNTIME.get_or_init(|| ["libgcc_s.so.1"].iter().filter_map(|n| SharedLibrary::open(n).ok()).collect())
}

/// The compiler-rt builtins archive shipped with clang 22, if installed: linked into a module
/// on demand for helpers that libgcc lacks (e.g. `__muloti4`).
pub fn builtins_archive() -> Option<&'static str> {
    static ARCHIVE: OnceLock<Option<String>> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let arch = std::env::consts::ARCH;
            ["/usr/lib/llvm-22/lib/clang/22/lib/linux", "/usr/lib/llvm-22/lib/clang/22/lib/x86_64-pc-linux-gnu"]
                .iter()
                .flat_map(|d| [format!("{d}/libclang_rt.builtins-{arch}.a"), format!("{d}/libclang_rt.builtins.a")])
                .find(|p| Path::new(p).exists())
        })
        .as_deref()
}

extern "C" {
    fn at_quick_exit(callback: extern "C" fn()) -> libc::c_int;
}

/// Functions glibc implements in `libc_nonshared.a` (linked into every executable and shared
/// object, never exported by `libc.so.6`), so `dlsym` cannot find them. JIT'd code gets the
/// copies linked into this library; handlers registered through them run at process exit,
/// as jitload never unloads.
pub(crate) fn libc_nonshared(symbol: &str) -> Option<u64> {
    let address = match symbol {
        "atexit" => libc::atexit as *const () as usize,
        "at_quick_exit" => at_quick_exit as *const () as usize,
        "pthread_atfork" => libc::pthread_atfork as *const () as usize,
        _ => return None,
    };
    Some(address as u64)
}
