/* The exception hierarchy, built from one table, and the one place where libssh
 * errors become Python exceptions. Docstrings are set in pyssh/errors.py. */
#include "pyssh.h"

#include <stdarg.h>
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

static int
contains(const char *haystack, const char *needle)
{
    return haystack != NULL && strstr(haystack, needle) != NULL;
}

/* A session that worked has lost its server, or the connection is broken
 * beyond use: the one message for it. */
static PyObject *
raise_lost(pyssh_state *st, const char *what, PyObject *shown)
{
    pyssh_raise(st, PYSSH_EXC_ConnectError,
                "%s: the connection to the server was lost (%U): "
                "the session cannot be used any more, connect again",
                what, shown);
    Py_DECREF(shown);
    return NULL;
}

PyObject *
pyssh_raise_failure(pyssh_state *st, enum pyssh_exc fallback, const char *what,
                    const pyssh_failure *f)
{
    if (!f->dead || fallback == PYSSH_EXC_ConnectError) {
        return pyssh_raise_libssh(st, fallback, what, f->text);
    }
    PyObject *shown = pyssh_printable(f->text, strlen(f->text));
    return shown == NULL ? NULL : raise_lost(st, what, shown);
}

PyObject *
pyssh_raise_libssh(pyssh_state *st, enum pyssh_exc fallback, const char *what, const char *detail)
{
    enum pyssh_exc which = fallback;
    if (detail == NULL || detail[0] == '\0') {
        detail = "libssh gave no reason";
    }
    /* libssh's message may quote the server (a disconnect's reason, a banner) */
    PyObject *shown = pyssh_printable(detail, strlen(detail));
    if (shown == NULL) {
        return NULL;
    }
    if (contains(detail, "Timeout") || contains(detail, "timed out")) {
        which = PYSSH_EXC_SSHTimeoutError;
    }
    else if (contains(detail, "Socket error") || contains(detail, "Connection refused") ||
             contains(detail, "Connection reset") || contains(detail, "disconnected") ||
             contains(detail, "Broken pipe")) {
        if (fallback != PYSSH_EXC_ConnectError) {
            return raise_lost(st, what, shown); /* not while connecting */
        }
    }
    if (contains(detail, "Channel opening failure")) {
        pyssh_raise(st, which,
                    "%s: %U; the server may be at its limit of channels open at "
                    "once on one connection (OpenSSH's MaxSessions, 10 by default): close the "
                    "channels, SFTP clients or tunnels you no longer need, or open another "
                    "session",
                    what, shown);
    }
    else {
        pyssh_raise(st, which, "%s: %U", what, shown);
    }
    Py_DECREF(shown);
    return NULL;
}
