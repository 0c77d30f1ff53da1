/* layers_cuda_logic_check.cpp — the ops of kernels/cuda/cuda_layers.cu (element-wise, sums, embedding,
 * RMSNorm, RoPE, SwiGLU, cross-entropy, KL, L2/MSE, AdamW) run on the HOST through their own launchers
 * (tests/gpu/cuda_emu.h; the .cu rewritten by emu_launch.py) and compared with the CPU backend on random
 * inputs, every SET output poisoned with NaN first.
 *
 * Tolerances, relative (max |Δ| / (1 + max |ref|)): 1e-6 where both backends do the same float operations
 * in the same order (element-wise ops, embedding, RoPE, SwiGLU, AdamW); 2e-5 where a float sum is taken in
 * another order (RMSNorm, the vocabulary losses, the hidden-state losses); 1e-12 for rl_sum, which both
 * accumulate in double. The last case perturbs one input of the emulated run and must FAIL, so the
 * comparison cannot pass vacuously. Exit status 0 = every case within tolerance. */
#include "cuda_emu.h"
#include "cuda_layers_emu.h" /* kernels/cuda/cuda_layers.cu, launches rewritten */

using emu::randv;
using emu::report;
using emu::rel_err;
using fvec = std::vector<float>;

/* The backend the launchers see: a stream of nullptr, host buffers for the error flags and partial sums. */
static int emu_sync(rl_backend *) { return 0; }
static rl__ops emu_ops;
static rlc_backend emu_impl;
static rl_backend emu_be;
static int bad_flags[RLC_FLAG_INTS];
static double partials[RLC_SUM_BLOCKS + RLC_SUM_MANY], sum_host[RLC_SUM_MANY];

int emu_rlc_fail_cuda(rl_backend *, cudaError_t e, const char *op)
{
    if (e == cudaSuccess)
        return 0;
    std::printf("  %s: launch failed: %s\n", op, cudaGetErrorName(e));
    return -1;
}

static rl_backend *gpu()
{
    emu_ops.sync = emu_sync;
    emu_impl.bad_dev = bad_flags, emu_impl.partials = partials, emu_impl.sum_host = sum_host;
    emu_be.ops = &emu_ops, emu_be.impl = &emu_impl;
    return &emu_be;
}


static fvec poisoned(size_t n) { return fvec(n, NAN); }

constexpr double EXACT = 1e-6, REDUCED = 2e-5;

static void check_elementwise(rl_backend *cpu, size_t n)
{
    std::printf("element-wise n=%zu\n", n);
    fvec a = randv(n, -2, 2), b = randv(n, -2, 2), ref = poisoned(n), out = poisoned(n);
    int rc = rl_add(cpu, ref.data(), a.data(), b.data(), n) | rl__cuda_add(gpu(), out.data(), a.data(), b.data(), n);
    report("add", rel_err(out, ref), EXACT, rc);
    fvec y_ref = a, y = a;
    rc = rl_accumulate(cpu, y_ref.data(), b.data(), n) | rl__cuda_accumulate(gpu(), y.data(), b.data(), n);
    report("accumulate", rel_err(y, y_ref), EXACT, rc);
    rc = rl_scale(cpu, y_ref.data(), -0.37f, n) | rl__cuda_scale(gpu(), y.data(), -0.37f, n);
    report("scale", rel_err(y, y_ref), EXACT, rc);
    for (int sq = 0; sq < 2 && n != 1000; sq++) { /* (1024 emulated blocks a call) */
        double s_ref = 0, s = 0;
        rc = (sq ? rl_sum_squares(cpu, &s_ref, a.data(), n) : rl_sum(cpu, &s_ref, a.data(), n)) |
             rl__cuda_sum(gpu(), &s, a.data(), n, sq);
        report(sq ? "sum_squares" : "sum", std::fabs(s - s_ref) / (1 + std::fabs(s_ref)), 1e-12, rc);
        static bool many_done; /* once: 1024 emulated blocks per sum */
        if (!sq || many_done)
            continue;
        many_done = true;
        /* several ranges (one empty) with one fetch: each total bit-identical to its own rl__cuda_sum */
        const void *xs[3] = {a.data(), b.data(), a.data() + n / 2};
        const size_t ns[3] = {n, 0, n - n / 2};
        double many[3] = {NAN, NAN, NAN}, one[3];
        rc = rl__cuda_sum_many(gpu(), many, xs, NULL, ns, 3, 1);
        for (int i = 0; i < 3; i++)
            rc |= rl__cuda_sum(gpu(), &one[i], (const float *)xs[i], ns[i], 1);
        double worst = 0;
        for (int i = 0; i < 3; i++)
            worst = std::fmax(worst, many[i] == one[i] ? 0.0 : 1.0);
        report("sum_squares_many (= each rl_sum_squares)", worst, 0.0, rc);
        /* a BF16 range among F32 ones: the CPU backend's sum of the same widened values (both in double) */
        std::vector<uint16_t> h(n);
        for (size_t i = 0; i < n; i++)
            h[i] = rl_f32_to_bf16(a[i]);
        const void *xd[2] = {h.data(), b.data()};
        const rl_dtype dts[2] = {RL_DTYPE_BF16, RL_DTYPE_F32};
        const size_t nd[2] = {n, n};
        double got[2] = {NAN, NAN}, want[2] = {NAN, NAN};
        rc = rl__cuda_sum_many(gpu(), got, xd, dts, nd, 2, 1) | rl_sum_squares_many(cpu, want, xd, dts, nd, 2);
        report("sum_squares_many (bf16 and f32 ranges)",
               std::fmax(std::fabs(got[0] - want[0]) / (1 + want[0]), std::fabs(got[1] - want[1]) / (1 + want[1])),
               1e-12, rc);
    }
    fvec g = randv(n, -4, 4), u = randv(n, -2, 2), dout = randv(n, -1, 1);
    rc = rl_swiglu_forward(cpu, ref.data(), g.data(), u.data(), n) |
         rl__cuda_swiglu_forward(gpu(), out.data(), g.data(), u.data(), n);
    report("swiglu_forward", rel_err(out, ref), EXACT, rc);
    fvec dg_ref = randv(n, -1, 1), du_ref = randv(n, -1, 1), dg = dg_ref, du = du_ref;
    rc = rl_swiglu_backward(cpu, dg_ref.data(), du_ref.data(), dout.data(), g.data(), u.data(), n) |
         rl__cuda_swiglu_backward(gpu(), dg.data(), du.data(), dout.data(), g.data(), u.data(), n);
    report("swiglu_backward", std::fmax(rel_err(dg, dg_ref), rel_err(du, du_ref)), EXACT, rc);

    rl_adamw_params hp = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3};
    fvec p_ref = randv(n, -1, 1), m_ref = randv(n, -0.1f, 0.1f), v_ref = randv(n, 0, 0.01f);
    fvec p = p_ref, m = m_ref, v = v_ref;
    rc = rl_adamw_update(cpu, p_ref.data(), g.data(), m_ref.data(), v_ref.data(), n, &hp, 0.5f) |
         rl__cuda_adamw(gpu(), p.data(), g.data(), m.data(), v.data(), n, &hp, 0.5f);
    report("adamw", std::fmax(rel_err(p, p_ref), std::fmax(rel_err(m, m_ref), rel_err(v, v_ref))), EXACT, rc);
    { /* bf16 weights: fp32 master updated from a bf16 gradient, the bf16 weights its rounding */
        std::vector<uint16_t> g16(n), w16_ref(n, 0x7fc0), w16(n, 0x7fc0);
        for (size_t i = 0; i < n; i++)
            g16[i] = rl_f32_to_bf16(g[i]);
        fvec w_ref = randv(n, -1, 1), w = w_ref, m2_ref = randv(n, -0.1f, 0.1f), m2 = m2_ref;
        fvec v2_ref = randv(n, 0, 0.01f), v2 = v2_ref;
        rc = rl_adamw_update_bf16(cpu, w16_ref.data(), w_ref.data(), g16.data(), m2_ref.data(), v2_ref.data(), n, &hp,
                                  0.5f) |
             rl__cuda_adamw_bf16(gpu(), w16.data(), w.data(), g16.data(), m2.data(), v2.data(), n, &hp, 0.5f);
        fvec wide(n), wide_ref(n);
        for (size_t i = 0; i < n; i++)
            wide[i] = rl_bf16_to_f32(w16[i]), wide_ref[i] = rl_bf16_to_f32(w16_ref[i]);
        report("adamw_bf16", std::fmax(std::fmax(rel_err(w, w_ref), rel_err(wide, wide_ref)),
                                       std::fmax(rel_err(m2, m2_ref), rel_err(v2, v2_ref))), EXACT, rc);
    }
}

static void check_embedding(rl_backend *cpu, int rows, int vocab, int dim)
{
    std::printf("embedding rows=%d vocab=%d dim=%d\n", rows, vocab, dim);
    std::vector<int32_t> ids(rows);
    for (int r = 0; r < rows; r++) /* repeats on purpose: the backward's atomics collide */
        ids[r] = r == 0 ? vocab - 1 : (int)(emu::frand(0, 1) * (float)(vocab < 4 ? vocab : 4));
    fvec table = randv((size_t)vocab * dim, -1, 1), ref = poisoned((size_t)rows * dim), out = ref;
    int rc = rl_embedding_forward(cpu, ref.data(), ids.data(), table.data(), rows, vocab, dim) |
             rl__cuda_embedding_forward(gpu(), out.data(), ids.data(), table.data(), rows, vocab, dim);
    report("embedding_forward", rel_err(out, ref), EXACT, rc);
    fvec dout = randv((size_t)rows * dim, -1, 1), dt_ref = table, dt = table;
    rc = rl_embedding_backward(cpu, dt_ref.data(), dout.data(), ids.data(), rows, vocab, dim) |
         rl__cuda_embedding_backward(gpu(), dt.data(), dout.data(), ids.data(), rows, vocab, dim);
    report("embedding_backward", rel_err(dt, dt_ref), EXACT, rc);

    /* an id out of range: reported once (op, value, row, bound), that row NaN, the others copied */
    if (rows < 2)
        return;
    const int bad_row = rows / 2;
    ids[bad_row] = vocab;
    std::memset(bad_flags, 0, sizeof bad_flags);
    out = poisoned((size_t)rows * dim);
    rc = rl__cuda_embedding_forward(gpu(), out.data(), ids.data(), table.data(), rows, vocab, dim);
    bool ok = bad_flags[RLC_FLAG_OP] == RLC_BAD_EMBED_FWD && bad_flags[RLC_FLAG_VALUE] == vocab &&
              bad_flags[RLC_FLAG_ROW] == bad_row && bad_flags[RLC_FLAG_BOUND] == vocab;
    for (int j = 0; j < dim; j++)
        ok = ok && std::isnan(out[(size_t)bad_row * dim + j]) && out[j] == table[(size_t)ids[0] * dim + j];
    report("embedding_bad_id_reported", ok ? 0 : 1, 0, rc);
    std::memset(bad_flags, 0, sizeof bad_flags);
}

static void check_rmsnorm(rl_backend *cpu, int rows, int dim)
{
    std::printf("rmsnorm rows=%d dim=%d\n", rows, dim);
    const size_t n = (size_t)rows * dim;
    fvec x_ref = randv(n, -2, 2), w = randv(dim, 0.5f, 1.5f), dy = randv(n, -1, 1), x = x_ref;
    if (emu::expect_failure)
        x[n - 1] += 1e-2f; /* the emulated run sees a perturbed input: must fail */
    fvec y_ref = poisoned(n), y = y_ref, r_ref = poisoned(rows), r = r_ref;
    int rc = rl_rmsnorm_forward(cpu, y_ref.data(), r_ref.data(), x_ref.data(), w.data(), rows, dim, 1e-5f) |
             rl__cuda_rmsnorm_forward(gpu(), y.data(), r.data(), x.data(), w.data(), rows, dim, 1e-5f);
    report("rmsnorm_forward", std::fmax(rel_err(y, y_ref), rel_err(r, r_ref)), REDUCED, rc);
    if (emu::expect_failure)
        return;
    fvec dx_ref = randv(n, -1, 1), dw_ref = randv(dim, -1, 1), dx = dx_ref, dw = dw_ref;
    rc = rl_rmsnorm_backward(cpu, dx_ref.data(), dw_ref.data(), dy.data(), x.data(), w.data(), r_ref.data(), rows,
                             dim) |
         rl__cuda_rmsnorm_backward(gpu(), dx.data(), dw.data(), dy.data(), x.data(), w.data(), r_ref.data(), rows,
                                   dim);
    report("rmsnorm_backward", std::fmax(rel_err(dx, dx_ref), rel_err(dw, dw_ref)), REDUCED, rc);
}

static void check_rope(rl_backend *cpu, int batch, int seq, int heads, int head_dim)
{
    std::printf("rope batch=%d seq=%d heads=%d head_dim=%d\n", batch, seq, heads, head_dim);
    const size_t n = (size_t)batch * seq * heads * head_dim, nt = (size_t)seq * (head_dim / 2);
    fvec c = randv(nt, -1, 1), s = randv(nt, -1, 1), x_ref = randv(n, -1, 1), x = x_ref;
    int rc = rl_rope_forward(cpu, x_ref.data(), c.data(), s.data(), batch, seq, heads, head_dim) |
             rl__cuda_rope(gpu(), x.data(), c.data(), s.data(), batch, seq, heads, head_dim, 0);
    report("rope_forward", rel_err(x, x_ref), EXACT, rc);
    rc = rl_rope_backward(cpu, x_ref.data(), c.data(), s.data(), batch, seq, heads, head_dim) |
         rl__cuda_rope(gpu(), x.data(), c.data(), s.data(), batch, seq, heads, head_dim, 1);
    report("rope_backward", rel_err(x, x_ref), EXACT, rc);
}

/* Cross-entropy and KL with dlogits separate, aliasing the logits, and absent. */
static void check_vocab_losses(rl_backend *cpu, int rows, int vocab)
{
    std::printf("vocabulary losses rows=%d vocab=%d\n", rows, vocab);
    const size_t n = (size_t)rows * vocab;
    fvec z = randv(n, -6, 6), t = randv(n, -6, 6);
    std::vector<int32_t> tg(rows);
    for (int r = 0; r < rows; r++)
        tg[r] = r % 3 == 1 ? -1 : (r % 3 == 2 ? vocab - 1 : (int)(emu::frand(0, 1) * (float)vocab));
    for (int mode = 0; mode < 3; mode++) { /* 0 separate, 1 in place, 2 no gradient */
        const char *how = mode == 0 ? "" : (mode == 1 ? " (in place)" : " (loss only)");
        fvec l_ref = poisoned(rows), l = l_ref, d_ref = mode == 1 ? z : poisoned(n), d = d_ref;
        const float *zin_ref = mode == 1 ? d_ref.data() : z.data(), *zin = mode == 1 ? d.data() : z.data();
        int rc = rl_cross_entropy(cpu, l_ref.data(), mode == 2 ? nullptr : d_ref.data(), zin_ref, tg.data(), rows,
                                  vocab, 0.37f) |
                 rl__cuda_cross_entropy(gpu(), l.data(), mode == 2 ? nullptr : d.data(), zin, tg.data(), rows, vocab,
                                        0.37f);
        double e = rel_err(l, l_ref);
        if (mode != 2)
            e = std::fmax(e, rel_err(d, d_ref));
        report(std::string("cross_entropy") + how, e, REDUCED, rc);

        l_ref = poisoned(rows), l = l_ref, d_ref = mode == 1 ? z : poisoned(n), d = d_ref;
        zin_ref = mode == 1 ? d_ref.data() : z.data(), zin = mode == 1 ? d.data() : z.data();
        rc = rl_kl_divergence(cpu, l_ref.data(), mode == 2 ? nullptr : d_ref.data(), zin_ref, t.data(), rows, vocab,
                              0.37f) |
             rl__cuda_kl_divergence(gpu(), l.data(), mode == 2 ? nullptr : d.data(), zin, t.data(), rows, vocab,
                                    0.37f);
        e = rel_err(l, l_ref);
        if (mode != 2)
            e = std::fmax(e, rel_err(d, d_ref));
        report(std::string("kl_divergence") + how, e, REDUCED, rc);
    }
    if (rows < 2)
        return;
    /* a target out of range: loss NaN and the report (the CPU refuses the call) */
    tg[rows - 1] = vocab;
    std::memset(bad_flags, 0, sizeof bad_flags);
    fvec l = poisoned(rows);
    l[0] = 0;
    int rc = rl__cuda_cross_entropy(gpu(), l.data(), nullptr, z.data(), tg.data(), rows, vocab, 1.0f);
    const bool ok = bad_flags[RLC_FLAG_OP] == RLC_BAD_CE_TARGET && bad_flags[RLC_FLAG_VALUE] == vocab &&
                    bad_flags[RLC_FLAG_ROW] == rows - 1 && std::isnan(l[rows - 1]) && !std::isnan(l[0]);
    report("cross_entropy_bad_target", ok ? 0 : 1, 0, rc);
    std::memset(bad_flags, 0, sizeof bad_flags);
}

static void check_hidden_losses(rl_backend *cpu, int rows, int dim)
{
    std::printf("hidden-state losses rows=%d dim=%d\n", rows, dim);
    const size_t n = (size_t)rows * dim;
    fvec a = randv(n, -1, 1), b = randv(n, -1, 1);
    if (rows > 1) /* a row where a = b: loss 0, and l2's gradient 0 there */
        std::memcpy(a.data(), b.data(), sizeof(float) * dim);
    for (int l2 = 0; l2 < 2; l2++) {
        const std::string op = l2 ? "l2_distance" : "mse";
        fvec l_ref = poisoned(rows), l = l_ref;
        int rc = l2 ? rl_l2_distance_forward(cpu, l_ref.data(), a.data(), b.data(), rows, dim) |
                          rl__cuda_l2_forward(gpu(), l.data(), a.data(), b.data(), rows, dim)
                    : rl_mse_forward(cpu, l_ref.data(), a.data(), b.data(), rows, dim) |
                          rl__cuda_mse_forward(gpu(), l.data(), a.data(), b.data(), rows, dim);
        report(op + "_forward", rel_err(l, l_ref), REDUCED, rc);
        fvec da_ref = randv(n, -1, 1), da = da_ref;
        rc = l2 ? rl_l2_distance_backward(cpu, da_ref.data(), a.data(), b.data(), l_ref.data(), 0.7f, rows, dim) |
                      rl__cuda_l2_backward(gpu(), da.data(), a.data(), b.data(), l_ref.data(), 0.7f, rows, dim)
                : rl_mse_backward(cpu, da_ref.data(), a.data(), b.data(), 0.7f, rows, dim) |
                      rl__cuda_mse_backward(gpu(), da.data(), a.data(), b.data(), 0.7f, rows, dim);
        report(op + "_backward", rel_err(da, da_ref), REDUCED, rc);
    }
}

static void run_cases(rl_backend *cpu, bool more)
{
    for (size_t n : {(size_t)1, (size_t)1000, more ? (size_t)300001 : (size_t)4099})
        check_elementwise(cpu, n);
    check_embedding(cpu, 1, 1, 1);
    check_embedding(cpu, 9, 13, 37);
    check_embedding(cpu, 6, 5, 300);
    for (auto [rows, dim] : {std::pair{1, 1}, {3, 37}, {4, 300}, {2, 1031}})
        check_rmsnorm(cpu, rows, dim);
    check_rope(cpu, 1, 1, 1, 2);
    check_rope(cpu, 2, 5, 3, 10);
    check_rope(cpu, 1, 7, 2, 66);
    for (auto [rows, vocab] : {std::pair{1, 1}, {4, 3}, {6, 1000}, {3, 1537}})
        check_vocab_losses(cpu, rows, vocab);
    if (more)
        check_vocab_losses(cpu, 2, 50257);
    for (auto [rows, dim] : {std::pair{1, 1}, {4, 37}, {3, 300}, {2, 1031}})
        check_hidden_losses(cpu, rows, dim);
}

/* `more`: larger sizes too. */
int main(int argc, char **argv)
{
    const bool more = argc > 1 && !std::strcmp(argv[1], "more");
    rl_backend *cpu = emu::cpu_backend();
    const int status = emu::run_checks([&] { run_cases(cpu, more); }, [&] { check_rmsnorm(cpu, 3, 37); });
    rl_backend_destroy(cpu);
    return status;
}
