/* cuda_mix.cu — the element-wise parts of the RAD-RWKV7 / RAD-RWKV6 time-mix layers on the GPU:
 * LoRA activations, the RAD-RWKV7 mix, the read-out (GroupNorm or scale, times the gate), token
 * shift, the RWKV6 ddlerp and the RWKV6 decay/GQA step. Math and set-vs-accumulate rules exactly as
 * kernels.h and kernels/cpu/cpu_rwkv_mix.c, cpu_rwkv6_mix.c.
 *
 * Work split:
 *   - purely element-wise ops: a grid-stride loop, one element per thread;
 *   - ops with a per-(row, head) normalisation: one warp per (row, head), lane n owning channels
 *     n, n+32, …; the norms are warp shuffles (xor butterfly: every lane ends with the full sum);
 *   - parameter gradients summed over rows (dw0, da0, dv0, dk_k, dk_a, dweight, dbias, dmix, dmaa,
 *     dW2, ddecay): deterministic two-pass reductions. Rows are split into `slots`; each slot's
 *     partial sums go to its own region of the workspace, every element written by one thread in a
 *     fixed row order; a second kernel adds the slots up in slot order and accumulates (+=) into the
 *     gradient. No atomics anywhere: the results do not depend on scheduling.
 *   - GQA: a query head h reads KV head h / rho; the gradient of a KV channel is summed over its rho
 *     query heads by ONE thread (or one lane) looping over them, so there is never a write race. */
#include <cuda_runtime.h>

#include "../scratch.h"
#include "cuda_ops.h"

namespace {

constexpr float EXP_M05 = 0.60653065971263342f; /* e^(−0.5) */
constexpr int EW_THREADS = 256;
constexpr int WARPS = 8; /* warps per block for the warp-per-(row, head) kernels */
static_assert(EW_THREADS == RL_SCRATCH_EW_THREADS, "scratch.h sizes the column reductions' partials with it");

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

__device__ __forceinline__ float warp_sum(float x)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

unsigned ew_blocks(size_t n)
{
    size_t b = (n + EW_THREADS - 1) / EW_THREADS;
    const size_t cap = (size_t)1 << 20; /* grid-stride loops cover the rest */
    return (unsigned)(b < 1 ? 1 : (b > cap ? cap : b));
}


/* dst[x] += Σ_s part[s·stride + x] for x < width, slots in order (deterministic). */
__global__ void sum_slots_kernel(float *dst, const float *part, int nslots, size_t stride, size_t width)
{
    for (size_t x = (size_t)blockIdx.x * blockDim.x + threadIdx.x; x < width; x += (size_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int k = 0; k < nslots; k++)
            s += part[(size_t)k * stride + x];
        dst[x] += s;
    }
}

cudaError_t sum_slots(cudaStream_t st, float *dst, const float *part, int nslots, size_t stride, size_t width)
{
    if (!dst)
        return cudaSuccess;
    sum_slots_kernel<<<ew_blocks(width), EW_THREADS, 0, st>>>(dst, part, nslots, stride, width);
    return cudaGetLastError();
}

/* ---- activations ------------------------------------------------------------------------------ */

__global__ void act_forward_kernel(int kind, float *y, const float *x, size_t n)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x)
        y[e] = kind == RL_ACT_TANH ? tanhf(x[e]) : sigmoidf_(x[e]);
}

__global__ void act_backward_kernel(int kind, float *dx, const float *dy, const float *y, size_t n)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x)
        dx[e] += kind == RL_ACT_TANH ? dy[e] * (1.0f - y[e] * y[e]) : dy[e] * y[e] * (1.0f - y[e]);
}

/* ---- RAD-RWKV7 mix -------------------------------------------------------------------------------
 * Forward: one warp per (row, query head h); the head's key norm is a warp sum. */

struct mix7_args {
    int rows, H, N, rho, D, KD, variant, first;
};

__global__ void mix7_forward_kernel(mix7_args m, rl_rwkv7_mix_out out, float *v_first, rl_rwkv7_mix_in in)
{
    const long long w = (long long)blockIdx.x * WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (w >= (long long)m.rows * m.H)
        return; /* whole warp leaves together */
    const int row = (int)(w / m.H), h = (int)(w % m.H), N = m.N;
    const float *kr = in.k + (size_t)row * m.KD + (size_t)(h / m.rho) * N;
    const float *vr = in.v + (size_t)row * m.KD + (size_t)(h / m.rho) * N;
    const int c0 = h * N;
    float nn = 0.0f;
    for (int n = lane; n < N; n += 32) {
        const float x = m.variant == 'a' ? kr[n] * in.k_k[c0 + n] : kr[n];
        nn += x * x;
    }
    const float norm = sqrtf(warp_sum(nn));
    const float inv = m.variant == 'a' ? 1.0f / fmaxf(norm, 1e-12f) : 1.0f / (norm + 1e-12f);
    for (int n = lane; n < N; n += 32) {
        const int c = c0 + n;
        const size_t e = (size_t)row * m.D + c;
        const float logw = -EXP_M05 * sigmoidf_(in.w0[c] + in.dlora[e]);
        const float alpha = sigmoidf_(in.a0[c] + in.alora[e]);
        float kap, kt;
        if (m.variant == 'a') {
            kap = kr[n] * in.k_k[c] * inv;
            kt = kr[n] * (1.0f + (alpha - 1.0f) * in.k_a[c]);
        } else {
            kap = kr[n] * inv;
            kt = kr[n] * (1.0f - expf(logw) + alpha);
        }
        out.logw[e] = logw;
        out.a[e] = -kap;
        out.b[e] = kap * alpha;
        out.k[e] = kt;
        if (m.first) {
            out.v[e] = vr[n];
            if (v_first)
                v_first[e] = vr[n];
        } else {
            const float nu = sigmoidf_(in.v0[c] + in.vlora[e]);
            out.v[e] = vr[n] + (v_first[e] - vr[n]) * nu;
        }
    }
}

/* Backward: one warp per (slot of rows, KV head g), looping over its rows and, within a row, over the
 * rho query heads that read g — so the repeated key/value gradient dkr, dvr of a lane's channel has a
 * single writer. Parameter partials go to part[slot][5][D] (w0, a0, v0, k_k, k_a), each element owned
 * by one lane of one warp, accumulated in row order. Three passes per (row, head): the norm, the main
 * terms (and κ·dκ, a warp sum), the normalisation's backward. */
__global__ void mix7_backward_kernel(mix7_args m, rl_rwkv7_mix_grad g, float *dv_first, rl_rwkv7_mix_out dout,
                                     rl_rwkv7_mix_in in, const float *v_first, float *part, int nslots, int rps)
{
    const int slot = blockIdx.x * WARPS + threadIdx.x / 32, lane = threadIdx.x % 32, kvh = blockIdx.y;
    if (slot >= nslots)
        return;
    const int N = m.N, D = m.D;
    float *pw0 = part + (size_t)slot * 5 * D, *pa0 = pw0 + D, *pv0 = pa0 + D, *pkk = pv0 + D, *pka = pkk + D;
    const int r0 = slot * rps, r1 = min(m.rows, r0 + rps);
    for (int row = r0; row < r1; row++) {
        const size_t ko = (size_t)row * m.KD + (size_t)kvh * N;
        const float *kr = in.k + ko, *vr = in.v + ko;
        float *dkr = g.k + ko, *dvr = g.v + ko;
        for (int h = kvh * m.rho; h < (kvh + 1) * m.rho; h++) {
            const int c0 = h * N;
            const size_t o = (size_t)row * D;
            float nn = 0.0f;
            for (int n = lane; n < N; n += 32) {
                const float x = m.variant == 'a' ? kr[n] * in.k_k[c0 + n] : kr[n];
                nn += x * x;
            }
            const float norm = sqrtf(warp_sum(nn));
            const float inv = m.variant == 'a' ? 1.0f / fmaxf(norm, 1e-12f) : 1.0f / (norm + 1e-12f);
            float kdot = 0.0f; /* κ·dκ (a) or kr·dκ (b), this lane's share */
            for (int n = lane; n < N; n += 32) {
                const int c = c0 + n;
                const size_t e = o + c;
                const float sw = sigmoidf_(in.w0[c] + in.dlora[e]);
                const float logw = -EXP_M05 * sw, w = expf(logw);
                const float alpha = sigmoidf_(in.a0[c] + in.alora[e]);
                const float kap = m.variant == 'a' ? kr[n] * in.k_k[c] * inv : kr[n] * inv;
                float dlogw = dout.logw[e];
                float dalpha = dout.b[e] * kap;
                const float dk = dout.k[e];
                const float dkap = -dout.a[e] + dout.b[e] * alpha;
                if (m.variant == 'a') {
                    dkr[n] += dk * (1.0f + (alpha - 1.0f) * in.k_a[c]);
                    dalpha += dk * kr[n] * in.k_a[c];
                    pka[c] += dk * kr[n] * (alpha - 1.0f);
                    kdot += kap * dkap;
                } else {
                    dkr[n] += dk * (1.0f - w + alpha);
                    dalpha += dk * kr[n];
                    dlogw += -dk * kr[n] * w;
                    kdot += kr[n] * dkap;
                }
                const float dx = dlogw * -EXP_M05 * sw * (1.0f - sw);
                g.dlora[e] += dx;
                pw0[c] += dx;
                const float dy = dalpha * alpha * (1.0f - alpha);
                g.alora[e] += dy;
                pa0[c] += dy;
                if (m.first) {
                    dvr[n] += dout.v[e] + (dv_first ? dv_first[e] : 0.0f);
                } else {
                    const float nu = sigmoidf_(in.v0[c] + in.vlora[e]);
                    dvr[n] += dout.v[e] * (1.0f - nu);
                    dv_first[e] += dout.v[e] * nu;
                    const float dz = dout.v[e] * (v_first[e] - vr[n]) * nu * (1.0f - nu);
                    g.vlora[e] += dz;
                    pv0[c] += dz;
                }
            }
            kdot = warp_sum(kdot);
            for (int n = lane; n < N; n += 32) {
                const int c = c0 + n;
                const size_t e = o + c;
                const float alpha = sigmoidf_(in.a0[c] + in.alora[e]);
                const float dkap = -dout.a[e] + dout.b[e] * alpha;
                if (m.variant == 'a') {
                    float dx;
                    if (norm <= 1e-12f) { /* κ = x / 1e-12: linear */
                        dx = dkap * inv;
                    } else {
                        const float kap = kr[n] * in.k_k[c] * inv;
                        dx = (dkap - kap * kdot) * inv;
                    }
                    dkr[n] += dx * in.k_k[c];
                    pkk[c] += dx * kr[n];
                } else {
                    dkr[n] += dkap * inv - (norm > 0 ? kr[n] * kdot * inv * inv / norm : 0.0f);
                }
            }
        }
    }
}

/* ---- read-out -------------------------------------------------------------------------------------- */

struct readout_args {
    int rows, H, N, D, groupnorm;
    float eps, scale;
};

__global__ void readout_forward_kernel(readout_args m, float *out, float *mean, float *rstd, const float *o,
                                       const float *g, const float *weight, const float *bias)
{
    const long long w = (long long)blockIdx.x * WARPS + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (w >= (long long)m.rows * m.H)
        return;
    const int row = (int)(w / m.H), h = (int)(w % m.H), N = m.N;
    const size_t e0 = (size_t)row * m.D + (size_t)h * N;
    if (!m.groupnorm) {
        for (int n = lane; n < N; n += 32)
            out[e0 + n] = o[e0 + n] * m.scale * g[e0 + n];
        return;
    }
    float mu = 0.0f;
    for (int n = lane; n < N; n += 32)
        mu += o[e0 + n];
    mu = warp_sum(mu) / (float)N;
    float var = 0.0f;
    for (int n = lane; n < N; n += 32)
        var += (o[e0 + n] - mu) * (o[e0 + n] - mu);
    var = warp_sum(var) / (float)N;
    const float rs = 1.0f / sqrtf(var + m.eps);
    if (lane == 0)
        mean[(size_t)row * m.H + h] = mu, rstd[(size_t)row * m.H + h] = rs;
    for (int n = lane; n < N; n += 32) {
        const int c = h * N + n;
        out[e0 + n] = ((o[e0 + n] - mu) * rs * weight[c] + bias[c]) * g[e0 + n];
    }
}

/* Per (row, head), x̂ = (o − μ)·rstd, dp = dout ⊙ g:  dg += dout ⊙ p,
 * do += rstd·(dx̂ − mean(dx̂) − x̂·mean(dx̂ ⊙ x̂)), dx̂ = dp ⊙ weight.
 * Warp per (slot of rows, head): dweight/dbias partials part[slot][2][D] (NULL part = not wanted). */
__global__ void readout_backward_kernel(readout_args m, float *d_o, float *dg, const float *dout, const float *o,
                                        const float *g, const float *weight, const float *bias, const float *mean,
                                        const float *rstd, float *part, int nslots, int rps)
{
    const int slot = blockIdx.x * WARPS + threadIdx.x / 32, lane = threadIdx.x % 32, h = blockIdx.y, N = m.N;
    if (slot >= nslots)
        return;
    float *pw = part ? part + (size_t)slot * 2 * m.D : nullptr, *pb = pw ? pw + m.D : nullptr;
    const int r0 = slot * rps, r1 = min(m.rows, r0 + rps);
    for (int row = r0; row < r1; row++) {
        const size_t e0 = (size_t)row * m.D + (size_t)h * N;
        if (!m.groupnorm) {
            for (int n = lane; n < N; n += 32) {
                dg[e0 + n] += dout[e0 + n] * o[e0 + n] * m.scale;
                d_o[e0 + n] += dout[e0 + n] * g[e0 + n] * m.scale;
            }
            continue;
        }
        const float mu = mean[(size_t)row * m.H + h], rs = rstd[(size_t)row * m.H + h];
        float m1 = 0.0f, m2 = 0.0f;
        for (int n = lane; n < N; n += 32) {
            const int c = h * N + n;
            const float xh = (o[e0 + n] - mu) * rs, dp = dout[e0 + n] * g[e0 + n], dx = dp * weight[c];
            dg[e0 + n] += dout[e0 + n] * (xh * weight[c] + bias[c]);
            m1 += dx, m2 += dx * xh;
            if (pw) {
                pw[c] += dp * xh;
                pb[c] += dp;
            }
        }
        m1 = warp_sum(m1) / (float)N, m2 = warp_sum(m2) / (float)N;
        for (int n = lane; n < N; n += 32) {
            const int c = h * N + n;
            const float xh = (o[e0 + n] - mu) * rs, dx = dout[e0 + n] * g[e0 + n] * weight[c];
            d_o[e0 + n] += rs * (dx - m1 - xh * m2);
        }
    }
}

/* ---- token shift ------------------------------------------------------------------------------------- */

/* u_{t−1}[j] for row (b, t): the previous row, or the carried state (0 when NULL). */
__device__ __forceinline__ float prev_val(const float *u, const float *state, int T, int D, int row, int j)
{
    const int t = row % T;
    if (t > 0)
        return u[(size_t)(row - 1) * D + j];
    return state ? state[(size_t)(row / T) * D + j] : 0.0f;
}

__global__ void tokenshift_forward_kernel(int R, int T, int D, float *out, const float *u, const float *state,
                                          const float *mix)
{
    const size_t n = (size_t)R * D;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const int row = (int)(e / D), j = (int)(e % D);
        const float x = u[e];
        out[e] = x + (prev_val(u, state, T, D, row, j) - x) * mix[j];
    }
}

/* du_t += dout_t(1 − mix) + dout_{t+1} mix; dstate[b] += dout_{bT} mix. Each element one writer. */
__global__ void tokenshift_backward_kernel(int R, int T, int D, float *du, float *dstate, const float *dout,
                                           const float *mix)
{
    const size_t n = (size_t)R * D;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const int row = (int)(e / D), j = (int)(e % D);
        float acc = dout[e] * (1.0f - mix[j]);
        if ((row % T) + 1 < T)
            acc += dout[e + D] * mix[j];
        du[e] += acc;
        if (row % T == 0 && dstate)
            dstate[(size_t)(row / T) * D + j] += dout[e] * mix[j];
    }
}

/* dmix partials: part[slot][D], thread per channel over the slot's rows. grid (channel blocks, slots). */
__global__ void tokenshift_dmix_kernel(int R, int T, int D, float *part, const float *dout, const float *u,
                                       const float *state, int rps)
{
    const int j = blockIdx.x * blockDim.x + threadIdx.x, slot = blockIdx.y;
    if (j >= D)
        return;
    const int r0 = slot * rps, r1 = min(R, r0 + rps);
    float s = 0.0f;
    for (int row = r0; row < r1; row++) {
        const size_t e = (size_t)row * D + j;
        s += dout[e] * (prev_val(u, state, T, D, row, j) - u[e]);
    }
    part[(size_t)slot * D + j] = s;
}

/* ---- RWKV6 ddlerp -------------------------------------------------------------------------------------
 * x_c = u + δ ⊙ (maa_c + m_c),  m_c[j] = Σ_k s[row, c, k] W2[c][k][j],  δ = u_{t−1} − u_t. */

struct ddlerp_args {
    int R, T, D, rank;
    const float *maa[5];
    const float *dx[5];
    float *x[5];
    float *dmaa[5];
};

/* Block per row; s[row] (5·rank) staged in shared memory; threads stride over channels. */
__global__ void ddlerp_forward_kernel(ddlerp_args a, const float *u, const float *state, const float *s,
                                      const float *w2)
{
    extern __shared__ float ss[]; /* [5][rank] */
    const int row = blockIdx.x, D = a.D, rank = a.rank;
    for (int e = threadIdx.x; e < 5 * rank; e += blockDim.x)
        ss[e] = s[(size_t)row * 5 * rank + e];
    __syncthreads();
    for (int j = threadIdx.x; j < D; j += blockDim.x) {
        const size_t e = (size_t)row * D + j;
        const float xu = u[e], dl = prev_val(u, state, a.T, D, row, j) - xu;
        for (int c = 0; c < 5; c++) {
            float m = 0.0f;
            for (int k = 0; k < rank; k++)
                m += ss[c * rank + k] * w2[((size_t)c * rank + k) * D + j];
            a.x[c][e] = xu + dl * (a.maa[c][j] + m);
        }
    }
}

/* Backward part 1, block per row: du_t += Σ_c dx_c(t)(1 − e_c(t)) + Σ_c dx_c(t+1) e_c(t+1) (same
 * sequence), dstate[b] += Σ_c dx_c(bT) e_c(bT), and ds[row, c, k] += dm_c · W2[c][k] with
 * dm_c = dx_c ⊙ δ staged in shared memory (one warp per k, a warp sum). Each thread owns its channels
 * of du and dstate; each ds element is written by one lane 0. */
__global__ void ddlerp_backward_rows_kernel(ddlerp_args a, float *du, float *dstate, float *ds, const float *u,
                                            const float *state, const float *s, const float *w2)
{
    extern __shared__ float sm[]; /* ss [5][rank], sn [5][rank] (next row), dm [D] */
    const int row = blockIdx.x, D = a.D, rank = a.rank, T = a.T;
    float *ss = sm, *sn = ss + 5 * rank, *dm = sn + 5 * rank;
    const bool has_next = (row % T) + 1 < T, first = row % T == 0;
    for (int e = threadIdx.x; e < 5 * rank; e += blockDim.x) {
        ss[e] = s[(size_t)row * 5 * rank + e];
        sn[e] = has_next ? s[(size_t)(row + 1) * 5 * rank + e] : 0.0f;
    }
    for (int c = 0; c < 5; c++) {
        __syncthreads(); /* s staged (c = 0) / the previous dm consumed */
        for (int j = threadIdx.x; j < D; j += blockDim.x) {
            const size_t e = (size_t)row * D + j;
            float m = 0.0f, mn = 0.0f;
            for (int k = 0; k < rank; k++) {
                const float wv = w2[((size_t)c * rank + k) * D + j];
                m += ss[c * rank + k] * wv;
                mn += sn[c * rank + k] * wv;
            }
            const float ec = a.maa[c][j] + m, gv = a.dx[c][e];
            float acc = gv * (1.0f - ec);
            if (has_next)
                acc += a.dx[c][e + D] * (a.maa[c][j] + mn);
            du[e] += acc;
            if (first && dstate)
                dstate[(size_t)(row / T) * D + j] += gv * ec;
            dm[j] = gv * (prev_val(u, state, T, D, row, j) - u[e]);
        }
        __syncthreads();
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
        for (int k = warp; k < rank; k += nw) {
            const float *wr = w2 + ((size_t)c * rank + k) * D;
            float acc = 0.0f;
            for (int j = lane; j < D; j += 32)
                acc += dm[j] * wr[j];
            acc = warp_sum(acc);
            if (lane == 0)
                ds[((size_t)row * 5 + c) * rank + k] += acc;
        }
    }
}

/* Backward part 2: dW2[c][k][j] += Σ_rows s[row,c,k] dm_c[row][j] and dmaa_c[j] += Σ_rows dm_c[row][j].
 * Block = (channel block of 256, c·ktiles, slot); thread j keeps KT accumulators (k0..k0+KT−1, plus the
 * dmaa sum in the first k tile) over its slot's rows; s of a row tile is staged in shared memory.
 * Partials part[slot][5][rank+1][D] (index rank = dmaa). */
constexpr int DD_KT = 16, DD_RT = 32;
static_assert(DD_KT == RL_SCRATCH_DD_KT, "scratch.h sizes the ddlerp partials with it");

__global__ void ddlerp_backward_params_kernel(ddlerp_args a, const float *u, const float *state, const float *s,
                                              float *part, int rps, int ktiles)
{
    static __shared__ float st[DD_RT][DD_KT]; /* static: see cuda_layers.cu's block reductions */
    const int D = a.D, rank = a.rank, T = a.T;
    const int j = blockIdx.x * blockDim.x + threadIdx.x;
    const int c = blockIdx.y / ktiles, k0 = (blockIdx.y % ktiles) * DD_KT, slot = blockIdx.z;
    const int r0 = slot * rps, r1 = min(a.R, r0 + rps);
    float acc[DD_KT], accm = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DD_KT; kk++)
        acc[kk] = 0.0f;
    for (int rt = r0; rt < r1; rt += DD_RT) {
        const int nr = min(DD_RT, r1 - rt);
        __syncthreads();
        for (int e = threadIdx.x; e < DD_RT * DD_KT; e += blockDim.x) {
            const int rr = e / DD_KT, kk = e % DD_KT;
            st[rr][kk] = (rr < nr && k0 + kk < rank) ? s[((size_t)(rt + rr) * 5 + c) * rank + k0 + kk] : 0.0f;
        }
        __syncthreads();
        if (j < D)
            for (int rr = 0; rr < nr; rr++) {
                const int row = rt + rr;
                const size_t e = (size_t)row * D + j;
                const float dmv = a.dx[c][e] * (prev_val(u, state, T, D, row, j) - u[e]);
                accm += dmv;
#pragma unroll
                for (int kk = 0; kk < DD_KT; kk++)
                    acc[kk] += st[rr][kk] * dmv;
            }
    }
    if (j >= D)
        return;
    float *pc = part + ((size_t)slot * 5 + c) * (size_t)(rank + 1) * D;
#pragma unroll
    for (int kk = 0; kk < DD_KT; kk++)
        if (k0 + kk < rank)
            pc[(size_t)(k0 + kk) * D + j] = acc[kk];
    if (k0 == 0)
        pc[(size_t)rank * D + j] = accm;
}

/* ---- RWKV6 decay / GQA step ---------------------------------------------------------------------------
 * logw = max(−e^(λ + dlora), −5), w = e^logw; k̃ = k_rep ⊙ (1 − w); ṽ = v_rep; q̃ = q·scale. */

struct mix6_args {
    int rows, H, N, rho, D, KD;
    float q_scale;
};

__global__ void mix6_forward_kernel(mix6_args m, float *logw, float *kt, float *vt, float *qt, const float *k,
                                    const float *v, const float *q, const float *dlora, const float *decay)
{
    const size_t n = (size_t)m.rows * m.D;
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += (size_t)gridDim.x * blockDim.x) {
        const int row = (int)(e / m.D), c = (int)(e % m.D);
        const size_t ke = (size_t)row * m.KD + (size_t)(c / m.N / m.rho) * m.N + c % m.N;
        const float lw = fmaxf(-expf(decay[c] + dlora[e]), -5.0f);
        logw[e] = lw;
        kt[e] = k[ke] * (1.0f - expf(lw));
        vt[e] = v[ke];
        qt[e] = q[e] * m.q_scale;
    }
}

/* dx = (dlogw − dk̃ k_rep w)(−e^x) where the clamp is inactive (0 where it is). */
__device__ __forceinline__ float mix6_dx(const mix6_args &m, size_t e, size_t ke, int c, const float *dlogw,
                                         const float *dkt, const float *k, const float *dlora, const float *decay,
                                         float *w_out)
{
    const float ex = expf(decay[c] + dlora[e]);
    const float w = expf(fmaxf(-ex, -5.0f));
    *w_out = w;
    const float dl = dlogw[e] - dkt[e] * k[ke] * w;
    return -ex > -5.0f ? dl * -ex : 0.0f;
}

/* Thread per (row, KV channel): loops over the rho query heads reading it, so dk, dv have one writer. */
__global__ void mix6_backward_kernel(mix6_args m, float *dk, float *dv, float *dq, float *ddlora, const float *dlogw,
                                     const float *dkt, const float *dvt, const float *dqt, const float *k,
                                     const float *dlora, const float *decay)
{
    const size_t n = (size_t)m.rows * m.KD;
    for (size_t ke = (size_t)blockIdx.x * blockDim.x + threadIdx.x; ke < n; ke += (size_t)gridDim.x * blockDim.x) {
        const int row = (int)(ke / m.KD), kc = (int)(ke % m.KD), g = kc / m.N, nn = kc % m.N;
        float dks = 0.0f, dvs = 0.0f;
        for (int h = g * m.rho; h < (g + 1) * m.rho; h++) {
            const int c = h * m.N + nn;
            const size_t e = (size_t)row * m.D + c;
            float w;
            const float dx = mix6_dx(m, e, ke, c, dlogw, dkt, k, dlora, decay, &w);
            ddlora[e] += dx;
            dks += dkt[e] * (1.0f - w);
            dvs += dvt[e];
            dq[e] += dqt[e] * m.q_scale;
        }
        dk[ke] += dks;
        dv[ke] += dvs;
    }
}

/* ddecay partials part[slot][D]: thread per channel over the slot's rows. */
__global__ void mix6_ddecay_kernel(mix6_args m, float *part, const float *dlogw, const float *dkt, const float *k,
                                   const float *dlora, const float *decay, int rps)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x, slot = blockIdx.y;
    if (c >= m.D)
        return;
    const int r0 = slot * rps, r1 = min(m.rows, r0 + rps);
    float s = 0.0f;
    for (int row = r0; row < r1; row++) {
        const size_t e = (size_t)row * m.D + c, ke = (size_t)row * m.KD + (size_t)(c / m.N / m.rho) * m.N + c % m.N;
        float w;
        s += mix6_dx(m, e, ke, c, dlogw, dkt, k, dlora, decay, &w);
    }
    part[(size_t)slot * m.D + c] = s;
}

unsigned warp_blocks(long long warps) { return (unsigned)((warps + WARPS - 1) / WARPS); }

} // namespace

extern "C" {

cudaError_t rlc_act_forward(cudaStream_t st, rl_act kind, float *y, const float *x, size_t n)
{
    if (n == 0)
        return cudaSuccess;
    act_forward_kernel<<<ew_blocks(n), EW_THREADS, 0, st>>>((int)kind, y, x, n);
    return cudaGetLastError();
}

cudaError_t rlc_act_backward(cudaStream_t st, rl_act kind, float *dx, const float *dy, const float *y, size_t n)
{
    if (n == 0)
        return cudaSuccess;
    act_backward_kernel<<<ew_blocks(n), EW_THREADS, 0, st>>>((int)kind, dx, dy, y, n);
    return cudaGetLastError();
}

static mix7_args make_mix7(const rl_rwkv7_mix_dims *d)
{
    mix7_args m;
    m.rows = d->rows, m.H = d->heads, m.N = d->head_dim, m.rho = d->heads / d->kv_heads;
    m.D = d->heads * d->head_dim, m.KD = d->kv_heads * d->head_dim;
    m.variant = d->variant, m.first = d->first_layer;
    return m;
}

cudaError_t rlc_rwkv7_mix_forward(cudaStream_t st, rlc_workspace *ws, const rl_rwkv7_mix_dims *d,
                                  const rl_rwkv7_mix_out *out, float *v_first, const rl_rwkv7_mix_in *in)
{
    (void)ws;
    const mix7_args m = make_mix7(d);
    mix7_forward_kernel<<<warp_blocks((long long)m.rows * m.H), WARPS * 32, 0, st>>>(m, *out, v_first, *in);
    return cudaGetLastError();
}

cudaError_t rlc_rwkv7_mix_backward(cudaStream_t st, rlc_workspace *ws, const rl_rwkv7_mix_dims *d,
                                   const rl_rwkv7_mix_grad *g, float *dv_first, const rl_rwkv7_mix_out *dout,
                                   const rl_rwkv7_mix_in *in, const float *v_first)
{
    const mix7_args m = make_mix7(d);
    if (d->kv_heads > 65535)
        return cudaErrorInvalidValue;
    const int nslots = rl_scratch_slots(m.rows, d->kv_heads, 256), rps = (m.rows + nslots - 1) / nslots;
    const size_t pbytes = rl_scratch_rwkv7_mix_backward(d); /* nslots · 5 · D floats */
    float *part = (float *)rlc_ws_get(ws, st, pbytes);
    if (!part)
        return cudaErrorMemoryAllocation;
    cudaError_t e = cudaMemsetAsync(part, 0, pbytes, st);
    if (e != cudaSuccess)
        return e;
    dim3 grid((nslots + WARPS - 1) / WARPS, d->kv_heads);
    mix7_backward_kernel<<<grid, WARPS * 32, 0, st>>>(m, *g, dv_first, *dout, *in, v_first, part, nslots, rps);
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;
    float *dst[5] = {g->w0, g->a0, m.first ? nullptr : g->v0, d->variant == 'a' ? g->k_k : nullptr,
                     d->variant == 'a' ? g->k_a : nullptr};
    for (int p = 0; p < 5; p++)
        if ((e = sum_slots(st, dst[p], part + (size_t)p * m.D, nslots, (size_t)5 * m.D, (size_t)m.D)) != cudaSuccess)
            return e;
    return cudaSuccess;
}

static readout_args make_readout(const rl_readout_dims *d)
{
    readout_args m;
    m.rows = d->rows, m.H = d->heads, m.N = d->head_dim, m.D = d->heads * d->head_dim;
    m.groupnorm = d->groupnorm, m.eps = d->eps, m.scale = d->scale;
    return m;
}

cudaError_t rlc_readout_forward(cudaStream_t st, const rl_readout_dims *d, float *out, float *mean, float *rstd,
                                const float *o, const float *g, const float *weight, const float *bias)
{
    const readout_args m = make_readout(d);
    readout_forward_kernel<<<warp_blocks((long long)m.rows * m.H), WARPS * 32, 0, st>>>(m, out, mean, rstd, o, g,
                                                                                        weight, bias);
    return cudaGetLastError();
}

cudaError_t rlc_readout_backward(cudaStream_t st, rlc_workspace *ws, const rl_readout_dims *d, float *d_o,
                                 float *dg, float *dweight, float *dbias, const float *dout, const float *o,
                                 const float *g, const float *weight, const float *bias, const float *mean,
                                 const float *rstd)
{
    const readout_args m = make_readout(d);
    if (m.H > 65535)
        return cudaErrorInvalidValue;
    const bool params = m.groupnorm && (dweight || dbias);
    const int nslots = rl_scratch_slots(m.rows, m.H, 256), rps = (m.rows + nslots - 1) / nslots;
    float *part = nullptr;
    cudaError_t e;
    const size_t pbytes = rl_scratch_readout_backward(d, params); /* nslots · 2 · D floats */
    if (params) {
        if (!(part = (float *)rlc_ws_get(ws, st, pbytes)))
            return cudaErrorMemoryAllocation;
        if ((e = cudaMemsetAsync(part, 0, pbytes, st)) != cudaSuccess)
            return e;
    }
    dim3 grid((nslots + WARPS - 1) / WARPS, m.H);
    readout_backward_kernel<<<grid, WARPS * 32, 0, st>>>(m, d_o, dg, dout, o, g, weight, bias, mean, rstd, part,
                                                         nslots, rps);
    if ((e = cudaGetLastError()) != cudaSuccess || !params)
        return e;
    if ((e = sum_slots(st, dweight, part, nslots, (size_t)2 * m.D, (size_t)m.D)) != cudaSuccess)
        return e;
    return sum_slots(st, dbias, part + m.D, nslots, (size_t)2 * m.D, (size_t)m.D);
}

cudaError_t rlc_tokenshift_forward(cudaStream_t st, const rl_shift_dims *d, float *out, const float *u,
                                   const float *state, const float *mix)
{
    const int R = d->batch * d->seq;
    tokenshift_forward_kernel<<<ew_blocks((size_t)R * d->dim), EW_THREADS, 0, st>>>(R, d->seq, d->dim, out, u,
                                                                                     state, mix);
    return cudaGetLastError();
}

cudaError_t rlc_tokenshift_backward(cudaStream_t st, rlc_workspace *ws, const rl_shift_dims *d, float *du,
                                    float *dstate, float *dmix, const float *dout, const float *u,
                                    const float *state, const float *mix)
{
    const int R = d->batch * d->seq, T = d->seq, D = d->dim;
    tokenshift_backward_kernel<<<ew_blocks((size_t)R * D), EW_THREADS, 0, st>>>(R, T, D, du, dstate, dout, mix);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || !dmix)
        return e;
    const int cblocks = (D + EW_THREADS - 1) / EW_THREADS;
    const int nslots = rl_scratch_slots(R, cblocks * 8, 1024), rps = (R + nslots - 1) / nslots;
    float *part = (float *)rlc_ws_get(ws, st, rl_scratch_tokenshift_backward(d)); /* nslots · D floats */
    if (!part)
        return cudaErrorMemoryAllocation;
    tokenshift_dmix_kernel<<<dim3(cblocks, nslots), EW_THREADS, 0, st>>>(R, T, D, part, dout, u, state, rps);
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;
    return sum_slots(st, dmix, part, nslots, (size_t)D, (size_t)D);
}

cudaError_t rlc_rwkv6_ddlerp_forward(cudaStream_t st, const rl_shift_dims *d, int rank, float *const x[5],
                                     const float *u, const float *state, const float *const maa[5],
                                     const float *s, const float *w2)
{
    ddlerp_args a = {};
    a.R = d->batch * d->seq, a.T = d->seq, a.D = d->dim, a.rank = rank;
    for (int c = 0; c < 5; c++)
        a.x[c] = x[c], a.maa[c] = maa[c];
    const size_t sm = sizeof(float) * 5 * (size_t)rank;
    cudaError_t e = cudaFuncSetAttribute(ddlerp_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    ddlerp_forward_kernel<<<a.R, EW_THREADS, sm, st>>>(a, u, state, s, w2);
    return cudaGetLastError();
}

cudaError_t rlc_rwkv6_ddlerp_backward(cudaStream_t st, rlc_workspace *ws, const rl_shift_dims *d, int rank,
                                      float *du, float *dstate, float *const dmaa[5], float *ds, float *dw2,
                                      const float *const dx[5], const float *u, const float *state,
                                      const float *const maa[5], const float *s, const float *w2)
{
    ddlerp_args a = {};
    a.R = d->batch * d->seq, a.T = d->seq, a.D = d->dim, a.rank = rank;
    for (int c = 0; c < 5; c++)
        a.dx[c] = dx[c], a.maa[c] = maa[c], a.dmaa[c] = dmaa ? dmaa[c] : nullptr;
    const size_t sm = sizeof(float) * (10 * (size_t)rank + (size_t)a.D);
    cudaError_t e =
        cudaFuncSetAttribute(ddlerp_backward_rows_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    ddlerp_backward_rows_kernel<<<a.R, EW_THREADS, sm, st>>>(a, du, dstate, ds, u, state, s, w2);
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;

    const int ktiles = (rank + DD_KT - 1) / DD_KT, cblocks = (a.D + EW_THREADS - 1) / EW_THREADS;
    if (5 * ktiles > 65535)
        return cudaErrorInvalidValue;
    const int nslots = rl_scratch_slots(a.R, cblocks * 5 * ktiles * 4, 64), rps = (a.R + nslots - 1) / nslots;
    const size_t per_slot = 5 * (size_t)(rank + 1) * a.D;
    float *part = (float *)rlc_ws_get(ws, st, rl_scratch_ddlerp_backward(d, rank)); /* nslots · per_slot floats */
    if (!part)
        return cudaErrorMemoryAllocation;
    ddlerp_backward_params_kernel<<<dim3(cblocks, 5 * ktiles, nslots), EW_THREADS, 0, st>>>(a, u, state, s, part,
                                                                                           rps, ktiles);
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;
    for (int c = 0; c < 5; c++) {
        const float *pc = part + (size_t)c * (rank + 1) * a.D;
        if ((e = sum_slots(st, dw2 + (size_t)c * rank * a.D, pc, nslots, per_slot, (size_t)rank * a.D)) !=
            cudaSuccess)
            return e;
        if ((e = sum_slots(st, a.dmaa[c], pc + (size_t)rank * a.D, nslots, per_slot, (size_t)a.D)) != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

static mix6_args make_mix6(const rl_rwkv6_mix_dims *d)
{
    mix6_args m;
    m.rows = d->rows, m.H = d->heads, m.N = d->head_dim, m.rho = d->heads / d->kv_heads;
    m.D = d->heads * d->head_dim, m.KD = d->kv_heads * d->head_dim, m.q_scale = d->q_scale;
    return m;
}

cudaError_t rlc_rwkv6_mix_forward(cudaStream_t st, const rl_rwkv6_mix_dims *d, float *logw, float *kt, float *vt,
                                  float *qt, const float *k, const float *v, const float *q, const float *dlora,
                                  const float *decay)
{
    const mix6_args m = make_mix6(d);
    mix6_forward_kernel<<<ew_blocks((size_t)m.rows * m.D), EW_THREADS, 0, st>>>(m, logw, kt, vt, qt, k, v, q, dlora,
                                                                                decay);
    return cudaGetLastError();
}

cudaError_t rlc_rwkv6_mix_backward(cudaStream_t st, rlc_workspace *ws, const rl_rwkv6_mix_dims *d, float *dk,
                                   float *dv, float *dq, float *ddlora, float *ddecay, const float *dlogw,
                                   const float *dkt, const float *dvt, const float *dqt, const float *k,
                                   const float *dlora, const float *decay)
{
    const mix6_args m = make_mix6(d);
    mix6_backward_kernel<<<ew_blocks((size_t)m.rows * m.KD), EW_THREADS, 0, st>>>(m, dk, dv, dq, ddlora, dlogw, dkt,
                                                                                  dvt, dqt, k, dlora, decay);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || !ddecay)
        return e;
    const int cblocks = (m.D + EW_THREADS - 1) / EW_THREADS;
    const int nslots = rl_scratch_slots(m.rows, cblocks * 8, 1024), rps = (m.rows + nslots - 1) / nslots;
    float *part = (float *)rlc_ws_get(ws, st, rl_scratch_rwkv6_mix_backward(d)); /* nslots · D floats */
    if (!part)
        return cudaErrorMemoryAllocation;
    mix6_ddecay_kernel<<<dim3(cblocks, nslots), EW_THREADS, 0, st>>>(m, part, dlogw, dkt, k, dlora, decay, rps);
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;
    return sum_slots(st, ddecay, part, nslots, (size_t)m.D, (size_t)m.D);
}

} // extern "C"
