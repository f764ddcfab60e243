/* pyssh._ssh.Channel: one SSH channel that runs a remote command.
 *
 * The pump. run() moves stdout and stderr to their sinks and stdin from its
 * source in one loop, built on the shared wait helper (wait.c):
 *
 *   - run()'s step (pump_round, in chanio's rounds) runs with the session lock
 *     held and the GIL released. It copies what libssh has buffered for the
 *     channel into pyssh's buffers, writes stdin while the peer's window is open
 *     and libssh's output is flushed, then chanio lets libssh read the socket
 *     once (ssh_event_dopoll with a zero timeout) and goes round again until the
 *     socket has nothing more or a buffer wants emptying.
 *   - Between steps pyssh_wait() polls the socket without the lock, so an idle
 *     command costs no CPU, and runs signal handlers (Ctrl-C).
 *   - run() itself holds the GIL: it hands full buffers to Python callbacks,
 *     fetches the next stdin chunk, and stops the command if anything raises.
 *
 * The channel's bytes move through the channel-I/O core (chanio.c): its
 * callbacks, reads, window-aware writes and the step's rounds.
 *
 * Taking the data: while run()'s step holds the lock, chanio's data callback
 * offers what arrives to pump_take (the job's take), which copies it straight
 * into the sink, as much as the sink has room for (all of it when the output
 * is discarded: no copy at all), and returns how much it took; libssh keeps
 * the rest. With pyssh's libssh patch
 * (vendor/patches/) the callback sees the data where it lies in the decrypted
 * packet, so each byte is copied once, into its destination. Outside run()'s
 * step (another thread's step on the same session, starting the command) the
 * callback takes nothing.
 *
 * Knowing what libssh has buffered without making it read the socket: the data
 * callback records the length libssh still holds per stream (avail[]). Reads
 * are made only when avail[] says there is data, so they never touch the
 * socket; the only socket reads are the explicit dopoll calls, and a dopoll
 * that finds nothing means the socket is idle, so waiting on it cannot miss
 * data that libssh already holds. Data a full sink cannot take stays in
 * libssh's buffer, and libssh only reopens the window as pyssh takes it: a slow
 * callback slows the command down instead of growing memory.
 *
 * Every field written by the libssh callbacks is touched only with the session
 * lock held. A channel belongs to its session: ssh_free() frees it, so every use
 * checks under the lock that the session is still open. */
#include "chanio.h"

#include <errno.h>
#include <string.h>

#define CALLBACK_BUF      (256 * 1024) /* a callback's chunk: up to this much */
#define CALLBACK_READY    (64 * 1024)  /* ...and at least this much while data flows */
#define CAPTURE_MIN       (16 * 1024)  /* a capture buffer grows when it has less room */
#define CAPTURE_MAPPED    (4u << 20)   /* from this size a capture buffer grows... */
#define CAPTURE_MAPPED_TO (40u << 20)  /* ...to this one at once (see sink_flush) */
#define SCRATCH           (64 * 1024)  /* discarded output read from libssh's buffer */
#define ROUNDS_MAX        4096         /* socket reads per step, so that a step ends */

struct pump;
struct xfer;

typedef struct {
    PyObject_HEAD SessionObject *session; /* strong reference */
    long pid;            /* the creator's (pyssh_chanuser): a forked child skips the goodbye */
    pyssh_chanio io;     /* io.chan: NULL until opened, and again once closed */
    pyssh_claim claim;   /* the method running (atomic: pyssh_claim_take) */
    pyssh_claim claim_w; /* the writing method running: stdin is written from
                            one thread while another reads (a Process) */
    int exec_sent;       /* the command was started */
    double exec_at;      /* when (pyssh_monotonic) */
    char errtail[4096];  /* the last of stderr, kept by read()/write()... (ERRTAIL) */
    size_t errlen;
} ChannelObject;

/* ---- what arrives (inside libssh, lock held) ------------------------------------ */

/* ---- lifetime ---------------------------------------------------------------- */

static int
chanobj_init(PyObject *obj)
{
    ChannelObject *self = (ChannelObject *)obj;
    /* data is taken only inside this channel's own steps (their jobs' take);
     * in another thread's step on the session libssh keeps it */
    pyssh_chanio_init(&self->io, self->session, NULL, NULL);
    return 0;
}

static PyObject *
chanobj_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return pyssh_chanuser_new(type, args, kwds, "O!:Channel", chanobj_init);
}

/* A command closed just after it started may miss its SIGHUP. OpenSSH's sshd
 * answers the exec request once it has forked the command, and signals it with
 * killpg(): its process group exists only once the child has called setsid(), so
 * a signal that comes first is dropped ("killpg(...): No such process" in sshd's
 * log). A command that never reads its stdin (sleep) would run on, holding one of
 * sshd's MaxSessions slots, and libssh's channel, which it frees only on the
 * server's CLOSE, sent once the command has ended. Measured on loopback: 5 to 27%
 * of SIGHUPs sent at once were dropped, none sent 5 ms after the reply. So within
 * HUP_AGAIN_AFTER of the start, close() sends SIGHUP and EOF, then waits for the
 * end to be reported until HUP_AGAIN_AFTER is reached, and sends SIGHUP again if
 * it was not. Only a command that SIGHUP does not end (root's: OpenSSH signals no
 * root session; one that ignores it) makes close() wait, at most that long. */
#define HUP_AGAIN_AFTER 0.1

struct hup_wait {
    ChannelObject *ch;
    int sent;
};

static int
hup_round(void *state, ssh_session Py_UNUSED(ssh), int Py_UNUSED(idle))
{
    struct hup_wait *h = state;
    pyssh_chanio *io = &h->ch->io;
    if (!h->sent) {
        h->sent = 1;
        if (!pyssh_chanio_ended(io)) {
            ssh_channel_request_send_signal(io->chan, "HUP");
            pyssh_chanio_send_eof(io); /* a failure shows in the rounds */
        }
    }
    return pyssh_chanio_ended(io) ? 0 : PYSSH_CHANIO_MORE;
}

/* The one close, shared by close(), the error paths and dealloc. Idempotent.
 * `hup`: first ask the server to send SIGHUP to a command that still runs (a
 * stopped run: timeout, Ctrl-C, an exception). `may_wait`: a command started
 * less than HUP_AGAIN_AFTER ago may be waited for, that long at most (see above;
 * never from dealloc); otherwise closing only queues packets and never waits for
 * the server. Returns -1 with an exception set only when a signal handler raised
 * during that wait (Ctrl-C); the channel is closed all the same.
 *
 * `io.chan` is read and cleared under the session lock, where exec()'s step sets
 * it. The look before the lock, with both claims held, only skips the lock for a
 * channel never opened: `chan` changes only in a call that holds them (exec, or
 * this close from one of the methods), and dealloc cannot run during a call;
 * the calls without a claim (status, resize, signal) only read it, under the
 * lock. */
static int
chanobj_close_impl(ChannelObject *self, int hup, int emit_logs, int may_wait)
{
    if (self->io.chan == NULL) {
        return 0;
    }
    SessionObject *s = self->session;
    int forked = self->pid != pyssh_getpid();
    int rc = 0;

    int running = 0;
    if (hup && may_wait && !forked && self->exec_sent && pyssh_session_ssh(s) != NULL) {
        /* the end is recorded by libssh's callbacks, in any thread's step on the
         * session (a read of another channel's): looked at under the lock */
        pyssh_lock(s);
        running = !pyssh_chanio_ended(&self->io);
        pyssh_unlock(s);
    }
    if (running) {
        double left = self->exec_at + HUP_AGAIN_AFTER - pyssh_monotonic();
        if (left > 0) {
            struct hup_wait h = {self, 0};
            PyObject *type, *value, *tb;
            pyssh_deadline dl;
            pyssh_deadline_start(&dl, left, 1);
            PyErr_Fetch(&type, &value, &tb);
            pyssh_chanio_job job = {s, &self->io, NULL, hup_round, &h, NULL, ROUNDS_MAX};
            if (pyssh_wait(s, pyssh_chanio_step, &job, &dl, PYSSH_EXC_SSHError,
                           "closing the channel") < 0) {
                if (PyErr_ExceptionMatches(PyExc_OSError)) {
                    PyErr_Clear(); /* the time is up, or the session failed */
                }
                else {
                    rc = -1; /* a signal handler's exception (Ctrl-C) */
                }
            }
            if (type != NULL) {
                PyErr_Clear(); /* the exception in flight wins */
                PyErr_Restore(type, value, tb);
                rc = 0;
            }
        }
    }

    pyssh_chanio_close(&self->io, self->pid, hup && self->exec_sent ? "HUP" : NULL, emit_logs);
    return rc;
}

static void
chanobj_dealloc(ChannelObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    chanobj_close_impl(self, 1, 0, 0);
    Py_CLEAR(self->session);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* The state check at the top of every method (pyssh_claim_take), which also
 * claims the channel for the call: its reading side, its writing side (stdin),
 * or both. The two sides are claimed apart so that one thread can write stdin
 * while another reads the output, as with a subprocess's pipes. */
enum { SIDE_READ = 1, SIDE_WRITE = 2, SIDE_BOTH = 3 };

static int
claim_sides(ChannelObject *self, int sides, const char *method, enum pyssh_need need)
{
    if ((sides & SIDE_READ) &&
        pyssh_claim_take(&self->claim, self->session, "channel", method, need) < 0) {
        return -1;
    }
    if ((sides & SIDE_WRITE) &&
        pyssh_claim_take(&self->claim_w, self->session, "channel", method, need) < 0) {
        if (sides & SIDE_READ) {
            pyssh_unclaim(&self->claim);
        }
        return -1;
    }
    return 0;
}

static void
unclaim_sides(ChannelObject *self, int sides)
{
    if (sides & SIDE_READ) {
        pyssh_unclaim(&self->claim);
    }
    if (sides & SIDE_WRITE) {
        pyssh_unclaim(&self->claim_w);
    }
}

static int
claim(ChannelObject *self, const char *method, enum pyssh_need need)
{
    return claim_sides(self, SIDE_BOTH, method, need);
}

static void
unclaim(ChannelObject *self)
{
    unclaim_sides(self, SIDE_BOTH);
}

/* ---- opening: channel, environment, exec ------------------------------------ */

/* What exec() asks of the server, in this order: a terminal (`term` not
 * NULL), the environment, then the command (`command` NULL: the login shell). */
struct exec_arg {
    ChannelObject *ch;
    const char *command;
    PyObject *env; /* list of (bytes, bytes) */
    Py_ssize_t env_done;
    const char *term;
    int cols, rows;
    const char *modes; /* RFC 4254 8's encoded terminal modes, TTY_OP_END included */
    Py_ssize_t modes_len;
    int pty_done;
    int agent;   /* ask for agent forwarding when the session forwards the agent */
    int refused; /* what the server refused: REFUSED_*, or 0 */
};

enum { REFUSED_ENV = 1, REFUSED_EXEC, REFUSED_PTY };

static int
map_rc(int rc)
{
    return rc == SSH_AGAIN ? PYSSH_AGAIN : rc == SSH_OK ? 0 : PYSSH_FAILED;
}

/* A request's result: a refusal remembers what was refused. */
static int
requested(struct exec_arg *a, int rc, int what)
{
    rc = map_rc(rc);
    if (rc == PYSSH_FAILED) {
        a->refused = what;
    }
    return rc;
}

/* The terminal and the environment, each asked once (a request answered
 * PYSSH_AGAIN is asked again: libssh resumes it). */
static int
exec_setup(struct exec_arg *a, ssh_channel chan)
{
    int rc;
    if (a->term != NULL && !a->pty_done) {
        rc = ssh_channel_request_pty_size_modes(
            chan, a->term, a->cols, a->rows, (const unsigned char *)a->modes, (size_t)a->modes_len);
        if ((rc = requested(a, rc, REFUSED_PTY)) != 0) {
            return rc;
        }
        a->pty_done = 1;
    }
    while (a->env_done < PyList_GET_SIZE(a->env)) {
        PyObject *pair = PyList_GET_ITEM(a->env, a->env_done);
        rc = ssh_channel_request_env(chan, PyBytes_AS_STRING(PyTuple_GET_ITEM(pair, 0)),
                                     PyBytes_AS_STRING(PyTuple_GET_ITEM(pair, 1)));
        if ((rc = requested(a, rc, REFUSED_ENV)) != 0) {
            return rc;
        }
        a->env_done++;
    }
    return 0;
}

static int
exec_step(ssh_session ssh, void *p)
{
    struct exec_arg *a = p;
    ChannelObject *ch = a->ch;
    int rc;

    if (ch->io.chan == NULL && pyssh_chanio_new(&ch->io, ssh) < 0) {
        return PYSSH_FAILED;
    }
    /* a refusal (PYSSH_REFUSED) is explained by errors.c (MaxSessions) */
    if (!ch->io.opened) {
        if ((rc = pyssh_chanio_open_session(&ch->io)) != 0) {
            return rc;
        }
        /* agent forwarding (tunnel.c): asked once, before env and exec, as ssh -A
         * does; not for pyssh's own protocols (SCP), as scp does not */
        if (a->agent && pyssh_tunnel_agent_request(ch->session, ch->io.chan) < 0) {
            return PYSSH_FAILED;
        }
    }
    if ((rc = exec_setup(a, ch->io.chan)) != 0) {
        return rc;
    }
    rc = a->command != NULL ? ssh_channel_request_exec(ch->io.chan, a->command)
                            : ssh_channel_request_shell(ch->io.chan);
    if ((rc = requested(a, rc, REFUSED_EXEC)) == 0) {
        ch->exec_sent = 1;
        ch->exec_at = pyssh_monotonic();
    }
    return rc;
}

PyDoc_STRVAR(
    chanobj_exec_doc,
    "exec($self, command, /, env=(), timeout=None, pty=None, agent=True, defer=False)\n--\n\n"
    "Open a session channel, ask for a terminal when `pty` is (term, cols, rows,\n"
    "modes) (modes: RFC 4254's encoding, ending with TTY_OP_END), set the\n"
    "environment variables `env` (pairs of str), and start `command` (str), or\n"
    "the login shell when it is None. Waits at most `timeout` seconds. `agent`:\n"
    "ask for agent forwarding when the session forwards the agent. With `defer`,\n"
    "returns an Op instead of waiting.");

/* env: an iterable of (name, value) pairs of str, as a list of (bytes, bytes);
 * NULL with an exception set. */
static PyObject *
env_pairs(PyObject *env)
{
    PyObject *list = PyList_New(0);
    PyObject *it = list != NULL && env != NULL && env != Py_None ? PyObject_GetIter(env) : NULL;
    PyObject *item;
    while (it != NULL && (item = PyIter_Next(it)) != NULL) {
        PyObject *name, *value, *pair = NULL;
        if (PyArg_ParseTuple(item, "UU;env items must be (name, value) pairs of str", &name,
                             &value)) {
            PyObject *nb = PyUnicode_AsUTF8String(name);
            PyObject *vb = nb != NULL ? PyUnicode_AsUTF8String(value) : NULL;
            pair = vb != NULL ? PyTuple_Pack(2, nb, vb) : NULL;
            Py_XDECREF(nb);
            Py_XDECREF(vb);
        }
        Py_DECREF(item);
        if (pair == NULL || PyList_Append(list, pair) < 0) {
            Py_XDECREF(pair);
            break;
        }
        Py_DECREF(pair);
    }
    Py_XDECREF(it);
    if (PyErr_Occurred()) {
        Py_CLEAR(list);
    }
    return list;
}

/* The server refused what the step asked (the exception in flight is
 * SSHError's): say what, and what to do. */
static void
explain_refusal(pyssh_state *st, const struct exec_arg *a)
{
    if (a->refused == 0 || !PyErr_ExceptionMatches(st->exc[PYSSH_EXC_SSHError]) ||
        PyErr_ExceptionMatches(st->exc[PYSSH_EXC_SSHTimeoutError]) ||
        PyErr_ExceptionMatches(st->exc[PYSSH_EXC_ConnectError])) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (a->refused == REFUSED_ENV) {
        PyObject *pair = PyList_GET_ITEM(a->env, a->env_done);
        pyssh_raise(st, PYSSH_EXC_SSHError,
                    "the server refused to set the environment variable %s: "
                    "its sshd_config must list it in AcceptEnv (or set it in the "
                    "command itself: NAME=value command)",
                    PyBytes_AS_STRING(PyTuple_GET_ITEM(pair, 0)));
    }
    else if (a->refused == REFUSED_PTY) {
        pyssh_raise(st, PYSSH_EXC_SSHError,
                    "the server refused a terminal (pty=True): its sshd_config or the "
                    "key's options may forbid one (PermitTTY no, no-pty); run without pty");
    }
    else {
        pyssh_raise(st, PYSSH_EXC_SSHError, "the server refused to run the %s (%S)",
                    a->command != NULL ? "command" : "login shell", value ? value : Py_None);
    }
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* exec()'s command: str without NUL as UTF-8 bytes in *out, or None (the
 * shell: *out NULL). 0, or -1 with an exception set. */
static int
command_bytes(PyObject *command, PyObject **out)
{
    *out = NULL;
    if (command == Py_None) {
        return 0;
    }
    if (!PyUnicode_Check(command)) {
        PyErr_Format(PyExc_TypeError, "command must be a str or None, not %.100s",
                     Py_TYPE(command)->tp_name);
        return -1;
    }
    *out = PyUnicode_AsUTF8String(command);
    if (*out == NULL) {
        return -1;
    }
    if ((Py_ssize_t)strlen(PyBytes_AS_STRING(*out)) != PyBytes_GET_SIZE(*out)) {
        PyErr_SetString(PyExc_ValueError, "the command contains a NUL character");
        Py_CLEAR(*out);
        return -1;
    }
    return 0;
}

#define TERM_MAX       64
#define SIZE_MAX_CELLS 100000

/* exec()'s pty: None, or (term, cols, rows, modes) into `a`. */
static int
pty_parse(PyObject *pty, struct exec_arg *a)
{
    if (pty == Py_None) {
        return 0;
    }
    if (!PyArg_ParseTuple(pty, "siiy#;pty must be (term, cols, rows, modes)", &a->term, &a->cols,
                          &a->rows, &a->modes, &a->modes_len)) {
        return -1;
    }
    if (strlen(a->term) > TERM_MAX || a->cols < 1 || a->rows < 1 || a->cols > SIZE_MAX_CELLS ||
        a->rows > SIZE_MAX_CELLS) {
        PyErr_SetString(PyExc_ValueError, "the terminal's name or size is out of range");
        return -1;
    }
    return 0;
}

/* exec() as an operation: what its argument points into. */
struct exec_op {
    struct exec_arg a; /* first: the step's */
    PyObject *cmd_bytes, *env_list;
};

static int
exec_op_step(ssh_session ssh, void *p)
{
    return exec_step(ssh, &((struct exec_op *)p)->a);
}

static PyObject *
exec_finish(SessionObject *s, void *arg, int rc)
{
    (void)s;
    (void)arg;
    (void)rc;
    Py_RETURN_NONE;
}

static void
exec_failed(SessionObject *s, void *arg)
{
    struct exec_op *x = arg;
    explain_refusal(s->state, &x->a);
    chanobj_close_impl(x->a.ch, 0, 1, 0);
}

static void
exec_release(SessionObject *s, void *arg)
{
    struct exec_op *x = arg;
    (void)s;
    unclaim(x->a.ch);
    Py_XDECREF(x->cmd_bytes);
    Py_XDECREF(x->env_list);
}

static const pyssh_op_kind exec_kind = {"starting the command",
                                        PYSSH_EXC_SSHError,
                                        exec_op_step,
                                        sizeof(struct exec_op),
                                        exec_finish,
                                        exec_failed,
                                        exec_release,
                                        NULL,
                                        NULL};

static PyObject *
chanobj_exec(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"command", "env", "timeout", "pty", "agent", "defer", NULL};
    PyObject *command, *env = NULL, *pty = Py_None;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    struct exec_op x = {.a = {.ch = self, .agent = 1}};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO&Opp:exec", kwlist, &command, &env,
                                     pyssh_deadline_conv, &dl, &pty, &x.a.agent, &defer)) {
        return NULL;
    }
    if (claim(self, "exec", PYSSH_NEED_CONNECTED) < 0) {
        return NULL;
    }
    if (self->io.chan != NULL || self->io.opened) {
        pyssh_raise(self->session->state, PYSSH_EXC_SSHError,
                    "this channel was used already: open a new one");
        exec_release(self->session, &x);
        return NULL;
    }
    if (command_bytes(command, &x.cmd_bytes) < 0 || pty_parse(pty, &x.a) < 0 ||
        (x.env_list = env_pairs(env)) == NULL) {
        exec_release(self->session, &x);
        return NULL;
    }
    x.a.command = x.cmd_bytes != NULL ? PyBytes_AS_STRING(x.cmd_bytes) : NULL;
    x.a.env = x.env_list;
    return pyssh_op_start(self->session, &exec_kind, &x, &dl, NULL, defer, (PyObject *)self, args,
                          kwds);
}

/* The command was started: run() and the transfers need it. */
static int
exec_done(ChannelObject *self)
{
    /* under the lock: status(), resize() and signal() come here without a claim,
     * while another thread's exec() or close() (which hold it) set them */
    pyssh_lock(self->session);
    int started = self->io.chan != NULL && self->exec_sent;
    pyssh_unlock(self->session);
    if (!started) {
        pyssh_raise(self->session->state, PYSSH_EXC_SSHError,
                    "no command is running on this channel: call exec() first");
        return -1;
    }
    return 0;
}

/* ---- the pump ------------------------------------------------------------------ */

enum sink_kind { SINK_DISCARD, SINK_CAPTURE, SINK_CALLBACK };

typedef struct {
    enum sink_kind kind;
    PyObject *target; /* the callable (SINK_CALLBACK) */
    PyObject *bytes;  /* SINK_CAPTURE: the bytes object being filled */
    char *buf;        /* where the step writes: malloc'd, or inside `bytes` */
    size_t len, cap;
    unsigned long long total;
} sink;

struct pump {
    ChannelObject *ch;
    pyssh_deadline *dl; /* the timeout: no progress for so long */
    sink out[2];
    char *scratch; /* SCRATCH bytes, where discarded output is read to
                                    (this pump's: steps of other sessions run at once) */
    /* stdin: the current chunk, and whether more may follow */
    PyObject *stdin_iter; /* NULL: no stdin (EOF at once) */
    Py_buffer in_view;
    int have_view;
    const char *in;
    size_t in_left;
    int in_done; /* the source is exhausted: EOF to send */
    int eof_sent;
    int stdin_dropped; /* the command ended before reading all stdin */
    int need_stdin;    /* the step wants the next chunk */
    int done;          /* the server closed the channel; all output read */
    /* snapshot of the result, taken under the lock */
    int has_status, exit_status, has_signal, core_dumped;
    char exit_signal[32];
    char exit_errmsg[256];
};

static int
sink_ready(const sink *k)
{
    /* A callback gets large chunks while data flows, and whatever there is as
     * soon as the socket is idle (pump_round's idle round). */
    if (k->kind == SINK_CALLBACK) {
        return k->len >= CALLBACK_READY;
    }
    return k->kind == SINK_CAPTURE && k->cap - k->len < CAPTURE_MIN;
}

/* run()'s take, offered what arrives by chanio's data callback inside run()'s
 * step: copy into the sink what it has room for. */
static uint32_t
pump_take(void *state, int stream, const char *data, uint32_t len)
{
    struct pump *P = state;
    sink *k = &P->out[stream];
    if (k->kind == SINK_DISCARD) {
        k->total += len;
        return len;
    }
    size_t room = k->cap - k->len;
    uint32_t n = len < room ? len : (uint32_t)room;
    memcpy(k->buf + k->len, data, n);
    k->len += n;
    k->total += n;
    return n;
}

/* Copy what libssh still holds for one stream into its sink (discard: read and drop). */
static int
drain(struct pump *P, int stream)
{
    sink *k = &P->out[stream];
    for (;;) {
        int discard = k->kind == SINK_DISCARD;
        char *dst = discard ? P->scratch : k->buf + k->len;
        size_t room = discard ? SCRATCH : k->cap - k->len;
        int n = pyssh_chanio_read(&P->ch->io, stream, dst, room);
        if (n <= 0) {
            return n < 0 ? PYSSH_FAILED : 0;
        }
        k->total += (unsigned)n;
        if (!discard) {
            k->len += (size_t)n;
        }
    }
}

/* The command is gone: what it did not read is dropped, as a pipe would. */
static int
stdin_gone(struct pump *P)
{
    if (P->in_left > 0 || !P->in_done) {
        P->stdin_dropped = 1;
    }
    P->in_left = 0;
    P->in_done = 1;
    P->eof_sent = 1;
    return 0;
}

/* Write stdin while the peer's window is open and libssh has sent what it had. */
static int
feed(struct pump *P, ssh_session ssh)
{
    pyssh_chanio *io = &P->ch->io;
    if (io->remote_closed) {
        return stdin_gone(P);
    }
    while (P->in_left > 0) {
        long w = pyssh_chanio_write(io, ssh, P->in, P->in_left);
        if (w == PYSSH_CHANIO_CLOSED) {
            return stdin_gone(P);
        }
        if (w <= 0) {
            return w < 0 ? PYSSH_FAILED : 0;
        }
        P->in += w;
        P->in_left -= (size_t)w;
    }
    if (P->in_done && !P->eof_sent) {
        if (pyssh_chanio_send_eof(io) < 0) {
            return PYSSH_FAILED;
        }
        P->eof_sent = 1;
    }
    return 0;
}

static void
snapshot(struct pump *P)
{
    const pyssh_chanio *io = &P->ch->io;
    P->has_status = io->has_status;
    P->exit_status = io->exit_status;
    P->has_signal = io->has_signal;
    P->core_dumped = io->core_dumped;
    memcpy(P->exit_signal, io->exit_signal, sizeof(P->exit_signal));
    memcpy(P->exit_errmsg, io->exit_errmsg, sizeof(P->exit_errmsg));
}

/* A callback's chunk waits for it. (A capture's bytes are not waiting: they stay
 * in its buffer until the end; counting them made an idle command that had
 * printed something spin, stepping and returning without ever waiting.) */
static int
undelivered(const sink *k)
{
    return k->kind == SINK_CALLBACK && k->len > 0;
}

/* Something for run() to do with the GIL: output to hand over, stdin to fetch,
 * the end. Once the socket is idle (`idle`), whatever a callback has waiting
 * is handed over too. */
static int
want_python(struct pump *P, int idle)
{
    if (P->done || P->need_stdin) {
        return 1;
    }
    if (idle) {
        return undelivered(&P->out[0]) || undelivered(&P->out[1]);
    }
    return sink_ready(&P->out[0]) || sink_ready(&P->out[1]);
}

/* One round of run()'s step: take the output, send stdin. */
static int
pump_round(void *state, ssh_session ssh, int idle)
{
    struct pump *P = state;
    if (drain(P, 0) < 0 || drain(P, 1) < 0 || (!idle && feed(P, ssh) < 0)) {
        return PYSSH_FAILED;
    }
    if (!idle) {
        P->need_stdin = P->in_left == 0 && !P->in_done;
    }
    if (pyssh_chanio_drained(&P->ch->io)) {
        P->done = 1;
    }
    if (want_python(P, idle)) {
        snapshot(P);
        return 0;
    }
    return PYSSH_CHANIO_MORE;
}

/* ---- run(): the loop with the GIL ---------------------------------------------- */

static int
sink_init(sink *k, PyObject *target, const char *name)
{
    memset(k, 0, sizeof(*k));
    if (target == Py_None) {
        k->kind = SINK_DISCARD;
        return 0;
    }
    if (target == Py_True) {
        k->kind = SINK_CAPTURE;
        k->cap = 4 * CAPTURE_MIN;
        k->bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)k->cap);
        if (k->bytes == NULL) {
            return -1;
        }
        k->buf = PyBytes_AS_STRING(k->bytes);
        return 0;
    }
    if (!PyCallable_Check(target)) {
        PyErr_Format(PyExc_TypeError, "%s must be None, True or a callable, not %.100s", name,
                     Py_TYPE(target)->tp_name);
        return -1;
    }
    k->kind = SINK_CALLBACK;
    k->cap = CALLBACK_BUF;
    k->buf = PyMem_RawMalloc(k->cap);
    if (k->buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(target);
    k->target = target;
    return 0;
}

static void
sink_free(sink *k)
{
    if (k->kind == SINK_CALLBACK) {
        PyMem_RawFree(k->buf);
    }
    Py_CLEAR(k->target);
    Py_CLEAR(k->bytes);
    k->buf = NULL;
}

/* Hand a sink's data to Python (GIL held). */
static int
sink_flush(sink *k)
{
    if (k->kind == SINK_CALLBACK && k->len > 0) {
        PyObject *chunk = PyBytes_FromStringAndSize(k->buf, (Py_ssize_t)k->len);
        k->len = 0;
        if (chunk == NULL) {
            return -1;
        }
        PyObject *r = PyObject_CallOneArg(k->target, chunk);
        Py_DECREF(chunk);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    else if (k->kind == SINK_CAPTURE && k->cap - k->len < CAPTURE_MIN) {
        /* grow by doubling: linear time overall. From CAPTURE_MAPPED on, past
         * glibc's largest mmap threshold (32 MiB) at once: the buffer gets pages of
         * its own, which realloc moves without copying (mremap) and which are not
         * resident until written; a buffer left in the heap is copied whole when it
         * cannot grow in place, up to 32 MiB in one step (benchmarks/aio.py, exec
         * of 256 MiB with the other clients' allocations around: the loop's
         * thread's longest stretch went from 35 to 20 ms, medians of 3). */
        size_t cap = k->cap * 2;
        if (k->cap >= CAPTURE_MAPPED && cap < CAPTURE_MAPPED_TO) {
            cap = CAPTURE_MAPPED_TO;
        }
        if (_PyBytes_Resize(&k->bytes, (Py_ssize_t)cap) < 0) {
            return -1;
        }
        k->cap = cap;
        k->buf = PyBytes_AS_STRING(k->bytes);
    }
    return 0;
}

static int
next_stdin(struct pump *P)
{
    if (P->have_view) {
        PyBuffer_Release(&P->in_view);
        P->have_view = 0;
    }
    P->in = NULL;
    P->in_left = 0;
    for (;;) {
        PyObject *item = PyIter_Next(P->stdin_iter);
        if (item == NULL) {
            if (PyErr_Occurred()) {
                return -1;
            }
            P->in_done = 1;
            return 0;
        }
        int r = PyObject_GetBuffer(item, &P->in_view, PyBUF_SIMPLE);
        Py_DECREF(item);
        if (r < 0) {
            return -1;
        }
        if (P->in_view.len == 0) {
            PyBuffer_Release(&P->in_view);
            continue;
        }
        P->have_view = 1;
        P->in = P->in_view.buf;
        P->in_left = (size_t)P->in_view.len;
        return 0;
    }
}

PyDoc_STRVAR(
    chanobj_run_doc,
    "run($self, /, stdout=None, stderr=None, stdin=None, timeout=None, defer=False)\n--\n\n"
    "Stream the running command's output and input until the server closes the\n"
    "channel. `stdout`/`stderr`: None (discard), True (capture) or a callable called\n"
    "with each bytes chunk. `stdin`: None (send EOF at once) or an iterator of\n"
    "bytes-like chunks (EOF when it ends). `timeout`: seconds without progress (no\n"
    "output received, no stdin sent) before the command is stopped.\n"
    "Returns (exit_status or None, signal name or None, core_dumped, error message,\n"
    "captured stdout or None, captured stderr or None, stdin_dropped). On timeout,\n"
    "interrupt or an exception from a callback the command gets SIGHUP (where the\n"
    "server supports signals), the channel is closed and the exception propagates.");

/* Hand full buffers to their sinks (GIL held). Time spent in a slow callback is
 * not the server's: the timeout starts again once data was delivered. */
static int
pump_deliver(struct pump *P)
{
    for (int i = 0; i < 2; i++) {
        int had = P->out[i].kind == SINK_CALLBACK && P->out[i].len > 0;
        if (sink_flush(&P->out[i]) < 0) {
            return -1;
        }
        if (had) {
            pyssh_deadline_touch(P->dl);
        }
    }
    return 0;
}

/* Set up run()'s pump: the sinks, the scratch buffer, the stdin iterator
 * (GIL held). -1 with an exception set; pump_free cleans up either way. */
static int
pump_init(struct pump *P, ChannelObject *ch, pyssh_deadline *dl, PyObject *out_t, PyObject *err_t,
          PyObject *in_t)
{
    memset(P, 0, sizeof(*P));
    P->ch = ch;
    P->dl = dl;
    if (sink_init(&P->out[0], out_t, "stdout") < 0 || sink_init(&P->out[1], err_t, "stderr") < 0) {
        return -1;
    }
    if (P->out[0].kind == SINK_DISCARD || P->out[1].kind == SINK_DISCARD) {
        P->scratch = PyMem_RawMalloc(SCRATCH);
        if (P->scratch == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    if (in_t == Py_None) {
        P->in_done = 1;
        return 0;
    }
    P->stdin_iter = PyObject_GetIter(in_t);
    return P->stdin_iter == NULL ? -1 : 0;
}

static void
pump_free(struct pump *P)
{
    sink_free(&P->out[0]);
    sink_free(&P->out[1]);
    PyMem_RawFree(P->scratch);
    if (P->have_view) {
        PyBuffer_Release(&P->in_view);
    }
    Py_XDECREF(P->stdin_iter);
}

/* run()'s result, a RunResult (module.c), from the pump's snapshot. */
static PyObject *
run_result(pyssh_state *st, struct pump *P)
{
    PyObject *v[7] = {NULL};
    v[0] = P->has_status ? PyLong_FromLong(P->exit_status) : Py_NewRef(Py_None);
    v[1] = P->has_signal ? PyUnicode_DecodeUTF8(P->exit_signal, strlen(P->exit_signal), "replace")
                         : Py_NewRef(Py_None);
    v[2] = PyBool_FromLong(P->core_dumped);
    v[3] = PyUnicode_DecodeUTF8(P->exit_errmsg, strlen(P->exit_errmsg), "replace");
    for (int i = 0; i < 2; i++) {
        sink *k = &P->out[i];
        if (k->kind != SINK_CAPTURE) {
            v[4 + i] = Py_NewRef(Py_None);
        }
        else if (_PyBytes_Resize(&k->bytes, (Py_ssize_t)k->len) == 0) {
            v[4 + i] = k->bytes;
            k->bytes = NULL;
        }
    }
    v[6] = PyBool_FromLong(P->stdin_dropped);
    return pyssh_named_result(st->RunResultType, v, 7);
}

/* run() as an operation: one chanio job per round, output handed over and
 * stdin fetched between rounds (GIL held), until the server closed the channel. */
struct run_op {
    pyssh_chanio_job job; /* first: the step's */
    struct pump P;
};

static int
run_step(ssh_session ssh, void *p)
{
    return pyssh_chanio_step(ssh, &((struct run_op *)p)->job);
}

static void
run_relocate(void *arg, pyssh_deadline *dl)
{
    struct run_op *r = arg;
    r->P.dl = dl;
    r->job = (pyssh_chanio_job){r->P.ch->session, &r->P.ch->io, pump_take, pump_round, &r->P, dl,
                                ROUNDS_MAX};
}

static PyObject *
run_finish(SessionObject *s, void *arg, int rc)
{
    struct run_op *r = arg;
    (void)rc;
    if (pump_deliver(&r->P) < 0) {
        return NULL;
    }
    if (r->P.done) {
        chanobj_close_impl(r->P.ch, 0, 1, 0);
        return run_result(s->state, &r->P);
    }
    if (r->P.need_stdin) {
        r->P.need_stdin = 0;
        if (next_stdin(&r->P) < 0) {
            return NULL;
        }
    }
    return PyErr_CheckSignals() < 0 ? NULL : PYSSH_OP_MORE;
}

/* Stop the command; the exception in flight is kept. */
static void
run_failed(SessionObject *s, void *arg)
{
    struct run_op *r = arg;
    pyssh_state *st = s->state;
    if (PyErr_ExceptionMatches(st->exc[PYSSH_EXC_SSHTimeoutError])) {
        PyErr_Clear();
        pyssh_raise_timeout(st,
                            "running the command (it was sent SIGHUP and its "
                            "channel closed; the session is still usable)",
                            r->P.dl);
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    chanobj_close_impl(r->P.ch, 1, 1, 1);
    PyErr_Restore(type, value, tb);
}

static void
run_release(SessionObject *s, void *arg)
{
    struct run_op *r = arg;
    (void)s;
    unclaim(r->P.ch);
    pump_free(&r->P);
}

/* The callbacks and the stdin iterator may hold the Op (a cycle). */
static int
run_traverse(void *p, visitproc visit, void *arg)
{
    struct pump *P = &((struct run_op *)p)->P;
    for (int i = 0; i < 2; i++) {
        Py_VISIT(P->out[i].target);
    }
    Py_VISIT(P->stdin_iter);
    if (P->have_view) {
        Py_VISIT(P->in_view.obj);
    }
    return 0;
}

static const pyssh_op_kind run_kind = {"running the command", PYSSH_EXC_SSHError, run_step,
                                       sizeof(struct run_op), run_finish,         run_failed,
                                       run_release,           run_relocate,       run_traverse};

static PyObject *
chanobj_run(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"stdout", "stderr", "stdin", "timeout", "defer", NULL};
    PyObject *out_t = Py_None, *err_t = Py_None, *in_t = Py_None;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    struct run_op r;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOOO&p:run", kwlist, &out_t, &err_t, &in_t,
                                     pyssh_deadline_conv, &dl, &defer)) {
        return NULL;
    }
    if (claim(self, "run", PYSSH_NEED_CONNECTED) < 0) {
        return NULL;
    }
    memset(&r, 0, sizeof(r));
    if (exec_done(self) < 0 || pump_init(&r.P, self, &dl, out_t, err_t, in_t) < 0) {
        r.P.ch = self;
        run_release(self->session, &r);
        return NULL;
    }
    run_relocate(&r, &dl);
    return pyssh_op_start(self->session, &run_kind, &r, &dl, NULL, defer, (PyObject *)self, args,
                          kwds);
}

/* ---- byte-level I/O, for protocols spoken over the channel (SCP) -------------- *
 *
 * read(), write(), recv_to_fd(), send_from_fd(): each is one loop on the shared
 * wait helper, with the GIL released while it waits. Local file I/O (read(2),
 * write(2) on a descriptor Python opened) is done in the step too, so a file moves
 * through one fixed buffer whatever its size. stderr is kept as a bounded tail
 * (stderr_tail) so that the window never fills with output nobody reads. */

#define IO_BUF  (256 * 1024)
#define ERRTAIL 4096

/* X_SEND: a Process's stdin (send()): stops short where the command ended, and
 * leaves stderr to the reader */
enum xfer_mode { X_READ, X_WRITE, X_RECV_FD, X_SEND_FD, X_SEND };

struct xfer {
    ChannelObject *ch;
    enum xfer_mode mode;
    char *buf; /* X_READ: destination; X_WRITE/X_SEND_FD: data to send */
    size_t cap, len, pos;
    int fd;                  /* the local file */
    unsigned long long left; /* file bytes still to move */
    unsigned long long moved;
    int local_errno;      /* a local read(2)/write(2) failed */
    int short_file;       /* the local file ended before `left` did */
    double next_progress; /* 0: no progress reports */
    int done;
};

/* stderr is kept as a bounded tail, so that the window never fills with
 * output nobody reads. */
static int
keep_stderr(ChannelObject *ch)
{
    char tmp[1024];
    int n;
    while ((n = pyssh_chanio_read(&ch->io, 1, tmp, sizeof(tmp))) > 0) {
        /* keep the last ERRTAIL bytes (n <= sizeof(tmp) < ERRTAIL) */
        size_t keep = ch->errlen + (size_t)n > ERRTAIL ? ERRTAIL - (size_t)n : ch->errlen;
        memmove(ch->errtail, ch->errtail + ch->errlen - keep, keep);
        memcpy(ch->errtail + keep, tmp, (size_t)n);
        ch->errlen = keep + (size_t)n;
    }
    return n;
}

/* The local file failed: the transfer ends with that errno. */
static int
local_failed(struct xfer *X, int e)
{
    X->local_errno = e;
    X->done = 1;
    return 0;
}

/* File bytes received: to the local file. */
static int
xfer_store(struct xfer *X, const char *data, uint32_t n)
{
    int e = pyssh_write_all(X->fd, data, n, PYSSH_HERE);
    if (e != 0) {
        return local_failed(X, e);
    }
    X->left -= n;
    X->moved += n;
    if (X->left == 0) {
        X->done = 1;
    }
    return 0;
}

/* Called from chanio's data callback inside recv_to_fd()'s step: write the
 * file's bytes straight from the decrypted packet to the file. */
static uint32_t
xfer_take(void *state, int stream, const char *data, uint32_t len)
{
    struct xfer *X = state;
    if (stream != 0 || X->mode != X_RECV_FD || X->left == 0 || X->local_errno) {
        return 0;
    }
    uint32_t n = len < X->left ? len : (uint32_t)X->left;
    xfer_store(X, data, n);
    return X->local_errno ? 0 : n;
}

/* read(): what libssh holds for stdout, up to cap; b'' at the end. */
static int
xfer_read(struct xfer *X)
{
    int n = pyssh_chanio_read(&X->ch->io, 0, X->buf, X->cap);
    if (n < 0) {
        return PYSSH_FAILED;
    }
    X->len = (size_t)n;
    X->done = n > 0 || X->ch->io.remote_eof;
    return 0;
}

/* recv_to_fd(): what libssh holds for stdout (the callback took the rest). */
static int
xfer_recv(struct xfer *X)
{
    pyssh_chanio *io = &X->ch->io;
    while (X->left > 0 && !X->done) {
        size_t want = X->cap < X->left ? X->cap : (size_t)X->left;
        int n = pyssh_chanio_read(io, 0, X->buf, want);
        if (n <= 0) {
            if (n < 0) {
                return PYSSH_FAILED;
            }
            break;
        }
        xfer_store(X, X->buf, (uint32_t)n);
    }
    if (X->left == 0 || (io->remote_eof && io->avail[0] == 0)) {
        X->done = 1;
    }
    return 0;
}

/* send_from_fd(): the next piece of the local file, once the last is sent. */
static int
xfer_refill(struct xfer *X)
{
    for (;;) {
        size_t want = X->cap < X->left ? X->cap : (size_t)X->left;
        long n = pyssh_read(X->fd, X->buf, want);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return local_failed(X, errno);
        }
        if (n == 0) {
            X->short_file = 1;
            X->done = 1;
            return 0;
        }
        X->pos = 0;
        X->len = (size_t)n;
        X->left -= (unsigned long long)n;
        return 0;
    }
}

/* write()/send_from_fd(): send within the window until it is all sent, the
 * window shuts or the server closed (the caller sees what is left unsent). */
static int
xfer_send(struct xfer *X, ssh_session ssh)
{
    while (!X->done) {
        if (X->pos == X->len && X->mode == X_SEND_FD && X->left > 0) {
            xfer_refill(X);
            continue;
        }
        if (X->pos == X->len) {
            X->done = 1;
            break;
        }
        long w = pyssh_chanio_write(&X->ch->io, ssh, X->buf + X->pos, X->len - X->pos);
        if (w == PYSSH_CHANIO_CLOSED) {
            X->done = 1;
            break;
        }
        if (w <= 0) {
            return w < 0 ? PYSSH_FAILED : 0;
        }
        X->pos += (size_t)w;
        X->moved += (unsigned)w;
    }
    return 0;
}

/* One round of a transfer's step (lock held). */
static int
xfer_round(void *state, ssh_session ssh, int idle)
{
    struct xfer *X = state;
    int rc;
    if (X->done) {
        return 0; /* nothing to move (size 0, n 0) */
    }
    if (X->mode != X_SEND && keep_stderr(X->ch) < 0) {
        return PYSSH_FAILED;
    }
    switch (X->mode) {
    case X_READ:
        rc = xfer_read(X);
        break;
    case X_RECV_FD:
        rc = xfer_recv(X);
        break;
    default:
        rc = xfer_send(X, ssh);
    }
    if (rc < 0) {
        return PYSSH_FAILED;
    }
    if (X->done || (!idle && X->next_progress > 0 && pyssh_monotonic() >= X->next_progress)) {
        return 0; /* finished, or time for a progress report */
    }
    return PYSSH_CHANIO_MORE;
}

/* The last of stderr, copied under the lock into `tail` (ERRTAIL bytes): the
 * writing side (write(), the getter) reads it while a read() of another thread
 * may be keeping stderr (a step, under the lock). Returns its length. */
static size_t
errtail_copy(ChannelObject *self, char *tail)
{
    pyssh_lock(self->session);
    size_t n = self->errlen;
    memcpy(tail, self->errtail, n);
    pyssh_unlock(self->session);
    return n;
}

static PyObject *
closed_midway(ChannelObject *self, const char *what)
{
    char copy[sizeof(self->errtail)];
    size_t n = errtail_copy(self, copy);
    PyObject *tail = pyssh_printable(copy, n);
    if (tail == NULL) {
        return NULL;
    }
    pyssh_raise(self->session->state, PYSSH_EXC_SSHError, "%s: the remote command ended first%s%U",
                what, n ? "; its stderr ended with: " : "", tail);
    Py_DECREF(tail);
    return NULL;
}

/* How a file transfer ended, as an exception, or its byte count. */
static PyObject *
fd_result(ChannelObject *self, struct xfer *X, const char *what)
{
    if (X->local_errno) {
        errno = X->local_errno;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (X->short_file) {
        return PyErr_Format(PyExc_OSError,
                            "the local file is shorter than its size said: it "
                            "changed while it was being sent (%llu bytes missing)",
                            X->left + (unsigned long long)(X->len - X->pos));
    }
    if (X->left > 0 || X->pos < X->len) {
        return closed_midway(self, what);
    }
    return PyLong_FromUnsignedLongLong(X->moved);
}

/* A transfer (read(), write(), send(), recv_to_fd(), send_from_fd()) as an
 * operation: one chanio job per step, progress reported and signals checked
 * between steps (GIL held), until it is done. Waited for at once, or an Op
 * (defer=True): the same steps and finish either way. Nothing in it points at
 * the method's stack: the buffers are the heap's or Python's. */
struct xfer_op {
    pyssh_chanio_job job; /* first: the step's */
    struct xfer X;
    int sides;          /* what the method claimed (SIDE_*) */
    PyObject *progress; /* or NULL */
    PyObject *out;      /* read(): the bytes being filled */
    Py_buffer view;     /* write(), send(): the data (view.obj NULL: none) */
    const char *what;
};

static int
xfer_step(ssh_session ssh, void *p)
{
    return pyssh_chanio_step(ssh, &((struct xfer_op *)p)->job);
}

static void
xfer_relocate(void *arg, pyssh_deadline *dl)
{
    struct xfer_op *x = arg;
    SessionObject *s = x->X.ch->session;
    x->job = (pyssh_chanio_job){s, &x->X.ch->io, xfer_take, xfer_round, &x->X, dl, ROUNDS_MAX};
}

/* The transfer's result, once done. */
static PyObject *
xfer_result(struct xfer_op *x)
{
    struct xfer *X = &x->X;
    switch (X->mode) {
    case X_READ:
        if (_PyBytes_Resize(&x->out, (Py_ssize_t)X->len) < 0) {
            return NULL; /* (x->out was freed and cleared) */
        }
        return Py_NewRef(x->out);
    case X_SEND:
        return PyLong_FromSize_t(X->pos);
    case X_WRITE:
        return X->pos < X->len ? closed_midway(X->ch, x->what) : Py_NewRef(Py_None);
    default:
        return fd_result(X->ch, X, x->what);
    }
}

static PyObject *
xfer_finish(SessionObject *s, void *arg, int rc)
{
    struct xfer_op *x = arg;
    struct xfer *X = &x->X;
    (void)s;
    (void)rc;
    if (pyssh_progress(x->progress, &X->next_progress, X->done, X->moved) < 0 ||
        PyErr_CheckSignals() < 0) {
        return NULL;
    }
    return X->done ? xfer_result(x) : PYSSH_OP_MORE;
}

static void
xfer_release(SessionObject *s, void *arg)
{
    struct xfer_op *x = arg;
    (void)s;
    unclaim_sides(x->X.ch, x->sides);
    if (x->view.obj != NULL) {
        PyBuffer_Release(&x->view);
    }
    if (x->X.mode == X_RECV_FD || x->X.mode == X_SEND_FD) {
        PyMem_RawFree(x->X.buf);
    }
    x->X.buf = NULL;
    Py_CLEAR(x->out);
    Py_CLEAR(x->progress);
}

/* A progress callback may hold the Op (a cycle). */
static int
xfer_traverse(void *p, visitproc visit, void *arg)
{
    struct xfer_op *x = p;
    Py_VISIT(x->progress);
    if (x->view.obj != NULL) {
        Py_VISIT(x->view.obj);
    }
    return 0;
}

static const pyssh_op_kind xfer_kind = {"moving the command's data",
                                        PYSSH_EXC_SSHError,
                                        xfer_step,
                                        sizeof(struct xfer_op),
                                        xfer_finish,
                                        NULL,
                                        xfer_release,
                                        xfer_relocate,
                                        xfer_traverse};

/* Claim, check the command was started, then run or defer the transfer `x`
 * (its channel, mode, buffers set; released here on every path). */
static PyObject *
xfer_start(struct xfer_op *x, const char *method, pyssh_deadline *dl, int defer, PyObject *args,
           PyObject *kwds)
{
    ChannelObject *self = x->X.ch;
    enum pyssh_need need =
        x->X.mode == X_SEND || x->X.mode == X_WRITE ? PYSSH_NEED_OPEN : PYSSH_NEED_CONNECTED;
    if (claim_sides(self, x->sides, method, need) < 0) {
        x->sides = 0;
        xfer_release(self->session, x);
        return NULL;
    }
    if (exec_done(self) < 0) {
        xfer_release(self->session, x);
        return NULL;
    }
    if (x->progress != NULL) {
        x->X.next_progress = pyssh_monotonic() + PYSSH_PROGRESS_EVERY;
    }
    xfer_relocate(x, dl);
    return pyssh_op_start(self->session, &xfer_kind, x, dl, x->what, defer, (PyObject *)self, args,
                          kwds);
}

PyDoc_STRVAR(chanobj_read_doc,
             "read($self, /, n=65536, timeout=None, defer=False)\n--\n\n"
             "Up to `n` bytes of the command's stdout, waiting until there is at least one;\n"
             "b'' once the command closed its output. With `defer`, returns an Op instead\n"
             "of waiting.");

static PyObject *
chanobj_read(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n", "timeout", "defer", NULL};
    Py_ssize_t n = 65536;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nO&p:read", kwlist, &n, pyssh_deadline_conv, &dl,
                                     &defer)) {
        return NULL;
    }
    struct xfer_op x = {.X = {.ch = self, .mode = X_READ}, .sides = SIDE_READ};
    x.what = "reading from the command";
    x.out = PyBytes_FromStringAndSize(NULL, n > 0 ? n : 0);
    if (x.out == NULL) {
        return NULL;
    }
    x.X.buf = PyBytes_AS_STRING(x.out);
    x.X.cap = n > 0 ? (size_t)n : 0;
    x.X.done = n <= 0; /* b'' at once */
    return xfer_start(&x, "read", &dl, defer, args, kwds);
}

PyDoc_STRVAR(chanobj_write_doc, "write($self, data, /, timeout=None, defer=False)\n--\n\n"
                                "Send all of `data` (bytes-like) to the command's stdin. With\n"
                                "`defer`, returns an Op instead of waiting.");

/* write() and send(): all of `view` sent, or up to where the command ended
 * (send(): the count; write(): an error). */
static PyObject *
send_impl(ChannelObject *self, PyObject *args, PyObject *kwds, int partial)
{
    static char *kwlist[] = {"data", "timeout", "defer", NULL};
    struct xfer_op x = {.X = {.ch = self, .mode = partial ? X_SEND : X_WRITE}, .sides = SIDE_WRITE};
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, partial ? "y*|O&p:send" : "y*|O&p:write", kwlist,
                                     &x.view, pyssh_deadline_conv, &dl, &defer)) {
        return NULL;
    }
    x.what = "writing to the command";
    x.X.buf = x.view.buf;
    x.X.len = (size_t)x.view.len;
    return xfer_start(&x, partial ? "send" : "write", &dl, defer, args, kwds);
}

static PyObject *
chanobj_write(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    return send_impl(self, args, kwds, 0);
}

PyDoc_STRVAR(chanobj_send_doc,
             "send($self, data, /, timeout=None, defer=False)\n--\n\n"
             "Send `data` (bytes-like) to the command's stdin; the count sent, short only\n"
             "when the command ended first. Another thread may read meanwhile (recv). With\n"
             "`defer`, returns an Op instead of waiting.");

static PyObject *
chanobj_send(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    return send_impl(self, args, kwds, 1);
}

static PyObject *
fd_transfer(ChannelObject *self, PyObject *args, PyObject *kwds, enum xfer_mode mode)
{
    static char *kwlist[] = {"fd", "size", "progress", "timeout", "defer", NULL};
    struct xfer_op x = {.X = {.ch = self, .mode = mode, .cap = IO_BUF}, .sides = SIDE_BOTH};
    PyObject *progress = Py_None;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    const char *fmt = mode == X_RECV_FD ? "iK|OO&p:recv_to_fd" : "iK|OO&p:send_from_fd";
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, &x.X.fd, &x.X.left, &progress,
                                     pyssh_deadline_conv, &dl, &defer)) {
        return NULL;
    }
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_SetString(PyExc_TypeError, "progress must be a callable or None");
        return NULL;
    }
    x.what = mode == X_RECV_FD ? "receiving a file" : "sending a file";
    x.progress = progress != Py_None ? Py_NewRef(progress) : NULL;
    x.X.buf = PyMem_RawMalloc(IO_BUF);
    if (x.X.buf == NULL) {
        Py_XDECREF(x.progress);
        return PyErr_NoMemory();
    }
    x.X.done = x.X.left == 0;
    return xfer_start(&x, mode == X_RECV_FD ? "recv_to_fd" : "send_from_fd", &dl, defer, args,
                      kwds);
}

/* recv_to_fd() and send_from_fd(): one implementation, two directions (as
 * session.c's AUTH_METHOD makes its methods). */
#define FD_METHOD(name, mode, doc)                                                                 \
    PyDoc_STRVAR(chanobj_##name##_doc,                                                             \
                 #name "($self, fd, size, /, progress=None, timeout=None, defer=False)\n"          \
                       "--\n\n" doc);                                                              \
    static PyObject *chanobj_##name(ChannelObject *self, PyObject *args, PyObject *kwds)           \
    {                                                                                              \
        return fd_transfer(self, args, kwds, mode);                                                \
    }

FD_METHOD(recv_to_fd, X_RECV_FD,
          "Write exactly `size` bytes of the command's stdout to file descriptor `fd`.\n"
          "`progress(bytes_so_far)` is called a few times a second and at the end. With\n"
          "`defer`, returns an Op instead of waiting.")
FD_METHOD(send_from_fd, X_SEND_FD,
          "Send exactly `size` bytes read from file descriptor `fd` to the command's stdin.\n"
          "With `defer`, returns an Op instead of waiting.")

/* send_eof() as an operation: one step, never waiting for the server. */
static int
send_eof_step(ssh_session ssh, void *p)
{
    (void)ssh;
    return pyssh_chanio_send_eof(&(*(ChannelObject **)p)->io);
}

static PyObject *
send_eof_finish(SessionObject *s, void *arg, int rc)
{
    (void)s;
    (void)arg;
    (void)rc;
    Py_RETURN_NONE;
}

static void
send_eof_release(SessionObject *s, void *arg)
{
    (void)s;
    unclaim_sides(*(ChannelObject **)arg, SIDE_WRITE);
}

static const pyssh_op_kind send_eof_kind = {"sending EOF",
                                            PYSSH_EXC_SSHError,
                                            send_eof_step,
                                            sizeof(ChannelObject *),
                                            send_eof_finish,
                                            NULL,
                                            send_eof_release,
                                            NULL,
                                            NULL};

PyDoc_STRVAR(chanobj_send_eof_doc, "send_eof($self, /, defer=False)\n--\n\n"
                                   "Tell the command that its stdin has ended. With `defer`,\n"
                                   "returns an Op instead of waiting.");

static PyObject *
chanobj_send_eof(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"defer", NULL};
    int defer = 0;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p:send_eof", kwlist, &defer)) {
        return NULL;
    }
    if (claim_sides(self, SIDE_WRITE, "send_eof", PYSSH_NEED_CONNECTED) < 0) {
        return NULL;
    }
    if (exec_done(self) < 0) {
        unclaim_sides(self, SIDE_WRITE);
        return NULL;
    }
    return pyssh_op_start(self->session, &send_eof_kind, &self, &dl, NULL, defer, (PyObject *)self,
                          args, kwds);
}

/* ---- a process: both streams, terminal size, signals, exit ------------------------ *
 *
 * recv() is a Process's one read: it takes what arrives on stdout and stderr
 * into two buffers at once, so that neither stream blocks the other by filling
 * the channel's one window, and returns as soon as there is output, the output
 * ended, or a local descriptor (a terminal) became readable. send(), on the
 * writing side, may run meanwhile in another thread. */

struct recv_arg {
    ChannelObject *ch;
    PyObject *bytes[2]; /* the results being filled */
    size_t cap[2], len[2];
    int block; /* wait for something; otherwise take what is there and return */
    int end;   /* and, at EOF, for the command's end */
    pyssh_pollset ps;
    pyssh_pollfd fds[PYSSH_POLL_RESERVED + 1]; /* + the caller's descriptor */
    int fd;
    Py_buffer in; /* stdin to send meanwhile (in.buf NULL: none) */
    size_t sent;
    int in_closed; /* the command ended before all of `in` was sent */
    int eof, ended, fd_ready;
    int rounds; /* with output in hand: a step that reaches ROUNDS_MAX would wait,
                   and an exception then (Ctrl-C) would drop what was taken */
};

/* recv()'s take, inside libssh while recv()'s step runs. */
static uint32_t
recv_take(void *state, int stream, const char *data, uint32_t len)
{
    struct recv_arg *R = state;
    size_t room = R->cap[stream] - R->len[stream];
    uint32_t n = len < room ? len : (uint32_t)room;
    memcpy(PyBytes_AS_STRING(R->bytes[stream]) + R->len[stream], data, n);
    R->len[stream] += n;
    return n;
}

/* recv()'s stdin: as much as the window takes now. */
static int
recv_send(struct recv_arg *R, ssh_session ssh)
{
    while (R->sent < (size_t)R->in.len && !R->in_closed) {
        long w = pyssh_chanio_write(&R->ch->io, ssh, (const char *)R->in.buf + R->sent,
                                    (size_t)R->in.len - R->sent);
        if (w == PYSSH_CHANIO_CLOSED) {
            R->in_closed = 1;
        }
        else if (w <= 0) {
            return w < 0 ? PYSSH_FAILED : 0;
        }
        else {
            R->sent += (size_t)w;
        }
    }
    return 0;
}

/* What recv() returns for: output (once the socket is idle, or a buffer is
 * full), the end, the descriptor, or all of stdin sent. */
static int
recv_done(struct recv_arg *R, int idle)
{
    /* something moved: return it, so that no wait follows that could end in an
     * exception (Ctrl-C, the timeout) and drop it; nor a step cut short by its
     * slice (Op.step): a cancel between steps would drop it */
    int got = R->len[0] > 0 || R->len[1] > 0 || R->sent > 0;
    int full =
        (R->cap[0] > 0 && R->len[0] == R->cap[0]) || (R->cap[1] > 0 && R->len[1] == R->cap[1]);
    int in_done = R->in.buf != NULL && (R->sent == (size_t)R->in.len || R->in_closed);
    return full || R->fd_ready || in_done || (R->eof && (!R->end || R->ended)) ||
           (idle && (got || !R->block)) || (got && ++R->rounds >= ROUNDS_MAX / 2) ||
           (got && pyssh_chanio_until > 0 && pyssh_monotonic() >= pyssh_chanio_until);
}

static int
recv_round(void *state, ssh_session ssh, int idle)
{
    struct recv_arg *R = state;
    pyssh_chanio *io = &R->ch->io;
    for (int i = 0; i < 2; i++) {
        /* what arrived in another thread's step: libssh holds it */
        int n = pyssh_chanio_read(io, i, PyBytes_AS_STRING(R->bytes[i]) + R->len[i],
                                  R->cap[i] - R->len[i]);
        if (n < 0) {
            return PYSSH_FAILED;
        }
        R->len[i] += (size_t)n;
    }
    if (!idle && recv_send(R, ssh) < 0) {
        return PYSSH_FAILED;
    }
    R->eof = io->remote_eof && io->avail[0] == 0 && io->avail[1] == 0;
    R->ended = pyssh_chanio_ended(io);
    if (R->fd >= 0 && R->fds[PYSSH_POLL_RESERVED].revents != 0) {
        R->fd_ready = 1;
    }
    return recv_done(R, idle) ? 0 : PYSSH_CHANIO_MORE;
}

static int
recv_setup(struct recv_arg *R, Py_ssize_t n, Py_ssize_t err_n)
{
    R->cap[0] = n > 0 ? (size_t)n : 0;
    R->cap[1] = err_n > 0 ? (size_t)err_n : 0;
    for (int i = 0; i < 2; i++) {
        R->bytes[i] = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)R->cap[i]);
        if (R->bytes[i] == NULL) {
            return -1;
        }
    }
    R->ps.fds = R->fds;
    R->ps.n = PYSSH_POLL_RESERVED;
    R->ps.wait_ms = -1;
    if (R->fd >= 0) {
        R->fds[PYSSH_POLL_RESERVED].fd = (pyssh_socket_t)R->fd;
        R->fds[PYSSH_POLL_RESERVED].events = POLLIN;
        R->fds[PYSSH_POLL_RESERVED].revents = 0;
        R->ps.n++;
    }
    return 0;
}

static PyObject *
recv_result(pyssh_state *st, struct recv_arg *R)
{
    PyObject *v[6] = {NULL};
    for (int i = 0; i < 2; i++) {
        if (_PyBytes_Resize(&R->bytes[i], (Py_ssize_t)R->len[i]) == 0) {
            v[i] = R->bytes[i];
        }
        R->bytes[i] = NULL;
    }
    v[2] = PyBool_FromLong(R->eof);
    v[3] = PyBool_FromLong(R->ended);
    v[4] = PyBool_FromLong(R->fd_ready);
    v[5] = PyLong_FromSize_t(R->sent);
    return pyssh_named_result(st->ChannelRecvType, v, 6);
}

/* recv() as an operation: the chanio job and the read. With `fd` it is waited
 * for here only (pyssh_wait_ex polls the descriptor too); otherwise waited for
 * or deferred through pyssh_op_start. The same steps and finish either way. */
struct recv_op {
    pyssh_chanio_job job; /* first: the step's */
    struct recv_arg R;
    int sides;
};

static int
recv_step(ssh_session ssh, void *p)
{
    return pyssh_chanio_step(ssh, &((struct recv_op *)p)->job);
}

static void
recv_relocate(void *arg, pyssh_deadline *dl)
{
    struct recv_op *r = arg;
    SessionObject *s = r->R.ch->session;
    r->R.ps.fds = r->R.fds;
    r->job = (pyssh_chanio_job){s, &r->R.ch->io, recv_take, recv_round, &r->R, dl, ROUNDS_MAX};
}

static PyObject *
recv_finish(SessionObject *s, void *arg, int rc)
{
    (void)rc;
    return recv_result(s->state, &((struct recv_op *)arg)->R);
}

static void
recv_release(SessionObject *s, void *arg)
{
    struct recv_op *r = arg;
    (void)s;
    unclaim_sides(r->R.ch, r->sides);
    if (r->R.in.obj != NULL) {
        PyBuffer_Release(&r->R.in);
    }
    Py_CLEAR(r->R.bytes[0]);
    Py_CLEAR(r->R.bytes[1]);
}

static int
recv_traverse(void *p, visitproc visit, void *arg)
{
    struct recv_op *r = p;
    if (r->R.in.obj != NULL) {
        Py_VISIT(r->R.in.obj);
    }
    return 0;
}

static const pyssh_op_kind recv_kind = {"reading from the command",
                                        PYSSH_EXC_SSHError,
                                        recv_step,
                                        sizeof(struct recv_op),
                                        recv_finish,
                                        NULL,
                                        recv_release,
                                        recv_relocate,
                                        recv_traverse};

/* recv() with a local descriptor to watch: waited for here, as pyssh_op_start
 * would, with the descriptor among what is polled. */
static PyObject *
recv_with_fd(struct recv_op *r, pyssh_deadline *dl)
{
    SessionObject *s = r->R.ch->session;
    PyObject *result = NULL;
    if (pyssh_wait_ex(s, recv_step, r, dl, recv_kind.exc, recv_kind.what, &r->R.ps, NULL) >= 0) {
        result = recv_finish(s, r, 0);
    }
    recv_release(s, r);
    return result;
}

PyDoc_STRVAR(chanobj_recv_doc,
             "recv($self, /, n=65536, err_n=65536, timeout=None, fd=-1, block=True, end=False,\n"
             "     data=None, defer=False)\n--\n\n"
             "Up to `n` bytes of stdout and `err_n` of stderr, as a ChannelRecv, sending\n"
             "`data` (bytes-like) to stdin meanwhile as the window allows. Waits until there\n"
             "is output, the output ended (`end`: and the command too), `fd` is readable, or\n"
             "all of `data` is sent; `block=False` returns at once with what is there. With\n"
             "`defer` (not with `fd`), returns an Op instead of waiting; an Op cancelled\n"
             "between its steps has taken nothing.");

static PyObject *
chanobj_recv(ChannelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n", "err_n", "timeout", "fd", "block", "end", "data", "defer", NULL};
    Py_ssize_t n = 65536, err_n = 65536;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    struct recv_op r = {.R = {.ch = self, .fd = -1, .block = 1}};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nnO&ippz*p:recv", kwlist, &n, &err_n,
                                     pyssh_deadline_conv, &dl, &r.R.fd, &r.R.block, &r.R.end,
                                     &r.R.in, &defer)) {
        return NULL;
    }
    if (defer && r.R.fd >= 0) {
        PyErr_SetString(PyExc_ValueError, "recv(): defer=True cannot watch a descriptor (fd)");
        recv_release(self->session, &r);
        return NULL;
    }
    int sides = r.R.in.buf != NULL ? SIDE_BOTH : SIDE_READ;
    if (claim_sides(self, sides, "recv", PYSSH_NEED_CONNECTED) < 0) {
        recv_release(self->session, &r);
        return NULL;
    }
    r.sides = sides;
    if (exec_done(self) < 0 || recv_setup(&r.R, n, err_n) < 0) {
        recv_release(self->session, &r);
        return NULL;
    }
    recv_relocate(&r, &dl);
    if (r.R.fd >= 0) {
        return recv_with_fd(&r, &dl);
    }
    return pyssh_op_start(self->session, &recv_kind, &r, &dl, NULL, defer, (PyObject *)self, args,
                          kwds);
}

/* ---- quick requests, from any thread: they need the lock only ---------------------- */

struct request_arg {
    ChannelObject *ch;
    int cols, rows;
    const char *signal;
    pyssh_chanio snap; /* status(): the exit fields, copied under the lock */
};

static int
resize_step(ssh_session Py_UNUSED(ssh), void *p)
{
    struct request_arg *a = p;
    /* window-change wants no reply: queued and sent at once */
    return a->ch->io.chan == NULL
               ? 0
               : map_rc(ssh_channel_change_pty_size(a->ch->io.chan, a->cols, a->rows));
}

static int
signal_step(ssh_session Py_UNUSED(ssh), void *p)
{
    struct request_arg *a = p;
    pyssh_chanio *io = &a->ch->io;
    if (io->chan == NULL || pyssh_chanio_ended(io)) {
        return 1; /* nothing to signal any more */
    }
    /* libssh asks for no reply (RFC 4254 6.9 allows none): sshd that refuses a
     * signal (a root session, a subsystem) says nothing, which is why a Process
     * looks for the end instead of trusting the request */
    return map_rc(ssh_channel_request_send_signal(io->chan, a->signal));
}

static int
status_step(ssh_session Py_UNUSED(ssh), void *p)
{
    struct request_arg *a = p;
    a->snap = a->ch->io;
    return 0;
}

/* The request's common part: the channel was started, the session open. */
static int
request(ChannelObject *self, pyssh_step_fn step, struct request_arg *a, const char *what)
{
    if (pyssh_session_check(self->session, PYSSH_NEED_CONNECTED) < 0 || exec_done(self) < 0) {
        return -1;
    }
    return pyssh_call(self->session, step, a, PYSSH_EXC_SSHError, what);
}

PyDoc_STRVAR(chanobj_resize_doc, "resize($self, cols, rows, /)\n--\n\n"
                                 "Tell the server the terminal's new size.");

static PyObject *
chanobj_resize(ChannelObject *self, PyObject *args)
{
    struct request_arg a = {.ch = self};
    if (!PyArg_ParseTuple(args, "ii:resize", &a.cols, &a.rows)) {
        return NULL;
    }
    if (a.cols < 1 || a.rows < 1 || a.cols > SIZE_MAX_CELLS || a.rows > SIZE_MAX_CELLS) {
        PyErr_SetString(PyExc_ValueError, "cols and rows must be positive");
        return NULL;
    }
    if (request(self, resize_step, &a, "resizing the terminal") < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(chanobj_signal_doc,
             "signal($self, name, /)\n--\n\n"
             "Ask the server to send signal `name` (\"TERM\", no SIG prefix) to the command.\n"
             "False when the command had ended already. The server does not say whether\n"
             "it delivered it.");

static PyObject *
chanobj_signal(ChannelObject *self, PyObject *args)
{
    struct request_arg a = {.ch = self};
    if (!PyArg_ParseTuple(args, "s:signal", &a.signal)) {
        return NULL;
    }
    size_t len = strlen(a.signal);
    for (size_t i = 0; i < len; i++) {
        if (!((a.signal[i] >= 'A' && a.signal[i] <= 'Z') ||
              (a.signal[i] >= '0' && a.signal[i] <= '9'))) {
            len = 0;
        }
    }
    if (len == 0 || len > 16) {
        return PyErr_Format(PyExc_ValueError, "not a signal name: %R (say \"TERM\", \"KILL\")",
                            PyTuple_GET_ITEM(args, 0));
    }
    int rc = request(self, signal_step, &a, "sending a signal");
    return rc < 0 ? NULL : PyBool_FromLong(rc == 0);
}

PyDoc_STRVAR(chanobj_status_doc, "status($self, /)\n--\n\n"
                                 "How the command ended so far, as an ExitInfo.");

static PyObject *
chanobj_status(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    struct request_arg a = {.ch = self};
    /* no claim: a close() of another thread clears io.chan (under the lock), so
     * it is looked at under the lock, and a closed channel's fields copied there */
    pyssh_lock(self->session);
    int open = self->io.chan != NULL;
    if (!open) {
        a.snap = self->io; /* closed: nothing writes it any more */
    }
    pyssh_unlock(self->session);
    if (open &&
        pyssh_call(self->session, status_step, &a, PYSSH_EXC_SSHError, "reading the status") < 0) {
        return NULL;
    }
    const pyssh_chanio *io = &a.snap;
    PyObject *v[5];
    v[0] = PyBool_FromLong(pyssh_chanio_ended(io));
    v[1] = io->has_status ? PyLong_FromLong(io->exit_status) : Py_NewRef(Py_None);
    v[2] = io->has_signal
               ? PyUnicode_DecodeUTF8(io->exit_signal, strlen(io->exit_signal), "replace")
               : Py_NewRef(Py_None);
    v[3] = PyBool_FromLong(io->core_dumped);
    v[4] = PyUnicode_DecodeUTF8(io->exit_errmsg, strlen(io->exit_errmsg), "replace");
    return pyssh_named_result(self->session->state->ExitInfoType, v, 5);
}

static PyObject *
chanobj_get_stderr_tail(ChannelObject *self, void *Py_UNUSED(closure))
{
    /* a copy made under the lock is one that no step is halfway through */
    char tail[sizeof(self->errtail)];
    size_t n = errtail_copy(self, tail);
    return PyBytes_FromStringAndSize(tail, (Py_ssize_t)n);
}

PyDoc_STRVAR(chanobj_close_doc,
             "close($self, /)\n--\n\n"
             "Close the channel (a command still running is sent SIGHUP first, where the\n"
             "server supports signals; one started less than 0.1 s earlier is given until\n"
             "then to end, as sshd may drop a signal that comes sooner). Safe to call more\n"
             "than once.");

static PyObject *
chanobj_close(ChannelObject *self, PyObject *Py_UNUSED(ignored))
{
    /* claimed too: the close waits for the session lock with the GIL released */
    if (claim(self, "close", PYSSH_NEED_NOTHING) < 0) {
        return NULL;
    }
    int rc = chanobj_close_impl(self, 1, 1, 1);
    unclaim(self);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
chanobj_get_closed(ChannelObject *self, void *Py_UNUSED(closure))
{
    /* io.chan is cleared under the lock, by another thread's call too */
    pyssh_lock(self->session);
    int closed = self->io.chan == NULL;
    pyssh_unlock(self->session);
    return PyBool_FromLong(closed);
}

static PyObject *
chanobj_get_session(ChannelObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef((PyObject *)self->session);
}

static PyMethodDef chanobj_methods[] = {
    {"exec", (PyCFunction)(void (*)(void))chanobj_exec, METH_VARARGS | METH_KEYWORDS,
     chanobj_exec_doc},
    {"run", (PyCFunction)(void (*)(void))chanobj_run, METH_VARARGS | METH_KEYWORDS,
     chanobj_run_doc},
    {"read", (PyCFunction)(void (*)(void))chanobj_read, METH_VARARGS | METH_KEYWORDS,
     chanobj_read_doc},
    {"write", (PyCFunction)(void (*)(void))chanobj_write, METH_VARARGS | METH_KEYWORDS,
     chanobj_write_doc},
    {"recv_to_fd", (PyCFunction)(void (*)(void))chanobj_recv_to_fd, METH_VARARGS | METH_KEYWORDS,
     chanobj_recv_to_fd_doc},
    {"send_from_fd", (PyCFunction)(void (*)(void))chanobj_send_from_fd,
     METH_VARARGS | METH_KEYWORDS, chanobj_send_from_fd_doc},
    {"send", (PyCFunction)(void (*)(void))chanobj_send, METH_VARARGS | METH_KEYWORDS,
     chanobj_send_doc},
    {"recv", (PyCFunction)(void (*)(void))chanobj_recv, METH_VARARGS | METH_KEYWORDS,
     chanobj_recv_doc},
    {"resize", (PyCFunction)chanobj_resize, METH_VARARGS, chanobj_resize_doc},
    {"signal", (PyCFunction)chanobj_signal, METH_VARARGS, chanobj_signal_doc},
    {"status", (PyCFunction)chanobj_status, METH_NOARGS, chanobj_status_doc},
    {"send_eof", (PyCFunction)(void (*)(void))chanobj_send_eof, METH_VARARGS | METH_KEYWORDS,
     chanobj_send_eof_doc},
    {"close", (PyCFunction)chanobj_close, METH_NOARGS, chanobj_close_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef chanobj_getset[] = {
    {"closed", (getter)chanobj_get_closed, NULL, "True unless a channel is open.", NULL},
    {"session", (getter)chanobj_get_session, NULL, "The session the channel belongs to.", NULL},
    {"stderr_tail", (getter)chanobj_get_stderr_tail, NULL,
     "The last 4 KiB of stderr seen by read(), write(), recv_to_fd(), send_from_fd().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot chanobj_slots[] = {
    {Py_tp_new, chanobj_new},
    {Py_tp_dealloc, chanobj_dealloc},
    {Py_tp_methods, chanobj_methods},
    {Py_tp_getset, chanobj_getset},
    {Py_tp_doc, "Channel(session)\n--\n\nA session channel that runs one remote command."},
    {0, NULL},
};

PyType_Spec pyssh_channel_spec = {
    .name = "pyssh._ssh.Channel",
    .basicsize = sizeof(ChannelObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = chanobj_slots,
};
