/* A small extension module used by the demo and the benchmarks: multi-phase init (PEP 489),
 * module state, a static constructor, and a compute-heavy function. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

static double sqrt2;  /* set by a static constructor, before PyInit runs */

__attribute__((constructor)) static void compute_constants(void) { sqrt2 = sqrt(2.0); }

typedef struct { long calls; } fastmath_state;

/* Sum of primes below n, by trial division: deliberately compute-bound. */
static PyObject *prime_sum(PyObject *module, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    fastmath_state *st = PyModule_GetState(module);
    st->calls++;
    long long total = 0;
    for (long i = 2; i < n; i++) {
        int prime = 1;
        for (long d = 2; d * d <= i; d++) {
            if (i % d == 0) { prime = 0; break; }
        }
        if (prime) total += i;
    }
    return PyLong_FromLongLong(total);
}

static PyObject *hypot_scaled(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "hypot_scaled expects 2 arguments");
        return NULL;
    }
    double x = PyFloat_AsDouble(args[0]), y = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred()) return NULL;
    return PyFloat_FromDouble(sqrt2 * hypot(x, y));
}

static PyObject *calls(PyObject *module, PyObject *unused) {
    fastmath_state *st = PyModule_GetState(module);
    return PyLong_FromLong(st->calls);
}

static PyMethodDef methods[] = {
    {"prime_sum", prime_sum, METH_O, "Sum of the primes below n."},
    {"hypot_scaled", (PyCFunction)(void (*)(void))hypot_scaled, METH_FASTCALL, "sqrt(2) * hypot(x, y)"},
    {"calls", calls, METH_NOARGS, "How many times prime_sum ran in this module instance."},
    {NULL, NULL, 0, NULL},
};

static int fastmath_exec(PyObject *m) {
    return PyModule_AddStringConstant(m, "compiled_by", "clang " __clang_version__);
}

static PyModuleDef_Slot slots[] = {{Py_mod_exec, fastmath_exec}, {0, NULL}};

static struct PyModuleDef def = {
    PyModuleDef_HEAD_INIT, "fastmath", "Demo module loaded from LLVM bitcode.",
    sizeof(fastmath_state), methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_fastmath(void) { return PyModuleDef_Init(&def); }
