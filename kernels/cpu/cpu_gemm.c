/* cpu_gemm.c — matrix products through OpenBLAS sgemm (row-major).
 *
 * A large product is split by OpenMP into one contiguous slab of C per thread
 * (rows when M ≥ N, else columns), each a single-threaded sgemm: one thread pool
 * instead of OpenMP's and OpenBLAS's taking turns on the same cores, and no
 * sleeping OpenBLAS workers to wake per call. */
#include <stdlib.h>

#include "cpu_blas.h"
#include "cpu_int.h"

/* below ~2 MFLOP a split costs more than it saves */
#define SPLIT_MIN_MNK (1LL << 20)

/* C[M×N] = alpha·op(A)·op(B) + beta·C with C's row stride N, split across threads. */
static void sgemm_split(int nthreads, int trans_a, int trans_b, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C)
{
    const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
    if (nthreads < 2 || (long long)M * N * K < SPLIT_MIN_MNK || (M < 32 && N < 32)) {
        cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, N);
        return;
    }
    const int by_rows = M >= N, len = by_rows ? M : N;
    int saved = rl__cpu_blas_single_begin();
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int part = 0; part < nthreads; part++) {
        /* slab edges on multiples of 16 elements (one 64-byte line of C per row) */
        int lo = (int)((long long)len * part / nthreads) & ~15,
            hi = (int)((long long)len * (part + 1) / nthreads);
        hi = part == nthreads - 1 ? len : hi & ~15;
        if (hi <= lo) continue;
        if (by_rows)
            cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, alpha, trans_a ? A + lo : A + (size_t)lo * lda,
                        lda, B, ldb, beta, C + (size_t)lo * N, N);
        else
            cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, alpha, A, lda,
                        trans_b ? B + (size_t)lo * ldb : B + lo, ldb, beta, C + lo, N);
    }
    rl__cpu_blas_single_end(saved);
}

/* A BF16 operand of n elements widened to F32 (exact: every bf16 is an fp32), or the F32 operand itself. */
static const float *as_f32(const void *x, rl_dtype dt, size_t n, float **owned)
{
    *owned = NULL;
    if (dt == RL_DTYPE_F32)
        return x;
    float *w = malloc(sizeof(float) * (n ? n : 1));
    if (!w)
        return NULL;
    const uint16_t *h = x;
    const long long nn = (long long)n;
#pragma omp parallel for if (nn > 65536)
    for (long long i = 0; i < nn; i++)
        w[i] = rl_bf16_to_f32(h[i]);
    return *owned = w;
}

int rl__cpu_matmul(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b, const float *bias)
{
    const int in_ok = (g->dtype_a == RL_DTYPE_F32 || g->dtype_a == RL_DTYPE_BF16) &&
                      (g->dtype_b == RL_DTYPE_F32 || g->dtype_b == RL_DTYPE_BF16);
    if (!in_ok || (g->dtype_c != RL_DTYPE_F32 && (g->dtype_c != RL_DTYPE_BF16 || bias)))
        return rl__fail(be, RL_ENOTSUP,
                        "rl_matmul: the CPU backend takes F32 or BF16 operands into an F32 result, or a BF16 one "
                        "without bias (got %s x %s -> %s); cast to F32 first",
                        rl_dtype_name(g->dtype_a), rl_dtype_name(g->dtype_b), rl_dtype_name(g->dtype_c));
    const int M = g->M, N = g->N, K = g->K;
    const int lda = g->trans_a ? M : K;
    const int ldb = g->trans_b ? K : N;
    const int batch = g->batch > 0 ? g->batch : 1;
    /* BF16 operands (autocast): widened once per call, then the same sgemm as F32 ones */
    float *own_a, *own_b;
    const size_t na = rl__gemm_extent_a(g), nb = rl__gemm_extent_b(g);
    const float *A = as_f32(a, g->dtype_a, na, &own_a), *B = as_f32(b, g->dtype_b, nb, &own_b);
    if (!A || !B) {
        free(own_a), free(own_b);
        return rl__fail(be, RL_ENOMEM, "rl_matmul: out of memory widening BF16 operands (%zu + %zu floats)",
                        g->dtype_a == RL_DTYPE_BF16 ? na : 0, g->dtype_b == RL_DTYPE_BF16 ? nb : 0);
    }
    /* a BF16 result: computed in fp32 (C widened when beta reads it), rounded once at the end */
    const size_t nc = (size_t)(batch - 1) * (size_t)g->stride_c + (size_t)M * N;
    float *own_c = NULL, *C = c;
    if (g->dtype_c == RL_DTYPE_BF16) {
        C = own_c = g->beta != 0.0f ? (float *)as_f32(c, RL_DTYPE_BF16, nc, &own_c) : calloc(nc, sizeof(float));
        if (!C) {
            free(own_a), free(own_b);
            return rl__fail(be, RL_ENOMEM, "rl_matmul: out of memory widening a BF16 result (%zu floats)", nc);
        }
    }
    for (int i = 0; i < batch; i++) {
        float *Ci = C + i * g->stride_c;
        float beta = g->beta;
        if (bias) {
            /* C = beta·C + bias first, then sgemm with beta 1 adds the product. */
#pragma omp parallel for if ((long long)M * N > 16384)
            for (int r = 0; r < M; r++) {
                float *row = Ci + (size_t)r * N;
                if (beta == 0.0f)
                    for (int j = 0; j < N; j++)
                        row[j] = bias[j];
                else
                    for (int j = 0; j < N; j++)
                        row[j] = beta * row[j] + bias[j];
            }
            beta = 1.0f;
        }
        sgemm_split(be->num_threads, g->trans_a, g->trans_b, M, N, K, g->alpha, A + i * g->stride_a, lda,
                    B + i * g->stride_b, ldb, beta, Ci);
    }
    for (int i = 0; own_c && i < batch; i++) { /* the products only: a gap between them stays as it was */
        uint16_t *h = (uint16_t *)c + i * g->stride_c;
        const float *w = own_c + i * g->stride_c;
        const long long nn = (long long)M * N;
#pragma omp parallel for if (nn > 65536)
        for (long long j = 0; j < nn; j++)
            h[j] = rl_f32_to_bf16(w[j]);
    }
    free(own_a), free(own_b), free(own_c);
    return 0;
}

/* dbias[j] += Σ_r dout[r, j]; parallel over column blocks so no two threads
 * write the same element. */
int rl__cpu_bias_backward(rl_backend *be, float *dbias, const float *dout, int rows, int cols)
{
    (void)be;
    const int block = 64;
    int nblocks = (cols + block - 1) / block;
#pragma omp parallel for if ((long long)rows * cols > 16384)
    for (int bi = 0; bi < nblocks; bi++) {
        int j0 = bi * block, j1 = j0 + block < cols ? j0 + block : cols;
        float acc[64] = {0};
        for (int r = 0; r < rows; r++) {
            const float *row = dout + (size_t)r * cols;
            for (int j = j0; j < j1; j++)
                acc[j - j0] += row[j];
        }
        for (int j = j0; j < j1; j++)
            dbias[j] += acc[j - j0];
    }
    return 0;
}
