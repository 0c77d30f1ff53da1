/* student.c — the RADLADS student model: parameter table with the reference
 * release's tensor names, weight transfer from a teacher with the METHOD.md init
 * formulas, HF-style save/load, and the parallel forward.
 *
 * Layer l < layers − attention_layers is a time-mix layer; its new tensors are
 * model.layers.<l>.self_attn.<name> (RAD-RWKV7: w0 w1 w2 a0 a1 a2 v0 v1 v2 g1 g2
 * r_k [k_k k_a ln_x.weight ln_x.bias for variant a]; RAD-RWKV6: time_maa_x
 * time_maa_{r,k,v,w,g} time_maa_w1 time_maa_w2 time_decay time_decay_w1
 * time_decay_w2 gate.weight). q/k/v/o (with their biases) and Qwen3's q_norm/k_norm
 * keep the teacher's names and values. Per-channel tensors are A = heads·head_dim
 * wide, LoRA inputs D = hidden wide (they differ for an explicit head_dim). */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_int.h"
#include "student.h"

int rl_student_arch_from_name(const char *s, rl_student_arch *out)
{
    if (strcmp(s, "rad-rwkv7") == 0)
        *out = RL_STUDENT_RWKV7;
    else if (strcmp(s, "rad-rwkv6") == 0)
        *out = RL_STUDENT_RWKV6;
    else
        return RL_EINVAL;
    return 0;
}

const char *rl_student_arch_name(rl_student_arch a) { return a == RL_STUDENT_RWKV6 ? "rad-rwkv6" : "rad-rwkv7"; }

static int student_layers(const rl_student *s) { return s->base->cfg.layers - s->attention_layers; }

/* ---- parameter table ---- */

static int add(rl_arena *a, int l, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    char n[96];
    snprintf(n, sizeof n, "model.layers.%d.self_attn.%s", l, name);
    int64_t shape[3] = {d0, d1, d2};
    return rl_arena_add(a, n, ndim, shape);
}

void rl_student_default_ranks(int hidden, rl_student_ranks *r)
{
    r->decay = r->iclr = r->shift = rl_lora_rank(hidden, 0.5, 1.8);
    r->value = rl_lora_rank(hidden, 0.5, 1.3);
    r->gate = rl_lora_rank(hidden, 0.8, 0.6);
}

int rl_student_param_table(rl_arena *ta, const rl_model_config *c, rl_student_arch arch, int variant,
                           int attention_layers, const rl_student_ranks *r)
{
    const int64_t D = c->hidden, A = (int64_t)c->heads * c->head_dim;
    int rc = ta->base ? RL_EINVAL : 0;
    for (int l = 0; l < c->layers - attention_layers && rc >= 0; l++) {
        if (arch == RL_STUDENT_RWKV7) {
            rc |= add(ta, l, "w0", 1, A, 0, 0) | add(ta, l, "w1", 2, D, r->decay, 0);
            rc |= add(ta, l, "w2", 2, r->decay, A, 0);
            rc |= add(ta, l, "a0", 1, A, 0, 0) | add(ta, l, "a1", 2, D, r->iclr, 0);
            rc |= add(ta, l, "a2", 2, r->iclr, A, 0);
            rc |= add(ta, l, "v0", 1, A, 0, 0) | add(ta, l, "v1", 2, D, r->value, 0);
            rc |= add(ta, l, "v2", 2, r->value, A, 0);
            rc |= add(ta, l, "g1", 2, D, r->gate, 0) | add(ta, l, "g2", 2, r->gate, A, 0);
            rc |= add(ta, l, "r_k", 2, c->heads, c->head_dim, 0);
            if (variant == 'a') {
                rc |= add(ta, l, "k_k", 1, A, 0, 0) | add(ta, l, "k_a", 1, A, 0, 0);
                rc |= add(ta, l, "ln_x.weight", 1, A, 0, 0) | add(ta, l, "ln_x.bias", 1, A, 0, 0);
            }
        } else {
            static const char *maa[] = {"time_maa_x", "time_maa_r", "time_maa_k", "time_maa_v", "time_maa_w",
                                        "time_maa_g"};
            for (int i = 0; i < 6; i++)
                rc |= add(ta, l, maa[i], 1, D, 0, 0);
            rc |= add(ta, l, "time_maa_w1", 2, D, 5 * r->shift, 0);
            rc |= add(ta, l, "time_maa_w2", 3, 5, r->shift, D);
            rc |= add(ta, l, "time_decay", 1, A, 0, 0);
            rc |= add(ta, l, "time_decay_w1", 2, D, r->decay, 0);
            rc |= add(ta, l, "time_decay_w2", 2, r->decay, A, 0);
            rc |= add(ta, l, "gate.weight", 2, A, D, 0);
        }
    }
    return rc < 0 ? (ta->base ? RL_EINVAL : RL_ENOMEM) : 0;
}

static int build_table(rl_student *s)
{
    const rl_student_ranks r = {.decay = s->rank_decay, .iclr = s->rank_iclr, .value = s->rank_value,
                                .gate = s->rank_gate, .shift = s->rank_shift};
    return rl_student_param_table(s->tparams, &s->base->cfg, s->arch, s->variant, s->attention_layers, &r);
}

static float *tp_get(const rl_arena *a, int l, const char *name)
{
    char n[96];
    snprintf(n, sizeof n, "model.layers.%d.self_attn.%s", l, name);
    return rl_arena_ptr(a, rl_arena_find(a, n));
}

static void bind(rl_student *s)
{
    const rl_model_config *c = &s->base->cfg;
    for (int l = 0; l < student_layers(s); l++) {
        rl_tmix_params *p = &s->tp[l];
        const rl_layer_params *b = &s->base->p.layers[l];
        const rl_arena *a = s->tparams;
        memset(p, 0, sizeof *p);
        p->q_w = b->q_w, p->q_b = b->q_b, p->k_w = b->k_w, p->k_b = b->k_b, p->v_w = b->v_w, p->v_b = b->v_b;
        p->o_w = b->o_w, p->o_b = b->o_b, p->q_norm_w = b->q_norm_w, p->k_norm_w = b->k_norm_w;
        p->w0 = tp_get(a, l, "w0"), p->w1 = tp_get(a, l, "w1"), p->w2 = tp_get(a, l, "w2");
        p->a0 = tp_get(a, l, "a0"), p->a1 = tp_get(a, l, "a1"), p->a2 = tp_get(a, l, "a2");
        p->v0 = tp_get(a, l, "v0"), p->v1 = tp_get(a, l, "v1"), p->v2 = tp_get(a, l, "v2");
        p->g1 = tp_get(a, l, "g1"), p->g2 = tp_get(a, l, "g2"), p->r_k = tp_get(a, l, "r_k");
        p->k_k = tp_get(a, l, "k_k"), p->k_a = tp_get(a, l, "k_a");
        p->lnx_w = tp_get(a, l, "ln_x.weight"), p->lnx_b = tp_get(a, l, "ln_x.bias");
        p->maa_x = tp_get(a, l, "time_maa_x");
        p->maa[0] = tp_get(a, l, "time_maa_r"), p->maa[1] = tp_get(a, l, "time_maa_k");
        p->maa[2] = tp_get(a, l, "time_maa_v"), p->maa[3] = tp_get(a, l, "time_maa_w");
        p->maa[4] = tp_get(a, l, "time_maa_g");
        p->maa_w1 = tp_get(a, l, "time_maa_w1"), p->maa_w2 = tp_get(a, l, "time_maa_w2");
        p->decay = tp_get(a, l, "time_decay"), p->decay_w1 = tp_get(a, l, "time_decay_w1");
        p->decay_w2 = tp_get(a, l, "time_decay_w2"), p->gate_w = tp_get(a, l, "gate.weight");
        rl_tmix_dims *d = &s->td[l];
        *d = (rl_tmix_dims){.arch = s->arch, .variant = s->variant, .hidden = c->hidden, .heads = c->heads,
                            .kv_heads = c->kv_heads, .head_dim = c->head_dim, .layer = l, .layers = c->layers,
                            .rank_decay = s->rank_decay, .rank_iclr = s->rank_iclr, .rank_value = s->rank_value,
                            .rank_gate = s->rank_gate, .rank_shift = s->rank_shift, .qkv_bias = c->qkv_bias,
                            .use_rope = s->use_rope, .qk_norm = c->qk_norm, .norm_eps = (float)c->rms_norm_eps};
    }
}

/* Checks the teacher fits the time-mix layers; allocates the student around base. */
static int student_new(rl_student **out, rl_model *base, rl_student_arch arch, int variant, int attention_layers,
                       char *err, size_t errlen)
{
    const rl_model_config *c = &base->cfg;
    *out = NULL;
    if (arch == RL_STUDENT_RWKV7 && variant != 'a' && variant != 'b') {
        snprintf(err, errlen, "variant \"%c\" is not known; RAD-RWKV7 has variant a (k_k/k_a + GroupNorm) and b "
                 "(state balancing)", variant);
        return RL_EINVAL;
    }
    if (c->heads <= 0 || c->kv_heads <= 0 || c->heads % c->kv_heads || c->head_dim <= 0 || c->head_dim % 2) {
        snprintf(err, errlen, "heads=%d kv_heads=%d head_dim=%d: the time-mix layers need kv_heads dividing heads "
                 "and an even head_dim", c->heads, c->kv_heads, c->head_dim);
        return RL_EINVAL;
    }
    if (attention_layers < 0 || attention_layers >= c->layers) {
        snprintf(err, errlen, "attention layers %d must lie in [0, %d) (num_hidden_layers=%d)", attention_layers,
                 c->layers, c->layers);
        return RL_EINVAL;
    }
    rl_student *s = calloc(1, sizeof *s);
    rl_arena *ta = calloc(1, sizeof *ta);
    if (!s || !ta) {
        free(s), free(ta);
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    s->base = base, s->arch = arch, s->variant = arch == RL_STUDENT_RWKV7 ? variant : 0;
    s->attention_layers = attention_layers, s->use_rope = arch == RL_STUDENT_RWKV7;
    s->tparams = ta;
    rl_arena_init(ta, "student params");
    s->tp = calloc((size_t)c->layers, sizeof *s->tp);
    s->td = calloc((size_t)c->layers, sizeof *s->td);
    s->ta = calloc((size_t)c->layers, sizeof *s->ta);
    if (!s->tp || !s->td || !s->ta) {
        s->base = NULL;
        rl_student_destroy(s);
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    *out = s;
    return 0;
}

void rl_student_destroy(rl_student *s)
{
    if (!s)
        return;
    if (s->base) {
        for (int l = s->base->cfg.layers - 1; l >= 0 && s->ta; l--) /* sharing layers before layer 0 */
            rl_tmix_acts_free(s->base->be, &s->ta[l]);
        rl_free(s->base->be, s->v_first);
        if (s->tparams)
            rl_arena_free(s->tparams, s->base->be);
        rl_model_destroy(s->base);
    }
    free(s->tparams), free(s->tp), free(s->td), free(s->ta);
    free(s);
}

/* ---- init formulas (METHOD.md §1–2) ---- */

static uint64_t next_u64(uint64_t *st)
{
    uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double uniform01(uint64_t *st) { return ((double)(next_u64(st) >> 11) + 0.5) / 9007199254740992.0; }
static double normal(uint64_t *st)
{
    double u1 = uniform01(st), u2 = uniform01(st);
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

/* A random orthogonal rows×cols matrix (orthonormal rows if rows ≤ cols, else
 * orthonormal columns) times gain = scale·√(rows/cols) if rows > cols else scale:
 * Gram–Schmidt (twice, for fp64 orthogonality) on Gaussian vectors. */
static int orthogonal(float *out, int rows, int cols, double scale, uint64_t *st)
{
    const int k = rows < cols ? rows : cols, n = rows < cols ? cols : rows;
    double *q = malloc(sizeof(double) * (size_t)k * n);
    if (!q)
        return RL_ENOMEM;
    for (int i = 0; i < k; i++) {
        double *v = q + (size_t)i * n;
        for (int j = 0; j < n; j++)
            v[j] = normal(st);
        for (int pass = 0; pass < 2; pass++)
            for (int p = 0; p < i; p++) {
                const double *u = q + (size_t)p * n;
                double dot = 0;
                for (int j = 0; j < n; j++)
                    dot += u[j] * v[j];
                for (int j = 0; j < n; j++)
                    v[j] -= dot * u[j];
            }
        double nn = 0;
        for (int j = 0; j < n; j++)
            nn += v[j] * v[j];
        nn = sqrt(nn);
        for (int j = 0; j < n; j++)
            v[j] /= nn;
    }
    const double gain = rows > cols ? scale * sqrt((double)rows / cols) : scale;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            out[(size_t)r * cols + c] = (float)(gain * (rows <= cols ? q[(size_t)r * n + c] : q[(size_t)c * n + r]));
    free(q);
    return 0;
}

static int init_tensor(const rl_student *s, const rl_arena_entry *e, float *h, uint64_t *st)
{
    const rl_model_config *c = &s->base->cfg;
    int l = 0;
    char name[64];
    if (sscanf(e->name, "model.layers.%d.self_attn.%63s", &l, name) != 2)
        return RL_EINVAL;
    const int n_ch = (int)e->count; /* 1-D tensors: A = heads·head_dim channels */
    const double frac_l = c->layers > 1 ? (double)l / (c->layers - 1) : 0.0;
    for (size_t i = 0; i < e->count; i++)
        h[i] = 0.0f;
    if (!strcmp(name, "w0")) {
        for (int n = 0; n < n_ch; n++)
            h[n] = (float)(-7 + 5 * pow((double)n / (n_ch > 1 ? n_ch - 1 : 1), 0.85 + sqrt(frac_l)) + 0.5);
    } else if (!strcmp(name, "v0")) {
        for (int n = 0; n < n_ch; n++)
            h[n] = 1.0f;
    } else if (!strcmp(name, "k_k") || !strcmp(name, "k_a") || !strcmp(name, "ln_x.weight")) {
        for (int n = 0; n < n_ch; n++)
            h[n] = !strcmp(name, "k_k") ? 0.85f : 1.0f;
    } else if (!strcmp(name, "w2") || !strcmp(name, "a2") || !strcmp(name, "v2") || !strcmp(name, "g2")) {
        return orthogonal(h, (int)e->shape[0], (int)e->shape[1], 0.1, st);
    } else if (!strcmp(name, "time_maa_x")) {
        for (int n = 0; n < n_ch; n++)
            h[n] = 1.0f;
    } else if (!strcmp(name, "time_decay")) {
        for (int n = 0; n < n_ch; n++)
            h[n] = (float)(-6 + 5 * pow((double)n / (n_ch > 1 ? n_ch - 1 : 1), 0.7 + 1.3 * frac_l));
    } else if (!strcmp(name, "time_maa_w2") || !strcmp(name, "time_decay_w2")) {
        for (size_t i = 0; i < e->count; i++)
            h[i] = (float)(0.01 * (2 * uniform01(st) - 1));
    }
    /* everything else starts at 0: w1 a0 a1 v1 g1 r_k ln_x.bias time_maa_{r,k,v,w,g,w1}
     * time_decay_w1 and gate.weight (σ(0) = 0.5, the intended start) */
    return 0;
}

static int init_all(rl_student *s, uint64_t seed, char *err, size_t errlen)
{
    uint64_t st = seed ^ 0x5241444c41445321ull;
    for (int i = 0; i < s->tparams->n; i++) {
        const rl_arena_entry *e = &s->tparams->entries[i];
        float *h = malloc(sizeof(float) * (e->count ? e->count : 1));
        int rc = h ? init_tensor(s, e, h, &st) : RL_ENOMEM;
        if (!rc)
            rc = rl_upload(s->base->be, s->tparams->base + e->offset, h, e->count * sizeof(float));
        free(h);
        if (rc) {
            snprintf(err, errlen, "initialising %s: out of memory", e->name);
            return rc;
        }
    }
    return 0;
}

static void default_ranks(rl_student *s)
{
    rl_student_ranks r;
    rl_student_default_ranks(s->base->cfg.hidden, &r);
    s->rank_decay = r.decay, s->rank_iclr = r.iclr, s->rank_value = r.value, s->rank_gate = r.gate;
    s->rank_shift = r.shift;
}

int rl_student_transfer(rl_student **out, rl_backend *be, const char *teacher_dir, rl_student_arch arch, int variant,
                        int attention_layers, uint64_t seed, char *err, size_t errlen)
{
    *out = NULL;
    rl_model *base;
    int rc = rl_model_load(&base, be, teacher_dir, 0, err, errlen);
    if (rc)
        return rc;
    rl_student *s;
    rc = student_new(&s, base, arch, variant, attention_layers, err, errlen);
    if (rc) {
        rl_model_destroy(base);
        return rc;
    }
    default_ranks(s);
    rc = build_table(s);
    if (!rc)
        rc = rl_arena_alloc(s->tparams, be, err, errlen);
    if (!rc) {
        bind(s);
        rc = init_all(s, seed, err, errlen);
    }
    if (rc) {
        rl_student_destroy(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ---- which tensors train ---- */

int rl_tensor_trains(const char *name, rl_param_set set, int mix_layers)
{
    int l;
    char rest[96];
    const int self_attn = sscanf(name, "model.layers.%d.self_attn.%95s", &l, rest) == 2;
    switch (set) {
    case RL_TRAINS_TIME_MIX: return self_attn && l < mix_layers;
    case RL_TRAINS_DECAY_SHIFT:
        return self_attn && (!strncmp(rest, "time_decay", 10) || !strncmp(rest, "time_maa_w", 10) ||
                             !strcmp(rest, "w0") || !strcmp(rest, "w1") || !strcmp(rest, "w2"));
    case RL_TRAINS_ALL: break;
    }
    return 1;
}

/* ---- config.json: the teacher's fields plus the student's ---- */

static int write_config(const rl_student *s, const char *path, char *err, size_t errlen)
{
    int rc = rl_config_write(&s->base->cfg, path, err, errlen);
    if (rc)
        return rc;
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    if (!o) {
        snprintf(err, errlen, "%s: cannot re-read: %s", path, je.text);
        return RL_EINVAL;
    }
    json_object_set(o, "teacher_architectures", json_object_get(o, "architectures"));
    json_object_set(o, "teacher_model_type", json_object_get(o, "model_type"));
    const int seven = s->arch == RL_STUDENT_RWKV7;
    json_object_set_new(o, "architectures", json_pack("[s]", seven ? "RADRWKV7ForCausalLM" : "RADRWKV6ForCausalLM"));
    json_object_set_new(o, "model_type", json_string(rl_student_arch_name(s->arch)));
    if (seven) {
        char v[2] = {(char)s->variant, 0};
        json_object_set_new(o, "variant", json_string(v));
        json_object_set_new(o, "balance_state", json_boolean(s->variant == 'b'));
        json_object_set_new(o, "groupnorm_att", json_boolean(s->variant == 'a'));
        json_object_set_new(o, "a_low_rank_dim", json_integer(s->rank_iclr));
        json_object_set_new(o, "v_low_rank_dim", json_integer(s->rank_value));
        json_object_set_new(o, "gate_low_rank_dim", json_integer(s->rank_gate));
    } else {
        json_object_set_new(o, "balance_state", json_true());
        json_object_set_new(o, "groupnorm_att", json_false());
        json_object_set_new(o, "tokenshift_low_rank_dim", json_integer(s->rank_shift));
    }
    json_object_set_new(o, "decay_low_rank_dim", json_integer(s->rank_decay));
    json_object_set_new(o, "use_rope", json_boolean(s->use_rope));
    json_object_set_new(o, "head_size", json_integer(s->base->cfg.head_dim));
    json_object_set_new(o, "num_attention_layers", json_integer(s->attention_layers));
    rc = json_dump_file(o, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    json_decref(o);
    if (rc) {
        snprintf(err, errlen, "%s: cannot write", path);
        return RL_EINVAL;
    }
    return 0;
}

int rl_student_is_student_dir(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *o = json_load_file(path, 0, NULL);
    const char *mt = o ? json_string_value(json_object_get(o, "model_type")) : NULL;
    rl_student_arch a;
    int yes = mt && rl_student_arch_from_name(mt, &a) == 0;
    json_decref(o);
    return yes;
}

static int get_int(json_t *o, const char *key, int *dst, const char *path, char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 20) {
        snprintf(err, errlen, "%s: student field \"%s\" is missing or not a non-negative integer", path, key);
        return RL_EINVAL;
    }
    *dst = (int)json_integer_value(v);
    return 0;
}

int rl_student_load(rl_student **out, rl_backend *be, const char *dir, char *err, size_t errlen)
{
    return rl_student_load_ex(out, be, dir, 0, err, errlen);
}

static int every_matrix(void *ctx, const char *name) { return (void)ctx, (void)name, 1; }

int rl_student_load_ex(rl_student **out, rl_backend *be, const char *dir, int bf16_matrices, char *err,
                       size_t errlen)
{
    *out = NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *o = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!o) {
        snprintf(err, errlen, "%s: cannot read: %s", path, je.text);
        return RL_EINVAL;
    }
    int rc = 0, variant = 0, attn = 0, use_rope = 1;
    rl_student_arch arch;
    const char *mt = json_string_value(json_object_get(o, "model_type"));
    if (!mt || rl_student_arch_from_name(mt, &arch)) {
        snprintf(err, errlen, "%s: model_type \"%s\" is not a student (rad-rwkv7 or rad-rwkv6)", path, mt ? mt : "?");
        rc = RL_EINVAL;
    }
    if (!rc && arch == RL_STUDENT_RWKV7) {
        const char *v = json_string_value(json_object_get(o, "variant"));
        if (!v || strlen(v) != 1 || (v[0] != 'a' && v[0] != 'b')) {
            snprintf(err, errlen, "%s: \"variant\" is \"%s\"; RAD-RWKV7 variants are \"a\" and \"b\"", path,
                     v ? v : "(missing)");
            rc = RL_EINVAL;
        } else {
            variant = v[0];
        }
    }
    int rd = 0, ra = 0, rv = 0, rg = 0, rs = 0, head_size = 0;
    if (!rc)
        rc = get_int(o, "num_attention_layers", &attn, path, err, errlen) ||
             get_int(o, "head_size", &head_size, path, err, errlen) ||
             get_int(o, "decay_low_rank_dim", &rd, path, err, errlen) ? RL_EINVAL : 0;
    if (!rc && arch == RL_STUDENT_RWKV7)
        rc = get_int(o, "a_low_rank_dim", &ra, path, err, errlen) || get_int(o, "v_low_rank_dim", &rv, path, err,
             errlen) || get_int(o, "gate_low_rank_dim", &rg, path, err, errlen) ? RL_EINVAL : 0;
    if (!rc && arch == RL_STUDENT_RWKV6)
        rc = get_int(o, "tokenshift_low_rank_dim", &rs, path, err, errlen) ? RL_EINVAL : 0;
    if (!rc)
        use_rope = json_is_true(json_object_get(o, "use_rope"));
    /* the teacher's fields parse as the teacher's config */
    char *text = NULL;
    if (!rc) {
        json_object_set(o, "architectures", json_object_get(o, "teacher_architectures"));
        json_object_set(o, "model_type", json_object_get(o, "teacher_model_type"));
        text = json_dumps(o, 0);
    }
    json_decref(o);
    rl_model_config cfg;
    if (!rc)
        rc = text ? rl_config_parse(&cfg, text, strlen(text), path, err, errlen) : RL_ENOMEM;
    free(text);
    if (!rc && head_size != cfg.head_dim) {
        snprintf(err, errlen, "%s: head_size=%d differs from head_dim=%d (hidden_size %d, %d heads); the time-mix "
                 "state is head_dim×head_dim per head, so both must name the same head size", path, head_size,
                 cfg.head_dim, cfg.hidden, cfg.heads);
        rc = RL_EINVAL;
    }
    if (rc)
        return rc;
    rl_model *base;
    rc = !bf16_matrices ? rl_model_create(&base, be, &cfg, 0, err, errlen)
                        : rl__model_create_split(&base, be, &cfg, every_matrix, NULL, 1, err, errlen);
    if (rc)
        return rc;
    rl_student *s;
    rc = student_new(&s, base, arch, variant, attn, err, errlen);
    if (rc) {
        rl_model_destroy(base);
        return rc;
    }
    s->rank_decay = rd, s->rank_iclr = ra, s->rank_value = rv, s->rank_gate = rg, s->rank_shift = rs;
    s->use_rope = use_rope;
    rc = build_table(s);
    if (!rc)
        rc = rl_arena_alloc(s->tparams, be, err, errlen);
    rl_safetensors *st = NULL;
    if (!rc)
        rc = rl_st_open_dir(&st, dir, err, errlen);
    const int n_base = rl__model_n_tensors(base); /* the base model's tensors (fp32 and bf16), then tparams */
    for (int i = 0; i < n_base + s->tparams->n && !rc; i++) {
        int fz;
        const rl_arena_entry *e = i < n_base ? rl__model_tensor(base, i, &fz) : &s->tparams->entries[i - n_base];
        float *h = malloc(sizeof(float) * (e->count ? e->count : 1));
        rc = h ? rl_st_read_f32(st, e->name, h, e->ndim, e->shape, err, errlen) : RL_ENOMEM;
        if (!rc && i < n_base)
            rc = rl__model_tensor_upload(base, i, h, err, errlen);
        else if (!rc)
            rc = rl_upload(be, s->tparams->base + e->offset, h, e->count * sizeof(float));
        free(h);
    }
    for (int i = 0; st && i < rl_st_count(st) && !rc; i++) {
        const char *name = rl_st_at(st, i)->name;
        if (rl_arena_find(&base->params, name) < 0 && rl_arena_find(&base->frozen, name) < 0 &&
            rl_arena_find(s->tparams, name) < 0) {
            snprintf(err, errlen, "%s: tensor \"%s\" is not part of this %s student (config.json and weights "
                     "disagree?)", dir, name, rl_student_arch_name(arch));
            rc = RL_EINVAL;
        }
    }
    rl_st_close(st);
    if (rc) {
        rl_student_destroy(s);
        return rc;
    }
    bind(s);
    *out = s;
    return 0;
}

int rl_student_save(const rl_student *s, const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create folder: %s", dir, strerror(errno));
        return RL_EINVAL;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = write_config(s, path, err, errlen);
    if (rc)
        return rc;
    /* the base model's tensors (fp32 and bf16 tables: rl__model_tensor), then the time-mix ones */
    const int n_base = rl__model_n_tensors(s->base), n = n_base + s->tparams->n;
    rl_st_entry *ents = calloc((size_t)n, sizeof *ents);
    if (!ents) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    size_t maxc = 1;
    for (int j = 0, fz; j < n; j++) {
        const rl_arena_entry *e = j < n_base ? rl__model_tensor(s->base, j, &fz) : &s->tparams->entries[j - n_base];
        ents[j] = (rl_st_entry){.name = e->name, .dtype = RL_DTYPE_F32, .ndim = e->ndim};
        memcpy(ents[j].shape, e->shape, sizeof e->shape);
        maxc = e->count > maxc ? e->count : maxc;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const char *meta[] = {"format", "pt"};
    rl_st_writer *w;
    rc = rl_st_writer_open(&w, path, ents, n, meta, 1, err, errlen);
    free(ents);
    if (rc)
        return rc;
    float *h = malloc(sizeof(float) * maxc);
    rc = h ? 0 : RL_ENOMEM;
    for (int j = 0, fz; j < n && !rc; j++) {
        const rl_arena_entry *e = j < n_base ? rl__model_tensor(s->base, j, &fz) : &s->tparams->entries[j - n_base];
        rc = j < n_base ? rl__model_tensor_fetch(s->base, j, h, err, errlen)
                        : rl_download(s->base->be, h, s->tparams->base + e->offset, e->count * sizeof(float));
        if (!rc)
            rc = rl_st_writer_append(w, h, e->count, err, errlen);
    }
    free(h);
    if (rc) {
        rl_st_writer_abort(w);
        return rc;
    }
    return rl_st_writer_finish(w, err, errlen);
}

/* ---- forward ---- */

int rl_student_prepare(rl_student *s, int batch, int seq, int chunk_rows, char *err, size_t errlen)
{
    return rl_student_prepare_keep(s, batch, seq, chunk_rows, 0, RL_ACTS_NONE, 0, err, errlen);
}

int rl_student_prepare_keep(rl_student *s, int batch, int seq, int chunk_rows, int backward, rl_acts_keep keep,
                            int mix_own, char *err, size_t errlen)
{
    rl_model *m = s->base;
    m->mixer_only = s->attention_layers == 0; /* no softmax-attention buffers for an all-time-mix student */
    int rc = rl_model_prepare_keep(m, batch, seq, backward, chunk_rows, keep, err, errlen);
    for (int l = student_layers(s) - 1; l >= 0; l--)
        rl_tmix_acts_free(m->be, &s->ta[l]);
    for (int l = 0; l < student_layers(s) && !rc; l++) {
        s->td[l].batch = batch, s->td[l].seq = seq;
        rc = rl_tmix_acts_alloc_shared(m->be, &s->td[l], backward != 0, l ? &s->ta[0] : NULL, !mix_own,
                                       &s->ta[l], err, errlen);
    }
    rl_free(m->be, s->v_first);
    s->v_first = rc ? NULL : rl_malloc(m->be, sizeof(float) * (size_t)batch * seq * m->cfg.heads * m->cfg.head_dim);
    if (!rc && !s->v_first)
        rc = rl_backend_status(m->be, err, errlen);
    return rc;
}

int rl_student_mix_forward(rl_student *s, int l, const float *u, float *y)
{
    rl_model *m = s->base;
    if (s->arch == RL_STUDENT_RWKV7)
        return rl_tmix7_forward(m->be, &s->td[l], &s->tp[l], &s->ta[l], u, s->v_first, m->rope_cos, m->rope_sin, y);
    return rl_tmix6_forward(m->be, &s->td[l], &s->tp[l], &s->ta[l], u, NULL, m->rope_cos, m->rope_sin, y);
}

static int mixer_forward(void *ctx, int l, const float *ln1, float *attn_out)
{
    return rl_student_mix_forward(ctx, l, ln1, attn_out);
}

/* rl_model_forward with the time-mix in place of attention below the hybrid layers. */
int rl_student_forward(rl_student *s, const int32_t *tokens, char *err, size_t errlen)
{
    s->mixer = (rl_mixer){.layers = student_layers(s), .ctx = s, .forward = mixer_forward};
    s->base->mixer = &s->mixer;
    return rl_model_forward(s->base, tokens, err, errlen);
}

/* ---- recurrent inference ---- */

int rl_student_state_create(rl_student_state **out, const rl_student *s, int batch, int max_pos, char *err,
                            size_t errlen)
{
    const rl_model_config *c = &s->base->cfg;
    rl_backend *be = s->base->be;
    *out = NULL;
    if (batch <= 0 || max_pos <= 0) {
        snprintf(err, errlen, "recurrent inference: batch=%d max_pos=%d must be positive", batch, max_pos);
        return RL_EINVAL;
    }
    rl_student_state *st = calloc(1, sizeof *st);
    if (!st || !(st->wkv = calloc((size_t)c->layers, sizeof *st->wkv)) ||
        !(st->shift = calloc((size_t)c->layers, sizeof *st->shift)) ||
        !(st->kcache = calloc((size_t)c->layers, sizeof *st->kcache)) ||
        !(st->vcache = calloc((size_t)c->layers, sizeof *st->vcache))) {
        if (st)
            free(st->wkv), free(st->shift), free(st->kcache);
        free(st);
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    st->batch = batch, st->max_pos = max_pos;
    const size_t ns = (size_t)batch * c->heads * c->head_dim * c->head_dim, half = (size_t)c->head_dim / 2;
    int rc = 0;
    for (int l = 0; l < student_layers(s) && !rc; l++) {
        st->wkv[l] = rl_malloc(be, ns * sizeof(float));
        if (s->arch == RL_STUDENT_RWKV6)
            st->shift[l] = rl_malloc(be, (size_t)batch * c->hidden * sizeof(float));
        rc = !st->wkv[l] || (s->arch == RL_STUDENT_RWKV6 && !st->shift[l]) ? RL_ENOMEM : 0;
        if (!rc)
            rc = rl_zero(be, st->wkv[l], ns * sizeof(float));
        if (!rc && st->shift[l])
            rc = rl_zero(be, st->shift[l], (size_t)batch * c->hidden * sizeof(float));
    }
    const size_t nkv = (size_t)batch * max_pos * c->kv_heads * c->head_dim;
    for (int l = student_layers(s); l < c->layers && !rc; l++) {
        st->kcache[l] = rl_malloc(be, nkv * sizeof(float));
        st->vcache[l] = rl_malloc(be, nkv * sizeof(float));
        rc = st->kcache[l] && st->vcache[l] ? 0 : RL_ENOMEM;
    }
    float *host = rc ? NULL : malloc(sizeof(float) * 2 * (size_t)max_pos * half + 4);
    st->rope_cos = rl_malloc(be, sizeof(float) * (size_t)max_pos * half + 4);
    st->rope_sin = rl_malloc(be, sizeof(float) * (size_t)max_pos * half + 4);
    if (!rc && (!host || !st->rope_cos || !st->rope_sin))
        rc = RL_ENOMEM;
    if (!rc) {
        rl_rope_tables(c, max_pos, host, host + (size_t)max_pos * half);
        rl_upload(be, st->rope_cos, host, sizeof(float) * (size_t)max_pos * half);
        rl_upload(be, st->rope_sin, host + (size_t)max_pos * half, sizeof(float) * (size_t)max_pos * half);
    }
    free(host);
    if (rc) {
        snprintf(err, errlen, "recurrent inference: cannot allocate the state for batch %d", batch);
        rl_backend_clear_error(be);
        rl_student_state_destroy(s, st);
        return rc;
    }
    *out = st;
    return 0;
}

void rl_student_state_destroy(const rl_student *s, rl_student_state *st)
{
    if (!st)
        return;
    for (int l = 0; l < s->base->cfg.layers; l++) {
        rl_free(s->base->be, st->wkv[l]);
        rl_free(s->base->be, st->shift[l]);
        rl_free(s->base->be, st->kcache[l]);
        rl_free(s->base->be, st->vcache[l]);
    }
    rl_free(s->base->be, st->rope_cos);
    rl_free(s->base->be, st->rope_sin);
    free(st->wkv), free(st->shift), free(st->kcache), free(st->vcache);
    free(st);
}

/* A hybrid's softmax-attention layer l on T new tokens at positions pos..pos+T−1: q, k
 * as the teacher computes them (projection, q/k-norm, RoPE at the absolute positions),
 * k and v appended to the layer's KV cache, attention of the new queries over every
 * cached position up to their own, o_proj. Equals rl_attn_block_forward's rows. */
static int attn_cached_forward(rl_student *s, rl_student_state *st, int l, const float *cs, const float *sn)
{
    rl_model *m = s->base;
    rl_backend *be = m->be;
    const rl_model_config *c = &m->cfg;
    rl_layer_acts *la = &m->layer_acts[l];
    const rl_layer_params *lp = &m->p.layers[l];
    const int B = m->batch, T = m->seq, R = B * T, D = c->hidden, N = c->head_dim;
    const int QD = c->heads * N, KD = c->kv_heads * N;
    const float eps = (float)c->rms_norm_eps;
    int rc = 0;
    rc |= rl_linear_forward(be, c->qk_norm ? la->q_raw : la->q, la->ln1, lp->q_w, lp->q_b, R, D, QD);
    rc |= rl_linear_forward(be, c->qk_norm ? la->k_raw : la->k, la->ln1, lp->k_w, lp->k_b, R, D, KD);
    rc |= rl_linear_forward(be, la->v, la->ln1, lp->v_w, lp->v_b, R, D, KD);
    if (c->qk_norm) {
        rc |= rl_rmsnorm_forward(be, la->q, la->q_rstd, la->q_raw, lp->q_norm_w, R * c->heads, N, eps);
        rc |= rl_rmsnorm_forward(be, la->k, la->k_rstd, la->k_raw, lp->k_norm_w, R * c->kv_heads, N, eps);
    }
    rc |= rl_rope_forward(be, la->q, cs, sn, B, T, c->heads, N);
    rc |= rl_rope_forward(be, la->k, cs, sn, B, T, c->kv_heads, N);
    for (int b = 0; b < B; b++) {
        const size_t dst = ((size_t)b * st->max_pos + st->pos) * KD, src = (size_t)b * T * KD;
        rc |= rl_copy(be, st->kcache[l] + dst, la->k + src, sizeof(float) * (size_t)T * KD);
        rc |= rl_copy(be, st->vcache[l] + dst, la->v + src, sizeof(float) * (size_t)T * KD);
    }
    rl_attn_dims d = {.batch = B, .seq = T, .heads = c->heads, .kv_heads = c->kv_heads, .head_dim = N,
                      .scale = 1.0f / sqrtf((float)N), .kv_seq = st->max_pos, .q_pos = st->pos};
    rc |= rl_attention_forward(be, &d, la->att, la->lse, la->q, st->kcache[l], st->vcache[l]);
    rc |= rl_linear_forward(be, la->attn_out, la->att, lp->o_w, lp->o_b, R, QD, D);
    return rc;
}

int rl_student_forward_state(rl_student *s, rl_student_state *st, const int32_t *tokens, char *err, size_t errlen)
{
    rl_model *m = s->base;
    rl_backend *be = m->be;
    const rl_model_config *c = &m->cfg;
    const int R = m->batch * m->seq, D = c->hidden, T = m->seq;
    const float eps = (float)c->rms_norm_eps;
    if (m->batch != st->batch || st->pos + T > st->max_pos) {
        snprintf(err, errlen, "recurrent inference: %d×%d tokens at position %d do not fit a state for batch %d "
                 "and %d positions", m->batch, T, st->pos, st->batch, st->max_pos);
        return RL_EINVAL;
    }
    const size_t half = (size_t)c->head_dim / 2;
    const float *cs = st->rope_cos + (size_t)st->pos * half, *sn = st->rope_sin + (size_t)st->pos * half;
    rl_upload(be, m->tokens, tokens, sizeof(int32_t) * (size_t)R);
    rl_embedding_forward(be, m->layer_acts[0].x_in, m->tokens, m->p.embed, R, c->vocab, D);
    for (int l = 0; l < c->layers; l++) {
        rl_layer_acts *la = &m->layer_acts[l];
        const rl_layer_params *lp = &m->p.layers[l];
        rl_rmsnorm_forward(be, la->ln1, la->ln1_rstd, la->x_in, lp->ln1_w, R, D, eps);
        if (l >= student_layers(s)) {
            attn_cached_forward(s, st, l, cs, sn);
        } else if (s->arch == RL_STUDENT_RWKV7) {
            s->ta[l].wkv_state = st->wkv[l];
            rl_tmix7_forward(be, &s->td[l], &s->tp[l], &s->ta[l], la->ln1, s->v_first, cs, sn, la->attn_out);
        } else {
            s->ta[l].wkv_state = st->wkv[l];
            rl_tmix6_forward(be, &s->td[l], &s->tp[l], &s->ta[l], la->ln1, st->shift[l], cs, sn, la->attn_out);
            for (int b = 0; b < m->batch; b++) /* the shift state becomes each sequence's last input */
                rl_copy(be, st->shift[l] + (size_t)b * D, la->ln1 + ((size_t)b * T + T - 1) * D, sizeof(float) * D);
        }
        if (l < student_layers(s))
            s->ta[l].wkv_state = NULL;
        rl_add(be, la->res_mid, la->x_in, la->attn_out, (size_t)R * D);
        rl_rmsnorm_forward(be, la->ln2, la->ln2_rstd, la->res_mid, lp->ln2_w, R, D, eps);
        rl_mlp_block_forward(m, lp, la, la->x_out);
        rl_accumulate(be, la->x_out, la->res_mid, (size_t)R * D);
    }
    rl_rmsnorm_forward(be, m->lnf, m->lnf_rstd, m->layer_acts[c->layers - 1].x_out, m->p.final_norm, R, D, eps);
    st->pos += T;
    return rl_backend_status(be, err, errlen);
}
