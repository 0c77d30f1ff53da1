/* cpu_gemm.c — matrix products through OpenBLAS sgemm (row-major). */
#include <cblas.h>

#include "cpu_int.h"

int rl__cpu_matmul(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b, const float *bias)
{
    if (g->dtype_a != RL_DTYPE_F32 || g->dtype_b != RL_DTYPE_F32 || g->dtype_c != RL_DTYPE_F32)
        return rl__fail(be, RL_ENOTSUP, "rl_matmul: the CPU backend computes in F32 only (got %s x %s -> %s); "
                        "cast operands to F32 first", rl_dtype_name(g->dtype_a), rl_dtype_name(g->dtype_b),
                        rl_dtype_name(g->dtype_c));
    const int M = g->M, N = g->N, K = g->K;
    const int lda = g->trans_a ? M : K;
    const int ldb = g->trans_b ? K : N;
    const int batch = g->batch > 0 ? g->batch : 1;
    const float *A = a, *B = b;
    float *C = c;
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
        cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans, g->trans_b ? CblasTrans : CblasNoTrans,
                    M, N, K, g->alpha, A + i * g->stride_a, lda, B + i * g->stride_b, ldb, beta, Ci, N);
    }
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
