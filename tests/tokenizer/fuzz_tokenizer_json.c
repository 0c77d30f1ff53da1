/* libFuzzer: tokenizer.json loading must never crash, leak or read out of bounds, whatever the
 * bytes; when a file loads, encoding and decoding with it must not either. */
#include <stdint.h>
#include <stdlib.h>

#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    tok_tokenizer *t;
    if (tok_load_json((const char *)data, size, NULL, 0, "fuzz", &t, err, sizeof err)) return 0;
    tok_state *s = tok_state_new(t);
    tok_ids ids = {0};
    tok_bytes out = {0};
    static const char text[] = "Hello, world! 123 \xe4\xb8\xad\xe6\x96\x87 <|endoftext|>\n\n  x";
    if (s && tok_encode(s, text, sizeof text - 1, TOK_ENCODE_SPECIAL, &ids, err, sizeof err) == 0)
        tok_decode(t, ids.v, ids.n, 0, &out, err, sizeof err);
    tok_ids_free(&ids);
    tok_bytes_free(&out);
    tok_state_free(s);
    tok_free(t);
    return 0;
}
