/* wkv_cuda_logic_check.cpp — runs the CUDA wkv7/wkv6 kernels of kernels/cuda/cuda_wkv.cu on the
 * HOST and compares them with the CPU backend: a check of the kernels' index math, phase ordering
 * and math that needs no GPU.
 *
 * The kernel source is included as C++ and run by the emulated thread model of cuda_emu.h (a fiber per
 * GPU thread, __syncthreads a block barrier, the `extern __shared__` arrays one poisoned array per
 * emulated block). The kernels are the literal device code; only the launchers (<<<>>>) are left out of
 * the include, and their small host logic (the checkpoint replay when ckpt == NULL) is repeated here.
 *
 * Build (host only, no GPU or nvcc needed; CUDA headers for the types):
 *   g++ -std=c++20 -O1 -I kernels -I /usr/local/cuda/include -I tests/gpu \
 *       tests/gpu/wkv_cuda_logic_check.cpp <objects of kernels/backend.c, kernels/dtype.c and every kernels/cpu source> -fopenmp -lopenblas -lm
 * Exit status 0 = every case within tolerance. */
#include "cuda_emu.h"

namespace {
alignas(16) float tile[1 << 16]; /* the forward kernel's shared memory (cp.async copies 16-byte pieces into it) */
float smem[1 << 17]; /* the backward kernel's */
alignas(32) float wc_smem[1 << 16]; /* the chunked kernels' (wmma needs 32-byte aligned tiles) */
} // namespace

#define RLC_WKV_HOST_EMULATION 1
static long segments_seen[2]; /* the backward's segments: [0] through the state history, [1] backstepped */
static std::vector<long> pair_history; /* [0] by (b, h) pair: the block's index / pair_blocks (the split's parts) */
static int pair_blocks = 1;
#define RLC_WKV_SEGMENT_SEEN(back)                                                                                   \
    (segments_seen[(back) ? 1 : 0]++,                                                                                \
     (!(back) && emu::bid.x / pair_blocks < pair_history.size()) ? (void)pair_history[emu::bid.x / pair_blocks]++    \
                                                                  : (void)0)
static long stored_seen[2]; /* the register backward's segments on the forward's sa: [0] how many, [1] tokens recomputed */
#define RLC_WKV_STORED_SEEN(recomputed) (stored_seen[0]++, stored_seen[1] += (recomputed))
static long prefetch_seen; /* the register backward's segments whose tokens it copied during the walk before */
#define RLC_WKV_PREFETCH_SEEN() (prefetch_seen++)
static long async_staged; /* the four-threads-per-row backward's tiles copied with cp.async */
#define RLC_WKV_ASYNC_STAGED() (async_staged++)
static long chain_waits; /* the split register backward's waits for the block before (each must already hold) */
#define RLC_WKV_CHAIN_WAIT(flag, need)                                                                                \
    (*(flag) < (need) ? emu::violation("split backward: a block waits for one that has not finished those tokens")   \
                      : (void)chain_waits++)
#include "../../kernels/cuda/cuda_wkv.cu"

using emu::randv;
using emu::rel_err;

/* Runs one emulated grid: `blocks` blocks of `threads` threads. */
static void run_grid(int blocks, int threads, const std::function<void()> &body)
{
    emu::run_grid(dim3(blocks), dim3(threads), body);
}

/* The chunked launchers' grids, repeated: the forward's N / NV value slices at once (grid y), the backward's one
 * launch per slice in order; 256 threads per block (the launchers' default), or 128 (RADLADS_WKV_THREADS=128)
 * when `other_threads` is set. */
static bool other_threads;
/* the register backward with G's rows in shared memory (RADLADS_WKV_REG=2) instead of registers, and its threads
 * per index (1; 2 and 4: RADLADS_WKV_REG=3, 4 and 5) */
static bool reg_gsm;
static int reg_pr = 1;
/* the register backward with each (b, h) pair's value rows split over 2 or 4 blocks (RADLADS_WKV_SPLIT; head sizes
 * 64 and 128, G's rows in shared memory), 0: not */
static int reg_split;
/* head size 64's forward with four threads per row (what the launcher runs with few pairs unless
 * RADLADS_WKV_WIDE_FWD=0); fwd_wide128: head size 128's too (RADLADS_WKV_WIDE_FWD=1) */
static bool fwd_wide, fwd_wide128;
/* the forward with four threads per row and each pair's rows split over 2 or 4 blocks (RADLADS_WKV_SPLIT_FWD; head
 * sizes 64 and 128), 0: not */
static int fwd_split;
template <int CAP, bool EXACT> static bool wide_forward()
{
    return EXACT && ((CAP == 64 && fwd_wide) || (CAP == 128 && fwd_wide128) || ((CAP == 64 || CAP == 128) && fwd_split));
}
/* the per-row forward stages synchronously (RADLADS_WKV_ASYNC=0) instead of with cp.async where it can; or with
 * 8-token tiles at head size 64 too (what the launcher does with more pairs than 16-token ones let fit at once) */
static bool fwd_sync, fwd_tile8;

/* the per-row forward, or its four-threads-per-row form where fwd_wide asks and it applies */
template <int CAP, bool EXACT, bool SEVEN>
static void row_forward(int BH, const wkv_args &p, const float *state_in, float *y, float *state_out, float *ck)
{
    if constexpr ((CAP == 64 || CAP == 128) && EXACT) {
        if (fwd_split) { /* as launch_forward_wide: B·H·parts blocks, a pair's adjacent */
            run_grid(BH * fwd_split, CAP * FQ / fwd_split, [&] {
                if (fwd_split == 2)
                    wkv_forward_wide_kernel<CAP, SEVEN, 2>(p, state_in, y, state_out, ck);
                else
                    wkv_forward_wide_kernel<CAP, SEVEN, 4>(p, state_in, y, state_out, ck);
            });
            emu::check_smem_tail(tile, sizeof tile, fwd_smem(p.N, SEVEN, p.async), "wkv_forward_wide_kernel (split)");
            return;
        } else if (wide_forward<CAP, EXACT>()) {
            run_grid(BH, CAP * FQ, [&] { wkv_forward_wide_kernel<CAP, SEVEN>(p, state_in, y, state_out, ck); });
            emu::check_smem_tail(tile, sizeof tile, fwd_smem(p.N, SEVEN, p.async), "wkv_forward_wide_kernel");
            return;
        }
    }
    run_grid(BH, p.N, [&] { wkv_forward_kernel<CAP, EXACT, SEVEN>(p, state_in, y, state_out, ck); });
    /* it stays inside the shared memory its launcher asks for */
    emu::check_smem_tail(tile, sizeof tile, fwd_smem(p.N, SEVEN, p.async), "wkv_forward_kernel");
}

/* The four-threads-per-row backward's backstepping (p.backstep), and the decays' lower end (logw ≥ logw_min; 0 =
 * the default: RAD-RWKV7's −0.6 for wkv7, −5 for wkv6): strong decays make segments fall back to the history. */
static int backstep = 1;
static float logw_min = 0.0f, logw_max = -0.01f;
/* logw_pattern: every 8 tokens four of logw −6.5 then four of +6 (a product of e^−2 over a segment of 8, but the
 * first four steps back divide by e^6.5 each: must take the history); want_backstepped: 1 = every segment
 * backstepped, 0 = none, 2 = some of each, −1 = any mix */
static bool logw_pattern = false;
/* logw_rad6: RAD-RWKV6's decays as converted (METHOD.md: log w = −exp(λ_c), λ_c = −6 + 5·(c/(D−1))^(0.7 + 1.3·14/27)
 * for channel c of D = H·N, layer 14 of 28; the steepest channel −e^−1 every token) */
static bool logw_rad6 = false;
static int want_backstepped = -1;
/* the register backward on the forward's sa: 1 = some segments and none recomputed (mild decays: stepped back over
 * whole segments), 0 = some segments, each recomputing up to its anchors, −1 = any */
static int want_whole = -1;
/* the backward ignores the forward's sa (RADLADS_WKV_SA=0) */
static bool sa_off = false;

/* the chunked kernels stay inside the shared memory their launchers ask for */
static void smem_tail_untouched(size_t floats, const char *kernel)
{
    emu::check_smem_tail(wc_smem, sizeof wc_smem, floats * sizeof(float), kernel);
}

template <int N, bool SEVEN>
static void chunked_forward(int BH, const wkv_args &p, const float *state_in, float *y, float *state_out, float *ck)
{
    constexpr int NV = WC_NV<N>;
    if (other_threads)
        emu::run_grid(dim3(BH, N / NV), dim3(128),
                      [&] { wkv7_chunked_forward_kernel<N, NV, SEVEN, 128>(p, state_in, y, state_out, ck); });
    else
        emu::run_grid(dim3(BH, N / NV), dim3(256),
                      [&] { wkv7_chunked_forward_kernel<N, NV, SEVEN, 256>(p, state_in, y, state_out, ck); });
    smem_tail_untouched(wc_fwd_floats<N>(), "chunked forward");
}
template <int N, bool SEVEN>
static void chunked_backward(int BH, const wkv_args &p, const wkv_grads &g, const float *dy, const float *ds_out,
                             const float *ck, float *ds_in)
{
    constexpr int NV = WC_NV<N>;
    for (int slice = 0; slice < N / NV; slice++)
        if (other_threads)
            run_grid(BH, 128,
                     [&] { wkv7_chunked_backward_kernel<N, NV, SEVEN, 128>(p, g, dy, ds_out, ck, ds_in, slice); });
        else
            run_grid(BH, 256,
                     [&] { wkv7_chunked_backward_kernel<N, NV, SEVEN, 256>(p, g, dy, ds_out, ck, ds_in, slice); });
    smem_tail_untouched(wc_bwd_floats<N>(), "chunked backward");
}

/* CH: 0 = the per-row kernels; 1 = the chunked tensor-core forward and backward (N = 64, L = 16);
 * 2 = the chunked forward with a longer checkpoint interval, then the four-threads-per-row backward.
 * REG (with WIDE): the backward with the state and G in registers instead of the four-threads-per-row one. */
template <int CAP, bool EXACT, bool SEVEN, int BSEG = SEG, bool WIDE = false, int CH = 0, bool REG = false>
static int check_case(rl_backend *be, int B, int T, int H, int N, int L, bool use_ckpt, bool with_state)
{
    const size_t ntok = (size_t)B * T * H * N, nst = (size_t)B * H * N * N;
    const int nc = (T + L - 1) / L;
    pair_history.assign((size_t)B * H, 0), pair_blocks = REG && reg_split ? reg_split : 1;
    const size_t nck_states = (size_t)B * H * nc * N * N, nck = nck_states + (SEVEN ? ntok : 0); /* + sa (wkv7) */
    const float kscale = 1.0f / std::sqrt((float)N);
    const float lw_lo = logw_min != 0.0f ? logw_min : SEVEN ? -0.6f : -5.0f;
    std::vector<float> r = randv(ntok, -1, 1), logw = randv(ntok, lw_lo, logw_max),
                       k = randv(ntok, -kscale, kscale), v = randv(ntok, -1, 1), a = randv(ntok, -kscale, kscale),
                       bb = randv(ntok, -kscale, kscale), dy = randv(ntok, -1, 1);
    if (logw_pattern)
        for (size_t e = 0; e < ntok; e++)
            logw[e] = (e / ((size_t)H * N)) % T % 8 < 4 ? -6.5f : 6.0f; /* by token: (b·T + t)·H·N + … */
    if (logw_rad6)
        for (size_t e = 0; e < ntok; e++) {
            const double c = (double)(e % ((size_t)H * N)), D = (double)H * N;
            logw[e] = (float)-std::exp(-6.0 + 5.0 * std::pow(c / (D - 1), 0.7 + 1.3 * 14.0 / 27.0));
        }
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
    p.T = T, p.H = H, p.N = N, p.L = L, p.backstep = backstep;
    p.r = r.data(), p.logw = logw.data(), p.k = k.data(), p.v = v.data(), p.a = a.data(), p.b = bb.data();
    p.async = fwd_sync ? 0 : async_tile(p, fwd_tile8); /* as make_args and launch_forward */
    const int fwd_async = p.async;
    std::vector<float> y(ntok), ck(nck, -7.0f), st = s_in;
    /* as the launchers: the per-row forwards keep wkv7's sa in the checkpoint's second part, the chunked one not */
    p.sa = SEVEN && CH == 0 ? ck.data() + nck_states : nullptr;
    const float *sin_p = with_state ? st.data() : nullptr;
    float *sout_p = with_state ? st.data() : nullptr;
    std::vector<float> so_sep(nst);
    if (!with_state)
        sout_p = so_sep.data();
    if constexpr (CH != 0)
        chunked_forward<CAP, SEVEN>(B * H, p, sin_p, y.data(), sout_p, ck.data());
    else
        row_forward<CAP, EXACT, SEVEN>(B * H, p, sin_p, y.data(), sout_p, ck.data());
    const std::vector<float> &so = with_state ? st : so_sep;

    std::vector<std::vector<float>> g = g0;
    std::vector<float> dsi = dsi0;
    wkv_grads gk;
    gk.r = g[0].data(), gk.logw = g[1].data(), gk.k = g[2].data(), gk.v = g[3].data(), gk.a = g[4].data(),
    gk.b = g[5].data();
    std::vector<float> own(nck), segbuf((size_t)B * H * (SEG + 1) * N * N);
    const float *ckp = ck.data();
    if (!use_ckpt) { /* the launcher's replay: forward from state_in, checkpoints only (and sa) */
        if (p.sa)
            p.sa = own.data() + nck_states;
        if constexpr (CH != 0)
            chunked_forward<CAP, SEVEN>(B * H, p, with_state ? s_in.data() : nullptr, nullptr, nullptr, own.data());
        else
            row_forward<CAP, EXACT, SEVEN>(B * H, p, with_state ? s_in.data() : nullptr, nullptr, nullptr, own.data());
        ckp = own.data();
    }
    if (sa_off)
        p.sa = nullptr;
    if constexpr (CH == 1)
        chunked_backward<CAP, SEVEN>(B * H, p, gk, dy.data(), ds_out.data(), ckp, dsi.data());
    else if constexpr (REG) {
        p.async = async_backward_ok(p, dy.data()); /* as launch_backward_reg_g */
        std::vector<int> chain((size_t)B * H * 4, 0);
        float *const out[3] = {ds_out.data(), segbuf.data(), dsi.data()};
        if (reg_split) /* as launch_backward_reg_g: B·H·parts blocks, a pair's adjacent, a thread per key */
            emu::run_grid(dim3(B * H * reg_split), dim3(CAP), [&] {
                if (reg_split == 2)
                    wkv_backward_reg_kernel<SEVEN, true, 2, CAP, true>(p, gk, dy.data(), out[0], ckp, out[1], out[2],
                                                                      chain.data());
                else
                    wkv_backward_reg_kernel<SEVEN, true, 4, CAP, true>(p, gk, dy.data(), out[0], ckp, out[1], out[2],
                                                                      chain.data());
            });
        else if constexpr (CAP == 64)
            run_grid(B * H, 64 * reg_pr, [&] {
                if (reg_gsm && reg_pr == 1)
                    wkv_backward_reg_kernel<SEVEN, true, 1>(p, gk, dy.data(), out[0], ckp, out[1], out[2], nullptr);
                else if (reg_pr == 1)
                    wkv_backward_reg_kernel<SEVEN, false, 1>(p, gk, dy.data(), out[0], ckp, out[1], out[2], nullptr);
                else if (reg_gsm && reg_pr == 2)
                    wkv_backward_reg_kernel<SEVEN, true, 2>(p, gk, dy.data(), out[0], ckp, out[1], out[2], nullptr);
                else if (reg_gsm)
                    wkv_backward_reg_kernel<SEVEN, true, 4>(p, gk, dy.data(), out[0], ckp, out[1], out[2], nullptr);
                else
                    wkv_backward_reg_kernel<SEVEN, false, 4>(p, gk, dy.data(), out[0], ckp, out[1], out[2], nullptr);
            });
        else { /* (a case asking for what no launcher runs) */
            std::printf("(no register backward at head size %d without the split) ", CAP);
            emu::violations++;
        }
        /* split: every block but each pair's first waited for the one before at every token it walked */
        if (reg_split && chain_waits != (long)B * H * (reg_split - 1) * T) {
            std::printf("(chain waits %ld, expected %ld) ", chain_waits, (long)B * H * (reg_split - 1) * T);
            emu::violations++;
        }
        chain_waits = 0;
    } else if constexpr (WIDE) {
        p.async = async_backward_ok(p, dy.data()); /* as launch_backward_wide_g */
        run_grid(B * H, N * WQ, [&] { /* the launcher's choice: the form reading the forward's sa where p.sa is set */
            if (SEVEN && p.sa)
                wkv_backward_wide_kernel<CAP, SEVEN, BSEG, true>(p, gk, dy.data(), ds_out.data(), ckp, segbuf.data(),
                                                                 dsi.data());
            else
                wkv_backward_wide_kernel<CAP, SEVEN, BSEG, false>(p, gk, dy.data(), ds_out.data(), ckp,
                                                                  segbuf.data(), dsi.data());
        });
    } else
        run_grid(B * H, N, [&] {
            wkv_backward_kernel<CAP, EXACT, SEVEN, BSEG>(p, gk, dy.data(), ds_out.data(), ckp, segbuf.data(),
                                                         dsi.data());
        });

    const char *names[6] = {"dr", "dlogw", "dk", "dv", "da", "db"};
    double worst = 0;
    const char *fwd_form = fwd_split == 2   ? "4 threads per row, rows split over 2 blocks"
                           : fwd_split == 4 ? "4 threads per row, rows split over 4 blocks"
                           : wide_forward<CAP, EXACT>() ? "4 threads per row"
                                                        : "a row a thread";
    if (!CH && fwd_async)
        std::printf("(forward: %s, staged with cp.async, %d-token tiles) ", fwd_form, fwd_async);
    else if (!CH)
        std::printf("(forward: %s, staged synchronously) ", fwd_form);
    if (REG && reg_split)
        std::printf("(value rows split over %d blocks) ", reg_split);
    else if (REG && reg_pr > 1)
        std::printf("(%d threads per index) ", reg_pr);
    if (CH)
        std::printf("%s chunked tensor-core %s, then %s: N=%d B=%d T=%d H=%d L=%d ckpt=%s state_in=%s:",
                    SEVEN ? "wkv7" : "wkv6", CH == 1 ? "forward and backward" : "forward",
                    CH == 1 ? "nothing else" : "the 4-threads-per-row backward", N, B, T, H, L,
                    use_ckpt ? "given" : "replay", with_state ? "yes" : "no");
    else
        std::printf("%s N=%d (cap %d%s%s) segment %d B=%d T=%d H=%d L=%d ckpt=%s state_in=%s%s %s%.2g:",
                    SEVEN ? "wkv7" : "wkv6", N, CAP, EXACT ? " exact" : "",
                    REG ? (reg_gsm ? ", state and G in registers, G rows in shared memory" : ", state and G in registers")
                        : WIDE ? ", 4 threads per row" : "", REG ? SEG : BSEG, B,
                    T, H, L, use_ckpt ? "given" : "replay", with_state ? "yes" : "no",
                    WIDE ? (backstep ? " backstep" : " history") : "",
                    logw_rad6 ? "logw RAD-RWKV6 as converted, >=" : "logw>=",
                    logw_rad6 ? -std::exp(-1.0) : (double)lw_lo);
    double e;
    std::printf(" y %.1e", e = rel_err(y, y_ref)), worst = std::fmax(worst, e);
    std::printf(" state_out %.1e", e = rel_err(so, so_ref)), worst = std::fmax(worst, e);
    {
        const std::vector<float> cs(ck.begin(), ck.begin() + nck_states), cr(ck_ref.begin(), ck_ref.begin() + nck_states);
        std::printf(" ckpt %.1e", e = rel_err(cs, cr)), worst = std::fmax(worst, e);
    }
    if (SEVEN && CH == 0) { /* the forward's sa */
        const std::vector<float> cs(ck.begin() + nck_states, ck.end()), cr(ck_ref.begin() + nck_states, ck_ref.end());
        std::printf(" sa %.1e", e = rel_err(cs, cr)), worst = std::fmax(worst, e);
    }
    for (int q = 0; q < (SEVEN ? 6 : 4); q++)
        std::printf(" %s %.1e", names[q], e = rel_err(g[q], g_ref[q])), worst = std::fmax(worst, e);
    std::printf(" dstate_in %.1e", e = rel_err(dsi, dsi_ref)), worst = std::fmax(worst, e);
    if (!SEVEN) /* a and b gradients must be untouched */
        for (int q = 4; q < 6; q++)
            if (g[q] != g0[q])
                worst = 1;
    bool ok = worst < 2e-4 && !emu::violations;
    if (WIDE && !CH) {
        std::printf(" %s: %ld backstepped, %ld history", REG ? "groups" : "segments", segments_seen[1],
                    segments_seen[0]);
        if ((!backstep || want_backstepped == 0) && segments_seen[1])
            ok = false; /* backstepping off must mean off; too steep decays must take the history */
        if (want_backstepped == 1 && (segments_seen[0] || !segments_seen[1]))
            ok = false;
        if (want_backstepped == 2 && (!segments_seen[0] || !segments_seen[1]))
            ok = false; /* a mix of both kinds asked for */
        if ((REG || BSEG == GRP) && !SEVEN && backstep && L % GRP == 0) {
            /* the count wkv6's backward picks its kernel by (wkv6_by_decays) predicts exactly this backward's
             * groups (the four-threads-per-row one's 8-token segments): those through the history, out of all */
            const int ngrp = (T + GRP - 1) / GRP;
            std::vector<unsigned> count((size_t)B * H, 0u);
            emu::run_grid(dim3(B * H, (ngrp + STEEP_GPB - 1) / STEEP_GPB), dim3(N),
                          [&] { wkv_steep_groups_kernel(p.logw, T, H, N, count.data()); });
            long steep = 0, pairs_off = 0;
            for (size_t bh = 0; bh < count.size(); bh++)
                steep += count[bh], pairs_off += (long)count[bh] != pair_history[bh];
            std::printf(" (counted beforehand: %ld of %d steep, %ld of %d pairs' counts off)", steep, B * H * ngrp,
                        pairs_off, B * H);
            if (steep != segments_seen[0] || pairs_off || (long)B * H * ngrp != segments_seen[0] + segments_seen[1])
                ok = false;
        }
        if (SEVEN)
            std::printf(", %ld on the forward's sa recomputing %ld tokens%s", stored_seen[0], stored_seen[1],
                        sa_off ? " (sa ignored)" : "");
        if (SEVEN && want_whole >= 0 && (!stored_seen[0] || (want_whole == 1) != (stored_seen[1] == 0)))
            ok = false;
        if (sa_off && stored_seen[0])
            ok = false;
        if (REG && SEVEN) { /* cp.async prefetch wherever a chunk is one segment (or the next is a chunk's first) */
            std::printf(", %ld prefetched%s", prefetch_seen, p.async ? "" : " (cp.async off)");
            if (p.async != (prefetch_seen > 0) && T > 2 * L)
                ok = false;
        } else if (!REG) { /* every tile with cp.async where the launcher's rule says so, else none */
            std::printf(", %ld tiles staged with cp.async%s", async_staged, p.async ? "" : " (cp.async off)");
            if ((p.async != 0) != (async_staged > 0))
                ok = false;
        }
        /* the kernel stays inside the shared memory its launcher asks for */
        if (REG)
            emu::check_smem_tail(smem, sizeof smem,
                                 reg_split ? reg_smem(true, reg_split, CAP, true) : reg_smem(reg_gsm, reg_pr),
                                 "wkv_backward_reg_kernel");
        else
            emu::check_smem_tail(smem, sizeof smem, wide_smem(N, SEVEN, BSEG), "wkv_backward_wide_kernel");
        ok = ok && !emu::violations;
    }
    segments_seen[0] = segments_seen[1] = 0;
    stored_seen[0] = stored_seen[1] = 0, prefetch_seen = 0, async_staged = 0;
    std::printf("  %s\n", ok ? "ok" : "FAIL");
    return ok ? 0 : 1;
}

/* wkv6's backward picks the chunked kernel from its pairs' steep-group counts (wkv6_chunked_by_counts): by the
 * slowest pair of each wave of pairs the per-row backward runs at once, against the chunked kernel's time */
static int check_wkv6_pick(void)
{
    struct {
        const char *what;
        int N, BH, at_once;
        double share_all, share_some; /* every pair's steep share; the first `some` pairs of each wave instead */
        int some;
        bool want;
    } cases[] = {
        {"head size 64, no group steep (RAD-RWKV6 as converted)", 64, 512, 528, 0.0, 0.0, 0, false},
        {"head size 64, 0.40 of every pair's groups steep", 64, 512, 528, 0.40, 0.0, 0, false},
        {"head size 64, 0.44 of every pair's groups steep", 64, 512, 528, 0.44, 0.0, 0, true},
        {"head size 64, every group steep", 64, 512, 528, 1.0, 0.0, 0, true},
        {"head size 128, 0.60 of every pair's groups steep", 128, 224, 224, 0.60, 0.0, 0, false},
        {"head size 128, 0.70 of every pair's groups steep", 128, 224, 224, 0.70, 0.0, 0, true},
        {"one wave, a fifth of the pairs all steep, the rest none (mean 0.2: the slowest pair decides)", 64, 500,
         528, 0.0, 1.0, 100, true},
        {"four waves, one pair in each all steep (the slowest pair of each wave)", 64, 2112, 528, 0.0, 1.0, 1, true},
        {"four waves, one pair in the first all steep (that wave alone slower)", 64, 2112, 528, 0.0, 1.0, -1, false},
    };
    int fails = 0;
    for (const auto &c : cases) {
        const int ngrp = 512;
        std::vector<unsigned> count((size_t)c.BH);
        for (int i = 0; i < c.BH; i++) {
            const int in_wave = i % c.at_once;
            const bool some = c.some > 0 ? in_wave < c.some : c.some < 0 && i == 0;
            count[i] = (unsigned)std::lround((some ? c.share_some : c.share_all) * ngrp);
        }
        const bool got = wkv6_chunked_by_counts(count.data(), c.BH, ngrp, c.N, c.at_once);
        std::printf("wkv6 backward pick: %s: %s  %s\n", c.what, got ? "chunked" : "per-row",
                    got == c.want ? "ok" : "FAIL");
        fails += got != c.want;
    }
    return fails;
}

int main(void)
{
    emu::dynamic_smem(tile, sizeof tile);
    emu::dynamic_smem(smem, sizeof smem);
    emu::dynamic_smem(wc_smem, sizeof wc_smem);
    rl_backend *be = emu::cpu_backend();
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
    /* head size 128's one-thread-per-row backward with 8- and 4-token segments: what a GPU granting 99 KiB of shared
     * memory a block runs (sm_86 / sm_89: 8; the launcher's row_backward_segment), wkv7 and wkv6, replays, odd
     * tails */
    fails += check_case<128, true, true, 8>(be, 1, 37, 1, 128, 16, true, true);
    fails += check_case<128, true, true, 4>(be, 1, 29, 2, 128, 48, false, false);
    fails += check_case<128, true, false, 8>(be, 2, 23, 1, 128, 16, false, true);
    /* the per-row forward staged synchronously (RADLADS_WKV_ASYNC=0; the cases above stage with cp.async where the
     * head size is a multiple of 4), then with cp.async and the threads run highest first between barriers */
    fwd_sync = true;
    fails += check_case<64, true, true>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<128, true, false>(be, 1, 20, 1, 128, 7, false, true);
    fails += check_case<32, false, true>(be, 2, 37, 2, 8, 16, true, true);
    fwd_sync = false, fwd_tile8 = true; /* 8-token tiles at head size 64 and below */
    fails += check_case<64, true, true>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<64, true, false>(be, 1, 45, 1, 64, 7, false, true);
    fails += check_case<32, false, true>(be, 2, 37, 2, 8, 16, true, true);
    fwd_tile8 = false, emu::reverse_order = true;
    fails += check_case<64, true, true>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<128, true, true>(be, 1, 20, 1, 128, 16, true, true);
    fails += check_case<32, false, false>(be, 2, 37, 2, 8, 16, false, true);
    /* the register backward (head size 64) prefetching each segment's tokens during the walk before (the cases below
     * do, where the forward staged with cp.async), in both orders; then neither stage with cp.async */
    fwd_wide = true, want_backstepped = -1, reg_gsm = true;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 45, 1, 64, 8, false, true);
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 70, 1, 64, 48, true, true);
    fwd_sync = true;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 2, 64, 16, true, true);
    fwd_sync = false, emu::reverse_order = true;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<64, true, true, 16, true, 0, true>(be, 2, 37, 1, 64, 5, false, false);
    emu::reverse_order = false;
    fwd_sync = true; /* the four-threads-per-row forward staged synchronously */
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 45, 2, 64, 16, false, true);
    fwd_sync = false;
    /* ... and with every copy landing as soon as it is issued, in both orders (the cases above: when waited for) */
    emu::async_eager = true;
    std::printf("(cp.async copies land when issued)\n");
    for (int k = 0; k < 2; k++) {
        emu::reverse_order = k;
        fwd_wide = false;
        fails += check_case<64, true, true>(be, 1, 50, 2, 64, 16, true, true);
        fails += check_case<128, true, false>(be, 1, 20, 1, 128, 16, true, true);
        fwd_wide = true;
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 2, 64, 16, true, true);
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 70, 1, 64, 48, false, true);
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 40, 1, 64, 7, true, true);
        for (int pr : {2, 4}) { /* the register backward's copies with 128 and 256 threads */
            reg_pr = pr;
            fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 2, 64, 16, true, true);
            fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 70, 1, 64, 48, false, true);
        }
        reg_pr = 1;
    }
    /* the four-threads-per-row backward's segments (and replays: BSEG 4 in chunks of 16) copied with cp.async, landing
     * when issued */
    for (int k = 0; k < 2; k++) {
        emu::reverse_order = k;
        fwd_wide = false;
        fails += check_case<64, true, true, 8, true>(be, 1, 45, 2, 64, 16, true, true);
        fails += check_case<64, true, true, 4, true>(be, 1, 37, 1, 64, 16, false, true);
        fails += check_case<128, true, false, 8, true>(be, 1, 20, 1, 128, 16, true, false);
    }
    emu::reverse_order = false, emu::async_eager = false, fwd_wide = false;
    /* ... and synchronously (RADLADS_WKV_ASYNC=0), wkv7 with the forward's sa and wkv6 */
    fwd_sync = true;
    fails += check_case<64, true, true, 8, true>(be, 1, 45, 2, 64, 16, true, true);
    fails += check_case<64, true, true, 4, true>(be, 1, 37, 1, 64, 16, false, true);
    fails += check_case<128, true, false, 8, true>(be, 1, 20, 1, 128, 16, true, false);
    fwd_sync = false;
    /* shorter backward segments (RADLADS_WKV_BSEG): replays inside a chunk of 16, odd tails */
    fails += check_case<64, true, true, 4>(be, 1, 37, 2, 64, 16, true, true);
    fails += check_case<64, true, true, 8>(be, 1, 45, 1, 64, 16, false, true);
    fails += check_case<64, true, false, 4>(be, 1, 29, 1, 64, 16, true, false);
    fails += check_case<32, false, true, 4>(be, 2, 23, 1, 7, 10, true, true);
    /* the backward with four threads per state row and column (what N = 64 and 128 run) */
    fails += check_case<64, true, true, 16, true>(be, 2, 50, 2, 64, 16, true, true);
    fails += check_case<64, true, true, 8, true>(be, 1, 45, 1, 64, 16, false, true);
    fails += check_case<64, true, true, 4, true>(be, 1, 37, 1, 64, 48, true, false);
    fails += check_case<64, true, false, 16, true>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<64, true, false, 8, true>(be, 1, 29, 1, 64, 16, false, false);
    fails += check_case<128, true, true, 16, true>(be, 1, 20, 1, 128, 16, true, true);
    fails += check_case<128, true, false, 4, true>(be, 1, 20, 1, 128, 7, false, true);
    /* its backstepping: RAD-RWKV7's decays at 8-token segments and wkv6 with mild decays (every segment
     * backstepped), wkv7 with strong ones (every segment takes the history), decays above 1 (a mix), the pattern
     * whose whole-segment product passes but whose steps do not (the history), and without backstepping (the
     * history always) */
    want_backstepped = 1;
    fails += check_case<64, true, true, 8, true>(be, 1, 45, 2, 64, 16, true, true);
    logw_min = -0.3f;
    fails += check_case<64, true, false, 8, true>(be, 1, 45, 2, 64, 16, true, true);
    fails += check_case<128, true, false, 16, true>(be, 1, 20, 1, 128, 16, false, true);
    logw_min = -3.0f, want_backstepped = 0;
    fails += check_case<64, true, true, 8, true>(be, 2, 45, 2, 64, 16, true, true);
    fails += check_case<128, true, true, 4, true>(be, 1, 20, 1, 128, 16, true, true);
    logw_min = -1.2f, logw_max = 1.0f, want_backstepped = -1;
    fails += check_case<64, true, true, 8, true>(be, 1, 48, 2, 64, 16, true, true);
    logw_pattern = true, want_backstepped = 0;
    fails += check_case<64, true, true, 8, true>(be, 1, 48, 2, 64, 16, true, true);
    logw_pattern = false, logw_min = 0.0f, logw_max = -0.01f, want_backstepped = -1, backstep = 0;
    fails += check_case<64, true, true, 8, true>(be, 1, 45, 2, 64, 16, false, true);
    fails += check_case<64, true, false, 16, true>(be, 1, 37, 1, 64, 16, true, true);
    fails += check_case<128, true, true, 16, true>(be, 1, 20, 1, 128, 16, true, false);
    backstep = 1;
    /* the backward with the state and G in registers (what N = 64 runs): checkpoints every 16 tokens (one segment),
     * every 48 (replays), every 5 and 7 (short segments, a lone group); given and replayed checkpoints, odd tails;
     * then the anchor-only groups of too steep decays, decays above 1, the pattern, and backstepping off */
    want_backstepped = 1, fwd_wide = true;
    reg_gsm = true;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 45, 1, 64, 48, false, true);
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 37, 1, 64, 5, true, false);
    logw_min = -0.3f;
    fails += check_case<64, true, false, 16, true, 0, true>(be, 1, 40, 1, 64, 16, true, true);
    logw_min = -3.0f, want_backstepped = 0;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 40, 1, 64, 16, true, true);
    logw_min = 0.0f, want_backstepped = 1, reg_gsm = false;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 2, 50, 1, 64, 16, true, true);
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 70, 1, 64, 48, false, true);
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 37, 2, 64, 5, true, false);
    logw_min = -0.3f;
    fails += check_case<64, true, false, 16, true, 0, true>(be, 1, 45, 1, 64, 16, false, false);
    fails += check_case<64, true, false, 16, true, 0, true>(be, 2, 41, 1, 64, 7, true, true);
    logw_min = -3.0f, want_backstepped = 0;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 45, 2, 64, 16, true, true);
    fails += check_case<64, true, false, 16, true, 0, true>(be, 1, 37, 1, 64, 48, false, true);
    logw_min = -1.2f, logw_max = 1.0f, want_backstepped = -1;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 48, 2, 64, 16, true, true);
    logw_pattern = true, want_backstepped = 0;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 48, 2, 64, 16, true, true);
    logw_pattern = false, logw_min = 0.0f, logw_max = -0.01f, want_backstepped = -1, backstep = 0;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 45, 2, 64, 16, false, true);
    backstep = 1;
    /* wkv6 on RAD-RWKV6's decays as converted: every backward it runs off the chunked kernel steps back over every
     * group or segment of 8 tokens (at most e^(8·0.37) < 160): head size 64's register backward (G's rows in shared
     * memory and in registers; two threads per index, what few pairs take), head size 128's split one (up to 66
     * pairs) and its four-threads-per-row one at the default 8-token segments */
    logw_rad6 = true, want_backstepped = 1, reg_gsm = true;
    fails += check_case<64, true, false, 16, true, 0, true>(be, 1, 45, 2, 64, 16, true, true);
    reg_gsm = false;
    fails += check_case<64, true, false, 16, true, 0, true>(be, 2, 40, 2, 64, 48, false, true);
    reg_gsm = true, reg_pr = 2;
    fails += check_case<64, true, false, 16, true, 0, true>(be, 1, 40, 2, 64, 16, true, false);
    reg_pr = 1, reg_split = 4;
    fails += check_case<128, true, false, 16, true, 0, true>(be, 1, 40, 2, 128, 16, true, true);
    reg_split = 0, reg_gsm = false;
    fails += check_case<128, true, false, 8, true>(be, 1, 40, 2, 128, 16, true, true);
    /* wkv6 on decays that make about half the groups steep (the count that picks the chunked kernel has to see
     * both kinds): the register backward with G's rows in shared memory and the split one */
    logw_rad6 = false, logw_min = -0.87f, want_backstepped = 2;
    fails += check_case<64, true, false, 16, true, 0, true>(be, 2, 64, 2, 64, 16, true, true);
    reg_split = 2, reg_gsm = true;
    fails += check_case<64, true, false, 16, true, 0, true>(be, 1, 61, 3, 64, 48, false, true);
    reg_split = 0;
    /* ... and the four-threads-per-row backward at its default 8-token segments (head size 128's where the split
     * does not fit, 64's with RADLADS_WKV_REG=0), given and replayed checkpoints, odd tails */
    fails += check_case<128, true, false, 8, true>(be, 1, 61, 2, 128, 16, true, true);
    fails += check_case<64, true, false, 8, true>(be, 2, 53, 1, 64, 16, false, true);
    logw_min = 0.0f, want_backstepped = -1;
    /* the register backward on the forward's sa (wkv7; every chunk but the last is one segment): mild decays step
     * back over whole segments of 16 and 8 tokens (nothing recomputed), RAD-RWKV7's decays over 8 too, and over 16
     * recompute up to the mid-segment anchor; given and replayed checkpoints, G's rows in shared memory and in
     * registers (the steep decays, the pattern and backstepping off above ran this path too) */
    want_backstepped = 1, want_whole = 1, logw_min = -0.3f, reg_gsm = true;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 40, 1, 64, 16, true, true);
    fails += check_case<64, true, true, 16, true, 0, true>(be, 2, 45, 1, 64, 8, false, true);
    logw_min = 0.0f;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 45, 2, 64, 8, true, false);
    want_whole = 0;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 2, 64, 16, true, true);
    reg_gsm = false;
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 1, 64, 16, false, true);
    /* the register backward with two and four threads per index (RADLADS_WKV_REG=3, 4, 5; each a part of every row
     * and column, the parts' sums added by shuffles), then with each pair's value rows split over 2 and 4 blocks
     * (RADLADS_WKV_SPLIT; a thread per key; each block's key gradients added after the block before's, every wait of
     * that chain checked), the split also at head size 128: replays, short segments and odd tails, wkv6, the
     * forward's sa stepped back over whole segments and recomputed to the mid-segment anchor, steep decays,
     * backstepping off; then four threads per index and split 4 under the orders that expose a missing barrier */
    const int reg_forms[5][3] = {{2, 1, 0}, {4, 1, 0}, {4, 0, 0}, {1, 1, 2}, {1, 1, 4}}; /* PR, GSM, split */
    for (const auto &f : reg_forms) {
        reg_pr = f[0], reg_gsm = f[1], reg_split = f[2], fwd_wide = true, want_backstepped = 1, want_whole = -1;
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 45, 1, 64, 48, false, true);
        fails += check_case<64, true, true, 16, true, 0, true>(be, 2, 37, 1, 64, 5, true, false);
        logw_min = -0.3f;
        fails += check_case<64, true, false, 16, true, 0, true>(be, 2, 41, 1, 64, 7, true, true);
        if (reg_split)
            fails += check_case<128, true, false, 16, true, 0, true>(be, 1, 29, 2, 128, 48, true, false);
        want_whole = 1;
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 40, 1, 64, 16, true, true);
        if (reg_split)
            fails += check_case<128, true, true, 16, true, 0, true>(be, 1, 40, 1, 128, 16, true, true);
        logw_min = 0.0f, want_whole = 0;
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 2, 64, 16, true, true);
        if (reg_split)
            fails += check_case<128, true, true, 16, true, 0, true>(be, 2, 36, 1, 128, 16, false, true);
        logw_min = -3.0f, want_backstepped = 0, want_whole = -1;
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 40, 1, 64, 16, true, true);
        if (reg_split)
            fails += check_case<128, true, true, 16, true, 0, true>(be, 1, 40, 1, 128, 16, true, true);
        logw_min = 0.0f, want_backstepped = -1, backstep = 0;
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 45, 2, 64, 16, false, true);
        backstep = 1;
    }
    reg_gsm = true;
    for (int k = 0; k < 3; k++) {
        emu::reverse_order = k == 1, emu::warp_ahead = k == 2, emu::async_eager = k == 0;
        std::printf("(threads run %s)\n", k == 1 ? "highest first" : k == 2 ? "a warp alone to its next barrier"
                                                                               : "lowest first, cp.async copies landing when issued");
        reg_pr = 1, reg_split = 4;
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 2, 64, 16, true, true);
        fails += check_case<128, true, true, 16, true, 0, true>(be, 1, 45, 1, 128, 48, false, true);
        reg_pr = 4, reg_split = 0;
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 45, 1, 64, 48, false, true);
        fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 2, 64, 16, true, true);
    }
    emu::async_eager = false;
    /* head size 128's forward with four threads per row (RADLADS_WKV_WIDE_FWD=1), before the split register backward
     * and the four-threads-per-row one: wkv7 and wkv6, 8-token cp.async tiles and synchronous staging, odd tails, L >
     * SEG, with the threads in each order and the copies landing when issued */
    fwd_wide128 = true, reg_split = 4, reg_pr = 1;
    for (int k = 0; k < 4; k++) {
        emu::reverse_order = k == 1, emu::warp_ahead = k == 2, emu::async_eager = k == 3, fwd_sync = k == 0;
        fails += check_case<128, true, true, 16, true, 0, true>(be, 1, 37, 2, 128, 16, true, true);
        fails += check_case<128, true, false, 8, true>(be, 2, 29, 1, 128, 48, false, false);
    }
    emu::reverse_order = false, emu::warp_ahead = false, emu::async_eager = false, fwd_sync = false;
    fwd_wide128 = false, reg_split = 0;
    /* the forward with each pair's rows split over 2 and 4 blocks (RADLADS_WKV_SPLIT_FWD), at head sizes 64 and 128,
     * before the split register backward and the four-threads-per-row one (the checkpoints and sa it writes are what
     * they read): wkv7 and wkv6, 16- and 8-token cp.async tiles and synchronous staging, L > SEG, odd tails, one
     * token, with the threads in each order and the copies landing when issued */
    for (int k = 0; k < 4; k++) {
        emu::reverse_order = k == 1, emu::warp_ahead = k == 2, emu::async_eager = k == 3, fwd_sync = k == 0;
        for (int sp : {2, 4}) {
            fwd_split = sp, reg_split = 4, reg_pr = 1;
            fails += check_case<128, true, true, 16, true, 0, true>(be, 1, 37, 2, 128, 16, true, true);
            fails += check_case<64, true, true, 16, true, 0, true>(be, 2, 29, 1, 64, 48, false, true);
            reg_split = 0, fwd_tile8 = k == 2;
            fails += check_case<128, true, false, 8, true>(be, 2, 29, 1, 128, 48, false, false);
            fails += check_case<64, true, false, 16, true>(be, 1, 45, 2, 64, 16, true, true);
            fails += check_case<64, true, true, 8, true>(be, 1, 1, 1, 64, 16, true, true);
            fwd_tile8 = false;
        }
    }
    emu::reverse_order = false, emu::warp_ahead = false, emu::async_eager = false, fwd_sync = false;
    fwd_split = 0, reg_split = 0;
    emu::reverse_order = false, emu::warp_ahead = false, reg_pr = 1, reg_gsm = false, fwd_wide = false;
    /* the same for the four-threads-per-row backward (8-token segments: the second of every chunk starts from the
     * next checkpoint; the first replays and recomputes with the stored sa, no barriers), then with sa ignored */
    fwd_wide = false, want_backstepped = 1, want_whole = 1;
    fails += check_case<64, true, true, 8, true>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<128, true, true, 8, true>(be, 1, 40, 1, 128, 16, false, true);
    fails += check_case<64, true, true, 4, true>(be, 1, 45, 1, 64, 16, true, false);
    want_whole = 0, logw_min = -3.0f, want_backstepped = 0;
    fails += check_case<64, true, true, 8, true>(be, 1, 40, 1, 64, 16, true, true);
    logw_min = 0.0f, want_whole = -1, want_backstepped = -1, sa_off = true;
    fails += check_case<64, true, true, 8, true>(be, 1, 50, 2, 64, 16, true, true);
    fails += check_case<64, true, true, 16, true, 0, true>(be, 1, 50, 1, 64, 16, false, true);
    sa_off = false, fwd_wide = true;
    want_whole = -1, want_backstepped = -1;
    /* head size 64's forward with four threads per row, before the other backwards: wkv6, L > SEG, odd tails */
    fails += check_case<64, true, false, 16, true>(be, 1, 45, 2, 64, 48, true, true);
    fails += check_case<64, true, true, 8, true>(be, 2, 29, 1, 64, 7, false, false);
    fails += check_case<64, true, true, 16>(be, 1, 37, 1, 64, 16, true, true);
    fwd_wide = false;
    /* the chunked tensor-core kernels (what N = 64 runs): whole and partial chunks, one token, given and replayed
     * checkpoints, with and without a state; then the forward with checkpoints every 3 chunks; wkv7, then wkv6 */
    for (int k = 0; k < 6; k++) { /* threads lowest, then highest first between barriers, at 256 and at 128 threads
                                   * per block; then each warp run alone from one barrier to the next (256): a
                                   * missing barrier between two warps' tiles shows in one of these orders */
        const bool reverse = k % 2;
        emu::reverse_order = reverse, other_threads = k / 2 == 1, emu::warp_ahead = k >= 4;
        std::printf("(threads run %s first%s; %d threads per block)\n", reverse ? "highest" : "lowest",
                    emu::warp_ahead ? ", each warp alone to its next barrier" : "", other_threads ? 128 : 256);
        fails += check_case<64, true, true, 16, true, 1>(be, 2, 50, 2, 64, 16, true, true);
        fails += check_case<64, true, true, 16, true, 1>(be, 1, 64, 1, 64, 16, false, true);
        fails += check_case<64, true, true, 16, true, 1>(be, 1, 37, 2, 64, 16, true, false);
        fails += check_case<64, true, true, 16, true, 1>(be, 1, 1, 1, 64, 16, false, true);
        fails += check_case<64, true, true, 16, true, 2>(be, 1, 70, 1, 64, 48, true, true);
        fails += check_case<64, true, false, 16, true, 1>(be, 2, 50, 2, 64, 16, true, true); /* wkv6 */
        fails += check_case<64, true, false, 16, true, 1>(be, 1, 37, 1, 64, 16, false, false);
        fails += check_case<64, true, false, 16, true, 2>(be, 1, 70, 1, 64, 48, true, true);
        /* head size 128: four value slices of 32 rows */
        fails += check_case<128, true, true, 16, true, 1>(be, 2, 37, 1, 128, 16, true, true);
        fails += check_case<128, true, true, 16, true, 1>(be, 1, 20, 2, 128, 16, false, false);
        fails += check_case<128, true, true, 16, true, 2>(be, 1, 40, 1, 128, 32, true, true);
        fails += check_case<128, true, false, 16, true, 1>(be, 1, 37, 2, 128, 16, true, true); /* wkv6 */
    }
    emu::reverse_order = false, emu::warp_ahead = false;
    fails += check_wkv6_pick();
    rl_backend_destroy(be);
    std::printf("%s\n", fails ? "FAILED" : "all cases ok");
    return fails ? 1 : 0;
}
