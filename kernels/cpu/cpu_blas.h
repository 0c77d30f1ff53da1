/* cpu_blas.h — who runs the threads of an sgemm.
 *
 * OpenBLAS (pthread build) keeps its own thread pool beside OpenMP's. When the
 * backend parallelises around sgemm calls with OpenMP (attention tiles, GEMMs
 * split by rows or columns), OpenBLAS is held at one thread for the duration so
 * the two pools never compete for the same cores. */
#ifndef RL_CPU_BLAS_H
#define RL_CPU_BLAS_H

#include <cblas.h>

/* Returns the previous OpenBLAS thread count for rl__cpu_blas_single_end. */
static inline int rl__cpu_blas_single_begin(void)
{
    int saved = openblas_get_num_threads();
    if (saved != 1) openblas_set_num_threads(1);
    return saved;
}

static inline void rl__cpu_blas_single_end(int saved)
{
    if (saved != 1) openblas_set_num_threads(saved);
}

#endif
