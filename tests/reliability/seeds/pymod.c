/* Fuzz seed: a small CPython extension module (needs libpython to link). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static PyObject *add(PyObject *self, PyObject *args) {
  long a, b;
  if (!PyArg_ParseTuple(args, "ll", &a, &b)) return NULL;
  return PyLong_FromLong(a + b);
}
static PyObject *greet(PyObject *self, PyObject *name) { return PyUnicode_FromFormat("hello %S", name); }
static PyMethodDef methods[] = {{"add", add, METH_VARARGS, NULL}, {"greet", greet, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "seedmod", NULL, -1, methods};
PyMODINIT_FUNC PyInit_seedmod(void) { return PyModule_Create(&def); }
