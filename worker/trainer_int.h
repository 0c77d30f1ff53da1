/* trainer_int.h — shared between the trainer's own files; not for other modules. */
#ifndef RL_TRAINER_INT_H
#define RL_TRAINER_INT_H

#include "student.h"
#include "trainer.h"

/* One trainable tensor: parameter, gradient, and its slice of the AdamW moments (and of the master weights). */
typedef struct {
    const char *name;
    float *param, *grad; /* bf16: they address bf16 data (rl_bf16_as_f32ptr): offset them with rl__at only */
    const rl_arena_entry *entry;
    size_t count, moment_offset;
    int group; /* 0 main LR, 1 lr2 (time-mix: names containing ".self_attn.") */
    int bf16;  /* precision bf16-weights: bf16 weights and gradient; its fp32 master is t->opt_w[moment offsets] */
} rl__tensor;

/* Element k of a tensor's (or span's) parameters or gradients, bf16 or fp32. */
static inline void *rl__at(const void *p, int bf16, size_t k) { return (char *)(uintptr_t)p + k * (bf16 ? 2 : 4); }

/* The gradient all-reduce plan (grad_buckets.c): the trainable gradients, end to end, cut into consecutive
 * buckets of bucket_floats.  A bucket inside one run of adjacent tensors is one span, reduced in place; a
 * bucket holding pieces of several runs is packed into `staging` (device memory), reduced, unpacked. */
typedef struct {
    void *ptr;   /* gradients */
    void *param; /* the parameters at the same place (same arena layout): ZeRO-1 all-gathers them */
    size_t n;
    int bf16;    /* both are bf16 (precision bf16-weights): they travel as fp32 through the staging buffers */
} rl__span;

typedef struct {
    int first, count; /* spans[first .. first+count) */
    int packed;       /* through staging: several spans, or a bf16 one (the collectives sum fp32) */
    size_t floats;
    int ready;        /* overlap: the backward event after which every gradient in it is final */
    size_t stage_off; /* overlap, packed buckets: its own place in `ostaging` */
    int req;          /* overlap: the started all-reduce */
} rl__bucket;

typedef struct {
    rl__span *spans;
    int n_spans;
    rl__bucket *buckets;
    int n_buckets, n_packed; /* n_packed: buckets of several spans (through staging) */
    float *staging;
    size_t bucket_floats, total;
    /* overlap (rl__buckets_overlap_plan): the buckets in start order (by ready event, then index), how many
     * of them have started this step and how many of those during the backward, and one staging place per
     * packed bucket (several are in flight at once); `early` counts the ones started before the backward's
     * last gradients were done (the overlap) */
    int *order, next, early;
    float *ostaging;
} rl__grad_buckets;

/* ZeRO-1 (zero.c).  Flat offsets count the trainable floats in t[] order (a tensor's is its
 * moment_offset); this rank owns [begin, end) of them and keeps AdamW moments for those only:
 * opt_m[0 .. end-begin).  Unsharded (zero off, or one rank) it owns everything: begin 0, end total. */
typedef struct {
    int on;            /* opts.zero and world > 1 */
    size_t begin, end; /* this rank's shard */
    size_t *bounds;    /* world+1: rank r owns [bounds[r], bounds[r+1]) */
    size_t *counts;    /* n_buckets × world: floats of bucket k in rank r's shard */
    size_t *scratch;   /* world counts for one collective */
    float *recv;       /* this rank's reduced piece of one bucket (backend memory) */
} rl__zero;

typedef struct {
    const rl_train_opts *o;
    rl_backend *be;
    rl_student *s;     /* align, distill, extend */
    rl_model *m;       /* the model that trains: s->base, or the pretrained softmax model */
    rl_model *teacher; /* align, distill: frozen */
    rl_arena tgrads;   /* gradients of s->tparams (same layout) */
    rl_tmix_params *tg; /* per time-mix layer: pointers into m->grads / tgrads */
    rl__tensor *t;
    int n_t;
    float *opt_m, *opt_v;
    float *opt_w;      /* precision bf16-weights: the fp32 master weights of the owned shard (moment indexing) */
    char src_dir[4096]; /* the model folder the weights came from last (student, or the last checkpoint written):
                         * bf16-weights reads the fp32 values of the frozen bf16 matrices from it to save them */
    size_t opt_n;      /* floats in each moment buffer: the owned shard (all trainable floats unsharded) */
    rl__zero zero;
    /* scratch: v_first's gradient, align outputs/gradients, du of the aligned layers */
    float *dv_first, *v_first, *y_s, *dy, *du, *row_losses, *blend_h;
    int micro;         /* rows of one forward = micro_batch sequences */
    rl_mixer mixer;    /* the student's time-mix with its backward, as m's sequence mixer */
    const rl_train_hooks *hooks;
    int64_t step;      /* the optimizer step being computed */
    int fail_backward; /* tests (RADLADS_TEST_POISON=backward:…): this step's last backward fails half-way */
    int fail_pack;     /* tests (RADLADS_TEST_POISON=pack:…): this step's overlapped buckets fail to pack */
    char ov_err[256];  /* a failed all-reduce start during the backward */
    rl__grad_buckets buckets;
} rl__trainer;

/* trainer.c: whether tensor `name` trains in this stage (METHOD.md §3; rl_tensor_trains). */
int rl__trainable(const rl__trainer *t, const char *name);

/* zero.c: Σg² of every trainable gradient (owned: this rank's shard of it), sq[i] for tensor i, one device
 * wait (rl_sum_squares_many); NULL with err filled on failure; free() it. */
double *rl__grad_sq(rl__trainer *t, int owned, char *err, size_t errlen);

/* grad_buckets.c: n floats between bucket bk's spans, from bucket offset off on, and buf (backend memory):
 * into the spans when to_spans, else out of them; of the parameters when param, else of the gradients. A bf16
 * span is cast (exactly, when it is widened). */
int rl__span_copy(rl__trainer *t, const rl__bucket *bk, size_t off, float *buf, size_t n, int to_spans, int param);
/* grad_buckets.c: plans the buckets over t->t (call after the trainable tensors are known). */
int rl__buckets_plan(rl__trainer *t, size_t bucket_floats, char *err, size_t errlen);
/* Sums every trainable gradient over the ranks through hooks->allreduce_sum, bucket by bucket. */
int rl__buckets_allreduce(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen);
void rl__buckets_free(rl__trainer *t);
/* Overlap of the all-reduce with the backward (hooks.allreduce_start/wait): the plan (after rl__buckets_plan);
 * begin (before the last micro-batch's backward); event (from the model's grads_ready: starts every bucket
 * whose gradients are final); finish (starts the rest, in the same order on every rank whatever happened in
 * its backward, then waits for all and unpacks). */
int rl__buckets_overlap_plan(rl__trainer *t, char *err, size_t errlen);
void rl__buckets_begin(rl__trainer *t);
int rl__buckets_event(rl__trainer *t, const rl_train_hooks *hooks, int event, char *err, size_t errlen);
int rl__buckets_finish(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen);

/* The part of tensor x this rank owns: n floats from x's element *first (0 and *first 0 when none).
 * Its moments are at opt_m + moment_offset + *first - zero.begin. */
static inline size_t rl__owned(const rl__trainer *t, const rl__tensor *x, size_t *first)
{
    size_t lo = x->moment_offset > t->zero.begin ? x->moment_offset : t->zero.begin;
    size_t end = x->moment_offset + x->count, hi = end < t->zero.end ? end : t->zero.end;
    *first = hi > lo ? lo - x->moment_offset : 0;
    return hi > lo ? hi - lo : 0;
}

/* zero.c.  shard: this rank's range (every rank's bounds; unsharded when !on), before the moments are
 * allocated; plan: the per-bucket counts (after rl__buckets_plan).  Each step: reduce_scatter instead
 * of the all-reduce, norm_sq for the clip norm, allgather of the parameters after the update. */
int rl__zero_shard(rl__trainer *t, size_t total, char *err, size_t errlen);
int rl__zero_plan(rl__trainer *t, char *err, size_t errlen);
int rl__zero_reduce_scatter(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen);
/* Σ g² over every trainable gradient: the ranks' shard sums, added in rank order (the same on every rank). */
int rl__zero_norm_sq(rl__trainer *t, const rl_train_hooks *hooks, double *ss, char *err, size_t errlen);
int rl__zero_allgather(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen);
/* The first tensor (t[] order) with a non-finite gradient in any rank's shard: its index or -1. */
int rl__zero_first_nonfinite(rl__trainer *t, const rl_train_hooks *hooks, int *index, char *err, size_t errlen);
/* Tensor x's moments (from `moments`, one of opt_m/opt_v) whole on rank 0 in h (x->count floats);
 * send: host scratch of the largest owned piece.  Every rank calls it for the same tensors in order. */
int rl__zero_gather_tensor(rl__trainer *t, const rl_train_hooks *hooks, const float *moments, const rl__tensor *x,
                           float *send, float *h, char *err, size_t errlen);
void rl__zero_free(rl__trainer *t);

/* Prepares activations (with backward) for micro × seq on every model of the stage. */
int rl__stage_prepare(rl__trainer *t, char *err, size_t errlen);
void rl__stage_release(rl__trainer *t);
/* Forward + backward of one micro-batch (tokens: micro × (seq+1) ids): gradients ACCUMULATE, the micro
 * batch's mean loss goes to *loss. */
int rl__stage_micro_step(rl__trainer *t, const int32_t *tokens, double *loss, char *err, size_t errlen);

#endif
