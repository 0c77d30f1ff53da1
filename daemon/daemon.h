/* radladsd internals: one libuv loop owns the store, the connections, the pool registry and the scheduler.
 *
 *   main.c    options, state dir, lock, daemonize, signals
 *   store.c   SQLite: pragmas, migrations, every query (one writer: the loop thread)
 *   jobs.c    the job/stage/attempt state machine and the CLI requests that act on it
 *   sched.c   which job runs next on which pool; the launcher seam
 *   pools.c   pool (worker rank 0) messages: registration, progress, checkpoints, completion
 *   server.c  sockets, framing, handshake, dispatch, event fan-out, waiters
 *   log.c     the daemon log
 *   http*.c, api.c, sse.c, prom.c   the dashboard, JSON API, SSE and /metrics over HTTP (map in http.h) */
#ifndef RL_DAEMON_H
#define RL_DAEMON_H

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "proto.h"
#include "jobspec.h"

#define RL_VERSION "0.1.0"

/* ---- log.c ---- */
void log_open(const char *path, int also_stderr);
void log_close(void);
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_info(...) log_msg("info", __VA_ARGS__)
#define log_warn(...) log_msg("warn", __VA_ARGS__)
#define log_error(...) log_msg("error", __VA_ARGS__)

int64_t now_ms(void); /* wall clock, ms since the epoch */

/* ---- store.c ---- */
typedef struct store store;
typedef struct sqlite3_stmt sqlite3_stmt;

int store_open(store **out, const char *path, char *err, size_t errlen);
void store_close(store *s);
int store_schema_version(store *s);
int store_latest_schema(void);
/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. Returns 0 or -1 (logged). */
int store_begin(store *s);
int store_commit(store *s);
void store_rollback(store *s);
/* A cached prepared statement for a static SQL string, reset and with bindings cleared. */
sqlite3_stmt *store_stmt(store *s, const char *sql);
/* Runs a statement with no result rows; 0 or -1. */
int store_exec_stmt(store *s, sqlite3_stmt *st);
const char *store_errmsg(store *s);
int64_t store_last_rowid(store *s);
int store_changes(store *s);

/* Appends an event row (kind: job|stage|attempt|pool|checkpoint|daemon). Inside a transaction. */
int store_event(store *s, int64_t job_id, const char *kind, int stage_idx, const char *from, const char *to,
                const char *reason);

/* ---- request counters for /metrics (prom.c renders them) ---- */
#define RL_HIST_BUCKETS 10
#define RL_HTTP_ROUTES 16
extern const double rl_hist_bounds_s[RL_HIST_BUCKETS];
typedef struct rl_histogram {
    uint64_t count;
    double sum_s;
    uint64_t buckets[RL_HIST_BUCKETS]; /* not cumulative: rendering accumulates */
} rl_histogram;
void rl_histogram_observe(rl_histogram *h, double seconds);
typedef struct rl_stats {
    uint64_t http_requests[RL_HTTP_ROUTES][6]; /* [route][status / 100] */
    rl_histogram http_duration[RL_HTTP_ROUTES];
    uint64_t http_connections_total, http_rejected_total;
    uint64_t socket_requests[2];               /* [0] CLI, [1] pool messages */
    rl_histogram socket_duration[2];
} rl_stats;

/* ---- connections (server.c) ---- */
typedef struct conn conn;
typedef struct pool pool;

typedef struct rl_daemon {
    uv_loop_t *loop;
    store *db;
    char *state_dir, *db_path, *socket_path, *log_path, *token_path;
    char token[65];
    char *group;               /* --group: socket 0660 with this group */
    int max_running;           /* concurrent RUNNING/RECOVERING jobs; 0 = unlimited */
    int on_interrupted;        /* 0 requeue, 1 hold, 2 fail */
    int heartbeat_ms, heartbeat_timeout_ms, hang_timeout_ms, cancel_timeout_ms;
    int reattach_grace_ms;     /* after a restart, how long RUNNING attempts wait for their pool */
    int reconnect_grace_ms;    /* a busy pool whose connection drops keeps its attempt this long */
    int64_t started_at_ms;
    uv_pipe_t listener;
    uv_tcp_t tcp_listener;     /* --worker-listen tcp:HOST:PORT: pools on other hosts (token required) */
    const char *worker_listen; /* NULL = Unix socket only */
    char worker_addr[300];     /* where pools on other hosts connect: tcp:IP:PORT once listening, else "" */
    uv_check_t flush_check;    /* group commit of submits at the end of each loop iteration */
    uv_timer_t tick;           /* heartbeat and hang checks */
    uv_signal_t sigterm, sigint;
    conn *conns;               /* all open connections */
    int n_conns;
    pool *pools;               /* connected pools */
    struct pending_submit *submits, **submits_tail;
    struct waiter *waiters;
    int stopping;
    const char *http_listen;   /* --http ADDR:PORT or "off"; NULL = the default address */
    int http_timeout_ms;       /* a request (or an idle keep-alive connection) gets this long */
    int http_max_conns;
    int sse_heartbeat_ms;
    struct http_server *http;  /* NULL when HTTP is off */
    rl_stats stats;
} rl_daemon;

extern rl_daemon *g_daemon;

struct conn {
    union {
        uv_pipe_t pipe;        /* the Unix socket: CLI and local pools */
        uv_tcp_t tcp;          /* --worker-listen: pools only */
        uv_stream_t stream;
        uv_handle_t handle;
    } h;
    int over_tcp;
    rl_frame_reader reader;
    conn *next;
    int hello_done;
    Radlads__Role role;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    int closing;
    int follow;                /* streaming events */
    int64_t follow_job;        /* 0 = all */
    int64_t follow_after;      /* last event id sent */
    pool *pool;                /* ROLE_POOL */
};

struct pool {
    int64_t id;
    char name[64], device[16], host[128];
    int ranks;
    conn *c;
    int64_t attempt_id;        /* 0 = idle */
    int64_t job_id;
    int stage_idx;
    int64_t last_seen_ms, last_progress_ms;
    int64_t stop_sent_ms;      /* a CONTROL_STOP is outstanding */
    int restart_requested;     /* ...because the user restarted the job: not a failure */
    int drain_requested;       /* checkpoint, stop, and hold the job (not a failure) */
    int64_t launch_id;         /* started by our launcher (retired when idle); 0 = external */
    int64_t orphan_attempt;    /* re-registered still running an attempt we no longer own: stopped, not reused */
    int64_t disconnected_ms;   /* c == NULL: its connection dropped mid-attempt; it may reconnect until the grace */
    int64_t last_seq;          /* highest Progress/LogLine seq stored from it */
    pool *next;
};

/* Writes a small state file (token, worker.addr, http.addr) whole: a temporary file, fsync, rename, so a
 * reader sees the old content or the new, never a part.  Returns 0 or -1 with err set. */
int state_file_write(const char *path, const void *data, size_t n, mode_t mode, char *err, size_t errlen);
/* The TCP worker listener (--worker-listen) and DIR/worker.addr; before server_listen. */
int server_listen_workers(rl_daemon *d, char *err, size_t errlen);
/* The Unix socket: opened last at start, so a client that can connect finds the daemon fully up. */
int server_listen(rl_daemon *d, char *err, size_t errlen);
void server_close_all(rl_daemon *d);
void conn_send(conn *c, const Radlads__Envelope *env);
void conn_send_error(conn *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void conn_close(conn *c, const char *reason);
/* After any committed write: stream new events to followers and answer waiters whose jobs are done. */
void server_after_commit(rl_daemon *d);
/* Sends events after `after` (filtered by c->follow_job); returns 1 when the followed job has ended. */
int server_send_events(rl_daemon *d, conn *c, int64_t after, int follow);

/* ---- http.c, sse.c (the rest of the HTTP side is private: http.h) ---- */
/* Listens on d->http_listen; 0, or -1 with err filled.  A busy default port only turns HTTP off. */
int http_start(rl_daemon *d, char *err, size_t errlen);
void http_stop(rl_daemon *d);
int http_connections(rl_daemon *d);
/* Streams events newer than each stream's last id; called from server_after_commit. */
void sse_fanout(rl_daemon *d);
void sse_heartbeat(rl_daemon *d);
/* Pushes one training progress report to the SSE streams that follow its job (or all jobs). */
void sse_progress(rl_daemon *d, int64_t job_id, int stage_idx, const Radlads__Progress *m);

/* ---- jobs.c ---- */
int job_state_terminal(const char *state);
/* Moves a job between states with an event; inside a transaction.  -1 if the move is illegal. */
int job_transition(store *s, int64_t job_id, const char *from, const char *to, const char *reason);
void jobs_handle_submit(rl_daemon *d, conn *c, Radlads__SubmitRequest *req);
void jobs_flush_submits(rl_daemon *d);
void jobs_handle_status(rl_daemon *d, conn *c, Radlads__StatusRequest *req);
void jobs_handle_show(rl_daemon *d, conn *c, Radlads__ShowRequest *req);
void jobs_handle_action(rl_daemon *d, conn *c, Radlads__ActionRequest *req);
/* Who asks for an action: a CLI peer (its uid; root is admin) or an HTTP client holding the daemon's
 * token (admin, uid (uid_t)-1: a restarted job keeps its owner). */
typedef struct jobs_actor {
    uid_t uid;
    int admin;
    const char *name; /* for the event reason; NULL = the uid's user name */
} jobs_actor;
/* Cancel / hold / release / restart one job, the one code path for the CLI and HTTP.  Returns 0 or
 * -RL_E_NOT_FOUND, -RL_E_PERMISSION, -RL_E_STATE, -RL_E_INTERNAL; res->message and res->state point into
 * static buffers valid until the next call.  The caller runs server_after_commit and sched_run. */
int jobs_act(rl_daemon *d, const jobs_actor *who, Radlads__JobAction action, int64_t id, Radlads__ActionResult *res);
void jobs_handle_events(rl_daemon *d, conn *c, Radlads__EventsRequest *req);
void jobs_handle_wait(rl_daemon *d, conn *c, Radlads__WaitRequest *req);
void jobs_handle_daemon_status(rl_daemon *d, conn *c);
void jobs_handle_logs(rl_daemon *d, conn *c, Radlads__LogsRequest *req);
/* Fills a JobSummary from the current row of a statement selecting JOB_SUMMARY_COLUMNS. */

void jobs_drop_conn(rl_daemon *d, conn *c);
void jobs_check_waiters(rl_daemon *d);

/* ---- sched.c ---- */
/* The launcher seam: how a runnable job gets a pool when none idle matches.  The local mpirun and Slurm
 * launchers implement it (worker-pools issue); with none registered, jobs wait for pools to register. */
typedef struct sched_need {
    int64_t job_id;
    int ranks;
    const char *device;
    const char *pool_name;
} sched_need;
typedef struct sched_launcher {
    const char *name;
    /* Start a pool that will connect and register; 0 = started, -1 = cannot (reason logged). */
    int (*launch)(rl_daemon *d, const sched_need *need, void *ctx);
    void *ctx;
} sched_launcher;
void sched_set_launcher(const sched_launcher *l);
/* Assigns runnable stages to idle pools, by priority then age; call after anything that may free a pool
 * or make a job runnable. */
void sched_run(rl_daemon *d);

/* ---- reattach.c ---- */
/* At start: attempts whose ranks are gone are LOST and their jobs INTERRUPTED (then --on-interrupted);
 * attempts whose ranks may be alive wait reattach_grace_ms for their pool to register again. */
int jobs_reconcile_at_start(rl_daemon *d);
int reattach_pool(rl_daemon *d, pool *p, int64_t attempt_id);
int reattach_pending(void);
void reattach_tick(rl_daemon *d);
void reattach_free(void);

/* ---- launcher.c ---- */
/* kind: "local" (mpirun), "slurm" (sbatch + srun) or "none"; worker = the radlads-worker path or NULL to look
 * next to radladsd; slurm_args: extra sbatch options (split on blanks), NULL = none. */
int launcher_init(rl_daemon *d, const char *kind, const char *worker, const char *slurm_args, char *err,
                  size_t errlen);
void launcher_pool_registered(rl_daemon *d, pool *p, int64_t launch_id, const int32_t *rank_pids, size_t n);
/* Stops a launched pool's whole process tree (SIGTERM, SIGKILL after a grace period). */
void launcher_retire(rl_daemon *d, int64_t launch_id, const char *why);
/* 1 while a launch's processes (or its Slurm job) may still run; 0 when they ended or the id is unknown. */
int launcher_alive(int64_t launch_id);
void launcher_tick(rl_daemon *d);
void launcher_close(rl_daemon *d);

/* ---- pools.c ---- */
void pools_handle(rl_daemon *d, conn *c, Radlads__Envelope *env);
/* A launched pool's processes ended: a pool of it waiting to reconnect will not; its attempt is lost now. */
void pools_launch_ended(rl_daemon *d, int64_t launch_id);
void pools_conn_lost(rl_daemon *d, conn *c);
void pools_tick(rl_daemon *d);
pool *pools_find_by_job(rl_daemon *d, int64_t job_id);
/* Ends the running attempt of a job (cancel, restart): tells its pool to stop. */
void pools_stop_job(rl_daemon *d, int64_t job_id, const char *why, int restart);
int pools_count(rl_daemon *d);
void pools_handle_list(rl_daemon *d, conn *c);
/* Asks the pool running a job to checkpoint and stop; the job is then HELD. */
void pools_drain_job(rl_daemon *d, int64_t job_id);

#endif
