/* The exception hierarchy, built from one table, and the one place where libssh
 * errors become Python exceptions. Docstrings are set in pyssh/errors.py. */
#include "pyssh.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum second_base { NONE, CONNECTION, TIMEOUT, VALUE, NOTFOUND, PERMISSION, EXISTS, ISDIR, NOTDIR };

static const struct {
    const char *name;        /* pyssh.<name> */
    int parent;              /* index into this table, -1 for OSError */
    enum second_base second; /* a builtin second base where one fits */
} exc_table[PYSSH_EXC_COUNT] = {
    [PYSSH_EXC_SSHError] = {"pyssh.SSHError", -1, NONE},
    [PYSSH_EXC_ConnectError] = {"pyssh.ConnectError", PYSSH_EXC_SSHError, CONNECTION},
    [PYSSH_EXC_SSHTimeoutError] = {"pyssh.SSHTimeoutError", PYSSH_EXC_SSHError, TIMEOUT},
    [PYSSH_EXC_AuthenticationError] = {"pyssh.AuthenticationError", PYSSH_EXC_SSHError, NONE},
    [PYSSH_EXC_HostKeyError] = {"pyssh.HostKeyError", PYSSH_EXC_SSHError, NONE},
    [PYSSH_EXC_UnknownHostKeyError] = {"pyssh.UnknownHostKeyError", PYSSH_EXC_HostKeyError, NONE},
    [PYSSH_EXC_HostKeyMismatchError] = {"pyssh.HostKeyMismatchError", PYSSH_EXC_HostKeyError, NONE},
    [PYSSH_EXC_HostKeyRevokedError] = {"pyssh.HostKeyRevokedError", PYSSH_EXC_HostKeyError, NONE},
    [PYSSH_EXC_SessionClosedError] = {"pyssh.SessionClosedError", PYSSH_EXC_SSHError, NONE},
    [PYSSH_EXC_PrivateKeyError] = {"pyssh.PrivateKeyError", PYSSH_EXC_SSHError, VALUE},
    [PYSSH_EXC_CommandError] = {"pyssh.CommandError", PYSSH_EXC_SSHError, NONE},
    [PYSSH_EXC_SCPError] = {"pyssh.SCPError", PYSSH_EXC_SSHError, NONE},
    [PYSSH_EXC_SCPProtocolError] = {"pyssh.SCPProtocolError", PYSSH_EXC_SCPError, NONE},
    [PYSSH_EXC_SCPFileNotFoundError] = {"pyssh.SCPFileNotFoundError", PYSSH_EXC_SCPError, NOTFOUND},
    [PYSSH_EXC_SCPPermissionError] = {"pyssh.SCPPermissionError", PYSSH_EXC_SCPError, PERMISSION},
    [PYSSH_EXC_SFTPError] = {"pyssh.SFTPError", PYSSH_EXC_SSHError, NONE},
    [PYSSH_EXC_SFTPFileNotFoundError] = {"pyssh.SFTPFileNotFoundError", PYSSH_EXC_SFTPError,
                                         NOTFOUND},
    [PYSSH_EXC_SFTPPermissionError] = {"pyssh.SFTPPermissionError", PYSSH_EXC_SFTPError,
                                       PERMISSION},
    [PYSSH_EXC_SFTPFileExistsError] = {"pyssh.SFTPFileExistsError", PYSSH_EXC_SFTPError, EXISTS},
    [PYSSH_EXC_SFTPIsADirectoryError] = {"pyssh.SFTPIsADirectoryError", PYSSH_EXC_SFTPError, ISDIR},
    [PYSSH_EXC_SFTPNotADirectoryError] = {"pyssh.SFTPNotADirectoryError", PYSSH_EXC_SFTPError,
                                          NOTDIR},
};

int
pyssh_errors_init(PyObject *module, pyssh_state *st)
{
    for (int i = 0; i < PYSSH_EXC_COUNT; i++) {
        PyObject *parent = exc_table[i].parent < 0 ? PyExc_OSError : st->exc[exc_table[i].parent];
        PyObject *bases;
        switch (exc_table[i].second) {
        case CONNECTION:
            bases = PyTuple_Pack(2, parent, PyExc_ConnectionError);
            break;
        case TIMEOUT:
            bases = PyTuple_Pack(2, parent, PyExc_TimeoutError);
            break;
        case VALUE:
            bases = PyTuple_Pack(2, parent, PyExc_ValueError);
            break;
        case NOTFOUND:
            bases = PyTuple_Pack(2, parent, PyExc_FileNotFoundError);
            break;
        case PERMISSION:
            bases = PyTuple_Pack(2, parent, PyExc_PermissionError);
            break;
        case EXISTS:
            bases = PyTuple_Pack(2, parent, PyExc_FileExistsError);
            break;
        case ISDIR:
            bases = PyTuple_Pack(2, parent, PyExc_IsADirectoryError);
            break;
        case NOTDIR:
            bases = PyTuple_Pack(2, parent, PyExc_NotADirectoryError);
            break;
        default:
            bases = PyTuple_Pack(1, parent);
        }
        if (bases == NULL) {
            return -1;
        }
        st->exc[i] = PyErr_NewException(exc_table[i].name, bases, NULL);
        Py_DECREF(bases);
        if (st->exc[i] == NULL) {
            return -1;
        }
        if (PyModule_AddObjectRef(module, strchr(exc_table[i].name, '.') + 1, st->exc[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

int
pyssh_errors_traverse(pyssh_state *st, visitproc visit, void *arg)
{
    for (int i = 0; i < PYSSH_EXC_COUNT; i++) {
        Py_VISIT(st->exc[i]);
    }
    return 0;
}

void
pyssh_errors_clear(pyssh_state *st)
{
    for (int i = 0; i < PYSSH_EXC_COUNT; i++) {
        Py_CLEAR(st->exc[i]);
    }
}

PyObject *
pyssh_raise(pyssh_state *st, enum pyssh_exc which, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    if (msg != NULL) {
        PyErr_SetObject(st->exc[which], msg);
        Py_DECREF(msg);
    }
    return NULL;
}

PyObject *
pyssh_printable(const char *text, size_t n)
{
    PyObject *raw = PyBytes_FromStringAndSize(text, (Py_ssize_t)n);
    PyObject *mod = raw != NULL ? PyImport_ImportModule("pyssh._names") : NULL;
    PyObject *out = mod != NULL ? PyObject_CallMethod(mod, "printable", "O", raw) : NULL;
    Py_XDECREF(mod);
    Py_XDECREF(raw);
    return out;
}

/* A failed step, classified by libssh's state and error code, never by its
 * message: the message changes between libssh releases, and it may quote the
 * server, which could then pick pyssh's exception class. */
enum pyssh_fail_kind
pyssh_failure_kind(const pyssh_failure *f)
{
    if (f->dead) {
        return PYSSH_FAIL_LOST;
    }
    /* SSH_REQUEST_DENIED alone is not enough: libssh also sets it for a refused
     * key, a missing agent or a bad option; only the step knows it opened a
     * channel */
    if (f->refused && f->code == SSH_REQUEST_DENIED) {
        return PYSSH_FAIL_REFUSED;
    }
    return PYSSH_FAIL_PLAIN;
}

/* The message for `kind`, snprintf's way (the length it needs, whatever `n`
 * is): the one place these texts are written, for Python and the C API. */
static int
failure_format(char *buf, size_t n, enum pyssh_fail_kind kind, const char *what, const char *detail)
{
    switch (kind) {
    case PYSSH_FAIL_LOST:
        return snprintf(buf, n,
                        "%s: the connection to the server was lost (%s): "
                        "the session cannot be used any more, connect again",
                        what, detail);
    case PYSSH_FAIL_REFUSED:
        return snprintf(buf, n,
                        "%s: %s; the server may be at its limit of channels open at once on "
                        "one connection (OpenSSH's MaxSessions, 10 by default): close the "
                        "channels, SFTP clients or tunnels you no longer need, or open another "
                        "session",
                        what, detail);
    default:
        return snprintf(buf, n, "%s: %s", what, detail);
    }
}

/* The kind a failure is raised as: a dead connection found while connecting
 * is the connect's own failure (libssh's message says why it failed), not a
 * session that was lost. */
static enum pyssh_fail_kind
raised_kind(const pyssh_failure *f, enum pyssh_exc fallback)
{
    enum pyssh_fail_kind kind = pyssh_failure_kind(f);
    return kind == PYSSH_FAIL_LOST && fallback == PYSSH_EXC_ConnectError ? PYSSH_FAIL_PLAIN : kind;
}

/* Why the step failed: the keepalive's finding (f->silent), in pyssh's words,
 * written into buf; or libssh's message. */
static const char *
failure_detail(const pyssh_failure *f, char *buf, size_t n)
{
    if (f->silent > 0) {
        snprintf(buf, n,
                 "the server has not answered for %.1f seconds: %d keepalive probes sent %g "
                 "seconds apart went unanswered (keepalive_interval=%g, keepalive_count_max=%d; "
                 "ServerAliveInterval and ServerAliveCountMax in ~/.ssh/config)",
                 f->silent, f->count_max, f->interval, f->interval, f->count_max);
        return buf;
    }
    return f->text[0] != '\0' ? f->text : "libssh gave no reason";
}

enum pyssh_exc
pyssh_failure_describe(const pyssh_failure *f, enum pyssh_exc fallback, const char *what, char *buf,
                       size_t n)
{
    enum pyssh_fail_kind kind = raised_kind(f, fallback);
    char detail[400];
    failure_format(buf, n, kind, what, failure_detail(f, detail, sizeof(detail)));
    return kind == PYSSH_FAIL_LOST ? PYSSH_EXC_ConnectError : fallback;
}

PyObject *
pyssh_raise_failure(pyssh_state *st, enum pyssh_exc fallback, const char *what,
                    const pyssh_failure *f)
{
    enum pyssh_fail_kind kind = raised_kind(f, fallback);
    char why[400];
    const char *detail = failure_detail(f, why, sizeof(why));
    /* libssh's message may quote the server (a disconnect's reason, a banner) */
    PyObject *shown = pyssh_printable(detail, strlen(detail));
    const char *text = shown != NULL ? PyUnicode_AsUTF8(shown) : NULL;
    if (text == NULL) {
        Py_XDECREF(shown);
        return NULL;
    }
    int len = failure_format(NULL, 0, kind, what, text);
    char *buf = len >= 0 ? PyMem_Malloc((size_t)len + 1) : NULL;
    if (buf == NULL) {
        Py_DECREF(shown);
        return PyErr_NoMemory();
    }
    failure_format(buf, (size_t)len + 1, kind, what, text);
    PyObject *msg = PyUnicode_DecodeUTF8(buf, len, "replace");
    if (msg != NULL) {
        PyErr_SetObject(st->exc[kind == PYSSH_FAIL_LOST ? PYSSH_EXC_ConnectError : fallback], msg);
        Py_DECREF(msg);
    }
    PyMem_Free(buf);
    Py_DECREF(shown);
    return NULL;
}
