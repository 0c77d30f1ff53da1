/* bench_teacher.c — forward + cross-entropy + backward throughput of the fp32 CPU
 * teacher against the PyTorch reference on the same threads in the same run, the
 * share of time in GEMM, and achieved GEMM GFLOP/s against standalone OpenBLAS
 * sgemm on the same shapes. Prints tables; not a test. The PyTorch peer runs as a
 * child that takes one step per request, so C and PyTorch steps alternate and see
 * the same machine load (these machines are shared; sequential phases do not).
 * --chunk: logits rows per LM-head chunk (the fp32 logits buffer is chunk × vocab).
 *
 * usage: bench_teacher [--threads 2] [--batch 4] [--seq 256] [--steps 5] [--chunk 128] [--no-torch]
 *        [--hidden 512] [--layers 8] [--heads 8] [--kv-heads 2] [--intermediate 1280] [--vocab 32000] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* GFLOP/s of one matmul shape run alone (median of reps), on fresh buffers. */
static double standalone_gflops(rl_backend *be, const rl_op_stat *s)
{
    size_t na = (size_t)s->M * s->K, nb = (size_t)s->K * s->N, nc = (size_t)s->M * s->N;
    float *a = rl_malloc(be, na * 4), *b = rl_malloc(be, nb * 4), *c = rl_malloc(be, nc * 4);
    for (size_t i = 0; i < na; i++)
        a[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < nb; i++)
        b[i] = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
    rl_zero(be, c, nc * 4);
    rl_gemm g = {
        .M = s->M, .N = s->N, .K = s->K, .trans_a = s->trans_a, .trans_b = s->trans_b, .alpha = 1, .beta = 1};
    double t[5];
    rl_matmul(be, &g, c, a, b, NULL);
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        rl_matmul(be, &g, c, a, b, NULL);
        t[r] = now() - t0;
    }
    rl_free(be, a), rl_free(be, b), rl_free(be, c);
    return 2.0 * s->M * s->N * (double)s->K / median(t, 5) / 1e9;
}

/* The PyTorch peer in --serve mode (bench_torch.py), talked to over two pipes. */
typedef struct {
    pid_t pid;
    FILE *to, *from;
} torch_peer;

static int torch_start(torch_peer *tp, const rl_model_config *c, int threads, int batch, int seq)
{
    char script[1024], ref[1024], a[10][16];
    snprintf(script, sizeof script, "%s/bench/model/bench_torch.py", RL_SRC_DIR);
    snprintf(ref, sizeof ref, "%s/tests/ref", RL_SRC_DIR);
    const int v[10] = {threads,         c->hidden, c->layers, c->heads, c->kv_heads,
                       c->intermediate, c->vocab,  batch,     seq,      0};
    char *argv[16] = {"/usr/bin/python3", script, ref};
    for (int i = 0; i < 10; i++) {
        snprintf(a[i], sizeof a[i], "%d", v[i]);
        argv[3 + i] = a[i];
    }
    argv[13] = "--serve";
    argv[14] = NULL;
    int to[2], from[2];
    if (pipe(to)) return -1;
    if (pipe(from)) {
        close(to[0]), close(to[1]);
        return -1;
    }
    tp->pid = fork();
    if (tp->pid == 0) {
        dup2(to[0], 0), dup2(from[1], 1);
        close(to[0]), close(to[1]), close(from[0]), close(from[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(to[0]), close(from[1]);
    if (tp->pid < 0) {
        close(to[1]), close(from[0]);
        return -1;
    }
    tp->to = fdopen(to[1], "w"), tp->from = fdopen(from[0], "r");
    char line[256];
    while (tp->from && fgets(line, sizeof line, tp->from))
        if (!strncmp(line, "ready", 5)) return 0;
    return -1;
}

/* One timed PyTorch step; its seconds, or a negative value if the peer is gone. */
static double torch_step(torch_peer *tp)
{
    char line[256];
    double sec = -1;
    if (fputs("step\n", tp->to) < 0 || fflush(tp->to)) return -1;
    while (fgets(line, sizeof line, tp->from))
        if (sscanf(line, "step %lf", &sec) == 1) return sec;
    return -1;
}

static void torch_stop(torch_peer *tp)
{
    char line[256];
    if (tp->to) fputs("quit\n", tp->to), fclose(tp->to);
    while (tp->from && fgets(line, sizeof line, tp->from))
        ;
    if (tp->from) fclose(tp->from);
    if (tp->pid > 0) waitpid(tp->pid, NULL, 0);
}

int main(int argc, char **argv)
{
    /* libgomp reads OMP_WAIT_POLICY at start-up. Spinning OpenMP workers and spinning
     * OpenBLAS pthreads steal the 2 cores from each other between ops (rmsnorm 13x
     * slower measured), so the benchmark runs with passive waiting unless told. */
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    int threads = 2, batch = 4, seq = 256, steps = 5, chunk = 128, torch = 1;
    rl_model_config c = {.arch = RL_MODEL_QWEN2,
                         .hidden = 512,
                         .layers = 8,
                         .heads = 8,
                         .kv_heads = 2,
                         .intermediate = 1280,
                         .vocab = 32000,
                         .rope_theta = 1e6,
                         .rms_norm_eps = 1e-6,
                         .tie_word_embeddings = 1,
                         .qkv_bias = 1,
                         .bos_token_id = -1,
                         .eos_token_id = -1,
                         .initializer_range = 0.02f,
                         .max_position_embeddings = 32768};
    for (int i = 1; i < argc; i++) {
        int *dst = NULL;
        if (!strcmp(argv[i], "--no-torch")) {
            torch = 0;
            continue;
        }
        if (!strcmp(argv[i], "--threads"))
            dst = &threads;
        else if (!strcmp(argv[i], "--batch"))
            dst = &batch;
        else if (!strcmp(argv[i], "--seq"))
            dst = &seq;
        else if (!strcmp(argv[i], "--steps"))
            dst = &steps;
        else if (!strcmp(argv[i], "--chunk"))
            dst = &chunk;
        else if (!strcmp(argv[i], "--hidden"))
            dst = &c.hidden;
        else if (!strcmp(argv[i], "--layers"))
            dst = &c.layers;
        else if (!strcmp(argv[i], "--heads"))
            dst = &c.heads;
        else if (!strcmp(argv[i], "--kv-heads"))
            dst = &c.kv_heads;
        else if (!strcmp(argv[i], "--intermediate"))
            dst = &c.intermediate;
        else if (!strcmp(argv[i], "--vocab"))
            dst = &c.vocab;
        if (!dst || i + 1 >= argc) {
            fprintf(stderr, "bench_teacher: bad option %s (see the usage comment in bench_teacher.c)\n",
                    argv[i]);
            return 2;
        }
        *dst = atoi(argv[++i]);
    }
    c.head_dim = c.hidden / c.heads;
    char err[512];
    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = threads};
    rl_model *m;
    if (rl_backend_create(&be, &bo, err, sizeof err) || rl_model_create(&m, be, &c, 1, err, sizeof err)) {
        fprintf(stderr, "bench_teacher: %s\n", err);
        return 1;
    }
    rl_model_init_random(m, 1, 0);
    if (rl_model_prepare(m, batch, seq, 1, chunk, err, sizeof err)) {
        fprintf(stderr, "bench_teacher: %s\n", err);
        return 1;
    }
    rl_arena_print(&m->grads, stderr);
    rl_arena_print(&m->acts, stderr);
    const int R = batch * seq;
    int32_t *ids = malloc(sizeof *ids * (size_t)R), *tg = malloc(sizeof *tg * (size_t)R);
    for (int i = 0; i < R; i++)
        ids[i] = (int32_t)((i * 7919u + 13) % (unsigned)c.vocab);
    for (int i = 0; i < R; i++)
        tg[i] = (i % seq) + 1 < seq ? ids[i + 1] : -1;
    int64_t np = rl_model_num_params(m), nemb = (int64_t)c.vocab * c.hidden;
    printf(
        "model: qwen2-shaped hidden %d layers %d heads %d/%d ffn %d vocab %d tied; %.1fM params (%.1fM "
        "non-embedding); batch %d x seq %d; LM head %d rows a chunk (%.1f MB of logits); %d threads (%s)\n",
        c.hidden, c.layers, c.heads, c.kv_heads, c.intermediate, c.vocab, np / 1e6, (np - nemb) / 1e6, batch,
        seq, chunk, 4.0 * chunk * c.vocab / 1e6, threads, rl_backend_name(be));
    double t[64], tt[64], loss = 0;
    if (steps > 63) steps = 63;
    torch_peer tp = {0};
    if (torch && torch_start(&tp, &c, threads, batch, seq)) {
        fprintf(stderr, "bench_teacher: the PyTorch peer did not start; continuing without it\n");
        torch_stop(&tp);
        torch = 0;
    }
    for (int s = 0; s <= steps; s++) {
        if (s == 1) rl_backend_profile(be, 1); /* step 0 warms up */
        double t0 = now();
        rl_model_zero_grads(m);
        if (rl_model_forward(m, ids, err, sizeof err) || rl_model_loss(m, tg, 1, &loss, err, sizeof err)) {
            fprintf(stderr, "bench_teacher: %s\n", err);
            return 1;
        }
        if (s) t[s - 1] = now() - t0;
        if (s && torch && (tt[s - 1] = torch_step(&tp)) < 0) {
            fprintf(stderr, "bench_teacher: the PyTorch peer stopped; continuing without it\n");
            torch = 0;
        }
    }
    double torch_tps = 0, pair_ratio = 0;
    if (torch) {
        double pr[64];
        for (int s = 0; s < steps; s++)
            pr[s] = tt[s] / t[s];
        pair_ratio = median(pr, steps);
        torch_tps = R / median(tt, steps);
    }
    torch_stop(&tp);
    double total = 0;
    for (int s = 0; s < steps; s++)
        total += t[s];
    double step_med = median(t, steps), c_tps = R / step_med;
    rl_backend_profile(be, 0);
    rl_op_stat st[128];
    int n = rl_backend_op_stats(be, st, 128);
    double op_sum = 0, gemm_s = 0, gemm_f = 0, ceil_s = 0;
    printf("\n%-22s %6s %10s %8s\n", "op", "calls", "seconds", "share");
    for (int i = 0; i < n; i++)
        op_sum += st[i].seconds;
    for (int i = 0; i < n; i++) {
        if (!strcmp(st[i].op, "matmul")) {
            gemm_s += st[i].seconds, gemm_f += st[i].flops;
            continue;
        }
        printf("%-22s %6ld %10.3f %7.1f%%\n", st[i].op, st[i].calls, st[i].seconds,
               100 * st[i].seconds / total);
    }
    printf("%-22s %6s %10.3f %7.1f%%\n", "matmul (all shapes)", "", gemm_s, 100 * gemm_s / total);
    printf("%-22s %6s %10.3f %7.1f%%\n", "outside ops", "", total - op_sum, 100 * (total - op_sum) / total);
    printf("\n%-36s %6s %9s %9s %9s\n", "GEMM shape M x N x K (tA,tB)", "calls", "seconds", "GFLOP/s",
           "alone");
    for (int i = 0; i < n; i++) {
        if (strcmp(st[i].op, "matmul")) continue;
        double alone = standalone_gflops(be, &st[i]);
        ceil_s += st[i].flops / (alone * 1e9);
        char shape[64];
        snprintf(shape, sizeof shape, "%d x %d x %d (%d,%d)", st[i].M, st[i].N, st[i].K, st[i].trans_a,
                 st[i].trans_b);
        printf("%-36s %6ld %9.3f %9.1f %9.1f\n", shape, st[i].calls, st[i].seconds,
               st[i].flops / st[i].seconds / 1e9, alone);
    }
    printf("\n| metric | value |\n|---|---|\n");
    printf("| C fwd+bwd tokens/s (median of %d steps) | %.0f |\n", steps, c_tps);
    if (torch_tps > 0)
        printf("| PyTorch fwd+bwd tokens/s, same threads, alternating steps | %.0f |\n| ratio C / PyTorch | "
               "%.2fx "
               "|\n| median of per-step-pair ratios | %.2fx |\n",
               torch_tps, c_tps / torch_tps, pair_ratio);
    else
        printf("| PyTorch | not run |\n");
    printf("| share of step time in GEMM | %.1f%% |\n", 100 * gemm_s / total);
    printf("| GEMM achieved GFLOP/s in the model | %.1f |\n", gemm_f / gemm_s / 1e9);
    printf("| same shapes, standalone sgemm GFLOP/s | %.1f |\n", gemm_f / ceil_s / 1e9);
    printf("| OMP_WAIT_POLICY | %s |\n", getenv("OMP_WAIT_POLICY"));
    printf("| loss (sanity, ~ln vocab = %.2f) | %.4f |\n", log((double)c.vocab), loss);
    free(ids), free(tg);
    rl_model_destroy(m);
    rl_backend_destroy(be);
    return 0;
}
