/* mix_cuda_logic_check.cpp — the ops of kernels/cuda/cuda_mix.cu (activations, the RAD-RWKV7 mix, the
 * read-out, token shift, the RWKV6 ddlerp and the RWKV6 decay/GQA step) run on the HOST through their own
 * launchers (tests/gpu/cuda_emu.h; the .cu rewritten by emu_launch.py) and compared with the CPU backend
 * on random inputs, every SET output poisoned with NaN first, every accumulated one starting from the same
 * random values on both sides.
 *
 * Tolerances, relative (max |Δ| / (1 + max |ref|)): 1e-6 for the outputs both backends compute with the
 * same float operations in the same order (activations, forward mixes, token shift, rwkv6 mix, the
 * per-element gradients); 2e-5 where a float sum runs in another order (norms and means of a head as
 * warp sums, parameter gradients summed over row slots). The last case perturbs one input of the emulated
 * run and must FAIL. Exit status 0 = every case within tolerance. */
#include "cuda_emu.h"

namespace {
float ss[1 << 14]; /* ddlerp_forward_kernel's dynamic shared memory */
float sm[1 << 15]; /* ddlerp_backward_rows_kernel's */
} // namespace

#include "cuda_mix_emu.h" /* kernels/cuda/cuda_mix.cu, launches rewritten */

using emu::randv;
using emu::rel_err;
using fvec = std::vector<float>;

static rlc_workspace ws;

static void report(const std::string &op, double err, double tol, cudaError_t e, int rc)
{
    if (e != cudaSuccess)
        std::printf("  %s: launch failed: %s\n", op.c_str(), cudaGetErrorName(e));
    emu::report(op, err, tol, e != cudaSuccess || rc);
}

/* The worst error over pairs (emulated, reference). */
static double worst_of(std::initializer_list<std::pair<const fvec *, const fvec *>> pairs)
{
    double e = 0;
    for (auto &[a, b] : pairs)
        e = std::fmax(e, rel_err(*a, *b));
    return e;
}

constexpr double EXACT = 1e-6, REDUCED = 2e-5;

static void check_act(rl_backend *cpu, size_t n)
{
    std::printf("activations n=%zu\n", n);
    fvec x = randv(n, -4, 4), dy = randv(n, -1, 1);
    for (rl_act kind : {RL_ACT_TANH, RL_ACT_SIGMOID}) {
        const std::string name = kind == RL_ACT_TANH ? "tanh" : "sigmoid";
        fvec y_ref(n, NAN), y(n, NAN);
        int rc = rl_act_forward(cpu, kind, y_ref.data(), x.data(), n);
        cudaError_t e = rlc_act_forward(nullptr, kind, y.data(), x.data(), n);
        report(name + "_forward", rel_err(y, y_ref), EXACT, e, rc);
        fvec dx_ref = randv(n, -1, 1), dx = dx_ref;
        rc = rl_act_backward(cpu, kind, dx_ref.data(), dy.data(), y_ref.data(), n);
        e = rlc_act_backward(nullptr, kind, dx.data(), dy.data(), y_ref.data(), n);
        report(name + "_backward", rel_err(dx, dx_ref), EXACT, e, rc);
    }
}

/* RAD-RWKV7 mix: inputs and their gradients as parallel arrays in the order of rl_rwkv7_mix_in. */
static void check_mix7(rl_backend *cpu, int rows, int H, int G, int N, int variant, int first)
{
    std::printf("rwkv7 mix rows=%d heads=%d kv_heads=%d N=%d variant %c first_layer=%d\n", rows, H, G, N, variant,
                first);
    const size_t D = (size_t)H * N, KD = (size_t)G * N, nd = rows * D, nk = rows * KD;
    const rl_rwkv7_mix_dims d = {rows, H, G, N, variant, first};
    /* k, v, dlora, alora, vlora, w0, a0, v0, k_k, k_a */
    const size_t sizes[10] = {nk, nk, nd, nd, nd, D, D, D, D, D};
    std::vector<fvec> x(10), g_ref(10);
    for (int i = 0; i < 10; i++)
        x[i] = randv(sizes[i], -1.5f, 1.5f), g_ref[i] = randv(sizes[i], -1, 1);
    if (emu::expect_failure)
        x[0][nk - 1] += 1e-2f;
    std::vector<fvec> g = g_ref;
    std::vector<fvec> xr = x;
    if (emu::expect_failure)
        xr[0][nk - 1] -= 1e-2f;
    auto in_of = [](std::vector<fvec> &v) {
        return rl_rwkv7_mix_in{v[0].data(), v[1].data(), v[2].data(), v[3].data(), v[4].data(),
                               v[5].data(), v[6].data(), v[7].data(), v[8].data(), v[9].data()};
    };
    const rl_rwkv7_mix_in in_ref = in_of(xr), in = in_of(x);
    std::vector<fvec> o_ref(5, fvec(nd, NAN)), o = o_ref;
    auto out_of = [](std::vector<fvec> &v) {
        return rl_rwkv7_mix_out{v[0].data(), v[1].data(), v[2].data(), v[3].data(), v[4].data()};
    };
    const rl_rwkv7_mix_out out_ref = out_of(o_ref), out = out_of(o);
    fvec vf_ref = first ? fvec(nd, NAN) : randv(nd, -1, 1), vf = vf_ref;
    int rc = rl_rwkv7_mix_forward(cpu, &d, &out_ref, vf_ref.data(), &in_ref);
    cudaError_t e = rlc_rwkv7_mix_forward(nullptr, &ws, &d, &out, vf.data(), &in);
    report("rwkv7_mix_forward",
           worst_of({{&o[0], &o_ref[0]}, {&o[1], &o_ref[1]}, {&o[2], &o_ref[2]}, {&o[3], &o_ref[3]},
                     {&o[4], &o_ref[4]}, {&vf, &vf_ref}}),
           REDUCED, e, rc);
    if (emu::expect_failure)
        return;

    std::vector<fvec> dout(5);
    for (auto &v : dout)
        v = randv(nd, -1, 1);
    const rl_rwkv7_mix_out dout_p = out_of(dout);
    auto grad_of = [&](std::vector<fvec> &v) {
        rl_rwkv7_mix_grad r = {v[0].data(), v[1].data(), v[2].data(), v[3].data(), v[4].data(),
                               v[5].data(), v[6].data(), v[7].data(), v[8].data(), v[9].data()};
        if (first)
            r.vlora = nullptr, r.v0 = nullptr;
        if (variant == 'b')
            r.k_k = nullptr; /* optional: the CPU skips a NULL sum too */
        return r;
    };
    const rl_rwkv7_mix_grad gr_ref = grad_of(g_ref), gr = grad_of(g);
    /* first layer: dv_first is read (given here in one case, NULL in the other) */
    const bool with_dvf = !first || variant == 'a';
    fvec dvf_ref = randv(nd, -1, 1), dvf = dvf_ref;
    rc = rl_rwkv7_mix_backward(cpu, &d, &gr_ref, with_dvf ? dvf_ref.data() : nullptr, &dout_p, &in_ref,
                               first ? nullptr : vf_ref.data());
    e = rlc_rwkv7_mix_backward(nullptr, &ws, &d, &gr, with_dvf ? dvf.data() : nullptr, &dout_p, &in,
                               first ? nullptr : vf.data());
    const char *names[10] = {"dk", "dv", "ddlora", "dalora", "dvlora", "dw0", "da0", "dv0", "dk_k", "dk_a"};
    double worst_g = rel_err(dvf, dvf_ref);
    std::printf("   ");
    for (int i = 0; i < 10; i++) {
        const double ei = rel_err(g[i], g_ref[i]);
        std::printf(" %s %.1e", names[i], ei);
        worst_g = std::fmax(worst_g, ei);
    }
    std::printf(" dv_first %.1e\n", rel_err(dvf, dvf_ref));
    report("rwkv7_mix_backward", worst_g, REDUCED, e, rc);
}

static void check_readout(rl_backend *cpu, int rows, int H, int N, int groupnorm)
{
    std::printf("readout rows=%d heads=%d N=%d groupnorm=%d\n", rows, H, N, groupnorm);
    const size_t D = (size_t)H * N, n = rows * D;
    const rl_readout_dims d = {rows, H, N, groupnorm, 64e-5f, 0.125f};
    fvec o = randv(n, -2, 2), gt = randv(n, -1, 1), w = randv(D, 0.5f, 1.5f), b = randv(D, -0.5f, 0.5f);
    fvec out_ref(n, NAN), out = out_ref, mu_ref((size_t)rows * H, NAN), mu = mu_ref, rs_ref = mu_ref, rs = mu_ref;
    int rc = rl_readout_forward(cpu, &d, out_ref.data(), mu_ref.data(), rs_ref.data(), o.data(), gt.data(), w.data(),
                                b.data());
    cudaError_t e = rlc_readout_forward(nullptr, &d, out.data(), mu.data(), rs.data(), o.data(), gt.data(), w.data(),
                                        b.data());
    double err = rel_err(out, out_ref);
    if (groupnorm)
        err = std::fmax(err, worst_of({{&mu, &mu_ref}, {&rs, &rs_ref}}));
    report("readout_forward", err, REDUCED, e, rc);

    fvec dout = randv(n, -1, 1), do_ref = randv(n, -1, 1), dg_ref = randv(n, -1, 1), dw_ref = randv(D, -1, 1),
         db_ref = randv(D, -1, 1);
    fvec d_o = do_ref, dg = dg_ref, dw = dw_ref, db = db_ref;
    rc = rl_readout_backward(cpu, &d, do_ref.data(), dg_ref.data(), dw_ref.data(), db_ref.data(), dout.data(),
                             o.data(), gt.data(), w.data(), b.data(), mu_ref.data(), rs_ref.data());
    e = rlc_readout_backward(nullptr, &ws, &d, d_o.data(), dg.data(), dw.data(), db.data(), dout.data(), o.data(),
                             gt.data(), w.data(), b.data(), mu_ref.data(), rs_ref.data());
    report("readout_backward", worst_of({{&d_o, &do_ref}, {&dg, &dg_ref}, {&dw, &dw_ref}, {&db, &db_ref}}), REDUCED,
           e, rc);
}

static void check_tokenshift(rl_backend *cpu, int batch, int seq, int dim, bool with_state)
{
    std::printf("token shift batch=%d seq=%d dim=%d state=%s\n", batch, seq, dim, with_state ? "yes" : "no");
    const rl_shift_dims d = {batch, seq, dim};
    const size_t n = (size_t)batch * seq * dim;
    fvec u = randv(n, -1, 1), st = randv((size_t)batch * dim, -1, 1), mix = randv(dim, 0, 1);
    const float *state = with_state ? st.data() : nullptr;
    fvec out_ref(n, NAN), out = out_ref;
    int rc = rl_tokenshift_forward(cpu, &d, out_ref.data(), u.data(), state, mix.data());
    cudaError_t e = rlc_tokenshift_forward(nullptr, &d, out.data(), u.data(), state, mix.data());
    report("tokenshift_forward", rel_err(out, out_ref), EXACT, e, rc);
    fvec dout = randv(n, -1, 1), du_ref = randv(n, -1, 1), ds_ref = randv((size_t)batch * dim, -1, 1),
         dm_ref = randv(dim, -1, 1);
    fvec du = du_ref, ds = ds_ref, dm = dm_ref;
    rc = rl_tokenshift_backward(cpu, &d, du_ref.data(), with_state ? ds_ref.data() : nullptr, dm_ref.data(),
                                dout.data(), u.data(), state, mix.data());
    e = rlc_tokenshift_backward(nullptr, &ws, &d, du.data(), with_state ? ds.data() : nullptr, dm.data(), dout.data(),
                                u.data(), state, mix.data());
    report("tokenshift_backward", worst_of({{&du, &du_ref}, {&ds, &ds_ref}, {&dm, &dm_ref}}), REDUCED, e, rc);
}

static void check_ddlerp(rl_backend *cpu, int batch, int seq, int dim, int rank, bool with_state, bool with_dmaa)
{
    std::printf("ddlerp batch=%d seq=%d dim=%d rank=%d state=%s dmaa=%s\n", batch, seq, dim, rank,
                with_state ? "yes" : "no", with_dmaa ? "yes" : "no");
    const rl_shift_dims d = {batch, seq, dim};
    const int R = batch * seq;
    const size_t n = (size_t)R * dim;
    fvec u = randv(n, -1, 1), st = randv((size_t)batch * dim, -1, 1), s = randv((size_t)R * 5 * rank, -1, 1),
         w2 = randv((size_t)5 * rank * dim, -0.5f, 0.5f);
    const float *state = with_state ? st.data() : nullptr;
    std::vector<fvec> maa(5), x_ref(5, fvec(n, NAN)), x = x_ref, dx(5), dmaa_ref(5), dmaa;
    for (int c = 0; c < 5; c++)
        maa[c] = randv(dim, 0, 1), dx[c] = randv(n, -1, 1), dmaa_ref[c] = randv(dim, -1, 1);
    dmaa = dmaa_ref;
    const float *maa_p[5], *dx_p[5];
    float *x_ref_p[5], *x_p[5], *dmaa_ref_p[5], *dmaa_p[5];
    for (int c = 0; c < 5; c++)
        maa_p[c] = maa[c].data(), dx_p[c] = dx[c].data(), x_ref_p[c] = x_ref[c].data(), x_p[c] = x[c].data(),
        dmaa_ref_p[c] = with_dmaa ? dmaa_ref[c].data() : nullptr, dmaa_p[c] = with_dmaa ? dmaa[c].data() : nullptr;
    int rc = rl_rwkv6_ddlerp_forward(cpu, &d, rank, x_ref_p, u.data(), state, maa_p, s.data(), w2.data());
    cudaError_t e = rlc_rwkv6_ddlerp_forward(nullptr, &d, rank, x_p, u.data(), state, maa_p, s.data(), w2.data());
    report("ddlerp_forward",
           worst_of({{&x[0], &x_ref[0]}, {&x[1], &x_ref[1]}, {&x[2], &x_ref[2]}, {&x[3], &x_ref[3]},
                     {&x[4], &x_ref[4]}}),
           REDUCED, e, rc);
    fvec du_ref = randv(n, -1, 1), dst_ref = randv((size_t)batch * dim, -1, 1), ds_ref = randv(s.size(), -1, 1),
         dw2_ref = randv(w2.size(), -1, 1);
    fvec du = du_ref, dst = dst_ref, ds = ds_ref, dw2 = dw2_ref;
    rc = rl_rwkv6_ddlerp_backward(cpu, &d, rank, du_ref.data(), with_state ? dst_ref.data() : nullptr, dmaa_ref_p,
                                  ds_ref.data(), dw2_ref.data(), dx_p, u.data(), state, maa_p, s.data(), w2.data());
    e = rlc_rwkv6_ddlerp_backward(nullptr, &ws, &d, rank, du.data(), with_state ? dst.data() : nullptr, dmaa_p,
                                  ds.data(), dw2.data(), dx_p, u.data(), state, maa_p, s.data(), w2.data());
    double err = worst_of({{&du, &du_ref}, {&dst, &dst_ref}, {&ds, &ds_ref}, {&dw2, &dw2_ref}});
    for (int c = 0; c < 5; c++)
        err = std::fmax(err, rel_err(dmaa[c], dmaa_ref[c]));
    std::printf("    du %.1e dstate %.1e ds %.1e dw2 %.1e\n", rel_err(du, du_ref), rel_err(dst, dst_ref),
                rel_err(ds, ds_ref), rel_err(dw2, dw2_ref));
    report("ddlerp_backward", err, REDUCED, e, rc);
}

static void check_mix6(rl_backend *cpu, int rows, int H, int G, int N)
{
    std::printf("rwkv6 mix rows=%d heads=%d kv_heads=%d N=%d\n", rows, H, G, N);
    const size_t D = (size_t)H * N, KD = (size_t)G * N, nd = rows * D, nk = rows * KD;
    const rl_rwkv6_mix_dims d = {rows, H, G, N, 1.0f / std::sqrt((float)N)};
    /* decay + dlora spans ln 5 ≈ 1.61: the −5 clamp is active for some channels */
    fvec k = randv(nk, -1, 1), v = randv(nk, -1, 1), q = randv(nd, -1, 1), dl = randv(nd, -1, 1),
         decay = randv(D, -2, 2.5f);
    std::vector<fvec> o_ref(4, fvec(nd, NAN)), o = o_ref;
    int rc = rl_rwkv6_mix_forward(cpu, &d, o_ref[0].data(), o_ref[1].data(), o_ref[2].data(), o_ref[3].data(),
                                  k.data(), v.data(), q.data(), dl.data(), decay.data());
    cudaError_t e = rlc_rwkv6_mix_forward(nullptr, &d, o[0].data(), o[1].data(), o[2].data(), o[3].data(), k.data(),
                                          v.data(), q.data(), dl.data(), decay.data());
    report("rwkv6_mix_forward", worst_of({{&o[0], &o_ref[0]}, {&o[1], &o_ref[1]}, {&o[2], &o_ref[2]}, {&o[3], &o_ref[3]}}),
           EXACT, e, rc);
    std::vector<fvec> dy(4);
    for (auto &x : dy)
        x = randv(nd, -1, 1);
    fvec dk_ref = randv(nk, -1, 1), dv_ref = randv(nk, -1, 1), dq_ref = randv(nd, -1, 1), ddl_ref = randv(nd, -1, 1),
         ddec_ref = randv(D, -1, 1);
    fvec dk = dk_ref, dv = dv_ref, dq = dq_ref, ddl = ddl_ref, ddec = ddec_ref;
    rc = rl_rwkv6_mix_backward(cpu, &d, dk_ref.data(), dv_ref.data(), dq_ref.data(), ddl_ref.data(), ddec_ref.data(),
                               dy[0].data(), dy[1].data(), dy[2].data(), dy[3].data(), k.data(), dl.data(),
                               decay.data());
    e = rlc_rwkv6_mix_backward(nullptr, &ws, &d, dk.data(), dv.data(), dq.data(), ddl.data(), ddec.data(),
                               dy[0].data(), dy[1].data(), dy[2].data(), dy[3].data(), k.data(), dl.data(),
                               decay.data());
    report("rwkv6_mix_backward", worst_of({{&dk, &dk_ref}, {&dv, &dv_ref}, {&dq, &dq_ref}, {&ddl, &ddl_ref},
                                           {&ddec, &ddec_ref}}),
           REDUCED, e, rc);
}

static void run_cases(rl_backend *cpu, bool more)
{
    check_act(cpu, 1);
    check_act(cpu, 1001);
    for (int variant : {'a', 'b'})
        for (int first : {0, 1}) {
            check_mix7(cpu, 3, 4, 2, 40, variant, first); /* GQA 2:1, N not a multiple of 32 */
            check_mix7(cpu, 1, 3, 3, 8, variant, first);  /* one row, no GQA, N < 32 */
            check_mix7(cpu, 5, 2, 1, 64, variant, first); /* GQA 2:1, two full lane strides */
        }
    for (int gn : {0, 1}) {
        check_readout(cpu, 1, 1, 8, gn);
        check_readout(cpu, 5, 3, 40, gn);
        check_readout(cpu, 4, 2, 64, gn);
    }
    for (bool st : {false, true}) {
        check_tokenshift(cpu, 1, 1, 1, st);
        check_tokenshift(cpu, 2, 5, 300, st);
        check_tokenshift(cpu, 3, 1, 37, st);
    }
    check_ddlerp(cpu, 1, 1, 1, 1, false, true);
    check_ddlerp(cpu, 2, 3, 70, 20, true, true); /* rank: a full and a partial k tile */
    check_ddlerp(cpu, 1, 4, 300, 16, false, false);
    check_ddlerp(cpu, 3, 2, 37, 5, true, false);
    if (more)
        check_ddlerp(cpu, 2, 40, 512, 64, true, true);
    check_mix6(cpu, 1, 1, 1, 1);
    check_mix6(cpu, 3, 4, 2, 40);
    check_mix6(cpu, 5, 6, 3, 8);
    check_mix6(cpu, 2, 3, 1, 64);
}

/* `more`: larger sizes too. */
int main(int argc, char **argv)
{
    const bool more = argc > 1 && !std::strcmp(argv[1], "more");
    emu::dynamic_smem(ss, sizeof ss);
    emu::dynamic_smem(sm, sizeof sm);
    rl_backend *cpu = emu::cpu_backend();
    const int status = emu::run_checks([&] { run_cases(cpu, more); }, [&] { check_mix7(cpu, 3, 4, 2, 40, 'a', 0); });
    rl_backend_destroy(cpu);
    return status;
}
