/* Callback thunks: a native call (any C signature of up to 6 integer-class and 8 SSE
 * arguments in registers and 16 more in memory) into a Python callable, as a chain of
 * stencils.
 *
 *   cb_entry_*  native convention: marks the thread as inside thunk code, takes the GIL if
 *               this thread does not hold it, stores the argument registers in a CbFrame on
 *               its body's stack and calls the chain (not a tail call), releases the GIL it
 *               took, and jumps to the host's exit, which ends the mark and returns
 *               {rax, xmm0} (THUNK_ENTRY below).
 *   cbox_*      one per argument: raw value at frame offset SRC -> a new reference in argv.
 *   cb_call     calls the cell's callable (NARGS arguments): a Python function through its
 *               vectorcall slot, anything else with PyObject_Vectorcall.
 *   cret_*      the callable's result -> the raw return value; ends the chain.
 *   cb0_*       for callbacks without arguments: entry, call and result in one.
 *   cb1_*, cb2_*  the same for one or two 64-bit integer arguments (boxing included).
 * Any failure goes to the host's jitload_fast_cb_error, which reports the exception (to a
 * jitload wrapper running on this thread, or sys.unraisablehook) and returns the cell's
 * error value.
 *
 * Holes: _JIT_SRC, _JIT_CELL, _JIT_NARGS, _JIT_NSTACK, _JIT_KIND, _JIT_MIN, _JIT_MAX, _JIT_TSTATE_GET,
 * C API functions and host helpers. Continuation: _JIT_CONTINUE.
 */
#include "stencils.h"

HOLE(_JIT_SRC);
HOLE(_JIT_CELL);
HOLE(_JIT_NARGS);
HOLE(_JIT_NSTACK);
HOLE(_JIT_KIND);
HOLE(_JIT_MIN);
HOLE(_JIT_MAX);

extern PN HIDDEN Ret _JIT_CONTINUE(CbFrame *fr);

#define NEXT() MUSTTAIL return _JIT_CONTINUE(fr)
#define CELL ((ThunkCell *)_JIT_CELL)

INLINE Ret ret_i(uint64_t v) { return (Ret){.i = v, .d = 0.0}; }
INLINE Ret ret_bits(uint64_t bits) { return (Ret){.i = 0, .d = as_double(bits)}; }

/* ---- entries ------------------------------------------------------------------------ */

/* The byte offset of `thread_id` in this CPython's PyThreadState, found by the host at
 * start-up (the one word of its own thread state equal to its thread's pthread_self), or 1
 * (no aligned offset; a hole is never 0) when it could not be found. */
HOLE(_JIT_TS_THREAD_ID);

/* Does this thread hold the GIL? The thread state holding it (3.10/3.11: the global current
 * one; 3.12+: this thread's attached one) was made for this thread: its thread_id is this
 * thread's pthread_self, which is the thread pointer (%fs:0) in glibc. One call and two
 * loads, against PyGILState_GetThisThreadState's thread-specific-data lookup (26
 * instructions on 3.11). Where the offset is unknown: this thread's own thread state
 * (PyGILState_GetThisThreadState) is the current one. */
INLINE int holds_gil(void) {
    void *current = ((void *(*)(void))_JIT_TSTATE_GET)();
    if (LIKELY(VALUE(_JIT_TS_THREAD_ID) != 1)) {
        uintptr_t self;
        __asm__("movq %%fs:0, %0" : "=r"(self));
        return current != NULL && *(uintptr_t *)((char *)current + VALUE(_JIT_TS_THREAD_ID)) == self;
    }
    void *mine = PyGILState_GetThisThreadState();
    return mine != NULL && mine == current;
}

/* A thunk's entry and the code it runs are freed (retired through jitload_codemem::grace)
 * once its Thunk died and no call is inside them. A call is inside from its first
 * instructions until its last one, which may come after the Thunk died: during its own
 * call (its callable dropped the last reference), or while another thread held the GIL
 * (this one waited for it, or released it to run the callable, or to finish: a new thread
 * state's release runs Python code). So the entry marks the thread in grace's epoch words
 * (grace_enter_thunk) before anything else, and the mark ends in the host's
 * jitload_fast_cb_leave, which the entry tail-calls: no instruction of the thunk runs after
 * it (then the GIL taken here is already released). For the tail call the entry has no
 * local whose address escapes: the frame lives in a second function, the body, placed in
 * the entry's own section (a stencil is one section; the entry comes first, build.rs
 * checks) and called directly.
 *
 * THUNK_ENTRY(NAME, PARAMS, BODY_PARAMS, BODY_ARGS) { body } defines the entry NAME PARAMS
 * and its body, which returns the call's Ret. */
#define THUNK_ENTRY(NAME, PARAMS, BODY_PARAMS, BODY_ARGS)                                      \
    static __attribute__((noinline, section(".text." #NAME))) Ret NAME##_body BODY_PARAMS;    \
    Ret NAME PARAMS {                                                                          \
        uint64_t token = grace_enter_thunk();                                                  \
        int ensured = 0, state = 0;                                                            \
        if (UNLIKELY(!holds_gil())) {                                                          \
            state = PyGILState_Ensure();                                                       \
            ensured = 1;                                                                       \
        }                                                                                      \
        Ret r = NAME##_body BODY_ARGS;                                                         \
        if (UNLIKELY(ensured)) {                                                               \
            PyGILState_Release(state);                                                         \
        }                                                                                      \
        return jitload_fast_cb_leave(r.i, r.d, token, !ensured);                               \
    }                                                                                          \
    static Ret NAME##_body BODY_PARAMS

/* The chain, from a frame holding the arguments. */
INLINE Ret cb_run(CbFrame *fr) {
    fr->nboxed = 0;
    fr->result = NULL;
    return _JIT_CONTINUE(fr);
}

#define U uint64_t
#define D double
THUNK_ENTRY(cb_entry_i0, (void), (void), ()) {
    CbFrame fr;
    return cb_run(&fr);
}
THUNK_ENTRY(cb_entry_i1, (U a), (U a), (a)) {
    CbFrame fr;
    fr.i[0] = a;
    return cb_run(&fr);
}
THUNK_ENTRY(cb_entry_i2, (U a, U b), (U a, U b), (a, b)) {
    CbFrame fr;
    fr.i[0] = a, fr.i[1] = b;
    return cb_run(&fr);
}
THUNK_ENTRY(cb_entry_i3, (U a, U b, U c), (U a, U b, U c), (a, b, c)) {
    CbFrame fr;
    fr.i[0] = a, fr.i[1] = b, fr.i[2] = c;
    return cb_run(&fr);
}
THUNK_ENTRY(cb_entry_i4, (U a, U b, U c, U d), (U a, U b, U c, U d), (a, b, c, d)) {
    CbFrame fr;
    fr.i[0] = a, fr.i[1] = b, fr.i[2] = c, fr.i[3] = d;
    return cb_run(&fr);
}
THUNK_ENTRY(cb_entry_i5, (U a, U b, U c, U d, U e), (U a, U b, U c, U d, U e), (a, b, c, d, e)) {
    CbFrame fr;
    fr.i[0] = a, fr.i[1] = b, fr.i[2] = c, fr.i[3] = d, fr.i[4] = e;
    return cb_run(&fr);
}
THUNK_ENTRY(cb_entry_i6, (U a, U b, U c, U d, U e, U f), (U a, U b, U c, U d, U e, U f), (a, b, c, d, e, f)) {
    CbFrame fr;
    fr.i[0] = a, fr.i[1] = b, fr.i[2] = c, fr.i[3] = d, fr.i[4] = e, fr.i[5] = f;
    return cb_run(&fr);
}
#define FULL_PARAMS U a, U b, U c, U d, U e, U f, D x0, D x1, D x2, D x3, D x4, D x5, D x6, D x7
#define FULL_ARGS a, b, c, d, e, f, x0, x1, x2, x3, x4, x5, x6, x7
INLINE void store_full(CbFrame *fr, FULL_PARAMS) {
    fr->i[0] = a, fr->i[1] = b, fr->i[2] = c, fr->i[3] = d, fr->i[4] = e, fr->i[5] = f;
    fr->f[0] = double_bits(x0), fr->f[1] = double_bits(x1), fr->f[2] = double_bits(x2), fr->f[3] = double_bits(x3);
    fr->f[4] = double_bits(x4), fr->f[5] = double_bits(x5), fr->f[6] = double_bits(x6), fr->f[7] = double_bits(x7);
}
/* Any mix of up to 6 integer-class and 8 SSE arguments (see call_full in wrapper.c). */
THUNK_ENTRY(cb_entry_full, (FULL_PARAMS), (FULL_PARAMS), (FULL_ARGS)) {
    CbFrame fr;
    store_full(&fr, FULL_ARGS);
    return cb_run(&fr);
}

/* ... and up to MAX_STACK_ARGS (_JIT_NSTACK of them) more in memory: SysV passes each in an
 * 8-byte slot, in argument order, starting just above the return address. The entry's
 * frame address is where its frame pointer was saved: the return address is above it, the
 * first memory argument above that; the body gets their address. Only the slots the
 * signature has are read (never past the caller's arguments). */
THUNK_ENTRY(cb_entry_stack, (FULL_PARAMS), (FULL_PARAMS, const uint64_t *in), (FULL_ARGS, (const uint64_t *)__builtin_frame_address(0) + 2)) {
    CbFrame fr;
    store_full(&fr, FULL_ARGS);
    /* A few words: a plain loop is smaller than the vectorized and unrolled one. */
#pragma clang loop vectorize(disable) unroll(disable)
    for (uintptr_t k = 0; k < VALUE(_JIT_NSTACK); k++) {
        fr.stack[k] = in[k];
    }
    return cb_run(&fr);
}

/* ---- argument boxing ---------------------------------------------------------------- */

#define RAW() (*(uint64_t *)((char *)fr + VALUE(_JIT_SRC)))
#define CBOX(NAME, EXPR)                                   \
    PN Ret NAME(CbFrame *fr) {                             \
        uint64_t raw = RAW();                              \
        PyObject *o = EXPR;                                \
        if (UNLIKELY(o == NULL)) {                         \
            return jitload_fast_cb_error(fr, CELL);        \
        }                                                  \
        fr->argv[++fr->nboxed] = o;                        \
        NEXT();                                            \
    }

INLINE PyObject *new_ref(PyObject *o) {
    incref(o);
    return o;
}

/* Narrow integer arguments: only the low bits of the register are defined. */
CBOX(cbox_i8, PyLong_FromLongLong((int8_t)raw))
CBOX(cbox_i16, PyLong_FromLongLong((int16_t)raw))
CBOX(cbox_i32, PyLong_FromLongLong((int32_t)raw))
CBOX(cbox_i64, PyLong_FromLongLong((int64_t)raw))
CBOX(cbox_u8, PyLong_FromLongLong((uint8_t)raw))
CBOX(cbox_u16, PyLong_FromLongLong((uint16_t)raw))
CBOX(cbox_u32, PyLong_FromLongLong((uint32_t)raw))
CBOX(cbox_u64, PyLong_FromUnsignedLongLong(raw))
CBOX(cbox_bool, new_ref((uint8_t)raw ? &_Py_TrueStruct : &_Py_FalseStruct))
CBOX(cbox_f32, PyFloat_FromDouble((double)bits_float(raw)))
CBOX(cbox_f64, PyFloat_FromDouble(as_double(raw)))
CBOX(cbox_ptr, raw ? PyLong_FromVoidPtr((void *)raw) : new_ref(&_Py_NoneStruct))
/* A PyObject* argument is borrowed from the caller; NULL arrives as None. */
CBOX(cbox_pyobject, new_ref(raw ? (PyObject *)raw : &_Py_NoneStruct))

/* ---- the call ----------------------------------------------------------------------- */

/* Calls the cell's callable with the NARGS boxed arguments (releasing them); the result in
 * fr->result, or NULL with an exception set (also when the thunk is closed: the host then
 * raises RuntimeError). */
INLINE PyObject *cb_invoke(CbFrame *fr, ThunkCell *cell, size_t nargs, int64_t nboxed) {
    PyObject *callable = cell->callable;
    if (UNLIKELY(callable == NULL)) {
        return NULL;
    }
    incref(callable); /* the callable may close its own thunk */
    PyObject *res = vectorcall(callable, &fr->argv[1], nargs | PY_VECTORCALL_ARGUMENTS_OFFSET);
    decref(callable);
    /* nboxed (== nargs: every argument was boxed to get here) is read before the call. */
    for (int64_t k = 1; k <= nboxed; k++) {
        decref(fr->argv[k]);
    }
    fr->nboxed = 0;
    fr->result = res;
    return res;
}

PN Ret cb_call(CbFrame *fr) {
    if (UNLIKELY(cb_invoke(fr, CELL, VALUE(_JIT_NARGS), fr->nboxed) == NULL)) {
        return jitload_fast_cb_error(fr, CELL);
    }
    NEXT();
}

/* ---- results ------------------------------------------------------------------------ */

#define SLOW(kind)                                                        \
    do {                                                                  \
        Ret out;                                                          \
        if (jitload_fast_cb_result_slow(fr, CELL, (kind), &out) < 0) {    \
            return jitload_fast_cb_error(fr, CELL);                       \
        }                                                                 \
        return out;                                                       \
    } while (0)

INLINE Ret ret_body_i64(CbFrame *fr) {
    PyObject *o = fr->result;
    if (LIKELY(exact(o, PyLong_Type))) {
        long long v = PyLong_AsLongLong(o);
        if (LIKELY(v != -1 || !PyErr_Occurred())) {
            decref(o);
            return ret_i((uint64_t)v);
        }
    }
    SLOW(K_I64);
}

INLINE Ret ret_body_sint(CbFrame *fr) {
    PyObject *o = fr->result;
    if (LIKELY(exact(o, PyLong_Type))) {
        long long v = PyLong_AsLongLong(o);
        if (LIKELY(v >= (long long)VALUE(_JIT_MIN) && v <= (long long)VALUE(_JIT_MAX) && (v != -1 || !PyErr_Occurred()))) {
            decref(o);
            return ret_i((uint64_t)v);
        }
    }
    SLOW(VALUE(_JIT_KIND));
}

INLINE Ret ret_body_u64(CbFrame *fr) {
    PyObject *o = fr->result;
    if (LIKELY(exact(o, PyLong_Type))) {
        unsigned long long v = PyLong_AsUnsignedLongLong(o);
        if (LIKELY(v != (unsigned long long)-1 || !PyErr_Occurred())) {
            decref(o);
            return ret_i(v);
        }
    }
    SLOW(K_U64);
}

INLINE Ret ret_body_uint(CbFrame *fr) {
    PyObject *o = fr->result;
    if (LIKELY(exact(o, PyLong_Type))) {
        unsigned long long v = PyLong_AsUnsignedLongLong(o);
        if (LIKELY(v <= (unsigned long long)VALUE(_JIT_MAX))) {
            decref(o);
            return ret_i(v);
        }
    }
    SLOW(VALUE(_JIT_KIND));
}

INLINE Ret ret_body_bool(CbFrame *fr) {
    PyObject *o = fr->result;
    if (LIKELY(o == &_Py_TrueStruct || o == &_Py_FalseStruct)) {
        decref(o);
        return ret_i(o == &_Py_TrueStruct);
    }
    SLOW(K_BOOL);
}

INLINE Ret ret_body_f64(CbFrame *fr) {
    PyObject *o = fr->result;
    if (LIKELY(exact(o, PyFloat_Type))) {
        double v = ((PyFloatObject *)o)->ob_fval;
        decref(o);
        return ret_bits(double_bits(v));
    }
    SLOW(K_F64);
}

INLINE Ret ret_body_f32(CbFrame *fr) {
    PyObject *o = fr->result;
    if (LIKELY(exact(o, PyFloat_Type))) {
        float v = (float)((PyFloatObject *)o)->ob_fval;
        decref(o);
        return ret_bits(float_bits(v));
    }
    SLOW(K_F32);
}

INLINE Ret ret_body_void(CbFrame *fr) {
    decref(fr->result);
    return ret_i(0);
}

INLINE Ret ret_body_ptr(CbFrame *fr) {
    PyObject *o = fr->result;
    if (o == &_Py_NoneStruct) {
        decref(o);
        return ret_i(0);
    }
    if (LIKELY(exact(o, PyLong_Type))) {
        void *v = PyLong_AsVoidPtr(o);
        if (LIKELY(v != NULL || !PyErr_Occurred())) {
            decref(o);
            return ret_i((uint64_t)v);
        }
    }
    SLOW(K_PTR);
}

/* A PyObject* result is returned as a new reference: the native caller owns it. */
INLINE Ret ret_body_pyobject(CbFrame *fr) { return ret_i((uint64_t)fr->result); }

#define RESULTS(X) X(i64) X(sint) X(u64) X(uint) X(bool) X(f64) X(f32) X(void) X(ptr) X(pyobject)

/* The last stencil of a chain: the callable's result -> the raw return value. */
#define CRET(KIND) \
    PN Ret cret_##KIND(CbFrame *fr) { return ret_body_##KIND(fr); }
RESULTS(CRET)

/* ---- fused entries for callbacks without arguments ---------------------------------- */

/* With nothing to box, the whole chain is "call, convert the result": the entry does both
 * itself, so it calls no preserve_none code and saves only the registers it uses (as the
 * wrappers' entry0_*). Same frame, same slow paths. */
#define CB0(KIND)                                                       \
    THUNK_ENTRY(cb0_##KIND, (void), (void), ()) {                       \
        CbFrame frame, *fr = &frame;                                    \
        fr->nboxed = 0;                                                 \
        fr->result = NULL;                                              \
        if (UNLIKELY(cb_invoke(fr, CELL, 0, 0) == NULL)) {              \
            return jitload_fast_cb_error(fr, CELL);                     \
        }                                                               \
        return ret_body_##KIND(fr);                                     \
    }
RESULTS(CB0)

/* ---- fused entries for callbacks of one or two 64-bit integers ----------------------- */

/* cb1_*, cb2_*: the whole chain (entry, boxing, call, result) in one stencil for callbacks
 * whose arguments are one or two int64/uint64 (_JIT_BOXk: PyLong_FromLongLong or
 * PyLong_FromUnsignedLongLong, as cbox_i64/cbox_u64). Same frame, same bookkeeping (argv,
 * nboxed) and slow paths as the chain: a failed box goes to jitload_fast_cb_error, which
 * releases the arguments boxed so far. */
HOLE(_JIT_BOX0);
HOLE(_JIT_BOX1);

#define CB_BOX(K, raw)                                                      \
    do {                                                                    \
        PyObject *o_ = ((PyObject *(*)(uint64_t))_JIT_BOX##K)(raw);         \
        if (UNLIKELY(o_ == NULL)) {                                         \
            return jitload_fast_cb_error(fr, CELL);                         \
        }                                                                   \
        fr->argv[K + 1] = o_;                                               \
        fr->nboxed = K + 1;                                                 \
    } while (0)

#define CBN(N, KIND, PARAMS, ARGS, BOXES)                                   \
    THUNK_ENTRY(cb##N##_##KIND, PARAMS, PARAMS, ARGS) {                     \
        CbFrame frame, *fr = &frame;                                        \
        fr->nboxed = 0;                                                     \
        fr->result = NULL;                                                  \
        BOXES;                                                              \
        if (UNLIKELY(cb_invoke(fr, CELL, N, N) == NULL)) {                  \
            return jitload_fast_cb_error(fr, CELL);                         \
        }                                                                   \
        return ret_body_##KIND(fr);                                         \
    }
#define CB1(KIND) CBN(1, KIND, (uint64_t a), (a), CB_BOX(0, a))
#define CB2(KIND) CBN(2, KIND, (uint64_t a, uint64_t b), (a, b), CB_BOX(0, a); CB_BOX(1, b))
RESULTS(CB1)
RESULTS(CB2)
