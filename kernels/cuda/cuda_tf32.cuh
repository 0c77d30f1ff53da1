/* cuda_tf32.cuh — fp32-accurate matrix products of small shared-memory tiles on the tensor cores, for kernels
 * that keep their operands in shared memory (cuda_wkv7_chunked.cuh, cuda_attention.cu). Included inside a .cu
 * file's anonymous namespace (and by the host emulation checks, whose cuda_emu.h provides nvcuda::wmma).
 *
 * A product is cut into 16 × 16 output tiles; each is one warp's wmma TF32 m16n16k8 loop with fp32
 * accumulation. TF32 keeps 10 mantissa bits, so every operand is split x = hi + lo (both TF32) and a product
 * is hi·hi + hi·lo + lo·hi ("3xTF32", the lo·lo term is below fp32 rounding): fp32-level accuracy at a third
 * of the TF32 rate. wmma's rules hold for every call: tile pointers 32-byte aligned, ld a multiple of 4
 * floats, all 32 lanes of the warp together. */
#ifndef RL_CUDA_TF32_CUH
#define RL_CUDA_TF32_CUH

#include <type_traits>

#include "cuda_ops.h" /* rlc_device_attr, rlc_smem_optin */
#ifndef RL_TESTS_CUDA_EMU_H /* the host emulation (tests/gpu/cuda_emu.h) brings its own */
#include <mma.h>
#endif

/* A matrix operand X[m][k] in shared memory: at p[m·ld + k], or (t) at p[k·ld + m] — a transposed view. */
struct tc_view {
    const float *p;
    int ld;
    bool t;
};

struct tc_prod {
    tc_view a, b; /* a: M×K, b: K×N */
    int K;
};

template <class Frag> __device__ __forceinline__ void tc_split(Frag &hi, Frag &lo)
{
    for (int i = 0; i < hi.num_elements; i++) {
        const float x = hi.x[i], h = nvcuda::wmma::__float_to_tf32(x);
        hi.x[i] = h;
        lo.x[i] = nvcuda::wmma::__float_to_tf32(x - h);
    }
}

/* acc += A[m0.., 0..K) · B[0..K, n0..) for one 16 × 16 tile, in 3xTF32. */
template <bool TA, bool TB>
__device__ __forceinline__ void
tc_mma(nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> &acc, const tc_prod &pr, int m0,
       int n0)
{
    namespace w = nvcuda::wmma;
    using LA = typename std::conditional<TA, w::col_major, w::row_major>::type;
    using LB = typename std::conditional<TB, w::col_major, w::row_major>::type;
    w::fragment<w::matrix_a, 16, 16, 8, w::precision::tf32, LA> ah, al;
    w::fragment<w::matrix_b, 16, 16, 8, w::precision::tf32, LB> bh, bl;
    for (int k0 = 0; k0 < pr.K; k0 += 8) {
        w::load_matrix_sync(ah, TA ? pr.a.p + (size_t)k0 * pr.a.ld + m0 : pr.a.p + (size_t)m0 * pr.a.ld + k0,
                            pr.a.ld);
        w::load_matrix_sync(bh, TB ? pr.b.p + (size_t)n0 * pr.b.ld + k0 : pr.b.p + (size_t)k0 * pr.b.ld + n0,
                            pr.b.ld);
        tc_split(ah, al);
        tc_split(bh, bl);
        w::mma_sync(acc, al, bh, acc);
        w::mma_sync(acc, ah, bl, acc);
        w::mma_sync(acc, ah, bh, acc);
    }
}

__device__ __forceinline__ void
tc_mma_any(nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> &acc, const tc_prod &pr,
           int m0, int n0)
{
    if (pr.K <= 0) return;
    if (pr.a.t) {
        if (pr.b.t)
            tc_mma<true, true>(acc, pr, m0, n0);
        else
            tc_mma<true, false>(acc, pr, m0, n0);
    } else {
        if (pr.b.t)
            tc_mma<false, true>(acc, pr, m0, n0);
        else
            tc_mma<false, false>(acc, pr, m0, n0);
    }
}

/* One output tile: out[m0.., n0..] (row-major, ld ldo) = (accumulate ? out : 0) + p1 + p2 (+ p3). Called by a
 * whole warp. */
__device__ __forceinline__ void
tc_tile(float *out, int ldo, int m0, int n0, bool accumulate, const tc_prod &p1,
        const tc_prod &p2 = tc_prod{{nullptr, 0, false}, {nullptr, 0, false}, 0},
        const tc_prod &p3 = tc_prod{{nullptr, 0, false}, {nullptr, 0, false}, 0})
{
    namespace w = nvcuda::wmma;
    w::fragment<w::accumulator, 16, 16, 8, float> acc;
    float *o = out + (size_t)m0 * ldo + n0;
    if (accumulate)
        w::load_matrix_sync(acc, o, ldo, w::mem_row_major);
    else
        w::fill_fragment(acc, 0.0f);
    tc_mma_any(acc, p1, m0, n0);
    tc_mma_any(acc, p2, m0, n0);
    tc_mma_any(acc, p3, m0, n0);
    w::store_matrix_sync(o, acc, ldo, w::mem_row_major);
}

/* Hands the output tiles of a phase to the block's warps round robin: `if (sc.mine()) tc_tile(...)` in the
 * same order in every thread (no job table: it would live in local memory). */
struct tc_sched {
    int n, warp, warps;
    __device__ __forceinline__ bool mine()
    {
        return n++ % warps == warp;
    }
};

__device__ __forceinline__ tc_sched tc_start()
{
    return tc_sched{0, (int)(threadIdx.x / 32), (int)(blockDim.x / 32)};
}

__device__ __forceinline__ tc_view tc_v(const float *p, int ld, bool t = false)
{
    return tc_view{p, ld, t};
}
__device__ __forceinline__ tc_prod tc_p(tc_view a, tc_view b, int K)
{
    return tc_prod{a, b, K};
}

/* Whether the kernels built on these tiles may run on the current device with `smem` bytes of dynamic shared memory:
 * its TF32 tensor cores must be fast enough for 3xTF32 (three products per product) to beat fp32 on the CUDA cores —
 * the data-centre parts, compute capability 8.0, 9.x and 10.x (on sm_86/sm_89 and the sm_12x parts dense TF32 is at
 * most twice their fp32 rate) — and it must grant `smem` per block (opt-in: about 163 KB on sm_80, 227 KB on sm_90; the launchers fall back
 * to the CUDA-core kernels otherwise; the attributes are read once per device, rlc_device_attr). */
static inline bool tc_fits(size_t smem)
{
    const int major = rlc_device_attr(cudaDevAttrComputeCapabilityMajor);
    const int minor = rlc_device_attr(cudaDevAttrComputeCapabilityMinor);
    const int optin = rlc_smem_optin(); /* (RADLADS_TEST_SMEM_OPTIN may lower it) */
    const bool fast_tf32 = major == 9 || major == 10 || (major == 8 && minor == 0);
    return fast_tf32 && optin > 0 && smem <= (size_t)optin;
}

#endif /* RL_CUDA_TF32_CUH */
