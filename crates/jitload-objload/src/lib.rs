//! An in-memory linker and loader for x86-64 ELF relocatable objects, with no LLVM.
//!
//! jitload stores the objects LLVM compiles for bitcode extension modules in a persistent
//! cache. Loading a cached object through ORC means loading libLLVM (~24 ms) and creating a
//! JIT session, which costs more than the whole `.so` import it competes with. This crate
//! links such an object directly: it lays the sections out in one mapping (code, read-only
//! data, writable data; each class page-aligned, all within ±2 GB of each other), resolves
//! undefined symbols through a caller-supplied function, applies every relocation, builds a
//! GOT and call stubs where needed, registers `.eh_frame` with the unwinder and hands back
//! the addresses of the defined global symbols plus the constructors to run.
//!
//! [`LoadedObject::load_all`] links several objects as one image, as a static link of them
//! in that order would; this is how the cache's split modules load (above -O0 the engine
//! splits a large module with LLVM's SplitModule and compiles the pieces in parallel; the
//! pieces reference each other's symbols, locals promoted to hidden globals, circularly and
//! with 32-bit PC-relative relocations, which one mapping keeps in reach).
//! [`LoadedObject::load`] is `load_all` of one object.
//!
//! ```no_run
//! # let bytes: Vec<u8> = Vec::new();
//! let resolve = |name: &str| -> Option<u64> { None /* dlsym, jitload's scope, ... */ };
//! let object = jitload_objload::LoadedObject::load(&bytes, &resolve)?;
//! for &f in object.init_functions() {
//!     // SAFETY (for the caller): a constructor of the object, which stays loaded.
//!     let f: extern "C" fn() = unsafe { std::mem::transmute(f as usize) };
//!     f();
//! }
//! let init = object.symbol("PyInit_spam");
//! // The pieces of a split module, linked as one image:
//! # let (piece0, piece1): (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::new());
//! let module = jitload_objload::LoadedObject::load_all(&[&piece0, &piece1], &resolve)?;
//! # Ok::<(), jitload_objload::LoadError>(())
//! ```
//!
//! What it accepts: x86-64 little-endian `ET_REL` objects as LLVM 22 emits them for the
//! host (PIC, small code model; medium and large code models too), and clang-22 `-c` output
//! with or without `-ffunction-sections -fdata-sections`. Refused with a clear error:
//! thread-local storage, GNU indirect functions, `.ctors`/`.dtors`, REL/CREL relocation
//! sections on loaded sections, and any relocation type not matched explicitly (see the
//! crate's `reloc` module and [`relocation_name`]). x86-64 only: elsewhere [`LoadedObject::load`] returns
//! [`LoadError::Unsupported`].
//!
//! # Linking a set
//!
//! - **Definitions.** Each global name binds to one definition in the set: a strong
//!   (`STB_GLOBAL`) definition beats COMMON symbols, which beat weak (`STB_WEAK`,
//!   `STB_GNU_UNIQUE`) definitions; among weak definitions the first (in object order, then
//!   symbol-table order) wins; COMMON symbols of one name are one symbol with the largest
//!   size and alignment. Two strong definitions of a name are [`LoadError::DuplicateSymbol`]
//!   (with both object indices). References to a name, including those through a weak or
//!   COMMON definition that lost, go to the winner. Local symbols never bind across objects.
//! - **Undefined symbols** bind to the set's definition, else to `resolve` (called once per
//!   remaining name, before anything is mapped), else a weak reference is 0 and
//!   `__dso_handle` is the loader's own (one for the set); `_GLOBAL_OFFSET_TABLE_` is the
//!   image's single GOT. Every name found nowhere is reported at once in
//!   [`LoadError::Unresolved`].
//! - **Exports** ([`LoadedObject::symbol`], [`LoadedObject::symbols`],
//!   [`LoadedObject::symbol_info`]) are the winning definitions of the whole set.
//! - **Constructors** ([`LoadedObject::init_functions`]): the `.preinit_array` entries, then
//!   the `.init_array` ones, each sorted by priority across the whole set (the order of a
//!   static link: a piece's priority-101 constructor runs before another piece's
//!   priority-200 one, as in the unsplit module); at equal priority, and for the
//!   unprioritised `.init_array` (after every priority), object order then section order.
//!   Destructors: the `.fini_array` entries in that order, reversed.
//! - **Unwind information**: every object's `.eh_frame` is checked and registered.
//! - **Errors** about one object of a set of several name its index (`object 1: ...`).
//!
//! The input is parsed defensively: every offset and size is bounds-checked, and malformed
//! input yields a [`LoadError`], never a panic or an out-of-bounds write. Loading runs no
//! code of the object. `.eh_frame` is walked the way libgcc will walk it (record bounds, CIE
//! links, pointer encodings libgcc handles without aborting, every FDE inside this object's
//! code) before it is registered, since the unwinder trusts it completely.
//!
//! # On jitload's warm import path
//!
//! A cache hit gives `Compiled { object, exports, undefined, dependent_libraries, has_ctors,
//! has_dtors }` (a split module: several objects). With this crate:
//! `LoadedObject::load_all(&objects, &|n| scope.resolve(n))`
//! (the module's scope: jitload exports, process, dependent libraries, user libraries,
//! libgcc_s, the libc_nonshared shims); on `Unresolved` (e.g. a compiler-rt helper that
//! only the LLVM path's builtins archive provides) or any other error, fall back to the
//! LLVM path. Then `symbol(required)` is the init function, `symbol("__jitload_ctors")` /
//! `symbol("__jitload_dtors")` the lowered constructors and destructors when the flags say
//! so, and `symbol(e)` for each export feeds the shared scope. Keep the `LoadedObject`
//! where the ORC path keeps its resource tracker; dropping it frees the module.
//!
//! For the warm path to avoid libLLVM entirely, the code that runs it must not link libLLVM
//! (a `.so` that links it pays for loading it when imported), and the cache key must be
//! computable without LLVM: see [`host::cpu_fingerprint`] for the CPU part.

mod bind;
mod ehframe;
pub mod host;
mod link;
mod load;
mod reloc;
mod relocate;

pub use reloc::relocation_name;

/// Why an object could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a well-formed x86-64 relocatable ELF object.
    #[error("malformed object: {0}")]
    Malformed(String),
    /// A well-formed object uses something this loader does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A relocation type the loader does not know (or that only dynamic linkers process).
    #[error("unsupported relocation {} ({kind}) in {section} against '{symbol}'", relocation_name(*kind))]
    UnsupportedRelocation { kind: u32, section: String, symbol: String },
    /// A relocation's value does not fit its field (e.g. a 32-bit absolute address).
    #[error("relocation {} in {section} at offset {offset:#x} against '{symbol}' does not fit: {value:#x}", relocation_name(*kind))]
    RelocationOverflow { kind: u32, section: String, offset: u64, symbol: String, value: i128 },
    /// Undefined symbols that `resolve` did not find (all of them, sorted).
    #[error("undefined symbols: {}", .0.join(", "))]
    Unresolved(Vec<String>),
    /// Two strong definitions of one global name in a set ([`LoadedObject::load_all`]):
    /// the indices of the objects that define it (equal if one object defines it twice).
    #[error("symbol '{name}' is defined in object {first} and in object {second}")]
    DuplicateSymbol { name: String, first: usize, second: usize },
    /// Mapping or protecting memory failed.
    #[error("cannot map memory for the object: {0}")]
    Memory(String),
}

/// The defined global symbols: names in one buffer, entries sorted by name (one
/// allocation each instead of one per symbol; lookups by binary search).
struct Exports {
    names: String,
    /// (start of the name in `names`, its length, the symbol).
    entries: Vec<(u32, u32, SymbolInfo)>,
}

impl Exports {
    /// From (name, symbol) pairs in symbol-table order; the first definition of a name wins.
    fn new(mut symbols: Vec<(&str, SymbolInfo)>) -> Exports {
        symbols.sort_by(|a, b| a.0.cmp(b.0)); // stable: the first of equal names stays first
        symbols.dedup_by(|later, first| later.0 == first.0);
        let mut names = String::with_capacity(symbols.iter().map(|s| s.0.len()).sum());
        let mut entries = Vec::with_capacity(symbols.len());
        for (name, info) in symbols {
            entries.push((names.len() as u32, name.len() as u32, info));
            names.push_str(name);
        }
        Exports { names, entries }
    }

    fn name(&self, entry: &(u32, u32, SymbolInfo)) -> &str {
        self.names.get(entry.0 as usize..(entry.0 + entry.1) as usize).unwrap_or("")
    }

    fn get(&self, name: &str) -> Option<SymbolInfo> {
        let i = self.entries.binary_search_by(|e| self.name(e).cmp(name)).ok()?;
        Some(self.entries[i].2)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, SymbolInfo)> + '_ {
        self.entries.iter().map(|e| (self.name(e), e.2))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// What kind of thing a symbol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolKind {
    Function,
    Data,
    Other,
}

/// A defined global symbol of a loaded object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolInfo {
    pub address: u64,
    pub size: u64,
    pub kind: SymbolKind,
    /// A weak (or `STB_GNU_UNIQUE`) definition: another module may define the name too
    /// (C++ inline functions and templates), so that is not a clash.
    pub weak: bool,
}

/// Counters describing one load (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Bytes mapped for the image.
    pub image_size: usize,
    /// GOT slots allocated.
    pub got_entries: usize,
    /// Call stubs allocated (one per external function that a call could need it for).
    pub stubs: usize,
    /// Calls that went through a stub because the target was out of ±2 GB reach.
    pub calls_through_stubs: usize,
    /// GOT loads, calls and jumps relaxed to direct references.
    pub relaxed: usize,
    /// `.eh_frame` sections registered with the unwinder.
    pub frames_registered: usize,
}

/// A linked object (or set of objects, one image) in memory. Dropping it runs the handlers its code registered with
/// `__cxa_atexit` against the object's own `__dso_handle` (C++ static destructors, as
/// `dlclose` does), deregisters its unwind information and unmaps its memory: the owner must
/// make sure that no code or data of the object is in use then (and run
/// [`LoadedObject::fini_functions`] first if wanted; drop does not).
pub struct LoadedObject {
    symbols: Exports,
    init: Vec<u64>,
    fini: Vec<u64>,
    code: std::ops::Range<u64>,
    stats: LoadStats,
    /// Registered `.eh_frame` sections (addresses inside `mapping`).
    frames: Vec<u64>,
    /// The object's own `__dso_handle` (when `resolve` did not supply one): what C++ code
    /// passes to `__cxa_atexit`, finalised on drop as `dlclose` does.
    dso_handle: Option<u64>,
    /// `None` for an object with nothing to map.
    mapping: Option<jitload_codemem::Image>,
}

impl LoadedObject {
    /// Links `bytes` (an x86-64 ELF relocatable object) into fresh memory. `resolve` gives
    /// the address of each undefined symbol (`None`: not found; a missing weak symbol is then
    /// 0, any other missing symbol is reported in [`LoadError::Unresolved`]). It is called
    /// once per undefined name, before any memory is mapped. The same as
    /// [`LoadedObject::load_all`] with a set of one.
    pub fn load(bytes: &[u8], resolve: &dyn Fn(&str) -> Option<u64>) -> Result<LoadedObject, LoadError> {
        LoadedObject::load_all(&[bytes], resolve)
    }

    /// Links a set of objects as one image, the way a static link of them (in this order)
    /// would: see the crate documentation for the rules. Errors about one object of a set of
    /// several name it by its index (`object 1: ...`).
    pub fn load_all(objects: &[&[u8]], resolve: &dyn Fn(&str) -> Option<u64>) -> Result<LoadedObject, LoadError> {
        if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            return Err(LoadError::Unsupported("loading objects is implemented for x86-64 Linux only".into()));
        }
        // The ELF structures are read in place and need 8-byte alignment: misaligned
        // objects are copied.
        let copies: Vec<Option<Vec<u64>>> = objects.iter().map(|bytes| aligned_copy(bytes)).collect();
        let views: Vec<&[u8]> = objects
            .iter()
            .zip(&copies)
            .map(|(&bytes, copy)| match copy {
                None => bytes,
                // SAFETY: the copy owns at least bytes.len() initialised bytes (u64 words have
                // no invalid bit patterns) and lives until the end of this function.
                Some(words) => unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), bytes.len()) },
            })
            .collect();
        link::load_all(&views, resolve)
    }

    /// Address of a defined global (or weak) symbol.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|s| s.address)
    }

    /// Address, size and kind of a defined global symbol (of the whole set).
    pub fn symbol_info(&self, name: &str) -> Option<SymbolInfo> {
        self.symbols.get(name)
    }

    /// Every defined global symbol of the set (each name once), in no particular order.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, SymbolInfo)> + '_ {
        self.symbols.iter()
    }

    /// The constructors (`.preinit_array`, `.init_array` by priority across the set: see the
    /// crate documentation), in the order to call them (`extern "C" fn()`). Loading does not
    /// run them.
    pub fn init_functions(&self) -> &[u64] {
        &self.init
    }

    /// The destructors (`.fini_array`), in the order to call them.
    pub fn fini_functions(&self) -> &[u64] {
        &self.fini
    }

    /// The executable part of the image (for perf maps, debuggers, "is this our code").
    pub fn code_range(&self) -> std::ops::Range<u64> {
        self.code.clone()
    }

    /// Start and length of the whole image (code, read-only data, writable data).
    pub fn image(&self) -> (u64, usize) {
        self.mapping.as_ref().map_or((0, 0), |m| (m.address(), m.len()))
    }

    pub fn stats(&self) -> LoadStats {
        self.stats
    }
}

/// A copy of `bytes` in 8-byte aligned memory, when they are not aligned.
fn aligned_copy(bytes: &[u8]) -> Option<Vec<u64>> {
    if bytes.as_ptr() as usize % 8 == 0 {
        return None;
    }
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    // SAFETY: `words` owns at least bytes.len() bytes; u64 has no invalid bit patterns and
    // the two buffers do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr().cast::<u8>(), bytes.len()) };
    Some(words)
}

extern "C" {
    fn __cxa_finalize(dso_handle: *mut std::ffi::c_void);
}

impl Drop for LoadedObject {
    fn drop(&mut self) {
        if let Some(handle) = self.dso_handle {
            // SAFETY: the handle is an address inside this object that only its own code
            // passes to `__cxa_atexit`; glibc runs and forgets exactly those handlers (the C++
            // static destructors), as `dlclose` does, while the code is still mapped. Without
            // this, exit would call into unmapped memory.
            unsafe { __cxa_finalize(handle as *mut std::ffi::c_void) };
        }
        for &frame in self.frames.iter().rev() {
            // SAFETY: each frame was registered by `load` and lies in `self.mapping`, which is
            // still mapped (it is dropped after this body) and was never written since.
            unsafe { ehframe::deregister(frame as *const u8) };
        }
    }
}

impl std::fmt::Debug for LoadedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (base, len) = self.image();
        f.debug_struct("LoadedObject")
            .field("image", &format_args!("{base:#x}+{len:#x}"))
            .field("symbols", &self.symbols.len())
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loaded_objects_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::LoadedObject>();
    }
}
