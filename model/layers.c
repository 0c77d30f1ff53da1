/* layers.c — linear layers and the two blocks of a decoder layer: causal
 * self-attention (GQA, optional q/k RMSNorm, RoPE) and the SwiGLU MLP. */
#include <math.h>

#include "model.h"

static rl_gemm gemm(int M, int N, int K, int ta, int tb, float beta)
{
    rl_gemm g = {.M = M, .N = N, .K = K, .trans_a = ta, .trans_b = tb, .alpha = 1.0f, .beta = beta};
    return g;
}

int rl_linear_forward(rl_backend *be, float *y, const float *x, const float *w, const float *b, int rows, int in,
                      int out)
{
    rl_gemm g = gemm(rows, out, in, 0, 1, 0.0f);
    return rl_matmul(be, &g, y, x, w, b);
}

int rl_linear_backward(rl_backend *be, float *dx, float *dw, float *db, const float *dy, const float *x,
                       const float *w, int rows, int in, int out)
{
    int rc = 0;
    if (dx) {
        rl_gemm g = gemm(rows, in, out, 0, 0, 1.0f); /* dx[rows,in] += dy[rows,out]·W[out,in] */
        rc |= rl_matmul(be, &g, dx, dy, w, NULL);
    }
    if (dw) {
        rl_gemm g = gemm(out, in, rows, 1, 0, 1.0f); /* dW[out,in] += dyᵀ·x */
        rc |= rl_matmul(be, &g, dw, dy, x, NULL);
    }
    if (db)
        rc |= rl_bias_backward(be, db, dy, rows, out);
    return rc;
}

static rl_attn_dims attn_dims(const rl_model *m)
{
    const rl_model_config *c = &m->cfg;
    rl_attn_dims d = {.batch = m->batch, .seq = m->seq, .heads = c->heads, .kv_heads = c->kv_heads,
                      .head_dim = c->head_dim, .scale = 1.0f / sqrtf((float)c->head_dim)};
    return d;
}

/* q = rope(qnorm(ln1·Wqᵀ + bq)), k likewise with G heads, v = ln1·Wvᵀ + bv,
 * att = softmax_causal(q kᵀ/√N) v per head, attn_out = att·Woᵀ (+ bo). */
int rl_attn_block_forward(rl_model *m, const rl_layer_params *lp, rl_layer_acts *la)
{
    rl_backend *be = m->be;
    const rl_model_config *c = &m->cfg;
    const int R = m->batch * m->seq, D = c->hidden, N = c->head_dim;
    const int QD = c->heads * N, KD = c->kv_heads * N;
    int rc = 0;
    if (c->qk_norm) {
        rc |= rl_linear_forward(be, la->q_raw, la->ln1, lp->q_w, lp->q_b, R, D, QD);
        rc |= rl_linear_forward(be, la->k_raw, la->ln1, lp->k_w, lp->k_b, R, D, KD);
        rc |= rl_rmsnorm_forward(be, la->q, la->q_rstd, la->q_raw, lp->q_norm_w, R * c->heads, N,
                                 (float)c->rms_norm_eps);
        rc |= rl_rmsnorm_forward(be, la->k, la->k_rstd, la->k_raw, lp->k_norm_w, R * c->kv_heads, N,
                                 (float)c->rms_norm_eps);
    } else {
        rc |= rl_linear_forward(be, la->q, la->ln1, lp->q_w, lp->q_b, R, D, QD);
        rc |= rl_linear_forward(be, la->k, la->ln1, lp->k_w, lp->k_b, R, D, KD);
    }
    rc |= rl_linear_forward(be, la->v, la->ln1, lp->v_w, lp->v_b, R, D, KD);
    rc |= rl_rope_forward(be, la->q, m->rope_cos, m->rope_sin, m->batch, m->seq, c->heads, N);
    rc |= rl_rope_forward(be, la->k, m->rope_cos, m->rope_sin, m->batch, m->seq, c->kv_heads, N);
    rl_attn_dims d = attn_dims(m);
    /* a forward-only model (a teacher) under bf16 autocast: attention in bf16 as well (torch.autocast's) */
    d.bf16 = !m->has_backward && rl_backend_autocast(be) == RL_DTYPE_BF16;
    rc |= rl_attention_forward(be, &d, la->att, la->lse, la->q, la->k, la->v);
    rc |= rl_linear_forward(be, la->attn_out, la->att, lp->o_w, lp->o_b, R, QD, D);
    return rc;
}

int rl_attn_block_backward(rl_model *m, const rl_layer_params *lp, rl_layer_params *gp, const rl_layer_acts *la,
                           const float *dattn_out, float *dln1)
{
    rl_backend *be = m->be;
    const rl_model_config *c = &m->cfg;
    const rl_grad_scratch *gs = &m->gs;
    const int R = m->batch * m->seq, D = c->hidden, N = c->head_dim;
    const int QD = c->heads * N, KD = c->kv_heads * N;
    int rc = 0;
    rc |= rl_zero(be, gs->datt, sizeof(float) * (size_t)R * QD);
    rc |= rl_zero(be, gs->dq, sizeof(float) * (size_t)R * QD);
    rc |= rl_zero(be, gs->dk, sizeof(float) * (size_t)R * KD);
    rc |= rl_zero(be, gs->dv, sizeof(float) * (size_t)R * KD);
    rc |= rl_linear_backward(be, gs->datt, gp->o_w, gp->o_b, dattn_out, la->att, lp->o_w, R, QD, D);
    rl_attn_dims d = attn_dims(m);
    rc |= rl_attention_backward(be, &d, gs->dq, gs->dk, gs->dv, gs->delta, gs->datt, la->att, la->lse, la->q, la->k,
                                la->v);
    rc |= rl_rope_backward(be, gs->dq, m->rope_cos, m->rope_sin, m->batch, m->seq, c->heads, N);
    rc |= rl_rope_backward(be, gs->dk, m->rope_cos, m->rope_sin, m->batch, m->seq, c->kv_heads, N);
    const float *dq = gs->dq, *dk = gs->dk;
    if (c->qk_norm) {
        rc |= rl_zero(be, gs->dq_raw, sizeof(float) * (size_t)R * QD);
        rc |= rl_zero(be, gs->dk_raw, sizeof(float) * (size_t)R * KD);
        rc |= rl_rmsnorm_backward(be, gs->dq_raw, gp->q_norm_w, gs->dq, la->q_raw, lp->q_norm_w, la->q_rstd,
                                  R * c->heads, N);
        rc |= rl_rmsnorm_backward(be, gs->dk_raw, gp->k_norm_w, gs->dk, la->k_raw, lp->k_norm_w, la->k_rstd,
                                  R * c->kv_heads, N);
        dq = gs->dq_raw, dk = gs->dk_raw;
    }
    rc |= rl_linear_backward(be, dln1, gp->q_w, gp->q_b, dq, la->ln1, lp->q_w, R, D, QD);
    rc |= rl_linear_backward(be, dln1, gp->k_w, gp->k_b, dk, la->ln1, lp->k_w, R, D, KD);
    rc |= rl_linear_backward(be, dln1, gp->v_w, gp->v_b, gs->dv, la->ln1, lp->v_w, R, D, KD);
    return rc;
}

int rl_model_mlp_rows(const rl_model *m)
{
    return m->mlp_chunk;
}

/* Whether gate, up and act hold every row (ALL, or a single chunk): else they hold one chunk's. */
static int mlp_whole(const rl_model *m)
{
    return m->keep == RL_ACTS_ALL || rl_model_mlp_rows(m) == m->batch * m->seq;
}

/* gate, up, act of rows [r0, r0 + n) into la's buffers at row `at` (r0 when they hold every row, else 0). */
static int mlp_up(rl_model *m, const rl_layer_params *lp, const rl_layer_acts *la, int r0, int n, int at)
{
    rl_backend *be = m->be;
    const int D = m->cfg.hidden, F = m->cfg.intermediate;
    const size_t o = (size_t)at * F;
    const float *x = la->ln2 + (size_t)r0 * D;
    int rc = rl_linear_forward(be, la->gate + o, x, lp->gate_w, NULL, n, D, F);
    rc |= rl_linear_forward(be, la->up + o, x, lp->up_w, NULL, n, D, F);
    rc |= rl_swiglu_forward(be, la->act + o, la->gate + o, la->up + o, (size_t)n * F);
    return rc;
}

/* gate = ln2·Wgᵀ, up = ln2·Wuᵀ, act = silu(gate) ⊙ up, out = act·Wdᵀ; a row chunk at a time (the same GEMMs
 * whether the chunks are kept, with ALL, or overwritten: so a recomputation reproduces them bit for bit). */
int rl_mlp_block_forward(rl_model *m, const rl_layer_params *lp, rl_layer_acts *la, float *out)
{
    const int R = m->batch * m->seq, D = m->cfg.hidden, F = m->cfg.intermediate;
    const int whole = mlp_whole(m), step = rl_model_mlp_rows(m);
    if (step <= 0) /* not prepared */
        return RL_EINVAL;
    if (!out && !whole)
        return 0;
    int rc = 0;
    for (int r0 = 0; r0 < R; r0 += step) {
        const int n = R - r0 < step ? R - r0 : step, at = whole ? r0 : 0;
        rc |= mlp_up(m, lp, la, r0, n, at);
        if (out)
            rc |= rl_linear_forward(m->be, out + (size_t)r0 * D, la->act + (size_t)at * F, lp->down_w, NULL, n, F, D);
    }
    return rc;
}

/* A row chunk at a time (gate, up and act computed again first where they are not kept whole); the weight
 * gradients accumulate chunk by chunk. */
int rl_mlp_block_backward(rl_model *m, const rl_layer_params *lp, rl_layer_params *gp, const rl_layer_acts *la,
                          const float *dout, float *dln2)
{
    rl_backend *be = m->be;
    const rl_grad_scratch *gs = &m->gs;
    const int R = m->batch * m->seq, D = m->cfg.hidden, F = m->cfg.intermediate;
    const int whole = mlp_whole(m), step = rl_model_mlp_rows(m);
    if (step <= 0) /* not prepared */
        return RL_EINVAL;
    int rc = 0;
    for (int r0 = 0; r0 < R; r0 += step) {
        const int n = R - r0 < step ? R - r0 : step, at = whole ? r0 : 0;
        const size_t nf = (size_t)n * F, o = (size_t)at * F, xo = (size_t)r0 * D;
        if (!whole)
            rc |= mlp_up(m, lp, la, r0, n, 0);
        rc |= rl_zero(be, gs->dact, nf * sizeof(float));
        rc |= rl_zero(be, gs->dgate, nf * sizeof(float));
        rc |= rl_zero(be, gs->dup, nf * sizeof(float));
        rc |= rl_linear_backward(be, gs->dact, gp->down_w, NULL, dout + xo, la->act + o, lp->down_w, n, F, D);
        rc |= rl_swiglu_backward(be, gs->dgate, gs->dup, gs->dact, la->gate + o, la->up + o, nf);
        rc |= rl_linear_backward(be, dln2 + xo, gp->gate_w, NULL, gs->dgate, la->ln2 + xo, lp->gate_w, n, D, F);
        rc |= rl_linear_backward(be, dln2 + xo, gp->up_w, NULL, gs->dup, la->ln2 + xo, lp->up_w, n, D, F);
    }
    return rc;
}
