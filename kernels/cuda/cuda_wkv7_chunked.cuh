// clang-format off
/* cuda_wkv7_chunked.cuh — wkv7 and wkv6 forward and backward in chunks of 16 tokens on the tensor cores (KERNELS.md
 * §4 and §8 CUDA 2). Included by cuda_wkv.cu inside its anonymous namespace (and by the host emulation check); the
 * launchers can choose it for head sizes 64 and 128 with checkpoints at whole chunks (the backward: every chunk):
 * by default for the wkv6 backward alone, the one the H100 measured faster than the per-row kernel; every wkv with
 * RADLADS_WKV_CHUNKED=1 (cuda_wkv.cu chunked_mode; bench/RESULTS.md has the timings and the profile). wkv6 (the GLA
 * form: S ← S diag(d) + v kᵀ, y = S r) is wkv7 with a = b = 0: the SEVEN = false instances leave out every term
 * with a or b.
 *
 * Math, per (batch, head), for a chunk of C = 16 tokens starting from state S0 (S[i][j]: i = value, j = key).
 * G_t = Σ_{s≤t} logw_s (inclusive, per key), G_{t−1} exclusive (G_{−1} = 0), G_m the reference at the chunk's
 * middle (m = C/2 − 1), G_L its last. Scaled rows (every factor within e^{±8·|logw|}):
 *   q_t  = r_t e^{G_t−G_m}    â_t  = a_t e^{G_{t−1}−G_m}    k̂_s  = k_s e^{G_m−G_s}    b̂_s  = b_s e^{G_m−G_s}
 *   q0_t = r_t e^{G_t}        a0_t = a_t e^{G_{t−1}}        kL_s = k_s e^{G_L−G_s}    bL_s = b_s e^{G_L−G_s}
 * so every product below is of fp32-range numbers for logw ≥ −10 (RAD-RWKV7's decay is ≥ −0.607, RAD-RWKV6's ≥ −5).
 * Masked C×C Gram matrices: Aqk = tril0(q k̂ᵀ), Aqb = tril0(q b̂ᵀ), Aak = tril₋₁(â k̂ᵀ), Aab = tril₋₁(â b̂ᵀ). Then
 *   U   = (I − Aab)⁻¹ (a0 S0ᵀ + Aak V)     (rows u_t = S_{t−1} a_t: forward substitution per value column)
 *   Y   = q0 S0ᵀ + Aqk V + Aqb U
 *   S_L = S0 diag(e^{G_L}) + Vᵀ kL + Uᵀ bL
 * which equals the token recurrence of kernels.h (tests/ref/test_wkv7_chunk_algebra.py: float64, 1e-15). The
 * backward runs the same chunk from its stored S0 and back-propagates through these products, given dY and
 * dS = ∂L/∂S_L:
 *   dv = kL dSᵀ + Aqkᵀ dY + Aakᵀ dR,   dkL = V dS,   dbL = U dS,   dq0 = dY S0,   dU = bL dSᵀ + Aqbᵀ dY,
 *   dR = (I − Aab)⁻ᵀ dU (back substitution),   da0 = dR S0,
 *   dAqk = tril0(dY Vᵀ),   dAqb = tril0(dY Uᵀ),   dAak = tril₋₁(dR Vᵀ),   dAab = tril₋₁(dR Uᵀ),
 *   dq = dAqk k̂ + dAqb b̂,   dk̂ = dAqkᵀ q + dAakᵀ â,   db̂ = dAqbᵀ q + dAabᵀ â,   dâ = dAak k̂ + dAab b̂,
 *   dS0 = dS diag(e^{G_L}) + dYᵀ q0 + dRᵀ a0,
 * then each raw gradient is its scaled rows' gradients times their factors (dr = dq e^{G_t−G_m} + dq0 e^{G_t}, …),
 * and each exponent's gradient (dX ⊙ X̂ for a scaled row X̂; colsum(dS ⊙ S0) e^{G_L} for the state) lands on the G
 * it was taken from: dlogw_s = Σ_{t≥s} ∂L/∂G_t (a reverse cumulative sum per key). G_m gets none (it cancels).
 *
 * Layout: 128 or 256 threads (4 or 8 warps) per block, chunks walked in order (forward) or in reverse (backward). A block owns
 * NV of the state's N value rows (NV = N for head size 64; NV = 32 for head size 128, whose whole state would not
 * fit in shared memory next to its tiles) and keeps them (and the backward's dS rows) in fp32 in shared memory for
 * the whole sequence. The rows are independent in the forward (y, the next state and U are per value row; the Gram
 * matrices are over keys, which every block has, and are recomputed by each), so its N/NV blocks per (batch, head)
 * run at once. In the backward the key-indexed gradients (dr, dk, da, db, dlogw) are sums over value rows: each
 * block adds its rows' share into them, so the launcher runs the N/NV slices one launch after another (a fixed
 * order of addition: deterministic, and no partial sums in global memory). Token tiles are C × N (key-indexed)
 * or C × NV (value-indexed) row-major; every product is cut into 16 × 16 output tiles handed to the warps round robin, each one
 * warp's 3xTF32 wmma product (cuda_tf32.cuh: fp32-level accuracy, so the kernel is checked against the fp32 CPU
 * backend at the per-row kernels' tolerances). Sequential parts (the cumulative sums over 16 tokens, the two
 * triangular solves) run one thread per column. A last partial chunk is padded with tokens of logw = 0 and zero
 * vectors, which leave the state unchanged and receive no gradient. */
// clang-format on

constexpr int WC = 16;             /* tokens per chunk */
constexpr int WC_MID = WC / 2 - 1; /* the reference row m */
/* Threads per block (TH below): 128 or 256, the launcher's choice (RADLADS_WKV_THREADS). */
/* Row strides. The C×C matrices: C + 4; the state (N × N) and the token tiles (C × N): N + 8. Multiples of 4
 * (wmma) that spread the 8 rows × 4 columns one TF32 fragment load reads over the banks: at most 2-way
 * conflicts in either view (row-major or transposed; no stride makes both conflict-free), where a multiple of
 * 32 would give 8-way. */
constexpr int GL = WC + 4;
template <int N> constexpr int TL = N + 8;

/* The value rows per block for head size N (see the top). */
template <int N> constexpr int WC_NV = N <= 64 ? N : 32;

/* Masks a C×C matrix in place: keeps s ≤ t (strict: s < t). */
template <int TH> __device__ __forceinline__ void wc_mask(float *A, bool strict)
{
    for (int e = threadIdx.x; e < WC * WC; e += TH) {
        const int t = e / WC, s = e % WC;
        if (s > t || (strict && s == t)) A[t * GL + s] = 0.0f;
    }
}

/* The scaled rows of one chunk (see the top), built from the raw inputs in global memory. */
struct wc_rows {
    float *q, *q0, *ah, *a0, *kh, *kL, *bh, *bL, *v;
};

/* Token-tile elements per thread: element e = threadIdx.x + u·TH, u < WC_EPT<N, TH> (N columns). */
template <int N, int TH> constexpr int WC_EPT = WC *N / TH;

/* Stages chunk t0 (tokens past T: logw = 0 and zero vectors, which leave the state alone): every input of the
 * thread's elements is loaded at once into registers (five or six independent loads in flight per element; v
 * only for the block's value columns v0..v0+NV), logw goes to G, then (barrier) thread j < N takes the cumulative
 * sum of key column j in place, then (barrier) the scaled rows are written from the registers. Ends with a
 * barrier behind the cumulative sum only: the caller orders its next reads of the scaled rows. */
template <int N, int NV, bool SEVEN, int TH>
__device__ __forceinline__ void wc_stage(const wc_rows &w, float *G, const wkv_args &p, int b, int h, int t0, int v0)
{
    static_assert(WC * NV % TH == 0, "whole token tiles per block");
    constexpr int E = WC_EPT<N, TH>, EV = WC_EPT<NV, TH>, LD = TL<N>, LV = TL<NV>;
    float r[E], k[E], v[EV], a[E], bb[E];
#pragma unroll
    for (int u = 0; u < EV; u++) {
        const int e = threadIdx.x + u * TH, tt = e / NV;
        v[u] = t0 + tt < p.T ? p.v[tok_off(p, b, t0 + tt, h) + v0 + e % NV] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < E; u++) {
        const int e = threadIdx.x + u * TH, tt = e / N, j = e % N;
        float lw = 0.0f;
        r[u] = k[u] = a[u] = bb[u] = 0.0f;
        if (t0 + tt < p.T) {
            const size_t o = tok_off(p, b, t0 + tt, h) + j;
            lw = p.logw[o], r[u] = p.r[o], k[u] = p.k[o];
            if (SEVEN) a[u] = p.a[o], bb[u] = p.b[o];
        }
        G[tt * LD + j] = lw;
    }
    __syncthreads();
    if (threadIdx.x < N) {
        float run = 0.0f;
        for (int tt = 0; tt < WC; tt++) {
            run += G[tt * LD + threadIdx.x];
            G[tt * LD + threadIdx.x] = run;
        }
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < E; u++) {
        const int e = threadIdx.x + u * TH, tt = e / N, j = e % N, x = tt * LD + j;
        const float g = G[x], gx = tt ? G[x - LD] : 0.0f, gm = G[WC_MID * LD + j], gl = G[(WC - 1) * LD + j];
        const float fm = expf(gm - g), fl = expf(gl - g);
        w.q[x] = r[u] * expf(g - gm);
        w.q0[x] = r[u] * expf(g);
        w.kh[x] = k[u] * fm;
        w.kL[x] = k[u] * fl;
        if (SEVEN) {
            w.ah[x] = a[u] * expf(gx - gm);
            w.a0[x] = a[u] * expf(gx);
            w.bh[x] = bb[u] * fm;
            w.bL[x] = bb[u] * fl;
        }
    }
#pragma unroll
    for (int u = 0; u < EV; u++) {
        const int e = threadIdx.x + u * TH;
        w.v[(e / NV) * LV + e % NV] = v[u];
    }
}

/* The four C×C Gram matrices of a chunk (or their gradients): qk and qb keep s ≤ t, ak and ab s < t. */
struct wc_grams {
    float *qk, *qb, *ak, *ab;
};

template <int N, bool SEVEN>
__device__ __forceinline__ void wc_gram_tiles(tc_sched &sc, const wc_grams &A, const wc_rows &w)
{
    constexpr int LD = TL<N>;
    if (sc.mine()) tc_tile(A.qk, GL, 0, 0, false, tc_p(tc_v(w.q, LD), tc_v(w.kh, LD, true), N));
    if (SEVEN && sc.mine()) tc_tile(A.qb, GL, 0, 0, false, tc_p(tc_v(w.q, LD), tc_v(w.bh, LD, true), N));
    if (SEVEN && sc.mine()) tc_tile(A.ak, GL, 0, 0, false, tc_p(tc_v(w.ah, LD), tc_v(w.kh, LD, true), N));
    if (SEVEN && sc.mine()) tc_tile(A.ab, GL, 0, 0, false, tc_p(tc_v(w.ah, LD), tc_v(w.bh, LD, true), N));
}

template <bool SEVEN, int TH> __device__ __forceinline__ void wc_mask_grams(const wc_grams &A)
{
    wc_mask<TH>(A.qk, false);
    if (SEVEN) {
        wc_mask<TH>(A.qb, false);
        wc_mask<TH>(A.ak, true);
        wc_mask<TH>(A.ab, true);
    }
}

/* Forward substitution (I − Aab) U = R in place (U: C × NV), one thread per value column. */
template <int NV> __device__ __forceinline__ void wc_solve_lower(float *U, const float *Aab)
{
    if (threadIdx.x >= NV) return;
    const int i = threadIdx.x;
    for (int t = 1; t < WC; t++) {
        float acc = U[t * TL<NV> + i];
        for (int s = 0; s < t; s++)
            acc += Aab[t * GL + s] * U[s * TL<NV> + i];
        U[t * TL<NV> + i] = acc;
    }
}

/* Back substitution (I − Aab)ᵀ dR = dU in place. */
template <int NV> __device__ __forceinline__ void wc_solve_upper(float *dR, const float *Aab)
{
    if (threadIdx.x >= NV) return;
    const int i = threadIdx.x;
    for (int t = WC - 2; t >= 0; t--) {
        float acc = dR[t * TL<NV> + i];
        for (int s = t + 1; s < WC; s++)
            acc += Aab[s * GL + t] * dR[s * TL<NV> + i];
        dR[t * TL<NV> + i] = acc;
    }
}

/* Shared-memory floats of each kernel (head size N, NV value rows per block): the state rows (and dS), the
 * key-indexed token tiles (G and the 8 scaled rows; the backward's 8 key gradients), the value-indexed ones (v, U,
 * Y; the backward's v, dY, U, dR, dv), the Gram matrices (and their gradients), the backward's eL. */
template <int N, int NV = WC_NV<N>> constexpr size_t wc_fwd_floats()
{
    return (size_t)NV * TL<N> + 9 * (size_t)WC * TL<N> + 3 * (size_t)WC * TL<NV> + 4 * WC * GL;
}
template <int N, int NV = WC_NV<N>> constexpr size_t wc_bwd_floats()
{
    return 2 * (size_t)NV * TL<N> + 17 * (size_t)WC * TL<N> + 5 * (size_t)WC * TL<NV> + 8 * WC * GL + N;
}

/* ---- forward
 * ------------------------------------------------------------------------------------------------ */

/* Grid: (batch · heads, N / NV); block y owns value rows v0 = y · NV … v0 + NV − 1. */
template <int N, int NV, bool SEVEN, int TH>
__global__ void __launch_bounds__(TH)
    wkv7_chunked_forward_kernel(wkv_args p, const float *state_in, float *y, float *state_out, float *ckpt)
{
    static_assert(N % 16 == 0 && NV % 16 == 0 && N % NV == 0, "head size and value slice: multiples of 16");
    static_assert(N <= TH && NV < TH, "a thread per key column; threads left over beside the solve");
    extern __shared__ __align__(32) float wc_smem[];
    constexpr int SL = TL<N>, LD = TL<N>, LV = TL<NV>, TN = WC * LD, TV = WC * LV;
    float *S = wc_smem, *G = S + NV * SL;
    wc_rows w;
    w.q = G + TN, w.q0 = w.q + TN, w.ah = w.q0 + TN, w.a0 = w.ah + TN, w.kh = w.a0 + TN, w.kL = w.kh + TN;
    w.bh = w.kL + TN, w.bL = w.bh + TN, w.v = w.bL + TN;
    float *U = w.v + TV, *Y = U + TV;
    const wc_grams A = {Y + TV, Y + TV + WC * GL, Y + TV + 2 * WC * GL, Y + TV + 3 * WC * GL};
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H, v0 = blockIdx.y * NV;
    const size_t NN = (size_t)N * N, soff = (size_t)bh * NN + (size_t)v0 * N; /* the block's first state row */
    const int nc = (p.T + p.L - 1) / p.L;
    float *ck = ckpt ? ckpt + (size_t)bh * nc * NN : nullptr;

    for (int e = threadIdx.x; e < NV * N; e += TH)
        S[(e / N) * SL + e % N] = state_in ? state_in[soff + e] : 0.0f;
    __syncthreads();

    for (int t0 = 0; t0 < p.T; t0 += WC) {
        wc_stage<N, NV, SEVEN, TH>(w, G, p, b, h, t0, v0);
        if (ck && t0 % p.L == 0) { /* key-major: ck[j][v0 + i] = S[i][j]; consecutive threads, consecutive i */
            float *c = ck + (size_t)(t0 / p.L) * NN + v0;
            for (int e = threadIdx.x; e < NV * N; e += TH)
                c[(size_t)(e / NV) * N + e % NV] = S[(e % NV) * SL + e / NV];
        }
        __syncthreads();
        {
            tc_sched sc = tc_start();
            wc_gram_tiles<N, SEVEN>(sc, A, w);
            for (int c = 0; c < NV; c += 16) { /* R = a0 S0ᵀ, Y = q0 S0ᵀ (value columns c..c+15) */
                if (SEVEN && sc.mine())
                    tc_tile(U, LV, 0, c, false, tc_p(tc_v(w.a0, LD), tc_v(S, SL, true), N));
                if (y)
                    if (sc.mine()) tc_tile(Y, LV, 0, c, false, tc_p(tc_v(w.q0, LD), tc_v(S, SL, true), N));
            }
        }
        __syncthreads();
        wc_mask_grams<SEVEN, TH>(A);
        __syncthreads();
        {
            tc_sched sc = tc_start();
            for (int c = 0; c < NV; c += 16) {
                if (SEVEN && sc.mine()) tc_tile(U, LV, 0, c, true, tc_p(tc_v(A.ak, GL), tc_v(w.v, LV), WC));
                if (y)
                    if (sc.mine()) tc_tile(Y, LV, 0, c, true, tc_p(tc_v(A.qk, GL), tc_v(w.v, LV), WC));
            }
        }
        __syncthreads();
        if (SEVEN) wc_solve_lower<NV>(U, A.ab);
        if (threadIdx.x >= NV) /* the other threads scale the state's key columns by e^{G_L} */
            for (int j = threadIdx.x - NV; j < N; j += TH - NV) {
                const float f = expf(G[(WC - 1) * LD + j]);
                for (int i = 0; i < NV; i++)
                    S[i * SL + j] *= f;
            }
        __syncthreads();
        {
            tc_sched sc = tc_start();
            for (int c = 0; c < NV && y && SEVEN; c += 16)
                if (sc.mine()) tc_tile(Y, LV, 0, c, true, tc_p(tc_v(A.qb, GL), tc_v(U, LV), WC));
            for (int i0 = 0; i0 < NV; i0 += 16) /* S += Vᵀ kL + Uᵀ bL */
                for (int j0 = 0; j0 < N; j0 += 16)
                    if (sc.mine())
                        tc_tile(S, SL, i0, j0, true, tc_p(tc_v(w.v, LV, true), tc_v(w.kL, LD), WC),
                                tc_p(tc_v(U, LV, true), tc_v(w.bL, LD), SEVEN ? WC : 0));
        }
        __syncthreads();
        if (y)
            for (int e = threadIdx.x; e < WC * NV; e += TH) {
                const int tt = e / NV;
                if (t0 + tt < p.T) y[tok_off(p, b, t0 + tt, h) + v0 + e % NV] = Y[tt * LV + e % NV];
            }
        /* the next chunk's first writes (G, the scaled rows) touch none of Y: no barrier needed here */
    }
    if (state_out)
        for (int e = threadIdx.x; e < NV * N; e += TH)
            state_out[soff + e] = S[(e / N) * SL + e % N];
}

/* ---- backward
 * ----------------------------------------------------------------------------------------------- */

/* Grid: batch · heads; the block owns value rows v0 = slice · NV … v0 + NV − 1 and adds their share into the
 * key-indexed gradients, so the launcher runs slice 0, 1, … one launch after another. */
template <int N, int NV, bool SEVEN, int TH>
__global__ void __launch_bounds__(TH)
    wkv7_chunked_backward_kernel(wkv_args p, wkv_grads g, const float *dy, const float *dstate_out,
                                 const float *ckpt, float *dstate_in, int slice)
{
    static_assert(N % 16 == 0 && NV % 16 == 0 && N % NV == 0, "head size and value slice: multiples of 16");
    static_assert(N <= TH && NV < TH, "a thread per key column; threads left over beside the solve");
    extern __shared__ __align__(32) float wc_smem[];
    constexpr int SL = TL<N>, LD = TL<N>, LV = TL<NV>, TN = WC * LD, TV = WC * LV, CC = WC * GL;
    float *S0 = wc_smem, *dS = S0 + NV * SL, *G = dS + NV * SL;
    wc_rows w;
    w.q = G + TN, w.q0 = w.q + TN, w.ah = w.q0 + TN, w.a0 = w.ah + TN, w.kh = w.a0 + TN, w.kL = w.kh + TN;
    w.bh = w.kL + TN, w.bL = w.bh + TN, w.v = w.bL + TN;
    float *dY = w.v + TV, *U = dY + TV, *dR = U + TV, *dv = dR + TV; /* value-indexed */
    float *dkL = dv + TV, *dbL = dkL + TN, *dq0 = dbL + TN, *da0 = dq0 + TN, *dq = da0 + TN, *dkh = dq + TN,
          *dbh = dkh + TN, *dah = dbh + TN; /* key-indexed */
    const wc_grams A = {dah + TN, dah + TN + CC, dah + TN + 2 * CC, dah + TN + 3 * CC};
    const wc_grams dA = {A.qk + 4 * CC, A.qb + 4 * CC, A.ak + 4 * CC, A.ab + 4 * CC};
    float *eL = dA.ab + CC;
    const int bh = blockIdx.x, b = bh / p.H, h = bh % p.H, v0 = slice * NV;
    const size_t NN = (size_t)N * N, soff = (size_t)bh * NN + (size_t)v0 * N;
    const int nchunks = (p.T + WC - 1) / WC, nc = (p.T + p.L - 1) / p.L; /* p.L == WC here */
    const float *ck = ckpt + (size_t)bh * nc * NN + v0;

    for (int e = threadIdx.x; e < NV * N; e += TH)
        dS[(e / N) * SL + e % N] = dstate_out ? dstate_out[soff + e] : 0.0f;

    for (int c = nchunks - 1; c >= 0; c--) {
        const int t0 = c * WC;
        /* every tile of the previous chunk has been consumed (the barrier ending it) */
        for (int e = threadIdx.x; e < NV * N; e += TH) /* ck[j][v0 + i] = S0[i][j] */
            S0[(e % NV) * SL + e / NV] = ck[(size_t)c * NN + (size_t)(e / NV) * N + e % NV];
        for (int e = threadIdx.x; e < WC * NV; e += TH) {
            const int tt = e / NV;
            dY[tt * LV + e % NV] = t0 + tt < p.T ? dy[tok_off(p, b, t0 + tt, h) + v0 + e % NV] : 0.0f;
        }
        wc_stage<N, NV, SEVEN, TH>(w, G, p, b, h, t0, v0); /* its barriers also cover the loads above */
        __syncthreads();
        {
            tc_sched sc = tc_start();
            wc_gram_tiles<N, SEVEN>(sc, A, w);
            for (int c0 = 0; c0 < NV; c0 += 16) {
                if (SEVEN && sc.mine())
                    tc_tile(U, LV, 0, c0, false, tc_p(tc_v(w.a0, LD), tc_v(S0, SL, true), N)); /* R0 */
                if (sc.mine())
                    tc_tile(dv, LV, 0, c0, false, tc_p(tc_v(w.kL, LD), tc_v(dS, SL, true), N)); /* kL dSᵀ */
            }
            for (int c0 = 0; c0 < N; c0 += 16) {
                if (sc.mine())
                    tc_tile(dkL, LD, 0, c0, false, tc_p(tc_v(w.v, LV), tc_v(dS, SL), NV)); /* V dS */
                if (sc.mine())
                    tc_tile(dq0, LD, 0, c0, false, tc_p(tc_v(dY, LV), tc_v(S0, SL), NV)); /* dY S0 */
            }
        }
        __syncthreads();
        wc_mask_grams<SEVEN, TH>(A);
        __syncthreads();
        {
            tc_sched sc = tc_start();
            if (sc.mine()) tc_tile(dA.qk, GL, 0, 0, false, tc_p(tc_v(dY, LV), tc_v(w.v, LV, true), NV));
            for (int c0 = 0; c0 < NV; c0 += 16) {
                if (SEVEN && sc.mine()) tc_tile(U, LV, 0, c0, true, tc_p(tc_v(A.ak, GL), tc_v(w.v, LV), WC));
                if (sc.mine()) tc_tile(dv, LV, 0, c0, true, tc_p(tc_v(A.qk, GL, true), tc_v(dY, LV), WC));
            }
        }
        __syncthreads();
        if (SEVEN) wc_solve_lower<NV>(U, A.ab);
        __syncthreads();
        {
            tc_sched sc = tc_start();
            if (SEVEN && sc.mine()) tc_tile(dA.qb, GL, 0, 0, false, tc_p(tc_v(dY, LV), tc_v(U, LV, true), NV));
            for (int c0 = 0; c0 < NV && SEVEN; c0 += 16)
                if (sc.mine())
                    tc_tile(dR, LV, 0, c0, false, tc_p(tc_v(w.bL, LD), tc_v(dS, SL, true), N), /* dU */
                            tc_p(tc_v(A.qb, GL, true), tc_v(dY, LV), WC));
            for (int c0 = 0; c0 < N && SEVEN; c0 += 16)
                if (sc.mine()) tc_tile(dbL, LD, 0, c0, false, tc_p(tc_v(U, LV), tc_v(dS, SL), NV));
        }
        __syncthreads();
        if (SEVEN) wc_solve_upper<NV>(dR, A.ab);
        if (threadIdx.x >= NV) /* eL = colsum(dS ⊙ S0) e^{G_L} (this block's rows); then dS's column ← dS e^{G_L} */
            for (int j = threadIdx.x - NV; j < N; j += TH - NV) {
                const float f = expf(G[(WC - 1) * LD + j]);
                float acc = 0.0f;
                for (int i = 0; i < NV; i++) {
                    const float x = dS[i * SL + j];
                    acc += x * S0[i * SL + j];
                    dS[i * SL + j] = x * f;
                }
                eL[j] = acc * f;
            }
        __syncthreads();
        {
            tc_sched sc = tc_start();
            if (SEVEN && sc.mine()) tc_tile(dA.ab, GL, 0, 0, false, tc_p(tc_v(dR, LV), tc_v(U, LV, true), NV));
            if (SEVEN && sc.mine())
                tc_tile(dA.ak, GL, 0, 0, false, tc_p(tc_v(dR, LV), tc_v(w.v, LV, true), NV));
            for (int c0 = 0; c0 < N && SEVEN; c0 += 16)
                if (sc.mine()) tc_tile(da0, LD, 0, c0, false, tc_p(tc_v(dR, LV), tc_v(S0, SL), NV));
            for (int c0 = 0; c0 < NV && SEVEN; c0 += 16)
                if (sc.mine()) tc_tile(dv, LV, 0, c0, true, tc_p(tc_v(A.ak, GL, true), tc_v(dR, LV), WC));
            for (int i0 = 0; i0 < NV; i0 += 16) /* dS0 = dS e^{G_L} + dYᵀ q0 + dRᵀ a0 */
                for (int j0 = 0; j0 < N; j0 += 16)
                    if (sc.mine())
                        tc_tile(dS, SL, i0, j0, true, tc_p(tc_v(dY, LV, true), tc_v(w.q0, LD), WC),
                                tc_p(tc_v(dR, LV, true), tc_v(w.a0, LD), SEVEN ? WC : 0));
        }
        __syncthreads();
        wc_mask_grams<SEVEN, TH>(dA);
        __syncthreads();
        {
            tc_sched sc = tc_start();
            for (int c0 = 0; c0 < N; c0 += 16) {
                if (sc.mine())
                    tc_tile(dq, LD, 0, c0, false, tc_p(tc_v(dA.qk, GL), tc_v(w.kh, LD), WC),
                            tc_p(tc_v(dA.qb, GL), tc_v(w.bh, LD), SEVEN ? WC : 0));
                if (SEVEN && sc.mine())
                    tc_tile(dah, LD, 0, c0, false, tc_p(tc_v(dA.ak, GL), tc_v(w.kh, LD), WC),
                            tc_p(tc_v(dA.ab, GL), tc_v(w.bh, LD), WC));
                if (sc.mine())
                    tc_tile(dkh, LD, 0, c0, false, tc_p(tc_v(dA.qk, GL, true), tc_v(w.q, LD), WC),
                            tc_p(tc_v(dA.ak, GL, true), tc_v(w.ah, LD), SEVEN ? WC : 0));
                if (SEVEN && sc.mine())
                    tc_tile(dbh, LD, 0, c0, false, tc_p(tc_v(dA.qb, GL, true), tc_v(w.q, LD), WC),
                            tc_p(tc_v(dA.ab, GL, true), tc_v(w.ah, LD), WC));
            }
        }
        __syncthreads();
        /* dv: the block's own value columns */
        for (int e = threadIdx.x; e < WC * NV; e += TH) {
            const int tt = e / NV;
            if (t0 + tt < p.T) {
                const size_t o = tok_off(p, b, t0 + tt, h) + v0 + e % NV;
                g.v[o] += dv[tt * LV + e % NV];
            }
        }
        /* raw key-indexed gradients (this block's share), and each element's exponent terms: at G_t, at G_{t−1}
         * and at G_L (stored over dq, dah, dbh: each thread rewrites only the element it read). G_m gets none:
         * every Gram entry depends on G_t − G_s only, so the reference cancels (its terms Σ (dk̂⊙k̂ + db̂⊙b̂ − dq⊙q −
         * dâ⊙â) sum to zero). */
        {
            /* the old gradients first, all at once: g's pointers may alias as far as the compiler knows, so a
             * load after a store would wait for it */
            constexpr int E = WC_EPT<N, TH>;
            float o_r[E], o_a[E], o_k[E], o_b[E];
#pragma unroll
            for (int u = 0; u < E; u++) {
                const int e = threadIdx.x + u * TH, tt = e / N;
                if (t0 + tt < p.T) {
                    const size_t o = tok_off(p, b, t0 + tt, h) + e % N;
                    o_r[u] = g.r[o], o_k[u] = g.k[o];
                    if (SEVEN) o_a[u] = g.a[o], o_b[u] = g.b[o];
                }
            }
#pragma unroll
            for (int u = 0; u < E; u++) {
                const int e = threadIdx.x + u * TH, tt = e / N, j = e % N, x = tt * LD + j;
                const float gg = G[x], gx = tt ? G[x - LD] : 0.0f, gm = G[WC_MID * LD + j],
                            gl = G[(WC - 1) * LD + j];
                /* without a and b (wkv6) their rows and gradients were never written: every term with them is
                 * 0 */
                const float xq = dq[x] * w.q[x], xq0 = dq0[x] * w.q0[x], xk = dkh[x] * w.kh[x],
                            xkL = dkL[x] * w.kL[x];
                const float xa = SEVEN ? dah[x] * w.ah[x] : 0.0f, xa0 = SEVEN ? da0[x] * w.a0[x] : 0.0f,
                            xb = SEVEN ? dbh[x] * w.bh[x] : 0.0f, xbL = SEVEN ? dbL[x] * w.bL[x] : 0.0f;
                if (t0 + tt < p.T) {
                    const size_t o = tok_off(p, b, t0 + tt, h) + j;
                    const float fm = expf(gm - gg), fl = expf(gl - gg);
                    g.r[o] = o_r[u] + (dq[x] * expf(gg - gm) + dq0[x] * expf(gg));
                    g.k[o] = o_k[u] + (dkh[x] * fm + dkL[x] * fl);
                    if (SEVEN) {
                        g.a[o] = o_a[u] + (dah[x] * expf(gx - gm) + da0[x] * expf(gx));
                        g.b[o] = o_b[u] + (dbh[x] * fm + dbL[x] * fl);
                    }
                }
                dq[x] = xq + xq0 - xk - xb - xkL - xbL;
                dah[x] = xa + xa0;
                dbh[x] = xkL + xbL;
            }
        }
        __syncthreads();
        if (threadIdx.x < N) { /* per key: ∂L/∂G_t, then dlogw_s = Σ_{t≥s} ∂L/∂G_t */
            const int j = threadIdx.x;
            float pl = eL[j];
            for (int tt = 0; tt < WC; tt++)
                pl += dbh[tt * LD + j];
            float old[WC]; /* loads first, as above */
#pragma unroll
            for (int tt = 0; tt < WC; tt++)
                old[tt] = t0 + tt < p.T ? g.logw[tok_off(p, b, t0 + tt, h) + j] : 0.0f;
            float run = 0.0f;
#pragma unroll
            for (int tt = WC - 1; tt >= 0; tt--) {
                float e = dq[tt * LD + j] + (tt + 1 < WC ? dah[(tt + 1) * LD + j] : 0.0f);
                if (tt == WC - 1) e += pl;
                run += e;
                if (t0 + tt < p.T) g.logw[tok_off(p, b, t0 + tt, h) + j] = old[tt] + run;
            }
        }
        __syncthreads();
    }
    if (dstate_in)
        for (int e = threadIdx.x; e < NV * N; e += TH)
            dstate_in[soff + e] += dS[(e / N) * SL + e % N];
}
