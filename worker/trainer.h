/* trainer.h — the RADLADS training stages (METHOD.md §3–4) in one process:
 *
 *   align    (step 1)  teacher-forced per-layer alignment of each student time-mix to the teacher's
 *                      attention output; only time-mix tensors train; loss mean over (layer, token) of
 *                      ‖y_T − y_S‖₂/√D (or the per-token MSE)
 *   distill  (step 2)  forward KL(teacher ‖ student) over the full vocabulary, every tensor trains;
 *                      kl_weight·KL + ce_weight·CE when a blend is asked for
 *   extend   (step 3)  next-token cross-entropy, no teacher; train=decay_shift is step 3a
 *   pretrain           next-token cross-entropy of a softmax-attention model (how tiny teachers are made)
 *
 * Optimizer: AdamW (β, eps, weight decay) over the trainable tensors, global-norm clip, the METHOD.md LR
 * schedule with two groups (tensors named *.self_attn.* follow lr2), gradient accumulation over
 * micro-batches, stopping by tokens, crash-safe checkpoints and bit-exact resume (CPU).
 *
 * Multi-rank: the data are sliced by the sampler's global index g = step·batch + rank·(batch/world) + j;
 * hooks.allreduce_sum sums gradients over ranks before the norm and the update, in fixed-size buckets
 * over the trainable gradients (grad_buckets.c: the same plan serves an MPI or a NCCL transport).
 * With opts.zero = 1 (ZeRO-1) the AdamW moments are sharded: the flat trainable space (the tensors end to
 * end, the space the buckets cut) is split into `world` contiguous shards balanced by floats; the buckets
 * are reduce-scattered so each rank gets the summed gradient of its shard, the clip norm is the sum of the
 * ranks' shard sums of squares, each rank updates its shard of the parameters with its own m and v, and
 * the parameters are all-gathered.  Checkpoints hold the whole state as before (rank 0 gathers the
 * moments), so a run resumes with zero on or off and on any number of ranks (zero.c).
 * Once per optimizer step the ranks also sum a few scalars (the loss, "this rank failed", and the
 * control requests hooks.control returned on rank 0), so every rank takes the same decision: stop,
 * drain or checkpoint now.  hooks.progress receives every optimizer step (rank 0). */
#ifndef RL_TRAINER_H
#define RL_TRAINER_H

#include <stdint.h>

#include "train.h"

typedef enum { RL_TRAIN_ALIGN, RL_TRAIN_DISTILL, RL_TRAIN_EXTEND, RL_TRAIN_PRETRAIN } rl_train_stage;

const char *rl_train_stage_name(rl_train_stage s);
int rl_train_stage_from_name(const char *s, rl_train_stage *out);

typedef struct {
    rl_train_stage stage;
    const char *teacher;  /* align, distill: the frozen softmax teacher folder */
    const char *student;  /* the model that trains (pretrain: a random teacher from `radlads init-model`) */
    const char *out;      /* final model folder; checkpoints under out/checkpoints, metrics in out/metrics.jsonl */
    const char *const *data;
    int n_data;
    int64_t tokens;       /* stop after this many tokens (rounded up to whole optimizer steps) */
    int seq_len, batch, micro_batch; /* batch is global (all ranks); micro_batch rows per forward */
    rl_lr_schedule lr;    /* lr2_* = time-mix group; total/warmup tokens are filled by the trainer */
    double beta1, beta2, eps, weight_decay, clip;
    double kl_weight, ce_weight; /* distill */
    int loss_mse;         /* align: MSE instead of the per-token L2/√D */
    int train_decay_shift; /* extend: only decay and token-shift tensors train (step 3a) */
    int64_t checkpoint_every; /* optimizer steps; 0 = only the final model */
    int keep_checkpoints;
    uint64_t seed;
    int resume;           /* continue from the newest valid checkpoint under out/checkpoints */
    int64_t stop_after;   /* > 0: return after this step as if the process had been killed (tests) */
    int log_every;        /* progress line every N steps (and the last) */
    int trace_samples;    /* metrics lines carry each step's token ids (reference tests) */
    /* validation: windows of seq_len tokens from the files in valid_list (comma-separated), or the last
     * valid_fraction of the data stream (then never sampled for training); at most valid_windows of them
     * (0 = 256), after every valid_every steps (0 = every checkpoint_every) and at the end */
    const char *valid_list;
    double valid_fraction;
    int valid_windows;
    int64_t valid_every;
    int threads, chunk_rows;
    int cuda, gpu;        /* cuda: the CUDA backend on device `gpu` (bf16-capable GEMMs, fp32 state); else CPU */
    int rank, world;
    size_t bucket_floats; /* all-reduce bucket size in floats (0 = RL_TRAIN_BUCKET_DEFAULT) */
    int zero;             /* 1: ZeRO-1, AdamW moments sharded over the ranks (world > 1; no-op on one) */
    int recompute;        /* 1: activation recomputation (layer inputs kept; gradients bit-identical to 0) */
    int mlp_rows;         /* the SwiGLU MLP's rows per pass where its activations are not kept for every layer
                           * (recompute, the teachers) and in its backward; 0 = RL_MLP_ROWS (model.h) */
    int overlap;          /* 1 (default): a gradient bucket's all-reduce starts during the last micro-batch's
                           * backward as soon as its layers are done (world > 1, zero off, hooks given) */
    int profile;          /* 1: every backend op timed (synchronously: slower) from the second step on;
                           * DIR/profile.tsv and the top ops in the log at the end */
    int bf16;             /* RL_PRECISION_*: 1 (bf16): GEMMs on bf16 operands with fp32 accumulation, fp32
                           * weights, optimizer state, norms, attention, recurrent state and losses; 2
                           * (bf16-weights): the same arithmetic, with the student matrices that train (their
                           * GEMM-only *_proj and lm_head weights) stored in bf16 with bf16 gradients, and
                           * their fp32 master weights beside the AdamW moments (sharded with zero=1) */
} rl_train_opts;

/* (the names "fp32", "bf16", "bf16-weights": rl_precision_from_name, proto/jobspec.h) */
enum { RL_PRECISION_FP32 = 0, RL_PRECISION_BF16 = 1, RL_PRECISION_BF16_WEIGHTS = 2 };

#define RL_TRAIN_BUCKET_DEFAULT ((size_t)1 << 20) /* 4 MiB of fp32 gradients per all-reduce */

/* Defaults of METHOD.md step 1 for everything not set on the command line. */
void rl_train_opts_defaults(rl_train_opts *o);

typedef struct {
    const char *stage;
    int64_t step, total_steps, tokens, total_tokens;
    double loss, lr, lr2, grad_norm, tokens_per_s, eta_s;
    int64_t mem_live_bytes, mem_peak_bytes; /* this rank's backend memory: held now, most held at once */
} rl_train_progress;

/* Requests a controller (the daemon) can make; hooks.control returns an OR of them. */
enum {
    RL_TRAIN_CTL_CHECKPOINT = 1, /* write a checkpoint after this step and go on */
    RL_TRAIN_CTL_DRAIN = 2,      /* write a checkpoint after this step, then stop */
    RL_TRAIN_CTL_STOP = 4,       /* stop at once: this step is not applied */
};

/* rl_train_run's return when it stopped because hooks.control asked it to (STOP or DRAIN). */
#define RL_TRAIN_ESTOPPED (-125)

typedef struct {
    void *ctx;
    /* sums n floats over all ranks in place (every rank calls it with the same n, in the same order);
     * 0 or a negative error with err filled.  Required when world > 1. */
    int (*allreduce_sum)(void *ctx, float *buf, size_t n, char *err, size_t errlen);
    /* ZeRO-1 (opts.zero, world > 1; all three required then).  counts has one entry per rank and the
     * ranks' pieces lie end to end in rank order, rank r's at offset counts[0] + … + counts[r-1].
     * reduce_scatter_sum: buf holds every piece; recv (not overlapping buf) receives this rank's piece
     *   summed over the ranks (MPI_Reduce_scatter; ncclReduce to each owner in one group).
     * allgather: in place; every rank's own piece of buf goes to all ranks (MPI_Allgatherv IN_PLACE;
     *   ncclBroadcast from each owner in one group).
     * gather: rank r's counts[r] floats at send land at its offset in recv on rank 0 (host memory:
     *   checkpoints only; recv is not used on other ranks). */
    int (*reduce_scatter_sum)(void *ctx, const float *buf, float *recv, const size_t *counts, char *err,
                              size_t errlen);
    int (*allgather)(void *ctx, float *buf, const size_t *counts, char *err, size_t errlen);
    /* Optional (both or neither), to overlap the gradient all-reduce with the backward: start sums n floats
     * in place over all ranks without waiting and returns a request id in *req; wait completes it (on a
     * device: the backend's stream waits, the host does not). Every rank starts the same sums in the same
     * order. */
    int (*allreduce_start)(void *ctx, float *buf, size_t n, int *req, char *err, size_t errlen);
    int (*allreduce_wait)(void *ctx, int req, char *err, size_t errlen);
    int (*gather)(void *ctx, const float *send, float *recv, const size_t *counts, char *err, size_t errlen);
    /* every rank, once the stage's backend exists, before any collective (NCCL binds to its stream);
     * NULL = nothing to do */
    int (*backend_ready)(void *ctx, rl_backend *be, char *err, size_t errlen);
    /* after every optimizer step (rank 0); must not block */
    void (*progress)(void *ctx, const rl_train_progress *p);
    /* after each checkpoint is committed (rank 0); info->sha256 is the manifest's */
    void (*checkpoint)(void *ctx, const rl_ckpt_info *info, const char *path);
    /* once per optimizer step on every rank, before the gradient all-reduce: pending RL_TRAIN_CTL_*
     * requests, consumed (only rank 0 normally has any); must not block */
    int (*control)(void *ctx);
    /* every line the trainer prints (rank 0), without the newline; level "info" or "warn" */
    void (*log)(void *ctx, const char *level, const char *text);
} rl_train_hooks;

/* Runs the stage to its token budget (or stop_after). 0, or a negative error with err saying what to fix
 * (RL_TRAIN_ESTOPPED when hooks.control stopped it); on error the last committed checkpoint is intact. */
int rl_train_run(const rl_train_opts *o, const rl_train_hooks *hooks, char *err, size_t errlen);

/* Writes an HF-style folder from a model or student folder: config.json, model.safetensors (fp32) and the
 * tokenizer files found in tokenizer_from (may be NULL) or in the source folder. */
int rl_export_model(const char *src, const char *out, const char *tokenizer_from, char *err, size_t errlen);

#endif
