/* The SOCKS 4, 4a and 5 requests a DYNAMIC tunnel's clients send (CONNECT
 * only, no authentication): parsed here, in pure functions over the bytes that
 * trust none of them, and nowhere else. tunnel.c keeps the handshake's state
 * (buffer, replies, timeout) and calls socks_parse() on everything the client
 * sent so far, from its first byte, each time more arrives: the buffer is
 * small (SOCKS_BUF), and a parser that never resumes has no state to get wrong.
 * tests/fuzz/socks_parse_fuzz.c compiles this file on its own and checks what
 * socks.h promises. */
#include "platform.h" /* inet_ntop */

#include <string.h>

#include "socks.h"

static int
socks_bad(socks_req *r, int reply, const char *why)
{
    r->reply = reply;
    r->why = why;
    return SOCKS_BAD;
}

/* A host name from the client, p[0:len): 1..255 printable ASCII bytes (no NUL,
 * space or control byte, which no host name has and which would reach the
 * server's resolver and the log). */
static int
socks_name(socks_req *r, const unsigned char *p, size_t len)
{
    if (len == 0 || len > SOCKS_NAME) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (p[i] <= 0x20 || p[i] >= 0x7F) {
            return 0;
        }
    }
    memcpy(r->host, p, len);
    r->host[len] = '\0';
    return 1;
}

/* The NUL-terminated field at p[from:n) (SOCKS 4's user id, 4a's host name):
 * its length; -1 when its NUL has not come yet but may; -2 when it is longer
 * than SOCKS_NAME. */
static long
socks_field(const unsigned char *p, size_t n, size_t from)
{
    size_t limit = from + SOCKS_NAME + 1;
    for (size_t i = from; i < n && i < limit; i++) {
        if (p[i] == 0) {
            return (long)(i - from);
        }
    }
    return n >= limit ? -2 : -1;
}

/* SOCKS 4 and 4a: VER CMD DSTPORT(2) DSTIP(4) USERID NUL [HOST NUL]. */
static int
socks4_parse(const unsigned char *p, size_t n, socks_req *r)
{
    if (n < 2) {
        return SOCKS_MORE;
    }
    if (p[1] != 1) {
        return socks_bad(r, SOCKS4_REFUSED, "a SOCKS 4 command other than CONNECT (BIND)");
    }
    if (n < 8) {
        return SOCKS_MORE;
    }
    r->port = p[2] << 8 | p[3];
    long ulen = socks_field(p, n, 8);
    if (ulen < 0) {
        return ulen == -1 ? SOCKS_MORE : socks_bad(r, SOCKS4_REFUSED, "an over-long user id");
    }
    size_t end = 8 + (size_t)ulen + 1;
    const unsigned char *ip = p + 4;
    if (ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] != 0) {
        /* 4a: 0.0.0.x says that a host name follows the user id */
        long hlen = socks_field(p, n, end);
        if (hlen == -1) {
            return SOCKS_MORE;
        }
        if (hlen < 0 || !socks_name(r, p + end, (size_t)hlen)) {
            return socks_bad(r, SOCKS4_REFUSED, "an empty, over-long or invalid host name");
        }
        end += (size_t)hlen + 1;
    }
    else if (ip[0] == 0) {
        return socks_bad(r, SOCKS4_REFUSED, "an address in 0.0.0.0/8");
    }
    else {
        inet_ntop(AF_INET, ip, r->host, sizeof(r->host));
    }
    if (r->port == 0) {
        return socks_bad(r, SOCKS4_REFUSED, "port 0");
    }
    r->used = end;
    return SOCKS_DONE;
}

/* SOCKS 5's request, at p[0:n) after the greeting: VER CMD RSV ATYP DST.ADDR
 * DST.PORT(2); `used` counts from the greeting's start (`g` bytes). */
static int
socks5_request(const unsigned char *p, size_t n, size_t g, socks_req *r)
{
    static const unsigned char field_ok[3] = {5, 1, 0}; /* VER, CMD (CONNECT), RSV */
    static const int field_reply[3] = {0x01, 0x07, 0x01};
    static const char *field_why[3] = {"a request whose version is not 5",
                                       "a command other than CONNECT (BIND, UDP ASSOCIATE)",
                                       "a request whose reserved byte is not 0"};
    for (size_t i = 0; i < 3; i++) {
        if (n <= i) {
            return SOCKS_MORE;
        }
        if (p[i] != field_ok[i]) {
            return socks_bad(r, field_reply[i], field_why[i]);
        }
    }
    if (n < 4) {
        return SOCKS_MORE;
    }
    size_t alen, at = 4; /* the address: its length, where it starts */
    if (p[3] == 0x01 || p[3] == 0x04) {
        alen = p[3] == 0x01 ? 4 : 16;
    }
    else if (p[3] == 0x03) {
        if (n < 5) {
            return SOCKS_MORE;
        }
        alen = p[4]; /* a length byte: 255 at most, the buffer's limit too */
        at = 5;
    }
    else {
        return socks_bad(r, 0x08, "an address type other than IPv4, IPv6 or a domain name");
    }
    if (n < at + alen + 2) {
        return SOCKS_MORE;
    }
    if (p[3] == 0x03 && !socks_name(r, p + at, alen)) {
        return socks_bad(r, 0x01, "an empty or invalid host name");
    }
    if (p[3] != 0x03) {
        inet_ntop(p[3] == 0x01 ? AF_INET : AF_INET6, p + at, r->host, sizeof(r->host));
    }
    r->port = p[at + alen] << 8 | p[at + alen + 1];
    if (r->port == 0) {
        return socks_bad(r, 0x01, "port 0");
    }
    r->used = g + at + alen + 2;
    return SOCKS_DONE;
}

/* The one parser of what a SOCKS client sends, from its first byte (the
 * whole buffer each time: it is small): SOCKS 4 or 4a's request, or SOCKS 5's
 * greeting (VER NMETHODS METHODS) and request. */
int
socks_parse(const unsigned char *p, size_t n, socks_req *r)
{
    memset(r, 0, sizeof(*r));
    if (n < 1) {
        return SOCKS_MORE;
    }
    r->version = p[0];
    if (p[0] == 4) {
        return socks4_parse(p, n, r);
    }
    if (p[0] != 5) {
        return socks_bad(r, -1, "not a SOCKS 4 or 5 client (its first byte)");
    }
    if (n < 2) {
        return SOCKS_MORE;
    }
    size_t g = 2 + (size_t)p[1];
    if (n < g) {
        return SOCKS_MORE;
    }
    if (memchr(p + 2, 0x00, p[1]) == NULL) {
        return socks_bad(r, SOCKS5_NO_METHOD,
                         "no method the proxy supports offered (only \"no authentication\")");
    }
    r->greeted = 1;
    return socks5_request(p + g, n - g, g, r);
}
