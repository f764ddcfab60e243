/* pyssh._ssh.SFTP: pyssh's own SFTP (version 3) client over one channel.
 *
 * Not libssh's sftp_* functions: on a non-blocking session every one of them that
 * waits for a reply fails at once, and its aio functions truncate requests when
 * the window is short and lose the stream when a reply is half-read (libssh
 * 0.11.5, sftp_common.c: sftp_packet_read; sftp_aio.c). Here the channel is
 * driven like every other in pyssh: steps under the session lock with the GIL
 * released, waits in the shared helper (wait.c).
 *
 * The C side does the framing (length, type, request id), matches replies to
 * requests, and runs the two loops that move file data with many requests in
 * flight: download() (READ requests, DATA written to a file descriptor at its
 * offset) and upload() (file data sent in WRITE requests). Everything else
 * (INIT's extensions, attributes, names, statuses to exceptions, the trees) is
 * Python's (pyssh/_sftp.py), through request(): one request, its reply.
 *
 * The channel's bytes move through the channel-I/O core (chanio.c). Incoming
 * data: its data callback offers what arrives, which sftp_take copies into `in`
 * while this object's step holds the lock (from the decrypted packet, thanks to
 * pyssh's libssh patch); frames are parsed there. Outgoing: requests are built
 * in `out` and written within the peer's window (pyssh_chanio_write), the rest
 * kept for the next step. */
#include "chanio.h"

#include <errno.h>
#include <string.h>

#define IN_MAX           (1024 * 1024 + 64) /* the longest frame accepted from the server */
#define INFLIGHT_MAX     512                /* requests of one transfer in flight on one channel */
#define BATCH_MAX        64
#define DISCARD_MAX      (INFLIGHT_MAX + BATCH_MAX)
#define SEND_DISCARD_MAX 64 /* send()'s unanswered requests: then it waits */
#define STRIPES_MAX      16
#define STRIPE_AHEAD     PYSSH_SFTP_STRIPE_AHEAD
/* A striped download's receive windows together stay within this. */
#define STRIPED_WINDOWS (128u << 20)
#define ROUNDS_MAX      256
#define EXT_FIELDS_MAX  11   /* statvfs@openssh.com's reply: 11 uint64 */
#define EXT_STATUS_ONLY (-1) /* fsync, hardlink, copy-data: a STATUS is the answer */

typedef struct {
    PyObject_HEAD SessionObject *session; /* strong reference */
    long pid;          /* the creator's (pyssh_chanuser): a forked child skips the goodbye */
    pyssh_chanio io;   /* io.chan: NULL until started, and again once closed */
    pyssh_claim claim; /* the method running (atomic: pyssh_claim_take) */
    int started;
    uint32_t next_id;
    /* touched with the session lock held */
    char *in; /* bytes received, frames not yet parsed */
    size_t in_len;
    char *out; /* requests not yet accepted by the channel */
    size_t out_pos, out_len, out_cap;
    uint32_t discard[DISCARD_MAX];      /* ids whose replies nobody waits for (send(), or an
                                      operation stopped early) */
    unsigned char by_send[DISCARD_MAX]; /* that one came from send() */
    int ndiscard, nsend;                /* nsend: how many came from send() */
    uint64_t complete_to; /* the last transfer: every byte below this was moved (lock held:
                             its getter holds no claim) */
} SFTPObject;

/* ---- what arrives (inside libssh, lock held) ------------------------------------ */

/* ---- bytes ------------------------------------------------------------------------- */

static void
put32(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

static uint32_t
get32(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    return ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3];
}

static void
put64(char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* Room for n more bytes in `out`. */
static char *
out_reserve(SFTPObject *self, size_t n)
{
    if (self->out_pos > 0 && self->out_pos == self->out_len) {
        self->out_pos = self->out_len = 0;
    }
    if (self->out_len + n > self->out_cap) {
        if (self->out_pos > 0) {
            memmove(self->out, self->out + self->out_pos, self->out_len - self->out_pos);
            self->out_len -= self->out_pos;
            self->out_pos = 0;
        }
        if (self->out_len + n > self->out_cap) {
            size_t cap = self->out_cap ? self->out_cap : 64 * 1024;
            while (cap < self->out_len + n) {
                cap *= 2;
            }
            char *p = realloc(self->out, cap);
            if (p == NULL) {
                return NULL;
            }
            self->out = p;
            self->out_cap = cap;
        }
    }
    char *p = self->out + self->out_len;
    self->out_len += n;
    return p;
}

/* Queue a request: type, id, then `body` (n bytes) and `tail` (m bytes). */
static int
out_request(SFTPObject *self, int type, uint32_t id, const char *body, size_t n, const char *tail,
            size_t m)
{
    char *p = out_reserve(self, 9 + n + m);
    if (p == NULL) {
        return -1;
    }
    put32(p, (uint32_t)(5 + n + m));
    p[4] = (char)type;
    put32(p + 5, id);
    if (n) {
        memcpy(p + 9, body, n);
    }
    if (m) {
        memcpy(p + 9 + n, tail, m);
    }
    return 0;
}

/* ---- one step's I/O ---------------------------------------------------------------- */

/* Send what the window takes. Returns bytes sent, or -1. */
static long
flush_out(SFTPObject *self, ssh_session ssh)
{
    long sent = 0;
    while (self->out_pos < self->out_len) {
        long w = pyssh_chanio_write(&self->io, ssh, self->out + self->out_pos,
                                    self->out_len - self->out_pos);
        if (w == PYSSH_CHANIO_CLOSED || w == 0) {
            break; /* closed: the step says so */
        }
        if (w < 0) {
            return -1;
        }
        self->out_pos += (size_t)w;
        sent += w;
    }
    return sent;
}

/* Take what libssh holds for the channel (data that came in another thread's
 * step, or that did not fit). */
static int
take_avail(SFTPObject *self)
{
    int n;
    while ((n = pyssh_chanio_read(&self->io, 0, self->in + self->in_len, IN_MAX - self->in_len)) >
           0) {
        self->in_len += (size_t)n;
    }
    return n;
}

/* A transfer's other channels (its stripes), or the other channels of
 * start() and batch(): SFTP objects of the same session; a transfer's have the file
 * open (its handle). */
typedef struct {
    int n;
    SFTPObject *s[STRIPES_MAX];
    Py_buffer handle[STRIPES_MAX];
} stripelist;

/* ---- operations --------------------------------------------------------------------- */

enum op_kind { OP_START, OP_REQUEST, OP_DOWNLOAD, OP_UPLOAD };

typedef struct {
    uint32_t id;
    uint64_t offset;
    uint32_t len;
} pending;

/* A request of request()/batch() waiting for its reply: what it asked, so that
 * the reply is checked against it (ext_fields: an extension whose reply is that
 * many uint64, EXT_STATUS_ONLY for one answered by a status alone, 0 for others;
 * asked: a READ's length, the most its DATA may hold). */
struct want {
    uint32_t id;
    int req;
    int ext_fields;
    uint32_t asked;
};

/* The part of a file that a transfer moves, shared by its stripes (one op per
 * channel): where the next request starts, where to stop, what the server
 * said of the end. */
struct span {
    uint64_t next_offset, end; /* end: upload size; download: UINT64_MAX until EOF */
    int eof;                   /* download: the server said EOF */
    uint64_t eof_at;           /* where the file ended (UINT64_MAX: not seen) */
    uint64_t data_end;         /* download: the end of the furthest data received */
    uint64_t hole;             /* download: the first offset whose data was not kept */
    struct op **ops;           /* the stripes (nops > 1), for lowest_in_flight */
    int nops;
};

struct op {
    SFTPObject *s;
    enum op_kind kind;
    int phase;                  /* OP_START: 0 opening, 2 INIT queued */
    int dropped;                /* start(also=): the server refused this channel */
    const char *protocol_error; /* the server broke the protocol: why */
    int done;
    /* OP_START: VERSION after its type; OP_REQUEST: the replies to `nwant` requests */
    int nwant, ngot;
    struct want want[BATCH_MAX];
    int reply_type[BATCH_MAX];
    char *reply[BATCH_MAX]; /* malloc'd payload after the id */
    size_t reply_len[BATCH_MAX];
    /* transfers */
    const char *handle;
    size_t handle_len;
    int fd;
    struct span *sp; /* own, or the one the stripes share */
    struct span own;
    uint32_t chunk;
    int inflight_max;
    pending inflight[INFLIGHT_MAX];
    int ninflight;
    uint64_t inflight_bytes; /* download: bytes asked for and not yet received */
    uint64_t moved;
    int64_t status;       /* a failed status: its code (uint32), -1 none */
    char status_msg[256]; /* its message, status_len bytes (not text yet) */
    size_t status_len;
    int local_errno;
    double next_progress;
    pyssh_deadline *dl; /* the timeout: each reply pushes it back */
    char *buf;          /* upload: file data to send */
    /* read()/write(): memory instead of a file descriptor (fd -1) */
    char *mem;         /* read: the destination; write: the source */
    uint64_t mem_base; /* the remote offset of mem[0] */
    size_t partial;    /* download: bytes seen of a DATA reply still arriving */
};

/* Taken only inside this object's own steps (their jobs' take); in another
 * thread's step on the session libssh keeps it (chanio counts it). stderr is
 * dropped by chanio. */
static uint32_t
sftp_take(void *state, int stream, const char *data, uint32_t len)
{
    SFTPObject *self = ((struct op *)state)->s;
    if (stream != 0 || self->in == NULL) {
        return 0;
    }
    size_t room = IN_MAX - self->in_len;
    uint32_t taken = len < room ? len : (uint32_t)room;
    memcpy(self->in + self->in_len, data, taken);
    self->in_len += taken;
    return taken;
}

static void
op_status(struct op *o, const struct sftp_reply *r)
{
    size_t k = r->msg_len < sizeof(o->status_msg) - 1 ? r->msg_len : sizeof(o->status_msg) - 1;
    o->status = r->code;
    if (k > 0) {
        memcpy(o->status_msg, r->msg, k);
    }
    o->status_len = k;
}

static pending *
find_pending(struct op *o, uint32_t id)
{
    for (int i = 0; i < o->ninflight; i++) {
        if (o->inflight[i].id == id) {
            return &o->inflight[i];
        }
    }
    return NULL;
}

static void
drop_pending(struct op *o, pending *p)
{
    o->inflight_bytes -= p->len;
    *p = o->inflight[--o->ninflight];
}

static long
pread_some(int fd, char *p, size_t n, uint64_t off)
{
    for (;;) {
        long r = pyssh_pread(fd, p, n, off);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        return (long)r;
    }
}

/* A copy of a reply's payload, kept until the operation returns. */
static int
keep_reply(struct op *o, int i, int type, const char *p, size_t n)
{
    o->reply[i] = malloc(n ? n : 1);
    if (o->reply[i] == NULL) {
        o->protocol_error = "out of memory";
        return -1;
    }
    memcpy(o->reply[i], p, n);
    o->reply_len[i] = n;
    o->reply_type[i] = type;
    return 0;
}

static void
frame_start(struct op *o, int type, const char *p, size_t n)
{
    uint32_t version;
    sftp_cur ext;
    const char *why = "the server's first SFTP message was not VERSION";
    if (type != SFTP_VERSION || sftp_version_check(p, n, &version, &ext, &why) < 0) {
        o->protocol_error = why;
        return;
    }
    if (keep_reply(o, 0, type, p, n) == 0) {
        o->done = 1;
    }
}

/* A reply to one of request()/batch()'s requests, checked against what it answers. */
static void
frame_request(struct op *o, uint32_t id, int type, const char *p, size_t n)
{
    int i = 0;
    while (i < o->nwant && (o->want[i].id != id || o->reply[i] != NULL)) {
        i++;
    }
    if (i == o->nwant) {
        o->protocol_error = "an SFTP reply to a request that was not made";
        return;
    }
    struct sftp_reply r;
    const char *why;
    if (sftp_reply_check(o->want[i].req, type, p, n, o->want[i].asked, &r, &why) < 0) {
        o->protocol_error = why;
        return;
    }
    if (type == SFTP_EXTENDED_REPLY && o->want[i].ext_fields == EXT_STATUS_ONLY) {
        o->protocol_error = "an SFTP extended reply to an extension answered by a status";
        return;
    }
    if (type == SFTP_EXTENDED_REPLY && o->want[i].ext_fields > 0) {
        uint64_t v[EXT_FIELDS_MAX];
        if (sftp_u64_fields(r.data, r.data_len, v, (size_t)o->want[i].ext_fields, &why) < 0) {
            o->protocol_error = why;
            return;
        }
    }
    if (keep_reply(o, i, type, p, n) == 0 && ++o->ngot == o->nwant) {
        o->done = 1;
    }
}

/* The end of the file as the server says it (EOF, or no data): nothing may have
 * come from beyond it, in this reply or another. */
static void
saw_eof(struct op *o, uint64_t at)
{
    struct span *sp = o->sp;
    sp->eof = 1;
    if (at < sp->eof_at) {
        sp->eof_at = at;
    }
    if (sp->data_end > sp->eof_at) {
        o->protocol_error = "the server sent file data beyond the end of the file it reported "
                            "(the file changed while it was read, or the server is broken)";
    }
}

/* A short read (a server limit): ask again for the rest. */
static void
read_rest(struct op *o, pending *q, uint32_t got)
{
    q->offset += got;
    q->len -= got;
    o->inflight_bytes -= got;
    q->id = o->s->next_id++;
    char body[4 + SFTP_HANDLE_MAX + 12];
    size_t hl = o->handle_len;
    put32(body, (uint32_t)hl);
    memcpy(body + 4, o->handle, hl);
    put64(body + 4 + hl, q->offset);
    put32(body + 12 + hl, q->len);
    if (out_request(o->s, SFTP_READ, q->id, body, 16 + hl, NULL, 0) < 0) {
        o->protocol_error = "out of memory";
    }
}

/* Data from `at` on was not kept (an error): a failed download's file is cut
 * back to below it. */
static void
note_hole(struct op *o, uint64_t at)
{
    if (at < o->sp->hole) {
        o->sp->hole = at;
    }
}

static void
frame_read(struct op *o, pending *q, int type, const char *p, size_t n)
{
    struct sftp_reply r;
    const char *why;
    if (sftp_reply_check(SFTP_READ, type, p, n, q->len, &r, &why) < 0) {
        o->protocol_error = why;
        return;
    }
    if (type == SFTP_STATUS) {
        if (r.code == SFTP_FX_EOF) {
            saw_eof(o, q->offset);
        }
        else {
            note_hole(o, q->offset);
            if (o->status < 0) {
                op_status(o, &r);
            }
        }
        drop_pending(o, q);
        return;
    }
    uint32_t got = (uint32_t)r.data_len;
    if (got == 0) {
        saw_eof(o, q->offset);
        drop_pending(o, q);
        return;
    }
    if (q->offset + got > o->sp->eof_at) {
        o->protocol_error = "the server sent file data beyond the end of the file it reported "
                            "(the file changed while it was read, or the server is broken)";
        return;
    }
    if (q->offset + got > o->sp->data_end) {
        o->sp->data_end = q->offset + got;
    }
    if (o->mem != NULL) {
        memcpy(o->mem + (q->offset - o->mem_base), r.data, got);
    }
    else if (o->local_errno == 0 && o->status < 0) {
        int e = pyssh_write_all(o->fd, r.data, got, q->offset);
        if (e != 0) {
            o->local_errno = e;
            note_hole(o, q->offset);
        }
    }
    else {
        note_hole(o, q->offset);
    }
    o->moved += got;
    if (got < q->len) {
        read_rest(o, q, got);
        return;
    }
    drop_pending(o, q);
}

static void
frame_write(struct op *o, pending *q, int type, const char *p, size_t n)
{
    struct sftp_reply r;
    const char *why;
    if (sftp_reply_check(SFTP_WRITE, type, p, n, 0, &r, &why) < 0) {
        o->protocol_error = why;
        return;
    }
    if (r.code == SFTP_FX_OK) {
        o->moved += q->len;
    }
    else {
        note_hole(o, q->offset);
        if (o->status < 0) {
            op_status(o, &r);
        }
    }
    drop_pending(o, q);
}

/* One whole frame from the server: progress, whatever it says. */
static void
handle_frame(struct op *o, int type, const char *p, size_t n)
{
    pyssh_deadline_touch(o->dl);
    if (o->kind == OP_START) {
        frame_start(o, type, p, n);
        return;
    }
    if (n < 4) {
        o->protocol_error = "an SFTP reply without a request id";
        return;
    }
    uint32_t id = get32(p);
    SFTPObject *s = o->s;
    for (int i = 0; i < s->ndiscard; i++) {
        if (s->discard[i] == id) {
            s->nsend -= s->by_send[i];
            s->ndiscard--;
            s->discard[i] = s->discard[s->ndiscard];
            s->by_send[i] = s->by_send[s->ndiscard];
            return; /* a reply nobody waits for (send()) */
        }
    }
    if (o->kind == OP_REQUEST) {
        frame_request(o, id, type, p + 4, n - 4);
        return;
    }
    pending *q = find_pending(o, id);
    if (q == NULL) {
        o->protocol_error = "an SFTP reply to a request that was not made";
    }
    else if (o->kind == OP_DOWNLOAD) {
        frame_read(o, q, type, p + 4, n - 4);
    }
    else {
        frame_write(o, q, type, p + 4, n - 4);
    }
}

/* Download: the bytes of a DATA reply still arriving (a reply of up to 1 MiB on a
 * slow link takes long) are file data, progress like a whole reply: once its
 * header shows DATA for a READ in flight, no longer than asked, each byte more of
 * it pushes the deadline back. Anything else counts only when whole. */
static void
partial_progress(struct op *o)
{
    SFTPObject *s = o->s;
    size_t have = s->in_len;
    if (have < 13 || (unsigned char)s->in[4] != SFTP_DATA) {
        o->partial = 0;
        return;
    }
    pending *q = find_pending(o, get32(s->in + 5));
    if (q == NULL || get32(s->in + 9) > q->len) {
        o->partial = 0;
        return;
    }
    if (have > o->partial) {
        pyssh_deadline_touch(o->dl);
    }
    o->partial = have;
}

/* Parse the whole frames in `in`. */
static void
parse_frames(struct op *o)
{
    SFTPObject *s = o->s;
    size_t pos = 0;
    struct sftp_frame f;
    const char *why;
    int rc;
    while (!o->protocol_error &&
           (rc = sftp_frame(s->in + pos, s->in_len - pos, IN_MAX - 4, &f, &why)) != 0) {
        if (rc < 0) {
            o->protocol_error = why;
            break;
        }
        handle_frame(o, f.type, f.body, f.len);
        pos += f.consumed;
        if (o->done && (o->kind == OP_START || o->kind == OP_REQUEST)) {
            break;
        }
    }
    if (pos > 0) {
        memmove(s->in, s->in + pos, s->in_len - pos);
        s->in_len -= pos;
        o->partial = 0;
    }
    if (o->kind == OP_DOWNLOAD && !o->protocol_error) {
        partial_progress(o);
    }
}

static int
op_failed(const struct op *o)
{
    return o->status >= 0 || o->local_errno != 0 || o->protocol_error != NULL;
}

/* Where the lowest request still in flight starts (striped: on any channel),
 * or the next one when none is. */
static uint64_t
lowest_in_flight(const struct span *sp)
{
    uint64_t low = sp->next_offset;
    for (int k = 0; k < sp->nops; k++) {
        const struct op *o = sp->ops[k];
        for (int i = 0; i < o->ninflight; i++) {
            if (o->inflight[i].offset < low) {
                low = o->inflight[i].offset;
            }
        }
    }
    return low;
}

/* May `o` start another request? Not after a failure on any stripe, nor with
 * two chunks unsent (the window is shut: a request made now would only wait).
 * A download keeps as many bytes asked for as its receive window holds (and
 * at least `inflight` requests), so that the window, which grows with the
 * path (chanio), is what limits it. An upload keeps `inflight` requests (4 MiB
 * of 255 KiB, twice sshd's fixed window: more ran 10-15% slower on loopback,
 * and cannot go faster anyway); striping is what lifts its limit. */
static int
may_issue(struct op *o)
{
    struct span *sp = o->sp;
    SFTPObject *s = o->s;
    if (o->ninflight >= INFLIGHT_MAX || sp->next_offset >= sp->end ||
        (o->kind == OP_DOWNLOAD && sp->eof) ||
        s->out_len - s->out_pos >= (size_t)o->chunk * 2 + 1024) {
        return 0;
    }
    for (int k = 0; k < sp->nops; k++) {
        if (op_failed(sp->ops[k])) {
            return 0;
        }
    }
    if (op_failed(o) || (sp->nops > 1 && sp->next_offset - lowest_in_flight(sp) >= STRIPE_AHEAD)) {
        return 0;
    }
    if (o->ninflight < o->inflight_max) {
        return 1;
    }
    if (o->kind == OP_UPLOAD) {
        return 0;
    }
    return o->inflight_bytes < (uint64_t)pyssh_chanio_window(&s->io) + 2 * (uint64_t)o->chunk;
}

/* The data of the next WRITE into o->buf: its length, or 0 (o->local_errno set). */
static uint32_t
upload_data(struct op *o, uint64_t offset, uint32_t len)
{
    if (o->mem != NULL) {
        memcpy(o->buf, o->mem + (offset - o->mem_base), len);
        return len;
    }
    long r = pread_some(o->fd, o->buf, len, offset);
    if (r <= 0) {
        o->local_errno = r < 0 ? errno : -1; /* -1: the file is shorter than it was */
        return 0;
    }
    return (uint32_t)r;
}

/* Issue READ or WRITE requests while there is room in flight. */
static int
issue(struct op *o)
{
    SFTPObject *s = o->s;
    struct span *sp = o->sp;
    size_t hl = o->handle_len;
    char body[4 + SFTP_HANDLE_MAX + 12];
    while (may_issue(o)) {
        uint32_t len = o->chunk;
        if (sp->end - sp->next_offset < len) {
            len = (uint32_t)(sp->end - sp->next_offset);
        }
        if (o->kind == OP_UPLOAD && (len = upload_data(o, sp->next_offset, len)) == 0) {
            break;
        }
        pending *q = &o->inflight[o->ninflight++];
        q->id = s->next_id++;
        q->offset = sp->next_offset;
        q->len = len;
        o->inflight_bytes += len;
        put32(body, (uint32_t)hl);
        memcpy(body + 4, o->handle, hl);
        put64(body + 4 + hl, q->offset);
        put32(body + 12 + hl, len);
        int rc = o->kind == OP_DOWNLOAD
                     ? out_request(s, SFTP_READ, q->id, body, 16 + hl, NULL, 0)
                     : out_request(s, SFTP_WRITE, q->id, body, 16 + hl, o->buf, len);
        if (rc < 0) {
            return -1;
        }
        sp->next_offset += len;
    }
    return 0;
}

static int
op_finished(struct op *o)
{
    if (o->dropped) {
        return 1;
    }
    if (o->kind == OP_START || o->kind == OP_REQUEST) {
        return o->done;
    }
    if (o->ninflight > 0) {
        return 0;
    }
    struct span *sp = o->sp;
    for (int k = 0; k < sp->nops; k++) {
        if (op_failed(sp->ops[k])) {
            return 1;
        }
    }
    if (op_failed(o) || (o->kind == OP_DOWNLOAD && sp->eof)) {
        return 1;
    }
    return sp->next_offset >= sp->end;
}

/* start(): open the channel, ask for the subsystem, queue INIT. 0 once INIT is
 * queued (o->phase 2), PYSSH_AGAIN, PYSSH_FAILED, or 0 with a protocol error. */
static int
open_subsystem(struct op *o)
{
    SFTPObject *s = o->s;
    int rc = s->io.opened ? 0 : pyssh_chanio_open_session(&s->io);
    if (rc != 0) {
        return rc;
    }
    rc = ssh_channel_request_subsystem(s->io.chan, "sftp");
    if (rc == SSH_AGAIN) {
        return PYSSH_AGAIN;
    }
    if (rc != SSH_OK) {
        o->protocol_error = "the server has no SFTP subsystem (sshd_config: Subsystem sftp)";
        return 0;
    }
    o->phase = 2;
    char *q = out_reserve(s, 9);
    if (q == NULL) {
        return PYSSH_FAILED;
    }
    put32(q, 5);
    q[4] = SFTP_INIT;
    put32(q + 5, 3);
    return 0;
}

/* Take in and parse what arrived: 0, PYSSH_FAILED; o->protocol_error is set
 * when the server broke the protocol. */
static int
take_in(struct op *o)
{
    if (take_avail(o->s) < 0) {
        return PYSSH_FAILED;
    }
    parse_frames(o);
    return 0;
}

/* One round of an operation's step: start the subsystem (start()), parse
 * replies, issue requests, send. */
static int
op_round(void *state, ssh_session ssh, int Py_UNUSED(idle))
{
    struct op *o = state;
    SFTPObject *s = o->s;
    if (o->kind == OP_START && o->phase < 2) {
        int rc = open_subsystem(o);
        if (rc == PYSSH_AGAIN) {
            return PYSSH_CHANIO_MORE;
        }
        if (rc != 0 || o->protocol_error) {
            return rc;
        }
    }
    if (take_in(o) < 0) {
        return PYSSH_FAILED;
    }
    if (o->protocol_error || op_finished(o)) {
        return 0;
    }
    /* idle too: what the last read freed is asked again, and what is queued
     * (INIT) sent, before the wait */
    if ((o->kind == OP_DOWNLOAD || o->kind == OP_UPLOAD) && issue(o) < 0) {
        return PYSSH_FAILED;
    }
    long sent = flush_out(s, ssh);
    if (sent < 0) {
        return PYSSH_FAILED;
    }
    if (sent > 0) {
        /* the server's window took data: an upload over a slow link moves on
         * even while no WRITE is confirmed yet */
        pyssh_deadline_touch(o->dl);
    }
    if (op_finished(o) || (o->next_progress > 0 && pyssh_monotonic() >= o->next_progress)) {
        return 0;
    }
    if (s->io.remote_closed || (s->io.remote_eof && s->io.avail[0] == 0)) {
        o->protocol_error = "the server closed the SFTP channel";
        return 0;
    }
    return PYSSH_CHANIO_MORE;
}

/* ---- lifetime ----------------------------------------------------------------------- */

static int
sftp_init(PyObject *obj)
{
    SFTPObject *self = (SFTPObject *)obj;
    self->next_id = 1;
    pyssh_chanio_init(&self->io, self->session, NULL, NULL);
    self->io.drop_stderr = 1; /* the subsystem's stderr: nothing to do with it */
    return 0;                 /* `in` is made by start(): an unstarted one costs no 1 MiB */
}

static PyObject *
sftp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    return pyssh_chanuser_new(type, args, kwds, "O!:SFTP", sftp_init);
}

/* The one close, shared by close(), the error paths and dealloc. Idempotent.
 * `io.chan` is read and cleared under the session lock, where start() sets it;
 * the look before the lock, with the claim held, only skips the lock for a
 * channel never made: it changes only in a call that holds the claim, and
 * dealloc cannot run during a call. */
static void
sftp_close_impl(SFTPObject *self, int emit_logs)
{
    if (self->io.chan == NULL) {
        return;
    }
    pyssh_chanio_close(&self->io, self->pid, NULL, emit_logs);
}

static void
sftp_dealloc(SFTPObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    sftp_close_impl(self, 0);
    Py_CLEAR(self->session);
    free(self->in);
    free(self->out);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* The state check at the top of every method (pyssh_claim_take), which also
 * claims the channel for the call; `started`: it must be started, not closed. */
static int
claim(SFTPObject *self, const char *method, enum pyssh_need need, int started)
{
    if (pyssh_claim_take(&self->claim, self->session, "SFTP channel", method, need) < 0) {
        return -1;
    }
    /* looked at with the claim held: only a call that holds it starts or closes
     * the channel, so the answer cannot change under this call */
    if (started && need != PYSSH_NEED_NOTHING && self->io.chan == NULL) {
        pyssh_raise(self->session->state, PYSSH_EXC_SFTPError,
                    "the SFTP channel cannot be used: %s",
                    self->started ? "it is closed" : "it is not started");
        pyssh_unclaim(&self->claim);
        return -1;
    }
    return 0;
}

static void
unclaim(SFTPObject *self)
{
    pyssh_unclaim(&self->claim);
}

/* SFTPError(EPROTO): the server broke the protocol, so the stream cannot be
 * trusted any further (run_op closes the channel). */
static void
raise_protocol(pyssh_state *st, const char *what, const char *why)
{
    PyObject *args = Py_BuildValue(
        "(iN)", EPROTO,
        PyUnicode_FromFormat(
            "%s: the server broke the SFTP protocol: %s; the SFTP channel is closed (open "
            "another with session.sftp())",
            what, why));
    if (args != NULL) {
        PyErr_SetObject(st->exc[PYSSH_EXC_SFTPError], args);
        Py_DECREF(args);
    }
}

/* Several operations at once, each on its own channel of one session (the
 * stripes of a transfer, or the same request on several channels): one step
 * drives them all. */
struct opset {
    struct op **ops;
    int n;
};

/* One round of every operation not finished yet. */
static int
set_round(void *state, ssh_session ssh, int idle)
{
    struct opset *set = state;
    int more = 0;
    for (int i = 0; i < set->n; i++) {
        struct op *o = set->ops[i];
        if (op_finished(o)) {
            continue;
        }
        int rc = op_round(o, ssh, idle);
        if (rc == PYSSH_CHANIO_MORE) {
            more = 1;
        }
        else if (rc == PYSSH_REFUSED && o->kind == OP_START && i > 0) {
            o->dropped = 1; /* start(also=): the server allows fewer channels */
        }
        else if (rc < 0 || o->protocol_error || !op_finished(o)) {
            return rc; /* failed, broken, or progress to report */
        }
    }
    return more ? PYSSH_CHANIO_MORE : 0;
}

/* While a set runs, what arrives on each channel goes straight to its op,
 * whichever step reads it; afterwards only to the owner's own steps. */
static void
set_takes(struct opset *set, int on)
{
    pyssh_lock(set->ops[0]->s->session);
    for (int i = 0; i < set->n; i++) {
        set->ops[i]->s->io.take = on ? sftp_take : NULL;
        set->ops[i]->s->io.state = on ? set->ops[i] : NULL;
    }
    pyssh_unlock(set->ops[0]->s->session);
}

static const char *
set_broken(const struct opset *set)
{
    for (int i = 0; i < set->n; i++) {
        if (set->ops[i]->protocol_error) {
            return set->ops[i]->protocol_error;
        }
    }
    return NULL;
}

static int
set_finished(const struct opset *set, uint64_t *moved)
{
    int finished = 1;
    *moved = 0;
    for (int i = 0; i < set->n; i++) {
        finished &= op_finished(set->ops[i]);
        *moved += set->ops[i]->moved;
    }
    return finished;
}

/* An operation stopped early (an exception from a callback, Ctrl-C, a timeout):
 * the replies still due are dropped when they come, and the channel stays
 * usable. A broken stream, or too many replies due, closes it. */
static void
abandon(struct op *o)
{
    SFTPObject *self = o->s;
    int keep = o->protocol_error == NULL;
    pyssh_lock(self->session);
    if (keep) {
        int n = 0;
        uint32_t due[INFLIGHT_MAX + BATCH_MAX];
        if (o->kind == OP_REQUEST) {
            for (int i = 0; i < o->nwant; i++) {
                if (o->reply[i] == NULL) {
                    due[n++] = o->want[i].id;
                }
            }
        }
        else {
            for (int i = 0; i < o->ninflight; i++) {
                due[n++] = o->inflight[i].id;
            }
        }
        if (self->ndiscard + n <= DISCARD_MAX) {
            memcpy(self->discard + self->ndiscard, due, sizeof(uint32_t) * (size_t)n);
            memset(self->by_send + self->ndiscard, 0, (size_t)n);
            self->ndiscard += n;
        }
        else {
            keep = 0;
        }
    }
    pyssh_unlock(self->session);
    if (!keep) {
        sftp_close_impl(self, 1);
    }
}

/* Requests parsed from Python's (type, payload) pairs. */
typedef struct {
    int n;
    int type[BATCH_MAX];
    Py_buffer payload[BATCH_MAX];
} reqlist;

static void
reqs_release(reqlist *r)
{
    for (int i = 0; i < r->n; i++) {
        PyBuffer_Release(&r->payload[i]);
    }
    r->n = 0;
}

/* What a transfer moves: download/upload to `fd`, or read/write on `mem` (fd
 * -1), from `offset` to `end` (UINT64_MAX: the end of the remote file). */
struct xfer {
    enum op_kind kind;
    int fd;
    char *mem;
    uint64_t offset, end;
    int inflight;
    unsigned int chunk;
    int cut; /* download to fd: on failure, cut the file back to what all arrived */
};

/* ---- one SFTP method's run, as an operation (op.c) -------------------------------- *
 *
 * Every SFTP method that waits (start, batch, a transfer) sets up its ops, one
 * per channel, and hands a sftp_run to pyssh_op_start: waited for there as
 * the method always did, or deferred into an Op that a Driver moves with many
 * others. The ops are on the heap (they are big, and an Op outlives the
 * method's frame); what the run holds (claims, buffers, replies) goes in its
 * release, whatever happened. */
enum run_kind { RUN_START, RUN_BATCH, RUN_TRANSFER };

struct sftp_run {
    pyssh_chanio_job job; /* first: the step's */
    struct op *p[STRIPES_MAX + 1];
    struct opset set;
    enum run_kind kind;
    SFTPObject *self; /* the method's: claimed once self_claimed */
    int self_claimed;
    stripelist sl; /* the other channels: start's and batch's also, a transfer's stripes */
    int sl_claimed, sl_handles;
    PyObject *progress; /* a transfer's callback, borrowed from the method's args */
    const char *what;
    int takes;  /* set_takes(1) was done */
    int ok;     /* finished: what the ops kept is the result */
    int merged; /* a transfer: set_merge was done */
    double t0;
    reqlist *r; /* batch: the requests of each channel */
    int single; /* batch without also: its one list of replies */
    struct xfer x;
    Py_buffer handle, data; /* a transfer's handle; write()'s data */
    int have_handle, have_data;
    int ran;       /* a transfer was started: its end is merged (set_merge) */
    PyObject *out; /* read(): the bytes read into, owned */
};

static int
run_step(ssh_session ssh, void *p)
{
    return pyssh_chanio_step(ssh, &((struct sftp_run *)p)->job);
}

/* `self`'s method's run (zeroed, maybe its other channels set), with `n`
 * ops: 0, or -1 (no memory). */
static int
run_init(struct sftp_run *R, SFTPObject *self, enum run_kind kind, int n, const char *what)
{
    R->self = self;
    R->kind = kind;
    R->what = what;
    for (int i = 0; i < n; i++) {
        if ((R->p[i] = calloc(1, sizeof(struct op))) == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        R->set.n++;
        R->p[i]->status = -1;
    }
    return 0;
}

/* The run was copied (into an Op, or not): point what points into it at it. */
static void
run_relocate(void *arg, pyssh_deadline *dl)
{
    struct sftp_run *R = arg;
    R->set.ops = R->p;
    for (int i = 0; i < R->set.n; i++) {
        R->p[i]->dl = dl;
    }
    R->p[0]->own.ops = R->p; /* a transfer's span: its stripes, for lowest_in_flight */
    SFTPObject *self = R->self;
    /* no deadline for chanio: replies, not bytes, are the progress (handle_frame) */
    R->job = (pyssh_chanio_job){self->session, &self->io, sftp_take, op_round,
                                R->p[0],       NULL,      ROUNDS_MAX};
    if (R->set.n > 1) {
        R->job =
            (pyssh_chanio_job){self->session, NULL, NULL, set_round, &R->set, NULL, ROUNDS_MAX};
    }
}

/* A round ended (GIL held): 1 finished, 0 to go on, -1 with the exception. */
static int
run_round_end(struct sftp_run *R)
{
    uint64_t moved;
    const char *broken = set_broken(&R->set);
    if (broken) {
        raise_protocol(R->self->session->state, R->what, broken);
        return -1;
    }
    int finished = set_finished(&R->set, &moved);
    if (pyssh_progress(R->progress, &R->p[0]->next_progress, finished, moved) < 0 ||
        (!finished && PyErr_CheckSignals() < 0)) {
        return -1;
    }
    R->ok = finished;
    return finished;
}

static void
run_release_ops(struct sftp_run *R)
{
    for (int i = 0; i < R->set.n; i++) {
        struct op *o = R->p[i];
        if (R->kind == RUN_START && o->s != NULL && (!R->ok || o->dropped)) {
            sftp_close_impl(o->s, 1);
        }
        for (int k = 0; k < BATCH_MAX; k++) {
            free(o->reply[k]);
        }
        free(o->buf);
        free(o);
        R->p[i] = NULL;
    }
    R->set.n = 0;
}

static void
run_release_channels(struct sftp_run *R)
{
    for (int i = 0; i < R->sl.n; i++) {
        if (R->sl_claimed) {
            unclaim(R->sl.s[i]);
        }
        if (R->sl_handles) {
            PyBuffer_Release(&R->sl.handle[i]);
        }
        Py_DECREF(R->sl.s[i]);
    }
    R->sl.n = 0;
    if (R->self_claimed) {
        unclaim(R->self);
    }
}

static void set_merge(struct sftp_run *R, int rc);

/* Whatever happened: an unfinished run's replies still due are dropped when
 * they come (abandon), then everything it holds is given back. */
static void
run_release(SessionObject *s, void *arg)
{
    struct sftp_run *R = arg;
    (void)s;
    if (R->takes) {
        set_takes(&R->set, 0);
    }
    for (int i = 0; !R->ok && i < R->set.n; i++) {
        if (R->p[i]->kind != OP_START) {
            abandon(R->p[i]);
        }
    }
    if (R->kind == RUN_TRANSFER && R->ran && !R->merged) {
        set_merge(R, -1);
    }
    run_release_ops(R);
    if (R->r != NULL) {
        for (int i = 0; i <= STRIPES_MAX; i++) {
            reqs_release(&R->r[i]);
        }
        free(R->r);
    }
    if (R->have_handle) {
        PyBuffer_Release(&R->handle);
    }
    if (R->have_data) {
        PyBuffer_Release(&R->data);
    }
    Py_CLEAR(R->out);
    run_release_channels(R);
}

/* Run it now, or defer it (an Op); the run is given up either way. */
static PyObject *
run_go(struct sftp_run *R, const pyssh_op_kind *kind, pyssh_deadline *dl, int defer, PyObject *args,
       PyObject *kwds)
{
    run_relocate(R, dl);
    if (R->set.n > 1) {
        R->takes = 1;
        set_takes(&R->set, 1);
    }
    R->ran = 1;
    if (R->progress == NULL) {
        R->progress = Py_None;
    }
    if (R->progress != Py_None) {
        R->p[0]->next_progress = pyssh_monotonic() + PYSSH_PROGRESS_EVERY;
    }
    R->t0 = pyssh_monotonic();
    return pyssh_op_start(R->self->session, kind, R, dl, R->what, defer, (PyObject *)R->self, args,
                          kwds);
}

/* ---- replies as Python objects (from what sftpproto.c accepted) ----------------------- */

static PyObject *
opt_u64(const struct sftp_attrs *a, uint32_t flag, uint64_t v)
{
    if (!(a->flags & flag)) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLongLong(v);
}

/* (size, uid, gid, mode, atime, mtime, ((name, data), ...)); None where absent. */
static PyObject *
attrs_py(pyssh_state *st, const struct sftp_attrs *a)
{
    PyObject *ext = PyTuple_New(a->next);
    sftp_cur c = {(const unsigned char *)a->ext, a->ext_len};
    for (uint32_t i = 0; ext != NULL && i < a->next; i++) {
        const char *k, *v;
        size_t kl, vl;
        PyObject *pair = NULL;
        if (sftp_ext_next(&c, &k, &kl, &v, &vl) == 0) {
            pair = Py_BuildValue("(y#y#)", k, (Py_ssize_t)kl, v, (Py_ssize_t)vl);
        }
        if (pair == NULL) {
            Py_CLEAR(ext);
            break;
        }
        PyTuple_SET_ITEM(ext, i, pair);
    }
    if (ext == NULL) {
        return NULL;
    }
    PyObject *v[7] = {opt_u64(a, SFTP_A_SIZE, a->size),
                      opt_u64(a, SFTP_A_UIDGID, a->uid),
                      opt_u64(a, SFTP_A_UIDGID, a->gid),
                      opt_u64(a, SFTP_A_PERMISSIONS, a->perm),
                      opt_u64(a, SFTP_A_ACMODTIME, a->atime),
                      opt_u64(a, SFTP_A_ACMODTIME, a->mtime),
                      ext};
    return pyssh_named_result(st->SFTPAttrsType, v, 7);
}

/* [(name, longname, attrs), ...] */
static PyObject *
names_py(pyssh_state *st, const struct sftp_reply *r)
{
    PyObject *out = PyList_New(r->count);
    sftp_cur c = {(const unsigned char *)r->names, r->names_len};
    const char *why;
    for (uint32_t i = 0; out != NULL && i < r->count; i++) {
        struct sftp_name e;
        PyObject *item = NULL;
        if (sftp_name_next(&c, &e, &why) == 0) {
            PyObject *v[3] = {PyBytes_FromStringAndSize(e.name, (Py_ssize_t)e.name_len),
                              PyBytes_FromStringAndSize(e.longname, (Py_ssize_t)e.long_len),
                              attrs_py(st, &e.attrs)};
            item = pyssh_named_result(st->SFTPNameType, v, 3);
        }
        if (item == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

static PyObject *
u64_fields_py(const struct sftp_reply *r, int count)
{
    uint64_t v[EXT_FIELDS_MAX];
    const char *why;
    if (sftp_u64_fields(r->data, r->data_len, v, (size_t)count, &why) < 0) {
        return PyErr_Format(PyExc_SystemError, "a checked reply failed again: %s", why);
    }
    PyObject *out = PyTuple_New(count);
    for (int i = 0; out != NULL && i < count; i++) {
        PyObject *x = PyLong_FromUnsignedLongLong(v[i]);
        if (x == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyTuple_SET_ITEM(out, i, x);
    }
    return out;
}

/* (type, value) for a reply checked when it arrived: STATUS (code, message),
 * HANDLE/DATA bytes, NAME [(name, longname, attrs)], ATTRS attrs, EXTENDED_REPLY
 * a tuple of ints (limits, statvfs) or bytes. */
static PyObject *
reply_py(pyssh_state *st, const struct want *w, int type, const char *p, size_t n)
{
    struct sftp_reply r;
    const char *why;
    if (sftp_reply_check(w->req, type, p, n, w->asked, &r, &why) < 0) {
        return PyErr_Format(PyExc_SystemError, "a checked reply failed again: %s", why);
    }
    PyObject *v;
    switch (type) {
    case SFTP_STATUS:
        v = Py_BuildValue("(ky#)", (unsigned long)r.code, r.msg != NULL ? r.msg : "",
                          (Py_ssize_t)r.msg_len);
        break;
    case SFTP_NAME:
        v = names_py(st, &r);
        break;
    case SFTP_ATTRS:
        v = attrs_py(st, &r.attrs);
        break;
    case SFTP_EXTENDED_REPLY:
        v = w->ext_fields > 0 ? u64_fields_py(&r, w->ext_fields)
                              : PyBytes_FromStringAndSize(r.data, (Py_ssize_t)r.data_len);
        break;
    default:
        v = PyBytes_FromStringAndSize(r.data, (Py_ssize_t)r.data_len);
    }
    return v == NULL ? NULL : Py_BuildValue("(iN)", type, v);
}

/* VERSION: (version, [(name, data), ...]). */
static PyObject *
version_py(const char *p, size_t n)
{
    uint32_t version;
    sftp_cur c;
    const char *why, *k, *v;
    size_t kl, vl;
    if (sftp_version_check(p, n, &version, &c, &why) < 0) {
        return PyErr_Format(PyExc_SystemError, "a checked reply failed again: %s", why);
    }
    PyObject *ext = PyList_New(0);
    while (ext != NULL && c.n > 0 && sftp_ext_next(&c, &k, &kl, &v, &vl) == 0) {
        PyObject *pair = Py_BuildValue("(y#y#)", k, (Py_ssize_t)kl, v, (Py_ssize_t)vl);
        if (pair == NULL || PyList_Append(ext, pair) < 0) {
            Py_XDECREF(pair);
            Py_CLEAR(ext);
            break;
        }
        Py_DECREF(pair);
    }
    return ext == NULL ? NULL : Py_BuildValue("(kN)", (unsigned long)version, ext);
}

/* ---- methods -------------------------------------------------------------------------- */

/* start()'s first half for one channel (claimed): its `in` buffer and its
 * channel, 0; or -1 with the exception. */
static int
start_prepare(SFTPObject *self)
{
    if (self->started) {
        PyErr_SetString(PyExc_RuntimeError, "the SFTP channel is already started");
        return -1;
    }
    if (self->in == NULL && (self->in = malloc(IN_MAX)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Started from here, before the lock (its wait releases the GIL): a second
     * start() must not make a second channel. */
    self->started = 1;
    pyssh_lock(self->session);
    ssh_session ssh = pyssh_session_ssh(self->session);
    if (ssh != NULL && pyssh_chanio_new(&self->io, ssh) < 0) {
        pyssh_chanio_release(&self->io);
    }
    pyssh_unlock(self->session);
    if (self->io.chan == NULL) {
        self->started = 0;
        pyssh_raise(self->session->state, PYSSH_EXC_SFTPError, "could not make a channel for SFTP");
        return -1;
    }
    return 0;
}

/* `also` (None or a sequence of unstarted SFTP objects of the same session) as
 * a stripelist without handles, claimed: 0, or -1 with none claimed. */
static int
also_claim(SFTPObject *self, PyObject *also, stripelist *sl, const char *method, int started)
{
    sl->n = 0;
    if (also == Py_None) {
        return 0;
    }
    PyObject *items = PySequence_Tuple(also);
    if (items == NULL) {
        return -1;
    }
    int rc = PyTuple_GET_SIZE(items) <= STRIPES_MAX ? 0 : -1;
    for (Py_ssize_t i = 0; rc == 0 && i < PyTuple_GET_SIZE(items); i++) {
        PyObject *obj = PyTuple_GET_ITEM(items, i);
        if (Py_TYPE(obj) != Py_TYPE(self) || obj == (PyObject *)self ||
            ((SFTPObject *)obj)->session != self->session) {
            rc = -1;
            break;
        }
        if (claim((SFTPObject *)obj, method, PYSSH_NEED_OPEN, started) < 0) {
            Py_DECREF(items);
            goto fail;
        }
        sl->s[sl->n++] = (SFTPObject *)Py_NewRef(obj);
    }
    Py_DECREF(items);
    if (rc == 0) {
        return 0;
    }
    PyErr_SetString(PyExc_ValueError, "also: up to 16 other SFTP objects of the same session");
fail:
    for (int i = 0; i < sl->n; i++) {
        unclaim(sl->s[i]);
        Py_DECREF(sl->s[i]);
    }
    sl->n = 0;
    return -1;
}

/* start()'s end: the VERSION of its first channel. */
static PyObject *
start_finish(SessionObject *s, void *arg, int rc)
{
    struct sftp_run *R = arg;
    (void)s;
    (void)rc;
    int e = run_round_end(R);
    if (e <= 0) {
        return e < 0 ? NULL : PYSSH_OP_MORE;
    }
    return version_py(R->p[0]->reply[0], R->p[0]->reply_len[0]);
}

/* An unfinished start closes every channel; one the server refused is left
 * closed (run_release_ops). */
static const pyssh_op_kind start_kind = {
    "starting SFTP", PYSSH_EXC_SFTPError, run_step, sizeof(struct sftp_run), start_finish, NULL,
    run_release,     run_relocate,        NULL};

/* Start `self` and the channels of R->sl (claimed): each op's channel made. */
static int
start_prepare_all(struct sftp_run *R)
{
    for (int i = 0; i < R->set.n; i++) {
        R->p[i]->s = i == 0 ? R->self : R->sl.s[i - 1];
        R->p[i]->kind = OP_START;
    }
    for (int i = 0; i < R->set.n; i++) {
        if (start_prepare(R->p[i]->s) < 0) {
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(start_doc,
             "start($self, /, timeout=None, also=None, defer=False)\n--\n\n"
             "Open the channel, start the server's sftp subsystem and say INIT (version 3).\n"
             "Returns (version, [(extension name, data), ...]) from the server's VERSION. `also`:\n"
             "other unstarted SFTP objects of the session, started at the same time (their\n"
             "VERSION checked too); one the server refuses (its channel limit) is left closed;\n"
             "any other failure closes them all. `defer`: an Op instead, as batch().");

static PyObject *
sftp_start(SFTPObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", "also", "defer", NULL};
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    PyObject *also = Py_None;
    int defer = 0;
    struct sftp_run R;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O&Op:start", kwlist, pyssh_deadline_conv, &dl,
                                     &also, &defer) ||
        claim(self, "start", PYSSH_NEED_OPEN, 0) < 0) {
        return NULL;
    }
    memset(&R, 0, sizeof(R));
    R.self_claimed = 1;
    if (also_claim(self, also, &R.sl, "start", 0) < 0) {
        unclaim(self);
        return NULL;
    }
    R.sl_claimed = 1;
    if (run_init(&R, self, RUN_START, R.sl.n + 1, "starting SFTP") < 0 ||
        start_prepare_all(&R) < 0) {
        run_release(self->session, &R);
        return NULL;
    }
    return run_go(&R, &start_kind, &dl, defer, args, kwds);
}

/* Parse `reqs` (a sequence of 1 to BATCH_MAX (type, payload) pairs) with the GIL
 * and without the session lock: __index__, __iter__ and the buffer exports may
 * run Python code, which must not run under the lock (a call of it that takes
 * the lock would deadlock) nor see the items borrowed (it could drop them). The
 * items are read from a private tuple; each payload buffer holds its object. */
static int
reqs_parse(PyObject *reqs, reqlist *r)
{
    r->n = 0;
    PyObject *seq = PySequence_Fast(reqs, "requests must be a sequence of (type, payload)");
    if (seq == NULL) {
        return -1;
    }
    PyObject *items = PySequence_Tuple(seq); /* a list's items are copied, owned */
    Py_DECREF(seq);
    if (items == NULL) {
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    if (n < 1 || n > BATCH_MAX) {
        Py_DECREF(items);
        PyErr_SetString(PyExc_ValueError, "batch: 1 to 64 requests");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(items, i), "iy*:request", &r->type[r->n],
                              &r->payload[r->n])) {
            reqs_release(r);
            Py_DECREF(items);
            return -1;
        }
        r->n++;
    }
    Py_DECREF(items);
    return 0;
}

/* The extensions whose replies are a fixed number of uint64 (checked on arrival,
 * given to Python as ints): limits@openssh.com, (f)statvfs@openssh.com; and those
 * answered by a STATUS alone, where an EXTENDED_REPLY is a protocol error. */
static int
ext_fields(int type, const Py_buffer *payload)
{
    static const struct {
        const char *name;
        int fields;
    } known[] = {
        {"limits@openssh.com", 4},
        {"statvfs@openssh.com", 11},
        {"fstatvfs@openssh.com", 11},
        {"fsync@openssh.com", EXT_STATUS_ONLY},
        {"hardlink@openssh.com", EXT_STATUS_ONLY},
        {"copy-data", EXT_STATUS_ONLY},
    };
    if (type != SFTP_EXTENDED || payload->len < 4) {
        return 0;
    }
    uint32_t n = get32(payload->buf);
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (n == strlen(known[i].name) && n <= (uint64_t)payload->len - 4 &&
            memcmp((const char *)payload->buf + 4, known[i].name, n) == 0) {
            return known[i].fields;
        }
    }
    return 0;
}

/* A READ's length (handle, uint64 offset, uint32 length), so that its DATA reply
 * is held to it; 0 for other requests, or a READ not so made (a DATA reply to it
 * is then a protocol error). */
static uint32_t
read_length(int type, const Py_buffer *payload)
{
    if (type != SFTP_READ || payload->len < 4) {
        return 0;
    }
    uint64_t hl = get32(payload->buf);
    if ((uint64_t)payload->len != 4 + hl + 12) {
        return 0;
    }
    return get32((const char *)payload->buf + 4 + hl + 8);
}

/* Queue the parsed requests with fresh ids; `discard`: nobody will wait for their
 * replies. Lock held by the caller; no Python. Returns -1 when out of memory. */
static int
queue_requests(SFTPObject *self, const reqlist *r, struct op *o, int discard)
{
    for (int i = 0; i < r->n; i++) {
        uint32_t id = self->next_id++;
        if (out_request(self, r->type[i], id, r->payload[i].buf, (size_t)r->payload[i].len, NULL,
                        0) < 0) {
            return -1;
        }
        if (discard) {
            self->by_send[self->ndiscard] = 1;
            self->nsend++;
            self->discard[self->ndiscard++] = id;
        }
        else {
            struct want *w = &o->want[o->nwant++];
            w->id = id;
            w->req = r->type[i];
            w->ext_fields = ext_fields(r->type[i], &r->payload[i]);
            w->asked = read_length(r->type[i], &r->payload[i]);
        }
    }
    return 0;
}

static int
flush_step(ssh_session ssh, void *p)
{
    SFTPObject *self = p;
    return flush_out(self, ssh) < 0 ? PYSSH_FAILED : 0;
}

PyDoc_STRVAR(batch_doc,
             "batch($self, requests, /, timeout=None, what=None, also=None, defer=False)\n--\n\n"
             "Send several requests ((type, payload) pairs) at once, each with a fresh id, and\n"
             "wait for all their replies, each checked against its request. Returns\n"
             "[(reply_type, value)]: STATUS (code, message), HANDLE and DATA bytes, NAME\n"
             "[(name, longname, attrs)], ATTRS attrs = (size, uid, gid, mode, atime, mtime,\n"
             "((name, data), ...)) with None where absent, EXTENDED_REPLY a tuple of ints\n"
             "(limits@openssh.com, statvfs@openssh.com) or bytes. `also`: (SFTP, requests)\n"
             "pairs, other channels of the session and what to send on each at the same time:\n"
             "then a list of such lists, this channel's first. `defer`: return an Op (whose\n"
             "result is that) instead of waiting, for Op.wait() or a Driver.");

/* The replies of a finished OP_REQUEST, as Python objects. */
static PyObject *
replies_py(const struct op *o)
{
    PyObject *out = PyList_New(o->nwant);
    for (int i = 0; out != NULL && i < o->nwant; i++) {
        PyObject *r = reply_py(o->s->session->state, &o->want[i], o->reply_type[i], o->reply[i],
                               o->reply_len[i]);
        if (r == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, r);
    }
    return out;
}

enum batch_shape { BATCH_ALL, BATCH_ONE, BATCH_REPLY };

/* batch()'s end: the replies per channel, or this channel's (R->single). */
static PyObject *
batch_finish(SessionObject *s, void *arg, int rc)
{
    struct sftp_run *R = arg;
    (void)rc;
    int e = run_round_end(R);
    if (e <= 0) {
        return e < 0 ? NULL : PYSSH_OP_MORE;
    }
    /* requests and their replies: a round trip at most (channel opens, the
     * first samples, include the server's work on them) */
    pyssh_lock(s);
    pyssh_chanio_rtt(s, pyssh_monotonic() - R->t0);
    pyssh_unlock(s);
    PyObject *out = PyList_New(R->set.n);
    for (int i = 0; out != NULL && i < R->set.n; i++) {
        PyObject *one = replies_py(R->p[i]);
        if (one == NULL) {
            Py_CLEAR(out);
            break;
        }
        PyList_SET_ITEM(out, i, one);
    }
    for (int k = 0; out != NULL && k < R->single; k++) { /* BATCH_ONE, BATCH_REPLY */
        Py_SETREF(out, Py_NewRef(PyList_GET_ITEM(out, 0)));
    }
    return out;
}

static const pyssh_op_kind batch_kind = {
    "an SFTP request", PYSSH_EXC_SFTPError, run_step, sizeof(struct sftp_run), batch_finish, NULL,
    run_release,       run_relocate,        NULL};

/* Queue each channel's requests; 0, or -1 with every channel closed (requests
 * queued before a failure would get replies nobody matches). */
static int
batch_queue(struct sftp_run *R)
{
    int qrc = 0;
    pyssh_lock(R->self->session);
    for (int i = 0; i < R->set.n; i++) {
        struct op *o = R->p[i];
        o->s = i == 0 ? R->self : R->sl.s[i - 1];
        o->kind = OP_REQUEST;
        qrc |= queue_requests(o->s, &R->r[i], o, 0);
    }
    pyssh_unlock(R->self->session);
    if (qrc < 0) {
        PyErr_NoMemory();
        for (int i = 0; i < R->set.n; i++) {
            sftp_close_impl(R->p[i]->s, 1);
        }
        return -1;
    }
    return 0;
}

static int also_parse(PyObject *also, PyObject **objs, reqlist *r, int *n);

/* The requests `reqs` on `self`, and `also`'s on theirs: parsed (with `self`
 * claimed, so that their Python code cannot close or reuse it), the other
 * channels claimed, queued, then run or deferred. */
static PyObject *
batch_start(SFTPObject *self, PyObject *reqs, PyObject *also, pyssh_deadline *dl, const char *what,
            int defer, enum batch_shape shape, PyObject *args, PyObject *kwds)
{
    struct sftp_run R;
    PyObject *objs = Py_None;
    int n = 0;
    memset(&R, 0, sizeof(R));
    if (claim(self, "batch", PYSSH_NEED_OPEN, 1) < 0) {
        return NULL;
    }
    R.self = self;
    R.self_claimed = 1;
    R.single = (int)shape;
    if ((R.r = calloc(STRIPES_MAX + 1, sizeof(reqlist))) == NULL) {
        PyErr_NoMemory();
    }
    else if (reqs_parse(reqs, &R.r[0]) == 0 &&
             (also == Py_None || also_parse(also, &objs, R.r + 1, &n) == 0) &&
             also_claim(self, objs, &R.sl, "batch", 1) == 0) {
        R.sl_claimed = 1;
        if (run_init(&R, self, RUN_BATCH, R.sl.n + 1, what ? what : "an SFTP request") == 0 &&
            batch_queue(&R) == 0) {
            Py_XDECREF(objs == Py_None ? NULL : objs);
            return run_go(&R, &batch_kind, dl, defer, args, kwds);
        }
    }
    Py_XDECREF(objs == Py_None ? NULL : objs);
    run_release(self->session, &R);
    return NULL;
}

/* batch()'s `also`: (SFTP, requests) pairs into `objs` (a new tuple of the
 * channels) and r[0:n]; 0, or -1 with what was parsed released. */
static int
also_parse(PyObject *also, PyObject **objs, reqlist *r, int *n)
{
    *n = 0;
    PyObject *items = PySequence_Tuple(also);
    if (items == NULL) {
        return -1;
    }
    Py_ssize_t k = PyTuple_GET_SIZE(items);
    *objs = k <= STRIPES_MAX ? PyTuple_New(k) : NULL;
    int rc = *objs != NULL ? 0 : -1;
    if (k > STRIPES_MAX) {
        PyErr_SetString(PyExc_ValueError, "also: up to 16 (SFTP, requests) pairs");
    }
    for (Py_ssize_t i = 0; rc == 0 && i < k; i++) {
        PyObject *obj, *reqs;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(items, i), "OO:also", &obj, &reqs) ||
            reqs_parse(reqs, &r[i]) < 0) {
            rc = -1;
            break;
        }
        PyTuple_SET_ITEM(*objs, i, Py_NewRef(obj));
        (*n)++;
    }
    Py_DECREF(items);
    if (rc < 0) {
        for (int i = 0; i < *n; i++) {
            reqs_release(&r[i]);
        }
        Py_CLEAR(*objs);
    }
    return rc;
}

static PyObject *
sftp_batch(SFTPObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"requests", "timeout", "what", "also", "defer", NULL};
    PyObject *reqs, *also = Py_None;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    const char *what = NULL;
    int defer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O&zOp:batch", kwlist, &reqs,
                                     pyssh_deadline_conv, &dl, &what, &also, &defer)) {
        return NULL;
    }
    return batch_start(self, reqs, also, &dl, what, defer, also == Py_None ? BATCH_ONE : BATCH_ALL,
                       args, kwds);
}

PyDoc_STRVAR(request_doc,
             "request($self, type, payload, /, timeout=None, what=None, defer=False)\n--\n\n"
             "Send one request (type, a fresh id, payload) and wait for its reply.\n"
             "Returns (reply_type, value) as batch() does. `what` names the operation in errors.\n"
             "`defer`: return an Op instead of waiting (as batch()).");

static PyObject *
sftp_request(SFTPObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"type", "payload", "timeout", "what", "defer", NULL};
    int type, defer = 0;
    PyObject *payload;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    const char *what = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO|O&zp:request", kwlist, &type, &payload,
                                     pyssh_deadline_conv, &dl, &what, &defer)) {
        return NULL;
    }
    PyObject *reqs = Py_BuildValue("[(iO)]", type, payload);
    if (reqs == NULL) {
        return NULL;
    }
    PyObject *r = batch_start(self, reqs, Py_None, &dl, what, defer, BATCH_REPLY, args, kwds);
    Py_DECREF(reqs);
    return r;
}

PyDoc_STRVAR(send_doc,
             "send($self, type, payload, /, timeout=None, what=None, defer=False)\n--\n\n"
             "Send one request and do not wait: its reply is dropped when it comes (a CLOSE\n"
             "after a download, whose answer changes nothing). With 64 replies due already,\n"
             "wait for this one's instead, `timeout` as for request(). Returns None; with\n"
             "`defer`, an Op to wait for when it must wait (its result: the reply).");

/* Queue one request whose reply nobody waits for; 1: too many such are due
 * already (wait for this one's instead), 0 queued, -1 failed. */
static int
send_queue(SFTPObject *self, int type, PyObject *payload)
{
    reqlist r;
    r.n = 0;
    PyObject *reqs = Py_BuildValue("[(iO)]", type, payload);
    int rc = reqs != NULL ? reqs_parse(reqs, &r) : -1;
    Py_XDECREF(reqs);
    if (rc < 0) {
        return -1;
    }
    pyssh_lock(self->session);
    if (self->nsend >= SEND_DISCARD_MAX || self->ndiscard >= DISCARD_MAX) {
        rc = 1;
    }
    else {
        rc = queue_requests(self, &r, NULL, 1);
    }
    pyssh_unlock(self->session);
    reqs_release(&r);
    if (rc < 0) {
        PyErr_NoMemory();
        sftp_close_impl(self, 1);
        return -1;
    }
    if (rc == 0 &&
        pyssh_call(self->session, flush_step, self, PYSSH_EXC_SFTPError, "an SFTP request") < 0) {
        return -1;
    }
    return rc;
}

static PyObject *
sftp_send(SFTPObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"type", "payload", "timeout", "what", "defer", NULL};
    int type, defer = 0;
    PyObject *payload;
    const char *what = NULL;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iO|O&zp:send", kwlist, &type, &payload,
                                     pyssh_deadline_conv, &dl, &what, &defer) ||
        claim(self, "send", PYSSH_NEED_OPEN, 1) < 0) {
        return NULL;
    }
    int rc = send_queue(self, type, payload);
    unclaim(self);
    if (rc <= 0) {
        return rc < 0 ? NULL : Py_NewRef(Py_None);
    }
    /* the channel's timeout, not none: a server that answers no CLOSE must not
     * hang the 65th download for ever */
    PyObject *reqs = Py_BuildValue("[(iO)]", type, payload);
    PyObject *r = reqs == NULL
                      ? NULL
                      : batch_start(self, reqs, Py_None, &dl, what, defer, BATCH_REPLY, args, kwds);
    Py_XDECREF(reqs);
    if (r != NULL && !defer) {
        Py_SETREF(r, Py_NewRef(Py_None));
    }
    return r;
}

/* offset + n; past 2**63-1, a value run_transfer refuses rather than one wrapped
 * round to a small number. */
static uint64_t
range_end(uint64_t offset, uint64_t n)
{
    return offset > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - offset ? UINT64_MAX - 1
                                                                            : offset + n;
}

static void
stripes_release(stripelist *sl)
{
    for (int i = 0; i < sl->n; i++) {
        PyBuffer_Release(&sl->handle[i]);
        Py_DECREF(sl->s[i]);
    }
    sl->n = 0;
}

/* `seq`: None, or a sequence of (SFTP, handle) pairs, as stripelist says; with
 * the GIL, before any claim (the items' exports may run Python code). */
static int
stripes_parse(SFTPObject *self, PyObject *seq, stripelist *sl)
{
    sl->n = 0;
    if (seq == NULL || seq == Py_None) {
        return 0;
    }
    PyObject *items = PySequence_Tuple(seq);
    if (items == NULL) {
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    int rc = n <= STRIPES_MAX ? 0 : -1;
    if (rc < 0) {
        PyErr_SetString(PyExc_ValueError, "stripes: at most 16 (SFTP, handle) pairs");
    }
    for (Py_ssize_t i = 0; rc == 0 && i < n; i++) {
        PyObject *obj;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(items, i), "O!y*:stripes", Py_TYPE(self), &obj,
                              &sl->handle[sl->n])) {
            rc = -1;
            break;
        }
        sl->s[sl->n++] = (SFTPObject *)Py_NewRef(obj);
        if (obj == (PyObject *)self || ((SFTPObject *)obj)->session != self->session ||
            sl->handle[sl->n - 1].len > SFTP_HANDLE_MAX) {
            PyErr_SetString(PyExc_ValueError, "stripes: other SFTP channels of the same session, "
                                              "each with a handle");
            rc = -1;
        }
    }
    Py_DECREF(items);
    if (rc < 0) {
        stripes_release(sl);
    }
    return rc;
}

static int
op_setup(struct op *o, SFTPObject *s, const struct xfer *x, const Py_buffer *h, struct span *sp)
{
    memset(o, 0, sizeof(*o));
    o->s = s;
    o->kind = x->kind;
    o->status = -1;
    o->handle = h->buf;
    o->handle_len = (size_t)h->len;
    o->fd = x->fd;
    o->chunk = x->chunk;
    o->inflight_max = x->inflight;
    o->mem = x->mem;
    o->mem_base = x->offset;
    o->sp = sp;
    if (x->kind == OP_UPLOAD && (o->buf = malloc(x->chunk)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Claim the stripes' channels: 0, or -1 with none claimed. */
static int
stripes_claim(stripelist *sl, const char *method)
{
    for (int i = 0; i < sl->n; i++) {
        if (claim(sl->s[i], method, PYSSH_NEED_OPEN, 1) < 0) {
            while (--i >= 0) {
                unclaim(sl->s[i]);
            }
            return -1;
        }
    }
    return 0;
}

/* How far each channel's receive window may grow during the transfer. */
static void
set_windows(struct opset *set, uint32_t max)
{
    pyssh_lock(set->ops[0]->s->session);
    for (int i = 0; i < set->n; i++) {
        pyssh_chanio_grow(&set->ops[i]->s->io, max);
    }
    pyssh_unlock(set->ops[0]->s->session);
}

/* After the run: the first failure of any stripe is the transfer's, and the
 * bytes moved are all of theirs; a download that failed cuts the file back to
 * what arrived below the first byte missing (a resume goes on from there). */
static void
set_merge(struct sftp_run *R, int rc)
{
    struct op *o = R->p[0];
    R->merged = 1;
    for (int i = 1; i < R->set.n; i++) {
        struct op *t = R->p[i];
        if (!op_failed(o) && op_failed(t)) {
            o->status = t->status;
            memcpy(o->status_msg, t->status_msg, t->status_len);
            o->status_len = t->status_len;
            o->local_errno = t->local_errno;
        }
        o->moved += t->moved;
    }
    /* the first byte missing: a request in flight, one whose data was not
     * kept, or the end (requests went past the end of the file) */
    struct span *sp = o->sp;
    uint64_t low = lowest_in_flight(sp);
    low = low < sp->hole ? low : sp->hole;
    low = low < sp->eof_at ? low : sp->eof_at;
    uint64_t complete = low < sp->end ? low : sp->end;
    /* under the lock: the complete_to getter holds no claim (another thread
     * may read it while this transfer ends), and a 64-bit store need not be
     * one store on a 32-bit machine */
    pyssh_lock(o->s->session);
    o->s->complete_to = complete;
    pyssh_unlock(o->s->session);
    if (R->x.cut && R->x.fd >= 0 && (rc < 0 || op_failed(o))) {
        pyssh_ftruncate(R->x.fd, complete);
    }
    if (R->x.kind == OP_DOWNLOAD && R->set.n > 1) {
        struct opset main = {R->p, 1};
        set_windows(&main, PYSSH_WINDOW_MAX);
    }
}

/* The checks, the claims, the ops of a transfer of `self` and the stripes in
 * R->sl (parsed, with their handles): 0, or -1 (the run to release). */
static int
transfer_setup(struct sftp_run *R, SFTPObject *self)
{
    const struct xfer *x = &R->x;
    if (R->handle.len > SFTP_HANDLE_MAX || x->inflight < 1 || x->inflight > INFLIGHT_MAX ||
        x->chunk < 1 || x->chunk > 1024 * 1024) {
        PyErr_SetString(PyExc_ValueError, "bad handle, inflight (1-512) or chunk (1 B-1 MiB)");
        return -1;
    }
    if (x->offset > (uint64_t)INT64_MAX ||
        (x->end != UINT64_MAX && (x->end < x->offset || x->end > (uint64_t)INT64_MAX))) {
        PyErr_SetString(PyExc_ValueError, "SFTP offsets and sizes must stay within 0 to 2**63-1");
        return -1;
    }
    int dn = x->kind == OP_DOWNLOAD;
    const char *method = dn ? (x->mem ? "read" : "download") : (x->mem ? "write" : "upload");
    if (claim(self, method, PYSSH_NEED_OPEN, 1) < 0) {
        return -1;
    }
    R->self_claimed = 1;
    if (stripes_claim(&R->sl, method) < 0) {
        return -1;
    }
    R->sl_claimed = 1;
    const char *what =
        dn ? (x->mem ? "SFTP read" : "SFTP download") : (x->mem ? "SFTP write" : "SFTP upload");
    if (run_init(R, self, RUN_TRANSFER, R->sl.n + 1, what) < 0) {
        return -1;
    }
    struct op *o = R->p[0];
    if (op_setup(o, self, x, &R->handle, &o->own) < 0) {
        return -1;
    }
    o->own = (struct span){x->offset, x->end, 0, UINT64_MAX, 0, UINT64_MAX, R->p, R->set.n};
    for (int i = 1; i < R->set.n; i++) {
        if (op_setup(R->p[i], R->sl.s[i - 1], x, &R->sl.handle[i - 1], &o->own) < 0) {
            return -1;
        }
    }
    R->set.ops = R->p;
    if (dn && R->set.n > 1) {
        set_windows(&R->set, STRIPED_WINDOWS / (uint32_t)R->set.n);
    }
    return 0;
}

static PyObject *read_result(pyssh_state *st, PyObject *data, const struct op *o);
static PyObject *transfer_result(pyssh_state *st, const struct op *o);

/* A transfer's end: (bytes moved, status, message, local errno), or read()'s
 * bytes up to where the file ended. */
static PyObject *
transfer_finish(SessionObject *s, void *arg, int rc)
{
    struct sftp_run *R = arg;
    (void)rc;
    int e = run_round_end(R);
    if (e <= 0) {
        return e < 0 ? NULL : PYSSH_OP_MORE;
    }
    set_merge(R, 0);
    struct op *o = R->p[0];
    if (R->out == NULL) {
        return transfer_result(s->state, o);
    }
    uint64_t n = R->x.end - R->x.offset, got = n;
    if (o->own.eof_at != UINT64_MAX && o->own.eof_at - R->x.offset < got) {
        got = o->own.eof_at - R->x.offset;
    }
    PyObject *data = R->out;
    R->out = NULL;
    if (got < n && _PyBytes_Resize(&data, (Py_ssize_t)got) < 0) {
        return NULL;
    }
    return read_result(s->state, data, o);
}

static const pyssh_op_kind transfer_kind = {"an SFTP transfer",
                                            PYSSH_EXC_SFTPError,
                                            run_step,
                                            sizeof(struct sftp_run),
                                            transfer_finish,
                                            NULL,
                                            run_release,
                                            run_relocate,
                                            NULL};

/* How a transfer ended (an SFTPTransfer, module.c). */
static PyObject *
transfer_result(pyssh_state *st, const struct op *o)
{
    PyObject *v[4] = {PyLong_FromUnsignedLongLong(o->moved), PyLong_FromLongLong(o->status),
                      PyBytes_FromStringAndSize(o->status_msg, (Py_ssize_t)o->status_len),
                      PyLong_FromLong(o->local_errno)};
    return pyssh_named_result(st->SFTPTransferType, v, 4);
}

/* What read() brought (an SFTPRead); steals `data`. */
static PyObject *
read_result(pyssh_state *st, PyObject *data, const struct op *o)
{
    PyObject *v[3] = {data, PyLong_FromLongLong(o->status),
                      PyBytes_FromStringAndSize(o->status_msg, (Py_ssize_t)o->status_len)};
    return pyssh_named_result(st->SFTPReadType, v, 3);
}

/* download()/upload(): the end, as a tuple (bytes moved, status code or -1,
 * status message, local errno or 0; -1: the file ended early). */
static PyObject *
transfer(SFTPObject *self, PyObject *args, PyObject *kwds, enum op_kind kind)
{
    static char *kwlist[] = {"handle",  "fd",       "offset", "size",    "progress",
                             "timeout", "inflight", "chunk",  "stripes", "cut",
                             "until",   "defer",    NULL};
    unsigned long long offset, size, until = UINT64_MAX;
    PyObject *stripes = Py_None;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    struct sftp_run R;
    memset(&R, 0, sizeof(R));
    R.x = (struct xfer){kind, -1, NULL, 0, 0, 16, 32768, 0};
    R.progress = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*iKK|OO&iIOpKp:transfer", kwlist, &R.handle,
                                     &R.x.fd, &offset, &size, &R.progress, pyssh_deadline_conv, &dl,
                                     &R.x.inflight, &R.x.chunk, &stripes, &R.x.cut, &until,
                                     &defer)) {
        return NULL;
    }
    R.have_handle = 1;
    R.x.offset = offset;
    R.x.end = kind == OP_UPLOAD ? range_end(offset, size) : until;
    if (stripes_parse(self, stripes, &R.sl) == 0) {
        R.sl_handles = 1;
        if (transfer_setup(&R, self) == 0) {
            return run_go(&R, &transfer_kind, &dl, defer, args, kwds);
        }
    }
    run_release(self->session, &R);
    return NULL;
}

PyDoc_STRVAR(
    download_doc,
    "download($self, /, handle, fd, offset, size, progress=None, timeout=None, inflight=16,\n"
    "         chunk=32768, stripes=None, cut=False, until=2**64-1, defer=False)\n--\n\n"
    "Read the open remote file `handle` from `offset` to its end into the local file\n"
    "descriptor `fd` (at the same offsets), with READ requests of `chunk` bytes: at least\n"
    "`inflight`, and as many as the channel's receive window holds (it grows with the\n"
    "path). `stripes`: (SFTP, handle) pairs, other channels of the session with the same\n"
    "file open, which read their share of it at once. `cut`: when the download fails, cut\n"
    "the file back to below the first byte that did not arrive (complete_to). `until`:\n"
    "stop there rather than at the end of the file. `size` is ignored.\n"
    "progress(bytes) is called a few times a second. Returns (bytes, status code or -1,\n"
    "status message (bytes), local errno or 0). `defer`: an Op instead, as batch().");

static PyObject *
sftp_download(SFTPObject *self, PyObject *args, PyObject *kwds)
{
    return transfer(self, args, kwds, OP_DOWNLOAD);
}

PyDoc_STRVAR(
    upload_doc,
    "upload($self, /, handle, fd, offset, size, progress=None, timeout=None, inflight=16,\n"
    "       chunk=32768, stripes=None, cut=False, defer=False)\n--\n\n"
    "Write `size` bytes of the local file descriptor `fd` from `offset` into the open\n"
    "remote file `handle` at the same offsets, with WRITE requests in flight as far as\n"
    "the server's window takes them; `stripes` as for download() (a request never starts\n"
    "SFTP_STRIPE_AHEAD bytes past the lowest still in flight); `cut` is ignored.\n"
    "Returns (bytes acknowledged, status code or -1, status message (bytes), local errno, -1\n"
    "when the local file ended early, or 0). `defer`: an Op instead, as batch().");

static PyObject *
sftp_upload(SFTPObject *self, PyObject *args, PyObject *kwds)
{
    return transfer(self, args, kwds, OP_UPLOAD);
}

PyDoc_STRVAR(read_doc,
             "read($self, /, handle, offset, n, timeout=None, inflight=16, chunk=32768,\n"
             "     defer=False)\n--\n\n"
             "Read up to n bytes of the open remote file `handle` from `offset`, with READ\n"
             "requests of `chunk` bytes in flight together. Shorter at the end of the file.\n"
             "Returns (data, status code or -1, status message (bytes)): data holds only bytes\n"
             "received, up to where the server said the file ends. `defer`: an Op instead, as\n"
             "batch().");

static PyObject *
sftp_read(SFTPObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"handle",   "offset", "n",     "timeout",
                             "inflight", "chunk",  "defer", NULL};
    unsigned long long offset;
    Py_ssize_t n;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    struct sftp_run R;
    memset(&R, 0, sizeof(R));
    R.x = (struct xfer){OP_DOWNLOAD, -1, NULL, 0, 0, 16, 32768, 0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*Kn|O&iIp:read", kwlist, &R.handle, &offset, &n,
                                     pyssh_deadline_conv, &dl, &R.x.inflight, &R.x.chunk, &defer)) {
        return NULL;
    }
    R.have_handle = 1;
    if (n < 0 || offset > (unsigned long long)INT64_MAX ||
        (uint64_t)n > (uint64_t)INT64_MAX - offset) {
        PyErr_SetString(PyExc_ValueError, "SFTP read: n must be >= 0, and offset + n at most "
                                          "2**63-1");
    }
    else if ((R.out = PyBytes_FromStringAndSize(NULL, n)) != NULL) {
        R.x.mem = PyBytes_AS_STRING(R.out);
        R.x.offset = offset;
        R.x.end = offset + (uint64_t)n;
        /* R.out is the run's (an Op's, deferred) until it ends: x.mem stays valid */
        if (transfer_setup(&R, self) == 0) {
            return run_go(&R, &transfer_kind, &dl, defer, args, kwds);
        }
    }
    run_release(self->session, &R);
    return NULL;
}

PyDoc_STRVAR(write_doc,
             "write($self, /, handle, offset, data, timeout=None, inflight=16, chunk=32768,\n"
             "      defer=False)\n--\n\n"
             "Write `data` into the open remote file `handle` at `offset`, with WRITE requests\n"
             "of `chunk` bytes in flight together. Returns (bytes acknowledged, status code or\n"
             "-1, status message (bytes)). `defer`: an Op instead, as batch() (it holds `data`'s\n"
             "buffer until it ends).");

static PyObject *
sftp_write(SFTPObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"handle",   "offset", "data",  "timeout",
                             "inflight", "chunk",  "defer", NULL};
    unsigned long long offset;
    pyssh_deadline dl = PYSSH_NO_DEADLINE;
    int defer = 0;
    struct sftp_run R;
    memset(&R, 0, sizeof(R));
    R.x = (struct xfer){OP_UPLOAD, -1, NULL, 0, 0, 16, 32768, 0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*Ky*|O&iIp:write", kwlist, &R.handle, &offset,
                                     &R.data, pyssh_deadline_conv, &dl, &R.x.inflight, &R.x.chunk,
                                     &defer)) {
        return NULL;
    }
    R.have_handle = R.have_data = 1;
    R.x.mem = R.data.buf;
    R.x.offset = offset;
    R.x.end = range_end(offset, (uint64_t)R.data.len);
    /* the buffer (R.data) is held by the run, an Op's when deferred: x.mem stays valid */
    if (transfer_setup(&R, self) == 0) {
        return run_go(&R, &transfer_kind, &dl, defer, args, kwds);
    }
    run_release(self->session, &R);
    return NULL;
}

PyDoc_STRVAR(close_doc,
             "close($self, /)\n--\n\n"
             "Close the channel (the server's sftp process ends). Safe to call more than once.");

static PyObject *
sftp_close(SFTPObject *self, PyObject *Py_UNUSED(ignored))
{
    /* claimed too: the close waits for the session lock with the GIL released */
    if (claim(self, "close", PYSSH_NEED_NOTHING, 0) < 0) {
        return NULL;
    }
    sftp_close_impl(self, 1);
    unclaim(self);
    Py_RETURN_NONE;
}

static PyObject *
sftp_get_closed(SFTPObject *self, void *closure)
{
    (void)closure;
    /* io.chan is set and cleared under the lock, by another thread's call too */
    pyssh_lock(self->session);
    int closed = self->io.chan == NULL || pyssh_session_ssh(self->session) == NULL;
    pyssh_unlock(self->session);
    return PyBool_FromLong(closed);
}

static PyMethodDef sftp_methods[] = {
    {"start", (PyCFunction)(void (*)(void))sftp_start, METH_VARARGS | METH_KEYWORDS, start_doc},
    {"request", (PyCFunction)(void (*)(void))sftp_request, METH_VARARGS | METH_KEYWORDS,
     request_doc},
    {"batch", (PyCFunction)(void (*)(void))sftp_batch, METH_VARARGS | METH_KEYWORDS, batch_doc},
    {"send", (PyCFunction)(void (*)(void))sftp_send, METH_VARARGS | METH_KEYWORDS, send_doc},
    {"download", (PyCFunction)(void (*)(void))sftp_download, METH_VARARGS | METH_KEYWORDS,
     download_doc},
    {"upload", (PyCFunction)(void (*)(void))sftp_upload, METH_VARARGS | METH_KEYWORDS, upload_doc},
    {"read", (PyCFunction)(void (*)(void))sftp_read, METH_VARARGS | METH_KEYWORDS, read_doc},
    {"write", (PyCFunction)(void (*)(void))sftp_write, METH_VARARGS | METH_KEYWORDS, write_doc},
    {"close", (PyCFunction)sftp_close, METH_NOARGS, close_doc},
    {NULL, NULL, 0, NULL}};

static PyObject *
sftp_get_window(SFTPObject *self, void *closure)
{
    (void)closure;
    pyssh_lock(self->session); /* a step of another thread may be growing it */
    uint32_t w = pyssh_chanio_window(&self->io);
    pyssh_unlock(self->session);
    return PyLong_FromUnsignedLong(w);
}

static PyObject *
sftp_get_complete_to(SFTPObject *self, void *closure)
{
    (void)closure;
    /* no claim: a transfer of another thread may be writing it (set_merge) */
    pyssh_lock(self->session);
    uint64_t complete = self->complete_to;
    pyssh_unlock(self->session);
    return PyLong_FromUnsignedLongLong(complete);
}

static PyGetSetDef sftp_getset[] = {
    {"closed", (getter)sftp_get_closed, NULL, "True once the channel is closed.", NULL},
    {"window", (getter)sftp_get_window, NULL,
     "The channel's receive window in bytes: 2 MiB, more once it grew with the path.", NULL},
    {"complete_to", (getter)sftp_get_complete_to, NULL,
     "After a download or upload, even one that failed: every byte below this offset was "
     "moved.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyDoc_STRVAR(sftp_doc, "SFTP(session)\n--\n\n"
                       "One SFTP channel on `session`. Internal: use Session.sftp().");

static PyType_Slot sftp_slots[] = {{Py_tp_new, sftp_new},         {Py_tp_dealloc, sftp_dealloc},
                                   {Py_tp_methods, sftp_methods}, {Py_tp_getset, sftp_getset},
                                   {Py_tp_doc, (void *)sftp_doc}, {0, NULL}};

PyType_Spec pyssh_sftp_spec = {
    .name = "pyssh._ssh.SFTP",
    .basicsize = sizeof(SFTPObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = sftp_slots,
};
