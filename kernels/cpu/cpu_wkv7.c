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
 * Threads: one (b, h) per task; the forward also splits value rows when there are
 * fewer heads than threads (rows are independent in the forward: sa_i reads row i). */
#include <omp.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_int.h"

static inline size_t tok_off(const rl_wkv_dims *d, int b, int t, int h)
{
    return (((size_t)b * d->seq + t) * d->heads + h) * d->head_dim;
}

/* Advances rows [0, nrows) of a state (rows of length N) through one token. v, y
 * and sa_out are already offset to the first row; y and sa_out may be NULL. */
static void wkv7_step_rows(float *S, int nrows, int N, const float *r, const float *dcy, const float *k,
                           const float *v, const float *a, const float *b, float *y, float *sa_out)
{
    int i = 0;
    /* four rows at a time: a, d, b, k, r are loaded once per four rows (the loop is load-bound) */
    for (; i + 4 <= nrows; i += 4) {
        float *S0 = S + (size_t)i * N, *S1 = S0 + N, *S2 = S1 + N, *S3 = S2 + N;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int j = 0; j < N; j++) {
            s0 += S0[j] * a[j], s1 += S1[j] * a[j];
            s2 += S2[j] * a[j], s3 += S3[j] * a[j];
        }
        const float v0 = v[i], v1 = v[i + 1], v2 = v[i + 2], v3 = v[i + 3];
        float y0 = 0.0f, y1 = 0.0f, y2 = 0.0f, y3 = 0.0f;
#pragma omp simd reduction(+ : y0, y1, y2, y3)
        for (int j = 0; j < N; j++) {
            const float dj = dcy[j], bj = b[j], kj = k[j], rj = r[j];
            const float n0 = S0[j] * dj + s0 * bj + v0 * kj, n1 = S1[j] * dj + s1 * bj + v1 * kj;
            const float n2 = S2[j] * dj + s2 * bj + v2 * kj, n3 = S3[j] * dj + s3 * bj + v3 * kj;
            S0[j] = n0, S1[j] = n1, S2[j] = n2, S3[j] = n3;
            y0 += n0 * rj, y1 += n1 * rj, y2 += n2 * rj, y3 += n3 * rj;
        }
        if (y)
            y[i] = y0, y[i + 1] = y1, y[i + 2] = y2, y[i + 3] = y3;
        if (sa_out)
            sa_out[i] = s0, sa_out[i + 1] = s1, sa_out[i + 2] = s2, sa_out[i + 3] = s3;
    }
    for (; i < nrows; i++) {
        float *Si = S + (size_t)i * N;
        float sa = 0.0f, yi = 0.0f;
#pragma omp simd reduction(+ : sa)
        for (int j = 0; j < N; j++)
            sa += Si[j] * a[j];
        const float vi = v[i];
#pragma omp simd reduction(+ : yi)
        for (int j = 0; j < N; j++) {
            float s = Si[j] * dcy[j] + sa * b[j] + vi * k[j];
            Si[j] = s;
            yi += s * r[j];
        }
        if (y)
            y[i] = yi;
        if (sa_out)
            sa_out[i] = sa;
    }
}

static inline void decay(float *dcy, const float *logw, int N)
{
    for (int j = 0; j < N; j++)
        dcy[j] = expf(logw[j]);
}

int rl__cpu_wkv7_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                         const rl_wkv_in *in, const float *state_in)
{
    const int B = d->batch, T = d->seq, H = d->heads, N = d->head_dim, L = d->chunk;
    const int nc = (T + L - 1) / L, BH = B * H;
    /* Split value rows when heads are fewer than threads, keeping >= 4 rows a part. */
    int split = 1;
    if (BH < be->num_threads) {
        split = (be->num_threads + BH - 1) / BH;
        if (split > N / 4)
            split = N / 4 > 0 ? N / 4 : 1;
    }
    int oom = 0;
#pragma omp parallel for schedule(static)
    for (int item = 0; item < BH * split; item++) {
        const int bh = item / split, part = item % split, b = bh / H, h = bh % H;
        const int i0 = (int)((long)part * N / split), i1 = (int)((long)(part + 1) * N / split), nr = i1 - i0;
        float *S = malloc(sizeof(float) * ((size_t)nr * N + N));
        if (!S) {
#pragma omp atomic write
            oom = 1;
            continue;
        }
        float *dcy = S + (size_t)nr * N;
        const size_t soff = (size_t)bh * N * N + (size_t)i0 * N;
        if (state_in)
            memcpy(S, state_in + soff, sizeof(float) * (size_t)nr * N);
        else
            memset(S, 0, sizeof(float) * (size_t)nr * N);
        for (int t = 0; t < T; t++) {
            if (ckpt && t % L == 0)
                memcpy(ckpt + ((size_t)bh * nc + t / L) * N * N + (size_t)i0 * N, S, sizeof(float) * (size_t)nr * N);
            const size_t o = tok_off(d, b, t, h);
            decay(dcy, in->logw + o, N);
            wkv7_step_rows(S, nr, N, in->r + o, dcy, in->k + o, in->v + o + i0, in->a + o, in->b + o, y + o + i0,
                           NULL);
        }
        if (state_out)
            memcpy(state_out + soff, S, sizeof(float) * (size_t)nr * N);
        free(S);
    }
    if (oom)
        return rl__fail(be, RL_ENOMEM, "rl_wkv7_forward: cannot allocate a %dx%d state per thread", N, N);
    return 0;
}

/* One (b, h): walks the chunks backward. starts[c] is the state before chunk c. */
static void wkv7_backward_head(const rl_wkv_dims *d, int b, int h, const float *starts, const rl_wkv_in *in,
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
        memcpy(states, starts + (size_t)c * NN, sizeof(float) * NN);
        for (int tau = 0; tau < n; tau++) {
            const size_t o = tok_off(d, b, t0 + tau, h);
            float *S = states + (size_t)(tau + 1) * NN;
            memcpy(S, S - NN, sizeof(float) * NN);
            decay(dcy + (size_t)tau * N, in->logw + o, N);
            wkv7_step_rows(S, N, N, in->r + o, dcy + (size_t)tau * N, in->k + o, in->v + o, in->a + o, in->b + o,
                           NULL, sa + (size_t)tau * N);
        }
        for (int tau = n - 1; tau >= 0; tau--) {
            const size_t o = tok_off(d, b, t0 + tau, h);
            const float *Sp = states + (size_t)tau * NN, *Sc = Sp + NN;
            const float *r = in->r + o, *k = in->k + o, *v = in->v + o, *a = in->a + o, *bb = in->b + o;
            const float *dyt = dy + o, *dc = dcy + (size_t)tau * N, *st = sa + (size_t)tau * N;
            memset(cr, 0, sizeof(float) * 5 * (size_t)N);
            for (int i = 0; i < N; i++) {
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
        if (!ckpt) { /* replay the forward from state_in, keeping each chunk's first state */
            float *S = buf, *dcy = buf + NN;
            if (state_in)
                memcpy(S, state_in + (size_t)bh * NN, sizeof(float) * NN);
            else
                memset(S, 0, sizeof(float) * NN);
            for (int t = 0; t < T; t++) {
                if (t % L == 0)
                    memcpy(own + (size_t)(t / L) * NN, S, sizeof(float) * NN);
                const size_t o = tok_off(d, b, t, h);
                decay(dcy, in->logw + o, N);
                wkv7_step_rows(S, N, N, in->r + o, dcy, in->k + o, in->v + o, in->a + o, in->b + o, NULL, NULL);
            }
        }
        wkv7_backward_head(d, b, h, starts, in, dy, dstate_out, dstate_in, g, buf);
        free(buf), free(own);
    }
    if (oom)
        return rl__fail(be, RL_ENOMEM, "rl_wkv7_backward: cannot allocate the chunk buffer (L=%d, N=%d) per thread",
                        L, N);
    return 0;
}
