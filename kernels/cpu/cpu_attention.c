/* cpu_attention.c — causal softmax attention with GQA, forward and backward.
 *
 * One query row at a time: its scores live in a per-thread row buffer of
 * seq floats, so memory is O(seq·head_dim) per head and no seq×seq matrix exists.
 * The backward recomputes p_ij = exp(s_ij − lse_i) from the saved log-sum-exp
 * (FlashAttention-style) in two race-free passes:
 *   pass 1, parallel over query rows i:  dq_i = scale Σ_j ds_ij k_j
 *   pass 2, parallel over key rows j:    dk_j = scale Σ_i ds_ij q_i,  dv_j = Σ_i p_ij dout_i
 * where ds_ij = p_ij (dout_i·v_j − delta_i) and delta_i = dout_i·out_i; pass 2 sums
 * over every query head h that shares KV head g. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "cpu_int.h"

static inline float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static inline void axpy(float *y, float a, const float *x, int n)
{
#pragma omp simd
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

int rl__cpu_attention_forward(rl_backend *be, const rl_attn_dims *d, float *out, float *lse, const float *q,
                              const float *k, const float *v)
{
    const int B = d->batch, T = d->seq, H = d->heads, G = d->kv_heads, N = d->head_dim;
    const int rho = H / G;
    const float scale = d->scale;
    const long long rows = (long long)B * H * T;
    int nthreads = omp_get_max_threads();
    float *scratch = malloc(sizeof(float) * (size_t)T * (size_t)nthreads);
    if (!scratch)
        return rl__fail(be, RL_ENOMEM, "rl_attention_forward: cannot allocate %d score rows of %d floats",
                        nthreads, T);
#pragma omp parallel for schedule(dynamic, 8)
    for (long long idx = 0; idx < rows; idx++) {
        /* idx = (b·H + h)·T + i */
        const int i = (int)(idx % T), h = (int)(idx / T % H), b = (int)(idx / T / H);
        const int g = h / rho;
        float *s = scratch + (size_t)omp_get_thread_num() * T;
        const float *qi = q + (((size_t)b * T + i) * H + h) * N;
        float m = -INFINITY;
        for (int j = 0; j <= i; j++) {
            s[j] = scale * dot(qi, k + (((size_t)b * T + j) * G + g) * N, N);
            m = s[j] > m ? s[j] : m;
        }
        float *oi = out + (((size_t)b * T + i) * H + h) * N;
        for (int n = 0; n < N; n++)
            oi[n] = 0.0f;
        float l = 0.0f;
        for (int j = 0; j <= i; j++) {
            float p = expf(s[j] - m);
            l += p;
            axpy(oi, p, v + (((size_t)b * T + j) * G + g) * N, N);
        }
        float inv = 1.0f / l;
        for (int n = 0; n < N; n++)
            oi[n] *= inv;
        lse[idx] = m + logf(l);
    }
    free(scratch);
    return 0;
}

int rl__cpu_attention_backward(rl_backend *be, const rl_attn_dims *d, float *dq, float *dk, float *dv,
                               float *delta, const float *dout, const float *out, const float *lse,
                               const float *q, const float *k, const float *v)
{
    (void)be;
    const int B = d->batch, T = d->seq, H = d->heads, G = d->kv_heads, N = d->head_dim;
    const int rho = H / G;
    const float scale = d->scale;
    const long long qrows = (long long)B * H * T, krows = (long long)B * G * T;

#pragma omp parallel for
    for (long long idx = 0; idx < qrows; idx++) {
        const int i = (int)(idx % T), h = (int)(idx / T % H), b = (int)(idx / T / H);
        size_t off = (((size_t)b * T + i) * H + h) * N;
        delta[idx] = dot(dout + off, out + off, N);
    }

    /* pass 1: dq */
#pragma omp parallel for schedule(dynamic, 8)
    for (long long idx = 0; idx < qrows; idx++) {
        const int i = (int)(idx % T), h = (int)(idx / T % H), b = (int)(idx / T / H);
        const int g = h / rho;
        size_t off = (((size_t)b * T + i) * H + h) * N;
        const float *qi = q + off, *doi = dout + off;
        float *dqi = dq + off;
        const float li = lse[idx], di = delta[idx];
        for (int j = 0; j <= i; j++) {
            size_t koff = (((size_t)b * T + j) * G + g) * N;
            float p = expf(scale * dot(qi, k + koff, N) - li);
            float ds = p * (dot(doi, v + koff, N) - di);
            axpy(dqi, scale * ds, k + koff, N);
        }
    }

    /* pass 2: dk, dv */
#pragma omp parallel for schedule(dynamic, 8)
    for (long long idx = 0; idx < krows; idx++) {
        /* idx = (b·G + g)·T + j */
        const int j = (int)(idx % T), g = (int)(idx / T % G), b = (int)(idx / T / G);
        size_t koff = (((size_t)b * T + j) * G + g) * N;
        const float *kj = k + koff, *vj = v + koff;
        float *dkj = dk + koff, *dvj = dv + koff;
        for (int h = g * rho; h < (g + 1) * rho; h++) {
            const float *lh = lse + ((size_t)b * H + h) * T, *dh = delta + ((size_t)b * H + h) * T;
            for (int i = j; i < T; i++) {
                size_t off = (((size_t)b * T + i) * H + h) * N;
                float p = expf(scale * dot(q + off, kj, N) - lh[i]);
                float ds = p * (dot(dout + off, vj, N) - dh[i]);
                axpy(dvj, p, dout + off, N);
                axpy(dkj, scale * ds, q + off, N);
            }
        }
    }
    return 0;
}
