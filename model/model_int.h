/* model_int.h — shared between the model's own files; not for other modules. */
#ifndef RL_MODEL_INT_H
#define RL_MODEL_INT_H

#include "model.h"

int rl__bind_params(const rl_arena *a, const rl_model_config *c, rl_model_params *p);

#endif
