/* Call wrappers: a Python call (METH_FASTCALL) to a native function, as a chain of stencils.
 *
 *   entry_*   native convention: checks the argument count, sets up a CallFrame on its own
 *             stack, links it for the callback handshake, calls the chain (not a tail call:
 *             it cleans up afterwards, like CPython's JIT trampoline), returns the result.
 *   conv_*    one per argument: Python object args[ARG] -> raw value at frame offset DEST.
 *             Exact int/float/bool/None take the inline path; everything else, and every
 *             error, goes to the host's slow path, which converts generally or raises.
 *   call_*    loads the argument registers from the frame and calls TARGET.
 *   box_*     raw result -> Python object; returns to the entry.
 *
 * Holes: _JIT_NARGS, _JIT_ARG, _JIT_DEST, _JIT_KIND, _JIT_MIN, _JIT_MAX, _JIT_TARGET, _JIT_TOP,
 * _JIT_GUARD_{ENTER,EXIT,CTX}, C API functions and host helpers. Continuation: _JIT_CONTINUE.
 */
#include "stencils.h"

HOLE(_JIT_NARGS);
HOLE(_JIT_ARG);
HOLE(_JIT_DEST);
HOLE(_JIT_KIND);
HOLE(_JIT_MIN);
HOLE(_JIT_MAX);
HOLE(_JIT_TARGET);
HOLE(_JIT_TOP);
HOLE(_JIT_GUARD_ENTER);
HOLE(_JIT_GUARD_EXIT);
HOLE(_JIT_GUARD_CTX);

extern PN HIDDEN PyObject *_JIT_CONTINUE(PyObject *const *args, CallFrame *fr);

#define NEXT() MUSTTAIL return _JIT_CONTINUE(args, fr)

INLINE double as_double(uint64_t bits) {
    union { uint64_t u; double d; } x = {.u = bits};
    return x.d;
}
INLINE uint64_t double_bits(double d) {
    union { double d; uint64_t u; } x = {.d = d};
    return x.u;
}
INLINE uint64_t float_bits(float f) {
    union { float f; uint32_t u; } x = {.f = f};
    return x.u;
}
INLINE float bits_float(uint64_t bits) {
    union { uint32_t u; float f; } x = {.u = (uint32_t)bits};
    return x.f;
}

/* ---- entries ------------------------------------------------------------------------ */

INLINE PyObject *entry(PyObject *self, PyObject *const *args, Py_ssize_t nargs, Py_buffer *bufs, int guard) {
    if (UNLIKELY(nargs != (Py_ssize_t)VALUE(_JIT_NARGS))) {
        return jitload_fast_bad_nargs(self, nargs);
    }
    CallFrame fr;
    fr.self = self;
    fr.pending = NULL;
    if (bufs) {
        fr.bufs = bufs;
        fr.nbuf = 0;
    }
    /* The handshake (docs in src/frames.rs): callbacks on this thread find this frame. */
    CallFrame **top = (CallFrame **)_JIT_TOP;
    fr.thread = thread_pointer();
    fr.prev = *top;
    *top = &fr;
    if (guard) {
        fr.token = ((uintptr_t (*)(void *))_JIT_GUARD_ENTER)(_JIT_GUARD_CTX);
    }
    PyObject *r = _JIT_CONTINUE(args, &fr);
    if (guard) {
        if (UNLIKELY(((int (*)(void *, uintptr_t))_JIT_GUARD_EXIT)(_JIT_GUARD_CTX, fr.token) < 0) && r) {
            decref(r);
            r = NULL;
        }
    }
    if (bufs) {
        for (int64_t k = 0; k < fr.nbuf; k++) {
            PyBuffer_Release(&bufs[k]);
        }
    }
    if (LIKELY(*top == &fr)) {
        *top = fr.prev;
    } else {
        jitload_fast_unlink(&fr);
    }
    if (UNLIKELY(fr.pending != NULL)) {
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
    return entry(self, args, nargs, NULL, 1);
}
PyObject *entry_guard_buffers(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer bufs[MAX_BUFFERS];
    return entry(self, args, nargs, bufs, 1);
}

/* ---- argument conversions ----------------------------------------------------------- */

#define STORE(v) (*(uint64_t *)((char *)fr + VALUE(_JIT_DEST)) = (uint64_t)(v))
#define ARG() (args[VALUE(_JIT_ARG)])
#define SLOW(kind)                                                                    \
    do {                                                                              \
        if (jitload_fast_conv_slow(fr, o, VALUE(_JIT_ARG), (kind), VALUE(_JIT_DEST)) < 0) \
            return NULL;                                                              \
        NEXT();                                                                       \
    } while (0)

PN PyObject *conv_i64(PyObject *const *args, CallFrame *fr) {
    PyObject *o = ARG();
    if (LIKELY(exact(o, PyLong_Type))) {
        long long v = PyLong_AsLongLong(o);
        if (LIKELY(v != -1 || !PyErr_Occurred())) {
            STORE(v);
            NEXT();
        }
    }
    SLOW(K_I64);
}

/* Narrower signed integers: the range is patched in (MIN, MAX), the kind names the type. */
PN PyObject *conv_sint(PyObject *const *args, CallFrame *fr) {
    PyObject *o = ARG();
    if (LIKELY(exact(o, PyLong_Type))) {
        long long v = PyLong_AsLongLong(o);
        if (LIKELY(v >= (long long)VALUE(_JIT_MIN) && v <= (long long)VALUE(_JIT_MAX) && (v != -1 || !PyErr_Occurred()))) {
            STORE(v);
            NEXT();
        }
    }
    SLOW(VALUE(_JIT_KIND));
}

PN PyObject *conv_u64(PyObject *const *args, CallFrame *fr) {
    PyObject *o = ARG();
    if (LIKELY(exact(o, PyLong_Type))) {
        unsigned long long v = PyLong_AsUnsignedLongLong(o);
        if (LIKELY(v != (unsigned long long)-1 || !PyErr_Occurred())) {
            STORE(v);
            NEXT();
        }
    }
    SLOW(K_U64);
}

PN PyObject *conv_uint(PyObject *const *args, CallFrame *fr) {
    PyObject *o = ARG();
    if (LIKELY(exact(o, PyLong_Type))) {
        unsigned long long v = PyLong_AsUnsignedLongLong(o);
        if (LIKELY(v <= (unsigned long long)VALUE(_JIT_MAX))) {
            STORE(v);
            NEXT();
        }
    }
    SLOW(VALUE(_JIT_KIND));
}

PN PyObject *conv_f64(PyObject *const *args, CallFrame *fr) {
    PyObject *o = ARG();
    if (LIKELY(exact(o, PyFloat_Type))) {
        STORE(double_bits(((PyFloatObject *)o)->ob_fval));
        NEXT();
    }
    SLOW(K_F64);
}

PN PyObject *conv_f32(PyObject *const *args, CallFrame *fr) {
    PyObject *o = ARG();
    if (LIKELY(exact(o, PyFloat_Type))) {
        STORE(float_bits((float)((PyFloatObject *)o)->ob_fval));
        NEXT();
    }
    SLOW(K_F32);
}

PN PyObject *conv_bool(PyObject *const *args, CallFrame *fr) {
    PyObject *o = ARG();
    if (LIKELY(o == &_Py_TrueStruct || o == &_Py_FalseStruct)) {
        STORE(o == &_Py_TrueStruct);
        NEXT();
    }
    SLOW(K_BOOL);
}

PN PyObject *conv_ptr(PyObject *const *args, CallFrame *fr) {
    PyObject *o = ARG();
    if (o == &_Py_NoneStruct) {
        STORE(0);
        NEXT();
    }
    if (LIKELY(exact(o, PyLong_Type))) {
        void *v = PyLong_AsVoidPtr(o);
        if (LIKELY(v != NULL || !PyErr_Occurred())) {
            STORE(v);
            NEXT();
        }
    }
    SLOW(K_PTR);
}

/* A writable buffer is passed in place and released after the call; read-only ones (whose
 * owners do not expect writes) take the slow path, which passes a copy. */
PN PyObject *conv_buffer(PyObject *const *args, CallFrame *fr) {
    PyObject *o = ARG();
    Py_buffer *view = &fr->bufs[fr->nbuf];
    if (LIKELY(PyObject_GetBuffer(o, view, PyBUF_SIMPLE) == 0)) {
        if (LIKELY(!view->readonly)) {
            fr->nbuf++;
            STORE(view->buf);
            NEXT();
        }
        PyBuffer_Release(view);
    }
    SLOW(K_BUFFER);
}

/* PyObject* arguments are borrowed: the caller's reference outlives the call. */
PN PyObject *conv_pyobject(PyObject *const *args, CallFrame *fr) {
    STORE(ARG());
    NEXT();
}

/* ---- calls -------------------------------------------------------------------------- */

#define I(k) fr->i[k]
#define F(k) as_double(fr->f[k])
#define S(k) fr->stack[k]
#define T(...) ((Ret (*)(__VA_ARGS__))_JIT_TARGET)
#define U uint64_t
#define D double
#define CALL(NAME, TYPES, ARGS)                                     \
    PN PyObject *NAME(PyObject *const *args, CallFrame *fr) {       \
        Ret r = T TYPES ARGS;                                       \
        fr->ret_i = r.i;                                            \
        fr->ret_d = double_bits(r.d);                               \
        NEXT();                                                     \
    }                                                               \
    PN PyObject *NAME##_nogil(PyObject *const *args, CallFrame *fr) { \
        void *ts = PyEval_SaveThread();                             \
        Ret r = T TYPES ARGS;                                       \
        PyEval_RestoreThread(ts);                                   \
        fr->ret_i = r.i;                                            \
        fr->ret_d = double_bits(r.d);                               \
        NEXT();                                                     \
    }

CALL(call_i0, (void), ())
CALL(call_i1, (U), (I(0)))
CALL(call_i2, (U, U), (I(0), I(1)))
CALL(call_i3, (U, U, U), (I(0), I(1), I(2)))
CALL(call_i4, (U, U, U, U), (I(0), I(1), I(2), I(3)))
CALL(call_i5, (U, U, U, U, U), (I(0), I(1), I(2), I(3), I(4)))
CALL(call_i6, (U, U, U, U, U, U), (I(0), I(1), I(2), I(3), I(4), I(5)))
/* Any mix of up to 6 integer-class and 8 SSE arguments: SysV assigns each class its own
 * registers in order, so passing all of them is correct for every such signature. */
CALL(call_full, (U, U, U, U, U, U, D, D, D, D, D, D, D, D),
     (I(0), I(1), I(2), I(3), I(4), I(5), F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7)))
/* ... and up to 16 more in memory, pushed in argument order (each 8 bytes). */
CALL(call_stack, (U, U, U, U, U, U, D, D, D, D, D, D, D, D, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U, U),
     (I(0), I(1), I(2), I(3), I(4), I(5), F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7),
      S(0), S(1), S(2), S(3), S(4), S(5), S(6), S(7), S(8), S(9), S(10), S(11), S(12), S(13), S(14), S(15)))

/* ---- results ------------------------------------------------------------------------ */

/* Only the low bits of a narrow integer result are defined by the ABI: truncate first. */
PN PyObject *box_i8(PyObject *const *args, CallFrame *fr) { return PyLong_FromLongLong((int8_t)fr->ret_i); }
PN PyObject *box_i16(PyObject *const *args, CallFrame *fr) { return PyLong_FromLongLong((int16_t)fr->ret_i); }
PN PyObject *box_i32(PyObject *const *args, CallFrame *fr) { return PyLong_FromLongLong((int32_t)fr->ret_i); }
PN PyObject *box_i64(PyObject *const *args, CallFrame *fr) { return PyLong_FromLongLong((int64_t)fr->ret_i); }
PN PyObject *box_u8(PyObject *const *args, CallFrame *fr) { return PyLong_FromLongLong((uint8_t)fr->ret_i); }
PN PyObject *box_u16(PyObject *const *args, CallFrame *fr) { return PyLong_FromLongLong((uint16_t)fr->ret_i); }
PN PyObject *box_u32(PyObject *const *args, CallFrame *fr) { return PyLong_FromLongLong((uint32_t)fr->ret_i); }
PN PyObject *box_u64(PyObject *const *args, CallFrame *fr) { return PyLong_FromUnsignedLongLong(fr->ret_i); }
PN PyObject *box_bool(PyObject *const *args, CallFrame *fr) {
    PyObject *o = (uint8_t)fr->ret_i ? &_Py_TrueStruct : &_Py_FalseStruct;
    incref(o);
    return o;
}
PN PyObject *box_f32(PyObject *const *args, CallFrame *fr) { return PyFloat_FromDouble((double)bits_float(fr->ret_d)); }
PN PyObject *box_f64(PyObject *const *args, CallFrame *fr) { return PyFloat_FromDouble(as_double(fr->ret_d)); }
PN PyObject *box_void(PyObject *const *args, CallFrame *fr) {
    incref(&_Py_NoneStruct);
    return &_Py_NoneStruct;
}
PN PyObject *box_ptr(PyObject *const *args, CallFrame *fr) {
    if (fr->ret_i == 0) {
        incref(&_Py_NoneStruct);
        return &_Py_NoneStruct;
    }
    return PyLong_FromVoidPtr((void *)fr->ret_i);
}
/* A PyObject* result is a new reference (the C API's convention); NULL propagates the
 * exception the function set, or becomes a SystemError. */
PN PyObject *box_pyobject(PyObject *const *args, CallFrame *fr) {
    PyObject *o = (PyObject *)fr->ret_i;
    if (UNLIKELY(o == NULL)) {
        return jitload_fast_null_result(fr);
    }
    return o;
}
