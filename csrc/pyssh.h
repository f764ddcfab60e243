/* pyssh: the one header shared by the C files of the extension pyssh._ssh.
 *
 * Layout (after CPython's Modules/_sqlite): module.c holds init, module state,
 * constants and the named results; errors.c the exception table and the one
 * classification of failures (by libssh's state and codes) into exception
 * classes; wait.c the one helper that waits on the network with the GIL
 * released, and the one timeout converter; chanio.c (chanio.h) the one
 * channel-I/O core that every channel user goes through; session.c the Session
 * type and the one state check; op.c and driver.c the operations a method makes
 * instead of waiting (defer=True), and the Driver that moves many of them from
 * one poll() (pyssh.Group); channel.c, sftp.c, tunnel.c the types that use
 * channels; capi.c the C API; scp.c, sftpproto.c, names.c the checks of what a
 * server sends; guard.c the answers to what it opens and asks; platform.h and
 * platform.c everything that differs between operating systems (no other file
 * has an OS #ifdef). */
#ifndef PYSSH_H
#define PYSSH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include "platform.h"
#include "sftpproto.h"

#ifndef LIBSSH_STATIC
#define LIBSSH_STATIC 1
#endif
#include <libssh/libssh.h>
#include <libssh/callbacks.h>

#if PY_VERSION_HEX < 0x030A0000
static inline int
PyModule_AddObjectRef(PyObject *m, const char *name, PyObject *v)
{
    Py_XINCREF(v);
    int r = PyModule_AddObject(m, name, v);
    if (r < 0) {
        Py_XDECREF(v);
    }
    return r;
}
#endif

#if PY_VERSION_HEX < 0x030A00A3
static inline PyObject *
Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
static inline PyObject *
Py_XNewRef(PyObject *o)
{
    Py_XINCREF(o);
    return o;
}
#endif

#if LIBSSH_VERSION_INT < SSH_VERSION_INT(0, 11, 5)
#error "pyssh needs libssh 0.11.5 or newer: build it with vendor/build.sh"
#endif

/* libssh's socket_t (SSH_OPTIONS_FD takes a pointer to one) is pyssh_socket_t. */
typedef char pyssh_socket_t_is_libssh_socket_t[sizeof(socket_t) == sizeof(pyssh_socket_t) ? 1 : -1];

/* ---- module state ------------------------------------------------------ */

/* The exception classes, in the order of the table in errors.c. */
enum pyssh_exc {
    PYSSH_EXC_SSHError,
    PYSSH_EXC_ConnectError,
    PYSSH_EXC_SSHTimeoutError,
    PYSSH_EXC_AuthenticationError,
    PYSSH_EXC_HostKeyError,
    PYSSH_EXC_UnknownHostKeyError,
    PYSSH_EXC_HostKeyMismatchError,
    PYSSH_EXC_HostKeyRevokedError,
    PYSSH_EXC_SessionClosedError,
    PYSSH_EXC_PrivateKeyError,
    PYSSH_EXC_CommandError,
    PYSSH_EXC_SCPError,
    PYSSH_EXC_SCPProtocolError,
    PYSSH_EXC_SCPFileNotFoundError,
    PYSSH_EXC_SCPPermissionError,
    PYSSH_EXC_SFTPError,
    PYSSH_EXC_SFTPFileNotFoundError,
    PYSSH_EXC_SFTPPermissionError,
    PYSSH_EXC_SFTPFileExistsError,
    PYSSH_EXC_SFTPIsADirectoryError,
    PYSSH_EXC_SFTPNotADirectoryError,
    PYSSH_EXC_COUNT
};

typedef struct {
    PyTypeObject *SessionType;
    PyTypeObject *ChannelType;
    PyTypeObject *TunnelType;
    PyTypeObject *SFTPType;
    PyTypeObject *KeyType;    /* key.c */
    PyTypeObject *OpType;     /* op.c */
    PyTypeObject *DriverType; /* driver.c */
    /* named results (struct sequences, module.c) */
    PyTypeObject *RunResultType;
    PyTypeObject *SFTPAttrsType;
    PyTypeObject *SFTPTransferType;
    PyTypeObject *SFTPReadType;
    PyTypeObject *TunnelCountsType;
    PyTypeObject *TargetType;
    PyTypeObject *ServerKeyType;
    PyTypeObject *SFTPNameType;
    PyTypeObject *ChannelRecvType;
    PyTypeObject *ExitInfoType;
    PyObject *exc[PYSSH_EXC_COUNT];
    PyObject *logger; /* logging.getLogger("pyssh"), fetched by the module's exec */
} pyssh_state;

extern PyModuleDef pyssh_module_def;

pyssh_state *pyssh_state_from_type(PyTypeObject *type);

/* A named result (a struct sequence of `type`) of the `n` values v[], whose
 * references it steals; NULL (with the exception set) when one of them is
 * NULL, all released. Results cross the C/Python boundary as these, never as
 * bare tuples. */
PyObject *pyssh_named_result(PyTypeObject *type, PyObject **v, int n);

/* Make the heap type of `spec` for `module`, keep it in *slot (module state)
 * and add it to the module: 0, or -1 with an exception set. */
int pyssh_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot);

/* ---- errors.c ------------------------------------------------------------ */

int pyssh_errors_init(PyObject *module, pyssh_state *st);
int pyssh_errors_traverse(pyssh_state *st, visitproc visit, void *arg);
void pyssh_errors_clear(pyssh_state *st);

/* Raise exception class `which` with a printf-style message. Returns NULL. */
PyObject *pyssh_raise(pyssh_state *st, enum pyssh_exc which, const char *fmt, ...);

/* Text from the server (bytes) made safe to print, by the one sanitizer
 * (pyssh._names.printable): a new str, or NULL with an exception. */
PyObject *pyssh_printable(const char *text, size_t n);

/* A libssh failure as a step saw it, read under the session lock: libssh's
 * message (for people only: it is never matched), its error code, whether the
 * connection itself is gone (libssh's state says so), and whether the step
 * said the server refused to open a channel (PYSSH_REFUSED). */
typedef struct {
    char text[512];
    int code; /* ssh_get_error_code(): SSH_NO_ERROR, SSH_REQUEST_DENIED, SSH_FATAL */
    int dead;
    int refused;
    /* > 0: the keepalive found the connection lost: the server sent nothing for
     * `silent` seconds, with `count_max` probes `interval` apart unanswered */
    double silent, interval;
    int count_max;
} pyssh_failure;

/* The one classification of a failure (errors.c), by state and code. */
enum pyssh_fail_kind {
    PYSSH_FAIL_PLAIN,   /* the operation failed: the caller's class */
    PYSSH_FAIL_LOST,    /* the connection is gone: ConnectError, connect again */
    PYSSH_FAIL_REFUSED, /* the server refused a channel: the caller's class, with a
                           hint about its limit of channels (MaxSessions) */
};
enum pyssh_fail_kind pyssh_failure_kind(const pyssh_failure *f);

/* Raise for a failed step: `what` says what pyssh was doing ("connecting to
 * host:22"); the class is `fallback`, or ConnectError for a lost connection
 * (`fallback` ConnectError: connecting, where a dead connection is the
 * connect's own failure). Returns NULL. */
PyObject *pyssh_raise_failure(pyssh_state *st, enum pyssh_exc fallback, const char *what,
                              const pyssh_failure *f);
/* The same message, without the GIL (the C API), into buf; returns the class
 * pyssh_raise_failure would raise. libssh's text is not made printable. */
enum pyssh_exc pyssh_failure_describe(const pyssh_failure *f, enum pyssh_exc fallback,
                                      const char *what, char *buf, size_t n);

/* ---- the Session object -------------------------------------------------- */

typedef struct pyssh_logmsg {
    struct pyssh_logmsg *next;
    int priority;
    char text[];
} pyssh_logmsg;

typedef struct {
    pyssh_logmsg *head;
    pyssh_logmsg **tail;
    size_t count;
    size_t dropped;
} pyssh_logq;

struct pyssh_waiter;

/* wait.c: the keepalive (connect's keepalive_interval, OpenSSH's
 * ServerAliveInterval), under the session lock: while anything waits, a
 * server silent for `interval` seconds is sent a probe, and the connection
 * counts as lost once `count_max` probes in a row went unanswered for an
 * interval each. */
typedef struct {
    double interval;  /* 0: off */
    int count_max;    /* >= 1 */
    int sent;         /* probes sent since the server last sent anything */
    uint64_t packets; /* rcounter.in_packets when last looked at */
    double heard;     /* when a packet was last seen arriving (monotonic) */
    double next;      /* when the next probe is due */
    double lost;      /* > 0: found lost, the server silent this many seconds */
} pyssh_keepalive;

/* guard.c: the session's answers to what the server opens and asks */
typedef struct {
    struct ssh_callbacks_struct cb; /* libssh keeps a pointer: lives in the session */
    unsigned long opens;            /* channel opens refused */
    unsigned long requests;         /* global and channel requests declined */
} pyssh_guard;

typedef struct {
    PyObject_HEAD pyssh_state *state;
    ssh_session ssh;         /* NULL once closed: cleared without the lock (see
                                    pyssh_session_ssh), freed under it */
    PyThread_type_lock lock; /* one thread in libssh at a time; only ever waited
                                    for with the GIL released */
    int log_level;           /* libssh log level, 0-4 */
    int connected;           /* the transport is up (key exchange done); written under
                                    the lock, atomically: the state check reads it without */
    int connecting;          /* a _connect is under way (lock held) */
    pyssh_socket_t fd;       /* the socket pyssh gave libssh (SSH_OPTIONS_FD): libssh
                                    does not close such a socket, the close below does */
    long pid;                /* creator's pid: a forked child skips the goodbye */
    pyssh_logq logq;         /* libssh log lines, queued without the GIL */
    ssh_event event;         /* the session's socket, for ssh_event_dopoll (channel.c);
                                    created on first use, freed by the close */
    /* wait.c, all under the lock: the threads waiting in pyssh_wait_ex, spare
     * wake pipes, and libssh's count of packets read (a step that read packets
     * wakes the other waiters: the packets may be theirs) */
    struct pyssh_waiter *waiters;
    struct pyssh_waiter *spare;
    struct ssh_counter_struct rcounter;
    void *rforwards;    /* tunnel.c: the remote forwards (ssh -R) on this session */
    void *agent;        /* tunnel.c: the tunnel that forwards the agent (ssh -A), or NULL:
                          while there is one, every command's channel asks for it */
    pyssh_guard guard;  /* guard.c; its callbacks run with the lock held */
    double rtt;         /* chanio.c: the shortest channel open seen, seconds (0: none
                          yet): the path's round trip, which sizes receive windows */
    pyssh_keepalive ka; /* wait.c */
    /* ProxyJump: the jump host's Tunnel whose one connection is this session's
     * socket (tunnel.c, pyssh_tunnel_carry), moved by this session's waits; or
     * NULL. Set once before connecting, under the lock (its _connect takes the
     * lock before any wait reads it); released by dealloc. */
    PyObject *carrier;
    PyObject *weakreflist;
} SessionObject;

int pyssh_session_setup_type(PyObject *module, pyssh_state *st);

/* The session's handle, or NULL once closed: every read after tp_new goes
 * through here. close() clears it before it takes the lock (so every method
 * sees the session closed at once), so the lock does not order that store and
 * the reads, nor does the GIL where there is none: both are atomic. The handle
 * itself is freed under the lock, so one read under the lock stays usable
 * until the lock is dropped; read it once there, not again. */
static inline ssh_session
pyssh_session_ssh(SessionObject *s)
{
    return PYSSH_ATOMIC_LOAD_PTR(&s->ssh);
}

/* ---- channel.c: pyssh._ssh.Channel ----------------------------------------- */

/* scp.c: the SCP message parser, as module functions, and for C callers */
extern PyMethodDef pyssh_scp_methods[];
int pyssh_scp_parse(const char *line, size_t len, int *kind, unsigned long long *size,
                    const char **text, size_t *text_len, const char **why);
/* What an error line from the server's scp says went wrong, by the strerror
 * text it ends with (scp.c documents the table). SCP_ERROR_* for Python. */
enum pyssh_scp_error { PYSSH_SCP_OTHER, PYSSH_SCP_NOT_FOUND, PYSSH_SCP_PERMISSION };
int pyssh_scp_error_kind(const char *text, size_t n);
int pyssh_scp_setup(PyObject *module);

/* names.c: NULL when name[0:n], from a server, is safe as one component of a
 * local path (with Windows' rules too when `windows`); otherwise why not. And
 * name_problem() for Python. */
const char *pyssh_name_problem(const char *name, size_t n, int windows);
extern PyMethodDef pyssh_names_methods[];

/* sftp.c: a striped transfer starts no request this far past the lowest one
 * still in flight, so whatever it leaves behind when it stops (a hole in the
 * remote file) lies within this much of the end of what was written; Python's
 * resume of an upload goes back that far (module constant SFTP_STRIPE_AHEAD). */
#define PYSSH_SFTP_STRIPE_AHEAD (64 << 20)

/* agentcert.c: _auth_agent_certificate(), with a libssh that has pyssh's patch
 * for it (PYSSH_LIBSSH_AGENT_KEY); empty without. */
extern PyMethodDef pyssh_agentcert_methods[];

/* session.c: is `obj` a Session (the C type or a subclass)? Any thread. */
int pyssh_is_session(PyObject *obj);

/* ---- session.c: the one state check (pycurl's check_curl_state) ------------- */

/* What a method needs of its session. */
enum pyssh_need { PYSSH_NEED_NOTHING, PYSSH_NEED_OPEN, PYSSH_NEED_CONNECTED };

/* The session is as `need` says: 0, or -1 with the one exception for it
 * (SessionClosedError: closed; SSHError: not connected yet). */
int pyssh_session_check(SessionObject *s, enum pyssh_need need);

/* An object's claim: which method holds it (NULL: none). Read and written only
 * through pyssh_claim_take, pyssh_claim_holder and pyssh_unclaim, atomically:
 * without the GIL (a free-threaded CPython) two threads may claim at once. */
typedef struct {
    const char *method;
} pyssh_claim;

/* The state check at the top of every method of Channel, SFTP and Tunnel,
 * which also claims the object (`kind`: "channel", "SFTP channel", "tunnel")
 * for `method`: the claim is found free and taken in one atomic step, before
 * any Python code runs or the GIL is released, so that nothing slips in
 * between. Checks, in this order: in use by another call (RuntimeError), the
 * session (pyssh_session_check). Returns -1 with an exception set and the
 * claim not held; the caller releases it on every other way out
 * (pyssh_unclaim). */
int pyssh_claim_take(pyssh_claim *c, SessionObject *s, const char *kind, const char *method,
                     enum pyssh_need need);
/* The method holding the claim now, or NULL. */
const char *pyssh_claim_holder(const pyssh_claim *c);
void pyssh_unclaim(pyssh_claim *c);

/* capi.c: the C API capsule, pyssh._ssh._C_API (pyssh/include/pyssh_capi.h) */
int pyssh_capi_setup(PyObject *module);

/* The heap types' specs of the files that need no more set-up (module.c adds them). */
extern PyType_Spec pyssh_channel_spec, pyssh_sftp_spec, pyssh_tunnel_spec;
extern PyType_Spec pyssh_key_spec; /* key.c: pyssh._ssh.Key */

/* ---- guard.c: what the server may open and ask ------------------------------ */

/* Install the answers to the server's channel opens, global requests and channel
 * requests on a new session (before it connects): everything is refused at
 * once but forwarded-tcpip for a remote forward of the session's, and
 * auth-agent@openssh.com when the session forwards the agent (tunnel.c). */
void pyssh_guard_setup(SessionObject *self);

/* ---- tunnel.c: pyssh._ssh.Tunnel ------------------------------------------- */

/* A forwarded-tcpip channel the server opens for `port` (lock held, inside
 * libssh): a new channel handed to the remote forward listening on that port,
 * which libssh then confirms; or NULL with *why set: no forward of this
 * session's listens there, or TUNNEL_BACKLOG connections already wait for it. */
ssh_channel pyssh_tunnel_forwarded(SessionObject *s, ssh_session ssh, int port, const char *orig,
                                   int orig_port, const char **why);

/* An auth-agent@openssh.com channel the server opens (lock held, inside libssh):
 * a new channel handed to the session's agent tunnel, which libssh then
 * confirms; or NULL with *why set: the session forwards no agent, or
 * AGENT_MAX agent channels are open already. */
ssh_channel pyssh_tunnel_agent(SessionObject *s, ssh_session ssh, const char **why);
/* A forwarded-streamlocal@openssh.com open for the socket `path` the session's
 * remote forward asked the server to listen on: as pyssh_tunnel_forwarded. */
ssh_channel pyssh_tunnel_forwarded_unix(SessionObject *s, ssh_session ssh, const char *path,
                                        const char **why);

/* A session channel just opened for a command (lock held): ask the server to
 * forward the agent on it when the session forwards one. No reply is wanted
 * (libssh, as OpenSSH): a server that refuses (AllowAgentForwarding no) says
 * nothing, and the command runs without an agent. 0, or PYSSH_FAILED (the
 * request could not be sent: the connection is gone). */
int pyssh_tunnel_agent_request(SessionObject *s, ssh_channel chan);

/* ProxyJump, without a thread per hop: the Tunnel of a jump host's session
 * that adopt_local gave the next session's socket becomes that session's
 * carrier (its Session._carry, GIL held): 0, or -1 with an exception (not such
 * a tunnel, or carrying already). From then on the carried session's waits
 * move its data, one non-blocking step at a time (pyssh_tunnel_carry, GIL
 * released, the jump host's lock taken and released inside): `fds` gets what
 * to poll for it (the jump host's socket, the bridge's socket; unused slots
 * PYSSH_INVALID_SOCKET). Returns 1 while it carries, 0 once the bridge is gone
 * (the jump host's session failed or closed, or it could not reach the next
 * host): `why` (n bytes) then says why, for the carried session's error.
 * pyssh_tunnel_carry_end sends what is left and closes the bridge (the carried
 * session's close). */
int pyssh_tunnel_carry_start(PyObject *tunnel);
int pyssh_tunnel_carry(PyObject *tunnel, pyssh_pollfd fds[2], pyssh_logmsg **logs, char *why,
                       size_t n);
void pyssh_tunnel_carry_end(PyObject *tunnel);
SessionObject *pyssh_tunnel_session(PyObject *tunnel);
/* The longest chain of jump hosts (pyssh/_jump.py says so to the caller). */
#define PYSSH_MAX_HOPS 16

/* ---- sftp.c: pyssh._ssh.SFTP ----------------------------------------------- */

/* ---- wait.c: the one blocking loop --------------------------------------- */

/* Module exec: learn which thread is Python's main thread. 0, or -1. */
int pyssh_wait_init(void);

/* Result of one step of a non-blocking operation. */
#define PYSSH_AGAIN  (-2) /* not finished: wait for the socket, then step again */
#define PYSSH_FAILED (-1) /* libssh failed: its message is in the session */
/* The server refused to open a channel (SSH_REQUEST_DENIED): fails as
 * PYSSH_FAILED does, classified PYSSH_FAIL_REFUSED. */
#define PYSSH_REFUSED (-6)
/* >= 0: finished, with this result */

/* A step's result for libssh's SSH_OK / SSH_AGAIN / SSH_ERROR from an
 * ssh_channel_open_*() call (lock held): 0, PYSSH_AGAIN, PYSSH_REFUSED when
 * the server refused the channel, or PYSSH_FAILED. */
int pyssh_open_result(ssh_session ssh, int rc);

/* One step: called with the GIL released and the session lock held, with a
 * session that is open. It must not block. */
typedef int (*pyssh_step_fn)(ssh_session ssh, void *arg);

/* One timeout, converted once where it enters from Python (pyssh_deadline_conv)
 * and passed down: `timeout` seconds (< 0: none). An inactivity deadline
 * (the default) means "no progress for `timeout` seconds": a step that moves
 * data for its operation calls pyssh_deadline_touch, which pushes `expires`
 * back, so a slow transfer that keeps moving is never cut off while a stalled
 * peer ends in SSHTimeoutError. A total deadline (connecting) is never pushed
 * back. */
typedef struct {
    double timeout;
    double expires; /* monotonic time */
    int total;
} pyssh_deadline;

#define PYSSH_NO_DEADLINE                                                                          \
    {                                                                                              \
        -1.0, 0.0, 0                                                                               \
    }

void pyssh_deadline_start(pyssh_deadline *d, double timeout, int total);
void pyssh_deadline_touch(pyssh_deadline *d);
/* "O&" converters for a timeout argument, the one place a timeout enters from
 * Python: None (none), or an int or float (a negative one is 0), as a
 * pyssh_deadline started now; pyssh_total_deadline_conv makes a total one
 * (connecting). Only int and float (and their subclasses, read without
 * calling any method) are taken: converting runs no Python code, so it can
 * precede the method's state check. Anything else is a TypeError. */
int pyssh_deadline_conv(PyObject *obj, void *deadline);
int pyssh_total_deadline_conv(PyObject *obj, void *deadline);
/* The one timeout error: SSHTimeoutError naming `what` and the timeout given. */
void pyssh_raise_timeout(pyssh_state *st, const char *what, const pyssh_deadline *d);

/* Run `step` until it finishes: between steps wait for the session socket with
 * poll() in slices of at most 100 ms (GIL released, session lock not held),
 * retry on EINTR, run signal handlers (Ctrl-C raises KeyboardInterrupt) and
 * honour the deadline `d` (NULL: none; the step may touch it). Returns the
 * step's result (>= 0), or -1 with an exception set: `fail_exc` for a libssh
 * failure, ConnectError for a lost connection (also when the keepalive finds
 * it lost), SSHTimeoutError, SessionClosedError or whatever a signal handler
 * raised. `what` names the operation for messages. */
int pyssh_wait(SessionObject *self, pyssh_step_fn step, void *arg, pyssh_deadline *d,
               enum pyssh_exc fail_exc, const char *what);

/* A waiting thread's wake-up: a pipe (a socket pair on Windows) polled beside
 * the session's socket. Another thread's step that read packets rings it (they
 * may be for this thread's channels), and so may whoever wants the waiter to
 * look again (Tunnel.stop). */
typedef struct pyssh_waiter {
    pyssh_socket_t rd, wr;
    int rung;                  /* a byte is on its way (session lock held) */
    struct pyssh_waiter *next; /* in the session's list of waiters, or of spares */
} pyssh_waiter;

int pyssh_waiter_open(pyssh_waiter *w); /* 0, or an error for pyssh_set_socket_error */
void pyssh_waiter_close(pyssh_waiter *w);
void pyssh_waiter_ring(pyssh_waiter *w); /* any thread, no lock needed */
/* Ring every waiter of the session (lock held): it is closing. */
void pyssh_waiters_ring_all(SessionObject *self);
/* Close the spare pipes (lock held, or the session unreachable). */
void pyssh_waiters_free_spare(SessionObject *self);

/* What a step wants watched besides the session's socket: slots
 * [PYSSH_POLL_RESERVED, n) of `fds` are the step's, with their events; the
 * wait helper fills the first slots (the session's socket, the wake pipe),
 * polls them all and leaves each revents for the next step. `wait_ms` >= 0
 * caps the next wait (a deadline of the step's own). */
#define PYSSH_POLL_RESERVED 2
typedef struct {
    pyssh_pollfd *fds;
    int n;
    int wait_ms;
} pyssh_pollset;

/* pyssh_wait, also polling `ps` (may be NULL) and waking on `w` (NULL: a spare
 * pipe of the session's is used). Between slices of at most 100 ms it takes
 * the GIL back to run signal handlers; within a slice it steps and polls
 * without the GIL. */
int pyssh_wait_ex(SessionObject *self, pyssh_step_fn step, void *arg, pyssh_deadline *d,
                  enum pyssh_exc fail_exc, const char *what, pyssh_pollset *ps, pyssh_waiter *w);

/* pyssh_wait for callers WITHOUT the GIL (the C API, capi.c): no signal
 * checks, no exceptions. Returns the step's result (>= 0), PYSSH_FAILED with
 * *fail filled in (classify it with pyssh_failure_describe), PYSSH_CLOSED,
 * PYSSH_TIMEDOUT, or PYSSH_OSERROR with *os_err set (poll failed). libssh's
 * log lines are kept for the next Python call on the session. */
#define PYSSH_CLOSED   (-3)
#define PYSSH_TIMEDOUT (-4)
#define PYSSH_OSERROR  (-5)
int pyssh_wait_nogil_ex(SessionObject *self, pyssh_step_fn step, void *arg, double timeout,
                        pyssh_failure *fail, int *os_err);

/* Start the keepalive (lock held, the session authenticated): a probe after
 * `interval` seconds of silence (0: stop), the connection lost after
 * `count_max` (>= 1) unanswered ones. Without pyssh's libssh patch
 * (PYSSH_LIBSSH_KEEPALIVE) there is no way to send a probe: returns -1. */
int pyssh_keepalive_start(SessionObject *self, double interval, int count_max);

/* Run `step` once, holding the lock with the GIL released (for short local
 * libssh calls). Returns as pyssh_wait does; PYSSH_AGAIN is returned as is. */
int pyssh_call(SessionObject *self, pyssh_step_fn step, void *arg, enum pyssh_exc fail_exc,
               const char *what);

/* Take / drop the session lock from code that holds the GIL: the GIL is released
 * while waiting. Log lines queued meanwhile go to Python by pyssh_log_flush. */
void pyssh_lock(SessionObject *self);
void pyssh_unlock(SessionObject *self);

/* Route libssh's (thread-local) logging of the calling thread to the session's
 * queue. Called with the lock held, before any libssh call. */
void pyssh_log_attach(SessionObject *self);
/* Detach the queued lines (lock held) and hand them to logging (GIL held). */
pyssh_logmsg *pyssh_log_take(SessionObject *self);
void pyssh_log_emit(SessionObject *self, pyssh_logmsg *msgs);
void pyssh_log_discard(pyssh_logq *q);
void pyssh_log_finish(SessionObject *self, pyssh_logmsg *msgs, int emit);
/* Queue a line of pyssh's own for the "pyssh" logger (lock held, GIL not needed).
 * `priority` is a libssh one (SSH_LOG_WARNING is logging.WARNING), or
 * PYSSH_LOG_ERROR for logging.ERROR. */
#define PYSSH_LOG_ERROR SSH_LOG_NOLOG
void pyssh_log_queue(SessionObject *self, int priority, const char *fmt, ...);

/* Call progress(moved) when *next (> 0: reports wanted) has passed or the
 * operation `finished`; then set *next PYSSH_PROGRESS_EVERY seconds ahead.
 * Returns -1 with the callback's exception. */
#define PYSSH_PROGRESS_EVERY 0.25
int pyssh_progress(PyObject *progress, double *next, int finished, unsigned long long moved);

/* ---- many operations, one poll() (wait.c, op.c, driver.c) -------------------------- *
 *
 * pyssh.Group's engine and (later) asyncio: an operation that would wait
 * (connect, an authentication, a command) is made an Op instead (its method's
 * defer=True), and one thread moves many of them from one poll() loop. */

/* One pending operation in pyssh_wait_many: a session's step, or (s == NULL)
 * a socket to wait for. Lives in its Op. */
typedef struct {
    SessionObject *s;
    pyssh_step_fn step;
    void *arg;
    pyssh_deadline *dl;
    pyssh_socket_t fd; /* s == NULL: wait until it is ready for `events` */
    short events;
    int due; /* step it (a new one, or its socket is ready) */
    int rc;  /* PYSSH_AGAIN while pending; then the step's result, PYSSH_FAILED
                (fail says why), PYSSH_CLOSED or PYSSH_TIMEDOUT */
    pyssh_failure fail;
    pyssh_logmsg *logs; /* for the Python logger, once the GIL is back */
    /* what the last step wants polled: the session's socket, the bridges; when
     * the keepalive wants a step (0: no time of its own) */
    pyssh_pollfd want;
    double due_at;
    int cn;
    pyssh_pollfd carried[2 * PYSSH_MAX_HOPS];
    /* while it waits, in the session's waiters (another thread's step that reads
     * its packets rings it): the Driver's pipe (pyssh_many_attach) */
    struct pyssh_waiter *waiter;
    int listed;
    /* a step that polls sockets of its own (a tunnel's run(defer=True)): its
     * slots [PYSSH_POLL_RESERVED, n) are polled with the entry's, their revents
     * read (a poll without waiting) before each step, as pyssh_wait_ex leaves
     * them; its wait_ms caps the wait. NULL: none */
    pyssh_pollset *ps;
} pyssh_many;

/* Step the due entries and poll all of them (GIL released by the caller)
 * until one finishes, `slice_end` passes, or `wake` (a pipe's read end, or
 * PYSSH_INVALID_SOCKET) is readable (*woken set). Returns how many finished
 * (their rc), or -1 when poll failed (*poll_err; EINTR returns 0). */
int pyssh_wait_many(pyssh_many **e, int n, double slice_end, pyssh_socket_t wake, int *woken,
                    int *poll_err);
/* One step of the entry now, without waiting (GIL released by the caller):
 * for a socket entry, a look at the socket; then its deadline. Op.step(). */
void pyssh_many_step_once(pyssh_many *e);
/* Start an entry: due when it has a step, its socket polled otherwise. */
void pyssh_many_init(pyssh_many *e);
/* Give the entry a waiter on the pipe rd/wr (a Driver's; GIL held, once). */
int pyssh_many_attach(pyssh_many *e, pyssh_socket_t rd, pyssh_socket_t wr);
/* Take the entry out of its session's waiters, and free its waiter (GIL held:
 * it may wait for the session lock). Before the pipe closes, or the entry goes. */
void pyssh_many_detach(pyssh_many *e);
/* The longest slice of this thread (the main one checks signals often). */
double pyssh_slice_seconds(void);

/* op.c: pyssh._ssh.Op. What an operation is, for op.c. */
#define PYSSH_OP_MORE ((PyObject *)1) /* finish: not done, step again */
typedef struct pyssh_op_kind {
    const char *what; /* for messages, unless the method names it */
    enum pyssh_exc exc;
    pyssh_step_fn step;
    size_t size; /* of the step's argument */
    /* GIL held, the step returned rc >= 0: the result, NULL with an
     * exception, or PYSSH_OP_MORE */
    PyObject *(*finish)(SessionObject *s, void *arg, int rc);
    /* GIL held, an exception set: what a failure leaves to tidy (or NULL) */
    void (*failed)(SessionObject *s, void *arg);
    /* GIL held, once, whatever happened (or NULL): release what arg holds */
    void (*release)(SessionObject *s, void *arg);
    /* the argument was copied into the Op: point what points into it (or at
     * the deadline) at the copies (or NULL) */
    void (*relocate)(void *arg, pyssh_deadline *dl);
    /* GIL held: visit the objects that arg holds (a callback may hold the Op:
     * the garbage collector must see the cycle), or NULL */
    int (*traverse)(void *p, visitproc visit, void *arg);
} pyssh_op_kind;

/* Run the operation `kind` with its argument `arg` (the method's, on its
 * stack) now, waiting (pyssh_wait), or, when `defer`, return an Op that holds
 * a copy of it, `owner` (the method's object) and `args`/`kwds` (which the
 * argument may point into), to be moved by Op.wait() or a Driver. `what`: NULL
 * for kind->what. */
PyObject *pyssh_op_start(SessionObject *s, const pyssh_op_kind *kind, void *arg, pyssh_deadline *dl,
                         const char *what, int defer, PyObject *owner, PyObject *args,
                         PyObject *kwds);
extern PyType_Spec pyssh_op_spec, pyssh_driver_spec;
extern PyMethodDef pyssh_op_methods_module[]; /* _ssh.wait_socket */
/* driver.c needs the Op's entry and how to end it */
pyssh_many *pyssh_op_entry(PyObject *op);
/* `op` is an Op (of the module `st`) not yet added or done, now claimed: 0, or -1 */
int pyssh_op_check(pyssh_state *st, PyObject *op);
void pyssh_op_conclude(PyObject *op); /* GIL held: its rc is final (not AGAIN) */
int pyssh_op_is_done(PyObject *op);   /* concluded: result or exception kept */
/* A Driver's Op once done: its claim goes, so that wait() gives its outcome. */
void pyssh_op_unclaim(PyObject *op);
/* Driver.add could not take it after all: the claim goes, whatever its state. */
void pyssh_op_give_back(PyObject *op);
/* GIL held: give back what the unfinished `op` holds (its claim on a channel,
 * its buffers) and end it with SSHError, without another step. */
void pyssh_op_abandon(PyObject *op);

/* Let libssh read the session's socket once, without waiting (lock held): the
 * only socket reads pyssh's steps make. Returns SSH_OK (something was read or
 * sent), SSH_AGAIN (the socket is idle) or PYSSH_FAILED (libssh's message, or
 * out of memory). */
int pyssh_read_socket_once(SessionObject *self, ssh_session ssh);

#endif /* PYSSH_H */
