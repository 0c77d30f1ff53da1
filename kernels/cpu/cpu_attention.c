/* cpu_attention.c — causal softmax attention with GQA, forward and backward,
 * tiled FlashAttention-2 style.
 *
 * Every product runs as a small single-threaded sgemm on tiles that read q, k, v,
 * out and dout in place (their row stride is heads·head_dim or kv_heads·head_dim);
 * OpenMP runs the tiles, so OpenBLAS is held at one thread for the duration (a
 * multi-threaded sgemm inside an OpenMP worker fights it for the same cores).
 * No seq×seq matrix exists: the largest score buffer is one tile per thread.
 *
 * Forward, per (b, h, query block I of FWD_BR rows), online softmax over key
 * blocks J of FWD_BC columns (J ≤ I causally; with a KV cache the queries sit at
 * absolute positions q_pos + i over kv_seq cached rows, and block J ≤ q_pos + I):
 *   S = scale·Q_I K_Jᵀ,  m' = max(m, rowmax S),  P = exp(S − m'),
 *   l ← l·e^{m−m'} + rowsum P,  O ← O·e^{m−m'} + P V_J;  finally O /= l, lse = m + log l.
 * Backward, per (b, h): delta_i = dout_i·out_i, then for each key block J and each
 * query block I ≥ J (BWD_B × BWD_B tiles), with P recomputed from the saved lse:
 *   P = exp(scale·Q_I K_Jᵀ − lse_I),  dP = dO_I V_Jᵀ,  dS = P ⊙ (dP − delta_I),
 *   dV_J += Pᵀ dO_I,  dK_J += scale·dSᵀ Q_I,  dQ_I += scale·dS K_J.
 * A task owns dQ of its head; dK, dV of a KV head shared by rho = heads/kv_heads
 * query heads go to a per-query-head buffer summed afterwards (rho > 1), so no two
 * threads ever write the same element and the result does not depend on timing.
 * All three gradients are accumulated (+=) into dq, dk, dv.
 * bf16 (rl_attn_dims.bf16, forward only): the same on copies of q, k, v rounded to bf16, P rounded to bf16 as
 * it enters P·V (l sums the unrounded p). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>

#include "cpu_blas.h"
#include "cpu_int.h"

/* FWD_BC is a multiple of FWD_BR, so every key block a query block visits starts
 * at or before the block's first row: no row of a tile is entirely masked. With a
 * KV cache (q_pos not a multiple of FWD_BR) a row can be: it then keeps m, l and O. */
enum { FWD_BR = 64, FWD_BC = 256, BWD_B = 64 };

static inline float dot(const float *a, const float *b, int n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Online-softmax update of one score tile S (br × bc, row stride bc) whose rows
 * are queries i0.. and columns keys j0..: S becomes P = exp(S − m'), masked
 * entries 0; corr[r] = e^{m − m'} rescales the row's running output. */
static void softmax_tile(float *S, int br, int bc, int i0, int j0, float *m, float *l, float *corr, int bf16)
{
    for (int r = 0; r < br; r++) {
        float *row = S + (size_t)r * bc;
        int valid = i0 + r - j0 + 1 < bc ? i0 + r - j0 + 1 : bc;
        valid = valid > 0 ? valid : 0; /* with a KV cache a row can end before a later block: corr = 1, P = 0 */
        float mx = m[r];
        for (int c = 0; c < valid; c++)
            mx = row[c] > mx ? row[c] : mx;
        float sum = 0.0f;
        for (int c = 0; c < valid; c++) {
            const float e = expf(row[c] - mx);
            sum += e;
            row[c] = bf16 ? rl_bf16_to_f32(rl_f32_to_bf16(e)) : e; /* bf16: P·V takes p in bf16, l does not */
        }
        for (int c = valid; c < bc; c++)
            row[c] = 0.0f;
        corr[r] = expf(m[r] - mx); /* 0 on the first block, where m = −inf */
        l[r] = l[r] * corr[r] + sum;
        m[r] = mx;
    }
}

int rl__cpu_attention_forward(rl_backend *be, const rl_attn_dims *d, float *out, float *lse, const float *q,
                              const float *k, const float *v)
{
    const int B = d->batch, T = d->seq, H = d->heads, G = d->kv_heads, N = d->head_dim;
    const int rho = H / G, ldq = H * N, ldk = G * N;
    const int KT = d->kv_seq ? d->kv_seq : T, P = d->q_pos; /* rows of k, v per sequence; first query's position */
    const float scale = d->scale;
    const int nqb = (T + FWD_BR - 1) / FWD_BR;
    float *rounded = NULL; /* bf16: q, k, v rounded to bf16 (the products then read these) */
    if (d->bf16) {
        const size_t nq = (size_t)B * T * H * N, nk = (size_t)B * KT * G * N;
        rounded = malloc(sizeof(float) * (nq + 2 * nk));
        if (!rounded)
            return rl__fail(be, RL_ENOMEM, "rl_attention_forward: cannot allocate bf16 copies of q, k, v (%zu floats)",
                            nq + 2 * nk);
#pragma omp parallel for
        for (size_t e = 0; e < nq + 2 * nk; e++) {
            const float x = e < nq ? q[e] : e < nq + nk ? k[e - nq] : v[e - nq - nk];
            rounded[e] = rl_bf16_to_f32(rl_f32_to_bf16(x));
        }
        q = rounded, k = rounded + nq, v = rounded + nq + nk;
    }
    const long long tasks = (long long)B * H * nqb;
    const size_t per_thread = (size_t)FWD_BR * FWD_BC + 3 * FWD_BR;
    const int nthreads = omp_get_max_threads();
    float *scratch = malloc(sizeof(float) * per_thread * (size_t)nthreads);
    if (!scratch) {
        free(rounded);
        return rl__fail(be, RL_ENOMEM, "rl_attention_forward: cannot allocate %d score tiles of %dx%d floats",
                        nthreads, FWD_BR, FWD_BC);
    }
    int saved = rl__cpu_blas_single_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (long long task = 0; task < tasks; task++) {
        /* the last query blocks see the most keys: hand them out first */
        const int qb = nqb - 1 - (int)(task % nqb), h = (int)(task / nqb % H), b = (int)(task / nqb / H);
        const int g = h / rho, i0 = qb * FWD_BR, br = T - i0 < FWD_BR ? T - i0 : FWD_BR;
        float *S = scratch + per_thread * (size_t)omp_get_thread_num();
        float *m = S + (size_t)FWD_BR * FWD_BC, *l = m + FWD_BR, *corr = l + FWD_BR;
        const float *qi = q + (((size_t)b * T + i0) * H + h) * N;
        const float *kb = k + ((size_t)b * KT * G + g) * N, *vb = v + ((size_t)b * KT * G + g) * N;
        float *oi = out + (((size_t)b * T + i0) * H + h) * N;
        for (int r = 0; r < br; r++)
            m[r] = -INFINITY, l[r] = 0.0f;
        const int p0 = P + i0; /* absolute position of the block's first query */
        for (int j0 = 0; j0 < p0 + br; j0 += FWD_BC) {
            const int bc = p0 + br - j0 < FWD_BC ? p0 + br - j0 : FWD_BC;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, br, bc, N, scale, qi, ldq,
                        kb + (size_t)j0 * ldk, ldk, 0.0f, S, bc);
            softmax_tile(S, br, bc, p0, j0, m, l, corr, d->bf16);
            if (j0)
                for (int r = 0; r < br; r++)
                    for (int n = 0; n < N; n++)
                        oi[(size_t)r * ldq + n] *= corr[r];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, br, N, bc, 1.0f, S, bc,
                        vb + (size_t)j0 * ldk, ldk, j0 ? 1.0f : 0.0f, oi, ldq);
        }
        float *lse_h = lse + ((size_t)b * H + h) * T + i0;
        for (int r = 0; r < br; r++) {
            const float inv = 1.0f / l[r];
            for (int n = 0; n < N; n++)
                oi[(size_t)r * ldq + n] *= inv;
            lse_h[r] = m[r] + logf(l[r]);
        }
    }
    rl__cpu_blas_single_end(saved);
    free(scratch);
    free(rounded);
    return 0;
}

/* P and dS of one BWD_B tile, in place: S holds scale·Q_I K_Jᵀ on entry and P on
 * exit, dP holds dO_I V_Jᵀ on entry and dS on exit. */
static void backward_tile(float *S, float *dP, int br, int bc, int i0, int j0, const float *lse_i,
                          const float *delta_i)
{
    for (int r = 0; r < br; r++) {
        float *srow = S + (size_t)r * bc, *drow = dP + (size_t)r * bc;
        const int valid = i0 + r - j0 + 1 < bc ? i0 + r - j0 + 1 : bc;
        const float li = lse_i[r], di = delta_i[r];
        for (int c = 0; c < valid; c++) {
            const float p = expf(srow[c] - li);
            srow[c] = p;
            drow[c] = p * (drow[c] - di);
        }
        for (int c = valid > 0 ? valid : 0; c < bc; c++)
            srow[c] = drow[c] = 0.0f;
    }
}

int rl__cpu_attention_backward(rl_backend *be, const rl_attn_dims *d, float *dq, float *dk, float *dv,
                               float *delta, const float *dout, const float *out, const float *lse,
                               const float *q, const float *k, const float *v)
{
    const int B = d->batch, T = d->seq, H = d->heads, G = d->kv_heads, N = d->head_dim;
    const int rho = H / G, ldq = H * N, ldk = G * N;
    const float scale = d->scale;
    const size_t nq = (size_t)B * T * H * N;
    const int nthreads = omp_get_max_threads();
    const size_t per_thread = 2 * (size_t)BWD_B * BWD_B;
    float *scratch = malloc(sizeof(float) * per_thread * (size_t)nthreads);
    /* rho > 1: dK, dV per query head, laid out like q, summed into dk, dv below */
    float *dk_h = rho > 1 ? calloc(2 * nq, sizeof(float)) : NULL, *dv_h = dk_h ? dk_h + nq : NULL;
    if (!scratch || (rho > 1 && !dk_h)) {
        free(scratch), free(dk_h);
        return rl__fail(be, RL_ENOMEM, "rl_attention_backward: cannot allocate %zu floats of scratch",
                        per_thread * (size_t)nthreads + (rho > 1 ? 2 * nq : 0));
    }
    float *dk_t = rho > 1 ? dk_h : dk, *dv_t = rho > 1 ? dv_h : dv;
    const int ldt = rho > 1 ? ldq : ldk;
    int saved = rl__cpu_blas_single_begin();
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * H; task++) {
        const int h = task % H, b = task / H, g = h / rho;
        float *S = scratch + per_thread * (size_t)omp_get_thread_num(), *dP = S + (size_t)BWD_B * BWD_B;
        const float *qb = q + ((size_t)b * T * H + h) * N, *dob = dout + ((size_t)b * T * H + h) * N;
        const float *ob = out + ((size_t)b * T * H + h) * N;
        const float *kb = k + ((size_t)b * T * G + g) * N, *vb = v + ((size_t)b * T * G + g) * N;
        float *dqb = dq + ((size_t)b * T * H + h) * N;
        const size_t toff = rho > 1 ? ((size_t)b * T * H + h) * N : ((size_t)b * T * G + g) * N;
        float *dkb = dk_t + toff, *dvb = dv_t + toff;
        const float *lse_h = lse + ((size_t)b * H + h) * T;
        float *delta_h = delta + ((size_t)b * H + h) * T;
        for (int i = 0; i < T; i++)
            delta_h[i] = dot(dob + (size_t)i * ldq, ob + (size_t)i * ldq, N);
        for (int j0 = 0; j0 < T; j0 += BWD_B) {
            const int bc = T - j0 < BWD_B ? T - j0 : BWD_B;
            const float *kj = kb + (size_t)j0 * ldk, *vj = vb + (size_t)j0 * ldk;
            float *dkj = dkb + (size_t)j0 * ldt, *dvj = dvb + (size_t)j0 * ldt;
            for (int i0 = j0; i0 < T; i0 += BWD_B) {
                const int br = T - i0 < BWD_B ? T - i0 : BWD_B;
                const float *qi = qb + (size_t)i0 * ldq, *doi = dob + (size_t)i0 * ldq;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, br, bc, N, scale, qi, ldq, kj, ldk, 0.0f,
                            S, bc);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, br, bc, N, 1.0f, doi, ldq, vj, ldk, 0.0f,
                            dP, bc);
                backward_tile(S, dP, br, bc, i0, j0, lse_h + i0, delta_h + i0);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bc, N, br, 1.0f, S, bc, doi, ldq, 1.0f,
                            dvj, ldt);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bc, N, br, scale, dP, bc, qi, ldq, 1.0f,
                            dkj, ldt);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, br, N, bc, scale, dP, bc, kj, ldk,
                            1.0f, dqb + (size_t)i0 * ldq, ldq);
            }
        }
    }
    rl__cpu_blas_single_end(saved);
    if (rho > 1) {
        /* dk[b,t,g] += Σ_{h: h/rho = g} dk_h[b,t,h], likewise dv */
        const long long rows = (long long)B * T * G;
#pragma omp parallel for if (rows * rho * N > 16384)
        for (long long row = 0; row < rows; row++) {
            const int g = (int)(row % G);
            const long long bt = row / G;
            float *dkr = dk + (size_t)row * N, *dvr = dv + (size_t)row * N;
            for (int h = g * rho; h < (g + 1) * rho; h++) {
                const float *sk = dk_h + ((size_t)bt * H + h) * N, *sv = dv_h + ((size_t)bt * H + h) * N;
#pragma omp simd
                for (int n = 0; n < N; n++) {
                    dkr[n] += sk[n];
                    dvr[n] += sv[n];
                }
            }
        }
    }
    free(scratch);
    free(dk_h);
    return 0;
}
