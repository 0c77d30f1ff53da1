/* The SQLite store.  One connection, used only by the loop thread.  WAL + synchronous=FULL: a committed
 * transaction (an acknowledged submit, a state change) survives a crash or power loss. */
#include "daemon.h"
#include "sql_migrations.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STMT_CACHE 96

struct store {
    sqlite3 *db;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    int n_cache;
};

int store_latest_schema(void)
{
    return (int)rl_sql_migrations_count;
}

static int exec(store *s, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        rl_errf(err, errlen, "%s", msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int pragma_int(store *s, const char *sql)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int store_schema_version(store *s)
{
    return pragma_int(s, "PRAGMA user_version");
}

/* Migrations NNN_name.sql run in order, each in one transaction together with its user_version bump. */
static int migrate(store *s, const char *path, char *err, size_t errlen)
{
    int have = store_schema_version(s);
    int want = store_latest_schema();
    if (have < 0) return rl_errf(err, errlen, "%s: cannot read the schema version: %s", path, sqlite3_errmsg(s->db));
    if (have > want)
        return rl_errf(err, errlen,
                       "%s has schema version %d but this radladsd (%s) knows only up to %d: it was written by "
                       "a newer radladsd; run that version, or point --db at another file",
                       path, have, RL_VERSION, want);
    for (int v = have; v < want; v++) {
        const struct rl_embedded_file *m = &rl_sql_migrations[v];
        char e[512], bump[64];
        if (exec(s, "BEGIN IMMEDIATE", e, sizeof e) < 0)
            return rl_errf(err, errlen, "%s: migration %s: %s", path, m->name, e);
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d", v + 1);
        if (exec(s, (const char *)m->data, e, sizeof e) < 0 || exec(s, bump, e, sizeof e) < 0) {
            exec(s, "ROLLBACK", NULL, 0);
            return rl_errf(err, errlen, "%s: migration %s failed: %s", path, m->name, e);
        }
        if (exec(s, "COMMIT", e, sizeof e) < 0)
            return rl_errf(err, errlen, "%s: migration %s: commit: %s", path, m->name, e);
        log_info("store: applied migration %s", m->name);
    }
    return 0;
}

int store_open(store **out, const char *path, char *err, size_t errlen)
{
    store *s = calloc(1, sizeof *s);
    if (!s) return rl_errf(err, errlen, "out of memory");
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rl_errf(err, errlen, "cannot open database %s: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        store_close(s);
        return -1;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 5000);
    char e[512];
    if (exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;", e, sizeof e) < 0) {
        rl_errf(err, errlen, "%s: %s (is it a SQLite database?)", path, e);
        store_close(s);
        return -1;
    }
    /* quick_check: catch a damaged file at start instead of in the middle of a job. */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK) {
        rl_errf(err, errlen, "%s: %s (is it a SQLite database?)", path, sqlite3_errmsg(s->db));
        store_close(s);
        return -1;
    }
    int ok = sqlite3_step(st) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(st, 0), "ok");
    if (!ok) {
        const unsigned char *why = sqlite3_column_text(st, 0);
        rl_errf(err, errlen, "%s failed PRAGMA quick_check: %s; restore a backup or move the file away",
                path, why ? (const char *)why : sqlite3_errmsg(s->db));
        sqlite3_finalize(st);
        store_close(s);
        return -1;
    }
    sqlite3_finalize(st);
    if (migrate(s, path, err, errlen) < 0) {
        store_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void store_close(store *s)
{
    if (!s) return;
    for (int i = 0; i < s->n_cache; i++) sqlite3_finalize(s->cache[i].st);
    if (s->db) sqlite3_close(s->db);
    free(s);
}

int store_begin(store *s)
{
    char e[256];
    if (exec(s, "BEGIN IMMEDIATE", e, sizeof e) < 0) {
        log_error("store: BEGIN IMMEDIATE: %s", e);
        return -1;
    }
    return 0;
}

int store_commit(store *s)
{
    char e[256];
    if (exec(s, "COMMIT", e, sizeof e) < 0) {
        log_error("store: COMMIT: %s", e);
        store_rollback(s);
        return -1;
    }
    return 0;
}

void store_rollback(store *s)
{
    if (!sqlite3_get_autocommit(s->db)) exec(s, "ROLLBACK", NULL, 0);
}

sqlite3_stmt *store_stmt(store *s, const char *sql)
{
    for (int i = 0; i < s->n_cache; i++)
        if (s->cache[i].sql == sql) {
            sqlite3_reset(s->cache[i].st);
            sqlite3_clear_bindings(s->cache[i].st);
            return s->cache[i].st;
        }
    sqlite3_stmt *st;
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        log_error("store: prepare failed: %s: %s", sqlite3_errmsg(s->db), sql);
        return NULL;
    }
    if (s->n_cache < STMT_CACHE) {
        s->cache[s->n_cache].sql = sql;
        s->cache[s->n_cache].st = st;
        s->n_cache++;
    } else {
        log_error("store: statement cache full; raise STMT_CACHE");
    }
    return st;
}

int store_exec_stmt(store *s, sqlite3_stmt *st)
{
    if (!st) return -1;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        log_error("store: %s: %s", sqlite3_errmsg(s->db), sqlite3_sql(st));
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

const char *store_errmsg(store *s)
{
    return sqlite3_errmsg(s->db);
}

int64_t store_last_rowid(store *s)
{
    return sqlite3_last_insert_rowid(s->db);
}

int store_changes(store *s)
{
    return sqlite3_changes(s->db);
}

int store_event(store *s, int64_t job_id, const char *kind, int stage_idx, const char *from, const char *to,
                const char *reason)
{
    static const char sql[] = "INSERT INTO events(time, job_id, kind, stage_idx, from_state, to_state, reason) "
                              "VALUES (?,?,?,?,?,?,?)";
    sqlite3_stmt *st = store_stmt(s, sql);
    if (!st) return -1;
    sqlite3_bind_int64(st, 1, now_ms());
    if (job_id > 0) sqlite3_bind_int64(st, 2, job_id);
    sqlite3_bind_text(st, 3, kind, -1, SQLITE_STATIC);
    if (stage_idx >= 0) sqlite3_bind_int(st, 4, stage_idx);
    if (from) sqlite3_bind_text(st, 5, from, -1, SQLITE_TRANSIENT);
    if (to) sqlite3_bind_text(st, 6, to, -1, SQLITE_TRANSIENT);
    if (reason) sqlite3_bind_text(st, 7, reason, -1, SQLITE_TRANSIENT);
    return store_exec_stmt(s, st);
}
