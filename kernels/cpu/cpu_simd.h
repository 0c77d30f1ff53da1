/* cpu_simd.h — portable SIMD for the recurrence kernels (cpu_wkv7.c, cpu_wkv6.c).
 *
 * rl__vf16 is a GNU C vector of 16 floats (gcc and clang): the compiler lowers it to
 * one AVX-512 register, two AVX2 registers or four SSE registers, whatever the target.
 * It may sit at any float address and alias float arrays, so VLD/VST are plain
 * unaligned loads and stores of 16 consecutive floats.
 *
 * RL_CPU_CLONES compiles a function for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 + FMA)
 * and the baseline, and the dynamic loader picks the best one for the CPU it runs on
 * (ifunc), so the build stays portable. Elsewhere it expands to nothing. Keep vector
 * values inside one function: passing them by value between clones changes the ABI. */
#ifndef RL_CPU_SIMD_H
#define RL_CPU_SIMD_H

typedef float rl__vf16 __attribute__((vector_size(64), aligned(4), may_alias));

#define VLD(p) (*(const rl__vf16 *)(const void *)(p))
#define VST(p, x) (*(rl__vf16 *)(void *)(p) = (x))

#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute) && !defined(RL_NO_CPU_CLONES)
#if __has_attribute(target_clones)
#define RL_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef RL_CPU_CLONES
#define RL_CPU_CLONES
#endif

#endif
