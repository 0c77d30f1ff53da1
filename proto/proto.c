/* Framing: u32 big-endian length + one packed Envelope. */
#include "proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int rl_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int rl_frame_encode(const Radlads__Envelope *env, uint8_t **out, size_t *outlen)
{
    size_t n = radlads__envelope__get_packed_size(env);
    if (n > UINT32_MAX) return -1;
    uint8_t *buf = malloc(RL_FRAME_HEADER + n);
    if (!buf) return -1;
    buf[0] = (uint8_t)(n >> 24);
    buf[1] = (uint8_t)(n >> 16);
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    radlads__envelope__pack(env, buf + RL_FRAME_HEADER);
    *out = buf;
    *outlen = RL_FRAME_HEADER + n;
    return 0;
}

void rl_frame_reader_init(rl_frame_reader *r, size_t max_frame)
{
    memset(r, 0, sizeof *r);
    r->max_frame = max_frame ? max_frame : RL_MAX_FRAME_DEFAULT;
}

void rl_frame_reader_free(rl_frame_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof *r);
}

int rl_frame_reader_feed(rl_frame_reader *r, const void *data, size_t n)
{
    if (n == 0) return 0;
    /* Compact consumed bytes before growing, so a long-lived connection does not creep. */
    if (r->off > 0 && (r->off == r->len || r->len + n > r->cap)) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n) cap *= 2;
        uint8_t *nb = realloc(r->buf, cap);
        if (!nb) return -1;
        r->buf = nb;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    return 0;
}

size_t rl_frame_reader_pending(const rl_frame_reader *r)
{
    return r->len - r->off;
}

int rl_frame_reader_next(rl_frame_reader *r, Radlads__Envelope **env, char *err, size_t errlen)
{
    size_t avail = r->len - r->off;
    if (avail < RL_FRAME_HEADER) return 0;
    const uint8_t *p = r->buf + r->off;
    uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    /* Refuse before buffering: a 4 GiB length must never turn into a 4 GiB allocation. */
    if (n > r->max_frame)
        return rl_errf(err, errlen, "frame of %u bytes exceeds the limit of %zu bytes", n, r->max_frame);
    if (avail - RL_FRAME_HEADER < n) return 0;
    Radlads__Envelope *e = radlads__envelope__unpack(NULL, n, p + RL_FRAME_HEADER);
    r->off += RL_FRAME_HEADER + n;
    if (!e) return rl_errf(err, errlen, "undecodable frame of %u bytes (not a radlads Envelope)", n);
    if (e->msg_case == RADLADS__ENVELOPE__MSG__NOT_SET) {
        radlads__envelope__free_unpacked(e, NULL);
        return rl_errf(err, errlen, "frame of %u bytes carries no message (unknown or empty Envelope)", n);
    }
    *env = e;
    return 1;
}
