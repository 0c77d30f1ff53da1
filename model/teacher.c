/* teacher.c — the softmax-attention decoder: activations, forward, backward.
 *
 *   x_0 = embed(tokens)
 *   per layer l:  ln1 = RMSNorm(x_l)                    (captured: attention input)
 *                 attn_out = Attention(ln1)             (captured: attention output)
 *                 res_mid = x_l + attn_out
 *                 x_{l+1} = res_mid + MLP(RMSNorm(res_mid))
 *   lnf = RMSNorm(x_L);  logits = lnf · W_lmᵀ  (chunked, see loss.c) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "model_int.h"

static int act(rl_arena *a, int *idx, const char *fmt, int l, int64_t rows, int64_t cols)
{
    char name[96];
    snprintf(name, sizeof name, fmt, l);
    int64_t shape[2] = {rows, cols};
    *idx = rl_arena_add(a, name, 2, shape);
    return *idx < 0;
}

enum { A_XIN, A_LN1, A_LN1R, A_Q, A_K, A_V, A_QRAW, A_KRAW, A_QR, A_KR, A_ATT, A_LSE, A_OUT, A_MID, A_LN2, A_LN2R,
       A_GATE, A_UP, A_ACT, A_N };

int rl_model_prepare(rl_model *m, int batch, int seq, int backward, int chunk_rows, char *err, size_t errlen)
{
    return rl_model_prepare_keep(m, batch, seq, backward, chunk_rows, RL_ACTS_ALL, err, errlen);
}

int rl_model_prepare_keep(rl_model *m, int batch, int seq, int backward, int chunk_rows, rl_acts_keep keep,
                          char *err, size_t errlen)
{
    const rl_model_config *c = &m->cfg;
    if (batch <= 0 || seq <= 0 || chunk_rows <= 0) {
        snprintf(err, errlen, "prepare: batch=%d seq=%d chunk_rows=%d must be positive", batch, seq, chunk_rows);
        return RL_EINVAL;
    }
    if (m->mlp_rows < 0) {
        snprintf(err, errlen, "prepare: mlp_rows=%d must be positive (or 0 for the default %d)", m->mlp_rows,
                 RL_MLP_ROWS);
        return RL_EINVAL;
    }
    if ((unsigned)keep > RL_ACTS_NONE) {
        snprintf(err, errlen, "prepare: unknown activation policy %d", (int)keep);
        return RL_EINVAL;
    }
    if (c->sliding_window > 0 && seq > c->sliding_window) {
        snprintf(err, errlen, "sequence length %d exceeds the model's sliding_window %d; sliding-window attention "
                 "is not implemented, use sequences of at most %d tokens", seq, c->sliding_window, c->sliding_window);
        return RL_EINVAL;
    }
    rl_arena_free(&m->acts, m->be);
    rl_arena_init(&m->acts, "activations");
    free(m->layer_acts);
    m->layer_acts = calloc((size_t)c->layers, sizeof *m->layer_acts);
    if (!m->layer_acts) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    const int64_t R = (int64_t)batch * seq, D = c->hidden, F = c->intermediate, N = c->head_dim;
    const int64_t QD = c->heads * N, KD = c->kv_heads * N, BHT = (int64_t)batch * c->heads * seq;
    /* the MLP's row chunk: its backward scratch always, its gate/up/act unless every layer keeps them */
    const int64_t CR = rl_mlp_chunk_rows(R, m->mlp_rows);
    const int64_t MR = keep == RL_ACTS_ALL ? R : CR;
    rl_arena *a = &m->acts;
    int bad = 0, (*ix)[A_N] = calloc((size_t)c->layers, sizeof *ix);
    int xlast, lnf, lnfr, logits, losses, rc_, rs_, tok, tgt;
    if (!ix) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    /* Layer 0 gets every tensor; a later layer gets its own only where `keep` keeps it, else layer 0's. */
    const int keep_x = keep == RL_ACTS_ALL || keep == RL_ACTS_BOUNDARIES;
    for (int l = 0; l < c->layers; l++) {
        int *i = ix[l];
        if (l > 0) {
            memcpy(i, ix[0], sizeof ix[0]);
            if (keep_x)
                bad |= act(a, &i[A_XIN], "layer%d.x_in", l, R, D);
            else if (l == 1)
                bad |= act(a, &i[A_XIN], "x_pingpong%d", 1, R, D);
            else
                i[A_XIN] = ix[l % 2][A_XIN];
            if (keep == RL_ACTS_CAPTURE)
                bad |= act(a, &i[A_LN1], "layer%d.ln1", l, R, D) | act(a, &i[A_OUT], "layer%d.attn_out", l, R, D);
            if (keep != RL_ACTS_ALL)
                continue;
        }
        bad |= act(a, &i[A_XIN], "layer%d.x_in", l, R, D) | act(a, &i[A_LN1], "layer%d.ln1", l, R, D);
        bad |= act(a, &i[A_LN1R], "layer%d.ln1_rstd", l, R, 1);
        if (m->mixer_only) { /* no softmax attention in any layer */
            for (int k = A_Q; k <= A_LSE; k++)
                i[k] = -1;
        } else {
            bad |= act(a, &i[A_Q], "layer%d.q", l, R, QD) | act(a, &i[A_K], "layer%d.k", l, R, KD);
            bad |= act(a, &i[A_V], "layer%d.v", l, R, KD);
            bad |= act(a, &i[A_ATT], "layer%d.att", l, R, QD) | act(a, &i[A_LSE], "layer%d.lse", l, BHT, 1);
        }
        if (c->qk_norm && !m->mixer_only) {
            bad |= act(a, &i[A_QRAW], "layer%d.q_raw", l, R, QD) | act(a, &i[A_KRAW], "layer%d.k_raw", l, R, KD);
            bad |= act(a, &i[A_QR], "layer%d.q_rstd", l, R, c->heads);
            bad |= act(a, &i[A_KR], "layer%d.k_rstd", l, R, c->kv_heads);
        } else {
            i[A_QRAW] = i[A_KRAW] = i[A_QR] = i[A_KR] = -1;
        }
        bad |= act(a, &i[A_OUT], "layer%d.attn_out", l, R, D) | act(a, &i[A_MID], "layer%d.res_mid", l, R, D);
        bad |= act(a, &i[A_LN2], "layer%d.ln2", l, R, D) | act(a, &i[A_LN2R], "layer%d.ln2_rstd", l, R, 1);
        bad |= act(a, &i[A_GATE], "layer%d.gate", l, MR, F) | act(a, &i[A_UP], "layer%d.up", l, MR, F);
        bad |= act(a, &i[A_ACT], "layer%d.act", l, MR, F);
    }
    if (keep_x || c->layers == 1)
        bad |= act(a, &xlast, "x_final%d", 0, R, D);
    else
        xlast = ix[c->layers % 2][A_XIN];
    bad |= act(a, &lnf, "lnf%d", 0, R, D) | act(a, &lnfr, "lnf_rstd%d", 0, R, 1);
    logits = losses = -1; /* CAPTURE: the captured activations are the output, no vocabulary head */
    if (keep != RL_ACTS_CAPTURE) {
        bad |= act(a, &logits, "logits_chunk%d", 0, chunk_rows < R ? chunk_rows : R, c->vocab);
        bad |= act(a, &losses, "row_losses%d", 0, R, 1);
    }
    bad |= act(a, &rc_, "rope_cos%d", 0, seq, N / 2) | act(a, &rs_, "rope_sin%d", 0, seq, N / 2);
    bad |= act(a, &tok, "tokens%d", 0, R, 1) | act(a, &tgt, "targets%d", 0, R, 1);
    int g[11];
    for (int k = 0; k < 11; k++)
        g[k] = -1;
    if (backward == 1) { /* (RL_PREP_GRADS_ONLY: the gradient arena without backward scratch) */
        bad |= act(a, &g[0], "grad.dres%d", 0, R, D) | act(a, &g[1], "grad.dln%d", 0, R, D);
        if (!m->mixer_only) {
            bad |= act(a, &g[2], "grad.dq%d", 0, R, QD) | act(a, &g[3], "grad.dk%d", 0, R, KD);
            bad |= act(a, &g[4], "grad.dv%d", 0, R, KD) | act(a, &g[5], "grad.datt%d", 0, R, QD);
            bad |= act(a, &g[6], "grad.delta%d", 0, BHT, 1);
        }
        bad |= act(a, &g[7], "grad.dgate%d", 0, CR, F);
        bad |= act(a, &g[8], "grad.dup%d", 0, CR, F) | act(a, &g[9], "grad.dact%d", 0, CR, F);
        if (c->qk_norm && !m->mixer_only)
            bad |= act(a, &g[10], "grad.dqk_raw%d", 0, R, QD + KD);
    }
    int rc = bad ? RL_ENOMEM : rl_arena_alloc(a, m->be, err, errlen);
    if (bad)
        snprintf(err, errlen, "out of memory building the activation table");
    if (!rc && backward && !m->grads.base) {
        for (int i = 0; i < m->params.n && !rc; i++) {
            const rl_arena_entry *e = &m->params.entries[i];
            if (!m->grad_wanted || m->grad_wanted(m->grad_wanted_ctx, e->name))
                rc = rl_arena_add(&m->grads, e->name, e->ndim, e->shape) < 0 ? RL_ENOMEM : 0;
        }
        for (int i = 0; i < m->frozen.n && !rc && m->bf16_trains; i++) { /* bf16 matrices: bf16 gradients */
            const rl_arena_entry *e = &m->frozen.entries[i];
            if (!m->grad_wanted || m->grad_wanted(m->grad_wanted_ctx, e->name))
                rc = rl_arena_add(&m->grads16, e->name, e->ndim, e->shape) < 0 ? RL_ENOMEM : 0;
        }
        if (!rc) {
            const char *prev = rl_backend_mem_tag(m->be, "gradients");
            if (m->grads.n) /* (none wanted: no arena; every pointer of m->g is NULL) */
                rc = rl_arena_alloc(&m->grads, m->be, err, errlen);
            if (!rc && m->grads16.n && !(m->g16 = rl_malloc(m->be, sizeof(uint16_t) * m->grads16.total))) {
                rc = rl_backend_status(m->be, err, errlen);
                rl_backend_clear_error(m->be);
            }
            if (!rc && m->g16 && (rl_zero(m->be, m->g16, sizeof(uint16_t) * m->grads16.total) ||
                                  rl_backend_grads_bf16(m->be, m->g16, m->grads16.total)))
                rc = rl_backend_status(m->be, err, errlen);
            rl_backend_mem_tag(m->be, prev);
        }
        if (!rc)
            rl__bind_params2(&m->grads, &m->grads16, m->g16, c, &m->g);
    }
    if (rc) {
        free(ix);
        return rc;
    }
    for (int l = 0; l < c->layers; l++) {
        rl_layer_acts *la = &m->layer_acts[l];
        int *i = ix[l];
        la->x_in = rl_arena_ptr(a, i[A_XIN]), la->ln1 = rl_arena_ptr(a, i[A_LN1]);
        la->ln1_rstd = rl_arena_ptr(a, i[A_LN1R]);
        la->q = rl_arena_ptr(a, i[A_Q]), la->k = rl_arena_ptr(a, i[A_K]), la->v = rl_arena_ptr(a, i[A_V]);
        la->q_raw = rl_arena_ptr(a, i[A_QRAW]), la->k_raw = rl_arena_ptr(a, i[A_KRAW]);
        la->q_rstd = rl_arena_ptr(a, i[A_QR]), la->k_rstd = rl_arena_ptr(a, i[A_KR]);
        la->att = rl_arena_ptr(a, i[A_ATT]), la->lse = rl_arena_ptr(a, i[A_LSE]);
        la->attn_out = rl_arena_ptr(a, i[A_OUT]), la->res_mid = rl_arena_ptr(a, i[A_MID]);
        la->ln2 = rl_arena_ptr(a, i[A_LN2]), la->ln2_rstd = rl_arena_ptr(a, i[A_LN2R]);
        la->gate = rl_arena_ptr(a, i[A_GATE]), la->up = rl_arena_ptr(a, i[A_UP]);
        la->act = rl_arena_ptr(a, i[A_ACT]);
    }
    for (int l = 0; l < c->layers; l++)
        m->layer_acts[l].x_out = l + 1 < c->layers ? m->layer_acts[l + 1].x_in : rl_arena_ptr(a, xlast);
    free(ix);
    m->lnf = rl_arena_ptr(a, lnf), m->lnf_rstd = rl_arena_ptr(a, lnfr);
    m->logits_chunk = rl_arena_ptr(a, logits), m->row_losses = rl_arena_ptr(a, losses);
    m->rope_cos = rl_arena_ptr(a, rc_), m->rope_sin = rl_arena_ptr(a, rs_);
    m->tokens = (int32_t *)rl_arena_ptr(a, tok), m->targets = (int32_t *)rl_arena_ptr(a, tgt);
    memset(&m->gs, 0, sizeof m->gs);
    if (backward == 1) {
        m->gs.dres = rl_arena_ptr(a, g[0]), m->gs.dln = rl_arena_ptr(a, g[1]);
        m->gs.dq = rl_arena_ptr(a, g[2]), m->gs.dk = rl_arena_ptr(a, g[3]), m->gs.dv = rl_arena_ptr(a, g[4]);
        m->gs.datt = rl_arena_ptr(a, g[5]), m->gs.delta = rl_arena_ptr(a, g[6]);
        m->gs.dgate = rl_arena_ptr(a, g[7]), m->gs.dup = rl_arena_ptr(a, g[8]), m->gs.dact = rl_arena_ptr(a, g[9]);
        if (c->qk_norm && !m->mixer_only) {
            m->gs.dq_raw = rl_arena_ptr(a, g[10]);
            m->gs.dk_raw = m->gs.dq_raw + R * QD;
        }
    }
    m->batch = batch, m->seq = seq, m->chunk_rows = chunk_rows < R ? chunk_rows : (int)R;
    m->mlp_chunk = (int)CR;
    m->has_backward = backward == 1;
    m->keep = keep;
    /* RoPE tables are computed once on the host in float64 and uploaded. */
    float *cs = malloc(sizeof(float) * (size_t)seq * (size_t)(N / 2) * 2 + 4);
    if (!cs) {
        snprintf(err, errlen, "out of memory");
        return RL_ENOMEM;
    }
    rl_rope_tables(c, seq, cs, cs + (size_t)seq * (N / 2));
    rl_upload(m->be, m->rope_cos, cs, sizeof(float) * (size_t)seq * (N / 2));
    rl_upload(m->be, m->rope_sin, cs + (size_t)seq * (N / 2), sizeof(float) * (size_t)seq * (N / 2));
    free(cs);
    return rl_backend_status(m->be, err, errlen);
}

/* The backend's sticky error if there is one, else a failure a mixer reported without one. */
static int finish(rl_model *m, int rc, const char *what, char *err, size_t errlen)
{
    int st = rl_backend_status(m->be, err, errlen);
    if (st || !rc)
        return st;
    snprintf(err, errlen, "%s failed (error %d)", what, rc);
    return rc < 0 ? rc : RL_EINVAL;
}

/* Layer l's forward from its x_in. recompute: only what the layer's backward reads (the MLP stops at act;
 * x_out, the next layer's kept input, is not written again). */
static int layer_forward(rl_model *m, int l, int recompute)
{
    rl_backend *be = m->be;
    const rl_model_config *c = &m->cfg;
    const int R = m->batch * m->seq, D = c->hidden;
    const float eps = (float)c->rms_norm_eps;
    rl_layer_acts *la = &m->layer_acts[l];
    const rl_layer_params *lp = &m->p.layers[l];
    int rc = rl_rmsnorm_forward(be, la->ln1, la->ln1_rstd, la->x_in, lp->ln1_w, R, D, eps);
    if (m->mixer && l < m->mixer->layers)
        rc |= m->mixer->forward(m->mixer->ctx, l, la->ln1, la->attn_out);
    else
        rc |= rl_attn_block_forward(m, lp, la);
    rc |= rl_add(be, la->res_mid, la->x_in, la->attn_out, (size_t)R * D);
    rc |= rl_rmsnorm_forward(be, la->ln2, la->ln2_rstd, la->res_mid, lp->ln2_w, R, D, eps);
    rc |= rl_mlp_block_forward(m, lp, la, recompute ? NULL : la->x_out);
    if (!recompute)
        rc |= rl_accumulate(be, la->x_out, la->res_mid, (size_t)R * D);
    return rc;
}

int rl_model_forward(rl_model *m, const int32_t *tokens, char *err, size_t errlen)
{
    rl_backend *be = m->be;
    const rl_model_config *c = &m->cfg;
    const int R = m->batch * m->seq, D = c->hidden;
    if (m->mixer_only && (!m->mixer || m->mixer->layers < c->layers)) {
        snprintf(err, errlen, "forward: the model was prepared without attention buffers (mixer_only) but %s",
                 m->mixer ? "its mixer does not cover every layer" : "has no sequence mixer");
        return RL_EINVAL;
    }
    rl_upload(be, m->tokens, tokens, sizeof(int32_t) * (size_t)R);
    rl_embedding_forward(be, m->layer_acts[0].x_in, m->tokens, m->p.embed, R, c->vocab, D);
    int rc = 0;
    for (int l = 0; l < c->layers; l++)
        rc |= layer_forward(m, l, 0);
    rl_rmsnorm_forward(be, m->lnf, m->lnf_rstd, m->layer_acts[c->layers - 1].x_out, m->p.final_norm, R, D,
                       (float)c->rms_norm_eps);
    return finish(m, rc, "forward", err, errlen);
}

/* Starts from dlnf in m->gs.dln (set by a loss); dres carries ∂L/∂x down the
 * residual stream, each block adding its branch. */
int rl_model_backward(rl_model *m, char *err, size_t errlen)
{
    rl_backend *be = m->be;
    const rl_model_config *c = &m->cfg;
    const int R = m->batch * m->seq, D = c->hidden;
    const size_t RD = (size_t)R * D;
    /* a gradient for every parameter, or for those grad_wanted picked (the ops skip a NULL one: a frozen weight) */
    const int all_grads = m->grad_wanted || (m->grads.total == m->params.total &&
                                             (!m->frozen.n || m->grads16.total == m->frozen.total));
    if (!m->has_backward || (m->keep != RL_ACTS_ALL && m->keep != RL_ACTS_BOUNDARIES) || !all_grads) {
        snprintf(err, errlen, "backward: the model was prepared without %s",
                 !m->has_backward                      ? "backward buffers"
                 : !all_grads ? "a gradient for every parameter (or a grad_wanted choice)"
                                                     : "the activations a backward needs (keep ALL or BOUNDARIES)");
        return RL_EINVAL;
    }
    if (m->mixer && m->mixer->layers > 0 && !m->mixer->backward) {
        snprintf(err, errlen, "backward: the model's sequence mixer has no backward");
        return RL_EINVAL;
    }
    rl_grad_scratch *gs = &m->gs;
    int rc = 0;
    rl_zero(be, gs->dres, RD * sizeof(float));
    rl_rmsnorm_backward(be, gs->dres, m->g.final_norm, gs->dln, m->layer_acts[c->layers - 1].x_out, m->p.final_norm,
                        m->lnf_rstd, R, D);
    if (m->grads_ready)
        rc |= m->grads_ready(m->grads_ready_ctx, 0);
    for (int l = c->layers - 1; l >= 0; l--) {
        const rl_layer_acts *la = &m->layer_acts[l];
        const rl_layer_params *lp = &m->p.layers[l];
        rl_layer_params *gp = &m->g.layers[l];
        if (m->keep == RL_ACTS_BOUNDARIES && l != c->layers - 1) /* the last layer's are still there */
            rc |= layer_forward(m, l, 1);
        /* x_out = res_mid + MLP(ln2(res_mid)) */
        rl_zero(be, gs->dln, RD * sizeof(float));
        rl_mlp_block_backward(m, lp, gp, la, gs->dres, gs->dln);
        rl_rmsnorm_backward(be, gs->dres, gp->ln2_w, gs->dln, la->res_mid, lp->ln2_w, la->ln2_rstd, R, D);
        /* res_mid = x_in + Mixer(ln1(x_in)) */
        rl_zero(be, gs->dln, RD * sizeof(float));
        if (m->mixer && l < m->mixer->layers)
            rc |= m->mixer->backward(m->mixer->ctx, l, la->ln1, gs->dres, gs->dln);
        else
            rl_attn_block_backward(m, lp, gp, la, gs->dres, gs->dln);
        rl_rmsnorm_backward(be, gs->dres, gp->ln1_w, gs->dln, la->x_in, lp->ln1_w, la->ln1_rstd, R, D);
        if (m->grads_ready)
            rc |= m->grads_ready(m->grads_ready_ctx, c->layers - l);
    }
    if (m->g.embed)
        rl_embedding_backward(be, m->g.embed, gs->dres, m->tokens, R, c->vocab, D);
    if (m->grads_ready)
        rc |= m->grads_ready(m->grads_ready_ctx, c->layers + 1);
    return finish(m, rc, "backward", err, errlen);
}

int rl_model_grads_event(const char *name, int layers)
{
    if (!strncmp(name, "model.layers.", 13)) {
        char *end;
        long l = strtol(name + 13, &end, 10);
        if (end != name + 13 && *end == '.' && l >= 0 && l < layers)
            return layers - (int)l;
    }
    if (!strncmp(name, "model.norm.", 11) || !strncmp(name, "lm_head.", 8))
        return 0;
    return layers + 1;
}

void rl_model_zero_grads(rl_model *m)
{
    if (m->grads.base)
        rl_zero(m->be, m->grads.base, m->grads.total * sizeof(float));
    if (m->g16)
        rl_zero(m->be, m->g16, m->grads16.total * sizeof(uint16_t));
}

int rl_model_loss(rl_model *m, const int32_t *targets, int backward, double *mean_loss, char *err, size_t errlen)
{
    const rl_model_config *c = &m->cfg;
    const int R = m->batch * m->seq;
    if (!m->logits_chunk) {
        snprintf(err, errlen, "loss: the model was prepared to capture activations only (no vocabulary head)");
        return RL_EINVAL;
    }
    if (backward && !m->has_backward) {
        snprintf(err, errlen, "loss: the model was prepared without backward buffers");
        return RL_EINVAL;
    }
    rl_upload(m->be, m->targets, targets, sizeof(int32_t) * (size_t)R);
    rl_lm_head h = {.rows = R, .dim = c->hidden, .vocab = c->vocab, .chunk_rows = m->chunk_rows,
                    .hidden = m->lnf, .weight = m->p.lm_head, .dhidden = backward ? m->gs.dln : NULL,
                    .dweight = backward ? m->g.lm_head : NULL, .logits_buf = m->logits_chunk,
                    .row_losses = m->row_losses};
    int rc = rl_lm_head_cross_entropy(m->be, &h, m->targets, mean_loss);
    if (rc)
        return rl_backend_status(m->be, err, errlen) ? rl_backend_status(m->be, err, errlen) : rc;
    if (backward)
        return rl_model_backward(m, err, errlen);
    return rl_backend_status(m->be, err, errlen);
}

int rl_model_logits(rl_model *m, rl_logits_fn fn, void *ctx, char *err, size_t errlen)
{
    if (!m->logits_chunk) {
        snprintf(err, errlen, "logits: the model was prepared to capture activations only (no vocabulary head)");
        return RL_EINVAL;
    }
    const rl_model_config *c = &m->cfg;
    const int R = m->batch * m->seq;
    for (int r0 = 0; r0 < R; r0 += m->chunk_rows) {
        int rows = R - r0 < m->chunk_rows ? R - r0 : m->chunk_rows;
        rl_linear_forward(m->be, m->logits_chunk, m->lnf + (size_t)r0 * c->hidden, m->p.lm_head, NULL, rows,
                          c->hidden, c->vocab);
        int rc = rl_backend_status(m->be, err, errlen);
        if (!rc)
            rc = fn(ctx, r0, rows, m->logits_chunk, err, errlen);
        if (rc)
            return rc;
    }
    return 0;
}
