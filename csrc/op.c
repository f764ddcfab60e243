/* pyssh._ssh.Op: one operation that would wait (connecting, an authentication,
 * a command), made by its method with defer=True instead of waiting.
 *
 * pyssh.Group's workers drive many of them from one poll() (driver.c); Op.wait()
 * waits for one as the method would have. The method's argument struct is
 * copied here, with the objects it points into (the method's own object, its
 * args and kwds) kept alive until the operation is released. The same
 * pyssh_op_kind describes the operation for both ways, so a method that defers
 * and one that waits run the very same steps and finish. */
#include "pyssh.h"
#include "chanio.h"

#include <string.h>

typedef struct {
    PyObject_HEAD pyssh_state *state;
    SessionObject *session; /* NULL: a socket to wait for (wait_socket) */
    PyObject *owner, *args, *kwds;
    const pyssh_op_kind *kind;
    const char *what;
    const char *busy; /* the claim: "wait" or "driver", atomically */
    int done;         /* concluded: result or exc is kept */
    PyObject *result;
    PyObject *exc, *tb; /* its traceback, set again at each raise (it would grow) */
    void *arg;          /* kind->size bytes, released once */
    pyssh_deadline dl;
    pyssh_many ent;
} OpObject;

static void
op_release(OpObject *op)
{
    pyssh_many_detach(&op->ent); /* out of the session's waiters before it ends */
    if (op->arg != NULL) {
        if (op->kind->release != NULL) {
            op->kind->release(op->session, op->arg);
        }
        PyMem_Free(op->arg);
        op->arg = NULL;
    }
}

/* Keep the exception in flight as the result. */
static void
op_keep_exception(OpObject *op)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    op->exc = value;
    op->tb = tb;
}

/* The failure of a finished entry as an exception (set). */
static void
op_raise(OpObject *op)
{
    pyssh_state *st = op->state;
    switch (op->ent.rc) {
    case PYSSH_CLOSED:
        pyssh_raise(st, PYSSH_EXC_SessionClosedError, "%s: the session was closed", op->what);
        break;
    case PYSSH_TIMEDOUT:
        pyssh_raise_timeout(st, op->what, &op->dl);
        break;
    default:
        pyssh_raise_failure(st, op->kind->exc, op->what, &op->ent.fail);
    }
}

/* Conclude with the exception in flight. */
static void
op_fail(OpObject *op)
{
    if (op->kind->failed != NULL && op->arg != NULL) {
        op->kind->failed(op->session, op->arg);
    }
    op_keep_exception(op);
    op->done = 1;
    op_release(op);
}

/* The step returned rc >= 0: finish, or step again. */
static void
op_finish(OpObject *op, int rc)
{
    PyObject *r =
        op->kind->finish != NULL ? op->kind->finish(op->session, op->arg, rc) : PyLong_FromLong(rc);
    if (r == PYSSH_OP_MORE) {
        pyssh_many_init(&op->ent);
        return;
    }
    if (r == NULL) {
        op_fail(op);
        return;
    }
    op->result = r;
    op->done = 1;
    op_release(op);
}

void
pyssh_op_conclude(PyObject *obj)
{
    OpObject *op = (OpObject *)obj;
    if (op->ent.logs != NULL) {
        pyssh_log_emit(op->session, op->ent.logs);
        op->ent.logs = NULL;
    }
    if (op->ent.rc >= 0) {
        op_finish(op, op->ent.rc);
    }
    else {
        op_raise(op);
        op_fail(op);
    }
}

void
pyssh_op_abandon(PyObject *obj)
{
    OpObject *op = (OpObject *)obj;
    if (op->done) {
        return;
    }
    if (op->ent.logs != NULL) {
        pyssh_log_emit(op->session, op->ent.logs);
        op->ent.logs = NULL;
    }
    op_release(op);
    op->done = 1;
    op->exc = PyObject_CallFunction(op->state->exc[PYSSH_EXC_SSHError], "s",
                                    "the operation was abandoned before it finished");
    if (op->exc == NULL) {
        PyErr_Clear(); /* (no memory: result() then gives None) */
        op->result = Py_NewRef(Py_None);
    }
}

void
pyssh_op_give_back(PyObject *obj)
{
    PYSSH_ATOMIC_STORE_PTR(&((OpObject *)obj)->busy, NULL);
}

void
pyssh_op_unclaim(PyObject *obj)
{
    OpObject *op = (OpObject *)obj;
    if (op->done) {
        PYSSH_ATOMIC_STORE_PTR(&op->busy, NULL); /* after done and its outcome */
    }
}

pyssh_many *
pyssh_op_entry(PyObject *op)
{
    return &((OpObject *)op)->ent;
}

int
pyssh_op_is_done(PyObject *op)
{
    return ((OpObject *)op)->done;
}

int
pyssh_op_check(pyssh_state *st, PyObject *obj)
{
    /* the type first: `obj` may be anything, and only an Op has a state */
    if (!PyObject_TypeCheck(obj, st->OpType)) {
        PyErr_SetString(PyExc_TypeError, "a Driver moves Op objects only");
        return -1;
    }
    OpObject *op = (OpObject *)obj;
    if (pyssh_atomic_cas_str(&op->busy, NULL, "driver") != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this operation is under way or done already");
        return -1;
    }
    if (op->done) {
        PYSSH_ATOMIC_STORE_PTR(&op->busy, NULL); /* not taken: wait() still gives its result */
        PyErr_SetString(PyExc_RuntimeError, "this operation is under way or done already");
        return -1;
    }
    return 0;
}

static OpObject *
op_new(pyssh_state *st, SessionObject *s, const pyssh_op_kind *kind, const char *what)
{
    OpObject *op = PyObject_GC_New(OpObject, st->OpType);
    if (op == NULL) {
        return NULL;
    }
    memset((char *)op + sizeof(PyObject), 0, sizeof(*op) - sizeof(PyObject));
    op->state = st;
    op->session = (SessionObject *)Py_XNewRef((PyObject *)s);
    op->kind = kind;
    op->what = what != NULL ? what : kind->what;
    op->ent.s = s;
    op->ent.step = kind->step;
    op->ent.dl = &op->dl;
    op->ent.fd = PYSSH_INVALID_SOCKET;
    PyObject_GC_Track(op);
    return op;
}

/* Wait here, as the method would have: pyssh_wait, then finish. */
static PyObject *
run_now(SessionObject *s, const pyssh_op_kind *kind, void *arg, pyssh_deadline *dl,
        const char *what)
{
    PyObject *r = PYSSH_OP_MORE;
    while (r == PYSSH_OP_MORE) {
        int rc = pyssh_wait(s, kind->step, arg, dl, kind->exc, what);
        if (rc < 0) {
            r = NULL;
            break;
        }
        r = kind->finish != NULL ? kind->finish(s, arg, rc) : PyLong_FromLong(rc);
    }
    if (r == NULL && kind->failed != NULL) {
        kind->failed(s, arg);
    }
    if (kind->release != NULL) {
        kind->release(s, arg);
    }
    return r;
}

PyObject *
pyssh_op_start(SessionObject *s, const pyssh_op_kind *kind, void *arg, pyssh_deadline *dl,
               const char *what, int defer, PyObject *owner, PyObject *args, PyObject *kwds)
{
    what = what != NULL ? what : kind->what;
    if (!defer) {
        return run_now(s, kind, arg, dl, what);
    }
    OpObject *op = op_new(s->state, s, kind, what);
    if (op != NULL) {
        op->arg = PyMem_Malloc(kind->size);
    }
    if (op == NULL || op->arg == NULL) {
        if (kind->release != NULL) {
            kind->release(s, arg);
        }
        Py_XDECREF(op);
        return op == NULL ? NULL : PyErr_NoMemory();
    }
    memcpy(op->arg, arg, kind->size);
    op->dl = *dl;
    op->ent.arg = op->arg;
    if (kind->relocate != NULL) {
        kind->relocate(op->arg, &op->dl);
    }
    op->owner = Py_XNewRef(owner);
    op->args = Py_XNewRef(args);
    op->kwds = Py_XNewRef(kwds);
    pyssh_many_init(&op->ent);
    return (PyObject *)op;
}

/* ---- a socket to wait for ------------------------------------------------------ */

static PyObject *
socket_ready(SessionObject *s, void *arg, int rc)
{
    (void)s;
    (void)arg;
    (void)rc;
    Py_RETURN_NONE;
}

static const pyssh_op_kind socket_kind = {"waiting for the socket",
                                          PYSSH_EXC_ConnectError,
                                          NULL,
                                          0,
                                          socket_ready,
                                          NULL,
                                          NULL,
                                          NULL,
                                          NULL};

PyDoc_STRVAR(wait_socket_doc,
             "wait_socket(fd, events, /, timeout=None, what='waiting for the socket')\n--\n\n"
             "An Op that is done once the socket `fd` is ready for `events` (POLLIN,\n"
             "POLLOUT): a non-blocking connect() going on in a Driver. Its result is None;\n"
             "after `timeout` seconds, SSHTimeoutError naming `what`.");

static PyObject *
wait_socket(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"", "", "timeout", "what", NULL};
    long long fd;
    int events;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    const char *what = socket_kind.what;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Li|O&s:wait_socket", kwlist, &fd, &events,
                                     pyssh_total_deadline_conv, &dl, &what)) {
        return NULL;
    }
    if (fd < 0 || (long long)(pyssh_socket_t)fd != fd) { /* it must fit a socket */
        PyErr_SetString(PyExc_ValueError, "fd must be an open socket");
        return NULL;
    }
    OpObject *op = op_new(PyModule_GetState(module), NULL, &socket_kind, what);
    if (op == NULL) {
        return NULL;
    }
    op->dl = dl;
    op->ent.fd = (pyssh_socket_t)fd;
    op->ent.events = (short)events;
    op->args = Py_NewRef(args);
    op->kwds = Py_XNewRef(kwds); /* `what` points into them */
    pyssh_many_init(&op->ent);
    return (PyObject *)op;
}

PyMethodDef pyssh_op_methods_module[] = {{"wait_socket", (PyCFunction)(void (*)(void))wait_socket,
                                          METH_VARARGS | METH_KEYWORDS, wait_socket_doc},
                                         {NULL, NULL, 0, NULL}};

/* ---- the Python type ------------------------------------------------------------ */

static PyObject *
op_outcome(OpObject *op)
{
    if (op->exc != NULL) {
        PyException_SetTraceback(op->exc, op->tb != NULL ? op->tb : Py_None);
        PyErr_SetObject((PyObject *)Py_TYPE(op->exc), op->exc);
        return NULL;
    }
    return Py_NewRef(op->result);
}

/* A socket entry waited for alone, in slices, checking signals between. */
static int
wait_socket_alone(OpObject *op)
{
    pyssh_many *e = &op->ent;
    while (e->rc == PYSSH_AGAIN) {
        int woken = 0, err = 0, k;
        Py_BEGIN_ALLOW_THREADS
        k = pyssh_wait_many(&e, 1, pyssh_monotonic() + pyssh_slice_seconds(), PYSSH_INVALID_SOCKET,
                            &woken, &err);
        Py_END_ALLOW_THREADS
        if (k < 0) {
            pyssh_set_socket_error(err);
            return -1;
        }
        if (e->rc == PYSSH_AGAIN && PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(op_wait_doc, "wait($self, /)\n--\n\n"
                          "Wait for the operation here (as its method would have) and return its\n"
                          "result, or raise its exception.");

static PyObject *
op_wait(OpObject *op, PyObject *Py_UNUSED(ignored))
{
    if (pyssh_atomic_cas_str(&op->busy, NULL, "wait") != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this operation is under way in another call");
        return NULL;
    }
    if (op->session == NULL && !op->done) {
        if (wait_socket_alone(op) < 0) {
            op_fail(op);
        }
        else {
            pyssh_op_conclude((PyObject *)op);
        }
    }
    while (!op->done) {
        int rc = pyssh_wait(op->session, op->kind->step, op->arg, &op->dl, op->kind->exc, op->what);
        if (rc < 0) {
            op_fail(op);
        }
        else {
            op_finish(op, rc);
        }
    }
    PyObject *r = op_outcome(op);
    PYSSH_ATOMIC_STORE_PTR(&op->busy, NULL);
    return r;
}

/* What step() returns for an unfinished Op: [(fd, events), ...] and the seconds
 * left before its deadline (or a keepalive probe), or None. */
static PyObject *
op_wants(OpObject *op)
{
    pyssh_many *e = &op->ent;
    PyObject *fds = PyList_New(0);
    /* the session's socket, the bridges, then the step's own sockets (a tunnel's) */
    const pyssh_pollset *ps = e->ps;
    int own = ps != NULL && ps->fds != NULL && ps->n > PYSSH_POLL_RESERVED
                  ? ps->n - PYSSH_POLL_RESERVED
                  : 0;
    for (int i = -1; fds != NULL && i < e->cn + own; i++) {
        const pyssh_pollfd *p = i < 0       ? &e->want
                                : i < e->cn ? &e->carried[i]
                                            : &ps->fds[PYSSH_POLL_RESERVED + i - e->cn];
        if (p->fd == PYSSH_INVALID_SOCKET || p->events == 0) {
            continue;
        }
        PyObject *pair = Py_BuildValue("(Li)", (long long)p->fd, (int)p->events);
        if (pair == NULL || PyList_Append(fds, pair) < 0) {
            Py_CLEAR(fds);
        }
        Py_XDECREF(pair);
    }
    double end = op->dl.timeout >= 0 ? op->dl.expires : -1;
    if (e->due_at > 0 && (end < 0 || e->due_at < end)) {
        end = e->due_at;
    }
    if (e->due) {
        end = pyssh_monotonic(); /* new, its finish wants another step, or a step
                                    cut short by its slice: again at once */
    }
    else if (fds != NULL && PyList_GET_SIZE(fds) == 0) {
        /* nothing to poll (a ProxyCommand still starting): again in 10 ms, as
         * pyssh_wait_many does */
        double soon = pyssh_monotonic() + 0.01;
        end = end < 0 || soon < end ? soon : end;
    }
    if (end < 0 || fds == NULL) {
        return fds == NULL ? NULL : Py_BuildValue("(NO)", fds, Py_None);
    }
    double left = end - pyssh_monotonic();
    return Py_BuildValue("(Nd)", fds, left > 0 ? left : 0.0);
}

/* How long one step() moves a channel's data at most: an event loop's other
 * tasks wait no longer than this (and one round's work) for the thread. */
#define STEP_SLICE 0.004

PyDoc_STRVAR(op_step_doc,
             "step($self, /)\n--\n\n"
             "Take one step of the operation now, without waiting (the GIL released while\n"
             "libssh runs): for an event loop that waits itself (asyncio). Returns None once\n"
             "it has finished (result() has its outcome), else ([(fd, events), ...], seconds):\n"
             "call step() again when one of the sockets is ready for its events (POLLIN,\n"
             "POLLOUT), or after `seconds` (None: no time limit of its own). Packets that\n"
             "another thread's call on the same session reads are not seen until then. A\n"
             "step that moves a channel's data returns after about 4 ms (then `seconds` is 0).");

PyDoc_STRVAR(op_attach_doc,
             "attach($self, rd, wr, /)\n--\n\n"
             "For step(): while the operation waits, it is among its session's waiters on\n"
             "the pipe (socket pair) rd/wr, as a Driver's Ops are on the Driver's. Another\n"
             "call's step on the session that reads packets (they may be this operation's)\n"
             "writes a byte to `wr`: whoever watches `rd` then steps the operation again.\n"
             "Once, before the first step(); the pipe must stay open until the operation is\n"
             "done or cancelled (it then leaves the waiters).");

static PyObject *
op_attach(OpObject *op, PyObject *args)
{
    long long rd, wr;
    if (!PyArg_ParseTuple(args, "LL:attach", &rd, &wr)) {
        return NULL;
    }
    if (rd < 0 || wr < 0 || (long long)(pyssh_socket_t)rd != rd ||
        (long long)(pyssh_socket_t)wr != wr) {
        PyErr_SetString(PyExc_ValueError, "rd and wr must be an open socket pair's ends");
        return NULL;
    }
    if (pyssh_atomic_cas_str(&op->busy, NULL, "attach") != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this operation is under way in another call");
        return NULL;
    }
    int rc = 1;
    if (!op->done && op->ent.waiter == NULL) {
        rc = pyssh_many_attach(&op->ent, (pyssh_socket_t)rd, (pyssh_socket_t)wr);
    }
    PYSSH_ATOMIC_STORE_PTR(&op->busy, NULL);
    if (rc < 0) {
        return PyErr_NoMemory();
    }
    if (rc > 0) {
        PyErr_SetString(PyExc_RuntimeError, "this operation is done, or has its waiter already");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(op_cancel_doc,
             "cancel($self, /)\n--\n\n"
             "Give up an unfinished operation now: what it holds (its claim on a channel) is\n"
             "given back, and result() raises SSHError (abandoned). For an event loop whose\n"
             "task was cancelled; a Driver's Ops go with Driver.abandon(). Nothing for a\n"
             "finished one.");

static PyObject *
op_cancel(OpObject *op, PyObject *Py_UNUSED(ignored))
{
    if (pyssh_atomic_cas_str(&op->busy, NULL, "cancel") != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this operation is under way in another call");
        return NULL;
    }
    if (!op->done) {
        pyssh_op_abandon((PyObject *)op);
    }
    PYSSH_ATOMIC_STORE_PTR(&op->busy, NULL);
    Py_RETURN_NONE;
}

static PyObject *
op_step(OpObject *op, PyObject *Py_UNUSED(ignored))
{
    if (pyssh_atomic_cas_str(&op->busy, NULL, "step") != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "this operation is under way in another call");
        return NULL;
    }
    PyObject *r;
    if (!op->done) {
        pyssh_many *e = &op->ent;
        Py_BEGIN_ALLOW_THREADS
        double until = pyssh_monotonic() + STEP_SLICE;
        pyssh_chanio_until = until;
        pyssh_many_step_once(e);
        pyssh_chanio_until = 0;
        /* its slice ran out: more may be there to do without a socket's event */
        e->due = e->rc == PYSSH_AGAIN && pyssh_monotonic() >= until;
        Py_END_ALLOW_THREADS
        if (e->rc != PYSSH_AGAIN) {
            pyssh_op_conclude((PyObject *)op); /* (finish may ask for another step) */
        }
        else if (e->logs != NULL) {
            pyssh_log_emit(op->session, e->logs);
            e->logs = NULL;
        }
    }
    r = op->done ? Py_NewRef(Py_None) : op_wants(op);
    PYSSH_ATOMIC_STORE_PTR(&op->busy, NULL);
    return r;
}

PyDoc_STRVAR(op_result_doc, "result($self, /)\n--\n\n"
                            "The result of a finished operation, or raise its exception.");

static PyObject *
op_result(OpObject *op, PyObject *Py_UNUSED(ignored))
{
    if (!op->done) {
        PyErr_SetString(PyExc_RuntimeError, "the operation has not finished");
        return NULL;
    }
    return op_outcome(op);
}

static PyObject *
op_get_done(OpObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(op->done);
}

static PyObject *
op_get_what(OpObject *op, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(op->what);
}

static PyObject *
op_get_session(OpObject *op, void *Py_UNUSED(closure))
{
    return Py_NewRef(op->session != NULL ? (PyObject *)op->session : Py_None);
}

static int
op_traverse(OpObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(op->session);
    Py_VISIT(op->owner);
    Py_VISIT(op->args);
    Py_VISIT(op->kwds);
    Py_VISIT(op->result);
    Py_VISIT(op->exc);
    Py_VISIT(op->tb);
    if (op->arg != NULL && op->kind->traverse != NULL) {
        return op->kind->traverse(op->arg, visit, arg);
    }
    return 0;
}

static int
op_clear(OpObject *op)
{
    Py_CLEAR(op->result);
    Py_CLEAR(op->exc);
    Py_CLEAR(op->tb);
    return 0;
}

static void
op_dealloc(OpObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (op->ent.logs != NULL) {
        pyssh_log_emit(op->session, op->ent.logs);
        op->ent.logs = NULL;
    }
    op_release(op); /* an operation dropped unfinished gives back what it holds */
    op_clear(op);
    Py_CLEAR(op->session);
    Py_CLEAR(op->owner);
    Py_CLEAR(op->args);
    Py_CLEAR(op->kwds);
    tp->tp_free((PyObject *)op);
    Py_DECREF(tp);
}

/* (Py_TPFLAGS_DISALLOW_INSTANTIATION is 3.10's) */
static PyObject *
op_no_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    return PyErr_Format(PyExc_TypeError, "cannot create '%s' instances: methods make them",
                        type->tp_name);
}

static PyMethodDef op_methods[] = {{"wait", (PyCFunction)op_wait, METH_NOARGS, op_wait_doc},
                                   {"result", (PyCFunction)op_result, METH_NOARGS, op_result_doc},
                                   {"step", (PyCFunction)op_step, METH_NOARGS, op_step_doc},
                                   {"cancel", (PyCFunction)op_cancel, METH_NOARGS, op_cancel_doc},
                                   {"attach", (PyCFunction)op_attach, METH_VARARGS, op_attach_doc},
                                   {NULL, NULL, 0, NULL}};

static PyGetSetDef op_getset[] = {
    {"done", (getter)op_get_done, NULL, "True once the operation has its result or error.", NULL},
    {"what", (getter)op_get_what, NULL, "What the operation does, for messages.", NULL},
    {"session", (getter)op_get_session, NULL, "Its Session (None: a socket wait).", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyType_Slot op_slots[] = {
    {Py_tp_doc, "One operation of a Session that would wait, made by its method with\n"
                "defer=True: moved by a Driver, or by wait()."},
    {Py_tp_new, op_no_new},
    {Py_tp_dealloc, op_dealloc},
    {Py_tp_traverse, op_traverse},
    {Py_tp_clear, op_clear},
    {Py_tp_methods, op_methods},
    {Py_tp_getset, op_getset},
    {0, NULL}};

PyType_Spec pyssh_op_spec = {
    .name = "pyssh._ssh.Op",
    .basicsize = sizeof(OpObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .slots = op_slots,
};
