/* cpu_loss.c — fused log-softmax losses over the vocabulary (CE, KL) and the
 * hidden-state losses of RADLADS step 1 (per-token L2, MSE). */
#include <math.h>

#include "cpu_int.h"

/* log Σ exp(x) over n values, max-shifted; the sum is kept in double because a
 * vocabulary row has up to ~10^5 terms. */
static double logsumexp(const float *x, int n)
{
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        m = x[i] > m ? x[i] : m;
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += exp((double)(x[i] - m));
    return (double)m + log(s);
}

/* loss_r = lse(z_r) − z_r[y_r];  dz_r = (softmax(z_r) − onehot(y_r)) · grad_scale */
int rl__cpu_cross_entropy(rl_backend *be, float *losses, float *dlogits, const float *logits,
                          const int32_t *targets, int rows, int vocab, float grad_scale)
{
    for (int r = 0; r < rows; r++)
        if (targets[r] < -1 || targets[r] >= vocab)
            return rl__fail(be, RL_ERANGE, "rl_cross_entropy: target %d at row %d is outside [0, %d) (-1 = ignore)",
                            targets[r], r, vocab);
#pragma omp parallel for
    for (int r = 0; r < rows; r++) {
        const float *z = logits + (size_t)r * vocab;
        float *dz = dlogits ? dlogits + (size_t)r * vocab : NULL;
        int y = targets[r];
        if (y < 0) {
            losses[r] = 0.0f;
            if (dz)
                for (int i = 0; i < vocab; i++)
                    dz[i] = 0.0f;
            continue;
        }
        /* one pass of expf (vectorised through libmvec: -fno-math-errno) into dz, summed in
         * float blocks of 1024 that are added in double */
        const float zy = z[y]; /* read before dz (which may alias z) is written */
        float m = -INFINITY;
        for (int i = 0; i < vocab; i++)
            m = z[i] > m ? z[i] : m;
        double s = 0.0;
        for (int i0 = 0; i0 < vocab; i0 += 1024) {
            int i1 = i0 + 1024 < vocab ? i0 + 1024 : vocab;
            float part = 0.0f;
            if (dz) {
#pragma omp simd reduction(+ : part)
                for (int i = i0; i < i1; i++) {
                    float e = expf(z[i] - m);
                    dz[i] = e;
                    part += e;
                }
            } else {
#pragma omp simd reduction(+ : part)
                for (int i = i0; i < i1; i++)
                    part += expf(z[i] - m);
            }
            s += part;
        }
        double lse = (double)m + log(s);
        losses[r] = (float)(lse - (double)zy);
        if (dz) {
            const float c = (float)(1.0 / s) * grad_scale;
            for (int i = 0; i < vocab; i++)
                dz[i] *= c;
            dz[y] -= grad_scale;
        }
    }
    return 0;
}

/* KL(p_T‖p_S) = Σ p_T (log p_T − log p_S);  dz_S = (p_S − p_T) · grad_scale */
int rl__cpu_kl_divergence(rl_backend *be, float *losses, float *dlogits, const float *s, const float *t, int rows,
                          int vocab, float grad_scale)
{
    (void)be;
#pragma omp parallel for
    for (int r = 0; r < rows; r++) {
        const float *zs = s + (size_t)r * vocab, *zt = t + (size_t)r * vocab;
        double lse_s = logsumexp(zs, vocab), lse_t = logsumexp(zt, vocab);
        double kl = 0.0;
        for (int i = 0; i < vocab; i++) {
            double lpt = (double)zt[i] - lse_t, lps = (double)zs[i] - lse_s;
            kl += exp(lpt) * (lpt - lps);
        }
        losses[r] = (float)kl;
        if (dlogits) {
            float *dz = dlogits + (size_t)r * vocab;
            for (int i = 0; i < vocab; i++) /* dz may alias zs: read before write */
                dz[i] = (float)(exp((double)zs[i] - lse_s) - exp((double)zt[i] - lse_t)) * grad_scale;
        }
    }
    return 0;
}

/* loss_r = ‖a_r − b_r‖ / √D */
int rl__cpu_l2_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim)
{
    (void)be;
#pragma omp parallel for if ((long long)rows * dim > 16384)
    for (int r = 0; r < rows; r++) {
        const float *x = a + (size_t)r * dim, *y = b + (size_t)r * dim;
        double ss = 0.0;
        for (int j = 0; j < dim; j++)
            ss += (double)(x[j] - y[j]) * (double)(x[j] - y[j]);
        losses[r] = (float)sqrt(ss / (double)dim);
    }
    return 0;
}

/* d loss_r / d a_r = (a_r − b_r) / (‖a_r − b_r‖ √D) = (a_r − b_r) / (loss_r · D) */
int rl__cpu_l2_backward(rl_backend *be, float *da, const float *a, const float *b, const float *losses,
                        float grad_scale, int rows, int dim)
{
    (void)be;
#pragma omp parallel for if ((long long)rows * dim > 16384)
    for (int r = 0; r < rows; r++) {
        if (losses[r] == 0.0f) /* the norm's subgradient at 0 */
            continue;
        float c = grad_scale / (losses[r] * (float)dim);
        const float *x = a + (size_t)r * dim, *y = b + (size_t)r * dim;
        float *d = da + (size_t)r * dim;
        for (int j = 0; j < dim; j++)
            d[j] += c * (x[j] - y[j]);
    }
    return 0;
}

int rl__cpu_mse_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim)
{
    (void)be;
#pragma omp parallel for if ((long long)rows * dim > 16384)
    for (int r = 0; r < rows; r++) {
        const float *x = a + (size_t)r * dim, *y = b + (size_t)r * dim;
        double ss = 0.0;
        for (int j = 0; j < dim; j++)
            ss += (double)(x[j] - y[j]) * (double)(x[j] - y[j]);
        losses[r] = (float)(ss / (double)dim);
    }
    return 0;
}

int rl__cpu_mse_backward(rl_backend *be, float *da, const float *a, const float *b, float grad_scale, int rows,
                         int dim)
{
    (void)be;
    const float c = 2.0f * grad_scale / (float)dim;
#pragma omp parallel for if ((long long)rows * dim > 16384)
    for (int r = 0; r < rows; r++) {
        const float *x = a + (size_t)r * dim, *y = b + (size_t)r * dim;
        float *d = da + (size_t)r * dim;
        for (int j = 0; j < dim; j++)
            d[j] += c * (x[j] - y[j]);
    }
    return 0;
}
