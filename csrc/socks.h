/* The SOCKS request parser (socks.c), declared apart from pyssh.h because it
 * needs no Python and no libssh: the fuzz harness (tests/fuzz/socks_parse_fuzz.c)
 * compiles it alone. tunnel.c, which runs DYNAMIC tunnels' handshakes, includes
 * this file. */
#ifndef PYSSH_SOCKS_H
#define PYSSH_SOCKS_H

#include <stddef.h>

#define SOCKS_NAME 255 /* a host name or SOCKS 4 user id, in bytes, at most */

/* socks_parse's verdict on the bytes so far. */
enum { SOCKS_MORE, SOCKS_DONE, SOCKS_BAD };

#define SOCKS5_NO_METHOD 0xFF /* the method reply refusing every method offered */
#define SOCKS4_REFUSED   0x5B

/* What the client's bytes say. */
typedef struct {
    int version;     /* 4 or 5, from the first byte */
    int greeted;     /* SOCKS 5: a whole greeting offering "no authentication" */
    size_t used;     /* SOCKS_DONE: the handshake's length */
    int reply;       /* SOCKS_BAD: the reply code, or -1 to close without one */
    const char *why; /* SOCKS_BAD: for the log */
    char host[SOCKS_NAME + 1];
    int port;
} socks_req;

/* The one parser of what a SOCKS client sends, p[0:n) from its first byte:
 * SOCKS 4 or 4a's request, or SOCKS 5's greeting and request. SOCKS_MORE until
 * the request is whole; SOCKS_DONE with r->host (1..SOCKS_NAME bytes), r->port
 * (not 0) and r->used (<= n); SOCKS_BAD with r->reply and r->why. Reads no byte
 * outside p[0:n). */
int socks_parse(const unsigned char *p, size_t n, socks_req *r);

#endif
