/* backend.c — the public rl_* entry points: argument checks shared by every
 * backend, then dispatch through the op table. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels_int.h"

int rl__fail(rl_backend *be, int code, const char *fmt, ...)
{
    if (be->status == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(be->errmsg, sizeof be->errmsg, fmt, ap);
        va_end(ap);
        be->status = code;
    }
    return code;
}

size_t rl_dtype_size(rl_dtype dt)
{
    switch (dt) {
    case RL_DTYPE_F32: return 4;
    case RL_DTYPE_BF16: return 2;
    case RL_DTYPE_F16: return 2;
    }
    return 0;
}

const char *rl_dtype_name(rl_dtype dt)
{
    switch (dt) {
    case RL_DTYPE_F32: return "F32";
    case RL_DTYPE_BF16: return "BF16";
    case RL_DTYPE_F16: return "F16";
    }
    return "?";
}

int rl_backend_create(rl_backend **out, const rl_backend_options *opt, char *err, size_t errlen)
{
    *out = NULL;
    rl_backend_options dflt = {0};
    if (!opt)
        opt = &dflt;
    if (opt->kind != RL_BACKEND_CPU && opt->kind != RL_BACKEND_CUDA) {
        snprintf(err, errlen, "backend: unknown backend kind %d", (int)opt->kind);
        return RL_EINVAL;
    }
#ifndef RL_HAVE_CUDA
    if (opt->kind == RL_BACKEND_CUDA) {
        snprintf(err, errlen, "backend: CUDA is not built into this binary (configure with -Dcuda=enabled on a "
                 "machine with nvcc); use the CPU backend");
        return RL_ENOTSUP;
    }
#endif
    if (opt->num_threads < 0) {
        snprintf(err, errlen, "backend: num_threads=%d must be >= 0 (0 = OMP_NUM_THREADS or all cores)",
                 opt->num_threads);
        return RL_EINVAL;
    }
    rl_backend *be = calloc(1, sizeof *be);
    if (!be) {
        snprintf(err, errlen, "backend: out of memory");
        return RL_ENOMEM;
    }
    be->tags[be->n_tags++].tag = "other"; /* tag 0: allocations made with no tag set */
    int rc;
#ifdef RL_HAVE_CUDA
    if (opt->kind == RL_BACKEND_CUDA)
        rc = rl__cuda_init(be, opt, err, errlen);
    else
#endif
        rc = rl__cpu_init(be, opt, err, errlen);
    if (rc < 0) {
        free(be);
        return rc;
    }
    *out = be;
    return 0;
}

void rl_backend_destroy(rl_backend *be)
{
    if (!be)
        return;
    for (int i = 0; i < be->n_weights; i++)
        rl_free(be, be->weights[i].copy);
    rl_free(be, be->cast_scratch[0]);
    rl_free(be, be->cast_scratch[1]);
    be->ops->destroy(be);
    free(be->slots);
    free(be);
}

const char *rl_backend_name(const rl_backend *be) { return be->name; }
int rl_backend_num_threads(const rl_backend *be) { return be->num_threads; }

void *rl_backend_stream(rl_backend *be)
{
#ifdef RL_HAVE_CUDA
    return rl__cuda_stream_ptr(be);
#else
    (void)be;
    return NULL;
#endif
}

int rl_backend_device(const rl_backend *be)
{
#ifdef RL_HAVE_CUDA
    return rl__cuda_device(be);
#else
    (void)be;
    return -1;
#endif
}

int rl_backend_status(rl_backend *be, char *err, size_t errlen)
{
    be->ops->sync(be);
    if (be->status && err && errlen)
        snprintf(err, errlen, "%s", be->errmsg);
    return be->status;
}

void rl_backend_clear_error(rl_backend *be)
{
    be->status = 0;
    be->errmsg[0] = 0;
}

/* ---- profiling ---- */

void rl_backend_profile(rl_backend *be, int enable)
{
    if (enable && !be->profile)
        be->n_stats = 0;
    be->profile = enable;
}

void rl_backend_profile_pause(rl_backend *be, int pause)
{
    be->profile_paused = pause;
}

int rl_backend_op_stats(const rl_backend *be, rl_op_stat *out, int max)
{
    int n = be->n_stats < max ? be->n_stats : max;
    memcpy(out, be->stats, sizeof *out * (size_t)n);
    return n;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Adds one timed call to the entry for (op, shape); shapes beyond the table are
 * folded into the last entry rather than dropped. */
static void prof_add(rl_backend *be, const char *op, const rl_gemm *g, double seconds)
{
    rl_op_stat key = {.op = op};
    if (g) {
        key.M = g->M, key.N = g->N, key.K = g->K, key.trans_a = g->trans_a, key.trans_b = g->trans_b;
        key.batch = g->batch > 0 ? g->batch : 1;
        key.flops = 2.0 * g->M * g->N * (double)g->K * key.batch;
    }
    int i;
    for (i = 0; i < be->n_stats; i++) {
        rl_op_stat *s = &be->stats[i];
        if (s->op == op && s->M == key.M && s->N == key.N && s->K == key.K && s->trans_a == key.trans_a &&
            s->trans_b == key.trans_b && s->batch == key.batch)
            break;
    }
    if (i == be->n_stats) {
        if (be->n_stats == (int)(sizeof be->stats / sizeof be->stats[0]))
            i = be->n_stats - 1;
        else
            be->stats[be->n_stats++] = key, be->stats[i].flops = 0;
    }
    be->stats[i].calls++;
    be->stats[i].seconds += seconds;
    be->stats[i].flops += key.flops;
}

#define TIMED(name, gemm, call)                                                                              \
    do {                                                                                                     \
        if (!be->profile || be->profile_paused)                                                              \
            return call;                                                                                     \
        be->ops->sync(be); /* a device backend: earlier queued work is not this op's time */                \
        double t0_ = now_seconds();                                                                          \
        int rc_ = call;                                                                                      \
        be->ops->sync(be);                                                                                   \
        prof_add(be, name, gemm, now_seconds() - t0_);                                                       \
        return rc_;                                                                                          \
    } while (0)

/* ---- memory ---- */

/* ---- allocation accounting: pointer -> size in an open-addressing table (linear probing, tombstone-free
 * deletion by re-inserting the rest of the cluster), grown at half load. */
static size_t slot_of(const rl_backend *be, const void *p)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 17) & (be->n_slots - 1);
}

static void track_insert(rl_backend *be, void *p, size_t bytes, int tag)
{
    size_t i = slot_of(be, p);
    while (be->slots[i].p)
        i = (i + 1) & (be->n_slots - 1);
    be->slots[i].p = p, be->slots[i].bytes = bytes, be->slots[i].tag = tag;
}

const char *rl_backend_mem_tag(rl_backend *be, const char *tag)
{
    const char *prev = be->cur_tag ? be->tags[be->cur_tag].tag : NULL;
    int t = 0;
    for (int i = 1; tag && i < be->n_tags && !t; i++)
        if (!strcmp(be->tags[i].tag, tag))
            t = i;
    if (tag && !t && be->n_tags < (int)(sizeof be->tags / sizeof be->tags[0]))
        be->tags[t = be->n_tags++] = (rl_mem_role){.tag = tag};
    be->cur_tag = t; /* (more than 15 distinct tags: the rest count as "other") */
    return prev;
}

int rl_backend_mem_roles(const rl_backend *be, rl_mem_role *out, int max)
{
    int n = 0;
    for (int i = 0; i < be->n_tags && n < max; i++)
        out[n++] = be->tags[i];
    return n;
}

static int track_add(rl_backend *be, void *p, size_t bytes)
{
    if (2 * (be->n_live + 1) > be->n_slots) {
        size_t old_n = be->n_slots, n = old_n ? 2 * old_n : 256;
        struct rl__alloc_slot *old = be->slots, *fresh = calloc(n, sizeof *fresh);
        if (!fresh)
            return RL_ENOMEM;
        be->slots = fresh, be->n_slots = n;
        for (size_t i = 0; i < old_n; i++)
            if (old[i].p)
                track_insert(be, old[i].p, old[i].bytes, old[i].tag);
        free(old);
    }
    track_insert(be, p, bytes, be->cur_tag);
    be->n_live++;
    be->live_bytes += bytes;
    if (be->live_bytes > be->peak_bytes)
        be->peak_bytes = be->live_bytes;
    rl_mem_role *r = &be->tags[be->cur_tag];
    r->live += bytes;
    if (r->live > r->peak)
        r->peak = r->live;
    return 0;
}

int rl__mem_track(rl_backend *be, void *p, size_t bytes, const char *tag)
{
    const char *prev = rl_backend_mem_tag(be, tag);
    const int rc = track_add(be, p, bytes);
    rl_backend_mem_tag(be, prev);
    return rc;
}

/* The size of the live allocation at p (0: not one of ours). */
static size_t tracked_bytes(const rl_backend *be, const void *p)
{
    if (!be->n_slots)
        return 0;
    size_t i = slot_of(be, p);
    while (be->slots[i].p && be->slots[i].p != p)
        i = (i + 1) & (be->n_slots - 1);
    return be->slots[i].p ? be->slots[i].bytes : 0;
}

static void track_remove(rl_backend *be, const void *p)
{
    if (!be->n_slots)
        return;
    size_t i = slot_of(be, p);
    while (be->slots[i].p && be->slots[i].p != p)
        i = (i + 1) & (be->n_slots - 1);
    if (!be->slots[i].p)
        return; /* not ours: freed twice or never allocated here; the backend's free reports it */
    be->live_bytes -= be->slots[i].bytes;
    be->tags[be->slots[i].tag].live -= be->slots[i].bytes;
    be->n_live--;
    be->slots[i].p = NULL;
    /* re-seat the rest of the cluster so that lookups never stop at the hole */
    for (size_t j = (i + 1) & (be->n_slots - 1); be->slots[j].p; j = (j + 1) & (be->n_slots - 1)) {
        struct rl__alloc_slot s = be->slots[j];
        be->slots[j].p = NULL;
        track_insert(be, s.p, s.bytes, s.tag);
    }
}

void rl__mem_untrack(rl_backend *be, const void *p)
{
    track_remove(be, p);
}

void *rl_malloc(rl_backend *be, size_t bytes)
{
    void *p = be->ops->malloc(be, bytes);
    if (p && track_add(be, p, bytes)) {
        be->ops->free(be, p);
        rl__fail(be, RL_ENOMEM, "rl_malloc: out of host memory for the allocation table");
        return NULL;
    }
    return p;
}

void rl_free(rl_backend *be, void *p)
{
    if (!p)
        return;
    for (int i = 0; i < be->n_weights; i++)
        if (be->weights[i].base == p) { /* registered weights: forget them with their copy */
            void *copy = be->weights[i].copy;
            be->weights[i] = be->weights[--be->n_weights];
            rl_free(be, copy);
            break;
        }
    const char *lo = p, *hi = lo + tracked_bytes(be, p); /* bf16 gradient ranges inside the freed memory */
    for (int i = 0; i < be->n_grads16;)
        if ((const void *)be->grads16[i].base == p ||
            ((const char *)be->grads16[i].base >= lo && (const char *)be->grads16[i].base < hi))
            be->grads16[i] = be->grads16[--be->n_grads16];
        else
            i++;
    track_remove(be, p);
    be->ops->free(be, p);
}

void rl_backend_memory(const rl_backend *be, size_t *live_bytes, size_t *peak_bytes)
{
    if (live_bytes)
        *live_bytes = be->live_bytes;
    if (peak_bytes)
        *peak_bytes = be->peak_bytes;
}

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond))                                                                                         \
            return rl__fail(be, RL_EINVAL, __VA_ARGS__);                                                     \
    } while (0)

int rl_upload(rl_backend *be, void *dst, const void *src, size_t bytes)
{
    CHECK(bytes == 0 || (dst && src), "rl_upload: NULL pointer for %zu bytes", bytes);
    return be->ops->upload(be, dst, src, bytes);
}
int rl_download(rl_backend *be, void *dst, const void *src, size_t bytes)
{
    CHECK(bytes == 0 || (dst && src), "rl_download: NULL pointer for %zu bytes", bytes);
    return be->ops->download(be, dst, src, bytes);
}
int rl_copy(rl_backend *be, void *dst, const void *src, size_t bytes)
{
    CHECK(bytes == 0 || (dst && src), "rl_copy: NULL pointer for %zu bytes", bytes);
    return be->ops->copy(be, dst, src, bytes);
}
int rl_zero(rl_backend *be, void *dst, size_t bytes)
{
    CHECK(bytes == 0 || dst, "rl_zero: NULL pointer for %zu bytes", bytes);
    if (!bytes) /* (an empty arena: its base may be NULL) */
        return 0;
    TIMED("zero", NULL, be->ops->zero(be, dst, bytes));
}
int rl_cast(rl_backend *be, void *dst, rl_dtype dt, const void *src, rl_dtype st, size_t n)
{
    CHECK(rl_dtype_size(dt) && rl_dtype_size(st), "rl_cast: unknown dtype %d -> %d", (int)st, (int)dt);
    CHECK(n == 0 || (dst && src), "rl_cast: NULL pointer");
    return be->ops->cast(be, dst, dt, src, st, n);
}

/* ---- elementwise ---- */

int rl_add(rl_backend *be, float *out, const float *a, const float *b, size_t n)
{
    TIMED("add", NULL, be->ops->add(be, out, a, b, n));
}
int rl_accumulate(rl_backend *be, float *y, const float *x, size_t n) { TIMED("accumulate", NULL, be->ops->accumulate(be, y, x, n)); }
int rl_scale(rl_backend *be, float *x, float s, size_t n) { TIMED("scale", NULL, be->ops->scale(be, x, s, n)); }
int rl_sum(rl_backend *be, double *out, const float *x, size_t n) { return be->ops->sum(be, out, x, n, 0); }
int rl_sum_squares(rl_backend *be, double *out, const float *x, size_t n)
{
    return be->ops->sum(be, out, x, n, 1);
}
int rl_sum_squares_many(rl_backend *be, double *out, const void *const *x, const rl_dtype *dt, const size_t *n,
                        int count)
{
    CHECK(count >= 0 && (count == 0 || (out && x && n)), "rl_sum_squares_many: count=%d with NULL arrays", count);
    for (int i = 0; dt && i < count; i++)
        CHECK(dt[i] == RL_DTYPE_F32 || dt[i] == RL_DTYPE_BF16, "rl_sum_squares_many: range %d is %s (F32 or BF16)",
              i, rl_dtype_name(dt[i]));
    return be->ops->sum_many(be, out, x, dt, n, count, 1);
}

/* ---- matmul ---- */

/* ---- mixed precision ---- */

int rl_backend_set_autocast(rl_backend *be, rl_dtype dt)
{
    CHECK(dt == RL_DTYPE_F32 || dt == RL_DTYPE_BF16, "rl_backend_set_autocast: %s is not supported (BF16, or F32 "
          "for off)", rl_dtype_name(dt));
    CHECK(dt == RL_DTYPE_F32 || be->gemm_bf16, "rl_backend_set_autocast: the %s backend has no BF16 matmul",
          be->name);
    be->autocast = dt;
    return 0;
}

rl_dtype rl_backend_autocast(const rl_backend *be) { return be->autocast; }

/* Whether bytes [p, p + bytes) share a byte with a bf16 gradient range (rl_backend_grads_bf16). */
static int touches_grads16(const rl_backend *be, const void *p, size_t bytes)
{
    const char *lo = p, *hi = lo + bytes;
    for (int i = 0; i < be->n_grads16; i++) {
        const char *glo = (const char *)be->grads16[i].base, *ghi = glo + be->grads16[i].n * sizeof(uint16_t);
        if (lo < ghi && hi > glo)
            return 1;
    }
    return 0;
}

/* The bf16 gradient range p points into (rl_backend_grads_bf16), or NULL. */
static const struct rl__grads16 *in_grads16(const rl_backend *be, const void *p)
{
    for (int i = 0; i < be->n_grads16; i++)
        if ((const uint16_t *)p >= be->grads16[i].base && (const uint16_t *)p < be->grads16[i].base + be->grads16[i].n)
            return &be->grads16[i];
    return NULL;
}

int rl_backend_weights(rl_backend *be, const float *base, size_t n)
{
    CHECK(base && n, "rl_backend_weights: empty range");
    const char *lo = (const char *)base, *hi = lo + n * sizeof(float);
    for (int i = 0; i < be->n_weights; i++) { /* in bytes: a native range counts bf16 elements */
        const struct rl__weights *w = &be->weights[i];
        const char *wlo = (const char *)w->base, *whi = wlo + w->n * (w->native ? sizeof(uint16_t) : sizeof(float));
        CHECK(hi <= wlo || lo >= whi, "rl_backend_weights: the range overlaps one registered before");
    }
    CHECK(!touches_grads16(be, base, n * sizeof(float)), "rl_backend_weights: the range overlaps bf16 gradients "
          "(rl_backend_grads_bf16)");
    CHECK(be->n_weights < (int)(sizeof be->weights / sizeof be->weights[0]),
          "rl_backend_weights: at most %d ranges", (int)(sizeof be->weights / sizeof be->weights[0]));
    be->weights[be->n_weights++] = (struct rl__weights){.base = base, .n = n, .stale = 1};
    return 0;
}

int rl_backend_weights_bf16(rl_backend *be, const uint16_t *bf16, size_t n)
{
    int rc = rl_backend_weights(be, (const float *)(const void *)bf16, (n + 1) / 2); /* (checks overlap, room) */
    if (rc)
        return rc;
    struct rl__weights *w = &be->weights[be->n_weights - 1];
    w->n = n, w->native = 1, w->stale = 0, w->copy = NULL;
    return 0;
}

int rl_backend_grads_bf16(rl_backend *be, const uint16_t *bf16, size_t n)
{
    CHECK(bf16 && n, "rl_backend_grads_bf16: empty range");
    CHECK(!touches_grads16(be, bf16, n * sizeof *bf16), "rl_backend_grads_bf16: the range overlaps one registered "
          "before");
    for (int i = 0; i < be->n_weights; i++) { /* nor any weights (in bytes, as rl_backend_weights compares) */
        const struct rl__weights *w = &be->weights[i];
        const char *wlo = (const char *)w->base, *whi = wlo + w->n * (w->native ? sizeof(uint16_t) : sizeof(float));
        CHECK((const char *)(bf16 + n) <= wlo || (const char *)bf16 >= whi,
              "rl_backend_grads_bf16: the range overlaps registered weights");
    }
    CHECK(be->n_grads16 < (int)(sizeof be->grads16 / sizeof be->grads16[0]), "rl_backend_grads_bf16: at most %d "
          "ranges", (int)(sizeof be->grads16 / sizeof be->grads16[0]));
    be->grads16[be->n_grads16++] = (struct rl__grads16){.base = bf16, .n = n};
    return 0;
}

void rl_backend_weights_changed(rl_backend *be, const float *base)
{
    for (int i = 0; i < be->n_weights; i++)
        if (!base || be->weights[i].base == base)
            be->weights[i].stale = 1;
}

/* rl_malloc under the backend's own tag */
static void *malloc_tagged(rl_backend *be, size_t bytes, const char *tag)
{
    const char *prev = rl_backend_mem_tag(be, tag);
    void *p = rl_malloc(be, bytes);
    rl_backend_mem_tag(be, prev);
    return p;
}

static void *grow_scratch(rl_backend *be, int slot, size_t bytes)
{
    if (be->cast_scratch_bytes[slot] < bytes) {
        rl_free(be, be->cast_scratch[slot]);
        be->cast_scratch_bytes[slot] = 0;
        be->cast_scratch[slot] = malloc_tagged(be, bytes, "GEMM cast scratch");
        if (!be->cast_scratch[slot])
            return NULL;
        be->cast_scratch_bytes[slot] = bytes;
    }
    return be->cast_scratch[slot];
}

/* Whether p points into native (bf16-only) range w. */
static int in_native(const struct rl__weights *w, const void *p)
{
    const uint16_t *b16 = (const uint16_t *)(const void *)w->base, *q = p;
    return q >= b16 && q < b16 + w->n;
}

/* The autocast form of an F32 operand of n elements: its weights' bf16 data, or a cast into scratch `slot`. */
static int autocast_operand(rl_backend *be, int slot, const float *p, size_t n, const void **out)
{
    for (int i = 0; i < be->n_weights; i++) {
        struct rl__weights *w = &be->weights[i];
        if (w->native) { /* bf16 data addressed as float*: compare as bf16 elements */
            const uint16_t *b16 = (const uint16_t *)(const void *)w->base, *q = (const uint16_t *)(const void *)p;
            if (!in_native(w, p))
                continue;
            if (q + n > b16 + w->n)
                return rl__fail(be, RL_EINVAL, "rl_matmul: an operand runs past the end of its bf16-only weights");
            *out = q;
            return 0;
        }
        if (p < w->base || p + n > w->base + w->n)
            continue;
        if (!w->copy && !(w->copy = malloc_tagged(be, sizeof(uint16_t) * w->n, "bf16 GEMM copies")))
            return be->status;
        if (w->stale) {
            int rc = be->ops->cast(be, w->copy, RL_DTYPE_BF16, w->base, RL_DTYPE_F32, w->n);
            if (rc)
                return rc;
            w->stale = 0;
        }
        *out = (const uint16_t *)w->copy + (size_t)(p - w->base);
        return 0;
    }
    void *dst = grow_scratch(be, slot, sizeof(uint16_t) * n);
    if (!dst)
        return be->status;
    *out = dst;
    return be->ops->cast(be, dst, RL_DTYPE_BF16, p, RL_DTYPE_F32, n);
}

static int matmul_autocast(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b,
                           const float *bias)
{
    const void *la = NULL, *lb = NULL;
    int rc = autocast_operand(be, 0, a, rl__gemm_extent_a(g), &la);
    if (!rc)
        rc = autocast_operand(be, 1, b, rl__gemm_extent_b(g), &lb);
    if (rc)
        return rc;
    rl_gemm lg = *g;
    lg.dtype_a = lg.dtype_b = RL_DTYPE_BF16;
    const struct rl__grads16 *gr = in_grads16(be, c);
    if (gr) { /* a bf16 gradient: accumulated in fp32, stored rounded */
        const size_t extent = (size_t)(g->batch > 1 ? g->batch - 1 : 0) * (size_t)g->stride_c + (size_t)g->M * g->N;
        if ((const uint16_t *)c + extent > gr->base + gr->n)
            return rl__fail(be, RL_EINVAL, "rl_matmul: the output runs past the end of its bf16 gradient range");
        if (bias)
            return rl__fail(be, RL_EINVAL, "rl_matmul: a bf16 gradient output takes no bias");
        lg.dtype_c = RL_DTYPE_BF16;
    }
    return be->ops->matmul(be, &lg, c, la, lb, bias);
}

int rl_matmul(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b, const float *bias)
{
    CHECK(g->M > 0 && g->N > 0 && g->K > 0, "rl_matmul: M=%d N=%d K=%d must all be positive", g->M, g->N, g->K);
    CHECK(g->batch >= 0, "rl_matmul: batch=%d is negative", g->batch);
    CHECK(a && b && c, "rl_matmul: NULL operand");
    if (be->n_grads16) { /* bf16 gradients are no operand, and an output reaches them only from their inside */
        CHECK(!in_grads16(be, a) && !in_grads16(be, b), "rl_matmul: an operand is a bf16 gradient "
              "(rl_backend_grads_bf16), which only a matmul's output may be");
        const size_t nc = (size_t)(g->batch > 1 ? g->batch - 1 : 0) * (size_t)g->stride_c + (size_t)g->M * g->N;
        CHECK(in_grads16(be, c) || !touches_grads16(be, c, nc * rl_dtype_size(g->dtype_c)),
              "rl_matmul: the output runs into bf16 gradients (rl_backend_grads_bf16) from outside them");
    }
    if (be->autocast == RL_DTYPE_BF16 && g->dtype_a == RL_DTYPE_F32 && g->dtype_b == RL_DTYPE_F32 &&
        g->dtype_c == RL_DTYPE_F32)
        TIMED("matmul", g, matmul_autocast(be, g, c, a, b, bias));
    for (int i = 0; i < be->n_weights; i++) /* bf16-only weights are read as they are by autocast alone */
        CHECK(!be->weights[i].native || (!in_native(&be->weights[i], a) && !in_native(&be->weights[i], b)),
              "rl_matmul: an operand is a bf16-only weight (rl_backend_weights_bf16), which only an F32 matmul "
              "under BF16 autocast may read; turn autocast on (rl_backend_set_autocast)");
    CHECK(!in_grads16(be, c), "rl_matmul: the output is a bf16 gradient (rl_backend_grads_bf16), which only an F32 "
          "matmul under BF16 autocast may write; turn autocast on (rl_backend_set_autocast)");
    TIMED("matmul", g, be->ops->matmul(be, g, c, a, b, bias));
}
int rl_bias_backward(rl_backend *be, float *dbias, const float *dout, int rows, int cols)
{
    CHECK(rows > 0 && cols > 0, "rl_bias_backward: rows=%d cols=%d", rows, cols);
    TIMED("bias_backward", NULL, be->ops->bias_backward(be, dbias, dout, rows, cols));
}

/* ---- layers ---- */

int rl_embedding_forward(rl_backend *be, float *out, const int32_t *ids, const float *table, int rows, int vocab,
                         int dim)
{
    CHECK(rows > 0 && vocab > 0 && dim > 0, "rl_embedding_forward: rows=%d vocab=%d dim=%d", rows, vocab, dim);
    TIMED("embedding_forward", NULL, be->ops->embedding_forward(be, out, ids, table, rows, vocab, dim));
}
int rl_embedding_backward(rl_backend *be, float *dtable, const float *dout, const int32_t *ids, int rows,
                          int vocab, int dim)
{
    CHECK(rows > 0 && vocab > 0 && dim > 0, "rl_embedding_backward: rows=%d vocab=%d dim=%d", rows, vocab, dim);
    TIMED("embedding_backward", NULL, be->ops->embedding_backward(be, dtable, dout, ids, rows, vocab, dim));
}
int rl_rmsnorm_forward(rl_backend *be, float *out, float *rstd, const float *in, const float *w, int rows, int dim,
                       float eps)
{
    CHECK(rows > 0 && dim > 0, "rl_rmsnorm_forward: rows=%d dim=%d", rows, dim);
    CHECK(eps > 0, "rl_rmsnorm_forward: eps=%g must be > 0", (double)eps);
    TIMED("rmsnorm_forward", NULL, be->ops->rmsnorm_forward(be, out, rstd, in, w, rows, dim, eps));
}
int rl_rmsnorm_backward(rl_backend *be, float *din, float *dw, const float *dout, const float *in, const float *w,
                        const float *rstd, int rows, int dim)
{
    CHECK(rows > 0 && dim > 0, "rl_rmsnorm_backward: rows=%d dim=%d", rows, dim);
    TIMED("rmsnorm_backward", NULL, be->ops->rmsnorm_backward(be, din, dw, dout, in, w, rstd, rows, dim));
}
static int rope_check(rl_backend *be, int batch, int seq, int heads, int head_dim)
{
    CHECK(batch > 0 && seq > 0 && heads > 0, "rl_rope: batch=%d seq=%d heads=%d", batch, seq, heads);
    CHECK(head_dim > 0 && head_dim % 2 == 0, "rl_rope: head_dim=%d must be even and positive", head_dim);
    return 0;
}
int rl_rope_forward(rl_backend *be, float *x, const float *c, const float *s, int batch, int seq, int heads,
                    int head_dim)
{
    int rc = rope_check(be, batch, seq, heads, head_dim);
    if (rc)
        return rc;
    TIMED("rope", NULL, be->ops->rope(be, x, c, s, batch, seq, heads, head_dim, 0));
}
int rl_rope_backward(rl_backend *be, float *dx, const float *c, const float *s, int batch, int seq, int heads,
                     int head_dim)
{
    int rc = rope_check(be, batch, seq, heads, head_dim);
    if (rc)
        return rc;
    TIMED("rope_backward", NULL, be->ops->rope(be, dx, c, s, batch, seq, heads, head_dim, 1));
}
int rl_swiglu_forward(rl_backend *be, float *out, const float *gate, const float *up, size_t n)
{
    TIMED("swiglu_forward", NULL, be->ops->swiglu_forward(be, out, gate, up, n));
}
int rl_swiglu_backward(rl_backend *be, float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, size_t n)
{
    TIMED("swiglu_backward", NULL, be->ops->swiglu_backward(be, dgate, dup, dout, gate, up, n));
}
static int attn_check(rl_backend *be, const rl_attn_dims *d)
{
    CHECK(d->batch > 0 && d->seq > 0 && d->head_dim > 0, "rl_attention: batch=%d seq=%d head_dim=%d", d->batch,
          d->seq, d->head_dim);
    CHECK(d->heads > 0 && d->kv_heads > 0 && d->heads % d->kv_heads == 0,
          "rl_attention: kv_heads=%d must divide heads=%d", d->kv_heads, d->heads);
    CHECK(d->q_pos >= 0 && (d->kv_seq == 0 ? d->q_pos == 0 : d->kv_seq >= d->q_pos + d->seq),
          "rl_attention: a KV cache of %d rows cannot hold queries at positions %d..%d", d->kv_seq, d->q_pos,
          d->q_pos + d->seq - 1);
    return 0;
}
int rl_attention_forward(rl_backend *be, const rl_attn_dims *d, float *out, float *lse, const float *q,
                         const float *k, const float *v)
{
    int rc = attn_check(be, d);
    if (rc)
        return rc;
    TIMED("attention_forward", NULL, be->ops->attention_forward(be, d, out, lse, q, k, v));
}
int rl_attention_backward(rl_backend *be, const rl_attn_dims *d, float *dq, float *dk, float *dv, float *delta,
                          const float *dout, const float *out, const float *lse, const float *q, const float *k,
                          const float *v)
{
    int rc = attn_check(be, d);
    if (rc)
        return rc;
    CHECK(d->kv_seq == 0, "rl_attention_backward: a KV cache (kv_seq=%d) is for inference only", d->kv_seq);
    CHECK(!d->bf16, "rl_attention_backward: bf16 attention (rl_attn_dims.bf16) is forward only; clear it for a "
                    "model that trains");
    TIMED("attention_backward", NULL, be->ops->attention_backward(be, d, dq, dk, dv, delta, dout, out, lse, q, k, v));
}

/* ---- losses ---- */

int rl_cross_entropy(rl_backend *be, float *losses, float *dlogits, const float *logits, const int32_t *targets,
                     int rows, int vocab, float grad_scale)
{
    CHECK(rows > 0 && vocab > 0, "rl_cross_entropy: rows=%d vocab=%d", rows, vocab);
    TIMED("cross_entropy", NULL, be->ops->cross_entropy(be, losses, dlogits, logits, targets, rows, vocab, grad_scale));
}
int rl_kl_divergence(rl_backend *be, float *losses, float *dlogits, const float *s, const float *t, int rows,
                     int vocab, float grad_scale)
{
    CHECK(rows > 0 && vocab > 0, "rl_kl_divergence: rows=%d vocab=%d", rows, vocab);
    TIMED("kl_divergence", NULL, be->ops->kl_divergence(be, losses, dlogits, s, t, rows, vocab, grad_scale));
}
int rl_l2_distance_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim)
{
    CHECK(rows > 0 && dim > 0, "rl_l2_distance_forward: rows=%d dim=%d", rows, dim);
    TIMED("l2_forward", NULL, be->ops->l2_forward(be, losses, a, b, rows, dim));
}
int rl_l2_distance_backward(rl_backend *be, float *da, const float *a, const float *b, const float *losses,
                            float grad_scale, int rows, int dim)
{
    CHECK(rows > 0 && dim > 0, "rl_l2_distance_backward: rows=%d dim=%d", rows, dim);
    TIMED("l2_backward", NULL, be->ops->l2_backward(be, da, a, b, losses, grad_scale, rows, dim));
}
int rl_mse_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim)
{
    CHECK(rows > 0 && dim > 0, "rl_mse_forward: rows=%d dim=%d", rows, dim);
    TIMED("mse_forward", NULL, be->ops->mse_forward(be, losses, a, b, rows, dim));
}
int rl_mse_backward(rl_backend *be, float *da, const float *a, const float *b, float grad_scale, int rows, int dim)
{
    CHECK(rows > 0 && dim > 0, "rl_mse_backward: rows=%d dim=%d", rows, dim);
    TIMED("mse_backward", NULL, be->ops->mse_backward(be, da, a, b, grad_scale, rows, dim));
}

int rl_adamw_update(rl_backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                    const rl_adamw_params *p, float grad_scale)
{
    CHECK(p->step >= 1, "rl_adamw_update: step=%lld must be >= 1 (bias correction divides by 1-beta^step)",
          (long long)p->step);
    CHECK(p->beta1 >= 0 && p->beta1 < 1 && p->beta2 >= 0 && p->beta2 < 1,
          "rl_adamw_update: betas (%g, %g) must lie in [0, 1)", (double)p->beta1, (double)p->beta2);
    CHECK(p->eps > 0, "rl_adamw_update: eps=%g must be > 0", (double)p->eps);
    TIMED("adamw", NULL, be->ops->adamw(be, param, grad, m, v, n, p, grad_scale));
}

int rl_adamw_update_bf16(rl_backend *be, uint16_t *param16, float *master, const uint16_t *grad16, float *m, float *v,
                         size_t n, const rl_adamw_params *p, float grad_scale)
{
    CHECK(n == 0 || (param16 && master && grad16 && m && v), "rl_adamw_update_bf16: NULL pointer for %zu elements", n);
    CHECK(p->step >= 1, "rl_adamw_update_bf16: step=%lld must be >= 1 (bias correction divides by 1-beta^step)",
          (long long)p->step);
    CHECK(p->beta1 >= 0 && p->beta1 < 1 && p->beta2 >= 0 && p->beta2 < 1,
          "rl_adamw_update_bf16: betas (%g, %g) must lie in [0, 1)", (double)p->beta1, (double)p->beta2);
    CHECK(p->eps > 0, "rl_adamw_update_bf16: eps=%g must be > 0", (double)p->eps);
    TIMED("adamw_bf16", NULL, be->ops->adamw_bf16(be, param16, master, grad16, m, v, n, p, grad_scale));
}

/* ---- linear-attention recurrences ---- */

static rl_wkv_dims wkv_resolve(const rl_wkv_dims *d)
{
    rl_wkv_dims r = *d;
    if (r.chunk == 0)
        r.chunk = RL_WKV_DEFAULT_CHUNK;
    return r;
}

size_t rl_wkv_checkpoint_floats(const rl_wkv_dims *d, int kind)
{
    rl_wkv_dims r = wkv_resolve(d);
    if ((kind != 6 && kind != 7) || r.batch <= 0 || r.seq <= 0 || r.heads <= 0 || r.head_dim <= 0 || r.chunk <= 0)
        return 0;
    const size_t states = (size_t)r.batch * r.heads * (size_t)((r.seq + r.chunk - 1) / r.chunk) * r.head_dim * r.head_dim;
    return states + (kind == 7 ? (size_t)r.batch * r.seq * r.heads * r.head_dim : 0); /* + sa */
}

static int wkv_check(rl_backend *be, const char *op, const rl_wkv_dims *d, const rl_wkv_in *in, int need_ab)
{
    CHECK(d->batch > 0 && d->seq > 0 && d->heads > 0 && d->head_dim > 0,
          "%s: batch=%d seq=%d heads=%d head_dim=%d must all be positive", op, d->batch, d->seq, d->heads,
          d->head_dim);
    CHECK(d->chunk >= 0, "%s: chunk=%d must be >= 0 (0 = %d)", op, d->chunk, RL_WKV_DEFAULT_CHUNK);
    CHECK(in->r && in->logw && in->k && in->v, "%s: r, logw, k and v must all be given", op);
    CHECK(!need_ab || (in->a && in->b), "%s: a and b must be given", op);
    return 0;
}

int rl_wkv7_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                    const rl_wkv_in *in, const float *state_in)
{
    int rc = wkv_check(be, "rl_wkv7_forward", d, in, 1);
    if (rc)
        return rc;
    CHECK(y, "rl_wkv7_forward: y is NULL");
    rl_wkv_dims r = wkv_resolve(d);
    TIMED("wkv7_forward", NULL, be->ops->wkv7_forward(be, &r, y, state_out, ckpt, in, state_in));
}

int rl_wkv7_backward(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                     const float *dy, const float *dstate_out, const rl_wkv_in *in, const float *state_in,
                     const float *ckpt)
{
    int rc = wkv_check(be, "rl_wkv7_backward", d, in, 1);
    if (rc)
        return rc;
    CHECK(dy && g->r && g->logw && g->k && g->v && g->a && g->b,
          "rl_wkv7_backward: dy and every gradient (r, logw, k, v, a, b) must be given");
    rl_wkv_dims r = wkv_resolve(d);
    TIMED("wkv7_backward", NULL,
          be->ops->wkv7_backward(be, &r, g, dstate_in, dy, dstate_out, in, state_in, ckpt));
}

int rl_wkv6_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                    const rl_wkv_in *in, const float *state_in)
{
    int rc = wkv_check(be, "rl_wkv6_forward", d, in, 0);
    if (rc)
        return rc;
    CHECK(y, "rl_wkv6_forward: y is NULL");
    rl_wkv_dims r = wkv_resolve(d);
    TIMED("wkv6_forward", NULL, be->ops->wkv6_forward(be, &r, y, state_out, ckpt, in, state_in));
}

int rl_wkv6_backward(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                     const float *dy, const float *dstate_out, const rl_wkv_in *in, const float *state_in,
                     const float *ckpt)
{
    int rc = wkv_check(be, "rl_wkv6_backward", d, in, 0);
    if (rc)
        return rc;
    CHECK(dy && g->r && g->logw && g->k && g->v,
          "rl_wkv6_backward: dy and every gradient (r, logw, k, v) must be given");
    rl_wkv_dims r = wkv_resolve(d);
    TIMED("wkv6_backward", NULL,
          be->ops->wkv6_backward(be, &r, g, dstate_in, dy, dstate_out, in, state_in, ckpt));
}

/* ---- RAD-RWKV time-mix element-wise parts ---- */

int rl_act_forward(rl_backend *be, rl_act kind, float *y, const float *x, size_t n)
{
    CHECK(kind == RL_ACT_TANH || kind == RL_ACT_SIGMOID, "rl_act_forward: unknown activation %d", (int)kind);
    TIMED("act_forward", NULL, be->ops->act_forward(be, kind, y, x, n));
}
int rl_act_backward(rl_backend *be, rl_act kind, float *dx, const float *dy, const float *y, size_t n)
{
    CHECK(kind == RL_ACT_TANH || kind == RL_ACT_SIGMOID, "rl_act_backward: unknown activation %d", (int)kind);
    TIMED("act_backward", NULL, be->ops->act_backward(be, kind, dx, dy, y, n));
}

static int mix7_check(rl_backend *be, const char *op, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_in *in,
                      const float *v_first)
{
    CHECK(d->rows > 0 && d->heads > 0 && d->kv_heads > 0 && d->head_dim > 0 && d->heads % d->kv_heads == 0,
          "%s: rows=%d heads=%d kv_heads=%d head_dim=%d (kv_heads must divide heads)", op, d->rows, d->heads,
          d->kv_heads, d->head_dim);
    CHECK(d->variant == 'a' || d->variant == 'b', "%s: variant must be 'a' or 'b'", op);
    CHECK(in->k && in->v && in->dlora && in->alora && in->w0 && in->a0, "%s: k, v, dlora, alora, w0, a0 needed", op);
    CHECK(d->variant == 'b' || (in->k_k && in->k_a), "%s: variant a needs k_k and k_a", op);
    CHECK(d->first_layer || (in->vlora && in->v0 && v_first), "%s: later layers need vlora, v0 and v_first", op);
    return 0;
}

int rl_rwkv7_mix_forward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_out *out, float *v_first,
                         const rl_rwkv7_mix_in *in)
{
    int rc = mix7_check(be, "rl_rwkv7_mix_forward", d, in, v_first);
    if (rc)
        return rc;
    TIMED("rwkv7_mix_forward", NULL, be->ops->rwkv7_mix_forward(be, d, out, v_first, in));
}

int rl_rwkv7_mix_backward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_grad *g, float *dv_first,
                          const rl_rwkv7_mix_out *dout, const rl_rwkv7_mix_in *in, const float *v_first)
{
    int rc = mix7_check(be, "rl_rwkv7_mix_backward", d, in, v_first);
    if (rc)
        return rc;
    CHECK(g->k && g->v && g->dlora && g->alora && (d->first_layer || (g->vlora && dv_first)),
          "rl_rwkv7_mix_backward: the activation gradients (k, v, dlora, alora, and vlora/dv_first after layer 0) "
          "must be given");
    TIMED("rwkv7_mix_backward", NULL, be->ops->rwkv7_mix_backward(be, d, g, dv_first, dout, in, v_first));
}

int rl_readout_forward(rl_backend *be, const rl_readout_dims *d, float *out, float *mean, float *rstd,
                       const float *o, const float *g, const float *weight, const float *bias)
{
    CHECK(d->rows > 0 && d->heads > 0 && d->head_dim > 0, "rl_readout_forward: rows=%d heads=%d head_dim=%d",
          d->rows, d->heads, d->head_dim);
    CHECK(!d->groupnorm || (mean && rstd && weight && bias && d->eps > 0),
          "rl_readout_forward: groupnorm needs mean, rstd, weight, bias and eps > 0");
    TIMED("readout_forward", NULL, be->ops->readout_forward(be, d, out, mean, rstd, o, g, weight, bias));
}

int rl_readout_backward(rl_backend *be, const rl_readout_dims *d, float *d_o, float *dg, float *dweight,
                        float *dbias, const float *dout, const float *o, const float *g, const float *weight,
                        const float *bias, const float *mean, const float *rstd)
{
    CHECK(d->rows > 0 && d->heads > 0 && d->head_dim > 0, "rl_readout_backward: rows=%d heads=%d head_dim=%d",
          d->rows, d->heads, d->head_dim);
    CHECK(d_o && dg, "rl_readout_backward: d_o and dg must be given");
    TIMED("readout_backward", NULL,
          be->ops->readout_backward(be, d, d_o, dg, dweight, dbias, dout, o, g, weight, bias, mean, rstd));
}

/* ---- RAD-RWKV6 time-mix element-wise parts ---- */

static int shift_check(rl_backend *be, const char *op, const rl_shift_dims *d)
{
    CHECK(d->batch > 0 && d->seq > 0 && d->dim > 0, "%s: batch=%d seq=%d dim=%d must be positive", op, d->batch,
          d->seq, d->dim);
    return 0;
}

int rl_tokenshift_forward(rl_backend *be, const rl_shift_dims *d, float *out, const float *u, const float *state,
                          const float *mix)
{
    int rc = shift_check(be, "rl_tokenshift_forward", d);
    if (rc)
        return rc;
    TIMED("tokenshift_forward", NULL, be->ops->tokenshift_forward(be, d, out, u, state, mix));
}
int rl_tokenshift_backward(rl_backend *be, const rl_shift_dims *d, float *du, float *dstate, float *dmix,
                           const float *dout, const float *u, const float *state, const float *mix)
{
    int rc = shift_check(be, "rl_tokenshift_backward", d);
    if (rc)
        return rc;
    TIMED("tokenshift_backward", NULL, be->ops->tokenshift_backward(be, d, du, dstate, dmix, dout, u, state, mix));
}
int rl_rwkv6_ddlerp_forward(rl_backend *be, const rl_shift_dims *d, int rank, float *const x[5], const float *u,
                            const float *state, const float *const maa[5], const float *s, const float *w2)
{
    int rc = shift_check(be, "rl_rwkv6_ddlerp_forward", d);
    if (rc)
        return rc;
    CHECK(rank > 0, "rl_rwkv6_ddlerp_forward: rank=%d must be positive", rank);
    TIMED("rwkv6_ddlerp_forward", NULL, be->ops->rwkv6_ddlerp_forward(be, d, rank, x, u, state, maa, s, w2));
}
int rl_rwkv6_ddlerp_backward(rl_backend *be, const rl_shift_dims *d, int rank, float *du, float *dstate,
                             float *const dmaa[5], float *ds, float *dw2, const float *const dx[5], const float *u,
                             const float *state, const float *const maa[5], const float *s, const float *w2)
{
    int rc = shift_check(be, "rl_rwkv6_ddlerp_backward", d);
    if (rc)
        return rc;
    CHECK(rank > 0 && du && ds && dw2, "rl_rwkv6_ddlerp_backward: rank=%d; du, ds and dw2 must be given", rank);
    TIMED("rwkv6_ddlerp_backward", NULL,
          be->ops->rwkv6_ddlerp_backward(be, d, rank, du, dstate, dmaa, ds, dw2, dx, u, state, maa, s, w2));
}

static int mix6_check(rl_backend *be, const char *op, const rl_rwkv6_mix_dims *d)
{
    CHECK(d->rows > 0 && d->heads > 0 && d->kv_heads > 0 && d->head_dim > 0 && d->heads % d->kv_heads == 0,
          "%s: rows=%d heads=%d kv_heads=%d head_dim=%d (kv_heads must divide heads)", op, d->rows, d->heads,
          d->kv_heads, d->head_dim);
    return 0;
}
int rl_rwkv6_mix_forward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *logw, float *kt, float *vt, float *qt,
                         const float *k, const float *v, const float *q, const float *dlora, const float *decay)
{
    int rc = mix6_check(be, "rl_rwkv6_mix_forward", d);
    if (rc)
        return rc;
    TIMED("rwkv6_mix_forward", NULL, be->ops->rwkv6_mix_forward(be, d, logw, kt, vt, qt, k, v, q, dlora, decay));
}
int rl_rwkv6_mix_backward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *dk, float *dv, float *dq,
                          float *ddlora, float *ddecay, const float *dlogw, const float *dkt, const float *dvt,
                          const float *dqt, const float *k, const float *dlora, const float *decay)
{
    int rc = mix6_check(be, "rl_rwkv6_mix_backward", d);
    if (rc)
        return rc;
    TIMED("rwkv6_mix_backward", NULL, be->ops->rwkv6_mix_backward(be, d, dk, dv, dq, ddlora, ddecay, dlogw, dkt,
                                                                  dvt, dqt, k, dlora, decay));
}
