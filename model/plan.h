/* plan.h — device memory per rank of each RADLADS training stage, from the size tables the arenas use.
 *
 * Only the teacher's config.json is needed: the parameter tables are rl_model_param_table (teacher, and
 * the student's inherited tensors) and rl_student_param_table (the new time-mix tensors), counted without
 * allocating; which of them train is rl_tensor_trains, the rule the trainer applies; the wkv checkpoint
 * size is rl_wkv_checkpoint_floats. Activations are derived tensor by tensor from what the forward saves
 * for the backward (model/teacher.c rl_model_prepare, model/student_rwkv7.c rl_tmix_acts_alloc,
 * worker/stage_step.c), scaled to micro_batch × seq_len rows; see plan.c for the list.
 *
 * Roles, per rank (the layout a backend with one arena per role allocates):
 *   weights          every student tensor, in the weight dtype (bf16, or fp32 on the CPU policy)
 *   grads            trainable tensors only, in the weight dtype
 *   master           fp32 copy of the trainable tensors (bf16 policy only)        } ÷ ranks with ZeRO-1
 *   adam_m, adam_v   fp32 AdamW moments of the trainable tensors                  }
 *   teacher          frozen teacher weights: align all but lm_head, distill all, extend none
 *   activations      the student's saved activations, one layer's backward scratch, v_first, per-row buffers
 *   teacher_acts     align: the teacher's per-layer attention inputs (and outputs without recompute) plus
 *                    one layer's forward working set; distill: one layer's forward working set + final norm
 *   wkv_ckpt         fp32 wkv state checkpoints, batch·heads·ceil(T/16)·N² per time-mix layer (RAD-RWKV7 also
 *                    every token's sa, batch·T·heads·N)
 *                    (one layer's with recompute)
 *   logits           fp32 logits row chunks, chunk_rows × vocab (distill: student and teacher; extend: one)
 *   gemm_copies      AUTOCAST only: bf16 copies of every student weight (and in distill of a tied teacher's
 *                    fp32 part, whose embedding is its LM head)
 *   workspace        a fixed allowance, stated in rl_plan_workspace_note, and the stage's kernel scratch: the
 *                    largest scratch request of the CUDA kernels its step runs (kernels/scratch.h, the sizes
 *                    the launchers ask for)
 * With recompute only each layer's input (the layer boundary) is kept and a layer's saved set exists for one
 * layer at a time during the backward. */
#ifndef RL_PLAN_H
#define RL_PLAN_H

#include <stdint.h>

#include "model.h"
#include "student.h"

typedef enum { RL_PLAN_ALIGN, RL_PLAN_DISTILL, RL_PLAN_EXTEND } rl_plan_stage;
/* BF16: bf16 weights, grads and activations, fp32 master weights, AdamW moments, statistics, wkv state and
 * logits (the target layout of the CUDA backend). FP32: everything fp32, no master copy (the CPU backend).
 * AUTOCAST: what the trainer does today with `precision: bf16` on a GPU: fp32 student weights (they are the
 * master copy), grads and activations, bf16 copies of the student's weights for the GEMMs, and the frozen
 * teacher's matrices in bf16 only (its embedding and vectors fp32). */
/* BF16_WEIGHTS: `precision: bf16-weights`: autocast's layout, but the student's trainable GEMM-only matrices in
 * bf16 alone with bf16 gradients (no fp32 copy, no GEMM copy) and fp32 master weights beside the moments
 * (indexed as the moments: one float per trainable parameter of the shard). */
typedef enum { RL_PLAN_BF16, RL_PLAN_FP32, RL_PLAN_AUTOCAST, RL_PLAN_BF16_WEIGHTS } rl_plan_dtypes;
typedef enum { RL_RECOMPUTE_AUTO = -1, RL_RECOMPUTE_OFF = 0, RL_RECOMPUTE_ON = 1 } rl_plan_recompute;

typedef enum {
    RL_ROLE_WEIGHTS,
    RL_ROLE_GRADS,
    RL_ROLE_MASTER,
    RL_ROLE_ADAM_M,
    RL_ROLE_ADAM_V,
    RL_ROLE_TEACHER,
    RL_ROLE_ACTS,
    RL_ROLE_TEACHER_ACTS,
    RL_ROLE_WKV_CKPT,
    RL_ROLE_LOGITS,
    RL_ROLE_GEMM_COPIES, /* AUTOCAST: bf16 copies of the weights the GEMMs read */
    RL_ROLE_WORKSPACE,
    RL_ROLE_N
} rl_plan_role;

typedef struct {
    rl_student_arch arch;
    int variant;          /* RAD-RWKV7: 'a' or 'b' */
    int attention_layers; /* hybrid: the last N layers keep softmax attention */
    rl_plan_stage stage;
    int train_decay_shift; /* extend: step 3a, only decay and token-shift tensors train */
    int ranks, zero;       /* zero = 1: ZeRO-1, master weights and moments sharded over the ranks */
    int micro_batch, seq_len, chunk_rows;
    int mlp_rows; /* the MLP's row chunk (0: RL_MLP_ROWS, as the trainer's default) */
    rl_plan_dtypes dtypes;
    rl_plan_recompute recompute; /* AUTO: off when that fits budget, else on */
    uint64_t budget;             /* bytes per rank (0 = unknown: fits is then 1) */
} rl_plan_opts;

typedef struct {
    rl_plan_opts o; /* as computed; recompute resolved to OFF or ON */
    int64_t teacher_params, student_params, trainable_params, teacher_resident_params;
    uint64_t bytes[RL_ROLE_N];
    /* of the workspace: the CUDA backend's kernel scratch in this stage (the largest request of its kernels,
     * scratch.h), and what asks for it ("" on the CPU policy) */
    uint64_t kernel_scratch;
    const char *kernel_scratch_by;
    uint64_t total;
    int fits; /* total <= budget */
} rl_plan;

/* The METHOD.md recipe for a stage: seq 512 (extend 16384), micro-batch 4 / 12 / 2, chunk rows 512, ZeRO-1,
 * one rank, bf16 policy, recompute auto, RAD-RWKV7 variant b. */
void rl_plan_opts_defaults(rl_plan_opts *o, rl_plan_stage stage);
const char *rl_plan_stage_name(rl_plan_stage s);   /* "align", "distill", "extend" */
const char *rl_plan_role_key(rl_plan_role r);      /* JSON key, e.g. "adam_m" */
const char *rl_plan_role_label(rl_plan_role r, rl_plan_dtypes d);
/* "bf16", "fp32", "autocast", "bf16-weights" (the --dtype names); from_name: -1 for another string; what: the
 * layout in words */
const char *rl_plan_dtypes_name(rl_plan_dtypes d);
int rl_plan_dtypes_from_name(const char *s);
const char *rl_plan_dtypes_what(rl_plan_dtypes d); /* e.g. "student weights (bf16)" */
/* What the workspace of rl_plan_compute holds, in words (beside each stage's kernel_scratch). */
const char *rl_plan_workspace_note(rl_plan_dtypes d, int ranks);

int rl_plan_compute(rl_plan *p, const rl_model_config *teacher, const rl_plan_opts *o, char *err, size_t errlen);

/* One sentence for a plan: "fits (12.3 GiB free)", or how far it is over and the one change that makes it
 * fit (--recompute on, --zero 1, a smaller --micro-batch, more --ranks), or that none does. */
int rl_plan_verdict(const rl_model_config *teacher, const rl_plan *p, char *buf, size_t len, char *err,
                    size_t errlen);

#endif
