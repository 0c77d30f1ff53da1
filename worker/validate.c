/* validate.c — held-out validation and the data checks the trainer makes before its first step (see
 * validate.h).  Validation windows are read with rl_sampler_read_at: window k covers stream tokens
 * [begin + k·T, begin + (k+1)·T); inputs are its T tokens, targets the next token inside the window
 * (the last one −1), so every window predicts T−1 tokens and the mean is over all of them. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "validate.h"

#define RL__VALID_WINDOWS_DEFAULT 256

struct rl__valid {
    rl_sampler *own;       /* the --valid files; NULL for a held-out fraction */
    const rl_sampler *src; /* where the windows are read: own, or the training sampler */
    uint64_t begin;        /* stream position of window 0 */
    int n_win;
    int64_t every;         /* optimizer steps between validations (0: only at the end) */
    int32_t *ids;          /* micro × T inputs, then micro × T targets */
    char *list;            /* a copy of valid_list, cut at the commas */
    const char *files[64];
};

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

/* A token file records the vocabulary it was tokenized with: a larger one than the model's cannot be
 * the model's tokenizer, even where the first samples happen to hold only small ids. */
static int check_vocab(const rl__trainer *t, const rl_sampler *s, const char *const *files, const char *what,
                       char *err, size_t errlen)
{
    int i = 0;
    const uint32_t v = rl_sampler_vocab_size(s, &i);
    const int V = t->m->cfg.vocab;
    if (v == 0 || v <= (uint32_t)V)
        return 0;
    const char *model = t->teacher ? "the teacher and the student have" : "the model has";
    return fail(err, errlen, RL_EINVAL, "%s %s was tokenized with a vocabulary of %u ids, but %s %d: tokenize the "
                "data with the model's own tokenizer (or make the model with --vocab %u)", what, files[i], v, model,
                V, v);
}

int rl__valid_open(rl__trainer *t, rl_sampler *train, rl__valid **out, char *err, size_t errlen)
{
    const rl_train_opts *o = t->o;
    const int T = o->seq_len;
    *out = NULL;
    int rc = check_vocab(t, train, o->data, "training data", err, errlen);
    if (rc)
        return rc;
    const int has_files = o->valid_list && o->valid_list[0];
    if (has_files && o->valid_fraction > 0)
        return fail(err, errlen, RL_EINVAL, "give --valid FILES or --valid-fraction, not both");
    if (o->valid_fraction < 0 || o->valid_fraction >= 1)
        return fail(err, errlen, RL_EINVAL, "--valid-fraction %g must be in [0, 1)", o->valid_fraction);
    if (!has_files && o->valid_fraction == 0)
        return 0;
    rl__valid *v = calloc(1, sizeof *v);
    if (!v || (has_files && !(v->list = strdup(o->valid_list)))) {
        free(v);
        return fail(err, errlen, RL_ENOMEM, "out of memory");
    }
    uint64_t n_tokens;
    if (has_files) {
        int n = 0;
        char *save = NULL;
        for (char *f = strtok_r(v->list, ",", &save); f && n < 64; f = strtok_r(NULL, ",", &save))
            v->files[n++] = f;
        if (rl_sampler_open(&v->own, v->files, n, T, err, errlen) != 0) {
            char e2[512];
            snprintf(e2, sizeof e2, "%s", err);
            rc = fail(err, errlen, RL_EINVAL, "--valid: %s", e2);
        }
        if (!rc)
            rc = check_vocab(t, v->own, v->files, "validation data", err, errlen);
        v->src = v->own;
        n_tokens = rc ? 0 : rl_sampler_stream_tokens(v->own);
    } else {
        const uint64_t all = rl_sampler_stream_tokens(train);
        n_tokens = (uint64_t)((double)all * o->valid_fraction);
        v->begin = all - n_tokens;
        v->src = train;
        if (rl_sampler_limit(train, v->begin, err, errlen) != 0)
            rc = RL_EINVAL;
    }
    if (!rc) {
        const uint64_t n_win = n_tokens / (uint64_t)T;
        const uint64_t cap = (uint64_t)(o->valid_windows > 0 ? o->valid_windows : RL__VALID_WINDOWS_DEFAULT);
        v->n_win = (int)(n_win < cap ? n_win : cap);
        if (v->n_win < 1)
            rc = fail(err, errlen, RL_EINVAL, "the validation data holds %llu tokens: not one window of seq_len %d; "
                      "use a larger --valid-fraction or more --valid data", (unsigned long long)n_tokens, T);
    }
    v->every = o->valid_every > 0 ? o->valid_every : o->checkpoint_every;
    v->ids = rc ? NULL : malloc(sizeof(int32_t) * (size_t)t->micro * T * 2);
    if (!rc && !v->ids)
        rc = fail(err, errlen, RL_ENOMEM, "out of memory");
    if (rc) {
        rl__valid_close(v);
        return rc;
    }
    *out = v;
    return 0;
}

int rl__valid_due(const rl__valid *v, int64_t step, int64_t total_steps)
{
    return v && (step == total_steps || (v->every > 0 && step % v->every == 0));
}

/* Mean next-token CE over the windows, micro of them per forward (a last short batch repeats window 0
 * with every target −1). */
static int valid_loss(rl__trainer *t, rl__valid *v, double *loss, char *err, size_t errlen)
{
    const int B = t->micro, T = t->o->seq_len, V = t->m->cfg.vocab;
    int32_t *ids = v->ids, *targets = v->ids + (size_t)B * T;
    double sum = 0;
    int rc = 0;
    for (int w0 = 0; w0 < v->n_win && !rc; w0 += B) {
        const int n = v->n_win - w0 < B ? v->n_win - w0 : B;
        for (int b = 0; b < B && !rc; b++) {
            int32_t *row = ids + (size_t)b * T;
            const uint64_t pos = v->begin + (uint64_t)(b < n ? w0 + b : 0) * T;
            if (rl_sampler_read_at(v->src, pos, (size_t)T, row, err, errlen) != 0) {
                rc = RL_EINVAL;
                break;
            }
            for (int i = 0; i < T; i++) {
                if (row[i] < 0 || row[i] >= V)
                    rc = fail(err, errlen, RL_EINVAL, "validation token id %d at %llu is outside the model's "
                              "vocabulary of %d", row[i], (unsigned long long)(pos + (uint64_t)i), V);
                targets[(size_t)b * T + i] = b < n && i + 1 < T ? row[i + 1] : -1;
            }
        }
        if (rc)
            break;
        double l = 0;
        rc = t->s ? rl_student_forward(t->s, ids, err, errlen) : rl_model_forward(t->m, ids, err, errlen);
        if (!rc)
            rc = rl_model_loss(t->m, targets, 0, &l, err, errlen);
        sum += l * n;
    }
    *loss = sum / v->n_win;
    return rc;
}

int rl__valid_report(rl__trainer *t, rl__valid *v, int64_t step, int64_t tokens, FILE *metrics, char *line,
                     size_t linelen, char *err, size_t errlen)
{
    double loss = 0;
    int rc = valid_loss(t, v, &loss, err, errlen);
    if (rc) {
        char e2[512];
        snprintf(e2, sizeof e2, "%s", err);
        return fail(err, errlen, rc, "validation after step %lld: %s", (long long)step, e2);
    }
    const char *stage = rl_train_stage_name(t->o->stage);
    const long long vtok = (long long)v->n_win * t->o->seq_len;
    if (metrics) {
        fprintf(metrics, "{\"stage\": \"%s\", \"step\": %lld, \"tokens\": %lld, \"valid_loss\": %.9g, "
                "\"valid_tokens\": %lld, \"valid_windows\": %d}\n", stage, (long long)step, (long long)tokens, loss,
                vtok, v->n_win);
        fflush(metrics);
    }
    snprintf(line, linelen, "%s step %lld valid-loss %.6f (%d windows of %d tokens)", stage, (long long)step, loss,
             v->n_win, t->o->seq_len);
    return 0;
}

void rl__valid_close(rl__valid *v)
{
    if (!v)
        return;
    rl_sampler_close(v->own);
    free(v->ids);
    free(v->list);
    free(v);
}
