/* kernels_int.h — what a backend implements. Private to kernels/.
 *
 * The public rl_* functions (backend.c) check arguments once, for every backend,
 * then call through this table. A backend fills every slot; an op it cannot run
 * returns RL_ENOTSUP via rl__fail. */
#ifndef RL_KERNELS_INT_H
#define RL_KERNELS_INT_H

#include "kernels.h"

typedef struct rl__ops {
    void (*destroy)(rl_backend *be);
    int (*sync)(rl_backend *be);
    void *(*malloc)(rl_backend *be, size_t bytes);
    void (*free)(rl_backend *be, void *p);
    int (*upload)(rl_backend *be, void *dst, const void *src, size_t bytes);
    int (*download)(rl_backend *be, void *dst, const void *src, size_t bytes);
    int (*copy)(rl_backend *be, void *dst, const void *src, size_t bytes);
    int (*zero)(rl_backend *be, void *dst, size_t bytes);
    int (*cast)(rl_backend *be, void *dst, rl_dtype dt, const void *src, rl_dtype st, size_t n);

    int (*add)(rl_backend *be, float *out, const float *a, const float *b, size_t n);
    int (*accumulate)(rl_backend *be, float *y, const float *x, size_t n);
    int (*scale)(rl_backend *be, float *x, float s, size_t n);
    int (*sum)(rl_backend *be, double *out, const float *x, size_t n, int squares);
    /* count sums with one wait for the device; dt[i] F32 or BF16 (dt NULL: all F32) */
    int (*sum_many)(rl_backend *be, double *out, const void *const *x, const rl_dtype *dt, const size_t *n,
                    int count, int squares);

    int (*matmul)(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b, const float *bias);
    int (*bias_backward)(rl_backend *be, float *dbias, const float *dout, int rows, int cols);

    int (*embedding_forward)(rl_backend *be, float *out, const int32_t *ids, const float *table, int rows,
                             int vocab, int dim);
    int (*embedding_backward)(rl_backend *be, float *dtable, const float *dout, const int32_t *ids, int rows,
                              int vocab, int dim);
    int (*rmsnorm_forward)(rl_backend *be, float *out, float *rstd, const float *in, const float *w, int rows,
                           int dim, float eps);
    int (*rmsnorm_backward)(rl_backend *be, float *din, float *dw, const float *dout, const float *in,
                            const float *w, const float *rstd, int rows, int dim);
    int (*rope)(rl_backend *be, float *x, const float *cos_t, const float *sin_t, int batch, int seq, int heads,
                int head_dim, int inverse);
    int (*swiglu_forward)(rl_backend *be, float *out, const float *gate, const float *up, size_t n);
    int (*swiglu_backward)(rl_backend *be, float *dgate, float *dup, const float *dout, const float *gate,
                           const float *up, size_t n);
    int (*attention_forward)(rl_backend *be, const rl_attn_dims *d, float *out, float *lse, const float *q,
                             const float *k, const float *v);
    int (*attention_backward)(rl_backend *be, const rl_attn_dims *d, float *dq, float *dk, float *dv,
                              float *delta, const float *dout, const float *out, const float *lse,
                              const float *q, const float *k, const float *v);

    int (*cross_entropy)(rl_backend *be, float *losses, float *dlogits, const float *logits,
                         const int32_t *targets, int rows, int vocab, float grad_scale);
    int (*kl_divergence)(rl_backend *be, float *losses, float *dlogits, const float *s, const float *t,
                         int rows, int vocab, float grad_scale);
    int (*l2_forward)(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim);
    int (*l2_backward)(rl_backend *be, float *da, const float *a, const float *b, const float *losses,
                       float grad_scale, int rows, int dim);
    int (*mse_forward)(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim);
    int (*mse_backward)(rl_backend *be, float *da, const float *a, const float *b, float grad_scale, int rows,
                        int dim);
    int (*adamw)(rl_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                 const rl_adamw_params *hp, float grad_scale);
    int (*adamw_bf16)(rl_backend *be, uint16_t *p16, float *master, const uint16_t *g16, float *m, float *v,
                      size_t n, const rl_adamw_params *hp, float grad_scale);

    int (*wkv7_forward)(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                        const rl_wkv_in *in, const float *state_in);
    int (*wkv7_backward)(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                         const float *dy, const float *dstate_out, const rl_wkv_in *in, const float *state_in,
                         const float *ckpt);
    int (*wkv6_forward)(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                        const rl_wkv_in *in, const float *state_in);
    int (*wkv6_backward)(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                         const float *dy, const float *dstate_out, const rl_wkv_in *in, const float *state_in,
                         const float *ckpt);
    int (*act_forward)(rl_backend *be, rl_act kind, float *y, const float *x, size_t n);
    int (*act_backward)(rl_backend *be, rl_act kind, float *dx, const float *dy, const float *y, size_t n);
    int (*rwkv7_mix_forward)(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_out *out,
                             float *v_first, const rl_rwkv7_mix_in *in);
    int (*rwkv7_mix_backward)(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_grad *g,
                              float *dv_first, const rl_rwkv7_mix_out *dout, const rl_rwkv7_mix_in *in,
                              const float *v_first);
    int (*readout_forward)(rl_backend *be, const rl_readout_dims *d, float *out, float *mean, float *rstd,
                           const float *o, const float *g, const float *weight, const float *bias);
    int (*readout_backward)(rl_backend *be, const rl_readout_dims *d, float *d_o, float *dg, float *dweight,
                            float *dbias, const float *dout, const float *o, const float *g, const float *weight,
                            const float *bias, const float *mean, const float *rstd);
    int (*tokenshift_forward)(rl_backend *be, const rl_shift_dims *d, float *out, const float *u,
                              const float *state, const float *mix);
    int (*tokenshift_backward)(rl_backend *be, const rl_shift_dims *d, float *du, float *dstate, float *dmix,
                               const float *dout, const float *u, const float *state, const float *mix);
    int (*rwkv6_ddlerp_forward)(rl_backend *be, const rl_shift_dims *d, int rank, float *const x[5],
                                const float *u, const float *state, const float *const maa[5], const float *s,
                                const float *w2);
    int (*rwkv6_ddlerp_backward)(rl_backend *be, const rl_shift_dims *d, int rank, float *du, float *dstate,
                                 float *const dmaa[5], float *ds, float *dw2, const float *const dx[5],
                                 const float *u, const float *state, const float *const maa[5], const float *s,
                                 const float *w2);
    int (*rwkv6_mix_forward)(rl_backend *be, const rl_rwkv6_mix_dims *d, float *logw, float *kt, float *vt,
                             float *qt, const float *k, const float *v, const float *q, const float *dlora,
                             const float *decay);
    int (*rwkv6_mix_backward)(rl_backend *be, const rl_rwkv6_mix_dims *d, float *dk, float *dv, float *dq,
                              float *ddlora, float *ddecay, const float *dlogw, const float *dkt, const float *dvt,
                              const float *dqt, const float *k, const float *dlora, const float *decay);
} rl__ops;

struct rl_backend {
    const rl__ops *ops;
    const char *name;
    int num_threads;
    int status;       /* first error, sticky */
    char errmsg[512]; /* its message */
    void *impl;       /* backend-private state */
    int profile, profile_paused;
    int n_stats;
    rl_op_stat stats[128];
    /* mixed precision (rl_backend_set_autocast): weight ranges with their low-precision copies, and the
     * scratch operands of other matmul inputs are cast into */
    rl_dtype autocast;
    int gemm_bf16; /* set by the backend: its matmul takes BF16 operands (every backend does) */
    struct rl__weights {
        const float *base; /* native: the bf16 data itself, addressed as float* by the model */
        size_t n;          /* elements */
        void *copy;        /* n BF16 elements (native: base) */
        int stale, native;
    } weights[16];
    int n_weights;
    struct rl__grads16 {
        const uint16_t *base;
        size_t n;
    } grads16[4]; /* rl_backend_grads_bf16 */
    int n_grads16;
    void *cast_scratch[2];
    size_t cast_scratch_bytes[2];
    /* allocation accounting (rl_backend_memory): live pointers -> sizes, open addressing */
    struct rl__alloc_slot { void *p; size_t bytes; int tag; } *slots;
    size_t n_slots, n_live, live_bytes, peak_bytes;
    /* by role (rl_backend_mem_tag): tag 0 is "other" */
    int cur_tag, n_tags;
    rl_mem_role tags[16];
};

/* Elements an operand of g spans, batches included: op(A) is M×K and op(B) K×N however they are stored. */
static inline size_t rl__gemm_extent_a(const rl_gemm *g)
{
    return (size_t)(g->batch > 1 ? g->batch - 1 : 0) * (size_t)g->stride_a + (size_t)g->M * (size_t)g->K;
}
static inline size_t rl__gemm_extent_b(const rl_gemm *g)
{
    return (size_t)(g->batch > 1 ? g->batch - 1 : 0) * (size_t)g->stride_b + (size_t)g->K * (size_t)g->N;
}

/* Records the first error (later ones are dropped: the first is the cause) and
 * returns code, so backends can write `return rl__fail(be, RL_EINVAL, "...")`. */
int rl__fail(rl_backend *be, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Memory a backend allocates outside rl_malloc (the CUDA kernel scratch, which must not set a sticky error when
 * it cannot grow) counted under `tag` as rl_malloc counts its own: track after allocating, untrack before
 * freeing. Track returns RL_ENOMEM when the table cannot grow (the memory is then not counted). */
int rl__mem_track(rl_backend *be, void *p, size_t bytes, const char *tag);
void rl__mem_untrack(rl_backend *be, const void *p);

int rl__cpu_init(rl_backend *be, const rl_backend_options *opt, char *err, size_t errlen);
/* kernels/cuda/cuda_backend.cu; only in builds with RL_HAVE_CUDA */
int rl__cuda_init(rl_backend *be, const rl_backend_options *opt, char *err, size_t errlen);
/* rl_backend_stream / rl_backend_device for a CUDA backend (NULL / -1 for any other). */
void *rl__cuda_stream_ptr(rl_backend *be);
int rl__cuda_device(const rl_backend *be);

#endif
