/* attn_cuda_logic_check.cpp — runs the CUDA attention kernels of kernels/cuda/cuda_attention.cu on
 * the HOST (the emulated thread model of cuda_emu.h, as wkv_cuda_logic_check.cpp, with its warp
 * shuffles) and compares them with the CPU backend. */
#include "cuda_emu.h"

namespace {
float sm[1 << 16];
alignas(32) float sm_tc[1 << 16]; /* the tensor-core kernels' (wmma: 32-byte aligned tiles) */
alignas(16) uint16_t sm_bf[1 << 17]; /* the bf16 forward's */
}

#define RLC_ATTN_HOST_EMULATION 1
#include "../../kernels/cuda/cuda_attention.cu"

using emu::randv;
using emu::rel_err;

/* the tensor-core kernels stay inside the shared memory their launchers ask for */
static void smem_tail_untouched(size_t floats, const char *kernel)
{
    emu::check_smem_tail(sm_tc, sizeof sm_tc, floats * sizeof(float), kernel);
}

static void run_grid(dim3 grid, int threads, const std::function<void()> &body)
{
    emu::run_grid(grid, dim3(threads), body);
}

template <int DMAX>
static int check_case(rl_backend *be, int B, int T, int H, int G, int D, int kv_seq, int q_pos)
{
    const int KT = kv_seq ? kv_seq : T;
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * KT * G * D;
    std::vector<float> q = randv(nq, -1, 1), k = randv(nk, -1, 1), v = randv(nk, -1, 1), dout = randv(nq, -1, 1);
    if (kv_seq) /* cache rows past q_pos + T were never written: NaN there must not reach the output */
        for (size_t e = 0; e < nk; e++)
            if ((int)(e / ((size_t)G * D) % KT) >= q_pos + T)
                k[e] = v[e] = NAN;
    rl_attn_dims d = {B, T, H, G, D, 1.0f / std::sqrt((float)D), kv_seq, q_pos, 0};
    std::vector<float> out_ref(nq), lse_ref((size_t)B * H * T);
    int rc = rl_attention_forward(be, &d, out_ref.data(), lse_ref.data(), q.data(), k.data(), v.data());
    attn_args p;
    p.B = B, p.T = T, p.H = H, p.G = G, p.D = D, p.rho = H / G, p.KT = KT, p.P = q_pos, p.scale = d.scale;
    std::vector<float> out(nq), lse((size_t)B * H * T);
    constexpr int FTR = 4, FBR = 16 * FTR;
    run_grid(dim3((T + FBR - 1) / FBR, H, B), THREADS,
             [&] { attn_forward_kernel<DMAX, FTR>(p, out.data(), lse.data(), q.data(), k.data(), v.data()); });
    double worst = std::fmax(rel_err(out, out_ref), rel_err(lse, lse_ref));
    std::printf("attn D=%d(max %d) B=%d T=%d H=%d G=%d kv_seq=%d q_pos=%d: out %.1e lse %.1e", D, DMAX, B, T, H, G,
                kv_seq, q_pos, rel_err(out, out_ref), rel_err(lse, lse_ref));
    if (D == DMAX && (DMAX == 64 || DMAX == 128)) { /* the tensor-core forward the launcher picks for these */
        std::vector<float> out_tc(nq), lse_tc((size_t)B * H * T);
        run_grid(dim3((T + TC_BR - 1) / TC_BR, H, B), THREADS, [&] {
            attn_forward_tc_kernel<DMAX>(p, out_tc.data(), lse_tc.data(), q.data(), k.data(), v.data());
        });
        smem_tail_untouched(attn_tc_floats<DMAX>(), "tensor-core forward");
        std::printf(" tensor-core: out %.1e lse %.1e", rel_err(out_tc, out_ref), rel_err(lse_tc, lse_ref));
        worst = std::fmax(worst, std::fmax(rel_err(out_tc, out_ref), rel_err(lse_tc, lse_ref)));

        /* the bf16 forward (rl_attn_dims.bf16) against the CPU backend's bf16 attention: both round q, k, v and p
         * to bf16, p against different running maxima (key tiles of 64 here, 256 there), so they agree to bf16
         * rounding of p, not bit for bit */
        rl_attn_dims d16 = d;
        d16.bf16 = 1;
        std::vector<float> out16_ref(nq), lse16_ref((size_t)B * H * T), out16(nq, NAN), lse16((size_t)B * H * T, NAN);
        rc |= rl_attention_forward(be, &d16, out16_ref.data(), lse16_ref.data(), q.data(), k.data(), v.data());
        run_grid(dim3((T + BF_BR - 1) / BF_BR, H, B), BF_THREADS, [&] {
            attn_forward_bf16_kernel<DMAX>(p, out16.data(), lse16.data(), q.data(), k.data(), v.data());
        });
        emu::check_smem_tail(sm_bf, sizeof sm_bf, attn_bf16_bytes<DMAX>(), "bf16 forward");
        const double e16 = std::fmax(rel_err(out16, out16_ref), rel_err(lse16, lse16_ref));
        /* the CPU's bf16 result must be a rounded one (≫ fp32 rounding away from the fp32 result) */
        const double rounding = rel_err(out16_ref, out_ref);
        std::printf(" bf16: out %.1e lse %.1e (bf16 vs fp32 %.1e)", rel_err(out16, out16_ref),
                    rel_err(lse16, lse16_ref), rounding);
        /* within 2e-3 (twice p's rounding, 2^-9 of each weight, can reach 3.9e-3 at worst; 3.5e-4 is the most seen)
         * and nearer the CPU's bf16 result than the fp32 one is, which a kernel that left q, k, v unrounded would not
         * be (one that left p unrounded cannot be told apart this way: p rounds against other maxima there) */
        if (!(e16 < 2e-3) || !(e16 < rounding) || !(rounding > 1e-5))
            worst = INFINITY;
    }
    if (!kv_seq && !rc) {
        std::vector<float> dq0 = randv(nq, -1, 1), dk0 = randv(nk, -1, 1), dv0 = randv(nk, -1, 1);
        std::vector<float> dq_ref = dq0, dk_ref = dk0, dv_ref = dv0, delta_ref((size_t)B * H * T);
        rc = rl_attention_backward(be, &d, dq_ref.data(), dk_ref.data(), dv_ref.data(), delta_ref.data(),
                                   dout.data(), out_ref.data(), lse_ref.data(), q.data(), k.data(), v.data());
        std::vector<float> dq = dq0, dk = dk0, dv = dv0, delta((size_t)B * H * T);
        const long long rows = (long long)B * T * H;
        run_grid(dim3((unsigned)((rows + 7) / 8)), THREADS,
                 [&] { attn_delta_kernel(p, delta.data(), dout.data(), out_ref.data()); });
        constexpr int TR = DMAX >= 128 ? 2 : 4, BR = 16 * TR; /* as the launcher's bwd_tr */
        const int tiles = (T + BR - 1) / BR;
        run_grid(dim3(tiles, G, B), THREADS, [&] {
            attn_dkv_kernel<DMAX, TR>(p, dk.data(), dv.data(), dout.data(), lse_ref.data(), delta.data(), q.data(),
                                      k.data(), v.data());
        });
        run_grid(dim3(tiles, H, B), THREADS, [&] {
            attn_dq_kernel<DMAX, TR>(p, dq.data(), dout.data(), lse_ref.data(), delta.data(), q.data(), k.data(),
                                     v.data());
        });
        std::printf(" delta %.1e dq %.1e dk %.1e dv %.1e", rel_err(delta, delta_ref), rel_err(dq, dq_ref),
                    rel_err(dk, dk_ref), rel_err(dv, dv_ref));
        worst = std::fmax(worst, std::fmax(rel_err(delta, delta_ref), rel_err(dq, dq_ref)));
        worst = std::fmax(worst, std::fmax(rel_err(dk, dk_ref), rel_err(dv, dv_ref)));
        if constexpr (DMAX == 64 || DMAX == 128) {
            if (D == DMAX) { /* the tensor-core backward the launcher picks for these */
                std::vector<float> dq2 = dq0, dk2 = dk0, dv2 = dv0;
                constexpr int BK = TCB_BK<DMAX>;
                run_grid(dim3((T + BK - 1) / BK, G, B), THREADS, [&] {
                    attn_dkv_tc_kernel<DMAX>(p, dk2.data(), dv2.data(), dout.data(), lse_ref.data(), delta.data(),
                                             q.data(), k.data(), v.data());
                });
                smem_tail_untouched(attn_tc_dkv_floats<DMAX>(), "dK/dV tensor-core kernel");
                run_grid(dim3((T + TCB_BQ - 1) / TCB_BQ, H, B), THREADS, [&] {
                    attn_dq_tc_kernel<DMAX>(p, dq2.data(), dout.data(), lse_ref.data(), delta.data(), q.data(),
                                            k.data(), v.data());
                });
                smem_tail_untouched(attn_tc_dq_floats<DMAX>(), "dQ tensor-core kernel");
                std::printf(" tensor-core: dq %.1e dk %.1e dv %.1e", rel_err(dq2, dq_ref), rel_err(dk2, dk_ref),
                            rel_err(dv2, dv_ref));
                worst = std::fmax(worst, std::fmax(rel_err(dq2, dq_ref), std::fmax(rel_err(dk2, dk_ref),
                                                                                    rel_err(dv2, dv_ref))));
            }
        }
    }
    const bool ok = !rc && worst < 1e-4 && !emu::violations;
    std::printf("  %s\n", ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}

/* `quick`: a few small shapes that still take every path — GQA, a partial tile, both tile widths, the KV
 * cache with q_pos off a tile edge, one decode step.  No argument (what the test suite runs, about a
 * second): every case, including head_dim 64/96/128. */
int main(int argc, char **argv)
{
    const bool quick = argc > 1 && !std::strcmp(argv[1], "quick");
    emu::dynamic_smem(sm, sizeof sm);
    emu::dynamic_smem(sm_tc, sizeof sm_tc);
    emu::dynamic_smem(sm_bf, sizeof sm_bf);
    emu::rng_state = 777;
    rl_backend *be = emu::cpu_backend();
    int fails = 0;
    if (quick) {
        fails += check_case<32>(be, 1, 40, 4, 2, 24, 0, 0);   /* GQA 2:1, a partial second tile */
        fails += check_case<64>(be, 1, 20, 2, 1, 16, 0, 0);   /* the 64-row tile */
        fails += check_case<64>(be, 1, 70, 2, 1, 64, 0, 0);   /* the tensor-core forward, a partial tile */
        fails += check_case<32>(be, 1, 3, 2, 1, 8, 40, 33);   /* KV cache, q_pos not tile-aligned */
        fails += check_case<32>(be, 1, 1, 2, 1, 32, 50, 49);  /* one decode step at the end of a cache */
        rl_backend_destroy(be);
        std::printf("%s\n", fails ? "FAILED" : "all quick cases ok");
        return fails ? 1 : 0;
    }
    fails += check_case<32>(be, 2, 70, 4, 2, 24, 0, 0);
    fails += check_case<64>(be, 1, 130, 2, 1, 64, 0, 0);
    fails += check_case<64>(be, 1, 37, 3, 3, 40, 0, 0);
    fails += check_case<128>(be, 1, 75, 4, 1, 128, 0, 0);
    fails += check_case<128>(be, 1, 40, 2, 2, 96, 0, 0);
    fails += check_case<64>(be, 2, 5, 4, 2, 64, 80, 37);   /* KV cache, q_pos not tile-aligned */
    fails += check_case<32>(be, 1, 1, 2, 1, 32, 100, 99);  /* one decode step at the end of a cache */
    /* the tensor-core kernels with batches and KV heads > 1 (the batch and KV-head offsets, g's heads) */
    fails += check_case<128>(be, 2, 75, 4, 2, 128, 0, 0);
    fails += check_case<64>(be, 2, 130, 6, 3, 64, 0, 0);
    fails += check_case<128>(be, 1, 300, 2, 1, 128, 0, 0); /* 5 key tiles: the online softmax over many */
    /* a KV cache over two query and two key tiles: rows with no visible key in the second key tile */
    fails += check_case<128>(be, 1, 70, 4, 2, 128, 200, 37);
    /* the tensor-core kernels again: threads highest first between barriers; then each warp run alone from one
     * barrier to the next (emu::warp_ahead), lowest and highest first: a barrier missing between two phases' tiles
     * shows there even where every warp makes the same number of wmma calls */
    for (int k = 1; k < 4; k++) {
        emu::reverse_order = k % 2, emu::warp_ahead = k >= 2;
        std::printf("(threads run %s first%s)\n", emu::reverse_order ? "highest" : "lowest",
                    emu::warp_ahead ? ", each warp alone to its next barrier" : "");
        fails += check_case<128>(be, 2, 75, 4, 2, 128, 0, 0);
        fails += check_case<64>(be, 2, 130, 6, 3, 64, 0, 0);
        if (!emu::warp_ahead) {
            fails += check_case<64>(be, 1, 130, 2, 1, 64, 0, 0);
            fails += check_case<128>(be, 1, 75, 4, 1, 128, 0, 0);
            fails += check_case<64>(be, 2, 5, 4, 2, 64, 80, 37);
        }
    }
    emu::reverse_order = false, emu::warp_ahead = false;
    rl_backend_destroy(be);
    std::printf("%s\n", fails ? "FAILED" : "all cases ok");
    return fails ? 1 : 0;
}
