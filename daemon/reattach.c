/* Start-up reconciliation and re-attachment: nothing stays RUNNING with nothing running.
 *
 * At start every attempt the store still calls RUNNING is examined.  If none of its pool's ranks can still
 * be alive (they ran on this host and none of their pids exists), the attempt is LOST at once and its job
 * goes INTERRUPTED and then follows --on-interrupted (requeue, hold, fail).  If its ranks may be alive (a
 * pid exists, or they ran on another host), the daemon waits --reattach-grace seconds for that pool to
 * register again with its pool id and attempt id; a pool that does takes its attempt back as if nothing
 * happened; one that does not is treated like the first case when the grace ends. */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct awaiting {
    int64_t attempt_id, pool_id, job_id, deadline_ms;
    int stage_idx;
    struct awaiting *next;
} awaiting;

static awaiting *waiting_list;

static const char *const policy_to[] = {"QUEUED", "HELD", "FAILED"};
static const char *const policy_why[] = {"requeued after interruption (policy: requeue)",
                                         "held after interruption (policy: hold)",
                                         "failed after interruption (policy: fail)"};

static int is_local_host(const char *host)
{
    char me[256];
    if (!host[0] || !strcmp(host, "localhost") || !strcmp(host, "127.0.0.1")) return 1;
    if (gethostname(me, sizeof me) == 0 && !strcmp(host, me)) return 1;
    return 0;
}

/* Could any rank of this pool still be running? */
static int pool_maybe_alive(rl_daemon *d, int64_t pool_id)
{
    static const char sql[] = "SELECT pid, host FROM workers WHERE pool_id = ?";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, pool_id);
    int alive = 0;
    while (sqlite3_step(st) == SQLITE_ROW && !alive) {
        pid_t pid = (pid_t)sqlite3_column_int(st, 0);
        const char *host = (const char *)sqlite3_column_text(st, 1);
        if (!is_local_host(host ? host : "")) alive = 1; /* cannot tell from here: give it the grace */
        else if (pid > 1 && (kill(pid, 0) == 0 || errno == EPERM)) alive = 1;
    }
    sqlite3_reset(st);
    return alive;
}

/* Marks one attempt LOST and moves its job on (inside a transaction). */
static int lose_attempt(rl_daemon *d, int64_t attempt_id, int64_t job_id, int stage_idx, const char *why)
{
    static const char att[] = "UPDATE attempts SET state = 'LOST', finished_at = ?2, failure_reason = ?3 "
                              "WHERE id = ?1 AND state = 'RUNNING'";
    static const char stage[] = "UPDATE stages SET state = 'PENDING' WHERE job_id = ?1 AND idx = ?2 AND state = 'RUNNING'";
    sqlite3_stmt *st = store_stmt(d->db, att);
    sqlite3_bind_int64(st, 1, attempt_id);
    sqlite3_bind_int64(st, 2, now_ms());
    sqlite3_bind_text(st, 3, why, -1, SQLITE_STATIC);
    int rc = store_exec_stmt(d->db, st);
    if (rc == 0) rc = store_event(d->db, job_id, "attempt", stage_idx, "RUNNING", "LOST", why);
    if (rc == 0) {
        st = store_stmt(d->db, stage);
        sqlite3_bind_int64(st, 1, job_id);
        sqlite3_bind_int(st, 2, stage_idx);
        rc = store_exec_stmt(d->db, st);
    }
    return rc;
}

/* A job whose work stopped with the daemon: INTERRUPTED, then the policy; a cancel in progress completes. */
static int interrupt_job(rl_daemon *d, int64_t job_id, const char *state)
{
    if (!strcmp(state, "CANCELLING"))
        return job_transition(d->db, job_id, "CANCELLING", "CANCELLED", "radladsd restarted during cancel");
    int rc = job_transition(d->db, job_id, state, "INTERRUPTED", "radladsd restarted; no pool is running it");
    if (rc == 0) rc = job_transition(d->db, job_id, "INTERRUPTED", policy_to[d->on_interrupted], policy_why[d->on_interrupted]);
    if (rc == 0) log_info("job %lld: %s -> INTERRUPTED -> %s", (long long)job_id, state, policy_to[d->on_interrupted]);
    return rc;
}

static int awaited_job(int64_t job_id)
{
    for (awaiting *a = waiting_list; a; a = a->next)
        if (a->job_id == job_id) return 1;
    return 0;
}

int jobs_reconcile_at_start(rl_daemon *d)
{
    if (store_begin(d->db) < 0) return -1;
    static const char running_sql[] = "SELECT id, job_id, stage_idx, COALESCE(pool_id, 0) FROM attempts WHERE state = 'RUNNING'";
    sqlite3_stmt *st = store_stmt(d->db, running_sql);
    struct row {
        int64_t attempt_id, job_id, pool_id;
        int stage_idx;
    } *rows = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            void *nr = realloc(rows, cap * sizeof *rows);
            if (!nr) break;
            rows = nr;
        }
        rows[n].attempt_id = sqlite3_column_int64(st, 0);
        rows[n].job_id = sqlite3_column_int64(st, 1);
        rows[n].stage_idx = sqlite3_column_int(st, 2);
        rows[n].pool_id = sqlite3_column_int64(st, 3);
        n++;
    }
    if (st) sqlite3_reset(st);
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (d->reattach_grace_ms > 0 && rows[i].pool_id && pool_maybe_alive(d, rows[i].pool_id)) {
            awaiting *a = calloc(1, sizeof *a);
            if (!a) continue;
            a->attempt_id = rows[i].attempt_id;
            a->pool_id = rows[i].pool_id;
            a->job_id = rows[i].job_id;
            a->stage_idx = rows[i].stage_idx;
            a->deadline_ms = now_ms() + d->reattach_grace_ms;
            a->next = waiting_list;
            waiting_list = a;
            log_info("job %lld: attempt %lld ran on pool %lld whose ranks may be alive; waiting %d s for it to re-attach",
                     (long long)a->job_id, (long long)a->attempt_id, (long long)a->pool_id, d->reattach_grace_ms / 1000);
            continue;
        }
        rc = lose_attempt(d, rows[i].attempt_id, rows[i].job_id, rows[i].stage_idx,
                          "radladsd restarted while this attempt ran; its pool's ranks are gone");
    }
    free(rows);

    static const char jobs_sql[] = "SELECT id, state FROM jobs WHERE state IN ('RUNNING','RECOVERING','CANCELLING')";
    st = store_stmt(d->db, jobs_sql);
    struct job {
        int64_t id;
        char state[16];
    } *jobs = NULL;
    n = cap = 0;
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            void *nj = realloc(jobs, cap * sizeof *jobs);
            if (!nj) break;
            jobs = nj;
        }
        jobs[n].id = sqlite3_column_int64(st, 0);
        snprintf(jobs[n].state, sizeof jobs[n].state, "%s", sqlite3_column_text(st, 1));
        n++;
    }
    if (st) sqlite3_reset(st);
    for (size_t i = 0; i < n && rc == 0; i++)
        if (!awaited_job(jobs[i].id)) rc = interrupt_job(d, jobs[i].id, jobs[i].state);
    free(jobs);
    static const char pools_sql[] = "UPDATE pools SET state = 'LOST' WHERE state IN ('STARTING','IDLE','BUSY')";
    if (rc == 0) rc = store_exec_stmt(d->db, store_stmt(d->db, pools_sql));
    if (rc < 0) {
        store_rollback(d->db);
        return -1;
    }
    return store_commit(d->db);
}

int reattach_pending(void)
{
    int n = 0;
    for (awaiting *a = waiting_list; a; a = a->next) n++;
    return n;
}

/* A pool registering with the attempt it is still running takes it back.  Returns 1 when p now runs
 * that attempt, 0 when there was nothing to take back (p starts idle). */
int reattach_pool(rl_daemon *d, pool *p, int64_t attempt_id)
{
    for (awaiting **pp = &waiting_list; *pp; pp = &(*pp)->next) {
        awaiting *a = *pp;
        if (a->attempt_id != attempt_id) continue;
        *pp = a->next;
        p->attempt_id = a->attempt_id;
        p->job_id = a->job_id;
        p->stage_idx = a->stage_idx;
        p->last_progress_ms = now_ms();
        static const char sql[] = "UPDATE attempts SET pool_id = ?2 WHERE id = ?1";
        if (store_begin(d->db) == 0) {
            sqlite3_stmt *st = store_stmt(d->db, sql);
            sqlite3_bind_int64(st, 1, a->attempt_id);
            sqlite3_bind_int64(st, 2, p->id);
            char why[160];
            snprintf(why, sizeof why, "pool %lld re-attached after a daemon restart (was pool %lld)", (long long)p->id,
                     (long long)a->pool_id);
            if (store_exec_stmt(d->db, st) < 0 || store_event(d->db, a->job_id, "attempt", a->stage_idx, "RUNNING", "RUNNING", why) < 0 ||
                store_commit(d->db) < 0)
                store_rollback(d->db);
            log_info("job %lld: %s", (long long)a->job_id, why);
        }
        free(a);
        return 1;
    }
    return 0;
}

void reattach_tick(rl_daemon *d)
{
    int64_t now = now_ms();
    for (awaiting **pp = &waiting_list; *pp;) {
        awaiting *a = *pp;
        if (now < a->deadline_ms) {
            pp = &a->next;
            continue;
        }
        *pp = a->next;
        char why[160];
        snprintf(why, sizeof why, "radladsd restarted while this attempt ran; its pool did not re-attach within %d s",
                 d->reattach_grace_ms / 1000);
        static const char sql[] = "SELECT state FROM jobs WHERE id = ?";
        if (store_begin(d->db) == 0) {
            sqlite3_stmt *st = store_stmt(d->db, sql);
            sqlite3_bind_int64(st, 1, a->job_id);
            char state[32] = "";
            if (sqlite3_step(st) == SQLITE_ROW) snprintf(state, sizeof state, "%s", sqlite3_column_text(st, 0));
            sqlite3_reset(st);
            int rc = lose_attempt(d, a->attempt_id, a->job_id, a->stage_idx, why);
            if (rc == 0 && (!strcmp(state, "RUNNING") || !strcmp(state, "RECOVERING") || !strcmp(state, "CANCELLING")))
                rc = interrupt_job(d, a->job_id, state);
            if (rc < 0 || store_commit(d->db) < 0) store_rollback(d->db);
        }
        free(a);
        server_after_commit(d);
        sched_run(d);
    }
}

void reattach_free(void)
{
    while (waiting_list) {
        awaiting *a = waiting_list;
        waiting_list = a->next;
        free(a);
    }
}
