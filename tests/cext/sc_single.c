/* Single-phase init (legacy PyModule_Create): never loads in an isolated sub-interpreter. */
#include <Python.h>

static PyObject *answer(PyObject *self, PyObject *unused) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, MODNAME, NULL, -1, methods};

PyMODINIT_FUNC INITFUNC(void) { return PyModule_Create(&def); }
