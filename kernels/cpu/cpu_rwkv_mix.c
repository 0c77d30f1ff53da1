/* cpu_rwkv_mix.c — the element-wise parts of the RAD-RWKV time-mix layers:
 * activations for the LoRA middles, the fused RAD-RWKV7 "mix" (decay, in-context
 * rate, removal/replacement keys, GQA repeat, value residual) and the read-out
 * (GroupNorm or a scale, times the gate). Math in kernels.h; backward by hand. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_int.h"

#define PAR_MIN 16384

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

int rl__cpu_act_forward(rl_backend *be, rl_act kind, float *y, const float *x, size_t n)
{
    (void)be;
    long long nn = (long long)n;
    if (kind == RL_ACT_TANH) {
#pragma omp parallel for if (nn > PAR_MIN)
        for (long long i = 0; i < nn; i++)
            y[i] = tanhf(x[i]);
    } else {
#pragma omp parallel for if (nn > PAR_MIN)
        for (long long i = 0; i < nn; i++)
            y[i] = sigmoidf(x[i]);
    }
    return 0;
}

int rl__cpu_act_backward(rl_backend *be, rl_act kind, float *dx, const float *dy, const float *y, size_t n)
{
    (void)be;
    long long nn = (long long)n;
    if (kind == RL_ACT_TANH) {
#pragma omp parallel for simd if (nn > PAR_MIN)
        for (long long i = 0; i < nn; i++)
            dx[i] += dy[i] * (1.0f - y[i] * y[i]);
    } else {
#pragma omp parallel for simd if (nn > PAR_MIN)
        for (long long i = 0; i < nn; i++)
            dx[i] += dy[i] * y[i] * (1.0f - y[i]);
    }
    return 0;
}

/* ---- RAD-RWKV7 mix ------------------------------------------------------------ */

#define EXP_M05 0.60653065971263342f /* e^(−0.5) */

int rl__cpu_rwkv7_mix_forward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_out *out,
                              float *v_first, const rl_rwkv7_mix_in *in)
{
    (void)be;
    const int H = d->heads, N = d->head_dim, rho = d->heads / d->kv_heads, D = H * N, KD = d->kv_heads * N;
#pragma omp parallel for if ((long long)d->rows * D > PAR_MIN)
    for (int row = 0; row < d->rows; row++) {
        const size_t o = (size_t)row * D;
        for (int h = 0; h < H; h++) {
            const float *kr = in->k + (size_t)row * KD + (size_t)(h / rho) * N;
            const float *vr = in->v + (size_t)row * KD + (size_t)(h / rho) * N;
            const int c0 = h * N;
            float nn = 0.0f;
            for (int n = 0; n < N; n++) {
                float x = d->variant == 'a' ? kr[n] * in->k_k[c0 + n] : kr[n];
                nn += x * x;
            }
            const float norm = sqrtf(nn);
            const float inv = d->variant == 'a' ? 1.0f / fmaxf(norm, 1e-12f) : 1.0f / (norm + 1e-12f);
            for (int n = 0; n < N; n++) {
                const int c = c0 + n;
                const size_t e = o + c;
                float logw = -EXP_M05 * sigmoidf(in->w0[c] + in->dlora[e]);
                float alpha = sigmoidf(in->a0[c] + in->alora[e]);
                float kap, kt;
                if (d->variant == 'a') {
                    kap = kr[n] * in->k_k[c] * inv;
                    kt = kr[n] * (1.0f + (alpha - 1.0f) * in->k_a[c]);
                } else {
                    kap = kr[n] * inv;
                    kt = kr[n] * (1.0f - expf(logw) + alpha);
                }
                out->logw[e] = logw;
                out->a[e] = -kap;
                out->b[e] = kap * alpha;
                out->k[e] = kt;
                if (d->first_layer) {
                    out->v[e] = vr[n];
                    if (v_first)
                        v_first[e] = vr[n];
                } else {
                    float nu = sigmoidf(in->v0[c] + in->vlora[e]);
                    out->v[e] = vr[n] + (v_first[e] - vr[n]) * nu;
                }
            }
        }
    }
    return 0;
}

/* Backward of the mix, per row and head (c = channel, kr = the repeated key):
 *   dκ = −d(a) + d(b)·α,  dα = d(b)·κ  (+ the k̃ terms below)
 *   a: k̃ = kr(1 + (α−1)k_a)   → dkr += dk̃(1 + (α−1)k_a), dα += dk̃·kr·k_a, dk_a += dk̃·kr(α−1)
 *   b: k̃ = kr(1 − w + α)      → dkr += dk̃(1 − w + α), dα += dk̃·kr, dlogw += −dk̃·kr·w
 *   logw = −e^(−0.5)σ(x):  dx = dlogw·(−e^(−0.5))σ(x)(1 − σ(x))  → dlora, dw0
 *   α = σ(y): dy = dα·α(1 − α) → dalora, da0
 *   a: κ = x/‖x‖, x = kr⊙k_k: dx = (dκ − κ(κ·dκ))/‖x‖ → dkr += dx⊙k_k, dk_k += dx⊙kr
 *   b: κ = kr/s, s = ‖kr‖ + ε: dkr += dκ/s − kr (kr·dκ)/(s²‖kr‖)
 *   v = vr + (v_first − vr)ν: dvr += dv(1 − ν), dv_first += dv·ν, dν = dv(v_first − vr) → dvlora, dv0
 *   first layer: v = v_first = vr, so dvr += dv + dv_first (the later layers' share). */
int rl__cpu_rwkv7_mix_backward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_grad *g,
                               float *dv_first, const rl_rwkv7_mix_out *dout, const rl_rwkv7_mix_in *in,
                               const float *v_first)
{
    const int H = d->heads, N = d->head_dim, rho = d->heads / d->kv_heads, D = H * N, KD = d->kv_heads * N;
    const int nthreads = be->num_threads;
    /* per-thread partial sums of the parameter gradients: w0, a0, v0, k_k, k_a */
    float *part = calloc((size_t)nthreads * 5 * D + 1, sizeof(float));
    float *dkap = malloc(sizeof(float) * ((size_t)nthreads * N + 1));
    if (!part || !dkap) {
        free(part), free(dkap);
        return rl__fail(be, RL_ENOMEM, "rl_rwkv7_mix_backward: out of memory");
    }
#pragma omp parallel num_threads(nthreads)
    {
        const int tid = omp_get_thread_num();
        float *pw0 = part + (size_t)tid * 5 * D, *pa0 = pw0 + D, *pv0 = pa0 + D, *pkk = pv0 + D, *pka = pkk + D;
        float *dk_ = dkap + (size_t)tid * N;
#pragma omp for
        for (int row = 0; row < d->rows; row++) {
            const size_t o = (size_t)row * D;
            for (int h = 0; h < H; h++) {
                const size_t ko = (size_t)row * KD + (size_t)(h / rho) * N;
                const float *kr = in->k + ko, *vr = in->v + ko;
                float *dkr = g->k + ko, *dvr = g->v + ko;
                const int c0 = h * N;
                float nn = 0.0f;
                for (int n = 0; n < N; n++) {
                    float x = d->variant == 'a' ? kr[n] * in->k_k[c0 + n] : kr[n];
                    nn += x * x;
                }
                const float norm = sqrtf(nn);
                const float inv = d->variant == 'a' ? 1.0f / fmaxf(norm, 1e-12f) : 1.0f / (norm + 1e-12f);
                float kdot = 0.0f; /* κ·dκ (a) or kr·dκ (b) */
                for (int n = 0; n < N; n++) {
                    const int c = c0 + n;
                    const size_t e = o + c;
                    const float sw = sigmoidf(in->w0[c] + in->dlora[e]);
                    const float logw = -EXP_M05 * sw, w = expf(logw);
                    const float alpha = sigmoidf(in->a0[c] + in->alora[e]);
                    const float kap = d->variant == 'a' ? kr[n] * in->k_k[c] * inv : kr[n] * inv;
                    float dlogw = dout->logw[e];
                    float dalpha = dout->b[e] * kap;
                    float dk = dout->k[e];
                    dk_[n] = -dout->a[e] + dout->b[e] * alpha;
                    if (d->variant == 'a') {
                        dkr[n] += dk * (1.0f + (alpha - 1.0f) * in->k_a[c]);
                        dalpha += dk * kr[n] * in->k_a[c];
                        pka[c] += dk * kr[n] * (alpha - 1.0f);
                        kdot += kap * dk_[n];
                    } else {
                        dkr[n] += dk * (1.0f - w + alpha);
                        dalpha += dk * kr[n];
                        dlogw += -dk * kr[n] * w;
                        kdot += kr[n] * dk_[n];
                    }
                    const float dx = dlogw * -EXP_M05 * sw * (1.0f - sw);
                    g->dlora[e] += dx;
                    pw0[c] += dx;
                    const float dy = dalpha * alpha * (1.0f - alpha);
                    g->alora[e] += dy;
                    pa0[c] += dy;
                    if (d->first_layer) {
                        dvr[n] += dout->v[e] + (dv_first ? dv_first[e] : 0.0f);
                    } else {
                        const float nu = sigmoidf(in->v0[c] + in->vlora[e]);
                        dvr[n] += dout->v[e] * (1.0f - nu);
                        dv_first[e] += dout->v[e] * nu;
                        const float dz = dout->v[e] * (v_first[e] - vr[n]) * nu * (1.0f - nu);
                        g->vlora[e] += dz;
                        pv0[c] += dz;
                    }
                }
                for (int n = 0; n < N; n++) {
                    const int c = c0 + n;
                    if (d->variant == 'a') {
                        if (norm <= 1e-12f) { /* κ = x / 1e-12: linear */
                            float dx = dk_[n] * inv;
                            dkr[n] += dx * in->k_k[c];
                            pkk[c] += dx * kr[n];
                        } else {
                            const float kap = kr[n] * in->k_k[c] * inv;
                            float dx = (dk_[n] - kap * kdot) * inv;
                            dkr[n] += dx * in->k_k[c];
                            pkk[c] += dx * kr[n];
                        }
                    } else {
                        dkr[n] += dk_[n] * inv - (norm > 0 ? kr[n] * kdot * inv * inv / norm : 0.0f);
                    }
                }
            }
        }
    }
    float *sums[5] = {g->w0, g->a0, g->v0, g->k_k, g->k_a};
    for (int p = 0; p < 5; p++) {
        if (!sums[p])
            continue;
        for (int t = 0; t < nthreads; t++)
            for (int c = 0; c < D; c++)
                sums[p][c] += part[((size_t)t * 5 + p) * D + c];
    }
    free(part), free(dkap);
    return 0;
}

/* ---- read-out: p = GroupNorm_H(o)·weight + bias, or p = o·scale; out = p ⊙ g ---- */

int rl__cpu_readout_forward(rl_backend *be, const rl_readout_dims *d, float *out, float *mean, float *rstd,
                            const float *o, const float *g, const float *weight, const float *bias)
{
    (void)be;
    const int H = d->heads, N = d->head_dim, D = H * N;
#pragma omp parallel for if ((long long)d->rows * D > PAR_MIN)
    for (int row = 0; row < d->rows; row++)
        for (int h = 0; h < H; h++) {
            const size_t e0 = (size_t)row * D + (size_t)h * N;
            if (!d->groupnorm) {
                for (int n = 0; n < N; n++)
                    out[e0 + n] = o[e0 + n] * d->scale * g[e0 + n];
                continue;
            }
            float mu = 0.0f, var = 0.0f;
            for (int n = 0; n < N; n++)
                mu += o[e0 + n];
            mu /= (float)N;
            for (int n = 0; n < N; n++)
                var += (o[e0 + n] - mu) * (o[e0 + n] - mu);
            var /= (float)N;
            const float rs = 1.0f / sqrtf(var + d->eps);
            mean[(size_t)row * H + h] = mu, rstd[(size_t)row * H + h] = rs;
            for (int n = 0; n < N; n++) {
                const int c = h * N + n;
                out[e0 + n] = ((o[e0 + n] - mu) * rs * weight[c] + bias[c]) * g[e0 + n];
            }
        }
    return 0;
}

/* GroupNorm backward per (row, head), x̂ = (o − μ)·rstd, dp = dout ⊙ g:
 *   dg += dout ⊙ p,  dweight += dp ⊙ x̂,  dbias += dp,
 *   do += rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂ ⊙ x̂)),  dx̂ = dp ⊙ weight. */
int rl__cpu_readout_backward(rl_backend *be, const rl_readout_dims *d, float *d_o, float *dg, float *dweight,
                             float *dbias, const float *dout, const float *o, const float *g, const float *weight,
                             const float *bias, const float *mean, const float *rstd)
{
    (void)be;
    const int H = d->heads, N = d->head_dim, D = H * N;
#pragma omp parallel for if ((long long)d->rows * D > PAR_MIN)
    for (int row = 0; row < d->rows; row++)
        for (int h = 0; h < H; h++) {
            const size_t e0 = (size_t)row * D + (size_t)h * N;
            if (!d->groupnorm) {
                for (int n = 0; n < N; n++) {
                    dg[e0 + n] += dout[e0 + n] * o[e0 + n] * d->scale;
                    d_o[e0 + n] += dout[e0 + n] * g[e0 + n] * d->scale;
                }
                continue;
            }
            const float mu = mean[(size_t)row * H + h], rs = rstd[(size_t)row * H + h];
            float m1 = 0.0f, m2 = 0.0f;
            for (int n = 0; n < N; n++) {
                const int c = h * N + n;
                const float xh = (o[e0 + n] - mu) * rs, dx = dout[e0 + n] * g[e0 + n] * weight[c];
                dg[e0 + n] += dout[e0 + n] * (xh * weight[c] + bias[c]);
                m1 += dx, m2 += dx * xh;
            }
            m1 /= (float)N, m2 /= (float)N;
            for (int n = 0; n < N; n++) {
                const int c = h * N + n;
                const float xh = (o[e0 + n] - mu) * rs, dx = dout[e0 + n] * g[e0 + n] * weight[c];
                d_o[e0 + n] += rs * (dx - m1 - xh * m2);
            }
        }
    if (d->groupnorm) { /* parameter grads: threads split the columns */
#pragma omp parallel for if ((long long)d->rows * D > PAR_MIN)
        for (int c = 0; c < D; c++) {
            const int h = c / N;
            float sw = 0.0f, sb = 0.0f;
            for (int row = 0; row < d->rows; row++) {
                const size_t e = (size_t)row * D + c;
                const float xh = (o[e] - mean[(size_t)row * H + h]) * rstd[(size_t)row * H + h];
                const float dp = dout[e] * g[e];
                sw += dp * xh, sb += dp;
            }
            if (dweight)
                dweight[c] += sw;
            if (dbias)
                dbias[c] += sb;
        }
    }
    return 0;
}
