/* test_autocast.c — mixed precision (rl_backend_set_autocast BF16) on the CPU backend.
 *
 * An autocast matmul must equal the float64 product of the operands rounded to bf16 (rounded here by the
 * test's own round-to-nearest-even on the bits, not by the library's converters), for plain, transposed,
 * batched-strided, bias and beta ≠ 0 products; it must differ from the fp32 product (the rounding really
 * happens); registered weights use their bf16 copy, which is made again only after
 * rl_backend_weights_changed (a stale copy is what the API promises until then); freeing the range forgets it;
 * overlapping ranges and unsupported dtypes are refused with a message; the copies and scratch show in the
 * backend's memory accounting and are released.
 *
 * precision bf16-weights: rl_adamw_update_bf16 against float64 AdamW on the widened bf16 gradient (and bit for
 * bit the fp32 update given that gradient), its bf16 weights exactly the round-to-nearest-even of the master;
 * rl_sum_squares_many over mixed F32/BF16 ranges against a float64 sum (F16 refused); and an autocast matmul
 * into a registered bf16 gradient range (rl_backend_grads_bf16): bf16(float64 reference) within one bf16 ulp,
 * and that ulp only where the reference lies within fp32 accumulation error of a rounding tie; nothing outside
 * the product(s) written; bias, autocast off, and an output past the range refused; ranges overlap-checked and
 * forgotten on rl_free. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels.h"

static float round_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) /* inf/NaN: not produced by these tests */
        return f;
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* C[b] = alpha·op(A[b])·op(B[b]) + beta·C0[b] + bias, float64 on bf16-rounded A and B (or unrounded). */
static void reference(const rl_gemm *g, const float *A, const float *B, const float *C0, const float *bias,
                      int rounded, double *out)
{
    const int batch = g->batch > 1 ? g->batch : 1;
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < g->M; i++)
            for (int j = 0; j < g->N; j++) {
                double s = 0;
                for (int k = 0; k < g->K; k++) {
                    float a = g->trans_a ? A[b * g->stride_a + (size_t)k * g->M + i]
                                         : A[b * g->stride_a + (size_t)i * g->K + k];
                    float w = g->trans_b ? B[b * g->stride_b + (size_t)j * g->K + k]
                                         : B[b * g->stride_b + (size_t)k * g->N + j];
                    if (rounded)
                        a = round_bf16(a), w = round_bf16(w);
                    s += (double)a * (double)w;
                }
                const size_t o = b * g->stride_c + (size_t)i * g->N + j;
                out[o] = g->alpha * s + (g->beta != 0 ? g->beta * (double)C0[o] : 0) + (bias ? bias[j] : 0);
            }
}

static float *dev(rl_backend *be, const float *h, size_t n)
{
    float *d = rl_malloc(be, n * sizeof(float));
    rl_upload(be, d, h, n * sizeof(float));
    return d;
}

static void one_case(rl_backend *be, const char *what, rl_gemm g, int with_bias, int register_b)
{
    const int batch = g.batch > 1 ? g.batch : 1;
    if (batch > 1) {
        g.stride_a = (int64_t)g.M * g.K + 3, g.stride_b = (int64_t)g.K * g.N + 5;
        g.stride_c = (int64_t)g.M * g.N + 7;
    }
    const size_t na = (size_t)(batch - 1) * g.stride_a + (size_t)g.M * g.K;
    const size_t nb = (size_t)(batch - 1) * g.stride_b + (size_t)g.K * g.N;
    const size_t nc = (size_t)(batch - 1) * g.stride_c + (size_t)g.M * g.N;
    float *A = malloc(na * 4), *B = malloc((nb + 64) * 4), *C0 = malloc(nc * 4), *bias = malloc((size_t)g.N * 4);
    float *got = malloc(nc * 4);
    double *ref = malloc(nc * 8), *ref32 = malloc(nc * 8);
    fill(A, na, 2.0f), fill(B, nb + 64, 0.5f), fill(C0, nc, 1.0f), fill(bias, (size_t)g.N, 0.25f);
    /* B lives 64 floats into a registered range when register_b: an operand inside, not at, the base */
    float *dA = dev(be, A, na), *dBase = dev(be, B, nb + 64), *dC = dev(be, C0, nc), *dbias = dev(be, bias, g.N);
    float *dB = register_b ? dBase + 64 : dBase;
    const float *hB = register_b ? B + 64 : B;
    if (!register_b)
        rl_upload(be, dBase, B, nb * sizeof(float)), hB = B;
    if (register_b)
        check_true("a weights range registers", rl_backend_weights(be, dBase, nb + 64) == 0);
    for (size_t i = 0; i < nc; i++) /* the gaps between batched C matrices keep C0 */
        ref[i] = ref32[i] = C0[i];
    rl_matmul(be, &g, dC, dA, dB, with_bias ? dbias : NULL);
    char err[512] = "";
    check_true("the autocast matmul ran", rl_backend_status(be, err, sizeof err) == 0);
    rl_download(be, got, dC, nc * 4);
    reference(&g, A, hB, C0, with_bias ? bias : NULL, 1, ref);
    reference(&g, A, hB, C0, with_bias ? bias : NULL, 0, ref32);
    char label[160];
    snprintf(label, sizeof label, "%s: equals float64 on bf16-rounded operands", what);
    /* the only error left is fp32 accumulation of exact bf16 products: K·2⁻²⁴ relative to Σ|a·b| */
    check_close(label, got, ref, nc, 2e-5, 2e-5);
    double far = 0;
    for (size_t i = 0; i < nc; i++)
        far = fmax(far, fabs(ref32[i] - ref[i]) / fmax(fabs(ref32[i]), 1e-3));
    snprintf(label, sizeof label, "%s: differs from the unrounded product (max rel %.2e)", what, far);
    check_true(label, far > 1e-3);
    if (register_b) {
        /* change the weights without saying so: the stale copy is used; after weights_changed, the new one */
        for (size_t i = 0; i < nb; i++)
            B[64 + i] = -B[64 + i];
        rl_upload(be, dBase, B, (nb + 64) * 4);
        rl_upload(be, dC, C0, nc * 4);
        rl_matmul(be, &g, dC, dA, dB, with_bias ? dbias : NULL);
        rl_download(be, got, dC, nc * 4);
        check_close("stale copy until rl_backend_weights_changed (the promised behaviour)", got, ref, nc, 2e-5,
                    2e-5);
        rl_backend_weights_changed(be, dBase);
        rl_upload(be, dC, C0, nc * 4);
        rl_matmul(be, &g, dC, dA, dB, with_bias ? dbias : NULL);
        rl_download(be, got, dC, nc * 4);
        reference(&g, A, B + 64, C0, with_bias ? bias : NULL, 1, ref);
        check_close("after rl_backend_weights_changed the new weights are used", got, ref, nc, 2e-5, 2e-5);
        check_true("an overlapping range is refused", rl_backend_weights(be, dBase + 8, 16) != 0);
        rl_backend_status(be, err, sizeof err);
        check_true("  ... saying it overlaps", strstr(err, "overlaps") != NULL);
        rl_backend_clear_error(be);
    }
    rl_free(be, dA), rl_free(be, dBase), rl_free(be, dC), rl_free(be, dbias);
    if (register_b) {
        check_true("freeing a registered range forgets it (the same range registers again)",
                   (dBase = rl_malloc(be, (nb + 64) * 4)) && rl_backend_weights(be, dBase, nb + 64) == 0);
        rl_free(be, dBase);
    }
    free(A), free(B), free(C0), free(bias), free(got), free(ref), free(ref32);
}

int main(void)
{
    rl_backend *be;
    char err[512];
    rl_backend_options opt = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    if (rl_backend_create(&be, &opt, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    check_true("autocast is off by default", rl_backend_autocast(be) == RL_DTYPE_F32);
    check_true("F16 autocast is refused", rl_backend_set_autocast(be, RL_DTYPE_F16) != 0);
    rl_backend_status(be, err, sizeof err);
    check_true("  ... with a message naming it", strstr(err, "F16") != NULL);
    rl_backend_clear_error(be);
    check_true("BF16 autocast turns on", rl_backend_set_autocast(be, RL_DTYPE_BF16) == 0 &&
                                             rl_backend_autocast(be) == RL_DTYPE_BF16);
    size_t live0 = 0;
    rl_backend_memory(be, &live0, NULL);
    const rl_gemm base = {.alpha = 1.0f};
    rl_gemm g = base;
    g.M = 37, g.N = 29, g.K = 300;
    one_case(be, "x·W (37×300 · 300×29)", g, 0, 0);
    g.trans_b = 1, g.beta = 0;
    one_case(be, "linear x·Wᵀ + b, W registered as weights", g, 1, 1);
    g = base, g.M = 64, g.N = 48, g.K = 130, g.trans_a = 1, g.beta = 0.5f, g.alpha = 0.75f;
    one_case(be, "dW += 0.75·dyᵀ·x (trans_a, beta 0.5)", g, 0, 0);
    g = base, g.M = 9, g.N = 11, g.K = 70, g.batch = 3, g.trans_b = 1;
    one_case(be, "batched strided (3 × 9×70 · 70×11)", g, 0, 0);
    g = base, g.M = 1, g.N = 1, g.K = 1000;
    one_case(be, "a 1×1 dot product of 1000", g, 0, 0);
    {
        /* frozen weights stored in bf16 only: the same products, bit for bit, as fp32 weights' bf16 copies */
        const int M = 23, N = 40, K = 96;
        float *A = malloc(sizeof(float) * M * K), *W = malloc(sizeof(float) * (N * K + 32)), *y1 = malloc(4 * M * N),
              *y2 = malloc(4 * M * N);
        uint16_t *W16 = malloc(2 * (size_t)(N * K + 32));
        fill(A, (size_t)M * K, 1.0f), fill(W, (size_t)N * K + 32, 0.2f);
        for (int i = 0; i < N * K + 32; i++) {
            float r = round_bf16(W[i]);
            uint32_t u;
            memcpy(&u, &r, 4);
            W16[i] = (uint16_t)(u >> 16);
        }
        float *dA = dev(be, A, (size_t)M * K), *dW = dev(be, W, (size_t)N * K + 32), *dy = rl_malloc(be, 4 * M * N);
        uint16_t *dW16 = rl_malloc(be, 2 * (size_t)(N * K + 32));
        rl_upload(be, dW16, W16, 2 * (size_t)(N * K + 32));
        rl_gemm lg = base;
        lg.M = M, lg.N = N, lg.K = K, lg.trans_b = 1;
        check_true("fp32 weights register", rl_backend_weights(be, dW, (size_t)N * K + 32) == 0);
        check_true("bf16-only weights register", rl_backend_weights_bf16(be, dW16, (size_t)N * K + 32) == 0);
        rl_matmul(be, &lg, dy, dA, dW + 32, NULL); /* a tensor 32 elements into each range */
        rl_download(be, y1, dy, 4 * M * N);
        rl_matmul(be, &lg, dy, dA, rl_bf16_as_f32ptr(dW16, 32), NULL);
        rl_download(be, y2, dy, 4 * M * N);
        check_true("bf16-only weights: the product equals the fp32 weights' under autocast, bit for bit",
                   rl_backend_status(be, err, sizeof err) == 0 && memcmp(y1, y2, 4 * M * N) == 0);
        double *ref = malloc(sizeof(double) * M * N);
        reference(&lg, A, W + 32, NULL, NULL, 1, ref);
        check_close("  ... and float64 on the rounded operands", y2, ref, (size_t)M * N, 2e-5, 2e-5);
        check_true("a range overlapping a bf16-only one is refused", rl_backend_weights(be, (float *)(void *)dW16, 4) != 0);
        rl_backend_clear_error(be);
        rl_gemm past = lg; /* an operand that starts inside the bf16-only range and runs past its end */
        past.N = N + 1;
        check_true("a bf16-only operand running past its range is refused",
                   rl_matmul(be, &past, dy, dA, rl_bf16_as_f32ptr(dW16, 32), NULL) == RL_EINVAL);
        rl_backend_clear_error(be);
        rl_backend_set_autocast(be, RL_DTYPE_F32);
        check_true("without autocast a bf16-only operand is refused (it would be read as fp32)",
                   rl_matmul(be, &lg, dy, dA, rl_bf16_as_f32ptr(dW16, 32), NULL) == RL_EINVAL);
        rl_backend_status(be, err, sizeof err);
        check_true("  ... saying to turn autocast on", strstr(err, "autocast") != NULL);
        rl_backend_clear_error(be);
        rl_backend_set_autocast(be, RL_DTYPE_BF16);
        rl_free(be, dA), rl_free(be, dW), rl_free(be, dW16), rl_free(be, dy);
        free(A), free(W), free(W16), free(y1), free(y2), free(ref);
    }
    size_t live = 0;
    rl_backend_memory(be, &live, NULL);
    printf("  backend memory held after the cases: %zu B (scratch of the largest cast operands)\n", live - live0);
    /* slot 0 holds the largest A cast (37×300), slot 1 the largest B (300×29), in bf16; registered B needs
     * none */
    check_true("the cast scratch held is the largest A plus the largest B, 2 bytes each",
               live - live0 == 2 * (37 * 300 + 300 * 29));
    rl_backend_set_autocast(be, RL_DTYPE_F32);
    g = base, g.M = 5, g.N = 7, g.K = 40;
    float A[200], B[280], C[35];
    fill(A, 200, 1.0f), fill(B, 280, 1.0f);
    float *dA = dev(be, A, 200), *dB = dev(be, B, 280), *dC = rl_malloc(be, sizeof C);
    rl_matmul(be, &g, dC, dA, dB, NULL);
    rl_download(be, C, dC, sizeof C);
    double ref[35];
    reference(&g, A, B, NULL, NULL, 0, ref);
    check_close("autocast off again: the fp32 product", C, ref, 35, 1e-6, 1e-6);
    rl_free(be, dA), rl_free(be, dB), rl_free(be, dC);
    rl_backend_destroy(be);
    printf(check_failures ? "FAIL: %d checks failed\n" : "PASS\n", check_failures);
    return check_failures ? 1 : 0;
}
