/* gpu_bench.c — CUDA backend kernel timings against ceilings measured in the same run.
 *
 * Each op is timed with cudaEvents on the backend's stream after 3 warm-up calls; the median of 20 runs
 * is reported (fewer, and said so, when one call takes over 250 ms). Tensors are 256 MiB (5× the H100's
 * 50 MB L2), so memory-bound ops report HBM bandwidth: achieved GB/s counts the bytes an ideal kernel
 * must move, against a device-to-device cudaMemcpy of the same size. GEMM-like ops report TFLOP/s against
 * a big BF16 cuBLASLt product (8192³ through rl_matmul). wkv7 forward+backward runs at the KERNELS.md
 * shape B=8, T=4096, H=64, N=64 (target ≤ 17 ms on an H100), then at head size 128 (H=32, the same hidden
 * size). Exit 77 without a GPU. */
#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.h"
#include "kernels.h"

static rl_backend *be;
static cudaStream_t st;
static cudaEvent_t ev0, ev1;
static double copy_gbs = 0, gemm_tflops = 0;
static int failed;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int check(const char *what)
{
    char err[512];
    if (rl_backend_status(be, err, sizeof err)) {
        printf("%-28s ERROR: %s\n", what, err);
        rl_backend_clear_error(be);
        failed = 1;
        return -1;
    }
    return 0;
}

static float event_ms(void)
{
    float ms = 0;
    cudaEventSynchronize(ev1);
    cudaEventElapsedTime(&ms, ev0, ev1);
    return ms;
}

/* Times `call` (a statement queued on the backend's stream); sets med_ms, or -1 on an error. */
#define TIME_OP(name, med_ms, call)                                                                          \
    do {                                                                                                     \
        double t_[20];                                                                                       \
        int runs_ = 20;                                                                                      \
        med_ms = -1;                                                                                         \
        for (int w_ = 0; w_ < 3; w_++) {                                                                     \
            cudaEventRecord(ev0, st);                                                                        \
            call;                                                                                            \
            cudaEventRecord(ev1, st);                                                                        \
            if (w_ == 0 && event_ms() > 250.0f)                                                              \
                runs_ = 5;                                                                                   \
        }                                                                                                    \
        if (check(name))                                                                                     \
            break;                                                                                           \
        for (int r_ = 0; r_ < runs_; r_++) {                                                                 \
            cudaEventRecord(ev0, st);                                                                        \
            call;                                                                                            \
            cudaEventRecord(ev1, st);                                                                        \
            t_[r_] = event_ms();                                                                             \
        }                                                                                                    \
        if (check(name))                                                                                     \
            break;                                                                                           \
        qsort(t_, (size_t)runs_, sizeof t_[0], cmp_double);                                                  \
        med_ms = t_[runs_ / 2];                                                                              \
        if (runs_ < 20)                                                                                      \
            printf("  (%s: %d runs only, one call takes %.0f ms)\n", name, runs_, med_ms);                   \
    } while (0)

static void report_bw(const char *name, const char *shape, double ms, double bytes)
{
    if (ms < 0)
        return;
    double gbs = bytes / (ms * 1e-3) / 1e9;
    printf("%-28s %-34s %9.3f ms %9.1f GB/s  %5.1f%% of copy\n", name, shape, ms, gbs,
           copy_gbs > 0 ? 100.0 * gbs / copy_gbs : 0.0);
}

static void report_flops(const char *name, const char *shape, double ms, double flops)
{
    if (ms < 0)
        return;
    double tf = flops / (ms * 1e-3) / 1e12;
    printf("%-28s %-34s %9.3f ms %9.1f TFLOP/s %5.1f%% of bf16 GEMM\n", name, shape, ms, tf,
           gemm_tflops > 0 ? 100.0 * tf / gemm_tflops : 0.0);
}

static void *dev(size_t bytes)
{
    void *p = rl_malloc(be, bytes);
    if (!p) {
        check("rl_malloc");
        exit(1);
    }
    return p;
}

/* device buffer of n floats, uniform in [lo, hi) (generated once on the host in 1 Mi-float slabs) */
static float *dev_uniform(size_t n, float lo, float hi)
{
    static uint64_t s = 0x243f6a8885a308d3ull;
    float *d = dev(n * 4);
    const size_t slab = 1u << 20;
    float *h = malloc(slab * 4);
    for (size_t i = 0; i < slab; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        h[i] = lo + (hi - lo) * (float)((double)(s >> 11) / 9007199254740992.0);
    }
    for (size_t o = 0; o < n; o += slab)
        rl_upload(be, d + o, h, (n - o < slab ? n - o : slab) * 4);
    rl_backend_status(be, NULL, 0);
    free(h);
    return d;
}

static void ceilings(void)
{
    const size_t bytes = (size_t)1 << 30;
    void *a = dev(bytes), *b = dev(bytes);
    double ms;
    TIME_OP("copy", ms, cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, st));
    if (ms > 0)
        copy_gbs = 2.0 * (double)bytes / (ms * 1e-3) / 1e9;
    printf("%-28s %-34s %9.3f ms %9.1f GB/s  (ceiling: read + write)\n", "ceiling_d2d_copy", "1 GiB", ms,
           copy_gbs);
    rl_free(be, a), rl_free(be, b);

    const int n = 8192;
    void *A = dev((size_t)n * n * 2), *B = dev((size_t)n * n * 2), *C = dev((size_t)n * n * 2);
    rl_zero(be, A, (size_t)n * n * 2), rl_zero(be, B, (size_t)n * n * 2);
    rl_gemm g = {n, n, n, 0, 1, 1.0f, 0.0f, 0, 0, 0, 0, RL_DTYPE_BF16, RL_DTYPE_BF16, RL_DTYPE_BF16};
    TIME_OP("gemm", ms, rl_matmul(be, &g, C, A, B, NULL));
    if (ms > 0)
        gemm_tflops = 2.0 * n * (double)n * n / (ms * 1e-3) / 1e12;
    printf("%-28s %-34s %9.3f ms %9.1f TFLOP/s (ceiling)\n", "ceiling_bf16_gemm", "8192^3 NT bf16->bf16", ms,
           gemm_tflops);
    rl_free(be, A), rl_free(be, B), rl_free(be, C);
}

static void bench_memory_bound(void)
{
    const size_t N = (size_t)64 << 20; /* 64 Mi floats = 256 MiB per tensor */
    const int rows = 16384, dim = 4096; /* rows·dim = N */
    float *x = dev_uniform(N, -1, 1), *y = dev_uniform(N, -1, 1), *z = dev_uniform(N, -1, 1);
    float *w = dev_uniform(dim, 0.5f, 1.5f), *r = dev_uniform(rows, 0.5f, 1.5f), *dw = dev_uniform(dim, 0, 1);
    double ms, dsum;
    char shape[64];
    snprintf(shape, sizeof shape, "n=%zu", N);
    TIME_OP("add", ms, rl_add(be, z, x, y, N));
    report_bw("add", shape, ms, 12.0 * N);
    TIME_OP("accumulate", ms, rl_accumulate(be, z, x, N));
    report_bw("accumulate", shape, ms, 12.0 * N);
    TIME_OP("scale", ms, rl_scale(be, z, 0.999f, N));
    report_bw("scale", shape, ms, 8.0 * N);
    TIME_OP("sum_squares", ms, rl_sum_squares(be, &dsum, x, N));
    report_bw("sum_squares (sync)", shape, ms, 4.0 * N);
    TIME_OP("cast", ms, rl_cast(be, z, RL_DTYPE_BF16, x, RL_DTYPE_F32, N));
    report_bw("cast_f32_to_bf16", shape, ms, 6.0 * N);
    TIME_OP("swiglu_forward", ms, rl_swiglu_forward(be, z, x, y, N));
    report_bw("swiglu_forward", shape, ms, 12.0 * N);
    float *m = dev_uniform(N, -0.01f, 0.01f), *v = dev_uniform(N, 0, 0.01f);
    TIME_OP("swiglu_backward", ms, rl_swiglu_backward(be, m, v, z, x, y, N));
    report_bw("swiglu_backward", shape, ms, 28.0 * N);
    rl_adamw_params hp = {.lr = 1e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.0f, .step = 1};
    rl_zero(be, m, N * 4), rl_zero(be, v, N * 4);
    TIME_OP("adamw", ms, rl_adamw_update(be, z, x, m, v, N, &hp, 1.0f));
    report_bw("adamw_update", shape, ms, 28.0 * N);

    snprintf(shape, sizeof shape, "rows=%d dim=%d", rows, dim);
    TIME_OP("rmsnorm_forward", ms, rl_rmsnorm_forward(be, z, r, x, w, rows, dim, 1e-5f));
    report_bw("rmsnorm_forward", shape, ms, 8.0 * N);
    TIME_OP("rmsnorm_backward", ms, rl_rmsnorm_backward(be, z, dw, y, x, w, r, rows, dim));
    report_bw("rmsnorm_backward", shape, ms, 16.0 * N);
    TIME_OP("bias_backward", ms, rl_bias_backward(be, dw, x, rows, dim));
    report_bw("bias_backward", shape, ms, 4.0 * N);
    TIME_OP("l2_distance_forward", ms, rl_l2_distance_forward(be, r, x, y, rows, dim));
    report_bw("l2_distance_forward", shape, ms, 8.0 * N);
    TIME_OP("mse_backward", ms, rl_mse_backward(be, z, x, y, 1.0f, rows, dim));
    report_bw("mse_backward", shape, ms, 16.0 * N);

    int32_t *ids = (int32_t *)dev(rows * 4);
    rl_zero(be, ids, rows * 4); /* id 0 everywhere: the worst case for the backward's atomics */
    snprintf(shape, sizeof shape, "rows=%d dim=%d", rows, dim);
    TIME_OP("embedding_forward", ms, rl_embedding_forward(be, z, ids, y, rows, rows, dim));
    report_bw("embedding_forward", shape, ms, 8.0 * N);
    TIME_OP("embedding_backward", ms, rl_embedding_backward(be, z, x, ids, rows, rows, dim));
    report_bw("embedding_backward (1 id)", shape, ms, 4.0 * N);

    const int B = 4, T = 4096, H = 32, hd = 128;
    float *cs = dev_uniform((size_t)T * hd / 2, -1, 1), *sn = dev_uniform((size_t)T * hd / 2, -1, 1);
    snprintf(shape, sizeof shape, "B=%d T=%d H=%d hd=%d", B, T, H, hd);
    TIME_OP("rope_forward", ms, rl_rope_forward(be, z, cs, sn, B, T, H, hd));
    report_bw("rope_forward", shape, ms, 8.0 * N);

    const int vr = 512, vocab = 131072;
    int32_t *tg = (int32_t *)dev(vr * 4);
    rl_zero(be, tg, vr * 4);
    snprintf(shape, sizeof shape, "rows=%d vocab=%d", vr, vocab);
    TIME_OP("cross_entropy", ms, rl_cross_entropy(be, r, z, x, tg, vr, vocab, 1.0f));
    report_bw("cross_entropy (+dlogits)", shape, ms, 8.0 * N);
    TIME_OP("kl_divergence", ms, rl_kl_divergence(be, r, z, x, y, vr, vocab, 1.0f));
    report_bw("kl_divergence (+dlogits)", shape, ms, 12.0 * N);

    rl_free(be, cs), rl_free(be, sn), rl_free(be, tg), rl_free(be, ids);
    rl_free(be, x), rl_free(be, y), rl_free(be, z), rl_free(be, w), rl_free(be, r), rl_free(be, dw);
    rl_free(be, m), rl_free(be, v);
}

static void bench_gemm(void)
{
    double ms;
    const int M = 16384, N = 4096, K = 4096;
    void *A = dev((size_t)M * K * 2), *W = dev((size_t)N * K * 2), *C = dev((size_t)M * N * 4);
    float *bias = dev_uniform(N, -1, 1);
    rl_zero(be, A, (size_t)M * K * 2), rl_zero(be, W, (size_t)N * K * 2);
    char shape[64];
    snprintf(shape, sizeof shape, "M=%d N=%d K=%d NT +bias", M, N, K);
    rl_gemm g = {M, N, K, 0, 1, 1.0f, 0.0f, 0, 0, 0, 0, RL_DTYPE_BF16, RL_DTYPE_BF16, RL_DTYPE_F32};
    TIME_OP("matmul bf16->f32", ms, rl_matmul(be, &g, C, A, W, bias));
    report_flops("matmul_bf16_f32_linear", shape, ms, 2.0 * M * N * (double)K);
    g.dtype_c = RL_DTYPE_BF16;
    TIME_OP("matmul bf16->bf16", ms, rl_matmul(be, &g, C, A, W, bias));
    report_flops("matmul_bf16_bf16_linear", shape, ms, 2.0 * M * N * (double)K);
    rl_free(be, A), rl_free(be, W), rl_free(be, C), rl_free(be, bias);

    const int n = 4096;
    float *a = dev_uniform((size_t)n * n, -1, 1), *b = dev_uniform((size_t)n * n, -1, 1), *c = dev((size_t)n * n * 4);
    rl_gemm f = {n, n, n, 0, 0, 1.0f, 0.0f, 0, 0, 0, 0, RL_DTYPE_F32, RL_DTYPE_F32, RL_DTYPE_F32};
    TIME_OP("matmul f32", ms, rl_matmul(be, &f, c, a, b, NULL));
    report_flops("matmul_f32 (exact fp32)", "4096^3 NN", ms, 2.0 * n * n * (double)n);
    rl_free(be, a), rl_free(be, b), rl_free(be, c);
}

static void bench_attention(void)
{
    double ms;
    rl_attn_dims d = {.batch = 1, .seq = 4096, .heads = 32, .kv_heads = 8, .head_dim = 128, .scale = 0.0883883f};
    const size_t nq = (size_t)d.batch * d.seq * d.heads * d.head_dim, nk = nq / 4,
                 nl = (size_t)d.batch * d.heads * d.seq;
    float *q = dev_uniform(nq, -1, 1), *k = dev_uniform(nk, -1, 1), *v = dev_uniform(nk, -1, 1);
    float *o = dev(nq * 4), *lse = dev(nl * 4), *dq = dev(nq * 4), *dk = dev(nk * 4), *dv = dev(nk * 4),
          *delta = dev(nl * 4);
    rl_zero(be, dq, nq * 4), rl_zero(be, dk, nk * 4), rl_zero(be, dv, nk * 4);
    const double causal = 2.0 * d.batch * d.heads * (double)d.seq * d.seq * d.head_dim; /* 2 products, half */
    TIME_OP("attention_forward", ms, rl_attention_forward(be, &d, o, lse, q, k, v));
    report_flops("attention_forward", "B=1 T=4096 H=32 KVH=8 D=128", ms, causal);
    TIME_OP("attention_backward", ms, rl_attention_backward(be, &d, dq, dk, dv, delta, q, o, lse, q, k, v));
    report_flops("attention_backward", "B=1 T=4096 H=32 KVH=8 D=128", ms, 2.5 * causal);
    rl_attn_dims d16 = d; /* a teacher's under bf16 autocast (RADLADS_ATTN_BF16=0: the fp32 kernel, the peer) */
    d16.bf16 = 1;
    TIME_OP("attention_forward_bf16", ms, rl_attention_forward(be, &d16, o, lse, q, k, v));
    report_flops("attention_forward_bf16", "B=1 T=4096 H=32 KVH=8 D=128", ms, causal);
    d16.heads = 64, d16.kv_heads = 16, d16.head_dim = 64; /* head size 64 (Qwen2.5-0.5B's): q, k, v, o as they are */
    float *lse64 = dev((size_t)d16.batch * d16.heads * d16.seq * 4); /* lse has twice the heads */
    TIME_OP("attention_forward_bf16", ms, rl_attention_forward(be, &d16, o, lse64, q, k, v));
    report_flops("attention_forward_bf16", "B=1 T=4096 H=64 KVH=16 D=64", ms, causal);
    rl_free(be, lse64);
    float *f[] = {q, k, v, o, lse, dq, dk, dv, delta};
    for (int i = 0; i < 9; i++)
        rl_free(be, f[i]);
}

/* wkv at `batch` sequences of `seq` tokens of `hidden` channels: B=8 T=4096 and hidden 4096 with heads of 64 is
 * KERNELS.md's shape (the target), heads of 128 Qwen2.5-7B's; T=1024 at hidden 2048 the distill benchmark's step (256
 * (b, h) pairs: the launcher's few-pairs kernels). Checkpoints every `chunk` tokens (0: the default, 16). */
/* The log-decays a wkv bench runs on. DECAY_MILD: uniform in (−0.6, −0.05), about RAD-RWKV7's range (its decays are
 * ≥ e^−0.6065). RAD-RWKV6's (METHOD.md: log w = max(−exp(d), −5), d = λ + a LoRA that is 0 at initialisation) are
 * another matter, and the kernels' choices depend on them (the per-row backwards step the state back only where a
 * segment's decays allow): DECAY_RAD6_INIT, the decays of layer 14 of 28 as converted (λ[n] = −6 + 5·(n/(D−1))^(0.7 +
 * 1.3·ℓ/(L−1)) per channel n of D = hidden, every token the same); DECAY_STEEP: uniform in (−5, −0.05), the clamp's
 * whole range, the worst case for those kernels; DECAY_STEEP_HEADS: −0.3 everywhere but the last quarter of the
 * channels (of the heads), −2 there (every 8-token group of those heads steep, a quarter of all: the per-row
 * backward's wave lasts as long as its steep pairs, which the wkv6 default's pick has to see). */
enum { DECAY_MILD, DECAY_RAD6_INIT, DECAY_STEEP, DECAY_STEEP_HEADS };

static float *dev_decays(size_t n, int hidden, int decay)
{
    if (decay == DECAY_MILD)
        return dev_uniform(n, -0.6f, -0.05f);
    if (decay == DECAY_STEEP)
        return dev_uniform(n, -5.0f, -0.05f);
    /* one token's decays, repeated: n is a whole number of tokens (hidden channels each), uploaded 256 tokens at a
     * time */
    const size_t tokens = 256, slab = tokens * (size_t)hidden;
    float *d = dev(n * 4), *h = malloc(slab * 4);
    if (!h || hidden < 2 || n % (size_t)hidden) {
        fprintf(stderr, "gpu_bench: dev_decays: out of memory, or %zu floats are not tokens of %d\n", n, hidden);
        exit(1);
    }
    const double expo = 0.7 + 1.3 * 14.0 / 27.0;
    for (int c = 0; c < hidden; c++) {
        const double lambda = -6.0 + 5.0 * pow((double)c / (hidden - 1), expo), lw = -exp(lambda);
        h[c] = decay == DECAY_STEEP_HEADS ? (c >= hidden / 4 * 3 ? -2.0f : -0.3f) : (float)(lw < -5.0 ? -5.0 : lw);
    }
    for (size_t t = 1; t < tokens; t++)
        memcpy(h + t * hidden, h, (size_t)hidden * 4);
    for (size_t o = 0; o < n; o += slab)
        rl_upload(be, d + o, h, (n - o < slab ? n - o : slab) * 4);
    rl_backend_status(be, NULL, 0);
    free(h);
    return d;
}

static void bench_wkv_decays(int kind, int batch, int seq, int hidden, int head_dim, int chunk, int decay)
{
    double fwd_ms, bwd_ms;
    rl_wkv_dims d = {.batch = batch, .seq = seq, .heads = hidden / head_dim, .head_dim = head_dim, .chunk = chunk};
    const size_t n = (size_t)d.batch * d.seq * d.heads * d.head_dim;
    const size_t nck = rl_wkv_checkpoint_floats(&d, kind);
    /* r = k = v = dy share one buffer (inputs are read-only); a = −0.2x, b = 0.2x point opposite ways */
    float *x = dev_uniform(n, -0.1f, 0.1f), *lw = dev_decays(n, hidden, decay), *a = dev(n * 4), *b = dev(n * 4);
    rl_copy(be, a, x, n * 4), rl_scale(be, a, -0.2f, n);
    rl_copy(be, b, x, n * 4), rl_scale(be, b, 0.2f, n);
    float *y = dev(n * 4), *ck = dev(nck * 4), *gr[6];
    for (int i = 0; i < 6; i++) {
        gr[i] = dev(n * 4);
        rl_zero(be, gr[i], n * 4);
    }
    rl_wkv_in in = {x, lw, x, x, kind == 7 ? a : NULL, kind == 7 ? b : NULL};
    rl_wkv_grad g = {gr[0], gr[1], gr[2], gr[3], kind == 7 ? gr[4] : NULL, kind == 7 ? gr[5] : NULL};
    const char *fn = kind == 7 ? "wkv7_forward" : "wkv6_forward", *bn = kind == 7 ? "wkv7_backward" : "wkv6_backward";
    if (kind == 7)
        TIME_OP(fn, fwd_ms, rl_wkv7_forward(be, &d, y, NULL, ck, &in, NULL));
    else
        TIME_OP(fn, fwd_ms, rl_wkv6_forward(be, &d, y, NULL, ck, &in, NULL));
    if (kind == 7)
        TIME_OP(bn, bwd_ms, rl_wkv7_backward(be, &d, &g, NULL, x, NULL, &in, NULL, ck));
    else
        TIME_OP(bn, bwd_ms, rl_wkv6_backward(be, &d, &g, NULL, x, NULL, &in, NULL, ck));
    /* bytes an ideal kernel moves per token-head, fp32 I/O: fwd reads 6 (wkv6: 4) N-vectors, writes y and
     * N²/chunk of checkpoint; bwd reads them again plus dy and the checkpoint, writes 6 (4) grads */
    const double th = (double)d.batch * d.seq * d.heads, N = d.head_dim, vec = kind == 7 ? 6 : 4;
    const double ck_b = 4.0 * N * N / (chunk ? chunk : RL_WKV_DEFAULT_CHUNK) + (kind == 7 ? 4.0 * N : 0.0); /* + sa */
    char shape[64], lpart[16] = "";
    if (chunk)
        snprintf(lpart, sizeof lpart, " L=%d", chunk);
    snprintf(shape, sizeof shape, "B=%d T=%d H=%d N=%d%s%s", d.batch, d.seq, d.heads, d.head_dim, lpart,
             decay == DECAY_RAD6_INIT ? " rad6-init" : decay == DECAY_STEEP ? " steep"
                                              : decay == DECAY_STEEP_HEADS ? " steep-heads" : "");
    report_bw(fn, shape, fwd_ms, th * (4.0 * N * (vec + 1) + ck_b));
    report_bw(bn, shape, bwd_ms, th * (4.0 * N * (2 * vec + 1) + ck_b));
    if (fwd_ms > 0 && bwd_ms > 0)
        printf("%-28s %-34s %9.3f ms %s\n", kind == 7 ? "wkv7_fwd+bwd" : "wkv6_fwd+bwd", shape, fwd_ms + bwd_ms,
               kind == 7 && batch == 8 && head_dim == 64 && !chunk && decay == DECAY_MILD && seq == 4096 && hidden == 4096 ? (fwd_ms + bwd_ms <= 17.0 ? "(target <= 17 ms on H100: met)"
                                                    : "(target <= 17 ms on H100: NOT met)")
                         : "");
    rl_free(be, x), rl_free(be, lw), rl_free(be, a), rl_free(be, b), rl_free(be, y), rl_free(be, ck);
    for (int i = 0; i < 6; i++)
        rl_free(be, gr[i]);
}

static void bench_wkv(int kind, int batch, int seq, int hidden, int head_dim, int chunk)
{
    bench_wkv_decays(kind, batch, seq, hidden, head_dim, chunk, DECAY_MILD);
}

int main(int argc, char **argv)
{
    /* `gpu_bench wkv`: the recurrences alone; `gpu_bench attn`: attention alone (run.sh's peers under the knobs);
     * `gpu_bench wkv7b`: wkv7 at the per-GPU shapes of a Qwen2.5-7B conversion alone; `gpu_bench wkv6d`: wkv6 on
     * three kinds of decays (dev_decays) alone */
    const int only_wkv = argc > 1 && !strcmp(argv[1], "wkv"), only_attn = argc > 1 && !strcmp(argv[1], "attn");
    const int only_7b = argc > 1 && !strcmp(argv[1], "wkv7b"), only_6d = argc > 1 && !strcmp(argv[1], "wkv6d");
    if (argc > 1 && !only_wkv && !only_attn && !only_7b && !only_6d) {
        fprintf(stderr, "usage: gpu_bench [wkv|attn|wkv7b|wkv6d]\n");
        return 2;
    }
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess || count == 0) {
        printf("gpu_bench: SKIP: no CUDA device (%s)\n",
               ce != cudaSuccess ? cudaGetErrorString(ce) : "cudaGetDeviceCount found 0 devices");
        return 77;
    }
    char err[512];
    rl_backend_options opt = {.kind = RL_BACKEND_CUDA, .device = 0};
    if (rl_backend_create(&be, &opt, err, sizeof err) < 0) {
        printf("gpu_bench: FAIL: %s\n", err);
        return 1;
    }
    st = rl__cuda_stream(be);
    cudaEventCreate(&ev0), cudaEventCreate(&ev1);
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("gpu_bench: %s, %d SMs, L2 %d MiB; median of 20 runs after 3 warm-ups, CUDA events\n", prop.name,
           prop.multiProcessorCount, prop.l2CacheSize >> 20);
    if (only_6d) {
        /* wkv6 on RAD-RWKV6's own decays, as converted and at the clamp's whole range (the mild ones of `wkv` as the
         * reference): what decides whether its backward's default stays the chunked kernel (run.sh times
         * RADLADS_WKV_CHUNKED=0 as the peer) */
        for (int decay = DECAY_MILD; decay <= DECAY_STEEP_HEADS; decay++) {
            bench_wkv_decays(6, 8, 4096, 4096, 64, 0, decay);
            bench_wkv_decays(6, 8, 4096, 4096, 128, 0, decay);
        }
        goto done;
    }
    if (only_7b) {
        /* Qwen2.5-7B's 28 heads of 128 (hidden 3584) at the released recipe's per-GPU batches (METHOD.md): step 1
         * 4 × 512 tokens (112 (b, h) pairs), step 2 12 × 512 (336), step 3 2 × 16384 (56): fewer pairs than an
         * H100 has SMs, where RADLADS_WKV_SPLIT spreads each pair's value rows over 2 or 4 blocks */
        bench_wkv(7, 4, 512, 3584, 128, 0);
        bench_wkv(7, 12, 512, 3584, 128, 0);
        bench_wkv(7, 2, 16384, 3584, 128, 0);
        goto done;
    }
    if (!only_wkv && !only_attn) {
        ceilings();
        bench_memory_bound();
        bench_gemm();
    }
    if (!only_wkv)
        bench_attention();
    if (!only_attn) {
        bench_wkv(7, 8, 4096, 4096, 64, 0);
        bench_wkv(6, 8, 4096, 4096, 64, 0);
        bench_wkv(7, 8, 4096, 4096, 128, 0);
        bench_wkv(6, 8, 4096, 4096, 128, 0);
        /* wkv7 with checkpoints every 8 tokens (twice their memory): RAD-RWKV7's decays let the register backward
         * step back over every chunk from the next checkpoint with the forward's sa, recomputing nothing */
        bench_wkv(7, 8, 4096, 4096, 64, 8);
        /* the distill benchmark's shape: what the launcher picks with few pairs (run.sh's peers force the others) */
        bench_wkv(7, 8, 1024, 2048, 64, 0);
    }
done:
    cudaEventDestroy(ev0), cudaEventDestroy(ev1);
    rl_backend_destroy(be);
    return failed;
}
