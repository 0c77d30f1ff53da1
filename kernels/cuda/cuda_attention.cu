/* cuda_attention.cu — causal softmax attention with GQA, fp32, tiled FlashAttention-2 style: no
 * seq×seq matrix ever exists, only BR×BC score tiles in shared memory. Math as kernels.h and
 * kernels/cpu/cpu_attention.c:
 *   s_ij = scale·q_i·k_j (j ≤ q_pos + i),  p_ij = exp(s_ij − lse_i),  out_i = Σ_j p_ij v_j,
 *   delta_i = dout_i·out_i (SET),  ds_ij = p_ij (dout_i·v_j − delta_i),
 *   dq_i += scale Σ_j ds_ij k_j,  dk_j += scale Σ_i ds_ij q_i,  dv_j += Σ_i p_ij dout_i  (ACCUMULATED).
 *
 * Thread layout (all kernels): 256 threads as a 16×16 grid, ty = tid/16, tx = tid%16. A tile has
 * BR = 16·TR rows; thread (ty, tx) owns rows ty·TR + a (a < TR) and, of a score tile, the columns
 * tx + 16c (c < TR), and of a head_dim-wide accumulator the dims tx + 16e (e < DMAX/16). The 16
 * threads sharing a row are the 16 lanes of one half-warp, so row max/sum are 4-step xor shuffles.
 * Shared tiles are padded to DMAX+1 / BC+1 floats per row: a warp reading column d of 16 different
 * rows hits 16 different banks.
 *
 * Forward: block per (query tile, head, batch); online softmax over key tiles j0 ≤ the tile's last
 * visible key: m' = max(m, rowmax S), P = exp(S − m'), l ← l·e^{m−m'} + rowsum P, O ← O·e^{m−m'} + P V.
 * Rows with no visible key in a tile (KV cache with q_pos not tile-aligned) keep m, l and O.
 *
 * Backward, deterministic (no atomics), three kernels on the stream:
 *   1. delta_i = dout_i·out_i, a warp per (b, t, h).
 *   2. dK, dV: block per (key tile, KV head g, batch). It loops over the rho query heads of g and all
 *      query tiles at or after the key tile, recomputing P and dS, and keeps dK, dV in registers:
 *      the GQA sum over the heads that share g happens inside one thread, in a fixed order.
 *   3. dQ: block per (query tile, head, batch), recomputing P and dS for key tiles up to the diagonal.
 * (P and dS are computed twice — 7 tile products instead of FA-2's 5 — in exchange for no atomics.)
 * With RADLADS_ATTN_TC=1, head sizes 64 and 128 run both passes (and the forward) on the tensor cores on sm_80/sm_90+
 * (attn_*_tc_kernel); by default they do not: the H100 measured them slower (attn_tc_on).
 * A bf16 forward (rl_attn_dims.bf16: a teacher under autocast) at head sizes 64 and 128 runs FlashAttention-2's
 * register-resident form on bf16 tensor cores (attn_forward_bf16_kernel); other head sizes take the fp32 kernels,
 * unrounded. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdlib.h>

#include "cuda_ops.h"
#include "cuda_mma.cuh"
#include "cuda_tf32.cuh"

namespace {

constexpr int THREADS = 256;

struct attn_args {
    int B, T, H, G, D, rho, KT, P; /* KT: key rows per sequence; P: absolute position of query 0 */
    float scale;
};

__device__ __forceinline__ float half_max(float x)
{
#pragma unroll
    for (int o = 8; o > 0; o >>= 1)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}

__device__ __forceinline__ float half_sum(float x)
{
#pragma unroll
    for (int o = 8; o > 0; o >>= 1)
        x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* tile[r][c] (row stride DP) = src row (r0 + r), dims c < D; rows ≥ nrows and dims ≥ D are 0. */
template <int DMAX>
__device__ __forceinline__ void load_tile(float *tile, int rows, const float *src, size_t ld, int r0, int nrows, int D)
{
    constexpr int DP = DMAX + 1;
    for (int e = threadIdx.x; e < rows * DMAX; e += THREADS) {
        const int r = e / DMAX, c = e % DMAX;
        tile[r * DP + c] = (r0 + r < nrows && c < D) ? src[(size_t)(r0 + r) * ld + c] : 0.0f;
    }
}

/* ---- forward -------------------------------------------------------------------------------------- */

template <int DMAX, int TR>
__global__ void __launch_bounds__(THREADS) attn_forward_kernel(attn_args p, float *out, float *lse, const float *q,
                                                               const float *k, const float *v)
{
    constexpr int BR = 16 * TR, BC = BR, DE = DMAX / 16, DP = DMAX + 1, PP = BC + 1;
    extern __shared__ float sm[];
    float *Qs = sm, *KVs = Qs + BR * DP, *Ps = KVs + BC * DP;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int i0 = blockIdx.x * BR, h = blockIdx.y, b = blockIdx.z, g = h / p.rho;
    const int T = p.T, D = p.D;
    const size_t ldq = (size_t)p.H * D, ldk = (size_t)p.G * D;
    const float *qb = q + ((size_t)b * T * p.H + h) * D;
    const float *kb = k + ((size_t)b * p.KT * p.G + g) * D, *vb = v + ((size_t)b * p.KT * p.G + g) * D;

    load_tile<DMAX>(Qs, BR, qb, ldq, i0, T, D);
    float m[TR], l[TR], o[TR][DE];
#pragma unroll
    for (int a = 0; a < TR; a++) {
        m[a] = -INFINITY, l[a] = 0.0f;
#pragma unroll
        for (int e = 0; e < DE; e++)
            o[a][e] = 0.0f;
    }
    const int last = p.P + min(T, i0 + BR) - 1; /* the last key any row of this tile sees */
    for (int j0 = 0; j0 <= last; j0 += BC) {
        __syncthreads(); /* Q loaded (first tile) / the previous V tile consumed */
        load_tile<DMAX>(KVs, BC, kb, ldk, j0, last + 1, D); /* keys past `last`: unwritten cache rows, maybe NaN */
        __syncthreads();
        float s[TR][TR];
#pragma unroll
        for (int a = 0; a < TR; a++)
#pragma unroll
            for (int c = 0; c < TR; c++)
                s[a][c] = 0.0f;
        for (int d = 0; d < DMAX; d++) {
            float qa[TR], kc[TR];
#pragma unroll
            for (int a = 0; a < TR; a++)
                qa[a] = Qs[(ty * TR + a) * DP + d];
#pragma unroll
            for (int c = 0; c < TR; c++)
                kc[c] = KVs[(tx + 16 * c) * DP + d];
#pragma unroll
            for (int a = 0; a < TR; a++)
#pragma unroll
                for (int c = 0; c < TR; c++)
                    s[a][c] += qa[a] * kc[c];
        }
#pragma unroll
        for (int a = 0; a < TR; a++) {
            const int qi = i0 + ty * TR + a, qabs = p.P + qi;
            float mx = -INFINITY;
#pragma unroll
            for (int c = 0; c < TR; c++) {
                const bool valid = qi < T && j0 + tx + 16 * c <= qabs;
                s[a][c] = valid ? s[a][c] * p.scale : -INFINITY;
                mx = fmaxf(mx, s[a][c]);
            }
            const float mnew = fmaxf(m[a], half_max(mx));
            float corr = 1.0f, rs = 0.0f;
            if (mnew != -INFINITY) { /* else: nothing visible yet, P = 0 and the row keeps its state */
                corr = expf(m[a] - mnew); /* 0 when m = −inf */
#pragma unroll
                for (int c = 0; c < TR; c++) {
                    s[a][c] = s[a][c] == -INFINITY ? 0.0f : expf(s[a][c] - mnew);
                    rs += s[a][c];
                }
            } else {
#pragma unroll
                for (int c = 0; c < TR; c++)
                    s[a][c] = 0.0f;
            }
            rs = half_sum(rs);
            l[a] = l[a] * corr + rs;
            m[a] = mnew;
#pragma unroll
            for (int e = 0; e < DE; e++)
                o[a][e] *= corr;
#pragma unroll
            for (int c = 0; c < TR; c++)
                Ps[(ty * TR + a) * PP + tx + 16 * c] = s[a][c];
        }
        __syncthreads(); /* every thread is done with K; P complete */
        load_tile<DMAX>(KVs, BC, vb, ldk, j0, last + 1, D);
        __syncthreads();
        for (int jj = 0; jj < BC; jj++) {
            float pa[TR];
#pragma unroll
            for (int a = 0; a < TR; a++)
                pa[a] = Ps[(ty * TR + a) * PP + jj];
#pragma unroll
            for (int e = 0; e < DE; e++) {
                const float ve = KVs[jj * DP + tx + 16 * e];
#pragma unroll
                for (int a = 0; a < TR; a++)
                    o[a][e] += pa[a] * ve;
            }
        }
    }
#pragma unroll
    for (int a = 0; a < TR; a++) {
        const int qi = i0 + ty * TR + a;
        if (qi >= T)
            continue;
        const float inv = 1.0f / l[a];
        float *orow = out + ((size_t)b * T * p.H + h) * D + (size_t)qi * ldq;
#pragma unroll
        for (int e = 0; e < DE; e++)
            if (tx + 16 * e < D)
                orow[tx + 16 * e] = o[a][e] * inv;
        if (tx == 0)
            lse[((size_t)b * p.H + h) * T + qi] = m[a] + logf(l[a]);
    }
}

/* ---- forward on the tensor cores ----------------------------------------------------------------------- */
/* The same online softmax with the two products on the tensor cores (cuda_tf32.cuh: 3xTF32, fp32-accurate), for
 * head sizes 64 and 128. Block per (query tile of 64 rows, head, batch), 8 warps. Q (pre-scaled), the K or V tile,
 * the score tile and the output accumulator live in shared memory; per key tile:
 *   S = Q Kᵀ (16 warp tiles) → each row's 4 threads (16 columns each): mask, m' = max(m, rowmax S),
 *   P = exp(S − m') in place, l ← l·e^{m−m'} + rowsum P, their quarter of the O row ×= e^{m−m'} → V over K →
 *   O += P V (4·D/16 warp tiles).
 * Strides D + 8 and BC + 4 floats: multiples of 4 (wmma) whose fragment loads hit 32 different banks. */
constexpr int TC_BR = 64;

template <int D> constexpr size_t attn_tc_floats()
{
    return (size_t)3 * TC_BR * (D + 8) + (size_t)TC_BR * (TC_BR + 4);
}

template <int D>
__global__ void __launch_bounds__(THREADS) attn_forward_tc_kernel(attn_args p, float *out, float *lse,
                                                                  const float *q, const float *k, const float *v)
{
    constexpr int BR = TC_BR, BC = TC_BR, LD = D + 8, LS = BC + 4;
    extern __shared__ __align__(32) float sm_tc[];
    float *Qs = sm_tc, *KVs = Qs + BR * LD, *Os = KVs + BC * LD, *Ss = Os + BR * LD;
    const int tid = threadIdx.x, row = tid / 4, part = tid % 4; /* a row's 4 threads are adjacent lanes */
    const int i0 = blockIdx.x * BR, h = blockIdx.y, b = blockIdx.z, g = h / p.rho;
    const int T = p.T;
    const size_t ldq = (size_t)p.H * D, ldk = (size_t)p.G * D;
    const float *qb = q + ((size_t)b * T * p.H + h) * D;
    const float *kb = k + ((size_t)b * p.KT * p.G + g) * D, *vb = v + ((size_t)b * p.KT * p.G + g) * D;

    for (int e = tid; e < BR * D; e += THREADS) {
        const int r = e / D, c = e % D;
        Qs[r * LD + c] = i0 + r < T ? p.scale * qb[(size_t)(i0 + r) * ldq + c] : 0.0f;
        Os[r * LD + c] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f; /* the row's running max and sum: the same in its 4 threads (the shuffles) */
    const int qi = i0 + row, qabs = p.P + qi;
    const int last = p.P + min(T, i0 + BR) - 1; /* the last key any row of this tile sees */
    /* key rows j0.. of K or V; rows past `last` are 0: no query sees them, and in a KV cache they were never written
     * (NaN there would survive P = 0 in P·V) */
    auto load_kv = [&](const float *src, int j0) {
        for (int e = tid; e < BC * D; e += THREADS) {
            const int r = e / D, c = e % D;
            KVs[r * LD + c] = j0 + r <= last ? src[(size_t)(j0 + r) * ldk + c] : 0.0f;
        }
    };
    for (int j0 = 0; j0 <= last; j0 += BC) {
        __syncthreads(); /* Q, O and the statistics ready (first tile) / the previous V tile consumed */
        load_kv(kb, j0);
        __syncthreads();
        {
            tc_sched sc = tc_start();
            for (int r0 = 0; r0 < BR; r0 += 16)
                for (int c0 = 0; c0 < BC; c0 += 16)
                    if (sc.mine()) tc_tile(Ss, LS, r0, c0, false, tc_p(tc_v(Qs, LD), tc_v(KVs, LD, true), D));
        }
        __syncthreads();
        { /* the row's softmax step; its 4 threads reduce with 2 xor shuffles (they are lanes 4k..4k+3) */
            float *srow = Ss + row * LS + part * 16;
            float mx = -INFINITY;
            for (int c = 0; c < 16; c++) {
                const int j = j0 + part * 16 + c;
                const float x = qi < T && j <= qabs ? srow[c] : -INFINITY;
                srow[c] = x;
                mx = fmaxf(mx, x);
            }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mnew = fmaxf(m, mx);
            float corr = 1.0f, rs = 0.0f;
            for (int c = 0; c < 16; c++) {
                const float e = mnew == -INFINITY || srow[c] == -INFINITY ? 0.0f : expf(srow[c] - mnew);
                srow[c] = e;
                rs += e;
            }
            if (mnew != -INFINITY)
                corr = expf(m - mnew); /* 0 when m = −inf */
            rs += __shfl_xor_sync(0xffffffffu, rs, 1);
            rs += __shfl_xor_sync(0xffffffffu, rs, 2);
            float *orow = Os + row * LD + part * (D / 4);
            if (corr != 1.0f)
                for (int c = 0; c < D / 4; c++)
                    orow[c] *= corr;
            m = mnew, l = l * corr + rs;
        }
        __syncthreads(); /* P and the rescaled O complete; K consumed */
        load_kv(vb, j0);
        __syncthreads();
        {
            tc_sched sc = tc_start();
            for (int r0 = 0; r0 < BR; r0 += 16)
                for (int c0 = 0; c0 < D; c0 += 16)
                    if (sc.mine()) tc_tile(Os, LD, r0, c0, true, tc_p(tc_v(Ss, LS), tc_v(KVs, LD), BC));
        }
    }
    __syncthreads();
    if (qi < T) {
        const float inv = 1.0f / l;
        float *orow = out + ((size_t)b * T * p.H + h) * D + (size_t)qi * ldq;
        for (int c = part; c < D; c += 4)
            orow[c] = Os[row * LD + c] * inv;
        if (part == 0)
            lse[((size_t)b * p.H + h) * T + qi] = m + logf(l);
    }
}

/* ---- forward in bf16 on the tensor cores (rl_attn_dims.bf16) ----------------------------------------------
 * FlashAttention-2's forward with every operand in registers (cuda_mma.cuh: mma.sync m16n8k16, bf16 in, fp32
 * accumulate), for head sizes 64 and 128. Block per (query tile of 64 rows, head, batch), 4 warps; warp w owns query
 * rows 16w..16w+15 of the tile, lane (g, t) rows g and g + 8 of those. Q (unscaled, bf16) stays in registers as A
 * fragments for the whole block; per key tile of 64 keys the block stages K (bf16, row-major, [key][D + 8]) and V
 * (bf16, transposed, [D][64 + 8]) in shared memory, then each warp alone:
 *   S = Q Kᵀ (8 key tiles × D/16 steps, fp32 in registers) → scaled into the log2 domain, masked, row max over the
 *   row's 4 lanes (2 xor shuffles), P = 2^(S − m') in place, l (this lane's part of the row sum) and O rescaled by
 *   2^(m − m') → O += P V with P's registers reused as A fragments (rounded to bf16), V from the transposed tile.
 * The 4 lanes' l are summed at the end; lse = ln 2 · (m + log2 l). Pitches D + 8 and 72 bf16 make a warp's 32-bit
 * fragment loads hit 32 different banks (4g + t); V's transposed stores are arranged the same way (lane % 8 picks the
 * column, lane / 8 the key pair). Query tiles run longest (last) first. Shared memory 35 KiB (D = 128). */
constexpr int BF_BR = 64, BF_BC = 64, BF_THREADS = 128, BF_VP = BF_BC + 8;
constexpr float BF_LOG2E = 1.4426950408889634f, BF_LN2 = 0.6931471805599453f;

template <int D> constexpr size_t attn_bf16_bytes()
{
    return sizeof(uint16_t) * ((size_t)BF_BC * (D + 8) + (size_t)D * BF_VP);
}

template <int D>
__global__ void __launch_bounds__(BF_THREADS) attn_forward_bf16_kernel(attn_args p, float *out, float *lse,
                                                                       const float *q, const float *k, const float *v)
{
    constexpr int BC = BF_BC, KP = D + 8, VP = BF_VP, NT = BC / 8, DT = D / 8, KS = D / 16;
    extern __shared__ __align__(16) uint16_t sm_bf[];
    uint16_t *Ks = sm_bf, *Vt = Ks + BC * KP;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * BF_BR, h = blockIdx.y, b = blockIdx.z, kvh = h / p.rho;
    const int T = p.T;
    const size_t ldq = (size_t)p.H * D, ldk = (size_t)p.G * D;
    const float *qb = q + ((size_t)b * T * p.H + h) * D;
    const float *kb = k + ((size_t)b * p.KT * p.G + kvh) * D, *vb = v + ((size_t)b * p.KT * p.G + kvh) * D;
    const int rows[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8}; /* this lane's two query rows */

    uint32_t qa[KS][4]; /* A fragments of Q: rows g, g + 8; columns 16ks + 2t.., + 8 */
#pragma unroll
    for (int ks = 0; ks < KS; ks++)
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int r = rows[u & 1], c = ks * 16 + 2 * t + (u >> 1) * 8;
            qa[ks][u] = 0;
            if (r < T) {
                const float2 f = *reinterpret_cast<const float2 *>(qb + (size_t)r * ldq + c);
                qa[ks][u] = pack_bf16x2(f.x, f.y);
            }
        }
    float o[DT][4];
#pragma unroll
    for (int n = 0; n < DT; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}; /* log2 domain; l: this lane's part */
    const float c2 = p.scale * BF_LOG2E;
    const int last = p.P + min(T, i0 + BF_BR) - 1; /* the last key any row of this tile sees */

    for (int j0 = 0; j0 <= last; j0 += BC) {
        __syncthreads(); /* the previous tiles are consumed */
        /* K rows past `last` (and V's) are 0: no query sees them, and a KV cache never wrote them */
        for (int e = tid; e < BC * D / 2; e += BF_THREADS) {
            const int r = e / (D / 2), c = 2 * (e % (D / 2));
            uint32_t w = 0;
            if (j0 + r <= last) {
                const float2 f = *reinterpret_cast<const float2 *>(kb + (size_t)(j0 + r) * ldk + c);
                w = pack_bf16x2(f.x, f.y);
            }
            *reinterpret_cast<uint32_t *>(Ks + r * KP + c) = w;
        }
        for (int e = tid; e < BC / 2 * D; e += BF_THREADS) {
            const int blk = e / 32, c = (blk % (D / 8)) * 8 + e % 8, kp = (blk / (D / 8)) * 4 + e / 8 % 4;
            const int r = 2 * kp;
            const float v0 = j0 + r <= last ? vb[(size_t)(j0 + r) * ldk + c] : 0.0f;
            const float v1 = j0 + r + 1 <= last ? vb[(size_t)(j0 + r + 1) * ldk + c] : 0.0f;
            *reinterpret_cast<uint32_t *>(Vt + c * VP + r) = pack_bf16x2(v0, v1);
        }
        __syncthreads();

        float s[NT][4];
#pragma unroll
        for (int n = 0; n < NT; n++)
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KS; ks++)
#pragma unroll
            for (int n = 0; n < NT; n++) {
                const uint16_t *kr = Ks + (n * 8 + g) * KP + ks * 16 + 2 * t;
                const uint32_t bf[2] = {*reinterpret_cast<const uint32_t *>(kr),
                                        *reinterpret_cast<const uint32_t *>(kr + 8)};
                mma_bf16_16816(s[n], qa[ks], bf);
            }

        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const int r = rows[u >> 1], j = j0 + n * 8 + 2 * t + (u & 1);
                const float x = r < T && j <= p.P + r ? s[n][u] * c2 : -INFINITY;
                s[n][u] = x;
                mx[u >> 1] = fmaxf(mx[u >> 1], x);
            }
        float corr[2];
#pragma unroll
        for (int a = 0; a < 2; a++) {
            mx[a] = fmaxf(mx[a], __shfl_xor_sync(0xffffffffu, mx[a], 1));
            mx[a] = fmaxf(mx[a], __shfl_xor_sync(0xffffffffu, mx[a], 2));
            const float mn = fmaxf(m[a], mx[a]);
            corr[a] = mn == -INFINITY ? 1.0f : exp2f(m[a] - mn); /* 0 when m = −inf */
            m[a] = mn;
            l[a] *= corr[a];
        }
#pragma unroll
        for (int n = 0; n < NT; n++)
#pragma unroll
            for (int u = 0; u < 4; u++) {
                const float x = s[n][u];
                const float e = x == -INFINITY ? 0.0f : exp2f(x - m[u >> 1]);
                s[n][u] = e;
                l[u >> 1] += e;
            }
#pragma unroll
        for (int n = 0; n < DT; n++)
            o[n][0] *= corr[0], o[n][1] *= corr[0], o[n][2] *= corr[1], o[n][3] *= corr[1];

#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
            const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                                    pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int n = 0; n < DT; n++) {
                const uint16_t *vr = Vt + (n * 8 + g) * VP + kk * 16 + 2 * t;
                const uint32_t bf[2] = {*reinterpret_cast<const uint32_t *>(vr),
                                        *reinterpret_cast<const uint32_t *>(vr + 8)};
                mma_bf16_16816(o[n], pa, bf);
            }
        }
    }

#pragma unroll
    for (int a = 0; a < 2; a++) {
        l[a] += __shfl_xor_sync(0xffffffffu, l[a], 1);
        l[a] += __shfl_xor_sync(0xffffffffu, l[a], 2);
        const int r = rows[a];
        if (r >= T)
            continue;
        const float inv = 1.0f / l[a];
        float *orow = out + ((size_t)b * T * p.H + h) * D + (size_t)r * ldq;
#pragma unroll
        for (int n = 0; n < DT; n++)
            *reinterpret_cast<float2 *>(orow + n * 8 + 2 * t) = make_float2(o[n][2 * a] * inv, o[n][2 * a + 1] * inv);
        if (t == 0)
            lse[((size_t)b * p.H + h) * T + r] = BF_LN2 * (m[a] + log2f(l[a]));
    }
}

/* ---- backward ------------------------------------------------------------------------------------- */

/* delta[b, h, i] = dout_i · out_i: one warp per (b, i, h) row. */
__global__ void attn_delta_kernel(attn_args p, float *delta, const float *dout, const float *out)
{
    const long long w = (long long)blockIdx.x * (THREADS / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (w >= (long long)p.B * p.T * p.H)
        return;
    const int h = (int)(w % p.H), i = (int)(w / p.H % p.T), b = (int)(w / p.H / p.T);
    const size_t o = (size_t)w * p.D; /* rows of [B, T, H, D] in (b, i, h) order */
    float s = 0.0f;
    for (int d = lane; d < p.D; d += 32)
        s += dout[o + d] * out[o + d];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0)
        delta[((size_t)b * p.H + h) * p.T + i] = s;
}

/* Score and dP tile for rows R (stride DP) against columns C: s[a][c] = R_ra · C_cc,
 * dp[a][c] = R2_ra · C2_cc, with ra = ty·TR + a, cc = tx + 16c. */
template <int DMAX, int TR>
__device__ __forceinline__ void two_products(float (&s)[TR][TR], float (&dp)[TR][TR], const float *R, const float *C,
                                             const float *R2, const float *C2, int ty, int tx)
{
    constexpr int DP = DMAX + 1;
#pragma unroll
    for (int a = 0; a < TR; a++)
#pragma unroll
        for (int c = 0; c < TR; c++)
            s[a][c] = 0.0f, dp[a][c] = 0.0f;
    for (int d = 0; d < DMAX; d++) {
        float ra[TR], r2[TR], cc[TR], c2[TR];
#pragma unroll
        for (int a = 0; a < TR; a++)
            ra[a] = R[(ty * TR + a) * DP + d], r2[a] = R2[(ty * TR + a) * DP + d];
#pragma unroll
        for (int c = 0; c < TR; c++)
            cc[c] = C[(tx + 16 * c) * DP + d], c2[c] = C2[(tx + 16 * c) * DP + d];
#pragma unroll
        for (int a = 0; a < TR; a++)
#pragma unroll
            for (int c = 0; c < TR; c++) {
                s[a][c] += ra[a] * cc[c];
                dp[a][c] += r2[a] * c2[c];
            }
    }
}

/* dK, dV for key tile j0 of KV head g: rows of the tiles here are KEYS (ty·TR + a), columns QUERIES. */
template <int DMAX, int TR>
__global__ void __launch_bounds__(THREADS) attn_dkv_kernel(attn_args p, float *dk, float *dv, const float *dout,
                                                           const float *lse, const float *delta, const float *q,
                                                           const float *k, const float *v)
{
    constexpr int BR = 16 * TR, BC = BR, DE = DMAX / 16, DP = DMAX + 1, PP = BR + 1;
    extern __shared__ float sm[];
    float *Ks = sm, *Vs = Ks + BC * DP, *Qs = Vs + BC * DP, *dOs = Qs + BR * DP;
    float *Pt = dOs + BR * DP, *dSt = Pt + BC * PP, *ls = dSt + BC * PP, *dl = ls + BR;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int j0 = blockIdx.x * BC, g = blockIdx.y, b = blockIdx.z, T = p.T, D = p.D;
    const size_t ldq = (size_t)p.H * D, ldk = (size_t)p.G * D;
    const float *kb = k + ((size_t)b * T * p.G + g) * D, *vb = v + ((size_t)b * T * p.G + g) * D;

    load_tile<DMAX>(Ks, BC, kb, ldk, j0, T, D);
    load_tile<DMAX>(Vs, BC, vb, ldk, j0, T, D);
    float dK[TR][DE], dV[TR][DE];
#pragma unroll
    for (int a = 0; a < TR; a++)
#pragma unroll
        for (int e = 0; e < DE; e++)
            dK[a][e] = 0.0f, dV[a][e] = 0.0f;

    for (int h = g * p.rho; h < (g + 1) * p.rho; h++) {
        const float *qb = q + ((size_t)b * T * p.H + h) * D, *dob = dout + ((size_t)b * T * p.H + h) * D;
        const float *lh = lse + ((size_t)b * p.H + h) * T, *dh = delta + ((size_t)b * p.H + h) * T;
        for (int i0 = j0; i0 < T; i0 += BR) { /* BR == BC: query tiles from the diagonal on */
            __syncthreads(); /* the previous query tile is consumed */
            load_tile<DMAX>(Qs, BR, qb, ldq, i0, T, D);
            load_tile<DMAX>(dOs, BR, dob, ldq, i0, T, D);
            for (int r = tid; r < BR; r += THREADS) {
                ls[r] = i0 + r < T ? lh[i0 + r] : 0.0f;
                dl[r] = i0 + r < T ? dh[i0 + r] : 0.0f;
            }
            __syncthreads();
            float s[TR][TR], dp[TR][TR];
            two_products<DMAX, TR>(s, dp, Ks, Qs, Vs, dOs, ty, tx);
#pragma unroll
            for (int a = 0; a < TR; a++)
#pragma unroll
                for (int c = 0; c < TR; c++) {
                    const int kr = ty * TR + a, qc = tx + 16 * c, i = i0 + qc, j = j0 + kr;
                    const bool valid = i < T && j <= i;
                    const float pv = valid ? expf(s[a][c] * p.scale - ls[qc]) : 0.0f;
                    Pt[kr * PP + qc] = pv;
                    dSt[kr * PP + qc] = pv * (dp[a][c] - dl[qc]);
                }
            __syncthreads();
            for (int ii = 0; ii < BR; ii++) {
                float pa[TR], sa[TR];
#pragma unroll
                for (int a = 0; a < TR; a++)
                    pa[a] = Pt[(ty * TR + a) * PP + ii], sa[a] = dSt[(ty * TR + a) * PP + ii];
#pragma unroll
                for (int e = 0; e < DE; e++) {
                    const float dov = dOs[ii * DP + tx + 16 * e], qv = Qs[ii * DP + tx + 16 * e];
#pragma unroll
                    for (int a = 0; a < TR; a++) {
                        dV[a][e] += pa[a] * dov;
                        dK[a][e] += sa[a] * qv;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int a = 0; a < TR; a++) {
        const int j = j0 + ty * TR + a;
        if (j >= T)
            continue;
        const size_t ro = ((size_t)b * T * p.G + g) * D + (size_t)j * ldk;
#pragma unroll
        for (int e = 0; e < DE; e++)
            if (tx + 16 * e < D) {
                dk[ro + tx + 16 * e] += p.scale * dK[a][e];
                dv[ro + tx + 16 * e] += dV[a][e];
            }
    }
}

/* dQ for query tile i0 of head h: rows are QUERIES, columns KEYS. */
template <int DMAX, int TR>
__global__ void __launch_bounds__(THREADS) attn_dq_kernel(attn_args p, float *dq, const float *dout,
                                                          const float *lse, const float *delta, const float *q,
                                                          const float *k, const float *v)
{
    constexpr int BR = 16 * TR, BC = BR, DE = DMAX / 16, DP = DMAX + 1, PP = BC + 1;
    extern __shared__ float sm[];
    float *Qs = sm, *dOs = Qs + BR * DP, *Ks = dOs + BR * DP, *Vs = Ks + BC * DP;
    float *dS = Vs + BC * DP, *ls = dS + BR * PP, *dl = ls + BR;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int i0 = blockIdx.x * BR, h = blockIdx.y, b = blockIdx.z, g = h / p.rho, T = p.T, D = p.D;
    const size_t ldq = (size_t)p.H * D, ldk = (size_t)p.G * D;
    const float *qb = q + ((size_t)b * T * p.H + h) * D, *dob = dout + ((size_t)b * T * p.H + h) * D;
    const float *kb = k + ((size_t)b * T * p.G + g) * D, *vb = v + ((size_t)b * T * p.G + g) * D;
    const float *lh = lse + ((size_t)b * p.H + h) * T, *dh = delta + ((size_t)b * p.H + h) * T;

    load_tile<DMAX>(Qs, BR, qb, ldq, i0, T, D);
    load_tile<DMAX>(dOs, BR, dob, ldq, i0, T, D);
    for (int r = tid; r < BR; r += THREADS) {
        ls[r] = i0 + r < T ? lh[i0 + r] : 0.0f;
        dl[r] = i0 + r < T ? dh[i0 + r] : 0.0f;
    }
    float dQ[TR][DE];
#pragma unroll
    for (int a = 0; a < TR; a++)
#pragma unroll
        for (int e = 0; e < DE; e++)
            dQ[a][e] = 0.0f;
    const int last = min(T, i0 + BR) - 1;
    for (int j0 = 0; j0 <= last; j0 += BC) {
        __syncthreads(); /* Q, dO loaded (first) / the previous K tile consumed */
        load_tile<DMAX>(Ks, BC, kb, ldk, j0, T, D);
        load_tile<DMAX>(Vs, BC, vb, ldk, j0, T, D);
        __syncthreads();
        float s[TR][TR], dp[TR][TR];
        two_products<DMAX, TR>(s, dp, Qs, Ks, dOs, Vs, ty, tx);
#pragma unroll
        for (int a = 0; a < TR; a++)
#pragma unroll
            for (int c = 0; c < TR; c++) {
                const int qr = ty * TR + a, kc = tx + 16 * c, i = i0 + qr, j = j0 + kc;
                const bool valid = i < T && j <= i;
                const float pv = valid ? expf(s[a][c] * p.scale - ls[qr]) : 0.0f;
                dS[qr * PP + kc] = pv * (dp[a][c] - dl[qr]);
            }
        __syncthreads();
        for (int jj = 0; jj < BC; jj++) {
            float sa[TR];
#pragma unroll
            for (int a = 0; a < TR; a++)
                sa[a] = dS[(ty * TR + a) * PP + jj];
#pragma unroll
            for (int e = 0; e < DE; e++) {
                const float kv = Ks[jj * DP + tx + 16 * e];
#pragma unroll
                for (int a = 0; a < TR; a++)
                    dQ[a][e] += sa[a] * kv;
            }
        }
    }
#pragma unroll
    for (int a = 0; a < TR; a++) {
        const int i = i0 + ty * TR + a;
        if (i >= T)
            continue;
        float *row = dq + ((size_t)b * T * p.H + h) * D + (size_t)i * ldq;
#pragma unroll
        for (int e = 0; e < DE; e++)
            if (tx + 16 * e < D)
                row[tx + 16 * e] += p.scale * dQ[a][e];
    }
}

/* ---- backward on the tensor cores ---------------------------------------------------------------------- */
/* The same two passes as attn_dkv_kernel and attn_dq_kernel (deterministic, no atomics) with every tile product on
 * the tensor cores in 3xTF32, for head sizes 64 and 128; 8 warps per block, the products cut into 16 × 16 warp
 * tiles round robin (cuda_tf32.cuh). Query tiles of 64 rows; key tiles of 64 rows for head size 64 and of 32 for
 * 128, so that each block's tiles fit in at most 158 KB of shared memory (sm_80's 163 KB too). The score-like tiles
 * hold their products, then in place P and dS. Strides D + 8 and BK/BQ + 4 floats, as the forward's.
 *   dK, dV: block per (key tile, KV head g, batch), for each of g's rho heads and each query tile that reaches the
 *     key tile: Sᵀ = K Qᵀ, dPᵀ = V dOᵀ → Pᵀ = exp(scale·Sᵀ − lse), dSᵀ = Pᵀ ⊙ (dPᵀ − delta) → dV += Pᵀ dO,
 *     dK += dSᵀ Q (accumulators in shared memory), then dk += scale·dK, dv += dV.
 *   dQ: block per (query tile, head, batch), for each key tile up to the diagonal: S = Q Kᵀ, dP = dO Vᵀ → dS →
 *     dQ += dS K, then dq += scale·dQ. */
constexpr int TCB_BQ = 64;
template <int D> constexpr int TCB_BK = D <= 64 ? 64 : 32;

template <int D> constexpr size_t attn_tc_dkv_floats()
{
    constexpr int BK = TCB_BK<D>, LD = D + 8;
    return (size_t)4 * BK * LD + (size_t)2 * TCB_BQ * LD + (size_t)2 * BK * (TCB_BQ + 4) + 2 * TCB_BQ;
}
template <int D> constexpr size_t attn_tc_dq_floats()
{
    constexpr int BK = TCB_BK<D>, LD = D + 8;
    return (size_t)3 * TCB_BQ * LD + (size_t)2 * BK * LD + (size_t)2 * TCB_BQ * (BK + 4) + 2 * TCB_BQ;
}

/* rows r0.. of a [T, ld] tensor into a [rows][LD] tile; rows at or past T are 0 */
template <int D>
__device__ __forceinline__ void tc_load_rows(float *tile, int rows, const float *src, size_t ld, int r0, int T)
{
    constexpr int LD = D + 8;
    for (int e = threadIdx.x; e < rows * D; e += THREADS) {
        const int r = e / D, c = e % D;
        tile[r * LD + c] = r0 + r < T ? src[(size_t)(r0 + r) * ld + c] : 0.0f;
    }
}

/* lse and delta of query rows i0.. (0 past T) */
__device__ __forceinline__ void tc_load_stats(float *ls, float *dl, const float *lh, const float *dh, int i0, int T)
{
    for (int r = threadIdx.x; r < TCB_BQ; r += THREADS) {
        ls[r] = i0 + r < T ? lh[i0 + r] : 0.0f;
        dl[r] = i0 + r < T ? dh[i0 + r] : 0.0f;
    }
}

template <int D>
__global__ void __launch_bounds__(THREADS) attn_dkv_tc_kernel(attn_args p, float *dk, float *dv, const float *dout,
                                                              const float *lse, const float *delta, const float *q,
                                                              const float *k, const float *v)
{
    constexpr int BQ = TCB_BQ, BK = TCB_BK<D>, LD = D + 8, LS = BQ + 4;
    extern __shared__ __align__(32) float sm_tc[];
    float *Ks = sm_tc, *Vs = Ks + BK * LD, *dKs = Vs + BK * LD, *dVs = dKs + BK * LD, *Qs = dVs + BK * LD;
    float *dOs = Qs + BQ * LD, *Pt = dOs + BQ * LD, *dSt = Pt + BK * LS, *ls = dSt + BK * LS, *dl = ls + BQ;
    const int tid = threadIdx.x, j0 = blockIdx.x * BK, g = blockIdx.y, b = blockIdx.z, T = p.T;
    const size_t ldq = (size_t)p.H * D, ldk = (size_t)p.G * D;
    const float *kb = k + ((size_t)b * T * p.G + g) * D, *vb = v + ((size_t)b * T * p.G + g) * D;

    tc_load_rows<D>(Ks, BK, kb, ldk, j0, T);
    tc_load_rows<D>(Vs, BK, vb, ldk, j0, T);
    for (int e = tid; e < BK * D; e += THREADS)
        dKs[(e / D) * LD + e % D] = dVs[(e / D) * LD + e % D] = 0.0f;
    for (int h = g * p.rho; h < (g + 1) * p.rho; h++) {
        const float *qb = q + ((size_t)b * T * p.H + h) * D, *dob = dout + ((size_t)b * T * p.H + h) * D;
        const float *lh = lse + ((size_t)b * p.H + h) * T, *dh = delta + ((size_t)b * p.H + h) * T;
        for (int i0 = j0 / BQ * BQ; i0 < T; i0 += BQ) { /* the query tiles holding a row i ≥ j0 */
            __syncthreads(); /* the previous query tile consumed (K, V and the zeroed accumulators ready) */
            tc_load_rows<D>(Qs, BQ, qb, ldq, i0, T);
            tc_load_rows<D>(dOs, BQ, dob, ldq, i0, T);
            tc_load_stats(ls, dl, lh, dh, i0, T);
            __syncthreads();
            {
                tc_sched sc = tc_start();
                for (int r0 = 0; r0 < BK; r0 += 16)
                    for (int c0 = 0; c0 < BQ; c0 += 16) {
                        if (sc.mine()) tc_tile(Pt, LS, r0, c0, false, tc_p(tc_v(Ks, LD), tc_v(Qs, LD, true), D));
                        if (sc.mine()) tc_tile(dSt, LS, r0, c0, false, tc_p(tc_v(Vs, LD), tc_v(dOs, LD, true), D));
                    }
            }
            __syncthreads();
            for (int e = tid; e < BK * BQ; e += THREADS) {
                const int kr = e / BQ, qc = e % BQ, i = i0 + qc, j = j0 + kr, x = kr * LS + qc;
                const float pv = i < T && j <= i ? expf(Pt[x] * p.scale - ls[qc]) : 0.0f;
                Pt[x] = pv;
                dSt[x] = pv * (dSt[x] - dl[qc]);
            }
            __syncthreads();
            {
                tc_sched sc = tc_start();
                for (int r0 = 0; r0 < BK; r0 += 16)
                    for (int c0 = 0; c0 < D; c0 += 16) {
                        if (sc.mine()) tc_tile(dVs, LD, r0, c0, true, tc_p(tc_v(Pt, LS), tc_v(dOs, LD), BQ));
                        if (sc.mine()) tc_tile(dKs, LD, r0, c0, true, tc_p(tc_v(dSt, LS), tc_v(Qs, LD), BQ));
                    }
            }
        }
    }
    __syncthreads();
    for (int e = tid; e < BK * D; e += THREADS) {
        const int r = e / D, c = e % D, j = j0 + r;
        if (j < T) {
            const size_t o = (size_t)j * ldk + c;
            dk[((size_t)b * T * p.G + g) * D + o] += p.scale * dKs[r * LD + c];
            dv[((size_t)b * T * p.G + g) * D + o] += dVs[r * LD + c];
        }
    }
}

template <int D>
__global__ void __launch_bounds__(THREADS) attn_dq_tc_kernel(attn_args p, float *dq, const float *dout,
                                                             const float *lse, const float *delta, const float *q,
                                                             const float *k, const float *v)
{
    constexpr int BQ = TCB_BQ, BK = TCB_BK<D>, LD = D + 8, LS = BK + 4;
    extern __shared__ __align__(32) float sm_tc[];
    float *Qs = sm_tc, *dOs = Qs + BQ * LD, *dQs = dOs + BQ * LD, *Ks = dQs + BQ * LD, *Vs = Ks + BK * LD;
    float *S = Vs + BK * LD, *dS = S + BQ * LS, *ls = dS + BQ * LS, *dl = ls + BQ;
    const int tid = threadIdx.x, i0 = blockIdx.x * BQ, h = blockIdx.y, b = blockIdx.z, g = h / p.rho, T = p.T;
    const size_t ldq = (size_t)p.H * D, ldk = (size_t)p.G * D;
    const float *qb = q + ((size_t)b * T * p.H + h) * D, *dob = dout + ((size_t)b * T * p.H + h) * D;
    const float *kb = k + ((size_t)b * T * p.G + g) * D, *vb = v + ((size_t)b * T * p.G + g) * D;

    tc_load_rows<D>(Qs, BQ, qb, ldq, i0, T);
    tc_load_rows<D>(dOs, BQ, dob, ldq, i0, T);
    tc_load_stats(ls, dl, lse + ((size_t)b * p.H + h) * T, delta + ((size_t)b * p.H + h) * T, i0, T);
    for (int e = tid; e < BQ * D; e += THREADS)
        dQs[(e / D) * LD + e % D] = 0.0f;
    const int last = min(T, i0 + BQ) - 1; /* the last key a row of this tile sees */
    for (int j0 = 0; j0 <= last; j0 += BK) {
        __syncthreads(); /* Q, dO and the statistics loaded (first) / the previous K tile consumed */
        tc_load_rows<D>(Ks, BK, kb, ldk, j0, T);
        tc_load_rows<D>(Vs, BK, vb, ldk, j0, T);
        __syncthreads();
        {
            tc_sched sc = tc_start();
            for (int r0 = 0; r0 < BQ; r0 += 16)
                for (int c0 = 0; c0 < BK; c0 += 16) {
                    if (sc.mine()) tc_tile(S, LS, r0, c0, false, tc_p(tc_v(Qs, LD), tc_v(Ks, LD, true), D));
                    if (sc.mine()) tc_tile(dS, LS, r0, c0, false, tc_p(tc_v(dOs, LD), tc_v(Vs, LD, true), D));
                }
        }
        __syncthreads();
        for (int e = tid; e < BQ * BK; e += THREADS) {
            const int qr = e / BK, kc = e % BK, i = i0 + qr, j = j0 + kc, x = qr * LS + kc;
            const float pv = i < T && j <= i ? expf(S[x] * p.scale - ls[qr]) : 0.0f;
            dS[x] = pv * (dS[x] - dl[qr]);
        }
        __syncthreads();
        {
            tc_sched sc = tc_start();
            for (int r0 = 0; r0 < BQ; r0 += 16)
                for (int c0 = 0; c0 < D; c0 += 16)
                    if (sc.mine()) tc_tile(dQs, LD, r0, c0, true, tc_p(tc_v(dS, LS), tc_v(Ks, LD), BK));
        }
    }
    __syncthreads();
    for (int e = tid; e < BQ * D; e += THREADS) {
        const int r = e / D, c = e % D, i = i0 + r;
        if (i < T)
            dq[((size_t)b * T * p.H + h) * D + (size_t)i * ldq + c] += p.scale * dQs[r * LD + c];
    }
}

/* ---- launchers ------------------------------------------------------------------------------------ */
/* tests/gpu/attn_cuda_logic_check.cpp compiles the kernels above on the host and leaves these out. */
#ifdef RLC_ATTN_HOST_EMULATION
} // namespace
#else

constexpr int FWD_TR = 4;
template <int DMAX> constexpr int bwd_tr() { return DMAX >= 128 ? 2 : 4; }

template <int DMAX>
cudaError_t forward_dmax(cudaStream_t st, const attn_args &p, float *out, float *lse, const float *q, const float *k,
                         const float *v)
{
    constexpr int BR = 16 * FWD_TR, DP = DMAX + 1;
    const size_t sm = sizeof(float) * ((size_t)2 * BR * DP + (size_t)BR * (BR + 1));
    auto kern = attn_forward_kernel<DMAX, FWD_TR>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    dim3 grid((p.T + BR - 1) / BR, p.H, p.B);
    kern<<<grid, THREADS, sm, st>>>(p, out, lse, q, k, v);
    return cudaGetLastError();
}

template <int DMAX>
cudaError_t backward_dmax(cudaStream_t st, const attn_args &p, float *dq, float *dk, float *dv, const float *delta,
                          const float *dout, const float *lse, const float *q, const float *k, const float *v)
{
    constexpr int TR = bwd_tr<DMAX>(), BR = 16 * TR, DP = DMAX + 1, PP = BR + 1;
    const size_t sm_kv = sizeof(float) * ((size_t)4 * BR * DP + (size_t)2 * BR * PP + 2 * BR);
    const size_t sm_q = sizeof(float) * ((size_t)4 * BR * DP + (size_t)BR * PP + 2 * BR);
    auto kkv = attn_dkv_kernel<DMAX, TR>;
    auto kq = attn_dq_kernel<DMAX, TR>;
    cudaError_t e = cudaFuncSetAttribute(kkv, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm_kv);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(kq, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm_q);
    if (e != cudaSuccess)
        return e;
    const int tiles = (p.T + BR - 1) / BR;
    kkv<<<dim3(tiles, p.G, p.B), THREADS, sm_kv, st>>>(p, dk, dv, dout, lse, delta, q, k, v);
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;
    kq<<<dim3(tiles, p.H, p.B), THREADS, sm_q, st>>>(p, dq, dout, lse, delta, q, k, v);
    return cudaGetLastError();
}

template <int D>
cudaError_t forward_tc(cudaStream_t st, const attn_args &p, float *out, float *lse, const float *q, const float *k,
                       const float *v)
{
    const size_t sm = sizeof(float) * attn_tc_floats<D>();
    auto kern = attn_forward_tc_kernel<D>;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    kern<<<dim3((p.T + TC_BR - 1) / TC_BR, p.H, p.B), THREADS, sm, st>>>(p, out, lse, q, k, v);
    return cudaGetLastError();
}

template <int D>
cudaError_t forward_bf16(cudaStream_t st, const attn_args &p, float *out, float *lse, const float *q, const float *k,
                         const float *v)
{
    const size_t sm = attn_bf16_bytes<D>(); /* under the 48 KB a launch may take without asking */
    attn_forward_bf16_kernel<D><<<dim3((p.T + BF_BR - 1) / BF_BR, p.H, p.B), BF_THREADS, sm, st>>>(p, out, lse, q, k,
                                                                                                 v);
    return cudaGetLastError();
}

template <int D> constexpr size_t attn_tc_bwd_bytes()
{
    return sizeof(float) * (attn_tc_dkv_floats<D>() > attn_tc_dq_floats<D>() ? attn_tc_dkv_floats<D>()
                                                                               : attn_tc_dq_floats<D>());
}

template <int D>
cudaError_t backward_tc(cudaStream_t st, const attn_args &p, float *dq, float *dk, float *dv, const float *delta,
                        const float *dout, const float *lse, const float *q, const float *k, const float *v)
{
    const size_t sm_kv = sizeof(float) * attn_tc_dkv_floats<D>(), sm_q = sizeof(float) * attn_tc_dq_floats<D>();
    auto kkv = attn_dkv_tc_kernel<D>;
    auto kq = attn_dq_tc_kernel<D>;
    cudaError_t e = cudaFuncSetAttribute(kkv, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm_kv);
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(kq, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm_q);
    if (e != cudaSuccess)
        return e;
    constexpr int BK = TCB_BK<D>;
    kkv<<<dim3((p.T + BK - 1) / BK, p.G, p.B), THREADS, sm_kv, st>>>(p, dk, dv, dout, lse, delta, q, k, v);
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;
    kq<<<dim3((p.T + TCB_BQ - 1) / TCB_BQ, p.H, p.B), THREADS, sm_q, st>>>(p, dq, dout, lse, delta, q, k, v);
    return cudaGetLastError();
}

/* RADLADS_ATTN_TC=1: head sizes 64 and 128 run the tensor-core forward and backward; unset or 0: the CUDA-core
 * ones, which the H100 measured faster (B1 T4096 H32/8 D128: forward 6.1 vs 14.9 ms, backward 30.2 vs 48.8 ms,
 * bench/RESULTS.md). tests/gpu/run.sh checks and times both. */
bool attn_tc_on()
{
    static const int allowed[] = {0, 1};
    static const int on = rlc_env_knob("RADLADS_ATTN_TC", allowed, 2, 0);
    return on != 0;
}

/* rl_attn_dims.bf16 at head sizes 64 and 128: the bf16 tensor-core forward unless RADLADS_ATTN_BF16=0, which keeps
 * the fp32 kernels (operands unrounded: within bf16 rounding of the CPU backend's bf16 result; a timing peer). */
bool attn_bf16_on()
{
    static const int allowed[] = {0, 1};
    static const int on = rlc_env_knob("RADLADS_ATTN_BF16", allowed, 2, 1);
    return on != 0;
}

bool make_args(const rl_attn_dims *d, attn_args *p)
{
    if (d->batch <= 0 || d->seq <= 0 || d->heads <= 0 || d->kv_heads <= 0 || d->heads % d->kv_heads ||
        d->head_dim <= 0 || d->head_dim > 128 || d->heads > 65535 || d->batch > 65535)
        return false;
    p->B = d->batch, p->T = d->seq, p->H = d->heads, p->G = d->kv_heads, p->D = d->head_dim;
    p->rho = d->heads / d->kv_heads;
    p->KT = d->kv_seq ? d->kv_seq : d->seq;
    p->P = d->q_pos;
    p->scale = d->scale;
    return p->KT >= p->P + p->T;
}

} // namespace

extern "C" {

cudaError_t rlc_attention_forward(cudaStream_t st, rlc_workspace *ws, const rl_attn_dims *d, float *out, float *lse,
                                  const float *q, const float *k, const float *v)
{
    (void)ws;
    attn_args p;
    if (!make_args(d, &p))
        return cudaErrorInvalidValue;
    if (d->bf16 && p.D == 64 && attn_bf16_on())
        return forward_bf16<64>(st, p, out, lse, q, k, v);
    if (d->bf16 && p.D == 128 && attn_bf16_on())
        return forward_bf16<128>(st, p, out, lse, q, k, v);
    if (p.D == 64 && attn_tc_on() && tc_fits(sizeof(float) * attn_tc_floats<64>()))
        return forward_tc<64>(st, p, out, lse, q, k, v);
    if (p.D == 128 && attn_tc_on() && tc_fits(sizeof(float) * attn_tc_floats<128>()))
        return forward_tc<128>(st, p, out, lse, q, k, v);
    if (p.D <= 32)
        return forward_dmax<32>(st, p, out, lse, q, k, v);
    if (p.D <= 64)
        return forward_dmax<64>(st, p, out, lse, q, k, v);
    return forward_dmax<128>(st, p, out, lse, q, k, v);
}

cudaError_t rlc_attention_backward(cudaStream_t st, rlc_workspace *ws, const rl_attn_dims *d, float *dq, float *dk,
                                   float *dv, float *delta, const float *dout, const float *out, const float *lse,
                                   const float *q, const float *k, const float *v)
{
    (void)ws;
    attn_args p;
    if (!make_args(d, &p) || p.KT != p.T || p.P != 0) /* a KV cache is for inference only */
        return cudaErrorInvalidValue;
    const long long rows = (long long)p.B * p.T * p.H;
    attn_delta_kernel<<<(unsigned)((rows + THREADS / 32 - 1) / (THREADS / 32)), THREADS, 0, st>>>(p, delta, dout, out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return e;
    if (p.D == 64 && attn_tc_on() && tc_fits(attn_tc_bwd_bytes<64>()))
        return backward_tc<64>(st, p, dq, dk, dv, delta, dout, lse, q, k, v);
    if (p.D == 128 && attn_tc_on() && tc_fits(attn_tc_bwd_bytes<128>()))
        return backward_tc<128>(st, p, dq, dk, dv, delta, dout, lse, q, k, v);
    if (p.D <= 32)
        return backward_dmax<32>(st, p, dq, dk, dv, delta, dout, lse, q, k, v);
    if (p.D <= 64)
        return backward_dmax<64>(st, p, dq, dk, dv, delta, dout, lse, q, k, v);
    return backward_dmax<128>(st, p, dq, dk, dv, delta, dout, lse, q, k, v);
}

cudaError_t rlc_attention_load(void)
{
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, attn_forward_kernel<128, FWD_TR>);
}

} // extern "C"

#endif /* RLC_ATTN_HOST_EMULATION */
