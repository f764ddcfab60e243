/* pyssh._ssh.Session: one libssh session.
 *
 * The methods here are primitives; the policy (argument checking, the order in
 * which authentication methods are tried, host key policies) lives in
 * pyssh/session.py, which subclasses this type.
 *
 * Thread contract: every libssh call on a session is made with the session lock
 * held, and the lock is only ever waited for with the GIL released. Waiting on
 * the network (pyssh_wait) happens without the lock, so other threads can use
 * the session between two steps. close() sets the handle to NULL with the GIL
 * held, then frees it under the lock: any later or concurrent call sees a
 * closed session and raises SessionClosedError. */
#include "pyssh.h"

#include <structmember.h>
#include <string.h>

/* Extra results of the key steps, beside libssh's SSH_AUTH_* values (0-3). */
#define KEY_ENCRYPTED 10 /* the key needs a passphrase and none was given */
#define KEY_UNUSABLE  11 /* not a private key libssh can read, or wrong passphrase */
#define KEY_NO_PUBLIC 12 /* no public key to offer (no .pub, not OpenSSH format) */
#define KEY_BAD_CERT  13 /* the certificate cannot be read, or is not the key's */

static int
map_auth(int rc)
{
    switch (rc) {
    case SSH_AUTH_AGAIN:
        return PYSSH_AGAIN;
    case SSH_AUTH_ERROR:
        return PYSSH_FAILED;
    default:
        return rc;
    }
}

int
pyssh_session_check(SessionObject *s, enum pyssh_need need)
{
    if (need >= PYSSH_NEED_OPEN && pyssh_session_ssh(s) == NULL) {
        pyssh_raise(s->state, PYSSH_EXC_SessionClosedError,
                    "the session is closed: connect again with pyssh.connect()");
        return -1;
    }
    if (need >= PYSSH_NEED_CONNECTED && !PYSSH_ATOMIC_LOAD_INT(&s->connected)) {
        pyssh_raise(s->state, PYSSH_EXC_SSHError, "the session is not connected yet");
        return -1;
    }
    return 0;
}

int
pyssh_claim_take(pyssh_claim *c, SessionObject *s, const char *kind, const char *method,
                 enum pyssh_need need)
{
    /* A look, then a store, would let two threads both find it free where no GIL
     * orders them (free-threaded CPython): one compare-and-swap looks and takes. */
    const char *holder = pyssh_atomic_cas_str(&c->method, NULL, method);
    if (holder != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "the %s is in use by another call (%s() has not returned: another "
                     "thread's, or one made from a callback or an iterator of its own); give "
                     "each thread its own %s",
                     kind, holder, kind);
        return -1;
    }
    if (pyssh_session_check(s, need) < 0) {
        pyssh_unclaim(c);
        return -1;
    }
    return 0;
}

const char *
pyssh_claim_holder(const pyssh_claim *c)
{
    return PYSSH_ATOMIC_LOAD_PTR(&c->method);
}

void
pyssh_unclaim(pyssh_claim *c)
{
    PYSSH_ATOMIC_STORE_PTR(&c->method, NULL);
}

#define CHECK_OPEN(self, ret)                                                                      \
    do {                                                                                           \
        if (pyssh_session_check((self), PYSSH_NEED_OPEN) < 0) {                                    \
            return ret;                                                                            \
        }                                                                                          \
    } while (0)

#define CHECK_CONNECTED(self, ret)                                                                 \
    do {                                                                                           \
        if (pyssh_session_check((self), PYSSH_NEED_CONNECTED) < 0) {                               \
            return ret;                                                                            \
        }                                                                                          \
    } while (0)

/* "O&" converter: None or a path (str, bytes, PathLike) to a bytes object. */
static int
fspath_or_none(PyObject *obj, void *out)
{
    if (obj == NULL) { /* cleanup call */
        Py_CLEAR(*(PyObject **)out);
        return 1;
    }
    if (obj == Py_None) {
        *(PyObject **)out = NULL;
        return 1;
    }
    return PyUnicode_FSConverter(obj, out) ? Py_CLEANUP_SUPPORTED : 0;
}

/* ---- lifetime -------------------------------------------------------------- */

static PyObject *
session_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args;
    (void)kwds;
    pyssh_state *st = pyssh_state_from_type(type);
    if (st == NULL) {
        return NULL;
    }
    SessionObject *self = (SessionObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = st;
    self->fd = PYSSH_INVALID_SOCKET;
    self->logq.tail = &self->logq.head;
    self->pid = pyssh_getpid();
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->ssh = ssh_new();
    if (self->ssh == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    ssh_set_counters(self->ssh, NULL, &self->rcounter);
    pyssh_guard_setup(self);
    return (PyObject *)self;
}

/* The one close, shared by close() and dealloc. Idempotent. The handle is set to
 * NULL first, before the lock (every method's early check sees the session closed
 * from then on; pyssh_session_ssh), then freed under the lock (which waits for a libssh call in another
 * thread to end). The other fields are read and cleared under the lock: a step
 * still running in another thread may set them (the event, made on first use by
 * pyssh_read_socket_once), as may _connect. A forked child sends no SSH goodbye:
 * its socket is the parent's. `emit_logs`: hand libssh's last lines to logging
 * (not from dealloc). */
static void
session_close_impl(SessionObject *self, int emit_logs)
{
    /* one exchange: two threads closing at once (no GIL) must not both free it */
    ssh_session ssh = PYSSH_ATOMIC_EXCHANGE_PTR(&self->ssh, NULL);
    if (ssh == NULL) {
        return;
    }
    int forked = self->pid != pyssh_getpid();
    pyssh_logmsg *logs = NULL;
    pyssh_socket_t fd;
    ssh_event event;

    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(self->lock, WAIT_LOCK);
    fd = self->fd;
    self->fd = PYSSH_INVALID_SOCKET;
    event = self->event;
    self->event = NULL;
    PYSSH_ATOMIC_STORE_INT(&self->connected, 0);
    pyssh_log_attach(self);
    /* threads waiting on this session look again, and find it closed */
    pyssh_waiters_ring_all(self);
    pyssh_waiters_free_spare(self);
    if (forked) {
        /* Freeing would send channel-close packets on the parent's connection:
         * close this process's copy of the socket and leave the rest. */
        if (fd == PYSSH_INVALID_SOCKET) {
            fd = ssh_get_fd(ssh);
        }
    }
    else {
        if (event != NULL) {
            ssh_event_remove_session(event, ssh);
            ssh_event_free(event);
        }
        ssh_disconnect(ssh);
        ssh_free(ssh);
    }
    pyssh_closesocket(fd);
    logs = pyssh_log_take(self);
    PyThread_release_lock(self->lock);
    if (self->carrier != NULL) {
        /* its last words (the disconnect) on through the jump hosts, and the
         * bridge closed: the jump host's session is closed next (Python) */
        pyssh_tunnel_carry_end(self->carrier);
    }
    Py_END_ALLOW_THREADS

    pyssh_log_finish(self, logs, emit_logs);
}

static int
session_traverse(SessionObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->carrier);
    return 0;
}

static void
session_dealloc(SessionObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    if (self->lock != NULL) {
        session_close_impl(self, 0);
        PyThread_free_lock(self->lock);
        self->lock = NULL;
    }
    else if (self->ssh != NULL) {
        ssh_free(self->ssh);
    }
    pyssh_log_discard(&self->logq);
    Py_CLEAR(self->carrier); /* after the close: the bridge is closed already */
    free(self->rforwards);   /* empty: each tunnel holds its session */
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

PyDoc_STRVAR(session_close_doc, "close($self, /)\n--\n\n"
                                "Disconnect and free the session. Safe to call more than once.");

static PyObject *
session_close(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
    session_close_impl(self, 1);
    Py_RETURN_NONE;
}

/* ---- configuration ------------------------------------------------------------ */

struct configure_arg {
    const char *host, *user, *default_user, *ssh_dir, *known_hosts, *config;
    const char *ciphers, *kex, *macs, *hostkeys; /* the caller's lists, or NULL */
    const char *default_ciphers;                 /* pyssh's order, below the config */
    int use_config; /* 0: none; 1: the default files; 2: the file `config` */
    unsigned int port;
    int log_level;
    const char *failed;
};

static int
configure_step(ssh_session ssh, void *p)
{
    struct configure_arg *a = p;
    int off = 0, on = 1;
#define SET(opt, val, name)                                                                        \
    if (ssh_options_set(ssh, opt, val) < 0) {                                                      \
        a->failed = name;                                                                          \
        return PYSSH_FAILED;                                                                       \
    }
    SET(SSH_OPTIONS_LOG_VERBOSITY, &a->log_level, "verbose");
    SET(SSH_OPTIONS_HOST, a->host, "host");
    if (a->ssh_dir != NULL) {
        SET(SSH_OPTIONS_SSH_DIR, a->ssh_dir, "ssh_dir");
    }
    SET(SSH_OPTIONS_PROCESS_CONFIG, &off, "config");
    if (a->default_ciphers != NULL) {
        SET(SSH_OPTIONS_CIPHERS_C_S, a->default_ciphers, "ciphers");
        SET(SSH_OPTIONS_CIPHERS_S_C, a->default_ciphers, "ciphers");
    }
    if (a->use_config) {
        if (ssh_options_parse_config(ssh, a->use_config == 2 ? a->config : NULL) < 0) {
            a->failed = "config";
            return PYSSH_FAILED;
        }
    }
    /* Set after the configuration files, so that what the caller gave wins. */
    if (a->user != NULL) {
        SET(SSH_OPTIONS_USER, a->user, "user");
    }
    else if (a->default_user != NULL) {
        char *configured = NULL;
        if (ssh_options_get(ssh, SSH_OPTIONS_USER, &configured) == SSH_OK) {
            ssh_string_free_char(configured);
        }
        else {
            SET(SSH_OPTIONS_USER, a->default_user, "user");
        }
    }
    if (a->port != 0) {
        SET(SSH_OPTIONS_PORT, &a->port, "port");
    }
    if (a->known_hosts != NULL) {
        SET(SSH_OPTIONS_KNOWNHOSTS, a->known_hosts, "known_hosts");
    }
    if (a->ciphers != NULL) {
        SET(SSH_OPTIONS_CIPHERS_C_S, a->ciphers, "ciphers");
        SET(SSH_OPTIONS_CIPHERS_S_C, a->ciphers, "ciphers");
    }
    if (a->kex != NULL) {
        SET(SSH_OPTIONS_KEY_EXCHANGE, a->kex, "kex");
    }
    if (a->macs != NULL) {
        SET(SSH_OPTIONS_HMAC_C_S, a->macs, "macs");
        SET(SSH_OPTIONS_HMAC_S_C, a->macs, "macs");
    }
    if (a->hostkeys != NULL) {
        SET(SSH_OPTIONS_HOSTKEYS, a->hostkeys, "host_key_algorithms");
    }
    SET(SSH_OPTIONS_NODELAY, &on, "nodelay");
#undef SET
    return 0;
}

PyDoc_STRVAR(
    session_configure_doc,
    "_configure($self, /, host, *, user=None, port=0, ssh_dir=None, known_hosts=None,\n"
    "           config=None, verbose=0, default_user=None, ciphers=None,\n"
    "           kex=None, macs=None, host_key_algorithms=None, default_ciphers=None)\n--\n\n"
    "Set the session's options. `config` is None (no configuration files), True\n"
    "(~/.ssh/config then the system's) or a path. The caller's user and port win\n"
    "over the configuration. Returns (host, user, port) as they will be used.");

/* `config` as configure_step reads it: None or False (no files), True (the
 * default files) or a path, kept alive in *path. 0, or -1 with an exception. */
static int
configure_files(PyObject *config, struct configure_arg *a, PyObject **path)
{
    if (config == Py_True) {
        a->use_config = 1;
    }
    else if (config != Py_None && config != Py_False) {
        if (!PyUnicode_FSConverter(config, path)) {
            return -1;
        }
        a->use_config = 2;
        a->config = PyBytes_AS_STRING(*path);
    }
    return 0;
}

/* An option libssh refused is the caller's mistake, not a network failure:
 * turn configure_step's SSHError into one that names the argument. */
static void
configure_error(SessionObject *self, const struct configure_arg *a)
{
    if (a->failed == NULL || !PyErr_ExceptionMatches(self->state->exc[PYSSH_EXC_SSHError])) {
        return;
    }
    PyObject *exc, *val, *tb;
    PyErr_Fetch(&exc, &val, &tb);
    PyErr_NormalizeException(&exc, &val, &tb);
    if (strcmp(a->failed, "ciphers") == 0 || strcmp(a->failed, "kex") == 0 ||
        strcmp(a->failed, "macs") == 0 || strcmp(a->failed, "host_key_algorithms") == 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s: none of the names given is one this libssh supports, or one "
                     "is unknown (%S); `ssh -Q cipher`, `-Q kex`, `-Q mac` and `-Q key` "
                     "list OpenSSH's names",
                     a->failed, val);
    }
    else {
        pyssh_raise(self->state, PYSSH_EXC_SSHError, "invalid %s: %S", a->failed, val);
    }
    Py_XDECREF(exc);
    Py_XDECREF(val);
    Py_XDECREF(tb);
}

/* (host, user, port) as libssh will use them, the configuration files read. */
static PyObject *
configure_result(SessionObject *self)
{
    char *host = NULL, *user = NULL;
    unsigned int port = 22;
    pyssh_lock(self);
    ssh_session ssh = pyssh_session_ssh(self);
    if (ssh != NULL) {
        ssh_options_get(ssh, SSH_OPTIONS_HOST, &host);
        ssh_options_get(ssh, SSH_OPTIONS_USER, &user);
        if (ssh_options_get_port(ssh, &port) < 0 || port == 0) {
            port = 22;
        }
    }
    pyssh_unlock(self);
    PyObject *v[3] = {host != NULL ? PyUnicode_FromString(host) : Py_NewRef(Py_None),
                      user != NULL ? PyUnicode_FromString(user) : Py_NewRef(Py_None),
                      PyLong_FromUnsignedLong(port)};
    PyObject *result = pyssh_named_result(self->state->TargetType, v, 3);
    ssh_string_free_char(host);
    ssh_string_free_char(user);
    return result;
}

static PyObject *
session_configure(SessionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"host",
                             "user",
                             "port",
                             "ssh_dir",
                             "known_hosts",
                             "config",
                             "verbose",
                             "default_user",
                             "ciphers",
                             "kex",
                             "macs",
                             "host_key_algorithms",
                             "default_ciphers",
                             NULL};
    struct configure_arg a = {0};
    PyObject *ssh_dir = NULL, *known_hosts = NULL, *config = Py_None, *config_path = NULL;
    PyObject *result = NULL;

    CHECK_OPEN(self, NULL);
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "s|$zIO&O&Oizzzzzz:_configure", kwlist, &a.host, &a.user, &a.port,
            fspath_or_none, &ssh_dir, fspath_or_none, &known_hosts, &config, &a.log_level,
            &a.default_user, &a.ciphers, &a.kex, &a.macs, &a.hostkeys, &a.default_ciphers)) {
        return NULL;
    }
    if (a.log_level < 0 || a.log_level > 4) {
        PyErr_SetString(PyExc_ValueError, "verbose must be between 0 and 4");
        goto done;
    }
    if (a.port > 65535) {
        PyErr_SetString(PyExc_ValueError, "port must be between 1 and 65535");
        goto done;
    }
    if (configure_files(config, &a, &config_path) < 0) {
        goto done;
    }
    a.ssh_dir = ssh_dir ? PyBytes_AS_STRING(ssh_dir) : NULL;
    a.known_hosts = known_hosts ? PyBytes_AS_STRING(known_hosts) : NULL;
    pyssh_lock(self); /* read under the lock by other threads' steps (pyssh_log_attach) */
    self->log_level = a.log_level;
    pyssh_unlock(self);
    if (pyssh_call(self, configure_step, &a, PYSSH_EXC_SSHError, "setting options") < 0) {
        configure_error(self, &a);
        goto done;
    }
    result = configure_result(self);

done:
    Py_XDECREF(ssh_dir);
    Py_XDECREF(known_hosts);
    Py_XDECREF(config_path);
    return result;
}

/* ---- connecting ---------------------------------------------------------------- */

struct connect_arg {
    pyssh_socket_t fd;
    int started;
};

static int
connect_step(ssh_session ssh, void *p)
{
    struct connect_arg *a = p;
    if (!a->started) {
        a->started = 1;
        ssh_set_blocking(ssh, 0);
        if (a->fd != PYSSH_INVALID_SOCKET) {
            /* from here on libssh owns (and closes) the socket */
            if (ssh_options_set(ssh, SSH_OPTIONS_FD, &a->fd) < 0) {
                return PYSSH_FAILED;
            }
        }
    }
    int rc = ssh_connect(ssh);
    if (rc == SSH_OK) {
        return 0;
    }
    return rc == SSH_AGAIN ? PYSSH_AGAIN : PYSSH_FAILED;
}

/* The handshake is done (or failed): the session is connected, or can be
 * connected again by nobody (its socket is spent). */
static PyObject *
connect_finish(SessionObject *self, void *arg, int rc)
{
    (void)arg;
    (void)rc;
    pyssh_lock(self);
    self->connecting = 0;
    if (pyssh_session_ssh(self) != NULL) {
        PYSSH_ATOMIC_STORE_INT(&self->connected, 1);
    }
    pyssh_unlock(self);
    CHECK_OPEN(self, NULL);
    Py_RETURN_NONE;
}

static void
connect_release(SessionObject *self, void *arg)
{
    (void)arg;
    pyssh_lock(self);
    self->connecting = 0;
    pyssh_unlock(self);
}

static const pyssh_op_kind connect_kind = {"connecting",
                                           PYSSH_EXC_ConnectError,
                                           connect_step,
                                           sizeof(struct connect_arg),
                                           connect_finish,
                                           NULL,
                                           connect_release,
                                           NULL,
                                           NULL};

PyDoc_STRVAR(session_connect_doc,
             "_connect($self, /, fd=-1, timeout=None, what='connecting', defer=False)\n--\n\n"
             "Run the SSH handshake. `fd` is a connected socket, which the session takes over\n"
             "(closes) whatever happens; with -1 libssh connects itself (ProxyCommand). Waits\n"
             "at most `timeout` seconds; with `defer`, returns an Op instead of waiting.");

/* Take the socket and the right to connect, under the lock where the close reads
 * and clears them: the session owns the socket from here (close() closes it),
 * and `connecting` keeps a second _connect out, also when libssh makes the
 * socket (fd -1). 0, or -1 with an exception (the socket closed). */
static int
connect_begin(SessionObject *self, pyssh_socket_t fd)
{
    int state;
    pyssh_lock(self);
    if (pyssh_session_ssh(self) == NULL) {
        state = 1;
    }
    else if (self->connecting) {
        state = 2;
    }
    else if (self->connected || self->fd != PYSSH_INVALID_SOCKET) {
        state = 3;
    }
    else {
        state = 0;
        self->fd = fd;
        self->connecting = 1;
    }
    pyssh_unlock(self);
    if (state != 0) {
        pyssh_closesocket(fd);
        CHECK_OPEN(self, -1);
        pyssh_raise(self->state, PYSSH_EXC_SSHError,
                    state == 2 ? "the session is being connected by another call"
                               : "the session is already connected");
        return -1;
    }
    return 0;
}

static PyObject *
session_connect(SessionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "timeout", "what", "defer", NULL};
    long long fd = -1;
    /* total, so that a server that trickles packets cannot keep it from expiring */
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    const char *what = "connecting";
    int defer = 0;

    int parsed = PyArg_ParseTupleAndKeywords(args, kwds, "|LO&sp:_connect", kwlist, &fd,
                                             pyssh_total_deadline_conv, &dl, &what, &defer);
    struct connect_arg a = {fd < 0 ? PYSSH_INVALID_SOCKET : (pyssh_socket_t)fd, 0};
    if (!parsed) {
        pyssh_closesocket(a.fd); /* the session was given the socket, whatever happens */
        return NULL;
    }
    /* libssh runs non-blocking, its socket too: a send that blocked would stop
     * the thread that moves the jump hosts' bridges (a socketpair is blocking) */
    if (a.fd != PYSSH_INVALID_SOCKET && pyssh_socket_setup(a.fd) < 0) {
        int e = pyssh_socket_errno();
        pyssh_closesocket(a.fd);
        pyssh_set_socket_error(e);
        return NULL;
    }
    if (connect_begin(self, a.fd) < 0) {
        return NULL;
    }
    return pyssh_op_start(self, &connect_kind, &a, &dl, what, defer, NULL, args, kwds);
}

PyDoc_STRVAR(session_carry_doc,
             "_carry($self, tunnel, /)\n--\n\n"
             "ProxyJump: `tunnel` (a jump host's Tunnel, given the other end of this session's\n"
             "socket by adopt_local) is moved by this session's waits from now on, not by a\n"
             "thread of its own. Before _connect().");

static PyObject *
session_carry(SessionObject *self, PyObject *tunnel)
{
    if (!PyObject_TypeCheck(tunnel, self->state->TunnelType)) {
        return PyErr_Format(PyExc_TypeError, "_carry() takes a Tunnel, not %.100s",
                            Py_TYPE(tunnel)->tp_name);
    }
    CHECK_OPEN(self, NULL);
    /* `connecting` and `connected` are _connect's, written under the lock (from
     * any thread): looked at under it, and `connecting` taken meanwhile, so that
     * no _connect starts before `carrier` is set, under the lock too (the
     * _connect that follows takes the lock before its waits read it) */
    pyssh_lock(self);
    int free_to_carry =
        self->carrier == NULL && !PYSSH_ATOMIC_LOAD_INT(&self->connected) && !self->connecting;
    if (free_to_carry) {
        self->connecting = 1;
    }
    pyssh_unlock(self);
    if (!free_to_carry) {
        return pyssh_raise(self->state, PYSSH_EXC_SSHError,
                           "_carry() comes once, before the session connects");
    }
    /* a chain longer than the waits walk: refused where it is built (_jump.py).
     * The jump hosts' carriers were set before they connected: read as their
     * waits read them. */
    int depth = 1;
    for (SessionObject *s = pyssh_tunnel_session(tunnel); s->carrier != NULL;
         s = pyssh_tunnel_session(s->carrier)) {
        depth++;
    }
    int ok = depth <= PYSSH_MAX_HOPS;
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "at most %d jump hosts", PYSSH_MAX_HOPS);
    }
    else {
        ok = pyssh_tunnel_carry_start(tunnel) == 0;
    }
    pyssh_lock(self);
    if (ok) {
        self->carrier = Py_NewRef(tunnel);
    }
    self->connecting = 0;
    pyssh_unlock(self);
    if (!ok) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- host keys ----------------------------------------------------------------- */

PyDoc_STRVAR(session_server_key_doc,
             "_server_key($self, /)\n--\n\n"
             "The server's host key: (key_type, 'SHA256:...', 'aa:bb:..' SHA-1 hex, base64).");

static PyObject *
session_server_key(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_CONNECTED(self, NULL);
    ssh_key key = NULL;
    unsigned char *h256 = NULL, *h1 = NULL;
    size_t l256 = 0, l1 = 0;
    char *fp256 = NULL, *hex1 = NULL, *b64 = NULL;
    const char *type = NULL;
    int ok = 0;

    pyssh_lock(self);
    ssh_session ssh = pyssh_session_ssh(self);
    if (ssh != NULL && ssh_get_server_publickey(ssh, &key) == SSH_OK &&
        ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &h256, &l256) == 0 &&
        ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA1, &h1, &l1) == 0 &&
        ssh_pki_export_pubkey_base64(key, &b64) == SSH_OK) {
        fp256 = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, h256, l256);
        hex1 = ssh_get_hexa(h1, l1);
        type = ssh_key_type_to_char(ssh_key_type(key));
        ok = fp256 != NULL && hex1 != NULL && type != NULL;
    }
    pyssh_unlock(self);

    PyObject *result = NULL;
    if (ok) {
        PyObject *v[4] = {PyUnicode_FromString(type), PyUnicode_FromString(fp256),
                          PyUnicode_FromString(hex1), PyUnicode_FromString(b64)};
        result = pyssh_named_result(self->state->ServerKeyType, v, 4);
    }
    else if (pyssh_session_ssh(self) == NULL) {
        pyssh_raise(self->state, PYSSH_EXC_SessionClosedError, "the session is closed");
    }
    else {
        pyssh_raise(self->state, PYSSH_EXC_HostKeyError, "could not read the server's host key");
    }
    ssh_clean_pubkey_hash(&h256);
    ssh_clean_pubkey_hash(&h1);
    ssh_string_free_char(fp256);
    ssh_string_free_char(hex1);
    ssh_string_free_char(b64);
    ssh_key_free(key);
    return result;
}

PyDoc_STRVAR(session_set_host_key_algorithms_doc,
             "_set_host_key_algorithms($self, algorithms, /)\n--\n\n"
             "Set the host key algorithms offered, after _configure: pyssh offers host\n"
             "certificate algorithms first when known_hosts trusts a CA for the host.");

static PyObject *
session_set_host_key_algorithms(SessionObject *self, PyObject *arg)
{
    CHECK_OPEN(self, NULL);
    const char *algos = PyUnicode_AsUTF8(arg);
    if (algos == NULL) {
        return NULL;
    }
    pyssh_lock(self);
    ssh_session ssh = pyssh_session_ssh(self);
    int rc = ssh != NULL ? ssh_options_set(ssh, SSH_OPTIONS_HOSTKEYS, algos) : -1;
    pyssh_unlock(self);
    if (rc < 0) {
        PyErr_Format(PyExc_ValueError, "libssh does not accept the host key algorithms %R", arg);
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
known_step(ssh_session ssh, void *p)
{
    (void)p;
    enum ssh_known_hosts_e r = ssh_session_is_known_server(ssh);
    if (r == SSH_KNOWN_HOSTS_ERROR) {
        return PYSSH_FAILED;
    }
    /* OK 0, CHANGED 1, OTHER 2, UNKNOWN 3, NOT_FOUND 4: shifted to stay >= 0 */
    return (int)r + 1;
}

PyDoc_STRVAR(session_known_host_doc,
             "_known_host($self, /)\n--\n\n"
             "Look the server's key up in known_hosts: one of the KNOWN_HOST_* constants.");

static PyObject *
session_known_host(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_CONNECTED(self, NULL);
    int rc = pyssh_call(self, known_step, NULL, PYSSH_EXC_HostKeyError, "reading known_hosts");
    if (rc < 0) {
        return NULL;
    }
    return PyLong_FromLong(rc - 1);
}

static int
update_known_step(ssh_session ssh, void *p)
{
    (void)p;
    return ssh_session_update_known_hosts(ssh) == SSH_OK ? 0 : PYSSH_FAILED;
}

PyDoc_STRVAR(session_update_known_hosts_doc, "_update_known_hosts($self, /)\n--\n\n"
                                             "Append the server's key to the known_hosts file.");

static PyObject *
session_update_known_hosts(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_CONNECTED(self, NULL);
    if (pyssh_call(self, update_known_step, NULL, PYSSH_EXC_HostKeyError, "writing known_hosts") <
        0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ---- authentication ------------------------------------------------------------
 *
 * Every authentication takes a total deadline, as connecting does: a server
 * that trickles packets cannot keep it from expiring. */

static int
auth_none_step(ssh_session ssh, void *p)
{
    (void)p;
    return map_auth(ssh_userauth_none(ssh, NULL));
}

static int
auth_agent_step(ssh_session ssh, void *p)
{
    (void)p;
    return map_auth(ssh_userauth_agent(ssh, NULL));
}

struct password_arg {
    const char *password;
};

static int
auth_password_step(ssh_session ssh, void *p)
{
    return map_auth(ssh_userauth_password(ssh, NULL, ((struct password_arg *)p)->password));
}

static int
auth_kbdint_step(ssh_session ssh, void *p)
{
    (void)p;
    return map_auth(ssh_userauth_kbdint(ssh, NULL, NULL));
}

struct pubfile_arg {
    const char *path;
    ssh_key pub;
    const char *cert;              /* offer this certificate file instead of the key, or NULL */
    PyObject *path_obj, *cert_obj; /* the bytes path and cert point into */
};

static int
auth_try_pubkey_step(ssh_session ssh, void *p)
{
    struct pubfile_arg *a = p;
    if (a->pub == NULL && a->cert != NULL) {
        /* libssh offers a certificate as its *-cert-v01@openssh.com algorithm */
        if (ssh_pki_import_cert_file(a->cert, &a->pub) != SSH_OK) {
            a->pub = NULL;
            return KEY_BAD_CERT;
        }
    }
    if (a->pub == NULL) {
        size_t n = strlen(a->path);
        char *pubpath = malloc(n + 5);
        if (pubpath == NULL) {
            return KEY_NO_PUBLIC;
        }
        memcpy(pubpath, a->path, n);
        memcpy(pubpath + n, ".pub", 5);
        int rc = ssh_pki_import_pubkey_file(pubpath, &a->pub);
        free(pubpath);
        if (rc != SSH_OK) {
            a->pub = NULL;
            /* an OpenSSH private key file carries its public key in clear */
            if (ssh_pki_import_pubkey_file(a->path, &a->pub) != SSH_OK) {
                a->pub = NULL;
                return KEY_NO_PUBLIC;
            }
        }
    }
    return map_auth(ssh_userauth_try_publickey(ssh, NULL, a->pub));
}

struct privkey_arg {
    const char *data;
    const char *passphrase;
    ssh_key key;
    int asked;
    const char *cert;   /* the certificate file to sign in with, or NULL */
    PyObject *cert_obj; /* the bytes cert points into */
};

/* Attach the certificate file to the private key: ssh_userauth_publickey then
 * sends the certificate and signs with its algorithm. */
static int
attach_cert(ssh_key key, const char *path)
{
    ssh_key cert = NULL;
    int rc = ssh_pki_import_cert_file(path, &cert);
    if (rc == SSH_OK) {
        rc = ssh_pki_copy_cert_to_privkey(cert, key); /* fails unless it is the key's */
    }
    ssh_key_free(cert);
    return rc == SSH_OK ? 0 : -1;
}

/* Called by libssh when a key is encrypted and no passphrase was passed: never
 * prompt (OpenSSL would, on the terminal); remember that one was needed. */
static int
no_prompt(const char *prompt, char *buf, size_t len, int echo, int verify, void *userdata)
{
    (void)prompt;
    (void)buf;
    (void)len;
    (void)echo;
    (void)verify;
    ((struct privkey_arg *)userdata)->asked = 1;
    return SSH_ERROR;
}

static int
auth_privkey_step(ssh_session ssh, void *p)
{
    struct privkey_arg *a = p;
    if (a->key == NULL) {
        int rc = ssh_pki_import_privkey_base64(a->data, a->passphrase,
                                               a->passphrase ? NULL : no_prompt, a, &a->key);
        if (rc != SSH_OK) {
            a->key = NULL;
            return a->asked ? KEY_ENCRYPTED : KEY_UNUSABLE;
        }
        if (a->cert != NULL && attach_cert(a->key, a->cert) < 0) {
            return KEY_BAD_CERT;
        }
    }
    return map_auth(ssh_userauth_publickey(ssh, NULL, a->key));
}

static PyObject *
auth_finish(SessionObject *self, void *arg, int rc)
{
    (void)arg;
    if (rc == SSH_AUTH_SUCCESS && pyssh_session_ssh(self) == NULL) {
        return pyssh_raise(self->state, PYSSH_EXC_SessionClosedError, "the session is closed");
    }
    return PyLong_FromLong(rc);
}

#define AUTH_KIND(step, what, size, release)                                                       \
    {                                                                                              \
        what, PYSSH_EXC_AuthenticationError, step, size, auth_finish, NULL, release, NULL, NULL    \
    }

#define AUTH_METHOD(name, step, what, doc)                                                         \
    PyDoc_STRVAR(session_##name##_doc, #name "($self, /, timeout=None, defer=False)\n--\n\n" doc); \
    static const pyssh_op_kind name##_kind = AUTH_KIND(step, what, sizeof(int), NULL);             \
    static PyObject *session_##name(SessionObject *self, PyObject *args, PyObject *kwds)           \
    {                                                                                              \
        static char *kwlist[] = {"timeout", "defer", NULL};                                        \
        pyssh_deadline dl = PYSSH_NO_DEADLINE;                                                     \
        int defer = 0, unused = 0;                                                                 \
        if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O&p:" #name, kwlist,                        \
                                         pyssh_total_deadline_conv, &dl, &defer)) {                \
            return NULL;                                                                           \
        }                                                                                          \
        CHECK_CONNECTED(self, NULL);                                                               \
        return pyssh_op_start(self, &name##_kind, &unused, &dl, NULL, defer, NULL, args, kwds);    \
    }

AUTH_METHOD(_auth_none, auth_none_step, "authenticating (none)",
            "Try the 'none' method; returns an AUTH_* constant.")
AUTH_METHOD(_auth_agent, auth_agent_step, "authenticating with ssh-agent",
            "Try the keys of the ssh-agent at SSH_AUTH_SOCK; returns an AUTH_* constant.")

PyDoc_STRVAR(session_auth_list_doc,
             "_auth_list($self, /)\n--\n\n"
             "The methods the server allows (AUTH_METHOD_* bits), known after _auth_none().");

static int
auth_list_step(ssh_session ssh, void *p)
{
    (void)p;
    return ssh_userauth_list(ssh, NULL);
}

static PyObject *
session_auth_list(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_CONNECTED(self, NULL);
    int rc = pyssh_call(self, auth_list_step, NULL, PYSSH_EXC_AuthenticationError,
                        "listing authentication methods");
    return rc < 0 ? NULL : PyLong_FromLong(rc);
}

PyDoc_STRVAR(session_auth_password_doc,
             "_auth_password($self, password, /, timeout=None, defer=False)\n--\n\n"
             "Try the 'password' method; returns an AUTH_* constant.");

static const pyssh_op_kind password_kind = AUTH_KIND(
    auth_password_step, "authenticating with a password", sizeof(struct password_arg), NULL);

static PyObject *
session_auth_password(SessionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"", "timeout", "defer", NULL};
    struct password_arg a;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "s|O&p:_auth_password", kwlist, &a.password,
                                     pyssh_total_deadline_conv, &dl, &defer)) {
        return NULL;
    }
    CHECK_CONNECTED(self, NULL);
    return pyssh_op_start(self, &password_kind, &a, &dl, NULL, defer, NULL, args, kwds);
}

PyDoc_STRVAR(session_auth_try_pubkey_doc,
             "_auth_try_pubkey($self, path, /, timeout=None, cert=None, defer=False)\n--\n\n"
             "Ask whether the server would accept the public half of the key at `path` (from\n"
             "path.pub, or the OpenSSH private key file itself), without using the private key.\n"
             "With `cert` (a path), offer that certificate instead. Returns AUTH_SUCCESS (it\n"
             "would), AUTH_DENIED, KEY_NO_PUBLIC or KEY_BAD_CERT (unreadable certificate).");

static void
pubfile_release(SessionObject *self, void *arg)
{
    struct pubfile_arg *a = arg;
    (void)self;
    ssh_key_free(a->pub);
    Py_XDECREF(a->path_obj);
    Py_XDECREF(a->cert_obj);
}

static const pyssh_op_kind pubfile_kind = AUTH_KIND(auth_try_pubkey_step, "offering a public key",
                                                    sizeof(struct pubfile_arg), pubfile_release);

static PyObject *
session_auth_try_pubkey(SessionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"", "timeout", "cert", "defer", NULL};
    PyObject *path = NULL, *cert = NULL;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|O&O&p:_auth_try_pubkey", kwlist,
                                     PyUnicode_FSConverter, &path, pyssh_total_deadline_conv, &dl,
                                     fspath_or_none, &cert, &defer)) {
        Py_XDECREF(path);
        Py_XDECREF(cert);
        return NULL;
    }
    struct pubfile_arg a = {PyBytes_AS_STRING(path), NULL, cert ? PyBytes_AS_STRING(cert) : NULL,
                            path, cert};
    if (pyssh_session_check(self, PYSSH_NEED_CONNECTED) < 0) {
        pubfile_release(self, &a);
        return NULL;
    }
    return pyssh_op_start(self, &pubfile_kind, &a, &dl, NULL, defer, NULL, args, kwds);
}

PyDoc_STRVAR(
    session_auth_privkey_doc,
    "_auth_privkey($self, key, /, passphrase=None, timeout=None, cert=None, defer=False)\n--\n\n"
    "Authenticate with a private key given as its text (bytes, PEM or OpenSSH format).\n"
    "Returns an AUTH_* constant, KEY_ENCRYPTED (a passphrase is needed and none was\n"
    "given) or KEY_UNUSABLE (not a key libssh can read, or a wrong passphrase).\n"
    "With `cert` (a path), sign in with that certificate of the key, or KEY_BAD_CERT.");

static void
privkey_release(SessionObject *self, void *arg)
{
    struct privkey_arg *a = arg;
    (void)self;
    ssh_key_free(a->key);
    Py_XDECREF(a->cert_obj);
}

/* The step's callback (no_prompt) gets the argument: the copy's, once copied. */
static const pyssh_op_kind privkey_kind = AUTH_KIND(auth_privkey_step, "authenticating with a key",
                                                    sizeof(struct privkey_arg), privkey_release);

static PyObject *
session_auth_privkey(SessionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"", "passphrase", "timeout", "cert", "defer", NULL};
    const char *data;
    Py_ssize_t len;
    const char *passphrase = NULL;
    PyObject *cert = NULL;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y#|zO&O&p:_auth_privkey", kwlist, &data, &len,
                                     &passphrase, pyssh_total_deadline_conv, &dl, fspath_or_none,
                                     &cert, &defer)) {
        Py_XDECREF(cert);
        return NULL;
    }
    if ((Py_ssize_t)strlen(data) != len || pyssh_session_check(self, PYSSH_NEED_CONNECTED) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "the key text contains a NUL byte");
        }
        Py_XDECREF(cert);
        return NULL;
    }
    struct privkey_arg a = {data, passphrase, NULL, 0, cert ? PyBytes_AS_STRING(cert) : NULL, cert};
    return pyssh_op_start(self, &privkey_kind, &a, &dl, NULL, defer, NULL, args, kwds);
}

PyDoc_STRVAR(session_auth_kbdint_doc,
             "_auth_kbdint($self, responder, /, timeout=None, defer=False)\n--\n\n"
             "Try 'keyboard-interactive'. For each round of questions the server asks,\n"
             "responder(name, instruction, [(prompt, echo), ...]) is called (GIL held, outside\n"
             "libssh) and returns one answer (str) per prompt. Returns an AUTH_* constant.");

/* A text of libssh's (NULL: empty) as str; the server may send any bytes. */
static PyObject *
kbdint_text(const char *text)
{
    return PyUnicode_DecodeUTF8(text ? text : "", text ? (Py_ssize_t)strlen(text) : 0, "replace");
}

/* The round's prompts, [(prompt, echo), ...] (lock held, GIL held). */
static PyObject *
kbdint_prompts(ssh_session ssh)
{
    int n = ssh_userauth_kbdint_getnprompts(ssh);
    PyObject *prompts = PyList_New(0);
    for (int i = 0; prompts != NULL && i < n; i++) {
        char echo = 0;
        PyObject *q = kbdint_text(ssh_userauth_kbdint_getprompt(ssh, (unsigned)i, &echo));
        PyObject *item = q ? Py_BuildValue("(NO)", q, echo ? Py_True : Py_False) : NULL;
        if (item == NULL || PyList_Append(prompts, item) < 0) {
            Py_CLEAR(prompts); /* ends the loop */
        }
        Py_XDECREF(item);
    }
    return prompts;
}

/* The server's questions as the responder's arguments, (name, instruction,
 * prompts): copied out under the lock, for Python to see without it. NULL
 * with an exception (SessionClosedError when the session was closed). */
static PyObject *
kbdint_questions(SessionObject *self)
{
    PyObject *args = NULL;
    pyssh_lock(self);
    ssh_session ssh = pyssh_session_ssh(self);
    if (ssh != NULL) {
        args = Py_BuildValue("(NNN)", kbdint_text(ssh_userauth_kbdint_getname(ssh)),
                             kbdint_text(ssh_userauth_kbdint_getinstruction(ssh)),
                             kbdint_prompts(ssh));
    }
    pyssh_unlock(self);
    if (args == NULL && !PyErr_Occurred()) {
        CHECK_OPEN(self, NULL);
    }
    return args;
}

/* The responder's answers as a private tuple of `n` str: the UTF-8 pointers
 * taken from them are used under the session lock, whose wait releases the
 * GIL; the responder's own list could be emptied meanwhile (by another
 * thread), freeing the strings. Nothing else can reach this tuple. */
static PyObject *
kbdint_answers(PyObject *answers, Py_ssize_t n)
{
    PyObject *fast =
        PySequence_Fast(answers, "the keyboard-interactive responder must return a list of str");
    if (fast == NULL) {
        return NULL;
    }
    PyObject *seq = PySequence_Tuple(fast);
    Py_DECREF(fast);
    if (seq != NULL && PyTuple_GET_SIZE(seq) != n) {
        PyErr_Format(PyExc_ValueError,
                     "the keyboard-interactive responder returned %zd answers for %zd prompts",
                     PyTuple_GET_SIZE(seq), n);
        Py_CLEAR(seq);
    }
    return seq;
}

/* Give libssh the answers (a tuple from kbdint_answers). 0, or -1 with an
 * exception. */
static int
kbdint_set_answers(SessionObject *self, PyObject *seq)
{
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    const char **texts = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (texts == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyTuple_GET_ITEM(seq, i);
        if (!PyUnicode_Check(s) || (texts[i] = PyUnicode_AsUTF8(s)) == NULL) {
            PyMem_Free(texts);
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError, "keyboard-interactive answers must be str");
            }
            return -1;
        }
    }
    int set_failed = 0;
    pyssh_lock(self);
    ssh_session ssh = pyssh_session_ssh(self);
    for (Py_ssize_t i = 0; ssh != NULL && i < n; i++) {
        if (ssh_userauth_kbdint_setanswer(ssh, (unsigned)i, texts[i]) < 0) {
            set_failed = 1;
        }
    }
    pyssh_unlock(self);
    PyMem_Free(texts);
    if (set_failed) {
        pyssh_raise(self->state, PYSSH_EXC_AuthenticationError,
                    "keyboard-interactive: could not set the answers");
        return -1;
    }
    return 0;
}

/* One round of questions: ask the responder (GIL held, outside libssh), hand
 * its answers to libssh. 0, or -1 with an exception. */
static int
kbdint_round(SessionObject *self, PyObject *responder)
{
    PyObject *questions = kbdint_questions(self);
    if (questions == NULL) {
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(PyTuple_GET_ITEM(questions, 2));
    PyObject *answers = PyObject_Call(responder, questions, NULL);
    Py_DECREF(questions);
    if (answers == NULL) {
        return -1;
    }
    PyObject *seq = kbdint_answers(answers, n);
    Py_DECREF(answers);
    if (seq == NULL) {
        return -1;
    }
    int rc = kbdint_set_answers(self, seq);
    Py_DECREF(seq);
    return rc;
}

struct kbdint_arg {
    PyObject *responder;
    int round;
};

/* A round of questions goes to the responder (GIL held, between steps), and
 * its answers back to the server: step again. */
static PyObject *
kbdint_finish(SessionObject *self, void *arg, int rc)
{
    struct kbdint_arg *a = arg;
    if (rc != SSH_AUTH_INFO) {
        return auth_finish(self, arg, rc);
    }
    CHECK_CONNECTED(self, NULL);
    if (++a->round > 32) {
        return pyssh_raise(
            self->state, PYSSH_EXC_AuthenticationError,
            "keyboard-interactive: the server asked more than 32 rounds of questions");
    }
    return kbdint_round(self, a->responder) < 0 ? NULL : PYSSH_OP_MORE;
}

static const pyssh_op_kind kbdint_kind = {"keyboard-interactive authentication",
                                          PYSSH_EXC_AuthenticationError,
                                          auth_kbdint_step,
                                          sizeof(struct kbdint_arg),
                                          kbdint_finish,
                                          NULL,
                                          NULL,
                                          NULL,
                                          NULL};

static PyObject *
session_auth_kbdint(SessionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"", "timeout", "defer", NULL};
    struct kbdint_arg a = {NULL, 0};
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O&p:_auth_kbdint", kwlist, &a.responder,
                                     pyssh_total_deadline_conv, &dl, &defer)) {
        return NULL;
    }
    CHECK_CONNECTED(self, NULL);
    return pyssh_op_start(self, &kbdint_kind, &a, &dl, NULL, defer, NULL, args, kwds);
}

/* ---- information ------------------------------------------------------------------- */

PyDoc_STRVAR(session_algorithms_doc,
             "_algorithms($self, /)\n--\n\n"
             "A dict of what was negotiated: cipher, mac (each way), kex, server and client\n"
             "banners, the issue banner if any.");

static PyObject *
session_algorithms(SessionObject *self, PyObject *Py_UNUSED(ignored))
{
    CHECK_CONNECTED(self, NULL);
    PyObject *d = NULL;
    char *issue = NULL;
    pyssh_lock(self);
    ssh_session s = pyssh_session_ssh(self);
    if (s != NULL) {
        issue = ssh_get_issue_banner(s);
        d = Py_BuildValue("{s:z,s:z,s:z,s:z,s:z,s:z,s:z,s:z,s:i}", "cipher_in",
                          ssh_get_cipher_in(s), "cipher_out", ssh_get_cipher_out(s), "mac_in",
                          ssh_get_hmac_in(s), "mac_out", ssh_get_hmac_out(s), "kex",
                          ssh_get_kex_algo(s), "server_banner", ssh_get_serverbanner(s),
                          "client_banner", ssh_get_clientbanner(s), "issue_banner", issue,
                          "openssh_version", ssh_get_openssh_version(s));
    }
    pyssh_unlock(self);
    ssh_string_free_char(issue);
    if (d == NULL && !PyErr_Occurred()) {
        CHECK_OPEN(self, NULL);
    }
    return d;
}

/* ---- keepalive (wait.c does the work) ------------------------------------------- */

PyDoc_STRVAR(session_keepalive_doc,
             "_keepalive($self, interval, count_max, /)\n--\n\n"
             "While anything waits on the session, send the server a probe after `interval`\n"
             "seconds of silence (0: no more probes); once `count_max` probes went unanswered,\n"
             "waits fail with ConnectError. NotImplementedError: libssh lacks pyssh's patch.");

static PyObject *
session_keepalive(SessionObject *self, PyObject *args)
{
    double interval;
    int count_max;
    if (!PyArg_ParseTuple(args, "di:_keepalive", &interval, &count_max)) {
        return NULL;
    }
    if (!(interval >= 0 && interval <= 1e9) || count_max < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "the keepalive interval must be 0 (off) or a number of seconds, and "
                        "count_max at least 1");
        return NULL;
    }
    CHECK_CONNECTED(self, NULL);
    pyssh_lock(self);
    int rc = pyssh_session_ssh(self) != NULL ? pyssh_keepalive_start(self, interval, count_max) : 0;
    pyssh_unlock(self);
    if (rc < 0) {
        PyErr_SetString(PyExc_NotImplementedError,
                        "keepalive needs pyssh's libssh patch (vendor/patches/"
                        "libssh-*-keepalive.patch), which this libssh lacks: build libssh with "
                        "vendor/build.sh, or connect without keepalive_interval");
        return NULL;
    }
    CHECK_OPEN(self, NULL);
    Py_RETURN_NONE;
}

static PyObject *
session_get_connected(SessionObject *self, void *Py_UNUSED(closure))
{
    int up = 0;
    if (pyssh_session_ssh(self) != NULL && PYSSH_ATOMIC_LOAD_INT(&self->connected)) {
        pyssh_lock(self);
        /* a connection the keepalive found lost is down, whatever libssh thinks */
        ssh_session ssh = pyssh_session_ssh(self);
        up = ssh != NULL && ssh_is_connected(ssh) && self->ka.lost == 0;
        pyssh_unlock(self);
    }
    return PyBool_FromLong(up);
}

static PyObject *
session_get_closed(SessionObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(pyssh_session_ssh(self) == NULL);
}

static PyMethodDef session_methods[] = {
    {"close", (PyCFunction)session_close, METH_NOARGS, session_close_doc},
    {"_configure", (PyCFunction)(void (*)(void))session_configure, METH_VARARGS | METH_KEYWORDS,
     session_configure_doc},
    {"_connect", (PyCFunction)(void (*)(void))session_connect, METH_VARARGS | METH_KEYWORDS,
     session_connect_doc},
    {"_carry", (PyCFunction)session_carry, METH_O, session_carry_doc},
    {"_server_key", (PyCFunction)session_server_key, METH_NOARGS, session_server_key_doc},
    {"_set_host_key_algorithms", (PyCFunction)session_set_host_key_algorithms, METH_O,
     session_set_host_key_algorithms_doc},
    {"_known_host", (PyCFunction)session_known_host, METH_NOARGS, session_known_host_doc},
    {"_update_known_hosts", (PyCFunction)session_update_known_hosts, METH_NOARGS,
     session_update_known_hosts_doc},
    {"_auth_none", (PyCFunction)(void (*)(void))session__auth_none, METH_VARARGS | METH_KEYWORDS,
     session__auth_none_doc},
    {"_auth_list", (PyCFunction)session_auth_list, METH_NOARGS, session_auth_list_doc},
    {"_auth_agent", (PyCFunction)(void (*)(void))session__auth_agent, METH_VARARGS | METH_KEYWORDS,
     session__auth_agent_doc},
    {"_auth_password", (PyCFunction)(void (*)(void))session_auth_password,
     METH_VARARGS | METH_KEYWORDS, session_auth_password_doc},
    {"_auth_try_pubkey", (PyCFunction)(void (*)(void))session_auth_try_pubkey,
     METH_VARARGS | METH_KEYWORDS, session_auth_try_pubkey_doc},
    {"_auth_privkey", (PyCFunction)(void (*)(void))session_auth_privkey,
     METH_VARARGS | METH_KEYWORDS, session_auth_privkey_doc},
    {"_auth_kbdint", (PyCFunction)(void (*)(void))session_auth_kbdint, METH_VARARGS | METH_KEYWORDS,
     session_auth_kbdint_doc},
    {"_algorithms", (PyCFunction)session_algorithms, METH_NOARGS, session_algorithms_doc},
    {"_keepalive", (PyCFunction)session_keepalive, METH_VARARGS, session_keepalive_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef session_getset[] = {
    {"connected", (getter)session_get_connected, NULL,
     "True while the connection to the server is up.", NULL},
    {"closed", (getter)session_get_closed, NULL, "True once close() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef session_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SessionObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot session_slots[] = {
    {Py_tp_new, session_new},
    {Py_tp_dealloc, session_dealloc},
    {Py_tp_traverse, session_traverse},
    {Py_tp_methods, session_methods},
    {Py_tp_getset, session_getset},
    {Py_tp_members, session_members},
    {Py_tp_doc, "Session()\n--\n\nA libssh session (the C half of pyssh.Session)."},
    {0, NULL},
};

static PyType_Spec session_spec = {
    .name = "pyssh._ssh.Session",
    .basicsize = sizeof(SessionObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = session_slots,
};

int
pyssh_session_setup_type(PyObject *module, pyssh_state *st)
{
    st->SessionType = (PyTypeObject *)PyType_FromModuleAndSpec(module, &session_spec, NULL);
    if (st->SessionType == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->SessionType) < 0) {
        return -1;
    }
#define C(name)                                                                                    \
    if (PyModule_AddIntConstant(module, #name, name) < 0)                                          \
    return -1
    C(KEY_ENCRYPTED);
    C(KEY_UNUSABLE);
    C(KEY_NO_PUBLIC);
    C(KEY_BAD_CERT);
#undef C
    return 0;
}

int
pyssh_is_session(PyObject *obj)
{
    /* by the C type's dealloc, found on the type or a base: one function per
     * process, whatever module object (interpreter) made the type */
    for (PyTypeObject *t = Py_TYPE(obj); t != NULL; t = t->tp_base) {
        if (t->tp_dealloc == (destructor)session_dealloc) {
            return 1;
        }
    }
    return 0;
}
