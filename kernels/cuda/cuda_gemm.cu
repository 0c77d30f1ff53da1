/* cuda_gemm.cu — rl_matmul through cuBLASLt, and the bias gradient.
 *
 * Row-major to column-major: a row-major [M,N] matrix is the column-major [N,M] matrix Cᵀ, so
 *   C = op(A)·op(B)   (row-major)   ⇔   Cᵀ = op(B)ᵀ·op(A)ᵀ   (column-major),
 * i.e. cuBLASLt multiplies the B buffer (as its "A", m = N) by the A buffer (as its "B", n = M), k = K, with
 * the transposes unchanged: a row-major buffer read column-major is already the transpose. The bias over
 * the N columns of C is then a bias over the m rows of the column-major result, which is exactly what
 * CUBLASLT_EPILOGUE_BIAS adds.
 *
 * Dtypes: F32·F32→F32 with CUBLAS_COMPUTE_32F (true fp32, no TF32: it must match the CPU backend), and
 * BF16·BF16→F32 or →BF16 with fp32 accumulation. Anything else is refused. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>

#include "../scratch.h"
#include "cuda_int.h"

/* The heuristic's answer depends only on this key, so it is asked once per distinct product. */
typedef struct {
    int M, N, K, trans_a, trans_b, batch;
    int64_t stride_a, stride_b, stride_c;
    int dtype_ab, dtype_c, epilogue_bias, beta_zero;
    int align_a, align_b, align_c;
    int64_t ld_a, ld_b;
} gemm_key;

struct rlc_gemm_cache_entry {
    gemm_key key;
    cublasLtMatmulAlgo_t algo;
};

#define GEMM_CACHE_MAX 256

void rl__cuda_gemm_cache_free(rlc_backend *c)
{
    free(c->gemm_cache);
    c->gemm_cache = NULL;
    c->gemm_cache_n = 0;
}

/* Largest power of two ≤ 256 dividing the address and the batch stride in bytes: the alignment cuBLASLt
 * may assume for every matrix of the batch (its default assumption is 256, which a sub-view breaks). */
static int alignment_of(const void *p, int64_t stride_elems, size_t elem, int batch)
{
    uint64_t bits = (uint64_t)(uintptr_t)p | 256u;
    if (batch > 1)
        bits |= (uint64_t)(stride_elems * (int64_t)elem) | 256u;
    return (int)(bits & (~bits + 1)); /* lowest set bit */
}

static cudaDataType_t to_cuda_type(rl_dtype t) { return t == RL_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* c[b][r, j] = c[b][r, j] + bias[j] for each of `batch` matrices (the bias when it is not fused). */
template <typename T>
__global__ static void add_bias_kernel(T *c, const float *bias, int M, int N, int batch, int64_t stride_c)
{
    size_t total = (size_t)batch * M * N;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t b = i / ((size_t)M * N), rc = i % ((size_t)M * N);
        int j = (int)(rc % (size_t)N);
        T *p = c + (int64_t)b * stride_c + rc;
        *p = (T)((float)*p + bias[j]);
    }
}

static const char *lt_status(cublasStatus_t s) { return cublasLtGetStatusString(s); }

/* RADLADS_GEMM_LOG=1: one stderr line per GEMM shape with the algorithm the heuristic picked. */
static void log_algo(const rl_gemm *g, const cublasLtMatmulHeuristicResult_t *res)
{
    int32_t id = -1, tile = -1, splitk = -1, stages = -1;
    uint32_t scheme = 0;
    size_t w;
    cublasLtMatmulAlgoConfigGetAttribute(&res->algo, CUBLASLT_ALGO_CONFIG_ID, &id, sizeof id, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&res->algo, CUBLASLT_ALGO_CONFIG_TILE_ID, &tile, sizeof tile, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&res->algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, &splitk, sizeof splitk, &w);
    cublasLtMatmulAlgoConfigGetAttribute(&res->algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &scheme, sizeof scheme,
                                         &w);
    cublasLtMatmulAlgoConfigGetAttribute(&res->algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, &stages, sizeof stages, &w);
    fprintf(stderr,
            "radlads: gemm M=%d N=%d K=%d ta=%d tb=%d beta=%g %s x %s -> %s: algo %d tile %d stages %d split-k %d "
            "reduction %u workspace %zu waves %.2f\n",
            g->M, g->N, g->K, g->trans_a, g->trans_b, (double)g->beta, rl_dtype_name(g->dtype_a),
            rl_dtype_name(g->dtype_b), rl_dtype_name(g->dtype_c), id, tile, stages, splitk, scheme,
            res->workspaceSize, (double)res->wavesCount);
}

/* One cuBLASLt product with explicit row strides (elements) of the stored A and B (a block of A's rows is read
 * with the whole matrix's stride); C is contiguous. */
static int lt_matmul(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b, const float *bias,
                     int64_t lda, int64_t ldb)
{
    rlc_backend *cb = rlc_of(be);
    const int f32 = g->dtype_a == RL_DTYPE_F32 && g->dtype_b == RL_DTYPE_F32 && g->dtype_c == RL_DTYPE_F32;
    const int bf16 = g->dtype_a == RL_DTYPE_BF16 && g->dtype_b == RL_DTYPE_BF16 &&
                     (g->dtype_c == RL_DTYPE_F32 || g->dtype_c == RL_DTYPE_BF16);
    if (!f32 && !bf16)
        return rl__fail(be, RL_ENOTSUP,
                        "rl_matmul: the CUDA backend multiplies F32xF32->F32 and BF16xBF16->F32|BF16 (got %s x %s -> "
                        "%s); cast the operands first",
                        rl_dtype_name(g->dtype_a), rl_dtype_name(g->dtype_b), rl_dtype_name(g->dtype_c));
    const int M = g->M, N = g->N, K = g->K, batch = g->batch > 0 ? g->batch : 1;
    const size_t eab = rl_dtype_size(g->dtype_a), ec = rl_dtype_size(g->dtype_c);
    /* the fused bias is used where it is unambiguous: fp32 output and no beta term */
    const int fuse_bias = bias && g->beta == 0.0f && g->dtype_c == RL_DTYPE_F32;

    gemm_key key;
    memset(&key, 0, sizeof key); /* padding too: keys are compared with memcmp */
    key.M = M, key.N = N, key.K = K, key.trans_a = !!g->trans_a, key.trans_b = !!g->trans_b, key.batch = batch;
    key.stride_a = batch > 1 ? g->stride_a : 0;
    key.stride_b = batch > 1 ? g->stride_b : 0;
    key.stride_c = batch > 1 ? g->stride_c : 0;
    key.dtype_ab = (int)g->dtype_a, key.dtype_c = (int)g->dtype_c;
    key.epilogue_bias = fuse_bias, key.beta_zero = g->beta == 0.0f;
    key.align_a = alignment_of(a, g->stride_a, eab, batch);
    key.align_b = alignment_of(b, g->stride_b, eab, batch);
    key.align_c = alignment_of(c, g->stride_c, ec, batch);
    key.ld_a = lda, key.ld_b = ldb;
    if (fuse_bias && alignment_of(bias, 0, 4, 1) < 16)
        key.epilogue_bias = 0; /* the epilogue reads the bias vectorised */
    const int epi = key.epilogue_bias;

    /* cuBLASLt's "A" is our B, its "B" is our A (see the top of the file) */
    const cublasOperation_t op_lt_a = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_lt_b = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const uint64_t rows_lt_a = g->trans_b ? (uint64_t)K : (uint64_t)N, cols_lt_a = g->trans_b ? N : K;
    const uint64_t rows_lt_b = g->trans_a ? (uint64_t)M : (uint64_t)K, cols_lt_b = g->trans_a ? K : M;
    const int64_t ld_lt_a = ldb, ld_lt_b = lda, ld_c = N;
    const cudaDataType_t tab = to_cuda_type(g->dtype_a), tc = to_cuda_type(g->dtype_c);

    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasStatus_t s = cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const char *step = "cublasLtMatmulDescCreate";
    if (s == CUBLAS_STATUS_SUCCESS)
        step = "set TRANSA", s = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_lt_a,
                                                                sizeof op_lt_a);
    if (s == CUBLAS_STATUS_SUCCESS)
        step = "set TRANSB", s = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_lt_b,
                                                                sizeof op_lt_b);
    if (s == CUBLAS_STATUS_SUCCESS && epi) {
        cublasLtEpilogue_t e = CUBLASLT_EPILOGUE_BIAS;
        step = "set EPILOGUE", s = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof e);
        if (s == CUBLAS_STATUS_SUCCESS)
            step = "set BIAS_POINTER",
            s = cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias);
    }
    if (s == CUBLAS_STATUS_SUCCESS)
        step = "layout A", s = cublasLtMatrixLayoutCreate(&la, tab, rows_lt_a, cols_lt_a, ld_lt_a);
    if (s == CUBLAS_STATUS_SUCCESS)
        step = "layout B", s = cublasLtMatrixLayoutCreate(&lb, tab, rows_lt_b, cols_lt_b, ld_lt_b);
    if (s == CUBLAS_STATUS_SUCCESS)
        step = "layout C", s = cublasLtMatrixLayoutCreate(&lc, tc, (uint64_t)N, (uint64_t)M, ld_c);
    if (s == CUBLAS_STATUS_SUCCESS && batch > 1) {
        const int32_t bc = batch;
        const int64_t sa = g->stride_b, sb = g->stride_a, sc = g->stride_c;
        step = "batch layout";
        cublasLtMatrixLayout_t ls[3] = {la, lb, lc};
        const int64_t strides[3] = {sa, sb, sc};
        for (int i = 0; i < 3 && s == CUBLAS_STATUS_SUCCESS; i++) {
            s = cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof bc);
            if (s == CUBLAS_STATUS_SUCCESS)
                s = cublasLtMatrixLayoutSetAttribute(ls[i], CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &strides[i],
                                                     sizeof strides[i]);
        }
    }

    /* the algorithm: from the cache, else from the heuristic */
    cublasLtMatmulAlgo_t algo;
    memset(&algo, 0, sizeof algo);
    int have_algo = 0;
    for (int i = 0; i < cb->gemm_cache_n; i++)
        if (!memcmp(&cb->gemm_cache[i].key, &key, sizeof key)) {
            algo = cb->gemm_cache[i].algo;
            have_algo = 1;
            break;
        }
    if (s == CUBLAS_STATUS_SUCCESS && !have_algo) {
        step = "preference", s = cublasLtMatmulPreferenceCreate(&pref);
        const uint64_t wsb = RLC_LT_WORKSPACE;
        const uint32_t al_a = (uint32_t)key.align_b, al_b = (uint32_t)key.align_a, al_c = (uint32_t)key.align_c;
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a,
                                                     sizeof al_a);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b,
                                                     sizeof al_b);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c,
                                                     sizeof al_c);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c,
                                                     sizeof al_c);
        if (s == CUBLAS_STATUS_SUCCESS && g->dtype_c == RL_DTYPE_BF16) {
            /* a split-K algorithm may add its partial products up in the output's type, in place, each partial
             * sum rounded to bf16; partials in fp32 in the workspace, or no split, round once. (What the H100
             * measured off by 1 ulp was not this but the non-split kernels' beta term: rl__cuda_matmul.) */
            const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
            s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes,
                                                     sizeof schemes);
        }
        cublasLtMatmulHeuristicResult_t res;
        int found = 0;
        if (s == CUBLAS_STATUS_SUCCESS)
            step = "cublasLtMatmulAlgoGetHeuristic",
            s = cublasLtMatmulAlgoGetHeuristic(cb->lt, desc, la, lb, lc, lc, pref, 1, &res, &found);
        if (s == CUBLAS_STATUS_SUCCESS && found == 0)
            s = CUBLAS_STATUS_NOT_SUPPORTED;
        if (s == CUBLAS_STATUS_SUCCESS) {
            algo = res.algo;
            have_algo = 1;
            if (getenv("RADLADS_GEMM_LOG")) /* what the heuristic picked, once per shape (a diagnostic knob) */
                log_algo(g, &res);
            if (!cb->gemm_cache)
                cb->gemm_cache = (rlc_gemm_cache_entry *)calloc(GEMM_CACHE_MAX, sizeof *cb->gemm_cache);
            if (cb->gemm_cache) {
                /* a full cache overwrites a slot picked from the shape */
                int slot = cb->gemm_cache_n < GEMM_CACHE_MAX
                               ? cb->gemm_cache_n++
                               : (int)(((unsigned)M * 31u + (unsigned)N * 17u + (unsigned)K) % GEMM_CACHE_MAX);
                cb->gemm_cache[slot].key = key;
                cb->gemm_cache[slot].algo = algo;
            }
        }
    }

    int rc = 0;
    if (s == CUBLAS_STATUS_SUCCESS && have_algo) {
        const float alpha = g->alpha, beta = g->beta;
        step = "cublasLtMatmul";
        s = cublasLtMatmul(cb->lt, desc, &alpha, b, la, a, lb, &beta, c, lc, c, lc, &algo, cb->lt_ws,
                           RLC_LT_WORKSPACE, cb->stream);
    }
    if (s != CUBLAS_STATUS_SUCCESS)
        rc = rl__fail(be, s == CUBLAS_STATUS_NOT_SUPPORTED ? RL_ENOTSUP : RL_EINVAL,
                      "rl_matmul: cuBLASLt %s failed for M=%d N=%d K=%d trans_a=%d trans_b=%d batch=%d %s x %s -> %s "
                      "(alignment %d/%d/%d bytes): %s",
                      step, M, N, K, g->trans_a, g->trans_b, batch, rl_dtype_name(g->dtype_a),
                      rl_dtype_name(g->dtype_b), rl_dtype_name(g->dtype_c), key.align_a, key.align_b, key.align_c,
                      lt_status(s));
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (lc)
        cublasLtMatrixLayoutDestroy(lc);
    if (lb)
        cublasLtMatrixLayoutDestroy(lb);
    if (la)
        cublasLtMatrixLayoutDestroy(la);
    if (desc)
        cublasLtMatmulDescDestroy(desc);
    if (rc)
        return rc;
    if (bias && !epi) {
        size_t total = (size_t)batch * M * N;
        if (g->dtype_c == RL_DTYPE_F32)
            add_bias_kernel<float><<<rlc_grid(total, 256), 256, 0, cb->stream>>>((float *)c, bias, M, N, batch,
                                                                                 g->stride_c);
        else
            add_bias_kernel<__nv_bfloat16><<<rlc_grid(total, 256), 256, 0, cb->stream>>>(
                (__nv_bfloat16 *)c, bias, M, N, batch, g->stride_c);
    }
    return rlc_launched(be, "rl_matmul");
}

/* c16[i] = bf16(beta · c16[i] + acc[i]), i < n: one rounding of the fp32 sum. */
__global__ static void add_round_bf16_kernel(__nv_bfloat16 *c16, const float *acc, size_t n, float beta)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        c16[i] = __float2bfloat16_rn(beta * __bfloat162float(c16[i]) + acc[i]);
}

/* RADLADS_GEMM_BF16_ACC=0: a bf16 result with beta ≠ 0 straight from cuBLASLt (a diagnostic knob). Its kernels
 * on the H100 rounded such results twice (up to 1 bf16 ulp off the once-rounded fp32 sum on a quarter of the
 * elements, tests/gpu/gpu_ops_check matmul_autocast_bf16_grad); by default the product goes to fp32 scratch and
 * one kernel adds and rounds. */
static bool bf16_acc_via_f32()
{
    static const int allowed[] = {0, 1};
    static const int on = rlc_env_knob("RADLADS_GEMM_BF16_ACC", allowed, 2, 1);
    return on != 0;
}

int rl__cuda_matmul(rl_backend *be, const rl_gemm *g, void *c, const void *a, const void *b, const float *bias)
{
    const int64_t lda = g->trans_a ? g->M : g->K, ldb = g->trans_b ? g->K : g->N;
    if (g->dtype_c != RL_DTYPE_BF16 || g->dtype_a != RL_DTYPE_BF16 || g->dtype_b != RL_DTYPE_BF16 ||
        g->beta == 0.0f || bias || !bf16_acc_via_f32()) /* (lt_matmul refuses what it cannot multiply) */
        return lt_matmul(be, g, c, a, b, bias, lda, ldb);
    /* bf16 C += alpha op(A) op(B): the product in fp32 scratch, a block of C's rows at a time, then one rounding */
    rlc_backend *cb = rlc_of(be);
    const int batch = g->batch > 0 ? g->batch : 1;
    const int rows = rl_scratch_bf16_acc_rows(g->M, g->N); /* at most 16 Mi floats, a multiple of 64 rows */
    float *acc = (float *)rlc_ws_get(&cb->ws, cb->stream, rl_scratch_bf16_acc(g->M, g->N));
    if (!acc)
        return rl__fail(be, RL_ENOMEM, "rl_matmul: no device memory for the %zu-byte fp32 scratch of a bf16 "
                        "accumulation", sizeof(float) * (size_t)rows * g->N);
    const size_t eab = rl_dtype_size(g->dtype_a);
    for (int bi = 0; bi < batch; bi++)
        for (int m0 = 0; m0 < g->M; m0 += rows) {
            rl_gemm part = *g;
            part.M = g->M - m0 < rows ? g->M - m0 : rows;
            part.batch = 1, part.beta = 0.0f, part.dtype_c = RL_DTYPE_F32;
            /* op(A)'s rows m0..: A's rows (K apart) or, transposed, its columns */
            const char *pa = (const char *)a + (size_t)bi * g->stride_a * eab +
                             (g->trans_a ? (size_t)m0 : (size_t)m0 * g->K) * eab;
            const char *pb = (const char *)b + (size_t)bi * g->stride_b * eab;
            __nv_bfloat16 *pc = (__nv_bfloat16 *)c + (size_t)bi * g->stride_c + (size_t)m0 * g->N;
            int rc = lt_matmul(be, &part, acc, pa, pb, NULL, lda, ldb);
            if (rc)
                return rc;
            const size_t n = (size_t)part.M * g->N;
            add_round_bf16_kernel<<<rlc_grid(n, 256), 256, 0, cb->stream>>>(pc, acc, n, g->beta);
            if ((rc = rlc_launched(be, "rl_matmul")))
                return rc;
        }
    return 0;
}

/* dbias[j] += Σ_r dout[r, j]. A block owns 32 columns (one per lane, so reads are coalesced along a
 * row) and BIAS_ROWS row-phases; each column is summed in a fixed order and written by one thread. */
#define BIAS_ROWS 16
__global__ static void bias_backward_kernel(float *dbias, const float *dout, int rows, int cols)
{
    __shared__ float part[BIAS_ROWS][33];
    const int j = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (j < cols)
        for (int r = threadIdx.y; r < rows; r += BIAS_ROWS)
            acc += dout[(size_t)r * cols + j];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        float sum = 0.0f;
        for (int i = 0; i < BIAS_ROWS; i++)
            sum += part[i][threadIdx.x];
        dbias[j] += sum;
    }
}

int rl__cuda_bias_backward(rl_backend *be, float *dbias, const float *dout, int rows, int cols)
{
    dim3 block(32, BIAS_ROWS);
    bias_backward_kernel<<<(unsigned)((cols + 31) / 32), block, 0, rlc_of(be)->stream>>>(dbias, dout, rows, cols);
    return rlc_launched(be, "rl_bias_backward");
}
