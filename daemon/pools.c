/* Pools: rank 0 of a worker pool speaks for the whole pool.  It registers, receives stage assignments,
 * reports progress, checkpoints, logs and the end of each stage, and sends heartbeats.  A lost
 * connection, stopped heartbeats or no step progress within the hang timeout end the attempt as failed;
 * the job then recovers (a new attempt from the latest checkpoint) while restarts < max_restarts. */
#include "daemon.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pools_count(rl_daemon *d)
{
    int n = 0;
    for (pool *p = d->pools; p; p = p->next) n++;
    return n;
}

pool *pools_find_by_job(rl_daemon *d, int64_t job_id)
{
    for (pool *p = d->pools; p; p = p->next)
        if (p->attempt_id && p->job_id == job_id) return p;
    return NULL;
}

static void send_control(pool *p, Radlads__ControlKind kind)
{
    Radlads__Control ctl = RADLADS__CONTROL__INIT;
    ctl.kind = kind;
    ctl.attempt_id = p->attempt_id;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_CONTROL;
    env.control = &ctl;
    conn_send(p->c, &env);
}

void pools_stop_job(rl_daemon *d, int64_t job_id, const char *why, int restart)
{
    pool *p = pools_find_by_job(d, job_id);
    if (!p) return;
    log_info("pool %lld: stopping job %lld attempt %lld: %s", (long long)p->id, (long long)job_id,
             (long long)p->attempt_id, why);
    p->stop_sent_ms = now_ms();
    p->restart_requested = restart;
    send_control(p, RADLADS__CONTROL_KIND__CONTROL_STOP);
}

void pools_drain_job(rl_daemon *d, int64_t job_id)
{
    pool *p = pools_find_by_job(d, job_id);
    if (!p) return;
    log_info("pool %lld: draining job %lld attempt %lld", (long long)p->id, (long long)job_id, (long long)p->attempt_id);
    p->drain_requested = 1;
    send_control(p, RADLADS__CONTROL_KIND__CONTROL_DRAIN);
}

/* A drained job waits, HELD, for a release (it resumes from the checkpoint the drain wrote). */
static int hold_drained(rl_daemon *d, int64_t job_id, const char *state)
{
    if (strcmp(state, "RUNNING") && strcmp(state, "RECOVERING")) return 0;
    int rc = job_transition(d->db, job_id, state, "INTERRUPTED", "drained: the pool checkpointed and stopped");
    if (rc == 0) rc = job_transition(d->db, job_id, "INTERRUPTED", "HELD", "drained; release to resume from its checkpoint");
    return rc;
}

static int job_state(rl_daemon *d, int64_t job_id, char *buf, size_t len)
{
    static const char sql[] = "SELECT state FROM jobs WHERE id = ?";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, job_id);
    int ok = sqlite3_step(st) == SQLITE_ROW;
    if (ok) snprintf(buf, len, "%s", sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    return ok ? 0 : -1;
}

static int set_attempt(rl_daemon *d, pool *p, const char *state, const char *reason)
{
    static const char sql[] = "UPDATE attempts SET state = ?2, finished_at = ?3, failure_reason = ?4 "
                              "WHERE id = ?1 AND state = 'RUNNING'";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, p->attempt_id);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms());
    if (reason) sqlite3_bind_text(st, 4, reason, -1, SQLITE_TRANSIENT);
    if (store_exec_stmt(d->db, st) < 0) return -1;
    if (store_changes(d->db) != 1) return 0; /* already ended: no second event */
    return store_event(d->db, p->job_id, "attempt", p->stage_idx, "RUNNING", state, reason);
}

static int set_stage(rl_daemon *d, int64_t job_id, int idx, const char *from, const char *to, const char *reason)
{
    static const char sql[] = "UPDATE stages SET state = ?3, finished_at = CASE WHEN ?3 IN ('DONE','FAILED','CANCELLED') "
                              "THEN ?4 ELSE finished_at END, tokens_done = CASE WHEN ?3 = 'DONE' THEN tokens_total "
                              "ELSE tokens_done END WHERE job_id = ?1 AND idx = ?2";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_int(st, 2, idx);
    sqlite3_bind_text(st, 3, to, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, now_ms());
    if (store_exec_stmt(d->db, st) < 0) return -1;
    return store_event(d->db, job_id, "stage", idx, from, to, reason);
}

static void pool_set_idle(rl_daemon *d, pool *p, const char *state)
{
    static const char sql[] = "UPDATE pools SET state = ?2, last_seen_at = ?3 WHERE id = ?1";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, p->id);
    sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms());
    store_exec_stmt(d->db, st);
    p->attempt_id = 0;
    p->job_id = 0;
    p->stop_sent_ms = 0;
    p->restart_requested = 0;
    p->drain_requested = 0;
}

/* The attempt ended without success (attempt_state FAILED, LOST or CANCELLED). */
static int attempt_failed(rl_daemon *d, pool *p, const char *attempt_state, const char *reason)
{
    char state[32];
    if (job_state(d, p->job_id, state, sizeof state) < 0) return -1;
    int rc = 0;
    if (!strcmp(state, "CANCELLING")) {
        rc = set_attempt(d, p, "CANCELLED", "job cancelled");
        if (rc == 0) rc = set_stage(d, p->job_id, p->stage_idx, "RUNNING", "CANCELLED", "job cancelled");
        if (rc == 0) rc = job_transition(d->db, p->job_id, "CANCELLING", "CANCELLED", "the pool stopped");
        return rc;
    }
    if (p->drain_requested) {
        rc = set_attempt(d, p, "CANCELLED", "drained");
        if (rc == 0) rc = set_stage(d, p->job_id, p->stage_idx, "RUNNING", "PENDING", "drained");
        if (rc == 0) rc = hold_drained(d, p->job_id, state);
        return rc;
    }
    rc = set_attempt(d, p, p->restart_requested ? "CANCELLED" : attempt_state,
                     p->restart_requested ? "restart requested" : reason);
    if (rc < 0) return rc;
    if ((!strcmp(state, "RUNNING") || !strcmp(state, "RECOVERING")) && p->restart_requested) {
        /* A user restart does not count against max_restarts. */
        rc = set_stage(d, p->job_id, p->stage_idx, "RUNNING", "PENDING", "restart requested");
        if (rc == 0 && !strcmp(state, "RUNNING"))
            rc = job_transition(d->db, p->job_id, "RUNNING", "RECOVERING", "restart requested");
        return rc;
    }
    static const char sql[] = "SELECT restarts, max_restarts FROM jobs WHERE id = ?";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, p->job_id);
    int restarts = 0, max_restarts = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        restarts = sqlite3_column_int(st, 0);
        max_restarts = sqlite3_column_int(st, 1);
    }
    sqlite3_reset(st);
    if (strcmp(state, "RUNNING") && strcmp(state, "RECOVERING")) return 0;
    char why[600];
    if (restarts < max_restarts) {
        static const char bump[] = "UPDATE jobs SET restarts = restarts + 1 WHERE id = ?";
        st = store_stmt(d->db, bump);
        sqlite3_bind_int64(st, 1, p->job_id);
        rc = store_exec_stmt(d->db, st);
        snprintf(why, sizeof why, "%s (restart %d of %d)", reason, restarts + 1, max_restarts);
        if (rc == 0) rc = set_stage(d, p->job_id, p->stage_idx, "RUNNING", "PENDING", why);
        if (rc == 0 && !strcmp(state, "RUNNING")) rc = job_transition(d->db, p->job_id, "RUNNING", "RECOVERING", why);
    } else {
        snprintf(why, sizeof why, "%s (no restarts left: max_restarts = %d)", reason, max_restarts);
        rc = set_stage(d, p->job_id, p->stage_idx, "RUNNING", "FAILED", why);
        if (rc == 0) rc = job_transition(d->db, p->job_id, state, "FAILED", why);
    }
    return rc;
}

static void end_attempt(rl_daemon *d, pool *p, const char *attempt_state, const char *reason, int pool_alive)
{
    if (!p->attempt_id) return;
    log_info("pool %lld: job %lld attempt %lld %s: %s", (long long)p->id, (long long)p->job_id,
             (long long)p->attempt_id, attempt_state, reason);
    if (store_begin(d->db) < 0) return;
    int rc = attempt_failed(d, p, attempt_state, reason);
    pool_set_idle(d, p, pool_alive ? "IDLE" : "LOST");
    if (rc < 0 || store_commit(d->db) < 0) store_rollback(d->db);
}

static void stage_finished(rl_daemon *d, pool *p, Radlads__StageFinished *m)
{
    if (!m->ok) {
        end_attempt(d, p, "FAILED", m->reason && *m->reason ? m->reason : "the stage failed", 1);
        return;
    }
    char state[32];
    if (store_begin(d->db) < 0) return;
    int rc = job_state(d, p->job_id, state, sizeof state);
    if (rc == 0) rc = set_attempt(d, p, "SUCCEEDED", NULL);
    if (rc == 0) rc = set_stage(d, p->job_id, p->stage_idx, "RUNNING", "DONE", NULL);
    static const char adv[] =
        "UPDATE jobs SET stages_done = stages_done + 1, current_stage = current_stage + 1, updated_at = ?2, "
        "tokens_done = (SELECT COALESCE(sum(tokens_total), 0) FROM stages WHERE job_id = ?1 AND state = 'DONE') "
        "WHERE id = ?1";
    if (rc == 0) {
        sqlite3_stmt *st = store_stmt(d->db, adv);
        sqlite3_bind_int64(st, 1, p->job_id);
        sqlite3_bind_int64(st, 2, now_ms());
        rc = store_exec_stmt(d->db, st);
    }
    static const char left_sql[] = "SELECT stages_done = stages_total FROM jobs WHERE id = ?";
    int finished = 0;
    if (rc == 0) {
        sqlite3_stmt *st = store_stmt(d->db, left_sql);
        sqlite3_bind_int64(st, 1, p->job_id);
        if (sqlite3_step(st) == SQLITE_ROW) finished = sqlite3_column_int(st, 0);
        sqlite3_reset(st);
    }
    if (rc == 0 && !strcmp(state, "CANCELLING")) {
        rc = job_transition(d->db, p->job_id, "CANCELLING", "CANCELLED", "the pool stopped");
    } else if (rc == 0 && !finished && p->drain_requested) {
        rc = hold_drained(d, p->job_id, state); /* the stage ended before the drain took effect */
    } else if (rc == 0 && finished) {
        static const char res[] = "UPDATE jobs SET result_path = ?2 WHERE id = ?1";
        sqlite3_stmt *st = store_stmt(d->db, res);
        sqlite3_bind_int64(st, 1, p->job_id);
        sqlite3_bind_text(st, 2, m->output_dir ? m->output_dir : "", -1, SQLITE_TRANSIENT);
        rc = store_exec_stmt(d->db, st);
        if (rc == 0) rc = job_transition(d->db, p->job_id, "RUNNING", "COMPLETED", "all stages done");
    }
    pool_set_idle(d, p, "IDLE");
    if (rc < 0 || store_commit(d->db) < 0) store_rollback(d->db);
}

static void progress(rl_daemon *d, pool *p, Radlads__Progress *m)
{
    static const char stage_sql[] = "UPDATE stages SET tokens_done = ?3, step = ?4, last_loss = ?5, tokens_per_s = ?6, "
                                    "mem_peak_bytes = COALESCE(?7, mem_peak_bytes) WHERE job_id = ?1 AND idx = ?2";
    static const char job_sql[] =
        "UPDATE jobs SET updated_at = ?2, tokens_done = ?3 + (SELECT COALESCE(sum(tokens_total), 0) FROM stages "
        "WHERE job_id = ?1 AND state = 'DONE') WHERE id = ?1";
    static const char metric_sql[] = "INSERT INTO metrics(job_id, stage_idx, attempt_id, time, step, tokens, loss, lr, "
                                     "tokens_per_s, grad_norm, mem_live_bytes, mem_peak_bytes) "
                                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)";
    static const char att_sql[] = "UPDATE attempts SET last_progress_at = ?2 WHERE id = ?1";
    int64_t now = now_ms();
    p->last_progress_ms = now;
    if (store_begin(d->db) < 0) return;
    sqlite3_stmt *st = store_stmt(d->db, stage_sql);
    sqlite3_bind_int64(st, 1, p->job_id);
    sqlite3_bind_int(st, 2, p->stage_idx);
    sqlite3_bind_int64(st, 3, m->tokens);
    sqlite3_bind_int64(st, 4, m->step);
    sqlite3_bind_double(st, 5, m->loss);
    sqlite3_bind_double(st, 6, m->tokens_per_s);
    if (m->mem_peak_bytes > 0) /* (0: a pool that does not report it; the stage keeps what it had) */
        sqlite3_bind_int64(st, 7, m->mem_peak_bytes);
    else
        sqlite3_bind_null(st, 7);
    int rc = store_exec_stmt(d->db, st);
    if (rc == 0) {
        st = store_stmt(d->db, job_sql);
        sqlite3_bind_int64(st, 1, p->job_id);
        sqlite3_bind_int64(st, 2, now);
        sqlite3_bind_int64(st, 3, m->tokens);
        rc = store_exec_stmt(d->db, st);
    }
    /* Metrics are downsampled for long runs: every step up to 2,000, then about 2,000 more per doubling. */
    int keep_metric = m->step <= 2000 || m->step % ((m->step + 1999) / 2000) == 0;
    if (rc == 0 && keep_metric) {
        st = store_stmt(d->db, metric_sql);
        sqlite3_bind_int64(st, 1, p->job_id);
        sqlite3_bind_int(st, 2, p->stage_idx);
        sqlite3_bind_int64(st, 3, p->attempt_id);
        sqlite3_bind_int64(st, 4, m->time_ms ? m->time_ms : now);
        sqlite3_bind_int64(st, 5, m->step);
        sqlite3_bind_int64(st, 6, m->tokens);
        sqlite3_bind_double(st, 7, m->loss);
        sqlite3_bind_double(st, 8, m->lr);
        sqlite3_bind_double(st, 9, m->tokens_per_s);
        sqlite3_bind_double(st, 10, m->grad_norm);
        for (int i = 0; i < 2; i++) {
            const int64_t v = i ? m->mem_peak_bytes : m->mem_live_bytes;
            if (m->mem_peak_bytes > 0)
                sqlite3_bind_int64(st, 11 + i, v);
            else
                sqlite3_bind_null(st, 11 + i);
        }
        rc = store_exec_stmt(d->db, st);
    }
    if (rc == 0) {
        st = store_stmt(d->db, att_sql);
        sqlite3_bind_int64(st, 1, p->attempt_id);
        sqlite3_bind_int64(st, 2, now);
        rc = store_exec_stmt(d->db, st);
    }
    if (rc < 0 || store_commit(d->db) < 0) {
        store_rollback(d->db);
        return;
    }
    sse_progress(d, p->job_id, p->stage_idx, m);
}

static void checkpoint_saved(rl_daemon *d, pool *p, Radlads__CheckpointSaved *m)
{
    static const char sql[] = "INSERT INTO checkpoints(job_id, stage_idx, attempt_id, step, tokens, path, sha256, "
                              "created_at) VALUES (?,?,?,?,?,?,?,?)";
    if (!m->path || !*m->path || !m->sha256 || strlen(m->sha256) != 64) {
        log_warn("pool %lld: checkpoint report without a path or a sha256; ignored", (long long)p->id);
        return;
    }
    if (store_begin(d->db) < 0) return;
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, p->job_id);
    sqlite3_bind_int(st, 2, p->stage_idx);
    sqlite3_bind_int64(st, 3, p->attempt_id);
    sqlite3_bind_int64(st, 4, m->step);
    sqlite3_bind_int64(st, 5, m->tokens);
    sqlite3_bind_text(st, 6, m->path, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, m->sha256, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 8, now_ms());
    int rc = store_exec_stmt(d->db, st);
    char reason[160];
    snprintf(reason, sizeof reason, "step %lld, %lld tokens", (long long)m->step, (long long)m->tokens);
    if (rc == 0) rc = store_event(d->db, p->job_id, "checkpoint", p->stage_idx, NULL, "SAVED", reason);
    /* Keep-last-N, as the stage's options say: older rows are marked deleted (the worker removes the files). */
    static const char gc[] =
        "UPDATE checkpoints SET deleted_at = ?3 WHERE job_id = ?1 AND stage_idx = ?2 AND deleted_at IS NULL AND id NOT IN "
        "(SELECT id FROM checkpoints WHERE job_id = ?1 AND stage_idx = ?2 AND deleted_at IS NULL ORDER BY step DESC, id DESC "
        "LIMIT max(1, COALESCE((SELECT json_extract(options_json, '$.keep_checkpoints') FROM stages "
        "WHERE job_id = ?1 AND idx = ?2), 3)))";
    if (rc == 0) {
        st = store_stmt(d->db, gc);
        sqlite3_bind_int64(st, 1, p->job_id);
        sqlite3_bind_int(st, 2, p->stage_idx);
        sqlite3_bind_int64(st, 3, now_ms());
        rc = store_exec_stmt(d->db, st);
    }
    if (rc < 0 || store_commit(d->db) < 0) store_rollback(d->db);
}

static void log_line(rl_daemon *d, pool *p, Radlads__LogLine *m)
{
    static const char sql[] = "INSERT INTO logs(job_id, attempt_id, time, rank, level, text) VALUES (?,?,?,?,?,?)";
    if (!p->job_id) return;
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, p->job_id);
    sqlite3_bind_int64(st, 2, p->attempt_id);
    sqlite3_bind_int64(st, 3, now_ms());
    sqlite3_bind_int(st, 4, m->rank);
    sqlite3_bind_text(st, 5, m->level && *m->level ? m->level : "info", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, m->text ? m->text : "", -1, SQLITE_TRANSIENT);
    store_exec_stmt(d->db, st);
}

static int reconnect_pool(rl_daemon *d, conn *c, Radlads__RegisterPool *m);

static void register_pool(rl_daemon *d, conn *c, Radlads__RegisterPool *m)
{
    if (c->pool) {
        conn_send_error(c, RL_E_BAD_REQUEST, "this connection already registered pool %lld", (long long)c->pool->id);
        return;
    }
    if (m->ranks < 1 || m->ranks > 65536) {
        conn_send_error(c, RL_E_BAD_REQUEST, "RegisterPool.ranks must be 1..65536, got %d", m->ranks);
        conn_close(c, "bad RegisterPool");
        return;
    }
    const char *device = m->device && *m->device ? m->device : "cpu";
    if (strcmp(device, "cpu") && strcmp(device, "cuda")) {
        conn_send_error(c, RL_E_BAD_REQUEST, "RegisterPool.device must be cpu or cuda, got \"%s\"", device);
        conn_close(c, "bad RegisterPool");
        return;
    }
    if (m->pool_id && reconnect_pool(d, c, m)) return;
    pool *p = calloc(1, sizeof *p);
    if (!p) {
        conn_close(c, "out of memory");
        return;
    }
    snprintf(p->name, sizeof p->name, "%s", m->name ? m->name : "");
    snprintf(p->device, sizeof p->device, "%s", device);
    snprintf(p->host, sizeof p->host, "%s", m->host ? m->host : "");
    p->ranks = m->ranks;
    p->c = c;
    p->last_seen_ms = now_ms();
    static const char sql[] = "INSERT INTO pools(name, ranks, device, host, state, registered_at, last_seen_at) "
                              "VALUES (?,?,?,?, 'IDLE', ?, ?)";
    static const char wsql[] = "INSERT INTO workers(pool_id, rank, pid, host) VALUES (?,?,?,?)";
    int rc = store_begin(d->db);
    if (rc == 0) {
        sqlite3_stmt *st = store_stmt(d->db, sql);
        sqlite3_bind_text(st, 1, p->name, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, p->ranks);
        sqlite3_bind_text(st, 3, p->device, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, p->host, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, p->last_seen_ms);
        sqlite3_bind_int64(st, 6, p->last_seen_ms);
        rc = store_exec_stmt(d->db, st);
        p->id = store_last_rowid(d->db);
        for (size_t i = 0; rc == 0 && i < m->n_rank_pids && i < (size_t)p->ranks; i++) {
            st = store_stmt(d->db, wsql);
            sqlite3_bind_int64(st, 1, p->id);
            sqlite3_bind_int(st, 2, (int)i);
            sqlite3_bind_int(st, 3, m->rank_pids[i]);
            sqlite3_bind_text(st, 4, p->host, -1, SQLITE_STATIC);
            rc = store_exec_stmt(d->db, st);
        }
        char reason[256];
        snprintf(reason, sizeof reason, "pool %lld registered: %d %s rank(s) on %s", (long long)p->id, p->ranks,
                 p->device, p->host);
        if (rc == 0) rc = store_event(d->db, 0, "pool", -1, NULL, "IDLE", reason);
        if (rc == 0) rc = store_commit(d->db);
        else store_rollback(d->db);
    }
    if (rc < 0) {
        free(p);
        conn_send_error(c, RL_E_INTERNAL, "store: could not register the pool");
        conn_close(c, "pool registration failed");
        return;
    }
    c->pool = p;
    p->next = d->pools;
    d->pools = p;
    launcher_pool_registered(d, p, m->launch_id, m->rank_pids, m->n_rank_pids);
    if (m->attempt_id && reattach_pool(d, p, m->attempt_id)) {
        static const char busy[] = "UPDATE pools SET state = 'BUSY' WHERE id = ?";
        sqlite3_stmt *st = store_stmt(d->db, busy);
        sqlite3_bind_int64(st, 1, p->id);
        store_exec_stmt(d->db, st);
    } else if (m->attempt_id) {
        /* Its attempt was given up (lost, retried elsewhere): stop it, and give this pool no work until it
         * has (its StageFinished for that attempt arrives, or the stop times out). */
        p->orphan_attempt = m->attempt_id;
        p->stop_sent_ms = now_ms();
        log_info("pool %lld: still running attempt %lld, which is no longer current; stopping it", (long long)p->id,
                 (long long)m->attempt_id);
    }
    log_info("pool %lld registered: %d %s rank(s) on %s, name \"%s\"", (long long)p->id, p->ranks, p->device,
             p->host, p->name);
    Radlads__PoolRegistered r = RADLADS__POOL_REGISTERED__INIT;
    r.pool_id = p->id;
    r.heartbeat_ms = d->heartbeat_ms;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_POOL_REGISTERED;
    env.pool_registered = &r;
    conn_send(c, &env);
    if (p->orphan_attempt) {
        Radlads__Control ctl = RADLADS__CONTROL__INIT;
        ctl.kind = RADLADS__CONTROL_KIND__CONTROL_STOP;
        ctl.attempt_id = p->orphan_attempt;
        Radlads__Envelope ce = RADLADS__ENVELOPE__INIT;
        ce.msg_case = RADLADS__ENVELOPE__MSG_CONTROL;
        ce.control = &ctl;
        conn_send(c, &ce);
    }
    server_after_commit(d);
    sched_run(d);
}

/* Messages about an attempt must name the pool's current attempt: late reports of an attempt that was
 * already ended (stopped, timed out) are dropped. */
static int current_attempt(pool *p, int64_t attempt_id)
{
    return p->attempt_id && attempt_id == p->attempt_id;
}

/* Progress, log lines, checkpoints and stage ends carry a per-pool sequence number; after a reconnect the
 * pool sends again those after the last one we had, so one we already took (seq ≤ last_seq) is a duplicate. */
static int fresh_seq(pool *p, int64_t seq)
{
    if (seq <= 0) return 1; /* an older worker: no numbering */
    if (seq <= p->last_seq) return 0;
    p->last_seq = seq;
    return 1;
}

void pools_handle(rl_daemon *d, conn *c, Radlads__Envelope *env)
{
    if (env->msg_case == RADLADS__ENVELOPE__MSG_REGISTER_POOL) {
        register_pool(d, c, env->register_pool);
        return;
    }
    pool *p = c->pool;
    if (!p) {
        conn_send_error(c, RL_E_BAD_REQUEST, "register the pool first (RegisterPool)");
        conn_close(c, "pool message before RegisterPool");
        return;
    }
    p->last_seen_ms = now_ms();
    int64_t seq = env->msg_case == RADLADS__ENVELOPE__MSG_PROGRESS ? env->progress->seq
                : env->msg_case == RADLADS__ENVELOPE__MSG_LOG ? env->log->seq
                : env->msg_case == RADLADS__ENVELOPE__MSG_CHECKPOINT_SAVED ? env->checkpoint_saved->seq
                : env->msg_case == RADLADS__ENVELOPE__MSG_STAGE_FINISHED ? env->stage_finished->seq : 0;
    if (!fresh_seq(p, seq)) return; /* sent again after a reconnect, but we had it */
    switch (env->msg_case) {
    case RADLADS__ENVELOPE__MSG_HEARTBEAT: break;
    case RADLADS__ENVELOPE__MSG_PROGRESS:
        if (current_attempt(p, env->progress->attempt_id)) progress(d, p, env->progress);
        break;
    case RADLADS__ENVELOPE__MSG_CHECKPOINT_SAVED:
        if (current_attempt(p, env->checkpoint_saved->attempt_id)) checkpoint_saved(d, p, env->checkpoint_saved);
        break;
    case RADLADS__ENVELOPE__MSG_LOG:
        if (current_attempt(p, env->log->attempt_id)) log_line(d, p, env->log);
        break;
    case RADLADS__ENVELOPE__MSG_STAGE_FINISHED:
        if (p->orphan_attempt && env->stage_finished->attempt_id == p->orphan_attempt) {
            log_info("pool %lld: orphaned attempt %lld ended (%s); the pool is free", (long long)p->id,
                     (long long)p->orphan_attempt, env->stage_finished->ok ? "ok" : "stopped");
            p->orphan_attempt = 0;
            p->stop_sent_ms = 0;
            sched_run(d);
        } else if (current_attempt(p, env->stage_finished->attempt_id)) {
            stage_finished(d, p, env->stage_finished);
            server_after_commit(d);
            sched_run(d);
        }
        break;
    default:
        conn_send_error(c, RL_E_BAD_REQUEST, "message %d is not a pool message", env->msg_case);
        conn_close(c, "unexpected pool message");
        return;
    }
    if (env->msg_case == RADLADS__ENVELOPE__MSG_CHECKPOINT_SAVED) server_after_commit(d);
}

/* Takes p out of the registry and frees it: its attempt (if any) ends as `attempt_state` with `why`. */
static void pool_remove(rl_daemon *d, pool *p, const char *attempt_state, const char *why)
{
    for (pool **pp = &d->pools; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (p->c) p->c->pool = NULL;
    if (p->attempt_id && !d->stopping) {
        end_attempt(d, p, attempt_state, why, 0);
    } else if (!d->stopping && store_begin(d->db) == 0) {
        pool_set_idle(d, p, "GONE");
        store_event(d->db, 0, "pool", -1, "IDLE", "GONE", "pool disconnected");
        if (store_commit(d->db) < 0) store_rollback(d->db);
    }
    if (p->launch_id && !d->stopping) launcher_retire(d, p->launch_id, "its connection ended");
    free(p);
    if (!d->stopping) {
        server_after_commit(d);
        sched_run(d);
    }
}

void pools_conn_lost(rl_daemon *d, conn *c)
{
    pool *p = c->pool;
    if (!p) return;
    c->pool = NULL;
    p->c = NULL;
    /* A busy pool's ranks usually outlive a dropped connection (the worker reconnects within seconds and
     * re-registers with its pool and attempt ids): keep the attempt for the grace instead of restarting it
     * from a checkpoint.  Not when it was being stopped, nor when we know its processes are gone. */
    int known_dead = p->launch_id && !launcher_alive(p->launch_id);
    if (p->attempt_id && !d->stopping && d->reconnect_grace_ms > 0 && !p->stop_sent_ms && !known_dead) {
        p->disconnected_ms = now_ms();
        char why[160];
        snprintf(why, sizeof why, "pool %lld's connection dropped; its attempt waits %d s for it to reconnect",
                 (long long)p->id, d->reconnect_grace_ms / 1000);
        log_info("job %lld: %s", (long long)p->job_id, why);
        if (store_begin(d->db) == 0) {
            if (store_event(d->db, p->job_id, "attempt", p->stage_idx, "RUNNING", "RUNNING", why) < 0 ||
                store_commit(d->db) < 0)
                store_rollback(d->db);
        }
        server_after_commit(d);
        return;
    }
    pool_remove(d, p, "LOST", known_dead ? "the pool's connection was lost and its processes exited"
                                         : "the pool's connection was lost");
}

void pools_launch_ended(rl_daemon *d, int64_t launch_id)
{
    for (pool *p = d->pools; p; p = p->next)
        if (p->launch_id == launch_id && !p->c) {
            pool_remove(d, p, "LOST", "the pool's connection was lost and its processes exited");
            return;
        }
}

/* A pool that lost its connection mid-attempt registers again with its pool id and that attempt: the same
 * pool continues on the new connection.  Returns 1 when c was bound to such a pool. */
static int reconnect_pool(rl_daemon *d, conn *c, Radlads__RegisterPool *m)
{
    pool *p = d->pools;
    /* attempt 0: the pool believes it reported the attempt's end, but that StageFinished went down with the
     * connection; it comes again (numbered) after PoolRegistered */
    while (p && !(p->id == m->pool_id && !p->c && p->attempt_id &&
                  (p->attempt_id == m->attempt_id || m->attempt_id == 0)))
        p = p->next;
    if (!p) return 0;
    int64_t away = now_ms() - p->disconnected_ms;
    p->c = c;
    c->pool = p;
    p->disconnected_ms = 0;
    p->last_seen_ms = p->last_progress_ms = now_ms();
    char why[160];
    snprintf(why, sizeof why, "pool %lld reconnected after %.1f s; attempt %lld continues", (long long)p->id,
             (double)away / 1000.0, (long long)p->attempt_id);
    log_info("job %lld: %s", (long long)p->job_id, why);
    if (store_begin(d->db) == 0) {
        if (store_event(d->db, p->job_id, "attempt", p->stage_idx, "RUNNING", "RUNNING", why) < 0 ||
            store_commit(d->db) < 0)
            store_rollback(d->db);
    }
    Radlads__PoolRegistered r = RADLADS__POOL_REGISTERED__INIT;
    r.pool_id = p->id;
    r.heartbeat_ms = d->heartbeat_ms;
    r.last_seq = p->last_seq; /* it sends again what came after: lines the dropped connection swallowed */
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_POOL_REGISTERED;
    env.pool_registered = &r;
    conn_send(c, &env);
    if (p->drain_requested) send_control(p, RADLADS__CONTROL_KIND__CONTROL_DRAIN); /* asked while it was away */
    server_after_commit(d);
    return 1;
}

void pools_tick(rl_daemon *d)
{
    int64_t now = now_ms();
    for (pool *p = d->pools, *next; p; p = next) {
        next = p->next;
        char why[160];
        if (!p->c) { /* waiting to reconnect */
            if (p->stop_sent_ms || now - p->disconnected_ms > d->reconnect_grace_ms) {
                snprintf(why, sizeof why, "the pool's connection was lost and it did not reconnect within %d s",
                         d->reconnect_grace_ms / 1000);
                pool_remove(d, p, "LOST", p->stop_sent_ms ? "the pool's connection was lost while it was being stopped" : why);
            }
            continue;
        }
        if (now - p->last_seen_ms > d->heartbeat_timeout_ms) {
            snprintf(why, sizeof why, "heartbeats stopped (none for %d ms)", d->heartbeat_timeout_ms);
        } else if (p->attempt_id && d->hang_timeout_ms > 0 && now - p->last_progress_ms > d->hang_timeout_ms) {
            snprintf(why, sizeof why, "no step progress for %d s (hang timeout)", d->hang_timeout_ms / 1000);
        } else if (p->stop_sent_ms && now - p->stop_sent_ms > d->cancel_timeout_ms) {
            snprintf(why, sizeof why, "the pool did not stop within %d s", d->cancel_timeout_ms / 1000);
        } else {
            continue;
        }
        if (p->attempt_id && !p->stop_sent_ms) {
            /* The pool is torn down: the attempt fails with this reason, not "connection lost". */
            end_attempt(d, p, "FAILED", why, 0);
        }
        conn_close(p->c, why);
    }
}

void pools_handle_list(rl_daemon *d, conn *c)
{
    int n = pools_count(d), i = 0;
    Radlads__PoolInfo *infos = calloc((size_t)n + 1, sizeof *infos);
    Radlads__PoolInfo **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    int32_t *pids = calloc((size_t)n * 64 + 1, sizeof *pids);
    if (!infos || !ptrs || !pids) {
        free(infos), free(ptrs), free(pids);
        conn_send_error(c, RL_E_INTERNAL, "out of memory");
        return;
    }
    static const char wsql[] = "SELECT pid FROM workers WHERE pool_id = ? ORDER BY rank LIMIT 64";
    for (pool *p = d->pools; p && i < n; p = p->next, i++) {
        Radlads__PoolInfo *in = &infos[i];
        radlads__pool_info__init(in);
        in->id = p->id;
        in->name = p->name;
        in->ranks = p->ranks;
        in->device = p->device;
        in->host = p->host;
        in->state = !p->c ? "DISCONNECTED" : p->attempt_id ? "BUSY" : "IDLE";
        in->job_id = p->job_id;
        in->stage_idx = p->attempt_id ? p->stage_idx : -1;
        in->attempt_id = p->attempt_id;
        in->last_seen_ms = p->last_seen_ms;
        in->launch_id = p->launch_id;
        in->rank_pids = pids + (size_t)i * 64;
        sqlite3_stmt *st = store_stmt(d->db, wsql);
        sqlite3_bind_int64(st, 1, p->id);
        while (sqlite3_step(st) == SQLITE_ROW && in->n_rank_pids < 64)
            in->rank_pids[in->n_rank_pids++] = sqlite3_column_int(st, 0);
        sqlite3_reset(st);
        ptrs[i] = in;
    }
    Radlads__PoolsReply r = RADLADS__POOLS_REPLY__INIT;
    r.n_pools = (size_t)i;
    r.pools = ptrs;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_POOLS_REPLY;
    env.pools_reply = &r;
    conn_send(c, &env);
    free(infos), free(ptrs), free(pids);
}
