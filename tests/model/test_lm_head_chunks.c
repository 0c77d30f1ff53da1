/* test_lm_head_chunks.c — the chunked LM-head cross-entropy and KL equal the
 * unchunked float64 math (loss, ∂hidden, ∂W) for every chunk size, with a logits
 * buffer of exactly chunk_rows × vocab floats (ASan catches any overrun). */
#include <string.h>

#include "../kernels/check.h"
#include "model.h"

enum { R = 13, D = 8, V = 37 };

static void reference(const float *h, const float *w, const float *ht, const float *wt, const int32_t *y, int kl,
                      double *loss, double *dh, double *dw)
{
    double z[V], zt[V], p[V], pt[V];
    int n = 0;
    for (int r = 0; r < R; r++)
        n += kl || y[r] >= 0;
    *loss = 0;
    memset(dh, 0, sizeof(double) * R * D);
    memset(dw, 0, sizeof(double) * V * D);
    for (int r = 0; r < R; r++) {
        if (!kl && y[r] < 0)
            continue;
        double m = -INFINITY, mt = -INFINITY, s = 0, st = 0;
        for (int v = 0; v < V; v++) {
            z[v] = zt[v] = 0;
            for (int k = 0; k < D; k++) {
                z[v] += (double)h[r * D + k] * w[v * D + k];
                if (kl)
                    zt[v] += (double)ht[r * D + k] * wt[v * D + k];
            }
            m = fmax(m, z[v]), mt = fmax(mt, zt[v]);
        }
        for (int v = 0; v < V; v++)
            s += exp(z[v] - m), st += exp(zt[v] - mt);
        for (int v = 0; v < V; v++) {
            p[v] = exp(z[v] - m) / s;
            pt[v] = exp(zt[v] - mt) / st;
        }
        if (kl) {
            for (int v = 0; v < V; v++)
                *loss += pt[v] * (log(pt[v]) - log(p[v])) / n;
        } else {
            *loss += (m + log(s) - z[y[r]]) / n;
        }
        for (int v = 0; v < V; v++) {
            double dz = (p[v] - (kl ? pt[v] : (v == y[r]))) / n;
            for (int k = 0; k < D; k++) {
                dh[r * D + k] += dz * w[v * D + k];
                dw[v * D + k] += dz * h[r * D + k];
            }
        }
    }
}

int main(void)
{
    rl_backend *be;
    char err[256];
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    if (rl_backend_create(&be, &bo, err, sizeof err))
        return 1;
    float h[R * D], w[V * D], ht[R * D], wt[V * D], dh[R * D], dw[V * D], losses[R], zero[V * D] = {0};
    int32_t y[R];
    fill(h, R * D, 1), fill(w, V * D, 1), fill(ht, R * D, 1), fill(wt, V * D, 1);
    for (int r = 0; r < R; r++)
        y[r] = (int32_t)((r * 11 + 3) % V);
    y[4] = -1;
    double lref, dhref[R * D], dwref[V * D];
    const int chunks[] = {R, 1, 4, 5, 12};
    for (int kl = 0; kl < 2; kl++) {
        reference(h, w, ht, wt, y, kl, &lref, dhref, dwref);
        printf("%s (reference loss %.9f)\n", kl ? "KL(teacher || student)" : "cross-entropy", lref);
        for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++) {
            int C = chunks[ci];
            float *buf = malloc(sizeof(float) * (size_t)C * V), *tbuf = malloc(sizeof(float) * (size_t)C * V);
            memset(dw, 0, sizeof dw);
            rl_lm_head lm = {.rows = R, .dim = D, .vocab = V, .chunk_rows = C, .hidden = h, .weight = w,
                             .dhidden = dh, .dweight = dw, .logits_buf = buf, .row_losses = losses};
            double loss = 0;
            if (kl)
                rl_lm_head_kl(be, &lm, ht, wt, tbuf, &loss);
            else
                rl_lm_head_cross_entropy(be, &lm, y, &loss);
            char name[80];
            float lf = (float)loss;
            snprintf(name, sizeof name, "chunk_rows=%d mean loss", C);
            check_close(name, &lf, &lref, 1, 1e-6, 1e-6);
            snprintf(name, sizeof name, "chunk_rows=%d d hidden", C);
            check_close(name, dh, dhref, R * D, 1e-7, 1e-5);
            snprintf(name, sizeof name, "chunk_rows=%d d lm_head", C);
            check_grad(name, dw, zero, dwref, V * D, 1e-7, 1e-5);
            free(buf), free(tbuf);
        }
    }
    if (rl_backend_status(be, err, sizeof err)) {
        printf("backend error: %s\n", err);
        check_failures++;
    }
    rl_backend_destroy(be);
    printf("%s: %d failure(s)\n", check_failures ? "FAIL" : "PASS", check_failures);
    return check_failures ? 1 : 0;
}
