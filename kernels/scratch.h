/* scratch.h — the device scratch the CUDA backend's launchers take, sized in one place.
 *
 * The CUDA backend keeps one scratch buffer per backend (cuda_ops.h rlc_workspace): a launcher that needs
 * device memory beyond its arguments asks for `bytes`, and the buffer grows to the largest request, rounded up
 * to whole MiB, and stays. Each launcher sizes its request with the function below of its name, and
 * `radlads plan` (model/plan.c) takes the largest over a stage's ops at the stage's shapes, so the plan's
 * kernel scratch and the backend's cannot drift apart. Plain C: the plan is built without CUDA. All sizes in
 * bytes; 0 where the op takes none. */
#ifndef RL_SCRATCH_H
#define RL_SCRATCH_H

#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Tokens per shared-memory tile of the per-row wkv kernels, the longest backward segment (cuda_wkv.cu SEG). */
#define RL_SCRATCH_WKV_SEG 16
/* Threads of cuda_mix.cu's elementwise blocks (EW_THREADS: a block covers that many columns) and the rank tile of
 * its ddlerp parameter gradients (DD_KT); cuda_mix.cu asserts both. */
#define RL_SCRATCH_EW_THREADS 256
#define RL_SCRATCH_DD_KT 16

/* What rlc_ws_get allocates for a request: whole MiB. */
size_t rl_scratch_rounded(size_t bytes);

/* The partial-sum slots of a column reduction over `rows` rows in `groups` blocks a slot: about 8192 blocks in
 * all, at most `cap` slots, and no more slots than rows (at least one). */
int rl_scratch_slots(int rows, int groups, int cap);

/* wkv7 / wkv6 backward (cuda_wkv.cu wkv_backward). replay_kind: 0 when the caller passes the forward's
 * checkpoints, else what the replayed forward keeps (6: the chunk-start states, 7: those and sa). per_row: the
 * per-row kernels run (1), not the chunked one (0), whose per-token segment states need B·H·(SEG + 1)·N² floats;
 * split: their value rows split over blocks, with B·H·4 token counts after the states. */
size_t rl_scratch_wkv_backward(const rl_wkv_dims *d, int replay_kind, int per_row, int split);
/* wkv6 backward's count of steep groups per (batch, head) pair before it picks its kernel (B·H words). */
size_t rl_scratch_wkv6_counts(const rl_wkv_dims *d);
/* RAD-RWKV7 mix backward: 5 vectors of heads·N per slot (w0, a0, v0, k_k, k_a). */
size_t rl_scratch_rwkv7_mix_backward(const rl_rwkv7_mix_dims *d);
/* Read-out backward: the GroupNorm weight and bias gradients, 2·heads·N per slot, when `params` (it takes
 * none without GroupNorm or without those gradients). */
size_t rl_scratch_readout_backward(const rl_readout_dims *d, int params);
/* Token-shift backward's mix gradient (dim per slot), when it is asked for. */
size_t rl_scratch_tokenshift_backward(const rl_shift_dims *d);
/* RAD-RWKV6 ddlerp backward: the second LoRA's and maa's gradients, 5·(rank + 1)·dim per slot. */
size_t rl_scratch_ddlerp_backward(const rl_shift_dims *d, int rank);
/* RAD-RWKV6 mix backward's decay gradient (heads·N per slot), when it is asked for. */
size_t rl_scratch_rwkv6_mix_backward(const rl_rwkv6_mix_dims *d);
/* A bf16 GEMM accumulating into its bf16 C (beta ≠ 0): the fp32 product of a block of C's rows (M × N), at most
 * RL_SCRATCH_BF16_ACC_FLOATS floats (a multiple of 64 rows where a block holds that many), then one rounding. */
#define RL_SCRATCH_BF16_ACC_FLOATS ((size_t)16 << 20)
int rl_scratch_bf16_acc_rows(int M, int N);
size_t rl_scratch_bf16_acc(int M, int N);

#ifdef __cplusplus
}
#endif

#endif
