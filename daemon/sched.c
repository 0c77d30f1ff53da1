/* The scheduler: which job's next stage runs on which idle pool.
 *
 * Order: jobs that already hold a running slot (RUNNING between stages, RECOVERING after a failed
 * attempt) first, then QUEUED jobs while fewer than --max-running jobs are active; within each, higher
 * priority first, then older.  A pool fits a job when its name matches (or the job names none), its
 * device matches and it has exactly the job's rank count (the global batch is split over the ranks). */
#include "daemon.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const sched_launcher *launcher;

void sched_set_launcher(const sched_launcher *l)
{
    launcher = l;
}

static int active_jobs(rl_daemon *d)
{
    static const char sql[] = "SELECT count(*) FROM jobs WHERE state IN ('RUNNING','RECOVERING','CANCELLING')";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    int n = 0;
    if (st && sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
    if (st) sqlite3_reset(st);
    return n;
}

/* The best job for pool p: 0 when none fits. */
static int64_t pick_job(rl_daemon *d, pool *p, int allow_new, char *state, size_t statelen)
{
    static const char sql[] =
        "SELECT j.id, j.state FROM jobs j "
        "WHERE (j.state IN ('RUNNING','RECOVERING') OR (?4 AND j.state = 'QUEUED')) "
        "AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = j.id AND a.state = 'RUNNING') "
        "AND (j.pool_name = '' OR j.pool_name = ?1) AND j.device = ?2 AND j.ranks = ?3 "
        "ORDER BY j.state = 'QUEUED', j.priority DESC, j.id LIMIT 1";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    if (!st) return 0;
    sqlite3_bind_text(st, 1, p->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p->device, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, p->ranks);
    sqlite3_bind_int(st, 4, allow_new);
    int64_t id = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
        snprintf(state, statelen, "%s", sqlite3_column_text(st, 1));
    }
    sqlite3_reset(st);
    return id;
}

typedef struct assignment {
    int64_t attempt_id, job_id;
    int stage_idx;
    char *kind, *spec_json, *stage_json, *input_dir, *output_dir, *resume_from;
} assignment;

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

/* Creates the attempt and moves stage and job to running, in one transaction. */
static int start_attempt(rl_daemon *d, pool *p, int64_t job_id, const char *job_state, assignment *a)
{
    static const char stage_sql[] =
        "SELECT s.idx, s.kind, s.options_json, s.output_dir, j.spec_json, "
        "COALESCE((SELECT p.output_dir FROM stages p WHERE p.job_id = s.job_id AND p.idx = s.idx - 1), ''), "
        "(SELECT count(*) FROM attempts a WHERE a.job_id = s.job_id AND a.stage_idx = s.idx) "
        "FROM jobs j JOIN stages s ON s.job_id = j.id AND s.idx = j.current_stage WHERE j.id = ?";
    static const char ckpt_sql[] = "SELECT id, path FROM checkpoints WHERE job_id = ? AND stage_idx = ? "
                                   "AND deleted_at IS NULL ORDER BY step DESC, id DESC LIMIT 1";
    static const char att_sql[] = "INSERT INTO attempts(job_id, stage_idx, number, state, pool_id, resumed_from, "
                                  "started_at, last_progress_at) VALUES (?,?,?, 'RUNNING', ?,?,?,?)";
    static const char stage_run[] = "UPDATE stages SET state = 'RUNNING', started_at = COALESCE(started_at, ?3) "
                                    "WHERE job_id = ?1 AND idx = ?2";
    static const char pool_busy[] = "UPDATE pools SET state = 'BUSY', last_seen_at = ?2 WHERE id = ?1";
    memset(a, 0, sizeof *a);
    if (store_begin(d->db) < 0) return -1;
    sqlite3_stmt *st = store_stmt(d->db, stage_sql);
    sqlite3_bind_int64(st, 1, job_id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        store_rollback(d->db);
        log_error("job %lld: no current stage to run", (long long)job_id);
        return -1;
    }
    a->job_id = job_id;
    a->stage_idx = sqlite3_column_int(st, 0);
    a->kind = col_dup(st, 1);
    a->stage_json = col_dup(st, 2);
    a->output_dir = col_dup(st, 3);
    a->spec_json = col_dup(st, 4);
    a->input_dir = col_dup(st, 5);
    int number = sqlite3_column_int(st, 6) + 1;
    sqlite3_reset(st);

    int64_t ckpt_id = 0;
    st = store_stmt(d->db, ckpt_sql);
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_int(st, 2, a->stage_idx);
    if (sqlite3_step(st) == SQLITE_ROW) {
        ckpt_id = sqlite3_column_int64(st, 0);
        a->resume_from = col_dup(st, 1);
    } else {
        a->resume_from = strdup("");
    }
    sqlite3_reset(st);

    int64_t now = now_ms();
    st = store_stmt(d->db, att_sql);
    sqlite3_bind_int64(st, 1, job_id);
    sqlite3_bind_int(st, 2, a->stage_idx);
    sqlite3_bind_int(st, 3, number);
    sqlite3_bind_int64(st, 4, p->id);
    if (ckpt_id) sqlite3_bind_int64(st, 5, ckpt_id);
    sqlite3_bind_int64(st, 6, now);
    sqlite3_bind_int64(st, 7, now);
    int rc = store_exec_stmt(d->db, st);
    a->attempt_id = store_last_rowid(d->db);
    char reason[160];
    snprintf(reason, sizeof reason, "attempt %d on pool %lld%s", number, (long long)p->id,
             ckpt_id ? " (resuming from its latest checkpoint)" : "");
    if (rc == 0) rc = store_event(d->db, job_id, "attempt", a->stage_idx, NULL, "RUNNING", reason);
    if (rc == 0) {
        st = store_stmt(d->db, stage_run);
        sqlite3_bind_int64(st, 1, job_id);
        sqlite3_bind_int(st, 2, a->stage_idx);
        sqlite3_bind_int64(st, 3, now);
        rc = store_exec_stmt(d->db, st);
    }
    if (rc == 0 && number == 1) rc = store_event(d->db, job_id, "stage", a->stage_idx, "PENDING", "RUNNING", a->kind);
    if (rc == 0 && strcmp(job_state, "RUNNING")) rc = job_transition(d->db, job_id, job_state, "RUNNING", reason);
    if (rc == 0) {
        st = store_stmt(d->db, pool_busy);
        sqlite3_bind_int64(st, 1, p->id);
        sqlite3_bind_int64(st, 2, now);
        rc = store_exec_stmt(d->db, st);
    }
    if (rc < 0 || store_commit(d->db) < 0) {
        store_rollback(d->db);
        return -1;
    }
    return 0;
}

static void assignment_free(assignment *a)
{
    free(a->kind), free(a->spec_json), free(a->stage_json);
    free(a->input_dir), free(a->output_dir), free(a->resume_from);
}

void sched_run(rl_daemon *d)
{
    if (d->stopping) return;
    int changed = 0;
    for (pool *p = d->pools; p; p = p->next) {
        if (p->attempt_id || p->orphan_attempt || !p->c || p->c->closing) continue;
        int allow_new = d->max_running <= 0 || active_jobs(d) < d->max_running;
        char state[32];
        int64_t job_id = pick_job(d, p, allow_new, state, sizeof state);
        if (!job_id) continue;
        assignment a;
        if (start_attempt(d, p, job_id, state, &a) < 0) {
            assignment_free(&a);
            continue;
        }
        p->attempt_id = a.attempt_id;
        p->job_id = job_id;
        p->stage_idx = a.stage_idx;
        p->last_progress_ms = now_ms();
        p->stop_sent_ms = 0;
        Radlads__StageAssignment sa = RADLADS__STAGE_ASSIGNMENT__INIT;
        sa.job_id = job_id;
        sa.attempt_id = a.attempt_id;
        sa.stage_idx = a.stage_idx;
        sa.stage = a.kind;
        sa.spec_json = a.spec_json;
        sa.stage_json = a.stage_json;
        sa.input_dir = a.input_dir;
        sa.output_dir = a.output_dir;
        sa.resume_from = a.resume_from;
        Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
        env.msg_case = RADLADS__ENVELOPE__MSG_ASSIGNMENT;
        env.assignment = &sa;
        conn_send(p->c, &env);
        log_info("job %lld: stage %d (%s) attempt %lld -> pool %lld", (long long)job_id, a.stage_idx, a.kind,
                 (long long)a.attempt_id, (long long)p->id);
        assignment_free(&a);
        changed = 1;
    }
    if (changed) server_after_commit(d);
    /* A pool we launched that found nothing to run goes away (pools scale to zero). */
    for (pool *p = d->pools; p; p = p->next)
        if (!p->attempt_id && !p->orphan_attempt && p->launch_id) launcher_retire(d, p->launch_id, "idle: no runnable job fits it");
    if (!launcher) return;
    /* Runnable work with no idle pool that fits: ask the launcher for one (it de-duplicates). */
    static const char sql[] =
        "SELECT id, ranks, device, pool_name FROM jobs WHERE state IN ('QUEUED','RUNNING','RECOVERING') "
        "AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = jobs.id AND a.state = 'RUNNING') "
        "ORDER BY state = 'QUEUED', priority DESC, id LIMIT 16";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        sched_need need = {.job_id = sqlite3_column_int64(st, 0),
                           .ranks = sqlite3_column_int(st, 1),
                           .device = (const char *)sqlite3_column_text(st, 2),
                           .pool_name = (const char *)sqlite3_column_text(st, 3)};
        launcher->launch(d, &need, launcher->ctx);
    }
    if (st) sqlite3_reset(st);
}
