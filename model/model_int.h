/* model_int.h — shared between the model's own files; not for other modules. */
#ifndef RL_MODEL_INT_H
#define RL_MODEL_INT_H

#include "model.h"

int rl__bind_params(const rl_arena *a, const rl_model_config *c, rl_model_params *p);
/* The same, taking tensors missing from a from the frozen bf16 table f16 over b16 (rl_model_load_ex). */
int rl__bind_params2(const rl_arena *a, const rl_arena *f16, uint16_t *b16, const rl_model_config *c,
                     rl_model_params *p);

/* A model whose parameters for which bf16(ctx, name) is 1 (GEMM-only matrices only) live in bf16 alone, in
 * m->frozen / m->frozen16 (registered with rl_backend_weights_bf16); the rest fp32 in m->params. trains: they get
 * bf16 gradients in a backward (m->bf16_trains). Zeroed. */
int rl__model_create_split(rl_model **out, rl_backend *be, const rl_model_config *cfg,
                           int (*bf16)(void *ctx, const char *name), void *ctx, int trains, char *err, size_t errlen);
/* Every tensor of m, fp32 and bf16 tables alike: count, and entry i (*bf16 set for the bf16 table's). */
int rl__model_n_tensors(const rl_model *m);
const rl_arena_entry *rl__model_tensor(const rl_model *m, int i, int *bf16);
/* Tensor i's values: upload from host fp32 (a bf16 one rounded as rl_cast rounds), or fetch into host fp32 (a
 * bf16 one through m->save_fetch when set, else widened). */
int rl__model_tensor_upload(rl_model *m, int i, const float *host, char *err, size_t errlen);
int rl__model_tensor_fetch(const rl_model *m, int i, float *host, char *err, size_t errlen);

#endif
