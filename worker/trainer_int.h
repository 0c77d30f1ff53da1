/* trainer_int.h — shared between the trainer's own files; not for other modules. */
#ifndef RL_TRAINER_INT_H
#define RL_TRAINER_INT_H

#include "student.h"
#include "trainer.h"

/* One trainable tensor: parameter, gradient, and its slice of the AdamW moments. */
typedef struct {
    const char *name;
    float *param, *grad;
    const rl_arena_entry *entry;
    size_t count, moment_offset;
    int group; /* 0 main LR, 1 lr2 (time-mix: names containing ".self_attn.") */
} rl__tensor;

/* The gradient all-reduce plan (grad_buckets.c): the trainable gradients, end to end, cut into consecutive
 * buckets of bucket_floats.  A bucket inside one run of adjacent tensors is one span, reduced in place; a
 * bucket holding pieces of several runs is packed into `staging` (device memory), reduced, unpacked. */
typedef struct {
    float *ptr;
    size_t n;
} rl__span;

typedef struct {
    int first, count; /* spans[first .. first+count) */
    size_t floats;
} rl__bucket;

typedef struct {
    rl__span *spans;
    int n_spans;
    rl__bucket *buckets;
    int n_buckets, n_packed; /* n_packed: buckets of several spans (through staging) */
    float *staging;
    size_t bucket_floats, total;
} rl__grad_buckets;

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
    size_t opt_n;
    /* scratch: v_first's gradient, align outputs/gradients, du of the aligned layers */
    float *dv_first, *v_first, *y_s, *dy, *du, *row_losses, *blend_h, *blend_w;
    int micro;         /* rows of one forward = micro_batch sequences */
    rl__grad_buckets buckets;
} rl__trainer;

/* grad_buckets.c: plans the buckets over t->t (call after the trainable tensors are known). */
int rl__buckets_plan(rl__trainer *t, size_t bucket_floats, char *err, size_t errlen);
/* Sums every trainable gradient over the ranks through hooks->allreduce_sum, bucket by bucket. */
int rl__buckets_allreduce(rl__trainer *t, const rl_train_hooks *hooks, char *err, size_t errlen);
void rl__buckets_free(rl__trainer *t);

/* Prepares activations (with backward) for micro × seq on every model of the stage. */
int rl__stage_prepare(rl__trainer *t, char *err, size_t errlen);
void rl__stage_release(rl__trainer *t);
/* Forward + backward of one micro-batch (tokens: micro × (seq+1) ids): gradients ACCUMULATE, the micro
 * batch's mean loss goes to *loss. */
int rl__stage_micro_step(rl__trainer *t, const int32_t *tokens, double *loss, char *err, size_t errlen);

#endif
