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
} rl__trainer;

/* Prepares activations (with backward) for micro × seq on every model of the stage. */
int rl__stage_prepare(rl__trainer *t, char *err, size_t errlen);
void rl__stage_release(rl__trainer *t);
/* Forward + backward of one micro-batch (tokens: micro × (seq+1) ids): gradients ACCUMULATE, the micro
 * batch's mean loss goes to *loss. */
int rl__stage_micro_step(rl__trainer *t, const int32_t *tokens, double *loss, char *err, size_t errlen);

#endif
