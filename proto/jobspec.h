/* jobspec: the job specification — parse (YAML or JSON, which is YAML), apply the recipe defaults of
 * METHOD.md, validate, and write the canonical JSON that travels in SubmitRequest and is stored.
 *
 * Every error names the field and the problem: "stages[1].seq_len: must be a positive multiple of 16,
 * got 500".  Unknown fields are errors.  Relative paths resolve against base_dir (the submitter's cwd). */
#ifndef RL_JOBSPEC_H
#define RL_JOBSPEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum rl_stage_kind {
    RL_STAGE_PRETRAIN, /* train a softmax teacher from random init (demos, tests) */
    RL_STAGE_TRANSFER, /* build the student: copy attention weights, init new parameters */
    RL_STAGE_ALIGN,    /* step 1: per-layer attention-output alignment */
    RL_STAGE_DISTILL,  /* step 2 (and 2a): forward KL on the teacher's logits */
    RL_STAGE_EXTEND,   /* step 3: cross-entropy at long context, no teacher */
    RL_STAGE_EXPORT,   /* write the HF-style folder */
    RL_STAGE__COUNT
} rl_stage_kind;

typedef enum rl_schedule { RL_SCHED_COS, RL_SCHED_LINEAR, RL_SCHED_FLAT } rl_schedule;
typedef enum rl_align_loss { RL_LOSS_L2, RL_LOSS_MSE } rl_align_loss;
typedef enum rl_train_set { RL_TRAIN_ALL, RL_TRAIN_DECAY_SHIFT } rl_train_set; /* 3a: decay + tokenshift */

typedef struct rl_stage_spec {
    rl_stage_kind kind;
    int64_t tokens;          /* stop after this many tokens (0 for transfer/export) */
    int seq_len, batch, micro_batch;
    double lr_init, lr_final;
    double lr2_init, lr2_final; /* second group: time-mix (".self_attn.") parameters */
    double lr_wait, lr_endpoint;
    rl_schedule schedule;
    int warmup;              /* optimizer steps */
    int checkpoint_every;    /* optimizer steps */
    int keep_checkpoints;    /* keep the last N */
    double clip;             /* global grad-norm clip; 0 = off */
    double kl_weight, ce_weight;
    rl_align_loss loss;      /* align only */
    rl_train_set train;      /* extend: all, or decay_shift (step 3a) */
    uint64_t seed;
    int zero;                /* 1: ZeRO-1, optimizer state sharded over the ranks; 0: every rank keeps all */
    int recompute;           /* 1: activation recomputation (layer inputs kept, layers rerun in the backward) */
    int mlp_rows;            /* the MLP's rows per pass when not kept for every layer (0: RL_MLP_ROWS, 4096) */
    int profile;             /* 1: every backend op timed from the second step on (profile.tsv in the stage dir) */
    int bf16;                /* precision: 0 fp32; 1 bf16 = GEMMs on bf16 operands, fp32 accumulation and
                              * weights; 2 bf16-weights = bf16 also stores the trainable matrices and their
                              * gradients, with fp32 master weights */
} rl_stage_spec;

typedef enum rl_arch { RL_ARCH_RWKV7, RL_ARCH_RWKV6 } rl_arch;
typedef enum rl_device { RL_DEVICE_CPU, RL_DEVICE_CUDA } rl_device;

typedef struct rl_job_spec {
    char *name;
    char *teacher;           /* absolute path of the teacher folder */
    rl_arch arch;
    char variant;            /* 'a' or 'b' for rad-rwkv7, 0 for rad-rwkv6 */
    int keep_attention_layers;
    char **train_files;
    size_t n_train;
    char **valid_files;
    size_t n_valid;
    rl_stage_spec *stages;
    size_t n_stages;
    int ranks;
    rl_device device;
    char *pool;              /* pool name; "" = any / the local launcher */
    char *output;            /* absolute output folder */
    int max_restarts;
    int priority;
} rl_job_spec;

enum { RL_SPEC_CHECK_PATHS = 1 }; /* flags */

/* Parses text (YAML or JSON), fills defaults, validates.  0, or -1 with err set; *spec is then freed. */
int rl_jobspec_parse(rl_job_spec *spec, const char *text, size_t len, const char *base_dir, int flags,
                     char *err, size_t errlen);
void rl_jobspec_free(rl_job_spec *spec);
/* YAML text -> JSON text (malloc'd), so a client can merge command-line overrides before parsing. */
char *rl_yaml_to_json(const char *text, size_t len, char *err, size_t errlen);

/* Canonical JSON (every field explicit; compact).  malloc'd; NULL on out of memory. */
char *rl_jobspec_to_json(const rl_job_spec *spec);
/* One stage's resolved options as JSON (what a worker receives).  malloc'd. */
char *rl_jobspec_stage_json(const rl_job_spec *spec, size_t idx);

const char *rl_stage_kind_name(rl_stage_kind k);
/* A stage's precision by name: "fp32" 0, "bf16" 1, "bf16-weights" 2 (the worker's RL_PRECISION_*); -1 for another
 * string. */
int rl_precision_from_name(const char *s);
const char *rl_arch_name(rl_arch a);
/* Parses "100M", "1.5B", "2048": a positive count.  0 or -1 (err: what is wrong). */
int rl_parse_count(const char *s, int64_t *out, char *err, size_t errlen);
/* Human form of a token count: 100M, 1.5B, 2048. */
void rl_format_count(int64_t n, char *buf, size_t len);
/* Human form of a memory size in binary units, three significant digits: 812 B, 1.50 MiB, 12.3 GiB. */
void rl_format_bytes(int64_t n, char *buf, size_t len);

#endif
