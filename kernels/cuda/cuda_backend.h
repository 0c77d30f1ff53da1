/* cuda_backend.h — what a benchmark or test may reach inside a CUDA backend beyond kernels.h.
 * Private to the project (tests/gpu): models and workers stay on kernels.h. */
#ifndef RL_CUDA_BACKEND_H
#define RL_CUDA_BACKEND_H

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "../kernels.h"

/* The stream every op of `be` is queued on, so a caller can record cudaEvents around ops;
 * NULL (the legacy stream) when `be` is not a CUDA backend. */
cudaStream_t rl__cuda_stream(rl_backend *be);

#ifdef __cplusplus
}
#endif

#endif
