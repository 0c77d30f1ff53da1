/* Framing: round trips, split delivery, oversized lengths refused before buffering, garbage rejected. */
#include "proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
#define CHECK(cond, ...)                                                                                   \
    do {                                                                                                   \
        if (!(cond)) {                                                                                     \
            failures++;                                                                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                    \
            printf(__VA_ARGS__);                                                                           \
            printf("\n");                                                                                  \
        }                                                                                                  \
    } while (0)

static void frame_round_trips_byte_by_byte(void)
{
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    Radlads__SubmitRequest sub = RADLADS__SUBMIT_REQUEST__INIT;
    sub.spec_json = "{\"name\":\"x\"}";
    sub.hold = 1;
    env.msg_case = RADLADS__ENVELOPE__MSG_SUBMIT;
    env.submit = &sub;
    uint8_t *buf;
    size_t len;
    CHECK(rl_frame_encode(&env, &buf, &len) == 0, "encode");
    /* Three frames back to back, fed one byte at a time. */
    uint8_t *three = malloc(3 * len);
    for (int i = 0; i < 3; i++) memcpy(three + i * len, buf, len);
    rl_frame_reader r;
    rl_frame_reader_init(&r, 1024);
    int got = 0;
    char err[256];
    for (size_t i = 0; i < 3 * len; i++) {
        rl_frame_reader_feed(&r, three + i, 1);
        Radlads__Envelope *e;
        int rc;
        while ((rc = rl_frame_reader_next(&r, &e, err, sizeof err)) == 1) {
            CHECK(e->msg_case == RADLADS__ENVELOPE__MSG_SUBMIT && !strcmp(e->submit->spec_json, sub.spec_json) &&
                      e->submit->hold,
                  "decoded frame differs");
            radlads__envelope__free_unpacked(e, NULL);
            got++;
        }
        CHECK(rc == 0, "unexpected error: %s", err);
    }
    CHECK(got == 3, "expected 3 frames, got %d", got);
    CHECK(rl_frame_reader_pending(&r) == 0, "bytes left over");
    rl_frame_reader_free(&r);
    free(three);
    free(buf);
}

static void oversized_length_is_refused_without_allocation(void)
{
    rl_frame_reader r;
    rl_frame_reader_init(&r, 1 << 20);
    uint8_t hdr[4] = {0xff, 0xff, 0xff, 0xff}; /* 4 GiB */
    rl_frame_reader_feed(&r, hdr, 4);
    Radlads__Envelope *e;
    char err[256] = "";
    CHECK(rl_frame_reader_next(&r, &e, err, sizeof err) == -1, "4 GiB frame accepted");
    CHECK(strstr(err, "exceeds the limit") != NULL, "error says: %s", err);
    CHECK(r.cap < (1 << 20), "reader grew to %zu bytes", r.cap);
    rl_frame_reader_free(&r);
}

static void garbage_payload_is_an_error(void)
{
    rl_frame_reader r;
    rl_frame_reader_init(&r, 1 << 20);
    uint8_t frame[4 + 16] = {0, 0, 0, 16};
    for (int i = 0; i < 16; i++) frame[4 + i] = (uint8_t)(0xff - i * 7);
    rl_frame_reader_feed(&r, frame, sizeof frame);
    Radlads__Envelope *e;
    char err[256] = "";
    CHECK(rl_frame_reader_next(&r, &e, err, sizeof err) == -1, "garbage decoded");
    CHECK(strstr(err, "undecodable") || strstr(err, "no message"), "error says: %s", err);
    rl_frame_reader_free(&r);
}

static void empty_envelope_is_an_error(void)
{
    rl_frame_reader r;
    rl_frame_reader_init(&r, 1 << 20);
    uint8_t frame[4] = {0, 0, 0, 0};
    rl_frame_reader_feed(&r, frame, 4);
    Radlads__Envelope *e;
    char err[256] = "";
    CHECK(rl_frame_reader_next(&r, &e, err, sizeof err) == -1, "empty envelope accepted");
    rl_frame_reader_free(&r);
}

static void truncated_frame_stays_pending(void)
{
    rl_frame_reader r;
    rl_frame_reader_init(&r, 1 << 20);
    uint8_t frame[4 + 3] = {0, 0, 0, 10, 1, 2, 3};
    rl_frame_reader_feed(&r, frame, sizeof frame);
    Radlads__Envelope *e;
    char err[256];
    CHECK(rl_frame_reader_next(&r, &e, err, sizeof err) == 0, "half a frame decoded");
    CHECK(rl_frame_reader_pending(&r) == 7, "pending %zu", rl_frame_reader_pending(&r));
    rl_frame_reader_free(&r);
}

int main(void)
{
    frame_round_trips_byte_by_byte();
    oversized_length_is_refused_without_allocation();
    garbage_payload_is_an_error();
    empty_envelope_is_an_error();
    truncated_frame_stays_pending();
    printf("%s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
