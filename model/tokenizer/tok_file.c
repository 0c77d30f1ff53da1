/* Token files: the radlads .tok format and Megatron/RWKV binidx (layouts in tokenizer.h).
 * Writers stream ids to a temporary name and rename into place only when complete, so a crash
 * never leaves a file that looks whole. Readers map the files and check every size first. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tok_int.h"

#define TOK_MAGIC "RLTOKENS"
#define TOK_HEADER 64
static const char binidx_magic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};

static void put_u16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* ---- writer ---------------------------------------------------------------------------------- */

struct tok_writer {
    tok_format format;
    int width; /* bytes per id */
    char *path[2], *tmp[2];
    FILE *f, *idx;
    uint64_t n_tokens, doc_start;
    uint64_t *offsets; /* radlads: token offset per doc start; binidx: token count per doc */
    size_t n_docs, cap_docs;
    uint32_t vocab_size;
    int64_t eos_id;
    uint64_t fingerprint;
    unsigned char *buf;
    size_t buf_cap;
};

static char *cat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

static void writer_free(tok_writer *w)
{
    if (w->f) fclose(w->f);
    if (w->idx) fclose(w->idx);
    for (int i = 0; i < 2; i++) {
        free(w->path[i]);
        free(w->tmp[i]);
    }
    free(w->offsets);
    free(w->buf);
    free(w);
}

void tok_writer_abort(tok_writer *w)
{
    if (!w) return;
    for (int i = 0; i < 2; i++)
        if (w->tmp[i]) unlink(w->tmp[i]);
    writer_free(w);
}

int tok_writer_open(const char *prefix, tok_format format, uint32_t vocab_size, int64_t eos_id,
                    uint64_t fingerprint, tok_writer **out, char *err, size_t errlen)
{
    *out = NULL;
    tok_writer *w = calloc(1, sizeof *w);
    if (!w) return tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
    w->format = format;
    w->width = vocab_size <= 65536 ? 2 : 4;
    w->vocab_size = vocab_size;
    w->eos_id = eos_id;
    w->fingerprint = fingerprint;
    int nfiles = format == TOK_FORMAT_BINIDX ? 2 : 1;
    const char *ext[2][2] = {{".tok", NULL}, {".bin", ".idx"}};
    for (int i = 0; i < nfiles; i++) {
        w->path[i] = cat(prefix, ext[format == TOK_FORMAT_BINIDX][i]);
        w->tmp[i] = w->path[i] ? cat(w->path[i], ".partial") : NULL;
        if (!w->tmp[i]) {
            tok_writer_abort(w);
            return tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
        }
    }
    w->f = fopen(w->tmp[0], "wb");
    if (w->f && format == TOK_FORMAT_BINIDX) w->idx = fopen(w->tmp[1], "wb");
    if (!w->f || (format == TOK_FORMAT_BINIDX && !w->idx)) {
        int rc = tok__fail(err, errlen, TOK_EIO, "%s: cannot create: %s", w->f ? w->tmp[1] : w->tmp[0],
                           strerror(errno));
        tok_writer_abort(w);
        return rc;
    }
    unsigned char zero[TOK_HEADER] = {0};
    if (format == TOK_FORMAT_RADLADS && fwrite(zero, 1, TOK_HEADER, w->f) != TOK_HEADER) {
        tok_writer_abort(w);
        return tok__fail(err, errlen, TOK_EIO, "%s: write error", prefix);
    }
    *out = w;
    return TOK_OK;
}

int tok_writer_write(tok_writer *w, const uint32_t *ids, size_t n, char *err, size_t errlen)
{
    if (w->buf_cap < n * (size_t)w->width) {
        unsigned char *b = realloc(w->buf, n * (size_t)w->width);
        if (!b) return tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
        w->buf = b;
        w->buf_cap = n * (size_t)w->width;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= w->vocab_size)
            return tok__fail(err, errlen, TOK_EINVAL, "id %u is outside the vocabulary (%u)", ids[i],
                             w->vocab_size);
        if (w->width == 2)
            put_u16(w->buf + 2 * i, (uint16_t)ids[i]);
        else
            put_u32(w->buf + 4 * i, ids[i]);
    }
    if (n && fwrite(w->buf, (size_t)w->width, n, w->f) != n)
        return tok__fail(err, errlen, TOK_EIO, "%s: write error: %s", w->tmp[0], strerror(errno));
    w->n_tokens += n;
    return TOK_OK;
}

int tok_writer_end_doc(tok_writer *w, char *err, size_t errlen)
{
    uint64_t n = w->n_tokens - w->doc_start;
    if (w->format == TOK_FORMAT_BINIDX && n > INT32_MAX)
        return tok__fail(err, errlen, TOK_EINVAL,
                         "a document of %llu tokens does not fit binidx's int32 sizes; use --format "
                         "radlads",
                         (unsigned long long)n);
    if (w->n_docs + 1 >= w->cap_docs) {
        size_t cap = w->cap_docs ? 2 * w->cap_docs : 1024;
        uint64_t *v = realloc(w->offsets, cap * sizeof *v);
        if (!v) return tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
        w->offsets = v;
        w->cap_docs = cap;
    }
    w->offsets[w->n_docs++] = w->format == TOK_FORMAT_BINIDX ? n : w->doc_start;
    w->doc_start = w->n_tokens;
    return TOK_OK;
}

int tok_writer_add_doc(tok_writer *w, const uint32_t *ids, size_t n, char *err, size_t errlen)
{
    int rc = tok_writer_write(w, ids, n, err, errlen);
    return rc ? rc : tok_writer_end_doc(w, err, errlen);
}

static int write_all(FILE *f, const void *p, size_t n)
{
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

static int finish_radlads(tok_writer *w)
{
    unsigned char b[8];
    for (size_t i = 0; i <= w->n_docs; i++) {
        put_u64(b, i < w->n_docs ? w->offsets[i] : w->n_tokens);
        if (write_all(w->f, b, 8)) return -1;
    }
    unsigned char h[TOK_HEADER] = {0};
    memcpy(h, TOK_MAGIC, 8);
    put_u32(h + 8, 1);
    put_u32(h + 12, (uint32_t)w->width);
    put_u64(h + 16, w->n_tokens);
    put_u64(h + 24, w->n_docs);
    put_u32(h + 32, w->vocab_size);
    put_u32(h + 36, w->eos_id < 0 ? UINT32_MAX : (uint32_t)w->eos_id);
    put_u64(h + 40, w->fingerprint);
    return fseek(w->f, 0, SEEK_SET) || write_all(w->f, h, TOK_HEADER) ? -1 : 0;
}

static int finish_binidx(tok_writer *w)
{
    unsigned char b[9];
    if (write_all(w->idx, binidx_magic, 9)) return -1;
    put_u64(b, 1);
    b[8] = w->width == 2 ? 8 : 4; /* dtype code: 8 = uint16, 4 = int32 */
    if (write_all(w->idx, b, 9)) return -1;
    put_u64(b, w->n_docs);
    if (write_all(w->idx, b, 8)) return -1;
    put_u64(b, w->n_docs + 1);
    if (write_all(w->idx, b, 8)) return -1;
    for (size_t i = 0; i < w->n_docs; i++) {
        put_u32(b, (uint32_t)w->offsets[i]);
        if (write_all(w->idx, b, 4)) return -1;
    }
    uint64_t ptr = 0;
    for (size_t i = 0; i < w->n_docs; i++) {
        put_u64(b, ptr);
        ptr += w->offsets[i] * (uint64_t)w->width;
        if (write_all(w->idx, b, 8)) return -1;
    }
    for (size_t i = 0; i <= w->n_docs; i++) {
        put_u64(b, i);
        if (write_all(w->idx, b, 8)) return -1;
    }
    return 0;
}

int tok_writer_close(tok_writer *w, char *err, size_t errlen)
{
    int bad = w->format == TOK_FORMAT_BINIDX ? finish_binidx(w) : finish_radlads(w);
    FILE *fs[2] = {w->f, w->idx};
    for (int i = 0; i < 2; i++) {
        if (!fs[i]) continue;
        if (fflush(fs[i]) || fsync(fileno(fs[i]))) bad = -1;
        if (fclose(fs[i])) bad = -1;
    }
    w->f = w->idx = NULL;
    for (int i = 0; i < 2 && !bad; i++)
        if (w->tmp[i] && rename(w->tmp[i], w->path[i])) bad = -1;
    if (bad) {
        int rc = tok__fail(err, errlen, TOK_EIO, "%s: cannot finish the token file: %s", w->path[0],
                           strerror(errno));
        tok_writer_abort(w);
        return rc;
    }
    writer_free(w);
    return TOK_OK;
}

/* ---- reader ---------------------------------------------------------------------------------- */

struct tok_file {
    tok_format format;
    const unsigned char *map[2];
    size_t map_len[2];
    const unsigned char *tokens;
    int width;
    bool is_signed;
    uint64_t n_tokens, n_docs;
    uint32_t vocab_size;
    int64_t eos_id;
    uint64_t fingerprint;
    const unsigned char *offsets;            /* radlads: n_docs+1 u64 */
    const unsigned char *pointers, *doc_idx; /* binidx */
    uint64_t n_seq;
};

static int map_file(const char *path, const unsigned char **p, size_t *len, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) return tok__fail(err, errlen, TOK_EIO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return tok__fail(err, errlen, TOK_EIO, "%s: cannot stat", path);
    }
    *len = (size_t)st.st_size;
    *p = NULL;
    if (*len) {
        void *m = mmap(NULL, *len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return tok__fail(err, errlen, TOK_EIO, "%s: cannot map: %s", path, strerror(errno));
        }
        *p = m;
    }
    close(fd);
    return TOK_OK;
}

static int open_radlads(tok_file *f, const char *path, char *err, size_t errlen)
{
    int rc = map_file(path, &f->map[0], &f->map_len[0], err, errlen);
    if (rc) return rc;
    const unsigned char *h = f->map[0];
    size_t len = f->map_len[0];
    if (len < TOK_HEADER || memcmp(h, TOK_MAGIC, 8) != 0)
        return tok__fail(err, errlen, TOK_EINVAL, "%s: not a radlads token file (bad magic)", path);
    uint32_t version = (uint32_t)get_le(h + 8, 4), width = (uint32_t)get_le(h + 12, 4);
    if (version != 1)
        return tok__fail(err, errlen, TOK_EINVAL, "%s: token file version %u; this build reads version 1",
                         path, version);
    if (width != 2 && width != 4)
        return tok__fail(err, errlen, TOK_EINVAL, "%s: dtype %u is not 2 or 4 bytes", path, width);
    f->width = (int)width;
    f->n_tokens = get_le(h + 16, 8);
    f->n_docs = get_le(h + 24, 8);
    f->vocab_size = (uint32_t)get_le(h + 32, 4);
    uint32_t eos = (uint32_t)get_le(h + 36, 4);
    f->eos_id = eos == UINT32_MAX ? -1 : (int64_t)eos;
    f->fingerprint = get_le(h + 40, 8);
    /* Sizes are checked with divisions so that huge counts cannot overflow the sum. */
    uint64_t body = len - TOK_HEADER;
    if (f->n_tokens > body / width || f->n_docs >= (body - f->n_tokens * width) / 8 ||
        TOK_HEADER + f->n_tokens * width + (f->n_docs + 1) * 8 != len)
        return tok__fail(err, errlen, TOK_EINVAL,
                         "%s: size %zu does not match its header (%llu tokens, %llu documents); the "
                         "file is truncated or corrupt",
                         path, len, (unsigned long long)f->n_tokens, (unsigned long long)f->n_docs);
    f->tokens = h + TOK_HEADER;
    f->offsets = f->tokens + f->n_tokens * width;
    uint64_t prev = 0;
    for (uint64_t i = 0; i <= f->n_docs; i++) {
        uint64_t o = get_le(f->offsets + 8 * i, 8);
        if (o < prev || o > f->n_tokens || (i == 0 && o != 0) || (i == f->n_docs && o != f->n_tokens))
            return tok__fail(err, errlen, TOK_EINVAL, "%s: document offset %llu is out of order", path,
                             (unsigned long long)i);
        prev = o;
    }
    return TOK_OK;
}

static int open_binidx(tok_file *f, const char *prefix, char *err, size_t errlen)
{
    char *bin = cat(prefix, ".bin"), *idx = cat(prefix, ".idx");
    int rc = bin && idx ? TOK_OK : TOK_ENOMEM;
    if (!rc) rc = map_file(idx, &f->map[1], &f->map_len[1], err, errlen);
    if (!rc) rc = map_file(bin, &f->map[0], &f->map_len[0], err, errlen);
    const unsigned char *p = f->map[1];
    size_t len = f->map_len[1];
    static const int widths[9] = {0, 1, 1, 2, 4, 8, 0, 0, 2};
    if (!rc && (len < 34 || memcmp(p, binidx_magic, 9) != 0 || get_le(p + 9, 8) != 1))
        rc = tok__fail(err, errlen, TOK_EINVAL, "%s: not a version-1 MMIDIDX index", idx);
    if (!rc && (p[17] > 8 || widths[p[17]] == 0))
        rc = tok__fail(err, errlen, TOK_EINVAL, "%s: dtype code %u is not an integer type", idx, p[17]);
    if (!rc) {
        f->width = widths[p[17]];
        f->is_signed = p[17] == 2 || p[17] == 3 || p[17] == 4 || p[17] == 5;
        f->n_seq = get_le(p + 18, 8);
        uint64_t n_doc_idx = get_le(p + 26, 8), room = len - 34;
        if (f->n_seq > room / 12 || n_doc_idx == 0 || n_doc_idx > room / 8 ||
            34 + f->n_seq * 12 + n_doc_idx * 8 != len)
            rc = tok__fail(err, errlen, TOK_EINVAL, "%s: size does not match its counts", idx);
        if (!rc) {
            f->n_docs = n_doc_idx - 1;
            f->pointers = p + 34 + f->n_seq * 4;
            f->doc_idx = f->pointers + f->n_seq * 8;
        }
    }
    if (!rc) {
        uint64_t ptr = 0;
        for (uint64_t i = 0; i < f->n_seq && !rc; i++) {
            if (get_le(f->pointers + 8 * i, 8) != ptr)
                rc = tok__fail(err, errlen, TOK_EINVAL, "%s: pointer of sequence %llu is inconsistent", idx,
                               (unsigned long long)i);
            ptr += get_le(p + 34 + 4 * i, 4) * (uint64_t)f->width;
        }
        if (!rc && ptr != f->map_len[0])
            rc = tok__fail(err, errlen, TOK_EINVAL, "%s: holds %zu bytes but the index says %llu", bin,
                           f->map_len[0], (unsigned long long)ptr);
        uint64_t prev = 0;
        for (uint64_t i = 0; i <= f->n_docs && !rc; i++) {
            uint64_t d = get_le(f->doc_idx + 8 * i, 8);
            if (d < prev || d > f->n_seq)
                rc = tok__fail(err, errlen, TOK_EINVAL, "%s: doc_idx is not increasing", idx);
            prev = d;
        }
    }
    if (!rc) {
        f->tokens = f->map[0];
        f->n_tokens = f->map_len[0] / f->width;
    }
    free(bin);
    free(idx);
    return rc;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int tok_file_open(const char *path, tok_file **out, char *err, size_t errlen)
{
    *out = NULL;
    tok_file *f = calloc(1, sizeof *f);
    char *prefix = strdup(path);
    if (!f || !prefix) {
        free(f);
        free(prefix);
        return tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
    }
    int rc;
    if (ends_with(path, ".tok")) {
        f->format = TOK_FORMAT_RADLADS;
        rc = open_radlads(f, path, err, errlen);
    } else {
        if (ends_with(prefix, ".bin") || ends_with(prefix, ".idx")) prefix[strlen(prefix) - 4] = 0;
        char *idx = cat(prefix, ".idx"), *tok = cat(path, ".tok");
        if (idx && access(idx, F_OK) == 0) {
            f->format = TOK_FORMAT_BINIDX;
            f->eos_id = -1;
            rc = open_binidx(f, prefix, err, errlen);
        } else if (tok && access(tok, F_OK) == 0) {
            f->format = TOK_FORMAT_RADLADS;
            rc = open_radlads(f, tok, err, errlen);
        } else {
            rc = tok__fail(err, errlen, TOK_EIO, "%s: no token file here (looked for %s.tok and %s.idx/.bin)",
                           path, path, prefix);
        }
        free(idx);
        free(tok);
    }
    free(prefix);
    if (rc) {
        tok_file_close(f);
        return rc;
    }
    *out = f;
    return TOK_OK;
}

void tok_file_close(tok_file *f)
{
    if (!f) return;
    for (int i = 0; i < 2; i++)
        if (f->map[i]) munmap((void *)f->map[i], f->map_len[i]);
    free(f);
}

tok_format tok_file_format(const tok_file *f)
{
    return f->format;
}
uint64_t tok_file_n_tokens(const tok_file *f)
{
    return f->n_tokens;
}
uint64_t tok_file_n_docs(const tok_file *f)
{
    return f->n_docs;
}
uint32_t tok_file_vocab_size(const tok_file *f)
{
    return f->vocab_size;
}

int64_t tok_file_eos_id(const tok_file *f)
{
    return f->eos_id;
}

uint64_t tok_file_fingerprint(const tok_file *f)
{
    return f->fingerprint;
}

int tok_file_doc(const tok_file *f, uint64_t doc, uint64_t *begin, uint64_t *end)
{
    if (doc >= f->n_docs) return TOK_EINVAL;
    if (f->format == TOK_FORMAT_RADLADS) {
        *begin = get_le(f->offsets + 8 * doc, 8);
        *end = get_le(f->offsets + 8 * (doc + 1), 8);
        return TOK_OK;
    }
    uint64_t s0 = get_le(f->doc_idx + 8 * doc, 8), s1 = get_le(f->doc_idx + 8 * (doc + 1), 8);
    *begin = s0 < f->n_seq ? get_le(f->pointers + 8 * s0, 8) / f->width : f->n_tokens;
    *end = s1 < f->n_seq ? get_le(f->pointers + 8 * s1, 8) / f->width : f->n_tokens;
    return TOK_OK;
}

int tok_file_read(const tok_file *f, uint64_t start, size_t n, uint32_t *out, char *err, size_t errlen)
{
    if (start > f->n_tokens || n > f->n_tokens - start)
        return tok__fail(err, errlen, TOK_EINVAL, "tokens [%llu, %llu) are past the end (%llu)",
                         (unsigned long long)start, (unsigned long long)(start + n),
                         (unsigned long long)f->n_tokens);
    const unsigned char *p = f->tokens + start * f->width;
    for (size_t i = 0; i < n; i++, p += f->width) {
        uint64_t v = get_le(p, f->width);
        if (f->is_signed && (v >> (8 * f->width - 1)) & 1)
            return tok__fail(err, errlen, TOK_EINVAL, "token %llu is negative",
                             (unsigned long long)(start + i));
        if (v > UINT32_MAX)
            return tok__fail(err, errlen, TOK_EINVAL, "token %llu does not fit 32 bits",
                             (unsigned long long)(start + i));
        out[i] = (uint32_t)v;
    }
    return TOK_OK;
}
