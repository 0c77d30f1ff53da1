/* The deterministic sampler over token files; see train.h.  Files are opened once and read through
 * the tokenizer module's mmap'd token-file reader. */
#include "train.h"
#include "tokenizer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rl_sampler {
    tok_file **files;
    uint64_t *starts; /* stream offset of each file */
    int n_files;
    uint64_t n_tokens, n_slots, prime, factor; /* n_tokens: the part samples come from (rl_sampler_limit) */
    uint64_t stream_tokens;                     /* all tokens of the files */
    int ctx;
};

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

static int is_prime(uint64_t n)
{
    if (n < 2) return 0;
    if (n % 2 == 0) return n == 2;
    for (uint64_t d = 3; d * d <= n; d += 2)
        if (n % d == 0) return 0;
    return 1;
}

uint64_t rl_magic_prime(uint64_t n)
{
    for (uint64_t p = n; p >= 2; p--)
        if (p % 3 == 2 && is_prime(p)) return p;
    return 0;
}

/* ctx+1 tokens per sample: the last slot must leave one token after it. */
static int set_slots(rl_sampler *s, char *err, size_t errlen)
{
    const int ctx = s->ctx;
    s->n_slots = s->n_tokens > (uint64_t)ctx ? (s->n_tokens - 1) / (uint64_t)ctx : 0;
    s->prime = rl_magic_prime(s->n_slots);
    if (!s->prime)
        return fail(err, errlen,
                    "the token files hold %llu tokens%s: too few for sequences of %d (need at least %d); "
                    "use more data or a shorter seq_len",
                    (unsigned long long)s->n_tokens, s->n_tokens < s->stream_tokens ? " before the validation tail" : "",
                    ctx, 2 * ctx + 1);
    /* A multiplier near P·(√5−1)/2 scatters consecutive samples across the stream. */
    s->factor = (uint64_t)((double)s->prime * 0.6180339887498949);
    if (s->factor == 0) s->factor = 1;
    return 0;
}

int rl_sampler_open(rl_sampler **out, const char *const *files, int n_files, int ctx, char *err, size_t errlen)
{
    if (n_files < 1) return fail(err, errlen, "no token files given");
    if (ctx < 1) return fail(err, errlen, "sequence length must be positive, got %d", ctx);
    rl_sampler *s = calloc(1, sizeof *s);
    if (!s) return fail(err, errlen, "out of memory");
    s->files = calloc((size_t)n_files, sizeof *s->files);
    s->starts = calloc((size_t)n_files, sizeof *s->starts);
    if (!s->files || !s->starts) {
        rl_sampler_close(s);
        return fail(err, errlen, "out of memory");
    }
    s->ctx = ctx;
    for (int i = 0; i < n_files; i++) {
        if (tok_file_open(files[i], &s->files[i], err, errlen) < 0) {
            rl_sampler_close(s);
            return -1;
        }
        s->n_files = i + 1;
        s->starts[i] = s->n_tokens;
        s->n_tokens += tok_file_n_tokens(s->files[i]);
    }
    s->stream_tokens = s->n_tokens;
    if (set_slots(s, err, errlen) != 0) {
        rl_sampler_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void rl_sampler_close(rl_sampler *s)
{
    if (!s) return;
    for (int i = 0; i < s->n_files; i++) tok_file_close(s->files[i]);
    free(s->files);
    free(s->starts);
    free(s);
}

uint64_t rl_sampler_n_tokens(const rl_sampler *s)
{
    return s->n_tokens;
}

uint64_t rl_sampler_prime(const rl_sampler *s)
{
    return s->prime;
}

uint64_t rl_sampler_offset(const rl_sampler *s, uint64_t g)
{
    unsigned __int128 p = s->prime, x = (g + 1) % s->prime;
    unsigned __int128 cube = x * x % p * x % p;
    uint64_t slot = (uint64_t)(cube * s->factor % p);
    return slot * (uint64_t)s->ctx;
}

int rl_sampler_limit(rl_sampler *s, uint64_t n_tokens, char *err, size_t errlen)
{
    if (n_tokens > s->stream_tokens) n_tokens = s->stream_tokens;
    s->n_tokens = n_tokens;
    return set_slots(s, err, errlen);
}

uint64_t rl_sampler_stream_tokens(const rl_sampler *s)
{
    return s->stream_tokens;
}

uint32_t rl_sampler_vocab_size(const rl_sampler *s, int *file)
{
    uint32_t v = 0;
    for (int i = 0; i < s->n_files; i++)
        if (tok_file_vocab_size(s->files[i]) > v) {
            v = tok_file_vocab_size(s->files[i]);
            if (file) *file = i;
        }
    return v;
}

int rl_sampler_read_at(const rl_sampler *s, uint64_t pos, size_t need, int32_t *out, char *err, size_t errlen)
{
    uint32_t *tmp = (uint32_t *)out; /* same size; converted in place below */
    size_t done = 0;
    for (int i = 0; i < s->n_files && done < need; i++) {
        uint64_t begin = s->starts[i], end = begin + tok_file_n_tokens(s->files[i]);
        uint64_t at = pos + done;
        if (at >= end || at < begin) continue;
        size_t take = (size_t)(end - at < need - done ? end - at : need - done);
        if (tok_file_read(s->files[i], at - begin, take, tmp + done, err, errlen) < 0) return -1;
        done += take;
    }
    if (done != need)
        return fail(err, errlen, "tokens [%llu, %llu) run past the end of the token stream (%llu tokens)",
                    (unsigned long long)pos, (unsigned long long)(pos + need), (unsigned long long)s->stream_tokens);
    for (size_t i = 0; i < need; i++) {
        if (tmp[i] > INT32_MAX) return fail(err, errlen, "token id %u does not fit int32", tmp[i]);
        out[i] = (int32_t)tmp[i];
    }
    return 0;
}

int rl_sampler_read(const rl_sampler *s, uint64_t g, int32_t *out, char *err, size_t errlen)
{
    return rl_sampler_read_at(s, rl_sampler_offset(s, g), (size_t)s->ctx + 1, out, err, errlen);
}
