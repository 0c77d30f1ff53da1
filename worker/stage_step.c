/* stage_step.c — one micro-batch of each training stage: forward, loss, backward (gradients accumulate).
 *
 * align (METHOD.md step 1): the teacher runs its own forward, so the residual stream is the teacher's;
 *   for each time-mix layer ℓ, u_ℓ = the teacher's attention input, y_T = its attention output,
 *   y_S = StudentMix_ℓ(u_ℓ) (v_first from the student's own layer 0 on u_0), and
 *     loss = mean over (ℓ, rows) of ‖y_T − y_S‖₂/√D        (or mean((y_T − y_S)²) with loss_mse)
 *   The gradient reaches only the time-mix tensors; teacher tensors never change.
 * distill (step 2): loss = kl_weight·KL(p_T ‖ p_S) + ce_weight·CE, both means over rows, through the student.
 * extend (step 3) and pretrain: mean next-token CE.
 * The student backward mirrors rl_model_backward with the time-mix in place of attention; dv_first collects
 * the later layers' share of v_first's gradient and layer 0's backward consumes it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer_int.h"

static int n_mix(const rl_student *s) { return s->base->cfg.layers - s->attention_layers; }
/* v_first is attention-width (heads·head_dim), which differs from hidden for an explicit head_dim */
static size_t v_first_bytes(const rl__trainer *t)
{
    const rl_model_config *c = &t->m->cfg;
    return sizeof(float) * (size_t)t->m->batch * t->m->seq * c->heads * c->head_dim;
}

/* Gradient pointer of parameter pointer p: the tensor of the same name in the matching gradient arena (NULL
 * when that arena holds no gradient for it: align's frozen tensors). */
static float *grad_of(const rl__trainer *t, float *p)
{
    if (!p)
        return NULL;
    const rl_model *m = t->m;
    const uint16_t *p16 = (const uint16_t *)(const void *)p;
    for (int i = 0; m->frozen16 && i < m->frozen.n; i++) { /* bf16 weights (precision bf16-weights) */
        const rl_arena_entry *e = &m->frozen.entries[i];
        if (p16 >= m->frozen16 + e->offset && p16 < m->frozen16 + e->offset + e->count) {
            const int g = rl_arena_find(&m->grads16, e->name);
            return g < 0 || !m->g16 ? NULL
                                    : rl_bf16_as_f32ptr(m->g16, m->grads16.entries[g].offset +
                                                                    (size_t)(p16 - m->frozen16 - e->offset));
        }
    }
    const rl_arena *pa[2] = {&m->params, t->s->tparams}, *ga[2] = {&m->grads, &t->tgrads};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < pa[k]->n; i++) {
            const rl_arena_entry *e = &pa[k]->entries[i];
            if (p >= pa[k]->base + e->offset && p < pa[k]->base + e->offset + e->count) {
                const int g = rl_arena_find(ga[k], e->name);
                return g < 0 ? NULL : rl_arena_ptr(ga[k], g) + (p - pa[k]->base - e->offset);
            }
        }
    return NULL;
}

/* align: only the trainable tensors (the time-mix layers' q/k/v/o and norms of the base model) get a
 * gradient; the rest of the model never runs a backward in this stage. */
static int grad_wanted(void *ctx, const char *name)
{
    return rl__trainable(ctx, name);
}

static int alloc_f(rl__trainer *t, float **p, size_t n, char *err, size_t errlen)
{
    rl_free(t->be, *p);
    *p = rl_malloc(t->be, sizeof(float) * (n ? n : 1));
    if (!*p) {
        rl_backend_status(t->be, err, errlen);
        rl_backend_clear_error(t->be);
        return RL_ENOMEM;
    }
    return 0;
}

static int mixer_forward(void *ctx, int l, const float *u, float *y);
static int mixer_backward(void *ctx, int l, const float *u, const float *dy, float *du);

/* What the forward keeps (rl_acts_keep): the model that trains keeps every layer's activations, or with
 * recompute its layer inputs only; align's student needs none of its own blocks (the teacher's stream feeds
 * the time-mix layers), the teacher keeps what align reads, a distillation teacher nothing. */
int rl__stage_prepare(rl__trainer *t, char *err, size_t errlen)
{
    const rl_train_opts *o = t->o;
    const int B = t->micro, T = o->seq_len, chunk = o->chunk_rows;
    const int align = o->stage == RL_TRAIN_ALIGN;
    const rl_acts_keep keep = align ? RL_ACTS_NONE : o->recompute ? RL_ACTS_BOUNDARIES : RL_ACTS_ALL;
    rl_backend_mem_tag(t->be, "activations");
    /* align runs its own backward into the gradients: no block backward scratch, no frozen gradients */
    const int backward = align ? RL_PREP_GRADS_ONLY : 1;
    /* a stage that trains a part only (align; extend with train=decay_shift, step 3a, the low-memory one) keeps
     * gradients of that part only: the backward skips the frozen weights' gradient GEMMs */
    if (align || (o->stage == RL_TRAIN_EXTEND && o->train_decay_shift))
        t->m->grad_wanted = grad_wanted, t->m->grad_wanted_ctx = t;
    t->m->mlp_rows = o->mlp_rows;
    if (t->teacher)
        t->teacher->mlp_rows = o->mlp_rows;
    int rc = t->s ? rl_student_prepare_keep(t->s, B, T, chunk, backward, keep, !o->recompute, err, errlen)
                  : rl_model_prepare_keep(t->m, B, T, 1, chunk, keep, err, errlen);
    rl_backend_mem_tag(t->be, "teacher activations");
    if (!rc && t->teacher)
        rc = rl_model_prepare_keep(t->teacher, B, T, 0, chunk, align ? RL_ACTS_CAPTURE : RL_ACTS_NONE, err, errlen);
    rl_backend_mem_tag(t->be, "activations"); /* the stage's own buffers below */
    if (rc || !t->s)
        return rc;
    rl_student *s = t->s;
    const rl_model_config *c = &t->m->cfg;
    const size_t RD = (size_t)B * T * c->hidden;
    t->mixer = (rl_mixer){.layers = n_mix(s), .ctx = t, .forward = mixer_forward, .backward = mixer_backward};
    if (!rc)
        rc = alloc_f(t, &t->dv_first, v_first_bytes(t) / sizeof(float), err, errlen);
    if (!rc && !t->tgrads.base) {
        rl_arena_init(&t->tgrads, "student grads");
        for (int i = 0; i < s->tparams->n && !rc; i++) {
            const rl_arena_entry *e = &s->tparams->entries[i];
            if (rl__trainable(t, e->name)) /* (3a: the decay and token-shift tensors only) */
                rc = rl_arena_add(&t->tgrads, e->name, e->ndim, e->shape) < 0 ? RL_ENOMEM : 0;
        }
        if (!rc) {
            const char *prev = rl_backend_mem_tag(t->be, "gradients");
            rc = rl_arena_alloc(&t->tgrads, t->be, err, errlen);
            rl_backend_mem_tag(t->be, prev);
        }
        free(t->tg);
        t->tg = rc ? NULL : calloc((size_t)c->layers, sizeof *t->tg);
        if (!rc && !t->tg)
            rc = RL_ENOMEM;
        /* rl_tmix_params is a struct of float pointers only */
        for (int l = 0; l < n_mix(s) && !rc; l++) {
            float **src = (float **)&s->tp[l], **dst = (float **)&t->tg[l];
            for (size_t k = 0; k < sizeof(rl_tmix_params) / sizeof(float *); k++)
                dst[k] = grad_of(t, src[k]);
        }
    }
    if (!rc && o->stage == RL_TRAIN_ALIGN) {
        rc = alloc_f(t, &t->y_s, RD, err, errlen);
        if (!rc)
            rc = alloc_f(t, &t->dy, RD * (size_t)n_mix(s), err, errlen);
        if (!rc && s->arch != RL_STUDENT_RWKV7) /* the discarded input gradient: RWKV6's token shift needs it */
            rc = alloc_f(t, &t->du, RD, err, errlen);
        if (!rc)
            rc = alloc_f(t, &t->row_losses, (size_t)B * T, err, errlen);
    }
    if (!rc && o->stage == RL_TRAIN_DISTILL && !(o->kl_weight == 1.0 && o->ce_weight == 0.0)) {
        rc = alloc_f(t, &t->blend_h, RD, err, errlen);
    }
    if (rc == RL_ENOMEM && !err[0])
        snprintf(err, errlen, "out of memory preparing %d×%d training activations", B, T);
    return rc;
}

void rl__stage_release(rl__trainer *t)
{
    float **bufs[] = {&t->dv_first, &t->y_s, &t->dy, &t->du, &t->row_losses, &t->blend_h};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        rl_free(t->be, *bufs[i]);
        *bufs[i] = NULL;
    }
    if (t->tgrads.base || t->tgrads.n)
        rl_arena_free(&t->tgrads, t->be);
    free(t->tg);
    t->tg = NULL;
}

static int mixer_forward(void *ctx, int l, const float *u, float *y)
{
    rl__trainer *t = ctx;
    return rl_student_mix_forward(t->s, l, u, y);
}

static int mixer_backward(void *ctx, int l, const float *u, const float *dy, float *du)
{
    rl__trainer *t = ctx;
    rl_student *s = t->s;
    const rl_model *m = s->base;
    if (s->arch == RL_STUDENT_RWKV7)
        return rl_tmix7_backward(t->be, &s->td[l], &s->tp[l], &t->tg[l], &s->ta[l], u, s->v_first, t->dv_first,
                                 m->rope_cos, m->rope_sin, dy, du);
    return rl_tmix6_backward(t->be, &s->td[l], &s->tp[l], &t->tg[l], &s->ta[l], u, NULL, m->rope_cos, m->rope_sin,
                             dy, du);
}

/* The time-mix layers see the teacher's stream; each layer's loss gradient dy_ℓ is kept until the backward,
 * which runs last layer first (layer 0's v_first gradient collects the later layers' shares). With recompute
 * the layers share one activation set and each layer's forward runs again just before its backward. */
static int align_micro_step(rl__trainer *t, const int32_t *inputs, double *loss, char *err, size_t errlen)
{
    rl_backend *be = t->be;
    const int R = t->micro * t->o->seq_len, D = t->m->cfg.hidden, L = n_mix(t->s);
    const size_t RD = (size_t)R * D;
    int rc = rl_model_forward(t->teacher, inputs, err, errlen);
    if (rc)
        return rc;
    const float scale = 1.0f / ((float)R * (float)L);
    double total = 0;
    for (int l = 0; l < L && !rc; l++) {
        const rl_layer_acts *ta = &t->teacher->layer_acts[l];
        float *dy = t->dy + (size_t)l * RD;
        rc |= mixer_forward(t, l, ta->ln1, t->y_s);
        rc |= rl_zero(be, dy, RD * sizeof(float));
        if (t->o->loss_mse) {
            rc |= rl_mse_forward(be, t->row_losses, t->y_s, ta->attn_out, R, D);
            rc |= rl_mse_backward(be, dy, t->y_s, ta->attn_out, scale, R, D);
        } else {
            rc |= rl_l2_distance_forward(be, t->row_losses, t->y_s, ta->attn_out, R, D);
            rc |= rl_l2_distance_backward(be, dy, t->y_s, ta->attn_out, t->row_losses, scale, R, D);
        }
        double sum = 0;
        rc |= rl_sum(be, &sum, t->row_losses, (size_t)R);
        total += sum;
    }
    rc |= rl_zero(be, t->dv_first, v_first_bytes(t));
    for (int l = L - 1; l >= 0 && !rc; l--) {
        const float *u = t->teacher->layer_acts[l].ln1;
        if (t->o->recompute && l != L - 1) /* the last layer's activations are still there */
            rc |= mixer_forward(t, l, u, t->y_s);
        /* the input is the frozen teacher's stream: its gradient is not wanted (RAD-RWKV7 skips those GEMMs;
         * RWKV6's token-shift kernels need somewhere to put it) */
        float *du = NULL;
        if (t->s->arch != RL_STUDENT_RWKV7) {
            du = t->du;
            rc |= rl_zero(be, du, RD * sizeof(float));
        }
        rc |= mixer_backward(t, l, u, t->dy + (size_t)l * RD, du);
        if (t->m->grads_ready) /* layer l's time-mix gradients are final (the same events as the backward's) */
            rc |= t->m->grads_ready(t->m->grads_ready_ctx, t->m->cfg.layers - l);
    }
    *loss = total / ((double)R * L);
    if (rc && !rl_backend_status(be, err, errlen))
        snprintf(err, errlen, "align step failed (error %d)", rc);
    return rc;
}

/* Backpropagates m->gs.dln (∂L/∂lnf, set by a head loss) through the student into the gradients. */
static int student_backward(rl__trainer *t, char *err, size_t errlen)
{
    int rc = rl_zero(t->be, t->dv_first, v_first_bytes(t));
    return rc ? rc : rl_model_backward(t->m, err, errlen);
}

static rl_lm_head head_of(rl_model *m, float *dhidden, float *dweight)
{
    const int R = m->batch * m->seq;
    rl_lm_head h = {.rows = R, .dim = m->cfg.hidden, .vocab = m->cfg.vocab, .chunk_rows = m->chunk_rows,
                    .hidden = m->lnf, .weight = m->p.lm_head, .dhidden = dhidden, .dweight = dweight,
                    .logits_buf = m->logits_chunk, .row_losses = m->row_losses};
    return h;
}

/* kl_weight·KL + ce_weight·CE: each term's weighted head gradient accumulates straight into the head's (its
 * dtype is the GEMM's business: bf16 under bf16-weights); its hidden-state gradient (SET by the head) lands in
 * scratch and is added. */
static int distill_blend(rl__trainer *t, double *loss)
{
    rl_model *m = t->m, *tm = t->teacher;
    rl_backend *be = t->be;
    const double kw = t->o->kl_weight, cw = t->o->ce_weight;
    const size_t RD = (size_t)m->batch * m->seq * m->cfg.hidden;
    double kl = 0, ce = 0;
    int rc = rl_zero(be, m->gs.dln, RD * sizeof(float));
    if ((float)kw != 0.0f) { /* (a weight below float range contributes nothing: grad_weight 0 would mean 1) */
        rl_lm_head h = head_of(m, t->blend_h, m->g.lm_head);
        h.grad_weight = (float)kw;
        rc |= rl_lm_head_kl(be, &h, tm->lnf, tm->p.lm_head, tm->logits_chunk, &kl);
        rc |= rl_accumulate(be, m->gs.dln, t->blend_h, RD);
    }
    if ((float)cw != 0.0f) {
        rl_lm_head h = head_of(m, t->blend_h, m->g.lm_head);
        h.grad_weight = (float)cw;
        rc |= rl_lm_head_cross_entropy(be, &h, m->targets, &ce);
        rc |= rl_accumulate(be, m->gs.dln, t->blend_h, RD);
    }
    *loss = kw * kl + cw * ce;
    return rc;
}

int rl__stage_micro_step(rl__trainer *t, const int32_t *tokens, double *loss, char *err, size_t errlen)
{
    const int B = t->micro, T = t->o->seq_len;
    int32_t *inputs = malloc(sizeof(int32_t) * (size_t)B * T * 2);
    if (!inputs) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    int32_t *targets = inputs + (size_t)B * T;
    for (int b = 0; b < B; b++) {
        memcpy(inputs + (size_t)b * T, tokens + (size_t)b * (T + 1), sizeof(int32_t) * T);
        memcpy(targets + (size_t)b * T, tokens + (size_t)b * (T + 1) + 1, sizeof(int32_t) * T);
    }
    int rc = 0;
    rl_model *m = t->m;
    switch (t->o->stage) {
    case RL_TRAIN_ALIGN:
        rc = align_micro_step(t, inputs, loss, err, errlen);
        break;
    case RL_TRAIN_PRETRAIN:
        rc = rl_model_forward(m, inputs, err, errlen);
        if (!rc)
            rc = rl_model_loss(m, targets, 1, loss, err, errlen);
        break;
    case RL_TRAIN_EXTEND:
    case RL_TRAIN_DISTILL:
        m->mixer = &t->mixer; /* (an evaluation may have left the forward-only one) */
        rc = rl_model_forward(m, inputs, err, errlen);
        if (!rc && t->o->stage == RL_TRAIN_DISTILL)
            rc = rl_model_forward(t->teacher, inputs, err, errlen);
        if (rc)
            break;
        rc = rl_upload(t->be, m->targets, targets, sizeof(int32_t) * (size_t)B * T);
        if (t->o->stage == RL_TRAIN_EXTEND) {
            rl_lm_head h = head_of(m, m->gs.dln, m->g.lm_head);
            rc |= rl_lm_head_cross_entropy(t->be, &h, m->targets, loss);
        } else if (t->blend_h) {
            rc |= distill_blend(t, loss);
        } else {
            rl_lm_head h = head_of(m, m->gs.dln, m->g.lm_head);
            rc |= rl_lm_head_kl(t->be, &h, t->teacher->lnf, t->teacher->p.lm_head, t->teacher->logits_chunk, loss);
        }
        if (!rc)
            rc = student_backward(t, err, errlen);
        if (rc && !err[0] && !rl_backend_status(t->be, err, errlen))
            snprintf(err, errlen, "%s step failed (error %d)", rl_train_stage_name(t->o->stage), rc);
        break;
    }
    free(inputs);
    return rc ? (rc < 0 ? rc : RL_EINVAL) : 0;
}
