/* test_kernels_layers.c — the CPU backend's matmul, embedding, RMSNorm, RoPE,
 * SwiGLU, casts, reductions and AdamW against float64 references; backward ops
 * against central finite differences of the float64 forward. */
#include <string.h>

#include "check.h"
#include "kernels.h"

static rl_backend *be;

static void test_matmul(void)
{
    printf("matmul (sgemm, bias, transposes, batch, alpha/beta)\n");
    enum { M = 5, N = 7, K = 9, BATCH = 3 };
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float A[BATCH * M * K], B[BATCH * K * N], C[BATCH * M * N], bias[N];
            double ref[BATCH * M * N];
            fill(A, BATCH * M * K, 1), fill(B, BATCH * K * N, 1), fill(C, BATCH * M * N, 1), fill(bias, N, 1);
            rl_gemm g = {.M = M, .N = N, .K = K, .trans_a = ta, .trans_b = tb, .alpha = 0.7f, .beta = 0.3f,
                         .batch = BATCH, .stride_a = M * K, .stride_b = K * N, .stride_c = M * N};
            for (int bi = 0; bi < BATCH; bi++)
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        const float *a = A + bi * M * K, *b = B + bi * K * N;
                        double s = 0;
                        for (int kk = 0; kk < K; kk++)
                            s += (double)(ta ? a[kk * M + i] : a[i * K + kk]) * (tb ? b[j * K + kk] : b[kk * N + j]);
                        ref[bi * M * N + i * N + j] = 0.7 * s + 0.3 * C[bi * M * N + i * N + j] + bias[j];
                    }
            rl_matmul(be, &g, C, A, B, bias);
            char name[64];
            snprintf(name, sizeof name, "matmul trans_a=%d trans_b=%d", ta, tb);
            check_close(name, C, ref, BATCH * M * N, 1e-5, 1e-5);
        }
    float dbias[N], dbias0[N], dout[M * N];
    fill(dbias, N, 0.1f), fill(dout, M * N, 1);
    memcpy(dbias0, dbias, sizeof dbias);
    double ref[N] = {0};
    for (int r = 0; r < M; r++)
        for (int j = 0; j < N; j++)
            ref[j] += dout[r * N + j];
    rl_bias_backward(be, dbias, dout, M, N);
    check_grad("bias_backward accumulates column sums", dbias, dbias0, ref, N, 1e-6, 1e-6);
    /* BF16 operands and a BF16 result without bias are taken (test_autocast.c checks them); F16 operands and a
     * BF16 result with a bias are not */
    char err[256];
    const rl_dtype bad_ab[2][3] = {{RL_DTYPE_F16, RL_DTYPE_F32, RL_DTYPE_F32}, {RL_DTYPE_BF16, RL_DTYPE_BF16, RL_DTYPE_BF16}};
    for (int k = 0; k < 2; k++) {
        rl_gemm bad = {.M = 2, .N = 2, .K = 2, .alpha = 1, .dtype_a = bad_ab[k][0], .dtype_b = bad_ab[k][1],
                       .dtype_c = bad_ab[k][2]};
        check_true(k ? "matmul refuses a BF16 result with a bias on the CPU backend" : "matmul refuses F16 operands "
                   "on the CPU backend", rl_matmul(be, &bad, dbias, dout, dout, k ? dbias0 : NULL) == RL_ENOTSUP);
        check_true("the refusal is a sticky error with a message",
                   rl_backend_status(be, err, sizeof err) == RL_ENOTSUP && strstr(err, "F32") != NULL);
        rl_backend_clear_error(be);
    }
}

static void test_embedding(void)
{
    printf("embedding\n");
    enum { V = 11, D = 6, R = 9 };
    float table[V * D], out[R * D], dtable[V * D], dtable0[V * D], dout[R * D];
    int32_t ids[R] = {3, 0, 10, 3, 3, 7, 0, 1, 9};
    fill(table, V * D, 1), fill(dtable, V * D, 0.1f), fill(dout, R * D, 1);
    memcpy(dtable0, dtable, sizeof dtable);
    rl_embedding_forward(be, out, ids, table, R, V, D);
    double ref[R * D], dref[V * D] = {0};
    for (int r = 0; r < R; r++)
        for (int j = 0; j < D; j++) {
            ref[r * D + j] = table[ids[r] * D + j];
            dref[ids[r] * D + j] += dout[r * D + j];
        }
    check_close("embedding_forward gathers rows", out, ref, R * D, 0, 0);
    rl_embedding_backward(be, dtable, dout, ids, R, V, D);
    check_grad("embedding_backward sums repeated ids", dtable, dtable0, dref, V * D, 1e-6, 1e-6);
    int32_t badids[2] = {1, V};
    check_true("an id outside the vocabulary is an error",
               rl_embedding_forward(be, out, badids, table, 2, V, D) == RL_ERANGE);
    rl_backend_clear_error(be);
}

/* ---- RMSNorm ---- */
typedef struct {
    double *x, *w, *dout;
    int rows, dim;
    double eps;
} rms_ctx;

static double rms_loss(void *p)
{
    rms_ctx *c = p;
    double L = 0;
    for (int r = 0; r < c->rows; r++) {
        double ss = 0;
        for (int j = 0; j < c->dim; j++)
            ss += c->x[r * c->dim + j] * c->x[r * c->dim + j];
        double rs = 1 / sqrt(ss / c->dim + c->eps);
        for (int j = 0; j < c->dim; j++)
            L += c->dout[r * c->dim + j] * c->x[r * c->dim + j] * rs * c->w[j];
    }
    return L;
}

static void test_rmsnorm(void)
{
    printf("rmsnorm\n");
    enum { R = 6, D = 10 };
    float x[R * D], w[D], out[R * D], rstd[R], dout[R * D], dx[R * D], dx0[R * D], dw[D], dw0[D];
    fill(x, R * D, 2), fill(w, D, 1), fill(dout, R * D, 1), fill(dx, R * D, 0.1f), fill(dw, D, 0.1f);
    memcpy(dx0, dx, sizeof dx), memcpy(dw0, dw, sizeof dw);
    rl_rmsnorm_forward(be, out, rstd, x, w, R, D, 1e-5f);
    rms_ctx c = {to_double(x, R * D), to_double(w, D), to_double(dout, R * D), R, D, 1e-5};
    double ref[R * D];
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int j = 0; j < D; j++)
            ss += c.x[r * D + j] * c.x[r * D + j];
        for (int j = 0; j < D; j++)
            ref[r * D + j] = c.x[r * D + j] / sqrt(ss / D + 1e-5) * c.w[j];
    }
    check_close("rmsnorm_forward", out, ref, R * D, 1e-6, 1e-5);
    rl_rmsnorm_backward(be, dx, dw, dout, x, w, rstd, R, D);
    double gx[R * D], gw[D];
    fd_grad(rms_loss, &c, c.x, R * D, gx);
    fd_grad(rms_loss, &c, c.w, D, gw);
    check_grad("rmsnorm_backward dx vs finite differences", dx, dx0, gx, R * D, 1e-5, 1e-4);
    check_grad("rmsnorm_backward dweight vs finite differences", dw, dw0, gw, D, 1e-5, 1e-4);
    float dx2[R * D]; /* a frozen weight (dweight NULL): the same dx, bit for bit */
    memcpy(dx2, dx0, sizeof dx2);
    rl_rmsnorm_backward(be, dx2, NULL, dout, x, w, rstd, R, D);
    check_true("rmsnorm_backward with dweight NULL: dx bit-identical", memcmp(dx2, dx, sizeof dx) == 0);
    free(c.x), free(c.w), free(c.dout);
}

/* ---- RoPE ---- */
typedef struct {
    double *x, *dout, *cs, *sn;
    int B, T, H, N;
} rope_ctx;

static void rope_ref(const rope_ctx *c, double *y)
{
    int half = c->N / 2;
    for (int bt = 0; bt < c->B * c->T; bt++)
        for (int h = 0; h < c->H; h++) {
            const double *v = c->x + ((size_t)bt * c->H + h) * c->N;
            double *o = y + ((size_t)bt * c->H + h) * c->N;
            int t = bt % c->T;
            for (int i = 0; i < half; i++) {
                double co = c->cs[t * half + i], si = c->sn[t * half + i];
                o[i] = v[i] * co - v[i + half] * si;
                o[i + half] = v[i + half] * co + v[i] * si;
            }
        }
}

static double rope_loss(void *p)
{
    rope_ctx *c = p;
    size_t n = (size_t)c->B * c->T * c->H * c->N;
    double *y = malloc(sizeof(double) * n), L = 0;
    rope_ref(c, y);
    for (size_t i = 0; i < n; i++)
        L += y[i] * c->dout[i];
    free(y);
    return L;
}

static void test_rope(void)
{
    printf("rope (rotate-half)\n");
    enum { B = 2, T = 5, H = 3, N = 8, n = B * T * H * N };
    float x[n], cs[T * N / 2], sn[T * N / 2], dout[n], dx[n];
    fill(x, n, 1), fill(dout, n, 1);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < N / 2; i++) {
            double ang = t * pow(10000.0, -2.0 * i / N);
            cs[t * N / 2 + i] = (float)cos(ang), sn[t * N / 2 + i] = (float)sin(ang);
        }
    rope_ctx c = {to_double(x, n), to_double(dout, n), to_double(cs, T * N / 2), to_double(sn, T * N / 2),
                  B, T, H, N};
    double ref[n], g[n];
    rope_ref(&c, ref);
    rl_rope_forward(be, x, cs, sn, B, T, H, N);
    check_close("rope_forward", x, ref, n, 1e-6, 1e-5);
    memcpy(dx, dout, sizeof dx);
    rl_rope_backward(be, dx, cs, sn, B, T, H, N);
    fd_grad(rope_loss, &c, c.x, n, g);
    check_close("rope_backward vs finite differences", dx, g, n, 1e-6, 1e-5);
    free(c.x), free(c.dout), free(c.cs), free(c.sn);
}

/* ---- SwiGLU ---- */
typedef struct {
    double *g, *u, *dout;
    int n;
} swiglu_ctx;

static double swiglu_loss(void *p)
{
    swiglu_ctx *c = p;
    double L = 0;
    for (int i = 0; i < c->n; i++)
        L += c->dout[i] * c->g[i] / (1 + exp(-c->g[i])) * c->u[i];
    return L;
}

static void test_swiglu(void)
{
    printf("swiglu\n");
    enum { n = 40 };
    float g[n], u[n], out[n], dout[n], dg[n], dg0[n], du[n], du0[n];
    fill(g, n, 4), fill(u, n, 1), fill(dout, n, 1), fill(dg, n, 0.1f), fill(du, n, 0.1f);
    memcpy(dg0, dg, sizeof dg), memcpy(du0, du, sizeof du);
    swiglu_ctx c = {to_double(g, n), to_double(u, n), to_double(dout, n), n};
    double ref[n], gg[n], gu[n];
    for (int i = 0; i < n; i++)
        ref[i] = c.g[i] / (1 + exp(-c.g[i])) * c.u[i];
    rl_swiglu_forward(be, out, g, u, n);
    check_close("swiglu_forward", out, ref, n, 1e-6, 1e-5);
    rl_swiglu_backward(be, dg, du, dout, g, u, n);
    fd_grad(swiglu_loss, &c, c.g, n, gg);
    fd_grad(swiglu_loss, &c, c.u, n, gu);
    check_grad("swiglu_backward dgate vs finite differences", dg, dg0, gg, n, 1e-5, 1e-4);
    check_grad("swiglu_backward dup vs finite differences", du, du0, gu, n, 1e-5, 1e-4);
    free(c.g), free(c.u), free(c.dout);
}

static void test_casts_and_reductions(void)
{
    printf("casts, reductions, elementwise\n");
    check_true("bf16(1.0) = 0x3f80", rl_f32_to_bf16(1.0f) == 0x3f80);
    check_true("bf16 rounds to nearest even (1 + 2^-8 -> 1.0)", rl_f32_to_bf16(1.00390625f) == 0x3f80);
    check_true("bf16 rounds up past the half (1 + 3·2^-9)", rl_f32_to_bf16(1.005859375f) == 0x3f81);
    check_true("bf16 keeps NaN a NaN", isnan(rl_bf16_to_f32(rl_f32_to_bf16(NAN))));
    check_true("f16(1.0) = 0x3c00, f16(-2.5) = 0xc100", rl_f32_to_f16(1.0f) == 0x3c00 && rl_f32_to_f16(-2.5f) == 0xc100);
    check_true("f16 overflow -> inf, 65504 exact", rl_f32_to_f16(70000.f) == 0x7c00 && rl_f32_to_f16(65504.f) == 0x7bff);
    check_true("f16 smallest subnormal 2^-24 round trip", rl_f16_to_f32(rl_f32_to_f16(5.9604645e-8f)) == 5.9604645e-8f);
    int all_ok = 1;
    for (uint32_t h = 0; h < 0x10000; h++) { /* every finite half survives f16 -> f32 -> f16 */
        if ((h & 0x7c00) == 0x7c00)
            continue;
        if (rl_f32_to_f16(rl_f16_to_f32((uint16_t)h)) != h)
            all_ok = 0;
    }
    check_true("all 63488 finite f16 values round-trip through f32", all_ok);
    enum { n = 1000 };
    float x[n], y[n], z[n];
    uint16_t hb[n];
    fill(x, n, 3);
    rl_cast(be, hb, RL_DTYPE_BF16, x, RL_DTYPE_F32, n);
    rl_cast(be, y, RL_DTYPE_F32, hb, RL_DTYPE_BF16, n);
    double ref[n];
    for (int i = 0; i < n; i++)
        ref[i] = x[i];
    check_close("cast f32->bf16->f32 within half an ulp (2^-8)", y, ref, n, 0, 1.0 / 256);
    rl_cast(be, hb, RL_DTYPE_F16, x, RL_DTYPE_F32, n);
    rl_cast(be, y, RL_DTYPE_F32, hb, RL_DTYPE_F16, n);
    check_close("cast f32->f16->f32 within half an ulp (2^-11)", y, ref, n, 1e-7, 1.0 / 2048);
    double s = 0, ss = 0, got_s, got_ss;
    for (int i = 0; i < n; i++)
        s += x[i], ss += (double)x[i] * x[i];
    rl_sum(be, &got_s, x, n), rl_sum_squares(be, &got_ss, x, n);
    check_true("sum and sum of squares match float64", fabs(got_s - s) < 1e-9 && fabs(got_ss - ss) < 1e-9);
    fill(y, n, 1);
    for (int i = 0; i < n; i++)
        ref[i] = (double)x[i] + y[i];
    rl_add(be, z, x, y, n);
    check_close("add", z, ref, n, 1e-7, 1e-7);
    rl_accumulate(be, z, x, n);
    rl_scale(be, z, 0.5f, n);
    for (int i = 0; i < n; i++)
        ref[i] = (ref[i] + x[i]) * 0.5;
    check_close("accumulate then scale", z, ref, n, 1e-6, 1e-6);
}

static void test_adamw(void)
{
    printf("adamw\n");
    enum { n = 50 };
    float p[n], m[n] = {0}, v[n] = {0}, g[n];
    double pd[n], md[n] = {0}, vd[n] = {0};
    fill(p, n, 1);
    for (int i = 0; i < n; i++)
        pd[i] = p[i];
    rl_adamw_params hp = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    for (int step = 1; step <= 3; step++) {
        fill(g, n, 1);
        hp.step = step;
        rl_adamw_update(be, p, g, m, v, n, &hp, 0.5f);
        for (int i = 0; i < n; i++) {
            double gi = 0.5 * g[i];
            pd[i] *= 1 - 1e-2 * 0.1;
            md[i] = 0.9 * md[i] + 0.1 * gi;
            vd[i] = 0.95 * vd[i] + 0.05 * gi * gi;
            pd[i] -= 1e-2 * (md[i] / (1 - pow(0.9, step))) / (sqrt(vd[i] / (1 - pow(0.95, step))) + 1e-8);
        }
    }
    check_close("adamw 3 steps vs float64 torch.optim.AdamW formula", p, pd, n, 1e-6, 1e-5);
    hp.step = 0;
    check_true("adamw refuses step 0", rl_adamw_update(be, p, g, m, v, n, &hp, 1.0f) == RL_EINVAL);
    rl_backend_clear_error(be);
}

int main(void)
{
    char err[256];
    rl_backend_options opt = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    if (rl_backend_create(&be, &opt, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    test_matmul();
    test_embedding();
    test_rmsnorm();
    test_rope();
    test_swiglu();
    test_casts_and_reductions();
    test_adamw();
    if (rl_backend_status(be, err, sizeof err)) {
        printf("unexpected backend error: %s\n", err);
        check_failures++;
    }
    rl_backend_destroy(be);
    printf("%s: %d failure(s)\n", check_failures ? "FAIL" : "PASS", check_failures);
    return check_failures ? 1 : 0;
}
