/* test_kernels_attention_loss.c — causal GQA attention and the vocabulary /
 * hidden-state losses of the CPU backend against float64 references and central
 * finite differences. */
#include <string.h>

#include "check.h"
#include "kernels.h"

static rl_backend *be;

/* ---- attention ---- */
typedef struct {
    double *q, *k, *v, *dout;
    int B, T, H, G, N;
    double scale;
} attn_ctx;

static void attn_ref(const attn_ctx *c, double *out)
{
    int rho = c->H / c->G;
    double *s = malloc(sizeof(double) * c->T);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            for (int i = 0; i < c->T; i++) {
                const double *qi = c->q + (((size_t)b * c->T + i) * c->H + h) * c->N;
                double m = -INFINITY, l = 0;
                for (int j = 0; j <= i; j++) {
                    const double *kj = c->k + (((size_t)b * c->T + j) * c->G + h / rho) * c->N;
                    s[j] = 0;
                    for (int n = 0; n < c->N; n++)
                        s[j] += qi[n] * kj[n];
                    s[j] *= c->scale;
                    m = fmax(m, s[j]);
                }
                for (int j = 0; j <= i; j++)
                    l += exp(s[j] - m);
                double *o = out + (((size_t)b * c->T + i) * c->H + h) * c->N;
                for (int n = 0; n < c->N; n++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++)
                        acc += exp(s[j] - m) / l * c->v[(((size_t)b * c->T + j) * c->G + h / rho) * c->N + n];
                    o[n] = acc;
                }
            }
    free(s);
}

static double attn_loss(void *p)
{
    attn_ctx *c = p;
    size_t n = (size_t)c->B * c->T * c->H * c->N;
    double *o = malloc(sizeof(double) * n), L = 0;
    attn_ref(c, o);
    for (size_t i = 0; i < n; i++)
        L += o[i] * c->dout[i];
    free(o);
    return L;
}

static void test_attention(int B, int T, int H, int G, int N)
{
    printf("attention B=%d T=%d heads=%d kv_heads=%d head_dim=%d\n", B, T, H, G, N);
    size_t nq = (size_t)B * T * H * N, nk = (size_t)B * T * G * N;
    float *q = malloc(4 * nq), *k = malloc(4 * nk), *v = malloc(4 * nk), *out = malloc(4 * nq);
    float *dout = malloc(4 * nq), *lse = malloc(4 * B * H * T), *delta = malloc(4 * B * H * T);
    float *dq = malloc(4 * nq), *dk = malloc(4 * nk), *dv = malloc(4 * nk);
    float *dq0 = malloc(4 * nq), *dk0 = malloc(4 * nk), *dv0 = malloc(4 * nk);
    fill(q, nq, 1.5f), fill(k, nk, 1.5f), fill(v, nk, 1), fill(dout, nq, 1);
    fill(dq, nq, 0.1f), fill(dk, nk, 0.1f), fill(dv, nk, 0.1f);
    memcpy(dq0, dq, 4 * nq), memcpy(dk0, dk, 4 * nk), memcpy(dv0, dv, 4 * nk);
    rl_attn_dims d = {.batch = B, .seq = T, .heads = H, .kv_heads = G, .head_dim = N, .scale = 1.0f / sqrtf((float)N)};
    attn_ctx c = {to_double(q, nq), to_double(k, nk), to_double(v, nk), to_double(dout, nq), B, T, H, G, N,
                  1.0 / sqrt((double)N)};
    double *ref = malloc(8 * nq), *gq = malloc(8 * nq), *gk = malloc(8 * nk), *gv = malloc(8 * nk);
    attn_ref(&c, ref);
    rl_attention_forward(be, &d, out, lse, q, k, v);
    check_close("attention_forward vs float64 softmax", out, ref, nq, 1e-6, 1e-5);
    rl_attention_backward(be, &d, dq, dk, dv, delta, dout, out, lse, q, k, v);
    fd_grad(attn_loss, &c, c.q, nq, gq);
    fd_grad(attn_loss, &c, c.k, nk, gk);
    fd_grad(attn_loss, &c, c.v, nk, gv);
    check_grad("attention_backward dq vs finite differences", dq, dq0, gq, nq, 2e-5, 1e-4);
    check_grad("attention_backward dk vs finite differences", dk, dk0, gk, nk, 2e-5, 1e-4);
    check_grad("attention_backward dv vs finite differences", dv, dv0, gv, nk, 2e-5, 1e-4);
    free(q), free(k), free(v), free(out), free(dout), free(lse), free(delta);
    free(dq), free(dk), free(dv), free(dq0), free(dk0), free(dv0);
    free(c.q), free(c.k), free(c.v), free(c.dout), free(ref), free(gq), free(gk), free(gv);
}

/* Analytic float64 backward of L = Σ out·dout (the formulas the small cases
 * above check against finite differences), row by row with no tiling:
 *   p_ij = softmax_j(s_ij),  dp_ij = dout_i·v_j,  ds_ij = p_ij (dp_ij − Σ_j' p_ij' dp_ij'),
 *   dq_i += scale Σ_j ds_ij k_j,  dk_j += scale Σ_i ds_ij q_i,  dv_j += Σ_i p_ij dout_i. */
static void attn_ref_backward(const attn_ctx *c, double *dq, double *dk, double *dv)
{
    const int rho = c->H / c->G, N = c->N;
    double *p = malloc(sizeof(double) * c->T), *dp = malloc(sizeof(double) * c->T);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            for (int i = 0; i < c->T; i++) {
                const size_t qo = (((size_t)b * c->T + i) * c->H + h) * N;
                double m = -INFINITY, l = 0, pdp = 0;
                for (int j = 0; j <= i; j++) {
                    const size_t ko = (((size_t)b * c->T + j) * c->G + h / rho) * N;
                    p[j] = dp[j] = 0;
                    for (int n = 0; n < N; n++) {
                        p[j] += c->q[qo + n] * c->k[ko + n];
                        dp[j] += c->dout[qo + n] * c->v[ko + n];
                    }
                    p[j] *= c->scale;
                    m = fmax(m, p[j]);
                }
                for (int j = 0; j <= i; j++)
                    l += (p[j] = exp(p[j] - m));
                for (int j = 0; j <= i; j++)
                    pdp += (p[j] /= l) * dp[j];
                for (int j = 0; j <= i; j++) {
                    const size_t ko = (((size_t)b * c->T + j) * c->G + h / rho) * N;
                    const double ds = p[j] * (dp[j] - pdp);
                    for (int n = 0; n < N; n++) {
                        dq[qo + n] += c->scale * ds * c->k[ko + n];
                        dk[ko + n] += c->scale * ds * c->q[qo + n];
                        dv[ko + n] += p[j] * c->dout[qo + n];
                    }
                }
            }
    free(p), free(dp);
}

/* Sequences longer than the kernel's tiles (64-row query and key blocks, 256-key
 * forward blocks with online softmax), with partial last tiles. */
static void test_attention_tiles(int B, int T, int H, int G, int N)
{
    printf("attention tiles B=%d T=%d heads=%d kv_heads=%d head_dim=%d\n", B, T, H, G, N);
    size_t nq = (size_t)B * T * H * N, nk = (size_t)B * T * G * N;
    float *q = malloc(4 * nq), *k = malloc(4 * nk), *v = malloc(4 * nk), *out = malloc(4 * nq);
    float *dout = malloc(4 * nq), *lse = malloc(4 * (size_t)B * H * T), *delta = malloc(4 * (size_t)B * H * T);
    float *dq = malloc(4 * nq), *dk = malloc(4 * nk), *dv = malloc(4 * nk);
    float *dq0 = malloc(4 * nq), *dk0 = malloc(4 * nk), *dv0 = malloc(4 * nk);
    fill(q, nq, 1.5f), fill(k, nk, 1.5f), fill(v, nk, 1), fill(dout, nq, 1);
    fill(dq, nq, 0.1f), fill(dk, nk, 0.1f), fill(dv, nk, 0.1f);
    memcpy(dq0, dq, 4 * nq), memcpy(dk0, dk, 4 * nk), memcpy(dv0, dv, 4 * nk);
    rl_attn_dims d = {.batch = B, .seq = T, .heads = H, .kv_heads = G, .head_dim = N, .scale = 1.0f / sqrtf((float)N)};
    attn_ctx c = {to_double(q, nq), to_double(k, nk), to_double(v, nk), to_double(dout, nq), B, T, H, G, N,
                  1.0 / sqrt((double)N)};
    double *ref = malloc(8 * nq), *gq = calloc(nq, 8), *gk = calloc(nk, 8), *gv = calloc(nk, 8);
    attn_ref(&c, ref);
    attn_ref_backward(&c, gq, gk, gv);
    rl_attention_forward(be, &d, out, lse, q, k, v);
    check_close("attention_forward vs float64 softmax", out, ref, nq, 1e-6, 1e-5);
    rl_attention_backward(be, &d, dq, dk, dv, delta, dout, out, lse, q, k, v);
    check_grad("attention_backward dq vs float64 backward", dq, dq0, gq, nq, 2e-5, 1e-4);
    check_grad("attention_backward dk vs float64 backward", dk, dk0, gk, nk, 2e-5, 1e-4);
    check_grad("attention_backward dv vs float64 backward", dv, dv0, gv, nk, 2e-5, 1e-4);
    free(q), free(k), free(v), free(out), free(dout), free(lse), free(delta);
    free(dq), free(dk), free(dv), free(dq0), free(dk0), free(dv0);
    free(c.q), free(c.k), free(c.v), free(c.dout), free(ref), free(gq), free(gk), free(gv);
}

/* bf16 attention (rl_attn_dims.bf16, a teacher's under autocast): q, k, v rounded to bf16 exactly as the float64
 * reference gets them; p rounded to bf16 before P·V moves each weight by at most 2^-9 of itself, so the output is
 * within 2^-9·max|v| of the reference on the rounded inputs (plus fp32 rounding), and lse, which sums the unrounded
 * p, within fp32 rounding. The rounding must show: the output moves away from the fp32 one. A backward refuses the
 * flag. */
static void round_bf16(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rl_bf16_to_f32(rl_f32_to_bf16(x[i]));
}

static void test_attention_bf16(int B, int T, int H, int G, int N)
{
    printf("attention bf16 B=%d T=%d heads=%d kv_heads=%d head_dim=%d\n", B, T, H, G, N);
    const size_t nq = (size_t)B * T * H * N, nk = (size_t)B * T * G * N, nl = (size_t)B * H * T;
    float *q = malloc(4 * nq), *k = malloc(4 * nk), *v = malloc(4 * nk), *out = malloc(4 * nq);
    float *out32 = malloc(4 * nq), *lse = malloc(4 * nl), *lse32 = malloc(4 * nl);
    fill(q, nq, 2.0f), fill(k, nk, 2.0f), fill(v, nk, 1);
    rl_attn_dims d = {.batch = B, .seq = T, .heads = H, .kv_heads = G, .head_dim = N, .scale = 1.0f / sqrtf((float)N)};
    rl_attention_forward(be, &d, out32, lse32, q, k, v);
    d.bf16 = 1;
    rl_attention_forward(be, &d, out, lse, q, k, v);
    round_bf16(q, nq), round_bf16(k, nk), round_bf16(v, nk);
    attn_ctx c = {to_double(q, nq), to_double(k, nk), to_double(v, nk), NULL, B, T, H, G, N, 1.0 / sqrt((double)N)};
    double *ref = malloc(8 * nq), *lref = malloc(8 * nl);
    attn_ref(&c, ref);
    for (int b = 0; b < B; b++) /* lse_i = log Σ_j exp(s_ij) on the rounded inputs */
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double m = -INFINITY, l = 0, s[T];
                for (int j = 0; j <= i; j++) {
                    s[j] = 0;
                    for (int n = 0; n < N; n++)
                        s[j] += c.q[(((size_t)b * T + i) * H + h) * N + n] * c.k[(((size_t)b * T + j) * G + h / (H / G)) * N + n];
                    s[j] *= c.scale;
                    m = fmax(m, s[j]);
                }
                for (int j = 0; j <= i; j++)
                    l += exp(s[j] - m);
                lref[((size_t)b * H + h) * T + i] = m + log(l);
            }
    double vmax = 0, moved = 0;
    for (size_t e = 0; e < nk; e++)
        vmax = fmax(vmax, fabs((double)v[e]));
    check_close("attention_forward bf16 vs float64 on bf16 q,k,v", out, ref, nq, ldexp(vmax, -9) + 1e-6, 0);
    check_close("attention_forward bf16 lse vs float64", lse, lref, nl, 2e-6, 2e-6);
    for (size_t e = 0; e < nq; e++)
        moved = fmax(moved, fabs((double)out[e] - out32[e]));
    printf("    bf16 vs fp32 output: max abs difference %.3e\n", moved);
    check_true("attention_forward bf16 rounds (output moved > 1e-4 from fp32)", moved > 1e-4);
    float *dq = calloc(nq, 4), *dk = calloc(nk, 4), *dv = calloc(nk, 4), *delta = malloc(4 * nl);
    char err[256];
    const int rc = rl_attention_backward(be, &d, dq, dk, dv, delta, out, out, lse, q, k, v);
    rl_backend_status(be, err, sizeof err);
    printf("    backward with bf16: rc %d: %s\n", rc, err);
    check_true("attention_backward refuses bf16 with a message", rc != 0 && strstr(err, "forward only") != NULL);
    rl_backend_clear_error(be);
    free(q), free(k), free(v), free(out), free(out32), free(lse), free(lse32), free(dq), free(dk), free(dv), free(delta);
    free(c.q), free(c.k), free(c.v), free(ref), free(lref);
}

/* ---- cross-entropy and KL ---- */
typedef struct {
    double *zs, *zt;
    const int32_t *y;
    int rows, V;
    double scale;
} loss_ctx;

static double row_lse(const double *z, int V)
{
    double m = -INFINITY, s = 0;
    for (int i = 0; i < V; i++)
        m = fmax(m, z[i]);
    for (int i = 0; i < V; i++)
        s += exp(z[i] - m);
    return m + log(s);
}

static double ce_loss(void *p)
{
    loss_ctx *c = p;
    double L = 0;
    for (int r = 0; r < c->rows; r++)
        if (c->y[r] >= 0)
            L += c->scale * (row_lse(c->zs + r * c->V, c->V) - c->zs[r * c->V + c->y[r]]);
    return L;
}

static double kl_loss(void *p)
{
    loss_ctx *c = p;
    double L = 0;
    for (int r = 0; r < c->rows; r++) {
        const double *s = c->zs + r * c->V, *t = c->zt + r * c->V;
        double ls = row_lse(s, c->V), lt = row_lse(t, c->V);
        for (int i = 0; i < c->V; i++)
            L += c->scale * exp(t[i] - lt) * ((t[i] - lt) - (s[i] - ls));
    }
    return L;
}

static void test_losses(void)
{
    printf("cross-entropy and KL over the vocabulary\n");
    enum { R = 5, V = 37 };
    float zs[R * V], zt[R * V], losses[R], dz[R * V], zero[R * V] = {0};
    int32_t y[R] = {3, -1, 36, 0, 17};
    fill(zs, R * V, 4), fill(zt, R * V, 4);
    loss_ctx c = {to_double(zs, R * V), to_double(zt, R * V), y, R, V, 0.25};
    double ref[R], g[R * V];
    for (int r = 0; r < R; r++)
        ref[r] = y[r] < 0 ? 0 : row_lse(c.zs + r * V, V) - c.zs[r * V + y[r]];
    rl_cross_entropy(be, losses, dz, zs, y, R, V, 0.25f);
    check_close("cross_entropy per-row loss (row 1 ignored)", losses, ref, R, 1e-6, 1e-6);
    fd_grad(ce_loss, &c, c.zs, R * V, g);
    check_grad("cross_entropy dlogits vs finite differences", dz, zero, g, R * V, 1e-6, 1e-5);
    float inplace[R * V];
    memcpy(inplace, zs, sizeof zs);
    rl_cross_entropy(be, losses, inplace, inplace, y, R, V, 0.25f);
    check_grad("cross_entropy in place (dlogits aliases logits)", inplace, zero, g, R * V, 1e-6, 1e-5);
    for (int r = 0; r < R; r++)
        ref[r] = y[r] < 0 ? 0 : row_lse(c.zs + r * V, V) - c.zs[r * V + y[r]];
    check_close("cross_entropy in place: losses still right", losses, ref, R, 1e-6, 1e-6);
    int32_t bad[1] = {V};
    check_true("a target outside the vocabulary is an error",
               rl_cross_entropy(be, losses, NULL, zs, bad, 1, V, 1.0f) == RL_ERANGE);
    rl_backend_clear_error(be);

    for (int r = 0; r < R; r++) {
        const double *s = c.zs + r * V, *t = c.zt + r * V;
        double ls = row_lse(s, V), lt = row_lse(t, V), kl = 0;
        for (int i = 0; i < V; i++)
            kl += exp(t[i] - lt) * ((t[i] - lt) - (s[i] - ls));
        ref[r] = kl;
    }
    rl_kl_divergence(be, losses, dz, zs, zt, R, V, 0.25f);
    check_close("kl_divergence per-row loss", losses, ref, R, 1e-6, 1e-5);
    fd_grad(kl_loss, &c, c.zs, R * V, g);
    check_grad("kl_divergence dlogits vs finite differences", dz, zero, g, R * V, 1e-6, 1e-5);
    rl_kl_divergence(be, losses, NULL, zt, zt, R, V, 1.0f);
    double zeros[R] = {0};
    check_close("kl_divergence of a distribution with itself is 0", losses, zeros, R, 1e-6, 0);
    free(c.zs), free(c.zt);
}

/* ---- per-token L2 and MSE ---- */
typedef struct {
    double *a, *b;
    int rows, dim, mse;
    double scale;
} dist_ctx;

static double dist_loss(void *p)
{
    dist_ctx *c = p;
    double L = 0;
    for (int r = 0; r < c->rows; r++) {
        double ss = 0;
        for (int j = 0; j < c->dim; j++)
            ss += pow(c->a[r * c->dim + j] - c->b[r * c->dim + j], 2);
        L += c->scale * (c->mse ? ss / c->dim : sqrt(ss / c->dim));
    }
    return L;
}

static void test_distances(void)
{
    printf("per-token L2 distance and MSE\n");
    enum { R = 4, D = 9 };
    float a[R * D], b[R * D], losses[R], da[R * D], da0[R * D];
    fill(a, R * D, 1), fill(b, R * D, 1);
    for (int mse = 0; mse < 2; mse++) {
        fill(da, R * D, 0.1f);
        memcpy(da0, da, sizeof da);
        dist_ctx c = {to_double(a, R * D), to_double(b, R * D), R, D, mse, 0.3};
        double ref[R], g[R * D];
        for (int r = 0; r < R; r++) {
            double ss = 0;
            for (int j = 0; j < D; j++)
                ss += pow(c.a[r * D + j] - c.b[r * D + j], 2);
            ref[r] = mse ? ss / D : sqrt(ss / D);
        }
        fd_grad(dist_loss, &c, c.a, R * D, g);
        if (mse) {
            rl_mse_forward(be, losses, a, b, R, D);
            rl_mse_backward(be, da, a, b, 0.3f, R, D);
        } else {
            rl_l2_distance_forward(be, losses, a, b, R, D);
            rl_l2_distance_backward(be, da, a, b, losses, 0.3f, R, D);
        }
        check_close(mse ? "mse_forward" : "l2_distance_forward (‖a−b‖/√D)", losses, ref, R, 1e-6, 1e-5);
        check_grad(mse ? "mse_backward vs finite differences" : "l2_distance_backward vs finite differences", da,
                   da0, g, R * D, 1e-5, 1e-4);
        free(c.a), free(c.b);
    }
}

int main(void)
{
    char err[256];
    rl_backend_options opt = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    if (rl_backend_create(&be, &opt, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    test_attention(2, 7, 4, 2, 6); /* GQA ratio 2 */
    test_attention(1, 9, 3, 1, 4); /* multi-query */
    test_attention(1, 5, 2, 2, 8); /* plain MHA */
    test_attention_tiles(2, 300, 4, 2, 16); /* 5 query tiles, 2 forward key blocks */
    test_attention_tiles(1, 129, 2, 2, 8);  /* plain MHA, one-row last tile */
    test_attention_bf16(2, 300, 4, 2, 32);   /* 2 forward key blocks: p against two running maxima */
    test_losses();
    test_distances();
    if (rl_backend_status(be, err, sizeof err)) {
        printf("unexpected backend error: %s\n", err);
        check_failures++;
    }
    rl_backend_destroy(be);
    printf("%s: %d failure(s)\n", check_failures ? "FAIL" : "PASS", check_failures);
    return check_failures ? 1 : 0;
}
