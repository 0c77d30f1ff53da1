/* zero.c — ZeRO-1: the AdamW moments sharded over the ranks.
 *
 * The trainable floats, tensor after tensor in t[] order, form one flat space of N floats (the space the
 * gradient buckets cut).  Rank r owns the contiguous shard [⌊N·r/W⌋, ⌊N·(r+1)/W⌋) of W ranks: balanced to
 * one float, a function of N and W only.  One optimizer step:
 *   reduce-scatter  each bucket is a contiguous flat range, so it holds the ranks' pieces end to end in
 *                   rank order; every rank receives the sum over ranks of its own piece (in its gradient
 *                   arena: the rest of its gradients stay local partial sums, never read);
 *   clip norm       ‖g‖² = Σ over ranks of each shard's Σg², added in rank order on every rank;
 *   update          AdamW on the owned pieces only, with this rank's m and v (end−begin floats each);
 *   all-gather      each bucket's parameters, every rank contributing its piece.
 * A sum of two floats is the same in either order, so on two ranks the reduce-scatter gives the bits the
 * all-reduce gives and the weights match the unsharded run exactly; on more ranks the summation order of
 * the two collectives may differ (fp32 rounding only).  The clip norm differs from the unsharded one in
 * the last bits of a double (other partial sums), which the float clip factor almost never sees.
 *
 * The collectives are hooks (trainer.h) taking per-rank counts, so the same plan serves MPI (here) and a
 * NCCL transport (grouped reduce/broadcast per owner) with the staging buffers in device memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer_int.h"

static size_t overlap(size_t a0, size_t a1, size_t b0, size_t b1)
{
    size_t lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
    return hi > lo ? hi - lo : 0;
}

int rl__zero_shard(rl__trainer *t, size_t total, char *err, size_t errlen)
{
    rl__zero *z = &t->zero;
    const int world = t->o->world > 1 ? t->o->world : 1;
    z->on = t->o->zero && world > 1;
    z->bounds = calloc((size_t)world + 1, sizeof *z->bounds);
    z->scratch = calloc((size_t)world, sizeof *z->scratch);
    if (!z->bounds || !z->scratch) {
        snprintf(err, errlen, "out of memory planning the optimizer shards");
        return RL_ENOMEM;
    }
    for (int r = 0; r <= world; r++) /* N·r/W without overflow for any N < 2^64/W */
        z->bounds[r] = z->on ? total / world * r + total % world * r / world : (r ? total : 0);
    z->begin = z->on ? z->bounds[t->o->rank] : 0;
    z->end = z->on ? z->bounds[t->o->rank + 1] : total;
    return 0;
}

int rl__zero_plan(rl__trainer *t, char *err, size_t errlen)
{
    rl__zero *z = &t->zero;
    const rl__grad_buckets *b = &t->buckets;
    const int world = t->o->world;
    if (!z->on)
        return 0;
    z->counts = calloc((size_t)b->n_buckets * world, sizeof *z->counts);
    if (!z->counts) {
        snprintf(err, errlen, "out of memory planning the reduce-scatter");
        return RL_ENOMEM;
    }
    size_t at = 0, mine = 1;
    for (int k = 0; k < b->n_buckets; at += b->buckets[k].floats, k++)
        for (int r = 0; r < world; r++) {
            size_t n = overlap(at, at + b->buckets[k].floats, z->bounds[r], z->bounds[r + 1]);
            z->counts[(size_t)k * world + r] = n;
            if (r == t->o->rank && n > mine)
                mine = n;
        }
    z->recv = rl_malloc(t->be, sizeof(float) * mine);
    if (!z->recv) {
        rl_backend_clear_error(t->be);
        snprintf(err, errlen, "out of memory for the reduce-scatter buffer (%zu floats)", mine);
        return RL_ENOMEM;
    }
    return 0;
}

/* This rank's piece of bucket k: its bucket offset, and its count (the return value). */
static size_t my_piece(const rl__trainer *t, int k, size_t *at)
{
    const size_t *c = t->zero.counts + (size_t)k * t->o->world;
    *at = 0;
    for (int r = 0; r < t->o->rank; r++)
        *at += c[r];
    return c[t->o->rank];
}

int rl__zero_reduce_scatter(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen)
{
    const rl__grad_buckets *b = &t->buckets;
    int rc = 0;
    for (int k = 0; k < b->n_buckets && !rc; k++) {
        const rl__bucket *bk = &b->buckets[k];
        const float *send = b->spans[bk->first].ptr;
        if (bk->packed) {
            rc = rl__span_copy(t, bk, 0, b->staging, bk->floats, 0, 0);
            send = b->staging;
        }
        size_t at, mine = my_piece(t, k, &at);
        if (!rc)
            rc = hooks->reduce_scatter_sum(hooks->ctx, send, t->zero.recv, t->zero.counts + (size_t)k * t->o->world,
                                           err, errlen);
        if (!rc)
            rc = rl__span_copy(t, bk, at, t->zero.recv, mine, 1, 0);
        if (rc && !err[0])
            rl_backend_status(t->be, err, errlen);
    }
    return rc;
}

int rl__zero_allgather(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen)
{
    const rl__grad_buckets *b = &t->buckets;
    int rc = 0;
    for (int k = 0; k < b->n_buckets && !rc; k++) {
        const rl__bucket *bk = &b->buckets[k];
        const size_t *c = t->zero.counts + (size_t)k * t->o->world;
        if (!bk->packed) {
            rc = hooks->allgather(hooks->ctx, b->spans[bk->first].param, c, err, errlen);
            continue;
        }
        size_t at, mine = my_piece(t, k, &at);
        rc = rl__span_copy(t, bk, at, b->staging + at, mine, 0, 1);
        if (!rc)
            rc = hooks->allgather(hooks->ctx, b->staging, c, err, errlen);
        if (!rc)
            rc = rl__span_copy(t, bk, 0, b->staging, bk->floats, 1, 1);
        if (rc && !err[0])
            rl_backend_status(t->be, err, errlen);
    }
    return rc;
}

double *rl__grad_sq(rl__trainer *t, int owned, char *err, size_t errlen)
{
    double *sq = calloc((size_t)t->n_t + 1, sizeof *sq);
    const void **x = calloc((size_t)t->n_t + 1, sizeof *x);
    size_t *n = calloc((size_t)t->n_t + 1, sizeof *n);
    rl_dtype *dt = calloc((size_t)t->n_t + 1, sizeof *dt);
    int rc = sq && x && n && dt ? 0 : RL_ENOMEM;
    for (int i = 0; i < t->n_t && !rc; i++) {
        size_t first = 0;
        n[i] = owned ? rl__owned(t, &t->t[i], &first) : t->t[i].count;
        x[i] = rl__at(t->t[i].grad, t->t[i].bf16, first);
        dt[i] = t->t[i].bf16 ? RL_DTYPE_BF16 : RL_DTYPE_F32;
    }
    if (!rc && (rc = rl_sum_squares_many(t->be, sq, x, dt, n, t->n_t)) != 0)
        rl_backend_status(t->be, err, errlen);
    else if (rc)
        snprintf(err, errlen, "out of memory");
    free(x), free(n), free(dt);
    if (rc) {
        free(sq);
        return NULL;
    }
    return sq;
}

int rl__zero_norm_sq(rl__trainer *t, const rl_train_hooks *hooks, double *ss, char *err, size_t errlen)
{
    const int world = t->o->world;
    double mine = 0, *sq = rl__grad_sq(t, 1, err, errlen);
    if (!sq)
        return RL_EINVAL;
    for (int i = 0; i < t->n_t; i++)
        mine += sq[i];
    free(sq);
    /* Each rank's double travels as three floats through the all-gather: its mantissa m ∈ [0.5, 1) as
     * hi + lo (48 bits) and its binary exponent (exact), so every rank adds the same W numbers in the same
     * order.  A non-finite sum travels as itself. */
    float *v = calloc((size_t)world * 3, sizeof *v);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    int e = 0;
    double m = isfinite(mine) ? frexp(mine, &e) : mine;
    float *p = v + 3 * t->o->rank;
    p[0] = (float)m, p[1] = isfinite(m) ? (float)(m - (double)p[0]) : 0.0f, p[2] = (float)e;
    for (int r = 0; r < world; r++)
        t->zero.scratch[r] = 3;
    int rc = hooks->allgather(hooks->ctx, v, t->zero.scratch, err, errlen);
    *ss = 0;
    for (int r = 0; r < world && !rc; r++)
        *ss += ldexp((double)v[3 * r] + (double)v[3 * r + 1], (int)v[3 * r + 2]);
    free(v);
    return rc;
}

int rl__zero_first_nonfinite(rl__trainer *t, const rl_train_hooks *hooks, int *index, char *err, size_t errlen)
{
    float *bad = calloc((size_t)t->n_t + 1, sizeof *bad);
    double *sq = bad ? rl__grad_sq(t, 1, err, errlen) : NULL;
    if (!sq) {
        free(bad);
        if (!err[0])
            snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    for (int i = 0; i < t->n_t; i++)
        bad[i] = isfinite(sq[i]) ? 0.0f : 1.0f;
    free(sq);
    int rc = hooks->allreduce_sum(hooks->ctx, bad, (size_t)t->n_t, err, errlen);
    *index = -1;
    for (int i = 0; i < t->n_t && !rc && *index < 0; i++)
        if (bad[i] > 0)
            *index = i;
    free(bad);
    return rc;
}

int rl__zero_gather_tensor(rl__trainer *t, const rl_train_hooks *hooks, const float *moments, const rl__tensor *x,
                           float *send, float *h, char *err, size_t errlen)
{
    const rl__zero *z = &t->zero;
    for (int r = 0; r < t->o->world; r++)
        z->scratch[r] = overlap(x->moment_offset, x->moment_offset + x->count, z->bounds[r], z->bounds[r + 1]);
    size_t first, n = rl__owned(t, x, &first);
    int rc = n ? rl_download(t->be, send, moments + x->moment_offset + first - z->begin, sizeof(float) * n) : 0;
    char e2[256] = "";
    if (rc) /* the gather still runs (with whatever send holds), so that every rank makes the same collectives */
        rl_backend_status(t->be, err, errlen);
    int r2 = hooks->gather(hooks->ctx, send, h, z->scratch, rc ? e2 : err, rc ? sizeof e2 : errlen);
    return rc ? rc : r2;
}

void rl__zero_free(rl__trainer *t)
{
    rl__zero *z = &t->zero;
    if (z->recv)
        rl_free(t->be, z->recv);
    free(z->bounds);
    free(z->counts);
    free(z->scratch);
    memset(z, 0, sizeof *z);
}
