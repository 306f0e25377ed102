/* Multi-phase init that declares per-interpreter GIL support but keeps process-wide state:
 * a dict created by the first interpreter that runs exec_module, then handed to every
 * later one as the module attribute `cache` (`remember(k, v)` stores into it). Alone in one
 * interpreter it is fine; two live interpreters share one object across their GILs.
 * SECOND_LOAD=1: the second exec_module in a process segfaults instead. */
#include <Python.h>

static PyObject *cache = NULL; /* the bug: one per process, not per module */

static PyObject *remember(PyObject *self, PyObject *args) {
    PyObject *key, *value;
    if (!PyArg_ParseTuple(args, "OO", &key, &value)) {
        return NULL;
    }
    if (PyDict_SetItem(cache, key, value) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {{"remember", remember, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};

static int exec_module(PyObject *module) {
#if SECOND_LOAD == 1
    if (cache != NULL) {
        volatile int *null = NULL;
        return *null;
    }
#endif
    if (cache == NULL) {
        cache = PyDict_New();
        if (cache == NULL) {
            return -1;
        }
    }
    return PyModule_AddObjectRef(module, "cache", cache);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {0, NULL},
};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, MODNAME, NULL, 0, methods, slots};

PyMODINIT_FUNC INITFUNC(void) { return PyModuleDef_Init(&def); }
