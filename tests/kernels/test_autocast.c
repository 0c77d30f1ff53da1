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

/* ---- precision bf16-weights ------------------------------------------------------------------------------ */

/* the test's own round-to-nearest-even bf16 bits (not the library's converter); finite inputs only */
static uint16_t bits_bf16(float f)
{
    float r = round_bf16(f);
    uint32_t u;
    memcpy(&u, &r, 4);
    return (uint16_t)(u >> 16);
}

static float widen_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* a finite bf16's place on the ordered line of bf16 values (±0 are one point) */
static long bf16_ord(uint16_t a) { return (a & 0x8000u) ? -(long)(a & 0x7fffu) : (long)a; }
/* distance in bf16 ulps between two finite bf16 values */
static long bf16_ulps(uint16_t a, uint16_t b) { return labs(bf16_ord(a) - bf16_ord(b)); }

static void *dev_copy(rl_backend *be, const void *h, size_t bytes)
{
    void *d = rl_malloc(be, bytes ? bytes : 1);
    if (bytes)
        rl_upload(be, d, h, bytes);
    return d;
}

/* rl_adamw_update_bf16 on n random elements at `step`, against float64 AdamW on the widened bf16 gradient. */
static void adamw_bf16_case(rl_backend *be, size_t n, int64_t step)
{
    const rl_adamw_params hp = {
        .lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f, .step = step};
    const float gs = 0.37f;
    float *master0 = malloc(4 * n), *m0 = malloc(4 * n), *v0 = malloc(4 * n), *g32 = malloc(4 * n);
    float *got_p = malloc(4 * n), *got_m = malloc(4 * n), *got_v = malloc(4 * n), *fp_p = malloc(4 * n),
          *fp_m = malloc(4 * n), *fp_v = malloc(4 * n);
    uint16_t *g16 = malloc(2 * n), *p16 = malloc(2 * n), *poison = malloc(2 * n);
    double *rp = malloc(8 * n), *rm = malloc(8 * n), *rv = malloc(8 * n);
    fill(master0, n, 1.0f), fill(m0, n, 0.1f);
    for (size_t i = 0; i < n; i++) {
        v0[i] = fabsf(rnd()) * 0.01f;
        g16[i] = i % 11 == 5 ? 0 : bits_bf16(rnd() * 2.0f); /* some exact zeros among them */
        g32[i] = widen_bf16(g16[i]);
        poison[i] = 0xffffu; /* NaN: an element left unwritten fails the comparison below */
    }
    const double b1 = hp.beta1, b2 = hp.beta2, lr = hp.lr, eps = hp.eps, wd = hp.weight_decay;
    const double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    for (size_t i = 0; i < n; i++) {
        const double g = (double)g32[i] * gs;
        rm[i] = b1 * m0[i] + (1.0 - b1) * g;
        rv[i] = b2 * v0[i] + (1.0 - b2) * g * g;
        rp[i] = master0[i] * (1.0 - lr * wd) - lr * (rm[i] / bc1) / (sqrt(rv[i] / bc2) + eps);
    }
    float *dp = dev_copy(be, master0, 4 * n), *dm = dev_copy(be, m0, 4 * n), *dv = dev_copy(be, v0, 4 * n);
    uint16_t *dg16 = dev_copy(be, g16, 2 * n), *dp16 = dev_copy(be, poison, 2 * n);
    float *dg32 = dev_copy(be, g32, 4 * n);
    char label[160], err[512] = "";
    int rc = rl_adamw_update_bf16(be, dp16, dp, dg16, dm, dv, n, &hp, gs);
    snprintf(label, sizeof label, "adamw_bf16 n=%zu step=%lld: runs", n, (long long)step);
    check_true(label, rc == 0 && rl_backend_status(be, err, sizeof err) == 0);
    rl_download(be, got_p, dp, 4 * n), rl_download(be, got_m, dm, 4 * n), rl_download(be, got_v, dv, 4 * n);
    rl_download(be, p16, dp16, 2 * n);
    /* fp32 arithmetic of the same expression: a few ulps of the larger operand; 1e-6·(1 + |x|) bounds it while
     * the update itself is ~lr = 2e-3 (a wrong term, scale or decay is far outside) */
    snprintf(label, sizeof label, "  master vs float64 (atol 1e-6, rtol 1e-6)");
    check_close(label, got_p, rp, n, 1e-6, 1e-6);
    check_close("  m vs float64 (|m| <= 0.2: atol 1e-7)", got_m, rm, n, 1e-7, 1e-6);
    check_close("  v vs float64 (positive terms: rtol 1e-6)", got_v, rv, n, 1e-12, 1e-6);
    size_t bad_lib = 0, bad_own = 0;
    for (size_t i = 0; i < n; i++) {
        bad_lib += p16[i] != rl_f32_to_bf16(got_p[i]);
        bad_own += p16[i] != bits_bf16(got_p[i]);
    }
    snprintf(label, sizeof label, "  param16 == rl_f32_to_bf16(master) (%zu differ)", bad_lib);
    check_true(label, bad_lib == 0);
    snprintf(label, sizeof label, "  param16 == the test's own RNE of master (%zu differ)", bad_own);
    check_true(label, bad_own == 0);
    /* the fp32 update given the widened gradient: the same expression, so the same bits */
    rl_upload(be, dp, master0, 4 * n), rl_upload(be, dm, m0, 4 * n), rl_upload(be, dv, v0, 4 * n);
    rc = rl_adamw_update(be, dp, dg32, dm, dv, n, &hp, gs);
    rl_download(be, fp_p, dp, 4 * n), rl_download(be, fp_m, dm, 4 * n), rl_download(be, fp_v, dv, 4 * n);
    check_true("  master, m, v bit-identical to rl_adamw_update on widen(grad16)",
               rc == 0 && !memcmp(fp_p, got_p, 4 * n) && !memcmp(fp_m, got_m, 4 * n) && !memcmp(fp_v, got_v, 4 * n));
    rl_free(be, dp), rl_free(be, dm), rl_free(be, dv), rl_free(be, dg16), rl_free(be, dp16), rl_free(be, dg32);
    free(master0), free(m0), free(v0), free(g32), free(got_p), free(got_m), free(got_v), free(fp_p), free(fp_m);
    free(fp_v), free(g16), free(p16), free(poison), free(rp), free(rm), free(rv);
}

static void check_adamw_bf16(rl_backend *be)
{
    const size_t sizes[] = {1, 17, 4099, 40009}; /* 40009: past the CPU backend's OpenMP threshold */
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        adamw_bf16_case(be, sizes[k], 1);
        adamw_bf16_case(be, sizes[k], 7);
    }
    char err[512] = "";
    const rl_adamw_params bad = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .step = 0};
    uint16_t p16 = 0, g16 = 0;
    float p = 1.0f, m = 0.0f, v = 0.0f;
    check_true("adamw_bf16 step 0 is refused", rl_adamw_update_bf16(be, &p16, &p, &g16, &m, &v, 1, &bad, 1.0f) != 0);
    rl_backend_status(be, err, sizeof err);
    check_true("  ... with a message naming step", strstr(err, "step") != NULL);
    rl_backend_clear_error(be);
}

/* rl_sum_squares_many over F32 and BF16 ranges (one empty) against float64 sums of the widened values. */
static void check_sum_squares_many(rl_backend *be)
{
    enum { R = 6 };
    const rl_dtype dt[R] = {RL_DTYPE_F32, RL_DTYPE_BF16, RL_DTYPE_BF16, RL_DTYPE_F32, RL_DTYPE_BF16, RL_DTYPE_F32};
    const size_t n[R] = {1000, 777, 0, 5, 40001, 20001}; /* the last two past the OpenMP threshold */
    void *h[R], *d[R];
    double ref[R], out[R];
    for (int r = 0; r < R; r++) {
        const size_t es = rl_dtype_size(dt[r]);
        h[r] = malloc(es * (n[r] ? n[r] : 1));
        ref[r] = 0;
        for (size_t i = 0; i < n[r]; i++) {
            const float x = rnd() * (float)(r + 1);
            double w = x;
            if (dt[r] == RL_DTYPE_BF16) {
                ((uint16_t *)h[r])[i] = bits_bf16(x);
                w = widen_bf16(((uint16_t *)h[r])[i]);
            } else {
                ((float *)h[r])[i] = x;
            }
            ref[r] += w * w;
        }
        d[r] = dev_copy(be, h[r], es * n[r]);
        out[r] = NAN;
    }
    char err[512] = "";
    const int rc = rl_sum_squares_many(be, out, (const void *const *)d, dt, n, R);
    check_true("sum_squares_many F32+BF16: runs", rc == 0 && rl_backend_status(be, err, sizeof err) == 0);
    double worst = 0;
    int ok = 1;
    for (int r = 0; r < R; r++) {
        const double e = n[r] ? fabs(out[r] - ref[r]) / ref[r] : fabs(out[r]);
        worst = fmax(worst, e);
        ok &= n[r] ? e <= 1e-12 : out[r] == 0.0; /* NaN fails both */
    }
    char label[160];
    snprintf(label, sizeof label, "  each range vs float64 (rtol 1e-12; max %.2e)", worst);
    check_true(label, ok);
    check_true("  the empty range sums to exactly 0", out[2] == 0.0);
    /* a BF16 range read as F32 would give another sum: the dtype is honoured, not just accepted */
    double as_f32 = NAN;
    rl_sum_squares(be, &as_f32, d[1], n[1] / 2);
    check_true("  the BF16 sum differs from its bytes read as F32", !(fabs(as_f32 - ref[1]) <= 1e-6 * ref[1]));
    /* dt NULL: every range F32, each bit-identical to its own rl_sum_squares */
    const void *xf[3] = {d[0], d[3], d[5]};
    const size_t nf[3] = {n[0], n[3], n[5]};
    double of[3] = {NAN, NAN, NAN}, one[3];
    int same = rl_sum_squares_many(be, of, xf, NULL, nf, 3) == 0;
    for (int r = 0; r < 3; r++) {
        rl_sum_squares(be, &one[r], xf[r], nf[r]);
        same &= memcmp(&one[r], &of[r], sizeof(double)) == 0;
    }
    check_true("  dt NULL: F32, bit-identical to rl_sum_squares", same);
    rl_dtype bad[R];
    memcpy(bad, dt, sizeof bad);
    bad[3] = RL_DTYPE_F16;
    check_true("  a range of F16 is refused", rl_sum_squares_many(be, out, (const void *const *)d, bad, n, R) != 0);
    rl_backend_status(be, err, sizeof err);
    check_true("  ... with a message naming F16", strstr(err, "F16") != NULL);
    rl_backend_clear_error(be);
    check_true("  ... and the error clears", rl_backend_status(be, err, sizeof err) == 0);
    for (int r = 0; r < R; r++)
        rl_free(be, d[r]), free(h[r]);
}

/* The region of a bf16 gradient range that a product (batched) writes: whether element i of the range is in it. */
static int in_product(const rl_gemm *g, size_t off, size_t i)
{
    const int batch = g->batch > 1 ? g->batch : 1;
    for (int b = 0; b < batch; b++) {
        const size_t lo = off + (size_t)b * (size_t)g->stride_c;
        if (i >= lo && i < lo + (size_t)g->M * g->N)
            return 1;
    }
    return 0;
}

/* An autocast matmul with F32 dtypes into the bf16 gradient range d16 [n16] at element `off`. The range holds
 * random bf16 values first (NaN over the product when beta is 0: C must not be read). The result must be the
 * round-to-nearest-even bf16 of the float64 product of the bf16-rounded operands plus beta·widen(old C), within
 * one bf16 ulp, and exactly the RNE of some value within the fp32 accumulation error bound of that reference
 * (the CPU's fp32 sum order differs from float64; a truncating store would be off on ~half the elements and
 * fail this). Elements of the range outside C are unchanged. */
static void grad_gemm_case(rl_backend *be, const char *what, uint16_t *d16, size_t n16, size_t off, rl_gemm g)
{
    const int batch = g.batch > 1 ? g.batch : 1;
    if (batch > 1)
        g.stride_a = (int64_t)g.M * g.K + 3, g.stride_b = (int64_t)g.K * g.N + 5;
    const size_t na = (size_t)(batch - 1) * g.stride_a + (size_t)g.M * g.K;
    const size_t nb = (size_t)(batch - 1) * g.stride_b + (size_t)g.K * g.N;
    const size_t nc = (size_t)(batch - 1) * g.stride_c + (size_t)g.M * g.N;
    float *A = malloc(4 * na), *B = malloc(4 * nb), *C0 = malloc(4 * nc), *absA = malloc(4 * na),
          *absB = malloc(4 * nb), *absC = malloc(4 * nc);
    uint16_t *h16 = malloc(2 * n16), *got = malloc(2 * n16);
    double *ref = malloc(8 * nc), *mag = malloc(8 * nc);
    fill(A, na, 1.0f), fill(B, nb, 0.5f);
    for (size_t i = 0; i < n16; i++)
        h16[i] = bits_bf16(rnd() * 4.0f);
    for (size_t i = 0; i < nc; i++) {
        if (g.beta == 0 && in_product(&g, off, off + i))
            h16[off + i] = 0x7fc1u; /* a quiet NaN: read by beta 0 = fail */
        C0[i] = widen_bf16(h16[off + i]);
        absC[i] = fabsf(C0[i]);
    }
    for (size_t i = 0; i < na; i++)
        absA[i] = fabsf(A[i]);
    for (size_t i = 0; i < nb; i++)
        absB[i] = fabsf(B[i]);
    rl_gemm ga = g; /* Σ|alpha·a·b| + |beta·c|: the scale of the fp32 accumulation error */
    ga.alpha = fabsf(g.alpha), ga.beta = fabsf(g.beta);
    reference(&g, A, B, C0, NULL, 1, ref);
    reference(&ga, absA, absB, absC, NULL, 1, mag);
    float *dA = dev(be, A, na), *dB = dev(be, B, nb);
    rl_upload(be, d16, h16, 2 * n16);
    char err[512] = "", label[200];
    const int rc = rl_matmul(be, &g, rl_bf16_as_f32ptr(d16, off), dA, dB, NULL);
    const int st = rl_backend_status(be, err, sizeof err);
    snprintf(label, sizeof label, "%s: runs", what);
    check_true(label, rc == 0 && st == 0);
    if (st)
        printf("    %s\n", err), rl_backend_clear_error(be);
    rl_download(be, got, d16, 2 * n16);
    long max_ulps = 0;
    size_t exact = 0, off1 = 0, outside_bound = 0, outside = 0, nonfinite = 0;
    for (size_t i = 0; i < n16; i++) {
        if (!in_product(&g, off, i)) {
            outside += got[i] != h16[i];
            continue;
        }
        const size_t o = i - off;
        if (!isfinite(widen_bf16(got[i]))) {
            nonfinite++;
            continue;
        }
        const long u = bf16_ulps(got[i], bits_bf16((float)ref[o]));
        max_ulps = u > max_ulps ? u : max_ulps;
        exact += u == 0, off1 += u == 1;
        /* fp32 accumulation of K exact products plus beta·C, then rounding to fp32: within (K + 2)·2⁻²⁴·mag of
         * the float64 value; the stored bf16 is the RNE of such a value, so it lies between the RNEs of the ends */
        const double bound = (double)(g.K + 2) * ldexp(1.0, -24) * mag[o];
        const long lo = bf16_ord(bits_bf16((float)(ref[o] - bound)));
        const long hi = bf16_ord(bits_bf16((float)(ref[o] + bound)));
        outside_bound += bf16_ord(got[i]) < lo || bf16_ord(got[i]) > hi;
    }
    const size_t in_c = (size_t)batch * g.M * g.N;
    snprintf(label, sizeof label, "  = bf16(ref in fp32) within 1 ulp (max %ld; exact %zu, 1 ulp %zu of %zu)",
             max_ulps, exact, off1, in_c);
    check_true(label, max_ulps <= 1 && nonfinite == 0 && exact + off1 == in_c);
    snprintf(label, sizeof label, "  ... and = RNE of a value within fp32 accumulation error (%zu not)",
             outside_bound);
    check_true(label, outside_bound == 0 && nonfinite == 0);
    snprintf(label, sizeof label, "  the rest of the range (%zu elements) unchanged", n16 - in_c);
    check_true(label, outside == 0);
    rl_free(be, dA), rl_free(be, dB);
    free(A), free(B), free(C0), free(absA), free(absB), free(absC), free(h16), free(got), free(ref), free(mag);
}

/* A matmul into d16 that must be refused with RL_EINVAL and a message naming `needle`, writing nothing. */
static void grad_gemm_refused(rl_backend *be, const char *what, const char *needle, uint16_t *d16, size_t n16,
                              size_t off, const rl_gemm *g, const float *bias)
{
    const int batch = g->batch > 1 ? g->batch : 1;
    const size_t na = (size_t)(batch - 1) * g->stride_a + (size_t)g->M * g->K;
    const size_t nb = (size_t)(batch - 1) * g->stride_b + (size_t)g->K * g->N;
    float *A = malloc(4 * na), *B = malloc(4 * nb);
    uint16_t *before = malloc(2 * n16), *after = malloc(2 * n16);
    fill(A, na, 1.0f), fill(B, nb, 1.0f);
    float *dA = dev(be, A, na), *dB = dev(be, B, nb);
    rl_download(be, before, d16, 2 * n16);
    char err[512] = "", label[200];
    const int rc = rl_matmul(be, g, rl_bf16_as_f32ptr(d16, off), dA, dB, bias);
    rl_backend_status(be, err, sizeof err);
    snprintf(label, sizeof label, "%s: RL_EINVAL (got %d)", what, rc);
    check_true(label, rc == RL_EINVAL);
    snprintf(label, sizeof label, "  ... saying \"%s\"", needle);
    check_true(label, strstr(err, needle) != NULL);
    if (!strstr(err, needle))
        printf("    the message: %s\n", err);
    rl_backend_clear_error(be);
    rl_download(be, after, d16, 2 * n16);
    check_true("  ... and the range is unchanged", memcmp(before, after, 2 * n16) == 0);
    rl_free(be, dA), rl_free(be, dB);
    free(A), free(B), free(before), free(after);
}

/* The bf16 gradient ranges, on a backend of their own (a registration of a freed range, the last check, dies
 * with it). */
static void check_grads_bf16(void)
{
    rl_backend *be;
    char err[512] = "";
    rl_backend_options opt = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    if (rl_backend_create(&be, &opt, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        check_failures++;
        return;
    }
    const int M = 37, N = 29, K = 53;
    const size_t off = 11, n16 = off + 2 * (size_t)M * N + 9 + 101; /* odd offset: C is 2- but not 4-aligned */
    uint16_t *d16 = rl_malloc(be, 2 * n16);
    check_true("an empty bf16 gradient range is refused", rl_backend_grads_bf16(be, d16, 0) != 0);
    rl_backend_clear_error(be);
    check_true("a bf16 gradient range registers", rl_backend_grads_bf16(be, d16, n16) == 0);
    rl_backend_set_autocast(be, RL_DTYPE_BF16);
    const rl_gemm base = {.M = M, .N = N, .K = K, .trans_a = 1, .alpha = 1.0f, .beta = 1.0f};
    rl_gemm g = base;
    grad_gemm_case(be, "dW += dyᵀ·x into a bf16 grad (37×29×53, ta, beta 1)", d16, n16, off, g);
    g.beta = 0;
    grad_gemm_case(be, "dW = dyᵀ·x into a bf16 grad (beta 0, C NaN)", d16, n16, off, g);
    g = base, g.alpha = 0.75f, g.beta = 0.5f, g.trans_a = 0, g.trans_b = 1;
    grad_gemm_case(be, "0.75·x·Wᵀ + 0.5·C into a bf16 grad (tb)", d16, n16, off + 1, g);
    g = base, g.batch = 2, g.stride_c = (int64_t)M * N + 9;
    grad_gemm_case(be, "batched 2 × dyᵀ·x, stride_c = M·N + 9 (gap kept)", d16, n16, off, g);
    g.beta = 0; /* nothing of C read: a store of the whole extent would zero the gap */
    grad_gemm_case(be, "batched 2, beta 0 (gap kept)", d16, n16, off, g);
    g = base, g.M = 1, g.N = 1, g.K = 700;
    grad_gemm_case(be, "a 1×1 dot of 700 at the range's last element", d16, n16, n16 - 1, g);

    g = base;
    float bias_h[29];
    fill(bias_h, (size_t)N, 1.0f);
    float *dbias = dev(be, bias_h, (size_t)N);
    grad_gemm_refused(be, "a bias into a bf16 grad", "bias", d16, n16, off, &g, dbias);
    rl_free(be, dbias);
    grad_gemm_refused(be, "an output one element past the range", "past the end", d16, n16,
                      n16 - (size_t)M * N + 1, &g, NULL);
    rl_gemm gb = base;
    gb.batch = 2, gb.stride_c = (int64_t)M * N + 9;
    grad_gemm_refused(be, "a batch whose 2nd product runs past the range", "past the end", d16, n16,
                      n16 - (size_t)M * N - 5, &gb, NULL);
    rl_backend_set_autocast(be, RL_DTYPE_F32);
    grad_gemm_refused(be, "autocast off: a bf16 grad output", "autocast", d16, n16, off, &g, NULL);
    rl_backend_set_autocast(be, RL_DTYPE_BF16);

    { /* an fp32 output that starts before the range and runs into it, and a bf16 gradient as an operand */
        rl_gemm gf = {.M = 4, .N = 4, .K = 3, .alpha = 1.0f};
        float *before = rl_malloc(be, 4 * 64), h[64];
        fill(h, 64, 1.0f);
        rl_upload(be, before, h, sizeof h);
        uint16_t snap[16], snap2[16];
        rl_download(be, snap, d16, sizeof snap);
        /* one allocation: 32 floats of fp32, then 64 bf16 registered as gradients; C = 16 floats from float 24
         * on: 8 below the range and 8 inside it */
        float *blk = rl_malloc(be, 4 * 32 + 2 * 64), zero[64] = {0};
        rl_upload(be, blk, zero, 4 * 32 + 2 * 64);
        uint16_t *g16 = (uint16_t *)(void *)(blk + 32);
        int rc = rl_backend_grads_bf16(be, g16, 64);
        rl_download(be, snap, g16, sizeof snap);
        rl_backend_set_autocast(be, RL_DTYPE_F32);
        rc = rc ? rc : rl_matmul(be, &gf, blk + 24, before, before + 32, NULL);
        rl_backend_status(be, err, sizeof err);
        check_true("an fp32 output running into a bf16 gradient range from below is refused",
                   rc == RL_EINVAL && strstr(err, "from outside") != NULL);
        rl_backend_clear_error(be);
        rl_download(be, snap2, g16, sizeof snap2);
        rl_free(be, blk);
        check_true("  ... and the range is unchanged", memcmp(snap, snap2, sizeof snap) == 0);
        rl_backend_set_autocast(be, RL_DTYPE_BF16);
        rc = rl_matmul(be, &gf, before, rl_bf16_as_f32ptr(d16, off), before + 32, NULL);
        rl_backend_status(be, err, sizeof err);
        check_true("a bf16 gradient as a matmul operand is refused",
                   rc == RL_EINVAL && strstr(err, "operand is a bf16 gradient") != NULL);
        rl_backend_clear_error(be);
        rc = rl_backend_weights(be, (const float *)(const void *)(d16 + 2), 4);
        rl_backend_status(be, err, sizeof err);
        check_true("weights overlapping a bf16 gradient range are refused",
                   rc != 0 && strstr(err, "overlaps bf16 gradients") != NULL);
        rl_backend_clear_error(be);
        rc = rl_backend_weights(be, before, 64);
        uint16_t *g2 = (uint16_t *)(void *)(before + 8);
        int rc2 = rl_backend_grads_bf16(be, g2, 4);
        rl_backend_status(be, err, sizeof err);
        check_true("a bf16 gradient range overlapping registered weights is refused",
                   rc == 0 && rc2 != 0 && strstr(err, "overlaps registered weights") != NULL);
        rl_backend_clear_error(be);
        rl_free(be, before); /* (forgets the weights too) */
    }
    check_true("a range overlapping a registered one is refused", rl_backend_grads_bf16(be, d16 + 5, 10) != 0);
    rl_backend_status(be, err, sizeof err);
    check_true("  ... saying it overlaps", strstr(err, "overlaps") != NULL);
    rl_backend_clear_error(be);
    check_true("  ... and one at the same base, longer", rl_backend_grads_bf16(be, d16, n16 + 1) != 0);
    rl_backend_clear_error(be);
    /* at most 4 ranges: three more register, a fifth is refused */
    uint16_t *more[4];
    int regs = 0;
    for (int i = 0; i < 4; i++) {
        more[i] = rl_malloc(be, 64);
        regs += rl_backend_grads_bf16(be, more[i], 32) == 0;
    }
    rl_backend_status(be, err, sizeof err);
    check_true("three more ranges register, a fifth is refused", regs == 3 && strstr(err, "at most") != NULL);
    rl_backend_clear_error(be);
    for (int i = 0; i < 4; i++)
        rl_free(be, more[i]);

    /* rl_free forgets the range. If the allocator hands the same memory back as fp32 (usual without ASan's
     * quarantine), an autocast matmul into it must be the fp32-output product, not a bf16 store. */
    const uintptr_t old = (uintptr_t)d16;
    const size_t bytes = 2 * n16;
    rl_free(be, d16);
    float *f = NULL, *tries[16];
    int reused = 0, nt = 0;
    while (nt < 16 && !reused) { /* keep the misses allocated so that the allocator moves on */
        f = tries[nt++] = rl_malloc(be, bytes);
        reused = (uintptr_t)f < old + bytes && (uintptr_t)f + bytes > old;
    }
    for (int i = 0; i < nt - 1; i++)
        rl_free(be, tries[i]);
    {
        float A[53 * 37], B[53 * 29], C[37 * 29];
        double ref[37 * 29];
        fill(A, sizeof A / 4, 1.0f), fill(B, sizeof B / 4, 1.0f);
        for (size_t i = 0; i < sizeof C / 4; i++)
            C[i] = 0.25f;
        float *dA = dev(be, A, sizeof A / 4), *dB = dev(be, B, sizeof B / 4);
        rl_upload(be, f, C, sizeof C);
        const int rc = rl_matmul(be, &base, f, dA, dB, NULL);
        rl_download(be, C, f, sizeof C);
        for (size_t i = 0; i < sizeof C / 4; i++)
            C[i] -= 0.25f; /* beta 1 over 0.25: compare the product alone */
        reference(&(rl_gemm){.M = M, .N = N, .K = K, .trans_a = 1, .alpha = 1.0f}, A, B, NULL, NULL, 1, ref);
        snprintf(err, sizeof err, "after rl_free, fp32 memory there%s is an fp32 output",
                 reused ? " (the same address)" : " (another address)");
        check_true(err, rc == 0 && rl_backend_status(be, NULL, 0) == 0);
        check_close("  ... holding the fp32 product", C, ref, sizeof C / 4, 2e-5, 2e-5);
        rl_free(be, dA), rl_free(be, dB);
    }
    rl_free(be, f);
    /* the freed range's address, only compared (never dereferenced): registers again (an overlapping range) */
    check_true("after rl_free an overlapping range registers again",
               rl_backend_grads_bf16(be, (const uint16_t *)old + 5, 10) == 0);
    rl_backend_destroy(be);
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
    check_adamw_bf16(be);
    check_sum_squares_many(be);
    check_grads_bf16();
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
