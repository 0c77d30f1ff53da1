/* generate.c — one sequence through a teacher (KV cache) or a student (recurrent state); sampling.
 *
 * Teacher layer l on T new tokens at positions pos..pos+T−1 (batch 1):
 *   q, k = rope(qk_norm(ln1·W{q,k}ᵀ + b)) at the absolute positions;  v = ln1·Wvᵀ + bv
 *   K[l][pos..pos+T) = k,  V[l][pos..pos+T) = v
 *   att_i = softmax(q_i·K[0..pos+i]ᵀ/√N)·V[0..pos+i]   (rl_attention_forward with kv_seq, q_pos)
 * which are the rows pos..pos+T−1 of rl_attn_block_forward over the whole sequence. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "student.h"

enum { GEN_CHUNK_ROWS = 64 };

struct rl_gen {
    rl_backend *be;
    rl_model *m;          /* the teacher, or the student's base */
    rl_student *s;        /* NULL for a teacher */
    rl_student_state *st; /* student */
    float **kcache, **vcache; /* teacher: per layer [max_pos, kv_heads, N] */
    float *rope_cos, *rope_sin; /* teacher: [max_pos, N/2] */
    int pos, max_pos, prefill_chunk, prepared_seq;
    /* sampling scratch: [vocab] each */
    double *prob;
    struct gen_cand { double p; int32_t id; } *cand;
};

static int teacher_cache_alloc(rl_gen *g, char *err, size_t errlen)
{
    const rl_model_config *c = &g->m->cfg;
    const size_t nkv = (size_t)g->max_pos * c->kv_heads * c->head_dim, half = (size_t)c->head_dim / 2;
    g->kcache = calloc((size_t)c->layers, sizeof *g->kcache);
    g->vcache = calloc((size_t)c->layers, sizeof *g->vcache);
    int rc = g->kcache && g->vcache ? 0 : RL_ENOMEM;
    for (int l = 0; l < c->layers && !rc; l++) {
        g->kcache[l] = rl_malloc(g->be, nkv * sizeof(float));
        g->vcache[l] = rl_malloc(g->be, nkv * sizeof(float));
        rc = g->kcache[l] && g->vcache[l] ? 0 : RL_ENOMEM;
    }
    float *host = rc ? NULL : malloc(sizeof(float) * 2 * (size_t)g->max_pos * half + 4);
    if (!rc) {
        g->rope_cos = rl_malloc(g->be, sizeof(float) * (size_t)g->max_pos * half + 4);
        g->rope_sin = rl_malloc(g->be, sizeof(float) * (size_t)g->max_pos * half + 4);
        rc = host && g->rope_cos && g->rope_sin ? 0 : RL_ENOMEM;
    }
    if (!rc) { /* the same float64 tables rl_model_prepare uses, for every position up to max_pos */
        rl_rope_tables(c, g->max_pos, host, host + (size_t)g->max_pos * half);
        rl_upload(g->be, g->rope_cos, host, sizeof(float) * (size_t)g->max_pos * half);
        rl_upload(g->be, g->rope_sin, host + (size_t)g->max_pos * half, sizeof(float) * (size_t)g->max_pos * half);
    }
    free(host);
    if (rc) {
        snprintf(err, errlen, "KV cache: cannot allocate %.1f MiB for %d positions × %d layers",
                 2.0 * nkv * sizeof(float) * c->layers / 1048576.0, g->max_pos, c->layers);
        rl_backend_clear_error(g->be);
    }
    return rc;
}

static void teacher_cache_free(rl_gen *g)
{
    for (int l = 0; g->kcache && l < g->m->cfg.layers; l++)
        rl_free(g->be, g->kcache[l]);
    for (int l = 0; g->vcache && l < g->m->cfg.layers; l++)
        rl_free(g->be, g->vcache[l]);
    free(g->kcache), free(g->vcache);
    rl_free(g->be, g->rope_cos);
    rl_free(g->be, g->rope_sin);
    g->kcache = g->vcache = NULL, g->rope_cos = g->rope_sin = NULL;
}

int rl_gen_open(rl_gen **out, rl_backend *be, const char *dir, int max_pos, int prefill_chunk, char *err,
                size_t errlen)
{
    *out = NULL;
    if (max_pos < 1 || prefill_chunk < 1) {
        snprintf(err, errlen, "generate: max_pos=%d and prefill_chunk=%d must be positive", max_pos, prefill_chunk);
        return RL_EINVAL;
    }
    rl_gen *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    g->be = be, g->max_pos = max_pos, g->prefill_chunk = prefill_chunk;
    int rc;
    if (rl_student_is_student_dir(dir)) {
        rc = rl_student_load(&g->s, be, dir, err, errlen);
        if (!rc)
            g->m = g->s->base, rc = rl_student_state_create(&g->st, g->s, 1, max_pos, err, errlen);
    } else {
        rc = rl_model_load(&g->m, be, dir, 0, err, errlen);
        if (!rc && g->m->cfg.sliding_window > 0 && max_pos > g->m->cfg.sliding_window) {
            snprintf(err, errlen, "%s: %d positions exceed the model's sliding_window %d; sliding-window attention "
                     "is not implemented, use at most %d positions", dir, max_pos, g->m->cfg.sliding_window,
                     g->m->cfg.sliding_window);
            rc = RL_EINVAL;
        }
        if (!rc)
            rc = teacher_cache_alloc(g, err, errlen);
    }
    if (!rc) {
        g->cand = malloc(sizeof *g->cand * (size_t)g->m->cfg.vocab);
        g->prob = malloc(sizeof *g->prob * (size_t)g->m->cfg.vocab);
        if (!g->cand || !g->prob) {
            snprintf(err, errlen, "out of memory");
            rc = RL_ENOMEM;
        }
    }
    if (rc) {
        rl_gen_close(g);
        return rc;
    }
    *out = g;
    return 0;
}

void rl_gen_close(rl_gen *g)
{
    if (!g)
        return;
    if (g->s) {
        rl_student_state_destroy(g->s, g->st);
        rl_student_destroy(g->s);
    } else if (g->m) {
        teacher_cache_free(g);
        rl_model_destroy(g->m);
    }
    free(g->cand), free(g->prob);
    free(g);
}

const rl_model_config *rl_gen_config(const rl_gen *g) { return &g->m->cfg; }
const char *rl_gen_kind(const rl_gen *g) { return g->s ? rl_student_arch_name(g->s->arch) : "teacher"; }
int rl_gen_is_student(const rl_gen *g) { return g->s != NULL; }
int rl_gen_pos(const rl_gen *g) { return g->pos; }
int rl_gen_max_pos(const rl_gen *g) { return g->max_pos; }

double rl_gen_state_bytes(const rl_gen *g)
{
    const rl_model_config *c = &g->m->cfg;
    const double kv_per_layer = 2.0 * g->pos * c->kv_heads * c->head_dim * sizeof(float);
    if (!g->s)
        return kv_per_layer * c->layers;
    const int tmix = c->layers - g->s->attention_layers;
    double per_tmix = (double)c->heads * c->head_dim * c->head_dim * sizeof(float);
    if (g->s->arch == RL_STUDENT_RWKV6)
        per_tmix += (double)c->hidden * sizeof(float);
    return per_tmix * tmix + kv_per_layer * g->s->attention_layers;
}

int rl_gen_reset(rl_gen *g, char *err, size_t errlen)
{
    g->pos = 0;
    if (!g->s)
        return 0; /* cache rows past pos are never read */
    rl_student_state_destroy(g->s, g->st);
    g->st = NULL;
    return rl_student_state_create(&g->st, g->s, 1, g->max_pos, err, errlen);
}

/* The attention block of teacher layer l over the m->seq new tokens; see the top of the file. */
static int teacher_attn_cached(rl_gen *g, int l)
{
    rl_model *m = g->m;
    rl_backend *be = g->be;
    const rl_model_config *c = &m->cfg;
    rl_layer_acts *la = &m->layer_acts[l];
    const rl_layer_params *lp = &m->p.layers[l];
    const int T = m->seq, D = c->hidden, N = c->head_dim, QD = c->heads * N, KD = c->kv_heads * N;
    const float eps = (float)c->rms_norm_eps;
    const float *cs = g->rope_cos + (size_t)g->pos * (N / 2), *sn = g->rope_sin + (size_t)g->pos * (N / 2);
    int rc = 0;
    rc |= rl_linear_forward(be, c->qk_norm ? la->q_raw : la->q, la->ln1, lp->q_w, lp->q_b, T, D, QD);
    rc |= rl_linear_forward(be, c->qk_norm ? la->k_raw : la->k, la->ln1, lp->k_w, lp->k_b, T, D, KD);
    if (c->qk_norm) {
        rc |= rl_rmsnorm_forward(be, la->q, la->q_rstd, la->q_raw, lp->q_norm_w, T * c->heads, N, eps);
        rc |= rl_rmsnorm_forward(be, la->k, la->k_rstd, la->k_raw, lp->k_norm_w, T * c->kv_heads, N, eps);
    }
    rc |= rl_rope_forward(be, la->q, cs, sn, 1, T, c->heads, N);
    rc |= rl_rope_forward(be, la->k, cs, sn, 1, T, c->kv_heads, N);
    /* k goes straight into the cache; v is projected there too */
    rc |= rl_copy(be, g->kcache[l] + (size_t)g->pos * KD, la->k, sizeof(float) * (size_t)T * KD);
    rc |= rl_linear_forward(be, g->vcache[l] + (size_t)g->pos * KD, la->ln1, lp->v_w, lp->v_b, T, D, KD);
    rl_attn_dims d = {.batch = 1, .seq = T, .heads = c->heads, .kv_heads = c->kv_heads, .head_dim = N,
                      .scale = 1.0f / sqrtf((float)N), .kv_seq = g->max_pos, .q_pos = g->pos};
    rc |= rl_attention_forward(be, &d, la->att, la->lse, la->q, g->kcache[l], g->vcache[l]);
    rc |= rl_linear_forward(be, la->attn_out, la->att, lp->o_w, lp->o_b, T, QD, D);
    return rc;
}

/* As rl_model_forward for batch 1, with the cached attention. */
static int teacher_forward_cached(rl_gen *g, const int32_t *tokens, char *err, size_t errlen)
{
    rl_model *m = g->m;
    rl_backend *be = g->be;
    const rl_model_config *c = &m->cfg;
    const int T = m->seq, D = c->hidden;
    const float eps = (float)c->rms_norm_eps;
    rl_upload(be, m->tokens, tokens, sizeof(int32_t) * (size_t)T);
    rl_embedding_forward(be, m->layer_acts[0].x_in, m->tokens, m->p.embed, T, c->vocab, D);
    for (int l = 0; l < c->layers; l++) {
        rl_layer_acts *la = &m->layer_acts[l];
        const rl_layer_params *lp = &m->p.layers[l];
        rl_rmsnorm_forward(be, la->ln1, la->ln1_rstd, la->x_in, lp->ln1_w, T, D, eps);
        teacher_attn_cached(g, l);
        rl_add(be, la->res_mid, la->x_in, la->attn_out, (size_t)T * D);
        rl_rmsnorm_forward(be, la->ln2, la->ln2_rstd, la->res_mid, lp->ln2_w, T, D, eps);
        rl_mlp_block_forward(m, lp, la, la->x_out);
        rl_accumulate(be, la->x_out, la->res_mid, (size_t)T * D);
    }
    rl_rmsnorm_forward(be, m->lnf, m->lnf_rstd, m->layer_acts[c->layers - 1].x_out, m->p.final_norm, T, D, eps);
    int rc = rl_backend_status(be, err, errlen);
    if (!rc)
        g->pos += T;
    return rc;
}

/* logits of rows [0, rows) of m->lnf, downloaded a chunk at a time */
static int download_logits(rl_gen *g, int row0, int rows, float *out, char *err, size_t errlen)
{
    rl_model *m = g->m;
    const int D = m->cfg.hidden, V = m->cfg.vocab;
    for (int r = 0; r < rows; r += m->chunk_rows) {
        const int n = rows - r < m->chunk_rows ? rows - r : m->chunk_rows;
        rl_linear_forward(g->be, m->logits_chunk, m->lnf + (size_t)(row0 + r) * D, m->p.lm_head, NULL, n, D, V);
        rl_download(g->be, out + (size_t)r * V, m->logits_chunk, sizeof(float) * (size_t)n * V);
        int rc = rl_backend_status(g->be, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}

int rl_gen_feed(rl_gen *g, const int32_t *tokens, int n, float *logits, int all_rows, char *err, size_t errlen)
{
    const int V = g->m->cfg.vocab;
    if (n < 1 || g->pos + n > g->max_pos) {
        snprintf(err, errlen, "generate: %d tokens at position %d do not fit the %d positions this run was "
                 "opened for", n, g->pos, g->max_pos);
        return RL_EINVAL;
    }
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V) {
            snprintf(err, errlen, "token id %d (input position %d) is outside the model's vocabulary [0, %d)",
                     tokens[i], g->pos + i, V);
            return RL_EINVAL;
        }
    for (int done = 0; done < n;) {
        const int T = n - done < g->prefill_chunk ? n - done : g->prefill_chunk;
        int rc = 0;
        if (T != g->prepared_seq) {
            const int chunk_rows = T < GEN_CHUNK_ROWS ? T : GEN_CHUNK_ROWS;
            rc = g->s ? rl_student_prepare(g->s, 1, T, chunk_rows, err, errlen)
                      : rl_model_prepare(g->m, 1, T, 0, chunk_rows, err, errlen);
            g->prepared_seq = rc ? 0 : T;
        }
        if (!rc && g->s) {
            rc = rl_student_forward_state(g->s, g->st, tokens + done, err, errlen);
            if (!rc)
                g->pos = g->st->pos;
        } else if (!rc) {
            rc = teacher_forward_cached(g, tokens + done, err, errlen);
        }
        if (!rc && logits && all_rows)
            rc = download_logits(g, 0, T, logits + (size_t)done * V, err, errlen);
        else if (!rc && logits && done + T == n)
            rc = download_logits(g, T - 1, 1, logits, err, errlen);
        if (rc)
            return rc;
        done += T;
    }
    return 0;
}

/* ---- sampling ---- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* most likely first, then lowest id: a total order, so the sort is deterministic */
static int by_prob_desc(const void *a, const void *b)
{
    const struct gen_cand *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

int rl_gen_sample(rl_gen *g, const float *logits, const rl_sample_params *p, uint64_t *rng)
{
    const int V = g->m->cfg.vocab;
    int best = 0;
    for (int i = 1; i < V; i++)
        if (logits[i] > logits[best])
            best = i;
    if (p->temperature <= 0 || p->top_k == 1)
        return best;
    /* unnormalised probabilities e_i = exp((x_i − x_max)/T), in double */
    double *e = g->prob, total = 0;
    for (int i = 0; i < V; i++)
        total += e[i] = exp(((double)logits[i] - logits[best]) / p->temperature);
    /* Candidates. Under top-p alone an id with p_i < (1 − top_p)/V can never be in the nucleus: all ids
     * at most as likely hold less than 1 − top_p, so the more likely ones already reach top_p. */
    const double floor_p = p->top_k == 0 && p->top_p < 1 ? (1 - p->top_p) / V * total : 0;
    int n = 0;
    for (int i = 0; i < V; i++)
        if (e[i] >= floor_p)
            g->cand[n].p = e[i], g->cand[n++].id = i;
    if (p->top_k > 0 || p->top_p < 1) {
        qsort(g->cand, (size_t)n, sizeof *g->cand, by_prob_desc);
        if (p->top_k > 0 && p->top_k < n)
            n = p->top_k;
        double kept = 0;
        for (int i = 0; i < n; i++)
            kept += g->cand[i].p;
        if (p->top_p < 1) { /* the shortest prefix whose share of the kept mass reaches top_p */
            double cum = 0;
            int m = 0;
            while (m < n && cum < p->top_p * kept)
                cum += g->cand[m++].p;
            n = m > 0 ? m : 1;
        }
    }
    double mass = 0;
    for (int i = 0; i < n; i++)
        mass += g->cand[i].p;
    const double u = (double)(splitmix64(rng) >> 11) * 0x1.0p-53 * mass;
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += g->cand[i].p;
        if (u < cum)
            return g->cand[i].id;
    }
    return g->cand[n - 1].id;
}
