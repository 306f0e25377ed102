/* Multi-phase init. GIL_SLOT selects the Py_mod_multiple_interpreters slot:
 *   0 -> no slot (loads with a shared GIL only), 1 -> per-interpreter GIL supported.
 * BEHAVIOUR in a non-main interpreter: 0 nothing, 1 segfault, 2 loop forever. */
#include <Python.h>

static PyObject *answer(PyObject *self, PyObject *unused) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, NULL}, {NULL, NULL, 0, NULL}};

static int exec_module(PyObject *module) {
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
#if BEHAVIOUR == 1
        volatile int *null = NULL;
        return *null;
#elif BEHAVIOUR == 2
        volatile unsigned long spin = 0;
        for (;;) { spin++; }
#endif
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
#if GIL_SLOT
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, MODNAME, NULL, 0, methods, slots};

PyMODINIT_FUNC INITFUNC(void) { return PyModuleDef_Init(&def); }
