/* The local launcher: when a runnable job finds no idle pool that fits, radladsd starts one itself:
 *
 *   mpirun [--allow-run-as-root] --oversubscribe --bind-to none -np RANKS \
 *       radlads-worker pool --connect unix:SOCKET --token-file TOKEN --launch-id ID --device D [--name P]
 *
 * detached in its own session (so the daemon's death does not take it down, and the whole tree can be
 * signalled as one process group), output to STATE/pools/launch-ID.log.  Rank 0 registers with the
 * launch id; from then on it is an ordinary pool.  A launched pool that goes idle with nothing to run is
 * retired: SIGTERM to its process group and to every rank pid it reported, SIGKILL after a grace period.
 * A job whose pool keeps dying before it registers is held after LAUNCH_MAX_FAILURES attempts.
 *
 * The Slurm launcher (--launcher slurm) does the same through the batch system: it writes
 * STATE/pools/launch-ID.sbatch (a script whose one command is `srun --kill-on-bad-exit=1 radlads-worker pool
 * …`), submits it with `sbatch --parsable --job-name radlads-pool-ID --ntasks RANKS --output LOG [--gpus-per-task
 * 1] [--slurm-args …]`, and follows the Slurm job with `squeue` every few seconds: a job still PENDING waits
 * (the registration timeout counts from RUNNING), a job that ends before its pool registered is a failed
 * launch (its state and log named), and retiring it is `scancel` (then `scancel --full -s KILL` after the
 * grace).  Ranks may run on other hosts: the pool connects to --worker-listen's address when the daemon has
 * one, else to the Unix socket (same host); the worker binary and the token file must be at the same paths
 * there.  All Slurm commands run asynchronously: the loop never waits for the controller.
 *
 * Every launch is a row of the store's launches table until it ends, so a daemon that restarts (after a
 * crash, or with another --launcher) adopts the launches still alive: their pools re-attach and are retired
 * when idle like any other, one that never comes back is retired after the reattach grace, and one that dies
 * is noticed (an adopted mpirun is not our child: its pid is polled). */
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LAUNCH_MAX_FAILURES 3
#define LAUNCH_REGISTER_TIMEOUT_MS 120000 /* mpirun + MPI_Init + model load on a busy machine */
#define RETIRE_GRACE_MS 5000
#define LAUNCH_REATTACH_SLACK_MS 10000 /* an adopted pool gets the reattach grace and this to register again */

#define SLURM_POLL_MS 2000

typedef struct launch {
    int64_t id, job_id, pool_id;
    int ranks;
    char device[16], pool_name[64];
    uv_process_t proc;         /* local: mpirun */
    pid_t pid;
    int running;               /* local: the process handle is alive; slurm: the Slurm job has not ended */
    int registered;
    int64_t started_ms, retire_ms;
    pid_t rank_pids[64];
    int n_rank_pids;
    /* slurm */
    int slurm;
    char slurm_id[32];         /* "" until sbatch answered */
    char slurm_state[96];      /* last squeue "STATE REASON" */
    int64_t next_poll_ms;
    int refs;                  /* Slurm commands in flight that point at this launch */
    int killed;                /* scancel -s KILL sent */
    int adopted;               /* started by an earlier daemon: no process handle (local: the pid is polled) */
    struct launch *next;
} launch;

static struct {
    int slurm;
    char **slurm_args;         /* extra sbatch options, NULL-terminated */
    char *worker;
    char log_dir[PATH_MAX];
    int64_t next_id;
    launch *all;
    struct {
        int64_t job_id;
        int count;
    } failures[64];
} L;

static int failures_of(int64_t job_id, int add)
{
    for (int i = 0; i < 64; i++)
        if (L.failures[i].job_id == job_id) return L.failures[i].count += add;
    if (!add) return 0;
    for (int i = 0; i < 64; i++)
        if (!L.failures[i].job_id || i == 63) {
            L.failures[i].job_id = job_id;
            return L.failures[i].count = add;
        }
    return add;
}

static void launch_free(launch *l)
{
    for (launch **pp = &L.all; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    free(l);
}

static void launch_closed(uv_handle_t *h)
{
    launch_free(h->data);
}

/* The launches table (sql/002_launches.sql): one row per launch while it may run. */
static void launch_record(rl_daemon *d, const launch *l)
{
    static const char sql[] = "INSERT OR REPLACE INTO launches(id, job_id, kind, pid, slurm_id, ranks, device, "
                              "started_at) VALUES (?1, ?2, ?3, NULLIF(?4, 0), NULLIF(?5, ''), ?6, ?7, ?8)";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    if (!st) return;
    sqlite3_bind_int64(st, 1, l->id);
    sqlite3_bind_int64(st, 2, l->job_id);
    sqlite3_bind_text(st, 3, l->slurm ? "slurm" : "local", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, (int)l->pid);
    sqlite3_bind_text(st, 5, l->slurm_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 6, l->ranks);
    sqlite3_bind_text(st, 7, l->device, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, now_ms());
    if (store_exec_stmt(d->db, st) < 0) log_warn("launcher: could not record launch %lld", (long long)l->id);
}

static void launch_record_end(rl_daemon *d, int64_t id)
{
    static const char sql[] = "UPDATE launches SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    if (!st) return;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms());
    store_exec_stmt(d->db, st);
}

/* A process that exists and is not a zombie (an adopted mpirun is reaped by whoever inherited it). */
static int pid_alive(pid_t pid)
{
    if (pid <= 1 || (kill(pid, 0) < 0 && errno != EPERM)) return 0;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *paren = strrchr(buf, ')');
    return !(paren && paren[1] == ' ' && paren[2] == 'Z');
}

/* The launch never registered a pool: hold the job after repeated failures so it does not loop. */
static void launch_failed(rl_daemon *d, launch *l, const char *why)
{
    int n = failures_of(l->job_id, 1);
    log_warn("launcher: launch %lld for job %lld failed: %s (%d of %d; log %s/launch-%lld.log)", (long long)l->id,
             (long long)l->job_id, why, n, LAUNCH_MAX_FAILURES, L.log_dir, (long long)l->id);
    if (n < LAUNCH_MAX_FAILURES || d->stopping) return;
    failures_of(l->job_id, -n); /* a release starts counting again */
    static const char sql[] = "SELECT state FROM jobs WHERE id = ?";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    sqlite3_bind_int64(st, 1, l->job_id);
    char state[32] = "";
    if (sqlite3_step(st) == SQLITE_ROW) snprintf(state, sizeof state, "%s", sqlite3_column_text(st, 0));
    sqlite3_reset(st);
    char reason[PATH_MAX + 200];
    snprintf(reason, sizeof reason, "its worker pool failed to start %d times (%s; see %s/launch-%lld.log); "
             "fix the cause and release the job", LAUNCH_MAX_FAILURES, why, L.log_dir, (long long)l->id);
    const char *to = !strcmp(state, "QUEUED") ? "HELD" : (!strcmp(state, "RECOVERING") || !strcmp(state, "RUNNING")) ? "FAILED" : NULL;
    if (!to || store_begin(d->db) < 0) return;
    if (job_transition(d->db, l->job_id, state, to, reason) < 0 || store_commit(d->db) < 0) store_rollback(d->db);
    server_after_commit(d);
}

static void on_exit_cb(uv_process_t *proc, int64_t status, int signo)
{
    launch *l = proc->data;
    rl_daemon *d = g_daemon;
    l->running = 0;
    log_info("launcher: launch %lld (pid %d) exited with status %lld%s%s", (long long)l->id, (int)l->pid,
             (long long)status, signo ? ", signal " : "", signo ? strsignal(signo) : "");
    if (!l->registered && !l->retire_ms) {
        char why[96];
        snprintf(why, sizeof why, "mpirun exited with status %lld%s%s before the pool registered", (long long)status,
                 signo ? " by signal " : "", signo ? strsignal(signo) : "");
        launch_failed(d, l, why);
    }
    int64_t id = l->id;
    if (!d->stopping) launch_record_end(d, id);
    uv_close((uv_handle_t *)proc, launch_closed);
    if (!d->stopping) {
        pools_launch_ended(d, id);
        sched_run(d);
    }
}

/* A new launch for `need`, or NULL when none should start now (one is on its way, --max-running, or the job
 * has used up its failed launches). */
static launch *new_launch(rl_daemon *d, const sched_need *need)
{
    if (d->stopping) return NULL;
    int active = 0;
    for (launch *l = L.all; l; l = l->next) {
        if (!l->running) continue;
        if (l->job_id == need->job_id && (!l->registered || l->pool_id)) return NULL; /* already on its way */
        active++;
    }
    /* Idle launched pools are retired at once, so each live launch serves a job: respect --max-running. */
    if (d->max_running > 0 && active >= d->max_running) return NULL;
    if (failures_of(need->job_id, 0) >= LAUNCH_MAX_FAILURES) return NULL;
    launch *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    /* Launch ids must not collide with pools still alive from an earlier daemon: prefix with our start time. */
    l->id = (d->started_at_ms % 100000000) * 1000 + ++L.next_id;
    l->job_id = need->job_id;
    l->ranks = need->ranks;
    snprintf(l->device, sizeof l->device, "%s", need->device);
    snprintf(l->pool_name, sizeof l->pool_name, "%s", need->pool_name ? need->pool_name : "");
    return l;
}

/* The worker's command line after the program name (shared by both launchers); returns the count. */
static int worker_args(rl_daemon *d, launch *l, const char *connect, char *lid, size_t lidlen, char **args)
{
    snprintf(lid, lidlen, "%lld", (long long)l->id);
    int n = 0;
    args[n++] = "pool";
    args[n++] = "--connect";
    args[n++] = (char *)connect;
    args[n++] = "--token-file";
    args[n++] = d->token_path;
    args[n++] = "--launch-id";
    args[n++] = lid;
    args[n++] = "--device";
    args[n++] = l->device;
    if (l->pool_name[0]) {
        args[n++] = "--name";
        args[n++] = l->pool_name;
    }
    args[n] = NULL;
    return n;
}

static void launch_log_path(launch *l, char *out, size_t len)
{
    snprintf(out, len, "%s/launch-%lld.log", L.log_dir, (long long)l->id);
}

static int local_launch(rl_daemon *d, const sched_need *need, void *ctx)
{
    (void)ctx;
    launch *l = new_launch(d, need);
    if (!l) return d->stopping ? -1 : 0;
    char np[16], lid[32], connect[PATH_MAX + 8], logpath[PATH_MAX + 64];
    snprintf(np, sizeof np, "%d", l->ranks);
    snprintf(connect, sizeof connect, "unix:%s", d->socket_path);
    launch_log_path(l, logpath, sizeof logpath);
    char *args[32];
    int n = 0;
    args[n++] = "mpirun";
    if (geteuid() == 0) args[n++] = "--allow-run-as-root";
    args[n++] = "--oversubscribe";
    args[n++] = "--bind-to";
    args[n++] = "none";
    args[n++] = "-np";
    args[n++] = np;
    args[n++] = L.worker;
    worker_args(d, l, connect, lid, sizeof lid, args + n);

    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        log_error("launcher: cannot open %s: %s", logpath, strerror(errno));
        free(l);
        return -1;
    }
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE}, {.flags = UV_INHERIT_FD, .data.fd = fd},
                                     {.flags = UV_INHERIT_FD, .data.fd = fd}};
    uv_process_options_t opt = {.exit_cb = on_exit_cb, .file = "mpirun", .args = args,
                                .flags = UV_PROCESS_DETACHED, .stdio_count = 3, .stdio = stdio};
    l->proc.data = l;
    int rc = uv_spawn(d->loop, &l->proc, &opt);
    close(fd);
    if (rc < 0) {
        log_error("launcher: cannot start mpirun: %s", uv_strerror(rc));
        launch_failed(d, l, uv_strerror(rc));
        uv_close((uv_handle_t *)&l->proc, launch_closed); /* a failed spawn still needs its close; frees l */
        return -1;
    }
    l->pid = l->proc.pid;
    l->running = 1;
    l->started_ms = now_ms();
    l->next = L.all;
    L.all = l;
    launch_record(d, l);
    log_info("launcher: launch %lld for job %lld: mpirun -np %d %s (pid %d, log %s)", (long long)l->id,
             (long long)l->job_id, l->ranks, L.worker, (int)l->pid, logpath);
    return 0;
}

static const sched_launcher local_launcher = {.name = "local", .launch = local_launch};

/* ---- Slurm ------------------------------------------------------------------------------------------- */

/* A short command (sbatch, squeue, scancel) run without blocking the loop; its stdout and stderr are
 * collected (the first 4 KiB) and handed to `done` once it has exited and both pipes are drained. */
typedef void (*cmd_done_fn)(rl_daemon *d, launch *l, int64_t status, const char *out);

typedef struct cmd {
    uv_process_t proc;
    uv_pipe_t pipes[2];
    char out[4096];
    size_t len;
    int64_t status;
    int pending;      /* exit + two EOFs still to come */
    int open_handles; /* handles not yet closed */
    launch *l;
    cmd_done_fn done;
    struct cmd *next;
} cmd;

static cmd *g_cmds;

static void cmd_closed(uv_handle_t *h)
{
    cmd *c = h->data;
    if (--c->open_handles) return;
    for (cmd **pp = &g_cmds; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    free(c);
}

static void cmd_close(cmd *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->proc)) uv_close((uv_handle_t *)&c->proc, cmd_closed);
    for (int i = 0; i < 2; i++)
        if (!uv_is_closing((uv_handle_t *)&c->pipes[i])) uv_close((uv_handle_t *)&c->pipes[i], cmd_closed);
}

static void cmd_step(cmd *c)
{
    if (--c->pending) return;
    c->out[c->len] = 0;
    launch *l = c->l; /* NULL once the daemon is closing */
    if (l) {
        l->refs--;
        if (c->done && g_daemon && !g_daemon->stopping) c->done(g_daemon, l, c->status, c->out);
        if (!l->running && !l->refs && l->slurm) launch_free(l);
    }
    cmd_close(c);
}

static void cmd_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    cmd *c = h->data;
    size_t room = sizeof c->out - 1 - c->len;
    static char sink[1024]; /* past the first 4 KiB: read and dropped */
    *buf = room ? uv_buf_init(c->out + c->len, (unsigned)room) : uv_buf_init(sink, sizeof sink);
}

static void cmd_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    cmd *c = s->data;
    if (n > 0 && buf->base == c->out + c->len) c->len += (size_t)n;
    if (n < 0) {
        uv_read_stop(s);
        cmd_step(c);
    }
}

static void cmd_exit(uv_process_t *p, int64_t status, int signo)
{
    cmd *c = p->data;
    c->status = signo ? 128 + signo : status;
    cmd_step(c);
}

/* Runs argv[0] (found on PATH) for launch l; 0 = started (done will be called), <0 = could not start. */
static int cmd_run(rl_daemon *d, launch *l, char **argv, cmd_done_fn done)
{
    cmd *c = calloc(1, sizeof *c);
    if (!c) return UV_ENOMEM;
    c->l = l;
    c->done = done;
    c->proc.data = c;
    for (int i = 0; i < 2; i++) {
        uv_pipe_init(d->loop, &c->pipes[i], 0);
        c->pipes[i].data = c;
    }
    c->open_handles = 3;
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->pipes[0]},
                                     {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->pipes[1]}};
    uv_process_options_t opt = {.exit_cb = cmd_exit, .file = argv[0], .args = argv, .stdio_count = 3, .stdio = stdio};
    int rc = uv_spawn(d->loop, &c->proc, &opt);
    c->next = g_cmds;
    g_cmds = c;
    if (rc < 0) {
        cmd_close(c); /* frees c once the handles have closed */
        return rc;
    }
    c->pending = 3;
    l->refs++;
    for (int i = 0; i < 2; i++) uv_read_start((uv_stream_t *)&c->pipes[i], cmd_alloc, cmd_read);
    return 0;
}

/* The first line of a command's output, for messages. */
static const char *first_line(const char *out, char *buf, size_t len)
{
    while (*out == ' ' || *out == '\n') out++;
    size_t n = strcspn(out, "\n");
    if (n >= len) n = len - 1;
    memcpy(buf, out, n);
    buf[n] = 0;
    return buf[0] ? buf : "(no output)";
}

static void slurm_cancel(rl_daemon *d, launch *l, int kill_now)
{
    char *term[] = {"scancel", l->slurm_id, NULL};                            /* SIGTERM, KillWait, SIGKILL */
    char *kill9[] = {"scancel", "--full", "-s", "KILL", l->slurm_id, NULL}; /* every step and the batch shell */
    int rc = cmd_run(d, l, kill_now ? kill9 : term, NULL);
    if (rc < 0) log_warn("launcher: cannot run scancel for Slurm job %s: %s", l->slurm_id, uv_strerror(rc));
}

/* The Slurm job has left the queue (or is leaving it): the launch is over. */
static void slurm_ended(rl_daemon *d, launch *l, const char *state)
{
    l->running = 0;
    launch_record_end(d, l->id);
    log_info("launcher: launch %lld (Slurm job %s) ended: %s", (long long)l->id, l->slurm_id, state);
    if (!l->registered && !l->retire_ms) {
        char why[160];
        snprintf(why, sizeof why, "Slurm job %s ended (%s) before the pool registered", l->slurm_id, state);
        launch_failed(d, l, why);
    }
    pools_launch_ended(d, l->id);
    sched_run(d);
}

static void on_squeue(rl_daemon *d, launch *l, int64_t status, const char *out)
{
    if (!l->running) return;
    char line[80];
    first_line(out, line, sizeof line);
    if (status != 0) {
        if (strstr(out, "Invalid job id")) { /* purged from the controller's memory: long over */
            slurm_ended(d, l, "no longer known to Slurm");
            return;
        }
        log_warn("launcher: squeue for Slurm job %s failed: %s", l->slurm_id, line);
        return;
    }
    if (!out[strspn(out, " \n")]) {
        slurm_ended(d, l, "gone from the queue");
        return;
    }
    char st[32] = "";
    sscanf(line, "%31s", st);
    static const char *const live[] = {"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "RESIZING", "SUSPENDED",
                                       "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"};
    int alive = 0;
    for (size_t i = 0; i < sizeof live / sizeof *live; i++) alive |= !strcmp(st, live[i]);
    if (!alive) { /* COMPLETING, COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, PREEMPTED, OUT_OF_MEMORY, … */
        slurm_ended(d, l, line);
        return;
    }
    if (strcmp(line, l->slurm_state)) {
        log_info("launcher: launch %lld: Slurm job %s is %s", (long long)l->id, l->slurm_id, line);
        /* the registration timeout counts from when the ranks start, not from the queue wait */
        if (!strcmp(st, "RUNNING") && strncmp(l->slurm_state, "RUNNING", 7)) l->started_ms = now_ms();
        snprintf(l->slurm_state, sizeof l->slurm_state, "%s", line);
    }
}

static void on_sbatch(rl_daemon *d, launch *l, int64_t status, const char *out)
{
    char line[200];
    first_line(out, line, sizeof line);
    /* --parsable prints "ID" or "ID;CLUSTER" */
    size_t digits = strspn(line, "0123456789");
    if (status != 0 || !digits || digits >= sizeof l->slurm_id) {
        l->running = 0;
        launch_record_end(d, l->id);
        char why[300];
        snprintf(why, sizeof why, "sbatch failed (status %lld): %s", (long long)status, line);
        launch_failed(d, l, why);
        sched_run(d);
        return;
    }
    memcpy(l->slurm_id, line, digits);
    l->slurm_id[digits] = 0;
    launch_record(d, l);
    l->next_poll_ms = now_ms() + 500;
    log_info("launcher: launch %lld for job %lld is Slurm job %s", (long long)l->id, (long long)l->job_id,
             l->slurm_id);
    if (l->retire_ms) slurm_cancel(d, l, 0); /* retired while sbatch ran */
}

/* Single-quotes s for /bin/sh. */
static void sh_quote(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++)
        if (*s == '\'') fputs("'\\''", f);
        else fputc(*s, f);
    fputc('\'', f);
}

static int slurm_launch(rl_daemon *d, const sched_need *need, void *ctx)
{
    (void)ctx;
    launch *l = new_launch(d, need);
    if (!l) return d->stopping ? -1 : 0;
    l->slurm = 1;
    char lid[32], connect[PATH_MAX + 8], logpath[PATH_MAX + 64], script[PATH_MAX + 64];
    if (d->worker_addr[0]) snprintf(connect, sizeof connect, "%s", d->worker_addr);
    else snprintf(connect, sizeof connect, "unix:%s", d->socket_path);
    launch_log_path(l, logpath, sizeof logpath);
    snprintf(script, sizeof script, "%s/launch-%lld.sbatch", L.log_dir, (long long)l->id);
    char *wargs[16];
    int nw = worker_args(d, l, connect, lid, sizeof lid, wargs);

    FILE *f = fopen(script, "w");
    if (!f) {
        log_error("launcher: cannot write %s: %s", script, strerror(errno));
        free(l);
        return -1;
    }
    fprintf(f, "#!/bin/sh\n# radlads worker pool: launch %lld for job %lld, written by radladsd.\n"
               "# Every rank starts with srun; rank 0 connects to the daemon and registers with the launch id.\n"
               "exec srun --kill-on-bad-exit=1 ",
            (long long)l->id, (long long)l->job_id);
    sh_quote(f, L.worker);
    for (int i = 0; i < nw; i++) {
        fputc(' ', f);
        sh_quote(f, wargs[i]);
    }
    fputc('\n', f);
    int werr = ferror(f);
    if (fclose(f) != 0 || werr || chmod(script, 0700) < 0) {
        log_error("launcher: cannot write %s: %s", script, strerror(errno));
        free(l);
        return -1;
    }

    char jobname[64], ntasks[32], output[PATH_MAX + 80];
    snprintf(jobname, sizeof jobname, "--job-name=radlads-pool-%lld", (long long)l->id);
    snprintf(ntasks, sizeof ntasks, "--ntasks=%d", l->ranks);
    snprintf(output, sizeof output, "--output=%s", logpath);
    char *argv[80];
    int n = 0;
    argv[n++] = "sbatch";
    argv[n++] = "--parsable";
    argv[n++] = jobname;
    argv[n++] = ntasks;
    argv[n++] = output;
    if (!strcmp(l->device, "cuda")) argv[n++] = "--gpus-per-task=1";
    for (char **a = L.slurm_args; a && *a && n < 76; a++) argv[n++] = *a;
    argv[n++] = script;
    argv[n] = NULL;

    l->running = 1;
    l->started_ms = now_ms();
    l->next = L.all;
    L.all = l;
    int rc = cmd_run(d, l, argv, on_sbatch);
    if (rc < 0) {
        log_error("launcher: cannot run sbatch: %s", uv_strerror(rc));
        l->running = 0;
        launch_failed(d, l, "cannot run sbatch (is Slurm installed and on PATH?)");
        launch_free(l);
        return -1;
    }
    launch_record(d, l);
    log_info("launcher: launch %lld for job %lld: sbatch --ntasks %d %s (log %s)", (long long)l->id,
             (long long)l->job_id, l->ranks, script, logpath);
    return 0;
}

static const sched_launcher slurm_launcher = {.name = "slurm", .launch = slurm_launch};

/* Splits --slurm-args on blanks (no shell quoting: sbatch options do not need it). */
static char **split_args(const char *s)
{
    size_t cap = strlen(s) / 2 + 2, n = 0;
    char **v = calloc(cap, sizeof *v);
    if (!v) return NULL;
    const char *p = s;
    while (*p) {
        p += strspn(p, " \t");
        size_t len = strcspn(p, " \t");
        if (!len) break;
        v[n++] = strndup(p, len);
        p += len;
    }
    return v;
}

/* ---- both ---------------------------------------------------------------------------------------------- */

/* The worker next to our own binary (installed), or ../worker/ (build tree). */
static char *find_worker(void)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return NULL;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) return NULL;
    *slash = 0;
    const char *tries[] = {"%s/radlads-worker", "%s/../worker/radlads-worker"};
    for (int i = 0; i < 2; i++) {
        char p[PATH_MAX + 64], real[PATH_MAX];
        snprintf(p, sizeof p, tries[i], self);
        if (access(p, X_OK) == 0 && realpath(p, real)) return strdup(real);
    }
    return NULL;
}

/* Launches an earlier daemon left running (rows without ended_at): watched again, retired when idle. */
static void adopt_launches(rl_daemon *d)
{
    static const char sql[] = "SELECT id, job_id, kind, COALESCE(pid, 0), COALESCE(slurm_id, ''), ranks, device "
                              "FROM launches WHERE ended_at IS NULL";
    sqlite3_stmt *st = store_stmt(d->db, sql);
    int64_t *gone = NULL;
    size_t n_gone = 0, cap = 0;
    while (st && sqlite3_step(st) == SQLITE_ROW) {
        launch *l = calloc(1, sizeof *l);
        if (!l) break;
        l->id = sqlite3_column_int64(st, 0);
        l->job_id = sqlite3_column_int64(st, 1);
        l->slurm = !strcmp((const char *)sqlite3_column_text(st, 2), "slurm");
        l->pid = (pid_t)sqlite3_column_int(st, 3);
        snprintf(l->slurm_id, sizeof l->slurm_id, "%s", (const char *)sqlite3_column_text(st, 4));
        l->ranks = sqlite3_column_int(st, 5);
        snprintf(l->device, sizeof l->device, "%s", (const char *)sqlite3_column_text(st, 6));
        int alive = l->slurm ? l->slurm_id[0] != 0 : pid_alive(l->pid);
        if (!alive) {
            if (n_gone == cap) {
                void *g = realloc(gone, (cap = cap ? 2 * cap : 16) * sizeof *gone);
                if (!g) { /* the rest are looked at again at the next start */
                    free(l);
                    break;
                }
                gone = g;
            }
            gone[n_gone++] = l->id;
            free(l);
            continue;
        }
        l->adopted = l->running = 1;
        l->started_ms = now_ms();
        l->next = L.all;
        L.all = l;
        if (l->slurm) log_info("launcher: adopted launch %lld (job %lld, Slurm job %s) from before the restart",
                               (long long)l->id, (long long)l->job_id, l->slurm_id);
        else log_info("launcher: adopted launch %lld (job %lld, mpirun pid %d) from before the restart",
                      (long long)l->id, (long long)l->job_id, (int)l->pid);
    }
    if (st) sqlite3_reset(st);
    for (size_t i = 0; i < n_gone; i++) launch_record_end(d, gone[i]);
    if (n_gone) log_info("launcher: %zu launch(es) from before the restart had already ended", n_gone);
    free(gone);
}

static int init_kind(rl_daemon *d, const char *kind, const char *worker, const char *slurm_args, char *err,
                     size_t errlen);

int launcher_init(rl_daemon *d, const char *kind, const char *worker, const char *slurm_args, char *err,
                  size_t errlen)
{
    int rc = init_kind(d, kind, worker, slurm_args, err, errlen);
    if (rc == 0) adopt_launches(d); /* whatever this daemon's launcher is: they must still be retired */
    return rc;
}

static int init_kind(rl_daemon *d, const char *kind, const char *worker, const char *slurm_args, char *err,
                     size_t errlen)
{
    if (!kind || !strcmp(kind, "none")) {
        log_info("launcher: none (pools must be started by hand: radlads-worker pool --connect unix:%s)", d->socket_path);
        return 0;
    }
    if (strcmp(kind, "local") && strcmp(kind, "slurm"))
        return rl_errf(err, errlen, "--launcher: expected local, slurm or none, got \"%s\"", kind);
    if (slurm_args && strcmp(kind, "slurm"))
        return rl_errf(err, errlen, "--slurm-args is for --launcher slurm (the launcher is %s)", kind);
    L.slurm = !strcmp(kind, "slurm");
    L.worker = worker ? strdup(worker) : find_worker();
    if (!L.worker) {
        if (L.slurm) return rl_errf(err, errlen, "radlads-worker not found next to radladsd; give --worker PATH");
        log_warn("launcher: radlads-worker not found next to radladsd; no local pools (give --worker PATH)");
        return 0;
    }
    if (access(L.worker, X_OK) < 0) return rl_errf(err, errlen, "--worker %s: not an executable file", L.worker);
    if (L.worker[0] != '/') { /* srun runs it on other hosts from another directory */
        char real[PATH_MAX];
        if (!realpath(L.worker, real)) return rl_errf(err, errlen, "--worker %s: %s", L.worker, strerror(errno));
        free(L.worker);
        L.worker = strdup(real);
    }
    snprintf(L.log_dir, sizeof L.log_dir, "%s/pools", d->state_dir);
    if (mkdir(L.log_dir, 0700) < 0 && errno != EEXIST)
        return rl_errf(err, errlen, "cannot create %s: %s", L.log_dir, strerror(errno));
    if (L.slurm) {
        if (slurm_args && !(L.slurm_args = split_args(slurm_args))) return rl_errf(err, errlen, "out of memory");
        sched_set_launcher(&slurm_launcher);
        log_info("launcher: slurm (sbatch + srun; worker %s; pools connect to %s%s)", L.worker,
                 d->worker_addr[0] ? d->worker_addr : "unix:", d->worker_addr[0] ? "" : d->socket_path);
        if (!d->worker_addr[0])
            log_info("launcher: no --worker-listen: Slurm pools must run on this host (the Unix socket)");
    } else {
        sched_set_launcher(&local_launcher);
        log_info("launcher: local (mpirun; worker %s)", L.worker);
    }
    return 0;
}

static launch *find_launch(int64_t id)
{
    for (launch *l = L.all; l; l = l->next)
        if (l->id == id) return l;
    return NULL;
}

void launcher_pool_registered(rl_daemon *d, pool *p, int64_t launch_id, const int32_t *rank_pids, size_t n)
{
    (void)d;
    launch *l = launch_id ? find_launch(launch_id) : NULL;
    if (!l) return;
    l->registered = 1;
    l->pool_id = p->id;
    p->launch_id = launch_id;
    failures_of(l->job_id, -failures_of(l->job_id, 0));
    for (size_t i = 0; i < n && l->n_rank_pids < 64; i++)
        if (rank_pids[i] > 1) l->rank_pids[l->n_rank_pids++] = rank_pids[i];
}

int launcher_alive(int64_t launch_id)
{
    launch *l = launch_id ? find_launch(launch_id) : NULL;
    return l && l->running;
}

static void signal_tree(launch *l, int sig)
{
    if (l->pid > 1) kill(-l->pid, sig); /* mpirun leads its own session and process group */
    for (int i = 0; i < l->n_rank_pids; i++) kill(l->rank_pids[i], sig);
}

void launcher_retire(rl_daemon *d, int64_t launch_id, const char *why)
{
    launch *l = launch_id ? find_launch(launch_id) : NULL;
    if (!l || !l->running || l->retire_ms) return;
    l->retire_ms = now_ms();
    if (l->slurm) {
        log_info("launcher: retiring launch %lld (Slurm job %s): %s", (long long)l->id,
                 l->slurm_id[0] ? l->slurm_id : "not yet submitted", why);
        if (l->slurm_id[0]) slurm_cancel(d, l, 0); /* else on_sbatch cancels it */
        return;
    }
    log_info("launcher: retiring launch %lld (pid %d): %s", (long long)l->id, (int)l->pid, why);
    signal_tree(l, SIGTERM);
}

void launcher_tick(rl_daemon *d)
{
    int64_t now = now_ms();
    for (launch *l = L.all, *next; l; l = next) {
        next = l->next;
        if (!l->running) continue;
        if (l->adopted && !l->registered && !l->retire_ms &&
            now - l->started_ms > (int64_t)d->reattach_grace_ms + LAUNCH_REATTACH_SLACK_MS)
            launcher_retire(d, l->id, "its pool did not re-attach after the daemon restart");
        if (l->slurm) {
            if (!l->slurm_id[0]) continue; /* sbatch still running */
            if (l->retire_ms && !l->killed && now - l->retire_ms > RETIRE_GRACE_MS) {
                l->killed = 1;
                slurm_cancel(d, l, 1);
            }
            int pending = strncmp(l->slurm_state, "RUNNING", 7) != 0;
            if (!l->adopted && !l->registered && !l->retire_ms && !pending &&
                now - l->started_ms > LAUNCH_REGISTER_TIMEOUT_MS) {
                launch_failed(d, l, "no pool registered within 120 s of the Slurm job starting");
                launcher_retire(d, l->id, "registration timeout");
                l->registered = 1; /* counted once */
            }
            if (!l->refs && now >= l->next_poll_ms) {
                l->next_poll_ms = now + SLURM_POLL_MS;
                char *argv[] = {"squeue", "-h", "-t", "all", "-j", l->slurm_id, "-o", "%T %r", NULL};
                int rc = cmd_run(d, l, argv, on_squeue);
                if (rc < 0) log_warn("launcher: cannot run squeue: %s", uv_strerror(rc));
            }
            continue;
        }
        if (l->adopted && !pid_alive(l->pid)) { /* not our child: no exit callback */
            log_info("launcher: adopted launch %lld (pid %d) ended", (long long)l->id, (int)l->pid);
            l->running = 0;
            launch_record_end(d, l->id);
            pools_launch_ended(d, l->id);
            launch_free(l);
            sched_run(d);
            continue;
        }
        if (l->retire_ms && now - l->retire_ms > RETIRE_GRACE_MS) {
            signal_tree(l, SIGKILL);
        } else if (l->adopted) {
            ; /* its registration is the re-attach below */
        } else if (!l->registered && !l->retire_ms && now - l->started_ms > LAUNCH_REGISTER_TIMEOUT_MS) {
            launch_failed(d, l, "no pool registered within 120 s");
            launcher_retire(d, l->id, "registration timeout");
            l->registered = 1; /* counted once */
        }
    }
}

void launcher_close(rl_daemon *d)
{
    (void)d;
    /* Launched pools outlive the daemon (they re-attach); only our handles go.  Slurm jobs stay queued. */
    for (cmd *c = g_cmds; c; c = c->next) {
        c->l = NULL;
        cmd_close(c);
    }
    for (launch *l = L.all, *next; l; l = next) {
        next = l->next;
        if (l->slurm || l->adopted) {
            launch_free(l); /* no process handle; Slurm commands in flight no longer call back (d->stopping) */
            continue;
        }
        if (l->running && !uv_is_closing((uv_handle_t *)&l->proc)) {
            l->running = 0;
            uv_close((uv_handle_t *)&l->proc, launch_closed);
        }
    }
    free(L.worker);
    L.worker = NULL;
    for (char **a = L.slurm_args; a && *a; a++) free(*a);
    free(L.slurm_args);
    L.slurm_args = NULL;
}
