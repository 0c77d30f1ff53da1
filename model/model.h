/* model.h — teacher models (Qwen2, Qwen3, Llama, Mistral) on a kernels.h backend:
 * HF config.json, arenas of parameters / gradients / activations, forward and
 * backward with per-layer capture of the attention input and output, chunked
 * vocabulary losses, AdamW.
 *
 * Shapes: R = batch·seq rows; D hidden; H query heads, G KV heads, N head_dim;
 * F intermediate size; V vocabulary. Activations are [R, width] row-major. */
#ifndef RL_MODEL_H
#define RL_MODEL_H

#include <stdio.h>

#include "kernels.h"
#include "safetensors.h"

/* ---- config.json ------------------------------------------------------------ */

typedef enum { RL_MODEL_QWEN2, RL_MODEL_QWEN3, RL_MODEL_LLAMA, RL_MODEL_MISTRAL } rl_model_arch;
typedef enum { RL_ROPE_DEFAULT, RL_ROPE_LINEAR, RL_ROPE_LLAMA3 } rl_rope_type;

typedef struct {
    rl_model_arch arch;
    int hidden, layers, heads, kv_heads, head_dim, intermediate, vocab;
    double rope_theta;
    rl_rope_type rope_type;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_max_pos;
    double rms_norm_eps;
    int tie_word_embeddings;
    int qkv_bias; /* bias on q/k/v projections (Qwen2 always; attention_bias elsewhere) */
    int o_bias;   /* bias on o_proj (Llama/Qwen3/Mistral attention_bias) */
    int qk_norm;  /* Qwen3 per-head RMSNorm on q and k before RoPE */
    int bos_token_id, eos_token_id; /* -1 when absent */
    int max_position_embeddings;
    int sliding_window; /* 0 = none; sequences longer than it are refused */
    float initializer_range;
} rl_model_config;

const char *rl_model_arch_name(rl_model_arch a);
int rl_model_arch_from_name(const char *s, rl_model_arch *out);
/* Parses an HF config.json; refuses fields that would change the math and that we
 * do not implement (other rope types, partial rotary, non-silu activations, MLP
 * bias, sliding windows in use). */
int rl_config_parse(rl_model_config *c, const char *json, size_t len, const char *what, char *err, size_t errlen);
int rl_config_load(rl_model_config *c, const char *path, char *err, size_t errlen);
int rl_config_validate(const rl_model_config *c, char *err, size_t errlen);
int rl_config_write(const rl_model_config *c, const char *path, char *err, size_t errlen);
/* cos/sin tables [seq, head_dim/2] for positions 0..seq-1 (host memory). */
void rl_rope_tables(const rl_model_config *c, int seq, float *cos_t, float *sin_t);

/* ---- arenas ------------------------------------------------------------------
 * One allocation; tensors are offsets from a size table, so checkpoint I/O,
 * ZeRO slices and all-reduce buckets are plain ranges. */

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[4];
    size_t offset, count; /* in floats */
} rl_arena_entry;

typedef struct {
    const char *label;
    rl_arena_entry *entries;
    int n, cap;
    size_t total; /* floats */
    float *base;  /* device memory */
} rl_arena;

void rl_arena_init(rl_arena *a, const char *label);
/* Adds a tensor to the size table; returns its index or a negative error. */
int rl_arena_add(rl_arena *a, const char *name, int ndim, const int64_t *shape);
int rl_arena_alloc(rl_arena *a, rl_backend *be, char *err, size_t errlen); /* zeroed */
float *rl_arena_ptr(const rl_arena *a, int idx);
int rl_arena_find(const rl_arena *a, const char *name);
void rl_arena_print(const rl_arena *a, FILE *f);
void rl_arena_free(rl_arena *a, rl_backend *be);

/* ---- parameters ---------------------------------------------------------- */

/* Pointers into a parameter (or gradient) arena; NULL where the config has none. */
typedef struct {
    float *ln1_w, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w, *o_b, *q_norm_w, *k_norm_w;
    float *ln2_w, *gate_w, *up_w, *down_w;
} rl_layer_params;

typedef struct {
    float *embed, *final_norm, *lm_head; /* lm_head == embed when tied */
    rl_layer_params *layers;
} rl_model_params;

/* ---- activations ---------------------------------------------------------- */

typedef struct {
    float *x_in;              /* residual stream entering the layer [R,D] */
    float *ln1, *ln1_rstd;    /* attention input (captured) [R,D], [R] */
    float *q, *k, *v;         /* after q/k-norm and RoPE: [R,H·N], [R,G·N], [R,G·N] */
    float *q_raw, *k_raw, *q_rstd, *k_rstd; /* Qwen3 q/k before the per-head norm */
    float *att, *lse;         /* attention output before o_proj [R,H·N], [B,H,T] */
    float *attn_out;          /* after o_proj (captured) [R,D] */
    float *res_mid;           /* x_in + attn_out */
    float *ln2, *ln2_rstd;
    float *gate, *up, *act;   /* [R,F] with ALL; else [min(R, mlp_rows),F]: one row chunk's (rl_model_mlp_rows) */
    float *x_out;             /* res_mid + MLP; = next layer's x_in */
} rl_layer_acts;

/* One layer's worth of gradient scratch, reused by every layer in the backward. */
typedef struct {
    float *dres;              /* running gradient of the residual stream [R,D] */
    float *dln;               /* [R,D] */
    float *dq, *dk, *dv, *dq_raw, *dk_raw, *datt, *delta;
    float *dgate, *dup, *dact; /* [min(R, mlp_rows),F]: the MLP's backward runs in row chunks */
} rl_grad_scratch;

/* The SwiGLU MLP's rows per pass where its [rows, intermediate] tensors are not kept for every layer (and always in
 * its backward): gate, up and act of 4096 rows are 0.9 GiB at Qwen2.5-7B's intermediate 18944, where the 32768 rows
 * of step 3 (16384 × 2) would take 7 GiB, twice (saved and backward scratch). rl_model.mlp_rows = 0 means this. */
#define RL_MLP_ROWS 4096
/* The MLP's rows per pass for `rows` rows a micro-batch and the option mlp_rows (≤ 0: RL_MLP_ROWS): what prepare
 * sizes the buffers for and what `radlads plan` counts. */
static inline int64_t rl_mlp_chunk_rows(int64_t rows, int mlp_rows)
{
    const int64_t want = mlp_rows > 0 ? mlp_rows : RL_MLP_ROWS;
    return want < rows ? want : rows;
}

/* ---- model ------------------------------------------------------------------ */

/* What rl_model_prepare keeps per layer (the rest is one shared working set that every layer overwrites):
 *   ALL         every layer's activations (a backward without recomputation; tests read any of them)
 *   BOUNDARIES  each layer's input x_in; the backward recomputes a layer's forward from it just before the
 *               layer's backward (activation recomputation: memory of one layer instead of all, one more
 *               forward of the layers; gradients bit-identical to ALL)
 *   CAPTURE     forward only: each layer's ln1 and attn_out (the attention input and output align reads)
 *   NONE        forward only: nothing per layer (a distillation teacher, evaluation)
 * x_in/x_out ping-pong between two buffers when no layer's input is kept. */
typedef enum { RL_ACTS_ALL = 0, RL_ACTS_BOUNDARIES, RL_ACTS_CAPTURE, RL_ACTS_NONE } rl_acts_keep;

/* The sequence mixer of layers [0, layers): a student's time-mix in place of softmax attention (the rest keep
 * attention). forward: attn_out = Mixer_l(ln1); backward: accumulates dln1 and the mixer's parameter
 * gradients from dattn_out (NULL for a forward-only model). */
typedef struct {
    int layers;
    void *ctx;
    int (*forward)(void *ctx, int layer, const float *ln1, float *attn_out);
    int (*backward)(void *ctx, int layer, const float *ln1, const float *dattn_out, float *dln1);
} rl_mixer;

typedef struct rl_model {
    rl_model_config cfg;
    rl_backend *be;
    rl_arena params, grads;
    rl_arena frozen;     /* matrices kept in bf16 only (table, no allocation): a frozen teacher's (rl_model_load_ex
                          * frozen_bf16), or a student's trainable ones (precision bf16-weights, rl_student_load_ex) */
    uint16_t *frozen16;  /* their data */
    int bf16_trains;     /* those matrices train: a backward gives them bf16 gradients, in grads16 at g16 */
    rl_arena grads16;    /* the bf16 gradients' table (no allocation; same names as frozen) */
    uint16_t *g16;
    /* Saving a model whose matrices train in bf16: the fp32 values of bf16 matrix `name` (its master weights) into
     * host; NULL = the bf16 values widened. A non-zero return fails the save with err filled. */
    int (*save_fetch)(void *ctx, const char *name, float *host, size_t n, char *err, size_t errlen);
    void *save_fetch_ctx;
    rl_model_params p, g; /* g valid after rl_model_prepare(..., backward=1) */
    /* sized by rl_model_prepare */
    int batch, seq, chunk_rows, has_backward;
    rl_acts_keep keep;
    const rl_mixer *mixer; /* NULL: every layer softmax attention */
    int mixer_only;        /* set before prepare: every layer will have a mixer, no attention buffers */
    int mlp_rows;          /* set before prepare: the MLP's row chunk (0: RL_MLP_ROWS; see rl_model_mlp_rows) */
    int mlp_chunk;         /* what prepare sized the MLP's buffers for (a later change of mlp_rows waits for the next
                            * prepare) */
    /* Optional: told as the backward finishes gradients (rl_model_grads_event): event 0 after the final norm
     * (with the head's gradients), L − l after layer l, L + 1 after the embedding. A non-zero return fails
     * the backward. */
    int (*grads_ready)(void *ctx, int event);
    void *grads_ready_ctx;
    /* Optional, set before the first prepare with backward: which parameters get a gradient (the gradient
     * arena holds only those; m->g's pointers of the others are NULL, and rl_model_backward skips their
     * gradient GEMMs and reductions). NULL: every parameter. */
    int (*grad_wanted)(void *ctx, const char *name);
    void *grad_wanted_ctx;
    rl_arena acts;
    rl_layer_acts *layer_acts;
    float *lnf, *lnf_rstd, *logits_chunk, *row_losses, *rope_cos, *rope_sin;
    int32_t *tokens, *targets;
    rl_grad_scratch gs;
} rl_model;

/* Adds cfg's parameter size table (HF names and shapes, in on-disk order) to an
 * arena that is not allocated; rl_model_create allocates exactly this table.
 * Planning (model/plan.h) counts it without allocating. */
int rl_model_param_table(rl_arena *a, const rl_model_config *cfg);
/* Builds the parameter arena for cfg (zeroed). */
int rl_model_create(rl_model **out, rl_backend *be, const rl_model_config *cfg, int verbose, char *err,
                    size_t errlen);
void rl_model_destroy(rl_model *m);
/* 1 for the tensors a frozen bf16 model keeps in bf16 only (the planner counts them the same way). */
int rl_model_gemm_only(const rl_model_config *c, const char *name);
/* Loads every parameter from a model folder (config.json + safetensors),
 * checking names and shapes. */
int rl_model_load(rl_model **out, rl_backend *be, const char *dir, int verbose, char *err, size_t errlen);
/* frozen_bf16 (a teacher under autocast): the GEMM-only matrices (*_proj.weight, an untied lm_head) are read
 * straight into bf16 (rounded as rl_cast rounds, so products equal autocast's from fp32 weights bit for bit),
 * in m->frozen16 with the table m->frozen, registered with rl_backend_weights_bf16; no fp32 copy of them ever
 * exists on the device. The embedding and every vector stay fp32 in m->params. Only rl_matmul under BF16
 * autocast may read those matrices; such a model cannot be saved or trained. */
int rl_model_load_ex(rl_model **out, rl_backend *be, const char *dir, int verbose, int frozen_bf16, char *err,
                     size_t errlen);
/* Random weights: N(0, initializer_range) matrices and embeddings; biases 0 and
 * norm weights 1, unless randomize_all (tests), which makes them random too. */
void rl_model_init_random(rl_model *m, uint64_t seed, int randomize_all);
/* Writes config.json + model.safetensors (or shards of at most shard_bytes). */
int rl_model_save(const rl_model *m, const char *dir, rl_dtype dtype, size_t shard_bytes, char *err,
                  size_t errlen);
int64_t rl_model_num_params(const rl_model *m);

/* Allocates activations for batch×seq (and gradients + scratch when backward).
 * chunk_rows bounds the fp32 logits buffer to chunk_rows×vocab. */
int rl_model_prepare(rl_model *m, int batch, int seq, int backward, int chunk_rows, char *err, size_t errlen);
/* The same with a choice of what is kept per layer (rl_model_prepare keeps ALL). A backward needs ALL or
 * BOUNDARIES and backward = 1; backward = RL_PREP_GRADS_ONLY allocates the gradient arena and no backward
 * scratch (a caller that runs its own backward into m->grads, like align). CAPTURE has no vocabulary head
 * (rl_model_loss and rl_model_logits refuse). */
#define RL_PREP_GRADS_ONLY 2
int rl_model_prepare_keep(rl_model *m, int batch, int seq, int backward, int chunk_rows, rl_acts_keep keep,
                          char *err, size_t errlen);

/* tokens [batch·seq] host ints. Runs embedding → layers → final norm; leaves each
 * layer's ln1 (attention input) and attn_out (attention output) in layer_acts. */
int rl_model_forward(rl_model *m, const int32_t *tokens, char *err, size_t errlen);

/* Mean next-token cross-entropy over rows whose target is >= 0 (targets[r] is
 * the label of row r; -1 ignores it). With backward, gradients of that mean are
 * ACCUMULATED into m->grads (call rl_model_zero_grads first). */
int rl_model_loss(rl_model *m, const int32_t *targets, int backward, double *mean_loss, char *err,
                  size_t errlen);
/* Backpropagates the final-norm gradient left in m->gs.dln by a loss through
 * all layers into m->grads (through m->mixer's backward for its layers; with BOUNDARIES each layer's
 * forward is recomputed first). rl_model_loss(backward=1) calls it. */
int rl_model_backward(rl_model *m, char *err, size_t errlen);
void rl_model_zero_grads(rl_model *m);
/* The backward event after which tensor `name`'s gradient is final (see grads_ready): 0 for the final norm and
 * an untied lm_head, L − l for model.layers.<l>.*, L + 1 for everything else (the embedding). */
int rl_model_grads_event(const char *name, int layers);

/* Calls fn for each chunk of logits rows [row0, row0+rows) × vocab after a forward. */
typedef int (*rl_logits_fn)(void *ctx, int row0, int rows, const float *logits, char *err, size_t errlen);
int rl_model_logits(rl_model *m, rl_logits_fn fn, void *ctx, char *err, size_t errlen);

/* ---- vocabulary losses, chunked over rows ---------------------------------
 * logits = hidden·Wᵀ for chunk_rows rows at a time in logits_buf; only one chunk
 * of fp32 logits (two for KL: student and teacher) exists at once. */
typedef struct {
    int rows, dim, vocab, chunk_rows;
    const float *hidden; /* [rows, dim] */
    const float *weight; /* [vocab, dim] */
    float *dhidden;      /* [rows, dim], SET; NULL = forward only */
    float *dweight;      /* [vocab, dim], accumulated */
    float *logits_buf;   /* [chunk_rows, vocab] */
    float *row_losses;   /* [rows] */
    float grad_weight;   /* the gradients are those of grad_weight · loss (a blend of losses); 0 = 1 */
} rl_lm_head;

int rl_lm_head_cross_entropy(rl_backend *be, const rl_lm_head *h, const int32_t *targets, double *mean_loss);
/* Forward KL(teacher ‖ student) averaged over rows. */
int rl_lm_head_kl(rl_backend *be, const rl_lm_head *student, const float *teacher_hidden,
                  const float *teacher_weight, float *teacher_logits_buf, double *mean_loss);

/* ---- optimizer ---------------------------------------------------------------- */

/* Global L2 norm of all gradients; if clip > 0 and the norm exceeds it the
 * update uses grads scaled by clip/norm. One AdamW step over the whole arena. */
int rl_model_adamw_step(rl_model *m, float *opt_m, float *opt_v, const rl_adamw_params *hp, float clip,
                        double *grad_norm, char *err, size_t errlen);

/* ---- layer blocks (shared by teachers and, later, students) ---------------
 * Backward functions ACCUMULATE into dx and parameter gradients. */

/* y[rows,out] = x[rows,in]·Wᵀ + b   (W stored [out,in]; b may be NULL) */
int rl_linear_forward(rl_backend *be, float *y, const float *x, const float *w, const float *b, int rows, int in,
                      int out);
/* dx += dy·W;  dW += dyᵀ·x;  db += Σ_rows dy   (dx or db may be NULL) */
int rl_linear_backward(rl_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int rows, int in, int out);
/* attn_out = o_proj(attention(rope(norm(q_proj(ln1))), rope(norm(k_proj(ln1))), v_proj(ln1))) */
int rl_attn_block_forward(rl_model *m, const rl_layer_params *lp, rl_layer_acts *la);
/* from dattn_out: accumulates dln1 (m->gs.dln) and the block's parameter grads */
int rl_attn_block_backward(rl_model *m, const rl_layer_params *lp, rl_layer_params *gp, const rl_layer_acts *la,
                           const float *dattn_out, float *dln1);
/* The MLP's row chunk of a prepared model: min(batch·seq, mlp_rows or RL_MLP_ROWS) as of its last prepare. Its
 * forward and backward run a chunk of rows at a time. A model that keeps every layer's activations (ALL) keeps every
 * chunk's gate, up and act; any other has one chunk's buffers, and its backward (BOUNDARIES) computes each chunk's
 * gate, up and act again just before that chunk's backward. Either way the same GEMMs run on the same rows and the
 * partial weight gradients add in the same order: ALL and BOUNDARIES stay bit-identical. Against one chunk of all
 * rows only the order of that sum differs — and with bf16 gradients (precision bf16-weights) each chunk's share of
 * the MLP weights' gradients is rounded to bf16 as it is added (R / chunk roundings instead of one per
 * micro-batch). */
int rl_model_mlp_rows(const rl_model *m);
/* mlp_out = down(silu(gate(ln2)) ⊙ up(ln2)), written to out; out NULL stops after act (what the backward
 * reads: a recomputation; nothing to do when the model runs its MLP in chunks: the backward recomputes them) */
int rl_mlp_block_forward(rl_model *m, const rl_layer_params *lp, rl_layer_acts *la, float *out);
int rl_mlp_block_backward(rl_model *m, const rl_layer_params *lp, rl_layer_params *gp, const rl_layer_acts *la,
                          const float *dout, float *dln2);

#endif
