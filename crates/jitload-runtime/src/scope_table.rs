//! One process-wide symbol scope shared by two native modules.
//!
//! jitload ships two extension modules: `_fastload`, which links cached objects without
//! libLLVM, and `_native`, which holds the LLVM engine. Both link this crate statically, so
//! each has its own copy of every `static`. The scope every import resolves against (other
//! modules' exports, the libraries the user added) and the module ids must still be one per
//! process, so the copy in `_fastload` owns them, and `_native` reaches it through a table of
//! `extern "C"` functions that `_fastload` exports in a capsule ([`install`] at `_native`'s
//! initialisation). A Rust-level `&ScopeState` cannot cross: the two copies were compiled
//! separately and only a C ABI is guaranteed to match. Without an installed table (Rust
//! tests, a process that never imported `_fastload`) the local copy is the owner.
//!
//! Every entry point catches panics: they are FFI edges.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};

use crate::dynlib::SharedLibrary;
use crate::scope_state::ScopeState;

/// A borrowed UTF-8 string crossing the table.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Str {
    ptr: *const u8,
    len: usize,
}

impl Str {
    fn new(s: &str) -> Str {
        Str { ptr: s.as_ptr(), len: s.len() }
    }

    /// # Safety
    /// `self` must come from [`Str::new`] on a string that outlives the returned borrow.
    unsafe fn get<'a>(self) -> &'a str {
        if self.len == 0 {
            return "";
        }
        // SAFETY: per the contract, ptr/len describe a live &str.
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(self.ptr, self.len)) }
    }
}

/// Receives strings from the owner (a `Vec<String>` on the caller's side).
type Push = extern "C" fn(sink: *mut c_void, s: Str);

/// The table: a version stamp, then one function per operation on the process scope.
#[repr(C)]
pub struct ScopeTable {
    /// [`STAMP`] of the copy that made the table: a mismatch (modules from two builds) is refused.
    stamp: u64,
    next_id: extern "C" fn() -> u64,
    lookup_export: extern "C" fn(Str) -> u64,
    lookup_user_library: extern "C" fn(Str) -> u64,
    add_user_library: extern "C" fn(name: Str, path: Str, handle: usize),
    user_libraries: extern "C" fn(sink: *mut c_void, push: Push),
    add_exports: extern "C" fn(owner: u64, path: Str, weak: *const Str, weak_len: usize, names: *const Str, addresses: *const u64, len: usize),
    remove_exports: extern "C" fn(owner: u64) -> bool,
    clash: extern "C" fn(name: Str, sink: *mut c_void, push: Push) -> bool,
}

/// Changes whenever the table's layout or meaning does ([`LAYOUT`]) and with the crate
/// version, so modules from two different builds never share a table.
const STAMP: u64 = fnv1a(env!("CARGO_PKG_VERSION").as_bytes(), LAYOUT);
const LAYOUT: u64 = 1;

const fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    h
}

/// The name of the capsule `_fastload` exports its table in.
pub const CAPSULE_NAME: &std::ffi::CStr = c"jitload._fastload._PROCESS_SCOPE";

static SCOPE: LazyLock<ScopeState> = LazyLock::new(ScopeState::default);
static IDS: AtomicU64 = AtomicU64::new(1);

fn guarded<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

extern "C" fn own_next_id() -> u64 {
    IDS.fetch_add(1, Ordering::Relaxed)
}

extern "C" fn own_lookup_export(name: Str) -> u64 {
    // SAFETY: the caller passes a Str of a live string (see the wrappers below).
    guarded(0, || SCOPE.lookup_export(unsafe { name.get() }).unwrap_or(0))
}

extern "C" fn own_lookup_user_library(name: Str) -> u64 {
    // SAFETY: as above.
    guarded(0, || SCOPE.lookup_user_library(unsafe { name.get() }).unwrap_or(0))
}

extern "C" fn own_add_user_library(name: Str, path: Str, handle: usize) {
    guarded((), || {
        // SAFETY: as above.
        let (name, path) = unsafe { (name.get().to_string(), path.get().to_string()) };
        SCOPE.add_user_library(Arc::new(SharedLibrary::from_raw(name, path, handle)));
    })
}

extern "C" fn own_user_libraries(sink: *mut c_void, push: Push) {
    guarded((), || {
        for path in SCOPE.user_libraries() {
            push(sink, Str::new(&path));
        }
    })
}

extern "C" fn own_add_exports(owner: u64, path: Str, weak: *const Str, weak_len: usize, names: *const Str, addresses: *const u64, len: usize) {
    guarded((), || {
        // SAFETY: the wrapper passes slices' pointers and lengths, of live strings.
        let (path, weak, names, addresses) =
            unsafe { (path.get(), slice(weak, weak_len).iter().map(|s| s.get()).collect::<Vec<_>>(), slice(names, len), slice(addresses, len)) };
        // SAFETY: as above.
        let symbols = names.iter().zip(addresses).map(|(n, &a)| (unsafe { n.get() }.to_string(), a));
        SCOPE.add_exports(owner, path, &weak, symbols);
    })
}

extern "C" fn own_remove_exports(owner: u64) -> bool {
    guarded(false, || SCOPE.remove_exports(owner))
}

extern "C" fn own_clash(name: Str, sink: *mut c_void, push: Push) -> bool {
    // SAFETY: as above.
    guarded(false, || match SCOPE.clash(unsafe { name.get() }) {
        Some(files) => {
            files.iter().for_each(|f| push(sink, Str::new(f)));
            true
        }
        None => false,
    })
}

/// # Safety
/// `ptr` must point to `len` valid `T`s (or `len` be 0).
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if len == 0 {
        return &[];
    }
    // SAFETY: per the contract.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

static OWN: ScopeTable = ScopeTable {
    stamp: STAMP,
    next_id: own_next_id,
    lookup_export: own_lookup_export,
    lookup_user_library: own_lookup_user_library,
    add_user_library: own_add_user_library,
    user_libraries: own_user_libraries,
    add_exports: own_add_exports,
    remove_exports: own_remove_exports,
    clash: own_clash,
};

static INSTALLED: OnceLock<&'static ScopeTable> = OnceLock::new();

fn table() -> &'static ScopeTable {
    INSTALLED.get_or_init(|| &OWN)
}

/// This copy's table, to hand to the other module (it stays valid for the process).
pub fn own_table() -> *const c_void {
    (&OWN as *const ScopeTable).cast()
}

/// Makes this copy use the process scope of the copy that made `table` (from
/// [`own_table`]). Must run before anything resolves a symbol here; refused if this copy
/// already uses another table or the table comes from a different build.
///
/// # Safety
/// `table` must come from [`own_table`] in a module that is never unloaded.
pub unsafe fn install(table: *const c_void) -> Result<(), String> {
    let table = table.cast::<ScopeTable>();
    // SAFETY: per the contract, a static ScopeTable; the stamp is read first and is a u64 in
    // every version of the layout.
    let stamp = unsafe { (*table).stamp };
    if stamp != STAMP {
        return Err(format!("jitload's native modules come from different builds (scope table {stamp:#x}, expected {STAMP:#x})"));
    }
    // SAFETY: stamp matched, so it is this layout; it lives for the process.
    let table: &'static ScopeTable = unsafe { &*table };
    let current = INSTALLED.get_or_init(|| table);
    if !std::ptr::eq(*current, table) {
        return Err("the process symbol scope was used before jitload's modules were connected".into());
    }
    Ok(())
}

extern "C" fn push_string(sink: *mut c_void, s: Str) {
    // SAFETY: sink is the Vec<String> of the collecting wrapper below, alive for the call;
    // s is a live string for the duration of this callback.
    unsafe { (*sink.cast::<Vec<String>>()).push(s.get().to_string()) };
}

/// A fresh id, unique in the process, for a module or library.
pub fn next_id() -> u64 {
    (table().next_id)()
}

pub(crate) fn lookup_export(symbol: &str) -> Option<u64> {
    Some((table().lookup_export)(Str::new(symbol))).filter(|&a| a != 0)
}

pub(crate) fn lookup_user_library(symbol: &str) -> Option<u64> {
    Some((table().lookup_user_library)(Str::new(symbol))).filter(|&a| a != 0)
}

pub(crate) fn add_user_library(library: &SharedLibrary) {
    (table().add_user_library)(Str::new(&library.name), Str::new(&library.path), library.handle())
}

pub(crate) fn user_libraries() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    (table().user_libraries)((&mut out as *mut Vec<String>).cast(), push_string);
    out
}

pub(crate) fn add_exports(owner: u64, path: &str, weak: &[&str], symbols: &[(String, u64)]) {
    let weak: Vec<Str> = weak.iter().map(|w| Str::new(w)).collect();
    let names: Vec<Str> = symbols.iter().map(|(n, _)| Str::new(n)).collect();
    let addresses: Vec<u64> = symbols.iter().map(|&(_, a)| a).collect();
    (table().add_exports)(owner, Str::new(path), weak.as_ptr(), weak.len(), names.as_ptr(), addresses.as_ptr(), names.len())
}

pub(crate) fn remove_exports(owner: u64) -> bool {
    (table().remove_exports)(owner)
}

pub(crate) fn clash(symbol: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    (table().clash)(Str::new(symbol), (&mut out as *mut Vec<String>).cast(), push_string).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_round_trip_through_the_table() {
        let owner = next_id();
        add_exports(owner, "a.bc", &[], &[("jitload_table_test_f".into(), 0x1234)]);
        assert_eq!(lookup_export("jitload_table_test_f"), Some(0x1234));
        assert_eq!(lookup_export("jitload_table_test_missing"), None);
        let other = next_id();
        assert_ne!(owner, other);
        add_exports(other, "b.bc", &[], &[("jitload_table_test_f".into(), 0x5678)]);
        assert_eq!(clash("jitload_table_test_f"), Some(vec!["a.bc".to_string(), "b.bc".to_string()]));
        // The first was linked against (looked up), so it stays.
        assert!(!remove_exports(owner));
        assert!(remove_exports(other));
        assert_eq!(clash("jitload_table_test_f"), None);
    }

    #[test]
    fn a_table_from_another_build_is_refused() {
        let foreign = ScopeTable { stamp: STAMP ^ 1, ..OWN };
        // SAFETY: a valid table (only its stamp differs); refused before it is kept.
        let err = unsafe { install((&foreign as *const ScopeTable).cast()) }.unwrap_err();
        assert!(err.contains("different builds"), "{err}");
    }
}
