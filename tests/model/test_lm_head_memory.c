/* test_lm_head_memory.c — at full scale (vocab 152064 × 512 rows, the Qwen2
 * vocabulary at seq 512) the chunked LM-head cross-entropy and KL, forward and
 * backward, never hold more than the caller's chunk of fp32 logits: the process's
 * peak resident memory grows by less than one chunk while they run, against
 * 311 MB for the full logits matrix. A few rows are checked against float64. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/check.h"
#include "model.h"

enum { ROWS = 512, DIM = 48, VOCAB = 152064, CHUNK = 32 };

/* VmRSS or VmHWM of this process in bytes, from /proc/self/status; −1 if absent. */
static long long status_bytes(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') kb = atoll(line + n + 1);
    if (f) fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* Resets VmHWM to the current RSS (Linux ≥ 4.0); 0 on success. */
static int reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return -1;
    int ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* float64 logits of one row: z_v = Σ_k h_k W_vk */
static void row_logits(const float *h, const float *w, double *z)
{
    for (int v = 0; v < VOCAB; v++) {
        double acc = 0;
        for (int k = 0; k < DIM; k++)
            acc += (double)h[k] * w[(size_t)v * DIM + k];
        z[v] = acc;
    }
}

static double row_lse(const double *z)
{
    double m = -INFINITY, s = 0;
    for (int v = 0; v < VOCAB; v++)
        m = fmax(m, z[v]);
    for (int v = 0; v < VOCAB; v++)
        s += exp(z[v] - m);
    return m + log(s);
}

/* Runs CE (kl = 0) or KL (kl = 1) with backward over `rows` rows and reports the
 * growth of peak RSS over the RSS before the call. */
static int run_loss(rl_backend *be, int kl, int rows, const rl_lm_head *base, const int32_t *targets,
                    const float *ht, const float *wt, float *tbuf, double *loss, long long *growth)
{
    rl_lm_head lm = *base;
    lm.rows = rows;
    int have_reset = reset_peak_rss() == 0;
    long long before = status_bytes(have_reset ? "VmRSS" : "VmHWM");
    int rc =
        kl ? rl_lm_head_kl(be, &lm, ht, wt, tbuf, loss) : rl_lm_head_cross_entropy(be, &lm, targets, loss);
    *growth = status_bytes("VmHWM") - before;
    return rc;
}

int main(void)
{
    rl_backend *be;
    char err[256];
    rl_backend_options bo = {.kind = RL_BACKEND_CPU, .num_threads = 2};
    if (rl_backend_create(&be, &bo, err, sizeof err)) {
        printf("backend: %s\n", err);
        return 1;
    }
    const size_t nw = (size_t)VOCAB * DIM, nh = (size_t)ROWS * DIM,
                 chunk_bytes = sizeof(float) * CHUNK * VOCAB;
    const double full_bytes = 4.0 * ROWS * VOCAB;
    float *h = malloc(4 * nh), *ht = malloc(4 * nh), *dh = malloc(4 * nh), *losses = malloc(4 * ROWS);
    float *w = malloc(4 * nw), *wt = malloc(4 * nw), *dw = calloc(nw, 4);
    float *buf = malloc(chunk_bytes), *tbuf = malloc(chunk_bytes);
    int32_t *y = malloc(sizeof(int32_t) * ROWS);
    double *z = malloc(sizeof(double) * VOCAB), *zt = malloc(sizeof(double) * VOCAB);
    if (!h || !ht || !dh || !losses || !w || !wt || !dw || !buf || !tbuf || !y || !z || !zt) {
        printf("cannot allocate the test's inputs\n");
        return 1;
    }
    /* logits of spread ~3 so the softmax is far from uniform; every buffer is
     * written here so its pages are resident before any measurement */
    fill(h, nh, 1), fill(ht, nh, 1), fill(w, nw, 0.6f), fill(wt, nw, 0.6f);
    memset(buf, 0, chunk_bytes), memset(tbuf, 0, chunk_bytes), memset(dh, 0, 4 * nh);
    for (int r = 0; r < ROWS; r++)
        y[r] = r % 97 == 96 ? -1 : (int32_t)(((unsigned)r * 2654435761u) % VOCAB);
    rl_lm_head lm = {.rows = ROWS,
                     .dim = DIM,
                     .vocab = VOCAB,
                     .chunk_rows = CHUNK,
                     .hidden = h,
                     .weight = w,
                     .dhidden = dh,
                     .dweight = dw,
                     .logits_buf = buf,
                     .row_losses = losses};
    printf("vocab %d x %d rows, hidden %d, chunk %d rows: one chunk of logits %.1f MB, full logits %.1f MB\n",
           VOCAB, ROWS, DIM, CHUNK, chunk_bytes / 1e6, full_bytes / 1e6);

    /* the measurement itself must see a transient buffer of two chunks */
    {
        int have_reset = reset_peak_rss() == 0;
        long long before = status_bytes(have_reset ? "VmRSS" : "VmHWM");
        volatile char *probe = malloc(2 * chunk_bytes);
        for (size_t i = 0; probe && i < 2 * chunk_bytes; i += 4096)
            probe[i] = 1;
        free((void *)probe);
        long long seen = status_bytes("VmHWM") - before;
        int ok = before > 0 && seen >= (long long)(2 * chunk_bytes) * 9 / 10;
        printf("  peak RSS probe: a transient %.1f MB buffer shows as %.1f MB (%s) %s\n",
               2 * chunk_bytes / 1e6, seen / 1e6,
               have_reset ? "VmHWM reset through clear_refs" : "VmHWM not resettable", ok ? "ok" : "FAIL");
        check_failures += !ok;
    }
    /* one chunk first, so OpenBLAS's and OpenMP's own buffers are already resident */
    double loss, mean_ce, mean_kl;
    long long growth;
    int rc = run_loss(be, 0, CHUNK, &lm, y, ht, wt, tbuf, &loss, &growth);
    rc |= run_loss(be, 1, CHUNK, &lm, y, ht, wt, tbuf, &loss, &growth);
    const int kinds[] = {0, 1};
    for (int i = 0; i < 2; i++) {
        const int kl = kinds[i];
        memset(dw, 0, 4 * nw);
        rc |= run_loss(be, kl, ROWS, &lm, y, ht, wt, tbuf, kl ? &mean_kl : &mean_ce, &growth);
        int ok = growth >= 0 && (double)growth < (double)chunk_bytes;
        printf("  %-36s peak RSS growth %7.1f MB (bound: one chunk %.1f MB; full logits %.1f MB) %s\n",
               kl ? "KL(teacher || student) + backward" : "cross-entropy + backward", growth / 1e6,
               chunk_bytes / 1e6, full_bytes / 1e6, ok ? "ok" : "FAIL");
        check_failures += !ok;

        /* float64 recomputation of a few rows: loss and d hidden */
        int n_counted = 0;
        for (int r = 0; r < ROWS; r++)
            n_counted += kl || y[r] >= 0;
        const int check_rows[] = {0, 1, 96, 255, 511};
        for (size_t ci = 0; ci < sizeof check_rows / sizeof check_rows[0]; ci++) {
            const int r = check_rows[ci];
            row_logits(h + (size_t)r * DIM, w, z);
            const double lse = row_lse(z);
            double ref_loss = 0, dref[DIM] = {0};
            if (kl) {
                row_logits(ht + (size_t)r * DIM, wt, zt);
                const double lse_t = row_lse(zt);
                for (int v = 0; v < VOCAB; v++) {
                    const double lpt = zt[v] - lse_t, lps = z[v] - lse;
                    ref_loss += exp(lpt) * (lpt - lps);
                    const double dz = (exp(lps) - exp(lpt)) / n_counted;
                    for (int k = 0; k < DIM; k++)
                        dref[k] += dz * w[(size_t)v * DIM + k];
                }
            } else if (y[r] >= 0) {
                ref_loss = lse - z[y[r]];
                for (int v = 0; v < VOCAB; v++) {
                    const double dz = (exp(z[v] - lse) - (v == y[r])) / n_counted;
                    for (int k = 0; k < DIM; k++)
                        dref[k] += dz * w[(size_t)v * DIM + k];
                }
            }
            char name[96];
            snprintf(name, sizeof name, "%s row %d loss vs float64", kl ? "KL" : "CE", r);
            check_close(name, losses + r, &ref_loss, 1, 1e-5, 1e-5);
            snprintf(name, sizeof name, "%s row %d d hidden vs float64", kl ? "KL" : "CE", r);
            check_close(name, dh + (size_t)r * DIM, dref, DIM, 1e-7, 1e-4);
        }
        double sum = 0;
        for (int r = 0; r < ROWS; r++)
            sum += losses[r];
        const double ref_mean = sum / n_counted;
        const float got_mean = (float)(kl ? mean_kl : mean_ce);
        check_close(kl ? "KL mean over rows" : "CE mean over counted rows", &got_mean, &ref_mean, 1, 1e-6,
                    1e-6);
    }
    if (rc || rl_backend_status(be, err, sizeof err)) {
        printf("backend error: %s\n", rc ? "a loss call failed" : err);
        check_failures++;
    }
    free(h), free(ht), free(dh), free(losses), free(w), free(wt), free(dw), free(buf), free(tbuf), free(y);
    free(z), free(zt);
    rl_backend_destroy(be);
    printf("%s: %d failure(s)\n", check_failures ? "FAIL" : "PASS", check_failures);
    return check_failures ? 1 : 0;
}
