/* loss.c — vocabulary losses fused with the LM head, chunked over rows.
 *
 * For rows [r0, r0+n): z = h[r0:r0+n]·Wᵀ (n×V, the only logits that exist), the
 * fused log-softmax op turns z in place into ∂L/∂z, then
 *   dh[r0:r0+n] = ∂L/∂z · W   and   dW += (∂L/∂z)ᵀ · h[r0:r0+n].
 * Mean over counted rows: CE counts rows whose target is not −1; KL counts all. */
#include "model.h"

static int count_targets(rl_backend *be, const int32_t *targets, int rows, int *n_valid)
{
    /* targets live on the device; count on the host (rows is at most batch·seq) */
    int32_t buf[1024];
    *n_valid = 0;
    for (int r0 = 0; r0 < rows; r0 += 1024) {
        int n = rows - r0 < 1024 ? rows - r0 : 1024;
        int rc = rl_download(be, buf, targets + r0, sizeof(int32_t) * (size_t)n);
        if (rc)
            return rc;
        for (int i = 0; i < n; i++)
            *n_valid += buf[i] >= 0;
    }
    return 0;
}

static int chunk_backward(rl_backend *be, const rl_lm_head *h, int r0, int n, const float *dz)
{
    int rc = 0;
    rl_gemm gx = {.M = n, .N = h->dim, .K = h->vocab, .alpha = 1.0f, .beta = 0.0f};
    rc |= rl_matmul(be, &gx, h->dhidden + (size_t)r0 * h->dim, dz, h->weight, NULL);
    if (h->dweight) {
        rl_gemm gw = {.M = h->vocab, .N = h->dim, .K = n, .trans_a = 1, .alpha = 1.0f, .beta = 1.0f};
        rc |= rl_matmul(be, &gw, h->dweight, dz, h->hidden + (size_t)r0 * h->dim, NULL);
    }
    return rc;
}

int rl_lm_head_cross_entropy(rl_backend *be, const rl_lm_head *h, const int32_t *targets, double *mean_loss)
{
    int n_valid;
    int rc = count_targets(be, targets, h->rows, &n_valid);
    if (rc)
        return rc;
    const float scale = n_valid ? (h->grad_weight != 0.0f ? h->grad_weight : 1.0f) / (float)n_valid : 0.0f;
    for (int r0 = 0; r0 < h->rows && !rc; r0 += h->chunk_rows) {
        int n = h->rows - r0 < h->chunk_rows ? h->rows - r0 : h->chunk_rows;
        rc |= rl_linear_forward(be, h->logits_buf, h->hidden + (size_t)r0 * h->dim, h->weight, NULL, n, h->dim,
                                h->vocab);
        rc |= rl_cross_entropy(be, h->row_losses + r0, h->dhidden ? h->logits_buf : NULL, h->logits_buf,
                               targets + r0, n, h->vocab, scale);
        if (h->dhidden)
            rc |= chunk_backward(be, h, r0, n, h->logits_buf);
    }
    double sum = 0;
    rc |= rl_sum(be, &sum, h->row_losses, (size_t)h->rows);
    *mean_loss = n_valid ? sum / n_valid : 0.0;
    return rc;
}

int rl_lm_head_kl(rl_backend *be, const rl_lm_head *s, const float *teacher_hidden, const float *teacher_weight,
                  float *teacher_buf, double *mean_loss)
{
    int rc = 0;
    const float scale = (s->grad_weight != 0.0f ? s->grad_weight : 1.0f) / (float)s->rows;
    for (int r0 = 0; r0 < s->rows && !rc; r0 += s->chunk_rows) {
        int n = s->rows - r0 < s->chunk_rows ? s->rows - r0 : s->chunk_rows;
        rc |= rl_linear_forward(be, s->logits_buf, s->hidden + (size_t)r0 * s->dim, s->weight, NULL, n, s->dim,
                                s->vocab);
        rc |= rl_linear_forward(be, teacher_buf, teacher_hidden + (size_t)r0 * s->dim, teacher_weight, NULL, n,
                                s->dim, s->vocab);
        rc |= rl_kl_divergence(be, s->row_losses + r0, s->dhidden ? s->logits_buf : NULL, s->logits_buf,
                               teacher_buf, n, s->vocab, scale);
        if (s->dhidden)
            rc |= chunk_backward(be, s, r0, n, s->logits_buf);
    }
    double sum = 0;
    rc |= rl_sum(be, &sum, s->row_losses, (size_t)s->rows);
    *mean_loss = sum / s->rows;
    return rc;
}
