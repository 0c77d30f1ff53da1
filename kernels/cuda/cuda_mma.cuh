/* cuda_mma.cuh — one bf16 tensor-core instruction with its operands in registers (mma.sync m16n8k16, sm_80+), for
 * kernels that keep a whole tile product in registers (cuda_attention.cu's bf16 forward). The host emulation
 * (tests/gpu/cuda_emu.h) brings its own definitions of the two functions; its mma performs the instruction for the
 * whole warp from every lane's registers, by the layout below.
 *
 * A warp computes D (16 × 8, fp32) += A (16 × 16, bf16) · B (16 × 8, bf16). With g = lane / 4 and t = lane % 4,
 * lane holds (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"):
 *   A: a[0] = A[g][2t, 2t+1],  a[1] = A[g+8][2t, 2t+1],  a[2] = A[g][2t+8, 2t+9],  a[3] = A[g+8][2t+8, 2t+9]
 *   B: b[0] = B[2t, 2t+1][g],  b[1] = B[2t+8, 2t+9][g]
 *   D: d[0], d[1] = D[g][2t, 2t+1],  d[2], d[3] = D[g+8][2t, 2t+1]
 * each 32-bit register two bf16, the lower index in the low half. D's layout for columns 8n..8n+7 is A's for the
 * same columns, so the scores of two 8-key tiles become the A operand of the next product without leaving the
 * registers. */
#ifndef RL_CUDA_MMA_CUH
#define RL_CUDA_MMA_CUH

#ifndef RL_TESTS_CUDA_EMU_H
#include <cuda_bf16.h>
#include <stdint.h>

/* lo, hi rounded to bf16 (to nearest even), packed as one A or B register */
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi)
{
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi); /* .x = lo: the low half */
    return *reinterpret_cast<const uint32_t *>(&h);
}

/* d += A · B for the warp (all 32 lanes, converged) */
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2])
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

#endif
