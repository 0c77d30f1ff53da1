/* student_rwkv7.c — the RAD-RWKV7 time-mix layer (METHOD.md §1), forward and
 * backward, and the activation buffers of the time-mix layers.
 *
 *   r  = rope(qn(u·W_rᵀ + b_r))      k = rope(kn(u·W_kᵀ + b_k))    v′ = u·W_vᵀ + b_v
 *        (qn, kn: Qwen3's per-head RMSNorms, identity for other teachers)
 *   dlora = tanh(u·w1)·w2            alora = (u·a1)·a2              vlora = (u·v1)·v2
 *   g  = σ(u·g1)·g2
 *   (logw, −κ, κ⊙α, k̃, v) = mix(k, v′, dlora, alora, vlora, v_first)   (kernels.h)
 *   o  = wkv7(r, logw, k̃, v, −κ, κ⊙α)
 *   y  = (readout(o) ⊙ g)·W_oᵀ + b_o,  readout = GroupNorm_H (variant a) or o/√N (variant b)
 * u and y are D = hidden wide; r, the LoRA outputs and o are A = heads·N wide. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "student.h"
#include "student_int.h"

int rl_lora_rank(int hidden, double e, double m)
{
    double r = round(pow((double)hidden, e) * m / 32.0);
    return (r < 1 ? 1 : (int)r) * 32;
}

/* ---- activations ---- */

static int max4(int a, int b, int c, int d)
{
    int m = a > b ? a : b;
    m = m > c ? m : c;
    return m > d ? m : d;
}

typedef struct {
    float **p;
    size_t n;
    int bwd; /* backward scratch */
} acts_field;

#define MAX_ACTS_FIELDS 64

/* Every buffer of a's with its size for d (n = 0: not used by this architecture/teacher). */
static int acts_table(rl_tmix_acts *a, const rl_tmix_dims *d, acts_field *out)
{
    /* D here is the attention width A; U = hidden is the width of RWKV6's shifted inputs */
    const size_t R = (size_t)d->batch * d->seq, D = (size_t)d->heads * d->head_dim, U = (size_t)d->hidden;
    const size_t KD = (size_t)d->kv_heads * d->head_dim, qn = d->qk_norm ? 1 : 0;
    const size_t rmax = (size_t)max4(d->rank_decay, d->rank_iclr, d->rank_value, d->rank_gate > d->rank_shift * 5
                                     ? d->rank_gate : d->rank_shift * 5);
    rl_wkv_dims wd = {d->batch, d->seq, d->heads, d->head_dim, 0};
    const int rwkv6 = d->arch == RL_STUDENT_RWKV6;
    /* x7: RAD-RWKV7 only (ICLR/value LoRAs, k̃ parts, their gradients); gn: the GroupNorm read-out (variant a) */
    const size_t x7 = rwkv6 ? 0 : 1, gn = !rwkv6 && d->variant == 'a' ? 1 : 0;
    const acts_field t[] = {
        {&a->r, R * D, 0},  {&a->k, R * KD, 0}, {&a->vp, R * KD, 0},
        {&a->hw, R * (size_t)(d->rank_decay ? d->rank_decay : 1), 0},
        {&a->dl, R * D, 0}, {&a->ha, x7 * R * (size_t)(d->rank_iclr ? d->rank_iclr : 1), 0},
        {&a->al, x7 * R * D, 0}, {&a->hg, x7 * R * (size_t)(d->rank_gate ? d->rank_gate : 1), 0},
        {&a->gate, R * D, 0}, {&a->hv, x7 * R * (size_t)(d->rank_value ? d->rank_value : 1), 0},
        {&a->nl, x7 * R * D, 0}, {&a->logw, R * D, 0}, {&a->ka, x7 * R * D, 0}, {&a->kb, R * D, 0},
        {&a->kt, R * D, 0}, {&a->v, R * D, 0}, {&a->o, R * D, 0}, {&a->og, R * D, 0},
        {&a->mean, gn * R * (size_t)d->heads, 0}, {&a->rstd, gn * R * (size_t)d->heads, 0},
        {&a->ckpt, R ? rl_wkv_checkpoint_floats(&wd, rwkv6 ? 6 : 7) : 0, 0},
        {&a->d_r, R * D, 1}, {&a->d_k, R * KD, 1}, {&a->d_vp, R * KD, 1}, {&a->d_mid, R * rmax, 1},
        {&a->d_pre, R * rmax, 1}, {&a->d_dl, R * D, 1}, {&a->d_al, x7 * R * D, 1}, {&a->d_gate, R * D, 1},
        {&a->d_nl, R * D, 1}, {&a->d_logw, R * D, 1}, {&a->d_ka, x7 * R * D, 1}, {&a->d_kb, R * D, 1},
        {&a->d_kt, R * D, 1}, {&a->d_v, R * D, 1}, {&a->d_o, R * D, 1}, {&a->d_og, R * D, 1},
        /* RAD-RWKV6 only (n = 0 skips) */
        {&a->xx, rwkv6 ? R * U : 0, 0}, {&a->smaa, rwkv6 ? R * 5 * (size_t)d->rank_shift : 0, 0},
        {&a->xc[0], rwkv6 ? R * U : 0, 0}, {&a->xc[1], rwkv6 ? R * U : 0, 0}, {&a->xc[2], rwkv6 ? R * U : 0, 0},
        {&a->xc[3], rwkv6 ? R * U : 0, 0}, {&a->xc[4], rwkv6 ? R * U : 0, 0}, {&a->d_xx, rwkv6 ? R * U : 0, 1},
        {&a->d_xc[0], rwkv6 ? R * U : 0, 1}, {&a->d_xc[1], rwkv6 ? R * U : 0, 1},
        {&a->d_xc[2], rwkv6 ? R * U : 0, 1}, {&a->d_xc[3], rwkv6 ? R * U : 0, 1},
        {&a->d_xc[4], rwkv6 ? R * U : 0, 1},
        /* Qwen3 q/k norms */
        {&a->r_raw, qn * R * D, 0}, {&a->k_raw, qn * R * KD, 0}, {&a->q_rstd, qn * R * (size_t)d->heads, 0},
        {&a->k_rstd, qn * R * (size_t)d->kv_heads, 0}, {&a->d_r_raw, qn * R * D, 1}, {&a->d_k_raw, qn * R * KD, 1},
    };
    const int n = (int)(sizeof t / sizeof t[0]);
    _Static_assert(sizeof t / sizeof t[0] <= MAX_ACTS_FIELDS, "raise MAX_ACTS_FIELDS");
    memcpy(out, t, sizeof t);
    return n;
}

int rl_tmix_acts_alloc(rl_backend *be, const rl_tmix_dims *d, int backward, rl_tmix_acts *a, char *err,
                       size_t errlen)
{
    return rl_tmix_acts_alloc_shared(be, d, backward, NULL, 0, a, err, errlen);
}

int rl_tmix_acts_alloc_shared(rl_backend *be, const rl_tmix_dims *d, int backward, const rl_tmix_acts *from,
                              int share_saved, rl_tmix_acts *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    if (from && backward && !from->has_backward) {
        snprintf(err, errlen, "time-mix activations: the layer they would share scratch with has none");
        return RL_EINVAL;
    }
    acts_field t[MAX_ACTS_FIELDS], f[MAX_ACTS_FIELDS];
    const int n = acts_table(a, d, t);
    if (from)
        acts_table((rl_tmix_acts *)from, d, f);
    a->shared_from = from;
    for (int i = 0; i < n; i++) {
        if ((t[i].bwd && !backward) || t[i].n == 0 /* not used by this architecture */)
            continue;
        if (from && (t[i].bwd || share_saved)) {
            *t[i].p = *f[i].p;
            continue;
        }
        const char *prev = t[i].p == &a->ckpt ? rl_backend_mem_tag(be, "wkv checkpoints") : NULL;
        *t[i].p = rl_malloc(be, sizeof(float) * t[i].n);
        if (t[i].p == &a->ckpt)
            rl_backend_mem_tag(be, prev);
        if (!*t[i].p) {
            rl_backend_status(be, err, errlen);
            rl_backend_clear_error(be);
            rl_tmix_acts_free(be, a);
            return RL_ENOMEM;
        }
    }
    a->has_backward = backward;
    return 0;
}

void rl_tmix_acts_free(rl_backend *be, rl_tmix_acts *a)
{
    const rl_tmix_dims none = {0};
    acts_field t[MAX_ACTS_FIELDS], f[MAX_ACTS_FIELDS];
    const int n = acts_table(a, &none, t);
    if (a->shared_from)
        acts_table((rl_tmix_acts *)a->shared_from, &none, f);
    for (int i = 0; i < n; i++) {
        if (!a->shared_from || *t[i].p != *f[i].p)
            rl_free(be, *t[i].p);
        *t[i].p = NULL;
    }
    a->shared_from = NULL;
    a->has_backward = 0;
}

/* ---- RAD-RWKV7 ---- */

static rl_rwkv7_mix_dims mix_dims(const rl_tmix_dims *d)
{
    rl_rwkv7_mix_dims m = {d->batch * d->seq, d->heads, d->kv_heads, d->head_dim, d->variant, d->layer == 0};
    return m;
}

static rl_readout_dims readout_dims(const rl_tmix_dims *d)
{
    rl_readout_dims r = {d->batch * d->seq, d->heads, d->head_dim, d->variant == 'a',
                         (float)d->head_dim * 1e-5f, 1.0f / sqrtf((float)d->head_dim)};
    return r;
}

/* r = rope(qn(x_r·W_qᵀ + b_q)) [R,A], k = rope(kn(x_k·W_kᵀ + b_k)) [R,KD]; qn, kn are the
 * teacher's per-head RMSNorms (Qwen3) applied before RoPE, as the teacher applies them. */
int rl__tmix_qk_forward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, rl_tmix_acts *a,
                        const float *xr, const float *xk, const float *rope_cos, const float *rope_sin)
{
    const int R = d->batch * d->seq, D = d->hidden, N = d->head_dim, A = d->heads * N, KD = d->kv_heads * N;
    int rc = 0;
    rc |= linear_forward(be, d->qk_norm ? a->r_raw : a->r, xr, p->q_w, p->q_b, R, D, A);
    rc |= linear_forward(be, d->qk_norm ? a->k_raw : a->k, xk, p->k_w, p->k_b, R, D, KD);
    if (d->qk_norm) {
        rc |= rl_rmsnorm_forward(be, a->r, a->q_rstd, a->r_raw, p->q_norm_w, R * d->heads, N, d->norm_eps);
        rc |= rl_rmsnorm_forward(be, a->k, a->k_rstd, a->k_raw, p->k_norm_w, R * d->kv_heads, N, d->norm_eps);
    }
    if (d->use_rope) {
        rc |= rl_rope_forward(be, a->r, rope_cos, rope_sin, d->batch, d->seq, d->heads, N);
        rc |= rl_rope_forward(be, a->k, rope_cos, rope_sin, d->batch, d->seq, d->kv_heads, N);
    }
    return rc;
}

/* From a->d_r, a->d_k (consumed): RoPE transposed, the norms' backward (into
 * g->q_norm_w, g->k_norm_w, which must exist when d->qk_norm), then the
 * projections: dxr, dxk and the q/k weight and bias gradients accumulate. */
int rl__tmix_qk_backward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, const rl_tmix_params *g,
                         rl_tmix_acts *a, float *dxr, float *dxk, const float *xr, const float *xk,
                         const float *rope_cos, const float *rope_sin)
{
    const int R = d->batch * d->seq, D = d->hidden, N = d->head_dim, A = d->heads * N, KD = d->kv_heads * N;
    int rc = 0;
    if (d->use_rope) {
        rc |= rl_rope_backward(be, a->d_r, rope_cos, rope_sin, d->batch, d->seq, d->heads, N);
        rc |= rl_rope_backward(be, a->d_k, rope_cos, rope_sin, d->batch, d->seq, d->kv_heads, N);
    }
    const float *dq = a->d_r, *dk = a->d_k;
    if (d->qk_norm) {
        rc |= rl_zero(be, a->d_r_raw, sizeof(float) * (size_t)R * A);
        rc |= rl_zero(be, a->d_k_raw, sizeof(float) * (size_t)R * KD);
        rc |= rl_rmsnorm_backward(be, a->d_r_raw, g->q_norm_w, a->d_r, a->r_raw, p->q_norm_w, a->q_rstd,
                                  R * d->heads, N);
        rc |= rl_rmsnorm_backward(be, a->d_k_raw, g->k_norm_w, a->d_k, a->k_raw, p->k_norm_w, a->k_rstd,
                                  R * d->kv_heads, N);
        dq = a->d_r_raw, dk = a->d_k_raw;
    }
    rc |= linear_backward(be, dxr, g->q_w, g->q_b, dq, xr, p->q_w, R, D, A);
    rc |= linear_backward(be, dxk, g->k_w, g->k_b, dk, xk, p->k_w, R, D, KD);
    return rc;
}

int rl_tmix7_forward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, rl_tmix_acts *a,
                     const float *u, float *v_first, const float *rope_cos, const float *rope_sin, float *y)
{
    const int R = d->batch * d->seq, D = d->hidden, N = d->head_dim, A = d->heads * N, KD = d->kv_heads * N;
    int rc = 0;
    rc |= rl__tmix_qk_forward(be, d, p, a, u, u, rope_cos, rope_sin);
    rc |= linear_forward(be, a->vp, u, p->v_w, p->v_b, R, D, KD);
    rc |= lora_forward(be, a->hw, u, p->w1, R, D, d->rank_decay);
    rc |= rl_act_forward(be, RL_ACT_TANH, a->hw, a->hw, (size_t)R * d->rank_decay);
    rc |= lora_forward(be, a->dl, a->hw, p->w2, R, d->rank_decay, A);
    rc |= lora_forward(be, a->ha, u, p->a1, R, D, d->rank_iclr);
    rc |= lora_forward(be, a->al, a->ha, p->a2, R, d->rank_iclr, A);
    rc |= lora_forward(be, a->hg, u, p->g1, R, D, d->rank_gate);
    rc |= rl_act_forward(be, RL_ACT_SIGMOID, a->hg, a->hg, (size_t)R * d->rank_gate);
    rc |= lora_forward(be, a->gate, a->hg, p->g2, R, d->rank_gate, A);
    if (d->layer > 0) {
        rc |= lora_forward(be, a->hv, u, p->v1, R, D, d->rank_value);
        rc |= lora_forward(be, a->nl, a->hv, p->v2, R, d->rank_value, A);
    }
    rl_rwkv7_mix_dims md = mix_dims(d);
    rl_rwkv7_mix_in in = {a->k, a->vp, a->dl, a->al, a->nl, p->w0, p->a0, p->v0, p->k_k, p->k_a};
    rl_rwkv7_mix_out out = {a->logw, a->ka, a->kb, a->kt, a->v};
    rc |= rl_rwkv7_mix_forward(be, &md, &out, v_first, &in);
    rl_wkv_dims wd = {d->batch, d->seq, d->heads, N, 0};
    rl_wkv_in wi = {a->r, a->logw, a->kt, a->v, a->ka, a->kb};
    rc |= a->wkv_state ? rl_wkv7_forward(be, &wd, a->o, a->wkv_state, NULL, &wi, a->wkv_state)
                       : rl_wkv7_forward(be, &wd, a->o, NULL, a->ckpt, &wi, NULL);
    rl_readout_dims rd = readout_dims(d);
    rc |= rl_readout_forward(be, &rd, a->og, a->mean, a->rstd, a->o, a->gate, p->lnx_w, p->lnx_b);
    rc |= linear_forward(be, y, a->og, p->o_w, p->o_b, R, A, D);
    return rc;
}

int rl_tmix7_backward(rl_backend *be, const rl_tmix_dims *d, const rl_tmix_params *p, const rl_tmix_params *g,
                      rl_tmix_acts *a, const float *u, const float *v_first, float *dv_first,
                      const float *rope_cos, const float *rope_sin, const float *dy, float *du)
{
    const int R = d->batch * d->seq, D = d->hidden, N = d->head_dim, A = d->heads * N, KD = d->kv_heads * N;
    const size_t RA = (size_t)R * A * sizeof(float), RK = (size_t)R * KD * sizeof(float);
    int rc = 0;
    float *zero[] = {a->d_og, a->d_o, a->d_gate, a->d_r, a->d_logw, a->d_kt, a->d_v, a->d_ka, a->d_kb,
                     a->d_dl, a->d_al, a->d_nl};
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
        rc |= rl_zero(be, zero[i], RA);
    rc |= rl_zero(be, a->d_k, RK);
    rc |= rl_zero(be, a->d_vp, RK);
    rc |= linear_backward(be, a->d_og, g->o_w, g->o_b, dy, a->og, p->o_w, R, A, D);
    rl_readout_dims rd = readout_dims(d);
    rc |= rl_readout_backward(be, &rd, a->d_o, a->d_gate, g->lnx_w, g->lnx_b, a->d_og, a->o, a->gate, p->lnx_w,
                              p->lnx_b, a->mean, a->rstd);
    rl_wkv_dims wd = {d->batch, d->seq, d->heads, N, 0};
    rl_wkv_in wi = {a->r, a->logw, a->kt, a->v, a->ka, a->kb};
    rl_wkv_grad wg = {a->d_r, a->d_logw, a->d_kt, a->d_v, a->d_ka, a->d_kb};
    rc |= rl_wkv7_backward(be, &wd, &wg, NULL, a->d_o, NULL, &wi, NULL, a->ckpt);
    rl_rwkv7_mix_dims md = mix_dims(d);
    rl_rwkv7_mix_in in = {a->k, a->vp, a->dl, a->al, a->nl, p->w0, p->a0, p->v0, p->k_k, p->k_a};
    rl_rwkv7_mix_grad mg = {a->d_k, a->d_vp, a->d_dl, a->d_al, a->d_nl, g->w0, g->a0, g->v0, g->k_k, g->k_a};
    rl_rwkv7_mix_out mo = {a->d_logw, a->d_ka, a->d_kb, a->d_kt, a->d_v};
    rc |= rl_rwkv7_mix_backward(be, &md, &mg, dv_first, &mo, &in, v_first);
    /* LoRAs */
    rc |= lora2_backward(be, a, RL_ACT_TANH, du, g->w1, g->w2, a->d_dl, u, a->hw, p->w1, p->w2, R, D,
                         d->rank_decay, A);
    rc |= lora2_backward(be, a, -1, du, g->a1, g->a2, a->d_al, u, a->ha, p->a1, p->a2, R, D, d->rank_iclr, A);
    rc |= lora2_backward(be, a, RL_ACT_SIGMOID, du, g->g1, g->g2, a->d_gate, u, a->hg, p->g1, p->g2, R, D,
                         d->rank_gate, A);
    if (d->layer > 0)
        rc |= lora2_backward(be, a, -1, du, g->v1, g->v2, a->d_nl, u, a->hv, p->v1, p->v2, R, D, d->rank_value, A);
    /* projections */
    rc |= rl__tmix_qk_backward(be, d, p, g, a, du, du, u, u, rope_cos, rope_sin);
    rc |= linear_backward(be, du, g->v_w, g->v_b, a->d_vp, u, p->v_w, R, D, KD);
    return rc;
}
