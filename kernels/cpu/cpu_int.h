/* cpu_int.h — the fp32 CPU backend's internal entry points (one file per group). */
#ifndef RL_CPU_INT_H
#define RL_CPU_INT_H

#include "../kernels_int.h"

int rl__cpu_matmul(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b, const float *bias);
int rl__cpu_bias_backward(rl_backend *be, float *dbias, const float *dout, int rows, int cols);

int rl__cpu_embedding_forward(rl_backend *be, float *out, const int32_t *ids, const float *table, int rows,
                              int vocab, int dim);
int rl__cpu_embedding_backward(rl_backend *be, float *dtable, const float *dout, const int32_t *ids, int rows,
                               int vocab, int dim);
int rl__cpu_rmsnorm_forward(rl_backend *be, float *out, float *rstd, const float *in, const float *w, int rows,
                            int dim, float eps);
int rl__cpu_rmsnorm_backward(rl_backend *be, float *din, float *dw, const float *dout, const float *in,
                             const float *w, const float *rstd, int rows, int dim);
int rl__cpu_rope(rl_backend *be, float *x, const float *cos_t, const float *sin_t, int batch, int seq, int heads,
                 int head_dim, int inverse);
int rl__cpu_swiglu_forward(rl_backend *be, float *out, const float *gate, const float *up, size_t n);
int rl__cpu_swiglu_backward(rl_backend *be, float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, size_t n);

int rl__cpu_attention_forward(rl_backend *be, const rl_attn_dims *d, float *out, float *lse, const float *q,
                              const float *k, const float *v);
int rl__cpu_attention_backward(rl_backend *be, const rl_attn_dims *d, float *dq, float *dk, float *dv,
                               float *delta, const float *dout, const float *out, const float *lse,
                               const float *q, const float *k, const float *v);

int rl__cpu_cross_entropy(rl_backend *be, float *losses, float *dlogits, const float *logits,
                          const int32_t *targets, int rows, int vocab, float grad_scale);
int rl__cpu_kl_divergence(rl_backend *be, float *losses, float *dlogits, const float *s, const float *t, int rows,
                          int vocab, float grad_scale);
int rl__cpu_l2_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim);
int rl__cpu_l2_backward(rl_backend *be, float *da, const float *a, const float *b, const float *losses,
                        float grad_scale, int rows, int dim);
int rl__cpu_mse_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim);
int rl__cpu_mse_backward(rl_backend *be, float *da, const float *a, const float *b, float grad_scale, int rows,
                         int dim);

/* cpu_wkv7.c, cpu_wkv6.c; d->chunk is already resolved (> 0) by backend.c */
int rl__cpu_wkv7_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                         const rl_wkv_in *in, const float *state_in);
int rl__cpu_wkv7_backward(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                          const float *dy, const float *dstate_out, const rl_wkv_in *in, const float *state_in,
                          const float *ckpt);
int rl__cpu_wkv6_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                         const rl_wkv_in *in, const float *state_in);
int rl__cpu_wkv6_backward(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                          const float *dy, const float *dstate_out, const rl_wkv_in *in, const float *state_in,
                          const float *ckpt);

/* cpu_rwkv_mix.c */
int rl__cpu_act_forward(rl_backend *be, rl_act kind, float *y, const float *x, size_t n);
int rl__cpu_act_backward(rl_backend *be, rl_act kind, float *dx, const float *dy, const float *y, size_t n);
int rl__cpu_rwkv7_mix_forward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_out *out,
                              float *v_first, const rl_rwkv7_mix_in *in);
int rl__cpu_rwkv7_mix_backward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_grad *g,
                               float *dv_first, const rl_rwkv7_mix_out *dout, const rl_rwkv7_mix_in *in,
                               const float *v_first);
int rl__cpu_readout_forward(rl_backend *be, const rl_readout_dims *d, float *out, float *mean, float *rstd,
                            const float *o, const float *g, const float *weight, const float *bias);
int rl__cpu_readout_backward(rl_backend *be, const rl_readout_dims *d, float *d_o, float *dg, float *dweight,
                             float *dbias, const float *dout, const float *o, const float *g, const float *weight,
                             const float *bias, const float *mean, const float *rstd);

/* cpu_rwkv6_mix.c */
int rl__cpu_tokenshift_forward(rl_backend *be, const rl_shift_dims *d, float *out, const float *u,
                          const float *state, const float *mix);
int rl__cpu_tokenshift_backward(rl_backend *be, const rl_shift_dims *d, float *du, float *dstate, float *dmix,
                           const float *dout, const float *u, const float *state, const float *mix);
int rl__cpu_rwkv6_ddlerp_forward(rl_backend *be, const rl_shift_dims *d, int rank, float *const x[5],
                            const float *u, const float *state, const float *const maa[5], const float *s,
                            const float *w2);
int rl__cpu_rwkv6_ddlerp_backward(rl_backend *be, const rl_shift_dims *d, int rank, float *du, float *dstate,
                             float *const dmaa[5], float *ds, float *dw2, const float *const dx[5],
                             const float *u, const float *state, const float *const maa[5], const float *s,
                             const float *w2);
int rl__cpu_rwkv6_mix_forward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *logw, float *kt, float *vt,
                         float *qt, const float *k, const float *v, const float *q, const float *dlora,
                         const float *decay);
int rl__cpu_rwkv6_mix_backward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *dk, float *dv, float *dq,
                          float *ddlora, float *ddecay, const float *dlogw, const float *dkt, const float *dvt,
                          const float *dqt, const float *k, const float *dlora, const float *decay);

#endif
