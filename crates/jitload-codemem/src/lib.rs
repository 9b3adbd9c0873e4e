//! Executable memory for everything jitload runs that it wrote or linked itself: the stencils'
//! call wrappers and callback thunks, the warm path's loaded images (jitload-objload), the
//! engine's stubs and the code ORC links for it. One place decides how written memory becomes executable, what a page is, and when
//! code may be freed.
//!
//! # W^X: providers
//!
//! No page is ever writable and executable at once, and executable pages never become writable
//! again. Code is written into an ordinary read+write mapping at the address it will run at,
//! then *sealed* by a [`Provider`]:
//!
//! * [`Mprotect`] (the default): `mprotect` to read+execute.
//! * [`DualMap`] (hosts whose policy forbids making written anonymous memory executable, e.g.
//!   SELinux `deny_execmem`, PaX MPROTECT): the written bytes are copied into a `memfd`, and
//!   the memfd is mapped read+execute over them (`MAP_FIXED`, one atomic replacement). The
//!   file is the second mapping of the classic dual-map scheme; it is written with `write(2)`,
//!   so no writable view of executable memory exists at any time, and the code still runs at
//!   the address it was written for (relocations need no second address).
//! * [`Recording`] (tests): wraps another provider and records every transition together with
//!   the protections the kernel reports for the range afterwards, so a test can assert that
//!   W^X was never violated ([`Recording::violations`]).
//!
//! [`configure`] chooses once, at start-up ([`Mode`]: `auto`, `mprotect`, `dualmap`; jitload's
//! options read `JITLOAD_CODE_MEMORY`). In `auto` mode the first `mprotect` refused with
//! `EACCES`/`EPERM` switches the process to [`DualMap`], and the memory being sealed is sealed
//! that way at once (it is still written and not yet running), so callers never retry.
//! This crate reads no environment.
//!
//! # Code ORC links
//!
//! The engine's compiled code is linked by ORC's JITLink (`ObjectLinkingLayer`), whose memory
//! manager the engine replaces (its C++ shim, `shim/jit_memory.cpp`): a
//! `MapperJITLinkMemoryManager` over an `orc::MemoryMapper` whose reserve / initialize /
//! deinitialize / release call back into this crate (`src/llvm/jit_memory.rs`): reservations
//! are [`Provider::map`]ped, each segment sealed by its protection (executable ones by the
//! provider, so `dualmap` reaches them), freed ranges replaced by fresh pages
//! ([`Provider::map_fresh`]: never made writable again), reservations unmapped. Debuggers
//! cannot put software breakpoints into `dualmap` code (ptrace cannot write a read-only
//! shared mapping): use hardware ones (`hbreak` in gdb).
//!
//! # Memory shapes
//!
//! * [`block`]: a block of code of its own, and small blocks sharing pooled pages ([`place`]).
//! * [`Image`]: one mapping split into read+execute, read-only and read+write parts (a loaded
//!   object file; the engine's stub blocks: code, then the slots they jump through).
//!
//! # Reclamation: [`grace`], and the one case it cannot see
//!
//! Code may be freed only once nothing can be running in it. The scheme is [`grace`]'s epochs:
//! every stretch of execution in code that can be freed is bracketed by [`grace::enter`] /
//! [`grace::exit`] (per-thread words; a thread's outermost call publishes the epoch it began
//! in); [`grace::retire`] queues "free this" after the code was unlinked, and the item runs
//! once no thread is inside a call that began before that: right away when none is, else at
//! the exit of the last such call (the reclaimer sets a wake bit in that thread's flags word,
//! which every exit tests), or at a later retirement. Who brackets what:
//!
//! * **Engine functions** (jitload-engine, `Library.function(...)`): the wrapper stencils
//!   enter and exit inline around the call (one store of the epoch, no fence where the kernel
//!   has `membarrier`). The engine retires replaced and removed functions' code.
//! * **Callback thunks** (jitload-stencils' `thunk.c`, jitload-py's `Thunk`): C calls a
//!   thunk directly, and its code may be freed while a call is inside it: its callable drops
//!   the last reference to the thunk, or another thread does while this one waits for the
//!   GIL, runs the callable, or releases the GIL (a new thread state's release runs Python
//!   code). A thunk's entry enters before anything else, and it leaves by jumping (a tail
//!   call) to the host's `jitload_fast_cb_leave`, never-freed code that exits after the
//!   thunk's last instruction ran. A dead thunk's code and cell are retired. (A call that
//!   begins while another thread drops its thunk is a call through a dangling pointer, as
//!   with any freed function.)
//!
//! A call that runs long (an event loop inside a callback, a long native function) holds back
//! the freeing of everything retired after it began, in this library's process-wide domain:
//! memory waits, nothing is freed early.
//!
//! The case no epoch can see: **an extension module's code** on the warm path
//! (jitload-pyinit, `release_later`). CPython calls it directly (its functions, types, slots),
//! so no thread records being inside it; it is freed when the last module object made from
//! it is deallocated, which CPython reports through the definition's `m_free`, called from
//! the deallocation itself, and freeing runs the module's destructors, which may need the
//! GIL. So the trigger is a CPython pending call, with the GIL: it runs between bytecodes,
//! after the deallocation returned. Other threads cannot be inside the code: running module
//! code holds a reference to one of its objects, which keeps the module alive; objects that
//! can outlive the module (`atexit` handlers, static types...) pin the code for the life of
//! the process (jitload-runtime's `outlive`).

pub mod block;
pub mod grace;
mod image;
mod provider;
mod recording;

pub use block::{place, CodeMemory, PlaceError};
pub use image::Image;
pub use provider::{configure, mode, page_size, provider, set_provider, DualMap, Mode, Mprotect, Provider};
pub use recording::{Event, Op, Recording};
