/* The SCP protocol's messages, as a server sends them: parsed and checked here,
 * in one pure function that never trusts its input (the fuzz harness in
 * tests/fuzz/ compiles this file on its own with PYSSH_SCP_FUZZ defined), and
 * exposed to Python as pyssh._ssh.scp_parse().
 *
 * What a hostile server must not get through (OpenSSH's CVE-2018-20685 and
 * CVE-2019-6111 are of this class): a file or directory name that is not one
 * safe component of a local path (names.c: empty, "." or "..", holding "/" or
 * NUL, and on Windows '\\', ':', a device name...), so that nothing is written
 * outside the target directory; a mode beyond 07777; a size that does not fit
 * in 63 bits; times out of range; anything after the fields. Which names may
 * appear at the top level, and the nesting of D/E, are checked by the caller
 * (pyssh/_scp.py). */
#ifndef PYSSH_SCP_FUZZ
#include "pyssh.h"
#else
#include "platform.h"
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef PYSSH_SCP_FUZZ
const char *pyssh_name_problem(const char *name, size_t n, int windows); /* names.c */
#endif

#define SCP_NAME_MAX 4096

enum scp_kind {
    SCP_FILE = 'C',
    SCP_DIR = 'D',
    SCP_END = 'E',
    SCP_TIME = 'T',
    SCP_WARNING = 1,
    SCP_ERROR = 2
};

struct scp_msg {
    int kind;
    unsigned int mode;
    unsigned long long size;
    long long mtime, atime;
    const char *text; /* C/D: the name; 1/2: the message (points into the line) */
    size_t text_len;
};

/* Parse an unsigned decimal number of at most `max`; advances *p. */
static int
parse_decimal(const char **p, const char *end, unsigned long long max, unsigned long long *out)
{
    const char *s = *p;
    unsigned long long v = 0;
    if (s >= end || *s < '0' || *s > '9') {
        return -1;
    }
    while (s < end && *s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10) {
            return -1; /* too large */
        }
        v = v * 10 + d;
        s++;
    }
    *p = s;
    *out = v;
    return 0;
}

static int
expect_space(const char **p, const char *end)
{
    if (*p >= end || **p != ' ') {
        return -1;
    }
    (*p)++;
    return 0;
}

/* `line` holds one message without its final newline. Returns 0, or -1 with
 * *why saying what is wrong. */
static int
scp_parse(const char *line, size_t len, struct scp_msg *m, const char **why)
{
    const char *p = line, *end = line + len;
    memset(m, 0, sizeof(*m));
    if (len == 0) {
        *why = "an empty message";
        return -1;
    }
    if (memchr(line, '\n', len) != NULL) {
        *why = "a newline inside a message";
        return -1;
    }
    m->kind = (unsigned char)*p++;
    switch (m->kind) {
    case SCP_WARNING:
    case SCP_ERROR:
        m->text = p;
        m->text_len = (size_t)(end - p);
        return 0;
    case SCP_END:
        if (p != end) {
            *why = "characters after E";
            return -1;
        }
        return 0;
    case SCP_TIME: {
        unsigned long long mt, mu, at, au;
        const unsigned long long tmax = 0x7fffffffffffULL; /* far beyond any date */
        if (parse_decimal(&p, end, tmax, &mt) < 0 || expect_space(&p, end) < 0 ||
            parse_decimal(&p, end, 999999, &mu) < 0 || expect_space(&p, end) < 0 ||
            parse_decimal(&p, end, tmax, &at) < 0 || expect_space(&p, end) < 0 ||
            parse_decimal(&p, end, 999999, &au) < 0 || p != end) {
            *why = "a malformed time message (T<mtime> 0 <atime> 0)";
            return -1;
        }
        m->mtime = (long long)mt;
        m->atime = (long long)at;
        return 0;
    }
    case SCP_FILE:
    case SCP_DIR: {
        unsigned long long mode = 0, size;
        int digits = 0;
        while (p < end && *p >= '0' && *p <= '7' && digits < 5) {
            mode = mode * 8 + (unsigned)(*p - '0');
            p++;
            digits++;
        }
        if (digits == 0 || mode > 07777 || expect_space(&p, end) < 0) {
            *why = "a malformed or out-of-range mode";
            return -1;
        }
        if (parse_decimal(&p, end, 0x7fffffffffffffffULL, &size) < 0 || expect_space(&p, end) < 0) {
            *why = "a malformed or out-of-range size";
            return -1;
        }
        m->mode = (unsigned int)mode;
        m->size = size;
        m->text = p;
        m->text_len = (size_t)(end - p);
        if (m->text_len == 0) {
            *why = "an empty name";
            return -1;
        }
        if (m->text_len > SCP_NAME_MAX) {
            *why = "a name longer than 4096 bytes";
            return -1;
        }
        const char *bad = pyssh_name_problem(p, m->text_len, PYSSH_WINDOWS_PATHS);
        if (bad != NULL) {
            *why = bad;
            return -1;
        }
        return 0;
    }
    default:
        *why = "an unknown message type (not C, D, E, T or an error)";
        return -1;
    }
}

#ifndef PYSSH_SCP_FUZZ

/* The parser for C callers (capi.c): 0, or -1 with *why. `kind` is 'C', 'D',
 * 'E', 'T', 1 (warning) or 2 (error); `text` points into `line`. */
int
pyssh_scp_parse(const char *line, size_t len, int *kind, unsigned long long *size,
                const char **text, size_t *text_len, const char **why)
{
    struct scp_msg m;
    if (scp_parse(line, len, &m, why) < 0) {
        return -1;
    }
    *kind = m.kind;
    *size = m.size;
    *text = m.text;
    *text_len = m.text_len;
    return 0;
}

PyDoc_STRVAR(scp_parse_doc,
             "scp_parse(line, /)\n--\n\n"
             "Parse one SCP message from a server (bytes, without its newline) and check it.\n"
             "Returns ('C', mode, size, name), ('D', mode, size, name), ('E',),\n"
             "('T', mtime, atime), ('warning', text) or ('error', text); names and texts are\n"
             "bytes. Raises SCPProtocolError for anything malformed or unsafe.");

static PyObject *
scp_parse_py(PyObject *module, PyObject *arg)
{
    pyssh_state *st = PyModule_GetState(module);
    Py_buffer view;
    struct scp_msg m;
    const char *why = NULL;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *r = NULL;
    if (scp_parse(view.buf, (size_t)view.len, &m, &why) < 0) {
        PyObject *shown = PyBytes_FromStringAndSize(view.buf, view.len < 200 ? view.len : 200);
        if (shown != NULL) {
            pyssh_raise(st, PYSSH_EXC_SCPProtocolError, "the server sent %s: %R%s", why, shown,
                        view.len > 200 ? "..." : "");
            Py_DECREF(shown);
        }
        goto done;
    }
    switch (m.kind) {
    case SCP_FILE:
    case SCP_DIR:
        r = Py_BuildValue("(sIKy#)", m.kind == SCP_FILE ? "C" : "D", m.mode, m.size, m.text,
                          (Py_ssize_t)m.text_len);
        break;
    case SCP_END:
        r = Py_BuildValue("(s)", "E");
        break;
    case SCP_TIME:
        r = Py_BuildValue("(sLL)", "T", m.mtime, m.atime);
        break;
    default:
        r = Py_BuildValue("(sy#)", m.kind == SCP_ERROR ? "error" : "warning", m.text,
                          (Py_ssize_t)m.text_len);
    }
done:
    PyBuffer_Release(&view);
    return r;
}

/* ---- the server's error lines ------------------------------------------------
 *
 * SCP carries no error codes: the remote scp reports a failure as a line of
 * text, and OpenSSH's scp writes it as "scp: PATH: REASON" with REASON from
 * strerror(errno) (scp.c: run_err("%s: %s", name, strerror(errno))), so the
 * reason's text is the only thing there is to classify by. It is read from
 * the last ": " on (a PATH may hold any words, "Permission denied" too), and
 * compared whole, ignoring ASCII case and the spaces around it, with the
 * strerror texts of glibc, musl, the BSDs and macOS, which agree:
 *
 *   ENOENT   "No such file or directory"  -> PYSSH_SCP_NOT_FOUND
 *   ENOTDIR  "Not a directory"            -> PYSSH_SCP_NOT_FOUND (a path through
 *            a file names nothing; scp also says it of a target that is not a
 *            directory)
 *   EACCES   "Permission denied"          -> PYSSH_SCP_PERMISSION
 *   EPERM    "Operation not permitted"    -> PYSSH_SCP_PERMISSION
 *
 * Anything else (another errno, "not a regular file", a protocol complaint, a
 * server whose scp speaks another language) is PYSSH_SCP_OTHER. */

static const struct {
    const char *reason;
    int kind;
} scp_reasons[] = {
    {"No such file or directory", PYSSH_SCP_NOT_FOUND},
    {"Not a directory", PYSSH_SCP_NOT_FOUND},
    {"Permission denied", PYSSH_SCP_PERMISSION},
    {"Operation not permitted", PYSSH_SCP_PERMISSION},
};

static int
ascii_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* text[0:n] equals the NUL-terminated `word`, ignoring ASCII case (not the
 * locale's: the text comes from a server) */
static int
same_words(const char *text, size_t n, const char *word)
{
    if (strlen(word) != n) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (ascii_lower((unsigned char)text[i]) != ascii_lower((unsigned char)word[i])) {
            return 0;
        }
    }
    return 1;
}

static int
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int
pyssh_scp_error_kind(const char *text, size_t n)
{
    while (n > 0 && is_space(text[n - 1])) {
        n--;
    }
    size_t start = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (text[i] == ':' && text[i + 1] == ' ') {
            start = i + 2;
        }
    }
    while (start < n && is_space(text[start])) {
        start++;
    }
    for (size_t i = 0; i < sizeof(scp_reasons) / sizeof(scp_reasons[0]); i++) {
        if (same_words(text + start, n - start, scp_reasons[i].reason)) {
            return scp_reasons[i].kind;
        }
    }
    return PYSSH_SCP_OTHER;
}

PyDoc_STRVAR(scp_error_kind_doc,
             "scp_error_kind(text, /)\n--\n\n"
             "Classify an error line from the server's scp (bytes, as 'scp: PATH: REASON'):\n"
             "SCP_ERROR_NOT_FOUND, SCP_ERROR_PERMISSION or SCP_ERROR_OTHER, by the strerror\n"
             "text of its REASON.");

static PyObject *
scp_error_kind_py(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    int kind = pyssh_scp_error_kind(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromLong(kind);
}

int
pyssh_scp_setup(PyObject *module)
{
    if (PyModule_AddIntConstant(module, "SCP_ERROR_OTHER", PYSSH_SCP_OTHER) < 0 ||
        PyModule_AddIntConstant(module, "SCP_ERROR_NOT_FOUND", PYSSH_SCP_NOT_FOUND) < 0 ||
        PyModule_AddIntConstant(module, "SCP_ERROR_PERMISSION", PYSSH_SCP_PERMISSION) < 0) {
        return -1;
    }
    return 0;
}

PyMethodDef pyssh_scp_methods[] = {
    {"scp_parse", (PyCFunction)scp_parse_py, METH_O, scp_parse_doc},
    {"scp_error_kind", (PyCFunction)scp_error_kind_py, METH_O, scp_error_kind_doc},
    {NULL, NULL, 0, NULL},
};

#endif
