//! Signature -> the list of stencils (and their hole values) for a wrapper or a thunk.

use crate::frames::{int_slot, sse_slot, stack_slot, ThunkCell, MAX_BUFFERS, MAX_STACK_ARGS};
use crate::patch::{emit, CodeBlock, Piece};
use crate::sig::{CType, Signature};
use crate::table::id;
use crate::{sym, Error, Runtime};

/// What runs around every call of a wrapper, with the GIL held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Native functions: `uintptr_t enter(void *ctx)` before (returning `UINTPTR_MAX` with a
    /// Python exception set means "do not call": the wrapper raises it) and
    /// `int exit(void *ctx, uintptr_t token)` after (non-zero: `exit` set an exception; the
    /// call's result is dropped). For calls that must be checked or refused.
    Calls { enter: u64, exit: u64, ctx: u64 },
    /// The engine's epoch guard (`jitload_codemem::grace`), inline in the stencils: code
    /// retired during the call is freed after it returns, and the error of a failed stub call
    /// is raised. Its words, addresses and slow paths are process-wide holes (`_JIT_GRACE*`,
    /// `jitload_fast_grace_*`), resolved by the [`Runtime`]. `fence`: entering executes a full
    /// fence (`grace::readers_fence()`; else the reclaimer fences for every thread).
    Epoch { fence: bool },
}

/// What a call wrapper calls and how.
#[derive(Debug, Clone)]
pub struct WrapperSpec<'a> {
    pub signature: &'a Signature,
    /// The native function's address.
    pub target: u64,
    /// Where `target` is a stub that jumps through an 8-byte word (the engine's stable entry
    /// points): that word's address. The call then reads the word itself where it is within
    /// ±2 GiB of the wrapper's code, skipping the stub's jump ([`Piece::through`]).
    pub jump_slot: Option<u64>,
    /// Release the GIL around the native call (for long calls, or ones that wait for other
    /// threads that call back into Python).
    pub release_gil: bool,
    pub guard: Option<Guard>,
}

/// Where each argument of `sig` travels under the x86-64 SysV ABI: its frame offset (an
/// integer or SSE register slot, or the next memory slot), and how many of each class.
struct Placement {
    slots: Vec<u64>,
    ints: usize,
    sses: usize,
    stack: usize,
}

fn place(sig: &Signature, what: &str) -> Result<Placement, Error> {
    let (mut ints, mut sses, mut stack) = (0usize, 0usize, 0usize);
    let mut slots = Vec::with_capacity(sig.args.len());
    for &ty in &sig.args {
        let slot = if ty.is_sse() && sses < 8 {
            sses += 1;
            sse_slot(sses - 1)
        } else if !ty.is_sse() && ints < 6 {
            ints += 1;
            int_slot(ints - 1)
        } else {
            stack += 1;
            if stack > MAX_STACK_ARGS {
                return Err(Error::Signature(format!(
                    "too many arguments for {what} {sig}: at most 6 integer and 8 floating-point ones in registers and {MAX_STACK_ARGS} more on the stack"
                )));
            }
            stack_slot(stack - 1)
        };
        slots.push(slot);
    }
    Ok(Placement { slots, ints, sses, stack })
}

/// The stencils of a wrapper, without emitting them.
pub fn wrapper_pieces(spec: &WrapperSpec<'_>) -> Result<Vec<Piece>, Error> {
    let sig = spec.signature;
    let epoch = spec.guard == Some(Guard::Epoch { fence: false });
    let fusable = spec.guard.is_none() || epoch;
    if sig.args.len() <= 2 && sig.args.iter().all(|a| matches!(a, CType::I64 | CType::U64)) && !spec.release_gil && fusable {
        // The common shapes, one fused stencil each (entry, conversions, call, box): no
        // argument, or one or two 64-bit integers; unguarded or under the epoch guard.
        #[rustfmt::skip]
        const FUSED: [[usize; 14]; 3] = [
            [id::entry0_void, id::entry0_bool, id::entry0_i8, id::entry0_i16, id::entry0_i32, id::entry0_i64, id::entry0_u8, id::entry0_u16, id::entry0_u32, id::entry0_u64, id::entry0_f32, id::entry0_f64, id::entry0_ptr, id::entry0_pyobject],
            [id::entry1_void, id::entry1_bool, id::entry1_i8, id::entry1_i16, id::entry1_i32, id::entry1_i64, id::entry1_u8, id::entry1_u16, id::entry1_u32, id::entry1_u64, id::entry1_f32, id::entry1_f64, id::entry1_ptr, id::entry1_pyobject],
            [id::entry2_void, id::entry2_bool, id::entry2_i8, id::entry2_i16, id::entry2_i32, id::entry2_i64, id::entry2_u8, id::entry2_u16, id::entry2_u32, id::entry2_u64, id::entry2_f32, id::entry2_f64, id::entry2_ptr, id::entry2_pyobject],
        ];
        #[rustfmt::skip]
        const FUSED_EPOCH: [[usize; 14]; 3] = [
            [id::entry0_epoch_void, id::entry0_epoch_bool, id::entry0_epoch_i8, id::entry0_epoch_i16, id::entry0_epoch_i32, id::entry0_epoch_i64, id::entry0_epoch_u8, id::entry0_epoch_u16, id::entry0_epoch_u32, id::entry0_epoch_u64, id::entry0_epoch_f32, id::entry0_epoch_f64, id::entry0_epoch_ptr, id::entry0_epoch_pyobject],
            [id::entry1_epoch_void, id::entry1_epoch_bool, id::entry1_epoch_i8, id::entry1_epoch_i16, id::entry1_epoch_i32, id::entry1_epoch_i64, id::entry1_epoch_u8, id::entry1_epoch_u16, id::entry1_epoch_u32, id::entry1_epoch_u64, id::entry1_epoch_f32, id::entry1_epoch_f64, id::entry1_epoch_ptr, id::entry1_epoch_pyobject],
            [id::entry2_epoch_void, id::entry2_epoch_bool, id::entry2_epoch_i8, id::entry2_epoch_i16, id::entry2_epoch_i32, id::entry2_epoch_i64, id::entry2_epoch_u8, id::entry2_epoch_u16, id::entry2_epoch_u32, id::entry2_epoch_u64, id::entry2_epoch_f32, id::entry2_epoch_f64, id::entry2_epoch_ptr, id::entry2_epoch_pyobject],
        ];
        let column = match sig.result {
            CType::Void => 0,
            CType::Bool => 1,
            CType::I8 => 2,
            CType::I16 => 3,
            CType::I32 => 4,
            CType::I64 => 5,
            CType::U8 => 6,
            CType::U16 => 7,
            CType::U32 => 8,
            CType::U64 => 9,
            CType::F32 => 10,
            CType::F64 => 11,
            CType::Ptr | CType::Buffer => 12,
            CType::PyObject => 13,
        };
        let table = if epoch { &FUSED_EPOCH } else { &FUSED };
        let mut piece = call_target(Piece::new(table[sig.args.len()][column]), spec);
        const CONV: [u16; 2] = [sym::_JIT_CONV0, sym::_JIT_CONV1];
        const KIND: [u16; 2] = [sym::_JIT_KIND0, sym::_JIT_KIND1];
        for (k, &ty) in sig.args.iter().enumerate() {
            let conv = if ty == CType::U64 { sym::PyLong_AsUnsignedLongLong } else { sym::PyLong_AsLongLong };
            piece = piece.with_symbol(CONV[k], conv).with(KIND[k], ty.kind());
        }
        return Ok(vec![piece]);
    }
    let buffers = sig.args.iter().filter(|a| matches!(a, CType::Ptr | CType::Buffer)).count();
    if buffers > MAX_BUFFERS {
        return Err(Error::Signature(format!("at most {MAX_BUFFERS} ptr/buffer arguments, not {buffers}")));
    }
    let entry = match (spec.guard, buffers > 0) {
        (None, false) => id::entry_plain,
        (None, true) => id::entry_buffers,
        (Some(Guard::Calls { .. }), false) => id::entry_guard,
        (Some(Guard::Calls { .. }), true) => id::entry_guard_buffers,
        (Some(Guard::Epoch { fence: false }), false) => id::entry_epoch,
        (Some(Guard::Epoch { fence: false }), true) => id::entry_epoch_buffers,
        (Some(Guard::Epoch { fence: true }), false) => id::entry_epoch_fenced,
        (Some(Guard::Epoch { fence: true }), true) => id::entry_epoch_fenced_buffers,
    };
    let mut entry = Piece::new(entry).with(sym::_JIT_NARGS, sig.args.len() as u64);
    if let Some(Guard::Calls { enter, exit, ctx }) = spec.guard {
        entry = entry.with(sym::_JIT_GUARD_ENTER, enter).with(sym::_JIT_GUARD_EXIT, exit).with(sym::_JIT_GUARD_CTX, ctx);
    }
    let mut pieces = vec![entry];
    let placement = place(sig, "a wrapper")?;
    let (ints, sses, stack) = (placement.ints, placement.sses, placement.stack);
    for (index, (&ty, &dest)) in sig.args.iter().zip(&placement.slots).enumerate() {
        // Integer-class arguments 1 and 2 travel in the chain's register slots r0/r1.
        let slot = if ty.is_sse() { 2 } else { [0, 1].into_iter().find(|&r| dest == int_slot(r)).unwrap_or(2) };
        let pick = |variants: [usize; 3]| variants[slot];
        let stencil = match ty {
            CType::I64 => pick([id::conv_i64_r0, id::conv_i64_r1, id::conv_i64_mem]),
            CType::I8 | CType::I16 | CType::I32 => pick([id::conv_sint_r0, id::conv_sint_r1, id::conv_sint_mem]),
            CType::U64 => pick([id::conv_u64_r0, id::conv_u64_r1, id::conv_u64_mem]),
            CType::U8 | CType::U16 | CType::U32 => pick([id::conv_uint_r0, id::conv_uint_r1, id::conv_uint_mem]),
            CType::F64 => id::conv_f64,
            CType::F32 => id::conv_f32,
            CType::Bool => pick([id::conv_bool_r0, id::conv_bool_r1, id::conv_bool_mem]),
            CType::Ptr => pick([id::conv_ptr_r0, id::conv_ptr_r1, id::conv_ptr_mem]),
            CType::Buffer => pick([id::conv_buffer_r0, id::conv_buffer_r1, id::conv_buffer_mem]),
            CType::PyObject => pick([id::conv_pyobject_r0, id::conv_pyobject_r1, id::conv_pyobject_mem]),
            CType::Void => return Err(Error::Signature("void is only allowed as the result".into())),
        };
        let mut piece = Piece::new(stencil).with(sym::_JIT_ARG, index as u64).with(sym::_JIT_DEST, dest).with(sym::_JIT_KIND, ty.kind());
        if let Some((min, max)) = ty.int_range() {
            piece = piece.with(sym::_JIT_MIN, min as i64 as u64).with(sym::_JIT_MAX, max as u64);
        }
        pieces.push(piece);
    }
    let call = match (stack > 0, sses > 0, ints, spec.release_gil) {
        (true, _, _, false) => id::call_stack,
        (true, _, _, true) => id::call_stack_nogil,
        (false, true, _, false) => id::call_full,
        (false, true, _, true) => id::call_full_nogil,
        (false, false, n, nogil) => {
            const PLAIN: [usize; 7] = [id::call_i0, id::call_i1, id::call_i2, id::call_i3, id::call_i4, id::call_i5, id::call_i6];
            const NOGIL: [usize; 7] =
                [id::call_i0_nogil, id::call_i1_nogil, id::call_i2_nogil, id::call_i3_nogil, id::call_i4_nogil, id::call_i5_nogil, id::call_i6_nogil];
            if nogil {
                NOGIL[n]
            } else {
                PLAIN[n]
            }
        }
    };
    pieces.push(call_target(Piece::new(call), spec));
    let boxer = match sig.result {
        CType::Void => id::box_void,
        CType::Bool => id::box_bool,
        CType::I8 => id::box_i8,
        CType::I16 => id::box_i16,
        CType::I32 => id::box_i32,
        CType::I64 => id::box_i64,
        CType::U8 => id::box_u8,
        CType::U16 => id::box_u16,
        CType::U32 => id::box_u32,
        CType::U64 => id::box_u64,
        CType::F32 => id::box_f32,
        CType::F64 => id::box_f64,
        CType::Ptr | CType::Buffer => id::box_ptr,
        CType::PyObject => id::box_pyobject,
    };
    pieces.push(Piece::new(boxer));
    Ok(pieces)
}

/// `piece` calls the spec's target.
fn call_target(piece: Piece, spec: &WrapperSpec<'_>) -> Piece {
    let piece = piece.with(sym::_JIT_TARGET, spec.target);
    match spec.jump_slot {
        Some(word) => piece.through(sym::_JIT_TARGET, word),
        None => piece,
    }
}

/// Builds a call wrapper: the entry is a `METH_FASTCALL` function
/// `PyObject *(PyObject *self, PyObject *const *args, Py_ssize_t nargs)` whose `self` must be
/// the host's wrapper object (its slow paths read it).
pub fn build_wrapper(runtime: &Runtime, spec: &WrapperSpec<'_>) -> Result<CodeBlock, Error> {
    emit(runtime, &wrapper_pieces(spec)?)
}

/// The stencils of a thunk, without emitting them.
pub fn thunk_pieces(signature: &Signature, cell: *const ThunkCell) -> Result<Vec<Piece>, Error> {
    let sig = signature;
    let placement = place(sig, "a callback")?;
    let mut boxes = Vec::new();
    for (&ty, &src) in sig.args.iter().zip(&placement.slots) {
        let stencil = match ty {
            CType::I8 => id::cbox_i8,
            CType::I16 => id::cbox_i16,
            CType::I32 => id::cbox_i32,
            CType::I64 => id::cbox_i64,
            CType::U8 => id::cbox_u8,
            CType::U16 => id::cbox_u16,
            CType::U32 => id::cbox_u32,
            CType::U64 => id::cbox_u64,
            CType::Bool => id::cbox_bool,
            CType::F32 => id::cbox_f32,
            CType::F64 => id::cbox_f64,
            CType::Ptr | CType::Buffer => id::cbox_ptr,
            CType::PyObject => id::cbox_pyobject,
            CType::Void => return Err(Error::Signature("void is only allowed as the result".into())),
        };
        boxes.push(Piece::new(stencil).with(sym::_JIT_SRC, src).with(sym::_JIT_CELL, cell as u64));
    }
    let ret = sig.result;
    // (the final stencil, the fused entry for callbacks without arguments)
    let (last, fused) = match ret {
        CType::Void => (id::cret_void, id::cb0_void),
        CType::Bool => (id::cret_bool, id::cb0_bool),
        CType::I64 => (id::cret_i64, id::cb0_i64),
        CType::I8 | CType::I16 | CType::I32 => (id::cret_sint, id::cb0_sint),
        CType::U64 => (id::cret_u64, id::cb0_u64),
        CType::U8 | CType::U16 | CType::U32 => (id::cret_uint, id::cb0_uint),
        CType::F32 => (id::cret_f32, id::cb0_f32),
        CType::F64 => (id::cret_f64, id::cb0_f64),
        CType::Ptr | CType::Buffer => (id::cret_ptr, id::cb0_ptr),
        CType::PyObject => (id::cret_pyobject, id::cb0_pyobject),
    };
    let with_result = |stencil: usize| {
        let mut piece = Piece::new(stencil).with(sym::_JIT_CELL, cell as u64).with(sym::_JIT_KIND, ret.kind());
        if let Some((min, max)) = ret.int_range() {
            piece = piece.with(sym::_JIT_MIN, min as i64 as u64).with(sym::_JIT_MAX, max as u64);
        }
        piece
    };
    if sig.args.is_empty() {
        // Nothing to box: one fused stencil (entry, call, result).
        return Ok(vec![with_result(fused)]);
    }
    if sig.args.len() <= 2 && sig.args.iter().all(|a| matches!(a, CType::I64 | CType::U64)) {
        // One or two 64-bit integers: one fused stencil (entry, boxing, call, result).
        let column =
            [id::cb0_void, id::cb0_bool, id::cb0_i64, id::cb0_sint, id::cb0_u64, id::cb0_uint, id::cb0_f32, id::cb0_f64, id::cb0_ptr, id::cb0_pyobject]
                .iter()
                .position(|&s| s == fused)
                .ok_or_else(|| Error::Plan(format!("no fused callback for {sig}")))?;
        #[rustfmt::skip]
        const FUSED: [[usize; 10]; 2] = [
            [id::cb1_void, id::cb1_bool, id::cb1_i64, id::cb1_sint, id::cb1_u64, id::cb1_uint, id::cb1_f32, id::cb1_f64, id::cb1_ptr, id::cb1_pyobject],
            [id::cb2_void, id::cb2_bool, id::cb2_i64, id::cb2_sint, id::cb2_u64, id::cb2_uint, id::cb2_f32, id::cb2_f64, id::cb2_ptr, id::cb2_pyobject],
        ];
        const BOX: [u16; 2] = [sym::_JIT_BOX0, sym::_JIT_BOX1];
        let mut piece = with_result(FUSED[sig.args.len() - 1][column]);
        for (k, &ty) in sig.args.iter().enumerate() {
            let boxer = if ty == CType::U64 { sym::PyLong_FromUnsignedLongLong } else { sym::PyLong_FromLongLong };
            piece = piece.with_symbol(BOX[k], boxer);
        }
        return Ok(vec![piece]);
    }
    let entry = if placement.stack > 0 {
        id::cb_entry_stack
    } else if placement.sses > 0 {
        id::cb_entry_full
    } else {
        [id::cb_entry_i0, id::cb_entry_i1, id::cb_entry_i2, id::cb_entry_i3, id::cb_entry_i4, id::cb_entry_i5, id::cb_entry_i6][placement.ints]
    };
    let mut pieces = vec![Piece::new(entry).with(sym::_JIT_CELL, cell as u64).with(sym::_JIT_NSTACK, placement.stack as u64)];
    pieces.extend(boxes);
    pieces.push(Piece::new(id::cb_call).with(sym::_JIT_CELL, cell as u64).with(sym::_JIT_NARGS, sig.args.len() as u64));
    pieces.push(with_result(last));
    Ok(pieces)
}

/// Builds a callback thunk: the entry is a C function of `signature` that calls the cell's
/// callable. `cell` must stay at its address, alive, as long as the block.
pub fn build_thunk(runtime: &Runtime, signature: &Signature, cell: *const ThunkCell) -> Result<CodeBlock, Error> {
    emit(runtime, &thunk_pieces(signature, cell)?)
}
