/* generate_check.c — the logits `radlads generate` samples from equal the full forward's.
 *
 * usage: generate_check --model DIR [--prompt P] [--steps S] [--chunk C] [--threads N]
 * Feeds P random tokens through rl_gen (the generate path: a teacher's KV cache or a student's
 * recurrent state) in prefill chunks of C, then S greedy steps of one token each, keeping the
 * logits of every position. The reference is a second copy of the model running the ordinary
 * parallel forward (rl_model_forward / rl_student_forward) over all P+S tokens at once.
 * Passes when max |generate − full| <= 1e-4 · max |full| at every position and each greedy
 * token is the full forward's argmax (unless its top two logits lie within the error). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "student.h"

typedef struct {
    rl_backend *be;
    float *out;
    int vocab;
} logits_sink;

static int keep_logits(void *p, int row0, int rows, const float *logits, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    logits_sink *k = p;
    return rl_download(k->be, k->out + (size_t)row0 * k->vocab, logits, sizeof(float) * (size_t)rows * k->vocab);
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int P = 40, S = 30, C = 16, threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--prompt")) P = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) S = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--chunk")) C = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    }
    if (!dir || P < 1 || S < 0 || C < 1 || threads < 1) {
        fprintf(stderr, "usage: generate_check --model DIR [--prompt P] [--steps S] [--chunk C] [--threads N]\n");
        return 2;
    }
    char err[1024];
    rl_backend *be = NULL;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = threads};
    rl_gen *g = NULL;
    const int T = P + S;
    int rc = rl_backend_create(&be, &bo, err, sizeof err);
    if (!rc)
        rc = rl_gen_open(&g, be, dir, T, C, err, sizeof err);
    if (rc) {
        fprintf(stderr, "generate_check: %s\n", err);
        return 1;
    }
    const int V = rl_gen_config(g)->vocab;
    int32_t *ids = malloc(sizeof *ids * (size_t)T);
    float *got = malloc(sizeof *got * (size_t)T * V), *ref = malloc(sizeof *ref * (size_t)T * V);
    uint32_t x = 2024;
    for (int i = 0; i < P; i++)
        x = x * 1664525u + 1013904223u, ids[i] = (int32_t)((x >> 8) % (uint32_t)V);
    /* generate's path: the prompt in chunks (every row's logits kept), then greedy steps */
    const rl_sample_params greedy = {.temperature = 0, .top_k = 0, .top_p = 1};
    uint64_t rng = 0;
    rc = rl_gen_feed(g, ids, P, got, 1, err, sizeof err);
    for (int s = 0; s < S && !rc; s++) {
        ids[P + s] = (int32_t)rl_gen_sample(g, got + (size_t)(P + s - 1) * V, &greedy, &rng);
        rc = rl_gen_feed(g, ids + P + s, 1, got + (size_t)(P + s) * V, 0, err, sizeof err);
    }
    const char *kind = rl_gen_kind(g);
    const int student = rl_gen_is_student(g);
    rl_gen_close(g);
    /* the reference: one parallel forward over all T tokens */
    rl_student *stu = NULL;
    rl_model *m = NULL;
    if (!rc && student) {
        rc = rl_student_load(&stu, be, dir, err, sizeof err);
        if (!rc)
            m = stu->base, rc = rl_student_prepare(stu, 1, T, 16, err, sizeof err);
        if (!rc)
            rc = rl_student_forward(stu, ids, err, sizeof err);
    } else if (!rc) {
        rc = rl_model_load(&m, be, dir, 0, err, sizeof err);
        if (!rc)
            rc = rl_model_prepare(m, 1, T, 0, 16, err, sizeof err);
        if (!rc)
            rc = rl_model_forward(m, ids, err, sizeof err);
    }
    logits_sink sink = {.be = be, .out = ref, .vocab = V};
    if (!rc)
        rc = rl_model_logits(m, keep_logits, &sink, err, sizeof err);
    if (rc) {
        fprintf(stderr, "generate_check: %s\n", err);
        return 1;
    }
    double maxerr = 0, scale = 0, maxerr_steps = 0;
    for (int t = 0; t < T; t++)
        for (int v = 0; v < V; v++) {
            const size_t e = (size_t)t * V + v;
            const double d = fabs((double)got[e] - ref[e]);
            maxerr = d > maxerr ? d : maxerr;
            if (t >= P)
                maxerr_steps = d > maxerr_steps ? d : maxerr_steps;
            scale = fabs(ref[e]) > scale ? fabs(ref[e]) : scale;
        }
    int mismatched = 0;
    for (int s = 0; s < S; s++) {
        const float *r = ref + (size_t)(P + s - 1) * V;
        const int best = argmax(r, V);
        if (best != ids[P + s]) {
            /* only a near-tie may flip the choice: both within the error of each other */
            if (fabs((double)r[best] - r[ids[P + s]]) > 2 * maxerr + 1e-6)
                mismatched++;
        }
    }
    const double rel = maxerr / (scale > 0 ? scale : 1);
    const int ok = rel <= 1e-4 && mismatched == 0;
    printf("%s: %d prompt tokens (chunks of %d) + %d greedy steps, vocab %d: max |generate - full forward| = %.3g "
           "(steps %.3g), relative %.3g (tolerance 1e-4); greedy tokens differing from the full forward's argmax: "
           "%d  %s\n", kind, P, C, S, V, maxerr, maxerr_steps, rel, mismatched, ok ? "ok" : "FAIL");
    free(ids), free(got), free(ref);
    if (stu)
        rl_student_destroy(stu);
    else
        rl_model_destroy(m);
    rl_backend_destroy(be);
    return ok ? 0 : 1;
}
