/* chanio: the one channel-I/O core. Every channel pyssh uses (a command's,
 * SCP's, SFTP's, a tunnel connection's, the C API's) is a pyssh_chanio, and
 * its bytes move only through these functions:
 *
 *   - libssh's callbacks are the core's: they record what libssh holds per
 *     stream (avail[]), EOF, close and the exit status, and offer arriving
 *     data to the owner's take function, which copies what it has room for
 *     straight from the decrypted packet (pyssh's libssh patch);
 *   - pyssh_chanio_read() takes what libssh holds, without touching the
 *     socket (reads are made only when avail[] says there is data);
 *   - pyssh_chanio_write() sends within the peer's window, and only once
 *     libssh has flushed what it had, so that libssh's output buffer stays
 *     small and a write never blocks;
 *   - a user says what it wants done in one round (send these bytes, take
 *     up to N, tell me at EOF) and how to take data as it arrives, in a
 *     pyssh_chanio_job; pyssh_chanio_step, the wait helper's step for every
 *     channel user, runs the rounds with one read of the session's socket
 *     between them, until the socket is idle ("wait") or a round says the
 *     step is over.
 *
 * Everything here runs with the session lock held (GIL released), inside a
 * step of the wait helper (wait.c), except init, which needs neither. A
 * channel belongs to its session: ssh_free() frees it, so an owner checks
 * that the session is open before using `chan` (the wait helper does so for
 * steps). */
#ifndef PYSSH_CHANIO_H
#define PYSSH_CHANIO_H

#include "pyssh.h"

/* Offered data as it arrives, inside libssh: take up to `len` bytes of
 * `stream` (0 stdout, 1 stderr) at `data`, return how many were taken; libssh
 * keeps the rest and reopens the window only as it is taken, so an owner that
 * takes nothing slows the sender down instead of growing memory. NULL: the
 * owner only reads (pyssh_chanio_read). */
typedef uint32_t (*pyssh_take_fn)(void *state, int stream, const char *data, uint32_t len);

typedef struct pyssh_chanio {
    SessionObject *session; /* borrowed: the owner keeps it alive */
    ssh_channel chan;       /* NULL until made, and again once released */
    struct ssh_channel_callbacks_struct cb;
    pyssh_take_fn take; /* the owner's for good (init), or a step's while it runs */
    void *state;        /* take's first argument */
    pyssh_deadline *dl; /* a step's, while it runs: bytes moved push it back */
    int drop_stderr;    /* stderr is not the owner's (SFTP, tunnels): dropped as it comes */
    int opened;         /* the server confirmed the open: there is something to close */
    int eof_sent;
    double open_t0; /* when the open was asked for (a round-trip sample) */
    int reopens;    /* a session open refused, then asked again (chanio.c) */
    /* the receive window (pyssh_chanio_grow): how far it may grow, how far it
     * has, and the bytes counted since `win_t0` */
    uint32_t win_max, win;
    uint64_t win_bytes;
    double win_t0;
    /* written by the callbacks (lock held) */
    uint32_t avail[2]; /* bytes libssh holds for stdout, stderr */
    int remote_eof, remote_closed;
    int has_status, exit_status;
    int has_signal, core_dumped;
    char exit_signal[32];
    char exit_errmsg[256];
} pyssh_chanio;

/* Set up (no lock needed): no channel yet, nothing held. `take` (may be NULL)
 * is offered what arrives at any time, with `state`; a step's job can offer
 * it to its own take instead while the step runs. */
void pyssh_chanio_init(pyssh_chanio *io, SessionObject *s, pyssh_take_fn take, void *state);

/* Make the channel and install the callbacks, before anything can arrive.
 * 0, or PYSSH_FAILED. */
int pyssh_chanio_new(pyssh_chanio *io, ssh_session ssh);

/* Make `io` the channel's keeper for a channel that `from` kept so far (a
 * forwarded connection waiting for its tunnel): the callbacks and what they
 * recorded move over; `from` no longer has a channel. */
void pyssh_chanio_adopt(pyssh_chanio *io, pyssh_chanio *from);

/* Take over `chan`, which the server opened (forwarded-tcpip): 0, or
 * PYSSH_FAILED (the callbacks could not be installed). */
int pyssh_chanio_accept(pyssh_chanio *io, ssh_channel chan);

/* Steps that open the channel: 0 (open), PYSSH_AGAIN, PYSSH_REFUSED (the
 * server said no to a session: its channel limit, errors.c explains) or
 * PYSSH_FAILED (a refused direct-tcpip too: its target, libssh says why). */
int pyssh_chanio_open_session(pyssh_chanio *io);
int pyssh_chanio_open_forward(pyssh_chanio *io, const char *host, int port, const char *orig,
                              int orig_port);
/* The same to a Unix socket on the server (direct-streamlocal@openssh.com). */
int pyssh_chanio_open_forward_unix(pyssh_chanio *io, const char *path);

/* Let the channel's receive window grow up to `max` bytes (from libssh's 2
 * MiB) while the path needs it: whenever the peer sends a whole window per
 * round trip (the session's shortest channel open), the window doubles, so
 * that it settles between one and about three times the bandwidth-delay
 * product. libssh holds at most the window of unread data, so `max` bounds
 * memory too. No growth on a path of under a millisecond (loopback, a LAN),
 * nor with a libssh without pyssh's window patch. Lock held. */
#define PYSSH_WINDOW_MIN (2u << 20)
#define PYSSH_WINDOW_MAX (64u << 20)
void pyssh_chanio_grow(pyssh_chanio *io, uint32_t max);

/* A round trip seen (seconds: a request and its answer, an upper bound): the
 * session's round trip is the shortest seen. Lock held. */
void pyssh_chanio_rtt(SessionObject *s, double t);

/* The receive window now (PYSSH_WINDOW_MIN until it grew). */
uint32_t pyssh_chanio_window(const pyssh_chanio *io);

/* Up to `room` bytes of `stream` from what libssh holds for the channel, never
 * reading the socket: the count (0: nothing held), or PYSSH_FAILED. */
int pyssh_chanio_read(pyssh_chanio *io, int stream, char *dst, size_t room);

/* How much a write may send now: 0 while libssh still has output to flush
 * (wait for POLLOUT) or the peer's window is shut (wait for its adjust), at
 * most `max`. */
size_t pyssh_chanio_room(pyssh_chanio *io, ssh_session ssh, size_t max);

/* Send from p[0:n], as much as pyssh_chanio_room allows (at most
 * PYSSH_CHANIO_WRITE_MAX at a time): the count sent (0: wait), PYSSH_FAILED,
 * or PYSSH_CHANIO_CLOSED when the server closed the channel (what was not sent
 * never will be). */
#define PYSSH_CHANIO_WRITE_MAX (256 * 1024)
#define PYSSH_CHANIO_CLOSED    (-8)
long pyssh_chanio_write(pyssh_chanio *io, ssh_session ssh, const char *p, size_t n);

/* Send EOF once (a closed channel needs none): 0, or PYSSH_FAILED. */
int pyssh_chanio_send_eof(pyssh_chanio *io);

/* The server closed the channel and libssh holds nothing more of it. */
int pyssh_chanio_drained(const pyssh_chanio *io);

/* The command has ended, or will: the server reported its end or closed. */
int pyssh_chanio_ended(const pyssh_chanio *io);

/* Close and free the channel (session open): remove the callbacks, send EOF
 * and CLOSE when it was opened and not yet closed, free it; libssh frees it
 * for good when the server's CLOSE arrives. Idempotent. */
void pyssh_chanio_release(pyssh_chanio *io);

/* Forget the channel without touching it: its session freed it (ssh_free), or
 * this is a forked child, which must not send on its parent's connection. */
void pyssh_chanio_forget(pyssh_chanio *io);

/* One round of a step's work: move what can be moved (`idle`: the socket was
 * just found idle, so this is the last round before waiting). Returns
 * PYSSH_CHANIO_MORE to read the socket and go round again, a result >= 0 to
 * end the step with it (the owner has something to do with the GIL, or is
 * done), or PYSSH_FAILED. */
#define PYSSH_CHANIO_MORE (-9)
typedef int (*pyssh_round_fn)(void *state, ssh_session ssh, int idle);

/* What a channel user wants done in a step: `round` with `state`, in up to
 * `max` rounds; while the step runs, `io` (NULL: the round serves channels of
 * its own, as a tunnel does) offers arriving data to `take` (NULL: the owner's
 * take from init) and bytes moved push `dl` (may be NULL) back. */
typedef struct {
    SessionObject *session;
    pyssh_chanio *io;
    pyssh_take_fn take;
    pyssh_round_fn round;
    void *state;
    pyssh_deadline *dl;
    int max;
} pyssh_chanio_job;

/* The wait helper's step (a pyssh_step_fn) for every channel user: `job` is a
 * pyssh_chanio_job. Its rounds, with one read of the session's socket between
 * them, up to `max` times. Returns a round's result >= 0 (it ended the step),
 * PYSSH_AGAIN (wait: the socket is idle, or `max` rounds passed), or
 * PYSSH_FAILED. */
int pyssh_chanio_step(ssh_session ssh, void *job);

/* This thread's steps end their rounds by this monotonic time (0: no limit):
 * Op.step() sets it, so that an event loop that steps a big transfer gets the
 * thread back within a few milliseconds. */
extern PYSSH_THREAD_LOCAL double pyssh_chanio_until;

/* ---- with the GIL: what Channel, SFTP and Tunnel share ------------------------- */

/* The objects that use channels start with this header: their session, and
 * the pid of the process that made them. */
typedef struct {
    PyObject_HEAD SessionObject *session; /* strong reference */
    long pid;
} pyssh_chanuser;

/* tp_new of a channel user: `fmt` ("O!:SFTP") parses one Session; a new
 * zeroed object of `type` holding it and this process's pid, set up by `init`
 * (0, or -1 with an exception set: the object is released); or NULL. */
PyObject *pyssh_chanuser_new(PyTypeObject *type, PyObject *args, PyObject *kwds, const char *fmt,
                             int (*init)(PyObject *self));

/* Close `io`'s channel from code holding the GIL (close(), the error paths,
 * dealloc): takes the session lock with the GIL released, sends `signal`
 * first to a command that has not ended, when not NULL ("HUP"), releases the channel,
 * and hands libssh's log lines to logging when `emit_logs`. A closed session
 * has freed its channels (ssh_free), and a forked child (`pid` is not the
 * creator's) must not send on its parent's connection: then the channel is
 * only forgotten. */
void pyssh_chanio_close(pyssh_chanio *io, long pid, const char *signal, int emit_logs);

#endif /* PYSSH_CHANIO_H */
