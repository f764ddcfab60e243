/* libFuzzer harness for pyssh's SFTP reply checker (csrc/sftpproto.c), compiled
 * on its own with the name rule it uses (csrc/names.c):
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined tests/fuzz/sftp_reply_fuzz.c -o sftp_fuzz
 *   ./sftp_fuzz -max_total_time=60 tests/fuzz/sftp_corpus     # explore
 *
 * tests/test_fuzz.py replays the corpus and tests/fuzz/regressions/sftp/, then
 * fuzzes for a bounded time. An input is: one byte choosing the request the
 * replies answer (its top bit: the first frame is the server's VERSION), four
 * bytes of how much a READ asked for, then what the server sent: frames. Besides
 * memory errors it checks what the checker promises: every accepted field lies
 * inside its message; a reply's type answers its request; an OK status only where
 * nothing else was asked for; DATA no longer than asked; handles of 1 to 256
 * bytes; sizes at most 2**63-1; listing names one safe component or "."/"..";
 * exactly one name for REALPATH/READLINK; a refusal always says why. */
#define PYSSH_FUZZ 1
#include "../../csrc/names.c"
#include "../../csrc/sftpproto.c"

#include <stdlib.h>

#define MAX_FRAME (1024 * 1024 + 60)

static const int requests[] = {
    SFTP_OPEN,
    SFTP_CLOSE,
    SFTP_READ,
    SFTP_WRITE,
    SFTP_LSTAT,
    SFTP_FSTAT,
    9,
    10,
    SFTP_OPENDIR,
    SFTP_READDIR,
    13,
    14,
    15,
    SFTP_REALPATH,
    SFTP_STAT,
    18,
    SFTP_READLINK,
    20,
    SFTP_EXTENDED,
};

static void
inside(const char *p, size_t n, const char *lo, const char *hi)
{
    if (n > 0 && (p < lo || p + n > hi || p + n < p)) {
        abort();
    }
}

static void
verify_attrs(const struct sftp_attrs *a, const char *lo, const char *hi)
{
    if ((a->flags & SFTP_A_SIZE) && a->size > (uint64_t)INT64_MAX) {
        abort();
    }
    inside(a->ext, a->ext_len, lo, hi);
    sftp_cur c = {(const unsigned char *)a->ext, a->ext_len};
    for (uint32_t i = 0; i < a->next; i++) {
        const char *k, *v;
        size_t kl, vl;
        if (sftp_ext_next(&c, &k, &kl, &v, &vl) < 0) {
            abort(); /* counted and checked: every pair is there */
        }
        inside(k, kl, lo, hi);
        inside(v, vl, lo, hi);
    }
}

static void
verify_names(int req, const struct sftp_reply *r, const char *lo, const char *hi)
{
    if ((req == SFTP_REALPATH || req == SFTP_READLINK) ? r->count != 1 : r->count == 0) {
        abort();
    }
    sftp_cur c = {(const unsigned char *)r->names, r->names_len};
    for (uint32_t i = 0; i < r->count; i++) {
        struct sftp_name e;
        const char *why;
        if (sftp_name_next(&c, &e, &why) < 0) {
            abort();
        }
        inside(e.name, e.name_len, lo, hi);
        if (e.name_len > SFTP_PATH_MAX || e.long_len > SFTP_LONGNAME_MAX ||
            (req == SFTP_READDIR && e.name_len > SFTP_NAME_MAX)) {
            abort();
        }
        inside(e.longname, e.long_len, lo, hi);
        verify_attrs(&e.attrs, lo, hi);
        int dot = (e.name_len == 1 && e.name[0] == '.') ||
                  (e.name_len == 2 && e.name[0] == '.' && e.name[1] == '.');
        if (req == SFTP_READDIR && !dot &&
            (e.name_len == 0 || memchr(e.name, '/', e.name_len) ||
             memchr(e.name, '\0', e.name_len))) {
            abort();
        }
    }
}

static void
verify_reply(int req, uint32_t asked, const struct sftp_frame *f)
{
    struct sftp_reply r;
    const char *why = NULL;
    const char *lo = f->body, *hi = f->body + f->len;
    if (f->len < 4) {
        return; /* sftp.c refuses a reply without an id first */
    }
    if (sftp_reply_check(req, f->type, f->body + 4, f->len - 4, asked, &r, &why) < 0) {
        if (why == NULL) {
            abort();
        }
        return;
    }
    if (r.type != SFTP_STATUS && r.type != expected_type(req)) {
        abort();
    }
    if (r.type == SFTP_STATUS && r.code == SFTP_FX_OK && expected_type(req) != SFTP_STATUS &&
        req != SFTP_EXTENDED) {
        abort();
    }
    inside(r.msg, r.msg_len, lo, hi);
    inside(r.data, r.data_len, lo, hi);
    inside(r.names, r.names_len, lo, hi);
    if ((r.type == SFTP_DATA && r.data_len > asked) ||
        (r.type == SFTP_HANDLE && (r.data_len == 0 || r.data_len > SFTP_HANDLE_MAX))) {
        abort();
    }
    if (r.type == SFTP_NAME) {
        verify_names(req, &r, lo, hi);
    }
    if (r.type == SFTP_ATTRS) {
        verify_attrs(&r.attrs, lo, hi);
    }
}

static void
verify_version(const struct sftp_frame *f)
{
    uint32_t version;
    sftp_cur ext;
    const char *why = NULL;
    if (sftp_version_check(f->body, f->len, &version, &ext, &why) < 0) {
        if (why == NULL) {
            abort();
        }
        return;
    }
    while (ext.n > 0) {
        const char *k, *v;
        size_t kl, vl;
        if (sftp_ext_next(&ext, &k, &kl, &v, &vl) < 0) {
            abort();
        }
        inside(k, kl, f->body, f->body + f->len);
        inside(v, vl, f->body, f->body + f->len);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5) {
        return 0;
    }
    int req = requests[(data[0] & 0x7f) % (sizeof(requests) / sizeof(requests[0]))];
    int version_first = data[0] & 0x80;
    uint32_t asked =
        ((uint32_t)data[1] << 24) | ((uint32_t)data[2] << 16) | ((uint32_t)data[3] << 8) | data[4];
    size_t len = size - 5;
    /* a copy of exactly `len` bytes, so that reading past it is caught */
    char *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        return 0;
    }
    memcpy(buf, data + 5, len);
    size_t pos = 0;
    for (int first = 1;; first = 0) {
        struct sftp_frame f;
        const char *why = NULL;
        int rc = sftp_frame(buf + pos, len - pos, MAX_FRAME, &f, &why);
        if (rc <= 0) {
            if (rc < 0 && why == NULL) {
                abort();
            }
            break;
        }
        if (f.consumed > len - pos || f.consumed != f.len + 5 || f.body != buf + pos + 5) {
            abort();
        }
        if (first && version_first) {
            verify_version(&f);
        }
        else {
            verify_reply(req, asked, &f);
        }
        pos += f.consumed;
    }
    free(buf);
    return 0;
}
