/* pyssh._ssh.Tunnel: port forwarding through the session, like ssh -L and ssh -R.
 *
 * One Tunnel is one forward: a local listening socket whose connections are
 * carried to a target through the server (LOCAL, direct-tcpip channels), or a
 * port the server listens on whose connections are carried to a target on this
 * side (REMOTE, forwarded-tcpip channels). run() moves the data of all of its
 * connections in one loop built on the shared wait helper: the step runs with
 * the session lock held and the GIL released, and between steps
 * pyssh_wait_ex() polls the session's socket, the listening socket and every
 * connection's socket, without the lock. No thread per connection, and the
 * session stays usable from other threads: they take the lock between steps.
 *
 * No byte is dropped. Server to local: the channel-I/O core's data callback
 * (chanio.c) offers what arrives, from the decrypted packet (pyssh's libssh
 * patch, vendor/patches/), to conn_take, which copies it into the connection's
 * buffer (CONN_BUF), which the step
 * sends to the local socket in large writes (one send per 32 KiB packet cost
 * three times the system calls, and woke the application as often, for no gain
 * in speed). What the buffer has no room for stays in libssh, which reopens the
 * channel's window only as data is taken, so a slow local reader slows the
 * sender down; it is read into the buffer as the socket drains. Local to
 * server: a local socket is read only while the channel's window is open and
 * libssh has flushed what it had, and never more than the window, so libssh's
 * output buffer stays small. A write can still take less, or nothing, than it
 * was given (libssh sends no channel data during a key re-exchange): the rest
 * is held back in the connection's `held` buffer and sent before the socket is
 * read again, and EOF waits for it. EOF is passed on each way
 * (shutdown(SHUT_WR) / SSH_MSG_CHANNEL_EOF); the other direction keeps flowing.
 *
 * Everything a connection's callbacks write is touched with the session lock
 * held. conn_take acts only inside this tunnel's own step (in_step): in
 * another thread's step they record what libssh holds, and the wait helper
 * wakes this tunnel's loop (a step that read packets rings the others).
 *
 * Agent forwarding (ssh -A) is a third kind of tunnel, AGENT: a REMOTE one
 * whose target is the local agent's socket (AF_UNIX) and whose channels are the
 * auth-agent@openssh.com ones the server opens, one per client of the agent
 * socket it made for a command. While it is the session's agent tunnel (its
 * `agent`), each command's channel asks for agent forwarding
 * (pyssh_tunnel_agent_request) and guard.c hands the server's agent channels
 * to it, at most AGENT_MAX at a time; the agent's socket is connected only
 * when such a channel comes.
 *
 * Dynamic forwarding (ssh -D) is a fourth kind, DYNAMIC: a LOCAL one whose
 * target each client names in a SOCKS 4, 4a or 5 handshake (no
 * authentication, CONNECT only). An accepted connection starts in C_SOCKS:
 * its socket is read, in this loop like any other, into a small fixed buffer
 * that one parser (socks_parse, socks.c) reads from the start each time, trusting no
 * byte; once the request is whole, the direct-tcpip channel is opened as
 * LOCAL's, and only the server's answer decides the reply, so that a client
 * learns whether its target was reached. Bytes the client sent after its
 * request wait in `held` for the channel. A client that stalls in the
 * handshake is closed after `socks_timeout`, and at most SOCKS_MAX are in it
 * at once: the listening socket waits meanwhile.
 *
 * Unix-domain sockets use the same kinds and the same loop: only the socket
 * and the channel's type differ. LOCAL's listening socket may be AF_UNIX (the
 * Python layer makes it, mode 0600), and its target a socket on the server
 * (`rpath`: direct-streamlocal@openssh.com); REMOTE may listen on a socket on
 * the server (`rpath`: streamlocal-forward@openssh.com, pyssh's libssh patch,
 * whose forwarded-streamlocal opens guard.c hands over by path as it does
 * forwarded-tcpip by port), and its target may be a local socket (`ai` then
 * points to the one AF_UNIX address, as AGENT's). */
#include "chanio.h"
#include "socks.h"

#include <stdlib.h>
#include <string.h>

#define CONN_BUF       (256 * 1024) /* channel data a connection's socket has not taken yet */
#define READ_MAX       (256 * 1024) /* local bytes read per channel write, at most */
#define ROUNDS_MAX     64           /* socket reads per step, so that a step ends */
#define ACCEPT_MAX     64           /* connections accepted per step */
#define STOP_GRACE     5.0          /* seconds a stopping tunnel waits for channels being opened */
#define TUNNEL_BACKLOG 64           /* REMOTE: forwarded connections waiting for run(), at most */
#define AGENT_MAX      16           /* AGENT: agent channels open or waiting, at most */
/* DYNAMIC: a SOCKS 5 greeting and request are 257 + 262 bytes at most, a 4a
 * request 8 + 256 + 256: the buffer holds any handshake, and some data after it */
#define SOCKS_BUF 1024
#define SOCKS_MAX 64 /* connections in the handshake at once, at most */

enum { LOCAL, REMOTE, AGENT, DYNAMIC };
/* C_SOCKS: a DYNAMIC connection in the SOCKS handshake, or sending its failure */
enum conn_state { C_OPENING, C_CONNECTING, C_OPEN, C_SOCKS };

/* DYNAMIC: a connection's SOCKS handshake. */
typedef struct socks {
    unsigned char in[SOCKS_BUF]; /* what the client sent, from its first byte */
    size_t inlen;
    size_t used;           /* the request's bytes in `in`: what follows is data */
    unsigned char out[16]; /* replies not sent yet: out[opos..olen) */
    size_t opos, olen;
    int version;               /* the first byte: 4 or 5 from a SOCKS client */
    int greeted;               /* SOCKS 5: the method reply is queued */
    int slot;                  /* counted in the tunnel's `nsocks` */
    int closing;               /* a failure: closed once `out` is sent */
    double deadline;           /* closed at this time if still in C_SOCKS */
    char host[SOCKS_NAME + 1]; /* the target asked for */
    int port;
} socks;

typedef struct TunnelObject TunnelObject;

typedef struct conn {
    struct conn *next;
    TunnelObject *t;
    pyssh_socket_t fd; /* the local connection; PYSSH_INVALID_SOCKET once closed */
    pyssh_chanio io;   /* the channel (chanio.c) */
    enum conn_state state;
    struct addrinfo *ai;         /* REMOTE, connecting: the address being tried */
    int pollidx;                 /* this connection's slot in the poll set, or -1 */
    int readable, writable;      /* the local socket may have data / room */
    char *buf;                   /* CONN_BUF, made when first needed */
    size_t pos, len;             /* buf[pos..len): for the local socket */
    char *held;                  /* READ_MAX, made when first needed: local bytes a write */
    size_t hpos, hlen;           /* did not take yet, held[hpos..hlen) (a key re-exchange) */
    int local_eof;               /* the local side sent FIN, passed on as EOF */
    int shut;                    /* shutdown(SHUT_WR) done: the server's EOF passed on */
    int dead;                    /* the local socket failed: close everything */
    unsigned long long up, down; /* to and from the target */
    char peer[80];               /* who connected, for messages */
    char orig[64];               /* LOCAL: the client's address, told to the server */
    int orig_port;
    socks *sx; /* DYNAMIC: the handshake, kept for its target */
} conn;

/* A forwarded channel waiting for its tunnel's run() (REMOTE). Its callbacks
 * record what arrives meanwhile (libssh keeps the data, within the channel's
 * window), for the connection that run() makes of it. */
typedef struct handover {
    struct handover *next;
    pyssh_chanio io; /* takes nothing: libssh keeps what arrives, chanio counts it */
    char peer[80];
} handover;

struct TunnelObject {
    PyObject_HEAD SessionObject *session; /* strong reference */
    long pid; /* the creator's (pyssh_chanuser): a forked child skips the goodbye */
    int kind;
    int configured;
    /* LOCAL */
    pyssh_socket_t lfd;   /* the listening socket (the Python layer owns it) */
    pyssh_socket_t adopt; /* LOCAL, no listening socket: the one connection given
                             (adopt_local, a ProxyJump hop), owned until run() takes it */
    char *host;           /* the target (LOCAL); the server's bind address (REMOTE) */
    int port;             /* the target's port (LOCAL); the port asked for (REMOTE) */
    char *rpath;          /* a Unix socket on the server: LOCAL's target (direct-streamlocal),
                             or REMOTE's listening socket (streamlocal-forward); else NULL */
    int rlistening;       /* REMOTE on `rpath`: the server listens there */
    /* REMOTE */
    int bound;                  /* the port the server listens on; 0 when not listening */
    struct addrinfo *ai;        /* the local target, resolved */
    char target[300];           /* "host:port", for messages */
    struct TunnelObject *rnext; /* in the session's list of remote forwards */
    handover *incoming;         /* forwarded channels accepted for this tunnel, waiting for
                                     its run() (guard.c hands them over) */
    int nincoming;              /* their number: at most TUNNEL_BACKLOG */
    /* DYNAMIC: connections in the SOCKS handshake, and how long they may take */
    int nsocks;
    double socks_timeout;
    /* AGENT: the agent's socket, as the one address `ai` points to */
    struct addrinfo agent_ai;
    struct sockaddr_storage agent_sa;
    int agent_asked; /* a command's channel asked for forwarding: logged once */
    /* run()'s state, touched with the lock held */
    conn *conns;
    int nconns;
    int in_step;
    int listen_ready;  /* the listening socket polled readable */
    pyssh_claim claim; /* the call in progress ("run", "listen_remote", ...), claimed
                          at its entry (atomically: no GIL orders two claims) */
    int stopping;
    double stop_deadline;
    long long max_conns; /* -1: no limit */
    double idle_timeout; /* -1: none */
    double idle_since;
    unsigned long long served, failed, up, down; /* `up`, `down`: of closed connections */
    int dying; /* the session failed under run(): message logged */
    /* ProxyJump (adopt_local): the next session's waits move this tunnel
     * (pyssh_tunnel_carry), no run(); `failure` says why its connection could
     * not be opened, for that session's error */
    int carrying;
    char failure[400];
    char *scratch; /* READ_MAX, for local to server */
    pyssh_waiter wake;
    pyssh_pollset ps;
    int fds_cap;
    /* run(defer=True): an Op steps the tunnel (an event loop polls its set), and
     * `wake` is polled as the set's last slot (`wakeidx`), for stop() */
    int deferred;
    int wakeidx;
    char what[700]; /* what run() or listen_remote() does, for messages (an Op's `what`) */
};

/* The session's remote forwards, and which tunnel has a global request
 * (tcpip-forward, cancel-tcpip-forward) pending: libssh keeps one per session. */
typedef struct {
    TunnelObject *head;
    void *global_req; /* the tunnel waiting for its reply, ORPHAN, or NULL */
} rforwards;

static char ORPHAN_REQ; /* a request whose caller gave up: the next one finishes it */

static rforwards *
session_rforwards(SessionObject *s)
{
    if (s->rforwards == NULL) {
        s->rforwards = calloc(1, sizeof(rforwards));
    }
    return s->rforwards;
}

/* ---- sockets ------------------------------------------------------------------ */

/* Non-blocking, not inherited, no SIGPIPE (platform.c), and no Nagle delay. */
static int
sock_setup(pyssh_socket_t fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof(one));
    return pyssh_socket_setup(fd);
}

/* The address a local client connected from: host (64 bytes) and port. */
static void
peer_addr(const struct sockaddr *sa, char *host, int *port)
{
    snprintf(host, 64, "127.0.0.1");
    *port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, 64);
        *port = ntohs(a->sin_port);
    }
    else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, 64);
        *port = ntohs(a->sin6_port);
    }
}

/* ---- what arrives (inside libssh, lock held) ------------------------------------ */

/* Gather packets into the connection's buffer: the step sends them in large
 * writes (a send per 32 KiB packet costs more than the copy). Only inside this
 * tunnel's own step; a dead socket takes everything, to drop it. */
static uint32_t
conn_take(void *owner, int stream, const char *data, uint32_t len)
{
    conn *k = owner;
    (void)stream; /* stderr is dropped by chanio: direct-tcpip has none */
    if (k->dead) {
        return len;
    }
    if (!k->t->in_step || k->state != C_OPEN || k->fd == PYSSH_INVALID_SOCKET ||
        (k->buf == NULL && (k->buf = malloc(CONN_BUF)) == NULL)) {
        return 0;
    }
    if (k->pos == k->len) {
        k->pos = k->len = 0;
    }
    else if (k->pos > 0 && CONN_BUF - k->len < len) {
        memmove(k->buf, k->buf + k->pos, k->len - k->pos);
        k->len -= k->pos;
        k->pos = 0;
    }
    size_t room = CONN_BUF - k->len;
    uint32_t taken = len < room ? len : (uint32_t)room;
    memcpy(k->buf + k->len, data, taken);
    k->len += taken;
    return taken;
}

/* ---- connections ---------------------------------------------------------------- */

/* DYNAMIC: the connection is out of the handshake, or gone. */
static void
socks_unslot(TunnelObject *t, socks *sx)
{
    if (sx->slot) {
        sx->slot = 0;
        t->nsocks--;
    }
}

static conn *
conn_new(TunnelObject *t, pyssh_socket_t fd, enum conn_state state, const char *peer)
{
    conn *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return NULL;
    }
    k->t = t;
    k->fd = fd;
    k->state = state;
    k->pollidx = -1;
    k->readable = k->writable = 1;
    snprintf(k->peer, sizeof(k->peer), "%s", peer);
    pyssh_chanio_init(&k->io, t->session, conn_take, k);
    k->io.drop_stderr = 1;
    k->next = t->conns;
    t->conns = k;
    t->nconns++;
    t->served++;
    return k;
}

static void
close_local(conn *k)
{
    if (k->fd == PYSSH_INVALID_SOCKET) {
        return;
    }
    if (!k->local_eof && !k->dead) {
        /* closing with unread data would reset the connection and could destroy
         * what the peer has not read yet: say EOF, drop what is waiting */
        char tmp[4096];
        pyssh_shutdown_write(k->fd);
        while (pyssh_recv(k->fd, tmp, sizeof(tmp)) > 0) {
        }
    }
    pyssh_closesocket(k->fd);
    k->fd = PYSSH_INVALID_SOCKET;
}

/* Close and free one connection (lock held). `session_alive`: the session still
 * has the channel (ssh_free frees channels with the session). Returns 0, or -1
 * when the channel is still being opened and must not be freed yet. */
static int
conn_free(TunnelObject *t, conn *k, int session_alive, int force)
{
    if (session_alive && k->io.chan != NULL && k->state == C_OPENING && !force) {
        close_local(k);
        return -1;
    }
    close_local(k);
    if (session_alive) {
        pyssh_chanio_release(&k->io);
    }
    pyssh_chanio_forget(&k->io);
    t->up += k->up;
    t->down += k->down;
    for (conn **pp = &t->conns; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == k) {
            *pp = k->next;
            break;
        }
    }
    t->nconns--;
    if (t->nconns == 0) {
        t->idle_since = pyssh_monotonic();
    }
    if (k->sx != NULL) {
        socks_unslot(t, k->sx);
        free(k->sx);
    }
    free(k->buf);
    free(k->held);
    free(k);
    return 0;
}

static void
conns_free_all(TunnelObject *t, int session_alive)
{
    while (t->conns != NULL) {
        conn_free(t, t->conns, session_alive, 1);
    }
    while (t->incoming != NULL) {
        handover *h = t->incoming;
        t->incoming = h->next;
        if (session_alive) {
            pyssh_chanio_release(&h->io);
        }
        free(h);
    }
    t->nincoming = 0;
}

/* REMOTE: start connecting to the next address of the target. 0: under way or
 * done; -1: no address left (the target refused). */
static int
conn_connect(TunnelObject *t, conn *k, struct addrinfo *ai, int *err)
{
    for (; ai != NULL; ai = ai->ai_next) {
        pyssh_socket_t fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd == PYSSH_INVALID_SOCKET) {
            *err = pyssh_socket_errno();
            continue;
        }
        if (sock_setup(fd) == 0 && (connect(fd, ai->ai_addr, (socklen_t)ai->ai_addrlen) == 0 ||
                                    pyssh_in_progress(pyssh_socket_errno()))) {
            k->fd = fd;
            k->ai = ai;
            k->readable = 0;
            k->writable = 0; /* writable once connected */
            return 0;
        }
        *err = pyssh_socket_errno();
        pyssh_closesocket(fd);
    }
    (void)t;
    return -1;
}

static void
conn_refused(TunnelObject *t, conn *k, int err)
{
    char why[256];
    pyssh_log_queue(t->session, SSH_LOG_WARNING,
                    "tunnel: could not connect to %s for %s: %s; that connection is closed",
                    t->target, k->peer, pyssh_socket_strerror(err, why, sizeof(why)));
    k->dead = 1;
}

static int socks_opened(conn *k);
static void socks_fail(TunnelObject *t, conn *k, int code, const char *why);
static int socks5_code(ssh_channel chan);

/* LOCAL: the server opening the direct-tcpip channel to the target (DYNAMIC:
 * the one the client asked for). */
static int
conn_open(TunnelObject *t, ssh_session ssh, conn *k)
{
    const char *host = k->sx != NULL ? k->sx->host : t->host;
    int port = k->sx != NULL ? k->sx->port : t->port;
    int unix_target = k->sx == NULL && t->rpath != NULL;
    int rc = unix_target ? pyssh_chanio_open_forward_unix(&k->io, t->rpath)
                         : pyssh_chanio_open_forward(&k->io, host, port, k->orig, k->orig_port);
    if (rc == PYSSH_AGAIN) {
        return 0;
    }
    k->state = C_OPEN;
    if (rc == 0) {
        return k->sx != NULL ? socks_opened(k) : 0;
    }
    const char *e = ssh_get_error(ssh);
    char where[320];
    snprintf(where, sizeof(where), unix_target ? "the socket %.300s" : "%.300s:%d",
             unix_target ? t->rpath : host, port);
    pyssh_log_queue(t->session, SSH_LOG_WARNING,
                    "tunnel: the server could not connect to %s for %s (%s); "
                    "that connection is closed",
                    where, k->peer, e != NULL && *e ? e : "refused");
    snprintf(t->failure, sizeof(t->failure), "the jump host could not reach %s (%s)", where,
             e != NULL && *e ? e : "refused");
    if (k->sx != NULL) { /* the client hears why; socks_fail counts it */
        socks_fail(t, k, k->sx->version == 4 ? SOCKS4_REFUSED : socks5_code(k->io.chan), NULL);
        return 0;
    }
    t->failed++;
    k->dead = 1; /* the channel is closed, or was never opened */
    return 0;
}

/* REMOTE: the local connection to the target, once its socket is writable. */
static void
conn_connected(TunnelObject *t, conn *k)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, (char *)&err, &len) < 0) {
        err = pyssh_socket_errno();
    }
    if (err == 0) {
        k->state = C_OPEN;
        k->readable = 1;
        k->ai = NULL;
        return;
    }
    pyssh_closesocket(k->fd);
    k->fd = PYSSH_INVALID_SOCKET;
    if (conn_connect(t, k, k->ai->ai_next, &err) < 0) {
        k->ai = NULL;
        t->failed++;
        conn_refused(t, k, err);
    }
}

/* A send or recv on the local socket failed with `e`: 0 to stop for now (it
 * would block: `flag` is cleared), 1 to try again (interrupted), -1 dead. */
static int
sock_failed(conn *k, int e, int *flag)
{
    if (pyssh_would_block(e)) {
        *flag = 0;
        return 0;
    }
    if (pyssh_interrupted(e)) {
        return 1;
    }
    k->dead = 1; /* reset: close both ways */
    return -1;
}

/* ---- the SOCKS handshake, served (DYNAMIC) --------------------------------------- */

static int
socks_pending(const conn *k)
{
    return k->sx != NULL && k->sx->opos < k->sx->olen;
}

static void
socks_queue(socks *sx, const unsigned char *p, size_t n)
{
    if (sx->olen + n <= sizeof(sx->out)) { /* two replies at most: it fits */
        memcpy(sx->out + sx->olen, p, n);
        sx->olen += n;
    }
}

/* The reply to a request: `code` is SOCKS 5's REP (SOCKS5_NO_METHOD: the
 * method reply refusing the greeting) or SOCKS 4's CD. The bound address is
 * 0.0.0.0:0: the connection's far end is the server's. */
static void
socks_reply(socks *sx, int code)
{
    unsigned char r5[10] = {5, (unsigned char)code, 0, 1, 0, 0, 0, 0, 0, 0};
    unsigned char r4[8] = {0, (unsigned char)code, 0, 0, 0, 0, 0, 0};
    if (sx->version != 5) {
        socks_queue(sx, r4, sizeof(r4));
    }
    else {
        socks_queue(sx, r5, code == SOCKS5_NO_METHOD ? 2 : sizeof(r5));
    }
}

/* Send the queued replies: 1 once all are sent, 0 to wait for POLLOUT (or
 * the socket failed: `dead`). */
static int
socks_flush(conn *k)
{
    socks *sx = k->sx;
    while (sx->opos < sx->olen && k->fd != PYSSH_INVALID_SOCKET && !k->dead && k->writable) {
        long n = pyssh_send(k->fd, sx->out + sx->opos, sx->olen - sx->opos);
        if (n < 0) {
            if (sock_failed(k, pyssh_socket_errno(), &k->writable) > 0) {
                continue;
            }
            return 0;
        }
        sx->opos += (size_t)n;
    }
    return sx->opos == sx->olen;
}

/* The handshake failed, or the target could not be reached: reply `code` (-1:
 * none), then close. A client that does not read the reply is closed at the
 * deadline. */
static void
socks_fail(TunnelObject *t, conn *k, int code, const char *why)
{
    socks *sx = k->sx;
    if (why != NULL) {
        pyssh_log_queue(t->session, SSH_LOG_WARNING,
                        "tunnel: SOCKS client %s: %s; that connection is closed", k->peer, why);
    }
    t->failed++;
    if (code >= 0) {
        socks_reply(sx, code);
    }
    sx->closing = 1;
    sx->deadline = pyssh_monotonic() + t->socks_timeout;
    k->state = C_SOCKS;
    socks_flush(k);
}

/* The server opened the channel: the success reply, and the client's bytes
 * after its request go first (send_held). 0, or PYSSH_FAILED (no memory). */
static int
socks_opened(conn *k)
{
    socks *sx = k->sx;
    socks_reply(sx, sx->version == 4 ? 0x5A : 0x00);
    size_t rest = sx->inlen - sx->used;
    if (rest > 0) {
        if ((k->held = malloc(READ_MAX)) == NULL) {
            return PYSSH_FAILED;
        }
        memcpy(k->held, sx->in + sx->used, rest);
        k->hpos = 0;
        k->hlen = rest;
    }
    return 0;
}

/* The server refused the channel: SOCKS 5's REP says why as far as the
 * server's reason code (RFC 4254 5.1) tells, never its text: 1 (prohibited) is
 * 0x02 "not allowed by ruleset", 2 (connect failed: the target refused, or has
 * no route or no address; OpenSSH does not tell them apart) 0x05 "connection
 * refused", any other 0x01. The code needs pyssh's libssh patch. */
static int
socks5_code(ssh_channel chan)
{
    uint32_t reason = 0;
#ifdef PYSSH_LIBSSH_OPEN_FAILURE_REASON
    reason = chan != NULL ? ssh_channel_open_failure_reason(chan) : 0;
#else
    (void)chan;
#endif
    enum { PROHIBITED = 1, CONNECT_FAILED = 2 }; /* RFC 4254 5.1 */
    return reason == PROHIBITED ? 0x02 : reason == CONNECT_FAILED ? 0x05 : 0x01;
}

/* Read what the client sent so far: 0, or 1 at its EOF. */
static int
socks_read(conn *k)
{
    socks *sx = k->sx;
    while (k->readable && !k->dead && sx->inlen < SOCKS_BUF) {
        long n = pyssh_recv(k->fd, sx->in + sx->inlen, SOCKS_BUF - sx->inlen);
        if (n < 0) {
            if (sock_failed(k, pyssh_socket_errno(), &k->readable) > 0) {
                continue;
            }
            break;
        }
        if (n == 0) {
            k->readable = 0;
            return 1;
        }
        sx->inlen += (size_t)n;
    }
    return 0;
}

/* The request is whole: open the channel to its target (conn_open). */
static int
socks_request(TunnelObject *t, ssh_session ssh, conn *k, const socks_req *r, int eof)
{
    socks *sx = k->sx;
    memcpy(sx->host, r->host, sizeof(sx->host));
    sx->port = r->port;
    sx->used = r->used;
    socks_unslot(t, sx);
    if (eof) {
        k->local_eof = 1; /* passed on once the channel is open and has the data */
    }
    k->state = C_OPENING;
    return pyssh_chanio_new(&k->io, ssh);
}

/* C_SOCKS: read the client's handshake, answer its greeting, and once its
 * request is whole, start opening the channel; or send a failure's reply and
 * close. 0, or PYSSH_FAILED. */
static int
socks_service(TunnelObject *t, ssh_session ssh, conn *k)
{
    socks *sx = k->sx;
    if (k->dead) {
        return 0; /* counted when it died; freed at the end of the round */
    }
    int sent = socks_flush(k);
    if (sx->closing) {
        if (!sent && !k->dead && pyssh_monotonic() >= sx->deadline) {
            k->dead = 1; /* it does not read its reply */
        }
        return 0;
    }
    int eof = k->dead ? 0 : socks_read(k);
    if (k->dead) {
        t->failed++; /* reset in the handshake */
        return 0;
    }
    socks_req r;
    int rc = socks_parse(sx->in, sx->inlen, &r);
    sx->version = r.version;
    if (r.greeted && !sx->greeted) {
        static const unsigned char no_auth[2] = {5, 0x00};
        socks_queue(sx, no_auth, sizeof(no_auth));
        sx->greeted = 1;
    }
    if (rc == SOCKS_DONE) {
        return socks_request(t, ssh, k, &r, eof);
    }
    if (rc == SOCKS_BAD) {
        socks_fail(t, k, r.reply, r.why);
    }
    else if (eof) {
        socks_fail(t, k, -1, "it closed its connection in the middle of the handshake");
    }
    else if (sx->inlen == SOCKS_BUF) {
        socks_fail(t, k, sx->version == 4 ? SOCKS4_REFUSED : 0x01, "an over-long handshake");
    }
    else if (pyssh_monotonic() >= sx->deadline) {
        socks_fail(t, k, -1, "no whole request within the handshake's time limit");
    }
    else {
        socks_flush(k);
    }
    return 0;
}

/* Accepted: the handshake comes first. 0, or PYSSH_FAILED (no memory). */
static int
socks_start(TunnelObject *t, conn *k)
{
    if ((k->sx = calloc(1, sizeof(*k->sx))) == NULL) {
        return PYSSH_FAILED;
    }
    k->sx->slot = 1;
    t->nsocks++;
    k->sx->deadline = pyssh_monotonic() + t->socks_timeout;
    return 0;
}

/* The earliest deadline of a handshake: the wait is no longer. */
static void
socks_wake(TunnelObject *t)
{
    double first = -1;
    for (conn *k = t->conns; k != NULL; k = k->next) {
        if (k->state == C_SOCKS && (first < 0 || k->sx->deadline < first)) {
            first = k->sx->deadline;
        }
    }
    if (first >= 0) {
        double left = first - pyssh_monotonic();
        int ms = left <= 0 ? 0 : left > 60 ? 60000 : (int)(left * 1000) + 1;
        if (t->ps.wait_ms < 0 || ms < t->ps.wait_ms) {
            t->ps.wait_ms = ms;
        }
    }
}

/* ---- moving data ------------------------------------------------------------------ */

/* Server to local: what the callback gathered, then what libssh still holds. */
static int
conn_down(conn *k)
{
    while (k->writable && (k->pos < k->len || k->io.avail[0] > 0)) {
        if (k->pos == k->len) {
            if (k->buf == NULL && (k->buf = malloc(CONN_BUF)) == NULL) {
                return PYSSH_FAILED;
            }
            int n = pyssh_chanio_read(&k->io, 0, k->buf, CONN_BUF);
            if (n <= 0) {
                return n < 0 ? PYSSH_FAILED : 0;
            }
            k->pos = 0;
            k->len = (size_t)n;
        }
        long n = pyssh_send(k->fd, k->buf + k->pos, k->len - k->pos);
        if (n < 0) {
            if (sock_failed(k, pyssh_socket_errno(), &k->writable) > 0) {
                continue;
            }
            return 0;
        }
        k->pos += (size_t)n;
        k->down += (size_t)n;
        if (k->pos == k->len) {
            k->pos = k->len = 0;
        }
    }
    if (k->io.remote_eof && !k->shut && k->io.avail[0] == 0 && k->pos == k->len) {
        pyssh_shutdown_write(k->fd); /* the target said EOF: pass it on */
        k->shut = 1;
    }
    return 0;
}

/* Send what a write held back: 1 when all of it is sent, 0 to wait, or
 * PYSSH_FAILED. */
static int
send_held(ssh_session ssh, conn *k)
{
    while (k->hpos < k->hlen) {
        long w = pyssh_chanio_write(&k->io, ssh, k->held + k->hpos, k->hlen - k->hpos);
        if (w == PYSSH_CHANIO_CLOSED || w == 0) {
            return 0;
        }
        if (w < 0) {
            return PYSSH_FAILED;
        }
        k->hpos += (size_t)w;
        k->up += (unsigned)w;
    }
    k->hpos = k->hlen = 0;
    return 1;
}

/* Hold back what a write did not take of the `n` bytes read into scratch:
 * 0, or PYSSH_FAILED (no memory). */
static int
hold(TunnelObject *t, conn *k, long w, long n)
{
    if (k->held == NULL && (k->held = malloc(READ_MAX)) == NULL) {
        return PYSSH_FAILED;
    }
    memcpy(k->held, t->scratch + w, (size_t)(n - w));
    k->hpos = 0;
    k->hlen = (size_t)(n - w);
    return 0;
}

/* Local to server: only within the window, and only with libssh's output
 * sent; what a write does not take is held back and sent first next time. */
static int
conn_up(TunnelObject *t, ssh_session ssh, conn *k)
{
    int rc = send_held(ssh, k);
    while (rc == 1 && k->readable && !k->local_eof && !k->io.remote_closed) {
        size_t want = pyssh_chanio_room(&k->io, ssh, READ_MAX);
        if (want == 0) {
            break; /* POLLOUT on the session socket, or the window adjust, wakes the loop */
        }
        long n = pyssh_recv(k->fd, t->scratch, want);
        if (n < 0) {
            if (sock_failed(k, pyssh_socket_errno(), &k->readable) > 0) {
                continue;
            }
            return 0;
        }
        if (n == 0) {
            k->local_eof = 1;
            k->readable = 0;
            break;
        }
        long w = pyssh_chanio_write(&k->io, ssh, t->scratch, (size_t)n);
        if (w == PYSSH_CHANIO_CLOSED) {
            break;
        }
        if (w < 0 || (w < n && hold(t, k, w, n) < 0)) {
            return PYSSH_FAILED;
        }
        k->up += (unsigned)w;
        rc = w == n;
    }
    if (rc < 0) {
        return PYSSH_FAILED;
    }
    /* the local side's EOF, once all that it sent has gone */
    if (k->local_eof && k->hpos == k->hlen) {
        return pyssh_chanio_send_eof(&k->io);
    }
    return 0;
}

/* Move what can be moved for one connection, without blocking. */
static int
conn_service(TunnelObject *t, ssh_session ssh, conn *k)
{
    if (k->state == C_SOCKS && socks_service(t, ssh, k) < 0) {
        return PYSSH_FAILED;
    }
    if (k->state == C_OPENING && conn_open(t, ssh, k) < 0) {
        return PYSSH_FAILED;
    }
    /* not once dead: a connect() that failed at once (an agent socket that is
     * gone, ENOENT) left no socket to ask */
    if (k->state == C_CONNECTING && k->writable && !k->dead) {
        conn_connected(t, k);
    }
    if (k->dead || k->state != C_OPEN) {
        return 0;
    }
    if (k->sx != NULL) { /* the SOCKS reply goes before the target's bytes */
        if (!socks_flush(k)) {
            return 0;
        }
        free(k->sx);
        k->sx = NULL;
    }
    if (conn_down(k) < 0) {
        return PYSSH_FAILED;
    }
    return k->dead ? 0 : conn_up(t, ssh, k);
}

/* The connection has nothing left to do. */
static int
conn_finished(const conn *k)
{
    if (k->dead) {
        return 1;
    }
    if (k->state == C_SOCKS) {
        return k->sx->closing && !socks_pending(k);
    }
    if (k->state != C_OPEN) {
        return 0;
    }
    int drained = k->io.avail[0] == 0 && k->pos == k->len;
    if (k->io.remote_closed && drained) {
        return 1; /* the server closed: nothing more can be sent */
    }
    /* EOF both ways, everything delivered (what was held back too) */
    return k->local_eof && k->hpos == k->hlen && k->shut;
}

/* ---- accepting ------------------------------------------------------------------- */

static int
accepting(const TunnelObject *t)
{
    return !t->stopping && (t->max_conns < 0 || (long long)t->served < t->max_conns);
}

/* The tunnel has a listening socket of its own (LOCAL, DYNAMIC). */
static int
listener(const TunnelObject *t)
{
    return t->kind == LOCAL || t->kind == DYNAMIC;
}

/* A new connection may be accepted now: DYNAMIC holds the others back while
 * SOCKS_MAX are in the handshake (they wait in the listening socket's backlog). */
static int
accept_now(const TunnelObject *t)
{
    return accepting(t) && (t->kind != DYNAMIC || t->nsocks < SOCKS_MAX);
}

/* The connection adopt_local gave becomes the tunnel's (its channel opened as
 * an accepted one's), once. */
static int
adopt_conn(TunnelObject *t, ssh_session ssh)
{
    pyssh_socket_t fd = t->adopt;
    t->adopt = PYSSH_INVALID_SOCKET;
    conn *k = conn_new(t, fd, C_OPENING, "ProxyJump");
    if (k == NULL) {
        pyssh_closesocket(fd);
        return PYSSH_FAILED;
    }
    if (pyssh_chanio_new(&k->io, ssh) < 0) {
        conn_free(t, k, 1, 1);
        return PYSSH_FAILED;
    }
    snprintf(k->orig, sizeof(k->orig), "127.0.0.1");
    return 0;
}

static int
accept_local(TunnelObject *t, ssh_session ssh)
{
    if (t->adopt != PYSSH_INVALID_SOCKET) {
        return adopt_conn(t, ssh);
    }
    for (int i = 0; i < ACCEPT_MAX && accept_now(t); i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        pyssh_socket_t fd = accept(t->lfd, (struct sockaddr *)&sa, &salen);
        if (fd == PYSSH_INVALID_SOCKET) {
            int e = pyssh_socket_errno();
            if (pyssh_would_block(e) || pyssh_interrupted(e) || pyssh_conn_aborted(e)) {
                return 0;
            }
            /* EMFILE and the like: say so, keep serving the connections there are */
            char why[256];
            pyssh_log_queue(t->session, SSH_LOG_WARNING,
                            "tunnel: accepting a connection failed: %s",
                            pyssh_socket_strerror(e, why, sizeof(why)));
            return 0;
        }
        if (sock_setup(fd) < 0) {
            pyssh_closesocket(fd);
            continue;
        }
        char host[64], peer[80];
        int port;
        peer_addr((struct sockaddr *)&sa, host, &port);
        snprintf(peer, sizeof(peer), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
        if (sa.ss_family != AF_INET && sa.ss_family != AF_INET6) {
            snprintf(peer, sizeof(peer), "a client of the local socket"); /* AF_UNIX */
        }
        conn *k = conn_new(t, fd, t->kind == DYNAMIC ? C_SOCKS : C_OPENING, peer);
        if (k == NULL) {
            pyssh_closesocket(fd);
            return PYSSH_FAILED;
        }
        /* DYNAMIC: the channel once the client says where to */
        if (t->kind == DYNAMIC ? socks_start(t, k) < 0 : pyssh_chanio_new(&k->io, ssh) < 0) {
            conn_free(t, k, 1, 1);
            return PYSSH_FAILED;
        }
        memcpy(k->orig, host, sizeof(k->orig));
        k->orig_port = port;
    }
    return 0;
}

static TunnelObject *
rforward_owner(SessionObject *s, int port)
{
    rforwards *r = s->rforwards;
    for (TunnelObject *o = r != NULL ? r->head : NULL; o != NULL; o = o->rnext) {
        if (o->rpath == NULL && o->bound == port) {
            return o;
        }
    }
    /* A tcpip-forward whose reply libssh read in the same pass as this open,
     * before greq_step could record the port: the open is that forward's (with
     * port 0 asked, the port is not known yet; one request is pending at most). */
    if (r != NULL && r->global_req != NULL && r->global_req != &ORPHAN_REQ) {
        TunnelObject *p = r->global_req;
        if (p->rpath == NULL && p->bound == 0 && (p->port == port || p->port == 0)) {
            return p;
        }
    }
    return NULL;
}

/* Queue a forwarded channel for `owner`'s run(), oldest first. 0, or -1 (no
 * memory, or the backlog is full: the caller refuses or closes the channel). */
static int
handover_push(TunnelObject *owner, ssh_channel chan, const char *peer)
{
    if (owner->nincoming >= TUNNEL_BACKLOG) {
        return -1;
    }
    handover *h = malloc(sizeof(*h));
    if (h == NULL) {
        return -1;
    }
    memset(h, 0, sizeof(*h));
    snprintf(h->peer, sizeof(h->peer), "%s", peer);
    pyssh_chanio_init(&h->io, owner->session, NULL, h);
    h->io.drop_stderr = 1;
    if (pyssh_chanio_accept(&h->io, chan) < 0) {
        free(h); /* what arrived would never be counted: refuse it */
        return -1;
    }
    handover **pp = &owner->incoming;
    while (*pp != NULL) {
        pp = &(*pp)->next;
    }
    *pp = h;
    owner->nincoming++;
    pyssh_waiter_ring(&owner->wake);
    return 0;
}

/* A new channel for a server's open, queued for `owner`'s run(); or NULL. */
static ssh_channel
hand_over(TunnelObject *owner, ssh_session ssh, const char *peer, const char **why)
{
    ssh_channel chan = ssh_channel_new(ssh);
    if (chan == NULL || handover_push(owner, chan, peer) < 0) {
        if (chan != NULL) {
            ssh_channel_free(chan);
        }
        *why = "out of memory";
        return NULL;
    }
    return chan;
}

ssh_channel
pyssh_tunnel_forwarded(SessionObject *s, ssh_session ssh, int port, const char *orig, int orig_port,
                       const char **why)
{
    TunnelObject *owner = rforward_owner(s, port);
    if (owner == NULL) {
        *why = "no remote forward of this session listens on that port";
        return NULL;
    }
    if (owner->nincoming >= TUNNEL_BACKLOG) {
        *why = "64 connections of that forward already wait for its tunnel to take them "
               "(TUNNEL_BACKLOG)";
        return NULL;
    }
    char peer[80];
    snprintf(peer, sizeof(peer), "%s:%d (on the server)", orig != NULL ? orig : "?", orig_port);
    return hand_over(owner, ssh, peer, why);
}

/* The remote forward listening on the server's socket `path`: among the
 * session's forwards, or the one whose streamlocal-forward is pending (its
 * reply and this open read in the same pass, as in rforward_owner). */
static TunnelObject *
rforward_unix_owner(SessionObject *s, const char *path)
{
    rforwards *r = s->rforwards;
    for (TunnelObject *o = r != NULL ? r->head : NULL; o != NULL; o = o->rnext) {
        if (o->rpath != NULL && strcmp(o->rpath, path) == 0) {
            return o;
        }
    }
    if (r != NULL && r->global_req != NULL && r->global_req != &ORPHAN_REQ) {
        TunnelObject *p = r->global_req;
        if (p->rpath != NULL && !p->rlistening && strcmp(p->rpath, path) == 0) {
            return p;
        }
    }
    return NULL;
}

ssh_channel
pyssh_tunnel_forwarded_unix(SessionObject *s, ssh_session ssh, const char *path, const char **why)
{
    TunnelObject *owner = path != NULL ? rforward_unix_owner(s, path) : NULL;
    if (owner == NULL) {
        *why = "no remote forward of this session listens on that socket";
        return NULL;
    }
    if (owner->nincoming >= TUNNEL_BACKLOG) {
        *why = "64 connections of that forward already wait for its tunnel to take them "
               "(TUNNEL_BACKLOG)";
        return NULL;
    }
    char peer[80];
    snprintf(peer, sizeof(peer), "a client of %.50s (on the server)", path);
    return hand_over(owner, ssh, peer, why);
}

ssh_channel
pyssh_tunnel_agent(SessionObject *s, ssh_session ssh, const char **why)
{
    TunnelObject *owner = s->agent;
    if (owner == NULL) {
        *why = "this session forwards no agent (connect's forward_agent)";
        return NULL;
    }
    if (owner->stopping) {
        *why = "the session's agent forwarding is stopping";
        return NULL;
    }
    /* each is a socket, a channel and up to two buffers: a server that opens
     * many gets no more */
    if (owner->nincoming + owner->nconns >= AGENT_MAX) {
        *why = "16 agent channels are open already (AGENT_MAX)";
        return NULL;
    }
    pyssh_log_queue(s, SSH_LOG_PACKET, "the server opened an agent channel: connecting it to %s",
                    owner->target);
    return hand_over(owner, ssh, "an agent client on the server", why);
}

int
pyssh_tunnel_agent_request(SessionObject *s, ssh_channel chan)
{
    TunnelObject *t = s->agent;
    if (t == NULL) {
        return 0;
    }
    if (ssh_channel_request_auth_agent(chan) != SSH_OK) {
        return PYSSH_FAILED;
    }
    if (!t->agent_asked) {
        t->agent_asked = 1;
        pyssh_log_queue(s, SSH_LOG_PACKET,
                        "asked the server to forward the agent on each command's channel "
                        "(auth-agent-req@openssh.com, no reply wanted: a server that does not "
                        "allow it, AllowAgentForwarding no, says nothing)");
    }
    return 0;
}

/* Make a connection of a forwarded channel that `from` kept while it waited
 * (NULL: `chan` was just accepted). */
static void
start_remote_conn(TunnelObject *t, pyssh_chanio *from, ssh_channel chan, const char *peer)
{
    pyssh_chanio just;
    if (from == NULL) {
        pyssh_chanio_init(&just, t->session, NULL, NULL);
        pyssh_chanio_accept(&just, chan);
        from = &just;
    }
    conn *k = accepting(t) ? conn_new(t, PYSSH_INVALID_SOCKET, C_CONNECTING, peer) : NULL;
    if (k == NULL) {
        pyssh_chanio_release(from);
        return;
    }
    pyssh_chanio_adopt(&k->io, from);
    int err = 0;
    if (conn_connect(t, k, t->ai, &err) < 0) {
        t->failed++;
        conn_refused(t, k, err);
    }
}

/* REMOTE: take the forwarded channels the server opened for this tunnel.
 * guard.c accepted them as they came (pyssh_tunnel_forwarded); with a libssh
 * without pyssh's patch they wait in libssh's queue, taken here for this
 * tunnel or another one of the session's. */
static void
accept_remote(TunnelObject *t, ssh_session ssh)
{
    while (t->incoming != NULL) {
        handover *h = t->incoming;
        t->incoming = h->next;
        t->nincoming--;
        start_remote_conn(t, &h->io, NULL, h->peer);
        free(h);
    }
#ifdef PYSSH_LIBSSH_CLIENT_REQUESTS
    (void)ssh;
#else
    for (int i = 0; i < ACCEPT_MAX && t->kind == REMOTE; i++) {
        int dport = 0, oport = 0;
        char *orig = NULL;
        ssh_channel chan = ssh_channel_open_forward_port(ssh, 0, &dport, &orig, &oport);
        if (chan == NULL) {
            return;
        }
        char peer[80];
        snprintf(peer, sizeof(peer), "%s:%d (on the server)", orig != NULL ? orig : "?", oport);
        ssh_string_free_char(orig);
        TunnelObject *owner = rforward_owner(t->session, dport);
        if (owner == t) {
            start_remote_conn(t, NULL, chan, peer);
        }
        else if (owner == NULL || handover_push(owner, chan, peer) < 0) {
            /* a port no tunnel serves any more (closed, or its cancel still on its way) */
            pyssh_chanio just;
            pyssh_chanio_init(&just, t->session, NULL, NULL);
            pyssh_chanio_accept(&just, chan);
            pyssh_chanio_release(&just);
        }
    }
#endif
}

/* ---- the step ----------------------------------------------------------------------- */

static int
pollset_build(TunnelObject *t)
{
    int need = PYSSH_POLL_RESERVED + 2 + t->nconns;
    if (need > t->fds_cap) {
        int cap = t->fds_cap ? t->fds_cap : 16;
        while (cap < need) {
            cap *= 2;
        }
        pyssh_pollfd *fds = realloc(t->ps.fds, sizeof(*fds) * (size_t)cap);
        if (fds == NULL) {
            return -1;
        }
        t->ps.fds = fds;
        t->fds_cap = cap;
    }
    int n = PYSSH_POLL_RESERVED;
    if (listener(t) && t->lfd != PYSSH_INVALID_SOCKET && accept_now(t)) {
        t->ps.fds[n].fd = t->lfd;
        t->ps.fds[n].events = POLLIN;
        t->ps.fds[n].revents = 0;
        n++;
    }
    for (conn *k = t->conns; k != NULL; k = k->next) {
        short ev = 0;
        k->pollidx = -1;
        if (k->fd == PYSSH_INVALID_SOCKET || k->dead) {
            continue;
        }
        if (k->state == C_CONNECTING) {
            ev = POLLOUT;
        }
        else if (k->state == C_SOCKS) {
            if (!k->readable && !k->sx->closing) {
                ev |= POLLIN;
            }
            if (!k->writable && socks_pending(k)) {
                ev |= POLLOUT;
            }
        }
        else if (k->state == C_OPEN) {
            if (!k->readable && !k->local_eof) {
                ev |= POLLIN;
            }
            if (!k->writable && (k->io.avail[0] > 0 || k->pos < k->len || socks_pending(k))) {
                ev |= POLLOUT;
            }
        }
        if (ev) {
            t->ps.fds[n].fd = k->fd;
            t->ps.fds[n].events = ev;
            t->ps.fds[n].revents = 0;
            k->pollidx = n;
            n++;
        }
    }
    t->wakeidx = -1;
    if (t->deferred && t->wake.rd != PYSSH_INVALID_SOCKET) {
        /* the blocking run's wait polls it in its own slot; an event loop sees
         * only the set */
        t->ps.fds[n].fd = t->wake.rd;
        t->ps.fds[n].events = POLLIN;
        t->ps.fds[n].revents = 0;
        t->wakeidx = n++;
    }
    t->ps.n = n;
    return 0;
}

/* What the last poll said, before anything changes the list. Returns whether
 * the listening socket is readable. */
static int
pollset_read(TunnelObject *t)
{
    int listen_ready = 0;
    if (t->ps.fds == NULL) {
        return 1;
    }
    if (listener(t) && t->ps.n > PYSSH_POLL_RESERVED &&
        t->ps.fds[PYSSH_POLL_RESERVED].fd == t->lfd) {
        listen_ready = t->ps.fds[PYSSH_POLL_RESERVED].revents != 0;
        t->ps.fds[PYSSH_POLL_RESERVED].revents = 0;
    }
    for (conn *k = t->conns; k != NULL; k = k->next) {
        if (k->pollidx < 0) {
            continue;
        }
        short r = t->ps.fds[k->pollidx].revents;
        t->ps.fds[k->pollidx].revents = 0;
        if (r & (POLLIN | POLLHUP | POLLERR)) {
            k->readable = 1;
        }
        if (r & (POLLOUT | POLLHUP | POLLERR)) {
            k->writable = 1;
        }
        k->pollidx = -1;
    }
    if (t->wakeidx >= 0 && t->wakeidx < t->ps.n && t->ps.fds[t->wakeidx].revents != 0) {
        t->ps.fds[t->wakeidx].revents = 0;
        pyssh_wake_drain(t->wake.rd); /* a stop(): this step sees `stopping` */
    }
    t->wakeidx = -1;
    return listen_ready;
}

/* Stopping: a channel being opened must get its answer before it is closed. */
static int
stop_conn(TunnelObject *t, ssh_session ssh, conn *k)
{
    if (k->state == C_OPENING && k->fd != PYSSH_INVALID_SOCKET) {
        close_local(k);
    }
    if (k->state == C_OPENING && conn_service(t, ssh, k) < 0) {
        return PYSSH_FAILED;
    }
    conn_free(t, k, 1, pyssh_monotonic() >= t->stop_deadline);
    return 0;
}

/* One round of the tunnel's step: accept, then move what every connection can
 * move; once the socket is idle, send what the last read gathered. */
static int
tunnel_round(void *state, ssh_session ssh, int idle)
{
    TunnelObject *t = state;
    int ready = t->listen_ready || t->adopt != PYSSH_INVALID_SOCKET;
    if (!idle && listener(t) && ready && accept_local(t, ssh) < 0) {
        return PYSSH_FAILED;
    }
    t->listen_ready = 0;
    if (!idle && !listener(t)) {
        accept_remote(t, ssh);
    }
    conn *next;
    for (conn *k = t->conns; k != NULL; k = next) {
        next = k->next;
        if (t->stopping) {
            if (!idle && stop_conn(t, ssh, k) < 0) {
                return PYSSH_FAILED;
            }
            continue;
        }
        if (conn_service(t, ssh, k) < 0) {
            return PYSSH_FAILED;
        }
        if (!idle && conn_finished(k)) {
            conn_free(t, k, 1, 1);
        }
    }
    return PYSSH_CHANIO_MORE;
}

static int
step_locked(ssh_session ssh, TunnelObject *t)
{
    t->listen_ready = pollset_read(t);
    if (t->stopping && t->stop_deadline == 0) {
        t->stop_deadline = pyssh_monotonic() + STOP_GRACE;
    }
    pyssh_chanio_job job = {t->session, NULL, NULL, tunnel_round, t, NULL, ROUNDS_MAX};
    if (pyssh_chanio_step(ssh, &job) == PYSSH_FAILED) {
        return PYSSH_FAILED;
    }
    /* the end: stopped, or every allowed connection served, or idle too long */
    t->ps.wait_ms = -1;
    if (t->nconns == 0) {
        if (t->stopping || (t->max_conns >= 0 && (long long)t->served >= t->max_conns)) {
            return 0;
        }
        if (t->idle_timeout >= 0) {
            double left = t->idle_since + t->idle_timeout - pyssh_monotonic();
            if (left <= 0) {
                return 0;
            }
            /* a wait is a slice of the wait helper's at most: no need for more */
            t->ps.wait_ms = left > 60 ? 60000 : (int)(left * 1000) + 1;
        }
    }
    else if (t->stopping) {
        t->ps.wait_ms = 50; /* channels being opened: look again soon */
    }
    else if (t->kind == DYNAMIC) {
        socks_wake(t); /* a handshake's time limit */
    }
    if (pollset_build(t) < 0) {
        return PYSSH_FAILED;
    }
    return PYSSH_AGAIN;
}

static int
tunnel_step(ssh_session ssh, void *p)
{
    TunnelObject *t = p;
    t->in_step = 1;
    int rc = step_locked(ssh, t);
    t->in_step = 0;
    return rc;
}

/* ---- ProxyJump: a hop's bridge, moved by the session it carries -------------------------- */

int
pyssh_tunnel_carry_start(PyObject *obj)
{
    TunnelObject *t = (TunnelObject *)obj;
    /* claimed as run() and never released: run() and close() are refused from
     * here. The claim comes first: with it held, `adopt` and `carrying` are this
     * call's to read (adopt_local sets `adopt` under a claim; a carried
     * session's waits clear `carrying` only after this set it). */
    if (pyssh_atomic_cas_str(&t->claim.method, NULL, "run") != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "not a tunnel of adopt_local() that nothing runs");
        return -1;
    }
    if (t->adopt == PYSSH_INVALID_SOCKET || t->carrying) {
        pyssh_unclaim(&t->claim);
        PyErr_SetString(PyExc_RuntimeError, "not a tunnel of adopt_local() that nothing runs");
        return -1;
    }
    /* under the jump host's lock, where the carried session's waits (any
     * thread, no GIL) read them (pyssh_tunnel_carry) */
    pyssh_lock(t->session);
    t->max_conns = 1;
    t->carrying = 1;
    pyssh_unlock(t->session);
    return 0;
}

SessionObject *
pyssh_tunnel_session(PyObject *obj)
{
    return ((TunnelObject *)obj)->session;
}

/* Lock held: the bridge is gone; `why`, unless a reason is known already. */
static void
carry_stop(TunnelObject *t, int session_alive, const char *why, const char *detail)
{
    if (t->failure[0] == '\0') {
        snprintf(t->failure, sizeof(t->failure), "%s%s%.300s", why, *detail ? ": " : "", detail);
    }
    conns_free_all(t, session_alive);
    t->carrying = 0;
}

/* Lock held, the session open: one step of the tunnel. Its connection's socket
 * is polled by the carried session's wait, whose results it does not see: the
 * step tries it, and a read or write that would block says what to poll. */
static int
carry_step(TunnelObject *t, ssh_session ssh, pyssh_pollfd fds[2])
{
    for (conn *k = t->conns; k != NULL; k = k->next) {
        k->readable = k->writable = 1;
    }
    int rc = tunnel_step(ssh, t);
    if (rc == PYSSH_AGAIN) {
        fds[0].fd = ssh_get_fd(ssh);
        fds[0].events = POLLIN;
        if (ssh_get_poll_flags(ssh) & SSH_WRITE_PENDING) {
            fds[0].events |= POLLOUT;
        }
        if (t->conns != NULL && t->conns->pollidx >= 0) {
            fds[1].fd = t->ps.fds[t->conns->pollidx].fd;
            fds[1].events = t->ps.fds[t->conns->pollidx].events;
        }
        return 1;
    }
    if (rc == PYSSH_FAILED) {
        const char *e = ssh_get_error(ssh);
        carry_stop(t, 0, "the connection to the jump host failed", e != NULL ? e : "");
    }
    else {
        carry_stop(t, 1, "the jump host closed the channel to the next host", "");
    }
    return 0;
}

int
pyssh_tunnel_carry(PyObject *obj, pyssh_pollfd fds[2], pyssh_logmsg **logs, char *why, size_t n)
{
    TunnelObject *t = (TunnelObject *)obj;
    SessionObject *s = t->session;
    int alive = 0;
    for (int i = 0; i < 2; i++) {
        fds[i].fd = PYSSH_INVALID_SOCKET;
        fds[i].events = fds[i].revents = 0;
    }
    PyThread_acquire_lock(s->lock, WAIT_LOCK);
    ssh_session ssh = pyssh_session_ssh(s);
    if (t->carrying) {
        pyssh_log_attach(s);
        if (ssh == NULL || t->pid != pyssh_getpid()) {
            carry_stop(t, 0, "the jump host's session was closed", "");
        }
        else {
            alive = carry_step(t, ssh, fds);
        }
        *logs = pyssh_log_take(s);
    }
    if (!alive) {
        snprintf(why, n, "%s", t->failure);
    }
    PyThread_release_lock(s->lock);
    return alive;
}

void
pyssh_tunnel_carry_end(PyObject *obj)
{
    TunnelObject *t = (TunnelObject *)obj;
    SessionObject *s = t->session;
    pyssh_pollfd fds[2];
    PyThread_acquire_lock(s->lock, WAIT_LOCK);
    if (t->carrying) {
        pyssh_log_attach(s);
        ssh_session ssh = pyssh_session_ssh(s);
        int alive = ssh != NULL && t->pid == pyssh_getpid();
        if (alive) {
            /* the carried session's last words (its disconnect) go on first */
            alive = carry_step(t, ssh, fds);
        }
        carry_stop(t, alive, "the session it carried was closed", "");
    }
    PyThread_release_lock(s->lock);
}

/* ---- lifetime ------------------------------------------------------------------------- */

static int
tunnel_init(PyObject *obj)
{
    TunnelObject *self = (TunnelObject *)obj;
    self->lfd = PYSSH_INVALID_SOCKET;
    self->adopt = PYSSH_INVALID_SOCKET;
    self->max_conns = -1;
    self->idle_timeout = -1;
    self->socks_timeout = 30.0;
    self->wakeidx = -1;
    self->wake.rd = self->wake.wr = PYSSH_INVALID_SOCKET;
    int err = pyssh_waiter_open(&self->wake);
    if (err != 0) {
        pyssh_set_socket_error(err);
        return -1;
    }
    self->scratch = malloc(READ_MAX);
    if (self->scratch == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static PyObject *
tunnel_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return pyssh_chanuser_new(type, args, kwds, "O!:Tunnel", tunnel_init);
}

/* Lock held: this tunnel no longer takes the server's connections. */
static void
rforward_unlink(TunnelObject *self)
{
    rforwards *r = self->session->rforwards;
    if (r == NULL) {
        return;
    }
    for (TunnelObject **pp = &r->head; *pp != NULL; pp = &(*pp)->rnext) {
        if (*pp == self) {
            *pp = self->rnext;
            break;
        }
    }
    self->rnext = NULL;
}

/* The target's addresses: getaddrinfo's (REMOTE), or the agent's socket (AGENT). */
static void
target_free(TunnelObject *self)
{
    if (self->ai != NULL && self->ai != &self->agent_ai) {
        freeaddrinfo(self->ai);
    }
    self->ai = NULL;
}

/* The one close of the connections, shared by close(), run()'s error paths and
 * dealloc: never waits for the server. */
static void
tunnel_drop(TunnelObject *self, int emit_logs)
{
    SessionObject *s = self->session;
    pyssh_logmsg *logs = NULL;
    int forked = self->pid != pyssh_getpid();
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(s->lock, WAIT_LOCK);
    pyssh_log_attach(s);
    conns_free_all(self, pyssh_session_ssh(s) != NULL && !forked);
    if (self->kind == REMOTE) {
        rforward_unlink(self);
    }
    if (s->agent == self) {
        s->agent = NULL; /* commands no longer ask for the agent, nor get it */
    }
    logs = pyssh_log_take(s);
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS
    pyssh_log_finish(s, logs, emit_logs);
}

static void
tunnel_dealloc(TunnelObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->session != NULL) {
        tunnel_drop(self, 0);
        Py_CLEAR(self->session);
    }
    pyssh_waiter_close(&self->wake);
    if (self->adopt != PYSSH_INVALID_SOCKET) {
        pyssh_closesocket(self->adopt); /* given, never run */
    }
    target_free(self);
    free(self->host);
    free(self->rpath);
    free(self->scratch);
    free(self->ps.fds);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* The state check at the top of run(), listen_local(), listen_remote() and
 * close(), which also claims the tunnel for the call (`call` names it): `running`
 * is set right after it is found clear, before any Python code runs
 * (max_connections' __index__, idle_timeout's __float__) and before the GIL is
 * released (getaddrinfo, the session lock, the waits), so that nothing slips in
 * between: two run() would put the tunnel's waiter twice in the session's list
 * and grow the poll set under each other's poll; a second listen_remote() would
 * free the host and addresses the first one's request reads. `need_open`: the
 * session must be open. The caller clears it on every way out (unclaim).
 * Returns -1 with an exception set. */
static int
claim(TunnelObject *self, const char *call, int need_open)
{
    const char *holder = pyssh_claim_holder(&self->claim);
    if (holder != NULL && strcmp(holder, "run") == 0) {
        PyErr_SetString(PyExc_RuntimeError, "the tunnel is running: stop() it first");
        return -1;
    }
    return pyssh_claim_take(&self->claim, self->session, "tunnel", call,
                            need_open ? PYSSH_NEED_OPEN : PYSSH_NEED_NOTHING);
}

static void
unclaim(TunnelObject *self)
{
    pyssh_unclaim(&self->claim);
}

/* ---- configuring ------------------------------------------------------------------------ */

PyDoc_STRVAR(listen_local_doc,
             "listen_local($self, fd, host, port, remote_unix=False, /)\n--\n\n"
             "Serve the listening socket `fd` (bound, listening, owned by the caller): each\n"
             "connection is carried through the server to host:port (ssh -L), or with\n"
             "remote_unix to the server's Unix socket `host` (direct-streamlocal).");

/* What listen_on sets besides the listening socket and the target. */
struct listen_extra {
    pyssh_socket_t adopt; /* adopt_local's one connection, or PYSSH_INVALID_SOCKET */
    int remote_unix;      /* LOCAL: `host` is the server's Unix socket */
    double socks_timeout; /* DYNAMIC: the handshake's limit */
};

/* Lock taken here: `kind` and `port` are read by the port getter, which holds
 * no claim (from any thread: only the session lock orders it with this). */
static void
set_kind_port(TunnelObject *self, int kind, int port)
{
    pyssh_lock(self->session);
    self->kind = kind;
    self->port = port;
    pyssh_unlock(self->session);
}

/* listen_local(), adopt_local() and listen_dynamic(): serve the listening
 * socket `fd`, as `kind`, carrying connections to host:port (DYNAMIC: "", 0).
 * Everything is set with the claim held, `x` too: once it is released with
 * `configured` set, a run() of another thread may start and read it all. On
 * failure the tunnel does not own x->adopt (the caller closes it). */
static PyObject *
listen_on(TunnelObject *self, const char *call, long long fd, const char *host, int port, int kind,
          const struct listen_extra *x)
{
    if (claim(self, call, 1) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (self->configured) {
        PyErr_SetString(PyExc_RuntimeError, "the tunnel is already set up");
        goto done;
    }
    if ((pyssh_socket_t)fd != PYSSH_INVALID_SOCKET && sock_setup((pyssh_socket_t)fd) < 0) {
        pyssh_set_socket_error(pyssh_socket_errno());
        goto done;
    }
    char *copy = strdup(host);
    char *rpath = x->remote_unix ? strdup(host) : NULL;
    if (copy == NULL || (x->remote_unix && rpath == NULL)) {
        free(copy);
        free(rpath);
        PyErr_NoMemory();
        goto done;
    }
    free(self->host);
    self->host = copy;
    free(self->rpath);
    self->rpath = rpath;
    self->lfd = (pyssh_socket_t)fd;
    self->adopt = x->adopt;
    self->socks_timeout = x->socks_timeout;
    set_kind_port(self, kind, port);
    self->configured = 1;
    result = Py_NewRef(Py_None);
done:
    unclaim(self);
    return result;
}

static PyObject *
tunnel_listen_local(TunnelObject *self, PyObject *args)
{
    long long fd; /* a SOCKET on Windows: wider than an int */
    int port, remote_unix = 0;
    const char *host;
    if (!PyArg_ParseTuple(args, "Lsi|p:listen_local", &fd, &host, &port, &remote_unix)) {
        return NULL;
    }
    struct listen_extra x = {PYSSH_INVALID_SOCKET, remote_unix, 30.0};
    return listen_on(self, "listen_local", fd, host, port, LOCAL, &x);
}

PyDoc_STRVAR(adopt_local_doc,
             "adopt_local($self, fd, host, port, /)\n--\n\n"
             "Carry the one connected socket `fd` to host:port through the server, as a\n"
             "local forward's connection (a ProxyJump hop: the next session's socket).\n"
             "The tunnel owns `fd` from here, and closes it.");

static PyObject *
tunnel_adopt_local(TunnelObject *self, PyObject *args)
{
    long long fd; /* a SOCKET on Windows: wider than an int */
    int port;
    const char *host;
    if (!PyArg_ParseTuple(args, "Lsi:adopt_local", &fd, &host, &port)) {
        return NULL;
    }
    if (sock_setup((pyssh_socket_t)fd) < 0) {
        int e = pyssh_socket_errno();
        pyssh_closesocket((pyssh_socket_t)fd);
        pyssh_set_socket_error(e);
        return NULL;
    }
    struct listen_extra x = {(pyssh_socket_t)fd, 0, 30.0};
    PyObject *r = listen_on(self, "adopt_local", PYSSH_INVALID_SOCKET, host, port, LOCAL, &x);
    if (r == NULL) {
        pyssh_closesocket((pyssh_socket_t)fd);
    }
    return r;
}

PyDoc_STRVAR(listen_dynamic_doc,
             "listen_dynamic($self, fd, handshake_timeout=30.0, /)\n--\n\n"
             "Serve the listening socket `fd` (bound, listening, owned by the caller) as a\n"
             "SOCKS 4, 4a and 5 proxy (ssh -D): each connection is carried through the\n"
             "server to the host and port its client asks for. A client whose handshake\n"
             "takes longer than handshake_timeout seconds is closed.");

static PyObject *
tunnel_listen_dynamic(TunnelObject *self, PyObject *args)
{
    long long fd;
    double timeout = 30.0;
    if (!PyArg_ParseTuple(args, "L|d:listen_dynamic", &fd, &timeout)) {
        return NULL;
    }
    if (!(timeout > 0 && timeout <= 86400)) {
        PyErr_Format(PyExc_ValueError,
                     "handshake_timeout must be between 0 and 86400 seconds, not %R",
                     PyTuple_GET_ITEM(args, 1));
        return NULL;
    }
    struct listen_extra x = {PYSSH_INVALID_SOCKET, 0, timeout};
    return listen_on(self, "listen_dynamic", fd, "", 0, DYNAMIC, &x);
}

struct greq_arg {
    TunnelObject *t;
    int cancel;
    int bound;
    int refused; /* the server refused the tcpip-forward (SSH_REQUEST_DENIED) */
};

/* The request itself: tcpip-forward, or streamlocal-forward@openssh.com for a
 * socket path (pyssh's patch), or their cancel. */
static int
greq_send(ssh_session ssh, struct greq_arg *a)
{
    TunnelObject *t = a->t;
    if (t->rpath != NULL) {
#ifdef PYSSH_LIBSSH_STREAMLOCAL
        return a->cancel ? ssh_channel_cancel_forward_unix(ssh, t->rpath)
                         : ssh_channel_listen_forward_unix(ssh, t->rpath);
#else
        return SSH_ERROR; /* listen_remote_unix refused it already */
#endif
    }
    const char *addr = t->host != NULL && *t->host ? t->host : NULL;
    return a->cancel ? ssh_channel_cancel_forward(ssh, addr, t->bound)
                     : ssh_channel_listen_forward(ssh, addr, t->port, &a->bound);
}

/* tcpip-forward or cancel-tcpip-forward (streamlocal too), one at a time per
 * session. */
static int
greq_step(ssh_session ssh, void *p)
{
    struct greq_arg *a = p;
    TunnelObject *t = a->t;
    rforwards *r = session_rforwards(t->session);
    if (r == NULL) {
        return PYSSH_FAILED;
    }
    if (r->global_req == &ORPHAN_REQ) {
        /* a request whose caller gave up: wait for its reply, and ignore it */
        int rc = ssh_channel_cancel_forward(ssh, NULL, 0);
        if (rc == SSH_AGAIN) {
            return PYSSH_AGAIN;
        }
        r->global_req = NULL;
    }
    if (r->global_req != NULL && r->global_req != t) {
        return PYSSH_AGAIN; /* another tunnel's reply is awaited */
    }
    r->global_req = t;
    int rc = greq_send(ssh, a);
    if (rc == SSH_AGAIN) {
        return PYSSH_AGAIN;
    }
    r->global_req = NULL;
    if (rc != SSH_OK && !a->cancel && ssh_get_error_code(ssh) == SSH_REQUEST_DENIED) {
        a->refused = 1; /* the server said no: listen_remote explains */
        return 0;
    }
    if (rc != SSH_OK) {
        return PYSSH_FAILED;
    }
    if (!a->cancel) {
        t->bound = t->rpath != NULL ? 0 : t->port != 0 ? t->port : a->bound;
        t->rlistening = t->rpath != NULL;
        t->rnext = r->head;
        r->head = t;
    }
    return 0;
}

/* After an interrupted request: the reply is still due. Lock taken here. */
static void
greq_orphan(TunnelObject *t)
{
    SessionObject *s = t->session;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(s->lock, WAIT_LOCK);
    rforwards *r = s->rforwards;
    if (r != NULL && r->global_req == t) {
        r->global_req = &ORPHAN_REQ;
    }
    PyThread_release_lock(s->lock);
    Py_END_ALLOW_THREADS
}

/* Point the tunnel's target at the local Unix socket `path`: 0, or
 * pyssh_unix_address's error (no exception set). */
static int
unix_target(TunnelObject *self, const char *path)
{
    socklen_t len = 0;
    struct sockaddr_storage sa;
    int rc = pyssh_unix_address(path, &sa, &len);
    if (rc != 0) {
        return rc;
    }
    target_free(self);
    self->agent_sa = sa;
    memset(&self->agent_ai, 0, sizeof(self->agent_ai));
    self->agent_ai.ai_family = AF_UNIX;
    self->agent_ai.ai_socktype = SOCK_STREAM;
    self->agent_ai.ai_addr = (struct sockaddr *)&self->agent_sa;
    self->agent_ai.ai_addrlen = len;
    self->ai = &self->agent_ai;
    snprintf(self->target, sizeof(self->target), "%s", path);
    return 0;
}

/* REMOTE's target: thost:tport resolved once, or with tport 0 the local Unix
 * socket `thost`. 0, or -1 with an exception. */
static int
remote_target(TunnelObject *self, const char *thost, int tport)
{
    if (tport == 0) {
        int rc = unix_target(self, thost);
        if (rc == PYSSH_UNIX_UNSUPPORTED) {
            PyErr_SetString(PyExc_NotImplementedError,
                            "Unix-domain socket targets are not supported on this system");
        }
        else if (rc != 0) {
            PyErr_Format(PyExc_ValueError,
                         "the local socket path is empty or too long for a socket address "
                         "(%zu bytes): %s",
                         strlen(thost), thost);
        }
        return rc == 0 ? 0 : -1;
    }
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", tport);
    int grc;
    Py_BEGIN_ALLOW_THREADS
    grc = getaddrinfo(thost, portstr, &hints, &ai);
    Py_END_ALLOW_THREADS
    if (grc != 0) {
        PyErr_Format(PyExc_OSError, "the tunnel's target %s:%d could not be resolved: %s", thost,
                     tport, gai_strerror(grc));
        return -1;
    }
    target_free(self);
    self->ai = ai;
    snprintf(self->target, sizeof(self->target), "%s:%d", thost, tport);
    return 0;
}

/* Where a remote forward asks the server to listen, for messages. */
static void
remote_where(const TunnelObject *self, char *where, size_t n)
{
    if (self->rpath != NULL) {
        snprintf(where, n, "the socket %.300s", self->rpath);
    }
    else {
        snprintf(where, n, "%.280s:%d", *self->host ? self->host : "*", self->port);
    }
}

/* The server's answer to the request to listen: 0 (the tunnel is set up), or
 * -1 with an exception (it refused). */
static int
remote_listened(TunnelObject *self, const struct greq_arg *a)
{
    if (a->refused) {
        char where[320];
        remote_where(self, where, sizeof(where));
        pyssh_raise(self->session->state, PYSSH_EXC_SSHError,
                    self->rpath != NULL
                        ? "the server refused to listen on %s: the socket may exist already "
                          "(sshd_config: StreamLocalBindUnlink yes replaces it), its directory "
                          "be missing or not writable there, or the server forbids it "
                          "(AllowStreamLocalForwarding)"
                        : "the server refused to listen on %s: the port may be in use or "
                          "privileged there, or the server forbids remote forwarding "
                          "(sshd_config: AllowTcpForwarding, PermitListen)",
                    where);
        return -1;
    }
    self->configured = 1;
    return 0;
}

/* listen_remote(defer=True): the request as an Op, whose result is the port. */
static PyObject *
listen_finish(SessionObject *s, void *p, int rc)
{
    (void)s;
    (void)rc;
    struct greq_arg *a = p;
    return remote_listened(a->t, a) < 0 ? NULL : PyLong_FromLong(a->t->bound);
}

static void
listen_release(SessionObject *s, void *p)
{
    (void)s;
    struct greq_arg *a = p;
    if (!a->t->configured) {
        greq_orphan(a->t); /* failed or cancelled: its reply may still be due */
    }
    unclaim(a->t);
}

static const pyssh_op_kind listen_kind = {"asking the server to listen",
                                          PYSSH_EXC_SSHError,
                                          greq_step,
                                          sizeof(struct greq_arg),
                                          listen_finish,
                                          NULL,
                                          listen_release,
                                          NULL,
                                          NULL};

/* Ask the server to listen (the tunnel is set up for it, and claimed): the
 * port, or NULL with an exception. `defer`: an Op that asks, which holds the
 * claim until it ends. */
static PyObject *
remote_listen(TunnelObject *self, pyssh_deadline *dl, int defer)
{
    char where[320];
    remote_where(self, where, sizeof(where));
    snprintf(self->what, sizeof(self->what),
             "asking the server to listen on %.200s for a tunnel to %.180s", where, self->target);
    struct greq_arg a = {self, 0, 0, 0};
    if (defer) {
        return pyssh_op_start(self->session, &listen_kind, &a, dl, self->what, 1, (PyObject *)self,
                              NULL, NULL);
    }
    int rc = pyssh_wait(self->session, greq_step, &a, dl, PYSSH_EXC_SSHError, self->what);
    if (rc < 0) {
        greq_orphan(self);
        return NULL;
    }
    if (remote_listened(self, &a) < 0) {
        return NULL;
    }
    return PyLong_FromLong(self->bound); /* written by its own request's step */
}

/* listen_remote() and listen_remote_unix(): set up and ask. `rpath`: the
 * server's socket path, or NULL for bind:port. */
static PyObject *
listen_remote_on(TunnelObject *self, const char *call, const char *bind, int port,
                 const char *rpath, const char *thost, int tport, pyssh_deadline *dl, int defer)
{
    if (claim(self, call, 1) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (self->configured) {
        PyErr_SetString(PyExc_RuntimeError, "the tunnel is already set up");
        goto done;
    }
    if (remote_target(self, thost, tport) < 0) {
        goto done;
    }
    free(self->host);
    free(self->rpath);
    self->rpath = NULL;
    self->host = strdup(bind);
    if (self->host == NULL || (rpath != NULL && (self->rpath = strdup(rpath)) == NULL)) {
        PyErr_NoMemory();
        goto done;
    }
    set_kind_port(self, REMOTE, port);
    result = remote_listen(self, dl, defer);
    if (defer) {
        return result; /* the Op's claim now (NULL: listen_release gave it back) */
    }
done:
    unclaim(self);
    return result;
}

PyDoc_STRVAR(listen_remote_doc,
             "listen_remote($self, bind_address, port, target_host, target_port, timeout, /, *,\n"
             "              defer=False)\n--\n\n"
             "Ask the server to listen on bind_address:port (port 0: it picks one) and carry\n"
             "each connection to target_host:target_port from here (ssh -R); target_port 0:\n"
             "to the local Unix socket target_host. Returns the port (defer=True: an Op whose\n"
             "result it is).");

static PyObject *
tunnel_listen_remote(TunnelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"", "", "", "", "", "defer", NULL};
    const char *bind, *thost;
    int port, tport, defer = 0;
    pyssh_deadline dl;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "sisiO&|$p:listen_remote", kwlist, &bind, &port,
                                     &thost, &tport, pyssh_deadline_conv, &dl, &defer)) {
        return NULL;
    }
    return listen_remote_on(self, "listen_remote", bind, port, NULL, thost, tport, &dl, defer);
}

PyDoc_STRVAR(listen_remote_unix_doc,
             "listen_remote_unix($self, path, target_host, target_port, timeout, /, *,\n"
             "                   defer=False)\n--\n\n"
             "Ask the server to listen on its Unix socket `path` (streamlocal-forward) and\n"
             "carry each connection to target_host:target_port from here (target_port 0: to\n"
             "the local Unix socket target_host). Returns 0 (defer=True: an Op whose result\n"
             "it is).");

static PyObject *
tunnel_listen_remote_unix(TunnelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"", "", "", "", "defer", NULL};
    const char *path, *thost;
    int tport, defer = 0;
    pyssh_deadline dl;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ssiO&|$p:listen_remote_unix", kwlist, &path,
                                     &thost, &tport, pyssh_deadline_conv, &dl, &defer)) {
        return NULL;
    }
#ifndef PYSSH_LIBSSH_STREAMLOCAL
    (void)self;
    (void)path;
    (void)defer;
    PyErr_SetString(PyExc_NotImplementedError,
                    "remote forwarding of a Unix socket needs pyssh's libssh patch "
                    "(vendor/patches/libssh-*-streamlocal.patch), which this build lacks");
    return NULL;
#else
    return listen_remote_on(self, "listen_remote_unix", "", 0, path, thost, tport, &dl, defer);
#endif
}

/* Point the tunnel at the agent's socket `path`: 0, or -1 with an exception. */
static int
agent_target(TunnelObject *self, const char *path)
{
    int rc = unix_target(self, path);
    if (rc == PYSSH_UNIX_UNSUPPORTED) {
        pyssh_raise(self->session->state, PYSSH_EXC_SSHError,
                    "agent forwarding is not supported on this system: its OpenSSH agent "
                    "listens on a named pipe, which pyssh does not reach");
        return -1;
    }
    if (rc != 0) {
        PyErr_Format(PyExc_ValueError,
                     "the agent's socket path is empty or too long for a socket address "
                     "(%zu bytes): %s",
                     strlen(path), path);
        return -1;
    }
    snprintf(self->target, sizeof(self->target), "the agent at %s", path);
    return 0;
}

PyDoc_STRVAR(listen_agent_doc,
             "listen_agent($self, path, /)\n--\n\n"
             "Forward the agent whose socket is `path` (ssh -A): from now on each command's\n"
             "channel asks the server for agent forwarding, and run() connects each agent\n"
             "channel the server opens to `path`. One per session.");

static PyObject *
tunnel_listen_agent(TunnelObject *self, PyObject *args)
{
    PyObject *path;
    if (!PyArg_ParseTuple(args, "O&:listen_agent", PyUnicode_FSConverter, &path)) {
        return NULL;
    }
    if (claim(self, "listen_agent", 1) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    PyObject *result = NULL;
    if (self->configured) {
        PyErr_SetString(PyExc_RuntimeError, "the tunnel is already set up");
        goto done;
    }
#ifndef PYSSH_LIBSSH_CLIENT_REQUESTS
    pyssh_raise(self->session->state, PYSSH_EXC_SSHError,
                "agent forwarding needs pyssh's libssh patch (vendor/patches/): this build "
                "cannot take the channels the server opens");
    goto done;
#endif
    if (agent_target(self, PyBytes_AS_STRING(path)) < 0) {
        goto done;
    }
    pyssh_lock(self->session);
    self->kind = AGENT; /* read by the port getter, under the lock */
    int taken = self->session->agent != NULL;
    if (!taken) {
        self->session->agent = self;
    }
    pyssh_unlock(self->session);
    if (taken) {
        PyErr_SetString(PyExc_RuntimeError, "the session forwards an agent already");
        goto done;
    }
    self->configured = 1;
    result = Py_NewRef(Py_None);
done:
    Py_DECREF(path);
    unclaim(self);
    return result;
}

/* ---- running ------------------------------------------------------------------------------ */

static PyObject *
stats_tuple(TunnelObject *self)
{
    unsigned long long up = self->up, down = self->down;
    for (conn *k = self->conns; k != NULL; k = k->next) {
        up += k->up;
        down += k->down;
    }
    PyObject *v[5] = {PyLong_FromUnsignedLongLong(self->served), PyLong_FromUnsignedLongLong(up),
                      PyLong_FromUnsignedLongLong(down), PyLong_FromUnsignedLongLong(self->failed),
                      PyLong_FromLong(self->nconns)};
    return pyssh_named_result(self->session->state->TunnelCountsType, v, 5);
}

/* What run() does, for messages, into self->what. */
static void
run_what(TunnelObject *self)
{
    char *what = self->what;
    size_t n = sizeof(self->what);
    if (self->kind == LOCAL && self->rpath != NULL) {
        snprintf(what, n, "tunnel to the server's socket %.300s", self->rpath);
    }
    else if (self->kind == LOCAL) {
        snprintf(what, n, "tunnel to %.300s:%d", self->host, self->port);
    }
    else if (self->kind == DYNAMIC) {
        snprintf(what, n, "SOCKS proxy through the server");
    }
    else if (self->kind == REMOTE && self->rpath != NULL) {
        snprintf(what, n, "tunnel from the server's socket %.100s to %.200s", self->rpath,
                 self->target);
    }
    else if (self->kind == REMOTE) {
        snprintf(what, n, "tunnel from the server's port %d to %.300s", self->bound, self->target);
    }
    else {
        snprintf(what, n, "agent forwarding to %.300s", self->target);
    }
}

/* run()'s end, whatever ended it: this run took the stop request. Cleared
 * under the lock: stop() sets it under the lock from any thread, and the
 * server's agent channel opens read it (pyssh_tunnel_agent) in any thread's
 * step; no GIL orders them. `failed` (Ctrl-C, the session closed or failed, an
 * Op cancelled): every connection goes. */
static void
run_end(TunnelObject *self, int failed)
{
    if (failed) {
        tunnel_drop(self, 1);
    }
    pyssh_lock(self->session);
    self->stopping = 0;
    pyssh_unlock(self->session);
}

/* ---- run(defer=True): an Op that an event loop steps ---------------------------------------- */

typedef struct {
    TunnelObject *t; /* kept alive by the Op (its owner) */
    int finished;    /* served to its end: the stats are the result */
} run_arg;

static int
run_step(ssh_session ssh, void *p)
{
    return tunnel_step(ssh, ((run_arg *)p)->t);
}

static PyObject *
run_finish(SessionObject *s, void *p, int rc)
{
    (void)rc;
    run_arg *a = p;
    a->finished = 1;
    run_end(a->t, 0);
    pyssh_lock(s); /* as the stats getter: the counts are the steps' */
    PyObject *r = stats_tuple(a->t);
    pyssh_unlock(s);
    return r;
}

/* Once, however it ended: a failure or Op.cancel() ends the connections as
 * Ctrl-C does the blocking run's; then the claim goes. */
static void
run_release(SessionObject *s, void *p)
{
    (void)s;
    run_arg *a = p;
    if (!a->finished) {
        run_end(a->t, 1);
    }
    a->t->deferred = 0;
    a->t->wakeidx = -1;
    unclaim(a->t);
}

static const pyssh_op_kind run_kind = {"running a tunnel",
                                       PYSSH_EXC_SSHError,
                                       run_step,
                                       sizeof(run_arg),
                                       run_finish,
                                       NULL,
                                       run_release,
                                       NULL,
                                       NULL};

/* The claimed tunnel's run() as an Op: the claim is the Op's until it ends. */
static PyObject *
run_deferred(TunnelObject *self)
{
    run_arg a = {self, 0};
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    self->deferred = 1;
    PyObject *op = pyssh_op_start(self->session, &run_kind, &a, &dl, self->what, 1,
                                  (PyObject *)self, NULL, NULL);
    if (op != NULL) {
        pyssh_op_entry(op)->ps = &self->ps; /* Op.step() reports the tunnel's sockets */
    }
    return op; /* (NULL: run_release gave the claim back) */
}

PyDoc_STRVAR(run_doc,
             "run($self, /, max_connections=None, idle_timeout=None, *, defer=False)\n--\n\n"
             "Serve connections until stop(), until max_connections have been served and\n"
             "have ended, or until idle_timeout seconds pass with no connection open. The\n"
             "GIL is released while it runs. Returns the stats tuple. With defer=True,\n"
             "an Op that serves them as it is stepped (Op.step(), an event loop): its\n"
             "result is the stats tuple; Op.cancel() closes every connection; stop() from\n"
             "any thread ends it.");

static PyObject *
tunnel_run(TunnelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_connections", "idle_timeout", "defer", NULL};
    PyObject *maxobj = Py_None;
    pyssh_deadline idle = PYSSH_NO_DEADLINE; /* its seconds: the one timeout converter */
    int defer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO&$p:run", kwlist, &maxobj, pyssh_deadline_conv,
                                     &idle, &defer)) {
        return NULL;
    }
    if (claim(self, "run", 1) < 0) {
        return NULL;
    }
    PyObject *result = NULL;
    if (!self->configured) {
        PyErr_SetString(PyExc_RuntimeError, "call listen_local() or listen_remote() first");
        goto done;
    }
    long long maxc = -1;
    if (maxobj != Py_None) {
        maxc = PyLong_AsLongLong(maxobj);
        if (maxc == -1 && PyErr_Occurred()) {
            goto done;
        }
    }
    self->max_conns = maxc;
    self->idle_timeout = idle.timeout;
    self->idle_since = pyssh_monotonic();
    /* `stopping` is not cleared here: a stop() made before this run() began (the
     * Python layer's close() may come before its thread gets here) would be lost,
     * and the tunnel would serve on, its closer waiting for it forever */
    self->stop_deadline = 0;
    self->ps.wait_ms = -1;
    run_what(self);
    if (defer) {
        return run_deferred(self);
    }
    int rc = pyssh_wait_ex(self->session, tunnel_step, self, NULL, PYSSH_EXC_SSHError, self->what,
                           &self->ps, &self->wake);
    run_end(self, rc < 0);
    if (rc >= 0) {
        /* under the lock, as the stats getter: the counts are the steps' */
        pyssh_lock(self->session);
        result = stats_tuple(self);
        pyssh_unlock(self->session);
    }
done:
    unclaim(self);
    return result;
}

PyDoc_STRVAR(stop_doc,
             "stop($self, /)\n--\n\n"
             "Ask run() to close every connection and return (from any thread). Asked before\n"
             "run() starts, it makes the next run() return at once.");

static PyObject *
tunnel_stop(TunnelObject *self, PyObject *Py_UNUSED(ignored))
{
    pyssh_lock(self->session);
    self->stopping = 1;
    pyssh_unlock(self->session);
    pyssh_waiter_ring(&self->wake);
    Py_RETURN_NONE;
}

/* The end of close(), whatever the server answered: the claimed tunnel is set
 * up no more. Under the lock: the port getter reads `bound`, stop() and the
 * agent's channel opens `stopping`, from any thread and without the claim. */
static void
close_end(TunnelObject *self)
{
    pyssh_lock(self->session);
    self->bound = 0;
    self->rlistening = 0;
    self->stopping = 0; /* a stop() no run() took does not outlive the close */
    pyssh_unlock(self->session);
    self->configured = 0;
    unclaim(self);
}

/* close(defer=True) of a remote forward: the cancel request as an Op. */
static PyObject *
close_finish(SessionObject *s, void *p, int rc)
{
    (void)s;
    (void)p;
    (void)rc;
    Py_RETURN_NONE;
}

static void
close_release(SessionObject *s, void *p)
{
    (void)s;
    struct greq_arg *a = p;
    greq_orphan(a->t); /* failed or cancelled: its reply may still be due (the forward
                          ends with the session); answered: nothing */
    close_end(a->t);
}

static const pyssh_op_kind close_kind = {"closing the server's port",
                                         PYSSH_EXC_SSHError,
                                         greq_step,
                                         sizeof(struct greq_arg),
                                         close_finish,
                                         NULL,
                                         close_release,
                                         NULL,
                                         NULL};

PyDoc_STRVAR(close_doc,
             "close($self, /, timeout=5.0, *, defer=False)\n--\n\n"
             "Close every connection and, for a remote forward, ask the server to stop\n"
             "listening (waiting at most `timeout` seconds for its answer). Safe to call more\n"
             "than once; not while run() runs. defer=True: the connections are closed at\n"
             "once, and the request to the server is an Op (result None; an error of its\n"
             "only says the forward ends with the session), or None when there is none.");

static PyObject *
tunnel_close(TunnelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", "defer", NULL};
    pyssh_deadline dl;
    int defer = 0;
    pyssh_deadline_start(&dl, 5.0, 0);
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O&$p:close", kwlist, pyssh_deadline_conv, &dl,
                                     &defer)) {
        return NULL;
    }
    /* claimed too: dropping the connections waits for the session lock with the
     * GIL released, and the cancel request waits for the server */
    if (claim(self, "close", 0) < 0) {
        return NULL;
    }
    int listening = self->kind == REMOTE && (self->bound != 0 || self->rlistening);
    tunnel_drop(self, 1);
    if (listening && pyssh_session_ssh(self->session) != NULL && self->pid == pyssh_getpid()) {
        struct greq_arg a = {self, 1, 0, 0};
        if (self->rpath != NULL) {
            snprintf(self->what, sizeof(self->what), "closing the server's socket %.300s",
                     self->rpath);
        }
        else {
            snprintf(self->what, sizeof(self->what), "closing the server's port %d", self->bound);
        }
        pyssh_deadline_start(&dl, dl.timeout, 0); /* from here: dropping took its time */
        if (defer) {
            /* (NULL: close_release ended the close) */
            return pyssh_op_start(self->session, &close_kind, &a, &dl, self->what, 1,
                                  (PyObject *)self, NULL, NULL);
        }
        int rc = pyssh_wait(self->session, greq_step, &a, &dl, PYSSH_EXC_SSHError, self->what);
        if (rc < 0) {
            greq_orphan(self);
            /* the connection is gone or slow: the forward ends with the session */
            PyErr_Clear();
        }
    }
    close_end(self);
    Py_RETURN_NONE;
}

static PyObject *
tunnel_get_stats(TunnelObject *self, void *closure)
{
    (void)closure;
    pyssh_lock(self->session);
    PyObject *r = stats_tuple(self);
    pyssh_unlock(self->session);
    return r;
}

static PyObject *
tunnel_get_port(TunnelObject *self, void *closure)
{
    (void)closure;
    /* no claim (any thread, while run() runs too): `kind`, `port` and `bound`
     * are written under the lock, `bound` by a listen_remote()'s step */
    pyssh_lock(self->session);
    long port = self->kind == REMOTE ? self->bound : self->port;
    pyssh_unlock(self->session);
    return PyLong_FromLong(port);
}

static PyMethodDef tunnel_methods[] = {
    {"listen_local", (PyCFunction)tunnel_listen_local, METH_VARARGS, listen_local_doc},
    {"listen_dynamic", (PyCFunction)tunnel_listen_dynamic, METH_VARARGS, listen_dynamic_doc},
    {"adopt_local", (PyCFunction)tunnel_adopt_local, METH_VARARGS, adopt_local_doc},
    {"listen_remote", (PyCFunction)(void (*)(void))tunnel_listen_remote,
     METH_VARARGS | METH_KEYWORDS, listen_remote_doc},
    {"listen_remote_unix", (PyCFunction)(void (*)(void))tunnel_listen_remote_unix,
     METH_VARARGS | METH_KEYWORDS, listen_remote_unix_doc},
    {"listen_agent", (PyCFunction)tunnel_listen_agent, METH_VARARGS, listen_agent_doc},
    {"run", (PyCFunction)(void (*)(void))tunnel_run, METH_VARARGS | METH_KEYWORDS, run_doc},
    {"stop", (PyCFunction)tunnel_stop, METH_NOARGS, stop_doc},
    {"close", (PyCFunction)(void (*)(void))tunnel_close, METH_VARARGS | METH_KEYWORDS, close_doc},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef tunnel_getset[] = {
    {"stats", (getter)tunnel_get_stats, NULL,
     "(connections, bytes_to_target, bytes_from_target, failed, active)", NULL},
    {"port", (getter)tunnel_get_port, NULL,
     "the server's listening port (remote forward), or the target's port", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyDoc_STRVAR(tunnel_doc, "Tunnel(session)\n--\n\n"
                         "One port forward through `session`, run by run(). Internal: use\n"
                         "Session.tunnel(), forward_local() and forward_remote().");

static PyType_Slot tunnel_slots[] = {
    {Py_tp_new, tunnel_new},       {Py_tp_dealloc, tunnel_dealloc}, {Py_tp_methods, tunnel_methods},
    {Py_tp_getset, tunnel_getset}, {Py_tp_doc, (void *)tunnel_doc}, {0, NULL}};

PyType_Spec pyssh_tunnel_spec = {
    .name = "pyssh._ssh.Tunnel",
    .basicsize = sizeof(TunnelObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = tunnel_slots,
};
