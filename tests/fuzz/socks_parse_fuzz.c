/* libFuzzer harness for pyssh's SOCKS request parser (csrc/socks.c), compiled on
 * its own:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined tests/fuzz/socks_parse_fuzz.c -o socks_fuzz
 *   ./socks_fuzz -max_total_time=60 -max_len=1024 tests/fuzz/socks_corpus   # explore
 *
 * tests/test_fuzz.py replays the corpus and tests/fuzz/regressions/socks/, then
 * fuzzes for a bounded time. An input is what a client sent, from its first byte.
 * Besides memory errors it checks what socks.h promises: a whole request has a
 * host of 1 to 255 bytes, no NUL inside it and nothing but printable ASCII,
 * a port that is not 0, and a length within the input; each of its prefixes is
 * "more", since tunnel.c parses again as bytes arrive; a refusal says why. */
#include "../../csrc/socks.c"

#include <stdlib.h>

static void
check_done(const socks_req *r, size_t size)
{
    size_t hlen = strnlen(r->host, sizeof(r->host));
    if (hlen == 0 || hlen > SOCKS_NAME || r->port <= 0 || r->port > 65535 || r->used == 0 ||
        r->used > size || (r->version != 4 && r->version != 5)) {
        abort();
    }
    for (size_t i = 0; i < hlen; i++) {
        if ((unsigned char)r->host[i] <= 0x20 || (unsigned char)r->host[i] >= 0x7F) {
            abort();
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a copy of exactly `size` bytes, so that reading past it is caught */
    unsigned char *p = malloc(size ? size : 1);
    if (p == NULL) {
        return 0;
    }
    memcpy(p, data, size);
    socks_req r;
    int rc = socks_parse(p, size, &r);
    if (rc == SOCKS_DONE) {
        check_done(&r, size);
        /* the request's own bytes say the same on their own, and any shorter
         * prefix of them asks for more */
        socks_req again;
        if (socks_parse(p, r.used, &again) != SOCKS_DONE || again.used != r.used ||
            again.port != r.port || strcmp(again.host, r.host) != 0) {
            abort();
        }
        if (socks_parse(p, r.used - 1, &again) != SOCKS_MORE) {
            abort();
        }
    }
    else if (rc == SOCKS_BAD) {
        if (r.why == NULL || r.reply < -1 || r.reply > 0xFF) {
            abort();
        }
    }
    else if (rc != SOCKS_MORE) {
        abort();
    }
    free(p);
    return 0;
}
