/* Corpus tokenization (`radlads tokenize`): read plain text or JSON lines, optionally zstd, in
 * units of about UNIT_BYTES; encode a batch of units on N threads; write the results in input
 * order. The units are cut at the same places whatever N is, so the output is identical for every
 * thread count. */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zstd.h>

#include "tok_int.h"

#define UNIT_BYTES (256u * 1024) /* small enough that a 1 MB document is spread over threads */
#define READ_BYTES (256u * 1024)

/* ---- safe cuts ------------------------------------------------------------------------------ */

/* Rule 1 (the Qwen2 and Llama 3 patterns): a cut after '\n' and before an ASCII letter. The piece
 * holding that '\n' always ends there: every alternative that can take a newline either stops at
 * a letter (\s*[\r\n]+, [\r\n]*, \s+) or cannot start with a newline ([^\r\n\p{L}\p{N}]?\p{L}+).
 * NFC cannot cross it either: an ASCII letter is a starter that composes with nothing before it.
 * Rule 2 (GPT-2's pattern) also needs a non-space ASCII character before the '\n': there
 * \s+(?!\S) would otherwise take a different share of a whitespace run at the end of a chunk. */
void tok__set_cut_rule(tok_tokenizer *t)
{
    t->cut_rule = 0;
    bool all_known = true, gpt2 = false;
    for (int i = 0; i < t->n_steps; i++) {
        const tok__step *st = &t->steps[i];
        if (st->kind == TOK__STEP_SPLIT && (!st->known || st->removed)) all_known = false;
        if (st->kind == TOK__STEP_BYTELEVEL && st->add_prefix_space) return;
        if (st->kind == TOK__STEP_BYTELEVEL && st->re) gpt2 = true;
    }
    /* An added token with a newline, or one that strips the whitespace before it, could reach
     * across the cut. */
    for (uint32_t i = 0; i < t->n_added; i++)
        if (t->added[i].lstrip || memchr(t->pool + t->added[i].content.off, '\n', t->added[i].content.len))
            return;
    if (gpt2 && t->n_steps == 1)
        t->cut_rule = 2;
    else if (!gpt2 && all_known)
        t->cut_rule = 1;
}

static bool ascii_letter(unsigned char c)
{
    return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
}

size_t tok__safe_cut(const tok_tokenizer *t, const char *text, size_t len)
{
    if (t->cut_rule == 0) return 0;
    for (size_t p = len; p >= 2; p--) {
        if (text[p - 1] != '\n' || (p < len && !ascii_letter((unsigned char)text[p])) || p == len) continue;
        unsigned char before = (unsigned char)text[p - 2];
        if (t->cut_rule == 2 && (before >= 0x80 || before <= ' ')) continue;
        return p;
    }
    return 0;
}

/* ---- input ------------------------------------------------------------------------------------ */

typedef struct {
    const char *path;
    FILE *f;
    ZSTD_DCtx *z;
    unsigned char *zin;
    ZSTD_inBuffer zb;
    size_t zret; /* last ZSTD_decompressStream result: 0 at a frame end */
    bool eof;
    uint64_t consumed; /* file bytes read, for the progress bar */
} input;

static int input_open(input *in, const char *path, char *err, size_t errlen)
{
    memset(in, 0, sizeof *in);
    in->path = path;
    in->f = fopen(path, "rb");
    if (!in->f) return tok__fail(err, errlen, TOK_EIO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[4];
    size_t n = fread(magic, 1, 4, in->f);
    rewind(in->f);
    /* zstd is recognised by its frame magic, whatever the file is called. */
    if (n == 4 && magic[0] == 0x28 && magic[1] == 0xB5 && magic[2] == 0x2F && magic[3] == 0xFD) {
        in->z = ZSTD_createDCtx();
        in->zin = malloc(ZSTD_DStreamInSize());
        if (!in->z || !in->zin) return tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
        in->zb = (ZSTD_inBuffer){in->zin, 0, 0};
    }
    return TOK_OK;
}

static void input_close(input *in)
{
    if (in->f) fclose(in->f);
    ZSTD_freeDCtx(in->z);
    free(in->zin);
    memset(in, 0, sizeof *in);
}

/* Reads up to cap bytes of (decompressed) data; 0 at the end. */
static long input_read(input *in, char *dst, size_t cap, char *err, size_t errlen)
{
    if (!in->z) {
        size_t n = fread(dst, 1, cap, in->f);
        if (n == 0 && ferror(in->f))
            return tok__fail(err, errlen, TOK_EIO, "%s: read error: %s", in->path, strerror(errno));
        in->consumed += n;
        return (long)n;
    }
    ZSTD_outBuffer ob = {dst, cap, 0};
    while (ob.pos == 0) {
        if (in->zb.pos == in->zb.size) {
            size_t n = fread(in->zin, 1, ZSTD_DStreamInSize(), in->f);
            if (n == 0) {
                if (ferror(in->f))
                    return tok__fail(err, errlen, TOK_EIO, "%s: read error: %s", in->path, strerror(errno));
                if (in->zret != 0)
                    return tok__fail(err, errlen, TOK_EIO, "%s: the zstd stream is truncated", in->path);
                return 0;
            }
            in->consumed += n;
            in->zb = (ZSTD_inBuffer){in->zin, n, 0};
        }
        in->zret = ZSTD_decompressStream(in->z, &ob, &in->zb);
        if (ZSTD_isError(in->zret))
            return tok__fail(err, errlen, TOK_EIO, "%s: zstd: %s", in->path, ZSTD_getErrorName(in->zret));
    }
    return (long)ob.pos;
}

/* ---- units and workers ------------------------------------------------------------------------ */

typedef struct {
    tok_bytes text;
    bool jsonl, ends_doc;
    const char *path;
    uint64_t first_line;
    tok_ids ids;
    size_t *doc_end; /* ids.n after each finished document */
    size_t n_docs, cap_docs;
    tok_bytes fixed;
    uint64_t replaced;
    int rc;
    char err[512];
} unit;

typedef struct {
    const tok_tokenizer *t;
    const tok_corpus_opts *o;
    unit *units;
    size_t n_units;
    atomic_size_t next;
    tok_state **states;
} batch;

static int doc_done(unit *u)
{
    if (u->n_docs == u->cap_docs) {
        size_t cap = u->cap_docs ? 2 * u->cap_docs : 64;
        size_t *v = realloc(u->doc_end, cap * sizeof *v);
        if (!v) return TOK_ENOMEM;
        u->doc_end = v;
        u->cap_docs = cap;
    }
    u->doc_end[u->n_docs++] = u->ids.n;
    return TOK_OK;
}

static int encode_doc(unit *u, tok_state *s, const tok_corpus_opts *o, const char *text, size_t len,
                      bool ends)
{
    if (tok_utf8_valid_prefix(text, len) != len) {
        u->fixed.n = 0;
        long r = tok_utf8_repair(text, len, &u->fixed);
        if (r < 0) return tok__fail(u->err, sizeof u->err, TOK_ENOMEM, "out of memory");
        u->replaced += (uint64_t)r;
        text = u->fixed.v;
        len = u->fixed.n;
    }
    int rc = tok_encode(s, text, len, o->encode_flags, &u->ids, u->err, sizeof u->err);
    if (rc || !ends) return rc;
    if (o->eos_id >= 0) {
        if (tok_ids_reserve(&u->ids, 1)) return TOK_ENOMEM;
        u->ids.v[u->ids.n++] = (uint32_t)o->eos_id;
    }
    return doc_done(u) ? tok__fail(u->err, sizeof u->err, TOK_ENOMEM, "out of memory") : TOK_OK;
}

static int encode_jsonl(unit *u, tok_state *s, const tok_corpus_opts *o)
{
    const char *field = o->text_field ? o->text_field : "text";
    char *p = u->text.v, *end = u->text.v + u->text.n;
    for (uint64_t line = u->first_line; p < end; line++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        size_t k = 0;
        while (k < len && (p[k] == ' ' || p[k] == '\t' || p[k] == '\r'))
            k++;
        if (k < len) { /* blank lines are not documents */
            json_error_t je;
            json_t *doc = json_loadb(p, len, JSON_ALLOW_NUL, &je);
            json_t *v = json_object_get(doc, field);
            int rc;
            if (!doc)
                rc = tok__fail(u->err, sizeof u->err, TOK_EINVAL, "%s:%llu: not valid JSON (%s)", u->path,
                               (unsigned long long)line, je.text);
            else if (!json_is_string(v))
                rc = tok__fail(u->err, sizeof u->err, TOK_EINVAL,
                               "%s:%llu: no string field \"%s\"; name the text field with --text-field",
                               u->path, (unsigned long long)line, field);
            else
                rc = encode_doc(u, s, o, json_string_value(v), json_string_length(v), true);
            json_decref(doc);
            if (rc) return rc;
        }
        p += len + (nl ? 1 : 0);
    }
    return TOK_OK;
}

typedef struct {
    batch *b;
    tok_state *s; /* this thread's own: states are never shared between threads */
} worker_arg;

static void *worker(void *arg)
{
    worker_arg *w = arg;
    batch *b = w->b;
    for (size_t i = atomic_fetch_add(&b->next, 1); i < b->n_units; i = atomic_fetch_add(&b->next, 1)) {
        unit *u = &b->units[i];
        u->ids.n = 0;
        u->n_docs = 0;
        u->replaced = 0;
        u->rc = u->jsonl ? encode_jsonl(u, w->s, b->o)
                         : encode_doc(u, w->s, b->o, u->text.v ? u->text.v : "", u->text.n, u->ends_doc);
    }
    return NULL;
}

/* Encodes the batch on o->threads threads (the caller's thread is one of them). Units are claimed
 * in any order, but each result stays in its unit, so the output order is the input order. */
static void run_batch(batch *b)
{
    int n = b->o->threads;
    if ((size_t)n > b->n_units) n = (int)b->n_units;
    atomic_store(&b->next, 0);
    pthread_t tid[256];
    worker_arg args[256];
    int started = 0;
    for (int i = 0; i < n && i < 256; i++)
        args[i] = (worker_arg){b, b->states[i]};
    for (int i = 1; i < n && i < 256; i++)
        if (pthread_create(&tid[started], NULL, worker, &args[i]) == 0) started++;
    worker(&args[0]);
    for (int i = 0; i < started; i++)
        pthread_join(tid[i], NULL);
}

/* ---- driver ----------------------------------------------------------------------------------- */

typedef struct {
    const tok_corpus_opts *o;
    tok_writer *w;
    tok_corpus_stats *st;
    uint64_t total_bytes, done_bytes;
    struct timespec t0;
} run_ctx;

static double since(struct timespec t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec);
}

static void progress(run_ctx *c)
{
    if (!c->o->progress) return;
    double f = c->total_bytes ? (double)c->done_bytes / (double)c->total_bytes : 1.0;
    if (f > 1) f = 1;
    char bar[31];
    int full = (int)(f * 30);
    for (int i = 0; i < 30; i++)
        bar[i] = i < full ? '#' : '.';
    bar[30] = 0;
    double s = since(c->t0);
    fprintf(stderr, "\r[%s] %3.0f%%  %llu docs  %llu tokens  %.1f MB/s ", bar, 100 * f,
            (unsigned long long)c->st->docs, (unsigned long long)c->st->tokens,
            s > 0 ? (double)c->st->bytes / 1e6 / s : 0.0);
}

static int flush_batch(run_ctx *c, batch *b, char *err, size_t errlen)
{
    run_batch(b);
    for (size_t i = 0; i < b->n_units; i++) {
        unit *u = &b->units[i];
        if (u->rc) return tok__fail(err, errlen, u->rc, "%s", u->err);
        size_t from = 0;
        for (size_t d = 0; d <= u->n_docs; d++) {
            size_t to = d < u->n_docs ? u->doc_end[d] : u->ids.n;
            int rc = to > from ? tok_writer_write(c->w, u->ids.v + from, to - from, err, errlen) : 0;
            if (!rc && d < u->n_docs) rc = tok_writer_end_doc(c->w, err, errlen);
            if (rc) return rc;
            from = to;
        }
        c->st->docs += u->n_docs;
        c->st->tokens += u->ids.n;
        c->st->bytes += u->text.n;
        c->st->replaced_utf8 += u->replaced;
    }
    b->n_units = 0;
    progress(c);
    return TOK_OK;
}

static bool is_jsonl(const tok_corpus_opts *o, const char *path)
{
    if (o->input_kind != TOK_INPUT_AUTO) return o->input_kind == TOK_INPUT_JSONL;
    const char *base = strrchr(path, '/');
    return strstr(base ? base : path, ".json") != NULL;
}

/* Appends up to READ_BYTES more bytes of the input to carry; sets *eof at the end. */
static int read_more(input *in, tok_bytes *carry, bool *eof, char *err, size_t errlen)
{
    if (carry->cap - carry->n < READ_BYTES + 1) {
        size_t cap = carry->cap ? carry->cap : READ_BYTES + 1;
        while (cap - carry->n < READ_BYTES + 1)
            cap *= 2;
        char *v = realloc(carry->v, cap);
        if (!v) return tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
        carry->v = v;
        carry->cap = cap;
    }
    long n = input_read(in, carry->v + carry->n, READ_BYTES, err, errlen);
    if (n < 0) return (int)n;
    if (n == 0) *eof = true;
    carry->n += (size_t)n;
    return TOK_OK;
}

/* Reads one input file into units, flushing batches as they fill. A plain-text file is one
 * document, cut into units at tok__safe_cut positions; JSON lines are cut at line ends. */
static int read_input(run_ctx *c, batch *b, size_t max_units, const char *path, tok_bytes *carry, char *err,
                      size_t errlen)
{
    input in;
    int rc = input_open(&in, path, err, errlen);
    bool jsonl = is_jsonl(c->o, path), eof = false, emitted = false;
    uint64_t line = 1, consumed_before = 0;
    carry->n = 0;
    while (!rc) {
        while (!rc && !eof && carry->n < UNIT_BYTES)
            rc = read_more(&in, carry, &eof, err, errlen);
        if (rc) break;
        size_t cut = carry->n;
        if (!eof) {
            if (jsonl) {
                char *nl = memrchr(carry->v, '\n', carry->n);
                cut = nl ? (size_t)(nl - carry->v) + 1 : 0;
            } else {
                cut = tok__safe_cut(b->t, carry->v, carry->n);
            }
            if (cut == 0) { /* nowhere to cut yet: a long line, or a document that cannot be cut */
                rc = read_more(&in, carry, &eof, err, errlen);
                continue;
            }
        }
        if (cut > 0 || (!jsonl && !emitted)) {
            unit *u = &b->units[b->n_units++];
            u->text.n = 0;
            if (tok_bytes_append(&u->text, carry->v, cut))
                return tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
            u->jsonl = jsonl;
            u->ends_doc = eof && cut == carry->n;
            u->path = path;
            u->first_line = line;
            for (size_t i = 0; jsonl && i < cut; i++)
                line += carry->v[i] == '\n';
            memmove(carry->v, carry->v + cut, carry->n - cut);
            carry->n -= cut;
            emitted = true;
            c->done_bytes += in.consumed - consumed_before;
            consumed_before = in.consumed;
            if (b->n_units == max_units) rc = flush_batch(c, b, err, errlen);
        }
        if (eof && carry->n == 0) break;
    }
    input_close(&in);
    return rc;
}

int tok_corpus_run(const tok_tokenizer *t, const tok_corpus_opts *o, tok_corpus_stats *st, char *err,
                   size_t errlen)
{
    memset(st, 0, sizeof *st);
    if (o->threads < 1 || o->threads > 256)
        return tok__fail(err, errlen, TOK_EINVAL, "--threads %d: use 1..256", o->threads);
    run_ctx c = {.o = o, .st = st};
    clock_gettime(CLOCK_MONOTONIC, &c.t0);
    for (size_t i = 0; i < o->n_inputs; i++) {
        struct stat sb;
        if (stat(o->inputs[i], &sb) != 0)
            return tok__fail(err, errlen, TOK_EIO, "%s: %s", o->inputs[i], strerror(errno));
        c.total_bytes += (uint64_t)sb.st_size;
    }
    size_t max_units = 4 * (size_t)o->threads;
    batch b = {.t = t, .o = o};
    b.units = calloc(max_units, sizeof *b.units);
    b.states = calloc((size_t)o->threads, sizeof *b.states);
    tok_bytes carry = {0};
    int rc = b.units && b.states ? TOK_OK : tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
    for (int i = 0; !rc && i < o->threads; i++)
        if (!(b.states[i] = tok_state_new(t))) rc = tok__fail(err, errlen, TOK_ENOMEM, "out of memory");
    if (!rc)
        rc = tok_writer_open(o->out_prefix, o->format, tok_vocab_size(t), o->eos_id, tok_fingerprint(t), &c.w,
                             err, errlen);
    for (size_t i = 0; !rc && i < o->n_inputs; i++)
        rc = read_input(&c, &b, max_units, o->inputs[i], &carry, err, errlen);
    if (!rc && b.n_units) rc = flush_batch(&c, &b, err, errlen);
    if (c.w) {
        if (rc)
            tok_writer_abort(c.w);
        else
            rc = tok_writer_close(c.w, err, errlen);
    }
    if (o->progress) fputc('\n', stderr);
    st->seconds = since(c.t0);
    for (size_t i = 0; b.units && i < max_units; i++) {
        tok_bytes_free(&b.units[i].text);
        tok_bytes_free(&b.units[i].fixed);
        tok_ids_free(&b.units[i].ids);
        free(b.units[i].doc_end);
    }
    for (int i = 0; b.states && i < o->threads; i++)
        tok_state_free(b.states[i]);
    free(b.units);
    free(b.states);
    tok_bytes_free(&carry);
    return rc;
}
