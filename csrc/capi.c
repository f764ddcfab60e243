/* pyssh's C API for other extensions: the table behind the capsule
 * pyssh._ssh._C_API, declared in pyssh/include/pyssh_capi.h (which documents
 * each function for its users).
 *
 * Everything but Session_Check and raise_error runs WITHOUT the GIL: the steps
 * are the same kind as everywhere else in pyssh (non-blocking libssh calls
 * under the session lock), waited for by pyssh_wait_nogil_ex (wait.c), which polls
 * the session's socket without the lock and reports instead of raising. No
 * Python object is touched: the caller keeps the session alive, and every step
 * checks under the lock that the session is still open (a closed session's
 * libssh handle, and with it every channel, is gone).
 *
 * The API's channels go through the channel-I/O core (chanio.c) like every
 * other: its callbacks take nothing, so libssh keeps their data in its channel
 * buffers and reopens the window as it is read, and a reader that stops slows
 * the command down instead of growing memory. */
#include "chanio.h"
#include "../pyssh/include/pyssh_capi.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#ifndef PYSSH_VERSION
#define PYSSH_VERSION "unknown"
#endif

#define CHANNEL_GONE (-10) /* a step's result: the server closed the channel */
#define ROUNDS_MAX   64    /* socket reads per step, so that a step ends */
#define SCP_LINE_MAX 8192

struct pyssh_capi_channel {
    SessionObject *session;
    pyssh_chanio io; /* io.chan: NULL once the session closed under it */
    long pid;        /* the opener's: a forked child must not use the parent's connection */
};

static void
set_err(pyssh_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    err->code = code;
    err->os_errno = 0;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
}

/* A failed step, classified as errors.c does for Python (by state and code). */
static void
failed(const pyssh_failure *f, const char *what, pyssh_error *err)
{
    enum pyssh_exc exc =
        pyssh_failure_describe(f, PYSSH_EXC_SSHError, what, err->message, sizeof(err->message));
    err->code = exc == PYSSH_EXC_ConnectError ? PYSSH_E_LOST : PYSSH_E_SSH;
    err->os_errno = 0;
}

/* What a wait's result means for the caller: 0 (>= 0 results), or -1 with err. */
static int
wait_result(int rc, const char *what, const pyssh_failure *f, int os_err, double timeout,
            pyssh_error *err)
{
    switch (rc) {
    case PYSSH_CLOSED:
        set_err(err, PYSSH_E_CLOSED, "%s: the session is closed", what);
        return -1;
    case PYSSH_TIMEDOUT:
        set_err(err, PYSSH_E_TIMEOUT, "%s: timed out after %g seconds", what, timeout);
        return -1;
    case PYSSH_OSERROR:
        set_err(err, PYSSH_E_OS, "%s: waiting on the socket failed (error %d)", what, os_err);
        err->os_errno = os_err;
        return -1;
    case PYSSH_FAILED:
        failed(f, what, err);
        return -1;
    default:
        return 0;
    }
}

static int
wait_for(SessionObject *s, pyssh_step_fn step, void *arg, double timeout, const char *what,
         pyssh_error *err)
{
    pyssh_failure fail;
    int os_err = 0;
    int rc = pyssh_wait_nogil_ex(s, step, arg, timeout, &fail, &os_err);
    if (wait_result(rc, what, &fail, os_err, timeout, err) < 0) {
        return -1;
    }
    return rc;
}

/* Wait for `round` on the channel's rounds (chanio's step). The wait helper
 * finds a closed session before any round runs. */
static int
wait_rounds(pyssh_channel *ch, pyssh_round_fn round, void *state, double timeout, const char *what,
            pyssh_error *err)
{
    pyssh_chanio_job job = {ch->session, &ch->io, NULL, round, state, NULL, ROUNDS_MAX};
    return wait_for(ch->session, pyssh_chanio_step, &job, timeout, what, err);
}

/* ---- sessions ------------------------------------------------------------------ */

static int
capi_session_check(PyObject *obj)
{
    return obj != NULL && pyssh_is_session(obj);
}

static int
capi_session_is_open(PyObject *session)
{
    SessionObject *s = (SessionObject *)session;
    PyThread_acquire_lock(s->lock, WAIT_LOCK);
    ssh_session ssh = pyssh_session_ssh(s);
    int open = ssh != NULL && s->connected && ssh_is_connected(ssh);
    PyThread_release_lock(s->lock);
    return open;
}

static int
capi_session_lock(PyObject *session, pyssh_error *err)
{
    SessionObject *s = (SessionObject *)session;
    PyThread_acquire_lock(s->lock, WAIT_LOCK);
    if (pyssh_session_ssh(s) == NULL) {
        PyThread_release_lock(s->lock);
        set_err(err, PYSSH_E_CLOSED, "session_lock: the session is closed");
        return -1;
    }
    return 0;
}

static void *
capi_session_ssh(PyObject *session)
{
    return ((SessionObject *)session)->ssh;
}

static void
capi_session_unlock(PyObject *session)
{
    PyThread_release_lock(((SessionObject *)session)->lock);
}

/* The libssh functions raw users may call: those that inspect a session or a
 * channel, or work on a channel of their own. */
#define F(name)                                                                                    \
    {                                                                                              \
#name, (void *)name                                                                        \
    }
static const struct {
    const char *name;
    void *fn;
} libssh_functions[] = {
    F(ssh_is_connected),
    F(ssh_get_serverbanner),
    F(ssh_get_clientbanner),
    F(ssh_get_issue_banner),
    F(ssh_get_openssh_version),
    F(ssh_get_version),
    F(ssh_get_fd),
    F(ssh_get_status),
    F(ssh_get_error),
    F(ssh_get_error_code),
    F(ssh_get_cipher_in),
    F(ssh_get_cipher_out),
    F(ssh_get_hmac_in),
    F(ssh_get_hmac_out),
    F(ssh_get_kex_algo),
    F(ssh_get_poll_flags),
    F(ssh_options_get),
    F(ssh_options_get_port),
    F(ssh_string_free_char),
    F(ssh_channel_new),
    F(ssh_channel_free),
    F(ssh_channel_open_session),
    F(ssh_channel_open_forward),
    F(ssh_channel_request_exec),
    F(ssh_channel_request_subsystem),
    F(ssh_channel_request_env),
    F(ssh_channel_read_nonblocking),
    F(ssh_channel_poll),
    F(ssh_channel_write),
    F(ssh_channel_write_stderr),
    F(ssh_channel_window_size),
    F(ssh_channel_send_eof),
    F(ssh_channel_close),
    F(ssh_channel_is_eof),
    F(ssh_channel_is_open),
    F(ssh_channel_is_closed),
    F(ssh_channel_get_exit_state),
    F(ssh_channel_request_send_signal),
    F(ssh_channel_get_session),
};
#undef F

static void *
capi_libssh_symbol(const char *name)
{
    if (name == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof(libssh_functions) / sizeof(libssh_functions[0]); i++) {
        if (strcmp(libssh_functions[i].name, name) == 0) {
            return libssh_functions[i].fn;
        }
    }
    return NULL;
}

static void capi_channel_close(pyssh_channel *ch);

/* ---- opening a channel ---------------------------------------------------------- */

struct open_op {
    pyssh_channel *ch;
    int stage;
    const char *command; /* exec, or NULL for direct-tcpip */
    const char *host;
    int port;
};

static int
open_step(ssh_session ssh, void *arg)
{
    struct open_op *op = arg;
    pyssh_chanio *io = &op->ch->io;
    int rc;
    if (io->chan == NULL && pyssh_chanio_new(io, ssh) < 0) {
        return PYSSH_FAILED;
    }
    if (op->stage == 0) {
        rc = op->command != NULL
                 ? pyssh_chanio_open_session(io)
                 : pyssh_chanio_open_forward(io, op->host, op->port, "127.0.0.1", 0);
        if (rc != 0 || op->command == NULL) {
            return rc;
        }
        op->stage = 1;
    }
    rc = ssh_channel_request_exec(io->chan, op->command);
    if (rc == SSH_AGAIN) {
        return PYSSH_AGAIN;
    }
    return rc == SSH_OK ? 0 : PYSSH_FAILED;
}

static pyssh_channel *
open_channel(PyObject *session, struct open_op *op, double timeout, const char *what,
             pyssh_error *err)
{
    SessionObject *s = (SessionObject *)session;
    pyssh_channel *ch = calloc(1, sizeof(*ch));
    if (ch == NULL) {
        set_err(err, PYSSH_E_NOMEM, "%s: out of memory", what);
        return NULL;
    }
    ch->session = s;
    ch->pid = pyssh_getpid();
    pyssh_chanio_init(&ch->io, s, NULL, ch);
    op->ch = ch;
    if (wait_for(s, open_step, op, timeout, what, err) < 0) {
        capi_channel_close(ch);
        return NULL;
    }
    return ch;
}

static pyssh_channel *
capi_exec_open(PyObject *session, const char *command, double timeout, pyssh_error *err)
{
    if (session == NULL || command == NULL) {
        set_err(err, PYSSH_E_ARGUMENT, "exec_open: the session and the command must not be NULL");
        return NULL;
    }
    struct open_op op = {0};
    op.command = command;
    return open_channel(session, &op, timeout, "exec_open", err);
}

static pyssh_channel *
capi_direct_tcpip_open(PyObject *session, const char *host, int port, double timeout,
                       pyssh_error *err)
{
    if (session == NULL || host == NULL || port < 1 || port > 65535) {
        set_err(err, PYSSH_E_ARGUMENT,
                "direct_tcpip_open: needs a session, a host and a port "
                "from 1 to 65535 (got %d)",
                port);
        return NULL;
    }
    struct open_op op = {0};
    op.host = host;
    op.port = port;
    char what[300];
    snprintf(what, sizeof(what), "direct_tcpip_open to %.255s:%d", host, port);
    return open_channel(session, &op, timeout, what, err);
}

/* ---- using it -------------------------------------------------------------------- */

static int
usable(pyssh_channel *ch, const char *what, pyssh_error *err)
{
    if (ch == NULL) {
        set_err(err, PYSSH_E_ARGUMENT, "%s: the channel is NULL", what);
        return -1;
    }
    if (ch->pid != pyssh_getpid()) {
        pyssh_chanio_forget(&ch->io); /* the parent's: never touched here */
    }
    if (ch->io.chan == NULL) {
        set_err(err, PYSSH_E_CLOSED, "%s: the session is closed (or it is another process's)",
                what);
        return -1;
    }
    return 0;
}

/* Lock held: the session closed since the channel was opened? (its libssh
 * channel went with it) */
static int
gone(pyssh_channel *ch)
{
    if (pyssh_session_ssh(ch->session) == NULL) {
        pyssh_chanio_forget(&ch->io);
        return 1;
    }
    return 0;
}

struct write_op {
    pyssh_channel *ch;
    const char *buf;
    size_t len;
};

static int
write_round(void *state, ssh_session ssh, int Py_UNUSED(idle))
{
    struct write_op *op = state;
    long w = pyssh_chanio_write(&op->ch->io, ssh, op->buf, op->len);
    if (w == PYSSH_CHANIO_CLOSED) {
        return CHANNEL_GONE;
    }
    if (w == 0) {
        return PYSSH_CHANIO_MORE; /* take in what arrives (window adjusts), then wait */
    }
    return w < 0 ? PYSSH_FAILED : (int)w;
}

static ptrdiff_t
capi_channel_write(pyssh_channel *ch, const void *buf, size_t len, double timeout, pyssh_error *err)
{
    if (usable(ch, "channel_write", err) < 0) {
        return -1;
    }
    if (buf == NULL && len > 0) {
        set_err(err, PYSSH_E_ARGUMENT, "channel_write: the buffer is NULL");
        return -1;
    }
    if (ch->io.eof_sent) {
        set_err(err, PYSSH_E_ARGUMENT, "channel_write: EOF was already sent on this channel");
        return -1;
    }
    if (len == 0) {
        return 0;
    }
    struct write_op op = {ch, buf, len};
    int rc = wait_rounds(ch, write_round, &op, timeout, "channel_write", err);
    if (rc == CHANNEL_GONE) {
        set_err(err, PYSSH_E_SSH,
                "channel_write: the server closed the channel (the command "
                "ended or the connection was refused)");
        return -1;
    }
    return rc < 0 ? -1 : (ptrdiff_t)rc;
}

static int
eof_round(void *state, ssh_session ssh, int Py_UNUSED(idle))
{
    pyssh_channel *ch = state;
    if (ch->io.remote_closed) {
        return 0; /* nobody to tell */
    }
    if (ssh_get_poll_flags(ssh) & SSH_WRITE_PENDING) {
        return PYSSH_CHANIO_MORE; /* the EOF would wait in libssh's buffer: flush first */
    }
    return pyssh_chanio_send_eof(&ch->io);
}

static int
capi_channel_send_eof(pyssh_channel *ch, double timeout, pyssh_error *err)
{
    if (usable(ch, "channel_send_eof", err) < 0) {
        return -1;
    }
    if (ch->io.eof_sent) {
        return 0;
    }
    return wait_rounds(ch, eof_round, ch, timeout, "channel_send_eof", err) < 0 ? -1 : 0;
}

struct read_op {
    pyssh_channel *ch;
    char *buf;
    uint32_t len;
    int stream;
};

#define READ_EOF 0

/* stdout first, then stderr: what libssh holds, or the end once both are
 * drained after the server's EOF or close. */
static int
read_round(void *state, ssh_session Py_UNUSED(ssh), int Py_UNUSED(idle))
{
    struct read_op *op = state;
    pyssh_chanio *io = &op->ch->io;
    for (int stream = 0; stream <= 1; stream++) {
        int n = pyssh_chanio_read(io, stream, op->buf, op->len);
        if (n != 0) {
            op->stream = stream ? PYSSH_STDERR : PYSSH_STDOUT;
            return n < 0 ? PYSSH_FAILED : n;
        }
    }
    if (io->remote_eof) {
        return READ_EOF;
    }
    return PYSSH_CHANIO_MORE;
}

static ptrdiff_t
capi_channel_read(pyssh_channel *ch, void *buf, size_t len, int *stream, double timeout,
                  pyssh_error *err)
{
    if (usable(ch, "channel_read", err) < 0) {
        return -1;
    }
    if (buf == NULL || len == 0 || stream == NULL) {
        set_err(err, PYSSH_E_ARGUMENT,
                "channel_read: needs a buffer, a length > 0 and a stream pointer");
        return -1;
    }
    struct read_op op = {ch, buf, len > 0x7fffffff ? 0x7fffffff : (uint32_t)len, 0};
    int rc = wait_rounds(ch, read_round, &op, timeout, "channel_read", err);
    if (rc < 0) {
        return -1;
    }
    *stream = op.stream;
    return rc;
}

struct exit_op {
    pyssh_channel *ch;
    int status;
};

static int
signal_number(const char *name)
{
    static const struct {
        const char *name;
        int num;
    } sigs[] = {{"HUP", 1},   {"INT", 2},   {"QUIT", 3},  {"ILL", 4},   {"TRAP", 5},
                {"ABRT", 6},  {"BUS", 7},   {"FPE", 8},   {"KILL", 9},  {"USR1", 10},
                {"SEGV", 11}, {"USR2", 12}, {"PIPE", 13}, {"ALRM", 14}, {"TERM", 15}};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        if (strcmp(sigs[i].name, name) == 0) {
            return sigs[i].num;
        }
    }
    return 0;
}

/* The command's end as chanio recorded it: its status, minus a signal's
 * number, or -1 (closed without either). */
static int
exit_round(void *state, ssh_session Py_UNUSED(ssh), int Py_UNUSED(idle))
{
    struct exit_op *op = state;
    const pyssh_chanio *io = &op->ch->io;
    if (io->has_signal) {
        int n = signal_number(io->exit_signal);
        op->status = n > 0 ? -n : -1;
    }
    else if (io->has_status) {
        op->status = io->exit_status;
    }
    else if (io->remote_closed) {
        op->status = -1;
    }
    else {
        return PYSSH_CHANIO_MORE;
    }
    return 0;
}

static int
capi_channel_exit_status(pyssh_channel *ch, int *status, double timeout, pyssh_error *err)
{
    if (usable(ch, "channel_exit_status", err) < 0) {
        return -1;
    }
    if (status == NULL) {
        set_err(err, PYSSH_E_ARGUMENT, "channel_exit_status: status is NULL");
        return -1;
    }
    struct exit_op op = {ch, -1};
    if (wait_rounds(ch, exit_round, &op, timeout, "channel_exit_status", err) < 0) {
        return -1;
    }
    *status = op.status;
    return 0;
}

static void
capi_channel_close(pyssh_channel *ch)
{
    if (ch == NULL) {
        return;
    }
    SessionObject *s = ch->session;
    if (ch->io.chan != NULL && ch->pid == pyssh_getpid()) {
        PyThread_acquire_lock(s->lock, WAIT_LOCK);
        if (!gone(ch)) {
            pyssh_chanio_release(&ch->io);
        }
        PyThread_release_lock(s->lock);
    }
    free(ch);
}

/* ---- SCP: one remote file, streamed to a sink ------------------------------------------ */

typedef struct {
    pyssh_channel *ch;
    double timeout;
    char buf[65536];
    size_t pos, end;   /* unread stdout in buf[pos:end] */
    char errtext[512]; /* the start of the server's stderr */
    size_t errlen;
    int eof;
} scp_reader;

/* More stdout into the reader (stderr is kept aside): 0, 1 at EOF, -1. */
static int
scp_fill(scp_reader *r, pyssh_error *err)
{
    for (;;) {
        int stream;
        ptrdiff_t n = capi_channel_read(r->ch, r->buf, sizeof(r->buf), &stream, r->timeout, err);
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            r->eof = 1;
            return 1;
        }
        if (stream == PYSSH_STDOUT) {
            r->pos = 0;
            r->end = (size_t)n;
            return 0;
        }
        size_t take = sizeof(r->errtext) - 1 - r->errlen;
        if ((size_t)n < take) {
            take = (size_t)n;
        }
        memcpy(r->errtext + r->errlen, r->buf, take);
        r->errlen += take;
        r->errtext[r->errlen] = '\0';
    }
}

/* The server's error text for a message: its stderr when it wrote one. */
static const char *
server_said(scp_reader *r)
{
    while (r->errlen > 0 &&
           (r->errtext[r->errlen - 1] == '\n' || r->errtext[r->errlen - 1] == '\r')) {
        r->errtext[--r->errlen] = '\0';
    }
    return r->errlen > 0 ? r->errtext : "no message";
}

/* The server's scp line, classified by the one SCP classifier (scp.c). */
static int
scp_error_code(const char *text, size_t n)
{
    switch (pyssh_scp_error_kind(text, n)) {
    case PYSSH_SCP_NOT_FOUND:
        return PYSSH_E_SCP_NOT_FOUND;
    case PYSSH_SCP_PERMISSION:
        return PYSSH_E_SCP_PERMISSION;
    default:
        return PYSSH_E_SCP;
    }
}

/* One message line (without its newline) into `line`: 0, or -1. */
static int
scp_line(scp_reader *r, const char *path, char *line, size_t *len, pyssh_error *err)
{
    *len = 0;
    for (;;) {
        if (r->pos == r->end) {
            int rc = scp_fill(r, err);
            if (rc < 0) {
                return -1;
            }
            if (rc > 0) {
                set_err(err, *len == 0 ? PYSSH_E_SCP : PYSSH_E_SCP_PROTOCOL,
                        "scp of %.200s: the server ended %s (%s)", path,
                        *len == 0 ? "without sending the file" : "in the middle of a message",
                        server_said(r));
                return -1;
            }
        }
        char c = r->buf[r->pos++];
        if (c == '\n') {
            line[*len] = '\0';
            return 0;
        }
        if (*len + 1 >= SCP_LINE_MAX) {
            set_err(err, PYSSH_E_SCP_PROTOCOL,
                    "scp of %.200s: the server sent a message longer "
                    "than %d bytes",
                    path, SCP_LINE_MAX);
            return -1;
        }
        line[(*len)++] = c;
    }
}

/* The remote path quoted for the shell: '...' with ' as '\'' ; a leading ~/ stays. */
static char *
shell_quote(const char *path)
{
    size_t n = strlen(path);
    char *q = malloc(4 * n + 8);
    if (q == NULL) {
        return NULL;
    }
    char *o = q;
    const char *p = path;
    if (strncmp(p, "~/", 2) == 0) {
        *o++ = '~';
        *o++ = '/';
        p += 2;
    }
    *o++ = '\'';
    for (; *p; p++) {
        if (*p == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        }
        else {
            *o++ = *p;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return q;
}

static int
scp_send_byte(scp_reader *r, char b, pyssh_error *err)
{
    return capi_channel_write(r->ch, &b, 1, r->timeout, err) == 1 ? 0 : -1;
}

/* The messages before the file (T times, warnings, errors), answered, up to
 * its C line: 0 with *size set, or -1. */
static int
scp_header(scp_reader *r, const char *path, char *line, unsigned long long *size, pyssh_error *err)
{
    for (;;) {
        size_t len, text_len;
        int kind;
        const char *text, *why = NULL;
        if (scp_line(r, path, line, &len, err) < 0) {
            return -1;
        }
        if (pyssh_scp_parse(line, len, &kind, size, &text, &text_len, &why) < 0) {
            set_err(err, PYSSH_E_SCP_PROTOCOL, "scp of %.200s: the server sent %s", path, why);
            return -1;
        }
        if (kind == 1 || kind == 2) {
            int t = (int)(text_len < 400 ? text_len : 400);
            set_err(err, scp_error_code(text, text_len), "scp of %.200s: %.*s", path, t, text);
            return -1;
        }
        if (kind == 'C') {
            return scp_send_byte(r, '\0', err);
        }
        if (kind != 'T') {
            set_err(err, kind == 'D' ? PYSSH_E_SCP : PYSSH_E_SCP_PROTOCOL,
                    kind == 'D' ? "scp of %.200s: it is a directory; scp_read reads one file"
                                : "scp of %.200s: the server sent an unexpected message",
                    path);
            return -1;
        }
        if (scp_send_byte(r, '\0', err) < 0) {
            return -1;
        }
    }
}

/* The file's `size` bytes to the sink: 0, or -1. */
static int
scp_body(scp_reader *r, const char *path, unsigned long long size, pyssh_sink_fn sink, void *ctx,
         pyssh_error *err)
{
    unsigned long long left = size;
    while (left > 0) {
        if (r->pos == r->end) {
            int rc = scp_fill(r, err);
            if (rc != 0) {
                if (rc > 0) {
                    set_err(err, PYSSH_E_SCP_PROTOCOL,
                            "scp of %.200s: the server ended after "
                            "%llu of %llu bytes (%s)",
                            path, size - left, size, server_said(r));
                }
                return -1;
            }
        }
        size_t n = r->end - r->pos;
        if (n > left) {
            n = (size_t)left;
        }
        if (sink(ctx, r->buf + r->pos, n) != 0) {
            set_err(err, PYSSH_E_ABORTED,
                    "scp of %.200s: the transfer was stopped by the "
                    "sink after %llu bytes",
                    path, size - left + n);
            return -1;
        }
        r->pos += n;
        left -= n;
    }
    return 0;
}

/* The server's status byte after the data, answered: 0, or -1. */
static int
scp_status(scp_reader *r, const char *path, char *line, pyssh_error *err)
{
    if (r->pos == r->end && scp_fill(r, err) != 0) {
        if (err->code == PYSSH_OK || r->eof) {
            set_err(err, PYSSH_E_SCP_PROTOCOL, "scp of %.200s: no status after the data", path);
        }
        return -1;
    }
    if (r->buf[r->pos] != '\0') {
        size_t len;
        if (scp_line(r, path, line, &len, err) == 0) {
            set_err(err, scp_error_code(line + 1, len - 1), "scp of %.200s: %.400s", path,
                    line + 1);
        }
        return -1;
    }
    r->pos++;
    return scp_send_byte(r, '\0', err);
}

static int
scp_transfer(scp_reader *r, const char *path, pyssh_sink_fn sink, void *ctx, uint64_t *size_out,
             pyssh_error *err)
{
    char *line = malloc(SCP_LINE_MAX);
    unsigned long long size = 0;
    if (line == NULL) {
        set_err(err, PYSSH_E_NOMEM, "scp of %.200s: out of memory", path);
        return -1;
    }
    int rc = scp_send_byte(r, '\0', err);
    if (rc == 0) {
        rc = scp_header(r, path, line, &size, err);
    }
    if (rc == 0 && size_out != NULL) {
        *size_out = size;
    }
    if (rc == 0) {
        rc = scp_body(r, path, size, sink, ctx, err);
    }
    if (rc == 0) {
        rc = scp_status(r, path, line, err);
    }
    free(line);
    return rc;
}

static int
capi_scp_read(PyObject *session, const char *path, pyssh_sink_fn sink, void *ctx, uint64_t *size,
              double timeout, pyssh_error *err)
{
    if (session == NULL || path == NULL || *path == '\0' || sink == NULL) {
        set_err(err, PYSSH_E_ARGUMENT, "scp_read: needs a session, a non-empty path and a sink");
        return -1;
    }
    char *quoted = shell_quote(path);
    char *command = quoted != NULL ? malloc(strlen(quoted) + 16) : NULL;
    if (command == NULL) {
        free(quoted);
        set_err(err, PYSSH_E_NOMEM, "scp_read: out of memory");
        return -1;
    }
    sprintf(command, "scp -f %s", quoted);
    free(quoted);
    scp_reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        free(command);
        set_err(err, PYSSH_E_NOMEM, "scp_read: out of memory");
        return -1;
    }
    r->timeout = timeout;
    r->ch = capi_exec_open(session, command, timeout, err);
    free(command);
    int rc = -1;
    if (r->ch != NULL) {
        rc = scp_transfer(r, path, sink, ctx, size, err);
        if (rc == 0) {
            /* the server ends on its own: our EOF, then its exit */
            if (capi_channel_send_eof(r->ch, timeout, err) < 0) {
                rc = -1;
            }
        }
    }
    capi_channel_close(r->ch);
    free(r);
    return rc;
}

/* ---- errors (GIL held) ------------------------------------------------------------ */

static PyObject *
capi_raise_error(const pyssh_error *err)
{
    static const char *const names[] = {
        [PYSSH_E_SSH] = "SSHError",
        [PYSSH_E_CLOSED] = "SessionClosedError",
        [PYSSH_E_TIMEOUT] = "SSHTimeoutError",
        [PYSSH_E_SCP] = "SCPError",
        [PYSSH_E_SCP_NOT_FOUND] = "SCPFileNotFoundError",
        [PYSSH_E_SCP_PERMISSION] = "SCPPermissionError",
        [PYSSH_E_SCP_PROTOCOL] = "SCPProtocolError",
        [PYSSH_E_ABORTED] = "SSHError",
        [PYSSH_E_LOST] = "ConnectError",
    };
    if (err == NULL) {
        PyErr_SetString(PyExc_SystemError, "pyssh raise_error: err is NULL");
        return NULL;
    }
    const char *msg = err->message[0] ? err->message : "pyssh C API call failed";
    switch (err->code) {
    case PYSSH_E_ARGUMENT:
        PyErr_SetString(PyExc_ValueError, msg);
        return NULL;
    case PYSSH_E_NOMEM:
        PyErr_SetString(PyExc_MemoryError, msg);
        return NULL;
    case PYSSH_E_OS:
        PyErr_Format(PyExc_OSError, "%s", msg);
        return NULL;
    default:
        break;
    }
    if (err->code <= PYSSH_OK || err->code >= (int)(sizeof(names) / sizeof(names[0])) ||
        names[err->code] == NULL) {
        PyErr_Format(PyExc_SystemError, "pyssh raise_error: unknown error code %d (%s)", err->code,
                     msg);
        return NULL;
    }
    /* the class of this interpreter's pyssh */
    PyObject *mod = PyImport_ImportModule("pyssh._ssh");
    if (mod == NULL) {
        return NULL;
    }
    PyObject *cls = PyObject_GetAttrString(mod, names[err->code]);
    Py_DECREF(mod);
    if (cls == NULL) {
        return NULL;
    }
    PyErr_SetString(cls, msg);
    Py_DECREF(cls);
    return NULL;
}

/* ---- the table ------------------------------------------------------------------- */

static PysshCAPI capi_table = {
    .version = PYSSH_CAPI_VERSION,
    .size = sizeof(PysshCAPI),
    .pyssh_version = PYSSH_VERSION,
    .libssh_version = NULL, /* set by the first module exec */
    .Session_Check = capi_session_check,
    .raise_error = capi_raise_error,
    .session_is_open = capi_session_is_open,
    .exec_open = capi_exec_open,
    .direct_tcpip_open = capi_direct_tcpip_open,
    .channel_write = capi_channel_write,
    .channel_send_eof = capi_channel_send_eof,
    .channel_read = capi_channel_read,
    .channel_exit_status = capi_channel_exit_status,
    .channel_close = capi_channel_close,
    .scp_read = capi_scp_read,
    .session_lock = capi_session_lock,
    .session_ssh = capi_session_ssh,
    .session_unlock = capi_session_unlock,
    .libssh_symbol = capi_libssh_symbol,
};

int
pyssh_capi_setup(PyObject *module)
{
    /* the same in every interpreter; another one's exec (a GIL of its own) may run
     * at once, or a consumer there read it meanwhile: set once, atomically */
    pyssh_atomic_cas_str(&capi_table.libssh_version, NULL, ssh_version(0));
    PyObject *capsule = PyCapsule_New(&capi_table, PYSSH_CAPI_CAPSULE, NULL);
    if (capsule == NULL) {
        return -1;
    }
    int rc = PyModule_AddObjectRef(module, "_C_API", capsule);
    Py_DECREF(capsule);
    return rc;
}
