/* student.h — the RADLADS students' time-mix layers (METHOD.md §1–2) on a
 * kernels.h backend: RAD-RWKV7 (variants a and b) and RAD-RWKV6.
 *
 * Shapes: R = batch·seq rows; D = hidden; A = heads·N, the attention width (equal
 * to D except for teachers with an explicit head_dim, e.g. Qwen3-0.6B/4B);
 * KD = kv_heads·N. u is the layer input after the teacher's input RMSNorm, [R, D];
 * the per-channel tensors (w0, a0, v0, k_k, k_a, ln_x, time_decay and the LoRA
 * outputs) are A wide and o_proj maps A back to D, as in the reference release's
 * Qwen3 modules. LoRA tensors are stored [in, out] (x·W1), Linear weights
 * [out, in] (x·Wᵀ).
 *
 * Where the teacher applies them, the student applies them at the same place:
 * Qwen3's per-head RMSNorm of q and k (q_norm/k_norm, before RoPE, teacher eps)
 * on r and k, and an o_proj bias. Those tensors keep the teacher's names. */
#ifndef RL_STUDENT_H
#define RL_STUDENT_H

#include "kernels.h"
#include "model.h"

typedef enum { RL_STUDENT_RWKV7 = 7, RL_STUDENT_RWKV6 = 6 } rl_student_arch;

typedef struct {
    rl_student_arch arch;
    int variant; /* RWKV7: 'a' (k_k/k_a + GroupNorm) or 'b' (state balancing) */
    int hidden, heads, kv_heads, head_dim;
    int layer, layers; /* this layer's index; the model's depth (init formulas) */
    int rank_decay, rank_iclr, rank_value, rank_gate, rank_shift;
    int qkv_bias, use_rope;
    int qk_norm;       /* per-head RMSNorm of r and k before RoPE (Qwen3) */
    float norm_eps;    /* its epsilon: the teacher's rms_norm_eps */
    int batch, seq;
} rl_tmix_dims;

/* LoRA rank rule [METHOD.md]: max(1, round(D^e·m/32))·32 */
int rl_lora_rank(int hidden, double e, double m);

/* Pointers into a parameter (or gradient) arena; NULL where absent. */
typedef struct {
    float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *o_w;
    float *o_b, *q_norm_w, *k_norm_w; /* o_proj bias [D]; Qwen3 q/k norms [N] */
    /* RAD-RWKV7 */
    float *w0, *w1, *w2, *a0, *a1, *a2, *v0, *v1, *v2, *g1, *g2, *k_k, *k_a, *r_k, *lnx_w, *lnx_b;
    /* RAD-RWKV6; maa[5] in the order r, k, v, w, g */
    float *maa_x, *maa[5], *maa_w1, *maa_w2, *decay, *decay_w1, *decay_w2, *gate_w;
} rl_tmix_params;

/* Activations saved by the forward and the backward's scratch (backend memory). */
typedef struct rl_tmix_acts {
    float *r, *k, *vp;            /* projections after q/k-norm and RoPE: [R,A], [R,KD], [R,KD] */
    float *r_raw, *k_raw, *q_rstd, *k_rstd; /* qk_norm: before the norm [R,A], [R,KD]; rstd [R·H], [R·G] */
    float *hw, *dl, *ha, *al;     /* LoRA middles and outputs */
    float *hg, *gate, *hv, *nl;
    float *logw, *ka, *kb, *kt, *v; /* wkv inputs [R,D] */
    float *o, *og, *mean, *rstd;  /* wkv output, gated read-out, GroupNorm stats [R,H] */
    float *ckpt;                  /* wkv checkpoints */
    /* backward scratch */
    float *d_r, *d_k, *d_vp, *d_mid, *d_pre, *d_dl, *d_al, *d_gate, *d_nl;
    float *d_logw, *d_ka, *d_kb, *d_kt, *d_v, *d_o, *d_og;
    float *d_r_raw, *d_k_raw;     /* qk_norm */
    /* RAD-RWKV6: shifted input for the first LoRA, tanh of it [R, 5·rank_shift], x_r..x_g */
    float *xx, *smaa, *xc[5], *d_xx, *d_xc[5];
    /* recurrent inference: when set, wkv starts from and ends in this state
     * [batch, heads, N, N] (no checkpoints are written) */
    float *wkv_state;
    int has_backward;
    const struct rl_tmix_acts *shared_from; /* buffers equal to this one's are its (not freed here) */
} rl_tmix_acts;

int rl_tmix_acts_alloc(rl_backend *be, const rl_tmix_dims *d, int backward, rl_tmix_acts *a, char *err,
                       size_t errlen);
/* The same, taking buffers from another layer's `from` instead of allocating them: its backward scratch
 * (backward), and with share_saved its saved activations too (forward-only, or recomputation: one layer's
 * activations exist at a time). Free the sharing layers before `from`. */
int rl_tmix_acts_alloc_shared(rl_backend *be, const rl_tmix_dims *d, int backward, const rl_tmix_acts *from,
                              int share_saved, rl_tmix_acts *a, char *err, size_t errlen);
void rl_tmix_acts_free(rl_backend *be, rl_tmix_acts *a);

/* y [R,D] = RAD-RWKV7 time-mix of u. Layer 0 writes v_first [R,A]; later layers
 * read it. rope_cos/sin: [seq, N/2] tables (positions 0..seq−1). */
int rl_tmix7_forward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, rl_tmix_acts *a,
                     const float *u, float *v_first, const float *rope_cos, const float *rope_sin, float *y);
/* Accumulates du, the parameter gradients g and dv_first (later layers add their
 * share; layer 0 consumes it). */
int rl_tmix7_backward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, const rl_tmix_params *g,
                      rl_tmix_acts *a, const float *u, const float *v_first, float *dv_first,
                      const float *rope_cos, const float *rope_sin, const float *dy, float *du);

/* y [R,D] = RAD-RWKV6 time-mix of u; shift_state [batch, D] is u_{−1} (NULL = zeros). */
int rl_tmix6_forward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, rl_tmix_acts *a,
                     const float *u, const float *shift_state, const float *rope_cos, const float *rope_sin,
                     float *y);
int rl_tmix6_backward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, const rl_tmix_params *g,
                      rl_tmix_acts *a, const float *u, const float *shift_state, const float *rope_cos,
                      const float *rope_sin, const float *dy, float *du);

/* ---- the student model ----------------------------------------------------
 * The teacher's embedding, norms, MLPs and LM head (an rl_model, `base`) with a
 * time-mix layer in place of attention in layers [0, layers − attention_layers);
 * the last attention_layers layers keep softmax attention (hybrid). The time-mix
 * q/k/v/o tensors are the base model's self_attn tensors (same names). */
typedef struct rl_student {
    rl_model *base;
    rl_student_arch arch;
    int variant, attention_layers, use_rope;
    int rank_decay, rank_iclr, rank_value, rank_gate, rank_shift;
    rl_arena *tparams;       /* the new tensors, reference-release names */
    rl_tmix_params *tp;      /* per layer; q/k/v/o point into base */
    rl_tmix_dims *td;        /* per layer */
    rl_tmix_acts *ta;        /* per layer, after rl_student_prepare; layers > 0 share layer 0's buffers
                              * (scratch always, everything unless every layer's activations are kept) */
    float *v_first;          /* [R, A] */
    rl_mixer mixer;          /* forward only: the time-mix as base's sequence mixer (rl_student_forward) */
} rl_student;

/* The LoRA ranks of the new tensors; default: rl_lora_rank rules of METHOD.md
 * (decay, ICLR and token-shift rank(0.5, 1.8), value rank(0.5, 1.3), gate rank(0.8, 0.6)). */
typedef struct {
    int decay, iclr, value, gate, shift;
} rl_student_ranks;

void rl_student_default_ranks(int hidden, rl_student_ranks *r);
/* Adds the student's new tensors (the size table rl_student_transfer and rl_student_load
 * allocate; names as in the file comment of student.c) to an arena that is not allocated.
 * The rest of a student is the teacher's table (rl_model_param_table). */
int rl_student_param_table(rl_arena *a, const rl_model_config *teacher, rl_student_arch arch, int variant,
                           int attention_layers, const rl_student_ranks *r);

/* Which tensors train in a stage (METHOD.md §3): step 1 (align) only the time-mix
 * tensors model.layers.<l>.self_attn.* of layers l < mix_layers (the teacher-initialised
 * q/k/v/o and their biases included); steps 2 and 3 all; step 3a (extend with
 * train=decay_shift) the decay and token-shift tensors: RAD-RWKV6 time_decay* and
 * time_maa_w*, RAD-RWKV7 w0/w1/w2. The trainer and the memory planner both ask this. */
typedef enum { RL_TRAINS_ALL, RL_TRAINS_TIME_MIX, RL_TRAINS_DECAY_SHIFT } rl_param_set;
int rl_tensor_trains(const char *name, rl_param_set set, int mix_layers);

/* "rad-rwkv7" / "rad-rwkv6" */
int rl_student_arch_from_name(const char *s, rl_student_arch *out);
const char *rl_student_arch_name(rl_student_arch a);
/* 1 if dir/config.json describes a student written by rl_student_save */
int rl_student_is_student_dir(const char *dir);

/* Weight transfer: loads the teacher folder, copies q/k/v/o (and everything else),
 * initialises every new tensor by its METHOD.md formula from seed. */
int rl_student_transfer(rl_student **out, rl_backend *be, const char *teacher_dir, rl_student_arch arch, int variant,
                        int attention_layers, uint64_t seed, char *err, size_t errlen);
int rl_student_load(rl_student **out, rl_backend *be, const char *dir, char *err, size_t errlen);
/* The same; bf16_matrices = 1: every GEMM-only matrix (rl_model_gemm_only) kept in bf16 only, and a backward gives
 * the ones it computes gradients for bf16 gradients (precision bf16-weights: the trainer keeps the fp32 master
 * weights of those that train). Such a student computes under BF16 autocast only. */
int rl_student_load_ex(rl_student **out, rl_backend *be, const char *dir, int bf16_matrices, char *err,
                       size_t errlen);
/* config.json (arch, variant, every dimension) + model.safetensors, fp32 */
int rl_student_save(const rl_student *s, const char *dir, char *err, size_t errlen);
void rl_student_destroy(rl_student *s);

/* Activations for batch×seq (forward only). */
int rl_student_prepare(rl_student *s, int batch, int seq, int chunk_rows, char *err, size_t errlen);
/* Activations for training or forward: the base model's per `keep` (rl_model_prepare_keep); the time-mix
 * layers' saved sets one per layer (mix_own) or one shared by every layer (forward only, recomputation),
 * their backward scratch always one. */
int rl_student_prepare_keep(rl_student *s, int batch, int seq, int chunk_rows, int backward, rl_acts_keep keep,
                            int mix_own, char *err, size_t errlen);
/* y = TimeMix_l(u) with the base model's RoPE tables (prepared for the same batch and seq). */
int rl_student_mix_forward(rl_student *s, int l, const float *u, float *y);
/* Embedding → layers → final norm into s->base->lnf; then rl_model_loss(s->base, …)
 * and rl_model_logits work as for a teacher. */
int rl_student_forward(rl_student *s, const int32_t *tokens, char *err, size_t errlen);

/* ---- recurrent inference ------------------------------------------------------
 * O(1) state per time-mix layer: the wkv state [batch, heads, N, N] fp32, the
 * RWKV6 shift vector [batch, D], and the absolute position for RoPE. A hybrid's
 * softmax-attention layers keep a KV cache instead: k (after q/k-norm and RoPE) and
 * v of every position so far, [batch, max_pos, kv_heads, N] each. Feed a prompt in
 * parallel, then one token at a time; each call continues where the last ended and
 * equals the parallel forward over the whole sequence. */
typedef struct {
    int batch, max_pos, pos;
    float **wkv, **shift;       /* per time-mix layer */
    float **kcache, **vcache;   /* per attention layer */
    float *rope_cos, *rope_sin; /* [max_pos, N/2] */
} rl_student_state;

/* Zero state for batch sequences of up to max_pos tokens (a hybrid's KV caches
 * take 2·batch·max_pos·kv_heads·N floats per attention layer). */
int rl_student_state_create(rl_student_state **out, const rl_student *s, int batch, int max_pos, char *err,
                            size_t errlen);
void rl_student_state_destroy(const rl_student *s, rl_student_state *st);
/* Runs batch×seq new tokens (s prepared for that batch and seq) from the state and
 * advances it; leaves the final-norm output in s->base->lnf like rl_student_forward. */
int rl_student_forward_state(rl_student *s, rl_student_state *st, const int32_t *tokens, char *err, size_t errlen);

#endif
