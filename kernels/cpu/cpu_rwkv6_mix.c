/* cpu_rwkv6_mix.c — the element-wise parts of the RAD-RWKV6 time-mix: token
 * shift, the data-dependent lerp ("ddlerp") with its second LoRA stage, and the
 * decay / state-balancing / GQA / q-scale step before wkv6. Math in kernels.h. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_int.h"

#define PAR_MIN 16384

/* u_{t−1} for row (b, t): the previous row, or the carried shift state (zeros when NULL) */
static inline const float *prev_row(const rl_shift_dims *d, const float *u, const float *state, int row,
                                    const float *zeros)
{
    const int t = row % d->seq, b = row / d->seq;
    if (t > 0)
        return u + (size_t)(row - 1) * d->dim;
    return state ? state + (size_t)b * d->dim : zeros;
}

int rl__cpu_tokenshift_forward(rl_backend *be, const rl_shift_dims *d, float *out, const float *u,
                               const float *state, const float *mix)
{
    const int R = d->batch * d->seq, D = d->dim;
    float *zeros = calloc((size_t)D, sizeof(float));
    if (!zeros)
        return rl__fail(be, RL_ENOMEM, "rl_tokenshift_forward: out of memory");
#pragma omp parallel for if ((long long)R * D > PAR_MIN)
    for (int row = 0; row < R; row++) {
        const float *x = u + (size_t)row * D, *p = prev_row(d, u, state, row, zeros);
        float *y = out + (size_t)row * D;
        for (int c = 0; c < D; c++)
            y[c] = x[c] + (p[c] - x[c]) * mix[c];
    }
    free(zeros);
    return 0;
}

/* out_t = u_t + (u_{t−1} − u_t)⊙mix:  du_t += dout_t⊙(1 − mix),  du_{t−1} += dout_t⊙mix,
 * dmix += Σ_t dout_t⊙δ_t. The first row's share goes to dstate (if given). */
int rl__cpu_tokenshift_backward(rl_backend *be, const rl_shift_dims *d, float *du, float *dstate, float *dmix,
                                const float *dout, const float *u, const float *state, const float *mix)
{
    const int R = d->batch * d->seq, D = d->dim, T = d->seq;
    float *zeros = calloc((size_t)D, sizeof(float));
    if (!zeros)
        return rl__fail(be, RL_ENOMEM, "rl_tokenshift_backward: out of memory");
    /* rows are independent given dout: du_t gets its own term and the next row's */
#pragma omp parallel for if ((long long)R * D > PAR_MIN)
    for (int row = 0; row < R; row++) {
        const float *g = dout + (size_t)row * D;
        const float *gn = (row % T) + 1 < T ? dout + (size_t)(row + 1) * D : NULL;
        float *dx = du + (size_t)row * D;
        for (int c = 0; c < D; c++)
            dx[c] += g[c] * (1.0f - mix[c]) + (gn ? gn[c] * mix[c] : 0.0f);
        if (row % T == 0 && dstate)
            for (int c = 0; c < D; c++)
                dstate[(size_t)(row / T) * D + c] += g[c] * mix[c];
    }
    if (dmix) {
#pragma omp parallel for if ((long long)R * D > PAR_MIN)
        for (int c = 0; c < D; c++) {
            float s = 0.0f;
            for (int row = 0; row < R; row++) {
                const float *p = prev_row(d, u, state, row, zeros);
                s += dout[(size_t)row * D + c] * (p[c] - u[(size_t)row * D + c]);
            }
            dmix[c] += s;
        }
    }
    free(zeros);
    return 0;
}

/* x_c = u + δ⊙(maa_c + s_c·W2[c]), c = 0..4, s [R, 5, rank], W2 [5, rank, D]. */
int rl__cpu_rwkv6_ddlerp_forward(rl_backend *be, const rl_shift_dims *d, int rank, float *const x[5],
                                 const float *u, const float *state, const float *const maa[5], const float *s,
                                 const float *w2)
{
    const int R = d->batch * d->seq, D = d->dim;
    float *tmp = malloc(sizeof(float) * ((size_t)be->num_threads * D + (size_t)D));
    if (!tmp)
        return rl__fail(be, RL_ENOMEM, "rl_rwkv6_ddlerp_forward: out of memory");
    float *zeros = tmp + (size_t)be->num_threads * D;
    memset(zeros, 0, sizeof(float) * D);
#pragma omp parallel num_threads(be->num_threads)
    {
        float *m = tmp + (size_t)omp_get_thread_num() * D;
#pragma omp for
        for (int row = 0; row < R; row++) {
            const float *xu = u + (size_t)row * D, *p = prev_row(d, u, state, row, zeros);
            for (int c = 0; c < 5; c++) {
                memset(m, 0, sizeof(float) * D);
                const float *sc = s + ((size_t)row * 5 + c) * rank;
                for (int k = 0; k < rank; k++) {
                    const float sk = sc[k], *wr = w2 + ((size_t)c * rank + k) * D;
#pragma omp simd
                    for (int j = 0; j < D; j++)
                        m[j] += sk * wr[j];
                }
                float *xc = x[c] + (size_t)row * D;
                for (int j = 0; j < D; j++)
                    xc[j] = xu[j] + (p[j] - xu[j]) * (maa[c][j] + m[j]);
            }
        }
    }
    free(tmp);
    return 0;
}

/* With δ = u_{t−1} − u_t and e_c = maa_c + m_c, dm_c = dx_c⊙δ:
 *   du_t += Σ_c dx_c⊙(1 − e_c),  du_{t−1} += Σ_c dx_c⊙e_c (→ dstate at t = 0),
 *   dmaa_c += Σ_rows dm_c,  ds_c = dm_c·W2[c]ᵀ,  dW2[c] += s_cᵀ·dm_c. */
int rl__cpu_rwkv6_ddlerp_backward(rl_backend *be, const rl_shift_dims *d, int rank, float *du, float *dstate,
                                  float *const dmaa[5], float *ds, float *dw2, const float *const dx[5],
                                  const float *u, const float *state, const float *const maa[5], const float *s,
                                  const float *w2)
{
    const int R = d->batch * d->seq, D = d->dim, T = d->seq;
    /* dm [5][R][D] is materialised once: it feeds ds, dW2 and dmaa */
    float *dm = malloc(sizeof(float) * (5 * (size_t)R * D + (size_t)be->num_threads * D + (size_t)D));
    if (!dm)
        return rl__fail(be, RL_ENOMEM, "rl_rwkv6_ddlerp_backward: out of memory (%d rows)", R);
    float *tmp = dm + 5 * (size_t)R * D, *zeros = tmp + (size_t)be->num_threads * D;
    memset(zeros, 0, sizeof(float) * D);
    /* first pass, per row: du_t's own term, dm_c and ds; m_c is recomputed (cheaper than storing 5·R·D) */
#pragma omp parallel num_threads(be->num_threads)
    {
        float *m = tmp + (size_t)omp_get_thread_num() * D;
#pragma omp for
        for (int row = 0; row < R; row++) {
            const float *xu = u + (size_t)row * D, *p = prev_row(d, u, state, row, zeros);
            float *dxu = du + (size_t)row * D;
            for (int c = 0; c < 5; c++) {
                memset(m, 0, sizeof(float) * D);
                const float *sc = s + ((size_t)row * 5 + c) * rank;
                for (int k = 0; k < rank; k++) {
                    const float sk = sc[k], *wr = w2 + ((size_t)c * rank + k) * D;
#pragma omp simd
                    for (int j = 0; j < D; j++)
                        m[j] += sk * wr[j];
                }
                const float *g = dx[c] + (size_t)row * D;
                float *dmc = dm + ((size_t)c * R + row) * D;
                for (int j = 0; j < D; j++) {
                    const float e = maa[c][j] + m[j];
                    dxu[j] += g[j] * (1.0f - e);
                    dmc[j] = g[j] * (p[j] - xu[j]);
                }
                float *ds_row = ds + ((size_t)row * 5 + c) * rank;
                for (int k = 0; k < rank; k++) {
                    const float *wr = w2 + ((size_t)c * rank + k) * D;
                    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                    for (int j = 0; j < D; j++)
                        acc += dmc[j] * wr[j];
                    ds_row[k] += acc;
                }
            }
        }
    }
    /* second pass: du_{t−1} += Σ_c dx_c(t)⊙e_c(t); iterate over the receiving row so each is written once */
#pragma omp parallel num_threads(be->num_threads)
    {
        float *m = tmp + (size_t)omp_get_thread_num() * D;
#pragma omp for
        for (int row = 0; row < R; row++) {
            if ((row % T) + 1 == T)
                continue;
            const int src = row + 1; /* the row whose δ reads this one */
            float *dst = du + (size_t)row * D;
            for (int c = 0; c < 5; c++) {
                memset(m, 0, sizeof(float) * D);
                const float *sc = s + ((size_t)src * 5 + c) * rank;
                for (int k = 0; k < rank; k++) {
                    const float sk = sc[k], *wr = w2 + ((size_t)c * rank + k) * D;
#pragma omp simd
                    for (int j = 0; j < D; j++)
                        m[j] += sk * wr[j];
                }
                const float *g = dx[c] + (size_t)src * D;
                for (int j = 0; j < D; j++)
                    dst[j] += g[j] * (maa[c][j] + m[j]);
            }
        }
    }
    if (dstate) /* the first row of each sequence reads the carried state */
        for (int b = 0; b < d->batch; b++) {
            const int src = b * T;
            float *m = tmp;
            for (int c = 0; c < 5; c++) {
                memset(m, 0, sizeof(float) * D);
                const float *sc = s + ((size_t)src * 5 + c) * rank;
                for (int k = 0; k < rank; k++)
                    for (int j = 0; j < D; j++)
                        m[j] += sc[k] * w2[((size_t)c * rank + k) * D + j];
                const float *g = dx[c] + (size_t)src * D;
                for (int j = 0; j < D; j++)
                    dstate[(size_t)b * D + j] += g[j] * (maa[c][j] + m[j]);
            }
        }
    /* parameter grads: dmaa_c[j] = Σ_rows dm_c;  dW2[c][k][:] += Σ_rows s[row,c,k]·dm_c[row,:] */
#pragma omp parallel for if ((long long)R * D > PAR_MIN)
    for (int ck = 0; ck < 5 * rank; ck++) {
        const int c = ck / rank, k = ck % rank;
        float *wr = dw2 + (size_t)ck * D;
        for (int row = 0; row < R; row++) {
            const float sk = s[((size_t)row * 5 + c) * rank + k], *dmc = dm + ((size_t)c * R + row) * D;
#pragma omp simd
            for (int j = 0; j < D; j++)
                wr[j] += sk * dmc[j];
        }
    }
#pragma omp parallel for if ((long long)R * D > PAR_MIN)
    for (int cj = 0; cj < 5 * D; cj++) {
        const int c = cj / D, j = cj % D;
        float acc = 0.0f;
        for (int row = 0; row < R; row++)
            acc += dm[((size_t)c * R + row) * D + j];
        if (dmaa[c])
            dmaa[c][j] += acc;
    }
    free(dm);
    return 0;
}

/* logw = max(−e^(λ + dlora), −5), w = e^logw; k̃ = k_rep ⊙ (1 − w); ṽ = v_rep; q̃ = q·scale. */
int rl__cpu_rwkv6_mix_forward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *logw, float *kt, float *vt,
                              float *qt, const float *k, const float *v, const float *q, const float *dlora,
                              const float *decay)
{
    (void)be;
    const int H = d->heads, N = d->head_dim, rho = d->heads / d->kv_heads, D = H * N, KD = d->kv_heads * N;
#pragma omp parallel for if ((long long)d->rows * D > PAR_MIN)
    for (int row = 0; row < d->rows; row++)
        for (int c = 0; c < D; c++) {
            const size_t e = (size_t)row * D + c, ke = (size_t)row * KD + (size_t)(c / N / rho) * N + c % N;
            const float lw = fmaxf(-expf(decay[c] + dlora[e]), -5.0f);
            logw[e] = lw;
            kt[e] = k[ke] * (1.0f - expf(lw));
            vt[e] = v[ke];
            qt[e] = q[e] * d->q_scale;
        }
    return 0;
}

/* dlogw_total = dlogw − dk̃⊙k_rep⊙w;  dx = dlogw_total⊙(−e^x) where the clamp is not active, else 0;
 * dk += dk̃⊙(1 − w) (summed over the repeated heads), dv += dṽ, dq += dq̃·scale, ddlora += dx, ddecay += Σ dx. */
int rl__cpu_rwkv6_mix_backward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *dk, float *dv, float *dq,
                               float *ddlora, float *ddecay, const float *dlogw, const float *dkt, const float *dvt,
                               const float *dqt, const float *k, const float *dlora, const float *decay)
{
    const int H = d->heads, N = d->head_dim, rho = d->heads / d->kv_heads, D = H * N, KD = d->kv_heads * N;
    float *dx = malloc(sizeof(float) * (size_t)d->rows * D);
    if (!dx)
        return rl__fail(be, RL_ENOMEM, "rl_rwkv6_mix_backward: out of memory");
#pragma omp parallel for if ((long long)d->rows * D > PAR_MIN)
    for (int row = 0; row < d->rows; row++)
        for (int c = 0; c < D; c++) { /* sequential over c: repeated heads of one row add to the same dk */
            const size_t e = (size_t)row * D + c, ke = (size_t)row * KD + (size_t)(c / N / rho) * N + c % N;
            const float ex = expf(decay[c] + dlora[e]);
            const float w = expf(fmaxf(-ex, -5.0f));
            const float dl = dlogw[e] - dkt[e] * k[ke] * w;
            dx[e] = -ex > -5.0f ? dl * -ex : 0.0f;
            ddlora[e] += dx[e];
            dk[ke] += dkt[e] * (1.0f - w);
            dv[ke] += dvt[e];
            dq[e] += dqt[e] * d->q_scale;
        }
    if (ddecay) {
#pragma omp parallel for if ((long long)d->rows * D > PAR_MIN)
        for (int c = 0; c < D; c++) {
            float s = 0.0f;
            for (int row = 0; row < d->rows; row++)
                s += dx[(size_t)row * D + c];
            ddecay[c] += s;
        }
    }
    free(dx);
    return 0;
}
