/* check.h — shared helpers for the kernel tests: random inputs, tolerance
 * checks that print max abs/rel error, and central finite differences of a
 * float64 reference loss. */
#ifndef RL_TEST_CHECK_H
#define RL_TEST_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t check_rng_state = 0x9e3779b97f4a7c15ull;

/* uniform in [-1, 1), never exactly zero */
static inline float rnd(void)
{
    check_rng_state ^= check_rng_state << 13;
    check_rng_state ^= check_rng_state >> 7;
    check_rng_state ^= check_rng_state << 17;
    double u = (double)(check_rng_state >> 11) / 9007199254740992.0;
    float f = (float)(2.0 * u - 1.0);
    return f == 0.0f ? 0.5f : f;
}

static inline void fill(float *x, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rnd() * scale;
}

static inline double *to_double(const float *x, size_t n)
{
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

static int check_failures = 0;

/* Passes when every |got − ref| <= atol + rtol·|ref|. Prints max abs and max
 * relative error (relative to max(|ref|, 1e-6)). */
static inline int check_close(const char *what, const float *got, const double *ref, size_t n, double atol,
                              double rtol)
{
    double max_abs = 0, max_rel = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        double r = e / fmax(fabs(ref[i]), 1e-6);
        if (e > max_abs)
            max_abs = e;
        if (r > max_rel)
            max_rel = r;
        if (!(e <= atol + rtol * fabs(ref[i]))) {
            if (!bad)
                first_bad = i;
            bad++;
        }
    }
    printf("  %-44s n=%-6zu max_abs=%.3e max_rel=%.3e (atol %.0e rtol %.0e) %s\n", what, n, max_abs, max_rel, atol,
           rtol, bad ? "FAIL" : "ok");
    if (bad) {
        printf("    %zu elements out of tolerance; first at %zu: got %.9g want %.9g\n", bad, first_bad,
               (double)got[first_bad], ref[first_bad]);
        check_failures++;
    }
    return bad == 0;
}

static inline void check_true(const char *what, int cond)
{
    printf("  %-44s %s\n", what, cond ? "ok" : "FAIL");
    if (!cond)
        check_failures++;
}

/* Central difference of loss() with respect to every element of x (float64):
 * grad[i] = (L(x + h e_i) − L(x − h e_i)) / 2h. */
typedef double (*check_loss_fn)(void *ctx);
static inline void fd_grad(check_loss_fn loss, void *ctx, double *x, size_t n, double *grad)
{
    const double h = 1e-6;
    for (size_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + h;
        double lp = loss(ctx);
        x[i] = x0 - h;
        double lm = loss(ctx);
        x[i] = x0;
        grad[i] = (lp - lm) / (2 * h);
    }
}

/* got is an accumulated gradient that started at `start`; compare got − start. */
static inline int check_grad(const char *what, const float *got, const float *start, const double *ref, size_t n,
                             double atol, double rtol)
{
    float *diff = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        diff[i] = got[i] - start[i];
    int ok = check_close(what, diff, ref, n, atol, rtol);
    free(diff);
    return ok;
}

#endif
