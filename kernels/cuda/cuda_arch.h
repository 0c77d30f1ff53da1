/* cuda_arch.h — whether a build's GPU code serves a device, for the backend's start-up check (cuda_backend.cu
 * device_supported). Plain C with no CUDA in it, so tests/gpu/test_cuda_arch.c checks it on every machine.
 *
 * A build carries machine code for a list of architectures (sm_XY, meson.build's cuda_sm_codes) and PTX for one
 * (compute_XY, cuda_ptx_code). sm_XY code runs on compute capability X.Z for every Z ≥ Y of the same X (sm_80 on
 * 8.6 and 8.9); the PTX is compiled by the driver for any capability at or above its own (the first launch takes
 * minutes, then the driver's cache has it); neither serves an older device. Plain codes only (meson.build refuses
 * others): an arch-specific sm_90a/sm_100a runs on its exact capability alone, and its PTX nowhere else. */
#ifndef RL_CUDA_ARCH_H
#define RL_CUDA_ARCH_H

enum rlc_arch_fit {
    RLC_ARCH_CODE, /* machine code for it */
    RLC_ARCH_PTX,  /* only the PTX: the driver compiles it */
    RLC_ARCH_NONE  /* nothing it can run */
};

static inline enum rlc_arch_fit rlc_arch_fit(const int *sm_codes, int n_codes, int ptx_code, int major, int minor)
{
    for (int i = 0; i < n_codes; i++)
        if (sm_codes[i] / 10 == major && sm_codes[i] % 10 <= minor)
            return RLC_ARCH_CODE;
    return major * 10 + minor >= ptx_code ? RLC_ARCH_PTX : RLC_ARCH_NONE;
}

#endif
