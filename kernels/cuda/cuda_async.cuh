/* cuda_async.cuh — copies from global to shared memory that go on while the block computes (cp.async, sm_80+),
 * for kernels that stage the next tile of tokens during the current one. The host emulation (tests/gpu/cuda_emu.h)
 * brings its own definitions: it performs a thread's copies only when that thread waits for them, so a read of a
 * tile before its copies are waited for (and made visible to the block by a barrier) reads stale data there.
 *
 * A thread's copies form groups in the order it commits them; cp_async_wait<N>() returns once at most the N most
 * recent committed groups of this thread are still in flight. The copies are visible to the thread that waited for
 * them; other threads see them after a barrier that follows the wait. */
#ifndef RL_CUDA_ASYNC_CUH
#define RL_CUDA_ASYNC_CUH

#ifndef RL_TESTS_CUDA_EMU_H
/* 16 bytes from global src to shared dst, both 16-byte aligned; cached in L2 only (the tiles are read once) */
__device__ __forceinline__ void cp_async16(void *dst, const void *src)
{
    const unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(src) : "memory");
}

/* closes the thread's current group of copies (an empty group when it issued none since the last commit) */
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

#endif
