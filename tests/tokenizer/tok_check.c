/* tok_check TOKENIZER EXPECTED_JSON: compares our ids with HuggingFace's (written by
 * hf_expected.js) case by case, and checks decoding: decode(ids) equals HF's decode, and
 * decode(encode(x)) equals normalize(x). Prints every mismatch (up to a limit) with the ids and
 * token bytes around the first difference. Exit 0 only when everything matches. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer.h"

static int failures;

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    *len = (size_t)n;
    return b;
}

static void show_piece(const tok_tokenizer *t, uint32_t id)
{
    const char *b;
    size_t n;
    if (tok_id_bytes(t, id, &b, &n)) {
        printf(" %u(?)", id);
        return;
    }
    printf(" %u\"", id);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c < 32 || c == '"' || c == '\\')
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void report(const tok_tokenizer *t, const char *name, int special, const uint32_t *got, size_t ngot,
                   json_t *want)
{
    size_t nwant = json_array_size(want), i = 0;
    while (i < ngot && i < nwant && got[i] == (uint32_t)json_integer_value(json_array_get(want, i)))
        i++;
    if (++failures > 20) return;
    printf("MISMATCH %s (special=%d): %zu ids vs HF %zu, first difference at %zu\n  ours:", name, special,
           ngot, nwant, i);
    size_t lo = i > 3 ? i - 3 : 0;
    for (size_t k = lo; k < ngot && k < i + 6; k++)
        show_piece(t, got[k]);
    printf("\n  HF:  ");
    for (size_t k = lo; k < nwant && k < i + 6; k++)
        show_piece(t, (uint32_t)json_integer_value(json_array_get(want, k)));
    printf("\n");
}

static bool ids_equal(const uint32_t *got, size_t n, json_t *want)
{
    if (json_array_size(want) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (got[i] != (uint32_t)json_integer_value(json_array_get(want, i))) return false;
    return true;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tok_check TOKENIZER EXPECTED_JSON\n");
        return 2;
    }
    char err[512];
    tok_tokenizer *t;
    if (tok_load(argv[1], &t, err, sizeof err)) {
        fprintf(stderr, "tok_check: %s\n", err);
        return 1;
    }
    json_error_t je;
    json_t *root = json_load_file(argv[2], 0, &je);
    if (!root) {
        fprintf(stderr, "tok_check: %s: %s\n", argv[2], je.text);
        return 1;
    }
    tok_state *s = tok_state_new(t);
    tok_ids ids = {0};
    tok_bytes dec = {0}, fixed = {0};
    json_t *cases = json_object_get(root, "cases"), *c;
    bool roundtrip = json_is_true(json_object_get(root, "roundtrip"));
    size_t i, n_cases = 0, n_bytes = 0;
    double secs = 0;
    json_array_foreach(cases, i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        int special = json_is_true(json_object_get(c, "special"));
        json_t *jt = json_object_get(c, "text"), *jf = json_object_get(c, "file");
        size_t len;
        char *owned = NULL;
        const char *text;
        if (json_is_string(jt)) {
            text = json_string_value(jt);
            len = json_string_length(jt);
        } else {
            owned = read_all(json_string_value(jf), &len);
            if (!owned) {
                printf("MISSING file %s\n", json_string_value(jf));
                failures++;
                continue;
            }
            text = owned;
        }
        ids.n = 0;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        int rc = tok_encode(s, text, len, special ? TOK_ENCODE_SPECIAL : 0, &ids, err, sizeof err);
        clock_gettime(CLOCK_MONOTONIC, &b);
        secs += (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        n_bytes += len;
        n_cases++;
        if (rc) {
            printf("ERROR %s: %s\n", name, err);
            failures++;
        } else if (!ids_equal(ids.v, ids.n, json_object_get(c, "ids"))) {
            report(t, name, special, ids.v, ids.n, json_object_get(c, "ids"));
        } else {
            dec.n = fixed.n = 0;
            if (tok_decode(t, ids.v, ids.n, 0, &dec, err, sizeof err) ||
                tok_utf8_repair(dec.v ? dec.v : "", dec.n, &fixed) < 0) {
                printf("ERROR decoding %s: %s\n", name, err);
                failures++;
            } else {
                json_t *hd = json_object_get(c, "decoded"), *nm = json_object_get(c, "normalized");
                const char *want = nm ? json_string_value(nm) : text;
                size_t want_len = nm ? json_string_length(nm) : len;
                if (hd && (json_string_length(hd) != fixed.n ||
                           memcmp(json_string_value(hd), fixed.v ? fixed.v : "", fixed.n) != 0)) {
                    printf("DECODE differs from HF for %s\n", name);
                    failures++;
                } else if (jt && roundtrip &&
                           (want_len != dec.n || memcmp(want, dec.v ? dec.v : "", dec.n) != 0)) {
                    printf("ROUNDTRIP decode(encode(x)) != normalize(x) for %s\n", name);
                    failures++;
                }
            }
        }
        free(owned);
    }
    printf("tok_check: %s: %zu cases, %zu bytes, %d failures (encode %.1f MB/s)\n", argv[1], n_cases, n_bytes,
           failures, secs > 0 ? (double)n_bytes / 1e6 / secs : 0.0);
    tok_ids_free(&ids);
    tok_bytes_free(&dec);
    tok_bytes_free(&fixed);
    tok_state_free(s);
    tok_free(t);
    json_decref(root);
    return failures ? 1 : 0;
}
