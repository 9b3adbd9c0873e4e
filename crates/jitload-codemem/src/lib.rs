//! Executable memory for everything jitload runs that it wrote itself: the stencils' call
//! wrappers and callback thunks, the warm path's loaded images (jitload-objload), the engine's
//! stubs. One place decides how written memory becomes executable, what a page is, and when
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
//! # Not covered: code ORC links
//!
//! The engine's compiled code is linked by ORC's JITLink (`ObjectLinkingLayer`), whose default
//! `InProcessMemoryManager` maps and `mprotect`s through `sys::Memory`, not through this crate,
//! so `dualmap` does not reach it: on a host refusing `mprotect` to executable, the engine's
//! links would fail (not tried on such a host), while the warm path, stubs and wrappers work. The C API's
//! `LLVMOrcCreateRTDyldObjectLinkingLayerWithMCJITMemoryManagerLikeCallbacks` would mean
//! giving up JITLink for RuntimeDyld. What it takes instead, in the engine's C++ shim: an
//! `orc::MemoryMapper` whose `reserve`/`initialize`/`release` call back into this crate
//! (map, seal each segment by its protection, unmap; `initialize` also runs the allocation's
//! finalize actions, as `InProcessMemoryMapper` does), wrapped in a
//! `MapperJITLinkMemoryManager`, and an `ObjectLinkingLayer` built with it through
//! `LLVMOrcLLJITBuilderSetObjectLinkingLayerCreator` (adding the EH-frame registration plugin
//! LLJIT's default creator adds).
//!
//! # Memory shapes
//!
//! * [`block`]: a block of code of its own, and small blocks sharing pooled pages ([`place`]).
//! * [`Image`]: one mapping split into read+execute, read-only and read+write parts (a loaded
//!   object file; the engine's stub blocks: code, then the slots they jump through).
//!
//! # Reclamation: [`grace`], and the two cases it cannot see
//!
//! Code may be freed only once nothing can be running in it. The scheme is [`grace`]'s epochs:
//! every call into code that can be freed is bracketed by [`grace::enter`] / [`grace::exit`]
//! (inline in the wrapper stencils: one store of the epoch, no fence where the kernel has
//! `membarrier`); [`grace::retire`] queues "free this" after the code was unlinked, and the
//! item runs once no thread is inside a call that began before that. The engine frees
//! replaced and removed functions' code this way (`Library.function(...)` calls are guarded).
//!
//! Two kinds of code are called by C directly, never through a guard, so no epoch can record
//! a thread inside them; each is freed by its owner on a different trigger:
//!
//! * **A module's code** (jitload-pyinit, `release_later`): freed when the last module object
//!   made from it is deallocated, which CPython reports through the definition's `m_free`:
//!   code that runs *inside* the module (its own `m_free`, or module code dropping the last
//!   reference). The trigger is a CPython pending call: it runs between bytecodes, when no C
//!   frame of that code is on the stack. Other threads cannot be inside it: running module
//!   code holds a reference to one of its objects, which keeps the module alive.
//! * **A callback thunk's code** (jitload-py, `Drop for Thunk`): a thunk may drop the last
//!   reference to itself from its own callable, and a call on a thread without the GIL runs
//!   a few instructions of the thunk after releasing it. The thunk's cell counts the calls
//!   inside (maintained with the GIL held); the code is unmapped once the count was zero for
//!   50 ms, a bound on the instructions after the release (the only time-based trigger:
//!   replacing it needs the thunk's GIL release and return moved into shared code that is
//!   never freed, then an epoch guard around the whole call).

pub mod block;
pub mod grace;
mod image;
mod provider;
mod recording;

pub use block::{place, CodeMemory, PlaceError};
pub use image::Image;
pub use provider::{configure, mode, page_size, provider, set_provider, DualMap, Mode, Mprotect, Provider};
pub use recording::{Event, Op, Recording};
