/* wmma_emu_selftest.cpp — checks cuda_emu.h's nvcuda::wmma (TF32, m16n16k8), its bf16 mma.sync and its cp.async (the
 * end of this file) before any kernel relies on them:
 * the addressing of every a/b layout and both accumulator layouts, the tensor core's numerics (inputs cut to
 * their top 19 bits, __float_to_tf32 rounding ties away from zero, the 3xTF32 split reaching ~1e-6), and
 * that the misuse a GPU would not diagnose — a misaligned pointer, a bad ldm, a divergent warp,
 * lane-dependent fragments — is reported as an emulation violation.
 *
 * The device code below is written against the real API (`using namespace nvcuda;`) and would compile with
 * <mma.h> under nvcc. One block of 64 threads, two warps working on different cases at once. */
#include "cuda_emu.h"

#include <cfloat>

using namespace nvcuda;

namespace {

int failures;

void expect(bool ok, const char *what)
{
    std::printf("  %-68s %s\n", what, ok ? "ok" : "FAIL");
    failures += !ok;
}

float bits_to_float(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
uint32_t float_bits(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

/* rna to 10 mantissa bits in double (the model the emulation's __float_to_tf32 must agree with) */
double tf32_rna(float v)
{
    if (v == 0 || !std::isfinite(v))
        return v;
    int e;
    std::frexp(v, &e);
    const double q = std::ldexp(1.0, e - 11); /* the tf32 ulp at v (normal floats) */
    const double r = std::fabs((double)v) / q, t = std::floor(r);
    return std::copysign((r - t >= 0.5 ? t + 1 : t) * q, v);
}
double tf32_trunc(float v) { return bits_to_float(float_bits(v) & 0xffffe000u); }

enum mode { PLAIN, CONVERTED, SPLIT3 };
const char *mode_name[] = {"unconverted inputs", "__float_to_tf32 inputs", "3xTF32 hi/lo split"};

/* One product D = A·B + C, A 16×16 (two k-steps of 16×8), B 16×16, C 16×16, each in its own layout and
 * leading dimension; the pads between rows hold NaN, so an addressing error poisons the result. */
struct tile_case {
    bool a_col, b_col, c_col, d_col, fill; /* fill: C is fill_fragment(c0), not loaded */
    mode md;
    unsigned lda, ldb, ldc, ldd;
    float c0;
    emu::device_vector<float> a, b, c, d; /* in memory, aligned as cudaMalloc's */
    std::vector<double> A, B, C;   /* logical, row-major */
};

size_t at(bool col, unsigned ld, int r, int c) { return col ? (size_t)c * ld + r : (size_t)r * ld + c; }

tile_case make_case(bool a_col, bool b_col, bool c_col, bool d_col, mode md, bool fill)
{
    tile_case t{a_col, b_col, c_col, d_col, fill, md, a_col ? 20u : 24u, b_col ? 28u : 20u, 20u,
                c_col ? 24u : 20u, 0.375f, {}, {}, {}, {}, {}, {}, {}};
    t.a.assign(16 * t.lda, NAN), t.b.assign(16 * t.ldb, NAN), t.c.assign(16 * t.ldc, NAN);
    t.d.assign(16 * t.ldd, NAN);
    t.A.resize(256), t.B.resize(256), t.C.resize(256);
    for (int r = 0; r < 16; r++)
        for (int k = 0; k < 16; k++) {
            const float va = emu::frand(-1, 1), vb = emu::frand(-1, 1), vc = fill ? t.c0 : emu::frand(-1, 1);
            t.a[at(a_col, t.lda, r, k)] = va, t.A[r * 16 + k] = va;
            t.b[at(b_col, t.ldb, r, k)] = vb, t.B[r * 16 + k] = vb; /* b's row r is k */
            t.c[at(c_col, t.ldc, r, k)] = vc, t.C[r * 16 + k] = vc;
        }
    return t;
}

template <class F> __device__ void to_tf32(F &f)
{
    for (int i = 0; i < f.num_elements; i++)
        f.x[i] = wmma::__float_to_tf32(f.x[i]);
}

/* The split of 3xTF32: hi = tf32(x), lo = tf32(x − hi). */
template <class F> __device__ void split(F &hi, F &lo)
{
    for (int i = 0; i < hi.num_elements; i++) {
        const float v = hi.x[i];
        hi.x[i] = wmma::__float_to_tf32(v);
        lo.x[i] = wmma::__float_to_tf32(v - hi.x[i]);
    }
}

/* The device code: one warp computes one case. */
template <class LA, class LB> __device__ void tile_product(tile_case &t)
{
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, LA> a, a_lo;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, LB> b, b_lo;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
    if (t.fill)
        wmma::fill_fragment(acc, t.c0);
    else
        wmma::load_matrix_sync(acc, t.c.data(), t.ldc, t.c_col ? wmma::mem_col_major : wmma::mem_row_major);
    for (int k0 = 0; k0 < 16; k0 += 8) {
        wmma::load_matrix_sync(a, t.a.data() + at(t.a_col, t.lda, 0, k0), t.lda);
        wmma::load_matrix_sync(b, t.b.data() + at(t.b_col, t.ldb, k0, 0), t.ldb);
        if (t.md == CONVERTED)
            to_tf32(a), to_tf32(b);
        if (t.md == SPLIT3) {
            split(a, a_lo), split(b, b_lo);
            wmma::mma_sync(acc, a_lo, b, acc);
            wmma::mma_sync(acc, a, b_lo, acc);
        }
        wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(t.d.data(), acc, t.ldd, t.d_col ? wmma::mem_col_major : wmma::mem_row_major);
}

__device__ void run_case(tile_case &t)
{
    using wmma::col_major, wmma::row_major;
    if (t.a_col)
        t.b_col ? tile_product<col_major, col_major>(t) : tile_product<col_major, row_major>(t);
    else
        t.b_col ? tile_product<row_major, col_major>(t) : tile_product<row_major, row_major>(t);
}

/* Every layout combination in every mode, against double: exact inputs (the bound TF32 allows) and the
 * inputs as the tensor core sees them (which the emulation must match to fp32 rounding). */
void numeric_cases()
{
    std::vector<tile_case> cases;
    for (int md = PLAIN; md <= SPLIT3; md++)
        for (int l = 0; l < 8; l++)
            cases.push_back(
                make_case(l & 1, l & 2, l & 4, !(l & 4) ^ (md == CONVERTED), (mode)md, l == 3 || l == 6));
    for (bool reverse : {false, true}) {
        emu::reverse_order = reverse, emu::violations = 0;
        for (auto &t : cases)
            std::fill(t.d.begin(), t.d.end(), NAN);
        emu::run_grid(dim3(1), dim3(64), [&] {
            for (size_t i = threadIdx.x / 32; i < cases.size(); i += 2)
                run_case(cases[i]);
        });
        double worst[3] = {0, 0, 0}, model[3] = {0, 0, 0};
        bool within = true, pads = true;
        for (auto &t : cases) {
            for (int m = 0; m < 16; m++)
                for (int n = 0; n < 16; n++) {
                    double exact = t.C[m * 16 + n], seen = t.C[m * 16 + n], mag = std::fabs(t.C[m * 16 + n]);
                    for (int k = 0; k < 16; k++) {
                        const float a = (float)t.A[m * 16 + k], b = (float)t.B[k * 16 + n];
                        exact += (double)a * b, mag += std::fabs((double)a * b);
                        if (t.md == PLAIN)
                            seen += tf32_trunc(a) * tf32_trunc(b);
                        else if (t.md == CONVERTED)
                            seen += tf32_rna(a) * tf32_rna(b);
                    }
                    const double d = t.d[at(t.d_col, t.ldd, m, n)], e = std::fabs(d - exact) / mag;
                    worst[t.md] = std::fmax(worst[t.md], d == d ? e : INFINITY);
                    /* TF32 loses < 2^-10 per operand (2^-11 rounded), 2^-9 per product; 3xTF32 drops
                     * lo·lo and the lo parts' rounding, ~3·2^-22; plus fp32 rounding per mma_sync */
                    const double bound = t.md == SPLIT3 ? 1.5e-6 : 0x1.02p-9 + 0x1p-21;
                    within &= e <= bound;
                    if (t.md != SPLIT3)
                        model[t.md] = std::fmax(model[t.md], std::fabs(d - seen) / mag);
                }
            for (size_t i = 0; i < t.d.size(); i++) /* nothing written outside the tile */
                pads &= (i % t.ldd < 16) == !std::isnan(t.d[i]);
        }
        std::printf("== threads run %s between synchronisation points ==\n",
                    reverse ? "highest first" : "lowest first");
        for (int md = PLAIN; md <= SPLIT3; md++)
            std::printf("  %-24s max |d − exact| / (Σ|a·b| + |c|) = %.2e\n", mode_name[md], worst[md]);
        std::printf("  against the tensor core's view of the inputs: %.2e (unconverted), %.2e (converted)\n",
                    model[PLAIN], model[CONVERTED]);
        expect(within && !emu::violations, "every layout and mode within the TF32 bound, no violation");
        expect(model[PLAIN] <= 0x1p-22 && model[CONVERTED] <= 0x1p-22,
               "matches double on inputs cut to 19 bits (rounded when converted)");
        expect(worst[PLAIN] > 0x1p-14, "unconverted inputs do lose bits (the truncation is emulated)");
        expect(pads, "stores write the 16x16 tile and no pad element");
    }
    emu::reverse_order = false;
}

/* A 1×1 product through the whole API: a·1 + 0 with a = 1 + 3·2^-12 (the dropped bits above half an ulp). */
float single_product(float a, bool convert)
{
    alignas(32) static float A[16 * 8], B[8 * 16], D[16 * 16];
    std::fill(A, A + 128, 0.0f), std::fill(B, B + 128, 0.0f);
    A[0] = a, B[0] = 1;
    emu::run_grid(dim3(1), dim3(32), [&] {
        wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
        wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
        wmma::fill_fragment(acc, 0);
        wmma::load_matrix_sync(fa, A, 8);
        wmma::load_matrix_sync(fb, B, 16);
        if (convert)
            to_tf32(fa);
        wmma::mma_sync(acc, fa, fb, acc);
        wmma::store_matrix_sync(D, acc, 16, wmma::mem_row_major);
    });
    return D[0];
}

void tf32_rounding()
{
    std::printf("== __float_to_tf32 and the tensor core's operand cut ==\n");
    struct {
        uint32_t in, out;
    } table[] = {
        {0x3f800000u, 0x3f800000u}, /* 1 */
        {0x3f801000u, 0x3f802000u}, /* 1 + 2^-11: a tie, even mantissa: away from zero (ties-to-even: 1) */
        {0xbf801000u, 0xbf802000u}, /* −(1 + 2^-11) → −(1 + 2^-10) */
        {0x3f805000u, 0x3f806000u}, /* 1 + 2^-9 + 2^-11: a tie, even mantissa: up */
        {0x3f803000u, 0x3f804000u}, /* 1 + 2^-10 + 2^-11: a tie, odd mantissa */
        {0x3f800fffu, 0x3f800000u}, /* just below the tie */
        {0x3f801001u, 0x3f802000u}, /* just above */
        {0x3f9fffffu, 0x3fa00000u}, /* carry through the mantissa */
        {0x3fffffffu, 0x40000000u}, /* carry into the exponent */
        {0x7f7fe000u, 0x7f7fe000u}, /* the largest tf32 */
        {0x7f7fffffu, 0x7f800000u}, /* FLT_MAX rounds to infinity */
        {0xff7fffffu, 0xff800000u}, /* and −FLT_MAX to −infinity */
        {0x7f800000u, 0x7f800000u}, /* +inf */
        {0xff800000u, 0xff800000u}, /* −inf */
        {0x80000000u, 0x80000000u}, /* −0 */
        {0x00000001u, 0x00000000u}, /* the smallest subnormal */
        {0x00001000u, 0x00002000u}, /* a subnormal tie */
        {0x007ff000u, 0x00800000u}, /* into the smallest normal */
    };
    bool ok = true;
    for (auto &e : table) {
        const uint32_t got = float_bits(wmma::__float_to_tf32(bits_to_float(e.in)));
        if (got != e.out)
            std::printf("  __float_to_tf32(0x%08x) = 0x%08x, expected 0x%08x\n", e.in, got, e.out);
        ok &= got == e.out;
    }
    for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xffc00001u}) /* NaN stays NaN, low-bit payloads too */
        ok &= std::isnan(wmma::__float_to_tf32(bits_to_float(nan)));
    expect(ok, "__float_to_tf32: ties away from zero, carries, inf/NaN passthrough");
    bool model = true; /* the double model of the numeric cases agrees on random values */
    for (int i = 0; i < 100000; i++) {
        const float v = std::ldexp(emu::frand(-1, 1), (int)emu::frand(-40, 40));
        model &= wmma::__float_to_tf32(v) == (float)tf32_rna(v);
    }
    expect(model, "__float_to_tf32 agrees with rna in double on 1e5 random floats");
    const float a = bits_to_float(0x3f801800u); /* 1 + 2^-11 + 2^-12 */
    const float cut = single_product(a, false), rounded = single_product(a, true);
    std::printf("  a = 1 + 3·2^-12: mma_sync gives %.9g unconverted, %.9g converted\n", cut, rounded);
    expect(cut == 1.0f && rounded == 1.0f + 0x1p-10f && !emu::violations,
           "mma_sync truncates unconverted operands, keeps converted ones");
}

/* Runs `body` on one block of `threads` threads and expects a violation whose message contains `what`. */
void misuse(const char *title, const char *what, int threads, const std::function<void()> &body)
{
    emu::violations = 0, emu::last_violation = nullptr;
    emu::run_grid(dim3(1), dim3(threads), body);
    const bool ok = emu::violations && emu::last_violation && std::strstr(emu::last_violation, what);
    char line[160];
    std::snprintf(line, sizeof line, "reported: %s", title);
    expect(ok, line);
    emu::violations = 0;
}

void misuse_cases()
{
    std::printf("== misuse is reported (EMULATION lines expected) ==\n");
    alignas(32) static float buf[64 * 64];
    using frag_a = wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major>;
    using frag_b = wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major>;
    using frag_c = wmma::fragment<wmma::accumulator, 16, 16, 8, float>;
    misuse("load_matrix_sync from a pointer 4 bytes off 32", "aligned", 64, [] {
        frag_a a;
        wmma::load_matrix_sync(a, buf + 1, 16);
    });
    misuse("load_matrix_sync from a pointer 16 bytes off 32", "aligned", 64, [] {
        frag_b b;
        wmma::load_matrix_sync(b, buf + 4, 16);
    });
    misuse("store_matrix_sync to a misaligned pointer", "aligned", 64, [] {
        frag_c c;
        wmma::fill_fragment(c, 1.0f);
        wmma::store_matrix_sync(buf + 2, c, 32, wmma::mem_col_major);
    });
    misuse("load_matrix_sync with ldm = 18", "ldm", 64, [] {
        frag_a a;
        wmma::load_matrix_sync(a, buf, 18);
    });
    misuse("accumulator load with ldm = 17", "ldm", 64, [] {
        frag_c c;
        wmma::load_matrix_sync(c, buf, 17, wmma::mem_row_major);
    });
    misuse("store_matrix_sync with ldm = 22", "ldm", 64, [] {
        frag_c c;
        wmma::fill_fragment(c, 1.0f);
        wmma::store_matrix_sync(buf, c, 22, wmma::mem_row_major);
    });
    misuse("lanes pass different pointers", "disagree", 64, [] {
        frag_a a;
        wmma::load_matrix_sync(a, buf + 8 * (threadIdx.x % 32), 16);
    });
    /* Divergence: lanes 0–15 of each warp reach mma_sync, 16–31 the store: a deadlock on a GPU. */
    misuse("16 lanes of a warp call mma_sync, 16 go on to the store", "deadlock", 64, [] {
        frag_a a;
        frag_b b;
        frag_c c;
        wmma::fill_fragment(a, 1.0f), wmma::fill_fragment(b, 1.0f), wmma::fill_fragment(c, 0.0f);
        if (threadIdx.x % 32 < 16)
            wmma::mma_sync(c, a, b, c);
        wmma::store_matrix_sync(buf, c, 16, wmma::mem_row_major);
    });
    misuse("16 lanes of a warp call mma_sync, 16 have returned", "missing", 64, [] {
        if (threadIdx.x % 32 >= 16)
            return;
        frag_a a;
        frag_b b;
        frag_c c;
        wmma::fill_fragment(a, 1.0f), wmma::fill_fragment(b, 1.0f), wmma::fill_fragment(c, 0.0f);
        wmma::mma_sync(c, a, b, c);
    });
    misuse("16 lanes call mma_sync, the others wait at __syncthreads", "deadlock", 64, [] {
        frag_a a;
        frag_b b;
        frag_c c;
        wmma::fill_fragment(a, 1.0f), wmma::fill_fragment(b, 1.0f), wmma::fill_fragment(c, 0.0f);
        if (threadIdx.x % 32 < 16)
            wmma::mma_sync(c, a, b, c);
        __syncthreads();
    });
    misuse("a block of 48 threads (a partial warp) calls load_matrix_sync", "missing", 48, [] {
        frag_a a;
        wmma::load_matrix_sync(a, buf, 16);
    });
    misuse("lane-dependent math on an accumulator before the store", "differ", 64, [] {
        frag_c c;
        wmma::fill_fragment(c, 1.0f);
        c.x[0] += (float)(threadIdx.x % 32);
        wmma::store_matrix_sync(buf, c, 16, wmma::mem_row_major);
    });
    misuse("a lane-dependent fill before mma_sync", "differ", 64, [] {
        frag_a a;
        frag_b b;
        frag_c c;
        wmma::fill_fragment(a, (float)(threadIdx.x % 32)), wmma::fill_fragment(b, 1.0f);
        wmma::fill_fragment(c, 0.0f);
        wmma::mma_sync(c, a, b, c);
    });
    /* and the run after a deadlock is clean again */
    emu::violations = 0;
    for (int i = 0; i < 64 * 64; i++)
        buf[i] = (float)i;
    emu::run_grid(dim3(1), dim3(64), [] {
        frag_c c;
        wmma::load_matrix_sync(c, buf, 16, wmma::mem_row_major);
        wmma::store_matrix_sync(buf + 16 * 16 * 2, c, 16, wmma::mem_row_major);
    });
    bool same = true;
    for (int i = 0; i < 256; i++)
        same &= buf[512 + i] == (float)i;
    expect(!emu::violations && same, "a correct call after those runs without a violation");
}

/* cuda_mma.cuh's pair, as the emulator provides them: pack_bf16x2 rounds to nearest even (ties to even, NaN stays
 * NaN, overflow to infinity) with lo in the low half; mma_bf16_16816 computes D = A·B + C for the warp from the
 * fragments laid out as cuda_mma.cuh documents (here loaded from row-major A, B, C by that layout, two warps with
 * different matrices at once), within fp32 rounding of the double product of the bf16 values; a warp with lanes
 * missing is reported. */
float bf16_value(uint32_t h) { return bits_to_float(h << 16); }

void mma_bf16_cases()
{
    std::printf("== bf16 mma.sync m16n8k16 (cuda_mma.cuh) ==\n");
    const uint32_t p = pack_bf16x2(1.0f + 0x1p-8f, -(1.0f + 0x3p-8f)); /* ties: to 1.0 (even) and to -(1 + 2^-6) */
    expect((p & 0xffffu) == 0x3f80u && p >> 16 == 0xbf82u, "pack_bf16x2: ties to even, lo in the low half");
    const uint32_t q = pack_bf16x2(NAN, 3.4e38f); /* above the midpoint of bf16's largest (3.39e38) and 2^128 */
    expect(std::isnan(bf16_value(q & 0xffffu)) && std::isinf(bf16_value(q >> 16)),
           "pack_bf16x2: NaN stays NaN, 3.4e38 rounds to infinity");

    static float A[2][16][16], B[2][16][8], C[2][16][8], D[2][16][8];
    for (int w = 0; w < 2; w++) {
        for (auto &r : A[w])
            for (float &x : r)
                x = emu::frand(-2, 2);
        for (auto &r : B[w])
            for (float &x : r)
                x = emu::frand(-2, 2);
        for (auto &r : C[w])
            for (float &x : r)
                x = emu::frand(-1, 1);
    }
    emu::run_grid(dim3(1), dim3(64), [] {
        const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
        uint32_t a[4], b[2];
        float d[4];
        for (int u = 0; u < 4; u++) {
            const int r = g + 8 * (u & 1), c = 2 * t + 8 * (u >> 1);
            a[u] = pack_bf16x2(A[w][r][c], A[w][r][c + 1]);
            d[u] = C[w][g + 8 * (u >> 1)][2 * t + (u & 1)];
        }
        for (int u = 0; u < 2; u++)
            b[u] = pack_bf16x2(B[w][2 * t + 8 * u][g], B[w][2 * t + 8 * u + 1][g]);
        mma_bf16_16816(d, a, b);
        for (int u = 0; u < 4; u++)
            D[w][g + 8 * (u >> 1)][2 * t + (u & 1)] = d[u];
    });
    double worst = 0;
    for (int w = 0; w < 2; w++)
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < 8; c++) {
                double ref = C[w][r][c];
                for (int k = 0; k < 16; k++)
                    ref += (double)bf16_value(pack_bf16x2(A[w][r][k], 0) & 0xffffu) *
                           bf16_value(pack_bf16x2(B[w][k][c], 0) & 0xffffu);
                worst = std::fmax(worst, std::fabs(D[w][r][c] - ref) / (1.0 + std::fabs(ref)));
            }
    std::printf("    max relative error %.2e\n", worst);
    expect(!emu::violations && worst < 1e-6, "mma_bf16_16816 by the documented layout = the double product");
    misuse("16 lanes of a warp call mma.sync, 16 have returned", "missing", 64, [] {
        if (threadIdx.x % 32 >= 16)
            return;
        uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
        float d[4] = {0, 0, 0, 0};
        mma_bf16_16816(d, a, b);
    });
}

/* cuda_async.cuh's cp.async as emulated: a thread's copies land when it waits for their group (wait<N> leaves the N
 * newest in flight), or at once with emu::async_eager; misuse is reported. */
void cp_async_cases()
{
    std::printf("== cp.async ==\n");
    alignas(16) static float sh[256], src[256], global_dst[8];
    static bool seen_before[2], seen_after[2];
    const size_t capacity = emu::dyn_smem_capacity;
    emu::dynamic_smem(sh, sizeof sh); /* (poisoned with 0x7f before every block) */
    for (int k = 0; k < 256; k++)
        src[k] = (float)k;
    for (int eager = 0; eager < 2; eager++) {
        emu::async_eager = eager, emu::violations = 0;
        seen_before[0] = seen_before[1] = seen_after[0] = seen_after[1] = true;
        emu::run_grid(dim3(1), dim3(32), [] {
            const int t = threadIdx.x;
            cp_async16(sh + 4 * t, src + 4 * t); /* group 1: quads 0..31 */
            cp_async_commit();
            cp_async16(sh + 128 + 4 * t, src + 128 + 4 * t); /* group 2: quads 32..63 */
            cp_async_commit();
            const bool g1 = sh[4 * t + 3] == src[4 * t + 3], g2 = sh[128 + 4 * t] == src[128 + 4 * t];
            cp_async_wait<1>(); /* group 1 is here, group 2 may not be */
            const bool h1 = sh[4 * t + 3] == src[4 * t + 3], h2 = sh[128 + 4 * t] == src[128 + 4 * t];
            cp_async_wait<0>();
            const bool all = sh[4 * t + 1] == src[4 * t + 1] && sh[128 + 4 * t + 2] == src[128 + 4 * t + 2];
            if (!h1 || !all)
                seen_after[0] = false;
            if (emu::async_eager ? !(g1 && g2 && h2) : (g1 || g2 || h2))
                seen_before[0] = false;
        });
        expect(seen_after[0] && !emu::violations,
               eager ? "copies land when issued (async_eager)" : "a group lands when waited for; wait<1> leaves the newest");
        expect(seen_before[0], eager ? "... so a read right after the issue sees them"
                                     : "... so a read before the wait sees what was there (the poison)");
    }
    emu::async_eager = false;
    misuse("cp.async of 16 bytes from an address 4 bytes off 16", "aligned", 32,
           [] { cp_async16(sh + 4 * threadIdx.x, src + 1), cp_async_commit(), cp_async_wait<0>(); });
    misuse("cp.async into memory that is not shared", "shared", 32,
           [] { cp_async16(global_dst, src), cp_async_commit(), cp_async_wait<0>(); });
    misuse("a thread exits with a copy it never waited for", "never waited", 32, [] {
        if (threadIdx.x == 5)
            cp_async16(sh, src), cp_async_commit();
    });
    emu::dyn_smem.pop_back(); /* (unregistered: later launches may ask for more than its 1 KiB) */
    emu::dyn_smem_capacity = capacity;
}

} // namespace

int main()
{
    emu::rng_state = 4242;
    numeric_cases();
    emu::violations = 0;
    tf32_rounding();
    misuse_cases();
    mma_bf16_cases();
    cp_async_cases();
    std::printf("%s\n", failures ? "FAILED" : "all cases ok");
    return failures ? 1 : 0;
}
