/* wkv_cuda_logic_check.cpp — runs the CUDA wkv7/wkv6 kernels of kernels/cuda/cuda_wkv.cu on the
 * HOST and compares them with the CPU backend: a check of the kernels' index math, phase ordering
 * and math that needs no GPU.
 *
 * The kernel source is included as C++: each GPU thread of a block becomes a std::thread with its own
 * threadIdx, __syncthreads() is a std::barrier over the block's threads, and the kernel's
 * `extern __shared__` arrays resolve to one array per emulated block (blocks run one after another).
 * The kernels are the literal device code; only the launchers (<<<>>>) are left out of the include,
 * and their small host logic (the checkpoint replay when ckpt == NULL) is repeated here.
 *
 * Build (host only, no GPU or nvcc needed; CUDA headers for the types):
 *   g++ -std=c++20 -O1 -pthread -I kernels -I /usr/local/cuda/include \
 *       tests/gpu/wkv_cuda_logic_check.cpp <objects of kernels/backend.c, kernels/dtype.c and every kernels/cpu source> -fopenmp -lopenblas -lm
 * Exit status 0 = every case within tolerance. */
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include <cuda_runtime.h>

/* ---- the emulated CUDA thread model ---- */
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
#define threadIdx emu_tid
#define blockIdx emu_bid
#define blockDim emu_bdim
static inline void __syncthreads() { emu_bar->arrive_and_wait(); }
static inline int min(int a, int b) { return a < b ? a : b; }

namespace {
float tile[1 << 16]; /* the forward kernel's shared memory */
float smem[1 << 17]; /* the backward kernel's */
} // namespace

extern "C" { /* before cuda_ops.h pulls it in without C linkage */
#include "kernels.h"
}

#define RLC_WKV_HOST_EMULATION 1
#include "../../kernels/cuda/cuda_wkv.cu"

/* Runs one emulated grid: blocks one at a time, `threads` host threads per block. */
static void run_grid(int blocks, int threads, const std::function<void()> &body)
{
    for (int bx = 0; bx < blocks; bx++) {
        std::barrier<> bar(threads);
        emu_bar = &bar;
        emu_bdim = dim3(threads, 1, 1);
        std::memset(tile, 0x7f, sizeof tile); /* garbage: reads of unstaged slots show up */
        std::memset(smem, 0x7f, sizeof smem);
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; t++)
            ts.emplace_back([&, t, bx] {
                emu_tid = make_uint3(t, 0, 0);
                emu_bid = make_uint3(bx, 0, 0);
                body();
            });
        for (auto &t : ts)
            t.join();
    }
}

static unsigned rng = 12345;
static float frand(float lo, float hi)
{
    rng = rng * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)((rng >> 8) & 0xffffff) / (float)0x1000000;
}
static std::vector<float> randv(size_t n, float lo, float hi)
{
    std::vector<float> v(n);
    for (auto &x : v)
        x = frand(lo, hi);
    return v;
}

/* max |a − b| / (1 + max |b|) */
static double rel_err(const std::vector<float> &a, const std::vector<float> &b)
{
    double m = 0, s = 0;
    for (size_t i = 0; i < a.size(); i++) {
        m = std::fmax(m, std::fabs((double)a[i] - b[i]));
        s = std::fmax(s, std::fabs((double)b[i]));
    }
    return m / (1.0 + s);
}

template <int CAP, bool EXACT, bool SEVEN>
static int check_case(rl_backend *be, int B, int T, int H, int N, int L, bool use_ckpt, bool with_state)
{
    const size_t ntok = (size_t)B * T * H * N, nst = (size_t)B * H * N * N;
    const int nc = (T + L - 1) / L;
    const size_t nck = (size_t)B * H * nc * N * N;
    const float kscale = 1.0f / std::sqrt((float)N);
    std::vector<float> r = randv(ntok, -1, 1), logw = randv(ntok, SEVEN ? -0.6f : -5.0f, -0.01f),
                       k = randv(ntok, -kscale, kscale), v = randv(ntok, -1, 1), a = randv(ntok, -kscale, kscale),
                       bb = randv(ntok, -kscale, kscale), dy = randv(ntok, -1, 1);
    std::vector<float> s_in = with_state ? randv(nst, -0.5f, 0.5f) : std::vector<float>(nst, 0.0f);
    std::vector<float> ds_out = randv(nst, -0.5f, 0.5f);
    rl_wkv_dims d = {B, T, H, N, L};
    rl_wkv_in in = {r.data(), logw.data(), k.data(), v.data(), SEVEN ? a.data() : nullptr, SEVEN ? bb.data() : nullptr};

    /* CPU reference: forward (y, state_out, ckpt), backward accumulating into random gradients */
    std::vector<float> y_ref(ntok), so_ref(nst), ck_ref(nck);
    int rc = SEVEN ? rl_wkv7_forward(be, &d, y_ref.data(), so_ref.data(), ck_ref.data(), &in,
                                     with_state ? s_in.data() : nullptr)
                   : rl_wkv6_forward(be, &d, y_ref.data(), so_ref.data(), ck_ref.data(), &in,
                                     with_state ? s_in.data() : nullptr);
    std::vector<std::vector<float>> g0(6);
    for (auto &x : g0)
        x = randv(ntok, -1, 1);
    std::vector<float> dsi0 = randv(nst, -1, 1);
    std::vector<std::vector<float>> g_ref = g0;
    std::vector<float> dsi_ref = dsi0;
    rl_wkv_grad gr = {g_ref[0].data(), g_ref[1].data(), g_ref[2].data(), g_ref[3].data(), g_ref[4].data(),
                      g_ref[5].data()};
    if (!rc)
        rc = SEVEN ? rl_wkv7_backward(be, &d, &gr, dsi_ref.data(), dy.data(), ds_out.data(), &in,
                                      with_state ? s_in.data() : nullptr, ck_ref.data())
                   : rl_wkv6_backward(be, &d, &gr, dsi_ref.data(), dy.data(), ds_out.data(), &in,
                                      with_state ? s_in.data() : nullptr, ck_ref.data());
    if (rc) {
        std::printf("CPU backend failed: %d\n", rc);
        return 1;
    }

    /* the kernels, emulated; state_out aliases a copy of state_in (the in-place case) */
    wkv_args p;
    p.T = T, p.H = H, p.N = N, p.L = L;
    p.r = r.data(), p.logw = logw.data(), p.k = k.data(), p.v = v.data(), p.a = a.data(), p.b = bb.data();
    std::vector<float> y(ntok), ck(nck, -7.0f), st = s_in;
    const float *sin_p = with_state ? st.data() : nullptr;
    float *sout_p = with_state ? st.data() : nullptr;
    std::vector<float> so_sep(nst);
    if (!with_state)
        sout_p = so_sep.data();
    run_grid(B * H, N, [&] { wkv_forward_kernel<CAP, EXACT, SEVEN>(p, sin_p, y.data(), sout_p, ck.data()); });
    const std::vector<float> &so = with_state ? st : so_sep;

    std::vector<std::vector<float>> g = g0;
    std::vector<float> dsi = dsi0;
    wkv_grads gk;
    gk.r = g[0].data(), gk.logw = g[1].data(), gk.k = g[2].data(), gk.v = g[3].data(), gk.a = g[4].data(),
    gk.b = g[5].data();
    std::vector<float> own(nck), segbuf((size_t)B * H * SEG * N * N);
    const float *ckp = ck.data();
    if (!use_ckpt) { /* the launcher's replay: forward from state_in, checkpoints only */
        run_grid(B * H, N, [&] {
            wkv_forward_kernel<CAP, EXACT, SEVEN>(p, with_state ? s_in.data() : nullptr, nullptr, nullptr,
                                                  own.data());
        });
        ckp = own.data();
    }
    run_grid(B * H, N, [&] {
        wkv_backward_kernel<CAP, EXACT, SEVEN>(p, gk, dy.data(), ds_out.data(), ckp, segbuf.data(), dsi.data());
    });

    const char *names[6] = {"dr", "dlogw", "dk", "dv", "da", "db"};
    double worst = 0;
    std::printf("%s N=%d (cap %d%s) B=%d T=%d H=%d L=%d ckpt=%s state_in=%s:", SEVEN ? "wkv7" : "wkv6", N, CAP,
                EXACT ? " exact" : "", B, T, H, L, use_ckpt ? "given" : "replay", with_state ? "yes" : "no");
    double e;
    std::printf(" y %.1e", e = rel_err(y, y_ref)), worst = std::fmax(worst, e);
    std::printf(" state_out %.1e", e = rel_err(so, so_ref)), worst = std::fmax(worst, e);
    std::printf(" ckpt %.1e", e = rel_err(ck, ck_ref)), worst = std::fmax(worst, e);
    for (int q = 0; q < (SEVEN ? 6 : 4); q++)
        std::printf(" %s %.1e", names[q], e = rel_err(g[q], g_ref[q])), worst = std::fmax(worst, e);
    std::printf(" dstate_in %.1e", e = rel_err(dsi, dsi_ref)), worst = std::fmax(worst, e);
    if (!SEVEN) /* a and b gradients must be untouched */
        for (int q = 4; q < 6; q++)
            if (g[q] != g0[q])
                worst = 1;
    const bool ok = worst < 2e-4;
    std::printf("  %s\n", ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}

int main(void)
{
    rl_backend *be = nullptr;
    rl_backend_options opt = {RL_BACKEND_CPU, 1, 0};
    char err[256];
    if (rl_backend_create(&be, &opt, err, sizeof err)) {
        std::printf("cannot create the CPU backend: %s\n", err);
        return 1;
    }
    int fails = 0;
    /* generic (capped) kernels, odd sizes, short and long chunks (L > SEG exercises the replay) */
    fails += check_case<32, false, true>(be, 2, 37, 2, 8, 16, true, true);
    fails += check_case<32, false, true>(be, 1, 45, 3, 5, 40, true, true);
    fails += check_case<32, false, true>(be, 2, 23, 1, 7, 5, false, true);
    fails += check_case<32, false, true>(be, 1, 19, 2, 12, 16, false, false);
    fails += check_case<32, false, false>(be, 2, 37, 2, 8, 16, true, true);
    fails += check_case<32, false, false>(be, 1, 45, 3, 5, 40, false, true);
    fails += check_case<32, false, false>(be, 2, 23, 1, 7, 5, true, false);
    fails += check_case<64, false, true>(be, 1, 33, 1, 40, 16, true, true);
    /* the unrolled kernels at the model sizes */
    fails += check_case<64, true, true>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<64, true, true>(be, 1, 70, 1, 64, 48, false, true);
    fails += check_case<64, true, false>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<128, true, true>(be, 1, 20, 1, 128, 16, true, true);
    fails += check_case<128, true, false>(be, 1, 20, 1, 128, 7, false, true);
    rl_backend_destroy(be);
    std::printf("%s\n", fails ? "FAILED" : "all cases ok");
    return fails ? 1 : 0;
}
