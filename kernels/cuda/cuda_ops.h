/* cuda_ops.h — the CUDA launchers for the recurrence, attention and RAD-RWKV mix ops.
 *
 * Private to kernels/cuda/. Each launcher mirrors the rl__ops slot of the same name (kernels_int.h) with
 * the backend replaced by the stream to enqueue on: all pointers are device pointers, nothing is
 * synchronised, arguments were already checked by backend.c. A launcher returns cudaSuccess or the first
 * launch error (cudaGetLastError after each launch); the backend turns that into its sticky error.
 * Semantics (what is set, what is accumulated) are exactly those documented in kernels.h.
 *
 * Scratch: an op that needs device scratch beyond its arguments takes it from `ws`, a per-stream
 * workspace the backend owns (rlc_workspace): the launcher asks rlc_ws_get for `bytes`, which grows the
 * buffer when needed (a cudaMalloc outside any capture) and returns NULL on failure. The buffer holds the largest
 * request so far, in whole MiB (kernels/scratch.h sizes every request, and radlads plan counts the same), and the
 * backend's memory by role shows it as "kernel scratch". */
#ifndef RL_CUDA_OPS_H
#define RL_CUDA_OPS_H

#include <cuda_runtime.h>

#include "../kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rlc_workspace {
    void *ptr;
    size_t bytes;
    rl_backend *be; /* counts the buffer under "kernel scratch" (rl_backend_mem_roles); NULL: uncounted */
} rlc_workspace;

/* backend.c (kernels_int.h): memory allocated outside rl_malloc, counted by role */
int rl__mem_track(rl_backend *be, void *p, size_t bytes, const char *tag);
void rl__mem_untrack(rl_backend *be, const void *p);

/* Grows ws to at least `bytes` (synchronising `st` before freeing the old buffer); NULL on failure. */
void *rlc_ws_get(rlc_workspace *ws, cudaStream_t st, size_t bytes);

/* A benchmark knob (RADLADS_WKV_CHUNKED, RADLADS_ATTN_TC, …), read by the caller once: one of the n `allowed`
 * values, else `dflt`; a value that is set but not allowed is said on stderr and ignored. */
int rlc_env_knob(const char *name, const int *allowed, int n, int dflt);

/* Attribute `what` of the current device, read from CUDA once per device and kept (the SM count, shared memory per SM
 * or per block, the compute capability: what the launchers' rules ask on every launch); −1 when CUDA cannot say (then
 * asked again next time; not 0, which a minor version may be). */
int rlc_device_attr(cudaDeviceAttr what);

/* The dynamic shared memory one block may have on the current device, in bytes (cudaDevAttrMaxSharedMemoryPerBlockOptin:
 * 99 KiB on sm_86/sm_89, 163 KiB on sm_80, 227 KiB on sm_90), 0 when CUDA cannot say. RADLADS_TEST_SMEM_OPTIN
 * (bytes) lowers it, so that a large GPU runs the kernels a smaller one would (tests/gpu/run.sh). */
int rlc_smem_optin(void);

/* Loads the module of cuda_wkv.cu / cuda_attention.cu (cudaFuncGetAttributes on one of its kernels): its machine
 * code, or on a GPU newer than the build its PTX compiled by the driver (minutes, once) — at the backend's start
 * rather than in a stage's first op. */
cudaError_t rlc_wkv_load(void);
cudaError_t rlc_attention_load(void);

/* ---- causal softmax attention with GQA (tiled, no seq×seq matrix) ---- */
cudaError_t rlc_attention_forward(cudaStream_t st, rlc_workspace *ws, const rl_attn_dims *d, float *out,
                                  float *lse, const float *q, const float *k, const float *v);
cudaError_t rlc_attention_backward(cudaStream_t st, rlc_workspace *ws, const rl_attn_dims *d, float *dq,
                                   float *dk, float *dv, float *delta, const float *dout, const float *out,
                                   const float *lse, const float *q, const float *k, const float *v);

/* ---- wkv7 / wkv6 recurrences, fp32 state ---- */
cudaError_t rlc_wkv7_forward(cudaStream_t st, rlc_workspace *ws, const rl_wkv_dims *d, float *y,
                             float *state_out, float *ckpt, const rl_wkv_in *in, const float *state_in);
cudaError_t rlc_wkv7_backward(cudaStream_t st, rlc_workspace *ws, const rl_wkv_dims *d, const rl_wkv_grad *g,
                              float *dstate_in, const float *dy, const float *dstate_out, const rl_wkv_in *in,
                              const float *state_in, const float *ckpt);
cudaError_t rlc_wkv6_forward(cudaStream_t st, rlc_workspace *ws, const rl_wkv_dims *d, float *y,
                             float *state_out, float *ckpt, const rl_wkv_in *in, const float *state_in);
cudaError_t rlc_wkv6_backward(cudaStream_t st, rlc_workspace *ws, const rl_wkv_dims *d, const rl_wkv_grad *g,
                              float *dstate_in, const float *dy, const float *dstate_out, const rl_wkv_in *in,
                              const float *state_in, const float *ckpt);

/* ---- RAD-RWKV element-wise parts ---- */
cudaError_t rlc_act_forward(cudaStream_t st, rl_act kind, float *y, const float *x, size_t n);
cudaError_t rlc_act_backward(cudaStream_t st, rl_act kind, float *dx, const float *dy, const float *y, size_t n);
cudaError_t rlc_rwkv7_mix_forward(cudaStream_t st, rlc_workspace *ws, const rl_rwkv7_mix_dims *d,
                                  const rl_rwkv7_mix_out *out, float *v_first, const rl_rwkv7_mix_in *in);
cudaError_t rlc_rwkv7_mix_backward(cudaStream_t st, rlc_workspace *ws, const rl_rwkv7_mix_dims *d,
                                   const rl_rwkv7_mix_grad *g, float *dv_first, const rl_rwkv7_mix_out *dout,
                                   const rl_rwkv7_mix_in *in, const float *v_first);
cudaError_t rlc_readout_forward(cudaStream_t st, const rl_readout_dims *d, float *out, float *mean, float *rstd,
                                const float *o, const float *g, const float *weight, const float *bias);
cudaError_t rlc_readout_backward(cudaStream_t st, rlc_workspace *ws, const rl_readout_dims *d, float *d_o,
                                 float *dg, float *dweight, float *dbias, const float *dout, const float *o,
                                 const float *g, const float *weight, const float *bias, const float *mean,
                                 const float *rstd);
cudaError_t rlc_tokenshift_forward(cudaStream_t st, const rl_shift_dims *d, float *out, const float *u,
                                   const float *state, const float *mix);
cudaError_t rlc_tokenshift_backward(cudaStream_t st, rlc_workspace *ws, const rl_shift_dims *d, float *du,
                                    float *dstate, float *dmix, const float *dout, const float *u,
                                    const float *state, const float *mix);
cudaError_t rlc_rwkv6_ddlerp_forward(cudaStream_t st, const rl_shift_dims *d, int rank, float *const x[5],
                                     const float *u, const float *state, const float *const maa[5],
                                     const float *s, const float *w2);
cudaError_t rlc_rwkv6_ddlerp_backward(cudaStream_t st, rlc_workspace *ws, const rl_shift_dims *d, int rank,
                                      float *du, float *dstate, float *const dmaa[5], float *ds, float *dw2,
                                      const float *const dx[5], const float *u, const float *state,
                                      const float *const maa[5], const float *s, const float *w2);
cudaError_t rlc_rwkv6_mix_forward(cudaStream_t st, const rl_rwkv6_mix_dims *d, float *logw, float *kt,
                                  float *vt, float *qt, const float *k, const float *v, const float *q,
                                  const float *dlora, const float *decay);
cudaError_t rlc_rwkv6_mix_backward(cudaStream_t st, rlc_workspace *ws, const rl_rwkv6_mix_dims *d, float *dk,
                                   float *dv, float *dq, float *ddlora, float *ddecay, const float *dlogw,
                                   const float *dkt, const float *dvt, const float *dqt, const float *k,
                                   const float *dlora, const float *decay);

#ifdef __cplusplus
}
#endif

#endif
