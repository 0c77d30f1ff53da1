/* student_rwkv6.c — the RAD-RWKV6 time-mix layer (METHOD.md §2), forward and backward.
 *
 *   δ = u_{t−1} − u_t                       (u_{−1} = shift state, zeros in training)
 *   s = tanh((u + δ⊙maa_x)·maa_w1)  viewed [5, rank]
 *   x_c = u + δ⊙(maa_c + s_c·maa_w2[c])     c = r, k, v, w, g
 *   q = qn(x_r·W_qᵀ + b_q),  k = kn(x_k·W_kᵀ + b_k),  v = x_v·W_vᵀ + b_v   (qn, kn: Qwen3's norms)
 *   dlora = tanh(x_w·decay_w1)·decay_w2,    g = σ(x_g·W_gᵀ)
 *   (logw, k̃, ṽ, q̃) = mix(k, v, q, dlora, λ):  logw = max(−e^(λ+dlora), −5),
 *                      k̃ = k_rep⊙(1 − e^logw), q̃ = q/√N       (kernels.h)
 *   o = wkv6(q̃, logw, k̃, ṽ);  y = (o ⊙ g)·W_oᵀ + b_o
 * u, x_c and y are D = hidden wide; q, the decay, the gate and o are A = heads·N wide.
 * RoPE on q and k only when d->use_rope (off by default). The gate output and
 * wkv's q̃ reuse the RWKV7 buffers a->gate and a->kb. */
#include <math.h>
#include <string.h>

#include "student.h"
#include "student_int.h"

static rl_shift_dims shift_dims(const rl_tmix_dims *d)
{
    rl_shift_dims s = {d->batch, d->seq, d->hidden};
    return s;
}

static rl_rwkv6_mix_dims mix_dims(const rl_tmix_dims *d)
{
    rl_rwkv6_mix_dims m = {d->batch * d->seq, d->heads, d->kv_heads, d->head_dim, 1.0f / sqrtf((float)d->head_dim)};
    return m;
}

int rl_tmix6_forward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, rl_tmix_acts *a,
                     const float *u, const float *shift_state, const float *rope_cos, const float *rope_sin,
                     float *y)
{
    const int R = d->batch * d->seq, D = d->hidden, N = d->head_dim, A = d->heads * N, KD = d->kv_heads * N;
    const int rs = d->rank_shift;
    rl_shift_dims sd = shift_dims(d);
    int rc = 0;
    rc |= rl_tokenshift_forward(be, &sd, a->xx, u, shift_state, p->maa_x);
    rc |= lora_forward(be, a->smaa, a->xx, p->maa_w1, R, D, 5 * rs);
    rc |= rl_act_forward(be, RL_ACT_TANH, a->smaa, a->smaa, (size_t)R * 5 * rs);
    const float *const maa[5] = {p->maa[0], p->maa[1], p->maa[2], p->maa[3], p->maa[4]};
    rc |= rl_rwkv6_ddlerp_forward(be, &sd, rs, a->xc, u, shift_state, maa, a->smaa, p->maa_w2);
    rc |= rl__tmix_qk_forward(be, d, p, a, a->xc[0], a->xc[1], rope_cos, rope_sin);
    rc |= linear_forward(be, a->vp, a->xc[2], p->v_w, p->v_b, R, D, KD);
    rc |= lora_forward(be, a->hw, a->xc[3], p->decay_w1, R, D, d->rank_decay);
    rc |= rl_act_forward(be, RL_ACT_TANH, a->hw, a->hw, (size_t)R * d->rank_decay);
    rc |= lora_forward(be, a->dl, a->hw, p->decay_w2, R, d->rank_decay, A);
    rc |= linear_forward(be, a->gate, a->xc[4], p->gate_w, NULL, R, D, A);
    rc |= rl_act_forward(be, RL_ACT_SIGMOID, a->gate, a->gate, (size_t)R * A);
    rl_rwkv6_mix_dims md = mix_dims(d);
    rc |= rl_rwkv6_mix_forward(be, &md, a->logw, a->kt, a->v, a->kb, a->k, a->vp, a->r, a->dl, p->decay);
    rl_wkv_dims wd = {d->batch, d->seq, d->heads, N, 0};
    rl_wkv_in wi = {a->kb, a->logw, a->kt, a->v, NULL, NULL};
    rc |= a->wkv_state ? rl_wkv6_forward(be, &wd, a->o, a->wkv_state, NULL, &wi, a->wkv_state)
                       : rl_wkv6_forward(be, &wd, a->o, NULL, a->ckpt, &wi, NULL);
    rl_readout_dims rd = {R, d->heads, N, 0, 0.0f, 1.0f};
    rc |= rl_readout_forward(be, &rd, a->og, NULL, NULL, a->o, a->gate, NULL, NULL);
    rc |= linear_forward(be, y, a->og, p->o_w, p->o_b, R, A, D);
    return rc;
}

int rl_tmix6_backward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, const rl_tmix_params *g,
                      rl_tmix_acts *a, const float *u, const float *shift_state, const float *rope_cos,
                      const float *rope_sin, const float *dy, float *du)
{
    const int R = d->batch * d->seq, D = d->hidden, N = d->head_dim, A = d->heads * N, KD = d->kv_heads * N;
    const int rs = d->rank_shift;
    const size_t RD = (size_t)R * D * sizeof(float), RA = (size_t)R * A * sizeof(float);
    const size_t RK = (size_t)R * KD * sizeof(float);
    int rc = 0;
    float *zero_a[] = {a->d_og, a->d_o, a->d_gate, a->d_r, a->d_logw, a->d_kt, a->d_v, a->d_kb, a->d_dl, a->d_nl};
    float *zero_d[] = {a->d_xx, a->d_xc[0], a->d_xc[1], a->d_xc[2], a->d_xc[3], a->d_xc[4]};
    for (size_t i = 0; i < sizeof zero_a / sizeof zero_a[0]; i++)
        rc |= rl_zero(be, zero_a[i], RA);
    for (size_t i = 0; i < sizeof zero_d / sizeof zero_d[0]; i++)
        rc |= rl_zero(be, zero_d[i], RD);
    rc |= rl_zero(be, a->d_k, RK);
    rc |= rl_zero(be, a->d_vp, RK);
    rc |= linear_backward(be, a->d_og, g->o_w, g->o_b, dy, a->og, p->o_w, R, A, D);
    rl_readout_dims rd = {R, d->heads, N, 0, 0.0f, 1.0f};
    rc |= rl_readout_backward(be, &rd, a->d_o, a->d_gate, NULL, NULL, a->d_og, a->o, a->gate, NULL, NULL, NULL,
                              NULL);
    rl_wkv_dims wd = {d->batch, d->seq, d->heads, N, 0};
    rl_wkv_in wi = {a->kb, a->logw, a->kt, a->v, NULL, NULL};
    rl_wkv_grad wg = {a->d_kb, a->d_logw, a->d_kt, a->d_v, NULL, NULL};
    rc |= rl_wkv6_backward(be, &wd, &wg, NULL, a->d_o, NULL, &wi, NULL, a->ckpt);
    rl_rwkv6_mix_dims md = mix_dims(d);
    rc |= rl_rwkv6_mix_backward(be, &md, a->d_k, a->d_vp, a->d_r, a->d_dl, g->decay, a->d_logw, a->d_kt, a->d_v,
                                a->d_kb, a->k, a->dl, p->decay);
    /* gate: g = σ(x_g·W_gᵀ); d_nl is free scratch here */
    rc |= rl_act_backward(be, RL_ACT_SIGMOID, a->d_nl, a->d_gate, a->gate, (size_t)R * A);
    rc |= linear_backward(be, a->d_xc[4], g->gate_w, NULL, a->d_nl, a->xc[4], p->gate_w, R, D, A);
    rc |= lora2_backward(be, a, RL_ACT_TANH, a->d_xc[3], g->decay_w1, g->decay_w2, a->d_dl, a->xc[3], a->hw,
                         p->decay_w1, p->decay_w2, R, D, d->rank_decay, A);
    rc |= rl__tmix_qk_backward(be, d, p, g, a, a->d_xc[0], a->d_xc[1], a->xc[0], a->xc[1], rope_cos, rope_sin);
    rc |= linear_backward(be, a->d_xc[2], g->v_w, g->v_b, a->d_vp, a->xc[2], p->v_w, R, D, KD);
    /* ddlerp → ds (d_mid) → tanh → first LoRA → token shift */
    const size_t ns = (size_t)R * 5 * rs;
    rc |= rl_zero(be, a->d_mid, ns * sizeof(float));
    rc |= rl_zero(be, a->d_pre, ns * sizeof(float));
    const float *const maa[5] = {p->maa[0], p->maa[1], p->maa[2], p->maa[3], p->maa[4]};
    const float *const dxc[5] = {a->d_xc[0], a->d_xc[1], a->d_xc[2], a->d_xc[3], a->d_xc[4]};
    rl_shift_dims sd = shift_dims(d);
    rc |= rl_rwkv6_ddlerp_backward(be, &sd, rs, du, NULL, g->maa, a->d_mid, g->maa_w2, dxc, u, shift_state, maa,
                                   a->smaa, p->maa_w2);
    rc |= rl_act_backward(be, RL_ACT_TANH, a->d_pre, a->d_mid, a->smaa, ns);
    rc |= lora_backward(be, a->d_xx, g->maa_w1, a->d_pre, a->xx, p->maa_w1, R, D, 5 * rs);
    rc |= rl_tokenshift_backward(be, &sd, du, NULL, g->maa_x, a->d_xx, u, shift_state, p->maa_x);
    return rc;
}
