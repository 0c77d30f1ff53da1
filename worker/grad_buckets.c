/* grad_buckets.c — the gradient all-reduce seam: fixed-size buckets over the trainable gradients.
 *
 * The trainable tensors sit in one or two gradient arenas (the model's, and the student's time-mix
 * arena), in arena order.  Neighbouring tensors that are adjacent in memory merge into one run, so a
 * stage where everything trains is one or two runs.  The runs, end to end, are cut into consecutive
 * buckets of bucket_floats (as DDP and ZeRO cut one flat gradient buffer): a bucket that lies inside one
 * run is reduced in place, with no copy; a bucket that holds pieces of several runs (the many small
 * time-mix tensors align trains, or the seam between two arenas) is packed into a staging buffer,
 * reduced, and unpacked.  The plan depends only on the model and the bucket size, so every rank (and every resumed
 * run) reduces exactly the same element groups in the same order.  A NCCL transport reuses the plan as
 * is: the staging buffer is backend memory and the packing uses rl_copy.  ZeRO-1 (zero.c) reduce-scatters
 * and all-gathers the same buckets. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer_int.h"

static int add_span(rl__grad_buckets *b, int *cap, void *ptr, void *param, size_t n, int bf16)
{
    if (b->n_spans == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        rl__span *ns = realloc(b->spans, sizeof *ns * (size_t)nc);
        if (!ns)
            return RL_ENOMEM;
        b->spans = ns, *cap = nc;
    }
    b->spans[b->n_spans++] = (rl__span){.ptr = ptr, .param = param, .n = n, .bf16 = bf16};
    return 0;
}

int rl__buckets_plan(rl__trainer *t, size_t bucket_floats, char *err, size_t errlen)
{
    rl__grad_buckets *b = &t->buckets;
    rl__buckets_free(t);
    b->bucket_floats = bucket_floats ? bucket_floats : RL_TRAIN_BUCKET_DEFAULT;
    const size_t B = b->bucket_floats;
    /* The trainable gradients as one stream of coalesced runs, cut into consecutive buckets of B floats
     * (the last one shorter): a run may straddle buckets, a bucket may hold pieces of several runs. */
    int cap = 0, rc = 0, bcap = 0;
    size_t fill = B; /* the current bucket is full: the next piece opens a new one */
    for (int i = 0; i < t->n_t && !rc;) {
        void *run = t->t[i].grad, *prun = t->t[i].param;
        const int bf = t->t[i].bf16;
        size_t run_n = 0; /* a run is adjacent in the gradients and in the parameters (ZeRO-1 gathers those) */
        while (i < t->n_t && t->t[i].bf16 == bf && t->t[i].grad == rl__at(run, bf, run_n) &&
               t->t[i].param == rl__at(prun, bf, run_n))
            run_n += t->t[i++].count;
        b->total += run_n;
        for (size_t off = 0; off < run_n && !rc;) {
            if (fill == B) {
                if (b->n_buckets == bcap) {
                    bcap = bcap ? 2 * bcap : 16;
                    rl__bucket *nb = realloc(b->buckets, sizeof *nb * (size_t)bcap);
                    if (!nb) {
                        rc = RL_ENOMEM;
                        break;
                    }
                    b->buckets = nb;
                }
                b->buckets[b->n_buckets++] = (rl__bucket){.first = b->n_spans};
                fill = 0;
            }
            size_t piece = run_n - off < B - fill ? run_n - off : B - fill;
            rc = add_span(b, &cap, rl__at(run, bf, off), rl__at(prun, bf, off), piece, bf);
            rl__bucket *cur = &b->buckets[b->n_buckets - 1];
            cur->count++, cur->floats += piece, cur->packed = cur->count > 1 || bf;
            off += piece, fill += piece;
        }
    }
    if (rc) {
        snprintf(err, errlen, "out of memory planning the gradient all-reduce buckets");
        return RL_ENOMEM;
    }
    size_t staging = 0;
    for (int k = 0; k < b->n_buckets; k++)
        if (b->buckets[k].packed) {
            b->n_packed++;
            if (b->buckets[k].floats > staging)
                staging = b->buckets[k].floats;
        }
    if (staging) {
        b->staging = rl_malloc(t->be, sizeof(float) * staging);
        if (!b->staging) {
            rl_backend_clear_error(t->be);
            snprintf(err, errlen, "out of memory for the all-reduce staging bucket (%zu floats)", staging);
            return RL_ENOMEM;
        }
    }
    return 0;
}

int rl__span_copy(rl__trainer *t, const rl__bucket *bk, size_t off, float *buf, size_t n, int to_spans, int param)
{
    const rl__span *s = &t->buckets.spans[bk->first];
    size_t pos = 0;
    int rc = 0;
    for (int i = 0; i < bk->count && n > 0 && !rc; pos += s[i].n, i++) {
        if (off >= pos + s[i].n)
            continue;
        size_t in = off - pos, len = s[i].n - in < n ? s[i].n - in : n;
        void *p = rl__at(param ? s[i].param : s[i].ptr, s[i].bf16, in);
        if (s[i].bf16)
            rc = to_spans ? rl_cast(t->be, p, RL_DTYPE_BF16, buf, RL_DTYPE_F32, len)
                          : rl_cast(t->be, buf, RL_DTYPE_F32, p, RL_DTYPE_BF16, len);
        else
            rc = to_spans ? rl_copy(t->be, p, buf, sizeof(float) * len) : rl_copy(t->be, buf, p, sizeof(float) * len);
        buf += len, off += len, n -= len;
    }
    return rc;
}

int rl__buckets_allreduce(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen)
{
    const rl__grad_buckets *b = &t->buckets;
    int rc = 0;
    for (int k = 0; k < b->n_buckets && !rc; k++) {
        const rl__bucket *bk = &b->buckets[k];
        if (!bk->packed) {
            rc = hooks->allreduce_sum(hooks->ctx, b->spans[bk->first].ptr, bk->floats, err, errlen);
            continue;
        }
        rc = rl__span_copy(t, bk, 0, b->staging, bk->floats, 0, 0);
        if (!rc)
            rc = hooks->allreduce_sum(hooks->ctx, b->staging, bk->floats, err, errlen);
        if (!rc)
            rc = rl__span_copy(t, bk, 0, b->staging, bk->floats, 1, 0);
        if (rc && !err[0])
            rl_backend_status(t->be, err, errlen);
    }
    return rc;
}

void rl__buckets_free(rl__trainer *t)
{
    rl__grad_buckets *b = &t->buckets;
    if (b->staging)
        rl_free(t->be, b->staging);
    if (b->ostaging)
        rl_free(t->be, b->ostaging);
    free(b->spans);
    free(b->buckets);
    free(b->order);
    memset(b, 0, sizeof *b);
}

/* ---- overlap with the backward ----
 * The backward tells when gradients are final (rl_model_grads_event: the head first, then the layers from
 * the last, the embedding at the end). A bucket can start once the last of its tensors is final; the
 * buckets start in one fixed order (ready event, then index), so every rank issues the same collectives in
 * the same order even when its own backward failed half-way (finish starts whatever is left). */

static int bucket_ready(const rl__trainer *t, const rl__bucket *bk)
{
    int ready = 0;
    for (int s = bk->first; s < bk->first + bk->count; s++) {
        const rl__span *sp = &t->buckets.spans[s];
        for (int i = 0; i < t->n_t; i++) {
            const rl__tensor *x = &t->t[i];
            const char *g0 = (const char *)x->grad, *g1 = rl__at(x->grad, x->bf16, x->count);
            if (g0 < (const char *)rl__at(sp->ptr, sp->bf16, sp->n) && g1 > (const char *)sp->ptr) {
                int e = rl_model_grads_event(x->name, t->m->cfg.layers);
                ready = e > ready ? e : ready;
            }
        }
    }
    return ready;
}

int rl__buckets_overlap_plan(rl__trainer *t, char *err, size_t errlen)
{
    rl__grad_buckets *b = &t->buckets;
    b->order = malloc(sizeof *b->order * (size_t)(b->n_buckets ? b->n_buckets : 1));
    if (!b->order) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    size_t packed = 0;
    for (int k = 0; k < b->n_buckets; k++) {
        rl__bucket *bk = &b->buckets[k];
        bk->ready = bucket_ready(t, bk);
        bk->stage_off = packed;
        if (bk->packed)
            packed += bk->floats;
        /* insertion into the start order: by ready event, ties by index */
        int at = k;
        while (at > 0 && b->buckets[b->order[at - 1]].ready > bk->ready) {
            b->order[at] = b->order[at - 1];
            at--;
        }
        b->order[at] = k;
    }
    if (packed && !(b->ostaging = rl_malloc(t->be, sizeof(float) * packed))) {
        rl_backend_clear_error(t->be);
        snprintf(err, errlen, "out of memory for the overlapped all-reduce staging (%zu floats)", packed);
        return RL_ENOMEM;
    }
    return 0;
}

void rl__buckets_begin(rl__trainer *t) { t->buckets.next = t->buckets.early = 0; }

/* Starts the next bucket in the start order. bk->req stays −1 unless a collective went out (finish waits only for
 * those). A bucket whose packing failed is all-reduced all the same (whatever the staging holds; the step fails
 * anyway): the peers issue it, and every later bucket of this rank must still pair with theirs. */
static int start_next(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen)
{
    rl__grad_buckets *b = &t->buckets;
    rl__bucket *bk = &b->buckets[b->order[b->next++]];
    bk->req = -1;
    if (!bk->packed)
        return hooks->allreduce_start(hooks->ctx, b->spans[bk->first].ptr, bk->floats, &bk->req, err, errlen);
    int rc = rl__span_copy(t, bk, 0, b->ostaging + bk->stage_off, bk->floats, 0, 0);
    if (rc)
        rl_backend_status(t->be, err, errlen);
    else if (t->fail_pack) {
        rc = RL_EINVAL;
        snprintf(err, errlen, "RADLADS_TEST_POISON: packing gradient bucket %d for its all-reduce fails at step %lld "
                 "on rank %d", b->order[b->next - 1], (long long)t->step, t->o->rank);
    }
    char e2[256];
    int r2 = hooks->allreduce_start(hooks->ctx, b->ostaging + bk->stage_off, bk->floats, &bk->req, rc ? e2 : err,
                                    rc ? sizeof e2 : errlen);
    return rc ? rc : r2;
}

/* Starts every bucket whose gradients are final at `event`; after a failure the rest all the same (the first
 * error is the one reported): every rank issues every bucket, in the same order. */
int rl__buckets_event(rl__trainer *t, const rl_train_hooks *hooks, int event, char *err, size_t errlen)
{
    rl__grad_buckets *b = &t->buckets;
    int rc = 0;
    while (b->next < b->n_buckets && b->buckets[b->order[b->next]].ready <= event) {
        char e2[256];
        int r2 = start_next(t, hooks, rc ? e2 : err, rc ? sizeof e2 : errlen);
        rc = rc ? rc : r2;
        b->early += event < b->buckets[b->order[b->n_buckets - 1]].ready; /* before the last gradients */
    }
    return rc;
}

int rl__buckets_finish(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen)
{
    rl__grad_buckets *b = &t->buckets;
    int rc = rl__buckets_event(t, hooks, INT_MAX, err, errlen); /* whatever has not started yet */
    for (int j = 0; j < b->next; j++) { /* every collective that went out is waited for, even after an error */
        rl__bucket *bk = &b->buckets[b->order[j]];
        if (bk->req < 0)
            continue; /* its start failed, and said why */
        char e2[256];
        int r2 = hooks->allreduce_wait(hooks->ctx, bk->req, e2, sizeof e2);
        if (r2 && !rc)
            rc = r2, snprintf(err, errlen, "%s", e2);
        if (bk->packed && !rc)
            rc = rl__span_copy(t, bk, 0, b->ostaging + bk->stage_off, bk->floats, 1, 0);
    }
    if (rc && !err[0])
        rl_backend_status(t->be, err, errlen);
    return rc;
}
