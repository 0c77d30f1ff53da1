/* kernels.h — the compute backend interface.
 *
 * Every backend (cpu/ now, cuda/ later) implements the same table of operations
 * (see kernels_int.h). Callers see one opaque context, rl_backend, that hides
 * threads, streams and library handles, and plain device pointers obtained from
 * rl_malloc(). Tensors are row-major and contiguous unless a stride says otherwise.
 *
 * Conventions (all ops):
 *   - Return 0 or a negative RL_E* code. The first failure is also kept in the
 *     backend as a sticky error with a message (rl_backend_status), the way an
 *     asynchronous device reports errors: a model can run a whole forward pass
 *     and check once.
 *   - Backward ops ACCUMULATE into every gradient they write (d += ...), so a
 *     tensor consumed twice gets both contributions; callers zero gradients.
 *   - Compute dtype: the CPU backend is fp32 everywhere. rl_matmul and rl_cast
 *     carry dtypes so that a CUDA backend can keep bf16 weights/activations with
 *     fp32 accumulation; a backend refuses (RL_ENOTSUP) a dtype it lacks.
 */
#ifndef RL_KERNELS_H
#define RL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the CUDA sources (C++) include this too */
#endif

enum {
    RL_OK = 0,
    RL_ENOMEM = -12,
    RL_EINVAL = -22,
    RL_ERANGE = -34,
    RL_ENOTSUP = -95,
};

typedef enum {
    RL_DTYPE_F32 = 0,
    RL_DTYPE_BF16 = 1,
    RL_DTYPE_F16 = 2,
} rl_dtype;

size_t rl_dtype_size(rl_dtype dt);
const char *rl_dtype_name(rl_dtype dt);

/* Scalar conversions shared by every backend's host side (round to nearest even;
 * NaN stays NaN). */
uint16_t rl_f32_to_bf16(float f);
float rl_bf16_to_f32(uint16_t h);
uint16_t rl_f32_to_f16(float f);
float rl_f16_to_f32(uint16_t h);

/* ---- backend context ---------------------------------------------------- */

typedef struct rl_backend rl_backend;

typedef enum { RL_BACKEND_CPU = 0, RL_BACKEND_CUDA = 1 } rl_backend_kind;

typedef struct {
    rl_backend_kind kind;
    int num_threads; /* CPU: 0 = OMP_NUM_THREADS or all cores */
    int device;      /* CUDA: device ordinal */
} rl_backend_options;

int rl_backend_create(rl_backend **out, const rl_backend_options *opt, char *err, size_t errlen);
void rl_backend_destroy(rl_backend *be);
const char *rl_backend_name(const rl_backend *be);
int rl_backend_num_threads(const rl_backend *be);
/* Waits for queued work, then returns the sticky error (0 if none) and copies its
 * message into err. */
int rl_backend_status(rl_backend *be, char *err, size_t errlen);
void rl_backend_clear_error(rl_backend *be);
/* CUDA: the stream (a cudaStream_t) every op of `be` is queued on, so that a caller's own device work (NCCL
 * collectives) is ordered with the ops; and the device ordinal.  NULL and -1 for the CPU backend. */
void *rl_backend_stream(rl_backend *be);
int rl_backend_device(const rl_backend *be);

/* ---- mixed precision --------------------------------------------------------
 * Autocast (as torch.autocast): with RL_DTYPE_BF16, every rl_matmul whose operands and output are F32 computes
 * with both operands rounded to bf16 and fp32 accumulation and output. An operand inside a range registered
 * with rl_backend_weights reads that range's bf16 copy, made once and again only after
 * rl_backend_weights_changed (call it after an optimizer step); any other operand is cast into backend scratch
 * first. Everything else (norms, attention, the recurrences and their state, losses, AdamW on the fp32
 * weights) stays fp32. The CPU backend widens the bf16 operands to fp32 (exact) and multiplies them in fp32,
 * which is the same arithmetic, so a CPU run predicts a GPU run's numerics. RL_DTYPE_F32 turns it off (the
 * default). */
int rl_backend_set_autocast(rl_backend *be, rl_dtype dt);
rl_dtype rl_backend_autocast(const rl_backend *be);
/* Registers n floats at base (device memory from rl_malloc; at most 16 ranges) as weights; rl_free of base
 * forgets it. The copy takes 2 bytes per float. */
int rl_backend_weights(rl_backend *be, const float *base, size_t n);
/* The range at base (NULL: every range) changed: its copy is made again before its next use. */
void rl_backend_weights_changed(rl_backend *be, const float *base);
/* Frozen weights stored in bf16 only (a teacher: no fp32 copy at all): n bf16 elements at bf16 (from
 * rl_malloc). The model addresses tensor i at (float *)(bf16 + offset_i), a pointer that only rl_matmul under
 * autocast may receive; it reads the bf16 data as they are. rl_free(bf16) forgets it. */
int rl_backend_weights_bf16(rl_backend *be, const uint16_t *bf16, size_t n);
/* The float* address of element `offset` of such a range. */
static inline float *rl_bf16_as_f32ptr(uint16_t *bf16, size_t offset) { return (float *)(void *)(bf16 + offset); }
/* Trainable weights stored in bf16 (precision bf16-weights): their gradients are bf16 too, n elements at bf16
 * (from rl_malloc), addressed by the model as float* like bf16-only weights. Under BF16 autocast an rl_matmul
 * whose output C lies in such a range computes in fp32 and stores C = bf16(alpha·op(A)·op(B) + beta·C) (C read as
 * bf16 when beta ≠ 0; one rounding per call; no bias). Only such a matmul, rl_zero and the BF16 forms of
 * rl_sum_squares_many, rl_cast and rl_adamw_update_bf16 may touch them (an operand, or an output reaching into one from outside, is
 * refused). rl_free of the allocation holding it forgets it; at most 4. */
int rl_backend_grads_bf16(rl_backend *be, const uint16_t *bf16, size_t n);

/* ---- profiling ------------------------------------------------------------
 * Off by default. When on, every op is timed (synchronously) and summed per op
 * name, and matmuls per distinct shape, so benchmarks can report where time goes. */

typedef struct {
    const char *op;
    int M, N, K, trans_a, trans_b, batch; /* matmul shape; 0 for other ops */
    long calls;
    double seconds, flops;
} rl_op_stat;

void rl_backend_profile(rl_backend *be, int enable); /* turning it on clears the statistics */
/* 1: ops are not timed (nor counted) until 0 again; the statistics so far are kept (a trainer's validation
 * between its profiled steps). */
void rl_backend_profile_pause(rl_backend *be, int pause);
int rl_backend_op_stats(const rl_backend *be, rl_op_stat *out, int max); /* returns the number filled */

/* ---- memory ------------------------------------------------------------- */

void *rl_malloc(rl_backend *be, size_t bytes); /* device memory; NULL + sticky error on failure */
void rl_free(rl_backend *be, void *p);
/* Bytes held through rl_malloc now, and the most held at once since the backend was created. */
void rl_backend_memory(const rl_backend *be, size_t *live_bytes, size_t *peak_bytes);
/* Memory by role: rl_malloc counts an allocation under the tag set when it was made (NULL or none:
 * "other") until it is freed; the backend tags its own autocast buffers "bf16 GEMM copies" and "GEMM cast
 * scratch". Returns the previous tag so that a callee can restore it. A tag is a string that outlives the
 * backend (a literal); at most 15 distinct ones. */
const char *rl_backend_mem_tag(rl_backend *be, const char *tag);
typedef struct {
    const char *tag;
    size_t live, peak; /* bytes held now, and the most held at once */
} rl_mem_role;
int rl_backend_mem_roles(const rl_backend *be, rl_mem_role *out, int max); /* returns the number filled */
int rl_upload(rl_backend *be, void *dst_dev, const void *src_host, size_t bytes);
int rl_download(rl_backend *be, void *dst_host, const void *src_dev, size_t bytes);
int rl_copy(rl_backend *be, void *dst, const void *src, size_t bytes);
int rl_zero(rl_backend *be, void *dst, size_t bytes);
/* dst[i] = (dst_dtype) src[i] for n elements. */
int rl_cast(rl_backend *be, void *dst, rl_dtype dst_dtype, const void *src, rl_dtype src_dtype, size_t n);

/* ---- elementwise and reductions ---------------------------------------- */

int rl_add(rl_backend *be, float *out, const float *a, const float *b, size_t n); /* out = a + b; may alias */
int rl_accumulate(rl_backend *be, float *y, const float *x, size_t n);           /* y += x */
int rl_scale(rl_backend *be, float *x, float s, size_t n);                       /* x *= s */
/* Synchronous reductions into a host double (accumulated in double). */
int rl_sum(rl_backend *be, double *out_host, const float *x, size_t n);
int rl_sum_squares(rl_backend *be, double *out_host, const float *x, size_t n);
/* out_host[i] = rl_sum_squares of x[i][0..n[i]) for i < count, each bit-identical to its own rl_sum_squares,
 * with one wait for a device per few hundred ranges instead of one per range (a global gradient norm over
 * every tensor). */
/* dt (NULL: every range F32) gives each range's dtype: a BF16 range holds n[i] bf16 elements at x[i] (the sum
 * of their fp32 widenings). */
int rl_sum_squares_many(rl_backend *be, double *out_host, const void *const *x, const rl_dtype *dt, const size_t *n,
                        int count);

/* ---- matrix products ---------------------------------------------------- */

/* C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b] + bias   (b < batch)
 * op(A) is [M,K] (A stored [K,M] when trans_a), op(B) is [K,N] (B stored [N,K]
 * when trans_b), C is [M,N]; bias [N] (may be NULL) is added to every row.
 * Strides are in elements between consecutive batch matrices. A linear layer
 * y = x·Wᵀ + b with W stored [out,in] (PyTorch) is M=rows, N=out, K=in, trans_b=1. */
typedef struct {
    int M, N, K;
    int trans_a, trans_b;
    float alpha, beta;
    int batch; /* 0 or 1 = one product */
    int64_t stride_a, stride_b, stride_c;
    rl_dtype dtype_a, dtype_b, dtype_c; /* F32, or BF16 operands / a BF16 result (CPU: not with a bias) */
} rl_gemm;

int rl_matmul(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b, const float *bias);
/* dbias[j] += Σ_r dout[r, j] */
int rl_bias_backward(rl_backend *be, float *dbias, const float *dout, int rows, int cols);

/* ---- layers --------------------------------------------------------------- */

/* out[r,:] = table[ids[r],:]; ids out of [0,vocab) is an error. */
int rl_embedding_forward(rl_backend *be, float *out, const int32_t *ids, const float *table, int rows,
                         int vocab, int dim);
int rl_embedding_backward(rl_backend *be, float *dtable, const float *dout, const int32_t *ids, int rows,
                          int vocab, int dim);

/* out = in · rstd · weight,  rstd = 1/sqrt(mean(in²) + eps)  per row; rstd[rows] saved. The backward's dweight
 * may be NULL (a frozen weight). */
int rl_rmsnorm_forward(rl_backend *be, float *out, float *rstd, const float *in, const float *weight, int rows,
                       int dim, float eps);
int rl_rmsnorm_backward(rl_backend *be, float *din, float *dweight, const float *dout, const float *in,
                        const float *weight, const float *rstd, int rows, int dim);

/* Rotate-half RoPE in place on x [batch, seq, heads, head_dim]; cos/sin are
 * [seq, head_dim/2] tables (position t, frequency i). With x = (x1, x2) halves:
 *   y1 = x1·cos − x2·sin,  y2 = x2·cos + x1·sin.
 * The backward applies the transposed rotation to dx in place. */
int rl_rope_forward(rl_backend *be, float *x, const float *cos_t, const float *sin_t, int batch, int seq,
                    int heads, int head_dim);
int rl_rope_backward(rl_backend *be, float *dx, const float *cos_t, const float *sin_t, int batch, int seq,
                     int heads, int head_dim);

/* out = silu(gate) ⊙ up,  silu(g) = g·σ(g). */
int rl_swiglu_forward(rl_backend *be, float *out, const float *gate, const float *up, size_t n);
int rl_swiglu_backward(rl_backend *be, float *dgate, float *dup, const float *dout, const float *gate,
                       const float *up, size_t n);

/* Causal softmax attention with GQA: query head h reads KV head h / (heads/kv_heads).
 * q, out: [batch, seq, heads, head_dim]; k, v: [batch, kv_seq, kv_heads, head_dim];
 * lse: [batch, heads, seq] log-sum-exp of the scaled scores, saved for backward.
 *   s_ij = scale · q_i·k_j (j ≤ i),  p_ij = exp(s_ij − lse_i),  out_i = Σ_j p_ij v_j.
 * Backward recomputes p from lse (memory O(seq·head_dim) per head, no seq×seq
 * matrix); delta is scratch of batch·heads·seq floats (delta_i = dout_i·out_i):
 *   ds_ij = p_ij (dout_i·v_j − delta_i),  dq_i = scale Σ_j ds_ij k_j,
 *   dk_j = scale Σ_i ds_ij q_i,  dv_j = Σ_i p_ij dout_i. */
typedef struct {
    int batch, seq, heads, kv_heads, head_dim;
    float scale; /* usually 1/sqrt(head_dim) */
    /* KV cache (recurrent inference; forward only): the queries are the tokens at
     * absolute positions q_pos..q_pos+seq−1 and k, v hold kv_seq ≥ q_pos + seq rows
     * per sequence (a cache's capacity); query i sees keys j ≤ q_pos + i. 0, 0 (the
     * default) = the ordinary case, kv_seq = seq and q_pos = 0. */
    int kv_seq, q_pos;
    /* 1: attention as torch.autocast runs it in bf16 — q, k, v rounded to bf16 (to nearest even) before
     * the two products, p rounded to bf16 before P·V, the scores, softmax, sums and output in fp32 (out_i =
     * Σ_j bf16(p_ij) bf16(v_j) / Σ_j p_ij, p_ij taken against a running row maximum, so which p round how
     * depends on the key tiling: backends agree to bf16 rounding, not bit for bit). Forward only
     * (rl_attention_backward refuses it): the model sets it for a forward-only model under BF16 autocast
     * (a distillation teacher). The CUDA backend runs it on the tensor cores at head sizes 64 and 128. */
    int bf16;
} rl_attn_dims;

int rl_attention_forward(rl_backend *be, const rl_attn_dims *d, float *out, float *lse, const float *q,
                         const float *k, const float *v);
int rl_attention_backward(rl_backend *be, const rl_attn_dims *d, float *dq, float *dk, float *dv, float *delta,
                          const float *dout, const float *out, const float *lse, const float *q, const float *k,
                          const float *v);

/* ---- losses ----------------------------------------------------------------
 * Row-chunk ops: the model computes one chunk of logits rows at a time, so a
 * [seq, vocab] matrix never exists (see model/loss.c). */

/* losses[r] = logsumexp(logits_r) − logits_r[target_r]; target −1 = ignored row
 * (loss 0, zero gradient). If dlogits != NULL it is SET (not accumulated) to
 * (softmax(logits_r) − onehot(target_r)) · grad_scale; it may alias logits. */
int rl_cross_entropy(rl_backend *be, float *losses, float *dlogits, const float *logits, const int32_t *targets,
                     int rows, int vocab, float grad_scale);
/* KL(p_T ‖ p_S) per row = Σ_v p_T (log p_T − log p_S), p = softmax of the logits.
 * dlogits (SET, may alias student_logits) = (p_S − p_T) · grad_scale. */
int rl_kl_divergence(rl_backend *be, float *losses, float *dlogits, const float *student_logits,
                     const float *teacher_logits, int rows, int vocab, float grad_scale);

/* Per-token L2 distance (RADLADS step 1): losses[r] = ‖a_r − b_r‖₂ / √dim.
 * Backward: da_r += grad_scale · (a_r − b_r) / (‖a_r − b_r‖₂ √dim); 0 where a_r = b_r. */
int rl_l2_distance_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim);
int rl_l2_distance_backward(rl_backend *be, float *da, const float *a, const float *b, const float *losses,
                            float grad_scale, int rows, int dim);
/* Per-row mean squared error: losses[r] = mean((a_r − b_r)²);
 * da_r += grad_scale · 2 (a_r − b_r) / dim. */
int rl_mse_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim);
int rl_mse_backward(rl_backend *be, float *da, const float *a, const float *b, float grad_scale, int rows,
                    int dim);

/* ---- optimizer ----------------------------------------------------------- */

/* AdamW (decoupled weight decay, bias correction), as torch.optim.AdamW:
 *   g = grad · grad_scale;  p ← p·(1 − lr·wd);  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²
 *   p ← p − lr · (m / (1−β1^step)) / (sqrt(v / (1−β2^step)) + eps)      (step ≥ 1) */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    int64_t step;
} rl_adamw_params;

int rl_adamw_update(rl_backend *be, float *param, const float *grad, float *m, float *v, size_t n,
                    const rl_adamw_params *p, float grad_scale);
/* The same update on an fp32 master copy with a bf16 gradient, writing the bf16 weights the GEMMs read
 * (precision bf16-weights): g = widen(grad16)·grad_scale; master, m, v as param, m, v above;
 * param16 = bf16(master) (round to nearest even, as rl_cast). */
int rl_adamw_update_bf16(rl_backend *be, uint16_t *param16, float *master, const uint16_t *grad16, float *m, float *v,
                         size_t n, const rl_adamw_params *p, float grad_scale);

/* ---- linear-attention recurrences (RWKV-7, RAD-RWKV6 / GLA) ----------------
 * Per (batch b, head h) an fp32 state S ∈ R^{N×N}, S[i][j]: i = value channel,
 * j = key channel, stored [batch, heads, N, N]. Token tensors are
 * [batch, seq, heads, N] contiguous. logw is the log of the decay (d = exp(logw)
 * over keys); the model maps its own parameterisation to it (RAD-RWKV7:
 * −e^(−0.5)·σ(x); RAD-RWKV6: max(−e^x, −5)). Per token:
 *   wkv7:  sa = S a;  S ← S diag(d) + sa bᵀ + v kᵀ;  y = S r
 *   wkv6:             S ← S diag(d) + v kᵀ;          y = S r
 * (RWKV-7 maps a = −κ̂, b = κ̂ ⊙ α; wkv6 ignores a and b.) state_in NULL = zeros;
 * state_out (may be NULL) receives the final state, so a long sequence can be run
 * in pieces; state_out may be state_in (updated in place). ckpt (may be NULL) receives the state before every chunk of `chunk`
 * tokens, rl_wkv_checkpoint_floats(d, 6) floats; the backward rebuilds each chunk's
 * states from it (or, given NULL, replays the forward from state_in first). wkv7's ckpt is
 * rl_wkv_checkpoint_floats(d, 7) floats: those states (key-major, [batch·heads][chunks][N][N]), then every token's
 * sa ([batch, seq, heads, N], as the inputs), so that a backward can step the state back from a chunk's end
 * without recomputing the chunk (the CUDA backend's; the chunked tensor-core forward, RADLADS_WKV_CHUNKED=1,
 * leaves the sa part as it was and its backward reads none).
 * Backward ACCUMULATES into every gradient and into dstate_in (may be NULL);
 * dstate_out is ∂L/∂(final state), NULL = 0. Any seq ≥ 1. The CUDA wkv6 backward at head sizes 64 and 128 on decays
 * steep enough to slow the per-row kernels (by default, RADLADS_WKV_CHUNKED=2: cuda_wkv.cu wkv6_by_decays; =3 on
 * any decays), and with RADLADS_WKV_CHUNKED=1 every CUDA wkv at those sizes, works in chunks of 16 tokens scaled by
 * partial decay products: exact (to fp32 rounding) for logw ≥ −10 per token, which the models' decays always are (RAD-RWKV7
 * ≥ −e^(−0.5), RAD-RWKV6 ≥ −5); RADLADS_WKV_CHUNKED=0 selects the per-row kernels, exact for any logw. */
typedef struct {
    int batch, seq, heads, head_dim;
    int chunk; /* checkpoint interval L; 0 = RL_WKV_DEFAULT_CHUNK */
} rl_wkv_dims;

#define RL_WKV_DEFAULT_CHUNK 16

typedef struct {
    const float *r, *logw, *k, *v, *a, *b; /* a, b: wkv7 only */
} rl_wkv_in;

typedef struct {
    float *r, *logw, *k, *v, *a, *b; /* a, b: wkv7 only */
} rl_wkv_grad;

/* kind 6: batch·heads·ceil(seq/chunk)·N² (the states); kind 7: that + batch·seq·heads·N (sa, after the states);
 * 0 for any other kind or bad dims */
size_t rl_wkv_checkpoint_floats(const rl_wkv_dims *d, int kind);

int rl_wkv7_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                    const rl_wkv_in *in, const float *state_in);
int rl_wkv7_backward(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                     const float *dy, const float *dstate_out, const rl_wkv_in *in, const float *state_in,
                     const float *ckpt);
int rl_wkv6_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                    const rl_wkv_in *in, const float *state_in);
int rl_wkv6_backward(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                     const float *dy, const float *dstate_out, const rl_wkv_in *in, const float *state_in,
                     const float *ckpt);

/* ---- RAD-RWKV time-mix element-wise parts ------------------------------------ */

typedef enum { RL_ACT_TANH = 0, RL_ACT_SIGMOID = 1 } rl_act;
/* y = f(x); backward dx += dy·f′ computed from y (tanh: 1 − y², sigmoid: y(1 − y)). */
int rl_act_forward(rl_backend *be, rl_act kind, float *y, const float *x, size_t n);
int rl_act_backward(rl_backend *be, rl_act kind, float *dx, const float *dy, const float *y, size_t n);

/* RAD-RWKV7 mix (METHOD.md §1 steps 2–8 after the projections), per row and query
 * head h reading KV head h/(heads/kv_heads); c = channel of D = heads·N:
 *   logw = −e^(−0.5)·σ(w0 + dlora)            dlora = tanh(u·w1)·w2
 *   α    = σ(a0 + alora)                       alora = (u·a1)·a2
 *   variant 'a': κ = normalize_h(k ⊙ k_k) (x / max(‖x‖, 1e-12)), k̃ = k ⊙ (1 + (α − 1) ⊙ k_a)
 *   variant 'b': κ = k / (‖k‖_h + 1e-12),                         k̃ = k ⊙ (1 − exp(logw) + α)
 *   out: logw, a = −κ, b = κ ⊙ α, k = k̃ (D wide), v:
 *   first layer: v = v′ and v_first = v (written when non-NULL);
 *   later layers: v = v′ + (v_first − v′) ⊙ σ(v0 + vlora),  vlora = (u·v1)·v2.
 * k, v are [rows, kv_heads·N] (after RoPE on k); everything else [rows, D] or [D].
 * Backward accumulates into every non-NULL gradient; dv_first is read (first
 * layer: the later layers' gradient of v_first) or accumulated (later layers). */
typedef struct {
    int rows, heads, kv_heads, head_dim;
    int variant;     /* 'a' or 'b' */
    int first_layer; /* layer 0: no value residual, v_first is produced */
} rl_rwkv7_mix_dims;

typedef struct {
    const float *k, *v, *dlora, *alora, *vlora, *w0, *a0, *v0, *k_k, *k_a;
} rl_rwkv7_mix_in;

typedef struct {
    float *k, *v, *dlora, *alora, *vlora, *w0, *a0, *v0, *k_k, *k_a;
} rl_rwkv7_mix_grad;

typedef struct {
    float *logw, *a, *b, *k, *v;
} rl_rwkv7_mix_out;

int rl_rwkv7_mix_forward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_out *out, float *v_first,
                         const rl_rwkv7_mix_in *in);
int rl_rwkv7_mix_backward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_grad *g, float *dv_first,
                          const rl_rwkv7_mix_out *dout, const rl_rwkv7_mix_in *in, const float *v_first);

/* Read-out of the recurrence output o [rows, heads·N] times the gate g:
 *   groupnorm: p = (o − μ_h)·rstd_h·weight + bias, rstd = 1/√(var_h + eps) (per row
 *              and head; mean, rstd [rows, heads] saved);  otherwise p = o·scale;
 *   out = p ⊙ g. Backward accumulates into d_o, dg, dweight, dbias. */
typedef struct {
    int rows, heads, head_dim;
    int groupnorm;
    float eps, scale;
} rl_readout_dims;

int rl_readout_forward(rl_backend *be, const rl_readout_dims *d, float *out, float *mean, float *rstd,
                       const float *o, const float *g, const float *weight, const float *bias);
int rl_readout_backward(rl_backend *be, const rl_readout_dims *d, float *d_o, float *dg, float *dweight,
                        float *dbias, const float *dout, const float *o, const float *g, const float *weight,
                        const float *bias, const float *mean, const float *rstd);

/* ---- RAD-RWKV6 time-mix element-wise parts ----------------------------------
 * Token shift over u [batch·seq, dim] (rows of one sequence are consecutive):
 * δ_t = u_{t−1} − u_t with u_{−1} = state[b] (zeros when state is NULL). */
typedef struct {
    int batch, seq, dim;
} rl_shift_dims;

/* out = u + δ ⊙ mix (mix [dim]); backward accumulates du, dstate (may be NULL), dmix. */
int rl_tokenshift_forward(rl_backend *be, const rl_shift_dims *d, float *out, const float *u, const float *state,
                          const float *mix);
int rl_tokenshift_backward(rl_backend *be, const rl_shift_dims *d, float *du, float *dstate, float *dmix,
                           const float *dout, const float *u, const float *state, const float *mix);
/* ddlerp: x_c = u + δ ⊙ (maa_c + s_c·W2[c]) for c = r, k, v, w, g, where s [rows, 5, rank]
 * = tanh((u + δ⊙maa_x)·maa_w1) and W2 = time_maa_w2 [5, rank, dim]. Backward accumulates
 * du, dstate (may be NULL), dmaa[c] (may be NULL), ds and dW2. */
int rl_rwkv6_ddlerp_forward(rl_backend *be, const rl_shift_dims *d, int rank, float *const x[5], const float *u,
                            const float *state, const float *const maa[5], const float *s, const float *w2);
int rl_rwkv6_ddlerp_backward(rl_backend *be, const rl_shift_dims *d, int rank, float *du, float *dstate,
                             float *const dmaa[5], float *ds, float *dw2, const float *const dx[5], const float *u,
                             const float *state, const float *const maa[5], const float *s, const float *w2);

/* RAD-RWKV6 step before wkv6 (METHOD.md §2 steps 3–5), per row, query head h reading
 * KV head h/(heads/kv_heads):  logw = max(−e^(decay + dlora), −5), w = e^logw,
 * k̃ = k_rep ⊙ (1 − w), ṽ = v_rep, q̃ = q·q_scale. k, v [rows, kv_heads·N]; the rest
 * [rows, D]. Backward accumulates dk, dv, dq, ddlora, ddecay (may be NULL). */
typedef struct {
    int rows, heads, kv_heads, head_dim;
    float q_scale; /* 1/√N */
} rl_rwkv6_mix_dims;

int rl_rwkv6_mix_forward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *logw, float *kt, float *vt, float *qt,
                         const float *k, const float *v, const float *q, const float *dlora, const float *decay);
int rl_rwkv6_mix_backward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *dk, float *dv, float *dq,
                          float *ddlora, float *ddecay, const float *dlogw, const float *dkt, const float *dvt,
                          const float *dqt, const float *k, const float *dlora, const float *decay);

#ifdef __cplusplus
}
#endif

#endif
