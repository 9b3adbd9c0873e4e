//! Where undefined symbols come from, in jitload's documented order: other jitload-loaded
//! code, the process (libpython, libc, libm, ... and RTLD_GLOBAL libraries), the module's
//! dependent libraries, libraries the user added, then the compiler runtime.

use std::collections::HashMap;
use std::ffi::{c_void, CStr};
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use crate::cstr;

/// A shared library opened with `dlopen`. Never closed: JIT'd code may hold its addresses.
#[derive(Debug)]
pub struct Library {
    pub name: String,
    pub path: String,
    handle: usize,
}

impl Library {
    /// Opens `spec`: a path, a file name the dynamic loader can find ("libyaml-0.so.2"), or a
    /// bare name as in `-lyaml` ("yaml"), searched as lib<name>.so then lib<name>.so.N.
    pub fn open(spec: &str) -> Result<Library, String> {
        let mut errors = Vec::new();
        for candidate in candidates(spec) {
            match dlopen(&candidate) {
                Ok(handle) => return Ok(Library { name: spec.to_string(), path: candidate, handle }),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.pop().unwrap_or_else(|| format!("no file found for '{spec}'")))
    }

    /// A library another copy of this crate opened (see [`crate::scope_table`]).
    pub(crate) fn from_raw(name: String, path: String, handle: usize) -> Library {
        Library { name, path, handle }
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
    let env_dirs = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    for dir in env_dirs.split(':').filter(|d| !d.is_empty()).chain(LIBRARY_DIRS.iter().copied()) {
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
fn runtime_libraries() -> &'static [Library] {
    static RUNTIME: OnceLock<Vec<Library>> = OnceLock::new();
    RUNTIME.get_or_init(|| ["libgcc_s.so.1"].iter().filter_map(|n| Library::open(n).ok()).collect())
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

/// The session-wide part of resolution: jitload exports and user libraries. The process's
/// scope (what imports use) may live in another copy of this crate, in the other native
/// module: see [`crate::scope_table`].
#[derive(Default)]
pub struct ScopeState {
    /// Symbols loaded modules export: name -> (address, id of the module).
    exports: RwLock<HashMap<String, (u64, u64)>>,
    /// Exports that a later module defined again (name -> those modules' ids), and the file
    /// each exporting module came from: a module that needs such a name cannot tell which
    /// definition is meant (an ODR clash).
    duplicates: RwLock<HashMap<String, Vec<u64>>>,
    owner_paths: RwLock<HashMap<u64, String>>,
    /// Exports whose (first) definition is weak.
    weak_exports: RwLock<std::collections::HashSet<String>>,
    /// Modules whose exports another module was linked against (they can never be freed).
    exports_used: RwLock<std::collections::HashSet<u64>>,
    user_libraries: RwLock<Vec<Arc<Library>>>,
}

impl ScopeState {
    /// Records what module `owner` exports (the first definition of a name wins; later ones
    /// from another file are remembered as duplicates, see [`SharedScope::clash`]).
    /// `weak` names definitions the linker may merge (inline functions, templates): those
    /// never clash.
    pub fn add_exports(&self, owner: u64, path: &str, weak: &[&str], symbols: impl IntoIterator<Item = (String, u64)>) {
        self.owner_paths.write().unwrap_or_else(|e| e.into_inner()).insert(owner, path.to_string());
        let paths = self.owner_paths.read().unwrap_or_else(|e| e.into_inner());
        let mut map = self.exports.write().unwrap_or_else(|e| e.into_inner());
        let mut duplicates = self.duplicates.write().unwrap_or_else(|e| e.into_inner());
        let mut weak_names = self.weak_exports.write().unwrap_or_else(|e| e.into_inner());
        for (name, address) in symbols {
            let is_weak = weak.contains(&name.as_str());
            match map.get(&name) {
                Some(_) if is_weak || weak_names.contains(&name) => {}
                // The same file loaded again (a reload) replaces, it does not clash.
                Some(&(_, first)) if paths.get(&first).map(String::as_str) != Some(path) => {
                    duplicates.entry(name).or_default().push(owner);
                }
                Some(_) => {}
                None => {
                    if is_weak {
                        weak_names.insert(name.clone());
                    }
                    map.insert(name, (address, owner));
                }
            }
        }
    }

    /// When loaded modules from different files define `symbol`, their files (first
    /// definition first): a module that needs it has two candidates and jitload will not
    /// pick one silently.
    pub fn clash(&self, symbol: &str) -> Option<Vec<String>> {
        let duplicates = self.duplicates.read().unwrap_or_else(|e| e.into_inner());
        let others = duplicates.get(symbol).filter(|o| !o.is_empty())?;
        let &(_, first) = self.exports.read().unwrap_or_else(|e| e.into_inner()).get(symbol)?;
        let paths = self.owner_paths.read().unwrap_or_else(|e| e.into_inner());
        let mut files: Vec<String> = std::iter::once(first).chain(others.iter().copied()).filter_map(|o| paths.get(&o).cloned()).collect();
        files.dedup();
        (files.len() > 1).then_some(files)
    }

    /// Forgets module `owner`'s exports, unless another module was linked against them
    /// (then it returns false and nothing changes).
    pub fn remove_exports(&self, owner: u64) -> bool {
        if self.exports_used.read().unwrap_or_else(|e| e.into_inner()).contains(&owner) {
            return false;
        }
        let mut weak_names = self.weak_exports.write().unwrap_or_else(|e| e.into_inner());
        self.exports.write().unwrap_or_else(|e| e.into_inner()).retain(|name, (_, o)| {
            let keep = *o != owner;
            if !keep {
                weak_names.remove(name);
            }
            keep
        });
        drop(weak_names);
        self.duplicates.write().unwrap_or_else(|e| e.into_inner()).retain(|_, owners| {
            owners.retain(|o| *o != owner);
            !owners.is_empty()
        });
        self.owner_paths.write().unwrap_or_else(|e| e.into_inner()).remove(&owner);
        true
    }

    pub fn add_user_library(&self, library: Arc<Library>) {
        let mut libs = self.user_libraries.write().unwrap_or_else(|e| e.into_inner());
        if !libs.iter().any(|l| l.path == library.path) {
            libs.push(library);
        }
    }

    pub fn user_libraries(&self) -> Vec<String> {
        self.user_libraries.read().unwrap_or_else(|e| e.into_inner()).iter().map(|l| l.path.clone()).collect()
    }

    /// The address of an export of a loaded module; a module that resolves against it can
    /// never be freed before this one, so the exporter is marked as used.
    pub fn lookup_export(&self, symbol: &str) -> Option<u64> {
        let &(a, owner) = self.exports.read().unwrap_or_else(|e| e.into_inner()).get(symbol)?;
        self.exports_used.write().unwrap_or_else(|e| e.into_inner()).insert(owner);
        Some(a)
    }

    /// `symbol` in the libraries the user added, first added first.
    pub fn lookup_user_library(&self, symbol: &str) -> Option<u64> {
        self.user_libraries.read().unwrap_or_else(|e| e.into_inner()).iter().find_map(|l| l.symbol(symbol))
    }
}

/// A session's shared scope: its own (an independent session) or the process's, which every
/// import and the default session use.
pub enum SharedScope {
    Private(Box<ScopeState>),
    Process,
}

impl SharedScope {
    pub fn add_exports(&self, owner: u64, path: &str, weak: &[&str], symbols: Vec<(String, u64)>) {
        match self {
            SharedScope::Private(s) => s.add_exports(owner, path, weak, symbols),
            SharedScope::Process => crate::scope_table::add_exports(owner, path, weak, &symbols),
        }
    }

    pub fn clash(&self, symbol: &str) -> Option<Vec<String>> {
        match self {
            SharedScope::Private(s) => s.clash(symbol),
            SharedScope::Process => crate::scope_table::clash(symbol),
        }
    }

    pub fn remove_exports(&self, owner: u64) -> bool {
        match self {
            SharedScope::Private(s) => s.remove_exports(owner),
            SharedScope::Process => crate::scope_table::remove_exports(owner),
        }
    }

    pub fn add_user_library(&self, library: Arc<Library>) {
        match self {
            SharedScope::Private(s) => s.add_user_library(library),
            SharedScope::Process => crate::scope_table::add_user_library(&library),
        }
    }

    pub fn user_libraries(&self) -> Vec<String> {
        match self {
            SharedScope::Private(s) => s.user_libraries(),
            SharedScope::Process => crate::scope_table::user_libraries(),
        }
    }

    fn lookup_export(&self, symbol: &str) -> Option<u64> {
        match self {
            SharedScope::Private(s) => s.lookup_export(symbol),
            SharedScope::Process => crate::scope_table::lookup_export(symbol),
        }
    }

    fn lookup_user_library(&self, symbol: &str) -> Option<u64> {
        match self {
            SharedScope::Private(s) => s.lookup_user_library(symbol),
            SharedScope::Process => crate::scope_table::lookup_user_library(symbol),
        }
    }
}

/// Resolution for one module: the shared scope plus the module's own dependent libraries.
pub struct ModuleScope {
    pub shared: Arc<SharedScope>,
    pub dependencies: Vec<Arc<Library>>,
}

impl ModuleScope {
    /// Resolves `symbol` in jitload's order; `None` if nothing defines it.
    pub fn resolve(&self, symbol: &str) -> Option<u64> {
        // C++ runtime hooks JIT'd code must reach instead of the process's (see `cxx`), and
        // the package context's `PyModule_Create2` (see `pkgcontext`).
        match symbol {
            "__emutls_get_address" => return Some(crate::cxx::emutls_get_address as *const () as usize as u64),
            "__cxa_thread_atexit" => return Some(crate::cxx::cxa_thread_atexit as *const () as usize as u64),
            // CPython's, under the package context jitload keeps where CPython's is not exported.
            "PyModule_Create2" if process_symbol(symbol).is_some() => {
                return Some(crate::pkgcontext::module_create2 as *const () as usize as u64)
            }
            _ => {}
        }
        if let Some(a) = self.shared.lookup_export(symbol) {
            return Some(a);
        }
        if let Some(name) = symbol.strip_prefix("__emutls_v.") {
            // A thread-local a shared library defines: a control object that reaches it.
            let address = self.resolve_native(name)?;
            return crate::cxx::foreign_tls_control(name, address);
        }
        if let Some(a) = self.resolve_native(symbol) {
            return Some(a);
        }
        // A thread-local another loaded module defines is exported as its control object.
        self.shared.lookup_export(&format!("__emutls_v.{symbol}"))
    }

    /// Resolution outside jitload's own modules: the process, dependent libraries, user
    /// libraries, the compiler runtime.
    fn resolve_native(&self, symbol: &str) -> Option<u64> {
        if let Some(a) = process_symbol(symbol) {
            return Some(a);
        }
        if let Some(a) = self.dependencies.iter().find_map(|l| l.symbol(symbol)) {
            return Some(a);
        }
        if let Some(a) = self.shared.lookup_user_library(symbol) {
            return Some(a);
        }
        runtime_libraries().iter().find_map(|l| l.symbol(symbol)).or_else(|| libc_nonshared(symbol)).or_else(|| cxx_runtime_symbol(symbol))
    }
}

/// A C++ runtime symbol for bitcode that records no runtime library (linked by hand):
/// libstdc++'s, which clang's C++ on Linux compiles against. Opened only when such a symbol
/// is looked for: with libstdc++ in the process, calls are guarded against C++ exceptions.
fn cxx_runtime_symbol(symbol: &str) -> Option<u64> {
    static LIBSTDCXX: OnceLock<Option<Library>> = OnceLock::new();
    let cxx = ["_Z", "__cxa_", "__gxx_", "__dynamic_cast"].iter().any(|p| symbol.starts_with(p));
    cxx.then(|| LIBSTDCXX.get_or_init(|| Library::open("libstdc++.so.6").ok()).as_ref()?.symbol(symbol)).flatten()
}

extern "C" {
    fn at_quick_exit(callback: extern "C" fn()) -> libc::c_int;
}

/// Functions glibc implements in `libc_nonshared.a` (linked into every executable and shared
/// object, never exported by `libc.so.6`), so `dlsym` cannot find them. JIT'd code gets the
/// copies linked into this library; handlers registered through them run at process exit,
/// as jitload never unloads.
fn libc_nonshared(symbol: &str) -> Option<u64> {
    let address = match symbol {
        "atexit" => libc::atexit as *const () as usize,
        "at_quick_exit" => at_quick_exit as *const () as usize,
        "pthread_atfork" => libc::pthread_atfork as *const () as usize,
        _ => return None,
    };
    Some(address as u64)
}
