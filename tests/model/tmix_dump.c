/* tmix_dump.c — test helper: runs one C time-mix layer forward and backward on
 * tensors given in a safetensors file and writes what a reference compares.
 *
 * usage: tmix_dump --in FILE --out FILE --arch 7|6 --variant a|b --layer L --batch B --heads H --kv-heads G
 *                  [--head-dim N] [--norm-eps E] [--rope-theta T | --no-rope]
 * in:  u [R,D], dy [R,D]; layer > 0: v_first [R,A]; layer 0: dv_first [R,A] (the later
 *      layers' gradient of v_first), A = heads·N (N = D/heads unless --head-dim); parameters
 *      by their names in the reference release (q_proj.weight, ..., w0, w1, ..., ln_x.weight;
 *      q_norm.weight and k_norm.weight turn on Qwen3's q/k norms, o_proj.bias the output
 *      bias). Ranks come from the tensor shapes.
 * out: y, v_first (layer 0), grad.u, grad.v_first (layer > 0), grad.<parameter>. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "student.h"

#define MAXT 48

typedef struct {
    const char *name;
    float **p, **g;
} slot;

int main(int argc, char **argv)
{
    const char *inp = NULL, *outp = NULL;
    int variant = 'b', layer = 0, batch = 1, heads = 0, kv = 0, rope = 1, arch = 7, head_dim = 0;
    double theta = 1e6, norm_eps = 1e-6;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--no-rope")) {
            rope = 0;
            continue;
        }
        i++;
        if (!strcmp(a, "--in")) inp = v;
        else if (!strcmp(a, "--out")) outp = v;
        else if (!strcmp(a, "--arch")) arch = atoi(v);
        else if (!strcmp(a, "--variant")) variant = v[0];
        else if (!strcmp(a, "--layer")) layer = atoi(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--heads")) heads = atoi(v);
        else if (!strcmp(a, "--kv-heads")) kv = atoi(v);
        else if (!strcmp(a, "--rope-theta")) theta = atof(v);
        else if (!strcmp(a, "--head-dim")) head_dim = atoi(v);
        else if (!strcmp(a, "--norm-eps")) norm_eps = atof(v);
        else {
            fprintf(stderr, "tmix_dump: unknown option %s\n", a);
            return 2;
        }
    }
    if (!inp || !outp || heads <= 0 || kv <= 0 || batch <= 0) {
        fprintf(stderr, "usage: tmix_dump --in FILE --out FILE --variant a|b --layer L --batch B --heads H "
                        "--kv-heads G [--rope-theta T | --no-rope]\n");
        return 2;
    }
    char err[1024];
    rl_safetensors *st;
    if (rl_st_open_file(&st, inp, err, sizeof err)) {
        fprintf(stderr, "tmix_dump: %s\n", err);
        return 1;
    }
    const rl_st_tensor *tu = rl_st_find(st, "u");
    const int R = (int)tu->shape[0], D = (int)tu->shape[1], N = head_dim ? head_dim : D / heads, T = R / batch;
    const int A = heads * N;
    rl_tmix_dims d = {.arch = arch == 6 ? RL_STUDENT_RWKV6 : RL_STUDENT_RWKV7, .variant = variant, .hidden = D,
                      .heads = heads, .kv_heads = kv, .head_dim = N, .layer = layer, .layers = layer + 2,
                      .qkv_bias = 1, .use_rope = rope, .qk_norm = rl_st_find(st, "q_norm.weight") != NULL,
                      .norm_eps = (float)norm_eps, .batch = batch, .seq = T};
#define RANK(name, dim) (rl_st_find(st, name) ? (int)rl_st_find(st, name)->shape[dim] : 32)
    if (arch == 6) {
        d.rank_decay = RANK("time_decay_w1", 1);
        d.rank_shift = RANK("time_maa_w1", 1) / 5;
    } else {
        d.rank_decay = RANK("w1", 1), d.rank_iclr = RANK("a1", 1), d.rank_gate = RANK("g1", 1);
        d.rank_value = RANK("v1", 1);
    }
    rl_tmix_params p = {0}, g = {0};
    slot slots[] = {
        {"q_proj.weight", &p.q_w, &g.q_w}, {"q_proj.bias", &p.q_b, &g.q_b}, {"k_proj.weight", &p.k_w, &g.k_w},
        {"k_proj.bias", &p.k_b, &g.k_b},  {"v_proj.weight", &p.v_w, &g.v_w}, {"v_proj.bias", &p.v_b, &g.v_b},
        {"o_proj.weight", &p.o_w, &g.o_w}, {"o_proj.bias", &p.o_b, &g.o_b},
        {"q_norm.weight", &p.q_norm_w, &g.q_norm_w}, {"k_norm.weight", &p.k_norm_w, &g.k_norm_w}, {"w0", &p.w0, &g.w0}, {"w1", &p.w1, &g.w1}, {"w2", &p.w2, &g.w2},
        {"a0", &p.a0, &g.a0}, {"a1", &p.a1, &g.a1}, {"a2", &p.a2, &g.a2}, {"v0", &p.v0, &g.v0},
        {"v1", &p.v1, &g.v1}, {"v2", &p.v2, &g.v2}, {"g1", &p.g1, &g.g1}, {"g2", &p.g2, &g.g2},
        {"k_k", &p.k_k, &g.k_k}, {"k_a", &p.k_a, &g.k_a}, {"ln_x.weight", &p.lnx_w, &g.lnx_w},
        {"ln_x.bias", &p.lnx_b, &g.lnx_b},
        {"time_maa_x", &p.maa_x, &g.maa_x}, {"time_maa_r", &p.maa[0], &g.maa[0]},
        {"time_maa_k", &p.maa[1], &g.maa[1]}, {"time_maa_v", &p.maa[2], &g.maa[2]},
        {"time_maa_w", &p.maa[3], &g.maa[3]}, {"time_maa_g", &p.maa[4], &g.maa[4]},
        {"time_maa_w1", &p.maa_w1, &g.maa_w1}, {"time_maa_w2", &p.maa_w2, &g.maa_w2},
        {"time_decay", &p.decay, &g.decay}, {"time_decay_w1", &p.decay_w1, &g.decay_w1},
        {"time_decay_w2", &p.decay_w2, &g.decay_w2}, {"gate.weight", &p.gate_w, &g.gate_w},
    };
    const int ns = sizeof slots / sizeof slots[0];
    rl_st_entry ents[MAXT + 8];
    int ne = 0;
    size_t counts[MAXT];
    int present[MAXT] = {0};
    for (int i = 0; i < ns; i++) {
        const rl_st_tensor *t = rl_st_find(st, slots[i].name);
        if (!t)
            continue;
        size_t n = 1;
        for (int k = 0; k < t->ndim; k++)
            n *= (size_t)t->shape[k];
        *slots[i].p = malloc(sizeof(float) * n);
        *slots[i].g = calloc(n, sizeof(float));
        counts[i] = n, present[i] = 1;
        rl_st_read_f32(st, slots[i].name, *slots[i].p, t->ndim, t->shape, err, sizeof err);
    }
    const size_t RD = (size_t)R * D, RA = (size_t)R * A;
    float *u = malloc(sizeof(float) * RD), *dy = malloc(sizeof(float) * RD), *y = malloc(sizeof(float) * RD);
    float *vf = calloc(RA, sizeof(float)), *dvf = calloc(RA, sizeof(float)), *du = calloc(RD, sizeof(float));
    int64_t shp[2] = {R, D}, shp_a[2] = {R, A};
    rl_st_read_f32(st, "u", u, 2, shp, err, sizeof err);
    rl_st_read_f32(st, "dy", dy, 2, shp, err, sizeof err);
    if (rl_st_read_f32(st, layer > 0 ? "v_first" : "dv_first", layer > 0 ? vf : dvf, 2, shp_a, err, sizeof err)) {
        fprintf(stderr, "tmix_dump: %s\n", err);
        return 1;
    }

    rl_backend *be;
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    int rc = rl_backend_create(&be, &bo, err, sizeof err);
    rl_model_config mc = {.head_dim = N, .rope_theta = theta};
    float *cs = malloc(sizeof(float) * (size_t)T * N);
    rl_rope_tables(&mc, T, cs, cs + (size_t)T * (N / 2));
    rl_tmix_acts a;
    if (!rc)
        rc = rl_tmix_acts_alloc(be, &d, 1, &a, err, sizeof err);
    if (!rc) {
        const float *sn = cs + (size_t)T * (N / 2);
        if (arch == 6) {
            rl_tmix6_forward(be, &d, &p, &a, u, NULL, cs, sn, y);
            rl_tmix6_backward(be, &d, &p, &g, &a, u, NULL, cs, sn, dy, du);
        } else {
            rl_tmix7_forward(be, &d, &p, &a, u, vf, cs, sn, y);
            rl_tmix7_backward(be, &d, &p, &g, &a, u, vf, dvf, cs, sn, dy, du);
        }
        rc = rl_backend_status(be, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "tmix_dump: %s\n", err);
        return 1;
    }
    /* output */
    const char *xn[3] = {"y", layer ? "grad.v_first" : "v_first", "grad.u"};
    float *xp[3] = {y, layer ? dvf : vf, du};
    for (int i = 0; i < 3; i++)
        ents[ne++] = (rl_st_entry){.name = xn[i], .dtype = RL_DTYPE_F32, .ndim = 2, .shape = {R, i == 1 ? A : D}};
    char names[MAXT][64];
    for (int i = 0; i < ns; i++)
        if (present[i]) {
            snprintf(names[i], sizeof names[i], "grad.%s", slots[i].name);
            ents[ne++] = (rl_st_entry){.name = names[i], .dtype = RL_DTYPE_F32, .ndim = 1, .shape = {(int64_t)counts[i]}};
        }
    rl_st_writer *w;
    rc = rl_st_writer_open(&w, outp, ents, ne, NULL, 0, err, sizeof err);
    for (int i = 0; i < 3 && !rc; i++)
        rc = rl_st_writer_append(w, xp[i], i == 1 ? RA : RD, err, sizeof err);
    for (int i = 0; i < ns && !rc; i++)
        if (present[i])
            rc = rl_st_writer_append(w, *slots[i].g, counts[i], err, sizeof err);
    if (!rc)
        rc = rl_st_writer_finish(w, err, sizeof err);
    if (rc)
        fprintf(stderr, "tmix_dump: %s\n", err);
    rl_tmix_acts_free(be, &a);
    rl_backend_destroy(be);
    rl_st_close(st);
    for (int i = 0; i < ns; i++)
        free(*slots[i].p), free(*slots[i].g);
    free(u), free(dy), free(y), free(vf), free(dvf), free(du), free(cs);
    return rc ? 1 : 0;
}
