/* optim.c — AdamW over the whole parameter arena with global-norm clipping.
 * Parameters, gradients and both moments share one layout, so the update is a
 * single op over the arena's float range. */
#include <math.h>
#include <stdio.h>

#include "model.h"

int rl_model_adamw_step(rl_model *m, float *opt_m, float *opt_v, const rl_adamw_params *hp, float clip,
                        double *grad_norm, char *err, size_t errlen)
{
    if (!m->grads.base || m->grads.total != m->params.total) {
        snprintf(err, errlen, "adamw: no gradients (prepare the model with backward=1)");
        return RL_EINVAL;
    }
    double ss = 0;
    rl_sum_squares(m->be, &ss, m->grads.base, m->grads.total);
    double norm = sqrt(ss);
    *grad_norm = norm;
    if (!isfinite(norm)) {
        snprintf(err, errlen, "adamw: gradient norm is %g; refusing to update (lower the learning rate?)", norm);
        return RL_ERANGE;
    }
    float scale = (clip > 0 && norm > clip) ? (float)(clip / norm) : 1.0f;
    rl_adamw_update(m->be, m->params.base, m->grads.base, opt_m, opt_v, m->params.total, hp, scale);
    return rl_backend_status(m->be, err, errlen);
}
