/* scratch.c — the CUDA launchers' scratch requests (scratch.h), shared with radlads plan. */
#include "scratch.h"

#define MIB ((size_t)1 << 20)

size_t rl_scratch_rounded(size_t bytes)
{
    if (bytes == 0)
        return 0;
    return (bytes + MIB - 1) / MIB * MIB;
}

int rl_scratch_slots(int rows, int groups, int cap)
{
    long long want = 8192 / (groups > 0 ? groups : 1);
    if (want < 1)
        want = 1;
    if (want > cap)
        want = cap;
    if (want > rows)
        want = rows;
    return want < 1 ? 1 : (int)want;
}

size_t rl_scratch_wkv_backward(const rl_wkv_dims *d, int replay_kind, int per_row, int split)
{
    const size_t BH = (size_t)d->batch * (size_t)d->heads, NN = (size_t)d->head_dim * (size_t)d->head_dim;
    size_t floats = replay_kind ? rl_wkv_checkpoint_floats(d, replay_kind) : 0;
    if (per_row)
        floats += BH * (RL_SCRATCH_WKV_SEG + 1) * NN + (split ? BH * 4 : 0);
    return sizeof(float) * floats;
}

size_t rl_scratch_wkv6_counts(const rl_wkv_dims *d)
{
    return sizeof(unsigned) * (size_t)d->batch * (size_t)d->heads;
}

size_t rl_scratch_rwkv7_mix_backward(const rl_rwkv7_mix_dims *d)
{
    const int nslots = rl_scratch_slots(d->rows, d->kv_heads, 256);
    return sizeof(float) * (size_t)nslots * 5 * (size_t)d->heads * (size_t)d->head_dim;
}

size_t rl_scratch_readout_backward(const rl_readout_dims *d, int params)
{
    if (!d->groupnorm || !params)
        return 0;
    const int nslots = rl_scratch_slots(d->rows, d->heads, 256);
    return sizeof(float) * (size_t)nslots * 2 * (size_t)d->heads * (size_t)d->head_dim;
}

/* the column blocks of an elementwise kernel over `dim` columns */
static int column_blocks(int dim)
{
    return (dim + RL_SCRATCH_EW_THREADS - 1) / RL_SCRATCH_EW_THREADS;
}

size_t rl_scratch_tokenshift_backward(const rl_shift_dims *d)
{
    const int nslots = rl_scratch_slots(d->batch * d->seq, column_blocks(d->dim) * 8, 1024);
    return sizeof(float) * (size_t)nslots * (size_t)d->dim;
}

size_t rl_scratch_ddlerp_backward(const rl_shift_dims *d, int rank)
{
    const int ktiles = (rank + RL_SCRATCH_DD_KT - 1) / RL_SCRATCH_DD_KT;
    const int nslots = rl_scratch_slots(d->batch * d->seq, column_blocks(d->dim) * 5 * ktiles * 4, 64);
    return sizeof(float) * (size_t)nslots * 5 * ((size_t)rank + 1) * (size_t)d->dim;
}

size_t rl_scratch_rwkv6_mix_backward(const rl_rwkv6_mix_dims *d)
{
    const int D = d->heads * d->head_dim;
    const int nslots = rl_scratch_slots(d->rows, column_blocks(D) * 8, 1024);
    return sizeof(float) * (size_t)nslots * (size_t)D;
}

int rl_scratch_bf16_acc_rows(int M, int N)
{
    size_t fit = RL_SCRATCH_BF16_ACC_FLOATS / (size_t)(N > 0 ? N : 1); /* a multiple of 64 keeps A aligned */
    fit = fit >= 64 ? fit / 64 * 64 : (fit ? fit : 1);
    return fit >= (size_t)M ? M : (int)fit;
}

size_t rl_scratch_bf16_acc(int M, int N)
{
    return sizeof(float) * (size_t)rl_scratch_bf16_acc_rows(M, N) * (size_t)N;
}
