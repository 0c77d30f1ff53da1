/* cuda_int.h — the CUDA backend's private state and the entry points its files share.
 *
 * Private to kernels/cuda/. Include this before cuda_ops.h: it pulls kernels_int.h (C) in with C linkage,
 * so rl__fail and the public types resolve to the C symbols of backend.c. */
#ifndef RL_CUDA_INT_H
#define RL_CUDA_INT_H

#include <cublasLt.h>
#include <cuda_runtime.h>

extern "C" {
#include "../kernels_int.h"
}
#include "cuda_ops.h"

/* Error flag layout (device int[4], pinned mirror): which op found bad input, the bad value, its row,
 * and the bound it broke. Kernels claim slot 0 with atomicCAS, so the first report wins. */
enum { RLC_FLAG_OP, RLC_FLAG_VALUE, RLC_FLAG_ROW, RLC_FLAG_BOUND, RLC_FLAG_INTS };
enum { RLC_BAD_NONE = 0, RLC_BAD_EMBED_FWD, RLC_BAD_EMBED_BWD, RLC_BAD_CE_TARGET };

/* Blocks of the first pass of rl_sum: a fixed count, so the reduction order (and the result) does not
 * depend on the device. */
#define RLC_SUM_BLOCKS 1024
#define RLC_SUM_MANY 256 /* totals one rl_sum_squares_many wait brings back */
#define RLC_LT_WORKSPACE (32u << 20) /* cuBLASLt scratch; 32 MiB is what Hopper kernels ask for */

typedef struct rlc_gemm_cache_entry rlc_gemm_cache_entry;

typedef struct rlc_backend {
    int device;
    cudaStream_t stream;
    cublasLtHandle_t lt;
    void *lt_ws;
    rlc_workspace ws;        /* scratch for the launchers (cuda_ops.h) */
    int *bad_dev;            /* RLC_FLAG_INTS ints: input errors found on the device */
    int *bad_host;           /* pinned mirror, read at every sync */
    double *partials;        /* RLC_SUM_BLOCKS partials + RLC_SUM_MANY totals, for rl_sum(_squares_many) */
    double *sum_host;        /* pinned: the reductions' results, RLC_SUM_MANY */
    rlc_gemm_cache_entry *gemm_cache; /* heuristic results per shape (cuda_gemm.cu) */
    int gemm_cache_n;
} rlc_backend;

static inline rlc_backend *rlc_of(rl_backend *be) { return (rlc_backend *)be->impl; }

/* Turns a CUDA error into the sticky backend error ("<op>: <name>: <text>"); 0 for cudaSuccess. */
int rlc_fail_cuda(rl_backend *be, cudaError_t e, const char *op);
/* The launch check every op ends with: a launch-configuration error now, or a fault of earlier work. */
static inline int rlc_launched(rl_backend *be, const char *op) { return rlc_fail_cuda(be, cudaGetLastError(), op); }

/* Grid for a grid-stride loop over n elements with `threads` per block. */
static inline unsigned rlc_grid(size_t n, unsigned threads)
{
    size_t blocks = (n + threads - 1) / threads;
    if (blocks > (1u << 20))
        blocks = 1u << 20;
    return blocks ? (unsigned)blocks : 1u;
}

/* cuda_gemm.cu */
int rl__cuda_matmul(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b, const float *bias);
int rl__cuda_bias_backward(rl_backend *be, float *dbias, const float *dout, int rows, int cols);
void rl__cuda_gemm_cache_free(rlc_backend *c);

/* cuda_layers.cu */
int rl__cuda_add(rl_backend *be, float *out, const float *a, const float *b, size_t n);
int rl__cuda_accumulate(rl_backend *be, float *y, const float *x, size_t n);
int rl__cuda_scale(rl_backend *be, float *x, float s, size_t n);
int rl__cuda_sum(rl_backend *be, double *out, const float *x, size_t n, int squares);
int rl__cuda_sum_many(rl_backend *be, double *out, const void *const *x, const rl_dtype *dt, const size_t *n,
                      int count, int squares);
int rl__cuda_embedding_forward(rl_backend *be, float *out, const int32_t *ids, const float *table, int rows,
                               int vocab, int dim);
int rl__cuda_embedding_backward(rl_backend *be, float *dtable, const float *dout, const int32_t *ids, int rows,
                                int vocab, int dim);
int rl__cuda_rmsnorm_forward(rl_backend *be, float *out, float *rstd, const float *in, const float *w, int rows,
                             int dim, float eps);
int rl__cuda_rmsnorm_backward(rl_backend *be, float *din, float *dw, const float *dout, const float *in,
                              const float *w, const float *rstd, int rows, int dim);
int rl__cuda_rope(rl_backend *be, float *x, const float *cos_t, const float *sin_t, int batch, int seq, int heads,
                  int head_dim, int inverse);
int rl__cuda_swiglu_forward(rl_backend *be, float *out, const float *gate, const float *up, size_t n);
int rl__cuda_swiglu_backward(rl_backend *be, float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, size_t n);
int rl__cuda_cross_entropy(rl_backend *be, float *losses, float *dlogits, const float *logits,
                           const int32_t *targets, int rows, int vocab, float grad_scale);
int rl__cuda_kl_divergence(rl_backend *be, float *losses, float *dlogits, const float *s, const float *t,
                           int rows, int vocab, float grad_scale);
int rl__cuda_l2_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim);
int rl__cuda_l2_backward(rl_backend *be, float *da, const float *a, const float *b, const float *losses,
                         float grad_scale, int rows, int dim);
int rl__cuda_mse_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim);
int rl__cuda_mse_backward(rl_backend *be, float *da, const float *a, const float *b, float grad_scale, int rows,
                          int dim);
int rl__cuda_adamw(rl_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                   const rl_adamw_params *hp, float grad_scale);
int rl__cuda_adamw_bf16(rl_backend *be, uint16_t *p16, float *master, const uint16_t *g16, float *m, float *v,
                        size_t n, const rl_adamw_params *hp, float grad_scale);

#endif
