/* example.c: a complete extension that uses a pyssh session from C.
 *
 *   example.run(session, command, timeout=30.0) -> (status, stdout, stderr)
 *
 * runs `command` over the session and reads its output into C buffers with the
 * GIL released (other Python threads run meanwhile), then returns it as bytes.
 * Build it with setuptools (see tests/capi/setup.py):
 *
 *   Extension("example", ["example.c"], include_dirs=[pyssh.get_include()])
 *
 * It links nothing of pyssh's or libssh's: everything goes through the table
 * that pyssh_import_capi() returns. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#include "pyssh_capi.h"

typedef struct {
    const PysshCAPI *ssh; /* pyssh's C API, imported by the module's exec */
} example_state;

/* a growing buffer of bytes, filled without the GIL */
typedef struct {
    char *data;
    size_t len, cap;
} buffer;

static int
buffer_add(buffer *b, const char *p, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n) {
            cap *= 2;
        }
        char *d = realloc(b->data, cap);
        if (d == NULL) {
            return -1;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static PyObject *
run(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"session", "command", "timeout", NULL};
    const PysshCAPI *ssh = ((example_state *)PyModule_GetState(module))->ssh;
    PyObject *session;
    const char *command;
    double timeout = 30.0;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Os|d:run", kwlist, &session, &command,
                                     &timeout)) {
        return NULL;
    }
    if (!ssh->Session_Check(session)) {
        PyErr_SetString(PyExc_TypeError, "run() needs a pyssh.Session");
        return NULL;
    }

    pyssh_error err = {0};
    buffer out = {0}, errout = {0};
    int status = -1, ok = 0, nomem = 0;
    char chunk[65536];

    /* `session` stays alive: the caller's argument holds a reference */
    Py_BEGIN_ALLOW_THREADS
    pyssh_channel *ch = ssh->exec_open(session, command, timeout, &err);
    if (ch != NULL && ssh->channel_send_eof(ch, timeout, &err) == 0) {
        for (;;) {
            int stream;
            ptrdiff_t n = ssh->channel_read(ch, chunk, sizeof(chunk), &stream, timeout, &err);
            if (n < 0) {
                break;
            }
            if (n == 0) {
                ok = ssh->channel_exit_status(ch, &status, timeout, &err) == 0;
                break;
            }
            if (buffer_add(stream == PYSSH_STDOUT ? &out : &errout, chunk, (size_t)n) < 0) {
                nomem = 1;
                break;
            }
        }
    }
    ssh->channel_close(ch);
    Py_END_ALLOW_THREADS

    PyObject *result = NULL;
    if (nomem) {
        PyErr_NoMemory();
    }
    else if (!ok) {
        ssh->raise_error(&err); /* pyssh's own exception, e.g. SessionClosedError */
    }
    else {
        result = Py_BuildValue("(iy#y#)", status, out.data ? out.data : "", (Py_ssize_t)out.len,
                               errout.data ? errout.data : "", (Py_ssize_t)errout.len);
    }
    free(out.data);
    free(errout.data);
    return result;
}

static int
example_exec(PyObject *module)
{
    example_state *st = PyModule_GetState(module);
    st->ssh = pyssh_import_capi(); /* ImportError if pyssh lacks this API version */
    return st->ssh != NULL ? 0 : -1;
}

static PyMethodDef example_methods[] = {
    {"run", (PyCFunction)(void (*)(void))run, METH_VARARGS | METH_KEYWORDS,
     "run(session, command, timeout=30.0)\n--\n\nRun a command; (status, stdout, stderr)."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot example_slots[] = {
    {Py_mod_exec, example_exec},
#if PY_VERSION_HEX >= 0x030D0000
    /* safe without the GIL (free-threaded CPython): the only state is the
     * module's, set by exec, and pyssh's calls are safe from any thread */
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef example_module = {
    PyModuleDef_HEAD_INIT,
    "example",
    "pyssh's C API, used from another extension.",
    sizeof(example_state),
    example_methods,
    example_slots,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit_example(void)
{
    return PyModuleDef_Init(&example_module);
}
