/* The HTTP side of radladsd (private to daemon/):
 *
 *   http_parse.c  request parsing with llhttp, limits, query strings; no I/O (the fuzz target links it alone)
 *   http.c        the TCP listener, connections, keep-alive, timeouts, connection limit, responses
 *   api.c         routing, the JSON API, the embedded dashboard files, token checks
 *   sse.c         /api/events: Server-Sent Events with Last-Event-ID replay and heartbeats
 *   prom.c        /metrics in the Prometheus text format
 *
 * Every handler runs on the loop thread and answers synchronously, so pipelined requests are answered in
 * order simply by writing each response before parsing the next request. */
#ifndef RL_HTTP_H
#define RL_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "llhttp.h"

#define HTTP_MAX_URL 4096            /* longer request targets: 414 */
#define HTTP_MAX_HEADER_BYTES 16384  /* request line + headers: 431 beyond this */
#define HTTP_MAX_BODY_BYTES 65536    /* our POSTs carry no body; 413 beyond this */
#define HTTP_MAX_VALUE 512           /* kept bytes of an interesting header's value */

typedef struct http_request {
    int method;                      /* llhttp_method_t */
    char url[HTTP_MAX_URL];          /* as sent: path and query, NUL-terminated */
    size_t url_len;
    char authorization[HTTP_MAX_VALUE];
    char last_event_id[64];
    char host[256];                  /* Host header ("" when absent) */
    int auth_too_long;               /* a longer Authorization can never match the token */
    char *body;                      /* NUL-terminated; owned by the parser */
    size_t body_len, body_cap;
    int keep_alive;
} http_request;

typedef struct http_parser {
    llhttp_t llhttp;
    llhttp_settings_t settings;
    http_request req;
    size_t header_bytes;             /* of the request being parsed */
    char field[32];                  /* the current header's name (longer names are not interesting) */
    size_t field_len;
    int field_overflow;
    char value[HTTP_MAX_VALUE];
    size_t value_len;
    int value_overflow;
    int in_message;                  /* a request has started and not yet ended */
    int error_status;                /* 400, 413, 414 or 431 once a request was refused */
    char error_reason[128];
} http_parser;

enum { HTTP_NEED_MORE = 0, HTTP_REQUEST_READY = 1, HTTP_BAD_REQUEST = -1 };

void http_parser_init(http_parser *hp);
void http_parser_free(http_parser *hp);
/* Parses up to len bytes; *consumed says how many were used.  HTTP_REQUEST_READY: hp->req holds a whole
 * request (handle it, then call http_parser_next before feeding the rest); HTTP_BAD_REQUEST:
 * hp->error_status and hp->error_reason say why, and the connection must answer and close. */
int http_parser_feed(http_parser *hp, const char *data, size_t len, size_t *consumed);
void http_parser_next(http_parser *hp);

/* Splits req->url into a path (percent-decoded) and the raw query.  0, or -1 when malformed. */
int http_split_url(const char *url, char *path, size_t pathlen, const char **query);
/* Looks a key up in a raw query string and percent-decodes its value: 1 found, 0 absent, -1 malformed
 * (bad escape, or the value does not fit). */
int http_query_get(const char *query, const char *key, char *out, size_t outlen);
const char *http_status_text(int status);

/* ---- http.c ---- */
typedef struct http_conn http_conn;
typedef struct rl_daemon rl_daemon;

/* A response with a body; extra_headers is "" or complete "Name: value\r\n" lines. */
void http_respond(http_conn *hc, int status, const char *content_type, const char *extra_headers, const void *body,
                  size_t len);
void http_respond_text(http_conn *hc, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Raw bytes on the connection (SSE); 0, or -1 when the connection was closed for not reading. */
int http_write(http_conn *hc, const void *data, size_t len);
/* Turns the connection into an event stream: no timeouts, no more requests parsed. */
void http_conn_set_stream(http_conn *hc, int64_t last_id, int64_t job_id);
int http_conn_is_head(const http_conn *hc);
/* Walks the open event streams (sse.c). */
http_conn *http_streams_first(rl_daemon *d);
http_conn *http_streams_next(http_conn *hc);
int64_t *http_stream_last_id(http_conn *hc);
int64_t http_stream_job(const http_conn *hc);
void http_conn_close(http_conn *hc, const char *reason);

/* ---- api.c / sse.c / prom.c ---- */
/* Route ids double as the low-cardinality "route" label of the HTTP metrics. */
enum http_route {
    ROUTE_STATIC, ROUTE_JOBS, ROUTE_JOB, ROUTE_METRICS_SERIES, ROUTE_LOGS, ROUTE_JOB_EVENTS, ROUTE_ACTION,
    ROUTE_EVENTS_STREAM, ROUTE_PROMETHEUS, ROUTE_DAEMON, ROUTE_OTHER, ROUTE_COUNT
};
extern const char *const http_route_names[ROUTE_COUNT];
/* Answers one parsed request; returns the route it took. */
int api_handle(rl_daemon *d, http_conn *hc, const http_request *req);
void sse_start(rl_daemon *d, http_conn *hc, const http_request *req, const char *query);
char *prom_render(rl_daemon *d, size_t *len);

#endif
