/* /api/events: Server-Sent Events.  Each event is a row of the append-only events table and its SSE id is
 * the row id, so a client that reconnects with Last-Event-ID (browsers do this themselves) gets exactly
 * the rows it missed: nothing is lost and nothing repeats.  ?job=ID follows one job; ?after=ID replaces
 * the header for clients that cannot set it.  Comments (": heartbeat") keep proxies and clients from
 * timing the stream out; a stream whose client stops reading is dropped by http.c's unsent-bytes cap. */
#include "daemon.h"
#include "http.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SSE_BATCH 1000

static json_t *col_text(sqlite3_stmt *st, int i)
{
    const char *t = (const char *)sqlite3_column_text(st, i);
    json_t *j = t ? json_string(t) : json_null();
    return j ? j : json_string("?");
}

/* Sends the stream's events after its last id, in batches; 0, or -1 when the connection went away. */
static int send_new_events(rl_daemon *d, http_conn *hc)
{
    static const char sql[] = "SELECT id, time, job_id, kind, stage_idx, from_state, to_state, reason FROM events "
                              "WHERE id > ?1 AND (?2 = 0 OR job_id = ?2) ORDER BY id LIMIT ?3";
    int64_t *last = http_stream_last_id(hc);
    for (;;) {
        sqlite3_stmt *st = store_stmt(d->db, sql);
        if (!st) return 0;
        sqlite3_bind_int64(st, 1, *last);
        sqlite3_bind_int64(st, 2, http_stream_job(hc));
        sqlite3_bind_int(st, 3, SSE_BATCH);
        size_t cap = 16384, len = 0;
        char *buf = malloc(cap);
        int n = 0;
        while (buf && sqlite3_step(st) == SQLITE_ROW) {
            int64_t id = sqlite3_column_int64(st, 0);
            json_t *o = json_object();
            json_object_set_new(o, "id", json_integer(id));
            json_object_set_new(o, "time_ms", json_integer(sqlite3_column_int64(st, 1)));
            json_object_set_new(o, "job_id", sqlite3_column_type(st, 2) == SQLITE_NULL
                                                 ? json_null()
                                                 : json_integer(sqlite3_column_int64(st, 2)));
            json_object_set_new(o, "kind", col_text(st, 3));
            json_object_set_new(o, "stage_idx", sqlite3_column_type(st, 4) == SQLITE_NULL
                                                    ? json_null()
                                                    : json_integer(sqlite3_column_int64(st, 4)));
            json_object_set_new(o, "from", col_text(st, 5));
            json_object_set_new(o, "to", col_text(st, 6));
            json_object_set_new(o, "reason", col_text(st, 7));
            /* JSON_COMPACT output has no newline, so one data: line carries it. */
            char *data = json_dumps(o, JSON_COMPACT);
            json_decref(o);
            if (!data) continue;
            size_t need = strlen(data) + 64;
            if (len + need > cap) {
                while (len + need > cap) cap *= 2;
                char *nb = realloc(buf, cap);
                if (!nb) {
                    free(data);
                    break;
                }
                buf = nb;
            }
            len += (size_t)snprintf(buf + len, cap - len, "id: %lld\ndata: %s\n\n", (long long)id, data);
            free(data);
            *last = id;
            n++;
        }
        sqlite3_reset(st);
        int rc = len ? http_write(hc, buf, len) : 0;
        free(buf);
        if (rc < 0) return -1;
        if (n < SSE_BATCH) return 0;
    }
}

void sse_start(rl_daemon *d, http_conn *hc, const http_request *req, const char *query)
{
    int64_t after = 0, job = 0;
    char buf[32];
    const char *from = req->last_event_id[0] ? req->last_event_id : NULL;
    if (!from && http_query_get(query, "after", buf, sizeof buf) > 0) from = buf;
    if (from) {
        char *end;
        long long v = strtoll(from, &end, 10);
        if (!*from || *end || v < 0) {
            http_respond_text(hc, 400, "Last-Event-ID / after: expected an event id\n");
            return;
        }
        after = v;
    }
    if (http_query_get(query, "job", buf, sizeof buf) > 0) {
        char *end;
        long long v = strtoll(buf, &end, 10);
        if (!buf[0] || *end || v <= 0) {
            http_respond_text(hc, 400, "job: expected a job id\n");
            return;
        }
        job = v;
    }
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                               "X-Accel-Buffering: no\r\n\r\n"
                               "retry: 2000\n\n";
    if (http_write(hc, head, sizeof head - 1) < 0) return;
    http_conn_set_stream(hc, after, job);
    send_new_events(d, hc);
}

void sse_fanout(rl_daemon *d)
{
    for (http_conn *hc = http_streams_first(d), *next; hc; hc = next) {
        next = http_streams_next(hc); /* send_new_events may close hc */
        send_new_events(d, hc);
    }
}

/* Training progress is pushed as a named event without an id: it is not a row of the events table
 * (Last-Event-ID replays state history; the latest progress is always in /api/jobs/ID).  Browsers see
 * it through addEventListener('progress', ...). */
void sse_progress(rl_daemon *d, int64_t job_id, int stage_idx, const Radlads__Progress *m)
{
    http_conn *first = http_streams_first(d);
    if (!first) return;
    char line[512];
    int n = snprintf(line, sizeof line,
                     "event: progress\ndata: {\"job_id\":%lld,\"stage_idx\":%d,\"step\":%lld,\"tokens\":%lld,"
                     "\"loss\":%.9g,\"lr\":%.9g,\"tokens_per_s\":%.9g,\"grad_norm\":%.9g,\"mem_live_bytes\":%lld,"
                     "\"mem_peak_bytes\":%lld,\"time_ms\":%lld}\n\n",
                     (long long)job_id, stage_idx, (long long)m->step, (long long)m->tokens, m->loss, m->lr,
                     m->tokens_per_s, m->grad_norm, (long long)m->mem_live_bytes, (long long)m->mem_peak_bytes,
                     (long long)(m->time_ms ? m->time_ms : now_ms()));
    if (n <= 0 || (size_t)n >= sizeof line) return;
    for (http_conn *hc = first, *next; hc; hc = next) {
        next = http_streams_next(hc);
        int64_t want = http_stream_job(hc);
        if (!want || want == job_id) http_write(hc, line, (size_t)n);
    }
}

void sse_heartbeat(rl_daemon *d)
{
    char line[64];
    int n = snprintf(line, sizeof line, ": heartbeat %lld\n\n", (long long)now_ms());
    for (http_conn *hc = http_streams_first(d), *next; hc; hc = next) {
        next = http_streams_next(hc);
        http_write(hc, line, (size_t)n);
    }
}
