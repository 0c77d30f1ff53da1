/* Jobs: the state machine and the CLI requests that read or change it.
 *
 *   QUEUED -> HELD | RUNNING | CANCELLED          HELD -> QUEUED | CANCELLED
 *   RUNNING -> RECOVERING | COMPLETED | FAILED | CANCELLING | CANCELLED | INTERRUPTED
 *   RECOVERING -> RUNNING | FAILED | CANCELLING | CANCELLED | INTERRUPTED
 *   CANCELLING -> CANCELLED                        INTERRUPTED -> QUEUED | HELD | CANCELLED | FAILED
 * COMPLETED, FAILED and CANCELLED are terminal (the schema refuses to change them too). */
#include "daemon.h"

#include <pwd.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *from, *to;
} legal[] = {
    {"QUEUED", "HELD"},          {"QUEUED", "RUNNING"},         {"QUEUED", "CANCELLED"},
    {"HELD", "QUEUED"},          {"HELD", "CANCELLED"},         {"RUNNING", "RECOVERING"},
    {"RUNNING", "COMPLETED"},    {"RUNNING", "FAILED"},         {"RUNNING", "CANCELLING"},
    {"RUNNING", "CANCELLED"},    {"RUNNING", "INTERRUPTED"},    {"RECOVERING", "RUNNING"},
    {"RECOVERING", "FAILED"},    {"RECOVERING", "CANCELLING"},  {"RECOVERING", "CANCELLED"},
    {"RECOVERING", "INTERRUPTED"}, {"CANCELLING", "CANCELLED"}, {"INTERRUPTED", "QUEUED"},
    {"INTERRUPTED", "HELD"},     {"INTERRUPTED", "CANCELLED"},  {"INTERRUPTED", "FAILED"},
};

int job_state_terminal(const char *state)
{
    return !strcmp(state, "COMPLETED") || !strcmp(state, "FAILED") || !strcmp(state, "CANCELLED");
}

int job_transition(store *s, int64_t job_id, const char *from, const char *to, const char *reason)
{
    int ok = 0;
    for (size_t i = 0; i < sizeof legal / sizeof legal[0]; i++)
        if (!strcmp(legal[i].from, from) && !strcmp(legal[i].to, to)) ok = 1;
    if (!ok) {
        log_error("job %lld: illegal transition %s -> %s refused", (long long)job_id, from, to);
        return -1;
    }
    static const char sql[] =
        "UPDATE jobs SET state = ?1, updated_at = ?2, "
        "finished_at = CASE WHEN ?1 IN ('COMPLETED','FAILED','CANCELLED') THEN ?2 ELSE finished_at END, "
        "failure_reason = CASE WHEN ?1 = 'FAILED' THEN ?5 ELSE failure_reason END "
        "WHERE id = ?3 AND state = ?4";
    sqlite3_stmt *st = store_stmt(s, sql);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, to, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms());
    sqlite3_bind_int64(st, 3, job_id);
    sqlite3_bind_text(st, 4, from, -1, SQLITE_STATIC);
    if (reason) sqlite3_bind_text(st, 5, reason, -1, SQLITE_TRANSIENT);
    if (store_exec_stmt(s, st) < 0) return -1;
    if (store_changes(s) != 1) {
        log_error("job %lld: not in state %s; transition to %s skipped", (long long)job_id, from, to);
        return -1;
    }
    return store_event(s, job_id, "job", -1, from, to, reason);
}

/* ---- owner names ---- */

static const char *owner_name(uid_t uid)
{
    static struct {
        uid_t uid;
        char name[64];
    } cache[32];
    static int n;
    for (int i = 0; i < n; i++)
        if (cache[i].uid == uid) return cache[i].name;
    int slot = n < 32 ? n++ : (int)(uid % 32);
    struct passwd *pw = getpwuid(uid);
    cache[slot].uid = uid;
    if (pw) snprintf(cache[slot].name, sizeof cache[slot].name, "%s", pw->pw_name);
    else snprintf(cache[slot].name, sizeof cache[slot].name, "uid%u", (unsigned)uid);
    return cache[slot].name;
}

/* Makes room for one more element in a malloc'd array of *cap elements holding n; 0 or -1 (out of memory). */
static int grow(void *arrp, size_t *cap, size_t n, size_t elem)
{
    void **arr = arrp;
    if (*arr && n < *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *na = realloc(*arr, ncap * elem);
    if (!na) return -1;
    *arr = na;
    *cap = ncap;
    return 0;
}

/* ---- summaries ---- */

#define SUMMARY_SELECT                                                                                     \
    "SELECT j.id, j.name, j.state, j.owner_uid, j.owner, j.priority, j.submitted_at, j.updated_at, "       \
    "COALESCE(s.kind, ''), j.stages_done, j.stages_total, j.tokens_done, j.tokens_total, "                \
    "COALESCE(j.failure_reason, ''), j.restarts, COALESCE(s.tokens_per_s, 0) "                            \
    "FROM jobs j LEFT JOIN stages s ON s.job_id = j.id AND s.idx = j.current_stage "

static char *col_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

static void summary_fill(Radlads__JobSummary *j, sqlite3_stmt *st)
{
    radlads__job_summary__init(j);
    j->id = sqlite3_column_int64(st, 0);
    j->name = col_dup(st, 1);
    j->state = col_dup(st, 2);
    j->owner_uid = (uint32_t)sqlite3_column_int64(st, 3);
    j->owner = col_dup(st, 4);
    j->priority = sqlite3_column_int(st, 5);
    j->submitted_at_ms = sqlite3_column_int64(st, 6);
    j->updated_at_ms = sqlite3_column_int64(st, 7);
    j->current_stage = col_dup(st, 8);
    j->stages_done = sqlite3_column_int(st, 9);
    j->stages_total = sqlite3_column_int(st, 10);
    int64_t tdone = sqlite3_column_int64(st, 11), ttotal = sqlite3_column_int64(st, 12);
    if (!strcmp(j->state, "COMPLETED")) j->progress = 1.0;
    else if (ttotal > 0) j->progress = (double)tdone / (double)ttotal;
    else j->progress = j->stages_total ? (double)j->stages_done / j->stages_total : 0;
    if (j->progress > 1) j->progress = 1;
    j->failure_reason = col_dup(st, 13);
    j->restarts = sqlite3_column_int(st, 14);
    j->tokens_per_s = !strcmp(j->state, "RUNNING") ? sqlite3_column_double(st, 15) : 0;
    if (job_state_terminal(j->state) || !strcmp(j->state, "QUEUED") || !strcmp(j->state, "HELD")) {
        if (job_state_terminal(j->state)) {
            free(j->current_stage);
            j->current_stage = strdup("");
        }
    }
}

static void summary_free_strings(Radlads__JobSummary *j)
{
    free(j->name);
    free(j->state);
    free(j->owner);
    free(j->current_stage);
    free(j->failure_reason);
}

static int load_summary(rl_daemon *d, int64_t id, Radlads__JobSummary *out)
{
    static const char sql[] = SUMMARY_SELECT "WHERE j.id = ?";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, id);
    int found = sqlite3_step(st) == SQLITE_ROW;
    if (found) summary_fill(out, st);
    sqlite3_reset(st);
    return found ? 0 : -1;
}

/* ---- submit (group commit) ---- */

typedef struct pending_submit {
    struct pending_submit *next;
    conn *c;
    rl_job_spec spec;
    char *spec_json;
    int hold;
    int priority;
    uid_t uid;
    int64_t job_id; /* set by the insert, acknowledged after the commit */
} pending_submit;

void jobs_handle_submit(rl_daemon *d, conn *c, Radlads__SubmitRequest *req)
{
    char err[1024];
    pending_submit *ps = calloc(1, sizeof *ps);
    if (!ps) {
        conn_send_error(c, RL_E_INTERNAL, "out of memory");
        return;
    }
    const char *text = req->spec_json ? req->spec_json : "";
    if (rl_jobspec_parse(&ps->spec, text, strlen(text), NULL, RL_SPEC_CHECK_PATHS, err, sizeof err) < 0) {
        conn_send_error(c, RL_E_SPEC, "%s", err);
        free(ps);
        return;
    }
    ps->spec_json = rl_jobspec_to_json(&ps->spec);
    if (!ps->spec_json) {
        rl_jobspec_free(&ps->spec);
        free(ps);
        conn_send_error(c, RL_E_INTERNAL, "out of memory");
        return;
    }
    ps->c = c;
    ps->hold = req->hold;
    ps->priority = req->has_priority ? req->priority : ps->spec.priority;
    if (ps->priority < -1000 || ps->priority > 1000) {
        conn_send_error(c, RL_E_SPEC, "priority: must be between -1000 and 1000, got %d", ps->priority);
        rl_jobspec_free(&ps->spec);
        free(ps->spec_json);
        free(ps);
        return;
    }
    ps->uid = c->uid;
    *d->submits_tail = ps;
    d->submits_tail = &ps->next;
}

static int insert_job(rl_daemon *d, pending_submit *ps, int64_t restart_of, int64_t *id_out)
{
    static const char job_sql[] =
        "INSERT INTO jobs(name, owner_uid, owner, state, priority, spec_json, output_dir, pool_name, ranks, "
        "device, max_restarts, stages_total, tokens_total, restart_of, submitted_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
    static const char stage_sql[] =
        "INSERT INTO stages(job_id, idx, kind, state, options_json, tokens_total, output_dir) "
        "VALUES (?,?,?, 'PENDING', ?,?,?)";
    const rl_job_spec *sp = &ps->spec;
    int64_t tokens = 0;
    for (size_t i = 0; i < sp->n_stages; i++) tokens += sp->stages[i].tokens;
    int64_t now = now_ms();
    const char *state = ps->hold ? "HELD" : "QUEUED";
    sqlite3_stmt *st = store_stmt(d->db, job_sql);
    if (!st) return -1;
    sqlite3_bind_text(st, 1, sp->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, ps->uid);
    sqlite3_bind_text(st, 3, owner_name(ps->uid), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, state, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, ps->priority);
    sqlite3_bind_text(st, 6, ps->spec_json, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, sp->output, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, sp->pool, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 9, sp->ranks);
    sqlite3_bind_text(st, 10, sp->device == RL_DEVICE_CUDA ? "cuda" : "cpu", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 11, sp->max_restarts);
    sqlite3_bind_int(st, 12, (int)sp->n_stages);
    sqlite3_bind_int64(st, 13, tokens);
    if (restart_of > 0) sqlite3_bind_int64(st, 14, restart_of);
    sqlite3_bind_int64(st, 15, now);
    sqlite3_bind_int64(st, 16, now);
    if (store_exec_stmt(d->db, st) < 0) return -1;
    int64_t id = store_last_rowid(d->db);
    for (size_t i = 0; i < sp->n_stages; i++) {
        char *opts = rl_jobspec_stage_json(sp, i);
        char dir[4200];
        snprintf(dir, sizeof dir, "%s/%02zu-%s", sp->output, i, rl_stage_kind_name(sp->stages[i].kind));
        st = store_stmt(d->db, stage_sql);
        if (!st || !opts) {
            free(opts);
            return -1;
        }
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int(st, 2, (int)i);
        sqlite3_bind_text(st, 3, rl_stage_kind_name(sp->stages[i].kind), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, opts, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 5, sp->stages[i].tokens);
        sqlite3_bind_text(st, 6, dir, -1, SQLITE_TRANSIENT);
        free(opts);
        if (store_exec_stmt(d->db, st) < 0) return -1;
    }
    char reason[128];
    if (restart_of > 0) snprintf(reason, sizeof reason, "restart of job %lld by %s", (long long)restart_of, owner_name(ps->uid));
    else snprintf(reason, sizeof reason, "submitted by %s", owner_name(ps->uid));
    if (store_event(d->db, id, "job", -1, NULL, state, reason) < 0) return -1;
    *id_out = id;
    return 0;
}

static void pending_free(pending_submit *ps)
{
    rl_jobspec_free(&ps->spec);
    free(ps->spec_json);
    free(ps);
}

/* All submits that arrived in one loop iteration share one transaction: one fsync for the batch, and
 * no submit is acknowledged before its transaction is durable. */
void jobs_flush_submits(rl_daemon *d)
{
    pending_submit *batch = d->submits;
    if (!batch) return;
    d->submits = NULL;
    d->submits_tail = &d->submits;
    int ok = store_begin(d->db) == 0;
    for (pending_submit *ps = batch; ok && ps; ps = ps->next) {
        if (insert_job(d, ps, 0, &ps->job_id) < 0) ok = 0;
    }
    if (ok) ok = store_commit(d->db) == 0;
    else store_rollback(d->db);
    for (pending_submit *ps = batch, *next; ps; ps = next) {
        next = ps->next;
        if (ps->c) {
            if (ok) {
                Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
                Radlads__SubmitReply r = RADLADS__SUBMIT_REPLY__INIT;
                r.job_id = ps->job_id;
                env.msg_case = RADLADS__ENVELOPE__MSG_SUBMIT_REPLY;
                env.submit_reply = &r;
                conn_send(ps->c, &env);
            } else {
                conn_send_error(ps->c, RL_E_INTERNAL, "the job store could not record the submit (%s); nothing was queued",
                                store_errmsg(d->db));
            }
        }
        pending_free(ps);
    }
    if (ok) {
        server_after_commit(d);
        sched_run(d);
    }
}

/* ---- status / show ---- */

void jobs_handle_status(rl_daemon *d, conn *c, Radlads__StatusRequest *req)
{
    static const char sql_all[] = SUMMARY_SELECT "ORDER BY j.id";
    static const char sql_mine[] = SUMMARY_SELECT "WHERE j.owner_uid = ? ORDER BY j.id";
    sqlite3_stmt *st = store_stmt(d->db, req->mine ? sql_mine : sql_all);
    if (!st) {
        conn_send_error(c, RL_E_INTERNAL, "store: %s", store_errmsg(d->db));
        return;
    }
    if (req->mine) sqlite3_bind_int64(st, 1, c->uid);
    size_t cap = 256, n = 0;
    Radlads__JobSummary *rows = malloc(cap * sizeof *rows);
    while (rows && sqlite3_step(st) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 2);
        if (req->n_states) {
            int match = 0;
            for (size_t i = 0; i < req->n_states; i++)
                if (!strcasecmp(req->states[i], state)) match = 1;
            if (!match) continue;
        }
        if (n == cap) {
            cap *= 2;
            Radlads__JobSummary *nr = realloc(rows, cap * sizeof *rows);
            if (!nr) break;
            rows = nr;
        }
        summary_fill(&rows[n++], st);
    }
    sqlite3_reset(st);
    /* A limit keeps the newest jobs. */
    size_t first = (req->limit > 0 && n > (size_t)req->limit) ? n - (size_t)req->limit : 0;
    Radlads__JobSummary **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!rows || !ptrs) {
        free(ptrs);
        for (size_t i = 0; i < n; i++) summary_free_strings(&rows[i]);
        free(rows);
        conn_send_error(c, RL_E_INTERNAL, "out of memory");
        return;
    }
    for (size_t i = first; i < n; i++) ptrs[i - first] = &rows[i];
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    Radlads__StatusReply r = RADLADS__STATUS_REPLY__INIT;
    r.n_jobs = n - first;
    r.jobs = ptrs;
    env.msg_case = RADLADS__ENVELOPE__MSG_STATUS_REPLY;
    env.status_reply = &r;
    conn_send(c, &env);
    for (size_t i = 0; i < n; i++) summary_free_strings(&rows[i]);
    free(rows);
    free(ptrs);
}

void jobs_handle_show(rl_daemon *d, conn *c, Radlads__ShowRequest *req)
{
    Radlads__JobSummary job;
    if (load_summary(d, req->job_id, &job) < 0) {
        conn_send_error(c, RL_E_NOT_FOUND, "no job %lld", (long long)req->job_id);
        return;
    }
    Radlads__ShowReply r = RADLADS__SHOW_REPLY__INIT;
    r.job = &job;
    char *strs[4] = {0};
    static const char jsql[] = "SELECT spec_json, output_dir, COALESCE(result_path,''), COALESCE(restart_of,0) "
                               "FROM jobs WHERE id = ?";
    sqlite3_stmt *st = store_stmt(d->db, jsql);
    sqlite3_bind_int64(st, 1, req->job_id);
    if (sqlite3_step(st) == SQLITE_ROW) {
        r.spec_json = strs[0] = col_dup(st, 0);
        r.output_dir = strs[1] = col_dup(st, 1);
        r.result_path = strs[2] = col_dup(st, 2);
        r.restart_of = sqlite3_column_int64(st, 3);
    }
    sqlite3_reset(st);

    static const char ssql[] =
        "SELECT s.idx, s.kind, s.state, s.tokens_total, s.tokens_done, s.step, COALESCE(s.last_loss, 0), "
        "COALESCE(s.started_at, 0), COALESCE(s.finished_at, 0), "
        "(SELECT count(*) FROM attempts a WHERE a.job_id = s.job_id AND a.stage_idx = s.idx), s.output_dir, "
        "COALESCE(s.mem_peak_bytes, 0) FROM stages s WHERE s.job_id = ? ORDER BY s.idx";
    Radlads__StageInfo stages[64], *stage_ptrs[64];
    st = store_stmt(d->db, ssql);
    sqlite3_bind_int64(st, 1, req->job_id);
    while (r.n_stages < 64 && sqlite3_step(st) == SQLITE_ROW) {
        Radlads__StageInfo *s = &stages[r.n_stages];
        radlads__stage_info__init(s);
        s->idx = sqlite3_column_int(st, 0);
        s->kind = col_dup(st, 1);
        s->state = col_dup(st, 2);
        s->tokens_total = sqlite3_column_int64(st, 3);
        s->tokens_done = sqlite3_column_int64(st, 4);
        s->step = sqlite3_column_int64(st, 5);
        s->last_loss = sqlite3_column_double(st, 6);
        s->started_at_ms = sqlite3_column_int64(st, 7);
        s->finished_at_ms = sqlite3_column_int64(st, 8);
        s->attempts = sqlite3_column_int(st, 9);
        s->output_dir = col_dup(st, 10);
        s->mem_peak_bytes = sqlite3_column_int64(st, 11);
        stage_ptrs[r.n_stages++] = s;
    }
    sqlite3_reset(st);
    r.stages = stage_ptrs;

    static const char asql[] =
        "SELECT id, stage_idx, number, state, COALESCE(pool_id,0), started_at, COALESCE(finished_at,0), "
        "COALESCE(failure_reason,''), COALESCE(resumed_from,0) FROM attempts WHERE job_id = ? ORDER BY id";
    size_t acap = 0;
    Radlads__AttemptInfo *atts = NULL;
    st = store_stmt(d->db, asql);
    sqlite3_bind_int64(st, 1, req->job_id);
    while (sqlite3_step(st) == SQLITE_ROW && grow(&atts, &acap, r.n_attempts, sizeof *atts) == 0) {
        Radlads__AttemptInfo *a = &atts[r.n_attempts++];
        radlads__attempt_info__init(a);
        a->id = sqlite3_column_int64(st, 0);
        a->stage_idx = sqlite3_column_int(st, 1);
        a->number = sqlite3_column_int(st, 2);
        a->state = col_dup(st, 3);
        a->pool_id = sqlite3_column_int64(st, 4);
        a->started_at_ms = sqlite3_column_int64(st, 5);
        a->finished_at_ms = sqlite3_column_int64(st, 6);
        a->failure_reason = col_dup(st, 7);
        a->resumed_from_checkpoint = sqlite3_column_int64(st, 8);
    }
    sqlite3_reset(st);
    Radlads__AttemptInfo **att_ptrs = calloc(r.n_attempts + 1, sizeof *att_ptrs);
    for (size_t i = 0; att_ptrs && i < r.n_attempts; i++) att_ptrs[i] = &atts[i];
    r.attempts = att_ptrs;
    if (!att_ptrs) r.n_attempts = 0;

    static const char csql[] = "SELECT id, stage_idx, step, tokens, path, sha256, created_at FROM checkpoints "
                               "WHERE job_id = ? AND deleted_at IS NULL ORDER BY id";
    size_t ccap = 0;
    Radlads__CheckpointInfo *cks = NULL;
    st = store_stmt(d->db, csql);
    sqlite3_bind_int64(st, 1, req->job_id);
    while (sqlite3_step(st) == SQLITE_ROW && grow(&cks, &ccap, r.n_checkpoints, sizeof *cks) == 0) {
        Radlads__CheckpointInfo *k = &cks[r.n_checkpoints++];
        radlads__checkpoint_info__init(k);
        k->id = sqlite3_column_int64(st, 0);
        k->stage_idx = sqlite3_column_int(st, 1);
        k->step = sqlite3_column_int64(st, 2);
        k->tokens = sqlite3_column_int64(st, 3);
        k->path = col_dup(st, 4);
        k->sha256 = col_dup(st, 5);
        k->created_at_ms = sqlite3_column_int64(st, 6);
    }
    sqlite3_reset(st);
    Radlads__CheckpointInfo **ck_ptrs = calloc(r.n_checkpoints + 1, sizeof *ck_ptrs);
    for (size_t i = 0; ck_ptrs && i < r.n_checkpoints; i++) ck_ptrs[i] = &cks[i];
    r.checkpoints = ck_ptrs;
    if (!ck_ptrs) r.n_checkpoints = 0;

    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_SHOW_REPLY;
    env.show_reply = &r;
    conn_send(c, &env);

    summary_free_strings(&job);
    for (int i = 0; i < 4; i++) free(strs[i]);
    for (size_t i = 0; i < r.n_stages; i++) {
        free(stages[i].kind);
        free(stages[i].state);
        free(stages[i].output_dir);
    }
    for (size_t i = 0; atts && i < r.n_attempts; i++) {
        free(atts[i].state);
        free(atts[i].failure_reason);
    }
    for (size_t i = 0; cks && i < r.n_checkpoints; i++) {
        free(cks[i].path);
        free(cks[i].sha256);
    }
    free(atts);
    free(att_ptrs);
    free(cks);
    free(ck_ptrs);
}

/* ---- actions ---- */

static const char *action_verb(Radlads__JobAction a)
{
    switch (a) {
    case RADLADS__JOB_ACTION__ACTION_CANCEL: return "cancel";
    case RADLADS__JOB_ACTION__ACTION_HOLD: return "hold";
    case RADLADS__JOB_ACTION__ACTION_RELEASE: return "release";
    case RADLADS__JOB_ACTION__ACTION_RESTART: return "restart";
    case RADLADS__JOB_ACTION__ACTION_DRAIN: return "drain";
    default: return "?";
    }
}

/* A restart of a finished job is a new job with the same spec; the old one stays as it ended. */
static int restart_as_new_job(rl_daemon *d, int64_t old_id, uid_t uid, int64_t *new_id, char *msg, size_t msglen)
{
    static const char sql[] = "SELECT spec_json, priority FROM jobs WHERE id = ?";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, old_id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        return rl_errf(msg, msglen, "job %lld vanished", (long long)old_id);
    }
    char *spec_json = col_dup(st, 0);
    int priority = sqlite3_column_int(st, 1);
    sqlite3_reset(st);
    pending_submit ps = {.uid = uid, .priority = priority};
    char err[1024];
    if (rl_jobspec_parse(&ps.spec, spec_json, strlen(spec_json), NULL, RL_SPEC_CHECK_PATHS, err, sizeof err) < 0) {
        free(spec_json);
        return rl_errf(msg, msglen, "cannot restart job %lld: its spec no longer validates: %s", (long long)old_id, err);
    }
    ps.spec_json = spec_json;
    int rc = insert_job(d, &ps, old_id, new_id);
    rl_jobspec_free(&ps.spec);
    free(spec_json);
    if (rc < 0) return rl_errf(msg, msglen, "store: %s", store_errmsg(d->db));
    return 0;
}

int jobs_act(rl_daemon *d, const jobs_actor *who, Radlads__JobAction action, int64_t id, Radlads__ActionResult *res)
{
    static char msg[512];
    static char state_buf[32];
    msg[0] = 0;
    res->job_id = id;
    res->message = msg;
    res->state = state_buf;
    state_buf[0] = 0;
    static const char sql[] = "SELECT state, owner_uid, owner FROM jobs WHERE id = ?";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        snprintf(msg, sizeof msg, "no job %lld", (long long)id);
        return -RL_E_NOT_FOUND;
    }
    char state[32], owner[64];
    snprintf(state, sizeof state, "%s", sqlite3_column_text(st, 0));
    uid_t owner_uid = (uid_t)sqlite3_column_int64(st, 1);
    snprintf(owner, sizeof owner, "%s", sqlite3_column_text(st, 2));
    sqlite3_reset(st);
    snprintf(state_buf, sizeof state_buf, "%s", state);
    const char *verb = action_verb(action);
    if (!who->admin && who->uid != owner_uid) {
        snprintf(msg, sizeof msg, "job %lld belongs to %s: only its owner or root may %s it", (long long)id, owner, verb);
        return -RL_E_PERMISSION;
    }
    char reason[128];
    snprintf(reason, sizeof reason, "%s by %s", verb, who->name ? who->name : owner_name(who->uid));
    uid_t new_owner = who->uid == (uid_t)-1 ? owner_uid : who->uid;
    const char *to = NULL;
    int stop_pool = 0;
    switch (action) {
    case RADLADS__JOB_ACTION__ACTION_CANCEL:
        if (job_state_terminal(state)) {
            snprintf(msg, sizeof msg, "job %lld is already %s", (long long)id, state);
            return -RL_E_STATE;
        }
        if (!strcmp(state, "CANCELLING")) {
            res->ok = 1;
            return 0;
        }
        if (!strcmp(state, "RUNNING") || !strcmp(state, "RECOVERING")) {
            stop_pool = pools_find_by_job(d, id) != NULL;
            to = stop_pool ? "CANCELLING" : "CANCELLED";
        } else {
            to = "CANCELLED";
        }
        break;
    case RADLADS__JOB_ACTION__ACTION_HOLD:
        if (!strcmp(state, "HELD")) {
            res->ok = 1;
            return 0;
        }
        if (strcmp(state, "QUEUED") && strcmp(state, "INTERRUPTED")) {
            snprintf(msg, sizeof msg, "job %lld is %s: only a QUEUED or INTERRUPTED job can be held", (long long)id, state);
            return -RL_E_STATE;
        }
        to = "HELD";
        break;
    case RADLADS__JOB_ACTION__ACTION_RELEASE:
        if (strcmp(state, "HELD")) {
            snprintf(msg, sizeof msg, "job %lld is %s, not HELD", (long long)id, state);
            return -RL_E_STATE;
        }
        to = "QUEUED";
        break;
    case RADLADS__JOB_ACTION__ACTION_RESTART:
        if (job_state_terminal(state)) {
            int64_t new_id = 0;
            if (store_begin(d->db) < 0) {
                snprintf(msg, sizeof msg, "store busy");
                return -RL_E_INTERNAL;
            }
            if (restart_as_new_job(d, id, new_owner, &new_id, msg, sizeof msg) < 0 || store_commit(d->db) < 0) {
                store_rollback(d->db);
                if (!msg[0]) snprintf(msg, sizeof msg, "store: %s", store_errmsg(d->db));
                return -RL_E_INTERNAL;
            }
            res->ok = 1;
            res->new_job_id = new_id;
            snprintf(msg, sizeof msg, "job %lld was %s; restarted as job %lld", (long long)id, state, (long long)new_id);
            return 0;
        }
        if (!strcmp(state, "INTERRUPTED")) {
            to = "QUEUED";
        } else if (!strcmp(state, "RUNNING") || !strcmp(state, "RECOVERING")) {
            /* The current attempt is stopped; the pool loss handling starts the next one. */
            pool *p = pools_find_by_job(d, id);
            if (p) pools_stop_job(d, id, "restart requested", 1);
            res->ok = 1;
            snprintf(msg, sizeof msg, "job %lld: current attempt stopped; it resumes from its latest checkpoint",
                     (long long)id);
            return 0;
        } else {
            snprintf(msg, sizeof msg, "job %lld is %s: nothing to restart", (long long)id, state);
            return -RL_E_STATE;
        }
        break;
    case RADLADS__JOB_ACTION__ACTION_DRAIN:
        if ((!strcmp(state, "RUNNING") || !strcmp(state, "RECOVERING")) && pools_find_by_job(d, id)) {
            pools_drain_job(d, id);
            res->ok = 1;
            snprintf(msg, sizeof msg, "job %lld: its pool checkpoints and stops; the job is then HELD and `radlads "
                     "release %lld` resumes it from that checkpoint", (long long)id, (long long)id);
            return 0;
        }
        if (strcmp(state, "QUEUED") && strcmp(state, "INTERRUPTED")) {
            snprintf(msg, sizeof msg, "job %lld is %s: only a running or queued job can be drained", (long long)id, state);
            return -RL_E_STATE;
        }
        to = "HELD"; /* nothing is running: draining it just keeps it from starting */
        break;
    default:
        snprintf(msg, sizeof msg, "unknown action %d", action);
        return -RL_E_BAD_REQUEST;
    }
    if (store_begin(d->db) < 0) {
        snprintf(msg, sizeof msg, "store busy");
        return -RL_E_INTERNAL;
    }
    if (job_transition(d->db, id, state, to, reason) < 0 || store_commit(d->db) < 0) {
        store_rollback(d->db);
        snprintf(msg, sizeof msg, "job %lld could not move from %s to %s", (long long)id, state, to);
        return -RL_E_INTERNAL;
    }
    if (stop_pool) pools_stop_job(d, id, reason, 0);
    res->ok = 1;
    snprintf(state_buf, sizeof state_buf, "%s", to);
    return 0;
}

void jobs_handle_action(rl_daemon *d, conn *c, Radlads__ActionRequest *req)
{
    if (req->n_job_ids == 0 || req->n_job_ids > 100000) {
        conn_send_error(c, RL_E_BAD_REQUEST, "give between 1 and 100000 job ids");
        return;
    }
    Radlads__ActionResult *res = calloc(req->n_job_ids, sizeof *res);
    Radlads__ActionResult **ptrs = calloc(req->n_job_ids, sizeof *ptrs);
    char **msgs = calloc(req->n_job_ids * 2, sizeof *msgs);
    if (!res || !ptrs || !msgs) {
        free(res), free(ptrs), free(msgs);
        conn_send_error(c, RL_E_INTERNAL, "out of memory");
        return;
    }
    jobs_actor who = {.uid = c->uid, .admin = c->uid == 0};
    for (size_t i = 0; i < req->n_job_ids; i++) {
        radlads__action_result__init(&res[i]);
        jobs_act(d, &who, req->action, req->job_ids[i], &res[i]);
        /* jobs_act's strings live in static buffers: copy before the next id. */
        msgs[2 * i] = strdup(res[i].message);
        msgs[2 * i + 1] = strdup(res[i].state);
        res[i].message = msgs[2 * i];
        res[i].state = msgs[2 * i + 1];
        ptrs[i] = &res[i];
    }
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    Radlads__ActionReply r = RADLADS__ACTION_REPLY__INIT;
    r.n_results = req->n_job_ids;
    r.results = ptrs;
    env.msg_case = RADLADS__ENVELOPE__MSG_ACTION_REPLY;
    env.action_reply = &r;
    conn_send(c, &env);
    for (size_t i = 0; i < req->n_job_ids * 2; i++) free(msgs[i]);
    free(msgs), free(ptrs), free(res);
    server_after_commit(d);
    sched_run(d);
}

/* ---- events ---- */

void jobs_handle_events(rl_daemon *d, conn *c, Radlads__EventsRequest *req)
{
    if (req->job_id) {
        Radlads__JobSummary j;
        if (load_summary(d, req->job_id, &j) < 0) {
            conn_send_error(c, RL_E_NOT_FOUND, "no job %lld", (long long)req->job_id);
            return;
        }
        summary_free_strings(&j);
    }
    c->follow_job = req->job_id;
    int ended = server_send_events(d, c, req->after_id, req->follow);
    c->follow = req->follow && !ended;
}

/* ---- wait ---- */

typedef struct waiter {
    struct waiter *next;
    conn *c;
    int64_t *ids;
    size_t n;
    uv_timer_t timer;
    int has_timer;
} waiter;

static void waiter_closed(uv_handle_t *h)
{
    waiter *w = h->data;
    free(w->ids);
    free(w);
}

static void waiter_free(rl_daemon *d, waiter *w)
{
    for (waiter **p = &d->waiters; *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    if (w->has_timer) {
        uv_timer_stop(&w->timer);
        uv_close((uv_handle_t *)&w->timer, waiter_closed);
    } else {
        free(w->ids);
        free(w);
    }
}

/* 1 when every job is terminal (reply sent), 0 when still waiting. */
static int waiter_reply(rl_daemon *d, waiter *w, int timed_out)
{
    Radlads__JobSummary *js = calloc(w->n, sizeof *js);
    Radlads__JobSummary **ptrs = calloc(w->n, sizeof *ptrs);
    if (!js || !ptrs) {
        free(js), free(ptrs);
        return 0;
    }
    int all_done = 1;
    size_t n = 0;
    for (size_t i = 0; i < w->n; i++) {
        if (load_summary(d, w->ids[i], &js[n]) < 0) continue;
        if (!job_state_terminal(js[n].state)) all_done = 0;
        ptrs[n] = &js[n];
        n++;
    }
    int send = all_done || timed_out;
    if (send && w->c) {
        Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
        Radlads__WaitReply r = RADLADS__WAIT_REPLY__INIT;
        r.n_jobs = n;
        r.jobs = ptrs;
        r.timed_out = !all_done;
        env.msg_case = RADLADS__ENVELOPE__MSG_WAIT_REPLY;
        env.wait_reply = &r;
        conn_send(w->c, &env);
    }
    for (size_t i = 0; i < n; i++) summary_free_strings(&js[i]);
    free(js), free(ptrs);
    return send;
}

static void waiter_timeout(uv_timer_t *t)
{
    waiter *w = t->data;
    waiter_reply(g_daemon, w, 1);
    waiter_free(g_daemon, w);
}

void jobs_handle_wait(rl_daemon *d, conn *c, Radlads__WaitRequest *req)
{
    if (req->n_job_ids == 0 || req->n_job_ids > 100000) {
        conn_send_error(c, RL_E_BAD_REQUEST, "give between 1 and 100000 job ids");
        return;
    }
    for (size_t i = 0; i < req->n_job_ids; i++) {
        Radlads__JobSummary j;
        if (load_summary(d, req->job_ids[i], &j) < 0) {
            conn_send_error(c, RL_E_NOT_FOUND, "no job %lld", (long long)req->job_ids[i]);
            return;
        }
        summary_free_strings(&j);
    }
    waiter *w = calloc(1, sizeof *w);
    if (!w || !(w->ids = malloc(req->n_job_ids * sizeof *w->ids))) {
        free(w);
        conn_send_error(c, RL_E_INTERNAL, "out of memory");
        return;
    }
    memcpy(w->ids, req->job_ids, req->n_job_ids * sizeof *w->ids);
    w->n = req->n_job_ids;
    w->c = c;
    if (waiter_reply(d, w, 0)) {
        free(w->ids);
        free(w);
        return;
    }
    w->next = d->waiters;
    d->waiters = w;
    if (req->timeout_ms > 0) {
        uv_timer_init(d->loop, &w->timer);
        w->timer.data = w;
        w->has_timer = 1;
        uv_timer_start(&w->timer, waiter_timeout, (uint64_t)req->timeout_ms, 0);
    }
}

void jobs_check_waiters(rl_daemon *d)
{
    for (waiter *w = d->waiters, *next; w; w = next) {
        next = w->next;
        if (waiter_reply(d, w, 0)) {
            waiter_free(d, w);
        }
    }
}

void jobs_drop_conn(rl_daemon *d, conn *c)
{
    for (pending_submit *ps = d->submits; ps; ps = ps->next)
        if (ps->c == c) ps->c = NULL; /* the submit still commits; there is just nobody to tell */
    for (waiter *w = d->waiters, *next; w; w = next) {
        next = w->next;
        if (w->c == c) waiter_free(d, w);
    }
}

/* ---- logs ---- */

void jobs_handle_logs(rl_daemon *d, conn *c, Radlads__LogsRequest *req)
{
    Radlads__JobSummary j;
    if (load_summary(d, req->job_id, &j) < 0) {
        conn_send_error(c, RL_E_NOT_FOUND, "no job %lld", (long long)req->job_id);
        return;
    }
    summary_free_strings(&j);
    /* Newest `limit` lines after after_id (all of them when limit is 0), returned oldest first. */
    static const char sql[] =
        "SELECT * FROM (SELECT l.id, l.time, l.rank, l.level, l.text, COALESCE(a.stage_idx, -1), "
        "COALESCE(l.attempt_id, 0) FROM logs l LEFT JOIN attempts a ON a.id = l.attempt_id "
        "WHERE l.job_id = ?1 AND l.id > ?2 AND (?3 < 0 OR a.stage_idx = ?3) AND (?4 < 0 OR l.rank = ?4) "
        "ORDER BY l.id DESC LIMIT ?5) ORDER BY 1";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, req->job_id);
    sqlite3_bind_int64(st, 2, req->after_id);
    sqlite3_bind_int(st, 3, req->stage_idx);
    sqlite3_bind_int(st, 4, req->rank);
    sqlite3_bind_int(st, 5, req->limit > 0 ? req->limit : 100000);
    size_t cap = 64, n = 0;
    Radlads__LogEntry *rows = malloc(cap * sizeof *rows);
    while (rows && sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            Radlads__LogEntry *nr = realloc(rows, 2 * cap * sizeof *rows);
            if (!nr) break;
            rows = nr, cap *= 2;
        }
        Radlads__LogEntry *e = &rows[n++];
        radlads__log_entry__init(e);
        e->id = sqlite3_column_int64(st, 0);
        e->time_ms = sqlite3_column_int64(st, 1);
        e->rank = sqlite3_column_int(st, 2);
        e->level = col_dup(st, 3);
        e->text = col_dup(st, 4);
        e->stage_idx = sqlite3_column_int(st, 5);
        e->attempt_id = sqlite3_column_int64(st, 6);
    }
    sqlite3_reset(st);
    Radlads__LogEntry **ptrs = calloc(n + 1, sizeof *ptrs);
    for (size_t i = 0; ptrs && i < n; i++) ptrs[i] = &rows[i];
    Radlads__LogsReply r = RADLADS__LOGS_REPLY__INIT;
    r.n_lines = ptrs ? n : 0;
    r.lines = ptrs;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_LOGS_REPLY;
    env.logs_reply = &r;
    conn_send(c, &env);
    for (size_t i = 0; i < n; i++) free(rows[i].level), free(rows[i].text);
    free(rows), free(ptrs);
}

/* ---- daemon status ---- */

void jobs_handle_daemon_status(rl_daemon *d, conn *c)
{
    Radlads__DaemonStatusReply r = RADLADS__DAEMON_STATUS_REPLY__INIT;
    r.version = RL_VERSION;
    r.pid = (int32_t)getpid();
    r.started_at_ms = d->started_at_ms;
    r.db_path = d->db_path;
    r.schema_version = store_schema_version(d->db);
    r.socket_path = d->socket_path;
    r.pools = pools_count(d);
    r.connections = d->n_conns;
    r.max_running = d->max_running;
    r.worker_listen = d->socket_path;
    static const char sql[] = "SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state";
    Radlads__DaemonStatusReply__JobsByStateEntry entries[16], *ptrs[16];
    char *keys[16];
    sqlite3_stmt *st = store_stmt(d->db, sql);
    while (st && r.n_jobs_by_state < 16 && sqlite3_step(st) == SQLITE_ROW) {
        Radlads__DaemonStatusReply__JobsByStateEntry *e = &entries[r.n_jobs_by_state];
        radlads__daemon_status_reply__jobs_by_state_entry__init(e);
        keys[r.n_jobs_by_state] = e->key = col_dup(st, 0);
        e->value = sqlite3_column_int64(st, 1);
        ptrs[r.n_jobs_by_state++] = e;
    }
    if (st) sqlite3_reset(st);
    r.jobs_by_state = ptrs;
    Radlads__Envelope env = RADLADS__ENVELOPE__INIT;
    env.msg_case = RADLADS__ENVELOPE__MSG_DAEMON_STATUS_REPLY;
    env.daemon_status_reply = &r;
    conn_send(c, &env);
    for (size_t i = 0; i < r.n_jobs_by_state; i++) free(keys[i]);
}


