//! C++ support for JIT'd modules that the linker alone does not give: calls into module code
//! that may throw (caught in the C++ shim, `shim/cxx.cpp`, and reported as a
//! [`CxxException`]), each module's own `__dso_handle` and the `__cxa_*` hooks that route
//! destructors to the module that registered them, and emulated thread-local storage.
//!
//! Why emulated TLS rather than ORC's ELFNixPlatform: without the platform, JITLink links a
//! general-dynamic TLS access to a descriptor glibc's `__tls_get_addr` misreads (a
//! `thread_local` silently read another thread's — or no thread's — memory in our tests).
//! The platform fixes that for variables the module defines by loading the ORC runtime into
//! the process and owning every JITDylib's initialisers, which jitload's own pipeline (checks
//! before linking, lowered constructors, bare JITDylibs, stubs) would have to give up; and it
//! still cannot reach thread-locals that *libstdc++* defines (`std::call_once` uses two).
//! Emulated TLS needs no runtime: the target machine lowers every `thread_local` access to
//! `__emutls_get_address(&__emutls_v.<name>)`. Variables a module defines get libgcc's
//! per-thread storage; variables a shared library defines are reached through a control
//! object jitload makes (`resolve::emutls_control`), whose accesses go to glibc's
//! `__tls_get_addr` with the library's real module id and offset.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;

/// A C++ exception that escaped a call into JIT'd code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CxxException {
    /// The demangled type name, e.g. `std::runtime_error`.
    pub type_name: String,
    /// `what()` for a `std::exception`, else empty.
    pub what: String,
}

impl std::fmt::Display for CxxException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.what.is_empty() {
            write!(f, "C++ exception {}", self.type_name)
        } else {
            write!(f, "C++ exception {}: {}", self.type_name, self.what)
        }
    }
}

type CallVoid = unsafe extern "C" fn(extern "C" fn(), *mut c_char, usize, *mut c_char, usize) -> c_int;
type CallPtr =
    unsafe extern "C" fn(unsafe extern "C" fn() -> *mut c_void, *mut *mut c_void, *mut c_char, usize, *mut c_char, usize) -> c_int;
type CallInt2 = unsafe extern "C" fn(
    unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    *mut c_void,
    *mut c_void,
    *mut c_int,
    *mut c_char,
    usize,
    *mut c_char,
    usize,
) -> c_int;

/// The C++ shim's guarded calls (`shim/cxx.cpp`).
struct Guards {
    void: CallVoid,
    ptr: CallPtr,
    int2: CallInt2,
}

#[cfg(not(feature = "lazy-cxx-guards"))]
fn guards() -> Option<&'static Guards> {
    extern "C" {
        fn jitload_cxx_call_void(f: extern "C" fn(), t: *mut c_char, ts: usize, w: *mut c_char, ws: usize) -> c_int;
        fn jitload_cxx_call_ptr(
            f: unsafe extern "C" fn() -> *mut c_void,
            result: *mut *mut c_void,
            t: *mut c_char,
            ts: usize,
            w: *mut c_char,
            ws: usize,
        ) -> c_int;
        fn jitload_cxx_call_int2(
            f: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
            a: *mut c_void,
            b: *mut c_void,
            result: *mut c_int,
            t: *mut c_char,
            ts: usize,
            w: *mut c_char,
            ws: usize,
        ) -> c_int;
    }
    static GUARDS: Guards = Guards { void: jitload_cxx_call_void, ptr: jitload_cxx_call_ptr, int2: jitload_cxx_call_int2 };
    Some(&GUARDS)
}

/// With `lazy-cxx-guards` (jitload's LLVM-free module), the shim is a separate shared
/// library, `libjitload_cxxguard.so` beside this one, loaded the first time a guarded call is
/// made while libstdc++ is in the process: linking the shim in would load libstdc++ into
/// every process that imports a cached module (0.8 ms, most of that module's own load time).
/// Without libstdc++ loaded nothing can throw a C++ exception, so calls are made directly.
/// (A C module whose init itself dlopens a C++ library that throws through it is the one
/// case this misses; the engine's module always guards.)
#[cfg(feature = "lazy-cxx-guards")]
fn guards() -> Option<&'static Guards> {
    static GUARDS: std::sync::OnceLock<Option<Guards>> = std::sync::OnceLock::new();
    if let Some(loaded) = GUARDS.get() {
        return loaded.as_ref();
    }
    if !cxx_runtime_loaded() {
        return None;
    }
    GUARDS.get_or_init(load_guard_library).as_ref()
}

/// Whether a C++ runtime (libstdc++, or libc++) is among the loaded objects. Walks the
/// loader's list instead of `dlopen(..., RTLD_NOLOAD)`, which searches the file system for
/// a library that is not loaded (several system calls on every guarded call).
#[cfg(feature = "lazy-cxx-guards")]
fn cxx_runtime_loaded() -> bool {
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, _data: *mut c_void) -> c_int {
        // SAFETY: info describes one loaded object for the duration of this call.
        let name = unsafe { (*info).dlpi_name };
        if name.is_null() {
            return 0;
        }
        // SAFETY: dlpi_name is a NUL-terminated path owned by the loader.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes();
        let file = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
        c_int::from(file.starts_with(b"libstdc++.so") || file.starts_with(b"libc++.so"))
    }
    // SAFETY: visit only reads the descriptions the loader passes it.
    unsafe { libc::dl_iterate_phdr(Some(visit), std::ptr::null_mut()) != 0 }
}

#[cfg(feature = "lazy-cxx-guards")]
fn load_guard_library() -> Option<Guards> {
    // SAFETY: Dl_info is plain C data (pointers and integers), valid when zeroed.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr fills `info` for an address inside a loaded object (this function).
    if unsafe { libc::dladdr(load_guard_library as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        log::warn!("jitload: cannot locate this module; C++ exceptions from module code are not caught");
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated path owned by the dynamic loader.
    let here = std::path::PathBuf::from(unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned());
    // Beside this module (_fastload), or in the package above it (_native is in jitload/_lib).
    let beside = here.with_file_name("libjitload_cxxguard.so");
    let above = here.parent().and_then(|dir| dir.parent()).map(|pkg| pkg.join("libjitload_cxxguard.so"));
    let path = match above {
        Some(above) if !beside.exists() && above.exists() => above,
        _ => beside,
    };
    let c = crate::cstr(&path.to_string_lossy());
    // SAFETY: c is NUL-terminated; the library only defines the three guard functions.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let symbol = |name: &std::ffi::CStr| {
        // SAFETY: handle is checked non-null before this is called; name is NUL-terminated.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    };
    let found = (!handle.is_null())
        .then(|| Some((symbol(c"jitload_cxx_call_void")?, symbol(c"jitload_cxx_call_ptr")?, symbol(c"jitload_cxx_call_int2")?)))
        .flatten();
    let Some((void, ptr, int2)) = found else {
        log::warn!("jitload: cannot load {}; C++ exceptions from module code are not caught", path.display());
        return None;
    };
    // SAFETY: the shim defines these three functions with exactly these signatures.
    Some(unsafe {
        Guards {
            void: std::mem::transmute::<*mut c_void, CallVoid>(void),
            ptr: std::mem::transmute::<*mut c_void, CallPtr>(ptr),
            int2: std::mem::transmute::<*mut c_void, CallInt2>(int2),
        }
    })
}

struct Buffers {
    type_name: [c_char; 256],
    what: [c_char; 1024],
}

impl Buffers {
    fn new() -> Self {
        Buffers { type_name: [0; 256], what: [0; 1024] }
    }
    fn exception(&self) -> CxxException {
        // SAFETY: the shim always NUL-terminates both buffers within their sizes.
        let text = |b: &[c_char]| unsafe { CStr::from_ptr(b.as_ptr()) }.to_string_lossy().into_owned();
        CxxException { type_name: text(&self.type_name), what: text(&self.what) }
    }
}

/// Calls a `void()` function of JIT'd code (e.g. a module's lowered constructors).
pub fn call_void(f: extern "C" fn()) -> Result<(), CxxException> {
    let Some(guards) = guards() else {
        f();
        return Ok(());
    };
    let mut b = Buffers::new();
    // SAFETY: f is a valid function; the buffers outlive the call and their sizes are right.
    let threw = unsafe { (guards.void)(f, b.type_name.as_mut_ptr(), 256, b.what.as_mut_ptr(), 1024) };
    if threw != 0 {
        return Err(b.exception());
    }
    Ok(())
}

/// Calls a `void *()` function of JIT'd code (e.g. `PyInit_*`).
///
/// # Safety
/// `f` must be safe to call with no arguments (any preconditions, such as holding the GIL,
/// are the caller's).
pub unsafe fn call_ptr(f: unsafe extern "C" fn() -> *mut c_void) -> Result<*mut c_void, CxxException> {
    let Some(guards) = guards() else {
        // SAFETY: the caller vouches for f.
        return Ok(unsafe { f() });
    };
    let mut b = Buffers::new();
    let mut result = std::ptr::null_mut();
    // SAFETY: the caller vouches for f; result and the buffers outlive the call.
    let threw = unsafe { (guards.ptr)(f, &mut result, b.type_name.as_mut_ptr(), 256, b.what.as_mut_ptr(), 1024) };
    if threw != 0 {
        return Err(b.exception());
    }
    Ok(result)
}

/// Calls `f(a, b)` (e.g. `PyModule_ExecDef`, which runs a module's exec slots).
///
/// # Safety
/// `f(a, b)` must be a valid call.
pub unsafe fn call_int2(
    f: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
    a: *mut c_void,
    b: *mut c_void,
) -> Result<c_int, CxxException> {
    let Some(guards) = guards() else {
        // SAFETY: the caller vouches for f(a, b).
        return Ok(unsafe { f(a, b) });
    };
    let mut bufs = Buffers::new();
    let mut result = 0;
    // SAFETY: the caller vouches for f(a, b); result and the buffers outlive the call.
    let threw = unsafe { (guards.int2)(f, a, b, &mut result, bufs.type_name.as_mut_ptr(), 256, bufs.what.as_mut_ptr(), 1024) };
    if threw != 0 {
        return Err(bufs.exception());
    }
    Ok(result)
}

extern "C" {
    fn __cxa_finalize(dso: *mut c_void);
    fn __cxa_thread_atexit_impl(dtor: unsafe extern "C" fn(*mut c_void), obj: *mut c_void, dso: *mut c_void) -> c_int;
}

/// Modules (by the address of their `__dso_handle`) that registered a thread-exit
/// destructor: their code must outlive every thread that may still run one, so they are
/// never freed.
static THREAD_DTOR_OWNERS: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// What JIT'd code gets for `__cxa_thread_atexit` (how `thread_local` objects with
/// destructors register them): glibc's implementation, keyed on this library so glibc's
/// reference counting sees a DSO it knows, with the module pinned in memory.
pub(crate) extern "C" fn cxa_thread_atexit(dtor: unsafe extern "C" fn(*mut c_void), obj: *mut c_void, dso: *mut c_void) -> c_int {
    {
        let mut owners = THREAD_DTOR_OWNERS.lock().unwrap_or_else(|e| e.into_inner());
        if !owners.contains(&(dso as usize)) {
            owners.push(dso as usize);
        }
    }
    static ANCHOR: u8 = 0;
    // SAFETY: glibc's documented-by-ABI entry point; the anchor lies in this (never unloaded)
    // library.
    unsafe { __cxa_thread_atexit_impl(dtor, obj, &ANCHOR as *const u8 as *mut c_void) }
}

/// Whether the module whose `__dso_handle` is `dso` registered thread-exit destructors.
pub fn has_thread_destructors(dso: u64) -> bool {
    THREAD_DTOR_OWNERS.lock().unwrap_or_else(|e| e.into_inner()).contains(&(dso as usize))
}

/// Runs the `__cxa_atexit` destructors the module with `__dso_handle` at `dso` registered
/// (its static objects', newest first), as the dynamic loader does on `dlclose`.
pub fn finalize(dso: u64) -> Result<(), CxxException> {
    extern "C" fn finalize_current() {
        let dso = FINALIZING.with(|d| d.get());
        // SAFETY: dso is the handle of a module whose code is still linked; glibc runs and
        // forgets exactly the handlers registered with it.
        unsafe { __cxa_finalize(dso as *mut c_void) };
    }
    thread_local! {
        static FINALIZING: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    FINALIZING.with(|d| d.set(dso));
    call_void(finalize_current)
}

/// Control objects made for thread-locals that shared libraries define, by name.
static FOREIGN_TLS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// Marks a control object jitload made: no real emutls object has this alignment.
const FOREIGN_ALIGN: usize = usize::MAX;

/// The layout of an emulated-TLS control object (`__emutls_v.<name>`), shared by LLVM,
/// libgcc and compiler-rt.
#[repr(C)]
struct EmutlsControl {
    size: usize,
    align: usize,
    /// libgcc's index or pointer; for jitload's foreign objects, the `TlsIndex` below.
    loc: *mut c_void,
    templ: *mut c_void,
}

/// glibc's `tls_index`: the argument of `__tls_get_addr`.
#[repr(C)]
struct TlsIndex {
    module: usize,
    offset: usize,
}

extern "C" {
    fn __tls_get_addr(ti: *mut TlsIndex) -> *mut c_void;
}

/// Finds the loaded object whose thread-local block (this thread's) holds `address`:
/// returns its TLS module id and the offset of `address` in the block.
fn tls_location(address: u64) -> Option<(usize, usize)> {
    struct Search {
        address: usize,
        found: Option<(usize, usize)>,
    }
    unsafe extern "C" fn visit(info: *mut libc::dl_phdr_info, _size: usize, data: *mut c_void) -> c_int {
        // SAFETY: data is the Search below; info describes one loaded object for this call.
        let (search, info) = unsafe { (&mut *(data as *mut Search), &*info) };
        if info.dlpi_tls_modid == 0 || info.dlpi_tls_data.is_null() {
            return 0;
        }
        // SAFETY: dlpi_phdr has dlpi_phnum entries.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let Some(tls) = phdrs.iter().find(|p| p.p_type == libc::PT_TLS) else { return 0 };
        let start = info.dlpi_tls_data as usize;
        if search.address >= start && search.address < start + tls.p_memsz as usize {
            search.found = Some((info.dlpi_tls_modid, search.address - start));
            return 1;
        }
        0
    }
    let mut search = Search { address: address as usize, found: None };
    // SAFETY: visit only reads the objects' descriptions and writes to search, which outlives
    // the call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut search as *mut Search).cast()) };
    search.found
}

/// The emulated-TLS control object for thread-local `name`, defined by a shared library, given
/// the symbol's address as `dlsym` returned it in this thread (this thread's copy); `None` if
/// that is not a thread-local.
pub fn foreign_tls_control(name: &str, address: u64) -> Option<u64> {
    let mut guard = FOREIGN_TLS.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(&c) = map.get(name) {
        return Some(c as u64);
    }
    let (module, offset) = tls_location(address)?;
    let index = Box::into_raw(Box::new(TlsIndex { module, offset }));
    let control = Box::into_raw(Box::new(EmutlsControl {
        size: 0,
        align: FOREIGN_ALIGN,
        loc: index.cast(),
        templ: std::ptr::null_mut(),
    }));
    // Both boxes are leaked on purpose: JIT'd code may keep their addresses forever.
    map.insert(name.to_string(), control as usize);
    Some(control as u64)
}

extern "C" {
    #[link_name = "__emutls_get_address"]
    fn libgcc_emutls_get_address(control: *mut c_void) -> *mut c_void;
}

/// This thread's copy of the thread-local whose emulated-TLS control object (a module's
/// `__emutls_v.<name>`, or one jitload made) is at `control`.
///
/// # Safety
/// `control` must be the address of such a control object, alive for the call.
pub unsafe fn thread_local_address(control: u64) -> u64 {
    emutls_get_address(control as usize as *mut c_void) as usize as u64
}

/// What JIT'd code gets for `__emutls_get_address`: libgcc's, except for the control
/// objects jitload made for shared libraries' thread-locals.
pub(crate) extern "C" fn emutls_get_address(control: *mut c_void) -> *mut c_void {
    let c = control as *mut EmutlsControl;
    // SAFETY: JIT'd code passes a control object (`__emutls_v.*`): one of a module's, laid
    // out by LLVM, or one made by foreign_tls_control.
    if unsafe { (*c).align } == FOREIGN_ALIGN {
        // SAFETY: loc is the leaked TlsIndex of a loaded library's thread-local.
        return unsafe { __tls_get_addr((*c).loc.cast()) };
    }
    // SAFETY: a module's control object, in libgcc's layout.
    unsafe { libgcc_emutls_get_address(control) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This thread's address of libstdc++'s thread-local `std::__once_callable`.
    fn once_callable_here() -> u64 {
        let lib = crate::dynlib::SharedLibrary::open("libstdc++.so.6").expect("libstdc++ is installed");
        lib.symbol("_ZSt15__once_callable").expect("libstdc++ defines it")
    }

    #[test]
    fn a_library_thread_local_is_reached_per_thread() {
        let here = once_callable_here();
        let control = foreign_tls_control("_ZSt15__once_callable", here).expect("it is a thread-local");
        assert_eq!(emutls_get_address(control as *mut c_void) as u64, here);
        let (there, via_control) = std::thread::spawn(move || {
            (once_callable_here(), emutls_get_address(control as *mut c_void) as u64)
        })
        .join()
        .unwrap();
        assert_eq!(via_control, there, "the other thread gets its own copy");
        assert_ne!(there, here);
    }

    #[test]
    fn an_ordinary_symbol_is_not_a_thread_local() {
        let lib = crate::dynlib::SharedLibrary::open("libstdc++.so.6").unwrap();
        let address = lib.symbol("_ZSt9terminatev").unwrap();
        assert_eq!(foreign_tls_control("_ZSt9terminatev", address), None);
    }

    #[test]
    fn exceptions_are_described() {
        let e = CxxException { type_name: "std::runtime_error".into(), what: "boom".into() };
        assert_eq!(e.to_string(), "C++ exception std::runtime_error: boom");
        let e = CxxException { type_name: "int".into(), what: String::new() };
        assert_eq!(e.to_string(), "C++ exception int");
    }
}
