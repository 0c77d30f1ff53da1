/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser and
 * validator. Any input must either parse into tensors whose data lies inside the
 * buffer, or fail with a message; never crash, hang or leak. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rl_st_tensor *t;
    int n;
    char err[512];
    if (rl_st_parse(data, size, "fuzz", &t, &n, err, sizeof err) == 0) {
        uint64_t sum = 0;
        for (int i = 0; i < n; i++) {
            /* touch the first and last byte of each tensor: ASan checks bounds */
            if (t[i].end > t[i].begin)
                sum += t[i].data[0] + t[i].data[t[i].end - t[i].begin - 1];
            if (t[i].data < data || t[i].data + (t[i].end - t[i].begin) > data + size)
                __builtin_trap();
        }
        rl_st_free_tensors(t, n);
        if (sum == 0xffffffffffffffffull)
            puts("");
    } else if (err[0] == 0) {
        __builtin_trap(); /* an error must always say what was wrong */
    }
    return 0;
}
