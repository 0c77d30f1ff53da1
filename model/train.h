/* train.h — what every training stage shares, independent of the model: the learning-rate schedule of
 * METHOD.md, the deterministic rank-sliced sampler over token files, SHA-256, and crash-safe checkpoint
 * folders with a verified manifest.  Prefixes: rl_lr_, rl_sampler_, rl_sha256_, rl_ckpt_. */
#ifndef RL_TRAIN_H
#define RL_TRAIN_H

#include <stddef.h>
#include <stdint.h>

/* ---- learning rate (METHOD.md "Shared optimizer and schedule") --------------------------------
 *   p = clamp((tokens − warmup_tokens) / (total_tokens − warmup_tokens))      progress
 *   q = clamp((p − lr_wait) / (lr_endpoint − lr_wait))                          schedule position
 *   cos:    lr = f + (i − f)·cos(πq/2)     (a quarter cosine, not 0.5(1 + cos πq))
 *   linear: lr = f + (i − f)·(1 − q)
 *   flat:   lr = i
 *   warmup: for step < warmup_steps, lr ×= 0.01 + 0.99·step/warmup_steps
 * Both groups (main, and lr2 for time-mix parameters) follow the same p, q and kind. */
typedef enum { RL_LR_COS = 0, RL_LR_LINEAR = 1, RL_LR_FLAT = 2 } rl_lr_kind;

typedef struct {
    rl_lr_kind kind;
    double lr_init, lr_final, lr2_init, lr2_final;
    double lr_wait, lr_endpoint; /* in [0,1], wait < endpoint */
    int64_t warmup_steps;
    int64_t warmup_tokens, total_tokens;
} rl_lr_schedule;

/* lr and lr2 for the optimizer step `step` (0-based) taken after `tokens` tokens. */
void rl_lr_at(const rl_lr_schedule *s, int64_t step, int64_t tokens, double *lr, double *lr2);

/* ---- sampler ------------------------------------------------------------------------------------
 * The token files form one stream of n_tokens.  It is cut into slots of ctx tokens; sample g (global
 * index over all ranks: g = step·global_batch + rank·local_batch + j) reads ctx+1 contiguous tokens at
 * slot  (factor · (g+1)³) mod P,  P the largest prime ≤ n_slots with P ≡ 2 (mod 3) so that x ↦ x³ is a
 * bijection mod P: the first P samples visit P distinct slots, in a scattered order, across document
 * boundaries (as the reference's "magic_prime" sampler).  Resuming needs only g. */
typedef struct rl_sampler rl_sampler;

int rl_sampler_open(rl_sampler **out, const char *const *files, int n_files, int ctx, char *err, size_t errlen);
void rl_sampler_close(rl_sampler *s);
uint64_t rl_sampler_n_tokens(const rl_sampler *s);
uint64_t rl_sampler_prime(const rl_sampler *s);
/* Token offset in the stream of sample g. */
uint64_t rl_sampler_offset(const rl_sampler *s, uint64_t g);
/* Writes ctx+1 tokens of sample g into out (int32). */
int rl_sampler_read(const rl_sampler *s, uint64_t g, int32_t *out, char *err, size_t errlen);
/* Samples come only from the first n_tokens of the stream (the rest is a held-out validation tail);
 * the slots and the prime are those of the shorter stream.  -1 with err when too few remain. */
int rl_sampler_limit(rl_sampler *s, uint64_t n_tokens, char *err, size_t errlen);
/* All tokens of the files, limited or not (rl_sampler_n_tokens is the sampled part). */
uint64_t rl_sampler_stream_tokens(const rl_sampler *s);
/* n tokens at stream position pos (anywhere in the stream, the held-out tail included). */
int rl_sampler_read_at(const rl_sampler *s, uint64_t pos, size_t n, int32_t *out, char *err, size_t errlen);
/* The largest vocabulary size a token file records (0: none records one, as binidx); its index to *file. */
uint32_t rl_sampler_vocab_size(const rl_sampler *s, int *file);
/* Largest prime p ≤ n with p ≡ 2 (mod 3); 0 when there is none (n < 2). */
uint64_t rl_magic_prime(uint64_t n);

/* ---- SHA-256 (FIPS 180-4) ---------------------------------------------------------------------- */
typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    size_t fill;
} rl_sha256;

void rl_sha256_init(rl_sha256 *c);
void rl_sha256_update(rl_sha256 *c, const void *data, size_t n);
void rl_sha256_final(rl_sha256 *c, uint8_t digest[32]);
/* Hex digest of a file (65 bytes with NUL). 0 or -1 with err. */
int rl_sha256_file(const char *path, char hex[65], uint64_t *size, char *err, size_t errlen);

/* ---- checkpoints ------------------------------------------------------------------------------
 * DIR/step-00000120/ holds the stage's files (weights, optimizer state, ...) and manifest.json:
 *   {"format": "radlads-checkpoint", "version": 1, "stage": ..., "step": ..., "tokens": ...,
 *    "sample": <next global sample index>, "rng": "<hex u64>", "created_at_ms": ...,
 *    "files": {"model.safetensors": {"bytes": N, "sha256": "..."}, ...}}
 * Writing: rl_ckpt_begin gives an empty DIR/step-N.tmp/ to fill; rl_ckpt_commit hashes every file,
 * writes the manifest, fsyncs files and folders and renames the folder into place.  A crash at any
 * moment leaves either no checkpoint or a complete one; readers verify every file's size and hash. */
typedef struct {
    char stage[32];
    int64_t step, tokens;
    uint64_t sample, rng;
    int64_t created_at_ms;
    char sha256[65]; /* of manifest.json itself: what the daemon records */
} rl_ckpt_info;

/* Creates DIR (and parents) and an empty DIR/step-N.tmp; its path goes to tmp. */
int rl_ckpt_begin(const char *dir, int64_t step, char *tmp, size_t tmplen, char *err, size_t errlen);
/* Seals the tmp folder as DIR/step-N; final path to out (may be NULL). */
int rl_ckpt_commit(const char *tmp, const rl_ckpt_info *info, char *out, size_t outlen, rl_ckpt_info *written,
                   char *err, size_t errlen);
/* Reads and verifies a checkpoint folder (every file's size and SHA-256). */
int rl_ckpt_verify(const char *path, rl_ckpt_info *info, char *err, size_t errlen);
/* The newest checkpoint in DIR that verifies; damaged ones are skipped (and named in skipped, if any).
 * 0 found, 1 none, -1 error. */
int rl_ckpt_latest(const char *dir, char *path, size_t pathlen, rl_ckpt_info *info, char *skipped, size_t skiplen,
                   char *err, size_t errlen);
/* Removes all but the newest keep checkpoints, and leftover *.tmp folders.  Returns how many were removed. */
int rl_ckpt_gc(const char *dir, int keep, char *err, size_t errlen);

#endif
