/* student_recurrent_check.c — recurrent inference equals the parallel forward.
 *
 * usage: student_recurrent_check --model DIR [--tokens T] [--prompt P] [--step K] [--batch B]
 * Runs the parallel forward over batch×T random tokens, then the same tokens as a
 * parallel prompt of P tokens followed by steps of K tokens (default 1; the last may
 * be shorter) from the recurrent state (O(1) per time-mix layer, a KV cache per
 * softmax-attention layer of a hybrid), and compares the final-norm output of every
 * position (it fixes the logits).
 * Passes when max |recurrent − parallel| <= 1e-4 · max |parallel|. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "student.h"

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int T = 1000, P = 300, B = 2, K = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--tokens")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--prompt")) P = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--step")) K = atoi(argv[i + 1]);
    }
    if (!dir || T < 2 || P < 1 || P >= T || B < 1 || K < 1) {
        fprintf(stderr, "usage: student_recurrent_check --model DIR [--tokens T] [--prompt P<T] [--step K] "
                        "[--batch B]\n");
        return 2;
    }
    char err[1024];
    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    rl_student *s = NULL;
    rl_student_state *st = NULL;
    int rc = rl_backend_create(&be, &bo, err, sizeof err);
    if (!rc)
        rc = rl_student_load(&s, be, dir, err, sizeof err);
    if (rc) {
        fprintf(stderr, "student_recurrent_check: %s\n", err);
        return 1;
    }
    const int D = s->base->cfg.hidden, V = s->base->cfg.vocab;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)B * T), *part = malloc(sizeof(int32_t) * (size_t)B * T);
    float *ref = malloc(sizeof(float) * (size_t)B * T * D), *got = malloc(sizeof(float) * (size_t)B * T * D);
    uint32_t x = 12345;
    for (int i = 0; i < B * T; i++)
        x = x * 1664525u + 1013904223u, ids[i] = (int32_t)((x >> 8) % (uint32_t)V);
    rc = rl_student_prepare(s, B, T, 64, err, sizeof err);
    if (!rc)
        rc = rl_student_forward(s, ids, err, sizeof err);
    if (!rc)
        rc = rl_download(be, ref, s->base->lnf, sizeof(float) * (size_t)B * T * D);
    if (!rc)
        rc = rl_student_state_create(&st, s, B, T, err, sizeof err);
    /* prompt [0, P) in parallel, then K tokens at a time */
    for (int t0 = 0, prepared = 0; t0 < T && !rc;) {
        const int n = t0 == 0 ? P : (T - t0 < K ? T - t0 : K);
        if (n != prepared)
            rc = rl_student_prepare(s, B, n, 64, err, sizeof err), prepared = n;
        for (int b = 0; b < B; b++)
            memcpy(part + (size_t)b * n, ids + (size_t)b * T + t0, sizeof(int32_t) * n);
        if (!rc)
            rc = rl_student_forward_state(s, st, part, err, sizeof err);
        for (int b = 0; b < B && !rc; b++)
            rc = rl_download(be, got + ((size_t)b * T + t0) * D, s->base->lnf + (size_t)b * n * D,
                             sizeof(float) * (size_t)n * D);
        t0 += n;
    }
    if (rc) {
        fprintf(stderr, "student_recurrent_check: %s\n", err);
        return 1;
    }
    double maxerr = 0, scale = 0, maxerr_steps = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int j = 0; j < D; j++) {
                const size_t e = ((size_t)b * T + t) * D + j;
                double d = fabs((double)got[e] - ref[e]);
                maxerr = fmax(maxerr, d), scale = fmax(scale, fabs(ref[e]));
                if (t >= P)
                    maxerr_steps = fmax(maxerr_steps, d);
            }
    const int ok = maxerr <= 1e-4 * scale;
    printf("  %s: %d×%d tokens, prompt %d + %d tokens in steps of %d: max_abs=%.3e (steps %.3e) max_rel=%.3e "
           "(|ref|max %.2e, tol 1e-4) %s\n", dir, B, T, P, T - P, K, maxerr, maxerr_steps, maxerr / scale, scale,
           ok ? "ok" : "FAIL");
    rl_student_state_destroy(s, st);
    rl_student_destroy(s);
    rl_backend_destroy(be);
    free(ids), free(part), free(ref), free(got);
    return ok ? 0 : 1;
}
