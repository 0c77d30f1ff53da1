/* /metrics: the Prometheus text exposition format (version 0.0.4).  Names carry the radlads_ prefix and
 * base units (seconds, tokens); counters end in _total.  Labels stay low-cardinality: job states, stage
 * kinds, route names, status classes, and job ids only for jobs that are running right now. */
#include "daemon.h"
#include "http.h"

#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const double rl_hist_bounds_s[RL_HIST_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5};

void rl_histogram_observe(rl_histogram *h, double seconds)
{
    h->count++;
    h->sum_s += seconds;
    for (int i = 0; i < RL_HIST_BUCKETS; i++)
        if (seconds <= rl_hist_bounds_s[i]) {
            h->buckets[i]++;
            break;
        }
}

typedef struct sbuf {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *ns = realloc(b->s, cap);
        if (!ns) {
            b->oom = 1;
            return;
        }
        b->s = ns;
        b->cap = cap;
    }
}

static void family(sbuf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram(sbuf *b, const char *name, const char *label, const char *value, const rl_histogram *h)
{
    uint64_t cum = 0;
    for (int i = 0; i < RL_HIST_BUCKETS; i++) {
        cum += h->buckets[i];
        put(b, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", name, label, value, rl_hist_bounds_s[i], (unsigned long long)cum);
    }
    put(b, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", name, label, value, (unsigned long long)h->count);
    put(b, "%s_sum{%s=\"%s\"} %.9g\n", name, label, value, h->sum_s);
    put(b, "%s_count{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)h->count);
}

static void store_metrics(rl_daemon *d, sbuf *b)
{
    static const char *const states[] = {"QUEUED", "HELD", "RUNNING", "RECOVERING", "COMPLETED",
                                         "FAILED", "CANCELLING", "CANCELLED", "INTERRUPTED"};
    int64_t counts[9] = {0};
    sqlite3_stmt *st = store_stmt(d->db, "SELECT state, count(*) FROM jobs GROUP BY state");
    while (st && sqlite3_step(st) == SQLITE_ROW)
        for (int i = 0; i < 9; i++)
            if (!strcmp((const char *)sqlite3_column_text(st, 0), states[i])) counts[i] = sqlite3_column_int64(st, 1);
    if (st) sqlite3_reset(st);
    family(b, "radlads_jobs", "gauge", "Jobs in the store, by state.");
    for (int i = 0; i < 9; i++) put(b, "radlads_jobs{state=\"%s\"} %lld\n", states[i], (long long)counts[i]);

    /* Transitions come from the append-only events table, so this counter survives daemon restarts. */
    family(b, "radlads_job_transitions_total", "counter", "Job state transitions, by the state entered.");
    st = store_stmt(d->db, "SELECT to_state, count(*) FROM events WHERE kind = 'job' AND to_state IS NOT NULL "
                           "GROUP BY to_state ORDER BY to_state");
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        const char *to = (const char *)sqlite3_column_text(st, 0);
        for (int i = 0; i < 9; i++) /* only known states become label values */
            if (!strcmp(to, states[i])) put(b, "radlads_job_transitions_total{to=\"%s\"} %lld\n", to,
                                            (long long)sqlite3_column_int64(st, 1));
    }
    if (st) sqlite3_reset(st);

    family(b, "radlads_job_restarts_total", "counter", "Attempts restarted after a failure, over all jobs.");
    st = store_stmt(d->db, "SELECT COALESCE(sum(restarts), 0) FROM jobs");
    if (st && sqlite3_step(st) == SQLITE_ROW) put(b, "radlads_job_restarts_total %lld\n", (long long)sqlite3_column_int64(st, 0));
    if (st) sqlite3_reset(st);

    /* Per-job series only for running jobs: the label set shrinks again when they end. */
    static const char running_sql[] =
        "SELECT j.id, s.kind, CASE WHEN s.tokens_total > 0 THEN min(1.0, CAST(s.tokens_done AS REAL) / s.tokens_total) "
        "ELSE 0.0 END, COALESCE(s.tokens_per_s, 0.0), "
        "(SELECT max(created_at) FROM checkpoints c WHERE c.job_id = j.id), s.mem_peak_bytes "
        "FROM jobs j JOIN stages s ON s.job_id = j.id AND s.idx = j.current_stage "
        "WHERE j.state IN ('RUNNING','RECOVERING') ORDER BY j.id";
    struct run {
        long long id;
        char kind[16];
        double ratio, tps;
        int has_ckpt, has_mem;
        double ckpt_s;
        long long mem_peak;
    } *runs = NULL;
    size_t n = 0, cap = 0;
    st = store_stmt(d->db, running_sql);
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            void *nr = realloc(runs, cap * sizeof *runs);
            if (!nr) break;
            runs = nr;
        }
        runs[n].id = sqlite3_column_int64(st, 0);
        snprintf(runs[n].kind, sizeof runs[n].kind, "%s", sqlite3_column_text(st, 1));
        runs[n].ratio = sqlite3_column_double(st, 2);
        runs[n].tps = sqlite3_column_double(st, 3);
        runs[n].has_ckpt = sqlite3_column_type(st, 4) != SQLITE_NULL;
        runs[n].ckpt_s = (double)sqlite3_column_int64(st, 4) / 1000.0;
        runs[n].has_mem = sqlite3_column_type(st, 5) != SQLITE_NULL;
        runs[n].mem_peak = sqlite3_column_int64(st, 5);
        n++;
    }
    if (st) sqlite3_reset(st);
    family(b, "radlads_stage_progress_ratio", "gauge", "Tokens done over tokens planned in each running job's current stage.");
    for (size_t i = 0; i < n; i++)
        put(b, "radlads_stage_progress_ratio{job=\"%lld\",stage=\"%s\"} %.6g\n", runs[i].id, runs[i].kind, runs[i].ratio);
    family(b, "radlads_job_tokens_per_second", "gauge", "Training throughput of each running job, tokens per second.");
    for (size_t i = 0; i < n; i++) put(b, "radlads_job_tokens_per_second{job=\"%lld\"} %.6g\n", runs[i].id, runs[i].tps);
    family(b, "radlads_stage_device_memory_peak_bytes", "gauge",
           "The most device memory rank 0's backend has held at once in each running job's current stage.");
    for (size_t i = 0; i < n; i++)
        if (runs[i].has_mem)
            put(b, "radlads_stage_device_memory_peak_bytes{job=\"%lld\",stage=\"%s\"} %lld\n", runs[i].id, runs[i].kind,
                runs[i].mem_peak);
    family(b, "radlads_job_last_checkpoint_timestamp_seconds", "gauge",
           "Unix time of each running job's latest checkpoint.");
    for (size_t i = 0; i < n; i++)
        if (runs[i].has_ckpt)
            put(b, "radlads_job_last_checkpoint_timestamp_seconds{job=\"%lld\"} %.3f\n", runs[i].id, runs[i].ckpt_s);
    free(runs);
}

char *prom_render(rl_daemon *d, size_t *len)
{
    sbuf b = {malloc(16384), 0, 16384, 0};
    if (!b.s) return NULL;
    b.s[0] = 0;
    family(&b, "radlads_build_info", "gauge", "Always 1; the daemon's version as a label.");
    put(&b, "radlads_build_info{version=\"%s\"} 1\n", RL_VERSION);
    family(&b, "radlads_start_time_seconds", "gauge", "Unix time the daemon started.");
    put(&b, "radlads_start_time_seconds %.3f\n", (double)d->started_at_ms / 1000.0);
    family(&b, "radlads_pools_connected", "gauge", "Worker pools connected now.");
    put(&b, "radlads_pools_connected %d\n", pools_count(d));
    store_metrics(d, &b);

    family(&b, "radlads_http_requests_total", "counter", "HTTP requests answered, by route and status class.");
    for (int r = 0; r < ROUTE_COUNT; r++)
        for (int c = 1; c <= 5; c++)
            if (d->stats.http_requests[r][c])
                put(&b, "radlads_http_requests_total{route=\"%s\",code=\"%dxx\"} %llu\n", http_route_names[r], c,
                    (unsigned long long)d->stats.http_requests[r][c]);
    family(&b, "radlads_http_request_duration_seconds", "histogram", "Time to answer an HTTP request, by route.");
    for (int r = 0; r < ROUTE_COUNT; r++)
        if (d->stats.http_duration[r].count)
            histogram(&b, "radlads_http_request_duration_seconds", "route", http_route_names[r], &d->stats.http_duration[r]);
    family(&b, "radlads_http_connections_total", "counter", "HTTP connections accepted.");
    put(&b, "radlads_http_connections_total %llu\n", (unsigned long long)d->stats.http_connections_total);
    family(&b, "radlads_http_connections_rejected_total", "counter", "HTTP connections refused at the connection limit.");
    put(&b, "radlads_http_connections_rejected_total %llu\n", (unsigned long long)d->stats.http_rejected_total);
    family(&b, "radlads_http_connections", "gauge", "HTTP connections open now (event streams included).");
    put(&b, "radlads_http_connections %d\n", http_connections(d));

    static const char *const roles[2] = {"cli", "pool"};
    family(&b, "radlads_socket_requests_total", "counter", "Messages handled on the daemon socket, by peer role.");
    for (int i = 0; i < 2; i++)
        put(&b, "radlads_socket_requests_total{role=\"%s\"} %llu\n", roles[i], (unsigned long long)d->stats.socket_requests[i]);
    family(&b, "radlads_socket_request_duration_seconds", "histogram", "Time to handle a socket message, by peer role.");
    for (int i = 0; i < 2; i++)
        histogram(&b, "radlads_socket_request_duration_seconds", "role", roles[i], &d->stats.socket_duration[i]);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    *len = b.len;
    return b.s;
}
