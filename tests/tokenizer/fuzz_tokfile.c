/* libFuzzer: opening and reading token files (the trainer's input) never crashes or reads out of
 * bounds, whatever the bytes. The first input byte picks the format; for binidx the next two give
 * the length of the .idx part, the rest is the .bin part. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tokenizer.h"

static void put(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(p, 1, n, f) != n) abort();
    fclose(f);
}

/* Removes this input's files: a run leaves nothing behind in the temporary directory. */
static void remove_files(const char *prefix)
{
    static const char *const ext[] = {".tok", ".idx", ".bin"};
    char path[4200];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s%s", prefix, ext[i]);
        unlink(path);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char prefix[4096], path[4200], err[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(prefix, sizeof prefix, "%s/fuzz-tokfile-%d", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    if (size < 1) return 0;
    if (data[0] & 1) {
        snprintf(path, sizeof path, "%s.tok", prefix);
        put(path, data + 1, size - 1);
    } else {
        if (size < 3) return 0;
        size_t n_idx = (size_t)(data[1] | data[2] << 8);
        if (n_idx > size - 3) n_idx = size - 3;
        snprintf(path, sizeof path, "%s.idx", prefix);
        put(path, data + 3, n_idx);
        snprintf(path, sizeof path, "%s.bin", prefix);
        put(path, data + 3 + n_idx, size - 3 - n_idx);
        snprintf(path, sizeof path, "%s", prefix);
    }
    tok_file *f;
    if (tok_file_open(path, &f, err, sizeof err) == 0) {
        uint32_t buf[64];
        for (uint64_t d = 0; d < tok_file_n_docs(f) && d < 1000; d++) {
            uint64_t b, e;
            if (tok_file_doc(f, d, &b, &e)) abort();
            if (b > e || e > tok_file_n_tokens(f)) abort(); /* the reader checked the offsets */
            size_t n = e - b < 64 ? (size_t)(e - b) : 64;
            tok_file_read(f, b, n, buf, err, sizeof err);
        }
        tok_file_close(f);
    }
    remove_files(prefix);
    return 0;
}
