/* The one helper that waits on the network, and libssh's log capture.
 *
 * Modelled on sock_call_ex() in CPython's Modules/socketmodule.c: the GIL is
 * released only around one non-blocking libssh call (made with the session lock
 * held) and around poll() on the session socket (made without the lock, so other
 * threads may use the session meanwhile); EINTR is retried; signal handlers run
 * between slices, so Ctrl-C raises KeyboardInterrupt within ~100 ms; the time
 * left is recomputed from a monotonic deadline.
 *
 * libssh's log callback, level and userdata are thread-local (src/log.c), so
 * they are set before every libssh call made with the GIL released. The
 * callback only queues lines; they reach the Python logger "pyssh" once the GIL
 * is held again. */
#include "pyssh.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <windows.h>
#define pyssh_poll WSAPoll
typedef WSAPOLLFD pyssh_pollfd;
#define PYSSH_EINTR WSAEINTR
#define pyssh_errno() WSAGetLastError()
#else
#include <poll.h>
#include <time.h>
#define pyssh_poll poll
typedef struct pollfd pyssh_pollfd;
#define PYSSH_EINTR EINTR
#define pyssh_errno() errno
#endif

#define SLICE_MS 100           /* longest wait before signals are checked again */
#define LOG_QUEUE_MAX 10000    /* lines kept between two returns to Python */

double
pyssh_monotonic(void)
{
#ifdef _WIN32
    return (double)GetTickCount64() / 1000.0;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
#endif
}

/* ---- logging ------------------------------------------------------------- */

static void
log_callback(int priority, const char *function, const char *buffer, void *userdata)
{
    (void)function;   /* libssh already writes "function: message" into buffer */
    pyssh_logq *q = userdata;
    if (q == NULL || buffer == NULL) {
        return;
    }
    if (q->count >= LOG_QUEUE_MAX) {
        q->dropped++;
        return;
    }
    size_t n = strlen(buffer);
    pyssh_logmsg *m = malloc(sizeof(*m) + n + 1);
    if (m == NULL) {
        q->dropped++;
        return;
    }
    m->next = NULL;
    m->priority = priority;
    memcpy(m->text, buffer, n + 1);
    if (q->tail == NULL) {
        q->tail = &q->head;
    }
    *q->tail = m;
    q->tail = &m->next;
    q->count++;
}

void
pyssh_log_attach(SessionObject *self)
{
    ssh_set_log_callback(log_callback);
    ssh_set_log_userdata(&self->logq);
    ssh_set_log_level(self->log_level);
}

pyssh_logmsg *
pyssh_log_take(SessionObject *self)
{
    pyssh_logmsg *m = self->logq.head;
    self->logq.head = NULL;
    self->logq.tail = &self->logq.head;
    self->logq.count = 0;
    /* the thread-local callback must not outlive this session */
    ssh_set_log_userdata(NULL);
    return m;
}

void
pyssh_log_discard(pyssh_logq *q)
{
    pyssh_logmsg *m = q->head;
    while (m != NULL) {
        pyssh_logmsg *next = m->next;
        free(m);
        m = next;
    }
    q->head = NULL;
    q->tail = &q->head;
    q->count = 0;
}

/* The end of a close: hand the log lines to Python (GIL held), or drop them
 * where Python must not be called (dealloc). */
void
pyssh_log_finish(SessionObject *self, pyssh_logmsg *msgs, int emit)
{
    if (emit) {
        pyssh_log_emit(self, msgs);
    }
    else {
        pyssh_logq q = {msgs, NULL, 0, 0};
        pyssh_log_discard(&q);
    }
}

/* libssh priorities to logging levels: WARN -> WARNING, PROTOCOL -> INFO,
 * PACKET -> DEBUG, FUNCTIONS -> 5 ("TRACE"). */
static int
python_level(int priority)
{
    switch (priority) {
    case SSH_LOG_WARNING: return 30;
    case SSH_LOG_PROTOCOL: return 20;
    case SSH_LOG_PACKET: return 10;
    default: return 5;
    }
}

void
pyssh_log_emit(SessionObject *self, pyssh_logmsg *msgs)
{
    if (msgs == NULL) {
        return;
    }
    /* Logging must not clobber an exception that is on its way out. */
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    pyssh_state *st = self->state;
    if (st->logger == NULL) {
        PyObject *logging = PyImport_ImportModule("logging");
        if (logging != NULL) {
            st->logger = PyObject_CallMethod(logging, "getLogger", "s", "pyssh");
            Py_DECREF(logging);
        }
    }
    while (msgs != NULL) {
        pyssh_logmsg *next = msgs->next;
        if (st->logger != NULL) {
            PyObject *r = PyObject_CallMethod(st->logger, "log", "iss",
                                              python_level(msgs->priority), "%s", msgs->text);
            Py_XDECREF(r);
        }
        PyErr_Clear();   /* a broken handler must not break the SSH operation */
        free(msgs);
        msgs = next;
    }
    PyErr_Restore(exc_type, exc_value, exc_tb);
}

/* ---- locking ------------------------------------------------------------- */

void
pyssh_lock(SessionObject *self)
{
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    pyssh_log_attach(self);
}

void
pyssh_unlock(SessionObject *self)
{
    pyssh_logmsg *msgs = pyssh_log_take(self);
    PyThread_release_lock(self->lock);
    pyssh_log_emit(self, msgs);
}

/* ---- the blocking loop ---------------------------------------------------- */

#define ERRBUF 512

/* One step under the lock, GIL released by the caller. */
static int
locked_step(SessionObject *self, pyssh_step_fn step, void *arg, int *closed,
            char *errbuf, socket_t *fd, short *events, pyssh_logmsg **logs)
{
    int rc = PYSSH_FAILED;
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    ssh_session ssh = self->ssh;
    if (ssh == NULL) {
        *closed = 1;
    }
    else {
        pyssh_log_attach(self);
        rc = step(ssh, arg);
        if (rc == PYSSH_FAILED) {
            const char *e = ssh_get_error(ssh);
            snprintf(errbuf, ERRBUF, "%s", e != NULL ? e : "");
        }
        else if (rc == PYSSH_AGAIN) {
            int flags = ssh_get_poll_flags(ssh);
            *fd = ssh_get_fd(ssh);
            *events = POLLIN;
            if (flags & SSH_WRITE_PENDING) {
                *events |= POLLOUT;
            }
        }
    }
    *logs = pyssh_log_take(self);
    PyThread_release_lock(self->lock);
    return rc;
}

int
pyssh_wait(SessionObject *self, pyssh_step_fn step, void *arg, double timeout,
           enum pyssh_exc fail_exc, const char *what)
{
    pyssh_state *st = self->state;
    double deadline = timeout >= 0 ? pyssh_monotonic() + timeout : 0.0;
    char errbuf[ERRBUF];

    for (;;) {
        int rc, closed = 0, poll_rc = 0, poll_err = 0;
        socket_t fd = SSH_INVALID_SOCKET;
        short events = 0;
        pyssh_logmsg *logs = NULL;

        errbuf[0] = '\0';
        Py_BEGIN_ALLOW_THREADS
        rc = locked_step(self, step, arg, &closed, errbuf, &fd, &events, &logs);
        if (rc == PYSSH_AGAIN && !closed) {
            int slice = SLICE_MS;
            if (timeout >= 0) {
                double left = deadline - pyssh_monotonic();
                slice = left <= 0 ? 0 : (left * 1000 < SLICE_MS ? (int)(left * 1000) + 1 : SLICE_MS);
            }
            if (fd != SSH_INVALID_SOCKET) {
                pyssh_pollfd p = {0};
                p.fd = fd;
                p.events = events;
                poll_rc = pyssh_poll(&p, 1, slice);
                if (poll_rc < 0) {
                    poll_err = pyssh_errno();
                }
            }
            else {
                /* no socket yet (a proxy is connecting): just let time pass */
#ifdef _WIN32
                Sleep(slice);
#else
                struct timespec ts = {0, (long)slice * 1000000L};
                nanosleep(&ts, NULL);
#endif
            }
        }
        Py_END_ALLOW_THREADS
        pyssh_log_emit(self, logs);

        if (closed) {
            pyssh_raise(st, PYSSH_EXC_SessionClosedError,
                        "%s: the session was closed", what);
            return -1;
        }
        if (rc == PYSSH_FAILED) {
            pyssh_raise_libssh(st, fail_exc, what, errbuf);
            return -1;
        }
        if (rc != PYSSH_AGAIN) {
            return rc;
        }
        if (poll_rc < 0 && poll_err != PYSSH_EINTR) {
            errno = poll_err;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        if (timeout >= 0 && pyssh_monotonic() >= deadline) {
            char secs[32];
            snprintf(secs, sizeof(secs), "%g", timeout);
            pyssh_raise(st, PYSSH_EXC_SSHTimeoutError, "%s: timed out after %s seconds",
                        what, secs);
            return -1;
        }
    }
}

int
pyssh_call(SessionObject *self, pyssh_step_fn step, void *arg,
           enum pyssh_exc fail_exc, const char *what)
{
    int rc, closed = 0;
    socket_t fd;
    short events;
    pyssh_logmsg *logs = NULL;
    char errbuf[ERRBUF];

    errbuf[0] = '\0';
    Py_BEGIN_ALLOW_THREADS
    rc = locked_step(self, step, arg, &closed, errbuf, &fd, &events, &logs);
    Py_END_ALLOW_THREADS
    pyssh_log_emit(self, logs);
    if (closed) {
        pyssh_raise(self->state, PYSSH_EXC_SessionClosedError, "%s: the session is closed", what);
        return -1;
    }
    if (rc == PYSSH_FAILED) {
        pyssh_raise_libssh(self->state, fail_exc, what, errbuf);
        return -1;
    }
    return rc;
}
