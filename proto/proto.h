/* proto: the radlads wire format.
 *
 * A frame is a 4-byte big-endian payload length followed by one protobuf-c Radlads__Envelope.  Frames
 * larger than a reader's limit, truncated frames and undecodable payloads are errors of that connection
 * only.  This header also carries the blocking client used by the CLI, tests and benchmarks. */
#ifndef RL_PROTO_H
#define RL_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include "radlads.pb-c.h"

#define RL_PROTOCOL_VERSION 1u
#define RL_FRAME_HEADER 4u
#define RL_MAX_FRAME_DEFAULT (64u << 20) /* 64 MiB: 10,000-job status replies are ~1.5 MiB */

/* Error codes carried in Radlads__Error.code and returned (negated) by functions. */
enum {
    RL_E_BAD_REQUEST = 1, /* malformed or unexpected message */
    RL_E_NOT_FOUND = 2,   /* no such job */
    RL_E_PERMISSION = 3,  /* not your job */
    RL_E_STATE = 4,       /* the action is not allowed in the job's state */
    RL_E_SPEC = 5,        /* job spec invalid */
    RL_E_VERSION = 6,     /* protocol version mismatch */
    RL_E_INTERNAL = 7,    /* store or system error */
    RL_E_IO = 8,          /* connection error */
    RL_E_TIMEOUT = 9,
};

/* printf into an error buffer (never overflows; NULL buffer allowed). Returns -1 for `return rl_errf(..)`. */
int rl_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- framing ---- */

/* Encode env as a frame into a malloc'd buffer (*out, *outlen). Returns 0 or -1 (out of memory). */
int rl_frame_encode(const Radlads__Envelope *env, uint8_t **out, size_t *outlen);

/* Accumulates bytes from a stream and yields whole envelopes. */
typedef struct rl_frame_reader {
    uint8_t *buf;
    size_t len, cap, off;
    size_t max_frame;
} rl_frame_reader;

void rl_frame_reader_init(rl_frame_reader *r, size_t max_frame);
void rl_frame_reader_free(rl_frame_reader *r);
/* Appends n bytes. Returns 0 or -1 (out of memory). */
int rl_frame_reader_feed(rl_frame_reader *r, const void *data, size_t n);
/* 1: *env set (free with radlads__envelope__free_unpacked(env, NULL)); 0: need more bytes;
 * -1: the stream is broken (err says why: oversized length, undecodable payload). */
int rl_frame_reader_next(rl_frame_reader *r, Radlads__Envelope **env, char *err, size_t errlen);
/* Bytes held that do not yet form a frame (a peer closing with pending > 0 sent a truncated frame). */
size_t rl_frame_reader_pending(const rl_frame_reader *r);

/* ---- blocking client (CLI, tests, benchmarks) ---- */

typedef struct rl_client {
    int fd;
    rl_frame_reader reader;
    uint32_t uid;
    int admin;
} rl_client;

/* Connects to a Unix socket and performs the Hello handshake as `role`.
 * Returns 0, or -RL_E_IO / -RL_E_VERSION with err filled (a missing daemon says how to start one). */
int rl_client_connect(rl_client *c, const char *socket_path, Radlads__Role role, const char *token,
                      char *err, size_t errlen);
void rl_client_close(rl_client *c);
int rl_client_send(rl_client *c, const Radlads__Envelope *env, char *err, size_t errlen);
/* Waits up to timeout_ms (-1 forever) for one envelope. 0, -RL_E_IO, -RL_E_TIMEOUT. */
int rl_client_recv(rl_client *c, Radlads__Envelope **env, int timeout_ms, char *err, size_t errlen);
/* send + recv; an Error reply is turned into its negated code with its message in err. */
int rl_client_call(rl_client *c, const Radlads__Envelope *req, Radlads__Envelope **reply,
                   Radlads__Envelope__MsgCase expect, char *err, size_t errlen);

/* Where the daemon's socket is: explicit path, else $RADLADS_SOCKET, else the default state dir's. */
const char *rl_default_socket_path(const char *explicit_path);
/* Default state directory: $RADLADS_STATE_DIR, else /var/lib/radlads for root, else ~/.local/state/radlads. */
const char *rl_default_state_dir(void);

#endif
