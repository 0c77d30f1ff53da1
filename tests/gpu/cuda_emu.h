/* cuda_emu.h — the CUDA execution model on the host, for the tests/gpu logic checks, which include a CUDA source of
 * kernels/cuda as C++ and run its literal device code against the CPU backend.
 *
 * Each GPU thread of a block is a fiber (ucontext) of one host thread; blocks run one after another. A
 * fiber runs until it reaches a synchronisation point and the scheduler releases a point only when
 * every thread it needs has arrived:
 *   __syncthreads()      all threads of the block that have not exited (exited ones count as arrived);
 *   __shfl_xor_sync()    the 32 lanes of the warp, with a full mask, none exited, the block a whole
 *                        number of warps — anything else is undefined on a GPU and is reported here.
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

enum lane_state { RUNNING, AT_BARRIER, AT_SHUFFLE, EXITED };

struct lane {
    ucontext_t ctx;
    char *stack;
    lane_state state;
    uint64_t sent, got; /* shuffle payload (raw bits) */
    unsigned mask;
    int src, bytes;
};

constexpr int MAX_THREADS = 1024;
constexpr size_t STACK_BYTES = 256 << 10;

inline lane lanes[MAX_THREADS];
inline int nthreads, current;
inline ucontext_t scheduler;
inline std::function<void()> body; /* the kernel call every fiber makes */
inline uint3 tid, bid;
inline dim3 bdim, gdim;
inline int violations; /* reported misuses of the execution model; a check fails when non-zero */
/* Between two synchronisation points the threads of a block run one after another, lowest first or (when
 * set) highest first: a check that runs both orders catches a read of shared memory that a missing
 * barrier leaves racing with another thread's write, whichever thread comes first on a GPU. */
inline bool reverse_order;

struct smem_region {
    void *p;
    size_t bytes;
};
inline std::vector<smem_region> dyn_smem;
inline size_t dyn_smem_capacity = SIZE_MAX;

/* Registers an array that a kernel declares `extern __shared__` (poisoned before every block). */
inline void dynamic_smem(void *p, size_t bytes)
{
    dyn_smem.push_back({p, bytes});
    dyn_smem_capacity = std::min(dyn_smem_capacity, bytes);
}

inline void violation(const char *what)
{
    if (violations++ < 10)
        std::printf("  EMULATION: %s (block %u,%u,%u thread %d)\n", what, bid.x, bid.y, bid.z, current);
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
    swapcontext(&me.ctx, &scheduler);
}

inline void fiber_entry()
{
    body();
    lanes[current].state = EXITED;
    /* uc_link returns to the scheduler */
}

/* Releases every warp whose live lanes all wait at a shuffle; returns whether any was released. */
inline bool release_shuffles()
{
    bool any = false;
    for (int w0 = 0; w0 < nthreads; w0 += 32) {
        const int w1 = std::min(nthreads, w0 + 32);
        int waiting = 0, exited = 0;
        for (int l = w0; l < w1; l++)
            waiting += lanes[l].state == AT_SHUFFLE, exited += lanes[l].state == EXITED;
        if (!waiting || waiting + exited != w1 - w0)
            continue;
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
        any = true;
    }
    return any;
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
        getcontext(&x.ctx);
        x.ctx.uc_stack.ss_sp = x.stack;
        x.ctx.uc_stack.ss_size = STACK_BYTES;
        x.ctx.uc_link = &scheduler;
        makecontext(&x.ctx, fiber_entry, 0);
        x.state = RUNNING;
    }
    for (;;) {
        for (int i = 0; i < nthreads; i++) {
            const int l = reverse_order ? nthreads - 1 - i : i;
            if (lanes[l].state == RUNNING) {
                enter(l);
                swapcontext(&scheduler, &lanes[l].ctx);
            }
        }
        if (release_shuffles())
            continue;
        int live = 0, at_bar = 0;
        for (int l = 0; l < nthreads; l++)
            live += lanes[l].state != EXITED, at_bar += lanes[l].state == AT_BARRIER;
        if (!live)
            return true;
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

/* The backend's per-stream workspace, as rlc_ws_get: grows, and (here) comes back full of garbage. */
inline std::vector<unsigned char> workspace;
inline void *ws_get(size_t bytes)
{
    if (workspace.size() < bytes)
        workspace.resize(bytes);
    std::memset(workspace.data(), 0x7f, workspace.size());
    return workspace.data();
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

static inline float atomicAdd(float *p, float v)
{
    const float old = *p;
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
