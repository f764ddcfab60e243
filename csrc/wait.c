/* The one helper that waits on the network, and libssh's log capture.
 *
 * Modelled on sock_call_ex() in CPython's Modules/socketmodule.c: the GIL is
 * released only around one non-blocking libssh call (made with the session lock
 * held) and around poll() on the session socket (made without the lock, so other
 * threads may use the session meanwhile); EINTR is retried; signal handlers run
 * between slices, so Ctrl-C raises KeyboardInterrupt within ~100 ms; the time
 * left is recomputed from a monotonic deadline. The keepalive runs here too, so
 * that every wait has it: a server silent too long is probed, and one that
 * leaves the probes unanswered fails the wait (ConnectError); polls last until
 * the next probe is due at most, so an idle wait costs no CPU.
 *
 * libssh's log callback, level and userdata are thread-local (src/log.c), so
 * they are set before every libssh call made with the GIL released. The
 * callback only queues lines; they reach the Python logger "pyssh" once the GIL
 * is held again. */
#include "pyssh.h"

#include <stdarg.h>
#include <string.h>

#define SLICE_MS       100   /* longest wait before signals are checked again */
#define SLICE_OTHER_MS 5000  /* ...in other threads, which run no signal handlers */
#define LOG_DELAY_MS   100   /* longest wait before queued log lines are handed over */
#define PYSSH_LOST     (-7)  /* locked_step: the keepalive found the connection lost */
#define LOG_QUEUE_MAX  10000 /* lines kept between two returns to Python */

/* ---- logging ------------------------------------------------------------- */

static void
log_callback(int priority, const char *function, const char *buffer, void *userdata)
{
    (void)function; /* libssh already writes "function: message" into buffer */
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

void
pyssh_log_queue(SessionObject *self, int priority, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    log_callback(priority, NULL, line, &self->logq);
}

/* libssh priorities to logging levels: WARN -> WARNING, PROTOCOL -> INFO,
 * PACKET -> DEBUG, FUNCTIONS -> 5 ("TRACE"); pyssh's own errors -> ERROR. */
static int
python_level(int priority)
{
    switch (priority) {
    case PYSSH_LOG_ERROR:
        return 40;
    case SSH_LOG_WARNING:
        return 30;
    case SSH_LOG_PROTOCOL:
        return 20;
    case SSH_LOG_PACKET:
        return 10;
    default:
        return 5;
    }
}

/* Clear what a logging call raised (a broken handler must not break the SSH
 * operation). Returns 1 for KeyboardInterrupt: logging runs Python code, which
 * runs signal handlers, so a Ctrl-C that arrived just before raised in there
 * and the caller's next PyErr_CheckSignals() would find nothing. */
static int
log_error_clear(void)
{
    int interrupted = PyErr_ExceptionMatches(PyExc_KeyboardInterrupt);
    PyErr_Clear();
    return interrupted;
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
    int interrupted = 0;
    while (msgs != NULL) {
        pyssh_logmsg *next = msgs->next;
        if (st->logger != NULL) {
            /* libssh's lines quote the server (its banner, a disconnect's reason):
             * made printable like every text from it, as they may reach a terminal */
            PyObject *text = pyssh_printable(msgs->text, strlen(msgs->text));
            PyObject *r = text == NULL
                              ? NULL
                              : PyObject_CallMethod(st->logger, "log", "isO",
                                                    python_level(msgs->priority), "%s", text);
            Py_XDECREF(r);
            Py_XDECREF(text);
        }
        interrupted |= log_error_clear();
        free(msgs);
        msgs = next;
    }
    PyErr_Restore(exc_type, exc_value, exc_tb);
    if (interrupted) {
        PyErr_SetInterrupt(); /* the Ctrl-C is raised again at the next check */
    }
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

/* ---- arguments ----------------------------------------------------------------- */

/* A timeout's seconds, read without running Python code: -1 (none), or >= 0;
 * -2 with TypeError for anything but None, int or float. */
static double
timeout_seconds(PyObject *obj)
{
    double t;
    if (obj == NULL || obj == Py_None) {
        return -1;
    }
    if (PyFloat_Check(obj)) {
        t = PyFloat_AS_DOUBLE(obj);
    }
    else if (PyLong_Check(obj)) {
        t = PyLong_AsDouble(obj); /* reads the digits: no __index__ */
        if (t == -1 && PyErr_Occurred()) {
            PyErr_Clear(); /* beyond any float: no limit in practice */
            t = Py_HUGE_VAL;
        }
    }
    else {
        PyErr_Format(PyExc_TypeError, "timeout must be None or a number of seconds, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -2;
    }
    return t < 0 || t != t ? 0 : t;
}

static int
deadline_conv(PyObject *obj, pyssh_deadline *d, int total)
{
    double t = timeout_seconds(obj);
    if (t == -2) {
        return 0;
    }
    pyssh_deadline_start(d, t, total);
    return 1;
}

int
pyssh_deadline_conv(PyObject *obj, void *deadline)
{
    return deadline_conv(obj, deadline, 0);
}

int
pyssh_total_deadline_conv(PyObject *obj, void *deadline)
{
    return deadline_conv(obj, deadline, 1);
}

void
pyssh_deadline_start(pyssh_deadline *d, double timeout, int total)
{
    d->timeout = timeout;
    d->total = total;
    d->expires = timeout >= 0 ? pyssh_monotonic() + timeout : 0.0;
}

void
pyssh_deadline_touch(pyssh_deadline *d)
{
    if (d != NULL && d->timeout >= 0 && !d->total) {
        d->expires = pyssh_monotonic() + d->timeout;
    }
}

static int
deadline_passed(const pyssh_deadline *d, double now)
{
    return d != NULL && d->timeout >= 0 && now >= d->expires;
}

void
pyssh_raise_timeout(pyssh_state *st, const char *what, const pyssh_deadline *d)
{
    char secs[32];
    snprintf(secs, sizeof(secs), "%g", d->timeout);
    if (d->total) {
        pyssh_raise(st, PYSSH_EXC_SSHTimeoutError,
                    "%s: timed out after %s seconds "
                    "(timeout=%s)",
                    what, secs, secs);
    }
    else {
        pyssh_raise(st, PYSSH_EXC_SSHTimeoutError,
                    "%s: timed out: nothing moved for %s "
                    "seconds (timeout=%s)",
                    what, secs, secs);
    }
}

int
pyssh_progress(PyObject *progress, double *next, int finished, unsigned long long moved)
{
    if (*next <= 0 || (!finished && pyssh_monotonic() < *next)) {
        return 0;
    }
    *next = pyssh_monotonic() + PYSSH_PROGRESS_EVERY;
    PyObject *r = PyObject_CallFunction(progress, "K", moved);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* ---- reading the socket ------------------------------------------------------ */

int
pyssh_read_socket_once(SessionObject *self, ssh_session ssh)
{
    /* The session's event: ssh_event_dopoll(ev, 0) makes libssh read the socket
     * once (no public call does exactly that otherwise). Made once per session. */
    if (self->event == NULL) {
        ssh_event ev = ssh_event_new();
        if (ev == NULL) {
            return PYSSH_FAILED;
        }
        if (ssh_event_add_session(ev, ssh) != SSH_OK) {
            ssh_event_free(ev);
            return PYSSH_FAILED;
        }
        self->event = ev;
    }
    /* Acknowledge what arrives at once (Linux only; it resets this after a while,
     * so it is set before every read). sshd leaves Nagle's algorithm on for
     * sessions without a terminal and sends 32 KiB packets, below loopback's MSS:
     * each waits until the previous one is acknowledged, and pyssh, which mostly
     * receives, had its ACKs delayed (40 ms) with nothing to carry them. Measured
     * on a tunnel downloading 16 MiB at a time: median 62 ms -> 16.5 ms (ssh -L:
     * 17 to 23 ms). */
    pyssh_quickack(ssh_get_fd(ssh));
    int rc = ssh_event_dopoll(self->event, 0);
    if ((ssh_get_status(ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR)) || rc == SSH_ERROR) {
        return PYSSH_FAILED;
    }
    return rc == SSH_AGAIN ? SSH_AGAIN : SSH_OK;
}

/* ---- wake-ups -------------------------------------------------------------- */

int
pyssh_waiter_open(pyssh_waiter *w)
{
    w->rung = 0;
    w->next = NULL;
    return pyssh_wake_open(&w->rd, &w->wr);
}

void
pyssh_waiter_close(pyssh_waiter *w)
{
    pyssh_wake_close(w->rd, w->wr);
    w->rd = w->wr = PYSSH_INVALID_SOCKET;
}

void
pyssh_waiter_ring(pyssh_waiter *w)
{
    pyssh_wake_ring(w->wr);
}

/* Lock held: ring the session's waiters but `me`, once until they step. */
static void
ring_others(SessionObject *self, pyssh_waiter *me)
{
    for (pyssh_waiter *o = self->waiters; o != NULL; o = o->next) {
        if (o != me && !o->rung) {
            o->rung = 1;
            pyssh_waiter_ring(o);
        }
    }
}

void
pyssh_waiters_ring_all(SessionObject *self)
{
    ring_others(self, NULL);
}

void
pyssh_waiters_free_spare(SessionObject *self)
{
    while (self->spare != NULL) {
        pyssh_waiter *w = self->spare;
        self->spare = w->next;
        pyssh_waiter_close(w);
        free(w);
    }
}

/* A wait's waiter: the caller's, or a spare of the session's. */
typedef struct {
    pyssh_waiter *w;
    int own;    /* taken from the spares (or made): give it back */
    int listed; /* in self->waiters */
} waitctx;

/* Lock held. */
static void
wait_join(SessionObject *self, waitctx *c)
{
    if (c->w == NULL) {
        pyssh_waiter *w = self->spare;
        if (w != NULL) {
            self->spare = w->next;
        }
        else if ((w = malloc(sizeof(*w))) != NULL && pyssh_waiter_open(w) != 0) {
            free(w);
            w = NULL; /* no wake-ups: the 100 ms slices still end the wait */
        }
        if (w == NULL) {
            return;
        }
        c->w = w;
        c->own = 1;
    }
    if (!c->listed) {
        c->w->next = self->waiters;
        self->waiters = c->w;
        c->listed = 1;
    }
}

/* Lock held. */
static void
wait_leave(SessionObject *self, waitctx *c)
{
    if (c->listed) {
        for (pyssh_waiter **pp = &self->waiters; *pp != NULL; pp = &(*pp)->next) {
            if (*pp == c->w) {
                *pp = c->w->next;
                break;
            }
        }
        c->listed = 0;
    }
    if (c->own) {
        if (c->w->rung) {
            pyssh_wake_drain(c->w->rd);
        }
        c->w->rung = 0;
        if (pyssh_session_ssh(self) != NULL) {
            c->w->next = self->spare;
            self->spare = c->w;
        }
        else {
            pyssh_waiter_close(c->w);
            free(c->w);
        }
        c->w = NULL;
        c->own = 0;
    }
}

/* ---- failures -------------------------------------------------------------- */

int
pyssh_open_result(ssh_session ssh, int rc)
{
    if (rc == SSH_OK) {
        return 0;
    }
    if (rc == SSH_AGAIN) {
        return PYSSH_AGAIN;
    }
    /* libssh 0.11 (channels.c) sets SSH_REQUEST_DENIED when the server answers
     * the open with SSH_MSG_CHANNEL_OPEN_FAILURE, SSH_FATAL when the
     * connection fails meanwhile */
    return ssh_get_error_code(ssh) == SSH_REQUEST_DENIED ? PYSSH_REFUSED : PYSSH_FAILED;
}

static void
failure_clear(pyssh_failure *f)
{
    memset(f, 0, sizeof(*f));
}

/* What errors.c classifies a failure by, read while the lock is held: libssh
 * keeps one error per session, which the next call on it may overwrite. */
static void
failure_read(pyssh_failure *f, ssh_session ssh, int refused)
{
    const char *e = ssh_get_error(ssh);
    snprintf(f->text, sizeof(f->text), "%s", e != NULL ? e : "");
    f->code = ssh_get_error_code(ssh);
    f->dead =
        !ssh_is_connected(ssh) || (ssh_get_status(ssh) & (SSH_CLOSED | SSH_CLOSED_ERROR)) != 0;
    f->refused = refused;
}

/* ---- keepalive ----------------------------------------------------------- */

int
pyssh_keepalive_start(SessionObject *self, double interval, int count_max)
{
#ifndef PYSSH_LIBSSH_KEEPALIVE
    if (interval > 0) {
        return -1;
    }
#endif
    pyssh_keepalive *ka = &self->ka;
    ka->interval = interval > 0 ? interval : 0;
    ka->count_max = count_max;
    ka->sent = 0;
    ka->packets = self->rcounter.in_packets;
    ka->heard = pyssh_monotonic();
    ka->next = ka->heard + interval;
    return 0;
}

/* After a step (lock held): any packet read shows the server alive (its
 * answers to the probes too, which libssh drops). */
static int
keepalive_heard(SessionObject *self, double now)
{
    pyssh_keepalive *ka = &self->ka;
    if (ka->interval <= 0 || self->rcounter.in_packets == ka->packets) {
        return 0;
    }
    ka->packets = self->rcounter.in_packets;
    ka->heard = now;
    ka->sent = 0;
    ka->next = now + ka->interval;
    return 1;
}

static void
keepalive_failure(const pyssh_keepalive *ka, pyssh_failure *f)
{
    failure_clear(f);
    f->dead = 1;
    f->code = SSH_FATAL;
    f->silent = ka->lost;
    f->interval = ka->interval;
    f->count_max = ka->count_max;
}

/* A wait's step found nothing to do (lock held): send a probe if one is due,
 * or find the connection lost when count_max probes went unanswered. Returns
 * 0 with *due set to when to look again, or -1 with *fail filled in (lost:
 * every later step fails the same way, and other waiters are woken to see it).
 * A frozen server still accepts what is sent (its kernel does): only an answer
 * shows it alive. */
static int
keepalive_check(SessionObject *self, ssh_session ssh, pyssh_failure *fail, double *due)
{
    pyssh_keepalive *ka = &self->ka;
    double now = pyssh_monotonic();
    if (now < ka->next) {
        *due = ka->next;
        return 0;
    }
    if (ka->sent >= ka->count_max) {
        /* the answer may be in the socket still: not every step reads it */
        pyssh_read_socket_once(self, ssh);
        if (keepalive_heard(self, now)) {
            *due = now; /* what was read may be the step's: step again at once */
            return 0;
        }
        ka->lost = now - ka->heard;
        keepalive_failure(ka, fail);
        pyssh_log_queue(self, SSH_LOG_WARNING,
                        "keepalive: no answer from the server for %.1f seconds: the connection "
                        "is lost",
                        ka->lost);
        ring_others(self, NULL);
        return -1;
    }
    int rc = SSH_ERROR;
#ifdef PYSSH_LIBSSH_KEEPALIVE
    /* SSH_AGAIN: a global request (tcpip-forward) waits for its answer, which
     * shows the server alive as well: it counts as a probe */
    rc = ssh_client_send_keepalive(ssh);
#endif
    if (rc == SSH_ERROR) {
        pyssh_log_queue(self, SSH_LOG_PACKET, "keepalive: the probe could not be sent");
    }
    ka->sent++;
    ka->next = now + ka->interval;
    *due = ka->next;
    return 0;
}

/* ---- the blocking loop ---------------------------------------------------- */

/* What a step that has to wait wants polled: the session's socket for
 * `events`, until `due` at the latest (0: no limit of its own). */
typedef struct {
    pyssh_socket_t fd;
    short events;
    double due;
} pollwant;

/* One step under the lock, GIL released by the caller. `c`: the wait's waiter
 * (NULL for pyssh_call), joined on the first step and left on the last. */
static int
locked_step(SessionObject *self, pyssh_step_fn step, void *arg, int *closed, pyssh_failure *fail,
            pollwant *want, pyssh_logmsg **logs, waitctx *c)
{
    int rc = PYSSH_FAILED;
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    ssh_session ssh = pyssh_session_ssh(self);
    if (ssh == NULL) {
        *closed = 1;
    }
    else if (self->ka.lost > 0) {
        keepalive_failure(&self->ka, fail); /* the connection is gone */
    }
    else {
        pyssh_log_attach(self);
        if (c != NULL) {
            wait_join(self, c);
            if (c->w != NULL) {
                c->w->rung = 0; /* this step looks at everything that rang */
            }
        }
        uint64_t packets = self->rcounter.in_packets;
        rc = step(ssh, arg);
        keepalive_heard(self, pyssh_monotonic());
        if (rc == PYSSH_AGAIN && c != NULL && self->ka.interval > 0 &&
            keepalive_check(self, ssh, fail, &want->due) < 0) {
            rc = PYSSH_LOST;
        }
        if (self->rcounter.in_packets != packets) {
            /* what was read may be another waiter's: let it look */
            ring_others(self, c != NULL ? c->w : NULL);
        }
        if (rc == PYSSH_FAILED || rc == PYSSH_REFUSED) {
            failure_read(fail, ssh, rc == PYSSH_REFUSED);
            rc = PYSSH_FAILED;
        }
        else if (rc == PYSSH_LOST) {
            rc = PYSSH_FAILED; /* *fail says why */
        }
        else if (rc == PYSSH_AGAIN) {
            int flags = ssh_get_poll_flags(ssh);
            want->fd = ssh_get_fd(ssh);
            want->events = POLLIN;
            if (flags & SSH_WRITE_PENDING) {
                want->events |= POLLOUT;
            }
        }
    }
    if (c != NULL && (rc != PYSSH_AGAIN || *closed)) {
        wait_leave(self, c);
    }
    *logs = pyssh_log_take(self);
    PyThread_release_lock(self->lock);
    return rc;
}

static void
logs_append(pyssh_logmsg **head, pyssh_logmsg *more)
{
    while (*head != NULL) {
        head = &(*head)->next;
    }
    *head = more;
}

/* ---- ProxyJump: the bridges that carry a session ---------------------------------------- */

/* Step the bridges that carry `self` (tunnel.c), outermost first, so that
 * what reached the first jump host goes on inward in one pass. Returns how
 * many of `fds` (two per hop) to poll beside the session's own; `why` says why
 * a bridge is gone (the outermost one), or is left as it was. */
static int
carry_all(SessionObject *self, pyssh_pollfd *fds, pyssh_logmsg **logs, char *why, size_t n)
{
    PyObject *chain[PYSSH_MAX_HOPS];
    int hops = 0;
    for (SessionObject *s = self; s->carrier != NULL && hops < PYSSH_MAX_HOPS;
         s = pyssh_tunnel_session(s->carrier)) {
        chain[hops++] = s->carrier;
    }
    int nfds = 0, told = 0;
    while (hops-- > 0) {
        pyssh_logmsg *more = NULL;
        char gone[400];
        if (pyssh_tunnel_carry(chain[hops], fds + nfds, &more, gone, sizeof(gone))) {
            nfds += 2;
        }
        else if (!told) {
            snprintf(why, n, "%s", gone);
            told = 1;
        }
        logs_append(logs, more);
    }
    return nfds;
}

/* The carried session failed, most likely because its bridge is gone: say why
 * first, libssh's words (a reset, an EOF) after. */
static void
carried_failure(pyssh_failure *fail, const char *why)
{
    char text[sizeof(fail->text)];
    snprintf(text, sizeof(text), "%.300s (then: %.190s)", why, fail->text);
    memcpy(fail->text, text, sizeof(text));
}

/* poll() the step's `fds` and the bridges' `more` as one set. */
static int
poll_with(pyssh_pollfd *fds, int n, const pyssh_pollfd *more, int m, int ms)
{
    pyssh_pollfd local[64];
    pyssh_pollfd *all = n + m <= 64 ? local : malloc(sizeof(*all) * (size_t)(n + m));
    if (m == 0 || all == NULL) {
        /* (no memory: the bridges are looked at every 10 ms instead) */
        return pyssh_poll(fds, (unsigned)n, m == 0 || ms < 10 ? ms : 10);
    }
    memcpy(all, fds, sizeof(*all) * (size_t)n);
    memcpy(all + n, more, sizeof(*all) * (size_t)m);
    int rc = pyssh_poll(all, (unsigned)(n + m), ms);
    for (int i = 0; i < n; i++) {
        fds[i].revents = all[i].revents;
    }
    if (all != local) {
        free(all);
    }
    return rc;
}

/* One poll of a slice: the session's socket as the step wants it, the wake
 * pipe, the step's set, the bridges' (`carried`, `cn`), for at most `ms`. */
static int
slice_poll(const pollwant *want, pyssh_pollset *ps, waitctx *c, const pyssh_pollfd *carried, int cn,
           int ms, int *poll_err)
{
    pyssh_pollfd own_fds[PYSSH_POLL_RESERVED];
    /* the step may have grown its set */
    pyssh_pollfd *fds = ps != NULL && ps->fds != NULL ? ps->fds : own_fds;
    int n = fds != own_fds ? ps->n : PYSSH_POLL_RESERVED;
    fds[0].fd = want->fd;
    fds[0].events = want->events;
    fds[0].revents = 0;
    fds[1].fd = c->w != NULL ? c->w->rd : PYSSH_INVALID_SOCKET;
    fds[1].events = POLLIN;
    fds[1].revents = 0;
    if (want->fd == PYSSH_INVALID_SOCKET && n == PYSSH_POLL_RESERVED &&
        fds[1].fd == PYSSH_INVALID_SOCKET && cn == 0) {
        /* no socket yet (a proxy is connecting): just let time pass */
        pyssh_sleep_ms(ms);
        return 0;
    }
    /* poll() skips PYSSH_INVALID_SOCKET (no wake pipe, a closed slot) */
    int rc = poll_with(fds, n, carried, cn, ms);
    if (rc < 0) {
        *poll_err = pyssh_socket_errno();
    }
    else if (fds[1].revents & POLLIN) {
        pyssh_wake_drain(c->w->rd);
    }
    return rc;
}

/* How long the next poll of a slice may take: until the slice ends, the
 * deadline passes (read again each time: the step may have touched it), a
 * keepalive probe is due, or the step's own limit. */
static int
slice_ms(double slice_end, const pyssh_deadline *d, const pollwant *want, const pyssh_pollset *ps,
         double now)
{
    double end = slice_end;
    if (d != NULL && d->timeout >= 0 && d->expires < end) {
        end = d->expires;
    }
    if (want->due > 0 && want->due < end) {
        end = want->due;
    }
    int ms = end <= now ? 0 : (int)((end - now) * 1000) + 1;
    if (ps != NULL && ps->wait_ms >= 0 && ps->wait_ms < ms) {
        ms = ps->wait_ms;
    }
    return ms;
}

/* Step and poll without the GIL (the caller released it) until the step ends,
 * `slice_end` or the deadline passes, or poll fails or is interrupted (a
 * signal: *poll_rc < 0). Returns the step's last result; log lines are added
 * to *logs. A session reached through jump hosts moves their bridges before
 * each step, and once more after the last (what it wrote goes on). */
static int
wait_slice(SessionObject *self, pyssh_step_fn step, void *arg, double slice_end,
           const pyssh_deadline *d, pyssh_pollset *ps, waitctx *c, int *closed, pyssh_failure *fail,
           pyssh_logmsg **logs, int *poll_rc, int *poll_err)
{
    pyssh_pollfd carried[2 * PYSSH_MAX_HOPS];
    char why[400] = "";
    int rc;
    for (;;) {
        pollwant want = {PYSSH_INVALID_SOCKET, 0, 0.0};
        pyssh_logmsg *more = NULL;
        int cn = self->carrier != NULL ? carry_all(self, carried, logs, why, sizeof(why)) : 0;
        rc = locked_step(self, step, arg, closed, fail, &want, &more, c);
        logs_append(logs, more);
        if (rc != PYSSH_AGAIN || *closed) {
            break;
        }
        double now = pyssh_monotonic();
        if (more != NULL && slice_end > now + LOG_DELAY_MS / 1000.0) {
            /* log lines reach Python's logger soon, not at the end of a long slice */
            slice_end = now + LOG_DELAY_MS / 1000.0;
        }
        int ms = slice_ms(slice_end, d, &want, ps, now);
        *poll_rc = slice_poll(&want, ps, c, carried, cn, ms, poll_err);
        if (*poll_rc < 0) {
            break;
        }
        now = pyssh_monotonic();
        if (now >= slice_end || deadline_passed(d, now)) {
            break;
        }
    }
    if (self->carrier != NULL && !*closed) {
        carry_all(self, carried, logs, why, sizeof(why));
    }
    if (rc == PYSSH_FAILED && why[0] != '\0') {
        carried_failure(fail, why);
    }
    if (rc == PYSSH_AGAIN && !*closed && c->listed) {
        /* the wait ends or pauses here: leave the list while the caller runs */
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        wait_leave(self, c);
        PyThread_release_lock(self->lock);
    }
    return rc;
}

/* Python runs signal handlers in its main thread only: waits there return to
 * it every SLICE_MS for Ctrl-C, and waits elsewhere (background tunnels, agent
 * forwarding, a thread blocked reading a Process) sleep until the socket, their
 * wake pipe or their deadline says so, not every 100 ms for nothing. */
static unsigned long main_thread_ident;

int
pyssh_wait_init(void)
{
    /* Process-wide, read without any lock: written once, by the interpreter whose
     * main thread runs signal handlers. Another interpreter's exec (with a GIL of
     * its own) writing it would race with the waits of every other thread. */
    if (PyInterpreterState_Get() != PyInterpreterState_Main() || main_thread_ident != 0) {
        return 0;
    }
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *main = threading != NULL ? PyObject_CallMethod(threading, "main_thread", NULL) : NULL;
    PyObject *ident = main != NULL ? PyObject_GetAttrString(main, "ident") : NULL;
    Py_XDECREF(threading);
    Py_XDECREF(main);
    if (ident == NULL) {
        return -1;
    }
    main_thread_ident = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    return PyErr_Occurred() ? -1 : 0;
}

double
pyssh_slice_seconds(void)
{
    int main = PyThread_get_thread_ident() == main_thread_ident;
    return (main ? SLICE_MS : SLICE_OTHER_MS) / 1000.0;
}

int
pyssh_wait_ex(SessionObject *self, pyssh_step_fn step, void *arg, pyssh_deadline *d,
              enum pyssh_exc fail_exc, const char *what, pyssh_pollset *ps, pyssh_waiter *w)
{
    pyssh_state *st = self->state;
    pyssh_failure fail;
    waitctx c = {w, 0, 0};

    /* a loop of waits sharing one deadline (an operation that steps out for
     * progress reports or callbacks) finds it passed here */
    if (deadline_passed(d, pyssh_monotonic())) {
        pyssh_raise_timeout(st, what, d);
        return -1;
    }
    for (;;) {
        int rc, closed = 0, poll_rc = 0, poll_err = 0;
        pyssh_logmsg *logs = NULL;

        failure_clear(&fail);
        Py_BEGIN_ALLOW_THREADS
        rc = wait_slice(self, step, arg, pyssh_monotonic() + pyssh_slice_seconds(), d, ps, &c,
                        &closed, &fail, &logs, &poll_rc, &poll_err);
        Py_END_ALLOW_THREADS
        pyssh_log_emit(self, logs);

        if (closed) {
            pyssh_raise(st, PYSSH_EXC_SessionClosedError, "%s: the session was closed", what);
            return -1;
        }
        if (rc == PYSSH_FAILED) {
            pyssh_raise_failure(st, fail_exc, what, &fail);
            return -1;
        }
        if (rc != PYSSH_AGAIN) {
            return rc;
        }
        if (poll_rc < 0 && !pyssh_interrupted(poll_err)) {
            pyssh_set_socket_error(poll_err);
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
        if (deadline_passed(d, pyssh_monotonic())) {
            pyssh_raise_timeout(st, what, d);
            return -1;
        }
    }
}

int
pyssh_wait_nogil_ex(SessionObject *self, pyssh_step_fn step, void *arg, double timeout,
                    pyssh_failure *fail, int *os_err)
{
    pyssh_deadline dl;
    pyssh_deadline_start(&dl, timeout, 0);
    waitctx c = {NULL, 0, 0};

    for (;;) {
        int closed = 0, poll_rc = 0, poll_err = 0;
        pyssh_logmsg *logs = NULL;
        failure_clear(fail);
        /* no signals to check without the GIL: slices only bound each poll */
        int rc = wait_slice(self, step, arg, pyssh_monotonic() + 1.0, &dl, NULL, &c, &closed, fail,
                            &logs, &poll_rc, &poll_err);
        if (logs != NULL) {
            /* keep libssh's lines for the next Python call on the session */
            PyThread_acquire_lock(self->lock, WAIT_LOCK);
            logs_append(&self->logq.head, logs);
            for (pyssh_logmsg *m = logs; m != NULL; m = m->next) {
                self->logq.count++;
                self->logq.tail = &m->next;
            }
            PyThread_release_lock(self->lock);
        }
        if (closed) {
            return PYSSH_CLOSED;
        }
        if (rc == PYSSH_FAILED) {
            return PYSSH_FAILED;
        }
        if (rc != PYSSH_AGAIN) {
            return rc;
        }
        if (poll_rc < 0 && !pyssh_interrupted(poll_err)) {
            *os_err = poll_err;
            return PYSSH_OSERROR;
        }
        if (deadline_passed(&dl, pyssh_monotonic())) {
            return PYSSH_TIMEDOUT;
        }
    }
}

/* ---- many operations, one poll() -------------------------------------------------- */

void
pyssh_many_init(pyssh_many *e)
{
    e->due = e->s != NULL;
    e->rc = PYSSH_AGAIN;
    failure_clear(&e->fail);
    e->logs = NULL;
    e->want.fd = e->s != NULL ? PYSSH_INVALID_SOCKET : e->fd;
    e->want.events = e->s != NULL ? 0 : e->events;
    e->want.revents = 0;
    e->due_at = 0;
    e->cn = 0;
}

int
pyssh_many_attach(pyssh_many *e, pyssh_socket_t rd, pyssh_socket_t wr)
{
    if (e->s == NULL || e->waiter != NULL) {
        return 0;
    }
    e->waiter = PyMem_RawCalloc(1, sizeof(*e->waiter));
    if (e->waiter == NULL) {
        return -1;
    }
    e->waiter->rd = rd;
    e->waiter->wr = wr;
    return 0;
}

void
pyssh_many_detach(pyssh_many *e)
{
    if (e->waiter == NULL) {
        return;
    }
    if (e->listed) {
        waitctx c = {e->waiter, 0, 1};
        pyssh_lock(e->s);
        wait_leave(e->s, &c);
        pyssh_unlock(e->s);
        e->listed = 0;
    }
    PyMem_RawFree(e->waiter);
    e->waiter = NULL;
}

/* The step's own sockets (slots [PYSSH_POLL_RESERVED, n) of its set): their
 * revents as a poll now says, for the step to read, as pyssh_wait_ex leaves
 * them after its poll (whoever woke this step did not say which was ready). */
static void
many_pollset_look(pyssh_pollset *ps)
{
    if (ps == NULL || ps->fds == NULL || ps->n <= PYSSH_POLL_RESERVED) {
        return;
    }
    pyssh_pollfd *own = ps->fds + PYSSH_POLL_RESERVED;
    unsigned n = (unsigned)(ps->n - PYSSH_POLL_RESERVED);
    for (unsigned i = 0; i < n; i++) {
        own[i].revents = 0;
    }
    pyssh_poll(own, n, 0); /* (failed: nothing ready, the step looks again later) */
}

/* After the step: its own limit on the wait, as a time to step again. */
static void
many_pollset_due(pyssh_many *e)
{
    if (e->ps != NULL && e->ps->wait_ms >= 0) {
        double at = pyssh_monotonic() + e->ps->wait_ms / 1000.0;
        if (e->due_at <= 0 || at < e->due_at) {
            e->due_at = at;
        }
    }
}

/* One step of a session's entry, as wait_slice's loop does one. */
static void
many_step(pyssh_many *e)
{
    SessionObject *s = e->s;
    char why[400] = "";
    pollwant want = {PYSSH_INVALID_SOCKET, 0, 0.0};
    pyssh_logmsg *more = NULL;
    int closed = 0;
    waitctx c = {e->waiter, 0, e->listed};
    e->cn = s->carrier != NULL ? carry_all(s, e->carried, &e->logs, why, sizeof(why)) : 0;
    many_pollset_look(e->ps);
    int rc = locked_step(s, e->step, e->arg, &closed, &e->fail, &want, &more,
                         e->waiter != NULL ? &c : NULL);
    e->listed = c.listed;
    e->due_at = want.due;
    many_pollset_due(e);
    logs_append(&e->logs, more);
    if (s->carrier != NULL && !closed) {
        pyssh_pollfd again[2 * PYSSH_MAX_HOPS];
        carry_all(s, again, &e->logs, why, sizeof(why)); /* what it wrote goes on */
    }
    if (rc == PYSSH_FAILED && why[0] != '\0') {
        carried_failure(&e->fail, why);
    }
    e->rc = closed ? PYSSH_CLOSED : rc;
    e->want.fd = want.fd;
    e->want.events = want.events;
}

/* How many sockets of its own the entry's step polls (its pollset's). */
static int
many_own(const pyssh_many *e)
{
    const pyssh_pollset *ps = e->ps;
    return ps != NULL && ps->fds != NULL && ps->n > PYSSH_POLL_RESERVED
               ? ps->n - PYSSH_POLL_RESERVED
               : 0;
}

/* The poll set of all pending entries, and the wake pipe last. */
static pyssh_pollfd *
many_fds(pyssh_many **e, int n, pyssh_socket_t wake, int *count)
{
    int total = 1;
    for (int i = 0; i < n; i++) {
        total += 1 + e[i]->cn + many_own(e[i]);
    }
    pyssh_pollfd *fds = malloc(sizeof(*fds) * (size_t)total);
    if (fds == NULL) {
        return NULL;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        fds[k] = e[i]->want;
        fds[k++].revents = 0;
        for (int j = 0; j < e[i]->cn; j++) {
            fds[k] = e[i]->carried[j];
            fds[k++].revents = 0;
        }
        for (int j = 0, own = many_own(e[i]); j < own; j++) {
            fds[k] = e[i]->ps->fds[PYSSH_POLL_RESERVED + j];
            fds[k++].revents = 0;
        }
    }
    fds[k].fd = wake;
    fds[k].events = POLLIN;
    fds[k].revents = 0;
    *count = total;
    return fds;
}

/* How long to poll: until the slice ends or the first deadline passes; an
 * entry with nothing to poll (a ProxyCommand still starting) is looked at
 * again every 10 ms, as wait_slice lets time pass for it. */
static int
many_ms(pyssh_many **e, int n, double slice_end, double now)
{
    double end = slice_end;
    int idle = 0;
    for (int i = 0; i < n; i++) {
        const pyssh_deadline *d = e[i]->dl;
        if (d != NULL && d->timeout >= 0 && d->expires < end) {
            end = d->expires;
        }
        if (e[i]->due_at > 0 && e[i]->due_at < end) {
            end = e[i]->due_at; /* a keepalive probe */
        }
        idle |= e[i]->want.fd == PYSSH_INVALID_SOCKET && e[i]->cn == 0;
    }
    int ms = end <= now ? 0 : (int)((end - now) * 1000) + 1;
    return idle && ms > 10 ? 10 : ms;
}

/* After a poll: what is ready is due (a socket entry finished), what has
 * passed its deadline ends. Returns how many finished. */
static int
many_mark(pyssh_many **e, int n, const pyssh_pollfd *fds, double now)
{
    int finished = 0, k = 0;
    for (int i = 0; i < n; i++) {
        short ready = fds[k++].revents;
        for (int j = 0, more = e[i]->cn + many_own(e[i]); j < more; j++) {
            ready |= fds[k++].revents;
        }
        int idle = e[i]->want.fd == PYSSH_INVALID_SOCKET && e[i]->cn == 0;
        if (e[i]->s == NULL && ready) {
            e[i]->rc = 0;
        }
        else if (ready || (idle && e[i]->s != NULL) || (e[i]->due_at > 0 && now >= e[i]->due_at)) {
            e[i]->due = 1;
        }
        /* passed is passed, ready or not (as pyssh_wait): a server that trickles
         * packets cannot hold off a total deadline */
        if (e[i]->rc == PYSSH_AGAIN && deadline_passed(e[i]->dl, now)) {
            e[i]->rc = PYSSH_TIMEDOUT;
        }
        finished += e[i]->rc != PYSSH_AGAIN;
    }
    return finished;
}

void
pyssh_many_step_once(pyssh_many *e)
{
    if (e->rc != PYSSH_AGAIN) {
        return;
    }
    e->due = 0;
    if (e->s != NULL) {
        many_step(e);
    }
    else {
        pyssh_pollfd fd = {e->fd, e->events, 0};
        if (pyssh_poll(&fd, 1, 0) > 0 && fd.revents != 0) {
            e->rc = 0;
        }
    }
    if (e->rc == PYSSH_AGAIN && deadline_passed(e->dl, pyssh_monotonic())) {
        e->rc = PYSSH_TIMEDOUT;
    }
}

int
pyssh_wait_many(pyssh_many **e, int n, double slice_end, pyssh_socket_t wake, int *woken,
                int *poll_err)
{
    for (;;) {
        int finished = 0, count = 0;
        for (int i = 0; i < n; i++) {
            if (e[i]->due && e[i]->rc == PYSSH_AGAIN) {
                e[i]->due = 0;
                many_step(e[i]);
            }
            finished += e[i]->rc != PYSSH_AGAIN;
        }
        if (finished > 0) {
            return finished;
        }
        double now = pyssh_monotonic();
        pyssh_pollfd *fds = many_fds(e, n, wake, &count);
        int ms = many_ms(e, n, slice_end, now);
        int rc = fds != NULL ? pyssh_poll(fds, (unsigned)count, ms) : (pyssh_sleep_ms(10), 0);
        if (rc < 0) {
            *poll_err = pyssh_socket_errno();
            free(fds);
            return pyssh_interrupted(*poll_err) ? 0 : -1;
        }
        now = pyssh_monotonic();
        if (fds != NULL) {
            finished = many_mark(e, n, fds, now);
            if (fds[count - 1].revents & POLLIN) {
                pyssh_wake_drain(wake);
                *woken = 1; /* a wake(), or another thread read packets: look at all */
            }
        }
        else {
            for (int i = 0; i < n; i++) {
                e[i]->due = e[i]->s != NULL; /* no memory: look at them all */
            }
        }
        free(fds);
        if (finished > 0 || *woken || now >= slice_end) {
            /* the next slice steps them all first: also when a ring came with a
             * finished entry (the ring's packets were read: the socket stays idle) */
            for (int i = 0; (finished == 0 || *woken) && i < n; i++) {
                e[i]->due = e[i]->s != NULL;
            }
            return finished;
        }
    }
}

int
pyssh_wait(SessionObject *self, pyssh_step_fn step, void *arg, pyssh_deadline *d,
           enum pyssh_exc fail_exc, const char *what)
{
    return pyssh_wait_ex(self, step, arg, d, fail_exc, what, NULL, NULL);
}

int
pyssh_call(SessionObject *self, pyssh_step_fn step, void *arg, enum pyssh_exc fail_exc,
           const char *what)
{
    int rc, closed = 0;
    pollwant want = {PYSSH_INVALID_SOCKET, 0, 0.0};
    pyssh_logmsg *logs = NULL;
    pyssh_failure fail;
    failure_clear(&fail);

    Py_BEGIN_ALLOW_THREADS
    rc = locked_step(self, step, arg, &closed, &fail, &want, &logs, NULL);
    if (self->carrier != NULL && !closed) {
        /* what the step wrote goes on through the jump hosts */
        pyssh_pollfd carried[2 * PYSSH_MAX_HOPS];
        char why[400] = "";
        carry_all(self, carried, &logs, why, sizeof(why));
    }
    Py_END_ALLOW_THREADS
    pyssh_log_emit(self, logs);
    if (closed) {
        pyssh_raise(self->state, PYSSH_EXC_SessionClosedError, "%s: the session is closed", what);
        return -1;
    }
    if (rc == PYSSH_FAILED) {
        pyssh_raise_failure(self->state, fail_exc, what, &fail);
        return -1;
    }
    return rc;
}
