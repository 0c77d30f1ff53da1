/* cuda_layers.cu — element-wise ops, reductions, embedding, RMSNorm, RoPE, SwiGLU, the vocabulary losses,
 * the hidden-state losses and AdamW on the GPU.
 *
 * Each kernel follows the CPU reference (kernels/cpu) formula for formula, so the two backends differ only
 * by summation order and FMA contraction. Reductions run in a fixed order (no atomics) except the
 * embedding gradient, where repeated ids collide. Row kernels use one block per row, so `rows` may be up
 * to 2^31−1; element-wise kernels use grid-stride loops with 64-bit indices. */
#include <cuda_bf16.h>
#include <math.h>

#include "cuda_int.h"

#define ROW_THREADS 256
#define VOCAB_THREADS 512

/* ---- block reductions (blockDim.x a multiple of 32, at most 1024) ----
 * Function-scope shared arrays are written `static __shared__` (what __shared__ implies anyway): the host
 * emulation of tests/gpu/cuda_emu.h needs the `static` to share them between a block's threads. */

template <typename T> __device__ static T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Every thread gets the block's total. Safe to call repeatedly in one kernel. */
template <typename T> __device__ static T block_sum(T v)
{
    static __shared__ T warp_part[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* an earlier call may still be reading warp_part */
    if (lane == 0)
        warp_part[warp] = v;
    __syncthreads();
    v = lane < nwarps ? warp_part[lane] : (T)0;
    return warp_sum(v);
}

/* Online log-sum-exp: (m, s) stands for s·e^m. Merging keeps the larger max. */
__device__ static void lse_merge(float &m, double &s, float m2, double s2)
{
    float mx = fmaxf(m, m2);
    if (mx == -INFINITY) {
        m = mx, s = 0.0;
        return;
    }
    s = s * exp((double)m - (double)mx) + s2 * exp((double)m2 - (double)mx);
    m = mx;
}

/* Every thread gets the block's (max, Σ e^(x − max)) over the row z[0..n). */
__device__ static void block_lse(const float *z, int n, float &m_out, double &s_out)
{
    float m = -INFINITY, s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float x = z[i];
        if (x > m) {
            s = s * expf(m - x) + 1.0f;
            m = x;
        } else if (x != -INFINITY) {
            s += expf(x - m);
        }
    }
    double sd = s;
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        double s2 = __shfl_xor_sync(0xffffffffu, sd, o);
        lse_merge(m, sd, m2, s2);
    }
    static __shared__ float wm[32];
    static __shared__ double ws[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0)
        wm[warp] = m, ws[warp] = sd;
    __syncthreads();
    m = lane < nwarps ? wm[lane] : -INFINITY;
    sd = lane < nwarps ? ws[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o);
        double s2 = __shfl_xor_sync(0xffffffffu, sd, o);
        lse_merge(m, sd, m2, s2);
    }
    m_out = m, s_out = sd;
}

/* Records the first bad index a kernel meets (reported at the next sync). */
__device__ static void report_bad(int *bad, int op, int value, int row, int bound)
{
    if (atomicCAS(&bad[RLC_FLAG_OP], 0, op) == 0) {
        bad[RLC_FLAG_VALUE] = value;
        bad[RLC_FLAG_ROW] = row;
        bad[RLC_FLAG_BOUND] = bound;
    }
}

#define GRID_STRIDE(i, n)                                                                                    \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

static unsigned row_threads(int dim)
{
    unsigned t = (unsigned)((dim + 31) / 32 * 32);
    return t < ROW_THREADS ? t : ROW_THREADS;
}

/* ---- element-wise ---- */

__global__ static void add_kernel(float *out, const float *a, const float *b, size_t n)
{
    GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}
__global__ static void accumulate_kernel(float *y, const float *x, size_t n)
{
    GRID_STRIDE(i, n) y[i] += x[i];
}
__global__ static void scale_kernel(float *x, float s, size_t n)
{
    GRID_STRIDE(i, n) x[i] *= s;
}

int rl__cuda_add(rl_backend *be, float *out, const float *a, const float *b, size_t n)
{
    if (!n)
        return 0;
    add_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(out, a, b, n);
    return rlc_launched(be, "rl_add");
}
int rl__cuda_accumulate(rl_backend *be, float *y, const float *x, size_t n)
{
    if (!n)
        return 0;
    accumulate_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(y, x, n);
    return rlc_launched(be, "rl_accumulate");
}
int rl__cuda_scale(rl_backend *be, float *x, float s, size_t n)
{
    if (!n)
        return 0;
    scale_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(x, s, n);
    return rlc_launched(be, "rl_scale");
}

/* ---- Σx and Σx² in double: RLC_SUM_BLOCKS fixed partials, then one block sums them in order ---- */

/* element i of x, an F32 or (bf16) a BF16 array, in double */
__device__ static inline double elem_f64(const void *x, size_t i, int bf16)
{
    return bf16 ? (double)__bfloat162float(((const __nv_bfloat16 *)x)[i]) : (double)((const float *)x)[i];
}

__global__ static void sum_partials_kernel(double *partials, const void *x, size_t n, int squares, int bf16)
{
    double acc = 0.0;
    GRID_STRIDE(i, n)
    {
        double v = elem_f64(x, i, bf16);
        acc += squares ? v * v : v;
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0)
        partials[blockIdx.x] = acc;
}

__global__ static void sum_final_kernel(double *out, const double *partials, int n)
{
    double acc = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        acc += partials[i];
    acc = block_sum(acc);
    if (threadIdx.x == 0)
        *out = acc;
}

/* Queues Σ of x[0..n) into partials[RLC_SUM_BLOCKS + slot] (0 when n is 0). */
static int queue_sum(rl_backend *be, int slot, const void *x, size_t n, int squares, int bf16)
{
    rlc_backend *c = rlc_of(be);
    const char *op = squares ? "rl_sum_squares" : "rl_sum";
    if (n) {
        sum_partials_kernel<<<RLC_SUM_BLOCKS, 256, 0, c->stream>>>(c->partials, x, n, squares, bf16);
        int rc = rlc_launched(be, op);
        if (rc)
            return rc;
    }
    /* the partials of one sum are read before the next sum's partials kernel runs: one stream */
    sum_final_kernel<<<1, 1024, 0, c->stream>>>(c->partials + RLC_SUM_BLOCKS + slot, c->partials,
                                                n ? RLC_SUM_BLOCKS : 0);
    return rlc_launched(be, op);
}

/* Brings back totals [0, count) of the queued sums: one copy, one wait. */
static int fetch_sums(rl_backend *be, double *out, int count)
{
    rlc_backend *c = rlc_of(be);
    cudaError_t e = cudaMemcpyAsync(c->sum_host, c->partials + RLC_SUM_BLOCKS, sizeof(double) * (size_t)count,
                                    cudaMemcpyDeviceToHost, c->stream);
    if (e != cudaSuccess)
        return rlc_fail_cuda(be, e, "rl_sum");
    int rc = be->ops->sync(be);
    if (rc)
        return rc;
    for (int i = 0; i < count; i++)
        out[i] = c->sum_host[i];
    return 0;
}

int rl__cuda_sum(rl_backend *be, double *out, const float *x, size_t n, int squares)
{
    *out = 0.0;
    int rc = queue_sum(be, 0, x, n, squares, 0);
    return rc ? rc : fetch_sums(be, out, 1);
}

int rl__cuda_sum_many(rl_backend *be, double *out, const void *const *x, const rl_dtype *dt, const size_t *n,
                      int count, int squares)
{
    for (int base = 0; base < count; base += RLC_SUM_MANY) {
        const int k = count - base < RLC_SUM_MANY ? count - base : RLC_SUM_MANY;
        for (int j = 0; j < k; j++) {
            const int bf16 = dt && dt[base + j] == RL_DTYPE_BF16;
            int rc = queue_sum(be, j, x[base + j], n[base + j], squares, bf16);
            if (rc)
                return rc;
        }
        int rc = fetch_sums(be, out + base, k);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- embedding ---- */

__global__ static void embedding_forward_kernel(float *out, const int32_t *ids, const float *table, int rows,
                                                int vocab, int dim, int *bad)
{
    GRID_STRIDE(i, (size_t)rows * dim)
    {
        int r = (int)(i / (size_t)dim), j = (int)(i % (size_t)dim);
        int id = ids[r];
        if (id < 0 || id >= vocab) {
            if (j == 0)
                report_bad(bad, RLC_BAD_EMBED_FWD, id, r, vocab);
            out[i] = NAN;
            continue;
        }
        out[i] = table[(size_t)id * dim + j];
    }
}

__global__ static void embedding_backward_kernel(float *dtable, const float *dout, const int32_t *ids, int rows,
                                                 int vocab, int dim, int *bad)
{
    GRID_STRIDE(i, (size_t)rows * dim)
    {
        int r = (int)(i / (size_t)dim), j = (int)(i % (size_t)dim);
        int id = ids[r];
        if (id < 0 || id >= vocab) {
            if (j == 0)
                report_bad(bad, RLC_BAD_EMBED_BWD, id, r, vocab);
            continue;
        }
        atomicAdd(&dtable[(size_t)id * dim + j], dout[i]);
    }
}

int rl__cuda_embedding_forward(rl_backend *be, float *out, const int32_t *ids, const float *table, int rows,
                               int vocab, int dim)
{
    rlc_backend *c = rlc_of(be);
    size_t n = (size_t)rows * dim;
    embedding_forward_kernel<<<rlc_grid(n, 256), 256, 0, c->stream>>>(out, ids, table, rows, vocab, dim,
                                                                      c->bad_dev);
    return rlc_launched(be, "rl_embedding_forward");
}

int rl__cuda_embedding_backward(rl_backend *be, float *dtable, const float *dout, const int32_t *ids, int rows,
                                int vocab, int dim)
{
    rlc_backend *c = rlc_of(be);
    size_t n = (size_t)rows * dim;
    embedding_backward_kernel<<<rlc_grid(n, 256), 256, 0, c->stream>>>(dtable, dout, ids, rows, vocab, dim,
                                                                       c->bad_dev);
    return rlc_launched(be, "rl_embedding_backward");
}

/* ---- RMSNorm: y = w ⊙ x·r, r = (mean(x²) + eps)^(-1/2);
 *      dx += r·(w ⊙ dy) − (r³/D)·x·Σ_j w_j dy_j x_j,  dw += Σ_rows dy ⊙ x·r ---- */

__global__ static void rmsnorm_forward_kernel(float *out, float *rstd, const float *in, const float *w, int dim,
                                              float eps)
{
    const size_t row = blockIdx.x;
    const float *x = in + row * dim;
    float *y = out + row * dim;
    float ss = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        ss += x[j] * x[j];
    ss = block_sum(ss);
    float rs = 1.0f / sqrtf(ss / (float)dim + eps);
    if (threadIdx.x == 0)
        rstd[row] = rs;
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        y[j] = x[j] * rs * w[j];
}

__global__ static void rmsnorm_backward_kernel(float *din, const float *dout, const float *in, const float *w,
                                               const float *rstd, int dim)
{
    const size_t row = blockIdx.x;
    const float *x = in + row * dim, *dy = dout + row * dim;
    float *dx = din + row * dim;
    float rs = rstd[row];
    float dot = 0.0f;
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        dot += w[j] * dy[j] * x[j];
    dot = block_sum(dot);
    float c = rs * rs * rs * dot / (float)dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        dx[j] += rs * w[j] * dy[j] - c * x[j];
}

/* dw[j] += Σ_r dy[r,j]·x[r,j]·rstd[r]; 32 columns per block, COL_ROWS row phases, fixed order. */
#define COL_ROWS 16
__global__ static void rmsnorm_dweight_kernel(float *dw, const float *dout, const float *in, const float *rstd,
                                              int rows, int dim)
{
    static __shared__ float part[COL_ROWS][33];
    const int j = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (j < dim)
        for (int r = threadIdx.y; r < rows; r += COL_ROWS) {
            size_t o = (size_t)r * dim + j;
            acc += dout[o] * in[o] * rstd[r];
        }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < dim) {
        float sum = 0.0f;
        for (int i = 0; i < COL_ROWS; i++)
            sum += part[i][threadIdx.x];
        dw[j] += sum;
    }
}

int rl__cuda_rmsnorm_forward(rl_backend *be, float *out, float *rstd, const float *in, const float *w, int rows,
                             int dim, float eps)
{
    rmsnorm_forward_kernel<<<(unsigned)rows, row_threads(dim), 0, rlc_of(be)->stream>>>(out, rstd, in, w, dim, eps);
    return rlc_launched(be, "rl_rmsnorm_forward");
}

int rl__cuda_rmsnorm_backward(rl_backend *be, float *din, float *dw, const float *dout, const float *in,
                              const float *w, const float *rstd, int rows, int dim)
{
    cudaStream_t st = rlc_of(be)->stream;
    rmsnorm_backward_kernel<<<(unsigned)rows, row_threads(dim), 0, st>>>(din, dout, in, w, rstd, dim);
    int rc = rlc_launched(be, "rl_rmsnorm_backward");
    if (rc || !dw) /* (dw NULL: a frozen weight) */
        return rc;
    rmsnorm_dweight_kernel<<<(unsigned)((dim + 31) / 32), dim3(32, COL_ROWS), 0, st>>>(dw, dout, in, rstd, rows,
                                                                                        dim);
    return rlc_launched(be, "rl_rmsnorm_backward");
}

/* ---- RoPE, rotate-half: forward (x1, x2) -> (x1 c − x2 s, x2 c + x1 s); inverse negates s ---- */

__global__ static void rope_kernel(float *x, const float *cos_t, const float *sin_t, int seq, int heads, int half,
                                   size_t total, float sgn)
{
    GRID_STRIDE(idx, total)
    {
        int i = (int)(idx % (size_t)half);
        size_t bth = idx / (size_t)half; /* (b·seq + t)·heads + h */
        int t = (int)((bth / (size_t)heads) % (size_t)seq);
        float *v = x + bth * (size_t)(2 * half);
        float c = cos_t[(size_t)t * half + i], si = sgn * sin_t[(size_t)t * half + i];
        float a = v[i], b = v[i + half];
        v[i] = a * c - b * si;
        v[i + half] = b * c + a * si;
    }
}

int rl__cuda_rope(rl_backend *be, float *x, const float *cos_t, const float *sin_t, int batch, int seq, int heads,
                  int head_dim, int inverse)
{
    const int half = head_dim / 2;
    size_t total = (size_t)batch * seq * heads * half;
    rope_kernel<<<rlc_grid(total, 256), 256, 0, rlc_of(be)->stream>>>(x, cos_t, sin_t, seq, heads, half, total,
                                                                       inverse ? -1.0f : 1.0f);
    return rlc_launched(be, inverse ? "rl_rope_backward" : "rl_rope_forward");
}

/* ---- SwiGLU: out = silu(g)·u; silu'(g) = σ(g)(1 + g(1 − σ(g))) ---- */

__global__ static void swiglu_forward_kernel(float *out, const float *gate, const float *up, size_t n)
{
    GRID_STRIDE(i, n)
    {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ static void swiglu_backward_kernel(float *dgate, float *dup, const float *dout, const float *gate,
                                              const float *up, size_t n)
{
    GRID_STRIDE(i, n)
    {
        float g = gate[i];
        float sg = 1.0f / (1.0f + expf(-g));
        float silu = g * sg;
        dgate[i] += dout[i] * up[i] * sg * (1.0f + g * (1.0f - sg));
        dup[i] += dout[i] * silu;
    }
}

int rl__cuda_swiglu_forward(rl_backend *be, float *out, const float *gate, const float *up, size_t n)
{
    if (!n)
        return 0;
    swiglu_forward_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(out, gate, up, n);
    return rlc_launched(be, "rl_swiglu_forward");
}

int rl__cuda_swiglu_backward(rl_backend *be, float *dgate, float *dup, const float *dout, const float *gate,
                             const float *up, size_t n)
{
    if (!n)
        return 0;
    swiglu_backward_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(dgate, dup, dout, gate, up, n);
    return rlc_launched(be, "rl_swiglu_backward");
}

/* ---- vocabulary losses: one block per row ---- */

/* loss = lse(z) − z[y]; dz = softmax(z)·grad_scale − onehot(y)·grad_scale (SET; may alias z: every thread
 * reads z[y] and its own z[i] before writing its own dz[i], and the lse reduction separates the two). */
__global__ static void __launch_bounds__(VOCAB_THREADS)
    cross_entropy_kernel(float *losses, float *dlogits, const float *logits, const int32_t *targets, int vocab,
                         float grad_scale, int *bad)
{
    const int row = blockIdx.x;
    const float *z = logits + (size_t)row * vocab;
    float *dz = dlogits ? dlogits + (size_t)row * vocab : NULL;
    const int y = targets[row];
    if (y < -1 || y >= vocab) {
        if (threadIdx.x == 0) {
            report_bad(bad, RLC_BAD_CE_TARGET, y, row, vocab);
            losses[row] = NAN;
        }
        return;
    }
    if (y < 0) {
        if (threadIdx.x == 0)
            losses[row] = 0.0f;
        if (dz)
            for (int i = threadIdx.x; i < vocab; i += blockDim.x)
                dz[i] = 0.0f;
        return;
    }
    const float zy = z[y];
    float m;
    double s;
    block_lse(z, vocab, m, s);
    if (threadIdx.x == 0)
        losses[row] = (float)((double)m + log(s) - (double)zy);
    if (dz) {
        const float c = (float)(1.0 / s) * grad_scale;
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            float e = expf(z[i] - m) * c;
            dz[i] = i == y ? e - grad_scale : e;
        }
    }
}

/* KL(p_T‖p_S) = Σ p_T (log p_T − log p_S);  dz_S = (p_S − p_T)·grad_scale (SET; may alias z_S). */
__global__ static void __launch_bounds__(VOCAB_THREADS)
    kl_kernel(float *losses, float *dlogits, const float *student, const float *teacher, int vocab,
              float grad_scale)
{
    const int row = blockIdx.x;
    const float *zs = student + (size_t)row * vocab, *zt = teacher + (size_t)row * vocab;
    float *dz = dlogits ? dlogits + (size_t)row * vocab : NULL;
    float ms, mt;
    double ss, st;
    block_lse(zs, vocab, ms, ss);
    block_lse(zt, vocab, mt, st);
    const double lse_s = (double)ms + log(ss), lse_t = (double)mt + log(st);
    double kl = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        double lpt = (double)zt[i] - lse_t, lps = (double)zs[i] - lse_s;
        double pt = exp(lpt);
        kl += pt * (lpt - lps);
        if (dz)
            dz[i] = (float)(exp(lps) - pt) * grad_scale;
    }
    kl = block_sum(kl);
    if (threadIdx.x == 0)
        losses[row] = (float)kl;
}

int rl__cuda_cross_entropy(rl_backend *be, float *losses, float *dlogits, const float *logits,
                           const int32_t *targets, int rows, int vocab, float grad_scale)
{
    rlc_backend *c = rlc_of(be);
    cross_entropy_kernel<<<(unsigned)rows, VOCAB_THREADS, 0, c->stream>>>(losses, dlogits, logits, targets, vocab,
                                                                          grad_scale, c->bad_dev);
    return rlc_launched(be, "rl_cross_entropy");
}

int rl__cuda_kl_divergence(rl_backend *be, float *losses, float *dlogits, const float *s, const float *t,
                           int rows, int vocab, float grad_scale)
{
    kl_kernel<<<(unsigned)rows, VOCAB_THREADS, 0, rlc_of(be)->stream>>>(losses, dlogits, s, t, vocab, grad_scale);
    return rlc_launched(be, "rl_kl_divergence");
}

/* ---- hidden-state losses: l2 = ‖a − b‖/√D, mse = mean((a − b)²), sums in double ---- */

__global__ static void sqdist_kernel(float *losses, const float *a, const float *b, int dim, int root)
{
    const size_t row = blockIdx.x;
    const float *x = a + row * dim, *y = b + row * dim;
    double ss = 0.0;
    for (int j = threadIdx.x; j < dim; j += blockDim.x) {
        double d = (double)(x[j] - y[j]);
        ss += d * d;
    }
    ss = block_sum(ss);
    if (threadIdx.x == 0)
        losses[row] = root ? (float)sqrt(ss / (double)dim) : (float)(ss / (double)dim);
}

/* da += c_r·(a − b): l2 with c_r = grad_scale/(loss_r·D) (0 where loss_r = 0), mse with c = 2·grad_scale/D */
__global__ static void sqdist_backward_kernel(float *da, const float *a, const float *b, const float *losses,
                                              float grad_scale, int dim, size_t n)
{
    GRID_STRIDE(i, n)
    {
        float c;
        if (losses) {
            float l = losses[i / (size_t)dim];
            if (l == 0.0f)
                continue;
            c = grad_scale / (l * (float)dim);
        } else {
            c = 2.0f * grad_scale / (float)dim;
        }
        da[i] += c * (a[i] - b[i]);
    }
}

int rl__cuda_l2_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim)
{
    sqdist_kernel<<<(unsigned)rows, row_threads(dim), 0, rlc_of(be)->stream>>>(losses, a, b, dim, 1);
    return rlc_launched(be, "rl_l2_distance_forward");
}

int rl__cuda_l2_backward(rl_backend *be, float *da, const float *a, const float *b, const float *losses,
                         float grad_scale, int rows, int dim)
{
    size_t n = (size_t)rows * dim;
    sqdist_backward_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(da, a, b, losses, grad_scale, dim, n);
    return rlc_launched(be, "rl_l2_distance_backward");
}

int rl__cuda_mse_forward(rl_backend *be, float *losses, const float *a, const float *b, int rows, int dim)
{
    sqdist_kernel<<<(unsigned)rows, row_threads(dim), 0, rlc_of(be)->stream>>>(losses, a, b, dim, 0);
    return rlc_launched(be, "rl_mse_forward");
}

int rl__cuda_mse_backward(rl_backend *be, float *da, const float *a, const float *b, float grad_scale, int rows,
                          int dim)
{
    size_t n = (size_t)rows * dim;
    sqdist_backward_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(da, a, b, NULL, grad_scale, dim, n);
    return rlc_launched(be, "rl_mse_backward");
}

/* ---- AdamW, as torch.optim.AdamW (kernels.h); bias corrections computed on the host as on the CPU ---- */

struct adamw_consts {
    float lr, b1, b2, eps, decay, bc1, bc2, grad_scale;
};

static adamw_consts adamw_of(const rl_adamw_params *hp, float grad_scale)
{
    return adamw_consts{hp->lr, hp->beta1, hp->beta2, hp->eps, 1.0f - hp->lr * hp->weight_decay,
                        (float)(1.0 - pow((double)hp->beta1, (double)hp->step)),
                        (float)(1.0 - pow((double)hp->beta2, (double)hp->step)), grad_scale};
}

/* One element: the CPU backend's expression, operation for operation. */
__device__ static inline float adamw_elem(float p, float g, float *m, float *v, const adamw_consts &k)
{
    float gi = g * k.grad_scale;
    float mi = k.b1 * *m + (1.0f - k.b1) * gi;
    float vi = k.b2 * *v + (1.0f - k.b2) * gi * gi;
    *m = mi;
    *v = vi;
    return p * k.decay - k.lr * (mi / k.bc1) / (sqrtf(vi / k.bc2) + k.eps);
}

__global__ static void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, adamw_consts k)
{
    GRID_STRIDE(i, n)
    p[i] = adamw_elem(p[i], g[i], &m[i], &v[i], k);
}

/* bf16 weights: the fp32 master is updated, the weights become its round-to-nearest-even bf16 */
__global__ static void adamw_bf16_kernel(__nv_bfloat16 *p16, float *master, const __nv_bfloat16 *g16, float *m,
                                         float *v, size_t n, adamw_consts k)
{
    GRID_STRIDE(i, n)
    {
        const float w = adamw_elem(master[i], __bfloat162float(g16[i]), &m[i], &v[i], k);
        master[i] = w;
        p16[i] = __float2bfloat16_rn(w);
    }
}

int rl__cuda_adamw(rl_backend *be, float *p, const float *g, float *m, float *v, size_t n,
                   const rl_adamw_params *hp, float grad_scale)
{
    if (!n)
        return 0;
    adamw_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(p, g, m, v, n, adamw_of(hp, grad_scale));
    return rlc_launched(be, "rl_adamw_update");
}

int rl__cuda_adamw_bf16(rl_backend *be, uint16_t *p16, float *master, const uint16_t *g16, float *m, float *v,
                        size_t n, const rl_adamw_params *hp, float grad_scale)
{
    if (!n)
        return 0;
    adamw_bf16_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(
        (__nv_bfloat16 *)p16, master, (const __nv_bfloat16 *)g16, m, v, n, adamw_of(hp, grad_scale));
    return rlc_launched(be, "rl_adamw_update_bf16");
}
