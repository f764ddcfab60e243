/* The SFTP (version 3, draft-ietf-secsh-filexfer-02) messages a server sends:
 * framed, matched to the request they answer and checked here, in pure
 * functions that never trust their input, and nowhere else. sftp.c calls
 * sftp_frame() on the bytes of the channel and sftp_reply_check() on each
 * reply; the Python objects handed to pyssh/_sftp.py are built from what these
 * functions accepted. tests/fuzz/sftp_reply_fuzz.c compiles this file on its own
 * (PYSSH_FUZZ) and checks what is promised below.
 *
 * What a hostile server must not get through: a frame longer than the client's
 * limit; a reply type that does not answer the request (an OK status where a
 * handle, data, names or attributes were asked for); a status code is an
 * unsigned 32-bit number, and only SSH_FX_OK (0) is a success; DATA longer than
 * the READ asked for; a handle of more than 256 bytes; a size beyond 2**63-1; a
 * count of names or extensions that the message cannot hold; a name in a
 * directory listing that is not one safe path component (names.c), or longer
 * than SFTP_NAME_MAX; anything left over after the fields. */
#ifndef PYSSH_FUZZ
#include "pyssh.h"
#endif

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sftpproto.h"

#ifdef PYSSH_FUZZ
const char *pyssh_name_problem(const char *name, size_t n, int windows); /* names.c */
#endif

/* ---- fields ------------------------------------------------------------------ */

static int
cur_u32(sftp_cur *c, uint32_t *v)
{
    if (c->n < 4) {
        return -1;
    }
    const unsigned char *u = c->p;
    *v = ((uint32_t)u[0] << 24) | ((uint32_t)u[1] << 16) | ((uint32_t)u[2] << 8) | u[3];
    c->p += 4;
    c->n -= 4;
    return 0;
}

static int
cur_u64(sftp_cur *c, uint64_t *v)
{
    uint32_t hi, lo;
    if (c->n < 8 || cur_u32(c, &hi) < 0 || cur_u32(c, &lo) < 0) {
        return -1;
    }
    *v = ((uint64_t)hi << 32) | lo;
    return 0;
}

static int
cur_str(sftp_cur *c, const char **s, size_t *len)
{
    uint32_t n;
    if (cur_u32(c, &n) < 0 || n > c->n) {
        return -1;
    }
    *s = (const char *)c->p;
    *len = n;
    c->p += n;
    c->n -= n;
    return 0;
}

int
sftp_frame(const char *buf, size_t len, size_t max, struct sftp_frame *f, const char **why)
{
    sftp_cur c = {(const unsigned char *)buf, len};
    uint32_t n;
    if (cur_u32(&c, &n) < 0) {
        return 0;
    }
    if (n < 1 || n > max) {
        *why = "an SFTP message of an impossible length";
        return -1;
    }
    if (c.n < n) {
        return 0;
    }
    f->type = c.p[0];
    f->body = (const char *)c.p + 1;
    f->len = n - 1;
    f->consumed = 4 + (size_t)n;
    return 1;
}

int
sftp_attrs(sftp_cur *c, struct sftp_attrs *a, const char **why)
{
    memset(a, 0, sizeof(*a));
    *why = "malformed file attributes";
    if (cur_u32(c, &a->flags) < 0 || ((a->flags & SFTP_A_SIZE) && cur_u64(c, &a->size) < 0) ||
        ((a->flags & SFTP_A_UIDGID) && (cur_u32(c, &a->uid) < 0 || cur_u32(c, &a->gid) < 0)) ||
        ((a->flags & SFTP_A_PERMISSIONS) && cur_u32(c, &a->perm) < 0) ||
        ((a->flags & SFTP_A_ACMODTIME) &&
         (cur_u32(c, &a->atime) < 0 || cur_u32(c, &a->mtime) < 0))) {
        return -1;
    }
    if ((a->flags & SFTP_A_SIZE) && a->size > (uint64_t)INT64_MAX) {
        *why = "a file size beyond 2**63-1";
        return -1;
    }
    if (a->flags & SFTP_A_EXTENDED) {
        uint32_t count;
        const char *k, *v;
        size_t kl, vl;
        if (cur_u32(c, &count) < 0 || count > c->n / 8) {
            return -1;
        }
        a->ext = (const char *)c->p;
        a->next = count;
        for (uint32_t i = 0; i < count; i++) {
            if (cur_str(c, &k, &kl) < 0 || cur_str(c, &v, &vl) < 0) {
                return -1;
            }
        }
        a->ext_len = (size_t)((const char *)c->p - a->ext);
    }
    *why = NULL;
    return 0;
}

int
sftp_ext_next(sftp_cur *c, const char **k, size_t *kl, const char **v, size_t *vl)
{
    return cur_str(c, k, kl) < 0 || cur_str(c, v, vl) < 0 ? -1 : 0;
}

int
sftp_name_next(sftp_cur *c, struct sftp_name *e, const char **why)
{
    if (cur_str(c, &e->name, &e->name_len) < 0 || cur_str(c, &e->longname, &e->long_len) < 0) {
        *why = "a malformed name entry";
        return -1;
    }
    return sftp_attrs(c, &e->attrs, why);
}

/* ---- replies ------------------------------------------------------------------- */

static int
check_status(sftp_cur *c, struct sftp_reply *r, const char **why)
{
    const char *lang;
    size_t lang_len;
    /* The message and language tag are in the draft; a few old servers send only
     * the code, which is enough to act on. */
    if (cur_u32(c, &r->code) < 0 || (c->n > 0 && cur_str(c, &r->msg, &r->msg_len) < 0) ||
        (c->n > 0 && cur_str(c, &lang, &lang_len) < 0)) {
        *why = "a malformed SFTP status";
        return -1;
    }
    return 0;
}

/* A NAME reply: a count the message can hold (each entry has at least two
 * strings and the attribute flags: 12 bytes), then entries that parse. For a
 * directory listing each name is one safe path component, or "." / "..". */
static int
check_names(sftp_cur *c, int req, struct sftp_reply *r, const char **why)
{
    if (cur_u32(c, &r->count) < 0 || r->count > c->n / 12) {
        *why = "an SFTP name list whose count does not fit in its message";
        return -1;
    }
    if (req == SFTP_REALPATH || req == SFTP_READLINK ? r->count != 1 : r->count == 0) {
        *why = req == SFTP_READDIR ? "an empty SFTP directory listing message (the end of a "
                                     "listing is an EOF status)"
                                   : "an SFTP path answer without exactly one name";
        return -1;
    }
    r->names = (const char *)c->p;
    for (uint32_t i = 0; i < r->count; i++) {
        struct sftp_name e;
        if (sftp_name_next(c, &e, why) < 0) {
            return -1;
        }
        if (e.name_len > (req == SFTP_READDIR ? SFTP_NAME_MAX : SFTP_PATH_MAX) ||
            e.long_len > SFTP_LONGNAME_MAX) {
            *why = "a name longer than any file system allows (a listed name over 4 KiB, "
                   "a long name over 8 KiB, a path over 64 KiB)";
            return -1;
        }
        if (req != SFTP_READDIR) {
            if (e.name_len == 0 || memchr(e.name, '\0', e.name_len) != NULL) {
                *why = "an empty path, or one with a NUL byte in it";
                return -1;
            }
            continue;
        }
        int dot = (e.name_len == 1 && e.name[0] == '.') ||
                  (e.name_len == 2 && e.name[0] == '.' && e.name[1] == '.');
        const char *bad = dot ? NULL : pyssh_name_problem(e.name, e.name_len, 0);
        if (bad != NULL) {
            *why = bad;
            return -1;
        }
    }
    r->names_len = (size_t)((const char *)c->p - r->names);
    return 0;
}

/* Which reply types may answer request `req` besides a STATUS. */
static int
expected_type(int req)
{
    switch (req) {
    case SFTP_OPEN:
    case SFTP_OPENDIR:
        return SFTP_HANDLE;
    case SFTP_READ:
        return SFTP_DATA;
    case SFTP_READDIR:
    case SFTP_REALPATH:
    case SFTP_READLINK:
        return SFTP_NAME;
    case SFTP_LSTAT:
    case SFTP_FSTAT:
    case SFTP_STAT:
        return SFTP_ATTRS;
    case SFTP_EXTENDED:
        return SFTP_EXTENDED_REPLY;
    default:
        return SFTP_STATUS; /* CLOSE, WRITE, SETSTAT, REMOVE, MKDIR, RENAME... */
    }
}

static int
check_body(sftp_cur *c, int req, uint32_t asked, struct sftp_reply *r, const char **why)
{
    switch (r->type) {
    case SFTP_STATUS:
        return check_status(c, r, why);
    case SFTP_HANDLE:
        if (cur_str(c, &r->data, &r->data_len) < 0 || r->data_len == 0 ||
            r->data_len > SFTP_HANDLE_MAX) {
            *why = "an SFTP handle that is empty, cut short or longer than 256 bytes";
            return -1;
        }
        return 0;
    case SFTP_DATA:
        if (cur_str(c, &r->data, &r->data_len) < 0) {
            *why = "an SFTP DATA reply cut short";
            return -1;
        }
        if (r->data_len > asked) {
            *why = "an SFTP DATA reply longer than asked for";
            return -1;
        }
        return 0;
    case SFTP_NAME:
        return check_names(c, req, r, why);
    case SFTP_ATTRS:
        return sftp_attrs(c, &r->attrs, why);
    default: /* EXTENDED_REPLY: the extension's own format */
        r->data = (const char *)c->p;
        r->data_len = c->n;
        c->p += c->n;
        c->n = 0;
        return 0;
    }
}

int
sftp_reply_check(int req, int type, const char *p, size_t n, uint32_t asked, struct sftp_reply *r,
                 const char **why)
{
    memset(r, 0, sizeof(*r));
    r->type = type;
    *why = NULL;
    if (type != SFTP_STATUS && type != expected_type(req)) {
        *why = "an SFTP reply of a type that does not answer the request";
        return -1;
    }
    sftp_cur c = {(const unsigned char *)p, n};
    if (check_body(&c, req, asked, r, why) < 0) {
        return -1;
    }
    if (c.n != 0) {
        *why = "bytes left over after the fields of an SFTP reply";
        return -1;
    }
    if (type == SFTP_STATUS && r->code == SFTP_FX_OK && expected_type(req) != SFTP_STATUS &&
        req != SFTP_EXTENDED) {
        *why = "an OK status where the request asked for a handle, data, names or attributes";
        return -1;
    }
    return 0;
}

int
sftp_version_check(const char *p, size_t n, uint32_t *version, sftp_cur *ext, const char **why)
{
    sftp_cur c = {(const unsigned char *)p, n};
    if (cur_u32(&c, version) < 0) {
        *why = "an SFTP VERSION message without a version";
        return -1;
    }
    if (*version != 3) {
        *why = "an SFTP version other than 3 (the one pyssh asked for)";
        return -1;
    }
    *ext = c;
    while (c.n > 0) {
        const char *k, *v;
        size_t kl, vl;
        if (sftp_ext_next(&c, &k, &kl, &v, &vl) < 0) {
            *why = "malformed SFTP extension pairs";
            return -1;
        }
    }
    return 0;
}

int
sftp_u64_fields(const char *p, size_t n, uint64_t *out, size_t count, const char **why)
{
    sftp_cur c = {(const unsigned char *)p, n};
    if (n != count * 8) {
        *why = "an extension reply of the wrong length";
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        cur_u64(&c, &out[i]);
    }
    return 0;
}
