/* libFuzzer: arbitrary bytes through the frame reader, split at a data-chosen point. */
#include "proto.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rl_frame_reader r;
    rl_frame_reader_init(&r, 1 << 16);
    size_t split = size ? data[0] % (size + 1) : 0;
    const uint8_t *parts[2] = {data, data + split};
    size_t lens[2] = {split, size - split};
    for (int p = 0; p < 2; p++) {
        if (rl_frame_reader_feed(&r, parts[p], lens[p]) < 0) break;
        Radlads__Envelope *e;
        char err[256];
        int rc;
        while ((rc = rl_frame_reader_next(&r, &e, err, sizeof err)) == 1) {
            /* Re-encode what was decoded: packing must accept whatever unpacking produced. */
            uint8_t *buf;
            size_t len;
            if (rl_frame_encode(e, &buf, &len) == 0) free(buf);
            radlads__envelope__free_unpacked(e, NULL);
        }
        if (rc < 0) break;
    }
    rl_frame_reader_free(&r);
    return 0;
}
