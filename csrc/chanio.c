/* chanio: the one channel-I/O core (see chanio.h). */
#include "chanio.h"

#include <string.h>

/* ---- libssh's callbacks (inside libssh, lock held) ------------------------------- */

/* The window doubles when a whole one came within a round trip: the peer was
 * waiting for window adjusts, not for the path. Measured over at least one
 * round trip (and 10 ms, so that a burst from the socket is not taken for a
 * rate). */
static void
window_check(pyssh_chanio *io, uint32_t len)
{
    double rtt = io->session->rtt;
    io->win_bytes += len;
    if (io->win >= io->win_max || rtt < 0.001) {
        return;
    }
    double now = pyssh_monotonic();
    if (io->win_t0 == 0) {
        io->win_t0 = now;
        io->win_bytes = 0;
        return;
    }
    double span = now - io->win_t0;
    if (span < rtt || span < 0.01) {
        return;
    }
    double per_rtt = (double)io->win_bytes * rtt / span;
    io->win_t0 = now;
    io->win_bytes = 0;
#ifdef PYSSH_LIBSSH_WINDOW_TARGET
    if (per_rtt >= 0.7 * io->win) {
        uint32_t w = io->win > io->win_max / 2 ? io->win_max : io->win * 2;
        if (ssh_channel_set_window(io->chan, w) == SSH_OK) {
            io->win = w;
        }
    }
#else
    (void)per_rtt;
#endif
}

/* `data`/`len`: all that libssh holds for the stream, oldest first. */
static int
on_data(ssh_session s, ssh_channel c, void *data, uint32_t len, int is_stderr, void *ud)
{
    (void)s;
    (void)c;
    pyssh_chanio *io = ud;
    int stream = is_stderr ? 1 : 0;
    if (stream == 1 && io->drop_stderr) {
        return (int)len;
    }
    uint32_t taken = io->take != NULL ? io->take(io->state, stream, data, len) : 0;
    if (taken > 0) {
        pyssh_deadline_touch(io->dl);
    }
    if (io->win_max > 0 && len > io->avail[stream]) {
        window_check(io, len - io->avail[stream]); /* what is new since last time */
    }
    io->avail[stream] = len - taken;
    return (int)taken;
}

static void
on_eof(ssh_session s, ssh_channel c, void *ud)
{
    (void)s;
    (void)c;
    ((pyssh_chanio *)ud)->remote_eof = 1;
}

static void
on_close(ssh_session s, ssh_channel c, void *ud)
{
    (void)s;
    (void)c;
    pyssh_chanio *io = ud;
    io->remote_eof = 1;
    io->remote_closed = 1;
}

static void
on_exit_status(ssh_session s, ssh_channel c, int status, void *ud)
{
    (void)s;
    (void)c;
    pyssh_chanio *io = ud;
    io->has_status = 1;
    io->exit_status = status;
}

static void
on_exit_signal(ssh_session s, ssh_channel c, const char *signal, int core, const char *errmsg,
               const char *lang, void *ud)
{
    (void)s;
    (void)c;
    (void)lang;
    pyssh_chanio *io = ud;
    io->has_signal = 1;
    io->core_dumped = core;
    snprintf(io->exit_signal, sizeof(io->exit_signal), "%s", signal ? signal : "");
    snprintf(io->exit_errmsg, sizeof(io->exit_errmsg), "%s", errmsg ? errmsg : "");
}

/* ---- lifetime ------------------------------------------------------------------------ */

void
pyssh_chanio_init(pyssh_chanio *io, SessionObject *s, pyssh_take_fn take, void *state)
{
    memset(io, 0, sizeof(*io));
    io->session = s;
    io->take = take;
    io->state = state;
    ssh_callbacks_init(&io->cb);
    io->cb.userdata = io;
    io->cb.channel_data_function = on_data;
    io->cb.channel_eof_function = on_eof;
    io->cb.channel_close_function = on_close;
    io->cb.channel_exit_status_function = on_exit_status;
    io->cb.channel_exit_signal_function = on_exit_signal;
}

int
pyssh_chanio_new(pyssh_chanio *io, ssh_session ssh)
{
    io->chan = ssh_channel_new(ssh);
    if (io->chan == NULL) {
        return PYSSH_FAILED;
    }
    return ssh_add_channel_callbacks(io->chan, &io->cb) == SSH_OK ? 0 : PYSSH_FAILED;
}

int
pyssh_chanio_accept(pyssh_chanio *io, ssh_channel chan)
{
    io->chan = chan;
    io->opened = 1;
    return ssh_add_channel_callbacks(chan, &io->cb) == SSH_OK ? 0 : PYSSH_FAILED;
}

void
pyssh_chanio_adopt(pyssh_chanio *io, pyssh_chanio *from)
{
    ssh_remove_channel_callbacks(from->chan, &from->cb);
    io->chan = from->chan;
    io->opened = from->opened;
    io->eof_sent = from->eof_sent;
    memcpy(io->avail, from->avail, sizeof(io->avail));
    io->remote_eof = from->remote_eof;
    io->remote_closed = from->remote_closed;
    from->chan = NULL;
    if (ssh_add_channel_callbacks(io->chan, &io->cb) != SSH_OK) {
        /* out of memory: nothing will be offered, but libssh still holds the data,
         * and a close will be seen by the state libssh keeps */
        io->remote_closed |= ssh_channel_is_closed(io->chan);
    }
}

/* A refusal is PYSSH_REFUSED (by libssh's code), which errors.c explains
 * (MaxSessions). */
static int
open_result(pyssh_chanio *io, int rc)
{
    int r = pyssh_open_result(ssh_channel_get_session(io->chan), rc);
    if (r == 0) {
        io->opened = 1;
        /* a session open's round trip (open_t0 set): the server answers it at
         * once, unlike a direct-tcpip, which waits for its connect */
        if (io->open_t0 > 0) {
            pyssh_chanio_rtt(io->session, pyssh_monotonic() - io->open_t0);
            /* a session channel's window grows with the path; a tunnel
             * connection's stays at 2 MiB, which bounds each one's memory */
            pyssh_chanio_grow(io, PYSSH_WINDOW_MAX);
        }
    }
    return r;
}

/* How many times a refused session open is asked again. sshd frees a closed
 * channel's slot only at the end of a pass of its main loop: an open it read
 * together with another channel's close is refused ("no more sessions") below
 * MaxSessions, and the same open asked again, read in a later pass, is not. At
 * the real limit, the refusal comes back as many times (a round trip each). */
#define REOPENS_MAX 4

int
pyssh_chanio_open_session(pyssh_chanio *io)
{
    if (io->open_t0 == 0) {
        io->open_t0 = pyssh_monotonic();
    }
    int rc = open_result(io, ssh_channel_open_session(io->chan));
    if (rc == PYSSH_REFUSED && io->reopens < REOPENS_MAX) {
        ssh_session ssh = ssh_channel_get_session(io->chan);
        io->reopens++;
        pyssh_chanio_release(io); /* a denied channel: freed, nothing sent */
        if (pyssh_chanio_new(io, ssh) < 0) {
            return PYSSH_FAILED;
        }
        rc = open_result(io, ssh_channel_open_session(io->chan));
    }
    return rc;
}

int
pyssh_chanio_open_forward(pyssh_chanio *io, const char *host, int port, const char *orig,
                          int orig_port)
{
    /* a refused direct-tcpip is the target's doing, not the channel limit's:
     * libssh's message says why, without errors.c's MaxSessions advice */
    int rc = open_result(io, ssh_channel_open_forward(io->chan, host, port, orig, orig_port));
    return rc == PYSSH_REFUSED ? PYSSH_FAILED : rc;
}

int
pyssh_chanio_open_forward_unix(pyssh_chanio *io, const char *path)
{
    /* OpenSSH ignores the originator (its PROTOCOL: "reserved") */
    int rc = open_result(io, ssh_channel_open_forward_unix(io->chan, path, "127.0.0.1", 0));
    return rc == PYSSH_REFUSED ? PYSSH_FAILED : rc;
}

void
pyssh_chanio_release(pyssh_chanio *io)
{
    ssh_channel chan = io->chan;
    if (chan == NULL) {
        return;
    }
    io->chan = NULL;
    ssh_remove_channel_callbacks(chan, &io->cb);
    /* Send EOF and CLOSE. ssh_channel_close() returns SSH_AGAIN without queueing
     * the CLOSE when the EOF could not be flushed at once (libssh 0.11
     * channels.c: send_eof's flush), and ssh_channel_free() calls it only once:
     * the server would keep its end open. A second call queues the CLOSE (EOF is
     * marked sent). Never for a channel still being opened: it has no remote id
     * yet. */
    if (io->opened && (ssh_channel_is_open(chan) || io->remote_closed)) {
        if (ssh_channel_close(chan) == SSH_AGAIN) {
            ssh_channel_close(chan);
        }
    }
    /* libssh keeps the channel until the server's CLOSE arrives, then frees it */
    ssh_channel_free(chan);
}

void
pyssh_chanio_forget(pyssh_chanio *io)
{
    io->chan = NULL;
}

/* ---- moving bytes -------------------------------------------------------------------- */

void
pyssh_chanio_rtt(SessionObject *s, double t)
{
    if (t > 0 && (s->rtt == 0 || t < s->rtt)) {
        s->rtt = t;
    }
}

void
pyssh_chanio_grow(pyssh_chanio *io, uint32_t max)
{
    io->win_max = max < PYSSH_WINDOW_MIN ? PYSSH_WINDOW_MIN : max;
    if (io->win == 0) {
        io->win = PYSSH_WINDOW_MIN;
    }
    if (io->win > io->win_max) {
        io->win = io->win_max; /* what was granted stays granted: it shrinks as data comes */
#ifdef PYSSH_LIBSSH_WINDOW_TARGET
        if (io->chan != NULL) {
            ssh_channel_set_window(io->chan, io->win);
        }
#endif
    }
    io->win_t0 = 0;
}

uint32_t
pyssh_chanio_window(const pyssh_chanio *io)
{
    return io->win ? io->win : PYSSH_WINDOW_MIN;
}

int
pyssh_chanio_read(pyssh_chanio *io, int stream, char *dst, size_t room)
{
    uint32_t held = io->avail[stream];
    if (held == 0 || room == 0) {
        return 0;
    }
    uint32_t want = held < room ? held : (uint32_t)room;
    int n = ssh_channel_read_timeout(io->chan, dst, want, stream, 0);
    if (n == 0 || n == SSH_AGAIN) {
        io->avail[stream] = 0; /* what avail[] counted is not there after all */
        return 0;
    }
    if (n < 0) {
        return PYSSH_FAILED;
    }
    io->avail[stream] -= (uint32_t)n < held ? (uint32_t)n : held;
    pyssh_deadline_touch(io->dl);
    return n;
}

size_t
pyssh_chanio_room(pyssh_chanio *io, ssh_session ssh, size_t max)
{
    if (ssh_get_poll_flags(ssh) & SSH_WRITE_PENDING) {
        return 0; /* the socket is full: wait for POLLOUT */
    }
    size_t window = ssh_channel_window_size(io->chan);
    return window < max ? window : max; /* 0: wait for the server's window adjust */
}

long
pyssh_chanio_write(pyssh_chanio *io, ssh_session ssh, const char *p, size_t n)
{
    if (io->remote_closed) {
        return PYSSH_CHANIO_CLOSED;
    }
    size_t room = pyssh_chanio_room(io, ssh, PYSSH_CHANIO_WRITE_MAX);
    if (n > room) {
        n = room;
    }
    if (n == 0) {
        return 0;
    }
    int w = ssh_channel_write(io->chan, p, (uint32_t)n);
    if (w < 0) {
        return io->remote_closed ? PYSSH_CHANIO_CLOSED : PYSSH_FAILED;
    }
    if (w > 0) {
        pyssh_deadline_touch(io->dl);
    }
    return w;
}

int
pyssh_chanio_send_eof(pyssh_chanio *io)
{
    if (io->eof_sent) {
        return 0;
    }
    /* SSH_AGAIN: queued, sent with the next flush */
    if (ssh_channel_send_eof(io->chan) == SSH_ERROR && !io->remote_closed) {
        return PYSSH_FAILED;
    }
    io->eof_sent = 1;
    return 0;
}

int
pyssh_chanio_drained(const pyssh_chanio *io)
{
    return io->remote_closed && io->avail[0] == 0 && io->avail[1] == 0;
}

int
pyssh_chanio_ended(const pyssh_chanio *io)
{
    return io->remote_closed || io->has_status || io->has_signal;
}

/* ---- the step's loop ------------------------------------------------------------------ */

PYSSH_THREAD_LOCAL double pyssh_chanio_until = 0;

static int
rounds(ssh_session ssh, const pyssh_chanio_job *job)
{
    int rc;
    double until = pyssh_chanio_until;
    for (int i = 0; i < job->max && (until <= 0 || pyssh_monotonic() < until); i++) {
        rc = job->round(job->state, ssh, 0);
        if (rc != PYSSH_CHANIO_MORE) {
            return rc;
        }
        rc = pyssh_read_socket_once(job->session, ssh);
        if (rc == PYSSH_FAILED) {
            return PYSSH_FAILED;
        }
        if (rc == SSH_AGAIN) {
            /* the socket is idle: what arrived is taken or counted in avail[];
             * a last round, then wait */
            rc = job->round(job->state, ssh, 1);
            return rc == PYSSH_CHANIO_MORE ? PYSSH_AGAIN : rc;
        }
    }
    /* `max` rounds (or the slice's time): what the last read brought is dealt with before the wait,
     * which may not come back until its slice ends if the socket stays quiet */
    rc = job->round(job->state, ssh, 0);
    return rc == PYSSH_CHANIO_MORE ? PYSSH_AGAIN : rc;
}

int
pyssh_chanio_step(ssh_session ssh, void *p)
{
    const pyssh_chanio_job *job = p;
    pyssh_chanio *io = job->io;
    if (io == NULL) {
        return rounds(ssh, job);
    }
    /* the step's take and deadline while it runs (the session lock is held:
     * no other thread's step can run meanwhile), then the owner's again */
    pyssh_take_fn take = io->take;
    void *state = io->state;
    if (job->take != NULL) {
        io->take = job->take;
        io->state = job->state;
    }
    io->dl = job->dl;
    int rc = rounds(ssh, job);
    io->take = take;
    io->state = state;
    io->dl = NULL;
    return rc;
}

/* ---- with the GIL ---------------------------------------------------------------------- */

PyObject *
pyssh_chanuser_new(PyTypeObject *type, PyObject *args, PyObject *kwds, const char *fmt,
                   int (*init)(PyObject *self))
{
    static char *kwlist[] = {"session", NULL};
    PyObject *session;
    pyssh_state *st = pyssh_state_from_type(type);
    if (st == NULL ||
        !PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, st->SessionType, &session)) {
        return NULL;
    }
    pyssh_chanuser *self = (pyssh_chanuser *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->session = (SessionObject *)Py_NewRef(session);
    self->pid = pyssh_getpid();
    if (init((PyObject *)self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

void
pyssh_chanio_close(pyssh_chanio *io, long pid, const char *signal, int emit_logs)
{
    SessionObject *s = io->session;
    pyssh_logmsg *logs = NULL;
    int forked = pid != pyssh_getpid();
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(s->lock, WAIT_LOCK);
    if (io->chan != NULL && pyssh_session_ssh(s) != NULL && !forked) {
        pyssh_log_attach(s);
        uint64_t packets = s->rcounter.in_packets;
        if (signal != NULL && !pyssh_chanio_ended(io)) {
            ssh_channel_request_send_signal(io->chan, signal);
        }
        pyssh_chanio_release(io);
        if (s->rcounter.in_packets != packets) {
            /* libssh's close flushes the EOF and CLOSE by polling the socket, and
             * reads what came meanwhile: other waiters' packets (their channel's
             * open confirmation, their output), read from the socket that no
             * longer looks readable. Ring them, as a step that read does. */
            pyssh_waiters_ring_all(s);
        }
        logs = pyssh_log_take(s);
    }
    pyssh_chanio_forget(io);
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS
    pyssh_log_finish(s, logs, emit_logs);
}
