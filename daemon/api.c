/* Routing, the JSON API and the embedded dashboard.
 *
 *   GET  /                              the dashboard (index.html, app.js, style.css, embedded at build time)
 *   GET  /api/daemon                    version, uptime, counts
 *   GET  /api/jobs?state=A,B&owner=U&limit=N       newest first
 *   GET  /api/jobs/ID                   stages, attempts, checkpoints, failure reasons, spec
 *   GET  /api/jobs/ID/metrics?stage=I&points=N&after_step=S   one stage's series, downsampled to N points
 *   GET  /api/jobs/ID/logs?limit=N&after=LOGID
 *   GET  /api/jobs/ID/events?after=EVENTID
 *   POST /api/jobs/ID/cancel|hold|release|restart|drain  needs "Authorization: Bearer TOKEN" (the token file)
 *   GET  /api/events                    Server-Sent Events (sse.c)
 *   GET  /metrics                       Prometheus text (prom.c)
 *
 * Rows become JSON objects by column name, so each query's aliases are the API's field names (the same
 * names the CLI's --json output uses).  Every document carries "schema_version": 1. */
#include "daemon.h"
#include "http.h"
#include "web_files.h"

#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

const char *const http_route_names[ROUTE_COUNT] = {
    "static", "jobs", "job", "metrics_series", "logs", "job_events", "action", "events_stream", "prometheus",
    "daemon", "other",
};

/* ---- responses ---- */

static json_t *text_json(const char *s, size_t n);

static void send_json(http_conn *hc, int status, json_t *doc)
{
    json_object_set_new(doc, "schema_version", json_integer(1));
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text) {
        http_respond_text(hc, 500, "out of memory\n");
        return;
    }
    http_respond(hc, status, "application/json", "", text, strlen(text));
    free(text);
}

static void send_error(http_conn *hc, int status, const char *extra_headers, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void send_error(http_conn *hc, int status, const char *extra_headers, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *doc = json_object();
    json_object_set_new(doc, "error", text_json(msg, strlen(msg)));
    json_object_set_new(doc, "status", json_integer(status));
    json_object_set_new(doc, "schema_version", json_integer(1));
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    http_respond(hc, status, "application/json", extra_headers, text ? text : "{}", text ? strlen(text) : 2);
    free(text);
}

/* Text from the store is UTF-8 as far as we wrote it, but worker logs are outside input: bytes that are
 * not valid UTF-8 become '?' instead of making the whole document fail. */
static json_t *text_json(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j) return j;
    char *copy = malloc(n + 1);
    if (!copy) return json_null();
    for (size_t i = 0; i < n; i++) copy[i] = (s[i] & 0x80) ? '?' : (s[i] ? s[i] : '?');
    copy[n] = 0;
    j = json_stringn(copy, n);
    free(copy);
    return j ? j : json_null();
}

static json_t *row_json(sqlite3_stmt *st)
{
    json_t *o = json_object();
    int n = sqlite3_column_count(st);
    for (int i = 0; i < n; i++) {
        json_t *v;
        switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER: v = json_integer(sqlite3_column_int64(st, i)); break;
        case SQLITE_FLOAT: v = json_real(sqlite3_column_double(st, i)); break;
        case SQLITE_TEXT:
            v = text_json((const char *)sqlite3_column_text(st, i), (size_t)sqlite3_column_bytes(st, i));
            break;
        default: v = json_null();
        }
        json_object_set_new(o, sqlite3_column_name(st, i), v);
    }
    return o;
}

/* ---- streaming JSON for large row sets ----
 * /api/jobs over 1,000 jobs spent 70 % of its time building and freeing a jansson tree; rows are written
 * straight from the statement instead (same names, same value types as row_json). */
typedef struct jbuf {
    char *p;
    size_t len, cap;
    int oom;
} jbuf;

static void jb_put(jbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

/* Length of the well-formed UTF-8 sequence at s (1..4), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t left)
{
    unsigned c = s[0];
    size_t n = c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;
    if (!n || n > left) return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (n == 3 && ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f))) return 0; /* overlong, surrogate */
    if (n == 4 && ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))) return 0;
    return n;
}

static void jb_str(jbuf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    jb_put(b, "\"", 1);
    size_t run = 0; /* bytes copied verbatim in one go */
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        const char *esc = NULL;
        char tmp[8];
        size_t adv = 1;
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", c);
            esc = tmp;
        } else if (c >= 0x80) {
            adv = utf8_seq(u + i, n - i);
            if (!adv) esc = "?", adv = 1; /* not UTF-8 (worker logs are outside input) */
        }
        if (esc) {
            jb_put(b, s + i - run, run);
            run = 0;
            jb_put(b, esc, strlen(esc));
        } else {
            run += adv;
        }
        i += adv;
    }
    jb_put(b, s + n - run, run);
    jb_put(b, "\"", 1);
}

static void jb_row(jbuf *b, sqlite3_stmt *st)
{
    int n = sqlite3_column_count(st);
    jb_put(b, "{", 1);
    for (int i = 0; i < n; i++) {
        const char *name = sqlite3_column_name(st, i);
        if (i) jb_put(b, ",", 1);
        jb_str(b, name, strlen(name));
        jb_put(b, ":", 1);
        char num[40];
        int len;
        switch (sqlite3_column_type(st, i)) {
        case SQLITE_INTEGER:
            len = snprintf(num, sizeof num, "%lld", (long long)sqlite3_column_int64(st, i));
            jb_put(b, num, (size_t)len);
            break;
        case SQLITE_FLOAT: {
            double v = sqlite3_column_double(st, i);
            if (!isfinite(v)) {
                jb_put(b, "null", 4);
                break;
            }
            len = snprintf(num, sizeof num, "%.17g", v);
            /* keep it a JSON real, as jansson would (1 -> 1.0) */
            if (!strpbrk(num, ".eEn")) len += snprintf(num + len, sizeof num - (size_t)len, ".0");
            jb_put(b, num, (size_t)len);
            break;
        }
        case SQLITE_TEXT:
            jb_str(b, (const char *)sqlite3_column_text(st, i), (size_t)sqlite3_column_bytes(st, i));
            break;
        default: jb_put(b, "null", 4);
        }
    }
    jb_put(b, "}", 1);
}

/* {"<key>": [rows...], "schema_version": 1} from a prepared, bound statement (reset afterwards). */
static void send_rows(http_conn *hc, const char *key, sqlite3_stmt *st)
{
    jbuf b = {0};
    jb_put(&b, "{", 1);
    jb_str(&b, key, strlen(key));
    jb_put(&b, ":[", 2);
    for (int first = 1; sqlite3_step(st) == SQLITE_ROW; first = 0) {
        if (!first) jb_put(&b, ",", 1);
        jb_row(&b, st);
    }
    sqlite3_reset(st);
    static const char tail[] = "],\"schema_version\":1}";
    jb_put(&b, tail, sizeof tail - 1);
    if (b.oom) http_respond_text(hc, 500, "out of memory\n");
    else http_respond(hc, 200, "application/json", "", b.p, b.len);
    free(b.p);
}

/* Runs a prepared, bound statement into an array of row objects (reset afterwards). */
static json_t *rows_json(sqlite3_stmt *st)
{
    json_t *a = json_array();
    while (sqlite3_step(st) == SQLITE_ROW) json_array_append_new(a, row_json(st));
    sqlite3_reset(st);
    return a;
}

/* ---- query parameters ---- */

/* An integer parameter: 1 found (in [lo, hi]), 0 absent, -1 malformed (an error response was sent). */
static int query_int(http_conn *hc, const char *query, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    char buf[32];
    int r = http_query_get(query, key, buf, sizeof buf);
    if (r == 0) return 0;
    char *end;
    long long v = r > 0 ? strtoll(buf, &end, 10) : 0;
    if (r < 0 || !buf[0] || *end || v < lo || v > hi) {
        send_error(hc, 400, "", "query parameter %s: expected an integer in %lld..%lld", key, (long long)lo,
                   (long long)hi);
        return -1;
    }
    *out = v;
    return 1;
}

/* ---- jobs ---- */

#define JOB_COLUMNS                                                                                            \
    "SELECT j.id, j.name, j.state, j.owner, j.owner_uid, j.priority, j.submitted_at AS submitted_at_ms, "      \
    "j.updated_at AS updated_at_ms, j.finished_at AS finished_at_ms, "                                         \
    "CASE WHEN j.state IN ('COMPLETED','FAILED','CANCELLED') THEN '' ELSE COALESCE(s.kind, '') END "          \
    "AS current_stage, j.current_stage AS current_stage_idx, j.stages_done, j.stages_total, j.tokens_done, "   \
    "j.tokens_total, "                                                                                         \
    "CASE WHEN j.state = 'COMPLETED' THEN 1.0 WHEN j.tokens_total > 0 THEN "                                   \
    "min(1.0, CAST(j.tokens_done AS REAL) / j.tokens_total) WHEN j.stages_total > 0 THEN "                     \
    "CAST(j.stages_done AS REAL) / j.stages_total ELSE 0.0 END AS progress, "                                  \
    "j.restarts, j.max_restarts, j.failure_reason, "                                                           \
    "CASE WHEN j.state = 'RUNNING' THEN COALESCE(s.tokens_per_s, 0.0) ELSE 0.0 END AS tokens_per_s, "         \
    "CASE WHEN j.state = 'RUNNING' AND s.tokens_per_s > 0 AND j.tokens_total > j.tokens_done THEN "            \
    "(j.tokens_total - j.tokens_done) / s.tokens_per_s END AS eta_s "                                          \
    "FROM jobs j LEFT JOIN stages s ON s.job_id = j.id AND s.idx = j.current_stage "

static void api_jobs(rl_daemon *d, http_conn *hc, const char *query)
{
    static const char sql[] = JOB_COLUMNS
        "WHERE (?1 IS NULL OR instr(',' || ?1 || ',', ',' || j.state || ',') > 0) "
        "AND (?2 IS NULL OR j.owner = ?2 OR CAST(j.owner_uid AS TEXT) = ?2) "
        "ORDER BY j.id DESC LIMIT ?3";
    char states[256], owner[128];
    int has_state = http_query_get(query, "state", states, sizeof states);
    int has_owner = http_query_get(query, "owner", owner, sizeof owner);
    if (has_state < 0 || has_owner < 0) {
        send_error(hc, 400, "", "query parameters state and owner: malformed or too long");
        return;
    }
    for (char *p = states; has_state > 0 && *p; p++) {
        if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
        if (!((*p >= 'A' && *p <= 'Z') || *p == ',')) {
            send_error(hc, 400, "", "state: a comma-separated list of job states, e.g. RUNNING,QUEUED");
            return;
        }
    }
    int64_t limit = 1000;
    if (query_int(hc, query, "limit", 1, 100000, &limit) < 0) return;
    sqlite3_stmt *st = store_stmt(d->db, sql);
    if (!st) {
        send_error(hc, 500, "", "store: %s", store_errmsg(d->db));
        return;
    }
    if (has_state > 0) sqlite3_bind_text(st, 1, states, -1, SQLITE_TRANSIENT);
    if (has_owner > 0) sqlite3_bind_text(st, 2, owner, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, limit);
    send_rows(hc, "jobs", st);
}

static json_t *job_query(rl_daemon *d, const char *sql, int64_t id)
{
    sqlite3_stmt *st = store_stmt(d->db, sql);
    if (!st) return json_array();
    sqlite3_bind_int64(st, 1, id);
    return rows_json(st);
}

static void api_job(rl_daemon *d, http_conn *hc, int64_t id)
{
    static const char jsql[] = JOB_COLUMNS "WHERE j.id = ?1";
    static const char xsql[] = "SELECT spec_json, output_dir, result_path, restart_of FROM jobs WHERE id = ?1";
    static const char ssql[] =
        "SELECT s.idx, s.kind, s.state, s.tokens_total, s.tokens_done, s.step, s.last_loss, s.tokens_per_s, "
        "s.started_at AS started_at_ms, s.finished_at AS finished_at_ms, "
        "(SELECT count(*) FROM attempts a WHERE a.job_id = s.job_id AND a.stage_idx = s.idx) AS attempts, "
        "s.output_dir, s.mem_peak_bytes FROM stages s WHERE s.job_id = ?1 ORDER BY s.idx";
    static const char asql[] =
        "SELECT id, stage_idx, number, state, pool_id, started_at AS started_at_ms, finished_at AS finished_at_ms, "
        "failure_reason, resumed_from AS resumed_from_checkpoint FROM attempts WHERE job_id = ?1 ORDER BY id";
    static const char csql[] = "SELECT id, stage_idx, step, tokens, path, sha256, created_at AS created_at_ms "
                               "FROM checkpoints WHERE job_id = ?1 AND deleted_at IS NULL ORDER BY id";
    sqlite3_stmt *st = store_stmt(d->db, jsql);
    if (!st) {
        send_error(hc, 500, "", "store: %s", store_errmsg(d->db));
        return;
    }
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        send_error(hc, 404, "", "no job %lld", (long long)id);
        return;
    }
    json_t *doc = row_json(st);
    sqlite3_reset(st);
    st = store_stmt(d->db, xsql);
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *spec = (const char *)sqlite3_column_text(st, 0);
        json_t *sj = spec ? json_loads(spec, 0, NULL) : NULL;
        json_object_set_new(doc, "spec", sj ? sj : json_null());
        json_object_set_new(doc, "output_dir", text_json((const char *)sqlite3_column_text(st, 1),
                                                         (size_t)sqlite3_column_bytes(st, 1)));
        json_object_set_new(doc, "result_path", sqlite3_column_type(st, 2) == SQLITE_NULL
                                                    ? json_null()
                                                    : text_json((const char *)sqlite3_column_text(st, 2),
                                                                (size_t)sqlite3_column_bytes(st, 2)));
        json_object_set_new(doc, "restart_of", sqlite3_column_type(st, 3) == SQLITE_NULL
                                                   ? json_null()
                                                   : json_integer(sqlite3_column_int64(st, 3)));
    }
    sqlite3_reset(st);
    json_object_set_new(doc, "stages", job_query(d, ssql, id));
    json_object_set_new(doc, "attempts", job_query(d, asql, id));
    json_object_set_new(doc, "checkpoints", job_query(d, csql, id));
    send_json(hc, 200, doc);
}

static int job_exists(rl_daemon *d, int64_t id, int *current_stage)
{
    sqlite3_stmt *st = store_stmt(d->db, "SELECT current_stage FROM jobs WHERE id = ?1");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, id);
    int found = sqlite3_step(st) == SQLITE_ROW;
    if (found && current_stage) *current_stage = sqlite3_column_int(st, 0);
    sqlite3_reset(st);
    return found;
}

/* One stage's training series.  Past `points` rows the steps are cut into equal buckets and each bucket
 * averages its values (and keeps its last step), so a chart of a million steps costs `points` rows. */
static void api_metrics(rl_daemon *d, http_conn *hc, int64_t id, const char *query)
{
    static const char range_sql[] = "SELECT count(*), min(step), max(step) FROM metrics "
                                    "WHERE job_id = ?1 AND stage_idx = ?2 AND step > ?3";
    static const char raw_sql[] = "SELECT step, tokens, time, mem_live_bytes, mem_peak_bytes, loss, lr, tokens_per_s, "
                                  "grad_norm FROM metrics "
                                  "WHERE job_id = ?1 AND stage_idx = ?2 AND step > ?3 ORDER BY step, id";
    /* a bucket's memory: the most held in it, and the peak at its end */
    static const char bucket_sql[] =
        "SELECT max(step), max(tokens), max(time), max(mem_live_bytes), max(mem_peak_bytes), avg(loss), avg(lr), "
        "avg(tokens_per_s), avg(grad_norm) FROM metrics WHERE job_id = ?1 AND stage_idx = ?2 AND step > ?3 "
        "GROUP BY (step - ?4) / ?5 ORDER BY 1";
    int current = 0;
    if (!job_exists(d, id, &current)) {
        send_error(hc, 404, "", "no job %lld", (long long)id);
        return;
    }
    int64_t stage = current, points = 500, after = -1;
    if (query_int(hc, query, "stage", 0, 1000, &stage) < 0 || query_int(hc, query, "points", 2, 100000, &points) < 0 ||
        query_int(hc, query, "after_step", -1, INT64_MAX / 2, &after) < 0)
        return;
    sqlite3_stmt *st = store_stmt(d->db, range_sql);
    if (!st) {
        send_error(hc, 500, "", "store: %s", store_errmsg(d->db));
        return;
    }
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, stage);
    sqlite3_bind_int64(st, 3, after);
    int64_t count = 0, lo = 0, hi = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        count = sqlite3_column_int64(st, 0);
        lo = sqlite3_column_int64(st, 1);
        hi = sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    int downsample = count > points;
    st = store_stmt(d->db, downsample ? bucket_sql : raw_sql);
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, stage);
    sqlite3_bind_int64(st, 3, after);
    if (downsample) {
        int64_t width = (hi - lo + points) / points; /* ceil((hi - lo + 1) / points) */
        sqlite3_bind_int64(st, 4, lo);
        sqlite3_bind_int64(st, 5, width > 0 ? width : 1);
    }
    /* the first five are integers */
    static const char *const names[] = {"step", "tokens", "time_ms", "mem_live_bytes", "mem_peak_bytes",
                                        "loss", "lr", "tokens_per_s", "grad_norm"};
    enum { NCOL = sizeof names / sizeof names[0] };
    json_t *cols[NCOL];
    for (int i = 0; i < NCOL; i++) cols[i] = json_array();
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < NCOL; i++) {
            json_t *v = sqlite3_column_type(st, i) == SQLITE_NULL ? json_null()
                        : i < 5 ? json_integer(sqlite3_column_int64(st, i))
                                : json_real(sqlite3_column_double(st, i));
            json_array_append_new(cols[i], v);
        }
        n++;
    }
    sqlite3_reset(st);
    json_t *doc = json_object();
    json_object_set_new(doc, "job_id", json_integer(id));
    json_object_set_new(doc, "stage", json_integer(stage));
    json_object_set_new(doc, "rows", json_integer(count));
    json_object_set_new(doc, "points", json_integer((json_int_t)n));
    json_object_set_new(doc, "downsampled", json_boolean(downsample));
    for (int i = 0; i < NCOL; i++) json_object_set_new(doc, names[i], cols[i]);
    send_json(hc, 200, doc);
}

static void api_logs(rl_daemon *d, http_conn *hc, int64_t id, const char *query)
{
    /* The newest `limit` lines after `after`, returned oldest first (a tail). */
    static const char sql[] = "SELECT * FROM (SELECT id, time AS time_ms, rank, level, text, attempt_id FROM logs "
                              "WHERE job_id = ?1 AND id > ?2 ORDER BY id DESC LIMIT ?3) ORDER BY id";
    if (!job_exists(d, id, NULL)) {
        send_error(hc, 404, "", "no job %lld", (long long)id);
        return;
    }
    int64_t limit = 200, after = 0;
    if (query_int(hc, query, "limit", 1, 10000, &limit) < 0 || query_int(hc, query, "after", 0, INT64_MAX, &after) < 0)
        return;
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int64(st, 3, limit);
    json_t *doc = json_object();
    json_object_set_new(doc, "logs", rows_json(st));
    send_json(hc, 200, doc);
}

static void api_job_events(rl_daemon *d, http_conn *hc, int64_t id, const char *query)
{
    static const char sql[] = "SELECT id, time AS time_ms, job_id, kind, stage_idx, from_state AS \"from\", "
                              "to_state AS \"to\", reason FROM events WHERE job_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
    if (!job_exists(d, id, NULL)) {
        send_error(hc, 404, "", "no job %lld", (long long)id);
        return;
    }
    int64_t after = 0, limit = 10000;
    if (query_int(hc, query, "after", 0, INT64_MAX, &after) < 0 || query_int(hc, query, "limit", 1, 100000, &limit) < 0)
        return;
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, after);
    sqlite3_bind_int64(st, 3, limit);
    json_t *doc = json_object();
    json_object_set_new(doc, "events", rows_json(st));
    send_json(hc, 200, doc);
}

static void api_daemon(rl_daemon *d, http_conn *hc)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "version", json_string(RL_VERSION));
    json_object_set_new(doc, "pid", json_integer(getpid()));
    json_object_set_new(doc, "started_at_ms", json_integer(d->started_at_ms));
    json_object_set_new(doc, "now_ms", json_integer(now_ms()));
    json_object_set_new(doc, "schema_version_db", json_integer(store_schema_version(d->db)));
    json_object_set_new(doc, "pools", json_integer(pools_count(d)));
    json_object_set_new(doc, "connections", json_integer(d->n_conns));
    json_object_set_new(doc, "http_connections", json_integer(http_connections(d)));
    sqlite3_stmt *st = store_stmt(d->db, "SELECT state, count(*) FROM jobs GROUP BY state");
    json_t *by = json_object();
    while (st && sqlite3_step(st) == SQLITE_ROW)
        json_object_set_new(by, (const char *)sqlite3_column_text(st, 0), json_integer(sqlite3_column_int64(st, 1)));
    if (st) sqlite3_reset(st);
    json_object_set_new(doc, "jobs_by_state", by);
    /* Where a new event stream should start: the page loads the past through the API. */
    st = store_stmt(d->db, "SELECT COALESCE(max(id), 0) FROM events");
    if (st && sqlite3_step(st) == SQLITE_ROW) json_object_set_new(doc, "last_event_id", json_integer(sqlite3_column_int64(st, 0)));
    if (st) sqlite3_reset(st);
    send_json(hc, 200, doc);
}

/* ---- actions ---- */

static int token_matches(const char *given, const char *token)
{
    /* Constant time in the token's length: the comparison must not tell how many bytes were right. */
    size_t lg = strlen(given), lt = strlen(token);
    unsigned diff = (unsigned)(lg ^ lt);
    for (size_t i = 0; i < lt; i++) diff |= (unsigned char)(token[i] ^ (i < lg ? given[i] : 0));
    return diff == 0 && lt > 0;
}

/* 0 when the request carries the daemon's token; otherwise the answer (401 or 403) was sent.  A token in
 * a header (not a cookie) also means a cross-site page cannot forge the POST: a custom header needs a CORS
 * preflight, which this server never grants. */
static int check_token(rl_daemon *d, http_conn *hc, const http_request *req)
{
    static const char challenge[] = "WWW-Authenticate: Bearer realm=\"radladsd\"\r\n";
    if (!req->authorization[0]) {
        send_error(hc, 401, challenge, "this action needs the daemon's token: Authorization: Bearer TOKEN (see %s)",
                   d->token_path);
        return -1;
    }
    if (strncasecmp(req->authorization, "Bearer ", 7) || req->auth_too_long) {
        send_error(hc, 401, challenge, "use Authorization: Bearer TOKEN");
        return -1;
    }
    const char *given = req->authorization + 7;
    while (*given == ' ') given++;
    if (!token_matches(given, d->token)) {
        send_error(hc, 403, "", "wrong token");
        return -1;
    }
    return 0;
}

static void api_action(rl_daemon *d, http_conn *hc, const http_request *req, int64_t id, Radlads__JobAction action)
{
    if (check_token(d, hc, req) < 0) return;
    jobs_actor who = {.uid = (uid_t)-1, .admin = 1, .name = "http (token)"};
    Radlads__ActionResult res = RADLADS__ACTION_RESULT__INIT;
    int rc = jobs_act(d, &who, action, id, &res);
    json_t *doc = json_object();
    json_object_set_new(doc, "job_id", json_integer(id));
    json_object_set_new(doc, "ok", json_boolean(res.ok));
    json_object_set_new(doc, "state", text_json(res.state, strlen(res.state)));
    json_object_set_new(doc, "message", text_json(res.message, strlen(res.message)));
    json_object_set_new(doc, "new_job_id", res.new_job_id ? json_integer(res.new_job_id) : json_null());
    int status = rc == 0 ? 200 : rc == -RL_E_NOT_FOUND ? 404 : rc == -RL_E_STATE ? 409 : rc == -RL_E_PERMISSION ? 403
                 : rc == -RL_E_BAD_REQUEST ? 400 : 500;
    if (rc < 0 && res.message[0]) json_object_set_new(doc, "error", text_json(res.message, strlen(res.message)));
    send_json(hc, status, doc);
    server_after_commit(d);
    sched_run(d);
}

/* ---- static files ---- */

static const char *content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css")) return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg")) return "image/svg+xml";
    if (!strcmp(dot, ".txt")) return "text/plain; charset=utf-8";
    return "application/octet-stream";
}

static int serve_static(http_conn *hc, const char *path)
{
    /* Everything the page loads comes from here; the policy makes the browser refuse anything else. */
    static const char headers[] =
        "Content-Security-Policy: default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'\r\nReferrer-Policy: no-referrer\r\n";
    const char *name = !strcmp(path, "/") ? "index.html" : path + 1;
    for (size_t i = 0; i < rl_web_files_count; i++) {
        if (strcmp(rl_web_files[i].name, name)) continue;
        http_respond(hc, 200, content_type(name), headers, rl_web_files[i].data, rl_web_files[i].size);
        return 1;
    }
    return 0;
}

/* ---- routing ---- */

static int method_not_allowed(http_conn *hc, const char *allow, int route)
{
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
    send_error(hc, 405, hdr, "method not allowed here (allowed: %s)", allow);
    return route;
}

static int parse_id(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static Radlads__JobAction action_named(const char *s)
{
    if (!strcmp(s, "cancel")) return RADLADS__JOB_ACTION__ACTION_CANCEL;
    if (!strcmp(s, "hold")) return RADLADS__JOB_ACTION__ACTION_HOLD;
    if (!strcmp(s, "release")) return RADLADS__JOB_ACTION__ACTION_RELEASE;
    if (!strcmp(s, "restart")) return RADLADS__JOB_ACTION__ACTION_RESTART;
    if (!strcmp(s, "drain")) return RADLADS__JOB_ACTION__ACTION_DRAIN;
    return (Radlads__JobAction)-1;
}

int api_handle(rl_daemon *d, http_conn *hc, const http_request *req)
{
    char path[HTTP_MAX_URL];
    const char *query;
    if (http_split_url(req->url, path, sizeof path, &query) < 0) {
        send_error(hc, 400, "", "malformed request target");
        return ROUTE_OTHER;
    }
    int get = req->method == HTTP_GET || req->method == HTTP_HEAD;
    int post = req->method == HTTP_POST;
    if (!strcmp(path, "/metrics")) {
        if (!get) return method_not_allowed(hc, "GET, HEAD", ROUTE_PROMETHEUS);
        size_t len;
        char *text = prom_render(d, &len);
        if (!text) http_respond_text(hc, 500, "out of memory\n");
        else http_respond(hc, 200, "text/plain; version=0.0.4; charset=utf-8", "", text, len);
        free(text);
        return ROUTE_PROMETHEUS;
    }
    if (!strcmp(path, "/api/events")) {
        if (req->method != HTTP_GET) return method_not_allowed(hc, "GET", ROUTE_EVENTS_STREAM);
        sse_start(d, hc, req, query);
        return ROUTE_EVENTS_STREAM;
    }
    if (!strcmp(path, "/api/daemon")) {
        if (!get) return method_not_allowed(hc, "GET, HEAD", ROUTE_DAEMON);
        api_daemon(d, hc);
        return ROUTE_DAEMON;
    }
    if (!strcmp(path, "/api/jobs")) {
        if (!get) return method_not_allowed(hc, "GET, HEAD", ROUTE_JOBS);
        api_jobs(d, hc, query);
        return ROUTE_JOBS;
    }
    if (!strncmp(path, "/api/jobs/", 10)) {
        const char *rest = path + 10, *slash = strchr(rest, '/');
        int64_t id;
        if (parse_id(rest, slash ? (size_t)(slash - rest) : strlen(rest), &id) < 0) {
            send_error(hc, 404, "", "no such resource: %s (job ids are numbers)", path);
            return ROUTE_OTHER;
        }
        if (!slash) {
            if (!get) return method_not_allowed(hc, "GET, HEAD", ROUTE_JOB);
            api_job(d, hc, id);
            return ROUTE_JOB;
        }
        const char *sub = slash + 1;
        if (!strcmp(sub, "metrics") || !strcmp(sub, "logs") || !strcmp(sub, "events")) {
            int route = sub[0] == 'm' ? ROUTE_METRICS_SERIES : sub[0] == 'l' ? ROUTE_LOGS : ROUTE_JOB_EVENTS;
            if (!get) return method_not_allowed(hc, "GET, HEAD", route);
            if (route == ROUTE_METRICS_SERIES) api_metrics(d, hc, id, query);
            else if (route == ROUTE_LOGS) api_logs(d, hc, id, query);
            else api_job_events(d, hc, id, query);
            return route;
        }
        Radlads__JobAction action = action_named(sub);
        if ((int)action >= 0) {
            if (!post) return method_not_allowed(hc, "POST", ROUTE_ACTION);
            api_action(d, hc, req, id, action);
            return ROUTE_ACTION;
        }
        send_error(hc, 404, "", "no such resource: %s", path);
        return ROUTE_OTHER;
    }
    if (!strncmp(path, "/api/", 5) || !strcmp(path, "/api")) {
        send_error(hc, 404, "", "no such API resource: %s", path);
        return ROUTE_OTHER;
    }
    if (!strstr(path, "..")) {
        if (!get) {
            for (size_t i = 0; i < rl_web_files_count; i++)
                if (!strcmp(path, "/") || !strcmp(rl_web_files[i].name, path + 1))
                    return method_not_allowed(hc, "GET, HEAD", ROUTE_STATIC);
        } else if (serve_static(hc, path)) {
            return ROUTE_STATIC;
        }
    }
    http_respond_text(hc, 404, "not found: %s\n", path);
    return ROUTE_OTHER;
}
