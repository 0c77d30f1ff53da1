/* libFuzzer: encoding arbitrary bytes (invalid UTF-8 included) with the GPT-2-style fixture (NFC,
 * added tokens with every flag) never crashes, and what it yields decodes to valid ids. Without
 * --special and with a tokenizer whose pre-tokenizer adds no prefix space, decode(encode(x)) would
 * equal NFC(x); the fixture adds a prefix space, so only validity is checked here. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokenizer.h"

static tok_tokenizer *t;
static tok_state *s;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    if (!t) {
        if (tok_load(FIXTURE, &t, err, sizeof err)) {
            fprintf(stderr, "fuzz_tokenizer_encode: %s\n", err);
            abort();
        }
        s = tok_state_new(t);
    }
    tok_ids ids = {0};
    tok_bytes out = {0};
    for (unsigned flags = 0; flags < 2; flags++) {
        ids.n = 0;
        if (tok_encode(s, (const char *)data, size, flags, &ids, err, sizeof err)) abort();
        out.n = 0;
        if (tok_decode(t, ids.v, ids.n, 0, &out, err, sizeof err)) abort();
    }
    tok_ids_free(&ids);
    tok_bytes_free(&out);
    return 0;
}
