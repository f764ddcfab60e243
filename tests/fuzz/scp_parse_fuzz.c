/* libFuzzer harness for pyssh's SCP message parser (csrc/scp.c), compiled on its own:
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined tests/fuzz/scp_parse_fuzz.c -o scp_fuzz
 *   ./scp_fuzz -max_total_time=60 tests/fuzz/corpus      # explore
 *   ./scp_fuzz tests/fuzz/regressions/crash-...           # replay what it ever found
 *
 * tests/test_scp_fuzz.py does both, for a bounded time. Besides memory errors it
 * checks what the parser promises: an accepted file or directory name is never
 * empty, ".", "..", and never holds '/' or NUL; modes fit 07777; sizes 63 bits. */
#define PYSSH_FUZZ     1
#define PYSSH_SCP_FUZZ 1
#include "../../csrc/names.c"
#include "../../csrc/scp.c"

#include <stdlib.h>

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct scp_msg m;
    const char *why = NULL;
    /* a copy of exactly `size` bytes, so that reading past it is caught */
    char *line = malloc(size ? size : 1);
    if (line == NULL) {
        return 0;
    }
    memcpy(line, data, size);
    int rc = scp_parse(line, size, &m, &why);
    if (rc < 0) {
        if (why == NULL) {
            abort(); /* a refusal always says why */
        }
    }
    else if (m.kind == SCP_FILE || m.kind == SCP_DIR) {
        const char *n = m.text;
        size_t k = m.text_len;
        if (k == 0 || k > SCP_NAME_MAX || n < line || n + k != line + size) {
            abort();
        }
        if ((k == 1 && n[0] == '.') || (k == 2 && n[0] == '.' && n[1] == '.')) {
            abort();
        }
        if (memchr(n, '/', k) || memchr(n, '\0', k) || memchr(n, '\n', k)) {
            abort();
        }
        if (m.mode > 07777 || m.size > 0x7fffffffffffffffULL) {
            abort();
        }
    }
    else if (m.kind != SCP_END && m.kind != SCP_TIME && m.kind != SCP_WARNING &&
             m.kind != SCP_ERROR) {
        abort();
    }
    free(line);
    return 0;
}
