/* cpu_backend.c — the fp32 CPU backend: context, memory, casts, elementwise ops,
 * reductions and AdamW. "Device" memory is host memory, 64-byte aligned. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_int.h"

/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 16384

static void cpu_destroy(rl_backend *be) { (void)be; }
static int cpu_sync(rl_backend *be)
{
    (void)be;
    return 0;
}

static void *cpu_malloc(rl_backend *be, size_t bytes)
{
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p)
        rl__fail(be, RL_ENOMEM, "cpu backend: cannot allocate %zu bytes (%.1f MiB); reduce the batch, sequence "
                 "or model size", bytes, (double)bytes / 1048576.0);
    return p;
}

static void cpu_free(rl_backend *be, void *p)
{
    (void)be;
    free(p);
}

static int cpu_memcpy(rl_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memmove(dst, src, bytes);
    return 0;
}

static int cpu_zero(rl_backend *be, void *dst, size_t bytes)
{
    (void)be;
    memset(dst, 0, bytes);
    return 0;
}

static int cpu_cast(rl_backend *be, void *dst, rl_dtype dt, const void *src, rl_dtype st, size_t n)
{
    if (dt == st)
        return cpu_memcpy(be, dst, src, n * rl_dtype_size(dt));
    long long nn = (long long)n;
    if (st == RL_DTYPE_F32) {
        const float *s = src;
        uint16_t *d = dst;
        if (dt == RL_DTYPE_BF16) {
#pragma omp parallel for if (nn > PAR_MIN)
            for (long long i = 0; i < nn; i++)
                d[i] = rl_f32_to_bf16(s[i]);
        } else {
#pragma omp parallel for if (nn > PAR_MIN)
            for (long long i = 0; i < nn; i++)
                d[i] = rl_f32_to_f16(s[i]);
        }
        return 0;
    }
    if (dt == RL_DTYPE_F32) {
        const uint16_t *s = src;
        float *d = dst;
        if (st == RL_DTYPE_BF16) {
#pragma omp parallel for if (nn > PAR_MIN)
            for (long long i = 0; i < nn; i++)
                d[i] = rl_bf16_to_f32(s[i]);
        } else {
#pragma omp parallel for if (nn > PAR_MIN)
            for (long long i = 0; i < nn; i++)
                d[i] = rl_f16_to_f32(s[i]);
        }
        return 0;
    }
    return rl__fail(be, RL_ENOTSUP, "rl_cast: %s -> %s is not supported; go through F32", rl_dtype_name(st),
                    rl_dtype_name(dt));
}

static int cpu_add(rl_backend *be, float *out, const float *a, const float *b, size_t n)
{
    (void)be;
    long long nn = (long long)n;
#pragma omp parallel for simd if (nn > PAR_MIN)
    for (long long i = 0; i < nn; i++)
        out[i] = a[i] + b[i];
    return 0;
}

static int cpu_accumulate(rl_backend *be, float *y, const float *x, size_t n)
{
    (void)be;
    long long nn = (long long)n;
#pragma omp parallel for simd if (nn > PAR_MIN)
    for (long long i = 0; i < nn; i++)
        y[i] += x[i];
    return 0;
}

static int cpu_scale(rl_backend *be, float *x, float s, size_t n)
{
    (void)be;
    long long nn = (long long)n;
#pragma omp parallel for simd if (nn > PAR_MIN)
    for (long long i = 0; i < nn; i++)
        x[i] *= s;
    return 0;
}

static int cpu_sum(rl_backend *be, double *out, const float *x, size_t n, int squares)
{
    (void)be;
    long long nn = (long long)n;
    double acc = 0.0;
    if (squares) {
#pragma omp parallel for reduction(+ : acc) if (nn > PAR_MIN)
        for (long long i = 0; i < nn; i++)
            acc += (double)x[i] * (double)x[i];
    } else {
#pragma omp parallel for reduction(+ : acc) if (nn > PAR_MIN)
        for (long long i = 0; i < nn; i++)
            acc += (double)x[i];
    }
    *out = acc;
    return 0;
}

/* Σx² of each range, F32 or BF16 (widened: exact), in double. */
static int cpu_sum_many(rl_backend *be, double *out, const void *const *x, const rl_dtype *dt, const size_t *n,
                        int count, int squares)
{
    for (int r = 0; r < count; r++) {
        if (!dt || dt[r] == RL_DTYPE_F32) {
            cpu_sum(be, &out[r], x[r], n[r], squares);
            continue;
        }
        const uint16_t *h = x[r];
        const long long nn = (long long)n[r];
        double acc = 0.0;
#pragma omp parallel for reduction(+ : acc) if (nn > PAR_MIN)
        for (long long i = 0; i < nn; i++) {
            const double w = (double)rl_bf16_to_f32(h[i]);
            acc += squares ? w * w : w;
        }
        out[r] = acc;
    }
    return 0;
}

/* AdamW (as torch.optim.AdamW): the step's constants, and one element; the same expression in both updates. */
typedef struct {
    float b1, b2, lr, eps, decay, bc1, bc2, grad_scale;
} adamw_consts;

static adamw_consts adamw_of(const rl_adamw_params *hp, float grad_scale)
{
    return (adamw_consts){hp->beta1, hp->beta2, hp->lr, hp->eps, 1.0f - hp->lr * hp->weight_decay,
                          (float)(1.0 - pow((double)hp->beta1, (double)hp->step)),
                          (float)(1.0 - pow((double)hp->beta2, (double)hp->step)), grad_scale};
}

static inline float adamw_step(float p, float g, float *m, float *v, const adamw_consts *k)
{
    g *= k->grad_scale;
    float mi = k->b1 * *m + (1.0f - k->b1) * g;
    float vi = k->b2 * *v + (1.0f - k->b2) * g * g;
    *m = mi;
    *v = vi;
    return p * k->decay - k->lr * (mi / k->bc1) / (sqrtf(vi / k->bc2) + k->eps);
}

static int cpu_adamw_bf16(rl_backend *be, uint16_t *p16, float *master, const uint16_t *g16, float *m, float *v,
                          size_t n, const rl_adamw_params *hp, float grad_scale)
{
    (void)be;
    const adamw_consts k = adamw_of(hp, grad_scale);
    long long nn = (long long)n;
#pragma omp parallel for if (nn > PAR_MIN)
    for (long long i = 0; i < nn; i++) {
        master[i] = adamw_step(master[i], rl_bf16_to_f32(g16[i]), &m[i], &v[i], &k);
        p16[i] = rl_f32_to_bf16(master[i]);
    }
    return 0;
}

static int cpu_adamw(rl_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                     const rl_adamw_params *hp, float grad_scale)
{
    (void)be;
    const adamw_consts k = adamw_of(hp, grad_scale);
    long long nn = (long long)n;
#pragma omp parallel for simd if (nn > PAR_MIN)
    for (long long i = 0; i < nn; i++)
        p[i] = adamw_step(p[i], g[i], &m[i], &v[i], &k);
    return 0;
}

static const rl__ops cpu_ops = {
    .destroy = cpu_destroy,
    .sync = cpu_sync,
    .malloc = cpu_malloc,
    .free = cpu_free,
    .upload = cpu_memcpy,
    .download = cpu_memcpy,
    .copy = cpu_memcpy,
    .zero = cpu_zero,
    .cast = cpu_cast,
    .add = cpu_add,
    .accumulate = cpu_accumulate,
    .scale = cpu_scale,
    .sum = cpu_sum,
    .sum_many = cpu_sum_many,
    .matmul = rl__cpu_matmul,
    .bias_backward = rl__cpu_bias_backward,
    .embedding_forward = rl__cpu_embedding_forward,
    .embedding_backward = rl__cpu_embedding_backward,
    .rmsnorm_forward = rl__cpu_rmsnorm_forward,
    .rmsnorm_backward = rl__cpu_rmsnorm_backward,
    .rope = rl__cpu_rope,
    .swiglu_forward = rl__cpu_swiglu_forward,
    .swiglu_backward = rl__cpu_swiglu_backward,
    .attention_forward = rl__cpu_attention_forward,
    .attention_backward = rl__cpu_attention_backward,
    .cross_entropy = rl__cpu_cross_entropy,
    .kl_divergence = rl__cpu_kl_divergence,
    .l2_forward = rl__cpu_l2_forward,
    .l2_backward = rl__cpu_l2_backward,
    .mse_forward = rl__cpu_mse_forward,
    .mse_backward = rl__cpu_mse_backward,
    .adamw = cpu_adamw,
    .adamw_bf16 = cpu_adamw_bf16,
    .wkv7_forward = rl__cpu_wkv7_forward,
    .wkv7_backward = rl__cpu_wkv7_backward,
    .wkv6_forward = rl__cpu_wkv6_forward,
    .wkv6_backward = rl__cpu_wkv6_backward,
    .act_forward = rl__cpu_act_forward,
    .act_backward = rl__cpu_act_backward,
    .rwkv7_mix_forward = rl__cpu_rwkv7_mix_forward,
    .rwkv7_mix_backward = rl__cpu_rwkv7_mix_backward,
    .readout_forward = rl__cpu_readout_forward,
    .readout_backward = rl__cpu_readout_backward,
    .tokenshift_forward = rl__cpu_tokenshift_forward,
    .tokenshift_backward = rl__cpu_tokenshift_backward,
    .rwkv6_ddlerp_forward = rl__cpu_rwkv6_ddlerp_forward,
    .rwkv6_ddlerp_backward = rl__cpu_rwkv6_ddlerp_backward,
    .rwkv6_mix_forward = rl__cpu_rwkv6_mix_forward,
    .rwkv6_mix_backward = rl__cpu_rwkv6_mix_backward,
};

/* Threads: the option, else OMP_NUM_THREADS (omp_get_max_threads honours it),
 * else all cores. OpenBLAS gets the same count so GEMMs and OpenMP loops never
 * oversubscribe the cores between them. */
int rl__cpu_init(rl_backend *be, const rl_backend_options *opt, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    int n = opt->num_threads > 0 ? opt->num_threads : omp_get_max_threads();
    if (n < 1)
        n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    be->ops = &cpu_ops;
    be->name = "cpu-fp32";
    be->num_threads = n;
    be->gemm_bf16 = 1; /* BF16 operands are widened to F32 (exact) before sgemm */
    return 0;
}
