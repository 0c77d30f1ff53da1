/* teacher_dump.c — test helper: runs the C teacher forward + cross-entropy +
 * backward on given ids and writes everything a reference needs to compare into
 * one safetensors file: "loss" [1], "logits" [R, V], "capture.<l>.attn_in" and
 * "capture.<l>.attn_out" [R, D], and "grad.<param>" for every parameter.
 *
 * usage: teacher_dump --model DIR --ids 1,2,... --batch B --out FILE [--chunk-rows C]
 * Row r of batch b predicts ids[b·T + t + 1]; the last position of each row is ignored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

typedef struct {
    rl_st_writer *w;
    float *host;
    int vocab;
} ctx;

static int put_logits(void *p, int row0, int rows, const float *logits, char *err, size_t errlen)
{
    (void)row0;
    ctx *c = p;
    memcpy(c->host, logits, sizeof(float) * (size_t)rows * c->vocab); /* CPU backend: host memory */
    return rl_st_writer_append(c->w, c->host, (size_t)rows * c->vocab, err, errlen);
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *ids_s = NULL, *out = NULL;
    int batch = 1, chunk = 4;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) dir = argv[i + 1];
        else if (!strcmp(argv[i], "--ids")) ids_s = argv[i + 1];
        else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--chunk-rows")) chunk = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "teacher_dump: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (!dir || !ids_s || !out || batch < 1) {
        fprintf(stderr, "usage: teacher_dump --model DIR --ids 1,2,... --batch B --out FILE [--chunk-rows C]\n");
        return 2;
    }
    int32_t ids[4096];
    int n = 0;
    for (const char *s = ids_s; *s && n < 4096;) {
        ids[n++] = (int32_t)strtol(s, (char **)&s, 10);
        if (*s == ',')
            s++;
    }
    if (n % batch) {
        fprintf(stderr, "teacher_dump: %d ids do not split into %d rows\n", n, batch);
        return 2;
    }
    const int T = n / batch;
    int32_t targets[4096];
    for (int i = 0; i < n; i++)
        targets[i] = (i % T) + 1 < T ? ids[i + 1] : -1;

    char err[1024];
    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    rl_model *m = NULL;
    double loss = 0;
    int rc = rl_backend_create(&be, &bo, err, sizeof err);
    if (!rc)
        rc = rl_model_load(&m, be, dir, 1, err, sizeof err);
    if (!rc)
        rc = rl_model_prepare(m, batch, T, 1, chunk, err, sizeof err);
    if (!rc)
        rc = rl_model_forward(m, ids, err, sizeof err);
    if (!rc) {
        rl_model_zero_grads(m);
        rc = rl_model_loss(m, targets, 1, &loss, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "teacher_dump: %s\n", err);
        rl_model_destroy(m);
        rl_backend_destroy(be);
        return 1;
    }
    const rl_model_config *c = &m->cfg;
    const int L = c->layers, P = m->grads.n, R = n;
    int ne = 2 + 2 * L + P;
    rl_st_entry *e = calloc((size_t)ne, sizeof *e);
    char (*names)[128] = calloc((size_t)ne, sizeof *names);
    e[0] = (rl_st_entry){.name = "loss", .dtype = RL_DTYPE_F32, .ndim = 1, .shape = {1}};
    e[1] = (rl_st_entry){.name = "logits", .dtype = RL_DTYPE_F32, .ndim = 2, .shape = {R, c->vocab}};
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 2; k++) {
            int i = 2 + 2 * l + k;
            snprintf(names[i], sizeof names[i], "capture.%d.%s", l, k ? "attn_out" : "attn_in");
            e[i] = (rl_st_entry){.name = names[i], .dtype = RL_DTYPE_F32, .ndim = 2, .shape = {R, c->hidden}};
        }
    for (int p = 0; p < P; p++) {
        const rl_arena_entry *a = &m->grads.entries[p];
        int i = 2 + 2 * L + p;
        snprintf(names[i], sizeof names[i], "grad.%s", a->name);
        e[i] = (rl_st_entry){.name = names[i], .dtype = RL_DTYPE_F32, .ndim = a->ndim};
        memcpy(e[i].shape, a->shape, sizeof a->shape);
    }
    ctx cx = {.vocab = c->vocab, .host = malloc(sizeof(float) * (size_t)m->chunk_rows * c->vocab)};
    float lossf = (float)loss;
    rc = rl_st_writer_open(&cx.w, out, e, ne, NULL, 0, err, sizeof err);
    if (!rc)
        rc = rl_st_writer_append(cx.w, &lossf, 1, err, sizeof err);
    if (!rc)
        rc = rl_model_logits(m, put_logits, &cx, err, sizeof err);
    for (int l = 0; l < L && !rc; l++) {
        rc = rl_st_writer_append(cx.w, m->layer_acts[l].ln1, (size_t)R * c->hidden, err, sizeof err);
        if (!rc)
            rc = rl_st_writer_append(cx.w, m->layer_acts[l].attn_out, (size_t)R * c->hidden, err, sizeof err);
    }
    for (int p = 0; p < P && !rc; p++)
        rc = rl_st_writer_append(cx.w, rl_arena_ptr(&m->grads, p), m->grads.entries[p].count, err, sizeof err);
    if (!rc)
        rc = rl_st_writer_finish(cx.w, err, sizeof err);
    else
        rl_st_writer_abort(cx.w);
    if (rc)
        fprintf(stderr, "teacher_dump: %s\n", err);
    else
        printf("loss %.9g\n", loss);
    free(cx.host), free(e), free(names);
    rl_model_destroy(m);
    rl_backend_destroy(be);
    return rc ? 1 : 0;
}
