/* student_int.h — helpers shared by the student's own files; not for other modules. */
#ifndef RL_STUDENT_INT_H
#define RL_STUDENT_INT_H

#include "student.h"

static inline int matmul(rl_backend *be, float *c, const float *a, const float *b, int M, int N, int K, int ta, int tb,
                  float beta)
{
    rl_gemm g = {.M = M, .N = N, .K = K, .trans_a = ta, .trans_b = tb, .alpha = 1.0f, .beta = beta};
    return rl_matmul(be, &g, c, a, b, NULL);
}

/* y = x·W (W [in, out]) */
static inline int lora_forward(rl_backend *be, float *y, const float *x, const float *w, int rows, int in, int out)
{
    return matmul(be, y, x, w, rows, out, in, 0, 0, 0.0f);
}
/* dx += dy·Wᵀ (dx may be NULL), dW += xᵀ·dy (dw may be NULL) */
static inline int lora_backward(rl_backend *be, float *dx, float *dw, const float *dy, const float *x, const float *w,
                         int rows, int in, int out)
{
    int rc = 0;
    if (dx)
        rc |= matmul(be, dx, dy, w, rows, in, out, 0, 1, 1.0f);
    if (dw)
        rc |= matmul(be, dw, x, dy, in, out, rows, 1, 0, 1.0f);
    return rc;
}
/* y = x·Wᵀ + b (W [out, in]) */
static inline int linear_forward(rl_backend *be, float *y, const float *x, const float *w, const float *b, int rows, int in,
                          int out)
{
    rl_gemm g = {.M = rows, .N = out, .K = in, .trans_b = 1, .alpha = 1.0f};
    return rl_matmul(be, &g, y, x, w, b);
}
static inline int linear_backward(rl_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, int rows, int in, int out)
{
    int rc = 0;
    if (dx)
        rc |= matmul(be, dx, dy, w, rows, in, out, 0, 0, 1.0f);
    if (dw)
        rc |= matmul(be, dw, dy, x, out, in, rows, 1, 0, 1.0f);
    if (db)
        rc |= rl_bias_backward(be, db, dy, rows, out);
    return rc;
}

/* LoRA with an activation in the middle: out [rows,out] = f(x·W1)·W2, mid = f(x·W1) saved.
 * Gradients: dmid = dout·W2ᵀ, dW2 += midᵀ·dout, dpre = dmid ⊙ f′, dx += dpre·W1ᵀ, dW1 += xᵀ·dpre. */
static inline int lora2_backward(rl_backend *be, rl_tmix_acts *a, int act, float *dx, float *dw1, float *dw2,
                          const float *dout, const float *x, const float *mid, const float *w1, const float *w2,
                          int rows, int in, int rank, int out)
{
    const size_t n = (size_t)rows * rank;
    int rc = rl_zero(be, a->d_mid, n * sizeof(float));
    rc |= lora_backward(be, a->d_mid, dw2, dout, mid, w2, rows, rank, out);
    const float *dpre = a->d_mid;
    if (act >= 0) {
        rc |= rl_zero(be, a->d_pre, n * sizeof(float));
        rc |= rl_act_backward(be, (rl_act)act, a->d_pre, a->d_mid, mid, n);
        dpre = a->d_pre;
    }
    rc |= lora_backward(be, dx, dw1, dpre, x, w1, rows, in, rank);
    return rc;
}

/* The q/k projections with the teacher's q/k norms and RoPE (student_rwkv7.c). */
int rl__tmix_qk_forward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, rl_tmix_acts *a,
                        const float *xr, const float *xk, const float *rope_cos, const float *rope_sin);
int rl__tmix_qk_backward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, const rl_tmix_params *g,
                         rl_tmix_acts *a, float *dxr, float *dxk, const float *xr, const float *xk,
                         const float *rope_cos, const float *rope_sin);

#endif
