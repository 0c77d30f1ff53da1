/* params.c — the teacher's parameter table (HF tensor names and shapes), random
 * init, loading from and saving to HF model folders. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model.h"
#include "model_int.h"

static int add2(rl_arena *a, const char *name, int64_t r, int64_t c)
{
    int64_t s[2] = {r, c};
    return rl_arena_add(a, name, 2, s);
}
static int add1(rl_arena *a, const char *name, int64_t n) { return rl_arena_add(a, name, 1, &n); }

/* The size table, in HF names; the order is the on-disk order of saved models. */
static int build_table(rl_arena *a, const rl_model_config *c)
{
    const int64_t D = c->hidden, QD = (int64_t)c->heads * c->head_dim, KD = (int64_t)c->kv_heads * c->head_dim;
    char n[96];
    int rc = add2(a, "model.embed_tokens.weight", c->vocab, D);
    for (int l = 0; l < c->layers && rc >= 0; l++) {
#define P(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), n)
        rc |= add1(a, P("input_layernorm.weight"), D);
        rc |= add2(a, P("self_attn.q_proj.weight"), QD, D);
        if (c->qkv_bias)
            rc |= add1(a, P("self_attn.q_proj.bias"), QD);
        rc |= add2(a, P("self_attn.k_proj.weight"), KD, D);
        if (c->qkv_bias)
            rc |= add1(a, P("self_attn.k_proj.bias"), KD);
        rc |= add2(a, P("self_attn.v_proj.weight"), KD, D);
        if (c->qkv_bias)
            rc |= add1(a, P("self_attn.v_proj.bias"), KD);
        rc |= add2(a, P("self_attn.o_proj.weight"), D, QD);
        if (c->o_bias)
            rc |= add1(a, P("self_attn.o_proj.bias"), D);
        if (c->qk_norm) {
            rc |= add1(a, P("self_attn.q_norm.weight"), c->head_dim);
            rc |= add1(a, P("self_attn.k_norm.weight"), c->head_dim);
        }
        rc |= add1(a, P("post_attention_layernorm.weight"), D);
        rc |= add2(a, P("mlp.gate_proj.weight"), c->intermediate, D);
        rc |= add2(a, P("mlp.up_proj.weight"), c->intermediate, D);
        rc |= add2(a, P("mlp.down_proj.weight"), D, c->intermediate);
#undef P
    }
    if (rc >= 0)
        rc = add1(a, "model.norm.weight", D);
    if (rc >= 0 && !c->tie_word_embeddings)
        rc = add2(a, "lm_head.weight", c->vocab, D);
    return rc < 0 ? rc : 0;
}

int rl_model_param_table(rl_arena *a, const rl_model_config *c)
{
    return a->base ? RL_EINVAL : build_table(a, c);
}

/* Points p's fields at the tensors of arena a (params or grads: same layout). */
/* The tensor called name: in the fp32 arena a, else (frozen bf16 weights) in the table f16 over b16. */
static float *lookup(const rl_arena *a, const rl_arena *f16, uint16_t *b16, const char *name)
{
    int i = rl_arena_find(a, name);
    if (i >= 0 || !f16)
        return rl_arena_ptr(a, i);
    i = rl_arena_find(f16, name);
    return i >= 0 ? rl_bf16_as_f32ptr(b16, f16->entries[i].offset) : NULL;
}

int rl__bind_params(const rl_arena *a, const rl_model_config *c, rl_model_params *p)
{
    return rl__bind_params2(a, NULL, NULL, c, p);
}

int rl__bind_params2(const rl_arena *a, const rl_arena *f16, uint16_t *b16, const rl_model_config *c,
                     rl_model_params *p)
{
    char n[96];
    p->embed = lookup(a, f16, b16, "model.embed_tokens.weight");
    p->final_norm = lookup(a, f16, b16, "model.norm.weight");
    p->lm_head = c->tie_word_embeddings ? p->embed : lookup(a, f16, b16, "lm_head.weight");
    for (int l = 0; l < c->layers; l++) {
        rl_layer_params *lp = &p->layers[l];
#define G(fmt) (snprintf(n, sizeof n, "model.layers.%d." fmt, l), lookup(a, f16, b16, n))
        lp->ln1_w = G("input_layernorm.weight");
        lp->q_w = G("self_attn.q_proj.weight"), lp->q_b = G("self_attn.q_proj.bias");
        lp->k_w = G("self_attn.k_proj.weight"), lp->k_b = G("self_attn.k_proj.bias");
        lp->v_w = G("self_attn.v_proj.weight"), lp->v_b = G("self_attn.v_proj.bias");
        lp->o_w = G("self_attn.o_proj.weight"), lp->o_b = G("self_attn.o_proj.bias");
        lp->q_norm_w = G("self_attn.q_norm.weight"), lp->k_norm_w = G("self_attn.k_norm.weight");
        lp->ln2_w = G("post_attention_layernorm.weight");
        lp->gate_w = G("mlp.gate_proj.weight"), lp->up_w = G("mlp.up_proj.weight");
        lp->down_w = G("mlp.down_proj.weight");
#undef G
    }
    return 0;
}

/* A model with its parameter size table built, nothing allocated. */
static int model_new(rl_model **out, rl_backend *be, const rl_model_config *cfg, char *err, size_t errlen)
{
    *out = NULL;
    int rc = rl_config_validate(cfg, err, errlen);
    if (rc)
        return rc;
    rl_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    m->cfg = *cfg;
    m->be = be;
    rl_arena_init(&m->params, "params");
    rl_arena_init(&m->grads, "grads");
    rl_arena_init(&m->acts, "activations");
    rl_arena_init(&m->frozen, "bf16 matrices");
    rl_arena_init(&m->grads16, "bf16 matrix gradients");
    m->p.layers = calloc((size_t)cfg->layers, sizeof *m->p.layers);
    m->g.layers = calloc((size_t)cfg->layers, sizeof *m->g.layers);
    if (!m->p.layers || !m->g.layers || build_table(&m->params, cfg)) {
        snprintf(err, errlen, "out of memory building the parameter table");
        rl_model_destroy(m);
        return RL_ENOMEM;
    }
    *out = m;
    return 0;
}

int rl_model_create(rl_model **out, rl_backend *be, const rl_model_config *cfg, int verbose, char *err,
                    size_t errlen)
{
    *out = NULL;
    rl_model *m;
    int rc = model_new(&m, be, cfg, err, errlen);
    if (!rc)
        rc = rl_arena_alloc(&m->params, be, err, errlen);
    if (rc) {
        rl_model_destroy(m);
        return rc;
    }
    rl__bind_params(&m->params, cfg, &m->p);
    if (verbose)
        rl_arena_print(&m->params, stderr);
    *out = m;
    return 0;
}

/* GEMM-only matrices: what a frozen model keeps in bf16 alone (the embedding, also a lookup table, and every
 * vector stay fp32). */
int rl_model_gemm_only(const rl_model_config *c, const char *name)
{
    const size_t n = strlen(name), k = strlen("_proj.weight");
    return (n > k && !strcmp(name + n - k, "_proj.weight")) ||
           (!c->tie_word_embeddings && !strcmp(name, "lm_head.weight"));
}

static int gemm_only_pred(void *ctx, const char *name) { return rl_model_gemm_only(ctx, name); }

/* bf16 storage: moves the entries of m->params' table (not allocated yet) that bf16() picks among the GEMM-only
 * ones into m->frozen, then allocates the fp32 rest and the bf16 matrices. */
static int frozen_alloc(rl_model *m, int (*bf16)(void *ctx, const char *name), void *ctx, char *err, size_t errlen)
{
    rl_arena all = m->params;
    rl_arena_init(&m->params, "params (fp32 part)");
    int rc = 0;
    for (int i = 0; i < all.n && !rc; i++) {
        const rl_arena_entry *e = &all.entries[i];
        rl_arena *to = rl_model_gemm_only(&m->cfg, e->name) && bf16(ctx, e->name) ? &m->frozen : &m->params;
        rc = rl_arena_add(to, e->name, e->ndim, e->shape) < 0 ? RL_ENOMEM : 0;
    }
    rl_arena_free(&all, NULL);
    if (rc) {
        snprintf(err, errlen, "out of memory building the parameter tables");
        return rc;
    }
    rc = rl_arena_alloc(&m->params, m->be, err, errlen);
    if (!rc && !(m->frozen16 = rl_malloc(m->be, sizeof(uint16_t) * (m->frozen.total ? m->frozen.total : 1)))) {
        rl_backend_status(m->be, err, errlen);
        rl_backend_clear_error(m->be);
        rc = RL_ENOMEM;
    }
    if (!rc && m->frozen.total && rl_backend_weights_bf16(m->be, m->frozen16, m->frozen.total))
        rc = rl_backend_status(m->be, err, errlen);
    if (!rc)
        rl__bind_params2(&m->params, &m->frozen, m->frozen16, &m->cfg, &m->p);
    return rc;
}

int rl__model_create_split(rl_model **out, rl_backend *be, const rl_model_config *cfg,
                           int (*bf16)(void *ctx, const char *name), void *ctx, int trains, char *err, size_t errlen)
{
    int rc = model_new(out, be, cfg, err, errlen);
    if (!rc)
        rc = frozen_alloc(*out, bf16, ctx, err, errlen);
    if (rc) {
        rl_model_destroy(*out);
        *out = NULL;
        return rc;
    }
    (*out)->bf16_trains = trains;
    return 0;
}

int rl__model_n_tensors(const rl_model *m) { return m->params.n + m->frozen.n; }

/* The tensors of m, fp32 and bf16 tables alike, in on-disk order. */
const rl_arena_entry *rl__model_tensor(const rl_model *m, int i, int *bf16)
{
    *bf16 = i >= m->params.n;
    return *bf16 ? &m->frozen.entries[i - m->params.n] : &m->params.entries[i];
}

int rl__model_tensor_upload(rl_model *m, int i, const float *host, char *err, size_t errlen)
{
    int fz;
    const rl_arena_entry *e = rl__model_tensor(m, i, &fz);
    int rc;
    if (!fz) {
        rc = rl_upload(m->be, m->params.base + e->offset, host, e->count * sizeof *host);
    } else { /* rounded on the host exactly as rl_cast rounds on any backend */
        uint16_t *half = malloc(e->count * sizeof *half + 2);
        if (!half) {
            snprintf(err, errlen, "out of memory staging %s (%zu elements)", e->name, e->count);
            return RL_ENOMEM;
        }
        for (size_t k = 0; k < e->count; k++)
            half[k] = rl_f32_to_bf16(host[k]);
        rc = rl_upload(m->be, m->frozen16 + e->offset, half, e->count * sizeof *half);
        free(half);
    }
    if (rc)
        rl_backend_status(m->be, err, errlen);
    return rc;
}

int rl__model_tensor_fetch(const rl_model *m, int i, float *host, char *err, size_t errlen)
{
    int fz, rc;
    const rl_arena_entry *e = rl__model_tensor(m, i, &fz);
    if (!fz) {
        rc = rl_download(m->be, host, m->params.base + e->offset, e->count * sizeof *host);
    } else if (m->save_fetch) {
        return m->save_fetch(m->save_fetch_ctx, e->name, host, e->count, err, errlen);
    } else { /* the bf16 values widened */
        uint16_t *half = malloc(e->count * sizeof *half + 2);
        if (!half) {
            snprintf(err, errlen, "out of memory reading %s (%zu elements)", e->name, e->count);
            return RL_ENOMEM;
        }
        rc = rl_download(m->be, half, m->frozen16 + e->offset, e->count * sizeof *half);
        for (size_t k = 0; !rc && k < e->count; k++)
            host[k] = rl_bf16_to_f32(half[k]);
        free(half);
    }
    if (rc)
        rl_backend_status(m->be, err, errlen);
    return rc;
}

void rl_model_destroy(rl_model *m)
{
    if (!m)
        return;
    rl_free(m->be, m->frozen16);
    rl_free(m->be, m->g16);
    rl_arena_free(&m->frozen, NULL);
    rl_arena_free(&m->grads16, NULL);
    rl_arena_free(&m->params, m->be);
    rl_arena_free(&m->grads, m->be);
    rl_arena_free(&m->acts, m->be);
    free(m->p.layers);
    free(m->g.layers);
    free(m->layer_acts);
    free(m);
}

int64_t rl_model_num_params(const rl_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->params.n; i++)
        n += (int64_t)m->params.entries[i].count;
    for (int i = 0; i < m->frozen.n; i++)
        n += (int64_t)m->frozen.entries[i].count;
    return n;
}

/* splitmix64 + Box–Muller: deterministic for a seed on every machine. */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double normal(uint64_t *s)
{
    double u1 = ((double)(next_u64(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(next_u64(s) >> 11) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

void rl_model_init_random(rl_model *m, uint64_t seed, int randomize_all)
{
    uint64_t s = seed;
    const double std = m->cfg.initializer_range;
    for (int i = 0; i < m->params.n; i++) {
        const rl_arena_entry *e = &m->params.entries[i];
        float *host = malloc(e->count * sizeof *host);
        if (!host)
            continue; /* left zero; a model this size could not be trained anyway */
        int is_norm = strstr(e->name, "norm") != NULL;
        for (size_t j = 0; j < e->count; j++) {
            if (e->ndim == 2)
                host[j] = (float)(std * normal(&s));
            else if (is_norm)
                host[j] = randomize_all ? (float)(1.0 + 0.2 * normal(&s)) : 1.0f;
            else /* bias */
                host[j] = randomize_all ? (float)(0.2 * normal(&s)) : 0.0f;
        }
        rl_upload(m->be, m->params.base + e->offset, host, e->count * sizeof *host);
        free(host);
    }
}

int rl_model_load(rl_model **out, rl_backend *be, const char *dir, int verbose, char *err, size_t errlen)
{
    return rl_model_load_ex(out, be, dir, verbose, 0, err, errlen);
}


int rl_model_load_ex(rl_model **out, rl_backend *be, const char *dir, int verbose, int frozen_bf16, char *err,
                     size_t errlen)
{
    *out = NULL;
    char path[4096];
    rl_model_config cfg;
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = rl_config_load(&cfg, path, err, errlen);
    if (rc)
        return rc;
    rl_safetensors *st;
    rc = rl_st_open_dir(&st, dir, err, errlen);
    if (rc)
        return rc;
    rl_model *m = NULL;
    if (!frozen_bf16)
        rc = rl_model_create(&m, be, &cfg, verbose, err, errlen);
    else if (!(rc = model_new(&m, be, &cfg, err, errlen)))
        rc = frozen_alloc(m, gemm_only_pred, &m->cfg, err, errlen);
    if (rc) {
        rl_model_destroy(m);
        rl_st_close(st);
        return rc;
    }
    const int n_all = rl__model_n_tensors(m);
    size_t maxc = 0;
    for (int i = 0, fz; i < n_all; i++)
        maxc = rl__model_tensor(m, i, &fz)->count > maxc ? rl__model_tensor(m, i, &fz)->count : maxc;
    float *stage = malloc(maxc * sizeof *stage + 4);
    if (!stage) {
        snprintf(err, errlen, "out of memory staging a %zu-float tensor", maxc);
        rc = RL_ENOMEM;
    }
    for (int i = 0, fz; i < n_all && !rc; i++) {
        const rl_arena_entry *e = rl__model_tensor(m, i, &fz);
        rc = rl_st_read_f32(st, e->name, stage, e->ndim, e->shape, err, errlen);
        if (!rc)
            rc = rl__model_tensor_upload(m, i, stage, err, errlen);
    }
    /* Anything in the checkpoint we do not map would be silently dropped: refuse,
     * except a duplicate lm_head of a tied model and RoPE buffers. */
    for (int i = 0; i < rl_st_count(st) && !rc; i++) {
        const char *name = rl_st_at(st, i)->name;
        if (rl_arena_find(&m->params, name) >= 0 || rl_arena_find(&m->frozen, name) >= 0 ||
            strstr(name, "rotary_emb.inv_freq") ||
            (cfg.tie_word_embeddings && strcmp(name, "lm_head.weight") == 0))
            continue;
        snprintf(err, errlen, "%s: tensor \"%s\" is not part of a %s model with this config.json (wrong "
                 "architecture or config?)", dir, name, rl_model_arch_name(cfg.arch));
        rc = RL_EINVAL;
    }
    free(stage);
    rl_st_close(st);
    if (rc) {
        rl_model_destroy(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* Writes tensors [first, last) of the arena to one safetensors file. */
static int save_range(const rl_model *m, const char *path, int first, int last, rl_dtype dtype, char *err,
                      size_t errlen)
{
    int n = last - first, rc;
    rl_st_entry *ents = calloc((size_t)n + 1, sizeof *ents);
    if (!ents) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    size_t maxc = 0;
    for (int i = 0, fz; i < n; i++) {
        const rl_arena_entry *e = rl__model_tensor(m, first + i, &fz);
        ents[i].name = e->name, ents[i].dtype = dtype, ents[i].ndim = e->ndim;
        memcpy(ents[i].shape, e->shape, sizeof e->shape);
        maxc = e->count > maxc ? e->count : maxc;
    }
    const char *meta[] = {"format", "pt"};
    rl_st_writer *w;
    rc = rl_st_writer_open(&w, path, ents, n, meta, 1, err, errlen);
    free(ents);
    if (rc)
        return rc;
    float *stage = malloc(maxc * sizeof *stage + 4);
    rc = stage ? 0 : RL_ENOMEM;
    for (int i = first, fz; i < last && !rc; i++) {
        const rl_arena_entry *e = rl__model_tensor(m, i, &fz);
        rc = rl__model_tensor_fetch(m, i, stage, err, errlen);
        if (!rc)
            rc = rl_st_writer_append(w, stage, e->count, err, errlen);
    }
    free(stage);
    if (rc) {
        rl_st_writer_abort(w);
        return rc;
    }
    return rl_st_writer_finish(w, err, errlen);
}

int rl_model_save(const rl_model *m, const char *dir, rl_dtype dtype, size_t shard_bytes, char *err,
                  size_t errlen)
{
    if (m->frozen16 && !m->bf16_trains) {
        snprintf(err, errlen, "save: the model's matrices were loaded in bf16 only (frozen_bf16); load it without "
                 "that to save it");
        return RL_EINVAL;
    }
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create folder: %s", dir, strerror(errno));
        return RL_EINVAL;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = rl_config_write(&m->cfg, path, err, errlen);
    if (rc)
        return rc;
    const size_t es = rl_dtype_size(dtype);
    if (shard_bytes == 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        return save_range(m, path, 0, rl__model_n_tensors(m), dtype, err, errlen);
    }
    /* greedy shards: start a new one when the next tensor would overflow it */
    int starts[4096], n_shards = 0, fz;
    size_t cur = 0;
    for (int i = 0; i < rl__model_n_tensors(m); i++) {
        size_t b = rl__model_tensor(m, i, &fz)->count * es;
        if (i == 0 || (cur > 0 && cur + b > shard_bytes)) {
            if (n_shards == 4096) {
                snprintf(err, errlen, "more than 4096 shards; raise the shard size");
                return RL_EINVAL;
            }
            starts[n_shards++] = i;
            cur = 0;
        }
        cur += b;
    }
    json_t *wm = json_object();
    size_t total = 0;
    for (int s = 0; s < n_shards && !rc; s++) {
        int last = s + 1 < n_shards ? starts[s + 1] : rl__model_n_tensors(m);
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        snprintf(path, sizeof path, "%s/%s", dir, fname);
        rc = save_range(m, path, starts[s], last, dtype, err, errlen);
        for (int i = starts[s]; i < last; i++) {
            json_object_set_new(wm, rl__model_tensor(m, i, &fz)->name, json_string(fname));
            total += rl__model_tensor(m, i, &fz)->count * es;
        }
    }
    if (!rc) {
        json_t *root = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total, "weight_map", wm);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        if (json_dump_file(root, path, JSON_INDENT(2)) != 0) {
            snprintf(err, errlen, "%s: cannot write", path);
            rc = RL_EINVAL;
        }
        json_decref(root);
    }
    json_decref(wm);
    return rc;
}
