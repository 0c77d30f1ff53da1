/* model_int.h — shared between the model's own files; not for other modules. */
#ifndef RL_MODEL_INT_H
#define RL_MODEL_INT_H

#include "model.h"

int rl__bind_params(const rl_arena *a, const rl_model_config *c, rl_model_params *p);
/* The same, taking tensors missing from a from the frozen bf16 table f16 over b16 (rl_model_load_ex). */
int rl__bind_params2(const rl_arena *a, const rl_arena *f16, uint16_t *b16, const rl_model_config *c,
                     rl_model_params *p);

#endif
