/* plan.c — memory per rank of each training stage (plan.h).
 *
 * Activation sizes, with R = micro_batch·seq_len rows, D hidden, A = heads·N attention width,
 * KD = kv_heads·N, F intermediate, H heads, G kv heads; "x" marks an fp32 tensor under every policy
 * (statistics, log-decay, wkv state), the rest is in the activation dtype. Names are the fields that hold
 * them on the CPU path.
 *   block (every layer; rl_model_prepare)   x_in ln1 attn_out res_mid ln2 [R,D], ln1_rstd ln2_rstd [R]x,
 *                                           gate up act [R,F] without recompute, else (and for a teacher)
 *                                           [C,F]: the MLP runs in row chunks of C = min(R, mlp_rows)
 *   softmax attention (teacher, hybrid)     q att [R,A], k v [R,KD], lse [R,H]x;
 *                                           Qwen3 q/k norm: q_raw [R,A], k_raw [R,KD], q_rstd [R,H]x, k_rstd [R,G]x
 *   RAD-RWKV7 time-mix (rl_tmix_acts)       r dl al gate nl ka kb kt v o og [R,A], logw [R,A]x, k vp [R,KD],
 *                                           LoRA middles hw [R,r_d] ha [R,r_a] hg [R,r_g] hv [R,r_v];
 *                                           variant a GroupNorm mean rstd [R,H]x; Qwen3 norms as above
 *   RAD-RWKV6 time-mix                      r dl gate kt v kb o og [R,A], logw [R,A]x, k vp [R,KD], hw [R,r_d],
 *                                           xx xc[0..4] [R,D], smaa [R,5·r_s]; Qwen3 norms as above
 *   backward scratch (one layer's, reused)  dres dln [R,D], dgate dup dact [C,F]; time-mix RWKV7: 12 [R,A]
 *                                           (d_logw x), d_k d_vp [R,KD], d_mid d_pre [R,max rank]; RWKV6: 10
 *                                           [R,A], d_k d_vp, d_mid d_pre, d_xx d_xc[0..4] [R,D]; attention:
 *                                           dq datt [R,A], dk dv [R,KD], delta [R,H]x (+ dqk_raw [R,A+KD])
 *   per row                                 x_final lnf [R,D], lnf_rstd row_losses tokens targets [R]x,
 *                                           v_first dv_first [R,A] (RWKV7), RoPE tables [T,N]x
 *   align (stage_step.c)                    per time-mix layer dy [R,D] (the loss gradient, kept until the
 *                                           backward), y_s [R,D], du [R,D] (RWKV6: the discarded input
 *                                           gradient its token shift writes); the teacher's u = ln1 and y_T =
 *                                           attn_out per layer (without recompute: the teacher runs first)
 * The trainer allocates these tables (measured by role and compared in tests/worker/test_recompute.py plan:
 * weights, gradients, optimizer state, wkv checkpoints and GEMM copies exactly, activations within 1.5 % in
 * distill and extend). In align it keeps a little more than counted here: the teacher's lm_head and the
 * student's one-layer forward working set and logits chunk, which validation uses. */
#include <stdio.h>
#include <string.h>

#include "../kernels/scratch.h"
#include "plan.h"

static const char *const stage_names[] = {"align", "distill", "extend"};
static const char *const role_keys[RL_ROLE_N] = {
    "student_weights", "student_grads", "master_weights", "adam_m", "adam_v", "teacher_weights",
    "activations", "teacher_activations", "wkv_checkpoints", "logits_chunks", "bf16_gemm_copies", "workspace"};

const char *rl_plan_stage_name(rl_plan_stage s) { return (unsigned)s < 3 ? stage_names[s] : "?"; }
const char *rl_plan_role_key(rl_plan_role r) { return (unsigned)r < RL_ROLE_N ? role_keys[r] : "?"; }

static const char *const dtypes_names[] = {"bf16", "fp32", "autocast", "bf16-weights"};
static const char *const dtypes_what[] = {
    ("bf16 weights/grads/activations, fp32 master weights and AdamW moments (the target layout: no precision of the "
     "trainer keeps it yet; --dtype bf16-weights is what precision: bf16-weights keeps)"),
    "fp32 everything, no master copy",
    "fp32 weights/grads/activations with bf16 GEMM copies (precision: bf16)",
    ("trainable matrices bf16 with bf16 grads, fp32 master weights; the rest fp32 with bf16 GEMM copies "
     "(precision: bf16-weights)")};

const char *rl_plan_dtypes_name(rl_plan_dtypes d) { return (unsigned)d < 4 ? dtypes_names[d] : "?"; }
const char *rl_plan_dtypes_what(rl_plan_dtypes d) { return (unsigned)d < 4 ? dtypes_what[d] : "?"; }

int rl_plan_dtypes_from_name(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, dtypes_names[i]))
            return i;
    return -1;
}

const char *rl_plan_role_label(rl_plan_role r, rl_plan_dtypes d)
{
    const int bf = d == RL_PLAN_BF16, bw = d == RL_PLAN_BF16_WEIGHTS;
    switch (r) {
    case RL_ROLE_WEIGHTS:
        return bf ? "student weights (bf16)" : bw ? "student weights (bf16 mat.)" : "student weights (fp32)";
    case RL_ROLE_GRADS: return bf ? "student grads (bf16)" : bw ? "student grads (bf16 mat.)" : "student grads (fp32)";
    case RL_ROLE_MASTER: return "master weights (fp32)";
    case RL_ROLE_ADAM_M: return "AdamW m (fp32)";
    case RL_ROLE_ADAM_V: return "AdamW v (fp32)";
    case RL_ROLE_TEACHER:
        return bf ? "teacher weights (bf16)" : d == RL_PLAN_AUTOCAST || bw ? "teacher weights (bf16 matrices)"
                                                                    : "teacher weights (fp32)";
    case RL_ROLE_ACTS: return "activations";
    case RL_ROLE_TEACHER_ACTS: return "teacher activations";
    case RL_ROLE_WKV_CKPT: return "wkv checkpoints (fp32)";
    case RL_ROLE_LOGITS: return "logits chunks (fp32)";
    case RL_ROLE_GEMM_COPIES: return "bf16 GEMM copies";
    case RL_ROLE_WORKSPACE: return "workspace";
    default: return "?";
    }
}

/* The allowance beside the arenas. CUDA: the context and kernel images (not visible to cudaMalloc but taken from
 * the card), cuBLASLt workspaces (32 MiB per stream, two streams), NCCL's channel buffers on more than one rank,
 * the gradient bucket staging (2 × 4 MiB), and the backend's kernel scratch (rlc_workspace), which is the stage's
 * own (kernel_scratch below). CPU: BLAS and OpenMP buffers. */
#define MiB ((uint64_t)1 << 20)
static uint64_t fixed_workspace_bytes(rl_plan_dtypes d, int ranks)
{
    if (d == RL_PLAN_FP32)
        return 64 * MiB;
    return 512 * MiB + 64 * MiB + (ranks > 1 ? 384 * MiB + 8 * MiB : 0);
}

const char *rl_plan_workspace_note(rl_plan_dtypes d, int ranks)
{
    if (d == RL_PLAN_FP32)
        return "64 MiB: BLAS and OpenMP buffers (CPU backend)";
    return ranks > 1 ? "CUDA context 512 MiB, cuBLASLt 2 x 32 MiB, NCCL buffers 384 MiB, gradient bucket staging "
                       "8 MiB, and each stage's kernel scratch (the largest scratch request of its kernels)"
                     : "CUDA context 512 MiB, cuBLASLt 2 x 32 MiB, and each stage's kernel scratch (the largest "
                       "scratch request of its kernels)";
}

void rl_plan_opts_defaults(rl_plan_opts *o, rl_plan_stage stage)
{
    static const int micro[] = {4, 12, 2};
    memset(o, 0, sizeof *o);
    o->arch = RL_STUDENT_RWKV7, o->variant = 'b', o->stage = stage;
    o->ranks = 1, o->zero = 1, o->micro_batch = micro[stage];
    o->seq_len = stage == RL_PLAN_EXTEND ? 16384 : 512, o->chunk_rows = 512;
    o->dtypes = RL_PLAN_BF16, o->recompute = RL_RECOMPUTE_AUTO;
}

/* Element counts: `a` in the activation dtype, `f` always fp32. */
typedef struct {
    uint64_t a, f;
} elems;

static void add(elems *e, const elems x)
{
    e->a += x.a, e->f += x.f;
}
static elems times(elems x, uint64_t n)
{
    return (elems){x.a * n, x.f * n};
}
static elems bigger(elems x, elems y, uint64_t ab)
{
    return x.a * ab + x.f * 4 >= y.a * ab + y.f * 4 ? x : y;
}

typedef struct {
    uint64_t R, T, D, A, KD, F, H, G, N;
    uint64_t C; /* the MLP's row chunk (rl_model_mlp_rows) */
    int qk, variant;
    rl_student_arch arch;
    rl_student_ranks rk;
} shapes;

/* mlp_rows: R where every layer keeps its MLP's activations, else the chunk C */
static elems block_saved(const shapes *s, uint64_t mlp_rows)
{
    return (elems){s->R * 5 * s->D + mlp_rows * 3 * s->F, 2 * s->R};
}

static elems attention_saved(const shapes *s)
{
    elems e = {s->R * (2 * s->A + 2 * s->KD), s->R * s->H};
    if (s->qk)
        add(&e, (elems){s->R * (s->A + s->KD), s->R * (s->H + s->G)});
    return e;
}

static elems tmix_saved(const shapes *s)
{
    const uint64_t R = s->R;
    elems e = {R * 2 * s->KD, R * s->A}; /* k, vp; logw */
    if (s->arch == RL_STUDENT_RWKV7) {
        e.a += R * (11 * s->A + (uint64_t)s->rk.decay + s->rk.iclr + s->rk.gate + s->rk.value);
        if (s->variant == 'a')
            e.f += R * 2 * s->H;
    } else {
        e.a += R * (8 * s->A + (uint64_t)s->rk.decay + 6 * s->D + 5 * (uint64_t)s->rk.shift);
    }
    if (s->qk)
        add(&e, (elems){R * (s->A + s->KD), R * (s->H + s->G)});
    return e;
}

static uint64_t max_rank(const shapes *s)
{
    const rl_student_ranks *r = &s->rk;
    uint64_t m = (uint64_t)r->decay;
    if (s->arch == RL_STUDENT_RWKV7) {
        m = (uint64_t)r->iclr > m ? (uint64_t)r->iclr : m;
        m = (uint64_t)r->value > m ? (uint64_t)r->value : m;
        m = (uint64_t)r->gate > m ? (uint64_t)r->gate : m;
    } else {
        m = 5 * (uint64_t)r->shift > m ? 5 * (uint64_t)r->shift : m;
    }
    return m;
}

static elems tmix_scratch(const shapes *s)
{
    const uint64_t R = s->R;
    elems e = {R * (2 * s->KD + 2 * max_rank(s)), R * s->A}; /* d_k d_vp d_mid d_pre; d_logw */
    if (s->arch == RL_STUDENT_RWKV7)
        e.a += R * 11 * s->A;
    else
        e.a += R * (9 * s->A + 6 * s->D);
    if (s->qk)
        e.a += R * (s->A + s->KD);
    return e;
}

static elems attention_scratch(const shapes *s)
{
    return (elems){s->R * (2 * s->A + 2 * s->KD + (s->qk ? s->A + s->KD : 0)), s->R * s->H};
}

static elems block_scratch(const shapes *s)
{
    return (elems){s->R * 2 * s->D + s->C * 3 * s->F, 0};
}

/* x_final lnf, lnf_rstd row_losses tokens targets, RoPE tables */
static elems per_row(const shapes *s)
{
    return (elems){s->R * 2 * s->D, s->R * 4 + s->T * s->N};
}

/* The CUDA backend's kernel scratch in a stage (scratch.h): one buffer that grows to the largest request of the
 * ops a step runs, in whole MiB. Every stage runs the student's time-mix backward at the stage's shapes. The wkv
 * backward is counted on its per-row kernels with their value rows split over blocks: the most it may take (the
 * chunked kernel takes none, and which one runs depends on the card and, for wkv6, on the decays). bf16_acc: the
 * largest block of a bf16 gradient accumulation (0 where gradients are fp32). *by: what asks for the most. */
static uint64_t kernel_scratch(const shapes *s, const rl_plan_opts *o, size_t bf16_acc, const char **by)
{
    const int B = o->micro_batch, T = o->seq_len, R = B * T;
    const int H = (int)s->H, G = (int)s->G, N = (int)s->N, D = (int)s->D;
    const rl_wkv_dims wd = {B, T, H, N, 0};
    const rl_shift_dims sd = {B, T, D};
    struct {
        const char *what;
        size_t bytes;
    } req[6] = {{"the per-row wkv backward's segment states", rl_scratch_wkv_backward(&wd, 0, 1, 1)},
                {"a bf16 gradient's fp32 accumulation block", bf16_acc}};
    int n = 2;
    if (s->arch == RL_STUDENT_RWKV7) {
        const rl_rwkv7_mix_dims md = {R, H, G, N, s->variant, 0};
        const rl_readout_dims rd = {R, H, N, s->variant == 'a', 0.0f, 1.0f};
        req[n].what = "the RAD-RWKV7 mix backward's partial sums", req[n++].bytes = rl_scratch_rwkv7_mix_backward(&md);
        req[n].what = "the GroupNorm backward's partial sums", req[n++].bytes = rl_scratch_readout_backward(&rd, 1);
    } else {
        const rl_rwkv6_mix_dims md = {R, H, G, N, 1.0f};
        req[n].what = "the wkv6 backward's steep-group counts", req[n++].bytes = rl_scratch_wkv6_counts(&wd);
        req[n].what = "the RAD-RWKV6 mix backward's partial sums", req[n++].bytes = rl_scratch_rwkv6_mix_backward(&md);
        req[n].what = "the ddlerp backward's partial sums",
        req[n++].bytes = rl_scratch_ddlerp_backward(&sd, s->rk.shift);
        req[n].what = "the token-shift backward's partial sums", req[n++].bytes = rl_scratch_tokenshift_backward(&sd);
    }
    int top = 0;
    for (int i = 1; i < n; i++)
        if (req[i].bytes > req[top].bytes)
            top = i;
    *by = req[top].what;
    return rl_scratch_rounded(req[top].bytes);
}

/* The largest block a bf16 gradient GEMM accumulates in (scratch.h rl_scratch_bf16_acc; dW[out, in] += dyᵀ x:
 * M = out, N = in) over the matrices of `a` that train in `set` and, with gemm_only, are GEMM-only. */
static size_t bf16_acc_scratch(const rl_arena *a, const rl_model_config *c, rl_param_set set, int mix, int gemm_only)
{
    size_t most = 0;
    for (int i = 0; i < a->n; i++) {
        const rl_arena_entry *e = &a->entries[i];
        if (e->ndim != 2 || !rl_tensor_trains(e->name, set, mix) || (gemm_only && !rl_model_gemm_only(c, e->name)))
            continue;
        const size_t bytes = rl_scratch_bf16_acc((int)e->shape[0], (int)e->shape[1]);
        most = bytes > most ? bytes : most;
    }
    return most;
}

static uint64_t bytes_of(elems e, uint64_t ab)
{
    return e.a * ab + e.f * 4;
}

static uint64_t shard(int64_t n, const rl_plan_opts *o)
{
    const uint64_t u = (uint64_t)n;
    return o->zero && o->ranks > 1 ? (u + (uint64_t)o->ranks - 1) / (uint64_t)o->ranks : u;
}

static int64_t table_count(const rl_arena *a, rl_param_set set, int mix_layers, const char *skip)
{
    int64_t n = 0;
    for (int i = 0; i < a->n; i++)
        if (rl_tensor_trains(a->entries[i].name, set, mix_layers) && !(skip && !strcmp(a->entries[i].name, skip)))
            n += (int64_t)a->entries[i].count;
    return n;
}

/* The teacher's GEMM-only matrices (what a frozen teacher keeps in bf16 alone), less `skip`; set >= 0: only those
 * that train in set (what a bf16-weights student keeps in bf16 alone). Counted with the arenas' padding of every
 * tensor to 16 elements, as they allocate them. */
static int64_t gemm_only_count(const rl_arena *a, const rl_model_config *c, const char *skip, int set, int mix)
{
    int64_t n = 0;
    for (int i = 0; i < a->n; i++)
        if (rl_model_gemm_only(c, a->entries[i].name) && !(skip && !strcmp(a->entries[i].name, skip)) &&
            (set < 0 || rl_tensor_trains(a->entries[i].name, (rl_param_set)set, mix)))
            n += (int64_t)a->entries[i].count;
    return n;
}

static int check_opts(const rl_model_config *c, const rl_plan_opts *o, char *err, size_t errlen)
{
    if ((unsigned)o->stage > RL_PLAN_EXTEND) {
        snprintf(err, errlen, "plan: unknown stage %d", (int)o->stage);
        return RL_EINVAL;
    }
    if (o->arch != RL_STUDENT_RWKV7 && o->arch != RL_STUDENT_RWKV6) {
        snprintf(err, errlen, "plan: unknown student architecture %d", (int)o->arch);
        return RL_EINVAL;
    }
    if (o->arch == RL_STUDENT_RWKV7 && o->variant != 'a' && o->variant != 'b') {
        snprintf(err, errlen, "plan: RAD-RWKV7 variant must be a or b");
        return RL_EINVAL;
    }
    if (o->ranks < 1 || o->micro_batch < 1 || o->seq_len < 1 || o->chunk_rows < 1) {
        snprintf(err, errlen, "plan: ranks=%d micro_batch=%d seq_len=%d chunk_rows=%d must all be positive",
                 o->ranks, o->micro_batch, o->seq_len, o->chunk_rows);
        return RL_EINVAL;
    }
    if (o->attention_layers < 0 || o->attention_layers >= c->layers) {
        snprintf(err, errlen, "plan: attention layers %d must lie in [0, %d) (num_hidden_layers=%d)",
                 o->attention_layers, c->layers, c->layers);
        return RL_EINVAL;
    }
    return rl_config_validate(c, err, errlen);
}

static int compute_fixed(rl_plan *p, const rl_model_config *c, const rl_plan_opts *o, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->o = *o;
    const int L = c->layers, mix = L - o->attention_layers;
    const uint64_t wb = o->dtypes == RL_PLAN_BF16 ? 2 : 4, ab = wb;

    /* parameters: the tables the arenas allocate */
    rl_arena base, tmix;
    rl_arena_init(&base, "plan teacher");
    rl_arena_init(&tmix, "plan time-mix");
    rl_student_ranks rk;
    rl_student_default_ranks(c->hidden, &rk);
    int rc = rl_model_param_table(&base, c);
    if (!rc)
        rc = rl_student_param_table(&tmix, c, o->arch, o->variant, o->attention_layers, &rk);
    if (rc) {
        snprintf(err, errlen, "plan: out of memory building the parameter tables");
        rl_arena_free(&base, NULL), rl_arena_free(&tmix, NULL);
        return RL_ENOMEM;
    }
    rl_param_set set = RL_TRAINS_ALL;
    if (o->stage == RL_PLAN_ALIGN)
        set = RL_TRAINS_TIME_MIX;
    else if (o->stage == RL_PLAN_EXTEND && o->train_decay_shift)
        set = RL_TRAINS_DECAY_SHIFT;
    p->teacher_params = table_count(&base, RL_TRAINS_ALL, mix, NULL);
    p->student_params = p->teacher_params + table_count(&tmix, RL_TRAINS_ALL, mix, NULL);
    p->trainable_params = table_count(&base, set, mix, NULL) + table_count(&tmix, set, mix, NULL);
    /* align never evaluates the LM head (METHOD.md step 1); a tied head is the embedding, still needed */
    p->teacher_resident_params = o->stage == RL_PLAN_EXTEND ? 0
                                 : o->stage == RL_PLAN_ALIGN ? table_count(&base, RL_TRAINS_ALL, mix, "lm_head.weight")
                                                             : p->teacher_params;
    /* autocast: a resident teacher keeps its GEMM-only matrices in bf16 alone (rl_model_load_ex) */
    const int64_t frozen = o->stage == RL_PLAN_EXTEND ? 0
                           : gemm_only_count(&base, c, o->stage == RL_PLAN_ALIGN ? "lm_head.weight" : NULL, -1, mix);
    /* bf16-weights: every GEMM-only matrix of the student in bf16 alone (bw), those that train with bf16 gradients
     * (bwt); the fp32 rest of the base model gets a GEMM copy only when a GEMM reads it: a tied LM head, outside
     * align (which runs no head) */
    const int bfw = o->dtypes == RL_PLAN_BF16_WEIGHTS;
    const int64_t bw = bfw ? gemm_only_count(&base, c, NULL, -1, mix) : 0;
    const int64_t bwt = bfw ? gemm_only_count(&base, c, NULL, (int)set, mix) : 0;
    const int base_copied = !bfw || (o->stage != RL_PLAN_ALIGN && c->tie_word_embeddings);
    /* bf16 gradients, accumulated through fp32 scratch: bf16-weights' trainable GEMM-only base matrices; the bf16
     * layout's every trainable matrix */
    size_t bf16_acc = 0;
    if (bfw)
        bf16_acc = bf16_acc_scratch(&base, c, set, mix, 1);
    else if (o->dtypes == RL_PLAN_BF16) {
        const size_t t = bf16_acc_scratch(&tmix, c, set, mix, 0);
        bf16_acc = bf16_acc_scratch(&base, c, set, mix, 0);
        bf16_acc = t > bf16_acc ? t : bf16_acc;
    }
    rl_arena_free(&base, NULL), rl_arena_free(&tmix, NULL);
    if (p->trainable_params == 0) {
        snprintf(err, errlen, "plan: no tensor trains in %s with these options", rl_plan_stage_name(o->stage));
        return RL_EINVAL;
    }

    uint64_t *b = p->bytes;
    b[RL_ROLE_WEIGHTS] = (uint64_t)p->student_params * wb;
    b[RL_ROLE_GRADS] = (uint64_t)p->trainable_params * wb;
    b[RL_ROLE_MASTER] = o->dtypes == RL_PLAN_BF16 ? shard(p->trainable_params, o) * 4 : 0;
    b[RL_ROLE_ADAM_M] = b[RL_ROLE_ADAM_V] = shard(p->trainable_params, o) * 4;
    b[RL_ROLE_TEACHER] = (uint64_t)p->teacher_resident_params * wb;
    b[RL_ROLE_GEMM_COPIES] = 0;
    if (o->dtypes == RL_PLAN_AUTOCAST || o->dtypes == RL_PLAN_BF16_WEIGHTS) {
        /* the teacher's matrices in bf16, the rest (embedding, vectors) fp32; bf16 copies of the student's fp32
         * weights, and in distill of the teacher's fp32 part when its tied embedding is the LM head */
        const uint64_t rest = (uint64_t)(p->teacher_resident_params - frozen);
        b[RL_ROLE_TEACHER] = 2 * (uint64_t)frozen + 4 * rest;
        b[RL_ROLE_GEMM_COPIES] = 2 * (uint64_t)(p->student_params - p->teacher_params) +
                                 (base_copied ? 2 * (uint64_t)(p->teacher_params - bw) : 0) +
                                 (o->stage == RL_PLAN_DISTILL && c->tie_word_embeddings ? 2 * rest : 0);
    }
    if (bfw) { /* bw weights and bwt gradients at 2 bytes instead of 4 */
        b[RL_ROLE_WEIGHTS] -= 2 * (uint64_t)bw;
        b[RL_ROLE_GRADS] -= 2 * (uint64_t)bwt;
        b[RL_ROLE_MASTER] = bwt ? shard(p->trainable_params, o) * 4 : 0;
    }

    /* activations */
    shapes s = {.R = (uint64_t)o->micro_batch * (uint64_t)o->seq_len, .T = (uint64_t)o->seq_len,
                .D = (uint64_t)c->hidden, .A = (uint64_t)c->heads * (uint64_t)c->head_dim,
                .KD = (uint64_t)c->kv_heads * (uint64_t)c->head_dim, .F = (uint64_t)c->intermediate,
                .H = (uint64_t)c->heads, .G = (uint64_t)c->kv_heads, .N = (uint64_t)c->head_dim,
                .qk = c->qk_norm, .variant = o->variant, .arch = o->arch, .rk = rk};
    s.C = (uint64_t)rl_mlp_chunk_rows((int64_t)s.R, o->mlp_rows);
    if (o->arch == RL_STUDENT_RWKV6)
        s.rk.iclr = s.rk.value = s.rk.gate = 0;
    else
        s.rk.shift = 0;
    const int rec = o->recompute == RL_RECOMPUTE_ON;
    const rl_wkv_dims wd = {o->micro_batch, o->seq_len, c->heads, c->head_dim, 0};
    const uint64_t ckpt = rl_wkv_checkpoint_floats(&wd, o->arch == RL_STUDENT_RWKV6 ? 6 : 7) * 4;
    const uint64_t RD = s.R * s.D;
    const elems v_first = {o->arch == RL_STUDENT_RWKV7 ? 2 * s.R * s.A : 0, 0};
    const elems tblock = block_saved(&s, s.C); /* a teacher keeps no layer's activations: its MLP in chunks */
    const elems teacher_layer = {s.R * s.D + tblock.a + attention_saved(&s).a, /* + x_out */
                                 tblock.f + attention_saved(&s).f};
    elems acts = {0, 0}, tacts = {0, 0};
    if (o->stage == RL_PLAN_ALIGN) {
        /* teacher: per time-mix layer u_ℓ (and y_T when it runs ahead), one layer's forward working set */
        add(&tacts, (elems){(uint64_t)mix * RD * (rec ? 1 : 2), 0});
        add(&tacts, teacher_layer);
        add(&tacts, (elems){0, s.T * s.N});
        /* student: dy per layer, the time-mix saved set of every layer (one with recompute) */
        /* dy per layer, y_s, du (RWKV6 only); row_losses, tokens */
        add(&acts, (elems){(uint64_t)mix * RD + (o->arch == RL_STUDENT_RWKV7 ? 1 : 2) * RD, 3 * s.R});
        add(&acts, times(tmix_saved(&s), rec ? 1 : (uint64_t)mix));
        add(&acts, tmix_scratch(&s));
        add(&acts, v_first);
        b[RL_ROLE_WKV_CKPT] = ckpt * (rec ? 1 : (uint64_t)mix);
    } else {
        const elems block = block_saved(&s, rec ? s.C : s.R);
        const elems mix_layer = {block.a + tmix_saved(&s).a, block.f + tmix_saved(&s).f};
        const elems att_layer = {block.a + attention_saved(&s).a, block.f + attention_saved(&s).f};
        if (rec) {
            add(&acts, (elems){(uint64_t)L * RD, 0}); /* layer boundaries */
            elems one = o->attention_layers ? bigger(mix_layer, att_layer, ab) : mix_layer;
            one.a -= RD; /* its x_in is the boundary */
            add(&acts, one);
        } else {
            add(&acts, times(mix_layer, (uint64_t)mix));
            add(&acts, times(att_layer, (uint64_t)o->attention_layers));
        }
        add(&acts, block_scratch(&s));
        add(&acts, o->attention_layers ? bigger(tmix_scratch(&s), attention_scratch(&s), ab) : tmix_scratch(&s));
        add(&acts, per_row(&s));
        add(&acts, v_first);
        b[RL_ROLE_WKV_CKPT] = ckpt * (rec ? 1 : (uint64_t)mix);
        const uint64_t rows = s.R < (uint64_t)o->chunk_rows ? s.R : (uint64_t)o->chunk_rows;
        b[RL_ROLE_LOGITS] = rows * (uint64_t)c->vocab * 4 * (o->stage == RL_PLAN_DISTILL ? 2 : 1);
        if (o->stage == RL_PLAN_DISTILL) {
            add(&tacts, teacher_layer);
            add(&tacts, (elems){RD, s.R}); /* its lnf, lnf_rstd */
        }
    }
    p->kernel_scratch_by = "";
    if (o->dtypes != RL_PLAN_FP32) /* the CPU backend takes none beside its BLAS and OpenMP buffers */
        p->kernel_scratch = kernel_scratch(&s, o, bf16_acc, &p->kernel_scratch_by);
    b[RL_ROLE_WORKSPACE] = fixed_workspace_bytes(o->dtypes, o->ranks) + p->kernel_scratch;
    b[RL_ROLE_ACTS] = bytes_of(acts, ab);
    b[RL_ROLE_TEACHER_ACTS] = bytes_of(tacts, ab);
    for (int r = 0; r < RL_ROLE_N; r++)
        p->total += b[r];
    p->fits = o->budget == 0 || p->total <= o->budget;
    return 0;
}

int rl_plan_compute(rl_plan *p, const rl_model_config *c, const rl_plan_opts *o, char *err, size_t errlen)
{
    int rc = check_opts(c, o, err, errlen);
    if (rc)
        return rc;
    rl_plan_opts t = *o;
    if (o->recompute == RL_RECOMPUTE_AUTO) {
        t.recompute = RL_RECOMPUTE_OFF;
        rc = compute_fixed(p, c, &t, err, errlen);
        if (rc || p->fits)
            return rc;
        t.recompute = RL_RECOMPUTE_ON;
    }
    return compute_fixed(p, c, &t, err, errlen);
}

static double gib(uint64_t b)
{
    return (double)b / (double)((uint64_t)1 << 30);
}

/* The two largest roles, "AdamW m 28.4 GiB, AdamW v 28.4 GiB". */
static void largest(const rl_plan *p, char *buf, size_t len)
{
    int first = -1, second = -1;
    for (int r = 0; r < RL_ROLE_N; r++) {
        if (first < 0 || p->bytes[r] > p->bytes[first])
            second = first, first = r;
        else if (second < 0 || p->bytes[r] > p->bytes[second])
            second = r;
    }
    snprintf(buf, len, "%s %.2f GiB, %s %.2f GiB", rl_plan_role_label((rl_plan_role)first, p->o.dtypes),
             gib(p->bytes[first]), rl_plan_role_label((rl_plan_role)second, p->o.dtypes), gib(p->bytes[second]));
}

#define MAX_RANKS 4096

static int fits_with(const rl_model_config *c, const rl_plan_opts *o, int *fits, char *err, size_t errlen)
{
    rl_plan q;
    int rc = rl_plan_compute(&q, c, o, err, errlen);
    *fits = !rc && q.fits;
    return rc;
}

/* The largest micro-batch below t's that fits (t->micro_batch set to it when *ok). */
static int search_micro(const rl_model_config *c, rl_plan_opts *t, int *ok, char *err, size_t errlen)
{
    const int from = t->micro_batch;
    int rc = 0;
    *ok = 0;
    for (int mb = from - 1; !rc && !*ok && mb >= 1; mb--) {
        t->micro_batch = mb;
        rc = fits_with(c, t, ok, err, errlen);
    }
    if (!*ok)
        t->micro_batch = from;
    return rc;
}

/* The fewest ranks above t's that fit with ZeRO-1. More ranks shrink only the sharded part, so whether it
 * fits is monotone in the ranks: bisect (ranks, MAX_RANKS]. */
static int search_ranks(const rl_model_config *c, rl_plan_opts *t, int *ok, char *err, size_t errlen)
{
    const rl_plan_opts from = *t;
    *ok = 0;
    if (t->ranks >= MAX_RANKS)
        return 0;
    t->zero = 1, t->ranks = MAX_RANKS;
    int rc = fits_with(c, t, ok, err, errlen);
    for (int lo = from.ranks, hi = MAX_RANKS; !rc && *ok && hi - lo > 1;) {
        int mid = lo + (hi - lo) / 2, mid_ok;
        t->ranks = mid;
        rc = fits_with(c, t, &mid_ok, err, errlen);
        if (mid_ok)
            hi = mid;
        else
            lo = mid;
        t->ranks = hi;
    }
    if (rc || !*ok)
        *t = from;
    return rc;
}

/* "--recompute on --zero 1 --micro-batch 3": the options that differ from `from` to `to`. */
static void describe(const rl_plan_opts *from, const rl_plan_opts *to, char *buf, size_t len)
{
    int n = 0;
    buf[0] = 0;
    if (to->recompute != from->recompute)
        n += snprintf(buf + n, len - (size_t)n, "%s--recompute on", n ? " " : "");
    if (to->zero != from->zero && (size_t)n < len)
        n += snprintf(buf + n, len - (size_t)n, "%s--zero 1", n ? " " : "");
    if (to->micro_batch != from->micro_batch && (size_t)n < len)
        n += snprintf(buf + n, len - (size_t)n, "%s--micro-batch %d", n ? " " : "", to->micro_batch);
    if (to->ranks != from->ranks && (size_t)n < len)
        snprintf(buf + n, len - (size_t)n, "%s--ranks %d", n ? " " : "", to->ranks);
}

int rl_plan_verdict(const rl_model_config *c, const rl_plan *p, char *buf, size_t len, char *err, size_t errlen)
{
    const rl_plan_opts *o = &p->o;
    if (p->fits) {
        if (o->budget)
            snprintf(buf, len, "fits (%.2f GiB free)", gib(o->budget - p->total));
        else
            snprintf(buf, len, "fits (no budget given)");
        return 0;
    }
    char why[256], fix[160];
    largest(p, why, sizeof why);
    const double over = gib(p->total - o->budget);
    int ok = 0, rc = 0;
    rl_plan_opts t = *o;
    /* one option, cheapest first (o->recompute is resolved: a plan asked for AUTO that did not fit is ON) */
    if (o->recompute == RL_RECOMPUTE_OFF) {
        t.recompute = RL_RECOMPUTE_ON;
        rc = fits_with(c, &t, &ok, err, errlen);
        if (!ok)
            t = *o;
    }
    if (!rc && !ok && !o->zero && o->ranks > 1) {
        t.zero = 1;
        rc = fits_with(c, &t, &ok, err, errlen);
        if (!ok)
            t = *o;
    }
    if (!rc && !ok)
        rc = search_micro(c, &t, &ok, err, errlen);
    if (!rc && !ok)
        rc = search_ranks(c, &t, &ok, err, errlen);
    /* else the memory-saving options together, then a smaller micro-batch or more ranks on top */
    if (!rc && !ok) {
        t.recompute = RL_RECOMPUTE_ON;
        if (o->ranks > 1)
            t.zero = 1;
        rc = fits_with(c, &t, &ok, err, errlen);
        if (!rc && !ok)
            rc = search_micro(c, &t, &ok, err, errlen);
        if (!rc && !ok)
            rc = search_ranks(c, &t, &ok, err, errlen);
        if (!rc && !ok) {
            t.micro_batch = 1;
            rc = search_ranks(c, &t, &ok, err, errlen);
        }
    }
    if (rc)
        return rc;
    if (ok) {
        describe(o, &t, fix, sizeof fix);
        snprintf(buf, len, "does not fit by %.2f GiB (largest: %s); fits with %s", over, why, fix);
        return 0;
    }
    /* what none of them shrinks: weights, grads, teacher, workspace and micro-batch-1 activations */
    t = *o;
    t.micro_batch = 1, t.zero = 1, t.ranks = MAX_RANKS, t.recompute = RL_RECOMPUTE_ON, t.budget = 0;
    rl_plan floor;
    rc = rl_plan_compute(&floor, c, &t, err, errlen);
    if (rc)
        return rc;
    snprintf(buf, len, "does not fit by %.2f GiB (largest: %s); no option makes it fit: even at micro-batch 1 "
             "with recompute and ZeRO-1 over %d ranks it needs %.2f GiB (the unsharded weights, grads and teacher "
             "would have to be sharded, FSDP-style, or the device larger)", over, why, MAX_RANKS, gib(floor.total));
    return 0;
}
