/* generate.h — autoregressive inference for one sequence, for teachers and students alike.
 *
 * A teacher keeps a KV cache: for every layer, k (after q/k-norm and RoPE) and v of every
 * position fed so far, [max_pos, kv_heads, head_dim] each; a new token's queries attend to the
 * cached rows up to their own position, so a step costs O(pos) and the cache grows by
 * 2·layers·kv_heads·head_dim floats per token. A RADLADS student keeps its recurrent state
 * (rl_student_state: a head_dim² wkv state per head and layer, a KV cache only for a hybrid's
 * softmax-attention layers): a step costs the same at every position.
 *
 * Tokens are fed in pieces: a prompt in parallel (in chunks of prefill_chunk tokens, so the
 * activations stay bounded at long contexts), then one token at a time. Whatever the pieces,
 * the logits of position t equal those of the full forward over tokens 0..t. */
#ifndef RL_GENERATE_H
#define RL_GENERATE_H

#include <stdint.h>

#include "model.h"

typedef struct rl_gen rl_gen;

/* dir: a teacher folder (config.json + safetensors) or a RADLADS student folder. max_pos: the
 * most positions the sequence may reach; prefill_chunk: tokens per parallel forward (>= 1). */
int rl_gen_open(rl_gen **out, rl_backend *be, const char *dir, int max_pos, int prefill_chunk, char *err,
                size_t errlen);
void rl_gen_close(rl_gen *g);
const rl_model_config *rl_gen_config(const rl_gen *g);
/* "teacher" or the student's architecture name ("rad-rwkv7", "rad-rwkv6") */
const char *rl_gen_kind(const rl_gen *g);
int rl_gen_is_student(const rl_gen *g);
int rl_gen_pos(const rl_gen *g);     /* tokens fed so far */
int rl_gen_max_pos(const rl_gen *g);
/* Bytes of cache / recurrent state holding the current position's context (not the capacity). */
double rl_gen_state_bytes(const rl_gen *g);
/* Back to position 0 (an empty cache, a zero state). */
int rl_gen_reset(rl_gen *g, char *err, size_t errlen);

/* Feeds n tokens after those already fed. logits (host, may be NULL) receives the logits of the
 * last token [vocab], or with all_rows of each of the n tokens [n, vocab]. Ids outside the
 * vocabulary and positions past max_pos are errors. */
int rl_gen_feed(rl_gen *g, const int32_t *tokens, int n, float *logits, int all_rows, char *err, size_t errlen);

/* ---- sampling --------------------------------------------------------------------
 * temperature 0 = greedy (the largest logit, the lowest id on ties). Otherwise
 * p_i ∝ exp(logit_i / temperature), restricted to the top_k most likely ids (0 = all), then
 * to the smallest set of most likely ids whose probability reaches top_p (1 = all), as in
 * HuggingFace's TopK → TopP warpers; ties are ordered by id, so a seed fixes the result. */
typedef struct {
    double temperature; /* >= 0 */
    int top_k;          /* >= 0 */
    double top_p;       /* (0, 1] */
} rl_sample_params;

/* Draws one id from logits [vocab] with the generator state *rng (splitmix64; advanced). */
int rl_gen_sample(rl_gen *g, const float *logits, const rl_sample_params *p, uint64_t *rng);

#endif
