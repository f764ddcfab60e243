/* The SFTP reply checker (sftpproto.c), declared apart from pyssh.h because it
 * needs no Python: the fuzz harness (tests/fuzz/sftp_reply_fuzz.c) compiles it
 * alone. pyssh.h includes this file; the extension's C files include pyssh.h. */
#ifndef PYSSH_SFTPPROTO_H
#define PYSSH_SFTPPROTO_H

#include <stddef.h>
#include <stdint.h>

/* message types (version 3) */
#define SFTP_INIT           1
#define SFTP_VERSION        2
#define SFTP_OPEN           3
#define SFTP_CLOSE          4
#define SFTP_READ           5
#define SFTP_WRITE          6
#define SFTP_LSTAT          7
#define SFTP_FSTAT          8
#define SFTP_OPENDIR        11
#define SFTP_READDIR        12
#define SFTP_REALPATH       16
#define SFTP_STAT           17
#define SFTP_READLINK       19
#define SFTP_EXTENDED       200
#define SFTP_STATUS         101
#define SFTP_HANDLE         102
#define SFTP_DATA           103
#define SFTP_NAME           104
#define SFTP_ATTRS          105
#define SFTP_EXTENDED_REPLY 201

#define SFTP_FX_OK  0
#define SFTP_FX_EOF 1

#define SFTP_A_SIZE        0x1u
#define SFTP_A_UIDGID      0x2u
#define SFTP_A_PERMISSIONS 0x4u
#define SFTP_A_ACMODTIME   0x8u
#define SFTP_A_EXTENDED    0x80000000u

#define SFTP_HANDLE_MAX 256 /* the draft's limit on a handle's length */
#define SFTP_NAME_MAX                                                                              \
    4096                        /* a listed name (file systems stop at 255 bytes,
                                      Windows' at 765 in UTF-8) */
#define SFTP_LONGNAME_MAX 8192  /* a listing's "ls -l" line */
#define SFTP_PATH_MAX     65536 /* a REALPATH or READLINK answer */

typedef struct {
    const unsigned char *p;
    size_t n; /* bytes left */
} sftp_cur;

struct sftp_frame {
    int type;
    const char *body; /* after the type */
    size_t len;
    size_t consumed; /* the whole frame, length field included */
};

struct sftp_attrs {
    uint32_t flags; /* which fields below the server gave */
    uint64_t size;  /* at most 2**63-1 */
    uint32_t uid, gid, perm, atime, mtime;
    uint32_t next; /* extended pairs: their count and bytes */
    const char *ext;
    size_t ext_len;
};

struct sftp_name {
    const char *name, *longname;
    size_t name_len, long_len;
    struct sftp_attrs attrs;
};

/* A reply (after its request id) accepted by sftp_reply_check. Pointers are
 * into the message checked. */
struct sftp_reply {
    int type;
    uint32_t code; /* STATUS: any value but SFTP_FX_OK is a failure */
    const char *msg;
    size_t msg_len;
    const char *data; /* HANDLE, DATA, EXTENDED_REPLY */
    size_t data_len;
    uint32_t count; /* NAME: entries at `names`, read with sftp_name_next */
    const char *names;
    size_t names_len;
    struct sftp_attrs attrs; /* ATTRS */
};

/* One frame at the start of buf[0:len]: 1 and *f, 0 when incomplete, -1 (and
 * *why) when its length is 0 or over `max`. */
int sftp_frame(const char *buf, size_t len, size_t max, struct sftp_frame *f, const char **why);

/* Check the reply of type `type`, payload p[0:n] after the request id, to a
 * request of type `req` (`asked`: the bytes a READ asked for). 0 and *r, or -1
 * and *why. */
int sftp_reply_check(int req, int type, const char *p, size_t n, uint32_t asked,
                     struct sftp_reply *r, const char **why);

/* Entries of a checked NAME reply, attributes' extension pairs: the cursor
 * starts at r->names / a->ext. */
int sftp_name_next(sftp_cur *c, struct sftp_name *e, const char **why);
int sftp_ext_next(sftp_cur *c, const char **k, size_t *kl, const char **v, size_t *vl);
int sftp_attrs(sftp_cur *c, struct sftp_attrs *a, const char **why);

/* VERSION (after its type): version 3, then extension pairs at *ext. */
int sftp_version_check(const char *p, size_t n, uint32_t *version, sftp_cur *ext, const char **why);

/* An extension's reply of exactly `count` uint64 fields (limits@openssh.com,
 * statvfs@openssh.com). */
int sftp_u64_fields(const char *p, size_t n, uint64_t *out, size_t count, const char **why);

#endif
