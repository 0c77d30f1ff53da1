/* cuda_emu.h — the CUDA execution model on the host, for the tests/gpu logic checks, which include a CUDA source of
 * kernels/cuda as C++ and run its literal device code against the CPU backend.
 *
 * Each GPU thread of a block is a fiber (ucontext) of one host thread; blocks run one after another. A
 * fiber runs until it reaches a synchronisation point and the scheduler releases a point only when
 * every thread it needs has arrived:
 *   __syncthreads()      all threads of the block that have not exited (exited ones count as arrived);
 *   __shfl_xor_sync()    the 32 lanes of the warp, with a full mask, none exited, the block a whole
 *                        number of warps — anything else is undefined on a GPU and is reported here;
 *   wmma::load_matrix_sync, store_matrix_sync, mma_sync   the same rule: the TF32 m16n16k8 subset of
 *                        nvcuda::wmma (<mma.h>) below, so a kernel written for tensor cores runs unchanged;
 *   mma_bf16_16816()     the same rule: cuda_mma.cuh's mma.sync m16n8k16, operands in each lane's registers.
 * cuda_async.cuh's cp.async copies are not synchronisation points: a thread's copies are recorded and made when it
 * waits for their group (cp_async_wait), so a tile read before its copies were waited for (by the thread that issued
 * them, then a barrier) holds what was there before; with emu::async_eager they land when issued instead, so a
 * tile overwritten while other threads still read it shows; a thread that exits with copies pending is reported.
 * A state where no point can be released (a barrier in divergent code, a warp split between a shuffle
 * and a barrier) is reported as a deadlock instead of hanging. Because fibers switch only at those points,
 * atomics are plain read-modify-writes. `extern __shared__` arrays are ones the check defines and
 * registers (emu::dynamic_smem); they are filled with 0x7f garbage before every block, so a read of a
 * slot no thread staged shows up. Function-scope shared arrays must be written `static __shared__` in the
 * .cu (valid CUDA; here they become ordinary statics shared by the block's fibers).
 *
 * Launches: emu::launch(kernel, grid, block[, smem, stream])(args...) checks the configuration as the
 * runtime does (block ≤ 1024 threads, grid.y/z ≤ 65535, dynamic shared memory ≤ 48 KiB unless raised with
 * cudaFuncSetAttribute, at most 163 KiB = sm_80's opt-in limit) and leaves a failure in
 * cudaGetLastError(). tests/gpu/emu_launch.py rewrites a .cu's `k<<<cfg>>>(args)` into that form, so the
 * launchers' own host code (grids, slots, workspace layout) runs unchanged; the runtime calls they make
 * (cudaMemsetAsync, cudaMemcpyAsync, cudaFuncSetAttribute, cudaGetLastError) and the backend's
 * rlc_ws_get / rlc_fail_cuda are replaced by host versions below. The workspace is refilled with garbage
 * on every rlc_ws_get, so a launcher that relies on scratch being zero fails. */
#ifndef RL_TESTS_CUDA_EMU_H
#define RL_TESTS_CUDA_EMU_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <new>
#include <string>
#include <sys/mman.h>
#include <tuple>
#include <type_traits>
#include <ucontext.h>
#include <utility>
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

namespace emu {

enum lane_state { RUNNING, AT_BARRIER, AT_SHUFFLE, AT_WMMA, EXITED };

/* A lane's wmma call, performed for the whole warp when all 32 lanes have made it. Fragments hold their
 * whole tile, row-major, in every lane (see nvcuda::wmma below). */
enum wmma_op { WMMA_LOAD, WMMA_STORE, WMMA_MMA, MMA_BF16_16816 }; /* the last: cuda_mma.cuh's mma.sync */
struct wmma_call {
    wmma_op op;
    float *frag;            /* load: the fragment filled; store: the one stored; mma: d */
    const float *a, *b, *c; /* mma's operands */
    float *mem;             /* load, store: the tile in memory */
    unsigned ldm;
    int rows, cols;
    bool col_major; /* the memory layout */
};

/* Switching fibers: swapcontext saves and restores the signal mask, two system calls per switch — about half of an
 * emulated check's time went there. On x86-64 (without AddressSanitizer, which must see swapcontext to follow the
 * stack changes) a fiber switch is instead a plain call that pushes the six callee-saved registers on the current
 * stack, stores the stack pointer, loads the other fiber's and pops its registers (the System V ABI leaves every other
 * register to the caller; no fiber changes the floating-point control words). A new fiber's stack is laid out as if
 * it had called emu_switch from fiber_start. */
#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define RL_EMU_FAST_SWITCH 1
/* void emu_switch(void **save_sp, void *load_sp) */
__attribute__((naked, noinline)) static void emu_switch(void **, void *)
{
    asm volatile("pushq %rbp\n\t"
                 "pushq %rbx\n\t"
                 "pushq %r12\n\t"
                 "pushq %r13\n\t"
                 "pushq %r14\n\t"
                 "pushq %r15\n\t"
                 "movq %rsp, (%rdi)\n\t"
                 "movq %rsi, %rsp\n\t"
                 "popq %r15\n\t"
                 "popq %r14\n\t"
                 "popq %r13\n\t"
                 "popq %r12\n\t"
                 "popq %rbx\n\t"
                 "popq %rbp\n\t"
                 "ret\n\t");
}
#else
#define RL_EMU_FAST_SWITCH 0
#endif

/* a cp.async copy of 16 bytes (cuda_async.cuh), performed when its thread waits for its group */
struct async_copy {
    void *dst;
    const void *src;
};

struct lane {
    ucontext_t ctx;
    void *sp; /* RL_EMU_FAST_SWITCH: the suspended fiber's stack pointer */
    char *stack;
    lane_state state;
    uint64_t sent, got; /* shuffle payload (raw bits) */
    unsigned mask;
    int src, bytes;
    wmma_call wm;
    std::vector<async_copy> open;               /* cp.async copies not yet committed */
    std::vector<std::vector<async_copy>> groups; /* committed groups not yet waited for, oldest first */
};

constexpr int MAX_THREADS = 1024;
constexpr size_t STACK_BYTES = 256 << 10;

inline lane lanes[MAX_THREADS];
inline int nthreads, current;
inline ucontext_t scheduler;
inline void *scheduler_sp; /* RL_EMU_FAST_SWITCH: the scheduler's, while a fiber runs */
inline std::function<void()> body; /* the kernel call every fiber makes */
inline uint3 tid, bid;
inline dim3 bdim, gdim;
inline int violations; /* reported misuses of the execution model; a check fails when non-zero */
inline const char *last_violation; /* what the latest one was (for checks that provoke one) */
/* Between two synchronisation points the threads of a block run one after another, lowest first or (when
 * set) highest first: a check that runs both orders catches a read of shared memory that a missing
 * barrier leaves racing with another thread's write, whichever thread comes first on a GPU. */
inline bool reverse_order;
/* With warp_ahead set, a warp runs alone from one barrier to the next — through its shuffles and wmma calls, each
 * released as soon as its own 32 lanes arrive — before the next warp (in the order above) starts. Without it every
 * warp advances to its next warp-collective point before any goes on, so warps that make the same number of wmma
 * calls per phase stay in step and a missing barrier between two phases' tiles stays hidden; run ahead, a warp
 * reads another's tile before (lowest first) or after (highest first) that warp wrote it. */
inline bool warp_ahead;

struct smem_region {
    void *p;
    size_t bytes;
};
inline std::vector<smem_region> dyn_smem;
inline size_t dyn_smem_capacity = SIZE_MAX;

/* A kernel must stay inside the dynamic shared memory its launcher asks for (`used` of the registered array
 * `base`, `bytes` long): every registered array is filled with 0x7f bytes before each block, so a byte past `used`
 * that is no longer 0x7f after the grid was written there by the last block (a read there sees 3.4e38 and fails the
 * comparison). Counts a violation and names the kernel. */
inline void check_smem_tail(const void *base, size_t bytes, size_t used, const char *kernel);

/* Registers an array that a kernel declares `extern __shared__` (poisoned before every block). */
inline void dynamic_smem(void *p, size_t bytes)
{
    dyn_smem.push_back({p, bytes});
    dyn_smem_capacity = std::min(dyn_smem_capacity, bytes);
}

inline void violation(const char *what)
{
    last_violation = what;
    if (violations++ < 10)
        std::printf("  EMULATION: %s (block %u,%u,%u thread %d)\n", what, bid.x, bid.y, bid.z, current);
}

inline void check_smem_tail(const void *base, size_t bytes, size_t used, const char *kernel)
{
    const unsigned char *b = static_cast<const unsigned char *>(base);
    for (size_t i = used; i < bytes; i++)
        if (b[i] != 0x7f) {
            std::printf("  %s wrote shared memory past its %zu bytes (byte %zu)\n", kernel, used, i);
            violations++;
            return;
        }
}

inline void enter(int l)
{
    current = l;
    tid = make_uint3(l % bdim.x, l / bdim.x % bdim.y, l / (bdim.x * bdim.y));
}

inline void suspend(lane_state s)
{
    lane &me = lanes[current];
    me.state = s;
#if RL_EMU_FAST_SWITCH
    emu_switch(&me.sp, scheduler_sp);
#else
    swapcontext(&me.ctx, &scheduler);
#endif
}

/* the scheduler runs fiber l until it suspends or exits */
inline void resume(int l)
{
    enter(l);
#if RL_EMU_FAST_SWITCH
    emu_switch(&scheduler_sp, lanes[l].sp);
#else
    swapcontext(&scheduler, &lanes[l].ctx);
#endif
}

inline void fiber_entry()
{
    body();
    lanes[current].state = EXITED;
#if RL_EMU_FAST_SWITCH
    void *dead;
    emu_switch(&dead, scheduler_sp); /* never resumed */
    __builtin_unreachable();
#endif
    /* uc_link returns to the scheduler */
}

/* a fresh fiber on lane x's stack, to run fiber_entry when first resumed */
inline void start_fiber(lane &x)
{
    x.open.clear(), x.groups.clear();
#if RL_EMU_FAST_SWITCH
    /* from the top: a null return address for fiber_entry (its entry sees the stack as after a call: 8 mod 16), the
     * address emu_switch's ret jumps to, six zero registers */
    void **top = reinterpret_cast<void **>(x.stack + STACK_BYTES);
    top[-1] = nullptr;
    top[-2] = reinterpret_cast<void *>(&fiber_entry);
    for (int r = 3; r <= 8; r++)
        top[-r] = nullptr;
    x.sp = top - 8;
#else
    getcontext(&x.ctx);
    x.ctx.uc_stack.ss_sp = x.stack;
    x.ctx.uc_stack.ss_size = STACK_BYTES;
    x.ctx.uc_link = &scheduler;
    makecontext(&x.ctx, fiber_entry, 0);
#endif
}

/* The tensor core reads only the top 19 bits of a TF32 operand (sign, exponent, 10 mantissa bits): the low
 * 13 bits of a float that was not converted with __float_to_tf32 are dropped, not rounded. NaN stays NaN. */
inline double tf32_operand(float v)
{
    uint32_t u;
    std::memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) != 0x7f800000u)
        u &= 0xffffe000u;
    float t;
    std::memcpy(&t, &u, 4);
    return t;
}

/* d = a·b + c for a 16×8 a, 8×16 b, 16×16 c (row-major): products exact, summed in double, rounded to float
 * once per element — at least the fp32 accumulation of the hardware. */
inline void mma_tile(float *d, const float *a, const float *b, const float *c)
{
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            double s = 0;
            for (int k = 0; k < 8; k++)
                s += tf32_operand(a[m * 8 + k]) * tf32_operand(b[k * 16 + n]);
            d[m * 16 + n] = (float)(s + c[m * 16 + n]);
        }
}

inline float bf16_bits_to_float(uint32_t h)
{
    const uint32_t u = h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

/* mma.sync.m16n8k16 bf16 → fp32 for the warp: every lane's A, B and accumulator registers, read by the PTX layout
 * (cuda_mma.cuh), form the matrices; each lane's d becomes its part of D = A·B + C (the products summed in double,
 * rounded once: the tensor cores' fp32 accumulation within its rounding). */
inline void mma_bf16_warp(int w0)
{
    float A[16][16], B[16][8], C[16][8];
    for (int L = 0; L < 32; L++) {
        const wmma_call &x = lanes[w0 + L].wm;
        const uint32_t *a = reinterpret_cast<const uint32_t *>(x.a), *b = reinterpret_cast<const uint32_t *>(x.b);
        const int g = L / 4, t = L % 4;
        for (int u = 0; u < 4; u++) {
            const int r = g + 8 * (u & 1), c = 2 * t + 8 * (u >> 1);
            A[r][c] = bf16_bits_to_float(a[u] & 0xffffu), A[r][c + 1] = bf16_bits_to_float(a[u] >> 16);
        }
        for (int u = 0; u < 2; u++) {
            B[2 * t + 8 * u][g] = bf16_bits_to_float(b[u] & 0xffffu);
            B[2 * t + 8 * u + 1][g] = bf16_bits_to_float(b[u] >> 16);
        }
        for (int u = 0; u < 4; u++)
            C[g + 8 * (u >> 1)][2 * t + (u & 1)] = x.frag[u];
    }
    for (int L = 0; L < 32; L++) {
        const int g = L / 4, t = L % 4;
        for (int u = 0; u < 4; u++) {
            const int r = g + 8 * (u >> 1), c = 2 * t + (u & 1);
            double acc = C[r][c];
            for (int k = 0; k < 16; k++)
                acc += (double)A[r][k] * B[k][c];
            lanes[w0 + L].wm.frag[u] = (float)acc;
        }
    }
}

/* Performs the wmma call the live lanes w0..w1 wait at. False when they wait at different calls: the warp
 * stays blocked and the block is reported as a deadlock. */
inline bool release_wmma(int w0, int w1)
{
    int first = w0;
    while (lanes[first].state != AT_WMMA)
        first++;
    const wmma_call f = lanes[first].wm;
    for (int l = w0; l < w1; l++)
        if (lanes[l].state == AT_WMMA && lanes[l].wm.op != f.op)
            return false;
    enter(first); /* a violation names the warp's first waiting lane */
    if (f.op == MMA_BF16_16816) {
        bool whole = w1 - w0 == 32;
        for (int l = w0; l < w1; l++)
            whole &= lanes[l].state == AT_WMMA;
        if (whole)
            mma_bf16_warp(w0);
        else
            violation("mma.sync with lanes of the warp missing");
        return true;
    }
    const int n = f.rows * f.cols;
    bool uniform = true, aligned = true, ldm_ok = true, same = true, whole = w1 - w0 == 32;
    for (int l = w0; l < w1; l++) {
        const wmma_call &x = lanes[l].wm;
        whole &= lanes[l].state == AT_WMMA;
        if (lanes[l].state != AT_WMMA)
            continue;
        uniform &= x.mem == f.mem && x.ldm == f.ldm && x.col_major == f.col_major && x.rows == f.rows &&
                   x.cols == f.cols;
        if (f.op != WMMA_MMA)
            aligned &= (uintptr_t)x.mem % 32 == 0, ldm_ok &= x.ldm % 4 == 0;
        if (f.op == WMMA_STORE)
            same &= !std::memcmp(x.frag, f.frag, sizeof(float) * n);
        if (f.op == WMMA_MMA)
            same &= !std::memcmp(x.a, f.a, sizeof(float) * 128) &&
                    !std::memcmp(x.b, f.b, sizeof(float) * 128) &&
                    !std::memcmp(x.c, f.c, sizeof(float) * 256);
    }
    /* The real API's requirements: the same pointer, ldm and layout in every lane, a 256-bit aligned
     * pointer, ldm a multiple of 16 bytes. */
    if (!whole)
        violation("wmma call with lanes of the warp missing");
    if (!uniform)
        violation("wmma: lanes of the warp disagree on pointer, ldm or layout");
    if (!aligned)
        violation("wmma load/store: pointer not 32-byte (256-bit) aligned");
    if (!ldm_ok)
        violation("wmma load/store: ldm not a multiple of 4 floats (16 bytes)");
    /* On a GPU each lane holds a different piece of a fragment; here each holds all of it, so copies that
     * differ mean the kernel did lane-dependent math on fragment elements. */
    if (!same)
        violation("wmma: the lanes' fragments differ (lane-dependent math on fragment elements)");
    if (f.op == WMMA_MMA) {
        static float d[32][256]; /* every result first: a lane's d may alias its c */
        mma_tile(d[first - w0], f.a, f.b, f.c);
        for (int l = w0; l < w1; l++)
            if (lanes[l].state == AT_WMMA && l != first) {
                const wmma_call &x = lanes[l].wm;
                if (same)
                    std::memcpy(d[l - w0], d[first - w0], sizeof d[0]);
                else
                    mma_tile(d[l - w0], x.a, x.b, x.c);
            }
        for (int l = w0; l < w1; l++)
            if (lanes[l].state == AT_WMMA)
                std::memcpy(lanes[l].wm.frag, d[l - w0], sizeof d[0]);
        return true;
    }
    for (int l = w0; l < w1; l++) {
        const wmma_call &x = lanes[l].wm;
        if (lanes[l].state != AT_WMMA)
            continue;
        for (int r = 0; r < x.rows; r++)
            for (int c = 0; c < x.cols; c++) {
                float &m = x.mem[x.col_major ? (size_t)c * x.ldm + r : (size_t)r * x.ldm + c];
                float &v = x.frag[r * x.cols + c];
                if (x.op == WMMA_LOAD)
                    v = m;
                else
                    m = v;
            }
    }
    return true;
}

/* Releases the warp of lanes w0..w1 if its live lanes all wait at the same warp-collective call (a shuffle or
 * a wmma call); returns whether it was released. */
inline bool release_warp(int w0, int w1)
{
    int shfl = 0, mma = 0, exited = 0;
    for (int l = w0; l < w1; l++)
        shfl += lanes[l].state == AT_SHUFFLE, mma += lanes[l].state == AT_WMMA, exited += lanes[l].state == EXITED;
    if ((!shfl && !mma) || (shfl && mma) || shfl + mma + exited != w1 - w0)
        return false;
    if (mma) {
        if (!release_wmma(w0, w1))
            return false;
        for (int l = w0; l < w1; l++)
            if (lanes[l].state == AT_WMMA)
                lanes[l].state = RUNNING;
        return true;
    }
    if (exited || w1 - w0 != 32)
        violation("full-mask warp shuffle with lanes missing");
    for (int l = w0; l < w1; l++) {
        lane &x = lanes[l];
        if (x.state != AT_SHUFFLE)
            continue;
        if (x.mask != 0xffffffffu || x.bytes != lanes[w0].bytes)
            violation("warp shuffle lanes disagree on mask or type");
        const int s = w0 + x.src;
        x.got = s < w1 && lanes[s].state == AT_SHUFFLE ? lanes[s].sent : x.sent;
    }
    for (int l = w0; l < w1; l++)
        if (lanes[l].state == AT_SHUFFLE)
            lanes[l].state = RUNNING;
    return true;
}

/* Releases every warp that release_warp can; returns whether any was released. */
inline bool release_warps()
{
    bool any = false;
    for (int w0 = 0; w0 < nthreads; w0 += 32)
        any |= release_warp(w0, std::min(nthreads, w0 + 32));
    return any;
}

/* warp_ahead: each warp in turn runs until all its lanes wait at a barrier or have exited (or are stuck at
 * collective calls that disagree: the deadlock check below reports it). */
inline void run_warps_ahead()
{
    const int nw = (nthreads + 31) / 32;
    for (int i = 0; i < nw; i++) {
        const int w = reverse_order ? nw - 1 - i : i, w0 = 32 * w, w1 = std::min(nthreads, w0 + 32);
        do
            for (int j = 0; j < w1 - w0; j++) {
                const int l = reverse_order ? w1 - 1 - j : w0 + j;
                if (lanes[l].state == RUNNING)
                    resume(l);
            }
        while (release_warp(w0, w1));
    }
}

/* Runs one block to completion; false on deadlock. */
inline bool run_block()
{
    for (const smem_region &r : dyn_smem)
        std::memset(r.p, 0x7f, r.bytes);
    for (int l = 0; l < nthreads; l++) {
        lane &x = lanes[l];
        if (!x.stack) {
            x.stack = (char *)mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (x.stack == MAP_FAILED) {
                std::printf("emu: cannot map a fiber stack\n");
                std::exit(1);
            }
        }
        start_fiber(x);
        x.state = RUNNING;
    }
    for (;;) {
        if (warp_ahead) {
            run_warps_ahead();
        } else {
            for (int i = 0; i < nthreads; i++) {
                const int l = reverse_order ? nthreads - 1 - i : i;
                if (lanes[l].state == RUNNING)
                    resume(l);
            }
            if (release_warps())
                continue;
        }
        int live = 0, at_bar = 0;
        for (int l = 0; l < nthreads; l++)
            live += lanes[l].state != EXITED, at_bar += lanes[l].state == AT_BARRIER;
        if (!live) {
            for (int l = 0; l < nthreads; l++) {
                bool pending = !lanes[l].open.empty();
                for (const auto &g : lanes[l].groups)
                    pending |= !g.empty();
                if (pending) {
                    enter(l);
                    violation("a thread exited with cp.async copies it never waited for");
                }
            }
            return true;
        }
        if (at_bar != live) {
            violation("deadlock: threads wait at different synchronisation points");
            return false;
        }
        for (int l = 0; l < nthreads; l++)
            if (lanes[l].state == AT_BARRIER)
                lanes[l].state = RUNNING;
    }
}

/* Runs a grid of `block`-shaped blocks, blocks in x-fastest order. */
inline void run_grid(dim3 grid, dim3 block, const std::function<void()> &fn)
{
    const int n = (int)(block.x * block.y * block.z);
    if (n < 1 || n > MAX_THREADS) {
        std::printf("emu: block of %d threads\n", n);
        std::exit(1);
    }
    body = fn, nthreads = n, bdim = block, gdim = grid;
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                bid = make_uint3(x, y, z);
                if (!run_block())
                    return;
            }
}

/* ---- the CUDA runtime, as far as the launchers use it ---- */

inline cudaError_t last_error = cudaSuccess;
inline std::map<const void *, int> max_dyn_smem; /* cudaFuncAttributeMaxDynamicSharedMemorySize */
constexpr int DEFAULT_DYN_SMEM = 48 << 10, OPTIN_DYN_SMEM = 166912;

inline cudaError_t get_last_error()
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}

template <class F> cudaError_t func_set_attribute(F *k, cudaFuncAttribute attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > OPTIN_DYN_SMEM)
        return last_error = cudaErrorInvalidValue;
    max_dyn_smem[(const void *)k] = value;
    return cudaSuccess;
}

inline cudaError_t memset_async(void *p, int v, size_t n, cudaStream_t = nullptr)
{
    std::memset(p, v, n);
    return cudaSuccess;
}

inline cudaError_t memcpy_async(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t = nullptr)
{
    std::memcpy(d, s, n);
    return cudaSuccess;
}

template <class... P> struct launcher {
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;

    bool config_ok() const
    {
        const unsigned long long n = (unsigned long long)block.x * block.y * block.z;
        auto it = max_dyn_smem.find((const void *)kernel);
        const size_t limit = it == max_dyn_smem.end() ? DEFAULT_DYN_SMEM : (size_t)it->second;
        if (n < 1 || n > 1024 || block.z > 64 || grid.x < 1 || grid.y < 1 || grid.z < 1 || grid.y > 65535 ||
            grid.z > 65535 || grid.x > 0x7fffffffu)
            last_error = cudaErrorInvalidConfiguration;
        else if (smem > limit)
            last_error = cudaErrorInvalidValue;
        else if (smem > dyn_smem_capacity) {
            std::printf("emu: launch asks %zu bytes of dynamic shared memory; the check registered %zu\n", smem,
                        dyn_smem_capacity);
            std::exit(1);
        } else
            return true;
        return false;
    }

    /* An argument converts to its parameter's type as in a call; NULL (an integer 0 once forwarded) to a
     * null pointer. */
    template <class Q, class A> static Q convert(A &&a)
    {
        if constexpr (std::is_pointer_v<Q> && std::is_integral_v<std::decay_t<A>>) {
            if (a != 0)
                violation("integer passed for a pointer parameter");
            return nullptr;
        } else {
            Q q = std::forward<A>(a);
            return q;
        }
    }

    /* Arguments convert once, on the host, and every thread gets a copy. */
    template <class... A> void operator()(A &&...a) const
    {
        if (!config_ok())
            return;
        const std::tuple<P...> args(convert<P>(std::forward<A>(a))...);
        run_grid(grid, block, [&] { std::apply(kernel, args); });
    }
};

template <class... P>
launcher<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr)
{
    return {kernel, grid, block, smem};
}

/* The backend's per-stream workspace, as rlc_ws_get: grows, and (here) comes back full of garbage. Aligned
 * to 256 bytes as cudaMalloc's, which the wmma alignment check relies on. */
inline std::vector<unsigned char> workspace;
inline void *ws_get(size_t bytes)
{
    if (workspace.size() < bytes + 255)
        workspace.resize(bytes + 255);
    std::memset(workspace.data(), 0x7f, workspace.size());
    return (void *)(((uintptr_t)workspace.data() + 255) & ~(uintptr_t)255);
}

inline std::string cuda_failure;

} // namespace emu

/* ---- device built-ins ---- */
#define threadIdx emu::tid
#define blockIdx emu::bid
#define blockDim emu::bdim
#define gridDim emu::gdim

static inline void __syncthreads() { emu::suspend(emu::AT_BARRIER); }
static inline int min(int a, int b) { return a < b ? a : b; }

template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask)
{
    static_assert(sizeof(T) <= 8, "shuffle payload");
    emu::lane &me = emu::lanes[emu::current];
    me.sent = 0;
    std::memcpy(&me.sent, &v, sizeof v);
    me.mask = mask, me.bytes = (int)sizeof v, me.src = (int)((emu::current & 31) ^ lane_mask);
    emu::suspend(emu::AT_SHUFFLE);
    T r;
    std::memcpy(&r, &emu::lanes[emu::current].got, sizeof r);
    return r;
}

/* Blocks run one after another, and each thread's memory operations happen in program order: a fence has nothing to
 * order, and a load that bypasses L1 reads what an ordinary one does. */
static inline void __threadfence() {}
template <class T> static inline T __ldcg(const T *p) { return *p; }

static inline float atomicAdd(float *p, float v)
{
    const float old = *p;
    *p = old + v;
    return old;
}

static inline unsigned atomicAdd(unsigned *p, unsigned v)
{
    const unsigned old = *p;
    *p = old + v;
    return old;
}

static inline int atomicCAS(int *p, int compare, int value)
{
    const int old = *p;
    if (old == compare)
        *p = value;
    return old;
}

/* ---- nvcuda::wmma (<mma.h>), the TF32 m16n16k8 shapes only ----
 * The names, overloads and signatures are those of crt/mma.h, so a kernel compiles against either. The
 * difference: a fragment holds its WHOLE tile, row-major, in every lane (num_elements 16·8 for a and b,
 * 16·16 for the accumulator, against 4 and 8 per lane on a GPU), which is sound for kernels that touch x[]
 * only element-wise and uniformly (conversions, hi/lo splits, scaling). load/store/mma_sync are warp
 * rendezvous points as the shuffle (emu::release_wmma: all 32 lanes, same call and arguments, alignment,
 * identical fragments); fill_fragment writes only the lane's own registers, so it is not — a lane-dependent
 * fill shows up at the next mma or store. */
namespace emu {
/* One lane's part of a warp-collective wmma call: it waits until the warp's other lanes arrive. */
inline void wmma_warp_call(wmma_op op, float *frag, const float *mem, unsigned ldm, int rows, int cols,
                           bool col_major, const float *a = nullptr, const float *b = nullptr,
                           const float *c = nullptr)
{
    lanes[current].wm = {op, frag, a, b, c, const_cast<float *>(mem), ldm, rows, cols, col_major};
    suspend(AT_WMMA);
}
} // namespace emu

namespace nvcuda {
namespace wmma {

/* cvt.rna.tf32.f32: to nearest with ties away from zero, 10 mantissa bits kept, the low 13 zero; adding half
 * an ulp to the magnitude and truncating rounds a tie away from zero and carries into the exponent (the
 * largest floats round to infinity). Infinity and NaN pass through. */
inline __device__ float __float_to_tf32(float in)
{
    uint32_t u;
    std::memcpy(&u, &in, 4);
    if ((u & 0x7f800000u) != 0x7f800000u)
        u = (u + 0x1000u) & 0xffffe000u;
    float r;
    std::memcpy(&r, &u, 4);
    return r;
}

struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
namespace precision {
struct tf32;
}

enum layout_t { mem_row_major, mem_col_major };

template <typename T, int size> struct __frag_base {
    enum { num_elements = size };
    enum { num_storage_elements = size };
    typedef T element_type;
    typedef float storage_element_type;
    float x[size];
};

template <typename Use, int m, int n, int k, typename T, typename Layout = void> class fragment;
template <>
class fragment<matrix_a, 16, 16, 8, precision::tf32, row_major> : public __frag_base<precision::tf32, 128> {};
template <>
class fragment<matrix_a, 16, 16, 8, precision::tf32, col_major> : public __frag_base<precision::tf32, 128> {};
template <>
class fragment<matrix_b, 16, 16, 8, precision::tf32, row_major> : public __frag_base<precision::tf32, 128> {};
template <>
class fragment<matrix_b, 16, 16, 8, precision::tf32, col_major> : public __frag_base<precision::tf32, 128> {};
template <> class fragment<accumulator, 16, 16, 8, float> : public __frag_base<float, 256> {};

template <typename T, int size> static inline void fill_fragment(__frag_base<T, size> &f, const float &in)
{
    for (int i = 0; i < size; i++)
        f.x[i] = in;
}

/* a is M×K = 16×8, element (m,k) at p[m·ldm + k] (row-major) or p[k·ldm + m]; b is K×N = 8×16, (k,n) at
 * p[k·ldm + n] or p[n·ldm + k]; the accumulator (m,n) at p[m·ldm + n] or p[n·ldm + m]. */
static inline void load_matrix_sync(fragment<matrix_a, 16, 16, 8, precision::tf32, row_major> &a,
                                    const float *p, unsigned ldm)
{
    emu::wmma_warp_call(emu::WMMA_LOAD, a.x, p, ldm, 16, 8, false);
}
static inline void load_matrix_sync(fragment<matrix_a, 16, 16, 8, precision::tf32, col_major> &a,
                                    const float *p, unsigned ldm)
{
    emu::wmma_warp_call(emu::WMMA_LOAD, a.x, p, ldm, 16, 8, true);
}
static inline void load_matrix_sync(fragment<matrix_b, 16, 16, 8, precision::tf32, row_major> &a,
                                    const float *p, unsigned ldm)
{
    emu::wmma_warp_call(emu::WMMA_LOAD, a.x, p, ldm, 8, 16, false);
}
static inline void load_matrix_sync(fragment<matrix_b, 16, 16, 8, precision::tf32, col_major> &a,
                                    const float *p, unsigned ldm)
{
    emu::wmma_warp_call(emu::WMMA_LOAD, a.x, p, ldm, 8, 16, true);
}
static inline void load_matrix_sync(fragment<accumulator, 16, 16, 8, float> &a, const float *p, unsigned ldm,
                                    layout_t layout)
{
    emu::wmma_warp_call(emu::WMMA_LOAD, a.x, p, ldm, 16, 16, layout == mem_col_major);
}
static inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 8, float> &a, unsigned ldm,
                                     layout_t layout)
{
    emu::wmma_warp_call(emu::WMMA_STORE, const_cast<float *>(a.x), p, ldm, 16, 16, layout == mem_col_major);
}

/* d = a·b + c (d may be c); the fragments hold their tiles row-major whatever the memory layout was. */
template <typename LA, typename LB>
static inline void mma_sync(fragment<accumulator, 16, 16, 8, float> &d,
                            const fragment<matrix_a, 16, 16, 8, precision::tf32, LA> &a,
                            const fragment<matrix_b, 16, 16, 8, precision::tf32, LB> &b,
                            const fragment<accumulator, 16, 16, 8, float> &c)
{
    emu::wmma_warp_call(emu::WMMA_MMA, d.x, nullptr, 0, 16, 16, false, a.x, b.x, c.x);
}

} // namespace wmma
} // namespace nvcuda

/* ---- cuda_mma.cuh's two functions ---- */
/* __floats2bfloat162_rn: each to nearest even, NaN to the canonical bf16 NaN; lo in the low half */
static inline uint32_t pack_bf16x2(float lo, float hi)
{
    auto round = [](float f) -> uint32_t {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u)
            return 0x7fc0u;
        return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    };
    return round(lo) | round(hi) << 16;
}

/* d += A·B for the warp: a rendezvous of its 32 lanes (emu::mma_bf16_warp) */
static inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2])
{
    emu::wmma_warp_call(emu::MMA_BF16_16816, d, nullptr, 0, 16, 8, false, reinterpret_cast<const float *>(a),
                        reinterpret_cast<const float *>(b), d);
}

/* ---- cuda_async.cuh's cp.async: a thread's copies are made when it waits for their group ---- */
namespace emu {
/* Copies land when waited for (a tile read too early holds stale data), or with async_eager when issued (a tile
 * overwritten while other threads still read it shows): a check runs both. */
inline bool async_eager;

inline bool in_shared(const void *p, size_t bytes)
{
    for (const smem_region &r : dyn_smem)
        if ((const char *)p >= (const char *)r.p && (const char *)p + bytes <= (const char *)r.p + r.bytes)
            return true;
    return false;
}
} // namespace emu

static inline void cp_async16(void *dst, const void *src)
{
    if ((uintptr_t)dst % 16 || (uintptr_t)src % 16)
        emu::violation("cp.async of 16 bytes: an address not 16-byte aligned");
    if (!emu::in_shared(dst, 16))
        emu::violation("cp.async: the destination is not in (registered dynamic) shared memory");
    if (emu::async_eager) /* the other extreme: the copy lands at once (and only then; the wait has nothing to copy) */
        std::memcpy(dst, src, 16);
    emu::lanes[emu::current].open.push_back({dst, emu::async_eager ? nullptr : src});
}

static inline void cp_async_commit()
{
    emu::lane &me = emu::lanes[emu::current];
    me.groups.push_back(std::move(me.open));
    me.open.clear();
}

template <int N> static inline void cp_async_wait()
{
    emu::lane &me = emu::lanes[emu::current];
    while ((int)me.groups.size() > N) {
        for (const emu::async_copy &c : me.groups.front())
            if (c.src)
                std::memcpy(c.dst, c.src, 16);
        me.groups.erase(me.groups.begin());
    }
}

/* ---- the runtime and backend calls the launchers make ---- */
#define cudaGetLastError emu::get_last_error
#define cudaFuncSetAttribute emu::func_set_attribute
#define cudaMemsetAsync emu::memset_async
#define cudaMemcpyAsync emu::memcpy_async
#define rlc_ws_get emu_rlc_ws_get
#define rlc_fail_cuda emu_rlc_fail_cuda

extern "C" {
#include "kernels.h"
}
#include "cuda/cuda_ops.h" /* declares rlc_ws_get under its emulated name */

extern "C" void *emu_rlc_ws_get(rlc_workspace *, cudaStream_t, size_t bytes) { return emu::ws_get(bytes); }

/* ---- helpers of the checks ---- */
namespace emu {

inline unsigned rng_state = 12345;
inline float frand(float lo, float hi)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)((rng_state >> 8) & 0xffffff) / (float)0x1000000;
}
inline std::vector<float> randv(size_t n, float lo, float hi)
{
    std::vector<float> v(n);
    for (auto &x : v)
        x = frand(lo, hi);
    return v;
}

/* A host stand-in for a cudaMalloc'd buffer, 256-byte aligned as cudaMalloc's: glibc's malloc aligns to 16
 * only, so a std::vector handed to a kernel whose wmma calls read it directly may fail the 32-byte check
 * where the GPU would not. */
template <class T> struct device_allocator {
    using value_type = T;
    device_allocator() = default;
    template <class U> device_allocator(const device_allocator<U> &) {}
    T *allocate(size_t n) { return static_cast<T *>(::operator new(n * sizeof(T), std::align_val_t(256))); }
    void deallocate(T *p, size_t) { ::operator delete(p, std::align_val_t(256)); }
    bool operator==(const device_allocator &) const { return true; }
};
template <class T> using device_vector = std::vector<T, device_allocator<T>>;

/* max |a − b| / (1 + max |b|); NaN anywhere (a poisoned output left unwritten) gives infinity */
inline double rel_err(const std::vector<float> &a, const std::vector<float> &b)
{
    double m = 0, s = 0;
    for (size_t i = 0; i < a.size(); i++) {
        const double d = std::fabs((double)a[i] - b[i]);
        if (!(d == d) || !std::isfinite(d))
            return INFINITY;
        m = std::fmax(m, d);
        s = std::fmax(s, std::fabs((double)b[i]));
    }
    return m / (1.0 + s);
}

inline rl_backend *cpu_backend()
{
    rl_backend *be = nullptr;
    rl_backend_options opt = {RL_BACKEND_CPU, 1, 0};
    char err[256];
    if (rl_backend_create(&be, &opt, err, sizeof err)) {
        std::printf("cannot create the CPU backend: %s\n", err);
        std::exit(1);
    }
    return be;
}

/* ---- the per-op bookkeeping of the launcher-level checks (layers, mix) ---- */

inline std::map<std::string, double> worst; /* the largest error per op over all cases */
inline int failures;
inline bool expect_failure; /* running the negative control */

/* One comparison: fails on a launch or backend error, an emulation violation, or err > tol. */
inline void report(const std::string &op, double err, double tol, bool call_failed)
{
    const bool ok = !call_failed && !violations && err <= tol;
    if (!expect_failure)
        worst[op] = std::fmax(worst[op], err);
    std::printf("  %-28s %.2e (tol %.0e)%s\n", op.c_str(), err, tol, ok ? "" : "  FAIL");
    failures += !ok;
    violations = 0;
}

/* Runs `cases` with the threads of a block in ascending, then in descending order, then the negative
 * control (which must fail: a perturbed input), prints the worst error per op and returns the exit
 * status. */
inline int run_checks(const std::function<void()> &cases, const std::function<void()> &negative_control)
{
    for (bool reverse : {false, true}) {
        std::printf("== threads of a block run %s between synchronisation points ==\n",
                    reverse ? "highest first" : "lowest first");
        reverse_order = reverse;
        cases();
    }
    std::printf("negative control (a perturbed input; must FAIL):\n");
    const int before = failures;
    expect_failure = true;
    negative_control();
    expect_failure = false;
    const bool control_failed = failures > before;
    failures = before + !control_failed;
    std::printf("  %s\n", control_failed ? "failed as it must" : "PASSED: the comparison is vacuous");
    std::printf("max relative error per op:\n");
    for (auto &[op, e] : worst)
        std::printf("  %-28s %.2e\n", op.c_str(), e);
    std::printf("%s\n", failures ? "FAILED" : "all cases ok");
    return failures ? 1 : 0;
}

} // namespace emu

#endif
