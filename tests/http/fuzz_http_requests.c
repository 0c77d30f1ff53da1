/* libFuzzer target for the HTTP request path before any handler: llhttp with our callbacks and limits,
 * pipelined requests split at arbitrary points, then the target and query parsing every route does. */
#include "http.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    /* The first byte picks the read size: the parser must give the same answers however bytes arrive. */
    size_t chunk = (size_t)data[0] % 64 + 1;
    data++, size--;
    http_parser hp;
    http_parser_init(&hp);
    size_t off = 0;
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk, used;
        int rc = http_parser_feed(&hp, (const char *)data + off, n, &used);
        if (rc == HTTP_BAD_REQUEST) {
            if (hp.error_status < 400 || hp.error_status > 499) __builtin_trap();
            break;
        }
        if (used > n) __builtin_trap();
        off += used;
        if (rc == HTTP_REQUEST_READY) {
            char path[HTTP_MAX_URL], value[256];
            const char *query;
            if (strlen(hp.req.url) != hp.req.url_len) __builtin_trap();
            if (http_split_url(hp.req.url, path, sizeof path, &query) == 0) {
                http_query_get(query, "state", value, sizeof value);
                http_query_get(query, "after", value, 8);
            }
            http_parser_next(&hp);
        }
    }
    http_parser_free(&hp);
    return 0;
}
