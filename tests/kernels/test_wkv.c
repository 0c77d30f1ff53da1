/* test_wkv.c — the CPU wkv7 and wkv6 recurrences against a float64 recurrence
 * written here, every input gradient (and the initial-state gradient) against
 * central finite differences of that recurrence, long sequences against
 * directional finite differences, and the state-carrying contract: a sequence
 * run in two pieces equals one piece, forward and backward.
 *
 * Inputs are random and never zero; decays cover their whole allowed range
 * (RWKV-7: logw = −e^(−0.5)·σ(x), RWKV-6: logw = max(−e^x, −5)); the initial state
 * is random. The loss is L = Σ y ⊙ Wy + Σ S_final ⊙ WS with random weights, so
 * dy = Wy and dstate_out = WS. */
#include <string.h>

#include "check.h"
#include "kernels.h"

static rl_backend *be;

typedef struct {
    int kind; /* 7 or 6 */
    int B, T, H, N;
    /* float64 copies of the inputs the C kernel sees */
    double *r, *logw, *k, *v, *a, *b, *s0, *wy, *ws;
    double *y_out, *s_out, *sa_out; /* when set, ref_loss also stores y, the final state and (wkv7) every sa */
} ref_case;

/* float64 recurrence: returns L = Σ y·wy + Σ S_T·ws */
static double ref_loss(void *p)
{
    const ref_case *c = p;
    const int N = c->N;
    double *S = malloc(sizeof(double) * (size_t)N * N), L = 0;
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++) {
            memcpy(S, c->s0 + ((size_t)b * c->H + h) * N * N, sizeof(double) * (size_t)N * N);
            for (int t = 0; t < c->T; t++) {
                size_t o = (((size_t)b * c->T + t) * c->H + h) * N;
                for (int i = 0; i < N; i++) {
                    double sa = 0;
                    if (c->kind == 7)
                        for (int j = 0; j < N; j++)
                            sa += S[i * N + j] * c->a[o + j];
                    if (c->sa_out)
                        c->sa_out[o + i] = sa;
                    double y = 0;
                    for (int j = 0; j < N; j++) {
                        double s = S[i * N + j] * exp(c->logw[o + j]) + c->v[o + i] * c->k[o + j];
                        if (c->kind == 7)
                            s += sa * c->b[o + j];
                        S[i * N + j] = s;
                        y += s * c->r[o + j];
                    }
                    L += y * c->wy[o + i];
                    if (c->y_out)
                        c->y_out[o + i] = y;
                }
            }
            for (int e = 0; e < N * N; e++)
                L += S[e] * c->ws[((size_t)b * c->H + h) * N * N + e];
            if (c->s_out)
                memcpy(c->s_out + ((size_t)b * c->H + h) * N * N, S, sizeof(double) * (size_t)N * N);
        }
    free(S);
    return L;
}

typedef struct {
    size_t nt, ns; /* token-tensor and state sizes */
    float *r, *logw, *k, *v, *a, *b, *s0, *wy, *ws;
    float *y, *sT, *ckpt;
    float *g[6], *ds0;
} kcase;

static double sigm(double x) { return 1 / (1 + exp(-x)); }

static void make_case(kcase *K, ref_case *R, int kind, int B, int T, int H, int N)
{
    memset(K, 0, sizeof *K);
    memset(R, 0, sizeof *R); /* no y_out, s_out, sa_out until a test sets them */
    K->nt = (size_t)B * T * H * N, K->ns = (size_t)B * H * N * N;
    float **tok[] = {&K->r, &K->logw, &K->k, &K->v, &K->a, &K->b, &K->wy, &K->y};
    for (int i = 0; i < 8; i++)
        *tok[i] = malloc(sizeof(float) * K->nt);
    for (int i = 0; i < 6; i++)
        K->g[i] = calloc(K->nt, sizeof(float));
    K->s0 = malloc(sizeof(float) * K->ns), K->ws = malloc(sizeof(float) * K->ns);
    K->sT = malloc(sizeof(float) * K->ns), K->ds0 = calloc(K->ns, sizeof(float));
    fill(K->r, K->nt, 1), fill(K->k, K->nt, 1), fill(K->v, K->nt, 1), fill(K->wy, K->nt, 1);
    fill(K->s0, K->ns, 0.5f), fill(K->ws, K->ns, 1);
    for (size_t e = 0; e < K->nt; e++) {
        double x = kind == 7 ? 8.0 * rnd() : 4.0 * rnd() - 2.0; /* RWKV-6: e^x up to e^2 > 5: the clamp is hit */
        K->logw[e] = kind == 7 ? (float)(-exp(-0.5) * sigm(x)) : (float)fmax(-exp(x), -5.0);
    }
    /* RWKV-7: a = −κ̂, b = κ̂ ⊙ α with κ̂ unit per head and α ∈ (0, 1), the model's mapping */
    for (size_t o = 0; o < K->nt; o += N) {
        double nn = 0;
        for (int j = 0; j < N; j++)
            K->a[o + j] = rnd(), nn += (double)K->a[o + j] * K->a[o + j];
        for (int j = 0; j < N; j++) {
            float kap = (float)(K->a[o + j] / sqrt(nn));
            K->a[o + j] = -kap;
            K->b[o + j] = kap * (0.5f + 0.5f * rnd());
        }
    }
    R->kind = kind, R->B = B, R->T = T, R->H = H, R->N = N;
    R->r = to_double(K->r, K->nt), R->logw = to_double(K->logw, K->nt), R->k = to_double(K->k, K->nt);
    R->v = to_double(K->v, K->nt), R->a = to_double(K->a, K->nt), R->b = to_double(K->b, K->nt);
    R->wy = to_double(K->wy, K->nt), R->s0 = to_double(K->s0, K->ns), R->ws = to_double(K->ws, K->ns);
}

static void free_case(kcase *K, ref_case *R)
{
    float *f[] = {K->r, K->logw, K->k, K->v, K->a, K->b, K->s0, K->wy, K->ws, K->y, K->sT, K->ckpt, K->ds0};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        free(f[i]);
    for (int i = 0; i < 6; i++)
        free(K->g[i]);
    double *d[] = {R->r, R->logw, R->k, R->v, R->a, R->b, R->s0, R->wy, R->ws};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        free(d[i]);
}

/* err <= atol + rtol·max|ref| over the tensor; prints max abs and relative error */
static void compare(const char *what, const float *got, const double *ref, size_t n, double rtol)
{
    double scale = 0, err = 0;
    for (size_t i = 0; i < n; i++) {
        scale = fmax(scale, fabs(ref[i]));
        err = fmax(err, fabs((double)got[i] - ref[i]));
    }
    int ok = err <= 1e-7 + rtol * scale;
    printf("  %-52s n=%-6zu max_abs=%.3e max_rel=%.3e (|ref|max %.2e, tol rel %.0e) %s\n", what, n, err,
           err / fmax(scale, 1e-30), scale, rtol, ok ? "ok" : "FAIL");
    if (!ok)
        check_failures++;
}

static int run_forward(int kind, const rl_wkv_dims *d, kcase *K, const float *s0, int with_ckpt)
{
    rl_wkv_in in = {K->r, K->logw, K->k, K->v, K->a, K->b};
    free(K->ckpt);
    K->ckpt = with_ckpt ? malloc(sizeof(float) * rl_wkv_checkpoint_floats(d, kind)) : NULL;
    return kind == 7 ? rl_wkv7_forward(be, d, K->y, K->sT, K->ckpt, &in, s0)
                     : rl_wkv6_forward(be, d, K->y, K->sT, K->ckpt, &in, s0);
}

static int run_backward(int kind, const rl_wkv_dims *d, kcase *K, const float *s0)
{
    rl_wkv_in in = {K->r, K->logw, K->k, K->v, K->a, K->b};
    rl_wkv_grad g = {K->g[0], K->g[1], K->g[2], K->g[3], K->g[4], K->g[5]};
    return kind == 7 ? rl_wkv7_backward(be, d, &g, K->ds0, K->wy, K->ws, &in, s0, K->ckpt)
                     : rl_wkv6_backward(be, d, &g, K->ds0, K->wy, K->ws, &in, s0, K->ckpt);
}

static const char *names[6] = {"dr", "dlogw", "dk", "dv", "da", "db"};

/* Forward vs float64; every gradient element vs central differences. */
static void test_full_fd(int kind, int B, int T, int H, int N, int chunk)
{
    printf("wkv%d B=%d T=%d H=%d N=%d chunk=%d: forward vs float64, every gradient element vs finite differences\n",
           kind, B, T, H, N, chunk);
    kcase K;
    ref_case R;
    make_case(&K, &R, kind, B, T, H, N);
    rl_wkv_dims d = {B, T, H, N, chunk};
    check_true("forward returns 0", run_forward(kind, &d, &K, K.s0, 1) == 0);
    double *gy = malloc(sizeof(double) * K.nt), *gs = malloc(sizeof(double) * K.ns), *gsa = malloc(sizeof(double) * K.nt);
    R.y_out = gy, R.s_out = gs, R.sa_out = gsa;
    ref_loss(&R);
    R.y_out = R.s_out = R.sa_out = NULL;
    compare("y", K.y, gy, K.nt, 2e-6);
    compare("final state", K.sT, gs, K.ns, 2e-6);
    if (kind == 7) /* the checkpoint's second part: every token's sa, after the chunk-start states */
        compare("checkpoint sa", K.ckpt + rl_wkv_checkpoint_floats(&d, 6), gsa, K.nt, 2e-6);
    free(gsa);
    check_true("backward returns 0", run_backward(kind, &d, &K, K.s0) == 0);
    double *inputs[6] = {R.r, R.logw, R.k, R.v, R.a, R.b};
    double *fd = malloc(sizeof(double) * K.nt);
    for (int i = 0; i < (kind == 7 ? 6 : 4); i++) {
        fd_grad(ref_loss, &R, inputs[i], K.nt, fd);
        compare(names[i], K.g[i], fd, K.nt, 2e-5);
    }
    double *fs = malloc(sizeof(double) * K.ns);
    fd_grad(ref_loss, &R, R.s0, K.ns, fs);
    compare("dstate_in", K.ds0, fs, K.ns, 2e-5);
    free(gy), free(gs), free(fd), free(fs);
    free_case(&K, &R);
}

/* Long sequences: y vs float64, and each gradient along random directions u:
 * Σ g·u vs (L(x + εu) − L(x − εu)) / 2ε. */
static void test_long(int kind, int B, int T, int H, int N)
{
    printf("wkv%d B=%d T=%d H=%d N=%d: forward vs float64, gradients vs directional differences\n", kind, B, T, H,
           N);
    kcase K;
    ref_case R;
    make_case(&K, &R, kind, B, T, H, N);
    rl_wkv_dims d = {B, T, H, N, 0};
    run_forward(kind, &d, &K, K.s0, 0);
    double *gy = malloc(sizeof(double) * K.nt), *gs = malloc(sizeof(double) * K.ns);
    R.y_out = gy, R.s_out = gs;
    ref_loss(&R);
    R.y_out = R.s_out = NULL;
    compare("y", K.y, gy, K.nt, 5e-6);
    compare("final state", K.sT, gs, K.ns, 5e-6);
    free(gs);
    run_backward(kind, &d, &K, K.s0);
    double *inputs[6] = {R.r, R.logw, R.k, R.v, R.a, R.b};
    for (int i = 0; i < (kind == 7 ? 6 : 4) + 1; i++) {
        double *x = i < 6 && i < (kind == 7 ? 6 : 4) ? inputs[i] : R.s0;
        const float *g = i < (kind == 7 ? 6 : 4) ? K.g[i] : K.ds0;
        size_t n = x == R.s0 ? K.ns : K.nt;
        double worst = 0, scale = 0;
        for (int rep = 0; rep < 3; rep++) {
            double *u = malloc(sizeof(double) * n), *x0 = malloc(sizeof(double) * n);
            double dot = 0, eps = 1e-6;
            memcpy(x0, x, sizeof(double) * n);
            for (size_t e = 0; e < n; e++)
                u[e] = rnd(), dot += u[e] * g[e];
            for (size_t e = 0; e < n; e++)
                x[e] = x0[e] + eps * u[e];
            double lp = ref_loss(&R);
            for (size_t e = 0; e < n; e++)
                x[e] = x0[e] - eps * u[e];
            double lm = ref_loss(&R);
            memcpy(x, x0, sizeof(double) * n);
            double want = (lp - lm) / (2 * eps);
            worst = fmax(worst, fabs(dot - want));
            double gn = 0;
            for (size_t e = 0; e < n; e++)
                gn += fabs(u[e] * g[e]);
            scale = fmax(scale, gn);
            free(u), free(x0);
        }
        /* relative to Σ|u·g|, the size of the terms the dot product sums */
        int ok = worst <= 1e-5 * scale;
        printf("  %-52s max_abs=%.3e rel(Σ|u·g|)=%.3e (tol 1e-5) %s\n",
               i < (kind == 7 ? 6 : 4) ? names[i] : "dstate_in", worst, worst / scale, ok ? "ok" : "FAIL");
        if (!ok)
            check_failures++;
    }
    if (kind == 7) { /* the forward again, keeping checkpoints: their sa part (the vectorised columns too) */
        double *gsa = malloc(sizeof(double) * K.nt);
        R.sa_out = gsa;
        ref_loss(&R);
        R.sa_out = NULL;
        check_true("forward with checkpoints returns 0", run_forward(kind, &d, &K, K.s0, 1) == 0);
        compare("checkpoint sa", K.ckpt + rl_wkv_checkpoint_floats(&d, 6), gsa, K.nt, 5e-6);
        free(gsa);
    }
    free(gy);
    free_case(&K, &R);
}

/* The first T1 tokens then the rest with the state carried equals one run; the
 * backward of the second piece hands dstate_in to the first as its dstate_out. */
static void test_pieces(int kind, int B, int T, int T1, int H, int N)
{
    printf("wkv%d B=%d T=%d as %d + %d with the state carried == one piece\n", kind, B, T, T1, T - T1);
    kcase K;
    ref_case R;
    make_case(&K, &R, kind, B, T, H, N);
    rl_wkv_dims d = {B, T, H, N, 5};
    run_forward(kind, &d, &K, K.s0, 0);
    run_backward(kind, &d, &K, K.s0);
    /* split copies: [B, T, H, N] → [B, T1, H, N] and [B, T−T1, H, N] */
    const size_t row = (size_t)H * N;
    float *p[2][8];
    int len[2] = {T1, T - T1};
    const float *src[7] = {K.r, K.logw, K.k, K.v, K.a, K.b, K.wy};
    for (int s = 0; s < 2; s++)
        for (int q = 0; q < 8; q++) {
            p[s][q] = calloc((size_t)B * len[s] * row, sizeof(float));
            if (q < 7)
                for (int b = 0; b < B; b++)
                    memcpy(p[s][q] + (size_t)b * len[s] * row, src[q] + ((size_t)b * T + (s ? T1 : 0)) * row,
                           sizeof(float) * len[s] * row);
        }
    float *mid = malloc(sizeof(float) * K.ns), *fin = malloc(sizeof(float) * K.ns);
    float *dmid = calloc(K.ns, sizeof(float)), *ds0 = calloc(K.ns, sizeof(float));
    float *g[2][6];
    for (int s = 0; s < 2; s++)
        for (int q = 0; q < 6; q++)
            g[s][q] = calloc((size_t)B * len[s] * row, sizeof(float));
    for (int s = 0; s < 2; s++) {
        rl_wkv_dims ds = {B, len[s], H, N, 0};
        rl_wkv_in in = {p[s][0], p[s][1], p[s][2], p[s][3], p[s][4], p[s][5]};
        if (kind == 7)
            rl_wkv7_forward(be, &ds, p[s][7], s ? fin : mid, NULL, &in, s ? mid : K.s0);
        else
            rl_wkv6_forward(be, &ds, p[s][7], s ? fin : mid, NULL, &in, s ? mid : K.s0);
    }
    for (int s = 1; s >= 0; s--) {
        rl_wkv_dims ds = {B, len[s], H, N, 3};
        rl_wkv_in in = {p[s][0], p[s][1], p[s][2], p[s][3], p[s][4], p[s][5]};
        rl_wkv_grad gg = {g[s][0], g[s][1], g[s][2], g[s][3], g[s][4], g[s][5]};
        if (kind == 7)
            rl_wkv7_backward(be, &ds, &gg, s ? dmid : ds0, p[s][6], s ? K.ws : dmid, &in, s ? mid : K.s0, NULL);
        else
            rl_wkv6_backward(be, &ds, &gg, s ? dmid : ds0, p[s][6], s ? K.ws : dmid, &in, s ? mid : K.s0, NULL);
    }
    /* reassemble and compare with the one-piece run */
    double *ref = malloc(sizeof(double) * K.nt);
    float *cat = malloc(sizeof(float) * K.nt);
    for (int q = -1; q < (kind == 7 ? 6 : 4); q++) {
        const float *whole = q < 0 ? K.y : K.g[q];
        for (size_t e = 0; e < K.nt; e++)
            ref[e] = whole[e];
        for (int b = 0; b < B; b++)
            for (int s = 0; s < 2; s++)
                memcpy(cat + ((size_t)b * T + (s ? T1 : 0)) * row, (q < 0 ? p[s][7] : g[s][q]) + (size_t)b * len[s] * row,
                       sizeof(float) * len[s] * row);
        char what[64];
        snprintf(what, sizeof what, "two pieces == one: %s", q < 0 ? "y" : names[q]);
        compare(what, cat, ref, K.nt, 1e-6);
    }
    double *rs = malloc(sizeof(double) * K.ns);
    for (size_t e = 0; e < K.ns; e++)
        rs[e] = K.sT[e];
    compare("two pieces == one: final state", fin, rs, K.ns, 1e-6);
    for (size_t e = 0; e < K.ns; e++)
        rs[e] = K.ds0[e];
    compare("two pieces == one: dstate_in", ds0, rs, K.ns, 1e-6);
    free(rs), free(ref), free(cat), free(mid), free(fin), free(dmid), free(ds0);
    for (int s = 0; s < 2; s++) {
        for (int q = 0; q < 8; q++)
            free(p[s][q]);
        for (int q = 0; q < 6; q++)
            free(g[s][q]);
    }
    free_case(&K, &R);
}

static void test_bad_input(void)
{
    printf("bad input\n");
    float x[16] = {0};
    rl_wkv_in in = {x, x, x, x, NULL, NULL};
    rl_wkv_dims d = {1, 2, 1, 2, 0};
    char err[256];
    check_true("wkv7 without a and b is refused", rl_wkv7_forward(be, &d, x, NULL, NULL, &in, NULL) == RL_EINVAL);
    check_true("  with a message naming them", rl_backend_status(be, err, sizeof err) && strstr(err, "a and b"));
    rl_backend_clear_error(be);
    rl_wkv_dims z = {1, 0, 1, 2, 0};
    check_true("seq=0 is refused", rl_wkv6_forward(be, &z, x, NULL, NULL, &in, NULL) == RL_EINVAL);
    rl_backend_clear_error(be);
}

int main(void)
{
    char err[256];
    rl_backend_options o = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    if (rl_backend_create(&be, &o, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    /* checkpoint sizes: wkv7's adds batch·seq·heads·N floats of sa; an unknown kind or bad dims is 0 */
    const rl_wkv_dims cd = {2, 11, 3, 4, 4}, bad = {2, 0, 3, 4, 4};
    check_true("checkpoint floats: wkv6 2·3·ceil(11/4)·4², wkv7 + 2·11·3·4, kind 5 and seq 0 give 0",
               rl_wkv_checkpoint_floats(&cd, 6) == 2 * 3 * 3 * 16 && rl_wkv_checkpoint_floats(&cd, 7) == 288 + 264 &&
                   rl_wkv_checkpoint_floats(&cd, 5) == 0 && rl_wkv_checkpoint_floats(&bad, 7) == 0);
    for (int kind = 7; kind >= 6; kind--) {
        test_full_fd(kind, 2, 11, 2, 4, 4);  /* partial last chunk, B·H > threads */
        test_full_fd(kind, 1, 13, 1, 8, 16); /* one chunk longer than T; rows split over threads */
        test_full_fd(kind, 1, 9, 1, 6, 4);   /* N not a multiple of the 4-row block */
        test_long(kind, 1, 100, 2, 16);
        /* the vectorised forward: 32-column blocks plus leftover columns, split over both
         * threads (B·H = 1: parts of 36 columns = 32 + 4) */
        test_long(kind, 1, 40, 1, 72);
        test_pieces(kind, 2, 37, 20, 2, 8);
        test_pieces(kind, 1, 37, 20, 2, 64); /* key-major checkpoints and states carried at N = 64 */
    }
    test_bad_input();
    rl_backend_destroy(be);
    printf(check_failures ? "FAIL: %d checks failed\n" : "PASS\n", check_failures);
    return check_failures ? 1 : 0;
}
