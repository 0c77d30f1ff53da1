/* cpu_layers.c — embedding, RMSNorm, RoPE and SwiGLU, forward and backward. */
#include <math.h>

#include "cpu_int.h"

#define PAR_MIN 16384

/* ---- embedding ------------------------------------------------------------ */

static int check_ids(rl_backend *be, const char *op, const int32_t *ids, int rows, int vocab)
{
    for (int r = 0; r < rows; r++)
        if (ids[r] < 0 || ids[r] >= vocab)
            return rl__fail(be, RL_ERANGE, "%s: token id %d at position %d is outside the vocabulary [0, %d)", op,
                            ids[r], r, vocab);
    return 0;
}

int rl__cpu_embedding_forward(rl_backend *be, float *out, const int32_t *ids, const float *table, int rows,
                              int vocab, int dim)
{
    int rc = check_ids(be, "rl_embedding_forward", ids, rows, vocab);
    if (rc)
        return rc;
#pragma omp parallel for if ((long long)rows * dim > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *src = table + (size_t)ids[r] * dim;
        float *dst = out + (size_t)r * dim;
        for (int j = 0; j < dim; j++)
            dst[j] = src[j];
    }
    return 0;
}

/* dtable[ids[r]] += dout[r]. Repeated ids collide, so threads split the columns,
 * not the rows. */
int rl__cpu_embedding_backward(rl_backend *be, float *dtable, const float *dout, const int32_t *ids, int rows,
                               int vocab, int dim)
{
    int rc = check_ids(be, "rl_embedding_backward", ids, rows, vocab);
    if (rc)
        return rc;
    const int block = 64;
    int nblocks = (dim + block - 1) / block;
#pragma omp parallel for if ((long long)rows * dim > PAR_MIN)
    for (int bi = 0; bi < nblocks; bi++) {
        int j0 = bi * block, j1 = j0 + block < dim ? j0 + block : dim;
        for (int r = 0; r < rows; r++) {
            float *dst = dtable + (size_t)ids[r] * dim;
            const float *src = dout + (size_t)r * dim;
            for (int j = j0; j < j1; j++)
                dst[j] += src[j];
        }
    }
    return 0;
}

/* ---- RMSNorm ---------------------------------------------------------------
 * y = w ⊙ x·r,  r = (mean(x²) + eps)^(-1/2)
 * dx = r·(w ⊙ dy) − (r³/D)·x·Σ_j w_j dy_j x_j,   dw += Σ_rows dy ⊙ x·r */

int rl__cpu_rmsnorm_forward(rl_backend *be, float *out, float *rstd, const float *in, const float *w, int rows,
                            int dim, float eps)
{
    (void)be;
#pragma omp parallel for if ((long long)rows * dim > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * dim;
        float *y = out + (size_t)r * dim;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (int j = 0; j < dim; j++)
            ss += x[j] * x[j];
        float rs = 1.0f / sqrtf(ss / (float)dim + eps);
        rstd[r] = rs;
        for (int j = 0; j < dim; j++)
            y[j] = x[j] * rs * w[j];
    }
    return 0;
}

int rl__cpu_rmsnorm_backward(rl_backend *be, float *din, float *dw, const float *dout, const float *in,
                             const float *w, const float *rstd, int rows, int dim)
{
    (void)be;
    const int par = (long long)rows * dim > PAR_MIN;
#pragma omp parallel for if (par)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * dim, *dy = dout + (size_t)r * dim;
        float *dx = din + (size_t)r * dim;
        float rs = rstd[r];
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = 0; j < dim; j++)
            dot += w[j] * dy[j] * x[j];
        float c = rs * rs * rs * dot / (float)dim;
        for (int j = 0; j < dim; j++)
            dx[j] += rs * w[j] * dy[j] - c * x[j];
    }
    const int block = 64;
    int nblocks = dw ? (dim + block - 1) / block : 0; /* (dw NULL: a frozen weight) */
#pragma omp parallel for if (par)
    for (int bi = 0; bi < nblocks; bi++) {
        int j0 = bi * block, j1 = j0 + block < dim ? j0 + block : dim;
        float acc[64] = {0};
        for (int r = 0; r < rows; r++) {
            const float *x = in + (size_t)r * dim, *dy = dout + (size_t)r * dim;
            float rs = rstd[r];
            for (int j = j0; j < j1; j++)
                acc[j - j0] += dy[j] * x[j] * rs;
        }
        for (int j = j0; j < j1; j++)
            dw[j] += acc[j - j0];
    }
    return 0;
}

/* ---- RoPE (rotate-half) ------------------------------------------------------
 * forward: (x1, x2) -> (x1 c − x2 s, x2 c + x1 s); inverse (= transpose, used for
 * the backward): (d1, d2) -> (d1 c + d2 s, d2 c − d1 s). */

int rl__cpu_rope(rl_backend *be, float *x, const float *cos_t, const float *sin_t, int batch, int seq, int heads,
                 int head_dim, int inverse)
{
    (void)be;
    const int half = head_dim / 2;
    const float sgn = inverse ? -1.0f : 1.0f;
    const long long rows = (long long)batch * seq;
#pragma omp parallel for if (rows * heads * head_dim > PAR_MIN)
    for (long long bt = 0; bt < rows; bt++) {
        int t = (int)(bt % seq);
        const float *c = cos_t + (size_t)t * half, *s = sin_t + (size_t)t * half;
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)bt * heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], si = sgn * s[i];
                v[i] = a * c[i] - b * si;
                v[i + half] = b * c[i] + a * si;
            }
        }
    }
    return 0;
}

/* ---- SwiGLU ----------------------------------------------------------------
 * out = silu(g)·u,  silu(g) = g σ(g),  silu'(g) = σ(g)(1 + g(1 − σ(g))) */

int rl__cpu_swiglu_forward(rl_backend *be, float *out, const float *gate, const float *up, size_t n)
{
    (void)be;
    long long nn = (long long)n;
#pragma omp parallel for simd if (nn > PAR_MIN)
    for (long long i = 0; i < nn; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
    return 0;
}

int rl__cpu_swiglu_backward(rl_backend *be, float *dgate, float *dup, const float *dout, const float *gate,
                            const float *up, size_t n)
{
    (void)be;
    long long nn = (long long)n;
#pragma omp parallel for simd if (nn > PAR_MIN)
    for (long long i = 0; i < nn; i++) {
        float g = gate[i];
        float sg = 1.0f / (1.0f + expf(-g));
        float silu = g * sg;
        dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] += dout[i] * silu;
    }
    return 0;
}
