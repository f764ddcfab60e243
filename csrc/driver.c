/* pyssh._ssh.Driver: many operations (Op) of many sessions moved by one thread
 * from one poll() (pyssh_wait_many), the GIL released while it waits and while
 * libssh runs. It hands back to Python only what finished: a result to act on
 * (the host key to check, the next authentication, the output of a command).
 *
 * One thread uses a Driver at a time (its worker); wake() may come from any
 * thread (a cancel). */
#include "pyssh.h"

typedef struct {
    PyObject_HEAD pyssh_state *state;
    PyObject *ops;     /* list of the pending Ops */
    pyssh_waiter wake; /* wake(): rd is PYSSH_INVALID_SOCKET when it could not be made */
    const char *busy;  /* the claim, atomically */
} DriverObject;

static PyObject *
driver_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (!PyArg_ParseTuple(args, ":Driver") || (kwds != NULL && PyDict_GET_SIZE(kwds) > 0)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "Driver() takes no arguments");
        }
        return NULL;
    }
    DriverObject *self = (DriverObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = pyssh_state_from_type(type);
    self->wake.rd = self->wake.wr = PYSSH_INVALID_SOCKET;
    self->ops = PyList_New(0);
    int err = self->ops != NULL ? pyssh_waiter_open(&self->wake) : 0;
    if (self->ops == NULL || err != 0) {
        self->wake.rd = self->wake.wr = PYSSH_INVALID_SOCKET;
        if (err != 0) {
            pyssh_set_socket_error(err);
        }
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
driver_claim(DriverObject *self)
{
    if (pyssh_atomic_cas_str(&self->busy, NULL, "busy") != NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this Driver is in use by another thread: one thread moves a Driver");
        return -1;
    }
    return 0;
}

static void
driver_unclaim(DriverObject *self)
{
    PYSSH_ATOMIC_STORE_PTR(&self->busy, NULL);
}

PyDoc_STRVAR(driver_add_doc, "add($self, op, /)\n--\n\n"
                             "Move `op` (an Op not started elsewhere) from now on.");

static PyObject *
driver_add(DriverObject *self, PyObject *op)
{
    if (driver_claim(self) < 0) {
        return NULL;
    }
    if (pyssh_op_check(self->state, op) < 0) {
        driver_unclaim(self);
        return NULL;
    }
    /* its waiter first: an Op in the list is never without one */
    if (pyssh_many_attach(pyssh_op_entry(op), self->wake.rd, self->wake.wr) < 0 ||
        PyList_Append(self->ops, op) < 0) {
        pyssh_many_detach(pyssh_op_entry(op));
        pyssh_op_give_back(op); /* not taken after all: wait() may still move it */
        driver_unclaim(self);
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    }
    driver_unclaim(self);
    Py_RETURN_NONE;
}

/* Conclude what finished; keep the rest. Returns the finished Ops (a new list). */
static PyObject *
driver_collect(DriverObject *self)
{
    PyObject *done = PyList_New(0), *left = PyList_New(0);
    Py_ssize_t n = PyList_GET_SIZE(self->ops);
    for (Py_ssize_t i = 0; done != NULL && left != NULL && i < n; i++) {
        PyObject *op = PyList_GET_ITEM(self->ops, i);
        pyssh_many *e = pyssh_op_entry(op);
        if (pyssh_op_is_done(op)) {
            /* concluded by a collect that then ran out of memory: not twice */
        }
        else if (e->rc != PYSSH_AGAIN) {
            pyssh_op_conclude(op); /* a callback may run here (between chunks) */
            pyssh_op_unclaim(op);
        }
        else if (e->logs != NULL) {
            pyssh_log_emit(e->s, e->logs);
            e->logs = NULL;
        }
        if (PyList_Append(pyssh_op_is_done(op) ? done : left, op) < 0) {
            Py_CLEAR(done);
        }
    }
    if (done == NULL || left == NULL) {
        Py_XDECREF(done);
        Py_XDECREF(left);
        return NULL; /* (the ops stay: none is lost) */
    }
    Py_SETREF(self->ops, left);
    return done;
}

/* One slice of waiting without the GIL; -1 with an exception when poll failed. */
static int
driver_slice(DriverObject *self, double end, int *woken)
{
    Py_ssize_t n = PyList_GET_SIZE(self->ops);
    pyssh_many **ents = PyMem_Malloc(sizeof(*ents) * (size_t)(n > 0 ? n : 1));
    if (ents == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ents[i] = pyssh_op_entry(PyList_GET_ITEM(self->ops, i));
    }
    int k, err = 0;
    Py_BEGIN_ALLOW_THREADS
    k = pyssh_wait_many(ents, (int)n, end, self->wake.rd, woken, &err);
    Py_END_ALLOW_THREADS
    PyMem_Free(ents);
    if (k < 0) {
        pyssh_set_socket_error(err);
    }
    return k < 0 ? -1 : 0;
}

PyDoc_STRVAR(driver_wait_doc,
             "wait($self, /, timeout=None)\n--\n\n"
             "Move the operations until one or more finish, `timeout` seconds pass or wake()\n"
             "is called (also when there are none); return the finished ones (their\n"
             "result() is ready), maybe none.\n"
             "Signal handlers run between slices (Ctrl-C raises KeyboardInterrupt; the\n"
             "operations stay, unfinished).");

static PyObject *
driver_wait(DriverObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O&:wait", kwlist, pyssh_total_deadline_conv,
                                     &dl) ||
        driver_claim(self) < 0) {
        return NULL;
    }
    PyObject *done = NULL;
    for (;;) {
        int woken = 0;
        double end = pyssh_monotonic() + pyssh_slice_seconds();
        if (dl.timeout >= 0 && dl.expires < end) {
            end = dl.expires;
        }
        /* (with no operations it still waits, for wake() or the timeout: a
         * worker whose flows wait for its thread pool must not spin) */
        if (driver_slice(self, end, &woken) < 0 || (done = driver_collect(self)) == NULL) {
            break;
        }
        if (PyList_GET_SIZE(done) > 0 || woken ||
            (dl.timeout >= 0 && pyssh_monotonic() >= dl.expires)) {
            break;
        }
        Py_CLEAR(done);
        if (PyErr_CheckSignals() < 0) {
            break;
        }
    }
    driver_unclaim(self);
    return done;
}

PyDoc_STRVAR(driver_wake_doc, "wake($self, /)\n--\n\n"
                              "Make the wait() under way (in any thread) return now.");

static PyObject *
driver_wake(DriverObject *self, PyObject *Py_UNUSED(ignored))
{
    pyssh_waiter_ring(&self->wake);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(driver_pending_doc, "pending($self, /)\n--\n\n"
                                 "The operations not finished yet (a new list).");

static PyObject *
driver_pending(DriverObject *self, PyObject *Py_UNUSED(ignored))
{
    if (driver_claim(self) < 0) {
        return NULL;
    }
    PyObject *r = PyList_GetSlice(self->ops, 0, PY_SSIZE_T_MAX);
    driver_unclaim(self);
    return r;
}

PyDoc_STRVAR(driver_abandon_doc,
             "abandon($self, /)\n--\n\n"
             "Give up every pending operation: each gives back what it holds (a channel's\n"
             "claim, so that it can be closed) and ends with SSHError, without another step.");

static PyObject *
driver_abandon(DriverObject *self, PyObject *Py_UNUSED(ignored))
{
    if (driver_claim(self) < 0) {
        return NULL;
    }
    PyObject *ops = self->ops;
    self->ops = PyList_New(0);
    if (self->ops == NULL) {
        self->ops = ops;
        driver_unclaim(self);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ops); i++) {
        pyssh_op_abandon(PyList_GET_ITEM(ops, i));
        pyssh_op_unclaim(PyList_GET_ITEM(ops, i));
    }
    Py_DECREF(ops);
    driver_unclaim(self);
    Py_RETURN_NONE;
}

static Py_ssize_t
driver_len(DriverObject *self)
{
    /* claimed: wait() replaces the list (and another thread may ask, without a GIL) */
    if (driver_claim(self) < 0) {
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(self->ops);
    driver_unclaim(self);
    return n;
}

static int
driver_traverse(DriverObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->ops);
    return 0;
}

/* The pending ops leave their sessions' waiters: the pipe they ring goes. */
static void
driver_detach_all(DriverObject *self)
{
    for (Py_ssize_t i = 0; self->ops != NULL && i < PyList_GET_SIZE(self->ops); i++) {
        pyssh_many_detach(pyssh_op_entry(PyList_GET_ITEM(self->ops, i)));
    }
}

static int
driver_clear(DriverObject *self)
{
    driver_detach_all(self);
    Py_CLEAR(self->ops);
    return 0;
}

static void
driver_dealloc(DriverObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    driver_clear(self);
    if (self->wake.rd != PYSSH_INVALID_SOCKET || self->wake.wr != PYSSH_INVALID_SOCKET) {
        pyssh_waiter_close(&self->wake);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef driver_methods[] = {
    {"add", (PyCFunction)driver_add, METH_O, driver_add_doc},
    {"wait", (PyCFunction)(void (*)(void))driver_wait, METH_VARARGS | METH_KEYWORDS,
     driver_wait_doc},
    {"wake", (PyCFunction)driver_wake, METH_NOARGS, driver_wake_doc},
    {"pending", (PyCFunction)driver_pending, METH_NOARGS, driver_pending_doc},
    {"abandon", (PyCFunction)driver_abandon, METH_NOARGS, driver_abandon_doc},
    {NULL, NULL, 0, NULL}};

static PyType_Slot driver_slots[] = {
    {Py_tp_doc, "Driver()\n--\n\nMoves many Ops of many sessions from one poll() in C, the\n"
                "GIL released (pyssh.Group's engine). One thread uses it at a time."},
    {Py_tp_new, driver_new},
    {Py_tp_dealloc, driver_dealloc},
    {Py_tp_traverse, driver_traverse},
    {Py_tp_clear, driver_clear},
    {Py_tp_methods, driver_methods},
    {Py_sq_length, driver_len},
    {0, NULL}};

PyType_Spec pyssh_driver_spec = {
    .name = "pyssh._ssh.Driver",
    .basicsize = sizeof(DriverObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = driver_slots,
};
