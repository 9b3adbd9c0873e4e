/* Call wrappers: a Python call (METH_FASTCALL) to a native function, as a chain of stencils.
 *
 *   entry_*   native convention: checks the argument count, sets up a CallFrame on its own
 *             stack, links it for the callback handshake, calls the chain (not a tail call:
 *             it cleans up afterwards, like CPython's JIT trampoline), returns the result.
 *   conv_*    one per argument: Python object args[ARG] -> raw value, in register slot r0
 *             (`_r0`), r1 (`_r1`) or at frame offset DEST. Ints, exact floats, bools and
 *             None take the inline path; everything else, and every error, goes to the
 *             host's slow path, which converts generally or raises.
 *   call_*    loads the argument registers (r0, r1, the frame) and calls TARGET; passes
 *             {rax, xmm0} on in r0, r1.
 *   box_*     raw result -> Python object; returns to the entry.
 *   entry0_*, entry1_*, entry2_*  fused entries for the common shapes (no argument, one or
 *             two 64-bit integers): entry, conversions, call and box in one stencil.
 *   entry_epoch*, entry{0,1,2}_epoch_*  entries under the engine's epoch guard, inline
 *             (entry_epoch_fenced*: where entering must fence, see stencils.h).
 *
 * The chain's state is four values: args, the frame and the register slots r0 and r1.
 * Under preserve_none they travel in r12-r15, which the C convention preserves, so they
 * survive every C API call a stencil makes: the first two integer arguments and the result
 * never touch memory between conversion, call and boxing.
 *
 * Holes: _JIT_NARGS, _JIT_ARG, _JIT_DEST, _JIT_KIND, _JIT_MIN, _JIT_MAX, _JIT_TARGET, _JIT_TLS,
 * _JIT_GUARD_{ENTER,EXIT,CTX}, _JIT_GRACE{,_EPOCH,_PENDING} (the epoch guard, stencils.h),
 * C API functions and host helpers. Continuation: _JIT_CONTINUE.
 */
#include "stencils.h"

HOLE(_JIT_NARGS);
HOLE(_JIT_ARG);
HOLE(_JIT_DEST);
HOLE(_JIT_KIND);
HOLE(_JIT_MIN);
HOLE(_JIT_MAX);
HOLE(_JIT_TARGET);
HOLE(_JIT_GUARD_ENTER);
HOLE(_JIT_GUARD_EXIT);
HOLE(_JIT_GUARD_CTX);

#define CHAIN PyObject *const *args, CallFrame *fr, uint64_t r0, uint64_t r1
extern PN HIDDEN PyObject *_JIT_CONTINUE(CHAIN);

#define NEXT() MUSTTAIL return _JIT_CONTINUE(args, fr, r0, r1)


/* ---- entries ------------------------------------------------------------------------ */

/* guard: 0 none, GUARD_CALLS the host's enter/exit functions, GUARD_EPOCH the engine's epoch
 * guard inline (stencils.h), GUARD_EPOCH_FENCED the same where entering must fence. */
#define GUARD_CALLS 1
#define GUARD_EPOCH 2
#define GUARD_EPOCH_FENCED 3
INLINE PyObject *entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs, Py_buffer *bufs, int guard) {
    if (UNLIKELY(nargs != (Py_ssize_t)VALUE(_JIT_NARGS))) {
        return jitload_fast_bad_nargs(self, nargs);
    }
    CallFrame fr;
    fr.self = self;
    if (bufs) {
        fr.bufs = bufs;
        fr.nbuf = 0;
    }
    /* The handshake (docs in src/frames.rs): callbacks on this thread find this frame. */
    fr.prev = slot_get();
    fr.pending = NULL;
    slot_set((uintptr_t)&fr);
    PyObject *r = NULL;
    if (guard == GUARD_EPOCH || guard == GUARD_EPOCH_FENCED) {
        grace_enter(guard == GUARD_EPOCH_FENCED, &fr.token);
        r = _JIT_CONTINUE(args, &fr, 0, 0);
        if (grace_exit(fr.token)) {
            r = jitload_fast_grace_exit_slow(r);
        }
    }
    if (guard == GUARD_CALLS) {
        /* enter returns a token for exit, or UINTPTR_MAX with an exception set: no call. */
        fr.token = ((uintptr_t (*)(void *))_JIT_GUARD_ENTER)(_JIT_GUARD_CTX);
    }
    if (guard < GUARD_EPOCH && (guard != GUARD_CALLS || LIKELY(fr.token != UINTPTR_MAX))) {
        r = _JIT_CONTINUE(args, &fr, 0, 0);
        if (guard == GUARD_CALLS) {
            if (UNLIKELY(((int (*)(void *, uintptr_t))_JIT_GUARD_EXIT)(_JIT_GUARD_CTX, fr.token) < 0) && r) {
                decref(r);
                r = NULL;
            }
        }
    }
    if (bufs) {
        for (int64_t k = 0; k < fr.nbuf; k++) {
            PyBuffer_Release(&bufs[k]);
        }
    }
    slot_set(fr.prev);
    if (UNLIKELY(fr.pending != NULL)) {
        /* A callback of this call raised: its exception is in fr.pending. */
        return jitload_fast_raise_pending(r, &fr);
    }
    return r;
}

PyObject *entry_plain(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return entry(self, args, nargs, NULL, 0);
}
PyObject *entry_buffers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer bufs[MAX_BUFFERS];
    return entry(self, args, nargs, bufs, 0);
}
PyObject *entry_guard(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return entry(self, args, nargs, NULL, GUARD_CALLS);
}
PyObject *entry_guard_buffers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer bufs[MAX_BUFFERS];
    return entry(self, args, nargs, bufs, GUARD_CALLS);
}
PyObject *entry_epoch(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return entry(self, args, nargs, NULL, GUARD_EPOCH);
}
PyObject *entry_epoch_buffers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer bufs[MAX_BUFFERS];
    return entry(self, args, nargs, bufs, GUARD_EPOCH);
}
PyObject *entry_epoch_fenced(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    return entry(self, args, nargs, NULL, GUARD_EPOCH_FENCED);
}
PyObject *entry_epoch_fenced_buffers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer bufs[MAX_BUFFERS];
    return entry(self, args, nargs, bufs, GUARD_EPOCH_FENCED);
}

/* ---- argument conversions ----------------------------------------------------------- */

#define ARG() (args[VALUE(_JIT_ARG)])
/* Each conversion comes in three variants: the value goes to r0, to r1, or to the frame. */
#define TO_mem(v) (*(uint64_t *)((char *)fr + VALUE(_JIT_DEST)) = (uint64_t)(v))
#define TO_r0(v) (r0 = (uint64_t)(v))
#define TO_r1(v) (r1 = (uint64_t)(v))
/* The slow path writes to the frame: DEST, or the (not yet used) ret_i slot for registers. */
#define SLOW_TO_mem(kind)                                                                 \
    do {                                                                                  \
        if (jitload_fast_conv_slow(fr, o, VALUE(_JIT_ARG), (kind), VALUE(_JIT_DEST)) < 0) \
            return NULL;                                                                  \
        NEXT();                                                                           \
    } while (0)
#define SLOW_TO_REG(kind, reg)                                                                        \
    do {                                                                                              \
        if (jitload_fast_conv_slow(fr, o, VALUE(_JIT_ARG), (kind), offsetof(CallFrame, ret_i)) < 0) \
            return NULL;                                                                              \
        reg = fr->ret_i;                                                                              \
        NEXT();                                                                                       \
    } while (0)
#define SLOW_TO_r0(kind) SLOW_TO_REG(kind, r0)
#define SLOW_TO_r1(kind) SLOW_TO_REG(kind, r1)

/* CONVERT(v) is a statement block that either sets v and falls through, or jumps to slow. */
#define CONV_VARIANT(NAME, SUFFIX, KIND, CONVERT)   \
    PN PyObject *NAME##SUFFIX(CHAIN) {              \
        PyObject *o = ARG();                        \
        uint64_t v;                                 \
        CONVERT                                     \
        TO##SUFFIX(v);                              \
        NEXT();                                     \
    slow:                                           \
        SLOW_TO##SUFFIX(KIND);                      \
    }
#define CONV(NAME, KIND, CONVERT)                 \
    CONV_VARIANT(NAME, _mem, KIND, CONVERT)       \
    CONV_VARIANT(NAME, _r0, KIND, CONVERT)        \
    CONV_VARIANT(NAME, _r1, KIND, CONVERT)

/* PyLong_AsLongLong takes any int or __index__ object; anything else fails into the slow
 * path, which raises the C-extension-style TypeError. */
CONV(conv_i64, K_I64, {
    long long x = PyLong_AsLongLong(o);
    if (UNLIKELY(x == -1 && PyErr_Occurred())) goto slow;
    v = (uint64_t)x;
})

/* Narrower signed integers: the range is patched in (MIN, MAX), the kind names the type. */
CONV(conv_sint, VALUE(_JIT_KIND), {
    long long x = PyLong_AsLongLong(o);
    if (UNLIKELY(x < (long long)VALUE(_JIT_MIN) || x > (long long)VALUE(_JIT_MAX))) goto slow;
    if (UNLIKELY(x == -1 && PyErr_Occurred())) goto slow;
    v = (uint64_t)x;
})

/* PyLong_AsUnsignedLongLong takes ints only (no __index__): the slow path has the rest. */
CONV(conv_u64, K_U64, {
    unsigned long long x = PyLong_AsUnsignedLongLong(o);
    if (UNLIKELY(x == (unsigned long long)-1 && PyErr_Occurred())) goto slow;
    v = x;
})

CONV(conv_uint, VALUE(_JIT_KIND), {
    unsigned long long x = PyLong_AsUnsignedLongLong(o);
    if (UNLIKELY(x > (unsigned long long)VALUE(_JIT_MAX))) goto slow; /* includes (ull)-1 on error */
    v = x;
})

CONV(conv_bool, K_BOOL, {
    if (o == &_Py_TrueStruct) v = 1;
    else if (o == &_Py_FalseStruct) v = 0;
    else goto slow;
})

CONV(conv_ptr, K_PTR, {
    if (o == &_Py_NoneStruct) {
        v = 0;
    } else {
        if (UNLIKELY(!exact(o, PyLong_Type))) goto slow;
        void *x = PyLong_AsVoidPtr(o);
        if (UNLIKELY(x == NULL && PyErr_Occurred())) goto slow;
        v = (uint64_t)x;
    }
})

/* A writable buffer is passed in place and released after the call; read-only ones (whose
 * owners do not expect writes) take the slow path, which passes a copy. */
CONV(conv_buffer, K_BUFFER, {
    Py_buffer *view = &fr->bufs[fr->nbuf];
    if (UNLIKELY(PyObject_GetBuffer(o, view, PyBUF_SIMPLE) != 0)) goto slow;
    if (UNLIKELY(view->readonly)) {
        PyBuffer_Release(view);
        goto slow;
    }
    fr->nbuf++;
    v = (uint64_t)view->buf;
})

/* PyObject* arguments are borrowed: the caller's reference outlives the call. */
CONV(conv_pyobject, K_PYOBJECT, {
    v = (uint64_t)o;
    if (0) goto slow;
})

/* Floating-point arguments go to SSE registers, loaded from the frame by the call. */
PN PyObject *conv_f64(CHAIN) {
    PyObject *o = ARG();
    if (LIKELY(exact(o, PyFloat_Type))) {
        TO_mem(double_bits(((PyFloatObject *)o)->ob_fval));
        NEXT();
    }
    SLOW_TO_mem(K_F64);
}

PN PyObject *conv_f32(CHAIN) {
    PyObject *o = ARG();
    if (LIKELY(exact(o, PyFloat_Type))) {
        TO_mem(float_bits((float)((PyFloatObject *)o)->ob_fval));
        NEXT();
    }
    SLOW_TO_mem(K_F32);
}

/* ---- calls -------------------------------------------------------------------------- */

#define I0 r0
#define I1 r1
#define I(k) fr->i[k]
#define F(k) as_double(fr->f[k])
#define S(k) fr->stack[k]
#define T(...) ((Ret (*)(__VA_ARGS__))_JIT_TARGET)
#define U uint64_t
#define D double
/* The result goes on in r0 (rax) and r1 (xmm0's bits). */
#define CALL(NAME, TYPES, ARGS)                                   \
    PN PyObject *NAME(CHAIN) {                                    \
        Ret r = T TYPES ARGS;                                     \
        r0 = r.i;                                                 \
        r1 = double_bits(r.d);                                    \
        NEXT();                                                   \
    }                                                             \
    PN PyObject *NAME##_nogil(CHAIN) {                            \
        void *ts = PyEval_SaveThread();                           \
        Ret r = T TYPES ARGS;                                     \
        PyEval_RestoreThread(ts);                                 \
        r0 = r.i;                                                 \
        r1 = double_bits(r.d);                                    \
        NEXT();                                                   \
    }

CALL(call_i0, (void), ())
CALL(call_i1, (U), (I0))
CALL(call_i2, (U, U), (I0, I1))
CALL(call_i3, (U, U, U), (I0, I1, I(2)))
CALL(call_i4, (U, U, U, U), (I0, I1, I(2), I(3)))
CALL(call_i5, (U, U, U, U, U), (I0, I1, I(2), I(3), I(4)))
CALL(call_i6, (U, U, U, U, U, U), (I0, I1, I(2), I(3), I(4), I(5)))
/* Any mix of up to 6 integer-class and 8 SSE arguments: SysV assigns each class its own
 * registers in order, so passing all of them is correct for every such signature. */
CALL(call_full, (U, U, U, U, U, U, D, D, D, D, D, D, D, D),
     (I0, I1, I(2), I(3), I(4), I(5), F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7)))
/* ... and up to 16 more in memory, pushed in argument order (each 8 bytes). */
CALL(call_stack, (U, U, U, U, U, U, D, D, D, D, D, D, D, D, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U),
     (I0, I1, I(2), I(3), I(4), I(5), F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7),
      S(0), S(1), S(2), S(3), S(4), S(5), S(6), S(7), S(8), S(9), S(10), S(11), S(12), S(13), S(14), S(15)))

/* ---- results ------------------------------------------------------------------------ */

/* {rax, xmm0} of the call (in r0, r1) -> a new reference, or NULL with an exception. Only
 * the low bits of a narrow integer result are defined by the ABI: truncate first. */
#define BOXES(X)                                                                     \
    X(i8, PyLong_FromLongLong((int8_t)r0))                                           \
    X(i16, PyLong_FromLongLong((int16_t)r0))                                         \
    X(i32, PyLong_FromLongLong((int32_t)r0))                                         \
    X(i64, PyLong_FromLongLong((int64_t)r0))                                         \
    X(u8, PyLong_FromLongLong((uint8_t)r0))                                          \
    X(u16, PyLong_FromLongLong((uint16_t)r0))                                        \
    X(u32, PyLong_FromLongLong((uint32_t)r0))                                        \
    X(u64, PyLong_FromUnsignedLongLong(r0))                                          \
    X(bool, new_ref((uint8_t)r0 ? &_Py_TrueStruct : &_Py_FalseStruct))               \
    X(f32, PyFloat_FromDouble((double)bits_float(r1)))                               \
    X(f64, PyFloat_FromDouble(as_double(r1)))                                        \
    X(void, new_ref(&_Py_NoneStruct))                                                \
    X(ptr, r0 ? PyLong_FromVoidPtr((void *)r0) : new_ref(&_Py_NoneStruct))           \
    /* A PyObject* result is a new reference (the C API's convention); NULL propagates \
     * the exception the function set, or becomes a SystemError. */                  \
    X(pyobject, r0 ? (PyObject *)r0 : jitload_fast_null_result(fr))

INLINE PyObject *new_ref(PyObject *o) {
    incref(o);
    return o;
}

/* The last stencil of a chain: returns to the entry. */
#define BOX_STENCIL(KIND, EXPR) \
    PN PyObject *box_##KIND(CHAIN) { return EXPR; }
BOXES(BOX_STENCIL)

/* ---- fused entries ------------------------------------------------------------------ */

/* The common shapes, whole in one stencil: functions without arguments (entry0_*) and with
 * one or two 64-bit integer arguments (entry1_*, entry2_*: int64 or uint64 each). A fused
 * entry calls no preserve_none code, so it saves only the registers it uses, converts the
 * arguments into registers that hold them across the C API calls, and ends in a tail call of
 * the boxing function. Same frame, same handshake and same slow paths as entry() and the
 * chain: conversions inside the handshake (a callback raising in an __index__ that calls
 * native code goes to this call, as with the chain), the result boxed after the handshake
 * is restored (boxing runs no Python code), a NULL or pending exit as entry()'s.
 *
 * Holes of entry1/entry2: _JIT_CONVk, PyLong_AsLongLong or PyLong_AsUnsignedLongLong (both
 * return -1 with an exception on failure), and _JIT_KINDk for the slow path. */
HOLE(_JIT_CONV0);
HOLE(_JIT_CONV1);
HOLE(_JIT_KIND0);
HOLE(_JIT_KIND1);

/* Argument K of the call -> v, or a jump to fail with an exception set. The slow path loads
 * args[K] again (volatile: not kept in a callee-saved register for the cold path). */
#define ARG_AT(K) (((PyObject *volatile const *)args)[K])
#define FUSED_CONV(K, v)                                                                          \
    do {                                                                                          \
        v = ((uint64_t (*)(PyObject *))_JIT_CONV##K)(ARG_AT(K));                                  \
        if (UNLIKELY(v == (uint64_t)-1) && PyErr_Occurred()) {                                    \
            if (jitload_fast_conv_slow(fr, ARG_AT(K), K, VALUE(_JIT_KIND##K), offsetof(CallFrame, ret_i)) < 0) \
                goto fail;                                                                        \
            v = fr->ret_i;                                                                        \
        }                                                                                         \
    } while (0)

/* Only a pyobject result is a reference the pending exit must drop. */
#define OWNED_pyobject(r0) ((PyObject *)(r0))
#define OWNED_OTHER(r0) ((PyObject *)NULL)
#define OWNED(KIND, r0) (__builtin_strcmp(#KIND, "pyobject") == 0 ? OWNED_pyobject(r0) : OWNED_OTHER(r0))

/* EPOCH: 1 in the entries guarded by the engine's epoch guard (entry0_epoch_* ...): entered
 * before the conversions (as entry()'s guard), left before the handshake is restored. Only
 * the unfenced guard is fused (where the kernel lacks membarrier, the chain's entry fences). */
#define FUSED(NAME, KIND, EXPR, NARGS, SELF, CONVERT, CALL, EPOCH)                               \
    PyObject *NAME##_##KIND(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {           \
        if (UNLIKELY(nargs != NARGS)) {                                                          \
            return jitload_fast_bad_nargs(self, nargs);                                          \
        }                                                                                        \
        CallFrame frame, *fr = &frame;                                                           \
        if (SELF) {                                                                              \
            fr->self = self; /* read by the slow paths only */                                   \
        }                                                                                        \
        fr->prev = slot_get();                                                                   \
        fr->pending = NULL;                                                                      \
        slot_set((uintptr_t)fr);                                                                 \
        uint64_t a0 = 0, a1 = 0;                                                                 \
        (void)a0, (void)a1, (void)args;                                                          \
        if (EPOCH) {                                                                             \
            grace_enter(0, &fr->token);                                                          \
        }                                                                                        \
        CONVERT;                                                                                 \
        Ret r = CALL;                                                                            \
        uint64_t r0 = r.i, r1 = double_bits(r.d);                                                \
        (void)r0, (void)r1;                                                                      \
        if (EPOCH && grace_exit(fr->token)) {                                                        \
            /* Box first: the slow exit drops the result when it raises. */                      \
            PyObject *boxed = EXPR;                                                              \
            slot_set(fr->prev);                                                                  \
            boxed = jitload_fast_grace_exit_slow(boxed);                                         \
            if (UNLIKELY(fr->pending != NULL)) {                                                 \
                return jitload_fast_raise_pending(boxed, fr);                                    \
            }                                                                                    \
            return boxed;                                                                        \
        }                                                                                        \
        slot_set(fr->prev);                                                                      \
        if (UNLIKELY(fr->pending != NULL)) {                                                     \
            return jitload_fast_raise_pending(OWNED(KIND, r0), fr);                              \
        }                                                                                        \
        return EXPR;                                                                             \
    fail:                                                                                        \
        if (EPOCH && grace_exit(fr->token)) {                                                        \
            jitload_fast_grace_exit_slow(NULL);                                                  \
        }                                                                                        \
        slot_set(fr->prev);                                                                      \
        if (UNLIKELY(fr->pending != NULL)) { /* a callback raised during a conversion */          \
            return jitload_fast_raise_pending(NULL, fr);                                         \
        }                                                                                        \
        return NULL;                                                                             \
    }

#define IS_PYOBJECT(KIND) (__builtin_strcmp(#KIND, "pyobject") == 0) /* folded at compile time */
#define CONVERT0 if (0) goto fail
#define CALL0 ((Ret (*)(void))_JIT_TARGET)()
#define CONVERT1 FUSED_CONV(0, a0)
#define CALL1 ((Ret (*)(uint64_t))_JIT_TARGET)(a0)
#define CONVERT2 FUSED_CONV(0, a0); FUSED_CONV(1, a1)
#define CALL2 ((Ret (*)(uint64_t, uint64_t))_JIT_TARGET)(a0, a1)
#define ENTRY0(KIND, EXPR) FUSED(entry0, KIND, EXPR, 0, IS_PYOBJECT(KIND), CONVERT0, CALL0, 0)
#define ENTRY1(KIND, EXPR) FUSED(entry1, KIND, EXPR, 1, 1, CONVERT1, CALL1, 0)
#define ENTRY2(KIND, EXPR) FUSED(entry2, KIND, EXPR, 2, 1, CONVERT2, CALL2, 0)
/* The same under the engine's epoch guard. */
#define ENTRY0_EPOCH(KIND, EXPR) FUSED(entry0_epoch, KIND, EXPR, 0, IS_PYOBJECT(KIND), CONVERT0, CALL0, 1)
#define ENTRY1_EPOCH(KIND, EXPR) FUSED(entry1_epoch, KIND, EXPR, 1, 1, CONVERT1, CALL1, 1)
#define ENTRY2_EPOCH(KIND, EXPR) FUSED(entry2_epoch, KIND, EXPR, 2, 1, CONVERT2, CALL2, 1)
BOXES(ENTRY0)
BOXES(ENTRY1)
BOXES(ENTRY2)
BOXES(ENTRY0_EPOCH)
BOXES(ENTRY1_EPOCH)
BOXES(ENTRY2_EPOCH)
