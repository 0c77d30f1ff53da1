/* test_cuda_arch.c — which of a build's GPU code serves which device (kernels/cuda/cuda_arch.h, the CUDA backend's
 * start-up check): machine code within its major version from its minor up, PTX from its own capability up, nothing
 * for an older device. Plain C: runs on every machine, GPU or not. */
#include <stdio.h>

#include "../../kernels/cuda/cuda_arch.h"

static int failures;

static void expect(const char *build, const int *codes, int n, int ptx, int major, int minor, enum rlc_arch_fit want)
{
    static const char *const name[] = {"machine code", "PTX only", "nothing"};
    const enum rlc_arch_fit got = rlc_arch_fit(codes, n, ptx, major, minor);
    printf("%-36s compute capability %2d.%d: %-12s %s\n", build, major, minor, name[got], got == want ? "ok" : "FAIL");
    if (got != want) {
        printf("    expected %s\n", name[want]);
        failures++;
    }
}

int main(void)
{
    /* this project's build: sm_80, sm_90, compute_90 PTX */
    static const int ours[] = {80, 90};
    const char *b = "sm_80 sm_90 + compute_90 (ours)";
    expect(b, ours, 2, 90, 8, 0, RLC_ARCH_CODE);  /* A100 */
    expect(b, ours, 2, 90, 8, 6, RLC_ARCH_CODE);  /* A10, RTX 3090: the sm_80 code */
    expect(b, ours, 2, 90, 8, 9, RLC_ARCH_CODE);  /* L40S, RTX 4090 */
    expect(b, ours, 2, 90, 9, 0, RLC_ARCH_CODE);  /* H100, H200 */
    expect(b, ours, 2, 90, 10, 0, RLC_ARCH_PTX);  /* B200: the driver compiles the PTX */
    expect(b, ours, 2, 90, 12, 0, RLC_ARCH_PTX);  /* RTX 50xx */
    expect(b, ours, 2, 90, 7, 5, RLC_ARCH_NONE);  /* T4 (the backend refuses < 8.0 before asking) */
    /* a build for Hopper alone: an Ampere card has nothing it can run */
    static const int hopper[] = {90};
    expect("sm_90 + compute_90", hopper, 1, 90, 8, 6, RLC_ARCH_NONE);
    expect("sm_90 + compute_90", hopper, 1, 90, 9, 0, RLC_ARCH_CODE);
    /* three-digit codes: sm_100 runs on 10.0 and 10.3, not on 12.0 (the PTX does) */
    static const int with_b200[] = {80, 90, 100};
    expect("sm_80 sm_90 sm_100 + compute_90", with_b200, 3, 90, 10, 0, RLC_ARCH_CODE);
    expect("sm_80 sm_90 sm_100 + compute_90", with_b200, 3, 90, 10, 3, RLC_ARCH_CODE);
    expect("sm_80 sm_90 sm_100 + compute_90", with_b200, 3, 90, 12, 0, RLC_ARCH_PTX);
    /* a minor version below the code's: sm_86 code does not run on 8.0, nor does compute_86 PTX */
    static const int ampere86[] = {86};
    expect("sm_86 + compute_86", ampere86, 1, 86, 8, 0, RLC_ARCH_NONE);
    expect("sm_86 + compute_86", ampere86, 1, 86, 8, 9, RLC_ARCH_CODE);
    /* PTX exactly at its own capability, with no machine code for it */
    static const int ampere[] = {80};
    expect("sm_80 + compute_90", ampere, 1, 90, 9, 0, RLC_ARCH_PTX);
    expect("sm_80 + compute_90", ampere, 1, 90, 8, 9, RLC_ARCH_CODE);
    printf("%s\n", failures ? "FAILED" : "all ok");
    return failures ? 1 : 0;
}
