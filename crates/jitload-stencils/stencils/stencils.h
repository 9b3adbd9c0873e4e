/* Shared definitions for jitload's stencils (see stencils.c).
 *
 * Deliberately no Python headers: the stencils are compiled once at build time and patched
 * into whatever CPython runs the abi3 wheel (3.10+), so they use only the parts of the ABI
 * that every GIL build of those versions shares: the object header, the float object's
 * value, a tuple's size, Py_buffer, and exported C API functions (reached through holes).
 * The host refuses to use the stencils on debug and free-threaded builds, whose object
 * header differs.
 */
#ifndef JITLOAD_STENCILS_H
#define JITLOAD_STENCILS_H

#include <stddef.h>
#include <stdint.h>

/* Stencils chain with this convention: every register is an argument or scratch register,
 * so continuations pass the frame in registers and nothing is saved on the way. */
#define PN __attribute__((preserve_none))
/* A continuation is a jump, never a call: the chain uses no stack per stencil. */
#define MUSTTAIL [[clang::musttail]]
/* Hidden symbols are known to be "in this module": calls to them become `jmp rel32`
 * (R_X86_64_PLT32) instead of loads from a GOT. Used only for continuations. */
#define HIDDEN __attribute__((visibility("hidden")))
#define INLINE static inline __attribute__((always_inline))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A hole: an external symbol whose *address* is the patched value. With -fpic and default
 * visibility every use is a load from a GOT slot (R_X86_64_(REX_)GOTPCRELX), which the
 * patcher fills or relaxes to an immediate / direct call. */
#define HOLE(name) extern char name[]
#define VALUE(name) ((uintptr_t)(name))

/* ---- the CPython ABI subset --------------------------------------------------------- */

typedef intptr_t Py_ssize_t;
typedef struct PyObject {
    Py_ssize_t ob_refcnt;
    void *ob_type;
} PyObject;
typedef struct {
    PyObject ob_base;
    Py_ssize_t ob_size;
} PyVarObject;
typedef struct {
    PyObject ob_base;
    double ob_fval;
} PyFloatObject;
typedef struct {
    void *buf;
    PyObject *obj;
    Py_ssize_t len;
    Py_ssize_t itemsize;
    int readonly;
    int ndim;
    char *format;
    Py_ssize_t *shape;
    Py_ssize_t *strides;
    Py_ssize_t *suboffsets;
    void *internal;
} Py_buffer;
_Static_assert(sizeof(Py_buffer) == 80, "Py_buffer is 80 bytes on 64-bit CPython");

#define PY_VECTORCALL_ARGUMENTS_OFFSET ((size_t)1 << 63)
#define PyBUF_SIMPLE 0

extern long long PyLong_AsLongLong(PyObject *);
extern unsigned long long PyLong_AsUnsignedLongLong(PyObject *);
extern void *PyLong_AsVoidPtr(PyObject *);
extern PyObject *PyLong_FromLongLong(long long);
extern PyObject *PyLong_FromUnsignedLongLong(unsigned long long);
extern PyObject *PyLong_FromVoidPtr(void *);
extern PyObject *PyFloat_FromDouble(double);
extern PyObject *PyErr_Occurred(void);
extern int PyObject_GetBuffer(PyObject *, Py_buffer *, int);
extern void PyBuffer_Release(Py_buffer *);
extern void *PyEval_SaveThread(void);
extern void PyEval_RestoreThread(void *);
extern int PyGILState_Ensure(void);
extern void PyGILState_Release(int);
extern void *PyGILState_GetThisThreadState(void);
extern PyObject *PyObject_Vectorcall(PyObject *, PyObject *const *, size_t, PyObject *);
extern void _Py_Dealloc(PyObject *);
extern char PyLong_Type[], PyFloat_Type[];
extern PyObject _Py_NoneStruct, _Py_TrueStruct, _Py_FalseStruct;
/* The thread state attached to this thread on 3.12+ (PyThreadState_GetUnchecked), the one
 * holding the GIL on 3.10/3.11 (_PyThreadState_UncheckedGet): the host resolves it. */
HOLE(_JIT_TSTATE_GET);

/* Python functions (exact PyFunction_Type) are called through their own vectorcall slot, as
 * CPython's eval loop calls them, instead of through PyObject_Vectorcall: that skips its
 * thread-state fetch, the generic slot lookup and _Py_CheckFunctionResult (a Python
 * function's result is never NULL without, or non-NULL with, an exception). The slot's
 * offset is read at call time from the type (tp_vectorcall_offset, at the same offset in
 * every 64-bit CPython 3.8+ PyTypeObject), the slot from the function. The host checks the
 * layout at start-up (tp_flags against PyType_GetFlags) and otherwise resolves the hole to 1,
 * a type no object has: every callable then takes PyObject_Vectorcall. */
HOLE(_JIT_FUNCTION_TYPE);
#define TP_VECTORCALL_OFFSET 56
typedef PyObject *(*vectorcallfunc)(PyObject *, PyObject *const *, size_t, PyObject *);
INLINE PyObject *vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf) {
    void *type = callable->ob_type;
    if (LIKELY(type == (void *)_JIT_FUNCTION_TYPE)) {
        Py_ssize_t offset = *(Py_ssize_t *)((char *)type + TP_VECTORCALL_OFFSET);
        vectorcallfunc slot = *(vectorcallfunc *)((char *)callable + offset);
        if (LIKELY(slot != NULL)) {
            return slot(callable, args, nargsf, NULL);
        }
    }
    return PyObject_Vectorcall(callable, args, nargsf, NULL);
}

/* Stable-ABI reference counting: plain increments, deallocation at zero. Immortal objects
 * (3.12+) are designed to tolerate this (PEP 683). */
INLINE void incref(PyObject *o) { o->ob_refcnt++; }
INLINE void decref(PyObject *o) {
    if (--o->ob_refcnt == 0) _Py_Dealloc(o);
}
INLINE int exact(PyObject *o, char *type) { return o->ob_type == (void *)type; }

/* The callback handshake's slot (docs in src/frames.rs): one word of the host's
 * initial-exec TLS, at offset _JIT_TLS from the thread pointer in every thread. It holds the
 * newest running wrapper frame of this thread (NULL: none); a failing callback stores its
 * exception in that frame's `pending`, which the wrapper checks on return. The offset is an absolute 32-bit displacement (`mov %fs:_JIT_TLS, reg`,
 * R_X86_64_32S), so the slot costs no register and no load of its address. The "memory"
 * clobbers order the accesses with the frame's stores: a callback reads the frame. */
INLINE uintptr_t slot_get(void) {
    uintptr_t v;
    __asm__ volatile("movq %%fs:_JIT_TLS, %0" : "=r"(v) : : "memory");
    return v;
}
INLINE void slot_set(uintptr_t v) { __asm__ volatile("movq %0, %%fs:_JIT_TLS" : : "r"(v) : "memory"); }

/* ---- the engine's epoch guard, inline ------------------------------------------------
 * What jitload_codemem::grace's enter() and exit() do, on the same words (a contract: the
 * layout is documented in grace.rs and checked by its test `the_inline_guard_contract_holds`).
 * Each thread has 64-bit words of the host's initial-exec TLS at %fs:_JIT_GRACE
 * (`_JIT_GRACE` an absolute 32-bit displacement, like _JIT_TLS):
 *   +8   the epoch the outermost call began in; GRACE_IDLE outside calls; GRACE_UNREGISTERED
 *        (0) before the thread's first call
 *   +16  flags: a stub call on this thread recorded an error; retired code waits for this
 *        thread's call (set by the reclaimer); a count of this thread's wrapper frames
 *        holding a callback's exception (src/frames.rs): any of them sends the exit to its
 *        slow path, which also tests the frame's `pending`
 * _JIT_GRACE_EPOCH is the address of the global epoch (a 64-bit word, read with one
 * `movabs` from its absolute address, R_X86_64_64: a relaxed atomic load on x86-64, and one
 * instruction where a GOT load and a load through it are two). Entering returns the token, the epoch word as it
 * was; an idle word gets the global epoch, published with a plain store and a compiler
 * barrier where the reclaimer fences for every thread (membarrier: grace.rs's
 * readers_fence() is false), else with a locked exchange (a full barrier, as grace.rs's
 * SeqCst fence: the store is visible before any code pointer is read). Leaving stores the
 * token back (a nested call leaves the word as it found it, the outermost leaves it idle:
 * x86-64 stores are release stores) and tests the flags word. The slow paths are the
 * host's: jitload_fast_grace_enter registers the thread and enters; exit_slow frees what
 * waits (without the GIL) and raises the stub-call error (dropping the result). */
HOLE(_JIT_GRACE_EPOCH);
#define GRACE_UNREGISTERED 0
#define GRACE_IDLE UINT64_MAX
extern void jitload_fast_grace_enter(void);
extern PyObject *jitload_fast_grace_exit_slow(PyObject *result);
#define GRACE_GET(OFFSET)                                                                    \
    ({                                                                                       \
        uint64_t v_;                                                                         \
        __asm__ volatile("movq %%fs:_JIT_GRACE+" #OFFSET ", %0" : "=r"(v_) : : "memory");  \
        v_;                                                                                  \
    })
/* "re": a register or a sign-extended 32-bit immediate (GRACE_IDLE is -1). */
#define GRACE_SET(OFFSET, v) __asm__ volatile("movq %0, %%fs:_JIT_GRACE+" #OFFSET : : "re"((uint64_t)(v)) : "memory")

/* Enters the call; stores the token grace_exit needs in *token (the caller's frame: read
 * back after the call, it needs no callee-saved register). */
INLINE void grace_enter(int fence, uint64_t *token) {
    uint64_t old = GRACE_GET(8);
    *token = old;
    if (LIKELY(old == GRACE_IDLE)) { /* the outermost call publishes its epoch */
        uint64_t epoch;
        __asm__ volatile("movabsq _JIT_GRACE_EPOCH, %0" : "=a"(epoch) : : "memory"); /* rax only */
        if (fence) {
            __asm__ volatile("xchgq %0, %%fs:_JIT_GRACE+8" : "+r"(epoch) : : "memory");
        } else {
            GRACE_SET(8, epoch);
        }
    } else if (UNLIKELY(old == GRACE_UNREGISTERED)) {
        jitload_fast_grace_enter(); /* registers, then enters as the outermost call */
        *token = GRACE_IDLE;
    }
}

/* The same for a thunk's entry (thunk.c), which keeps the token in a register. Never fenced:
 * what the mark protects is the thunk's own code, which the thread reached before the mark;
 * a thunk is retired only by a thread holding the GIL after its Thunk died, and a call that
 * began before that (happens-before, e.g. through the GIL this call waits for or releases)
 * made its mark visible first. A call that races with the death of its thunk is a dangling
 * call, as with any freed function pointer. */
INLINE uint64_t grace_enter_thunk(void) {
    uint64_t token;
    grace_enter(0, &token);
    return token;
}

/* Ends the call; whether the host's slow exit must run (code may be freed, or an error waits). */
INLINE int grace_exit(uint64_t token) {
    GRACE_SET(8, token);
    int flagged;
    __asm__ volatile("cmpq $0, %%fs:_JIT_GRACE+16" : "=@ccne"(flagged) : : "memory");
    return UNLIKELY(flagged);
}

/* Floating-point values travel in integer registers along the chains: their bits. */
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

/* ---- kinds: the C types of a signature (mirrored in src/sig.rs) --------------------- */
enum {
    K_VOID = 0, K_BOOL, K_I8, K_I16, K_I32, K_I64, K_U8, K_U16, K_U32, K_U64,
    K_F32, K_F64, K_PTR, K_BUFFER, K_PYOBJECT
};

/* Both return registers at once: {rax, xmm0} under the SysV ABI. */
typedef struct {
    uint64_t i;
    double d;
} Ret;

/* ---- call wrappers: Python -> native (mirrored in src/frames.rs) -------------------- */
#define MAX_BUFFERS 16
typedef struct CallFrame {
    uint64_t i[6];          /* integer-class register arguments (rdi, rsi, rdx, rcx, r8, r9) */
    uint64_t f[8];          /* SSE arguments (xmm0-7): a double, or a float in the low half */
    uint64_t stack[16];     /* memory-class arguments, in order (MAX_STACK_ARGS) */
    uint64_t ret_i;         /* rax after the call */
    uint64_t ret_d;         /* xmm0 after the call */
    PyObject *self;         /* the wrapper's state object (for error messages) */
    uintptr_t prev;         /* the handshake slot before this frame was pushed */
    PyObject *pending;      /* an exception a callback raised during the call, or NULL */
    uintptr_t token;        /* what the call guard's enter returned */
    Py_buffer *bufs;        /* MAX_BUFFERS slots (entries with buffers only) */
    int64_t nbuf;           /* slots in use */
} CallFrame;
_Static_assert(offsetof(CallFrame, ret_i) == 240, "frames.rs");
_Static_assert(offsetof(CallFrame, self) == 256, "frames.rs");
_Static_assert(offsetof(CallFrame, prev) == 264, "frames.rs");
_Static_assert(offsetof(CallFrame, pending) == 272, "frames.rs");
_Static_assert(offsetof(CallFrame, bufs) == 288, "frames.rs");
_Static_assert(sizeof(CallFrame) == 304, "frames.rs");

/* ---- callback thunks: native -> Python (mirrored in src/frames.rs) ------------------ */
#define MAX_CALLBACK_ARGS 30
#define MAX_STACK_ARGS 16
typedef struct CbFrame {
    uint64_t i[6];
    uint64_t f[8];
    uint64_t stack[MAX_STACK_ARGS]; /* memory-class arguments, copied from the caller's frame */
    PyObject *argv[1 + MAX_CALLBACK_ARGS]; /* argv[0] is scratch (PY_VECTORCALL_ARGUMENTS_OFFSET) */
    int64_t nboxed;                        /* argv[1..=nboxed] hold references */
    PyObject *result;                      /* what the callable returned (a reference) */
} CbFrame;
_Static_assert(offsetof(CbFrame, stack) == 112, "frames.rs");
_Static_assert(offsetof(CbFrame, argv) == 240, "frames.rs");
_Static_assert(offsetof(CbFrame, nboxed) == 488, "frames.rs");
_Static_assert(sizeof(CbFrame) == 504, "frames.rs");

/* The mutable part of a thunk, owned by the host's Thunk object (the code is read-only). */
typedef struct ThunkCell {
    PyObject *callable; /* a reference; NULL once the thunk is closed */
    uint64_t error_i;   /* returned when the callback fails */
    uint64_t error_d;
} ThunkCell;

/* ---- host helpers (slow paths, in the host crate) ----------------------------------- */
extern PyObject *jitload_fast_bad_nargs(PyObject *self, Py_ssize_t nargs);
extern int jitload_fast_conv_slow(CallFrame *fr, PyObject *o, uintptr_t arg, uintptr_t kind, uintptr_t dest);
extern PyObject *jitload_fast_raise_pending(PyObject *result, CallFrame *fr);
extern PyObject *jitload_fast_null_result(CallFrame *fr);
extern Ret jitload_fast_cb_error(CbFrame *fr, ThunkCell *cell);
extern int jitload_fast_cb_result_slow(CbFrame *fr, ThunkCell *cell, uintptr_t kind, Ret *out);
/* A thunk's exit, tail-called by its entry: ends the thread's mark (token) after the thunk's
 * last instruction, frees what waited for it (without the GIL: gil_held says whether this
 * thread has it), returns {i, d} to the thunk's caller. */
extern Ret jitload_fast_cb_leave(uint64_t i, double d, uint64_t token, uint64_t gil_held);

#endif
