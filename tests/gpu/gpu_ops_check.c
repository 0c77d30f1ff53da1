/* gpu_ops_check.c — every op of kernels.h on the CUDA backend against the CPU (fp32 reference) backend.
 *
 * Fresh random inputs each run (the seed is printed; RL_GPU_CHECK_SEED repeats a run). Outputs that an op
 * SETS are poisoned with NaN on both sides first, so an element a kernel forgets to write fails; outputs
 * it ACCUMULATES into start from the same random values on both sides. Each output is compared by
 * relative error ‖gpu − cpu‖₂ / ‖cpu‖₂ (max abs printed too) against the op's tolerance; a NaN or Inf
 * anywhere fails. One line per op: name, shape, worst relative error, tolerance, PASS/FAIL.
 * Exit 0 = all pass, 1 = a failure, 77 = no GPU here (meson reports SKIP).
 *
 * RL_GPU_CHECK_DEVICE=cpu runs the "GPU" side on a second CPU backend: a check of this harness itself
 * (buffer lifetimes, poisoning, expected errors) that runs everywhere, under the sanitizers too; built
 * without CUDA it is the only mode. */
#ifdef RL_HAVE_CUDA
#include <cuda_runtime.h>
#endif
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels.h"

static rl_backend *cpu, *gpu;
static int dry; /* RL_GPU_CHECK_DEVICE=cpu: the "GPU" side is a second CPU backend */
static uint64_t rng_state;
static int n_pass, n_fail;

static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)(2.0 * ((double)(rng_state >> 11) / 9007199254740992.0) - 1.0);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "gpu_ops_check: out of host memory\n");
        exit(1);
    }
    return p;
}

/* ---- paired buffers: the same tensor on the CPU backend and on the GPU ---- */

typedef struct {
    float *c, *g;
    size_t n;
} pair;

#define MAX_LIVE 512
static void *live_c[MAX_LIVE], *live_g[MAX_LIVE];
static int n_live;

static void *alloc_both(size_t bytes, void **g)
{
    if (n_live == MAX_LIVE) {
        fprintf(stderr, "gpu_ops_check: too many live buffers\n");
        exit(1);
    }
    void *c = rl_malloc(cpu, bytes);
    *g = rl_malloc(gpu, bytes);
    if (!c || !*g) {
        char e[512];
        rl_backend_status(c ? gpu : cpu, e, sizeof e);
        fprintf(stderr, "gpu_ops_check: allocation of %zu bytes failed: %s\n", bytes, e);
        exit(1);
    }
    live_c[n_live] = c, live_g[n_live] = *g, n_live++;
    return c;
}

static void release_all(void)
{
    for (int i = 0; i < n_live; i++) {
        rl_free(cpu, live_c[i]);
        rl_free(gpu, live_g[i]);
    }
    n_live = 0;
}

static pair from_host(const float *h, size_t n)
{
    pair p = {NULL, NULL, n};
    void *g;
    p.c = alloc_both(n * sizeof(float), &g);
    p.g = g;
    memcpy(p.c, h, n * sizeof(float));
    rl_upload(gpu, p.g, h, n * sizeof(float));
    return p;
}

/* random input (or accumulated output's starting value) in [lo, hi) */
static pair rnd(size_t n, float lo, float hi)
{
    float *h = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        h[i] = lo + (hi - lo) * 0.5f * (frand() + 1.0f);
    pair p = from_host(h, n);
    free(h);
    return p;
}
static pair sym(size_t n, float scale) { return rnd(n, -scale, scale); }

/* an output the op sets: NaN on both sides until written */
static pair poisoned(size_t n)
{
    float *h = xmalloc(n * sizeof(float));
    const uint32_t nan_bits = 0x7fa5a5a5u;
    for (size_t i = 0; i < n; i++)
        memcpy(&h[i], &nan_bits, 4);
    pair p = from_host(h, n);
    free(h);
    return p;
}

static void ids_both(const int32_t *h, int n, int32_t **c, int32_t **g)
{
    void *gp;
    *c = alloc_both((size_t)n * 4, &gp);
    *g = gp;
    memcpy(*c, h, (size_t)n * 4);
    rl_upload(gpu, *g, h, (size_t)n * 4);
}

/* ---- one line per op ---- */

static const char *cur_op;
static char cur_shape[160];
static double cur_tol, cur_worst, cur_worst_abs;
static int cur_bad;

static void op_begin(const char *name, double tol, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void op_begin(const char *name, double tol, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cur_shape, sizeof cur_shape, fmt, ap);
    va_end(ap);
    cur_op = name, cur_tol = tol, cur_worst = 0, cur_worst_abs = 0, cur_bad = 0;
}

static void note_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("    %s: ", cur_op);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    cur_bad = 1;
}

/* compares got (from the GPU) with ref (from the CPU) */
static void cmp_host(const char *what, const float *got, const float *ref, size_t n)
{
    double d2 = 0, r2 = 0, max_abs = 0;
    size_t nonfinite = 0, first = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) || !isfinite(ref[i])) {
            if (!nonfinite++)
                first = i;
            continue;
        }
        double d = (double)got[i] - (double)ref[i];
        d2 += d * d;
        r2 += (double)ref[i] * ref[i];
        if (fabs(d) > max_abs)
            max_abs = fabs(d);
    }
    double rel = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
    if (rel > cur_worst)
        cur_worst = rel;
    if (max_abs > cur_worst_abs)
        cur_worst_abs = max_abs;
    if (nonfinite)
        note_fail("%s: %zu non-finite values, first at %zu (gpu %g, cpu %g)", what, nonfinite, first,
                  (double)got[first], (double)ref[first]);
    else if (!(rel <= cur_tol))
        note_fail("%s: rel err %.3e > %.1e (max abs %.3e, n=%zu)", what, rel, cur_tol, max_abs, n);
}

/* elements [off, off + n) of p */
static pair part(pair p, size_t off, size_t n) { return (pair){p.c + off, p.g + off, n}; }

static void cmp(const char *what, pair p)
{
    float *h = xmalloc(p.n * sizeof(float));
    rl_download(gpu, h, p.g, p.n * sizeof(float));
    cmp_host(what, h, p.c, p.n);
    free(h);
}

/* The op's line; its buffers stay for the next op of the same group (a backward reusing its forward's
 * inputs); op_end releases them. */
static void op_end_keep(void)
{
    char err[512];
    int rc = rl_backend_status(gpu, err, sizeof err);
    if (rc) {
        note_fail("CUDA backend error %d: %s", rc, err);
        rl_backend_clear_error(gpu);
    }
    rc = rl_backend_status(cpu, err, sizeof err);
    if (rc) {
        note_fail("CPU backend error %d: %s", rc, err);
        rl_backend_clear_error(cpu);
    }
    printf("%-26s %-44s rel %.2e  max_abs %.2e  tol %.0e  %s\n", cur_op, cur_shape, cur_worst, cur_worst_abs,
           cur_tol, cur_bad ? "FAIL" : "PASS");
    fflush(stdout);
    if (cur_bad)
        n_fail++;
    else
        n_pass++;
}

static void op_end(void)
{
    op_end_keep();
    release_all();
}

/* An op that must fail on the GPU with `code` and a message naming `needle` (at the next sync). */
static void expect_error(int code, const char *needle)
{
    char err[512] = "";
    int rc = rl_backend_status(gpu, err, sizeof err);
    if (rc != code || !strstr(err, needle))
        note_fail("expected error %d naming %s, got %d \"%s\"", code, needle, rc, err);
    rl_backend_clear_error(gpu);
    if (rl_backend_status(gpu, err, sizeof err) != 0)
        note_fail("the error was reported again after being cleared: %s", err);
    rl_backend_clear_error(gpu);
}

/* ---- memory and casts ---- */

static void check_memory(void)
{
    const size_t n = 100003;
    op_begin("upload_download_copy_zero", 0, "n=%zu, overlapping copy", n);
    pair a = sym(n, 1), b = poisoned(n);
    rl_copy(gpu, b.g, a.g, n * 4);
    rl_copy(cpu, b.c, a.c, n * 4);
    cmp("copy", b);
    /* memmove semantics, both directions */
    rl_copy(gpu, a.g + 1000, a.g, (n - 1000) * 4);
    rl_copy(cpu, a.c + 1000, a.c, (n - 1000) * 4);
    rl_copy(gpu, a.g, a.g + 7, (n - 7) * 4);
    rl_copy(cpu, a.c, a.c + 7, (n - 7) * 4);
    cmp("overlapping copy", a);
    rl_zero(gpu, a.g + 5, 4000 * 4);
    rl_zero(cpu, a.c + 5, 4000 * 4);
    cmp("zero", a);
    op_end();
}

static void check_casts(void)
{
    const size_t n = 65536 + 333;
    float *f = xmalloc(n * 4);
    uint16_t *h16 = xmalloc(n * 2), *got16 = xmalloc(n * 2), *ref16 = xmalloc(n * 2);
    float *got = xmalloc(n * 4), *ref = xmalloc(n * 4);
    void *dsrc = rl_malloc(gpu, n * 4), *ddst = rl_malloc(gpu, n * 4);
    for (size_t i = 0; i < n; i++) /* magnitudes 2^-30 .. 2^20: normals, f16 subnormals, f16 overflow */
        f[i] = frand() * ldexpf(1.0f, (int)(fabsf(frand()) * 50.0f) - 30);
    for (size_t i = 0; i < 65536; i++) /* every 16-bit pattern for the widening casts */
        h16[i] = (uint16_t)i;
    for (size_t i = 65536; i < n; i++) {
        frand();
        h16[i] = (uint16_t)(rng_state >> 20);
    }
    const rl_dtype halves[2] = {RL_DTYPE_BF16, RL_DTYPE_F16};
    for (int k = 0; k < 2; k++) {
        rl_dtype dt = halves[k];
        /* F32 -> half: bit-exact against the CPU's rounding */
        op_begin(k ? "cast_f32_to_f16" : "cast_f32_to_bf16", 0, "n=%zu, bit-exact", n);
        rl_upload(gpu, dsrc, f, n * 4);
        rl_cast(gpu, ddst, dt, dsrc, RL_DTYPE_F32, n);
        rl_download(gpu, got16, ddst, n * 2);
        rl_cast(cpu, ref16, dt, f, RL_DTYPE_F32, n);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++)
            if (got16[i] != ref16[i] && !bad++)
                note_fail("element %zu (%.9g): gpu 0x%04x cpu 0x%04x", i, (double)f[i], got16[i], ref16[i]);
        cur_worst = (double)bad / (double)n;
        op_end();
        /* half -> F32, every pattern; NaN must stay NaN (compared by class, not bits) */
        op_begin(k ? "cast_f16_to_f32" : "cast_bf16_to_f32", 0, "n=%zu, all 65536 patterns", n);
        rl_upload(gpu, dsrc, h16, n * 2);
        rl_cast(gpu, ddst, RL_DTYPE_F32, dsrc, dt, n);
        rl_download(gpu, got, ddst, n * 4);
        rl_cast(cpu, ref, RL_DTYPE_F32, h16, dt, n);
        bad = 0;
        for (size_t i = 0; i < n; i++) {
            int same = isnan(ref[i]) ? isnan(got[i]) : memcmp(&got[i], &ref[i], 4) == 0;
            if (!same && !bad++)
                note_fail("pattern 0x%04x: gpu %.9g cpu %.9g", h16[i], (double)got[i], (double)ref[i]);
        }
        cur_worst = (double)bad / (double)n;
        op_end();
    }
    rl_free(gpu, dsrc);
    rl_free(gpu, ddst);
    free(f), free(h16), free(got16), free(ref16), free(got), free(ref);
}

/* ---- element-wise and reductions ---- */

static void check_elementwise(void)
{
    const size_t n = (1u << 20) + 7;
    op_begin("add", 0, "n=%zu", n);
    pair a = sym(n, 1), b = sym(n, 1), o = poisoned(n);
    rl_add(gpu, o.g, a.g, b.g, n), rl_add(cpu, o.c, a.c, b.c, n);
    cmp("out", o);
    op_end();

    op_begin("accumulate", 0, "n=%zu", n);
    a = sym(n, 1), b = sym(n, 1);
    rl_accumulate(gpu, a.g, b.g, n), rl_accumulate(cpu, a.c, b.c, n);
    cmp("y", a);
    op_end();

    op_begin("scale", 0, "n=%zu", n);
    a = sym(n, 1);
    rl_scale(gpu, a.g, -0.37f, n), rl_scale(cpu, a.c, -0.37f, n);
    cmp("x", a);
    op_end();

    for (int sq = 0; sq < 2; sq++) {
        op_begin(sq ? "sum_squares" : "sum", 1e-10, "n=%zu (double result)", n);
        a = rnd(n, -0.9f, 1.0f);
        double g = NAN, c = NAN;
        if (sq)
            rl_sum_squares(gpu, &g, a.g, n), rl_sum_squares(cpu, &c, a.c, n);
        else
            rl_sum(gpu, &g, a.g, n), rl_sum(cpu, &c, a.c, n);
        cur_worst = fabs(g - c) / fabs(c);
        cur_worst_abs = fabs(g - c);
        if (!(cur_worst <= cur_tol))
            note_fail("gpu %.17g cpu %.17g", g, c);
        op_end();
    }

    op_begin("swiglu_forward", 1e-6, "n=%zu", n);
    a = sym(n, 4), b = sym(n, 2), o = poisoned(n);
    rl_swiglu_forward(gpu, o.g, a.g, b.g, n), rl_swiglu_forward(cpu, o.c, a.c, b.c, n);
    cmp("out", o);
    op_end();

    op_begin("swiglu_backward", 1e-6, "n=%zu", n);
    pair dout = sym(n, 1), gate = sym(n, 4), up = sym(n, 2), dg = sym(n, 1), du = sym(n, 1);
    rl_swiglu_backward(gpu, dg.g, du.g, dout.g, gate.g, up.g, n);
    rl_swiglu_backward(cpu, dg.c, du.c, dout.c, gate.c, up.c, n);
    cmp("dgate", dg), cmp("dup", du);
    op_end();

    for (int kind = 0; kind < 2; kind++) {
        const size_t m = 100003;
        op_begin(kind ? "act_forward_sigmoid" : "act_forward_tanh", 1e-6, "n=%zu", m);
        a = sym(m, 5), o = poisoned(m);
        rl_act_forward(gpu, (rl_act)kind, o.g, a.g, m), rl_act_forward(cpu, (rl_act)kind, o.c, a.c, m);
        cmp("y", o);
        op_end();
        op_begin(kind ? "act_backward_sigmoid" : "act_backward_tanh", 1e-6, "n=%zu", m);
        pair y = kind ? rnd(m, 0.01f, 0.99f) : sym(m, 0.99f), dy = sym(m, 1), dx = sym(m, 1);
        rl_act_backward(gpu, (rl_act)kind, dx.g, dy.g, y.g, m), rl_act_backward(cpu, (rl_act)kind, dx.c, dy.c, y.c, m);
        cmp("dx", dx);
        op_end();
    }

    op_begin("adamw_update", 1e-6, "n=%zu step=3", n);
    pair p = sym(n, 1), g = sym(n, 1), m = sym(n, 0.1f), v = rnd(n, 0.0f, 0.01f);
    rl_adamw_params hp = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f, .step = 3};
    rl_adamw_update(gpu, p.g, g.g, m.g, v.g, n, &hp, 0.5f);
    rl_adamw_update(cpu, p.c, g.c, m.c, v.c, n, &hp, 0.5f);
    cmp("param", p), cmp("m", m), cmp("v", v);
    op_end();
}

/* ---- matrix products ---- */

static void fill_bf16(float *rounded, uint16_t *bits, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++) {
        bits[i] = rl_f32_to_bf16(frand() * scale);
        rounded[i] = rl_bf16_to_f32(bits[i]);
    }
}

/* One product checked against the CPU's fp32 sgemm. BF16 operands are rounded once on the host; the CPU
 * multiplies their exact F32 values. `offset` shifts every operand by that many elements (alignment). */
static void check_gemm(const char *name, rl_gemm g, int with_bias, int offset, double tol)
{
    const int batch = g.batch > 0 ? g.batch : 1;
    const size_t na = (size_t)g.M * g.K, nb = (size_t)g.K * g.N, nc = (size_t)g.M * g.N;
    if (batch > 1) { /* padded strides: the batch matrices are not packed */
        g.stride_a = (int64_t)na + 40, g.stride_b = (int64_t)nb + 24, g.stride_c = (int64_t)nc + 8;
    }
    const size_t ta = (size_t)(batch - 1) * (size_t)g.stride_a + na + (size_t)offset;
    const size_t tb = (size_t)(batch - 1) * (size_t)g.stride_b + nb + (size_t)offset;
    const size_t tc = (size_t)(batch - 1) * (size_t)g.stride_c + nc + (size_t)offset;
    const int bf_in = g.dtype_a == RL_DTYPE_BF16, bf_out = g.dtype_c == RL_DTYPE_BF16;
    if (dry && bf_out && with_bias) { /* a GPU-only product: the CPU backend refuses a BF16 result with a bias */
        printf("%-26s (a bf16 result with bias: GPU only, not run with RL_GPU_CHECK_DEVICE=cpu)\n", name);
        return;
    }
    op_begin(name, tol, "M=%d N=%d K=%d ta=%d tb=%d b=%d a=%.1f beta=%.1f%s%s", g.M, g.N, g.K, g.trans_a, g.trans_b,
             batch, (double)g.alpha, (double)g.beta, with_bias ? " bias" : "", offset ? " misaligned" : "");
    float *ha = xmalloc(ta * 4), *hb = xmalloc(tb * 4), *hc = xmalloc(tc * 4);
    uint16_t *ba = xmalloc(ta * 2), *bb = xmalloc(tb * 2), *bc = xmalloc(tc * 2);
    fill_bf16(ha, ba, ta, 1.0f);
    fill_bf16(hb, bb, tb, 1.0f);
    fill_bf16(hc, bc, tc, 1.0f);
    pair A = from_host(ha, ta), B = from_host(hb, tb), C = from_host(hc, tc), bias = sym((size_t)g.N, 1);
    void *ga = A.g, *gb = B.g, *gc = C.g;
    if (bf_in) {
        rl_upload(gpu, ga, ba, ta * 2);
        rl_upload(gpu, gb, bb, tb * 2);
    }
    if (bf_out)
        rl_upload(gpu, gc, bc, tc * 2);
    const size_t ea = bf_in ? 2 : 4, ec = bf_out ? 2 : 4;
    rl_gemm gc32 = g;
    gc32.dtype_a = gc32.dtype_b = gc32.dtype_c = RL_DTYPE_F32;
    rl_matmul(gpu, &g, (char *)gc + offset * ec, (char *)ga + offset * ea, (char *)gb + offset * ea,
              with_bias ? bias.g : NULL);
    rl_matmul(cpu, &gc32, C.c + offset, A.c + offset, B.c + offset, with_bias ? bias.c : NULL);
    if (bf_out) {
        uint16_t *got16 = xmalloc(tc * 2);
        float *got = xmalloc(tc * 4);
        rl_download(gpu, got16, gc, tc * 2);
        for (size_t i = 0; i < tc; i++)
            got[i] = rl_bf16_to_f32(got16[i]);
        cmp_host("C (bf16)", got, C.c, tc);
        free(got16), free(got);
    } else {
        cmp("C", C);
    }
    free(ha), free(hb), free(hc), free(ba), free(bb), free(bc);
    op_end();
}

static void check_matmul(void)
{
    const rl_dtype F = RL_DTYPE_F32, H = RL_DTYPE_BF16;
    check_gemm("matmul_f32_nn", (rl_gemm){77, 129, 65, 0, 0, 1.0f, 0.0f, 0, 0, 0, 0, F, F, F}, 0, 0, 1e-5);
    check_gemm("matmul_f32_nt_bias", (rl_gemm){64, 256, 128, 0, 1, 1.0f, 0.0f, 0, 0, 0, 0, F, F, F}, 1, 0, 1e-5);
    check_gemm("matmul_f32_tn_bias_beta", (rl_gemm){96, 80, 200, 1, 0, 1.0f, 0.5f, 0, 0, 0, 0, F, F, F}, 1, 0, 1e-5);
    check_gemm("matmul_f32_tt_alpha_beta", (rl_gemm){33, 47, 129, 1, 1, 0.7f, -1.3f, 0, 0, 0, 0, F, F, F}, 0, 0,
               1e-5);
    check_gemm("matmul_f32_batched_bias", (rl_gemm){40, 72, 56, 0, 1, 1.0f, 0.0f, 3, 0, 0, 0, F, F, F}, 1, 0, 1e-5);
    check_gemm("matmul_f32_batched_tn", (rl_gemm){31, 64, 48, 1, 0, 1.0f, 1.0f, 4, 0, 0, 0, F, F, F}, 0, 0, 1e-5);
    check_gemm("matmul_f32_misaligned", (rl_gemm){61, 67, 71, 0, 1, 1.0f, 0.0f, 0, 0, 0, 0, F, F, F}, 1, 1, 1e-5);
    /* BF16 inputs are exact in F32 and products of two are exact: only the fp32 summation order differs */
    check_gemm("matmul_bf16_f32_nt_bias", (rl_gemm){128, 96, 256, 0, 1, 1.0f, 0.0f, 0, 0, 0, 0, H, H, F}, 1, 0,
               1e-4);
    check_gemm("matmul_bf16_f32_batched", (rl_gemm){64, 64, 96, 0, 0, 1.0f, 0.0f, 2, 0, 0, 0, H, H, F}, 0, 0, 1e-4);
    check_gemm("matmul_bf16_bf16_nn_bias", (rl_gemm){64, 128, 512, 0, 0, 1.0f, 0.0f, 0, 0, 0, 0, H, H, H}, 1, 0,
               1e-2);
    check_gemm("matmul_bf16_bf16_tn", (rl_gemm){100, 64, 300, 1, 0, 1.0f, 0.0f, 0, 0, 0, 0, H, H, H}, 0, 0, 1e-2);

    /* Autocast (--precision bf16): F32 operands rounded to bf16, fp32 accumulation. The CPU does the same
     * arithmetic on the rounded values, so only the summation order differs. The weight operand is a
     * registered range (its bf16 copy), the other is cast into scratch; then the weights change and the copy
     * is refreshed after rl_backend_weights_changed. */
    op_begin("matmul_autocast_bf16", 1e-4, "x[300,512]·W[384,512]ᵀ + b, W registered");
    {
        pair x = sym(300 * 512, 1), w = sym(384 * 512, 0.05f), b = sym(384, 0.1f), y = poisoned(300 * 384);
        rl_gemm lg = {300, 384, 512, 0, 1, 1.0f, 0.0f, 0, 0, 0, 0, RL_DTYPE_F32, RL_DTYPE_F32, RL_DTYPE_F32};
        rl_backend *both[2] = {cpu, gpu};
        for (int side = 0; side < 2; side++) {
            float *wp = side ? w.g : w.c;
            rl_backend_set_autocast(both[side], RL_DTYPE_BF16);
            rl_backend_weights(both[side], wp, w.n);
            rl_matmul(both[side], &lg, side ? y.g : y.c, side ? x.g : x.c, wp, side ? b.g : b.c);
        }
        cmp("y", y);
        for (size_t i = 0; i < w.n; i++)
            w.c[i] *= -0.5f;
        rl_upload(gpu, w.g, w.c, w.n * sizeof(float));
        for (int side = 0; side < 2; side++) {
            rl_backend_weights_changed(both[side], side ? w.g : w.c);
            rl_matmul(both[side], &lg, side ? y.g : y.c, side ? x.g : x.c, side ? w.g : w.c, side ? b.g : b.c);
        }
        cmp("y after the weights changed", y);
        /* a backward product: both operands through scratch */
        pair dw = sym(384 * 512, 1);
        rl_gemm wg = {384, 512, 300, 1, 0, 1.0f, 1.0f, 0, 0, 0, 0, RL_DTYPE_F32, RL_DTYPE_F32, RL_DTYPE_F32};
        rl_matmul(cpu, &wg, dw.c, y.c, x.c, NULL);
        rl_matmul(gpu, &wg, dw.g, y.g, x.g, NULL);
        cmp("dW += yᵀ·x", dw);
        rl_backend_set_autocast(cpu, RL_DTYPE_F32);
        rl_backend_set_autocast(gpu, RL_DTYPE_F32);
    }
    op_end(); /* frees w: the registered ranges are forgotten with it */

    op_begin("matmul_f16_refused", 0, "F16 x F16 -> F32 must be RL_ENOTSUP");
    pair a = sym(64, 1);
    rl_gemm g = {4, 4, 4, 0, 0, 1.0f, 0.0f, 0, 0, 0, 0, RL_DTYPE_F16, RL_DTYPE_F16, RL_DTYPE_F32};
    int rc = rl_matmul(gpu, &g, a.g, a.g, a.g, NULL);
    if (rc != RL_ENOTSUP)
        note_fail("returned %d", rc);
    expect_error(RL_ENOTSUP, "rl_matmul");
    op_end();

    op_begin("bias_backward", 1e-5, "rows=300 cols=200");
    pair dout = sym(300 * 200, 1), db = sym(200, 1);
    rl_bias_backward(gpu, db.g, dout.g, 300, 200), rl_bias_backward(cpu, db.c, dout.c, 300, 200);
    cmp("dbias", db);
    op_end();
}

/* ---- precision bf16-weights: bf16 weights and gradients beside fp32 masters ---- */

/* bf16 bits on both sides from the host array h (n elements); returns the CPU side, *g the GPU side */
static uint16_t *bf16_both(const uint16_t *h, size_t n, uint16_t **g)
{
    void *gp;
    uint16_t *c = alloc_both(n * 2, &gp);
    *g = gp;
    memcpy(c, h, n * 2);
    rl_upload(gpu, *g, h, n * 2);
    return c;
}

/* a finite bf16's place on the ordered line of bf16 values (±0 are one point) */
static long bf16_ord(uint16_t a) { return (a & 0x8000u) ? -(long)(a & 0x7fffu) : (long)a; }

/* rl_adamw_update_bf16: master, m, v as the fp32 AdamW (FMA contraction on the GPU: tolerance 1e-6); the bf16
 * weights within one bf16 ulp of the CPU's (a master differing in its last bit can round the other way) and, on
 * each side, exactly the round-to-nearest-even of that side's master. */
static void check_adamw_bf16(size_t n, int64_t step)
{
    op_begin("adamw_update_bf16", 1e-6, "n=%zu step=%lld, param16 <= 1 bf16 ulp", n, (long long)step);
    pair master = sym(n, 1), m = sym(n, 0.1f), v = rnd(n, 0.0f, 0.01f);
    uint16_t *h = xmalloc(n * 2), *g16g, *p16g;
    for (size_t i = 0; i < n; i++)
        h[i] = rl_f32_to_bf16(2.0f * frand());
    uint16_t *g16c = bf16_both(h, n, &g16g);
    for (size_t i = 0; i < n; i++)
        h[i] = 0xffffu; /* NaN: an unwritten weight fails */
    uint16_t *p16c = bf16_both(h, n, &p16g);
    const rl_adamw_params hp = {
        .lr = 2e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f, .step = step};
    rl_adamw_update_bf16(gpu, p16g, master.g, g16g, m.g, v.g, n, &hp, 0.37f);
    rl_adamw_update_bf16(cpu, p16c, master.c, g16c, m.c, v.c, n, &hp, 0.37f);
    cmp("master", master), cmp("m", m), cmp("v", v);
    float *mg = xmalloc(n * 4);
    rl_download(gpu, h, p16g, n * 2);
    rl_download(gpu, mg, master.g, n * 4);
    size_t differ = 0, far = 0, own_g = 0, own_c = 0;
    long max_ulps = 0;
    for (size_t i = 0; i < n; i++) {
        const long u = labs(bf16_ord(h[i]) - bf16_ord(p16c[i]));
        max_ulps = u > max_ulps ? u : max_ulps;
        differ += u != 0, far += u > 1 || (h[i] & 0x7f80u) == 0x7f80u;
        own_g += h[i] != rl_f32_to_bf16(mg[i]);
        own_c += p16c[i] != rl_f32_to_bf16(master.c[i]);
    }
    printf("    adamw_update_bf16: param16 differs on %zu of %zu (max %ld ulp)\n", differ, n, max_ulps);
    if (far)
        note_fail("param16: %zu weights more than 1 bf16 ulp from the CPU's (or not finite)", far);
    if (own_g || own_c)
        note_fail("param16 is not rl_f32_to_bf16(master) on %zu (gpu) / %zu (cpu) elements", own_g, own_c);
    free(h), free(mg);
    op_end();
}

/* rl_sum_squares_many over F32 and BF16 ranges (one empty), each against the CPU's in double */
static void check_sum_squares_many(void)
{
    enum { R = 5 };
    const rl_dtype dt[R] = {RL_DTYPE_F32, RL_DTYPE_BF16, RL_DTYPE_BF16, RL_DTYPE_F32, RL_DTYPE_BF16};
    const size_t n[R] = {100003, 65536 + 333, 0, 7, (1u << 20) + 5};
    op_begin("sum_squares_many_bf16", 1e-10, "%d ranges F32/BF16 (one empty), double results", R);
    const void *xc[R], *xg[R];
    double oc[R], og[R];
    for (int r = 0; r < R; r++) {
        oc[r] = og[r] = NAN;
        if (dt[r] == RL_DTYPE_F32) {
            pair p = sym(n[r] ? n[r] : 1, (float)(r + 1));
            xc[r] = p.c, xg[r] = p.g;
        } else {
            uint16_t *h = xmalloc((n[r] ? n[r] : 1) * 2), *g;
            for (size_t i = 0; i < (n[r] ? n[r] : 1); i++)
                h[i] = rl_f32_to_bf16((float)(r + 1) * frand());
            xc[r] = bf16_both(h, n[r] ? n[r] : 1, &g);
            xg[r] = g;
            free(h);
        }
    }
    rl_sum_squares_many(gpu, og, xg, dt, n, R);
    rl_sum_squares_many(cpu, oc, xc, dt, n, R);
    for (int r = 0; r < R; r++) {
        const double e = n[r] ? fabs(og[r] - oc[r]) / fabs(oc[r]) : fabs(og[r]) + fabs(oc[r]);
        if (!(e <= cur_worst)) /* NaN too */
            cur_worst = isnan(e) ? INFINITY : e;
        if (fabs(og[r] - oc[r]) > cur_worst_abs)
            cur_worst_abs = fabs(og[r] - oc[r]);
        if (!(n[r] ? e <= cur_tol : og[r] == 0.0 && oc[r] == 0.0))
            note_fail("range %d (%s, n=%zu): gpu %.17g cpu %.17g", r, rl_dtype_name(dt[r]), n[r], og[r], oc[r]);
    }
    op_end();
}

/* An autocast F32 matmul whose output lies in a registered bf16 gradient range (rl_backend_grads_bf16), at
 * element `off` of the range, beta 1: C = bf16(op(A)·op(B) + widen(C)). GPU against CPU by relative error
 * (tol: one bf16 rounding more than the autocast product, ~2⁻⁷), and each side's element against a float64
 * reference of the rounded operands: the round-to-nearest-even of some value within fp32 accumulation error
 * ((K + 2)·2⁻²⁴ relative to Σ|terms|) of it. Elements of the range outside C stay as they were on both sides. */
static void check_grad_gemm(const char *name, rl_gemm g, size_t off)
{
    const size_t na = (size_t)g.M * g.K, nb = (size_t)g.K * g.N, nc = (size_t)g.M * g.N, n16 = off + nc + 37;
    op_begin(name, 8e-3, "M=%d N=%d K=%d ta=%d tb=%d beta=%.1f into bf16 grads at +%zu", g.M, g.N, g.K, g.trans_a,
             g.trans_b, (double)g.beta, off);
    pair A = sym(na, 1), B = sym(nb, 0.5f);
    uint16_t *h = xmalloc(n16 * 2), *dg;
    for (size_t i = 0; i < n16; i++)
        h[i] = rl_f32_to_bf16(4.0f * frand());
    uint16_t *dc = bf16_both(h, n16, &dg);
    rl_backend *both[2] = {cpu, gpu};
    for (int side = 0; side < 2; side++) {
        if (rl_backend_grads_bf16(both[side], side ? dg : dc, n16) != 0)
            note_fail("%s: the bf16 gradient range does not register", side ? "gpu" : "cpu");
        rl_backend_set_autocast(both[side], RL_DTYPE_BF16);
    }
    rl_matmul(gpu, &g, rl_bf16_as_f32ptr(dg, off), A.g, B.g, NULL);
    rl_matmul(cpu, &g, rl_bf16_as_f32ptr(dc, off), A.c, B.c, NULL);
    rl_backend_set_autocast(cpu, RL_DTYPE_F32);
    rl_backend_set_autocast(gpu, RL_DTYPE_F32);
    uint16_t *got16 = xmalloc(n16 * 2);
    rl_download(gpu, got16, dg, n16 * 2);
    float *got = xmalloc(nc * 4), *ref = xmalloc(nc * 4);
    for (size_t i = 0; i < nc; i++)
        got[i] = rl_bf16_to_f32(got16[off + i]), ref[i] = rl_bf16_to_f32(dc[off + i]);
    cmp_host("C (bf16 grads)", got, ref, nc);
    /* float64 on the rounded operands (and Σ|terms| for the error bound) */
    float *ra = xmalloc(na * 4), *rb = xmalloc(nb * 4);
    for (size_t i = 0; i < na; i++)
        ra[i] = rl_bf16_to_f32(rl_f32_to_bf16(A.c[i]));
    for (size_t i = 0; i < nb; i++)
        rb[i] = rl_bf16_to_f32(rl_f32_to_bf16(B.c[i]));
    size_t bad[2] = {0, 0}, outside[2] = {0, 0}, differ = 0;
    for (int i = 0; i < g.M; i++)
        for (int j = 0; j < g.N; j++) {
            const size_t o = (size_t)i * g.N + j;
            const double c0 = rl_bf16_to_f32(h[off + o]);
            double s = 0, mag = 0;
            for (int k = 0; k < g.K; k++) {
                const double a = g.trans_a ? ra[(size_t)k * g.M + i] : ra[(size_t)i * g.K + k];
                const double b = g.trans_b ? rb[(size_t)j * g.K + k] : rb[(size_t)k * g.N + j];
                s += a * b, mag += fabs(a * b);
            }
            const double x = g.alpha * s + g.beta * c0;
            const double bound = (g.K + 2) * ldexp(1.0, -24) * (fabs(g.alpha) * mag + fabs(g.beta * c0));
            const long lo = bf16_ord(rl_f32_to_bf16((float)(x - bound)));
            const long hi = bf16_ord(rl_f32_to_bf16((float)(x + bound)));
            const uint16_t side16[2] = {dc[off + o], got16[off + o]};
            for (int side = 0; side < 2; side++)
                bad[side] += bf16_ord(side16[side]) < lo || bf16_ord(side16[side]) > hi;
            differ += side16[0] != side16[1];
        }
    for (size_t i = 0; i < n16; i++)
        if (i < off || i >= off + nc)
            outside[0] += dc[i] != h[i], outside[1] += got16[i] != h[i];
    printf("    %s: gpu and cpu bf16 differ on %zu of %zu elements\n", name, differ, nc);
    if (bad[0] || bad[1])
        note_fail("not the bf16 of a value within fp32 accumulation error of float64: %zu (gpu) %zu (cpu) elements",
                  bad[1], bad[0]);
    if (outside[0] || outside[1])
        note_fail("elements of the range outside C changed: %zu (gpu) %zu (cpu)", outside[1], outside[0]);
    free(h), free(got16), free(got), free(ref), free(ra), free(rb);
    op_end(); /* frees the ranges: both backends forget them */
}

static void check_bf16_weights(void)
{
    check_adamw_bf16(100003, 3);
    check_adamw_bf16(1237, 1);
    check_sum_squares_many();
    const rl_dtype F = RL_DTYPE_F32;
    /* the weight gradient of a linear layer: dW[out,in] += dyᵀ[out,rows]·x[rows,in] */
    check_grad_gemm("matmul_autocast_bf16_grad", (rl_gemm){384, 512, 300, 1, 0, 1.0f, 1.0f, 0, 0, 0, 0, F, F, F},
                    64);
    check_grad_gemm("matmul_autocast_bf16_grad_beta0",
                    (rl_gemm){384, 512, 300, 1, 0, 1.0f, 0.0f, 0, 0, 0, 0, F, F, F}, 64);
    check_grad_gemm("matmul_autocast_bf16_grad_nt", (rl_gemm){256, 384, 512, 0, 1, 1.0f, 1.0f, 0, 0, 0, 0, F, F, F},
                    0);
    /* more than the 64 MiB of fp32 scratch the GPU accumulates through: C in two blocks of rows */
    check_grad_gemm("matmul_autocast_bf16_grad_blocks",
                    (rl_gemm){384, 65600, 40, 1, 0, 1.0f, 1.0f, 0, 0, 0, 0, F, F, F}, 64);
    check_grad_gemm("matmul_autocast_bf16_grad_blocks_nt", /* A's rows in blocks: 192, 192, 16 */
                    (rl_gemm){400, 65600, 40, 0, 1, 1.0f, 1.0f, 0, 0, 0, 0, F, F, F}, 0);
    /* an odd offset: C only 2-byte aligned */
    check_grad_gemm("matmul_autocast_bf16_grad_odd", (rl_gemm){61, 67, 71, 1, 0, 1.0f, 1.0f, 0, 0, 0, 0, F, F, F},
                    3);
}

/* ---- layers ---- */

static void check_layers(void)
{
    const int rows = 257, vocab = 1000, dim = 96;
    int32_t *ids = xmalloc(sizeof(int32_t) * rows), *idc, *idg;
    for (int r = 0; r < rows; r++) /* ids repeat: the backward's collisions */
        ids[r] = (int32_t)((0.5f * (frand() + 1.0f)) * 300) % vocab;
    op_begin("embedding_forward", 0, "rows=%d vocab=%d dim=%d", rows, vocab, dim);
    ids_both(ids, rows, &idc, &idg);
    pair table = sym((size_t)vocab * dim, 1), out = poisoned((size_t)rows * dim);
    rl_embedding_forward(gpu, out.g, idg, table.g, rows, vocab, dim);
    rl_embedding_forward(cpu, out.c, idc, table.c, rows, vocab, dim);
    cmp("out", out);
    op_end();

    op_begin("embedding_backward", 1e-6, "rows=%d vocab=%d dim=%d (repeated ids)", rows, vocab, dim);
    ids_both(ids, rows, &idc, &idg);
    pair dt = sym((size_t)vocab * dim, 1), dout = sym((size_t)rows * dim, 1);
    rl_embedding_backward(gpu, dt.g, dout.g, idg, rows, vocab, dim);
    rl_embedding_backward(cpu, dt.c, dout.c, idc, rows, vocab, dim);
    cmp("dtable", dt);
    op_end();

    op_begin("embedding_bad_id", 0, "id = vocab at row 100 must fail at sync");
    ids[100] = vocab;
    ids_both(ids, rows, &idc, &idg);
    table = sym((size_t)vocab * dim, 1), out = poisoned((size_t)rows * dim);
    rl_embedding_forward(gpu, out.g, idg, table.g, rows, vocab, dim);
    expect_error(RL_ERANGE, "rl_embedding_forward");
    rl_embedding_backward(gpu, table.g, out.g, idg, rows, vocab, dim);
    expect_error(RL_ERANGE, "rl_embedding_backward");
    op_end();
    free(ids);

    const int nr = 97, nd = 1000;
    op_begin("rmsnorm_forward", 1e-5, "rows=%d dim=%d", nr, nd);
    pair x = sym((size_t)nr * nd, 2), w = sym(nd, 1), y = poisoned((size_t)nr * nd), rstd = poisoned(nr);
    rl_rmsnorm_forward(gpu, y.g, rstd.g, x.g, w.g, nr, nd, 1e-5f);
    rl_rmsnorm_forward(cpu, y.c, rstd.c, x.c, w.c, nr, nd, 1e-5f);
    cmp("out", y), cmp("rstd", rstd);
    op_end();

    op_begin("rmsnorm_backward", 1e-5, "rows=%d dim=%d", nr, nd);
    x = sym((size_t)nr * nd, 2), w = sym(nd, 1);
    pair rs = rnd(nr, 0.5f, 2.0f), dy = sym((size_t)nr * nd, 1), dx = sym((size_t)nr * nd, 1), dw = sym(nd, 1);
    rl_rmsnorm_backward(gpu, dx.g, dw.g, dy.g, x.g, w.g, rs.g, nr, nd);
    rl_rmsnorm_backward(cpu, dx.c, dw.c, dy.c, x.c, w.c, rs.c, nr, nd);
    cmp("din", dx), cmp("dweight", dw);
    op_end();

    const int B = 2, T = 37, Hh = 5, hd = 64, half = hd / 2;
    float *ct = xmalloc(sizeof(float) * T * half), *st = xmalloc(sizeof(float) * T * half);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double th = t * pow(10000.0, -2.0 * i / hd);
            ct[t * half + i] = (float)cos(th), st[t * half + i] = (float)sin(th);
        }
    for (int inv = 0; inv < 2; inv++) {
        op_begin(inv ? "rope_backward" : "rope_forward", 1e-6, "B=%d T=%d H=%d hd=%d (in place)", B, T, Hh, hd);
        pair cs = from_host(ct, (size_t)T * half), sn = from_host(st, (size_t)T * half);
        pair v = sym((size_t)B * T * Hh * hd, 1);
        if (inv)
            rl_rope_backward(gpu, v.g, cs.g, sn.g, B, T, Hh, hd), rl_rope_backward(cpu, v.c, cs.c, sn.c, B, T, Hh, hd);
        else
            rl_rope_forward(gpu, v.g, cs.g, sn.g, B, T, Hh, hd), rl_rope_forward(cpu, v.c, cs.c, sn.c, B, T, Hh, hd);
        cmp("x", v);
        op_end();
    }
    free(ct), free(st);
}

static void check_attention(void)
{
    pair q, k, v, out, lse;
    /* the tensor-core forwards' two head sizes (the CUDA-core one: knob); then a teacher's under bf16 autocast
     * (rl_attn_dims.bf16, the bf16 tensor-core forward): both backends round q, k, v and p to bf16, p against running
     * maxima of different key tiles, so they agree to bf16 rounding of p (the emulated check saw 3.5e-4 at most; the
     * rounding itself moves the output 1e-3 from the fp32 one), over 5 key tiles */
    static const char *const fwd_names[2][2] = {{"attention_forward", "attention_forward_d128"},
                                                {"attention_forward_bf16", "attention_forward_bf16_d128"}};
    for (int bf16 = 0; bf16 < 2; bf16++)
        for (int hd = 64; hd <= 128; hd *= 2) {
            rl_attn_dims f = {.batch = 2, .seq = bf16 ? 300 : 67, .heads = 4, .kv_heads = 2, .head_dim = hd,
                              .scale = 0.125f, .bf16 = bf16};
            const size_t fq = (size_t)f.batch * f.seq * f.heads * hd, fk = (size_t)f.batch * f.seq * f.kv_heads * hd;
            op_begin(fwd_names[bf16][hd == 128], bf16 ? 1e-3 : 1e-5, "B=%d T=%d H=%d KVH=%d D=%d", f.batch, f.seq,
                     f.heads, f.kv_heads, hd);
            q = sym(fq, 1), k = sym(fk, 1), v = sym(fk, 1), out = poisoned(fq);
            lse = poisoned((size_t)f.batch * f.heads * f.seq);
            rl_attention_forward(gpu, &f, out.g, lse.g, q.g, k.g, v.g);
            rl_attention_forward(cpu, &f, out.c, lse.c, q.c, k.c, v.c);
            cmp("out", out), cmp("lse", lse);
            op_end();
        }

    for (int hd = 64; hd <= 128; hd *= 2) { /* the tensor-core backward's two head sizes (the CUDA-core one: knob) */
        rl_attn_dims d = {.batch = 2, .seq = 67, .heads = 4, .kv_heads = 2, .head_dim = hd, .scale = 0.125f};
        const size_t nq = (size_t)d.batch * d.seq * d.heads * d.head_dim;
        const size_t nk = (size_t)d.batch * d.seq * d.kv_heads * d.head_dim;
        const size_t nl = (size_t)d.batch * d.heads * d.seq;

        op_begin(hd == 64 ? "attention_backward" : "attention_backward_d128", 1e-4, "B=%d T=%d H=%d KVH=%d D=%d",
                 d.batch, d.seq, d.heads, d.kv_heads, d.head_dim);
        q = sym(nq, 1), k = sym(nk, 1), v = sym(nk, 1), out = poisoned(nq), lse = poisoned(nl);
        rl_attention_forward(cpu, &d, out.c, lse.c, q.c, k.c, v.c);
        /* both backwards see the CPU forward's out and lse, so only the backward is compared */
        rl_upload(gpu, out.g, out.c, nq * 4), rl_upload(gpu, lse.g, lse.c, nl * 4);
        pair dout = sym(nq, 1), dq = sym(nq, 1), dk = sym(nk, 1), dv = sym(nk, 1), delta = poisoned(nl);
        rl_attention_backward(gpu, &d, dq.g, dk.g, dv.g, delta.g, dout.g, out.g, lse.g, q.g, k.g, v.g);
        rl_attention_backward(cpu, &d, dq.c, dk.c, dv.c, delta.c, dout.c, out.c, lse.c, q.c, k.c, v.c);
        cmp("dq", dq), cmp("dk", dk), cmp("dv", dv);
        op_end();
    }

    rl_attn_dims c = {.batch = 2, .seq = 5, .heads = 4, .kv_heads = 1, .head_dim = 64, .scale = 0.125f,
                      .kv_seq = 80, .q_pos = 41};
    const size_t cq = (size_t)c.batch * c.seq * c.heads * c.head_dim;
    const size_t ck = (size_t)c.batch * c.kv_seq * c.kv_heads * c.head_dim;
    const size_t cl = (size_t)c.batch * c.heads * c.seq;
    op_begin("attention_forward_kvcache", 1e-5, "B=%d T=%d kv_seq=%d q_pos=%d H=%d KVH=%d", c.batch, c.seq, c.kv_seq,
             c.q_pos, c.heads, c.kv_heads);
    q = sym(cq, 1), k = sym(ck, 1), v = sym(ck, 1), out = poisoned(cq), lse = poisoned(cl);
    /* cache rows past q_pos + seq were never written (a generate cache comes from an unzeroed allocation): NaN
     * there must not reach the output, though the last key tile covers them */
    for (size_t e = 0; e < ck; e++)
        if ((int)(e / ((size_t)c.kv_heads * c.head_dim) % c.kv_seq) >= c.q_pos + c.seq)
            k.c[e] = v.c[e] = NAN;
    rl_upload(gpu, k.g, k.c, ck * 4), rl_upload(gpu, v.g, v.c, ck * 4);
    rl_attention_forward(gpu, &c, out.g, lse.g, q.g, k.g, v.g);
    rl_attention_forward(cpu, &c, out.c, lse.c, q.c, k.c, v.c);
    cmp("out", out), cmp("lse", lse);
    op_end_keep(); /* the same q and cache in bf16 */

    op_begin("attention_forward_kvcache_bf16", 1e-3, "B=%d T=%d kv_seq=%d q_pos=%d H=%d KVH=%d", c.batch, c.seq,
             c.kv_seq, c.q_pos, c.heads, c.kv_heads);
    c.bf16 = 1;
    out = poisoned(cq), lse = poisoned(cl);
    rl_attention_forward(gpu, &c, out.g, lse.g, q.g, k.g, v.g);
    rl_attention_forward(cpu, &c, out.c, lse.c, q.c, k.c, v.c);
    cmp("out", out), cmp("lse", lse);
    op_end();
}

/* ---- losses ---- */

static void check_losses(void)
{
    const int rows = 33, vocab = 50021;
    int32_t *tg = xmalloc(sizeof(int32_t) * rows), *tc, *tgg;
    for (int r = 0; r < rows; r++)
        tg[r] = r % 7 == 3 ? -1 : (int32_t)((0.5f * (frand() + 1.0f)) * (vocab - 1));
    const size_t n = (size_t)rows * vocab;
    for (int mode = 0; mode < 3; mode++) { /* separate dlogits, in place, loss only */
        static const char *names[3] = {"cross_entropy", "cross_entropy_inplace", "cross_entropy_noGrad"};
        op_begin(names[mode], 1e-5, "rows=%d vocab=%d (targets -1 included)", rows, vocab);
        ids_both(tg, rows, &tc, &tgg);
        pair z = sym(n, 8), loss = poisoned(rows), dz = poisoned(n);
        pair *dst = mode == 0 ? &dz : mode == 1 ? &z : NULL;
        rl_cross_entropy(gpu, loss.g, dst ? dst->g : NULL, z.g, tgg, rows, vocab, 0.25f);
        rl_cross_entropy(cpu, loss.c, dst ? dst->c : NULL, z.c, tc, rows, vocab, 0.25f);
        cmp("losses", loss);
        if (dst)
            cmp("dlogits", *dst);
        op_end();
    }
    op_begin("cross_entropy_bad_target", 0, "target = vocab must fail at sync");
    tg[5] = vocab;
    ids_both(tg, rows, &tc, &tgg);
    pair z = sym(n, 1), loss = poisoned(rows);
    rl_cross_entropy(gpu, loss.g, NULL, z.g, tgg, rows, vocab, 1.0f);
    expect_error(RL_ERANGE, "rl_cross_entropy");
    op_end();
    free(tg);

    const int kr = 17, kv = 32003;
    for (int mode = 0; mode < 3; mode++) {
        static const char *names[3] = {"kl_divergence", "kl_divergence_inplace", "kl_divergence_noGrad"};
        op_begin(names[mode], 1e-5, "rows=%d vocab=%d", kr, kv);
        pair s = sym((size_t)kr * kv, 4), t = sym((size_t)kr * kv, 4), l = poisoned(kr), dz = poisoned((size_t)kr * kv);
        pair *dst = mode == 0 ? &dz : mode == 1 ? &s : NULL;
        rl_kl_divergence(gpu, l.g, dst ? dst->g : NULL, s.g, t.g, kr, kv, 0.5f);
        rl_kl_divergence(cpu, l.c, dst ? dst->c : NULL, s.c, t.c, kr, kv, 0.5f);
        cmp("losses", l);
        if (dst)
            cmp("dlogits", *dst);
        op_end();
    }

    const int lr = 50, ld = 333;
    const size_t ln = (size_t)lr * ld;
    for (int mse = 0; mse < 2; mse++) {
        op_begin(mse ? "mse_forward" : "l2_distance_forward", 1e-6, "rows=%d dim=%d", lr, ld);
        pair a = sym(ln, 1), b = sym(ln, 1), l = poisoned(lr);
        if (mse)
            rl_mse_forward(gpu, l.g, a.g, b.g, lr, ld), rl_mse_forward(cpu, l.c, a.c, b.c, lr, ld);
        else
            rl_l2_distance_forward(gpu, l.g, a.g, b.g, lr, ld), rl_l2_distance_forward(cpu, l.c, a.c, b.c, lr, ld);
        cmp("losses", l);
        op_end();

        op_begin(mse ? "mse_backward" : "l2_distance_backward", 1e-6, "rows=%d dim=%d (a row with a = b)", lr, ld);
        a = sym(ln, 1), b = sym(ln, 1), l = poisoned(lr);
        rl_copy(gpu, b.g + 3 * ld, a.g + 3 * ld, (size_t)ld * 4); /* row 3: zero distance */
        rl_copy(cpu, b.c + 3 * ld, a.c + 3 * ld, (size_t)ld * 4);
        rl_l2_distance_forward(cpu, l.c, a.c, b.c, lr, ld);
        rl_upload(gpu, l.g, l.c, (size_t)lr * 4); /* both backwards see the same losses */
        pair da = sym(ln, 1);
        if (mse)
            rl_mse_backward(gpu, da.g, a.g, b.g, 0.3f, lr, ld), rl_mse_backward(cpu, da.c, a.c, b.c, 0.3f, lr, ld);
        else
            rl_l2_distance_backward(gpu, da.g, a.g, b.g, l.g, 0.3f, lr, ld),
                rl_l2_distance_backward(cpu, da.c, a.c, b.c, l.c, 0.3f, lr, ld);
        cmp("da", da);
        op_end();
    }
}

/* ---- recurrences ---- */

/* Inputs in the ranges the models produce: RWKV-7 decay in (0.545, 1) with a = −κ̂, b = κ̂·α (κ̂ unit per
 * head); RWKV-6 log-decay max(−e^x, −5), or with wkv6_mild −e^x for x in (−11, −1), RAD-RWKV6's as converted (no
 * 8-token group steep: the default wkv6 backward then runs the per-row kernels, not the chunked one). */
static int wkv6_mild;
static rl_wkv_in wkv_inputs(int kind, const rl_wkv_dims *d, pair *p /* [6] */)
{
    const size_t n = (size_t)d->batch * d->seq * d->heads * d->head_dim;
    const int N = d->head_dim;
    float *lw = xmalloc(n * 4), *a = xmalloc(n * 4), *b = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) {
        float x = 3.0f * frand();
        lw[i] = kind == 7     ? -0.60653066f / (1.0f + expf(-x))
                : wkv6_mild ? -expf(-6.0f + 5.0f / 3.0f * x)
                            : fmaxf(-expf(x - 1.0f), -5.0f);
    }
    for (size_t h = 0; h < n / N; h++) {
        float nn = 0;
        for (int j = 0; j < N; j++)
            a[h * N + j] = frand(), nn += a[h * N + j] * a[h * N + j];
        for (int j = 0; j < N; j++) {
            float kap = a[h * N + j] / sqrtf(nn), alpha = 0.5f * (frand() + 1.0f);
            a[h * N + j] = -kap, b[h * N + j] = kap * alpha;
        }
    }
    p[0] = sym(n, 1), p[1] = from_host(lw, n), p[2] = sym(n, 0.5f), p[3] = sym(n, 1);
    p[4] = from_host(a, n), p[5] = from_host(b, n);
    free(lw), free(a), free(b);
    return (rl_wkv_in){p[0].c, p[1].c, p[2].c, p[3].c, p[4].c, p[5].c};
}

static rl_wkv_in gpu_side(const pair *p) { return (rl_wkv_in){p[0].g, p[1].g, p[2].g, p[3].g, p[4].g, p[5].g}; }

/* Head size 64 and 128 run the four-threads-per-row backward, others (40) the N-thread one; chunk 48 makes the
 * backward rebuild states inside a chunk from earlier segments. */
static void check_wkv(int kind, int head_dim, int chunk)
{
    rl_wkv_dims d = {.batch = 2, .seq = 45, .heads = 3, .head_dim = head_dim, .chunk = chunk};
    const size_t n = (size_t)d.batch * d.seq * d.heads * d.head_dim;
    const size_t ns = (size_t)d.batch * d.heads * d.head_dim * d.head_dim, nstates = rl_wkv_checkpoint_floats(&d, 6);
    const size_t nck = rl_wkv_checkpoint_floats(&d, kind); /* wkv7: + every token's sa */
    /* the chunked tensor-core forward (RADLADS_WKV_CHUNKED=1, head sizes 64 and 128, whole chunks of 16) keeps no
     * sa: its part of the checkpoint stays as it was (kernels.h) */
    const char *chunked = getenv("RADLADS_WKV_CHUNKED");
    const int L = d.chunk ? d.chunk : RL_WKV_DEFAULT_CHUNK;
    const int keeps_sa = kind == 7 && !(chunked && !strcmp(chunked, "1") && (head_dim == 64 || head_dim == 128) &&
                                        L % 16 == 0);
    int (*fwd)(rl_backend *, const rl_wkv_dims *, float *, float *, float *, const rl_wkv_in *, const float *) =
        kind == 7 ? rl_wkv7_forward : rl_wkv6_forward;
    int (*bwd)(rl_backend *, const rl_wkv_dims *, const rl_wkv_grad *, float *, const float *, const float *,
               const rl_wkv_in *, const float *, const float *) = kind == 7 ? rl_wkv7_backward : rl_wkv6_backward;

    const char *decays = kind == 6 && wkv6_mild ? ", decays as converted" : "";
    op_begin(kind == 7 ? "wkv7_forward" : "wkv6_forward", 2e-5, "B=%d T=%d H=%d N=%d chunk=%d, state in/out%s",
             d.batch, d.seq, d.heads, d.head_dim, d.chunk ? d.chunk : RL_WKV_DEFAULT_CHUNK, decays);
    pair p[6];
    rl_wkv_in ic = wkv_inputs(kind, &d, p), ig = gpu_side(p);
    pair s0 = sym(ns, 0.5f), y = poisoned(n), sT = poisoned(ns), ck = poisoned(nck);
    fwd(gpu, &d, y.g, sT.g, ck.g, &ig, s0.g);
    fwd(cpu, &d, y.c, sT.c, ck.c, &ic, s0.c);
    cmp("y", y), cmp("state_out", sT), cmp("ckpt", part(ck, 0, nstates));
    if (keeps_sa)
        cmp("ckpt sa", part(ck, nstates, n));
    op_end();

    for (int with_ckpt = 1; with_ckpt >= 0; with_ckpt--) {
        op_begin(kind == 7 ? "wkv7_backward" : "wkv6_backward", 2e-4, "B=%d T=%d H=%d N=%d chunk=%d %s%s", d.batch,
                 d.seq, d.heads, d.head_dim, d.chunk ? d.chunk : RL_WKV_DEFAULT_CHUNK,
                 with_ckpt ? "from ckpt" : "ckpt NULL (replay)", decays);
        ic = wkv_inputs(kind, &d, p), ig = gpu_side(p);
        s0 = sym(ns, 0.5f), y = poisoned(n), sT = poisoned(ns), ck = poisoned(nck);
        fwd(gpu, &d, y.g, sT.g, ck.g, &ig, s0.g);
        fwd(cpu, &d, y.c, sT.c, ck.c, &ic, s0.c);
        pair dy = sym(n, 1), dsT = sym(ns, 0.5f), ds0 = sym(ns, 1), gr[6];
        for (int i = 0; i < 6; i++)
            gr[i] = sym(n, 1);
        rl_wkv_grad gc = {gr[0].c, gr[1].c, gr[2].c, gr[3].c, gr[4].c, gr[5].c};
        rl_wkv_grad gg = {gr[0].g, gr[1].g, gr[2].g, gr[3].g, gr[4].g, gr[5].g};
        if (kind == 6)
            gc.a = gc.b = gg.a = gg.b = NULL;
        bwd(gpu, &d, &gg, ds0.g, dy.g, dsT.g, &ig, s0.g, with_ckpt ? ck.g : NULL);
        bwd(cpu, &d, &gc, ds0.c, dy.c, dsT.c, &ic, s0.c, with_ckpt ? ck.c : NULL);
        static const char *names[6] = {"dr", "dlogw", "dk", "dv", "da", "db"};
        for (int i = 0; i < (kind == 7 ? 6 : 4); i++)
            cmp(names[i], gr[i]);
        cmp("dstate_in", ds0);
        op_end();
    }
}

/* ---- RAD-RWKV mixes ---- */

static void check_rwkv7_mix(int variant, int first)
{
    rl_rwkv7_mix_dims d = {.rows = 19, .heads = 4, .kv_heads = 2, .head_dim = 64, .variant = variant,
                           .first_layer = first};
    const size_t D = (size_t)d.heads * d.head_dim, KD = (size_t)d.kv_heads * d.head_dim, R = (size_t)d.rows;
    char name[64];
    snprintf(name, sizeof name, "rwkv7_mix_forward_%c%s", variant, first ? "_first" : "");
    op_begin(name, 1e-5, "rows=%zu H=%d KVH=%d N=%d", R, d.heads, d.kv_heads, d.head_dim);
    pair k = sym(R * KD, 1), v = sym(R * KD, 1), dl = sym(R * D, 1), al = sym(R * D, 1), vl = sym(R * D, 1);
    pair w0 = sym(D, 1), a0 = sym(D, 1), v0 = sym(D, 1), kk = sym(D, 1), ka = sym(D, 1);
    rl_rwkv7_mix_in ic = {k.c, v.c, dl.c, al.c, vl.c, w0.c, a0.c, v0.c, kk.c, ka.c};
    rl_rwkv7_mix_in ig = {k.g, v.g, dl.g, al.g, vl.g, w0.g, a0.g, v0.g, kk.g, ka.g};
    pair o[5], vf = first ? poisoned(R * D) : sym(R * D, 1);
    for (int i = 0; i < 5; i++)
        o[i] = poisoned(R * D);
    rl_rwkv7_mix_out oc = {o[0].c, o[1].c, o[2].c, o[3].c, o[4].c}, og = {o[0].g, o[1].g, o[2].g, o[3].g, o[4].g};
    rl_rwkv7_mix_forward(gpu, &d, &og, vf.g, &ig);
    rl_rwkv7_mix_forward(cpu, &d, &oc, vf.c, &ic);
    static const char *on[5] = {"logw", "a", "b", "k", "v"};
    for (int i = 0; i < 5; i++)
        cmp(on[i], o[i]);
    if (first)
        cmp("v_first", vf);
    op_end_keep(); /* the backward below reads the same inputs */

    snprintf(name, sizeof name, "rwkv7_mix_backward_%c%s", variant, first ? "_first" : "");
    op_begin(name, 1e-5, "rows=%zu H=%d KVH=%d N=%d", R, d.heads, d.kv_heads, d.head_dim);
    pair gk = sym(R * KD, 1), gv = sym(R * KD, 1), gdl = sym(R * D, 1), gal = sym(R * D, 1), gvl = sym(R * D, 1);
    pair gw0 = sym(D, 1), ga0 = sym(D, 1), gv0 = sym(D, 1), gkk = sym(D, 1), gka = sym(D, 1), dvf = sym(R * D, 1);
    pair dO[5];
    for (int i = 0; i < 5; i++)
        dO[i] = sym(R * D, 1);
    vf = sym(R * D, 1);
    rl_rwkv7_mix_grad gc = {gk.c, gv.c, gdl.c, gal.c, gvl.c, gw0.c, ga0.c, gv0.c, gkk.c, gka.c};
    rl_rwkv7_mix_grad gg = {gk.g, gv.g, gdl.g, gal.g, gvl.g, gw0.g, ga0.g, gv0.g, gkk.g, gka.g};
    rl_rwkv7_mix_out dc = {dO[0].c, dO[1].c, dO[2].c, dO[3].c, dO[4].c};
    rl_rwkv7_mix_out dg = {dO[0].g, dO[1].g, dO[2].g, dO[3].g, dO[4].g};
    rl_rwkv7_mix_backward(gpu, &d, &gg, dvf.g, &dg, &ig, vf.g);
    rl_rwkv7_mix_backward(cpu, &d, &gc, dvf.c, &dc, &ic, vf.c);
    /* every gradient, also those the variant or layer leaves untouched (they must stay as they were) */
    cmp("dk", gk), cmp("dv", gv), cmp("ddlora", gdl), cmp("dalora", gal), cmp("dw0", gw0), cmp("da0", ga0);
    cmp("dk_k", gkk), cmp("dk_a", gka), cmp("dvlora", gvl), cmp("dv0", gv0), cmp("dv_first", dvf);
    op_end();
}

static void check_readout(int groupnorm)
{
    rl_readout_dims d = {.rows = 23, .heads = 4, .head_dim = 64, .groupnorm = groupnorm, .eps = 64e-5f,
                         .scale = 0.37f};
    const size_t D = (size_t)d.heads * d.head_dim, R = (size_t)d.rows, RH = R * d.heads;
    op_begin(groupnorm ? "readout_forward_groupnorm" : "readout_forward_scale", 1e-5, "rows=%zu H=%d N=%d", R,
             d.heads, d.head_dim);
    pair o = sym(R * D, 2), g = sym(R * D, 1), w = sym(D, 1), b = sym(D, 1), out = poisoned(R * D);
    pair mean = poisoned(RH), rstd = poisoned(RH);
    rl_readout_forward(gpu, &d, out.g, mean.g, rstd.g, o.g, g.g, w.g, b.g);
    rl_readout_forward(cpu, &d, out.c, mean.c, rstd.c, o.c, g.c, w.c, b.c);
    cmp("out", out);
    if (groupnorm)
        cmp("mean", mean), cmp("rstd", rstd);
    op_end();

    op_begin(groupnorm ? "readout_backward_groupnorm" : "readout_backward_scale", 1e-5, "rows=%zu H=%d N=%d", R,
             d.heads, d.head_dim);
    o = sym(R * D, 2), g = sym(R * D, 1), w = sym(D, 1), b = sym(D, 1), out = poisoned(R * D);
    mean = poisoned(RH), rstd = poisoned(RH);
    rl_readout_forward(cpu, &d, out.c, mean.c, rstd.c, o.c, g.c, w.c, b.c);
    rl_upload(gpu, mean.g, mean.c, RH * 4), rl_upload(gpu, rstd.g, rstd.c, RH * 4);
    pair dout = sym(R * D, 1), d_o = sym(R * D, 1), dg = sym(R * D, 1), dw = sym(D, 1), db = sym(D, 1);
    rl_readout_backward(gpu, &d, d_o.g, dg.g, dw.g, db.g, dout.g, o.g, g.g, w.g, b.g, mean.g, rstd.g);
    rl_readout_backward(cpu, &d, d_o.c, dg.c, dw.c, db.c, dout.c, o.c, g.c, w.c, b.c, mean.c, rstd.c);
    cmp("d_o", d_o), cmp("dg", dg);
    cmp("dweight", dw), cmp("dbias", db); /* without groupnorm: untouched on both sides */
    op_end();
}

static void check_rwkv6_parts(void)
{
    rl_shift_dims d = {.batch = 2, .seq = 31, .dim = 200};
    const size_t R = (size_t)d.batch * d.seq, D = (size_t)d.dim;
    op_begin("tokenshift_forward", 1e-6, "B=%d T=%d dim=%d", d.batch, d.seq, d.dim);
    pair u = sym(R * D, 1), st = sym((size_t)d.batch * D, 1), mix = sym(D, 1), out = poisoned(R * D);
    rl_tokenshift_forward(gpu, &d, out.g, u.g, st.g, mix.g), rl_tokenshift_forward(cpu, &d, out.c, u.c, st.c, mix.c);
    cmp("out", out);
    op_end_keep(); /* u, st, mix: read by the backward and ddlerp below */

    op_begin("tokenshift_backward", 1e-5, "B=%d T=%d dim=%d", d.batch, d.seq, d.dim);
    pair dout = sym(R * D, 1), du = sym(R * D, 1), dst = sym((size_t)d.batch * D, 1), dmix = sym(D, 1);
    rl_tokenshift_backward(gpu, &d, du.g, dst.g, dmix.g, dout.g, u.g, st.g, mix.g);
    rl_tokenshift_backward(cpu, &d, du.c, dst.c, dmix.c, dout.c, u.c, st.c, mix.c);
    cmp("du", du), cmp("dstate", dst), cmp("dmix", dmix);
    op_end_keep();

    const int rank = 32;
    op_begin("rwkv6_ddlerp_forward", 1e-5, "B=%d T=%d dim=%d rank=%d", d.batch, d.seq, d.dim, rank);
    pair x[5], maa[5], s = sym(R * 5 * rank, 1), w2 = sym((size_t)5 * rank * D, 0.3f);
    float *xc[5], *xg[5];
    const float *mc[5], *mg[5];
    for (int i = 0; i < 5; i++) {
        x[i] = poisoned(R * D), maa[i] = sym(D, 1);
        xc[i] = x[i].c, xg[i] = x[i].g, mc[i] = maa[i].c, mg[i] = maa[i].g;
    }
    rl_rwkv6_ddlerp_forward(gpu, &d, rank, xg, u.g, st.g, mg, s.g, w2.g);
    rl_rwkv6_ddlerp_forward(cpu, &d, rank, xc, u.c, st.c, mc, s.c, w2.c);
    for (int i = 0; i < 5; i++)
        cmp("x[c]", x[i]);
    op_end();

    op_begin("rwkv6_ddlerp_backward", 1e-5, "B=%d T=%d dim=%d rank=%d", d.batch, d.seq, d.dim, rank);
    u = sym(R * D, 1), st = sym((size_t)d.batch * D, 1), s = sym(R * 5 * rank, 1), w2 = sym((size_t)5 * rank * D, 0.3f);
    pair dmaa[5], dx[5], ds = sym(R * 5 * rank, 1), dw2 = sym((size_t)5 * rank * D, 1);
    du = sym(R * D, 1), dst = sym((size_t)d.batch * D, 1);
    float *dmc[5], *dmg[5];
    const float *dxc[5], *dxg[5];
    for (int i = 0; i < 5; i++) {
        maa[i] = sym(D, 1), dmaa[i] = sym(D, 1), dx[i] = sym(R * D, 1);
        mc[i] = maa[i].c, mg[i] = maa[i].g, dmc[i] = dmaa[i].c, dmg[i] = dmaa[i].g, dxc[i] = dx[i].c,
        dxg[i] = dx[i].g;
    }
    rl_rwkv6_ddlerp_backward(gpu, &d, rank, du.g, dst.g, dmg, ds.g, dw2.g, dxg, u.g, st.g, mg, s.g, w2.g);
    rl_rwkv6_ddlerp_backward(cpu, &d, rank, du.c, dst.c, dmc, ds.c, dw2.c, dxc, u.c, st.c, mc, s.c, w2.c);
    cmp("du", du), cmp("dstate", dst), cmp("ds", ds), cmp("dw2", dw2);
    for (int i = 0; i < 5; i++)
        cmp("dmaa[c]", dmaa[i]);
    op_end();

    rl_rwkv6_mix_dims m = {.rows = 21, .heads = 4, .kv_heads = 2, .head_dim = 64, .q_scale = 0.125f};
    const size_t MD = (size_t)m.heads * m.head_dim, KD = (size_t)m.kv_heads * m.head_dim, MR = (size_t)m.rows;
    op_begin("rwkv6_mix_forward", 1e-6, "rows=%zu H=%d KVH=%d N=%d", MR, m.heads, m.kv_heads, m.head_dim);
    pair k = sym(MR * KD, 1), v = sym(MR * KD, 1), q = sym(MR * MD, 1), dl = sym(MR * MD, 1), dec = sym(MD, 1.5f);
    pair lw = poisoned(MR * MD), kt = poisoned(MR * MD), vt = poisoned(MR * MD), qt = poisoned(MR * MD);
    rl_rwkv6_mix_forward(gpu, &m, lw.g, kt.g, vt.g, qt.g, k.g, v.g, q.g, dl.g, dec.g);
    rl_rwkv6_mix_forward(cpu, &m, lw.c, kt.c, vt.c, qt.c, k.c, v.c, q.c, dl.c, dec.c);
    cmp("logw", lw), cmp("kt", kt), cmp("vt", vt), cmp("qt", qt);
    op_end_keep(); /* k, dl, dec: read by the backward */

    op_begin("rwkv6_mix_backward", 1e-5, "rows=%zu H=%d KVH=%d N=%d", MR, m.heads, m.kv_heads, m.head_dim);
    pair dk = sym(MR * KD, 1), dv = sym(MR * KD, 1), dq = sym(MR * MD, 1), ddl = sym(MR * MD, 1), ddec = sym(MD, 1);
    pair dlw = sym(MR * MD, 1), dkt = sym(MR * MD, 1), dvt = sym(MR * MD, 1), dqt = sym(MR * MD, 1);
    rl_rwkv6_mix_backward(gpu, &m, dk.g, dv.g, dq.g, ddl.g, ddec.g, dlw.g, dkt.g, dvt.g, dqt.g, k.g, dl.g, dec.g);
    rl_rwkv6_mix_backward(cpu, &m, dk.c, dv.c, dq.c, ddl.c, ddec.c, dlw.c, dkt.c, dvt.c, dqt.c, k.c, dl.c, dec.c);
    cmp("dk", dk), cmp("dv", dv), cmp("dq", dq), cmp("ddlora", ddl), cmp("ddecay", ddec);
    op_end();
}

int main(void)
{
    const char *dev = getenv("RL_GPU_CHECK_DEVICE");
    if (dev && *dev && strcmp(dev, "cpu")) {
        fprintf(stderr, "gpu_ops_check: RL_GPU_CHECK_DEVICE=%s: the only value is cpu (both sides on the CPU "
                "backend); unset it to check the GPU\n", dev);
        return 2;
    }
    dry = dev && *dev;
#ifdef RL_HAVE_CUDA
    int count = 0;
    cudaError_t ce = cudaSuccess;
    if (!dry && ((ce = cudaGetDeviceCount(&count)) != cudaSuccess || count == 0)) {
        printf("gpu_ops_check: SKIP: no CUDA device (%s)\n",
               ce != cudaSuccess ? cudaGetErrorString(ce) : "cudaGetDeviceCount found 0 devices");
        return 77;
    }
#else
    if (!dry) {
        printf("gpu_ops_check: SKIP: built without CUDA (RL_GPU_CHECK_DEVICE=cpu checks this harness)\n");
        return 77;
    }
#endif
    const char *seed_env = getenv("RL_GPU_CHECK_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    rng_state = seed ? seed : 1;
    printf("gpu_ops_check: seed %llu (RL_GPU_CHECK_SEED=%llu repeats this run)\n", (unsigned long long)seed,
           (unsigned long long)seed);

    char err[512];
    rl_backend_options oc = {.kind = RL_BACKEND_CPU}, og = {.kind = dry ? RL_BACKEND_CPU : RL_BACKEND_CUDA};
    if (rl_backend_create(&cpu, &oc, err, sizeof err) < 0) {
        printf("gpu_ops_check: FAIL: CPU backend: %s\n", err);
        return 1;
    }
    if (rl_backend_create(&gpu, &og, err, sizeof err) < 0) {
        printf("gpu_ops_check: FAIL: a GPU is present but the CUDA backend does not start: %s\n", err);
        rl_backend_destroy(cpu);
        return 1;
    }
#ifdef RL_HAVE_CUDA
    struct cudaDeviceProp prop;
    if (!dry && cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        printf("gpu_ops_check: device 0: %s, backend \"%s\" vs \"%s\"\n", prop.name, rl_backend_name(gpu),
               rl_backend_name(cpu));
#endif
    if (dry)
        printf("gpu_ops_check: RL_GPU_CHECK_DEVICE=cpu: both sides on the CPU backend (a check of the harness)\n");

    check_memory();
    check_casts();
    check_elementwise();
    check_matmul();
    check_bf16_weights();
    check_layers();
    check_attention();
    check_losses();
    check_wkv(7, 64, 0);
    check_wkv(6, 64, 0);
    check_wkv(7, 128, 0);
    check_wkv(6, 128, 48);
    check_wkv(6, 128, 0);
    wkv6_mild = 1; /* the default wkv6 backward's other pick */
    check_wkv(6, 64, 0);
    check_wkv(6, 128, 0);
    wkv6_mild = 0;
    check_wkv(7, 64, 48);
    check_wkv(7, 40, 0);
    check_rwkv7_mix('a', 1);
    check_rwkv7_mix('a', 0);
    check_rwkv7_mix('b', 1);
    check_rwkv7_mix('b', 0);
    check_readout(1);
    check_readout(0);
    check_rwkv6_parts();

    rl_backend_destroy(gpu);
    rl_backend_destroy(cpu);
    printf("gpu_ops_check: %d passed, %d failed (seed %llu)\n", n_pass, n_fail, (unsigned long long)seed);
    return n_fail ? 1 : 0;
}
