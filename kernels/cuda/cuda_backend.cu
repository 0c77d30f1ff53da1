/* cuda_backend.cu — the CUDA backend: device and stream, memory, casts, sticky errors, and the op table.
 *
 * Every op is queued on one non-blocking stream and returns without waiting; a launch error is reported
 * at once, a fault or a bad input found by a kernel (an id outside the vocabulary) at the next sync
 * (rl_backend_status, rl_download, rl_sum). The GEMMs live in cuda_gemm.cu, the layer and loss kernels in
 * cuda_layers.cu, the recurrences, attention and RAD-RWKV mixes behind the launchers of cuda_ops.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_bf16.h>

#include "cuda_int.h" /* first: it includes the C headers with C linkage */
#include "cuda_backend.h"

int rlc_fail_cuda(rl_backend *be, cudaError_t e, const char *op)
{
    if (e == cudaSuccess)
        return 0;
    int code = e == cudaErrorMemoryAllocation ? RL_ENOMEM : RL_EINVAL;
    return rl__fail(be, code, "cuda backend: %s: %s (%s)", op, cudaGetErrorString(e), cudaGetErrorName(e));
}

int rlc_env_knob(const char *name, const int *allowed, int n, int dflt)
{
    const char *e = getenv(name);
    if (!e || !*e)
        return dflt;
    char *end;
    const long v = strtol(e, &end, 10);
    for (int i = 0; i < n && !*end; i++)
        if (v == allowed[i])
            return (int)v;
    fprintf(stderr, "radlads: %s=%s ignored (not one of the values it takes); using the default\n", name, e);
    return dflt;
}

int rlc_smem_optin(void)
{
    static int cache[64]; /* per device; 0: not yet read */
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
        (void)cudaGetLastError();
        return 0;
    }
    if (!cache[dev]) {
        int optin = 0;
        if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess || optin <= 0) {
            (void)cudaGetLastError();
            return 0;
        }
        const char *t = getenv("RADLADS_TEST_SMEM_OPTIN");
        char *end = NULL;
        const long cap = t && *t ? strtol(t, &end, 10) : 0;
        if (t && *t && (*end || cap <= 0))
            fprintf(stderr, "radlads: RADLADS_TEST_SMEM_OPTIN=%s ignored (a number of bytes above 0)\n", t);
        else if (cap > 0 && cap < optin)
            optin = (int)cap;
        cache[dev] = optin;
    }
    return cache[dev];
}

static const char *bad_op_name(int op)
{
    switch (op) {
    case RLC_BAD_EMBED_FWD: return "rl_embedding_forward";
    case RLC_BAD_EMBED_BWD: return "rl_embedding_backward";
    case RLC_BAD_CE_TARGET: return "rl_cross_entropy";
    }
    return "?";
}

/* Waits for the stream, then reports (once) any bad input a kernel flagged since the last sync. */
static int cuda_sync(rl_backend *be)
{
    rlc_backend *c = rlc_of(be);
    cudaError_t e = cudaMemcpyAsync(c->bad_host, c->bad_dev, sizeof(int) * RLC_FLAG_INTS, cudaMemcpyDeviceToHost,
                                    c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess)
        return rlc_fail_cuda(be, e, "sync");
    int op = c->bad_host[RLC_FLAG_OP];
    if (op == RLC_BAD_NONE)
        return 0;
    int value = c->bad_host[RLC_FLAG_VALUE], row = c->bad_host[RLC_FLAG_ROW], bound = c->bad_host[RLC_FLAG_BOUND];
    /* clear it so the next sync does not report the same input again */
    e = cudaMemsetAsync(c->bad_dev, 0, sizeof(int) * RLC_FLAG_INTS, c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    c->bad_host[RLC_FLAG_OP] = 0;
    if (op == RLC_BAD_CE_TARGET)
        rl__fail(be, RL_ERANGE, "rl_cross_entropy: target %d at row %d is outside [0, %d) (-1 = ignore)", value,
                 row, bound);
    else
        rl__fail(be, RL_ERANGE, "%s: token id %d at position %d is outside the vocabulary [0, %d)", bad_op_name(op),
                 value, row, bound);
    if (e != cudaSuccess)
        rlc_fail_cuda(be, e, "sync");
    return RL_ERANGE;
}

static void cuda_destroy(rl_backend *be)
{
    rlc_backend *c = rlc_of(be);
    if (!c)
        return;
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    rl__cuda_gemm_cache_free(c);
    if (c->lt)
        cublasLtDestroy(c->lt);
    cudaFree(c->lt_ws);
    cudaFree(c->ws.ptr);
    cudaFree(c->bad_dev);
    cudaFree(c->partials);
    cudaFreeHost(c->bad_host);
    cudaFreeHost(c->sum_host);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
    be->impl = NULL;
}

/* ---- memory ---- */

static void *cuda_malloc(rl_backend *be, size_t bytes)
{
    void *p = NULL;
    /* a zero-byte request still gets a distinct, freeable pointer, as on the CPU */
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e == cudaSuccess)
        return p;
    cudaGetLastError(); /* an allocation failure is not sticky in the runtime; keep it out of the next check */
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    rl__fail(be, e == cudaErrorMemoryAllocation ? RL_ENOMEM : RL_EINVAL,
             "cuda backend: cannot allocate %zu bytes (%.1f MiB) on device %d: %s; %.1f MiB of %.1f MiB free — "
             "reduce the batch, sequence or model size",
             bytes, (double)bytes / 1048576.0, rlc_of(be)->device, cudaGetErrorString(e),
             (double)free_b / 1048576.0, (double)total_b / 1048576.0);
    return NULL;
}

static void cuda_free(rl_backend *be, void *p)
{
    /* cudaFree waits for the device, so memory still read by queued work is not reused early */
    rlc_fail_cuda(be, cudaFree(p), "rl_free");
}

/* Host sources are pageable memory, which the driver stages before the call returns, so the caller may
 * reuse its buffer at once. */
static int cuda_upload(rl_backend *be, void *dst, const void *src, size_t bytes)
{
    if (!bytes)
        return 0;
    return rlc_fail_cuda(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, rlc_of(be)->stream),
                         "rl_upload");
}

static int cuda_download(rl_backend *be, void *dst, const void *src, size_t bytes)
{
    if (bytes) {
        int rc = rlc_fail_cuda(
            be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, rlc_of(be)->stream), "rl_download");
        if (rc)
            return rc;
    }
    return cuda_sync(be);
}

/* rl_copy allows overlap (memmove); cudaMemcpy does not, so overlapping ranges go through a temporary. */
static int cuda_copy(rl_backend *be, void *dst, const void *src, size_t bytes)
{
    rlc_backend *c = rlc_of(be);
    if (!bytes || dst == src)
        return 0;
    const char *d = (const char *)dst, *s = (const char *)src;
    if (d + bytes <= s || s + bytes <= d)
        return rlc_fail_cuda(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream), "rl_copy");
    void *tmp = NULL;
    cudaError_t e = cudaMallocAsync(&tmp, bytes, c->stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, c->stream);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, c->stream);
    if (tmp) {
        cudaError_t f = cudaFreeAsync(tmp, c->stream);
        if (e == cudaSuccess)
            e = f;
    }
    return rlc_fail_cuda(be, e, "rl_copy (overlapping ranges)");
}

static int cuda_zero(rl_backend *be, void *dst, size_t bytes)
{
    if (!bytes)
        return 0;
    return rlc_fail_cuda(be, cudaMemsetAsync(dst, 0, bytes, rlc_of(be)->stream), "rl_zero");
}

/* ---- casts: the same bit-exact rounding as dtype.c (round to nearest even, NaN stays NaN) ---- */

__device__ static uint16_t dev_f32_to_bf16(float f)
{
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__device__ static float dev_bf16_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

__device__ static float dev_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f)
        return __uint_as_float(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return __uint_as_float(sign);
        float v = (float)man * (1.0f / 16777216.0f); /* subnormal: man · 2^-24, exact */
        return sign ? -v : v;
    }
    return __uint_as_float(sign | ((exp + 112u) << 23) | (man << 13));
}

__device__ static uint16_t dev_f32_to_f16(float f)
{
    uint32_t u = __float_as_uint(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
    if (abs >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00u);
    if (abs < 0x38800000u) {
        if (abs < 0x33000000u)
            return sign;
        uint32_t e = abs >> 23;
        uint32_t m = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e;
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = abs - 0x38000000u;
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

__device__ static float load_as_f32(const void *src, int st, size_t i)
{
    if (st == RL_DTYPE_F32)
        return ((const float *)src)[i];
    uint16_t h = ((const uint16_t *)src)[i];
    return st == RL_DTYPE_BF16 ? dev_bf16_to_f32(h) : dev_f16_to_f32(h);
}

/* One rounding at most: BF16 and F16 both widen to F32 exactly, so BF16 <-> F16 is exact-then-rounded. */
__global__ static void cast_kernel(void *dst, int dt, const void *src, int st, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float f = load_as_f32(src, st, i);
        if (dt == RL_DTYPE_F32)
            ((float *)dst)[i] = f;
        else
            ((uint16_t *)dst)[i] = dt == RL_DTYPE_BF16 ? dev_f32_to_bf16(f) : dev_f32_to_f16(f);
    }
}

static int cuda_cast(rl_backend *be, void *dst, rl_dtype dt, const void *src, rl_dtype st, size_t n)
{
    if (!n)
        return 0;
    if (dt == st)
        return cuda_copy(be, dst, src, n * rl_dtype_size(dt));
    cast_kernel<<<rlc_grid(n, 256), 256, 0, rlc_of(be)->stream>>>(dst, (int)dt, src, (int)st, n);
    return rlc_launched(be, "rl_cast");
}

/* ---- the launchers of cuda_ops.h, behind the op table ---- */

#define RLC_CALL(op, call) return rlc_fail_cuda(be, (call), op)
#define ST rlc_of(be)->stream
#define WS &rlc_of(be)->ws

#ifndef RLC_NO_ATTENTION
static int cuda_attention_forward(rl_backend *be, const rl_attn_dims *d, float *out, float *lse, const float *q,
                                  const float *k, const float *v)
{
    RLC_CALL("rl_attention_forward", rlc_attention_forward(ST, WS, d, out, lse, q, k, v));
}
static int cuda_attention_backward(rl_backend *be, const rl_attn_dims *d, float *dq, float *dk, float *dv,
                                   float *delta, const float *dout, const float *out, const float *lse,
                                   const float *q, const float *k, const float *v)
{
    RLC_CALL("rl_attention_backward",
             rlc_attention_backward(ST, WS, d, dq, dk, dv, delta, dout, out, lse, q, k, v));
}
#endif

#ifndef RLC_NO_WKV
static int cuda_wkv7_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                             const rl_wkv_in *in, const float *state_in)
{
    RLC_CALL("rl_wkv7_forward", rlc_wkv7_forward(ST, WS, d, y, state_out, ckpt, in, state_in));
}
static int cuda_wkv7_backward(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                              const float *dy, const float *dstate_out, const rl_wkv_in *in,
                              const float *state_in, const float *ckpt)
{
    RLC_CALL("rl_wkv7_backward", rlc_wkv7_backward(ST, WS, d, g, dstate_in, dy, dstate_out, in, state_in, ckpt));
}
static int cuda_wkv6_forward(rl_backend *be, const rl_wkv_dims *d, float *y, float *state_out, float *ckpt,
                             const rl_wkv_in *in, const float *state_in)
{
    RLC_CALL("rl_wkv6_forward", rlc_wkv6_forward(ST, WS, d, y, state_out, ckpt, in, state_in));
}
static int cuda_wkv6_backward(rl_backend *be, const rl_wkv_dims *d, const rl_wkv_grad *g, float *dstate_in,
                              const float *dy, const float *dstate_out, const rl_wkv_in *in,
                              const float *state_in, const float *ckpt)
{
    RLC_CALL("rl_wkv6_backward", rlc_wkv6_backward(ST, WS, d, g, dstate_in, dy, dstate_out, in, state_in, ckpt));
}
#endif

#ifndef RLC_NO_MIX
static int cuda_act_forward(rl_backend *be, rl_act kind, float *y, const float *x, size_t n)
{
    RLC_CALL("rl_act_forward", rlc_act_forward(ST, kind, y, x, n));
}
static int cuda_act_backward(rl_backend *be, rl_act kind, float *dx, const float *dy, const float *y, size_t n)
{
    RLC_CALL("rl_act_backward", rlc_act_backward(ST, kind, dx, dy, y, n));
}
static int cuda_rwkv7_mix_forward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_out *out,
                                  float *v_first, const rl_rwkv7_mix_in *in)
{
    RLC_CALL("rl_rwkv7_mix_forward", rlc_rwkv7_mix_forward(ST, WS, d, out, v_first, in));
}
static int cuda_rwkv7_mix_backward(rl_backend *be, const rl_rwkv7_mix_dims *d, const rl_rwkv7_mix_grad *g,
                                   float *dv_first, const rl_rwkv7_mix_out *dout, const rl_rwkv7_mix_in *in,
                                   const float *v_first)
{
    RLC_CALL("rl_rwkv7_mix_backward", rlc_rwkv7_mix_backward(ST, WS, d, g, dv_first, dout, in, v_first));
}
static int cuda_readout_forward(rl_backend *be, const rl_readout_dims *d, float *out, float *mean, float *rstd,
                                const float *o, const float *g, const float *weight, const float *bias)
{
    RLC_CALL("rl_readout_forward", rlc_readout_forward(ST, d, out, mean, rstd, o, g, weight, bias));
}
static int cuda_readout_backward(rl_backend *be, const rl_readout_dims *d, float *d_o, float *dg, float *dweight,
                                 float *dbias, const float *dout, const float *o, const float *g,
                                 const float *weight, const float *bias, const float *mean, const float *rstd)
{
    RLC_CALL("rl_readout_backward",
             rlc_readout_backward(ST, WS, d, d_o, dg, dweight, dbias, dout, o, g, weight, bias, mean, rstd));
}
static int cuda_tokenshift_forward(rl_backend *be, const rl_shift_dims *d, float *out, const float *u,
                                   const float *state, const float *mix)
{
    RLC_CALL("rl_tokenshift_forward", rlc_tokenshift_forward(ST, d, out, u, state, mix));
}
static int cuda_tokenshift_backward(rl_backend *be, const rl_shift_dims *d, float *du, float *dstate, float *dmix,
                                    const float *dout, const float *u, const float *state, const float *mix)
{
    RLC_CALL("rl_tokenshift_backward", rlc_tokenshift_backward(ST, WS, d, du, dstate, dmix, dout, u, state, mix));
}
static int cuda_rwkv6_ddlerp_forward(rl_backend *be, const rl_shift_dims *d, int rank, float *const x[5],
                                     const float *u, const float *state, const float *const maa[5],
                                     const float *s, const float *w2)
{
    RLC_CALL("rl_rwkv6_ddlerp_forward", rlc_rwkv6_ddlerp_forward(ST, d, rank, x, u, state, maa, s, w2));
}
static int cuda_rwkv6_ddlerp_backward(rl_backend *be, const rl_shift_dims *d, int rank, float *du, float *dstate,
                                      float *const dmaa[5], float *ds, float *dw2, const float *const dx[5],
                                      const float *u, const float *state, const float *const maa[5],
                                      const float *s, const float *w2)
{
    RLC_CALL("rl_rwkv6_ddlerp_backward",
             rlc_rwkv6_ddlerp_backward(ST, WS, d, rank, du, dstate, dmaa, ds, dw2, dx, u, state, maa, s, w2));
}
static int cuda_rwkv6_mix_forward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *logw, float *kt, float *vt,
                                  float *qt, const float *k, const float *v, const float *q, const float *dlora,
                                  const float *decay)
{
    RLC_CALL("rl_rwkv6_mix_forward", rlc_rwkv6_mix_forward(ST, d, logw, kt, vt, qt, k, v, q, dlora, decay));
}
static int cuda_rwkv6_mix_backward(rl_backend *be, const rl_rwkv6_mix_dims *d, float *dk, float *dv, float *dq,
                                   float *ddlora, float *ddecay, const float *dlogw, const float *dkt,
                                   const float *dvt, const float *dqt, const float *k, const float *dlora,
                                   const float *decay)
{
    RLC_CALL("rl_rwkv6_mix_backward",
             rlc_rwkv6_mix_backward(ST, WS, d, dk, dv, dq, ddlora, ddecay, dlogw, dkt, dvt, dqt, k, dlora, decay));
}
#endif

#undef RLC_CALL
#undef ST
#undef WS

/* Until a launcher file is in the build (meson defines RLC_NO_<group>), its slots refuse with a message. */
#if defined(RLC_NO_ATTENTION) || defined(RLC_NO_WKV) || defined(RLC_NO_MIX)
static int not_built(rl_backend *be, const char *group)
{
    return rl__fail(be, RL_ENOTSUP, "cuda backend: the %s kernels are not in this build", group);
}
#endif
#ifdef RLC_NO_ATTENTION
static int cuda_attention_forward(rl_backend *be, const rl_attn_dims *, float *, float *, const float *,
                                  const float *, const float *)
{
    return not_built(be, "attention");
}
static int cuda_attention_backward(rl_backend *be, const rl_attn_dims *, float *, float *, float *, float *,
                                   const float *, const float *, const float *, const float *, const float *,
                                   const float *)
{
    return not_built(be, "attention");
}
#endif
#ifdef RLC_NO_WKV
static int cuda_wkv7_forward(rl_backend *be, const rl_wkv_dims *, float *, float *, float *, const rl_wkv_in *,
                             const float *)
{
    return not_built(be, "wkv");
}
static int cuda_wkv7_backward(rl_backend *be, const rl_wkv_dims *, const rl_wkv_grad *, float *, const float *,
                              const float *, const rl_wkv_in *, const float *, const float *)
{
    return not_built(be, "wkv");
}
#define cuda_wkv6_forward cuda_wkv7_forward
#define cuda_wkv6_backward cuda_wkv7_backward
#endif
#ifdef RLC_NO_MIX
static int cuda_act_forward(rl_backend *be, rl_act, float *, const float *, size_t) { return not_built(be, "mix"); }
static int cuda_act_backward(rl_backend *be, rl_act, float *, const float *, const float *, size_t)
{
    return not_built(be, "mix");
}
static int cuda_rwkv7_mix_forward(rl_backend *be, const rl_rwkv7_mix_dims *, const rl_rwkv7_mix_out *, float *,
                                  const rl_rwkv7_mix_in *)
{
    return not_built(be, "mix");
}
static int cuda_rwkv7_mix_backward(rl_backend *be, const rl_rwkv7_mix_dims *, const rl_rwkv7_mix_grad *, float *,
                                   const rl_rwkv7_mix_out *, const rl_rwkv7_mix_in *, const float *)
{
    return not_built(be, "mix");
}
static int cuda_readout_forward(rl_backend *be, const rl_readout_dims *, float *, float *, float *, const float *,
                                const float *, const float *, const float *)
{
    return not_built(be, "mix");
}
static int cuda_readout_backward(rl_backend *be, const rl_readout_dims *, float *, float *, float *, float *,
                                 const float *, const float *, const float *, const float *, const float *,
                                 const float *, const float *)
{
    return not_built(be, "mix");
}
static int cuda_tokenshift_forward(rl_backend *be, const rl_shift_dims *, float *, const float *, const float *,
                                   const float *)
{
    return not_built(be, "mix");
}
static int cuda_tokenshift_backward(rl_backend *be, const rl_shift_dims *, float *, float *, float *,
                                    const float *, const float *, const float *, const float *)
{
    return not_built(be, "mix");
}
static int cuda_rwkv6_ddlerp_forward(rl_backend *be, const rl_shift_dims *, int, float *const[5], const float *,
                                     const float *, const float *const[5], const float *, const float *)
{
    return not_built(be, "mix");
}
static int cuda_rwkv6_ddlerp_backward(rl_backend *be, const rl_shift_dims *, int, float *, float *,
                                      float *const[5], float *, float *, const float *const[5], const float *,
                                      const float *, const float *const[5], const float *, const float *)
{
    return not_built(be, "mix");
}
static int cuda_rwkv6_mix_forward(rl_backend *be, const rl_rwkv6_mix_dims *, float *, float *, float *, float *,
                                  const float *, const float *, const float *, const float *, const float *)
{
    return not_built(be, "mix");
}
static int cuda_rwkv6_mix_backward(rl_backend *be, const rl_rwkv6_mix_dims *, float *, float *, float *, float *,
                                   float *, const float *, const float *, const float *, const float *,
                                   const float *, const float *, const float *)
{
    return not_built(be, "mix");
}
#endif

static const rl__ops cuda_ops = {
    .destroy = cuda_destroy,
    .sync = cuda_sync,
    .malloc = cuda_malloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .copy = cuda_copy,
    .zero = cuda_zero,
    .cast = cuda_cast,
    .add = rl__cuda_add,
    .accumulate = rl__cuda_accumulate,
    .scale = rl__cuda_scale,
    .sum = rl__cuda_sum,
    .sum_many = rl__cuda_sum_many,
    .matmul = rl__cuda_matmul,
    .bias_backward = rl__cuda_bias_backward,
    .embedding_forward = rl__cuda_embedding_forward,
    .embedding_backward = rl__cuda_embedding_backward,
    .rmsnorm_forward = rl__cuda_rmsnorm_forward,
    .rmsnorm_backward = rl__cuda_rmsnorm_backward,
    .rope = rl__cuda_rope,
    .swiglu_forward = rl__cuda_swiglu_forward,
    .swiglu_backward = rl__cuda_swiglu_backward,
    .attention_forward = cuda_attention_forward,
    .attention_backward = cuda_attention_backward,
    .cross_entropy = rl__cuda_cross_entropy,
    .kl_divergence = rl__cuda_kl_divergence,
    .l2_forward = rl__cuda_l2_forward,
    .l2_backward = rl__cuda_l2_backward,
    .mse_forward = rl__cuda_mse_forward,
    .mse_backward = rl__cuda_mse_backward,
    .adamw = rl__cuda_adamw,
    .adamw_bf16 = rl__cuda_adamw_bf16,
    .wkv7_forward = cuda_wkv7_forward,
    .wkv7_backward = cuda_wkv7_backward,
    .wkv6_forward = cuda_wkv6_forward,
    .wkv6_backward = cuda_wkv6_backward,
    .act_forward = cuda_act_forward,
    .act_backward = cuda_act_backward,
    .rwkv7_mix_forward = cuda_rwkv7_mix_forward,
    .rwkv7_mix_backward = cuda_rwkv7_mix_backward,
    .readout_forward = cuda_readout_forward,
    .readout_backward = cuda_readout_backward,
    .tokenshift_forward = cuda_tokenshift_forward,
    .tokenshift_backward = cuda_tokenshift_backward,
    .rwkv6_ddlerp_forward = cuda_rwkv6_ddlerp_forward,
    .rwkv6_ddlerp_backward = cuda_rwkv6_ddlerp_backward,
    .rwkv6_mix_forward = cuda_rwkv6_mix_forward,
    .rwkv6_mix_backward = cuda_rwkv6_mix_backward,
};

extern "C" cudaStream_t rl__cuda_stream(rl_backend *be)
{
    return be && be->ops == &cuda_ops ? rlc_of(be)->stream : (cudaStream_t)0;
}

extern "C" void *rl__cuda_stream_ptr(rl_backend *be)
{
    return (void *)rl__cuda_stream(be);
}

extern "C" int rl__cuda_device(const rl_backend *be)
{
    return be && be->ops == &cuda_ops ? ((const rlc_backend *)be->impl)->device : -1;
}

/* Whether this build's kernels run on device `dev` (current): compute capability 8.0 or newer (cp.async, bf16 tensor
 * cores), and kernel images the device can load — the build carries sm_80 and sm_90 code, which Ampere and Hopper
 * run (sm_86/sm_89 the sm_80 code), and compute_90 PTX that the driver compiles for newer GPUs (Blackwell) at the
 * first load and keeps in its cache (CUDA_CACHE_PATH). Loading one kernel of each large module here (the rest are
 * small) fails a device without code now, with the fix, not in the first op of a stage, and does the driver's
 * compile before any deadline (NCCL's) runs. */
static bool load_failed(cudaError_t e, const char *what, int dev, const cudaDeviceProp *prop, char *err, size_t errlen)
{
    if (e == cudaSuccess)
        return false;
    const char *fix =
        e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction
            ? "this build has no code for it: add its architecture to cuda_arch_args in meson.build "
              "(-gencode=arch=compute_XY,code=sm_XY) and rebuild, or use the CPU backend (--device cpu)"
        : e == cudaErrorUnsupportedPtxVersion
            ? "the NVIDIA driver is older than the CUDA toolkit that compiled radlads, so it cannot compile the PTX "
              "for this GPU: update the driver, or rebuild with the toolkit the driver supports"
            : "use the CPU backend (--device cpu), or report this with the error";
    snprintf(err, errlen, "cuda backend: device %d (%s, compute capability %d.%d): loading the %s kernels failed: %s "
             "(%s); %s", dev, prop->name, prop->major, prop->minor, what, cudaGetErrorString(e), cudaGetErrorName(e),
             fix);
    (void)cudaGetLastError();
    return true;
}

static bool device_supported(int dev, char *err, size_t errlen)
{
    cudaDeviceProp prop;
    cudaError_t e = cudaGetDeviceProperties(&prop, dev);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cuda backend: device %d: cudaGetDeviceProperties failed: %s", dev,
                 cudaGetErrorString(e));
        (void)cudaGetLastError();
        return false;
    }
    if (prop.major < 8) {
        snprintf(err, errlen, "cuda backend: device %d (%s) has compute capability %d.%d; the CUDA kernels need 8.0 or "
                 "newer (Ampere, Hopper, Blackwell): use the CPU backend (--device cpu) or another GPU", dev, prop.name,
                 prop.major, prop.minor);
        return false;
    }
    if (prop.major > 9)
        fprintf(stderr, "cuda backend: device %d (%s, compute capability %d.%d): this build has no machine code for it, "
                "so the driver compiles the kernels' PTX now (the first time only: minutes; then cached)\n", dev,
                prop.name, prop.major, prop.minor);
    cudaFuncAttributes fa;
    if (load_failed(cudaFuncGetAttributes(&fa, cast_kernel), "backend", dev, &prop, err, errlen))
        return false;
#ifndef RLC_NO_WKV
    if (load_failed(rlc_wkv_load(), "wkv", dev, &prop, err, errlen))
        return false;
#endif
#ifndef RLC_NO_ATTENTION
    if (load_failed(rlc_attention_load(), "attention", dev, &prop, err, errlen))
        return false;
#endif
    return true;
}

/* Device `opt->device`, one non-blocking stream for every op, a cuBLASLt handle with its scratch. The
 * device is made current for the calling thread; a backend used from another thread needs cudaSetDevice
 * there first (one device per process is the intended use: one MPI rank per GPU). */
extern "C" int rl__cuda_init(rl_backend *be, const rl_backend_options *opt, char *err, size_t errlen)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(err, errlen, "cuda backend: no usable CUDA device (%s); use the CPU backend",
                 e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount found 0 devices");
        cudaGetLastError();
        return RL_ENOTSUP;
    }
    if (opt->device < 0 || opt->device >= count) {
        snprintf(err, errlen, "cuda backend: device %d does not exist; this machine has devices 0..%d", opt->device,
                 count - 1);
        return RL_EINVAL;
    }
    rlc_backend *c = (rlc_backend *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "cuda backend: out of memory");
        return RL_ENOMEM;
    }
    c->device = opt->device;
    be->impl = c;
    be->ops = &cuda_ops;
    be->name = "cuda";
    be->num_threads = 1;
    be->gemm_bf16 = 1; /* cuBLASLt BF16 × BF16 → F32 with fp32 accumulation: the autocast GEMMs */
    const char *step = "cudaSetDevice";
    e = cudaSetDevice(c->device);
    if (e == cudaSuccess && !device_supported(c->device, err, errlen)) {
        cuda_destroy(be);
        return RL_ENOTSUP;
    }
    if (e == cudaSuccess)
        step = "cudaStreamCreate", e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess)
        step = "cudaMalloc (cuBLASLt workspace)", e = cudaMalloc(&c->lt_ws, RLC_LT_WORKSPACE);
    if (e == cudaSuccess)
        step = "cudaMalloc (error flag)", e = cudaMalloc((void **)&c->bad_dev, sizeof(int) * RLC_FLAG_INTS);
    if (e == cudaSuccess)
        step = "cudaMalloc (sum partials)", e = cudaMalloc((void **)&c->partials, sizeof(double) * (RLC_SUM_BLOCKS + RLC_SUM_MANY));
    if (e == cudaSuccess)
        step = "cudaMallocHost", e = cudaMallocHost((void **)&c->bad_host, sizeof(int) * RLC_FLAG_INTS);
    if (e == cudaSuccess)
        e = cudaMallocHost((void **)&c->sum_host, sizeof(double) * RLC_SUM_MANY);
    if (e == cudaSuccess)
        step = "cudaMemset", e = cudaMemsetAsync(c->bad_dev, 0, sizeof(int) * RLC_FLAG_INTS, c->stream);
    if (e == cudaSuccess)
        step = "cudaStreamSynchronize", e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cuda backend: device %d: %s failed: %s", c->device, step, cudaGetErrorString(e));
        cuda_destroy(be);
        return e == cudaErrorMemoryAllocation ? RL_ENOMEM : RL_EINVAL;
    }
    c->bad_host[RLC_FLAG_OP] = 0;
    cublasStatus_t s = cublasLtCreate(&c->lt);
    if (s != CUBLAS_STATUS_SUCCESS) {
        snprintf(err, errlen, "cuda backend: device %d: cublasLtCreate failed: %s", c->device,
                 cublasLtGetStatusString(s));
        c->lt = NULL;
        cuda_destroy(be);
        return RL_EINVAL;
    }
    return 0;
}
