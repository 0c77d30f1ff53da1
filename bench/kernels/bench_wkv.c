/* bench_wkv.c — wkv7 / wkv6 CPU throughput in token-heads/s (forward, forward+backward)
 * at N = 64 and 128, against the naive scalar recurrence in the same run, and a
 * RAD-RWKV7 time-mix layer training step (forward + backward) for the PyTorch
 * comparison in bench_tmix_torch.py. Medians of 5 runs.
 *
 *   OMP_NUM_THREADS=2 <builddir>/bench/kernels/bench_wkv [--threads 2] [--seq 1024] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "student.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float *rnd(size_t n, float lo, float hi, uint64_t *s)
{
    float *p = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = lo + (hi - lo) * (float)((*s >> 40) + 1) / 16777218.0f;
    }
    return p;
}

/* The naive scalar RWKV-7 / RWKV-6 recurrence: one thread, no SIMD hints, exp per use. */
static void naive(int kind, int B, int T, int H, int N, const rl_wkv_in *in, float *y)
{
    float *S = calloc((size_t)N * N, sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            memset(S, 0, sizeof(float) * N * N);
            for (int t = 0; t < T; t++) {
                size_t o = (((size_t)b * T + t) * H + h) * N;
                for (int i = 0; i < N; i++) {
                    float sa = 0;
                    if (kind == 7)
                        for (int j = 0; j < N; j++)
                            sa += S[i * N + j] * in->a[o + j];
                    float acc = 0;
                    for (int j = 0; j < N; j++) {
                        float s = S[i * N + j] * expf(in->logw[o + j]) + in->v[o + i] * in->k[o + j];
                        if (kind == 7)
                            s += sa * in->b[o + j];
                        S[i * N + j] = s;
                        acc += s * in->r[o + j];
                    }
                    y[o + i] = acc;
                }
            }
        }
    free(S);
}

#define REPS 5

int main(int argc, char **argv)
{
    int threads = 2, T = 1024;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq")) T = atoi(argv[i + 1]);
    }
    char err[512];
    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = threads};
    if (rl_backend_create(&be, &bo, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("wkv on %d threads, T=%d (token-heads/s, median of %d; naive = scalar recurrence on 1 thread)\n", threads,
           T, REPS);
    printf("| op | N | B×H | naive fwd | fwd | fwd+bwd | fwd / naive |\n|---|---:|---:|---:|---:|---:|---:|\n");
    uint64_t seed = 7;
    for (int kind = 7; kind >= 6; kind--)
        for (int N = 64; N <= 128; N *= 2) {
            const int B = 1, H = N == 64 ? 8 : 4;
            const size_t n = (size_t)B * T * H * N;
            rl_wkv_in in = {rnd(n, -1, 1, &seed), rnd(n, -0.6f, -0.01f, &seed), rnd(n, -1, 1, &seed),
                            rnd(n, -1, 1, &seed), rnd(n, -0.2f, 0.2f, &seed), rnd(n, -0.2f, 0.2f, &seed)};
            float *y = malloc(sizeof(float) * n), *dy = rnd(n, -1, 1, &seed);
            float *g[6];
            for (int i = 0; i < 6; i++)
                g[i] = calloc(n, sizeof(float));
            rl_wkv_grad gr = {g[0], g[1], g[2], g[3], g[4], g[5]};
            rl_wkv_dims d = {B, T, H, N, 0};
            float *ck = malloc(sizeof(float) * rl_wkv_checkpoint_floats(&d, kind));
            double tn[REPS], tf[REPS], tb[REPS];
            for (int r = 0; r < REPS; r++) {
                double t0 = now();
                naive(kind, B, T, H, N, &in, y);
                double t1 = now();
                if (kind == 7)
                    rl_wkv7_forward(be, &d, y, NULL, ck, &in, NULL);
                else
                    rl_wkv6_forward(be, &d, y, NULL, ck, &in, NULL);
                double t2 = now();
                if (kind == 7)
                    rl_wkv7_backward(be, &d, &gr, NULL, dy, NULL, &in, NULL, ck);
                else
                    rl_wkv6_backward(be, &d, &gr, NULL, dy, NULL, &in, NULL, ck);
                double t3 = now();
                tn[r] = t1 - t0, tf[r] = t2 - t1, tb[r] = t3 - t1;
            }
            qsort(tn, REPS, sizeof(double), cmp), qsort(tf, REPS, sizeof(double), cmp), qsort(tb, REPS, sizeof(double), cmp);
            const double th = (double)B * T * H;
            printf("| wkv%d | %d | %d | %.3g M | %.3g M | %.3g M | %.1f× |\n", kind, N, B * H, th / tn[2] / 1e6,
                   th / tf[2] / 1e6, th / tb[2] / 1e6, tn[2] / tf[2]);
            free((void *)in.r), free((void *)in.logw), free((void *)in.k), free((void *)in.v), free((void *)in.a);
            free((void *)in.b), free(y), free(dy), free(ck);
            for (int i = 0; i < 6; i++)
                free(g[i]);
        }
    /* RAD-RWKV7 layer training step (variant b, layer 1: value residual on), same shapes as
     * bench_tmix_torch.py: D=512, H=8, G=2, N=64, ranks by the rule (32, 32, 32, 96). */
    const int D = 512, H = 8, G = 2, N = 64, Ts = T / 2, KD = G * N;
    rl_tmix_dims td = {.arch = RL_STUDENT_RWKV7, .variant = 'b', .hidden = D, .heads = H, .kv_heads = G,
                       .head_dim = N, .layer = 1, .layers = 4, .rank_decay = rl_lora_rank(D, 0.5, 1.8),
                       .rank_iclr = rl_lora_rank(D, 0.5, 1.8), .rank_value = rl_lora_rank(D, 0.5, 1.3),
                       .rank_gate = rl_lora_rank(D, 0.8, 0.6), .qkv_bias = 1, .use_rope = 1, .batch = 1, .seq = Ts};
    rl_tmix_params p = {0}, g = {0};
    struct {
        float **p, **g;
        size_t n;
    } t[] = {{&p.q_w, &g.q_w, (size_t)D * D}, {&p.q_b, &g.q_b, D}, {&p.k_w, &g.k_w, (size_t)KD * D},
             {&p.k_b, &g.k_b, KD}, {&p.v_w, &g.v_w, (size_t)KD * D}, {&p.v_b, &g.v_b, KD},
             {&p.o_w, &g.o_w, (size_t)D * D}, {&p.w0, &g.w0, D}, {&p.w1, &g.w1, (size_t)D * td.rank_decay},
             {&p.w2, &g.w2, (size_t)D * td.rank_decay}, {&p.a0, &g.a0, D}, {&p.a1, &g.a1, (size_t)D * td.rank_iclr},
             {&p.a2, &g.a2, (size_t)D * td.rank_iclr}, {&p.v0, &g.v0, D}, {&p.v1, &g.v1, (size_t)D * td.rank_value},
             {&p.v2, &g.v2, (size_t)D * td.rank_value}, {&p.g1, &g.g1, (size_t)D * td.rank_gate},
             {&p.g2, &g.g2, (size_t)D * td.rank_gate}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        *t[i].p = rnd(t[i].n, -0.05f, 0.05f, &seed), *t[i].g = calloc(t[i].n, sizeof(float));
    const size_t RD = (size_t)Ts * D;
    float *u = rnd(RD, -1, 1, &seed), *vf = rnd(RD, -1, 1, &seed), *dyl = rnd(RD, -1, 1, &seed);
    float *yl = malloc(sizeof(float) * RD), *du = calloc(RD, sizeof(float)), *dvf = calloc(RD, sizeof(float));
    float *cs = rnd((size_t)Ts * N, -1, 1, &seed);
    rl_tmix_acts acts;
    if (rl_tmix_acts_alloc(be, &td, 1, &acts, err, sizeof err) == 0) {
        double tl[REPS];
        for (int r = 0; r < REPS; r++) {
            double t0 = now();
            rl_tmix7_forward(be, &td, &p, &acts, u, vf, cs, cs + (size_t)Ts * N / 2, yl);
            rl_tmix7_backward(be, &td, &p, &g, &acts, u, vf, dvf, cs, cs + (size_t)Ts * N / 2, dyl, du);
            tl[r] = now() - t0;
        }
        qsort(tl, REPS, sizeof(double), cmp);
        printf("\nRAD-RWKV7 layer (b) fwd+bwd, D=%d H=%d G=%d N=%d T=%d: %.1f ms (median of %d), %.0f tokens/s\n", D,
               H, G, N, Ts, tl[2] * 1e3, REPS, Ts / tl[2]);
        rl_tmix_acts_free(be, &acts);
    }
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        free(*t[i].p), free(*t[i].g);
    free(u), free(vf), free(dyl), free(yl), free(du), free(dvf), free(cs);
    rl_backend_destroy(be);
    return 0;
}
