/* The learning-rate schedule of METHOD.md; see train.h for the formulas. */
#include "train.h"

#include <math.h>

static double clamp01(double x)
{
    return x < 0 ? 0 : x > 1 ? 1 : x;
}

static double shape(rl_lr_kind kind, double init, double final, double q)
{
    switch (kind) {
    case RL_LR_COS: return final + (init - final) * cos(M_PI * q / 2);
    case RL_LR_LINEAR: return final + (init - final) * (1 - q);
    case RL_LR_FLAT:
    default: return init;
    }
}

void rl_lr_at(const rl_lr_schedule *s, int64_t step, int64_t tokens, double *lr, double *lr2)
{
    double span = (double)(s->total_tokens - s->warmup_tokens);
    double p = span > 0 ? clamp01((double)(tokens - s->warmup_tokens) / span) : 1;
    double width = s->lr_endpoint - s->lr_wait;
    double q = width > 0 ? clamp01((p - s->lr_wait) / width) : (p >= s->lr_endpoint);
    double warm = 1;
    if (s->warmup_steps > 0 && step < s->warmup_steps) warm = 0.01 + 0.99 * (double)step / (double)s->warmup_steps;
    *lr = warm * shape(s->kind, s->lr_init, s->lr_final, q);
    if (lr2) *lr2 = warm * shape(s->kind, s->lr2_init, s->lr2_final, q);
}
