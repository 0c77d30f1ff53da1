/* cuda_wkv7_chunked.cuh — wkv7 forward and backward in chunks of 16 tokens on the tensor cores (KERNELS.md §4
 * and §8 CUDA 2). Included by cuda_wkv.cu inside its anonymous namespace (and by the host emulation check);
 * the launchers choose it for head size 64 with 16-token checkpoints, RADLADS_WKV_CHUNKED=0 turns it off.
 *
 * Math, per (batch, head), for a chunk of C = 16 tokens starting from state S0 (S[i][j]: i = value, j = key).
 * G_t = Σ_{s≤t} logw_s (inclusive, over keys), G_{t−1} exclusive (G_{−1} = 0), G_m the reference at the
 * chunk's middle (m = C/2 − 1) and G_L its last. Scaled rows (all factors bounded by e^{8·|logw|}): q_t = r_t
 * e^{G_t−G_m}   â_t = a_t e^{G_{t−1}−G_m}   k̂_s = k_s e^{G_m−G_s}   b̂_s = b_s e^{G_m−G_s} q0_t = r_t e^{G_t}
 * a0_t = a_t e^{G_{t−1}}       kL_s = k_s e^{G_L−G_s}   bL_s = b_s e^{G_L−G_s} so that every product below is
 * of numbers within fp32 range for logw ≥ −10 (RAD-RWKV7's decay is ≥ −0.607). Masked C×C Gram matrices: Aqk
 * = tril0(q k̂ᵀ), Aqb = tril0(q b̂ᵀ), Aak = tril₋₁(â k̂ᵀ), Aab = tril₋₁(â b̂ᵀ). Then U  = (I − Aab)⁻¹ (a0 S0ᵀ +
 * Aak V)           (rows u_t = S_{t−1} a_t: forward substitution, per value column) Y  = q0 S0ᵀ + Aqk V + Aqb
 * U S_L = S0 diag(e^{G_L}) + Vᵀ kL + Uᵀ bL which equals the token recurrence of kernels.h exactly (float64
 * check: 4e-16). The backward runs the same chunk from its stored S0 and back-propagates through these
 * products, given dY and dS = ∂L/∂S_L: dv = kL dSᵀ + Aqkᵀ dY + Aakᵀ dR,  dkL = V dS,  dbL = U dS,  dq0 = dY
 * S0,  dU = bL dSᵀ + Aqbᵀ dY, dR = (I − Aab)⁻ᵀ dU (back substitution),  da0 = dR S0, dA.qk = tril0(dY Vᵀ),
 * dA.qb = tril0(dY Uᵀ), dA.ak = tril₋₁(dR Vᵀ), dA.ab = tril₋₁(dR Uᵀ), dq = dA.qk k̂ + dA.qb b̂,  dk̂ = dAqkᵀ q +
 * dAakᵀ â,  db̂ = dAqbᵀ q + dAabᵀ â,  dâ = dA.ak k̂ + dA.ab b̂, dS0 = dS diag(e^{G_L}) + dYᵀ q0 + dRᵀ a0, then
 * each raw gradient is the scaled row's gradient times its factor (dr = dq e^{G_t−G_m} + dq0 e^{G_t}, …), and
 * each exponent's gradient (dX ⊙ X̂ for a scaled row X̂; colsum(dS ⊙ S0) e^{G_L} for the state) lands on the G
 * it was taken from: dlogw_s = Σ_{t≥s} ∂L/∂G_t (a reverse cumulative sum per key).
 *
 * Layout: one block of 128 threads (4 warps) per (batch, head), chunks walked in order (forward) or in
 * reverse (backward). The state (and the backward's dS) stays in shared memory in fp32 for the whole
 * sequence; token tiles are C × N row-major; every product is cut into 16 × 16 output tiles handed to the
 * warps round robin, each tile a wmma TF32 product with fp32 accumulation. TF32 keeps 10 mantissa bits, so
 * each operand is split x = hi + lo (both TF32) and a product is hi·hi + hi·lo + lo·hi ("3xTF32"): fp32-level
 * accuracy, so the kernel is checked against the fp32 CPU backend at the same tolerance as the per-row
 * kernels. Sequential parts (the cumulative sums over 16 tokens, the two triangular solves) run one thread
 * per column. A last partial chunk is padded with tokens of logw = 0 and zero vectors, which leave the state
 * unchanged and receive no gradient. */
#include <type_traits>
#ifndef RLC_WKV_HOST_EMULATION
#include <mma.h>
#endif

constexpr int WC = 16;             /* tokens per chunk */
constexpr int WC_MID = WC / 2 - 1; /* the reference row m */
constexpr int WC_THREADS = 128;
constexpr int WC_WARPS = WC_THREADS / 32;

/* A matrix operand X[m][k] in shared memory: at p[m·ld + k], or (t) at p[k·ld + m] — a transposed view. */
struct wc_view {
    const float *p;
    int ld;
    bool t;
};

struct wc_prod {
    wc_view a, b; /* a: M×K, b: K×N */
    int K;
};

template <class Frag> __device__ __forceinline__ void wc_split(Frag &hi, Frag &lo)
{
    for (int i = 0; i < hi.num_elements; i++) {
        const float x = hi.x[i], h = nvcuda::wmma::__float_to_tf32(x);
        hi.x[i] = h;
        lo.x[i] = nvcuda::wmma::__float_to_tf32(x - h);
    }
}

/* acc += A[m0.., 0..K) · B[0..K, n0..) for one 16 × 16 tile, in 3xTF32. */
template <bool TA, bool TB>
__device__ __forceinline__ void
wc_mma(nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> &acc, const wc_prod &pr, int m0,
       int n0)
{
    namespace w = nvcuda::wmma;
    using LA = typename std::conditional<TA, w::col_major, w::row_major>::type;
    using LB = typename std::conditional<TB, w::col_major, w::row_major>::type;
    w::fragment<w::matrix_a, 16, 16, 8, w::precision::tf32, LA> ah, al;
    w::fragment<w::matrix_b, 16, 16, 8, w::precision::tf32, LB> bh, bl;
    for (int k0 = 0; k0 < pr.K; k0 += 8) {
        w::load_matrix_sync(ah, TA ? pr.a.p + (size_t)k0 * pr.a.ld + m0 : pr.a.p + (size_t)m0 * pr.a.ld + k0,
                            pr.a.ld);
        w::load_matrix_sync(bh, TB ? pr.b.p + (size_t)n0 * pr.b.ld + k0 : pr.b.p + (size_t)k0 * pr.b.ld + n0,
                            pr.b.ld);
        wc_split(ah, al);
        wc_split(bh, bl);
        w::mma_sync(acc, al, bh, acc);
        w::mma_sync(acc, ah, bl, acc);
        w::mma_sync(acc, ah, bh, acc);
    }
}

__device__ __forceinline__ void
wc_mma_any(nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> &acc, const wc_prod &pr,
           int m0, int n0)
{
    if (pr.K <= 0) return;
    if (pr.a.t) {
        if (pr.b.t)
            wc_mma<true, true>(acc, pr, m0, n0);
        else
            wc_mma<true, false>(acc, pr, m0, n0);
    } else {
        if (pr.b.t)
            wc_mma<false, true>(acc, pr, m0, n0);
        else
            wc_mma<false, false>(acc, pr, m0, n0);
    }
}

/* One output tile: out[m0.., n0..] (row-major, ld ldo) = (accumulate ? out : 0) + p1 + p2 (+ p3). Called by a
 * whole warp. */
__device__ __forceinline__ void
wc_tile(float *out, int ldo, int m0, int n0, bool accumulate, const wc_prod &p1,
        const wc_prod &p2 = wc_prod{{nullptr, 0, false}, {nullptr, 0, false}, 0},
        const wc_prod &p3 = wc_prod{{nullptr, 0, false}, {nullptr, 0, false}, 0})
{
    namespace w = nvcuda::wmma;
    w::fragment<w::accumulator, 16, 16, 8, float> acc;
    float *o = out + (size_t)m0 * ldo + n0;
    if (accumulate)
        w::load_matrix_sync(acc, o, ldo, w::mem_row_major);
    else
        w::fill_fragment(acc, 0.0f);
    wc_mma_any(acc, p1, m0, n0);
    wc_mma_any(acc, p2, m0, n0);
    wc_mma_any(acc, p3, m0, n0);
    w::store_matrix_sync(o, acc, ldo, w::mem_row_major);
}

/* Hands the output tiles of a phase to the block's warps round robin: `if (sc.mine()) wc_tile(...)` in the
 * same order in every thread (no job table: it would live in local memory). */
struct wc_sched {
    int n, warp;
    __device__ __forceinline__ bool mine()
    {
        return n++ % WC_WARPS == warp;
    }
};

__device__ __forceinline__ wc_sched wc_start()
{
    return wc_sched{0, (int)(threadIdx.x / 32)};
}

__device__ __forceinline__ wc_view wc_v(const float *p, int ld, bool t = false)
{
    return wc_view{p, ld, t};
}
__device__ __forceinline__ wc_prod wc_p(wc_view a, wc_view b, int K)
{
    return wc_prod{a, b, K};
}

/* Masks a C×C matrix in place: keeps s ≤ t (strict: s < t). */
__device__ __forceinline__ void wc_mask(float *A, bool strict)
{
    for (int e = threadIdx.x; e < WC * WC; e += WC_THREADS) {
        const int t = e / WC, s = e % WC;
        if (s > t || (strict && s == t)) A[e] = 0.0f;
    }
}

/* Stages the block's logw for chunk t0 into G (padding with 0), then (after a barrier) the per-key
 * cumulative sum in place: thread j < N walks its column. Ends with a barrier. */
template <int N> __device__ __forceinline__ void wc_cumsum(float *G, const wkv_args &p, int b, int h, int t0)
{
    for (int e = threadIdx.x; e < WC * N; e += WC_THREADS) {
        const int tt = e / N, j = e % N;
        G[e] = t0 + tt < p.T ? p.logw[tok_off(p, b, t0 + tt, h) + j] : 0.0f;
    }
    __syncthreads();
    if (threadIdx.x < N) {
        float run = 0.0f;
        for (int tt = 0; tt < WC; tt++) {
            run += G[tt * N + threadIdx.x];
            G[tt * N + threadIdx.x] = run;
        }
    }
    __syncthreads();
}

/* The scaled rows of one chunk from the raw inputs in global memory and G (see the top). Padded tokens
 * are zeros. */
struct wc_rows {
    float *q, *q0, *ah, *a0, *kh, *kL, *bh, *bL, *v;
};

template <int N>
__device__ __forceinline__ void wc_scale(const wc_rows &w, const float *G, const wkv_args &p, int b, int h,
                                         int t0)
{
    for (int e = threadIdx.x; e < WC * N; e += WC_THREADS) {
        const int tt = e / N, j = e % N;
        const float g = G[e], gx = tt ? G[e - N] : 0.0f, gm = G[WC_MID * N + j], gl = G[(WC - 1) * N + j];
        float r = 0.0f, k = 0.0f, v = 0.0f, a = 0.0f, bb = 0.0f;
        if (t0 + tt < p.T) {
            const size_t o = tok_off(p, b, t0 + tt, h) + j;
            r = p.r[o], k = p.k[o], v = p.v[o], a = p.a[o], bb = p.b[o];
        }
        const float fm = expf(gm - g), fl = expf(gl - g);
        w.q[e] = r * expf(g - gm);
        w.q0[e] = r * expf(g);
        w.ah[e] = a * expf(gx - gm);
        w.a0[e] = a * expf(gx);
        w.kh[e] = k * fm;
        w.bh[e] = bb * fm;
        w.kL[e] = k * fl;
        w.bL[e] = bb * fl;
        w.v[e] = v;
    }
}

/* The four C×C Gram matrices of a chunk (or their gradients): qk and qb keep s ≤ t, ak and ab s < t. */
struct wc_grams {
    float *qk, *qb, *ak, *ab;
};

template <int N>
__device__ __forceinline__ void wc_gram_tiles(wc_sched &sc, const wc_grams &A, const wc_rows &w)
{
    if (sc.mine()) wc_tile(A.qk, WC, 0, 0, false, wc_p(wc_v(w.q, N), wc_v(w.kh, N, true), N));
    if (sc.mine()) wc_tile(A.qb, WC, 0, 0, false, wc_p(wc_v(w.q, N), wc_v(w.bh, N, true), N));
    if (sc.mine()) wc_tile(A.ak, WC, 0, 0, false, wc_p(wc_v(w.ah, N), wc_v(w.kh, N, true), N));
    if (sc.mine()) wc_tile(A.ab, WC, 0, 0, false, wc_p(wc_v(w.ah, N), wc_v(w.bh, N, true), N));
}

__device__ __forceinline__ void wc_mask_grams(const wc_grams &A)
{
    wc_mask(A.qk, false);
    wc_mask(A.qb, false);
    wc_mask(A.ak, true);
    wc_mask(A.ab, true);
}

/* Forward substitution (I − Aab) U = R in place, one thread per value column. */
template <int N> __device__ __forceinline__ void wc_solve_lower(float *U, const float *Aab)
{
    if (threadIdx.x >= N) return;
    const int i = threadIdx.x;
    for (int t = 1; t < WC; t++) {
        float acc = U[t * N + i];
        for (int s = 0; s < t; s++)
            acc += Aab[t * WC + s] * U[s * N + i];
        U[t * N + i] = acc;
    }
}

/* Back substitution (I − Aab)ᵀ dR = dU in place. */
template <int N> __device__ __forceinline__ void wc_solve_upper(float *dR, const float *Aab)
{
    if (threadIdx.x >= N) return;
    const int i = threadIdx.x;
    for (int t = WC - 2; t >= 0; t--) {
        float acc = dR[t * N + i];
        for (int s = t + 1; s < WC; s++)
            acc += Aab[s * WC + t] * dR[s * N + i];
        dR[t * N + i] = acc;
    }
}

/* the state's row stride: a multiple of 4 (wmma), not of 32 (banks) */
template <int N> struct wc_sld {
    static constexpr int value = N + 4;
};

/* Shared-memory floats of each kernel. */
template <int N> constexpr size_t wc_fwd_floats()
{
    return (size_t)N * wc_sld<N>::value + 12 * (size_t)WC * N + 4 * WC * WC;
}
template <int N> constexpr size_t wc_bwd_floats()
{
    return 2 * (size_t)N * wc_sld<N>::value + 22 * (size_t)WC * N + 8 * WC * WC + N;
}

/* ---- forward
 * ------------------------------------------------------------------------------------------------ */

template <int N>
__global__ void __launch_bounds__(WC_THREADS)
    wkv7_chunked_forward_kernel(wkv_args p, const float *state_in, float *y, float *state_out, float *ckpt)
{
    static_assert(N % 16 == 0 && 2 * N <= WC_THREADS, "head size: a multiple of 16, at most half the block");
    extern __shared__ __align__(32) float wc_smem[];
    constexpr int SL = wc_sld<N>::value, TN = WC * N;
    float *S = wc_smem, *G = S + N * SL;
    wc_rows w;
    w.q = G + TN, w.q0 = w.q + TN, w.ah = w.q0 + TN, w.a0 = w.ah + TN, w.kh = w.a0 + TN, w.kL = w.kh + TN;
    w.bh = w.kL + TN, w.bL = w.bh + TN, w.v = w.bL + TN;
    float *U = w.v + TN, *Y = U + TN;
    const wc_grams A = {Y + TN, Y + TN + WC * WC, Y + TN + 2 * WC * WC, Y + TN + 3 * WC * WC};
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const size_t NN = (size_t)N * N, soff = (size_t)bh * NN;
    const int nc = (p.T + p.L - 1) / p.L;
    float *ck = ckpt ? ckpt + (size_t)bh * nc * NN : nullptr;

    for (int e = threadIdx.x; e < N * N; e += WC_THREADS)
        S[(e / N) * SL + e % N] = state_in ? state_in[soff + e] : 0.0f;
    __syncthreads();

    for (int t0 = 0; t0 < p.T; t0 += WC) {
        wc_cumsum<N>(G, p, b, h, t0);
        wc_scale<N>(w, G, p, b, h, t0);
        if (ck && t0 % p.L == 0) { /* key-major: ck[j][i] = S[i][j]; consecutive threads, consecutive i */
            float *c = ck + (size_t)(t0 / p.L) * NN;
            for (int e = threadIdx.x; e < N * N; e += WC_THREADS)
                c[e] = S[(e % N) * SL + e / N];
        }
        __syncthreads();
        {
            wc_sched sc = wc_start();
            wc_gram_tiles<N>(sc, A, w);
            for (int c = 0; c < N; c += 16) { /* R = a0 S0ᵀ, Y = q0 S0ᵀ (value columns c..c+15) */
                if (sc.mine()) wc_tile(U, N, 0, c, false, wc_p(wc_v(w.a0, N), wc_v(S, SL, true), N));
                if (y)
                    if (sc.mine()) wc_tile(Y, N, 0, c, false, wc_p(wc_v(w.q0, N), wc_v(S, SL, true), N));
            }
        }
        __syncthreads();
        wc_mask_grams(A);
        __syncthreads();
        {
            wc_sched sc = wc_start();
            for (int c = 0; c < N; c += 16) {
                if (sc.mine()) wc_tile(U, N, 0, c, true, wc_p(wc_v(A.ak, WC), wc_v(w.v, N), WC));
                if (y)
                    if (sc.mine()) wc_tile(Y, N, 0, c, true, wc_p(wc_v(A.qk, WC), wc_v(w.v, N), WC));
            }
        }
        __syncthreads();
        wc_solve_lower<N>(U, A.ab);
        if (threadIdx.x >= WC_THREADS - N) { /* the other threads scale the state's key column by e^{G_L} */
            const int j = threadIdx.x - (WC_THREADS - N);
            const float f = expf(G[(WC - 1) * N + j]);
            for (int i = 0; i < N; i++)
                S[i * SL + j] *= f;
        }
        __syncthreads();
        {
            wc_sched sc = wc_start();
            for (int c = 0; c < N && y; c += 16)
                if (sc.mine()) wc_tile(Y, N, 0, c, true, wc_p(wc_v(A.qb, WC), wc_v(U, N), WC));
            for (int i0 = 0; i0 < N; i0 += 16) /* S += Vᵀ kL + Uᵀ bL */
                for (int j0 = 0; j0 < N; j0 += 16)
                    if (sc.mine())
                        wc_tile(S, SL, i0, j0, true, wc_p(wc_v(w.v, N, true), wc_v(w.kL, N), WC),
                                wc_p(wc_v(U, N, true), wc_v(w.bL, N), WC));
        }
        __syncthreads();
        if (y)
            for (int e = threadIdx.x; e < WC * N; e += WC_THREADS) {
                const int tt = e / N;
                if (t0 + tt < p.T) y[tok_off(p, b, t0 + tt, h) + e % N] = Y[e];
            }
        /* the next chunk's first writes (G, the scaled rows) touch none of Y: no barrier needed here */
    }
    if (state_out)
        for (int e = threadIdx.x; e < N * N; e += WC_THREADS)
            state_out[soff + e] = S[(e / N) * SL + e % N];
}

/* ---- backward
 * ----------------------------------------------------------------------------------------------- */

template <int N>
__global__ void __launch_bounds__(WC_THREADS)
    wkv7_chunked_backward_kernel(wkv_args p, wkv_grads g, const float *dy, const float *dstate_out,
                                 const float *ckpt, float *dstate_in)
{
    static_assert(N % 16 == 0 && 2 * N <= WC_THREADS, "head size: a multiple of 16, at most half the block");
    extern __shared__ __align__(32) float wc_smem[];
    constexpr int SL = wc_sld<N>::value, TN = WC * N, CC = WC * WC;
    float *S0 = wc_smem, *dS = S0 + N * SL, *G = dS + N * SL;
    wc_rows w;
    w.q = G + TN, w.q0 = w.q + TN, w.ah = w.q0 + TN, w.a0 = w.ah + TN, w.kh = w.a0 + TN, w.kL = w.kh + TN;
    w.bh = w.kL + TN, w.bL = w.bh + TN, w.v = w.bL + TN;
    float *dY = w.v + TN, *U = dY + TN, *dR = U + TN, *dv = dR + TN, *dkL = dv + TN, *dbL = dkL + TN,
          *dq0 = dbL + TN, *da0 = dq0 + TN, *dq = da0 + TN, *dkh = dq + TN, *dbh = dkh + TN, *dah = dbh + TN;
    const wc_grams A = {dah + TN, dah + TN + CC, dah + TN + 2 * CC, dah + TN + 3 * CC};
    const wc_grams dA = {A.qk + 4 * CC, A.qb + 4 * CC, A.ak + 4 * CC, A.ab + 4 * CC};
    float *eL = dA.ab + CC;
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H;
    const size_t NN = (size_t)N * N, soff = (size_t)bh * NN;
    const int nchunks = (p.T + WC - 1) / WC, nc = (p.T + p.L - 1) / p.L; /* p.L == WC here */
    const float *ck = ckpt + (size_t)bh * nc * NN;

    for (int e = threadIdx.x; e < N * N; e += WC_THREADS)
        dS[(e / N) * SL + e % N] = dstate_out ? dstate_out[soff + e] : 0.0f;

    for (int c = nchunks - 1; c >= 0; c--) {
        const int t0 = c * WC;
        /* every tile of the previous chunk has been consumed (the barrier ending it) */
        for (int e = threadIdx.x; e < N * N; e += WC_THREADS) /* ck[j][i] = S0[i][j] */
            S0[(e % N) * SL + e / N] = ck[(size_t)c * NN + e];
        for (int e = threadIdx.x; e < WC * N; e += WC_THREADS) {
            const int tt = e / N;
            dY[e] = t0 + tt < p.T ? dy[tok_off(p, b, t0 + tt, h) + e % N] : 0.0f;
        }
        wc_cumsum<N>(G, p, b, h, t0); /* its barriers also cover the two loads above */
        wc_scale<N>(w, G, p, b, h, t0);
        __syncthreads();
        {
            wc_sched sc = wc_start();
            wc_gram_tiles<N>(sc, A, w);
            for (int c0 = 0; c0 < N; c0 += 16) {
                if (sc.mine())
                    wc_tile(U, N, 0, c0, false, wc_p(wc_v(w.a0, N), wc_v(S0, SL, true), N));       /* R0 */
                if (sc.mine()) wc_tile(dkL, N, 0, c0, false, wc_p(wc_v(w.v, N), wc_v(dS, SL), N)); /* V dS */
                if (sc.mine()) wc_tile(dq0, N, 0, c0, false, wc_p(wc_v(dY, N), wc_v(S0, SL), N));  /* dY S0 */
                if (sc.mine())
                    wc_tile(dv, N, 0, c0, false, wc_p(wc_v(w.kL, N), wc_v(dS, SL, true), N)); /* kL dSᵀ */
            }
        }
        __syncthreads();
        wc_mask_grams(A);
        __syncthreads();
        {
            wc_sched sc = wc_start();
            if (sc.mine()) wc_tile(dA.qk, WC, 0, 0, false, wc_p(wc_v(dY, N), wc_v(w.v, N, true), N));
            for (int c0 = 0; c0 < N; c0 += 16) {
                if (sc.mine()) wc_tile(U, N, 0, c0, true, wc_p(wc_v(A.ak, WC), wc_v(w.v, N), WC));
                if (sc.mine()) wc_tile(dv, N, 0, c0, true, wc_p(wc_v(A.qk, WC, true), wc_v(dY, N), WC));
            }
        }
        __syncthreads();
        wc_solve_lower<N>(U, A.ab);
        __syncthreads();
        {
            wc_sched sc = wc_start();
            if (sc.mine()) wc_tile(dA.qb, WC, 0, 0, false, wc_p(wc_v(dY, N), wc_v(U, N, true), N));
            for (int c0 = 0; c0 < N; c0 += 16) {
                if (sc.mine())
                    wc_tile(dR, N, 0, c0, false, wc_p(wc_v(w.bL, N), wc_v(dS, SL, true), N), /* dU */
                            wc_p(wc_v(A.qb, WC, true), wc_v(dY, N), WC));
                if (sc.mine()) wc_tile(dbL, N, 0, c0, false, wc_p(wc_v(U, N), wc_v(dS, SL), N));
            }
        }
        __syncthreads();
        wc_solve_upper<N>(dR, A.ab);
        if (threadIdx.x >= WC_THREADS - N) { /* eL = colsum(dS ⊙ S0) e^{G_L}; then dS's column ← dS e^{G_L} */
            const int j = threadIdx.x - (WC_THREADS - N);
            const float f = expf(G[(WC - 1) * N + j]);
            float acc = 0.0f;
            for (int i = 0; i < N; i++) {
                const float x = dS[i * SL + j];
                acc += x * S0[i * SL + j];
                dS[i * SL + j] = x * f;
            }
            eL[j] = acc * f;
        }
        __syncthreads();
        {
            wc_sched sc = wc_start();
            if (sc.mine()) wc_tile(dA.ab, WC, 0, 0, false, wc_p(wc_v(dR, N), wc_v(U, N, true), N));
            if (sc.mine()) wc_tile(dA.ak, WC, 0, 0, false, wc_p(wc_v(dR, N), wc_v(w.v, N, true), N));
            for (int c0 = 0; c0 < N; c0 += 16) {
                if (sc.mine()) wc_tile(da0, N, 0, c0, false, wc_p(wc_v(dR, N), wc_v(S0, SL), N));
                if (sc.mine()) wc_tile(dv, N, 0, c0, true, wc_p(wc_v(A.ak, WC, true), wc_v(dR, N), WC));
            }
            for (int i0 = 0; i0 < N; i0 += 16) /* dS0 = dS e^{G_L} + dYᵀ q0 + dRᵀ a0 */
                for (int j0 = 0; j0 < N; j0 += 16)
                    if (sc.mine())
                        wc_tile(dS, SL, i0, j0, true, wc_p(wc_v(dY, N, true), wc_v(w.q0, N), WC),
                                wc_p(wc_v(dR, N, true), wc_v(w.a0, N), WC));
        }
        __syncthreads();
        wc_mask_grams(dA);
        __syncthreads();
        {
            wc_sched sc = wc_start();
            for (int c0 = 0; c0 < N; c0 += 16) {
                if (sc.mine())
                    wc_tile(dq, N, 0, c0, false, wc_p(wc_v(dA.qk, WC), wc_v(w.kh, N), WC),
                            wc_p(wc_v(dA.qb, WC), wc_v(w.bh, N), WC));
                if (sc.mine())
                    wc_tile(dah, N, 0, c0, false, wc_p(wc_v(dA.ak, WC), wc_v(w.kh, N), WC),
                            wc_p(wc_v(dA.ab, WC), wc_v(w.bh, N), WC));
                if (sc.mine())
                    wc_tile(dkh, N, 0, c0, false, wc_p(wc_v(dA.qk, WC, true), wc_v(w.q, N), WC),
                            wc_p(wc_v(dA.ak, WC, true), wc_v(w.ah, N), WC));
                if (sc.mine())
                    wc_tile(dbh, N, 0, c0, false, wc_p(wc_v(dA.qb, WC, true), wc_v(w.q, N), WC),
                            wc_p(wc_v(dA.ab, WC, true), wc_v(w.ah, N), WC));
            }
        }
        __syncthreads();
        /* raw gradients, and each element's exponent terms: at G_t, at G_{t−1} and at G_L (stored over dq,
         * dah, dbh: each thread rewrites only the element it read). G_m gets none: every Gram entry depends
         * on G_t − G_s only, so the reference cancels (its terms Σ (dk̂⊙k̂ + db̂⊙b̂ − dq⊙q − dâ⊙â) sum to zero).
         */
        for (int e = threadIdx.x; e < WC * N; e += WC_THREADS) {
            const int tt = e / N, j = e % N;
            const float gg = G[e], gx = tt ? G[e - N] : 0.0f, gm = G[WC_MID * N + j],
                        gl = G[(WC - 1) * N + j];
            const float xq = dq[e] * w.q[e], xq0 = dq0[e] * w.q0[e], xa = dah[e] * w.ah[e],
                        xa0 = da0[e] * w.a0[e];
            const float xk = dkh[e] * w.kh[e], xb = dbh[e] * w.bh[e], xkL = dkL[e] * w.kL[e],
                        xbL = dbL[e] * w.bL[e];
            if (t0 + tt < p.T) {
                const size_t o = tok_off(p, b, t0 + tt, h) + j;
                const float fm = expf(gm - gg), fl = expf(gl - gg);
                g.r[o] += dq[e] * expf(gg - gm) + dq0[e] * expf(gg);
                g.a[o] += dah[e] * expf(gx - gm) + da0[e] * expf(gx);
                g.k[o] += dkh[e] * fm + dkL[e] * fl;
                g.b[o] += dbh[e] * fm + dbL[e] * fl;
                g.v[o] += dv[e];
            }
            dq[e] = xq + xq0 - xk - xb - xkL - xbL;
            dah[e] = xa + xa0;
            dbh[e] = xkL + xbL;
        }
        __syncthreads();
        if (threadIdx.x < N) { /* per key: ∂L/∂G_t, then dlogw_s = Σ_{t≥s} ∂L/∂G_t */
            const int j = threadIdx.x;
            float pl = eL[j];
            for (int tt = 0; tt < WC; tt++)
                pl += dbh[tt * N + j];
            float run = 0.0f;
            for (int tt = WC - 1; tt >= 0; tt--) {
                float e = dq[tt * N + j] + (tt + 1 < WC ? dah[(tt + 1) * N + j] : 0.0f);
                if (tt == WC - 1) e += pl;
                run += e;
                if (t0 + tt < p.T) g.logw[tok_off(p, b, t0 + tt, h) + j] += run;
            }
        }
        __syncthreads();
    }
    if (dstate_in)
        for (int e = threadIdx.x; e < N * N; e += WC_THREADS)
            dstate_in[soff + e] += dS[(e / N) * SL + e % N];
}
