/* attn_cuda_logic_check.cpp — runs the CUDA attention kernels of kernels/cuda/cuda_attention.cu on
 * the HOST (as wkv_cuda_logic_check.cpp: a std::thread per GPU thread, a std::barrier per
 * __syncthreads) and compares them with the CPU backend. __shfl_xor_sync is emulated through a block
 * buffer and two block barriers, which is valid because the tile kernels call it with the whole block
 * in step. Build like wkv_cuda_logic_check.cpp. */
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include <cuda_runtime.h>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(...)

static thread_local uint3 emu_tid, emu_bid;
static dim3 emu_bdim;
static std::barrier<> *emu_bar;
static float emu_shfl[1024];
#define threadIdx emu_tid
#define blockIdx emu_bid
#define blockDim emu_bdim
static inline void __syncthreads() { emu_bar->arrive_and_wait(); }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline float __shfl_xor_sync(unsigned, float x, int o)
{
    emu_shfl[emu_tid.x] = x;
    emu_bar->arrive_and_wait();
    const float r = emu_shfl[emu_tid.x ^ (unsigned)o];
    emu_bar->arrive_and_wait();
    return r;
}

namespace {
float sm[1 << 16];
}

extern "C" {
#include "kernels.h"
}

#define RLC_ATTN_HOST_EMULATION 1
#include "../../kernels/cuda/cuda_attention.cu"

static void run_grid(dim3 grid, int threads, const std::function<void()> &body)
{
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                std::barrier<> bar(threads);
                emu_bar = &bar;
                emu_bdim = dim3(threads, 1, 1);
                std::memset(sm, 0x7f, sizeof sm);
                std::vector<std::thread> ts;
                for (int t = 0; t < threads; t++)
                    ts.emplace_back([&, t] {
                        emu_tid = make_uint3(t, 0, 0);
                        emu_bid = make_uint3(x, y, z);
                        body();
                    });
                for (auto &t : ts)
                    t.join();
            }
}

static unsigned rng = 777;
static std::vector<float> randv(size_t n, float lo, float hi)
{
    std::vector<float> v(n);
    for (auto &x : v) {
        rng = rng * 1664525u + 1013904223u;
        x = lo + (hi - lo) * (float)((rng >> 8) & 0xffffff) / (float)0x1000000;
    }
    return v;
}
static double rel_err(const std::vector<float> &a, const std::vector<float> &b)
{
    double m = 0, s = 0;
    for (size_t i = 0; i < a.size(); i++)
        m = std::fmax(m, std::fabs((double)a[i] - b[i])), s = std::fmax(s, std::fabs((double)b[i]));
    return m / (1.0 + s);
}

template <int DMAX>
static int check_case(rl_backend *be, int B, int T, int H, int G, int D, int kv_seq, int q_pos)
{
    const int KT = kv_seq ? kv_seq : T;
    const size_t nq = (size_t)B * T * H * D, nk = (size_t)B * KT * G * D;
    std::vector<float> q = randv(nq, -1, 1), k = randv(nk, -1, 1), v = randv(nk, -1, 1), dout = randv(nq, -1, 1);
    rl_attn_dims d = {B, T, H, G, D, 1.0f / std::sqrt((float)D), kv_seq, q_pos};
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
    }
    const bool ok = !rc && worst < 1e-4;
    std::printf("  %s\n", ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}

/* `quick` (what the test suite runs; each emulated block is 256 host threads): a few small shapes that
 * still take every path — GQA, a partial tile, both tile widths, the KV cache with q_pos off a tile edge,
 * one decode step.  No argument: every case, including head_dim 64/96/128 (many minutes on 2 cores). */
int main(int argc, char **argv)
{
    const bool quick = argc > 1 && !std::strcmp(argv[1], "quick");
    rl_backend *be = nullptr;
    rl_backend_options opt = {RL_BACKEND_CPU, 1, 0};
    char err[256];
    if (rl_backend_create(&be, &opt, err, sizeof err)) {
        std::printf("cannot create the CPU backend: %s\n", err);
        return 1;
    }
    int fails = 0;
    if (quick) {
        fails += check_case<32>(be, 1, 40, 4, 2, 24, 0, 0);   /* GQA 2:1, a partial second tile */
        fails += check_case<64>(be, 1, 20, 2, 1, 16, 0, 0);   /* the 64-row tile */
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
    rl_backend_destroy(be);
    std::printf("%s\n", fails ? "FAILED" : "all cases ok");
    return fails ? 1 : 0;
}
