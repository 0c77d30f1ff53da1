/* cpu_wkv7.c — the RWKV-7 recurrence, forward and backward, fp32 state.
 *
 * Per (batch b, head h) a state S ∈ R^{N×N}, S[i][j]: i = value channel, j = key
 * channel; per token t, with d = exp(logw) the decay over keys:
 *   sa   = S a                          (sa_i = Σ_j S_ij a_j)
 *   S   ← S diag(d) + sa bᵀ + v kᵀ
 *   y    = S r                          (the updated state: the token sees itself)
 * Backward, walking t = T−1..0 with Ĝ = ∂L/∂S_t arriving from the future
 * (Ĝ_T = ∂L/∂S_final), G = Ĝ + dy rᵀ:
 *   dr = S_tᵀ dy,  dd = colsum(G ⊙ S_{t−1}),  dk = Gᵀ v,  dv = G k,
 *   db = Gᵀ sa,    dsa = G b,  da = S_{t−1}ᵀ dsa,  Ĝ ← G diag(d) + dsa aᵀ,
 *   dlogw = dd ⊙ d.
 * S_{t−1} comes from chunk recompute: the state at the start of every chunk of L
 * tokens is kept (the forward's checkpoints, or a replay from state_in), the
 * chunk's L states are rebuilt into a thread-local buffer and walked backward.
 * Exact, and needs no decay floor.
 *
 * Forward layout: each task keeps its state KEY-major, St[j][i] = S[i][j], so both
 * passes of a token run down contiguous value columns with no horizontal sums:
 *   pass 1: sa += a_j · St[j]                (for every key j)
 *   pass 2: St[j] = d_j St[j] + b_j sa + k_j v,  y += r_j St[j]
 * Value columns are independent in the forward (sa_i reads column i only), so the
 * columns are processed 32 at a time with sa, v and y in vector registers (rl__vf16,
 * cpu_simd.h): per state element one load, one store and four FMAs per token. The
 * checkpoints use the same key-major layout; the backward transposes each chunk's
 * starting state into the value-major layout it works in.
 *
 * Threads: one (b, h) per task; the forward also splits value columns when there
 * are fewer heads than threads (32-column parts where N allows). */
#include <omp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_int.h"
#include "cpu_simd.h"

static inline size_t tok_off(const rl_wkv_dims *d, int b, int t, int h)
{
    return (((size_t)b * d->seq + t) * d->heads + h) * d->head_dim;
}

/* One token through value columns [0, nr) of a key-major state St [N][nr]; v, y and sa
 * are offset to the first column (y and sa may be NULL: sa receives S a). */
RL_CPU_CLONES static void wkv7_step_cols(float *St, int nr, int N, const float *r, const float *dcy,
                                         const float *k, const float *v, const float *a, const float *b, float *y,
                                         float *sa_out)
{
    int i0 = 0;
    for (; i0 + 32 <= nr; i0 += 32) {
        float *c = St + i0;
        rl__vf16 p0 = {0}, p1 = {0}, q0 = {0}, q1 = {0}; /* two partial sums per half: shorter FMA chains */
        int j = 0;
        for (; j + 2 <= N; j += 2) {
            const float *s0 = c + (size_t)j * nr, *s1 = s0 + nr;
            p0 += a[j] * VLD(s0), p1 += a[j] * VLD(s0 + 16);
            q0 += a[j + 1] * VLD(s1), q1 += a[j + 1] * VLD(s1 + 16);
        }
        if (j < N) {
            const float *s0 = c + (size_t)j * nr;
            p0 += a[j] * VLD(s0), p1 += a[j] * VLD(s0 + 16);
        }
        const rl__vf16 sa0 = p0 + q0, sa1 = p1 + q1, v0 = VLD(v + i0), v1 = VLD(v + i0 + 16);
        if (sa_out)
            VST(sa_out + i0, sa0), VST(sa_out + i0 + 16, sa1);
        rl__vf16 y0 = {0}, y1 = {0}, z0 = {0}, z1 = {0};
        for (j = 0; j + 2 <= N; j += 2) {
            float *s0 = c + (size_t)j * nr, *s1 = s0 + nr;
            const rl__vf16 n0 = VLD(s0) * dcy[j] + sa0 * b[j] + v0 * k[j];
            const rl__vf16 n1 = VLD(s0 + 16) * dcy[j] + sa1 * b[j] + v1 * k[j];
            const rl__vf16 m0 = VLD(s1) * dcy[j + 1] + sa0 * b[j + 1] + v0 * k[j + 1];
            const rl__vf16 m1 = VLD(s1 + 16) * dcy[j + 1] + sa1 * b[j + 1] + v1 * k[j + 1];
            VST(s0, n0), VST(s0 + 16, n1), VST(s1, m0), VST(s1 + 16, m1);
            y0 += n0 * r[j], y1 += n1 * r[j], z0 += m0 * r[j + 1], z1 += m1 * r[j + 1];
        }
        if (j < N) {
            float *s0 = c + (size_t)j * nr;
            const rl__vf16 n0 = VLD(s0) * dcy[j] + sa0 * b[j] + v0 * k[j];
            const rl__vf16 n1 = VLD(s0 + 16) * dcy[j] + sa1 * b[j] + v1 * k[j];
            VST(s0, n0), VST(s0 + 16, n1);
            y0 += n0 * r[j], y1 += n1 * r[j];
        }
        if (y)
            VST(y + i0, y0 + z0), VST(y + i0 + 16, y1 + z1);
    }
    for (; i0 < nr; i0++) { /* fewer than 32 columns left (small N, uneven splits) */
        float sa = 0.0f, yi = 0.0f;
        for (int j = 0; j < N; j++)
            sa += a[j] * St[(size_t)j * nr + i0];
        if (sa_out)
            sa_out[i0] = sa;
        for (int j = 0; j < N; j++) {
            float *e = St + (size_t)j * nr + i0;
            *e = *e * dcy[j] + sa * b[j] + v[i0] * k[j];
            yi += r[j] * *e;
        }
        if (y)
            y[i0] = yi;
    }
}

/* Advances rows [0, nrows) of a VALUE-major state (rows of length N) through one
 * token, reading P and writing the next state to S (no copy): the backward's chunk
 * recompute. sa_out receives P a. */
RL_CPU_CLONES static void wkv7_step_rows(float *restrict S, const float *restrict P, int nrows, int N,
                                         const float *dcy, const float *k, const float *v, const float *a,
                                         const float *b, float *sa_out)
{
    int i = 0;
    /* four rows at a time: a, d, b, k are loaded once per four rows (the loop is load-bound) */
    for (; i + 4 <= nrows; i += 4) {
        float *S0 = S + (size_t)i * N, *S1 = S0 + N, *S2 = S1 + N, *S3 = S2 + N;
        const float *P0 = P + (size_t)i * N, *P1 = P0 + N, *P2 = P1 + N, *P3 = P2 + N;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int j = 0; j < N; j++) {
            s0 += P0[j] * a[j], s1 += P1[j] * a[j];
            s2 += P2[j] * a[j], s3 += P3[j] * a[j];
        }
        const float v0 = v[i], v1 = v[i + 1], v2 = v[i + 2], v3 = v[i + 3];
#pragma omp simd
        for (int j = 0; j < N; j++) {
            const float dj = dcy[j], bj = b[j], kj = k[j];
            S0[j] = P0[j] * dj + s0 * bj + v0 * kj, S1[j] = P1[j] * dj + s1 * bj + v1 * kj;
            S2[j] = P2[j] * dj + s2 * bj + v2 * kj, S3[j] = P3[j] * dj + s3 * bj + v3 * kj;
        }
        sa_out[i] = s0, sa_out[i + 1] = s1, sa_out[i + 2] = s2, sa_out[i + 3] = s3;
    }
    for (; i < nrows; i++) {
        float *Si = S + (size_t)i * N;
        const float *Pi = P + (size_t)i * N;
        float sa = 0.0f;
#pragma omp simd reduction(+ : sa)
        for (int j = 0; j < N; j++)
            sa += Pi[j] * a[j];
        const float vi = v[i];
#pragma omp simd
        for (int j = 0; j < N; j++)
            Si[j] = Pi[j] * dcy[j] + sa * b[j] + vi * k[j];
        sa_out[i] = sa;
    }
}

/* dst = srcᵀ for N×N, in 8×8 tiles (the checkpoint is cold: walk it a cache line at a time) */
static void transpose(float *restrict dst, const float *restrict src, int N)
{
    for (int j0 = 0; j0 < N; j0 += 8)
        for (int i0 = 0; i0 < N; i0 += 8) {
            const int j1 = j0 + 8 < N ? j0 + 8 : N, i1 = i0 + 8 < N ? i0 + 8 : N;
            for (int j = j0; j < j1; j++)
                for (int i = i0; i < i1; i++)
                    dst[(size_t)i * N + j] = src[(size_t)j * N + i];
        }
}

static inline void decay(float *dcy, const float *logw, int N)
{
    for (int j = 0; j < N; j++)
        dcy[j] = expf(logw[j]);
}

/* Value columns [i0, i1) of head bh = b·H + h through the whole sequence: state_in
 * (value-major, may be NULL) in, state_out (may be NULL) out, this head's key-major
 * checkpoints ck (may be NULL), y (may be NULL), every token's sa (ck_sa: the checkpoint's
 * sa part, laid out as y; may be NULL). St holds N·(i1 − i0) floats, dcy N. */
static void wkv7_forward_cols(const rl_wkv_dims *d, const rl_wkv_in *in, int bh, int i0, int i1, float *y,
                              float *state_out, float *ck, float *ck_sa, const float *state_in, float *St,
                              float *dcy)
{
    const int T = d->seq, H = d->heads, N = d->head_dim, L = d->chunk, nr = i1 - i0;
    const int b = bh / H, h = bh % H;
    const size_t NN = (size_t)N * N, soff = (size_t)bh * NN;
    for (int j = 0; j < N; j++)
        for (int ii = 0; ii < nr; ii++)
            St[(size_t)j * nr + ii] = state_in ? state_in[soff + (size_t)(i0 + ii) * N + j] : 0.0f;
    for (int t = 0; t < T; t++) {
        if (ck && t % L == 0)
            for (int j = 0; j < N; j++)
                memcpy(ck + (size_t)(t / L) * NN + (size_t)j * N + i0, St + (size_t)j * nr, sizeof(float) * (size_t)nr);
        const size_t o = tok_off(d, b, t, h);
        decay(dcy, in->logw + o, N);
        wkv7_step_cols(St, nr, N, in->r + o, dcy, in->k + o, in->v + o + i0, in->a + o, in->b + o,
                       y ? y + o + i0 : NULL, ck_sa ? ck_sa + o + i0 : NULL);
    }
    if (state_out)
        for (int j = 0; j < N; j++)
            for (int ii = 0; ii < nr; ii++)
                state_out[soff + (size_t)(i0 + ii) * N + j] = St[(size_t)j * nr + ii];
}

/* Parts per head when heads are fewer than threads: 32-column parts where N allows,
 * else parts of at least 4 columns. */
static int column_split(int BH, int threads, int N)
{
    if (BH >= threads)
        return 1;
    int split = (threads + BH - 1) / BH, most = N >= 64 ? N / 32 : N / 4;
    most = most > 0 ? most : 1;
    return split < most ? split : most;
}

int rl__cpu_wkv7_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                         const rl_wkv_in *in, const float *state_in)
{
    const int BH = d->batch * d->heads, N = d->head_dim, split = column_split(BH, be->num_threads, N);
    const int nc = (d->seq + d->chunk - 1) / d->chunk;
    const size_t sa_at = rl_wkv_checkpoint_floats(d, 6); /* the checkpoint's sa part follows the states */
    int oom = 0;
#pragma omp parallel for schedule(static)
    for (int item = 0; item < BH * split; item++) {
        const int bh = item / split, part = item % split;
        const int i0 = (int)((long)part * N / split), i1 = (int)((long)(part + 1) * N / split);
        float *St = malloc(sizeof(float) * ((size_t)(i1 - i0) * N + N));
        if (!St) {
#pragma omp atomic write
            oom = 1;
            continue;
        }
        wkv7_forward_cols(d, in, bh, i0, i1, y, state_out, ckpt ? ckpt + (size_t)bh * nc * N * N : NULL,
                          ckpt ? ckpt + sa_at : NULL, state_in, St, St + (size_t)(i1 - i0) * N);
        free(St);
    }
    if (oom)
        return rl__fail(be, RL_ENOMEM, "rl_wkv7_forward: cannot allocate a %dx%d state per thread", N, N);
    return 0;
}

/* One (b, h): walks the chunks backward. starts[c] is the state before chunk c. */
RL_CPU_CLONES static void wkv7_backward_head(const rl_wkv_dims *d, int b, int h, const float *starts, const rl_wkv_in *in,
                               const float *dy, const float *dstate_out, float *dstate_in, const rl_wkv_grad *g,
                               float *buf)
{
    const int T = d->seq, N = d->head_dim, L = d->chunk, nc = (T + L - 1) / L;
    const size_t NN = (size_t)N * N;
    float *states = buf;                   /* (L+1) states: before and after each token of a chunk */
    float *sa = states + (size_t)(L + 1) * NN; /* [L][N] */
    float *dcy = sa + (size_t)L * N;       /* [L][N] */
    float *G = dcy + (size_t)L * N;        /* N×N */
    float *cr = G + NN, *cd = cr + N, *ck = cd + N, *cb = ck + N, *ca = cb + N; /* column sums */
    const size_t soff = ((size_t)b * d->heads + h) * NN;
    if (dstate_out)
        memcpy(G, dstate_out + soff, sizeof(float) * NN);
    else
        memset(G, 0, sizeof(float) * NN);
    for (int c = nc - 1; c >= 0; c--) {
        const int t0 = c * L, n = T - t0 < L ? T - t0 : L;
        transpose(states, starts + (size_t)c * NN, N); /* key-major checkpoint → value-major */
        for (int tau = 0; tau < n; tau++) {
            const size_t o = tok_off(d, b, t0 + tau, h);
            float *S = states + (size_t)(tau + 1) * NN;
            decay(dcy + (size_t)tau * N, in->logw + o, N);
            wkv7_step_rows(S, S - NN, N, N, dcy + (size_t)tau * N, in->k + o, in->v + o, in->a + o, in->b + o,
                           sa + (size_t)tau * N);
        }
        for (int tau = n - 1; tau >= 0; tau--) {
            const size_t o = tok_off(d, b, t0 + tau, h);
            const float *Sp = states + (size_t)tau * NN, *Sc = Sp + NN;
            const float *r = in->r + o, *k = in->k + o, *v = in->v + o, *a = in->a + o, *bb = in->b + o;
            const float *dyt = dy + o, *dc = dcy + (size_t)tau * N, *st = sa + (size_t)tau * N;
            memset(cr, 0, sizeof(float) * 5 * (size_t)N);
            int i = 0;
            /* four rows at a time: the column sums and the per-token vectors are loaded and
             * stored once per four rows (the loop is load/store-bound) */
            for (; i + 4 <= N; i += 4) {
                float *G0 = G + (size_t)i * N, *G1 = G0 + N, *G2 = G1 + N, *G3 = G2 + N;
                const float *P0 = Sp + (size_t)i * N, *P1 = P0 + N, *P2 = P1 + N, *P3 = P2 + N;
                const float *C0 = Sc + (size_t)i * N, *C1 = C0 + N, *C2 = C1 + N, *C3 = C2 + N;
                const float y0 = dyt[i], y1 = dyt[i + 1], y2 = dyt[i + 2], y3 = dyt[i + 3];
                const float v0 = v[i], v1 = v[i + 1], v2 = v[i + 2], v3 = v[i + 3];
                const float s0 = st[i], s1 = st[i + 1], s2 = st[i + 2], s3 = st[i + 3];
                float dv0 = 0.0f, dv1 = 0.0f, dv2 = 0.0f, dv3 = 0.0f, ds0 = 0.0f, ds1 = 0.0f, ds2 = 0.0f, ds3 = 0.0f;
#pragma omp simd reduction(+ : dv0, dv1, dv2, dv3, ds0, ds1, ds2, ds3)
                for (int j = 0; j < N; j++) {
                    const float rj = r[j], kj = k[j], bj = bb[j];
                    const float g0 = G0[j] + y0 * rj, g1 = G1[j] + y1 * rj, g2 = G2[j] + y2 * rj, g3 = G3[j] + y3 * rj;
                    cr[j] += C0[j] * y0 + C1[j] * y1 + C2[j] * y2 + C3[j] * y3;
                    cd[j] += g0 * P0[j] + g1 * P1[j] + g2 * P2[j] + g3 * P3[j];
                    ck[j] += g0 * v0 + g1 * v1 + g2 * v2 + g3 * v3;
                    cb[j] += g0 * s0 + g1 * s1 + g2 * s2 + g3 * s3;
                    dv0 += g0 * kj, dv1 += g1 * kj, dv2 += g2 * kj, dv3 += g3 * kj;
                    ds0 += g0 * bj, ds1 += g1 * bj, ds2 += g2 * bj, ds3 += g3 * bj;
                    G0[j] = g0, G1[j] = g1, G2[j] = g2, G3[j] = g3;
                }
#pragma omp simd
                for (int j = 0; j < N; j++) {
                    const float dj = dc[j], aj = a[j];
                    ca[j] += P0[j] * ds0 + P1[j] * ds1 + P2[j] * ds2 + P3[j] * ds3;
                    G0[j] = G0[j] * dj + ds0 * aj, G1[j] = G1[j] * dj + ds1 * aj;
                    G2[j] = G2[j] * dj + ds2 * aj, G3[j] = G3[j] * dj + ds3 * aj;
                }
                g->v[o + i] += dv0, g->v[o + i + 1] += dv1, g->v[o + i + 2] += dv2, g->v[o + i + 3] += dv3;
            }
            for (; i < N; i++) {
                float *Gi = G + (size_t)i * N;
                const float *Spi = Sp + (size_t)i * N, *Sci = Sc + (size_t)i * N;
                const float dyi = dyt[i], vi = v[i], sai = st[i];
                float dvi = 0.0f, dsai = 0.0f;
#pragma omp simd reduction(+ : dvi, dsai)
                for (int j = 0; j < N; j++) {
                    float gij = Gi[j] + dyi * r[j];
                    cr[j] += Sci[j] * dyi;
                    cd[j] += gij * Spi[j];
                    ck[j] += gij * vi;
                    cb[j] += gij * sai;
                    dvi += gij * k[j];
                    dsai += gij * bb[j];
                    Gi[j] = gij;
                }
#pragma omp simd
                for (int j = 0; j < N; j++) {
                    ca[j] += Spi[j] * dsai;
                    Gi[j] = Gi[j] * dc[j] + dsai * a[j];
                }
                g->v[o + i] += dvi;
            }
#pragma omp simd
            for (int j = 0; j < N; j++) {
                g->r[o + j] += cr[j];
                g->logw[o + j] += cd[j] * dc[j];
                g->k[o + j] += ck[j];
                g->b[o + j] += cb[j];
                g->a[o + j] += ca[j];
            }
        }
    }
    if (dstate_in)
        for (size_t e = 0; e < NN; e++)
            dstate_in[soff + e] += G[e];
}

int rl__cpu_wkv7_backward(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                          const float *dy, const float *dstate_out, const rl_wkv_in *in, const float *state_in,
                          const float *ckpt)
{
    const int B = d->batch, T = d->seq, H = d->heads, N = d->head_dim, L = d->chunk;
    const int nc = (T + L - 1) / L;
    const size_t NN = (size_t)N * N;
    const size_t buf_floats = (size_t)(L + 1) * NN + 2 * (size_t)L * N + NN + 5 * (size_t)N;
    int oom = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float *buf = malloc(sizeof(float) * buf_floats);
        float *own = ckpt ? NULL : malloc(sizeof(float) * (size_t)nc * NN);
        if (!buf || (!ckpt && !own)) {
            free(buf), free(own);
#pragma omp atomic write
            oom = 1;
            continue;
        }
        const float *starts = ckpt ? ckpt + (size_t)bh * nc * NN : own;
        if (!ckpt) /* replay the forward from state_in, keeping each chunk's first state (key-major) */
            wkv7_forward_cols(d, in, bh, 0, N, NULL, NULL, own, NULL, state_in, buf, buf + NN);
        wkv7_backward_head(d, b, h, starts, in, dy, dstate_out, dstate_in, g, buf);
        free(buf), free(own);
    }
    if (oom)
        return rl__fail(be, RL_ENOMEM, "rl_wkv7_backward: cannot allocate the chunk buffer (L=%d, N=%d) per thread",
                        L, N);
    return 0;
}
