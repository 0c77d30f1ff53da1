/* cuda_wkv.cu — the RWKV-7 and RAD-RWKV6 (GLA form) recurrences on the GPU, fp32 state.
 *
 * Math (kernels.h, cpu_wkv7.c, cpu_wkv6.c), per (batch b, head h), S[i][j]: i = value, j = key,
 * d = exp(logw):
 *   wkv7:  sa = S a;  S ← S diag(d) + sa bᵀ + v kᵀ;  y = S r
 *   wkv6:             S ← S diag(d) + v kᵀ;          y = S r
 * Backward (t = T−1..0, G = Ĝ + dy rᵀ with Ĝ = ∂L/∂S_t from the future):
 *   dr = S_tᵀ dy,  dd = colsum(G ⊙ S_{t−1}),  dk = Gᵀ v,  dv = G k,  dlogw = dd ⊙ d,
 *   wkv7 also: db = Gᵀ sa,  dsa = G b,  da = S_{t−1}ᵀ dsa,  Ĝ ← G diag(d) + dsa aᵀ
 *   wkv6:                                               Ĝ ← G diag(d)
 *
 * The chunked tensor-core kernels of cuda_wkv7_chunked.cuh (16 tokens at a time as small matrix products, exact for
 * logw ≥ −10) cover wkv7 and wkv6 at head sizes 64 and 128 on sm_80 and sm_90+ (except head size 128's backward on
 * sm_80, whose 163 KB of shared memory per block is too little for its 206 KB); by default only the wkv6 backward
 * runs on them, and only on decays steep enough to make the per-row one slower (chunked_mode and wkv6_by_decays
 * below; the per-row kernels read and write the same key-major checkpoints). Everything else runs the per-row kernels below: one thread block per (b, h). The
 * forward and the backward have one thread per state row (N = head_dim ≤ 128 threads); for head sizes 64 and 128
 * the backward that runs by default is one with four threads per row and column (wkv_backward_wide_kernel), and at
 * head size 64 with enough (b, h) pairs to give every SM about four blocks (few_pairs) the one with the state and G
 * in registers (wkv_backward_reg_kernel; it also comes with two or four threads per index, RADLADS_WKV_REG=3..5,
 * not chosen by default until a GPU has timed them); with fewer pairs head size 64's forward runs four threads per
 * row (wkv_forward_wide_kernel).
 *
 * Forward: thread i keeps row i of S in registers (sa_i and y_i need only that row, so there is no
 * cross-thread traffic). The per-token vectors r, d = e^logw, k, v (and a, b) of SEG tokens are
 * staged in shared memory by the whole block; every thread then reads them as broadcasts. The staging is
 * double-buffered with cp.async (RADLADS_WKV_ASYNC, on by default where the vectors are 16-byte aligned): the
 * copies of the next tile are issued before the current one is computed, so that the block does not stop for a
 * global-memory latency per element it copies (the synchronous loop below waits for one per 6 loads: 16 waits per
 * 16-token tile at head size 64). The
 * checkpoint (the state before every chunk of L tokens) is written key-major, ck[j][i] = S[i][j],
 * exactly as the CPU backend lays it out: thread i writes column i of that matrix, so consecutive
 * threads write consecutive addresses.
 *
 * Backward (chunk recompute, exact, no decay floor): chunks are walked last to first, each in
 * segments of at most SEG tokens, also last to first. For a segment the block rebuilds the state at
 * its start (checkpoint + replay of the earlier segments of the same chunk, only when L > SEG), then
 * recomputes the segment forward with the row-per-thread step, storing the state BEFORE each token
 * key-major in a per-block global buffer (SEG·N² floats; thread i writes column i, so a warp's stores are
 * coalesced) and sa_i in shared memory. Each token of the reverse walk first loads column i of its
 * S_{t−1} (a contiguous row of the key-major copy, float4 loads) into registers, so that phase B reads
 * no memory for it and the loads overlap phase A.
 * The reverse walk keeps the single copy of G = ∂L/∂S in shared memory ([N][N+1], padded so that both
 * a row walk and a column walk by a warp are bank-conflict free) and splits every token in two phases:
 *   phase A, thread i reads ROW i of G' = G + dy rᵀ:     dv_i = Σ_j G'_ij k_j,  dsa_i = Σ_j G'_ij b_j
 *           (dsa goes to shared memory)                  — barrier —
 *   phase B, thread i owns COLUMN i (key i):             dd_i = Σ_k G'_ki S_{t−1,ki},  dk_i = Σ_k G'_ki v_k,
 *           db_i = Σ_k G'_ki sa_k,  da_i = Σ_k S_{t−1,ki} dsa_k, and rewrites the column
 *           G_ki ← G'_ki d_i + dsa_k a_i                — barrier —
 * so every key-indexed sum is a private loop of one thread and every G element has one writer per
 * phase: no atomics, no shuffles, deterministic. dr needs S_t, which is rebuilt from S_{t−1} by
 *   (S_tᵀ dy)_i = d_i (S_{t−1}ᵀ dy)_i + b_i (sa·dy) + k_i (v·dy)
 * (the two dot products are computed redundantly by every thread from the staged vectors). Every
 * gradient element of a token is written by exactly one thread (+=, kernels.h's accumulate rule). */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "cuda_async.cuh"
#include "../scratch.h"
#include "cuda_ops.h"
#include "cuda_tf32.cuh"

namespace {

constexpr int SEG = 16;         /* tokens staged per shared-memory tile; the longest backward segment */
static_assert(SEG == RL_SCRATCH_WKV_SEG, "scratch.h sizes the backward's segment states with it");
constexpr int BSEG_DEFAULT = 16; /* the backward's segment length unless RADLADS_WKV_BSEG says otherwise */
constexpr int WIDE_BSEG_DEFAULT = 8; /* the same for the four-threads-per-row backward (H200: 8 fastest) */

struct wkv_args {
    int T, H, N, L;
    const float *r, *logw, *k, *v, *a, *b;
    int backstep; /* the four-threads-per-row backward may step the state back (see there; RADLADS_WKV_BACKSTEP) */
    float *sa;    /* wkv7: every token's sa, [B, T, H, N] (the checkpoint's second part): the per-row forwards write
                   * it, the register and four-threads-per-row backwards read it; nullptr: none */
    int async;    /* 0: synchronous staging; else the forwards stage tiles of this many tokens (16 or 8) with cp.async,
                   * two of them, the next during the current (async_stage_ok; the launchers pick the length);
                   * the backwards (a flag: async_backward_ok) their segments' tokens */
};

/* Backstepping a segment divides each key column of the state by its decays, so a rounding error in S grows
 * by Π 1/d over the rest of the segment, at most Π 1/min(d, 1) over all of it; a segment where that exceeds
 * 1 / BACK_MIN_PROD for any key writes the state history instead (exact for any decay). RAD-RWKV7's decays
 * (d ≥ e^−0.6065) keep 8-token segments within it. */
constexpr float BACK_MIN_PROD = 1.0f / 160.0f;
#ifndef RLC_WKV_SEGMENT_SEEN /* the host emulation check counts the segments of each kind */
#define RLC_WKV_SEGMENT_SEEN(back)
#endif
#ifndef RLC_WKV_STORED_SEEN /* ... and the wkv7 backwards' segments that end at a checkpoint, with the forward's sa */
#define RLC_WKV_STORED_SEEN(recomputed)
#endif
#ifndef RLC_WKV_PREFETCH_SEEN /* ... and the register backward's segments whose tokens came during the walk before */
#define RLC_WKV_PREFETCH_SEEN()
#endif
#ifndef RLC_WKV_ASYNC_STAGED /* ... and the four-threads-per-row backward's tiles copied with cp.async */
#define RLC_WKV_ASYNC_STAGED()
#endif

struct wkv_grads {
    float *r, *logw, *k, *v, *a, *b;
};

__device__ __forceinline__ size_t tok_off(const wkv_args &p, int b, int t, int h)
{
    return (((size_t)b * p.T + t) * p.H + h) * p.N;
}

/* Shared token-tile slots: forward and replay use the first NV_FWD, the backward all of them. */
constexpr int V_R = 0, V_D = 1, V_K = 2, V_V = 3, V_A = 4, V_B = 5;
constexpr int BV_R = 0, BV_D = 1, BV_K = 2, BV_V = 3, BV_DY = 4, BV_A = 5, BV_B = 6, BV_SA = 7, BV_DSA = 8;
static_assert(V_R == BV_R && V_D == BV_D && V_K == BV_K && V_V == BV_V, "stage_tokens and stage_async rely on it");

/* The whole block copies tokens t0..t0+nt−1 of head (b, h) into tile [nt][nv][N] with the slot order
 * given by the caller's slot numbers (sl_* < 0 = skip). Consecutive threads read consecutive channels
 * of one token: coalesced. The caller brackets this with barriers. */
__device__ __forceinline__ void stage_tokens(float *tile, int nv, const wkv_args &p, int N, int b, int h, int t0,
                                             int nt, bool seven, int sl_v, int sl_dy, const float *dy)
{
    const int sl_a = nv >= 8 ? BV_A : V_A, sl_b = nv >= 8 ? BV_B : V_B; /* the backward's layouts: 8 or 9 */
    for (int e = threadIdx.x; e < nt * N; e += blockDim.x) {
        const int tt = e / N, j = e - tt * N;
        const size_t o = tok_off(p, b, t0 + tt, h) + j;
        float *x = tile + (size_t)tt * nv * N;
        x[V_R * N + j] = p.r[o];
        x[V_D * N + j] = expf(p.logw[o]);
        x[V_K * N + j] = p.k[o];
        x[sl_v * N + j] = p.v[o];
        if (seven) {
            x[sl_a * N + j] = p.a[o];
            x[sl_b * N + j] = p.b[o];
        }
        if (sl_dy >= 0)
            x[sl_dy * N + j] = dy[o];
    }
}

/* stage_tokens' copy as cp.async of 16 bytes, each thread's part of the tile one group (the caller commits): a thread
 * copies one quad of every vector of a token. logw is copied as it is; async_finish turns it into the decay once the
 * copies are waited for. Needs every vector 16-byte aligned and N a multiple of 4 (async_stage_ok). The forwards'
 * layout (V_*: nv 4 or 6), double-buffered, so the block issues the next tile before it computes the current one; or
 * a backward's (BV_*: nv 5 or 8), with dy into slot sl_dy (≥ 0) and the forward's sa (sa), waited for at once. */
__device__ __forceinline__ void stage_async(float *tile, int nv, const wkv_args &p, int N, int b, int h, int t0,
                                            int nt, bool seven, int sl_dy = -1, const float *dy = nullptr,
                                            bool sa = false)
{
    const int sl_a = nv >= 8 ? BV_A : V_A, sl_b = nv >= 8 ? BV_B : V_B; /* as stage_tokens */
    const int nq = N / 4;
    for (int e = threadIdx.x; e < nt * nq; e += blockDim.x) {
        const int tt = e / nq, j = 4 * (e - tt * nq);
        const size_t o = tok_off(p, b, t0 + tt, h) + j;
        float *x = tile + (size_t)tt * nv * N + j;
        cp_async16(x + V_R * N, p.r + o);
        cp_async16(x + V_D * N, p.logw + o);
        cp_async16(x + V_K * N, p.k + o);
        cp_async16(x + V_V * N, p.v + o);
        if (sl_dy >= 0)
            cp_async16(x + sl_dy * N, dy + o);
        if (seven) {
            cp_async16(x + sl_a * N, p.a + o);
            cp_async16(x + sl_b * N, p.b + o);
        }
        if (sa)
            cp_async16(x + BV_SA * N, p.sa + o);
    }
}

/* four logw copied by cp.async into their decays, in place (the same expf as stage_tokens: the paths agree bit for
 * bit) */
__device__ __forceinline__ void decays_in_place(float *x)
{
    float4 *q = reinterpret_cast<float4 *>(x);
    const float4 w = *q;
    *q = make_float4(expf(w.x), expf(w.y), expf(w.z), expf(w.w));
}

/* After this thread's copies of stage_async are waited for: the decays of the logw quads it copied (V_D = BV_D: both
 * layouts). A barrier follows before any thread reads the tile. */
__device__ __forceinline__ void async_finish(float *tile, int nv, int N, int nt)
{
    const int nq = N / 4;
    for (int e = threadIdx.x; e < nt * nq; e += blockDim.x) {
        const int tt = e / nq, j = 4 * (e - tt * nq);
        decays_in_place(tile + (size_t)tt * nv * N + V_D * N + j);
    }
}

/* The forwards' tile of tokens t0..t0+nt−1 (the k-th, TL tokens each) in shared memory, ready to read: staged
 * synchronously, or (p.async) double-buffered — the next tile's copies issued before this one is computed (the
 * first tile's too at k = 0), only this tile's waited for. Brackets itself with barriers: the previous tile is
 * consumed (and with p.async the buffer the next one goes to is free) before, every thread's part is in after.
 * Returns where the tile is. */
__device__ __forceinline__ const float *forward_tile(float *tile, int nv, const wkv_args &p, int N, int b, int h,
                                                     int t0, int nt, int TL, int k, bool seven)
{
    __syncthreads();
    if (!p.async) {
        stage_tokens(tile, nv, p, N, b, h, t0, nt, seven, V_V, -1, nullptr);
        __syncthreads();
        return tile;
    }
    const size_t tile_floats = (size_t)TL * nv * N;
    if (k == 0) {
        stage_async(tile, nv, p, N, b, h, 0, nt, seven);
        cp_async_commit();
    }
    if (t0 + TL < p.T)
        stage_async(tile + ((k + 1) & 1) * tile_floats, nv, p, N, b, h, t0 + TL, min(TL, p.T - t0 - TL), seven);
    cp_async_commit();  /* (empty after the last tile) */
    cp_async_wait<1>(); /* this tile's copies are here; the next tile's may still be in flight */
    float *cur = tile + (k & 1) * tile_floats;
    async_finish(cur, nv, N, nt);
    __syncthreads();
    return cur;
}

/* The forward's sa of tokens t0..t0+nt−1 (p.sa) into the backward tile's BV_SA slots, like stage_tokens (NT: the
 * block's threads). */
template <int NT>
__device__ __forceinline__ void stage_sa(float *tile, int nv, const wkv_args &p, int N, int b, int h, int t0, int nt)
{
    for (int e = threadIdx.x; e < nt * N; e += NT) {
        const int tt = e / N, j = e - tt * N;
        tile[(size_t)tt * nv * N + BV_SA * N + j] = p.sa[tok_off(p, b, t0 + tt, h) + j];
    }
}

/* The four-threads-per-row backward's tile of tokens t0..t0+nt−1 with dy (sl_dy = BV_DY; −1: a replay's, without)
 * and the forward's sa (given): with cp.async where p.async (the launcher: async_backward_ok), else synchronously.
 * The caller brackets it with barriers. */
template <int NT>
__device__ __forceinline__ void stage_segment(float *tile, int nv, const wkv_args &p, int N, int b, int h, int t0,
                                              int nt, bool seven, int sl_dy, const float *dy, bool given)
{
    if (p.async) { /* one group of copies a thread, one wait: one global-memory latency a segment */
        stage_async(tile, nv, p, N, b, h, t0, nt, seven, sl_dy, dy, given);
        cp_async_commit();
        cp_async_wait<0>();
        async_finish(tile, nv, N, nt);
        if (threadIdx.x == 0)
            RLC_WKV_ASYNC_STAGED();
        return;
    }
    stage_tokens(tile, nv, p, N, b, h, t0, nt, seven, BV_V, sl_dy, dy);
    if (given)
        stage_sa<NT>(tile, nv, p, N, b, h, t0, nt);
}

/* One token through row i of S (registers s[]), given the token's staged vectors. Returns sa_i (wkv7)
 * and, when want_y, y_i. */
template <int CAP, bool EXACT, bool SEVEN>
__device__ __forceinline__ float row_step(float (&s)[CAP], int N, float vi, const float *r, const float *d,
                                          const float *k, const float *a, const float *bb, bool want_y, float *y_out)
{
    float sa = 0.0f;
    if (SEVEN) {
#pragma unroll
        for (int j = 0; j < CAP; j++)
            if (EXACT || j < N)
                sa += s[j] * a[j];
    }
    float y = 0.0f;
#pragma unroll
    for (int j = 0; j < CAP; j++)
        if (EXACT || j < N) {
            float e = s[j] * d[j] + vi * k[j];
            if (SEVEN)
                e += sa * bb[j];
            s[j] = e;
            if (want_y)
                y += e * r[j];
        }
    if (want_y)
        *y_out = y;
    return sa;
}

/* ---- forward -------------------------------------------------------------------------------- */

/* state_in and state_out may be the same buffer: thread i reads only row i before the loop and
 * writes only row i after it, so they carry no __restrict__. y == NULL: replay for the backward
 * (checkpoints only). */
template <int CAP, bool EXACT, bool SEVEN>
__global__ void __launch_bounds__(CAP) wkv_forward_kernel(wkv_args p, const float *state_in, float *y,
                                                          float *state_out, float *ckpt)
{
    constexpr int NV = SEVEN ? 6 : 4;
    extern __shared__ __align__(16) float tile[]; /* [SEG][NV][N], or two [TL][NV][N] with p.async */
    const int N = EXACT ? CAP : p.N;
    const int i = threadIdx.x, bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const size_t NN = (size_t)N * N, soff = (size_t)bh * NN;
    const int nc = (p.T + p.L - 1) / p.L;
    float *ck = ckpt ? ckpt + (size_t)bh * nc * NN : nullptr;

    float s[CAP];
#pragma unroll
    for (int j = 0; j < CAP; j++)
        s[j] = ((EXACT || j < N) && state_in) ? state_in[soff + (size_t)i * N + j] : 0.0f;

    /* p.async: two tiles of TL tokens, the next one's copies in flight while the current one is computed */
    const int TL = p.async ? p.async : SEG;
    for (int t0 = 0, k = 0; t0 < p.T; t0 += TL, k++) {
        const int nt = min(TL, p.T - t0);
        const float *cur = forward_tile(tile, NV, p, N, b, h, t0, nt, TL, k, SEVEN);
        for (int tt = 0; tt < nt; tt++) {
            const int t = t0 + tt;
            const float *x = cur + (size_t)tt * NV * N;
            if (ck && t % p.L == 0) {
                float *c = ck + (size_t)(t / p.L) * NN + i;
#pragma unroll
                for (int j = 0; j < CAP; j++)
                    if (EXACT || j < N)
                        c[(size_t)j * N] = s[j];
            }
            float yi;
            const float sa = row_step<CAP, EXACT, SEVEN>(s, N, x[V_V * N + i], x + V_R * N, x + V_D * N,
                                                         x + V_K * N, x + V_A * N, x + V_B * N, y != nullptr, &yi);
            if (y)
                y[tok_off(p, b, t, h) + i] = yi;
            if (SEVEN && p.sa)
                p.sa[tok_off(p, b, t, h) + i] = sa;
        }
    }
    if (state_out)
#pragma unroll
        for (int j = 0; j < CAP; j++)
            if (EXACT || j < N)
                state_out[soff + (size_t)i * N + j] = s[j];
}

/* The forward with FQ threads per state row (head size 64; and 128, compiled for one block of 512 threads per SM —
 * for fewer (b, h) pairs than SMs, RADLADS_WKV_WIDE_FWD=1): the block of (b, h) has FQ·N threads, the FQ of
 * row i adjacent lanes (t = FQ·i + q), thread q keeping keys j = 16m + 4q + u (m < N/16, u < 4) of the row, so that
 * for each m the FQ threads read one contiguous 64-byte run of a staged vector and a warp's eight rows read the same
 * one (a broadcast, no bank conflicts). sa_i and y_i are the FQ partial sums added by two xor shuffles (the same
 * order in every lane: lanes agree bit for bit). Four times the warps of the kernel above for the same rows: the
 * latency of each token's dot products is hidden by the other warps instead of waited for.
 *
 * PRF > 1 (RADLADS_WKV_SPLIT_FWD, for (b, h) pairs too few to fill the device): each pair's N rows go to PRF blocks
 * of FQ·N / PRF threads (block bh·PRF + part holds rows part·N/PRF onwards). The rows of the forward are
 * independent (sa_i, y_i and the next row i read the token's vectors and row i alone), so the blocks share nothing
 * and need no order: each stages the whole token tile (every key) and computes, writes and checkpoints its rows. */
constexpr int FQ = 4;

/* Blocks per SM the kernel is compiled for: unsplit as before; split, 512 threads per SM, i.e. up to 128 registers a
 * thread (ptxas sm_90, wkv7 at 128 split 2 capped at 4 blocks: 64 registers and 40 bytes of spill loads) */
template <int CAP, int PRF> constexpr int fwd_wide_min_blocks()
{
    return PRF > 1 ? 512 / (CAP * FQ / PRF) : CAP == 64 ? 4 : 1;
}

template <int CAP, bool SEVEN, int PRF = 1>
__global__ void __launch_bounds__(CAP *FQ / PRF, (fwd_wide_min_blocks<CAP, PRF>()))
    wkv_forward_wide_kernel(wkv_args p, const float *state_in, float *y, float *state_out, float *ckpt)
{
    constexpr int NV = SEVEN ? 6 : 4, N = CAP, W = N / FQ;
    extern __shared__ __align__(16) float tile[]; /* [SEG][NV][N], two with p.async */
    const int t = threadIdx.x, bh = blockIdx.x / PRF, b = bh / p.H, h = bh % p.H;
    const int i = (int)(blockIdx.x % PRF) * (N / PRF) + t / FQ, q = t % FQ;
    const size_t NN = (size_t)N * N, soff = (size_t)bh * NN;
    const int nc = (p.T + p.L - 1) / p.L;
    float *ck = ckpt ? ckpt + (size_t)bh * nc * NN : nullptr;
    auto key = [&](int m, int u) { return 16 * m + 4 * q + u; }; /* key of this thread's s[4m + u] */

    float s[W];
#pragma unroll
    for (int m = 0; m < W / 4; m++)
#pragma unroll
        for (int u = 0; u < 4; u++)
            s[4 * m + u] = state_in ? state_in[soff + (size_t)i * N + key(m, u)] : 0.0f;

    const int TL = p.async ? p.async : SEG; /* (p.async: two tiles of TL tokens) */
    for (int t0 = 0, k = 0; t0 < p.T; t0 += TL, k++) {
        const int nt = min(TL, p.T - t0);
        const float *cur = forward_tile(tile, NV, p, N, b, h, t0, nt, TL, k, SEVEN);
        for (int tt = 0; tt < nt; tt++) {
            const int tk = t0 + tt;
            const float *x = cur + (size_t)tt * NV * N;
            if (ck && tk % p.L == 0) {
                float *c = ck + (size_t)(tk / p.L) * NN + i;
#pragma unroll
                for (int m = 0; m < W / 4; m++)
#pragma unroll
                    for (int u = 0; u < 4; u++)
                        c[(size_t)key(m, u) * N] = s[4 * m + u];
            }
            float sa = 0.0f;
            if (SEVEN) {
#pragma unroll
                for (int m = 0; m < W / 4; m++) {
                    const float4 a4 = *reinterpret_cast<const float4 *>(x + V_A * N + key(m, 0));
                    sa += s[4 * m] * a4.x + s[4 * m + 1] * a4.y + s[4 * m + 2] * a4.z + s[4 * m + 3] * a4.w;
                }
                sa += __shfl_xor_sync(0xffffffffu, sa, 1);
                sa += __shfl_xor_sync(0xffffffffu, sa, 2);
                if (p.sa && q == 0)
                    p.sa[tok_off(p, b, tk, h) + i] = sa;
            }
            const float vi = x[V_V * N + i];
            float yp = 0.0f;
#pragma unroll
            for (int m = 0; m < W / 4; m++) {
                const int j0 = key(m, 0);
                const float4 d4 = *reinterpret_cast<const float4 *>(x + V_D * N + j0);
                const float4 k4 = *reinterpret_cast<const float4 *>(x + V_K * N + j0);
                const float4 r4 = *reinterpret_cast<const float4 *>(x + V_R * N + j0);
                const float4 b4 = SEVEN ? *reinterpret_cast<const float4 *>(x + V_B * N + j0) : d4;
                const float dv[4] = {d4.x, d4.y, d4.z, d4.w}, kv[4] = {k4.x, k4.y, k4.z, k4.w};
                const float rv[4] = {r4.x, r4.y, r4.z, r4.w}, bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    float e = s[4 * m + u] * dv[u] + vi * kv[u];
                    if (SEVEN)
                        e += sa * bv[u];
                    s[4 * m + u] = e;
                    yp += e * rv[u];
                }
            }
            if (y) { /* every lane joins the shuffles; lane q = 0 of the row writes */
                yp += __shfl_xor_sync(0xffffffffu, yp, 1);
                yp += __shfl_xor_sync(0xffffffffu, yp, 2);
                if (q == 0)
                    y[tok_off(p, b, tk, h) + i] = yp;
            }
        }
    }
    if (state_out)
#pragma unroll
        for (int m = 0; m < W / 4; m++)
#pragma unroll
            for (int u = 0; u < 4; u++)
                state_out[soff + (size_t)i * N + key(m, u)] = s[4 * m + u];
}

/* ---- backward ------------------------------------------------------------------------------- */

/* p[q..q+3] from shared memory: one 16-byte load in the EXACT kernels (N = 64 or 128, so every staged
 * vector starts 16-byte aligned), four bounded scalar loads otherwise */
template <bool EXACT>
__device__ __forceinline__ float4 ld4(const float *p, int q, int N)
{
    if (EXACT)
        return *reinterpret_cast<const float4 *>(p + q);
    return make_float4(q < N ? p[q] : 0.0f, q + 1 < N ? p[q + 1] : 0.0f, q + 2 < N ? p[q + 2] : 0.0f,
                       q + 3 < N ? p[q + 3] : 0.0f);
}

/* Phase A over keys j0..j0+3 of row i (Gi = &G_i,j0): G'_ij = G_ij + dy_i r_j, dv_i += G'_ij k_j,
 * dsa_i += G'_ij b_j. Both backward kernels. */
template <bool EXACT, bool SEVEN>
__device__ __forceinline__ void row_terms4(const float *Gi, int j0, int N, float dyi, const float *r, const float *k,
                                           const float *bb, float &dvi, float &dsai)
{
    const float4 r4 = ld4<EXACT>(r, j0, N), k4 = ld4<EXACT>(k, j0, N), b4 = SEVEN ? ld4<EXACT>(bb, j0, N) : r4;
    const float rr[4] = {r4.x, r4.y, r4.z, r4.w}, kv[4] = {k4.x, k4.y, k4.z, k4.w}, bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
    for (int u = 0; u < 4; u++) {
        if (!EXACT && j0 + u >= N)
            break;
        const float gij = Gi[u] + dyi * rr[u];
        dvi += gij * kv[u];
        if (SEVEN)
            dsai += gij * bv[u];
    }
}

/* Phase B's sums for column (key) i: dd, dk, db, da and the three dot products dr is made of. */
struct col_sums {
    float dd, dk, db, da, sdy, vdy, sady;
};

/* Phase B over rows k0..k0+3 of column i, given those rows' dy, v, sa, dsa and S_{t−1}[k][i] (spk): the
 * column sums, and G_ki ← G'_ki d_i + dsa_k a_i written back (this thread is its only writer). */
template <bool EXACT, bool SEVEN>
__device__ __forceinline__ void column_terms4(float *G, int GP, int i, int k0, int N, const float *spk, float4 dy4,
                                              float4 v4, float4 sa4, float4 ds4, float ri, float di, float ai,
                                              col_sums &c)
{
    const float dyv[4] = {dy4.x, dy4.y, dy4.z, dy4.w}, vv[4] = {v4.x, v4.y, v4.z, v4.w};
    const float sav[4] = {sa4.x, sa4.y, sa4.z, sa4.w}, dsav[4] = {ds4.x, ds4.y, ds4.z, ds4.w};
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int kk = k0 + u;
        if (!EXACT && kk >= N)
            break;
        float *gp = G + kk * GP + i;
        const float gk = *gp + dyv[u] * ri;
        c.dd += gk * spk[u];
        c.dk += gk * vv[u];
        c.sdy += spk[u] * dyv[u];
        c.vdy += vv[u] * dyv[u];
        if (SEVEN) {
            c.db += gk * sav[u];
            c.da += spk[u] * dsav[u];
            c.sady += sav[u] * dyv[u];
            *gp = gk * di + dsav[u] * ai;
        } else {
            *gp = gk * di;
        }
    }
}

/* Row i of the state at token s0 of the checkpoint chunk starting at cs, for the per-row backwards: the chunk's
 * checkpoint ckc (key-major: ckc[j][i] = S_ij), then a replay of the chunk's tokens before s0 (s0 − cs a multiple of
 * SEGLEN: full tiles of SEGLEN tokens, nv slots each, staged by the whole block). */
template <int CAP, bool EXACT, bool SEVEN, int SEGLEN>
__device__ __forceinline__ void row_at_segment(float (&s)[CAP], const float *ckc, float *tile, int nv, const wkv_args &p,
                                               int b, int h, int i, int cs, int s0)
{
    const int N = EXACT ? CAP : p.N;
#pragma unroll
    for (int j = 0; j < CAP; j++)
        s[j] = (EXACT || j < N) ? ckc[(size_t)j * N + i] : 0.0f;
    for (int t0 = cs; t0 < s0; t0 += SEGLEN) {
        __syncthreads();
        stage_tokens(tile, nv, p, N, b, h, t0, SEGLEN, SEVEN, BV_V, -1, nullptr);
        __syncthreads();
        for (int tt = 0; tt < SEGLEN; tt++) {
            const float *x = tile + (size_t)tt * nv * N;
            row_step<CAP, EXACT, SEVEN>(s, N, x[BV_V * N + i], x + BV_R * N, x + BV_D * N, x + BV_K * N, x + BV_A * N,
                                        x + BV_B * N, false, nullptr);
        }
    }
}

/* ws: per block BSEG·N² floats, the key-major states before each token of the current segment (BSEG ≤ SEG:
 * the backward's segment length; shorter segments keep the buffers of all resident blocks in L2).
 * ckpt: the key-major chunk-start states (the forward's, or a replay's). */
template <int CAP, bool EXACT, bool SEVEN, int BSEG = SEG>
__global__ void __launch_bounds__(CAP) wkv_backward_kernel(wkv_args p, wkv_grads g, const float *dy,
                                                           const float *dstate_out, const float *ckpt, float *ws,
                                                           float *dstate_in)
{
    constexpr int NV = SEVEN ? 8 : 5;
    extern __shared__ __align__(16) float smem[];
    const int N = EXACT ? CAP : p.N, GP = N + 1;
    float *G = smem;                        /* [N][N+1]: ∂L/∂S, G[k*GP + i] = G_ki */
    float *tile = G + (size_t)N * GP;       /* [BSEG][NV][N] */
    float *dsa = tile + (size_t)BSEG * NV * N; /* [N] (wkv7) */
    const int i = threadIdx.x, bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const size_t NN = (size_t)N * N, soff = (size_t)bh * NN;
    const int nc = (p.T + p.L - 1) / p.L;
    const float *ck = ckpt + (size_t)bh * nc * NN;
    float *Sb = ws + (size_t)bh * BSEG * NN;

    for (int k = 0; k < N; k++) /* thread i fills column i (coalesced rows of dstate_out) */
        G[k * GP + i] = dstate_out ? dstate_out[soff + (size_t)k * N + i] : 0.0f;

    for (int c = nc - 1; c >= 0; c--) {
        const int cs = c * p.L, ce = min(p.T, cs + p.L), nseg = (ce - cs + BSEG - 1) / BSEG;
        for (int q = nseg - 1; q >= 0; q--) {
            const int s0 = cs + q * BSEG, n = min(BSEG, ce - s0);

            /* 1. row i of the state at s0 (none replayed when L ≤ BSEG) */
            float s[CAP];
            row_at_segment<CAP, EXACT, SEVEN, BSEG>(s, ck + (size_t)c * NN, tile, NV, p, b, h, i, cs, s0);

            /* 2. the segment's tokens (with dy), and its states before each token into Sb */
            __syncthreads();
            stage_tokens(tile, NV, p, N, b, h, s0, n, SEVEN, BV_V, BV_DY, dy);
            __syncthreads();
            for (int tau = 0; tau < n; tau++) {
                float *x = tile + (size_t)tau * NV * N;
                float *col = Sb + (size_t)tau * NN + i; /* key-major: Sb[j][i] = S_ij, coalesced over i */
#pragma unroll
                for (int j = 0; j < CAP; j++)
                    if (EXACT || j < N)
                        col[(size_t)j * N] = s[j];
                const float sa = row_step<CAP, EXACT, SEVEN>(s, N, x[BV_V * N + i], x + BV_R * N, x + BV_D * N,
                                                             x + BV_K * N, x + BV_A * N, x + BV_B * N, false, nullptr);
                if (SEVEN)
                    x[BV_SA * N + i] = sa; /* slot written by thread i only */
            }
            __syncthreads(); /* Sb (global) and the sa slots are visible to the whole block */

            /* 3. the reverse walk */
            for (int tau = n - 1; tau >= 0; tau--) {
                const float *x = tile + (size_t)tau * NV * N;
                const float *r = x + BV_R * N, *dc = x + BV_D * N, *k = x + BV_K * N, *v = x + BV_V * N;
                const float *dyt = x + BV_DY * N, *a = x + BV_A * N, *bb = x + BV_B * N, *sav = x + BV_SA * N;
                const size_t o = tok_off(p, b, s0 + tau, h) + i;

                /* column i of S_{t−1} (row i of the key-major copy: contiguous for this thread) into
                 * registers; the loads are in flight during phase A */
                float sp[CAP];
                {
                    const float *Sp = Sb + (size_t)tau * NN + (size_t)i * N;
                    if (EXACT && CAP % 4 == 0) {
#pragma unroll
                        for (int q = 0; q < CAP / 4; q++) {
                            const float4 f = reinterpret_cast<const float4 *>(Sp)[q];
                            sp[4 * q] = f.x, sp[4 * q + 1] = f.y, sp[4 * q + 2] = f.z, sp[4 * q + 3] = f.w;
                        }
                    } else {
#pragma unroll
                        for (int kk = 0; kk < CAP; kk++)
                            sp[kk] = (EXACT || kk < N) ? Sp[kk] : 0.0f;
                    }
                }

                /* phase A: row i of G' */
                {
                    const float dyi = dyt[i];
                    const float *Gi = G + (size_t)i * GP;
                    float dvi = 0.0f, dsai = 0.0f;
#pragma unroll
                    for (int j0 = 0; j0 < CAP; j0 += 4) {
                        if (!EXACT && j0 >= N)
                            break;
                        row_terms4<EXACT, SEVEN>(Gi + j0, j0, N, dyi, r, k, bb, dvi, dsai);
                    }
                    g.v[o] += dvi;
                    if (SEVEN)
                        dsa[i] = dsai;
                }
                __syncthreads(); /* dsa complete; every row of G read before columns are rewritten */

                /* phase B: column i (key i) */
                {
                    const float ri = r[i], di = dc[i], ai = SEVEN ? a[i] : 0.0f;
                    col_sums cs = {};
#pragma unroll
                    for (int k0 = 0; k0 < CAP; k0 += 4) {
                        if (!EXACT && k0 >= N)
                            break;
                        const float4 dy4 = ld4<EXACT>(dyt, k0, N);
                        column_terms4<EXACT, SEVEN>(G, GP, i, k0, N, sp + k0, dy4, ld4<EXACT>(v, k0, N),
                                                    SEVEN ? ld4<EXACT>(sav, k0, N) : dy4,
                                                    SEVEN ? ld4<EXACT>(dsa, k0, N) : dy4, ri, di, ai, cs);
                    }
                    float dr = di * cs.sdy + k[i] * cs.vdy;
                    if (SEVEN)
                        dr += bb[i] * cs.sady;
                    g.r[o] += dr;
                    g.logw[o] += cs.dd * di;
                    g.k[o] += cs.dk;
                    if (SEVEN) {
                        g.b[o] += cs.db;
                        g.a[o] += cs.da;
                    }
                }
                __syncthreads(); /* columns rewritten before the next token reads rows; dsa consumed */
            }
        }
    }
    if (dstate_in)
        for (int k = 0; k < N; k++)
            dstate_in[soff + (size_t)k * N + i] += G[k * GP + i];
}

/* ---- backward, four threads per state row and column ---------------------------------------------
 * The kernel above gives a (b, h) pair N threads, so a grid of B·H blocks leaves most of a GPU's warp
 * slots empty (B = 8, H = 64: under 8 warps per SM) and every token is a chain of two N-long loops. Here
 * a block has Q·N threads: thread t = q·N + i (q = t / N, uniform per warp) works on row i (forward
 * recompute, phase A) or column i (phase B) over the q-th quarter of the other index, W = N/Q elements.
 * The quarter partials go through shared memory and are summed in the fixed order q = 0..Q−1, so the
 * result is deterministic (not bit-identical to the kernel above: different summation order).
 *   recompute: s[] = row i of S over the quarter's keys; sa_i = Σ_q partial (one barrier per token,
 *              double-buffered partials);
 *   phase A:   partial dv_i, dsa_i over the quarter's keys               — barrier —
 *   phase B:   column i over the quarter's rows: partial dd, dk, db, da and the dr terms; G rewritten
 *              (every element by one thread); dv_i and dsa_k are summed from the phase A partials
 *                                                                        — barrier —
 *   finish:    thread (i, q) sums one group of column partials and adds it to its output
 *              (q = 0: dr, 1: dlogw, 2: dk, 3: db and da).
 * Phase B needs S_{t−1}'s column. The kernel above writes the state before every token of a segment to global
 * memory and reads it back (N² floats per token: what bounds it). Here, by default (p.backstep), the recompute
 * writes nothing: its end state goes to registers in column form (thread (i, q): S[q·W + m][i], through shared
 * memory) and each token of the reverse walk steps it back in place,
 *   S_{t−1}[k][i] = (S_t[k][i] − sa_k b_i − v_k k_i) / d_i      (sa_k from the recompute),
 * the stepping of the fp32 reference kernels (KERNELS.md §8). Dividing by d_i amplifies rounding by up to
 * Π 1/min(d_i, 1) over the segment, so a segment where that exceeds 1 / BACK_MIN_PROD for some key (strong
 * decays; not RAD-RWKV7's at 8-token segments) takes the history path instead: exact for every input, the choice
 * uniform per block.
 * With the forward's sa (wkv7, p.sa) every recompute and replay step is the update alone (no dot product, no
 * barrier), and a segment that ends a checkpoint chunk (not the last) and can step back starts its walk from the
 * next checkpoint: no replay, no recompute (at 8-token segments and 16-token chunks, half the segments). */
constexpr int WQ = 4;

/* given (uniform over the block): sa_i is the forward's, staged in the tile, instead of a dot product summed over
 * the row's four threads (one barrier) */
template <int CAP, bool SEVEN>
__device__ __forceinline__ float wide_step(float (&s)[CAP / WQ], float *red_sa, int &par, int i, int q,
                                           const float *x, bool given)
{
    constexpr int W = CAP / WQ;
    const int j0 = q * W;
    float sa = 0.0f;
    if (SEVEN && given) {
        sa = x[BV_SA * CAP + i];
    } else if (SEVEN) {
        float part = 0.0f;
#pragma unroll
        for (int jj = 0; jj < W; jj += 4) {
            const float4 a4 = ld4<true>(x + BV_A * CAP, j0 + jj, CAP);
            part += s[jj] * a4.x + s[jj + 1] * a4.y + s[jj + 2] * a4.z + s[jj + 3] * a4.w;
        }
        float *buf = red_sa + (par & 1) * WQ * CAP;
        buf[q * CAP + i] = part;
        __syncthreads();
#pragma unroll
        for (int u = 0; u < WQ; u++)
            sa += buf[u * CAP + i];
        par++;
    }
    const float vi = x[BV_V * CAP + i];
#pragma unroll
    for (int jj = 0; jj < W; jj += 4) {
        const float4 d4 = ld4<true>(x + BV_D * CAP, j0 + jj, CAP), k4 = ld4<true>(x + BV_K * CAP, j0 + jj, CAP);
        const float4 b4 = SEVEN ? ld4<true>(x + BV_B * CAP, j0 + jj, CAP) : d4;
        const float dv[4] = {d4.x, d4.y, d4.z, d4.w}, kv[4] = {k4.x, k4.y, k4.z, k4.w}, bv[4] = {b4.x, b4.y, b4.z, b4.w};
#pragma unroll
        for (int u = 0; u < 4; u++) {
            float e = s[jj + u] * dv[u] + vi * kv[u];
            if (SEVEN)
                e += sa * bv[u];
            s[jj + u] = e;
        }
    }
    return sa;
}

template <int CAP, bool SEVEN, int BSEG = SEG, bool GIVEN = false>
__global__ void __launch_bounds__(CAP *WQ, CAP == 64 ? (GIVEN ? 3 : 4) : 1) wkv_backward_wide_kernel(wkv_args p, wkv_grads g, const float *dy,
                                                                    const float *dstate_out, const float *ckpt,
                                                                    float *ws, float *dstate_in)
{
    constexpr int NV = SEVEN ? 8 : 5, N = CAP, W = CAP / WQ, GP = N + 1, NT = CAP * WQ;
    extern __shared__ __align__(16) float smem[];
    float *tile = smem;                           /* [BSEG][NV][N] */
    float *red_sa = tile + (size_t)BSEG * NV * N; /* [2][Q][N] */
    float *redA = red_sa + 2 * WQ * N;            /* [Q][2][N]: dv, dsa partials */
    float *redB = redA + WQ * 2 * N;              /* [Q][7][N]: dd, dk, db, da, sdy, vdy, sady partials */
    float *G = redB + WQ * 7 * N;                 /* [N][N+1] */
    int *too_steep = (int *)(G + (size_t)N * GP); /* the segment's decays forbid backstepping */
    const int t = threadIdx.x, i = t % N, q = t / N, bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const size_t NN = (size_t)N * N, soff = (size_t)bh * NN;
    const int nc = (p.T + p.L - 1) / p.L;
    const float *ck = ckpt + (size_t)bh * nc * NN;
    float *Sb = ws + (size_t)bh * BSEG * NN;
    int par = 0;

    for (int e = t; e < N * N; e += NT) {
        const int k = e / N, c = e - k * N;
        G[k * GP + c] = dstate_out ? dstate_out[soff + e] : 0.0f;
    }

    for (int c = nc - 1; c >= 0; c--) {
        const int cs = c * p.L, ce = min(p.T, cs + p.L), nseg = (ce - cs + BSEG - 1) / BSEG;
        for (int sg = nseg - 1; sg >= 0; sg--) {
            const int s0 = cs + sg * BSEG, n = min(BSEG, ce - s0);

            /* given: the forward kept every token's sa (p.sa), so the recompute is the update alone; stored: the
             * segment also ends its checkpoint chunk (not the last), so its end state is the next checkpoint */
            constexpr bool given = SEVEN && GIVEN; /* p.sa is set (the launcher's choice) */
            const bool stored = given && s0 + n == ce && c + 1 < nc;

            /* 0. whether the segment can step back: key i's decay product over it (from memory: the tile is still
             * the replay's), decays above 1 counted as 1 — a bound on every later part of it, which is what
             * divides an error */
            if (t == 0)
                *too_steep = 0;
            __syncthreads();
            if (p.backstep && q == 0) {
                float prod = 1.0f;
                for (int tau = 0; tau < n; tau++)
                    prod *= fminf(expf(p.logw[tok_off(p, b, s0 + tau, h) + i]), 1.0f);
                if (!(prod >= BACK_MIN_PROD))
                    *too_steep = 1; /* every writer writes 1 */
            }
            __syncthreads();
            const bool back = p.backstep && !*too_steep; /* uniform over the block */
            const bool skip = stored && back;            /* the walk steps back from the next checkpoint alone */

            /* 1. row i of the state at s0, keys of quarter q: checkpoint, then replay of earlier segments */
            float s[W];
            if (!skip) {
#pragma unroll
                for (int jj = 0; jj < W; jj++)
                    s[jj] = ck[(size_t)c * NN + (size_t)(q * W + jj) * N + i];
                for (int t0 = cs; t0 < s0; t0 += BSEG) {
                    __syncthreads();
                    stage_segment<NT>(tile, NV, p, N, b, h, t0, BSEG, SEVEN, -1, nullptr, given);
                    __syncthreads();
                    for (int tt = 0; tt < BSEG; tt++)
                        wide_step<CAP, SEVEN>(s, red_sa, par, i, q, tile + (size_t)tt * NV * N, given);
                }
            }

            /* 2. the segment's tokens (and sa); the states before each (key-major) or, backstepping, none */
            __syncthreads();
            stage_segment<NT>(tile, NV, p, N, b, h, s0, n, SEVEN, BV_DY, dy, given);
            __syncthreads();
            if (t == 0) {
                RLC_WKV_SEGMENT_SEEN(back);
                if (stored)
                    RLC_WKV_STORED_SEEN(skip ? 0 : s0 - cs + n);
            }
            if (!skip)
                for (int tau = 0; tau < n; tau++) {
                    float *x = tile + (size_t)tau * NV * N;
                    if (!back) {
                        float *col = Sb + (size_t)tau * NN + i;
#pragma unroll
                        for (int jj = 0; jj < W; jj++)
                            col[(size_t)(q * W + jj) * N] = s[jj];
                    }
                    const float sa = wide_step<CAP, SEVEN>(s, red_sa, par, i, q, x, given);
                    if (SEVEN && !given && q == 0)
                        x[BV_SA * N + i] = sa;
                }
            __syncthreads();
            /* backstepping: this thread's column of the state after the segment, S[r0..r0+W−1][i] — the next
             * checkpoint's row i (key-major), or the rows the recompute left in registers, through the (now idle)
             * reduction buffers a quarter of rows at a time */
            float sp[W]; /* S_{t−1}[q·W + m][i] during the walk */
            if (skip) {
                const float4 *nx = reinterpret_cast<const float4 *>(ck + (size_t)(c + 1) * NN + (size_t)i * N + q * W);
#pragma unroll
                for (int m = 0; m < W / 4; m++) {
                    const float4 f = nx[m];
                    sp[4 * m] = f.x, sp[4 * m + 1] = f.y, sp[4 * m + 2] = f.z, sp[4 * m + 3] = f.w;
                }
            } else if (back) {
                float *Sx = red_sa; /* [W][N+1]: fits in red_sa, redA and redB (44 N floats) */
                for (int pass = 0; pass < WQ; pass++) {
                    if (i / W == pass)
#pragma unroll
                        for (int jj = 0; jj < W; jj++)
                            Sx[(size_t)(i - pass * W) * GP + q * W + jj] = s[jj];
                    __syncthreads();
                    if (q == pass)
#pragma unroll
                        for (int m = 0; m < W; m++)
                            sp[m] = Sx[(size_t)m * GP + i];
                    __syncthreads();
                }
            }

            /* 3. the reverse walk */
            for (int tau = n - 1; tau >= 0; tau--) {
                const float *x = tile + (size_t)tau * NV * N;
                const float *r = x + BV_R * N, *dc = x + BV_D * N, *k = x + BV_K * N, *v = x + BV_V * N;
                const float *dyt = x + BV_DY * N, *a = x + BV_A * N, *bb = x + BV_B * N, *sav = x + BV_SA * N;
                const size_t o = tok_off(p, b, s0 + tau, h) + i;
                const int r0 = q * W; /* this thread's quarter of keys (phase A) or rows (phase B) */

                /* the gradients this thread adds to, read now so that the loads are not waited for at the end */
                float old0 = 0.0f, old1 = 0.0f;
                if (q == 0)
                    old0 = g.r[o], old1 = g.v[o];
                else if (q == 1)
                    old0 = g.logw[o];
                else if (q == 2)
                    old0 = g.k[o];
                else if (SEVEN)
                    old0 = g.b[o], old1 = g.a[o];

                if (back) { /* S_{t−1}[k][i] = (S_t[k][i] − sa_k b_i − v_k k_i) / d_i, in place */
                    const float inv = 1.0f / dc[i], ki = k[i], bi = SEVEN ? bb[i] : 0.0f;
#pragma unroll
                    for (int m = 0; m < W; m++) {
                        float e = sp[m] - v[r0 + m] * ki;
                        if (SEVEN)
                            e -= sav[r0 + m] * bi;
                        sp[m] = e * inv;
                    }
                } else { /* S_{t−1}[r0 + m][i]: row i of the key-major copy, contiguous */
                    const float4 *Sp = reinterpret_cast<const float4 *>(Sb + (size_t)tau * NN + (size_t)i * N + r0);
#pragma unroll
                    for (int m = 0; m < W / 4; m++) {
                        const float4 f = Sp[m];
                        sp[4 * m] = f.x, sp[4 * m + 1] = f.y, sp[4 * m + 2] = f.z, sp[4 * m + 3] = f.w;
                    }
                }

                /* phase A: row i, keys r0.. */
                {
                    const float dyi = dyt[i];
                    const float *Gi = G + (size_t)i * GP + r0;
                    float dvi = 0.0f, dsai = 0.0f;
#pragma unroll
                    for (int jj = 0; jj < W; jj += 4)
                        row_terms4<true, SEVEN>(Gi + jj, r0 + jj, N, dyi, r, k, bb, dvi, dsai);
                    redA[(q * 2 + 0) * N + i] = dvi;
                    redA[(q * 2 + 1) * N + i] = dsai;
                }
                __syncthreads(); /* the partials are complete; every row of G read */

                /* phase B: column i, rows r0.. */
                {
                    if (q == 0) {
                        float dv = 0.0f;
#pragma unroll
                        for (int u = 0; u < WQ; u++)
                            dv += redA[(u * 2 + 0) * N + i];
                        g.v[o] = old1 + dv;
                    }
                    const float ri = r[i], di = dc[i], ai = SEVEN ? a[i] : 0.0f;
                    col_sums cs = {};
#pragma unroll
                    for (int m0 = 0; m0 < W; m0 += 4) {
                        const int k0 = r0 + m0;
                        const float4 dy4 = ld4<true>(dyt, k0, N);
                        float4 ds4 = make_float4(0.0f, 0.0f, 0.0f, 0.0f); /* dsa_k: the quarters' partials */
                        if (SEVEN)
#pragma unroll
                            for (int u = 0; u < WQ; u++) {
                                const float4 f = ld4<true>(redA + (u * 2 + 1) * N, k0, N);
                                ds4.x += f.x, ds4.y += f.y, ds4.z += f.z, ds4.w += f.w;
                            }
                        column_terms4<true, SEVEN>(G, GP, i, k0, N, sp + m0, dy4, ld4<true>(v, k0, N),
                                                   SEVEN ? ld4<true>(sav, k0, N) : dy4, ds4, ri, di, ai, cs);
                    }
                    float *rb = redB + (size_t)q * 7 * N + i;
                    rb[0 * N] = cs.dd, rb[1 * N] = cs.dk, rb[4 * N] = cs.sdy, rb[5 * N] = cs.vdy;
                    if (SEVEN)
                        rb[2 * N] = cs.db, rb[3 * N] = cs.da, rb[6 * N] = cs.sady;
                }
                __syncthreads(); /* G rewritten, column partials complete */

                /* finish: one output group per quarter, summed in quarter order */
                {
                    auto total = [&](int slot) {
                        float acc = 0.0f;
#pragma unroll
                        for (int u = 0; u < WQ; u++)
                            acc += redB[((size_t)u * 7 + slot) * N + i];
                        return acc;
                    };
                    const float di = dc[i];
                    if (q == 0) {
                        float dr = di * total(4) + k[i] * total(5);
                        if (SEVEN)
                            dr += bb[i] * total(6);
                        g.r[o] = old0 + dr;
                    } else if (q == 1) {
                        g.logw[o] = old0 + total(0) * di;
                    } else if (q == 2) {
                        g.k[o] = old0 + total(1);
                    } else if (SEVEN) {
                        g.b[o] = old0 + total(2);
                        g.a[o] = old1 + total(3);
                    }
                }
            }
        }
    }
    if (dstate_in) {
        __syncthreads();
        for (int e = t; e < N * N; e += NT) {
            const int k = e / N, c = e - k * N;
            dstate_in[soff + e] += G[k * GP + c];
        }
    }
}

/* The four-threads-per-row backward's shared memory: the token tile, the reductions, G, the too_steep flag. */
size_t wide_smem(int N, bool seven, int bseg)
{
    return sizeof(float) *
           ((size_t)bseg * (seven ? 8 : 5) * N + (size_t)(2 + 2 + 7) * WQ * N + (size_t)N * (N + 1) + 4);
}

/* ---- backward, the state and G in registers (head size 64) ----------------------------------------
 * KERNELS.md §8 CUDA 1's design. One thread per index i (N = 64 threads, one block per (b, h)); thread i keeps
 * row i of G = ∂L/∂S (gr[j] = G_ij), column i of G (gc[k] = G_ki) and column i of the state (st[k] = S_ki) in
 * registers, so every sum of a token's backward is a private loop of one thread:
 *   value i (row):   dv_i = Σ_j G'_ij k_j,  dsa_i = Σ_j G'_ij b_j
 *   key i (column):  dr_i = Σ_k S_t,ki dy_k,  dd_i = Σ_k G'_ki S_{t−1},ki,  dk_i = Σ_k G'_ki v_k,
 *                    db_i = Σ_k G'_ki sa_k,  da_i = Σ_k S_{t−1},ki dsa_k
 * and both copies take the same update, G_ij ← G'_ij d_j + dsa_i a_j and G_ki ← G'_ki d_i + dsa_k a_i. The only
 * exchange between threads is dsa (one barrier per token; none for wkv6), through the token tile.
 * A segment (≤ SEG tokens of a checkpoint chunk) is recomputed forward row by row from the chunk checkpoint (plus
 * a replay of the chunk's earlier segments), sa_k into the tile; the walk back then steps the column back,
 *   S_{t−1},ki = (S_t,ki − sa_k b_i − v_k k_i) / d_i,
 * between anchors the recompute writes to global memory key-major (a warp's stores coalesced; the walk reads its
 * column as a contiguous row; ws: (SEG + 1)·N² floats per block, L2-resident): the state after the segment and
 * the one before every group of GRP tokens, so a rounding error is divided by at most GRP − 1 decays. A group
 * whose decays make that too inexact (Π min(d, 1) < BACK_MIN_PROD for a key), or every group when p.backstep is
 * 0, gets an anchor before each of its tokens instead (exact for every decay).
 * With the forward's sa (wkv7: the checkpoint's second part, p.sa) a segment that is a whole checkpoint chunk, not
 * the last, needs less: its end state is the next checkpoint, sa comes from memory (the recompute is the update
 * alone), and the recompute runs only up to the last anchor inside the segment — none at all when every key's
 * decays over the whole segment keep Π min(d, 1) ≥ BACK_MIN_PROD (then the walk steps back over all of it).
 * GSM (what runs by default, RADLADS_WKV_REG): row i of G lives in shared memory instead (only thread i touches it,
 * so no barrier guards it); with all three arrays in registers nvcc 13 needs 255 registers and spills 780 bytes a
 * thread, and the H100 measured that form 22.1 ms against 16.4 at B8 T4096 H64. (Compiler fences every 16 keys, which
 * took the GSM form from 32 bytes of spills to none, cost it 18 %: 19.3 ms.)
 * The tokens of a segment that is its chunk's first (no replay goes through the tile) are copied in during the walk
 * back over the segment before it, with cp.async (p.async, RADLADS_WKV_ASYNC): each slot once every thread is past
 * it (the per-token barrier tells), slot 0 at the segment's start — instead of a synchronous staging loop that
 * waits for global memory 32 times a segment (16 elements a thread, then the 16 sa), the block waits once. */
constexpr int GRP = 8;
constexpr int RNV = 9; /* the tile's slots: BV_* and dsa */

/* PR (1, 2 or 4) threads share an index: thread t is row and column i = t / PR, part u = t % PR, and holds the
 * quads q ≡ u (mod PR) of its row and of its column (local entry l = 4m + e is index 4(PR·m + u) + e); its sums are
 * partial, and the PR threads, adjacent lanes of one warp, add theirs with xor shuffles (every thread of the group
 * gets the same sum, in the same order). PR = 1 is the kernel as first designed. */
template <int PR> __device__ __forceinline__ int part_j(int u, int l) { return 4 * (PR * (l >> 2) + u) + (l & 3); }
template <int PR> __device__ __forceinline__ float part_sum(float x)
{
    if (PR >= 2)
        x += __shfl_xor_sync(0xffffffffu, x, 1);
    if (PR >= 4)
        x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}

/* The pitch of G's rows in shared memory (GSM): 16-byte rows whose float4 reads by a quarter warp (8 / PR rows, PR
 * parts each) fall in 8 different bank quads: N + 4·PR floats (68, 72, 80 at head size 64; N is a multiple of 32). */
__host__ __device__ constexpr int reg_gsp(int n, int pr) { return n + 4 * pr; }

/* The register backward's rows of the state per block: all N, or with the value rows split (SPLIT) N / PR. */
__host__ __device__ constexpr int reg_rows(int n, int pr, bool split) { return split ? n / pr : n; }

/* the register backward's shared memory: the token tile, G's rows (GSM), a flag per group, one for the segment and
 * one per anchor slot */
size_t reg_smem(bool gsm, int pr, int n = 64, bool split = false)
{
    return sizeof(float) * ((size_t)SEG * RNV * n + (gsm ? (size_t)reg_rows(n, pr, split) * reg_gsp(n, pr) : 0) +
                            SEG / GRP + 1 + SEG);
}

/* This thread's part (u) of row i of the state (registers s) through one token whose sa_i is known: the update of
 * row_step without the dot product. */
template <int N, int PR, bool SEVEN>
__device__ __forceinline__ void row_update(float (&s)[N / PR], int u, float vi, float sai, const float *d,
                                           const float *k, const float *bb)
{
#pragma unroll
    for (int l = 0; l < N / PR; l++) {
        const int j = part_j<PR>(u, l);
        float e = s[l] * d[j] + vi * k[j];
        if (SEVEN)
            e += sai * bb[j];
        s[l] = e;
    }
}

/* sa_i of row i: this thread's part of the dot product with a, summed over the PR parts */
template <int N, int PR>
__device__ __forceinline__ float row_sa(const float (&s)[N / PR], int u, const float *a)
{
    float sa = 0.0f;
#pragma unroll
    for (int l = 0; l < N / PR; l++)
        sa += s[l] * a[part_j<PR>(u, l)];
    return part_sum<PR>(sa);
}

/* this thread's part of row i of state s into anchor slot A (key-major: A[j][i] = S_ij) */
template <int N, int PR> __device__ __forceinline__ void put_anchor(float *A, int i, int u, const float (&s)[N / PR])
{
#pragma unroll
    for (int l = 0; l < N / PR; l++)
        A[(size_t)part_j<PR>(u, l) * N + i] = s[l];
}
/* this thread's part of column i of the state in anchor (or checkpoint) A: row i of the key-major copy, its quads
 * q0, q0 + qs, q0 + 2·qs, ... (the register backward's column quads: u, u + PR, ... or, with the value rows split,
 * the block's r0 / 4, r0 / 4 + 1, ...) */
template <int N, int PR>
__device__ __forceinline__ void get_column(const float *A, int i, int q0, int qs, float (&st)[N / PR])
{
    const float4 *q = reinterpret_cast<const float4 *>(A + (size_t)i * N);
#pragma unroll
    for (int m = 0; m < N / (4 * PR); m++) {
        const float4 f = q[q0 + qs * m];
        st[4 * m] = f.x, st[4 * m + 1] = f.y, st[4 * m + 2] = f.z, st[4 * m + 3] = f.w;
    }
}

/* This thread's part of row i of the state at token s0 of the checkpoint chunk starting at cs (row_at_segment for
 * the register backward): the checkpoint, then a replay of the chunk's tokens before s0 in tiles of SEG. */
template <int N, int PR, bool SEVEN>
__device__ __forceinline__ void row_part_at_segment(float (&s)[N / PR], const float *ckc, float *tile, int nv,
                                                    const wkv_args &p, int b, int h, int i, int u, int cs, int s0)
{
#pragma unroll
    for (int l = 0; l < N / PR; l++)
        s[l] = ckc[(size_t)part_j<PR>(u, l) * N + i];
    for (int t0 = cs; t0 < s0; t0 += SEG) {
        __syncthreads();
        stage_tokens(tile, nv, p, N, b, h, t0, SEG, SEVEN, BV_V, -1, nullptr);
        __syncthreads();
        for (int tt = 0; tt < SEG; tt++) {
            const float *x = tile + (size_t)tt * nv * N;
            const float sa = SEVEN ? row_sa<N, PR>(s, u, x + BV_A * N) : 0.0f;
            row_update<N, PR, SEVEN>(s, u, x[BV_V * N + i], sa, x + BV_D * N, x + BV_K * N, x + BV_B * N);
        }
    }
}

/* The register backward's tile slot x (BV_R..BV_B, then the forward's sa when sa) from token offset o, as cp.async
 * copies of 16 bytes: vector v, quad e of the slot's N / 4 · 8 is thread (v · N / 4 + e) mod NT's (threads past
 * the last copy copy nothing). The next segment's tokens go into the slots the walk back has finished with; logw is
 * copied as it is, and slot_finish makes it the decay once the copies are waited for. */
template <int NT, int N>
__device__ __forceinline__ void slot_async(float *x, const wkv_args &p, size_t o, const float *dy, bool sa)
{
    static_assert(BV_R == 0 && BV_D == 1 && BV_K == 2 && BV_V == 3 && BV_DY == 4 && BV_A == 5 && BV_B == 6 &&
                      BV_SA == 7,
                  "slot_async copies vector v into slot v");
    constexpr int Q = N / 4;
    static_assert(NT % Q == 0, "a thread copies the same quad of each of its vectors");
    const int j = 4 * (threadIdx.x % Q);
    for (int v = threadIdx.x / Q; v < 8; v += NT / Q) {
        if (v == BV_SA && !sa)
            continue;
        const float *src = v == BV_R ? p.r : v == BV_D ? p.logw : v == BV_K ? p.k : v == BV_V ? p.v
                           : v == BV_DY ? dy : v == BV_A ? p.a : v == BV_B ? p.b : p.sa;
        cp_async16(x + v * N + j, src + o + j);
    }
}

/* after this thread's copies of slot_async are waited for: the decays of the logw quad it copied into slot x, if
 * any */
template <int NT, int N> __device__ __forceinline__ void slot_finish(float *x)
{
    constexpr int Q = N / 4;
    for (int v = threadIdx.x / Q; v < 8; v += NT / Q)
        if (v == BV_D)
            decays_in_place(x + BV_D * N + 4 * (threadIdx.x % Q));
}

/* Blocks per SM the register backward is compiled for (ptxas, sm_90: registers a thread, bytes of spills a thread
 * stored / loaded, wkv7 with G's rows in shared memory): one thread per index 4 (255, 32 / 16; 512 (b, h) pairs fit
 * an H100 in one wave), two 3 (168, 36 / 48; capped at 128 for 4 it spills 268 / 268), four 2 (128, 20 / 20). With
 * the value rows split (one thread per key, N threads a block): what the shared memory lets fit, at most 4. */
__host__ __device__ constexpr int reg_blocks(int pr, int n = 64, bool split = false)
{
    return !split ? (pr == 1 ? 4 : pr == 2 ? 3 : 2) : n == 64 ? 4 : 2;
}

/* With the value rows split, the blocks of one (b, h) add their parts of a key gradient in block order: block s
 * waits until block s − 1 has written a token's before it reads them back and adds its own. chain[s] counts the
 * tokens block s has finished (published every CHAIN_PUB tokens, at every segment's start and at the end, after a
 * barrier and a fence: the pattern of a grid-wide barrier); block s − 1 never waits for block s, and the launcher
 * splits only where every block fits on the device at once, so the chain always moves. The sums are in a fixed
 * order: deterministic. */
constexpr int CHAIN_PUB = 4;
#ifndef RLC_WKV_CHAIN_WAIT /* (the host emulation runs the blocks one after another: it checks that no wait is needed) */
#define RLC_WKV_CHAIN_WAIT(flag, need)                                                                                \
    do {                                                                                                          \
        while (*(volatile const int *)(flag) < (need)) {                                                          \
        }                                                                                                         \
        __threadfence();                                                                                          \
    } while (0)
#endif
__device__ __forceinline__ void chain_publish(int *flag, int tokens)
{
    __threadfence(); /* after the block's barrier: every thread's gradient stores of those tokens are visible */
    *(volatile int *)flag = tokens;
}

/* SPLIT: the (b, h) pair's N value rows in PR blocks of R = N / PR (grid y), N threads a block. Thread t is column
 * (key) t of the state and of G over the block's rows (st, gc: R entries) and part u = t % PR of row r0 + t / PR (its
 * keys part_j, R of them, as without the split): the same register arrays, now for 2× or 4× the blocks of a pair
 * that is alone on its SM. A column's sums (dr, dd, dk, db, da) are partial over the block's rows: they are added
 * to the gradients through the chain above; a row's (dv, dsa) are whole in the block. The anchors' rows and
 * dstate_in's are the block's own. */
template <bool SEVEN, bool GSM, int PR, int N = 64, bool SPLIT = false>
__global__ void __launch_bounds__(SPLIT ? N : N * PR, reg_blocks(PR, N, SPLIT))
    wkv_backward_reg_kernel(wkv_args p, wkv_grads g, const float *dy, const float *dstate_out, const float *ckpt,
                            float *ws, float *dstate_in, int *chain)
{
    constexpr int NV = RNV, NT = SPLIT ? N : N * PR, NP = N / PR, NQ = NP / 4, GSP = reg_gsp(N, PR);
    constexpr int R = reg_rows(N, PR, SPLIT);
    constexpr size_t NN = (size_t)N * N;
    extern __shared__ __align__(16) float smem[];
    /* split: the PR blocks of a pair are adjacent (block bh·PR + part), so they start together, part s − 1 first */
    const int t = threadIdx.x, u = t % PR, bh = SPLIT ? blockIdx.x / PR : blockIdx.x, b = bh / p.H, h = bh % p.H;
    const int part = SPLIT ? (int)(blockIdx.x % PR) : 0, r0 = part * R;
    /* row (value index) and column (key index) of this thread; the column's entries are the rows of its quads m,
     * 4·(cq0 + cqs·m) .. 4·(cq0 + cqs·m) + 3 (entry l = 4m + e: row crow(l)) */
    const int row = r0 + t / PR, col = SPLIT ? t : t / PR, cq0 = SPLIT ? r0 / 4 : u, cqs = SPLIT ? 1 : PR;
    auto crow = [&](int l) { return 4 * (cq0 + cqs * (l >> 2)) + (l & 3); }; /* the row of column entry gc[l] */
    float *tile = smem;                                                    /* [SEG][NV][N] */
    float *Grow = tile + (size_t)SEG * NV * N + (size_t)(t / PR) * GSP; /* GSM: row `row` of G, [N] of [R][GSP] */
    int *steep = (int *)(tile + (size_t)SEG * NV * N + (GSM ? R * GSP : 0)); /* [SEG / GRP]: anchors alone */
    int *broken = steep + SEG / GRP; /* the stored path: some key's decays over the whole segment exceed the bound */
    int *anchored = broken + 1;      /* [SEG]: slot m (the state before token m) is an anchor, not stepped back to */
    const size_t soff = (size_t)bh * NN;
    const int nc = (p.T + p.L - 1) / p.L;
    const float *ck = ckpt + (size_t)bh * nc * NN;
    float *An = ws + (size_t)bh * (SEG + 1) * NN; /* slot m: the state before token m of the segment */
    float *const outs[6] = {g.r, g.logw, g.k, g.v, g.a, g.b}; /* thread part u writes output q when q % PR == u */
    int *const mine = SPLIT ? chain + (size_t)bh * PR + part : nullptr;
    int walked = 0; /* tokens walked back so far (split: the chain's count) */

    /* GSM: this thread's part of row `row` of G in shared memory instead (Grow; only this thread uses those
     * entries) */
    float gr[GSM ? 1 : NP], gc[NP];
#pragma unroll
    for (int l = 0; l < NP; l++) {
        const int j = part_j<PR>(u, l);
        (GSM ? Grow[j] : gr[GSM ? 0 : l]) = dstate_out ? dstate_out[soff + (size_t)row * N + j] : 0.0f;
        gc[l] = dstate_out ? dstate_out[soff + (size_t)crow(l) * N + col] : 0.0f;
    }

    /* p.async (wkv7): while a segment is walked back, the tokens of the next one (when it is the first of its chunk,
     * which needs no replay through the tile) are copied into the slots the walk has finished with; `have`: the
     * segment's tokens are in the tile (all but slot 0, copied at its start) */
    bool have = false;
    for (int c = nc - 1; c >= 0; c--) {
        const int cs = c * p.L, ce = min(p.T, cs + p.L), nseg = (ce - cs + SEG - 1) / SEG;
        for (int sg = nseg - 1; sg >= 0; sg--) {
            const int s0 = cs + sg * SEG, n = min(SEG, ce - s0), ngrp = (n + GRP - 1) / GRP;
            /* stored: the forward kept every token's sa (p.sa) and the state after this segment is the next
             * chunk's checkpoint, so the recompute only has to make the anchors inside the segment (none where
             * the decays allow stepping back over all of it) and needs no dot product */
            const bool stored = SEVEN && p.sa && s0 == cs && s0 + n == ce && c + 1 < nc;
            const float *slot0 = s0 == cs ? ck + (size_t)c * NN : An; /* the state before the segment */
            const float *slotn = stored ? ck + (size_t)(c + 1) * NN : An + (size_t)n * NN; /* the state after it */
            /* the next segment walked (the previous chunk's last when this is its chunk's first) and whether its tokens
             * are prefetched: only a chunk's first segment (s0 at the chunk start: no replay) */
            const int pc = sg > 0 ? c : c - 1, pce = min(p.T, (pc + 1) * p.L);
            const bool pf = SEVEN && p.async && pc >= 0 && (sg == 1 || (sg == 0 && pce - pc * p.L <= SEG));
            /* its length (0: not prefetched; it ends where this segment starts) and whether it is stored */
            const int pn = pf ? min(SEG, pce - pc * p.L) : 0;
            const bool pstored = pf && p.sa && pc * p.L + pn == pce; /* (pc + 1 < nc: pc < c) */
            if (SPLIT) { /* the last segment's tokens, before this one's recompute keeps the next block waiting */
                __syncthreads();
                if (t == 0 && walked > 0)
                    chain_publish(mine, walked);
            }

            /* 1. this thread's part of row `row` of the state at s0 (a replay uses the tile: before the tokens are
             * staged) */
            float s[NP];
            row_part_at_segment<N, PR, SEVEN>(s, ck + (size_t)c * NN, tile, NV, p, b, h, row, u, cs, s0);

            /* 2. the segment's tokens with dy (and the stored sa); which groups cannot step back */
            __syncthreads();
            if (have) { /* slot 0 now (the last token walked before read it); the others came during that walk */
                if (t == 0)
                    RLC_WKV_PREFETCH_SEEN();
                slot_async<NT, N>(tile, p, tok_off(p, b, s0, h), dy, stored);
                cp_async_commit();
                cp_async_wait<0>();
                for (int m = 0; m < n; m++)
                    slot_finish<NT, N>(tile + (size_t)m * NV * N);
            } else {
                stage_tokens(tile, NV, p, N, b, h, s0, n, SEVEN, BV_V, BV_DY, dy);
                if (stored)
                    stage_sa<NT>(tile, NV, p, N, b, h, s0, n);
            }
            if (t < SEG / GRP)
                steep[t] = !p.backstep;
            if (t == 0)
                *broken = !p.backstep;
            __syncthreads();
            if (p.backstep && (SPLIT || u == 0)) { /* (one thread per key: `col`) */
                float whole = 1.0f;
                for (int gi = 0; gi < ngrp; gi++) {
                    float prod = 1.0f; /* the key's decays over the group, those above 1 counted as 1 */
                    for (int tau = gi * GRP; tau < min(n, gi * GRP + GRP); tau++)
                        prod *= fminf(tile[(size_t)tau * NV * N + BV_D * N + col], 1.0f);
                    if (!(prod >= BACK_MIN_PROD))
                        steep[gi] = 1; /* every writer writes 1 */
                    whole *= prod;
                }
                if (!(whole >= BACK_MIN_PROD))
                    *broken = 1;
            }
            __syncthreads();
            /* which slots the walk reads instead of stepping back to: slot 0 (the state before the segment),
             * every group's first (unless the stored path steps back over the whole segment) and every slot of a
             * group too steep to step back through; the recompute writes them (slot 0 only inside a chunk) */
            if (t < SEG) {
                const bool whole = stored && !*broken;
                anchored[t] = t == 0 || (t < n && ((t % GRP == 0 && !whole) || steep[t / GRP]));
            }
            __syncthreads();
            int upto = n; /* the recompute runs tokens 0..upto−1 and writes slot upto last */
            if (stored) {
                upto = 0;
                for (int m = 1; m < n; m++)
                    if (anchored[m])
                        upto = m;
            }
            if (t == 0 && part == 0) {
                for (int gi = 0; gi < ngrp; gi++)
                    RLC_WKV_SEGMENT_SEEN(!steep[gi]);
                if (stored)
                    RLC_WKV_STORED_SEEN(upto);
            }

            /* 3. the recompute from row `row` of the state at s0: the anchors into An (and, without the stored sa,
             * sa into the tile and the state after the segment) */
            for (int tau = 0; tau < upto; tau++) {
                float *x = tile + (size_t)tau * NV * N;
                if (anchored[tau] && !(tau == 0 && s0 == cs))
                    put_anchor<N, PR>(An + (size_t)tau * NN, row, u, s);
                float sa = 0.0f;
                if (SEVEN && stored)
                    sa = x[BV_SA * N + row];
                else if (SEVEN) {
                    sa = row_sa<N, PR>(s, u, x + BV_A * N);
                    if (u == 0)
                        x[BV_SA * N + row] = sa; /* slot written by one thread of the row only */
                }
                row_update<N, PR, SEVEN>(s, u, x[BV_V * N + row], sa, x + BV_D * N, x + BV_K * N, x + BV_B * N);
            }
            if (upto > 0)
                put_anchor<N, PR>(An + (size_t)upto * NN, row, u, s);
            __syncthreads(); /* the anchors (global) and the sa slots are visible to the whole block */

            /* 4. the walk back: st = this thread's part of column `col` of S_t, the state after token t; the next
             * segment's tokens into the slots this segment does not use, then into each slot once every thread is
             * past it */
            float st[NP];
            get_column<N, PR>(slotn, col, cq0, cqs, st);
            for (int m = n; m < pn; m++)
                slot_async<NT, N>(tile + (size_t)m * NV * N, p, tok_off(p, b, s0 - pn + m, h), dy, pstored);
            for (int tau = n - 1; tau >= 0; tau--, walked++) {
                float *x = tile + (size_t)tau * NV * N;
                const float *r = x + BV_R * N, *dc = x + BV_D * N, *k = x + BV_K * N, *v = x + BV_V * N;
                const float *dyt = x + BV_DY * N, *a = x + BV_A * N, *bb = x + BV_B * N, *sav = x + BV_SA * N;
                const size_t o = tok_off(p, b, s0 + tau, h);
                /* the gradients this thread adds to, read now so that the loads are not waited for at the end (split:
                 * dv only; the key gradients once the block before has added to them) */
                float old[6];
#pragma unroll
                for (int q = 0; q < 6; q++)
                    old[q] = !SPLIT && q % PR == u && (SEVEN || q < 4) ? outs[q][o + col]
                             : SPLIT && q == 3 && u == 0                ? outs[q][o + row]
                                                                        : 0.0f;
                const float ri = r[col], di = dc[col], ki = k[col], dyi = dyt[row];
                const float ai = SEVEN ? a[col] : 0.0f, bi = SEVEN ? bb[col] : 0.0f;

                /* row `row`: G' = G + dy rᵀ, dv, dsa */
                float dv = 0.0f, dsa = 0.0f;
#pragma unroll
                for (int m = 0; m < NQ; m++) {
                    const int j = 4 * (PR * m + u);
                    const float4 r4 = ld4<true>(r, j, N), k4 = ld4<true>(k, j, N);
                    const float4 b4 = SEVEN ? ld4<true>(bb, j, N) : r4;
                    const float rr[4] = {r4.x, r4.y, r4.z, r4.w}, kk[4] = {k4.x, k4.y, k4.z, k4.w};
                    const float bv[4] = {b4.x, b4.y, b4.z, b4.w};
                    if (GSM) { /* G' here only; the update below forms it again */
                        const float4 g4 = *reinterpret_cast<const float4 *>(Grow + j);
                        const float gg[4] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const float gp = gg[e] + dyi * rr[e];
                            dv += gp * kk[e];
                            if (SEVEN)
                                dsa += gp * bv[e];
                        }
                    } else {
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            float &gj = gr[GSM ? 0 : 4 * m + e];
                            gj += dyi * rr[e];
                            dv += gj * kk[e];
                            if (SEVEN)
                                dsa += gj * bv[e];
                        }
                    }
                }
                if (SEVEN) {
                    dsa = part_sum<PR>(dsa);
                    if (u == 0)
                        x[BV_DSA * N + row] = dsa;
                }

                /* column `col`, one pass (a vector read twice would be kept in registers): dr from S_t, then
                 * S_{t−1} (stepped back, or an anchor's column), G' = G + dy rᵀ, dd, dk, db */
                const bool anchor = anchored[tau];
                const float4 *an4 = reinterpret_cast<const float4 *>((tau == 0 ? slot0 : An + (size_t)tau * NN) +
                                                                     (size_t)col * N);
                const float inv = 1.0f / di;
                float dr = 0.0f, dd = 0.0f, dk = 0.0f, db = 0.0f;
#pragma unroll
                for (int m = 0; m < NQ; m++) {
                    const int cq = cq0 + cqs * m; /* the column's quad m: rows 4·cq .. 4·cq + 3 */
                    const float4 y4 = ld4<true>(dyt, 4 * cq, N), v4 = ld4<true>(v, 4 * cq, N);
                    const float4 s4 = SEVEN ? ld4<true>(sav, 4 * cq, N) : v4;
                    const float4 f4 = anchor ? an4[cq] : v4;
                    const float yy[4] = {y4.x, y4.y, y4.z, y4.w}, vv[4] = {v4.x, v4.y, v4.z, v4.w};
                    const float ss[4] = {s4.x, s4.y, s4.z, s4.w}, ff[4] = {f4.x, f4.y, f4.z, f4.w};
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int l = 4 * m + e;
                        dr += st[l] * yy[e];
                        float w = st[l] - vv[e] * ki;
                        if (SEVEN)
                            w -= ss[e] * bi;
                        st[l] = anchor ? ff[e] : w * inv;
                        gc[l] += yy[e] * ri;
                        dd += gc[l] * st[l];
                        dk += gc[l] * vv[e];
                        if (SEVEN)
                            db += gc[l] * ss[e];
                    }
                }
                /* da from S_{t−1} and every row's dsa; both copies of G take the update. Split: the block before
                 * has added its part of this token's key gradients before the barrier lets this block on (and this
                 * block's tokens before `walked` are published) */
                float da = 0.0f;
                if (SEVEN || SPLIT) {
                    if (SPLIT && part > 0 && t == 0)
                        RLC_WKV_CHAIN_WAIT(mine - 1, walked + 1);
                    __syncthreads(); /* every row's dsa is in the tile; every thread is done with slot tau + 1 */
                    if (SPLIT && t == 0 && walked > 0 && walked % CHAIN_PUB == 0)
                        chain_publish(mine, walked);
                    if (SEVEN && tau + 1 < min(n, pn)) /* (slots n.. went before the walk) */
                        slot_async<NT, N>(x + (size_t)NV * N, p, tok_off(p, b, s0 - pn + tau + 1, h), dy, pstored);
                }
                const float *dsv = x + BV_DSA * N;
#pragma unroll
                for (int m = 0; m < NQ; m++) {
                    const int j = 4 * (PR * m + u), cq = cq0 + cqs * m;
                    const float4 d4 = ld4<true>(dc, j, N);
                    const float4 q4 = SEVEN ? ld4<true>(dsv, 4 * cq, N) : d4, a4 = SEVEN ? ld4<true>(a, j, N) : d4;
                    const float dd4[4] = {d4.x, d4.y, d4.z, d4.w}, qq[4] = {q4.x, q4.y, q4.z, q4.w};
                    const float aa[4] = {a4.x, a4.y, a4.z, a4.w};
                    float gg[4] = {0.0f, 0.0f, 0.0f, 0.0f}; /* GSM: G' of the row again */
                    if (GSM) {
                        const float4 g4 = *reinterpret_cast<const float4 *>(Grow + j), r4 = ld4<true>(r, j, N);
                        gg[0] = g4.x + dyi * r4.x, gg[1] = g4.y + dyi * r4.y;
                        gg[2] = g4.z + dyi * r4.z, gg[3] = g4.w + dyi * r4.w;
                    }
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int l = 4 * m + e;
                        float &gj = GSM ? gg[e] : gr[GSM ? 0 : l];
                        if (SEVEN) {
                            da += st[l] * qq[e];
                            gc[l] = gc[l] * di + qq[e] * ai;
                            gj = gj * dd4[e] + dsa * aa[e];
                        } else {
                            gc[l] *= di;
                            gj *= dd4[e];
                        }
                    }
                    if (GSM)
                        *reinterpret_cast<float4 *>(Grow + j) = make_float4(gg[0], gg[1], gg[2], gg[3]);
                }
                /* a column's sums: the PR parts' (split: this block's rows'); a row's: the PR parts' */
                auto col_sum = [](float z) { return SPLIT ? z : part_sum<PR>(z); };
                const float val[6] = {col_sum(dr), col_sum(dd) * di, col_sum(dk), part_sum<PR>(dv),
                                      SEVEN ? col_sum(da) : 0.0f, SEVEN ? col_sum(db) : 0.0f};
#pragma unroll
                for (int q = 0; q < 6; q++) {
                    if (!(SEVEN || q < 4))
                        continue;
                    if (!SPLIT && q % PR == u)
                        outs[q][o + col] = old[q] + val[q];
                    else if (SPLIT && q == 3 && u == 0)
                        outs[q][o + row] = old[q] + val[q];
                    else if (SPLIT && q != 3) /* after the blocks before (L2: not a line this SM cached) */
                        outs[q][o + col] = __ldcg(outs[q] + o + col) + val[q];
                }
            }
            have = pn > 0;
        }
    }
    if (SPLIT) { /* the last tokens' key gradients */
        __syncthreads();
        if (t == 0)
            chain_publish(mine, walked);
    }
    if (dstate_in)
#pragma unroll
        for (int l = 0; l < NP; l++)
            dstate_in[soff + (size_t)crow(l) * N + col] += gc[l];
}

#include "cuda_wkv7_chunked.cuh"

/* How many of the per-row backwards' GRP-token groups of each (b, h) some key's decays make too steep to step back
 * through (their test, Π min(d, 1) < BACK_MIN_PROD over the group, d = expf(logw), in token order): such a group
 * takes the state history instead, and the more of them, the slower those backwards, while the chunked one takes
 * the same time on any decay. wkv6's backward picks between them by these counts (wkv6_chunked_by_counts). The
 * groups are aligned to GRP tokens from t = 0, as the per-row backwards' segments of 16-token checkpoint chunks make
 * them (the register backward's groups; the four-threads-per-row one's 8-token segments, its default; other
 * segment lengths, RADLADS_WKV_BSEG, test other spans). One block per (b, h) and STEEP_GPB groups, a thread per key
 * (a warp reads a token's N decays at once; a group's 8 loads unrolled); count[b·H + h] gets the block's total
 * added. */
constexpr int STEEP_GPB = 16;
__global__ void wkv_steep_groups_kernel(const float *logw, int T, int H, int N, unsigned *count)
{
    static __shared__ int steep[STEEP_GPB];
    const int b = blockIdx.x / H, h = blockIdx.x % H, key = threadIdx.x;
    const int ngrp = (T + GRP - 1) / GRP;
    unsigned c = 0; /* thread 0's */
    /* (grid.y is capped at 65535: past 8.4M tokens a block takes more than one span of groups) */
    for (int g0 = blockIdx.y * STEEP_GPB; g0 < ngrp; g0 += gridDim.y * STEEP_GPB) {
        const int g1 = min(ngrp, g0 + STEEP_GPB);
        for (int g = threadIdx.x; g < STEEP_GPB; g += blockDim.x)
            steep[g] = 0;
        __syncthreads();
        if (key < N)
            for (int g = g0; g < g1; g++) {
                float prod = 1.0f;
#pragma unroll
                for (int j = 0; j < GRP; j++) {
                    const int t = g * GRP + j;
                    if (t < T)
                        prod *= fminf(expf(logw[(((size_t)b * T + t) * H + h) * N + key]), 1.0f);
                }
                if (!(prod >= BACK_MIN_PROD))
                    steep[g - g0] = 1; /* every writer writes 1 */
            }
        __syncthreads();
        if (threadIdx.x == 0)
            for (int g = 0; g < g1 - g0; g++)
                c += (unsigned)steep[g];
        __syncthreads(); /* thread 0 has read the flags before the next span clears them */
    }
    if (threadIdx.x == 0 && c)
        atomicAdd(count + blockIdx.x, c);
}

/* Whether wkv6's backward should run on the chunked kernel, from the steep groups of each (b, h) (count[BH], out
 * of ngrp each) and how many pairs the per-row backward runs at once (at_once; the blocks of a wave end with the
 * slowest). A pair's per-row time grows from 1 (no group steep) to hist (every group) linearly in its steep share;
 * a wave lasts as long as its slowest pair; the chunked kernel takes `chunk` on any decays, the same units. Timed at
 * B8 T4096 on the H100 (ms, stepping back over every group / through the history for every group, which
 * RADLADS_WKV_BACKSTEP=0 makes it take / chunked): head size 64 15.0 / 29.0 / 20.8, 128 27.0 / 55.1 / 45.3 — a
 * uniform share of 0.42 at 64 and 0.65 at 128 breaks even (the H200, later per-row kernels stepping back: 11.1
 * against 21.1 at 64, 27.2 against 45.4 at 128). RAD-RWKV6's decays as converted (METHOD.md: steepest e^−0.37 a
 * token) make no group steep. */
bool wkv6_chunked_by_counts(const unsigned *count, int BH, int ngrp, int N, int at_once)
{
    const double hist = N > 64 ? 55.1 / 27.0 : 29.0 / 15.0, chunk = N > 64 ? 45.3 / 27.0 : 20.8 / 15.0;
    if (at_once < 1)
        at_once = 1;
    double row = 0.0;
    int waves = 0;
    for (int w0 = 0; w0 < BH; w0 += at_once, waves++) {
        double slowest = 1.0;
        for (int i = w0; i < BH && i < w0 + at_once; i++)
            slowest = fmax(slowest, 1.0 + (hist - 1.0) * count[i] / ngrp);
        row += slowest;
    }
    return row >= chunk * waves;
}

/* The forwards can stage with cp.async (p.async) when every vector allows 16-byte copies: N a multiple of 4
 * and the six inputs 16-byte aligned (absent ones are null: aligned). */
bool aligned16(const float *q) { return ((uintptr_t)q & 15) == 0; }
bool async_stage_ok(const wkv_args &p)
{
    return p.N % 4 == 0 && aligned16(p.r) && aligned16(p.logw) && aligned16(p.k) && aligned16(p.v) &&
           aligned16(p.a) && aligned16(p.b);
}

/* The forwards' cp.async tile length (p.async): 0 where the vectors do not allow 16-byte copies; else 16 tokens, or 8
 * at head size 128 and where `many` (b, h) pairs would not all fit on the device at once with two 16-token tiles (two
 * 8-token tiles take the shared memory of one 16-token tile). make_args and launch_forward decide with it. */
int async_tile(const wkv_args &p, bool many) { return !async_stage_ok(p) ? 0 : p.N > 64 || many ? SEG / 2 : SEG; }

/* The register backward prefetches its segments' tokens with cp.async, the four-threads-per-row one copies each
 * segment's with it, where the forward staged with it (RADLADS_WKV_ASYNC, the inputs' alignment) and dy and the
 * forward's sa allow 16-byte copies too. */
bool async_backward_ok(const wkv_args &p, const float *dy) { return p.async && aligned16(dy) && aligned16(p.sa); }
/* (the launchers set p.async to that: 1 or 0) */

/* the forwards' shared memory: one tile of SEG tokens, or with p.async two of p.async tokens */
size_t fwd_smem(int N, bool seven, int async)
{
    return sizeof(float) * (async ? 2 * (size_t)async : (size_t)SEG) * (seven ? 6 : 4) * N;
}

/* ---- launchers ------------------------------------------------------------------------------ */
/* tests/gpu/wkv_cuda_logic_check.cpp compiles the kernels above on the host (a std::thread per GPU
 * thread, a barrier for __syncthreads) and leaves the launchers out. */
#ifdef RLC_WKV_HOST_EMULATION
} // namespace
#else

size_t bwd_smem(int N, bool seven, int bseg)
{
    return sizeof(float) * ((size_t)N * (N + 1) + (size_t)bseg * (seven ? 8 : 5) * N + (size_t)N);
}

bool all_resident(int BH, size_t smem);

template <int CAP, bool EXACT, bool SEVEN>
cudaError_t launch_forward(cudaStream_t st, const wkv_args &p, int BH, const float *state_in, float *y,
                           float *state_out, float *ckpt)
{
    auto kern = wkv_forward_kernel<CAP, EXACT, SEVEN>;
    wkv_args q = p;
    if (q.async == SEG && !all_resident(BH, fwd_smem(p.N, SEVEN, SEG)))
        q.async = async_tile(q, true);
    const size_t sm = fwd_smem(p.N, SEVEN, q.async);
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    kern<<<BH, p.N, sm, st>>>(q, state_in, y, state_out, ckpt);
    return cudaGetLastError();
}

template <int CAP, bool SEVEN, int PRF = 1>
cudaError_t launch_forward_wide(cudaStream_t st, const wkv_args &p, int BH, const float *state_in, float *y,
                                float *state_out, float *ckpt)
{
    auto kern = wkv_forward_wide_kernel<CAP, SEVEN, PRF>;
    const size_t sm = fwd_smem(p.N, SEVEN, p.async); /* (run with few pairs: 16-token tiles) */
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    kern<<<BH * PRF, p.N * FQ / PRF, sm, st>>>(p, state_in, y, state_out, ckpt); /* a pair's blocks adjacent */
    return cudaGetLastError();
}

/* Head size 64's kernels with one block of 64 threads per (b, h) — the per-row forward and the register backward —
 * hide their latency only with about four blocks on every SM; with fewer (b, h) pairs the forward with 256 threads
 * per block (four per row) and the register backward with two threads per index (128) are faster. H100, B8 T4096
 * (512 pairs, 3.9 per SM): forward 5.86 ms per row vs 6.78 four per row; B8 T1024 H32 (the distill step's 256 pairs,
 * 1.9 per SM): forward 4.03 four per row vs 5.32 (ms per step, 44 calls). The backwards: backward_reg. */
bool few_pairs(int BH) { return BH < 3 * rlc_device_attr(cudaDevAttrMultiProcessorCount); }

/* Whether BH blocks of `smem` bytes of shared memory each fit on the device at once (1 KiB a block reserved): the
 * per-row forward's double 16-token tiles (48 KiB at head size 64) hold the H100 to 4 blocks per SM where 8 fit with
 * one tile; with more pairs than that it takes two 8-token tiles (the shared memory of one 16-token tile) instead. */
bool all_resident(int BH, size_t smem)
{
    const long sms = rlc_device_attr(cudaDevAttrMultiProcessorCount);
    const long per_sm = rlc_device_attr(cudaDevAttrMaxSharedMemoryPerMultiprocessor);
    return sms > 0 && per_sm > 0 && BH <= per_sm / (long)(smem + 1024) * sms;
}

/* Whether a block may have `bytes` of dynamic shared memory on the current device (RADLADS_TEST_SMEM_OPTIN lowers
 * the limit: tests/gpu/run.sh runs every op as on a GPU with 99 KiB). */
bool smem_fits(size_t bytes)
{
    const int optin = rlc_smem_optin();
    return optin > 0 && bytes <= (size_t)optin;
}

/* RADLADS_WKV_WIDE_FWD: the forward at head sizes 64 and 128 with four threads per row (1) or one (0); unset: at head
 * size 64 four when the (b, h) pairs are few (few_pairs), at 128 one (H200, wkv7 forward at head size 128: B2 T16384
 * H28 21.1 ms one per row, 26.1 four; B4 T512 H28 0.67 vs 0.83). */
bool forward_wide(int BH, int N)
{
    static const int allowed[] = {0, 1, 2};
    static const int mode = rlc_env_knob("RADLADS_WKV_WIDE_FWD", allowed, 3, 2);
    return mode == 2 ? N == 64 && few_pairs(BH) : mode == 1;
}

/* RADLADS_WKV_SPLIT_FWD = 2 or 4: the forward at head sizes 64 and 128 with four threads per row and each (b, h)
 * pair's rows split over that many blocks (wkv_forward_wide_kernel's PRF: at head size 128 blocks of 64 or 32 rows,
 * 256 or 128 threads), for pairs too few to fill the device; it then takes precedence over RADLADS_WKV_WIDE_FWD. The
 * rows are independent: the blocks need no order and no common memory, so unlike the backward's split any number of
 * them may wait for an SM. 0: off. Unset: 4 at head size 128 where at most every other SM has a pair, else off.
 * H200 (132 SMs), wkv7 forward at head size 128 (ms; one thread per row / split 2 / split 4): B2 T16384 H28 (step 3
 * of a 7B conversion, 56 pairs) 21.09 / 14.92 / 14.86; B4 T512 H28 (112 pairs) 0.674 / 0.811 / 0.820; B12 T512 H28
 * 1.810 / 2.395 / 2.210; B8 T4096 H32 7.26 / 12.82 / 12.87; at head size 64 slower at every shape timed (B8 T4096
 * H64 4.63 / 7.04 / 9.13; B8 T1024 H32 0.90 four threads per row / 0.89 / 1.16). */
int forward_split(int BH, int N)
{
    static const int allowed[] = {0, 2, 4};
    static const int mode = rlc_env_knob("RADLADS_WKV_SPLIT_FWD", allowed, 3, -1);
    if (mode >= 0)
        return mode;
    const int sms = rlc_device_attr(cudaDevAttrMultiProcessorCount);
    return N == 128 && sms > 0 && 2 * BH <= sms ? 4 : 0;
}

template <int CAP, bool EXACT, bool SEVEN, int BSEG>
cudaError_t launch_backward(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g, const float *dy,
                            const float *dstate_out, const float *ckpt, float *ws, float *dstate_in)
{
    auto kern = wkv_backward_kernel<CAP, EXACT, SEVEN, BSEG>;
    const size_t sm = bwd_smem(p.N, SEVEN, BSEG);
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    kern<<<BH, p.N, sm, st>>>(p, g, dy, dstate_out, ckpt, ws, dstate_in);
    return cudaGetLastError();
}


/* GIVEN: the kernel reads the forward's sa (p.sa set); a separate instantiation, so that the form without it keeps
 * its registers (ptxas, sm_90, 8-token segments: head size 64 80 registers and 40 bytes of spills at 3 blocks per
 * SM — at 4, 64 registers and 180 bytes; the launcher runs it with fewer pairs than 3 per SM — 128: 24 bytes) */
template <int CAP, bool SEVEN, int BSEG, bool GIVEN>
cudaError_t launch_backward_wide_g(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g, const float *dy,
                                   const float *dstate_out, const float *ckpt, float *ws, float *dstate_in)
{
    auto kern = wkv_backward_wide_kernel<CAP, SEVEN, BSEG, GIVEN>;
    const size_t sm = wide_smem(p.N, SEVEN, BSEG);
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    wkv_args q = p;
    q.async = async_backward_ok(p, dy);
    kern<<<BH, p.N * WQ, sm, st>>>(q, g, dy, dstate_out, ckpt, ws, dstate_in);
    return cudaGetLastError();
}
template <int CAP, bool SEVEN, int BSEG>
cudaError_t launch_backward_wide(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g, const float *dy,
                                 const float *dstate_out, const float *ckpt, float *ws, float *dstate_in)
{
    if (SEVEN && p.sa)
        return launch_backward_wide_g<CAP, SEVEN, BSEG, true>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    return launch_backward_wide_g<CAP, SEVEN, BSEG, false>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
}

template <bool SEVEN, bool GSM, int PR, int N = 64, bool SPLIT = false>
cudaError_t launch_backward_reg_g(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g, const float *dy,
                                const float *dstate_out, const float *ckpt, float *ws, float *dstate_in)
{
    auto kern = wkv_backward_reg_kernel<SEVEN, GSM, PR, N, SPLIT>;
    const size_t sm = reg_smem(GSM, PR, N, SPLIT);
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    wkv_args q = p;
    q.async = async_backward_ok(p, dy);
    int *chain = nullptr; /* split: the blocks' token counts, after the segment states (wkv_backward sized ws) */
    if (SPLIT) {
        chain = (int *)(ws + (size_t)BH * (SEG + 1) * N * N);
        if ((e = cudaMemsetAsync(chain, 0, sizeof(int) * BH * PR, st)) != cudaSuccess)
            return e;
    }
    kern<<<SPLIT ? BH * PR : BH, SPLIT ? N : N * PR, sm, st>>>(q, g, dy, dstate_out, ckpt, ws, dstate_in, chain);
    return cudaGetLastError();
}

/* Whether the split register backward's BH·PR blocks all fit on the device at once (its chain needs every block
 * before a waiting one running; an H100 measured the split slower wherever they did not: B12 T512 H28 N128, 336
 * pairs, 6.9 ms unsplit, 10.2 / 12.9 split 2 / 4, the blocks then in another order). */
template <bool SEVEN, int PR, int N> bool split_fits(int BH)
{
    /* blocks per SM + 1, per device, asked once (a backward at head size 128 asks every call); 0: not yet known (a
     * failed query is asked again next time) */
    static int per_sm[64];
    const size_t sm = reg_smem(true, PR, N, true);
    int dev = 0;
    if (!smem_fits(sm))
        return false;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
        (void)cudaGetLastError();
        return false;
    }
    if (!per_sm[dev]) {
        auto kern = wkv_backward_reg_kernel<SEVEN, true, PR, N, true>;
        int n = 0;
        if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm) != cudaSuccess ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kern, N, sm) != cudaSuccess) {
            (void)cudaGetLastError();
            return false;
        }
        per_sm[dev] = n + 1;
    }
    return (long)(per_sm[dev] - 1) * rlc_device_attr(cudaDevAttrMultiProcessorCount) >= (long)BH * PR;
}

/* RADLADS_WKV_SPLIT = 2 or 4: the backward at head sizes 64 and 128 splits each (b, h) pair's value rows over that
 * many blocks (the register backward, G's rows in shared memory, one thread per key: wkv_backward_reg_kernel's
 * SPLIT), for (b, h) pairs too few to fill the device — Qwen2.5-7B's 28 heads of 128 at 2 to 12 sequences a GPU
 * are 56 to 336 pairs on 132 SMs — where all the blocks fit at once (split_fits; else the other knobs decide); it
 * then takes precedence over RADLADS_WKV_REG and RADLADS_WKV_WIDE. 0: off. Unset: 4 at head size 128 (where it
 * fits: up to 66 pairs on 132 SMs), off at 64. H200, wkv7 backward at B2 T16384 H28 N128 (step 3 of a 7B
 * conversion, 56 pairs): 60.9 ms split 4, 82.6 split 2, 73.1 the four-threads-per-row backward (an H100 at T4096:
 * 17.2 / 20.7 / 18.3); at head size 64 split 2 was slower than the unsplit backwards (B8 T1024 H32: 3.64 vs 2.06). */
int backward_split(int N)
{
    static const int allowed[] = {0, 2, 4};
    static const int mode = rlc_env_knob("RADLADS_WKV_SPLIT", allowed, 3, -1);
    if (N != 64 && N != 128)
        return 0;
    return mode >= 0 ? mode : N == 128 ? 4 : 0;
}

template <int N, bool SEVEN>
cudaError_t launch_backward_split(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g, const float *dy,
                                  const float *dstate_out, const float *ckpt, float *ws, float *dstate_in)
{
    if (backward_split(N) == 2)
        return launch_backward_reg_g<SEVEN, true, 2, N, true>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    return launch_backward_reg_g<SEVEN, true, 4, N, true>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
}
template <int N, bool SEVEN> bool use_split(int BH)
{
    const int sp = backward_split(N);
    return sp == 2 ? split_fits<SEVEN, 2, N>(BH) : sp == 4 && split_fits<SEVEN, 4, N>(BH);
}

/* RADLADS_WKV_REG: the backward at head size 64. 2 runs the one with the state and the column copy of G in
 * registers and G's rows in shared memory, 1 the same with both copies of G in registers (the reference design, but
 * 255 registers and 780 bytes of spills per thread with nvcc 13: 22.1 ms where 2 takes 16.4 on the H100), 3 and 4 the
 * form of 2 with two and four threads per index (each a half or a quarter of every row and column: 2× or 4× the
 * warps of a block, for the (b, h) pairs too few to fill the device), 5 the form of 1 with four, 0 the
 * four-threads-per-row backward; unset: 2, or 3 when the pairs are few (few_pairs). H200, B8 (ms): T4096 H64 (512
 * pairs) 2 14.85, 3 16.51, 5 17.33, 4 20.86, 0 21.19; T1024 H32 (256 pairs) 3 2.06, 5 2.19, 4 2.65, 0 2.70.
 * tests/gpu/run.sh checks and times each. */
int backward_reg(int BH)
{
    static const int allowed[] = {0, 1, 2, 3, 4, 5};
    static const int mode = rlc_env_knob("RADLADS_WKV_REG", allowed, 6, 6);
    return mode == 6 ? (few_pairs(BH) ? 3 : 2) : mode;
}

template <bool SEVEN>
cudaError_t launch_backward_reg(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g, const float *dy,
                                const float *dstate_out, const float *ckpt, float *ws, float *dstate_in)
{
    switch (backward_reg(BH)) {
    case 1: return launch_backward_reg_g<SEVEN, false, 1>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    case 3: return launch_backward_reg_g<SEVEN, true, 2>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    case 4: return launch_backward_reg_g<SEVEN, true, 4>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    case 5: return launch_backward_reg_g<SEVEN, false, 4>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    default: return launch_backward_reg_g<SEVEN, true, 1>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    }
}

/* RADLADS_WKV_WIDE=0: head sizes 64 and 128 run the N-thread backward too (a benchmark knob). */
bool backward_wide()
{
    static const int allowed[] = {0, 1};
    static const int wide = rlc_env_knob("RADLADS_WKV_WIDE", allowed, 2, 1);
    return wide != 0;
}

/* RADLADS_WKV_BACKSTEP=0: the four-threads-per-row backward always writes each segment's state history to global
 * memory and reads it back (16 KiB per token-head at head size 64), instead of stepping the state back from the
 * segment's end, S_{t−1} = (S_t − sa bᵀ − v kᵀ) diag(1/d), where the decays allow (BACK_MIN_PROD). */
bool backstep_on()
{
    static const int allowed[] = {0, 1};
    static const int on = rlc_env_knob("RADLADS_WKV_BACKSTEP", allowed, 2, 1);
    return on != 0;
}

/* RADLADS_WKV_SA=0: the wkv7 backwards ignore the forward's sa and recompute every segment with dot products (the
 * peer run.sh times them against); the forward keeps sa either way. */
bool backward_reads_sa()
{
    static const int allowed[] = {0, 1};
    static const int on = rlc_env_knob("RADLADS_WKV_SA", allowed, 2, 1);
    return on != 0;
}

/* RADLADS_WKV_ASYNC=0: the forwards and the register backward stage every tile synchronously (the peer run.sh times
 * the default against). */
bool async_knob()
{
    static const int allowed[] = {0, 1};
    static const int on = rlc_env_knob("RADLADS_WKV_ASYNC", allowed, 2, 1);
    return on != 0;
}

/* The backward's segment length: RADLADS_WKV_BSEG = 4, 8 or 16, else −1 (each kernel's default). */
int backward_segment()
{
    static const int allowed[] = {4, 8, 16};
    static const int bseg = rlc_env_knob("RADLADS_WKV_BSEG", allowed, 3, -1);
    return bseg;
}

/* Which wkv runs on the chunked kernels at head sizes 64 and 128. RADLADS_WKV_CHUNKED=1: all four (wkv7 and wkv6,
 * forward and backward); 0: none; unset or 2: the wkv6 backward alone, and only on decays steep enough that the
 * per-row backwards would be slower (wkv6_by_decays; the wkv7 ones took 1.5x to 2.3x the per-row kernels' time on
 * any decay, bench/RESULTS.md); 3: the wkv6 backward alone, on any decays (the default before; a benchmark peer). The per-row forward writes the checkpoints the chunked backward reads (key-major,
 * every L tokens), so the two mix. tests/gpu/run.sh checks and times every setting. */
int chunked_mode()
{
    static const int allowed[] = {0, 1, 2, 3};
    static const int mode = rlc_env_knob("RADLADS_WKV_CHUNKED", allowed, 4, 2);
    return mode;
}

/* The chunked kernels cover head sizes 64 and 128 (wkv6 is wkv7 with a = b = 0). The forward needs checkpoint
 * intervals that are whole chunks, the backward a checkpoint at every chunk (the default interval); both need fast
 * TF32 tensor cores and the device to grant their shared memory (sm_80 and sm_90+, but not head size 128's backward
 * on sm_80; not sm_86/sm_89). */
bool chunked_forward(const wkv_args &p)
{
    if (p.L % WC || chunked_mode() != 1)
        return false;
    return (p.N == 64 && tc_fits(sizeof(float) * wc_fwd_floats<64>())) ||
           (p.N == 128 && tc_fits(sizeof(float) * wc_fwd_floats<128>()));
}
template <bool SEVEN> bool chunked_backward(const wkv_args &p)
{
    const int mode = chunked_mode();
    if (p.L != WC || !(mode == 1 || (mode >= 2 && !SEVEN)))
        return false;
    return (p.N == 64 && tc_fits(sizeof(float) * wc_bwd_floats<64>())) ||
           (p.N == 128 && tc_fits(sizeof(float) * wc_bwd_floats<128>()));
}

/* The (b, h) pairs wkv6's per-row backward runs at once where it does not split them: at head size 64 the register
 * backward's 4 blocks an SM (one thread per index; with few pairs, 3, but those few fit in one wave either way); at
 * 128 the four-threads-per-row backward at its default 8-token segments, as many as the occupancy API grants it (1
 * an SM, compiled for one 512-thread block; its 106.5 KiB would allow 2), asked once per device; a failed query
 * counts 1 an SM. ≤ 0 where the SM count is unknown (wkv6_chunked_by_counts then takes each pair as a wave). */
int wkv6_row_pairs_at_once(int N)
{
    const int sms = rlc_device_attr(cudaDevAttrMultiProcessorCount);
    if (N != 128)
        return 4 * sms;
    static int per_sm[64]; /* blocks an SM + 1; 0: not yet asked */
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
        (void)cudaGetLastError();
        return sms;
    }
    if (!per_sm[dev]) {
        auto kern = wkv_backward_wide_kernel<128, false, WIDE_BSEG_DEFAULT, false>;
        const size_t sm = wide_smem(128, false, WIDE_BSEG_DEFAULT);
        int n = 0;
        if (cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm) != cudaSuccess ||
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kern, 128 * WQ, sm) != cudaSuccess) {
            (void)cudaGetLastError();
            return sms;
        }
        per_sm[dev] = n + 1;
    }
    return (per_sm[dev] > 1 ? per_sm[dev] - 1 : 1) * sms;
}

/* wkv6's backward by the decays (the default mode): count each (b, h) pair's steep groups and ask
 * wkv6_chunked_by_counts. The pairs the per-row backward runs at once: all of them where it splits their value rows
 * (it does only where every block fits), else wkv6_row_pairs_at_once. The count costs one pass over logw (537 MB at
 * B8 T4096 H64 N64: about 0.2 ms on an H200) and a wait for it, the stream synchronized once per wkv6 backward, against the milliseconds a wrong
 * pick costs (the H200: 11.1 ms per-row against 21.1 chunked at B8 T4096 H64 as converted). RADLADS_WKV_BACKSTEP=0
 * makes every group take the history: the chunked kernel, as before. */
template <bool SEVEN>
cudaError_t wkv6_by_decays(cudaStream_t st, rlc_workspace *ws, const wkv_args &p, int B, bool *chunked)
{
    if (SEVEN || !*chunked || chunked_mode() != 2 || !p.backstep)
        return cudaSuccess;
    const int BH = B * p.H, ngrp = (p.T + GRP - 1) / GRP;
    const rl_wkv_dims d = {B, p.T, p.H, p.N, p.L};
    unsigned *count = (unsigned *)rlc_ws_get(ws, st, rl_scratch_wkv6_counts(&d)); /* B·H words */
    if (!count) /* no memory to count in: the chunked kernel, which needs none (rlc_ws_get cleared the error) */
        return cudaSuccess;
    cudaError_t e = cudaMemsetAsync(count, 0, sizeof(unsigned) * BH, st);
    if (e != cudaSuccess)
        return e;
    const int spans = min((ngrp + STEEP_GPB - 1) / STEEP_GPB, 65535);
    wkv_steep_groups_kernel<<<dim3(BH, spans), p.N, 0, st>>>(p.logw, p.T, p.H, p.N, count);
    if ((e = cudaGetLastError()) != cudaSuccess)
        return e;
    std::vector<unsigned> host((size_t)BH);
    if ((e = cudaMemcpyAsync(host.data(), count, sizeof(unsigned) * BH, cudaMemcpyDeviceToHost, st)) != cudaSuccess ||
        (e = cudaStreamSynchronize(st)) != cudaSuccess)
        return e;
    const bool split = (p.N == 64 && use_split<64, false>(BH)) || (p.N == 128 && use_split<128, false>(BH));
    const int at_once = split ? BH : wkv6_row_pairs_at_once(p.N);
    *chunked = wkv6_chunked_by_counts(host.data(), BH, ngrp, p.N, at_once);
    return cudaSuccess;
}

/* The chunked kernels' threads per block: 256 (8 warps: twice the tile products in flight of 4, and fewer
 * registers per thread — nvcc 13, sm_90: the wkv7 backward at head size 128 needs 211 registers with 256 threads
 * and 255 plus 288 B of spills with 128), or RADLADS_WKV_THREADS=128 (a benchmark knob: run.sh times both). */
int chunked_threads()
{
    static const int allowed[] = {128, 256};
    static const int th = rlc_env_knob("RADLADS_WKV_THREADS", allowed, 2, 256);
    return th;
}

/* The forward's N / NV blocks per (batch, head) run at once (their value rows are independent). */
template <int N, bool SEVEN, int TH>
cudaError_t launch_chunked_forward_th(cudaStream_t st, const wkv_args &p, int BH, const float *state_in, float *y,
                                      float *state_out, float *ckpt)
{
    constexpr int NV = WC_NV<N>;
    auto kern = wkv7_chunked_forward_kernel<N, NV, SEVEN, TH>;
    const size_t sm = sizeof(float) * wc_fwd_floats<N>();
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    kern<<<dim3(BH, N / NV), TH, sm, st>>>(p, state_in, y, state_out, ckpt);
    return cudaGetLastError();
}
template <int N, bool SEVEN>
cudaError_t launch_chunked_forward(cudaStream_t st, const wkv_args &p, int BH, const float *state_in, float *y,
                                   float *state_out, float *ckpt)
{
    return chunked_threads() == 256
               ? launch_chunked_forward_th<N, SEVEN, 256>(st, p, BH, state_in, y, state_out, ckpt)
               : launch_chunked_forward_th<N, SEVEN, 128>(st, p, BH, state_in, y, state_out, ckpt);
}

/* The backward's value slices add into the same key-indexed gradients: one launch per slice, in order (a fixed
 * order of addition, so the result is deterministic; no partial sums in memory). */
template <int N, bool SEVEN, int TH>
cudaError_t launch_chunked_backward_th(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g,
                                       const float *dy, const float *dstate_out, const float *ckpt, float *dstate_in)
{
    constexpr int NV = WC_NV<N>;
    auto kern = wkv7_chunked_backward_kernel<N, NV, SEVEN, TH>;
    const size_t sm = sizeof(float) * wc_bwd_floats<N>();
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm);
    if (e != cudaSuccess)
        return e;
    for (int slice = 0; slice < N / NV; slice++) {
        kern<<<BH, TH, sm, st>>>(p, g, dy, dstate_out, ckpt, dstate_in, slice);
        if ((e = cudaGetLastError()) != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}
template <int N, bool SEVEN>
cudaError_t launch_chunked_backward(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g, const float *dy,
                                    const float *dstate_out, const float *ckpt, float *dstate_in)
{
    return chunked_threads() == 256
               ? launch_chunked_backward_th<N, SEVEN, 256>(st, p, BH, g, dy, dstate_out, ckpt, dstate_in)
               : launch_chunked_backward_th<N, SEVEN, 128>(st, p, BH, g, dy, dstate_out, ckpt, dstate_in);
}

/* Head sizes 64 and 128 (the per-row kernels): split over blocks, four threads per row, or one. */
template <int CAP, bool SEVEN>
cudaError_t launch_forward_exact(cudaStream_t st, const wkv_args &p, int BH, const float *state_in, float *y,
                                 float *state_out, float *ckpt)
{
    switch (forward_split(BH, CAP)) {
    case 2: return launch_forward_wide<CAP, SEVEN, 2>(st, p, BH, state_in, y, state_out, ckpt);
    case 4: return launch_forward_wide<CAP, SEVEN, 4>(st, p, BH, state_in, y, state_out, ckpt);
    default:
        return forward_wide(BH, CAP) ? launch_forward_wide<CAP, SEVEN>(st, p, BH, state_in, y, state_out, ckpt)
                                     : launch_forward<CAP, true, SEVEN>(st, p, BH, state_in, y, state_out, ckpt);
    }
}

/* Head sizes 64 and 128 get fully unrolled kernels; others run the capped kernel with a bound check. */
template <bool SEVEN>
cudaError_t dispatch_forward(cudaStream_t st, const wkv_args &p, int BH, const float *state_in, float *y,
                             float *state_out, float *ckpt)
{
    if (chunked_forward(p))
        return p.N == 64 ? launch_chunked_forward<64, SEVEN>(st, p, BH, state_in, y, state_out, ckpt)
                         : launch_chunked_forward<128, SEVEN>(st, p, BH, state_in, y, state_out, ckpt);
    if (p.N == 64)
        return launch_forward_exact<64, SEVEN>(st, p, BH, state_in, y, state_out, ckpt);
    if (p.N == 128)
        return launch_forward_exact<128, SEVEN>(st, p, BH, state_in, y, state_out, ckpt);
    if (p.N <= 32)
        return launch_forward<32, false, SEVEN>(st, p, BH, state_in, y, state_out, ckpt);
    if (p.N <= 64)
        return launch_forward<64, false, SEVEN>(st, p, BH, state_in, y, state_out, ckpt);
    return launch_forward<128, false, SEVEN>(st, p, BH, state_in, y, state_out, ckpt);
}

/* The segment length of the one-thread-per-row backward: the knob's or the default, halved (down to 4) until its
 * shared memory fits the device — wkv7 at head size 128: 129 KiB with 16-token segments, 97 KiB with 8, 81 KiB with
 * 4 (the sm_86 / sm_89 parts grant 99 KiB: 8 there; wkv6 105 / 85 / 75 KiB). */
int row_backward_segment(int N, bool seven)
{
    int bseg = backward_segment() > 0 ? backward_segment() : BSEG_DEFAULT;
    while (bseg > 4 && !smem_fits(bwd_smem(N, seven, bseg)))
        bseg /= 2;
    return bseg;
}

/* The backward at head sizes 64 and 128, in order: the split register backward (where every block fits), the
 * register backward (64), the four-threads-per-row one, the one-thread-per-row one. The four-threads-per-row backward
 * at head size 128 needs 118.5 KiB of shared memory (wkv6: 106.5 KiB) with 8-token segments (102.5 with 4), more
 * than the sm_86 / sm_89 parts (A10, A40, L4, L40S, RTX 3090 / 4090) grant a block (99 KiB): there the
 * one-thread-per-row backward runs instead (row_backward_segment). */
template <int CAP, bool EXACT, bool SEVEN>
cudaError_t launch_backward_seg(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g, const float *dy,
                                const float *dstate_out, const float *ckpt, float *ws, float *dstate_in, bool split)
{
    if constexpr (EXACT) {
        if (split)
            return launch_backward_split<CAP, SEVEN>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
        if (CAP == 64 && backward_reg(BH) && backward_wide())
            return launch_backward_reg<SEVEN>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
        const int wseg = backward_segment() > 0 ? backward_segment() : WIDE_BSEG_DEFAULT;
        if (backward_wide() && smem_fits(wide_smem(p.N, SEVEN, wseg)))
            switch (wseg) {
            case 4: return launch_backward_wide<CAP, SEVEN, 4>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
            case 8: return launch_backward_wide<CAP, SEVEN, 8>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
            default: return launch_backward_wide<CAP, SEVEN, 16>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
            }
    }
    switch (row_backward_segment(p.N, SEVEN)) {
    case 4: return launch_backward<CAP, EXACT, SEVEN, 4>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    case 8: return launch_backward<CAP, EXACT, SEVEN, 8>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    default: return launch_backward<CAP, EXACT, SEVEN, 16>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in);
    }
}

/* split: wkv_backward's use_split answer, asked once there (it sized ws for the split's chain by it) */
template <bool SEVEN>
cudaError_t dispatch_backward(cudaStream_t st, const wkv_args &p, int BH, const wkv_grads &g, const float *dy,
                              const float *dstate_out, const float *ckpt, float *ws, float *dstate_in, bool split)
{
    if (p.N == 64)
        return launch_backward_seg<64, true, SEVEN>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in, split);
    if (p.N == 128)
        return launch_backward_seg<128, true, SEVEN>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in, split);
    if (p.N <= 32)
        return launch_backward_seg<32, false, SEVEN>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in, false);
    if (p.N <= 64)
        return launch_backward_seg<64, false, SEVEN>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in, false);
    return launch_backward_seg<128, false, SEVEN>(st, p, BH, g, dy, dstate_out, ckpt, ws, dstate_in, false);
}

bool dims_ok(const rl_wkv_dims *d)
{
    return d->batch > 0 && d->seq > 0 && d->heads > 0 && d->head_dim >= 1 && d->head_dim <= 128 && d->chunk >= 0 &&
           (long long)d->batch * d->heads <= 0x7fffffffLL;
}

wkv_args make_args(const rl_wkv_dims *d, const rl_wkv_in *in)
{
    wkv_args p;
    p.T = d->seq, p.H = d->heads, p.N = d->head_dim, p.L = d->chunk ? d->chunk : RL_WKV_DEFAULT_CHUNK;
    p.r = in->r, p.logw = in->logw, p.k = in->k, p.v = in->v, p.a = in->a, p.b = in->b;
    p.backstep = backstep_on();
    p.sa = nullptr;
    p.async = async_knob() ? async_tile(p, false) : 0;
    return p;
}

template <bool SEVEN>
cudaError_t wkv_forward(cudaStream_t st, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                        const rl_wkv_in *in, const float *state_in)
{
    if (!dims_ok(d))
        return cudaErrorInvalidValue;
    wkv_args p = make_args(d, in);
    const int BH = d->batch * d->heads;
    if (SEVEN && ckpt && !chunked_forward(p)) /* the checkpoint's sa part (kernels.h) */
        p.sa = ckpt + rl_wkv_checkpoint_floats(d, 6);
    return dispatch_forward<SEVEN>(st, p, BH, state_in, y, state_out, ckpt);
}

/* Workspace: [ckpt replay: B·H·nc·N² floats (wkv7: + B·T·H·N, sa), only when ckpt == NULL][segment states:
 * B·H·(SEG + 1)·N², the longest segment whatever the knob chose and, for the register backward, the state after
 * it; where the launcher splits the value rows (use_split, the same test it makes), B·H·4 ints after them; none for
 * the chunked kernel]. */
template <bool SEVEN>
cudaError_t wkv_backward(cudaStream_t st, rlc_workspace *ws, const rl_wkv_dims *d, const rl_wkv_grad *g,
                         float *dstate_in, const float *dy, const float *dstate_out, const rl_wkv_in *in,
                         const float *state_in, const float *ckpt)
{
    if (!dims_ok(d))
        return cudaErrorInvalidValue;
    const int BH = d->batch * d->heads, N = d->head_dim;
    wkv_args p = make_args(d, in);
    const bool may_chunk = chunked_backward<SEVEN>(p);
    bool chunked = may_chunk;
    if (const cudaError_t e = wkv6_by_decays<SEVEN>(st, ws, p, d->batch, &chunked); e != cudaSuccess)
        return e;
    /* the forward (the caller's, or the replay below) kept sa unless it was the chunked one; RADLADS_WKV_SA=0 reads
     * none (and the replay keeps none) */
    const bool has_sa = SEVEN && !chunked_forward(p) && backward_reads_sa();
    const int replay = ckpt ? 0 : has_sa ? 7 : 6;
    const size_t own = replay ? rl_wkv_checkpoint_floats(d, replay) : 0;
    /* the longest segment and the state after it; the split backward's token counts after them */
    bool split = !chunked && ((N == 64 && use_split<64, SEVEN>(BH)) || (N == 128 && use_split<128, SEVEN>(BH)));
    size_t bytes = rl_scratch_wkv_backward(d, replay, !chunked, split); /* the same sizes radlads plan counts */
    float *buf = bytes ? (float *)rlc_ws_get(ws, st, bytes) : nullptr;
    if (bytes && !buf && !chunked && may_chunk) { /* the decays chose the per-row backward, whose segment
                                                   * states do not fit: the chunked one needs none */
        chunked = true, split = false;
        bytes = rl_scratch_wkv_backward(d, replay, 0, 0);
        buf = bytes ? (float *)rlc_ws_get(ws, st, bytes) : nullptr;
    }
    if (bytes && !buf)
        return cudaErrorMemoryAllocation;
    if (has_sa)
        p.sa = (float *)(ckpt ? ckpt : buf) + rl_wkv_checkpoint_floats(d, 6); /* read only here */
    if (!ckpt) { /* replay the forward from state_in, keeping only the chunk-start states (and sa) */
        cudaError_t e = dispatch_forward<SEVEN>(st, p, BH, state_in, nullptr, nullptr, buf);
        if (e != cudaSuccess)
            return e;
        ckpt = buf;
    }
    wkv_grads gr;
    gr.r = g->r, gr.logw = g->logw, gr.k = g->k, gr.v = g->v, gr.a = g->a, gr.b = g->b;
    if (chunked)
        return p.N == 64 ? launch_chunked_backward<64, SEVEN>(st, p, BH, gr, dy, dstate_out, ckpt, dstate_in)
                         : launch_chunked_backward<128, SEVEN>(st, p, BH, gr, dy, dstate_out, ckpt, dstate_in);
    return dispatch_backward<SEVEN>(st, p, BH, gr, dy, dstate_out, ckpt, buf + own, dstate_in, split);
}

} // namespace

extern "C" {

void *rlc_ws_get(rlc_workspace *ws, cudaStream_t st, size_t bytes)
{
    if (bytes == 0)
        bytes = 1;
    if (ws->ptr && ws->bytes >= bytes)
        return ws->ptr;
    if (ws->ptr) { /* queued kernels may still read the old buffer */
        if (cudaStreamSynchronize(st) != cudaSuccess)
            return nullptr;
        if (ws->be)
            rl__mem_untrack(ws->be, ws->ptr);
        cudaFree(ws->ptr);
        ws->ptr = nullptr, ws->bytes = 0;
    }
    bytes = rl_scratch_rounded(bytes); /* whole MiB: fewer regrowths for slowly growing requests */
    void *p = nullptr;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        (void)cudaGetLastError(); /* the launcher reports cudaErrorMemoryAllocation itself */
        return nullptr;
    }
    if (ws->be && rl__mem_track(ws->be, p, bytes, "kernel scratch") != 0)
        ws->be = nullptr; /* the role table cannot grow: the scratch goes uncounted rather than unused */
    ws->ptr = p, ws->bytes = bytes;
    return p;
}

cudaError_t rlc_wkv7_forward(cudaStream_t st, rlc_workspace *ws, const rl_wkv_dims *d, float *y, float *state_out,
                             float *ckpt, const rl_wkv_in *in, const float *state_in)
{
    (void)ws;
    return wkv_forward<true>(st, d, y, state_out, ckpt, in, state_in);
}

cudaError_t rlc_wkv7_backward(cudaStream_t st, rlc_workspace *ws, const rl_wkv_dims *d, const rl_wkv_grad *g,
                              float *dstate_in, const float *dy, const float *dstate_out, const rl_wkv_in *in,
                              const float *state_in, const float *ckpt)
{
    return wkv_backward<true>(st, ws, d, g, dstate_in, dy, dstate_out, in, state_in, ckpt);
}

cudaError_t rlc_wkv6_forward(cudaStream_t st, rlc_workspace *ws, const rl_wkv_dims *d, float *y, float *state_out,
                             float *ckpt, const rl_wkv_in *in, const float *state_in)
{
    (void)ws;
    return wkv_forward<false>(st, d, y, state_out, ckpt, in, state_in);
}

cudaError_t rlc_wkv6_backward(cudaStream_t st, rlc_workspace *ws, const rl_wkv_dims *d, const rl_wkv_grad *g,
                              float *dstate_in, const float *dy, const float *dstate_out, const rl_wkv_in *in,
                              const float *state_in, const float *ckpt)
{
    return wkv_backward<false>(st, ws, d, g, dstate_in, dy, dstate_out, in, state_in, ckpt);
}

cudaError_t rlc_wkv_load(void)
{
    cudaFuncAttributes fa;
    return cudaFuncGetAttributes(&fa, wkv_forward_kernel<64, true, true>);
}

} // extern "C"

#endif /* RLC_WKV_HOST_EMULATION */
