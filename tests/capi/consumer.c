/* consumer.c: the rest of pyssh's C API, exercised by tests/test_capi.py (example.c
 * is the documented example; this is the test's). Everything runs with the GIL
 * released except the imports and the raising. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pyssh_capi.h"

static const PysshCAPI *ssh;

/* ---- SHA-256 (FIPS 180-4), to hash a stream in C ---------------------------- */

typedef struct {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t used;
} sha256;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void
sha256_block(sha256 *s, const unsigned char *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h;
    for (int i = 0; i < 16; i++) {
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    }
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0];
    b = s->h[1];
    c = s->h[2];
    d = s->h[3];
    e = s->h[4];
    f = s->h[5];
    g = s->h[6];
    h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
    s->h[5] += f;
    s->h[6] += g;
    s->h[7] += h;
}

static void
sha256_init(sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof(h0));
    s->len = 0;
    s->used = 0;
}

static void
sha256_update(sha256 *s, const unsigned char *p, size_t n)
{
    s->len += n;
    while (n > 0) {
        size_t take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->buf + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used == 64) {
            sha256_block(s, s->buf);
            s->used = 0;
        }
    }
}

static void
sha256_hex(sha256 *s, char out[65])
{
    uint64_t bits = s->len * 8;
    unsigned char pad = 0x80, zero = 0, lenb[8];
    sha256_update(s, &pad, 1);
    while (s->used != 56) {
        sha256_update(s, &zero, 1);
    }
    for (int i = 0; i < 8; i++) {
        lenb[i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    sha256_update(s, lenb, 8);
    for (int i = 0; i < 8; i++) {
        snprintf(out + 8 * i, 9, "%08x", (unsigned)s->h[i]);
    }
}

/* ---- the functions ------------------------------------------------------------ */

static int
check_session(PyObject *session)
{
    if (!ssh->Session_Check(session)) {
        PyErr_SetString(PyExc_TypeError, "a pyssh.Session is needed");
        return -1;
    }
    return 0;
}

typedef struct {
    sha256 h;
    uint64_t seen;
    uint64_t stop_after; /* abort once this much was seen (0: never) */
} hash_sink;

static int
hash_chunk(void *ctx, const char *data, size_t len)
{
    hash_sink *k = ctx;
    sha256_update(&k->h, (const unsigned char *)data, len);
    k->seen += len;
    return k->stop_after != 0 && k->seen >= k->stop_after;
}

/* scp_sha256(session, path, stop_after=0, timeout=60) -> (hexdigest, size) */
static PyObject *
scp_sha256(PyObject *m, PyObject *args)
{
    PyObject *session;
    const char *path;
    unsigned long long stop_after = 0;
    double timeout = 60;
    (void)m;
    if (!PyArg_ParseTuple(args, "Os|Kd", &session, &path, &stop_after, &timeout) ||
        check_session(session) < 0) {
        return NULL;
    }
    hash_sink k;
    sha256_init(&k.h);
    k.seen = 0;
    k.stop_after = stop_after;
    uint64_t size = 0;
    pyssh_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = ssh->scp_read(session, path, hash_chunk, &k, &size, timeout, &err);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        return ssh->raise_error(&err);
    }
    char hex[65];
    sha256_hex(&k.h, hex);
    return Py_BuildValue("(sK)", hex, (unsigned long long)size);
}

/* pipe(session, command, data, timeout=60) -> (status, sha256 of stdout, stdout length, stderr):
 * writes all of data to the command's stdin while reading its output */
static PyObject *
pipe_through(PyObject *m, PyObject *args)
{
    PyObject *session;
    const char *command;
    Py_buffer data;
    double timeout = 60;
    (void)m;
    if (!PyArg_ParseTuple(args, "Osy*|d", &session, &command, &data, &timeout)) {
        return NULL;
    }
    if (check_session(session) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    pyssh_error err = {0};
    hash_sink k;
    sha256_init(&k.h);
    k.seen = 0;
    k.stop_after = 0;
    char errtext[4096];
    size_t errlen = 0;
    int status = -1, ok = 0;
    char chunk[65536];
    Py_BEGIN_ALLOW_THREADS
    pyssh_channel *ch = ssh->exec_open(session, command, timeout, &err);
    /* "cat" echoes what it is sent: its output is read between writes, or it
     * would stop reading its input and the window would stay shut */
    size_t off = 0;
    ok = ch != NULL;
    while (ok && off < (size_t)data.len) {
        ptrdiff_t w = ssh->channel_write(ch, (const char *)data.buf + off, (size_t)data.len - off,
                                         0.05, &err);
        if (w < 0 && err.code != PYSSH_E_TIMEOUT) {
            ok = 0;
            break;
        }
        off += w > 0 ? (size_t)w : 0;
        for (;;) { /* take what came back, without waiting */
            int stream;
            ptrdiff_t r = ssh->channel_read(ch, chunk, sizeof(chunk), &stream, 0, &err);
            if (r <= 0) {
                ok = r == 0 || err.code == PYSSH_E_TIMEOUT;
                break;
            }
            if (stream == PYSSH_STDOUT) {
                hash_chunk(&k, chunk, (size_t)r);
            }
        }
    }
    if (ok && ssh->channel_send_eof(ch, timeout, &err) < 0) {
        ok = 0;
    }
    while (ok) {
        int stream;
        ptrdiff_t r = ssh->channel_read(ch, chunk, sizeof(chunk), &stream, timeout, &err);
        if (r < 0) {
            ok = 0;
        }
        else if (r == 0) {
            ok = ssh->channel_exit_status(ch, &status, timeout, &err) == 0;
            break;
        }
        else if (stream == PYSSH_STDOUT) {
            hash_chunk(&k, chunk, (size_t)r);
        }
        else {
            size_t take =
                sizeof(errtext) - errlen < (size_t)r ? sizeof(errtext) - errlen : (size_t)r;
            memcpy(errtext + errlen, chunk, take);
            errlen += take;
        }
    }
    ssh->channel_close(ch);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (!ok) {
        return ssh->raise_error(&err);
    }
    char hex[65];
    uint64_t seen = k.seen;
    sha256_hex(&k.h, hex);
    return Py_BuildValue("(isKy#)", status, hex, (unsigned long long)seen, errtext,
                         (Py_ssize_t)errlen);
}

/* read_once(session, command, timeout) -> bytes: opens, sends EOF, waits for one read;
 * raises what the API reports (a command that prints nothing in time: SSHTimeoutError) */
static PyObject *
read_once(PyObject *m, PyObject *args)
{
    PyObject *session;
    const char *command;
    double timeout;
    (void)m;
    if (!PyArg_ParseTuple(args, "Osd", &session, &command, &timeout) ||
        check_session(session) < 0) {
        return NULL;
    }
    pyssh_error err = {0};
    char buf[4096];
    ptrdiff_t n = -1;
    int stream = 0;
    Py_BEGIN_ALLOW_THREADS
    pyssh_channel *ch = ssh->exec_open(session, command, 30, &err);
    if (ch != NULL && ssh->channel_send_eof(ch, 30, &err) == 0) {
        n = ssh->channel_read(ch, buf, sizeof(buf), &stream, timeout, &err);
    }
    ssh->channel_close(ch);
    Py_END_ALLOW_THREADS
    if (n < 0) {
        return ssh->raise_error(&err);
    }
    return PyBytes_FromStringAndSize(buf, n);
}

/* tcp_roundtrip(session, host, port, data) -> bytes: through a direct-tcpip channel,
 * sends data, then EOF, and reads until the other side closes */
static PyObject *
tcp_roundtrip(PyObject *m, PyObject *args)
{
    PyObject *session;
    const char *host;
    int port;
    Py_buffer data;
    (void)m;
    if (!PyArg_ParseTuple(args, "Osiy*", &session, &host, &port, &data)) {
        return NULL;
    }
    if (check_session(session) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    pyssh_error err = {0};
    char *back = malloc((size_t)data.len + 65536);
    size_t got = 0;
    int ok = 0;
    if (back == NULL) {
        PyBuffer_Release(&data);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    pyssh_channel *ch = ssh->direct_tcpip_open(session, host, port, 30, &err);
    size_t off = 0;
    while (ch != NULL && off < (size_t)data.len) {
        ptrdiff_t w =
            ssh->channel_write(ch, (const char *)data.buf + off, (size_t)data.len - off, 30, &err);
        if (w < 0) {
            break;
        }
        off += (size_t)w;
    }
    if (ch != NULL && off == (size_t)data.len && ssh->channel_send_eof(ch, 30, &err) == 0) {
        for (;;) {
            int stream;
            ptrdiff_t n = ssh->channel_read(ch, back + got, (size_t)data.len + 65536 - got, &stream,
                                            30, &err);
            if (n <= 0) {
                ok = n == 0;
                break;
            }
            got += (size_t)n;
            if (got == (size_t)data.len + 65536) {
                ok = 1;
                break;
            }
        }
    }
    ssh->channel_close(ch);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyObject *r = ok ? PyBytes_FromStringAndSize(back, (Py_ssize_t)got) : ssh->raise_error(&err);
    free(back);
    return r;
}

/* raw_check(session) -> (is_connected, banner): libssh called directly, under the lock */
static PyObject *
raw_check(PyObject *m, PyObject *session)
{
    (void)m;
    if (check_session(session) < 0) {
        return NULL;
    }
    typedef int (*is_connected_fn)(void *);
    typedef const char *(*banner_fn)(void *);
    is_connected_fn is_connected = (is_connected_fn)ssh->libssh_symbol("ssh_is_connected");
    banner_fn banner = (banner_fn)ssh->libssh_symbol("ssh_get_serverbanner");
    if (is_connected == NULL || banner == NULL || ssh->libssh_symbol("no_such_function") != NULL) {
        PyErr_SetString(PyExc_AssertionError, "libssh_symbol");
        return NULL;
    }
    pyssh_error err = {0};
    int rc, connected = 0;
    char text[256] = "";
    Py_BEGIN_ALLOW_THREADS
    rc = ssh->session_lock(session, &err);
    if (rc == 0) {
        void *raw = ssh->session_ssh(session);
        if (raw != NULL) {
            connected = is_connected(raw);
            const char *b = banner(raw);
            snprintf(text, sizeof(text), "%s", b != NULL ? b : "");
        }
        ssh->session_unlock(session);
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        return ssh->raise_error(&err);
    }
    return Py_BuildValue("(is)", connected, text);
}

/* import_version(version, size): what pyssh_import_capi does, for another version */
static PyObject *
import_version(PyObject *m, PyObject *args)
{
    unsigned int version;
    Py_ssize_t size;
    (void)m;
    if (!PyArg_ParseTuple(args, "In", &version, &size)) {
        return NULL;
    }
    if (pyssh_import_capi_version(version, (size_t)size) == NULL) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* raise_code(code, message): raise_error for a code */
static PyObject *
raise_code(PyObject *m, PyObject *args)
{
    pyssh_error err = {0};
    const char *msg;
    (void)m;
    if (!PyArg_ParseTuple(args, "is", &err.code, &msg)) {
        return NULL;
    }
    snprintf(err.message, sizeof(err.message), "%s", msg);
    return ssh->raise_error(&err);
}

static PyObject *
info(PyObject *m, PyObject *noargs)
{
    (void)m;
    (void)noargs;
    return Py_BuildValue("{sIsIssss}", "version", ssh->version, "size", ssh->size, "pyssh_version",
                         ssh->pyssh_version, "libssh_version", ssh->libssh_version);
}

static PyMethodDef methods[] = {
    {"scp_sha256", scp_sha256, METH_VARARGS, NULL},
    {"pipe", pipe_through, METH_VARARGS, NULL},
    {"read_once", read_once, METH_VARARGS, NULL},
    {"tcp_roundtrip", tcp_roundtrip, METH_VARARGS, NULL},
    {"raw_check", raw_check, METH_O, NULL},
    {"import_version", import_version, METH_VARARGS, NULL},
    {"raise_code", raise_code, METH_VARARGS, NULL},
    {"info", info, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "consumer", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit_consumer(void)
{
    ssh = pyssh_import_capi();
    if (ssh == NULL) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
#ifdef Py_GIL_DISABLED
    /* safe without the GIL: `ssh` is set once, here, under the import lock; a
     * module that did not say so would turn the GIL back on for every test
     * after it in .ci/run ft (single-phase init: no Py_mod_gil slot) */
    if (m != NULL && PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    return m;
}
